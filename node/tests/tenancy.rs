//! Keys, rate limits, cost tracking, budgets, alerts and the durable ledger, end to end against
//! real `switchyard` processes and the simulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Node, chat_body, config_for, grpc_request, new_dir, sim_behaviour, start_sim};
use serde_json::{Value, json};
use switchyard_proto::v1;

const ALICE: &str = "sk-alice";
const BOB: &str = "sk-bob";
const ADMIN: &str = "sk-admin";

/// Tenancy for the tests: alice (paid, budgets set per test), bob (only the cheap model, 2
/// requests a minute), an admin key.
fn tenancy(alice_extra: &str, tenancy_extra: &str) -> String {
    format!(
        r#"
[tenancy]
admin_key_sha256 = "46db358cf47822ef17fa2cea371f2dd33512fb20ae94b092a5efb955d515b410"
{tenancy_extra}

[[tenancy.keys]]
id = "alice-key"
key_sha256 = "099295a3784e1bd368dc348843a7398c1931b6b8ec2504c73e91ed2040bdc46c"
tenant = "acme"
user = "alice"
tier = "paid"
{alice_extra}

[[tenancy.keys]]
id = "bob-key"
key_sha256 = "36c76b48bb2ee1d9d37140550e9d7ed7d395cf56f41050dc2a72e5291c0011f0"
tenant = "acme"
user = "bob"
models = ["gpt-4o-mini"]
requests_per_minute = 2
"#
    )
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn ask(node: &Node, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = http().post(format!("{}/v1/chat/completions", node.http)).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

async fn admin(node: &Node, path: &str) -> Value {
    let response = http().get(format!("{}{path}", node.http)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// The cost a response reports, in nanodollars.
fn told_nano(response: &reqwest::Response) -> i64 {
    let usd: f64 = response.headers()["x-switchyard-cost-usd"].to_str().unwrap().parse().unwrap();
    (usd * 1e9).round() as i64
}

#[tokio::test]
async fn keys_are_required_and_scoped() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c + &tenancy("", "")));
    let body = chat_body("gpt-4o-mini", "hello");
    assert_eq!(ask(&node, None, &body).await.status(), 401);
    let unknown = ask(&node, Some("sk-mallory"), &body).await;
    assert_eq!(unknown.status(), 401);
    let error: Value = unknown.json().await.unwrap();
    assert_eq!(error["error"]["type"], "authentication_error");
    assert_eq!(ask(&node, Some(ALICE), &body).await.status(), 200);
    let forbidden = ask(&node, Some(BOB), &chat_body("gpt-4o", "hello")).await;
    assert_eq!(forbidden.status(), 403);
    let error: Value = forbidden.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("bob-key"), "{error}");

    let mut client = node.grpc_client().await;
    let status = client.generate(grpc_request("hello")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(grpc_request("hello"));
    request.metadata_mut().insert("authorization", format!("Bearer {ALICE}").parse().unwrap());
    assert!(client.generate(request).await.is_ok());
    let mut request = tonic::Request::new(v1::GenerateRequest { model: "gpt-4o".into(), ..grpc_request("hello") });
    request.metadata_mut().insert("authorization", format!("Bearer {BOB}").parse().unwrap());
    assert_eq!(client.generate(request).await.unwrap_err().code(), tonic::Code::PermissionDenied);

    // The Admin API takes only the admin key.
    let daily = format!("{}/admin/v1/cost/daily", node.http);
    assert_eq!(http().get(&daily).send().await.unwrap().status(), 401);
    assert_eq!(http().get(&daily).bearer_auth(ALICE).send().await.unwrap().status(), 401);
    assert_eq!(http().get(&daily).bearer_auth(ADMIN).send().await.unwrap().status(), 200);
    let bad = http().get(format!("{daily}?date=yesterday")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_tier_comes_from_the_key_not_the_request() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c + &tenancy("", "")));
    let response = http()
        .post(format!("{}/v1/chat/completions", node.http))
        .bearer_auth(ALICE)
        .header("x-switchyard-tier", "enterprise")
        .header("x-switchyard-quality", "high")
        .json(&chat_body("auto", "draft a contract"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_ne!(response.headers()["x-switchyard-model"], "claude-opus-4", "alice's key is paid tier");
}

#[tokio::test]
async fn requests_past_the_rate_limit_get_429_with_retry_after() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c + &tenancy("", "")));
    let body = chat_body("gpt-4o-mini", "hello");
    assert_eq!(ask(&node, Some(BOB), &body).await.status(), 200);
    assert_eq!(ask(&node, Some(BOB), &body).await.status(), 200);
    let limited = ask(&node, Some(BOB), &body).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let error: Value = limited.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("requests per minute"), "{error}");
    // Other keys are not affected.
    assert_eq!(ask(&node, Some(ALICE), &body).await.status(), 200);
    let metrics = http().get(format!("{}/metrics", node.http)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_rate_limited_total{key=\"bob-key\",limit=\"requests per minute\"} 1"), "{metrics}");
}

