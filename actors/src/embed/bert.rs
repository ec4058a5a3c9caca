//! [`Bert`]: the BERT encoder forward pass written out for small sentence models such as
//! all-MiniLM-L6-v2 (6 layers, 384 hidden, 12 heads, 1,536 intermediate) on the CPU.
//!
//! The sequences of a pass are packed one after the other, without padding: the dense layers
//! (the bulk of the work) run on exactly the real tokens, and attention runs per sequence and
//! head, so no attention mask is needed. Query, key and value are one fused projection, and the
//! attention scale is folded into the query weights at load time. Matrix products go to candle
//! (gemm); layer norm, GELU, softmax and attention are loops over plain slices, run with the
//! widest SIMD instructions the CPU has ([`pulp::Arch`] picks AVX2/FMA at run time, so the
//! compiler vectorises them without a `target-cpu` flag). GELU is the exact (erf) one, with a
//! rational erf accurate to a few float ulps, as BERT's `hidden_act: "gelu"` asks.
//!
//! The dense layers' weights are held in one of two [`WeightFormat`]s: f32, multiplied by
//! candle's gemm, or int8 with a scale per output channel, multiplied by [`int8::matmul`] (a
//! quarter of the bytes to read per pass, exact integer sums; see that module). Embeddings, layer
//! norms and biases stay f32 in both.
//!
//! How many threads a matrix product uses is up to the caller: candle's gemm and the int8 kernel
//! run on the rayon pool they are called from (see `local`, which gives each pass a pool of its
//! own).

use candle_core::{DType, Device, Storage, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

use crate::embed::int8::{self, Int8Weight};
use crate::embed::pooling::{l2_normalize, mean_pool};

/// How the dense layers' weights are held and multiplied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightFormat {
    /// As the model file has them (f32), multiplied by candle's gemm.
    F32,
    /// int8, one scale per output channel, multiplied by [`int8::matmul`]: the default, about
    /// 3× faster a short text, vectors within a cosine of 0.996 of the f32 ones on 14,833
    /// questions (mean 0.9996) and the semantic cache's recall at precision unchanged
    /// (BENCHMARKS.md, "int8 weights").
    #[default]
    Int8,
}

impl WeightFormat {
    /// The name settings use: `"f32"` or `"int8"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = String;

    /// `"f32"` or `"int8"`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "f32" => Ok(Self::F32),
            "int8" => Ok(Self::Int8),
            other => Err(format!("unknown weight format \"{other}\": use \"f32\" or \"int8\"")),
        }
    }
}

/// Lanes of the fixed-width accumulators the reductions use; 8 fills one AVX2 register.
const LANES: usize = 8;

/// A loaded BERT encoder.
pub struct Bert {
    /// Word, position and token-type embeddings and their layer norm.
    embeddings: Embeddings,
    /// The transformer layers, first to last.
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    eps: f32,
    /// Runs the slice loops with the CPU's SIMD extensions.
    arch: pulp::Arch,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert")
            .field("layers", &self.layers.len())
            .field("hidden", &self.hidden)
            .field("heads", &self.heads)
            .finish_non_exhaustive()
    }
}

/// The embedding tables, as rows of `hidden` values.
struct Embeddings {
    words: Vec<f32>,
    positions: Vec<f32>,
    /// Row 0 of the token-type table: every token is of type 0 for sentence embeddings.
    token_type: Vec<f32>,
    norm: LayerNorm,
}

/// One transformer layer.
struct Layer {
    /// Query (pre-scaled by 1/√head size), key and value in one projection: `hidden → 3·hidden`.
    qkv: Dense,
    attention_output: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
}

/// A linear layer: the weight in its [`WeightFormat`] and the bias on its own.
struct Dense {
    weight: DenseWeight,
    bias: Vec<f32>,
    inputs: usize,
}

/// A linear layer's weight, ready for its matrix product.
enum DenseWeight {
    /// candle's `(inputs, outputs)` view of the f32 weight.
    F32(Tensor),
    /// Quantised and packed for the int8 kernel.
    Int8(Int8Weight),
}

