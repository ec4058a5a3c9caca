//! Config: one TOML file (or the embedded defaults) plus `SWITCHYARD_…` environment overrides,
//! read into serde structs that refuse unknown keys, then [`RawConfig::validate`]d into the
//! runtime [`NodeConfig`]. Every error names the key and what was expected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format as _, Toml};
use serde::Deserialize;
use switchyard_actors::budget::redis_sink::RedisLedgerSettings;
use switchyard_actors::cache::RedisCacheSettings;
use switchyard_actors::budget::{BudgetPolicy, Enforcement, Limits, NanoUsd};
use switchyard_actors::model::{Quality, RequestLimits, Tier};
use switchyard_actors::tenancy::KeySettings;
use switchyard_actors::pipeline::{ExactCacheSettings, GatewaySettings};
use switchyard_actors::provider::{BreakerSettings, ProviderKind, ProviderSettings, RetrySettings};
use switchyard_actors::router::{ModelKind, ModelSettings, Price, RoutingPolicy, RoutingRule};

use crate::env;

mod batch;
mod cluster;
mod experiments;
mod guardrails;
mod semantic;

/// The config `switchyard serve` runs without `--config`: the bundled simulator as upstream on
/// 127.0.0.1:9100, served by all three provider kinds.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../../deploy/examples/single-node.toml");

/// A config problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a key is unknown or of the wrong type.
    #[error("{0}")]
    Parse(String),
    /// A value is out of range or refers to something that does not exist.
    #[error("{key}: {problem}")]
    Invalid {
        /// The dotted key, e.g. `providers[1].base_url`.
        key: String,
        /// What is wrong and what was expected.
        problem: String,
    },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), problem: problem.into() }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    providers: Vec<RawProvider>,
    #[serde(default)]
    models: Vec<RawModel>,
    #[serde(default)]
    routing: RawRouting,
    #[serde(default)]
    tenancy: RawTenancy,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    redis: RawRedis,
    #[serde(default)]
    semantic_cache: semantic::RawSemanticCache,
    #[serde(default)]
    embedding: semantic::RawEmbedding,
    #[serde(default)]
    cluster: Option<cluster::RawCluster>,
    #[serde(default)]
    guardrails: Vec<guardrails::RawGuardrail>,
    #[serde(default)]
    experiments: Vec<experiments::RawExperiment>,
    #[serde(default)]
    batch: batch::RawBatch,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    #[serde(default)]
    url: String,
    #[serde(default = "default_key_prefix")]
    key_prefix: String,
    #[serde(default = "default_stream_max_len")]
    ledger_stream_max_len: u64,
}

fn default_key_prefix() -> String {
    "switchyard".into()
}
fn default_stream_max_len() -> u64 {
    1_000_000
}

impl Default for RawRedis {
    fn default() -> Self {
        Self { url: String::new(), key_prefix: default_key_prefix(), ledger_stream_max_len: default_stream_max_len() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default = "default_exact")]
    exact: bool,
    #[serde(default = "default_exact_ttl", with = "humantime_serde")]
    exact_ttl: Duration,
    #[serde(default = "default_exact_max_entries")]
    exact_max_entries: u64,
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    redis_timeout: Duration,
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

fn default_exact() -> bool {
    true
}
fn default_exact_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_exact_max_entries() -> u64 {
    100_000
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            exact: default_exact(),
            exact_ttl: default_exact_ttl(),
            exact_max_entries: default_exact_max_entries(),
            redis_timeout: default_redis_timeout(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenancy {
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default)]
    keys_file: Option<PathBuf>,
    #[serde(default)]
    admin_key_sha256: Option<String>,
    #[serde(default)]
    admin_key_env: Option<String>,
    #[serde(default)]
    anonymous_tier: Tier,
    #[serde(default)]
    tenants: Vec<RawTenant>,
    #[serde(default)]
    enforcement: Enforcement,
    #[serde(default)]
    alert_thresholds: Option<Vec<u32>>,
    #[serde(default)]
    alert_webhook: Option<String>,
    #[serde(default)]
    ledger_path: Option<PathBuf>,
    #[serde(default)]
    retention_days: Option<u32>,
    #[serde(default)]
    reserve_output_tokens: Option<u32>,
    #[serde(default)]
    audit_text: bool,
    /// Shifts the budget clock (periods, cost timestamps) by this many milliseconds: for
    /// rehearsing a period's end on a staging cluster. 0 in production.
    #[serde(default)]
    budget_clock_offset_ms: i64,
}

/// A mounted secrets file of keys: `[[keys]]` tables as in `[[tenancy.keys]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    #[serde(default)]
    key_sha256: Option<String>,
    #[serde(default)]
    key_env: Option<String>,
    tenant: String,
    user: String,
    #[serde(default)]
    tier: Tier,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    requests_per_minute: Option<u32>,
    #[serde(default)]
    tokens_per_minute: Option<u32>,
    #[serde(default)]
    daily_budget_usd: Option<f64>,
    #[serde(default)]
    monthly_budget_usd: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: String,
    #[serde(default)]
    daily_budget_usd: Option<f64>,
    #[serde(default)]
    monthly_budget_usd: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_grpc_listen")]
    grpc_listen: SocketAddr,
    #[serde(default = "default_http_listen")]
    http_listen: SocketAddr,
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    drain_timeout: Duration,
    /// Threads serving requests; 0 = one per core.
    #[serde(default)]
    worker_threads: usize,
}

