//! The errors the pipeline returns to the front doors. The node maps each variant to a gRPC code
//! and an HTTP status in one function (`switchyard-node`'s `error.rs`).

use crate::provider::ProviderError;

/// One failed attempt at one provider and model.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptFailure {
    /// `provider/model`.
    pub target: String,
    /// What went wrong, after any retries.
    pub error: ProviderError,
}

impl std::fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.target, self.error)
    }
}

/// Why a request did not get an answer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// A field of the request is missing, malformed or out of range.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The request field, e.g. `messages[0].role` or `temperature`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request names a model or route that is not configured.
    #[error("model: unknown model or route \"{0}\"")]
    UnknownModel(String),
    /// Policy forbids the caller this model.
    #[error("model \"{model}\" is not available to the {tier} tier")]
    ModelForbidden {
        /// The requested model.
        model: String,
        /// The caller's tier.
        tier: crate::model::Tier,
    },
    /// An upstream refused the request itself (a 4xx that another provider would refuse too).
    #[error("{target} rejected the request: {error}")]
    UpstreamRejected {
        /// `provider/model`.
        target: String,
        /// The upstream's answer.
        error: ProviderError,
    },
    /// Every provider in the chain failed.
    #[error("every provider failed: {}", join(.0))]
    AllProvidersFailed(Vec<AttemptFailure>),
    /// The upstream stream broke after part of the answer had been sent to the client.
    #[error("the upstream stream from {target} broke after the answer had started: {error}")]
    StreamInterrupted {
        /// `provider/model`.
        target: String,
        /// What broke it.
        error: ProviderError,
    },
    /// No valid API key.
    #[error("{0}")]
    Unauthenticated(String),
    /// The key may not use this model or route.
    #[error("model \"{model}\" is not allowed for API key \"{key_id}\"")]
    KeyModelForbidden {
        /// The requested model.
        model: String,
        /// The key's id.
        key_id: String,
    },
    /// A guardrail's rule blocked the prompt, the answer or a tool call of the answer.
    #[error("guardrail \"{guardrail}\" blocked the {stage}: rule {rule}; {}", guardrail_hint(stage))]
    GuardrailBlocked {
        /// The guardrail.
        guardrail: String,
        /// The rule that fired (`pii.payment_card`, `injection`, `deny.topic.weapons`, …).
        rule: String,
        /// `prompt`, `answer` or `tool call`.
        stage: &'static str,
    },
    /// A per-key rate limit refused the request.
    #[error("rate limit of API key \"{key_id}\" exceeded ({limit}); retry after {retry_after_ms} ms")]
    RateLimited {
        /// The key's id.
        key_id: String,
        /// Which limit.
        limit: &'static str,
        /// When to retry, in milliseconds.
        retry_after_ms: u64,
    },
    /// A budget is exhausted.
    #[error("{period} budget of {scope} exhausted: spent {spent} (+{reserved} in flight) of {limit}; resets at {resets_at}")]
    BudgetExhausted {
        /// Whose budget, e.g. `user acme/alice`.
        scope: String,
        /// `daily` or `monthly`.
        period: &'static str,
        /// Spent so far.
        spent: crate::budget::NanoUsd,
        /// Reserved by requests in flight.
        reserved: crate::budget::NanoUsd,
        /// The limit.
        limit: crate::budget::NanoUsd,
        /// When the period resets (RFC 3339, UTC).
        resets_at: String,
        /// Seconds until then, for `retry-after`.
        retry_after_secs: u64,
    },
    /// A budget's owner in the cluster could not be reached, so the request cannot be checked
    /// against it (it is refused, not admitted unchecked).
    #[error("budget unavailable: {0}")]
    BudgetUnavailable(String),
    /// The caller asked for something (a batch, a file) that does not exist, or that belongs to
    /// another tenant: the two are not told apart.
    #[error("no {what} \"{id}\"")]
    NotFound {
        /// What was looked for: `batch`, `file`.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The node is draining for shutdown and takes no new requests.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// An actor the pipeline needs did not answer: a bug or an overloaded node.
    #[error("internal error: {0}")]
    Internal(String),
}

fn join(failures: &[AttemptFailure]) -> String {
    failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl GatewayError {
    /// An [`GatewayError::InvalidArgument`] naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    /// A short, stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::UnknownModel(_) => "unknown_model",
            Self::ModelForbidden { .. } => "model_forbidden",
            Self::UpstreamRejected { .. } => "upstream_rejected",
            Self::AllProvidersFailed(_) => "all_providers_failed",
            Self::StreamInterrupted { .. } => "stream_interrupted",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::KeyModelForbidden { .. } => "model_forbidden",
            Self::GuardrailBlocked { .. } => "guardrail_blocked",
            Self::RateLimited { .. } => "rate_limited",
            Self::BudgetExhausted { .. } => "budget_exhausted",
            Self::BudgetUnavailable(_) => "budget_unavailable",
            Self::NotFound { .. } => "not_found",
            Self::ShuttingDown => "shutting_down",
            Self::Internal(_) => "internal",
        }
    }
}

/// What a client can do about a guardrail's block, by stage.
fn guardrail_hint(stage: &str) -> &'static str {
    if stage == "prompt" {
        "remove what the rule looks for from the request and send it again"
    } else {
        "the model's answer broke the rule: ask differently, or ask the gateway's operator about the guardrail"
    }
}
