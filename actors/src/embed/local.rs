//! The local backend: all-MiniLM-L6-v2 (a 6-layer BERT) on the CPU, read from a model
//! directory holding `config.json`, `model.safetensors`, `tokenizer.json` and
//! `sentence_bert_config.json` (see `scripts/fetch-model`).
//!
//! Texts are truncated at the model's `max_seq_length`, run through the encoder ([`Bert`]:
//! sequences packed without padding), mean-pooled over their tokens and L2-normalised, as
//! sentence-transformers does. A batch is sorted by token length and cut into passes
//! ([`plan_buckets`]) no larger than a token budget. Passes are packed, so padding costs nothing
//! and by default only the budget cuts them: one larger matrix product is cheaper than several
//! small ones.
//!
//! The dense layers' weights are held as [`LocalSettings::weights`] says: f32 as the model file
//! has them, or int8 with a scale per output channel (quantised at load, see `int8`), which
//! reads a quarter of the bytes per pass and moves the vectors by a cosine of 0.9996 on average
//! (0.9966 at worst on 14,833 questions); int8 is the default.
//!
//! Each forward pass runs on a thread pool of its own ([`LocalSettings::passes`] pools of
//! [`LocalSettings::threads_per_pass`] threads): by default one single-threaded pool per core, so
//! that two batches in flight run side by side without the per-operation thread barriers that a
//! pass split over both cores pays on matrices this small. A small batch that finds no pass
//! running takes every pool and runs on a pool of all their threads instead: alone, a text is
//! faster split over the cores (barriers and all) than on one.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use tokenizers::{Tokenizer, TruncationParams};

use crate::embed::bert::{Bert, WeightFormat};
use crate::embed::error::EmbedError;

/// Most texts a batch may carry to run on the wide pool (every pass's threads at once).
pub const WIDE_MAX_TEXTS: usize = 4;

/// What the local backend is started with.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalSettings {
    /// The model directory, e.g. `.models/all-MiniLM-L6-v2`.
    pub model_dir: PathBuf,
    /// How the texts of one batch are grouped into forward passes.
    pub buckets: BucketSettings,
    /// Forward passes that may run at once, each on a thread pool of its own (default: one per
    /// core). Batches beyond this many share a pool and take turns.
    pub passes: usize,
    /// Threads each pass's matrix products are split over (default 1: on small matrices the
    /// split costs more in synchronisation than it gains).
    pub threads_per_pass: usize,
    /// Run the passes' threads at idle scheduling priority (Linux `SCHED_IDLE`): they then take
    /// only the CPU the rest of the node leaves, so embedding never slows the request pipeline.
    pub idle_priority: bool,
    /// How the dense layers' weights are held and multiplied (f32 or int8).
    pub weights: WeightFormat,
}

impl LocalSettings {
    /// Settings for the model in `model_dir`: default bucketing, one single-threaded pass per
    /// core.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            buckets: BucketSettings::default(),
            passes: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            threads_per_pass: 1,
            idle_priority: false,
            weights: WeightFormat::default(),
        }
    }
}

/// How a batch is cut into forward passes. Passes are packed (no padding is computed); a
/// bucket's "padding" is the difference between its longest text, times its size, and its real
/// tokens, which bounds how unlike each other the lengths of one pass are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketSettings {
    /// Most tokens (counted as if padded) in one forward pass; a longer bucket is split.
    pub max_tokens: usize,
    /// Most padding a bucket may carry, as a fraction of its real tokens (0.25: a quarter).
    pub max_padding: f32,
}

impl Default for BucketSettings {
    /// Passes of at most 2,048 tokens, whatever the spread of lengths.
    fn default() -> Self {
        Self { max_tokens: 2048, max_padding: f32::INFINITY }
    }
}

impl BucketSettings {
    /// One forward pass for the whole batch, however many tokens it has (for comparisons).
    pub fn single_pass() -> Self {
        Self { max_tokens: usize::MAX, max_padding: f32::INFINITY }
    }
}

