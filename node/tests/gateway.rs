//! End-to-end: real `switchyard` processes over real gRPC and HTTP sockets, against the upstream
//! simulator over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Node, chat_body, config_for, grpc_request, new_dir, sim_behaviour, sim_calls, sim_endpoint_calls, start_sim};
use futures::StreamExt as _;
use serde_json::{Value, json};
use switchyard_loadtest::sim::fingerprint;
use switchyard_proto::v1;

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn enterprise_tier_with_high_quality_gets_the_best_model_over_anthropic() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    let mut client = node.grpc_client().await;
    let mut request = grpc_request("Draft a merger agreement outline");
    request.routing = Some(v1::RoutingHints {
        tier: v1::Tier::Enterprise.into(),
        quality: v1::Quality::High.into(),
        ..Default::default()
    });
    let answer = client.generate(request).await.unwrap().into_inner();
    assert_eq!((answer.provider.as_str(), answer.model.as_str()), ("anthropic", "claude-opus-4"));
    assert!(answer.routing_reason.contains("enterprise-high-quality"), "{}", answer.routing_reason);
    let expected = fingerprint(&[("user", "Draft a merger agreement outline")]);
    assert!(answer.text.starts_with(&format!("[sim {expected}]")), "{}", answer.text);
    assert_eq!(sim_endpoint_calls(&sim, "anthropic").await, 1);
    let usage = answer.usage.unwrap();
    assert!(usage.input_tokens > 0 && usage.output_tokens > 0);
    let expected_cost = (f64::from(usage.input_tokens) * 15.0 + f64::from(usage.output_tokens) * 75.0) / 1e6;
    assert!((answer.cost_usd.unwrap() - expected_cost).abs() < 1e-12);
    assert!(!answer.fallback && answer.latency_us >= answer.gateway_overhead_us);

    // Without the enterprise tier the same request is not sent to the enterprise-only model.
    let answer = client.generate(grpc_request("Draft a merger agreement outline")).await.unwrap().into_inner();
    assert_ne!(answer.model, "claude-opus-4");
}

