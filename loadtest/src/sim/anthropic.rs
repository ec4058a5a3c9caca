//! The Anthropic Messages wire format: `POST /v1/messages`, unary and streamed, with tools and
//! tool turns; and `POST /v1/messages/count_tokens`.
//!
//! The `x-api-key` and `anthropic-version` headers are accepted with any value.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::answer::{Answer, Piece, Prompt, SimAnswer};
use super::behaviour::Behaviour;
use super::respond::{self, WireFormat, error_response, to_json, write_named_event};
use super::state::{Endpoint, SimState};
use super::tools::{self, OfferedTool, ToolChoice};
use super::wire::{Block, Content, compact_json, valid_tool_name};

/// Content block types Anthropic accepts in messages.
const BLOCK_TYPES: &[&str] = &[
    "text",
    "image",
    "document",
    "search_result",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
];

/// Block types a `tool_result`'s content may hold.
const TOOL_RESULT_BLOCK_TYPES: &[&str] = &["text", "image", "document", "search_result"];

/// Media types of base64 images.
const IMAGE_MEDIA_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// A Messages request (or a token count's body); fields the simulator does not use are ignored.
#[derive(Debug, Deserialize)]
struct MessagesRequest {
    /// The requested model.
    #[serde(default)]
    model: Option<String>,
    /// The system prompt, a string or text blocks.
    #[serde(default)]
    system: Content,
    /// The conversation.
    #[serde(default)]
    messages: Option<Vec<Message>>,
    /// Token limit; required (but by `count_tokens`).
    #[serde(default)]
    max_tokens: Option<u32>,
    /// Sampling temperature, 0 to 1.
    #[serde(default)]
    temperature: Option<f64>,
    /// Nucleus sampling, 0 to 1.
    #[serde(default)]
    top_p: Option<f64>,
    /// Stop sequences; accepted, not applied.
    #[serde(default)]
    #[expect(dead_code, reason = "parsed to reject a malformed value, not applied")]
    stop_sequences: Option<Vec<String>>,
    /// Whether to stream the answer.
    #[serde(default)]
    stream: Option<bool>,
    /// The tools offered.
    #[serde(default)]
    tools: Option<Vec<ToolDefinition>>,
    /// `{"type": "auto" | "any" | "tool" | "none", "name"?, "disable_parallel_tool_use"?}`.
    #[serde(default)]
    tool_choice: Option<ToolChoiceSpec>,
}

/// One message of the conversation.
#[derive(Debug, Deserialize)]
struct Message {
    /// "user" or "assistant".
    role: String,
    /// The message text or blocks.
    #[serde(default)]
    content: Content,
}

/// One entry of `tools`: a custom tool (no `type`, or `custom`) with an input schema, or a
/// server tool (any other `type`), which the simulator never calls.
#[derive(Debug, Deserialize)]
struct ToolDefinition {
    /// `custom`, absent, or a server tool's type.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    /// The tool's name.
    #[serde(default)]
    name: Option<String>,
    /// The JSON Schema of a custom tool's input.
    #[serde(default)]
    input_schema: Option<Value>,
}

impl ToolDefinition {
    /// Whether this is a custom tool, the kind the simulator calls.
    fn is_custom(&self) -> bool {
        self.kind.as_deref().is_none_or(|kind| kind == "custom")
    }
}

/// `tool_choice`.
#[derive(Debug, Deserialize)]
struct ToolChoiceSpec {
    /// `auto`, `any`, `tool` or `none`.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    /// The tool of a `tool` choice.
    #[serde(default)]
    name: Option<String>,
    /// At most one call.
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

/// Which endpoint a body is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// `POST /v1/messages`: `max_tokens` is required.
    Messages,
    /// `POST /v1/messages/count_tokens`: no `max_tokens`.
    CountTokens,
}

