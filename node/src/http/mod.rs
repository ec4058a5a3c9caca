//! The HTTP front door: route table only. Handlers live in [`openai`] (the OpenAI-compatible
//! API), [`anthropic`] (the Anthropic-compatible Messages API), [`admin`] (the Admin API) and
//! [`ops`] (health, readiness, metrics); [`headers`] holds the `x-switchyard-*` headers the two
//! model APIs share and [`body`] the reading of their JSON bodies.

pub mod admin;
pub mod anthropic;
pub mod body;
pub mod headers;
pub mod openai;
pub mod ops;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use switchyard_actors::pipeline::Gateway;

use crate::batch::Batches;

/// Shared by every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The pipeline.
    pub gateway: Arc<Gateway>,
    /// Files and batch jobs.
    pub batches: Arc<Batches>,
}

/// Every HTTP route.
pub fn router(gateway: Arc<Gateway>, batches: Arc<Batches>) -> Router {
    let upload_limit = DefaultBodyLimit::max(batches.settings().max_file_bytes.saturating_add(64 * 1024));
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/embeddings", post(openai::embeddings::embeddings))
        .route("/v1/files", post(openai::batches::upload_file).layer(upload_limit))
        .route("/v1/files/{id}", get(openai::batches::file))
        .route("/v1/files/{id}/content", get(openai::batches::file_content))
        .route("/v1/batches", post(openai::batches::create).get(openai::batches::list))
        .route("/v1/batches/{id}", get(openai::batches::batch))
        .route("/v1/batches/{id}/cancel", post(openai::batches::cancel))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/admin/v1/cost/daily", get(admin::daily))
        .route("/admin/v1/cost/by-model", get(admin::by_model))
        .route("/admin/v1/cost/by-user", get(admin::by_user))
        .route("/admin/v1/cost/by-tenant", get(admin::by_tenant))
        .route("/admin/v1/cost/by-feature", get(admin::by_feature))
        .route("/admin/v1/experiments", get(admin::experiments))
        .route("/admin/v1/experiments/{name}/weights", post(admin::set_weights))
        .route("/admin/v1/cost/savings", get(admin::savings))
        .route("/admin/v1/budget", get(admin::budget))
        .route("/admin/v1/cache/invalidate", post(admin::invalidate))
        .route("/admin/v1/cluster", get(admin::cluster))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .with_state(AppState { gateway, batches })
}