#[tokio::test]
async fn a_tight_latency_budget_goes_to_the_self_hosted_model() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    let response = http()
        .post(format!("{}/v1/chat/completions", node.http))
        .header("x-switchyard-latency-budget-ms", "200")
        .json(&chat_body("auto", "quick: what is 2+2?"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-provider"], "vllm");
    assert_eq!(response.headers()["x-switchyard-model"], "llama-3.1-8b");
    let reason = response.headers()["x-switchyard-routing-reason"].to_str().unwrap().to_owned();
    assert!(reason.contains("low-latency-self-hosted"), "{reason}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "llama-3.1-8b");

    // The self-hosted model slows down past 300 ms: the rule stops choosing it.
    sim_behaviour(&sim, Some("llama-3.1-8b"), json!({"ttft_ms": 450})).await;
    for _ in 0..8 {
        http()
            .post(format!("{}/v1/chat/completions", node.http))
            .json(&chat_body("llama-3.1-8b", "warm the latency average"))
            .send()
            .await
            .unwrap();
    }
    let response = http()
        .post(format!("{}/v1/chat/completions", node.http))
        .header("x-switchyard-latency-budget-ms", "200")
        .json(&chat_body("auto", "quick: what is 2+2?"))
        .send()
        .await
        .unwrap();
    assert_ne!(response.headers()["x-switchyard-provider"], "vllm");
}

#[tokio::test]
async fn a_failing_primary_falls_back_and_says_so() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c.replace("max_retries = 2", "max_retries = 1")));
    sim_behaviour(&sim, Some("gpt-4o-mini"), json!({"fault": {"type": "status", "status": 503}})).await;
    let mut client = node.grpc_client().await;
    let mut request = grpc_request("hello there");
    request.model = "gpt-4o-mini".into();
    let answer = client.generate(request).await.unwrap().into_inner();
    assert_eq!(answer.model, "claude-haiku");
    assert!(answer.fallback);
    assert_eq!(answer.failed_attempts.len(), 1, "{:?}", answer.failed_attempts);
    assert!(answer.failed_attempts[0].starts_with("openai/gpt-4o-mini: HTTP 503"), "{:?}", answer.failed_attempts);
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 2, "one attempt and one retry");

    // The caller's trace continues through the gateway: its trace id is on the failover's log line.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = http()
        .post(format!("{}/v1/chat/completions", node.http))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&chat_body("gpt-4o-mini", "hello there"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-switchyard-fallback"], "true");
    assert_eq!(response.headers()["x-switchyard-model"], "claude-haiku");
    let logs = node.logs();
    let line = logs
        .lines()
        .find(|line| line.contains("provider failed") && line.contains(trace_id))
        .unwrap_or_else(|| panic!("no failover log line with the caller's trace id:\n{logs}"));
    let entry: Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["spans"][0]["trace_id"], trace_id, "{line}");
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = std::env::temp_dir().join(format!("switchyard-check-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, include_str!("../../deploy/examples/single-node.toml")).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, include_str!("../../deploy/examples/single-node.toml").replace("max_concurrent = 256", "max_concurrent = 0")).unwrap();
    let run = |file: &std::path::Path| std::process::Command::new(env!("CARGO_BIN_EXE_switchyard")).arg("check-config").arg(file).output().unwrap();
    let output = run(&good);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = run(&bad);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("providers[2].max_concurrent: must be at least 1"), "{stderr}");
    // A misspelt override is an error naming it; a prefixed secret (no `__`) is not an override.
    let with_env = |name: &str| std::process::Command::new(env!("CARGO_BIN_EXE_switchyard")).arg("check-config").arg(&good).env(name, "x").output().unwrap();
    let output = with_env("SWITCHYARD_SERVER__HTTP_LISTNE");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("http_listne"), "{}", String::from_utf8_lossy(&output.stderr));
    let output = with_env("SWITCHYARD_COOKIE");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_shipped_compose_and_kubernetes_configs_are_valid_over_the_defaults() {
    let dir = new_dir();
    let keys = dir.join("keys.toml");
    std::fs::write(&keys, "[[keys]]\nid = \"team\"\nkey_sha256 = \"099295a3784e1bd368dc348843a7398c1931b6b8ec2504c73e91ed2040bdc46c\"\ntenant = \"acme\"\nuser = \"team\"\ntier = \"paid\"\n").unwrap();
    let example_env = include_str!("../../deploy/compose/example.env");
    let check = |file: &str, env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
        command.args(["check-config", "--with-defaults", &format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"))]);
        command.envs(env.iter().copied());
        command.output().unwrap()
    };
    // The compose stack's layer, with the secrets of the committed example env file.
    let mut env: Vec<(&str, &str)> = example_env.lines().filter(|line| !line.starts_with('#')).filter_map(|line| line.split_once('=')).collect();
    env.push(("SWITCHYARD_CLUSTER__NODE_NAME", "node-1"));
    let output = check("deploy/compose/switchyard.toml", &env);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("3 providers, 7 models"), "{}", String::from_utf8_lossy(&output.stdout));
    // Kubernetes' ConfigMap file, with what the StatefulSet maps from its Secrets.
    let keys = keys.display().to_string();
    let k8s = [
        ("SWITCHYARD_COOKIE", "cookie"),
        ("SWITCHYARD_ADMIN_KEY", "admin"),
        ("OPENAI_API_KEY", "sk-openai"),
        ("ANTHROPIC_API_KEY", "sk-anthropic"),
        ("SWITCHYARD_CLUSTER__NODE_NAME", "switchyard-0"),
        ("SWITCHYARD_CLUSTER__ADVERTISE", "switchyard-0.switchyard-headless.gw.svc.cluster.local"),
        ("SWITCHYARD_TENANCY__KEYS_FILE", keys.as_str()),
    ];
    let output = check("k8s/base/switchyard.toml", &k8s);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Without its cookie the node refuses to start, naming it.
    let output = check("k8s/base/switchyard.toml", &k8s[1..]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("SWITCHYARD_COOKIE"), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn the_health_subcommand_exits_zero_only_for_a_ready_node() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    let probe = |url: String| {
        tokio::task::spawn_blocking(move || std::process::Command::new(env!("CARGO_BIN_EXE_switchyard")).args(["health", "--timeout", "2s", "--url", &url]).output().unwrap())
    };
    let ready = probe(format!("{}/ready", node.http)).await.unwrap();
    assert!(ready.status.success(), "{}", String::from_utf8_lossy(&ready.stderr));
    assert!(String::from_utf8_lossy(&ready.stdout).contains("200 OK ready"), "{}", String::from_utf8_lossy(&ready.stdout));
    let missing = probe(format!("{}/no-such-endpoint", node.http)).await.unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"), "{}", String::from_utf8_lossy(&missing.stderr));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let refused = probe(format!("http://{closed}/ready")).await.unwrap();
    assert_eq!(refused.status.code(), Some(1), "nothing listens there");
}

#[tokio::test]
async fn when_every_provider_fails_the_client_learns_each_failure() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c.replace("max_retries = 2", "max_retries = 0")));
    sim_behaviour(&sim, None, json!({"fault": {"type": "status", "status": 500}})).await;
    let response = http()
        .post(format!("{}/v1/chat/completions", node.http))
        .json(&chat_body("gpt-4o-mini", "anyone?"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    for target in ["openai/gpt-4o-mini", "anthropic/claude-haiku", "vllm/llama-3.1-8b"] {
        assert!(message.contains(target), "{message}");
    }
    let mut client = node.grpc_client().await;
    let status = client.generate(grpc_request("anyone?")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("every provider failed"), "{}", status.message());
}

#[tokio::test]
async fn retries_wait_for_retry_after() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    sim_behaviour(&sim, Some("gpt-4o"), json!({"fault": {"type": "rate_limit", "retry_after_s": 1}, "fault_count": 1})).await;
    let started = Instant::now();
    let response = http()
        .post(format!("{}/v1/chat/completions", node.http))
        .json(&chat_body("gpt-4o", "patience"))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-model"], "gpt-4o");
    assert_eq!(response.headers()["x-switchyard-fallback"], "false");
    assert!(elapsed >= Duration::from_secs(1), "retried after {elapsed:?}, before Retry-After");
    assert_eq!(sim_calls(&sim, "gpt-4o").await, 2);
    let metrics = http().get(format!("{}/metrics", node.http)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_retries_total{error=\"rate_limited\",provider=\"openai\"} 1"), "{metrics}");
}

