//! One provider's HTTP client: builds the request in the provider's wire format, sends it over a
//! pooled connection, and turns statuses and bodies into answers or [`ProviderError`]s.
//!
//! The client is hyper's pooled one (HTTP/1.1 and, where TLS offers it, HTTP/2; rustls with the
//! webpki roots), called directly: the endpoints are parsed once, the headers every request
//! carries (content type, user agent, the provider's key) are built once, and a request is
//! those plus its body. No redirect is followed: a provider's API answers, it does not redirect.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use http::{Method, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::model::{ChatRequest, Completion, EmbeddingRequest};
use crate::provider::stream::{UpstreamStream, decode};
use crate::provider::{ProviderError, ProviderKind, ProviderSettings, anthropic, health, openai};

/// Most bytes of an upstream error body kept in the error message.
const ERROR_BODY_LIMIT: usize = 512;

/// The pooled HTTP(S) client.
type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An upstream's response, body not yet read.
type Response = http::Response<Incoming>;

/// Why a provider's client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TLS could not be set up with the process's crypto provider.
    #[error("TLS could not be set up: {0}")]
    Tls(String),
    /// A setting cannot be sent as a header (e.g. a key with a line break in it).
    #[error("{setting} cannot be sent in the {header} header: {error}")]
    Header {
        /// The provider setting.
        setting: &'static str,
        /// The header it goes in.
        header: &'static str,
        /// Why it cannot.
        error: String,
    },
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
    http: Http,
    /// The chat endpoint, parsed once.
    url: Uri,
    /// Anthropic's token counting endpoint; `None` for providers that have none.
    count_url_opt: Option<Uri>,
    /// The embeddings endpoint of OpenAI-wire providers; `None` for Anthropic, which has none.
    embeddings_url_opt: Option<Uri>,
    /// What every request carries: content type, user agent, the provider's version and key.
    headers: HeaderMap,
}

impl ProviderClient {
    /// Builds the pooled client for `settings`.
    pub fn new(settings: Arc<ProviderSettings>) -> Result<Self, ClientError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|error| ClientError::Tls(error.to_string()))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(settings.max_concurrent.min(1024))
            .build(connector);
        let base = settings.base_url.trim_end_matches('/');
        let parse = |url: String| url.parse::<Uri>().map_err(|error| ClientError::Url { url: url.clone(), error: error.to_string() });
        let (url, count_url_opt, embeddings_url_opt) = match settings.kind {
            ProviderKind::Anthropic => (parse(format!("{base}/messages"))?, Some(parse(format!("{base}/messages/count_tokens"))?), None),
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
                (parse(format!("{base}/chat/completions"))?, None, Some(parse(format!("{base}/embeddings"))?))
            }
        };
        let headers = request_headers(&settings)?;
        Ok(Self { settings, http, url, count_url_opt, embeddings_url_opt, headers })
    }

    /// Embeds `request`'s inputs with `upstream_model`; `None` when the provider has no
    /// embeddings endpoint. The caller bounds it with the request timeout.
    pub async fn embed(&self, upstream_model: &str, request: &EmbeddingRequest) -> Option<Result<(openai::Embeddings, ResponseMeta), ProviderError>> {
        let url = self.embeddings_url_opt.as_ref()?;
        let body = openai::embeddings_body(upstream_model, request);
        Some(async move {
            let (response, meta) = self.send(url, &body).await?;
            Ok((openai::parse_embeddings(&read_body(response).await?, request.inputs.len())?, meta))
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
        let url = self.count_url_opt.as_ref()?;
        let body = anthropic::count_tokens_body(upstream_model, request, self.settings.default_max_tokens);
        Some(async move {
            let (response, _meta) = self.send(url, &body).await?;
            anthropic::parse_token_count(&read_body(response).await?)
        }.await)
    }

    /// The provider's settings.
    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    /// Sends a chat request for `upstream_model` in the provider's wire format.
    async fn send_chat(&self, upstream_model: &str, request: &ChatRequest, stream: bool) -> Result<(Response, ResponseMeta), ProviderError> {
        match self.settings.kind {
            ProviderKind::Anthropic => {
                self.send(&self.url, &anthropic::request_body(upstream_model, request, stream, self.settings.default_max_tokens)).await
            }
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
                let native = self.settings.kind == ProviderKind::OpenAi;
                self.send(&self.url, &openai::request_body(upstream_model, request, stream, native)).await
            }
        }
    }

    /// POSTs `body` as JSON to `url`; an error status becomes [`ProviderError::Status`] with the
    /// start of the upstream's message.
    async fn send(&self, url: &Uri, body: &impl serde::Serialize) -> Result<(Response, ResponseMeta), ProviderError> {
        let body = serde_json::to_vec(body).map_err(|error| ProviderError::Malformed(format!("the request body did not serialise: {error}")))?;
        let mut request = http::Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = url.clone();
        *request.headers_mut() = self.headers.clone();
        let response = self.http.request(request).await.map_err(request_error)?;
        let meta = ResponseMeta { rate_limit_remaining: health::rate_limit_remaining(response.headers()) };
        let status = response.status();
        if status.is_success() {
            return Ok((response, meta));
        }
        let retry_after = crate::provider::error::parse_retry_after(response.headers());
        let body = read_body(response).await.unwrap_or_default();
        let mut message = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_LIMIT)]).into_owned();
        if message.is_empty() {
            message = status.canonical_reason().unwrap_or("error").to_owned();
        }
        Err(ProviderError::Status { status: status.as_u16(), retry_after, message })
    }

    /// Sends a unary request and reads the whole answer. The caller bounds it with the
    /// request timeout.
    pub async fn complete(&self, upstream_model: &str, request: &ChatRequest) -> Result<(Completion, ResponseMeta), ProviderError> {
        let (response, meta) = self.send_chat(upstream_model, request, false).await?;
        let body = read_body(response).await?;
        let completion = match self.settings.kind {
            ProviderKind::Anthropic => anthropic::parse_completion(&body)?,
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => openai::parse_completion(&body)?,
        };
        Ok((completion, meta))
    }

    /// Sends a streaming request; resolves once the response headers are in.
    pub async fn stream(&self, upstream_model: &str, request: &ChatRequest) -> Result<(UpstreamStream, ResponseMeta), ProviderError> {
        let (response, meta) = self.send_chat(upstream_model, request, true).await?;
        let body = response.into_body();
        let stream = match self.settings.kind {
            ProviderKind::Anthropic => decode(body, anthropic::AnthropicDecoder::default()),
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => decode(body, openai::OpenAiDecoder::default()),
        };
        Ok((stream, meta))
    }
}