/// Most `server.worker_threads` accepted.
const MAX_WORKER_THREADS: usize = 1024;

fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}
fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for RawServer {
    fn default() -> Self {
        Self { grpc_listen: default_grpc_listen(), http_listen: default_http_listen(), drain_timeout: default_drain_timeout(), worker_threads: 0 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "default_max_messages")]
    max_messages: usize,
    #[serde(default = "default_max_prompt_chars")]
    max_prompt_chars: usize,
    #[serde(default = "default_max_output_tokens")]
    max_output_tokens: u32,
    #[serde(default = "default_max_stop_sequences")]
    max_stop_sequences: usize,
}

fn default_max_messages() -> usize {
    RequestLimits::default().max_messages
}
fn default_max_prompt_chars() -> usize {
    RequestLimits::default().max_prompt_chars
}
fn default_max_output_tokens() -> u32 {
    RequestLimits::default().max_output_tokens
}
fn default_max_stop_sequences() -> usize {
    RequestLimits::default().max_stop_sequences
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_messages: default_max_messages(),
            max_prompt_chars: default_max_prompt_chars(),
            max_output_tokens: default_max_output_tokens(),
            max_stop_sequences: default_max_stop_sequences(),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object a line, with the trace id.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default = "default_log_level")]
    log_level: String,
    #[serde(default)]
    otlp_endpoint: String,
    #[serde(default = "default_service_name")]
    service_name: String,
    #[serde(default = "default_sample_ratio")]
    sample_ratio: f64,
}

fn default_log_level() -> String {
    "info".into()
}
fn default_service_name() -> String {
    "switchyard".into()
}
fn default_sample_ratio() -> f64 {
    1.0
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            log_level: default_log_level(),
            otlp_endpoint: String::new(),
            service_name: default_service_name(),
            sample_ratio: default_sample_ratio(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    kind: ProviderKind,
    base_url: String,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    api_key_file: Option<PathBuf>,
    #[serde(default)]
    self_hosted: bool,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    request_timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(default = "default_first_token_timeout", with = "humantime_serde")]
    first_token_timeout: Duration,
    #[serde(default = "default_max_concurrent")]
    max_concurrent: usize,
    #[serde(default = "default_anthropic_version")]
    anthropic_version: String,
    #[serde(default = "default_max_tokens")]
    default_max_tokens: u32,
    #[serde(default)]
    pass_unknown_fields: bool,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    circuit_breaker: RawBreaker,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_first_token_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_max_concurrent() -> usize {
    512
}
fn default_anthropic_version() -> String {
    "2023-06-01".into()
}
fn default_max_tokens() -> u32 {
    4096
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default = "default_base_delay", with = "humantime_serde")]
    base_delay: Duration,
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    max_delay: Duration,
    #[serde(default = "default_max_retry_after", with = "humantime_serde")]
    max_retry_after: Duration,
}

fn default_max_retries() -> u32 {
    RetrySettings::default().max_retries
}
fn default_base_delay() -> Duration {
    RetrySettings::default().base_delay
}
fn default_max_delay() -> Duration {
    RetrySettings::default().max_delay
}
fn default_max_retry_after() -> Duration {
    RetrySettings::default().max_retry_after
}

