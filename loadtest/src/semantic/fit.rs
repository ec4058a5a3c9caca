//! Fitting the hit policy's verifier on the train split: features of every fit pair above the
//! loose cosine floor, a small network trained with AdamW on binary cross-entropy (candle), early
//! stopping on the validation pairs' average precision, then the weight of the cosine's own logit
//! beside the network's (a logistic regression on the validation pairs), then the calibration
//! table measured on the validation pairs with the parameters exactly as they ship
//! (standardisation folded into the first layer, weights rounded). [`cross_fit`] runs that fit
//! once per train fold and measures the table on every train pair instead.
//!
//! Everything random (initial weights, batch order) comes from one seeded generator, so the same
//! data, model and settings give the same parameters.

use anyhow::{Context as _, bail};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer as _, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use switchyard_actors::cache::semantic::policy::{
    DenseLayer, HitPolicy, LEXICAL_FEATURE_NAMES, PARAMETERS_FORMAT, PolicyParameters,
    cosine_logit, feature_count, pair_features,
};

use crate::semantic::embeddings::TextVectors;
use crate::semantic::metrics;
use crate::semantic::pairs::{LabelledPair, PairSet, SplitPart, TRAIN_FOLDS};

/// Share of the fit part's duplicates allowed below the loose cosine floor.
const DUPLICATES_BELOW_FLOOR: f64 = 0.005;
/// Target precisions of the calibration table.
const CALIBRATION_STEP: f64 = 0.01;
/// Lowest calibrated precision.
const CALIBRATION_LOWEST: f64 = 0.5;
/// A calibrated precision must be reached with at least this many validation duplicates served.
const CALIBRATION_MIN_DUPLICATES: usize = 25;
/// Significant digits kept of each shipped weight.
const SIGNIFICANT_DIGITS: i32 = 4;
/// Newton steps of the logistic regression that fits the cosine weight (it converges in a few).
const COSINE_WEIGHT_STEPS: usize = 25;

/// How to fit.
#[derive(Clone, Debug, PartialEq)]
pub struct FitSettings {
    /// Widths of the hidden layers; empty fits a logistic regression.
    pub hidden_layers: Vec<usize>,
    /// Most passes over the fit pairs.
    pub epochs: usize,
    /// Epochs without a better validation score before stopping.
    pub patience: usize,
    /// Pairs per optimiser step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seed of the initial weights and batch order (member `k` of an ensemble uses `seed + k`).
    pub seed: u64,
    /// Networks trained from different seeds whose mean logit is the score (merged into one).
    pub ensemble: usize,
    /// Name of the embedding model, recorded in the parameters.
    pub embedding_model: String,
}

impl Default for FitSettings {
    fn default() -> Self {
        Self {
            hidden_layers: vec![32],
            epochs: 60,
            patience: 8,
            batch_size: 128,
            learning_rate: 1e-3,
            weight_decay: 1e-2,
            seed: 7,
            ensemble: 1,
            embedding_model: "sentence-transformers/all-MiniLM-L6-v2".into(),
        }
    }
}

/// What a fit produced.
#[derive(Clone, Debug)]
pub struct FitOutcome {
    /// The parameters to ship.
    pub parameters: PolicyParameters,
    /// Fit pairs trained on (those above the floor).
    pub fit_pairs: usize,
    /// Validation pairs measured on.
    pub validation_pairs: usize,
    /// The epoch whose weights were kept (1-based).
    pub best_epoch: usize,
    /// Validation average precision of the kept weights (before rounding).
    pub validation_average_precision: f64,
    /// Validation recall at precision 0.8 and 0.9 of the shipped parameters.
    pub validation_recall_at_p80: f64,
    /// See `validation_recall_at_p80`.
    pub validation_recall_at_p90: f64,
    /// The same for plain cosine on the validation pairs.
    pub validation_cosine_recall_at_p80: f64,
    /// See `validation_cosine_recall_at_p80`.
    pub validation_cosine_recall_at_p90: f64,
    /// Plain cosine's calibration table on the same validation pairs (for `HitPolicy::cosine`).
    pub cosine_calibration: Vec<switchyard_actors::cache::semantic::policy::CalibrationPoint>,
    /// The most precise cut of the shipped scores on the validation pairs that serves at least
    /// the calibration's minimum of duplicates: how far the calibration table can reach.
    pub validation_ceiling: Option<metrics::Cut>,
    /// The same for plain cosine.
    pub validation_cosine_ceiling: Option<metrics::Cut>,
}

/// Features and labels of a set of pairs, row after row.
struct FeatureMatrix {
    rows: usize,
    columns: usize,
    values: Vec<f32>,
    labels: Vec<f32>,
}

impl FeatureMatrix {
    fn build(set: &PairSet, vectors: &TextVectors, indices: &[usize]) -> Self {
        let columns = feature_count(vectors.dimensions);
        let mut values = Vec::with_capacity(indices.len() * columns);
        let mut labels = Vec::with_capacity(indices.len());
        for &index in indices {
            let pair = &set.pairs[index];
            let (a, b) = set.text_indices[index];
            values.extend(pair_features(
                &pair.b,
                vectors.vector(b),
                &pair.a,
                vectors.vector(a),
            ));
            labels.push(if pair.duplicate { 1.0 } else { 0.0 });
        }
        Self {
            rows: indices.len(),
            columns,
            values,
            labels,
        }
    }
}

