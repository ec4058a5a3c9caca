//! Reading a Chat Completions body into a [`ChatRequest`]: every field OpenAI defines that the
//! gateway honours, each checked with an error naming it. Unknown top-level fields are kept apart
//! ([`ChatRequest::passthrough`]) for providers that pass them on; the pipeline refuses them for
//! every other provider. Unknown fields inside messages, tools or parts are refused here.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use switchyard_actors::error::GatewayError;

use crate::http::body::{self, BodyError};
use switchyard_actors::model::{ChatRequest, ContentPart, Message, ResponseFormat, Role, Sampling, Tool, ToolCall, ToolChoice};

/// The request body, as OpenAI defines it (the fields the gateway honours).
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
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    response_format: Option<InResponseFormat>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    frequency_penalty: Option<f32>,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    logit_bias: Option<BTreeMap<String, f32>>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<u8>,
    #[serde(default)]
    reasoning_effort: Option<String>,
}

/// The top-level names [`CompletionRequest`] reads; anything else is passed through or refused.
const KNOWN_FIELDS: &[&str] = &[
    "model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "stream", "stream_options", "n", "user",
    "metadata", "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed", "frequency_penalty", "presence_penalty",
    "logit_bias", "logprobs", "top_logprobs", "reasoning_effort",
];

