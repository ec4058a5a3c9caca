//! The `CostPeer` actor: one per clustered node. It answers other nodes' cost queries from this
//! node's own ledger (through its `Budget` actor), so an Admin cost query or `CheckBudget` sent
//! to any node answers for the whole cluster: the receiving node asks every member
//! ([`cluster_query`]) and sums the answers ([`merge`]). Each node's ledger holds exactly what its
//! own clients were told, so the sum is the cluster's spend.
//!
//! Queries and reports travel as JSON (their serde form) inside the remote message: they are
//! admin traffic, rare and small, and JSON keeps unknown fields harmless across versions.

use std::collections::BTreeMap;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tracing::warn;

use crate::budget::budget::{BudgetMessage, CostQuery, CostReport};
use crate::budget::NanoUsd;
use crate::cluster::wire;
use crate::error::GatewayError;

/// How long a node's answer may take.
const QUERY_TIMEOUT_MS: u64 = 2_000;

/// The actor; its argument is the local budget actor.
#[derive(Debug, Default)]
pub struct CostPeer;

/// Messages to a cost peer.
#[derive(Debug, RactorClusterMessage)]
pub enum CostPeerMessage {
    /// A [`CostQuery`] as JSON; the reply is the [`CostReport`] as JSON (empty on failure).
    #[rpc]
    Query(
        /// The query.
        Vec<u8>,
        /// Reply channel for RPC: the report.
        RpcReplyPort<Vec<u8>>,
    ),
}

impl Actor for CostPeer {
    type Msg = CostPeerMessage;
    type State = ActorRef<BudgetMessage>;
    type Arguments = ActorRef<BudgetMessage>;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, budget: ActorRef<BudgetMessage>) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(wire::COST_PEER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(budget)
    }

    async fn handle(&self, _myself: ActorRef<Self::Msg>, message: CostPeerMessage, budget: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let CostPeerMessage::Query(bytes, reply) = message;
        let budget = budget.clone();
        // Off the mailbox: one slow query does not hold up the next.
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<CostQuery>(&bytes) {
                Ok(query) => match ractor::call!(budget, BudgetMessage::Query, query) {
                    Ok(report) => serde_json::to_vec(&report).unwrap_or_default(),
                    Err(error) => {
                        warn!(%error, "the budget actor did not answer a peer's cost query");
                        Vec::new()
                    }
                },
                Err(error) => {
                    warn!(%error, "malformed cost query from a peer");
                    Vec::new()
                }
            };
            let _gone = reply.send(answer);
        });
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, _budget: &mut Self::State) -> Result<(), ActorProcessingErr> {
        ractor::pg::leave(wire::COST_PEER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(())
    }
}

