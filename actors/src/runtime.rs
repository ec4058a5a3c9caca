//! The node's root supervisor: the `Runtime` actor. [`NodeActors::start`] starts every actor of
//! the node and links each under it as soon as it is up, the runtime writes the semantic
//! cache's snapshots on their interval, and it stops everything at shutdown; the pipeline keeps
//! the handles only.
//!
//! Its policy is to escalate: an actor that fails (a panic in a handler is a bug) or stops on
//! its own leaves the node without a part the request path relies on, and its references are
//! held by every request task, so restarting it in place would leave them pointing at the dead
//! one. The runtime instead reports the failure ([`RuntimeHandle::failed`]); the node then drains,
//! flushes its ledger and snapshots, and exits non-zero for its own supervisor (systemd,
//! Kubernetes) to restart it whole, and its snapshots and ledger bring it back where it was.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::budget::{BudgetCluster, BudgetHandle};
use crate::budget::alert::AlertNotifier;
use crate::cache::semantic::{SemanticCache, SemanticClusterSettings};
use crate::cluster::membership::{ClusterView, Membership, MembershipArgs};
use crate::cluster::wire;
use crate::metrics::Metrics;
use crate::pipeline::GatewaySettings;
use crate::provider::ProviderHandle;
use crate::router::RouterHandle;
use crate::tenancy::rate_client::RateClient;
use crate::tenancy::rate_owner::RateOwner;

/// The actor; its state is [`RuntimeState`].
#[derive(Debug, Default)]
pub struct Runtime;

/// The runtime's state.
#[derive(Debug)]
pub struct RuntimeState {
    failure: watch::Sender<Option<String>>,
    /// Set by [`RuntimeHandle::stop`] before the children stop: their exits are then expected.
    /// Shared rather than a message because supervision events overtake ordinary messages.
    stopping: Arc<AtomicBool>,
    semantic: Option<SemanticCache>,
}

/// Messages to the runtime.
#[derive(Debug, RactorMessage)]
pub enum RuntimeMessage {
    /// Snapshot the semantic cache every `interval` from now on.
    SnapshotEvery {
        /// The layer.
        semantic: SemanticCache,
        /// How often.
        interval: Duration,
    },
    /// Time for a snapshot (the runtime's timer).
    Snapshot,
}

