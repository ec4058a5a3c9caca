//! The semantic cache's hit decision: whether a stored question (a candidate from the index) asks
//! the same thing as the lookup.
//!
//! One global cosine threshold serves many false hits on near-misses ("How do I learn Python?"
//! against "How do I learn Java?": cosine 0.8). The [`HitPolicy`] instead scores each candidate
//! above a loose cosine floor with a small verifier fitted on labelled question pairs: a
//! multilayer perceptron over the two sentence vectors (their element-wise product and absolute
//! difference, and the cosine) and a few lexical features of the two texts (word, word-pair and
//! character overlap, numbers, negations, entity-like words, question word, length) computed by
//! [`lexical_features`]. The network's logit gets a second term, the cosine's own logit times a
//! weight fitted on validation pairs ([`PolicyParameters::cosine_weight`]), which ranks the most
//! alike pairs better than the network alone.
//!
//! The score is a probability-like value in `[0, 1]`. An operator asks for a target precision; the
//! policy maps it to a score threshold with the calibration table measured when it was fitted, on
//! held-out pairs: every train pair, each scored by a fit that had not seen it
//! ([`HitPolicy::threshold_for`]). The table stops at the highest precision those pairs show with
//! enough duplicates served (0.96 for the shipped parameters: the labels themselves call some of
//! the most alike pairs different);
//! targets above it get stricter thresholds than any measured one, by a fixed rule, with no
//! measured precision behind them.
//!
//! The shipped parameters are `policy-params.json` beside this file, written by
//! `switchyard-loadtest semantic-fit` (see BENCHMARKS.md, "Semantic cache quality").

/// The fitted parameters that ship, written by `switchyard-loadtest semantic-fit`.
const SHIPPED_PARAMETERS: &str = include_str!("policy-params.json");

/// Version of the parameters file layout this code reads.
pub const PARAMETERS_FORMAT: u32 = 1;

/// Names of the lexical features, in the order of [`lexical_features`].
pub const LEXICAL_FEATURE_NAMES: [&str; LEXICAL_FEATURES] = [
    "word_jaccard",
    "content_word_jaccard",
    "character_trigram_jaccard",
    "word_bigram_jaccard",
    "same_normalised_text",
    "number_mismatch",
    "number_on_one_side",
    "negation_mismatch",
    "fewer_unshared_content_words",
    "more_unshared_content_words",
    "capitalised_word_mismatch",
    "length_ratio",
    "question_word_mismatch",
    "mean_length",
];

/// Position of `number_mismatch` in [`LEXICAL_FEATURE_NAMES`].
const NUMBER_MISMATCH: usize = 5;

/// How many lexical features [`lexical_features`] computes.
pub const LEXICAL_FEATURES: usize = 14;

/// Words that carry little of a question's meaning; ignored by the content-word features. Sorted,
/// for [`is_stop_word`].
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "anyone", "are", "as", "at", "be", "been",
    "being", "best", "but", "by", "can", "could", "did", "do", "does", "doing", "for", "from", "get", "good", "had",
    "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "many", "me", "more", "most", "much", "my",
    "of", "on", "one", "or", "our", "people", "quora", "really", "should", "so", "some", "someone", "than", "that",
    "the", "their", "them", "then", "there", "these", "they", "this", "those", "to", "us", "was", "way", "ways", "we",
    "were", "what", "when", "where", "which", "who", "whom", "why", "will", "with", "would", "you", "your",
];

/// Words that negate.
const NEGATIONS: &[&str] =
    &["not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "cannot", "without", "nowhere"];

/// Words a question usually starts with; the first one found names the kind of question.
const QUESTION_WORDS: &[&str] = &[
    "what", "how", "why", "when", "where", "who", "which", "whom", "whose", "is", "are", "can", "should", "do",
    "does", "did", "will", "would", "could", "was", "were",
];

/// Why the policy could not be built or asked.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// The parameters file is not valid JSON of the expected layout.
    #[error("invalid hit policy parameters: {0}")]
    InvalidParameters(String),
    /// The target precision is not a number from the lowest calibrated precision to 1.
    #[error("target precision {requested} is outside {lowest}..=1 (calibrated up to {highest})")]
    PrecisionOutOfRange {
        /// The precision asked for.
        requested: f32,
        /// Lowest calibrated precision.
        lowest: f32,
        /// Highest calibrated precision.
        highest: f32,
    },
}

