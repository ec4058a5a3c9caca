//! Checking a streamed answer delta by delta: [`StreamGuard`].
//!
//! The guard forwards what it can as soon as it can. It holds back the end of the text received
//! so far only while that end could still turn into something it must act on once the next
//! delta arrives:
//! - an issued placeholder not yet complete: from its last `[` when what follows is the start
//!   of an issued placeholder (so `[EMA` + `IL_1]` is restored as one);
//! - a deny phrase not yet complete, or complete but possibly followed by a letter that would
//!   undo the whole-word match: from the start of the earliest ending that is a prefix of a
//!   phrase on a word boundary (only with deny lists);
//! - personal data not yet complete (only when answers are checked for it): the last run of
//!   non-whitespace characters, joined with the runs before it across single spaces when both
//!   sides look like parts of a number or code (digits, capitals, `+`, `(`, `)`, `-`: a card
//!   `4111 1111 …`, a phone `+44 20 …`, an IBAN `GB82 WEST …`), and the run ending in `Bearer`
//!   before a token; a text ending in one space after such a run holds the run too;
//! - a match found in the stretch that could be released is never cut: the release point moves
//!   back to its start.
//!
//! At most [`HOLD_BACK_CHARACTER_LIMIT`] characters are held after any delta. Past that bound
//! the older text is released even if it might have grown into a match; a validated match that
//! straddles the bound is released whole, as found. [`StreamGuard::finish`] releases the rest.
//!
//! So that a stream and a whole answer give the same text and verdict, every pattern joins its
//! parts only the ways listed above. One exception: a private key in PEM is matched with its body
//! through the `END` line in a whole answer, but in a stream only its header (the body arrives
//! after a newline, by which time the header has been released); a block rule on secrets still
//! blocks at the header.
//!
//! When a rule blocks, the delta's step forwards nothing and says so in [`StreamStep::blocked`];
//! the caller ends the stream with an error event. Every later call repeats the block.

use super::answer::AnswerFindings;
use super::redact::Redactions;
use super::{FiredRule, Guardrail, GuardrailInner, Verdict};

/// The most characters a [`StreamGuard`] holds back after a delta: room for the longest e-mail
/// address (254 characters) and for a deny phrase of [`super::DENY_PHRASE_CHARACTER_LIMIT`]
/// characters with some extra whitespace.
pub const HOLD_BACK_CHARACTER_LIMIT: usize = 256;

/// Characters of released text kept before the held text, so that word and number boundaries
/// at the release point are seen.
const CONTEXT_CHARACTERS: usize = 16;

/// What to do after one delta.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamStep {
    /// Text to forward to the client now (possibly empty).
    pub forward: String,
    /// The rule that blocks the answer, when one did: forward nothing more and end the stream
    /// with an error.
    pub blocked: Option<FiredRule>,
}

impl StreamStep {
    /// A step that forwards nothing because `rule` blocks.
    fn blocked_by(rule: FiredRule) -> StreamStep {
        StreamStep { forward: String::new(), blocked: Some(rule) }
    }
}

/// Checks one streamed answer: restores placeholders, redacts and blocks across delta
/// boundaries, and limits the length (see the module's doc for what it holds back).
#[derive(Debug)]
pub struct StreamGuard {
    /// The guardrail.
    guardrail: Guardrail,
    /// The placeholders issued for the prompt.
    redactions: Redactions,
    /// A little released text, then the text not yet released.
    buffer: String,
    /// Where in `buffer` the text not yet released starts.
    pending_start: usize,
    /// Characters forwarded so far.
    forwarded_characters: usize,
    /// Every rule that fired so far.
    verdict: Verdict,
    /// The rule that blocked, once one has.
    blocked: Option<FiredRule>,
    /// Buffers for what is found in each delta.
    findings: AnswerFindings,
}

impl StreamGuard {
    /// The placeholders issued for the prompt.
    pub fn redactions(&self) -> &Redactions {
        &self.redactions
    }

