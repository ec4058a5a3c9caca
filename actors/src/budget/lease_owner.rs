//! The `LeaseOwner` actor: one per clustered node with budgets. For the lines whose scope this
//! node owns (the top alive member by the ring's hash of the scope), it holds the authoritative
//! [`LeaseTable`] and answers nodes asking for allowance (see [`crate::budget::lease`]).
//!
//! A grant is given out only once the line's standby (the second member by the same hash) has
//! confirmed its copy of the table; every other node's replica gets the copy as a cast. When the
//! members change, the owner rebuilds a line's table before its next grant: the newest copy any
//! replica holds, raised by every live node's own word on its share. When what is left does not
//! cover a request, the owner asks the nodes holding unreserved allowance to give it back.
//!
//! Nodes report their spend on a line to its owner as they spend; the owner alerts when the
//! cluster's spend crosses a threshold (once per period, the alerted thresholds copied with the
//! table) and exports the line's utilisation. Once a second it drops the tables of lines it no
//! longer owns and of periods that ended, with their gauges.
//!
//! It waits only on replicas (which never wait), with short timeouts.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tracing::{debug, info, warn};

use crate::budget::alert::AlertNotifier;
use crate::budget::book::Alert;
use crate::budget::lease::{LeaseAnswer, LeaseAsk, LeaseTable};
use crate::budget::lease_replica::LeaseReplicaMessage;
use crate::budget::period::now_ms;
use crate::budget::{BudgetLine, NanoUsd, Scope};
use crate::cluster::membership::ClusterView;
use crate::cluster::{ring, wire};
use crate::metrics::Metrics;

/// How long the owner waits for the standby's confirmation or a replica's report.
const REPLICA_TIMEOUT: Duration = Duration::from_millis(500);

/// The key a scope's owner is chosen by.
pub fn scope_key(scope: &Scope) -> String {
    match scope {
        Scope::User { tenant, user } => format!("budget:user:{tenant}/{user}"),
        Scope::Tenant(tenant) => format!("budget:tenant:{tenant}"),
    }
}

/// One line in one period, as tables are keyed.
pub fn line_id(line: &BudgetLine, period_key: &str) -> String {
    format!("{}|{}|{period_key}", scope_key(&line.scope), line.period.as_str())
}

/// The owner and the standby of `scope` among the alive members, as this node sees them.
pub fn owners(scope: &Scope, view: &ClusterView) -> Vec<String> {
    ring::owners_of_key(&scope_key(scope), &view.alive, 2).into_iter().map(str::to_owned).collect()
}

/// The owner actor of `scope`, if this node has a session with it (or it is this node's).
pub fn owner_actor(scope: &Scope, view: &ClusterView) -> Option<ActorRef<LeaseOwnerMessage>> {
    let owner = owners(scope, view).into_iter().next()?;
    member(wire::LEASE_OWNER_GROUP, &owner).map(Into::into)
}

/// The member of `group` living on `node`.
pub fn member(group: &str, node: &str) -> Option<ractor::ActorCell> {
    ractor::pg::get_members(&group.to_owned()).into_iter().find(|cell| cell.get_name().is_some_and(|name| wire::node_of(&name) == Some(node)))
}

/// The actor; its state is [`OwnerState`].
#[derive(Debug, Default)]
pub struct LeaseOwner;

/// What the owner starts with.
#[derive(Debug)]
pub struct OwnerArgs {
    /// This node's name.
    pub this_node: String,
    /// Who is alive.
    pub view: tokio::sync::watch::Receiver<ClusterView>,
    /// The node's metrics.
    pub metrics: std::sync::Arc<Metrics>,
    /// Where budget alerts go.
    pub notifier: AlertNotifier,
    /// Alert thresholds, in percent of a limit.
    pub thresholds: Vec<u32>,
}

#[derive(Debug)]
struct Owned {
    line: wire::BudgetLineMessage,
    /// The line as the budgets know it, and its period's key.
    parsed: (BudgetLine, String),
    table: LeaseTable,
    /// The alive members when the table was last rebuilt: a change means another node may
    /// have owned the line meanwhile.
    members: Vec<String>,
    /// The newest version the standby confirmed: an allowance is given out only once its
    /// version is confirmed (a grant whose confirmation failed is confirmed on the next ask).
    confirmed: u64,
}

