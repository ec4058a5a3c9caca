//! Reading credentials off a request, for both front doors.

/// The bearer token of the `authorization` header (HTTP) or metadata (gRPC).
pub fn bearer_of(headers: &http::HeaderMap) -> Option<&str> {
    switchyard_actors::tenancy::keys::bearer(headers.get(http::header::AUTHORIZATION).and_then(|value| value.to_str().ok()))
}

/// The API key of a request to the Anthropic-compatible API: `x-api-key`, as Anthropic's SDKs
/// send it, else the bearer token.
pub fn api_key_of(headers: &http::HeaderMap) -> Option<&str> {
    match headers.get("x-api-key").and_then(|value| value.to_str().ok()).map(str::trim) {
        Some(key) if !key.is_empty() => Some(key),
        _ => bearer_of(headers),
    }
}
