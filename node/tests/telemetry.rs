//! Trace export: a node with `telemetry.otlp_endpoint` set sends its spans over OTLP/gRPC to a
//! collector (here a real gRPC server in the test), one span per pipeline step and provider call,
//! all in the caller's trace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, TraceCollector, chat_body, config_for, start_sim};

#[tokio::test]
async fn every_pipeline_step_is_a_span_of_the_callers_trace() {
    let (collector, address) = TraceCollector::start().await;

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
    let names: Vec<&str> = spans.iter().filter(|span| span.trace_id == trace_id).map(|span| span.name.as_str()).collect();
    for step in ["request", "generate", "prepare", "route", "admission", "provider_call", "settle"] {
        assert!(names.contains(&step), "no \"{step}\" span in the caller's trace; got {names:?} (all: {spans:?})");
    }
}
