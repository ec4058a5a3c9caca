//! The exact cache end to end: hits, misses, controls, TTL, tenant isolation, streaming replay,
//! and the cost a hit saves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Node, chat_body, config_for, grpc_request, sim_behaviour, sim_calls, start_sim};
use futures::StreamExt as _;
use serde_json::{Value, json};
use switchyard_proto::v1;

fn cached_config(sim: std::net::SocketAddr) -> String {
    config_for(sim, |c| c.replace("exact = false ", "exact = true "))
}

async fn ask(node: &Node, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(format!("{}/v1/chat/completions", node.http)).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn text(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_identical_request_is_answered_from_the_exact_cache() {
    let sim = start_sim().await;
    let node = Node::start(&cached_config(sim.addr));
    let body = chat_body("gpt-4o-mini", "What is the capital of France?");
    let first = ask(&node, &body, &[]).await;
    assert_eq!(first.headers()["x-switchyard-cache"], "none");
    let first_text = text(first).await;
    let second = ask(&node, &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "  What is the capital of\n France? "}]}), &[]).await;
    assert_eq!(second.headers()["x-switchyard-cache"], "exact");
    assert_eq!(second.headers()["x-switchyard-cost-usd"], "0.000000000");
    assert_eq!(text(second).await, first_text);
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 1, "the hit did not reach the upstream");

    // gRPC shares the cache (same tenant, model, messages and sampling).
    let mut client = node.grpc_client().await;
    let request = v1::GenerateRequest { model: "gpt-4o-mini".into(), ..grpc_request("What is the capital of France?") };
    let answer = client.generate(request).await.unwrap().into_inner();
    assert_eq!(answer.cache_layer(), v1::CacheLayer::Exact);
    assert_eq!(answer.text, first_text);

    // A different sampling parameter is a different answer.
    let mut other = body.clone();
    other["max_tokens"] = json!(5);
    assert_eq!(ask(&node, &other, &[]).await.headers()["x-switchyard-cache"], "none");
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 2);
    let metrics = reqwest::get(format!("{}/metrics", node.http)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_cache_lookups_total{layer=\"exact\",result=\"hit\"} 2"), "{metrics}");
}

#[tokio::test]
async fn bypass_no_store_and_ttl_are_honoured() {
    let sim = start_sim().await;
    let node = Node::start(&cached_config(sim.addr));
    let body = chat_body("gpt-4o-mini", "controls");
    ask(&node, &body, &[("x-switchyard-cache", "no-store")]).await;
    assert_eq!(ask(&node, &body, &[("x-switchyard-cache-ttl", "1")]).await.headers()["x-switchyard-cache"], "none", "no-store stored nothing");
    assert_eq!(ask(&node, &body, &[]).await.headers()["x-switchyard-cache"], "exact");
    assert_eq!(ask(&node, &body, &[("x-switchyard-cache", "bypass")]).await.headers()["x-switchyard-cache"], "none");
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 3);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(ask(&node, &body, &[]).await.headers()["x-switchyard-cache"], "none", "the 1 s entry expired");
}

#[tokio::test]
async fn tenants_never_share_entries() {
    let sim = start_sim().await;
    let node = Node::start(&(cached_config(sim.addr) + common::TWO_TENANTS));
    let body = chat_body("gpt-4o-mini", "our quarterly numbers");
    let as_user = |key: &'static str| {
        let (node, body) = (&node, &body);
        async move { reqwest::Client::new().post(format!("{}/v1/chat/completions", node.http)).bearer_auth(key).json(body).send().await.unwrap() }
    };
    assert_eq!(as_user("sk-alice").await.headers()["x-switchyard-cache"], "none");
    assert_eq!(as_user("sk-alice").await.headers()["x-switchyard-cache"], "exact");
    assert_eq!(as_user("sk-carol").await.headers()["x-switchyard-cache"], "none", "another tenant's entry is never served");
}

