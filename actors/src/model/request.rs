//! A chat request as the pipeline sees it, whichever front door it came through, and its validation.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::GatewayError;
use crate::model::selection::{Quality, Tier};
use crate::model::tools::{self, ResponseFormat, Tool, ToolCall, ToolChoice};

/// Answer length assumed for routing when the request sets no `max_tokens`.
const DEFAULT_ANSWER_ESTIMATE: u32 = 256;

/// Who wrote a chat turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions from the application.
    System,
    /// OpenAI's newer name for system instructions; sent upstream as `system` where unsupported.
    Developer,
    /// The end user.
    #[default]
    User,
    /// The model.
    Assistant,
    /// The result of a tool call, answering the assistant turn that made it.
    Tool,
}

impl Role {
    /// Parses a wire role name; `field` names the request field for the error.
    pub fn parse(role: &str, field: &str) -> Result<Self, GatewayError> {
        match role {
            "system" => Ok(Self::System),
            "developer" => Ok(Self::Developer),
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            "tool" => Ok(Self::Tool),
            other => Err(GatewayError::invalid(
                field,
                format!("unknown role \"{other}\" (expected system, developer, user, assistant or tool)"),
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
            Self::Tool => "tool",
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

/// One part of a message's content, when it is more than text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentPart {
    /// Text.
    Text(String),
    /// An image, by URL (`https:` or a `data:` URL with the bytes).
    Image {
        /// Where the image is.
        url: String,
        /// OpenAI's `detail` (`auto`, `low`, `high`), when given.
        detail: Option<String>,
    },
}

/// One chat turn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text: the text parts joined, when it came as parts.
    pub content: String,
    /// Every part in order, when the content has a part other than text or came as several
    /// blocks of text (Anthropic); empty otherwise (the content is then `content` alone).
    pub parts: Vec<ContentPart>,
    /// The tool calls of an assistant turn.
    pub tool_calls: Vec<ToolCall>,
    /// For a tool turn: the id of the call it answers.
    pub tool_call_id: Option<String>,
    /// The participant's name (OpenAI's `name`).
    pub name: Option<String>,
    /// For a tool turn: the tool failed and its content says how (Anthropic's `is_error`; on the
    /// OpenAI wire, which has no such flag, the content is sent as `Error: …`).
    pub tool_error: bool,
    /// Anthropic's `cache_control` on the turn (or on one of its blocks): the prompt up to the
    /// end of this turn is worth caching at the provider. Sent to Anthropic on the turn's last
    /// block; OpenAI-wire providers cache prompt prefixes by themselves and take no mark. It
    /// changes the price, never the answer, so no cache key includes it.
    pub prompt_cache: Option<serde_json::Value>,
}

impl Message {
    /// A turn of plain text.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), ..Self::default() }
    }

    /// True when the content has an image.
    pub fn has_image(&self) -> bool {
        self.parts.iter().any(|part| matches!(part, ContentPart::Image { .. }))
    }
}

/// Reasoning effort levels OpenAI accepts.
pub const REASONING_EFFORTS: &[&str] = &["none", "minimal", "low", "medium", "high"];

/// Sampling parameters; `None` leaves the upstream's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampling {
    /// 0.0 ..= 2.0.
    pub temperature: Option<f32>,
    /// (0.0 ..= 1.0].
    pub top_p: Option<f32>,
    /// Sample only from the `k` most likely tokens (Anthropic's and vLLM's `top_k`), at least 1.
    pub top_k: Option<u32>,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Seed for deterministic sampling, where the provider offers it.
    pub seed: Option<i64>,
    /// -2.0 ..= 2.0.
    pub frequency_penalty: Option<f32>,
    /// -2.0 ..= 2.0.
    pub presence_penalty: Option<f32>,
    /// Bias per token id, -100 ..= 100, in token order.
    pub logit_bias: Vec<(u32, f32)>,
    /// Token log-probabilities wanted in the answer: `Some(n)` with the `n` most likely
    /// alternatives of each token.
    pub logprobs: Option<u8>,
    /// How hard a reasoning model thinks (one of [`REASONING_EFFORTS`]).
    pub reasoning_effort: Option<String>,
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
    /// The end user's id, sent to providers that take one (OpenAI `user`, Anthropic
    /// `metadata.user_id`).
    pub user: Option<String>,
    /// Functions the model may call.
    pub tools: Vec<Tool>,
    /// Whether and which tool the model must call; `None` leaves the provider's default.
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools at once; `None` leaves the provider's default.
    pub parallel_tool_calls: Option<bool>,
    /// The form the answer must take; `None` is free text.
    pub response_format: Option<ResponseFormat>,
    /// Top-level fields of the client's body that the gateway does not know, to be passed
    /// through unchanged to providers configured with `pass_unknown_fields`.
    pub passthrough: serde_json::Map<String, serde_json::Value>,
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

/// True for a usable feature name: 1 to 64 ASCII letters, digits, `.`, `_` or `-` (it becomes a
/// metric label and a ledger field).
fn valid_feature(feature: &str) -> bool {
    (1..=64).contains(&feature.len()) && feature.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

impl ChatRequest {
    /// The product feature the request is for: `metadata.feature` (the `x-switchyard-feature`
    /// header fills it when the body does not), which tags its cost.
    pub fn feature(&self) -> Option<&str> {
        self.metadata.get("feature").map(String::as_str)
    }

    /// Checks the request against `limits`; the error names the offending field.
    pub fn validate(&self, limits: &RequestLimits) -> Result<(), GatewayError> {
        if let Some(feature) = self.feature()
            && !valid_feature(feature)
        {
            return Err(GatewayError::invalid(
                "metadata.feature",
                format!("\"{feature}\" is not a feature name (1 to 64 letters, digits, `.`, `_`, `-`)"),
            ));
        }
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
        if self.sampling.top_k == Some(0) {
            return Err(GatewayError::invalid("top_k", "must be at least 1"));
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
        self.validate_sampling()?;
        self.validate_turns()?;
        tools::validate(&self.tools, self.tool_choice.as_ref(), self.response_format.as_ref())
    }

    fn validate_sampling(&self) -> Result<(), GatewayError> {
        let sampling = &self.sampling;
        for (field, penalty) in [("frequency_penalty", sampling.frequency_penalty), ("presence_penalty", sampling.presence_penalty)] {
            if let Some(penalty) = penalty
                && !(-2.0..=2.0).contains(&penalty)
            {
                return Err(GatewayError::invalid(field, format!("{penalty} is outside -2.0 ..= 2.0")));
            }
        }
        if let Some((token, bias)) = sampling.logit_bias.iter().find(|(_, bias)| !(-100.0..=100.0).contains(bias)) {
            return Err(GatewayError::invalid(format!("logit_bias.{token}"), format!("{bias} is outside -100 ..= 100")));
        }
        if let Some(top) = sampling.logprobs
            && top > 20
        {
            return Err(GatewayError::invalid("top_logprobs", format!("{top} is outside 0 ..= 20")));
        }
        if let Some(effort) = &sampling.reasoning_effort
            && !REASONING_EFFORTS.contains(&effort.as_str())
        {
            return Err(GatewayError::invalid("reasoning_effort", format!("\"{effort}\" is not one of {}", REASONING_EFFORTS.join(", "))));
        }
        Ok(())
    }

    /// Tool turns answer calls made earlier; only assistant turns make calls.
    fn validate_turns(&self) -> Result<(), GatewayError> {
        for (index, message) in self.messages.iter().enumerate() {
            if !message.tool_calls.is_empty() && message.role != Role::Assistant {
                return Err(GatewayError::invalid(format!("messages[{index}].tool_calls"), "only assistant messages make tool calls"));
            }
            if message.role != Role::Tool {
                if message.tool_error {
                    return Err(GatewayError::invalid(format!("messages[{index}].is_error"), "only tool results can be errors"));
                }
                if message.tool_call_id.is_some() {
                    return Err(GatewayError::invalid(format!("messages[{index}].tool_call_id"), "only tool messages answer tool calls"));
                }
                continue;
            }
            let Some(id) = &message.tool_call_id else {
                return Err(GatewayError::invalid(format!("messages[{index}].tool_call_id"), "is required on a tool message"));
            };
            let called = self.messages[..index].iter().flat_map(|earlier| &earlier.tool_calls).any(|call| &call.id == id);
            if !called {
                return Err(GatewayError::invalid(
                    format!("messages[{index}].tool_call_id"),
                    format!("\"{id}\" answers no tool call of an earlier assistant message"),
                ));
            }
        }
        Ok(())
    }

    /// True when the request offers tools or carries tool calls or tool turns.
    pub fn uses_tools(&self) -> bool {
        !self.tools.is_empty() || self.messages.iter().any(|message| !message.tool_calls.is_empty() || message.role == Role::Tool)
    }

    /// Characters over all message contents and tool call arguments.
    pub fn prompt_chars(&self) -> usize {
        self.messages
            .iter()
            .map(|message| message.content.chars().count() + message.tool_calls.iter().map(|call| call.arguments.chars().count()).sum::<usize>())
            .sum()
    }

    /// A cheap token estimate (about four characters a token) of prompt plus answer; each tool
    /// definition counts by the length of its schema.
    pub fn estimated_tokens(&self, limits: &RequestLimits) -> u64 {
        let turns: u64 = self
            .messages
            .iter()
            .map(|message| message.content.len() as u64 + message.tool_calls.iter().map(|call| call.arguments.len() as u64).sum::<u64>())
            .sum();
        let tools: u64 = self
            .tools
            .iter()
            .map(|tool| (tool.name.len() + tool.description.as_ref().map_or(0, String::len)) as u64 + tool.parameters.as_ref().map_or(0, |schema| schema.to_string().len() as u64))
            .sum();
        let prompt = (turns + tools) / 4;
        let answer = u64::from(self.sampling.max_tokens.unwrap_or(DEFAULT_ANSWER_ESTIMATE).min(limits.max_output_tokens));
        prompt + answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChatRequest {
        ChatRequest {
            messages: vec![Message::text(Role::User, "hello")],
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
    fn tool_turns_must_answer_earlier_calls() {
        let limits = RequestLimits::default();
        let call = ToolCall { id: "call_1".into(), name: "f".into(), arguments: "{}".into() };
        let mut conversation = request();
        conversation.messages.push(Message { role: Role::Assistant, tool_calls: vec![call.clone()], ..Message::default() });
        conversation.messages.push(Message { role: Role::Tool, content: "42".into(), tool_call_id: Some("call_1".into()), ..Message::default() });
        assert!(conversation.validate(&limits).is_ok());
        assert!(conversation.uses_tools());
        let mut stray = conversation.clone();
        stray.messages[2].tool_call_id = Some("call_2".into());
        assert_eq!(field_of(stray.validate(&limits)), "messages[2].tool_call_id");
        let mut unnamed = conversation.clone();
        unnamed.messages[2].tool_call_id = None;
        assert_eq!(field_of(unnamed.validate(&limits)), "messages[2].tool_call_id");
        let mut user_calls = request();
        user_calls.messages[0].tool_calls = vec![call];
        assert_eq!(field_of(user_calls.validate(&limits)), "messages[0].tool_calls");
    }

    #[test]
    fn sampling_extras_are_bounded() {
        let limits = RequestLimits::default();
        let mut penalty = request();
        penalty.sampling.presence_penalty = Some(2.5);
        assert_eq!(field_of(penalty.validate(&limits)), "presence_penalty");
        let mut bias = request();
        bias.sampling.logit_bias = vec![(50256, -101.0)];
        assert_eq!(field_of(bias.validate(&limits)), "logit_bias.50256");
        let mut top = request();
        top.sampling.logprobs = Some(21);
        assert_eq!(field_of(top.validate(&limits)), "top_logprobs");
        let mut effort = request();
        effort.sampling.reasoning_effort = Some("extreme".into());
        assert_eq!(field_of(effort.validate(&limits)), "reasoning_effort");
    }

    #[test]
    fn unknown_roles_are_rejected_by_name() {
        let error = Role::parse("wizard", "messages[2].role").err().map(|error| error.to_string());
        assert_eq!(
            error.as_deref(),
            Some("messages[2].role: unknown role \"wizard\" (expected system, developer, user, assistant or tool)")
        );
    }
}
