//! The `[semantic_cache]` and `[embedding]` sections: the semantic layer and the model that embeds
//! its lookups, validated into [`SemanticSettings`].

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchyard_actors::cache::semantic::layer::DEFAULT_MAX_PROMPT_CHARS;
use switchyard_actors::cache::semantic::{HitPolicy, SemanticCache, SemanticSettings};
use switchyard_actors::embed::{BackendSettings, BatchSettings, EmbedderSettings, RemoteSettings, WeightFormat, DEFAULT_MODEL_DIR};

use super::{ConfigError, at_least_one, invalid, positive, secret_from_env};

/// `[semantic_cache]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSemanticCache {
    enabled: bool,
    #[serde(with = "humantime_serde")]
    ttl: Duration,
    max_entries: usize,
    precision: f32,
    route_precision: BTreeMap<String, f32>,
    skip_routes: Vec<String>,
    candidates: usize,
    max_prompt_chars: usize,
    data_dir: PathBuf,
    #[serde(with = "humantime_serde")]
    snapshot_interval: Duration,
    /// `"auto"` (sized at start from the measured single embedding) or a duration.
    lookup_budget: String,
    store_queue: usize,
}

impl Default for RawSemanticCache {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: Duration::from_secs(3600),
            max_entries: 100_000,
            precision: 0.9,
            route_precision: BTreeMap::new(),
            skip_routes: Vec::new(),
            candidates: 4,
            max_prompt_chars: DEFAULT_MAX_PROMPT_CHARS,
            data_dir: PathBuf::from("data/semantic"),
            snapshot_interval: Duration::from_secs(60),
            lookup_budget: "auto".into(),
            store_queue: 256,
        }
    }
}

/// Which embedding backend.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum RawBackend {
    /// all-MiniLM-L6-v2 on this node's CPU.
    #[default]
    Local,
    /// An OpenAI-compatible `/v1/embeddings` server.
    Remote,
}

/// `[embedding]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawEmbedding {
    backend: RawBackend,
    model_dir: PathBuf,
    base_url: String,
    model: String,
    api_key_env: Option<String>,
    #[serde(with = "humantime_serde")]
    request_timeout: Duration,
    max_batch: Option<usize>,
    #[serde(with = "humantime_serde")]
    max_wait: Option<Duration>,
    max_in_flight: Option<usize>,
    /// Cores the local model may use at once (0: every core at idle priority, half of them at
    /// normal priority).
    cores: usize,
    /// Scheduling priority of the local model's threads.
    priority: RawPriority,
    /// How the local model holds its dense layers' weights (default: the embedder's).
    weights: Option<RawWeights>,
}

/// The local model's weight format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum RawWeights {
    /// As the model file has them.
    F32,
    /// int8 with a scale per output channel: a quarter of the bytes read per pass.
    Int8,
}

/// Scheduling priority of the local embedder's threads.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum RawPriority {
    /// Only the CPU the rest of the node leaves (Linux `SCHED_IDLE`).
    #[default]
    Idle,
    /// Like the request pipeline's.
    Normal,
}

impl Default for RawEmbedding {
    fn default() -> Self {
        Self {
            backend: RawBackend::Local,
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            base_url: String::new(),
            model: String::new(),
            api_key_env: None,
            request_timeout: Duration::from_secs(5),
            max_batch: None,
            max_wait: None,
            max_in_flight: None,
            cores: 0,
            priority: RawPriority::Idle,
            weights: None,
        }
    }
}

