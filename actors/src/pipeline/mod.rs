//! The request pipeline of DESIGN.md §1, driving the actors for one request: validate, route,
//! call the provider chain with retries and failover, price the answer.
//!
//! The cache steps (4, 5, 9), authentication, rate limits and budgets (1–3, 8) slot in between
//! these steps; each step is a span of the request's trace.
//!
//! - [`Gateway`]: holds the handles of the node's actors and serves requests from both front
//!   doors.
//! - [`accounting`]: rate limits and the budget reservation before the call, settlement after.
//! - [`caching`]: both cache layers as steps: exact, then semantic, and storing the answer.
//! - [`attempt`]: one provider with its retries, unary or up to the first token of a stream.
//! - [`stream`]: forwarding a streamed answer as it arrives.
//! - [`embeddings`]: embeddings through the same admission, cache and accounting.
//! - [`guarding`]: the guardrails on the prompt before anything sees it, and on the answer.

pub mod accounting;
pub mod attempt;
mod caching;
pub mod embeddings;
pub mod guarding;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info_span, instrument};

use crate::budget::period::now_ms;
use crate::budget::{BudgetHandle, BudgetPolicy, CostQuery, CostReport, NanoUsd};
use crate::error::{AttemptFailure, GatewayError};
use crate::metrics::Metrics;
use crate::cache::semantic::{SemanticMatch, SemanticSettings};
use crate::cluster::membership::{ClusterView, MembershipSettings};
use crate::cache::{CachedAnswer, ExactCache, Invalidation, RedisCacheSettings};
use crate::pipeline::caching::{CacheHit, Caches};
use crate::model::{CacheLayer, ChatRequest, Completion, FinishReason, ModelSelection, RequestLimits, RoutingContext, Target, Tier, ToolCall};
use crate::pipeline::accounting::{Admission, Outcome};
use crate::experiment::{Assignment, Experiments};
use crate::pipeline::guarding::Guarding;
use crate::provider::{ErrorClass, ProviderError, ProviderHandle, ProviderSettings, capability};
use crate::router::{ModelSettings, RouterHandle, RoutingPolicy, RoutingSnapshot};
use crate::runtime::{NodeActors, RuntimeHandle};
use crate::tenancy::{KeyRing, KeySettings, Principal};

pub use embeddings::EmbeddingAnswer;
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
    /// API keys; empty runs the node open as one anonymous tenant.
    pub keys: Vec<KeySettings>,
    /// SHA-256 of the admin key.
    pub admin_key: Option<[u8; 32]>,
    /// Tier of the anonymous tenant of an open node.
    pub anonymous_tier: Tier,
    /// Budgets, thresholds and enforcement.
    pub budget: BudgetPolicy,
    /// The cost ledger file.
    pub ledger_path: std::path::PathBuf,
    /// Where budget alerts are posted, if anywhere.
    pub alert_webhook: Option<reqwest::Url>,
    /// Whether audit lines carry prompt and answer text.
    pub audit_text: bool,
    /// The exact cache, when enabled.
    pub exact_cache: Option<ExactCacheSettings>,
    /// The semantic cache, when enabled.
    pub semantic_cache: Option<SemanticSettings>,
    /// Redis for the cost ledger, when configured.
    pub redis_ledger: Option<crate::budget::redis_sink::RedisLedgerSettings>,
    /// The cluster this node joins; `None` runs it alone.
    pub cluster: Option<ClusterSettings>,
    /// Guardrails on prompts and answers, in configuration order.
    pub guardrails: Vec<crate::guard::Guardrail>,
    /// A/B tests and canary splits.
    pub experiments: Vec<crate::experiment::ExperimentSettings>,
}

/// How the node joins its cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// Membership: name, addresses, cookie, seeds, heartbeats.
    pub membership: MembershipSettings,
    /// Owners per semantic partition.
    pub replication: usize,
    /// How long a semantic lookup waits for another node before asking the next replica.
    pub remote_lookup_timeout: Duration,
    /// How long a partition this node lost keeps answering lookups.
    pub handoff_grace: Duration,
}

