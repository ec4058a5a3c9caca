//! The upstream simulator: an HTTP server speaking the OpenAI Chat Completions and Anthropic
//! Messages wire formats (and OpenAI's embeddings), with deterministic answers, configurable pace
//! and injectable faults.
//!
//! Gateway tests start one in-process with [`spawn`]; the `switchyard-sim` binary runs one with
//! [`serve`].
//!
//! # Endpoints
//! - `POST /v1/chat/completions`: OpenAI, unary or streamed (`stream: true`), with `tools`,
//!   `tool_choice`, `parallel_tool_calls`, tool turns and `response_format`.
//! - `POST /v1/messages`: Anthropic, unary or streamed, with `tools`, `tool_choice` and
//!   `tool_use`/`tool_result` blocks.
//! - `POST /v1/messages/count_tokens`: Anthropic's token count, `{"input_tokens": N}`, N the
//!   prompt's input tokens: what a messages call with that body reports as `usage.input_tokens`
//!   (plus the prompt-cache reads and writes a behaviour may make it report apart).
//! - `POST /v1/embeddings`: OpenAI's embeddings: `input` a non-empty string or 1 to 2048
//!   non-empty strings, `dimensions` (default [`DEFAULT_EMBEDDING_DIMENSIONS`]), `encoding_format`
//!   `float` or `base64` (little-endian `f32`s); one unit vector per input from [`embedding`];
//!   usage counts each input's whitespace-separated words, at least 1.
//! - `GET /v1/models`: the models seen so far or given a behaviour.
//! - `GET /_sim/calls`: [`CallCounts`] since the start or the last reset, per model and per
//!   endpoint (`openai`, `anthropic`, `count_tokens`, `embeddings`).
//! - `POST /_sim/reset`: zeroes the counts, forgets per-model and per-caller behaviours, restores
//!   the default.
//! - `GET /_sim/behaviour`: the [`Behaviours`] in force.
//! - `PUT /_sim/behaviour`: `{"model": "name", ...}` sets a model's [`Behaviour`], or the default
//!   one without `model`; with `"caller": "key"` only for calls carrying that API key (bearer or
//!   `x-api-key`), as a provider that fails for one of its customers (one gateway node) only.
//!
//! Every model endpoint is counted and applies the model's behaviour. Token counts and embeddings
//! wait `ttft_ms`, then answer; their faults are those of a unary answer (an error, a hang, a body
//! that is not JSON, a truncated body).
//!
//! # Checks
//! Invalid requests get a 400 in the provider's error shape, as the real provider would answer,
//! so that a gateway's translation mistakes fail its tests. Besides the model, the messages and
//! the sampling bounds, the simulator checks:
//! - OpenAI: `tools` (non-empty, `type: function`, names of 1 to 64 `[a-zA-Z0-9_-]`, `parameters`
//!   an object); `tool_choice` (`auto`, `none`, `required` only with tools, or a named function
//!   that is one of the tools); `response_format` (`text`, `json_object`, or `json_schema` with a
//!   `name` and a `schema` object); content parts (`text` with text, `image_url` with a URL,
//!   `input_audio`, `file`, `refusal`); assistant `tool_calls` (id, `type: function`, name,
//!   arguments that parse as JSON); every `tool` turn answers a call of the assistant turn before
//!   it (only tool turns between), and every call is answered before the next other turn.
//! - Anthropic: `tools` (unique valid names; a custom tool's `input_schema` an object of
//!   `type: object`); `tool_choice` (`auto`, `none`, `any` only with tools, `tool` naming one of
//!   the tools); block types; `text`, `image` (base64 of an image media type, URL or file),
//!   `tool_use` (assistant only, id, name, object input) and `tool_result` (user only,
//!   `tool_use_id`, content a string or text/image blocks) blocks; every `tool_result` answers a
//!   `tool_use` of the message just before, and every `tool_use` is answered in the message just
//!   after. `count_tokens` checks the same but for `max_tokens`.
//!
//! # Answers
//! The text answer to a prompt is `"[sim <fingerprint>]"` followed by space-separated words chosen
//! by the fingerprint (see [`fingerprint`]), [`Behaviour::answer_tokens`] tokens in all, cut to the
//! request's `max_tokens` (`finish_reason: length`, `stop_reason: max_tokens`). Every response to
//! a parsed prompt carries the fingerprint in the `x-sim-fingerprint` header. Usage: input tokens
//! are the prompt's whitespace-separated words (at least 1), output tokens as described below.
//!
//! ## The fingerprint of tool turns
//! The fingerprint hashes one entry `role:content\n` per message, content being the
//! concatenation of its text (string or `text` parts/blocks; images are left out). Tool turns hash
//! alike in both formats, so a conversation translated faithfully keeps its fingerprint:
//! - an assistant turn hashes its text (possibly empty) as usual, then one entry
//!   `tool_call:<name> <arguments>` per call in order, the arguments as compact JSON with the keys
//!   in the order given (OpenAI's `arguments` text parsed and re-serialised; Anthropic's `input`);
//! - an OpenAI `tool` turn hashes as `tool:<its text>`; each Anthropic `tool_result` block as
//!   `tool:<its text>`, prefixed with `Error: ` when `is_error` is true, the user message's other
//!   content after them as `user:<text>`, left out when the message holds only tool results.
//!
//! Call ids are not hashed. [`fingerprint`] takes these entries: for example
//! `fingerprint(&[("user", "weather?"), ("assistant", ""), ("tool_call", r#"get_weather {"city":"Paris"}"#),
//! ("tool", "18C")])`. Tool calls also count as input words (the name and the arguments text).
//!
//! ## Tool calls
//! The answer is tool calls when tools are offered (Anthropic: custom tools), the choice is not
//! `none`, and the last message is not a tool result (OpenAI: a `tool` turn; Anthropic: a user
//! message of `tool_result` blocks only); after a tool result the answer is text, whatever the
//! choice. A named choice calls that tool once. Otherwise the fingerprint picks a tool, and a
//! second, different one when parallel calls are allowed (OpenAI `parallel_tool_calls` not false,
//! Anthropic `disable_parallel_tool_use` not true) and at least two tools are offered.
//!
//! Each call has an id of 16 hex digits derived from the fingerprint and the call's position:
//! `call_<hex>` on the OpenAI wire, `toolu_<hex>` on Anthropic's. Its arguments are generated
//! from the tool's JSON Schema: every property of `properties` in order; a string is a word of
//! the answer vocabulary, an integer 0 to 99 (or within `minimum`/`maximum`), a number 0 to
//! 99.99 with two decimals, a boolean either; `enum` gives its first value and `const` its value;
//! an object recurses; an array has one element of `items` (or `minItems`); `anyOf`/`oneOf`/
//! `allOf` take the first non-null alternative; local `$ref`s are followed. A tool without a
//! schema gets `{}`. OpenAI answers `content: null`, the `tool_calls` with the arguments as
//! compact JSON text, `finish_reason: tool_calls`; Anthropic answers `tool_use` blocks,
//! `stop_reason: tool_use`. Tool calls are never cut by `max_tokens`.
//!
//! A stream sends for each call a piece opening it (OpenAI: a `tool_calls` delta with `index`,
//! `id`, `type`, `function.name` and empty `arguments`; Anthropic: `content_block_start` of a
//! `tool_use` with `input: {}`), then its arguments in fragments of up to 8 characters, at least
//! 2 (OpenAI: `function.arguments` deltas; Anthropic: `input_json_delta`s, then
//! `content_block_stop`). Output tokens are the number of these pieces: one per call plus one per
//! fragment.
//!
//! ## Structured answers (OpenAI `response_format`)
//! Anthropic requests always get text or tool calls. On the OpenAI wire, without tool calls,
//! `json_object` answers the JSON text `{"answer":"<the text answer>"}` (cut
//! and counted like the text answer); `json_schema` answers a value generated from the schema as
//! tool arguments are (complete whatever `max_tokens`, one output token per fragment). Streams send
//! the JSON text in content deltas of up to 8 characters.
//!
//! ## Predicting answers
//! [`predict_openai`] and [`predict_anthropic`] run a request body through the simulator's own
//! checks and answer planning, without HTTP: a gateway test can predict the exact text, JSON, tool
//! calls ([`SimToolCall`], with [`SimToolCall::openai_id`] and [`SimToolCall::anthropic_id`]) and
//! token counts of the answer its upstream call gets, or the 400 it gets. As the fingerprint does
//! not depend on the format, predicting the client's OpenAI body also predicts the answer of an
//! Anthropic upstream the gateway translated it for (but for the call ids' prefix), as long as the
//! translation keeps the entries the fingerprint hashes (several system messages joined into one
//! system prompt, for example, hash differently).
//!
//! # Pacing
//! A stream's pieces (a text answer's tokens, a JSON text's fragments, a tool call's pieces) are
//! paced like tokens: the first after `ttft_ms`, the others `1/tokens_per_sec` apart; a unary
//! answer waits as long as streaming it would take; `cut_stream` cuts after that many pieces.
//!
//! # Layout
//! - `answer`: the fingerprint, the answer's body, its streamed pieces and the token counts.
//! - `tools`: which tools are called, the call ids, JSON generated from a schema.
//! - `behaviour`: [`Behaviour`] and [`Fault`].
//! - `state`: call counts and behaviours shared by the handlers.
//! - `wire`: request pieces both formats share.
//! - `respond`: pacing, faults and streaming, for any format.
//! - `openai`, `anthropic`: one file per wire format.
//! - `embeddings`: `POST /v1/embeddings`.
//! - `control`: the `/_sim/` endpoints and the model list.

