//! The semantic cache's hit decision: given a lookup and a candidate that passed the index's loose
//! cosine floor, a score, and the score a route must reach for its target precision.

use thiserror::Error;

/// A target precision the policy cannot map to a threshold.
#[derive(Clone, Debug, Error, PartialEq)]
#[error("target precision {0} is outside the calibrated range {1}..={2}")]
pub struct PolicyError(pub f32, pub f32, pub f32);

/// Target precision → score threshold, ascending in precision.
const COSINE_CALIBRATION: &[(f32, f32)] = &[(0.80, 0.90), (0.90, 0.95), (0.95, 0.97), (0.99, 0.99)];

/// The hit policy.
#[derive(Clone, Debug)]
pub struct HitPolicy {
    calibration: Vec<(f32, f32)>,
    loose_similarity: f32,
}

impl HitPolicy {
    /// The policy the node runs.
    pub fn shipped() -> Self {
        Self::cosine()
    }

    /// Plain cosine similarity against one threshold.
    pub fn cosine() -> Self {
        Self { calibration: COSINE_CALIBRATION.to_vec(), loose_similarity: 0.80 }
    }

    /// The cosine floor of the candidate search: nothing below it is ever a hit.
    pub fn loose_similarity(&self) -> f32 {
        self.loose_similarity
    }

    /// The (precision, threshold) points measured at fit time.
    pub fn calibration(&self) -> &[(f32, f32)] {
        &self.calibration
    }

    /// The score threshold that reaches `target_precision`, interpolated between calibrated points.
    pub fn threshold_for(&self, target_precision: f32) -> Result<f32, PolicyError> {
        let (low, high) = match (self.calibration.first(), self.calibration.last()) {
            (Some(first), Some(last)) => (*first, *last),
            _ => return Err(PolicyError(target_precision, 0.0, 0.0)),
        };
        if !(low.0..=high.0).contains(&target_precision) {
            return Err(PolicyError(target_precision, low.0, high.0));
        }
        for pair in self.calibration.windows(2) {
            let ((p0, t0), (p1, t1)) = (pair[0], pair[1]);
            if target_precision <= p1 {
                let share = if p1 > p0 { (target_precision - p0) / (p1 - p0) } else { 0.0 };
                return Ok(t0 + share * (t1 - t0));
            }
        }
        Ok(high.1)
    }

    /// How likely the candidate asks the same as the query; higher is more likely.
    pub fn score(&self, _query_text: &str, query_vector: &[f32], _candidate_text: &str, candidate_vector: &[f32]) -> f32 {
        query_vector.iter().zip(candidate_vector).map(|(a, b)| a * b).sum()
    }
}
