//! The `LeaseReplica` actor: one per clustered node with budgets. It keeps this node's copy of
//! every lease table the lines' owners broadcast, acknowledges the copies a standby must confirm,
//! tells a new owner what it knows of a line (its copy and this node's own share, from the book),
//! gives back unreserved allowance when an owner reclaims it, and every half second tells each
//! line's owner this node's spend on the lines it spent on (the owner alerts on the sum).
//!
//! It never waits on another node: owners wait on replicas, never the other way round, so two
//! owners asking each other's replicas cannot deadlock.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tracing::{debug, warn};

use crate::budget::budget::SharedBook;
use crate::budget::lease_owner::{LeaseOwnerMessage, line_id, owner_actor};
use crate::cluster::membership::ClusterView;
use crate::cluster::wire;

/// How often this node tells owners what it spent.
pub const SPEND_REPORT_EVERY: Duration = Duration::from_millis(500);

/// The actor; its state is [`ReplicaState`].
#[derive(Debug, Default)]
pub struct LeaseReplica;

/// What the replica starts with.
#[derive(Debug)]
pub struct ReplicaArgs {
    /// This node's name.
    pub this_node: String,
    /// This node's incarnation (its start time).
    pub incarnation: u64,
    /// The node's spend book (its own shares).
    pub book: SharedBook,
    /// Who is alive (to find a line's owner).
    pub view: tokio::sync::watch::Receiver<ClusterView>,
}

/// The replica's state.
#[derive(Debug)]
pub struct ReplicaState {
    args: ReplicaArgs,
    /// Copies by line id.
    tables: HashMap<String, wire::LeaseTableMessage>,
}

/// Messages to a replica; remote-capable, every payload an encoded [`wire`] message.
#[derive(Debug, RactorClusterMessage)]
pub enum LeaseReplicaMessage {
    /// A table copy ([`wire::LeaseTableMessage`]).
    Copy(Vec<u8>),
    /// A copy the standby acknowledges before the owner gives the grant out.
    #[rpc]
    Confirm(
        /// The encoded copy.
        Vec<u8>,
        /// Reply channel for RPC: empty once stored.
        RpcReplyPort<Vec<u8>>,
    ),
    /// A new owner's question ([`wire::LeaseReportAsk`]).
    #[rpc]
    Report(
        /// The encoded question.
        Vec<u8>,
        /// Reply channel for RPC: a [`wire::LeaseReport`].
        RpcReplyPort<Vec<u8>>,
    ),
    /// The owner wants unreserved allowance back ([`wire::LeaseReclaim`]).
    Reclaim(Vec<u8>),
    /// Time to tell owners what this node spent (local, from the timer).
    TellSpend,
}

impl ReplicaState {
    fn store(&mut self, bytes: &[u8]) -> Result<(), wire::WireError> {
        let copy: wire::LeaseTableMessage = wire::decode("lease table", bytes)?;
        let line = copy.line.as_ref().ok_or_else(|| wire::WireError { what: "lease table", cause: "no line".into() })?;
        let (line, period_key) = wire::line_from_wire(line)?;
        let id = line_id(&line, &period_key);
        if self.tables.get(&id).is_none_or(|held| held.version < copy.version) {
            self.tables.insert(id, copy);
        }
        Ok(())
    }

    fn report(&self, bytes: &[u8]) -> Result<Vec<u8>, wire::WireError> {
        let ask: wire::LeaseReportAsk = wire::decode("lease report", bytes)?;
        let line = ask.line.ok_or_else(|| wire::WireError { what: "lease report", cause: "no line".into() })?;
        let (parsed, period_key) = wire::line_from_wire(&line)?;
        let (spent, reserved, allowance) = crate::budget::budget::lock(&self.args.book).share(&parsed.scope, parsed.period, &period_key);
        let own = wire::LeaseShare {
            node: self.args.this_node.clone(),
            incarnation: self.args.incarnation,
            allowance_nano_usd: allowance.max(spent.plus(reserved)).0,
            spent_nano_usd: spent.0,
        };
        let table = self.tables.get(&line_id(&parsed, &period_key)).cloned();
        Ok(wire::encode(&wire::LeaseReport { table, own: Some(own) }))
    }

