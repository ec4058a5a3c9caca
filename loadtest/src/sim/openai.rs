//! The OpenAI Chat Completions wire format: `POST /v1/chat/completions`, unary and streamed.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::answer::{Answer, Prompt, StopCause};
use super::respond::{self, WireFormat, error_response, to_json, write_data_event};
use super::state::{Endpoint, SimState};
use super::wire::{Content, OneOrMany};

/// Most stop sequences OpenAI accepts.
const MAX_STOP_SEQUENCES: usize = 4;

/// A Chat Completions request; fields the simulator does not use are ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    /// The requested model.
    #[serde(default)]
    model: Option<String>,
    /// The conversation.
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    /// Legacy token limit.
    #[serde(default)]
    max_tokens: Option<u32>,
    /// Token limit; wins over `max_tokens`.
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    /// Sampling temperature, 0 to 2.
    #[serde(default)]
    temperature: Option<f64>,
    /// Nucleus sampling, 0 to 1.
    #[serde(default)]
    top_p: Option<f64>,
    /// Stop sequences; accepted and checked, not applied.
    #[serde(default)]
    stop: Option<OneOrMany>,
    /// Whether to stream the answer.
    #[serde(default)]
    stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

/// One message of the conversation.
#[derive(Debug, Deserialize)]
struct ChatMessage {
    /// "system", "developer", "user", "assistant" or "tool".
    role: String,
    /// The message text.
    #[serde(default)]
    content: Content,
}

/// `stream_options` of a request.
#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default)]
    include_usage: bool,
}

/// Just the model of a request whose body did not parse, so the call can still be counted.
#[derive(Deserialize)]
struct ModelOnly {
    /// The requested model.
    #[serde(default)]
    model: Option<String>,
}

impl ChatRequest {
    /// Why the request is invalid, if it is.
    fn problem(&self) -> Option<String> {
        if self.model.as_deref().is_none_or(str::is_empty) {
            return Some("you must provide a model parameter".to_owned());
        }
        if self.messages.as_ref().is_none_or(Vec::is_empty) {
            return Some("'messages' must contain at least one message".to_owned());
        }
        if self.max_tokens() == Some(0) {
            return Some("max_tokens must be at least 1".to_owned());
        }
        if let Some(temperature) = self.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
            return Some(format!("temperature {temperature} is not between 0 and 2"));
        }
        if let Some(top_p) = self.top_p.filter(|p| !(0.0..=1.0).contains(p)) {
            return Some(format!("top_p {top_p} is not between 0 and 1"));
        }
        if let Some(stop) = self
            .stop
            .as_ref()
            .filter(|stop| stop.len() > MAX_STOP_SEQUENCES)
        {
            return Some(format!(
                "stop has {} sequences, at most 4 are allowed",
                stop.len()
            ));
        }
        None
    }

    /// The token limit of the answer.
    fn max_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(State(state): State<Arc<SimState>>, headers: http::HeaderMap, body: Bytes) -> Response {
    let arrival = Instant::now();
    let caller_opt = super::control::caller(&headers);
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            let model_opt = serde_json::from_slice::<ModelOnly>(&body)
                .ok()
                .and_then(|m| m.model);
            let model_opt = model_opt.as_deref().filter(|model| !model.is_empty());
            state.begin_call(Endpoint::OpenAi, model_opt, caller_opt.as_deref(), false);
            return invalid_request(&format!("invalid request body: {error}"));
        }
    };
    let model_opt = request.model.as_deref().filter(|model| !model.is_empty());
    let problem_opt = request.problem();
    let behaviour = state.begin_call(Endpoint::OpenAi, model_opt, caller_opt.as_deref(), problem_opt.is_none());
    if let Some(problem) = problem_opt {
        return invalid_request(&problem);
    }

    let mut prompt = Prompt::default();
    for message in request.messages.iter().flatten() {
        prompt.push(&message.role, message.content.parts());
    }
    let answer = Answer::plan(&prompt, behaviour.answer_tokens, request.max_tokens()).with_prompt_cache(behaviour.prompt_cache_read_tokens, 0);
    let wire = OpenAiWire {
        id: format!("chatcmpl-sim-{}", state.next_response_id()),
        created: super::unix_seconds(),
        model: request.model.unwrap_or_default(),
        include_usage: request
            .stream_options
            .is_some_and(|options| options.include_usage),
    };
    let stream = request.stream.unwrap_or(false);
    respond::respond(state, arrival, behaviour, answer, stream, wire).await
}

/// A 400 in OpenAI's error shape.
fn invalid_request(message: &str) -> Response {
    let wire = OpenAiWire::default();
    error_response(&wire, StatusCode::BAD_REQUEST, message, None)
}

/// What an OpenAI answer repeats in every chunk.
#[derive(Debug, Default)]
struct OpenAiWire {
    /// `chatcmpl-sim-<n>`.
    id: String,
    /// Unix time of the request, in seconds.
    created: u64,
    /// The requested model.
    model: String,
    /// Whether the stream ends with a usage chunk.
    include_usage: bool,
}

/// `usage` of an answer.
#[derive(Debug, Serialize)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

