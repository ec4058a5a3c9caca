//! Turning a planned answer into an HTTP response, for any wire format: pacing, faults, the
//! streamed body and the response headers; and the plain answers of the endpoints that do not
//! generate (embeddings, token counts), with the same faults.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use tokio::time::Instant;

use super::answer::{Answer, Piece};
use super::behaviour::{Behaviour, Fault};
use super::state::SimState;

/// Response header carrying the prompt's fingerprint.
pub const FINGERPRINT_HEADER: &str = "x-sim-fingerprint";

/// Body of a `Malformed` unary answer: it starts like JSON and is not.
const MALFORMED_BODY: &[u8] = b"{\"id\": \"sim-malformed\", \"choices\": [{\"message\": not json";

/// Deadline used when an offset would overflow the clock.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365);

/// The parts of a wire format the shared response logic needs.
pub(crate) trait WireFormat: Send + 'static {
    /// JSON error body for `status`, in the provider's error shape.
    fn error_body(&self, status: StatusCode, message: &str) -> Vec<u8>;
    /// JSON body of the whole answer.
    fn unary_body(&self, answer: &Answer) -> Vec<u8>;
    /// Appends the events that open a stream, before the first piece.
    fn open_stream(&self, answer: &Answer, out: &mut Vec<u8>);
    /// Appends the events carrying one piece of the answer.
    fn piece_event(&self, piece: &Piece<'_>, out: &mut Vec<u8>);
    /// Appends the events that end a complete stream.
    fn close_stream(&self, answer: &Answer, out: &mut Vec<u8>);
    /// Appends an event whose data is not valid JSON.
    fn malformed_event(&self, out: &mut Vec<u8>);
}

/// Answers one call that passed validation, applying `behaviour`'s pace and fault.
pub(crate) async fn respond<W: WireFormat>(
    state: Arc<SimState>,
    arrival: Instant,
    behaviour: Behaviour,
    answer: Answer,
    stream: bool,
    wire: W,
) -> Response {
    let fingerprint = answer.fingerprint_hex.clone();
    if let Some(response) = fault_response(&state, behaviour.fault, &wire, Some(&fingerprint)).await
    {
        return response;
    }
    if stream {
        event_stream(state, arrival, &behaviour, answer, wire)
    } else {
        unary(&state, arrival, &behaviour, &answer, &wire).await
    }
}

/// Answers one call to an endpoint that does not generate (embeddings, token counts) with
/// `body`, applying `behaviour`'s wait before the first token and its fault: an error fault
/// answers the error, `malformed` a body that is not JSON, `cut_stream` a truncated body. The
/// prompt's fingerprint, when there is one, goes in the `x-sim-fingerprint` header.
pub(crate) async fn respond_plain<W: WireFormat>(
    state: Arc<SimState>,
    arrival: Instant,
    behaviour: Behaviour,
    body: Vec<u8>,
    fingerprint_opt: Option<String>,
    wire: W,
) -> Response {
    let fingerprint_opt = fingerprint_opt.as_deref();
    if let Some(response) = fault_response(&state, behaviour.fault, &wire, fingerprint_opt).await {
        return response;
    }
    if !state
        .sleep_until(after(arrival, behaviour.time_to_first_token()))
        .await
    {
        let message = "the simulator is shutting down";
        return error_response(
            &wire,
            StatusCode::SERVICE_UNAVAILABLE,
            message,
            fingerprint_opt,
        );
    }
    match behaviour.fault {
        Some(Fault::Malformed) => {
            json_response(StatusCode::OK, MALFORMED_BODY.to_vec(), fingerprint_opt)
        }
        Some(Fault::CutStream { .. }) => truncated_response(body, fingerprint_opt),
        _ => json_response(StatusCode::OK, body, fingerprint_opt),
    }
}

/// The answer to an error fault (`status`, `rate_limit`, `hang`); `None` for the others.
async fn fault_response<W: WireFormat>(
    state: &SimState,
    fault_opt: Option<Fault>,
    wire: &W,
    fingerprint_opt: Option<&str>,
) -> Option<Response> {
    match fault_opt? {
        Fault::Status { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = format!("simulated upstream error (status {})", status.as_u16());
            Some(error_response(wire, status, &message, fingerprint_opt))
        }
        Fault::RateLimit { retry_after_s } => {
            let message = format!("simulated rate limit, retry after {retry_after_s} s");
            let mut response = error_response(
                wire,
                StatusCode::TOO_MANY_REQUESTS,
                &message,
                fingerprint_opt,
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_s));
            Some(response)
        }
        Fault::Hang => {
            state.hang().await;
            let message = "the simulator is shutting down";
            Some(error_response(
                wire,
                StatusCode::SERVICE_UNAVAILABLE,
                message,
                fingerprint_opt,
            ))
        }
        Fault::Malformed | Fault::CutStream { .. } => None,
    }
}

/// A unary answer: waits as long as streaming every piece would take, then sends the body.
async fn unary<W: WireFormat>(
    state: &SimState,
    arrival: Instant,
    behaviour: &Behaviour,
    answer: &Answer,
    wire: &W,
) -> Response {
    let fingerprint = Some(answer.fingerprint_hex.as_str());
    if !state
        .sleep_until(after(
            arrival,
            behaviour.time_to_token(answer.piece_count()),
        ))
        .await
    {
        let message = "the simulator is shutting down";
        return error_response(wire, StatusCode::SERVICE_UNAVAILABLE, message, fingerprint);
    }
    match behaviour.fault {
        Some(Fault::Malformed) => {
            json_response(StatusCode::OK, MALFORMED_BODY.to_vec(), fingerprint)
        }
        Some(Fault::CutStream { .. }) => truncated_response(wire.unary_body(answer), fingerprint),
        _ => json_response(StatusCode::OK, wire.unary_body(answer), fingerprint),
    }
}

