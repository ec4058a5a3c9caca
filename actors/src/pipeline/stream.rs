//! Forwarding a streamed answer: every upstream event goes to the client as it arrives. A cut
//! after the first token ends the stream with an error, never with a clean finish. If the client
//! goes away, the upstream is still read to its end (bounded by the request timeout) so its
//! final usage is known and recorded.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{Instrument as _, Span, warn};

use crate::budget::NanoUsd;
use crate::error::{AttemptFailure, GatewayError};
use crate::cache::semantic::SemanticMatch;
use crate::pipeline::caching::{CacheHit, CacheProbe, Caches};
use crate::model::{CacheLayer, ChatRequest};
use crate::pipeline::accounting::{self, Admission, Outcome};
use crate::metrics::Metrics;
use crate::model::{Completion, FinishReason, StreamEvent, Target, ToolCall, ToolCallAssembler, ToolCallDelta, Usage};
use crate::pipeline::attempt::OpenedStream;
use crate::experiment::Assignment;
use crate::pipeline::guarding::AnswerGuard;
use crate::provider::ProviderError;
use crate::provider::health::AttemptSample;
use crate::router::Price;

/// Events buffered between the upstream reader and the client writer.
const CHANNEL_CAPACITY: usize = 64;

/// One item of a streamed answer as the front doors see it.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    /// Text to append.
    Delta(String),
    /// A piece of a tool call.
    ToolCall(ToolCallDelta),
    /// Log-probabilities of the text that follows, in OpenAI's `logprobs` shape.
    Logprobs(serde_json::Value),
    /// The answer is complete.
    Finished {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts (zero when the upstream did not report them).
        usage: Usage,
        /// Cost, when the model has a price and usage is known.
        cost: Option<NanoUsd>,
        /// Time from the request's arrival to the first token.
        time_to_first_token: Duration,
        /// Wall time of the whole answer.
        latency: Duration,
    },
}

/// A streamed answer: who serves it, and its items. The receiver ends after one
/// `Finished` or one error.
#[derive(Debug)]
pub struct AnswerStream {
    /// Gateway-assigned id.
    pub id: String,
    /// Who serves it.
    pub target: Target,
    /// Why the router chose its first choice.
    pub routing_reason: String,
    /// True when a fallback serves.
    pub fallback: bool,
    /// Attempts that failed before this one.
    pub failed_attempts: Vec<AttemptFailure>,
    /// The cache layer that answers.
    pub cache_layer: CacheLayer,
    /// The exact-cache key of the request (for invalidation), when the cache is on.
    pub cache_key: Option<String>,
    /// For a semantic hit: its similarity and entry.
    pub cache_match: Option<SemanticMatch>,
    /// The experiment and variant that serve it (`canary/control`), when one does.
    pub experiment: Option<String>,
    /// The items, as they arrive.
    pub items: mpsc::Receiver<Result<StreamItem, GatewayError>>,
}

/// What [`forward`] needs.
pub(crate) struct StreamStart {
    pub id: String,
    pub opened: OpenedStream,
    pub target: Target,
    pub routing_reason: String,
    pub fallback: bool,
    pub failed_attempts: Vec<AttemptFailure>,
    pub price: Option<Price>,
    pub started: Instant,
    pub metrics: Arc<Metrics>,
    pub in_flight: TaskTrackerToken,
    pub admission: Admission,
    pub audit_request: Option<ChatRequest>,
    pub store: Option<Store>,
    /// The guardrails the answer passes, when any looks at it.
    pub guard: Option<AnswerGuard>,
    /// The request's place in an experiment, counted when the stream ends.
    pub assignment: Option<Assignment>,
}

/// Where a complete stream is stored.
pub(crate) struct Store {
    pub caches: Caches,
    pub probe: CacheProbe,
}

/// Spawns the task that reads the upstream and forwards each event.
pub(crate) fn forward(start: StreamStart) -> AnswerStream {
    let (sender, items) = mpsc::channel(CHANNEL_CAPACITY);
    let target = start.target.clone();
    let accounting = Accounting {
        id: start.id.clone(),
        admission: start.admission,
        audit_request: start.audit_request,
        store: start.store,
        guard: start.guard,
        assignment: start.assignment,
        fallback: start.fallback,
    };
    let answer = AnswerStream {
        id: start.id,
        target: start.target,
        routing_reason: start.routing_reason,
        fallback: start.fallback,
        failed_attempts: start.failed_attempts,
        cache_layer: CacheLayer::None,
        cache_key: None,
        cache_match: None,
        experiment: None,
        items,
    };
    let task = pump(start.opened, target, start.price, start.started, start.metrics, sender, start.in_flight, accounting);
    tokio::spawn(task.instrument(Span::current()));
    answer
}

