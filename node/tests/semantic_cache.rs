//! The semantic cache end to end, with the local embedding model: a paraphrase is answered from
//! the cache and a near-miss is not, over both front doors; streaming replay; tenant and
//! conversation isolation; invalidation; and snapshots surviving a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, chat_body, config_for, grpc_request, sim_calls, start_sim};
use serde_json::{Value, json};
use switchyard_proto::v1;

/// The example config with the semantic layer on and the exact layer off, so every hit here is
/// the semantic layer's.
fn semantic_config(sim: std::net::SocketAddr) -> String {
    config_for(sim, |c| c.replace("[semantic_cache]\nenabled = false ", "[semantic_cache]\nenabled = true "))
}

async fn ask(node: &Node, body: &Value, bearer: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(format!("{}/v1/chat/completions", node.http)).json(body);
    if let Some(key) = bearer {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default()
}

async fn text(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_paraphrase_hits_and_a_different_question_calls_the_upstream() {
    let sim = start_sim().await;
    let node = Node::start(&semantic_config(sim.addr));
    let first = ask(&node, &chat_body("gpt-4o-mini", "How do I learn Python quickly?"), None).await;
    assert_eq!(header(&first, "x-switchyard-cache"), "none");
    let first_text = text(first).await;
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 1);

    let paraphrase = ask(&node, &chat_body("gpt-4o-mini", "How can I learn Python fast?"), None).await;
    let layer = header(&paraphrase, "x-switchyard-cache");
    assert!(layer.starts_with("semantic; similarity=0."), "{layer}");
    assert!(!header(&paraphrase, "x-switchyard-cache-entry").is_empty());
    assert_eq!(header(&paraphrase, "x-switchyard-cost-usd"), "0.000000000");
    assert_eq!(text(paraphrase).await, first_text, "the cached answer, not a new one");
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 1, "the hit never reached the upstream");

    // The gRPC front door reports the similarity and the entry.
    let mut client = node.grpc_client().await;
    let request = v1::GenerateRequest { model: "gpt-4o-mini".into(), ..grpc_request("How do I quickly learn Python?") };
    let answer = client.generate(request).await.unwrap().into_inner();
    assert_eq!(answer.cache_layer(), v1::CacheLayer::Semantic);
    assert!(answer.cache_similarity.unwrap() > 0.8, "{:?}", answer.cache_similarity);
    assert!(!answer.cache_entry.is_empty());
    assert_eq!(answer.text, first_text);

    // A different question in the same context is a miss: the upstream answers it.
    let other = ask(&node, &chat_body("gpt-4o-mini", "How do I learn Java quickly?"), None).await;
    assert_eq!(header(&other, "x-switchyard-cache"), "none", "learning Java is not learning Python");
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 2);

    // The miss's answer is stored after it was sent: give the store a moment to land.
    for _ in 0..50 {
        if common::metric(&node, "switchyard_cache_entries{layer=\"semantic\"}").await >= 2.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let metrics = reqwest::get(format!("{}/metrics", node.http)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_cache_lookups_total{layer=\"semantic\",result=\"hit\"} 2"), "{metrics}");
    assert!(metrics.contains("switchyard_cache_lookups_total{layer=\"semantic\",result=\"miss\"} 2"), "{metrics}");
    assert!(metrics.contains("switchyard_cache_entries{layer=\"semantic\"} 2"), "{metrics}");
    assert!(metrics.contains("switchyard_semantic_cache_similarity_count 2"), "{metrics}");
    assert!(metrics.contains("switchyard_cache_hit_ratio{layer=\"semantic\"} 0.5"), "{metrics}");
    assert!(metrics.contains("switchyard_embedding_duration_seconds_count 4"), "{metrics}");
    assert!(!metrics.contains("switchyard_embedding_batch_size_count 0"), "{metrics}");
}

