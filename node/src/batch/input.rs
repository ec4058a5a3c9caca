//! Reading a batch's JSONL input: one request a line,
//! `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {…}}`. Every line is
//! checked before anything runs (the body as `POST /v1/chat/completions` reads it, then against
//! the node's request limits); a bad line fails the whole batch with errors naming the line.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;
use switchyard_actors::error::GatewayError;
use switchyard_actors::model::{ChatRequest, RequestLimits};

use crate::batch::model::{BatchError, CHAT_ENDPOINT};
use crate::http::openai::request;

/// Most line errors reported for one input (the rest are counted in the last message).
const MAX_REPORTED_ERRORS: usize = 100;

/// [`parse`] on a blocking thread: a large input takes a while to read, and must not hold up
/// a thread that serves requests.
pub async fn parse_off_runtime(content: bytes::Bytes, limits: RequestLimits, max_lines: usize) -> Result<Vec<InputLine>, Vec<BatchError>> {
    match tokio::task::spawn_blocking(move || parse(&content, &limits, max_lines)).await {
        Ok(parsed) => parsed,
        Err(error) => Err(vec![error_at(None, "internal_error", None, format!("reading the input failed: {error}"))]),
    }
}

/// One line of the input as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    custom_id: String,
    method: String,
    url: String,
    body: Value,
}

/// A checked input line.
#[derive(Clone, Debug, PartialEq)]
pub struct InputLine {
    /// The caller's id for the line, unique in the batch.
    pub custom_id: String,
    /// The Chat Completions body, as JSON text.
    pub body: Vec<u8>,
}

impl InputLine {
    /// The body as the pipeline's request.
    pub fn chat_request(&self) -> Result<ChatRequest, GatewayError> {
        chat_request(&self.body)
    }
}

fn chat_request(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let parsed = request::parse(body)?;
    if parsed.stream {
        return Err(GatewayError::invalid("stream", "a batch line cannot stream; leave stream out"));
    }
    Ok(parsed.chat)
}

/// Reads and checks every line of `content`: the lines (blank lines skipped), or every problem
/// (up to [`MAX_REPORTED_ERRORS`]) with its 1-based line number.
pub fn parse(content: &[u8], limits: &RequestLimits, max_lines: usize) -> Result<Vec<InputLine>, Vec<BatchError>> {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut problems = 0usize;
    let text = match std::str::from_utf8(content) {
        Ok(text) => text,
        Err(error) => return Err(vec![error_at(None, "invalid_file", None, format!("the file is not UTF-8 text: {error}"))]),
    };
    for (index, text_line) in text.lines().enumerate() {
        let number = index as u64 + 1;
        if text_line.trim().is_empty() {
            continue;
        }
        match parse_line(text_line, limits, &mut seen) {
            Ok(line) => lines.push(line),
            Err((param, message)) => {
                problems += 1;
                if errors.len() < MAX_REPORTED_ERRORS {
                    errors.push(error_at(Some(number), "invalid_request", param, message));
                }
            }
        }
    }
    if problems > errors.len() {
        let more = problems - errors.len();
        errors.push(error_at(None, "invalid_request", None, format!("{more} more line(s) are invalid")));
    }
    if lines.is_empty() && errors.is_empty() {
        errors.push(error_at(None, "empty_file", None, "the file has no request lines".into()));
    }
    if lines.len() > max_lines {
        errors.push(error_at(None, "too_many_lines", None, format!("{} request lines; a batch takes at most {max_lines}", lines.len())));
    }
    if errors.is_empty() { Ok(lines) } else { Err(errors) }
}

fn error_at(line: Option<u64>, code: &str, param: Option<String>, message: String) -> BatchError {
    let message = match line {
        Some(line) => format!("line {line}: {message}"),
        None => message,
    };
    BatchError { code: code.into(), message, param, line }
}

