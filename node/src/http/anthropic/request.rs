//! Reading an Anthropic Messages body into a [`ChatRequest`]: every field of the Messages API the
//! gateway honours, each checked with an error naming it (Anthropic's own limits: `max_tokens`
//! required, `temperature` within 0 ..= 1, `tool_result` blocks answering the assistant turn
//! before them). Anything else — an unknown field, a server tool, `thinking`, a `document` block —
//! is refused with a 400 naming it, never dropped.
//!
//! The turns map onto the gateway's conversation: `system` becomes the instruction turn, a user
//! turn's `tool_result` blocks become `tool` turns (in order, before the rest of that user turn),
//! an assistant turn's `tool_use` blocks its tool calls. `cache_control` marks are kept for
//! Anthropic providers (see [`Message::prompt_cache`]).

use serde::Deserialize;
use serde_json::{Map, Value};
use switchyard_actors::error::GatewayError;
use switchyard_actors::model::{ChatRequest, ContentPart, Message, Role, Sampling, Tool, ToolCall, ToolChoice};

/// The request body, as Anthropic defines it (the fields the gateway honours).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesRequest {
    model: String,
    messages: Vec<InMessage>,
    /// Required by `/v1/messages`; `/v1/messages/count_tokens` takes none.
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    metadata: Option<InMetadata>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    tools: Option<Vec<Map<String, Value>>>,
    #[serde(default)]
    tool_choice: Option<InToolChoice>,
    /// Refused unless disabled: the gateway does not carry thinking blocks.
    #[serde(default)]
    thinking: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InMetadata {
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InMessage {
    role: String,
    /// A string or an array of content blocks, read by [`blocks`].
    content: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InToolChoice {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

/// Which endpoint the body came to: a count takes no `max_tokens` and no sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
}

/// What the body asks for besides the chat request itself.
#[derive(Debug)]
pub struct Parsed {
    /// The request.
    pub chat: ChatRequest,
    /// `stream: true`.
    pub stream: bool,
}

/// Parses `body` for `endpoint`, naming the offending field of any problem.
pub fn parse(body: &[u8], endpoint: Endpoint) -> Result<Parsed, GatewayError> {
    let request: MessagesRequest = crate::http::body::read(body)?;
    into_request(request, endpoint)
}

fn into_request(request: MessagesRequest, endpoint: Endpoint) -> Result<Parsed, GatewayError> {
    if endpoint == Endpoint::Messages {
        match request.max_tokens {
            None => return Err(GatewayError::invalid("max_tokens", "is required")),
            Some(0) => return Err(GatewayError::invalid("max_tokens", "must be at least 1")),
            Some(_) => {}
        }
    } else {
        let answer_only = [
            ("max_tokens", request.max_tokens.is_some()),
            ("stream", request.stream.is_some()),
            ("temperature", request.temperature.is_some()),
            ("top_p", request.top_p.is_some()),
            ("top_k", request.top_k.is_some()),
            ("stop_sequences", request.stop_sequences.is_some()),
            ("metadata", request.metadata.is_some()),
        ];
        if let Some((field, _)) = answer_only.iter().find(|(_, present)| *present) {
            return Err(GatewayError::invalid(*field, "is not a field of a token count"));
        }
    }
    if let Some(temperature) = request.temperature
        && !(0.0..=1.0).contains(&temperature)
    {
        return Err(GatewayError::invalid("temperature", format!("{temperature} is outside 0.0 ..= 1.0")));
    }
    if let Some(thinking) = &request.thinking
        && thinking.get("type").and_then(Value::as_str) != Some("disabled")
    {
        return Err(GatewayError::invalid("thinking", "extended thinking is not supported by this gateway (only {\"type\": \"disabled\"})"));
    }
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = request.system {
        messages.extend(system_turn(system)?);
    }
    for (index, turn) in request.messages.into_iter().enumerate() {
        let earlier_calls: Vec<String> = match messages.last() {
            Some(Message { role: Role::Assistant, tool_calls, .. }) => tool_calls.iter().map(|call| call.id.clone()).collect(),
            _ => Vec::new(),
        };
        messages.extend(turn_messages(turn, index, &earlier_calls)?);
    }
    let mut tools = Vec::new();
    for (index, tool) in request.tools.unwrap_or_default().into_iter().enumerate() {
        tools.push(read_tool(tool, index)?);
    }
    let (tool_choice, parallel_tool_calls) = match request.tool_choice {
        None => (None, None),
        Some(choice) => read_tool_choice(choice)?,
    };
    let user = request.metadata.and_then(|metadata| metadata.user_id);
    let mut metadata = std::collections::BTreeMap::new();
    if let Some(user) = &user {
        metadata.insert("user".into(), user.clone());
    }
    let chat = ChatRequest {
        messages,
        model: Some(request.model).filter(|model| !model.is_empty() && model != "auto"),
        sampling: Sampling {
            temperature: request.temperature,
            top_p: request.top_p,
            top_k: request.top_k,
            max_tokens: request.max_tokens,
            stop: request.stop_sequences.unwrap_or_default(),
            ..Sampling::default()
        },
        metadata,
        user,
        tools,
        tool_choice,
        parallel_tool_calls,
        ..ChatRequest::default()
    };
    Ok(Parsed { chat, stream: request.stream.unwrap_or(false) })
}

/// `system`: a string or text blocks, as one instruction turn.
fn system_turn(system: Value) -> Result<Option<Message>, GatewayError> {
    let mut turn = Message::text(Role::System, "");
    match system {
        Value::Null => return Ok(None),
        Value::String(text) => turn.content = text,
        Value::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (index, block) in blocks.into_iter().enumerate() {
                let field = format!("system[{index}]");
                let Value::Object(block) = block else { return Err(GatewayError::invalid(field, "must be a text block")) };
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(GatewayError::invalid(format!("{field}.type"), "must be \"text\""));
                }
                only_keys(&block, &["type", "text", "cache_control"], &field)?;
                texts.push(text_of(&block, &field)?);
                if let Some(mark) = cache_mark(&block, &field)? {
                    turn.prompt_cache = Some(mark);
                }
            }
            turn.content = texts.join("\n\n");
        }
        _ => return Err(GatewayError::invalid("system", "must be a string or an array of text blocks")),
    }
    Ok(Some(turn))
}