#[tokio::test]
async fn complete_streams_are_stored_and_replayed_as_streams() {
    let sim = start_sim().await;
    let node = Node::start(&cached_config(sim.addr));
    let mut body = chat_body("claude-haiku", "stream and cache me");
    body["stream"] = json!(true);
    let live = ask(&node, &body, &[]).await;
    let live_body = live.text().await.unwrap();
    let replay = ask(&node, &body, &[]).await;
    assert_eq!(replay.headers()["x-switchyard-cache"], "exact");
    assert_eq!(replay.headers()["content-type"], "text/event-stream");
    let replay_body = replay.text().await.unwrap();
    assert!(replay_body.ends_with("data: [DONE]\n\n"), "{replay_body}");
    assert_eq!(common::sse_content(&replay_body), common::sse_content(&live_body));
    assert!(!common::sse_content(&live_body).is_empty());
    assert_eq!(sim_calls(&sim, "claude-haiku").await, 1);

    // A stream cut midway is never stored.
    sim_behaviour(&sim, Some("gpt-4o"), json!({"fault": {"type": "cut_stream", "after_tokens": 3}, "fault_count": 1})).await;
    let mut cut = chat_body("gpt-4o", "cut me off");
    cut["stream"] = json!(true);
    let response = ask(&node, &cut, &[]).await;
    let mut bytes = response.bytes_stream();
    while bytes.next().await.is_some() {}
    let again = ask(&node, &cut, &[]).await;
    assert_eq!(again.headers()["x-switchyard-cache"], "none");
    assert!(again.text().await.unwrap().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn a_hit_costs_nothing_and_records_what_it_saved() {
    let sim = start_sim().await;
    let node = Node::start(&cached_config(sim.addr));
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "one two three"}]});
    let first = ask(&node, &body, &[]).await;
    assert_eq!(first.headers()["x-switchyard-cost-usd"], "0.000006450");
    ask(&node, &body, &[]).await;
    ask(&node, &body, &[]).await;
    let savings: Value = reqwest::get(format!("{}/admin/v1/cost/savings", node.http)).await.unwrap().json().await.unwrap();
    assert_eq!(savings["total"]["nano_usd"], 6450);
    assert_eq!(savings["saved"]["nano_usd"], 2 * 6450);
    assert_eq!(savings["requests"], 3);
}

async fn invalidate(node: &Node, body: Value) -> reqwest::StatusCode {
    reqwest::Client::new().post(format!("{}/admin/v1/cache/invalidate", node.http)).json(&body).send().await.unwrap().status()
}

#[tokio::test]
async fn invalidation_by_key_tenant_model_and_everything() {
    let sim = start_sim().await;
    let node = Node::start(&cached_config(sim.addr));
    let first = chat_body("gpt-4o-mini", "first");
    let second = chat_body("claude-haiku", "second");
    let key = ask(&node, &first, &[]).await.headers()["x-switchyard-cache-key"].to_str().unwrap().to_owned();
    ask(&node, &second, &[]).await;
    let layer = |body: Value| {
        let node = &node;
        async move { ask(node, &body, &[]).await.headers()["x-switchyard-cache"].to_str().unwrap().to_owned() }
    };
    assert_eq!(layer(first.clone()).await, "exact");
    assert_eq!(invalidate(&node, json!({"key": key})).await, 200);
    assert_eq!(layer(first.clone()).await, "none", "the key's entry is gone");
    assert_eq!(layer(second.clone()).await, "exact", "others stay");
    assert_eq!(invalidate(&node, json!({"model": "claude-haiku"})).await, 200);
    assert_eq!(layer(second.clone()).await, "none");
    assert_eq!(layer(first.clone()).await, "exact");
    assert_eq!(invalidate(&node, json!({"tenant": "anonymous"})).await, 200);
    assert_eq!(layer(first.clone()).await, "none", "the tenant's entries are gone");
    assert_eq!(layer(second.clone()).await, "none", "both were the tenant's");
    assert_eq!(layer(second.clone()).await, "exact");
    let mut client = switchyard_proto::v1::admin_client::AdminClient::connect(node.grpc.clone()).await.unwrap();
    let everything = v1::InvalidateCacheRequest { target: Some(v1::invalidate_cache_request::Target::All(true)) };
    client.invalidate_cache(everything).await.unwrap();
    assert_eq!(layer(second).await, "none");
    assert_eq!(invalidate(&node, json!({"key": "k", "all": true})).await, 400, "exactly one target");
    assert_eq!(invalidate(&node, json!({"everything": true})).await, 400, "unknown field");
}

#[tokio::test]
async fn with_redis_the_cache_is_shared_and_survives_redis_going_away() {
    let mut redis = common::Redis::start();
    let sim = start_sim().await;
    let config = config_for(sim.addr, |c| c.replace("exact = false ", "exact = true ").replace("url = \"\"", &format!("url = \"{}\"", redis.url())));
    let node = Node::start(&config);
    let other_node = Node::start(&config);
    let body = chat_body("gpt-4o-mini", "shared between nodes");
    assert_eq!(ask(&node, &body, &[]).await.headers()["x-switchyard-cache"], "none");
    assert_eq!(ask(&other_node, &body, &[]).await.headers()["x-switchyard-cache"], "exact", "another node hits the shared entry");
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 1);

    redis.stop();
    for _ in 0..3 {
        let response = ask(&node, &body, &[]).await;
        assert_eq!(response.status(), 200, "requests never fail because of the cache");
        assert_eq!(response.headers()["x-switchyard-cache"], "none");
    }
    redis.restart();
    // Caching resumes by itself (the data survived the restart on disk).
    let mut resumed = false;
    for _ in 0..100 {
        if ask(&node, &body, &[]).await.headers()["x-switchyard-cache"] == "exact" {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "caching did not resume after Redis came back:\n{}", node.logs());
    let metrics = reqwest::get(format!("{}/metrics", node.http)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_cache_lookups_total{layer=\"exact\",result=\"error\"}"), "{metrics}");
    assert!(node.logs().contains("requests go on uncached"), "{}", node.logs());
}
