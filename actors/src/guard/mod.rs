//! Guardrails: checks on what a request sends to a model and on what the model answers. Personal
//! data and secrets are redacted, blocked or logged; prompt injections are scored; deny lists of
//! words and topics block or log; answers have a length limit. Pure computation: no I/O, no
//! async, nothing shared but compiled patterns.
//!
//! # Layout
//! - this file: the compiled [`Guardrail`], the first pass over a text, and the prompt check.
//! - [`settings`]: [`GuardrailSettings`] and [`GuardError`].
//! - [`verdict`]: [`PromptText`], [`Verdict`] and [`PromptCheck`].
//! - [`pii`]: personal data and secrets, their patterns and validators.
//! - [`injection`]: prompt-injection signals and their score.
//! - [`deny`]: deny lists of words and topics.
//! - [`redact`]: placeholders and [`Redactions`], and restoring values into the answer.
//! - [`answer`]: checking an answer's text, shared by the whole-answer check and the stream guard.
//! - [`stream`]: [`StreamGuard`], checking a streamed answer delta by delta.
//!
//! # How a request goes through a guardrail
//! 1. [`Guardrail::new`] compiles a guardrail's settings once; clones share the compiled
//!    patterns.
//! 2. [`Guardrail::applies_to`] tells whether the guardrail covers the request's key, tenant and
//!    model.
//! 3. [`Guardrail::check_prompt`] looks at every text of the request and returns a
//!    [`PromptCheck`]: the rules that fired, the strongest action, and — when that action is
//!    [`Action::Redact`] — the rewritten texts and the [`Redactions`] that map placeholders back to
//!    values.
//! 4. The answer goes through [`Guardrail::check_answer`] (whole) or a [`StreamGuard`] (streamed),
//!    given those redactions: the answer's own personal data and deny lists are checked on the
//!    upstream's text, then placeholders are restored, then the length is checked.
//!    The arguments of its tool calls go through [`Guardrail::check_tool_arguments`]: the same
//!    without the length.
//!
//! # Actions
//! [`Action::Block`] beats [`Action::Redact`], which beats [`Action::Log`]. A verdict names its
//! rules by id — `pii.email`, `injection`, `deny.words`, `deny.topic.<name>`,
//! `answer.max_length` — and never the text that matched.

pub mod answer;
pub mod deny;
pub mod injection;
pub mod pii;
pub mod redact;
pub mod settings;
pub mod stream;
pub mod verdict;

#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::Arc;

use regex::{RegexSet, RegexSetBuilder, SetMatches};

pub use answer::AnswerCheck;
pub use deny::DENY_PHRASE_CHARACTER_LIMIT;
pub use injection::{InjectionSignal, InjectionSignals};
pub use pii::{PII_KIND_COUNT, PiiKind};
pub use redact::{Redaction, Redactions};
pub use settings::{
    Action, DenySettings, DenyTopic, DetectionAction, GuardError, GuardrailScope, GuardrailSettings, InjectionSettings,
    InjectionWeights, PiiRule, PiiSettings,
};
pub use stream::{HOLD_BACK_CHARACTER_LIMIT, StreamGuard, StreamStep};
pub use verdict::{FiredRule, InjectionReport, PromptCheck, PromptText, RedactedText, RuleKind, TextOrigin, Verdict};

use deny::{DenyDetector, DenyList, DenyMatch};
use injection::InjectionDetector;
use pii::{PiiDetector, PiiMatch};

/// A guardrail compiled from its settings, ready to check requests. Cloning it is cheap; clones
/// share the compiled patterns.
#[derive(Clone, Debug)]
pub struct Guardrail {
    /// The compiled rules.
    inner: Arc<GuardrailInner>,
}

