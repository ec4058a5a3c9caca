//! A guardrail's settings as the configuration layer hands them over, and what can be wrong with
//! them ([`GuardError`]).

use std::fmt;

use super::{InjectionSignal, InjectionSignals, PiiKind};

/// What a rule does when it fires. Ordered by strength: `Log < Redact < Block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let the text through; the verdict records the rule.
    Log,
    /// Replace what matched (personal data only).
    Redact,
    /// Refuse the request, or end the answer.
    Block,
}

impl Action {
    /// The action's name in configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            Action::Log => "log",
            Action::Redact => "redact",
            Action::Block => "block",
        }
    }
}

/// What a rule that cannot redact does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionAction {
    /// Let the text through; the verdict records the rule.
    Log,
    /// Refuse the request, or end the answer.
    #[default]
    Block,
}

impl From<DetectionAction> for Action {
    fn from(action: DetectionAction) -> Action {
        match action {
            DetectionAction::Log => Action::Log,
            DetectionAction::Block => Action::Block,
        }
    }
}

/// One guardrail as configured (already validated by the configuration layer; [`super::Guardrail::new`]
/// checks what compiling needs).
#[derive(Clone, Debug, PartialEq)]
pub struct GuardrailSettings {
    /// The guardrail's name, for logs and errors.
    pub name: String,
    /// The requests it applies to.
    pub scope: GuardrailScope,
    /// Personal data and secrets.
    pub pii: PiiSettings,
    /// Prompt-injection scoring; `None` turns it off.
    pub injection: Option<InjectionSettings>,
    /// Deny lists.
    pub deny: DenySettings,
    /// Longest answer, in characters (Unicode scalar values) as the client receives it; a longer
    /// answer is blocked. `None` for no limit.
    pub max_answer_characters: Option<usize>,
}

impl GuardrailSettings {
    /// A guardrail named `name` that applies to everything and checks nothing yet.
    pub fn new(name: impl Into<String>) -> GuardrailSettings {
        GuardrailSettings {
            name: name.into(),
            scope: GuardrailScope::default(),
            pii: PiiSettings::default(),
            injection: None,
            deny: DenySettings::default(),
            max_answer_characters: None,
        }
    }
}

/// The requests a guardrail applies to. Each list that is not empty must contain the request's
/// value; an empty list matches every value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardrailScope {
    /// API key ids.
    pub key_ids: Vec<String>,
    /// Tenants.
    pub tenants: Vec<String>,
    /// Models or routes, as the request names them.
    pub models: Vec<String>,
}

impl GuardrailScope {
    /// True when a request by `key_id` of `tenant` naming `model` is in the scope.
    pub fn includes(&self, key_id: &str, tenant: &str, model: &str) -> bool {
        let listed = |list: &[String], value: &str| list.is_empty() || list.iter().any(|entry| entry == value);
        listed(&self.key_ids, key_id) && listed(&self.tenants, tenant) && listed(&self.models, model)
    }
}

/// Which personal data and secrets to look for, and what to do with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PiiSettings {
    /// One rule per kind looked for; a kind without a rule is not looked for.
    pub rules: Vec<PiiRule>,
    /// Whether answers are checked too (with the same actions; a redacted value in an answer
    /// becomes a marker such as `[EMAIL_REDACTED]` and is never put back).
    pub check_answers: bool,
}

impl Default for PiiSettings {
    fn default() -> PiiSettings {
        PiiSettings { rules: Vec::new(), check_answers: true }
    }
}

/// What to do with one kind of personal data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PiiRule {
    /// The kind.
    pub kind: PiiKind,
    /// What a match does.
    pub action: Action,
}

/// How prompt injections are scored and what a high score does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InjectionSettings {
    /// What each signal adds to the score.
    pub weights: InjectionWeights,
    /// The score at which the rule fires.
    pub threshold: f32,
    /// What firing does.
    pub action: DetectionAction,
}

impl Default for InjectionSettings {
    fn default() -> InjectionSettings {
        InjectionSettings { weights: InjectionWeights::default(), threshold: 1.0, action: DetectionAction::Block }
    }
}