#[tokio::test]
async fn a_route_that_skips_the_layer_is_neither_looked_up_nor_stored() {
    let sim = start_sim().await;
    let config = semantic_config(sim.addr).replace("skip_routes = []", "skip_routes = [\"gpt-4o-mini\"]");
    let node = Node::start(&config);
    for prompt in ["How do I learn Python quickly?", "How can I learn Python fast?"] {
        let response = ask(&node, &chat_body("gpt-4o-mini", prompt), None).await;
        assert_eq!(header(&response, "x-switchyard-cache"), "none", "{prompt}");
    }
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 2, "the paraphrase went upstream");
    // Another model in the same node still goes through the layer.
    for prompt in ["How do I learn Python quickly?", "How can I learn Python fast?"] {
        ask(&node, &chat_body("gpt-4o", prompt), None).await;
    }
    assert_eq!(sim_calls(&sim, "gpt-4o").await, 1, "the paraphrase hit for gpt-4o");
    let metrics = reqwest::get(format!("{}/metrics", node.http)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_cache_lookups_total{layer=\"semantic\",result=\"skipped\"} 2"), "{metrics}");
    assert!(metrics.contains("switchyard_cache_entries{layer=\"semantic\"} 1"), "only gpt-4o's answer is stored: {metrics}");
    assert!(metrics.contains("switchyard_embedding_duration_seconds_count 2"), "the skipped route embedded nothing: {metrics}");
}

#[tokio::test]
async fn a_near_miss_pair_from_qqp_does_not_hit() {
    let sim = start_sim().await;
    let node = Node::start(&semantic_config(sim.addr));
    let (stored, near_miss) = NEAR_MISS;
    ask(&node, &chat_body("gpt-4o-mini", stored), None).await;
    let response = ask(&node, &chat_body("gpt-4o-mini", near_miss), None).await;
    assert_eq!(header(&response, "x-switchyard-cache"), "none", "{stored:?} must not answer {near_miss:?}");
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 2);
}

/// A pair of qqp-dev labelled as different questions (`"duplicate": false`), copied here so the
/// test needs nothing beside the project. They differ in one place name: their MiniLM cosine is
/// 0.94, above the plain-cosine threshold for precision 0.80 (0.91), so a cosine-only cache would
/// serve one for the other; the shipped policy scores the pair 0.39.
const NEAR_MISS: (&str, &str) =
    ("Is there a Drug and Alcohol Rehab Center in Denali County AK?", "Is there a Drug and Alcohol Rehab Center in Anchorage County AK?");

#[tokio::test]
async fn a_semantic_hit_is_replayed_as_a_stream() {
    let sim = start_sim().await;
    let node = Node::start(&semantic_config(sim.addr));
    let mut body = chat_body("claude-haiku", "What is the boiling point of water at sea level?");
    body["stream"] = json!(true);
    let live = ask(&node, &body, None).await.text().await.unwrap();
    body["messages"][0]["content"] = json!("At sea level, what is the boiling point of water?");
    let replay = ask(&node, &body, None).await;
    assert!(header(&replay, "x-switchyard-cache").starts_with("semantic"), "{}", header(&replay, "x-switchyard-cache"));
    assert_eq!(header(&replay, "content-type"), "text/event-stream");
    let replayed = replay.text().await.unwrap();
    assert!(replayed.ends_with("data: [DONE]\n\n"), "{replayed}");
    assert_eq!(common::sse_content(&replayed), common::sse_content(&live));
    assert_eq!(sim_calls(&sim, "claude-haiku").await, 1);
}