/// One dense layer: `output = weights · input + bias`, `weights` row-major `outputs × inputs`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseLayer {
    /// Number of inputs.
    pub inputs: usize,
    /// Number of outputs.
    pub outputs: usize,
    /// Row-major `outputs × inputs` weights.
    pub weights: Vec<f32>,
    /// One bias per output.
    pub bias: Vec<f32>,
}

impl DenseLayer {
    /// `weights · input + bias` into `output` (cleared first).
    fn apply(&self, input: &[f32], output: &mut Vec<f32>) {
        output.clear();
        for (row, bias) in self.weights.chunks_exact(self.inputs).zip(&self.bias) {
            output.push(bias + dot(row, input));
        }
    }
}

/// Lanes of [`dot`]'s accumulator: independent sums the compiler keeps in SIMD registers.
const DOT_LANES: usize = 8;

/// `Σ left[i] · right[i]`, summed in [`DOT_LANES`] interleaved lanes so that it vectorises.
fn dot(left: &[f32], right: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; DOT_LANES];
    let (left_chunks, right_chunks) = (left.chunks_exact(DOT_LANES), right.chunks_exact(DOT_LANES));
    let tail: f32 = left_chunks.remainder().iter().zip(right_chunks.remainder()).map(|(a, b)| a * b).sum();
    for (left_chunk, right_chunk) in left_chunks.zip(right_chunks) {
        for lane in 0..DOT_LANES {
            lanes[lane] += left_chunk[lane] * right_chunk[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// One point of the calibration table: the lowest score threshold at which the held-out pairs
/// were served with at least `precision`, and the recall it kept there.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationPoint {
    /// Target precision.
    pub precision: f32,
    /// Score threshold reaching it.
    pub threshold: f32,
    /// Recall of the duplicates at that threshold, on the held-out pairs.
    pub recall: f32,
}

/// The verifier's fitted parameters, as stored in `policy-params.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyParameters {
    /// Layout version, [`PARAMETERS_FORMAT`].
    pub format: u32,
    /// The embedding model whose vectors the weights expect.
    pub embedding_model: String,
    /// Length of the sentence vectors.
    pub dimensions: usize,
    /// What was fitted, for people reading the file.
    pub description: String,
    /// Cosine floor for candidates: below it a candidate is never a hit.
    pub loose_similarity: f32,
    /// The lexical feature names, in order; must equal [`LEXICAL_FEATURE_NAMES`].
    pub lexical_features: Vec<String>,
    /// Dense layers with ReLU between them; the last has one output, a logit.
    pub layers: Vec<DenseLayer>,
    /// Weight of the cosine's own logit, `ln(c / (1 − c))`, added to the network's logit (0: none;
    /// absent in older files). Fitted on the validation pairs after the network: the network
    /// alone leans too little on the cosine at the top of its range.
    #[serde(default)]
    pub cosine_weight: f32,
    /// Precision → threshold, ascending in both.
    pub calibration: Vec<CalibrationPoint>,
}

impl PolicyParameters {
    /// Checks the layer shapes, the feature list and the calibration table.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let invalid = |reason: String| Err(PolicyError::InvalidParameters(reason));
        if self.format != PARAMETERS_FORMAT {
            return invalid(format!("format {} is not {PARAMETERS_FORMAT}", self.format));
        }
        if self.lexical_features.iter().map(String::as_str).ne(LEXICAL_FEATURE_NAMES) {
            return invalid(format!("lexical features {:?} are not {LEXICAL_FEATURE_NAMES:?}", self.lexical_features));
        }
        let mut expected_inputs = feature_count(self.dimensions);
        for (position, layer) in self.layers.iter().enumerate() {
            if layer.inputs != expected_inputs
                || layer.weights.len() != layer.inputs * layer.outputs
                || layer.bias.len() != layer.outputs
            {
                return invalid(format!(
                    "layer {position} has {} inputs, {} outputs, {} weights and {} biases; {expected_inputs} inputs were expected",
                    layer.inputs,
                    layer.outputs,
                    layer.weights.len(),
                    layer.bias.len()
                ));
            }
            expected_inputs = layer.outputs;
        }
        if self.layers.is_empty() || expected_inputs != 1 {
            return invalid("the last layer must have exactly one output".into());
        }
        if self.calibration.is_empty() {
            return invalid("the calibration table is empty".into());
        }
        for pair in self.calibration.windows(2) {
            if pair[1].precision <= pair[0].precision || pair[1].threshold < pair[0].threshold {
                return invalid(format!(
                    "calibration points {:?} and {:?} are not ascending",
                    pair[0].precision, pair[1].precision
                ));
            }
        }
        if self.calibration.iter().any(|point| !(0.0..=1.0).contains(&point.precision)) {
            return invalid("calibrated precisions must lie within 0..=1".into());
        }
        if !self.cosine_weight.is_finite() || self.cosine_weight < 0.0 {
            return invalid(format!("cosine weight {} is not a non-negative number", self.cosine_weight));
        }
        Ok(())
    }
}

