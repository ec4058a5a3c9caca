//! The `ProviderPool` actor: one per configured provider per node. It is the single writer of the
//! provider's circuit breaker and health, and publishes health to this node's router and, in a
//! cluster, to every other node's (the members of [`wire::ROUTER_GROUP`]), repeating it every
//! [`REPEAT_EVERY`] so their views of this node stay fresh.
//!
//! It never waits on the network. Request tasks hold a [`ProviderHandle`]: while the breaker is
//! closed (read from a shared flag, no round trip) they take a concurrency slot and call the
//! upstream themselves; only while it is open or half-open do they ask the actor for admission.
//! Every attempt's outcome comes back to the actor as a cast.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cluster::wire;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::provider::breaker::{Admission, BreakerState, CircuitBreaker};
use crate::provider::client::ProviderClient;
use crate::provider::health::{AttemptSample, HealthTracker};
use crate::provider::{ProviderError, ProviderSettings};
use crate::router::RouterMessage;
use crate::router::views::REPEAT_EVERY;

/// The actor. It holds no settings of its own: everything lives in [`PoolState`].
#[derive(Debug, Default)]
pub struct ProviderPool;

/// What the pool is started with.
#[derive(Debug)]
pub struct PoolArgs {
    /// The provider's settings.
    pub settings: Arc<ProviderSettings>,
    /// This node's router.
    pub router: ActorRef<RouterMessage>,
    /// This node's cluster name, when clustered: health then goes to every node's router.
    pub cluster_node: Option<String>,
    /// Shared with every [`ProviderHandle`]: true while the breaker is closed.
    pub breaker_closed: Arc<AtomicBool>,
    /// Shared with every [`ProviderHandle`]: attempts' outcomes waiting for the pool.
    pub outcomes: Arc<Outbox<Outcome>>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
}

/// The outcome of one attempt, as its ticket reports it.
#[derive(Debug)]
pub struct Outcome {
    /// What the attempt tells about health.
    sample: AttemptSample,
    /// Whether it was the half-open probe.
    probe: bool,
}

/// The pool's state.
#[derive(Debug)]
pub struct PoolState {
    settings: Arc<ProviderSettings>,
    breaker: CircuitBreaker,
    health: HealthTracker,
    router: ActorRef<RouterMessage>,
    /// The node name health is sent under, and whether other nodes get it.
    node: String,
    clustered: bool,
    breaker_closed: Arc<AtomicBool>,
    outcomes: Arc<Outbox<Outcome>>,
    metrics: Arc<Metrics>,
    /// When the last attempt's outcome arrived.
    last_attempt: Option<Instant>,
    /// When health last went to the router.
    last_published: Option<Instant>,
    /// Whether a `PublishHealth` is already on its way.
    flush_scheduled: bool,
}

/// Health goes to the router at most this often under load; each publish clones the table.
const HEALTH_PUBLISH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Messages to a pool.
#[derive(Debug, RactorMessage)]
pub enum PoolMessage {
    /// Asks whether an attempt may go out while the breaker is not closed.
    Admit(
        /// Reply channel for RPC: the breaker's verdict.
        RpcReplyPort<Admission>,
    ),
    /// Outcomes of attempts are waiting in the outbox (see [`crate::outbox`]). Every message
    /// takes them first; this one only wakes the pool for them.
    Outcomes,
    /// Takes the outbox now, publishes health and replies: what a reader of the pool's metrics
    /// asks first.
    Flush(
        /// Reply channel for RPC: done.
        RpcReplyPort<()>,
    ),
    /// A probe's request was dropped before it could report.
    ProbeAbandoned,
    /// The breaker's cool-down has passed: advertise the provider as available so a probe comes.
    CoolDownElapsed,
    /// Sends health samples held back by the publish interval.
    PublishHealth,
    /// Time to repeat health to the other nodes (in a cluster).
    Repeat,
}

impl PoolState {
    /// Records every outcome waiting in the outbox.
    fn record_outcomes(&mut self) {
        let outcomes = self.outcomes.take();
        if outcomes.is_empty() {
            return;
        }
        let now = Instant::now();
        for Outcome { sample, probe } in outcomes {
            self.breaker.record(sample.failed, probe, now);
            self.health.record(&sample);
        }
        self.last_attempt = Some(now);
    }

