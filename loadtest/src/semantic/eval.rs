//! Evaluating a hit policy against plain cosine on the test split: for each test pair on its own,
//! `a` is stored in a vector index and `b` looked up; the candidate's cosine (from the index) is
//! the baseline's score, and the policy scores the candidate with both texts and vectors.

use anyhow::Context as _;
use switchyard_actors::cache::semantic::index::VectorIndex;
use switchyard_actors::cache::semantic::policy::HitPolicy;

use crate::semantic::embeddings::TextVectors;
use crate::semantic::metrics::{self, OperatingPoint};
use crate::semantic::pairs::PairSet;

/// Precision floors reported.
pub const REPORTED_PRECISIONS: [f64; 4] = [0.8, 0.9, 0.95, 0.99];

/// Target precisions whose calibrated thresholds are applied to the test pairs.
pub const CALIBRATED_TARGETS: [f32; 4] = [0.8, 0.9, 0.95, 0.99];

/// The figures of one scorer.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ScorerFigures {
    /// Highest recall at precision ≥ 0.8.
    pub recall_at_p80: f64,
    /// Highest recall at precision ≥ 0.9.
    pub recall_at_p90: f64,
    /// Highest recall at precision ≥ 0.95.
    pub recall_at_p95: f64,
    /// Highest recall at precision ≥ 0.99.
    pub recall_at_p99: f64,
    /// Best F1 over thresholds.
    pub best_f1: f64,
    /// Area under the precision-recall curve.
    pub average_precision: f64,
}

impl ScorerFigures {
    fn measure(scored: &[(f32, bool)]) -> Self {
        let points = metrics::operating_points(scored);
        Self {
            recall_at_p80: metrics::recall_at_precision(&points, REPORTED_PRECISIONS[0]),
            recall_at_p90: metrics::recall_at_precision(&points, REPORTED_PRECISIONS[1]),
            recall_at_p95: metrics::recall_at_precision(&points, REPORTED_PRECISIONS[2]),
            recall_at_p99: metrics::recall_at_precision(&points, REPORTED_PRECISIONS[3]),
            best_f1: metrics::best_f1(&points).0,
            average_precision: metrics::average_precision(&points),
        }
    }
}

/// What the policy's own thresholds (from its calibration) served on the test pairs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CalibratedFigures {
    /// The target precision given to `threshold_for`.
    pub target_precision: f64,
    /// The threshold it mapped to.
    pub threshold: f32,
    /// Whether the target lies within the calibration table (otherwise the threshold is
    /// extrapolated, see `HitPolicy::threshold_for`).
    pub calibrated: bool,
    /// Precision measured on the test pairs at that threshold.
    pub precision: f64,
    /// Recall measured on the test pairs at that threshold.
    pub recall: f64,
    /// Pairs served at that threshold.
    pub served: usize,
}

impl CalibratedFigures {
    /// `policy`'s threshold for each of [`CALIBRATED_TARGETS`] it accepts, applied to `scored`.
    fn measure(policy: &HitPolicy, scored: &[(f32, bool)]) -> Vec<Self> {
        CALIBRATED_TARGETS
            .into_iter()
            .filter_map(|target| {
                let threshold = policy.threshold_for(target).ok()?;
                let OperatingPoint {
                    precision, recall, ..
                } = metrics::at_threshold(scored, threshold);
                Some(CalibratedFigures {
                    target_precision: f64::from(target),
                    threshold,
                    calibrated: policy.is_calibrated(target),
                    precision,
                    recall,
                    served: scored
                        .iter()
                        .filter(|(score, _)| *score >= threshold)
                        .count(),
                })
            })
            .collect()
    }
}

/// The evaluation's result; its JSON is the command's last line.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EvalReport {
    /// Test pairs evaluated.
    pub pairs: usize,
    /// Of which duplicates.
    pub duplicates: usize,
    /// The policy's figures.
    pub recall_at_p80: f64,
    /// See `recall_at_p80`.
    pub recall_at_p90: f64,
    /// See `recall_at_p80`.
    pub recall_at_p95: f64,
    /// See `recall_at_p80`.
    pub recall_at_p99: f64,
    /// See `recall_at_p80`.
    pub best_f1: f64,
    /// See `recall_at_p80`.
    pub average_precision: f64,
    /// Plain cosine's figures.
    pub baseline_recall_at_p80: f64,
    /// See `baseline_recall_at_p80`.
    pub baseline_recall_at_p90: f64,
    /// See `baseline_recall_at_p80`.
    pub baseline_recall_at_p95: f64,
    /// See `baseline_recall_at_p80`.
    pub baseline_recall_at_p99: f64,
    /// See `baseline_recall_at_p80`.
    pub baseline_best_f1: f64,
    /// See `baseline_recall_at_p80`.
    pub baseline_average_precision: f64,
    /// Test duplicates whose cosine fell below the policy's loose floor (never hits).
    pub duplicates_below_loose_similarity: usize,
    /// The policy's thresholds for [`CALIBRATED_TARGETS`] applied to the test pairs.
    pub calibrated: Vec<CalibratedFigures>,
    /// Plain cosine's (`HitPolicy::cosine`) thresholds for the same targets, applied to the
    /// test pairs' cosines.
    pub baseline_calibrated: Vec<CalibratedFigures>,
    /// Mean time of one `HitPolicy::score` call, in microseconds.
    pub score_microseconds: f64,
}

