//! The spend book: spent and reserved amounts per (scope, period), admission against limits, and
//! threshold alerts. A plain struct, kept behind the budget handle's lock (see `budget`), so its
//! arithmetic is tested on its own.
//!
//! Admission is decided from spent + reserved + the request's reservation, all in one step; the
//! reservation is settled with the real cost afterwards or released if the request fails. So a
//! burst cannot overshoot a limit by more than what settled requests cost above their
//! reservations (zero when the upstream honours `max_tokens` and the prompt estimate holds).
//! Counters are keyed by period, so a new period never overwrites spend recorded in the old one.

// The book is consulted several times on every request's path: a fast hasher (foldhash, seeded
// per process) instead of SipHash.
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt as _};

use crate::budget::money::NanoUsd;
use crate::budget::period::Period;

/// Whose money a budget limits. The names are shared, not copied: a request's four budget lines
/// and their book keys name the same tenant and user.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Scope {
    /// One user of a tenant.
    User {
        /// The tenant.
        tenant: Arc<str>,
        /// The user.
        user: Arc<str>,
    },
    /// A whole tenant.
    Tenant(Arc<str>),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User { tenant, user } => write!(f, "user {tenant}/{user}"),
            Self::Tenant(tenant) => write!(f, "tenant {tenant}"),
        }
    }
}

/// One limit a request is admitted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BudgetLine {
    /// Whose budget.
    pub scope: Scope,
    /// Which period.
    pub period: Period,
    /// The limit; `None` only tracks spend.
    pub limit: Option<NanoUsd>,
}

/// Why a request was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exhausted {
    /// The budget that would be exceeded.
    pub scope: Scope,
    /// Its period.
    pub period: Period,
    /// Spent so far in the period.
    pub spent: NanoUsd,
    /// Reserved by requests in flight.
    pub reserved: NanoUsd,
    /// The limit.
    pub limit: NanoUsd,
    /// When the period resets, in milliseconds since the epoch.
    pub resets_at_ms: i64,
}

/// A limited line a clustered node holds too little allowance on for a reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The line.
    pub line: BudgetLine,
    /// The period's key.
    pub period_key: String,
    /// This node's spend on it in the period.
    pub spent: NanoUsd,
    /// What this node holds reserved on it.
    pub reserved: NanoUsd,
    /// The reservation that did not fit.
    pub needed: NanoUsd,
}

/// A threshold crossed for the first time in a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// Whose budget.
    pub scope: Scope,
    /// Which period.
    pub period: Period,
    /// The period's key (e.g. `2026-11-22`).
    pub period_key: String,
    /// The threshold in percent.
    pub threshold_percent: u32,
    /// Spent when it fired.
    pub spent: NanoUsd,
    /// The limit.
    pub limit: NanoUsd,
}

#[derive(Clone, Debug, Default)]
struct Counter {
    spent: NanoUsd,
    reserved: NanoUsd,
    /// Thresholds (percent) already alerted in this period.
    fired: Vec<u32>,
}

/// Whose spend, in which period kind, in which period (`2026-11-22`, `2026-11`).
type CounterKey = (Scope, Period, String);

#[derive(Clone, Debug)]
struct Reservation {
    /// The counters reserved on, each with its line's limit.
    counters: Vec<(CounterKey, Option<NanoUsd>)>,
    amount: NanoUsd,
}

/// A line's state, for `check_budget`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LineState {
    /// Whose budget.
    pub scope: Scope,
    /// Which period.
    pub period: Period,
    /// The period's key.
    pub period_key: String,
    /// Spent in the period.
    pub spent: NanoUsd,
    /// Reserved by requests in flight.
    pub reserved: NanoUsd,
    /// The limit, if any.
    pub limit: Option<NanoUsd>,
    /// When the period resets, in milliseconds since the epoch.
    pub resets_at_ms: i64,
}

impl LineState {
    /// What is left of the limit after spend and reservations (negative when overspent).
    pub fn remaining(&self) -> Option<NanoUsd> {
        self.limit.map(|limit| limit.minus(self.spent).minus(self.reserved))
    }

    /// True when spend plus reservations reach the limit.
    pub fn exhausted(&self) -> bool {
        self.limit.is_some_and(|limit| self.spent.plus(self.reserved) >= limit)
    }
}

