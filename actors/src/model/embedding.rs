//! An embeddings request as the pipeline sees it, its validation and its exact-cache key.

use xxhash_rust::xxh3::Xxh3;

use crate::cache::key::field;
use crate::error::GatewayError;
use crate::model::request::{CacheControl, RequestLimits, RoutingHints};

/// Most inputs one request may embed (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// Bumped whenever the key encoding below changes.
const KEY_VERSION: &str = "embedding-v1";

/// Texts to embed with one named model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EmbeddingRequest {
    /// The embedding model (an `[[models]]` entry with `kind = "embedding"`). Embeddings of
    /// different models live in different spaces, so a model is always named and never swapped.
    pub model: String,
    /// The texts, embedded in order.
    pub inputs: Vec<String>,
    /// The vectors' length, for models that can shorten them (OpenAI's `dimensions`).
    pub dimensions: Option<u32>,
    /// The end user's id, sent to the provider.
    pub user: Option<String>,
    /// Routing hints (the tier, on an open node).
    pub hints: RoutingHints,
    /// Cache controls.
    pub cache: CacheControl,
}

impl EmbeddingRequest {
    /// Checks the request against `limits`; the error names the offending field.
    pub fn validate(&self, limits: &RequestLimits) -> Result<(), GatewayError> {
        if self.model.trim().is_empty() {
            return Err(GatewayError::invalid("model", "is required (embeddings of different models are not interchangeable)"));
        }
        if self.inputs.is_empty() {
            return Err(GatewayError::invalid("input", "must contain at least one text"));
        }
        if self.inputs.len() > MAX_INPUTS {
            return Err(GatewayError::invalid("input", format!("has {} texts, more than the limit of {MAX_INPUTS}", self.inputs.len())));
        }
        if let Some(index) = self.inputs.iter().position(String::is_empty) {
            return Err(GatewayError::invalid(format!("input[{index}]"), "must not be empty"));
        }
        let chars: usize = self.inputs.iter().map(|input| input.chars().count()).sum();
        if chars > limits.max_prompt_chars {
            return Err(GatewayError::invalid("input", format!("has {chars} characters, more than the limit of {}", limits.max_prompt_chars)));
        }
        if self.dimensions == Some(0) {
            return Err(GatewayError::invalid("dimensions", "must be at least 1"));
        }
        Ok(())
    }

    /// Characters over all inputs.
    pub fn chars(&self) -> usize {
        self.inputs.iter().map(String::len).sum()
    }

    /// The exact-cache key for `tenant`: the model, the dimensions and every input exactly as
    /// given (whitespace changes a vector, so nothing is normalised), as 32 hex digits.
    pub fn cache_key(&self, tenant: &str) -> String {
        let mut hasher = Xxh3::new();
        field(&mut hasher, KEY_VERSION.as_bytes());
        field(&mut hasher, tenant.as_bytes());
        field(&mut hasher, self.model.as_bytes());
        hasher.update(&self.dimensions.unwrap_or(0).to_le_bytes());
        hasher.update(&(self.inputs.len() as u64).to_le_bytes());
        for input in &self.inputs {
            field(&mut hasher, input.as_bytes());
        }
        format!("{:032x}", hasher.digest128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> EmbeddingRequest {
        EmbeddingRequest { model: "embed-small".into(), inputs: vec!["hello".into()], ..EmbeddingRequest::default() }
    }

    fn field_of(result: Result<(), GatewayError>) -> String {
        match result {
            Err(GatewayError::InvalidArgument { field, .. }) => field,
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let limits = RequestLimits { max_prompt_chars: 10, ..RequestLimits::default() };
        assert!(request().validate(&limits).is_ok());
        assert_eq!(field_of(EmbeddingRequest { model: String::new(), ..request() }.validate(&limits)), "model");
        assert_eq!(field_of(EmbeddingRequest { inputs: Vec::new(), ..request() }.validate(&limits)), "input");
        assert_eq!(field_of(EmbeddingRequest { inputs: vec!["a".into(), String::new()], ..request() }.validate(&limits)), "input[1]");
        assert_eq!(field_of(EmbeddingRequest { inputs: vec!["x".repeat(11)], ..request() }.validate(&limits)), "input");
        assert_eq!(field_of(EmbeddingRequest { inputs: vec!["a".into(); MAX_INPUTS + 1], ..request() }.validate(&RequestLimits::default())), "input");
        assert_eq!(field_of(EmbeddingRequest { dimensions: Some(0), ..request() }.validate(&limits)), "dimensions");
    }

    #[test]
    fn keys_tell_every_difference_apart() {
        let base = request().cache_key("t");
        assert_eq!(base, request().cache_key("t"));
        assert_ne!(base, request().cache_key("u"));
        assert_ne!(base, EmbeddingRequest { inputs: vec!["hello ".into()], ..request() }.cache_key("t"));
        assert_ne!(base, EmbeddingRequest { dimensions: Some(256), ..request() }.cache_key("t"));
        assert_ne!(base, EmbeddingRequest { model: "embed-large".into(), ..request() }.cache_key("t"));
        let split = EmbeddingRequest { inputs: vec!["hel".into(), "lo".into()], ..request() };
        assert_ne!(base, split.cache_key("t"));
    }
}
