//! The upstream simulator: an HTTP server speaking the OpenAI Chat Completions and Anthropic
//! Messages wire formats, with deterministic answers, configurable pace and injectable faults.
//!
//! Gateway tests start one in-process with [`spawn`]; the `switchyard-sim` binary runs one with
//! [`serve`].
//!
//! # Endpoints
//! - `POST /v1/chat/completions`: OpenAI, unary or streamed (`stream: true`).
//! - `POST /v1/messages`: Anthropic, unary or streamed.
//! - `GET /v1/models`: the models seen so far or given a behaviour.
//! - `GET /_sim/calls`: [`CallCounts`] since the start or the last reset.
//! - `POST /_sim/reset`: zeroes the counts, forgets per-model and per-caller behaviours, restores
//!   the default.
//! - `GET /_sim/behaviour`: the [`Behaviours`] in force.
//! - `PUT /_sim/behaviour`: `{"model": "name", ...}` sets a model's [`Behaviour`], or the default
//!   one without `model`; with `"caller": "key"` only for calls carrying that API key (bearer or
//!   `x-api-key`), as a provider that fails for one of its customers (one gateway node) only.
//!
//! # Answers
//! The answer to a prompt is `"[sim <fingerprint>]"` followed by space-separated words chosen by
//! the fingerprint (see [`fingerprint`]), [`Behaviour::answer_tokens`] tokens in all, cut to the
//! request's `max_tokens`. Every response to a parsed prompt carries the fingerprint in the
//! `x-sim-fingerprint` header.
//!
//! # Layout
//! - `answer`: the fingerprint, the answer's tokens and the token counts.
//! - `behaviour`: [`Behaviour`] and [`Fault`].
//! - `state`: call counts and behaviours shared by the handlers.
//! - `wire`: request pieces both formats share.
//! - `respond`: pacing, faults and streaming, for any format.
//! - `openai`, `anthropic`: one file per wire format.
//! - `control`: the `/_sim/` endpoints and the model list.

mod answer;
mod anthropic;
mod behaviour;
mod control;
mod openai;
mod respond;
mod state;
mod wire;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use answer::fingerprint;
pub use behaviour::{Behaviour, DEFAULT_ANSWER_TOKENS, Fault};
pub use respond::FINGERPRINT_HEADER;
pub use state::{Behaviours, CallCounts};

use state::SimState;

/// Settings of a simulator.
#[derive(Clone, Debug, Default)]
pub struct SimConfig {
    /// Behaviour of every model without its own; `POST /_sim/reset` restores it.
    pub default_behaviour: Behaviour,
}

/// A running simulator started by [`spawn`]. Dropping it shuts the server down.
pub struct SimHandle {
    /// The address the simulator listens on.
    pub addr: SocketAddr,
    /// State shared with the handlers, for the in-process controls.
    state: Arc<SimState>,
    /// Fires the graceful shutdown.
    shutdown_tx_opt: Option<oneshot::Sender<()>>,
    /// The server task.
    server_opt: Option<JoinHandle<anyhow::Result<()>>>,
}

impl SimHandle {
    /// The base URL, `http://127.0.0.1:<port>`, to which `/v1/...` paths are appended.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The calls counted since the start or the last reset, as `GET /_sim/calls` reports them.
    pub fn calls(&self) -> CallCounts {
        self.state.calls()
    }

    /// The behaviours in force, as `GET /_sim/behaviour` reports them.
    pub fn behaviours(&self) -> Behaviours {
        self.state.behaviours()
    }

    /// Sets the behaviour of `model_opt`, or the default one when `None`, like
    /// `PUT /_sim/behaviour`.
    pub fn set_behaviour(&self, model_opt: Option<&str>, behaviour: Behaviour) {
        let scope = state::Scope { model: model_opt.map(str::to_owned), caller: None };
        self.state.set_behaviour(&scope, behaviour);
    }

    /// Zeroes the counts and restores the startup behaviours, like `POST /_sim/reset`.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Shuts the server down and waits until every connection is closed; hanging and paced calls
    /// are ended at once.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(shutdown_tx) = self.shutdown_tx_opt.take() {
            let _ = shutdown_tx.send(());
        }
        match self.server_opt.take() {
            Some(server) => server.await.context("simulator task failed")?,
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(shutdown_tx) = self.shutdown_tx_opt.take() {
            let _ = shutdown_tx.send(());
        }
    }
}

/// Starts a simulator on `127.0.0.1` and an ephemeral port, in a task of the current runtime.
pub async fn spawn(config: SimConfig) -> anyhow::Result<SimHandle> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("failed to bind the simulator to 127.0.0.1")?;
    let addr = listener
        .local_addr()
        .context("failed to read the simulator's address")?;
    let state = Arc::new(SimState::new(config.default_behaviour));
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = shutdown_rx.await;
    };
    let server = tokio::spawn(serve_state(listener, Arc::clone(&state), shutdown));
    Ok(SimHandle {
        addr,
        state,
        shutdown_tx_opt: Some(shutdown_tx),
        server_opt: Some(server),
    })
}

/// Serves the simulator on `listener` until `shutdown` completes, then stops accepting, ends
/// hanging and paced calls, and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = Arc::new(SimState::new(config.default_behaviour));
    serve_state(listener, state, shutdown).await
}

/// [`serve`] with a given state.
async fn serve_state(
    listener: TcpListener,
    state: Arc<SimState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(Arc::clone(&state));
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "failed to set TCP_NODELAY on a simulator connection");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            state.begin_shutdown();
        })
        .await
        .context("simulator server failed")
}

/// Every route of the simulator.
fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/models", get(control::models))
        .route("/_sim/calls", get(control::calls))
        .route("/_sim/reset", post(control::reset))
        .route(
            "/_sim/behaviour",
            get(control::behaviours).put(control::set_behaviour),
        )
        .with_state(state)
}

/// Seconds since the Unix epoch, for `created` fields.
fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
