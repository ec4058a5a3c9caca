//! `switchyard-loadtest`: closed-loop benchmarks against the simulator or the gateway.
//!
//! - `bench` runs one benchmark and prints a summary, then one JSON line with the figures.
//! - `ramp` runs one benchmark per concurrency level, prints a line per level, then one JSON
//!   line with every level and the best throughput within a p99 budget.
//! - `semantic-embed`, `semantic-fit` and `semantic-eval`: the semantic cache's quality benchmark
//!   on labelled question pairs (embed them once, fit the hit policy on the train split, measure
//!   it against plain cosine on the test split; the last line is JSON). `semantic-weights`
//!   compares the encoder's int8 weights with its f32 weights on the test split: vectors,
//!   flipped decisions and both evaluations.
//! - `build-workload` writes a workload (JSONL `{"prompt", "group", "tenant"}`) from labelled
//!   pairs and real prompts; `run` replays one open- or closed-loop and reports percentiles by
//!   cache layer, hit ratios, semantic precision, errors by kind and cost avoided (JSON last,
//!   Markdown and SVG on request); `cold-start` times a node from start to `/ready`.
//! - `floor-http` and `floor-grpc` serve the node's stack with none of its pipeline, to measure
//!   what a request costs before the gateway does anything (see [`switchyard_loadtest::floor`]).
//!
//! Targets are `http://host:port` (OpenAI `POST /v1/chat/completions`, unary) or
//! `grpc://host:port` (`switchyard.v1.Gateway/Generate`). The tool shares the machine with the
//! server under test, so it runs on a small runtime (`--threads`, default 2).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use switchyard_actors::cache::semantic::policy::{CalibrationPoint, HitPolicy};
use switchyard_actors::embed::{DEFAULT_MODEL_DIR, MODEL_DIR_ENV, WeightFormat};
use switchyard_loadtest::bench::{
    self, BenchConfig, DEFAULT_MAX_TOKENS, DEFAULT_MODEL, DEFAULT_P99_BUDGET_US, DEFAULT_PROMPT,
    RampConfig, StopCondition, Target,
};
use switchyard_loadtest::floor;
use switchyard_loadtest::workload;
use switchyard_loadtest::semantic::embeddings::{self, EmbeddingSource};
use switchyard_loadtest::semantic::{eval, weights};
use switchyard_loadtest::semantic::fit::{self, FitSettings};
use switchyard_loadtest::semantic::pairs::{PairSet, SplitPart};
use tracing_subscriber::EnvFilter;

/// The node's allocator, so the floor servers measure the stack the node runs on.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Embed every distinct text of a labelled pairs file into the on-disk embedding cache.
    SemanticEmbed(SemanticDataArgs),
    /// Fit the semantic cache's hit policy on the train split and write its parameters file.
    SemanticFit(SemanticFitArgs),
    /// Measure a hit policy against plain cosine on the test split of labelled pairs.
    SemanticEval(SemanticEvalArgs),
    /// Compare the encoder's int8 and f32 weights on the test split: vectors and decisions.
    SemanticWeights(SemanticEvalArgs),
    /// Write a workload from labelled pairs and real prompts.
    BuildWorkload(BuildWorkloadArgs),
    /// Replay a workload against a node (or an upstream) and score it.
    Run(RunArgs),
    /// Time a node from process start to its first 200 from /ready.
    ColdStart(ColdStartArgs),
    /// Serve a bare HTTP forwarder built from the node's stack, none of its pipeline.
    FloorHttp(FloorHttpArgs),
    /// Serve a bare gRPC `Generate` answering one fixed response (from Redis with `--redis`).
    FloorGrpc(FloorGrpcArgs),
}