/// Fits the verifier on the fit part of `set` and calibrates it on the validation part. The test
/// part is not read.
pub fn fit(
    set: &PairSet,
    vectors: &TextVectors,
    settings: &FitSettings,
) -> anyhow::Result<FitOutcome> {
    let cosine_of = |index: usize| {
        let (a, b) = set.text_indices[index];
        switchyard_actors::embed::pooling::cosine(vectors.vector(a), vectors.vector(b))
    };
    let fit_all = set.indices_of(SplitPart::Fit);
    let validation = set.indices_of(SplitPart::Validation);
    if fit_all.is_empty() || validation.is_empty() {
        bail!(
            "the pairs file has {} fit and {} validation pairs: too few to fit",
            fit_all.len(),
            validation.len()
        );
    }
    let loose_similarity = loose_floor(
        fit_all
            .iter()
            .filter(|&&index| set.pairs[index].duplicate)
            .map(|&index| cosine_of(index))
            .collect(),
    );
    let fit_indices: Vec<usize> = fit_all
        .into_iter()
        .filter(|&index| cosine_of(index) >= loose_similarity)
        .collect();
    eprintln!(
        "loose cosine floor {loose_similarity:.2}: {} fit pairs above it, {} validation pairs",
        fit_indices.len(),
        validation.len()
    );
    let fit_matrix = FeatureMatrix::build(set, vectors, &fit_indices);
    let validation_matrix = FeatureMatrix::build(set, vectors, &validation);
    let (means, scales) = standardisation(&fit_matrix);

    let device = Device::Cpu;
    let fit_inputs = standardised_tensor(&fit_matrix, &means, &scales, &device)?;
    let fit_labels = Tensor::from_vec(fit_matrix.labels.clone(), (fit_matrix.rows, 1), &device)?;
    let validation_inputs = standardised_tensor(&validation_matrix, &means, &scales, &device)?;
    let validation_floor_mask: Vec<bool> = validation
        .iter()
        .map(|&index| cosine_of(index) >= loose_similarity)
        .collect();

    let data = TrainingData {
        fit_inputs: &fit_inputs,
        fit_labels: &fit_labels,
        fit_rows: fit_matrix.rows,
        columns: fit_matrix.columns,
        validation_inputs: &validation_inputs,
        validation_labels: &validation_matrix.labels,
        validation_floor_mask: &validation_floor_mask,
    };
    let mut members = Vec::new();
    for member in 0..settings.ensemble.max(1) {
        let seed = settings.seed.wrapping_add(member as u64);
        let trained = train_member(&data, settings, seed, &device)?;
        eprintln!(
            "member {member} (seed {seed}): best epoch {}, validation average precision {:.4}",
            trained.best_epoch, trained.average_precision
        );
        members.push(trained);
    }
    let best_epoch = members
        .iter()
        .map(|member| member.best_epoch)
        .max()
        .unwrap_or(0);
    let validation_average_precision = members
        .iter()
        .map(|member| member.average_precision)
        .sum::<f64>()
        / members.len().max(1) as f64;
    let weights = merge_members(members.into_iter().map(|member| member.weights).collect())?;

    let mut parameters = PolicyParameters {
        format: PARAMETERS_FORMAT,
        embedding_model: settings.embedding_model.clone(),
        dimensions: vectors.dimensions,
        description: format!(
            "verifier: {}, hidden layers {:?}, on [u*v, |u-v|, cosine, lexical features]; fitted by `switchyard-loadtest semantic-fit` on {} fit pairs (early stopping on {} validation pairs; latest best epoch {best_epoch}), seed {}",
            if settings.ensemble > 1 {
                format!("mean logit of {} MLPs merged into one", settings.ensemble)
            } else {
                "one MLP".to_owned()
            },
            settings.hidden_layers,
            fit_indices.len(),
            validation.len(),
            settings.seed
        ),
        loose_similarity,
        lexical_features: LEXICAL_FEATURE_NAMES
            .iter()
            .map(|name| (*name).to_owned())
            .collect(),
        layers: shipped_layers(weights, &means, &scales),
        cosine_weight: 0.0,
        calibration: Vec::new(),
    };

    // The cosine's weight beside the network's logit, by maximum likelihood on the validation
    // pairs the network scores (above the floor, not vetoed), with the layers as they ship.
    let network_only = provisional_policy(&parameters)?;
    let cosine_scored = cosine_scored_pairs(set, vectors, &validation);
    let stacked: Vec<([f32; 2], bool)> = scored_pairs(&network_only, set, vectors, &validation)
        .into_iter()
        .zip(&cosine_scored)
        .filter(|((score, _), _)| *score > 0.0 && *score < 1.0)
        .map(|((score, duplicate), (cosine, _))| {
            (
                [(score / (1.0 - score)).ln(), cosine_logit(*cosine)],
                duplicate,
            )
        })
        .collect();
    parameters.cosine_weight = round_significant(cosine_weight(&stacked)?);
    parameters.description.push_str(&format!(
        "; cosine weight {} fitted on the validation pairs",
        parameters.cosine_weight
    ));

    // Calibrate with the parameters exactly as they ship, scored as the request path scores.
    let provisional = provisional_policy(&parameters)?;
    let validation_scored = scored_pairs(&provisional, set, vectors, &validation);
    let mut outcome = FitOutcome {
        parameters,
        fit_pairs: fit_indices.len(),
        validation_pairs: validation.len(),
        best_epoch,
        validation_average_precision,
        validation_recall_at_p80: 0.0,
        validation_recall_at_p90: 0.0,
        validation_cosine_recall_at_p80: 0.0,
        validation_cosine_recall_at_p90: 0.0,
        cosine_calibration: Vec::new(),
        validation_ceiling: None,
        validation_cosine_ceiling: None,
    };
    outcome.measure_on(&validation_scored, &cosine_scored)?;
    Ok(outcome)
}

