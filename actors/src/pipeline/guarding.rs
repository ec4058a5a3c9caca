//! Guardrails as a step of the pipeline (see [`crate::guard`]): the prompt is checked before
//! anything else sees it — routing, budgets, the caches, a provider — and the answer before the
//! client does.
//!
//! - A prompt rule that blocks refuses the request ([`GatewayError::GuardrailBlocked`]) and changes
//!   nothing. Values of a `redact` rule are replaced by placeholders in the request itself, so the
//!   cache keys, the semantic lookup, the stored answers, the audit lines and the provider only
//!   ever see the placeholders.
//! - The answer the upstream (or a cache) gave goes through each guardrail's answer check in
//!   configuration order: its placeholders are restored for this request only, personal data in
//!   the answer is redacted with markers, and a rule that blocks ends the answer with an error
//!   (a stream, after what was already sent). The arguments of the answer's tool calls go through
//!   the same check (without the answer's length limit; stage `tool_call`); in a stream a call is
//!   held back until the answer ends and then sent whole, checked. What is cached is the
//!   upstream's answer, with the placeholders.
//! - Every rule that fires is counted (`guardrail_rules_total`) and written to the audit log by
//!   its id, never with the text it matched.
//!
//! Checked: the text of every message (each text part of a message with images), the arguments
//! of the tool calls of earlier assistant turns, and the tool calls of the answer. Not checked:
//! the tool definitions (names, descriptions, schemas), which come from the application rather
//! than from a user.

use std::sync::Arc;

use tracing::info;

use crate::error::GatewayError;
use crate::guard::{Guardrail, PromptText, Redactions, StreamGuard, TextOrigin, Verdict};
use crate::metrics::Metrics;
use crate::model::{ChatRequest, ContentPart, Role, ToolCall};
use crate::tenancy::Principal;

/// The guardrails that apply to one request, each with the placeholders its prompt check issued.
#[derive(Debug, Default)]
pub struct Guarding {
    applied: Vec<(Guardrail, Redactions)>,
}

/// Where one checked text lives in the request.
#[derive(Clone, Copy)]
enum TextAt {
    /// A message's `content`.
    Content(usize),
    /// A text part of a message.
    Part(usize, usize),
    /// The arguments of a tool call of an assistant message.
    Arguments(usize, usize),
}

impl Guarding {
    /// Checks `request`'s prompt against every guardrail that applies to `principal` and the model
    /// it names, in order, redacting in place; refuses it naming the first rule that blocks.
    pub fn check_prompt(guardrails: &[Guardrail], principal: &Principal, request: &mut ChatRequest, metrics: &Metrics) -> Result<Self, GatewayError> {
        let model = request.model.as_deref().unwrap_or("auto");
        let applicable: Vec<&Guardrail> = guardrails.iter().filter(|guardrail| guardrail.applies_to(&principal.key_id, &principal.tenant, model)).collect();
        let mut guarding = Self::default();
        for guardrail in applicable {
            let (places, check) = {
                let (places, texts) = texts_of(request);
                (places, guardrail.check_prompt(&texts))
            };
            record(guardrail, &check.verdict, "prompt", principal, metrics);
            if let Some(rule) = check.verdict.blocking_rule() {
                return Err(GatewayError::GuardrailBlocked { guardrail: guardrail.name().to_owned(), rule: rule.rule_id.to_string(), stage: "prompt" });
            }
            for redacted in check.redacted {
                match places.get(redacted.index) {
                    Some(TextAt::Content(message)) => request.messages[*message].content = redacted.text,
                    Some(TextAt::Part(message, part)) => request.messages[*message].parts[*part] = ContentPart::Text(redacted.text),
                    Some(TextAt::Arguments(message, call)) => request.messages[*message].tool_calls[*call].arguments = redacted.text,
                    None => {}
                }
            }
            if guardrail.checks_answers() || !check.redactions.is_empty() {
                guarding.applied.push((guardrail.clone(), check.redactions));
            }
        }
        Ok(guarding)
    }

    /// Checks a whole answer: the text to send, with `tool_calls`' arguments checked in place,
    /// or the error naming the rule that blocked it.
    pub fn check_answer(&self, text: String, tool_calls: &mut [ToolCall], principal: &Principal, metrics: &Metrics) -> Result<String, GatewayError> {
        let mut text = text;
        for (guardrail, redactions) in &self.applied {
            let check = guardrail.check_answer(&text, redactions);
            record(guardrail, &check.verdict, "answer", principal, metrics);
            if let Some(rule) = check.verdict.blocking_rule() {
                return Err(GatewayError::GuardrailBlocked { guardrail: guardrail.name().to_owned(), rule: rule.rule_id.to_string(), stage: "answer" });
            }
            text = check.text.into_owned();
            check_tool_calls(guardrail, redactions, tool_calls, principal, metrics)?;
        }
        Ok(text)
    }

    /// The guard of a streamed answer; `None` when no guardrail looks at the answer.
    pub fn stream(&self, principal: &Arc<Principal>, metrics: &Arc<Metrics>) -> Option<AnswerGuard> {
        (!self.applied.is_empty()).then(|| AnswerGuard {
            guards: self.applied.iter().map(|(guardrail, redactions)| (guardrail.clone(), guardrail.stream_guard(redactions.clone()))).collect(),
            principal: Arc::clone(principal),
            metrics: Arc::clone(metrics),
        })
    }
}