    /// A guard for one answer of `guardrail`, given the redactions of its prompt.
    pub(super) fn new(guardrail: Guardrail, redactions: Redactions) -> StreamGuard {
        StreamGuard {
            guardrail,
            redactions,
            buffer: String::new(),
            pending_start: 0,
            forwarded_characters: 0,
            verdict: Verdict::default(),
            blocked: None,
            findings: AnswerFindings::default(),
        }
    }

    /// Takes the next delta of the answer; what to forward now.
    pub fn push(&mut self, delta: &str) -> StreamStep {
        if let Some(rule) = &self.blocked {
            return StreamStep::blocked_by(rule.clone());
        }
        self.buffer.push_str(delta);
        self.advance(false)
    }

    /// The answer is complete: what is left to forward.
    pub fn finish(&mut self) -> StreamStep {
        if let Some(rule) = &self.blocked {
            return StreamStep::blocked_by(rule.clone());
        }
        self.advance(true)
    }

    /// Every rule that fired so far, counts included; complete after [`StreamGuard::finish`].
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// True once a rule has blocked the answer.
    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// How many characters are held back now.
    pub fn held_back_characters(&self) -> usize {
        self.buffer[self.pending_start..].chars().count()
    }

    /// Releases what can be released: everything when `finishing`.
    fn advance(&mut self, finishing: bool) -> StreamStep {
        let guardrail = &*self.guardrail.inner;
        self.findings.find(guardrail, &self.redactions, &self.buffer, self.pending_start);
        let release = if finishing { self.buffer.len() } else { self.release_point(guardrail) };
        if let Err(rule) = self.findings.judge(guardrail, release, &mut self.verdict) {
            self.blocked = Some(rule.clone());
            return StreamStep::blocked_by(rule);
        }
        let mut forward = String::new();
        self.findings.render(&self.redactions, &self.buffer, self.pending_start, release, &mut forward);
        let added = forward.chars().count();
        if let Some(limit) = guardrail.settings.max_answer_characters
            && self.forwarded_characters + added > limit
        {
            let rule = guardrail.record_max_length(&mut self.verdict);
            self.blocked = Some(rule.clone());
            return StreamStep::blocked_by(rule);
        }
        self.forwarded_characters += added;
        self.pending_start = release;
        self.drop_released_text();
        StreamStep { forward, blocked: None }
    }

    /// Where the text that can be released now ends (see the module's doc).
    fn release_point(&self, guardrail: &GuardrailInner) -> usize {
        let (buffer, pending_start) = (self.buffer.as_str(), self.pending_start);
        let mut tail_start = buffer.len();
        if guardrail.checks_answer_pii() {
            tail_start = tail_start.min(unfinished_value_start(buffer, pending_start));
        }
        if let Some(deny) = &guardrail.deny
            && let Some(start) = deny.unfinished_tail_start(buffer, pending_start)
        {
            tail_start = tail_start.min(start);
        }
        if !self.redactions.is_empty()
            && let Some(offset) = buffer[pending_start..].rfind('[')
            && self.redactions.could_complete_placeholder(&buffer[pending_start + offset..])
        {
            tail_start = tail_start.min(pending_start + offset);
        }
        let floor = buffer[pending_start..]
            .char_indices()
            .rev()
            .nth(HOLD_BACK_CHARACTER_LIMIT - 1)
            .map_or(pending_start, |(offset, _)| pending_start + offset);
        let mut release = tail_start.max(floor);
        // Back to the start of a match that the release point would cut, unless that start is
        // older than the bound...
        while let Some((start, _)) =
            self.findings.ranges().find(|(start, end)| *start < release && release < *end && *start >= floor)
        {
            release = start;
        }
        // ...in which case the match is released whole.
        while let Some((_, end)) = self.findings.ranges().find(|(start, end)| *start < release && release < *end) {
            release = end;
        }
        release
    }

