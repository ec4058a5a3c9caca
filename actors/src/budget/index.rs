//! Cost totals per UTC day, by model, user and tenant, for the admin queries
//! (`get_daily_cost`, `get_cost_by_model`, cost by user and tenant, top users, cache savings).
//! Days older than the retention are dropped, so the index stays bounded.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt as _};

use chrono::NaiveDate;

use crate::budget::event::{CostEvent, DaySpend};
use crate::budget::money::NanoUsd;
use crate::budget::period::date_of;

/// One day's totals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DayTotals {
    /// Charged cost.
    pub total: NanoUsd,
    /// Requests recorded.
    pub requests: u64,
    /// Requests whose model had no price (cost unknown, not counted as zero silently).
    pub unknown_price_requests: u64,
    /// Requests charged at their estimate because usage never arrived.
    pub estimated_requests: u64,
    /// Cost avoided by cache hits.
    pub saved: NanoUsd,
    /// Cost by model.
    pub by_model: HashMap<String, NanoUsd>,
    /// Cost by (tenant, user).
    pub by_user: HashMap<(String, String), NanoUsd>,
    /// Cost by tenant.
    pub by_tenant: HashMap<String, NanoUsd>,
    /// Cost by feature (untagged requests under the empty name).
    pub by_feature: HashMap<String, NanoUsd>,
}

/// Adds `cost` to `key`'s total, copying the key only the first time it is seen.
fn add(totals: &mut HashMap<String, NanoUsd>, key: &str, cost: NanoUsd) {
    match totals.get_mut(key) {
        Some(total) => *total = total.plus(cost),
        None => {
            totals.insert(key.to_owned(), cost);
        }
    }
}

impl DayTotals {
    /// Adds `cost` and `saved` to the day's totals and to the breakdowns.
    fn spend(&mut self, tenant: &str, user: &str, model: &str, feature: &str, cost: NanoUsd, saved: NanoUsd) {
        self.total = self.total.plus(cost);
        self.saved = self.saved.plus(saved);
        if !model.is_empty() {
            add(&mut self.by_model, model, cost);
        }
        let by_user = self.by_user.entry((tenant.to_owned(), user.to_owned())).or_default();
        *by_user = by_user.plus(cost);
        add(&mut self.by_tenant, tenant, cost);
        add(&mut self.by_feature, feature, cost);
    }
}

/// Totals per day.
#[derive(Debug)]
pub struct CostIndex {
    days: BTreeMap<NaiveDate, DayTotals>,
    retention_days: u32,
}

impl CostIndex {
    /// An empty index keeping `retention_days` days.
    pub fn new(retention_days: u32) -> Self {
        Self { days: BTreeMap::new(), retention_days: retention_days.max(1) }
    }

    /// Adds one event to its day.
    pub fn add(&mut self, event: &CostEvent) {
        let day = self.days.entry(date_of(event.unix_ms)).or_default();
        day.requests += 1;
        day.unknown_price_requests += u64::from(event.cost.is_none());
        day.estimated_requests += u64::from(event.estimated);
        day.spend(&event.tenant, &event.user, &event.model, event.feature.as_deref().unwrap_or_default(), event.charged(), event.saved);
    }

    /// Adds a day's compacted spend (from a closed ledger segment's summary).
    pub fn add_day(&mut self, spend: &DaySpend) {
        let day = self.days.entry(spend.date).or_default();
        day.requests += spend.requests;
        day.unknown_price_requests += spend.unknown_price_requests;
        day.estimated_requests += spend.estimated_requests;
        day.spend(&spend.tenant, &spend.user, &spend.model, &spend.feature, spend.cost, spend.saved);
    }

    /// Drops days older than the retention, counted back from `today`.
    pub fn prune(&mut self, today: NaiveDate) {
        if let Some(oldest) = today.checked_sub_days(chrono::Days::new(u64::from(self.retention_days))) {
            self.days = self.days.split_off(&oldest);
        }
    }

    /// The totals of `date` (empty when nothing was spent).
    pub fn day(&self, date: NaiveDate) -> DayTotals {
        self.days.get(&date).cloned().unwrap_or_default()
    }

    fn range(&self, start: NaiveDate, end: NaiveDate) -> impl Iterator<Item = &DayTotals> {
        self.days.range(start..end).map(|(_, totals)| totals)
    }

    /// Cost by model over [start, end).
    pub fn by_model(&self, start: NaiveDate, end: NaiveDate) -> BTreeMap<String, NanoUsd> {
        let mut totals = BTreeMap::new();
        for day in self.range(start, end) {
            for (model, cost) in &day.by_model {
                let entry: &mut NanoUsd = totals.entry(model.clone()).or_default();
                *entry = entry.plus(*cost);
            }
        }
        totals
    }

    /// Cost by (tenant, user) over [start, end), most expensive first.
    pub fn by_user(&self, start: NaiveDate, end: NaiveDate) -> Vec<((String, String), NanoUsd)> {
        let mut totals: HashMap<(String, String), NanoUsd> = HashMap::new();
        for day in self.range(start, end) {
            for (user, cost) in &day.by_user {
                let entry = totals.entry(user.clone()).or_default();
                *entry = entry.plus(*cost);
            }
        }
        let mut sorted: Vec<_> = totals.into_iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sorted
    }

    /// Cost by tenant over [start, end), most expensive first.
    pub fn by_tenant(&self, start: NaiveDate, end: NaiveDate) -> Vec<(String, NanoUsd)> {
        self.ranked(start, end, |day| &day.by_tenant)
    }

    /// Cost by feature over [start, end), most expensive first (untagged requests under `""`).
    pub fn by_feature(&self, start: NaiveDate, end: NaiveDate) -> Vec<(String, NanoUsd)> {
        self.ranked(start, end, |day| &day.by_feature)
    }

    /// One breakdown of the days in [start, end), summed, most expensive first.
    fn ranked(&self, start: NaiveDate, end: NaiveDate, breakdown: impl Fn(&DayTotals) -> &HashMap<String, NanoUsd>) -> Vec<(String, NanoUsd)> {
        let mut totals: HashMap<String, NanoUsd> = HashMap::new();
        for day in self.range(start, end) {
            for (name, cost) in breakdown(day) {
                let entry = totals.entry(name.clone()).or_default();
                *entry = entry.plus(*cost);
            }
        }
        let mut sorted: Vec<_> = totals.into_iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sorted
    }

    /// Total cost and cache savings over [start, end).
    pub fn totals(&self, start: NaiveDate, end: NaiveDate) -> (NanoUsd, NanoUsd, u64) {
        self.range(start, end).fold((NanoUsd::ZERO, NanoUsd::ZERO, 0), |(total, saved, requests), day| {
            (total.plus(day.total), saved.plus(day.saved), requests + day.requests)
        })
    }
}