/// The guardrails of a streamed answer, delta by delta, chained in configuration order.
#[derive(Debug)]
pub struct AnswerGuard {
    guards: Vec<(Guardrail, StreamGuard)>,
    principal: Arc<Principal>,
    metrics: Arc<Metrics>,
}

impl AnswerGuard {
    /// What to forward of `delta` now (a guard may hold back a short tail), or the error that
    /// ends the stream.
    pub fn push(&mut self, delta: &str) -> Result<String, GatewayError> {
        self.pass(Some(delta))
    }

    /// What was held back, at the end of the answer, or the error that ends the stream.
    pub fn finish(&mut self) -> Result<String, GatewayError> {
        let released = self.pass(None)?;
        for (guardrail, guard) in &self.guards {
            record(guardrail, guard.verdict(), "answer", &self.principal, &self.metrics);
        }
        Ok(released)
    }

    /// Checks the arguments of the answer's tool calls (held back until the answer ended) in
    /// place, or names the rule that blocked.
    pub fn check_tool_calls(&self, calls: &mut [ToolCall]) -> Result<(), GatewayError> {
        for (guardrail, guard) in &self.guards {
            check_tool_calls(guardrail, guard.redactions(), calls, &self.principal, &self.metrics)?;
        }
        Ok(())
    }

    /// Runs `delta` (or, with `None`, the end of the answer) through every guard in turn: what one
    /// releases is what the next is fed, and at the end each is fed what the earlier ones
    /// released, then finished.
    fn pass(&mut self, delta: Option<&str>) -> Result<String, GatewayError> {
        let finishing = delta.is_none();
        let mut carried = delta.map(str::to_owned);
        for (guardrail, guard) in &mut self.guards {
            let mut released = String::new();
            let steps = carried.as_deref().map(|text| guard.push(text)).into_iter().chain(finishing.then(|| guard.finish()));
            for step in steps.collect::<Vec<_>>() {
                if let Some(rule) = step.blocked {
                    record(guardrail, guard.verdict(), "answer", &self.principal, &self.metrics);
                    return Err(GatewayError::GuardrailBlocked { guardrail: guardrail.name().to_owned(), rule: rule.rule_id.to_string(), stage: "answer" });
                }
                released.push_str(&step.forward);
            }
            carried = Some(released);
        }
        Ok(carried.unwrap_or_default())
    }
}

/// Every text a guardrail reads, and where each is in the request.
fn texts_of(request: &ChatRequest) -> (Vec<TextAt>, Vec<PromptText<'_>>) {
    let mut places = Vec::new();
    let mut texts = Vec::new();
    for (index, message) in request.messages.iter().enumerate() {
        let origin = match message.role {
            Role::System | Role::Developer => TextOrigin::System,
            Role::User => TextOrigin::User,
            Role::Assistant => TextOrigin::Assistant,
            Role::Tool => TextOrigin::Tool,
        };
        places.push(TextAt::Content(index));
        texts.push(PromptText::new(origin, &message.content));
        for (part_index, part) in message.parts.iter().enumerate() {
            if let ContentPart::Text(text) = part {
                places.push(TextAt::Part(index, part_index));
                texts.push(PromptText::new(origin, text));
            }
        }
        for (call_index, call) in message.tool_calls.iter().enumerate() {
            places.push(TextAt::Arguments(index, call_index));
            texts.push(PromptText::new(origin, &call.arguments));
        }
    }
    (places, texts)
}

/// Checks the arguments of `calls` against one guardrail, rewriting them in place, or names the
/// rule that blocked.
fn check_tool_calls(guardrail: &Guardrail, redactions: &Redactions, calls: &mut [ToolCall], principal: &Principal, metrics: &Metrics) -> Result<(), GatewayError> {
    for call in calls {
        let check = guardrail.check_tool_arguments(&call.arguments, redactions);
        record(guardrail, &check.verdict, "tool_call", principal, metrics);
        if let Some(rule) = check.verdict.blocking_rule() {
            return Err(GatewayError::GuardrailBlocked { guardrail: guardrail.name().to_owned(), rule: rule.rule_id.to_string(), stage: "tool call" });
        }
        if let std::borrow::Cow::Owned(arguments) = check.text {
            call.arguments = arguments;
        }
    }
    Ok(())
}

/// Counts and audits the rules of `verdict`, by id only.
fn record(guardrail: &Guardrail, verdict: &Verdict, stage: &'static str, principal: &Principal, metrics: &Metrics) {
    for rule in &verdict.fired {
        let action = rule.action.name();
        metrics.guardrail_rules.with_label_values(&[guardrail.name(), &rule.rule_id, action, stage]).inc();
        info!(
            target: "audit",
            key_id = %principal.key_id,
            tenant = %principal.tenant,
            user = %principal.user,
            guardrail = guardrail.name(),
            rule = %rule.rule_id,
            action,
            matches = rule.count,
            stage,
            "guardrail"
        );
    }
}