/// Fits once per train fold with that fold held out ([`PairSet::with_validation_fold`]), scores
/// each fold's pairs by the fit that held it out, and measures the calibration table and the
/// validation figures on all of them: five times the pairs of the validation part alone, all
/// scored by a model the same size as the shipped one that never saw them. The parameters are
/// those of the last fold, whose held-out fold is the validation part: the same network and
/// cosine weight as [`fit`] gives, with the calibration measured on the whole train split.
pub fn cross_fit(
    set: &PairSet,
    vectors: &TextVectors,
    settings: &FitSettings,
) -> anyhow::Result<FitOutcome> {
    let mut policy_scored = Vec::new();
    let mut cosine_scored = Vec::new();
    let mut last = None;
    for fold in 0..TRAIN_FOLDS {
        let fold_set = set.with_validation_fold(fold)?;
        eprintln!("train fold {} of {TRAIN_FOLDS} held out", fold + 1);
        let outcome = fit(&fold_set, vectors, settings)?;
        let held_out = fold_set.indices_of(SplitPart::Validation);
        let policy = provisional_policy(&outcome.parameters)?;
        policy_scored.extend(scored_pairs(&policy, &fold_set, vectors, &held_out));
        cosine_scored.extend(cosine_scored_pairs(&fold_set, vectors, &held_out));
        eprintln!(
            "train fold {}: cosine weight {}, {} pairs scored",
            fold + 1,
            outcome.parameters.cosine_weight,
            held_out.len()
        );
        last = Some(outcome);
    }
    let mut outcome = last.context("the train split has no folds")?;
    outcome.measure_on(&policy_scored, &cosine_scored)?;
    outcome.parameters.description.push_str(&format!(
        "; calibrated on all {} train pairs, each scored by the fit that held its fold out ({TRAIN_FOLDS} folds)",
        policy_scored.len()
    ));
    Ok(outcome)
}

impl FitOutcome {
    /// Measures the calibration table, the recall figures and the ceilings on held-out pairs
    /// scored by the policy and by plain cosine (parallel), and checks the parameters validate.
    fn measure_on(
        &mut self,
        policy_scored: &[(f32, bool)],
        cosine_scored: &[(f32, bool)],
    ) -> anyhow::Result<()> {
        let positives = policy_scored
            .iter()
            .filter(|(_, duplicate)| *duplicate)
            .count();
        let targets: Vec<f64> = (0..)
            .map(|step| CALIBRATION_LOWEST + f64::from(step) * CALIBRATION_STEP)
            .take_while(|target| *target <= 0.995)
            .map(|target| (target * 100.0).round() / 100.0)
            .collect();
        let policy_points = metrics::operating_points(policy_scored);
        let cosine_points = metrics::operating_points(cosine_scored);
        self.parameters.calibration = metrics::calibrate(
            &policy_points,
            &targets,
            positives,
            CALIBRATION_MIN_DUPLICATES,
        );
        HitPolicy::from_parameters(self.parameters.clone())
            .context("the fitted parameters do not validate")?;
        self.validation_pairs = policy_scored.len();
        self.validation_recall_at_p80 = metrics::recall_at_precision(&policy_points, 0.8);
        self.validation_recall_at_p90 = metrics::recall_at_precision(&policy_points, 0.9);
        self.validation_cosine_recall_at_p80 = metrics::recall_at_precision(&cosine_points, 0.8);
        self.validation_cosine_recall_at_p90 = metrics::recall_at_precision(&cosine_points, 0.9);
        self.cosine_calibration = metrics::calibrate(
            &cosine_points,
            &targets,
            positives,
            CALIBRATION_MIN_DUPLICATES,
        );
        self.validation_ceiling =
            metrics::precision_ceiling(&policy_points, positives, CALIBRATION_MIN_DUPLICATES);
        self.validation_cosine_ceiling =
            metrics::precision_ceiling(&cosine_points, positives, CALIBRATION_MIN_DUPLICATES);
        Ok(())
    }
}

