//! One provider in the chain: admission through its breaker and concurrency slots, the upstream
//! call under its timeouts, retries of retryable errors with backoff that honours `Retry-After`,
//! and the outcome of every attempt reported to the provider's pool.

use std::time::Duration;

use futures::StreamExt as _;
use tokio::time::{Instant, timeout};
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::model::{ChatRequest, Completion, EmbeddingRequest, StreamEvent, Target};
use crate::provider::openai::Embeddings;
use crate::provider::health::AttemptSample;
use crate::provider::retry::RetryPlan;
use crate::provider::stream::UpstreamStream;
use crate::provider::client::ResponseMeta;
use crate::provider::{AttemptTicket, ErrorClass, ProviderError, ProviderHandle};

/// A stream that has produced its first event, with what is needed to finish it.
pub struct OpenedStream {
    /// The first event (text, or an immediate finish).
    pub first: StreamEvent,
    /// The rest of the upstream stream.
    pub rest: UpstreamStream,
    /// The attempt's ticket, reported when the stream ends.
    pub ticket: AttemptTicket,
    /// When the attempt started.
    pub attempt_started: Instant,
    /// Time from the attempt's start to the first event.
    pub time_to_first_token: Duration,
    /// The provider's request timeout, bounding the whole stream.
    pub request_timeout: Duration,
    /// Remaining requests in the upstream's rate-limit window.
    pub rate_limit_remaining: Option<u64>,
}

impl std::fmt::Debug for OpenedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedStream").field("first", &self.first).field("ticket", &self.ticket).finish_non_exhaustive()
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the retries are used up.
async fn with_retries<T, F, Fut>(provider: &ProviderHandle, metrics: &Metrics, mut attempt: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut plan = RetryPlan::new(&provider.client.settings().retry);
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if error.class() != ErrorClass::Retryable {
            return Err(error);
        }
        let Some(delay) = plan.next_delay(error.retry_after()) else {
            return Err(error);
        };
        metrics.retries.with_label_values(&[provider.name(), error.label()]).inc();
        debug!(provider = provider.name(), error = %error, delay_ms = delay.as_millis() as u64, "retrying");
        tokio::time::sleep(delay).await;
    }
}

/// Waits for admission within `bound`.
async fn admit(provider: &ProviderHandle, bound: Duration) -> Result<AttemptTicket, ProviderError> {
    timeout(bound, provider.admit()).await.unwrap_or(Err(ProviderError::Timeout(bound)))
}

fn record(metrics: &Metrics, target: &Target, outcome: &Result<(), &ProviderError>) {
    let label = match outcome {
        Ok(()) => "ok",
        Err(error) => error.label(),
    };
    metrics.upstream_attempts.with_label_values(&[target.provider.as_str(), target.model.as_str(), label]).inc();
}

/// One whole-answer attempt at `provider`: admitted through its breaker and slots, bounded by the
/// request timeout, its outcome reported to the pool and counted.
async fn whole_attempt<T>(
    provider: &ProviderHandle,
    target: &Target,
    metrics: &Metrics,
    call: impl Future<Output = Result<(T, ResponseMeta), ProviderError>>,
) -> Result<T, ProviderError> {
    let request_timeout = provider.client.settings().request_timeout;
    let ticket = admit(provider, request_timeout).await?;
    let started = Instant::now();
    let result = timeout(request_timeout, call).await.unwrap_or(Err(ProviderError::Timeout(request_timeout)));
    let (sample, result) = match result {
        Ok((value, meta)) => {
            let sample = AttemptSample {
                model: target.model.clone(),
                failed: false,
                latency: Some(started.elapsed()),
                time_to_first_token: None,
                rate_limit_remaining: meta.rate_limit_remaining,
            };
            (sample, Ok(value))
        }
        Err(error) => (failed_sample(target, &error), Err(error)),
    };
    record(metrics, target, &result.as_ref().map(|_| ()));
    ticket.report(sample);
    result
}

