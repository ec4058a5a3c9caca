//! Embeddings through the pipeline: authorised, rate limited, budgeted, exact-cached, priced and
//! recorded like chat, but always by the model named (embeddings of different models are not
//! interchangeable, so there is no routing choice, no fallback and no downgrade).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{Instrument as _, info_span, instrument};

use crate::budget::NanoUsd;
use crate::budget::period::now_ms;
use crate::cache::CachedAnswer;
use crate::error::{AttemptFailure, GatewayError};
use crate::model::{CacheLayer, EmbeddingRequest, RoutingContext, Target, Usage};
use crate::pipeline::accounting::{self, Outcome};
use crate::pipeline::caching::exact_lookup;
use crate::pipeline::{Gateway, attempt, new_id};
use crate::provider::ErrorClass;
use crate::tenancy::Principal;

/// Characters per token assumed when reserving, as for chat.
const RESERVE_CHARS_PER_TOKEN: usize = 3;

/// Embeddings with everything the front door reports about them.
#[derive(Clone, Debug)]
pub struct EmbeddingAnswer {
    /// Gateway-assigned id.
    pub id: String,
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens, as the provider counted them.
    pub input_tokens: u32,
    /// The model that embedded them.
    pub target: Target,
    /// Cost; `None` when the model has no price.
    pub cost: Option<NanoUsd>,
    /// Wall time in the gateway.
    pub latency: Duration,
    /// The cache layer that answered (exact or none).
    pub cache_layer: CacheLayer,
    /// The exact-cache key, when the cache is on.
    pub cache_key: Option<String>,
}

impl Gateway {
    /// Embeds `request`'s inputs for `principal` with the model it names: validate, authorise,
    /// admit against rate limits and budgets, then the exact cache, then the model's provider
    /// (with retries, never another model); the cost is in the ledger before the answer returns.
    #[instrument(name = "embed", skip_all, fields(tenant = %principal.tenant, user = %principal.user, model = %request.model))]
    pub async fn embed(&self, principal: &Arc<Principal>, request: EmbeddingRequest) -> Result<EmbeddingAnswer, GatewayError> {
        let started = Instant::now();
        let _in_flight = self.admit()?;
        request.validate(&self.limits)?;
        if !principal.may_use(&request.model) {
            return Err(GatewayError::KeyModelForbidden { model: request.model.clone(), key_id: principal.key_id.clone() });
        }
        let snapshot = self.router.snapshot();
        let context = RoutingContext {
            tier: if self.keys.is_open() { request.hints.tier } else { principal.tier },
            allowed_models: principal.models.clone(),
            requested: Some(request.model.clone()),
            ..RoutingContext::default()
        };
        let target = snapshot.policy.select_embedding(&request.model, &context)?;
        let price = snapshot.policy.price(&target.model);
        let token_estimate = (request.chars() / RESERVE_CHARS_PER_TOKEN + request.inputs.len()) as u64;
        let worst_case = price.map_or(NanoUsd::ZERO, |price| {
            let input_tokens = u32::try_from(token_estimate).unwrap_or(u32::MAX);
            price.charge(Usage { input_tokens, ..Usage::default() })
        });
        let mut selection = crate::model::ModelSelection { primary: Arc::new(target.clone()), reason: String::new(), fallbacks: Vec::new() };
        let admission = accounting::admit(
            principal,
            &self.budget,
            self.rates.as_ref(),
            self.budget.policy.enforcement,
            token_estimate,
            now_ms(),
            &mut selection,
            |_| worst_case,
            || None,
        )
        .instrument(info_span!("admission"))
        .await?;

        let cache = (!request.cache.bypass).then_some(self.caches.exact.as_ref()).flatten();
        let cache_key = cache.map(|_| request.cache_key(&principal.tenant));
        if let (Some(exact), Some(key)) = (cache, &cache_key) {
            if let Some(cached) = exact_lookup(exact, key, &self.metrics).await
                && cached.embeddings.len() == request.inputs.len()
            {
                let id = new_id();
                let outcome = Outcome {
                    id: &id,
                    model: &cached.model,
                    provider: &cached.provider,
                    usage: Some(Usage { input_tokens: cached.input_tokens, ..Usage::default() }),
                    cost: Some(NanoUsd::ZERO),
                    latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    status: "ok",
                    cache_layer: CacheLayer::Exact,
                    saved: NanoUsd(cached.cost_nano_usd.unwrap_or(0)),
                };
                accounting::settle(admission, outcome, None).await?;
                return Ok(EmbeddingAnswer {
                    id,
                    vectors: cached.embeddings.clone(),
                    input_tokens: cached.input_tokens,
                    target,
                    cost: Some(NanoUsd::ZERO),
                    latency: started.elapsed(),
                    cache_layer: CacheLayer::Exact,
                    cache_key,
                });
            }
        } else if request.cache.bypass && self.caches.exact.is_some() {
            self.metrics.record_lookup("exact", "bypass");
        }

        let provider = self.provider(&target)?;
        let span = info_span!("provider_call", provider = %target.provider, model = %target.model);
        let result = attempt::embed(provider, &target, &request, &self.metrics).instrument(span).await.unwrap_or_else(|| {
            Err(crate::provider::ProviderError::Malformed(format!("provider \"{}\" has no embeddings endpoint", target.provider)))
        });
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let embeddings = match result {
            Ok(embeddings) => embeddings,
            Err(error) => {
                let error = if error.class() == ErrorClass::Final {
                    GatewayError::UpstreamRejected { target: target.to_string(), error }
                } else {
                    GatewayError::AllProvidersFailed(vec![AttemptFailure { target: target.to_string(), error }])
                };
                accounting::audit_failure(&admission, error.label(), latency_ms);
                return Err(error);
            }
        };
        let usage = Usage { input_tokens: embeddings.input_tokens, ..Usage::default() };
        let cost = price.map(|price| price.charge(usage));
        self.metrics.record_tokens(&target.provider, &target.model, usage);
        let id = new_id();
        let outcome = Outcome {
            id: &id,
            model: &target.model,
            provider: &target.provider,
            usage: Some(usage),
            cost,
            latency_ms,
            status: "ok",
            cache_layer: CacheLayer::None,
            saved: NanoUsd::ZERO,
        };
        accounting::settle(admission, outcome, None).instrument(info_span!("settle")).await?;
        if let (Some(exact), Some(key), false) = (cache, &cache_key, request.cache.no_store) {
            let entry = CachedAnswer {
                tenant: principal.tenant.clone(),
                route: request.model.clone(),
                text: String::new(),
                tool_calls: Vec::new(),
                embeddings: embeddings.vectors.clone(),
                model: target.model.clone(),
                provider: target.provider.clone(),
                input_tokens: embeddings.input_tokens,
                output_tokens: 0,
                finish_reason: "stop".into(),
                cost_nano_usd: cost.map(|cost| cost.0),
                created_ms: now_ms(),
            };
            let ttl = request.cache.ttl_seconds.map(|seconds| Duration::from_secs(u64::from(seconds)));
            exact.put(key.clone(), entry, ttl).await;
        }
        Ok(EmbeddingAnswer {
            id,
            vectors: embeddings.vectors,
            input_tokens: embeddings.input_tokens,
            target,
            cost,
            latency: started.elapsed(),
            cache_layer: CacheLayer::None,
            cache_key,
        })
    }
}
