//! Running a node: start the pipeline and the batch service, bind both front doors, serve until
//! SIGTERM or SIGINT, then stop accepting, let batch lines in flight finish and be recorded,
//! drain in-flight requests (bounded by `server.drain_timeout`), stop the actors and flush
//! telemetry. An actor failing does the same, and the node then exits non-zero.
//!
//! SIGHUP reloads the config files: a file that does not validate changes nothing (the error is
//! logged); one that does applies what can change in flight — the experiments' weights (see
//! [`switchyard_actors::experiment::Experiments::reload`]) — and logs that everything else waits
//! for a restart.

use std::sync::Arc;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use switchyard_actors::metrics::Metrics;
use switchyard_actors::pipeline::Gateway;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::grpc::{AdminService, BatchService, GatewayService};
use crate::telemetry::Telemetry;

/// Reads the node's config again, from where it was first read.
pub type Reload = Box<dyn Fn() -> Result<NodeConfig, crate::config::ConfigError> + Send + Sync>;

/// Serves until a shutdown signal, then drains. Returns once the node has stopped cleanly.
pub async fn run(config: NodeConfig, telemetry: Telemetry, reload: Reload) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new().context("failed to register metrics")?);
    let gateway = Arc::new(Gateway::start(config.gateway.clone(), metrics).await?);
    if gateway.is_open() {
        warn!("no API keys configured: the node is OPEN, serving every request as the anonymous tenant; define [[tenancy.keys]] to require keys");
    }
    let batches = crate::batch::Batches::start(Arc::clone(&gateway), config.batch.clone()).await.context("failed to start the batch service")?;
    for provider in &config.gateway.providers {
        info!(provider = %provider.name, kind = provider.kind.as_str(), base_url = %provider.base_url, "provider configured");
    }

    let http_listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("failed to bind server.http_listen {}", config.http_listen))?;
    let grpc_listener = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("failed to bind server.grpc_listen {}", config.grpc_listen))?;
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;

    let shutdown = CancellationToken::new();
    let http = {
        let shutdown = shutdown.clone();
        let app = crate::http::router(Arc::clone(&gateway), Arc::clone(&batches));
        // Small request/response exchanges: never let Nagle hold a reply back for a delayed ACK.
        let http_listener = http_listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                warn!(%error, "failed to set TCP_NODELAY");
            }
        });
        tokio::spawn(async move {
            axum::serve(http_listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
        })
    };
    let grpc = {
        let shutdown = shutdown.clone();
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<switchyard_proto::v1::gateway_server::GatewayServer<GatewayService>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(switchyard_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("failed to build gRPC reflection")?;
        health_reporter.set_serving::<switchyard_proto::v1::admin_server::AdminServer<AdminService>>().await;
        health_reporter.set_serving::<switchyard_proto::v1::batches_server::BatchesServer<BatchService>>().await;
        let service = GatewayService::server(Arc::clone(&gateway));
        let batch_service = BatchService::server(Arc::clone(&gateway), Arc::clone(&batches));
        let admin = AdminService::server(Arc::clone(&gateway));
        // The builder's tcp_nodelay applies only to listeners tonic binds itself: set it here.
        let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(grpc_listener), |stream| {
            if let Ok(tcp) = &stream
                && let Err(error) = tcp.set_nodelay(true)
            {
                warn!(%error, "failed to set TCP_NODELAY");
            }
            stream
        });
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(reflection)
                .add_service(service)
                .add_service(admin)
                .add_service(batch_service)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        })
    };
    info!(http = %http_addr, grpc = %grpc_addr, "switchyard listening");
    let reloads = tokio::spawn(reload_on_hangup(Arc::clone(&gateway), reload));

    let failure = tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            info!(in_flight = gateway.in_flight(), "shutdown signal: draining");
            None
        }
        failure = gateway.actor_failed() => {
            tracing::error!(%failure, in_flight = gateway.in_flight(), "an actor of the node failed: draining and exiting to be restarted");
            Some(failure)
        }
    };
    shutdown.cancel();
    reloads.abort();
    // Batch lines in flight finish and are recorded while the pipeline still takes them; no new
    // line starts. Unfinished batches resume at the next start.
    batches.shutdown();
    let drained = tokio::time::timeout(config.drain_timeout, async {
        let (http, grpc) = tokio::join!(http, grpc);
        batches.drained().await;
        gateway.begin_shutdown();
        gateway.drained().await;
        (http, grpc)
    })
    .await;
    match drained {
        Ok((http, grpc)) => {
            if let Ok(Err(error)) = http {
                warn!(%error, "HTTP server ended with an error");
            }
            if let Ok(Err(error)) = grpc {
                warn!(%error, "gRPC server ended with an error");
            }
            info!("drained");
        }
        Err(_elapsed) => {
            gateway.begin_shutdown();
            warn!(in_flight = gateway.in_flight(), timeout = ?config.drain_timeout, "drain timeout passed; abandoning requests still in flight");
        }
    }
    if let Err(error) = gateway.sync_ledger().await {
        warn!(%error, "failed to sync the cost ledger at shutdown");
    }
    if let Err(error) = gateway.snapshot_caches().await {
        warn!(%error, "failed to snapshot the semantic cache at shutdown");
    }
    gateway.stop_actors().await;
    telemetry.shutdown();
    match failure {
        None => Ok(()),
        Some(failure) => Err(anyhow::anyhow!("stopped after a failure: {failure}")),
    }
}

/// Applies a reloaded config at every SIGHUP.
async fn reload_on_hangup(gateway: Arc<Gateway>, reload: Reload) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(error) => {
            warn!(%error, "failed to listen for SIGHUP: config reload is off");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        match reload() {
            Err(error) => warn!(%error, "config reload refused: nothing changed"),
            Ok(config) => {
                let outcome = gateway.experiments().reload(&config.gateway.experiments);
                info!(
                    experiments_reweighted = ?outcome.reweighted,
                    experiments_needing_restart = ?outcome.need_restart,
                    "config reloaded: experiment weights applied; other changes take effect at the next restart"
                );
            }
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("failed to listen for SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