#[tokio::test]
async fn costs_are_priced_recorded_and_queryable() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c + &tenancy("", "")));
    let mut told = 0;
    for _ in 0..3 {
        let response = ask(&node, Some(ALICE), &json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "one two three"}]})).await;
        assert_eq!(response.status(), 200);
        let cost = told_nano(&response);
        // 3 prompt tokens at $0.15/M and 10 answer tokens at $0.60/M.
        assert_eq!(cost, 3 * 150 + 10 * 600);
        told += cost;
    }
    let response = ask(&node, Some(BOB), &chat_body("gpt-4o-mini", "one two three")).await;
    told += told_nano(&response);
    let daily = admin(&node, "/admin/v1/cost/daily").await;
    assert_eq!(daily["total"]["nano_usd"], told);
    assert_eq!(daily["requests"], 4);
    let by_model = admin(&node, "/admin/v1/cost/by-model").await;
    assert_eq!(by_model["models"][0]["model"], "gpt-4o-mini");
    let by_user = admin(&node, "/admin/v1/cost/by-user?limit=1").await;
    assert_eq!(by_user["users"].as_array().unwrap().len(), 1);
    assert_eq!(by_user["users"][0]["user"], "alice", "alice spent most");
    let by_tenant = admin(&node, "/admin/v1/cost/by-tenant").await;
    assert_eq!(by_tenant["tenants"][0]["cost"]["nano_usd"], told);
    let budget = admin(&node, "/admin/v1/budget?tenant=acme&user=alice").await;
    assert_eq!(budget["budgets"][0]["spent"]["nano_usd"], 3 * (3 * 150 + 10 * 600));
    let metrics = http().get(format!("{}/metrics", node.http)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_cost_usd_total{model=\"gpt-4o-mini\",tenant=\"acme\"}"), "{metrics}");
    let logs = node.logs();
    assert_eq!(logs.lines().filter(|line| line.contains("\"target\":\"audit\"")).count(), 4, "{logs}");
    assert!(!logs.contains("one two three"), "prompt text is not logged by default");
}

#[tokio::test]
async fn a_burst_cannot_overspend_a_budget() {
    let sim = start_sim().await;
    sim_behaviour(&sim, None, json!({"ttft_ms": 200})).await;
    // One request costs 3 * 150 + 16 * 600 = 10_050 nanodollars: the budget covers 50.
    let budget_nano = 50 * 10_050;
    let alice = format!("daily_budget_usd = {}", budget_nano as f64 / 1e9);
    let node = Node::start(&config_for(sim.addr, |c| c + &tenancy(&alice, "")));
    let node = Arc::new(node);
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "one two three"}]});
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (node, body) = (Arc::clone(&node), body.clone());
        tasks.push(tokio::spawn(async move {
            let response = ask(&node, Some(ALICE), &body).await;
            let status = response.status().as_u16();
            let cost = if status == 200 { told_nano(&response) } else { 0 };
            (status, cost)
        }));
    }
    let mut served = 0;
    let mut spent = 0;
    for task in tasks {
        let (status, cost) = task.await.unwrap();
        assert!(status == 200 || status == 429, "{status}");
        served += usize::from(status == 200);
        spent += cost;
    }
    // Then one at a time until the budget refuses.
    loop {
        let response = ask(&node, Some(ALICE), &body).await;
        if response.status() == 429 {
            let error: Value = response.json().await.unwrap();
            let message = error["error"]["message"].as_str().unwrap();
            assert!(message.contains("daily budget of user acme/alice exhausted"), "{message}");
            break;
        }
        served += 1;
        spent += told_nano(&response);
        assert!(served <= 50, "served more than the budget covers");
    }
    assert!(spent <= budget_nano, "spent {spent} of {budget_nano}");
    // The reservation covers the chain's most expensive model, so the last requests are refused
    // while up to (reservation / real cost) requests' worth of budget is left.
    assert!(served >= 40, "served only {served}");
    let budget = admin(&node, "/admin/v1/budget?tenant=acme&user=alice").await;
    assert_eq!(budget["budgets"][0]["spent"]["nano_usd"], spent);
    assert_eq!(budget["budgets"][0]["reserved"]["nano_usd"], 0, "no reservation leaked");
}