#[tokio::test]
async fn tenants_and_conversations_never_share_entries() {
    let sim = start_sim().await;
    let node = Node::start(&(semantic_config(sim.addr) + common::TWO_TENANTS));
    let question = chat_body("gpt-4o-mini", "What were our quarterly revenue numbers?");
    let paraphrase = chat_body("gpt-4o-mini", "What were our revenue numbers for the quarter?");
    assert_eq!(header(&ask(&node, &question, Some("sk-alice")).await, "x-switchyard-cache"), "none");
    assert!(header(&ask(&node, &paraphrase, Some("sk-alice")).await, "x-switchyard-cache").starts_with("semantic"));
    assert_eq!(header(&ask(&node, &question, Some("sk-carol")).await, "x-switchyard-cache"), "none", "another tenant's entry is never served");

    // The same last turn after a different conversation is a different question.
    let follow_up = |earlier: &str| {
        json!({"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": earlier},
            {"role": "assistant", "content": "Here it is."},
            {"role": "user", "content": "Can you explain that in more detail?"}
        ]})
    };
    assert_eq!(header(&ask(&node, &follow_up("Tell me about tax law."), Some("sk-alice")).await, "x-switchyard-cache"), "none");
    assert_eq!(header(&ask(&node, &follow_up("Tell me about photosynthesis."), Some("sk-alice")).await, "x-switchyard-cache"), "none");
    assert!(header(&ask(&node, &follow_up("Tell me about tax law."), Some("sk-alice")).await, "x-switchyard-cache").starts_with("semantic"));
}

async fn invalidate(node: &Node, body: Value) {
    let status = reqwest::Client::new().post(format!("{}/admin/v1/cache/invalidate", node.http)).json(&body).send().await.unwrap().status();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn invalidation_reaches_the_semantic_layer() {
    let sim = start_sim().await;
    let node = Node::start(&semantic_config(sim.addr));
    let question = chat_body("gpt-4o-mini", "How tall is Mount Everest?");
    let paraphrase = chat_body("gpt-4o-mini", "What is the height of Mount Everest?");
    let layer = |body: &Value| {
        let (node, body) = (&node, body.clone());
        async move { header(&ask(node, &body, None).await, "x-switchyard-cache") }
    };
    let key = header(&ask(&node, &question, None).await, "x-switchyard-cache-key");
    assert!(layer(&paraphrase).await.starts_with("semantic"));
    invalidate(&node, json!({"key": key})).await;
    assert_eq!(layer(&paraphrase).await, "none", "the stored request's key drops its semantic entry");
    assert!(layer(&question).await.starts_with("semantic"), "the paraphrase's answer was stored in turn");
    invalidate(&node, json!({"model": "gpt-4o-mini"})).await;
    assert_eq!(layer(&question).await, "none");
    invalidate(&node, json!({"tenant": "anonymous"})).await;
    assert_eq!(layer(&paraphrase).await, "none");
    invalidate(&node, json!({"all": true})).await;
    assert_eq!(layer(&question).await, "none");
}

#[tokio::test]
async fn semantic_entries_survive_a_restart() {
    let sim = start_sim().await;
    let config = semantic_config(sim.addr);
    let mut node = Node::start(&config);
    ask(&node, &chat_body("gpt-4o-mini", "How many moons does Jupiter have?"), None).await;
    assert!(node.terminate().success());
    let dir = node.dir().to_owned();
    assert!(std::fs::read_dir(dir.join("semantic")).unwrap().count() > 0, "snapshots written at shutdown");
    let node = Node::start_in(&dir, &config);
    let response = ask(&node, &chat_body("gpt-4o-mini", "How many moons does the planet Jupiter have?"), None).await;
    assert!(header(&response, "x-switchyard-cache").starts_with("semantic"), "restored from the snapshot: {}", header(&response, "x-switchyard-cache"));
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 1);
}

