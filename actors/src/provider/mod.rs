//! Model providers: their settings, wire formats, HTTP client, health, circuit breaker and the
//! `ProviderPool` actor that owns a provider's breaker and health.
//!
//! - [`pool`]: the `ProviderPool` actor and the [`ProviderHandle`] request tasks call through.
//! - [`client`]: the pooled HTTP client that speaks a provider's wire format.
//! - [`openai`] / [`anthropic`]: the two wire formats (`openai_compatible` speaks OpenAI's).
//! - [`stream`]: SSE decoding shared by both formats.
//! - [`breaker`], [`health`], [`retry`]: plain state with synchronous tests.
//! - [`error`]: [`ProviderError`] and its one classification into retry / fail over / final.

pub mod anthropic;
pub mod breaker;
pub mod capability;
pub mod client;
pub mod error;
pub mod health;
pub mod openai;
pub mod pool;
pub mod retry;
pub mod stream;

use std::time::Duration;

pub use breaker::BreakerSettings;
pub use error::{ErrorClass, ProviderError};
pub use pool::{AttemptTicket, ProviderHandle, ProviderPool};
pub use retry::RetrySettings;

/// The wire protocol a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI's Chat Completions at api.openai.com (needs an API key).
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's Messages API (needs an API key).
    Anthropic,
    /// Any server speaking Chat Completions: vLLM, Ollama, TGI, LM Studio (key optional).
    #[serde(rename = "openai_compatible")]
    OpenAiCompatible,
}

impl ProviderKind {
    /// True for the kinds with an embeddings endpoint (OpenAI's wire; Anthropic has none).
    pub fn embeds(self) -> bool {
        matches!(self, Self::OpenAi | Self::OpenAiCompatible)
    }

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::OpenAiCompatible => "openai_compatible",
        }
    }
}

/// One provider's validated settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderSettings {
    /// Name used in config, routing and metrics.
    pub name: String,
    /// Wire protocol.
    pub kind: ProviderKind,
    /// Base URL up to and including the version segment, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Secret key, read from the environment or a file at startup; `None` sends no credentials
    /// (self-hosted servers, the simulator).
    pub api_key: Option<String>,
    /// True for models the operator runs (vLLM and the like): the latency routing rule prefers them.
    pub self_hosted: bool,
    /// Bound on a whole answer, per attempt.
    pub request_timeout: Duration,
    /// Bound on opening a connection.
    pub connect_timeout: Duration,
    /// Bound on the first token of a streamed answer, per attempt; past it the request fails over.
    pub first_token_timeout: Duration,
    /// Most requests in flight to this provider from this node; more wait for a slot.
    pub max_concurrent: usize,
    /// Retries on the same provider.
    pub retry: RetrySettings,
    /// Circuit breaker.
    pub breaker: BreakerSettings,
    /// `anthropic-version` header for the Anthropic API.
    pub anthropic_version: String,
    /// `max_tokens` sent to Anthropic when the caller gave none (the API requires one).
    pub default_max_tokens: u32,
    /// Pass request fields the gateway does not know on unchanged (OpenAI-wire providers only);
    /// otherwise such a request is not sent here.
    pub pass_unknown_fields: bool,
}