#[tokio::test]
async fn the_circuit_opens_on_failures_and_closes_after_a_good_probe() {
    let sim = start_sim().await;
    let config = config_for(sim.addr, |c| {
        c.replace("max_retries = 2", "max_retries = 0")
            .replace("consecutive_failures = 5", "consecutive_failures = 2")
            .replace("cool_down = \"10s\"", "cool_down = \"1s\"")
    });
    let node = Node::start(&config);
    sim_behaviour(&sim, Some("gpt-4o"), json!({"fault": {"type": "status", "status": 500}})).await;
    let ask = || async {
        http().post(format!("{}/v1/chat/completions", node.http)).json(&chat_body("gpt-4o", "q")).send().await.unwrap()
    };
    for _ in 0..2 {
        assert_eq!(ask().await.headers()["x-switchyard-model"], "claude-sonnet-4");
    }
    assert_eq!(sim_calls(&sim, "gpt-4o").await, 2);
    let metrics = http().get(format!("{}/metrics", node.http)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_circuit_state{provider=\"openai\"} 1"), "{metrics}");

    // Open: the provider is not called at all.
    let response = ask().await;
    assert_eq!(response.headers()["x-switchyard-model"], "claude-sonnet-4");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], "claude-sonnet-4");
    assert_eq!(sim_calls(&sim, "gpt-4o").await, 2, "no call while the circuit is open");

    // The upstream recovers; after the cool-down one probe closes the circuit.
    sim_behaviour(&sim, Some("gpt-4o"), json!({})).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(ask().await.headers()["x-switchyard-model"], "gpt-4o");
    assert_eq!(ask().await.headers()["x-switchyard-model"], "gpt-4o");
    let metrics = http().get(format!("{}/metrics", node.http)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_circuit_state{provider=\"openai\"} 0"), "{metrics}");
}