/// Spent and reserved amounts, reservations and fired alerts.
#[derive(Debug)]
pub struct SpendBook {
    counters: HashMap<CounterKey, Counter>,
    /// In a cluster, what the lines' owners allow this node to have spent and reserved, per
    /// (scope, period, key) (see `lease`).
    allowances: HashMap<(Scope, Period, String), NanoUsd>,
    reservations: HashMap<u64, Reservation>,
    next_reservation: u64,
    thresholds: Vec<u32>,
    /// In a cluster, limited lines whose spend changed since it was last reported to their
    /// owners, who alert on the cluster's spend (this book alerts only on one node).
    unreported: Option<HashMap<(Scope, Period, String), NanoUsd>>,
}

impl SpendBook {
    /// An empty book alerting at `thresholds` percent of each limit.
    pub fn new(mut thresholds: Vec<u32>) -> Self {
        thresholds.sort_unstable();
        thresholds.dedup();
        Self { counters: HashMap::new(), allowances: HashMap::new(), reservations: HashMap::new(), next_reservation: 1, thresholds, unreported: None }
    }

    /// A clustered node's book: it alerts on nothing itself, and keeps which limited lines' spend
    /// changed, for [`SpendBook::take_unreported`].
    pub fn clustered(thresholds: Vec<u32>) -> Self {
        Self { unreported: Some(HashMap::new()), ..Self::new(thresholds) }
    }

    /// The limited lines whose spend changed since the last call, with their period keys and
    /// this node's spend on them (empty on a book that is not clustered).
    pub fn take_unreported(&mut self) -> Vec<(BudgetLine, String, NanoUsd)> {
        let Some(unreported) = self.unreported.as_mut() else { return Vec::new() };
        let lines: Vec<_> = unreported.drain().collect();
        lines
            .into_iter()
            .map(|((scope, period, key), limit)| {
                let spent = self.counters.get(&(scope.clone(), period, key.clone())).map_or(NanoUsd::ZERO, |counter| counter.spent);
                (BudgetLine { scope, period, limit: Some(limit) }, key, spent)
            })
            .collect()
    }

    /// Puts a line back among the unreported (its owner could not be told).
    pub fn unreport(&mut self, line: &BudgetLine, period_key: &str) {
        if let (Some(unreported), Some(limit)) = (self.unreported.as_mut(), line.limit) {
            unreported.insert((line.scope.clone(), line.period, period_key.to_owned()), limit);
        }
    }

    /// Counts `cost` on a limited counter: in a cluster it is to be reported, on one node it may
    /// cross thresholds.
    fn spent_on_limited(&mut self, scope: &Scope, period: Period, period_key: &str, limit: NanoUsd) -> Vec<Alert> {
        if let Some(unreported) = self.unreported.as_mut() {
            unreported.insert((scope.clone(), period, period_key.to_owned()), limit);
            return Vec::new();
        }
        match self.counters.get_mut(&(scope.clone(), period, period_key.to_owned())) {
            Some(counter) => fire(&self.thresholds, counter, scope, period, period_key, limit),
            None => Vec::new(),
        }
    }

    /// Reserves `amount` on every line like [`SpendBook::reserve`], but in a cluster: each limited
    /// line must fit this node's allowance (never above the limit, see `lease`) rather than the
    /// limit itself. Refuses, changing nothing, with every line that does not fit.
    pub fn reserve_within_allowances(&mut self, lines: &[BudgetLine], amount: NanoUsd, unix_ms: i64) -> Result<u64, Vec<Shortfall>> {
        let keys: Vec<String> = lines.iter().map(|line| line.period.key(unix_ms)).collect();
        let mut short = Vec::new();
        for (line, period_key) in lines.iter().zip(&keys).filter(|(line, _)| line.limit.is_some()) {
            let key = (line.scope.clone(), line.period, period_key.clone());
            let counter = self.counters.get(&key).cloned().unwrap_or_default();
            let allowance = self.allowances.get(&key).copied().unwrap_or(NanoUsd::ZERO);
            if counter.spent.plus(counter.reserved).plus(amount) > allowance {
                short.push(Shortfall { line: line.clone(), period_key: key.2, spent: counter.spent, reserved: counter.reserved, needed: amount });
            }
        }
        if !short.is_empty() {
            return Err(short);
        }
        Ok(self.reserve_keyed(lines, keys, amount))
    }

