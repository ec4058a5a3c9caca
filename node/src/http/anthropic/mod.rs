//! The Anthropic Messages API: `POST /v1/messages` (unary, and `stream: true` as Anthropic's
//! named SSE events: `message_start`, `content_block_start` / `_delta` / `_stop`,
//! `message_delta`, `message_stop`, and an `error` event when an answer is cut) and
//! `POST /v1/messages/count_tokens`. The official `anthropic` SDKs and Claude-Code-style clients
//! work against it with only the base URL changed, and are routed to any provider — an OpenAI
//! model answers in Anthropic's format, tool calls as `tool_use` blocks — through the same caches,
//! budgets, routing and metrics as the OpenAI API. Credentials come in `x-api-key` or as a bearer
//! token; `anthropic-version`, when sent, must be one Anthropic defines. The body is read in
//! [`request`].

pub mod request;

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use switchyard_actors::error::GatewayError;
use switchyard_actors::model::{Completion, FinishReason, ToolCall, Usage};
use switchyard_actors::pipeline::{AnswerStream, StreamItem};
use switchyard_actors::provider::anthropic::call_input;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument as _, info_span};

use crate::error::map;
use crate::http::AppState;
use crate::http::headers::{Served, answer_headers, header_text, parse_hints, set_header, tag_feature, whole_answer_headers};
use crate::telemetry::adopt_trace;

/// The API versions Anthropic defines for `anthropic-version`.
const VERSIONS: &[&str] = &["2023-06-01", "2023-01-01"];
/// The header naming the Messages API version a client speaks.
const VERSION_HEADER: axum::http::HeaderName = axum::http::HeaderName::from_static("anthropic-version");

/// An Anthropic-style error response.
pub fn error_response(error: &GatewayError) -> Response {
    let mapping = map(error);
    let body = json!({"type": "error", "error": {"type": mapping.anthropic_type, "message": error.to_string()}});
    let mut response = (mapping.http, axum::Json(body)).into_response();
    if let Some(seconds) = crate::error::retry_after_secs(error) {
        set_header(response.headers_mut(), axum::http::header::RETRY_AFTER, &seconds.to_string());
    }
    response
}

/// Authenticates the caller and reads the body for `endpoint`, with the routing hints and
/// cache controls of the headers.
fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    endpoint: request::Endpoint,
) -> Result<(std::sync::Arc<switchyard_actors::tenancy::Principal>, request::Parsed), GatewayError> {
    let principal = state.gateway.authenticate(crate::auth::api_key_of(headers))?;
    if let Some(version) = header_text(headers, &VERSION_HEADER)?
        && !VERSIONS.contains(&version)
    {
        return Err(GatewayError::invalid("anthropic-version", format!("\"{version}\" is not a version of the Messages API ({})", VERSIONS.join(", "))));
    }
    let mut parsed = request::parse(body, endpoint)?;
    let (hints, cache) = parse_hints(headers)?;
    parsed.chat.hints = hints;
    parsed.chat.cache = cache;
    tag_feature(headers, &mut parsed.chat.metadata)?;
    Ok((principal, parsed))
}

/// Anthropic's `stop_reason`.
fn stop_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// Anthropic's usage: cache reads and writes apart from the other input tokens.
fn usage_json(usage: Usage) -> Value {
    let cached = usage.cached_input_tokens.saturating_add(usage.cache_write_input_tokens);
    json!({
        "input_tokens": usage.input_tokens.saturating_sub(cached),
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "cache_creation_input_tokens": usage.cache_write_input_tokens,
    })
}

/// A tool call's arguments as Anthropic's `input` object; an error when the model wrote
/// arguments that are not one (an OpenAI-wire model can), which Anthropic's format cannot carry.
fn tool_input(call: &ToolCall) -> Result<Value, GatewayError> {
    call_input(call).ok_or_else(|| {
        GatewayError::Internal(format!("the model's call of tool \"{}\" has arguments that are not a JSON object, which the Messages API cannot carry", call.name))
    })
}

/// The content blocks of a whole answer: its text, then its tool calls.
fn content_blocks(completion: &Completion) -> Result<Vec<Value>, GatewayError> {
    let mut blocks = Vec::with_capacity(1 + completion.tool_calls.len());
    if !completion.text.is_empty() || completion.tool_calls.is_empty() {
        blocks.push(json!({"type": "text", "text": completion.text}));
    }
    for call in &completion.tool_calls {
        blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call)?}));
    }
    Ok(blocks)
}

fn record_failure(state: &AppState, route: &str, error: &GatewayError) {
    state.gateway.metrics().record_request_failure("http", route, "", "", error.label());
}

