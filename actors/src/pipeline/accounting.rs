//! Admission and accounting around the provider chain: the per-key rate limits, the budget
//! reservation taken before the call (with the downgrade policy), and after it the settlement:
//! the cost event recorded in the ledger, the token limit corrected to real usage, and one audit
//! line per request.

use std::sync::Arc;

use tracing::{info, warn};

use crate::budget::{BudgetHandle, CostEvent, Enforcement, Exhausted, NanoUsd, Refused};
use crate::error::GatewayError;
use crate::model::{CacheLayer, ChatRequest, ModelSelection, Usage};
use crate::router::RoutingPolicy;
use crate::tenancy::Principal;
use crate::tenancy::rate_client::RateClient;

/// Characters per token assumed when reserving: conservative, so real prompts rarely exceed it.
const RESERVE_CHARS_PER_TOKEN: usize = 3;

/// What a request was admitted with: its token estimate and its budget reservation.
#[derive(Debug)]
pub struct Admission {
    /// The principal.
    pub principal: Arc<Principal>,
    /// Tokens taken from the key's token bucket.
    pub token_estimate: u64,
    /// The most the request can cost (what was reserved).
    pub reserved: NanoUsd,
    /// When the request arrived.
    pub unix_ms: i64,
    /// The feature the request is tagged with, for its cost event.
    pub feature: Option<String>,
    /// The experiment variant that serves it, for its cost event.
    pub experiment: Option<String>,
    budget: BudgetHandle,
    reservation: Option<u64>,
    /// The cluster's shared rate limits, when clustered.
    rates: Option<Arc<RateClient>>,
}

impl Admission {
    /// Corrects the token estimate to real usage, where it was taken from.
    fn settle_tokens(&mut self, actual: u64) {
        let estimate = std::mem::take(&mut self.token_estimate);
        match &self.rates {
            Some(rates) => rates.settle(&self.principal.key_id, estimate, actual),
            None => self.principal.limiter.settle(estimate, actual),
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(id) = self.reservation.take() {
            self.budget.release(id);
        }
        if self.token_estimate > 0 {
            self.settle_tokens(0);
        }
    }
}

/// The most `request` can cost at the selection's first choice: its prompt estimated generously
/// and its answer at `max_tokens` (or `reserve_output_tokens`). A request that fails over to a
/// pricier model is charged its real cost; that difference is the one way a burst can overshoot
/// a budget (beyond prompts longer than estimated), by at most the in-flight requests that fail
/// over times the price gap.
pub fn worst_case_cost(request: &ChatRequest, selection: &ModelSelection, policy: &RoutingPolicy, reserve_output_tokens: u32) -> NanoUsd {
    let prompt_chars: usize = request.messages.iter().map(|message| message.content.len()).sum();
    let input = u32::try_from(prompt_chars / RESERVE_CHARS_PER_TOKEN + 4 * request.messages.len()).unwrap_or(u32::MAX);
    let output = request.sampling.max_tokens.unwrap_or(reserve_output_tokens);
    policy.price(&selection.primary.model).map_or(NanoUsd::ZERO, |price| price.charge(Usage { input_tokens: input, output_tokens: output, ..Usage::default() }))
}

/// Refused while the cost ledger cannot write (the request's cost could not be recorded), then
/// rate limits, then the budget reservation. Under the downgrade policy an exhausted budget
/// re-routes to the cheapest allowed model (via `downgrade`) and reserves without the limit.
#[expect(clippy::too_many_arguments, reason = "each argument is one input of the admission decision")]
pub async fn admit(
    principal: &Arc<Principal>,
    budget: &BudgetHandle,
    rates: Option<&Arc<RateClient>>,
    enforcement: Enforcement,
    token_estimate: u64,
    unix_ms: i64,
    selection: &mut ModelSelection,
    mut cost_of: impl FnMut(&ModelSelection) -> NanoUsd,
    downgrade: impl FnOnce() -> Option<ModelSelection>,
) -> Result<Admission, GatewayError> {
    let unwritten = budget.ledger.unwritten_bytes();
    if unwritten > 0 {
        return Err(GatewayError::BudgetUnavailable(format!(
            "the cost ledger cannot write ({unwritten} bytes of cost events wait to be written again); no request is taken until it can: retry later or on another node"
        )));
    }
    let limited = match rates {
        Some(rates) => rates.admit(principal, token_estimate).await,
        None => principal.limiter.admit(token_estimate),
    };
    if let Err(limited) = limited {
        return Err(GatewayError::RateLimited {
            key_id: principal.key_id.clone(),
            limit: limited.limit,
            retry_after_ms: u64::try_from(limited.retry_after.as_millis()).unwrap_or(u64::MAX).max(1),
        });
    }
    let mut admission = Admission {
        principal: Arc::clone(principal),
        token_estimate,
        reserved: cost_of(selection),
        unix_ms,
        feature: None,
        experiment: None,
        budget: budget.clone(),
        reservation: None,
        rates: rates.cloned(),
    };
    let reserve = |amount: NanoUsd, enforce: bool| budget.reserve(&principal.tenant, &principal.user, amount, unix_ms, enforce);
    match reserve(admission.reserved, true).await {
        Ok(id) => admission.reservation = Some(id),
        Err(Refused::Exhausted(exhausted)) if enforcement == Enforcement::Downgrade => {
            let cheaper = downgrade().ok_or_else(|| exhausted_error(&exhausted))?;
            *selection = cheaper;
            admission.reserved = cost_of(selection);
            let id = reserve(admission.reserved, false).await.map_err(refused_error)?;
            admission.reservation = Some(id);
        }
        Err(refused) => return Err(refused_error(refused)),
    }
    Ok(admission)
}

fn refused_error(refused: Refused) -> GatewayError {
    match refused {
        Refused::Exhausted(exhausted) => exhausted_error(&exhausted),
        Refused::Unavailable(why) => GatewayError::BudgetUnavailable(why),
    }
}

fn exhausted_error(exhausted: &Exhausted) -> GatewayError {
    let resets_at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(exhausted.resets_at_ms).unwrap_or_default();
    let retry_after_secs = u64::try_from((exhausted.resets_at_ms - crate::budget::period::now_ms()).max(0) / 1000).unwrap_or(0) + 1;
    GatewayError::BudgetExhausted {
        scope: exhausted.scope.to_string(),
        period: exhausted.period.as_str(),
        spent: exhausted.spent,
        reserved: exhausted.reserved,
        limit: exhausted.limit,
        resets_at: resets_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        retry_after_secs,
    }
}

/// What a finished request reports for accounting.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// The request id.
    pub id: &'a str,
    /// The serving model and provider (empty when none served).
    pub model: &'a str,
    /// The serving provider.
    pub provider: &'a str,
    /// Real usage, or `None` when it never arrived.
    pub usage: Option<Usage>,
    /// Cost of that usage; `None` when the model has no price.
    pub cost: Option<NanoUsd>,
    /// Wall time.
    pub latency_ms: u64,
    /// `ok` or the error label.
    pub status: &'static str,
    /// The cache layer that answered.
    pub cache_layer: CacheLayer,
    /// What a cache hit saved.
    pub saved: NanoUsd,
}