/// What the stream settles when it ends.
struct Accounting {
    id: String,
    admission: Admission,
    audit_request: Option<ChatRequest>,
    store: Option<Store>,
    guard: Option<AnswerGuard>,
    assignment: Option<Assignment>,
    /// A fallback serves: the experiment variant's own model failed.
    fallback: bool,
}

#[expect(clippy::too_many_arguments, reason = "the pieces of one stream, moved into its task")]
async fn pump(
    opened: OpenedStream,
    target: Target,
    price: Option<Price>,
    started: Instant,
    metrics: Arc<Metrics>,
    sender: mpsc::Sender<Result<StreamItem, GatewayError>>,
    _in_flight: TaskTrackerToken,
    mut accounting: Accounting,
) {
    // Set when a guardrail blocked the answer: the client gets this error and nothing more, while
    // the upstream is still read to its end for its usage.
    let mut blocked: Option<GatewayError> = None;
    let mut answer_text = (accounting.audit_request.is_some() || accounting.store.is_some()).then(String::new);
    let mut tool_calls = ToolCallAssembler::default();
    let OpenedStream { first, mut rest, ticket, attempt_started, time_to_first_token, request_timeout, rate_limit_remaining } =
        opened;
    let deadline = attempt_started + request_timeout;
    let ttft_from_arrival = started.elapsed();
    metrics
        .time_to_first_token
        .with_label_values(&[target.provider.as_str(), target.model.as_str()])
        .observe(ttft_from_arrival.as_secs_f64());
    let mut client_connected = true;
    let mut next = Some(Ok(first));
    let outcome: Result<(FinishReason, Option<Usage>), ProviderError> = loop {
        let event = match next.take() {
            Some(event) => event,
            None => match timeout_at(deadline, rest.next()).await {
                Ok(Some(event)) => event,
                Ok(None) => Err(ProviderError::StreamCut("stream ended without a final event".into())),
                Err(_elapsed) => Err(ProviderError::Timeout(request_timeout)),
            },
        };
        match event {
            Ok(StreamEvent::Delta(text)) => {
                if let Some(answer) = answer_text.as_mut() {
                    answer.push_str(&text);
                }
                let guard = accounting.guard.as_mut().filter(|_| blocked.is_none());
                let text = match guard.map(|guard| guard.push(&text)) {
                    None => text,
                    Some(Ok(released)) => released,
                    Some(Err(error)) => {
                        if client_connected {
                            let _client_gone = timeout_at(deadline, sender.send(Err(error.clone()))).await;
                        }
                        blocked = Some(error);
                        client_connected = false;
                        String::new()
                    }
                };
                if client_connected && !text.is_empty() {
                    client_connected = matches!(timeout_at(deadline, sender.send(Ok(StreamItem::Delta(text)))).await, Ok(Ok(())));
                }
            }
            Ok(StreamEvent::ToolCall(delta)) => {
                tool_calls.push(&delta);
                // Under a guardrail a call goes out whole once the answer has ended and it is
                // checked (below).
                if client_connected && accounting.guard.is_none() {
                    client_connected = matches!(timeout_at(deadline, sender.send(Ok(StreamItem::ToolCall(delta)))).await, Ok(Ok(())));
                }
            }
            Ok(StreamEvent::Logprobs(logprobs)) => {
                if client_connected {
                    client_connected = matches!(timeout_at(deadline, sender.send(Ok(StreamItem::Logprobs(logprobs)))).await, Ok(Ok(())));
                }
            }
            Ok(StreamEvent::Finished { finish_reason, usage }) => break Ok((finish_reason, usage)),
            Err(error) => break Err(error),
        }
    };
    let latency = started.elapsed();
    let sample = AttemptSample {
        model: target.model.clone(),
        failed: outcome.as_ref().err().is_some_and(ProviderError::counts_against_provider),
        latency: outcome.is_ok().then(|| attempt_started.elapsed()),
        time_to_first_token: outcome.is_ok().then_some(time_to_first_token),
        rate_limit_remaining,
    };
    let label = match &outcome {
        Ok(_) => "ok",
        Err(error) => error.label(),
    };
    metrics.upstream_attempts.with_label_values(&[target.provider.as_str(), target.model.as_str(), label]).inc();
    ticket.report(sample);
    // The cost goes to the ledger before the client hears the answer is complete.
    let (status, usage) = match &outcome {
        Ok((_, usage)) => ("ok", *usage),
        Err(error) => (if error.class() == crate::provider::ErrorClass::Final { "upstream_rejected" } else { "stream_interrupted" }, None),
    };
    let cost = price.zip(usage).map(|(price, usage)| price.charge(usage));
    let settled = accounting::settle(
        accounting.admission,
        Outcome {
            id: &accounting.id,
            model: &target.model,
            provider: &target.provider,
            usage,
            cost,
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            status,
            cache_layer: CacheLayer::None,
            saved: NanoUsd::ZERO,
        },
        accounting.audit_request.as_ref().zip(answer_text.as_deref()),
    )
    .await;
    if let Err(error) = &settled {
        warn!(request_id = %accounting.id, %error, "failed to record the cost of a stream");
    }
    if let Some(assignment) = accounting.assignment.take() {
        assignment.record(outcome.is_err() || accounting.fallback, cost.unwrap_or(NanoUsd::ZERO), false);
    }
    // What a guardrail held back goes out before the finish (or its block ends the stream).
    if blocked.is_none()
        && outcome.is_ok()
        && let Some(guard) = accounting.guard.as_mut()
    {
        match guard.finish() {
            Ok(released) if !released.is_empty() && client_connected => {
                client_connected = matches!(timeout_at(deadline, sender.send(Ok(StreamItem::Delta(released)))).await, Ok(Ok(())));
            }
            Ok(_) => {}
            Err(error) => {
                if client_connected {
                    let _client_gone = timeout_at(deadline, sender.send(Err(error.clone()))).await;
                }
                blocked = Some(error);
                client_connected = false;
            }
        }
    }
    let tool_calls = tool_calls.finish();
    if blocked.is_none()
        && outcome.is_ok()
        && let Some(guard) = accounting.guard.as_ref()
        && !tool_calls.is_empty()
    {
        let mut checked = tool_calls.clone();
        match guard.check_tool_calls(&mut checked) {
            Ok(()) => {
                for (call, index) in checked.into_iter().zip(0u32..) {
                    if client_connected {
                        client_connected = matches!(timeout_at(deadline, sender.send(Ok(whole_call(call, index)))).await, Ok(Ok(())));
                    }
                }
            }
            Err(error) => {
                if client_connected {
                    let _client_gone = timeout_at(deadline, sender.send(Err(error.clone()))).await;
                }
                blocked = Some(error);
                client_connected = false;
            }
        }
    }
    // Only a complete stream that no guardrail blocked is stored.
    if blocked.is_none()
        && let (Ok((finish_reason, Some(usage))), Some(store), Some(text)) = (&outcome, accounting.store, answer_text)
    {
        let completion = Completion { text, tool_calls, logprobs: None, finish_reason: *finish_reason, usage: *usage };
        let answer = store.probe.entry(&completion, &target, cost);
        store.caches.store(store.probe, answer).await;
    }
    let item = match outcome {
        Ok((finish_reason, usage)) => {
            let usage = usage.unwrap_or_default();
            metrics.record_tokens(&target.provider, &target.model, usage);
            Ok(StreamItem::Finished { finish_reason, usage, cost, time_to_first_token: ttft_from_arrival, latency })
        }
        Err(error) => {
            warn!(provider = %target.provider, model = %target.model, %error, "stream broke after the answer had started");
            Err(GatewayError::StreamInterrupted { target: target.to_string(), error })
        }
    };
    if client_connected {
        let _client_gone = timeout_at(deadline, sender.send(item)).await;
    }
}

