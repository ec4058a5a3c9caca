//! The deterministic answer: the prompt fingerprint, the answer's body and the token counts.
//!
//! Both wire formats reduce a request to a [`Prompt`] (the messages in order, Anthropic's system
//! prompt first as role `system`, tool calls and tool results as entries of their own) and an
//! [`Answer`]: the fingerprint's text, a JSON text, or tool calls, with why it stops. The answer
//! depends only on the fingerprint (and, for tool calls and JSON, on the tools and schema
//! offered), so the same prompt always gets the same answer from any simulator, which lets
//! gateway tests predict it with [`fingerprint`] or [`super::predict_openai`].

use std::borrow::Cow;
use std::ops::Range;

use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

use super::tools::SimToolCall;

/// Words the answer is made of after its first token; also the strings of generated JSON.
pub(crate) const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "switch", "yard", "signal", "track",
    "rail", "points",
];

/// Most characters of one streamed fragment of a JSON text or of tool-call arguments.
const FRAGMENT_CHARS: usize = 8;

/// Fingerprint of a conversation given as `(role, content)` pairs: the lowercase 16-hex-digit
/// xxh3-64 of `role + ":" + content + "\n"` over every entry in order.
///
/// This is the fingerprint the simulator puts in the `x-sim-fingerprint` header and in the first
/// token of its answer, `"[sim <fingerprint>]"`. A plain conversation has one entry per message.
/// Tool turns add entries (see the module documentation of [`crate::sim`]): an assistant's tool
/// call is `("tool_call", "<name> <arguments as compact JSON>")` after the assistant's own entry,
/// and a tool result is `("tool", "<its text>")`.
pub fn fingerprint(messages: &[(&str, &str)]) -> String {
    let mut prompt = Prompt::default();
    for (role, content) in messages {
        prompt.push(role, [*content]);
    }
    prompt.fingerprint_hex()
}

/// A prompt being read from a request: its running hash and its word count.
#[derive(Default)]
pub(crate) struct Prompt {
    hasher: Xxh3,
    input_words: u32,
}

impl Prompt {
    /// Adds one entry whose content is the concatenation of `parts`.
    pub(crate) fn push<'a>(&mut self, role: &str, parts: impl IntoIterator<Item = &'a str>) {
        self.hasher.update(role.as_bytes());
        self.hasher.update(b":");
        for part in parts {
            self.hasher.update(part.as_bytes());
            let words = part.split_whitespace().count();
            self.input_words = self
                .input_words
                .saturating_add(u32::try_from(words).unwrap_or(u32::MAX));
        }
        self.hasher.update(b"\n");
    }

    /// Adds the entry of one tool call: `tool_call:<name> <arguments>`, the arguments as compact
    /// JSON.
    pub(crate) fn push_tool_call(&mut self, name: &str, arguments: &str) {
        self.push("tool_call", [name, " ", arguments]);
    }

    /// The prompt's fingerprint as a number.
    pub(crate) fn fingerprint(&self) -> u64 {
        self.hasher.digest()
    }

    /// The prompt's fingerprint as 16 lowercase hex digits.
    pub(crate) fn fingerprint_hex(&self) -> String {
        format!("{:016x}", self.fingerprint())
    }

    /// Input tokens reported in the usage: the number of whitespace-separated words, at least 1.
    pub(crate) fn input_tokens(&self) -> u32 {
        self.input_words.max(1)
    }
}

/// Why an answer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopCause {
    /// The answer is complete.
    Complete,
    /// The answer was cut by the request's token limit.
    TokenLimit,
    /// The answer is tool calls.
    ToolUse,
}

impl StopCause {
    /// OpenAI's `finish_reason`.
    pub(crate) fn finish_reason(self) -> &'static str {
        match self {
            Self::Complete => "stop",
            Self::TokenLimit => "length",
            Self::ToolUse => "tool_calls",
        }
    }

    /// Anthropic's `stop_reason`.
    pub(crate) fn stop_reason(self) -> &'static str {
        match self {
            Self::Complete => "end_turn",
            Self::TokenLimit => "max_tokens",
            Self::ToolUse => "tool_use",
        }
    }
}