impl RawEmbedding {
    fn validate(&self) -> Result<EmbedderSettings, ConfigError> {
        let mut settings = match self.backend {
            RawBackend::Local => {
                if !self.base_url.is_empty() || !self.model.is_empty() {
                    return Err(invalid("embedding.base_url", "is for backend = \"remote\"; the local backend reads embedding.model_dir"));
                }
                let available = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
                let idle = self.priority == RawPriority::Idle;
                let cores = match self.cores {
                    0 if idle => available,
                    0 => available.div_ceil(2).max(1),
                    cores if cores > available => {
                        return Err(invalid("embedding.cores", format!("{cores} is more than this machine's {available} cores")));
                    }
                    cores => cores,
                };
                let mut settings = EmbedderSettings::local_on(self.model_dir.clone(), cores);
                if let BackendSettings::Local(local) = &mut settings.backend {
                    local.idle_priority = idle;
                    local.weights = match self.weights {
                        None => WeightFormat::default(),
                        Some(RawWeights::F32) => WeightFormat::F32,
                        Some(RawWeights::Int8) => WeightFormat::Int8,
                    };
                }
                settings
            }
            RawBackend::Remote => {
                if self.cores != 0 || self.priority != RawPriority::Idle || self.weights.is_some() {
                    let key = if self.cores != 0 {
                        "embedding.cores"
                    } else if self.weights.is_some() {
                        "embedding.weights"
                    } else {
                        "embedding.priority"
                    };
                    return Err(invalid(key, "is for backend = \"local\"; a remote server's cores are its own"));
                }
                if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
                    return Err(invalid("embedding.base_url", format!("\"{}\" is not an http(s) URL", self.base_url)));
                }
                if self.model.trim().is_empty() {
                    return Err(invalid("embedding.model", "name the embedding model to ask the server for"));
                }
                let api_key = self.api_key_env.as_deref().map(|variable| secret_from_env("embedding.api_key_env", variable)).transpose()?;
                EmbedderSettings::remote(RemoteSettings {
                    base_url: self.base_url.trim_end_matches('/').to_owned(),
                    model: self.model.clone(),
                    api_key,
                    request_timeout: positive("embedding.request_timeout", self.request_timeout)?,
                })
            }
        };
        let batch: &mut BatchSettings = &mut settings.batch;
        if let Some(max_batch) = self.max_batch {
            batch.max_batch = max_batch;
        }
        if let Some(max_wait) = self.max_wait {
            batch.max_wait = max_wait;
        }
        if let Some(max_in_flight) = self.max_in_flight {
            batch.max_in_flight = max_in_flight;
        }
        settings.validate().map_err(|error| invalid("embedding", error.to_string()))?;
        Ok(settings)
    }
}

impl RawSemanticCache {
    /// The layer's settings, or `None` when it is off. `names` are the models and routes a
    /// `route_precision` or `skip_routes` entry may name.
    pub(super) fn validate(&self, embedding: &RawEmbedding, names: &HashSet<&str>) -> Result<Option<SemanticSettings>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        at_least_one("semantic_cache.max_entries", self.max_entries)?;
        at_least_one("semantic_cache.candidates", self.candidates)?;
        at_least_one("semantic_cache.max_prompt_chars", self.max_prompt_chars)?;
        at_least_one("semantic_cache.store_queue", self.store_queue)?;
        let lookup_budget = match self.lookup_budget.trim() {
            "auto" => None,
            text => {
                let budget = humantime::parse_duration(text)
                    .map_err(|error| invalid("semantic_cache.lookup_budget", format!("\"{text}\" is neither \"auto\" nor a duration: {error}")))?;
                Some(positive("semantic_cache.lookup_budget", budget)?)
            }
        };
        for route in self.route_precision.keys() {
            if !names.contains(route.as_str()) {
                return Err(invalid(format!("semantic_cache.route_precision.{route}"), format!("unknown model or route \"{route}\"")));
            }
        }
        for route in &self.skip_routes {
            if !names.contains(route.as_str()) {
                return Err(invalid("semantic_cache.skip_routes", format!("unknown model or route \"{route}\"")));
            }
            if self.route_precision.contains_key(route) {
                return Err(invalid("semantic_cache.skip_routes", format!("\"{route}\" skips the layer but also has a route_precision")));
            }
        }
        let settings = SemanticSettings {
            embedder: embedding.validate()?,
            max_entries: self.max_entries,
            ttl: positive("semantic_cache.ttl", self.ttl)?,
            precision: self.precision,
            route_precision: self.route_precision.clone().into_iter().collect(),
            skip_routes: self.skip_routes.iter().cloned().collect(),
            candidates: self.candidates,
            max_prompt_chars: self.max_prompt_chars,
            data_dir: (!self.data_dir.as_os_str().is_empty()).then(|| self.data_dir.clone()),
            snapshot_interval: positive("semantic_cache.snapshot_interval", self.snapshot_interval)?,
            policy: HitPolicy::shipped().map_err(|error| invalid("semantic_cache", format!("the shipped hit policy: {error}")))?,
            lookup_budget,
            store_queue: self.store_queue,
        };
        SemanticCache::check(&settings).map_err(|wrong| {
            let key = wrong.route.map_or_else(|| "semantic_cache.precision".to_owned(), |route| format!("semantic_cache.route_precision.{route}"));
            invalid(key, wrong.error.to_string())
        })?;
        Ok(Some(settings))
    }
}
