//! Sentence vectors of a pairs file's distinct texts, computed with the local MiniLM encoder and
//! kept on disk so that repeated fits and evaluations do not embed ~100k sentences again.
//!
//! The cache lives in `<cache dir>/<key>/vectors.f32` (little-endian `f32`s, one vector after the
//! other in the order of [`PairSet::texts`]); the key hashes the pairs file's bytes, the model's
//! weights and tokenizer, and the weight format the encoder ran with (f32 and int8 vectors are
//! kept apart; the f32 key is the one from before there was a choice). It is written in chunks and flushed after each, so an interrupted run
//! resumes where it stopped.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use switchyard_actors::embed::{LocalEncoder, LocalSettings, WeightFormat};
use xxhash_rust::xxh3::Xxh3;

use crate::semantic::pairs::PairSet;

/// Texts embedded per chunk: one call to the encoder, one append to the cache file.
const CHUNK_TEXTS: usize = 512;
/// Name of the vectors file inside a cache entry.
const VECTORS_FILE: &str = "vectors.f32";

/// One vector per text of a [`PairSet`]; texts that were not needed hold zeros.
#[derive(Clone, Debug)]
pub struct TextVectors {
    /// Length of each vector.
    pub dimensions: usize,
    /// The vectors, one after the other.
    values: Vec<f32>,
}

impl TextVectors {
    /// Vectors of `dimensions` values each, one after the other in the order of the texts.
    pub fn from_values(dimensions: usize, values: Vec<f32>) -> anyhow::Result<Self> {
        if dimensions == 0 || !values.len().is_multiple_of(dimensions) {
            bail!("{} values do not make vectors of {dimensions} dimensions", values.len());
        }
        Ok(Self { dimensions, values })
    }

    /// The vector of text `index`.
    pub fn vector(&self, index: usize) -> &[f32] {
        &self.values[index * self.dimensions..(index + 1) * self.dimensions]
    }
}

/// Where the vectors come from and go.
#[derive(Clone, Debug)]
pub struct EmbeddingSource {
    /// The local model directory.
    pub model_dir: PathBuf,
    /// The cache directory (e.g. `target/semantic-eval`); `None` embeds without caching.
    pub cache_dir: Option<PathBuf>,
    /// How the encoder holds its dense layers' weights.
    pub weights: WeightFormat,
}

/// Vectors of `set`'s texts. With `needed_texts` = `None` every text is embedded and the result
/// cached; with a subset, a complete cache is used if there is one, and otherwise only the subset
/// is embedded, in memory (quick runs on a few pairs).
pub fn text_vectors(
    set: &PairSet,
    needed_texts: Option<&[usize]>,
    source: &EmbeddingSource,
) -> anyhow::Result<TextVectors> {
    let encoder =
        LocalEncoder::open(&LocalSettings { weights: source.weights, ..LocalSettings::new(&source.model_dir) }).with_context(|| {
            format!(
                "failed to open the embedding model in {}",
                source.model_dir.display()
            )
        })?;
    let dimensions = encoder.dimensions();
    let cache_path = match &source.cache_dir {
        Some(cache_dir) => Some(
            cache_dir
                .join(format!("{:016x}", cache_key(set, &source.model_dir, source.weights)?))
                .join(VECTORS_FILE),
        ),
        None => None,
    };
    let cached_count = match &cache_path {
        Some(path) => complete_vectors(path, dimensions)?,
        None => 0,
    };
    let needs_all = needed_texts.is_none();
    if let Some(path) = &cache_path
        && (cached_count == set.texts.len() || needs_all)
    {
        if cached_count < set.texts.len() {
            fill_cache(&encoder, set, path, cached_count)?;
        }
        return read_cache(path, dimensions, set.texts.len());
    }
    let indices: Vec<usize> = match needed_texts {
        Some(indices) => indices.to_vec(),
        None => (0..set.texts.len()).collect(),
    };
    let mut values = vec![0.0_f32; set.texts.len() * dimensions];
    for chunk in indices.chunks(CHUNK_TEXTS) {
        let texts: Vec<String> = chunk
            .iter()
            .map(|&index| set.texts[index].clone())
            .collect();
        let vectors = encoder.embed(&texts).context("failed to embed texts")?;
        for (&index, vector) in chunk.iter().zip(vectors) {
            values[index * dimensions..(index + 1) * dimensions].copy_from_slice(&vector);
        }
    }
    Ok(TextVectors { dimensions, values })
}

/// The cache key: the pairs file's bytes, the model's weights, config and tokenizer, and the
/// weight format (hashed only when it is not f32, so that f32 caches keep their key).
fn cache_key(set: &PairSet, model_dir: &Path, weights: WeightFormat) -> anyhow::Result<u64> {
    let mut hasher = Xxh3::new();
    hasher.update(&set.content_hash.to_le_bytes());
    for name in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "sentence_bert_config.json",
    ] {
        let path = model_dir.join(name);
        let bytes =
            std::fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
        hasher.update(name.as_bytes());
        hasher.update(&bytes);
    }
    if weights != WeightFormat::F32 {
        hasher.update(b"weights=");
        hasher.update(weights.name().as_bytes());
    }
    Ok(hasher.digest())
}

/// Whole vectors already in the cache file (0 if it does not exist).
fn complete_vectors(path: &Path, dimensions: usize) -> anyhow::Result<usize> {
    match std::fs::metadata(path) {
        Ok(metadata) => {
            Ok(usize::try_from(metadata.len()).context("cache file too large")? / (dimensions * 4))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(error).with_context(|| format!("failed to inspect {}", path.display())),
    }
}

/// Embeds the texts from `start` on and appends them to the cache file, a chunk at a time.
fn fill_cache(
    encoder: &LocalEncoder,
    set: &PairSet,
    path: &Path,
    start: usize,
) -> anyhow::Result<()> {
    let dimensions = encoder.dimensions();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    // Drop a partly written vector left by an interrupted run.
    file.set_len((start * dimensions * 4) as u64)
        .with_context(|| format!("failed to truncate {}", path.display()))?;
    let total = set.texts.len();
    eprintln!(
        "embedding {} of {total} texts into {}",
        total - start,
        path.display()
    );
    let started = Instant::now();
    let mut done = start;
    while done < total {
        let end = (done + CHUNK_TEXTS).min(total);
        let vectors = encoder
            .embed(&set.texts[done..end])
            .context("failed to embed texts")?;
        let mut bytes = Vec::with_capacity((end - done) * dimensions * 4);
        for vector in &vectors {
            if vector.len() != dimensions {
                bail!(
                    "the encoder returned a vector of {} values, not {dimensions}",
                    vector.len()
                );
            }
            for value in vector {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
        }
        file.write_all(&bytes)
            .with_context(|| format!("failed to write {}", path.display()))?;
        file.flush()
            .with_context(|| format!("failed to write {}", path.display()))?;
        done = end;
        let rate = (done - start) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        eprintln!("embedded {done}/{total} ({rate:.0} texts/s)");
    }
    Ok(())
}

/// Reads a complete cache file of `count` vectors.
fn read_cache(path: &Path, dimensions: usize, count: usize) -> anyhow::Result<TextVectors> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    if bytes.len() < count * dimensions * 4 {
        bail!(
            "embedding cache {} holds {} bytes, fewer than {count} vectors",
            path.display(),
            bytes.len()
        );
    }
    let values = bytes
        .chunks_exact(4)
        .take(count * dimensions)
        .map(|word| f32::from_le_bytes([word[0], word[1], word[2], word[3]]))
        .collect();
    Ok(TextVectors { dimensions, values })
}
