//! The one place that maps a [`GatewayError`] to a gRPC code, an HTTP status and an
//! OpenAI-style error type. No catch-all arm: a new variant must be mapped here.

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
}

/// Maps `error` for the front doors.
pub fn map(error: &GatewayError) -> ErrorMapping {
    let (grpc, http, openai_type) = match error {
        GatewayError::InvalidArgument { .. } => (tonic::Code::InvalidArgument, StatusCode::BAD_REQUEST, "invalid_request_error"),
        GatewayError::UnknownModel(_) => (tonic::Code::InvalidArgument, StatusCode::BAD_REQUEST, "invalid_request_error"),
        GatewayError::ModelForbidden { .. } => (tonic::Code::PermissionDenied, StatusCode::FORBIDDEN, "permission_error"),
        GatewayError::UpstreamRejected { .. } => (tonic::Code::InvalidArgument, StatusCode::BAD_REQUEST, "invalid_request_error"),
        GatewayError::AllProvidersFailed(_) => (tonic::Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE, "upstream_error"),
        GatewayError::StreamInterrupted { .. } => (tonic::Code::Unavailable, StatusCode::BAD_GATEWAY, "upstream_error"),
        GatewayError::ShuttingDown => (tonic::Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE, "server_error"),
        GatewayError::Internal(_) => (tonic::Code::Internal, StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
    };
    ErrorMapping { grpc, http, openai_type }
}

/// The gRPC status for `error`.
pub fn to_status(error: &GatewayError) -> tonic::Status {
    tonic::Status::new(map(error).grpc, error.to_string())
}

/// The request field an error names, for OpenAI's `error.param`.
pub fn param(error: &GatewayError) -> Option<&str> {
    match error {
        GatewayError::InvalidArgument { field, .. } => Some(field),
        GatewayError::UnknownModel(_) | GatewayError::ModelForbidden { .. } => Some("model"),
        GatewayError::UpstreamRejected { .. }
        | GatewayError::AllProvidersFailed(_)
        | GatewayError::StreamInterrupted { .. }
        | GatewayError::ShuttingDown
        | GatewayError::Internal(_) => None,
    }
}
