//! The closed-loop load generator behind `switchyard-loadtest bench` and `ramp`.
//!
//! A benchmark runs `concurrency` workers, each sending one request after another to the target
//! for a warm-up (not recorded) and then for a duration or a number of requests. Each worker keeps
//! its own latency histogram, merged at the end, so the loop shares nothing but a clock check and,
//! when counting requests, one atomic.
//!
//! # Layout
//! - `client`: [`Target`] and the per-worker clients (pooled HTTP, one gRPC channel per worker).
//! - `report`: [`BenchReport`] and [`RampReport`].
//! - [`cold_start`]: process start to `/ready`.

mod client;
pub mod cold_start;
mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, ensure};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use client::Target;
pub use report::{BenchReport, RampReport};

use client::{ClientFactory, RequestTemplate, WorkerClient};

/// Default model of the requests.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// Default user message of the requests.
pub const DEFAULT_PROMPT: &str = "What is a railway switchyard used for?";
/// Default token limit of the answers.
pub const DEFAULT_MAX_TOKENS: u32 = 16;
/// Default concurrency levels of a ramp.
pub const DEFAULT_RAMP_LEVELS: &[usize] = &[1, 2, 4, 8, 16, 32, 64];
/// Default p99 budget of a ramp, in microseconds.
pub const DEFAULT_P99_BUDGET_US: u64 = 10_000;
/// Highest latency the histograms track; slower answers are recorded as this.
const MAX_TRACKED_LATENCY_US: u64 = 3_600_000_000;

/// When the measured part of a benchmark ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCondition {
    /// After this long.
    Duration(Duration),
    /// After this many requests, successful or not, across all workers.
    Requests(u64),
}

/// Settings of one benchmark run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// What to call.
    pub target: Target,
    /// Number of closed-loop workers.
    pub concurrency: usize,
    /// When the measured part ends.
    pub stop: StopCondition,
    /// How long to send requests before measuring.
    pub warmup: Duration,
    /// The model or route name of the requests.
    pub model: String,
    /// The user message of the requests.
    pub prompt: String,
    /// The answers' token limit.
    pub max_tokens: u32,
    /// Time limit of one request; a request that exceeds it counts as an error.
    pub request_timeout: Duration,
    /// The API key requests carry (a bearer token), if any.
    pub api_key: Option<String>,
}

impl BenchConfig {
    /// The defaults: concurrency 1 for 10 s after a 1 s warm-up, model `gpt-4o-mini`, 16 tokens,
    /// a 30 s request timeout.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            concurrency: 1,
            stop: StopCondition::Duration(Duration::from_secs(10)),
            warmup: Duration::from_secs(1),
            model: DEFAULT_MODEL.to_owned(),
            prompt: DEFAULT_PROMPT.to_owned(),
            max_tokens: DEFAULT_MAX_TOKENS,
            request_timeout: Duration::from_secs(30),
            api_key: None,
        }
    }
}

/// Settings of a ramp: one benchmark per concurrency level.
#[derive(Clone, Debug)]
pub struct RampConfig {
    /// Settings of each level's benchmark; its `concurrency` is replaced by the level.
    pub bench: BenchConfig,
    /// The concurrency levels, in the order to run them.
    pub levels: Vec<usize>,
    /// The p99 budget that picks `max_rps_with_p99_under_us`, in microseconds.
    pub p99_budget_us: u64,
}

/// What one worker measured.
struct WorkerTally {
    /// Latencies of the successful measured requests, in microseconds.
    latencies_us: Histogram<u64>,
    /// Failed measured requests.
    errors: u64,
    /// The first failure.
    first_error_opt: Option<String>,
    /// When the worker's last request ended.
    finished_at: Instant,
}

/// The plan every worker follows.
struct Schedule {
    /// End of the warm-up, start of the measurement.
    measure_from: Instant,
    /// End of the measurement for a timed run.
    measure_until_opt: Option<Instant>,
    /// Requests left to send for a counted run.
    remaining_opt: Option<AtomicU64>,
}

impl Schedule {
    /// Whether a request starting at `now` is measured, or `None` when the worker must stop.
    fn admit(&self, now: Instant) -> Option<bool> {
        if now < self.measure_from {
            return Some(false);
        }
        if self.measure_until_opt.is_some_and(|until| now >= until) {
            return None;
        }
        match &self.remaining_opt {
            Some(remaining) => remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .ok()
                .map(|_| true),
            None => Some(true),
        }
    }
}

