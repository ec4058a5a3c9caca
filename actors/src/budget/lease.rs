//! Budget leases: how a budget stays one budget over many nodes while admission stays local.
//!
//! Every limited budget line (a user's or tenant's daily or monthly limit) has one **owner**
//! node, the top member for the line's scope by the ring's rendezvous hash. The owner hands each
//! node an **allowance**: the most that node may have spent and reserved on the line in the
//! period, its own spend included. A node admits a request when its own spent + reserved +
//! the request's reservation fits its allowance, under its book's lock, with no message; only
//! when it does not fit does the node ask the owner for more (one round trip, shared by the
//! requests waiting on the same line).
//!
//! The owner never lets the allowances add up past the limit: for every node it counts the
//! larger of its allowance and the spend it last reported, and grants only from what is left.
//! So the cluster's spend in a period is bounded by the limit plus what settled requests cost
//! above their reservations, exactly as on one node:
//!
//! `spend ≤ limit + Σ over requests in flight of max(0, real cost − reserved)`
//!
//! (zero when upstreams honour `max_tokens` and the prompt estimate holds). An allowance is never
//! taken back while a node may still spend it; a node gives back what it does not hold reserved
//! when the owner asks (a **reclaim**, when another node needs it).
//!
//! Each grant is sent to every node (so any node that becomes owner already holds the table),
//! and acknowledged by the **standby** (the line's second member by the same hash) before the
//! grantee may spend it: when an owner dies, the standby is the new owner and knows every grant.
//! A node that becomes owner without the table (it joined after the grants) rebuilds it from the
//! other nodes' copies and their own reports before it grants anything.
//!
//! The owner also hears every node's spend on the line (each node reports it every half second
//! while it spends), so budget alerts fire once for the cluster's spend, from the owner, and the
//! owner exports the line's utilisation. The thresholds already alerted travel with the copies,
//! so a new owner does not alert them again.
//!
//! [`LeaseTable`] is the arithmetic, a plain value tested on its own.

use std::collections::BTreeMap;

use crate::budget::money::NanoUsd;

/// A node's share of one line, as the owner counts it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeShare {
    /// The node's start time: a restarted node lost what it held but not what it spent.
    pub incarnation: u64,
    /// The most the node may have spent and reserved in the period.
    pub allowance: NanoUsd,
    /// What it last reported spent in the period.
    pub spent: NanoUsd,
}

impl NodeShare {
    /// What the share takes from the limit.
    pub fn committed(&self) -> NanoUsd {
        self.allowance.max(self.spent)
    }
}

/// One line's table: its limit and every node's share, with a version that grows with each
/// change (copies keep the newest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTable {
    /// The line's limit.
    pub limit: NanoUsd,
    /// Grows with every change.
    pub version: u64,
    /// Shares by node name.
    pub nodes: BTreeMap<String, NodeShare>,
    /// Alert thresholds (percent) the spend has crossed, each alerted once.
    pub alerted: Vec<u32>,
}

/// What a node asks the owner for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseAsk {
    /// The asking node.
    pub node: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// What it has spent in the period (from its book, its ledger replayed).
    pub spent: NanoUsd,
    /// What it holds reserved on the line right now.
    pub reserved: NanoUsd,
    /// How much more than its spent + reserved it needs at least (the waiting reservation).
    pub needed: NanoUsd,
}

/// The owner's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// The node's new allowance.
    Granted(NanoUsd),
    /// What is left does not cover the need; other nodes may be asked to give some back.
    Exhausted {
        /// Spend reported by all nodes.
        spent: NanoUsd,
        /// Allowances beyond their holders' spend.
        held: NanoUsd,
    },
}

impl LeaseTable {
    /// An empty table for a line limited to `limit`.
    pub fn new(limit: NanoUsd) -> Self {
        Self { limit, version: 0, nodes: BTreeMap::new(), alerted: Vec::new() }
    }

    /// Raises what `node` has spent to `spent` (a spend report; spend never goes down). Not a
    /// version change by itself: every node reports its own spend again to a new owner.
    pub fn report_spent(&mut self, node: &str, spent: NanoUsd) {
        let share = self.nodes.entry(node.to_owned()).or_default();
        if spent > share.spent {
            share.spent = spent;
        }
    }

    /// The thresholds (percent, ascending) the cluster's spend has crossed and that were not
    /// alerted yet; they count as alerted from now on.
    pub fn crossed(&mut self, thresholds: &[u32]) -> Vec<u32> {
        let spent = i128::from(self.spent().0);
        let limit = i128::from(self.limit.0);
        let mut fired = Vec::new();
        for threshold in thresholds {
            if limit > 0 && spent * 100 >= limit * i128::from(*threshold) && !self.alerted.contains(threshold) {
                self.alerted.push(*threshold);
                fired.push(*threshold);
            }
        }
        if !fired.is_empty() {
            self.alerted.sort_unstable();
            self.version += 1;
        }
        fired
    }

