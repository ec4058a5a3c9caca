//! The OpenAI Chat Completions wire format: `POST /v1/chat/completions`, unary and streamed,
//! with tools, tool turns and `response_format`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::answer::{Answer, Piece, Prompt, SimAnswer};
use super::behaviour::Behaviour;
use super::respond::{self, WireFormat, error_response, to_json, write_data_event};
use super::state::{Endpoint, SimState};
use super::tools::{self, OfferedTool, SimToolCall, ToolChoice};
use super::wire::{Content, OneOrMany, compact_json, valid_tool_name};

/// Most stop sequences OpenAI accepts.
const MAX_STOP_SEQUENCES: usize = 4;

/// Content part types OpenAI accepts.
const PART_TYPES: &[&str] = &["text", "image_url", "input_audio", "file", "refusal"];

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
    /// The tools offered.
    #[serde(default)]
    tools: Option<Vec<ToolDefinition>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type": "function", "function": {"name": ...}}`.
    #[serde(default)]
    tool_choice: Option<Value>,
    /// Whether several tools may be called at once; true when absent.
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    /// `{"type": "text" | "json_object"}` or `{"type": "json_schema", "json_schema": {...}}`.
    #[serde(default)]
    response_format: Option<Value>,
}

/// One message of the conversation.
#[derive(Debug, Deserialize)]
struct ChatMessage {
    /// "system", "developer", "user", "assistant" or "tool".
    role: String,
    /// The message text.
    #[serde(default)]
    content: Content,
    /// The tools an assistant turn called.
    #[serde(default)]
    tool_calls: Option<Vec<CalledTool>>,
    /// The call a `tool` turn answers.
    #[serde(default)]
    tool_call_id: Option<String>,
}

/// One entry of `tools`.
#[derive(Debug, Deserialize)]
struct ToolDefinition {
    /// Must be `function`.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    /// The function.
    #[serde(default)]
    function: Option<FunctionDefinition>,
}

/// The function of a tool; `description` and `strict` are accepted and not used.
#[derive(Debug, Deserialize)]
struct FunctionDefinition {
    /// The function's name.
    #[serde(default)]
    name: Option<String>,
    /// The JSON Schema of its arguments.
    #[serde(default)]
    parameters: Option<Value>,
}

/// One call of an assistant turn's `tool_calls`.
#[derive(Debug, Deserialize)]
struct CalledTool {
    /// The call's id, answered by a `tool` turn's `tool_call_id`.
    #[serde(default)]
    id: Option<String>,
    /// Must be `function`.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    /// The function called.
    #[serde(default)]
    function: Option<CalledFunction>,
}

/// The function of a call.
#[derive(Debug, Deserialize)]
struct CalledFunction {
    /// The function's name.
    #[serde(default)]
    name: Option<String>,
    /// The arguments, a JSON text.
    #[serde(default)]
    arguments: Option<String>,
}

/// `stream_options` of a request.
#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default)]
    include_usage: bool,
}

