//! The OpenAI Chat Completions wire format, spoken by `openai` and `openai_compatible` providers
//! (vLLM, Ollama, TGI, LM Studio): the request body, the unary answer and the SSE chunk stream.

use serde::{Deserialize, Serialize};

use crate::model::{ChatRequest, Completion, FinishReason, Role, StreamEvent, Usage};
use crate::provider::ProviderError;
use crate::provider::stream::StreamDecoder;

/// The request body.
#[derive(Debug, Serialize)]
pub struct ChatCompletionRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// Builds the body. OpenAI itself takes `max_completion_tokens` and the `developer` role;
/// compatible servers get `max_tokens` and `system`, which they all understand.
pub fn request_body<'a>(
    upstream_model: &'a str,
    request: &'a ChatRequest,
    stream: bool,
    native_openai: bool,
) -> ChatCompletionRequest<'a> {
    let messages = request
        .messages
        .iter()
        .map(|message| WireMessage {
            role: match message.role {
                Role::Developer if !native_openai => "system",
                role => role.as_str(),
            },
            content: &message.content,
        })
        .collect();
    let max_tokens = request.sampling.max_tokens;
    ChatCompletionRequest {
        model: upstream_model,
        messages,
        temperature: request.sampling.temperature,
        top_p: request.sampling.top_p,
        max_tokens: if native_openai { None } else { max_tokens },
        max_completion_tokens: if native_openai { max_tokens } else { None },
        stop: &request.sampling.stop,
        stream,
        stream_options: stream.then_some(StreamOptions { include_usage: true }),
    }
}

#[derive(Debug, Deserialize)]
struct ChatCompletion {
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: ChoiceMessage,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
struct WireUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u32,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Self {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            cached_input_tokens: usage.prompt_tokens_details.unwrap_or_default().cached_tokens.min(usage.prompt_tokens),
            // OpenAI does not bill prompt-cache writes apart.
            cache_write_input_tokens: 0,
        }
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// Parses a unary answer.
pub fn parse_completion(body: &[u8]) -> Result<Completion, ProviderError> {
    let completion: ChatCompletion =
        serde_json::from_slice(body).map_err(|error| ProviderError::Malformed(format!("chat completion: {error}")))?;
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Malformed("chat completion has no choices".into()))?;
    Ok(Completion {
        text: choice.message.content.unwrap_or_default(),
        finish_reason: finish_reason(choice.finish_reason.as_deref().unwrap_or("stop")),
        usage: completion.usage.map(Usage::from).unwrap_or_default(),
    })
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<WireUsage>,
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    content: Option<String>,
}

/// Turns `chat.completion.chunk` events into [`StreamEvent`]s. The answer is complete at
/// `[DONE]`, or at the end of the body once a `finish_reason` was seen (some servers omit `[DONE]`).
#[derive(Debug, Default)]
pub struct OpenAiDecoder {
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
}

impl StreamDecoder for OpenAiDecoder {
    fn on_event(&mut self, _event: &str, data: &str) -> Result<Option<StreamEvent>, ProviderError> {
        if data.trim() == "[DONE]" {
            return match self.finish_reason {
                Some(finish_reason) => Ok(Some(StreamEvent::Finished { finish_reason, usage: self.usage })),
                None => Err(ProviderError::StreamCut("[DONE] before any finish_reason".into())),
            };
        }
        let chunk: Chunk =
            serde_json::from_str(data).map_err(|error| ProviderError::Malformed(format!("stream chunk: {error}")))?;
        if let Some(error) = chunk.error {
            return Err(ProviderError::StreamCut(format!("upstream error event: {error}")));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            return Ok(None);
        };
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(finish_reason(&reason));
        }
        Ok(choice.delta.and_then(|delta| delta.content).filter(|text| !text.is_empty()).map(StreamEvent::Delta))
    }

    fn on_end(&mut self) -> Result<StreamEvent, ProviderError> {
        match self.finish_reason {
            Some(finish_reason) => Ok(StreamEvent::Finished { finish_reason, usage: self.usage }),
            None => Err(ProviderError::StreamCut("body ended without a finish_reason".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    #[test]
    fn body_uses_each_servers_dialect() {
        let request = ChatRequest {
            messages: vec![
                Message { role: Role::Developer, content: "be brief".into() },
                Message { role: Role::User, content: "hi".into() },
            ],
            sampling: crate::model::Sampling { max_tokens: Some(7), ..Default::default() },
            ..ChatRequest::default()
        };
        let native = serde_json::to_value(request_body("gpt", &request, true, true)).ok();
        let compatible = serde_json::to_value(request_body("llama", &request, false, false)).ok();
        let native = native.unwrap_or_default();
        let compatible = compatible.unwrap_or_default();
        assert_eq!(native["messages"][0]["role"], "developer");
        assert_eq!(native["max_completion_tokens"], 7);
        assert_eq!(native["stream_options"]["include_usage"], true);
        assert_eq!(compatible["messages"][0]["role"], "system");
        assert_eq!(compatible["max_tokens"], 7);
        assert!(compatible.get("stream_options").is_none());
    }

    #[test]
    fn parses_a_unary_answer_and_rejects_garbage() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"hey"},"finish_reason":"length"}],
            "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"prompt_tokens_details":{"cached_tokens":2}}}"#;
        let completion = parse_completion(body).ok();
        assert_eq!(completion.as_ref().map(|c| c.usage.cached_input_tokens), Some(2));
        assert_eq!(completion.as_ref().map(|c| c.text.as_str()), Some("hey"));
        assert_eq!(completion.map(|c| (c.finish_reason, c.usage.total())), Some((FinishReason::Length, 4)));
        assert!(matches!(parse_completion(b"{\"choices\":"), Err(ProviderError::Malformed(_))));
        assert!(matches!(parse_completion(b"{\"choices\":[]}"), Err(ProviderError::Malformed(_))));
    }

    #[test]
    fn decodes_a_stream_with_trailing_usage() {
        let mut decoder = OpenAiDecoder::default();
        let events: Vec<_> = [
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"delta":{"content":"lo"},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
            "[DONE]",
        ]
        .iter()
        .filter_map(|data| decoder.on_event("", data).ok().flatten())
        .collect();
        assert_eq!(
            events,
            vec![
                StreamEvent::Delta("Hel".into()),
                StreamEvent::Delta("lo".into()),
                StreamEvent::Finished {
                    finish_reason: FinishReason::Stop,
                    usage: Some(Usage { input_tokens: 5, output_tokens: 2, cached_input_tokens: 0, cache_write_input_tokens: 0 })
                },
            ]
        );
    }

    #[test]
    fn a_stream_without_finish_is_cut() {
        let mut decoder = OpenAiDecoder::default();
        assert!(decoder.on_event("", r#"{"choices":[{"delta":{"content":"Hel"}}]}"#).is_ok());
        assert!(matches!(decoder.on_end(), Err(ProviderError::StreamCut(_))));
        assert!(matches!(decoder.on_event("", "[DONE]"), Err(ProviderError::StreamCut(_))));
        assert!(matches!(decoder.on_event("", "{not json"), Err(ProviderError::Malformed(_))));
    }
}