/// Reads an SSE body, returning each `data:` payload with its arrival time.
async fn sse_events(response: reqwest::Response) -> Vec<(Instant, String)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    events.push((Instant::now(), data.to_owned()));
                }
            }
        }
    }
    events
}

#[tokio::test]
async fn http_streams_arrive_as_the_upstream_produces_them() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    sim_behaviour(&sim, Some("claude-haiku"), json!({"tokens_per_sec": 20, "answer_tokens": 10})).await;
    let started = Instant::now();
    let mut body = chat_body("claude-haiku", "tell me a story");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = http().post(format!("{}/v1/chat/completions", node.http)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-switchyard-provider"], "anthropic");
    let events = sse_events(response).await;
    let done = events.last().unwrap();
    assert_eq!(done.1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, data)| serde_json::from_str(data).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str()).collect();
    let expected = fingerprint(&[("user", "tell me a story")]);
    assert!(text.starts_with(&format!("[sim {expected}]")), "{text}");
    assert_eq!(text.split(' ').count(), 10 + 1, "{text}");
    let finish = chunks.iter().find_map(|chunk| chunk["choices"][0]["finish_reason"].as_str()).unwrap();
    assert_eq!(finish, "stop");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 10);
    // The first text arrives long before the answer is complete: nothing was buffered.
    let first_text = events.iter().find(|(_, data)| data.contains("[sim ")).unwrap().0;
    assert!(done.0.duration_since(first_text) >= Duration::from_millis(300), "first text {:?}, done {:?}", first_text - started, done.0 - started);
}