/// How long a query waits for an alive member's cost peer to appear in the group (the group
/// syncs shortly after a session starts, so a node that just joined may not be there yet).
const PEER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks every node's cost peer (this node's included) and merges the answers. A node that does
/// not answer makes the query fail, naming it: a partial sum would be a wrong figure. So does an
/// `alive` member whose cost peer is not known here within [`PEER_WAIT`].
pub async fn cluster_query(query: CostQuery, alive: &[String]) -> Result<CostReport, GatewayError> {
    // Each node answers the whole query: a per-user ranking is cut after the merge.
    let asked = match &query {
        CostQuery::ByUser { start, end, .. } => CostQuery::ByUser { start: *start, end: *end, limit: usize::MAX },
        other => other.clone(),
    };
    let bytes = serde_json::to_vec(&asked).map_err(|error| GatewayError::Internal(format!("cost query: {error}")))?;
    let deadline = tokio::time::Instant::now() + PEER_WAIT;
    let peers: Vec<ActorRef<CostPeerMessage>> = loop {
        let peers: Vec<ActorRef<CostPeerMessage>> = ractor::pg::get_members(&wire::COST_PEER_GROUP.to_owned()).into_iter().map(Into::into).collect();
        let missing: Vec<&String> = alive
            .iter()
            .filter(|node| !peers.iter().any(|peer| peer.get_name().as_deref().and_then(wire::node_of) == Some(node.as_str())))
            .collect();
        if missing.is_empty() {
            break peers;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(GatewayError::Internal(format!("cluster members {missing:?} have no cost peer here yet: the cost query would miss their ledgers; retry shortly")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let answers = futures::future::join_all(peers.iter().map(|peer| {
        let bytes = bytes.clone();
        async move {
            let name = peer.get_name().unwrap_or_default();
            let reply = ractor::call_t!(peer, |port| CostPeerMessage::Query(bytes, port), QUERY_TIMEOUT_MS).map_err(|error| format!("{name}: {error}"))?;
            serde_json::from_slice::<CostReport>(&reply).map_err(|_| format!("{name}: no report"))
        }
    }))
    .await;
    let mut reports = Vec::with_capacity(answers.len());
    for answer in answers {
        reports.push(answer.map_err(|problem| GatewayError::Internal(format!("a cluster member did not answer the cost query: {problem}")))?);
    }
    merge(&query, reports).ok_or_else(|| GatewayError::Internal("no cluster member answered the cost query".into()))
}

/// Sums the reports of one query from every node.
pub fn merge(query: &CostQuery, reports: Vec<CostReport>) -> Option<CostReport> {
    let mut reports = reports.into_iter();
    let mut merged = reports.next()?;
    for report in reports {
        merged = match (merged, report) {
            (
                CostReport::Daily { date, total, requests, unknown_price_requests, estimated_requests },
                CostReport::Daily { total: t, requests: r, unknown_price_requests: u, estimated_requests: e, .. },
            ) => CostReport::Daily { date, total: total.plus(t), requests: requests + r, unknown_price_requests: unknown_price_requests + u, estimated_requests: estimated_requests + e },
            (CostReport::ByModel(mut by), CostReport::ByModel(other)) => {
                for (model, cost) in other {
                    let entry = by.entry(model).or_default();
                    *entry = entry.plus(cost);
                }
                CostReport::ByModel(by)
            }
            (CostReport::ByUser(by), CostReport::ByUser(other)) => CostReport::ByUser(sum_ranked(by, other)),
            (CostReport::ByTenant(by), CostReport::ByTenant(other)) => CostReport::ByTenant(sum_ranked(by, other)),
            (CostReport::ByFeature(by), CostReport::ByFeature(other)) => CostReport::ByFeature(sum_ranked(by, other)),
            (CostReport::Savings { total, saved, requests }, CostReport::Savings { total: t, saved: s, requests: r }) => {
                CostReport::Savings { total: total.plus(t), saved: saved.plus(s), requests: requests + r }
            }
            (CostReport::Budget(mut lines), CostReport::Budget(other)) => {
                for (line, theirs) in lines.iter_mut().zip(other) {
                    line.spent = line.spent.plus(theirs.spent);
                    line.reserved = line.reserved.plus(theirs.reserved);
                }
                CostReport::Budget(lines)
            }
            (mine, _mismatched) => mine,
        };
    }
    if let (CostQuery::ByUser { limit, .. }, CostReport::ByUser(users)) = (query, &mut merged) {
        users.truncate(*limit);
    }
    Some(merged)
}

/// Sums two rankings by key, most expensive first.
fn sum_ranked<K: Ord + Clone + std::hash::Hash>(mine: Vec<(K, NanoUsd)>, theirs: Vec<(K, NanoUsd)>) -> Vec<(K, NanoUsd)> {
    let mut sums: BTreeMap<K, NanoUsd> = BTreeMap::new();
    for (key, cost) in mine.into_iter().chain(theirs) {
        let entry = sums.entry(key).or_default();
        *entry = entry.plus(cost);
    }
    let mut ranked: Vec<(K, NanoUsd)> = sums.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_sum_per_key_and_rankings_are_cut_after_the_merge() {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 3).unwrap_or_default();
        let query = CostQuery::ByUser { start: day, end: day, limit: 1 };
        let a = CostReport::ByUser(vec![(("t".into(), "x".into()), NanoUsd(5)), (("t".into(), "y".into()), NanoUsd(4))]);
        let b = CostReport::ByUser(vec![(("t".into(), "y".into()), NanoUsd(3))]);
        assert_eq!(merge(&query, vec![a, b]), Some(CostReport::ByUser(vec![(("t".into(), "y".into()), NanoUsd(7))])));
        let daily = |total| CostReport::Daily { date: day, total: NanoUsd(total), requests: 1, unknown_price_requests: 0, estimated_requests: 1 };
        assert_eq!(
            merge(&CostQuery::Daily(day), vec![daily(2), daily(3)]),
            Some(CostReport::Daily { date: day, total: NanoUsd(5), requests: 2, unknown_price_requests: 0, estimated_requests: 2 })
        );
        let models = |cost| CostReport::ByModel(BTreeMap::from([("m".to_owned(), NanoUsd(cost))]));
        let merged = merge(&CostQuery::ByModel { start: day, end: day }, vec![models(1), models(2)]);
        assert_eq!(merged, Some(models(3)));
    }
}
