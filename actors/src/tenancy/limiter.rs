//! Per-key rate limits. Requests per minute use `governor`'s GCRA limiter. Tokens per minute use
//! a token bucket of our own, because a request's tokens are only estimated before the call and
//! must be settled with real usage afterwards — returning unused estimate, which `governor` cannot.
//! Alone, limits live in this process; in a cluster they are the key's owner node's, leased out
//! in small grants (see `rate_owner`), and these limiters serve only while no owner is reachable.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// A request refused by a rate limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimited {
    /// Which limit: "requests per minute" or "tokens per minute".
    pub limit: &'static str,
    /// When to try again.
    pub retry_after: Duration,
}

/// A token bucket refilled continuously (also the owner's, in a cluster); `level` may go below zero when a request larger than
/// the whole bucket is let through on a full bucket, so large requests are slowed, not barred.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    level: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `per_minute` tokens.
    pub fn new(per_minute: u32) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self { capacity, per_second: capacity / 60.0, level: capacity, updated: Instant::now() }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
    }

    /// Tokens in the bucket now (negative after an oversized request).
    pub fn level(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.level
    }

    /// Takes `tokens`, or says how long until they are available.
    pub fn take(&mut self, tokens: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let wanted = tokens as f64;
        if self.level >= wanted || self.level >= self.capacity {
            self.level -= wanted;
            return Ok(());
        }
        let missing = wanted.min(self.capacity) - self.level;
        Err(Duration::from_secs_f64(missing / self.per_second))
    }

    /// Corrects an earlier `take(estimate)` to the real usage.
    pub fn settle(&mut self, estimate: u64, actual: u64, now: Instant) {
        self.refill(now);
        self.level = (self.level + estimate as f64 - actual as f64).min(self.capacity);
    }
}

/// One key's limits; the clock is `governor`'s (a fake one in tests).
#[derive(Debug)]
pub struct KeyLimiter<C: Clock = DefaultClock> {
    /// The configured limits (requests, tokens per minute), for the cluster's shared limits.
    limits: (Option<u32>, Option<u32>),
    requests: Option<RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>>,
    clock: C,
    tokens: Option<Mutex<TokenBucket>>,
}

impl KeyLimiter {
    /// Limits of `requests_per_minute` and `tokens_per_minute` (each `None` for none).
    pub fn new(requests_per_minute: Option<u32>, tokens_per_minute: Option<u32>) -> Self {
        Self::with_clock(requests_per_minute, tokens_per_minute, DefaultClock::default())
    }
}

impl<C: Clock + Clone> KeyLimiter<C> {
    /// Limits on `clock`.
    pub fn with_clock(requests_per_minute: Option<u32>, tokens_per_minute: Option<u32>, clock: C) -> Self {
        Self {
            limits: (requests_per_minute.filter(|rpm| *rpm > 0), tokens_per_minute.filter(|tpm| *tpm > 0)),
            requests: requests_per_minute
                .and_then(NonZeroU32::new)
                .map(|rpm| RateLimiter::direct_with_clock(Quota::per_minute(rpm), clock.clone())),
            clock,
            tokens: tokens_per_minute.map(|tpm| Mutex::new(TokenBucket::new(tpm))),
        }
    }

    /// The configured limits: requests and tokens per minute.
    pub fn limits(&self) -> (Option<u32>, Option<u32>) {
        self.limits
    }

    /// Admits one request estimated at `tokens`, or says which limit refused it and for how long.
    pub fn admit(&self, tokens: u64) -> Result<(), RateLimited> {
        if let Some(requests) = &self.requests
            && let Err(not_until) = requests.check()
        {
            return Err(RateLimited {
                limit: "requests per minute",
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        if let Some(bucket) = &self.tokens {
            let mut bucket = bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            bucket
                .take(tokens, Instant::now())
                .map_err(|retry_after| RateLimited { limit: "tokens per minute", retry_after })?;
        }
        Ok(())
    }

    /// Settles an admitted request's token estimate with its real usage.
    pub fn settle(&self, estimate: u64, actual: u64) {
        if let Some(bucket) = &self.tokens {
            bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner).settle(estimate, actual, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_token_bucket_refuses_then_recovers_and_settles() {
        let mut bucket = TokenBucket::new(600);
        assert!(bucket.take(500, Instant::now()).is_ok());
        let wait = bucket.take(200, Instant::now());
        assert_eq!(wait, Err(Duration::from_secs(10)), "100 tokens missing at 10 tokens/s");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(bucket.take(200, Instant::now()).is_ok());
        // The first request used only 100 of its 500: 400 come back.
        bucket.settle(500, 100, Instant::now());
        assert!(bucket.take(400, Instant::now()).is_ok());
        assert!(bucket.take(1, Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_the_bucket_passes_only_on_a_full_bucket() {
        let mut bucket = TokenBucket::new(60);
        assert!(bucket.take(100, Instant::now()).is_ok());
        assert_eq!(bucket.take(1, Instant::now()), Err(Duration::from_secs(41)));
    }

    #[test]
    fn requests_per_minute_refuse_past_the_quota_then_recover() {
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter = KeyLimiter::with_clock(Some(2), None, clock.clone());
        assert!(limiter.admit(0).is_ok());
        assert!(limiter.admit(0).is_ok());
        let refused = limiter.admit(0);
        assert_eq!(refused, Err(RateLimited { limit: "requests per minute", retry_after: Duration::from_secs(30) }));
        clock.advance(Duration::from_secs(29));
        assert!(limiter.admit(0).is_err(), "still limited");
        clock.advance(Duration::from_secs(1));
        assert!(limiter.admit(0).is_ok(), "one request's worth came back after 30 s");
        assert!(limiter.admit(0).is_err());
    }
}