impl MessagesRequest {
    /// Why the request is invalid for `purpose`, if it is.
    fn problem(&self, purpose: Purpose) -> Option<String> {
        if self.model.as_deref().is_none_or(str::is_empty) {
            return Some("model: field required".to_owned());
        }
        if self.messages.as_ref().is_none_or(Vec::is_empty) {
            return Some("messages: at least one message is required".to_owned());
        }
        if purpose == Purpose::Messages {
            match self.max_tokens {
                None => return Some("max_tokens: field required".to_owned()),
                Some(0) => {
                    return Some("max_tokens: must be greater than or equal to 1".to_owned());
                }
                Some(_) => {}
            }
        }
        if let Some(temperature) = self.temperature.filter(|t| !(0.0..=1.0).contains(t)) {
            return Some(format!("temperature: {temperature} is not between 0 and 1"));
        }
        if let Some(top_p) = self.top_p.filter(|p| !(0.0..=1.0).contains(p)) {
            return Some(format!("top_p: {top_p} is not between 0 and 1"));
        }
        if let Some(position) = self
            .system
            .blocks()
            .iter()
            .position(|block| block.kind != "text")
        {
            return Some(format!(
                "system.{position}.type: system blocks must be text blocks"
            ));
        }
        let messages = self.messages.as_deref().unwrap_or_default();
        self.tools_problem()
            .or_else(|| self.choice_problem())
            .or_else(|| {
                messages
                    .iter()
                    .enumerate()
                    .find_map(|(index, message)| blocks_problem(index, message))
            })
            .or_else(|| pairing_problem(messages))
    }

    /// Why `tools` is invalid, if it is.
    fn tools_problem(&self) -> Option<String> {
        let mut names = HashSet::new();
        for (index, tool) in self.tools.iter().flatten().enumerate() {
            let name = tool.name.as_deref().unwrap_or_default();
            if !valid_tool_name(name) {
                return Some(format!(
                    "tools.{index}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$', got '{name}'"
                ));
            }
            if !names.insert(name) {
                return Some(format!(
                    "tools: Tool names must be unique ('{name}' is repeated)"
                ));
            }
            if !tool.is_custom() {
                continue;
            }
            match &tool.input_schema {
                None => return Some(format!("tools.{index}.custom.input_schema: Field required")),
                Some(Value::Object(schema)) => {
                    if schema.get("type").and_then(Value::as_str) != Some("object") {
                        return Some(format!(
                            "tools.{index}.custom.input_schema.type: Input should be 'object'"
                        ));
                    }
                }
                Some(_) => {
                    return Some(format!(
                        "tools.{index}.custom.input_schema: Input should be a valid dictionary"
                    ));
                }
            }
        }
        None
    }

    /// Why `tool_choice` is invalid, if it is.
    fn choice_problem(&self) -> Option<String> {
        let choice = self.tool_choice.as_ref()?;
        let tools = self.tools.as_deref().unwrap_or_default();
        match choice.kind.as_deref() {
            Some("auto" | "none") => None,
            Some("any") if tools.is_empty() => {
                Some("tool_choice: `any` requires `tools` to be given".to_owned())
            }
            Some("any") => None,
            Some("tool") => match choice.name.as_deref() {
                None => Some("tool_choice.tool.name: Field required".to_owned()),
                Some(name) if !tools.iter().any(|tool| tool.name.as_deref() == Some(name)) => Some(
                    format!("tool_choice.tool.name: tool '{name}' is not one of the `tools`"),
                ),
                Some(_) => None,
            },
            other => Some(format!(
                "tool_choice.type: Input tag '{}' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
                other.unwrap_or_default()
            )),
        }
    }

