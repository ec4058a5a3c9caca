//! The Anthropic Messages wire format: the request body (system prompt apart, `max_tokens`
//! required), the unary answer and the named-event stream, mapped to the gateway's types.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::model::{ChatRequest, Completion, ContentPart, FinishReason, Message, Role, StreamEvent, ToolCall, ToolCallDelta, ToolChoice, Usage};
use crate::provider::ProviderError;
use crate::provider::stream::StreamDecoder;

/// The request body.
#[derive(Debug, Serialize)]
pub struct MessagesRequest<'a> {
    model: &'a str,
    /// A string, or one text block when the caller marked the system prompt for caching.
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Value>,
    messages: Vec<WireMessage>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
}

#[derive(Debug, Serialize)]
struct WireMessage {
    role: &'static str,
    /// A string for a plain text turn, else content blocks.
    content: Value,
}

#[derive(Debug, Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a Value>,
}

/// A tool call's arguments as Anthropic's `input` object; `None` when they are not a JSON
/// object (see [`crate::provider::capability`], which refuses such a request for Anthropic).
pub fn call_input(call: &ToolCall) -> Option<Value> {
    if call.arguments.trim().is_empty() {
        return Some(Value::Object(Map::new()));
    }
    serde_json::from_str::<Value>(&call.arguments).ok().filter(Value::is_object)
}

/// An image part as an Anthropic image block: a `data:` URL as base64 bytes, an `http(s)` URL
/// by reference; `None` for any other URL.
pub fn image_block(url: &str) -> Option<Value> {
    if let Some(data) = url.strip_prefix("data:") {
        let (media_type, bytes) = data.split_once(";base64,")?;
        return Some(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": bytes}}));
    }
    (url.starts_with("https://") || url.starts_with("http://")).then(|| json!({"type": "image", "source": {"type": "url", "url": url}}))
}

/// The content blocks of one turn.
fn blocks(message: &Message) -> Vec<Value> {
    let mut out = Vec::new();
    if message.role == Role::Tool {
        let id = message.tool_call_id.as_deref().unwrap_or_default();
        let mut result = json!({"type": "tool_result", "tool_use_id": id, "content": message.content});
        if message.tool_error {
            result["is_error"] = Value::Bool(true);
        }
        out.push(result);
        mark_last(&mut out, message);
        return out;
    }
    if message.parts.is_empty() {
        if !message.content.is_empty() {
            out.push(json!({"type": "text", "text": message.content}));
        }
    } else {
        for part in &message.parts {
            match part {
                ContentPart::Text(text) => out.push(json!({"type": "text", "text": text})),
                ContentPart::Image { url, .. } => out.extend(image_block(url)),
            }
        }
    }
    for call in &message.tool_calls {
        let input = call_input(call).unwrap_or_else(|| Value::Object(Map::new()));
        out.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}));
    }
    mark_last(&mut out, message);
    out
}

/// Puts the turn's prompt-cache mark on its last block.
fn mark_last(blocks: &mut [Value], message: &Message) {
    if let (Some(mark), Some(Value::Object(last))) = (&message.prompt_cache, blocks.last_mut()) {
        last.insert("cache_control".into(), mark.clone());
    }
}

/// The turns as Anthropic takes them: instructions apart (the caller puts them in `system`),
/// tool results as `tool_result` blocks of a user turn, and consecutive turns that involve tool
/// results joined into one turn, since Anthropic alternates user and assistant.
fn turns(request: &ChatRequest) -> Vec<WireMessage> {
    let mut out: Vec<(WireMessage, bool)> = Vec::new();
    for message in request.messages.iter().filter(|message| !message.role.is_instruction()) {
        let role = if message.role == Role::Assistant { "assistant" } else { "user" };
        let plain = message.parts.is_empty() && message.tool_calls.is_empty() && message.role != Role::Tool && message.prompt_cache.is_none();
        let joins_tool_turn = message.role == Role::Tool || out.last().is_some_and(|(_, tool_turn)| *tool_turn);
        if let Some((last, tool_turn)) = out.last_mut()
            && last.role == role
            && joins_tool_turn
        {
            if let Value::String(text) = &last.content {
                last.content = json!([{"type": "text", "text": text}]);
            }
            if let Value::Array(existing) = &mut last.content {
                existing.extend(blocks(message));
            }
            *tool_turn = true;
            continue;
        }
        let content = if plain { Value::String(message.content.clone()) } else { Value::Array(blocks(message)) };
        out.push((WireMessage { role, content }, message.role == Role::Tool));
    }
    out.into_iter().map(|(message, _)| message).collect()
}

