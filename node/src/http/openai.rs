//! The OpenAI-compatible API: `POST /v1/chat/completions` (unary, and `stream: true` as SSE in
//! OpenAI's chunk format ending with `data: [DONE]`) and `GET /v1/models`. Official OpenAI SDKs
//! work against it with only `base_url` changed. Routing hints and cache controls travel in
//! `x-switchyard-*` headers; the answer's headers say who served it and why.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_actors::error::GatewayError;
use switchyard_actors::cache::semantic::SemanticMatch;
use switchyard_actors::model::{CacheControl, ChatRequest, Message, Quality, Role, RoutingHints, Sampling, Target, Tier, Usage, CacheLayer};
use switchyard_actors::pipeline::{AnswerStream, StreamItem};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument as _, info_span};

use crate::error::{map, param};
use crate::http::AppState;
use crate::telemetry::adopt_trace;

/// Routing hint headers.
const TIER: &str = "x-switchyard-tier";
const TASK: &str = "x-switchyard-task";
const LATENCY_BUDGET: &str = "x-switchyard-latency-budget-ms";
const QUALITY: &str = "x-switchyard-quality";
/// Cache control headers: `bypass`, `no-store` (comma-separated), and a TTL in seconds.
const CACHE: &str = "x-switchyard-cache";
const CACHE_TTL: &str = "x-switchyard-cache-ttl";

/// The request body, as OpenAI defines it. A field the gateway does not honour is refused (400
/// naming it), never dropped: an answer without the `tools` or `response_format` the client
/// sent would be a different answer than it asked for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<InMessage>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InMessage {
    role: String,
    /// A string or an array of content parts, read by [`content_text`].
    #[serde(default)]
    content: Option<serde_json::Value>,
}

/// The text of a message's `content` (a string, or text parts), refusing every other kind of
/// part and every part field the gateway does not honour, naming it.
fn content_text(content: Option<serde_json::Value>, index: usize) -> Result<String, GatewayError> {
    use serde_json::Value;
    let parts = match content {
        None | Some(Value::Null) => return Ok(String::new()),
        Some(Value::String(text)) => return Ok(text),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(GatewayError::invalid(format!("messages[{index}].content"), "must be a string or an array of content parts")),
    };
    let mut text = String::new();
    for (part_index, part) in parts.into_iter().enumerate() {
        let field = format!("messages[{index}].content[{part_index}]");
        let Value::Object(part) = part else { return Err(GatewayError::invalid(field, "must be an object with a \"type\"")) };
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some(kind) => return Err(GatewayError::invalid(field, not_honoured(kind))),
            None => return Err(GatewayError::invalid(format!("{field}.type"), "is missing")),
        }
        if let Some(other) = part.keys().find(|key| *key != "type" && *key != "text") {
            return Err(GatewayError::invalid(format!("{field}.{other}"), not_honoured(other)));
        }
        match part.get("text") {
            Some(Value::String(part_text)) => text.push_str(part_text),
            _ => return Err(GatewayError::invalid(format!("{field}.text"), "must be a string")),
        }
    }
    Ok(text)
}

/// An OpenAI-style error response.
pub fn error_response(error: &GatewayError) -> Response {
    let mapping = map(error);
    let body = json!({
        "error": {
            "message": error.to_string(),
            "type": mapping.openai_type,
            "param": param(error),
            "code": error.label(),
        }
    });
    let mut response = (mapping.http, axum::Json(body)).into_response();
    if let Some(seconds) = crate::error::retry_after_secs(error) {
        set_header(response.headers_mut(), "retry-after", &seconds.to_string());
    }
    response
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, GatewayError> {
    headers
        .get(name)
        .map(|value| value.to_str().map(str::trim).map_err(|_| GatewayError::invalid(name, "is not visible ASCII")))
        .transpose()
}

fn parse_hints(headers: &HeaderMap) -> Result<(RoutingHints, CacheControl), GatewayError> {
    let tier = match header_text(headers, TIER)? {
        None | Some("free") => Tier::Free,
        Some("paid") => Tier::Paid,
        Some("enterprise") => Tier::Enterprise,
        Some(other) => return Err(GatewayError::invalid(TIER, format!("\"{other}\" is not free, paid or enterprise"))),
    };
    let quality = match header_text(headers, QUALITY)? {
        None | Some("standard") => Quality::Standard,
        Some("low") => Quality::Low,
        Some("high") => Quality::High,
        Some(other) => return Err(GatewayError::invalid(QUALITY, format!("\"{other}\" is not low, standard or high"))),
    };
    let latency_budget_ms = header_text(headers, LATENCY_BUDGET)?
        .map(|value| value.parse::<u32>().map_err(|_| GatewayError::invalid(LATENCY_BUDGET, format!("\"{value}\" is not a whole number of milliseconds"))))
        .transpose()?;
    let mut cache = CacheControl::default();
    for directive in header_text(headers, CACHE)?.unwrap_or_default().split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive {
            "bypass" => cache.bypass = true,
            "no-store" => cache.no_store = true,
            other => return Err(GatewayError::invalid(CACHE, format!("unknown directive \"{other}\" (expected bypass or no-store)"))),
        }
    }
    cache.ttl_seconds = header_text(headers, CACHE_TTL)?
        .map(|value| value.parse::<u32>().map_err(|_| GatewayError::invalid(CACHE_TTL, format!("\"{value}\" is not a whole number of seconds"))))
        .transpose()?;
    let task_type = header_text(headers, TASK)?.unwrap_or_default().to_owned();
    Ok((RoutingHints { task_type, latency_budget_ms, quality, tier }, cache))
}