#[tokio::test]
async fn each_alert_threshold_fires_once_per_period_and_reaches_the_webhook() {
    let (webhook, received) = common::alert_sink().await;

    let sim = start_sim().await;
    let alice = format!("daily_budget_usd = {}", 10.0 * 10_050.0 / 1e9);
    let extra = format!("alert_thresholds = [20, 50]\nalert_webhook = \"{webhook}\"");
    let node = Node::start(&config_for(sim.addr, |c| c + &tenancy(&alice, &extra)));
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "one two three"}]});
    for _ in 0..6 {
        assert_eq!(ask(&node, Some(ALICE), &body).await.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alerts = received.lock().unwrap().clone();
    let thresholds: Vec<u64> = alerts.iter().map(|alert| alert["threshold_percent"].as_u64().unwrap()).collect();
    assert_eq!(thresholds, vec![20, 50], "{alerts:?}");
    assert_eq!(alerts[0]["scope"], "user acme/alice");
    assert_eq!(alerts[0]["period"], "daily");
    let logs = node.logs();
    assert_eq!(logs.lines().filter(|line| line.contains("budget threshold crossed")).count(), 2, "{logs}");
}

#[tokio::test]
async fn no_told_cost_is_lost_when_the_node_is_killed() {
    let sim = start_sim().await;
    sim_behaviour(&sim, None, json!({"ttft_ms": 20})).await;
    let dir = new_dir();
    let config = config_for(sim.addr, |c| c + &tenancy("", ""));
    let node = Node::start_in(&dir, &config);
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "one two three"}]});
    let one_cost = 3 * 150 + 16 * 600;
    // Clients in a loop; the node is killed while some requests are in flight.
    let url = format!("{}/v1/chat/completions", node.http);
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (url, body) = (url.clone(), body.clone());
        clients.push(tokio::spawn(async move {
            let (mut told, mut unanswered) = (0i64, 0i64);
            for _ in 0..200 {
                match http().post(&url).bearer_auth(ALICE).json(&body).send().await {
                    Ok(response) if response.status() == 200 => told += told_nano(&response),
                    _ => {
                        unanswered += 1;
                        break;
                    }
                }
            }
            (told, unanswered)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let dir = node.kill();
    let mut told = 0;
    let mut in_flight = 0;
    for client in clients {
        let (client_told, unanswered) = client.await.unwrap();
        told += client_told;
        in_flight += unanswered;
    }
    assert!(told > 0);
    let node = Node::start_in(&dir, &config);
    let daily = admin(&node, "/admin/v1/cost/daily").await;
    let recorded = daily["total"]["nano_usd"].as_i64().unwrap();
    // Every cost a client was told is recorded; requests in flight at the kill may or may not be.
    assert!(recorded >= told, "recorded {recorded} < told {told}");
    assert!(recorded <= told + in_flight * one_cost, "recorded {recorded}, told {told}, in flight {in_flight}");
}

#[tokio::test]
async fn an_exhausted_budget_downgrades_to_the_cheapest_model_when_configured() {
    let sim = start_sim().await;
    let alice = format!("daily_budget_usd = {}", 2.0 * 10_050.0 / 1e9);
    let node = Node::start(&config_for(sim.addr, |c| c + &tenancy(&alice, "enforcement = \"downgrade\"")));
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "one two three"}]});
    let first = ask(&node, Some(ALICE), &body).await;
    assert_eq!(first.headers()["x-switchyard-model"], "gpt-4o-mini");
    let mut downgraded = None;
    for _ in 0..3 {
        let response = ask(&node, Some(ALICE), &body).await;
        assert_eq!(response.status(), 200, "downgrade serves instead of refusing");
        if response.headers()["x-switchyard-model"] == "llama-3.1-8b" {
            downgraded = Some(response.headers()["x-switchyard-routing-reason"].to_str().unwrap().to_owned());
        }
    }
    let reason = downgraded.expect("a request was downgraded to the cheapest model");
    assert!(reason.starts_with("budget exhausted: downgraded"), "{reason}");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_still_billed_for_the_whole_answer() {
    let sim = start_sim().await;
    sim_behaviour(&sim, Some("gpt-4o-mini"), json!({"tokens_per_sec": 40, "answer_tokens": 20})).await;
    let node = Node::start(&config_for(sim.addr, |c| c + &tenancy("", "")));
    let body = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "one two three"}]});
    let response = ask(&node, Some(ALICE), &body).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    use futures::StreamExt as _;
    let first = stream.next().await;
    assert!(first.is_some());
    drop(stream);
    // The upstream keeps being read until its usage arrives (20 tokens at 40/s).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let daily = admin(&node, "/admin/v1/cost/daily").await;
    assert_eq!(daily["requests"], 1);
    assert_eq!(daily["estimated_requests"], 0, "real usage arrived");
    assert_eq!(daily["total"]["nano_usd"], 3 * 150 + 20 * 600);
}