impl Default for RawRetry {
    fn default() -> Self {
        Self {
            max_retries: default_max_retries(),
            base_delay: default_base_delay(),
            max_delay: default_max_delay(),
            max_retry_after: default_max_retry_after(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    #[serde(default = "default_consecutive_failures")]
    consecutive_failures: u32,
    #[serde(default = "default_error_rate")]
    error_rate: f64,
    #[serde(default = "default_window")]
    window: usize,
    #[serde(default = "default_min_requests")]
    min_requests: usize,
    #[serde(default = "default_cool_down", with = "humantime_serde")]
    cool_down: Duration,
}

fn default_consecutive_failures() -> u32 {
    BreakerSettings::default().consecutive_failures
}
fn default_error_rate() -> f64 {
    BreakerSettings::default().error_rate
}
fn default_window() -> usize {
    BreakerSettings::default().window
}
fn default_min_requests() -> usize {
    BreakerSettings::default().min_requests
}
fn default_cool_down() -> Duration {
    BreakerSettings::default().cool_down
}

impl Default for RawBreaker {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive_failures(),
            error_rate: default_error_rate(),
            window: default_window(),
            min_requests: default_min_requests(),
            cool_down: default_cool_down(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    #[serde(default)]
    kind: ModelKind,
    provider: String,
    #[serde(default)]
    upstream_model: Option<String>,
    #[serde(default)]
    quality: Quality,
    #[serde(default)]
    tiers: Vec<Tier>,
    #[serde(default)]
    input_usd_per_mtok: Option<f64>,
    #[serde(default)]
    output_usd_per_mtok: Option<f64>,
    #[serde(default)]
    cached_input_usd_per_mtok: Option<f64>,
    #[serde(default)]
    cache_write_input_usd_per_mtok: Option<f64>,
    #[serde(default)]
    fallbacks: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    #[serde(default)]
    preference: Vec<String>,
    #[serde(default = "default_max_error_rate")]
    max_error_rate: f64,
    #[serde(default)]
    routes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

fn default_max_error_rate() -> f64 {
    0.1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    tiers: Vec<Tier>,
    #[serde(default)]
    qualities: Vec<Quality>,
    #[serde(default)]
    task_types: Vec<String>,
    #[serde(default)]
    latency_budget_below_ms: Option<u32>,
    #[serde(default)]
    estimated_tokens_below: Option<u64>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    self_hosted: bool,
    #[serde(default)]
    max_latency_ema_ms: Option<f64>,
}

/// Telemetry settings.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// Log output format.
    pub log_format: LogFormat,
    /// `tracing` filter directives.
    pub log_level: String,
    /// OTLP/gRPC collector endpoint; `None` exports no traces.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans.
    pub service_name: String,
    /// Share of traces sampled (0.0 ..= 1.0), honouring a sampled parent.
    pub sample_ratio: f64,
}

/// The validated runtime config.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Bound on finishing in-flight requests at shutdown.
    pub drain_timeout: Duration,
    /// Threads serving requests; `None` = one per core.
    pub worker_threads: Option<usize>,
    /// Telemetry.
    pub telemetry: TelemetryConfig,
    /// The pipeline's settings.
    pub gateway: GatewaySettings,
    /// Batch jobs.
    pub batch: crate::batch::BatchSettings,
}

/// Where the config comes from.
#[derive(Debug)]
pub enum Source<'a> {
    /// TOML files, each later one overriding the earlier ones key by key (an array, such as
    /// `providers`, is replaced whole), over the embedded defaults when `over_defaults`.
    Files {
        /// The files, in order.
        paths: &'a [PathBuf],
        /// Start from the embedded defaults (models, prices, routing) rather than nothing.
        over_defaults: bool,
    },
    /// The embedded defaults.
    Embedded,
}

/// Reads the config from `source` plus environment overrides, and validates it.
pub fn load(source: Source<'_>) -> Result<NodeConfig, ConfigError> {
    let figment = match source {
        Source::Files { paths, over_defaults } => {
            let mut figment = if over_defaults { Figment::from(Toml::string(EMBEDDED_DEFAULTS)) } else { Figment::new() };
            for path in paths {
                if !path.is_file() {
                    return Err(ConfigError::Parse(format!("config file {} does not exist or is not a file", path.display())));
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            figment
        }
        Source::Embedded => Figment::from(Toml::string(EMBEDDED_DEFAULTS)),
    };
    // Every key lives in a section, so an override always has a separator; a prefixed variable
    // without one (SWITCHYARD_COOKIE, named by `cluster.cookie_env`) is a secret, not an override.
    let overrides = Env::prefixed(env::OVERRIDE_PREFIX)
        .ignore(&[env::CONFIG_PATH.trim_start_matches(env::OVERRIDE_PREFIX)])
        .filter(|key| key.as_str().contains(env::OVERRIDE_SEPARATOR))
        .split(env::OVERRIDE_SEPARATOR);
    let raw: RawConfig = figment.merge(overrides).extract().map_err(|error| {
        ConfigError::Parse(error.into_iter().map(|error| error.to_string()).collect::<Vec<_>>().join("; "))
    })?;
    raw.validate()
}

fn positive(key: &str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() { Err(invalid(key, "must be longer than zero")) } else { Ok(value) }
}

/// Checks that the count under `key` is not zero.
fn at_least_one<T: PartialEq + From<u8>>(key: impl Into<String>, value: T) -> Result<(), ConfigError> {
    if value == T::from(0) { Err(invalid(key, "must be at least 1")) } else { Ok(()) }
}

/// The trimmed value of environment variable `variable`, named by config key `key`; unset or
/// empty is an error naming both.
fn secret_from_env(key: &str, variable: &str) -> Result<String, ConfigError> {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => Err(invalid(key, format!("environment variable {variable} is not set or empty"))),
    }
}

/// A secret named by either `<prefix>_env` (an environment variable) or `<prefix>_file` (a
/// file), trimmed, under config table `table`; `None` when neither is set.
fn secret_from_env_or_file(table: &str, prefix: &str, variable: Option<&str>, path: Option<&Path>) -> Result<Option<String>, ConfigError> {
    match (variable, path) {
        (Some(_), Some(_)) => Err(invalid(table, format!("set {prefix}_env or {prefix}_file, not both"))),
        (Some(variable), None) => secret_from_env(&format!("{table}.{prefix}_env"), variable).map(Some),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_owned())),
            Ok(_) => Err(invalid(format!("{table}.{prefix}_file"), format!("{} is empty", path.display()))),
            Err(error) => Err(invalid(format!("{table}.{prefix}_file"), format!("cannot read {}: {error}", path.display()))),
        },
        (None, None) => Ok(None),
    }
}

