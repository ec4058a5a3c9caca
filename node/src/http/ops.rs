//! Operational endpoints: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::http::AppState;

/// `GET /health`: the process is up.
pub async fn health() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// `GET /ready`: the node takes requests (not draining for shutdown, and its cost ledger takes
/// writes). A clustered node says how many members it sees on a second line, and that it is
/// degraded when it reaches no peer: it still serves alone, so it stays ready.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let cluster = crate::cluster::readiness_line(&state.gateway.cluster_status()).map(|line| format!("{line}\n")).unwrap_or_default();
    let unwritten = state.gateway.ledger_backlog();
    if !state.gateway.accepting() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("draining\n{cluster}"))
    } else if unwritten > 0 {
        (StatusCode::SERVICE_UNAVAILABLE, format!("cost ledger cannot write: {unwritten} bytes of cost events waiting\n{cluster}"))
    } else {
        (StatusCode::OK, format!("ready\n{cluster}"))
    }
}

/// `GET /metrics`: every metric in the Prometheus text format, counting every request settled
/// before the scrape (the actors' outboxes are taken first).
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.gateway.flush_reports().await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.gateway.metrics().render())
}
