//! The request pipeline of DESIGN.md §1, driving the actors for one request: validate, route,
//! call the provider chain with retries and failover, price the answer.
//!
//! The cache steps (4, 5, 9), authentication, rate limits and budgets (1–3, 8) slot in between
//! these steps; each step is a span of the request's trace.
//!
//! - [`Gateway`]: starts the node's actors and serves requests from both front doors.
//! - [`attempt`]: one provider with its retries, unary or up to the first token of a stream.
//! - [`stream`]: forwarding a streamed answer as it arrives.

pub mod attempt;
pub mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info_span, instrument};

use crate::error::{AttemptFailure, GatewayError};
use crate::metrics::Metrics;
use crate::model::{ChatRequest, Completion, ModelSelection, RequestLimits, RoutingContext, Target};
use crate::provider::{ErrorClass, ProviderHandle, ProviderSettings};
use crate::router::{ModelSettings, RouterHandle, RoutingPolicy};

pub use stream::{AnswerStream, StreamItem};

/// Everything the pipeline is built from, validated by the node's config loader.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Every provider.
    pub providers: Vec<ProviderSettings>,
    /// The routing policy.
    pub policy: RoutingPolicy,
    /// Request bounds.
    pub limits: RequestLimits,
}

/// A whole answer with everything the front doors report about it.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Gateway-assigned id.
    pub id: String,
    /// The answer.
    pub completion: Completion,
    /// Who served it.
    pub target: Target,
    /// Why the router chose its first choice.
    pub routing_reason: String,
    /// True when a fallback served.
    pub fallback: bool,
    /// Attempts that failed before the one that served.
    pub failed_attempts: Vec<AttemptFailure>,
    /// Cost in USD; `None` when the model has no price.
    pub cost_usd: Option<f64>,
    /// Wall time in the gateway.
    pub latency: Duration,
    /// Part of `latency` not spent waiting on upstreams or backoff.
    pub gateway_overhead: Duration,
}

/// The node's request pipeline. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Gateway {
    providers: HashMap<String, ProviderHandle>,
    router: RouterHandle,
    limits: RequestLimits,
    metrics: Arc<Metrics>,
    in_flight: TaskTracker,
    actors: Vec<ractor::ActorCell>,
}

impl Gateway {
    /// Starts the router and one pool per provider.
    pub async fn start(settings: GatewaySettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let (router, router_cell) = RouterHandle::start(settings.policy).await?;
        let mut actors = vec![router_cell];
        let mut providers = HashMap::new();
        for provider in settings.providers {
            let name = provider.name.clone();
            let (handle, cell) = ProviderHandle::start(provider, router.actor.clone(), Arc::clone(&metrics)).await?;
            actors.push(cell);
            providers.insert(name, handle);
        }
        Ok(Self { providers, router, limits: settings.limits, metrics, in_flight: TaskTracker::new(), actors })
    }

    /// The request bounds.
    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Every configured model, for `GET /v1/models`.
    pub fn models(&self) -> Vec<ModelSettings> {
        self.router.snapshot().policy.models().to_vec()
    }

    /// Stops taking requests; [`Gateway::drained`] then resolves once the last one is answered.
    pub fn begin_shutdown(&self) {
        self.in_flight.close();
    }

    /// Resolves when shutdown has begun and no request or stream is in flight.
    pub async fn drained(&self) {
        self.in_flight.wait().await;
    }

    /// False once shutdown has begun.
    pub fn accepting(&self) -> bool {
        !self.in_flight.is_closed()
    }

    /// Requests and streams being served.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Stops the node's actors.
    pub fn stop_actors(&self) {
        for actor in &self.actors {
            actor.stop(Some("node shutting down".into()));
        }
    }

    fn admit(&self) -> Result<tokio_util::task::task_tracker::TaskTrackerToken, GatewayError> {
        if self.in_flight.is_closed() {
            return Err(GatewayError::ShuttingDown);
        }
        Ok(self.in_flight.token())
    }

    fn routing_context(&self, request: &ChatRequest) -> RoutingContext {
        RoutingContext {
            tier: request.hints.tier,
            task_type: request.hints.task_type.clone(),
            estimated_tokens: request.estimated_tokens(&self.limits),
            latency_budget_ms: request.hints.latency_budget_ms,
            quality: request.hints.quality,
            requested: request.model.clone(),
        }
    }