/// Parses the body, naming the offending field of any problem.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<(ChatRequest, bool, bool), GatewayError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    let request: CompletionRequest = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        if let Some(name) = unknown_field(&message) {
            // The path already ends with the unknown field.
            return GatewayError::invalid(path, not_honoured(name));
        }
        let field = if path == "." { "body".to_owned() } else { path };
        GatewayError::invalid(field, message)
    })?;
    if request.n.is_some_and(|n| n != 1) {
        return Err(GatewayError::invalid("n", "only n = 1 is supported"));
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    for (index, message) in request.messages.into_iter().enumerate() {
        let role = Role::parse(&message.role, &format!("messages[{index}].role"))?;
        let content = content_text(message.content, index)?;
        messages.push(Message { role, content });
    }
    let (hints, cache) = parse_hints(headers)?;
    let mut metadata = request.metadata.unwrap_or_default();
    if let Some(user) = request.user {
        metadata.insert("user".into(), user);
    }
    let stream = request.stream.unwrap_or(false);
    let include_usage = request.stream_options.is_some_and(|options| options.include_usage);
    let chat = ChatRequest {
        messages,
        model: request.model.filter(|model| !model.is_empty() && model != "auto"),
        sampling: Sampling {
            temperature: request.temperature,
            top_p: request.top_p,
            max_tokens: request.max_completion_tokens.or(request.max_tokens),
            stop: match request.stop {
                None => Vec::new(),
                Some(Stop::One(stop)) => vec![stop],
                Some(Stop::Many(stops)) => stops,
            },
        },
        hints,
        cache,
        metadata,
    };
    Ok((chat, stream, include_usage))
}

/// Chat Completions fields (of the request and its messages) the gateway does not honour yet.
const NOT_YET_HONOURED: &[&str] = &[
    "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "response_format", "seed", "logprobs", "top_logprobs",
    "frequency_penalty", "presence_penalty", "logit_bias", "reasoning_effort", "service_tier", "store", "modalities", "audio",
    "prediction", "web_search_options", "tool_calls", "tool_call_id", "name", "refusal", "image_url", "input_audio", "file",
];

/// The field serde names in an "unknown field `…`" error.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name)
}

