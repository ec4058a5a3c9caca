//! Test harness: an in-process upstream simulator on a real socket, and real `switchyard`
//! processes started on free loopback ports with a config pointing at it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_loadtest::sim::{self, SimConfig, SimHandle};
use switchyard_proto::v1;
use switchyard_proto::v1::gateway_client::GatewayClient;

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// Starts a simulator with default behaviour.
pub async fn start_sim() -> SimHandle {
    sim::spawn(SimConfig::default()).await.expect("simulator starts")
}

/// Sets the behaviour of `model` (or the default when `None`) over the sim's control API.
pub async fn sim_behaviour(sim: &SimHandle, model: Option<&str>, behaviour: Value) {
    let mut body = behaviour;
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    let response = reqwest::Client::new()
        .put(format!("http://{}/_sim/behaviour", sim.addr))
        .json(&body)
        .send()
        .await
        .expect("sim control reachable");
    assert!(response.status().is_success(), "sim refused behaviour {body}: {}", response.status());
}

/// Calls the sim received for `model` since its start or last reset.
pub async fn sim_calls(sim: &SimHandle, model: &str) -> u64 {
    let counts: Value = reqwest::get(format!("http://{}/_sim/calls", sim.addr)).await.unwrap().json().await.unwrap();
    counts["by_model"][model].as_u64().unwrap_or(0)
}

/// Calls the sim received on `endpoint` ("openai" or "anthropic").
pub async fn sim_endpoint_calls(sim: &SimHandle, endpoint: &str) -> u64 {
    let counts: Value = reqwest::get(format!("http://{}/_sim/calls", sim.addr)).await.unwrap().json().await.unwrap();
    counts["by_endpoint"][endpoint].as_u64().unwrap_or(0)
}

/// The shipped single-node example with every provider pointed at `sim`, ports chosen by the
/// OS, text logs, and `extra` appended (for overrides of whole tables).
pub fn config_for(sim: SocketAddr, tweak: impl Fn(String) -> String) -> String {
    let example = include_str!("../../../deploy/examples/single-node.toml");
    let config = example
        .replace("127.0.0.1:9100", &sim.to_string())
        .replace("grpc_listen = \"127.0.0.1:50051\"", "grpc_listen = \"127.0.0.1:0\"")
        .replace("http_listen = \"127.0.0.1:8080\"", "http_listen = \"127.0.0.1:0\"")
        .replace("drain_timeout = \"30s\"", "drain_timeout = \"10s\"")
        // Tests repeat prompts on purpose; the cache tests turn it back on.
        .replace("exact = true ", "exact = false ")
        // Nodes share the machine with other tests' nodes and builds: a lookup that ran out of
        // its budget would make a test that expects a hit flaky. The budget's own tests set it.
        .replace("lookup_budget = \"auto\"", "lookup_budget = \"10s\"")
        .replace("[semantic_cache]\nenabled = true ", "[semantic_cache]\nenabled = false ");
    tweak(config)
}

/// The local embedding model: `EMBEDDING_MODEL_DIR`, or where `scripts/fetch-model` puts it.
pub fn model_dir() -> PathBuf {
    std::env::var_os("EMBEDDING_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.models/all-MiniLM-L6-v2"))
}

/// A fresh directory for a node.
pub fn new_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-test-{}-{}", std::process::id(), NEXT_DIR.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `switchyard` process.
pub struct Node {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`
    pub http: String,
    /// `http://127.0.0.1:PORT` for the gRPC client.
    pub grpc: String,
}

impl Node {
    /// Starts a node with `config` in a fresh directory and waits until it listens.
    pub fn start(config: &str) -> Self {
        Self::start_in(&new_dir(), config)
    }

