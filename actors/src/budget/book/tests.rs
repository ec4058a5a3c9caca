//! Budget arithmetic: admission, settlement, release, roll-over and alerts, with property tests.

use proptest::prelude::*;

use super::*;

const DAY_MS: i64 = 86_400_000;
/// 2026-11-22T00:00:00Z
const T0: i64 = 1_795_305_600_000;

fn alice() -> Scope {
    Scope::User { tenant: "acme".into(), user: "alice".into() }
}

fn daily(limit_usd: f64) -> Vec<BudgetLine> {
    vec![BudgetLine { scope: alice(), period: Period::Daily, limit: Some(NanoUsd::from_usd(limit_usd)) }]
}

#[test]
fn admission_counts_reservations_in_flight() {
    let mut book = SpendBook::new(vec![50, 80, 100]);
    let lines = daily(1.0);
    let cents = NanoUsd::from_usd(0.4);
    let first = book.reserve(&lines, cents, T0, true);
    let second = book.reserve(&lines, cents, T0, true);
    assert!(first.is_ok() && second.is_ok());
    let refused = book.reserve(&lines, cents, T0, true);
    let exhausted = refused.err();
    assert_eq!(exhausted.as_ref().map(|e| e.reserved), Some(NanoUsd::from_usd(0.8)));
    assert_eq!(exhausted.map(|e| e.resets_at_ms), Some(T0 + DAY_MS));
    // A failed request gives its reservation back.
    book.release(first.unwrap_or_default());
    assert!(book.reserve(&lines, cents, T0, true).is_ok());
}

#[test]
fn settlement_replaces_the_reservation_with_the_real_cost_and_alerts_once() {
    let mut book = SpendBook::new(vec![50, 80, 100]);
    let lines = daily(1.0);
    let id = book.reserve(&lines, NanoUsd::from_usd(0.9), T0, true).unwrap_or_default();
    let alerts = book.settle(id, NanoUsd::from_usd(0.55));
    assert_eq!(alerts.iter().map(|a| a.threshold_percent).collect::<Vec<_>>(), vec![50]);
    let state = book.state(&lines, T0);
    assert_eq!((state[0].spent, state[0].reserved), (NanoUsd::from_usd(0.55), NanoUsd::ZERO));
    let id = book.reserve(&lines, NanoUsd::from_usd(0.1), T0, true).unwrap_or_default();
    assert!(book.settle(id, NanoUsd::from_usd(0.01)).is_empty(), "50% fires once per period");
    let id = book.reserve(&lines, NanoUsd::from_usd(0.44), T0, true).unwrap_or_default();
    let alerts = book.settle(id, NanoUsd::from_usd(0.44));
    assert_eq!(alerts.iter().map(|a| a.threshold_percent).collect::<Vec<_>>(), vec![80, 100]);
    // The next day is a new counter: thresholds fire again, nothing carried over.
    let id = book.reserve(&lines, NanoUsd::from_usd(0.6), T0 + DAY_MS, true).unwrap_or_default();
    assert_eq!(book.settle(id, NanoUsd::from_usd(0.6)).len(), 1);
    assert_eq!(book.state(&lines, T0)[0].spent, NanoUsd::from_usd(1.0));
}

#[test]
fn a_reservation_settled_after_midnight_stays_in_its_own_period() {
    let mut book = SpendBook::new(vec![]);
    let lines = daily(10.0);
    let id = book.reserve(&lines, NanoUsd::from_usd(1.0), T0 + DAY_MS - 1, true).unwrap_or_default();
    // Meanwhile the new day starts and takes spend of its own.
    let next = book.reserve(&lines, NanoUsd::from_usd(2.0), T0 + DAY_MS, true).unwrap_or_default();
    book.settle(next, NanoUsd::from_usd(2.0));
    book.settle(id, NanoUsd::from_usd(1.0));
    assert_eq!(book.state(&lines, T0)[0].spent, NanoUsd::from_usd(1.0));
    assert_eq!(book.state(&lines, T0 + DAY_MS)[0].spent, NanoUsd::from_usd(2.0));
    book.prune(T0 + DAY_MS);
    assert_eq!(book.state(&lines, T0)[0].spent, NanoUsd::ZERO, "ended periods are pruned");
    assert_eq!(book.state(&lines, T0 + DAY_MS)[0].spent, NanoUsd::from_usd(2.0));
}