/// A streamed answer: the body is produced as the pieces come due (one per token of a text
/// answer), and each piece is flushed before the next wait. Without waits the whole stream goes
/// out as one piece.
fn event_stream<W: WireFormat>(
    state: Arc<SimState>,
    arrival: Instant,
    behaviour: &Behaviour,
    answer: Answer,
    wire: W,
) -> Response {
    let first_token_due = after(arrival, behaviour.time_to_first_token());
    let inter_token_delay = behaviour.inter_token_delay();
    let fault = behaviour.fault;
    let fingerprint = answer.fingerprint_hex.clone();
    let body = async_stream::stream! {
        let mut out = Vec::with_capacity(1024);
        wire.open_stream(&answer, &mut out);
        if fault == Some(Fault::Malformed) {
            if first_token_due > Instant::now() {
                yield Ok(Bytes::from(std::mem::take(&mut out)));
                if !state.sleep_until(first_token_due).await {
                    yield Err(io::Error::other("the simulator is shutting down"));
                    return;
                }
            }
            wire.malformed_event(&mut out);
            yield Ok(Bytes::from(out));
            return;
        }
        let pieces = answer.piece_count();
        let cut_after_opt = match fault {
            Some(Fault::CutStream { after_tokens }) => Some(after_tokens.min(pieces)),
            _ => None,
        };
        for index in 0..cut_after_opt.unwrap_or(pieces) {
            let due = after(first_token_due, inter_token_delay.saturating_mul(index));
            if due > Instant::now() {
                if !out.is_empty() {
                    yield Ok(Bytes::from(std::mem::take(&mut out)));
                }
                if !state.sleep_until(due).await {
                    yield Err(io::Error::other("the simulator is shutting down"));
                    return;
                }
            }
            if let Some(piece) = answer.piece(index) {
                wire.piece_event(&piece, &mut out);
            }
        }
        if cut_after_opt.is_some() {
            if !out.is_empty() {
                yield Ok(Bytes::from(std::mem::take(&mut out)));
            }
            yield Err(cut_after_flush().await);
            return;
        }
        wire.close_stream(&answer, &mut out);
        yield Ok(Bytes::from(out));
    };
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    insert_fingerprint(&mut response, Some(&fingerprint));
    response
}

/// `base + offset`, or a far-away instant if that overflows.
fn after(base: Instant, offset: Duration) -> Instant {
    base.checked_add(offset)
        .or_else(|| Instant::now().checked_add(FAR_FUTURE))
        .unwrap_or(base)
}

/// A JSON response.
pub(crate) fn json_response(
    status: StatusCode,
    body: Vec<u8>,
    fingerprint_opt: Option<&str>,
) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    insert_fingerprint(&mut response, fingerprint_opt);
    response
}

/// An error response in `wire`'s error shape.
pub(crate) fn error_response<W: WireFormat>(
    wire: &W,
    status: StatusCode,
    message: &str,
    fingerprint_opt: Option<&str>,
) -> Response {
    json_response(status, wire.error_body(status, message), fingerprint_opt)
}

/// A 200 whose body is the first half of `body`, sent without a content length, after which the
/// connection is dropped.
fn truncated_response(mut body: Vec<u8>, fingerprint_opt: Option<&str>) -> Response {
    body.truncate(body.len() / 2);
    let pieces = async_stream::stream! {
        yield Ok(Bytes::from(body));
        yield Err(cut_after_flush().await);
    };
    let mut response = Response::new(Body::from_stream(pieces));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    insert_fingerprint(&mut response, fingerprint_opt);
    response
}

/// The error that makes the server drop a connection mid-body, returned once the server has had
/// a chance to flush what was sent before: the server writes its buffer out while the body is
/// pending, and would discard it if the error came at once.
async fn cut_after_flush() -> io::Error {
    tokio::task::yield_now().await;
    io::Error::other("body cut by the simulator")
}

/// Sets the `x-sim-fingerprint` header.
fn insert_fingerprint(response: &mut Response, fingerprint_opt: Option<&str>) {
    if let Some(value) = fingerprint_opt.and_then(|fp| HeaderValue::from_str(fp).ok()) {
        response.headers_mut().insert(FINGERPRINT_HEADER, value);
    }
}

/// Appends `value` as JSON.
pub(crate) fn write_json(out: &mut Vec<u8>, value: &impl Serialize) {
    // Serializing plain structs into a Vec cannot fail; an error would leave the output short,
    // which clients see as a malformed answer.
    if let Err(error) = serde_json::to_writer(&mut *out, value) {
        tracing::warn!(%error, "failed to serialize a simulator response");
    }
}

/// `value` as JSON.
pub(crate) fn to_json(value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_json(&mut out, value);
    out
}

/// Appends an SSE event with only a `data:` line.
pub(crate) fn write_data_event(out: &mut Vec<u8>, value: &impl Serialize) {
    out.extend_from_slice(b"data: ");
    write_json(out, value);
    out.extend_from_slice(b"\n\n");
}

/// Appends an SSE event with an `event:` and a `data:` line.
pub(crate) fn write_named_event(out: &mut Vec<u8>, name: &str, value: &impl Serialize) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    write_json(out, value);
    out.extend_from_slice(b"\n\n");
}
