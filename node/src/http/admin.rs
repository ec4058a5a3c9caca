//! The Admin API over HTTP JSON, guarded by the admin key: cost by day, model, user and tenant,
//! top users, cache savings, and a user's budget state. Amounts are given both as dollars
//! (`…_usd`) and as exact nanodollars (`…_nano_usd`).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use switchyard_actors::budget::{CostQuery, CostReport, NanoUsd};
use switchyard_actors::error::GatewayError;

use crate::admin;
use crate::http::AppState;
use crate::http::openai::error_response;

fn money(amount: NanoUsd) -> Value {
    json!({"usd": amount.as_usd(), "nano_usd": amount.0})
}

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params.get(name).map(String::as_str)
}

fn limit(params: &HashMap<String, String>) -> Result<usize, GatewayError> {
    match params.get("limit") {
        None => Ok(admin::DEFAULT_LIMIT),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| *limit > 0)
            .ok_or_else(|| GatewayError::invalid("limit", format!("\"{text}\" is not a positive whole number"))),
    }
}

fn range(params: &HashMap<String, String>) -> Result<(chrono::NaiveDate, chrono::NaiveDate), GatewayError> {
    admin::range(param(params, "start"), param(params, "end"))
}

fn report_json(report: CostReport) -> Value {
    match report {
        CostReport::Daily { date, total, requests, unknown_price_requests, estimated_requests } => json!({
            "date": date.to_string(),
            "total": money(total),
            "requests": requests,
            "unknown_price_requests": unknown_price_requests,
            "estimated_requests": estimated_requests,
        }),
        CostReport::ByModel(models) => {
            json!({"models": models.into_iter().map(|(model, cost)| json!({"model": model, "cost": money(cost)})).collect::<Vec<_>>()})
        }
        CostReport::ByUser(users) => json!({"users": users
            .into_iter()
            .map(|((tenant, user), cost)| json!({"tenant": tenant, "user": user, "cost": money(cost)}))
            .collect::<Vec<_>>()}),
        CostReport::ByTenant(tenants) => json!({"tenants": tenants
            .into_iter()
            .map(|(tenant, cost)| json!({"tenant": tenant, "cost": money(cost)}))
            .collect::<Vec<_>>()}),
        CostReport::ByFeature(features) => json!({"features": features
            .into_iter()
            .map(|(feature, cost)| json!({"feature": (!feature.is_empty()).then_some(feature), "cost": money(cost)}))
            .collect::<Vec<_>>()}),
        CostReport::Savings { total, saved, requests } => json!({"total": money(total), "saved": money(saved), "requests": requests}),
        CostReport::Budget(lines) => json!({"budgets": lines
            .into_iter()
            .map(|line| json!({
                "scope": line.scope.to_string(),
                "period": line.period.as_str(),
                "period_key": line.period_key,
                "spent": money(line.spent),
                "reserved": money(line.reserved),
                "limit": line.limit.map(money),
                "remaining": line.remaining().map(money),
                "exhausted": line.exhausted(),
                "resets_at": chrono::DateTime::<chrono::Utc>::from_timestamp_millis(line.resets_at_ms).map(|at| at.to_rfc3339()),
            }))
            .collect::<Vec<_>>()}),
    }
}

async fn answer(state: &AppState, headers: &HeaderMap, query: Result<CostQuery, GatewayError>) -> Response {
    let result = async {
        state.gateway.authenticate_admin(crate::auth::bearer_of(headers))?;
        state.gateway.query(query?).await
    }
    .await;
    match result {
        Ok(report) => axum::Json(report_json(report)).into_response(),
        Err(error) => error_response(&error),
    }
}

/// `GET /admin/v1/cost/daily?date=YYYY-MM-DD` (default today): `get_daily_cost`.
pub async fn daily(State(state): State<AppState>, headers: HeaderMap, Query(params): Query<HashMap<String, String>>) -> Response {
    let query = admin::daily(param(&params, "date"));
    answer(&state, &headers, query).await
}

/// `GET /admin/v1/cost/by-model?start=&end=`: `get_cost_by_model` over [start, end).
pub async fn by_model(State(state): State<AppState>, headers: HeaderMap, Query(params): Query<HashMap<String, String>>) -> Response {
    let query = range(&params).map(|(start, end)| CostQuery::ByModel { start, end });
    answer(&state, &headers, query).await
}

/// `GET /admin/v1/cost/by-user?start=&end=&limit=`: cost by user, most expensive first (top users).
pub async fn by_user(State(state): State<AppState>, headers: HeaderMap, Query(params): Query<HashMap<String, String>>) -> Response {
    let query = range(&params).and_then(|(start, end)| Ok(CostQuery::ByUser { start, end, limit: limit(&params)? }));
    answer(&state, &headers, query).await
}