mod answer;
mod anthropic;
mod behaviour;
mod control;
mod embeddings;
mod openai;
mod respond;
mod state;
mod tools;
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

pub use answer::{SimAnswer, fingerprint};
pub use behaviour::{Behaviour, DEFAULT_ANSWER_TOKENS, Fault};
pub use embeddings::{DEFAULT_EMBEDDING_DIMENSIONS, embedding};
pub use respond::FINGERPRINT_HEADER;
pub use state::{Behaviours, CallCounts};
pub use tools::SimToolCall;

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
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/models", get(control::models))
        .route("/_sim/calls", get(control::calls))
        .route("/_sim/reset", post(control::reset))
        .route(
            "/_sim/behaviour",
            get(control::behaviours).put(control::set_behaviour),
        )
        .with_state(state)
}

/// What the simulator answers to the Chat Completions request `body` when `behaviour` applies
/// (its `answer_tokens` and prompt-cache counts; its pace and fault do not change the answer):
/// the fingerprint, the content or tool calls, the finish reason and the token counts. `Err`
/// carries the message of the 400 the simulator answers instead.
///
/// ```
/// use serde_json::json;
/// use switchyard_loadtest::sim::{Behaviour, predict_openai};
///
/// let body = json!({
///     "model": "m",
///     "messages": [{"role": "user", "content": "weather in Paris?"}],
///     "tools": [{"type": "function", "function": {"name": "get_weather",
///         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
/// });
/// let answer = predict_openai(&body, &Behaviour::default())?;
/// assert_eq!(answer.finish_reason, "tool_calls");
/// assert_eq!(answer.tool_calls[0].name, "get_weather");
/// assert!(answer.tool_calls[0].openai_id().starts_with("call_"));
/// assert!(answer.tool_calls[0].input["city"].is_string());
/// # Ok::<(), String>(())
/// ```
pub fn predict_openai(
    body: &serde_json::Value,
    behaviour: &Behaviour,
) -> Result<SimAnswer, String> {
    openai::predict(body, behaviour)
}

/// What the simulator answers to the Messages request `body` when `behaviour` applies, like
/// [`predict_openai`]. [`SimAnswer::input_tokens`] is also what `count_tokens` answers for it.
pub fn predict_anthropic(
    body: &serde_json::Value,
    behaviour: &Behaviour,
) -> Result<SimAnswer, String> {
    anthropic::predict(body, behaviour)
}

/// Seconds since the Unix epoch, for `created` fields.
fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
