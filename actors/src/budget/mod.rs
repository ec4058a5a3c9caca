//! Cost tracking and budgets: what each request cost, to whom, against which limits.
//!
//! - [`budget`]: the handle request tasks reserve and settle through (the book under a lock, the
//!   ledger written by the settling task) and the `Budget` actor: index, alerts, Redis, queries.
//! - [`book`]: spend and reservations per (scope, period), admission and thresholds (plain struct).
//! - [`cost_peer`]: cost queries answered for the whole cluster (every node's ledger, summed).
//! - [`index`]: totals per day by model, user and tenant for the admin queries.
//! - [`lease`]: one budget over many nodes: owners, allowances and their arithmetic;
//!   [`lease_owner`] and [`lease_replica`], the actors that grant and copy them;
//!   [`lease_client`], how a request task gets more allowance when its reservation does not fit.
//! - [`ledger`]: the append-only file ledger replayed at start.
//! - [`segments`]: the ledger's closed daily files and their summaries, read at start instead of
//!   old events.
//! - [`redis_sink`]: the Redis side of the ledger (stream + atomic counters), when configured.
//! - [`alert`]: threshold alerts as logs, metrics and webhook calls.
//! - [`event`], [`money`], [`period`]: the cost record, exact money and UTC periods.

pub mod alert;
pub mod book;
#[expect(clippy::module_inception, reason = "one file per actor, named after the actor")]
pub mod budget;
pub mod cost_peer;
pub mod event;
pub mod index;
pub mod lease;
pub mod lease_client;
pub mod lease_owner;
pub mod lease_replica;
pub mod ledger;
pub mod money;
pub mod period;
pub mod redis_sink;
pub mod segments;

use std::collections::HashMap;
use std::sync::Arc;

pub use book::{BudgetLine, Exhausted, Scope};
pub use budget::{BudgetCluster, BudgetHandle, CostQuery, CostReport, Refused};
pub use event::CostEvent;
pub use money::NanoUsd;
pub use period::Period;

/// What happens when a budget is exhausted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Refuse with `RESOURCE_EXHAUSTED`/429 naming the budget.
    #[default]
    Reject,
    /// Serve with the cheapest model the caller may use.
    Downgrade,
}

/// Daily and monthly limits of one scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Per UTC day.
    pub daily: Option<NanoUsd>,
    /// Per UTC month.
    pub monthly: Option<NanoUsd>,
}

/// The budgets of every user and tenant, from config.
#[derive(Clone, Debug, Default)]
pub struct BudgetPolicy {
    /// Limits per (tenant, user).
    pub users: HashMap<(String, String), Limits>,
    /// Limits per tenant.
    pub tenants: HashMap<String, Limits>,
    /// Alert thresholds in percent of a limit.
    pub thresholds: Vec<u32>,
    /// What an exhausted budget does.
    pub enforcement: Enforcement,
    /// Output tokens reserved for a request that sets no `max_tokens`.
    pub reserve_output_tokens: u32,
    /// Days of cost history kept for queries.
    pub retention_days: u32,
    /// Shift of the budget clock, in milliseconds (rehearsing a period's end; 0 in production).
    pub clock_offset_ms: i64,
}

impl BudgetPolicy {
    /// True when any user or tenant has a limit.
    pub fn has_limits(&self) -> bool {
        let limited = |limits: &Limits| limits.daily.is_some() || limits.monthly.is_some();
        self.users.values().any(limited) || self.tenants.values().any(limited)
    }

    /// The four lines a request by `user` of `tenant` counts against (limits where configured).
    pub fn lines(&self, tenant: &str, user: &str) -> Vec<BudgetLine> {
        let user_limits = if self.users.is_empty() {
            Limits::default()
        } else {
            self.users.get(&(tenant.to_owned(), user.to_owned())).copied().unwrap_or_default()
        };
        let tenant_limits = self.tenants.get(tenant).copied().unwrap_or_default();
        let tenant: Arc<str> = tenant.into();
        let user_scope = Scope::User { tenant: Arc::clone(&tenant), user: user.into() };
        let tenant_scope = Scope::Tenant(tenant);
        vec![
            BudgetLine { scope: user_scope.clone(), period: Period::Daily, limit: user_limits.daily },
            BudgetLine { scope: user_scope, period: Period::Monthly, limit: user_limits.monthly },
            BudgetLine { scope: tenant_scope.clone(), period: Period::Daily, limit: tenant_limits.daily },
            BudgetLine { scope: tenant_scope, period: Period::Monthly, limit: tenant_limits.monthly },
        ]
    }
}
