//! The exact cache: answers stored under [`super::key::exact_key`], each with its own TTL, in one
//! of two backings behind the same type:
//! - **Redis** when `redis.url` is set (shared by every node): `SET … EX`, keys
//!   `<prefix>:v1:exact:<hash>`, plus tag sets per tenant and per model/route for invalidation.
//!   Redis down or slower than the lookup timeout is a miss (or a skipped store) with a warning and
//!   a metric, never a failed request; the connection manager reconnects by itself.
//! - **In process** otherwise: `moka`, bounded by entry count (least recently used evicted).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use moka::Expiry;
use moka::future::Cache;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// A stored answer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CachedAnswer {
    /// The tenant whose request produced it.
    pub tenant: String,
    /// The model or route the request named (`auto` for the router's choice).
    pub route: String,
    /// The whole answer.
    pub text: String,
    /// The tools it called (stored by the exact layer only; see the semantic layer's `store`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<crate::model::ToolCall>,
    /// For an embeddings request: one vector per input (the text is then empty). Stored by the
    /// exact layer only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embeddings: Vec<Vec<f32>>,
    /// The model that produced it.
    pub model: String,
    /// The provider that produced it.
    pub provider: String,
    /// Its prompt tokens.
    pub input_tokens: u32,
    /// Its answer tokens.
    pub output_tokens: u32,
    /// Why generation stopped (`stop`, `length`, `content_filter`, `tool_calls`).
    pub finish_reason: String,
    /// What producing it cost, in nanodollars (a hit saves this); `None` when unpriced.
    pub cost_nano_usd: Option<i64>,
    /// When it was stored, in milliseconds since the epoch.
    pub created_ms: i64,
}

impl CachedAnswer {
    /// The tokens of the call that produced it.
    pub fn usage(&self) -> crate::model::Usage {
        crate::model::Usage { input_tokens: self.input_tokens, output_tokens: self.output_tokens, ..crate::model::Usage::default() }
    }

    /// The model and provider that produced it, as the answer names them.
    pub fn target(&self) -> crate::model::Target {
        crate::model::Target { model: self.model.clone(), provider: self.provider.clone(), upstream_model: self.model.clone() }
    }
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// A stored answer.
    Hit(Arc<CachedAnswer>),
    /// Nothing stored.
    Miss,
    /// The backing did not answer in time; treated as a miss.
    Unavailable,
}

/// Which entries to drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// One entry, by its key.
    Key(String),
    /// Every entry of a tenant.
    Tenant(String),
    /// Every entry produced by, or requested as, this model or route.
    Model(String),
    /// Everything.
    All,
}

#[derive(Clone, Debug)]
struct Entry {
    answer: Arc<CachedAnswer>,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _now: std::time::Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// Redis settings of the exact cache.
#[derive(Clone, Debug, PartialEq)]
pub struct RedisCacheSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key, one per deployment.
    pub key_prefix: String,
    /// Longest wait for Redis on the request path.
    pub timeout: Duration,
}

#[derive(Clone)]
struct RedisBacking {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    /// Whether the last operation failed, so the warning is logged once per outage.
    degraded: Arc<AtomicBool>,
}

#[derive(Clone)]
enum Backing {
    Memory(Cache<String, Entry>),
    Redis(RedisBacking),
}

/// The exact cache.
#[derive(Clone)]
pub struct ExactCache {
    backing: Backing,
    default_ttl: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ExactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backing = match &self.backing {
            Backing::Memory(_) => "memory",
            Backing::Redis(_) => "redis",
        };
        f.debug_struct("ExactCache").field("backing", &backing).field("default_ttl", &self.default_ttl).finish()
    }
}

impl RedisBacking {
    fn entry_key(&self, key: &str) -> String {
        format!("{}:v1:exact:{key}", self.prefix)
    }

    fn tenant_tag(&self, tenant: &str) -> String {
        format!("{}:v1:exact-tag:tenant:{tenant}", self.prefix)
    }

    fn model_tag(&self, model: &str) -> String {
        format!("{}:v1:exact-tag:model:{model}", self.prefix)
    }

    fn all_tag(&self) -> String {
        format!("{}:v1:exact-tag:all", self.prefix)
    }