fn read_api_key(key: &str, provider: &RawProvider) -> Result<Option<String>, ConfigError> {
    secret_from_env_or_file(key, "api_key", provider.api_key_env.as_deref(), provider.api_key_file.as_deref())
}

impl RawConfig {
    /// Checks every value and reference, and builds the runtime config.
    pub fn validate(self) -> Result<NodeConfig, ConfigError> {
        let limits = RequestLimits {
            max_messages: self.limits.max_messages,
            max_prompt_chars: self.limits.max_prompt_chars,
            max_output_tokens: self.limits.max_output_tokens,
            max_stop_sequences: self.limits.max_stop_sequences,
        };
        at_least_one("limits.max_messages", limits.max_messages)?;
        at_least_one("limits.max_prompt_chars", limits.max_prompt_chars)?;
        at_least_one("limits.max_output_tokens", limits.max_output_tokens)?;
        if self.server.grpc_listen == self.server.http_listen && self.server.grpc_listen.port() != 0 {
            return Err(invalid("server.http_listen", "must differ from server.grpc_listen"));
        }
        let telemetry = &self.telemetry;
        if !(0.0..=1.0).contains(&telemetry.sample_ratio) {
            return Err(invalid("telemetry.sample_ratio", format!("{} is outside 0.0 ..= 1.0", telemetry.sample_ratio)));
        }
        if !telemetry.otlp_endpoint.is_empty() && reqwest_like_url(&telemetry.otlp_endpoint).is_none() {
            return Err(invalid("telemetry.otlp_endpoint", format!("\"{}\" is not an http(s) URL", telemetry.otlp_endpoint)));
        }
        if tracing_subscriber::EnvFilter::try_new(&telemetry.log_level).is_err() {
            return Err(invalid("telemetry.log_level", format!("\"{}\" is not a valid filter such as \"info\"", telemetry.log_level)));
        }

        let providers = self.validate_providers()?;
        let self_hosted: HashSet<String> =
            providers.iter().filter(|provider| provider.self_hosted).map(|provider| provider.name.clone()).collect();
        let models = self.validate_models(&providers)?;
        let model_names: HashSet<&str> = models.iter().map(|model| model.name.as_str()).collect();
        let chat_names: HashSet<&str> = models.iter().filter(|model| model.kind == ModelKind::Chat).map(|model| model.name.as_str()).collect();
        let policy = self.validate_routing(models.clone(), &chat_names, self_hosted)?;
        let tenancy = self.tenancy.validate(&model_names, &self.routing.routes)?;
        let route_names: HashSet<&str> = model_names.iter().copied().chain(self.routing.routes.keys().map(String::as_str)).collect();
        let semantic_cache = self.semantic_cache.validate(&self.embedding, &route_names)?;
        let redis_ledger = self.redis_ledger()?;
        let cluster = self.cluster.as_ref().map(cluster::RawCluster::validate).transpose()?;
        let key_ids: HashSet<&str> = self.tenancy.keys.iter().map(|key| key.id.as_str()).collect();
        let tenant_names: HashSet<&str> =
            self.tenancy.keys.iter().map(|key| key.tenant.as_str()).chain(self.tenancy.tenants.iter().map(|tenant| tenant.name.as_str())).collect();
        let guardrails = guardrails::validate(&self.guardrails, &key_ids, &tenant_names, &route_names)?;
        let experiments = experiments::validate(&self.experiments, &route_names, &chat_names)?;
        let batch_node_id = match &cluster {
            Some(cluster) => cluster.membership.node_name.clone(),
            None => format!("{}/{}", cluster::hostname().unwrap_or_else(|| "localhost".into()), self.server.http_listen),
        };
        let batch_redis = redis_ledger.as_ref().map(|redis| crate::batch::store::RedisStoreSettings { url: redis.url.clone(), key_prefix: redis.key_prefix.clone() });
        let batch = self.batch.validate(batch_redis, batch_node_id)?;
        if self.server.worker_threads > MAX_WORKER_THREADS {
            return Err(invalid("server.worker_threads", format!("{} is more than {MAX_WORKER_THREADS}; 0 means one per core", self.server.worker_threads)));
        }

        Ok(NodeConfig {
            grpc_listen: self.server.grpc_listen,
            http_listen: self.server.http_listen,
            drain_timeout: self.server.drain_timeout,
            worker_threads: (self.server.worker_threads > 0).then_some(self.server.worker_threads),
            telemetry: TelemetryConfig {
                log_format: self.telemetry.log_format,
                log_level: self.telemetry.log_level,
                otlp_endpoint: (!self.telemetry.otlp_endpoint.is_empty()).then_some(self.telemetry.otlp_endpoint),
                service_name: self.telemetry.service_name,
                sample_ratio: self.telemetry.sample_ratio,
            },
            gateway: GatewaySettings {
                providers,
                policy,
                limits,
                keys: tenancy.keys,
                admin_key: tenancy.admin_key,
                anonymous_tier: self.tenancy.anonymous_tier,
                budget: tenancy.budget,
                ledger_path: tenancy.ledger_path,
                alert_webhook: tenancy.alert_webhook,
                audit_text: self.tenancy.audit_text,
                redis_ledger: redis_ledger.clone(),
                exact_cache: self.cache.exact.then(|| ExactCacheSettings {
                    max_entries: self.cache.exact_max_entries.max(1),
                    ttl: self.cache.exact_ttl,
                    redis: redis_ledger.as_ref().map(|redis| RedisCacheSettings {
                        url: redis.url.clone(),
                        key_prefix: redis.key_prefix.clone(),
                        timeout: self.cache.redis_timeout,
                    }),
                }),
                semantic_cache,
                cluster,
                guardrails,
                experiments,
            },
            batch,
        })
    }

