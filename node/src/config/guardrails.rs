//! The `[[guardrails]]` sections: checks on prompts and answers (personal data and secrets,
//! prompt injection, deny lists, answer length), each scoped to keys, tenants and models,
//! validated and compiled into [`Guardrail`]s.
//!
//! ```toml
//! [[guardrails]]
//! name = "customer-data"
//! tenants = ["acme"]                # also `keys` (key ids) and `models` (models or routes); empty: all
//! max_answer_characters = 20000
//! [guardrails.pii]                  # kind = action: redact, block or log
//! email = "redact"
//! payment_card = "block"
//! check_answers = true
//! [guardrails.injection]            # scored; fires at `threshold`
//! threshold = 1.0
//! action = "block"                  # or "log"
//! [guardrails.deny]
//! words = ["project nightingale"]
//! words_action = "block"
//! topics = [{ name = "weapons", phrases = ["build a bomb"], action = "block" }]
//! ```

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use switchyard_actors::guard::{
    Action, DenySettings, DenyTopic, DetectionAction, Guardrail, GuardrailScope, GuardrailSettings, InjectionSettings, InjectionWeights, PiiKind,
    PiiRule, PiiSettings,
};

use super::{ConfigError, invalid};

/// One `[[guardrails]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuardrail {
    name: String,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    tenants: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    pii: RawPii,
    #[serde(default)]
    injection: Option<RawInjection>,
    #[serde(default)]
    deny: RawDeny,
    #[serde(default)]
    max_answer_characters: Option<usize>,
}

/// `[guardrails.pii]`: an action per kind, and whether answers are checked too.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawPii {
    check_answers: bool,
    #[serde(flatten)]
    kinds: BTreeMap<String, Action>,
}

impl Default for RawPii {
    fn default() -> Self {
        Self { check_answers: true, kinds: BTreeMap::new() }
    }
}

/// `[guardrails.injection]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawInjection {
    threshold: f32,
    action: DetectionAction,
    weights: RawWeights,
}

impl Default for RawInjection {
    fn default() -> Self {
        let defaults = InjectionSettings::default();
        Self { threshold: defaults.threshold, action: defaults.action, weights: RawWeights::default() }
    }
}

/// `[guardrails.injection.weights]`: what each signal adds to the score.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWeights {
    instruction_override: f32,
    system_prompt_extraction: f32,
    role_play: f32,
    hidden_text: f32,
    encoded_payload: f32,
}

impl Default for RawWeights {
    fn default() -> Self {
        let InjectionWeights { instruction_override, system_prompt_extraction, role_play, hidden_text, encoded_payload } = InjectionWeights::default();
        Self { instruction_override, system_prompt_extraction, role_play, hidden_text, encoded_payload }
    }
}

/// `[guardrails.deny]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDeny {
    words: Vec<String>,
    words_action: DetectionAction,
    topics: Vec<RawTopic>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    name: String,
    phrases: Vec<String>,
    #[serde(default)]
    action: DetectionAction,
}

/// Validates every guardrail and compiles it. `key_ids`, `tenants` and `models` are what the file
/// defines (an empty set of keys or tenants: the node is open, and any name is accepted).
pub(super) fn validate(
    raw: &[RawGuardrail],
    key_ids: &HashSet<&str>,
    tenants: &HashSet<&str>,
    models: &HashSet<&str>,
) -> Result<Vec<Guardrail>, ConfigError> {
    let mut names = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(index, guardrail)| {
            let at = format!("guardrails[{index}]");
            if !names.insert(guardrail.name.as_str()) {
                return Err(invalid(format!("{at}.name"), format!("\"{}\" names two guardrails", guardrail.name)));
            }
            guardrail.validate(&at, key_ids, tenants, models)
        })
        .collect()
}

impl RawGuardrail {
    fn validate(&self, at: &str, key_ids: &HashSet<&str>, tenants: &HashSet<&str>, models: &HashSet<&str>) -> Result<Guardrail, ConfigError> {
        let known = |list: &[String], field: &str, defined: &HashSet<&str>, what: &str| -> Result<(), ConfigError> {
            match list.iter().find(|name| !defined.is_empty() && !defined.contains(name.as_str())) {
                Some(unknown) => Err(invalid(format!("{at}.{field}"), format!("unknown {what} \"{unknown}\""))),
                None => Ok(()),
            }
        };
        known(&self.keys, "keys", key_ids, "key id")?;
        known(&self.tenants, "tenants", tenants, "tenant")?;
        known(&self.models, "models", models, "model or route")?;
        let mut rules = Vec::new();
        for (kind, action) in &self.pii.kinds {
            let Some(kind) = PiiKind::from_name(kind) else {
                let known: Vec<&str> = PiiKind::ALL.iter().map(|kind| kind.name()).collect();
                return Err(invalid(format!("{at}.pii.{kind}"), format!("unknown kind (expected one of {}, or check_answers)", known.join(", "))));
            };
            rules.push(PiiRule { kind, action: *action });
        }
        let injection = self
            .injection
            .as_ref()
            .map(|raw| {
                let weights = &raw.weights;
                let weights = InjectionWeights {
                    instruction_override: weights.instruction_override,
                    system_prompt_extraction: weights.system_prompt_extraction,
                    role_play: weights.role_play,
                    hidden_text: weights.hidden_text,
                    encoded_payload: weights.encoded_payload,
                };
                if !(raw.threshold.is_finite() && raw.threshold > 0.0) {
                    return Err(invalid(format!("{at}.injection.threshold"), format!("{} is not a positive number", raw.threshold)));
                }
                Ok(InjectionSettings { weights, threshold: raw.threshold, action: raw.action })
            })
            .transpose()?;
        if self.max_answer_characters == Some(0) {
            return Err(invalid(format!("{at}.max_answer_characters"), "must be at least 1 (leave it out for no limit)"));
        }
        let settings = GuardrailSettings {
            name: self.name.clone(),
            scope: GuardrailScope { key_ids: self.keys.clone(), tenants: self.tenants.clone(), models: self.models.clone() },
            pii: PiiSettings { rules, check_answers: self.pii.check_answers },
            injection,
            deny: DenySettings {
                words: self.deny.words.clone(),
                words_action: self.deny.words_action,
                topics: self
                    .deny
                    .topics
                    .iter()
                    .map(|topic| DenyTopic { name: topic.name.clone(), phrases: topic.phrases.clone(), action: topic.action })
                    .collect(),
            },
            max_answer_characters: self.max_answer_characters,
        };
        Guardrail::new(settings).map_err(|error| invalid(at, error.to_string()))
    }
}
