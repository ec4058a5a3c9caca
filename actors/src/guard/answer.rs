//! Checking an answer's text, shared by [`super::Guardrail::check_answer`] (a whole answer) and
//! the [`super::StreamGuard`] (an answer delta by delta).
//!
//! The order of the steps matters:
//! 1. personal data (when the guardrail checks answers) and deny lists are looked for in the
//!    upstream's text, where the prompt's redacted values are still placeholders — so a value the
//!    client sent is not flagged again when the model repeats it;
//! 2. the issued placeholders are restored (see [`super::redact`]) and answer values of a
//!    redacted kind are replaced with markers (`[EMAIL_REDACTED]`) that are never restored;
//! 3. the length is checked on what the client receives.

use std::borrow::Cow;

use super::deny::DenyMatch;
use super::pii::{PiiKind, PiiMatch};
use super::redact::{Redactions, answer_marker};
use super::{Action, GuardrailInner, Verdict};

/// What [`super::Guardrail::check_answer`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct AnswerCheck<'a> {
    /// The rules that fired.
    pub verdict: Verdict,
    /// The answer to send: placeholders restored and answer values redacted; borrowed when
    /// nothing changed. When the verdict blocks, the answer as it came, not to be sent.
    pub text: Cow<'a, str>,
}

/// One change to the upstream's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replacement {
    /// A value found in the answer, replaced by its kind's marker.
    Marker(PiiKind),
    /// An issued placeholder, replaced by the value at this position of the redactions.
    Restore(usize),
}

/// What was found in a stretch of answer text; the buffers are kept between calls.
#[derive(Debug, Default)]
pub(super) struct AnswerFindings {
    /// Personal data.
    pii: Vec<PiiMatch>,
    /// Deny-list matches.
    deny: Vec<DenyMatch>,
    /// Issued placeholders: range and position in the redactions.
    placeholders: Vec<(usize, usize, usize)>,
    /// The changes to make, sorted by start, without overlaps.
    rewrites: Vec<(usize, usize, Replacement)>,
}

impl AnswerFindings {
    /// Looks for everything the guardrail checks in answers in `haystack[from..]`, forgetting
    /// what was found before.
    pub(super) fn find(&mut self, guardrail: &GuardrailInner, redactions: &Redactions, haystack: &str, from: usize) {
        self.pii.clear();
        self.deny.clear();
        self.placeholders.clear();
        self.rewrites.clear();
        if let Some(first_pass) = &guardrail.answer_first_pass
            && let Some(matched) = first_pass.run_from(haystack, from)
        {
            if guardrail.checks_answer_pii()
                && let Some(pii) = &guardrail.pii
            {
                pii.find_selected(haystack, from, |pattern| first_pass.pii_matched(&matched, pattern), &mut self.pii);
            }
            if let Some(deny) = &guardrail.deny {
                deny.find_selected(haystack, from, |list| first_pass.deny_matched(&matched, list), &mut self.deny);
            }
        }
        if !redactions.is_empty() {
            let mut position = from;
            while let Some(found) = redactions.next_placeholder(haystack, position) {
                self.placeholders.push(found);
                position = found.1;
            }
        }
    }

    /// The range of everything found.
    pub(super) fn ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let pii = self.pii.iter().map(|found| (found.start, found.end));
        let deny = self.deny.iter().map(|found| (found.start, found.end));
        let placeholders = self.placeholders.iter().map(|(start, end, _)| (*start, *end));
        pii.chain(deny).chain(placeholders)
    }

    /// Records in `verdict`, in the order of the text, what was found before `release`, and
    /// prepares the changes to that stretch. Fails with the blocking rule when one blocks (the
    /// one that matched first in the text).
    pub(super) fn judge(
        &mut self,
        guardrail: &GuardrailInner,
        release: usize,
        verdict: &mut Verdict,
    ) -> Result<(), super::FiredRule> {
        self.deny.sort_by_key(|found| found.start);
        let mut deny = self.deny.iter().filter(|found| found.end <= release).peekable();
        let mut pii = self.pii.iter().filter(|found| found.end <= release).peekable();
        loop {
            let deny_first = match (deny.peek(), pii.peek()) {
                (Some(deny_match), Some(pii_match)) => deny_match.start <= pii_match.start,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if deny_first {
                if let Some(found) = deny.next() {
                    guardrail.record_deny(verdict, found);
                }
            } else if let Some(found) = pii.next()
                && guardrail.record_pii(verdict, found.kind) == Action::Redact
            {
                self.rewrites.push((found.start, found.end, Replacement::Marker(found.kind)));
            }
        }
        if let Some(rule) = verdict.blocking_rule() {
            return Err(rule.clone());
        }
        for (start, end, index) in self.placeholders.iter().filter(|(_, end, _)| *end <= release) {
            self.rewrites.push((*start, *end, Replacement::Restore(*index)));
        }
        self.rewrites.sort_by_key(|(start, _, _)| *start);
        let mut kept_end = 0;
        self.rewrites.retain(|(start, end, _)| {
            let keep = *start >= kept_end;
            if keep {
                kept_end = *end;
            }
            keep
        });
        Ok(())
    }

    /// True when the stretch judged has something to change.
    pub(super) fn has_rewrites(&self) -> bool {
        !self.rewrites.is_empty()
    }

    /// Appends `haystack[from..release]` to `out`, with the changes prepared by
    /// [`AnswerFindings::judge`].
    pub(super) fn render(
        &self,
        redactions: &Redactions,
        haystack: &str,
        from: usize,
        release: usize,
        out: &mut String,
    ) {
        let mut copied_up_to = from;
        for (start, end, replacement) in &self.rewrites {
            out.push_str(&haystack[copied_up_to..*start]);
            match replacement {
                Replacement::Marker(kind) => out.push_str(answer_marker(*kind)),
                Replacement::Restore(index) => {
                    if let Some(redaction) = redactions.get(*index) {
                        out.push_str(&redaction.original);
                    }
                }
            }
            copied_up_to = *end;
        }
        out.push_str(&haystack[copied_up_to..release]);
    }
}

/// [`super::Guardrail::check_answer`], and without the length limit
/// [`super::Guardrail::check_tool_arguments`].
pub(super) fn check_whole_answer<'a>(
    guardrail: &GuardrailInner,
    answer: &'a str,
    redactions: &Redactions,
    limit_length: bool,
) -> AnswerCheck<'a> {
    let mut verdict = Verdict::default();
    let mut findings = AnswerFindings::default();
    findings.find(guardrail, redactions, answer, 0);
    if findings.judge(guardrail, answer.len(), &mut verdict).is_err() {
        return AnswerCheck { verdict, text: Cow::Borrowed(answer) };
    }
    let text = if findings.has_rewrites() {
        let mut rewritten = String::with_capacity(answer.len());
        findings.render(redactions, answer, 0, answer.len(), &mut rewritten);
        Cow::Owned(rewritten)
    } else {
        Cow::Borrowed(answer)
    };
    if let Some(limit) = guardrail.settings.max_answer_characters.filter(|_| limit_length)
        && text.len() > limit
        && text.chars().count() > limit
    {
        guardrail.record_max_length(&mut verdict);
        return AnswerCheck { verdict, text: Cow::Borrowed(answer) };
    }
    AnswerCheck { verdict, text }
}
