//! [`EmbedError`]: what embedding a text can fail with, from loading the model to a remote
//! server's answer.

use std::path::PathBuf;

/// Why a text got no embedding. Cloneable: one failed batch answers every caller in it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EmbedError {
    /// The local model directory, or a file it must hold, does not exist.
    #[error("embedding model not found at \"{}\": run scripts/fetch-model", .path.display())]
    ModelMissing {
        /// The directory or file that is missing.
        path: PathBuf,
    },
    /// The model files exist but could not be read or do not describe a usable model.
    #[error("failed to load the embedding model from \"{}\": {reason}", .path.display())]
    ModelInvalid {
        /// The file that is at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The embedder's settings are out of range.
    #[error("invalid embedder settings: {0}")]
    InvalidSettings(String),
    /// Tokenising or running the local model failed.
    #[error("local embedding failed: {0}")]
    Inference(String),
    /// The remote embeddings server could not be reached or did not answer in time.
    #[error("embeddings request to {url} failed: {reason}")]
    RemoteUnreachable {
        /// The `/embeddings` URL.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The remote server answered with an error status.
    #[error("embeddings server {url} answered {status}: {body}")]
    RemoteStatus {
        /// The `/embeddings` URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The remote server answered 2xx with something that is not the embeddings asked for.
    #[error("embeddings server {url} sent an unusable answer: {reason}")]
    RemoteMalformed {
        /// The `/embeddings` URL.
        url: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// The embedder actor is gone or could not be started.
    #[error("the embedder is unavailable: {0}")]
    Unavailable(String),
}
