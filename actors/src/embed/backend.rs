//! [`EmbedBackend`]: the local model or a remote server behind one async call, so the embedder
//! batches the same way for both.

use std::sync::Arc;

use crate::embed::error::EmbedError;
use crate::embed::local::{LocalEncoder, LocalSettings};
use crate::embed::remote::{RemoteEncoder, RemoteSettings};

/// Which backend computes the embeddings.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendSettings {
    /// all-MiniLM-L6-v2 on this node's CPU.
    Local(LocalSettings),
    /// An OpenAI-compatible `/v1/embeddings` server.
    Remote(RemoteSettings),
}

/// A ready backend. Cheap to clone.
#[derive(Clone, Debug)]
pub enum EmbedBackend {
    /// The loaded local model.
    Local(Arc<LocalEncoder>),
    /// The remote server's client.
    Remote(RemoteEncoder),
}

impl EmbedBackend {
    /// Loads the model or builds the client. Blocking for the local model (it reads ~90 MB).
    pub fn open(settings: &BackendSettings) -> Result<Self, EmbedError> {
        match settings {
            BackendSettings::Local(local) => Ok(Self::Local(Arc::new(LocalEncoder::open(local)?))),
            BackendSettings::Remote(remote) => Ok(Self::Remote(RemoteEncoder::new(remote.clone())?)),
        }
    }

    /// Embeds `texts`, one unit-length vector each, in order. The local model runs on a blocking
    /// thread, never on the async runtime's workers.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        match self {
            Self::Local(encoder) => {
                let encoder = Arc::clone(encoder);
                tokio::task::spawn_blocking(move || encoder.embed(&texts))
                    .await
                    .map_err(|error| EmbedError::Inference(format!("embedding thread failed: {error}")))?
            }
            Self::Remote(client) => client.embed(&texts).await,
        }
    }
}
