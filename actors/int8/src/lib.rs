//! Matrix products with int8 weights for the encoder's dense layers ([`Int8Weight`],
//! [`matmul`]).
//!
//! **Weights** are quantised once, at load time, per output channel: each row of the
//! `outputs × inputs` weight gets the scale `max |w| / 127` and is rounded to the nearest
//! integer in `-127..=127`. They are stored packed in the order the kernel reads them: blocks of
//! 8 output channels, and within a block the inputs two by two (`[c0 k0, c0 k1, c1 k0, c1 k1, …,
//! c7 k1]`, 16 bytes), so one 16-byte load widened to 16 × i16 is one operand of
//! `_mm256_madd_epi16`. A quarter of the f32 weights' bytes: ~10.6 MB for all-MiniLM-L6-v2
//! instead of 42 MB, which matters because a short text's pass is limited by reading them.
//!
//! **Activations** are quantised per row (per token) when the product runs, to integers of at
//! most [`activation_levels`] in magnitude with the scale `max |x| / levels`. The kernel
//! multiplies in i16 (`_mm256_madd_epi16`: 16 products per instruction, summed two by two into
//! i32 lanes), so the activations need not be int8: they get as many levels as keep every i32
//! sum from overflowing (32,767 for 384 inputs, 11,008 for 1,536), i.e. they lose next to nothing
//! and the weights' rounding is the only approximation. The i32 sums are exact; the result is
//! `sum as f32 · (row scale · column scale)`, the bias is left to the caller.
//!
//! **Paths.** [`Kernel::Avx2`] when the CPU has AVX2 (checked at run time through
//! [`pulp::x86::V3`]), [`Kernel::Scalar`] otherwise. Both compute the same integer sums and the
//! same float operations in the same order, so they give bit-identical results.
//!
//! **Threads.** Inside a rayon pool of several threads (the wide pool a lone text runs on) a
//! product large enough is split by output channels over the pool's threads; in a pool of one it
//! runs on the calling thread.

/// Largest magnitude of a quantised weight.
const WEIGHT_LEVELS: f32 = 127.0;
/// Output channels per packed block: one AVX2 register of i32 sums.
const BLOCK: usize = 8;
/// Bytes of one packed step: [`BLOCK`] channels × 2 inputs.
const STEP: usize = 2 * BLOCK;
/// Rows (tokens) of one register tile.
const TILE_ROWS: usize = 4;
/// Packed blocks (of [`BLOCK`] channels) of one register tile: 4 × 2 sums, 2 weights and one
/// broadcast activation stay in registers (4 × 3 spills two sums to the stack per step).
const TILE_BLOCKS: usize = 2;
/// Multiply-adds below which a product is not worth splitting over threads.
const MIN_SPLIT_WORK: usize = 1 << 20;

/// Which instructions compute the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust, for any CPU.
    Scalar,
    /// AVX2 (`_mm256_madd_epi16`), on x86-64 CPUs that have it.
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if pulp::x86::V3::try_new().is_some() {
            return Self::Avx2;
        }
        Self::Scalar
    }
}

/// A linear layer's weight in int8, one scale per output channel, packed for [`matmul`].
#[derive(Clone)]
pub struct Int8Weight {
    inputs: usize,
    outputs: usize,
    /// Inputs taken two at a time: `inputs` rounded up to even, halved.
    pairs: usize,
    /// Blocks of [`BLOCK`] output channels: `outputs` rounded up, divided.
    blocks: usize,
    /// `blocks × pairs` steps of [`STEP`] bytes; padding channels and inputs are zero.
    packed: Vec<i8>,
    /// Scale of each output channel, `blocks × BLOCK` of them (0 for padding).
    scales: Vec<f32>,
}

impl std::fmt::Debug for Int8Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Int8Weight").field("inputs", &self.inputs).field("outputs", &self.outputs).finish_non_exhaustive()
    }
}