/// The owner's state.
#[derive(Debug)]
pub struct OwnerState {
    args: OwnerArgs,
    tables: HashMap<String, Owned>,
}

/// Messages to an owner; remote-capable, every payload an encoded [`wire`] message.
#[derive(Debug, RactorClusterMessage)]
pub enum LeaseOwnerMessage {
    /// A node asks for allowance ([`wire::LeaseAsk`]).
    #[rpc]
    Ask(
        /// The encoded ask.
        Vec<u8>,
        /// Reply channel for RPC: a [`wire::LeaseReply`].
        RpcReplyPort<Vec<u8>>,
    ),
    /// A node gives allowance back ([`wire::LeaseGiveBack`]).
    GiveBack(Vec<u8>),
    /// A node's spend on a line ([`wire::LeaseSpent`]).
    Spent(Vec<u8>),
    /// Time to drop lines no longer owned and periods that ended (local, from the timer).
    Prune,
}

fn reply(answer: wire::lease_reply::Answer) -> Vec<u8> {
    wire::encode(&wire::LeaseReply { answer: Some(answer) })
}

fn replicas() -> Vec<ActorRef<LeaseReplicaMessage>> {
    ractor::pg::get_members(&wire::LEASE_REPLICA_GROUP.to_owned()).into_iter().map(Into::into).collect()
}

impl OwnerState {
    /// Makes the table of `id` current: rebuilt from every replica's report when this node has
    /// none or the members changed since it last had it.
    async fn rebuild_if_stale(&mut self, id: &str, line: &wire::BudgetLineMessage, parsed: (BudgetLine, String), alive: &[String]) {
        let limit = parsed.0.limit.unwrap_or_default();
        let current = self.tables.get(id).is_some_and(|owned| owned.members == alive);
        if !current {
            let mut table = self.tables.remove(id).map_or_else(|| LeaseTable::new(limit), |owned| owned.table);
            let ask = wire::encode(&wire::LeaseReportAsk { line: Some(line.clone()) });
            let mut reports = Vec::new();
            for replica in replicas() {
                match ractor::call_t!(replica, |port| LeaseReplicaMessage::Report(ask.clone(), port), REPLICA_TIMEOUT.as_millis() as u64) {
                    Ok(bytes) => match wire::decode::<wire::LeaseReport>("lease report", &bytes) {
                        Ok(report) => reports.push(report),
                        Err(error) => warn!(%error, "lease report ignored"),
                    },
                    Err(error) => debug!(%error, "a replica did not report"),
                }
            }
            let had_table = table.version > 0 || reports.iter().any(|report| report.table.is_some());
            for report in &reports {
                if let Some(copy) = &report.table {
                    table.merge(&wire::table_from_wire(copy, limit));
                }
            }
            for own in reports.iter().filter_map(|report| report.own.as_ref()) {
                table.assert_share(&own.node, own.incarnation, NanoUsd(own.spent_nano_usd.max(0)), NanoUsd(own.allowance_nano_usd.max(0)));
            }
            table.limit = limit;
            if !had_table {
                // Spend from before any table existed (a cluster restarted whole, as one node
                // restarted does) was alerted when it was spent.
                let _already = table.crossed(&self.args.thresholds);
            }
            info!(line = id, reports = reports.len(), committed = %table.committed(), "lease table rebuilt");
            self.tables.insert(id.to_owned(), Owned { line: line.clone(), parsed, table, members: alive.to_vec(), confirmed: 0 });
        }
    }