/// What this node knows of its cluster, for the Admin API and `/ready`.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    /// Members as this node sees them (this node first), and whether it is clustered at all.
    pub view: ClusterView,
    /// Version of this node's partition map (0: never rebalanced).
    pub map_version: u64,
    /// Semantic partitions this node owns.
    pub partitions_owned: Vec<u32>,
    /// Partitions being pulled from a replica.
    pub handoffs_in_progress: Vec<u32>,
}

/// The exact cache's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactCacheSettings {
    /// Most entries held in process (without Redis).
    pub max_entries: u64,
    /// Lifetime of an entry unless the request sets one.
    pub ttl: Duration,
    /// Redis, when configured: the cache is shared there instead of held in process.
    pub redis: Option<RedisCacheSettings>,
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
    /// Cost; `None` when the model has no price.
    pub cost: Option<NanoUsd>,
    /// Wall time in the gateway.
    pub latency: Duration,
    /// Part of `latency` not spent waiting on upstreams or backoff.
    pub gateway_overhead: Duration,
    /// The cache layer that answered.
    pub cache_layer: CacheLayer,
    /// The exact-cache key of the request (for invalidation), when the cache is on.
    pub cache_key: Option<String>,
    /// For a semantic hit: its similarity and entry.
    pub cache_match: Option<SemanticMatch>,
    /// The experiment and variant that served it (`canary/control`), when one did.
    pub experiment: Option<String>,
}

/// The node's request pipeline. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Gateway {
    /// Looked up by name several times per request: a fast hasher.
    providers: foldhash::HashMap<String, ProviderHandle>,
    router: RouterHandle,
    limits: RequestLimits,
    metrics: Arc<Metrics>,
    in_flight: TaskTracker,
    runtime: RuntimeHandle,
    keys: KeyRing,
    budget: BudgetHandle,
    audit_text: bool,
    caches: Caches,
    cluster_view: tokio::sync::watch::Receiver<ClusterView>,
    /// The cluster's shared rate limits, when clustered.
    rates: Option<Arc<crate::tenancy::rate_client::RateClient>>,
    guardrails: Vec<crate::guard::Guardrail>,
    experiments: Arc<Experiments>,
}

impl Gateway {
    /// Starts the node's actors under its runtime ([`NodeActors::start`]) and builds the
    /// pipeline around their handles.
    pub async fn start(settings: GatewaySettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let NodeActors { runtime, router, budget, providers, semantic, cluster_view, rates } = NodeActors::start(&settings, Arc::clone(&metrics)).await?;
        let keys = KeyRing::new(settings.keys, settings.admin_key, settings.anonymous_tier);
        let exact = match settings.exact_cache {
            None => None,
            Some(ExactCacheSettings { redis: Some(redis), ttl, .. }) => Some(ExactCache::redis(&redis, ttl, Arc::clone(&metrics))?),
            Some(exact) => Some(ExactCache::in_memory(exact.max_entries, exact.ttl, Arc::clone(&metrics))),
        };
        let experiment_metrics = Arc::clone(&metrics);
        Ok(Self {
            providers,
            router,
            limits: settings.limits,
            metrics: Arc::clone(&metrics),
            in_flight: TaskTracker::new(),
            runtime,
            keys,
            budget,
            audit_text: settings.audit_text,
            caches: Caches { exact, semantic, metrics },
            cluster_view,
            rates,
            guardrails: settings.guardrails,
            experiments: Experiments::new(settings.experiments, Arc::clone(&experiment_metrics)),
        })
    }

    /// The principal of a bearer token.
    pub fn authenticate(&self, bearer: Option<&str>) -> Result<Arc<Principal>, GatewayError> {
        self.keys.authenticate(bearer)
    }