impl Actor for Runtime {
    type Msg = RuntimeMessage;
    type State = RuntimeState;
    type Arguments = (watch::Sender<Option<String>>, Arc<AtomicBool>);

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, (failure, stopping): Self::Arguments) -> Result<RuntimeState, ActorProcessingErr> {
        Ok(RuntimeState { failure, stopping, semantic: None })
    }

    async fn handle(&self, myself: ActorRef<Self::Msg>, message: RuntimeMessage, state: &mut RuntimeState) -> Result<(), ActorProcessingErr> {
        match message {
            RuntimeMessage::SnapshotEvery { semantic, interval } => {
                state.semantic = Some(semantic);
                myself.send_interval(interval, || RuntimeMessage::Snapshot);
            }
            RuntimeMessage::Snapshot => {
                if let Some(semantic) = state.semantic.clone().filter(|_| !state.stopping.load(Ordering::Relaxed)) {
                    // Off the mailbox: supervision events must not wait behind a snapshot.
                    tokio::spawn(async move {
                        let _logged = semantic.snapshot().await;
                    });
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(&self, _myself: ActorRef<Self::Msg>, event: SupervisionEvent, state: &mut RuntimeState) -> Result<(), ActorProcessingErr> {
        let failure = match event {
            SupervisionEvent::ActorFailed(actor, cause) => Some(format!("actor {} failed: {cause}", describe(&actor))),
            SupervisionEvent::ActorTerminated(actor, _, reason) if !state.stopping.load(Ordering::Relaxed) => {
                Some(format!("actor {} stopped unexpectedly ({})", describe(&actor), reason.as_deref().unwrap_or("no reason")))
            }
            _ => None,
        };
        if let Some(failure) = failure {
            error!(%failure, "a node actor is gone; the node shuts down to be restarted whole");
            state.failure.send_if_modified(|current| {
                let first = current.is_none();
                if first {
                    *current = Some(failure);
                }
                first
            });
        }
        Ok(())
    }
}

fn describe(actor: &ActorCell) -> String {
    actor.get_name().unwrap_or_else(|| actor.get_id().to_string())
}

/// The node's handle on its runtime.
#[derive(Debug, Clone)]
pub struct RuntimeHandle {
    actor: ActorRef<RuntimeMessage>,
    failure: watch::Receiver<Option<String>>,
    stopping: Arc<AtomicBool>,
}

impl RuntimeHandle {
    /// Starts the root supervisor.
    pub async fn start() -> anyhow::Result<Self> {
        let (sender, failure) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        let (actor, _join) = Actor::spawn(None, Runtime, (sender, Arc::clone(&stopping))).await?;
        Ok(Self { actor, failure, stopping })
    }

    /// Links `actors` under the runtime: their failure is the node's.
    pub fn adopt(&self, actors: impl IntoIterator<Item = ActorCell>) {
        for actor in actors {
            actor.link(self.actor.get_cell());
        }
    }

    /// Has the runtime snapshot `semantic` every `interval`.
    pub fn snapshot_every(&self, semantic: SemanticCache, interval: Duration) -> anyhow::Result<()> {
        Ok(self.actor.cast(RuntimeMessage::SnapshotEvery { semantic, interval })?)
    }

    /// Resolves with the first failure, if one happens.
    pub async fn failed(&self) -> String {
        let mut failure = self.failure.clone();
        loop {
            if let Some(failure) = failure.borrow_and_update().clone() {
                return failure;
            }
            if failure.changed().await.is_err() {
                // The runtime is gone without a failure: nothing more will be reported.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The first failure so far, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Stops every actor of the node and then the runtime.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Children stop concurrently, each after its current message.
        self.actor.stop_children_and_wait(Some("node shutting down".into()), Some(Duration::from_secs(10))).await;
        if let Err(error) = self.actor.stop_and_wait(Some("node shutting down".into()), Some(Duration::from_secs(5))).await {
            warn!(%error, "the runtime did not stop in time");
        }
        info!("node actors stopped");
    }
}

/// The handles of every actor of a node, as the pipeline holds them.
#[derive(Debug)]
pub struct NodeActors {
    /// The root supervisor they are linked under.
    pub runtime: RuntimeHandle,
    /// The router.
    pub router: RouterHandle,
    /// The budget actor and the ledger.
    pub budget: BudgetHandle,
    /// One pool per provider, by name.
    pub providers: foldhash::HashMap<String, ProviderHandle>,
    /// The semantic layer's shards, peer and placement, when the layer is on.
    pub semantic: Option<SemanticCache>,
    /// Who is in the cluster (this node alone without `[cluster]`).
    pub cluster_view: watch::Receiver<ClusterView>,
    /// The cluster's shared rate limits, when clustered.
    pub rates: Option<Arc<RateClient>>,
}

impl NodeActors {
    /// Starts the runtime, then the router, the budget actor (replaying the ledger), the
    /// membership, one pool per provider and the semantic layer, each linked under the runtime
    /// once started; a failure to start one stops the ones already up.
    pub async fn start(settings: &GatewaySettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let runtime = RuntimeHandle::start().await?;
        match Self::start_under(&runtime, settings, metrics).await {
            Ok(actors) => Ok(actors),
            Err(error) => {
                runtime.stop().await;
                Err(error)
            }
        }
    }

    async fn start_under(runtime: &RuntimeHandle, settings: &GatewaySettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let cluster_node = settings.cluster.as_ref().map(|cluster| cluster.membership.node_name.as_str());
        let (router, cell) = RouterHandle::start(settings.policy.clone(), cluster_node, Arc::clone(&metrics)).await?;
        runtime.adopt([cell]);
        let (view_sender, cluster_view) = watch::channel(ClusterView::alone(
            settings.cluster.as_ref().map_or("local", |cluster| cluster.membership.node_name.as_str()),
            settings.cluster.is_some(),
        ));
        let notifier = AlertNotifier::new(settings.alert_webhook.clone(), Arc::clone(&metrics));
        let budget_cluster = settings.cluster.as_ref().map(|cluster| BudgetCluster { this_node: cluster.membership.node_name.clone(), view: cluster_view.clone() });
        let (budget, cells) =
            BudgetHandle::start(settings.budget.clone(), &settings.ledger_path, settings.redis_ledger.as_ref(), notifier, budget_cluster, Arc::clone(&metrics)).await?;
        runtime.adopt(cells);
        if let Some(cluster) = &settings.cluster {
            let args = MembershipArgs { settings: cluster.membership.clone(), view: view_sender, metrics: Arc::clone(&metrics) };
            let (membership, _join) = Actor::spawn(Some(wire::actor_name("membership", &cluster.membership.node_name)), Membership, args).await?;
            runtime.adopt([membership.get_cell()]);
        }
        let rates = match &settings.cluster {
            None => None,
            Some(cluster) => {
                let node = cluster.membership.node_name.clone();
                let (owner, _join) = Actor::spawn(Some(wire::actor_name("rate-owner", &node)), RateOwner, (node, cluster_view.clone())).await?;
                runtime.adopt([owner.get_cell()]);
                Some(Arc::new(RateClient::new(cluster_view.clone(), Arc::clone(&metrics))))
            }
        };
        let mut providers = foldhash::HashMap::default();
        for provider in &settings.providers {
            let (handle, cell) = ProviderHandle::start(provider.clone(), router.actor.clone(), cluster_node, Arc::clone(&metrics)).await?;
            runtime.adopt([cell]);
            providers.insert(provider.name.clone(), handle);
        }
        let semantic = match &settings.semantic_cache {
            None => None,
            Some(semantic) => {
                let cluster = settings.cluster.as_ref().map(|cluster| SemanticClusterSettings {
                    this_node: cluster.membership.node_name.clone(),
                    replication: cluster.replication,
                    remote_lookup_timeout: cluster.remote_lookup_timeout,
                    handoff_grace: cluster.handoff_grace,
                    view: cluster_view.clone(),
                });
                let snapshot_interval = semantic.data_dir.is_some().then_some(semantic.snapshot_interval);
                let (cache, cells) = SemanticCache::start(semantic.clone(), cluster, Arc::clone(&metrics)).await?;
                runtime.adopt(cells);
                if let Some(interval) = snapshot_interval {
                    runtime.snapshot_every(cache.clone(), interval)?;
                }
                Some(cache)
            }
        };
        Ok(Self { runtime: runtime.clone(), router, budget, providers, semantic, cluster_view, rates })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An actor that panics on any message.
    struct Fragile;

    #[derive(Debug, RactorMessage)]
    struct Break;

    impl Actor for Fragile {
        type Msg = Break;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _myself: ActorRef<Break>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        #[expect(clippy::panic, reason = "the test needs a handler that panics")]
        async fn handle(&self, _myself: ActorRef<Break>, _message: Break, _state: &mut ()) -> Result<(), ActorProcessingErr> {
            panic!("broken on purpose");
        }
    }

    #[tokio::test]
    async fn a_failing_actor_is_reported_and_a_shutdown_is_not() {
        let runtime = RuntimeHandle::start().await.expect("runtime starts");
        let (fragile, _join) = Actor::spawn(None, Fragile, ()).await.expect("spawns");
        let (calm, _join) = Actor::spawn(None, Fragile, ()).await.expect("spawns");
        runtime.adopt([fragile.get_cell(), calm.get_cell()]);
        assert_eq!(runtime.failure(), None);
        fragile.cast(Break).expect("sent");
        let failure = tokio::time::timeout(Duration::from_secs(5), runtime.failed()).await.expect("reported");
        assert!(failure.contains("failed") && failure.contains("broken on purpose"), "{failure}");

        let second = RuntimeHandle::start().await.expect("runtime starts");
        let (calm, _join) = Actor::spawn(None, Fragile, ()).await.expect("spawns");
        second.adopt([calm.get_cell()]);
        second.stop().await;
        assert_eq!(calm.get_status(), ractor::ActorStatus::Stopped);
        assert_eq!(second.failure(), None, "stopping the node is not a failure");
        runtime.stop().await;
    }

    #[tokio::test]
    async fn an_actor_stopping_on_its_own_is_a_failure() {
        let runtime = RuntimeHandle::start().await.expect("runtime starts");
        let (quitter, _join) = Actor::spawn(Some("quitter".into()), Fragile, ()).await.expect("spawns");
        runtime.adopt([quitter.get_cell()]);
        quitter.stop(Some("gave up".into()));
        let failure = tokio::time::timeout(Duration::from_secs(5), runtime.failed()).await.expect("reported");
        assert!(failure.contains("quitter") && failure.contains("gave up"), "{failure}");
        runtime.stop().await;
    }
}