/// The headers every request to the provider of `settings` carries.
fn request_headers(settings: &ProviderSettings) -> Result<HeaderMap, ClientError> {
    let value = |setting: &'static str, header: &'static str, text: String| {
        HeaderValue::try_from(text).map_err(|error| ClientError::Header { setting, header, error: error.to_string() })
    };
    let sensitive = |setting: &'static str, header: &'static str, text: String| {
        let mut value = value(setting, header, text)?;
        value.set_sensitive(true);
        Ok::<_, ClientError>(value)
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    headers.insert(USER_AGENT, HeaderValue::from_static(concat!("switchyard/", env!("CARGO_PKG_VERSION"))));
    let key = settings.api_key.as_deref();
    match settings.kind {
        ProviderKind::Anthropic => {
            headers.insert(HeaderName::from_static("anthropic-version"), value("anthropic_version", "anthropic-version", settings.anthropic_version.clone())?);
            if let Some(key) = key {
                headers.insert(HeaderName::from_static("x-api-key"), sensitive("api_key", "x-api-key", key.to_owned())?);
            }
        }
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
            if let Some(key) = key {
                headers.insert(AUTHORIZATION, sensitive("api_key", "authorization", format!("Bearer {key}"))?);
            }
        }
    }
    Ok(headers)
}

/// Reads a whole response body.
async fn read_body(response: Response) -> Result<Bytes, ProviderError> {
    let collected = response.into_body().collect().await.map_err(|error| ProviderError::StreamCut(error.to_string()))?;
    Ok(collected.to_bytes())
}

/// The error of a request that got no response: a connect timeout, or what broke, with its
/// causes (hyper's own message says only which stage failed).
fn request_error(error: hyper_util::client::legacy::Error) -> ProviderError {
    let mut causes = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let mut timed_out = false;
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        causes.push(cause.to_string());
        source = cause.source();
    }
    if timed_out && error.is_connect() {
        ProviderError::Timeout(Duration::ZERO)
    } else {
        ProviderError::Connect(causes.join(": "))
    }
}
