//! Sentence embeddings for the semantic cache.
//!
//! - [`embedder`]: the `Embedder` actor, one per node, and the [`EmbedderHandle`] callers use.
//! - [`batch`]: the actor's batching (max batch, max wait, batches in flight) as plain state.
//! - [`load`]: how busy the embedder is, read by request tasks to shed before queueing.
//! - [`backend`]: the local model or a remote server behind one call.
//! - [`local`]: all-MiniLM-L6-v2 on the CPU, with length-bucketed passes on per-pass thread pools.
//! - [`bert`]: the BERT encoder forward pass the local backend runs (packed, no padding).
//! - [`int8`]: the dense layers' matrix product with int8 weights (AVX2 or portable).
//! - [`remote`]: a client of OpenAI-compatible `/v1/embeddings` servers.
//! - [`pooling`]: masked mean pooling, L2 normalisation and cosine on plain slices.
//! - [`error`]: what embedding can fail with, [`EmbedError`].

pub mod backend;
pub mod batch;
pub mod bert;
pub mod embedder;
pub mod error;
pub use switchyard_int8 as int8;
pub mod load;
pub mod local;
pub mod pooling;
pub mod remote;

use std::path::PathBuf;
use std::time::Duration;

pub use backend::{BackendSettings, EmbedBackend};
pub use bert::WeightFormat;
pub use batch::BatchSettings;
pub use embedder::{Embedder, EmbedderHandle, EmbedderMessage};
pub use error::EmbedError;
pub use load::EmbedLoad;
pub use local::{BucketSettings, LocalEncoder, LocalSettings};
pub use remote::{RemoteEncoder, RemoteSettings};

/// Where `scripts/fetch-model` puts the local model, relative to the repository root.
pub const DEFAULT_MODEL_DIR: &str = ".models/all-MiniLM-L6-v2";

/// Environment variable naming another local model directory (tests and benchmarks). Not
/// `SWITCHYARD_`-prefixed: those are config overrides, and an unknown one stops the node.
pub const MODEL_DIR_ENV: &str = "EMBEDDING_MODEL_DIR";

/// The embedder's validated settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedderSettings {
    /// Which backend computes the vectors.
    pub backend: BackendSettings,
    /// How concurrent requests are batched.
    pub batch: BatchSettings,
}

impl EmbedderSettings {
    /// The local model in `model_dir`: batches of up to 64 texts, 2 ms of waiting for
    /// companions, as many batches at once as the model runs passes (one per core, each on one
    /// thread).
    pub fn local(model_dir: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self::local_on(model_dir, cores)
    }

    /// The local model on at most `cores` cores: one single-threaded pass per core, as many
    /// batches in flight. The rest of the node's cores stay with the request pipeline.
    pub fn local_on(model_dir: impl Into<PathBuf>, cores: usize) -> Self {
        let local = LocalSettings { passes: cores.max(1), ..LocalSettings::new(model_dir) };
        let max_in_flight = local.passes;
        Self {
            backend: BackendSettings::Local(local),
            batch: BatchSettings { max_batch: 64, max_wait: Duration::from_millis(2), max_in_flight },
        }
    }

    /// A remote server: batches of up to 64 texts, 5 ms of waiting, four requests in flight.
    pub fn remote(remote: RemoteSettings) -> Self {
        Self {
            backend: BackendSettings::Remote(remote),
            batch: BatchSettings { max_batch: 64, max_wait: Duration::from_millis(5), max_in_flight: 4 },
        }
    }

    /// Checks the batching limits.
    pub fn validate(&self) -> Result<(), EmbedError> {
        if self.batch.max_batch == 0 {
            return Err(EmbedError::InvalidSettings("max_batch must be at least 1".into()));
        }
        if self.batch.max_in_flight == 0 {
            return Err(EmbedError::InvalidSettings("max_in_flight must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused() {
        let mut settings = EmbedderSettings::local(DEFAULT_MODEL_DIR);
        assert!(settings.validate().is_ok());
        settings.batch.max_batch = 0;
        assert!(settings.validate().unwrap_err().to_string().contains("max_batch"));
        settings.batch.max_batch = 1;
        settings.batch.max_in_flight = 0;
        assert!(settings.validate().unwrap_err().to_string().contains("max_in_flight"));
    }
}