    /// Runs `operation` within the timeout, logging an outage once and its end once.
    async fn run<T>(&self, what: &str, operation: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    info!("Redis answers again: exact caching resumed");
                }
                Some(value)
            }
            Ok(Err(error)) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    warn!(%error, operation = what, "Redis failed: requests go on uncached until it answers");
                }
                None
            }
            Err(_elapsed) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    warn!(timeout_ms = self.timeout.as_millis() as u64, operation = what, "Redis too slow: requests go on uncached until it answers");
                }
                None
            }
        }
    }
}

impl ExactCache {
    /// An in-process cache of at most `max_entries`, entries living `default_ttl` unless the
    /// request says otherwise.
    pub fn in_memory(max_entries: u64, default_ttl: Duration, metrics: Arc<Metrics>) -> Self {
        let evictions = metrics.cache_evictions.with_label_values(&["exact"]);
        let entries = Cache::builder()
            .max_capacity(max_entries)
            .expire_after(PerEntryTtl)
            .support_invalidation_closures()
            .eviction_listener(move |_key, _entry, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build();
        Self { backing: Backing::Memory(entries), default_ttl, metrics }
    }

    /// A cache in Redis; connects lazily, so a Redis that is down at start only means misses.
    pub fn redis(settings: &RedisCacheSettings, default_ttl: Duration, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let client = redis::Client::open(settings.url.as_str()).with_context(|| format!("redis.url \"{}\" is not a Redis URL", settings.url))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config).context("failed to set up the Redis connection")?;
        let backing = RedisBacking {
            connection,
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            degraded: Arc::new(AtomicBool::new(false)),
        };
        Ok(Self { backing: Backing::Redis(backing), default_ttl, metrics })
    }

    /// Looks `key` up.
    pub async fn get(&self, key: &str) -> Lookup {
        match &self.backing {
            Backing::Memory(entries) => {
                let found = entries.get(key).await;
                self.metrics.cache_entries.with_label_values(&["exact"]).set(i64::try_from(entries.entry_count()).unwrap_or(i64::MAX));
                found.map_or(Lookup::Miss, |entry| Lookup::Hit(entry.answer))
            }
            Backing::Redis(redis) => {
                let mut connection = redis.connection.clone();
                let entry_key = redis.entry_key(key);
                let found: Option<Option<Vec<u8>>> = redis.run("get", async move { connection.get(entry_key).await }).await;
                match found {
                    None => Lookup::Unavailable,
                    Some(None) => Lookup::Miss,
                    Some(Some(bytes)) => match serde_json::from_slice::<CachedAnswer>(&bytes) {
                        Ok(answer) => Lookup::Hit(Arc::new(answer)),
                        Err(error) => {
                            warn!(%error, "unreadable exact-cache entry in Redis; treated as a miss");
                            Lookup::Miss
                        }
                    },
                }
            }
        }
    }

    /// Stores `answer` under `key` for `ttl` (the configured default when `None`).
    pub async fn put(&self, key: String, answer: CachedAnswer, ttl: Option<Duration>) {
        let ttl = ttl.unwrap_or(self.default_ttl);
        if ttl.is_zero() {
            return;
        }
        match &self.backing {
            Backing::Memory(entries) => entries.insert(key, Entry { answer: Arc::new(answer), ttl }).await,
            Backing::Redis(redis) => {
                let Ok(json) = serde_json::to_vec(&answer) else { return };
                let seconds = ttl.as_secs().max(1);
                let tag_ttl = i64::try_from(seconds).unwrap_or(i64::MAX);
                let entry_key = redis.entry_key(&key);
                let tags = [
                    redis.tenant_tag(&answer.tenant),
                    redis.model_tag(&answer.model),
                    redis.model_tag(&answer.route),
                    redis.all_tag(),
                ];
                let mut pipeline = redis::pipe();
                pipeline.set_ex(&entry_key, json, seconds).ignore();
                for tag in &tags {
                    // A tag lives as long as its longest-lived member.
                    pipeline.sadd(tag, &entry_key).ignore().cmd("EXPIRE").arg(tag).arg(tag_ttl).arg("GT").ignore();
                    pipeline.cmd("EXPIRE").arg(tag).arg(tag_ttl).arg("NX").ignore();
                }
                let mut connection = redis.connection.clone();
                let stored: Option<()> = redis.run("set", async move { pipeline.query_async(&mut connection).await }).await;
                if stored.is_none() {
                    self.metrics.cache_lookups.with_label_values(&["exact", "store_error"]).inc();
                }
            }
        }
    }

