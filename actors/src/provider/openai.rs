//! The OpenAI Chat Completions wire format, spoken by `openai` and `openai_compatible` providers
//! (vLLM, Ollama, TGI, LM Studio): the request body, the unary answer and the SSE chunk stream.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{ChatRequest, Completion, EmbeddingRequest, ContentPart, FinishReason, Message, ResponseFormat, Role, StreamEvent, Tool, ToolCall, ToolCallDelta, ToolChoice, Usage};
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
    /// vLLM's and TGI's extension; never sent to OpenAI itself (see [`crate::provider::capability`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    logit_bias: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    /// The client's fields the gateway does not know, for providers that pass them on.
    #[serde(flatten)]
    passthrough: &'a Map<String, Value>,
}

#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// A string, an array of parts, or `null` (an assistant turn of tool calls only).
    content: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Debug, Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireCalled<'a>,
}

#[derive(Debug, Serialize)]
struct WireCalled<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// A message's `content`: parts when it has more than text, `null` for an assistant turn that
/// only calls tools, else the text. A failed tool's result says so in words, as OpenAI's wire has
/// no flag for it.
fn content(message: &Message) -> Value {
    if message.tool_error {
        return Value::String(format!("Error: {}", message.content));
    }
    if !message.parts.is_empty() {
        return Value::Array(message.parts.iter().map(part).collect());
    }
    if message.content.is_empty() && !message.tool_calls.is_empty() {
        return Value::Null;
    }
    Value::String(message.content.clone())
}

fn part(part: &ContentPart) -> Value {
    match part {
        ContentPart::Text(text) => serde_json::json!({"type": "text", "text": text}),
        ContentPart::Image { url, detail: Some(detail) } => {
            serde_json::json!({"type": "image_url", "image_url": {"url": url, "detail": detail}})
        }
        ContentPart::Image { url, detail: None } => serde_json::json!({"type": "image_url", "image_url": {"url": url}}),
    }
}

/// OpenAI's `tool_choice` value.
pub fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => Value::from("auto"),
        ToolChoice::None => Value::from("none"),
        ToolChoice::Required => Value::from("required"),
        ToolChoice::Named(name) => serde_json::json!({"type": "function", "function": {"name": name}}),
    }
}

/// OpenAI's `response_format` value.
pub fn response_format(format: &ResponseFormat) -> Value {
    match format {
        ResponseFormat::Text => serde_json::json!({"type": "text"}),
        ResponseFormat::JsonObject => serde_json::json!({"type": "json_object"}),
        ResponseFormat::JsonSchema { name, description, schema, strict } => {
            let mut inner = Map::new();
            inner.insert("name".into(), Value::from(name.as_str()));
            if let Some(description) = description {
                inner.insert("description".into(), Value::from(description.as_str()));
            }
            inner.insert("schema".into(), schema.clone());
            if let Some(strict) = strict {
                inner.insert("strict".into(), Value::from(*strict));
            }
            serde_json::json!({"type": "json_schema", "json_schema": inner})
        }
    }
}

fn wire_tool(tool: &Tool) -> WireTool<'_> {
    WireTool {
        kind: "function",
        function: WireFunction {
            name: &tool.name,
            description: tool.description.as_deref(),
            parameters: tool.parameters.as_ref(),
            strict: tool.strict,
        },
    }
}

/// Builds the body. OpenAI itself takes `max_completion_tokens` and the `developer` role;
/// compatible servers get `max_tokens` and `system`, which they all understand. Everything else
/// the request carries goes as OpenAI defines it.
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
            content: content(message),
            name: message.name.as_deref(),
            tool_calls: message
                .tool_calls
                .iter()
                .map(|call| WireToolCall { id: &call.id, kind: "function", function: WireCalled { name: &call.name, arguments: &call.arguments } })
                .collect(),
            tool_call_id: message.tool_call_id.as_deref(),
        })
        .collect();
    let sampling = &request.sampling;
    let max_tokens = sampling.max_tokens;
    ChatCompletionRequest {
        model: upstream_model,
        messages,
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        top_k: sampling.top_k,
        max_tokens: if native_openai { None } else { max_tokens },
        max_completion_tokens: if native_openai { max_tokens } else { None },
        stop: &sampling.stop,
        stream,
        stream_options: stream.then_some(StreamOptions { include_usage: true }),
        tools: request.tools.iter().map(wire_tool).collect(),
        tool_choice: request.tool_choice.as_ref().map(tool_choice),
        parallel_tool_calls: request.parallel_tool_calls,
        response_format: request.response_format.as_ref().map(response_format),
        seed: sampling.seed,
        frequency_penalty: sampling.frequency_penalty,
        presence_penalty: sampling.presence_penalty,
        logit_bias: sampling.logit_bias.iter().map(|(token, bias)| (token.to_string(), Value::from(*bias))).collect(),
        logprobs: sampling.logprobs.map(|_| true),
        top_logprobs: sampling.logprobs.filter(|top| *top > 0),
        reasoning_effort: sampling.reasoning_effort.as_deref(),
        user: request.user.as_deref(),
        passthrough: &request.passthrough,
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
    #[serde(default)]
    logprobs: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<InToolCall>,
}

#[derive(Debug, Deserialize)]
struct InToolCall {
    #[serde(default)]
    id: String,
    function: InCalled,
}

#[derive(Debug, Deserialize)]
struct InCalled {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
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
    FinishReason::parse(reason)
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
        tool_calls: choice
            .message
            .tool_calls
            .into_iter()
            .map(|call| ToolCall { id: call.id, name: call.function.name, arguments: call.function.arguments })
            .collect(),
        logprobs: choice.logprobs.filter(|logprobs| !logprobs.is_null()),
        finish_reason: finish_reason(choice.finish_reason.as_deref().unwrap_or("stop")),
        usage: completion.usage.map(Usage::from).unwrap_or_default(),
    })
}

