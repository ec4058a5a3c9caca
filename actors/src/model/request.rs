//! A chat request as the pipeline sees it, whichever front door it came through, and its validation.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::GatewayError;
use crate::model::selection::{Quality, Tier};

/// Answer length assumed for routing when the request sets no `max_tokens`.
const DEFAULT_ANSWER_ESTIMATE: u32 = 256;

/// Who wrote a chat turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions from the application.
    System,
    /// OpenAI's newer name for system instructions; sent upstream as `system` where unsupported.
    Developer,
    /// The end user.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// Parses a wire role name; `field` names the request field for the error.
    pub fn parse(role: &str, field: &str) -> Result<Self, GatewayError> {
        match role {
            "system" => Ok(Self::System),
            "developer" => Ok(Self::Developer),
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            other => Err(GatewayError::invalid(
                field,
                format!("unknown role \"{other}\" (expected system, developer, user or assistant)"),
            )),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Developer => "developer",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }

    /// True for the roles that carry instructions rather than conversation.
    pub fn is_instruction(self) -> bool {
        matches!(self, Self::System | Self::Developer)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One chat turn.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
}

/// Sampling parameters; `None` leaves the upstream's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampling {
    /// 0.0 ..= 2.0.
    pub temperature: Option<f32>,
    /// (0.0 ..= 1.0].
    pub top_p: Option<f32>,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
}

/// Hints the router reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingHints {
    /// Free-form task type ("code", "summarization", …); empty when not given.
    pub task_type: String,
    /// The caller's latency budget for the whole answer.
    pub latency_budget_ms: Option<u32>,
    /// How good an answer the caller needs.
    pub quality: Quality,
    /// The caller's tier.
    pub tier: Tier,
}

/// Per-request cache controls, honoured by the cache layers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CacheControl {
    /// Skip every cache lookup.
    pub bypass: bool,
    /// Store the answer in no cache.
    pub no_store: bool,
    /// Time to live of the stored answer, overriding the configured one.
    pub ttl_seconds: Option<u32>,
}

/// A chat request from either front door.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// A model or route name; `None` lets the router decide.
    pub model: Option<String>,
    /// Sampling parameters.
    pub sampling: Sampling,
    /// Routing hints.
    pub hints: RoutingHints,
    /// Cache controls.
    pub cache: CacheControl,
    /// Free-form metadata, logged with the request.
    pub metadata: BTreeMap<String, String>,
}

/// Bounds a request must stay within, from the node's config.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestLimits {
    /// Most messages in one request.
    pub max_messages: usize,
    /// Most characters over all message contents.
    pub max_prompt_chars: usize,
    /// Largest `max_tokens` a caller may ask for; also the default when unset.
    pub max_output_tokens: u32,
    /// Most stop sequences.
    pub max_stop_sequences: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { max_messages: 1024, max_prompt_chars: 400_000, max_output_tokens: 16_384, max_stop_sequences: 4 }
    }
}