    /// What all shares take from the limit.
    pub fn committed(&self) -> NanoUsd {
        self.nodes.values().fold(NanoUsd::ZERO, |sum, share| sum.plus(share.committed()))
    }

    /// Spend reported by all nodes.
    pub fn spent(&self) -> NanoUsd {
        self.nodes.values().fold(NanoUsd::ZERO, |sum, share| sum.plus(share.spent))
    }

    /// What is left to grant.
    pub fn available(&self) -> NanoUsd {
        self.limit.minus(self.committed()).max(NanoUsd::ZERO)
    }

    /// Folds in what a node says of itself: its spend, and after a restart (a new incarnation)
    /// that it holds nothing beyond its spend and reservations.
    fn report(&mut self, ask: &LeaseAsk) {
        let share = self.nodes.entry(ask.node.clone()).or_default();
        if share.incarnation != ask.incarnation {
            share.incarnation = ask.incarnation;
            share.allowance = ask.spent.plus(ask.reserved);
        }
        if ask.spent > share.spent {
            share.spent = ask.spent;
        }
    }

    /// Answers `ask` with `members` nodes alive: the need plus a slice of what is left (half of
    /// it spread over the members, so the last of a budget goes out in ever smaller slices to
    /// whoever is still spending), or [`LeaseAnswer::Exhausted`].
    pub fn grant(&mut self, ask: &LeaseAsk, members: usize) -> LeaseAnswer {
        self.report(ask);
        let holding = ask.spent.plus(ask.reserved);
        let share = self.nodes.get(&ask.node).cloned().unwrap_or_default();
        let target = holding.plus(ask.needed);
        if share.allowance >= target {
            return LeaseAnswer::Granted(share.allowance);
        }
        // What the node's current share already covers does not come from the rest again.
        let extra_needed = target.minus(share.committed().max(holding));
        let available = self.available();
        if extra_needed > available {
            let held = self.nodes.values().fold(NanoUsd::ZERO, |sum, other| sum.plus(other.allowance.minus(other.spent).max(NanoUsd::ZERO)));
            return LeaseAnswer::Exhausted { spent: self.spent(), held };
        }
        let slice = NanoUsd(available.minus(extra_needed).0 / (2 * i64::try_from(members.max(1)).unwrap_or(i64::MAX)));
        let allowance = share.committed().max(holding).plus(extra_needed).plus(slice);
        if let Some(entry) = self.nodes.get_mut(&ask.node) {
            entry.allowance = allowance;
        }
        self.version += 1;
        LeaseAnswer::Granted(allowance)
    }

    /// A node gives back all of its allowance beyond `keep` (its spent + reserved), having held
    /// `from`. A give-back from less than the owner last granted it is ignored: that grant is on
    /// its way to the node and will raise its allowance again, so the owner must keep counting it.
    pub fn give_back(&mut self, node: &str, spent: NanoUsd, keep: NanoUsd, from: NanoUsd) {
        if let Some(share) = self.nodes.get_mut(node) {
            if spent > share.spent {
                share.spent = spent;
            }
            if share.allowance <= from && keep < share.allowance {
                share.allowance = keep;
                self.version += 1;
            }
        }
    }

    /// Merges another copy of the table: the newer version wins.
    pub fn merge(&mut self, other: &Self) {
        if other.version > self.version {
            *self = other.clone();
        }
    }