    /// Drops the entries `what` names.
    pub async fn invalidate(&self, what: &Invalidation) -> Result<(), String> {
        match &self.backing {
            Backing::Memory(entries) => {
                let result = match what {
                    Invalidation::Key(key) => {
                        entries.invalidate(key).await;
                        Ok(())
                    }
                    Invalidation::All => {
                        entries.invalidate_all();
                        Ok(())
                    }
                    Invalidation::Tenant(tenant) => {
                        let tenant = tenant.clone();
                        entries.invalidate_entries_if(move |_key, entry| entry.answer.tenant == tenant).map(|_| ())
                    }
                    Invalidation::Model(model) => {
                        let model = model.clone();
                        entries
                            .invalidate_entries_if(move |_key, entry| entry.answer.model == model || entry.answer.route == model)
                            .map(|_| ())
                    }
                };
                result.map_err(|error| error.to_string())
            }
            Backing::Redis(redis) => {
                let mut connection = redis.connection.clone();
                let tag = match what {
                    Invalidation::Key(key) => {
                        let entry_key = redis.entry_key(key);
                        return connection.del::<_, ()>(entry_key).await.map_err(|error| error.to_string());
                    }
                    Invalidation::Tenant(tenant) => redis.tenant_tag(tenant),
                    Invalidation::Model(model) => redis.model_tag(model),
                    Invalidation::All => redis.all_tag(),
                };
                let members: Vec<String> = connection.smembers(&tag).await.map_err(|error| error.to_string())?;
                for chunk in members.chunks(512) {
                    connection.del::<_, ()>(chunk).await.map_err(|error| error.to_string())?;
                }
                connection.del::<_, ()>(&tag).await.map_err(|error| error.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(tenant: &str, model: &str) -> CachedAnswer {
        CachedAnswer {
            embeddings: Vec::new(),
            tenant: tenant.into(),
            route: "auto".into(),
            text: "hi".into(),
            tool_calls: Vec::new(),
            model: model.into(),
            provider: "p".into(),
            input_tokens: 1,
            output_tokens: 1,
            finish_reason: "stop".into(),
            cost_nano_usd: Some(5),
            created_ms: 0,
        }
    }

    fn cache() -> ExactCache {
        ExactCache::in_memory(100, Duration::from_secs(3600), Arc::new(Metrics::new().expect("metrics")))
    }

    #[tokio::test]
    async fn entries_expire_after_their_own_ttl() {
        let cache = cache();
        cache.put("short".into(), answer("t", "m"), Some(Duration::from_millis(50))).await;
        cache.put("long".into(), answer("t", "m"), None).await;
        assert!(matches!(cache.get("short").await, Lookup::Hit(_)));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(cache.get("short").await, Lookup::Miss);
        assert!(matches!(cache.get("long").await, Lookup::Hit(_)));
        assert_eq!(cache.get("absent").await, Lookup::Miss);
    }

    #[tokio::test]
    async fn invalidation_by_key_tenant_model_and_all() {
        let cache = cache();
        cache.put("a1".into(), answer("acme", "m1"), None).await;
        cache.put("a2".into(), answer("acme", "m2"), None).await;
        cache.put("g1".into(), answer("globex", "m1"), None).await;
        cache.put("g2".into(), answer("globex", "m2"), None).await;
        assert!(cache.invalidate(&Invalidation::Key("a1".into())).await.is_ok());
        assert_eq!(cache.get("a1").await, Lookup::Miss);
        assert!(cache.invalidate(&Invalidation::Tenant("acme".into())).await.is_ok());
        assert_eq!(cache.get("a2").await, Lookup::Miss);
        assert!(matches!(cache.get("g1").await, Lookup::Hit(_)));
        assert!(cache.invalidate(&Invalidation::Model("m1".into())).await.is_ok());
        assert_eq!(cache.get("g1").await, Lookup::Miss);
        assert!(matches!(cache.get("g2").await, Lookup::Hit(_)));
        assert!(cache.invalidate(&Invalidation::All).await.is_ok());
        assert_eq!(cache.get("g2").await, Lookup::Miss);
    }
}