    /// Publishes the breaker state at once, and health to the router at most once per
    /// [`HEALTH_PUBLISH_INTERVAL`] (a flush is scheduled for samples in between), unless the
    /// breaker changed state or `force` is set.
    fn publish(&mut self, myself: &ActorRef<PoolMessage>, before: BreakerState, force: bool) {
        let state = self.breaker.state();
        let name = &self.settings.name;
        self.breaker_closed.store(state == BreakerState::Closed, Ordering::Release);
        self.metrics.circuit_state.with_label_values(&[name]).set(state.gauge());
        if std::mem::discriminant(&before) != std::mem::discriminant(&state) {
            match state {
                BreakerState::Open { .. } => {
                    warn!(provider = %name, "circuit opened");
                    self.health.set_available(false);
                    let cool_down = self.settings.breaker.cool_down;
                    myself.send_after(cool_down, || PoolMessage::CoolDownElapsed);
                }
                BreakerState::Closed => {
                    info!(provider = %name, "circuit closed");
                    self.health.set_available(true);
                }
                BreakerState::HalfOpen { .. } => {}
            }
        }
        let urgent = std::mem::discriminant(&before) != std::mem::discriminant(&state) || force;
        let due = self.last_published.is_none_or(|last| last.elapsed() >= HEALTH_PUBLISH_INTERVAL);
        if urgent || due {
            self.send_health();
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            myself.send_after(HEALTH_PUBLISH_INTERVAL, || PoolMessage::PublishHealth);
        }
    }

    /// Sends the current health to the gauges, this node's router and, in a cluster, every
    /// other node's.
    fn send_health(&mut self) {
        let now = Instant::now();
        self.last_published = Some(now);
        let health = self.health.health();
        self.metrics.publish_health(health);
        let idle = self.last_attempt.map(|last| now.saturating_duration_since(last));
        let bytes = wire::encode(&wire::health_to_wire(&self.node, health, idle));
        if self.clustered {
            for router in ractor::pg::get_members(&wire::ROUTER_GROUP.to_owned()).into_iter().filter(|member| !member.get_id().is_local()) {
                let router: ActorRef<RouterMessage> = router.into();
                if router.cast(RouterMessage::Health(bytes.clone())).is_ok() {
                    self.metrics.cluster_health_messages.with_label_values(&["sent"]).inc();
                }
            }
        }
        if let Err(error) = self.router.cast(RouterMessage::Health(bytes)) {
            warn!(provider = %self.settings.name, %error, "router gone; health not published");
        }
    }
}

impl Actor for ProviderPool {
    type Msg = PoolMessage;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, args: PoolArgs) -> Result<PoolState, ActorProcessingErr> {
        let mut state = PoolState {
            breaker: CircuitBreaker::new(args.settings.breaker.clone()),
            health: HealthTracker::new(&args.settings.name),
            settings: args.settings,
            router: args.router,
            clustered: args.cluster_node.is_some(),
            node: args.cluster_node.unwrap_or_else(|| "local".to_owned()),
            breaker_closed: args.breaker_closed,
            outcomes: args.outcomes,
            metrics: args.metrics,
            last_attempt: None,
            last_published: None,
            flush_scheduled: false,
        };
        if state.clustered {
            myself.send_interval(REPEAT_EVERY, || PoolMessage::Repeat);
        }
        state.publish(&myself, BreakerState::Closed, true);
        Ok(state)
    }

    async fn handle(&self, myself: ActorRef<Self::Msg>, message: PoolMessage, state: &mut PoolState) -> Result<(), ActorProcessingErr> {
        let before = state.breaker.state();
        let mut force = false;
        let mut flushed = None;
        state.record_outcomes();
        match message {
            PoolMessage::Admit(reply) => {
                let admission = state.breaker.admit(Instant::now());
                // The caller may have given up waiting; nothing to undo then but a probe.
                if reply.send(admission).is_err() && admission == Admission::Probe {
                    state.breaker.probe_abandoned();
                }
            }
            PoolMessage::Outcomes => {}
            PoolMessage::Flush(reply) => {
                force = true;
                flushed = Some(reply);
            }
            PoolMessage::ProbeAbandoned => state.breaker.probe_abandoned(),
            PoolMessage::CoolDownElapsed => {
                if matches!(state.breaker.state(), BreakerState::Open { .. }) {
                    state.health.set_available(true);
                    force = true;
                }
            }
            PoolMessage::PublishHealth => {
                state.flush_scheduled = false;
                force = true;
            }
            PoolMessage::Repeat => force = true,
        }
        state.publish(&myself, before, force);
        if let Some(reply) = flushed {
            let _caller_gone = reply.send(());
        }
        Ok(())
    }
}

