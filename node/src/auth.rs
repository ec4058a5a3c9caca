//! Reading credentials off a request, for both front doors.

/// The bearer token of the `authorization` header (HTTP) or metadata (gRPC).
pub fn bearer_of(headers: &http::HeaderMap) -> Option<&str> {
    switchyard_actors::tenancy::keys::bearer(headers.get(http::header::AUTHORIZATION).and_then(|value| value.to_str().ok()))
}