/// What each [`InjectionSignal`] adds to the injection score. With the default threshold of 1,
/// the defaults fire on an instruction override or an encoded payload alone, and on any two of
/// the others together.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InjectionWeights {
    /// [`InjectionSignal::InstructionOverride`]; 1.0 by default.
    pub instruction_override: f32,
    /// [`InjectionSignal::SystemPromptExtraction`]; 0.8 by default.
    pub system_prompt_extraction: f32,
    /// [`InjectionSignal::RolePlay`]; 0.6 by default.
    pub role_play: f32,
    /// [`InjectionSignal::HiddenText`]; 0.5 by default.
    pub hidden_text: f32,
    /// [`InjectionSignal::EncodedPayload`]; 1.0 by default.
    pub encoded_payload: f32,
}

impl Default for InjectionWeights {
    fn default() -> InjectionWeights {
        InjectionWeights {
            instruction_override: 1.0,
            system_prompt_extraction: 0.8,
            role_play: 0.6,
            hidden_text: 0.5,
            encoded_payload: 1.0,
        }
    }
}

impl InjectionWeights {
    /// The weight of `signal`.
    pub fn weight(&self, signal: InjectionSignal) -> f32 {
        match signal {
            InjectionSignal::InstructionOverride => self.instruction_override,
            InjectionSignal::SystemPromptExtraction => self.system_prompt_extraction,
            InjectionSignal::RolePlay => self.role_play,
            InjectionSignal::HiddenText => self.hidden_text,
            InjectionSignal::EncodedPayload => self.encoded_payload,
        }
    }

    /// The score of `signals`: the sum of their weights.
    pub fn score(&self, signals: InjectionSignals) -> f32 {
        signals.iter().map(|signal| self.weight(signal)).sum()
    }
}

/// Deny lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenySettings {
    /// Words and phrases, matched as whole words, case-insensitively (rule `deny.words`).
    pub words: Vec<String>,
    /// What a match of [`DenySettings::words`] does.
    pub words_action: DetectionAction,
    /// Topics (rule `deny.topic.<name>`).
    pub topics: Vec<DenyTopic>,
}

/// A named group of phrases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenyTopic {
    /// Lower-case ASCII letters, digits, `_` and `-`; part of the rule id.
    pub name: String,
    /// Its phrases, matched like [`DenySettings::words`].
    pub phrases: Vec<String>,
    /// What a match does.
    pub action: DetectionAction,
}

/// Why a guardrail could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardError {
    /// The guardrail's name is empty.
    EmptyName,
    /// A setting is out of range or inconsistent.
    InvalidSetting {
        /// The guardrail.
        guardrail: String,
        /// What is wrong, naming the setting.
        reason: String,
    },
    /// A deny phrase is empty or only whitespace.
    EmptyDenyPhrase {
        /// The guardrail.
        guardrail: String,
        /// `deny words` or `topic "<name>"`.
        list: String,
        /// Position of the phrase in its list, from 0.
        position: usize,
    },
    /// The patterns built from the settings did not compile (a deny list too large, say).
    Pattern {
        /// The guardrail.
        guardrail: String,
        /// Which patterns.
        patterns: &'static str,
        /// The regex compiler's message.
        reason: String,
    },
}

impl fmt::Display for GuardError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::EmptyName => formatter.write_str("guardrail name is empty"),
            GuardError::InvalidSetting { guardrail, reason } => {
                write!(formatter, "invalid guardrail \"{guardrail}\": {reason}")
            }
            GuardError::EmptyDenyPhrase { guardrail, list, position } => {
                write!(formatter, "deny phrase {position} of {list} in guardrail \"{guardrail}\" is empty")
            }
            GuardError::Pattern { guardrail, patterns, reason } => {
                write!(formatter, "the {patterns} patterns of guardrail \"{guardrail}\" do not compile: {reason}")
            }
        }
    }
}

impl std::error::Error for GuardError {}
