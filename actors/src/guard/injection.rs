//! Prompt-injection heuristics: signals found in a prompt's text, each adding its weight to a
//! score that a guardrail compares with its threshold.
//!
//! The signals ([`InjectionSignal`]):
//! - instruction override: "ignore all previous instructions", "disregard the above", "you are
//!   now in developer mode", "new instructions:", …;
//! - system-prompt extraction: "reveal your system prompt", "repeat the words above", …;
//! - role-play jailbreak: "DAN" (in capitals), "do anything now", "jailbreak", "pretend to be an
//!   unfiltered AI", "you have no restrictions", "stay in character", …;
//! - hidden text: zero-width characters, Unicode tag characters (U+E0000–U+E007F) and bidi
//!   controls (U+202A–U+202E, U+2066–U+2069). A zero-width joiner or non-joiner counts only
//!   between two ASCII letters or digits (elsewhere it joins emoji and Indic or Persian letters),
//!   tag characters only outside an emoji flag sequence (🏴, at most six tag letters or digits,
//!   the cancel tag), and a byte
//!   order mark only after the start of the text. The phrases above are also looked for in the
//!   text with its hidden characters removed and in the ASCII that tag characters spell, and a
//!   phrase found there counts as its own signal too;
//! - encoded payload: a run of at least [`ENCODED_RUN_MINIMUM`] base64 (standard or URL-safe) or
//!   hex characters that decodes to text (valid UTF-8, mostly printable) containing one of the
//!   phrases above, looked for up to [`ENCODED_DEPTH_LIMIT`] encodings deep.
//!
//! A signal counts once however often it is found. Phrases are English and matched case-insensitively
//! with any whitespace between their words; look-alike letters and spelling games are not
//! undone.

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use regex::{Regex, RegexSet};

/// Shortest run of base64 or hex characters that is decoded and looked into.
pub const ENCODED_RUN_MINIMUM: usize = 24;

/// How many encodings deep an encoded payload is looked into (base64 of base64 is two).
pub const ENCODED_DEPTH_LIMIT: usize = 2;

/// Phrases that try to replace the instructions the model was given.
const INSTRUCTION_OVERRIDE_PHRASES: &[&str] = &[
    r"ignore\s+(?:(?:all|any|the|your|my|these|those|every|of)\s+)*(?:previous|prior|above|earlier|preceding|former|foregoing|initial|original|system|developer)\s+(?:instructions?|prompts?|directions?|directives?|rules|guidelines|commands?|context|guidance)",
    r"disregard\s+(?:(?:all|any|the|your|my|these|those|every|of)\s+)*(?:(?:previous|prior|earlier|preceding|foregoing|former|system|original)\s+(?:instructions?|prompts?|directions?|directives?|rules|guidelines|commands?|context|guidance)|above|instructions|rules|guidelines|programming)",
    r"forget\s+(?:(?:all|any|the|your|my|every|of)\s+)*(?:previous|prior|above|earlier|preceding|former|original)\s+(?:instructions?|prompts?|directions?|rules|guidelines|context)",
    r"forget\s+everything\s+(?:you\s+(?:were|have\s+been)\s+told|above|before)",
    r"(?:override|bypass|circumvent)\s+(?:(?:all|any|the|your|my)\s+)*(?:safety\s+|content\s+|system\s+)?(?:instructions|rules|guidelines|filters|restrictions|policies|guardrails|prompt)",
    r"you\s+are\s+(?:now\s+)?in\s+(?:developer|dev|debug|god|admin|jailbreak|unrestricted|sudo)\s+mode",
    r"(?:developer|dev|god|sudo|jailbreak)\s+mode\s+(?:is\s+)?(?:now\s+)?(?:enabled|activated|on|engaged)",
    r"(?:enable|activate|enter)\s+(?:developer|dev|god|sudo|jailbreak)\s+mode",
    r"(?:your|the)\s+new\s+instructions\s+are",
    r"new\s+(?:system\s+)?instructions?\s*:",
    r"from\s+now\s+on,?\s+(?:you\s+)?(?:(?:will|must|shall|should)\s+)?(?:ignore|disregard|not\s+follow)",
    r"do\s+not\s+follow\s+(?:(?:your|the|any|all)\s+)*(?:(?:previous|prior|original|system)\s+)?(?:instructions|rules|guidelines)",
];

