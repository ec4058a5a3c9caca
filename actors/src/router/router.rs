//! The `Router` actor: one per node. It holds the routing policy and the provider health table
//! (fed by every `ProviderPool`), and publishes both as an immutable [`RoutingSnapshot`] that
//! request tasks read without a round trip. It answers `Route` calls too, for callers that hold
//! only its address.

use std::sync::Arc;

use arc_swap::ArcSwap;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;

use crate::error::GatewayError;
use crate::model::{ModelSelection, RoutingContext};
use crate::provider::health::ProviderHealth;
use crate::router::policy::{HealthTable, RoutingPolicy};

/// What request tasks read: the policy and the health it is evaluated against.
#[derive(Debug)]
pub struct RoutingSnapshot {
    /// The routing policy.
    pub policy: Arc<RoutingPolicy>,
    /// Live health by provider.
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

/// The router's state.
#[derive(Debug)]
pub struct RouterState {
    policy: Arc<RoutingPolicy>,
    health: HealthTable,
    published: Arc<ArcSwap<RoutingSnapshot>>,
}

/// Messages to the router.
#[derive(Debug, RactorMessage)]
pub enum RouterMessage {
    /// A provider's current health, from its pool.
    Health(ProviderHealth),
    /// Decides the model for a request.
    Route(
        RoutingContext,
        /// Reply channel for RPC: the selection or why there is none.
        RpcReplyPort<Result<ModelSelection, GatewayError>>,
    ),
}

impl Actor for Router {
    type Msg = RouterMessage;
    type State = RouterState;
    type Arguments = (Arc<RoutingPolicy>, Arc<ArcSwap<RoutingSnapshot>>);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (policy, published): Self::Arguments,
    ) -> Result<RouterState, ActorProcessingErr> {
        Ok(RouterState { policy, health: HealthTable::new(), published })
    }

    async fn handle(&self, _myself: ActorRef<Self::Msg>, message: RouterMessage, state: &mut RouterState) -> Result<(), ActorProcessingErr> {
        match message {
            RouterMessage::Health(health) => {
                state.health.insert(health.provider.clone(), health);
                state.published.store(Arc::new(RoutingSnapshot {
                    policy: Arc::clone(&state.policy),
                    health: state.health.clone(),
                }));
            }
            RouterMessage::Route(context, reply) => {
                let _caller_gone = reply.send(state.policy.select(&context, &state.health));
            }
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
    /// Spawns the router with `policy`.
    pub async fn start(policy: RoutingPolicy) -> anyhow::Result<(Self, ractor::ActorCell)> {
        use anyhow::Context as _;
        let policy = Arc::new(policy);
        let snapshot = Arc::new(ArcSwap::from_pointee(RoutingSnapshot { policy: Arc::clone(&policy), health: HealthTable::new() }));
        let (actor, _join) = Actor::spawn(None, Router, (policy, Arc::clone(&snapshot)))
            .await
            .context("failed to start the router")?;
        let cell = actor.get_cell();
        Ok((Self { actor, snapshot }, cell))
    }

    /// The latest published snapshot.
    pub fn snapshot(&self) -> Arc<RoutingSnapshot> {
        self.snapshot.load_full()
    }
}