    /// The tool choice, in shared terms.
    fn choice(&self) -> ToolChoice<'_> {
        let Some(choice) = &self.tool_choice else {
            return ToolChoice::Auto;
        };
        match (choice.kind.as_deref(), choice.name.as_deref()) {
            (Some("none"), _) => ToolChoice::None,
            (Some("any"), _) => ToolChoice::Required,
            (Some("tool"), Some(name)) => ToolChoice::Named(name),
            _ => ToolChoice::Auto,
        }
    }

    /// The custom tools offered, with their schemas.
    fn offered(&self) -> Vec<OfferedTool<'_>> {
        self.tools
            .iter()
            .flatten()
            .filter(|tool| tool.is_custom())
            .filter_map(|tool| {
                Some(OfferedTool {
                    name: tool.name.as_deref()?,
                    schema: tool.input_schema.as_ref(),
                })
            })
            .collect()
    }

    /// The prompt: the system prompt, then the messages in order; an assistant's `tool_use`
    /// blocks as tool-call entries after its text, a user's `tool_result` blocks as `tool`
    /// entries before its other content (left out when it has none).
    fn prompt(&self) -> Prompt {
        let mut prompt = Prompt::default();
        if self.system != Content::Empty {
            prompt.push("system", self.system.parts());
        }
        for message in self.messages.iter().flatten() {
            match message.role.as_str() {
                "assistant" => {
                    prompt.push("assistant", message.content.parts());
                    for block in message
                        .content
                        .blocks()
                        .iter()
                        .filter(|b| b.kind == "tool_use")
                    {
                        let input = block.input.as_ref().map(compact_json).unwrap_or_default();
                        prompt.push_tool_call(block.name.as_deref().unwrap_or_default(), &input);
                    }
                }
                "user" => {
                    for block in message
                        .content
                        .blocks()
                        .iter()
                        .filter(|b| b.kind == "tool_result")
                    {
                        let error = block.is_error.unwrap_or(false).then_some("Error: ");
                        let text = block.content.iter().flat_map(Content::parts);
                        prompt.push("tool", error.into_iter().chain(text));
                    }
                    if !only_tool_results(&message.content) {
                        prompt.push("user", message.content.parts());
                    }
                }
                role => prompt.push(role, message.content.parts()),
            }
        }
        prompt
    }

    /// The answer to a valid request under `behaviour`: tool calls when custom tools are offered,
    /// the choice is not `none` and the last message is not only tool results; else the text.
    fn answer(&self, behaviour: &Behaviour) -> Answer {
        let answer = Answer::plan(&self.prompt(), behaviour.answer_tokens, self.max_tokens)
            .with_prompt_cache(
                behaviour.prompt_cache_read_tokens,
                behaviour.prompt_cache_write_tokens,
            );
        let after_tool_result = self
            .messages
            .iter()
            .flatten()
            .next_back()
            .is_some_and(|message| message.role == "user" && only_tool_results(&message.content));
        if after_tool_result {
            return answer;
        }
        let choice = self.choice();
        let disable_parallel = self
            .tool_choice
            .as_ref()
            .and_then(|choice| choice.disable_parallel_tool_use)
            .unwrap_or(false);
        let parallel = !disable_parallel && !matches!(choice, ToolChoice::Named(_));
        let calls = tools::calls(answer.fingerprint(), &self.offered(), choice, parallel);
        if calls.is_empty() {
            answer
        } else {
            answer.into_tool_calls(calls)
        }
    }
}

/// Whether `content` is one or more `tool_result` blocks and nothing else.
fn only_tool_results(content: &Content) -> bool {
    let blocks = content.blocks();
    !blocks.is_empty() && blocks.iter().all(|block| block.kind == "tool_result")
}

/// The ids of the `kind` blocks (`tool_use` ids or `tool_result` `tool_use_id`s) of `message`.
fn block_ids<'a>(message: Option<&'a Message>, kind: &str) -> Vec<&'a str> {
    message
        .map(|message| message.content.blocks())
        .unwrap_or_default()
        .iter()
        .filter(|block| block.kind == kind)
        .filter_map(|block| match kind {
            "tool_use" => block.id.as_deref(),
            _ => block.tool_use_id.as_deref(),
        })
        .collect()
}