    async fn ask(&mut self, bytes: &[u8]) -> Result<Vec<u8>, wire::WireError> {
        let ask: wire::LeaseAsk = wire::decode("lease ask", bytes)?;
        let line_message = ask.line.clone().ok_or_else(|| wire::WireError { what: "lease ask", cause: "no line".into() })?;
        let (line, period_key) = wire::line_from_wire(&line_message)?;
        let view = self.args.view.borrow().clone();
        let owners = owners(&line.scope, &view);
        if owners.first() != Some(&self.args.this_node) {
            return Ok(reply(wire::lease_reply::Answer::NotOwner(owners.first().cloned().unwrap_or_default())));
        }
        let id = line_id(&line, &period_key);
        let members = view.alive.len();
        let this_node = self.args.this_node.clone();
        self.rebuild_if_stale(&id, &line_message, (line.clone(), period_key), &view.alive).await;
        let Some(owned) = self.tables.get_mut(&id) else { unreachable!("rebuilt above") };
        let request = LeaseAsk {
            node: ask.node.clone(),
            incarnation: ask.incarnation,
            spent: NanoUsd(ask.spent_nano_usd.max(0)),
            reserved: NanoUsd(ask.reserved_nano_usd.max(0)),
            needed: NanoUsd(ask.needed_nano_usd.max(0)),
        };
        let answer = owned.table.grant(&request, members);
        alert(owned, &self.args);
        let unconfirmed = owned.table.version > owned.confirmed;
        let version = owned.table.version;
        let copy = wire::table_to_wire(owned.line.clone(), &owned.table, false);
        let holders: Vec<String> = owned.table.nodes.iter().filter(|(node, share)| **node != ask.node && share.allowance > share.spent).map(|(node, _)| node.clone()).collect();
        match answer {
            LeaseAnswer::Granted(allowance) => {
                if unconfirmed {
                    if let Some(standby) = owners.get(1).filter(|standby| **standby != this_node) {
                        let confirm = wire::encode(&wire::LeaseTableMessage { confirm: true, ..copy.clone() });
                        let confirmed = match member(wire::LEASE_REPLICA_GROUP, standby) {
                            Some(replica) => {
                                let replica: ActorRef<LeaseReplicaMessage> = replica.into();
                                ractor::call_t!(replica, |port| LeaseReplicaMessage::Confirm(confirm, port), REPLICA_TIMEOUT.as_millis() as u64).is_ok()
                            }
                            None => false,
                        };
                        if !confirmed {
                            // The grant stays counted (it can only make the budget look more used),
                            // but is not given out: the asker retries.
                            warn!(line = %id, %standby, "the standby did not confirm a lease grant");
                            return Ok(reply(wire::lease_reply::Answer::NotOwner(format!("standby {standby} did not confirm"))));
                        }
                    }
                    let bytes = wire::encode(&copy);
                    for replica in replicas() {
                        let _gone = replica.cast(LeaseReplicaMessage::Copy(bytes.clone()));
                    }
                    if let Some(owned) = self.tables.get_mut(&id) {
                        owned.confirmed = version;
                    }
                    self.args.metrics.budget_lease_grants.inc();
                }
                Ok(reply(wire::lease_reply::Answer::GrantedNanoUsd(allowance.0)))
            }
            LeaseAnswer::Exhausted { spent, held } => {
                if held > NanoUsd::ZERO {
                    let reclaim = wire::encode(&wire::LeaseReclaim { line: Some(line_message) });
                    for node in &holders {
                        if let Some(replica) = member(wire::LEASE_REPLICA_GROUP, node) {
                            let replica: ActorRef<LeaseReplicaMessage> = replica.into();
                            let _gone = replica.cast(LeaseReplicaMessage::Reclaim(reclaim.clone()));
                        }
                    }
                }
                Ok(reply(wire::lease_reply::Answer::Exhausted(wire::LeaseExhausted { spent_nano_usd: spent.0, held_nano_usd: held.0 })))
            }
        }
    }

    fn give_back(&mut self, bytes: &[u8]) -> Result<(), wire::WireError> {
        let give_back: wire::LeaseGiveBack = wire::decode("lease give-back", bytes)?;
        let line = give_back.line.ok_or_else(|| wire::WireError { what: "lease give-back", cause: "no line".into() })?;
        let (line, period_key) = wire::line_from_wire(&line)?;
        if let Some(owned) = self.tables.get_mut(&line_id(&line, &period_key)) {
            owned.table.give_back(
                &give_back.node,
                NanoUsd(give_back.spent_nano_usd.max(0)),
                NanoUsd(give_back.keep_nano_usd.max(0)),
                NanoUsd(give_back.from_nano_usd.max(0)),
            );
            copy_to_replicas(owned);
        }
        Ok(())
    }