/// How a candidate is scored.
#[derive(Clone, Debug, PartialEq)]
enum Scorer {
    /// The baseline: the cosine similarity itself.
    Cosine,
    /// The fitted verifier.
    Verifier(PolicyParameters),
}

/// The semantic cache's hit decision: a score per candidate and the threshold for a target
/// precision.
#[derive(Clone, Debug, PartialEq)]
pub struct HitPolicy {
    scorer: Scorer,
    loose_similarity: f32,
    calibration: Vec<CalibrationPoint>,
}

/// The highest score either scorer gives: the verifier's is a probability, the baseline's the
/// cosine of unit vectors. [`HitPolicy::threshold_for`] reaches it at target precision 1.
const TOP_SCORE: f32 = 1.0;

/// The cosine baseline's first-stage floor (every candidate is scored).
const COSINE_LOOSE_SIMILARITY: f32 = -1.0;

/// The cosine baseline's calibration (precision, cosine threshold, recall), measured by
/// `switchyard-loadtest semantic-fit --cross-fit` on the same train pairs of `qqp-dev.jsonl` as
/// the verifier's (see BENCHMARKS.md), so that `threshold_for` works for it too.
const COSINE_CALIBRATION: &[(f32, f32, f32)] = &[
    (0.5, 0.5359, 0.9964),
    (0.55, 0.6212, 0.9815),
    (0.6, 0.6972, 0.9353),
    (0.65, 0.7607, 0.8483),
    (0.7, 0.8165, 0.7195),
    (0.75, 0.8661, 0.5585),
    (0.8, 0.9073, 0.3886),
    (0.85, 0.9405, 0.2454),
    (0.9, 0.9693, 0.1231),
    (0.95, 0.9982, 0.0041),
];

impl HitPolicy {
    /// The committed fitted verifier (`policy-params.json`).
    pub fn shipped() -> Result<HitPolicy, PolicyError> {
        HitPolicy::from_json(SHIPPED_PARAMETERS)
    }

    /// The baseline: the score is the cosine similarity.
    pub fn cosine() -> HitPolicy {
        HitPolicy {
            scorer: Scorer::Cosine,
            loose_similarity: COSINE_LOOSE_SIMILARITY,
            calibration: COSINE_CALIBRATION
                .iter()
                .map(|&(precision, threshold, recall)| CalibrationPoint { precision, threshold, recall })
                .collect(),
        }
    }

    /// A verifier from parameters in the layout of `policy-params.json`.
    pub fn from_json(text: &str) -> Result<HitPolicy, PolicyError> {
        let parameters: PolicyParameters =
            serde_json::from_str(text).map_err(|error| PolicyError::InvalidParameters(error.to_string()))?;
        HitPolicy::from_parameters(parameters)
    }

    /// A verifier from validated parameters.
    pub fn from_parameters(parameters: PolicyParameters) -> Result<HitPolicy, PolicyError> {
        parameters.validate()?;
        Ok(HitPolicy {
            loose_similarity: parameters.loose_similarity,
            calibration: parameters.calibration.clone(),
            scorer: Scorer::Verifier(parameters),
        })
    }

    /// The verifier's parameters; `None` for the cosine baseline.
    pub fn parameters(&self) -> Option<&PolicyParameters> {
        match &self.scorer {
            Scorer::Cosine => None,
            Scorer::Verifier(parameters) => Some(parameters),
        }
    }