/// A tool call in one stream item: its id, name and whole arguments.
fn whole_call(call: ToolCall, index: u32) -> StreamItem {
    StreamItem::ToolCall(ToolCallDelta { index, id: Some(call.id), name: Some(call.name), arguments: call.arguments })
}

/// Replays a cached answer as a stream: the text in word-sized chunks, each tool call whole (its
/// id, name and arguments in one piece), then the finish, in the same items a live stream sends.
/// `text` and `tool_calls` are the cached ones as this request's guardrails let them through.
pub(crate) fn replay(id: String, hit: CacheHit, text: String, tool_calls: Vec<ToolCall>, started: Instant, in_flight: TaskTrackerToken) -> AnswerStream {
    let (sender, items) = mpsc::channel(CHANNEL_CAPACITY);
    let cached = &hit.answer;
    let mut chunks: Vec<StreamItem> = text.split_inclusive(' ').map(|chunk| StreamItem::Delta(chunk.to_owned())).collect();
    chunks.extend(tool_calls.into_iter().zip(0u32..).map(|(call, index)| whole_call(call, index)));
    let finish_reason = FinishReason::parse(&cached.finish_reason);
    let usage = cached.usage();
    tokio::spawn(async move {
        let _in_flight = in_flight;
        for chunk in chunks {
            if sender.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        let latency = started.elapsed();
        let finished = StreamItem::Finished { finish_reason, usage, cost: Some(NanoUsd::ZERO), time_to_first_token: latency, latency };
        let _client_gone = sender.send(Ok(finished)).await;
    });
    AnswerStream {
        id,
        target: cached.target(),
        routing_reason: hit.reason(),
        fallback: false,
        failed_attempts: Vec::new(),
        cache_layer: hit.layer,
        cache_key: None,
        cache_match: hit.semantic,
        experiment: None,
        items,
    }
}
