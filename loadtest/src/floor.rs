//! Floors: bare servers built from the node's own stack, with none of its pipeline.
//!
//! What a pass-through request or a cache hit costs the node is the stack's cost (sockets,
//! HTTP, gRPC, the runtime, the allocator) plus the pipeline's (authentication, routing,
//! accounting, caching, metrics). These servers measure the first part on the machine at hand, so
//! a benchmark can tell how much of the node's cost any change to the pipeline could remove:
//! - [`serve_http`]: `POST /v1/chat/completions` forwarded unchanged to an upstream with the
//!   node's HTTP stack (an axum server with `TCP_NODELAY`, a pooled reqwest client set up like a
//!   provider pool's), the upstream's status and body returned as they are.
//! - [`serve_grpc`]: `switchyard.v1.Gateway/Generate` on tonic answering one fixed response,
//!   fetched from Redis on every call when a Redis URL is given (a `GET` through a connection
//!   manager and a JSON decode, as an exact-cache hit does).
//!
//! They parse nothing they do not have to, check nothing and count nothing: never a gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt as _;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use switchyard_proto::v1::gateway_server::{Gateway, GatewayServer};
use switchyard_proto::v1::{GenerateChunk, GenerateRequest, GenerateResponse, Usage};
use tokio::net::TcpListener;
use tonic::{Request, Status};

/// The Redis key [`serve_grpc`] stores its answer under and reads it from.
const ANSWER_KEY: &str = "switchyard-floor:answer";

/// Binds `listen`, naming the flag when it cannot.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen).await.with_context(|| format!("failed to bind --listen {listen}"))
}

/// Forwards chat completions arriving at `listener` to `upstream` (a base URL such as
/// `http://127.0.0.1:9100/v1`) until the task is dropped.
pub async fn serve_http(listener: TcpListener, upstream: &str) -> anyhow::Result<()> {
    let url = format!("{}/chat/completions", upstream.trim_end_matches('/'));
    let url = reqwest::Url::parse(&url).with_context(|| format!("--upstream \"{upstream}\" is not a URL"))?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()?;
    let app = Router::new().route("/v1/chat/completions", post(forward)).with_state(Arc::new(Forwarder { client, url }));
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

/// The bare forwarder's state.
struct Forwarder {
    client: reqwest::Client,
    url: reqwest::Url,
}

/// Sends the body upstream and returns what came back (a 502 naming the failure if nothing did).
async fn forward(State(forwarder): State<Arc<Forwarder>>, body: Bytes) -> Response {
    let sent = forwarder.client.post(forwarder.url.clone()).header(CONTENT_TYPE, "application/json").body(body).send().await;
    let answer = match sent {
        Ok(response) => {
            let status = response.status();
            response.bytes().await.map(|bytes| (status, bytes))
        }
        Err(error) => Err(error),
    };
    match answer {
        Ok((status, bytes)) => (status, [(CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(error) => (StatusCode::BAD_GATEWAY, format!("upstream: {error}")).into_response(),
    }
}

/// Answers `Generate` at `listener` with one fixed response (read from Redis per call when
/// `redis_url` is given) until the task is dropped.
pub async fn serve_grpc(listener: TcpListener, redis_url: Option<&str>) -> anyhow::Result<()> {
    let redis = match redis_url {
        None => None,
        Some(url) => {
            let client = redis::Client::open(url).with_context(|| format!("--redis \"{url}\" is not a Redis URL"))?;
            let mut connection = ConnectionManager::new(client).await.with_context(|| format!("failed to connect to {url}"))?;
            let () = connection.set(ANSWER_KEY, serde_json::to_vec(&StoredAnswer::fixed())?).await?;
            Some(connection)
        }
    };
    let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |stream| {
        if let Ok(tcp) = &stream {
            let _ = tcp.set_nodelay(true);
        }
        stream
    });
    tonic::transport::Server::builder()
        .add_service(GatewayServer::new(FixedAnswer { answer: StoredAnswer::fixed().into(), redis }))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// What is kept in Redis: the answer's fields, as JSON, like an exact-cache entry.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAnswer {
    text: String,
    provider: String,
    model: String,
    input_tokens: u32,
    output_tokens: u32,
    cost_usd: f64,
}

impl StoredAnswer {
    /// The answer every call gets: the size of a short chat answer with its bookkeeping.
    fn fixed() -> Self {
        Self {
            text: "A closed-loop benchmark keeps a fixed number of requests in flight and measures how long each takes.".to_owned(),
            provider: "sim-openai".to_owned(),
            model: "gpt-4o-mini".to_owned(),
            input_tokens: 12,
            output_tokens: 18,
            cost_usd: 0.000_012_6,
        }
    }
}

impl From<StoredAnswer> for GenerateResponse {
    fn from(stored: StoredAnswer) -> Self {
        Self {
            text: stored.text,
            provider: stored.provider,
            model: stored.model,
            usage: Some(Usage {
                input_tokens: stored.input_tokens,
                output_tokens: stored.output_tokens,
                total_tokens: stored.input_tokens + stored.output_tokens,
            }),
            cost_usd: Some(stored.cost_usd),
            finish_reason: "stop".to_owned(),
            routing_reason: "floor".to_owned(),
            ..Self::default()
        }
    }
}

/// The bare `Gateway` service.
struct FixedAnswer {
    answer: GenerateResponse,
    redis: Option<ConnectionManager>,
}

#[tonic::async_trait]
impl Gateway for FixedAnswer {
    async fn generate(&self, _request: Request<GenerateRequest>) -> Result<tonic::Response<GenerateResponse>, Status> {
        let Some(redis) = &self.redis else { return Ok(tonic::Response::new(self.answer.clone())) };
        let mut connection = redis.clone();
        let bytes: Option<Vec<u8>> = connection.get(ANSWER_KEY).await.map_err(|error| Status::unavailable(format!("redis: {error}")))?;
        let bytes = bytes.ok_or_else(|| Status::not_found(format!("{ANSWER_KEY} is gone from Redis")))?;
        let stored: StoredAnswer = serde_json::from_slice(&bytes).map_err(|error| Status::internal(format!("{ANSWER_KEY}: {error}")))?;
        Ok(tonic::Response::new(stored.into()))
    }

    type GenerateStreamStream = futures::stream::Empty<Result<GenerateChunk, Status>>;

    async fn generate_stream(&self, _request: Request<GenerateRequest>) -> Result<tonic::Response<Self::GenerateStreamStream>, Status> {
        Err(Status::unimplemented("the floor server answers unary Generate only"))
    }
}