/// What a [`Guardrail`] shares between its clones.
#[derive(Debug)]
struct GuardrailInner {
    /// The settings it was built from.
    settings: GuardrailSettings,
    /// The patterns of the kinds with a rule; `None` when there is none.
    pii: Option<PiiDetector>,
    /// The action of each kind, by [`PiiKind::index`].
    pii_actions: [Option<Action>; PII_KIND_COUNT],
    /// `pii.<kind>`, by [`PiiKind::index`].
    pii_rule_ids: [Arc<str>; PII_KIND_COUNT],
    /// The injection patterns (shared by every guardrail) and settings, when scoring is on.
    injection: Option<(&'static InjectionDetector, InjectionSettings)>,
    /// `injection`.
    injection_rule_id: Arc<str>,
    /// The deny lists, when there is one.
    deny: Option<DenyDetector>,
    /// Every pattern a prompt's text goes through, in one set; `None` when there is none.
    prompt_first_pass: Option<FirstPass>,
    /// Every pattern an answer's text goes through, in one set; `None` when there is none.
    answer_first_pass: Option<FirstPass>,
    /// `answer.max_length`.
    max_length_rule_id: Arc<str>,
}

impl GuardrailInner {
    /// True when answers are checked for personal data.
    fn checks_answer_pii(&self) -> bool {
        self.pii.is_some() && self.settings.pii.check_answers
    }

    /// Records a personal-data match in `verdict`; its action.
    fn record_pii(&self, verdict: &mut Verdict, kind: PiiKind) -> Action {
        let action = self.pii_actions[kind.index()].unwrap_or(Action::Log);
        verdict.record(&self.pii_rule_ids[kind.index()], RuleKind::Pii(kind), action, 1);
        action
    }

    /// Records a deny match in `verdict`; its action.
    fn record_deny(&self, verdict: &mut Verdict, found: &DenyMatch) -> Action {
        let Some(list) = self.deny.as_ref().and_then(|deny| deny.lists().get(found.list)) else {
            return Action::Log;
        };
        verdict.record(&list.rule_id, list.kind, list.action, 1);
        list.action
    }

    /// Records that the answer is too long.
    fn record_max_length(&self, verdict: &mut Verdict) -> FiredRule {
        verdict.record(&self.max_length_rule_id, RuleKind::MaxAnswerLength, Action::Block, 1);
        FiredRule {
            rule_id: Arc::clone(&self.max_length_rule_id),
            kind: RuleKind::MaxAnswerLength,
            action: Action::Block,
            count: 1,
        }
    }
}

impl Guardrail {
    /// Checks `settings` and compiles every pattern they need.
    pub fn new(settings: GuardrailSettings) -> Result<Guardrail, GuardError> {
        let name = settings.name.clone();
        if name.trim().is_empty() {
            return Err(GuardError::EmptyName);
        }
        let invalid = |reason: String| GuardError::InvalidSetting { guardrail: name.clone(), reason };
        let pattern_error = |patterns: &'static str, error: regex::Error| GuardError::Pattern {
            guardrail: name.clone(),
            patterns,
            reason: error.to_string(),
        };

        let mut pii_actions = [None; PII_KIND_COUNT];
        for rule in &settings.pii.rules {
            if pii_actions[rule.kind.index()].replace(rule.action).is_some() {
                return Err(invalid(format!("pii kind {} has two rules", rule.kind)));
            }
        }
        let pii_kinds: Vec<PiiKind> = settings.pii.rules.iter().map(|rule| rule.kind).collect();
        let pii = if pii_kinds.is_empty() {
            None
        } else {
            Some(PiiDetector::new(&pii_kinds).map_err(|error| pattern_error("pii", error))?)
        };

        let injection = match settings.injection {
            None => None,
            Some(injection) => {
                if !injection.threshold.is_finite() || injection.threshold <= 0.0 {
                    return Err(invalid(format!(
                        "injection threshold {} is not a positive number",
                        injection.threshold
                    )));
                }
                for signal in InjectionSignal::ALL {
                    let weight = injection.weights.weight(signal);
                    if !weight.is_finite() || weight < 0.0 {
                        return Err(invalid(format!(
                            "injection weight {} of {} is not a number of at least 0",
                            weight,
                            signal.name()
                        )));
                    }
                }
                Some((InjectionDetector::shared().map_err(|error| pattern_error("injection", error))?, injection))
            }
        };

