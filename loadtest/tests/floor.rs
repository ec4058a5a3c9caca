//! The floor servers over real sockets: the HTTP forwarder in front of the simulator, the gRPC
//! server with its fixed answer, and the load generator driving both.

use std::time::Duration;

use switchyard_loadtest::bench::{self, BenchConfig, StopCondition, Target};
use switchyard_loadtest::floor;
use switchyard_loadtest::sim::{self, SimConfig};
use switchyard_proto::v1::gateway_client::GatewayClient;
use switchyard_proto::v1::{ChatMessage, GenerateRequest};
use tokio::net::TcpListener;

async fn free_listener() -> anyhow::Result<TcpListener> {
    Ok(TcpListener::bind("127.0.0.1:0").await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_floor_forwards_to_the_upstream_and_returns_its_answer() -> anyhow::Result<()> {
    let sim = sim::spawn(SimConfig::default()).await?;
    let listener = free_listener().await?;
    let address = listener.local_addr()?;
    let upstream = format!("{}/v1", sim.url());
    tokio::spawn(async move { floor::serve_http(listener, &upstream).await });

    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "how far is the moon"}]});
    let response = reqwest::Client::new().post(format!("http://{address}/v1/chat/completions")).json(&body).send().await?;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await?;
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert!(text.starts_with("[sim "), "the simulator's answer comes back unchanged: {answer}");
    assert_eq!(sim.calls().total, 1);

    let mut config = BenchConfig::new(Target::Http { url: format!("http://{address}") });
    config.concurrency = 2;
    config.stop = StopCondition::Requests(40);
    config.warmup = Duration::ZERO;
    let report = bench::run_bench(&config).await?;
    assert_eq!((report.requests, report.errors), (40, 0), "{report}");
    assert_eq!(sim.calls().total, 41, "every benchmark request went upstream");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_floor_reports_an_unreachable_upstream_as_a_bad_gateway() -> anyhow::Result<()> {
    let closed = free_listener().await?.local_addr()?; // bound, then dropped: nothing listens
    let listener = free_listener().await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { floor::serve_http(listener, &format!("http://{closed}/v1")).await });
    let response = reqwest::Client::new().post(format!("http://{address}/v1/chat/completions")).body("{}").send().await?;
    assert_eq!(response.status(), 502);
    assert!(response.text().await?.starts_with("upstream: "));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_floor_answers_generate_with_its_fixed_response() -> anyhow::Result<()> {
    let listener = free_listener().await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { floor::serve_grpc(listener, None).await });
    let mut client = GatewayClient::connect(format!("http://{address}")).await?;
    let request = GenerateRequest {
        messages: vec![ChatMessage { role: "user".into(), content: "hello".into(), ..ChatMessage::default() }],
        ..GenerateRequest::default()
    };
    let answer = client.generate(request.clone()).await?.into_inner();
    assert!(!answer.text.is_empty());
    assert_eq!((answer.model.as_str(), answer.finish_reason.as_str()), ("gpt-4o-mini", "stop"));
    let streamed = client.generate_stream(request).await.expect_err("unary only");
    assert_eq!(streamed.code(), tonic::Code::Unimplemented);
    Ok(())
}

#[tokio::test]
async fn the_grpc_floor_names_a_bad_redis_url() -> anyhow::Result<()> {
    let error = floor::serve_grpc(free_listener().await?, Some("not a url")).await.expect_err("a bad URL is refused");
    assert!(error.to_string().contains("--redis \"not a url\""), "{error:#}");
    Ok(())
}