/// Why the blocks of message `index` are invalid, if they are: unknown types, incomplete blocks,
/// `tool_use` outside assistant turns or `tool_result` outside user turns.
fn blocks_problem(index: usize, message: &Message) -> Option<String> {
    for (position, block) in message.content.blocks().iter().enumerate() {
        let at = format!("messages.{index}.content.{position}");
        if !BLOCK_TYPES.contains(&block.kind.as_str()) {
            return Some(format!(
                "{at}: Input tag '{}' found using 'type' does not match any of the expected tags",
                block.kind
            ));
        }
        let problem = match block.kind.as_str() {
            "text" if block.text.is_none() => Some(format!("{at}.text: Field required")),
            "image" => image_problem(&at, block),
            "tool_use" if message.role != "assistant" => Some(format!(
                "{at}: `tool_use` blocks can only be in `assistant` messages"
            )),
            "tool_use" if block.id.as_deref().is_none_or(str::is_empty) => {
                Some(format!("{at}.id: Field required"))
            }
            "tool_use" if block.name.as_deref().is_none_or(str::is_empty) => {
                Some(format!("{at}.name: Field required"))
            }
            "tool_use" if !block.input.as_ref().is_some_and(Value::is_object) => {
                Some(format!("{at}.input: Input should be a valid dictionary"))
            }
            "tool_result" if message.role != "user" => Some(format!(
                "{at}: `tool_result` blocks can only be in `user` messages"
            )),
            "tool_result" if block.tool_use_id.as_deref().is_none_or(str::is_empty) => {
                Some(format!("{at}.tool_use_id: Field required"))
            }
            "tool_result" => block
                .content
                .iter()
                .flat_map(Content::blocks)
                .enumerate()
                .find_map(|(inner, result)| {
                    let at = format!("{at}.content.{inner}");
                    if !TOOL_RESULT_BLOCK_TYPES.contains(&result.kind.as_str()) {
                        return Some(format!(
                            "{at}: Input tag '{}' found using 'type' does not match any of the expected tags: 'text', 'image', 'document', 'search_result'",
                            result.kind
                        ));
                    }
                    match result.kind.as_str() {
                        "text" if result.text.is_none() => Some(format!("{at}.text: Field required")),
                        "image" => image_problem(&at, result),
                        _ => None,
                    }
                }),
            _ => None,
        };
        if problem.is_some() {
            return problem;
        }
    }
    None
}

/// Why the `image` block at `at` is invalid, if it is: its `source` must be base64 data of an
/// image media type, a URL or a file id.
fn image_problem(at: &str, block: &Block) -> Option<String> {
    let Some(source) = block.source.as_ref() else {
        return Some(format!("{at}.source: Field required"));
    };
    let field = |name: &str| {
        source
            .get(name)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
    };
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => match field("media_type") {
            Some(media_type) if IMAGE_MEDIA_TYPES.contains(&media_type) => field("data")
                .is_none()
                .then(|| format!("{at}.source.base64.data: Field required")),
            _ => Some(format!(
                "{at}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
            )),
        },
        Some("url") => field("url")
            .is_none()
            .then(|| format!("{at}.source.url.url: Field required")),
        Some("file") => field("file_id")
            .is_none()
            .then(|| format!("{at}.source.file.file_id: Field required")),
        _ => Some(format!(
            "{at}.source: Input tag found using 'type' does not match any of the expected tags: 'base64', 'url', 'file'"
        )),
    }
}

