//! The deterministic answer: the prompt fingerprint, the answer's tokens and the token counts.
//!
//! Both wire formats reduce a request to a [`Prompt`] (the messages in order, Anthropic's system
//! prompt first as role `system`) and a [`Plan`] (how many tokens to answer and why the answer
//! stops). The answer text depends only on the fingerprint, so the same prompt always gets the
//! same answer from any simulator, which lets gateway tests predict it with [`fingerprint`].

use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

/// Words the answer is made of after its first token.
const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "switch", "yard", "signal", "track",
    "rail", "points",
];

/// Fingerprint of a conversation given as `(role, content)` pairs: the lowercase 16-hex-digit
/// xxh3-64 of `role + ":" + content + "\n"` over every message in order.
///
/// This is the fingerprint the simulator puts in the `x-sim-fingerprint` header and in the first
/// token of its answer, `"[sim <fingerprint>]"`.
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
    /// Adds one message whose content is the concatenation of `parts`.
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
}

/// What the simulator answers to one request.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    /// Fingerprint of the prompt, as 16 hex digits.
    pub(crate) fingerprint_hex: String,
    /// Fingerprint of the prompt, seeding the word choice.
    fingerprint: u64,
    /// Number of tokens of the answer.
    pub(crate) tokens: u32,
    /// Usage: input tokens.
    pub(crate) input_tokens: u32,
    /// Of those, read from the prompt cache.
    pub(crate) cache_read_tokens: u32,
    /// Of those, written to the prompt cache.
    pub(crate) cache_write_tokens: u32,
    /// Why the answer ends.
    pub(crate) stop: StopCause,
}

impl Answer {
    /// Plans the answer to `prompt`: `answer_tokens` tokens, cut to `max_tokens` when given.
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
        }
    }

    /// Reports `read` and `write` of the input tokens as prompt-cache reads and writes, cut to
    /// the input there is.
    pub(crate) fn with_prompt_cache(mut self, read: u32, write: u32) -> Self {
        self.cache_read_tokens = read.min(self.input_tokens);
        self.cache_write_tokens = write.min(self.input_tokens - self.cache_read_tokens);
        self
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

    /// The whole answer text.
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
}

/// The word at position `index` of the answer seeded by `fingerprint`.
fn word_at(fingerprint: u64, index: u32) -> &'static str {
    let hash = xxh3_64_with_seed(&index.to_le_bytes(), fingerprint);
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
}