fn only_keys(block: &Map<String, Value>, allowed: &[&str], field: &str) -> Result<(), GatewayError> {
    match block.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(other) => Err(GatewayError::invalid(format!("{field}.{other}"), format!("`{other}` is not a field the gateway knows there"))),
        None => Ok(()),
    }
}

fn text_of(block: &Map<String, Value>, field: &str) -> Result<String, GatewayError> {
    match block.get("text") {
        Some(Value::String(text)) => Ok(text.clone()),
        _ => Err(GatewayError::invalid(format!("{field}.text"), "must be a string")),
    }
}

/// A block's `cache_control`: `{"type": "ephemeral"}` with an optional `ttl` of `5m` or `1h`.
fn cache_mark(block: &Map<String, Value>, field: &str) -> Result<Option<Value>, GatewayError> {
    let Some(mark) = block.get("cache_control") else { return Ok(None) };
    let field = format!("{field}.cache_control");
    let Value::Object(fields) = mark else {
        if mark.is_null() {
            return Ok(None);
        }
        return Err(GatewayError::invalid(field, "must be an object"));
    };
    only_keys(fields, &["type", "ttl"], &field)?;
    if fields.get("type").and_then(Value::as_str) != Some("ephemeral") {
        return Err(GatewayError::invalid(format!("{field}.type"), "must be \"ephemeral\""));
    }
    if let Some(ttl) = fields.get("ttl")
        && !matches!(ttl.as_str(), Some("5m" | "1h"))
    {
        return Err(GatewayError::invalid(format!("{field}.ttl"), "must be \"5m\" or \"1h\""));
    }
    Ok(Some(mark.clone()))
}

/// An image block as an image part: base64 bytes as a `data:` URL, a URL as itself.
fn image_part(block: &Map<String, Value>, field: &str) -> Result<ContentPart, GatewayError> {
    only_keys(block, &["type", "source", "cache_control"], field)?;
    let field = format!("{field}.source");
    let Some(Value::Object(source)) = block.get("source") else { return Err(GatewayError::invalid(field, "must be an object")) };
    let string = |name: &str| match source.get(name) {
        Some(Value::String(value)) => Ok(value.as_str()),
        _ => Err(GatewayError::invalid(format!("{field}.{name}"), "must be a string")),
    };
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            only_keys(source, &["type", "media_type", "data"], &field)?;
            let media_type = string("media_type")?;
            if !["image/jpeg", "image/png", "image/gif", "image/webp"].contains(&media_type) {
                return Err(GatewayError::invalid(format!("{field}.media_type"), format!("\"{media_type}\" is not image/jpeg, image/png, image/gif or image/webp")));
            }
            format!("data:{media_type};base64,{}", string("data")?)
        }
        Some("url") => {
            only_keys(source, &["type", "url"], &field)?;
            let url = string("url")?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(GatewayError::invalid(format!("{field}.url"), "must be an http(s) URL"));
            }
            url.to_owned()
        }
        _ => return Err(GatewayError::invalid(format!("{field}.type"), "must be \"base64\" or \"url\"")),
    };
    Ok(ContentPart::Image { url, detail: None })
}