/// Groups sequences of the given token `lengths` into forward passes: indices sorted by length,
/// cut where the next sequence would push the bucket's padding over `max_padding` of its real
/// tokens or its padded size over `max_tokens`. Every index appears exactly once.
pub fn plan_buckets(lengths: &[usize], settings: BucketSettings) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&index| lengths[index]);
    let mut buckets = Vec::new();
    let mut bucket: Vec<usize> = Vec::new();
    let mut real_tokens = 0_usize;
    for index in order {
        let length = lengths[index];
        let padded = length.saturating_mul(bucket.len() + 1);
        let too_big = padded > settings.max_tokens;
        let too_padded = padded as f64 > (real_tokens + length) as f64 * (1.0 + f64::from(settings.max_padding));
        if !bucket.is_empty() && (too_big || too_padded) {
            buckets.push(std::mem::take(&mut bucket));
            real_tokens = 0;
        }
        bucket.push(index);
        real_tokens += length;
    }
    if !bucket.is_empty() {
        buckets.push(bucket);
    }
    buckets
}

/// The loaded model and tokenizer. Synchronous and CPU-bound: call it from a blocking thread.
pub struct LocalEncoder {
    model: Bert,
    tokenizer: Tokenizer,
    dimensions: usize,
    max_seq_length: usize,
    buckets: BucketSettings,
    /// One thread pool per pass that may run at once.
    pools: Vec<rayon::ThreadPool>,
    /// Every pass's threads in one pool, for a small batch that finds no other pass running:
    /// a lone text then has every core the embedder may use (`None` with a single pass).
    wide_pool: Option<rayon::ThreadPool>,
    /// Indices of the pools no pass is running on.
    idle_pools: Mutex<Vec<usize>>,
}

impl std::fmt::Debug for LocalEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEncoder")
            .field("dimensions", &self.dimensions)
            .field("max_seq_length", &self.max_seq_length)
            .field("buckets", &self.buckets)
            .field("passes", &self.pools.len())
            .finish_non_exhaustive()
    }
}

/// Puts the calling thread on the idle scheduling policy; where the system refuses or has none,
/// the thread keeps its priority and the refusal is logged.
fn lower_to_idle_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id};
        let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(error) = set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, policy) {
            tracing::warn!(?error, "the embedding thread keeps its scheduling priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        if let Err(error) = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min) {
            tracing::warn!(?error, "the embedding thread keeps its scheduling priority");
        }
    }
}

/// `sentence_bert_config.json`: the sequence length sentence-transformers truncates at.
#[derive(serde::Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