/// One line: the line, or the field at fault and what is wrong.
fn parse_line(text: &str, limits: &RequestLimits, seen: &mut HashSet<String>) -> Result<InputLine, (Option<String>, String)> {
    let raw: RawLine = crate::http::body::read(text.as_bytes()).map_err(split)?;
    if raw.custom_id.is_empty() {
        return Err((Some("custom_id".into()), "custom_id: must not be empty".into()));
    }
    if !seen.insert(raw.custom_id.clone()) {
        return Err((Some("custom_id".into()), format!("custom_id: \"{}\" is used by an earlier line", raw.custom_id)));
    }
    if raw.method != "POST" {
        return Err((Some("method".into()), format!("method: \"{}\" is not POST", raw.method)));
    }
    if raw.url != CHAT_ENDPOINT {
        return Err((Some("url".into()), format!("url: \"{}\" is not {CHAT_ENDPOINT}, the batch's endpoint", raw.url)));
    }
    if !raw.body.is_object() {
        return Err((Some("body".into()), "body: must be a JSON object".into()));
    }
    let body = serde_json::to_vec(&raw.body).map_err(|error| (Some("body".into()), format!("body: {error}")))?;
    let request = chat_request(&body).map_err(|error| prefix_body(split(error)))?;
    request.validate(limits).map_err(|error| prefix_body(split(error)))?;
    Ok(InputLine { custom_id: raw.custom_id, body })
}

/// A field error as (field, message).
fn split(error: GatewayError) -> (Option<String>, String) {
    match &error {
        GatewayError::InvalidArgument { field, .. } => (Some(field.clone()), error.to_string()),
        _ => (None, error.to_string()),
    }
}

fn prefix_body((param, message): (Option<String>, String)) -> (Option<String>, String) {
    (param.map(|param| format!("body.{param}")), format!("body.{message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(custom_id: &str, body: Value) -> String {
        serde_json::json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}).to_string()
    }

    fn chat(prompt: &str) -> Value {
        serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
    }

    #[test]
    fn good_lines_are_read_and_blank_lines_skipped() {
        let text = format!("{}\n\n{}\n", line("a", chat("one")), line("b", chat("two")));
        let lines = parse(text.as_bytes(), &RequestLimits::default(), 10).unwrap_or_default();
        assert_eq!(lines.iter().map(|line| line.custom_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(lines[1].chat_request().map(|request| request.messages[0].content.clone()).ok().as_deref(), Some("two"));
    }

    #[test]
    fn every_bad_line_is_named_by_its_number() {
        let text = [
            line("a", chat("fine")),
            "not json".to_owned(),
            line("a", chat("duplicate id")),
            serde_json::json!({"custom_id": "c", "method": "GET", "url": "/v1/chat/completions", "body": chat("x")}).to_string(),
            serde_json::json!({"custom_id": "d", "method": "POST", "url": "/v1/embeddings", "body": chat("x")}).to_string(),
            line("e", serde_json::json!({"messages": [{"role": "wizard", "content": "x"}]})),
            line("f", serde_json::json!({"messages": [{"role": "user", "content": "x"}], "stream": true})),
            line("g", serde_json::json!({"messages": []})),
        ]
        .join("\n");
        let errors = parse(text.as_bytes(), &RequestLimits::default(), 10).err().unwrap_or_default();
        let lines: Vec<Option<u64>> = errors.iter().map(|error| error.line).collect();
        assert_eq!(lines, [Some(2), Some(3), Some(4), Some(5), Some(6), Some(7), Some(8)], "{errors:?}");
        assert_eq!(errors[2].param.as_deref(), Some("method"));
        assert_eq!(errors[4].param.as_deref(), Some("body.messages[0].role"), "{errors:?}");
        assert!(errors[4].message.starts_with("line 6: body.messages[0].role"), "{}", errors[4].message);
        assert_eq!(errors[5].param.as_deref(), Some("body.stream"));
    }

    #[test]
    fn empty_and_oversized_inputs_are_refused() {
        assert_eq!(parse(b"\n\n", &RequestLimits::default(), 10).err().map(|errors| errors[0].code.clone()).as_deref(), Some("empty_file"));
        let text = [line("a", chat("1")), line("b", chat("2"))].join("\n");
        assert_eq!(parse(text.as_bytes(), &RequestLimits::default(), 1).err().map(|errors| errors[0].code.clone()).as_deref(), Some("too_many_lines"));
    }
}