/// Fields OpenAI has replaced, refused with the replacement named.
const DEPRECATED: &[(&str, &str)] =
    &[("functions", "`functions` is deprecated by OpenAI; send `tools`"), ("function_call", "`function_call` is deprecated by OpenAI; send `tool_choice`")];

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
    /// A string or an array of content parts, read by [`content`].
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<InToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    /// Output-only fields an SDK may echo back in history; accepted when null.
    #[serde(default)]
    refusal: Option<Value>,
    #[serde(default)]
    function_call: Option<Value>,
    #[serde(default)]
    audio: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InToolCall {
    id: String,
    #[serde(rename = "type", default = "function_kind")]
    kind: String,
    function: InCalled,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InCalled {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InTool {
    #[serde(rename = "type")]
    kind: String,
    function: InFunction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    json_schema: Option<InJsonSchema>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InJsonSchema {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

fn function_kind() -> String {
    "function".into()
}

/// What the body asks for besides the chat request itself.
#[derive(Debug)]
pub struct Parsed {
    /// The request.
    pub chat: ChatRequest,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

/// Parses `body`, naming the offending field of any problem. Routing hints and cache controls
/// come from the headers, apart.
pub fn parse(body: &[u8]) -> Result<Parsed, GatewayError> {
    let (request, passthrough) = read(body)?;
    into_request(request, passthrough)
}

/// The body's known fields, and its unknown top-level ones apart.
fn read(body: &[u8]) -> Result<(CompletionRequest, Map<String, Value>), GatewayError> {
    match body::from_slice(body) {
        Ok(request) => Ok((request, Map::new())),
        // Only an unknown top-level field takes the slower way: parse as a map, set the
        // unknown fields apart, and read the rest.
        Err(error) if is_top_level_unknown(&error) => {
            let mut fields: Map<String, Value> =
                serde_json::from_slice(body).map_err(|error| GatewayError::invalid("body", error.to_string()))?;
            let unknown: Vec<String> = fields.keys().filter(|key| !KNOWN_FIELDS.contains(&key.as_str())).cloned().collect();
            let mut passthrough = Map::new();
            for key in unknown {
                if let Some((name, message)) = DEPRECATED.iter().find(|(name, _)| *name == key) {
                    return Err(GatewayError::invalid(*name, *message));
                }
                if let Some(value) = fields.remove(&key) {
                    passthrough.insert(key, value);
                }
            }
            let request = deserialize(Value::Object(fields)).map_err(BodyError::into_gateway)?;
            Ok((request, passthrough))
        }
        Err(error) => Err(error.into_gateway()),
    }
}

fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<CompletionRequest, BodyError>
where
    D::Error: std::fmt::Display,
{
    body::deserialize(deserializer)
}

fn is_top_level_unknown(error: &BodyError) -> bool {
    error.unknown_field().is_some() && !error.path.contains(['.', '['])
}

/// A message's `content`: its text, and every part in order when a part is not text.
fn content(content: Option<Value>, index: usize) -> Result<(String, Vec<ContentPart>), GatewayError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok((String::new(), Vec::new())),
        Some(Value::String(text)) => return Ok((text, Vec::new())),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(GatewayError::invalid(format!("messages[{index}].content"), "must be a string or an array of content parts")),
    };
    let mut text = String::new();
    let mut read = Vec::with_capacity(parts.len());
    for (part_index, part) in parts.into_iter().enumerate() {
        let field = format!("messages[{index}].content[{part_index}]");
        let Value::Object(part) = part else { return Err(GatewayError::invalid(field, "must be an object with a \"type\"")) };
        let part = match part.get("type").and_then(Value::as_str) {
            Some("text") => text_part(&part, &field)?,
            Some("image_url") => image_part(&part, &field)?,
            Some(kind) => return Err(GatewayError::invalid(format!("{field}.type"), format!("`{kind}` parts are not supported (text and image_url are)"))),
            None => return Err(GatewayError::invalid(format!("{field}.type"), "is missing")),
        };
        if let ContentPart::Text(part_text) = &part {
            text.push_str(part_text);
        }
        read.push(part);
    }
    let has_image = read.iter().any(|part| matches!(part, ContentPart::Image { .. }));
    Ok((text, if has_image { read } else { Vec::new() }))
}

fn only_keys(part: &Map<String, Value>, allowed: &[&str], field: &str) -> Result<(), GatewayError> {
    match part.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(other) => Err(GatewayError::invalid(format!("{field}.{other}"), format!("`{other}` is not a field the gateway knows there"))),
        None => Ok(()),
    }
}

fn text_part(part: &Map<String, Value>, field: &str) -> Result<ContentPart, GatewayError> {
    only_keys(part, &["type", "text"], field)?;
    match part.get("text") {
        Some(Value::String(text)) => Ok(ContentPart::Text(text.clone())),
        _ => Err(GatewayError::invalid(format!("{field}.text"), "must be a string")),
    }
}

fn image_part(part: &Map<String, Value>, field: &str) -> Result<ContentPart, GatewayError> {
    only_keys(part, &["type", "image_url"], field)?;
    let Some(Value::Object(image)) = part.get("image_url") else {
        return Err(GatewayError::invalid(format!("{field}.image_url"), "must be an object with a \"url\""));
    };
    let field = format!("{field}.image_url");
    only_keys(image, &["url", "detail"], &field)?;
    let Some(Value::String(url)) = image.get("url") else { return Err(GatewayError::invalid(format!("{field}.url"), "must be a string")) };
    if !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with("data:")) {
        return Err(GatewayError::invalid(format!("{field}.url"), "must be an http(s) URL or a data: URL"));
    }
    let detail = match image.get("detail") {
        None | Some(Value::Null) => None,
        Some(Value::String(detail)) if ["auto", "low", "high"].contains(&detail.as_str()) => Some(detail.clone()),
        Some(_) => return Err(GatewayError::invalid(format!("{field}.detail"), "must be auto, low or high")),
    };
    Ok(ContentPart::Image { url: url.clone(), detail })
}

fn message(message: InMessage, index: usize) -> Result<Message, GatewayError> {
    let role = Role::parse(&message.role, &format!("messages[{index}].role"))?;
    for (name, value) in [("refusal", &message.refusal), ("function_call", &message.function_call), ("audio", &message.audio)] {
        if value.as_ref().is_some_and(|value| !value.is_null()) {
            return Err(GatewayError::invalid(format!("messages[{index}].{name}"), "is not supported in a request (only null)"));
        }
    }
    let (content, parts) = content(message.content, index)?;
    let mut tool_calls = Vec::new();
    for (call_index, call) in message.tool_calls.unwrap_or_default().into_iter().enumerate() {
        if call.kind != "function" {
            return Err(GatewayError::invalid(format!("messages[{index}].tool_calls[{call_index}].type"), "must be \"function\""));
        }
        tool_calls.push(ToolCall { id: call.id, name: call.function.name, arguments: call.function.arguments });
    }
    Ok(Message { role, content, parts, tool_calls, tool_call_id: message.tool_call_id, name: message.name, ..Message::default() })
}

fn tool_choice(value: Value) -> Result<ToolChoice, GatewayError> {
    match &value {
        Value::String(choice) => match choice.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(GatewayError::invalid("tool_choice", format!("\"{other}\" is not auto, none, required or a function"))),
        },
        Value::Object(choice) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            match choice.get("function").and_then(|function| function.get("name")).and_then(Value::as_str) {
                Some(name) => Ok(ToolChoice::Named(name.to_owned())),
                None => Err(GatewayError::invalid("tool_choice.function.name", "is missing")),
            }
        }
        _ => Err(GatewayError::invalid("tool_choice", "must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\": …}}")),
    }
}