    /// The principal of the configured key `key_id` (the anonymous one on an open node), for
    /// work that runs later as the key that asked for it; `None` once the key is gone.
    pub fn principal_by_key_id(&self, key_id: &str) -> Option<Arc<Principal>> {
        self.keys.by_id(key_id)
    }

    /// Checks the admin key.
    pub fn authenticate_admin(&self, bearer: Option<&str>) -> Result<(), GatewayError> {
        self.keys.authenticate_admin(bearer)
    }

    /// True when no keys are configured.
    pub fn is_open(&self) -> bool {
        self.keys.is_open()
    }

    /// Answers a cost query: for the whole cluster when clustered (every member's ledger,
    /// summed), else from this node's.
    pub async fn query(&self, query: CostQuery) -> Result<CostReport, GatewayError> {
        let (clustered, alive) = {
            let view = self.cluster_view.borrow();
            (view.clustered, view.alive.clone())
        };
        if clustered {
            return crate::budget::cost_peer::cluster_query(query, &alive).await;
        }
        ractor::call!(self.budget.actor, crate::budget::budget::BudgetMessage::Query, query)
            .map_err(|error| GatewayError::Internal(format!("budget actor: {error}")))
    }

    /// Drops entries from both cache layers (either may be off).
    pub async fn invalidate(&self, what: &Invalidation) -> Result<(), GatewayError> {
        self.caches.invalidate(what).await
    }

    /// Writes the semantic cache's snapshots (shutdown; the layer also does so on a timer).
    pub async fn snapshot_caches(&self) -> Result<(), String> {
        match &self.caches.semantic {
            Some(semantic) => semantic.snapshot().await,
            None => Ok(()),
        }
    }

    /// Entries the semantic cache holds on this node (0 when it is off).
    pub async fn semantic_entries(&self) -> usize {
        match &self.caches.semantic {
            Some(semantic) => semantic.entries().await,
            None => 0,
        }
    }

    /// What this node knows of its cluster.
    pub fn cluster_status(&self) -> ClusterStatus {
        let view = self.cluster_view.borrow().clone();
        match &self.caches.semantic {
            Some(semantic) => {
                let directory = semantic.directory();
                ClusterStatus {
                    view,
                    map_version: directory.map.version,
                    partitions_owned: directory.map.owned_by(&directory.this_node),
                    handoffs_in_progress: directory.loading(),
                }
            }
            None => ClusterStatus { view, map_version: 0, partitions_owned: Vec::new(), handoffs_in_progress: Vec::new() },
        }
    }

    /// Forces the cost ledger to stable storage (shutdown).
    pub async fn sync_ledger(&self) -> anyhow::Result<()> {
        Ok(self.budget.ledger.sync().await?)
    }

    /// The request bounds.
    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    /// The node's experiments (their reports and weights, for the Admin API).
    pub fn experiments(&self) -> &Arc<Experiments> {
        &self.experiments
    }

    /// Places `request` in the experiment that covers it, if any, and points it at the
    /// variant's model.
    fn assign_experiment(&self, principal: &Principal, request: &mut ChatRequest) -> Option<Assignment> {
        let route = request.model.as_deref().unwrap_or("auto");
        let tier = if self.keys.is_open() { request.hints.tier } else { principal.tier };
        let user = request.user.as_deref().unwrap_or(&principal.user);
        let (assignment, model) = self.experiments.assign(principal, user, tier, route)?;
        request.model = Some(model);
        Some(assignment)
    }