        let deny_lists = deny_lists(&settings.deny, &name)?;
        let deny = if deny_lists.is_empty() {
            None
        } else {
            Some(DenyDetector::new(deny_lists).map_err(|error| pattern_error("deny", error))?)
        };

        if settings.max_answer_characters == Some(0) {
            return Err(invalid("max answer characters is 0".to_owned()));
        }

        let answer_pii = pii.as_ref().filter(|_| settings.pii.check_answers);
        let prompt_first_pass = FirstPass::new(pii.as_ref(), injection.map(|(detector, _)| detector), deny.as_ref())
            .map_err(|error| pattern_error("first-pass", error))?;
        let answer_first_pass =
            FirstPass::new(answer_pii, None, deny.as_ref()).map_err(|error| pattern_error("first-pass", error))?;

        Ok(Guardrail {
            inner: Arc::new(GuardrailInner {
                pii,
                pii_actions,
                pii_rule_ids: PiiKind::ALL.map(|kind| Arc::from(format!("pii.{}", kind.name()))),
                injection,
                injection_rule_id: Arc::from("injection"),
                deny,
                prompt_first_pass,
                answer_first_pass,
                max_length_rule_id: Arc::from("answer.max_length"),
                settings,
            }),
        })
    }

    /// The guardrail's name.
    pub fn name(&self) -> &str {
        &self.inner.settings.name
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &GuardrailSettings {
        &self.inner.settings
    }

    /// True when the guardrail applies to a request by `key_id` of `tenant` naming `model`.
    pub fn applies_to(&self, key_id: &str, tenant: &str, model: &str) -> bool {
        self.inner.settings.scope.includes(key_id, tenant, model)
    }

    /// True when answers need looking at: answer personal data, deny lists or a length limit.
    /// When false and the prompt check issued no placeholder, the answer can pass untouched.
    pub fn checks_answers(&self) -> bool {
        let inner = &*self.inner;
        inner.checks_answer_pii() || inner.deny.is_some() || inner.settings.max_answer_characters.is_some()
    }

    /// Checks every text of a request: personal data and deny lists in every text, injection in
    /// every text but the system's. When the strongest action is [`Action::Redact`], the texts
    /// with values of a redacted kind come back rewritten, with the redactions to restore them.
    /// A clean request allocates nothing.
    pub fn check_prompt(&self, texts: &[PromptText<'_>]) -> PromptCheck {
        let inner = &*self.inner;
        let mut verdict = Verdict::default();
        let mut found_pii: Vec<PiiMatch> = Vec::new();
        let mut to_redact: Vec<(usize, PiiMatch)> = Vec::new();
        let mut found_deny: Vec<DenyMatch> = Vec::new();
        let mut signals = InjectionSignals::default();
        let first_pass = inner.prompt_first_pass.as_ref();
        for (index, part) in texts.iter().enumerate() {
            let Some((first_pass, matched)) = first_pass.and_then(|pass| Some((pass, pass.run_from(part.text, 0)?)))
            else {
                continue;
            };
            if let Some(pii) = &inner.pii {
                pii.find_selected(part.text, 0, |pattern| first_pass.pii_matched(&matched, pattern), &mut found_pii);
                for found in found_pii.drain(..) {
                    if inner.record_pii(&mut verdict, found.kind) == Action::Redact {
                        to_redact.push((index, found));
                    }
                }
            }
            if let Some(deny) = &inner.deny {
                deny.find_selected(part.text, 0, |list| first_pass.deny_matched(&matched, list), &mut found_deny);
                for found in found_deny.drain(..) {
                    inner.record_deny(&mut verdict, &found);
                }
            }
            if let Some((detector, _)) = inner.injection
                && part.origin != TextOrigin::System
            {
                signals.extend(
                    detector.signals_selected(part.text, |pattern| first_pass.injection_matched(&matched, pattern)),
                );
            }
        }
        let injection = inner.injection.map(|(_, settings)| {
            let score = settings.weights.score(signals);
            if !signals.is_empty() && score >= settings.threshold {
                verdict.record(&inner.injection_rule_id, RuleKind::Injection, settings.action.into(), signals.len());
            }
            InjectionReport { score, signals }
        });
        let mut check = PromptCheck { verdict, injection, redacted: Vec::new(), redactions: Redactions::default() };
        if check.verdict.action() == Some(Action::Redact) {
            (check.redacted, check.redactions) = redact_texts(texts, &to_redact);
        }
        check
    }

    /// Checks a whole answer, given the redactions of its prompt: personal data (when answers are
    /// checked) and deny lists on the upstream's text, then the placeholders restored, then the
    /// length. The text is borrowed when nothing changed; when the verdict blocks it is the
    /// answer unchanged and must not be sent.
    pub fn check_answer<'a>(&self, answer: &'a str, redactions: &Redactions) -> AnswerCheck<'a> {
        answer::check_whole_answer(&self.inner, answer, redactions, true)
    }