/// Phrases that ask for the system prompt or the text before the user's.
const SYSTEM_PROMPT_EXTRACTION_PHRASES: &[&str] = &[
    r"(?:reveal|show|print|display|output|repeat|tell|give|share|leak|dump|expose|write\s+out|spell\s+out)\s+(?:me\s+|us\s+)?(?:(?:your|the|all|of|full|entire|complete|exact|verbatim)\s+)*(?:system|initial|original|hidden|secret|developer|internal)\s+(?:prompts?|instructions?|messages?|directives?|configuration)",
    r"what\s+(?:is|are|was|were)\s+(?:your|the)\s+(?:(?:exact|full|original|initial|hidden|secret)\s+)*(?:system\s+(?:prompts?|instructions?|messages?)|(?:initial|original|hidden)\s+instructions?)",
    r"(?:repeat|print|output|reproduce)\s+(?:(?:all|the|every|of)\s+)*(?:words|text|lines|everything|content)\s+(?:above|before\s+this|preceding|from\s+the\s+(?:start|beginning))",
    r"what\s+(?:were|are)\s+you\s+told\s+(?:before|initially|at\s+the\s+(?:start|beginning)|by\s+(?:the\s+|your\s+)?developers?)",
];

/// Phrases of role-play jailbreaks.
const ROLE_PLAY_PHRASES: &[&str] = &[
    r"do\s+anything\s+now",
    r"jailbr(?:eak|oken)",
    r"(?:act|pretend|behave|role-?play)\s+(?:as|like|to\s+be|that\s+you\s+are)\s+(?:(?:an?|my)\s+)?(?:unrestricted|unfiltered|uncensored|evil|rogue|amoral|unethical|unaligned|unbound)",
    r"you\s+(?:have|possess)\s+no\s+(?:(?:ethical|moral|content)\s+)?(?:restrictions|limitations|filters|rules|guidelines|boundaries|limits)",
    r"(?:free|freed|liberated|released)\s+from\s+(?:(?:all|any|your|the|of)\s+)*(?:typical\s+)?(?:restrictions|limitations|rules|guidelines|constraints|policies|confines)",
    r"(?:not|no\s+longer)\s+bound\s+by\s+(?:(?:any|your|the)\s+)*(?:rules|guidelines|policies|restrictions|ethics|content\s+polic(?:y|ies))",
    r"stay\s+in\s+character",
    r"(?:evil|opposite|unfiltered|uncensored)\s+(?:confidant|mode|persona|twin)",
    r"(?-i:DAN)(?-u:\b)",
];

/// Characters that can hide text; the second pass decides which of them count.
const HIDDEN_CHARACTER_PATTERN: &str =
    r"[\u{200B}-\u{200D}\u{2060}-\u{2064}\u{FEFF}\u{180E}\u{202A}-\u{202E}\u{2066}-\u{2069}\u{E0000}-\u{E007F}]";

/// A run of base64 (either alphabet) or hex characters long enough to be decoded.
const ENCODED_RUN_PATTERN: &str = r"[A-Za-z0-9+/_-]{24,}={0,2}";

/// Base64 decoding that accepts missing padding and stray trailing bits.
const BASE64_CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
/// Standard-alphabet base64.
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, BASE64_CONFIG);
/// URL-safe base64.
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, BASE64_CONFIG);

/// The emoji that starts a flag tag sequence (🏴).
const WAVING_BLACK_FLAG: char = '\u{1F3F4}';
/// The tag that ends a flag tag sequence.
const CANCEL_TAG: char = '\u{E007F}';
/// Most tag letters and digits in a flag tag sequence (a region and a subdivision: `gbsct`).
const FLAG_TAG_LIMIT: usize = 6;

/// One kind of evidence of a prompt injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InjectionSignal {
    /// A phrase that tries to replace the model's instructions.
    InstructionOverride,
    /// A phrase that asks for the system prompt.
    SystemPromptExtraction,
    /// A role-play jailbreak marker.
    RolePlay,
    /// Characters that hide text from a reader.
    HiddenText,
    /// An encoded run that decodes to one of the phrases.
    EncodedPayload,
}

impl InjectionSignal {
    /// Every signal, in the order of their bits in [`InjectionSignals`].
    pub const ALL: [InjectionSignal; 5] = [
        InjectionSignal::InstructionOverride,
        InjectionSignal::SystemPromptExtraction,
        InjectionSignal::RolePlay,
        InjectionSignal::HiddenText,
        InjectionSignal::EncodedPayload,
    ];

    /// The signal's name in configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            InjectionSignal::InstructionOverride => "instruction_override",
            InjectionSignal::SystemPromptExtraction => "system_prompt_extraction",
            InjectionSignal::RolePlay => "role_play",
            InjectionSignal::HiddenText => "hidden_text",
            InjectionSignal::EncodedPayload => "encoded_payload",
        }
    }

    /// The signal's bit in [`InjectionSignals`].
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`InjectionSignal`]s; copying it costs nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InjectionSignals(u8);