/// An embeddings request body (`POST /embeddings`): floats always, whatever the caller wants
/// them encoded as, so one cached answer serves both encodings.
pub fn embeddings_body(upstream_model: &str, request: &EmbeddingRequest) -> Value {
    let mut body = serde_json::json!({"model": upstream_model, "input": request.inputs, "encoding_format": "float"});
    if let Some(dimensions) = request.dimensions {
        body["dimensions"] = Value::from(dimensions);
    }
    if let Some(user) = &request.user {
        body["user"] = Value::from(user.as_str());
    }
    body
}

#[derive(Debug, Deserialize)]
struct EmbeddingList {
    data: Vec<EmbeddingItem>,
    #[serde(default)]
    usage: Option<EmbeddingUsage>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingUsage {
    #[serde(default)]
    prompt_tokens: u32,
}

/// Embeddings as the provider returned them, one per input in input order, with the input
/// tokens it counted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Embeddings {
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens.
    pub input_tokens: u32,
}

/// Parses an embeddings answer for `inputs` texts: every index exactly once.
pub fn parse_embeddings(body: &[u8], inputs: usize) -> Result<Embeddings, ProviderError> {
    let list: EmbeddingList = serde_json::from_slice(body).map_err(|error| ProviderError::Malformed(format!("embeddings: {error}")))?;
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; inputs];
    for item in list.data {
        match vectors.get_mut(item.index) {
            Some(slot @ None) => *slot = Some(item.embedding),
            _ => return Err(ProviderError::Malformed(format!("embeddings: index {} is out of range or repeated", item.index))),
        }
    }
    let vectors = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| vector.ok_or_else(|| ProviderError::Malformed(format!("embeddings: no vector for input {index}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Embeddings { vectors, input_tokens: list.usage.map_or(0, |usage| usage.prompt_tokens) })
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
    #[serde(default)]
    logprobs: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<DeltaToolCall>,
}

#[derive(Debug, Deserialize)]
struct DeltaToolCall {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<DeltaCalled>,
}

#[derive(Debug, Deserialize)]
struct DeltaCalled {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// Turns `chat.completion.chunk` events into [`StreamEvent`]s. The answer is complete at
/// `[DONE]`, or at the end of the body once a `finish_reason` was seen (some servers omit `[DONE]`).
/// A chunk can carry several things at once (log-probabilities, text, tool-call pieces); they
/// are queued and handed out one event at a time.
#[derive(Debug, Default)]
pub struct OpenAiDecoder {
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
    queued: std::collections::VecDeque<StreamEvent>,
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
        if let Some(logprobs) = choice.logprobs.filter(|logprobs| !logprobs.is_null()) {
            self.queued.push_back(StreamEvent::Logprobs(logprobs));
        }
        if let Some(delta) = choice.delta {
            if let Some(text) = delta.content.filter(|text| !text.is_empty()) {
                self.queued.push_back(StreamEvent::Delta(text));
            }
            for call in delta.tool_calls {
                let (name, arguments) = call.function.map_or((None, None), |function| (function.name, function.arguments));
                self.queued.push_back(StreamEvent::ToolCall(ToolCallDelta { index: call.index, id: call.id, name, arguments: arguments.unwrap_or_default() }));
            }
        }
        Ok(self.queued.pop_front())
    }

    fn pending(&mut self) -> Option<StreamEvent> {
        self.queued.pop_front()
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

    #[test]
    fn body_uses_each_servers_dialect() {
        let request = ChatRequest {
            messages: vec![Message::text(Role::Developer, "be brief"), Message::text(Role::User, "hi")],
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
    fn a_failed_tool_result_says_so_in_words() {
        let call = ToolCall { id: "c".into(), name: "f".into(), arguments: "{}".into() };
        let request = ChatRequest {
            messages: vec![
                Message::text(Role::User, "hi"),
                Message { role: Role::Assistant, tool_calls: vec![call], ..Message::default() },
                Message { role: Role::Tool, content: "timed out".into(), tool_call_id: Some("c".into()), tool_error: true, ..Message::default() },
            ],
            ..ChatRequest::default()
        };
        let body = serde_json::to_value(request_body("m", &request, false, true)).unwrap_or_default();
        assert_eq!(body["messages"][2]["content"], "Error: timed out");
    }

    #[test]
    fn embeddings_come_back_in_input_order_or_not_at_all() {
        let body = br#"{"object":"list","data":[{"object":"embedding","index":1,"embedding":[0.0,1.0]},{"object":"embedding","index":0,"embedding":[1.0,0.0]}],"usage":{"prompt_tokens":3,"total_tokens":3}}"#;
        let parsed = parse_embeddings(body, 2).ok();
        assert_eq!(parsed, Some(Embeddings { vectors: vec![vec![1.0, 0.0], vec![0.0, 1.0]], input_tokens: 3 }));
        assert!(parse_embeddings(body, 3).is_err(), "a missing vector");
        let repeated = br#"{"data":[{"index":0,"embedding":[1.0]},{"index":0,"embedding":[1.0]}]}"#;
        assert!(parse_embeddings(repeated, 2).is_err(), "a repeated index");
        let request = EmbeddingRequest { model: "e".into(), inputs: vec!["a".into()], dimensions: Some(8), ..EmbeddingRequest::default() };
        assert_eq!(embeddings_body("up", &request), serde_json::json!({"model": "up", "input": ["a"], "encoding_format": "float", "dimensions": 8}));
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
