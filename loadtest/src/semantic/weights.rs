//! The encoder's int8 weights against its f32 weights: how far they move the sentence vectors
//! (cosine between the two vectors of each text) and the semantic cache's decisions (pairs whose
//! hit or miss at a calibrated threshold differs), for the policy and for plain cosine.

use switchyard_actors::cache::semantic::policy::HitPolicy;
use switchyard_actors::embed::pooling::cosine;

use crate::semantic::embeddings::TextVectors;
use crate::semantic::eval::CALIBRATED_TARGETS;
use crate::semantic::pairs::PairSet;

/// How the two sets of vectors differ.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WeightsComparison {
    /// Texts compared.
    pub texts: usize,
    /// Lowest cosine between a text's f32 and int8 vectors.
    pub min_cosine: f64,
    /// Mean of those cosines.
    pub mean_cosine: f64,
    /// The cosine 0.1 % of the texts fall below.
    pub p001_cosine: f64,
    /// Pairs whose decisions are compared.
    pub pairs: usize,
    /// Decisions per target precision, for the policy.
    pub policy: Vec<DecisionFlips>,
    /// Decisions per target precision, for plain cosine (`HitPolicy::cosine`).
    pub cosine: Vec<DecisionFlips>,
}

/// Hits and flips at one threshold.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DecisionFlips {
    /// The target precision given to `threshold_for`.
    pub target_precision: f64,
    /// The threshold it mapped to.
    pub threshold: f32,
    /// Pairs served with f32 vectors.
    pub hits_f32: usize,
    /// Pairs served with int8 vectors.
    pub hits_int8: usize,
    /// Served with f32, not with int8.
    pub lost: usize,
    /// Served with int8, not with f32.
    pub gained: usize,
    /// Of the flipped pairs, how many are duplicates.
    pub flipped_duplicates: usize,
}

/// Compares `float` and `int8` over `texts` (indices into `set.texts`) and over the pairs
/// `pairs` (indices into `set.pairs`, `a` the candidate, `b` the query, as the evaluation does).
pub fn compare(set: &PairSet, float: &TextVectors, int8: &TextVectors, texts: &[usize], pairs: &[usize], policy: &HitPolicy) -> WeightsComparison {
    let mut cosines: Vec<f64> = texts.iter().map(|&text| f64::from(cosine(float.vector(text), int8.vector(text)))).collect();
    cosines.sort_by(f64::total_cmp);
    let mean_cosine = cosines.iter().sum::<f64>() / cosines.len().max(1) as f64;
    let p001_cosine = cosines.get(cosines.len() / 1000).copied().unwrap_or(1.0);
    let scores = |policy: &HitPolicy, vectors: &TextVectors| -> Vec<f32> {
        pairs
            .iter()
            .map(|&pair_index| {
                let pair = &set.pairs[pair_index];
                let (a, b) = set.text_indices[pair_index];
                policy.score(&pair.b, vectors.vector(b), &pair.a, vectors.vector(a))
            })
            .collect()
    };
    let flips = |policy: &HitPolicy| -> Vec<DecisionFlips> {
        let (float_scores, int8_scores) = (scores(policy, float), scores(policy, int8));
        CALIBRATED_TARGETS
            .into_iter()
            .filter_map(|target| {
                let threshold = policy.threshold_for(target).ok()?;
                let mut figures = DecisionFlips {
                    target_precision: f64::from(target),
                    threshold,
                    hits_f32: 0,
                    hits_int8: 0,
                    lost: 0,
                    gained: 0,
                    flipped_duplicates: 0,
                };
                for ((float_score, int8_score), &pair_index) in float_scores.iter().zip(&int8_scores).zip(pairs) {
                    let (float_hit, int8_hit) = (*float_score >= threshold, *int8_score >= threshold);
                    figures.hits_f32 += usize::from(float_hit);
                    figures.hits_int8 += usize::from(int8_hit);
                    figures.lost += usize::from(float_hit && !int8_hit);
                    figures.gained += usize::from(int8_hit && !float_hit);
                    figures.flipped_duplicates += usize::from(float_hit != int8_hit && set.pairs[pair_index].duplicate);
                }
                Some(figures)
            })
            .collect()
    };
    WeightsComparison {
        texts: texts.len(),
        min_cosine: cosines.first().copied().unwrap_or(1.0),
        mean_cosine,
        p001_cosine,
        pairs: pairs.len(),
        policy: flips(policy),
        cosine: flips(&HitPolicy::cosine()),
    }
}

impl WeightsComparison {
    /// Human-readable lines, before the JSON line.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "f32 vs int8 vectors of {} texts: cosine min {:.5}, 0.1 % below {:.5}, mean {:.6}",
            self.texts, self.min_cosine, self.p001_cosine, self.mean_cosine
        )];
        for (name, rows) in [("policy", &self.policy), ("cosine", &self.cosine)] {
            for row in rows {
                lines.push(format!(
                    "{name} at p{:.2} (threshold {:.4}) over {} pairs: {} hits f32, {} int8; {} lost, {} gained ({} of the flips duplicates)",
                    row.target_precision, row.threshold, self.pairs, row.hits_f32, row.hits_int8, row.lost, row.gained, row.flipped_duplicates
                ));
            }
        }
        lines
    }
}