impl InjectionSignals {
    /// True when no signal is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when `signal` is in the set.
    pub fn contains(self, signal: InjectionSignal) -> bool {
        self.0 & signal.bit() != 0
    }

    /// Adds `signal`.
    pub fn insert(&mut self, signal: InjectionSignal) {
        self.0 |= signal.bit();
    }

    /// Adds every signal of `other`.
    pub fn extend(&mut self, other: InjectionSignals) {
        self.0 |= other.0;
    }

    /// The signals in the set, in [`InjectionSignal::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = InjectionSignal> {
        InjectionSignal::ALL.into_iter().filter(move |signal| self.contains(*signal))
    }

    /// How many signals are in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
}

/// The signals the phrase regexes stand for, in their order.
const PHRASE_SIGNALS: [InjectionSignal; 3] =
    [InjectionSignal::InstructionOverride, InjectionSignal::SystemPromptExtraction, InjectionSignal::RolePlay];

/// The regex of one phrase signal: its phrases as one case-insensitive alternation, each starting
/// on a word boundary.
fn phrase_pattern(phrases: &[&str]) -> String {
    format!(r"(?i)(?-u:\b)(?:{})", phrases.join("|"))
}

/// The compiled injection patterns; built once per process, shared by every guardrail.
#[derive(Debug)]
pub struct InjectionDetector {
    /// The sources of [`InjectionDetector::first_pass`], for a guardrail's own first-pass set.
    sources: Vec<String>,
    /// First pass: the three phrase regexes, hidden characters, encoded runs.
    first_pass: RegexSet,
    /// The three phrase regexes alone, for decoded and cleaned-up text.
    phrases: RegexSet,
    /// Encoded runs, for the second pass.
    encoded_run: Regex,
}

/// Position of the hidden-character pattern in the first pass.
const HIDDEN_CHARACTER_INDEX: usize = 3;
/// Position of the encoded-run pattern in the first pass.
const ENCODED_RUN_INDEX: usize = 4;

impl InjectionDetector {
    /// Compiles the patterns.
    pub fn new() -> Result<InjectionDetector, regex::Error> {
        let phrase_patterns = [
            phrase_pattern(INSTRUCTION_OVERRIDE_PHRASES),
            phrase_pattern(SYSTEM_PROMPT_EXTRACTION_PHRASES),
            phrase_pattern(ROLE_PLAY_PHRASES),
        ];
        let mut first_pass_patterns = phrase_patterns.to_vec();
        first_pass_patterns.push(HIDDEN_CHARACTER_PATTERN.to_owned());
        first_pass_patterns.push(ENCODED_RUN_PATTERN.to_owned());
        Ok(InjectionDetector {
            first_pass: RegexSet::new(&first_pass_patterns)?,
            sources: first_pass_patterns,
            phrases: RegexSet::new(&phrase_patterns)?,
            encoded_run: Regex::new(ENCODED_RUN_PATTERN)?,
        })
    }

