//! The exact cache key: a 128-bit xxh3 of, in order, the schema version, the tenant, the model or
//! route the caller named (`auto` for the router's choice), every message (role, whitespace-
//! normalised content, image parts, tool calls, the call a tool turn answers and whether it failed,
//! the name), every sampling parameter that changes the output (temperature, top_p, top_k,
//! max_tokens, stop sequences, seed, penalties, logit bias, reasoning effort) and the answer's
//! shape (tools, tool choice, parallel calls, response format). Each field is length-prefixed, so no two different requests
//! encode alike; two requests that differ in any of these never share an answer, and the tenant
//! in every key keeps tenants apart.

use xxhash_rust::xxh3::Xxh3;

use crate::model::{ChatRequest, ContentPart, Message, ResponseFormat, ToolChoice};

/// Bumped whenever the encoding below changes, so old entries are never read as new ones.
pub const SCHEMA_VERSION: &str = "exact-v3";

/// Feeds `bytes`, length-prefixed.
pub(crate) fn field(hasher: &mut Xxh3, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

fn optional(hasher: &mut Xxh3, value: Option<u32>) {
    match value {
        Some(value) => {
            hasher.update(&[1]);
            hasher.update(&value.to_le_bytes());
        }
        None => hasher.update(&[0]),
    }
}

/// Content with runs of whitespace collapsed to one space and the ends trimmed.
pub fn normalise(content: &str) -> String {
    content.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One message: role, normalised text, and whatever else it carries.
pub(crate) fn message(hasher: &mut Xxh3, message: &Message) {
    field(hasher, message.role.as_str().as_bytes());
    field(hasher, normalise(&message.content).as_bytes());
    hasher.update(&(message.parts.len() as u64).to_le_bytes());
    for part in &message.parts {
        match part {
            ContentPart::Text(text) => field(hasher, text.as_bytes()),
            ContentPart::Image { url, detail } => {
                field(hasher, url.as_bytes());
                field(hasher, detail.as_deref().unwrap_or_default().as_bytes());
            }
        }
    }
    hasher.update(&(message.tool_calls.len() as u64).to_le_bytes());
    for call in &message.tool_calls {
        field(hasher, call.id.as_bytes());
        field(hasher, call.name.as_bytes());
        field(hasher, call.arguments.as_bytes());
    }
    field(hasher, message.tool_call_id.as_deref().unwrap_or_default().as_bytes());
    field(hasher, message.name.as_deref().unwrap_or_default().as_bytes());
    hasher.update(&[u8::from(message.tool_error)]);
}

/// What shapes an answer besides the conversation and the sampling class: tools, tool choice,
/// parallel calls, response format, seed, penalties, logit bias and reasoning effort. Shared by
/// the exact key and the semantic context, so a cached answer never serves a request that asked
/// for a different tool set or format.
pub(crate) fn answer_shape(hasher: &mut Xxh3, request: &ChatRequest) {
    hasher.update(&(request.tools.len() as u64).to_le_bytes());
    for tool in &request.tools {
        field(hasher, tool.name.as_bytes());
        field(hasher, tool.description.as_deref().unwrap_or_default().as_bytes());
        field(hasher, tool.parameters.as_ref().map(ToString::to_string).unwrap_or_default().as_bytes());
        optional(hasher, tool.strict.map(u32::from));
    }
    match &request.tool_choice {
        None => field(hasher, b""),
        Some(ToolChoice::Named(name)) => field(hasher, format!("named:{name}").as_bytes()),
        Some(choice) => field(hasher, choice.label().as_bytes()),
    }
    optional(hasher, request.parallel_tool_calls.map(u32::from));
    match &request.response_format {
        None => field(hasher, b""),
        Some(ResponseFormat::JsonSchema { name, description, schema, strict }) => {
            field(hasher, b"json_schema");
            field(hasher, name.as_bytes());
            field(hasher, description.as_deref().unwrap_or_default().as_bytes());
            field(hasher, schema.to_string().as_bytes());
            optional(hasher, strict.map(u32::from));
        }
        Some(format) => field(hasher, format.kind().as_bytes()),
    }
    let sampling = &request.sampling;
    match sampling.seed {
        Some(seed) => {
            hasher.update(&[1]);
            hasher.update(&seed.to_le_bytes());
        }
        None => hasher.update(&[0]),
    }
    optional(hasher, sampling.frequency_penalty.map(f32::to_bits));
    optional(hasher, sampling.presence_penalty.map(f32::to_bits));
    hasher.update(&(sampling.logit_bias.len() as u64).to_le_bytes());
    for (token, bias) in &sampling.logit_bias {
        hasher.update(&token.to_le_bytes());
        hasher.update(&bias.to_bits().to_le_bytes());
    }
    field(hasher, sampling.reasoning_effort.as_deref().unwrap_or_default().as_bytes());
    optional(hasher, sampling.top_k);
}

/// The key of `request` for `tenant`, as 32 hex digits.
pub fn exact_key(tenant: &str, request: &ChatRequest) -> String {
    let mut hasher = Xxh3::new();
    field(&mut hasher, SCHEMA_VERSION.as_bytes());
    field(&mut hasher, tenant.as_bytes());
    field(&mut hasher, request.model.as_deref().unwrap_or("auto").as_bytes());
    hasher.update(&(request.messages.len() as u64).to_le_bytes());
    for turn in &request.messages {
        message(&mut hasher, turn);
    }
    let sampling = &request.sampling;
    optional(&mut hasher, sampling.temperature.map(f32::to_bits));
    optional(&mut hasher, sampling.top_p.map(f32::to_bits));
    optional(&mut hasher, sampling.max_tokens);
    hasher.update(&(sampling.stop.len() as u64).to_le_bytes());
    for stop in &sampling.stop {
        field(&mut hasher, stop.as_bytes());
    }
    answer_shape(&mut hasher, request);
    format!("{:032x}", hasher.digest128())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Role, Tool, ToolCall};

    fn request(content: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![Message::text(Role::System, "be brief"), Message::text(Role::User, content)],
            model: Some("gpt-4o-mini".into()),
            ..ChatRequest::default()
        }
    }

    #[test]
    fn whitespace_does_not_matter_but_everything_else_does() {
        let base = exact_key("acme", &request("what is rust?"));
        assert_eq!(base, exact_key("acme", &request("  what   is\nrust? ")));
        assert_ne!(base, exact_key("globex", &request("what is rust?")), "tenant");
        assert_ne!(base, exact_key("acme", &request("what is go?")), "content");
        let mut other = request("what is rust?");
        other.model = Some("gpt-4o".into());
        assert_ne!(base, exact_key("acme", &other), "model");
        let mut other = request("what is rust?");
        other.sampling.temperature = Some(0.5);
        assert_ne!(base, exact_key("acme", &other), "temperature");
        let mut other = request("what is rust?");
        other.sampling.max_tokens = Some(10);
        assert_ne!(base, exact_key("acme", &other), "max_tokens");
        let mut other = request("what is rust?");
        other.sampling.stop = vec!["\n".into()];
        assert_ne!(base, exact_key("acme", &other), "stop");
        let mut other = request("what is rust?");
        other.messages[0].role = Role::User;
        assert_ne!(base, exact_key("acme", &other), "role");
        // Moving text between messages changes the key: fields are length-prefixed.
        let mut split = request("what is rust?");
        split.messages[0].content = "be brief what".into();
        split.messages[1].content = "is rust?".into();
        assert_ne!(base, exact_key("acme", &split));
    }

    #[test]
    fn tools_formats_parts_and_tool_turns_are_in_the_key() {
        let base = exact_key("acme", &request("weather in Paris?"));
        let tool = Tool { name: "get_weather".into(), description: None, parameters: Some(serde_json::json!({"type": "object"})), strict: None, prompt_cache: None };
        let mut with_tools = request("weather in Paris?");
        with_tools.tools = vec![tool.clone()];
        let tools_key = exact_key("acme", &with_tools);
        assert_ne!(base, tools_key, "tools");
        let mut other_schema = with_tools.clone();
        other_schema.tools[0].parameters = Some(serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}));
        assert_ne!(tools_key, exact_key("acme", &other_schema), "tool schema");
        let mut forced = with_tools.clone();
        forced.tool_choice = Some(ToolChoice::Named("get_weather".into()));
        assert_ne!(tools_key, exact_key("acme", &forced), "tool choice");
        let mut required = with_tools.clone();
        required.tool_choice = Some(ToolChoice::Required);
        assert_ne!(exact_key("acme", &forced), exact_key("acme", &required));
        let mut json = request("weather in Paris?");
        json.response_format = Some(ResponseFormat::JsonObject);
        assert_ne!(base, exact_key("acme", &json), "response format");
        let mut seeded = request("weather in Paris?");
        seeded.sampling.seed = Some(1);
        assert_ne!(base, exact_key("acme", &seeded), "seed");
        let mut image = request("weather in Paris?");
        image.messages[1].parts = vec![ContentPart::Text("weather in Paris?".into()), ContentPart::Image { url: "https://x/a.png".into(), detail: None }];
        let image_key = exact_key("acme", &image);
        assert_ne!(base, image_key, "image parts");
        image.messages[1].parts[1] = ContentPart::Image { url: "https://x/b.png".into(), detail: None };
        assert_ne!(image_key, exact_key("acme", &image), "which image");
        let mut turn = with_tools.clone();
        turn.messages.push(Message { role: Role::Assistant, tool_calls: vec![ToolCall { id: "c1".into(), name: "get_weather".into(), arguments: "{\"city\":\"Paris\"}".into() }], ..Message::default() });
        turn.messages.push(Message { role: Role::Tool, content: "18C".into(), tool_call_id: Some("c1".into()), ..Message::default() });
        let mut other_result = turn.clone();
        other_result.messages[3].content = "25C".into();
        assert_ne!(exact_key("acme", &turn), exact_key("acme", &other_result), "tool results");
        let mut other_arguments = turn.clone();
        other_arguments.messages[2].tool_calls[0].arguments = "{\"city\":\"Lyon\"}".into();
        assert_ne!(exact_key("acme", &turn), exact_key("acme", &other_arguments), "tool call arguments");
    }
}