/// `GET /admin/v1/cost/by-tenant?start=&end=`.
pub async fn by_tenant(State(state): State<AppState>, headers: HeaderMap, Query(params): Query<HashMap<String, String>>) -> Response {
    let query = range(&params).map(|(start, end)| CostQuery::ByTenant { start, end });
    answer(&state, &headers, query).await
}

/// `GET /admin/v1/cost/by-feature?start=&end=`: cost by the feature requests were tagged with
/// (`feature: null` for untagged requests), most expensive first.
pub async fn by_feature(State(state): State<AppState>, headers: HeaderMap, Query(params): Query<HashMap<String, String>>) -> Response {
    let query = range(&params).map(|(start, end)| CostQuery::ByFeature { start, end });
    answer(&state, &headers, query).await
}

/// `GET /admin/v1/cost/savings?start=&end=`: total cost and what cache hits saved.
pub async fn savings(State(state): State<AppState>, headers: HeaderMap, Query(params): Query<HashMap<String, String>>) -> Response {
    let query = range(&params).map(|(start, end)| CostQuery::Savings { start, end });
    answer(&state, &headers, query).await
}

/// `GET /admin/v1/budget?tenant=&user=`: `check_budget`.
pub async fn budget(State(state): State<AppState>, headers: HeaderMap, Query(params): Query<HashMap<String, String>>) -> Response {
    let query = admin::budget(param(&params, "tenant"), param(&params, "user"));
    answer(&state, &headers, query).await
}

/// The body of `POST /admin/v1/cache/invalidate`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateBody {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    all: bool,
}

/// `POST /admin/v1/cache/invalidate` with one of `{"key"}`, `{"tenant"}`, `{"model"}`, `{"all": true}`.
pub async fn invalidate(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let result = async {
        state.gateway.authenticate_admin(crate::auth::bearer_of(&headers))?;
        let body: InvalidateBody =
            serde_json::from_slice(&body).map_err(|error| GatewayError::invalid("body", error.to_string()))?;
        let what = admin::invalidation(body.key.as_deref(), body.tenant.as_deref(), body.model.as_deref(), body.all)?;
        state.gateway.invalidate(&what).await
    }
    .await;
    match result {
        Ok(()) => axum::Json(json!({"invalidated": true})).into_response(),
        Err(error) => error_response(&error),
    }
}

/// `GET /admin/v1/cluster`: members, their state and last heartbeat, partitions owned, handoffs
/// in progress.
pub async fn cluster(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match state.gateway.authenticate_admin(crate::auth::bearer_of(&headers)) {
        Ok(()) => axum::Json(crate::cluster::to_json(state.gateway.cluster_status())).into_response(),
        Err(error) => error_response(&error),
    }
}

/// `GET /admin/v1/experiments`: each experiment's variants with their weights now and what they
/// have served on this node (requests, upstream errors, mean latency, cost, cache hits), and why
/// a variant was rolled back by itself, if one was.
pub async fn experiments(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(error) = state.gateway.authenticate_admin(crate::auth::bearer_of(&headers)) {
        return error_response(&error);
    }
    let experiments: Vec<Value> = state
        .gateway
        .experiments()
        .report()
        .into_iter()
        .map(|experiment| {
            let variants: Vec<Value> = experiment
                .variants
                .into_iter()
                .map(|variant| {
                    let stats = variant.stats;
                    let requests = stats.requests.max(1) as f64;
                    json!({
                        "name": variant.name,
                        "model": variant.model,
                        "weight": variant.weight,
                        "requests": stats.requests,
                        "errors": stats.errors,
                        "error_rate": stats.errors as f64 / requests,
                        "mean_latency_ms": stats.latency_total.as_secs_f64() * 1000.0 / requests,
                        "cost": money(stats.cost),
                        "cache_hits": stats.cache_hits,
                    })
                })
                .collect();
            json!({"name": experiment.name, "route": experiment.route, "variants": variants, "rolled_back": experiment.rolled_back})
        })
        .collect();
    axum::Json(json!({"experiments": experiments})).into_response()
}

/// The body of `POST /admin/v1/experiments/{name}/weights`: every variant's new weight.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsBody {
    weights: std::collections::BTreeMap<String, u32>,
}

/// `POST /admin/v1/experiments/{name}/weights` with `{"weights": {"control": 100, "canary": 0}}`:
/// promotes or rolls back a variant without a restart (this node's weights).
pub async fn set_weights(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let result = (|| {
        state.gateway.authenticate_admin(crate::auth::bearer_of(&headers))?;
        let body: WeightsBody = crate::http::body::read(&body)?;
        let weights: Vec<(String, u32)> = body.weights.into_iter().collect();
        state.gateway.experiments().set_weights(&name, &weights)
    })();
    match result {
        Ok(()) => axum::Json(json!({"experiment": name, "updated": true})).into_response(),
        Err(error) => error_response(&error),
    }
}
