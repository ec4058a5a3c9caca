//! The `Budget` actor: one per node, the single writer of spend. It admits requests against
//! their budgets (reservations), settles them with real costs, appends every cost event to the
//! ledger, fires threshold alerts and answers cost queries. On start it replays the ledger.
//!
//! It never waits on I/O: ledger writes are handed to the ledger's writer thread, and the caller
//! waits for the write acknowledgement itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tokio::sync::oneshot;
use tracing::info;

use crate::budget::alert::AlertNotifier;
use crate::budget::book::{Exhausted, LineState, SpendBook};
use crate::budget::event::CostEvent;
use crate::budget::index::CostIndex;
use crate::budget::ledger::FileLedger;
use crate::budget::money::NanoUsd;
use crate::budget::period::{date_of, now_ms};
use crate::budget::BudgetPolicy;
use crate::budget::redis_sink::{RedisLedgerSettings, RedisSink};
use crate::metrics::Metrics;

/// A cost query from the Admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CostQuery {
    /// Total cost of one UTC day (`get_daily_cost`).
    Daily(NaiveDate),
    /// Cost by model over [start, end) (`get_cost_by_model`).
    ByModel {
        /// First day.
        start: NaiveDate,
        /// Day after the last.
        end: NaiveDate,
    },
    /// Cost by user over [start, end), most expensive first, at most `limit` users.
    ByUser {
        /// First day.
        start: NaiveDate,
        /// Day after the last.
        end: NaiveDate,
        /// Most users returned.
        limit: usize,
    },
    /// Cost by tenant over [start, end).
    ByTenant {
        /// First day.
        start: NaiveDate,
        /// Day after the last.
        end: NaiveDate,
    },
    /// Total cost and cache savings over [start, end).
    Savings {
        /// First day.
        start: NaiveDate,
        /// Day after the last.
        end: NaiveDate,
    },
    /// The budget state of one user and their tenant (`check_budget`).
    Budget {
        /// The tenant.
        tenant: String,
        /// The user.
        user: String,
    },
}

/// The answer to a [`CostQuery`].
#[derive(Clone, Debug, PartialEq)]
pub enum CostReport {
    /// One day's totals: cost, requests, requests without a price, requests charged at estimate.
    Daily {
        /// The day.
        date: NaiveDate,
        /// Charged cost.
        total: NanoUsd,
        /// Requests.
        requests: u64,
        /// Requests whose model had no price.
        unknown_price_requests: u64,
        /// Requests charged at their reservation's estimate.
        estimated_requests: u64,
    },
    /// Cost per model.
    ByModel(BTreeMap<String, NanoUsd>),
    /// Cost per (tenant, user), most expensive first.
    ByUser(Vec<((String, String), NanoUsd)>),
    /// Cost per tenant, most expensive first.
    ByTenant(Vec<(String, NanoUsd)>),
    /// Total, savings and requests.
    Savings {
        /// Charged cost.
        total: NanoUsd,
        /// Cost avoided by cache hits.
        saved: NanoUsd,
        /// Requests.
        requests: u64,
    },
    /// Each budget line's state.
    Budget(Vec<LineState>),
}

/// The actor; its state is [`BudgetState`].
#[derive(Debug, Default)]
pub struct Budget;

/// What the budget actor starts with.
#[derive(Debug)]
pub struct BudgetArgs {
    /// Budgets and thresholds.
    pub policy: Arc<BudgetPolicy>,
    /// The ledger.
    pub ledger: FileLedger,
    /// Events replayed from the ledger.
    pub replayed: Vec<CostEvent>,
    /// Alert delivery.
    pub notifier: AlertNotifier,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The Redis side of the ledger, when configured.
    pub redis: Option<RedisSink>,
}

/// The budget actor's state.
#[derive(Debug)]
pub struct BudgetState {
    policy: Arc<BudgetPolicy>,
    book: SpendBook,
    index: CostIndex,
    ledger: FileLedger,
    notifier: AlertNotifier,
    metrics: Arc<Metrics>,
    pruned_on: NaiveDate,
    redis: Option<RedisSink>,
}

/// Messages to the budget actor.
#[derive(Debug, RactorMessage)]
pub enum BudgetMessage {
    /// Admits a request costing up to `amount`, reserving it, or refuses naming the budget.
    Reserve {
        /// The tenant.
        tenant: String,
        /// The user.
        user: String,
        /// The most the request can cost.
        amount: NanoUsd,
        /// When the request arrived.
        unix_ms: i64,
        /// False to reserve without checking limits (the downgrade policy's second try).
        enforce: bool,
        /// Reply channel for RPC: the reservation id, or the exhausted budget.
        reply: RpcReplyPort<Result<u64, Exhausted>>,
    },
    /// Settles a reservation with the request's cost event and appends the event to the ledger.
    Settle {
        /// The reservation, if the request held one.
        reservation: Option<u64>,
        /// What the request cost.
        event: CostEvent,
        /// Reply channel for RPC: resolves once the event is written to the ledger.
        reply: RpcReplyPort<oneshot::Receiver<Result<(), String>>>,
    },
    /// Releases a reservation without spending.
    Release(u64),
    /// Answers a cost query.
    Query(
        CostQuery,
        /// Reply channel for RPC: the report.
        RpcReplyPort<CostReport>,
    ),
}

impl BudgetState {
    fn utilisation(&self, tenant: &str, user: &str, unix_ms: i64) {
        for line in self.book.state(&self.policy.lines(tenant, user), unix_ms) {
            if let Some(limit) = line.limit.filter(|limit| limit.0 > 0) {
                let used = line.spent.0 as f64 / limit.0 as f64;
                self.metrics.budget_utilisation.with_label_values(&[&line.scope.to_string(), line.period.as_str()]).set(used);
            }
        }
    }