    fn redis_ledger(&self) -> Result<Option<RedisLedgerSettings>, ConfigError> {
        let redis = &self.redis;
        if redis.url.is_empty() {
            return Ok(None);
        }
        if !(redis.url.starts_with("redis://") || redis.url.starts_with("rediss://") || redis.url.starts_with("unix://")) {
            return Err(invalid("redis.url", format!("\"{}\" is not a redis:// URL", redis.url)));
        }
        if redis.key_prefix.is_empty() || redis.key_prefix.contains(char::is_whitespace) {
            return Err(invalid("redis.key_prefix", "must be a non-empty word without spaces"));
        }
        at_least_one("redis.ledger_stream_max_len", redis.ledger_stream_max_len)?;
        Ok(Some(RedisLedgerSettings {
            url: redis.url.clone(),
            key_prefix: redis.key_prefix.clone(),
            stream_max_len: redis.ledger_stream_max_len,
        }))
    }

    fn validate_providers(&self) -> Result<Vec<ProviderSettings>, ConfigError> {
        if self.providers.is_empty() {
            return Err(invalid("providers", "at least one provider is required"));
        }
        let mut seen = HashSet::new();
        let mut providers = Vec::new();
        for (position, provider) in self.providers.iter().enumerate() {
            let key = format!("providers[{position}]");
            if provider.name.trim().is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            if !seen.insert(provider.name.as_str()) {
                return Err(invalid(format!("{key}.name"), format!("provider \"{}\" is defined twice", provider.name)));
            }
            if reqwest_like_url(&provider.base_url).is_none() {
                return Err(invalid(format!("{key}.base_url"), format!("\"{}\" is not an http(s) URL", provider.base_url)));
            }
            at_least_one(format!("{key}.max_concurrent"), provider.max_concurrent)?;
            let breaker = &provider.circuit_breaker;
            if !(breaker.error_rate > 0.0 && breaker.error_rate <= 1.0) {
                return Err(invalid(
                    format!("{key}.circuit_breaker.error_rate"),
                    format!("{} is outside (0.0 ..= 1.0]", breaker.error_rate),
                ));
            }
            if breaker.window == 0 || breaker.consecutive_failures == 0 {
                return Err(invalid(format!("{key}.circuit_breaker"), "window and consecutive_failures must be at least 1"));
            }
            if breaker.min_requests > breaker.window {
                return Err(invalid(format!("{key}.circuit_breaker.min_requests"), "must not exceed window"));
            }
            if provider.retry.base_delay > provider.retry.max_delay {
                return Err(invalid(format!("{key}.retry.base_delay"), "must not exceed retry.max_delay"));
            }
            if provider.pass_unknown_fields && provider.kind == ProviderKind::Anthropic {
                return Err(invalid(format!("{key}.pass_unknown_fields"), "applies to OpenAI-wire providers only; Anthropic's API has its own fields"));
            }
            providers.push(ProviderSettings {
                name: provider.name.clone(),
                kind: provider.kind,
                base_url: provider.base_url.trim_end_matches('/').to_owned(),
                api_key: read_api_key(&key, provider)?,
                self_hosted: provider.self_hosted,
                request_timeout: positive(&format!("{key}.request_timeout"), provider.request_timeout)?,
                connect_timeout: positive(&format!("{key}.connect_timeout"), provider.connect_timeout)?,
                first_token_timeout: positive(&format!("{key}.first_token_timeout"), provider.first_token_timeout)?,
                max_concurrent: provider.max_concurrent,
                retry: RetrySettings {
                    max_retries: provider.retry.max_retries,
                    base_delay: provider.retry.base_delay,
                    max_delay: provider.retry.max_delay,
                    max_retry_after: provider.retry.max_retry_after,
                },
                breaker: BreakerSettings {
                    consecutive_failures: breaker.consecutive_failures,
                    error_rate: breaker.error_rate,
                    window: breaker.window,
                    min_requests: breaker.min_requests,
                    cool_down: positive(&format!("{key}.circuit_breaker.cool_down"), breaker.cool_down)?,
                },
                anthropic_version: provider.anthropic_version.clone(),
                default_max_tokens: provider.default_max_tokens.max(1),
                pass_unknown_fields: provider.pass_unknown_fields,
            });
        }
        Ok(providers)
    }