/// What an answer is made of.
#[derive(Clone, Debug)]
enum Body {
    /// The fingerprint's text, [`Answer::tokens`] tokens, one streamed piece per token.
    Text,
    /// A JSON text, streamed in fragments.
    Json {
        /// The JSON text.
        text: String,
        /// Byte ranges of the streamed fragments.
        fragments: Vec<Range<usize>>,
        /// Output tokens reported in the usage.
        output_tokens: u32,
    },
    /// Tool calls: for each, one piece opening it, then its arguments in fragments.
    ToolCalls {
        /// The calls, in order.
        calls: Vec<SimToolCall>,
        /// The streamed pieces.
        steps: Vec<Step>,
    },
}

/// One streamed piece of a tool-call answer.
#[derive(Clone, Debug)]
enum Step {
    /// Opens call `.0`.
    Start(usize),
    /// A fragment (byte range) of call `.0`'s arguments.
    Arguments(usize, Range<usize>),
}

/// One streamed piece of an answer: a token of text, a fragment of JSON, or a piece of a tool
/// call. Pacing and `cut_stream` faults count these pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Text added to the content.
    Content(Cow<'a, str>),
    /// Opens tool call `index` (0-based): its id and name, no arguments yet.
    CallStart {
        /// Position of the call in the answer.
        index: usize,
        /// The call.
        call: &'a SimToolCall,
    },
    /// A fragment of tool call `index`'s arguments.
    CallArguments {
        /// Position of the call in the answer.
        index: usize,
        /// The fragment of the arguments' JSON text.
        fragment: &'a str,
    },
}

/// What the simulator answers to one request.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    /// Fingerprint of the prompt, as 16 hex digits.
    pub(crate) fingerprint_hex: String,
    /// Fingerprint of the prompt, seeding the word choice.
    fingerprint: u64,
    /// Number of tokens of the text answer (before it becomes JSON or gives way to tool calls).
    pub(crate) tokens: u32,
    /// Usage: input tokens.
    pub(crate) input_tokens: u32,
    /// Of those, read from the prompt cache.
    pub(crate) cache_read_tokens: u32,
    /// Of those, written to the prompt cache.
    pub(crate) cache_write_tokens: u32,
    /// Why the answer ends.
    pub(crate) stop: StopCause,
    /// What the answer is made of.
    body: Body,
}

impl Answer {
    /// Plans the text answer to `prompt`: `answer_tokens` tokens, cut to `max_tokens` when
    /// given.
    pub(crate) fn plan(prompt: &Prompt, answer_tokens: u32, max_tokens_opt: Option<u32>) -> Self {
        let (tokens, stop) = match max_tokens_opt {
            Some(max_tokens) if max_tokens < answer_tokens => (max_tokens, StopCause::TokenLimit),
            _ => (answer_tokens, StopCause::Complete),
        };
        Self {
            fingerprint_hex: prompt.fingerprint_hex(),
            fingerprint: prompt.fingerprint(),
            tokens,
            input_tokens: prompt.input_tokens(),
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            stop,
            body: Body::Text,
        }
    }

    /// Reports `read` and `write` of the input tokens as prompt-cache reads and writes, cut to
    /// the input there is.
    pub(crate) fn with_prompt_cache(mut self, read: u32, write: u32) -> Self {
        self.cache_read_tokens = read.min(self.input_tokens);
        self.cache_write_tokens = write.min(self.input_tokens - self.cache_read_tokens);
        self
    }

    /// The answer as a JSON object `{"answer": "<the text answer>"}`: cut and stopped like the
    /// text, with the text's tokens as output tokens.
    pub(crate) fn into_json_object(mut self) -> Self {
        let object = serde_json::json!({ "answer": self.text() });
        let text = super::wire::compact_json(&object);
        self.body = Body::Json {
            fragments: fragments(&text),
            text,
            output_tokens: self.tokens,
        };
        self
    }

    /// The answer as the JSON text of `value`, complete whatever the token limit; one output
    /// token per streamed fragment.
    pub(crate) fn into_json(mut self, value: &serde_json::Value) -> Self {
        let text = super::wire::compact_json(value);
        let fragments = fragments(&text);
        self.body = Body::Json {
            output_tokens: count(fragments.len()),
            fragments,
            text,
        };
        self.stop = StopCause::Complete;
        self
    }

    /// The answer as `calls`, complete whatever the token limit; one output token per streamed
    /// piece: one opening each call and one per fragment of its arguments.
    pub(crate) fn into_tool_calls(mut self, calls: Vec<SimToolCall>) -> Self {
        let mut steps = Vec::new();
        for (index, call) in calls.iter().enumerate() {
            steps.push(Step::Start(index));
            for range in fragments(&call.arguments) {
                steps.push(Step::Arguments(index, range));
            }
        }
        self.body = Body::ToolCalls { calls, steps };
        self.stop = StopCause::ToolUse;
        self
    }

