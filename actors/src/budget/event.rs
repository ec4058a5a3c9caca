//! The record of what one request cost: written to the ledger, counted against budgets, and
//! summed by the admin queries.

use crate::budget::money::NanoUsd;

/// What one request cost, and to whom.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CostEvent {
    /// The request's id (as returned to the client).
    pub id: String,
    /// When the request arrived, in milliseconds since the Unix epoch; picks the budget periods.
    pub unix_ms: i64,
    /// The tenant.
    pub tenant: String,
    /// The user within the tenant.
    pub user: String,
    /// The API key's id (never the key).
    pub key_id: String,
    /// The model that served (empty when none did).
    pub model: String,
    /// The provider that served.
    pub provider: String,
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
    /// What the provider charges; `None` when the model has no configured price.
    pub cost: Option<NanoUsd>,
    /// True when usage never arrived and the reservation's estimate was charged instead.
    pub estimated: bool,
    /// The cache layer that answered ("none" for an upstream answer).
    pub cache_layer: String,
    /// Cost avoided by a cache hit.
    pub saved: NanoUsd,
    /// Wall time of the request.
    pub latency_ms: u64,
    /// The product feature the request was made for (`metadata.feature` or the
    /// `x-switchyard-feature` header); `None` when untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// The experiment and variant that served it (`canary/control`); `None` outside experiments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
}

impl CostEvent {
    /// The charged amount (unknown prices count as zero towards budgets, and are flagged).
    pub fn charged(&self) -> NanoUsd {
        self.cost.unwrap_or(NanoUsd::ZERO)
    }
}

/// What one (tenant, user, model) spent on one UTC day: the compacted form of a closed ledger
/// segment's events, holding everything the budgets and the cost index take from them.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DaySpend {
    /// The UTC day.
    pub date: chrono::NaiveDate,
    /// The tenant.
    pub tenant: String,
    /// The user within the tenant.
    pub user: String,
    /// The model that served (empty when none did).
    pub model: String,
    /// The feature the requests were tagged with (empty when untagged).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub feature: String,
    /// Requests recorded.
    pub requests: u64,
    /// Requests whose model had no price.
    pub unknown_price_requests: u64,
    /// Requests charged at their estimate.
    pub estimated_requests: u64,
    /// The charged cost.
    pub cost: NanoUsd,
    /// Cost avoided by cache hits.
    pub saved: NanoUsd,
}
