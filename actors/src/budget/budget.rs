//! The `Budget` actor and its handle: one per node. Spend lives in the node's [`SpendBook`],
//! rebuilt from the ledger at start. Request tasks reserve against it before the call and settle
//! after through the [`BudgetHandle`], under the book's lock: one check-and-reserve or settle, a
//! few hash-map updates held for microseconds and never across an `.await`, so admission is
//! atomic (no burst slips past a limit) without a mailbox round trip on every request. The
//! settling task writes its cost event to the ledger itself and returns once it is written.
//!
//! The actor gets every settled event afterwards, off the request's path: it keeps the per-day
//! cost index, the cost and utilisation metrics, drops closed periods from the book and the index
//! at the turn of the UTC day, delivers threshold alerts, feeds the Redis side of the ledger, and
//! answers cost queries.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::NaiveDate;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tracing::info;

use crate::outbox::Outbox;
use crate::budget::alert::AlertNotifier;
use crate::budget::book::{Alert, Exhausted, LineState, SpendBook};
use crate::budget::event::{CostEvent, DaySpend};
use crate::budget::index::CostIndex;
use crate::budget::ledger::{FileLedger, LedgerError};
use crate::budget::money::NanoUsd;
use crate::budget::period::{date_of, midnight_ms, now_ms};
use crate::budget::BudgetPolicy;
use crate::budget::redis_sink::{RedisLedgerSettings, RedisSink};
use crate::budget::cost_peer::CostPeer;
use crate::budget::lease_client::{LeaseClient, LeaseError};
use crate::budget::lease_owner::{LeaseOwner, OwnerArgs};
use crate::budget::lease_replica::{LeaseReplica, ReplicaArgs};
use crate::cluster::wire;
use crate::metrics::Metrics;