impl Int8Weight {
    /// Quantises `weight`, row-major `outputs × inputs` (a PyTorch `Linear` weight).
    ///
    /// # Panics
    /// If `weight` does not hold `outputs × inputs` values.
    pub fn quantize(weight: &[f32], outputs: usize, inputs: usize) -> Self {
        assert_eq!(weight.len(), outputs * inputs, "weight of {outputs} × {inputs} values");
        let pairs = inputs.div_ceil(2);
        let blocks = outputs.div_ceil(BLOCK);
        let mut packed = vec![0_i8; blocks * pairs * STEP];
        let mut scales = vec![0.0_f32; blocks * BLOCK];
        for (channel, row) in weight.chunks_exact(inputs.max(1)).enumerate().take(outputs) {
            let largest = row.iter().fold(0.0_f32, |largest, value| largest.max(value.abs()));
            if largest == 0.0 || !largest.is_finite() {
                continue;
            }
            scales[channel] = largest / WEIGHT_LEVELS;
            let inverse = WEIGHT_LEVELS / largest;
            let (block, lane) = (channel / BLOCK, channel % BLOCK);
            for (input, value) in row.iter().enumerate() {
                let at = (block * pairs + input / 2) * STEP + 2 * lane + input % 2;
                packed[at] = round_small(value * inverse).clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS) as i8;
            }
        }
        Self { inputs, outputs, pairs, blocks, packed, scales }
    }

    /// Length of an input row.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Length of an output row.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The weight as the product sees it, dequantised: row-major `outputs × inputs`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut weight = vec![0.0_f32; self.outputs * self.inputs];
        for (channel, row) in weight.chunks_exact_mut(self.inputs.max(1)).enumerate().take(self.outputs) {
            let (block, lane) = (channel / BLOCK, channel % BLOCK);
            for (input, value) in row.iter_mut().enumerate() {
                let at = (block * self.pairs + input / 2) * STEP + 2 * lane + input % 2;
                *value = f32::from(self.packed[at]) * self.scales[channel];
            }
        }
        weight
    }
}

/// Largest magnitude of a quantised activation for `pairs` input pairs: as many levels as keep
/// `Σ activation · weight` within i32 (at most i16's 32,767).
pub fn activation_levels(pairs: usize) -> i32 {
    let per_pair = 2 * WEIGHT_LEVELS as i64;
    (i64::from(i32::MAX) / (per_pair * pairs.max(1) as i64)).min(i64::from(i16::MAX)) as i32
}

/// Activation rows quantised for the kernel: each row's inputs as i16 pairs packed in one i32
/// (first input in the low half), and each row's scale.
struct QuantizedRows {
    pairs: usize,
    values: Vec<i32>,
    scales: Vec<f32>,
}

/// `value` rounded to the nearest integer, ties to even, for `|value| < 2²²`: adding and
/// subtracting 1.5·2²³ leaves no fraction bits. Unlike `f32::round_ties_even` it needs no
/// SSE4.1 (which the baseline x86-64 lacks, making that a libm call), so loops over it vectorise.
#[inline(always)]
fn round_small(value: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0;
    (value + ROUND) - ROUND
}

/// Quantises `rows` rows of `inputs` values (see the module docs), with the CPU's SIMD
/// extensions (the same results on any CPU: no operation here is fused or reordered).
fn quantize_rows(input: &[f32], rows: usize, inputs: usize, pairs: usize) -> QuantizedRows {
    let mut quantized = QuantizedRows { pairs, values: vec![0_i32; rows * pairs], scales: vec![0.0_f32; rows] };
    pulp::Arch::new().dispatch(QuantizeRows { input, inputs, quantized: &mut quantized });
    quantized
}

/// [`quantize_rows`]' loops, compiled for the CPU's SIMD extensions by [`pulp::Arch::dispatch`].
struct QuantizeRows<'a> {
    input: &'a [f32],
    inputs: usize,
    quantized: &'a mut QuantizedRows,
}

impl pulp::WithSimd for QuantizeRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let pairs = self.quantized.pairs;
        let levels = activation_levels(pairs) as f32;
        let rows = self.input.chunks_exact(self.inputs.max(1)).zip(self.quantized.values.chunks_exact_mut(pairs.max(1)));
        for ((row, packed), scale) in rows.zip(&mut self.quantized.scales) {
            let largest = max_abs(row);
            if largest == 0.0 || !largest.is_finite() {
                continue;
            }
            *scale = largest / levels;
            let inverse = levels / largest;
            let quantize = |value: f32| round_small(value * inverse).clamp(-levels, levels) as i32 as u16 as u32;
            let (whole, rest) = row.as_chunks::<2>();
            for (packed, pair) in packed.iter_mut().zip(whole) {
                *packed = (quantize(pair[0]) | quantize(pair[1]) << 16) as i32;
            }
            if let (Some(&last), Some(packed)) = (rest.first(), packed.last_mut()) {
                *packed = quantize(last) as i32;
            }
        }
    }
}