    /// First-stage cosine floor for the candidate search: candidates below it are never hits.
    pub fn loose_similarity(&self) -> f32 {
        self.loose_similarity
    }

    /// The calibration table: target precision → score threshold (and the validation recall),
    /// ascending.
    pub fn calibration(&self) -> &[CalibrationPoint] {
        &self.calibration
    }

    /// The score threshold for `target_precision`.
    ///
    /// - From the lowest to the highest calibrated precision: the threshold that served it on the
    ///   held-out pairs, interpolated linearly between calibrated points.
    /// - Above the highest calibrated precision, up to 1: beyond what the held-out pairs can
    ///   measure (see [`HitPolicy::is_calibrated`]). The threshold rises linearly from the highest
    ///   calibrated threshold to the highest score there is (1) at target 1, so a stricter target
    ///   never serves more candidates and 1 serves (almost) none. The precision reached there is
    ///   not measured, and on the labels the policy was fitted on it is no higher than the
    ///   highest calibrated one (BENCHMARKS.md, "Semantic cache quality").
    /// - Below the lowest calibrated precision, above 1, or not a number: an error naming it.
    pub fn threshold_for(&self, target_precision: f32) -> Result<f32, PolicyError> {
        let (Some(lowest), Some(highest)) = (self.calibration.first(), self.calibration.last()) else {
            return Err(PolicyError::PrecisionOutOfRange { requested: target_precision, lowest: 0.0, highest: 0.0 });
        };
        if !(lowest.precision..=1.0).contains(&target_precision) {
            return Err(PolicyError::PrecisionOutOfRange {
                requested: target_precision,
                lowest: lowest.precision,
                highest: highest.precision,
            });
        }
        if target_precision > highest.precision {
            let fraction = (target_precision - highest.precision) / (1.0 - highest.precision);
            let top = TOP_SCORE.max(highest.threshold);
            return Ok(highest.threshold + fraction * (top - highest.threshold));
        }
        let mut threshold = lowest.threshold;
        for pair in self.calibration.windows(2) {
            let (below, above) = (pair[0], pair[1]);
            if target_precision >= below.precision && target_precision <= above.precision {
                let fraction = (target_precision - below.precision) / (above.precision - below.precision);
                threshold = below.threshold + fraction * (above.threshold - below.threshold);
                break;
            }
        }
        Ok(threshold)
    }

    /// Whether `target_precision` lies within the calibration table, i.e. its threshold served
    /// that precision on the held-out pairs; above the table [`HitPolicy::threshold_for`]
    /// extrapolates.
    pub fn is_calibrated(&self, target_precision: f32) -> bool {
        match (self.calibration.first(), self.calibration.last()) {
            (Some(lowest), Some(highest)) => (lowest.precision..=highest.precision).contains(&target_precision),
            _ => false,
        }
    }

    /// How likely the candidate asks the same question as the query; higher is more likely. The
    /// baseline returns the cosine; the verifier a value in `[0, 1]`, and 0 below the loose floor.
    /// Vectors are the embedder's unit-length sentence vectors.
    pub fn score(&self, query_text: &str, query_vector: &[f32], candidate_text: &str, candidate_vector: &[f32]) -> f32 {
        let similarity = crate::embed::pooling::cosine(query_vector, candidate_vector);
        match &self.scorer {
            Scorer::Cosine => similarity,
            Scorer::Verifier(parameters) => {
                if similarity < self.loose_similarity || query_vector.len() != parameters.dimensions {
                    return 0.0;
                }
                let features = pair_features(query_text, query_vector, candidate_text, candidate_vector);
                // Different numbers on the two sides ("freight number 842300081" against
                // "freight number 890025528") are never the same question, however close the
                // vectors and the rest of the words: the fitted weights alone let such pairs
                // through when everything else matches.
                if features[2 * parameters.dimensions + 1 + NUMBER_MISMATCH] > 0.5 {
                    return 0.0;
                }
                let logit = forward(&parameters.layers, &features) + parameters.cosine_weight * cosine_logit(similarity);
                1.0 / (1.0 + (-logit).exp())
            }
        }
    }
}