    /// Lets the budget and provider pool actors take the reports still waiting in their outboxes
    /// (see [`crate::outbox`]), so that metrics read next count every request settled before.
    pub async fn flush_reports(&self) {
        self.budget.flush().await;
        for provider in self.providers.values() {
            provider.flush().await;
        }
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Every configured model, for `GET /v1/models`.
    pub fn models(&self) -> Vec<ModelSettings> {
        self.router.snapshot().policy.models().to_vec()
    }

    /// The models and routes `principal` may name, with who serves them (see
    /// `RoutingPolicy::usable`); `tier_hint` is the tier header's, used only on an open node.
    pub fn usable_models(&self, principal: &Principal, tier_hint: Tier) -> Vec<(String, String)> {
        let context = RoutingContext {
            tier: if self.keys.is_open() { tier_hint } else { principal.tier },
            allowed_models: principal.models.clone(),
            task_type: String::new(),
            estimated_tokens: 0,
            latency_budget_ms: None,
            quality: crate::model::Quality::Standard,
            requested: None,
        };
        self.router.snapshot().policy.usable(&context)
    }

    /// Stops taking requests; [`Gateway::drained`] then resolves once the last one is answered.
    pub fn begin_shutdown(&self) {
        self.in_flight.close();
    }

    /// Resolves when shutdown has begun and no request or stream is in flight.
    pub async fn drained(&self) {
        self.in_flight.wait().await;
    }

    /// Bytes of cost events the ledger failed to write and waits to write again; 0 while it
    /// takes writes (requests are refused meanwhile, see `accounting::admit`).
    pub fn ledger_backlog(&self) -> usize {
        self.budget.ledger.unwritten_bytes()
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
    pub async fn stop_actors(&self) {
        self.runtime.stop().await;
    }

    /// Resolves when an actor of the node fails, with what happened: the node must then shut
    /// down (see [`crate::runtime`]).
    pub async fn actor_failed(&self) -> String {
        self.runtime.failed().await
    }

    fn admit(&self) -> Result<tokio_util::task::task_tracker::TaskTrackerToken, GatewayError> {
        if self.in_flight.is_closed() {
            return Err(GatewayError::ShuttingDown);
        }
        Ok(self.in_flight.token())
    }

    fn routing_context(&self, principal: &Principal, request: &ChatRequest) -> RoutingContext {
        RoutingContext {
            tier: if self.keys.is_open() { request.hints.tier } else { principal.tier },
            allowed_models: principal.models.clone(),
            task_type: request.hints.task_type.clone(),
            estimated_tokens: request.estimated_tokens(&self.limits),
            latency_budget_ms: request.hints.latency_budget_ms,
            quality: request.hints.quality,
            requested: request.model.clone(),
        }
    }

    /// Validates, routes and admits a request: its key may use the model, its rate limits and
    /// budgets allow it.
    #[instrument(skip_all, fields(model = request.model.as_deref().unwrap_or("auto")))]
    async fn prepare(&self, principal: &Arc<Principal>, request: &ChatRequest) -> Result<(ModelSelection, Admission), GatewayError> {
        let (context, snapshot, mut selection) = self.route(principal, request)?;
        let policy = &self.budget.policy;
        let reserve_output = policy.reserve_output_tokens;
        let token_estimate = request.estimated_tokens(&self.limits);
        let admission = accounting::admit(
            principal,
            &self.budget,
            self.rates.as_ref(),
            policy.enforcement,
            token_estimate,
            now_ms(),
            &mut selection,
            |selection| accounting::worst_case_cost(request, selection, &snapshot.policy, reserve_output),
            || snapshot.policy.cheapest(&context, &snapshot.health),
        )
        .instrument(info_span!("admission"))
        .await;
        match admission {
            Ok(mut admission) => {
                admission.feature = request.feature().map(str::to_owned);
                Ok((selection, admission))
            }
            Err(error) => {
                if let GatewayError::RateLimited { key_id, limit, .. } = &error {
                    self.metrics.rate_limited.with_label_values(&[key_id.as_str(), limit]).inc();
                }
                Err(error)
            }
        }
    }

    /// Validates `request`, checks its key may name the model, and routes it to the targets that
    /// honour every field it uses: the routing context, the snapshot it was routed on, the
    /// selection.
    fn route(&self, principal: &Principal, request: &ChatRequest) -> Result<(RoutingContext, Arc<RoutingSnapshot>, ModelSelection), GatewayError> {
        request.validate(&self.limits)?;
        if let Some(model) = &request.model
            && !principal.may_use(model)
        {
            return Err(GatewayError::KeyModelForbidden { model: model.clone(), key_id: principal.key_id.clone() });
        }
        let context = self.routing_context(principal, request);
        let snapshot = self.router.snapshot();
        let mut selection = {
            let _span = info_span!("route", tier = %context.tier, quality = %context.quality).entered();
            snapshot.select(&context)?
        };
        self.keep_honouring(request, &mut selection)?;
        Ok((context, snapshot, selection))
    }

    /// Counts the input tokens `request` would take on the model it routes to, as that model's
    /// provider counts them (Anthropic's count endpoint): validated, authorised and routed like a
    /// generation, but neither admitted against limits and budgets nor charged. Tokens are the
    /// model's own, so only the routed model counts, never a fallback: when its provider cannot
    /// count, the request is refused naming the model and the provider.
    #[instrument(name = "count_tokens", skip_all, fields(tenant = %principal.tenant))]
    pub async fn count_tokens(&self, principal: &Arc<Principal>, request: &ChatRequest) -> Result<(Target, u32), GatewayError> {
        let _in_flight = self.admit()?;
        let (_, _, selection) = self.route(principal, request)?;
        let target = selection.primary;
        let provider = self.provider(&target)?;
        match attempt::count_tokens(provider, &target, request, &self.metrics).await {
            Some(Ok(tokens)) => Ok((Arc::unwrap_or_clone(target), tokens)),
            Some(Err(error)) if error.class() == ErrorClass::Final => Err(GatewayError::UpstreamRejected { target: target.to_string(), error }),
            Some(Err(error)) => Err(GatewayError::AllProvidersFailed(vec![AttemptFailure { target: target.to_string(), error }])),
            None => Err(GatewayError::invalid(
                "model",
                format!(
                    "model \"{}\" is served by provider \"{}\" ({}), which cannot count tokens without answering; name a model of an anthropic provider",
                    target.model,
                    target.provider,
                    provider.client.settings().kind.as_str()
                ),
            )),
        }
    }

    /// Leaves only the targets whose provider honours every field of `request` (see
    /// [`crate::provider::capability`]); refuses the request, naming the field and the provider,
    /// when none does.
    fn keep_honouring(&self, request: &ChatRequest, selection: &mut ModelSelection) -> Result<(), GatewayError> {
        let honoured = |target: &Target| self.provider(target).map(|provider| capability::unhonoured(provider.client.settings(), request).is_none());
        let mut every = true;
        for target in selection.chain() {
            every &= honoured(target)?;
        }
        if every {
            return Ok(());
        }
        let mut first_refusal = None;
        let mut kept = Vec::new();
        for target in std::iter::once(&selection.primary).chain(&selection.fallbacks) {
            match capability::unhonoured(self.provider(target)?.client.settings(), request) {
                None => kept.push(Arc::clone(target)),
                Some(refusal) => {
                    first_refusal.get_or_insert((Arc::clone(target), refusal));
                }
            }
        }
        let Some((skipped, refusal)) = first_refusal else { return Ok(()) };
        let mut kept = kept.into_iter();
        let Some(primary) = kept.next() else {
            let others = if selection.fallbacks.is_empty() { "" } else { ", nor does any fallback" };
            return Err(GatewayError::invalid(refusal.field, format!("{} (model \"{}\"{others})", refusal.reason, skipped.model)));
        };
        if primary != selection.primary {
            selection.reason = format!("{}; {} skipped for `{}`: {}", selection.reason, selection.primary, refusal.field, refusal.reason);
            selection.primary = primary;
        }
        selection.fallbacks = kept.collect();
        Ok(())
    }

    fn provider(&self, target: &Target) -> Result<&ProviderHandle, GatewayError> {
        self.providers
            .get(&target.provider)
            .ok_or_else(|| GatewayError::Internal(format!("model \"{}\" names unknown provider \"{}\"", target.model, target.provider)))
    }

    /// The head of the pipeline for both kinds of answer: the guardrails on the prompt (which may
    /// redact it), the experiment that covers it (which points it at its variant's model), then
    /// validated, routed and admitted ([`Gateway::prepare`]) and looked up in the cache layers.
    async fn head(&self, principal: &Arc<Principal>, request: &mut ChatRequest) -> Result<Admitted, GatewayError> {
        let guarding = Guarding::check_prompt(&self.guardrails, principal, request, &self.metrics)?;
        let assignment = self.assign_experiment(principal, request);
        let experiment = assignment.as_ref().map(Assignment::label);
        let (selection, mut admission) = self.prepare(principal, request).await?;
        admission.experiment.clone_from(&experiment);
        let (probe, hit) = self.caches.lookup(principal, request).await;
        Ok(Admitted { selection, admission, probe, hit, guarding, assignment, experiment })
    }

    /// Serves a cache hit: settles it (nothing charged), counts it for its experiment variant, and
    /// passes its text and tool calls through the guardrails. The answer's id, text and tool calls.
    async fn serve_hit(&self, principal: &Principal, request: &ChatRequest, admitted: Admitted, hit: &CacheHit, started: Instant) -> Result<(String, String, Vec<ToolCall>), GatewayError> {
        let id = new_id();
        self.settle_hit(&hit.answer, hit.layer, admitted.admission, &id, request, started).await?;
        if let Some(assignment) = admitted.assignment {
            assignment.record(false, NanoUsd::ZERO, true);
        }
        let mut tool_calls = hit.answer.tool_calls.clone();
        let text = admitted.guarding.check_answer(hit.answer.text.clone(), &mut tool_calls, principal, &self.metrics)?;
        Ok((id, text, tool_calls))
    }

    /// Logs a request no provider served, counts it against its experiment variant, and hands its
    /// error back.
    fn chain_failed(admission: &Admission, assignment: Option<Assignment>, error: GatewayError, started: Instant) -> GatewayError {
        if let Some(assignment) = assignment {
            assignment.record(true, NanoUsd::ZERO, false);
        }
        accounting::audit_failure(admission, error.label(), millis(started.elapsed()));
        error
    }

    /// Walks the selection's chain: `attempt` at each target in turn until one answers. A final
    /// error (the upstream rejected the request itself) ends the walk at once; any other moves
    /// on to the next target. Counts a fallback when one served.
    async fn walk_chain<'a, T, Fut>(
        &'a self,
        selection: &'a ModelSelection,
        mut attempt: impl FnMut(&'a ProviderHandle, &'a Target) -> Fut,
    ) -> Result<ChainAnswer<T>, GatewayError>
    where
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut failed_attempts = Vec::new();
        let mut upstream_time = Duration::ZERO;
        for target in selection.chain() {
            let provider = self.provider(target)?;
            let span = info_span!("provider_call", provider = %target.provider, model = %target.model);
            let began = Instant::now();
            let outcome = attempt(provider, target).instrument(span).await;
            upstream_time += began.elapsed();
            match outcome {
                Ok(value) => {
                    let fallback = *target != *selection.primary;
                    if fallback {
                        self.metrics.fallbacks.with_label_values(&[selection.primary.provider.as_str(), target.provider.as_str()]).inc();
                    }
                    return Ok(ChainAnswer { value, target: target.clone(), fallback, failed_attempts, upstream_time });
                }
                Err(error) if error.class() == ErrorClass::Final => {
                    return Err(GatewayError::UpstreamRejected { target: target.to_string(), error });
                }
                Err(error) => failed_attempts.push(AttemptFailure { target: target.to_string(), error }),
            }
        }
        Err(GatewayError::AllProvidersFailed(failed_attempts))
    }