    fn validate_models(&self, providers: &[ProviderSettings]) -> Result<Vec<ModelSettings>, ConfigError> {
        if self.models.is_empty() {
            return Err(invalid("models", "at least one model is required"));
        }
        let names: HashSet<&str> = self.models.iter().map(|model| model.name.as_str()).collect();
        let embedding_names: HashSet<&str> =
            self.models.iter().filter(|model| model.kind == ModelKind::Embedding).map(|model| model.name.as_str()).collect();
        let mut seen = HashSet::new();
        let mut models = Vec::new();
        for (position, model) in self.models.iter().enumerate() {
            let key = format!("models[{position}]");
            if model.name.trim().is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            if !seen.insert(model.name.as_str()) {
                return Err(invalid(format!("{key}.name"), format!("model \"{}\" is defined twice", model.name)));
            }
            let Some(provider) = providers.iter().find(|provider| provider.name == model.provider) else {
                return Err(invalid(format!("{key}.provider"), format!("unknown provider \"{}\"", model.provider)));
            };
            if model.kind == ModelKind::Embedding {
                if !provider.kind.embeds() {
                    return Err(invalid(
                        format!("{key}.provider"),
                        format!("provider \"{}\" ({}) has no embeddings API; embedding models need an openai or openai_compatible provider", provider.name, provider.kind.as_str()),
                    ));
                }
                if !model.fallbacks.is_empty() {
                    return Err(invalid(format!("{key}.fallbacks"), "an embedding model has no fallbacks: another model's vectors are in another space"));
                }
                if model.output_usd_per_mtok.is_some_and(|price| price != 0.0) {
                    return Err(invalid(format!("{key}.output_usd_per_mtok"), "an embedding model has no output tokens"));
                }
            }
            for (index, fallback) in model.fallbacks.iter().enumerate() {
                if !names.contains(fallback.as_str()) {
                    return Err(invalid(format!("{key}.fallbacks[{index}]"), format!("unknown model \"{fallback}\"")));
                }
                if embedding_names.contains(fallback.as_str()) {
                    return Err(invalid(format!("{key}.fallbacks[{index}]"), format!("\"{fallback}\" is an embedding model")));
                }
            }
            let output_price = match model.kind {
                ModelKind::Embedding => model.input_usd_per_mtok.map(|_| 0.0),
                ModelKind::Chat => model.output_usd_per_mtok,
            };
            let price = match (model.input_usd_per_mtok, output_price) {
                (Some(input), Some(output)) => {
                    for (field, value) in [("input_usd_per_mtok", input), ("output_usd_per_mtok", output)] {
                        if !(value.is_finite() && value >= 0.0) {
                            return Err(invalid(format!("{key}.{field}"), format!("{value} is not a price of zero or more")));
                        }
                    }
                    let (cached, write) = (model.cached_input_usd_per_mtok, model.cache_write_input_usd_per_mtok);
                    for (field, value) in [("cached_input_usd_per_mtok", cached), ("cache_write_input_usd_per_mtok", write)] {
                        if let Some(value) = value
                            && !(value.is_finite() && value >= 0.0)
                        {
                            return Err(invalid(format!("{key}.{field}"), format!("{value} is not a price of zero or more")));
                        }
                    }
                    Some(Price { input_usd_per_mtok: input, output_usd_per_mtok: output, cached_input_usd_per_mtok: cached, cache_write_input_usd_per_mtok: write })
                }
                (None, None) if model.cached_input_usd_per_mtok.is_some() || model.cache_write_input_usd_per_mtok.is_some() => {
                    let field = if model.cached_input_usd_per_mtok.is_some() { "cached_input_usd_per_mtok" } else { "cache_write_input_usd_per_mtok" };
                    return Err(invalid(format!("{key}.{field}"), "needs input_usd_per_mtok and output_usd_per_mtok"));
                }
                (None, None) => None,
                _ => {
                    return Err(invalid(key, "set both input_usd_per_mtok and output_usd_per_mtok, or neither"));
                }
            };
            models.push(ModelSettings {
                name: model.name.clone(),
                kind: model.kind,
                provider: model.provider.clone(),
                upstream_model: model.upstream_model.clone().unwrap_or_else(|| model.name.clone()),
                quality: model.quality,
                tiers: model.tiers.clone(),
                price,
                fallbacks: model.fallbacks.clone(),
            });
        }
        Ok(models)
    }