/// Flags of `build-workload`.
#[derive(Debug, Args)]
struct BuildWorkloadArgs {
    /// Labelled pairs, JSONL `{"a", "b", "duplicate"}` (e.g. ../shared/data/qqp-dev.jsonl).
    #[arg(long)]
    pairs: PathBuf,
    /// Real prompts: a JSON array or JSONL of objects with a "prompt".
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Where to write the workload.
    #[arg(long)]
    out: PathBuf,
    /// Lines to write.
    #[arg(long, default_value_t = 5_000)]
    count: usize,
    /// Share of lines repeating an earlier one exactly.
    #[arg(long, default_value_t = 0.3)]
    repeat: f64,
    /// Share of lines paraphrasing an earlier one (the other side of a duplicate pair).
    #[arg(long, default_value_t = 0.2)]
    paraphrase: f64,
    /// Tenants to spread the lines over.
    #[arg(long, default_value_t = 1)]
    tenants: usize,
    /// Seed of the choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// Flags of `run`.
#[derive(Debug, Args)]
struct RunArgs {
    /// `http://host:port` or `grpc://host:port`.
    #[arg(long)]
    target: Target,
    /// The workload file.
    #[arg(long)]
    workload: PathBuf,
    /// Closed loop: this many workers (the default, 8, unless --rate is given).
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: this many requests a second.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds to run (the default, 30, unless --requests is given).
    #[arg(long, conflicts_with = "requests")]
    duration: Option<f64>,
    /// Requests to send, cycling through the workload.
    #[arg(long)]
    requests: Option<u64>,
    /// Model or route of every request.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Token limit of the answers.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    max_tokens: u32,
    /// A tenant's API key, `TENANT=KEY`; repeatable.
    #[arg(long = "key", value_parser = tenant_key)]
    keys: Vec<(String, String)>,
    /// The API key of tenants without their own.
    #[arg(long)]
    api_key: Option<String>,
    /// Also send the same load straight at this upstream URL (e.g. the simulator) and report both.
    #[arg(long)]
    compare_direct: Option<Target>,
    /// Write the report as Markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write the latency-over-time and percentile plot here (SVG).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Most requests in flight in open loop.
    #[arg(long, default_value_t = 4_096)]
    max_in_flight: usize,
}

/// Flags of `cold-start`.
#[derive(Debug, Args)]
struct ColdStartArgs {
    /// The switchyard binary.
    #[arg(long, default_value = "target/release/switchyard")]
    binary: PathBuf,
    /// Its config file.
    #[arg(long)]
    config: PathBuf,
    /// The readiness URL of that config.
    #[arg(long, default_value = "http://127.0.0.1:8080/ready")]
    ready_url: String,
    /// Starts to measure.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

fn tenant_key(value: &str) -> Result<(String, String), String> {
    value.split_once('=').map(|(tenant, key)| (tenant.to_owned(), key.to_owned())).filter(|(tenant, key)| !tenant.is_empty() && !key.is_empty()).ok_or_else(|| format!("expected TENANT=KEY, not {value:?}"))
}

/// Flags of `floor-http`.
#[derive(Debug, Args)]
struct FloorHttpArgs {
    /// Address to serve `POST /v1/chat/completions` on.
    #[arg(long)]
    listen: SocketAddr,
    /// Base URL requests are forwarded to, e.g. `http://127.0.0.1:9100/v1`.
    #[arg(long)]
    upstream: String,
}

/// Flags of `floor-grpc`.
#[derive(Debug, Args)]
struct FloorGrpcArgs {
    /// Address to serve `switchyard.v1.Gateway/Generate` on.
    #[arg(long)]
    listen: SocketAddr,
    /// Redis URL; when given, every call reads the answer from there.
    #[arg(long)]
    redis: Option<String>,
}

/// Flags of `semantic-fit`.
#[derive(Debug, Args)]
struct SemanticFitArgs {
    /// The pairs and their vectors.
    #[command(flatten)]
    data: SemanticDataArgs,
    /// Where to write the parameters (the shipped file is
    /// `actors/src/cache/semantic/policy-params.json`).
    #[arg(long)]
    out: PathBuf,
    /// Widths of the hidden layers, comma-separated; `0` fits a logistic regression.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    hidden: Vec<usize>,
    /// Most passes over the fit pairs.
    #[arg(long, default_value_t = 60)]
    epochs: usize,
    /// Epochs without a better validation score before stopping.
    #[arg(long, default_value_t = 8)]
    patience: usize,
    /// Pairs per optimiser step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    learning_rate: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-2)]
    weight_decay: f64,
    /// Seed of the initial weights and batch order.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Networks trained from seeds `seed`, `seed + 1`, … whose mean logit is the score.
    #[arg(long, default_value_t = 1)]
    ensemble: usize,
    /// Fit once per train fold and calibrate on every train pair, each scored by the fit that
    /// held its fold out (five fits); without it the calibration uses the validation part only.
    #[arg(long)]
    cross_fit: bool,
}

/// Flags of `semantic-eval`.
#[derive(Debug, Args)]
struct SemanticEvalArgs {
    /// The pairs and their vectors.
    #[command(flatten)]
    data: SemanticDataArgs,
    /// Evaluate only the first N test pairs (with --all, the first N pairs).
    #[arg(long)]
    limit: Option<usize>,
    /// Score every pair of the file, not only its test split: for a file the policy was never
    /// fitted on (another split, another dataset), all of it is held out.
    #[arg(long)]
    all: bool,
    /// A parameters file to evaluate instead of the shipped policy.
    #[arg(long)]
    policy: Option<PathBuf>,
}

/// Flags shared by the semantic cache quality commands.
#[derive(Debug, Args)]
struct SemanticDataArgs {
    /// JSON-lines file of `{"a": str, "b": str, "duplicate": bool}`.
    #[arg(long)]
    pairs: PathBuf,
    /// The local embedding model directory.
    #[arg(long, env = MODEL_DIR_ENV, default_value = DEFAULT_MODEL_DIR)]
    model_dir: PathBuf,
    /// Where sentence vectors are cached (default: `semantic-eval` beside the binary's directory,
    /// i.e. `target/semantic-eval`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Embed without reading or writing the cache.
    #[arg(long)]
    no_cache: bool,
    /// The encoder's weight format, `f32` or `int8` (default: the embedder's); vectors of each
    /// are cached apart.
    #[arg(long, default_value_t = WeightFormat::default().name().to_owned())]
    weights: String,
}

impl SemanticDataArgs {
    /// Where the vectors come from.
    fn embedding_source(&self) -> anyhow::Result<EmbeddingSource> {
        let cache_dir = if self.no_cache {
            None
        } else {
            match &self.cache_dir {
                Some(dir) => Some(dir.clone()),
                None => Some(default_cache_dir()?),
            }
        };
        let weights = self.weights.parse().map_err(|error: String| anyhow::anyhow!("--weights: {error}"))?;
        Ok(EmbeddingSource {
            model_dir: self.model_dir.clone(),
            cache_dir,
            weights,
        })
    }
}

/// `target/semantic-eval` when the binary runs from `target/<profile>/`.
fn default_cache_dir() -> anyhow::Result<PathBuf> {
    let executable = std::env::current_exe().context("failed to locate the running binary")?;
    let profile_dir = executable
        .parent()
        .context("the binary has no parent directory")?;
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    Ok(target_dir.join("semantic-eval"))
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
    /// API key the requests carry as a bearer token.
    #[arg(long, env = "SWITCHYARD_LOADTEST_API_KEY")]
    api_key: Option<String>,
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
    // The semantic commands are CPU work on the calling thread: no runtime.
    match &cli.command {
        Command::SemanticEmbed(args) => {
            let set = PairSet::read(&args.pairs)?;
            embeddings::text_vectors(&set, None, &args.embedding_source()?)?;
            println!(
                "{} texts of {} pairs embedded",
                set.texts.len(),
                set.pairs.len()
            );
            return Ok(());
        }
        Command::SemanticFit(args) => return semantic_fit(args),
        Command::SemanticEval(args) => return semantic_eval(args),
        Command::SemanticWeights(args) => return semantic_weights(args),
        Command::BuildWorkload(args) => return build_workload(args),
        Command::Bench(_) | Command::Ramp(_) | Command::Run(_) | Command::ColdStart(_) | Command::FloorHttp(_) | Command::FloorGrpc(_) => {}
    }
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
        Command::SemanticEmbed(_) | Command::SemanticFit(_) | Command::SemanticEval(_) | Command::SemanticWeights(_) | Command::BuildWorkload(_) => {
            bail!("this command runs without a runtime")
        }
        Command::Run(args) => run_workload(args).await?,
        Command::ColdStart(args) => cold_start(args).await?,
        Command::FloorHttp(args) => floor::serve_http(floor::bind(args.listen).await?, &args.upstream).await?,
        Command::FloorGrpc(args) => floor::serve_grpc(floor::bind(args.listen).await?, args.redis.as_deref()).await?,
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

/// `build-workload`.
fn build_workload(args: &BuildWorkloadArgs) -> anyhow::Result<()> {
    let pairs = workload::read_pairs(&args.pairs)?;
    let prompts = args.prompts.as_deref().map(workload::read_prompts).transpose()?.unwrap_or_default();
    let settings = workload::BuildSettings { count: args.count, repeat: args.repeat, paraphrase: args.paraphrase, tenants: args.tenants, seed: args.seed };
    let lines = workload::build_workload(&pairs, &prompts, &settings)?;
    workload::write_workload(&args.out, &lines)?;
    let distinct = lines.iter().map(|line| line.prompt.as_str()).collect::<std::collections::HashSet<_>>().len();
    println!("{}: {} lines, {distinct} distinct prompts", args.out.display(), lines.len());
    Ok(())
}

/// `run`: replays the workload (and again straight at `--compare-direct`), prints Markdown,
/// then one JSON line.
async fn run_workload(args: RunArgs) -> anyhow::Result<()> {
    let lines = std::sync::Arc::new(workload::read_workload(&args.workload)?);
    let pace = match (args.rate, args.concurrency) {
        (Some(rate), _) => workload::Pace::Open(rate),
        (None, concurrency) => workload::Pace::Closed(concurrency.unwrap_or(8)),
    };
    let stop = match (args.requests, args.duration) {
        (Some(requests), _) => workload::Stop::Requests(requests),
        (None, duration) => workload::Stop::Duration(seconds("--duration", duration.unwrap_or(30.0))?),
    };
    let settings = workload::RunSettings {
        target: args.target.clone(),
        pace,
        stop,
        model: args.model.clone(),
        max_tokens: args.max_tokens,
        keys: args.keys.iter().cloned().collect(),
        default_key: args.api_key.clone(),
        request_timeout: Duration::from_secs(60),
        max_in_flight: args.max_in_flight,
    };
    let report = replay(std::sync::Arc::clone(&lines), settings.clone(), &args.target.to_string()).await?;
    let direct = match &args.compare_direct {
        Some(upstream) => Some(replay(lines, workload::RunSettings { target: upstream.clone(), keys: Default::default(), default_key: None, ..settings }, &upstream.to_string()).await?),
        None => None,
    };
    let mut markdown = report.markdown(&format!("{} ({})", args.target, args.workload.display()));
    if let Some(direct) = &direct {
        markdown.push('\n');
        markdown.push_str(&direct.markdown(&format!("straight at {} (--compare-direct)", args.compare_direct.as_ref().map(ToString::to_string).unwrap_or_default())));
    }
    print!("{markdown}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &markdown).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        workload::plot_svg(&report, path)?;
    }
    let json = serde_json::json!({"target": args.target.to_string(), "report": report, "direct": direct});
    println!("{}", serde_json::to_string(&json).context("failed to encode the report")?);
    Ok(())
}

/// One replay with a progress bar on a terminal (hidden otherwise).
async fn replay(lines: std::sync::Arc<Vec<workload::WorkloadLine>>, settings: workload::RunSettings, target: &str) -> anyhow::Result<workload::WorkloadReport> {
    let bar = match settings.stop {
        workload::Stop::Requests(count) => indicatif::ProgressBar::new(count),
        workload::Stop::Duration(_) => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}] {pos} answered {per_sec}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    bar.set_message(target.to_owned());
    let ticker = bar.clone();
    let report = workload::run_workload(lines, settings, move |done| ticker.set_position(done)).await?;
    bar.finish_and_clear();
    Ok(report)
}

/// `cold-start`: prints each start's time to /ready, then one JSON line with them and the median.
async fn cold_start(args: ColdStartArgs) -> anyhow::Result<()> {
    let settings = switchyard_loadtest::bench::cold_start::ColdStart {
        binary: args.binary.clone(),
        args: vec!["serve".to_owned(), "--config".to_owned(), args.config.display().to_string()],
        ready_url: args.ready_url.clone(),
        timeout: Duration::from_secs(60),
    };
    let mut runs_ms = Vec::with_capacity(args.runs);
    for run in 0..args.runs.max(1) {
        let ready = switchyard_loadtest::bench::cold_start::measure(&settings).await?;
        println!("start {}: ready in {:.1} ms", run + 1, ready.as_secs_f64() * 1e3);
        runs_ms.push(ready.as_secs_f64() * 1e3);
    }
    let mut sorted = runs_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!("{}", serde_json::json!({"binary": args.binary.display().to_string(), "config": args.config.display().to_string(), "runs_ms": runs_ms, "median_ms": median}));
    Ok(())
}

/// `semantic-fit`: fits on the train split, writes the parameters, prints the validation figures
/// and then one JSON line of them.
fn semantic_fit(args: &SemanticFitArgs) -> anyhow::Result<()> {
    let set = PairSet::read(&args.data.pairs)?;
    let vectors = embeddings::text_vectors(&set, None, &args.data.embedding_source()?)?;
    let settings = FitSettings {
        hidden_layers: args
            .hidden
            .iter()
            .copied()
            .filter(|width| *width > 0)
            .collect(),
        epochs: args.epochs,
        patience: args.patience,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        weight_decay: args.weight_decay,
        seed: args.seed,
        ensemble: args.ensemble,
        ..FitSettings::default()
    };
    let outcome = if args.cross_fit {
        fit::cross_fit(&set, &vectors, &settings)?
    } else {
        fit::fit(&set, &vectors, &settings)?
    };
    let json = fit::parameters_json(&outcome.parameters)?;
    std::fs::write(&args.out, json)
        .with_context(|| format!("failed to write {}", args.out.display()))?;
    println!(
        "fitted on {} pairs, best epoch {}; {} ({} pairs): recall@p0.80 {:.3} (cosine {:.3}), recall@p0.90 {:.3} (cosine {:.3})",
        outcome.fit_pairs,
        outcome.best_epoch,
        if args.cross_fit { "every train pair, each held out of one fit" } else { "validation" },
        outcome.validation_pairs,
        outcome.validation_recall_at_p80,
        outcome.validation_cosine_recall_at_p80,
        outcome.validation_recall_at_p90,
        outcome.validation_cosine_recall_at_p90
    );
    for (scorer, ceiling) in [("policy", &outcome.validation_ceiling), ("cosine", &outcome.validation_cosine_ceiling)] {
        match ceiling {
            Some(cut) => println!(
                "{scorer}: the most precise held-out cut with enough duplicates serves {} pairs, {} duplicates (precision {:.3}, threshold {:.4})",
                cut.served, cut.duplicates, cut.precision, cut.threshold
            ),
            None => println!("{scorer}: no held-out cut serves enough duplicates"),
        }
    }
    println!("cosine weight {}", outcome.parameters.cosine_weight);
    println!("wrote {}", args.out.display());
    let summary = serde_json::json!({
        "fit_pairs": outcome.fit_pairs,
        "validation_pairs": outcome.validation_pairs,
        "best_epoch": outcome.best_epoch,
        "validation_average_precision": outcome.validation_average_precision,
        "validation_recall_at_p80": outcome.validation_recall_at_p80,
        "validation_recall_at_p90": outcome.validation_recall_at_p90,
        "validation_cosine_recall_at_p80": outcome.validation_cosine_recall_at_p80,
        "validation_cosine_recall_at_p90": outcome.validation_cosine_recall_at_p90,
        "loose_similarity": outcome.parameters.loose_similarity,
        "cosine_weight": outcome.parameters.cosine_weight,
        "validation_ceiling": outcome.validation_ceiling,
        "validation_cosine_ceiling": outcome.validation_cosine_ceiling,
        "calibration": calibration_json(&outcome.parameters.calibration),
        "cosine_calibration": calibration_json(&outcome.cosine_calibration),
    });
    println!("{summary}");
    Ok(())
}

/// A calibration table as JSON, values to four decimals.
fn calibration_json(table: &[CalibrationPoint]) -> Vec<serde_json::Value> {
    table
        .iter()
        .map(|point| {
            serde_json::json!({
                "precision": rounded(point.precision),
                "threshold": rounded(point.threshold),
                "recall": rounded(point.recall),
            })
        })
        .collect()
}

/// `value` to four decimals, as an `f64` that prints short.
fn rounded(value: f32) -> f64 {
    (f64::from(value) * 1e4).round() / 1e4
}

/// The policy `semantic-eval` and `semantic-weights` score with: `--policy` or the shipped one.
fn eval_policy(args: &SemanticEvalArgs) -> anyhow::Result<HitPolicy> {
    Ok(match &args.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            HitPolicy::from_json(&text)
                .with_context(|| format!("failed to load the policy in {}", path.display()))?
        }
        None => HitPolicy::shipped().context("failed to load the shipped hit policy")?,
    })
}

