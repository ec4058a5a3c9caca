//! What the router reads and what it decides.

use std::fmt;
use std::sync::Arc;

/// The caller's tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// No paid plan.
    #[default]
    Free,
    /// A paid plan.
    Paid,
    /// An enterprise contract.
    Enterprise,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Free => "free",
            Self::Paid => "paid",
            Self::Enterprise => "enterprise",
        })
    }
}

/// How good an answer is needed, or how good a model is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Anything that answers.
    Low,
    /// The usual.
    #[default]
    Standard,
    /// The best available.
    High,
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Low => "low",
            Self::Standard => "standard",
            Self::High => "high",
        })
    }
}

/// Everything the routing rules look at, derived from one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingContext {
    /// The caller's tier.
    pub tier: Tier,
    /// Task type, empty when unknown.
    pub task_type: String,
    /// Estimated prompt plus answer tokens.
    pub estimated_tokens: u64,
    /// The caller's latency budget.
    pub latency_budget_ms: Option<u32>,
    /// Required quality.
    pub quality: Quality,
    /// The model or route the caller named, if any.
    pub requested: Option<String>,
    /// Models the caller's key may use; empty for all.
    pub allowed_models: std::collections::BTreeSet<String>,
}

/// One provider and model to try.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The configured model name clients use.
    pub model: String,
    /// The provider that serves it.
    pub provider: String,
    /// The model name the provider expects.
    pub upstream_model: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// The router's decision.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSelection {
    /// The first choice (shared with the routing policy, like every target of a selection).
    pub primary: Arc<Target>,
    /// Human-readable reason for the first choice.
    pub reason: String,
    /// What to try next, in order, when the first choice fails.
    pub fallbacks: Vec<Arc<Target>>,
}

impl ModelSelection {
    /// The first choice followed by the fallbacks.
    pub fn chain(&self) -> impl Iterator<Item = &Target> {
        std::iter::once(&*self.primary).chain(self.fallbacks.iter().map(|target| &**target))
    }
}
