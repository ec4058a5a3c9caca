//! Upstream failures and their classification: the one place that decides whether an error is
//! retried on the same provider, sent down the fallback chain, or returned to the caller.

use std::time::Duration;

/// What went wrong talking to one provider.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The connection could not be made or broke before a response.
    #[error("connection failed: {0}")]
    Connect(String),
    /// No first token within the provider's first-token timeout.
    #[error("no first token within {0:?}")]
    FirstTokenTimeout(Duration),
    /// No complete answer within the provider's request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The upstream answered with an HTTP error status.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The `Retry-After` the upstream asked for, if any.
        retry_after: Option<Duration>,
        /// The upstream's error message, shortened.
        message: String,
    },
    /// The upstream's body could not be understood.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The upstream's stream ended before its final event.
    #[error("stream ended before the answer was complete: {0}")]
    StreamCut(String),
    /// The provider's circuit breaker is open; no request was sent.
    #[error("circuit open")]
    CircuitOpen,
}

/// What to do about a [`ProviderError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try the same provider again after a backoff.
    Retryable,
    /// Give up on this provider for this request and try the next one in the chain.
    FailOver,
    /// The request itself is at fault: every provider would refuse it. Return it to the caller.
    Final,
}

impl ProviderError {
    /// The one classification every retry and failover decision uses.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Connect(_) | Self::Timeout(_) | Self::StreamCut(_) => ErrorClass::Retryable,
            Self::Status { status, .. } => match status {
                408 | 409 | 425 | 429 | 500..=599 => ErrorClass::Retryable,
                400 | 413 | 422 => ErrorClass::Final,
                _ => ErrorClass::FailOver,
            },
            Self::FirstTokenTimeout(_) | Self::Malformed(_) | Self::CircuitOpen => ErrorClass::FailOver,
        }
    }

    /// Whether this error says something about the provider's health (and so counts against its
    /// circuit breaker). A request the upstream rightly refused does not.
    pub fn counts_against_provider(&self) -> bool {
        !matches!(self.class(), ErrorClass::Final) && !matches!(self, Self::CircuitOpen)
    }

    /// The upstream's requested wait before the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::FirstTokenTimeout(_) => "first_token_timeout",
            Self::Timeout(_) => "timeout",
            Self::Status { status: 429, .. } => "rate_limited",
            Self::Status { status: 500..=599, .. } => "server_error",
            Self::Status { .. } => "client_error",
            Self::Malformed(_) => "malformed",
            Self::StreamCut(_) => "stream_cut",
            Self::CircuitOpen => "circuit_open",
        }
    }
}

/// Parses a `Retry-After` header value: delay-seconds (HTTP-dates are rare from model APIs and
/// are ignored), or OpenAI's `retry-after-ms`.
pub fn parse_retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    if let Some(millis) = headers.get("retry-after-ms").and_then(|value| value.to_str().ok())
        && let Ok(millis) = millis.trim().parse::<f64>()
        && millis.is_finite()
        && millis >= 0.0
    {
        return Some(Duration::from_secs_f64(millis / 1000.0));
    }
    let seconds = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<f64>().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> ProviderError {
        ProviderError::Status { status, retry_after: None, message: String::new() }
    }

    #[test]
    fn rate_limits_and_server_errors_are_retried() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(status(code).class(), ErrorClass::Retryable, "{code}");
        }
        assert_eq!(ProviderError::Connect("refused".into()).class(), ErrorClass::Retryable);
        assert_eq!(ProviderError::Timeout(Duration::from_secs(1)).class(), ErrorClass::Retryable);
    }

    #[test]
    fn provider_side_refusals_fail_over() {
        for code in [401, 403, 404] {
            assert_eq!(status(code).class(), ErrorClass::FailOver, "{code}");
            assert!(status(code).counts_against_provider());
        }
        assert_eq!(ProviderError::FirstTokenTimeout(Duration::from_secs(1)).class(), ErrorClass::FailOver);
        assert_eq!(ProviderError::Malformed("x".into()).class(), ErrorClass::FailOver);
        assert_eq!(ProviderError::CircuitOpen.class(), ErrorClass::FailOver);
        assert!(!ProviderError::CircuitOpen.counts_against_provider());
    }

    #[test]
    fn bad_requests_are_final_and_do_not_hurt_the_provider() {
        for code in [400, 413, 422] {
            assert_eq!(status(code).class(), ErrorClass::Final, "{code}");
            assert!(!status(code).counts_against_provider());
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("2"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", http::HeaderValue::from_static("250"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_millis(250)));
        headers.clear();
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&headers), None);
    }
}