fn response_format(format: InResponseFormat) -> Result<ResponseFormat, GatewayError> {
    match (format.kind.as_str(), format.json_schema) {
        ("text", None) => Ok(ResponseFormat::Text),
        ("json_object", None) => Ok(ResponseFormat::JsonObject),
        ("json_schema", Some(schema)) => Ok(ResponseFormat::JsonSchema {
            name: schema.name,
            description: schema.description,
            schema: schema.schema.unwrap_or(Value::Null),
            strict: schema.strict,
        }),
        ("json_schema", None) => Err(GatewayError::invalid("response_format.json_schema", "is required for type json_schema")),
        ("text" | "json_object", Some(_)) => Err(GatewayError::invalid("response_format.json_schema", "applies to type json_schema only")),
        (other, _) => Err(GatewayError::invalid("response_format.type", format!("\"{other}\" is not text, json_object or json_schema"))),
    }
}

fn logit_bias(bias: BTreeMap<String, f32>) -> Result<Vec<(u32, f32)>, GatewayError> {
    let mut out = Vec::with_capacity(bias.len());
    for (token, value) in bias {
        let Ok(id) = token.parse::<u32>() else {
            return Err(GatewayError::invalid(format!("logit_bias.{token}"), "keys must be token ids"));
        };
        out.push((id, value));
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

/// Checks what the parse could not and builds the request.
fn into_request(request: CompletionRequest, passthrough: Map<String, Value>) -> Result<Parsed, GatewayError> {
        if request.n.is_some_and(|n| n != 1) {
            return Err(GatewayError::invalid("n", "only n = 1 is supported"));
        }
        if request.top_logprobs.is_some() && request.logprobs != Some(true) {
            return Err(GatewayError::invalid("top_logprobs", "needs `logprobs: true`"));
        }
        let mut messages = Vec::with_capacity(request.messages.len());
        for (index, turn) in request.messages.into_iter().enumerate() {
            messages.push(message(turn, index)?);
        }
        let mut tools = Vec::new();
        for (index, tool) in request.tools.unwrap_or_default().into_iter().enumerate() {
            if tool.kind != "function" {
                return Err(GatewayError::invalid(format!("tools[{index}].type"), format!("\"{}\" is not \"function\"", tool.kind)));
            }
            let InFunction { name, description, parameters, strict } = tool.function;
            tools.push(Tool { name, description, parameters, strict, prompt_cache: None });
        }
        let metadata = request.metadata.unwrap_or_default();
        let stream = request.stream.unwrap_or(false);
        let include_usage = request.stream_options.is_some_and(|options| options.include_usage);
        let chat = ChatRequest {
            messages,
            model: request.model.filter(|model| !model.is_empty() && model != "auto"),
            sampling: Sampling {
                temperature: request.temperature,
                top_p: request.top_p,
                top_k: None,
                max_tokens: request.max_completion_tokens.or(request.max_tokens),
                stop: match request.stop {
                    None => Vec::new(),
                    Some(Stop::One(stop)) => vec![stop],
                    Some(Stop::Many(stops)) => stops,
                },
                seed: request.seed,
                frequency_penalty: request.frequency_penalty,
                presence_penalty: request.presence_penalty,
                logit_bias: logit_bias(request.logit_bias.unwrap_or_default())?,
                logprobs: (request.logprobs == Some(true)).then(|| request.top_logprobs.unwrap_or(0)),
                reasoning_effort: request.reasoning_effort,
            },
            metadata,
            user: request.user,
            tools,
            tool_choice: request.tool_choice.map(tool_choice).transpose()?,
            parallel_tool_calls: request.parallel_tool_calls,
            response_format: request.response_format.map(response_format).transpose()?,
            passthrough,
            ..ChatRequest::default()
        };
        Ok(Parsed { chat, stream, include_usage })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: Value) -> Result<Parsed, GatewayError> {
        let bytes = serde_json::to_vec(&body).map_err(|error| GatewayError::Internal(error.to_string()))?;
        parse(&bytes)
    }

    #[test]
    fn every_known_field_is_read() {
        let mut body = serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "model": "m"});
        body["seed"] = 3.into();
        body["logprobs"] = true.into();
        body["top_logprobs"] = 2.into();
        body["logit_bias"] = serde_json::json!({"50256": -100, "7": 5.5});
        body["reasoning_effort"] = "low".into();
        body["response_format"] = serde_json::json!({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}, "strict": true}});
        body["tools"] = serde_json::json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        body["tool_choice"] = serde_json::json!({"type": "function", "function": {"name": "f"}});
        body["parallel_tool_calls"] = false.into();
        let chat = parsed(body).map(|parsed| parsed.chat).ok();
        let chat = chat.unwrap_or_default();
        assert_eq!(chat.sampling.seed, Some(3));
        assert_eq!(chat.sampling.logprobs, Some(2));
        assert_eq!(chat.sampling.logit_bias, vec![(7, 5.5), (50256, -100.0)]);
        assert_eq!(chat.tool_choice, Some(ToolChoice::Named("f".into())));
        assert_eq!(chat.parallel_tool_calls, Some(false));
        assert!(matches!(chat.response_format, Some(ResponseFormat::JsonSchema { strict: Some(true), .. })));
        assert!(chat.passthrough.is_empty());
    }

    #[test]
    fn the_known_list_matches_the_struct() {
        // A name in KNOWN_FIELDS that the struct does not read would be refused by
        // deny_unknown_fields; every name must parse as a field (null is each one's default).
        for name in KNOWN_FIELDS.iter().filter(|name| **name != "messages") {
            let mut body = serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});
            body[*name] = Value::Null;
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            assert!(deserialize(&mut serde_json::Deserializer::from_slice(&bytes)).is_ok(), "{name}");
        }
    }

    #[test]
    fn unknown_top_level_fields_are_set_apart_and_nested_ones_refused() {
        let body = serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "prediction": {"type": "content"}, "store": false});
        let chat = parsed(body).map(|parsed| parsed.chat).unwrap_or_default();
        assert_eq!(chat.passthrough.keys().collect::<Vec<_>>(), vec!["prediction", "store"]);
        assert_eq!(chat.messages.len(), 1);
        let nested = serde_json::json!({"messages": [{"role": "user", "content": "hi", "colour": "red"}]});
        assert!(matches!(parsed(nested), Err(GatewayError::InvalidArgument { field, .. }) if field == "messages[0].colour"));
        let legacy = serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "functions": []});
        assert!(matches!(parsed(legacy), Err(GatewayError::InvalidArgument { field, .. }) if field == "functions"));
    }

    #[test]
    fn images_keep_their_place_among_the_text() {
        let body = serde_json::json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is "},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            {"type": "text", "text": "this?"}
        ]}]});
        let chat = parsed(body).map(|parsed| parsed.chat).unwrap_or_default();
        assert_eq!(chat.messages[0].content, "what is this?");
        assert_eq!(chat.messages[0].parts.len(), 3);
        let text_only = serde_json::json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
        assert!(parsed(text_only).map(|parsed| parsed.chat.messages[0].parts.is_empty()).unwrap_or(false));
        for (part, field) in [
            (serde_json::json!({"type": "input_audio", "input_audio": {}}), "messages[0].content[0].type"),
            (serde_json::json!({"type": "image_url", "image_url": {"url": "ftp://x"}}), "messages[0].content[0].image_url.url"),
            (serde_json::json!({"type": "image_url", "image_url": {"url": "https://x", "detail": "max"}}), "messages[0].content[0].image_url.detail"),
            (serde_json::json!({"type": "text", "text": "a", "cache_control": {}}), "messages[0].content[0].cache_control"),
        ] {
            let body = serde_json::json!({"messages": [{"role": "user", "content": [part]}]});
            assert!(matches!(parsed(body), Err(GatewayError::InvalidArgument { field: named, .. }) if named == field), "{field}");
        }
    }

    #[test]
    fn tool_choice_and_formats_name_their_problems() {
        for (extra, field) in [
            (serde_json::json!({"tool_choice": "sometimes"}), "tool_choice"),
            (serde_json::json!({"tool_choice": {"type": "function", "function": {}}}), "tool_choice.function.name"),
            (serde_json::json!({"response_format": {"type": "xml"}}), "response_format.type"),
            (serde_json::json!({"response_format": {"type": "json_schema"}}), "response_format.json_schema"),
            (serde_json::json!({"top_logprobs": 3}), "top_logprobs"),
            (serde_json::json!({"logit_bias": {"abc": 1}}), "logit_bias.abc"),
            (serde_json::json!({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}), "tools[0].type"),
        ] {
            let mut body = serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});
            if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
                body.extend(extra);
            }
            assert!(matches!(parsed(body), Err(GatewayError::InvalidArgument { field: named, .. }) if named == field), "{field}");
        }
    }
}