    async fn spent(&mut self, bytes: &[u8]) -> Result<(), wire::WireError> {
        let spent: wire::LeaseSpent = wire::decode("lease spend report", bytes)?;
        let line_message = spent.line.ok_or_else(|| wire::WireError { what: "lease spend report", cause: "no line".into() })?;
        let (line, period_key) = wire::line_from_wire(&line_message)?;
        let view = self.args.view.borrow().clone();
        if owners(&line.scope, &view).first() != Some(&self.args.this_node) {
            debug!(line = %line.scope, node = %spent.node, "a spend report for a line this node does not own");
            return Ok(());
        }
        let id = line_id(&line, &period_key);
        self.rebuild_if_stale(&id, &line_message, (line, period_key), &view.alive).await;
        let Some(owned) = self.tables.get_mut(&id) else { unreachable!("rebuilt above") };
        owned.table.report_spent(&spent.node, NanoUsd(spent.spent_nano_usd.max(0)));
        let version = owned.table.version;
        alert(owned, &self.args);
        if owned.table.version != version {
            copy_to_replicas(owned);
        }
        Ok(())
    }

    /// Drops the tables of lines this node no longer owns and of periods that ended, and their
    /// utilisation gauges.
    fn prune(&mut self) {
        let view = self.args.view.borrow().clone();
        let now = now_ms();
        let this_node = &self.args.this_node;
        let metrics = &self.args.metrics;
        self.tables.retain(|_, owned| {
            let (line, period_key) = &owned.parsed;
            let keep = *period_key == line.period.key(now) && owners(&line.scope, &view).first() == Some(this_node);
            if !keep {
                let _absent = metrics.budget_utilisation.remove_label_values(&[&line.scope.to_string(), line.period.as_str()]);
            }
            keep
        });
    }
}

/// Alerts the thresholds the cluster's spend on `owned` crossed, and sets its utilisation gauge.
fn alert(owned: &mut Owned, args: &OwnerArgs) {
    let (line, period_key) = &owned.parsed;
    let limit = owned.table.limit;
    let spent = owned.table.spent();
    if limit.0 > 0 {
        args.metrics.budget_utilisation.with_label_values(&[&line.scope.to_string(), line.period.as_str()]).set(spent.0 as f64 / limit.0 as f64);
    }
    for threshold_percent in owned.table.crossed(&args.thresholds) {
        args.notifier.notify(Alert { scope: line.scope.clone(), period: line.period, period_key: period_key.clone(), threshold_percent, spent, limit });
    }
}

/// Sends the table to every node's replica.
fn copy_to_replicas(owned: &Owned) {
    let bytes = wire::encode(&wire::table_to_wire(owned.line.clone(), &owned.table, false));
    for replica in replicas() {
        let _gone = replica.cast(LeaseReplicaMessage::Copy(bytes.clone()));
    }
}

impl Actor for LeaseOwner {
    type Msg = LeaseOwnerMessage;
    type State = OwnerState;
    type Arguments = OwnerArgs;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, args: OwnerArgs) -> Result<OwnerState, ActorProcessingErr> {
        ractor::pg::join(wire::LEASE_OWNER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(OwnerState { args, tables: HashMap::new() })
    }

    async fn post_start(&self, myself: ActorRef<Self::Msg>, _state: &mut OwnerState) -> Result<(), ActorProcessingErr> {
        myself.send_interval(Duration::from_secs(1), || LeaseOwnerMessage::Prune);
        Ok(())
    }

    async fn handle(&self, _myself: ActorRef<Self::Msg>, message: LeaseOwnerMessage, state: &mut OwnerState) -> Result<(), ActorProcessingErr> {
        match message {
            LeaseOwnerMessage::Ask(bytes, port) => match state.ask(&bytes).await {
                Ok(answer) => {
                    let _gone = port.send(answer);
                }
                Err(error) => {
                    warn!(%error, "lease ask refused");
                    let _gone = port.send(reply(wire::lease_reply::Answer::NotOwner(error.to_string())));
                }
            },
            LeaseOwnerMessage::GiveBack(bytes) => {
                if let Err(error) = state.give_back(&bytes) {
                    warn!(%error, "lease give-back ignored");
                }
            }
            LeaseOwnerMessage::Spent(bytes) => {
                if let Err(error) = state.spent(&bytes).await {
                    warn!(%error, "lease spend report ignored");
                }
            }
            LeaseOwnerMessage::Prune => state.prune(),
        }
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, _state: &mut OwnerState) -> Result<(), ActorProcessingErr> {
        ractor::pg::leave(wire::LEASE_OWNER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(())
    }
}