    /// The fingerprint as a number, seeding tool choices and generated JSON.
    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Output tokens reported in the usage.
    pub(crate) fn output_tokens(&self) -> u32 {
        match &self.body {
            Body::Text => self.tokens,
            Body::Json { output_tokens, .. } => *output_tokens,
            Body::ToolCalls { steps, .. } => count(steps.len()),
        }
    }

    /// The tool calls, none unless the answer is tool calls.
    pub(crate) fn tool_calls(&self) -> &[SimToolCall] {
        match &self.body {
            Body::ToolCalls { calls, .. } => calls,
            Body::Text | Body::Json { .. } => &[],
        }
    }

    /// The content: the text or the JSON text; `None` for tool calls.
    pub(crate) fn content(&self) -> Option<Cow<'_, str>> {
        match &self.body {
            Body::Text => Some(Cow::Owned(self.text())),
            Body::Json { text, .. } => Some(Cow::Borrowed(text)),
            Body::ToolCalls { .. } => None,
        }
    }

    /// Number of streamed pieces: pacing spaces them like tokens.
    pub(crate) fn piece_count(&self) -> u32 {
        match &self.body {
            Body::Text => self.tokens,
            Body::Json { fragments, .. } => count(fragments.len()),
            Body::ToolCalls { steps, .. } => count(steps.len()),
        }
    }

    /// Streamed piece `index` (0-based); `None` past the end.
    pub(crate) fn piece(&self, index: u32) -> Option<Piece<'_>> {
        let position = usize::try_from(index).ok()?;
        match &self.body {
            Body::Text => {
                (index < self.tokens).then(|| Piece::Content(Cow::Owned(self.token(index))))
            }
            Body::Json {
                text, fragments, ..
            } => {
                let range = fragments.get(position)?;
                text.get(range.clone())
                    .map(|fragment| Piece::Content(Cow::Borrowed(fragment)))
            }
            Body::ToolCalls { calls, steps } => match steps.get(position)? {
                Step::Start(call) => Some(Piece::CallStart {
                    index: *call,
                    call: calls.get(*call)?,
                }),
                Step::Arguments(call, range) => Some(Piece::CallArguments {
                    index: *call,
                    fragment: calls.get(*call)?.arguments.get(range.clone())?,
                }),
            },
        }
    }

    /// The text of token `index` (0-based): `"[sim <fingerprint>]"` for the first, a space and a
    /// word for the others.
    pub(crate) fn token(&self, index: u32) -> String {
        if index == 0 {
            format!("[sim {}]", self.fingerprint_hex)
        } else {
            let word = word_at(self.fingerprint, index);
            let mut token = String::with_capacity(word.len() + 1);
            token.push(' ');
            token.push_str(word);
            token
        }
    }

    /// The whole text answer.
    pub(crate) fn text(&self) -> String {
        self.text_prefix(self.tokens)
    }

    /// The text of the first `tokens` tokens.
    pub(crate) fn text_prefix(&self, tokens: u32) -> String {
        let tokens = tokens.min(self.tokens);
        if tokens == 0 {
            return String::new();
        }
        let mut text = String::with_capacity(22 + 9 * tokens as usize);
        text.push_str("[sim ");
        text.push_str(&self.fingerprint_hex);
        text.push(']');
        for index in 1..tokens {
            text.push(' ');
            text.push_str(word_at(self.fingerprint, index));
        }
        text
    }

    /// What a test can predict of this answer.
    pub(crate) fn summary(&self) -> SimAnswer {
        SimAnswer {
            fingerprint: self.fingerprint_hex.clone(),
            content: self.content().map(Cow::into_owned),
            tool_calls: self.tool_calls().to_vec(),
            finish_reason: self.stop.finish_reason(),
            stop_reason: self.stop.stop_reason(),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens(),
        }
    }
}