/// `(score, duplicate)` of the pairs at `indices`, scored by `policy` as the request path scores
/// (the looked-up question `b` against the stored `a`).
fn scored_pairs(
    policy: &HitPolicy,
    set: &PairSet,
    vectors: &TextVectors,
    indices: &[usize],
) -> Vec<(f32, bool)> {
    scored_with(set, vectors, indices, |pair, a, b| {
        policy.score(&pair.b, b, &pair.a, a)
    })
}

/// `(cosine, duplicate)` of the pairs at `indices`.
fn cosine_scored_pairs(
    set: &PairSet,
    vectors: &TextVectors,
    indices: &[usize],
) -> Vec<(f32, bool)> {
    scored_with(set, vectors, indices, |_, a, b| {
        switchyard_actors::embed::pooling::cosine(a, b)
    })
}

/// `(score(pair, vector of a, vector of b), duplicate)` of the pairs at `indices`.
fn scored_with(
    set: &PairSet,
    vectors: &TextVectors,
    indices: &[usize],
    score: impl Fn(&LabelledPair, &[f32], &[f32]) -> f32,
) -> Vec<(f32, bool)> {
    indices
        .iter()
        .map(|&index| {
            let pair = &set.pairs[index];
            let (a, b) = set.text_indices[index];
            (
                score(pair, vectors.vector(a), vectors.vector(b)),
                pair.duplicate,
            )
        })
        .collect()
}

/// The weight of the second input relative to the first in a logistic regression of the labels
/// on `[network logit, cosine logit]` with an intercept (Newton's method): how much of the
/// cosine's logit to add to the network's. 0 when the cosine does not help (or the fit fails).
fn cosine_weight(rows: &[([f32; 2], bool)]) -> anyhow::Result<f32> {
    if rows.is_empty() {
        bail!("no validation pair above the floor to fit the cosine weight on");
    }
    let mut weights = [0.0_f64, 1.0, 0.0];
    for _ in 0..COSINE_WEIGHT_STEPS {
        let mut gradient = [0.0_f64; 3];
        let mut hessian = [[0.0_f64; 3]; 3];
        for (inputs, duplicate) in rows {
            let x = [1.0, f64::from(inputs[0]), f64::from(inputs[1])];
            let z: f64 = weights.iter().zip(&x).map(|(w, v)| w * v).sum();
            let p = 1.0 / (1.0 + (-z.clamp(-30.0, 30.0)).exp());
            let label = if *duplicate { 1.0 } else { 0.0 };
            for i in 0..3 {
                gradient[i] += (label - p) * x[i];
                for j in 0..3 {
                    hessian[i][j] += p * (1.0 - p) * x[i] * x[j];
                }
            }
        }
        let Some(step) = solve3(hessian, gradient) else {
            return Ok(0.0);
        };
        for (weight, change) in weights.iter_mut().zip(step) {
            *weight += change;
        }
    }
    if weights[1] <= 0.0 || !weights.iter().all(|weight| weight.is_finite()) {
        return Ok(0.0);
    }
    Ok((weights[2] / weights[1]).max(0.0) as f32)
}

/// `x` with `matrix · x = right`, by Gaussian elimination; `None` if the matrix is singular.
fn solve3(mut matrix: [[f64; 3]; 3], mut right: [f64; 3]) -> Option<[f64; 3]> {
    for pivot in 0..3 {
        if matrix[pivot][pivot].abs() < 1e-12 {
            return None;
        }
        for row in pivot + 1..3 {
            let factor = matrix[row][pivot] / matrix[pivot][pivot];
            let pivot_row = matrix[pivot];
            for (value, above) in matrix[row][pivot..].iter_mut().zip(&pivot_row[pivot..]) {
                *value -= factor * above;
            }
            right[row] -= factor * right[pivot];
        }
    }
    let mut solution = [0.0_f64; 3];
    for row in (0..3).rev() {
        let known: f64 = (row + 1..3)
            .map(|column| matrix[row][column] * solution[column])
            .sum();
        solution[row] = (right[row] - known) / matrix[row][row];
    }
    Some(solution)
}

/// The parameters as JSON laid out for review: one field a line, one calibration point a line,
/// and each layer's weights one output row a line.
pub fn parameters_json(parameters: &PolicyParameters) -> anyhow::Result<String> {
    let mut out = String::from("{\n");
    out.push_str(&format!("  \"format\": {},\n", parameters.format));
    out.push_str(&format!(
        "  \"embedding_model\": {},\n",
        value(&parameters.embedding_model)?
    ));
    out.push_str(&format!("  \"dimensions\": {},\n", parameters.dimensions));
    out.push_str(&format!(
        "  \"description\": {},\n",
        value(&parameters.description)?
    ));
    out.push_str(&format!(
        "  \"loose_similarity\": {},\n",
        value(&parameters.loose_similarity)?
    ));
    out.push_str(&format!(
        "  \"cosine_weight\": {},\n",
        value(&parameters.cosine_weight)?
    ));
    out.push_str(&format!(
        "  \"lexical_features\": {},\n",
        value(&parameters.lexical_features)?
    ));
    out.push_str("  \"calibration\": [\n");
    let points: Vec<String> = parameters
        .calibration
        .iter()
        .map(|point| Ok(format!("    {}", value(point)?)))
        .collect::<anyhow::Result<_>>()?;
    out.push_str(&points.join(",\n"));
    out.push_str("\n  ],\n  \"layers\": [\n");
    let mut layers = Vec::new();
    for layer in &parameters.layers {
        let rows: Vec<String> = layer
            .weights
            .chunks(layer.inputs.max(1))
            .map(|row| {
                Ok(value(row)?
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned())
            })
            .collect::<anyhow::Result<_>>()?;
        layers.push(format!(
            "    {{\n      \"inputs\": {},\n      \"outputs\": {},\n      \"bias\": {},\n      \"weights\": [\n        {}\n      ]\n    }}",
            layer.inputs,
            layer.outputs,
            value(&layer.bias)?,
            rows.join(",\n        ")
        ));
    }
    out.push_str(&layers.join(",\n"));
    out.push_str("\n  ]\n}\n");
    Ok(out)
}

