//! `switchyard`: one node of the Switchyard LLM gateway.
//!
//! # Layout
//! - [`config`]: TOML + environment config, validated into the runtime settings.
//! - [`env`]: the environment variable names the node reads.
//! - [`server`]: starting, serving and draining a node.
//! - [`grpc`]: the gRPC front door (`switchyard.v1.Gateway` and `switchyard.v1.Admin`).
//! - [`admin`]: the Admin API's query parameters, shared by both front doors.
//! - [`auth`]: reading the bearer key off a request.
//! - [`cluster`]: the cluster status both front doors report.
//! - [`http`]: the OpenAI-compatible HTTP front door and the operational endpoints.
//! - [`batch`]: batch jobs (OpenAI's Files and Batch APIs): storage, runs, webhooks.
//! - [`error`]: the one mapping of pipeline errors to gRPC codes and HTTP statuses.
//! - [`telemetry`]: logs with trace ids and OTLP trace export.
//! - [`probe`]: `switchyard health`, the health check a container runs.

mod admin;
mod auth;
mod batch;
mod cluster;
mod config;
mod env;
mod error;
mod grpc;
mod http;
mod probe;
mod server;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a request allocates many small buffers (headers,
/// JSON, bodies), and glibc's malloc/free showed as about a tenth of the node's time in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchyard: a clustered LLM gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a node. Without a config file it runs the embedded defaults: gRPC on 127.0.0.1:50051,
    /// HTTP on 127.0.0.1:8080, every provider pointed at switchyard-sim on 127.0.0.1:9100.
    Serve {
        /// TOML config file; given again, each later file overrides the earlier ones key by key
        /// (an array such as `providers` is replaced whole). In the environment: comma-separated.
        #[arg(long, env = env::CONFIG_PATH, value_delimiter = ',')]
        config: Vec<PathBuf>,
        /// Layer the config files over the embedded defaults (their models, prices and routing)
        /// rather than over nothing.
        #[arg(long)]
        with_defaults: bool,
    },
    /// Validates config files (layered as `serve` layers them, with environment overrides
    /// applied) and exits.
    CheckConfig {
        /// TOML config files, later ones overriding earlier ones.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Layer them over the embedded defaults, as `serve --with-defaults` does.
        #[arg(long)]
        with_defaults: bool,
    },
    /// Asks a node whether it is ready: exits 0 when it answers 2xx, 1 otherwise (for container
    /// health checks).
    Health {
        /// The readiness URL.
        #[arg(long, default_value = probe::DEFAULT_URL)]
        url: String,
        /// How long to wait for the answer (e.g. `2s`, `500ms`).
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Health { url, timeout } => probe::run(&url, timeout),
        Command::CheckConfig { files, with_defaults } => {
            let names = shown(&files);
            match config::load(config::Source::Files { paths: &files, over_defaults: with_defaults }) {
                Ok(config) => {
                    println!("{names}: ok ({} providers, {} models)", config.gateway.providers.len(), config.gateway.policy.models().len());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{names}: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config: paths, with_defaults } => {
            let source = if paths.is_empty() { config::Source::Embedded } else { config::Source::Files { paths: &paths, over_defaults: with_defaults } };
            let config = match config::load(source) {
                Ok(config) => config,
                Err(error) => {
                    if paths.is_empty() {
                        eprintln!("embedded defaults: {error}");
                    } else {
                        eprintln!("{}: {error}", shown(&paths));
                    }
                    return ExitCode::FAILURE;
                }
            };
            // SIGHUP reads the same files again (see server::run for what a reload applies).
            let reload_paths = paths.clone();
            let reload = move || {
                let source = if reload_paths.is_empty() {
                    config::Source::Embedded
                } else {
                    config::Source::Files { paths: &reload_paths, over_defaults: with_defaults }
                };
                config::load(source)
            };
            match serve(config, paths.is_empty(), Box::new(reload)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("switchyard: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Config files as errors name them: `base.toml + site.toml`.
fn shown(paths: &[PathBuf]) -> String {
    paths.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(" + ")
}

fn serve(config: config::NodeConfig, embedded: bool, reload: server::Reload) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        builder.worker_threads(threads);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async {
        let telemetry = telemetry::init(&config.telemetry)?;
        if embedded {
            tracing::warn!("no --config given: running the embedded defaults, every provider pointed at switchyard-sim on 127.0.0.1:9100");
        }
        server::run(config, telemetry, reload).await
    })
}