/// Calls `provider` for a whole answer, with retries.
pub async fn unary(provider: &ProviderHandle, target: &Target, request: &ChatRequest, metrics: &Metrics) -> Result<Completion, ProviderError> {
    let result =
        with_retries(provider, metrics, || whole_attempt(provider, target, metrics, provider.client.complete(&target.upstream_model, request))).await;
    if let Err(error) = &result {
        warn!(provider = %target.provider, model = %target.model, %error, "provider failed");
    }
    result
}

/// Embeds `request`'s inputs at `provider`, with retries, through its breaker and concurrency
/// slots like a generation; `None` when the provider has no embeddings endpoint.
pub async fn embed(provider: &ProviderHandle, target: &Target, request: &EmbeddingRequest, metrics: &Metrics) -> Option<Result<Embeddings, ProviderError>> {
    provider.client.settings().kind.embeds().then_some(())?;
    let result = with_retries(provider, metrics, || {
        let call = async {
            provider.client.embed(&target.upstream_model, request).await.unwrap_or_else(|| Err(ProviderError::Malformed("the provider has no embeddings endpoint".into())))
        };
        whole_attempt(provider, target, metrics, call)
    })
    .await;
    if let Err(error) = &result {
        warn!(provider = %target.provider, model = %target.model, %error, "embedding failed");
    }
    Some(result)
}

/// Asks `provider` how many input tokens `request` takes on `target`, with retries; `None` when
/// the provider cannot count. A count is no generation: it takes no concurrency slot and does not
/// move the provider's health.
pub async fn count_tokens(provider: &ProviderHandle, target: &Target, request: &ChatRequest, metrics: &Metrics) -> Option<Result<u32, ProviderError>> {
    if !provider.client.counts_tokens() {
        return None;
    }
    let request_timeout = provider.client.settings().request_timeout;
    let result = with_retries(provider, metrics, || async {
        timeout(request_timeout, provider.client.count_tokens(&target.upstream_model, request))
            .await
            .unwrap_or(Some(Err(ProviderError::Timeout(request_timeout))))
            .unwrap_or_else(|| Err(ProviderError::Malformed("the provider stopped counting tokens".into())))
    })
    .await;
    if let Err(error) = &result {
        warn!(provider = %target.provider, model = %target.model, %error, "token count failed");
    }
    Some(result)
}

fn failed_sample(target: &Target, error: &ProviderError) -> AttemptSample {
    AttemptSample { model: target.model.clone(), failed: error.counts_against_provider(), ..AttemptSample::default() }
}

/// Opens a stream at `provider` and waits for its first event, with retries. The wait for the
/// first event is bounded by the provider's first-token timeout; past it the provider is
/// abandoned for this request (the caller fails over).
pub async fn first_token(
    provider: &ProviderHandle,
    target: &Target,
    request: &ChatRequest,
    metrics: &Metrics,
) -> Result<OpenedStream, ProviderError> {
    let settings = provider.client.settings();
    let (request_timeout, first_token_timeout) = (settings.request_timeout, settings.first_token_timeout);
    let result = with_retries(provider, metrics, || async {
        let ticket = admit(provider, request_timeout).await?;
        let attempt_started = Instant::now();
        let opening = async {
            let (mut rest, meta) = provider.client.stream(&target.upstream_model, request).await?;
            match rest.next().await {
                Some(Ok(first)) => Ok((first, rest, meta)),
                Some(Err(error)) => Err(error),
                None => Err(ProviderError::StreamCut("stream ended before any event".into())),
            }
        };
        match timeout(first_token_timeout.min(request_timeout), opening).await {
            Ok(Ok((first, rest, meta))) => Ok(OpenedStream {
                first,
                rest,
                ticket,
                attempt_started,
                time_to_first_token: attempt_started.elapsed(),
                request_timeout,
                rate_limit_remaining: meta.rate_limit_remaining,
            }),
            Ok(Err(error)) => {
                record(metrics, target, &Err(&error));
                ticket.report(failed_sample(target, &error));
                Err(error)
            }
            Err(_elapsed) => {
                let error = ProviderError::FirstTokenTimeout(first_token_timeout);
                record(metrics, target, &Err(&error));
                ticket.report(failed_sample(target, &error));
                Err(error)
            }
        }
    })
    .await;
    if let Err(error) = &result {
        warn!(provider = %target.provider, model = %target.model, %error, "provider failed before the first token");
    }
    result
}