/// One piece of [`parameters_json`] as compact JSON.
fn value<T: serde::Serialize + ?Sized>(piece: &T) -> anyhow::Result<String> {
    serde_json::to_string(piece).context("failed to encode the parameters")
}

/// The standardised fit and validation features one training run reads.
struct TrainingData<'data> {
    fit_inputs: &'data Tensor,
    fit_labels: &'data Tensor,
    fit_rows: usize,
    columns: usize,
    validation_inputs: &'data Tensor,
    validation_labels: &'data [f32],
    validation_floor_mask: &'data [bool],
}

/// One trained network: the weights of its best validation epoch.
struct TrainedMember {
    weights: Vec<(Vec<f32>, Vec<f32>)>,
    best_epoch: usize,
    average_precision: f64,
}

/// Trains one network from `seed`, keeping the epoch with the best validation average precision
/// and stopping after `patience` epochs without a better one.
fn train_member(
    data: &TrainingData<'_>,
    settings: &FitSettings,
    seed: u64,
    device: &Device,
) -> anyhow::Result<TrainedMember> {
    let mut random = StdRng::seed_from_u64(seed);
    let network = Network::initialise(data.columns, &settings.hidden_layers, &mut random, device)?;
    let mut optimiser = AdamW::new(
        network.variables(),
        ParamsAdamW {
            lr: settings.learning_rate,
            weight_decay: settings.weight_decay,
            ..Default::default()
        },
    )?;
    let mut order: Vec<u32> =
        (0..u32::try_from(data.fit_rows).context("too many fit pairs")?).collect();
    let mut best: Option<TrainedMember> = None;
    for epoch in 1..=settings.epochs {
        order.shuffle(&mut random);
        let mut loss_sum = 0.0;
        let mut batches = 0;
        for batch in order.chunks(settings.batch_size.max(1)) {
            let batch_indices = Tensor::from_slice(batch, batch.len(), device)?;
            let inputs = data.fit_inputs.index_select(&batch_indices, 0)?;
            let labels = data.fit_labels.index_select(&batch_indices, 0)?;
            let loss = candle_nn::loss::binary_cross_entropy_with_logit(
                &network.forward(&inputs)?,
                &labels,
            )?;
            optimiser.backward_step(&loss)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?);
            batches += 1;
        }
        let logits = network
            .forward(data.validation_inputs)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let scored: Vec<(f32, bool)> = logits
            .iter()
            .zip(data.validation_labels)
            .zip(data.validation_floor_mask)
            .map(|((&logit, &label), &above)| (if above { logit } else { f32::MIN }, label > 0.5))
            .collect();
        let average_precision = metrics::average_precision(&metrics::operating_points(&scored));
        eprintln!(
            "epoch {epoch}: fit loss {:.4}, validation average precision {average_precision:.4}",
            loss_sum / f64::from(batches.max(1))
        );
        if best
            .as_ref()
            .is_none_or(|best| average_precision > best.average_precision)
        {
            best = Some(TrainedMember {
                weights: network.snapshot()?,
                best_epoch: epoch,
                average_precision,
            });
        } else if best
            .as_ref()
            .is_some_and(|best| epoch >= best.best_epoch + settings.patience)
        {
            break;
        }
    }
    best.context("no epoch was run")
}

/// One network computing the mean logit of `members` (same shapes, at most one hidden layer):
/// hidden units side by side, output weights divided by the member count; without a hidden
/// layer, the mean of the weights.
fn merge_members(
    mut members: Vec<Vec<(Vec<f32>, Vec<f32>)>>,
) -> anyhow::Result<Vec<(Vec<f32>, Vec<f32>)>> {
    if members.len() == 1 {
        return Ok(members.remove(0));
    }
    let count = members.len() as f32;
    let layer_count = members.first().map_or(0, Vec::len);
    match layer_count {
        1 => {
            let mut weights = vec![0.0_f32; members[0][0].0.len()];
            let mut bias = vec![0.0_f32; members[0][0].1.len()];
            for member in &members {
                for (total, value) in weights.iter_mut().zip(&member[0].0) {
                    *total += value / count;
                }
                for (total, value) in bias.iter_mut().zip(&member[0].1) {
                    *total += value / count;
                }
            }
            Ok(vec![(weights, bias)])
        }
        2 => {
            let (mut hidden_weights, mut hidden_bias, mut output_weights, mut output_bias) =
                (Vec::new(), Vec::new(), Vec::new(), 0.0_f32);
            for member in &members {
                hidden_weights.extend_from_slice(&member[0].0);
                hidden_bias.extend_from_slice(&member[0].1);
                output_weights.extend(member[1].0.iter().map(|value| value / count));
                output_bias += member[1].1.first().copied().unwrap_or(0.0) / count;
            }
            Ok(vec![
                (hidden_weights, hidden_bias),
                (output_weights, vec![output_bias]),
            ])
        }
        other => bail!(
            "an ensemble needs at most one hidden layer, not {}",
            other.saturating_sub(1)
        ),
    }
}

