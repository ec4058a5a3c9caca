//! What a check takes and what it returns: the texts of a prompt, the rules that fired, and the
//! prompt check's result.

use std::sync::Arc;

use super::{Action, InjectionSignals, PiiKind, Redactions};

/// What kind of rule fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// Personal data or a secret of this kind (`pii.<kind>`).
    Pii(PiiKind),
    /// The injection score reached the threshold (`injection`).
    Injection,
    /// A deny word or phrase (`deny.words`).
    DenyWords,
    /// A phrase of a deny topic (`deny.topic.<name>`).
    DenyTopic,
    /// The answer is longer than allowed (`answer.max_length`).
    MaxAnswerLength,
}

/// One rule that fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiredRule {
    /// The rule's id: `pii.email`, `injection`, `deny.words`, `deny.topic.weapons`,
    /// `answer.max_length`.
    pub rule_id: Arc<str>,
    /// What kind of rule it is.
    pub kind: RuleKind,
    /// What it does.
    pub action: Action,
    /// How many times it matched (for `injection`, how many signals were found).
    pub count: usize,
}

/// The rules that fired on a prompt or an answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Each rule that fired, once, in the order first found.
    pub fired: Vec<FiredRule>,
}

impl Verdict {
    /// The strongest action of the rules that fired; `None` when none did.
    pub fn action(&self) -> Option<Action> {
        self.fired.iter().map(|rule| rule.action).max()
    }

    /// True when a rule that blocks fired.
    pub fn is_blocked(&self) -> bool {
        self.action() == Some(Action::Block)
    }

    /// The first rule that blocks, in the order found (for an answer, the one whose match comes
    /// first in the text), when one fired.
    pub fn blocking_rule(&self) -> Option<&FiredRule> {
        self.fired.iter().find(|rule| rule.action == Action::Block)
    }

    /// Counts `count` more matches of a rule.
    pub(super) fn record(&mut self, rule_id: &Arc<str>, kind: RuleKind, action: Action, count: usize) {
        match self.fired.iter_mut().find(|fired| fired.rule_id == *rule_id) {
            Some(fired) => fired.count += count,
            None => self.fired.push(FiredRule { rule_id: Arc::clone(rule_id), kind, action, count }),
        }
    }

    /// Adds the rules of `other`.
    pub fn merge(&mut self, other: &Verdict) {
        for rule in &other.fired {
            self.record(&rule.rule_id, rule.kind, rule.action, rule.count);
        }
    }
}

/// Who wrote a text of the prompt. Injection scoring skips [`TextOrigin::System`], which the
/// application writes; everything else is checked for every origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextOrigin {
    /// A system or developer message.
    System,
    /// A user message.
    User,
    /// An earlier assistant turn, as the client sent it back.
    Assistant,
    /// A tool's result.
    Tool,
}

/// One text of a request, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptText<'a> {
    /// Who wrote it.
    pub origin: TextOrigin,
    /// The text.
    pub text: &'a str,
}

impl<'a> PromptText<'a> {
    /// A text written by `origin`.
    pub fn new(origin: TextOrigin, text: &'a str) -> PromptText<'a> {
        PromptText { origin, text }
    }
}

/// A text of the prompt rewritten by redaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactedText {
    /// Position of the text in the slice given to [`super::Guardrail::check_prompt`].
    pub index: usize,
    /// The text with its values replaced by placeholders.
    pub text: String,
}

/// The injection score of a prompt and the signals behind it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InjectionReport {
    /// Sum of the weights of [`InjectionReport::signals`].
    pub score: f32,
    /// The signals found in the prompt's texts (system texts excepted).
    pub signals: InjectionSignals,
}

/// What [`super::Guardrail::check_prompt`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromptCheck {
    /// The rules that fired.
    pub verdict: Verdict,
    /// The injection score, when injection scoring is on.
    pub injection: Option<InjectionReport>,
    /// The texts that redaction rewrote, when the verdict's action is [`Action::Redact`]; texts
    /// not listed are unchanged. Empty when the verdict blocks.
    pub redacted: Vec<RedactedText>,
    /// The placeholders issued, to restore values in the answer.
    pub redactions: Redactions,
}