/// `usage.prompt_tokens_details`: the prompt-cache reads, when there were any.
#[derive(Debug, Serialize)]
struct PromptTokensDetails {
    cached_tokens: u32,
}

impl Usage {
    /// The usage of `answer`.
    fn of(answer: &Answer) -> Self {
        Self {
            prompt_tokens: answer.input_tokens,
            completion_tokens: answer.tokens,
            total_tokens: answer.input_tokens.saturating_add(answer.tokens),
            prompt_tokens_details: (answer.cache_read_tokens > 0).then_some(PromptTokensDetails { cached_tokens: answer.cache_read_tokens }),
        }
    }
}

/// A unary `chat.completion`.
#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: Usage,
}

/// The single choice of a completion.
#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

/// The answer message.
#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

/// A streamed `chat.completion.chunk`.
#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

/// The choice of a chunk.
#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// What a chunk adds to the answer.
#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

/// `{"error": {...}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

/// The error itself.
#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<()>,
    code: Option<&'static str>,
}

/// OpenAI's `finish_reason` for `stop`.
fn finish_reason(stop: StopCause) -> &'static str {
    match stop {
        StopCause::Complete => "stop",
        StopCause::TokenLimit => "length",
    }
}

impl OpenAiWire {
    /// A chunk with one choice.
    fn chunk<'a>(&'a self, choices: &'a [ChunkChoice<'a>], usage: Option<Usage>) -> Chunk<'a> {
        Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        }
    }
}

impl WireFormat for OpenAiWire {
    fn error_body(&self, status: StatusCode, message: &str) -> Vec<u8> {
        let (kind, code) = match status.as_u16() {
            400 | 422 => ("invalid_request_error", None),
            401 => ("authentication_error", Some("invalid_api_key")),
            403 => ("permission_error", None),
            404 => ("not_found_error", Some("model_not_found")),
            429 => ("rate_limit_error", Some("rate_limit_exceeded")),
            500..=599 => ("server_error", None),
            _ => ("api_error", None),
        };
        to_json(&ErrorBody {
            error: ErrorDetail {
                message,
                kind,
                param: None,
                code,
            },
        })
    }

    fn unary_body(&self, answer: &Answer) -> Vec<u8> {
        let text = answer.text();
        to_json(&Completion {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices: [CompletionChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: &text,
                    refusal: None,
                },
                logprobs: None,
                finish_reason: finish_reason(answer.stop),
            }],
            usage: Usage::of(answer),
        })
    }

    fn open_stream(&self, _answer: &Answer, out: &mut Vec<u8>) {
        let delta = Delta {
            role: Some("assistant"),
            content: Some(""),
        };
        let choices = [ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: None,
        }];
        write_data_event(out, &self.chunk(&choices, None));
    }

    fn token_event(&self, text: &str, out: &mut Vec<u8>) {
        let delta = Delta {
            role: None,
            content: Some(text),
        };
        let choices = [ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: None,
        }];
        write_data_event(out, &self.chunk(&choices, None));
    }

    fn close_stream(&self, answer: &Answer, out: &mut Vec<u8>) {
        let finish_reason = Some(finish_reason(answer.stop));
        let delta = Delta::default();
        let choices = [ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }];
        write_data_event(out, &self.chunk(&choices, None));
        if self.include_usage {
            write_data_event(out, &self.chunk(&[], Some(Usage::of(answer))));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    fn malformed_event(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: {\"id\": \"");
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(b"\", \"choices\": [{\"delta\": not json\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> anyhow::Result<ChatRequest> {
        Ok(serde_json::from_str(json)?)
    }

    #[test]
    fn valid_requests_have_no_problem() -> anyhow::Result<()> {
        let request = request(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,
                "max_completion_tokens":3,"temperature":0.5,"top_p":1,"stop":"x","stream":true,
                "stream_options":{"include_usage":true},"user":"someone"}"#,
        )?;
        assert_eq!(request.problem(), None);
        assert_eq!(request.max_tokens(), Some(3));
        Ok(())
    }

    #[test]
    fn invalid_requests_say_why() -> anyhow::Result<()> {
        let hi = r#"[{"role":"user","content":"hi"}]"#;
        let cases = [
            format!(r#"{{"messages":{hi}}}"#),
            format!(r#"{{"model":"","messages":{hi}}}"#),
            r#"{"model":"m","messages":[]}"#.to_owned(),
            r#"{"model":"m"}"#.to_owned(),
            format!(r#"{{"model":"m","messages":{hi},"max_tokens":0}}"#),
            format!(r#"{{"model":"m","messages":{hi},"temperature":3}}"#),
            format!(r#"{{"model":"m","messages":{hi},"top_p":1.5}}"#),
            format!(r#"{{"model":"m","messages":{hi},"stop":["a","b","c","d","e"]}}"#),
        ];
        for case in cases {
            assert!(request(&case)?.problem().is_some(), "{case}");
        }
        Ok(())
    }

    #[test]
    fn error_bodies_follow_openai() -> anyhow::Result<()> {
        let body = OpenAiWire::default().error_body(StatusCode::TOO_MANY_REQUESTS, "slow down");
        let value: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(value["error"]["message"], "slow down");
        assert_eq!(value["error"]["type"], "rate_limit_error");
        Ok(())
    }
}