#[tokio::test]
async fn the_admin_api_answers_over_grpc_with_the_admin_key_only() {
    use switchyard_proto::v1::admin_client::AdminClient;
    let sim = start_sim().await;
    let alice = format!("daily_budget_usd = {}", 100.0 * 10_050.0 / 1e9);
    let node = Node::start(&config_for(sim.addr, |c| c + &tenancy(&alice, "")));
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "one two three"}]});
    let told = told_nano(&ask(&node, Some(ALICE), &body).await);
    let mut client = AdminClient::connect(node.grpc.clone()).await.unwrap();
    let unauthenticated = client.get_daily_cost(v1::DailyCostRequest::default()).await.unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    fn with_key<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
        request
    }
    let daily = client.get_daily_cost(with_key(v1::DailyCostRequest::default())).await.unwrap().into_inner();
    assert_eq!(daily.total.unwrap().nano_usd, told);
    let budget = client
        .check_budget(with_key(v1::CheckBudgetRequest { tenant: "acme".into(), user: "alice".into() }))
        .await
        .unwrap()
        .into_inner();
    let daily_budget = &budget.budgets[0];
    assert_eq!((daily_budget.scope.as_str(), daily_budget.period.as_str()), ("user acme/alice", "daily"));
    assert_eq!(daily_budget.spent.unwrap().nano_usd, told);
    assert_eq!(daily_budget.limit.unwrap().nano_usd, 100 * 10_050);
    assert_eq!(daily_budget.remaining.unwrap().nano_usd, 100 * 10_050 - told);
    let by_model = client.get_cost_by_model(with_key(v1::CostRangeRequest::default())).await.unwrap().into_inner();
    assert_eq!(by_model.models[0].model, "gpt-4o-mini");
    let bad = client
        .get_cost_by_user(with_key(v1::CostRangeRequest { start: "2026-13-01".into(), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("start:"), "{}", bad.message());
}

/// Polls `check` every 50 ms for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 10 s");
}