    /// Raises `node`'s share to what it says it holds (a rebuild: a node's word on itself is never
    /// below what it has spent and been allowed).
    pub fn assert_share(&mut self, node: &str, incarnation: u64, spent: NanoUsd, allowance: NanoUsd) {
        let share = self.nodes.entry(node.to_owned()).or_default();
        share.incarnation = incarnation;
        if spent > share.spent {
            share.spent = spent;
        }
        if allowance > share.allowance {
            share.allowance = allowance;
        }
        self.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(node: &str, spent: i64, reserved: i64, needed: i64) -> LeaseAsk {
        LeaseAsk { node: node.into(), incarnation: 1, spent: NanoUsd(spent), reserved: NanoUsd(reserved), needed: NanoUsd(needed) }
    }

    fn granted(answer: LeaseAnswer) -> i64 {
        match answer {
            LeaseAnswer::Granted(allowance) => allowance.0,
            LeaseAnswer::Exhausted { .. } => panic!("exhausted"),
        }
    }

    #[test]
    fn grants_the_need_and_a_slice_and_never_more_than_the_limit() {
        let mut table = LeaseTable::new(NanoUsd(1_000));
        // Need 10, 990 left after it: a slice of 990 / (2 × 3) = 165.
        assert_eq!(granted(table.grant(&ask("a", 0, 0, 10), 3)), 175);
        assert_eq!(table.available(), NanoUsd(825));
        // A node whose allowance still covers the need gets it unchanged.
        assert_eq!(granted(table.grant(&ask("a", 100, 50, 20), 3)), 175);
        // Every node asking over and over: the sum of allowances never passes the limit.
        for round in 0..200 {
            for node in ["a", "b", "c"] {
                let share = table.nodes.get(node).cloned().unwrap_or_default();
                let _answer = table.grant(&ask(node, share.allowance.0, 0, 7 + round % 3), 3);
                assert!(table.committed() <= table.limit, "{table:?}");
            }
        }
        assert!(table.available() < NanoUsd(10), "the budget was handed out to the last crumbs: {table:?}");
        assert!(matches!(table.grant(&ask("c", table.nodes["c"].allowance.0, 0, 10), 3), LeaseAnswer::Exhausted { .. }));
    }

    #[test]
    fn a_restarted_node_holds_its_spend_only_and_a_give_back_frees_the_rest() {
        let mut table = LeaseTable::new(NanoUsd(1_000));
        let first = granted(table.grant(&ask("a", 0, 0, 100), 2));
        assert_eq!(first, 100 + 900 / 4);
        // Restarted having spent 40: what it held beyond that is free again.
        let restarted = LeaseAsk { incarnation: 2, ..ask("a", 40, 0, 10) };
        let after = granted(table.grant(&restarted, 2));
        assert_eq!(after, 50 + 950 / 4);
        // A give-back from an allowance older than the latest grant is ignored.
        table.give_back("a", NanoUsd(60), NanoUsd(60), NanoUsd(100));
        assert_eq!(table.nodes["a"].allowance, NanoUsd(after));
        table.give_back("a", NanoUsd(60), NanoUsd(60), NanoUsd(after));
        assert_eq!(table.nodes["a"].allowance, NanoUsd(60));
        assert_eq!(table.available(), NanoUsd(940));
    }

    #[test]
    fn spend_past_an_allowance_is_counted_against_the_limit() {
        let mut table = LeaseTable::new(NanoUsd(100));
        assert_eq!(granted(table.grant(&ask("a", 0, 0, 50), 1)), 50 + 50 / 2);
        // A settled request cost more than reserved: a reports 90 spent of its 75.
        match table.grant(&ask("a", 90, 0, 20), 1) {
            LeaseAnswer::Exhausted { spent, .. } => assert_eq!(spent, NanoUsd(90)),
            LeaseAnswer::Granted(allowance) => panic!("granted {allowance:?} past the limit"),
        }
        assert_eq!(table.available(), NanoUsd(10));
    }

    #[test]
    fn copies_merge_by_version_and_a_rebuild_keeps_every_share_a_node_asserts() {
        let mut owner = LeaseTable::new(NanoUsd(1_000));
        granted(owner.grant(&ask("a", 0, 0, 100), 2));
        let mut copy = LeaseTable::new(NanoUsd(1_000));
        copy.merge(&owner);
        assert_eq!(copy, owner);
        let stale = LeaseTable::new(NanoUsd(1_000));
        copy.merge(&stale);
        assert_eq!(copy, owner, "an older copy changes nothing");
        // A rebuild: the newest copy first, then each live node's word on itself.
        let mut rebuilt = LeaseTable::new(NanoUsd(1_000));
        rebuilt.merge(&copy);
        rebuilt.assert_share("b", 1, NanoUsd(30), NanoUsd(80));
        rebuilt.assert_share("a", 1, NanoUsd(10), NanoUsd(20));
        assert_eq!(rebuilt.committed(), NanoUsd(owner.nodes["a"].allowance.0 + 80));
    }

    #[test]
    fn thresholds_fire_once_on_the_sum_of_every_node_spend_and_travel_with_copies() {
        let mut table = LeaseTable::new(NanoUsd(1_000));
        table.report_spent("a", NanoUsd(300));
        assert!(table.crossed(&[50, 80]).is_empty(), "30% is below every threshold");
        table.report_spent("b", NanoUsd(300));
        assert_eq!(table.crossed(&[50, 80]), vec![50], "no node alone is at 50%, the cluster is at 60%");
        assert!(table.crossed(&[50, 80]).is_empty(), "alerted once");
        // A stale report does not lower a node's spend.
        table.report_spent("a", NanoUsd(100));
        assert_eq!(table.spent(), NanoUsd(600));
        table.report_spent("c", NanoUsd(250));
        let mut copy = LeaseTable::new(NanoUsd(1_000));
        copy.merge(&table);
        assert_eq!(copy.crossed(&[50, 80]), vec![80]);
        assert_eq!(copy.alerted, vec![50, 80], "a new owner holding the copy does not alert 50% again");
        assert!(copy.version > table.version, "an alert is a change the copies must carry");
    }
}