impl LocalEncoder {
    /// Loads the model in `settings.model_dir`. A missing directory or file is
    /// [`EmbedError::ModelMissing`], naming it.
    pub fn open(settings: &LocalSettings) -> Result<Self, EmbedError> {
        let dir = &settings.model_dir;
        if !dir.is_dir() {
            return Err(EmbedError::ModelMissing { path: dir.clone() });
        }
        let config_path = required_file(dir, "config.json")?;
        let weights_path = required_file(dir, "model.safetensors")?;
        let tokenizer_path = required_file(dir, "tokenizer.json")?;
        let sentence_config_path = required_file(dir, "sentence_bert_config.json")?;

        let config: Config = read_json(&config_path)?;
        let sentence_config: SentenceBertConfig = read_json(&sentence_config_path)?;
        if sentence_config.max_seq_length == 0 || sentence_config.max_seq_length > config.max_position_embeddings {
            return Err(EmbedError::ModelInvalid {
                path: sentence_config_path,
                reason: format!(
                    "max_seq_length {} is not within 1..={}",
                    sentence_config.max_seq_length, config.max_position_embeddings
                ),
            });
        }

        let weights = std::fs::read(&weights_path).map_err(|error| invalid(&weights_path, error))?;
        let model = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .and_then(|variables| Bert::load(variables, &config, settings.weights))
            .map_err(|error| invalid(&weights_path, error))?;

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|error| invalid(&tokenizer_path, error))?;
        // The file carries its own truncation (128) and fixed padding; sentence-transformers uses
        // max_seq_length and pads per batch, which the buckets do here.
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: sentence_config.max_seq_length, ..Default::default() }))
            .map_err(|error| invalid(&tokenizer_path, error))?;
        tokenizer.with_padding(None);

        let idle_priority = settings.idle_priority;
        let pool = |name: String, threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(move |thread| format!("{name}-{thread}"))
                .start_handler(move |_| {
                    if idle_priority {
                        lower_to_idle_priority();
                    }
                })
                .build()
                .map_err(|error| EmbedError::Unavailable(format!("failed to start the embedding threads: {error}")))
        };
        let (passes, threads_per_pass) = (settings.passes.max(1), settings.threads_per_pass.max(1));
        let pools = (0..passes).map(|index| pool(format!("embed-pass-{index}"), threads_per_pass)).collect::<Result<Vec<_>, _>>()?;
        let wide_pool = (passes > 1).then(|| pool("embed-wide".into(), passes * threads_per_pass)).transpose()?;
        Ok(Self {
            model,
            tokenizer,
            dimensions: config.hidden_size,
            max_seq_length: sentence_config.max_seq_length,
            buckets: settings.buckets,
            idle_pools: Mutex::new((0..pools.len()).rev().collect()),
            pools,
            wide_pool,
        })
    }

    /// Length of the vectors this model produces (384 for all-MiniLM-L6-v2).
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Tokens (special tokens included) past which a text is truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Token counts of `texts` after truncation, special tokens included.
    pub fn token_lengths(&self, texts: &[String]) -> Result<Vec<usize>, EmbedError> {
        Ok(self.tokenize(texts)?.iter().map(Vec::len).collect())
    }

    /// Embeds `texts`: one unit-length vector per text, in order. Runs on an idle pass pool (the
    /// calling thread waits); when every pool is busy, it queues on the first. A batch of at
    /// most [`WIDE_MAX_TEXTS`] texts that finds every pool idle runs on the wide pool instead,
    /// holding all of them.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.len() <= WIDE_MAX_TEXTS
            && let Some(wide) = &self.wide_pool
        {
            let everything = PoolLease::take_all(&self.idle_pools, self.pools.len());
            if !everything.indices.is_empty() {
                return wide.install(|| self.embed_on_this_thread(texts));
            }
        }
        let lease = PoolLease::take(&self.idle_pools);
        let pool = lease.indices.first().and_then(|index| self.pools.get(*index)).or(self.pools.first());
        match pool {
            Some(pool) => pool.install(|| self.embed_on_this_thread(texts)),
            None => self.embed_on_this_thread(texts),
        }
    }

    /// [`Self::embed`] on the calling thread (matrix products use its rayon pool, if any).
    fn embed_on_this_thread(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let token_ids = self.tokenize(texts)?;
        let lengths: Vec<usize> = token_ids.iter().map(Vec::len).collect();
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for bucket in plan_buckets(&lengths, self.buckets) {
            let sequences: Vec<&[u32]> = bucket.iter().map(|&index| token_ids[index].as_slice()).collect();
            let pooled = self.model.embed(&sequences).map_err(|error| EmbedError::Inference(format!("model: {error}")))?;
            for (index, vector) in bucket.into_iter().zip(pooled) {
                vectors[index] = vector;
            }
        }
        Ok(vectors)
    }

    /// Token ids per text, truncated, with `[CLS]` and `[SEP]`.
    fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, EmbedError> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|error| EmbedError::Inference(format!("tokenizer: {error}")))?;
        Ok(encodings.into_iter().map(|encoding| encoding.get_ids().to_vec()).collect())
    }
}

/// Pass pools taken from the idle list for one call, put back when dropped.
struct PoolLease<'a> {
    idle: &'a Mutex<Vec<usize>>,
    /// The pools taken; empty when none was idle.
    indices: Vec<usize>,
}

impl<'a> PoolLease<'a> {
    /// One idle pool, if any.
    fn take(idle: &'a Mutex<Vec<usize>>) -> Self {
        let indices = idle.lock().unwrap_or_else(PoisonError::into_inner).pop().into_iter().collect();
        Self { idle, indices }
    }

    /// All `total` pools when every one is idle; none otherwise.
    fn take_all(idle: &'a Mutex<Vec<usize>>, total: usize) -> Self {
        let mut list = idle.lock().unwrap_or_else(PoisonError::into_inner);
        let indices = if list.len() == total { std::mem::take(&mut *list) } else { Vec::new() };
        Self { idle, indices }
    }
}

