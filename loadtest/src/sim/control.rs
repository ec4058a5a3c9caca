//! The control endpoints under `/_sim/` and the model list.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use super::behaviour::Behaviour;
use super::state::{Behaviours, CallCounts, Scope, SimState};

/// `GET /_sim/calls`: the calls counted since the start or the last reset.
pub(crate) async fn calls(State(state): State<Arc<SimState>>) -> Json<CallCounts> {
    Json(state.calls())
}

/// `POST /_sim/reset`: zeroes the counts, forgets the per-model behaviours and restores the
/// startup default behaviour.
pub(crate) async fn reset(State(state): State<Arc<SimState>>) -> StatusCode {
    state.reset();
    tracing::debug!("simulator reset");
    StatusCode::NO_CONTENT
}

/// `GET /_sim/behaviour`: the behaviours in force.
pub(crate) async fn behaviours(State(state): State<Arc<SimState>>) -> Json<Behaviours> {
    Json(state.behaviours())
}

/// The answer to a behaviour update: what is now in force.
#[derive(Serialize)]
struct BehaviourSet {
    /// The model whose behaviour was set; `None` for the default or all of a caller's calls.
    model: Option<String>,
    /// The caller whose behaviour was set, if one was named.
    caller: Option<String>,
    /// The behaviour now in force.
    behaviour: Behaviour,
}

/// `PUT /_sim/behaviour`: `{"model": "name", ...behaviour fields}` sets one model's behaviour, or
/// the default one without `model`; with `"caller": "key"` it applies only to calls carrying that
/// API key (all of them, or those for `model`), ahead of the model's and the default behaviour.
/// Missing fields take [`Behaviour::default`]'s values.
pub(crate) async fn set_behaviour(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    match parse_update(&body) {
        Ok((scope, behaviour)) => {
            tracing::debug!(?scope, ?behaviour, "simulator behaviour set");
            state.set_behaviour(&scope, behaviour.clone());
            Json(BehaviourSet {
                model: scope.model,
                caller: scope.caller,
                behaviour,
            })
            .into_response()
        }
        Err(message) => {
            let body = serde_json::json!({ "error": { "message": message } });
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
    }
}

/// Splits a behaviour update into its scope (model and caller) and its behaviour.
fn parse_update(body: &[u8]) -> Result<(Scope, Behaviour), String> {
    let mut fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|error| format!("behaviour update is not a JSON object: {error}"))?;
    let mut name = |field: &str| match fields.remove(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(value)) if !value.is_empty() => Ok(Some(value)),
        Some(other) => Err(format!("{field} must be a non-empty string, not {other}")),
    };
    let scope = Scope {
        model: name("model")?,
        caller: name("caller")?,
    };
    let behaviour = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|error| format!("invalid behaviour: {error}"))?;
    Ok((scope, behaviour))
}

/// The API key a call carries: `Authorization: Bearer …` (OpenAI) or `x-api-key` (Anthropic).
pub(crate) fn caller(headers: &http::HeaderMap) -> Option<String> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let key = bearer.or_else(|| headers.get("x-api-key").and_then(|value| value.to_str().ok()));
    key.map(str::trim).filter(|key| !key.is_empty()).map(str::to_owned)
}

/// One entry of `GET /v1/models`.
#[derive(Serialize)]
struct ModelEntry {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

/// `GET /v1/models`: every model the simulator has seen a call for or has a behaviour for.
pub(crate) async fn models(State(state): State<Arc<SimState>>) -> Json<serde_json::Value> {
    let data: Vec<ModelEntry> = state
        .known_models()
        .into_iter()
        .map(|id| ModelEntry {
            id,
            object: "model",
            created: 0,
            owned_by: "switchyard-sim",
        })
        .collect();
    Json(serde_json::json!({ "object": "list", "data": data }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Fault;

    #[test]
    fn an_update_names_a_model_or_the_default() -> Result<(), String> {
        let (scope, behaviour) =
            parse_update(br#"{"model":"m","fault":{"type":"hang"},"fault_count":1}"#)?;
        assert_eq!(scope.model.as_deref(), Some("m"));
        assert_eq!(behaviour.fault, Some(Fault::Hang));
        assert_eq!(behaviour.answer_tokens, 16);
        let (scope, behaviour) = parse_update(br#"{"ttft_ms":5}"#)?;
        assert_eq!((scope, behaviour.ttft_ms), (Scope::default(), 5));
        let (scope, _) = parse_update(br#"{"caller":"key-a","fault":{"type":"hang"}}"#)?;
        assert_eq!((scope.caller.as_deref(), scope.model), (Some("key-a"), None));
        Ok(())
    }

    #[test]
    fn the_caller_is_the_bearer_token_or_the_anthropic_key() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(caller(&headers), None);
        headers.insert("x-api-key", http::HeaderValue::from_static("anthropic-key"));
        assert_eq!(caller(&headers).as_deref(), Some("anthropic-key"));
        headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer openai-key"));
        assert_eq!(caller(&headers).as_deref(), Some("openai-key"));
    }

    #[test]
    fn a_bad_update_is_rejected() {
        assert!(parse_update(br#"{"model":3}"#).is_err());
        assert!(parse_update(br#"{"caller":""}"#).is_err());
        assert!(parse_update(br#"{"tokens":3}"#).is_err());
        assert!(parse_update(br#"{"fault":{"type":"explode"}}"#).is_err());
        assert!(parse_update(b"[]").is_err());
    }
}