/// A `tool_result` block as a `tool` turn.
fn tool_result(block: &Map<String, Value>, field: &str, answerable: &[String]) -> Result<Message, GatewayError> {
    only_keys(block, &["type", "tool_use_id", "content", "is_error", "cache_control"], field)?;
    let Some(Value::String(id)) = block.get("tool_use_id") else {
        return Err(GatewayError::invalid(format!("{field}.tool_use_id"), "must be a string"));
    };
    if !answerable.contains(id) {
        return Err(GatewayError::invalid(
            format!("{field}.tool_use_id"),
            format!("\"{id}\" answers no tool_use block of the assistant message before it"),
        ));
    }
    let content = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (index, part) in parts.iter().enumerate() {
                let part_field = format!("{field}.content[{index}]");
                let Value::Object(part) = part else { return Err(GatewayError::invalid(part_field, "must be a text block")) };
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        only_keys(part, &["type", "text", "cache_control"], &part_field)?;
                        texts.push(text_of(part, &part_field)?);
                    }
                    Some(kind) => {
                        return Err(GatewayError::invalid(format!("{part_field}.type"), format!("`{kind}` blocks in a tool result are not supported (text is)")));
                    }
                    None => return Err(GatewayError::invalid(format!("{part_field}.type"), "is missing")),
                }
            }
            texts.join("\n")
        }
        Some(_) => return Err(GatewayError::invalid(format!("{field}.content"), "must be a string or an array of text blocks")),
    };
    let tool_error = match block.get("is_error") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(failed)) => *failed,
        Some(_) => return Err(GatewayError::invalid(format!("{field}.is_error"), "must be a boolean")),
    };
    Ok(Message {
        role: Role::Tool,
        content,
        tool_call_id: Some(id.clone()),
        tool_error,
        prompt_cache: cache_mark(block, field)?,
        ..Message::default()
    })
}

/// A `tool_use` block as a tool call.
fn tool_use(block: &Map<String, Value>, field: &str) -> Result<ToolCall, GatewayError> {
    only_keys(block, &["type", "id", "name", "input", "cache_control"], field)?;
    let string = |name: &str| match block.get(name) {
        Some(Value::String(value)) if !value.is_empty() => Ok(value.clone()),
        _ => Err(GatewayError::invalid(format!("{field}.{name}"), "must be a non-empty string")),
    };
    let input = match block.get("input") {
        Some(input @ Value::Object(_)) => input.to_string(),
        _ => return Err(GatewayError::invalid(format!("{field}.input"), "must be an object")),
    };
    Ok(ToolCall { id: string("id")?, name: string("name")?, arguments: input })
}