    /// Raises this node's allowance on a line (an owner's grant; never lowers it).
    pub fn allow(&mut self, scope: &Scope, period: Period, period_key: &str, allowance: NanoUsd) {
        let entry = self.allowances.entry((scope.clone(), period, period_key.to_owned())).or_default();
        if allowance > *entry {
            *entry = allowance;
        }
    }

    /// Lowers this node's allowance on a line to what it has spent and holds reserved (a reclaim),
    /// returning (spent, kept, the allowance it had).
    pub fn give_back(&mut self, scope: &Scope, period: Period, period_key: &str) -> (NanoUsd, NanoUsd, NanoUsd) {
        let key = (scope.clone(), period, period_key.to_owned());
        let counter = self.counters.get(&key).cloned().unwrap_or_default();
        let keep = counter.spent.plus(counter.reserved);
        let mut had = NanoUsd::ZERO;
        if let Some(allowance) = self.allowances.get_mut(&key) {
            had = *allowance;
            if keep < *allowance {
                *allowance = keep;
            }
        }
        (counter.spent, keep, had)
    }

    /// This node's spend, reservations and allowance on a line.
    pub fn share(&self, scope: &Scope, period: Period, period_key: &str) -> (NanoUsd, NanoUsd, NanoUsd) {
        let key = (scope.clone(), period, period_key.to_owned());
        let counter = self.counters.get(&key).cloned().unwrap_or_default();
        (counter.spent, counter.reserved, self.allowances.get(&key).copied().unwrap_or_default())
    }

    /// Admits a request costing up to `amount` at `unix_ms` against every line, reserving it on
    /// all of them, or refuses it (changing nothing) naming the first line it would exceed.
    /// `enforce = false` reserves without checking limits (the downgrade policy).
    pub fn reserve(&mut self, lines: &[BudgetLine], amount: NanoUsd, unix_ms: i64, enforce: bool) -> Result<u64, Exhausted> {
        let keys: Vec<CounterKey> = lines.iter().map(|line| (line.scope.clone(), line.period, line.period.key(unix_ms))).collect();
        if enforce {
            for (line, key) in lines.iter().zip(&keys) {
                let Some(limit) = line.limit else { continue };
                let counter = self.counters.get(key).cloned().unwrap_or_default();
                if counter.spent.plus(counter.reserved).plus(amount) > limit {
                    return Err(Exhausted {
                        scope: line.scope.clone(),
                        period: line.period,
                        spent: counter.spent,
                        reserved: counter.reserved,
                        limit,
                        resets_at_ms: line.period.resets_at(unix_ms).timestamp_millis(),
                    });
                }
            }
        }
        Ok(self.reserve_counters(lines, keys, amount))
    }

    /// Reserves `amount` on every line, in the periods of `keys` (one per line).
    fn reserve_keyed(&mut self, lines: &[BudgetLine], keys: Vec<String>, amount: NanoUsd) -> u64 {
        let keys = lines.iter().zip(keys).map(|(line, period_key)| (line.scope.clone(), line.period, period_key)).collect();
        self.reserve_counters(lines, keys, amount)
    }

    /// Reserves `amount` on the counters of `keys` (one per line of `lines`).
    fn reserve_counters(&mut self, lines: &[BudgetLine], keys: Vec<CounterKey>, amount: NanoUsd) -> u64 {
        let mut counters = Vec::with_capacity(lines.len());
        for (line, key) in lines.iter().zip(keys) {
            match self.counters.get_mut(&key) {
                Some(counter) => counter.reserved = counter.reserved.plus(amount),
                None => {
                    self.counters.insert(key.clone(), Counter { reserved: amount, ..Counter::default() });
                }
            }
            counters.push((key, line.limit));
        }
        let id = self.next_reservation;
        self.next_reservation += 1;
        self.reservations.insert(id, Reservation { counters, amount });
        id
    }

