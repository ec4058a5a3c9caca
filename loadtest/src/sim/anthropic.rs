//! The Anthropic Messages wire format: `POST /v1/messages`, unary and streamed.
//!
//! The `x-api-key` and `anthropic-version` headers are accepted with any value.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::answer::{Answer, Prompt, StopCause};
use super::respond::{self, WireFormat, error_response, to_json, write_named_event};
use super::state::{Endpoint, SimState};
use super::wire::Content;

/// A Messages request; fields the simulator does not use are ignored.
#[derive(Debug, Deserialize)]
struct MessagesRequest {
    /// The requested model.
    #[serde(default)]
    model: Option<String>,
    /// The system prompt, a string or text blocks.
    #[serde(default)]
    system: Content,
    /// The conversation.
    #[serde(default)]
    messages: Option<Vec<Message>>,
    /// Token limit; required.
    #[serde(default)]
    max_tokens: Option<u32>,
    /// Sampling temperature, 0 to 1.
    #[serde(default)]
    temperature: Option<f64>,
    /// Nucleus sampling, 0 to 1.
    #[serde(default)]
    top_p: Option<f64>,
    /// Stop sequences; accepted, not applied.
    #[serde(default)]
    #[expect(dead_code, reason = "parsed to reject a malformed value, not applied")]
    stop_sequences: Option<Vec<String>>,
    /// Whether to stream the answer.
    #[serde(default)]
    stream: Option<bool>,
}

/// One message of the conversation.
#[derive(Debug, Deserialize)]
struct Message {
    /// "user" or "assistant".
    role: String,
    /// The message text.
    #[serde(default)]
    content: Content,
}

/// Just the model of a request whose body did not parse, so the call can still be counted.
#[derive(Deserialize)]
struct ModelOnly {
    /// The requested model.
    #[serde(default)]
    model: Option<String>,
}

impl MessagesRequest {
    /// Why the request is invalid, if it is.
    fn problem(&self) -> Option<String> {
        if self.model.as_deref().is_none_or(str::is_empty) {
            return Some("model: field required".to_owned());
        }
        if self.messages.as_ref().is_none_or(Vec::is_empty) {
            return Some("messages: at least one message is required".to_owned());
        }
        match self.max_tokens {
            None => return Some("max_tokens: field required".to_owned()),
            Some(0) => return Some("max_tokens: must be greater than or equal to 1".to_owned()),
            Some(_) => {}
        }
        if let Some(temperature) = self.temperature.filter(|t| !(0.0..=1.0).contains(t)) {
            return Some(format!("temperature: {temperature} is not between 0 and 1"));
        }
        if let Some(top_p) = self.top_p.filter(|p| !(0.0..=1.0).contains(p)) {
            return Some(format!("top_p: {top_p} is not between 0 and 1"));
        }
        None
    }
}

/// `POST /v1/messages`.
pub(crate) async fn messages(State(state): State<Arc<SimState>>, headers: http::HeaderMap, body: Bytes) -> Response {
    let arrival = Instant::now();
    let caller_opt = super::control::caller(&headers);
    let request: MessagesRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            let model_opt = serde_json::from_slice::<ModelOnly>(&body)
                .ok()
                .and_then(|m| m.model);
            let model_opt = model_opt.as_deref().filter(|model| !model.is_empty());
            state.begin_call(Endpoint::Anthropic, model_opt, caller_opt.as_deref(), false);
            return invalid_request(&format!("invalid request body: {error}"));
        }
    };
    let model_opt = request.model.as_deref().filter(|model| !model.is_empty());
    let problem_opt = request.problem();
    let behaviour = state.begin_call(Endpoint::Anthropic, model_opt, caller_opt.as_deref(), problem_opt.is_none());
    if let Some(problem) = problem_opt {
        return invalid_request(&problem);
    }

    let mut prompt = Prompt::default();
    if request.system != Content::Empty {
        prompt.push("system", request.system.parts());
    }
    for message in request.messages.iter().flatten() {
        prompt.push(&message.role, message.content.parts());
    }
    let answer = Answer::plan(&prompt, behaviour.answer_tokens, request.max_tokens).with_prompt_cache(behaviour.prompt_cache_read_tokens, behaviour.prompt_cache_write_tokens);
    let wire = AnthropicWire {
        id: format!("msg_sim_{:024}", state.next_response_id()),
        model: request.model.unwrap_or_default(),
    };
    let stream = request.stream.unwrap_or(false);
    respond::respond(state, arrival, behaviour, answer, stream, wire).await
}

/// A 400 in Anthropic's error shape.
fn invalid_request(message: &str) -> Response {
    let wire = AnthropicWire::default();
    error_response(&wire, StatusCode::BAD_REQUEST, message, None)
}

/// What an Anthropic answer repeats in its events.
#[derive(Debug, Default)]
struct AnthropicWire {
    /// `msg_sim_<n>`.
    id: String,
    /// The requested model.
    model: String,
}

/// Anthropic's `stop_reason` for `stop`.
fn stop_reason(stop: StopCause) -> &'static str {
    match stop {
        StopCause::Complete => "end_turn",
        StopCause::TokenLimit => "max_tokens",
    }
}

/// A whole `message`, unary or in `message_start`.
#[derive(Serialize)]
struct MessageBody<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: &'a [TextBlock<'a>],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<()>,
    usage: Usage,
}

/// A `text` content block.
#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

/// `usage` of a message: Anthropic counts prompt-cache reads and writes apart from
/// `input_tokens`.
#[derive(Serialize)]
struct Usage {
    input_tokens: u32,
    output_tokens: u32,
    #[serde(skip_serializing_if = "is_zero")]
    cache_read_input_tokens: u32,
    #[serde(skip_serializing_if = "is_zero")]
    cache_creation_input_tokens: u32,
}

