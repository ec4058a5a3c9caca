//! How a request task on a clustered node gets more allowance when its reservation does not fit
//! (see [`crate::budget::lease`]): it asks the line's owner, one task per line at a time (the
//! others wait and find the new allowance), and retries while the members settle or another
//! node gives back what it holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ractor::ActorRef;
use tracing::debug;

use crate::budget::book::{Exhausted, Shortfall};
use crate::budget::budget::{SharedBook, lock};
use crate::budget::lease_owner::{LeaseOwnerMessage, line_id, owner_actor};
use crate::budget::NanoUsd;
use crate::cluster::membership::ClusterView;
use crate::cluster::wire;
use crate::metrics::Metrics;

/// Asks before giving up on an owner that cannot be reached (the members are settling).
const ATTEMPTS: u32 = 20;
/// Pause between asks.
const PAUSE: Duration = Duration::from_millis(50);
/// How long one ask may take.
const ASK_TIMEOUT_MS: u64 = 1_000;

/// Why no allowance was had.
#[derive(Debug)]
pub enum LeaseError {
    /// The line's budget is spent or held by requests in flight, cluster-wide.
    Exhausted(Exhausted),
    /// No owner answered: the request is refused rather than admitted unchecked.
    Unreachable(String),
}

/// A clustered node's side of the leases.
#[derive(Debug)]
pub struct LeaseClient {
    this_node: String,
    incarnation: u64,
    view: tokio::sync::watch::Receiver<ClusterView>,
    /// One ask per line at a time.
    asking: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    metrics: Arc<Metrics>,
}

impl LeaseClient {
    /// The client of node `this_node` started at `incarnation`.
    pub fn new(this_node: &str, incarnation: u64, view: tokio::sync::watch::Receiver<ClusterView>, metrics: Arc<Metrics>) -> Self {
        Self { this_node: this_node.to_owned(), incarnation, view, asking: Mutex::new(HashMap::new()), metrics }
    }

    fn ask_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut asking = self.asking.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded by the lines of the current periods: the period key is in the id.
        if asking.len() > 100_000 {
            asking.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        Arc::clone(asking.entry(id.to_owned()).or_default())
    }

    /// Gets allowance for every shortfall, from the lines' owners.
    pub async fn acquire(&self, book: &SharedBook, shortfalls: &[Shortfall], unix_ms: i64) -> Result<(), LeaseError> {
        for short in shortfalls {
            let id = line_id(&short.line, &short.period_key);
            let ask_lock = self.ask_lock(&id);
            let _turn = ask_lock.lock().await;
            self.acquire_one(book, short, unix_ms).await?;
        }
        Ok(())
    }

    async fn acquire_one(&self, book: &SharedBook, short: &Shortfall, unix_ms: i64) -> Result<(), LeaseError> {
        let line = wire::line_to_wire(&short.line, &short.period_key);
        let mut last_problem = String::from("no owner found");
        for attempt in 0..ATTEMPTS {
            let (spent, reserved, allowance) = lock(book).share(&short.line.scope, short.line.period, &short.period_key);
            if spent.plus(reserved).plus(short.needed) <= allowance {
                return Ok(());
            }
            let view = self.view.borrow().clone();
            let Some(owner) = owner_actor(&short.line.scope, &view) else {
                tokio::time::sleep(PAUSE).await;
                continue;
            };
            let ask = wire::encode(&wire::LeaseAsk {
                line: Some(line.clone()),
                node: self.this_node.clone(),
                incarnation: self.incarnation,
                spent_nano_usd: spent.0,
                reserved_nano_usd: reserved.0,
                needed_nano_usd: short.needed.0,
            });
            let answer = ask_owner(&owner, ask).await;
            match answer {
                Ok(wire::lease_reply::Answer::GrantedNanoUsd(granted)) => {
                    self.metrics.budget_lease_asks.with_label_values(&["granted"]).inc();
                    lock(book).allow(&short.line.scope, short.line.period, &short.period_key, NanoUsd(granted));
                }
                Ok(wire::lease_reply::Answer::Exhausted(exhausted)) => {
                    // Others hold allowance they may give back (the owner asked them): try again
                    // a few times before refusing.
                    if exhausted.held_nano_usd > short.needed.0 && attempt < 3 {
                        self.metrics.budget_lease_asks.with_label_values(&["retry"]).inc();
                        tokio::time::sleep(PAUSE / 2).await;
                        continue;
                    }
                    self.metrics.budget_lease_asks.with_label_values(&["exhausted"]).inc();
                    return Err(LeaseError::Exhausted(Exhausted {
                        scope: short.line.scope.clone(),
                        period: short.line.period,
                        spent: NanoUsd(exhausted.spent_nano_usd),
                        reserved: NanoUsd(exhausted.held_nano_usd),
                        limit: short.line.limit.unwrap_or_default(),
                        resets_at_ms: short.line.period.resets_at(unix_ms).timestamp_millis(),
                    }));
                }
                Ok(wire::lease_reply::Answer::NotOwner(why)) => {
                    self.metrics.budget_lease_asks.with_label_values(&["retry"]).inc();
                    debug!(line = %short.line.scope, %why, "lease ask to retry");
                    last_problem = why;
                    tokio::time::sleep(PAUSE).await;
                }
                Err(problem) => {
                    self.metrics.budget_lease_asks.with_label_values(&["retry"]).inc();
                    last_problem = problem;
                    tokio::time::sleep(PAUSE).await;
                }
            }
        }
        Err(LeaseError::Unreachable(format!(
            "the owner of {}'s budget did not grant an allowance ({last_problem}); retry shortly: the cluster's members are settling or the owner is unreachable",
            short.line.scope
        )))
    }
}

async fn ask_owner(owner: &ActorRef<LeaseOwnerMessage>, ask: Vec<u8>) -> Result<wire::lease_reply::Answer, String> {
    let bytes = ractor::call_t!(owner, |port| LeaseOwnerMessage::Ask(ask, port), ASK_TIMEOUT_MS).map_err(|error| error.to_string())?;
    let reply: wire::LeaseReply = wire::decode("lease reply", &bytes).map_err(|error| error.to_string())?;
    reply.answer.ok_or_else(|| "an empty lease reply".to_owned())
}