/// What `response_format` asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Format<'a> {
    /// Text (no `response_format`, or `text`).
    Text,
    /// A JSON object.
    JsonObject,
    /// A JSON value following this schema.
    JsonSchema(&'a Value),
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
        self.tools_problem()
            .or_else(|| self.choice().err())
            .or_else(|| self.format().err())
            .or_else(|| conversation_problem(self.messages.as_deref().unwrap_or_default()))
    }

    /// Why `tools` is invalid, if it is.
    fn tools_problem(&self) -> Option<String> {
        let tools = self.tools.as_ref()?;
        if tools.is_empty() {
            return Some(
                "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an empty array instead."
                    .to_owned(),
            );
        }
        for (index, tool) in tools.iter().enumerate() {
            if tool.kind.as_deref() != Some("function") {
                return Some(format!(
                    "Invalid value for 'tools[{index}].type': expected 'function'."
                ));
            }
            let Some(function) = &tool.function else {
                return Some(format!(
                    "Missing required parameter: 'tools[{index}].function'."
                ));
            };
            let name = function.name.as_deref().unwrap_or_default();
            if !valid_tool_name(name) {
                return Some(format!(
                    "Invalid 'tools[{index}].function.name': '{name}' does not match pattern '^[a-zA-Z0-9_-]{{1,64}}$'."
                ));
            }
            if let Some(parameters) = function.parameters.as_ref().filter(|p| !p.is_object()) {
                return Some(format!(
                    "Invalid type for 'tools[{index}].function.parameters': expected an object, but got {parameters} instead."
                ));
            }
        }
        None
    }

    /// The tool choice; an error when it is malformed or names no offered tool.
    fn choice(&self) -> Result<ToolChoice<'_>, String> {
        let choice = match &self.tool_choice {
            None | Some(Value::Null) => return Ok(ToolChoice::Auto),
            Some(Value::String(mode)) => match mode.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => {
                    return Err(format!(
                        "Invalid value for 'tool_choice': '{other}'. Supported values are: 'none', 'auto', 'required' and a named function."
                    ));
                }
            },
            Some(Value::Object(fields))
                if fields.get("type").and_then(Value::as_str) == Some("function") =>
            {
                match fields
                    .get("function")
                    .and_then(|function| function.get("name"))
                    .and_then(Value::as_str)
                {
                    Some(name) => ToolChoice::Named(name),
                    None => {
                        return Err(
                            "Missing required parameter: 'tool_choice.function.name'.".to_owned()
                        );
                    }
                }
            }
            Some(other) => {
                return Err(format!(
                    "Invalid value for 'tool_choice': {other}. Expected 'none', 'auto', 'required' or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}."
                ));
            }
        };
        let offered = self.offered();
        match choice {
            ToolChoice::Required if offered.is_empty() => Err(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified."
                    .to_owned(),
            ),
            ToolChoice::Named(name) if !offered.iter().any(|tool| tool.name == name) => Err(format!(
                "Invalid value for 'tool_choice': function '{name}' is not one of the 'tools'."
            )),
            choice => Ok(choice),
        }
    }

    /// What `response_format` asks for; an error when it is malformed.
    fn format(&self) -> Result<Format<'_>, String> {
        let Some(format) = self
            .response_format
            .as_ref()
            .filter(|format| !format.is_null())
        else {
            return Ok(Format::Text);
        };
        match format.get("type").and_then(Value::as_str) {
            Some("text") => Ok(Format::Text),
            Some("json_object") => Ok(Format::JsonObject),
            Some("json_schema") => {
                let Some(json_schema) = format.get("json_schema").filter(|value| value.is_object())
                else {
                    return Err(
                        "Missing required parameter: 'response_format.json_schema'.".to_owned()
                    );
                };
                if json_schema
                    .get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(
                        "Missing required parameter: 'response_format.json_schema.name'."
                            .to_owned(),
                    );
                }
                match json_schema.get("schema") {
                    Some(schema @ Value::Object(_)) => Ok(Format::JsonSchema(schema)),
                    Some(other) => Err(format!(
                        "Invalid type for 'response_format.json_schema.schema': expected an object, but got {other} instead."
                    )),
                    None => Err(
                        "Missing required parameter: 'response_format.json_schema.schema'."
                            .to_owned(),
                    ),
                }
            }
            _ => Err(format!(
                "Invalid value for 'response_format.type': {}. Supported values are: 'text', 'json_object' and 'json_schema'.",
                format.get("type").unwrap_or(&Value::Null)
            )),
        }
    }

    /// The tools offered, with their schemas.
    fn offered(&self) -> Vec<OfferedTool<'_>> {
        self.tools
            .iter()
            .flatten()
            .filter_map(|tool| tool.function.as_ref())
            .filter_map(|function| {
                Some(OfferedTool {
                    name: function.name.as_deref()?,
                    schema: function.parameters.as_ref(),
                })
            })
            .collect()
    }

    /// The token limit of the answer.
    fn max_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The prompt: every message in order, each assistant tool call after its message.
    fn prompt(&self) -> Prompt {
        let mut prompt = Prompt::default();
        for message in self.messages.iter().flatten() {
            prompt.push(&message.role, message.content.parts());
            for call in message.tool_calls.iter().flatten() {
                let function = call.function.as_ref();
                let name = function.and_then(|f| f.name.as_deref()).unwrap_or_default();
                let arguments = function
                    .and_then(|f| f.arguments.as_deref())
                    .unwrap_or_default();
                prompt.push_tool_call(name, &canonical_arguments(arguments));
            }
        }
        prompt
    }

    /// The answer to a valid request under `behaviour`: tool calls when tools are offered, the
    /// choice is not `none` and the last message is not a tool result; else the text, as JSON
    /// when `response_format` asks for it.
    fn answer(&self, behaviour: &Behaviour) -> Answer {
        let answer = Answer::plan(&self.prompt(), behaviour.answer_tokens, self.max_tokens())
            .with_prompt_cache(behaviour.prompt_cache_read_tokens, 0);
        let choice = self.choice().unwrap_or(ToolChoice::Auto);
        let after_tool_result = self
            .messages
            .iter()
            .flatten()
            .next_back()
            .is_some_and(|message| message.role == "tool");
        if !after_tool_result {
            let parallel =
                self.parallel_tool_calls != Some(false) && !matches!(choice, ToolChoice::Named(_));
            let calls = tools::calls(answer.fingerprint(), &self.offered(), choice, parallel);
            if !calls.is_empty() {
                return answer.into_tool_calls(calls);
            }
        }
        match self.format().unwrap_or(Format::Text) {
            Format::Text => answer,
            Format::JsonObject => answer.into_json_object(),
            Format::JsonSchema(schema) => {
                let value = tools::schema_answer(answer.fingerprint(), schema);
                answer.into_json(&value)
            }
        }
    }
}