#[tokio::test]
async fn a_workload_replay_scores_hits_by_layer_and_semantic_precision_by_group() {
    use switchyard_loadtest::workload::{self, BuildSettings, Pace, RunSettings, Stop};
    let sim = start_sim().await;
    // Both layers on.
    let node = Node::start(&semantic_config(sim.addr).replace("exact = false ", "exact = true "));
    let dir = common::new_dir();
    let pairs = dir.join("pairs.jsonl");
    let lines: Vec<String> = [
        ("How do I reset my password?", "How can I reset my password?", true),
        ("What is the capital of France?", "Which city is the capital of France?", true),
        ("How do I learn Python quickly?", "What is the fastest way to learn Python?", true),
        ("How do I learn Python?", "How do I learn Java?", false),
        ("What is the best phone under $300?", "What is the best laptop under $300?", false),
    ]
    .iter()
    .map(|(a, b, duplicate)| json!({"a": a, "b": b, "duplicate": duplicate}).to_string())
    .collect();
    std::fs::write(&pairs, lines.join("\n")).unwrap();
    let prompts = dir.join("prompts.json");
    std::fs::write(&prompts, json!([{"prompt": "Write a haiku about trains."}, {"prompt": "Explain TCP slow start."}]).to_string()).unwrap();
    let settings = BuildSettings { count: 40, repeat: 0.3, paraphrase: 0.2, tenants: 1, seed: 3 };
    let built = workload::build_workload(&workload::read_pairs(&pairs).unwrap(), &workload::read_prompts(&prompts).unwrap(), &settings);
    // Forty lines need more fresh prompts than five pairs and two prompts hold: refused, naming why.
    assert!(built.as_ref().err().is_some_and(|error| error.to_string().contains("ran out")), "{built:?}");
    let settings = BuildSettings { count: 14, ..settings };
    let lines = workload::build_workload(&workload::read_pairs(&pairs).unwrap(), &workload::read_prompts(&prompts).unwrap(), &settings).unwrap();
    let file = dir.join("workload.jsonl");
    workload::write_workload(&file, &lines).unwrap();
    let lines = std::sync::Arc::new(workload::read_workload(&file).unwrap());
    let run = RunSettings {
        target: node.http.parse().unwrap(),
        pace: Pace::Closed(1),
        stop: Stop::Requests(28),
        model: "gpt-4o-mini".into(),
        max_tokens: 16,
        keys: Default::default(),
        default_key: None,
        request_timeout: std::time::Duration::from_secs(30),
        max_in_flight: 64,
    };
    let report = workload::run_workload(std::sync::Arc::clone(&lines), run.clone(), |_| {}).await.unwrap();
    assert_eq!((report.requests, report.answered), (28, 28), "{:?}", report.errors);
    // The second pass over the workload is all exact hits, and the first had paraphrases.
    assert!(report.exact_hit_ratio >= 0.5, "{report:?}");
    assert!(report.semantic_hit_ratio > 0.0, "{report:?}");
    assert_eq!(report.semantic_precision, Some(1.0), "no near-miss served another's answer: {report:?}");
    assert!(report.cost_avoided_usd > 0.0 && report.cost_usd > 0.0);
    for layer in ["upstream", "exact", "semantic"] {
        assert!(report.latency_by_layer[layer].count > 0, "{layer}: {report:?}");
    }
    let svg = dir.join("plot.svg");
    workload::plot_svg(&report, &svg).unwrap();
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    assert!(report.markdown("replay").contains("| semantic |"));
    // Over gRPC: the same workload, by now all answered from the caches.
    let grpc = RunSettings { target: node.grpc.replacen("http://", "grpc://", 1).parse().unwrap(), stop: Stop::Requests(14), ..run.clone() };
    let report = workload::run_workload(std::sync::Arc::clone(&lines), grpc, |_| {}).await.unwrap();
    assert_eq!(report.answered, 14, "{:?}", report.errors);
    assert!(report.exact_hit_ratio + report.semantic_hit_ratio > 0.9, "{report:?}");
    // Open loop, straight at the simulator: every answer from the upstream, none from a cache.
    let direct = RunSettings { target: format!("http://{}", sim.addr).parse().unwrap(), pace: Pace::Open(200.0), stop: Stop::Requests(20), ..run };
    let report = workload::run_workload(lines, direct, |_| {}).await.unwrap();
    assert_eq!(report.answered, 20);
    assert_eq!((report.exact_hit_ratio, report.semantic_hit_ratio), (0.0, 0.0));
}