/// The cosine below which at most [`DUPLICATES_BELOW_FLOOR`] of the duplicates lie, rounded down to
/// a hundredth.
fn loose_floor(mut duplicate_cosines: Vec<f32>) -> f32 {
    duplicate_cosines.sort_by(f32::total_cmp);
    let position = (duplicate_cosines.len() as f64 * DUPLICATES_BELOW_FLOOR).floor() as usize;
    let cosine = duplicate_cosines.get(position).copied().unwrap_or(0.0);
    (cosine * 100.0).floor() / 100.0
}

/// Per-column mean and scale (standard deviation, 1 for constant columns) of the fit features.
fn standardisation(matrix: &FeatureMatrix) -> (Vec<f32>, Vec<f32>) {
    let mut sums = vec![0.0_f64; matrix.columns];
    let mut squares = vec![0.0_f64; matrix.columns];
    for row in matrix.values.chunks_exact(matrix.columns) {
        for (column, &value) in row.iter().enumerate() {
            sums[column] += f64::from(value);
            squares[column] += f64::from(value) * f64::from(value);
        }
    }
    let count = matrix.rows.max(1) as f64;
    let means: Vec<f32> = sums.iter().map(|sum| (sum / count) as f32).collect();
    let scales = sums
        .iter()
        .zip(&squares)
        .map(|(sum, square)| {
            let variance = (square / count - (sum / count).powi(2)).max(0.0);
            if variance > 1e-12 {
                variance.sqrt() as f32
            } else {
                1.0
            }
        })
        .collect();
    (means, scales)
}

fn standardised_tensor(
    matrix: &FeatureMatrix,
    means: &[f32],
    scales: &[f32],
    device: &Device,
) -> anyhow::Result<Tensor> {
    let values: Vec<f32> = matrix
        .values
        .chunks_exact(matrix.columns)
        .flat_map(|row| {
            row.iter()
                .zip(means)
                .zip(scales)
                .map(|((value, mean), scale)| (value - mean) / scale)
        })
        .collect();
    Ok(Tensor::from_vec(
        values,
        (matrix.rows, matrix.columns),
        device,
    )?)
}

/// The trainable layers: weights `outputs × inputs` and biases, ReLU between.
struct Network {
    layers: Vec<(Var, Var)>,
}

impl Network {
    /// He-uniform weights for the hidden layers, Glorot-like for the output, zero biases.
    fn initialise(
        inputs: usize,
        hidden_layers: &[usize],
        random: &mut StdRng,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let mut layers = Vec::new();
        let mut fan_in = inputs;
        let widths: Vec<usize> = hidden_layers.iter().copied().chain([1]).collect();
        for (position, &width) in widths.iter().enumerate() {
            let gain = if position + 1 < widths.len() {
                6.0
            } else {
                1.0
            };
            let bound = (gain / fan_in as f64).sqrt() as f32;
            let weights: Vec<f32> = (0..width * fan_in)
                .map(|_| random.random_range(-bound..bound))
                .collect();
            layers.push((
                Var::from_tensor(&Tensor::from_vec(weights, (width, fan_in), device)?)?,
                Var::from_tensor(&Tensor::zeros(width, DType::F32, device)?)?,
            ));
            fan_in = width;
        }
        Ok(Self { layers })
    }

    fn variables(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|(weights, bias)| [weights.clone(), bias.clone()])
            .collect()
    }

    /// Logits, one per row of `inputs`.
    fn forward(&self, inputs: &Tensor) -> candle_core::Result<Tensor> {
        let mut activations = inputs.clone();
        for (position, (weights, bias)) in self.layers.iter().enumerate() {
            activations = activations
                .matmul(&weights.as_tensor().t()?)?
                .broadcast_add(bias.as_tensor())?;
            if position + 1 < self.layers.len() {
                activations = activations.relu()?;
            }
        }
        Ok(activations)
    }

    /// The current weights and biases, row-major.
    fn snapshot(&self) -> anyhow::Result<Vec<(Vec<f32>, Vec<f32>)>> {
        self.layers
            .iter()
            .map(|(weights, bias)| {
                Ok((
                    weights.as_tensor().flatten_all()?.to_vec1()?,
                    bias.as_tensor().to_vec1()?,
                ))
            })
            .collect()
    }
}