    /// Checks the arguments of a tool call the model made, as [`Guardrail::check_answer`] checks
    /// an answer but without the length limit (which is the answer's): the placeholders the model
    /// copied into them are restored, values of a redacted kind become markers, and a rule that
    /// blocks blocks the answer. Restored values are JSON-escaped, and placeholders and markers
    /// hold no character JSON escapes, so arguments that were JSON stay JSON.
    pub fn check_tool_arguments<'a>(&self, arguments: &'a str, redactions: &Redactions) -> AnswerCheck<'a> {
        answer::check_whole_answer(&self.inner, arguments, &redactions.json_escaped(), false)
    }

    /// A guard for a streamed answer, given the redactions of its prompt.
    pub fn stream_guard(&self, redactions: Redactions) -> StreamGuard {
        StreamGuard::new(self.clone(), redactions)
    }
}

/// One [`RegexSet`] over the patterns of every detector a text goes through, so that a clean
/// text is read once; the detectors then run only their patterns that the set saw match.
#[derive(Debug)]
struct FirstPass {
    /// Every pattern.
    set: RegexSet,
    /// Positions of the personal-data patterns in the set.
    pii: Range<usize>,
    /// Positions of the injection patterns in the set.
    injection: Range<usize>,
    /// Positions of the deny lists in the set.
    deny: Range<usize>,
}

impl FirstPass {
    /// The set of the given detectors' patterns; `None` when there is no detector.
    fn new(
        pii: Option<&PiiDetector>,
        injection: Option<&InjectionDetector>,
        deny: Option<&DenyDetector>,
    ) -> Result<Option<FirstPass>, regex::Error> {
        let pii_patterns: Vec<&str> = pii.into_iter().flat_map(PiiDetector::patterns).collect();
        let injection_patterns: Vec<&str> = injection.into_iter().flat_map(InjectionDetector::patterns).collect();
        let deny_patterns: Vec<&str> = deny.into_iter().flat_map(DenyDetector::patterns).collect();
        let pii = 0..pii_patterns.len();
        let injection = pii.end..pii.end + injection_patterns.len();
        let deny = injection.end..injection.end + deny_patterns.len();
        if deny.end == 0 {
            return Ok(None);
        }
        let patterns = pii_patterns.iter().chain(&injection_patterns).chain(&deny_patterns);
        let set = RegexSetBuilder::new(patterns).size_limit(deny::REGEX_SIZE_LIMIT).build()?;
        Ok(Some(FirstPass { set, pii, injection, deny }))
    }

    /// Which patterns match `haystack[from..]`; `None`, without allocating, when none does.
    fn run_from(&self, haystack: &str, from: usize) -> Option<SetMatches> {
        self.set.is_match_at(haystack, from).then(|| self.set.matches_at(haystack, from))
    }

    /// True when personal-data pattern `pattern` matched.
    fn pii_matched(&self, matched: &SetMatches, pattern: usize) -> bool {
        pattern < self.pii.len() && matched.matched(self.pii.start + pattern)
    }