/// `POST /v1/messages`.
pub async fn messages(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let span = info_span!("request", front_door = "http", method = "messages", trace_id = tracing::field::Empty);
    adopt_trace(&span, &headers);
    async move {
        let (principal, request::Parsed { chat: request, stream }) = match accept(&state, &headers, &body, request::Endpoint::Messages) {
            Ok(accepted) => accepted,
            Err(error) => {
                record_failure(&state, "", &error);
                return error_response(&error);
            }
        };
        let route = request.model.clone().unwrap_or_else(|| "auto".into());
        if stream {
            return match state.gateway.generate_stream(&principal, request).await {
                Ok(answer) => stream_response(answer, route, state),
                Err(error) => {
                    record_failure(&state, &route, &error);
                    error_response(&error)
                }
            };
        }
        let answer = match state.gateway.generate(&principal, request).await {
            Ok(answer) => answer,
            Err(error) => {
                record_failure(&state, &route, &error);
                return error_response(&error);
            }
        };
        let content = match content_blocks(&answer.completion) {
            Ok(content) => content,
            Err(error) => {
                record_failure(&state, &route, &error);
                return error_response(&error);
            }
        };
        let target = &answer.target;
        let metrics = state.gateway.metrics();
        metrics.record_request_answered("http", &route, &target.model, &target.provider, answer.cache_layer.as_str(), answer.latency);
        let body = json!({
            "id": answer.id,
            "type": "message",
            "role": "assistant",
            "model": target.model,
            "content": content,
            "stop_reason": stop_reason(answer.completion.finish_reason),
            "stop_sequence": null,
            "usage": usage_json(answer.completion.usage),
        });
        let mut response = axum::Json(body).into_response();
        whole_answer_headers(response.headers_mut(), &answer);
        response
    }
    .instrument(span)
    .await
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}` as the model the request routes to
/// counts them (the `x-switchyard-model` header names it).
pub async fn count_tokens(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let span = info_span!("request", front_door = "http", method = "messages.count_tokens", trace_id = tracing::field::Empty);
    adopt_trace(&span, &headers);
    async move {
        let (principal, parsed) = match accept(&state, &headers, &body, request::Endpoint::CountTokens) {
            Ok(accepted) => accepted,
            Err(error) => return error_response(&error),
        };
        match state.gateway.count_tokens(&principal, &parsed.chat).await {
            Ok((target, input_tokens)) => {
                let mut response = axum::Json(json!({"input_tokens": input_tokens})).into_response();
                set_header(response.headers_mut(), crate::http::headers::MODEL, &target.model);
                set_header(response.headers_mut(), crate::http::headers::PROVIDER, &target.provider);
                response
            }
            Err(error) => error_response(&error),
        }
    }
    .instrument(span)
    .await
}

/// `GET /v1/models` for Anthropic's SDKs: the models and routes the caller may name, in
/// Anthropic's list format (one page).
pub fn models(state: &AppState, headers: &HeaderMap) -> Response {
    let usable = state.gateway.authenticate(crate::auth::api_key_of(headers)).and_then(|principal| {
        let (hints, _) = parse_hints(headers)?;
        Ok(state.gateway.usable_models(&principal, hints.tier))
    });
    let names: Vec<String> = match usable {
        Ok(usable) => usable.into_iter().map(|(name, _)| name).collect(),
        Err(error) => return error_response(&error),
    };
    let data: Vec<Value> =
        names.iter().map(|name| json!({"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"})).collect();
    axum::Json(json!({"data": data, "has_more": false, "first_id": names.first(), "last_id": names.last()})).into_response()
}

/// One named SSE event.
fn event(name: &str, data: &Value) -> Vec<u8> {
    let mut out = format!("event: {name}\ndata: ").into_bytes();
    if serde_json::to_writer(&mut out, data).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
    out
}

/// The content blocks of a stream as they open and close: text and tool calls each get a block,
/// numbered in order; a new block closes the one before it.
#[derive(Default)]
struct Blocks {
    /// The next block's index.
    next: u32,
    /// The open block and whether it is text.
    open: Option<(u32, bool)>,
    /// Tool-call index (as the upstream numbers calls) to block index.
    tools: HashMap<u32, u32>,
}

impl Blocks {
    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            out.extend(event("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        }
    }

    fn start(&mut self, out: &mut Vec<u8>, block: Value, is_text: bool) -> u32 {
        self.close(out);
        let index = self.next;
        self.next += 1;
        self.open = Some((index, is_text));
        out.extend(event("content_block_start", &json!({"type": "content_block_start", "index": index, "content_block": block})));
        index
    }

    fn text(&mut self, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        if text.is_empty() {
            return out;
        }
        let index = match self.open {
            Some((index, true)) => index,
            _ => self.start(&mut out, json!({"type": "text", "text": ""}), true),
        };
        out.extend(event("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})));
        out
    }

    fn tool(&mut self, delta: &switchyard_actors::model::ToolCallDelta) -> Vec<u8> {
        let mut out = Vec::new();
        let index = match self.tools.get(&delta.index) {
            Some(index) => *index,
            None => {
                let block = json!({
                    "type": "tool_use",
                    "id": delta.id.as_deref().unwrap_or_default(),
                    "name": delta.name.as_deref().unwrap_or_default(),
                    "input": {},
                });
                let index = self.start(&mut out, block, false);
                self.tools.insert(delta.index, index);
                index
            }
        };
        if !delta.arguments.is_empty() {
            let delta = json!({"type": "input_json_delta", "partial_json": delta.arguments});
            out.extend(event("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": delta})));
        }
        out
    }

    fn finish(&mut self, reason: FinishReason, usage: Usage) -> Vec<u8> {
        let mut out = Vec::new();
        if self.next == 0 {
            // An empty answer still has its (empty) text block, as Anthropic sends it.
            self.start(&mut out, json!({"type": "text", "text": ""}), true);
        }
        self.close(&mut out);
        let delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(reason), "stop_sequence": null}, "usage": usage_json(usage)});
        out.extend(event("message_delta", &delta));
        out.extend(event("message_stop", &json!({"type": "message_stop"})));
        out
    }
}

fn stream_response(answer: AnswerStream, route: String, state: AppState) -> Response {
    let mut headers = HeaderMap::new();
    answer_headers(&mut headers, Served::of_stream(&answer));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let AnswerStream { id, target, items, cache_layer, .. } = answer;
    let start = json!({
        "type": "message_start",
        "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": target.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
    });
    let head = Bytes::from(event("message_start", &start));
    let (model, provider, cache) = (target.model.clone(), target.provider.clone(), cache_layer.as_str());
    let metrics = std::sync::Arc::clone(state.gateway.metrics());
    let mut blocks = Blocks::default();
    let body = ReceiverStream::new(items).map(move |item| -> Result<Bytes, Infallible> {
        Ok(Bytes::from(match item {
            Ok(StreamItem::Delta(text)) => blocks.text(&text),
            Ok(StreamItem::ToolCall(delta)) => blocks.tool(&delta),
            // Never asked for: the Messages API has no log-probabilities.
            Ok(StreamItem::Logprobs(_)) => Vec::new(),
            Ok(StreamItem::Finished { finish_reason, usage, latency, .. }) => {
                metrics.record_request_answered("http", &route, &model, &provider, cache, latency);
                blocks.finish(finish_reason, usage)
            }
            Err(error) => {
                metrics.record_request_failure("http", &route, &model, &provider, error.label());
                event("error", &json!({"type": "error", "error": {"type": map(&error).anthropic_type, "message": error.to_string()}}))
            }
        }))
    });
    let body = tokio_stream::once(Ok::<_, Infallible>(head)).chain(body);
    (StatusCode::OK, headers, Body::from_stream(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_actors::model::ToolCallDelta;

    /// The `(event, data)` pairs of a piece of a stream.
    fn events(bytes: &[u8]) -> Vec<(String, Value)> {
        String::from_utf8_lossy(bytes)
            .split("\n\n")
            .filter(|frame| !frame.is_empty())
            .filter_map(|frame| {
                let (name, data) = frame.split_once("\ndata: ")?;
                Some((name.trim_start_matches("event: ").to_owned(), serde_json::from_str(data).ok()?))
            })
            .collect()
    }

    #[test]
    fn text_then_tool_calls_open_and_close_blocks_in_order() {
        let mut blocks = Blocks::default();
        let mut out = blocks.text("let me check");
        out.extend(blocks.tool(&ToolCallDelta { index: 0, id: Some("call_1".into()), name: Some("f".into()), arguments: String::new() }));
        out.extend(blocks.tool(&ToolCallDelta { index: 0, arguments: "{\"a\":".into(), ..ToolCallDelta::default() }));
        out.extend(blocks.tool(&ToolCallDelta { index: 1, id: Some("call_2".into()), name: Some("g".into()), arguments: "{}".into() }));
        out.extend(blocks.tool(&ToolCallDelta { index: 0, arguments: "1}".into(), ..ToolCallDelta::default() }));
        out.extend(blocks.finish(FinishReason::ToolCalls, Usage { input_tokens: 10, output_tokens: 4, cached_input_tokens: 3, cache_write_input_tokens: 0 }));
        let events = events(&out);
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "content_block_start", "content_block_delta", "content_block_stop", "content_block_start", "content_block_delta",
                "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                "message_delta", "message_stop"
            ]
        );
        assert_eq!(events[3].1["content_block"]["id"], "call_1");
        assert_eq!(events[8].1["index"], 1, "a late fragment goes to its own call's block");
        assert_eq!(events[10].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[10].1["usage"]["input_tokens"], 7);
        assert_eq!(events[10].1["usage"]["cache_read_input_tokens"], 3);
    }

    #[test]
    fn an_empty_answer_has_one_empty_text_block() {
        let mut blocks = Blocks::default();
        let names: Vec<String> = events(&blocks.finish(FinishReason::Stop, Usage::default())).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["content_block_start", "content_block_stop", "message_delta", "message_stop"]);
    }

    #[test]
    fn tool_arguments_that_are_no_object_are_an_error() {
        let call = ToolCall { id: "c".into(), name: "f".into(), arguments: "[1, 2]".into() };
        assert!(tool_input(&call).is_err());
        let call = ToolCall { arguments: String::new(), ..call };
        assert_eq!(tool_input(&call).ok(), Some(json!({})));
    }
}