/// Layer-norm scale and shift.
struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Bert {
    /// Reads the weights (with or without a `bert.` prefix) of a BERT with `config`'s shape.
    /// Only the exact GELU activation is supported.
    /// The dense layers' weights are held in `format`.
    pub fn load(variables: VarBuilder, config: &Config, format: WeightFormat) -> candle_core::Result<Self> {
        if config.hidden_act != HiddenAct::Gelu {
            candle_core::bail!("unsupported hidden_act {:?}: only \"gelu\" is", config.hidden_act);
        }
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            candle_core::bail!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
        }
        let variables = if variables.contains_tensor("embeddings.word_embeddings.weight") {
            variables
        } else {
            variables.pp("bert")
        };
        let embeddings = {
            let vb = variables.pp("embeddings");
            Embeddings {
                words: to_vec(&vb.get((config.vocab_size, hidden), "word_embeddings.weight")?)?,
                positions: to_vec(&vb.get((config.max_position_embeddings, hidden), "position_embeddings.weight")?)?,
                token_type: to_vec(&vb.get((config.type_vocab_size, hidden), "token_type_embeddings.weight")?.get(0)?)?,
                norm: LayerNorm::load(vb.pp("LayerNorm"), hidden)?,
            }
        };
        let head_size = hidden / heads;
        let query_scale = 1.0 / (head_size as f64).sqrt();
        let layers = (0..config.num_hidden_layers)
            .map(|index| {
                let vb = variables.pp(format!("encoder.layer.{index}"));
                let attention = vb.pp("attention.self");
                let (query_weight, query_bias) = dense_parts(attention.pp("query"), hidden, hidden)?;
                let (key_weight, key_bias) = dense_parts(attention.pp("key"), hidden, hidden)?;
                let (value_weight, value_bias) = dense_parts(attention.pp("value"), hidden, hidden)?;
                let qkv_weight = Tensor::cat(&[(query_weight * query_scale)?, key_weight, value_weight], 0)?;
                let qkv_bias = Tensor::cat(&[(query_bias * query_scale)?, key_bias, value_bias], 0)?;
                Ok(Layer {
                    qkv: Dense::new(qkv_weight, &qkv_bias, format)?,
                    attention_output: Dense::load(vb.pp("attention.output.dense"), hidden, hidden, format)?,
                    attention_norm: LayerNorm::load(vb.pp("attention.output.LayerNorm"), hidden)?,
                    intermediate: Dense::load(vb.pp("intermediate.dense"), hidden, config.intermediate_size, format)?,
                    output: Dense::load(vb.pp("output.dense"), config.intermediate_size, hidden, format)?,
                    output_norm: LayerNorm::load(vb.pp("output.LayerNorm"), hidden)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { embeddings, layers, hidden, heads, eps: config.layer_norm_eps as f32, arch: pulp::Arch::new() })
    }

    /// Runs `sequences` (token ids, special tokens included) through the encoder in one packed
    /// pass and returns each one's mean-pooled, L2-normalised last hidden state. An empty
    /// sequence gets the zero vector; a token id or length the tables do not cover is an error.
    pub fn embed(&self, sequences: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let hidden = self.hidden;
        let total: usize = sequences.iter().map(|sequence| sequence.len()).sum();
        if total == 0 {
            return Ok(vec![vec![0.0; hidden]; sequences.len()]);
        }
        let mut states = packed(self.embed_tokens(sequences, total)?, total, hidden)?;
        for layer in &self.layers {
            let qkv = with_slice(&layer.qkv.matmul(&states)?, |product| {
                let mut qkv = vec![0.0_f32; product.len()];
                self.run(BiasThen { source: product, bias: &layer.qkv.bias, target: &mut qkv, then: |value| value });
                qkv
            })?;
            let mut attention = vec![0.0_f32; total * hidden];
            self.run(Attend { qkv: &qkv, sequences, heads: self.heads, hidden, output: &mut attention });
            let projected = layer.attention_output.matmul(&packed(attention, total, hidden)?)?;
            states = packed(self.add_and_norm(&states, &projected, &layer.attention_output.bias, &layer.attention_norm)?, total, hidden)?;
            let intermediate = layer.intermediate.matmul(&states)?;
            let activated = with_slice(&intermediate, |product| {
                let mut activated = vec![0.0_f32; product.len()];
                self.run(BiasThen { source: product, bias: &layer.intermediate.bias, target: &mut activated, then: gelu });
                activated
            })?;
            let output = layer.output.matmul(&packed(activated, total, layer.output.inputs)?)?;
            states = packed(self.add_and_norm(&states, &output, &layer.output.bias, &layer.output_norm)?, total, hidden)?;
        }
        with_slice(&states, |states| {
            let mut offset = 0;
            sequences
                .iter()
                .map(|sequence| {
                    let rows = &states[offset * hidden..(offset + sequence.len()) * hidden];
                    offset += sequence.len();
                    let mut vector = mean_pool(rows, sequence.len(), hidden);
                    l2_normalize(&mut vector);
                    vector
                })
                .collect()
        })
    }

    /// Runs `kernel` with the CPU's SIMD extensions enabled.
    fn run<K: Kernel>(&self, kernel: K) -> K::Output {
        self.arch.dispatch(OnSimd(kernel))
    }

    /// Word + position + token-type embedding of every token, layer-normed, packed.
    fn embed_tokens(&self, sequences: &[&[u32]], total: usize) -> candle_core::Result<Vec<f32>> {
        let hidden = self.hidden;
        let table = &self.embeddings;
        let (words, positions) = (table.words.len() / hidden, table.positions.len() / hidden);
        for sequence in sequences {
            if sequence.len() > positions {
                candle_core::bail!("a sequence of {} tokens is longer than the {positions} positions", sequence.len());
            }
            if let Some(token) = sequence.iter().find(|&&token| token as usize >= words) {
                candle_core::bail!("token {token} is outside the vocabulary of {words}");
            }
        }
        let mut states = vec![0.0_f32; total * hidden];
        self.run(EmbedTokens { sequences, table, hidden, eps: self.eps, states: &mut states });
        Ok(states)
    }

    /// `layer_norm(states + update + bias)`, row by row, as a new buffer.
    fn add_and_norm(&self, states: &Tensor, update: &Tensor, bias: &[f32], norm: &LayerNorm) -> candle_core::Result<Vec<f32>> {
        with_slice(states, |states| {
            with_slice(update, |update| {
                let mut output = vec![0.0_f32; states.len()];
                self.run(AddAndNorm { residual: states, update, bias, norm, eps: self.eps, output: &mut output });
                output
            })
        })?
    }
}

/// A loop nest to compile for the CPU's SIMD extensions. `run` and everything it calls must be
/// `#[inline(always)]`: that is what puts their code inside pulp's `#[target_feature]` function
/// (a closure would be compiled on its own, for the baseline CPU).
trait Kernel {
    type Output;
    fn run(self) -> Self::Output;
}

/// Adapts a [`Kernel`] to [`pulp::WithSimd`].
struct OnSimd<K>(K);

impl<K: Kernel> pulp::WithSimd for OnSimd<K> {
    type Output = K::Output;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> K::Output {
        self.0.run()
    }
}

/// Word + position + token-type embeddings of packed sequences, layer-normed. Ids and lengths
/// are checked by the caller; out-of-range ones leave their rows zero.
struct EmbedTokens<'a> {
    sequences: &'a [&'a [u32]],
    table: &'a Embeddings,
    hidden: usize,
    eps: f32,
    states: &'a mut [f32],
}