/// Anthropic's `tool_choice`, with `disable_parallel_tool_use` when the caller asked for one
/// call at a time.
fn tool_choice(request: &ChatRequest) -> Option<Value> {
    let mut choice = match &request.tool_choice {
        None if request.parallel_tool_calls == Some(false) && !request.tools.is_empty() => json!({"type": "auto"}),
        None => return None,
        Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::None) => return Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::Named(name)) => json!({"type": "tool", "name": name}),
    };
    if request.parallel_tool_calls == Some(false)
        && let Value::Object(fields) = &mut choice
    {
        fields.insert("disable_parallel_tool_use".into(), Value::Bool(true));
    }
    Some(choice)
}

/// Builds the body: system and developer turns join the top-level `system` prompt, the rest stay
/// in order, tools and tool turns become Anthropic's tools and blocks. `default_max_tokens`
/// fills the field Anthropic requires when the caller left it out. Only requests that
/// [`crate::provider::capability`] passes for Anthropic come here.
pub fn request_body<'a>(
    upstream_model: &'a str,
    request: &'a ChatRequest,
    stream: bool,
    default_max_tokens: u32,
) -> MessagesRequest<'a> {
    let instructions = || request.messages.iter().filter(|message| message.role.is_instruction());
    let system: Vec<&str> = instructions().map(|message| message.content.as_str()).collect();
    let system_mark = instructions().filter_map(|message| message.prompt_cache.as_ref()).next_back();
    let system = (!system.is_empty()).then(|| {
        let text = system.join("\n\n");
        match system_mark {
            Some(mark) => json!([{"type": "text", "text": text, "cache_control": mark}]),
            None => Value::String(text),
        }
    });
    let tools = request
        .tools
        .iter()
        .map(|tool| WireTool {
            name: &tool.name,
            description: tool.description.as_deref(),
            input_schema: tool.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            cache_control: tool.prompt_cache.as_ref(),
        })
        .collect();
    MessagesRequest {
        model: upstream_model,
        system,
        messages: turns(request),
        max_tokens: request.sampling.max_tokens.unwrap_or(default_max_tokens),
        temperature: request.sampling.temperature.map(|temperature| temperature.min(1.0)),
        top_p: request.sampling.top_p,
        top_k: request.sampling.top_k,
        stop_sequences: &request.sampling.stop,
        stream,
        tools,
        tool_choice: tool_choice(request),
        metadata: request.user.as_ref().map(|user| json!({"user_id": user})),
    }
}

/// The fields of a messages body that `/v1/messages/count_tokens` takes.
const COUNTED_FIELDS: &[&str] = &["model", "system", "messages", "tools", "tool_choice"];

/// The body of a token count: the messages body without what only shapes the answer.
pub fn count_tokens_body(upstream_model: &str, request: &ChatRequest, default_max_tokens: u32) -> Value {
    let mut body = serde_json::to_value(request_body(upstream_model, request, false, default_max_tokens)).unwrap_or_default();
    if let Value::Object(fields) = &mut body {
        fields.retain(|name, _| COUNTED_FIELDS.contains(&name.as_str()));
    }
    body
}

#[derive(Debug, Deserialize)]
struct TokenCount {
    input_tokens: u32,
}

