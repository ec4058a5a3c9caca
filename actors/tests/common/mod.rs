//! Shared by the tests that run the local embedding model.

use std::path::PathBuf;

use switchyard_actors::embed::{DEFAULT_MODEL_DIR, EmbedError, MODEL_DIR_ENV};

/// The model directory: `EMBEDDING_MODEL_DIR`, or where `scripts/fetch-model` puts it. Missing,
/// the test fails with the command that fetches it.
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os(MODEL_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(DEFAULT_MODEL_DIR));
    if !dir.is_dir() {
        panic!("{}", EmbedError::ModelMissing { path: dir });
    }
    dir
}