    /// Answers `request` whole for `principal`: validate, route, admit, look up the caches, then
    /// down the chain until a provider answers; the cost is in the ledger before the answer is
    /// returned.
    #[instrument(name = "generate", skip_all, fields(tenant = %principal.tenant, user = %principal.user))]
    pub async fn generate(&self, principal: &Arc<Principal>, mut request: ChatRequest) -> Result<Answer, GatewayError> {
        let started = Instant::now();
        let _in_flight = self.admit()?;
        let mut admitted = self.head(principal, &mut request).await?;
        if let Some(hit) = admitted.hit.take() {
            let (cache_key, experiment) = (admitted.probe.exact_key.take(), admitted.experiment.clone());
            let (id, text, tool_calls) = self.serve_hit(principal, &request, admitted, &hit, started).await?;
            return Ok(Answer::from_cache(id, text, tool_calls, hit, cache_key, experiment, started.elapsed()));
        }
        let Admitted { selection, admission, probe, guarding, assignment, experiment, .. } = admitted;
        let answered = self.walk_chain(&selection, |provider, target| attempt::unary(provider, target, &request, &self.metrics)).await;
        let ChainAnswer { value: completion, target, fallback, failed_attempts, upstream_time } = match answered {
            Ok(answered) => answered,
            Err(error) => return Err(Self::chain_failed(&admission, assignment, error, started)),
        };
        self.metrics.record_tokens(&target.provider, &target.model, completion.usage);
        let latency = started.elapsed();
        let gateway_overhead = latency.saturating_sub(upstream_time);
        self.metrics.gateway_overhead.observe(gateway_overhead.as_secs_f64());
        let cost = self.router.snapshot().policy.price(&target.model).map(|price| price.charge(completion.usage));
        let id = new_id();
        let cache_key = probe.exact_key.clone();
        if probe.stores() {
            let stored = probe.entry(&completion, &target, cost);
            self.caches.store(probe, stored).await;
        }
        let outcome = Outcome {
            id: &id,
            model: &target.model,
            provider: &target.provider,
            usage: Some(completion.usage),
            cost,
            latency_ms: millis(started.elapsed()),
            status: "ok",
            cache_layer: CacheLayer::None,
            saved: NanoUsd::ZERO,
        };
        let text = self.audit_text.then_some((&request, completion.text.as_str()));
        accounting::settle(admission, outcome, text).instrument(info_span!("settle")).await?;
        if let Some(assignment) = assignment {
            // A fallback served: the variant's own model failed.
            assignment.record(fallback, cost.unwrap_or(NanoUsd::ZERO), false);
        }
        let mut completion = completion;
        let text = std::mem::take(&mut completion.text);
        completion.text = guarding.check_answer(text, &mut completion.tool_calls, principal, &self.metrics)?;
        Ok(Answer {
            id,
            completion,
            target,
            routing_reason: selection.reason,
            fallback,
            failed_attempts,
            cost,
            latency,
            gateway_overhead,
            cache_layer: CacheLayer::None,
            cache_key,
            cache_match: None,
            experiment,
        })
    }

