//! What a provider answers: a whole [`Completion`] or a stream of [`StreamEvent`]s.

use crate::model::tools::{ToolCall, ToolCallDelta};

/// Token counts reported by the provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
    /// The part of `input_tokens` the provider served from its prompt cache (priced apart when
    /// the model has a cached-input price).
    pub cached_input_tokens: u32,
    /// The part of `input_tokens` the provider wrote to its prompt cache (Anthropic's
    /// `cache_creation_input_tokens`, priced apart when the model has a cache-write price).
    pub cache_write_input_tokens: u32,
}

impl Usage {
    /// Input plus output.
    pub fn total(&self) -> u32 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FinishReason {
    /// The model finished or hit a stop sequence.
    #[default]
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The provider filtered the answer.
    ContentFilter,
    /// The model called tools and waits for their results.
    ToolCalls,
}

impl FinishReason {
    /// OpenAI's name for it, which the public API uses too.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ContentFilter => "content_filter",
            Self::ToolCalls => "tool_calls",
        }
    }
}

/// A whole answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    /// The text (empty when the model only called tools).
    pub text: String,
    /// The tools the model called, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Token log-probabilities in OpenAI's `logprobs` shape, when asked for and given.
    pub logprobs: Option<serde_json::Value>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
}

/// One event of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// Text to append.
    Delta(String),
    /// A piece of a tool call.
    ToolCall(ToolCallDelta),
    /// Log-probabilities of the text that follows (OpenAI's `logprobs` of one chunk).
    Logprobs(serde_json::Value),
    /// The answer is complete. A stream that ends without this event was cut.
    Finished {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts, when the provider reported them.
        usage: Option<Usage>,
    },
}

/// Which cache layer answered, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheLayer {
    /// An upstream answered.
    #[default]
    None,
    /// The exact cache answered.
    Exact,
    /// The semantic cache answered.
    Semantic,
}

impl CacheLayer {
    /// The name used in headers, logs and cost records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Exact => "exact",
            Self::Semantic => "semantic",
        }
    }
}

impl FinishReason {
    /// Parses OpenAI's name; unknown names read as `Stop`.
    pub fn parse(name: &str) -> Self {
        match name {
            "length" => Self::Length,
            "content_filter" => Self::ContentFilter,
            "tool_calls" | "function_call" => Self::ToolCalls,
            _ => Self::Stop,
        }
    }
}
