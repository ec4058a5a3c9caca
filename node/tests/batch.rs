//! Batch jobs against real nodes: the upstream simulator over HTTP, real `switchyard` processes
//! (killed with SIGKILL and restarted in the same directory), a real `redis-server`, and a real
//! HTTP listener receiving the webhook. Every wait is a poll with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Node, Redis, config_for, sim_behaviour, sim_calls, start_sim};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

const ALICE: &str = "sk-alice";
const CAROL: &str = "sk-carol";
const WEBHOOK_SECRET: &str = "batch-webhook-test-secret";

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Keys of two tenants (alice of acme, with `alice_extra` lines; carol of globex).
fn keys(alice_extra: &str) -> String {
    format!(
        r#"
[tenancy]
[[tenancy.keys]]
id = "alice-key"
key_sha256 = "099295a3784e1bd368dc348843a7398c1931b6b8ec2504c73e91ed2040bdc46c"
tenant = "acme"
user = "alice"
tier = "paid"
{alice_extra}

[[tenancy.keys]]
id = "carol-key"
key_sha256 = "1d0e7afc963efdf084924177294d02cc02800e540bf46e7b846529396be4eddf"
tenant = "globex"
user = "carol"
"#
    )
}

/// `[batch]` with `concurrency`, and a webhook to `webhook` signed with a secret in `dir`.
fn batch_section(dir: &std::path::Path, concurrency: usize, webhook: Option<&str>) -> String {
    let mut section = format!("\n[batch]\nconcurrency = {concurrency}\nretry_base_delay = \"50ms\"\nretry_max_delay = \"200ms\"\n");
    if let Some(url) = webhook {
        let secret = dir.join("webhook-secret");
        std::fs::write(&secret, WEBHOOK_SECRET).unwrap();
        section += &format!("webhook_url = \"{url}\"\nwebhook_secret_file = \"{}\"\nwebhook_base_delay = \"50ms\"\n", secret.display());
    }
    section
}