/// Arguments as the fingerprint hashes them: compact JSON, or the text as given when it is not
/// JSON.
fn canonical_arguments(arguments: &str) -> String {
    serde_json::from_str::<Value>(arguments)
        .map_or_else(|_| arguments.to_owned(), |value| compact_json(&value))
}

/// Why the conversation is invalid, if it is: content parts of unknown types or incomplete, tool
/// calls on other turns than the assistant's or with arguments that are not JSON, tool results
/// that answer no call of the assistant turn before them, calls left unanswered.
fn conversation_problem(messages: &[ChatMessage]) -> Option<String> {
    // Ids of the last assistant turn's calls still unanswered, while only tool turns follow it.
    let mut open_calls: Option<Vec<&str>> = None;
    for (index, message) in messages.iter().enumerate() {
        if let Some(problem) = parts_problem(index, &message.content) {
            return Some(problem);
        }
        if message.role == "tool" {
            let Some(id) = message.tool_call_id.as_deref() else {
                return Some(format!(
                    "Missing required parameter: 'messages[{index}].tool_call_id'."
                ));
            };
            let Some(open) = open_calls.as_mut() else {
                return Some(format!(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceding message with 'tool_calls' (messages[{index}])."
                ));
            };
            let Some(position) = open.iter().position(|open_id| *open_id == id) else {
                return Some(format!(
                    "Invalid parameter: 'tool_call_id' of '{id}' not found in 'tool_calls' of previous message (messages[{index}])."
                ));
            };
            open.swap_remove(position);
            continue;
        }
        if let Some(unanswered) = open_calls.take().filter(|open| !open.is_empty()) {
            return Some(unanswered_message(&unanswered));
        }
        let Some(calls) = message
            .tool_calls
            .as_ref()
            .filter(|calls| !calls.is_empty())
        else {
            continue;
        };
        if message.role != "assistant" {
            return Some(format!(
                "Invalid parameter: 'messages[{index}].tool_calls' is only allowed on messages with role 'assistant'."
            ));
        }
        let mut ids = Vec::with_capacity(calls.len());
        for (position, call) in calls.iter().enumerate() {
            if let Some(problem) = call_problem(index, position, call) {
                return Some(problem);
            }
            ids.push(call.id.as_deref().unwrap_or_default());
        }
        let distinct: HashSet<&str> = ids.iter().copied().collect();
        if distinct.len() != ids.len() {
            return Some(format!(
                "Invalid 'messages[{index}].tool_calls': duplicate tool call ids."
            ));
        }
        open_calls = Some(ids);
    }
    match open_calls {
        Some(unanswered) if !unanswered.is_empty() => Some(unanswered_message(&unanswered)),
        _ => None,
    }
}

