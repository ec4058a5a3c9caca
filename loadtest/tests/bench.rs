//! The load generator against real servers: the simulator over HTTP and a minimal
//! `switchyard.v1.Gateway` over gRPC.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use switchyard_loadtest::bench::{self, BenchConfig, RampConfig, StopCondition, Target};
use switchyard_loadtest::sim::{self, Behaviour, Fault, SimConfig, SimHandle};
use switchyard_proto::v1::gateway_server::{Gateway, GatewayServer};
use switchyard_proto::v1::{GenerateChunk, GenerateRequest, GenerateResponse};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// A benchmark of `sim` over HTTP with `concurrency` workers for `seconds`, without warm-up.
fn http_bench(sim: &SimHandle, concurrency: usize, seconds: f64) -> BenchConfig {
    let mut config = BenchConfig::new(Target::Http { url: sim.url() });
    config.concurrency = concurrency;
    config.stop = StopCondition::Duration(Duration::from_secs_f64(seconds));
    config.warmup = Duration::from_millis(100);
    config.request_timeout = Duration::from_secs(5);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_the_simulator_over_http() -> anyhow::Result<()> {
    let sim = sim::spawn(SimConfig::default()).await?;
    let report = bench::run_bench(&http_bench(&sim, 4, 1.0)).await?;
    assert!(report.requests > 0, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert!(report.seconds >= 0.9, "{report}");
    assert!(report.rps > 0.0);
    assert!(report.p50_us > 0 && report.p50_us <= report.p90_us);
    assert!(report.p90_us <= report.p99_us && report.p99_us <= report.max_us);
    let calls = sim.calls();
    assert!(
        calls.total >= report.requests,
        "warm-up calls are sent but not recorded"
    );
    assert_eq!(
        calls.by_model.keys().collect::<Vec<_>>(),
        [bench::DEFAULT_MODEL]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_can_stop_after_a_number_of_requests() -> anyhow::Result<()> {
    let sim = sim::spawn(SimConfig::default()).await?;
    let mut config = http_bench(&sim, 3, 0.0);
    config.stop = StopCondition::Requests(50);
    config.warmup = Duration::ZERO;
    let report = bench::run_bench(&config).await?;
    assert_eq!((report.requests, report.errors), (50, 0));
    assert_eq!(sim.calls().total, 50);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_counts_failures_apart_from_latencies() -> anyhow::Result<()> {
    let sim = sim::spawn(SimConfig {
        default_behaviour: Behaviour {
            fault: Some(Fault::Status { status: 503 }),
            ..Behaviour::default()
        },
    })
    .await?;
    let report = bench::run_bench(&http_bench(&sim, 2, 0.3)).await?;
    assert_eq!(report.requests, 0);
    assert!(report.errors > 0);
    assert_eq!(report.max_us, 0);
    let first_error = report.first_error_opt.unwrap_or_default();
    assert!(first_error.contains("503"), "{first_error}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_runs_every_level() -> anyhow::Result<()> {
    let sim = sim::spawn(SimConfig::default()).await?;
    let config = RampConfig {
        bench: http_bench(&sim, 1, 0.3),
        levels: vec![1, 2, 4],
        p99_budget_us: 1_000_000,
    };
    let mut seen = Vec::new();
    let report = bench::run_ramp(&config, |level| seen.push(level.concurrency)).await?;
    assert_eq!(seen, [1, 2, 4]);
    assert_eq!(report.levels.len(), 3);
    assert!(
        report
            .levels
            .iter()
            .all(|level| level.requests > 0 && level.errors == 0)
    );
    let best = report
        .levels
        .iter()
        .map(|level| level.rps)
        .fold(0.0, f64::max);
    assert_eq!(report.max_rps_with_p99_under_us, Some(best));
    let json = serde_json::to_value(&report)?;
    assert!(json["levels"][2]["p99_us"].is_u64());
    Ok(())
}

/// A gateway that answers every `Generate` at once.
struct EchoGateway;

#[tonic::async_trait]
impl Gateway for EchoGateway {
    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<GenerateResponse>, Status> {
        let request = request.into_inner();
        if request.model.is_empty() || request.messages.is_empty() {
            return Err(Status::invalid_argument("model and messages are required"));
        }
        Ok(Response::new(GenerateResponse {
            text: "ok".to_owned(),
            model: request.model,
            finish_reason: "stop".to_owned(),
            ..GenerateResponse::default()
        }))
    }

    type GenerateStreamStream =
        Pin<Box<dyn Stream<Item = Result<GenerateChunk, Status>> + Send + 'static>>;

    async fn generate_stream(
        &self,
        _request: Request<GenerateRequest>,
    ) -> Result<Response<Self::GenerateStreamStream>, Status> {
        Err(Status::unimplemented("not used by the load generator"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_a_gateway_over_grpc() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GatewayServer::new(EchoGateway))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut config = BenchConfig::new(format!("grpc://{addr}").parse()?);
    config.concurrency = 4;
    config.stop = StopCondition::Duration(Duration::from_millis(500));
    config.warmup = Duration::from_millis(100);
    let report = bench::run_bench(&config).await;
    server.abort();
    let report = report?;
    assert!(report.requests > 0, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    Ok(())
}