/// `max |value|` with 8 independent lanes, so that it vectorises.
#[inline(always)]
fn max_abs(values: &[f32]) -> f32 {
    let (chunks, rest) = values.as_chunks::<8>();
    let mut lanes = [0.0_f32; 8];
    for chunk in chunks {
        for (lane, value) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(value.abs());
        }
    }
    rest.iter().chain(&lanes).fold(0.0_f32, |largest, value| largest.max(value.abs()))
}

/// `input · weightᵀ`: `rows` rows of `weight.inputs()` values in, `rows` rows of
/// `weight.outputs()` out, without the bias, with the fastest kernel the CPU has.
pub fn matmul(input: &[f32], rows: usize, weight: &Int8Weight) -> Vec<f32> {
    matmul_with(Kernel::detect(), input, rows, weight)
}

/// [`matmul`] with a chosen kernel (an unsupported one falls back to [`Kernel::Scalar`]).
///
/// # Panics
/// If `input` does not hold `rows × weight.inputs()` values.
pub fn matmul_with(kernel: Kernel, input: &[f32], rows: usize, weight: &Int8Weight) -> Vec<f32> {
    assert_eq!(input.len(), rows * weight.inputs, "input of {rows} × {} values", weight.inputs);
    let activations = quantize_rows(input, rows, weight.inputs, weight.pairs);
    let threads = rayon::current_num_threads();
    let parts = if threads > 1 && rows * weight.inputs * weight.outputs >= MIN_SPLIT_WORK {
        threads.min(weight.blocks.div_ceil(TILE_BLOCKS)).max(1)
    } else {
        1
    };
    // Whole tiles per part, so that only the last part has a narrower tile.
    let tiles = weight.blocks.div_ceil(TILE_BLOCKS);
    let ranges: Vec<(usize, usize)> = (0..parts)
        .map(|part| {
            let start = (tiles * part / parts * TILE_BLOCKS).min(weight.blocks);
            let end = (tiles * (part + 1) / parts * TILE_BLOCKS).min(weight.blocks);
            (start, end)
        })
        .collect();
    let compute = |&(start, end): &(usize, usize)| {
        let mut output = vec![0.0_f32; rows * (end - start) * BLOCK];
        run_blocks(kernel, &activations, weight, start..end, &mut output);
        output
    };
    let width = weight.blocks * BLOCK;
    if parts == 1 && width == weight.outputs {
        return compute(&(0, weight.blocks));
    }
    let pieces: Vec<Vec<f32>> = if parts == 1 {
        ranges.iter().map(compute).collect()
    } else {
        use rayon::prelude::*;
        ranges.par_iter().map(compute).collect()
    };
    let mut output = vec![0.0_f32; rows * weight.outputs];
    for ((start, end), piece) in ranges.iter().zip(&pieces) {
        let first = start * BLOCK;
        let piece_width = (end - start) * BLOCK;
        let kept = weight.outputs.min(end * BLOCK).saturating_sub(first);
        if kept == 0 {
            continue;
        }
        for (out_row, piece_row) in output.chunks_exact_mut(weight.outputs).zip(piece.chunks_exact(piece_width)) {
            out_row[first..first + kept].copy_from_slice(&piece_row[..kept]);
        }
    }
    output
}

/// Computes blocks `blocks` of every row into `output` (rows of `blocks.len() × BLOCK`).
fn run_blocks(kernel: Kernel, activations: &QuantizedRows, weight: &Int8Weight, blocks: std::ops::Range<usize>, output: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2
        && let Some(simd) = pulp::x86::V3::try_new()
    {
        <pulp::x86::V3 as pulp::Simd>::vectorize(simd, avx2::Blocks { simd, activations, weight, blocks, output });
        return;
    }
    let _ = kernel;
    scalar_blocks(activations, weight, blocks, output);
}

