//! Tools, tool calls and structured output, as both front doors and every provider wire format
//! share them: a [`Tool`] the model may call, the caller's [`ToolChoice`], the [`ToolCall`]s of an
//! answer (whole, or as [`ToolCallDelta`]s of a stream), and the [`ResponseFormat`] an answer
//! must take.
//!
//! JSON the gateway does not interpret (a tool's parameter schema, a response schema) is kept as
//! the caller wrote it, key order included, and sent upstream unchanged.

use serde_json::Value;

use crate::error::GatewayError;

/// Most tools one request may offer (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// A function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// Its name: 1 to 64 letters, digits, `_` or `-`.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// A JSON Schema object of its arguments; `None` takes no arguments.
    pub parameters: Option<Value>,
    /// OpenAI's strict schema adherence.
    pub strict: Option<bool>,
    /// Anthropic's `cache_control` on the tool: the tool list up to here is worth caching at the
    /// provider (see [`crate::model::Message::prompt_cache`]).
    pub prompt_cache: Option<Value>,
}

/// Whether and which tool the model must call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must not call a tool.
    None,
    /// The model must call at least one tool.
    Required,
    /// The model must call this tool.
    Named(String),
}

impl ToolChoice {
    /// The name used in cache keys and logs.
    pub fn label(&self) -> &str {
        match self {
            Self::Auto => "auto",
            Self::None => "none",
            Self::Required => "required",
            Self::Named(name) => name,
        }
    }
}

/// A call the model made.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// The provider's id of the call, which the `tool` turn answering it names.
    pub id: String,
    /// The function called.
    pub name: String,
    /// Its arguments, as the JSON text the model wrote.
    pub arguments: String,
}

/// A piece of a tool call in a stream: the first piece of a call carries its id and name, the
/// rest carry fragments of the arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of the answer (0-based).
    pub index: u32,
    /// The call's id, on its first piece.
    pub id: Option<String>,
    /// The function's name, on its first piece.
    pub name: Option<String>,
    /// A fragment of the arguments' JSON text (may be empty).
    pub arguments: String,
}

/// Assembles the [`ToolCall`]s of a stream from its deltas.
#[derive(Clone, Debug, Default)]
pub struct ToolCallAssembler {
    calls: Vec<ToolCall>,
}

impl ToolCallAssembler {
    /// Adds one delta.
    pub fn push(&mut self, delta: &ToolCallDelta) {
        let index = delta.index as usize;
        if self.calls.len() <= index {
            self.calls.resize_with(index + 1, ToolCall::default);
        }
        let call = &mut self.calls[index];
        if let Some(id) = &delta.id {
            call.id.clone_from(id);
        }
        if let Some(name) = &delta.name {
            call.name.clone_from(name);
        }
        call.arguments.push_str(&delta.arguments);
    }

    /// The calls so far.
    pub fn finish(self) -> Vec<ToolCall> {
        self.calls
    }
}

/// The form an answer must take.
#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    /// Free text (the default).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema's name: 1 to 64 letters, digits, `_` or `-`.
        name: String,
        /// What the answer is, for the model.
        description: Option<String>,
        /// The JSON Schema object.
        schema: Value,
        /// OpenAI's strict schema adherence.
        strict: Option<bool>,
    },
}

impl ResponseFormat {
    /// OpenAI's `type` of it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::JsonObject => "json_object",
            Self::JsonSchema { .. } => "json_schema",
        }
    }
}

