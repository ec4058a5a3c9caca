//! The `Router` actor: one per node. It holds the routing policy and the provider health views of
//! every node ([`HealthViews`]: this node's pools and, in a cluster, every other node's), and
//! publishes the policy with the combined health as an immutable [`RoutingSnapshot`] that request
//! tasks read without a round trip.
//!
//! In a cluster it joins the `pg` group [`wire::ROUTER_GROUP`] under `router@<node>`; every
//! node's pools send their health to each member, so a provider failing as seen from one node
//! is avoided by all (see [`crate::router::views`] for how views combine). Health travels as
//! encoded [`wire`] messages, from this node's pools too.

use std::sync::Arc;

use arc_swap::ArcSwap;
use foldhash::HashMapExt as _;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorClusterMessage;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cluster::wire;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::model::{ModelSelection, RoutingContext};
use crate::router::policy::{HealthTable, RoutingPolicy};
use crate::router::views::{HealthViews, STALE_AFTER};

/// What request tasks read: the policy and the health it is evaluated against.
#[derive(Debug)]
pub struct RoutingSnapshot {
    /// The routing policy.
    pub policy: Arc<RoutingPolicy>,
    /// Live health by provider, combined over the nodes.
    pub health: HealthTable,
}

impl RoutingSnapshot {
    /// Runs the policy against this snapshot's health.
    pub fn select(&self, context: &RoutingContext) -> Result<ModelSelection, GatewayError> {
        self.policy.select(context, &self.health)
    }
}

/// The actor; its state is [`RouterState`].
#[derive(Debug, Default)]
pub struct Router;

/// What the router starts with.
#[derive(Debug)]
pub struct RouterArgs {
    /// The routing policy.
    pub policy: Arc<RoutingPolicy>,
    /// Where snapshots are published.
    pub published: Arc<ArcSwap<RoutingSnapshot>>,
    /// This node's cluster name, when clustered (the router then joins the group).
    pub cluster_node: Option<String>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
}

/// The router's state.
#[derive(Debug)]
pub struct RouterState {
    policy: Arc<RoutingPolicy>,
    views: HealthViews,
    published: Arc<ArcSwap<RoutingSnapshot>>,
    this_node: String,
    clustered: bool,
    /// Providers open on another node at the last publish, to log changes.
    open_elsewhere: Vec<String>,
    metrics: Arc<Metrics>,
}

/// Messages to the router. Remote-capable: other nodes' pools send health here.
#[derive(Debug, RactorClusterMessage)]
pub enum RouterMessage {
    /// A pool's health: an encoded [`wire`] `ProviderHealth`, from this node or another.
    Health(Vec<u8>),
    /// Time to drop other nodes' views gone stale (this router's timer, in a cluster).
    Expire,
}

impl RouterState {
    fn publish(&mut self) {
        let now = Instant::now();
        let health = self.views.combined(now);
        if self.clustered {
            let mut open_elsewhere: Vec<String> = health
                .iter()
                .filter(|(_, combined)| !combined.available)
                .filter(|(provider, _)| self.views.nodes_of(provider).iter().any(|node| *node != self.this_node))
                .map(|(provider, _)| provider.clone())
                .collect();
            open_elsewhere.sort();
            if open_elsewhere != self.open_elsewhere {
                info!(providers = ?open_elsewhere, "providers unavailable as the cluster sees them");
                self.metrics.cluster_providers_open_elsewhere.set(i64::try_from(open_elsewhere.len()).unwrap_or(i64::MAX));
                self.open_elsewhere = open_elsewhere;
            }
        }
        self.published.store(Arc::new(RoutingSnapshot { policy: Arc::clone(&self.policy), health }));
    }
}

impl Actor for Router {
    type Msg = RouterMessage;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, args: RouterArgs) -> Result<RouterState, ActorProcessingErr> {
        let clustered = args.cluster_node.is_some();
        let this_node = args.cluster_node.unwrap_or_else(|| "local".to_owned());
        if clustered {
            ractor::pg::join(wire::ROUTER_GROUP.to_owned(), vec![myself.get_cell()]);
            myself.send_interval(STALE_AFTER / 3, || RouterMessage::Expire);
        }
        Ok(RouterState {
            policy: args.policy,
            views: HealthViews::new(&this_node),
            published: args.published,
            this_node,
            clustered,
            open_elsewhere: Vec::new(),
            metrics: args.metrics,
        })
    }

    async fn handle(&self, _myself: ActorRef<Self::Msg>, message: RouterMessage, state: &mut RouterState) -> Result<(), ActorProcessingErr> {
        match message {
            RouterMessage::Health(bytes) => match wire::decode::<wire::ProviderHealthMessage>("provider health", &bytes) {
                Ok(health) => {
                    let (node, health, idle) = wire::health_from_wire(health);
                    if node != state.this_node {
                        state.metrics.cluster_health_messages.with_label_values(&["received"]).inc();
                    }
                    state.views.record(node, health, idle, Instant::now());
                    state.publish();
                }
                Err(error) => warn!(%error, "provider health ignored"),
            },
            RouterMessage::Expire => {
                if state.views.expire(Instant::now()) {
                    state.publish();
                }
            }
        }
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, state: &mut RouterState) -> Result<(), ActorProcessingErr> {
        if state.clustered {
            ractor::pg::leave(wire::ROUTER_GROUP.to_owned(), vec![myself.get_cell()]);
        }
        Ok(())
    }
}

/// The router's address and its published snapshot.
#[derive(Clone, Debug)]
pub struct RouterHandle {
    /// The actor.
    pub actor: ActorRef<RouterMessage>,
    snapshot: Arc<ArcSwap<RoutingSnapshot>>,
}

impl RouterHandle {
    /// Spawns the router with `policy`; with `cluster_node` it joins the cluster's routers.
    pub async fn start(policy: RoutingPolicy, cluster_node: Option<&str>, metrics: Arc<Metrics>) -> anyhow::Result<(Self, ractor::ActorCell)> {
        use anyhow::Context as _;
        let policy = Arc::new(policy);
        let snapshot = Arc::new(ArcSwap::from_pointee(RoutingSnapshot { policy: Arc::clone(&policy), health: HealthTable::new() }));
        let name = cluster_node.map(|node| wire::actor_name("router", node));
        let args = RouterArgs { policy, published: Arc::clone(&snapshot), cluster_node: cluster_node.map(str::to_owned), metrics };
        let (actor, _join) = Actor::spawn(name, Router, args).await.context("failed to start the router")?;
        let cell = actor.get_cell();
        Ok((Self { actor, snapshot }, cell))
    }

    /// The latest published snapshot.
    pub fn snapshot(&self) -> Arc<RoutingSnapshot> {
        self.snapshot.load_full()
    }
}