/// OpenAI's complaint about calls no tool turn answers.
fn unanswered_message(unanswered: &[&str]) -> String {
    format!(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
        unanswered.join(", ")
    )
}

/// Why call `position` of message `index` is invalid, if it is.
fn call_problem(index: usize, position: usize, call: &CalledTool) -> Option<String> {
    let at = format!("messages[{index}].tool_calls[{position}]");
    if call.id.as_deref().is_none_or(str::is_empty) {
        return Some(format!("Missing required parameter: '{at}.id'."));
    }
    if call.kind.as_deref() != Some("function") {
        return Some(format!(
            "Invalid value for '{at}.type': expected 'function'."
        ));
    }
    let Some(function) = &call.function else {
        return Some(format!("Missing required parameter: '{at}.function'."));
    };
    if function.name.as_deref().is_none_or(str::is_empty) {
        return Some(format!("Missing required parameter: '{at}.function.name'."));
    }
    let Some(arguments) = &function.arguments else {
        return Some(format!(
            "Missing required parameter: '{at}.function.arguments'."
        ));
    };
    if let Err(error) = serde_json::from_str::<Value>(arguments) {
        return Some(format!(
            "Invalid '{at}.function.arguments': not valid JSON ({error})."
        ));
    }
    None
}

/// Why the content parts of message `index` are invalid, if they are.
fn parts_problem(index: usize, content: &Content) -> Option<String> {
    for (position, part) in content.blocks().iter().enumerate() {
        let at = format!("messages[{index}].content[{position}]");
        if !PART_TYPES.contains(&part.kind.as_str()) {
            return Some(format!(
                "Invalid value for '{at}.type': '{}'. Supported values are: 'text', 'image_url', 'input_audio', 'file' and 'refusal'.",
                part.kind
            ));
        }
        if part.kind == "text" && part.text.is_none() {
            return Some(format!("Missing required parameter: '{at}.text'."));
        }
        let url = part
            .image_url
            .as_ref()
            .and_then(|image| image.get("url"))
            .and_then(Value::as_str);
        if part.kind == "image_url" && url.is_none_or(str::is_empty) {
            return Some(format!("Missing required parameter: '{at}.image_url.url'."));
        }
    }
    None
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(state): State<Arc<SimState>>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    let arrival = Instant::now();
    let caller_opt = super::control::caller(&headers);
    let request: ChatRequest = match state.parse_body(Endpoint::OpenAi, caller_opt.as_deref(), &body) {
        Ok(request) => request,
        Err(problem) => return invalid_request(&problem),
    };
    let model_opt = request.model.as_deref().filter(|model| !model.is_empty());
    let problem_opt = request.problem();
    let behaviour = state.begin_call(
        Endpoint::OpenAi,
        model_opt,
        caller_opt.as_deref(),
        problem_opt.is_none(),
    );
    if let Some(problem) = problem_opt {
        return invalid_request(&problem);
    }

    let answer = request.answer(&behaviour);
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

/// What the simulator answers to the Chat Completions `body` under `behaviour`, or the message
/// of the 400 it answers instead.
pub(crate) fn predict(body: &Value, behaviour: &Behaviour) -> Result<SimAnswer, String> {
    let request =
        ChatRequest::deserialize(body).map_err(|error| format!("invalid request body: {error}"))?;
    match request.problem() {
        Some(problem) => Err(problem),
        None => Ok(request.answer(behaviour).summary()),
    }
}

/// A 400 in OpenAI's error shape.
pub(crate) fn invalid_request(message: &str) -> Response {
    let wire = OpenAiWire::default();
    error_response(&wire, StatusCode::BAD_REQUEST, message, None)
}

/// What an OpenAI answer repeats in every chunk.
#[derive(Debug, Default)]
pub(crate) struct OpenAiWire {
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
        let output_tokens = answer.output_tokens();
        Self {
            prompt_tokens: answer.input_tokens,
            completion_tokens: output_tokens,
            total_tokens: answer.input_tokens.saturating_add(output_tokens),
            prompt_tokens_details: (answer.cache_read_tokens > 0).then_some(PromptTokensDetails {
                cached_tokens: answer.cache_read_tokens,
            }),
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
    /// The text; `null` for tool calls.
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
}

/// One call of `message.tool_calls`.
#[derive(Serialize)]
struct WireToolCall<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

/// The function of a call.
#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    arguments: &'a str,
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
    /// Absent, text, or `null` (the first chunk of tool calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

/// A piece of one tool call in a chunk: the first carries the id, type and name.
#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

/// The function part of a [`ToolCallDelta`].
#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
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

impl OpenAiWire {
    /// A chunk with `choices`.
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

    /// Appends a chunk whose one choice adds `delta`.
    fn write_delta(
        &self,
        delta: Delta<'_>,
        finish_reason: Option<&'static str>,
        out: &mut Vec<u8>,
    ) {
        let choices = [ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }];
        write_data_event(out, &self.chunk(&choices, None));
    }
}

/// The wire form of `call`.
fn wire_call(call: &SimToolCall) -> WireToolCall<'_> {
    WireToolCall {
        id: call.openai_id(),
        kind: "function",
        function: WireFunction {
            name: &call.name,
            arguments: &call.arguments,
        },
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
        let content = answer.content();
        to_json(&Completion {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices: [CompletionChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: content.as_deref(),
                    refusal: None,
                    tool_calls: answer.tool_calls().iter().map(wire_call).collect(),
                },
                logprobs: None,
                finish_reason: answer.stop.finish_reason(),
            }],
            usage: Usage::of(answer),
        })
    }

    fn open_stream(&self, answer: &Answer, out: &mut Vec<u8>) {
        let content = if answer.tool_calls().is_empty() {
            Some("")
        } else {
            None
        };
        let delta = Delta {
            role: Some("assistant"),
            content: Some(content),
            tool_calls: None,
        };
        self.write_delta(delta, None, out);
    }

    fn piece_event(&self, piece: &Piece<'_>, out: &mut Vec<u8>) {
        let delta = match piece {
            Piece::Content(text) => Delta {
                content: Some(Some(text)),
                ..Delta::default()
            },
            Piece::CallStart { index, call } => Delta {
                tool_calls: Some([ToolCallDelta {
                    index: *index,
                    id: Some(call.openai_id()),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(&call.name),
                        arguments: "",
                    },
                }]),
                ..Delta::default()
            },
            Piece::CallArguments { index, fragment } => Delta {
                tool_calls: Some([ToolCallDelta {
                    index: *index,
                    id: None,
                    kind: None,
                    function: FunctionDelta {
                        name: None,
                        arguments: fragment,
                    },
                }]),
                ..Delta::default()
            },
        };
        self.write_delta(delta, None, out);
    }

    fn close_stream(&self, answer: &Answer, out: &mut Vec<u8>) {
        self.write_delta(Delta::default(), Some(answer.stop.finish_reason()), out);
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

    #[test]
    fn tool_and_format_mistakes_are_rejected() -> anyhow::Result<()> {
        let tools =
            r#"[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]"#;
        let hi = r#"{"role":"user","content":"hi"}"#;
        let call = |arguments: &str| {
            format!(
                r#"{{"role":"assistant","content":null,"tool_calls":[{{"id":"c1","type":"function","function":{{"name":"f","arguments":{arguments}}}}}]}}"#
            )
        };
        let valid_call = call(r#""{\"a\":1}""#);
        let answered = r#"{"role":"tool","tool_call_id":"c1","content":"ok"}"#;
        let ok = [
            format!(
                r#"{{"model":"m","messages":[{hi}],"tools":{tools},"tool_choice":"required"}}"#
            ),
            format!(
                r#"{{"model":"m","messages":[{hi}],"tools":{tools},"tool_choice":{{"type":"function","function":{{"name":"f"}}}}}}"#
            ),
            format!(r#"{{"model":"m","messages":[{hi},{valid_call},{answered}],"tools":{tools}}}"#),
            format!(
                r#"{{"model":"m","messages":[{hi}],"response_format":{{"type":"json_schema","json_schema":{{"name":"x","schema":{{}}}}}}}}"#
            ),
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#
                .to_owned(),
        ];
        for case in ok {
            assert_eq!(request(&case)?.problem(), None, "{case}");
        }
        let bad = [
            format!(r#"{{"model":"m","messages":[{hi}],"tool_choice":"required"}}"#),
            format!(r#"{{"model":"m","messages":[{hi}],"tools":{tools},"tool_choice":{{"type":"function","function":{{"name":"g"}}}}}}"#),
            format!(r#"{{"model":"m","messages":[{hi}],"tools":{tools},"tool_choice":"sometimes"}}"#),
            format!(r#"{{"model":"m","messages":[{hi}],"tools":[]}}"#),
            format!(r#"{{"model":"m","messages":[{hi}],"tools":[{{"type":"function","function":{{"name":"has space"}}}}]}}"#),
            format!(r#"{{"model":"m","messages":[{hi},{answered}]}}"#),
            format!(r#"{{"model":"m","messages":[{hi},{valid_call},{{"role":"tool","tool_call_id":"c2","content":"ok"}}]}}"#),
            format!(r#"{{"model":"m","messages":[{hi},{valid_call},{hi}]}}"#),
            format!(r#"{{"model":"m","messages":[{hi},{},{answered}]}}"#, call(r#""{not json""#)),
            format!(r#"{{"model":"m","messages":[{hi}],"response_format":{{"type":"json_schema","json_schema":{{"name":"x"}}}}}}"#),
            format!(r#"{{"model":"m","messages":[{hi}],"response_format":{{"type":"json_schema","json_schema":{{"name":"x","schema":"s"}}}}}}"#),
            format!(r#"{{"model":"m","messages":[{hi}],"response_format":{{"type":"xml"}}}}"#),
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image","source":{}}]}]}"#.to_owned(),
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#.to_owned(),
        ];
        for case in bad {
            assert!(request(&case)?.problem().is_some(), "{case}");
        }
        Ok(())
    }

    #[test]
    fn tool_turns_enter_the_fingerprint_with_compact_arguments() -> anyhow::Result<()> {
        let request = request(
            r#"{"model":"m","messages":[{"role":"user","content":"weather?"},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",
                 "function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"18C"}]}"#,
        )?;
        let expected = super::super::fingerprint(&[
            ("user", "weather?"),
            ("assistant", ""),
            ("tool_call", r#"get_weather {"city":"Paris"}"#),
            ("tool", "18C"),
        ]);
        assert_eq!(request.prompt().fingerprint_hex(), expected);
        Ok(())
    }
}