/// Runs one benchmark and returns its figures.
pub async fn run_bench(config: &BenchConfig) -> anyhow::Result<BenchReport> {
    ensure!(config.concurrency > 0, "concurrency must be at least 1");
    let template = RequestTemplate {
        model: config.model.clone(),
        prompt: config.prompt.clone(),
        max_tokens: config.max_tokens,
        api_key: config.api_key.clone(),
    };
    let factory = ClientFactory::new(
        &config.target,
        &template,
        config.concurrency,
        config.request_timeout,
    )?;

    let measure_from = Instant::now() + config.warmup;
    let schedule = Arc::new(match config.stop {
        StopCondition::Duration(duration) => Schedule {
            measure_from,
            measure_until_opt: Some(measure_from + duration),
            remaining_opt: None,
        },
        StopCondition::Requests(requests) => Schedule {
            measure_from,
            measure_until_opt: None,
            remaining_opt: Some(AtomicU64::new(requests)),
        },
    });
    tracing::debug!(target = %config.target, concurrency = config.concurrency, "benchmark starting");

    let mut workers = JoinSet::new();
    for _ in 0..config.concurrency {
        let latencies_us = Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_US, 3)
            .context("failed to create a latency histogram")?;
        workers.spawn(run_worker(
            factory.worker_client(),
            Arc::clone(&schedule),
            latencies_us,
        ));
    }

    let mut latencies_us = Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_LATENCY_US, 3)
        .context("failed to create a latency histogram")?;
    let mut errors = 0;
    let mut first_error_opt = None;
    let mut finished_at = measure_from;
    while let Some(joined) = workers.join_next().await {
        let tally = joined.context("a benchmark worker panicked")?;
        latencies_us
            .add(&tally.latencies_us)
            .map_err(|error| anyhow!("failed to merge latency histograms: {error:?}"))?;
        errors += tally.errors;
        first_error_opt = first_error_opt.or(tally.first_error_opt);
        finished_at = finished_at.max(tally.finished_at);
    }

    let seconds = finished_at
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let requests = latencies_us.len();
    Ok(BenchReport {
        target: config.target.to_string(),
        concurrency: config.concurrency,
        requests,
        errors,
        seconds,
        rps: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        p50_us: latencies_us.value_at_quantile(0.50),
        p90_us: latencies_us.value_at_quantile(0.90),
        p99_us: latencies_us.value_at_quantile(0.99),
        max_us: latencies_us.max(),
        first_error_opt,
    })
}

/// One closed-loop worker: sends requests one after another until the schedule says stop.
async fn run_worker(
    mut client: WorkerClient,
    schedule: Arc<Schedule>,
    mut latencies_us: Histogram<u64>,
) -> WorkerTally {
    let mut errors = 0;
    let mut first_error_opt = None;
    loop {
        let started_at = Instant::now();
        let Some(measured) = schedule.admit(started_at) else {
            break;
        };
        let result = client.call().await;
        if !measured {
            continue;
        }
        match result {
            Ok(()) => {
                let elapsed_us =
                    u64::try_from(started_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                latencies_us.saturating_record(elapsed_us.max(1));
            }
            Err(error) => {
                errors += 1;
                first_error_opt.get_or_insert(error);
            }
        }
    }
    WorkerTally {
        latencies_us,
        errors,
        first_error_opt,
        finished_at: Instant::now(),
    }
}

/// Runs one benchmark per concurrency level, calling `on_level` after each, and returns the
/// figures of all of them.
pub async fn run_ramp(
    config: &RampConfig,
    mut on_level: impl FnMut(&BenchReport),
) -> anyhow::Result<RampReport> {
    ensure!(
        !config.levels.is_empty(),
        "a ramp needs at least one concurrency level"
    );
    let mut levels = Vec::with_capacity(config.levels.len());
    for &concurrency in &config.levels {
        let bench = BenchConfig {
            concurrency,
            ..config.bench.clone()
        };
        let report = run_bench(&bench)
            .await
            .with_context(|| format!("failed to run the benchmark at concurrency {concurrency}"))?;
        on_level(&report);
        levels.push(report);
    }
    Ok(RampReport::new(
        config.bench.target.to_string(),
        config.p99_budget_us,
        levels,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_schedule_warms_up_measures_then_stops() {
        let now = Instant::now();
        let schedule = Schedule {
            measure_from: now + Duration::from_secs(1),
            measure_until_opt: Some(now + Duration::from_secs(3)),
            remaining_opt: None,
        };
        assert_eq!(schedule.admit(now), Some(false));
        assert_eq!(schedule.admit(now + Duration::from_secs(2)), Some(true));
        assert_eq!(schedule.admit(now + Duration::from_secs(3)), None);
    }

    #[test]
    fn a_counted_schedule_admits_exactly_n_requests() {
        let now = Instant::now();
        let schedule = Schedule {
            measure_from: now,
            measure_until_opt: None,
            remaining_opt: Some(AtomicU64::new(2)),
        };
        assert_eq!(schedule.admit(now), Some(true));
        assert_eq!(schedule.admit(now), Some(true));
        assert_eq!(schedule.admit(now), None);
    }
}