impl Kernel for EmbedTokens<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let hidden = self.hidden;
        let mut rows = self.states.chunks_exact_mut(hidden);
        for sequence in self.sequences {
            for (position, &token) in sequence.iter().enumerate() {
                let start = token as usize * hidden;
                let (Some(row), Some(word), Some(place)) = (
                    rows.next(),
                    self.table.words.get(start..start + hidden),
                    self.table.positions.get(position * hidden..(position + 1) * hidden),
                ) else {
                    continue;
                };
                for (((out, word), place), kind) in row.iter_mut().zip(word).zip(place).zip(&self.table.token_type) {
                    *out = word + place + kind;
                }
                layer_norm(row, self.table.norm.weight.as_slice(), self.table.norm.bias.as_slice(), self.eps);
            }
        }
    }
}

/// `target = then(source + bias)` for every row: the bias alone (`then` the identity), or the
/// bias and the activation in one pass.
struct BiasThen<'a, F: Fn(f32) -> f32> {
    source: &'a [f32],
    bias: &'a [f32],
    target: &'a mut [f32],
    then: F,
}

impl<F: Fn(f32) -> f32> Kernel for BiasThen<'_, F> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let width = self.bias.len();
        for (target, source) in self.target.chunks_exact_mut(width).zip(self.source.chunks_exact(width)) {
            for ((target, source), bias) in target.iter_mut().zip(source).zip(self.bias) {
                *target = (self.then)(source + bias);
            }
        }
    }
}