/// The portable kernel: the same sums and float operations as the AVX2 one.
fn scalar_blocks(activations: &QuantizedRows, weight: &Int8Weight, blocks: std::ops::Range<usize>, output: &mut [f32]) {
    let pairs = activations.pairs;
    let width = blocks.len() * BLOCK;
    if width == 0 {
        return;
    }
    for ((row, scale), out_row) in activations.values.chunks_exact(pairs.max(1)).zip(&activations.scales).zip(output.chunks_exact_mut(width)) {
        for (block, out_block) in blocks.clone().zip(out_row.chunks_exact_mut(BLOCK)) {
            let steps = &weight.packed[block * pairs * STEP..(block + 1) * pairs * STEP];
            let mut sums = [0_i32; BLOCK];
            for (&packed, step) in row.iter().zip(steps.chunks_exact(STEP)) {
                let (low, high) = (i32::from(packed as i16), i32::from((packed >> 16) as i16));
                for (lane, sum) in sums.iter_mut().enumerate() {
                    *sum += low * i32::from(step[2 * lane]) + high * i32::from(step[2 * lane + 1]);
                }
            }
            let scales = &weight.scales[block * BLOCK..(block + 1) * BLOCK];
            for ((out, sum), column_scale) in out_block.iter_mut().zip(sums).zip(scales) {
                *out = sum as f32 * (scale * column_scale);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The AVX2 kernel: register tiles of [`TILE_ROWS`] rows × [`TILE_BLOCKS`] blocks of i32
    //! sums, one `_mm256_madd_epi16` per row, block and input pair.

    use std::arch::x86_64::{__m128i, __m256};

    use pulp::x86::V3;

    use super::{BLOCK, Int8Weight, QuantizedRows, STEP, TILE_BLOCKS, TILE_ROWS};

    /// Blocks `blocks` of every row into `output`, compiled for AVX2 by [`V3::vectorize`].
    pub(super) struct Blocks<'a> {
        pub simd: V3,
        pub activations: &'a QuantizedRows,
        pub weight: &'a Int8Weight,
        pub blocks: std::ops::Range<usize>,
        pub output: &'a mut [f32],
    }

    impl pulp::WithSimd for Blocks<'_> {
        type Output = ();

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            let Self { simd, activations, weight, blocks, output } = self;
            let tiles = Tiles { simd, activations, weight, first_block: blocks.start, width: blocks.len() * BLOCK };
            let rows = activations.scales.len();
            let mut block = blocks.start;
            while block < blocks.end {
                let count = (blocks.end - block).min(TILE_BLOCKS);
                let mut row = 0;
                while row < rows {
                    let count_rows = (rows - row).min(TILE_ROWS);
                    match (count_rows, count) {
                        (4, 2) => tiles.tile::<4, 2>(row, block, output),
                        (4, _) => tiles.tile::<4, 1>(row, block, output),
                        (3, 2) => tiles.tile::<3, 2>(row, block, output),
                        (3, _) => tiles.tile::<3, 1>(row, block, output),
                        (2, 2) => tiles.tile::<2, 2>(row, block, output),
                        (2, _) => tiles.tile::<2, 1>(row, block, output),
                        (_, 2) => tiles.tile::<1, 2>(row, block, output),
                        (_, _) => tiles.tile::<1, 1>(row, block, output),
                    }
                    row += count_rows;
                }
                block += count;
            }
        }
    }

    /// What every tile of one call reads.
    struct Tiles<'a> {
        simd: V3,
        activations: &'a QuantizedRows,
        weight: &'a Int8Weight,
        /// The first block of the output's rows.
        first_block: usize,
        /// Length of an output row.
        width: usize,
    }

    impl Tiles<'_> {
        /// Rows `row..row + R` × blocks `block..block + C` into `output`.
        #[inline(always)]
        fn tile<const R: usize, const C: usize>(&self, row: usize, block: usize, output: &mut [f32]) {
            let simd = self.simd;
            let pairs = self.activations.pairs;
            // One slice of exactly `pairs` per row and per block, so that the loop below indexes
            // them without bounds checks.
            let values: [&[i32]; R] = std::array::from_fn(|r| &self.activations.values[(row + r) * pairs..][..pairs]);
            let steps: [&[[i8; STEP]]; C] =
                std::array::from_fn(|c| &self.weight.packed[(block + c) * pairs * STEP..][..pairs * STEP].as_chunks::<STEP>().0[..pairs]);
            let mut sums = [[simd.avx._mm256_setzero_si256(); C]; R];
            for pair in 0..pairs {
                let mut weights = [simd.avx._mm256_setzero_si256(); C];
                for (weight, steps) in weights.iter_mut().zip(steps) {
                    let bytes: __m128i = pulp::cast(steps[pair]);
                    *weight = simd.avx2._mm256_cvtepi8_epi16(bytes);
                }
                for (sums, values) in sums.iter_mut().zip(values) {
                    let activation = simd.avx._mm256_set1_epi32(values[pair]);
                    for (sum, weight) in sums.iter_mut().zip(weights) {
                        *sum = simd.avx2._mm256_add_epi32(*sum, simd.avx2._mm256_madd_epi16(activation, weight));
                    }
                }
            }
            for (r, sums) in sums.iter().enumerate() {
                let row_scale = simd.avx._mm256_set1_ps(self.activations.scales[row + r]);
                let out_row = &mut output[(row + r) * self.width..(row + r + 1) * self.width];
                for (c, sum) in sums.iter().enumerate() {
                    let channel = (block + c) * BLOCK;
                    let mut column_scales = [0.0_f32; BLOCK];
                    column_scales.copy_from_slice(&self.weight.scales[channel..channel + BLOCK]);
                    let scale = simd.avx._mm256_mul_ps(row_scale, pulp::cast::<[f32; BLOCK], __m256>(column_scales));
                    let value = simd.avx._mm256_mul_ps(simd.avx._mm256_cvtepi32_ps(*sum), scale);
                    let at = (block + c - self.first_block) * BLOCK;
                    out_row[at..at + BLOCK].copy_from_slice(&pulp::cast::<__m256, [f32; BLOCK]>(value));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};

    use super::*;

    /// `rows × columns` values uniform in ±`scale`, with a few outliers ten times larger (as
    /// BERT's activations have).
    fn random(rng: &mut StdRng, rows: usize, columns: usize, scale: f32) -> Vec<f32> {
        (0..rows * columns)
            .map(|index| {
                let value = rng.random_range(-scale..scale);
                if index % 97 == 5 { value * 10.0 } else { value }
            })
            .collect()
    }

    /// `input · weightᵀ` in f64.
    fn reference(input: &[f32], rows: usize, weight: &[f32], outputs: usize, inputs: usize) -> Vec<f64> {
        let mut product = vec![0.0_f64; rows * outputs];
        for row in 0..rows {
            let input_row = &input[row * inputs..(row + 1) * inputs];
            for output in 0..outputs {
                let weight_row = &weight[output * inputs..(output + 1) * inputs];
                product[row * outputs + output] = input_row.iter().zip(weight_row).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            }
        }
        product
    }

    /// Largest `|got − want|` over the largest `|want|`.
    fn relative_error(got: &[f32], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len());
        let largest = want.iter().fold(0.0_f64, |largest, value| largest.max(value.abs()));
        got.iter().zip(want).map(|(got, want)| (f64::from(*got) - want).abs()).fold(0.0, f64::max) / largest
    }

    /// The model's shapes (a 23-token text) and odd ones: `(rows, inputs, outputs)`.
    const SHAPES: [(usize, usize, usize); 8] =
        [(23, 384, 1152), (23, 384, 384), (23, 384, 1536), (23, 1536, 384), (1, 1, 1), (5, 7, 13), (9, 33, 17), (6, 129, 50)];

    #[test]
    fn product_matches_the_dequantised_weights_in_f64() {
        let mut rng = StdRng::seed_from_u64(7);
        for (rows, inputs, outputs) in SHAPES {
            let input = random(&mut rng, rows, inputs, 2.0);
            let weight = Int8Weight::quantize(&random(&mut rng, outputs, inputs, 0.1), outputs, inputs);
            let got = matmul(&input, rows, &weight);
            let want = reference(&input, rows, &weight.dequantize(), outputs, inputs);
            // Only the activations' rounding is left: at least 11,008 levels a row.
            let error = relative_error(&got, &want);
            assert!(error < 2e-4, "{rows}×{inputs}×{outputs}: relative error {error}");
        }
    }

    #[test]
    fn product_is_close_to_the_float_product() {
        let mut rng = StdRng::seed_from_u64(11);
        for (rows, inputs, outputs) in SHAPES {
            let input = random(&mut rng, rows, inputs, 2.0);
            let weight = random(&mut rng, outputs, inputs, 0.1);
            let got = matmul(&input, rows, &Int8Weight::quantize(&weight, outputs, inputs));
            let want = reference(&input, rows, &weight, outputs, inputs);
            // The weights' rounding: half a level of 127 per value, summed with random signs.
            let error = relative_error(&got, &want);
            assert!(error < 0.02, "{rows}×{inputs}×{outputs}: relative error {error}");
        }
    }

    #[test]
    fn dequantised_weights_are_within_half_a_level() {
        let mut rng = StdRng::seed_from_u64(3);
        let (outputs, inputs) = (13, 9);
        let weight = random(&mut rng, outputs, inputs, 1.0);
        let quantized = Int8Weight::quantize(&weight, outputs, inputs);
        for (row, quantized_row) in weight.chunks(inputs).zip(quantized.dequantize().chunks(inputs)) {
            let level = row.iter().fold(0.0_f32, |largest, value| largest.max(value.abs())) / WEIGHT_LEVELS;
            for (value, quantized) in row.iter().zip(quantized_row) {
                assert!((value - quantized).abs() <= 0.5 * level * 1.0001, "{value} became {quantized}");
            }
        }
    }

    #[test]
    fn scalar_and_avx2_give_the_same_bits() {
        if Kernel::detect() != Kernel::Avx2 {
            eprintln!("this CPU has no AVX2: only the scalar kernel runs here");
            return;
        }
        let mut rng = StdRng::seed_from_u64(5);
        for (rows, inputs, outputs) in SHAPES {
            let input = random(&mut rng, rows, inputs, 3.0);
            let weight = Int8Weight::quantize(&random(&mut rng, outputs, inputs, 0.2), outputs, inputs);
            let scalar = matmul_with(Kernel::Scalar, &input, rows, &weight);
            let simd = matmul_with(Kernel::Avx2, &input, rows, &weight);
            assert_eq!(scalar, simd, "{rows}×{inputs}×{outputs}");
        }
    }

    #[test]
    fn split_over_threads_gives_the_same_bits() {
        let mut rng = StdRng::seed_from_u64(9);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for (rows, inputs, outputs) in SHAPES {
            let input = random(&mut rng, rows, inputs, 1.0);
            let weight = Int8Weight::quantize(&random(&mut rng, outputs, inputs, 0.3), outputs, inputs);
            let alone = one.install(|| matmul(&input, rows, &weight));
            let split = three.install(|| matmul(&input, rows, &weight));
            assert_eq!(alone, split, "{rows}×{inputs}×{outputs}");
        }
    }

    #[test]
    fn extreme_values_do_not_overflow_the_sums() {
        // Every product at its largest, same sign: the i32 sums' worst case.
        for inputs in [1, 2, 384, 1536, 3000] {
            let (rows, outputs) = (2, 9);
            let input = vec![-5.0_f32; rows * inputs];
            let weight = vec![-0.25_f32; outputs * inputs];
            let quantized = Int8Weight::quantize(&weight, outputs, inputs);
            for kernel in [Kernel::Scalar, Kernel::detect()] {
                let got = matmul_with(kernel, &input, rows, &quantized);
                let want = 1.25 * inputs as f32;
                assert!(got.iter().all(|value| (value - want).abs() <= want * 1e-5), "{inputs} inputs: {got:?}, want {want}");
            }
        }
        assert_eq!(activation_levels(192), 32_767);
        assert_eq!(activation_levels(768), 11_008);
    }

    #[test]
    fn zero_rows_and_channels_stay_zero() {
        let (rows, inputs, outputs) = (3, 10, 11);
        let mut input = vec![1.0_f32; rows * inputs];
        input[inputs..2 * inputs].fill(0.0);
        let mut weight = vec![0.5_f32; outputs * inputs];
        weight[..inputs].fill(0.0);
        let got = matmul(&input, rows, &Int8Weight::quantize(&weight, outputs, inputs));
        for (row, values) in got.chunks(outputs).enumerate() {
            assert_eq!(values[0], 0.0);
            let want = if row == 1 { 0.0 } else { 5.0 };
            assert!(values[1..].iter().all(|value| (value - want).abs() < 1e-5), "row {row}: {values:?}");
        }
    }
}