impl EvalReport {
    /// Human-readable lines, before the JSON line.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "test pairs: {} ({} duplicates)",
                self.pairs, self.duplicates
            ),
            format!(
                "policy:   recall@p0.80 {:.3}  recall@p0.90 {:.3}  recall@p0.95 {:.3}  recall@p0.99 {:.3}  best F1 {:.3}  AP {:.3}",
                self.recall_at_p80,
                self.recall_at_p90,
                self.recall_at_p95,
                self.recall_at_p99,
                self.best_f1,
                self.average_precision
            ),
            format!(
                "baseline: recall@p0.80 {:.3}  recall@p0.90 {:.3}  recall@p0.95 {:.3}  recall@p0.99 {:.3}  best F1 {:.3}  AP {:.3}  (plain cosine)",
                self.baseline_recall_at_p80,
                self.baseline_recall_at_p90,
                self.baseline_recall_at_p95,
                self.baseline_recall_at_p99,
                self.baseline_best_f1,
                self.baseline_average_precision
            ),
            format!(
                "duplicates below the loose cosine floor: {}",
                self.duplicates_below_loose_similarity
            ),
        ];
        for (scorer, figures) in [
            ("policy", &self.calibrated),
            ("cosine", &self.baseline_calibrated),
        ] {
            for calibrated in figures {
                lines.push(format!(
                    "{scorer} threshold_for({:.2}) = {:.4}{}: test precision {:.3}, recall {:.3}, {} served",
                    calibrated.target_precision,
                    calibrated.threshold,
                    if calibrated.calibrated { "" } else { " (extrapolated)" },
                    calibrated.precision,
                    calibrated.recall,
                    calibrated.served
                ));
            }
        }
        lines.push(format!("score: {:.1} µs a call", self.score_microseconds));
        lines
    }
}

/// Scores every pair of `indices` (each on its own: `a` stored, `b` looked up) with `policy` and
/// with the index's cosine, and measures both.
pub fn evaluate(
    set: &PairSet,
    vectors: &TextVectors,
    indices: &[usize],
    policy: &HitPolicy,
) -> anyhow::Result<EvalReport> {
    let mut index =
        VectorIndex::new(vectors.dimensions).context("failed to create a vector index")?;
    let mut policy_scored = Vec::with_capacity(indices.len());
    let mut cosine_scored = Vec::with_capacity(indices.len());
    let mut duplicates_below_loose_similarity = 0;
    let mut scoring_time = std::time::Duration::ZERO;
    for (key, &pair_index) in indices.iter().enumerate() {
        let pair = &set.pairs[pair_index];
        let (a, b) = set.text_indices[pair_index];
        let key = key as u64;
        index
            .add(key, vectors.vector(a))
            .context("failed to store a question")?;
        let found = index
            .search(vectors.vector(b), 1)
            .context("failed to look a question up")?;
        index.remove(key).context("failed to remove a question")?;
        let similarity = found.first().map_or(-1.0, |(_, similarity)| *similarity);
        let started = std::time::Instant::now();
        let score = policy.score(&pair.b, vectors.vector(b), &pair.a, vectors.vector(a));
        scoring_time += started.elapsed();
        if pair.duplicate && similarity < policy.loose_similarity() {
            duplicates_below_loose_similarity += 1;
        }
        policy_scored.push((score, pair.duplicate));
        cosine_scored.push((similarity, pair.duplicate));
    }
    let policy_figures = ScorerFigures::measure(&policy_scored);
    let baseline = ScorerFigures::measure(&cosine_scored);
    let calibrated = CalibratedFigures::measure(policy, &policy_scored);
    let baseline_calibrated = CalibratedFigures::measure(&HitPolicy::cosine(), &cosine_scored);
    Ok(EvalReport {
        pairs: indices.len(),
        duplicates: policy_scored
            .iter()
            .filter(|(_, duplicate)| *duplicate)
            .count(),
        recall_at_p80: policy_figures.recall_at_p80,
        recall_at_p90: policy_figures.recall_at_p90,
        recall_at_p95: policy_figures.recall_at_p95,
        recall_at_p99: policy_figures.recall_at_p99,
        best_f1: policy_figures.best_f1,
        average_precision: policy_figures.average_precision,
        baseline_recall_at_p80: baseline.recall_at_p80,
        baseline_recall_at_p90: baseline.recall_at_p90,
        baseline_recall_at_p95: baseline.recall_at_p95,
        baseline_recall_at_p99: baseline.recall_at_p99,
        baseline_best_f1: baseline.best_f1,
        baseline_average_precision: baseline.average_precision,
        duplicates_below_loose_similarity,
        calibrated,
        baseline_calibrated,
        score_microseconds: scoring_time.as_secs_f64() * 1e6 / indices.len().max(1) as f64,
    })
}
