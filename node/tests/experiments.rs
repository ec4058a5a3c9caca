//! A/B tests and canary splits end to end against the upstream simulator: each answer names its
//! variant (header, gRPC field, cost event); a user keeps one variant; a canary whose model fails
//! is rolled back by itself; the Admin API reports per-variant figures and changes the weights
//! without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, config_for, grpc_request, sim_behaviour, start_sim};
use serde_json::{Value, json};

const EXPERIMENT: &str = r#"
[[experiments]]
name = "canary-4o"
route = "gpt-4o-mini"
variants = [
  { name = "control", model = "gpt-4o-mini", weight = 50 },
  { name = "canary", model = "gpt-4o", weight = 50 },
]
rollback = { margin = 0.2, window = "1m", min_requests = 10 }
"#;

async fn ask(node: &Node, user: &str) -> reqwest::Response {
    let body = json!({"model": "gpt-4o-mini", "user": user, "messages": [{"role": "user", "content": format!("hello from {user}")}]});
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", node.http))
        .header("x-switchyard-tier", "paid")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn variant(node: &Node, user: &str) -> String {
    let response = ask(node, user).await;
    assert_eq!(response.status(), 200, "{user}");
    response.headers()["x-switchyard-experiment"].to_str().unwrap().to_owned()
}

async fn report(node: &Node) -> Value {
    reqwest::get(format!("{}/admin/v1/experiments", node.http)).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn variants_are_sticky_reported_and_a_failing_canary_rolls_itself_back() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |config| format!("{config}\n{EXPERIMENT}")));
    let mut seen = std::collections::BTreeMap::new();
    for user in 0..20 {
        let user = format!("user-{user}");
        let first = variant(&node, &user).await;
        assert_eq!(variant(&node, &user).await, first, "{user} keeps a variant");
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), ["canary-4o/canary", "canary-4o/control"], "{seen:?}");
    let mut client = node.grpc_client().await;
    let mut request = grpc_request("hello over grpc");
    request.model = "gpt-4o-mini".into();
    let over_grpc = client.generate(request).await.unwrap().into_inner();
    assert!(over_grpc.experiment.starts_with("canary-4o/"), "{}", over_grpc.experiment);
    let before = report(&node).await;
    assert_eq!(before["experiments"][0]["variants"][1]["errors"], 0, "{before}");

    // The canary's model starts refusing every request (a 422 is the request's fault as far as
    // the provider's health goes, so the control, on the same provider, is untouched).
    sim_behaviour(&sim, Some("gpt-4o"), json!({"fault": {"type": "status", "status": 422}})).await;
    let mut refused = 0;
    for user in 100..200 {
        refused += u32::from(ask(&node, &format!("user-{user}")).await.status() != 200);
    }
    assert!((1..30).contains(&refused), "the canary failed until it was rolled back: {refused}");
    let after = report(&node).await;
    let canary = &after["experiments"][0]["variants"][1];
    assert_eq!(canary["weight"], 0, "{after}");
    assert!(after["experiments"][0]["rolled_back"].as_str().unwrap().contains("canary"), "{after}");
    assert_eq!(canary["errors"].as_u64().unwrap(), u64::from(refused), "{after}");
    for user in 200..230 {
        assert_eq!(variant(&node, &format!("user-{user}")).await, "canary-4o/control", "rolled back: everyone on the control");
    }
    let metrics = reqwest::get(format!("{}/metrics", node.http)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_experiment_rollbacks_total{experiment=\"canary-4o\",variant=\"canary\"} 1"), "{metrics}");

    // Promote the canary by hand once it is healthy again: no restart.
    sim_behaviour(&sim, Some("gpt-4o"), json!({})).await;
    let promote = reqwest::Client::new()
        .post(format!("{}/admin/v1/experiments/canary-4o/weights", node.http))
        .json(&json!({"weights": {"control": 0, "canary": 100}}))
        .send()
        .await
        .unwrap();
    assert_eq!(promote.status(), 200);
    for user in 300..310 {
        assert_eq!(variant(&node, &format!("user-{user}")).await, "canary-4o/canary");
    }
    for (path, body, status) in [
        ("canary-4o", json!({"weights": {"control": 1, "nope": 1}}), 400),
        ("canary-4o", json!({"weights": {"control": 0, "canary": 0}}), 400),
        ("canary-4o", json!({"weights": {"control": 1}}), 400),
        ("nope", json!({"weights": {"control": 1, "canary": 1}}), 404),
    ] {
        let response = reqwest::Client::new().post(format!("{}/admin/v1/experiments/{path}/weights", node.http)).json(&body).send().await.unwrap();
        assert_eq!(response.status(), status, "{body}");
    }
    assert_eq!(report(&node).await["experiments"][0]["variants"][1]["weight"], 100, "a refused change changed nothing");
    let cost: Value = reqwest::get(format!("{}/admin/v1/cost/by-model", node.http)).await.unwrap().json().await.unwrap();
    assert!(cost.to_string().contains("gpt-4o"), "{cost}");
    let logs = node.logs();
    assert!(logs.contains("\"experiment\":\"canary-4o/control\""), "the audit line names the variant");
}

#[tokio::test]
async fn weights_change_over_grpc_and_by_config_reload_without_a_restart() {
    use switchyard_proto::v1;
    use switchyard_proto::v1::admin_client::AdminClient;
    let sim = start_sim().await;
    let config = config_for(sim.addr, |config| format!("{config}\n{EXPERIMENT}"));
    let node = Node::start(&config);
    let mut admin = AdminClient::connect(node.grpc.clone()).await.unwrap();
    let weights = |control: u32, canary: u32| v1::SetExperimentWeightsRequest {
        experiment: "canary-4o".into(),
        weights: [("control".to_owned(), control), ("canary".to_owned(), canary)].into(),
    };
    admin.set_experiment_weights(weights(0, 1)).await.unwrap();
    assert_eq!(variant(&node, "user-1").await, "canary-4o/canary");
    let refused = admin.set_experiment_weights(weights(0, 0)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let over_grpc = admin.get_experiments(v1::ExperimentsRequest {}).await.unwrap().into_inner();
    let canary = &over_grpc.experiments[0].variants[1];
    assert_eq!((canary.name.as_str(), canary.weight, canary.requests), ("canary", 1, 1));

    // The file now says everyone on the control: SIGHUP applies it in place.
    node.reload_with(&config.replace("weight = 50 }", "weight = 0 }").replacen("weight = 0 }", "weight = 100 }", 1));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while report(&node).await["experiments"][0]["variants"][0]["weight"] != 100 {
        assert!(std::time::Instant::now() < deadline, "the reload was not applied: {}", node.logs());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(variant(&node, "user-1").await, "canary-4o/control");
    // A file that does not validate changes nothing.
    node.reload_with(&config.replace("weight = 50 }", "weight = 0 }"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !node.logs().contains("config reload refused") {
        assert!(std::time::Instant::now() < deadline, "no refusal logged: {}", node.logs());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(report(&node).await["experiments"][0]["variants"][0]["weight"], 100);
}