/// The layers as they ship: the standardisation folded into the first layer
/// (`w' = w / scale`, `b' = b − Σ w · mean / scale`) and every value rounded.
fn shipped_layers(
    weights: Vec<(Vec<f32>, Vec<f32>)>,
    means: &[f32],
    scales: &[f32],
) -> Vec<DenseLayer> {
    let mut layers = Vec::new();
    let mut inputs = means.len();
    for (position, (mut layer_weights, mut bias)) in weights.into_iter().enumerate() {
        let outputs = bias.len();
        if position == 0 {
            for (row, row_bias) in layer_weights.chunks_exact_mut(inputs).zip(&mut bias) {
                let mut shift = 0.0_f64;
                for ((weight, mean), scale) in row.iter_mut().zip(means).zip(scales) {
                    *weight /= scale;
                    shift += f64::from(*weight) * f64::from(*mean);
                }
                *row_bias -= shift as f32;
            }
        }
        layers.push(DenseLayer {
            inputs,
            outputs,
            weights: layer_weights.into_iter().map(round_significant).collect(),
            bias: bias.into_iter().map(round_significant).collect(),
        });
        inputs = outputs;
    }
    layers
}

/// `value` rounded to [`SIGNIFICANT_DIGITS`] significant digits (short in JSON).
fn round_significant(value: f32) -> f32 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let magnitude = f64::from(value).abs().log10().floor() as i32;
    let factor = 10_f64.powi(SIGNIFICANT_DIGITS - 1 - magnitude);
    ((f64::from(value) * factor).round() / factor) as f32
}