    /// Settles a cache hit: nothing charged, the original cost recorded as saved.
    async fn settle_hit(&self, cached: &CachedAnswer, layer: CacheLayer, admission: Admission, id: &str, request: &ChatRequest, started: Instant) -> Result<(), GatewayError> {
        let outcome = Outcome {
            id,
            model: &cached.model,
            provider: &cached.provider,
            usage: Some(cached.usage()),
            cost: Some(NanoUsd::ZERO),
            latency_ms: millis(started.elapsed()),
            status: "ok",
            cache_layer: layer,
            saved: NanoUsd(cached.cost_nano_usd.unwrap_or(0)),
        };
        let text = self.audit_text.then_some((request, cached.text.as_str()));
        accounting::settle(admission, outcome, text).await
    }

    /// Answers `request` as a stream: the same head and chain walk as [`Gateway::generate`],
    /// resolving once a provider has produced its first token (failing over until one does); the
    /// rest is forwarded as it arrives.
    #[instrument(name = "generate_stream", skip_all, fields(tenant = %principal.tenant, user = %principal.user))]
    pub async fn generate_stream(&self, principal: &Arc<Principal>, mut request: ChatRequest) -> Result<AnswerStream, GatewayError> {
        let started = Instant::now();
        let in_flight = self.admit()?;
        let mut admitted = self.head(principal, &mut request).await?;
        if let Some(hit) = admitted.hit.take() {
            let (cache_key, experiment) = (admitted.probe.exact_key.take(), admitted.experiment.clone());
            let (id, text, tool_calls) = self.serve_hit(principal, &request, admitted, &hit, started).await?;
            let mut replay = stream::replay(id, hit, text, tool_calls, started, in_flight);
            replay.experiment = experiment;
            replay.cache_key = cache_key;
            return Ok(replay);
        }
        let Admitted { selection, admission, probe, guarding, assignment, experiment, .. } = admitted;
        let opened = self.walk_chain(&selection, |provider, target| attempt::first_token(provider, target, &request, &self.metrics)).await;
        let ChainAnswer { value: opened, target, fallback, failed_attempts, .. } = match opened {
            Ok(opened) => opened,
            Err(error) => return Err(Self::chain_failed(&admission, assignment, error, started)),
        };
        let cache_key = probe.exact_key.clone();
        let mut answer = stream::forward(stream::StreamStart {
            id: new_id(),
            opened,
            price: self.router.snapshot().policy.price(&target.model),
            target,
            routing_reason: selection.reason,
            fallback,
            failed_attempts,
            started,
            metrics: Arc::clone(&self.metrics),
            in_flight,
            admission,
            audit_request: self.audit_text.then(|| request.clone()),
            store: probe.stores().then(|| stream::Store { caches: self.caches.clone(), probe }),
            guard: guarding.stream(principal, &self.metrics),
            assignment,
        });
        answer.cache_key = cache_key;
        answer.experiment = experiment;
        Ok(answer)
    }
}