/// Why the tool turns of the conversation are invalid, if they are: every `tool_result` must
/// answer a `tool_use` of the message just before, and every `tool_use` must be answered by the
/// message just after.
fn pairing_problem(messages: &[Message]) -> Option<String> {
    for (index, message) in messages.iter().enumerate() {
        let results = block_ids(Some(message), "tool_result");
        if !results.is_empty() {
            let previous = index
                .checked_sub(1)
                .and_then(|previous| messages.get(previous))
                .filter(|previous| previous.role == "assistant");
            let uses = block_ids(previous, "tool_use");
            if let Some(id) = results.iter().find(|id| !uses.contains(id)) {
                return Some(format!(
                    "messages.{index}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                ));
            }
        }
        if message.role != "assistant" {
            continue;
        }
        let uses = block_ids(Some(message), "tool_use");
        let distinct: HashSet<&str> = uses.iter().copied().collect();
        if distinct.len() != uses.len() {
            return Some(format!(
                "messages.{index}.content: `tool_use` ids must be unique"
            ));
        }
        let next = messages.get(index + 1).filter(|next| next.role == "user");
        let answered = block_ids(next, "tool_result");
        let missing: Vec<&str> = uses
            .into_iter()
            .filter(|id| !answered.contains(id))
            .collect();
        if !missing.is_empty() {
            return Some(format!(
                "messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                missing.join(", ")
            ));
        }
    }
    None
}

/// Reads a body for `endpoint`, counting the call; the request and the behaviour to apply, or
/// the message of the 400 to answer.
fn read_request(
    state: &SimState,
    endpoint: Endpoint,
    caller_opt: Option<&str>,
    body: &[u8],
) -> Result<(MessagesRequest, Behaviour), String> {
    let purpose = match endpoint {
        Endpoint::CountTokens => Purpose::CountTokens,
        _ => Purpose::Messages,
    };
    let request: MessagesRequest = state.parse_body(endpoint, caller_opt, body)?;
    let model_opt = request.model.as_deref().filter(|model| !model.is_empty());
    let problem_opt = request.problem(purpose);
    let behaviour = state.begin_call(endpoint, model_opt, caller_opt, problem_opt.is_none());
    match problem_opt {
        Some(problem) => Err(problem),
        None => Ok((request, behaviour)),
    }
}

/// `POST /v1/messages`.
pub(crate) async fn messages(
    State(state): State<Arc<SimState>>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    let arrival = Instant::now();
    let caller_opt = super::control::caller(&headers);
    let (request, behaviour) =
        match read_request(&state, Endpoint::Anthropic, caller_opt.as_deref(), &body) {
            Ok(read) => read,
            Err(problem) => return invalid_request(&problem),
        };
    let answer = request.answer(&behaviour);
    let wire = AnthropicWire {
        id: format!("msg_sim_{:024}", state.next_response_id()),
        model: request.model.unwrap_or_default(),
    };
    let stream = request.stream.unwrap_or(false);
    respond::respond(state, arrival, behaviour, answer, stream, wire).await
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, N the prompt's input tokens (what a
/// messages call reports as `usage.input_tokens` plus its prompt-cache reads and writes).
pub(crate) async fn count_tokens(
    State(state): State<Arc<SimState>>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    let arrival = Instant::now();
    let caller_opt = super::control::caller(&headers);
    let (request, behaviour) =
        match read_request(&state, Endpoint::CountTokens, caller_opt.as_deref(), &body) {
            Ok(read) => read,
            Err(problem) => return invalid_request(&problem),
        };
    let prompt = request.prompt();
    let count = TokenCount {
        input_tokens: prompt.input_tokens(),
    };
    let fingerprint = Some(prompt.fingerprint_hex());
    let wire = AnthropicWire::default();
    respond::respond_plain(
        state,
        arrival,
        behaviour,
        to_json(&count),
        fingerprint,
        wire,
    )
    .await
}

/// What the simulator answers to the Messages `body` under `behaviour`, or the message of the
/// 400 it answers instead.
pub(crate) fn predict(body: &Value, behaviour: &Behaviour) -> Result<SimAnswer, String> {
    let request = MessagesRequest::deserialize(body)
        .map_err(|error| format!("invalid request body: {error}"))?;
    match request.problem(Purpose::Messages) {
        Some(problem) => Err(problem),
        None => Ok(request.answer(behaviour).summary()),
    }
}

/// A 400 in Anthropic's error shape.
fn invalid_request(message: &str) -> Response {
    let wire = AnthropicWire::default();
    error_response(&wire, StatusCode::BAD_REQUEST, message, None)
}

/// What an Anthropic answer repeats in its events.
#[derive(Debug, Default)]
struct AnthropicWire {
    /// `msg_sim_<n>`.
    id: String,
    /// The requested model.
    model: String,
}

/// The answer of `count_tokens`.
#[derive(Serialize)]
struct TokenCount {
    input_tokens: u32,
}

/// A whole `message`, unary or in `message_start`.
#[derive(Serialize)]
struct MessageBody<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<OutBlock<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<()>,
    usage: Usage,
}

/// A content block of an answer.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutBlock<'a> {
    /// `{"type": "text", "text": ...}`.
    Text { text: &'a str },
    /// `{"type": "tool_use", "id": ..., "name": ..., "input": {...}}`.
    ToolUse {
        id: String,
        name: &'a str,
        input: &'a Value,
    },
}

/// `usage` of a message: Anthropic counts prompt-cache reads and writes apart from
/// `input_tokens`.
#[derive(Serialize)]
struct Usage {
    input_tokens: u32,
    output_tokens: u32,
    #[serde(skip_serializing_if = "is_zero")]
    cache_read_input_tokens: u32,
    #[serde(skip_serializing_if = "is_zero")]
    cache_creation_input_tokens: u32,
}

/// Prompt-cache counts appear only when there were any, as in answers without a cache.
#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(count: &u32) -> bool {
    *count == 0
}

impl Usage {
    fn of(answer: &Answer, output_tokens: u32) -> Self {
        Self {
            input_tokens: answer.input_tokens
                - answer.cache_read_tokens
                - answer.cache_write_tokens,
            output_tokens,
            cache_read_input_tokens: answer.cache_read_tokens,
            cache_creation_input_tokens: answer.cache_write_tokens,
        }
    }
}

/// `message_start`.
#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: MessageBody<'a>,
}