/// True for a name OpenAI accepts for a function or schema.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// Checks the tools, the tool choice and the response format; the error names the field.
pub fn validate(tools: &[Tool], choice: Option<&ToolChoice>, format: Option<&ResponseFormat>) -> Result<(), GatewayError> {
    if tools.len() > MAX_TOOLS {
        return Err(GatewayError::invalid("tools", format!("has {} tools, more than the limit of {MAX_TOOLS}", tools.len())));
    }
    for (index, tool) in tools.iter().enumerate() {
        if !valid_name(&tool.name) {
            return Err(GatewayError::invalid(
                format!("tools[{index}].function.name"),
                format!("\"{}\" is not 1 to 64 letters, digits, _ or -", tool.name),
            ));
        }
        if tools[..index].iter().any(|earlier| earlier.name == tool.name) {
            return Err(GatewayError::invalid(format!("tools[{index}].function.name"), format!("\"{}\" is offered twice", tool.name)));
        }
        if tool.parameters.as_ref().is_some_and(|schema| !schema.is_object()) {
            return Err(GatewayError::invalid(format!("tools[{index}].function.parameters"), "must be a JSON Schema object"));
        }
    }
    match choice {
        Some(ToolChoice::Required) if tools.is_empty() => {
            return Err(GatewayError::invalid("tool_choice", "\"required\" needs at least one tool in `tools`"));
        }
        Some(ToolChoice::Named(name)) if !tools.iter().any(|tool| &tool.name == name) => {
            return Err(GatewayError::invalid("tool_choice", format!("names \"{name}\", which is not in `tools`")));
        }
        _ => {}
    }
    if let Some(ResponseFormat::JsonSchema { name, schema, .. }) = format {
        if !valid_name(name) {
            return Err(GatewayError::invalid("response_format.json_schema.name", format!("\"{name}\" is not 1 to 64 letters, digits, _ or -")));
        }
        if !schema.is_object() {
            return Err(GatewayError::invalid("response_format.json_schema.schema", "must be a JSON Schema object"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Tool {
        Tool { name: name.into(), description: None, parameters: Some(serde_json::json!({"type": "object"})), strict: None, prompt_cache: None }
    }

    fn field_of(result: Result<(), GatewayError>) -> String {
        match result {
            Err(GatewayError::InvalidArgument { field, .. }) => field,
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn deltas_assemble_into_calls() {
        let mut assembler = ToolCallAssembler::default();
        for delta in [
            ToolCallDelta { index: 0, id: Some("a".into()), name: Some("f".into()), arguments: String::new() },
            ToolCallDelta { index: 1, id: Some("b".into()), name: Some("g".into()), arguments: "{}".into() },
            ToolCallDelta { index: 0, arguments: "{\"x\":".into(), ..ToolCallDelta::default() },
            ToolCallDelta { index: 0, arguments: "1}".into(), ..ToolCallDelta::default() },
        ] {
            assembler.push(&delta);
        }
        let calls = assembler.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].id.as_str(), calls[0].name.as_str(), calls[0].arguments.as_str()), ("a", "f", "{\"x\":1}"));
        assert_eq!(calls[1].arguments, "{}");
    }

    #[test]
    fn bad_tools_choices_and_formats_are_named() {
        assert!(validate(&[tool("get_weather"), tool("lookup-2")], Some(&ToolChoice::Named("lookup-2".into())), None).is_ok());
        assert_eq!(field_of(validate(&[tool("has space")], None, None)), "tools[0].function.name");
        assert_eq!(field_of(validate(&[tool("f"), tool("f")], None, None)), "tools[1].function.name");
        let mut bad_schema = tool("f");
        bad_schema.parameters = Some(serde_json::json!("object"));
        assert_eq!(field_of(validate(&[bad_schema], None, None)), "tools[0].function.parameters");
        assert_eq!(field_of(validate(&[], Some(&ToolChoice::Required), None)), "tool_choice");
        assert_eq!(field_of(validate(&[tool("f")], Some(&ToolChoice::Named("g".into())), None)), "tool_choice");
        let format = ResponseFormat::JsonSchema { name: "answer".into(), description: None, schema: serde_json::json!([]), strict: Some(true) };
        assert_eq!(field_of(validate(&[], None, Some(&format))), "response_format.json_schema.schema");
        let many: Vec<Tool> = (0..=MAX_TOOLS).map(|index| tool(&format!("t{index}"))).collect();
        assert_eq!(field_of(validate(&many, None, None)), "tools");
    }
}
