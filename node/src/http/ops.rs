//! Operational endpoints: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::http::AppState;

/// `GET /health`: the process is up.
pub async fn health() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// `GET /ready`: the node takes requests (not draining for shutdown).
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.gateway.accepting() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    }
}

/// `GET /metrics`: every metric in the Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.gateway.metrics().render())
}
