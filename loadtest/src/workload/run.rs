//! Replays a workload against a node (or straight at an upstream), closed-loop at a concurrency
//! or open-loop at a rate, for a duration or a number of requests, cycling through the lines.
//!
//! Open-loop latency is measured from when a request was due, not from when it was sent, so a
//! target that falls behind shows it (no coordinated omission). Every answer is read for the
//! layer that served it, the fingerprint of the conversation it answers, and the cost the
//! client was told; the report scores them (see `report`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde_json::json;
use switchyard_proto::v1::gateway_client::GatewayClient;
use switchyard_proto::v1::{ChatMessage, GenerateRequest, SamplingParams};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bench::Target;
use crate::workload::file::WorkloadLine;
use crate::workload::report::{Layer, Outcome, WorkloadReport};

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// This many workers, each sending its next request when its last one is answered.
    Closed(usize),
    /// This many requests a second, whatever the answers do.
    Open(f64),
}

/// When a run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    Duration(Duration),
    /// After this many requests.
    Requests(u64),
}

/// One run's settings.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// What to call.
    pub target: Target,
    /// The pacing.
    pub pace: Pace,
    /// The end.
    pub stop: Stop,
    /// The model or route of every request.
    pub model: String,
    /// The answers' token limit.
    pub max_tokens: u32,
    /// API keys by tenant; a tenant without one is sent with `default_key` (or none).
    pub keys: HashMap<String, String>,
    /// The key of tenants without their own.
    pub default_key: Option<String>,
    /// Time limit of one request.
    pub request_timeout: Duration,
    /// Most requests in flight in open loop (past it a due request counts as an error).
    pub max_in_flight: usize,
}

/// A caller shared by every request of a run.
#[derive(Clone)]
enum Caller {
    Http { client: reqwest::Client, url: reqwest::Url },
    Grpc { channel: tonic::transport::Channel },
}

impl Caller {
    fn new(target: &Target, timeout: Duration, connections: usize) -> anyhow::Result<Self> {
        match target {
            Target::Http { url } => {
                let client = reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(connections.max(1)).tcp_nodelay(true).build()?;
                let url = reqwest::Url::parse(&format!("{}/v1/chat/completions", url.trim_end_matches('/'))).with_context(|| format!("invalid target url {url:?}"))?;
                Ok(Self::Http { client, url })
            }
            Target::Grpc { url } => {
                let channel = tonic::transport::Endpoint::from_shared(url.replacen("grpc://", "http://", 1))
                    .with_context(|| format!("invalid target url {url:?}"))?
                    .tcp_nodelay(true)
                    .timeout(timeout)
                    .connect_lazy();
                Ok(Self::Grpc { channel })
            }
        }
    }

