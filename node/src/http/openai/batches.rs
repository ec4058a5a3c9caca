//! OpenAI's Files and Batch APIs over [`crate::batch::Batches`], so an SDK's `files.create` +
//! `batches.create` work unchanged: `POST /v1/files` (multipart: `file`, `purpose=batch`),
//! `GET /v1/files/{id}`, `GET /v1/files/{id}/content`, `POST /v1/batches`, `GET /v1/batches`,
//! `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`. Handlers only read the request,
//! authenticate and shape the answer.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use switchyard_actors::error::GatewayError;
use switchyard_actors::tenancy::Principal;

use crate::batch::CreateBatch;
use crate::http::AppState;
use crate::http::openai::error_response;

fn principal(state: &AppState, headers: &HeaderMap) -> Result<std::sync::Arc<Principal>, GatewayError> {
    state.gateway.authenticate(crate::auth::bearer_of(headers))
}

fn answer(result: Result<serde_json::Value, GatewayError>) -> Response {
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error_response(&error),
    }
}

/// `POST /v1/files`: a multipart upload with `purpose` and `file`.
pub async fn upload_file(State(state): State<AppState>, headers: HeaderMap, multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>) -> Response {
    answer(
        async {
            let principal = principal(&state, &headers)?;
            let mut multipart = multipart.map_err(|rejection| GatewayError::invalid("body", format!("must be multipart/form-data: {rejection}")))?;
            let (mut purpose, mut file) = (None, None);
            while let Some(field) = multipart.next_field().await.map_err(|error| GatewayError::invalid("body", error.body_text()))? {
                match field.name() {
                    Some("purpose") => purpose = Some(field.text().await.map_err(|error| GatewayError::invalid("purpose", error.body_text()))?),
                    Some("file") => {
                        let filename = field.file_name().unwrap_or_default().to_owned();
                        file = Some((filename, field.bytes().await.map_err(|error| GatewayError::invalid("file", error.body_text()))?));
                    }
                    Some(other) => return Err(GatewayError::invalid(other, "is not a field of a file upload (file, purpose)")),
                    None => return Err(GatewayError::invalid("body", "a form field has no name")),
                }
            }
            let purpose = purpose.ok_or_else(|| GatewayError::invalid("purpose", "is required"))?;
            let (filename, content) = file.ok_or_else(|| GatewayError::invalid("file", "is required"))?;
            let file = state.batches.upload_file(&principal, filename, &purpose, content).await?;
            Ok(file.to_json())
        }
        .await,
    )
}

/// `GET /v1/files/{id}`.
pub async fn file(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(async { Ok(state.batches.file(&*principal(&state, &headers)?, &id).await?.to_json()) }.await)
}

/// `GET /v1/files/{id}/content`: the file as uploaded or written (JSONL).
pub async fn file_content(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let content = async { state.batches.file_content(&*principal(&state, &headers)?, &id).await }.await;
    match content {
        Ok((_, content)) => {
            let mut response = content.into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jsonl"));
            response
        }
        Err(error) => error_response(&error),
    }
}

/// The body of `POST /v1/batches`, as OpenAI defines it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// `POST /v1/batches`.
pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    answer(
        async {
            let principal = principal(&state, &headers)?;
            let body: CreateBody = crate::http::body::read(&body)?;
            let request = CreateBatch { input_file_id: body.input_file_id, endpoint: body.endpoint, completion_window: body.completion_window, metadata: body.metadata };
            Ok(state.batches.create(&principal, request).await?.to_json())
        }
        .await,
    )
}

/// `GET /v1/batches/{id}`.
pub async fn batch(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(async { Ok(state.batches.batch(&*principal(&state, &headers)?, &id).await?.to_json()) }.await)
}

/// `POST /v1/batches/{id}/cancel`.
pub async fn cancel(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(async { Ok(state.batches.cancel(&*principal(&state, &headers)?, &id).await?.to_json()) }.await)
}

/// The query of `GET /v1/batches`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The last id of the previous page.
    #[serde(default)]
    after: Option<String>,
    /// Page size, 1–100 (default 20).
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/batches`: the caller's tenant's batches, newest first, in OpenAI's list shape.
pub async fn list(State(state): State<AppState>, headers: HeaderMap, query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>) -> Response {
    answer(
        async {
            let principal = principal(&state, &headers)?;
            let Query(query) = query.map_err(|rejection| GatewayError::invalid("query", rejection.body_text()))?;
            let limit = query.limit.unwrap_or(20);
            if !(1..=100).contains(&limit) {
                return Err(GatewayError::invalid("limit", format!("{limit} is outside 1 ..= 100")));
            }
            let page = state.batches.list(&principal, query.after.as_deref(), limit).await?;
            let data: Vec<serde_json::Value> = page.batches.iter().map(|record| record.to_json()).collect();
            Ok(json!({
                "object": "list",
                "data": data,
                "first_id": page.batches.first().map(|record| record.id.clone()),
                "last_id": page.batches.last().map(|record| record.id.clone()),
                "has_more": page.has_more,
            }))
        }
        .await,
    )
}
