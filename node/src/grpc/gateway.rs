//! `switchyard.v1.Gateway`: converts protobuf messages to the pipeline's types and back, nothing
//! more. Health and reflection services are mounted beside it in [`crate::server`].

use std::sync::Arc;

use switchyard_actors::budget::NanoUsd;
use switchyard_actors::error::GatewayError;
use switchyard_actors::model::{
    CacheControl, CacheLayer, ChatRequest, ContentPart, Message, Quality, ResponseFormat, Role, RoutingHints, Sampling, Tier, Tool, ToolCall,
    ToolChoice, Usage,
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
        let accepted = self.gateway.authenticate(bearer_of(headers)).and_then(|principal| {
            let mut chat = to_chat_request(request)?;
            crate::http::headers::tag_feature(headers, &mut chat.metadata)?;
            Ok((principal, chat))
        });
        (route, accepted)
    }

    /// Counts a request that failed before it had an answer.
    fn failed(&self, route: &str, error: &GatewayError) {
        self.gateway.metrics().record_request_failure("grpc", route, "", "", error.label());
    }
}

fn usage(usage: Usage) -> v1::Usage {
    v1::Usage { input_tokens: usage.input_tokens, output_tokens: usage.output_tokens, total_tokens: usage.total() }
}

/// A JSON text field as a value; empty is `None`.
fn json_field(text: &str, field: &str) -> Result<Option<serde_json::Value>, GatewayError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text).map(Some).map_err(|error| GatewayError::invalid(field, format!("is not JSON: {error}")))
}

fn to_message(message: v1::ChatMessage, index: usize) -> Result<Message, GatewayError> {
    let role = Role::parse(&message.role, &format!("messages[{index}].role"))?;
    let mut parts = Vec::with_capacity(message.parts.len());
    for (part_index, part) in message.parts.into_iter().enumerate() {
        parts.push(match part.part {
            Some(v1::content_part::Part::Text(text)) => ContentPart::Text(text),
            Some(v1::content_part::Part::Image(image)) => {
                if !["", "auto", "low", "high"].contains(&image.detail.as_str()) {
                    return Err(GatewayError::invalid(format!("messages[{index}].parts[{part_index}].image.detail"), "must be auto, low or high"));
                }
                ContentPart::Image { url: image.url, detail: (!image.detail.is_empty()).then_some(image.detail) }
            }
            None => return Err(GatewayError::invalid(format!("messages[{index}].parts[{part_index}]"), "is empty")),
        });
    }
    let (content, parts) = if parts.is_empty() {
        (message.content, parts)
    } else {
        let text = parts.iter().filter_map(|part| if let ContentPart::Text(text) = part { Some(text.as_str()) } else { None }).collect();
        let has_image = parts.iter().any(|part| matches!(part, ContentPart::Image { .. }));
        (text, if has_image { parts } else { Vec::new() })
    };
    Ok(Message {
        role,
        content,
        parts,
        tool_calls: message.tool_calls.into_iter().map(|call| ToolCall { id: call.id, name: call.name, arguments: call.arguments }).collect(),
        tool_call_id: (!message.tool_call_id.is_empty()).then_some(message.tool_call_id),
        name: (!message.name.is_empty()).then_some(message.name),
        tool_error: message.tool_error,
        prompt_cache: None,
    })
}

fn to_tool_choice(choice: v1::ToolChoice) -> Result<Option<ToolChoice>, GatewayError> {
    Ok(match choice.choice {
        None => None,
        Some(v1::tool_choice::Choice::Function(name)) => Some(ToolChoice::Named(name)),
        Some(v1::tool_choice::Choice::Mode(mode)) => match v1::ToolChoiceMode::try_from(mode) {
            Ok(v1::ToolChoiceMode::Unspecified) => None,
            Ok(v1::ToolChoiceMode::Auto) => Some(ToolChoice::Auto),
            Ok(v1::ToolChoiceMode::None) => Some(ToolChoice::None),
            Ok(v1::ToolChoiceMode::Required) => Some(ToolChoice::Required),
            Err(_) => return Err(GatewayError::invalid("tool_choice.mode", format!("unknown mode {mode}"))),
        },
    })
}

fn to_response_format(format: v1::ResponseFormat) -> Result<ResponseFormat, GatewayError> {
    match format.r#type.as_str() {
        "" | "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => Ok(ResponseFormat::JsonSchema {
            name: format.schema_name,
            description: (!format.description.is_empty()).then_some(format.description),
            schema: json_field(&format.schema_json, "response_format.schema_json")?.unwrap_or(serde_json::Value::Null),
            strict: format.strict,
        }),
        other => Err(GatewayError::invalid("response_format.type", format!("\"{other}\" is not text, json_object or json_schema"))),
    }
}