proptest! {
    /// Any interleaving of reserve / settle-at-or-below-reservation / release never lets spent
    /// exceed the limit, and reserved returns to zero when nothing is in flight.
    #[test]
    fn spend_never_exceeds_the_limit(ops in prop::collection::vec((0u8..3, 1i64..400_000_000, 0u8..=100), 1..200)) {
        let mut book = SpendBook::new(vec![50, 80, 100]);
        let lines = daily(1.0);
        let mut open: Vec<(u64, i64)> = Vec::new();
        for (op, amount, share) in ops {
            match op {
                0 => if let Ok(id) = book.reserve(&lines, NanoUsd(amount), T0, true) { open.push((id, amount)); },
                1 => if let Some((id, reserved)) = open.pop() { book.settle(id, NanoUsd(reserved * i64::from(share) / 100)); },
                _ => if let Some((id, _)) = open.pop() { book.release(id); },
            }
            let state = &book.state(&lines, T0)[0];
            prop_assert!(state.spent.plus(state.reserved) <= NanoUsd::from_usd(1.0));
            prop_assert_eq!(state.reserved.0, open.iter().map(|(_, amount)| amount).sum::<i64>());
        }
        for (id, _) in open.drain(..) {
            book.release(id);
        }
        prop_assert_eq!(book.state(&lines, T0)[0].reserved, NanoUsd::ZERO);
        prop_assert_eq!(book.open_reservations(), 0);
    }

    /// Spend recorded in any order across a period boundary lands in the right periods, and the
    /// periods' sum is the total.
    #[test]
    fn roll_over_never_loses_spend(events in prop::collection::vec((0i64..3 * DAY_MS, 1i64..1_000_000), 1..100)) {
        let mut book = SpendBook::new(vec![]);
        let lines = vec![BudgetLine { scope: alice(), period: Period::Daily, limit: None }];
        for (offset, cost) in &events {
            book.record(&lines, NanoUsd(*cost), T0 + offset);
        }
        let total: i64 = (0..3).map(|day| book.state(&lines, T0 + day * DAY_MS)[0].spent.0).sum();
        prop_assert_eq!(total, events.iter().map(|(_, cost)| cost).sum::<i64>());
    }
}

#[test]
fn a_clustered_book_alerts_on_nothing_and_names_each_line_whose_spend_changed_once() {
    let mut book = SpendBook::clustered(vec![50]);
    let lines = daily(1.0);
    book.allow(&alice(), Period::Daily, &Period::Daily.key(T0), NanoUsd::from_usd(1.0));
    for _ in 0..3 {
        let id = book.reserve_within_allowances(&lines, NanoUsd::from_usd(0.3), T0).unwrap_or_default();
        assert!(book.settle(id, NanoUsd::from_usd(0.3)).is_empty(), "the line's owner alerts, on the cluster's spend");
    }
    let unreported = book.take_unreported();
    assert_eq!(unreported.len(), 1, "{unreported:?}");
    let (line, key, spent) = &unreported[0];
    assert_eq!((line.scope.clone(), key.as_str(), *spent), (alice(), "2026-11-22", NanoUsd::from_usd(0.9)));
    assert!(book.take_unreported().is_empty(), "reported once");
    book.unreport(line, key);
    assert_eq!(book.take_unreported().len(), 1, "a line its owner was not told of is reported again");
    // A node alone keeps nothing to report.
    let mut alone = SpendBook::new(vec![50]);
    alone.record(&lines, NanoUsd::from_usd(0.9), T0);
    assert!(alone.take_unreported().is_empty());
}
