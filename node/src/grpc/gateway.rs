//! `switchyard.v1.Gateway`: converts protobuf messages to the pipeline's types and back, nothing
//! more. Health and reflection services are mounted beside it in [`crate::server`].

use std::sync::Arc;

use switchyard_actors::budget::NanoUsd;
use switchyard_actors::error::GatewayError;
use switchyard_actors::model::{
    CacheControl, CacheLayer, ChatRequest, Message, Quality, Role, RoutingHints, Sampling, Tier, Usage,
};
use switchyard_actors::pipeline::{Answer, Gateway, StreamItem};
use switchyard_actors::tenancy::Principal;
use switchyard_proto::v1;
use switchyard_proto::v1::gateway_server::GatewayServer;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, info_span};

use crate::auth::bearer_of;
use crate::error::to_status;
use crate::telemetry::adopt_trace;

/// The Gateway service.
#[derive(Debug, Clone)]
pub struct GatewayService {
    gateway: Arc<Gateway>,
}

impl GatewayService {
    /// The tonic server for `gateway`.
    pub fn server(gateway: Arc<Gateway>) -> GatewayServer<Self> {
        GatewayServer::new(Self { gateway })
    }

    /// The route label of `request`, and its principal and pipeline request (authentication
    /// first, so an unauthenticated caller learns nothing about its request's validity).
    fn accept(
        &self,
        headers: &http::HeaderMap,
        request: v1::GenerateRequest,
    ) -> (String, Result<(Arc<Principal>, ChatRequest), GatewayError>) {
        let route = if request.model.is_empty() { "auto".to_owned() } else { request.model.clone() };
        let accepted = self.gateway.authenticate(bearer_of(headers)).and_then(|principal| Ok((principal, to_chat_request(request)?)));
        (route, accepted)
    }

    fn finish<T>(&self, route: &str, result: &Result<T, GatewayError>, model: &str, provider: &str) {
        let status = match result {
            Ok(_) => "ok",
            Err(error) => error.label(),
        };
        self.gateway.metrics().requests.with_label_values(&["grpc", route, model, provider, status]).inc();
    }
}

fn usage(usage: Usage) -> v1::Usage {
    v1::Usage { input_tokens: usage.input_tokens, output_tokens: usage.output_tokens, total_tokens: usage.total() }
}

/// Converts a protobuf request, naming the field of any problem.
pub fn to_chat_request(request: v1::GenerateRequest) -> Result<ChatRequest, GatewayError> {
    let messages = request
        .messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            Ok(Message { role: Role::parse(&message.role, &format!("messages[{index}].role"))?, content: message.content })
        })
        .collect::<Result<Vec<_>, GatewayError>>()?;
    let sampling = request.sampling.unwrap_or_default();
    let routing = request.routing.unwrap_or_default();
    let cache = request.cache.unwrap_or_default();
    let tier = match v1::Tier::try_from(routing.tier) {
        Ok(v1::Tier::Unspecified | v1::Tier::Free) => Tier::Free,
        Ok(v1::Tier::Paid) => Tier::Paid,
        Ok(v1::Tier::Enterprise) => Tier::Enterprise,
        Err(_) => return Err(GatewayError::invalid("routing.tier", format!("unknown tier {}", routing.tier))),
    };
    let quality = match v1::Quality::try_from(routing.quality) {
        Ok(v1::Quality::Unspecified | v1::Quality::Standard) => Quality::Standard,
        Ok(v1::Quality::Low) => Quality::Low,
        Ok(v1::Quality::High) => Quality::High,
        Err(_) => return Err(GatewayError::invalid("routing.quality", format!("unknown quality {}", routing.quality))),
    };
    Ok(ChatRequest {
        messages,
        model: (!request.model.is_empty() && request.model != "auto").then_some(request.model),
        sampling: Sampling {
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            max_tokens: sampling.max_tokens,
            stop: sampling.stop,
        },
        hints: RoutingHints { task_type: routing.task_type, latency_budget_ms: routing.latency_budget_ms, quality, tier },
        cache: CacheControl { bypass: cache.bypass, no_store: cache.no_store, ttl_seconds: cache.ttl_seconds },
        metadata: request.metadata.into_iter().collect(),
    })
}

fn cache_layer(layer: CacheLayer) -> v1::CacheLayer {
    match layer {
        CacheLayer::None => v1::CacheLayer::None,
        CacheLayer::Exact => v1::CacheLayer::Exact,
        CacheLayer::Semantic => v1::CacheLayer::Semantic,
    }
}