/// What the simulator answers to a request, as [`super::predict_openai`] and
/// [`super::predict_anthropic`] foresee it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimAnswer {
    /// The prompt's fingerprint, 16 lowercase hex digits (the `x-sim-fingerprint` header).
    pub fingerprint: String,
    /// The content: the text answer, or the JSON text of a `response_format` answer; `None` when
    /// the answer is tool calls (OpenAI's `content: null`).
    pub content: Option<String>,
    /// The tool calls, in order; empty for a text or JSON answer.
    pub tool_calls: Vec<SimToolCall>,
    /// OpenAI's `finish_reason`: `stop`, `length` or `tool_calls`.
    pub finish_reason: &'static str,
    /// Anthropic's `stop_reason`: `end_turn`, `max_tokens` or `tool_use`.
    pub stop_reason: &'static str,
    /// Input tokens of the prompt: OpenAI's `prompt_tokens`, Anthropic's `count_tokens` answer;
    /// Anthropic's `usage.input_tokens` is this minus the prompt-cache reads and writes a
    /// behaviour reports (none by default).
    pub input_tokens: u32,
    /// Output tokens: OpenAI's `completion_tokens`, Anthropic's `output_tokens`.
    pub output_tokens: u32,
}

/// `len` as a token count.
fn count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Byte ranges splitting `text` into the fragments it is streamed in: pieces of
/// [`FRAGMENT_CHARS`] characters, or two halves of a shorter text, so that any text of two or
/// more characters comes in at least two fragments.
pub(crate) fn fragments(text: &str) -> Vec<Range<usize>> {
    let starts: Vec<usize> = text.char_indices().map(|(start, _)| start).collect();
    let chars = starts.len();
    let size = if chars > FRAGMENT_CHARS {
        FRAGMENT_CHARS
    } else {
        chars.div_ceil(2).max(1)
    };
    let mut out = Vec::with_capacity(chars.div_ceil(size));
    let mut first = 0;
    while first < chars {
        let last = (first + size).min(chars);
        let start = starts.get(first).copied().unwrap_or(text.len());
        let end = starts.get(last).copied().unwrap_or(text.len());
        out.push(start..end);
        first = last;
    }
    out
}

/// The word at position `index` of the answer seeded by `fingerprint`.
fn word_at(fingerprint: u64, index: u32) -> &'static str {
    let hash = xxh3_64_with_seed(&index.to_le_bytes(), fingerprint);
    word(hash)
}