/// The parameters as a policy before their calibration is known (one placeholder point).
fn provisional_policy(parameters: &PolicyParameters) -> anyhow::Result<HitPolicy> {
    let mut provisional = parameters.clone();
    provisional.calibration = vec![
        switchyard_actors::cache::semantic::policy::CalibrationPoint {
            precision: 0.5,
            threshold: 0.5,
            recall: 0.0,
        },
    ];
    HitPolicy::from_parameters(provisional).context("the fitted layers do not validate")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `count` pairs of distinct texts, every other one a duplicate; a duplicate's two vectors
    /// lie close together, a non-duplicate's further apart (with overlap, so the scores spread).
    fn synthetic_pairs(count: usize) -> (PairSet, TextVectors) {
        const DIMENSIONS: usize = 8;
        let mut random = StdRng::seed_from_u64(3);
        let mut pairs = Vec::new();
        let mut values = Vec::new();
        for index in 0..count {
            let duplicate = index % 2 == 0;
            pairs.push(LabelledPair {
                a: format!("how do people handle case {index} at home"),
                b: format!("what is the way to handle case {index}"),
                duplicate,
            });
            let stored: Vec<f32> = (0..DIMENSIONS)
                .map(|_| random.random_range(-1.0..1.0))
                .collect();
            let spread = if duplicate { 0.4 } else { 0.9 };
            let looked_up: Vec<f32> = stored
                .iter()
                .map(|value| value + random.random_range(-spread..spread))
                .collect();
            values.extend(stored);
            values.extend(looked_up);
        }
        let set = PairSet::from_pairs(pairs, 0);
        assert_eq!(set.texts.len(), 2 * count, "every text is distinct");
        (set, TextVectors::from_values(DIMENSIONS, values).unwrap())
    }

    #[test]
    fn cross_fitting_ships_the_plain_fits_network_calibrated_on_every_train_pair() {
        let (set, vectors) = synthetic_pairs(600);
        let settings = FitSettings {
            hidden_layers: vec![4],
            epochs: 4,
            patience: 2,
            batch_size: 32,
            ..FitSettings::default()
        };
        let plain = fit(&set, &vectors, &settings).unwrap();
        let crossed = cross_fit(&set, &vectors, &settings).unwrap();

        let train = set.train_indices().len();
        assert_eq!(
            plain.validation_pairs,
            set.indices_of(SplitPart::Validation).len()
        );
        assert_eq!(
            crossed.validation_pairs, train,
            "every train pair is scored once"
        );
        assert!(crossed.validation_pairs > 3 * plain.validation_pairs);
        // The last fold holds out the validation part: the same network and cosine weight.
        assert_eq!(crossed.parameters.layers, plain.parameters.layers);
        assert_eq!(
            crossed.parameters.cosine_weight,
            plain.parameters.cosine_weight
        );
        assert_eq!(crossed.fit_pairs, plain.fit_pairs);
        assert!(
            crossed
                .parameters
                .description
                .ends_with(&format!("calibrated on all {train} train pairs, each scored by the fit that held its fold out (5 folds)")),
            "{}",
            crossed.parameters.description
        );
        // A table measured on other pairs, and one that still validates as a policy.
        assert_ne!(crossed.parameters.calibration, plain.parameters.calibration);
        assert!(!crossed.parameters.calibration.is_empty());
        for step in crossed.parameters.calibration.windows(2) {
            assert!(step[0].precision < step[1].precision);
            assert!(step[0].threshold <= step[1].threshold);
        }
        HitPolicy::from_parameters(crossed.parameters).unwrap();
    }

    #[test]
    fn the_reviewable_layout_reads_back_the_same() {
        let parameters = PolicyParameters {
            format: PARAMETERS_FORMAT,
            embedding_model: "model".into(),
            dimensions: 1,
            description: "a \"quoted\" description".into(),
            loose_similarity: 0.5,
            lexical_features: LEXICAL_FEATURE_NAMES
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
            layers: vec![
                DenseLayer {
                    inputs: 2,
                    outputs: 2,
                    weights: vec![0.1, -0.2, 0.3, 0.4],
                    bias: vec![0.0, 1.0],
                },
                DenseLayer {
                    inputs: 2,
                    outputs: 1,
                    weights: vec![1.5, -2.5],
                    bias: vec![0.25],
                },
            ],
            cosine_weight: 0.25,
            calibration: vec![
                switchyard_actors::cache::semantic::policy::CalibrationPoint {
                    precision: 0.8,
                    threshold: 0.6,
                    recall: 0.4,
                },
            ],
        };
        let text = parameters_json(&parameters).unwrap();
        assert!(text.contains("\n        0.3,0.4\n"), "{text}");
        let read: PolicyParameters = serde_json::from_str(&text).unwrap();
        assert_eq!(read, parameters);
    }

    #[test]
    fn merged_members_compute_the_mean_logit() {
        let first = vec![
            (vec![1.0, 0.0, 0.0, 1.0], vec![0.0, 0.0]),
            (vec![1.0, 2.0], vec![0.5]),
        ];
        let second = vec![
            (vec![0.0, 1.0, 1.0, 1.0], vec![1.0, -5.0]),
            (vec![-1.0, 3.0], vec![-0.5]),
        ];
        let merged = merge_members(vec![first.clone(), second.clone()]).unwrap();
        let logit = |layers: &[(Vec<f32>, Vec<f32>)], input: [f32; 2]| {
            let hidden_count = layers[0].1.len();
            let hidden: Vec<f32> = (0..hidden_count)
                .map(|row| {
                    (layers[0].1[row]
                        + layers[0].0[2 * row] * input[0]
                        + layers[0].0[2 * row + 1] * input[1])
                        .max(0.0)
                })
                .collect();
            layers[1].1[0]
                + layers[1]
                    .0
                    .iter()
                    .zip(&hidden)
                    .map(|(weight, value)| weight * value)
                    .sum::<f32>()
        };
        let input = [0.7, -0.3];
        let expected = (logit(&first, input) + logit(&second, input)) / 2.0;
        assert!((logit(&merged, input) - expected).abs() < 1e-6);
    }

    #[test]
    fn the_cosine_weight_follows_what_the_cosine_adds() {
        // Labels decided by the sum of both inputs: the cosine counts as much as the network.
        let mut random = StdRng::seed_from_u64(3);
        let rows: Vec<([f32; 2], bool)> = (0..4000)
            .map(|_| {
                let (network, cosine) = (
                    random.random_range(-3.0..3.0_f32),
                    random.random_range(-3.0..3.0_f32),
                );
                let probability = 1.0 / (1.0 + (-(network + cosine)).exp());
                (
                    [network, cosine],
                    random.random_range(0.0..1.0_f32) < probability,
                )
            })
            .collect();
        let weight = cosine_weight(&rows).unwrap();
        assert!((weight - 1.0).abs() < 0.2, "{weight}");
        // Labels from the network's input alone: the cosine gets (about) nothing.
        let rows: Vec<([f32; 2], bool)> = rows
            .iter()
            .map(|(inputs, _)| {
                (
                    *inputs,
                    random.random_range(0.0..1.0_f32) < 1.0 / (1.0 + (-inputs[0]).exp()),
                )
            })
            .collect();
        assert!(cosine_weight(&rows).unwrap() < 0.1);
        assert!(cosine_weight(&[]).is_err());
    }

    #[test]
    fn rounding_keeps_four_significant_digits() {
        assert_eq!(round_significant(0.123_456), 0.1235);
        assert_eq!(round_significant(-1234.567), -1235.0);
        assert_eq!(round_significant(0.0), 0.0);
    }

    #[test]
    fn the_floor_leaves_the_given_share_of_duplicates_below() {
        let cosines: Vec<f32> = (0..1000).map(|index| index as f32 / 1000.0).collect();
        assert_eq!(loose_floor(cosines), 0.0);
        let cosines: Vec<f32> = (0..1000).map(|index| 0.5 + index as f32 / 2000.0).collect();
        assert_eq!(loose_floor(cosines), 0.5);
    }

    #[test]
    fn folding_the_standardisation_keeps_the_outputs() {
        let (means, scales) = (vec![1.0, -2.0], vec![2.0, 0.5]);
        let layers = shipped_layers(vec![(vec![0.5, 0.25], vec![0.1])], &means, &scales);
        let input = [3.0_f32, 1.0];
        let standardised = [(3.0 - 1.0) / 2.0, (1.0 + 2.0) / 0.5];
        let expected = 0.1 + 0.5 * standardised[0] + 0.25 * standardised[1];
        let folded =
            layers[0].bias[0] + layers[0].weights[0] * input[0] + layers[0].weights[1] * input[1];
        assert!((expected - folded).abs() < 1e-3, "{expected} vs {folded}");
    }
}
