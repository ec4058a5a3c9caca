//! The Anthropic Messages wire format: the request body (system prompt apart, `max_tokens`
//! required), the unary answer and the named-event stream, mapped to the gateway's types.

use serde::{Deserialize, Serialize};

use crate::model::{ChatRequest, Completion, FinishReason, Role, StreamEvent, Usage};
use crate::provider::ProviderError;
use crate::provider::stream::StreamDecoder;

/// The request body.
#[derive(Debug, Serialize)]
pub struct MessagesRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    stream: bool,
}

#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

/// Builds the body: system and developer turns join the top-level `system` prompt, the rest stay
/// in order. `default_max_tokens` fills the field Anthropic requires when the caller left it out.
pub fn request_body<'a>(
    upstream_model: &'a str,
    request: &'a ChatRequest,
    stream: bool,
    default_max_tokens: u32,
) -> MessagesRequest<'a> {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|message| message.role.is_instruction())
        .map(|message| message.content.as_str())
        .collect();
    let messages = request
        .messages
        .iter()
        .filter(|message| !message.role.is_instruction())
        .map(|message| WireMessage {
            role: if message.role == Role::Assistant { "assistant" } else { "user" },
            content: &message.content,
        })
        .collect();
    MessagesRequest {
        model: upstream_model,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        max_tokens: request.sampling.max_tokens.unwrap_or(default_max_tokens),
        temperature: request.sampling.temperature.map(|temperature| temperature.min(1.0)),
        top_p: request.sampling.top_p,
        stop_sequences: &request.sampling.stop,
        stream,
    }
}

#[derive(Debug, Deserialize)]
struct MessageResponse {
    content: Vec<ContentBlock>,
    stop_reason: Option<String>,
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
    #[serde(default)]
    cache_read_input_tokens: u32,
    #[serde(default)]
    cache_creation_input_tokens: u32,
}