/// A cost query from the Admin API (JSON between nodes, see `cost_peer`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Cost by feature over [start, end).
    ByFeature {
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
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Cost per feature (untagged requests under `""`), most expensive first.
    ByFeature(Vec<(String, NanoUsd)>),
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

/// The node's spend, shared by the actor and the request tasks.
pub(crate) type SharedBook = Arc<Mutex<SpendBook>>;

pub(crate) fn lock(book: &SharedBook) -> MutexGuard<'_, SpendBook> {
    book.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The actor; its state is [`BudgetState`].
#[derive(Debug, Default)]
pub struct Budget;

/// What the budget actor starts with.
#[derive(Debug)]
pub struct BudgetArgs {
    /// Budgets and thresholds.
    pub policy: Arc<BudgetPolicy>,
    /// The spend book, already holding the replayed events.
    book: SharedBook,
    /// Events replayed from the ledger, for the cost index.
    pub replayed: Vec<CostEvent>,
    /// Day summaries of the ledger's older files, for the cost index.
    pub summaries: Vec<DaySpend>,
    /// Alert delivery.
    pub notifier: AlertNotifier,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The Redis side of the ledger, when configured.
    pub redis: Option<RedisSink>,
    /// In a cluster with limits: the lines' owners alert and export utilisation, not this node.
    leased: bool,
    /// Settled requests waiting for the actor, shared with every [`BudgetHandle`].
    settled: Arc<Outbox<Settled>>,
}

/// A settled request as the actor takes it from the outbox.
#[derive(Debug)]
pub struct Settled {
    /// What the request cost.
    event: CostEvent,
    /// Thresholds the settlement crossed.
    alerts: Vec<Alert>,
}

/// The budget actor's state.
#[derive(Debug)]
pub struct BudgetState {
    policy: Arc<BudgetPolicy>,
    book: SharedBook,
    index: CostIndex,
    notifier: AlertNotifier,
    metrics: Arc<Metrics>,
    /// The UTC day closed periods were last dropped from the book and the index.
    pruned_on: NaiveDate,
    redis: Option<RedisSink>,
    leased: bool,
    settled: Arc<Outbox<Settled>>,
}

/// Messages to the budget actor.
#[derive(Debug, RactorMessage)]
pub enum BudgetMessage {
    /// Requests were settled and their events written to the ledger; they wait in the outbox
    /// (see [`crate::outbox`]): index them, count them, deliver the alerts they fired.
    Recorded,
    /// Takes the outbox now and replies: what a reader of the cost metrics asks first.
    Flush(
        /// Reply channel for RPC: done.
        RpcReplyPort<()>,
    ),
    /// Answers a cost query.
    Query(
        CostQuery,
        /// Reply channel for RPC: the report.
        RpcReplyPort<CostReport>,
    ),
}

impl BudgetState {
    /// Sets the utilisation gauges of the request's limited budget lines (none on a node
    /// without budgets, which then skips the book; in a cluster, the lines' owners set them).
    fn utilisation(&self, tenant: &str, user: &str, unix_ms: i64) {
        if self.leased {
            return;
        }
        let limited: Vec<_> = self.policy.lines(tenant, user).into_iter().filter(|line| line.limit.is_some()).collect();
        if limited.is_empty() {
            return;
        }
        let lines = lock(&self.book).state(&limited, unix_ms);
        for line in lines {
            if let Some(limit) = line.limit.filter(|limit| limit.0 > 0) {
                let used = line.spent.0 as f64 / limit.0 as f64;
                self.metrics.budget_utilisation.with_label_values(&[&line.scope.to_string(), line.period.as_str()]).set(used);
            }
        }
    }

    /// Records every settled request waiting in the outbox.
    fn record_settled(&mut self) {
        for Settled { event, alerts } in self.settled.take() {
            self.record(&event, alerts);
        }
    }

    fn record(&mut self, event: &CostEvent, alerts: Vec<Alert>) {
        for alert in alerts {
            self.notifier.notify(alert);
        }
        self.index.add(event);
        if let Some(cost) = event.cost {
            self.metrics.cost_usd.with_label_values(&[&event.model, &event.tenant]).inc_by(cost.as_usd());
            if let Some(feature) = &event.feature {
                self.metrics.feature_cost_usd.with_label_values(&[feature]).inc_by(cost.as_usd());
            }
        }
        self.utilisation(&event.tenant, &event.user, event.unix_ms);
        let today = date_of(event.unix_ms);
        if today > self.pruned_on {
            lock(&self.book).prune(event.unix_ms);
            self.index.prune(today);
            self.pruned_on = today;
        }
        for (direction, tokens) in [("input", event.input_tokens), ("output", event.output_tokens)] {
            self.metrics.tenant_tokens.with_label_values(&[&event.model, &event.tenant, direction]).inc_by(u64::from(tokens));
        }
        if let Some(redis) = &self.redis {
            redis.push(event.clone());
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
            CostQuery::ByFeature { start, end } => CostReport::ByFeature(self.index.by_feature(start, end)),
            CostQuery::Savings { start, end } => {
                let (total, saved, requests) = self.index.totals(start, end);
                CostReport::Savings { total, saved, requests }
            }
            CostQuery::Budget { tenant, user } => CostReport::Budget(lock(&self.book).state(&self.policy.lines(&tenant, &user), now_ms())),
        }
    }
}

impl Actor for Budget {
    type Msg = BudgetMessage;
    type State = BudgetState;
    type Arguments = BudgetArgs;

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, args: BudgetArgs) -> Result<BudgetState, ActorProcessingErr> {
        let mut index = CostIndex::new(args.policy.retention_days);
        for event in &args.replayed {
            index.add(event);
        }
        for day in &args.summaries {
            index.add_day(day);
        }
        let today = date_of(now_ms());
        index.prune(today);
        if !args.replayed.is_empty() || !args.summaries.is_empty() {
            info!(events = args.replayed.len(), day_summaries = args.summaries.len(), "cost ledger replayed");
        }
        Ok(BudgetState {
            policy: args.policy,
            book: args.book,
            index,
            notifier: args.notifier,
            metrics: args.metrics,
            pruned_on: today,
            redis: args.redis,
            leased: args.leased,
            settled: args.settled,
        })
    }

    async fn handle(&self, _myself: ActorRef<Self::Msg>, message: BudgetMessage, state: &mut BudgetState) -> Result<(), ActorProcessingErr> {
        state.record_settled();
        match message {
            BudgetMessage::Recorded => {}
            BudgetMessage::Flush(reply) => {
                let _caller_gone = reply.send(());
            }
            BudgetMessage::Query(query, reply) => {
                let _caller_gone = reply.send(state.query(query));
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut BudgetState) -> Result<(), ActorProcessingErr> {
        state.record_settled();
        Ok(())
    }
}

/// What request tasks hold: the shared book, the ledger and the actor's address.
#[derive(Clone, Debug)]
pub struct BudgetHandle {
    /// The actor.
    pub actor: ActorRef<BudgetMessage>,
    book: SharedBook,
    /// The ledger, for a final sync at shutdown.
    pub ledger: FileLedger,
    /// The policy.
    pub policy: Arc<BudgetPolicy>,
    metrics: Arc<Metrics>,
    /// In a cluster: where more allowance comes from (see `lease`).
    leases: Option<Arc<LeaseClient>>,
    /// Settled requests on their way to the actor.
    settled: Arc<Outbox<Settled>>,
}

/// What a clustered node's budgets need: its name and who is alive.
#[derive(Clone, Debug)]
pub struct BudgetCluster {
    /// This node's name.
    pub this_node: String,
    /// Who is alive.
    pub view: tokio::sync::watch::Receiver<crate::cluster::membership::ClusterView>,
}

/// Why a reservation was refused.
#[derive(Debug)]
pub enum Refused {
    /// A budget is spent (cluster-wide in a cluster).
    Exhausted(Exhausted),
    /// No owner of the budget could be reached: the request is not admitted unchecked.
    Unavailable(String),
}

impl BudgetHandle {
    /// Opens the ledger at `ledger_path`, replays it into the book, and starts the actor; in a
    /// cluster with limits, also the lease owner and replica (every cell is returned).
    pub async fn start(
        policy: BudgetPolicy,
        ledger_path: &std::path::Path,
        redis: Option<&RedisLedgerSettings>,
        notifier: AlertNotifier,
        cluster: Option<BudgetCluster>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Self, Vec<ractor::ActorCell>)> {
        use anyhow::Context as _;
        if policy.clock_offset_ms != 0 {
            if !crate::budget::period::set_clock_offset_ms(policy.clock_offset_ms) {
                anyhow::bail!("the budget clock is already shifted by another offset in this process");
            }
            tracing::warn!(offset_ms = policy.clock_offset_ms, "the budget clock is shifted (tenancy.budget_clock_offset_ms): periods and cost timestamps are not UTC now");
        }
        let (ledger, replay) = FileLedger::open(ledger_path)?;
        let redis = redis.map(|settings| RedisSink::start(settings, &replay.events)).transpose()?;
        let policy = Arc::new(policy);
        let now = now_ms();
        let leased = cluster.is_some() && policy.has_limits();
        let mut spend = if leased { SpendBook::clustered(policy.thresholds.clone()) } else { SpendBook::new(policy.thresholds.clone()) };
        for event in &replay.events {
            spend.record(&policy.lines(&event.tenant, &event.user), event.charged(), event.unix_ms);
        }
        for day in &replay.summaries {
            spend.record(&policy.lines(&day.tenant, &day.user), day.cost, midnight_ms(day.date));
        }
        spend.prune(now);
        let book = Arc::new(Mutex::new(spend));
        let settled = Arc::new(Outbox::default());
        let args = BudgetArgs {
            policy: Arc::clone(&policy),
            book: Arc::clone(&book),
            replayed: replay.events,
            summaries: replay.summaries,
            notifier: notifier.clone(),
            metrics: Arc::clone(&metrics),
            redis,
            leased,
            settled: Arc::clone(&settled),
        };
        let (actor, _join) = Actor::spawn(None, Budget, args).await.context("failed to start the budget actor")?;
        let mut cells = vec![actor.get_cell()];
        if let Some(cluster) = &cluster {
            let name = wire::actor_name("cost-peer", &cluster.this_node);
            let (peer, _join) = Actor::spawn(Some(name), CostPeer, actor.clone()).await.context("failed to start the cost peer")?;
            cells.push(peer.get_cell());
        }
        let leases = match cluster.filter(|_| policy.has_limits()) {
            None => None,
            Some(cluster) => {
                let incarnation = u64::try_from(now).unwrap_or(0);
                let owner_args = OwnerArgs {
                    this_node: cluster.this_node.clone(),
                    view: cluster.view.clone(),
                    metrics: Arc::clone(&metrics),
                    notifier,
                    thresholds: policy.thresholds.clone(),
                };
                let (owner, _join) = Actor::spawn(Some(wire::actor_name("lease-owner", &cluster.this_node)), LeaseOwner, owner_args).await.context("failed to start the lease owner")?;
                let replica_args = ReplicaArgs { this_node: cluster.this_node.clone(), incarnation, book: Arc::clone(&book), view: cluster.view.clone() };
                let (replica, _join) =
                    Actor::spawn(Some(wire::actor_name("lease-replica", &cluster.this_node)), LeaseReplica, replica_args).await.context("failed to start the lease replica")?;
                cells.extend([owner.get_cell(), replica.get_cell()]);
                Some(Arc::new(LeaseClient::new(&cluster.this_node, incarnation, cluster.view, Arc::clone(&metrics))))
            }
        };
        Ok((Self { actor, book, ledger, policy, metrics, leases, settled }, cells))
    }

    /// Reserves up to `amount` on every budget line of (`tenant`, `user`), or refuses naming
    /// the line it would exhaust; `enforce: false` reserves without checking limits. In a
    /// cluster a limited line must fit this node's allowance; when it does not, the line's owner
    /// is asked for more (the one wait, and only then), and the budget is exhausted when the
    /// owner has none left.
    pub async fn reserve(&self, tenant: &str, user: &str, amount: NanoUsd, unix_ms: i64, enforce: bool) -> Result<u64, Refused> {
        let lines = self.policy.lines(tenant, user);
        let result = match (&self.leases, enforce) {
            (Some(leases), true) => {
                let mut outcome = Err(Refused::Unavailable("no allowance after asking".into()));
                for _ in 0..3 {
                    let shortfalls = match lock(&self.book).reserve_within_allowances(&lines, amount, unix_ms) {
                        Ok(id) => {
                            outcome = Ok(id);
                            break;
                        }
                        Err(shortfalls) => shortfalls,
                    };
                    match leases.acquire(&self.book, &shortfalls, unix_ms).await {
                        Ok(()) => {}
                        Err(LeaseError::Exhausted(exhausted)) => {
                            outcome = Err(Refused::Exhausted(exhausted));
                            break;
                        }
                        Err(LeaseError::Unreachable(why)) => {
                            outcome = Err(Refused::Unavailable(why));
                            break;
                        }
                    }
                }
                outcome
            }
            _ => lock(&self.book).reserve(&lines, amount, unix_ms, enforce).map_err(Refused::Exhausted),
        };
        if let Err(Refused::Exhausted(exhausted)) = &result {
            self.metrics.budget_rejections.with_label_values(&[&exhausted.scope.to_string(), exhausted.period.as_str()]).inc();
        }
        result
    }

    /// Gives a reservation back without spending.
    pub fn release(&self, reservation: u64) {
        lock(&self.book).release(reservation);
    }

    /// Waits (up to [`crate::outbox::FLUSH_WAIT_MS`]) until the actor has taken every settled request so far: indexed
    /// it, counted it in the cost metrics, sent its alerts on their way.
    pub async fn flush(&self) {
        let _stopped_or_slow = ractor::call_t!(self.actor, BudgetMessage::Flush, crate::outbox::FLUSH_WAIT_MS);
    }

    /// Settles `reservation` (or, without one, records) with `event`'s charge, writes the event
    /// to the ledger and returns once it is written; the actor indexes it (within
    /// [`crate::outbox::SOON`]) and delivers any threshold alerts (at once). The book and the
    /// actor have the event before the write is awaited, so a request that stops waiting for it
    /// leaves nothing half done (its queued line is written all the same).
    pub async fn settle(&self, reservation: Option<u64>, event: CostEvent) -> Result<(), LedgerError> {
        let cost = event.charged();
        let lines = if reservation.is_none() { self.policy.lines(&event.tenant, &event.user) } else { Vec::new() };
        let alerts = {
            let mut book = lock(&self.book);
            match reservation {
                Some(id) => book.settle(id, cost),
                None => {
                    book.record(&lines, cost, event.unix_ms);
                    Vec::new()
                }
            }
        };
        let queued = self.ledger.queue(&event);
        let urgent = !alerts.is_empty();
        self.settled.deliver(Settled { event, alerts }, urgent, &self.actor, || BudgetMessage::Recorded);
        self.ledger.written(queued?).await
    }
}