/// Converts a protobuf request, naming the field of any problem.
pub fn to_chat_request(request: v1::GenerateRequest) -> Result<ChatRequest, GatewayError> {
    let messages = request.messages.into_iter().enumerate().map(|(index, message)| to_message(message, index)).collect::<Result<Vec<_>, _>>()?;
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
    let mut tools = Vec::with_capacity(request.tools.len());
    for (index, tool) in request.tools.into_iter().enumerate() {
        let parameters = json_field(&tool.parameters_json, &format!("tools[{index}].parameters_json"))?;
        tools.push(Tool { name: tool.name, description: (!tool.description.is_empty()).then_some(tool.description), parameters, strict: tool.strict, prompt_cache: None });
    }
    let top_logprobs = match sampling.top_logprobs.map(u8::try_from).transpose() {
        Ok(top) => top,
        Err(_) => return Err(GatewayError::invalid("sampling.top_logprobs", "is outside 0 ..= 20")),
    };
    let mut logit_bias: Vec<(u32, f32)> = sampling.logit_bias.into_iter().collect();
    logit_bias.sort_by_key(|(token, _)| *token);
    let user = (!request.user.is_empty()).then_some(request.user);
    let mut metadata: std::collections::BTreeMap<String, String> = request.metadata.into_iter().collect();
    if let Some(user) = &user {
        metadata.insert("user".into(), user.clone());
    }
    Ok(ChatRequest {
        messages,
        model: (!request.model.is_empty() && request.model != "auto").then_some(request.model),
        sampling: Sampling {
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            top_k: sampling.top_k,
            max_tokens: sampling.max_tokens,
            stop: sampling.stop,
            seed: sampling.seed,
            frequency_penalty: sampling.frequency_penalty,
            presence_penalty: sampling.presence_penalty,
            logit_bias,
            logprobs: top_logprobs,
            reasoning_effort: (!sampling.reasoning_effort.is_empty()).then_some(sampling.reasoning_effort),
        },
        hints: RoutingHints { task_type: routing.task_type, latency_budget_ms: routing.latency_budget_ms, quality, tier },
        cache: CacheControl { bypass: cache.bypass, no_store: cache.no_store, ttl_seconds: cache.ttl_seconds },
        metadata,
        user,
        tools,
        tool_choice: request.tool_choice.map(to_tool_choice).transpose()?.flatten(),
        parallel_tool_calls: request.parallel_tool_calls,
        response_format: request.response_format.map(to_response_format).transpose()?,
        passthrough: serde_json::Map::new(),
    })
}

fn tool_call(call: &ToolCall) -> v1::ToolCall {
    v1::ToolCall { id: call.id.clone(), name: call.name.clone(), arguments: call.arguments.clone() }
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
        tool_calls: answer.completion.tool_calls.iter().map(tool_call).collect(),
        logprobs_json: answer.completion.logprobs.map(|logprobs| logprobs.to_string()).unwrap_or_default(),
        experiment: answer.experiment.unwrap_or_default(),
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
            match &result {
                Ok(answer) => {
                    let target = &answer.target;
                    self.gateway.metrics().record_request_answered("grpc", &route, &target.model, &target.provider, answer.cache_layer.as_str(), answer.latency);
                }
                Err(error) => self.failed(&route, error),
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
                    self.failed(&route, &error);
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
                experiment: answer.experiment.clone().unwrap_or_default(),
                ..v1::GenerateChunk::default()
            };
            let id = answer.id.clone();
            let metrics = std::sync::Arc::clone(self.gateway.metrics());
            let (model, provider, cache) = (answer.target.model.clone(), answer.target.provider.clone(), answer.cache_layer.as_str());
            let items = ReceiverStream::new(answer.items).map(move |item| {
                let (failed, chunk) = match item {
                    Ok(StreamItem::Delta(delta)) => {
                        return Ok(v1::GenerateChunk { id: id.clone(), delta, ..v1::GenerateChunk::default() });
                    }
                    Ok(StreamItem::ToolCall(delta)) => {
                        let tool_call = v1::ToolCallDelta {
                            index: delta.index,
                            id: delta.id.unwrap_or_default(),
                            name: delta.name.unwrap_or_default(),
                            arguments: delta.arguments,
                        };
                        return Ok(v1::GenerateChunk { id: id.clone(), tool_call: Some(tool_call), ..v1::GenerateChunk::default() });
                    }
                    Ok(StreamItem::Logprobs(logprobs)) => {
                        return Ok(v1::GenerateChunk { id: id.clone(), logprobs_json: logprobs.to_string(), ..v1::GenerateChunk::default() });
                    }
                    Ok(StreamItem::Finished { finish_reason, usage: used, cost, time_to_first_token, latency }) => {
                        metrics.record_request_answered("grpc", &route, &model, &provider, cache, latency);
                        (
                            None,
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
                    Err(error) => (Some(error.label()), Err(to_status(&error))),
                };
                if let Some(status) = failed {
                    metrics.record_request_failure("grpc", &route, &model, &provider, status);
                }
                chunk
            });
            let stream = tokio_stream::once(Ok(head)).chain(items);
            Ok(Response::new(Box::pin(stream) as Self::GenerateStreamStream))
        }
        .instrument(span)
        .await
    }
}