    fn reclaim(&self, bytes: &[u8]) -> Result<(), wire::WireError> {
        let ask: wire::LeaseReclaim = wire::decode("lease reclaim", bytes)?;
        let line = ask.line.ok_or_else(|| wire::WireError { what: "lease reclaim", cause: "no line".into() })?;
        let (parsed, period_key) = wire::line_from_wire(&line)?;
        let (spent, keep, had) = crate::budget::budget::lock(&self.args.book).give_back(&parsed.scope, parsed.period, &period_key);
        let give_back = wire::LeaseGiveBack { line: Some(line), node: self.args.this_node.clone(), spent_nano_usd: spent.0, keep_nano_usd: keep.0, from_nano_usd: had.0 };
        let view = self.args.view.borrow().clone();
        match owner_actor(&parsed.scope, &view) {
            Some(owner) => {
                let _gone = owner.cast(LeaseOwnerMessage::GiveBack(wire::encode(&give_back)));
            }
            None => debug!(line = %parsed.scope, "no owner to give an allowance back to"),
        }
        Ok(())
    }
}

impl ReplicaState {
    /// Sends each changed line's spend to its owner; a line without a reachable owner waits for
    /// the next turn.
    fn tell_spend(&self) {
        let lines = crate::budget::budget::lock(&self.args.book).take_unreported();
        if lines.is_empty() {
            return;
        }
        let view = self.args.view.borrow().clone();
        for (line, period_key, spent) in lines {
            match owner_actor(&line.scope, &view) {
                Some(owner) => {
                    let report = wire::LeaseSpent { line: Some(wire::line_to_wire(&line, &period_key)), node: self.args.this_node.clone(), spent_nano_usd: spent.0 };
                    let _gone = owner.cast(LeaseOwnerMessage::Spent(wire::encode(&report)));
                }
                None => crate::budget::budget::lock(&self.args.book).unreport(&line, &period_key),
            }
        }
    }
}

impl Actor for LeaseReplica {
    type Msg = LeaseReplicaMessage;
    type State = ReplicaState;
    type Arguments = ReplicaArgs;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, args: ReplicaArgs) -> Result<ReplicaState, ActorProcessingErr> {
        ractor::pg::join(wire::LEASE_REPLICA_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(ReplicaState { args, tables: HashMap::new() })
    }

    async fn post_start(&self, myself: ActorRef<Self::Msg>, _state: &mut ReplicaState) -> Result<(), ActorProcessingErr> {
        myself.send_interval(SPEND_REPORT_EVERY, || LeaseReplicaMessage::TellSpend);
        Ok(())
    }

    async fn handle(&self, _myself: ActorRef<Self::Msg>, message: LeaseReplicaMessage, state: &mut ReplicaState) -> Result<(), ActorProcessingErr> {
        let outcome = match message {
            LeaseReplicaMessage::Copy(bytes) => state.store(&bytes),
            LeaseReplicaMessage::Confirm(bytes, reply) => state.store(&bytes).map(|()| {
                let _gone = reply.send(Vec::new());
            }),
            LeaseReplicaMessage::Report(bytes, reply) => state.report(&bytes).map(|report| {
                let _gone = reply.send(report);
            }),
            LeaseReplicaMessage::Reclaim(bytes) => state.reclaim(&bytes),
            LeaseReplicaMessage::TellSpend => {
                state.tell_spend();
                Ok(())
            }
        };
        if let Err(error) = outcome {
            warn!(%error, "lease message ignored");
        }
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, _state: &mut ReplicaState) -> Result<(), ActorProcessingErr> {
        ractor::pg::leave(wire::LEASE_REPLICA_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(())
    }
}
