//! The one place that maps a [`GatewayError`] to a gRPC code, an HTTP status and the error
//! types of the OpenAI and Anthropic APIs. No catch-all arm: a new variant must be mapped here.

use http::StatusCode;
use switchyard_actors::error::GatewayError;

/// How one error is reported by each front door.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorMapping {
    /// gRPC status code.
    pub grpc: tonic::Code,
    /// HTTP status.
    pub http: StatusCode,
    /// OpenAI's `error.type`.
    pub openai_type: &'static str,
    /// Anthropic's `error.type`.
    pub anthropic_type: &'static str,
}

/// Maps `error` for the front doors.
pub fn map(error: &GatewayError) -> ErrorMapping {
    let (grpc, http, openai_type, anthropic_type) = match error {
        GatewayError::InvalidArgument { .. } => (tonic::Code::InvalidArgument, StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request_error"),
        GatewayError::UnknownModel(_) => (tonic::Code::InvalidArgument, StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request_error"),
        GatewayError::ModelForbidden { .. } => (tonic::Code::PermissionDenied, StatusCode::FORBIDDEN, "permission_error", "permission_error"),
        GatewayError::UpstreamRejected { .. } => (tonic::Code::InvalidArgument, StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request_error"),
        GatewayError::AllProvidersFailed(_) => (tonic::Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE, "upstream_error", "overloaded_error"),
        GatewayError::StreamInterrupted { .. } => (tonic::Code::Unavailable, StatusCode::BAD_GATEWAY, "upstream_error", "api_error"),
        GatewayError::Unauthenticated(_) => (tonic::Code::Unauthenticated, StatusCode::UNAUTHORIZED, "authentication_error", "authentication_error"),
        GatewayError::KeyModelForbidden { .. } => (tonic::Code::PermissionDenied, StatusCode::FORBIDDEN, "permission_error", "permission_error"),
        GatewayError::GuardrailBlocked { .. } => (tonic::Code::InvalidArgument, StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request_error"),
        GatewayError::RateLimited { .. } => (tonic::Code::ResourceExhausted, StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "rate_limit_error"),
        GatewayError::BudgetExhausted { .. } => (tonic::Code::ResourceExhausted, StatusCode::TOO_MANY_REQUESTS, "budget_exhausted", "rate_limit_error"),
        GatewayError::NotFound { .. } => (tonic::Code::NotFound, StatusCode::NOT_FOUND, "invalid_request_error", "not_found_error"),
        GatewayError::ShuttingDown | GatewayError::BudgetUnavailable(_) => (tonic::Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE, "server_error", "overloaded_error"),
        GatewayError::Internal(_) => (tonic::Code::Internal, StatusCode::INTERNAL_SERVER_ERROR, "server_error", "api_error"),
    };
    ErrorMapping { grpc, http, openai_type, anthropic_type }
}

/// The gRPC status for `error`; rate limits carry `retry-after` (seconds) in the trailers.
pub fn to_status(error: &GatewayError) -> tonic::Status {
    let mut status = tonic::Status::new(map(error).grpc, error.to_string());
    if let Some(seconds) = retry_after_secs(error)
        && let Ok(value) = seconds.to_string().parse()
    {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

/// Seconds a client should wait before retrying, for errors that have such a time.
pub fn retry_after_secs(error: &GatewayError) -> Option<u64> {
    match error {
        GatewayError::RateLimited { retry_after_ms, .. } => Some(retry_after_ms.div_ceil(1000).max(1)),
        GatewayError::BudgetExhausted { retry_after_secs, .. } => Some(*retry_after_secs),
        _ => None,
    }
}

/// The request field an error names, for OpenAI's `error.param`.
pub fn param(error: &GatewayError) -> Option<&str> {
    match error {
        GatewayError::InvalidArgument { field, .. } => Some(field),
        GatewayError::UnknownModel(_) | GatewayError::ModelForbidden { .. } => Some("model"),
        GatewayError::KeyModelForbidden { .. } => Some("model"),
        GatewayError::UpstreamRejected { .. }
        | GatewayError::GuardrailBlocked { .. }
        | GatewayError::Unauthenticated(_)
        | GatewayError::RateLimited { .. }
        | GatewayError::BudgetExhausted { .. }
        | GatewayError::AllProvidersFailed(_)
        | GatewayError::StreamInterrupted { .. }
        | GatewayError::NotFound { .. }
        | GatewayError::ShuttingDown
        | GatewayError::BudgetUnavailable(_)
        | GatewayError::Internal(_) => None,
    }
}
