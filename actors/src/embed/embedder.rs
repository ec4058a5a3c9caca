//! The `Embedder` actor: one per node. It owns the embedding backend and batches concurrent
//! requests ([`Batcher`]): a batch goes out when `max_batch` texts wait or the oldest has waited
//! `max_wait`. The actor never waits on the work: each batch runs on a spawned task (the local
//! model on a blocking thread), which answers every caller itself and then tells the actor the
//! batch is done.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tokio::time::Instant;
use tracing::debug;

use crate::embed::{EmbedLoad, EmbedderSettings};
use crate::embed::backend::EmbedBackend;
use crate::embed::batch::{BatchSettings, Batcher, Plan};
use crate::embed::error::EmbedError;

/// The answer to one text.
pub type EmbedReply = Result<Vec<f32>, EmbedError>;

/// The actor. It holds no settings of its own: everything lives in [`EmbedderState`].
#[derive(Debug, Default)]
pub struct Embedder;

/// What the embedder is started with.
#[derive(Debug)]
pub struct EmbedderArgs {
    /// The ready backend.
    pub backend: EmbedBackend,
    /// How requests are batched.
    pub batch: BatchSettings,
    /// Observes the texts of every batch sent to the backend.
    pub batch_sizes: Option<prometheus::Histogram>,
    /// Where batches report what they cost.
    pub load: Arc<EmbedLoad>,
}

/// One caller's text and where its vector goes.
#[derive(Debug)]
pub struct EmbedRequest {
    /// The text to embed.
    pub text: String,
    /// Reply channel for RPC: the caller's vector or why there is none.
    pub reply: RpcReplyPort<EmbedReply>,
}

/// The embedder's state.
#[derive(Debug)]
pub struct EmbedderState {
    backend: EmbedBackend,
    batcher: Batcher<EmbedRequest>,
    batch_sizes: Option<prometheus::Histogram>,
    load: Arc<EmbedLoad>,
}

/// Messages to the embedder.
#[derive(Debug, RactorMessage)]
pub enum EmbedderMessage {
    /// Embeds one text.
    Embed(
        String,
        /// Reply channel for RPC: the text's unit-length vector or why there is none.
        RpcReplyPort<EmbedReply>,
    ),
    /// A batching deadline has passed (armed by the embedder itself).
    Deadline(Instant),
    /// A running batch has answered its callers.
    BatchFinished,
}

impl Actor for Embedder {
    type Msg = EmbedderMessage;
    type State = EmbedderState;
    type Arguments = EmbedderArgs;

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, args: EmbedderArgs) -> Result<EmbedderState, ActorProcessingErr> {
        Ok(EmbedderState { backend: args.backend, batcher: Batcher::new(args.batch), batch_sizes: args.batch_sizes, load: args.load })
    }

    async fn handle(&self, myself: ActorRef<Self::Msg>, message: EmbedderMessage, state: &mut EmbedderState) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        let plan = match message {
            EmbedderMessage::Embed(text, reply) => state.batcher.push(EmbedRequest { text, reply }, now),
            EmbedderMessage::Deadline(deadline) => state.batcher.on_timer(deadline, now),
            EmbedderMessage::BatchFinished => state.batcher.on_finished(now),
        };
        let Plan { run, timer } = plan;
        for batch in run {
            if let Some(sizes) = &state.batch_sizes {
                sizes.observe(batch.len() as f64);
            }
            start_batch(&myself, &state.backend, &state.load, batch);
        }
        if let Some(deadline) = timer {
            myself.send_after(deadline.saturating_duration_since(now), move || EmbedderMessage::Deadline(deadline));
        }
        Ok(())
    }
}

/// Runs one batch on its own task: callers that gave up are left out, every other caller gets
/// its vector (or the batch's error), then the actor hears that the batch is done.
fn start_batch(myself: &ActorRef<EmbedderMessage>, backend: &EmbedBackend, load: &Arc<EmbedLoad>, batch: Vec<EmbedRequest>) {
    let (texts, replies): (Vec<String>, Vec<RpcReplyPort<EmbedReply>>) =
        batch.into_iter().filter(|request| !request.reply.is_closed()).map(|request| (request.text, request.reply)).unzip();
    let backend = backend.clone();
    let myself = myself.clone();
    let load = Arc::clone(load);
    tokio::spawn(async move {
        if !texts.is_empty() {
            debug!(texts = texts.len(), "embedding batch");
            let (count, started) = (texts.len(), Instant::now());
            let embedded = backend.embed(texts).await;
            load.observe_batch(count, started.elapsed());
            match embedded {
                Ok(vectors) => {
                    for (reply, vector) in replies.into_iter().zip(vectors) {
                        let _caller_gone = reply.send(Ok(vector));
                    }
                }
                Err(error) => {
                    for reply in replies {
                        let _caller_gone = reply.send(Err(error.clone()));
                    }
                }
            }
        }
        let _embedder_gone = myself.cast(EmbedderMessage::BatchFinished);
    });
}

/// The embedder's address. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EmbedderHandle {
    /// The actor.
    pub actor: ActorRef<EmbedderMessage>,
    /// How busy it is.
    pub load: Arc<EmbedLoad>,
}

impl EmbedderHandle {
    /// Opens the backend (loading the local model on a blocking thread) and spawns the embedder.
    /// A missing model directory fails here, with [`EmbedError::ModelMissing`].
    pub async fn start(settings: EmbedderSettings) -> Result<(Self, ractor::ActorCell), EmbedError> {
        Self::start_observed(settings, None).await
    }

    /// [`EmbedderHandle::start`], observing every batch's size in `batch_sizes`.
    pub async fn start_observed(settings: EmbedderSettings, batch_sizes: Option<prometheus::Histogram>) -> Result<(Self, ractor::ActorCell), EmbedError> {
        settings.validate()?;
        let backend_settings = settings.backend;
        let backend = tokio::task::spawn_blocking(move || EmbedBackend::open(&backend_settings))
            .await
            .map_err(|error| EmbedError::Unavailable(format!("loading the backend failed: {error}")))??;
        let load = Arc::new(EmbedLoad::new(settings.batch.max_in_flight));
        let args = EmbedderArgs { backend, batch: settings.batch, batch_sizes, load: Arc::clone(&load) };
        let (actor, _join) =
            Actor::spawn(None, Embedder, args).await.map_err(|error| EmbedError::Unavailable(format!("failed to start the embedder: {error}")))?;
        let cell = actor.get_cell();
        Ok((Self { actor, load }, cell))
    }

    /// Embeds `text`, batched with whatever other texts are waiting: a unit-length vector.
    pub async fn embed(&self, text: String) -> Result<Vec<f32>, EmbedError> {
        let _outstanding = self.load.begin();
        ractor::call!(self.actor, EmbedderMessage::Embed, text).map_err(|error| EmbedError::Unavailable(error.to_string()))?
    }
}