    fn query(&self, query: CostQuery) -> CostReport {
        match query {
            CostQuery::Daily(date) => {
                let day = self.index.day(date);
                CostReport::Daily {
                    date,
                    total: day.total,
                    requests: day.requests,
                    unknown_price_requests: day.unknown_price_requests,
                    estimated_requests: day.estimated_requests,
                }
            }
            CostQuery::ByModel { start, end } => CostReport::ByModel(self.index.by_model(start, end)),
            CostQuery::ByUser { start, end, limit } => {
                CostReport::ByUser(self.index.by_user(start, end).into_iter().take(limit).collect())
            }
            CostQuery::ByTenant { start, end } => CostReport::ByTenant(self.index.by_tenant(start, end)),
            CostQuery::Savings { start, end } => {
                let (total, saved, requests) = self.index.totals(start, end);
                CostReport::Savings { total, saved, requests }
            }
            CostQuery::Budget { tenant, user } => CostReport::Budget(self.book.state(&self.policy.lines(&tenant, &user), now_ms())),
        }
    }
}

impl Actor for Budget {
    type Msg = BudgetMessage;
    type State = BudgetState;
    type Arguments = BudgetArgs;

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, args: BudgetArgs) -> Result<BudgetState, ActorProcessingErr> {
        let mut book = SpendBook::new(args.policy.thresholds.clone());
        let mut index = CostIndex::new(args.policy.retention_days);
        let now = now_ms();
        for event in &args.replayed {
            book.record(&args.policy.lines(&event.tenant, &event.user), event.charged(), event.unix_ms);
            index.add(event);
        }
        book.prune(now);
        index.prune(date_of(now));
        if !args.replayed.is_empty() {
            info!(events = args.replayed.len(), "cost ledger replayed");
        }
        Ok(BudgetState {
            policy: args.policy,
            book,
            index,
            ledger: args.ledger,
            notifier: args.notifier,
            metrics: args.metrics,
            pruned_on: date_of(now),
            redis: args.redis,
        })
    }

    async fn handle(&self, _myself: ActorRef<Self::Msg>, message: BudgetMessage, state: &mut BudgetState) -> Result<(), ActorProcessingErr> {
        match message {
            BudgetMessage::Reserve { tenant, user, amount, unix_ms, enforce, reply } => {
                let lines = state.policy.lines(&tenant, &user);
                let result = state.book.reserve(&lines, amount, unix_ms, enforce);
                if let Err(exhausted) = &result {
                    state
                        .metrics
                        .budget_rejections
                        .with_label_values(&[&exhausted.scope.to_string(), exhausted.period.as_str()])
                        .inc();
                }
                if reply.send(result.clone()).is_err()
                    && let Ok(id) = result
                {
                    state.book.release(id);
                }
            }
            BudgetMessage::Settle { reservation, event, reply } => {
                let cost = event.charged();
                let alerts = match reservation {
                    Some(id) => state.book.settle(id, cost),
                    None => {
                        state.book.record(&state.policy.lines(&event.tenant, &event.user), cost, event.unix_ms);
                        Vec::new()
                    }
                };
                for alert in alerts {
                    state.notifier.notify(alert);
                }
                state.index.add(&event);
                if let Some(cost) = event.cost {
                    state.metrics.cost_usd.with_label_values(&[&event.model, &event.tenant]).inc_by(cost.as_usd());
                }
                state.utilisation(&event.tenant, &event.user, event.unix_ms);
                let today = date_of(event.unix_ms);
                if today > state.pruned_on {
                    state.book.prune(event.unix_ms);
                    state.index.prune(today);
                    state.pruned_on = today;
                }
                for (direction, tokens) in [("input", event.input_tokens), ("output", event.output_tokens)] {
                    state.metrics.tenant_tokens.with_label_values(&[&event.model, &event.tenant, direction]).inc_by(u64::from(tokens));
                }
                if let Some(redis) = &state.redis {
                    redis.push(event.clone());
                }
                let _caller_gone = reply.send(state.ledger.append(event));
            }
            BudgetMessage::Release(id) => state.book.release(id),
            BudgetMessage::Query(query, reply) => {
                let _caller_gone = reply.send(state.query(query));
            }
        }
        Ok(())
    }
}

/// The budget actor's address, what request tasks hold.
#[derive(Clone, Debug)]
pub struct BudgetHandle {
    /// The actor.
    pub actor: ActorRef<BudgetMessage>,
    /// The ledger, for a final sync at shutdown.
    pub ledger: FileLedger,
    /// The policy.
    pub policy: Arc<BudgetPolicy>,
}

impl BudgetHandle {
    /// Opens the ledger at `ledger_path`, replays it, and starts the actor.
    pub async fn start(
        policy: BudgetPolicy,
        ledger_path: &std::path::Path,
        redis: Option<&RedisLedgerSettings>,
        notifier: AlertNotifier,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Self, ractor::ActorCell)> {
        use anyhow::Context as _;
        let (ledger, replay) = FileLedger::open(ledger_path)?;
        let redis = redis.map(|settings| RedisSink::start(settings, &replay.events)).transpose()?;
        let policy = Arc::new(policy);
        let args = BudgetArgs { policy: Arc::clone(&policy), ledger: ledger.clone(), replayed: replay.events, notifier, metrics, redis };
        let (actor, _join) = Actor::spawn(None, Budget, args).await.context("failed to start the budget actor")?;
        let cell = actor.get_cell();
        Ok((Self { actor, ledger, policy }, cell))
    }
}