#[tokio::test]
async fn with_redis_every_cost_reaches_the_stream_and_the_counters_exactly_once() {
    use redis::AsyncCommands as _;
    let mut redis_server = common::Redis::start();
    let sim = start_sim().await;
    let dir = new_dir();
    let url = redis_server.url();
    let config = config_for(sim.addr, |c| c.replace("url = \"\"", &format!("url = \"{url}\"")) + &tenancy("", ""));
    let node = Node::start_in(&dir, &config);
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "one two three"}]});
    let mut told = 0;
    for _ in 0..5 {
        told += told_nano(&ask(&node, Some(ALICE), &body).await);
    }
    let client = redis::Client::open(url.as_str()).unwrap();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let user_counter = format!("switchyard:v1:spend:user:4:acme:alice:{today}");
    let tenant_counter = format!("switchyard:v1:spend:tenant:acme:{today}");
    let state = || async {
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        let events: u64 = connection.xlen("switchyard:v1:cost-events").await.ok()?;
        let user: Option<i64> = connection.get(&user_counter).await.ok()?;
        let tenant: Option<i64> = connection.get(&tenant_counter).await.ok()?;
        Some((events, user.unwrap_or(0), tenant.unwrap_or(0)))
    };
    eventually("five events in Redis", || async { state().await == Some((5, told, told)) }).await;

    // A restart pushes recent events again; they are counted once.
    let dir = node.kill();
    let node = Node::start_in(&dir, &config);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state().await, Some((5, told, told)));

    // Redis goes away: requests are still answered and billed; the events arrive once it is back.
    redis_server.stop();
    for _ in 0..3 {
        let response = ask(&node, Some(ALICE), &body).await;
        assert_eq!(response.status(), 200);
        told += told_nano(&response);
    }
    redis_server.restart();
    eventually("the events written while Redis was down", || async { state().await == Some((8, told, told)) }).await;
    let daily = admin(&node, "/admin/v1/cost/daily").await;
    assert_eq!(daily["total"]["nano_usd"], told);
}