/// Cosines above this count as this much in [`cosine_logit`]. Above about 0.995 a higher cosine
/// no longer means a likelier duplicate: on the train split's 36,626 pairs (which the cosine is not
/// fitted on) 94.8 % of the pairs in [0.990, 0.995) are duplicates, 92.8 % in [0.995, 0.998) and
/// 85.7 % of those at 1.0, near-identical texts the labels often call different. Uncapped, the
/// cosine's logit would rank those above every other pair.
const COSINE_LOGIT_CAP: f32 = 0.995;

/// Cosines below this count as this much in [`cosine_logit`] (the loose floor is far above it).
const COSINE_LOGIT_FLOOR: f32 = 1e-6;

/// `ln(c / (1 − c))` of the cosine `c` clamped to [`COSINE_LOGIT_FLOOR`]..=[`COSINE_LOGIT_CAP`]:
/// the cosine's term of the verifier's logit (times [`PolicyParameters::cosine_weight`]).
pub fn cosine_logit(similarity: f32) -> f32 {
    let similarity = similarity.clamp(COSINE_LOGIT_FLOOR, COSINE_LOGIT_CAP);
    (similarity / (1.0 - similarity)).ln()
}

/// Length of [`pair_features`] for `dimensions`-long vectors.
pub fn feature_count(dimensions: usize) -> usize {
    2 * dimensions + 1 + LEXICAL_FEATURES
}

/// The verifier's input for a pair: `u ⊙ v`, `|u − v|`, the cosine, then [`lexical_features`].
/// Symmetric in the two sides.
pub fn pair_features(left_text: &str, left_vector: &[f32], right_text: &str, right_vector: &[f32]) -> Vec<f32> {
    let dimensions = left_vector.len().min(right_vector.len());
    let mut features = Vec::with_capacity(feature_count(dimensions));
    features.extend(left_vector.iter().zip(right_vector).map(|(left, right)| left * right));
    features.extend(left_vector.iter().zip(right_vector).map(|(left, right)| (left - right).abs()));
    features.push(crate::embed::pooling::cosine(left_vector, right_vector));
    features.extend_from_slice(&lexical_features(left_text, right_text));
    features
}

/// The dense layers with ReLU between them; the last layer's single output.
fn forward(layers: &[DenseLayer], features: &[f32]) -> f32 {
    let mut input = features.to_vec();
    let mut output = Vec::new();
    for (position, layer) in layers.iter().enumerate() {
        layer.apply(&input, &mut output);
        if position + 1 < layers.len() {
            for value in &mut output {
                *value = value.max(0.0);
            }
        }
        std::mem::swap(&mut input, &mut output);
    }
    input.first().copied().unwrap_or(0.0)
}

/// A text cut into words: lowercased, split at anything but letters, digits and inner apostrophes,
/// and the words that looked like names (capitalised, not the first word), sorted and distinct.
#[derive(Debug, Default)]
struct Words {
    lowercase: Vec<String>,
    capitalised: Vec<String>,
}

fn words(text: &str) -> Words {
    let mut result = Words::default();
    let pieces = text.split(|character: char| !(character.is_alphanumeric() || character == '\''));
    for raw in pieces {
        let word = raw.trim_matches('\'');
        if word.is_empty() {
            continue;
        }
        let lowercase = word.to_lowercase();
        let starts_upper = word.chars().next().is_some_and(char::is_uppercase);
        if !result.lowercase.is_empty() && starts_upper && !is_stop_word(&lowercase) {
            result.capitalised.push(lowercase.clone());
        }
        result.lowercase.push(lowercase);
    }
    result.capitalised.sort_unstable();
    result.capitalised.dedup();
    result
}

fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.binary_search(&word).is_ok()
}

fn is_number(word: &str) -> bool {
    word.chars().any(|character| character.is_ascii_digit())
}

fn is_negation(word: &str) -> bool {
    NEGATIONS.contains(&word) || word.ends_with("n't")
}

/// The distinct items, sorted: a set that [`overlap`] walks without hashing.
fn sorted_set<T: Ord>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut set: Vec<T> = items.into_iter().collect();
    set.sort_unstable();
    set.dedup();
    set
}