/// The pairs `semantic-eval` and `semantic-weights` score (test split, `--all`, `--limit`) and
/// the texts they need.
fn eval_pairs(args: &SemanticEvalArgs, set: &PairSet) -> anyhow::Result<(Vec<usize>, Vec<usize>)> {
    let mut test = if args.all { (0..set.pairs.len()).collect() } else { set.indices_of(SplitPart::Test) };
    if let Some(limit) = args.limit {
        test.truncate(limit);
    }
    if test.is_empty() {
        bail!("{} has no test pairs", args.data.pairs.display());
    }
    let mut needed: Vec<usize> = test
        .iter()
        .flat_map(|&index| {
            let (a, b) = set.text_indices[index];
            [a, b]
        })
        .collect();
    needed.sort_unstable();
    needed.dedup();
    Ok((test, needed))
}

/// `semantic-eval`: scores the test split with the policy and plain cosine, prints a summary and
/// then one JSON line of the figures.
fn semantic_eval(args: &SemanticEvalArgs) -> anyhow::Result<()> {
    let policy = eval_policy(args)?;
    let set = PairSet::read(&args.data.pairs)?;
    let (test, needed) = eval_pairs(args, &set)?;
    let needed_opt = args.limit.map(|_| needed.as_slice());
    let vectors = embeddings::text_vectors(&set, needed_opt, &args.data.embedding_source()?)?;
    let report = eval::evaluate(&set, &vectors, &test, &policy)?;
    for line in report.summary_lines() {
        println!("{line}");
    }
    println!(
        "{}",
        serde_json::to_string(&report).context("failed to encode the report")?
    );
    Ok(())
}