#[tokio::test]
async fn a_model_without_a_price_is_recorded_as_unknown_never_as_zero() {
    let sim = start_sim().await;
    let config = config_for(sim.addr, |c| {
        c.replace("input_usd_per_mtok = 0.05\noutput_usd_per_mtok = 0.08\n", "") + &tenancy("", "")
    });
    let node = Node::start(&config);
    let response = ask(&node, Some(ALICE), &chat_body("llama-3.1-8b", "one two three")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-switchyard-cost-usd").is_none(), "no cost is claimed");
    let daily = admin(&node, "/admin/v1/cost/daily").await;
    assert_eq!(daily["requests"], 1);
    assert_eq!(daily["unknown_price_requests"], 1);
    assert!(node.logs().contains("no configured price"), "{}", node.logs());
}

/// A ledger line as the node writes it.
fn ledger_line(id: &str, date: chrono::NaiveDate, user: &str, cost: i64) -> String {
    let noon = date.and_hms_opt(12, 0, 0).unwrap().and_utc().timestamp_millis();
    json!({
        "id": id, "unix_ms": noon, "tenant": "acme", "user": user, "key_id": format!("{user}-key"),
        "model": "gpt-4o-mini", "provider": "sim-openai", "input_tokens": 3, "output_tokens": 10,
        "cost": cost, "estimated": false, "cache_layer": "none", "saved": 0, "latency_ms": 5
    })
    .to_string()
}

#[tokio::test]
async fn past_days_are_closed_into_files_and_summaries_that_restore_costs_and_budgets() {
    use chrono::Datelike as _;
    let sim = start_sim().await;
    let today = chrono::Utc::now().date_naive();
    let last_month = today - chrono::Days::new(31);
    let this_month = today.with_day(1).unwrap();
    let dir = new_dir();
    let lines = [
        ledger_line("old-1", last_month, "alice", 1_000),
        ledger_line("old-2", last_month, "bob", 2_000),
        ledger_line("month-1", this_month, "alice", 5_000),
    ];
    std::fs::write(dir.join("ledger.jsonl"), lines.join("\n") + "\n").unwrap();
    let config = config_for(sim.addr, |c| c + &tenancy("monthly_budget_usd = 1.0", ""));
    let check = async |node: &Node| {
        let old = admin(node, &format!("/admin/v1/cost/daily?date={last_month}")).await;
        assert_eq!((old["total"]["nano_usd"].as_i64(), old["requests"].as_i64()), (Some(3_000), Some(2)), "{old}");
        let month = admin(node, &format!("/admin/v1/cost/daily?date={this_month}")).await;
        assert_eq!(month["total"]["nano_usd"].as_i64(), Some(5_000), "{month}");
        let budget = admin(node, "/admin/v1/budget?tenant=acme&user=alice").await;
        let monthly = budget["budgets"].as_array().unwrap().iter().find(|line| line["period"] == "monthly").cloned().unwrap_or_default();
        assert_eq!(monthly["spent"]["nano_usd"].as_i64(), Some(5_000), "{budget}");
    };

    let node = Node::start_in(&dir, &config);
    check(&node).await;
    let closed = dir.join(format!("ledger.jsonl.{last_month}"));
    let summary = std::fs::read_to_string(dir.join(format!("ledger.jsonl.{last_month}.summary"))).unwrap();
    assert_eq!(std::fs::read_to_string(&closed).unwrap().lines().count(), 3, "the old file is kept whole");
    assert_eq!(summary.lines().count(), 3, "one line per day, user and model: {summary}");
    assert_eq!(std::fs::read_to_string(dir.join("ledger.jsonl")).unwrap(), "", "a new file for today");

    // Restarted, the node reads the closed file's summary, not its events, and answers the same.
    let dir = node.kill();
    std::fs::write(&closed, "").unwrap();
    let node = Node::start_in(&dir, &config);
    check(&node).await;
}

/// The ids `GET /v1/models` lists with `key` and extra `headers`.
async fn listed(node: &Node, key: Option<&str>, headers: &[(&str, &str)]) -> (u16, Vec<String>) {
    let mut request = http().get(format!("{}/v1/models", node.http));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let ids = body["data"].as_array().map(|data| data.iter().map(|model| model["id"].as_str().unwrap().to_owned()).collect()).unwrap_or_default();
    (status, ids)
}

#[tokio::test]
async fn the_model_list_holds_exactly_what_the_caller_may_use() {
    let sim = start_sim().await;
    // An open node: the tier comes from the header (free without one).
    let open = Node::start(&config_for(sim.addr, |c| c));
    let (status, free) = listed(&open, None, &[]).await;
    assert_eq!(status, 200);
    assert!(!free.contains(&"claude-opus-4".to_owned()), "enterprise only: {free:?}");
    assert!(free.contains(&"gpt-4o-mini".to_owned()) && free.contains(&"fast".to_owned()), "{free:?}");
    for id in &free {
        // Each in its own API: the example's one embedding model embeds, the rest chat.
        let status = if id.starts_with("text-embedding") {
            let body = json!({"model": id, "input": "listed, so usable"});
            http().post(format!("{}/v1/embeddings", open.http)).json(&body).send().await.unwrap().status()
        } else {
            ask(&open, None, &chat_body(id, "listed, so usable")).await.status()
        };
        assert_eq!(status, 200, "{id} is listed but answers {status}");
    }
    let (_, enterprise) = listed(&open, None, &[("x-switchyard-tier", "enterprise")]).await;
    assert!(enterprise.contains(&"claude-opus-4".to_owned()), "{enterprise:?}");
    let (status, _) = listed(&open, None, &[("x-switchyard-tier", "platinum")]).await;
    assert_eq!(status, 400);
    // With keys: the key's own list and tier; no key, no list.
    let keyed = Node::start(&config_for(sim.addr, |c| c + &tenancy("", "")));
    assert_eq!(listed(&keyed, None, &[]).await.0, 401);
    assert_eq!(listed(&keyed, Some(BOB), &[]).await, (200, vec!["gpt-4o-mini".to_owned()]));
    let (_, alice) = listed(&keyed, Some(ALICE), &[("x-switchyard-tier", "enterprise")]).await;
    assert!(!alice.contains(&"claude-opus-4".to_owned()), "a paid key's tier is not raised by a header: {alice:?}");
    assert!(alice.contains(&"smart".to_owned()), "{alice:?}");
}

#[tokio::test]
async fn provider_prompt_cache_reads_and_writes_are_priced_as_the_provider_bills_them() {
    let sim = start_sim().await;
    sim_behaviour(&sim, Some("claude-haiku"), json!({"prompt_cache_read_tokens": 1, "prompt_cache_write_tokens": 1})).await;
    sim_behaviour(&sim, Some("gpt-4o"), json!({"prompt_cache_read_tokens": 2, "prompt_cache_write_tokens": 1})).await;
    // claude-haiku: $0.80 in, $0.08 cache read, $1.00 cache write, $4 out per million tokens;
    // gpt-4o: $2.50 in, $1.25 cached (the example's), $10 out, no write price.
    let config = config_for(sim.addr, |c| {
        c.replace("input_usd_per_mtok = 0.8\n", "input_usd_per_mtok = 0.8\ncached_input_usd_per_mtok = 0.08\ncache_write_input_usd_per_mtok = 1.0\n")
    });
    let node = Node::start(&config);
    let body = |model: &str| json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "one two three"}]});
    // Three input tokens: one fresh, one read, one written; sixteen out.
    let haiku = ask(&node, None, &body("claude-haiku")).await;
    assert_eq!(haiku.status(), 200);
    assert_eq!(told_nano(&haiku), 800 + 80 + 1_000 + 16 * 4_000);
    let usage: Value = haiku.json().await.unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 3, "reads and writes are input tokens: {usage}");
    // OpenAI reports reads only (writes are not billed apart): one fresh, two cached.
    let gpt = ask(&node, None, &body("gpt-4o")).await;
    assert_eq!(told_nano(&gpt), 2_500 + 2 * 1_250 + 16 * 10_000);
    // Streamed, the same.
    let mut streamed = body("claude-haiku");
    streamed["stream"] = json!(true);
    let response = ask(&node, None, &streamed).await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();
    let total = admin(&node, &format!("/admin/v1/cost/daily?date={}", chrono::Utc::now().format("%Y-%m-%d"))).await;
    assert_eq!(total["total"]["nano_usd"], 2 * (800 + 80 + 1_000 + 16 * 4_000) + 2_500 + 2 * 1_250 + 16 * 10_000, "{total}");
    // A cache-write price without the model's prices is a config error naming it.
    let bad = config_for(sim.addr, |c| c.replace("input_usd_per_mtok = 0.8\noutput_usd_per_mtok = 4.0\n", "cache_write_input_usd_per_mtok = 1.0\n"));
    let dir = new_dir();
    std::fs::write(dir.join("bad.toml"), bad).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard")).arg("check-config").arg(dir.join("bad.toml")).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("cache_write_input_usd_per_mtok: needs input_usd_per_mtok"), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn cost_is_broken_down_by_feature_from_the_body_or_the_header() {
    use switchyard_proto::v1::admin_client::AdminClient;
    let sim = start_sim().await;
    let ledger_dir = common::new_dir();
    let node = Node::start_in(&ledger_dir, &config_for(sim.addr, |c| c + &tenancy("", "")));
    let body = |prompt: &str| json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": prompt}]});
    let mut tagged = body("summarise the yard log");
    tagged["metadata"] = json!({"feature": "summaries"});
    let summaries = told_nano(&ask(&node, Some(ALICE), &tagged).await);
    let by_header = http()
        .post(format!("{}/v1/chat/completions", node.http))
        .bearer_auth(BOB)
        .header("x-switchyard-feature", "search")
        .json(&body("find the freight schedule"))
        .send()
        .await
        .unwrap();
    let search = told_nano(&by_header);
    let untagged = told_nano(&ask(&node, Some(ALICE), &body("hello there")).await);
    let mut bad = body("x");
    bad["metadata"] = json!({"feature": "no spaces allowed"});
    let refused = ask(&node, Some(ALICE), &bad).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("metadata.feature"));

    let by_feature = admin(&node, "/admin/v1/cost/by-feature").await;
    let costs: Vec<(Value, i64)> =
        by_feature["features"].as_array().unwrap().iter().map(|row| (row["feature"].clone(), row["cost"]["nano_usd"].as_i64().unwrap())).collect();
    assert_eq!(costs.len(), 3, "{by_feature}");
    for (feature, cost) in [(json!("summaries"), summaries), (json!("search"), search), (Value::Null, untagged)] {
        assert!(costs.contains(&(feature.clone(), cost)), "{feature}: {by_feature}");
    }
    let mut client = AdminClient::connect(node.grpc.clone()).await.unwrap();
    let mut request = tonic::Request::new(v1::CostRangeRequest::default());
    request.metadata_mut().insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    let over_grpc = client.get_cost_by_feature(request).await.unwrap().into_inner();
    assert!(over_grpc.features.iter().any(|row| row.feature == "search" && row.cost.unwrap().nano_usd == search));
    let metrics = http().get(format!("{}/metrics", node.http)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_feature_cost_usd_total{feature=\"summaries\"}"), "{metrics}");
    let ledger = std::fs::read_dir(&ledger_dir).unwrap().flatten().filter(|entry| entry.path().extension().is_some_and(|ext| ext == "jsonl"));
    let lines: String = ledger.map(|entry| std::fs::read_to_string(entry.path()).unwrap()).collect();
    assert_eq!(lines.matches("\"feature\":\"summaries\"").count(), 1, "the ledger keeps the tag: {lines}");
}