fn not_honoured(name: &str) -> String {
    if NOT_YET_HONOURED.contains(&name) {
        format!("`{name}` is not supported by this gateway yet; the request is refused rather than answered without it")
    } else {
        format!("`{name}` is not a Chat Completions field")
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or_default()
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    let printable: String = value.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    if let Ok(value) = HeaderValue::from_str(&printable) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Who served an answer and why, as the headers tell it.
struct Served<'a> {
    id: &'a str,
    target: &'a Target,
    routing_reason: &'a str,
    fallback: bool,
    cache: CacheLayer,
    cache_key: Option<&'a str>,
    cache_match: Option<&'a SemanticMatch>,
}

/// The headers that say who served an answer and why.
fn answer_headers(headers: &mut HeaderMap, served: Served<'_>) {
    let Served { id, target, routing_reason, fallback, cache, cache_key, cache_match } = served;
    if let Some(key) = cache_key {
        set_header(headers, "x-switchyard-cache-key", key);
    }
    match cache_match {
        Some(found) => {
            set_header(headers, "x-switchyard-cache", &format!("semantic; similarity={:.3}", found.similarity));
            set_header(headers, "x-switchyard-cache-entry", &found.entry);
        }
        None => set_header(headers, "x-switchyard-cache", cache.as_str()),
    }
    set_header(headers, "x-switchyard-request-id", id);
    set_header(headers, "x-switchyard-provider", &target.provider);
    set_header(headers, "x-switchyard-model", &target.model);
    set_header(headers, "x-switchyard-routing-reason", routing_reason);
    set_header(headers, "x-switchyard-fallback", if fallback { "true" } else { "false" });
}

fn usage_json(usage: Usage) -> serde_json::Value {
    json!({"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens, "total_tokens": usage.total()})
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
                metrics.requests.with_label_values(&["http", "", "", "", error.label()]).inc();
                return error_response(&error);
            }
        };
        let (request, stream, include_usage) = match parse_body(&headers, &body) {
            Ok(parsed) => parsed,
            Err(error) => {
                metrics.requests.with_label_values(&["http", "", "", "", error.label()]).inc();
                return error_response(&error);
            }
        };
        let route = request.model.clone().unwrap_or_else(|| "auto".into());
        if stream {
            return match state.gateway.generate_stream(&principal, request).await {
                Ok(answer) => stream_response(answer, route, include_usage, state),
                Err(error) => {
                    metrics.requests.with_label_values(&["http", &route, "", "", error.label()]).inc();
                    error_response(&error)
                }
            };
        }
        let answer = match state.gateway.generate(&principal, request).await {
            Ok(answer) => answer,
            Err(error) => {
                metrics.requests.with_label_values(&["http", &route, "", "", error.label()]).inc();
                return error_response(&error);
            }
        };
        let target = &answer.target;
        metrics.requests.with_label_values(&["http", &route, &target.model, &target.provider, "ok"]).inc();
        metrics.request_duration.with_label_values(&["http", &route, &target.model, &target.provider, answer.cache_layer.as_str()]).observe(answer.latency.as_secs_f64());
        let body = json!({
            "id": answer.id,
            "object": "chat.completion",
            "created": unix_now(),
            "model": target.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.completion.text},
                "finish_reason": answer.completion.finish_reason.as_str(),
                "logprobs": null,
            }],
            "usage": usage_json(answer.completion.usage),
            "system_fingerprint": null,
        });
        let mut response = axum::Json(body).into_response();
        let headers = response.headers_mut();
        answer_headers(
            headers,
            Served {
                id: &answer.id,
                target,
                routing_reason: &answer.routing_reason,
                fallback: answer.fallback,
                cache: answer.cache_layer,
                cache_key: answer.cache_key.as_deref(),
                cache_match: answer.cache_match.as_ref(),
            },
        );
        set_header(headers, "x-switchyard-latency-us", &answer.latency.as_micros().to_string());
        if let Some(cost) = answer.cost {
            set_header(headers, "x-switchyard-cost-usd", &format!("{:.9}", cost.as_usd()));
        }
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
    let AnswerStream { id, target, routing_reason, fallback, items, cache_layer, cache_key, cache_match, .. } = answer;
    let mut headers = HeaderMap::new();
    let served = Served {
        id: &id,
        target: &target,
        routing_reason: &routing_reason,
        fallback,
        cache: cache_layer,
        cache_key: cache_key.as_deref(),
        cache_match: cache_match.as_ref(),
    };
    answer_headers(&mut headers, served);
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
            Ok(StreamItem::Finished { finish_reason, usage, latency, .. }) => {
                metrics.requests.with_label_values(&["http", &route, &model, &provider, "ok"]).inc();
                metrics.request_duration.with_label_values(&["http", &route, &model, &provider, cache]).observe(latency.as_secs_f64());
                let mut out = chunk(vec![json!({"index": 0, "delta": {}, "finish_reason": finish_reason.as_str()})], None).to_vec();
                if include_usage {
                    out.extend_from_slice(&chunk(Vec::new(), Some(usage_json(usage))));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(out)
            }
            Err(error) => {
                metrics.requests.with_label_values(&["http", &route, &model, &provider, error.label()]).inc();
                sse(&json!({"error": {"message": error.to_string(), "type": map(&error).openai_type, "code": error.label()}}))
            }
        })
    });
    let body = tokio_stream::once(Ok::<_, Infallible>(head)).chain(body);
    (StatusCode::OK, headers, Body::from_stream(body)).into_response()
}

/// `GET /v1/models`: the models and routes the caller may name (its key's list and tier; on an
/// open node the tier header's), in OpenAI's list format.
pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
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
