//! The control endpoints under `/_sim/` and the model list.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use super::behaviour::Behaviour;
use super::state::{Behaviours, CallCounts, SimState};

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
    /// The model whose behaviour was set; `None` for the default.
    model: Option<String>,
    /// The behaviour now in force.
    behaviour: Behaviour,
}

/// `PUT /_sim/behaviour`: `{"model": "name", ...behaviour fields}` sets one model's behaviour, or
/// the default one without `model`. Missing fields take [`Behaviour::default`]'s values.
pub(crate) async fn set_behaviour(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    match parse_update(&body) {
        Ok((model_opt, behaviour)) => {
            tracing::debug!(model = ?model_opt, ?behaviour, "simulator behaviour set");
            state.set_behaviour(model_opt.as_deref(), behaviour.clone());
            Json(BehaviourSet {
                model: model_opt,
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

/// Splits a behaviour update into its model and its behaviour.
fn parse_update(body: &[u8]) -> Result<(Option<String>, Behaviour), String> {
    let mut fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|error| format!("behaviour update is not a JSON object: {error}"))?;
    let model_opt = match fields.remove("model") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(model)) if !model.is_empty() => Some(model),
        Some(other) => return Err(format!("model must be a non-empty string, not {other}")),
    };
    let behaviour = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|error| format!("invalid behaviour: {error}"))?;
    Ok((model_opt, behaviour))
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
        let (model, behaviour) =
            parse_update(br#"{"model":"m","fault":{"type":"hang"},"fault_count":1}"#)?;
        assert_eq!(model.as_deref(), Some("m"));
        assert_eq!(behaviour.fault, Some(Fault::Hang));
        assert_eq!(behaviour.answer_tokens, 16);
        let (model, behaviour) = parse_update(br#"{"ttft_ms":5}"#)?;
        assert_eq!((model, behaviour.ttft_ms), (None, 5));
        Ok(())
    }

    #[test]
    fn a_bad_update_is_rejected() {
        assert!(parse_update(br#"{"model":3}"#).is_err());
        assert!(parse_update(br#"{"tokens":3}"#).is_err());
        assert!(parse_update(br#"{"fault":{"type":"explode"}}"#).is_err());
        assert!(parse_update(b"[]").is_err());
    }
}
