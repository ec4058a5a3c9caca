//! What a provider answers: a whole [`Completion`] or a stream of [`StreamEvent`]s.

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model finished or hit a stop sequence.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The provider filtered the answer.
    ContentFilter,
}

impl FinishReason {
    /// OpenAI's name for it, which the public API uses too.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ContentFilter => "content_filter",
        }
    }
}

/// A whole answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The text.
    pub text: String,
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
            _ => Self::Stop,
        }
    }
}