/// One Anthropic turn as the gateway's turns: `tool_result` blocks become `tool` turns first,
/// then the rest of the turn. `answerable` holds the ids of the tool calls the assistant turn
/// before it made.
fn turn_messages(turn: InMessage, index: usize, answerable: &[String]) -> Result<Vec<Message>, GatewayError> {
    let role = match turn.role.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => return Err(GatewayError::invalid(format!("messages[{index}].role"), format!("unknown role \"{other}\" (expected user or assistant)"))),
    };
    let blocks = match turn.content {
        Value::String(text) => return Ok(vec![Message::text(role, text)]),
        Value::Array(blocks) => blocks,
        _ => return Err(GatewayError::invalid(format!("messages[{index}].content"), "must be a string or an array of content blocks")),
    };
    let mut results = Vec::new();
    let mut message = Message { role, ..Message::default() };
    let mut parts = Vec::with_capacity(blocks.len());
    for (block_index, block) in blocks.into_iter().enumerate() {
        let field = format!("messages[{index}].content[{block_index}]");
        let Value::Object(block) = block else { return Err(GatewayError::invalid(field, "must be an object with a \"type\"")) };
        let kind = match block.get("type").and_then(Value::as_str) {
            Some(kind) => kind,
            None => return Err(GatewayError::invalid(format!("{field}.type"), "is missing")),
        };
        match (kind, role) {
            ("text", _) => {
                only_keys(&block, &["type", "text", "cache_control", "citations"], &field)?;
                if block.get("citations").is_some_and(|citations| !citations.is_null()) {
                    return Err(GatewayError::invalid(format!("{field}.citations"), "is not supported (only null)"));
                }
                parts.push(ContentPart::Text(text_of(&block, &field)?));
            }
            ("image", Role::User) => parts.push(image_part(&block, &field)?),
            ("tool_result", Role::User) => {
                results.push(tool_result(&block, &field, answerable)?);
                continue;
            }
            ("tool_use", Role::Assistant) => message.tool_calls.push(tool_use(&block, &field)?),
            ("image" | "tool_result", _) => return Err(GatewayError::invalid(format!("{field}.type"), format!("`{kind}` blocks belong to user turns"))),
            ("tool_use", _) => return Err(GatewayError::invalid(format!("{field}.type"), "`tool_use` blocks belong to assistant turns")),
            (other, _) => {
                return Err(GatewayError::invalid(
                    format!("{field}.type"),
                    format!("`{other}` blocks are not supported (text, image, tool_use and tool_result are)"),
                ));
            }
        }
        if let Some(mark) = cache_mark(&block, &field)? {
            message.prompt_cache = Some(mark);
        }
    }
    let texts = parts.iter().filter_map(|part| if let ContentPart::Text(text) = part { Some(text.as_str()) } else { None });
    message.content = texts.collect::<Vec<_>>().join("\n");
    if parts.len() > 1 || parts.iter().any(|part| matches!(part, ContentPart::Image { .. })) {
        message.parts = parts;
    }
    let keep_message = !message.content.is_empty() || !message.parts.is_empty() || !message.tool_calls.is_empty() || results.is_empty();
    if keep_message {
        results.push(message);
    }
    Ok(results)
}

fn read_tool(tool: Map<String, Value>, index: usize) -> Result<Tool, GatewayError> {
    let field = format!("tools[{index}]");
    if let Some(kind) = tool.get("type").and_then(Value::as_str)
        && kind != "custom"
    {
        return Err(GatewayError::invalid(format!("{field}.type"), format!("server tool \"{kind}\" is not supported (custom tools are)")));
    }
    only_keys(&tool, &["type", "name", "description", "input_schema", "cache_control"], &field)?;
    let Some(Value::String(name)) = tool.get("name") else { return Err(GatewayError::invalid(format!("{field}.name"), "must be a string")) };
    let description = match tool.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(description)) => Some(description.clone()),
        Some(_) => return Err(GatewayError::invalid(format!("{field}.description"), "must be a string")),
    };
    let parameters = match tool.get("input_schema") {
        Some(schema @ Value::Object(_)) => Some(schema.clone()),
        _ => return Err(GatewayError::invalid(format!("{field}.input_schema"), "must be a JSON Schema object")),
    };
    Ok(Tool { name: name.clone(), description, parameters, strict: None, prompt_cache: cache_mark(&tool, &field)? })
}