/// `semantic-weights`: the test split's vectors with f32 and with int8 weights (each cached
/// apart; `--weights` is ignored), how far apart they are, how many hit decisions flip at the
/// calibrated thresholds, and both evaluations; one JSON line last.
fn semantic_weights(args: &SemanticEvalArgs) -> anyhow::Result<()> {
    let policy = eval_policy(args)?;
    let set = PairSet::read(&args.data.pairs)?;
    let (test, needed) = eval_pairs(args, &set)?;
    let needed_opt = args.limit.map(|_| needed.as_slice());
    let source = args.data.embedding_source()?;
    let vectors = |weights: WeightFormat| embeddings::text_vectors(&set, needed_opt, &EmbeddingSource { weights, ..source.clone() });
    let (float, int8) = (vectors(WeightFormat::F32)?, vectors(WeightFormat::Int8)?);
    let comparison = weights::compare(&set, &float, &int8, &needed, &test, &policy);
    let (float_report, int8_report) = (eval::evaluate(&set, &float, &test, &policy)?, eval::evaluate(&set, &int8, &test, &policy)?);
    for line in comparison.summary_lines() {
        println!("{line}");
    }
    for (name, report) in [("f32", &float_report), ("int8", &int8_report)] {
        for line in report.summary_lines() {
            println!("{name}: {line}");
        }
    }
    let summary = serde_json::json!({ "comparison": comparison, "f32": float_report, "int8": int8_report });
    println!("{summary}");
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
    config.api_key.clone_from(&args.api_key);
    Ok(config)
}

/// A flag's seconds as a duration.
fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    if !value.is_finite() || value < 0.0 {
        bail!("{flag} must be a non-negative number of seconds, not {value}");
    }
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} {value} is out of range"))
}
