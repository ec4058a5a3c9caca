//! A clustered node's side of the shared rate limits (see `rate_owner`): per key, a small pool of
//! permits and tokens granted by the key's owner, spent locally by requests; when the pool is
//! empty (or its grant is older than [`PERMIT_LIFETIME`]) the request asks the owner for a batch,
//! one ask per key at a time. A node that reaches no owner falls back to its own limiter (the
//! key's full limit on this node alone), logged and counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ractor::ActorRef;
use tokio::time::Instant;
use tracing::warn;

use crate::cluster::membership::ClusterView;
use crate::cluster::wire;
use crate::metrics::Metrics;
use crate::tenancy::keys::Principal;
use crate::tenancy::limiter::RateLimited;
use crate::tenancy::rate_owner::{PERMIT_LIFETIME, RateOwnerMessage, batch, owner_of};

/// Asks before falling back to the local limiter.
const ATTEMPTS: u32 = 5;
/// Pause between asks while the members settle.
const PAUSE: Duration = Duration::from_millis(40);
/// How long one ask may take.
const ASK_TIMEOUT_MS: u64 = 500;

#[derive(Debug)]
struct Pool {
    requests: u32,
    tokens: i64,
    granted_at: Instant,
}

impl Pool {
    fn fresh(&mut self, now: Instant) -> &mut Self {
        if now.saturating_duration_since(self.granted_at) > PERMIT_LIFETIME {
            self.requests = 0;
            self.tokens = 0;
        }
        self
    }
}

/// The pools of every key this node serves.
#[derive(Debug)]
pub struct RateClient {
    view: tokio::sync::watch::Receiver<ClusterView>,
    pools: Mutex<HashMap<String, Pool>>,
    asking: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    metrics: Arc<Metrics>,
}

impl RateClient {
    /// The client of a node seeing `view`.
    pub fn new(view: tokio::sync::watch::Receiver<ClusterView>, metrics: Arc<Metrics>) -> Self {
        Self { view, pools: Mutex::new(HashMap::new()), asking: Mutex::new(HashMap::new()), metrics }
    }

    /// Takes one permit and `tokens` from the key's pool, if it holds them.
    fn take(&self, key_id: &str, limits: (Option<u32>, Option<u32>), tokens: u64) -> bool {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if pools.len() > 100_000 {
            pools.retain(|_, pool| now.saturating_duration_since(pool.granted_at) <= PERMIT_LIFETIME);
        }
        // The hot path finds the key's pool without allocating; a key's first request inserts it.
        if !pools.contains_key(key_id) {
            pools.insert(key_id.to_owned(), Pool { requests: 0, tokens: 0, granted_at: now });
        }
        let Some(pool) = pools.get_mut(key_id) else { return false };
        let pool = pool.fresh(now);
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        let requests_ok = limits.0.is_none() || pool.requests >= 1;
        let tokens_ok = limits.1.is_none() || pool.tokens >= tokens;
        if requests_ok && tokens_ok {
            if limits.0.is_some() {
                pool.requests -= 1;
            }
            if limits.1.is_some() {
                pool.tokens -= tokens;
            }
            return true;
        }
        false
    }

    /// Admits one request of `principal` estimated at `tokens` against the key's cluster-wide
    /// limits, or says which refused it and for how long.
    pub async fn admit(&self, principal: &Principal, tokens: u64) -> Result<(), RateLimited> {
        let limits = principal.limiter.limits();
        if limits == (None, None) || self.take(&principal.key_id, limits, tokens) {
            return Ok(());
        }
        let lock = {
            let mut asking = self.asking.lock().unwrap_or_else(PoisonError::into_inner);
            if asking.len() > 100_000 {
                asking.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            Arc::clone(asking.entry(principal.key_id.clone()).or_default())
        };
        let _turn = lock.lock().await;
        for _ in 0..ATTEMPTS {
            if self.take(&principal.key_id, limits, tokens) {
                return Ok(());
            }
            let view = self.view.borrow().clone();
            let owner = owner_of(&principal.key_id, &view)
                .and_then(|owner| crate::budget::lease_owner::member(wire::RATE_OWNER_GROUP, &owner))
                .map(ActorRef::<RateOwnerMessage>::from);
            let Some(owner) = owner else {
                tokio::time::sleep(PAUSE).await;
                continue;
            };
            let ask = wire::RateAsk {
                key_id: principal.key_id.clone(),
                requests_per_minute: limits.0.unwrap_or(0),
                tokens_per_minute: limits.1.unwrap_or(0),
                want_requests: limits.0.map_or(0, batch),
                want_tokens: limits.1.map_or(0, |tpm| u64::from(batch(tpm)).max(tokens)),
                need_tokens: tokens,
            };
            let bytes = wire::encode(&ask);
            let grant = match ractor::call_t!(owner, |port| RateOwnerMessage::Ask(bytes, port), ASK_TIMEOUT_MS) {
                Ok(reply) => wire::decode::<wire::RateGrant>("rate grant", &reply).ok(),
                Err(_) => None,
            };
            match grant {
                Some(grant) if grant.not_owner.is_empty() && grant.limited_by.is_empty() => {
                    self.metrics.rate_limit_asks.with_label_values(&["granted"]).inc();
                    let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
                    let now = Instant::now();
                    let pool = pools.entry(principal.key_id.clone()).or_insert(Pool { requests: 0, tokens: 0, granted_at: now }).fresh(now);
                    pool.requests += grant.requests;
                    pool.tokens += i64::try_from(grant.tokens).unwrap_or(i64::MAX);
                    pool.granted_at = now;
                }
                Some(grant) if !grant.limited_by.is_empty() => {
                    self.metrics.rate_limit_asks.with_label_values(&["limited"]).inc();
                    let limit = if grant.limited_by == "tokens per minute" { "tokens per minute" } else { "requests per minute" };
                    return Err(RateLimited { limit, retry_after: Duration::from_millis(grant.retry_after_ms) });
                }
                _ => {
                    self.metrics.rate_limit_asks.with_label_values(&["retry"]).inc();
                    tokio::time::sleep(PAUSE).await;
                }
            }
        }
        if self.take(&principal.key_id, limits, tokens) {
            return Ok(());
        }
        self.metrics.rate_limit_asks.with_label_values(&["local"]).inc();
        warn!(key_id = %principal.key_id, "no rate-limit owner answered: this node limits the key on its own");
        principal.limiter.admit(tokens)
    }

    /// Returns a request's unused token estimate to the key's pool (while the grant is fresh).
    pub fn settle(&self, key_id: &str, estimate: u64, actual: u64) {
        let unused = i64::try_from(estimate).unwrap_or(i64::MAX) - i64::try_from(actual).unwrap_or(i64::MAX);
        if unused > 0
            && let Some(pool) = self.pools.lock().unwrap_or_else(PoisonError::into_inner).get_mut(key_id)
        {
            pool.fresh(Instant::now()).tokens += unused;
        }
    }
}