fn read_tool_choice(choice: InToolChoice) -> Result<(Option<ToolChoice>, Option<bool>), GatewayError> {
    let parallel = choice.disable_parallel_tool_use.map(|disabled| !disabled);
    let named = |kind: &str| match &choice.name {
        Some(_) => Err(GatewayError::invalid("tool_choice.name", format!("applies to type \"tool\" only, not \"{kind}\""))),
        None => Ok(()),
    };
    let picked = match choice.kind.as_str() {
        "auto" => {
            named("auto")?;
            ToolChoice::Auto
        }
        "any" => {
            named("any")?;
            ToolChoice::Required
        }
        "none" => {
            named("none")?;
            if parallel.is_some() {
                return Err(GatewayError::invalid("tool_choice.disable_parallel_tool_use", "does not apply to type \"none\""));
            }
            ToolChoice::None
        }
        "tool" => match choice.name {
            Some(name) => ToolChoice::Named(name),
            None => return Err(GatewayError::invalid("tool_choice.name", "is required for type \"tool\"")),
        },
        other => return Err(GatewayError::invalid("tool_choice.type", format!("\"{other}\" is not auto, any, tool or none"))),
    };
    Ok((Some(picked), parallel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: Value) -> Result<Parsed, GatewayError> {
        let bytes = serde_json::to_vec(&body).map_err(|error| GatewayError::Internal(error.to_string()))?;
        parse(&bytes, Endpoint::Messages)
    }

    fn field_of(body: Value) -> String {
        match parsed(body) {
            Err(GatewayError::InvalidArgument { field, .. }) => field,
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    fn base() -> Value {
        serde_json::json!({"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})
    }

    #[test]
    fn a_tool_conversation_becomes_tool_turns() -> Result<(), GatewayError> {
        let body = serde_json::json!({
            "model": "m", "max_tokens": 64,
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": [{"type": "text", "text": "checking"}, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}], "is_error": false}, {"type": "text", "text": "and tomorrow?"}]}
            ]
        });
        let chat = parsed(body)?.chat;
        let roles: Vec<Role> = chat.messages.iter().map(|message| message.role).collect();
        assert_eq!(roles, vec![Role::System, Role::User, Role::Assistant, Role::Tool, Role::User]);
        assert!(chat.messages[0].prompt_cache.is_some());
        assert_eq!(chat.messages[2].tool_calls[0].arguments, "{\"city\":\"Paris\"}");
        assert_eq!(chat.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(chat.messages[3].content, "18C");
        assert_eq!(chat.tool_choice, Some(ToolChoice::Required));
        assert_eq!(chat.parallel_tool_calls, Some(false));
        Ok(())
    }

    #[test]
    fn images_become_data_urls() -> Result<(), GatewayError> {
        let mut body = base();
        body["messages"][0]["content"] = serde_json::json!([
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            {"type": "text", "text": "what is this?"}
        ]);
        let chat = parsed(body)?.chat;
        assert_eq!(chat.messages[0].parts[0], ContentPart::Image { url: "data:image/png;base64,AAAA".into(), detail: None });
        assert_eq!(chat.messages[0].content, "what is this?");
        Ok(())
    }

    #[test]
    fn each_bad_field_is_named() {
        let with = |path: &[&str], value: Value| {
            let mut body = base();
            let mut slot = &mut body;
            for key in &path[..path.len() - 1] {
                slot = &mut slot[*key];
            }
            slot[path[path.len() - 1]] = value;
            body
        };
        let mut missing_max = base();
        if let Value::Object(fields) = &mut missing_max {
            fields.remove("max_tokens");
        }
        assert_eq!(field_of(missing_max), "max_tokens");
        assert_eq!(field_of(with(&["temperature"], serde_json::json!(1.5))), "temperature");
        assert_eq!(field_of(with(&["thinking"], serde_json::json!({"type": "enabled", "budget_tokens": 1024}))), "thinking");
        assert_eq!(field_of(with(&["service_tier"], serde_json::json!("auto"))), "service_tier");
        assert_eq!(field_of(with(&["tools"], serde_json::json!([{"type": "web_search_20250305", "name": "web_search"}]))), "tools[0].type");
        assert_eq!(field_of(with(&["tools"], serde_json::json!([{"name": "f"}]))), "tools[0].input_schema");
        assert_eq!(field_of(with(&["tool_choice"], serde_json::json!({"type": "tool"}))), "tool_choice.name");
        assert_eq!(field_of(with(&["tool_choice"], serde_json::json!({"type": "sometimes"}))), "tool_choice.type");
        let block = |block: Value| with(&["messages"], serde_json::json!([{"role": "user", "content": [block]}]));
        assert_eq!(field_of(block(serde_json::json!({"type": "document", "source": {}}))), "messages[0].content[0].type");
        assert_eq!(field_of(block(serde_json::json!({"type": "text", "text": "a", "colour": "red"}))), "messages[0].content[0].colour");
        assert_eq!(
            field_of(block(serde_json::json!({"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AA"}}))),
            "messages[0].content[0].source.media_type"
        );
        assert_eq!(field_of(block(serde_json::json!({"type": "tool_result", "tool_use_id": "nowhere"}))), "messages[0].content[0].tool_use_id");
        assert_eq!(
            field_of(block(serde_json::json!({"type": "text", "text": "a", "cache_control": {"type": "forever"}}))),
            "messages[0].content[0].cache_control.type"
        );
        assert_eq!(field_of(with(&["messages"], serde_json::json!([{"role": "system", "content": "x"}]))), "messages[0].role");
    }

    #[test]
    fn a_count_takes_no_max_tokens() -> Result<(), GatewayError> {
        let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let bytes = serde_json::to_vec(&body).map_err(|error| GatewayError::Internal(error.to_string()))?;
        assert!(parse(&bytes, Endpoint::CountTokens).is_ok());
        let bytes = serde_json::to_vec(&base()).map_err(|error| GatewayError::Internal(error.to_string()))?;
        assert!(matches!(parse(&bytes, Endpoint::CountTokens), Err(GatewayError::InvalidArgument { field, .. }) if field == "max_tokens"));
        Ok(())
    }
}