/// The word `hash` picks.
pub(crate) fn word(hash: u64) -> &'static str {
    // The modulo keeps the value below WORDS.len(), which fits in usize.
    let position = usize::try_from(hash % WORDS.len() as u64).unwrap_or(0);
    WORDS.get(position).copied().unwrap_or("alpha")
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_64;

    #[test]
    fn fingerprint_hashes_the_canonical_prompt() {
        let expected = format!("{:016x}", xxh3_64(b"system:be brief\nuser:hello there\n"));
        let actual = fingerprint(&[("system", "be brief"), ("user", "hello there")]);
        assert_eq!(actual, expected);
        assert_eq!(actual.len(), 16);
        assert!(
            actual
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn content_parts_hash_as_their_concatenation() {
        let mut split = Prompt::default();
        split.push("user", ["hello ", "there"]);
        assert_eq!(
            split.fingerprint_hex(),
            fingerprint(&[("user", "hello there")])
        );
        assert_eq!(split.input_tokens(), 2);
    }

    #[test]
    fn input_tokens_count_words_and_are_at_least_one() {
        let mut prompt = Prompt::default();
        prompt.push("user", [""]);
        assert_eq!(prompt.input_tokens(), 1);
        prompt.push("system", ["  one two\tthree\n"]);
        assert_eq!(prompt.input_tokens(), 3);
    }

    #[test]
    fn answer_is_deterministic_and_tokens_add_up_to_the_text() {
        let mut prompt = Prompt::default();
        prompt.push("user", ["what is a switchyard?"]);
        let answer = Answer::plan(&prompt, 16, None);
        let again = Answer::plan(&prompt, 16, None);
        assert_eq!(answer.text(), again.text());
        let joined: String = (0..answer.tokens)
            .map(|index| answer.token(index))
            .collect();
        assert_eq!(joined, answer.text());
        assert_eq!(
            answer.text().split(' ').count(),
            17,
            "the first token has a space inside"
        );
        assert!(
            answer
                .text()
                .starts_with(&format!("[sim {}]", answer.fingerprint_hex))
        );
        assert_eq!(answer.stop, StopCause::Complete);
    }

    #[test]
    fn max_tokens_cuts_the_answer() {
        let prompt = Prompt::default();
        let cut = Answer::plan(&prompt, 16, Some(3));
        assert_eq!((cut.tokens, cut.stop), (3, StopCause::TokenLimit));
        let roomy = Answer::plan(&prompt, 16, Some(16));
        assert_eq!((roomy.tokens, roomy.stop), (16, StopCause::Complete));
        assert_eq!(Answer::plan(&prompt, 0, None).text(), "");
    }

    #[test]
    fn fragments_cover_the_text_in_at_least_two_pieces() {
        for text in [
            "{}",
            "abc",
            "12345678",
            "123456789",
            "{\"city\":\"alpha\"}",
            "é—ü∂x",
        ] {
            let pieces: Vec<&str> = fragments(text)
                .into_iter()
                .filter_map(|r| text.get(r))
                .collect();
            assert!(pieces.len() >= 2, "{text}: {pieces:?}");
            assert!(
                pieces
                    .iter()
                    .all(|piece| piece.chars().count() <= FRAGMENT_CHARS)
            );
            assert_eq!(pieces.concat(), text);
        }
        assert_eq!(fragments("x"), vec![0..1]);
        assert!(fragments("").is_empty());
    }

    #[test]
    fn tool_calls_stream_as_a_start_and_argument_fragments() {
        let call = |name: &str, arguments: &str| SimToolCall {
            id_hex: "0123456789abcdef".to_owned(),
            name: name.to_owned(),
            arguments: arguments.to_owned(),
            input: serde_json::from_str(arguments).unwrap_or_default(),
        };
        let calls = vec![call("a", "{}"), call("b", r#"{"city":"alpha"}"#)];
        let answer = Answer::plan(&Prompt::default(), 16, Some(1)).into_tool_calls(calls);
        assert_eq!(answer.stop, StopCause::ToolUse);
        assert_eq!(answer.content(), None);
        assert_eq!(answer.piece_count(), 1 + 2 + 1 + 2);
        assert_eq!(answer.output_tokens(), answer.piece_count());
        let pieces: Vec<Piece<'_>> = (0..answer.piece_count())
            .filter_map(|i| answer.piece(i))
            .collect();
        assert!(matches!(pieces[0], Piece::CallStart { index: 0, .. }));
        assert_eq!(
            pieces[1],
            Piece::CallArguments {
                index: 0,
                fragment: "{"
            }
        );
        assert!(matches!(pieces[3], Piece::CallStart { index: 1, .. }));
        assert_eq!(
            pieces[5],
            Piece::CallArguments {
                index: 1,
                fragment: "\"alpha\"}"
            }
        );
        assert!(answer.piece(answer.piece_count()).is_none());
    }

    #[test]
    fn json_answers_are_whole_and_counted() -> anyhow::Result<()> {
        let mut prompt = Prompt::default();
        prompt.push("user", ["give me json"]);
        let object = Answer::plan(&prompt, 4, Some(2)).into_json_object();
        let content = object.content().unwrap_or_default().into_owned();
        let value: serde_json::Value = serde_json::from_str(&content)?;
        assert_eq!(value["answer"], Answer::plan(&prompt, 4, Some(2)).text());
        assert_eq!(
            (object.output_tokens(), object.stop),
            (2, StopCause::TokenLimit)
        );
        let streamed: String = (0..object.piece_count())
            .filter_map(|i| match object.piece(i) {
                Some(Piece::Content(text)) => Some(text.into_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(streamed, content);

        let schema = Answer::plan(&prompt, 4, Some(1)).into_json(&serde_json::json!({"a": [1, 2]}));
        assert_eq!(schema.content().as_deref(), Some(r#"{"a":[1,2]}"#));
        assert_eq!(schema.stop, StopCause::Complete);
        assert_eq!(schema.output_tokens(), 2);
        Ok(())
    }

    #[test]
    fn tool_call_entries_hash_as_documented() {
        let mut prompt = Prompt::default();
        prompt.push("user", ["weather?"]);
        prompt.push("assistant", []);
        prompt.push_tool_call("get_weather", r#"{"city":"Paris"}"#);
        prompt.push("tool", ["18C"]);
        let expected = fingerprint(&[
            ("user", "weather?"),
            ("assistant", ""),
            ("tool_call", r#"get_weather {"city":"Paris"}"#),
            ("tool", "18C"),
        ]);
        assert_eq!(prompt.fingerprint_hex(), expected);
        assert_eq!(prompt.input_tokens(), 4);
    }
}
