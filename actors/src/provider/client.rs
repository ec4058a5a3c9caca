//! One provider's HTTP client: builds the request in the provider's wire format, sends it over a
//! pooled connection, and turns statuses and bodies into answers or [`ProviderError`]s.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{ChatRequest, Completion, EmbeddingRequest};
use crate::provider::stream::{UpstreamStream, decode};
use crate::provider::{ProviderError, ProviderKind, ProviderSettings, anthropic, health, openai};

/// Most bytes of an upstream error body kept in the error message.
const ERROR_BODY_LIMIT: usize = 512;

/// Why a provider's client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP client could not be set up.
    #[error("failed to build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The endpoint URL does not parse.
    #[error("endpoint {url} is not a valid URL: {error}")]
    Url {
        /// The URL as built from `base_url`.
        url: String,
        /// Why it does not parse.
        error: String,
    },
}

/// What the response headers said besides the answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResponseMeta {
    /// Requests left in the upstream's rate-limit window.
    pub rate_limit_remaining: Option<u64>,
}

/// A provider's HTTP client.
#[derive(Clone, Debug)]
pub struct ProviderClient {
    settings: Arc<ProviderSettings>,
    http: reqwest::Client,
    /// The endpoint, parsed once: parsing it per request showed in profiles.
    url: reqwest::Url,
    /// Anthropic's token counting endpoint; `None` for providers that have none.
    count_url_opt: Option<reqwest::Url>,
    /// The embeddings endpoint of OpenAI-wire providers; `None` for Anthropic, which has none.
    embeddings_url_opt: Option<reqwest::Url>,
}

impl ProviderClient {
    /// Builds the pooled client for `settings`.
    pub fn new(settings: Arc<ProviderSettings>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .pool_max_idle_per_host(settings.max_concurrent.min(1024))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = settings.base_url.trim_end_matches('/');
        let url = match settings.kind {
            ProviderKind::Anthropic => format!("{base}/messages"),
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => format!("{base}/chat/completions"),
        };
        let parse = |url: String| reqwest::Url::parse(&url).map_err(|error| ClientError::Url { url: url.clone(), error: error.to_string() });
        let (count_url_opt, embeddings_url_opt) = match settings.kind {
            ProviderKind::Anthropic => (Some(parse(format!("{base}/messages/count_tokens"))?), None),
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => (None, Some(parse(format!("{base}/embeddings"))?)),
        };
        let url = parse(url)?;
        Ok(Self { settings, http, url, count_url_opt, embeddings_url_opt })
    }

    /// Embeds `request`'s inputs with `upstream_model`; `None` when the provider has no
    /// embeddings endpoint. The caller bounds it with the request timeout.
    pub async fn embed(&self, upstream_model: &str, request: &EmbeddingRequest) -> Option<Result<(openai::Embeddings, ResponseMeta), ProviderError>> {
        let url = self.embeddings_url_opt.clone()?;
        let mut builder = self.http.post(url);
        if let Some(key) = self.settings.api_key.as_deref() {
            builder = builder.bearer_auth(key);
        }
        let body = openai::embeddings_body(upstream_model, request);
        Some(async move {
            let (response, meta) = self.send(builder.json(&body)).await?;
            let body = response.bytes().await.map_err(|error| ProviderError::StreamCut(error.to_string()))?;
            Ok((openai::parse_embeddings(&body, request.inputs.len())?, meta))
        }.await)
    }

    /// True when the provider counts a prompt's tokens without answering it.
    pub fn counts_tokens(&self) -> bool {
        self.count_url_opt.is_some()
    }

    /// The input tokens `request` would take on `upstream_model`, counted by the provider
    /// (Anthropic's `/v1/messages/count_tokens`); `None` when it has no such endpoint. The caller
    /// bounds it with the request timeout.
    pub async fn count_tokens(&self, upstream_model: &str, request: &ChatRequest) -> Option<Result<u32, ProviderError>> {
        let url = self.count_url_opt.clone()?;
        let mut builder = self.http.post(url).header("anthropic-version", &self.settings.anthropic_version);
        if let Some(key) = self.settings.api_key.as_deref() {
            builder = builder.header("x-api-key", key);
        }
        let body = anthropic::count_tokens_body(upstream_model, request, self.settings.default_max_tokens);
        Some(async move {
            let (response, _meta) = self.send(builder.json(&body)).await?;
            let body = response.bytes().await.map_err(|error| ProviderError::StreamCut(error.to_string()))?;
            anthropic::parse_token_count(&body)
        }.await)
    }

    /// The provider's settings.
    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    fn build(&self, upstream_model: &str, request: &ChatRequest, stream: bool) -> reqwest::RequestBuilder {
        let builder = self.http.post(self.url.clone());
        let key = self.settings.api_key.as_deref();
        match self.settings.kind {
            ProviderKind::Anthropic => {
                let builder = builder.header("anthropic-version", &self.settings.anthropic_version);
                let builder = match key {
                    Some(key) => builder.header("x-api-key", key),
                    None => builder,
                };
                builder.json(&anthropic::request_body(upstream_model, request, stream, self.settings.default_max_tokens))
            }
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
                let builder = match key {
                    Some(key) => builder.bearer_auth(key),
                    None => builder,
                };
                let native = self.settings.kind == ProviderKind::OpenAi;
                builder.json(&openai::request_body(upstream_model, request, stream, native))
            }
        }
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> Result<(reqwest::Response, ResponseMeta), ProviderError> {
        let response = builder.send().await.map_err(request_error)?;
        let meta = ResponseMeta { rate_limit_remaining: health::rate_limit_remaining(response.headers()) };
        let status = response.status();
        if status.is_success() {
            return Ok((response, meta));
        }
        let retry_after = crate::provider::error::parse_retry_after(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        let mut message = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_LIMIT)]).into_owned();
        if message.is_empty() {
            message = status.canonical_reason().unwrap_or("error").to_owned();
        }
        Err(ProviderError::Status { status: status.as_u16(), retry_after, message })
    }

    /// Sends a unary request and reads the whole answer. The caller bounds it with the
    /// request timeout.
    pub async fn complete(&self, upstream_model: &str, request: &ChatRequest) -> Result<(Completion, ResponseMeta), ProviderError> {
        let (response, meta) = self.send(self.build(upstream_model, request, false)).await?;
        let body = response.bytes().await.map_err(|error| ProviderError::StreamCut(error.to_string()))?;
        let completion = match self.settings.kind {
            ProviderKind::Anthropic => anthropic::parse_completion(&body)?,
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => openai::parse_completion(&body)?,
        };
        Ok((completion, meta))
    }

    /// Sends a streaming request; resolves once the response headers are in.
    pub async fn stream(&self, upstream_model: &str, request: &ChatRequest) -> Result<(UpstreamStream, ResponseMeta), ProviderError> {
        let (response, meta) = self.send(self.build(upstream_model, request, true)).await?;
        let stream = match self.settings.kind {
            ProviderKind::Anthropic => decode(response, anthropic::AnthropicDecoder::default()),
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => decode(response, openai::OpenAiDecoder::default()),
        };
        Ok((stream, meta))
    }
}

fn request_error(error: reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        ProviderError::Timeout(Duration::ZERO)
    } else {
        ProviderError::Connect(error.to_string())
    }
}