/// A request past the head of the pipeline.
struct Admitted {
    /// Where it goes: the first choice and the fallbacks.
    selection: ModelSelection,
    /// Its rate-limit tokens and budget reservation, settled when it ends.
    admission: Admission,
    /// Where its answer is stored.
    probe: caching::CacheProbe,
    /// The cached answer that serves it, if any.
    hit: Option<CacheHit>,
    /// The guardrails its answer passes, with the placeholders its prompt was given.
    guarding: Guarding,
    /// Its place in an experiment, if one covers it.
    assignment: Option<Assignment>,
    /// That place as answers name it (`canary/control`).
    experiment: Option<String>,
}

/// What the chain walk got from the target that answered.
struct ChainAnswer<T> {
    /// The answer (a completion, or a stream opened up to its first token).
    value: T,
    /// Who answered.
    target: Target,
    /// True when it was not the first choice.
    fallback: bool,
    /// The attempts that failed before it.
    failed_attempts: Vec<AttemptFailure>,
    /// Time spent waiting on upstreams and in backoff.
    upstream_time: Duration,
}

impl Answer {
    /// An answer served from a cache layer (its text as the guardrails let it through): nothing
    /// charged, the cached model and provider named.
    fn from_cache(id: String, text: String, tool_calls: Vec<ToolCall>, hit: CacheHit, cache_key: Option<String>, experiment: Option<String>, latency: Duration) -> Self {
        let cached = &hit.answer;
        Self {
            id,
            completion: Completion {
                text,
                tool_calls,
                logprobs: None,
                finish_reason: FinishReason::parse(&cached.finish_reason),
                usage: cached.usage(),
            },
            target: cached.target(),
            routing_reason: hit.reason(),
            fallback: false,
            failed_attempts: Vec::new(),
            cost: Some(NanoUsd::ZERO),
            latency,
            gateway_overhead: latency,
            cache_layer: hit.layer,
            cache_key,
            cache_match: hit.semantic,
            experiment,
        }
    }
}

/// Whole milliseconds of `elapsed`, saturating.
fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

fn new_id() -> String {
    format!("sy-{:016x}", rand::random::<u64>())
}