/// `output = layer_norm(residual + update + bias)` for every row.
struct AddAndNorm<'a> {
    residual: &'a [f32],
    update: &'a [f32],
    bias: &'a [f32],
    norm: &'a LayerNorm,
    eps: f32,
    output: &'a mut [f32],
}

impl Kernel for AddAndNorm<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let width = self.bias.len();
        let rows = self.output.chunks_exact_mut(width).zip(self.residual.chunks_exact(width)).zip(self.update.chunks_exact(width));
        for ((output, residual), update) in rows {
            for (((output, residual), update), bias) in output.iter_mut().zip(residual).zip(update).zip(self.bias) {
                *output = residual + update + bias;
            }
            layer_norm(output, &self.norm.weight, &self.norm.bias, self.eps);
        }
    }
}

/// Self-attention of each packed sequence with itself, head by head, into `output` (rows of
/// `hidden`). `qkv` holds each token's scaled query, key and value, rows of `3·hidden`.
struct Attend<'a> {
    qkv: &'a [f32],
    sequences: &'a [&'a [u32]],
    heads: usize,
    hidden: usize,
    output: &'a mut [f32],
}

impl Kernel for Attend<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let hidden = self.hidden;
        let width = 3 * hidden;
        let head_size = hidden / self.heads;
        let longest = self.sequences.iter().map(|sequence| sequence.len()).max().unwrap_or(0);
        let mut scores = vec![0.0_f32; longest];
        let mut offset = 0;
        for sequence in self.sequences {
            let length = sequence.len();
            let rows = &self.qkv[offset * width..(offset + length) * width];
            let out_rows = &mut self.output[offset * hidden..(offset + length) * hidden];
            offset += length;
            let scores = &mut scores[..length];
            for head in 0..self.heads {
                let query_at = head * head_size;
                let key_at = hidden + query_at;
                let value_at = 2 * hidden + query_at;
                for (query_row, out_row) in rows.chunks_exact(width).zip(out_rows.chunks_exact_mut(hidden)) {
                    let query = &query_row[query_at..query_at + head_size];
                    for (score, key_row) in scores.iter_mut().zip(rows.chunks_exact(width)) {
                        *score = dot(query, &key_row[key_at..key_at + head_size]);
                    }
                    softmax(scores);
                    let out = &mut out_row[query_at..query_at + head_size];
                    out.fill(0.0);
                    for (&weight, value_row) in scores.iter().zip(rows.chunks_exact(width)) {
                        for (out, value) in out.iter_mut().zip(&value_row[value_at..value_at + head_size]) {
                            *out += weight * value;
                        }
                    }
                }
            }
        }
    }
}

/// `values` as a `rows × width` tensor, without copying.
fn packed(values: Vec<f32>, rows: usize, width: usize) -> candle_core::Result<Tensor> {
    Tensor::from_vec(values, (rows, width), &Device::Cpu)
}

