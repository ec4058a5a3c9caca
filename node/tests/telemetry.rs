//! Trace export: a node with `telemetry.otlp_endpoint` set sends its spans over OTLP/gRPC to a
//! collector (here a real gRPC server in the test), one span per pipeline step and provider call,
//! all in the caller's trace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{Node, chat_body, config_for, start_sim};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

#[derive(Clone, Default)]
struct Collector {
    /// (trace id hex, span name) of every span received.
    spans: Arc<Mutex<Vec<(String, String)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let trace_id: String = span.trace_id.iter().map(|byte| format!("{byte:02x}")).collect();
                    spans.push((trace_id, span.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::test]
async fn every_pipeline_step_is_a_span_of_the_callers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });

    let sim = start_sim().await;
    let mut node = Node::start(&config_for(sim.addr, |c| {
        c.replace("otlp_endpoint = \"\"", &format!("otlp_endpoint = \"http://{address}\""))
    }));
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", node.http))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&chat_body("gpt-4o-mini", "trace me"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Shutdown flushes the batch exporter.
    let status = tokio::task::spawn_blocking(move || node.terminate()).await.unwrap();
    assert!(status.success());

    let spans = collector.spans.lock().unwrap().clone();
    let names: Vec<&str> = spans.iter().filter(|(id, _)| id == trace_id).map(|(_, name)| name.as_str()).collect();
    for step in ["request", "generate", "prepare", "route", "admission", "provider_call", "settle"] {
        assert!(names.contains(&step), "no \"{step}\" span in the caller's trace; got {names:?} (all: {spans:?})");
    }
}
