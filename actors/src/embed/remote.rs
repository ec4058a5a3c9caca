//! The remote backend: any server speaking OpenAI's `POST /v1/embeddings` (vLLM, TEI, Ollama,
//! OpenAI). One request per batch; the answer's vectors are put back in input order (by their
//! `index`) and L2-normalised, so that they compare like the local backend's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::embed::error::EmbedError;
use crate::embed::pooling::l2_normalize;

/// The start of an error answer's body kept in [`EmbedError::RemoteStatus`].
const MAX_ERROR_BODY: usize = 512;

/// What the remote backend is started with.
#[derive(Clone, PartialEq)]
pub struct RemoteSettings {
    /// Base URL up to and including the version segment, e.g. `http://vllm:8000/v1`.
    pub base_url: String,
    /// The embedding model to ask for, e.g. `text-embedding-3-small`.
    pub model: String,
    /// Sent as `Authorization: Bearer …`; `None` sends no credentials (self-hosted servers).
    pub api_key: Option<String>,
    /// Bound on one whole request.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for RemoteSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSettings")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// The request body.
#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
}

/// The answer body (fields not listed are ignored).
#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

/// One vector of the answer.
#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    /// Position of the input it belongs to; servers may answer out of order.
    index: usize,
}

/// A client of one embeddings server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RemoteEncoder {
    settings: std::sync::Arc<RemoteSettings>,
    url: String,
    http: reqwest::Client,
}

impl RemoteEncoder {
    /// Builds the HTTP client. Does not contact the server.
    pub fn new(settings: RemoteSettings) -> Result<Self, EmbedError> {
        if settings.model.is_empty() {
            return Err(EmbedError::InvalidSettings("remote embeddings model must not be empty".into()));
        }
        let parsed = reqwest::Url::parse(&settings.base_url).map_err(|error| {
            EmbedError::InvalidSettings(format!("remote embeddings base_url \"{}\": {error}", settings.base_url))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(EmbedError::InvalidSettings(format!(
                "remote embeddings base_url \"{}\" is not http or https",
                settings.base_url
            )));
        }
        let url = format!("{}/embeddings", settings.base_url.trim_end_matches('/'));
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .build()
            .map_err(|error| EmbedError::InvalidSettings(format!("remote embeddings client: {error}")))?;
        Ok(Self { settings: std::sync::Arc::new(settings), url, http })
    }

    /// The full `/embeddings` URL requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Embeds `texts` in one request: one unit-length vector per text, in order.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let body = EmbeddingsRequest { model: &self.settings.model, input: texts, encoding_format: "float" };
        let mut request = self.http.post(&self.url).json(&body);
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key);
        }
        let unreachable = |error: reqwest::Error| EmbedError::RemoteUnreachable { url: self.url.clone(), reason: error.to_string() };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let body: String = text.chars().take(MAX_ERROR_BODY).collect();
            return Err(EmbedError::RemoteStatus { url: self.url.clone(), status: status.as_u16(), body });
        }
        let answer: EmbeddingsResponse = serde_json::from_slice(&bytes)
            .map_err(|error| EmbedError::RemoteMalformed { url: self.url.clone(), reason: error.to_string() })?;
        order_and_normalize(answer.data, texts.len())
            .map_err(|reason| EmbedError::RemoteMalformed { url: self.url.clone(), reason })
    }
}

/// Puts the answer's vectors in input order and normalises them; every input must have exactly
/// one non-empty vector, all of one length.
fn order_and_normalize(items: Vec<EmbeddingItem>, expected: usize) -> Result<Vec<Vec<f32>>, String> {
    if items.len() != expected {
        return Err(format!("{} vectors for {expected} inputs", items.len()));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
    for item in items {
        let slot = slots.get_mut(item.index).ok_or_else(|| format!("index {} out of range", item.index))?;
        if slot.is_some() {
            return Err(format!("index {} answered twice", item.index));
        }
        *slot = Some(item.embedding);
    }
    let mut vectors: Vec<Vec<f32>> = slots.into_iter().flatten().collect();
    let dimensions = vectors.first().map_or(0, Vec::len);
    if dimensions == 0 || vectors.iter().any(|vector| vector.len() != dimensions) {
        return Err("vectors are empty or of different lengths".into());
    }
    for vector in &mut vectors {
        l2_normalize(vector);
    }
    Ok(vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(index: usize, embedding: Vec<f32>) -> EmbeddingItem {
        EmbeddingItem { embedding, index }
    }

    #[test]
    fn vectors_come_back_in_input_order_and_normalised() {
        let vectors = order_and_normalize(vec![item(1, vec![0.0, 2.0]), item(0, vec![3.0, 4.0])], 2).unwrap();
        assert_eq!(vectors, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
    }

    #[test]
    fn a_missing_or_doubled_index_is_malformed() {
        assert!(order_and_normalize(vec![item(0, vec![1.0])], 2).unwrap_err().contains("1 vectors for 2 inputs"));
        assert!(order_and_normalize(vec![item(0, vec![1.0]), item(0, vec![1.0])], 2).unwrap_err().contains("twice"));
        assert!(order_and_normalize(vec![item(0, vec![1.0]), item(5, vec![1.0])], 2).unwrap_err().contains("out of range"));
    }

    #[test]
    fn ragged_or_empty_vectors_are_malformed() {
        assert!(order_and_normalize(vec![item(0, vec![1.0]), item(1, vec![1.0, 2.0])], 2).is_err());
        assert!(order_and_normalize(vec![item(0, vec![])], 1).is_err());
    }

    #[test]
    fn bad_settings_are_refused() {
        let settings = |base_url: &str, model: &str| RemoteSettings {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            request_timeout: Duration::from_secs(1),
        };
        assert!(RemoteEncoder::new(settings("not a url", "m")).is_err());
        assert!(RemoteEncoder::new(settings("ftp://host/v1", "m")).is_err());
        assert!(RemoteEncoder::new(settings("http://host/v1", "")).is_err());
        assert_eq!(RemoteEncoder::new(settings("http://host/v1/", "m")).unwrap().url(), "http://host/v1/embeddings");
    }

    #[test]
    fn the_key_is_not_printed() {
        let settings = RemoteSettings {
            base_url: "http://host/v1".into(),
            model: "m".into(),
            api_key: Some("sk-secret".into()),
            request_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{settings:?}").contains("sk-secret"));
    }
}