    /// Starts a node with `config` in `dir` (its config, log and cost ledger live there), so a
    /// node started again in the same directory replays the same ledger.
    pub fn start_in(dir: &std::path::Path, config: &str) -> Self {
        let dir = dir.to_owned();
        let config_path = dir.join("node.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.join("node.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let earlier_logs = std::fs::metadata(&log_path).map(|meta| meta.len() as usize).unwrap_or(0);
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env("SWITCHYARD_TENANCY__LEDGER_PATH", dir.join("ledger.jsonl"))
            .env("SWITCHYARD_SEMANTIC_CACHE__DATA_DIR", dir.join("semantic"))
            .env("SWITCHYARD_BATCH__DATA_DIR", dir.join("batches"))
            .env("SWITCHYARD_EMBEDDING__MODEL_DIR", model_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("switchyard starts");
        let mut node = Self { child, dir, http: String::new(), grpc: String::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs = node.logs();
            if let Some(line) = logs.get(earlier_logs..).unwrap_or_default().lines().find(|line| line.contains("switchyard listening")) {
                let entry: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("log line is JSON: {line}"));
                node.http = format!("http://{}", entry["fields"]["http"].as_str().unwrap());
                node.grpc = format!("http://{}", entry["fields"]["grpc"].as_str().unwrap());
                return node;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("switchyard exited with {status} before listening:\n{logs}");
            }
            assert!(Instant::now() < deadline, "switchyard did not listen within 30 s:\n{logs}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Kills the node with SIGKILL, leaving its directory.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.clone();
        self.dir = PathBuf::new();
        dir
    }

    /// Everything the node has logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// A gRPC client.
    pub async fn grpc_client(&self) -> GatewayClient<tonic::transport::Channel> {
        GatewayClient::connect(self.grpc.clone()).await.expect("gRPC connects")
    }

    /// Rewrites the node's config file and sends SIGHUP (a reload).
    #[allow(dead_code, reason = "not every test binary reloads")]
    pub fn reload_with(&self, config: &str) {
        std::fs::write(self.dir.join("node.toml"), config).unwrap();
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "switchyard did not exit within 30 s of SIGTERM:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() && !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A gRPC request with one user message.
pub fn grpc_request(prompt: &str) -> v1::GenerateRequest {
    v1::GenerateRequest {
        messages: vec![v1::ChatMessage { role: "user".into(), content: prompt.into(), ..v1::ChatMessage::default() }],
        ..Default::default()
    }
}

/// The value of the first metric line of `node` that starts with `line_start` (0 when none).
pub async fn metric(node: &Node, line_start: &str) -> f64 {
    let metrics = reqwest::get(format!("{}/metrics", node.http)).await.unwrap().text().await.unwrap();
    metrics.lines().find(|line| line.starts_with(line_start)).and_then(|line| line.rsplit(' ').next()).and_then(|value| value.parse().ok()).unwrap_or(0.0)
}

/// An OpenAI chat body with one user message.
pub fn chat_body(model: &str, prompt: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
}

/// A real `redis-server` on a free loopback port, persisting to its own directory (so a restart
/// on the same port keeps the data). Killed on drop.
pub struct Redis {
    child: Option<Child>,
    dir: PathBuf,
    /// The port it listens on.
    pub port: u16,
}

impl Redis {
    /// Starts one. Fails with a hint when `redis-server` is not installed.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Self { child: None, dir: new_dir(), port };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory, and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it with apt-get)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two keys of two tenants: `sk-alice` (tenant `acme`) and `sk-carol` (tenant `globex`).
pub const TWO_TENANTS: &str = r#"
[tenancy]
[[tenancy.keys]]
id = "alice"
key_sha256 = "099295a3784e1bd368dc348843a7398c1931b6b8ec2504c73e91ed2040bdc46c"
tenant = "acme"
user = "alice"

[[tenancy.keys]]
id = "carol"
key_sha256 = "1d0e7afc963efdf084924177294d02cc02800e540bf46e7b846529396be4eddf"
tenant = "globex"
user = "carol"
"#;

/// The text of an OpenAI SSE body: every chunk's delta content, in order.
pub fn sse_content(body: &str) -> String {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// One span an OTLP collector received.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// Trace id, hex.
    pub trace_id: String,
    /// `service.name` of the process that sent it.
    pub service: String,
    /// Span name.
    pub name: String,
}

/// A real OTLP/gRPC trace collector on a free loopback port, keeping every span it receives.
#[derive(Clone, Default)]
pub struct TraceCollector {
    /// Every span received.
    pub spans: std::sync::Arc<std::sync::Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for TraceCollector {
    async fn export(
        &self,
        request: tonic::Request<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| match attribute.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let trace_id: String = span.trace_id.iter().map(|byte| format!("{byte:02x}")).collect();
                    spans.push(ReceivedSpan { trace_id, service: service.clone(), name: span.name });
                }
            }
        }
        Ok(tonic::Response::new(opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse { partial_success: None }))
    }
}

impl TraceCollector {
    /// Starts one; returns it and its address.
    pub async fn start() -> (Self, SocketAddr) {
        let collector = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        (collector, address)
    }
}

/// Alert bodies a webhook received, in arrival order.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// Starts a webhook receiver collecting every JSON body POSTed to `/alerts`; returns its URL
/// and what it received.
pub async fn alert_sink() -> (String, Received) {
    let received: Received = Received::default();
    let sink = std::sync::Arc::clone(&received);
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let sink = std::sync::Arc::clone(&sink);
            async move {
                sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}