fn to_response(answer: Answer) -> v1::GenerateResponse {
    v1::GenerateResponse {
        id: answer.id,
        text: answer.completion.text,
        provider: answer.target.provider,
        model: answer.target.model,
        usage: Some(usage(answer.completion.usage)),
        cost_usd: answer.cost.map(NanoUsd::as_usd),
        cache_layer: cache_layer(answer.cache_layer).into(),
        routing_reason: answer.routing_reason,
        fallback: answer.fallback,
        finish_reason: answer.completion.finish_reason.as_str().to_owned(),
        latency_us: u64::try_from(answer.latency.as_micros()).unwrap_or(u64::MAX),
        gateway_overhead_us: u64::try_from(answer.gateway_overhead.as_micros()).unwrap_or(u64::MAX),
        failed_attempts: answer.failed_attempts.iter().map(ToString::to_string).collect(),
        cache_similarity: answer.cache_match.as_ref().map(|found| found.similarity),
        cache_entry: answer.cache_match.map(|found| found.entry).unwrap_or_default(),
    }
}

fn request_span(method: &'static str, headers: &http::HeaderMap) -> tracing::Span {
    let span = info_span!("request", front_door = "grpc", method, trace_id = tracing::field::Empty);
    adopt_trace(&span, headers);
    span
}

#[tonic::async_trait]
impl v1::gateway_server::Gateway for GatewayService {
    async fn generate(&self, request: Request<v1::GenerateRequest>) -> Result<Response<v1::GenerateResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        let span = request_span("Generate", &headers);
        async move {
            let (route, accepted) = self.accept(&headers, request.into_inner());
            let result = match accepted {
                Ok((principal, request)) => self.gateway.generate(&principal, request).await,
                Err(error) => Err(error),
            };
            let (model, provider) = match &result {
                Ok(answer) => (answer.target.model.as_str(), answer.target.provider.as_str()),
                Err(_) => ("", ""),
            };
            self.finish(&route, &result, model, provider);
            if let Ok(answer) = &result {
                self.gateway
                    .metrics()
                    .request_duration
                    .with_label_values(&["grpc", &route, model, provider, answer.cache_layer.as_str()])
                    .observe(answer.latency.as_secs_f64());
            }
            result.map(|answer| Response::new(to_response(answer))).map_err(|error| to_status(&error))
        }
        .instrument(span)
        .await
    }

    type GenerateStreamStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::GenerateChunk, Status>> + Send>>;

    async fn generate_stream(&self, request: Request<v1::GenerateRequest>) -> Result<Response<Self::GenerateStreamStream>, Status> {
        let headers = request.metadata().clone().into_headers();
        let span = request_span("GenerateStream", &headers);
        async move {
            let (route, accepted) = self.accept(&headers, request.into_inner());
            let result = match accepted {
                Ok((principal, request)) => self.gateway.generate_stream(&principal, request).await,
                Err(error) => Err(error),
            };
            let answer = match result {
                Ok(answer) => answer,
                Err(error) => {
                    self.finish::<()>(&route, &Err(error.clone()), "", "");
                    return Err(to_status(&error));
                }
            };
            let head = v1::GenerateChunk {
                id: answer.id.clone(),
                provider: answer.target.provider.clone(),
                model: answer.target.model.clone(),
                routing_reason: answer.routing_reason.clone(),
                fallback: answer.fallback,
                cache_layer: cache_layer(answer.cache_layer).into(),
                cache_similarity: answer.cache_match.as_ref().map(|found| found.similarity),
                cache_entry: answer.cache_match.as_ref().map(|found| found.entry.clone()).unwrap_or_default(),
                ..v1::GenerateChunk::default()
            };
            let id = answer.id.clone();
            let metrics = std::sync::Arc::clone(self.gateway.metrics());
            let (model, provider, cache) = (answer.target.model.clone(), answer.target.provider.clone(), answer.cache_layer.as_str());
            let items = ReceiverStream::new(answer.items).map(move |item| {
                let (status, chunk) = match item {
                    Ok(StreamItem::Delta(delta)) => {
                        return Ok(v1::GenerateChunk { id: id.clone(), delta, ..v1::GenerateChunk::default() });
                    }
                    Ok(StreamItem::Finished { finish_reason, usage: used, cost, time_to_first_token, latency }) => {
                        metrics.request_duration.with_label_values(&["grpc", &route, &model, &provider, cache]).observe(latency.as_secs_f64());
                        (
                            "ok",
                            Ok(v1::GenerateChunk {
                                id: id.clone(),
                                finish_reason: finish_reason.as_str().to_owned(),
                                usage: Some(usage(used)),
                                cost_usd: cost.map(NanoUsd::as_usd),
                                latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                                time_to_first_token_us: u64::try_from(time_to_first_token.as_micros()).unwrap_or(u64::MAX),
                                ..v1::GenerateChunk::default()
                            }),
                        )
                    }
                    Err(error) => (error.label(), Err(to_status(&error))),
                };
                metrics.requests.with_label_values(&["grpc", &route, &model, &provider, status]).inc();
                chunk
            });
            let stream = tokio_stream::once(Ok(head)).chain(items);
            Ok(Response::new(Box::pin(stream) as Self::GenerateStreamStream))
        }
        .instrument(span)
        .await
    }
}