/// `content_block_start`.
#[derive(Serialize)]
struct ContentBlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    content_block: OutBlock<'a>,
}

/// `content_block_delta`.
#[derive(Serialize)]
struct ContentBlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    delta: BlockDelta<'a>,
}

/// The `delta` of a `content_block_delta`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta<'a> {
    /// More text of a text block.
    TextDelta { text: &'a str },
    /// More of a `tool_use` block's input JSON.
    InputJsonDelta { partial_json: &'a str },
}

/// `content_block_stop`.
#[derive(Serialize)]
struct ContentBlockStop {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
}

/// `message_delta`.
#[derive(Serialize)]
struct MessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta,
    usage: OutputUsage,
}

/// The `delta` of a `message_delta`.
#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

/// The `usage` of a `message_delta`.
#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u32,
}

/// An event with only a type: `ping`, `message_stop`.
#[derive(Serialize)]
struct Bare {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// `{"type": "error", "error": {...}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorDetail<'a>,
}

/// The error itself.
#[derive(Serialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

/// Appends `content_block_stop` for block `index`.
fn write_block_stop(index: usize, out: &mut Vec<u8>) {
    let stop = ContentBlockStop {
        kind: "content_block_stop",
        index,
    };
    write_named_event(out, "content_block_stop", &stop);
}