    fn validate_routing(
        &self,
        models: Vec<ModelSettings>,
        names: &HashSet<&str>,
        self_hosted: HashSet<String>,
    ) -> Result<RoutingPolicy, ConfigError> {
        let routing = &self.routing;
        if routing.preference.is_empty() {
            return Err(invalid("routing.preference", "list at least one model"));
        }
        for (index, name) in routing.preference.iter().enumerate() {
            if !names.contains(name.as_str()) {
                return Err(invalid(format!("routing.preference[{index}]"), format!("unknown model \"{name}\"")));
            }
        }
        if !(routing.max_error_rate > 0.0 && routing.max_error_rate <= 1.0) {
            return Err(invalid("routing.max_error_rate", format!("{} is outside (0.0 ..= 1.0]", routing.max_error_rate)));
        }
        let mut routes = HashMap::new();
        for (route, members) in &routing.routes {
            if names.contains(route.as_str()) {
                return Err(invalid(format!("routing.routes.{route}"), "a route may not share its name with a model"));
            }
            if members.is_empty() {
                return Err(invalid(format!("routing.routes.{route}"), "list at least one model"));
            }
            for (index, name) in members.iter().enumerate() {
                if !names.contains(name.as_str()) {
                    return Err(invalid(format!("routing.routes.{route}[{index}]"), format!("unknown model \"{name}\"")));
                }
            }
            routes.insert(route.clone(), members.clone());
        }
        let mut rules = Vec::new();
        for (position, rule) in routing.rules.iter().enumerate() {
            let key = format!("routing.rules[{position}]");
            if rule.name.trim().is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            match (&rule.model, rule.self_hosted) {
                (Some(model), false) if !names.contains(model.as_str()) => {
                    return Err(invalid(format!("{key}.model"), format!("unknown model \"{model}\"")));
                }
                (Some(_), true) => return Err(invalid(key, "set model or self_hosted = true, not both")),
                (None, false) => return Err(invalid(key, "set a target: model = \"…\" or self_hosted = true")),
                (None, true) if self_hosted.is_empty() => {
                    return Err(invalid(format!("{key}.self_hosted"), "no provider has self_hosted = true"));
                }
                _ => {}
            }
            rules.push(RoutingRule {
                name: rule.name.clone(),
                tiers: rule.tiers.clone(),
                qualities: rule.qualities.clone(),
                task_types: rule.task_types.clone(),
                latency_budget_below_ms: rule.latency_budget_below_ms,
                estimated_tokens_below: rule.estimated_tokens_below,
                model: rule.model.clone(),
                max_latency_ema_ms: rule.max_latency_ema_ms,
            });
        }
        Ok(RoutingPolicy::new(models, self_hosted, routes, rules, routing.preference.clone(), routing.max_error_rate))
    }
}

/// The validated tenancy settings.
struct Tenancy {
    keys: Vec<KeySettings>,
    admin_key: Option<[u8; 32]>,
    budget: BudgetPolicy,
    ledger_path: PathBuf,
    alert_webhook: Option<reqwest::Url>,
}

fn budget_usd(key: &str, value: Option<f64>) -> Result<Option<NanoUsd>, ConfigError> {
    match value {
        None => Ok(None),
        Some(usd) if usd.is_finite() && usd >= 0.0 => Ok(Some(NanoUsd::from_usd(usd))),
        Some(usd) => Err(invalid(key, format!("{usd} is not an amount of zero or more dollars"))),
    }
}

fn sha256_hex(key: &str, hex_text: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = hex::decode(hex_text.trim()).map_err(|_| invalid(key, "is not hexadecimal"))?;
    bytes.try_into().map_err(|_| invalid(key, "must be 64 hex digits (a SHA-256)"))
}

fn env_key(key: &str, variable: &str) -> Result<[u8; 32], ConfigError> {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => Ok(switchyard_actors::tenancy::keys::hash_key(value.trim())),
        _ => Err(invalid(key, format!("environment variable {variable} is not set or empty"))),
    }
}