/// Calls `f` with the values of a contiguous f32 CPU tensor, without copying them.
fn with_slice<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cpu(storage) = &*storage else {
        candle_core::bail!("expected a CPU tensor");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("expected a contiguous tensor");
    };
    let values = storage.as_slice::<f32>()?;
    match values.get(start..end) {
        Some(values) => Ok(f(values)),
        None => candle_core::bail!("tensor layout outside its storage"),
    }
}

impl Dense {
    /// Reads `weight` (`outputs × inputs`) and `bias` from `variables`.
    fn load(variables: VarBuilder, inputs: usize, outputs: usize, format: WeightFormat) -> candle_core::Result<Self> {
        let (weight, bias) = dense_parts(variables, inputs, outputs)?;
        Self::new(weight, &bias, format)
    }

    /// A layer of `weight` (`outputs × inputs`) and `bias`, the weight held in `format`.
    fn new(weight: Tensor, bias: &Tensor, format: WeightFormat) -> candle_core::Result<Self> {
        let (outputs, inputs) = weight.dims2()?;
        let weight = match format {
            WeightFormat::F32 => DenseWeight::F32(weight.t()?),
            WeightFormat::Int8 => DenseWeight::Int8(Int8Weight::quantize(&to_vec(&weight)?, outputs, inputs)),
        };
        Ok(Self { weight, bias: to_vec(bias)?, inputs })
    }

    /// `input · weightᵀ` (rows of `inputs` in, rows of outputs out), without the bias.
    fn matmul(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        match &self.weight {
            DenseWeight::F32(weight_t) => input.matmul(weight_t),
            DenseWeight::Int8(weight) => {
                let (rows, inputs) = input.dims2()?;
                if inputs != weight.inputs() {
                    candle_core::bail!("an input of {inputs} values for a layer of {}", weight.inputs());
                }
                let product = with_slice(input, |input| int8::matmul(input, rows, weight))?;
                packed(product, rows, weight.outputs())
            }
        }
    }
}

impl LayerNorm {
    fn load(variables: VarBuilder, size: usize) -> candle_core::Result<Self> {
        Ok(Self { weight: to_vec(&variables.get(size, "weight")?)?, bias: to_vec(&variables.get(size, "bias")?)? })
    }
}

/// A linear layer's weight (`outputs × inputs`) and bias as tensors.
fn dense_parts(variables: VarBuilder, inputs: usize, outputs: usize) -> candle_core::Result<(Tensor, Tensor)> {
    Ok((variables.get((outputs, inputs), "weight")?, variables.get(outputs, "bias")?))
}

/// A tensor's values in row-major order, as f32.
fn to_vec(tensor: &Tensor) -> candle_core::Result<Vec<f32>> {
    tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// The exact GELU, `x·Φ(x) = ½·x·(1 + erf(x/√2))`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf for f32 as a rational function of `x` clamped to ±4 (past which erf is ±1 in f32); the
/// odd/even minimax polynomials that Eigen and XLA use, within a few ulps, branch-free so that
/// loops over it vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_473_9e-2;
    p / q
}

/// e^x for the softmax's `x ≤ 0` (and moderate positive `x`): Cephes' range reduction and
/// polynomial, within 2 ulps, branch-free so that loops over it vectorise. Below -87 it is 0.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding and subtracting it rounds to an integer
    let clamped = x.clamp(-87.0, 88.0);
    let n = (clamped * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = clamped - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let value = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { value * scale }
}

/// Softmax of `scores` in place.
#[inline(always)]
fn softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for score in scores.iter_mut() {
        *score = exp(*score - max);
        sum += *score;
    }
    let scale = 1.0 / sum;
    for score in scores.iter_mut() {
        *score *= scale;
    }
}

/// `Σ a·b` with [`LANES`] independent accumulators, so that it vectorises.
#[inline(always)]
fn dot(left: &[f32], right: &[f32]) -> f32 {
    let (left_chunks, left_rest) = left.as_chunks::<LANES>();
    let (right_chunks, right_rest) = right.as_chunks::<LANES>();
    let mut lanes = [0.0_f32; LANES];
    for (a, b) in left_chunks.iter().zip(right_chunks) {
        for lane in 0..LANES {
            lanes[lane] += a[lane] * b[lane];
        }
    }
    let rest: f32 = left_rest.iter().zip(right_rest).map(|(a, b)| a * b).sum();
    lanes.iter().sum::<f32>() + rest
}

