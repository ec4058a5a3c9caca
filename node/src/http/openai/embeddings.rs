//! `POST /v1/embeddings` in OpenAI's shape: `input` a string or an array of strings, `model`
//! naming an embedding model, optional `dimensions`, `encoding_format` `float` (the default) or
//! `base64` (little-endian `f32`s), and `user`. Token arrays as `input` are refused: they are
//! the tokens of one provider's tokenizer, which the gateway cannot route.

use axum::body::Bytes;
use base64::Engine as _;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_actors::error::GatewayError;
use switchyard_actors::model::EmbeddingRequest;
use switchyard_actors::pipeline::EmbeddingAnswer;
use tracing::{Instrument as _, info_span};

use crate::http::AppState;
use crate::http::headers::{Served, answer_headers, latency_and_cost, parse_hints};
use crate::http::openai::error_response;
use crate::telemetry::adopt_trace;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsBody {
    #[serde(default)]
    model: Option<String>,
    input: Value,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

/// How the vectors are written in the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

fn parse(headers: &HeaderMap, body: &[u8]) -> Result<(EmbeddingRequest, Encoding), GatewayError> {
    let body: EmbeddingsBody = crate::http::body::read(body)?;
    let inputs = match body.input {
        Value::String(text) => vec![text],
        Value::Array(items) => {
            let mut inputs = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(text) => inputs.push(text),
                    _ => return Err(GatewayError::invalid(format!("input[{index}]"), "must be a string (token arrays are not supported)")),
                }
            }
            inputs
        }
        _ => return Err(GatewayError::invalid("input", "must be a string or an array of strings")),
    };
    let encoding = match body.encoding_format.as_deref() {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => return Err(GatewayError::invalid("encoding_format", format!("\"{other}\" is not float or base64"))),
    };
    let (hints, cache) = parse_hints(headers)?;
    let request = EmbeddingRequest {
        model: body.model.unwrap_or_default(),
        inputs,
        dimensions: body.dimensions,
        user: body.user,
        hints,
        cache,
    };
    Ok((request, encoding))
}

/// A vector as little-endian `f32` bytes in standard base64, as OpenAI's `base64` encoding.
fn base64_f32(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|value| value.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn body_of(answer: &EmbeddingAnswer, encoding: Encoding) -> Value {
    let data: Vec<Value> = answer
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = match encoding {
                Encoding::Float => json!(vector),
                Encoding::Base64 => json!(base64_f32(vector)),
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": answer.target.model,
        "usage": {"prompt_tokens": answer.input_tokens, "total_tokens": answer.input_tokens},
    })
}

/// `POST /v1/embeddings`.
pub async fn embeddings(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let span = info_span!("request", front_door = "http", method = "embeddings", trace_id = tracing::field::Empty);
    adopt_trace(&span, &headers);
    async move {
        let metrics = state.gateway.metrics();
        let accepted = state.gateway.authenticate(crate::auth::bearer_of(&headers)).and_then(|principal| Ok((principal, parse(&headers, &body)?)));
        let (principal, (request, encoding)) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                metrics.record_request_failure("http", "", "", "", error.label());
                return error_response(&error);
            }
        };
        let route = request.model.clone();
        let answer = match state.gateway.embed(&principal, request).await {
            Ok(answer) => answer,
            Err(error) => {
                metrics.record_request_failure("http", &route, "", "", error.label());
                return error_response(&error);
            }
        };
        let target = &answer.target;
        metrics.record_request_answered("http", &route, &target.model, &target.provider, answer.cache_layer.as_str(), answer.latency);
        let mut response = axum::Json(body_of(&answer, encoding)).into_response();
        let served = Served {
            id: &answer.id,
            target,
            routing_reason: "requested embedding model",
            fallback: false,
            cache: answer.cache_layer,
            cache_key: answer.cache_key.as_deref(),
            cache_match: None,
            experiment: None,
        };
        answer_headers(response.headers_mut(), served);
        latency_and_cost(response.headers_mut(), answer.latency, answer.cost);
        response
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32s() {
        // 1.0f32 = 00 00 80 3f; -2.0f32 = 00 00 00 c0.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(base64_f32(&[]), "");
    }

    #[test]
    fn bad_fields_are_named() {
        let field_of = |body: Value| match parse(&HeaderMap::new(), body.to_string().as_bytes()) {
            Err(GatewayError::InvalidArgument { field, .. }) => field,
            other => panic!("expected an invalid argument, got {other:?}"),
        };
        assert_eq!(field_of(json!({"model": "e", "input": [[1, 2, 3]]})), "input[0]");
        assert_eq!(field_of(json!({"model": "e", "input": 7})), "input");
        assert_eq!(field_of(json!({"model": "e", "input": "a", "encoding_format": "hex"})), "encoding_format");
        assert_eq!(field_of(json!({"model": "e", "input": "a", "colour": "red"})), "colour");
    }
}