    #[instrument(skip_all, fields(model = request.model.as_deref().unwrap_or("auto")))]
    fn validate_and_route(&self, request: &ChatRequest) -> Result<ModelSelection, GatewayError> {
        request.validate(&self.limits)?;
        let context = self.routing_context(request);
        let _span = info_span!("route", tier = %context.tier, quality = %context.quality).entered();
        self.router.snapshot().select(&context)
    }

    fn provider(&self, target: &Target) -> Result<&ProviderHandle, GatewayError> {
        self.providers
            .get(&target.provider)
            .ok_or_else(|| GatewayError::Internal(format!("model \"{}\" names unknown provider \"{}\"", target.model, target.provider)))
    }

    fn price(&self, target: &Target, usage: crate::model::Usage) -> Option<f64> {
        let snapshot = self.router.snapshot();
        snapshot.policy.model(&target.model)?.price.map(|price| price.cost(usage.input_tokens, usage.output_tokens))
    }

    fn record_answer(&self, target: &Target, usage: crate::model::Usage, fallback_from: Option<&Target>) {
        self.metrics.record_tokens(&target.provider, &target.model, usage);
        if let Some(first) = fallback_from {
            self.metrics.fallbacks.with_label_values(&[first.provider.as_str(), target.provider.as_str()]).inc();
        }
    }

    /// Answers `request` whole: validate, route, then down the chain until a provider answers.
    #[instrument(name = "generate", skip_all)]
    pub async fn generate(&self, request: ChatRequest) -> Result<Answer, GatewayError> {
        let started = Instant::now();
        let _in_flight = self.admit()?;
        let selection = self.validate_and_route(&request)?;
        let mut failures = Vec::new();
        let mut upstream_time = Duration::ZERO;
        for target in selection.chain() {
            let provider = self.provider(target)?;
            let span = info_span!("provider_call", provider = %target.provider, model = %target.model);
            let outcome = attempt::unary(provider, target, &request, &self.metrics, &mut upstream_time).instrument(span).await;
            match outcome {
                Ok(completion) => {
                    let fallback = target != &selection.primary;
                    self.record_answer(target, completion.usage, fallback.then_some(&selection.primary));
                    let latency = started.elapsed();
                    let gateway_overhead = latency.saturating_sub(upstream_time);
                    self.metrics.gateway_overhead.observe(gateway_overhead.as_secs_f64());
                    return Ok(Answer {
                        id: new_id(),
                        cost_usd: self.price(target, completion.usage),
                        completion,
                        target: target.clone(),
                        routing_reason: selection.reason.clone(),
                        fallback,
                        failed_attempts: failures,
                        latency,
                        gateway_overhead,
                    });
                }
                Err(error) if error.class() == ErrorClass::Final => {
                    return Err(GatewayError::UpstreamRejected { target: target.to_string(), error });
                }
                Err(error) => failures.push(AttemptFailure { target: target.to_string(), error }),
            }
        }
        Err(GatewayError::AllProvidersFailed(failures))
    }

    /// Answers `request` as a stream. Resolves once a provider has produced its first token
    /// (failing over until one does); the rest is forwarded as it arrives.
    #[instrument(name = "generate_stream", skip_all)]
    pub async fn generate_stream(&self, request: ChatRequest) -> Result<AnswerStream, GatewayError> {
        let started = Instant::now();
        let in_flight = self.admit()?;
        let selection = self.validate_and_route(&request)?;
        let mut failures = Vec::new();
        for target in selection.chain() {
            let provider = self.provider(target)?;
            let span = info_span!("provider_call", provider = %target.provider, model = %target.model);
            match attempt::first_token(provider, target, &request, &self.metrics).instrument(span).await {
                Ok(opened) => {
                    let fallback = target != &selection.primary;
                    let price = self.router.snapshot().policy.model(&target.model).and_then(|model| model.price);
                    if fallback {
                        self.metrics.fallbacks.with_label_values(&[selection.primary.provider.as_str(), target.provider.as_str()]).inc();
                    }
                    return Ok(stream::forward(stream::StreamStart {
                        id: new_id(),
                        opened,
                        target: target.clone(),
                        routing_reason: selection.reason.clone(),
                        fallback,
                        failed_attempts: failures,
                        price,
                        started,
                        metrics: Arc::clone(&self.metrics),
                        in_flight,
                    }));
                }
                Err(error) if error.class() == ErrorClass::Final => {
                    return Err(GatewayError::UpstreamRejected { target: target.to_string(), error });
                }
                Err(error) => failures.push(AttemptFailure { target: target.to_string(), error }),
            }
        }
        Err(GatewayError::AllProvidersFailed(failures))
    }
}

fn new_id() -> String {
    format!("sy-{:016x}", rand::random::<u64>())
}
