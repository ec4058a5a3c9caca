//! The `RateOwner` actor: one per clustered node. A key's rate limits are one limit over the
//! cluster: the key's owner node (the top alive member by the ring's hash of `rate:<key id>`)
//! holds its requests-per-minute GCRA and its tokens-per-minute bucket, and grants nodes small
//! batches of permits and tokens that they spend locally (see `rate_client`).
//!
//! Bound: every admitted request used a permit the owner's GCRA let through, and a node drops
//! permits it has not used within [`PERMIT_LIFETIME`], so in any minute a key gets at most its
//! limit plus the permits granted in the last [`PERMIT_LIFETIME`] and not yet used: at most
//! `N × batch` more, with N nodes and `batch = max(1, limit / 600)` (a tenth of a second's
//! worth). When the owner changes (it died, or members joined), the new owner starts the key's
//! limits afresh: one more minute's burst at most. Tokens likewise, with a batch of at least the
//! waiting request's estimate.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tokio::time::Instant;
use tracing::warn;

use crate::cluster::membership::ClusterView;
use crate::cluster::{ring, wire};
use crate::tenancy::limiter::TokenBucket;

/// A node drops granted permits and tokens it has not used within this long.
pub const PERMIT_LIFETIME: Duration = Duration::from_secs(1);
/// Keys not asked about for this long are forgotten (their limits have fully recovered).
const IDLE_FORGET: Duration = Duration::from_secs(120);

/// The key a key's rate-limit owner is chosen by.
pub fn rate_key(key_id: &str) -> String {
    format!("rate:{key_id}")
}

/// Permits asked for at once: a tenth of a second's worth of `per_minute`, at least one.
pub fn batch(per_minute: u32) -> u32 {
    (per_minute / 600).max(1)
}

/// The owner of `key_id`'s limits among the alive members.
pub fn owner_of(key_id: &str, view: &ClusterView) -> Option<String> {
    ring::owners_of_key(&rate_key(key_id), &view.alive, 1).first().map(|owner| (*owner).to_owned())
}

/// A GCRA over requests: `per_minute` with a burst of a whole minute's quota, as the lone
/// node's `governor` quota.
#[derive(Debug)]
pub struct Gcra {
    /// Seconds between requests at the sustained rate.
    interval: f64,
    /// How far ahead of now the theoretical arrival time may run.
    tolerance: f64,
    /// Theoretical arrival time, seconds since `origin`.
    tat: f64,
    origin: Instant,
}

impl Gcra {
    /// A fresh limit of `per_minute`.
    pub fn new(per_minute: u32, now: Instant) -> Self {
        let interval = 60.0 / f64::from(per_minute.max(1));
        Self { interval, tolerance: interval * f64::from(per_minute.max(1).saturating_sub(1)), tat: 0.0, origin: now }
    }

    /// Lets through up to `want` requests at `now`; returns how many, and when none, how long
    /// until one would pass.
    pub fn take(&mut self, want: u32, now: Instant) -> (u32, Duration) {
        let now = now.saturating_duration_since(self.origin).as_secs_f64();
        let mut granted = 0;
        while granted < want {
            let tat = self.tat.max(now);
            if tat - now > self.tolerance {
                break;
            }
            self.tat = tat + self.interval;
            granted += 1;
        }
        let wait = if granted == 0 { Duration::from_secs_f64((self.tat.max(now) - now - self.tolerance).max(0.0)) } else { Duration::ZERO };
        (granted, wait)
    }
}

#[derive(Debug)]
struct KeyState {
    limits: (u32, u32),
    requests: Option<Gcra>,
    tokens: Option<TokenBucket>,
    asked: Instant,
}

/// The actor; its state is [`RateOwnerState`].
#[derive(Debug, Default)]
pub struct RateOwner;

/// The owner's state.
#[derive(Debug)]
pub struct RateOwnerState {
    this_node: String,
    view: tokio::sync::watch::Receiver<ClusterView>,
    keys: HashMap<String, KeyState>,
    /// The members when the keys were last valid: a change means another node may have owned
    /// them meanwhile, so they start afresh.
    members: Vec<String>,
}

/// Messages to a rate owner.
#[derive(Debug, RactorClusterMessage)]
pub enum RateOwnerMessage {
    /// A node asks for permits ([`wire::RateAsk`]); the reply is a [`wire::RateGrant`].
    #[rpc]
    Ask(
        /// The encoded ask.
        Vec<u8>,
        /// Reply channel for RPC: the encoded grant.
        RpcReplyPort<Vec<u8>>,
    ),
}