/// What request tasks hold to call one provider. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ProviderHandle {
    /// The HTTP client.
    pub client: ProviderClient,
    slots: Arc<Semaphore>,
    breaker_closed: Arc<AtomicBool>,
    outcomes: Arc<Outbox<Outcome>>,
    actor: ActorRef<PoolMessage>,
}

impl ProviderHandle {
    /// Spawns the provider's pool actor and returns the handle to it; `cluster_node` names this
    /// node when it is clustered.
    pub async fn start(
        settings: ProviderSettings,
        router: ActorRef<RouterMessage>,
        cluster_node: Option<&str>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Self, ractor::ActorCell)> {
        use anyhow::Context as _;
        let settings = Arc::new(settings);
        let client = ProviderClient::new(Arc::clone(&settings))
            .with_context(|| format!("failed to build the HTTP client of provider \"{}\"", settings.name))?;
        let breaker_closed = Arc::new(AtomicBool::new(true));
        let outcomes = Arc::new(Outbox::default());
        let args = PoolArgs {
            settings: Arc::clone(&settings),
            router,
            cluster_node: cluster_node.map(str::to_owned),
            breaker_closed: Arc::clone(&breaker_closed),
            outcomes: Arc::clone(&outcomes),
            metrics,
        };
        let (actor, _join) = Actor::spawn(None, ProviderPool, args)
            .await
            .with_context(|| format!("failed to start the pool of provider \"{}\"", settings.name))?;
        let cell = actor.get_cell();
        let slots = Arc::new(Semaphore::new(settings.max_concurrent));
        Ok((Self { client, slots, breaker_closed, outcomes, actor }, cell))
    }

    /// Waits (up to [`crate::outbox::FLUSH_WAIT_MS`]) until the pool has taken every outcome reported so far
    /// and published its health.
    pub async fn flush(&self) {
        let _stopped_or_slow = ractor::call_t!(self.actor, PoolMessage::Flush, crate::outbox::FLUSH_WAIT_MS);
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.client.settings().name
    }

    /// Waits for the breaker's consent and a concurrency slot. The caller bounds the wait.
    pub async fn admit(&self) -> Result<AttemptTicket, ProviderError> {
        let probe = if self.breaker_closed.load(Ordering::Acquire) {
            false
        } else {
            match ractor::call!(self.actor, PoolMessage::Admit) {
                Ok(Admission::Allowed) => false,
                Ok(Admission::Probe) => true,
                Ok(Admission::Rejected) | Err(_) => return Err(ProviderError::CircuitOpen),
            }
        };
        let mut ticket = AttemptTicket { actor: self.actor.clone(), outcomes: Arc::clone(&self.outcomes), probe, reported: false, _slot: None };
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_closed| ProviderError::Connect("provider pool closed".into()))?;
        ticket._slot = Some(slot);
        Ok(ticket)
    }
}

/// Permission for one attempt: holds a concurrency slot and reports the outcome. Dropped
/// without a report (the request was cancelled), it frees a half-open probe for the next caller.
#[derive(Debug)]
pub struct AttemptTicket {
    actor: ActorRef<PoolMessage>,
    outcomes: Arc<Outbox<Outcome>>,
    probe: bool,
    reported: bool,
    _slot: Option<OwnedSemaphorePermit>,
}

impl AttemptTicket {
    /// Reports the attempt's outcome to the pool and frees the slot.
    pub fn report(mut self, sample: AttemptSample) {
        self.reported = true;
        let urgent = sample.failed || self.probe;
        self.outcomes.deliver(Outcome { sample, probe: self.probe }, urgent, &self.actor, || PoolMessage::Outcomes);
    }
}

impl Drop for AttemptTicket {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            let _gone = self.actor.cast(PoolMessage::ProbeAbandoned);
        }
    }
}