impl WireUsage {
    /// Anthropic counts cache reads and writes apart from `input_tokens`; the gateway's input
    /// tokens include them, with the reads as cached input.
    fn all_input(&self) -> u32 {
        self.input_tokens.saturating_add(self.cache_read_input_tokens).saturating_add(self.cache_creation_input_tokens)
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "max_tokens" => FinishReason::Length,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// Parses a unary answer.
pub fn parse_completion(body: &[u8]) -> Result<Completion, ProviderError> {
    let message: MessageResponse =
        serde_json::from_slice(body).map_err(|error| ProviderError::Malformed(format!("message: {error}")))?;
    let text = message.content.iter().filter(|block| block.kind == "text").map(|block| block.text.as_str()).collect();
    Ok(Completion {
        text,
        finish_reason: finish_reason(message.stop_reason.as_deref().unwrap_or("end_turn")),
        usage: Usage {
            input_tokens: message.usage.all_input(),
            output_tokens: message.usage.output_tokens,
            cached_input_tokens: message.usage.cache_read_input_tokens,
            cache_write_input_tokens: message.usage.cache_creation_input_tokens,
        },
    })
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart { message: StartMessage },
    ContentBlockStart {},
    ContentBlockDelta { delta: BlockDelta },
    ContentBlockStop {},
    MessageDelta { delta: MessageDeltaBody, #[serde(default)] usage: WireUsage },
    MessageStop {},
    Ping {},
    Error { error: serde_json::Value },
}

#[derive(Debug, Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta { text: String },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDeltaBody {
    stop_reason: Option<String>,
}

/// Turns Messages stream events into [`StreamEvent`]s; the answer is complete at `message_stop`.
#[derive(Debug, Default)]
pub struct AnthropicDecoder {
    input_tokens: u32,
    cached_input_tokens: u32,
    cache_write_input_tokens: u32,
    output_tokens: u32,
    finish_reason: Option<FinishReason>,
}

impl StreamDecoder for AnthropicDecoder {
    fn on_event(&mut self, _event: &str, data: &str) -> Result<Option<StreamEvent>, ProviderError> {
        let event: Event =
            serde_json::from_str(data).map_err(|error| ProviderError::Malformed(format!("stream event: {error}")))?;
        Ok(match event {
            Event::MessageStart { message } => {
                self.input_tokens = message.usage.all_input();
                self.cached_input_tokens = message.usage.cache_read_input_tokens;
                self.cache_write_input_tokens = message.usage.cache_creation_input_tokens;
                self.output_tokens = message.usage.output_tokens;
                None
            }
            Event::ContentBlockDelta { delta: BlockDelta::TextDelta { text } } if !text.is_empty() => {
                Some(StreamEvent::Delta(text))
            }
            Event::MessageDelta { delta, usage } => {
                self.finish_reason = Some(finish_reason(delta.stop_reason.as_deref().unwrap_or("end_turn")));
                self.output_tokens = usage.output_tokens.max(self.output_tokens);
                None
            }
            Event::MessageStop {} => Some(StreamEvent::Finished {
                finish_reason: self.finish_reason.unwrap_or(FinishReason::Stop),
                usage: Some(Usage {
                    input_tokens: self.input_tokens,
                    output_tokens: self.output_tokens,
                    cached_input_tokens: self.cached_input_tokens,
                    cache_write_input_tokens: self.cache_write_input_tokens,
                }),
            }),
            Event::Error { error } => return Err(ProviderError::StreamCut(format!("upstream error event: {error}"))),
            Event::ContentBlockDelta { .. } | Event::ContentBlockStart {} | Event::ContentBlockStop {} | Event::Ping {} => {
                None
            }
        })
    }

    fn on_end(&mut self) -> Result<StreamEvent, ProviderError> {
        Err(ProviderError::StreamCut("body ended before message_stop".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    #[test]
    fn system_turns_move_to_the_system_field() {
        let request = ChatRequest {
            messages: vec![
                Message { role: Role::System, content: "be brief".into() },
                Message { role: Role::User, content: "hi".into() },
            ],
            ..ChatRequest::default()
        };
        let body = serde_json::to_value(request_body("claude", &request, false, 512)).unwrap_or_default();
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(1));
        assert_eq!(body["max_tokens"], 512);
    }

    #[test]
    fn parses_a_unary_answer() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"c",
            "content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}],
            "stop_reason":"max_tokens","usage":{"input_tokens":4,"output_tokens":2,"cache_read_input_tokens":10,"cache_creation_input_tokens":5}}"#;
        let completion = parse_completion(body).ok();
        assert_eq!(completion.as_ref().map(|c| (c.usage.input_tokens, c.usage.cached_input_tokens, c.usage.cache_write_input_tokens)), Some((19, 10, 5)));
        assert_eq!(completion.as_ref().map(|c| c.text.as_str()), Some("Hi there"));
        assert_eq!(completion.map(|c| c.finish_reason), Some(FinishReason::Length));
        assert!(matches!(parse_completion(b"<html>"), Err(ProviderError::Malformed(_))));
    }

    #[test]
    fn decodes_the_event_stream() {
        let mut decoder = AnthropicDecoder::default();
        let events: Vec<_> = [
            r#"{"type":"message_start","message":{"usage":{"input_tokens":9,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}"#,
            r#"{"type":"message_stop"}"#,
        ]
        .iter()
        .filter_map(|data| decoder.on_event("", data).ok().flatten())
        .collect();
        assert_eq!(
            events,
            vec![
                StreamEvent::Delta("Hi".into()),
                StreamEvent::Finished {
                    finish_reason: FinishReason::Stop,
                    usage: Some(Usage { input_tokens: 9, output_tokens: 3, cached_input_tokens: 0, cache_write_input_tokens: 0 })
                }
            ]
        );
        assert!(matches!(AnthropicDecoder::default().on_end(), Err(ProviderError::StreamCut(_))));
    }
}
