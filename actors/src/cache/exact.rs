//! The exact cache: answers stored under [`super::key::exact_key`], each with its own TTL, held in
//! process by `moka` (bounded by entry count, least-recently-used evicted).

use std::sync::Arc;
use std::time::Duration;

use moka::Expiry;
use moka::future::Cache;

use crate::metrics::Metrics;

/// A stored answer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CachedAnswer {
    /// The whole answer.
    pub text: String,
    /// The model that produced it.
    pub model: String,
    /// The provider that produced it.
    pub provider: String,
    /// Its prompt tokens.
    pub input_tokens: u32,
    /// Its answer tokens.
    pub output_tokens: u32,
    /// Why generation stopped (`stop`, `length`, `content_filter`).
    pub finish_reason: String,
    /// What producing it cost, in nanodollars (a hit saves this); `None` when unpriced.
    pub cost_nano_usd: Option<i64>,
    /// When it was stored, in milliseconds since the epoch.
    pub created_ms: i64,
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// A stored answer.
    Hit(Arc<CachedAnswer>),
    /// Nothing stored.
    Miss,
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

/// The exact cache.
#[derive(Clone)]
pub struct ExactCache {
    entries: Cache<String, Entry>,
    default_ttl: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ExactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactCache").field("entries", &self.entries.entry_count()).field("default_ttl", &self.default_ttl).finish()
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
            .eviction_listener(move |_key, _entry, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build();
        Self { entries, default_ttl, metrics }
    }

    /// Looks `key` up.
    pub async fn get(&self, key: &str) -> Lookup {
        let found = self.entries.get(key).await;
        self.metrics.cache_entries.with_label_values(&["exact"]).set(i64::try_from(self.entries.entry_count()).unwrap_or(i64::MAX));
        match found {
            Some(entry) => Lookup::Hit(entry.answer),
            None => Lookup::Miss,
        }
    }

    /// Stores `answer` under `key` for `ttl` (the configured default when `None`).
    pub async fn put(&self, key: String, answer: CachedAnswer, ttl: Option<Duration>) {
        let ttl = ttl.unwrap_or(self.default_ttl);
        if ttl.is_zero() {
            return;
        }
        self.entries.insert(key, Entry { answer: Arc::new(answer), ttl }).await;
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> CachedAnswer {
        CachedAnswer {
            text: "hi".into(),
            model: "m".into(),
            provider: "p".into(),
            input_tokens: 1,
            output_tokens: 1,
            finish_reason: "stop".into(),
            cost_nano_usd: Some(5),
            created_ms: 0,
        }
    }

    #[tokio::test]
    async fn entries_expire_after_their_own_ttl() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let cache = ExactCache::in_memory(100, Duration::from_secs(3600), metrics);
        cache.put("short".into(), answer(), Some(Duration::from_millis(50))).await;
        cache.put("long".into(), answer(), None).await;
        assert!(matches!(cache.get("short").await, Lookup::Hit(_)));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(cache.get("short").await, Lookup::Miss);
        assert!(matches!(cache.get("long").await, Lookup::Hit(_)));
        assert_eq!(cache.get("absent").await, Lookup::Miss);
    }
}