impl RateOwnerState {
    fn grant(&mut self, ask: &wire::RateAsk, now: Instant) -> wire::RateGrant {
        let view = self.view.borrow().clone();
        if owner_of(&ask.key_id, &view).as_deref() != Some(self.this_node.as_str()) {
            return wire::RateGrant { not_owner: owner_of(&ask.key_id, &view).unwrap_or_default(), ..wire::RateGrant::default() };
        }
        if view.alive != self.members {
            self.keys.clear();
            self.members = view.alive.clone();
        }
        if self.keys.len() > 10_000 {
            self.keys.retain(|_, key| now.saturating_duration_since(key.asked) < IDLE_FORGET);
        }
        let limits = (ask.requests_per_minute, ask.tokens_per_minute);
        let key = self.keys.entry(ask.key_id.clone()).or_insert_with(|| KeyState { limits, requests: None, tokens: None, asked: now });
        if key.limits != limits {
            *key = KeyState { limits, requests: None, tokens: None, asked: now };
        }
        key.asked = now;
        let (requests, wait) = match (limits.0, ask.want_requests) {
            (0, _) | (_, 0) => (0, Duration::ZERO),
            (rpm, want) => key.requests.get_or_insert_with(|| Gcra::new(rpm, now)).take(want, now),
        };
        if limits.0 > 0 && ask.want_requests > 0 && requests == 0 {
            return wire::RateGrant { retry_after_ms: millis(wait), limited_by: "requests per minute".into(), ..wire::RateGrant::default() };
        }
        let tokens = match limits.1 {
            0 => 0,
            tpm => {
                let bucket = key.tokens.get_or_insert_with(|| TokenBucket::new(tpm));
                let level = bucket.level(now).max(0.0) as u64;
                let take = ask.want_tokens.min(level.max(ask.need_tokens));
                match bucket.take(take, now) {
                    Ok(()) => take,
                    Err(wait) => {
                        // Give the permits back: the request cannot go anyway.
                        if let Some(gcra) = key.requests.as_mut() {
                            gcra.tat -= gcra.interval * f64::from(requests);
                        }
                        return wire::RateGrant { retry_after_ms: millis(wait), limited_by: "tokens per minute".into(), ..wire::RateGrant::default() };
                    }
                }
            }
        };
        wire::RateGrant { requests, tokens, ..wire::RateGrant::default() }
    }
}

fn millis(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Actor for RateOwner {
    type Msg = RateOwnerMessage;
    type State = RateOwnerState;
    type Arguments = (String, tokio::sync::watch::Receiver<ClusterView>);

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, (this_node, view): Self::Arguments) -> Result<RateOwnerState, ActorProcessingErr> {
        ractor::pg::join(wire::RATE_OWNER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(RateOwnerState { this_node, view, keys: HashMap::new(), members: Vec::new() })
    }

    async fn handle(&self, _myself: ActorRef<Self::Msg>, message: RateOwnerMessage, state: &mut RateOwnerState) -> Result<(), ActorProcessingErr> {
        let RateOwnerMessage::Ask(bytes, reply) = message;
        let grant = match wire::decode::<wire::RateAsk>("rate ask", &bytes) {
            Ok(ask) => state.grant(&ask, Instant::now()),
            Err(error) => {
                warn!(%error, "rate ask refused");
                wire::RateGrant { not_owner: error.to_string(), ..wire::RateGrant::default() }
            }
        };
        let _gone = reply.send(wire::encode(&grant));
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, _state: &mut RateOwnerState) -> Result<(), ActorProcessingErr> {
        ractor::pg::leave(wire::RATE_OWNER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_gcra_lets_a_minutes_quota_through_then_one_per_interval() {
        let now = Instant::now();
        let mut gcra = Gcra::new(60, now);
        assert_eq!(gcra.take(100, now).0, 60, "a whole minute's burst");
        let (none, wait) = gcra.take(1, now);
        assert_eq!(none, 0);
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(gcra.take(5, now + Duration::from_millis(2_500)).0, 2, "one per second after");
    }

    fn owner(view: &ClusterView) -> RateOwnerState {
        let (_sender, receiver) = tokio::sync::watch::channel(view.clone());
        RateOwnerState { this_node: view.this_node.clone(), view: receiver, keys: HashMap::new(), members: Vec::new() }
    }

    fn ask(key_id: &str, rpm: u32, tpm: u32, want_tokens: u64, need_tokens: u64) -> wire::RateAsk {
        wire::RateAsk { key_id: key_id.into(), requests_per_minute: rpm, tokens_per_minute: tpm, want_requests: batch(rpm), want_tokens, need_tokens }
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_granted_in_part_down_to_the_need_then_refused_with_the_permits_given_back() {
        let mut state = owner(&ClusterView::alone("a", true));
        let now = Instant::now();
        let grant = state.grant(&ask("k", 60, 1_000, 800, 100), now);
        assert_eq!((grant.requests, grant.tokens, grant.limited_by.as_str()), (1, 800, ""));
        // 200 tokens left: a want of 800 gets the 200, enough for the need of 150.
        let grant = state.grant(&ask("k", 60, 1_000, 800, 150), now);
        assert_eq!((grant.requests, grant.tokens), (1, 200));
        // Nothing left for a need of 100: refused, and the permit it took is given back.
        let refused = state.grant(&ask("k", 60, 1_000, 100, 100), now);
        assert_eq!(refused.limited_by, "tokens per minute");
        assert!(refused.retry_after_ms > 0);
        let tat_before = state.keys["k"].requests.as_ref().map(|gcra| gcra.tat);
        let _refused_again = state.grant(&ask("k", 60, 1_000, 100, 100), now);
        assert_eq!(state.keys["k"].requests.as_ref().map(|gcra| gcra.tat), tat_before, "refusals take no permits");
    }

    #[test]
    fn a_node_that_does_not_own_the_key_says_who_does() {
        let view = ClusterView {
            this_node: "a".into(),
            clustered: true,
            alive: vec!["a".into(), "b".into(), "c".into()],
            members: Vec::new(),
        };
        let key = (0..100).map(|n| format!("key-{n}")).find(|key| owner_of(key, &view).as_deref() != Some("a")).unwrap_or_default();
        let mut state = owner(&view);
        let grant = state.grant(&ask(&key, 60, 0, 0, 0), Instant::now());
        assert_eq!(Some(grant.not_owner), owner_of(&key, &view));
        assert_eq!(grant.requests, 0);
    }

    #[test]
    fn batches_are_a_tenth_of_a_second_at_least_one() {
        assert_eq!(batch(60), 1);
        assert_eq!(batch(60_000), 100);
    }
}