/// Prompt-cache counts appear only when there were any, as in answers without a cache.
#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_zero(count: &u32) -> bool {
    *count == 0
}

impl Usage {
    fn of(answer: &Answer, output_tokens: u32) -> Self {
        Self {
            input_tokens: answer.input_tokens - answer.cache_read_tokens - answer.cache_write_tokens,
            output_tokens,
            cache_read_input_tokens: answer.cache_read_tokens,
            cache_creation_input_tokens: answer.cache_write_tokens,
        }
    }
}

/// `message_start`.
#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: MessageBody<'a>,
}

/// `content_block_start`.
#[derive(Serialize)]
struct ContentBlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: TextBlock<'a>,
}

/// `content_block_delta`.
#[derive(Serialize)]
struct ContentBlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: TextDelta<'a>,
}

/// The `text_delta` of a `content_block_delta`.
#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

/// `content_block_stop`.
#[derive(Serialize)]
struct ContentBlockStop {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
}

/// `message_delta`.
#[derive(Serialize)]
struct MessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta,
    usage: OutputUsage,
}

/// The `delta` of a `message_delta`.
#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

/// The `usage` of a `message_delta`.
#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u32,
}

/// An event with only a type: `ping`, `message_stop`.
#[derive(Serialize)]
struct Bare {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// `{"type": "error", "error": {...}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorDetail<'a>,
}

/// The error itself.
#[derive(Serialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

impl WireFormat for AnthropicWire {
    fn error_body(&self, status: StatusCode, message: &str) -> Vec<u8> {
        let kind = match status.as_u16() {
            400 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        to_json(&ErrorBody {
            kind: "error",
            error: ErrorDetail { kind, message },
        })
    }

    fn unary_body(&self, answer: &Answer) -> Vec<u8> {
        let text = answer.text();
        to_json(&MessageBody {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: &[TextBlock {
                kind: "text",
                text: &text,
            }],
            stop_reason: Some(stop_reason(answer.stop)),
            stop_sequence: None,
            usage: Usage::of(answer, answer.tokens),
        })
    }

    fn open_stream(&self, answer: &Answer, out: &mut Vec<u8>) {
        let message = MessageBody {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: &[],
            stop_reason: None,
            stop_sequence: None,
            usage: Usage::of(answer, 1),
        };
        write_named_event(
            out,
            "message_start",
            &MessageStart {
                kind: "message_start",
                message,
            },
        );
        let start = ContentBlockStart {
            kind: "content_block_start",
            index: 0,
            content_block: TextBlock {
                kind: "text",
                text: "",
            },
        };
        write_named_event(out, "content_block_start", &start);
        write_named_event(out, "ping", &Bare { kind: "ping" });
    }

    fn token_event(&self, text: &str, out: &mut Vec<u8>) {
        let delta = ContentBlockDelta {
            kind: "content_block_delta",
            index: 0,
            delta: TextDelta {
                kind: "text_delta",
                text,
            },
        };
        write_named_event(out, "content_block_delta", &delta);
    }

    fn close_stream(&self, answer: &Answer, out: &mut Vec<u8>) {
        let stop = ContentBlockStop {
            kind: "content_block_stop",
            index: 0,
        };
        write_named_event(out, "content_block_stop", &stop);
        let delta = MessageDelta {
            kind: "message_delta",
            delta: StopDelta {
                stop_reason: stop_reason(answer.stop),
                stop_sequence: None,
            },
            usage: OutputUsage {
                output_tokens: answer.tokens,
            },
        };
        write_named_event(out, "message_delta", &delta);
        write_named_event(
            out,
            "message_stop",
            &Bare {
                kind: "message_stop",
            },
        );
    }

    fn malformed_event(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"delta\": not json\n\n",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(json: &str) -> anyhow::Result<Option<String>> {
        Ok(serde_json::from_str::<MessagesRequest>(json)?.problem())
    }

    #[test]
    fn max_tokens_is_required() -> anyhow::Result<()> {
        let hi = r#"[{"role":"user","content":"hi"}]"#;
        assert_eq!(
            problem(&format!(
                r#"{{"model":"m","messages":{hi},"max_tokens":8}}"#
            ))?,
            None
        );
        assert!(problem(&format!(r#"{{"model":"m","messages":{hi}}}"#))?.is_some());
        assert!(
            problem(&format!(
                r#"{{"model":"m","messages":{hi},"max_tokens":0}}"#
            ))?
            .is_some()
        );
        assert!(problem(&format!(r#"{{"messages":{hi},"max_tokens":8}}"#))?.is_some());
        assert!(problem(r#"{"model":"m","messages":[],"max_tokens":8}"#)?.is_some());
        Ok(())
    }

    #[test]
    fn system_and_blocks_are_accepted() -> anyhow::Result<()> {
        let request: MessagesRequest = serde_json::from_str(
            r#"{"model":"m","max_tokens":8,"system":[{"type":"text","text":"be brief"}],
                "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
                "stop_sequences":["x"],"temperature":1,"metadata":{"user_id":"u"}}"#,
        )?;
        assert_eq!(request.system, Content::Blocks(vec!["be brief".to_owned()]));
        assert_eq!(request.problem(), None);
        Ok(())
    }

    #[test]
    fn error_bodies_follow_anthropic() -> anyhow::Result<()> {
        let body = AnthropicWire::default().error_body(StatusCode::from_u16(529)?, "busy");
        let value: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(value["type"], "error");
        assert_eq!(value["error"]["type"], "overloaded_error");
        assert_eq!(value["error"]["message"], "busy");
        Ok(())
    }
}
