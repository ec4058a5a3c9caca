//! The OpenAI-compatible API: `POST /v1/chat/completions` (unary, and `stream: true` as SSE in
//! OpenAI's chunk format ending with `data: [DONE]`) and `GET /v1/models`. Official OpenAI SDKs
//! work against it with only `base_url` changed: tools and tool calls (streamed as OpenAI's
//! `tool_calls` deltas), structured output, image parts and log-probabilities included. Routing
//! hints and cache controls travel in `x-switchyard-*` headers; the answer's headers say who
//! served it and why. The body is read in [`request`]; `POST /v1/embeddings` is in
//! [`embeddings`]; the Files and Batch APIs (`/v1/files`, `/v1/batches`) in [`batches`].

pub mod batches;
pub mod embeddings;
pub mod request;

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use switchyard_actors::error::GatewayError;
use switchyard_actors::model::{Completion, ToolCall, ToolCallDelta, Usage};
use switchyard_actors::pipeline::{Answer, AnswerStream, StreamItem};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument as _, info_span};

use crate::error::{map, param};
use crate::http::AppState;
use crate::http::headers::{Served, answer_headers, parse_hints, set_header, tag_feature, unix_now, whole_answer_headers};
use crate::telemetry::adopt_trace;

/// OpenAI's error body for `error`.
pub fn error_body(error: &GatewayError) -> serde_json::Value {
    json!({
        "error": {
            "message": error.to_string(),
            "type": map(error).openai_type,
            "param": param(error),
            "code": error.label(),
        }
    })
}

/// An OpenAI-style error response.
pub fn error_response(error: &GatewayError) -> Response {
    let mut response = (map(error).http, axum::Json(error_body(error))).into_response();
    if let Some(seconds) = crate::error::retry_after_secs(error) {
        set_header(response.headers_mut(), axum::http::header::RETRY_AFTER, &seconds.to_string());
    }
    response
}

/// Parses the body and the headers, naming the offending field of any problem.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<request::Parsed, GatewayError> {
    let mut parsed = request::parse(body)?;
    let (hints, cache) = parse_hints(headers)?;
    parsed.chat.hints = hints;
    parsed.chat.cache = cache;
    tag_feature(headers, &mut parsed.chat.metadata)?;
    if let Some(user) = &parsed.chat.user {
        parsed.chat.metadata.insert("user".into(), user.clone());
    }
    Ok(parsed)
}

/// A whole answer in OpenAI's `chat.completion` shape, serialised as it is (no JSON tree built
/// first: this is on every request's path).
#[derive(Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChoiceOut<'a>; 1],
    usage: UsageOut,
    system_fingerprint: Option<()>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    finish_reason: &'static str,
    logprobs: &'a Option<serde_json::Value>,
}

/// The assistant message of an answer: `content` null when the model only called tools, and
/// its `tool_calls` when it made any.
#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// Token counts in OpenAI's `usage` shape.
#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl From<Usage> for UsageOut {
    fn from(usage: Usage) -> Self {
        Self { prompt_tokens: usage.input_tokens, completion_tokens: usage.output_tokens, total_tokens: usage.total() }
    }
}

impl<'a> CompletionOut<'a> {
    fn of(answer: &'a Answer) -> Self {
        let completion = &answer.completion;
        Self {
            id: &answer.id,
            object: "chat.completion",
            created: unix_now(),
            model: &answer.target.model,
            choices: [ChoiceOut {
                index: 0,
                message: MessageOut::of(completion),
                finish_reason: completion.finish_reason.as_str(),
                logprobs: &completion.logprobs,
            }],
            usage: completion.usage.into(),
            system_fingerprint: None,
        }
    }
}