/// The semantic layer's lookups of `result` on `node`.
async fn lookups(node: &Node, result: &str) -> f64 {
    common::metric(node, &format!("switchyard_cache_lookups_total{{layer=\"semantic\",result=\"{result}\"}}")).await
}

#[tokio::test]
async fn a_lookup_past_its_budget_goes_upstream_at_once_and_its_answer_is_still_stored() {
    let sim = start_sim().await;
    // No embedding finishes in a millisecond: every lookup runs out of budget.
    let node = Node::start(&semantic_config(sim.addr).replace("lookup_budget = \"10s\"", "lookup_budget = \"1ms\""));
    let response = ask(&node, &chat_body("gpt-4o-mini", "What is the tallest mountain in Europe?"), None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-switchyard-cache"), "none");
    assert_eq!(lookups(&node, "timeout").await, 1.0);
    // The embedding went on after the request left: the answer is stored under it.
    // At idle priority on a machine busy with other tests' nodes the vector may take a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::metric(&node, "switchyard_semantic_stores_total{result=\"stored\"}").await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the answer was never stored");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(common::metric(&node, "switchyard_cache_entries{layer=\"semantic\"}").await, 1.0);
}

#[tokio::test]
async fn a_saturated_embedder_sheds_lookups_and_every_request_is_answered() {
    let sim = start_sim().await;
    let config = semantic_config(sim.addr).replace("lookup_budget = \"10s\"", "lookup_budget = \"1ms\"").replace("cores = 0", "cores = 1");
    let node = Node::start(&config);
    // Sixteen different questions at once: the first takes the embedder's one lane, and the
    // texts behind it could not be embedded within a millisecond, so they are not started.
    let asks = (0..16).map(|index| {
        let body = chat_body("gpt-4o-mini", &format!("Question number {index}: how far is the moon?"));
        let node = &node;
        async move { ask(node, &body, None).await.status() }
    });
    let statuses = futures::future::join_all(asks).await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    let (shed, timeout) = (lookups(&node, "shed").await, lookups(&node, "timeout").await);
    assert!(shed >= 1.0, "nothing was shed: {timeout} timed out");
    assert_eq!(shed + timeout + lookups(&node, "miss").await, 16.0);
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 16);
}

#[tokio::test]
async fn the_automatic_budget_is_sized_at_start_and_logged() {
    let sim = start_sim().await;
    let node = Node::start(&semantic_config(sim.addr).replace("lookup_budget = \"10s\"", "lookup_budget = \"auto\""));
    let logs = node.logs();
    let line = logs.lines().find(|line| line.contains("semantic cache ready")).unwrap_or_default();
    let entry: Value = serde_json::from_str(line).unwrap_or_default();
    let budget_ms = entry["fields"]["lookup_budget_ms"].as_f64().unwrap_or(0.0);
    assert!((5.0..=250.0).contains(&budget_ms), "{line}");
    let response = ask(&node, &chat_body("gpt-4o-mini", "Where do trains go at night?"), None).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn questions_that_differ_only_in_their_numbers_never_share_an_answer() {
    let sim = start_sim().await;
    let node = Node::start(&semantic_config(sim.addr));
    let first = ask(&node, &chat_body("gpt-4o-mini", "Distinct question 38-541728109: which rail yard handles freight number 842300081?"), None).await;
    assert_eq!(header(&first, "x-switchyard-cache"), "none");
    let other = ask(&node, &chat_body("gpt-4o-mini", "Distinct question 61-1186488970: which rail yard handles freight number 890025528?"), None).await;
    assert_eq!(header(&other, "x-switchyard-cache"), "none", "the vectors are 0.99 alike, the numbers are not");
    let again = ask(&node, &chat_body("gpt-4o-mini", "distinct question 38-541728109: which rail yard handles freight number 842300081"), None).await;
    assert!(header(&again, "x-switchyard-cache").starts_with("semantic"), "the same numbers still hit");
}