    /// Sends one line; returns the layer, the answer text and the cost told, or the error kind.
    async fn call(&self, line: &WorkloadLine, settings: &RunSettings) -> Result<(Layer, String, Option<f64>), String> {
        let key = settings.keys.get(&line.tenant).or(settings.default_key.as_ref());
        match self {
            Self::Http { client, url } => {
                let body = json!({"model": settings.model, "max_tokens": settings.max_tokens, "messages": [{"role": "user", "content": line.prompt}]});
                let mut request = client.post(url.clone()).json(&body);
                if let Some(key) = key {
                    request = request.bearer_auth(key);
                }
                let response = request.send().await.map_err(|error| if error.is_timeout() { "timeout".to_owned() } else { "transport".to_owned() })?;
                let status = response.status();
                if !status.is_success() {
                    return Err(format!("http {}", status.as_u16()));
                }
                let header = |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
                let layer = Layer::from_header(header("x-switchyard-cache").as_deref().unwrap_or("none"));
                let cost = header("x-switchyard-cost-usd").and_then(|value| value.parse().ok());
                let answer: serde_json::Value = response.json().await.map_err(|_| "bad body".to_owned())?;
                let text = answer["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned();
                Ok((layer, text, cost))
            }
            Self::Grpc { channel } => {
                let mut request = tonic::Request::new(GenerateRequest {
                    messages: vec![ChatMessage { role: "user".to_owned(), content: line.prompt.clone(), ..ChatMessage::default() }],
                    model: settings.model.clone(),
                    sampling: Some(SamplingParams { max_tokens: Some(settings.max_tokens), ..SamplingParams::default() }),
                    ..GenerateRequest::default()
                });
                if let Some(key) = key {
                    let value = format!("Bearer {key}").parse().map_err(|_| "bad key".to_owned())?;
                    request.metadata_mut().insert("authorization", value);
                }
                let answer = GatewayClient::new(channel.clone()).generate(request).await.map_err(|status| format!("grpc {:?}", status.code()))?.into_inner();
                let layer = match answer.cache_layer {
                    1 => Layer::Exact,
                    2 => Layer::Semantic,
                    _ => Layer::None,
                };
                Ok((layer, answer.text, answer.cost_usd))
            }
        }
    }
}

/// Replays `lines` by `settings`, calling `progress` with the requests answered so far, and
/// returns the report.
pub async fn run_workload(lines: Arc<Vec<WorkloadLine>>, settings: RunSettings, progress: impl Fn(u64) + Send + 'static) -> anyhow::Result<WorkloadReport> {
    ensure!(!lines.is_empty(), "the workload has no requests");
    let connections = match settings.pace {
        Pace::Closed(workers) => {
            ensure!(workers > 0, "--concurrency must be at least 1");
            workers
        }
        Pace::Open(rate) => {
            ensure!(rate > 0.0 && rate.is_finite(), "--rate must be a positive number of requests a second");
            settings.max_in_flight
        }
    };
    let caller = Caller::new(&settings.target, settings.request_timeout, connections)?;
    let settings = Arc::new(settings);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let (sender, mut receiver) = mpsc::unbounded_channel::<Outcome>();
    let admit = {
        let settings = Arc::clone(&settings);
        move |index: u64, now: Instant| match settings.stop {
            Stop::Duration(duration) => now.duration_since(started) < duration,
            Stop::Requests(count) => index < count,
        }
    };
    let send_one = {
        let (lines, settings, caller) = (Arc::clone(&lines), Arc::clone(&settings), caller.clone());
        move |index: u64, due: Instant| {
            let (lines, settings, caller) = (Arc::clone(&lines), Arc::clone(&settings), caller.clone());
            async move {
                let line_index = usize::try_from(index % lines.len() as u64).unwrap_or(0);
                let line = &lines[line_index];
                let result = caller.call(line, &settings).await;
                let elapsed = due.elapsed();
                Outcome { line: line_index, at: due.duration_since(started), latency: elapsed, result }
            }
        }
    };
    let line_count = lines.len() as u64;
    let pace_settings = Arc::clone(&settings);
    let driver = tokio::spawn(async move {
        let settings = pace_settings;
        match settings.pace {
            Pace::Closed(workers) => {
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..workers {
                    let (next, sender, send_one, admit) = (Arc::clone(&next), sender.clone(), send_one.clone(), admit.clone());
                    tasks.spawn(async move {
                        loop {
                            let index = next.fetch_add(1, Ordering::Relaxed);
                            let now = Instant::now();
                            if !admit(index, now) {
                                break;
                            }
                            if sender.send(send_one(index, now).await).is_err() {
                                break;
                            }
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
            }
            Pace::Open(rate) => {
                let period = Duration::from_secs_f64(1.0 / rate);
                let in_flight = Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight));
                let mut tasks = tokio::task::JoinSet::new();
                let mut index = 0u64;
                loop {
                    let due = started + period.mul_f64(index as f64);
                    tokio::time::sleep_until(due).await;
                    if !admit(index, due) {
                        break;
                    }
                    match Arc::clone(&in_flight).try_acquire_owned() {
                        Ok(permit) => {
                            let (sender, call) = (sender.clone(), send_one(index, due));
                            tasks.spawn(async move {
                                let _closed = sender.send(call.await);
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            let line = usize::try_from(index % line_count).unwrap_or(0);
                            let _closed = sender.send(Outcome { line, at: due.duration_since(started), latency: Duration::ZERO, result: Err("over max in flight".to_owned()) });
                        }
                    }
                    index += 1;
                    while tasks.try_join_next().is_some() {}
                }
                while tasks.join_next().await.is_some() {}
            }
        }
    });
    let mut outcomes = Vec::new();
    while let Some(outcome) = receiver.recv().await {
        outcomes.push(outcome);
        progress(outcomes.len() as u64);
    }
    driver.await.context("the load driver panicked")?;
    Ok(WorkloadReport::score(&lines, &outcomes, started.elapsed()))
}
