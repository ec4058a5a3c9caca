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
use crate::http::headers::{Served, answer_headers, parse_hints, set_header, unix_now, whole_answer_headers};
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
        set_header(response.headers_mut(), "retry-after", &seconds.to_string());
    }
    response
}

/// Parses the body and the headers, naming the offending field of any problem.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<request::Parsed, GatewayError> {
    let mut parsed = request::parse(body)?;
    let (hints, cache) = parse_hints(headers)?;
    parsed.chat.hints = hints;
    parsed.chat.cache = cache;
    if let Some(user) = &parsed.chat.user {
        parsed.chat.metadata.insert("user".into(), user.clone());
    }
    Ok(parsed)
}

/// The assistant message of an answer: `content` null when the model only called tools, and
/// its `tool_calls` when it made any.
fn answer_message(completion: &Completion) -> serde_json::Value {
    let content = if completion.text.is_empty() && !completion.tool_calls.is_empty() { None } else { Some(completion.text.as_str()) };
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !completion.tool_calls.is_empty() {
        message["tool_calls"] = completion.tool_calls.iter().map(tool_call_json).collect();
    }
    message
}

fn tool_call_json(call: &ToolCall) -> serde_json::Value {
    json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}})
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

fn usage_json(usage: Usage) -> serde_json::Value {
    json!({"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens, "total_tokens": usage.total()})
}

/// A whole answer as OpenAI's `chat.completion` object.
pub fn completion_json(answer: &Answer) -> serde_json::Value {
    json!({
        "id": answer.id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": answer.target.model,
        "choices": [{
            "index": 0,
            "message": answer_message(&answer.completion),
            "finish_reason": answer.completion.finish_reason.as_str(),
            "logprobs": answer.completion.logprobs,
        }],
        "usage": usage_json(answer.completion.usage),
        "system_fingerprint": null,
    })
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
        let mut response = axum::Json(completion_json(&answer)).into_response();
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
    usage: Option<serde_json::Value>,
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
    let chunk = move |choices: Vec<serde_json::Value>, usage: Option<serde_json::Value>| {
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
                    out.extend_from_slice(&chunk(Vec::new(), Some(usage_json(usage))));
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