    /// The detector every guardrail shares, compiled on first use.
    pub fn shared() -> Result<&'static InjectionDetector, regex::Error> {
        static SHARED: LazyLock<Result<InjectionDetector, regex::Error>> = LazyLock::new(InjectionDetector::new);
        SHARED.as_ref().map_err(Clone::clone)
    }

    /// The first-pass patterns, for a guardrail's own first-pass [`RegexSet`];
    /// [`InjectionDetector::signals_selected`] takes their positions.
    pub fn patterns(&self) -> impl Iterator<Item = &str> + '_ {
        self.sources.iter().map(String::as_str)
    }

    /// The signals found in `text`.
    pub fn signals(&self, text: &str) -> InjectionSignals {
        if !self.first_pass.is_match(text) {
            return InjectionSignals::default();
        }
        let matched = self.first_pass.matches(text);
        self.signals_selected(text, |index| matched.matched(index))
    }

    /// The signals found in `text`, given which first-pass patterns (by position in
    /// [`InjectionDetector::patterns`]) match it.
    pub fn signals_selected(&self, text: &str, selected: impl Fn(usize) -> bool) -> InjectionSignals {
        let mut signals = InjectionSignals::default();
        for (index, signal) in PHRASE_SIGNALS.into_iter().enumerate() {
            if selected(index) {
                signals.insert(signal);
            }
        }
        if selected(HIDDEN_CHARACTER_INDEX) {
            signals.extend(self.hidden_text_signals(text));
        }
        if selected(ENCODED_RUN_INDEX) && self.has_encoded_phrase(text, ENCODED_DEPTH_LIMIT) {
            signals.insert(InjectionSignal::EncodedPayload);
        }
        signals
    }

    /// The phrase signals found in `text`.
    fn phrase_signals(&self, text: &str) -> InjectionSignals {
        let mut signals = InjectionSignals::default();
        if !self.phrases.is_match(text) {
            return signals;
        }
        for index in self.phrases.matches(text).iter() {
            if let Some(signal) = PHRASE_SIGNALS.get(index) {
                signals.insert(*signal);
            }
        }
        signals
    }

    /// Hidden text, and the phrases found once the hidden characters are taken out or, for tag
    /// characters, read as the ASCII they spell.
    fn hidden_text_signals(&self, text: &str) -> InjectionSignals {
        let mut signals = InjectionSignals::default();
        let mut visible = String::with_capacity(text.len());
        let mut spelled_by_tags = String::new();
        let mut hidden_count = 0_usize;
        let mut previous: Option<char> = None;
        let mut characters = text.chars().peekable();
        let mut inside_flag = false;
        let mut flag_tags = 0_usize;
        let mut first = true;
        while let Some(character) = characters.next() {
            let next = characters.peek().copied();
            let hidden = match character {
                WAVING_BLACK_FLAG => {
                    inside_flag = true;
                    flag_tags = 0;
                    false
                }
                CANCEL_TAG if inside_flag => {
                    inside_flag = false;
                    false
                }
                '\u{E0000}'..='\u{E007F}' if inside_flag && is_flag_tag(character) && flag_tags < FLAG_TAG_LIMIT => {
                    flag_tags += 1;
                    false
                }
                '\u{E0000}'..='\u{E007F}' => {
                    if let Some(spelled) = char::from_u32(u32::from(character) - 0xE0000) {
                        spelled_by_tags.push(spelled);
                    }
                    true
                }
                '\u{200C}' | '\u{200D}' => {
                    previous.is_some_and(|before| before.is_ascii_alphanumeric())
                        && next.is_some_and(|after| after.is_ascii_alphanumeric())
                }
                '\u{FEFF}' => !first,
                '\u{200B}'
                | '\u{2060}'..='\u{2064}'
                | '\u{180E}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}' => true,
                _ => false,
            };
            if !matches!(character, '\u{E0000}'..='\u{E007F}') {
                inside_flag = inside_flag && character == WAVING_BLACK_FLAG;
            }
            if hidden {
                hidden_count += 1;
            } else {
                visible.push(character);
                previous = Some(character);
            }
            first = false;
        }
        if hidden_count > 0 {
            signals.insert(InjectionSignal::HiddenText);
            signals.extend(self.phrase_signals(&visible));
            signals.extend(self.phrase_signals(&spelled_by_tags));
        }
        signals
    }

    /// True when an encoded run of `text` decodes to text with one of the phrases, looking
    /// `depth` encodings deep.
    fn has_encoded_phrase(&self, text: &str, depth: usize) -> bool {
        if depth == 0 {
            return false;
        }
        self.encoded_run.find_iter(text).any(|run| {
            decode_run(run.as_str()).is_some_and(|decoded| {
                !self.phrase_signals(&decoded).is_empty() || self.has_encoded_phrase(&decoded, depth - 1)
            })
        })
    }
}

/// True for the tag letters and digits of a flag sequence.
fn is_flag_tag(character: char) -> bool {
    matches!(character, '\u{E0030}'..='\u{E0039}' | '\u{E0061}'..='\u{E007A}')
}

/// `run` decoded as hex (when it is an even number of hex digits) or base64, when the result is
/// text: valid UTF-8 with at least 90% of its characters printable or whitespace.
fn decode_run(run: &str) -> Option<String> {
    let bytes = if run.len().is_multiple_of(2) && run.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        decode_hex(run)?
    } else {
        let unpadded = run.trim_end_matches('=');
        // One character past a multiple of four carries no whole byte.
        let usable = if unpadded.len() % 4 == 1 { &unpadded[..unpadded.len() - 1] } else { unpadded };
        let url_safe = usable.contains(['-', '_']);
        if url_safe && usable.contains(['+', '/']) {
            return None;
        }
        let engine = if url_safe { &BASE64_URL_SAFE } else { &BASE64_STANDARD };
        engine.decode(usable).ok()?
    };
    let decoded = String::from_utf8(bytes).ok()?;
    let total = decoded.chars().count();
    let printable = decoded.chars().filter(|character| !character.is_control() || character.is_whitespace()).count();
    (total > 0 && printable * 10 >= total * 9).then_some(decoded)
}

/// `hex` (an even number of hex digits) as bytes.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    hex.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests;