    /// Forgets released text but the last [`CONTEXT_CHARACTERS`] characters.
    fn drop_released_text(&mut self) {
        let released = &self.buffer[..self.pending_start];
        let Some((cut, _)) = released.char_indices().rev().nth(CONTEXT_CHARACTERS - 1) else { return };
        if cut > 0 {
            self.buffer.drain(..cut);
            self.pending_start -= cut;
        }
    }
}

/// True for characters that may join two runs of a value across a single space: digits,
/// capitals, `+`, `(`, `)`, `-`.
fn joins_across_space(character: char) -> bool {
    character.is_ascii_digit() || character.is_ascii_uppercase() || matches!(character, '+' | '(' | ')' | '-')
}

/// True when `run` ends with the word `Bearer`, in any case.
fn ends_with_bearer(run: &str) -> bool {
    run.len()
        .checked_sub("bearer".len())
        .and_then(|start| run.get(start..))
        .is_some_and(|end| end.eq_ignore_ascii_case("bearer"))
}

/// True when a value may go on after `run` and a single space.
fn may_continue_after_space(run: &str) -> bool {
    run.chars().next_back().is_some_and(joins_across_space) || ends_with_bearer(run)
}

/// Start of the run of non-whitespace characters that ends `text` (at `from` or later), or of the
/// whitespace at the end: `text.len()` when the text ends in whitespace after which no value goes
/// on.
fn last_run_start(text: &str, from: usize) -> usize {
    text[from..].rfind(char::is_whitespace).map_or(from, |offset| {
        let whitespace_length = text[from + offset..].chars().next().map_or(1, char::len_utf8);
        from + offset + whitespace_length
    })
}

/// Where the text that could still grow into personal data starts, in `text[from..]` (see the
/// module's doc); `text.len()` when nothing could.
fn unfinished_value_start(text: &str, from: usize) -> usize {
    let mut end = text.len();
    if text[from..].ends_with(char::is_whitespace) {
        let Some(before_space) = text[from..].strip_suffix(' ') else { return text.len() };
        let before_space_end = from + before_space.len();
        let run = &text[last_run_start(&text[..before_space_end], from)..before_space_end];
        if run.is_empty() || !may_continue_after_space(run) {
            return text.len();
        }
        end = before_space_end;
    }
    let mut run_start = last_run_start(&text[..end], from);
    while run_start > from + 1 && text[..run_start].ends_with(' ') {
        let previous_end = run_start - 1;
        let previous_start = last_run_start(&text[..previous_end], from);
        let previous = &text[previous_start..previous_end];
        let joins = !previous.is_empty()
            && may_continue_after_space(previous)
            && (text[run_start..].starts_with(joins_across_space) || ends_with_bearer(previous));
        if !joins {
            break;
        }
        run_start = previous_start;
    }
    run_start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(text: &str) -> &str {
        &text[unfinished_value_start(text, 0)..]
    }

    #[test]
    fn the_last_word_is_held() {
        assert_eq!(held("hello wor"), "wor");
        assert_eq!(held("hello world "), "");
        assert_eq!(held("mail jane@exa"), "jane@exa");
        assert_eq!(held("line\n"), "");
    }

    #[test]
    fn groups_of_numbers_and_codes_are_held_together() {
        assert_eq!(held("card 4111 1111 11"), "4111 1111 11");
        assert_eq!(held("card 4111 1111 "), "4111 1111 ");
        assert_eq!(held("call +1 (415) 555"), "+1 (415) 555");
        assert_eq!(held("iban GB82 WEST 1234"), "GB82 WEST 1234");
        assert_eq!(held("use Bearer abc"), "Bearer abc");
        assert_eq!(held("use Bearer "), "Bearer ");
        assert_eq!(held("use:Bearer abc"), "use:Bearer abc");
        assert_eq!(held("use é"), "é");
        assert_eq!(held("two  4111"), "4111");
        assert_eq!(held("word 4111"), "4111");
        assert_eq!(held("4111 word"), "word");
    }

    #[test]
    fn multibyte_whitespace_is_a_boundary() {
        assert_eq!(held("é\u{3000}東京"), "東京");
        assert_eq!(held("é\u{3000}"), "");
    }
}