/// Settles `admission` with `outcome`: the reservation becomes the real cost (or, when usage
/// never arrived, the reserved estimate, marked estimated), the event goes to the ledger, the
/// token bucket is corrected, and the audit line is logged. Returns once the event is written.
pub async fn settle(mut admission: Admission, outcome: Outcome<'_>, request_text: Option<(&ChatRequest, &str)>) -> Result<(), GatewayError> {
    let estimated = outcome.usage.is_none();
    if !estimated && outcome.cost.is_none() && !outcome.model.is_empty() {
        warn!(model = outcome.model, "model has no configured price: cost recorded as unknown");
    }
    let usage = outcome.usage.unwrap_or_default();
    let cost = if estimated { Some(admission.reserved) } else { outcome.cost };
    let principal = Arc::clone(&admission.principal);
    let event = CostEvent {
        id: outcome.id.to_owned(),
        unix_ms: admission.unix_ms,
        tenant: principal.tenant.clone(),
        user: principal.user.clone(),
        key_id: principal.key_id.clone(),
        model: outcome.model.to_owned(),
        provider: outcome.provider.to_owned(),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cost,
        estimated,
        cache_layer: outcome.cache_layer.as_str().into(),
        saved: outcome.saved,
        latency_ms: outcome.latency_ms,
        feature: admission.feature.take(),
        experiment: admission.experiment.take(),
    };
    audit(&event, outcome.status, request_text);
    admission.settle_tokens(u64::from(usage.total()));
    let reservation = admission.reservation.take();
    admission.budget.settle(reservation, event).await.map_err(|error| GatewayError::Internal(format!("cost ledger: {error}")))
}

/// Logs a request that failed before any provider served it.
pub fn audit_failure(admission: &Admission, status: &'static str, latency_ms: u64) {
    let principal = &admission.principal;
    info!(
        target: "audit",
        key_id = %principal.key_id,
        tenant = %principal.tenant,
        user = %principal.user,
        outcome = status,
        latency_ms,
        "request"
    );
}

fn audit(event: &CostEvent, status: &str, request_text: Option<(&ChatRequest, &str)>) {
    let prompt = request_text.map(|(request, _)| {
        request.messages.iter().map(|message| format!("{}: {}", message.role, message.content)).collect::<Vec<_>>().join("\n")
    });
    let answer = request_text.map(|(_, answer)| answer);
    info!(
        target: "audit",
        request_id = %event.id,
        key_id = %event.key_id,
        tenant = %event.tenant,
        user = %event.user,
        model = %event.model,
        provider = %event.provider,
        input_tokens = event.input_tokens,
        output_tokens = event.output_tokens,
        cost_usd = event.cost.map(NanoUsd::as_usd),
        cost_estimated = event.estimated,
        cache_layer = %event.cache_layer,
        feature = event.feature.as_deref(),
        experiment = event.experiment.as_deref(),
        outcome = status,
        latency_ms = event.latency_ms,
        prompt = prompt.as_deref(),
        answer,
        "request"
    );
}