/// `|A ∩ B|` of two sorted sets.
fn overlap<T: Ord>(left: &[T], right: &[T]) -> usize {
    let (mut left_position, mut right_position, mut shared) = (0, 0, 0);
    while let (Some(left_item), Some(right_item)) = (left.get(left_position), right.get(right_position)) {
        match left_item.cmp(right_item) {
            std::cmp::Ordering::Less => left_position += 1,
            std::cmp::Ordering::Greater => right_position += 1,
            std::cmp::Ordering::Equal => {
                shared += 1;
                left_position += 1;
                right_position += 1;
            }
        }
    }
    shared
}

/// `|A ∩ B| / |A ∪ B|` of two sorted sets, 1 when both are empty.
fn jaccard<T: Ord>(left: &[T], right: &[T]) -> f32 {
    let shared = overlap(left, right);
    let union = left.len() + right.len() - shared;
    if union == 0 { 1.0 } else { shared as f32 / union as f32 }
}

/// Character trigrams of the lowercased text without whitespace, as a sorted set.
fn character_trigrams(text: &str) -> Vec<[char; 3]> {
    let characters: Vec<char> = text.chars().filter(|character| !character.is_whitespace()).flat_map(char::to_lowercase).collect();
    sorted_set(characters.windows(3).map(|window| [window[0], window[1], window[2]]))
}

/// Adjacent word pairs: sensitive to order ("benzene into toluene" against "toluene into benzene").
fn word_bigrams(words: &Words) -> Vec<(&str, &str)> {
    sorted_set(words.lowercase.windows(2).map(|window| (window[0].as_str(), window[1].as_str())))
}

/// The words of a sorted set that are neither stop words nor negations.
fn content_words<'text>(set: &[&'text str]) -> Vec<&'text str> {
    set.iter().copied().filter(|word| !is_stop_word(word) && !is_negation(word)).collect()
}

/// The first question word of a text ("" without one).
fn question_word(words: &Words) -> &str {
    words.lowercase.iter().find(|word| QUESTION_WORDS.contains(&word.as_str())).map_or("", String::as_str)
}

/// The words of a sorted set holding a digit.
fn number_words<'text>(set: &[&'text str]) -> Vec<&'text str> {
    set.iter().copied().filter(|word| is_number(word)).collect()
}