impl WireFormat for AnthropicWire {
    fn error_body(&self, status: StatusCode, message: &str) -> Vec<u8> {
        let kind = match status.as_u16() {
            400 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        to_json(&ErrorBody {
            kind: "error",
            error: ErrorDetail { kind, message },
        })
    }

    fn unary_body(&self, answer: &Answer) -> Vec<u8> {
        let content_text = answer.content();
        let content = match &content_text {
            Some(text) => vec![OutBlock::Text { text }],
            None => answer
                .tool_calls()
                .iter()
                .map(|call| OutBlock::ToolUse {
                    id: call.anthropic_id(),
                    name: &call.name,
                    input: &call.input,
                })
                .collect(),
        };
        to_json(&MessageBody {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content,
            stop_reason: Some(answer.stop.stop_reason()),
            stop_sequence: None,
            usage: Usage::of(answer, answer.output_tokens()),
        })
    }

    fn open_stream(&self, answer: &Answer, out: &mut Vec<u8>) {
        let message = MessageBody {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: Usage::of(answer, 1),
        };
        write_named_event(
            out,
            "message_start",
            &MessageStart {
                kind: "message_start",
                message,
            },
        );
        if answer.tool_calls().is_empty() {
            let start = ContentBlockStart {
                kind: "content_block_start",
                index: 0,
                content_block: OutBlock::Text { text: "" },
            };
            write_named_event(out, "content_block_start", &start);
        }
        write_named_event(out, "ping", &Bare { kind: "ping" });
    }

    fn piece_event(&self, piece: &Piece<'_>, out: &mut Vec<u8>) {
        let (index, delta) = match piece {
            Piece::Content(text) => (0, BlockDelta::TextDelta { text }),
            Piece::CallStart { index, call } => {
                if let Some(previous) = index.checked_sub(1) {
                    write_block_stop(previous, out);
                }
                let empty = Value::Object(Map::new());
                let start = ContentBlockStart {
                    kind: "content_block_start",
                    index: *index,
                    content_block: OutBlock::ToolUse {
                        id: call.anthropic_id(),
                        name: &call.name,
                        input: &empty,
                    },
                };
                write_named_event(out, "content_block_start", &start);
                return;
            }
            Piece::CallArguments { index, fragment } => (
                *index,
                BlockDelta::InputJsonDelta {
                    partial_json: fragment,
                },
            ),
        };
        let delta = ContentBlockDelta {
            kind: "content_block_delta",
            index,
            delta,
        };
        write_named_event(out, "content_block_delta", &delta);
    }

    fn close_stream(&self, answer: &Answer, out: &mut Vec<u8>) {
        write_block_stop(answer.tool_calls().len().saturating_sub(1), out);
        let delta = MessageDelta {
            kind: "message_delta",
            delta: StopDelta {
                stop_reason: answer.stop.stop_reason(),
                stop_sequence: None,
            },
            usage: OutputUsage {
                output_tokens: answer.output_tokens(),
            },
        };
        write_named_event(out, "message_delta", &delta);
        write_named_event(
            out,
            "message_stop",
            &Bare {
                kind: "message_stop",
            },
        );
    }

    fn malformed_event(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"delta\": not json\n\n",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(json: &str) -> anyhow::Result<Option<String>> {
        Ok(serde_json::from_str::<MessagesRequest>(json)?.problem(Purpose::Messages))
    }

    #[test]
    fn max_tokens_is_required() -> anyhow::Result<()> {
        let hi = r#"[{"role":"user","content":"hi"}]"#;
        assert_eq!(
            problem(&format!(
                r#"{{"model":"m","messages":{hi},"max_tokens":8}}"#
            ))?,
            None
        );
        assert!(problem(&format!(r#"{{"model":"m","messages":{hi}}}"#))?.is_some());
        assert!(
            problem(&format!(
                r#"{{"model":"m","messages":{hi},"max_tokens":0}}"#
            ))?
            .is_some()
        );
        assert!(problem(&format!(r#"{{"messages":{hi},"max_tokens":8}}"#))?.is_some());
        assert!(problem(r#"{"model":"m","messages":[],"max_tokens":8}"#)?.is_some());
        Ok(())
    }

    #[test]
    fn system_and_blocks_are_accepted() -> anyhow::Result<()> {
        let request: MessagesRequest = serde_json::from_str(
            r#"{"model":"m","max_tokens":8,"system":[{"type":"text","text":"be brief"}],
                "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
                "stop_sequences":["x"],"temperature":1,"metadata":{"user_id":"u"}}"#,
        )?;
        assert_eq!(request.system.parts().collect::<Vec<_>>(), ["be brief"]);
        assert_eq!(request.problem(Purpose::Messages), None);
        Ok(())
    }

    #[test]
    fn error_bodies_follow_anthropic() -> anyhow::Result<()> {
        let body = AnthropicWire::default().error_body(StatusCode::from_u16(529)?, "busy");
        let value: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(value["type"], "error");
        assert_eq!(value["error"]["type"], "overloaded_error");
        assert_eq!(value["error"]["message"], "busy");
        Ok(())
    }

    #[test]
    fn tool_mistakes_are_rejected() -> anyhow::Result<()> {
        let tools = r#"[{"name":"f","input_schema":{"type":"object"}}]"#;
        let hi = r#"{"role":"user","content":"hi"}"#;
        let uses = r#"{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]}"#;
        let result = |id: &str| {
            format!(
                r#"{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"{id}","content":"ok"}}]}}"#
            )
        };
        let body = |messages: String, extra: &str| {
            format!(r#"{{"model":"m","max_tokens":8,"messages":[{messages}]{extra}}}"#)
        };
        let ok = [
            body(format!("{hi},{uses},{}", result("t1")), &format!(r#","tools":{tools}"#)),
            body(hi.to_owned(), &format!(r#","tools":{tools},"tool_choice":{{"type":"tool","name":"f"}}"#)),
            body(hi.to_owned(), r#","tools":[{"type":"web_search_20250305","name":"web_search"}]"#),
            body(
                r#"{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}}]}"#.to_owned(),
                "",
            ),
        ];
        for case in ok {
            assert_eq!(problem(&case)?, None, "{case}");
        }
        let bad = [
            body(format!("{hi},{uses},{}", result("t2")), ""),
            body(format!("{hi},{}", result("t1")), ""),
            body(format!("{hi},{uses},{hi}"), ""),
            body(hi.to_owned(), &format!(r#","tools":{tools},"tool_choice":{{"type":"tool","name":"g"}}"#)),
            body(hi.to_owned(), r#","tool_choice":{"type":"any"}"#),
            body(hi.to_owned(), r#","tools":[{"name":"f","input_schema":"object"}]"#),
            body(hi.to_owned(), r#","tools":[{"name":"f","input_schema":{"type":"string"}}]"#),
            body(hi.to_owned(), r#","tools":[{"name":"f"}]"#),
            body(
                hi.to_owned(),
                r#","tools":[{"name":"f","input_schema":{"type":"object"}},{"name":"f","input_schema":{"type":"object"}}]"#,
            ),
            body(r#"{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}"#.to_owned(), ""),
            body(r#"{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"text/plain","data":"AA=="}}]}"#.to_owned(), ""),
            body(r#"{"role":"user","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]}"#.to_owned(), ""),
        ];
        for case in bad {
            assert!(problem(&case)?.is_some(), "{case}");
        }
        Ok(())
    }

    #[test]
    fn tool_turns_hash_like_their_openai_form() -> anyhow::Result<()> {
        let request: MessagesRequest = serde_json::from_str(
            r#"{"model":"m","max_tokens":8,"messages":[
                {"role":"user","content":"weather?"},
                {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"get_weather","input":{"city":"Paris"}}]},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"18C"}]},
                                          {"type":"text","text":"thanks"}]}]}"#,
        )?;
        let expected = super::super::fingerprint(&[
            ("user", "weather?"),
            ("assistant", ""),
            ("tool_call", r#"get_weather {"city":"Paris"}"#),
            ("tool", "18C"),
            ("user", "thanks"),
        ]);
        assert_eq!(request.prompt().fingerprint_hex(), expected);
        assert_eq!(request.problem(Purpose::CountTokens), None);
        Ok(())
    }
}