    /// Settles reservation `id` with the real `cost`: the reservation is released and the cost
    /// is added to the same periods. Returns the alerts this crossing fires.
    pub fn settle(&mut self, id: u64, cost: NanoUsd) -> Vec<Alert> {
        let Some(reservation) = self.reservations.remove(&id) else { return Vec::new() };
        let mut alerts = Vec::new();
        for (key, limit) in reservation.counters {
            let counter = match self.counters.get_mut(&key) {
                Some(counter) => counter,
                None => self.counters.entry(key.clone()).or_default(),
            };
            counter.reserved = counter.reserved.minus(reservation.amount);
            counter.spent = counter.spent.plus(cost);
            if let Some(limit) = limit {
                let (scope, period, period_key) = &key;
                alerts.extend(self.spent_on_limited(scope, *period, period_key, limit));
            }
        }
        alerts
    }

    /// Releases reservation `id` without spending (a failed, cancelled or timed-out request).
    pub fn release(&mut self, id: u64) {
        if let Some(reservation) = self.reservations.remove(&id) {
            for (key, _) in reservation.counters {
                if let Some(counter) = self.counters.get_mut(&key) {
                    counter.reserved = counter.reserved.minus(reservation.amount);
                }
            }
        }
    }

    /// Adds `cost` spent at `unix_ms` to `lines` without a reservation (ledger replay).
    pub fn record(&mut self, lines: &[BudgetLine], cost: NanoUsd, unix_ms: i64) {
        for line in lines {
            let period_key = line.period.key(unix_ms);
            let counter = self.counters.entry((line.scope.clone(), line.period, period_key.clone())).or_default();
            counter.spent = counter.spent.plus(cost);
            // Thresholds already crossed before a restart are not alerted again.
            if let Some(limit) = line.limit {
                for threshold in &self.thresholds {
                    if crossed(counter.spent, limit, *threshold) && !counter.fired.contains(threshold) {
                        counter.fired.push(*threshold);
                    }
                }
                if let Some(unreported) = self.unreported.as_mut() {
                    unreported.insert((line.scope.clone(), line.period, period_key), limit);
                }
            }
        }
    }

    /// The state of each line at `unix_ms`.
    pub fn state(&self, lines: &[BudgetLine], unix_ms: i64) -> Vec<LineState> {
        lines
            .iter()
            .map(|line| {
                let period_key = line.period.key(unix_ms);
                let counter = self.counters.get(&(line.scope.clone(), line.period, period_key.clone())).cloned().unwrap_or_default();
                LineState {
                    scope: line.scope.clone(),
                    period: line.period,
                    period_key,
                    spent: counter.spent,
                    reserved: counter.reserved,
                    limit: line.limit,
                    resets_at_ms: line.period.resets_at(unix_ms).timestamp_millis(),
                }
            })
            .collect()
    }

    /// Requests in flight holding a reservation.
    pub fn open_reservations(&self) -> usize {
        self.reservations.len()
    }

    /// Drops counters of periods that ended before `unix_ms` and hold no reservation, so the
    /// book stays bounded by the active users of the current periods.
    pub fn prune(&mut self, unix_ms: i64) {
        self.counters.retain(|(_, period, key), counter| {
            *key == period.key(unix_ms) || counter.reserved != NanoUsd::ZERO
        });
        self.allowances.retain(|(_, period, key), _| *key == period.key(unix_ms));
        if let Some(unreported) = self.unreported.as_mut() {
            unreported.retain(|(_, period, key), _| *key == period.key(unix_ms));
        }
    }
}

fn crossed(spent: NanoUsd, limit: NanoUsd, threshold: u32) -> bool {
    i128::from(spent.0) * 100 >= i128::from(limit.0) * i128::from(threshold)
}

fn fire(thresholds: &[u32], counter: &mut Counter, scope: &Scope, period: Period, period_key: &str, limit: NanoUsd) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for threshold in thresholds {
        if crossed(counter.spent, limit, *threshold) && !counter.fired.contains(threshold) {
            counter.fired.push(*threshold);
            alerts.push(Alert {
                scope: scope.clone(),
                period,
                period_key: period_key.to_owned(),
                threshold_percent: *threshold,
                spent: counter.spent,
                limit,
            });
        }
    }
    alerts
}

#[cfg(test)]
mod tests;