/// The lexical features of a pair of questions, named by [`LEXICAL_FEATURE_NAMES`]; symmetric in
/// the two sides, each in `[0, 1]`.
pub fn lexical_features(left_text: &str, right_text: &str) -> [f32; LEXICAL_FEATURES] {
    let (left, right) = (words(left_text), words(right_text));
    let left_set = sorted_set(left.lowercase.iter().map(String::as_str));
    let right_set = sorted_set(right.lowercase.iter().map(String::as_str));
    let (left_content, right_content) = (content_words(&left_set), content_words(&right_set));
    let (left_numbers, right_numbers) = (number_words(&left_set), number_words(&right_set));
    let negations = |words: &Words| words.lowercase.iter().filter(|word| is_negation(word)).count() % 2;
    let shared_content = overlap(&left_content, &right_content);
    let left_only = left_content.len() - shared_content;
    let right_only = right_content.len() - shared_content;
    let (left_length, right_length) = (left.lowercase.len() as f32, right.lowercase.len() as f32);
    let flag = |condition: bool| if condition { 1.0 } else { 0.0 };
    [
        jaccard(&left_set, &right_set),
        jaccard(&left_content, &right_content),
        jaccard(&character_trigrams(left_text), &character_trigrams(right_text)),
        jaccard(&word_bigrams(&left), &word_bigrams(&right)),
        flag(left.lowercase == right.lowercase),
        flag(!left_numbers.is_empty() && !right_numbers.is_empty() && left_numbers != right_numbers),
        flag(left_numbers.is_empty() != right_numbers.is_empty()),
        flag(negations(&left) != negations(&right)),
        left_only.min(right_only).min(8) as f32 / 8.0,
        left_only.max(right_only).min(8) as f32 / 8.0,
        flag(left.capitalised != right.capitalised),
        if left_length.max(right_length) > 0.0 { left_length.min(right_length) / left_length.max(right_length) } else { 1.0 },
        flag(question_word(&left) != question_word(&right)),
        ((left_length + right_length) / 2.0).min(40.0) / 40.0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(name: &str, left: &str, right: &str) -> f32 {
        let position = LEXICAL_FEATURE_NAMES.iter().position(|known| *known == name).unwrap();
        lexical_features(left, right)[position]
    }

    #[test]
    fn number_mismatch_is_flagged_from_text() {
        assert_eq!(feature("number_mismatch", "Is 5 a prime?", "Is 7 a prime?"), 1.0);
        assert_eq!(feature("number_mismatch", "Is 5 a prime?", "Is 5 prime?"), 0.0);
        assert_eq!(feature("number_on_one_side", "Is 5 a prime?", "Is five a prime?"), 1.0);
        assert_eq!(feature("number_mismatch", "Is 5 a prime?", "Is five a prime?"), 0.0);
    }

    #[test]
    fn negation_mismatch_is_flagged_from_text() {
        assert_eq!(feature("negation_mismatch", "Is coffee healthy?", "Isn't coffee healthy?"), 1.0);
        assert_eq!(feature("negation_mismatch", "Why is coffee not healthy?", "Why isn't coffee healthy?"), 0.0);
        assert_eq!(feature("negation_mismatch", "Is coffee healthy?", "Is tea healthy?"), 0.0);
    }

    #[test]
    fn differing_content_words_and_names_are_counted() {
        let left = "How do I learn Python?";
        let right = "How do I learn Java?";
        assert_eq!(feature("more_unshared_content_words", left, right), 1.0 / 8.0);
        assert_eq!(feature("capitalised_word_mismatch", left, right), 1.0);
        assert_eq!(feature("capitalised_word_mismatch", left, "how do i learn Python"), 0.0);
        assert_eq!(feature("content_word_jaccard", left, "How can I learn Python?"), 1.0);
        assert_eq!(feature("question_word_mismatch", left, "Why do I learn Python?"), 1.0);
    }

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(is_stop_word("the") && is_stop_word("why") && !is_stop_word("python"));
    }

    #[test]
    fn word_order_and_identical_wording_are_seen() {
        let (left, right) = ("How do you convert benzene into toluene?", "How do you convert toluene into benzene?");
        assert_eq!(feature("word_jaccard", left, right), 1.0);
        assert!(feature("word_bigram_jaccard", left, right) < 0.5);
        assert_eq!(feature("same_normalised_text", "What is love?", "what is love"), 1.0);
        assert_eq!(feature("same_normalised_text", "What is love?", "What was love?"), 0.0);
    }

    #[test]
    fn lexical_features_are_symmetric_and_bounded() {
        let (left, right) = ("What's the 2nd-best way to learn C++ in 2024?", "Why shouldn't I learn Rust?");
        let forward = lexical_features(left, right);
        assert_eq!(forward, lexical_features(right, left));
        assert!(forward.iter().all(|value| (0.0..=1.0).contains(value)), "{forward:?}");
    }

    #[test]
    fn the_shipped_parameters_load() {
        let policy = HitPolicy::shipped().unwrap();
        assert!(policy.parameters().is_some());
        assert!(policy.loose_similarity() > 0.0 && policy.loose_similarity() < 1.0);
        assert!(!policy.calibration().is_empty());
    }

    #[test]
    fn threshold_for_rejects_out_of_range_and_ascends() {
        for policy in [HitPolicy::shipped().unwrap(), HitPolicy::cosine()] {
            let error = policy.threshold_for(1.5).unwrap_err();
            assert!(error.to_string().contains("1.5"), "{error}");
            assert!(policy.threshold_for(0.2).is_err());
            assert!(policy.threshold_for(f32::NAN).is_err());
            let (at_80, at_90) = (policy.threshold_for(0.8).unwrap(), policy.threshold_for(0.9).unwrap());
            assert!(at_80 < at_90, "{at_80} < {at_90}");
            let at_85 = policy.threshold_for(0.85).unwrap();
            assert!(at_80 <= at_85 && at_85 <= at_90);
        }
    }

    #[test]
    fn targets_above_the_table_get_stricter_thresholds_up_to_the_top_score() {
        for policy in [HitPolicy::shipped().unwrap(), HitPolicy::cosine()] {
            let highest = *policy.calibration().last().unwrap();
            assert!(highest.precision < 0.99, "the labels do not support 0.99: {highest:?}");
            assert!(policy.is_calibrated(highest.precision) && !policy.is_calibrated(0.99));
            assert_eq!(policy.threshold_for(highest.precision).unwrap(), highest.threshold);
            let mut previous = highest.threshold;
            for target in [highest.precision + 0.005, 0.98, 0.99, 0.999] {
                let threshold = policy.threshold_for(target).unwrap();
                assert!(threshold > previous && threshold < 1.0, "{target}: {threshold} after {previous}");
                previous = threshold;
            }
            assert_eq!(policy.threshold_for(1.0).unwrap(), 1.0);
        }
    }

    #[test]
    fn the_extrapolation_is_linear_from_the_last_calibrated_point() {
        let mut parameters = HitPolicy::shipped().unwrap().parameters().unwrap().clone();
        parameters.calibration = vec![
            CalibrationPoint { precision: 0.8, threshold: 0.6, recall: 0.5 },
            CalibrationPoint { precision: 0.9, threshold: 0.8, recall: 0.2 },
        ];
        let policy = HitPolicy::from_parameters(parameters).unwrap();
        assert!((policy.threshold_for(0.85).unwrap() - 0.7).abs() < 1e-6);
        assert!((policy.threshold_for(0.95).unwrap() - 0.9).abs() < 1e-6);
        assert!(!policy.is_calibrated(0.95) && policy.is_calibrated(0.85));
    }

    #[test]
    fn the_lane_dot_product_matches_the_plain_sum() {
        let left: Vec<f32> = (0..781).map(|index| (index as f32 * 0.37).sin()).collect();
        let right: Vec<f32> = (0..781).map(|index| (index as f32 * 0.11).cos()).collect();
        let plain: f64 = left.iter().zip(&right).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
        assert!((f64::from(dot(&left, &right)) - plain).abs() < 1e-3);
    }

    #[test]
    fn the_cosine_policy_scores_the_cosine() {
        let policy = HitPolicy::cosine();
        let score = policy.score("a", &[1.0, 0.0], "b", &[0.6, 0.8]);
        assert!((score - 0.6).abs() < 1e-6);
    }

    #[test]
    fn candidates_below_the_loose_floor_score_zero() {
        let policy = HitPolicy::shipped().unwrap();
        let dimensions = policy.parameters().unwrap().dimensions;
        let mut query = vec![0.0; dimensions];
        let mut candidate = vec![0.0; dimensions];
        query[0] = 1.0;
        candidate[1] = 1.0;
        assert_eq!(policy.score("How do I learn Python?", &query, "How do I learn Python?", &candidate), 0.0);
    }

    #[test]
    fn different_numbers_are_never_the_same_question() {
        let policy = HitPolicy::shipped().unwrap();
        let dimensions = policy.parameters().unwrap().dimensions;
        let vector: Vec<f32> = (0..dimensions).map(|index| if index == 0 { 1.0 } else { 0.0 }).collect();
        let (left, right) = ("Which rail yard handles freight number 842300081?", "Which rail yard handles freight number 890025528?");
        assert_eq!(policy.score(left, &vector, right, &vector), 0.0, "identical vectors, different numbers");
        assert!(policy.score(left, &vector, left, &vector) > 0.0);
        assert_eq!(LEXICAL_FEATURE_NAMES[NUMBER_MISMATCH], "number_mismatch");
    }

    #[test]
    fn the_cosine_logit_is_capped_where_the_cosine_stops_informing() {
        assert!(cosine_logit(0.5).abs() < 1e-6);
        assert!(cosine_logit(0.9) < cosine_logit(0.99));
        assert_eq!(cosine_logit(0.999), cosine_logit(COSINE_LOGIT_CAP));
        assert_eq!(cosine_logit(1.0), cosine_logit(COSINE_LOGIT_CAP));
        assert!(cosine_logit(-0.5).is_finite());
    }

    #[test]
    fn invalid_parameters_are_refused_with_a_reason() {
        let mut parameters = HitPolicy::shipped().unwrap().parameters().unwrap().clone();
        parameters.layers[0].bias.pop();
        let error = HitPolicy::from_parameters(parameters).unwrap_err();
        assert!(error.to_string().contains("layer 0"), "{error}");
        let mut parameters = HitPolicy::shipped().unwrap().parameters().unwrap().clone();
        parameters.cosine_weight = -1.0;
        assert!(HitPolicy::from_parameters(parameters).unwrap_err().to_string().contains("cosine weight"));
        assert!(HitPolicy::from_json("{}").is_err());
    }
}