impl ChatRequest {
    /// Checks the request against `limits`; the error names the offending field.
    pub fn validate(&self, limits: &RequestLimits) -> Result<(), GatewayError> {
        if self.messages.is_empty() {
            return Err(GatewayError::invalid("messages", "must contain at least one message"));
        }
        if self.messages.len() > limits.max_messages {
            return Err(GatewayError::invalid(
                "messages",
                format!("has {} messages, more than the limit of {}", self.messages.len(), limits.max_messages),
            ));
        }
        if !self.messages.iter().any(|message| message.role == Role::User) {
            return Err(GatewayError::invalid("messages", "must contain at least one user message"));
        }
        let prompt_chars = self.prompt_chars();
        if prompt_chars > limits.max_prompt_chars {
            return Err(GatewayError::invalid(
                "messages",
                format!("prompt has {prompt_chars} characters, more than the limit of {}", limits.max_prompt_chars),
            ));
        }
        if let Some(temperature) = self.sampling.temperature
            && !(0.0..=2.0).contains(&temperature)
        {
            return Err(GatewayError::invalid("temperature", format!("{temperature} is outside 0.0 ..= 2.0")));
        }
        if let Some(top_p) = self.sampling.top_p
            && !(top_p > 0.0 && top_p <= 1.0)
        {
            return Err(GatewayError::invalid("top_p", format!("{top_p} is outside (0.0 ..= 1.0]")));
        }
        if let Some(max_tokens) = self.sampling.max_tokens
            && !(1..=limits.max_output_tokens).contains(&max_tokens)
        {
            return Err(GatewayError::invalid(
                "max_tokens",
                format!("{max_tokens} is outside 1 ..= {}", limits.max_output_tokens),
            ));
        }
        if self.sampling.stop.len() > limits.max_stop_sequences {
            return Err(GatewayError::invalid(
                "stop",
                format!("has {} sequences, more than the limit of {}", self.sampling.stop.len(), limits.max_stop_sequences),
            ));
        }
        if self.sampling.stop.iter().any(String::is_empty) {
            return Err(GatewayError::invalid("stop", "stop sequences must not be empty"));
        }
        if let Some(model) = &self.model
            && model.trim().is_empty()
        {
            return Err(GatewayError::invalid("model", "must not be blank"));
        }
        Ok(())
    }

    /// Characters over all message contents.
    pub fn prompt_chars(&self) -> usize {
        self.messages.iter().map(|message| message.content.chars().count()).sum()
    }

    /// A cheap token estimate (about four characters a token) of prompt plus answer.
    pub fn estimated_tokens(&self, limits: &RequestLimits) -> u64 {
        let prompt = self.messages.iter().map(|message| message.content.len() as u64).sum::<u64>() / 4;
        let answer = u64::from(self.sampling.max_tokens.unwrap_or(DEFAULT_ANSWER_ESTIMATE).min(limits.max_output_tokens));
        prompt + answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChatRequest {
        ChatRequest {
            messages: vec![Message { role: Role::User, content: "hello".into() }],
            ..ChatRequest::default()
        }
    }

    fn field_of(result: Result<(), GatewayError>) -> String {
        match result {
            Err(GatewayError::InvalidArgument { field, .. }) => field,
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_request_is_valid() {
        assert!(request().validate(&RequestLimits::default()).is_ok());
    }

    #[test]
    fn each_bad_field_is_named() {
        let limits = RequestLimits { max_prompt_chars: 10, ..RequestLimits::default() };
        let mut empty = request();
        empty.messages.clear();
        assert_eq!(field_of(empty.validate(&limits)), "messages");

        let mut long = request();
        long.messages[0].content = "x".repeat(11);
        assert_eq!(field_of(long.validate(&limits)), "messages");

        let mut hot = request();
        hot.sampling.temperature = Some(2.5);
        assert_eq!(field_of(hot.validate(&limits)), "temperature");

        let mut top = request();
        top.sampling.top_p = Some(0.0);
        assert_eq!(field_of(top.validate(&limits)), "top_p");

        let mut many = request();
        many.sampling.max_tokens = Some(0);
        assert_eq!(field_of(many.validate(&limits)), "max_tokens");

        let mut stops = request();
        stops.sampling.stop = vec!["a".into(); 5];
        assert_eq!(field_of(stops.validate(&limits)), "stop");

        let mut only_system = request();
        only_system.messages[0].role = Role::System;
        assert_eq!(field_of(only_system.validate(&limits)), "messages");
    }

    #[test]
    fn unknown_roles_are_rejected_by_name() {
        let error = Role::parse("wizard", "messages[2].role").err().map(|error| error.to_string());
        assert_eq!(
            error.as_deref(),
            Some("messages[2].role: unknown role \"wizard\" (expected system, developer, user or assistant)")
        );
    }
}
