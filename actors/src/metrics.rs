//! Prometheus metrics of the node: one registry, created once and shared by the pipeline, the
//! actors and the front doors, rendered in the text format at `GET /metrics`.

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, GaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::provider::health::ProviderHealth;

/// Latency buckets in seconds, from 100 µs to 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every metric the node exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by front door, route, model, provider and status.
    pub requests: IntCounterVec,
    /// Whole-request latency by front door and provider.
    pub request_duration: HistogramVec,
    /// Gateway time outside upstream calls.
    pub gateway_overhead: Histogram,
    /// Time to first token of streamed answers by provider and model.
    pub time_to_first_token: HistogramVec,
    /// Tokens by provider, model and direction (input/output).
    pub tokens: IntCounterVec,
    /// Answers served by a fallback, by the provider that failed first and the one that served.
    pub fallbacks: IntCounterVec,
    /// Retries on the same provider by provider and error.
    pub retries: IntCounterVec,
    /// Upstream attempts by provider, model and outcome.
    pub upstream_attempts: IntCounterVec,
    /// Circuit breaker state by provider: 0 closed, 1 open, 2 half-open.
    pub circuit_state: IntGaugeVec,
    /// Latency moving average by provider, in seconds.
    pub provider_latency_ema: GaugeVec,
    /// Time-to-first-token moving average by provider, in seconds.
    pub provider_ttft_ema: GaugeVec,
    /// Error-rate moving average by provider.
    pub provider_error_rate: GaugeVec,
    /// 1 when the provider takes requests, 0 while its circuit is open.
    pub provider_available: IntGaugeVec,
    /// Requests left in the provider's rate-limit window, as it last reported.
    pub provider_rate_limit_remaining: IntGaugeVec,
    /// Requests being served right now.
    pub in_flight: IntGauge,
    /// Cost in USD by model and tenant.
    pub cost_usd: CounterVec,
    /// Cost in USD by feature (requests tagged with one).
    pub feature_cost_usd: CounterVec,
    /// Requests of an experiment, by experiment, variant and result (ok, error).
    pub experiment_requests: IntCounterVec,
    /// Variants rolled back by themselves, by experiment and variant.
    pub experiment_rollbacks: IntCounterVec,
    /// Share of each budget spent, by scope and period.
    pub budget_utilisation: GaugeVec,
    /// Budget threshold alerts by scope, period and threshold.
    pub budget_alerts: IntCounterVec,
    /// Requests refused because a budget was exhausted, by scope and period.
    pub budget_rejections: IntCounterVec,
    /// Requests refused by a rate limit, by key and limit.
    pub rate_limited: IntCounterVec,
    /// Guardrail rules that fired, by guardrail, rule, action and stage (prompt or answer).
    pub guardrail_rules: IntCounterVec,
    /// Tokens by model, tenant and direction.
    pub tenant_tokens: IntCounterVec,
    /// Cache lookups by layer and result (hit, miss, bypass, skipped, error; the semantic layer
    /// also shed: not started, the embedder being saturated; timeout: past the lookup budget).
    pub cache_lookups: IntCounterVec,
    /// Entries held by each cache layer.
    pub cache_entries: IntGaugeVec,
    /// Entries evicted for space, by layer.
    pub cache_evictions: IntCounterVec,
    /// Hits over hits and misses since start, by layer.
    pub cache_hit_ratio: GaugeVec,
    /// Cosine similarity of the semantic hits served.
    pub semantic_similarity: Histogram,
    /// Answers offered to the semantic layer by outcome: stored, dropped (the store queue was
    /// full), failed (their embedding failed).
    pub semantic_stores: IntCounterVec,
    /// Time to embed one lookup's user turn, as the request waits for it.
    pub embedding_duration: Histogram,
    /// Texts per forward pass of the embedder.
    pub embedding_batch_size: Histogram,
    /// Cluster members by state (alive, down), this node included.
    pub cluster_members: IntGaugeVec,
    /// 1 while a clustered node reaches no peer and serves alone.
    pub cluster_degraded: IntGauge,
    /// Semantic partitions this node owns (primary or replica).
    pub cluster_partitions_owned: IntGauge,
    /// Partitions being pulled from a replica right now.
    pub cluster_handoffs_in_progress: IntGauge,
    /// Semantic shard lookups sent to another node, by outcome (answered, not_served, timeout,
    /// error).
    pub cluster_remote_lookups: IntCounterVec,
    /// Time of a remote shard lookup, as the request waits for it.
    pub cluster_remote_lookup_duration: Histogram,
    /// Bytes of semantic entries pulled from replicas by handoffs.
    pub cluster_handoff_bytes: prometheus::IntCounter,
    /// Provider health messages exchanged with other nodes' routers, by direction (sent,
    /// received).
    pub cluster_health_messages: IntCounterVec,
    /// Budget lease grants this node made as a line's owner.
    pub budget_lease_grants: prometheus::IntCounter,
    /// Lease asks this node's request tasks sent, by outcome (granted, exhausted, retry).
    pub budget_lease_asks: IntCounterVec,
    /// Rate-limit permit asks this node sent to keys' owners, by outcome (granted, limited,
    /// retry, local).
    pub rate_limit_asks: IntCounterVec,
    /// Providers whose circuit is open on another node (so this node routes around them too).
    pub cluster_providers_open_elsewhere: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("switchyard".into()), None)?;
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<GaugeVec, prometheus::Error> {
            let metric = GaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, prometheus::Error> {
            let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let gateway_overhead = Histogram::with_opts(
            HistogramOpts::new("gateway_overhead_seconds", "Time a request spent in the gateway outside upstream calls")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(gateway_overhead.clone()))?;
        let plain_histogram = |name: &str, help: &str, buckets: Vec<f64>| -> Result<Histogram, prometheus::Error> {
            let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let plain_gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let metric = IntGauge::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let in_flight = plain_gauge("in_flight_requests", "Requests being served")?;
        Ok(Self {
            requests: counter(
                "requests_total",
                "Requests by front door, route, model, provider and status",
                &["front_door", "route", "model", "provider", "status"],
            )?,
            request_duration: histogram(
                "request_duration_seconds",
                "Whole-request latency of answered requests",
                &["front_door", "route", "model", "provider", "cache"],
            )?,
            gateway_overhead,
            time_to_first_token: histogram(
                "time_to_first_token_seconds",
                "Time to the first token of streamed answers",
                &["provider", "model"],
            )?,
            tokens: counter("tokens_total", "Tokens by provider, model and direction", &["provider", "model", "direction"])?,
            fallbacks: counter("fallbacks_total", "Answers served by a fallback", &["from_provider", "to_provider"])?,
            retries: counter("retries_total", "Retries on the same provider", &["provider", "error"])?,
            upstream_attempts: counter(
                "upstream_attempts_total",
                "Upstream attempts by outcome",
                &["provider", "model", "outcome"],
            )?,
            circuit_state: int_gauge("circuit_state", "Circuit breaker: 0 closed, 1 open, 2 half-open", &["provider"])?,
            provider_latency_ema: gauge("provider_latency_ema_seconds", "Latency moving average", &["provider"])?,
            provider_ttft_ema: gauge("provider_ttft_ema_seconds", "Time-to-first-token moving average", &["provider"])?,
            provider_error_rate: gauge("provider_error_rate", "Error-rate moving average", &["provider"])?,
            provider_available: int_gauge("provider_available", "1 while the provider takes requests", &["provider"])?,
            provider_rate_limit_remaining: int_gauge(
                "provider_rate_limit_remaining",
                "Requests left in the provider's rate-limit window",
                &["provider"],
            )?,
            in_flight,
            feature_cost_usd: {
                let metric = CounterVec::new(Opts::new("feature_cost_usd_total", "Cost in USD by feature (tagged requests only)"), &["feature"])?;
                registry.register(Box::new(metric.clone()))?;
                metric
            },
            cost_usd: {
                let metric = CounterVec::new(Opts::new("cost_usd_total", "Cost in USD by model and tenant"), &["model", "tenant"])?;
                registry.register(Box::new(metric.clone()))?;
                metric
            },
            budget_utilisation: gauge("budget_utilisation", "Share of the budget spent", &["scope", "period"])?,
            budget_alerts: counter("budget_alerts_total", "Budget threshold alerts", &["scope", "period", "threshold"])?,
            budget_rejections: counter("budget_rejections_total", "Requests refused by an exhausted budget", &["scope", "period"])?,
            rate_limited: counter("rate_limited_total", "Requests refused by a rate limit", &["key", "limit"])?,
            experiment_requests: counter("experiment_requests_total", "Requests of an experiment by variant and result", &["experiment", "variant", "result"])?,
            experiment_rollbacks: counter("experiment_rollbacks_total", "Variants rolled back by their error rate", &["experiment", "variant"])?,
            guardrail_rules: counter("guardrail_rules_total", "Guardrail rules that fired", &["guardrail", "rule", "action", "stage"])?,
            tenant_tokens: counter("tenant_tokens_total", "Tokens by model, tenant and direction", &["model", "tenant", "direction"])?,
            cache_lookups: counter("cache_lookups_total", "Cache lookups by layer and result", &["layer", "result"])?,
            cache_entries: int_gauge("cache_entries", "Entries held by each cache layer", &["layer"])?,
            cache_evictions: counter("cache_evictions_total", "Entries evicted for space", &["layer"])?,
            cache_hit_ratio: gauge("cache_hit_ratio", "Hits over hits and misses since start", &["layer"])?,
            semantic_stores: counter("semantic_stores_total", "Answers offered to the semantic layer, by outcome", &["result"])?,
            semantic_similarity: plain_histogram(
                "semantic_cache_similarity",
                "Cosine similarity of the semantic hits served",
                vec![0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98, 0.99, 1.0],
            )?,
            embedding_duration: plain_histogram(
                "embedding_duration_seconds",
                "Time to embed one lookup's user turn",
                LATENCY_BUCKETS.to_vec(),
            )?,
            embedding_batch_size: plain_histogram(
                "embedding_batch_size",
                "Texts per forward pass of the embedder",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
            )?,
            cluster_members: int_gauge("cluster_members", "Cluster members by state, this node included", &["state"])?,
            cluster_degraded: plain_gauge("cluster_degraded", "1 while a clustered node reaches no peer")?,
            cluster_partitions_owned: plain_gauge("cluster_partitions_owned", "Semantic partitions this node owns")?,
            cluster_handoffs_in_progress: plain_gauge("cluster_handoffs_in_progress", "Partitions being pulled from a replica")?,
            cluster_remote_lookups: counter("cluster_remote_lookups_total", "Semantic shard lookups sent to another node, by outcome", &["outcome"])?,
            cluster_remote_lookup_duration: plain_histogram(
                "cluster_remote_lookup_duration_seconds",
                "Time of a remote semantic shard lookup",
                LATENCY_BUCKETS.to_vec(),
            )?,
            cluster_handoff_bytes: {
                let metric = prometheus::IntCounter::new("cluster_handoff_bytes_total", "Bytes of semantic entries pulled by handoffs")?;
                registry.register(Box::new(metric.clone()))?;
                metric
            },
            cluster_health_messages: counter("cluster_health_messages_total", "Provider health messages exchanged with other nodes, by direction", &["direction"])?,
            budget_lease_grants: {
                let metric = prometheus::IntCounter::new("budget_lease_grants_total", "Budget lease grants made by this node as an owner")?;
                registry.register(Box::new(metric.clone()))?;
                metric
            },
            budget_lease_asks: counter("budget_lease_asks_total", "Budget lease asks sent by this node, by outcome", &["outcome"])?,
            rate_limit_asks: counter("rate_limit_asks_total", "Rate-limit permit asks sent to keys' owners, by outcome", &["outcome"])?,
            cluster_providers_open_elsewhere: plain_gauge("cluster_providers_open_elsewhere", "Providers whose circuit is open on another node")?,
            registry,
        })
    }

    /// Counts one cache lookup and refreshes the layer's hit ratio.
    pub fn record_lookup(&self, layer: &str, result: &str) {
        self.cache_lookups.with_label_values(&[layer, result]).inc();
        if result == "hit" || result == "miss" {
            let hits = self.cache_lookups.with_label_values(&[layer, "hit"]).get();
            let misses = self.cache_lookups.with_label_values(&[layer, "miss"]).get();
            self.cache_hit_ratio.with_label_values(&[layer]).set(hits as f64 / (hits + misses).max(1) as f64);
        }
    }

    /// Counts a request that ended with `status` (an error label) at `front_door`; `model` and
    /// `provider` are empty when it failed before one was chosen.
    pub fn record_request_failure(&self, front_door: &str, route: &str, model: &str, provider: &str, status: &str) {
        self.requests.with_label_values(&[front_door, route, model, provider, status]).inc();
    }

    /// Counts an answered request and observes its latency, by the cache layer that answered.
    pub fn record_request_answered(&self, front_door: &str, route: &str, model: &str, provider: &str, cache: &str, latency: std::time::Duration) {
        self.requests.with_label_values(&[front_door, route, model, provider, "ok"]).inc();
        self.request_duration.with_label_values(&[front_door, route, model, provider, cache]).observe(latency.as_secs_f64());
    }

    /// Counts the input and output tokens of one answer.
    pub fn record_tokens(&self, provider: &str, model: &str, usage: crate::model::Usage) {
        self.tokens.with_label_values(&[provider, model, "input"]).inc_by(u64::from(usage.input_tokens));
        self.tokens.with_label_values(&[provider, model, "output"]).inc_by(u64::from(usage.output_tokens));
    }

    /// Sets the provider health gauges.
    pub fn publish_health(&self, health: &ProviderHealth) {
        let labels = [health.provider.as_str()];
        let stats = &health.stats;
        if let Some(latency) = stats.latency_ema_ms {
            self.provider_latency_ema.with_label_values(&labels).set(latency / 1000.0);
        }
        if let Some(ttft) = stats.ttft_ema_ms {
            self.provider_ttft_ema.with_label_values(&labels).set(ttft / 1000.0);
        }
        self.provider_error_rate.with_label_values(&labels).set(stats.error_rate);
        self.provider_available.with_label_values(&labels).set(i64::from(health.available));
        if let Some(remaining) = stats.rate_limit_remaining {
            self.provider_rate_limit_remaining
                .with_label_values(&labels)
                .set(i64::try_from(remaining).unwrap_or(i64::MAX));
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "failed to encode metrics");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}
