//! The HTTP front door: route table only. Handlers live in [`openai`] (the OpenAI-compatible
//! API) and [`ops`] (health, readiness, metrics).

pub mod openai;
pub mod ops;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use switchyard_actors::pipeline::Gateway;

/// Shared by every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The pipeline.
    pub gateway: Arc<Gateway>,
}

/// Every HTTP route.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .with_state(AppState { gateway })
}