impl RawTenancy {
    fn validate(&self, models: &HashSet<&str>, routes: &BTreeMap<String, Vec<String>>) -> Result<Tenancy, ConfigError> {
        let mut raw_keys: Vec<(String, &RawKey)> =
            self.keys.iter().enumerate().map(|(position, key)| (format!("tenancy.keys[{position}]"), key)).collect();
        let file_keys = match &self.keys_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| invalid("tenancy.keys_file", format!("cannot read {}: {error}", path.display())))?;
                toml::from_str::<KeysFile>(&text)
                    .map_err(|error| invalid("tenancy.keys_file", format!("{}: {error}", path.display())))?
                    .keys
            }
            None => Vec::new(),
        };
        raw_keys.extend(file_keys.iter().enumerate().map(|(position, key)| (format!("tenancy.keys_file keys[{position}]"), key)));

        let mut keys = Vec::new();
        let mut ids = HashSet::new();
        let mut hashes = HashSet::new();
        let mut users: HashMap<(String, String), Limits> = HashMap::new();
        for (key, raw) in raw_keys {
            if raw.id.trim().is_empty() || raw.tenant.trim().is_empty() || raw.user.trim().is_empty() {
                return Err(invalid(key, "id, tenant and user must not be empty"));
            }
            if !ids.insert(raw.id.clone()) {
                return Err(invalid(format!("{key}.id"), format!("key id \"{}\" is used twice", raw.id)));
            }
            let sha256 = match (&raw.key_sha256, &raw.key_env) {
                (Some(hex_text), None) => sha256_hex(&format!("{key}.key_sha256"), hex_text)?,
                (None, Some(variable)) => env_key(&format!("{key}.key_env"), variable)?,
                _ => return Err(invalid(key, "set exactly one of key_sha256 and key_env")),
            };
            if !hashes.insert(sha256) {
                return Err(invalid(key, "the same key is configured twice"));
            }
            let mut allowed = std::collections::BTreeSet::new();
            for (index, name) in raw.models.iter().enumerate() {
                if let Some(members) = routes.get(name) {
                    allowed.extend(members.iter().cloned());
                } else if !models.contains(name.as_str()) {
                    return Err(invalid(format!("{key}.models[{index}]"), format!("unknown model or route \"{name}\"")));
                }
                allowed.insert(name.clone());
            }
            for (field, value) in [("requests_per_minute", raw.requests_per_minute), ("tokens_per_minute", raw.tokens_per_minute)] {
                if value == Some(0) {
                    return Err(invalid(format!("{key}.{field}"), "must be at least 1 (leave it out for no limit)"));
                }
            }
            let limits = Limits {
                daily: budget_usd(&format!("{key}.daily_budget_usd"), raw.daily_budget_usd)?,
                monthly: budget_usd(&format!("{key}.monthly_budget_usd"), raw.monthly_budget_usd)?,
            };
            let user = (raw.tenant.clone(), raw.user.clone());
            match users.get(&user) {
                Some(existing) if *existing != limits => {
                    return Err(invalid(key, format!("user {}/{} has different budgets on another key", raw.tenant, raw.user)));
                }
                _ => {
                    users.insert(user, limits);
                }
            }
            keys.push(KeySettings {
                id: raw.id.clone(),
                sha256,
                tenant: raw.tenant.clone(),
                user: raw.user.clone(),
                tier: raw.tier,
                models: allowed,
                requests_per_minute: raw.requests_per_minute,
                tokens_per_minute: raw.tokens_per_minute,
            });
        }
        let admin_key = match (&self.admin_key_sha256, &self.admin_key_env) {
            (Some(hex_text), None) => Some(sha256_hex("tenancy.admin_key_sha256", hex_text)?),
            (None, Some(variable)) => Some(env_key("tenancy.admin_key_env", variable)?),
            (None, None) => None,
            (Some(_), Some(_)) => return Err(invalid("tenancy", "set admin_key_sha256 or admin_key_env, not both")),
        };
        let mut tenants = HashMap::new();
        for (position, tenant) in self.tenants.iter().enumerate() {
            let key = format!("tenancy.tenants[{position}]");
            let limits = Limits {
                daily: budget_usd(&format!("{key}.daily_budget_usd"), tenant.daily_budget_usd)?,
                monthly: budget_usd(&format!("{key}.monthly_budget_usd"), tenant.monthly_budget_usd)?,
            };
            if tenants.insert(tenant.name.clone(), limits).is_some() {
                return Err(invalid(format!("{key}.name"), format!("tenant \"{}\" is defined twice", tenant.name)));
            }
        }
        let thresholds = self.alert_thresholds.clone().unwrap_or_else(|| vec![50, 80, 100]);
        if let Some(bad) = thresholds.iter().find(|threshold| !(1..=1000).contains(*threshold)) {
            return Err(invalid("tenancy.alert_thresholds", format!("{bad} is outside 1 ..= 1000 percent")));
        }
        if self.budget_clock_offset_ms.unsigned_abs() > 366 * 86_400_000 {
            return Err(invalid("tenancy.budget_clock_offset_ms", format!("{} is more than a year", self.budget_clock_offset_ms)));
        }
        let alert_webhook = match &self.alert_webhook {
            Some(url) if reqwest_like_url(url).is_some() => {
                Some(reqwest::Url::parse(url).map_err(|error| invalid("tenancy.alert_webhook", error.to_string()))?)
            }
            Some(url) => return Err(invalid("tenancy.alert_webhook", format!("\"{url}\" is not an http(s) URL"))),
            None => None,
        };
        Ok(Tenancy {
            keys,
            admin_key,
            budget: BudgetPolicy {
                users,
                tenants,
                thresholds,
                enforcement: self.enforcement,
                reserve_output_tokens: self.reserve_output_tokens.unwrap_or(4096).max(1),
                retention_days: self.retention_days.unwrap_or(400).max(1),
                clock_offset_ms: self.budget_clock_offset_ms,
            },
            ledger_path: self.ledger_path.clone().unwrap_or_else(|| PathBuf::from("data/cost-ledger.jsonl")),
            alert_webhook,
        })
    }
}

fn reqwest_like_url(value: &str) -> Option<http::Uri> {
    let uri: http::Uri = value.parse().ok()?;
    matches!(uri.scheme_str(), Some("http" | "https")).then_some(uri).filter(|uri| uri.host().is_some())
}

#[cfg(test)]
mod tests;