/// `Σ f(x)` with [`LANES`] independent accumulators.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let (chunks, rest) = values.as_chunks::<LANES>();
    let mut lanes = [0.0_f32; LANES];
    for chunk in chunks {
        for lane in 0..LANES {
            lanes[lane] += f(chunk[lane]);
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|&value| f(value)).sum::<f32>()
}

/// BERT's layer norm of one row in place: zero mean, unit variance (biased, plus `eps`), then
/// scale by `weight` and shift by `bias`.
#[inline(always)]
fn layer_norm(row: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let count = row.len() as f32;
    let mean = lane_sum(row, |value| value) / count;
    let variance = lane_sum(row, |value| (value - mean) * (value - mean)) / count;
    let scale = 1.0 / (variance + eps).sqrt();
    for ((value, weight), bias) in row.iter_mut().zip(weight).zip(bias) {
        *value = (*value - mean) * scale * weight + bias;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(from: f32, to: f32, steps: usize) -> Vec<f32> {
        (0..=steps).map(|index| from + (to - from) * index as f32 / steps as f32).collect()
    }

    #[test]
    fn gelu_matches_candles_exact_gelu() {
        let inputs = grid(-10.0, 10.0, 20_000);
        let reference = Tensor::new(inputs.as_slice(), &Device::Cpu).unwrap().gelu_erf().unwrap().to_vec1::<f32>().unwrap();
        for (x, expected) in inputs.iter().zip(reference) {
            let got = gelu(*x);
            assert!((got - expected).abs() <= 2e-6 * expected.abs().max(1.0), "gelu({x}) = {got}, want {expected}");
        }
    }

    #[test]
    fn erf_is_odd_bounded_and_saturates() {
        assert_eq!(erf(0.0), 0.0);
        for x in grid(0.0, 6.0, 600) {
            assert_eq!(erf(-x), -erf(x));
            assert!(erf(x).abs() <= 1.0 + 1e-6, "erf({x}) = {}", erf(x));
        }
        assert!((erf(5.0) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn exp_matches_the_standard_library() {
        for x in grid(-87.0, 20.0, 100_000) {
            let (got, expected) = (exp(x), x.exp());
            assert!((got - expected).abs() <= 4.0 * f32::EPSILON * expected, "exp({x}) = {got}, want {expected}");
        }
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut scores = vec![1.0, 3.0, -2.0, 3.0, 0.5];
        softmax(&mut scores);
        assert!((scores.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(scores[1] > scores[0] && scores[0] > scores[4] && scores[4] > scores[2]);
        assert_eq!(scores[1], scores[3]);
    }

    #[test]
    fn dot_and_lane_sum_cover_the_remainder() {
        let left: Vec<f32> = (0..19).map(|index| index as f32).collect();
        let right = vec![2.0_f32; 19];
        assert_eq!(dot(&left, &right), 2.0 * 171.0);
        assert_eq!(lane_sum(&left, |value| value * value), (0..19).map(|index| (index * index) as f32).sum::<f32>());
    }

    #[test]
    fn layer_norm_normalises_then_scales_and_shifts() {
        let mut row: Vec<f32> = (0..10).map(|index| index as f32 * 3.0 + 7.0).collect();
        layer_norm(&mut row, &[2.0; 10], &[1.0; 10], 1e-12);
        let normalised: Vec<f32> = row.iter().map(|value| (value - 1.0) / 2.0).collect();
        let mean = normalised.iter().sum::<f32>() / 10.0;
        let variance = normalised.iter().map(|value| (value - mean) * (value - mean)).sum::<f32>() / 10.0;
        assert!(mean.abs() < 1e-5, "{mean}");
        assert!((variance - 1.0).abs() < 1e-4, "{variance}");
    }
}