    /// True when injection pattern `pattern` matched.
    fn injection_matched(&self, matched: &SetMatches, pattern: usize) -> bool {
        pattern < self.injection.len() && matched.matched(self.injection.start + pattern)
    }

    /// True when deny list `list` matched.
    fn deny_matched(&self, matched: &SetMatches, list: usize) -> bool {
        list < self.deny.len() && matched.matched(self.deny.start + list)
    }
}

/// The deny lists of `deny`, checked: phrases not empty and not too long, topic names usable in
/// a rule id and unique.
fn deny_lists(deny: &DenySettings, guardrail: &str) -> Result<Vec<DenyList>, GuardError> {
    let invalid = |reason: String| GuardError::InvalidSetting { guardrail: guardrail.to_owned(), reason };
    let check_phrases = |phrases: &[String], list: String| -> Result<(), GuardError> {
        for (position, phrase) in phrases.iter().enumerate() {
            if phrase.trim().is_empty() {
                return Err(GuardError::EmptyDenyPhrase { guardrail: guardrail.to_owned(), list, position });
            }
            if phrase.chars().count() > DENY_PHRASE_CHARACTER_LIMIT {
                return Err(invalid(format!(
                    "deny phrase {position} of {list} is longer than {DENY_PHRASE_CHARACTER_LIMIT} characters"
                )));
            }
        }
        Ok(())
    };
    let mut lists = Vec::new();
    if !deny.words.is_empty() {
        check_phrases(&deny.words, "deny words".to_owned())?;
        lists.push(DenyList {
            rule_id: Arc::from("deny.words"),
            kind: RuleKind::DenyWords,
            action: deny.words_action.into(),
            phrases: deny.words.clone(),
        });
    }
    for (position, topic) in deny.topics.iter().enumerate() {
        let usable_name = !topic.name.is_empty()
            && topic
                .name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-');
        if !usable_name {
            return Err(invalid(format!(
                "deny topic name {:?} is not lower-case ASCII letters, digits, '_' and '-'",
                topic.name
            )));
        }
        if deny.topics[..position].iter().any(|earlier| earlier.name == topic.name) {
            return Err(invalid(format!("deny topic \"{}\" is listed twice", topic.name)));
        }
        if topic.phrases.is_empty() {
            return Err(invalid(format!("deny topic \"{}\" has no phrases", topic.name)));
        }
        check_phrases(&topic.phrases, format!("topic \"{}\"", topic.name))?;
        lists.push(DenyList {
            rule_id: Arc::from(format!("deny.topic.{}", topic.name)),
            kind: RuleKind::DenyTopic,
            action: topic.action.into(),
            phrases: topic.phrases.clone(),
        });
    }
    Ok(lists)
}

/// Rewrites the texts with values to redact, given in text order: each value becomes its
/// placeholder.
fn redact_texts(texts: &[PromptText<'_>], to_redact: &[(usize, PiiMatch)]) -> (Vec<RedactedText>, Redactions) {
    let mut redactions = Redactions::default();
    let mut redacted: Vec<RedactedText> = Vec::new();
    let has_brackets = texts.iter().any(|part| part.text.contains('['));
    let appears_in_request =
        |placeholder: &str| has_brackets && texts.iter().any(|part| part.text.contains(placeholder));
    let mut remaining = to_redact;
    while let Some(&(index, _)) = remaining.first() {
        let of_this_text = remaining.iter().take_while(|(other, _)| *other == index).count();
        let (matches, rest) = remaining.split_at(of_this_text);
        remaining = rest;
        let text = texts[index].text;
        let mut rewritten = String::with_capacity(text.len());
        let mut copied_up_to = 0;
        for (_, found) in matches {
            rewritten.push_str(&text[copied_up_to..found.start]);
            rewritten.push_str(redactions.placeholder_for(
                found.kind,
                &text[found.start..found.end],
                appears_in_request,
            ));
            copied_up_to = found.end;
        }
        rewritten.push_str(&text[copied_up_to..]);
        redacted.push(RedactedText { index, text: rewritten });
    }
    (redacted, redactions)
}