#[tokio::test]
async fn grpc_streams_arrive_as_the_upstream_produces_them() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    sim_behaviour(&sim, Some("gpt-4o"), json!({"tokens_per_sec": 20, "answer_tokens": 10})).await;
    let mut client = node.grpc_client().await;
    let mut request = grpc_request("stream please");
    request.model = "gpt-4o".into();
    let mut stream = client.generate_stream(request).await.unwrap().into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        chunks.push((Instant::now(), chunk));
    }
    assert_eq!(chunks[0].1.provider, "openai");
    assert_eq!(chunks[0].1.model, "gpt-4o");
    let text: String = chunks.iter().map(|(_, chunk)| chunk.delta.as_str()).collect();
    assert!(text.starts_with(&format!("[sim {}]", fingerprint(&[("user", "stream please")]))), "{text}");
    let last = &chunks.last().unwrap().1;
    assert_eq!(last.finish_reason, "stop");
    assert_eq!(last.usage.unwrap().output_tokens, 10);
    assert!(last.cost_usd.unwrap() > 0.0);
    let first_text = chunks.iter().find(|(_, chunk)| !chunk.delta.is_empty()).unwrap().0;
    assert!(chunks.last().unwrap().0.duration_since(first_text) >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_an_error_never_a_clean_finish() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    sim_behaviour(&sim, Some("gpt-4o"), json!({"fault": {"type": "cut_stream", "after_tokens": 3}})).await;
    let mut body = chat_body("gpt-4o", "cut me");
    body["stream"] = json!(true);
    let response = http().post(format!("{}/v1/chat/completions", node.http)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let events = sse_events(response).await;
    assert!(events.iter().all(|(_, data)| data != "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
    assert!(events.iter().any(|(_, data)| data.contains("[sim ")), "some text was sent before the cut");

    let mut client = node.grpc_client().await;
    let mut request = grpc_request("cut me");
    request.model = "gpt-4o".into();
    let mut stream = client.generate_stream(request).await.unwrap().into_inner();
    let mut text = String::new();
    let error = loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                assert!(chunk.finish_reason.is_empty(), "a cut stream must not finish cleanly");
                text.push_str(&chunk.delta);
            }
            Ok(None) => panic!("stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert!(!text.is_empty());
    assert_eq!(error.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn a_slow_first_token_fails_over_before_anything_is_sent() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c.replacen("first_token_timeout = \"10s\"", "first_token_timeout = \"300ms\"", 1)));
    sim_behaviour(&sim, Some("gpt-4o"), json!({"ttft_ms": 5000})).await;
    let mut body = chat_body("gpt-4o", "hurry");
    body["stream"] = json!(true);
    let started = Instant::now();
    let response = http().post(format!("{}/v1/chat/completions", node.http)).json(&body).send().await.unwrap();
    assert_eq!(response.headers()["x-switchyard-model"], "claude-sonnet-4");
    assert_eq!(response.headers()["x-switchyard-fallback"], "true");
    let events = sse_events(response).await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert!(started.elapsed() < Duration::from_secs(3), "waited {:?}", started.elapsed());
}

#[tokio::test]
async fn malformed_upstream_answers_fail_over_instead_of_failing_the_request() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    sim_behaviour(&sim, Some("claude-sonnet-4"), json!({"fault": {"type": "malformed"}})).await;
    let mut client = node.grpc_client().await;
    let mut request = grpc_request("parse this");
    request.model = "claude-sonnet-4".into();
    let answer = client.generate(request).await.unwrap().into_inner();
    assert_eq!(answer.model, "gpt-4o");
    assert!(answer.failed_attempts[0].contains("malformed"), "{:?}", answer.failed_attempts);
}

#[tokio::test]
async fn a_field_one_provider_cannot_honour_routes_to_one_that_can() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    let url = format!("{}/v1/chat/completions", node.http);
    // claude-sonnet-4 (Anthropic) has no `seed`; its fallback gpt-4o (OpenAI) serves instead.
    let mut body = chat_body("claude-sonnet-4", "pick a number");
    body["seed"] = json!(7);
    let response = http().post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-model"], "gpt-4o");
    let reason = response.headers()["x-switchyard-routing-reason"].to_str().unwrap().to_owned();
    assert!(reason.contains("anthropic/claude-sonnet-4 skipped for `seed`"), "{reason}");
    // Tools and tool turns are honoured by both kinds: the first choice serves.
    let tools = json!({
        "model": "claude-sonnet-4",
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    });
    let response = http().post(&url).json(&tools).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-model"], "claude-sonnet-4");
    // Strict schemas only OpenAI guarantees.
    let mut strict = tools.clone();
    strict["tools"][0]["function"]["strict"] = json!(true);
    let response = http().post(&url).json(&strict).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-model"], "gpt-4o");
    // Nobody passes unknown fields on in this config: 400 naming the field and a provider.
    let mut unknown = chat_body("claude-sonnet-4", "hi");
    unknown["prediction"] = json!({"type": "content", "content": "x"});
    let response = http().post(&url).json(&unknown).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "prediction", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("pass_unknown_fields"), "{error}");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_naming_the_field_and_reaches_no_upstream() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c.replace("max_prompt_chars = 400000", "max_prompt_chars = 1000")));
    let url = format!("{}/v1/chat/completions", node.http);
    let cases: Vec<(Value, &str, u16)> = vec![
        (json!({"model": "gpt-4o", "messages": []}), "messages", 400),
        (json!({"model": "gpt-4o", "messages": [{"role": "wizard", "content": "hi"}]}), "messages[0].role", 400),
        (json!({"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]}), "model", 400),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(1001)}]}), "messages", 400),
        (json!({"model": "gpt-4o", "temperature": 3.5, "messages": [{"role": "user", "content": "hi"}]}), "temperature", 400),
        (json!({"model": "gpt-4o", "top_p": 0, "messages": [{"role": "user", "content": "hi"}]}), "top_p", 400),
        (json!({"model": "gpt-4o", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}), "max_tokens", 400),
        (json!({"model": "gpt-4o", "messages": "hi"}), "messages", 400),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}), "temperature", 400),
        // Fields that no provider can honour are refused, never dropped.
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}), "tool_choice", 400),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "has space"}}]}), "tools[0].function.name", 400),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}), "response_format.type", 400),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temprature": 0.2}), "temprature", 400),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "functions": []}), "functions", 400),
        (json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42", "tool_call_id": "call_1"}]}), "messages[1].tool_call_id", 400),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}),
            "messages[0].content[1].type",
            400,
        ),
    ];
    for (body, field, status) in cases {
        let response = http().post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert_eq!(error["error"]["param"], field, "{error}");
        assert!(error["error"]["message"].as_str().unwrap().starts_with(field), "{error}");
    }
    let response = http().post(&url).header("content-type", "application/json").body("{\"model\": \"gpt-4o\", ").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("EOF"), "{error}");
    let response = http()
        .post(&url)
        .header("x-switchyard-tier", "platinum")
        .json(&chat_body("gpt-4o", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let mut client = node.grpc_client().await;
    let mut empty = grpc_request("hi");
    empty.messages.clear();
    let mut unknown_role = grpc_request("hi");
    unknown_role.messages[0].role = "wizard".into();
    let mut unknown_model = grpc_request("hi");
    unknown_model.model = "gpt-17".into();
    let mut hot = grpc_request("hi");
    hot.sampling = Some(v1::SamplingParams { temperature: Some(9.0), ..Default::default() });
    for (request, field) in [(empty, "messages"), (unknown_role, "messages[0].role"), (unknown_model, "model"), (hot, "temperature")] {
        let status = client.generate(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let counts: Value = reqwest::get(format!("http://{}/_sim/calls", sim.addr)).await.unwrap().json().await.unwrap();
    assert_eq!(counts["total"], 0, "bad requests reached the upstream: {counts}");
}

#[tokio::test]
async fn operational_endpoints_answer() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    assert_eq!(http().get(format!("{}/health", node.http)).send().await.unwrap().status(), 200);
    let ready = http().get(format!("{}/ready", node.http)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready\n", "a node without [cluster] says nothing of a cluster");
    let cluster: Value = http().get(format!("{}/admin/v1/cluster", node.http)).send().await.unwrap().json().await.unwrap();
    assert_eq!(cluster["clustered"], false);
    assert_eq!(cluster["members"].as_array().unwrap().len(), 1, "{cluster}");
    assert_eq!(cluster["partitions_owned"].as_array().unwrap().len(), 0, "the semantic layer is off in this config: {cluster}");
    let models: Value = http().get(format!("{}/v1/models", node.http)).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert!(models["data"].as_array().unwrap().iter().any(|model| model["id"] == "claude-haiku"));
    http().post(format!("{}/v1/chat/completions", node.http)).json(&chat_body("claude-haiku", "count me")).send().await.unwrap();
    let metrics = http().get(format!("{}/metrics", node.http)).send().await.unwrap().text().await.unwrap();
    for needle in [
        "switchyard_requests_total{front_door=\"http\",model=\"claude-haiku\",provider=\"anthropic\",route=\"claude-haiku\",status=\"ok\"} 1",
        "switchyard_tokens_total{direction=\"output\",model=\"claude-haiku\",provider=\"anthropic\"} 16",
        "switchyard_request_duration_seconds_bucket",
        "switchyard_provider_available{provider=\"anthropic\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    // gRPC health answers too.
    let channel = tonic::transport::Channel::from_shared(node.grpc.clone()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: "switchyard.v1.Gateway".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_then_exits_cleanly() {
    let sim = start_sim().await;
    let mut node = Node::start(&config_for(sim.addr, |c| c));
    sim_behaviour(&sim, Some("gpt-4o"), json!({"ttft_ms": 800})).await;
    let url = format!("{}/v1/chat/completions", node.http);
    let in_flight = tokio::spawn(async move { http().post(url).json(&chat_body("gpt-4o", "slow one")).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = node.terminate();
        (status, node)
    });
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "the request in flight at SIGTERM was answered");
    let (status, node) = status.await.unwrap();
    assert!(status.success(), "exit status {status}:\n{}", node.logs());
    assert!(node.logs().contains("drained"), "{}", node.logs());
}
