//! `switchyard-sim`: runs the upstream simulator, an OpenAI- and Anthropic-compatible HTTP server
//! (chat completions, messages, token counts, embeddings) with deterministic answers, tool calls
//! and structured output, and injectable faults, until SIGINT or SIGTERM.
//!
//! Once bound it prints `switchyard-sim listening on <addr>` on stdout; logs go to stderr and
//! follow `RUST_LOG` (default `info`). Behaviours and faults are changed at run time through
//! `PUT /_sim/behaviour`.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use switchyard_loadtest::sim::{self, Behaviour, DEFAULT_ANSWER_TOKENS, SimConfig};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "switchyard-sim",
    version,
    about = "Upstream LLM simulator for Switchyard"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Default time to the first token, in milliseconds.
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Default pace of the tokens after the first; 0 sends them without delay.
    #[arg(long, default_value_t = 0)]
    tokens_per_sec: u64,
    /// Default number of tokens of an answer.
    #[arg(long, default_value_t = DEFAULT_ANSWER_TOKENS)]
    answer_tokens: u32,
    /// Worker threads of the runtime; all cores when absent.
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    runtime.block_on(run(args))
}

/// Serves until a termination signal.
async fn run(args: Args) -> anyhow::Result<()> {
    let config = SimConfig {
        default_behaviour: Behaviour {
            ttft_ms: args.ttft_ms,
            tokens_per_sec: args.tokens_per_sec,
            answer_tokens: args.answer_tokens,
            ..Behaviour::default()
        },
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("failed to read the listening address")?;
    println!("switchyard-sim listening on {addr}");
    tracing::info!(%addr, behaviour = ?config.default_behaviour, "simulator started");
    sim::serve(listener, config, shutdown_signal()).await?;
    tracing::info!("simulator stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "failed to listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!(signal = "SIGINT", "shutting down"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}