/// Makes a file immutable (`chattr +i`, from e2fsprogs) while alive: writes to it fail, through a
/// descriptor opened before too, and for root as well. Undone on drop, so a failing test leaves a
/// removable file behind.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(path: &std::path::Path) -> Self {
        let status = std::process::Command::new("chattr").arg("+i").arg(path).status().expect("chattr runs");
        assert!(status.success(), "chattr +i {}", path.display());
        Self(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_ledger_that_cannot_write_takes_no_request_and_loses_no_cost() {
    let sim = start_sim().await;
    let dir = new_dir();
    let node = Node::start_in(&dir, &config_for(sim.addr, |c| c + &tenancy("", "")));
    let body = |prompt: &str| json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": prompt}]});
    let before = ask(&node, Some(ALICE), &body("first freight")).await;
    assert_eq!(before.status(), 200);
    let ready = |node: &Node| {
        let url = format!("{}/ready", node.http);
        async move {
            let response = http().get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(ready(&node).await.0, 200);

    let immutable = Immutable::new(&dir.join("ledger.jsonl"));
    // Its cost is owed upstream already: the write fails, the client hears so.
    let failed = ask(&node, Some(ALICE), &body("second freight")).await;
    assert_eq!(failed.status(), 500);
    assert!(failed.text().await.unwrap().contains("cost ledger"));
    // Then nothing more is taken, and the node says it is not ready.
    let refused = ask(&node, Some(ALICE), &body("third freight")).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.text().await.unwrap().contains("the cost ledger cannot write"));
    let (status, text) = ready(&node).await;
    assert_eq!(status, 503);
    assert!(text.starts_with("cost ledger cannot write"), "{text}");
    assert_eq!(common::sim_calls(&sim, "gpt-4o-mini").await, 2, "the refused request reached no provider");

    drop(immutable);
    // The syncing thread writes the failed line again within its interval.
    let mut status = 0;
    for _ in 0..100 {
        status = ready(&node).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "ready again once the file takes writes");
    assert_eq!(ask(&node, Some(ALICE), &body("fourth freight")).await.status(), 200);
    let ledger = std::fs::read_to_string(dir.join("ledger.jsonl")).unwrap();
    assert_eq!(ledger.lines().count(), 3, "every request that reached the provider is recorded: {ledger}");
    let recorded: i64 = ledger.lines().map(|line| serde_json::from_str::<Value>(line).unwrap()["cost"].as_i64().unwrap()).sum();
    let by_model = admin(&node, "/admin/v1/cost/by-model").await;
    assert_eq!(by_model["models"][0]["cost"]["nano_usd"].as_i64(), Some(recorded), "{by_model}");
    assert!(recorded > 0);
}
