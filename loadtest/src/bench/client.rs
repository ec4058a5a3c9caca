//! The benchmark targets and the per-worker clients that call them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use switchyard_proto::v1::gateway_client::GatewayClient;
use switchyard_proto::v1::{ChatMessage, GenerateRequest, SamplingParams};
use tonic::transport::{Channel, Endpoint};

/// Path of the OpenAI Chat Completions route, served by the simulator and the gateway.
const CHAT_COMPLETIONS_PATH: &str = "/v1/chat/completions";

/// What a benchmark calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `http://host:port` or `https://host:port`: unary OpenAI `POST /v1/chat/completions`.
    Http {
        /// The URL as given.
        url: String,
    },
    /// `grpc://host:port`: `switchyard.v1.Gateway/Generate` over plaintext HTTP/2.
    Grpc {
        /// The URL as given.
        url: String,
    },
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(url: &str) -> anyhow::Result<Self> {
        let url = url.trim();
        if url.starts_with("grpc://") {
            Ok(Self::Grpc {
                url: url.to_owned(),
            })
        } else if url.starts_with("http://") || url.starts_with("https://") {
            Ok(Self::Http {
                url: url.to_owned(),
            })
        } else {
            bail!("unsupported target {url:?}: expected http://host:port or grpc://host:port")
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http { url } | Self::Grpc { url } => formatter.write_str(url),
        }
    }
}

/// What every request of a benchmark asks.
#[derive(Clone, Debug)]
pub(crate) struct RequestTemplate {
    /// The model or route name.
    pub(crate) model: String,
    /// The user message.
    pub(crate) prompt: String,
    /// The answer's token limit.
    pub(crate) max_tokens: u32,
    /// The API key sent as a bearer token, if any.
    pub(crate) api_key: Option<String>,
}

/// Connections shared by the workers of one benchmark run.
#[expect(clippy::large_enum_variant, reason = "one per benchmark run")]
pub(crate) enum ClientFactory {
    /// One pooled HTTP client for every worker and the pre-encoded request body.
    Http {
        /// The pooled client.
        client: reqwest::Client,
        /// The chat completions URL.
        url: reqwest::Url,
        /// The request body, encoded once.
        body: Bytes,
    },
    /// The endpoint each worker opens its own channel to, and the request.
    Grpc {
        /// The gRPC endpoint.
        endpoint: Endpoint,
        /// The request every call sends.
        request: GenerateRequest,
        /// The `authorization` metadata, with an API key.
        authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    },
}

impl ClientFactory {
    /// Prepares the clients for `target`.
    pub(crate) fn new(
        target: &Target,
        template: &RequestTemplate,
        concurrency: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        match target {
            Target::Http { url } => {
                let base = url.trim_end_matches('/');
                let url = if base.ends_with(CHAT_COMPLETIONS_PATH) {
                    base.to_owned()
                } else {
                    format!("{base}{CHAT_COMPLETIONS_PATH}")
                };
                let url = reqwest::Url::parse(&url)
                    .with_context(|| format!("invalid target url {url:?}"))?;
                let mut headers = http::HeaderMap::new();
                if let Some(key) = &template.api_key {
                    let value = http::HeaderValue::from_str(&format!("Bearer {key}")).context("the API key is not a valid header value")?;
                    headers.insert(http::header::AUTHORIZATION, value);
                }
                let client = reqwest::Client::builder()
                    .default_headers(headers)
                    .pool_max_idle_per_host(concurrency)
                    .tcp_nodelay(true)
                    .timeout(timeout)
                    .build()
                    .context("failed to build the http client")?;
                let body = serde_json::to_vec(&serde_json::json!({
                    "model": template.model,
                    "messages": [{ "role": "user", "content": template.prompt }],
                    "max_tokens": template.max_tokens,
                }))
                .context("failed to encode the request body")?;
                Ok(Self::Http {
                    client,
                    url,
                    body: Bytes::from(body),
                })
            }
            Target::Grpc { url } => {
                let address = url.replacen("grpc://", "http://", 1);
                let endpoint = Endpoint::from_shared(address)
                    .with_context(|| format!("invalid target url {url:?}"))?
                    .tcp_nodelay(true)
                    .timeout(timeout)
                    .connect_timeout(timeout);
                let request = GenerateRequest {
                    messages: vec![ChatMessage {
                        role: "user".to_owned(),
                        content: template.prompt.clone(),
                        ..ChatMessage::default()
                    }],
                    model: template.model.clone(),
                    sampling: Some(SamplingParams {
                        max_tokens: Some(template.max_tokens),
                        ..SamplingParams::default()
                    }),
                    ..GenerateRequest::default()
                };
                let authorization = template
                    .api_key
                    .as_ref()
                    .map(|key| format!("Bearer {key}").parse())
                    .transpose()
                    .context("the API key is not valid metadata")?;
                Ok(Self::Grpc { endpoint, request, authorization })
            }
        }
    }

