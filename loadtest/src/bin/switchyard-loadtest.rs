//! `switchyard-loadtest`: closed-loop benchmarks against the simulator or the gateway.
//!
//! - `bench` runs one benchmark and prints a summary, then one JSON line with the figures.
//! - `ramp` runs one benchmark per concurrency level, prints a line per level, then one JSON
//!   line with every level and the best throughput within a p99 budget.
//!
//! Targets are `http://host:port` (OpenAI `POST /v1/chat/completions`, unary) or
//! `grpc://host:port` (`switchyard.v1.Gateway/Generate`). The tool shares the machine with the
//! server under test, so it runs on a small runtime (`--threads`, default 2).

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use switchyard_loadtest::bench::{
    self, BenchConfig, DEFAULT_MAX_TOKENS, DEFAULT_MODEL, DEFAULT_P99_BUDGET_US, DEFAULT_PROMPT,
    RampConfig, StopCondition, Target,
};
use tracing_subscriber::EnvFilter;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "switchyard-loadtest",
    version,
    about = "Closed-loop load generator for Switchyard"
)]
struct Cli {
    /// Worker threads of the load generator's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// What to run.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run one benchmark at a fixed concurrency.
    Bench(BenchArgs),
    /// Run a benchmark at each of several concurrency levels.
    Ramp(RampArgs),
}

/// Flags shared by `bench` and `ramp`.
#[derive(Debug, Args)]
struct TargetArgs {
    /// `http://host:port` or `grpc://host:port`.
    #[arg(long)]
    target: String,
    /// Seconds of requests sent before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Model or route name of the requests.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// User message of the requests.
    #[arg(long, default_value = DEFAULT_PROMPT)]
    prompt: String,
    /// Token limit of the answers.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    max_tokens: u32,
    /// Seconds before a request counts as failed.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

/// Flags of `bench`.
#[derive(Debug, Args)]
struct BenchArgs {
    /// The target and the requests.
    #[command(flatten)]
    target: TargetArgs,
    /// Number of closed-loop workers.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0, conflicts_with = "requests")]
    duration: f64,
    /// Number of requests to measure, instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
}

/// Flags of `ramp`.
#[derive(Debug, Args)]
struct RampArgs {
    /// The target and the requests.
    #[command(flatten)]
    target: TargetArgs,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = bench::DEFAULT_RAMP_LEVELS.to_vec())]
    levels: Vec<usize>,
    /// Seconds to measure at each level.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The p99 budget, in microseconds, for `max_rps_with_p99_under_us`.
    #[arg(long, default_value_t = DEFAULT_P99_BUDGET_US)]
    p99_budget_us: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    runtime.block_on(run(cli.command))
}

/// Runs the subcommand and prints its results.
async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Bench(args) => {
            let mut config = bench_config(&args.target)?;
            config.concurrency = args.concurrency;
            config.stop = match args.requests {
                Some(requests) => StopCondition::Requests(requests),
                None => StopCondition::Duration(seconds("--duration", args.duration)?),
            };
            let report = bench::run_bench(&config).await?;
            println!("{report}");
            println!(
                "{}",
                serde_json::to_string(&report).context("failed to encode the report")?
            );
        }
        Command::Ramp(args) => {
            let mut bench = bench_config(&args.target)?;
            bench.stop = StopCondition::Duration(seconds("--duration", args.duration)?);
            let config = RampConfig {
                bench,
                levels: args.levels,
                p99_budget_us: args.p99_budget_us,
            };
            let report =
                bench::run_ramp(&config, |level| println!("{}", level.level_line())).await?;
            match report.max_rps_with_p99_under_us {
                Some(rps) => println!(
                    "best: {rps:.1} req/s with p99 <= {} us",
                    report.p99_budget_us
                ),
                None => println!("best: no level kept p99 <= {} us", report.p99_budget_us),
            }
            println!(
                "{}",
                serde_json::to_string(&report).context("failed to encode the report")?
            );
        }
    }
    Ok(())
}

/// The benchmark settings shared by both subcommands.
fn bench_config(args: &TargetArgs) -> anyhow::Result<BenchConfig> {
    let target: Target = args.target.parse()?;
    let mut config = BenchConfig::new(target);
    config.warmup = seconds("--warmup", args.warmup)?;
    config.model.clone_from(&args.model);
    config.prompt.clone_from(&args.prompt);
    config.max_tokens = args.max_tokens;
    config.request_timeout = seconds("--timeout", args.timeout)?;
    Ok(config)
}

/// A flag's seconds as a duration.
fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    if !value.is_finite() || value < 0.0 {
        bail!("{flag} must be a non-negative number of seconds, not {value}");
    }
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} {value} is out of range"))
}