/// A JSONL input of `count` chat lines (`line-0`, `line-1`, …) for `model`.
fn input(count: usize, model: &str) -> String {
    (0..count)
        .map(|index| {
            json!({
                "custom_id": format!("line-{index}"),
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": format!("batch question {index}")}]},
            })
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Uploads `content` as a batch input (multipart, as the SDKs send it); the file object.
async fn upload(node: &Node, key: &str, content: &str) -> Value {
    let boundary = "switchyard-test-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{content}\r\n--{boundary}--\r\n"
    );
    let response = http()
        .post(format!("{}/v1/files", node.http))
        .bearer_auth(key)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

async fn create(node: &Node, key: &str, file_id: &str) -> Value {
    let body = json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"job": "test"}});
    let response = http().post(format!("{}/v1/batches", node.http)).bearer_auth(key).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

async fn get(node: &Node, key: &str, path: &str) -> reqwest::Response {
    http().get(format!("{}{path}", node.http)).bearer_auth(key).send().await.unwrap()
}

/// Polls the batch until `done` holds for it (deadline `within`); the batch.
async fn wait_for(node: &Node, key: &str, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let batch: Value = get(node, key, &format!("/v1/batches/{id}")).await.json().await.unwrap();
        if done(&batch) {
            return batch;
        }
        assert!(Instant::now() < deadline, "batch never got there: {batch}\n{}", node.logs());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The lines of a file's content.
async fn content(node: &Node, key: &str, file_id: &str) -> Vec<Value> {
    let response = get(node, key, &format!("/v1/files/{file_id}/content")).await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// What a webhook receiver got: each POST's signature header and exact body.
type Deliveries = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A real HTTP listener for the webhook; its URL and what it accepted.
async fn webhook_receiver() -> (String, Deliveries) {
    let (url, received, _) = flaky_webhook_receiver(0).await;
    (url, received)
}

/// A webhook receiver that answers 503 to its first `refuse` POSTs: its URL, what it accepted,
/// and how many POSTs it got in all.
async fn flaky_webhook_receiver(refuse: usize) -> (String, Deliveries, Arc<Mutex<usize>>) {
    let received = Deliveries::default();
    let attempts = Arc::new(Mutex::new(0usize));
    let (sink, count) = (Arc::clone(&received), Arc::clone(&attempts));
    let app = axum::Router::new().route(
        "/batches",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (sink, count) = (Arc::clone(&sink), Arc::clone(&count));
            async move {
                let attempt = {
                    let mut count = count.lock().unwrap();
                    *count += 1;
                    *count
                };
                if attempt <= refuse {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let signature = headers.get("x-switchyard-signature").and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned();
                sink.lock().unwrap().push((signature, body.to_vec()));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/batches", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received, attempts)
}

async fn wait_for_deliveries(received: &Deliveries, count: usize) -> Vec<(String, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let deliveries = received.lock().unwrap().clone();
        if deliveries.len() >= count {
            return deliveries;
        }
        assert!(Instant::now() < deadline, "{} webhook(s) received, expected {count}", deliveries.len());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Every output line answered once: custom ids exactly `line-0 … line-{count-1}`, each 200.
fn assert_each_line_answered_once(output: &[Value], count: usize) {
    let ids: Vec<&str> = output.iter().map(|line| line["custom_id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), count, "output lines");
    assert_eq!(unique.len(), count, "each custom_id once");
    assert_eq!(unique, (0..count).map(|index| format!("line-{index}")).collect::<BTreeSet<_>>().iter().map(String::as_str).collect());
    for line in output {
        assert_eq!(line["response"]["status_code"], 200, "{line}");
        assert_eq!(line["response"]["body"]["object"], "chat.completion", "{line}");
        assert!(line["response"]["body"]["choices"][0]["message"]["content"].as_str().unwrap().starts_with("[sim "), "{line}");
        assert!(line["error"].is_null());
    }
}

#[tokio::test]
async fn a_thousand_line_batch_answers_every_line_once_and_its_webhook_arrives_once_signed() {
    let (webhook, received) = webhook_receiver().await;
    let sim = start_sim().await;
    let dir = common::new_dir();
    let config = config_for(sim.addr, |c| c + &keys("") + &batch_section(&dir, 8, Some(&webhook)));
    let mut node = Node::start_in(&dir, &config);

    let file = upload(&node, ALICE, &input(1000, "gpt-4o-mini")).await;
    assert_eq!(file["object"], "file");
    assert_eq!(file["purpose"], "batch");
    let batch = create(&node, ALICE, file["id"].as_str().unwrap()).await;
    let id = batch["id"].as_str().unwrap().to_owned();
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["status"], "in_progress");
    assert_eq!(batch["request_counts"]["total"], 1000);
    assert_eq!(batch["metadata"]["job"], "test");

    let batch = wait_for(&node, ALICE, &id, Duration::from_secs(180), |batch| batch["status"] == "completed").await;
    assert_eq!(batch["request_counts"], json!({"total": 1000, "completed": 1000, "failed": 0}));
    assert!(batch["error_file_id"].is_null());
    let output = content(&node, ALICE, batch["output_file_id"].as_str().unwrap()).await;
    assert_each_line_answered_once(&output, 1000);
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 1000, "every line called the upstream exactly once");
    let output_file: Value = get(&node, ALICE, &format!("/v1/files/{}", batch["output_file_id"].as_str().unwrap())).await.json().await.unwrap();
    assert_eq!(output_file["purpose"], "batch_output");

    let deliveries = wait_for_deliveries(&received, 1).await;
    let (signature, body) = &deliveries[0];
    assert_eq!(signature, &expected_signature(body), "the signature is the HMAC of the exact body");
    let event: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["type"], "batch.completed");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["request_counts"]["completed"], 1000);

    // The cost ledger saw every line as alice's.
    let ledger = std::fs::read_to_string(dir.join("ledger.jsonl")).unwrap();
    assert_eq!(ledger.lines().filter(|line| line.contains("\"alice\"")).count(), 1000);
    // Each line's audit line names the batch.
    let logs = node.logs();
    let audited = logs.lines().filter(|line| line.contains("\"target\":\"audit\"") && line.contains(&id)).count();
    assert_eq!(audited, 1000, "audit lines naming {id}");

    // A restart does not send the delivered webhook again: a second batch's event is the only
    // new one.
    assert!(node.terminate().success());
    let node = Node::start_in(&dir, &config);
    let file = upload(&node, ALICE, &input(2, "gpt-4o-mini")).await;
    let second = create(&node, ALICE, file["id"].as_str().unwrap()).await;
    wait_for(&node, ALICE, second["id"].as_str().unwrap(), Duration::from_secs(30), |batch| batch["status"] == "completed").await;
    let deliveries = wait_for_deliveries(&received, 2).await;
    let ids: Vec<String> = deliveries.iter().map(|(_, body)| serde_json::from_slice::<Value>(body).unwrap()["data"]["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, [id.clone(), second["id"].as_str().unwrap().to_owned()], "each batch's webhook once");
}

async fn killed_mid_job_resumes(redis: Option<&Redis>) {
    let sim = start_sim().await;
    // Slow enough that the kill lands mid-job (a second and more after it), even on a busy machine.
    sim_behaviour(&sim, None, json!({"ttft_ms": 40})).await;
    let dir = common::new_dir();
    let redis_url = redis.map(|redis| format!("url = \"{}\"", redis.url())).unwrap_or_else(|| "url = \"\"".into());
    let config = config_for(sim.addr, |c| c.replace("url = \"\"", &redis_url) + &keys("") + &batch_section(&dir, 4, None));
    let node = Node::start_in(&dir, &config);
    let lines = 300;
    let file = upload(&node, ALICE, &input(lines, "gpt-4o-mini")).await;
    let id = create(&node, ALICE, file["id"].as_str().unwrap()).await["id"].as_str().unwrap().to_owned();
    wait_for(&node, ALICE, &id, Duration::from_secs(60), |batch| batch["request_counts"]["completed"].as_u64().unwrap() >= 60).await;
    let dir = node.kill();
    let calls_before = sim_calls(&sim, "gpt-4o-mini").await;
    assert!((calls_before as usize) < lines, "the kill landed mid-job ({calls_before} calls)");

    let node = Node::start_in(&dir, &config);
    let batch = wait_for(&node, ALICE, &id, Duration::from_secs(120), |batch| batch["status"] == "completed").await;
    assert_eq!(batch["request_counts"], json!({"total": lines, "completed": lines, "failed": 0}));
    assert!(node.logs().contains("resuming batch"), "{}", node.logs());
    let output = content(&node, ALICE, batch["output_file_id"].as_str().unwrap()).await;
    assert_each_line_answered_once(&output, lines);
    // Recorded lines are not run again; only the lines in flight at the kill (at most the
    // concurrency) had no result and ran twice.
    let calls = sim_calls(&sim, "gpt-4o-mini").await as usize;
    assert!((lines..=lines + 4).contains(&calls), "{calls} upstream calls for {lines} lines");
}

#[tokio::test]
async fn a_batch_killed_mid_job_resumes_after_restart_from_its_files() {
    killed_mid_job_resumes(None).await;
}

#[tokio::test]
async fn a_batch_killed_mid_job_resumes_after_restart_from_redis() {
    let redis = Redis::start();
    killed_mid_job_resumes(Some(&redis)).await;
}

#[tokio::test]
async fn with_redis_another_node_takes_over_a_dead_nodes_batch_once_its_lease_lapses() {
    let redis = Redis::start();
    let sim = start_sim().await;
    sim_behaviour(&sim, None, json!({"ttft_ms": 40})).await;
    let node_config = |dir: &std::path::Path, name: &str| {
        let redis_url = format!("url = \"{}\"", redis.url());
        config_for(sim.addr, |c| c.replace("url = \"\"", &redis_url) + &keys("") + &batch_section(dir, 4, None) + &format!("lease_ttl = \"1s\"\nnode_id = \"{name}\"\n"))
    };
    let (dir_a, dir_b) = (common::new_dir(), common::new_dir());
    let node_a = Node::start_in(&dir_a, &node_config(&dir_a, "node-a"));
    let node_b = Node::start_in(&dir_b, &node_config(&dir_b, "node-b"));
    let lines = 200;
    let file = upload(&node_a, ALICE, &input(lines, "gpt-4o-mini")).await;
    let id = create(&node_a, ALICE, file["id"].as_str().unwrap()).await["id"].as_str().unwrap().to_owned();
    // Node B sees node A's batch (the store is shared) but leaves it to A while A holds it.
    wait_for(&node_b, ALICE, &id, Duration::from_secs(60), |batch| batch["request_counts"]["completed"].as_u64().unwrap() >= 40).await;
    assert!(!node_b.logs().contains("resuming batch"), "{}", node_b.logs());
    node_a.kill();

    let batch = wait_for(&node_b, ALICE, &id, Duration::from_secs(60), |batch| batch["status"] == "completed").await;
    assert!(node_b.logs().contains("resuming batch"), "{}", node_b.logs());
    let output = content(&node_b, ALICE, batch["output_file_id"].as_str().unwrap()).await;
    assert_each_line_answered_once(&output, lines);
    let calls = sim_calls(&sim, "gpt-4o-mini").await as usize;
    assert!((lines..=lines + 4).contains(&calls), "{calls} upstream calls for {lines} lines");
}

#[tokio::test]
async fn a_run_whose_redis_goes_away_starts_again_when_it_returns() {
    let mut redis = Redis::start();
    let sim = start_sim().await;
    sim_behaviour(&sim, None, json!({"ttft_ms": 40})).await;
    let dir = common::new_dir();
    let redis_url = format!("url = \"{}\"", redis.url());
    let config = config_for(sim.addr, |c| c.replace("url = \"\"", &redis_url) + &keys("") + &batch_section(&dir, 4, None));
    let node = Node::start_in(&dir, &config);
    let lines = 200;
    let file = upload(&node, ALICE, &input(lines, "gpt-4o-mini")).await;
    let id = create(&node, ALICE, file["id"].as_str().unwrap()).await["id"].as_str().unwrap().to_owned();
    wait_for(&node, ALICE, &id, Duration::from_secs(60), |batch| batch["request_counts"]["completed"].as_u64().unwrap() >= 30).await;
    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.logs().contains("starting it again") {
        assert!(Instant::now() < deadline, "the run never noticed Redis was gone:\n{}", node.logs());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    redis.restart();
    let batch = wait_for(&node, ALICE, &id, Duration::from_secs(90), |batch| batch["status"] == "completed").await;
    let output = content(&node, ALICE, batch["output_file_id"].as_str().unwrap()).await;
    assert_each_line_answered_once(&output, lines);
    let calls = sim_calls(&sim, "gpt-4o-mini").await as usize;
    assert!((lines..=lines + 4).contains(&calls), "{calls} upstream calls for {lines} lines");
}

#[tokio::test]
async fn sigterm_mid_job_finishes_the_lines_in_flight_and_a_restart_runs_only_the_rest() {
    let sim = start_sim().await;
    sim_behaviour(&sim, None, json!({"ttft_ms": 50})).await;
    let dir = common::new_dir();
    let config = config_for(sim.addr, |c| c + &keys("") + &batch_section(&dir, 4, None));
    let node = Node::start_in(&dir, &config);
    let lines = 200;
    let file = upload(&node, ALICE, &input(lines, "gpt-4o-mini")).await;
    let id = create(&node, ALICE, file["id"].as_str().unwrap()).await["id"].as_str().unwrap().to_owned();
    wait_for(&node, ALICE, &id, Duration::from_secs(60), |batch| batch["request_counts"]["completed"].as_u64().unwrap() >= 20).await;
    // The simulator shares this test's runtime: wait for the exit off it, so it keeps answering
    // the lines in flight.
    let (status, logs) = tokio::task::spawn_blocking(move || {
        let mut node = node;
        let (status, logs) = (node.terminate(), node.logs());
        node.kill(); // keeps the directory for the restart
        (status, logs)
    }).await.unwrap();
    assert!(status.success(), "{logs}");
    assert!(!logs.contains("drain timeout passed"), "{logs}");
    assert!((sim_calls(&sim, "gpt-4o-mini").await as usize) < lines, "the shutdown landed mid-job");

    let node = Node::start_in(&dir, &config);
    let batch = wait_for(&node, ALICE, &id, Duration::from_secs(60), |batch| batch["status"] == "completed").await;
    let output = content(&node, ALICE, batch["output_file_id"].as_str().unwrap()).await;
    assert_each_line_answered_once(&output, lines);
    // The lines in flight at SIGTERM finished and were recorded before the node exited: no line
    // called the upstream twice.
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await as usize, lines);
}

#[tokio::test]
async fn lines_refused_by_a_rate_limit_wait_and_run_rather_than_fail() {
    let sim = start_sim().await;
    let dir = common::new_dir();
    // A minute's burst of 120, then two a second: the last 10 lines meet the limit.
    let config = config_for(sim.addr, |c| c + &keys("requests_per_minute = 120") + &batch_section(&dir, 4, None));
    let node = Node::start_in(&dir, &config);
    let file = upload(&node, ALICE, &input(130, "gpt-4o-mini")).await;
    let id = create(&node, ALICE, file["id"].as_str().unwrap()).await["id"].as_str().unwrap().to_owned();
    let batch = wait_for(&node, ALICE, &id, Duration::from_secs(60), |batch| batch["status"] == "completed").await;
    assert_eq!(batch["request_counts"], json!({"total": 130, "completed": 130, "failed": 0}));
    assert!(common::metric(&node, "switchyard_rate_limited_total").await > 0.0, "the limit was met");
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 130);
}

#[tokio::test]
async fn a_batch_that_exhausts_a_budget_stops_with_the_reason() {
    // The receiver refuses twice: the event is retried until it is taken, then not again.
    let (webhook, received, attempts) = flaky_webhook_receiver(2).await;
    let sim = start_sim().await;
    let dir = common::new_dir();
    // One line costs 3 * 150 + 16 * 600 = 10_050 nanodollars (max_tokens 16): the budget covers 10.
    let alice = format!("daily_budget_usd = {}", 10.0 * 10_050.0 / 1e9);
    let config = config_for(sim.addr, |c| c + &keys(&alice) + &batch_section(&dir, 1, Some(&webhook)));
    let node = Node::start_in(&dir, &config);
    let file = upload(&node, ALICE, &input(40, "gpt-4o-mini")).await;
    let id = create(&node, ALICE, file["id"].as_str().unwrap()).await["id"].as_str().unwrap().to_owned();
    let batch = wait_for(&node, ALICE, &id, Duration::from_secs(60), |batch| batch["status"] == "failed").await;
    let errors = batch["errors"]["data"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{batch}");
    assert_eq!(errors[0]["code"], "budget_exhausted");
    assert!(errors[0]["message"].as_str().unwrap().contains("daily budget of user acme/alice exhausted"), "{batch}");
    let completed = batch["request_counts"]["completed"].as_u64().unwrap();
    assert!((5..=10).contains(&completed), "{completed} lines within the budget");
    assert_eq!(batch["request_counts"]["failed"].as_u64().unwrap(), 40 - completed, "every line not run is in the error file");
    let output = content(&node, ALICE, batch["output_file_id"].as_str().unwrap()).await;
    assert_eq!(output.len() as u64, completed);
    let errors = content(&node, ALICE, batch["error_file_id"].as_str().unwrap()).await;
    assert!(errors.iter().all(|line| line["error"]["code"] == "budget_exhausted" && line["response"].is_null()), "{errors:?}");
    let deliveries = wait_for_deliveries(&received, 1).await;
    assert_eq!(deliveries[0].0, expected_signature(&deliveries[0].1));
    let event: Value = serde_json::from_slice(&deliveries[0].1).unwrap();
    assert_eq!(*attempts.lock().unwrap(), 3, "two refusals, then the delivery");
    assert_eq!(event["type"], "batch.failed");
    assert_eq!(event["data"]["errors"]["data"][0]["code"], "budget_exhausted");
}

#[tokio::test]
async fn bad_lines_fail_the_batch_naming_them_other_tenants_see_nothing_and_cancel_stops_it() {
    let sim = start_sim().await;
    sim_behaviour(&sim, None, json!({"ttft_ms": 20})).await;
    let dir = common::new_dir();
    let node = Node::start_in(&dir, &config_for(sim.addr, |c| c + &keys("") + &batch_section(&dir, 1, None)));

    // Validation: every bad line named, nothing run.
    let bad = [
        input(1, "gpt-4o-mini"),
        "{not json".to_owned(),
        json!({"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {}}).to_string(),
        json!({"custom_id": "y", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "wizard", "content": "hi"}]}}).to_string(),
    ]
    .join("\n");
    let file = upload(&node, ALICE, &bad).await;
    let batch = create(&node, ALICE, file["id"].as_str().unwrap()).await;
    assert_eq!(batch["status"], "failed");
    let lines: Vec<u64> = batch["errors"]["data"].as_array().unwrap().iter().map(|error| error["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 3, 4], "{batch}");
    assert_eq!(batch["errors"]["data"][2]["param"], "body.messages[0].role");
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 0, "nothing ran");

    // Another tenant sees neither the batch nor the file.
    let id = batch["id"].as_str().unwrap();
    for path in [format!("/v1/batches/{id}"), format!("/v1/files/{}", file["id"].as_str().unwrap()), format!("/v1/files/{}/content", file["id"].as_str().unwrap())] {
        assert_eq!(get(&node, CAROL, &path).await.status(), 404, "{path}");
        assert_eq!(get(&node, ALICE, &path).await.status(), 200, "{path}");
    }
    let carol_list: Value = get(&node, CAROL, "/v1/batches").await.json().await.unwrap();
    assert_eq!(carol_list["data"].as_array().unwrap().len(), 0);
    let carol_cancel = http().post(format!("{}/v1/batches/{id}/cancel", node.http)).bearer_auth(CAROL).send().await.unwrap();
    assert_eq!(carol_cancel.status(), 404);
    assert_eq!(get(&node, "sk-nobody", &format!("/v1/batches/{id}")).await.status(), 401);

    // Cancel: lines in flight finish, no new line starts, what ran is in the output.
    let file = upload(&node, ALICE, &input(200, "gpt-4o-mini")).await;
    let id = create(&node, ALICE, file["id"].as_str().unwrap()).await["id"].as_str().unwrap().to_owned();
    wait_for(&node, ALICE, &id, Duration::from_secs(30), |batch| batch["request_counts"]["completed"].as_u64().unwrap() >= 3).await;
    let cancelled: Value = http().post(format!("{}/v1/batches/{id}/cancel", node.http)).bearer_auth(ALICE).send().await.unwrap().json().await.unwrap();
    assert!(["cancelling", "cancelled"].contains(&cancelled["status"].as_str().unwrap()), "{cancelled}");
    let batch = wait_for(&node, ALICE, &id, Duration::from_secs(30), |batch| batch["status"] == "cancelled").await;
    let completed = batch["request_counts"]["completed"].as_u64().unwrap();
    assert!(completed < 200, "{batch}");
    assert_eq!(content(&node, ALICE, batch["output_file_id"].as_str().unwrap()).await.len() as u64, completed);
    let list: Value = get(&node, ALICE, "/v1/batches?limit=1").await.json().await.unwrap();
    assert_eq!(list["data"][0]["id"], id.as_str(), "newest first");
    assert_eq!(list["has_more"], true);
}

#[tokio::test]
async fn the_grpc_batches_service_runs_a_batch() {
    use switchyard_proto::v1;
    use switchyard_proto::v1::batches_client::BatchesClient;
    let sim = start_sim().await;
    let dir = common::new_dir();
    let node = Node::start_in(&dir, &config_for(sim.addr, |c| c + &keys("") + &batch_section(&dir, 2, None)));
    let mut client = BatchesClient::connect(node.grpc.clone()).await.unwrap();
    fn authorized<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {ALICE}").parse().unwrap());
        request
    }
    let file = client
        .upload_file(authorized(v1::UploadFileRequest { filename: "in.jsonl".into(), purpose: "batch".into(), content: input(5, "gpt-4o-mini").into_bytes() }))
        .await
        .unwrap()
        .into_inner();
    let batch = client.create_batch(authorized(v1::CreateBatchRequest { input_file_id: file.id, ..Default::default() })).await.unwrap().into_inner();
    assert_eq!(batch.status, "in_progress");
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let current = client.get_batch(authorized(v1::GetBatchRequest { id: batch.id.clone() })).await.unwrap().into_inner();
        if current.status == "completed" {
            break current;
        }
        assert!(Instant::now() < deadline, "{current:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(done.request_counts.unwrap().completed, 5);
    let output = client.get_file_content(authorized(v1::GetFileRequest { id: done.output_file_id })).await.unwrap().into_inner();
    assert_eq!(String::from_utf8(output.content).unwrap().lines().count(), 5);
    let mut other = tonic::Request::new(v1::GetBatchRequest { id: batch.id });
    other.metadata_mut().insert("authorization", format!("Bearer {CAROL}").parse().unwrap());
    assert_eq!(client.get_batch(other).await.unwrap_err().code(), tonic::Code::NotFound);
}