impl Drop for PoolLease<'_> {
    fn drop(&mut self) {
        if !self.indices.is_empty() {
            self.idle.lock().unwrap_or_else(PoisonError::into_inner).append(&mut self.indices);
        }
    }
}

/// `dir/name`, or [`EmbedError::ModelMissing`] naming it.
fn required_file(dir: &Path, name: &str) -> Result<PathBuf, EmbedError> {
    let path = dir.join(name);
    if path.is_file() { Ok(path) } else { Err(EmbedError::ModelMissing { path }) }
}

/// Parses a JSON file of the model directory.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|error| invalid(path, error))?;
    serde_json::from_str(&text).map_err(|error| invalid(path, error))
}

/// [`EmbedError::ModelInvalid`] for `path`.
fn invalid(path: &Path, error: impl std::fmt::Display) -> EmbedError {
    EmbedError::ModelInvalid { path: path.to_path_buf(), reason: error.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut buckets: Vec<Vec<usize>>) -> Vec<usize> {
        let mut all: Vec<usize> = buckets.iter_mut().flat_map(|bucket| bucket.drain(..)).collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn equal_lengths_share_one_bucket() {
        let buckets = plan_buckets(&[10; 8], BucketSettings::default());
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets[0].len(), 8);
    }

    #[test]
    fn short_and_long_texts_are_not_padded_together() {
        let lengths = [8, 200, 9, 10, 210, 8];
        let buckets = plan_buckets(&lengths, BucketSettings { max_tokens: 2048, max_padding: 0.25 });
        assert_eq!(buckets, vec![vec![0, 5, 2, 3], vec![1, 4]]);
    }

    #[test]
    fn by_default_only_the_token_budget_cuts() {
        let lengths = [8, 200, 9, 10, 210, 8];
        assert_eq!(plan_buckets(&lengths, BucketSettings::default()), vec![vec![0, 5, 2, 3, 1, 4]]);
        let long = vec![300; 10];
        assert_eq!(plan_buckets(&long, BucketSettings::default()).len(), 2);
    }

    #[test]
    fn padding_stays_within_the_bound() {
        let lengths: Vec<usize> = (0..200).map(|index| 3 + (index * 37) % 120).collect();
        let settings = BucketSettings { max_tokens: usize::MAX, max_padding: 0.25 };
        let buckets = plan_buckets(&lengths, settings);
        for bucket in &buckets {
            let real: usize = bucket.iter().map(|&index| lengths[index]).sum();
            let longest = bucket.iter().map(|&index| lengths[index]).max().unwrap();
            assert!((longest * bucket.len()) as f64 <= real as f64 * 1.25 + 1e-9);
        }
        assert_eq!(sorted(buckets), (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn token_budget_splits_large_buckets() {
        let settings = BucketSettings { max_tokens: 100, max_padding: 0.25 };
        let buckets = plan_buckets(&[10; 25], settings);
        assert_eq!(buckets.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 5]);
    }

    #[test]
    fn one_sequence_over_the_budget_gets_its_own_bucket() {
        let settings = BucketSettings { max_tokens: 100, max_padding: 0.25 };
        assert_eq!(plan_buckets(&[256, 256], settings), vec![vec![0], vec![1]]);
    }

    #[test]
    fn single_pass_keeps_everything_together() {
        let buckets = plan_buckets(&[3, 250, 17], BucketSettings::single_pass());
        assert_eq!(buckets.len(), 1);
        assert_eq!(sorted(buckets), vec![0, 1, 2]);
    }

    #[test]
    fn nothing_to_plan() {
        assert!(plan_buckets(&[], BucketSettings::default()).is_empty());
    }

    #[test]
    fn missing_directory_names_it_and_the_fetch_command() {
        let error = LocalEncoder::open(&LocalSettings::new("/nonexistent/model-dir")).unwrap_err();
        assert_eq!(error, EmbedError::ModelMissing { path: PathBuf::from("/nonexistent/model-dir") });
        let message = error.to_string();
        assert!(message.contains("/nonexistent/model-dir"), "{message}");
        assert!(message.contains("run scripts/fetch-model"), "{message}");
    }
}