    /// The client of one worker. gRPC workers each get their own channel (connected on first
    /// use), so HTTP/2 multiplexing over one connection does not cap the throughput.
    pub(crate) fn worker_client(&self) -> WorkerClient {
        match self {
            Self::Http { client, url, body } => WorkerClient::Http {
                client: client.clone(),
                url: url.clone(),
                body: body.clone(),
            },
            Self::Grpc { endpoint, request, authorization } => WorkerClient::Grpc {
                client: GatewayClient::new(endpoint.connect_lazy()),
                request: request.clone(),
                authorization: authorization.clone(),
            },
        }
    }
}

/// The client one worker sends its requests with.
#[expect(
    clippy::large_enum_variant,
    reason = "one per worker, never moved in the loop"
)]
pub(crate) enum WorkerClient {
    /// An HTTP client sharing the benchmark's connection pool.
    Http {
        /// The pooled client.
        client: reqwest::Client,
        /// The chat completions URL.
        url: reqwest::Url,
        /// The request body.
        body: Bytes,
    },
    /// A gRPC client on the worker's own channel.
    Grpc {
        /// The client.
        client: GatewayClient<Channel>,
        /// The request every call sends.
        request: GenerateRequest,
        /// The `authorization` metadata, with an API key.
        authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    },
}

impl WorkerClient {
    /// Sends one request and reads the whole answer; an error describes a failed call.
    pub(crate) async fn call(&mut self) -> Result<(), String> {
        match self {
            Self::Http { client, url, body } => {
                let response = client
                    .post(url.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|error| format!("request failed: {}", error_chain(&error)))?;
                let status = response.status();
                // Reading the body to its end lets the connection go back to the pool.
                let answer = response.bytes().await.map_err(|error| {
                    format!("reading the answer failed: {}", error_chain(&error))
                })?;
                if status.is_success() {
                    Ok(())
                } else {
                    let excerpt = String::from_utf8_lossy(&answer[..answer.len().min(200)]);
                    Err(format!("status {status}: {excerpt}"))
                }
            }
            Self::Grpc { client, request, authorization } => {
                let mut call = tonic::Request::new(request.clone());
                if let Some(authorization) = authorization {
                    call.metadata_mut().insert("authorization", authorization.clone());
                }
                client.generate(call).await
            }
                .map(drop)
                .map_err(|status| format!("grpc {:?}: {}", status.code(), status.message())),
        }
    }
}

/// `error` and its sources, joined by `: `.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source_opt = error.source();
    while let Some(source) = source_opt {
        text.push_str(": ");
        text.push_str(&source.to_string());
        source_opt = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_by_scheme() -> anyhow::Result<()> {
        assert_eq!(
            "http://127.0.0.1:9100".parse::<Target>()?,
            Target::Http {
                url: "http://127.0.0.1:9100".to_owned()
            }
        );
        assert!(matches!(
            "grpc://gateway:50051".parse::<Target>()?,
            Target::Grpc { .. }
        ));
        assert!("tcp://x:1".parse::<Target>().is_err());
        Ok(())
    }

    #[test]
    fn http_targets_get_the_chat_completions_path() -> anyhow::Result<()> {
        let template = RequestTemplate {
            model: "m".to_owned(),
            prompt: "hi".to_owned(),
            max_tokens: 4,
            api_key: None,
        };
        for given in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/v1/chat/completions",
        ] {
            let factory =
                ClientFactory::new(&given.parse()?, &template, 1, Duration::from_secs(1))?;
            let ClientFactory::Http { url, .. } = factory else {
                anyhow::bail!("{given} is not an http target");
            };
            assert_eq!(url.as_str(), "http://h:1/v1/chat/completions");
        }
        Ok(())
    }
}