/// Parses a token count's answer.
pub fn parse_token_count(body: &[u8]) -> Result<u32, ProviderError> {
    serde_json::from_slice::<TokenCount>(body)
        .map(|count| count.input_tokens)
        .map_err(|error| ProviderError::Malformed(format!("token count: {error}")))
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
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    input: Option<Value>,
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
        "tool_use" => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Parses a unary answer.
pub fn parse_completion(body: &[u8]) -> Result<Completion, ProviderError> {
    let message: MessageResponse =
        serde_json::from_slice(body).map_err(|error| ProviderError::Malformed(format!("message: {error}")))?;
    let text = message.content.iter().filter(|block| block.kind == "text").map(|block| block.text.as_str()).collect();
    let tool_calls = message
        .content
        .iter()
        .filter(|block| block.kind == "tool_use")
        .map(|block| ToolCall {
            id: block.id.clone(),
            name: block.name.clone(),
            arguments: block.input.as_ref().map_or_else(|| "{}".to_owned(), Value::to_string),
        })
        .collect();
    Ok(Completion {
        text,
        tool_calls,
        logprobs: None,
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
    ContentBlockStart { #[serde(default)] index: u32, content_block: StartBlock },
    ContentBlockDelta { #[serde(default)] index: u32, delta: BlockDelta },
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
enum StartBlock {
    ToolUse { id: String, name: String },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta { text: String },
    InputJsonDelta { partial_json: String },
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
    /// Block index of each tool call, in call order: a call's index is its position here.
    tool_blocks: Vec<u32>,
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
            Event::ContentBlockDelta { delta: BlockDelta::TextDelta { text }, .. } if !text.is_empty() => {
                Some(StreamEvent::Delta(text))
            }
            Event::ContentBlockStart { index, content_block: StartBlock::ToolUse { id, name } } => {
                let call = u32::try_from(self.tool_blocks.len()).unwrap_or(u32::MAX);
                self.tool_blocks.push(index);
                Some(StreamEvent::ToolCall(ToolCallDelta { index: call, id: Some(id), name: Some(name), arguments: String::new() }))
            }
            Event::ContentBlockDelta { index, delta: BlockDelta::InputJsonDelta { partial_json } } => {
                let Some(call) = self.tool_blocks.iter().position(|block| *block == index) else {
                    return Err(ProviderError::Malformed(format!("input_json_delta for block {index}, which is no tool_use block")));
                };
                let call = u32::try_from(call).unwrap_or(u32::MAX);
                Some(StreamEvent::ToolCall(ToolCallDelta { index: call, arguments: partial_json, ..ToolCallDelta::default() }))
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
            Event::ContentBlockDelta { .. } | Event::ContentBlockStart { .. } | Event::ContentBlockStop {} | Event::Ping {} => {
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

    #[test]
    fn system_turns_move_to_the_system_field() {
        let request = ChatRequest {
            messages: vec![Message::text(Role::System, "be brief"), Message::text(Role::User, "hi")],
            ..ChatRequest::default()
        };
        let body = serde_json::to_value(request_body("claude", &request, false, 512)).unwrap_or_default();
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(1));
        assert_eq!(body["max_tokens"], 512);
    }

    #[test]
    fn cache_marks_top_k_and_failed_tool_results_reach_anthropic() {
        let mark = json!({"type": "ephemeral"});
        let mut system = Message::text(Role::System, "be brief");
        system.prompt_cache = Some(mark.clone());
        let call = ToolCall { id: "toolu_1".into(), name: "f".into(), arguments: "{}".into() };
        let mut result = Message { role: Role::Tool, content: "boom".into(), tool_call_id: Some("toolu_1".into()), tool_error: true, ..Message::default() };
        result.prompt_cache = Some(mark.clone());
        let mut request = ChatRequest {
            messages: vec![system, Message::text(Role::User, "hi"), Message { role: Role::Assistant, tool_calls: vec![call], ..Message::default() }, result],
            tools: vec![crate::model::Tool { name: "f".into(), description: None, parameters: None, strict: None, prompt_cache: Some(mark.clone()) }],
            ..ChatRequest::default()
        };
        request.sampling.top_k = Some(5);
        let body = serde_json::to_value(request_body("claude", &request, false, 512)).unwrap_or_default();
        assert_eq!(body["system"], json!([{"type": "text", "text": "be brief", "cache_control": mark}]));
        assert_eq!(body["top_k"], 5);
        assert_eq!(body["tools"][0]["cache_control"], mark);
        let tool_turn = &body["messages"][2]["content"][0];
        assert_eq!((tool_turn["type"].as_str(), tool_turn["is_error"].as_bool()), (Some("tool_result"), Some(true)));
        assert_eq!(tool_turn["cache_control"], mark);
        let counted = count_tokens_body("claude", &request, 512);
        let keys: Vec<&String> = counted.as_object().map(|fields| fields.keys().collect()).unwrap_or_default();
        assert_eq!(keys, ["model", "system", "messages", "tools"]);
        assert_eq!(parse_token_count(br#"{"input_tokens": 42}"#).ok(), Some(42));
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