impl<'a> MessageOut<'a> {
    fn of(completion: &'a Completion) -> Self {
        let content = if completion.text.is_empty() && !completion.tool_calls.is_empty() { None } else { Some(completion.text.as_str()) };
        let tool_calls = completion
            .tool_calls
            .iter()
            .map(|call: &'a ToolCall| ToolCallOut { id: &call.id, kind: "function", function: FunctionOut { name: &call.name, arguments: &call.arguments } })
            .collect();
        Self { role: "assistant", content, refusal: None, tool_calls }
    }
}

/// A streamed tool-call piece as OpenAI's `delta.tool_calls` entry: id, type and name on the
/// first piece of a call, argument fragments on the rest.
fn tool_delta_json(delta: &ToolCallDelta) -> serde_json::Value {
    let mut function = serde_json::Map::new();
    if let Some(name) = &delta.name {
        function.insert("name".into(), json!(name));
    }
    function.insert("arguments".into(), json!(delta.arguments));
    let mut entry = json!({"index": delta.index, "function": function});
    if let Some(id) = &delta.id {
        entry["id"] = json!(id);
        entry["type"] = json!("function");
    }
    entry
}

/// A whole answer as OpenAI's `chat.completion` object, as a JSON value (for batch output lines).
pub fn completion_json(answer: &Answer) -> serde_json::Value {
    serde_json::to_value(CompletionOut::of(answer)).unwrap_or_default()
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let span = info_span!("request", front_door = "http", method = "chat.completions", trace_id = tracing::field::Empty);
    adopt_trace(&span, &headers);
    async move {
        let metrics = state.gateway.metrics();
        let principal = match state.gateway.authenticate(crate::auth::bearer_of(&headers)) {
            Ok(principal) => principal,
            Err(error) => {
                metrics.record_request_failure("http", "", "", "", error.label());
                return error_response(&error);
            }
        };
        let request::Parsed { chat: request, stream, include_usage } = match parse_body(&headers, &body) {
            Ok(parsed) => parsed,
            Err(error) => {
                metrics.record_request_failure("http", "", "", "", error.label());
                return error_response(&error);
            }
        };
        let route = request.model.clone().unwrap_or_else(|| "auto".into());
        if stream {
            return match state.gateway.generate_stream(&principal, request).await {
                Ok(answer) => stream_response(answer, route, include_usage, state),
                Err(error) => {
                    metrics.record_request_failure("http", &route, "", "", error.label());
                    error_response(&error)
                }
            };
        }
        let answer = match state.gateway.generate(&principal, request).await {
            Ok(answer) => answer,
            Err(error) => {
                metrics.record_request_failure("http", &route, "", "", error.label());
                return error_response(&error);
            }
        };
        let target = &answer.target;
        metrics.record_request_answered("http", &route, &target.model, &target.provider, answer.cache_layer.as_str(), answer.latency);
        let mut response = axum::Json(CompletionOut::of(&answer)).into_response();
        whole_answer_headers(response.headers_mut(), &answer);
        response
    }
    .instrument(span)
    .await
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

fn sse(value: &impl Serialize) -> Bytes {
    let mut line = b"data: ".to_vec();
    if serde_json::to_writer(&mut line, value).is_err() {
        line.extend_from_slice(b"{}");
    }
    line.extend_from_slice(b"\n\n");
    Bytes::from(line)
}

fn stream_response(answer: AnswerStream, route: String, include_usage: bool, state: AppState) -> Response {
    let created = unix_now();
    let mut headers = HeaderMap::new();
    answer_headers(&mut headers, Served::of_stream(&answer));
    let AnswerStream { id, target, items, cache_layer, .. } = answer;
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));

    let (model, provider, cache) = (target.model.clone(), target.provider.clone(), cache_layer.as_str());
    let chunk = move |choices: Vec<serde_json::Value>, usage: Option<UsageOut>| {
        sse(&ChunkOut { id: &id, object: "chat.completion.chunk", created, model: &target.model, choices, usage })
    };
    let head = chunk(vec![json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null})], None);
    let metrics = std::sync::Arc::clone(state.gateway.metrics());
    let body = ReceiverStream::new(items).map(move |item| -> Result<Bytes, Infallible> {
        Ok(match item {
            Ok(StreamItem::Delta(text)) => {
                chunk(vec![json!({"index": 0, "delta": {"content": text}, "finish_reason": null})], None)
            }
            Ok(StreamItem::ToolCall(delta)) => {
                chunk(vec![json!({"index": 0, "delta": {"tool_calls": [tool_delta_json(&delta)]}, "finish_reason": null})], None)
            }
            Ok(StreamItem::Logprobs(logprobs)) => {
                chunk(vec![json!({"index": 0, "delta": {}, "logprobs": logprobs, "finish_reason": null})], None)
            }
            Ok(StreamItem::Finished { finish_reason, usage, latency, .. }) => {
                metrics.record_request_answered("http", &route, &model, &provider, cache, latency);
                let mut out = chunk(vec![json!({"index": 0, "delta": {}, "finish_reason": finish_reason.as_str()})], None).to_vec();
                if include_usage {
                    out.extend_from_slice(&chunk(Vec::new(), Some(usage.into())));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(out)
            }
            Err(error) => {
                metrics.record_request_failure("http", &route, &model, &provider, error.label());
                sse(&json!({"error": {"message": error.to_string(), "type": map(&error).openai_type, "code": error.label()}}))
            }
        })
    });
    let body = tokio_stream::once(Ok::<_, Infallible>(head)).chain(body);
    (StatusCode::OK, headers, Body::from_stream(body)).into_response()
}

/// `GET /v1/models`: the models and routes the caller may name (its key's list and tier; on an
/// open node the tier header's), in OpenAI's list format.
/// A request carrying `anthropic-version` (Anthropic's SDKs) gets Anthropic's list format.
pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if headers.contains_key("anthropic-version") {
        return crate::http::anthropic::models(&state, &headers);
    }
    let principal = match state.gateway.authenticate(crate::auth::bearer_of(&headers)) {
        Ok(principal) => principal,
        Err(error) => return error_response(&error),
    };
    let tier = match parse_hints(&headers) {
        Ok((hints, _)) => hints.tier,
        Err(error) => return error_response(&error),
    };
    let data: Vec<serde_json::Value> = state
        .gateway
        .usable_models(&principal, tier)
        .into_iter()
        .map(|(name, owned_by)| json!({"id": name, "object": "model", "created": 0, "owned_by": owned_by}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}
