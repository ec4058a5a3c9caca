//! The cluster end to end: real `switchyard` processes on loopback addresses 127.0.0.x joined
//! by ractor_cluster, the upstream simulator, the local embedding model. Three nodes form one
//! cluster from seeds and share one semantic cache; a SIGKILLed node loses no entry and rejoins;
//! scaling out hands partitions over under load; a wrong cookie and a malformed frame are
//! refused without harm to the cluster; a lookup served by another node is one trace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Node, TraceCollector, chat_body, config_for, metric, new_dir, sim_calls, start_sim};
use serde_json::{Value, json};

const COOKIE: &str = "cluster-test-cookie";
/// Heartbeats fast enough for tests: a member is down after a second of silence.
const HEARTBEAT: &str = "200ms";
const DOWN_AFTER: Duration = Duration::from_secs(1);

/// One node's place in the test cluster.
#[derive(Clone)]
struct Member {
    name: String,
    /// The cluster listener, on its own loopback address.
    cluster: SocketAddr,
    /// Where peers dial it: the listener, or a proxy in front of it.
    advertise: SocketAddr,
}

impl Member {
    fn new(name: &str, last_octet: u8) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = SocketAddr::from(([127, 0, 0, last_octet], port));
        Self { name: name.into(), cluster, advertise: cluster }
    }

    /// A member that peers reach through a proxy on 127.0.1.`last_octet` (the same port).
    fn behind_proxy(name: &str, last_octet: u8) -> Self {
        let mut member = Self::new(name, last_octet);
        member.advertise = SocketAddr::from(([127, 0, 1, last_octet], member.cluster.port()));
        member
    }
}

/// The example config with the semantic layer on, the exact layer off (so every hit is the
/// semantic layer's), and a `[cluster]` section.
fn cluster_config(sim: SocketAddr, member: &Member, seeds: &[&Member], cookie_file: &std::path::Path, tweak: &dyn Fn(String) -> String) -> String {
    let seeds: Vec<String> = seeds.iter().map(|seed| format!("\"{}\"", seed.advertise)).collect();
    let cluster = format!(
        "\n[cluster]\nnode_name = \"{}\"\nlisten = \"{}\"\nadvertise = \"{}\"\ncookie_file = \"{}\"\nseeds = [{}]\nheartbeat_interval = \"{HEARTBEAT}\"\ndown_after = \"{}ms\"\ndiscovery_interval = \"2s\"\nremote_lookup_timeout = \"500ms\"\nhandoff_grace = \"5s\"\n",
        member.name,
        member.cluster,
        member.advertise.ip(),
        cookie_file.display(),
        seeds.join(", "),
        DOWN_AFTER.as_millis(),
    );
    tweak(config_for(sim, |c| c.replace("[semantic_cache]\nenabled = false ", "[semantic_cache]\nenabled = true ")) + &cluster)
}

/// Starts `member` in `dir` with `cookie`.
fn start_member(sim: SocketAddr, member: &Member, seeds: &[&Member], dir: &std::path::Path, cookie: &str) -> Node {
    start_member_with(sim, member, seeds, dir, cookie, &|config| config)
}

/// Starts `member` with `tweak` applied to its config (the `[cluster]` table comes last).
fn start_member_with(sim: SocketAddr, member: &Member, seeds: &[&Member], dir: &std::path::Path, cookie: &str, tweak: &dyn Fn(String) -> String) -> Node {
    let cookie_file = dir.join("cookie");
    std::fs::write(&cookie_file, cookie).unwrap();
    Node::start_in(dir, &cluster_config(sim, member, seeds, &cookie_file, tweak))
}

/// `GET path` of the node's Admin API, with the admin key (which the nodes with tenancy require).
async fn admin_get(node: &Node, path: &str) -> Value {
    reqwest::Client::new().get(format!("{}{path}", node.http)).bearer_auth("sk-admin").send().await.unwrap().json().await.unwrap()
}

/// The node's cluster status.
async fn status(node: &Node) -> Value {
    admin_get(node, "/admin/v1/cluster").await
}

/// Every member but `members[index]`: its seeds.
fn others(members: &[Member], index: usize) -> Vec<&Member> {
    members.iter().enumerate().filter(|(other, _)| *other != index).map(|(_, member)| member).collect()
}

/// Starts every member, each seeded with the others and its config passed through `tweak`, and
/// waits until each sees them all.
async fn start_all(sim: SocketAddr, members: &[Member], tweak: &dyn Fn(String) -> String) -> Vec<Node> {
    let nodes: Vec<Node> = (0..members.len()).map(|index| start_member_with(sim, &members[index], &others(members, index), &new_dir(), COOKIE, tweak)).collect();
    let names: Vec<&str> = members.iter().map(|member| member.name.as_str()).collect();
    for node in &nodes {
        settled(node, &names).await;
    }
    nodes
}

fn alive(status: &Value) -> Vec<String> {
    status["members"].as_array().unwrap().iter().filter(|member| member["state"] == "alive").map(|member| member["node"].as_str().unwrap().to_owned()).collect()
}

/// Waits until `check` holds for the node's status, or fails after `within`, showing the status.
async fn wait_for(node: &Node, within: Duration, what: &str, check: impl Fn(&Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let status = status(node).await;
        if check(&status) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what} not seen within {within:?}: {status:#}\n{}", node.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the node sees exactly `members` alive and has no handoff in progress.
async fn settled(node: &Node, members: &[&str]) {
    let mut expected: Vec<String> = members.iter().map(|member| (*member).to_owned()).collect();
    expected.sort();
    wait_for(node, Duration::from_secs(20), "a settled cluster", |status| {
        let mut seen = alive(status);
        seen.sort();
        seen == expected && status["handoffs_in_progress"].as_array().unwrap().is_empty()
    })
    .await;
}

/// A question in context `context`: a system prompt of its own, so contexts spread over the
/// partitions.
fn question(context: usize, prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": format!("You answer for team number {context}.")},
        {"role": "user", "content": prompt},
    ]})
}

async fn ask(node: &Node, body: &Value) -> reqwest::Response {
    reqwest::Client::new().post(format!("{}/v1/chat/completions", node.http)).json(body).send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// Asks `node` for every context's question and returns each answer's cache entry (empty on a
/// miss).
async fn entries(node: &Node, contexts: std::ops::Range<usize>, prompt: &str) -> Vec<String> {
    let mut found = Vec::new();
    for context in contexts {
        let response = ask(node, &question(context, prompt)).await;
        assert_eq!(response.status(), 200);
        let layer = header(&response, "x-switchyard-cache");
        found.push(if layer.starts_with("semantic") { header(&response, "x-switchyard-cache-entry") } else { String::new() });
    }
    found
}

/// Stores an answer for every context through `node` and waits until another node finds them
/// all (inserts travel as casts).
async fn store(node: &Node, other: &Node, contexts: std::ops::Range<usize>, prompt: &str) -> Vec<String> {
    for context in contexts.clone() {
        let response = ask(node, &question(context, prompt)).await;
        assert_eq!(header(&response, "x-switchyard-cache"), "none", "context {context} was stored fresh");
    }
    let started = Instant::now();
    loop {
        let found = entries(other, contexts.clone(), prompt).await;
        if found.iter().all(|entry| !entry.is_empty()) {
            return found;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "entries not all visible through another node: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Requests sent round-robin to `nodes` until stopped: (sent, failed).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(urls: Vec<String>) -> Self {
        let (stop, sent, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let task = {
            let (stop, sent, failed) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let url = &urls[n % urls.len()];
                    let body = question(1000 + n % 50, &format!("Steady question number {n}?"));
                    let ok = client.post(format!("{url}/v1/chat/completions")).json(&body).send().await.is_ok_and(|response| response.status() == 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        };
        Self { stop, sent, failed, task }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

#[tokio::test]
async fn three_nodes_from_seeds_share_one_semantic_cache() {
    let sim = start_sim().await;
    let (a, b, c) = (Member::new("node-a", 2), Member::new("node-b", 3), Member::new("node-c", 4));
    let (dir_a, dir_b, dir_c) = (new_dir(), new_dir(), new_dir());
    let node_a = start_member(sim.addr, &a, &[&b, &c], &dir_a, COOKIE);
    let node_b = start_member(sim.addr, &b, &[&a], &dir_b, COOKIE);
    let node_c = start_member(sim.addr, &c, &[&a], &dir_c, COOKIE);
    let all = ["node-a", "node-b", "node-c"];
    for node in [&node_a, &node_b, &node_c] {
        let took = wait_for(node, Duration::from_secs(5), "three members", |status| alive(status).len() == 3).await;
        println!("three members seen after {took:?}");
    }
    for node in [&node_a, &node_b, &node_c] {
        settled(node, &all).await;
    }
    let mut owned = 0;
    for node in [&node_a, &node_b, &node_c] {
        owned += status(node).await["partitions_owned"].as_array().unwrap().len();
    }
    assert_eq!(owned, 128, "64 partitions, two owners each");

    // Answered through A, a paraphrase hits through C and through B, naming the same entry.
    let stored = store(&node_a, &node_c, 0..12, "How do I learn Python quickly?").await;
    let through_b = entries(&node_b, 0..12, "How can I learn Python fast?").await;
    let through_c = entries(&node_c, 0..12, "How can I learn Python fast?").await;
    assert_eq!(through_b, through_c, "one entry, the same name everywhere");
    assert!(through_b.iter().all(|entry| entry.split_once('-').is_some_and(|(partition, _)| partition.parse::<u32>().is_ok_and(|p| p < 64))), "{through_b:?}");
    assert_eq!(stored.len(), 12);
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 12, "only the first question of each context reached the upstream");
    let answered = metric(&node_c, "switchyard_cluster_remote_lookups_total{outcome=\"answered\"}").await;
    assert!(answered > 0.0, "some of C's lookups went to another node");
    let ready = reqwest::get(format!("{}/ready", node_b.http)).await.unwrap().text().await.unwrap();
    assert!(ready.contains("cluster: 3 of 3 members alive"), "{ready}");

    // A malformed frame on the cluster port drops only that connection.
    {
        use tokio::io::AsyncWriteExt as _;
        let mut garbage = tokio::net::TcpStream::connect(a.cluster).await.unwrap();
        garbage.write_all(&[0, 0, 0, 0, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
        garbage.write_all(&[0xff; 64]).await.unwrap();
    }
    // A node with the wrong cookie is refused and logged, and serves alone, degraded.
    let intruder = Member::new("node-x", 5);
    let node_x = start_member(sim.addr, &intruder, &[&a], &new_dir(), "not-the-cookie");
    wait_for(&node_a, Duration::from_secs(10), "the refusal logged", |_| node_a.logs().contains("cluster peer refused")).await;
    tokio::time::sleep(DOWN_AFTER).await;
    assert_eq!(alive(&status(&node_a).await).len(), 3, "the intruder never joined");
    let x_status = status(&node_x).await;
    assert_eq!(alive(&x_status), vec!["node-x".to_owned()]);
    assert_eq!(x_status["degraded"], true);
    let ready = reqwest::get(format!("{}/ready", node_x.http)).await.unwrap();
    assert_eq!(ready.status(), 200, "a node alone still serves");
    assert!(ready.text().await.unwrap().contains("degraded"));
    assert_eq!(ask(&node_x, &chat_body("gpt-4o-mini", "hello")).await.status(), 200);
    // The cluster still serves from its cache after both.
    assert_eq!(entries(&node_b, 0..3, "How can I learn Python fast?").await, through_b[..3].to_vec());

    // Invalidation through one node reaches every node's shards.
    let invalidated = reqwest::Client::new().post(format!("{}/admin/v1/cache/invalidate", node_c.http)).json(&json!({"all": true})).send().await.unwrap();
    assert_eq!(invalidated.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(entries(&node_a, 0..12, "How can I learn Python fast?").await.iter().all(String::is_empty), "every entry dropped everywhere");
}

#[tokio::test]
async fn a_killed_node_loses_no_entry_and_rejoins() {
    let sim = start_sim().await;
    let (a, b, c) = (Member::new("node-a", 12), Member::new("node-b", 13), Member::new("node-c", 14));
    let (dir_a, dir_b, dir_c) = (new_dir(), new_dir(), new_dir());
    let node_a = start_member(sim.addr, &a, &[&b, &c], &dir_a, COOKIE);
    let node_b = start_member(sim.addr, &b, &[&a, &c], &dir_b, COOKIE);
    let node_c = start_member(sim.addr, &c, &[&a, &b], &dir_c, COOKIE);
    let all = ["node-a", "node-b", "node-c"];
    for node in [&node_a, &node_b, &node_c] {
        settled(node, &all).await;
    }
    let owned_by_c = status(&node_c).await["partitions_owned"].clone();
    let stored = store(&node_a, &node_b, 0..24, "What is the capital of France?").await;

    let load = Load::start(vec![node_a.http.clone(), node_b.http.clone()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    let dir_c = node_c.kill();
    for node in [&node_a, &node_b] {
        wait_for(node, Duration::from_secs(10), "node-c down", |status| {
            status["members"].as_array().unwrap().iter().any(|member| member["node"] == "node-c" && member["state"] == "down")
                || !alive(status).contains(&"node-c".to_owned())
        })
        .await;
    }
    let seen_down = killed_at.elapsed();
    // Down after `down_after` of silence: at most one heartbeat interval more after the kill,
    // and the polling's own time.
    assert!(seen_down <= DOWN_AFTER + Duration::from_secs(1), "survivors saw the kill after {seen_down:?}");
    for node in [&node_a, &node_b] {
        settled(node, &["node-a", "node-b"]).await;
    }
    // Every entry stored before the kill still hits, through either survivor.
    assert_eq!(entries(&node_a, 0..24, "What is the capital of France?").await, stored);
    assert_eq!(entries(&node_b, 0..24, "What is the capital of France?").await, stored);
    let (sent, failed) = load.finish().await;
    assert!(sent > 10, "the load ran ({sent} requests)");
    assert_eq!(failed, 0, "requests through the survivors never failed ({sent} sent)");

    // Restarted with its directory, it rejoins and takes its partitions back.
    let node_c = start_member(sim.addr, &c, &[&a, &b], &dir_c, COOKIE);
    for node in [&node_a, &node_b, &node_c] {
        settled(node, &all).await;
    }
    assert_eq!(status(&node_c).await["partitions_owned"], owned_by_c, "the same members give the same map");
    assert_eq!(entries(&node_c, 0..24, "What is the capital of France?").await, stored);
}

#[tokio::test]
async fn scaling_out_hands_partitions_over_without_failing_a_request() {
    let sim = start_sim().await;
    // A listens on 127.0.0.1, so the new node can find it by a name: `localhost` resolves to it
    // (and to ::1, where nothing listens), as a headless Service's name resolves to its pods.
    let (a, b, c) = (Member::new("node-a", 1), Member::new("node-b", 23), Member::new("node-c", 24));
    let node_a = start_member(sim.addr, &a, &[&b], &new_dir(), COOKIE);
    let node_b = start_member(sim.addr, &b, &[&a], &new_dir(), COOKIE);
    for node in [&node_a, &node_b] {
        settled(node, &["node-a", "node-b"]).await;
    }
    let stored = store(&node_a, &node_b, 0..24, "Why is the sky blue?").await;

    let load = Load::start(vec![node_a.http.clone(), node_b.http.clone()]);
    let by_name = |config: String| config.replace(&format!("seeds = [\"{}\"]", a.advertise), &format!("seeds = [\"localhost:{}\"]", a.cluster.port()));
    let node_c = start_member_with(sim.addr, &c, &[&a], &new_dir(), COOKIE, &by_name);
    for node in [&node_a, &node_b, &node_c] {
        settled(node, &["node-a", "node-b", "node-c"]).await;
    }
    let (sent, failed) = load.finish().await;
    assert_eq!(failed, 0, "no request failed while the cluster grew ({sent} sent)");
    assert!(!status(&node_c).await["partitions_owned"].as_array().unwrap().is_empty());
    // The new node serves every entry, from its own loaded partitions or its peers'.
    assert_eq!(entries(&node_c, 0..24, "Why is the sky blue?").await, stored);
    assert!(metric(&node_c, "switchyard_cluster_handoff_bytes_total").await > 0.0, "partitions were pulled");
}

#[tokio::test]
async fn a_lookup_served_by_another_node_is_one_trace() {
    let (collector, otlp) = TraceCollector::start().await;
    let sim = start_sim().await;
    let (a, b) = (Member::new("node-a", 32), Member::new("node-b", 33));
    // One owner per partition, so half of B's lookups must cross to A.
    let traced = |service: &'static str| {
        move |config: String| {
            config.replace("otlp_endpoint = \"\"", &format!("otlp_endpoint = \"http://{otlp}\""))
                .replace("service_name = \"switchyard\"", &format!("service_name = \"{service}\""))
                + "replication = 1\n"
        }
    };
    let node_a = start_member_with(sim.addr, &a, &[&b], &new_dir(), COOKIE, &traced("switchyard-a"));
    let node_b = start_member_with(sim.addr, &b, &[&a], &new_dir(), COOKIE, &traced("switchyard-b"));
    for node in [&node_a, &node_b] {
        settled(node, &["node-a", "node-b"]).await;
    }
    let (mut node_a, mut node_b) = (node_a, node_b);
    let owned_by_b: Vec<u64> = status(&node_b).await["partitions_owned"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert!(owned_by_b.len() < 64, "replication 1 splits the partitions");
    store(&node_a, &node_b, 0..12, "How do I learn Python quickly?").await;

    let mut remote_traces = Vec::new();
    for context in 0..12 {
        let trace_id = format!("{:032x}", 0x5eed_0000 + context);
        let response = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", node_b.http))
            .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
            .json(&question(context, "How can I learn Python fast?"))
            .send()
            .await
            .unwrap();
        let entry = header(&response, "x-switchyard-cache-entry");
        let partition: u64 = entry.split_once('-').expect("a semantic hit").0.parse().unwrap();
        if !owned_by_b.contains(&partition) {
            remote_traces.push(trace_id);
        }
    }
    assert!(!remote_traces.is_empty(), "some contexts live on partitions only A owns");
    // Shutdown flushes the exporters; the collector runs on this thread meanwhile.
    let stopped = tokio::task::spawn_blocking(move || [node_a.terminate(), node_b.terminate()]).await.unwrap();
    assert!(stopped.iter().all(std::process::ExitStatus::success));
    let spans = collector.spans.lock().unwrap().clone();
    for trace_id in &remote_traces {
        let in_trace: Vec<(&str, &str)> = spans.iter().filter(|span| span.trace_id == *trace_id).map(|span| (span.service.as_str(), span.name.as_str())).collect();
        for expected in [("switchyard-b", "semantic_cache"), ("switchyard-b", "remote_lookup"), ("switchyard-a", "remote_shard_lookup")] {
            assert!(in_trace.contains(&expected), "trace {trace_id} lacks {expected:?}: {in_trace:?}; all: {:?}", spans.iter().map(|span| (&span.trace_id[..8], &span.service, &span.name)).collect::<Vec<_>>());
        }
    }
}

/// A TCP proxy in front of one member's cluster port. While `cut` is set, no byte moves on a
/// connection that involves `isolated`: every connection to it (when this proxy fronts it) and
/// every connection from it (recognised by the name it introduces itself with), as if the
/// network dropped every packet; the connections stay open, as they would.
fn proxy(member: &Member, isolated: &'static str, cut: tokio::sync::watch::Receiver<bool>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (listen, target, fronts_isolated) = (member.advertise, member.cluster, member.name == isolated);
    let listener = std::net::TcpListener::bind(listen).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, first: Vec<u8>, involved: bool, mut cut: tokio::sync::watch::Receiver<bool>) {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut pending = first;
        loop {
            while involved && *cut.borrow_and_update() {
                if cut.changed().await.is_err() {
                    return;
                }
            }
            if !pending.is_empty() && to.write_all(&pending).await.is_err() {
                return;
            }
            let Ok(read) = from.read(&mut buffer).await else { return };
            if read == 0 {
                return;
            }
            pending = buffer[..read].to_vec();
        }
    }
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(target).await else { continue };
            let cut = cut.clone();
            tokio::spawn(async move {
                // The dialling node introduces itself first, as `<name>@<host>`.
                let mut first = vec![0u8; 64 * 1024];
                let read = match tokio::time::timeout(Duration::from_secs(5), client.read(&mut first)).await {
                    Ok(Ok(read)) if read > 0 => read,
                    _ => return,
                };
                first.truncate(read);
                let marker = format!("{isolated}@");
                let involved = fronts_isolated || first.windows(marker.len()).any(|window| window == marker.as_bytes());
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, first, involved, cut.clone()));
                tokio::spawn(pump(server_read, client_write, Vec::new(), involved, cut));
            });
        }
    });
}

#[tokio::test]
async fn a_node_cut_off_keeps_serving_and_the_cluster_converges_after_healing() {
    let sim = start_sim().await;
    let (a, b, c) = (Member::behind_proxy("node-a", 41), Member::behind_proxy("node-b", 42), Member::behind_proxy("node-c", 43));
    let (cut, cut_watch) = tokio::sync::watch::channel(false);
    for member in [&a, &b, &c] {
        proxy(member, "node-c", cut_watch.clone());
    }
    let node_a = start_member(sim.addr, &a, &[&b, &c], &new_dir(), COOKIE);
    let node_b = start_member(sim.addr, &b, &[&a, &c], &new_dir(), COOKIE);
    let node_c = start_member(sim.addr, &c, &[&a, &b], &new_dir(), COOKIE);
    let all = ["node-a", "node-b", "node-c"];
    for node in [&node_a, &node_b, &node_c] {
        settled(node, &all).await;
    }
    let mut owned_before = Vec::new();
    for node in [&node_a, &node_b, &node_c] {
        owned_before.push(status(node).await["partitions_owned"].clone());
    }
    let stored = store(&node_a, &node_c, 0..12, "How do I learn Python quickly?").await;

    cut.send(true).unwrap();
    for node in [&node_a, &node_b] {
        settled(node, &["node-a", "node-b"]).await;
    }
    settled(&node_c, &["node-c"]).await;
    assert_eq!(status(&node_c).await["degraded"], true);
    // Both sides keep serving: the majority from its cache, the cut-off node on its own.
    assert_eq!(entries(&node_b, 0..12, "How can I learn Python fast?").await, stored);
    for node in [&node_a, &node_c] {
        assert_eq!(ask(node, &chat_body("gpt-4o-mini", "Asked during the partition?")).await.status(), 200);
    }

    cut.send(false).unwrap();
    for node in [&node_a, &node_b, &node_c] {
        settled(node, &all).await;
    }
    // One map again: the same members give every node the partitions it had before.
    for (node, before) in [&node_a, &node_b, &node_c].into_iter().zip(&owned_before) {
        assert_eq!(&status(node).await["partitions_owned"], before);
    }
    for node in [&node_a, &node_b, &node_c] {
        assert_eq!(entries(node, 0..12, "How can I learn Python fast?").await, stored);
    }
}

/// Makes a CA and a node certificate with the shipped script.
fn certificates(dir: &std::path::Path) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cluster-certs.sh");
    let made = std::process::Command::new(script).arg(dir).output().expect("the certificate script runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
}

/// A config tweak that turns on `[cluster.tls]` with the certificates in `dir`.
fn with_tls(dir: &std::path::Path) -> impl Fn(String) -> String + use<> {
    let dir = dir.to_owned();
    move |config: String| {
        format!(
            "{config}[cluster.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
            dir.join("node.pem").display(),
            dir.join("node-key.pem").display(),
            dir.join("ca.pem").display()
        )
    }
}

#[tokio::test]
async fn nodes_with_tls_form_one_cluster_and_refuse_peers_without_its_ca() {
    let sim = start_sim().await;
    let (cluster_ca, other_ca) = (new_dir(), new_dir());
    certificates(&cluster_ca);
    certificates(&other_ca);
    let tls = with_tls(&cluster_ca);
    let (a, b, c) = (Member::new("node-a", 42), Member::new("node-b", 43), Member::new("node-c", 44));
    // B and C know only A: they find each other from A's heartbeats, without ractor's
    // transitive dials (plain TCP, off under TLS).
    let node_a = start_member_with(sim.addr, &a, &[], &new_dir(), COOKIE, &tls);
    let node_b = start_member_with(sim.addr, &b, &[&a], &new_dir(), COOKIE, &tls);
    let node_c = start_member_with(sim.addr, &c, &[&a], &new_dir(), COOKIE, &tls);
    let all = ["node-a", "node-b", "node-c"];
    for node in [&node_a, &node_b, &node_c] {
        settled(node, &all).await;
    }
    let stored = store(&node_b, &node_c, 0..12, "How do I bake sourdough bread?").await;
    assert_eq!(entries(&node_a, 0..12, "How can I bake sourdough bread?").await, stored);
    assert!(metric(&node_a, "switchyard_cluster_remote_lookups_total{outcome=\"answered\"}").await > 0.0, "lookups crossed nodes over TLS");

    // The right cookie is not enough: a certificate from another CA, or none, is refused.
    let foreign = Member::new("node-x", 45);
    let node_x = start_member_with(sim.addr, &foreign, &[&a], &new_dir(), COOKIE, &with_tls(&other_ca));
    let plain = Member::new("node-y", 46);
    let node_y = start_member(sim.addr, &plain, &[&a], &new_dir(), COOKIE);
    wait_for(&node_x, Duration::from_secs(10), "the refusal logged", |_| node_x.logs().contains("the TLS handshake failed")).await;
    wait_for(&node_y, Duration::from_secs(10), "the refusal logged", |_| node_y.logs().contains("cluster peer refused")).await;
    tokio::time::sleep(DOWN_AFTER).await;
    for node in [&node_a, &node_b, &node_c] {
        let mut seen = alive(&status(node).await);
        seen.sort();
        assert_eq!(seen, all, "neither outsider joined");
    }
    for outsider in [&node_x, &node_y] {
        assert_eq!(status(outsider).await["degraded"], true, "an outsider serves alone");
    }
}

/// Gives every provider of the config an API key read from a file in `dir`: `<provider>-<node>`,
/// so the simulator can tell the nodes' calls apart.
fn with_provider_keys(dir: &std::path::Path, node: &str) -> impl Fn(String) -> String + use<> {
    let dir = dir.to_owned();
    let node = node.to_owned();
    move |config: String| {
        let mut out = config;
        for provider in ["openai", "anthropic", "vllm"] {
            let file = dir.join(format!("{provider}-key"));
            std::fs::write(&file, format!("{provider}-{node}")).unwrap();
            out = out.replace(&format!("name = \"{provider}\"\n"), &format!("name = \"{provider}\"\napi_key_file = \"{}\"\n", file.display()));
        }
        out
    }
}

/// Asks `node` for the `smart` route (claude-sonnet-4 on anthropic, then gpt-4o on openai) and
/// returns the model that served.
async fn smart_model(node: &Node, n: usize) -> String {
    let body = json!({"model": "smart", "messages": [{"role": "user", "content": format!("Plan number {n}, please.")}]});
    let response = ask(node, &body).await;
    assert_eq!(response.status(), 200);
    header(&response, "x-switchyard-model")
}

#[tokio::test]
async fn a_provider_failing_for_one_node_is_avoided_by_every_node_within_two_seconds() {
    let sim = start_sim().await;
    let (a, b, c) = (Member::new("node-a", 52), Member::new("node-b", 53), Member::new("node-c", 54));
    let (dir_a, dir_b, dir_c) = (new_dir(), new_dir(), new_dir());
    let node_a = start_member_with(sim.addr, &a, &[&b, &c], &dir_a, COOKIE, &with_provider_keys(&dir_a, "node-a"));
    let node_b = start_member_with(sim.addr, &b, &[&a], &dir_b, COOKIE, &with_provider_keys(&dir_b, "node-b"));
    let node_c = start_member_with(sim.addr, &c, &[&a], &dir_c, COOKIE, &with_provider_keys(&dir_c, "node-c"));
    let all = ["node-a", "node-b", "node-c"];
    for node in [&node_a, &node_b, &node_c] {
        settled(node, &all).await;
    }
    for node in [&node_b, &node_c] {
        assert_eq!(smart_model(node, 0).await, "claude-sonnet-4", "healthy: the route's first model");
    }

    // Anthropic fails every call carrying node A's key, and only those.
    let rule = json!({"caller": "anthropic-node-a", "fault": {"type": "status", "status": 503}});
    let set = reqwest::Client::new().put(format!("http://{}/_sim/behaviour", sim.addr)).json(&rule).send().await.unwrap();
    assert_eq!(set.status(), 200, "{}", set.text().await.unwrap());
    // A's first call fails (and falls back): its error rate for anthropic is now high.
    let failed_at = Instant::now();
    assert_eq!(smart_model(&node_a, 1).await, "gpt-4o", "A falls back while anthropic fails for it");
    // B and C have never seen anthropic fail, yet route around it.
    let mut n = 2;
    for node in [&node_b, &node_c] {
        while smart_model(node, n).await != "gpt-4o" {
            n += 1;
            assert!(failed_at.elapsed() < Duration::from_secs(2), "another node still routes to anthropic {:?} after A saw it fail", failed_at.elapsed());
        }
        let steered = failed_at.elapsed();
        println!("steered after {steered:?}");
        assert!(steered < Duration::from_secs(2), "took {steered:?}");
        assert!(metric(node, "switchyard_cluster_health_messages_total{direction=\"received\"}").await > 0.0);
    }

    // A circuit opened on A is known on B and C, whose own circuits stay closed. (A's requests
    // name the model, which is tried whatever its health, until its breaker opens.)
    let claude = |n: usize| json!({"model": "claude-sonnet-4", "messages": [{"role": "user", "content": format!("Direct question {n}.")}]});
    loop {
        assert_eq!(ask(&node_a, &claude(n)).await.status(), 200, "served by the fallback");
        n += 1;
        if metric(&node_a, "switchyard_circuit_state{provider=\"anthropic\"}").await == 1.0 {
            break;
        }
        assert!(n < 100, "A's anthropic circuit never opened");
    }
    let opened_at = Instant::now();
    for node in [&node_b, &node_c] {
        while metric(node, "switchyard_cluster_providers_open_elsewhere").await != 1.0 {
            assert!(opened_at.elapsed() < Duration::from_secs(2), "A's open circuit not known after {:?}", opened_at.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metric(node, "switchyard_circuit_state{provider=\"anthropic\"}").await, 0.0, "its own circuit stayed closed");
        assert_eq!(smart_model(node, n).await, "gpt-4o");
    }
}

/// Alice's and Carol's keys, each with a daily budget of `budget_nano`, Dave's limited to 60
/// requests a minute, and the admin key; the semantic layer off, so every request is charged.
fn users_with_budget(budget_nano: i64) -> impl Fn(String) -> String + use<> {
    move |config: String| {
        let config = config.replace("[semantic_cache]\nenabled = true ", "[semantic_cache]\nenabled = false ");
        let budget = budget_nano as f64 / 1e9;
        let key = |id: &str, sha: &str, user: &str| {
            format!("\n[[tenancy.keys]]\nid = \"{id}\"\nkey_sha256 = \"{sha}\"\ntenant = \"acme\"\nuser = \"{user}\"\ntier = \"paid\"\ndaily_budget_usd = {budget}\n")
        };
        format!(
            "{config}\n[tenancy]\nadmin_key_sha256 = \"46db358cf47822ef17fa2cea371f2dd33512fb20ae94b092a5efb955d515b410\"\n{}{}",
            key("alice-key", "099295a3784e1bd368dc348843a7398c1931b6b8ec2504c73e91ed2040bdc46c", "alice"),
            key("carol-key", "1d0e7afc963efdf084924177294d02cc02800e540bf46e7b846529396be4eddf", "carol"),
        ) + "\n[[tenancy.keys]]\nid = \"dave-key\"\nkey_sha256 = \"501152388012ffde91fdb04068985171cc8ca85fbe18bd233679b25712b4b64a\"\ntenant = \"acme\"\nuser = \"dave\"\ntier = \"paid\"\nrequests_per_minute = 60\n"
    }
}

/// Sends `count` concurrent requests with `key`, round-robin over `urls`, the `n`th after
/// `n × spacing`; returns each one's status (0: no answer) and the cost the client was told
/// (0 unless served).
async fn burst(urls: &[String], key: &str, count: usize, spacing: Duration) -> Vec<(u16, i64)> {
    let client = reqwest::Client::new();
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "one two three"}]});
    let tasks: Vec<_> = (0..count)
        .map(|n| {
            let (client, body, url, key) = (client.clone(), body.clone(), urls[n % urls.len()].clone(), key.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(spacing * u32::try_from(n).unwrap()).await;
                match client.post(format!("{url}/v1/chat/completions")).bearer_auth(key).json(&body).send().await {
                    Ok(response) if response.status() == 200 => {
                        let usd: f64 = response.headers()["x-switchyard-cost-usd"].to_str().unwrap().parse().unwrap();
                        (200, (usd * 1e9).round() as i64)
                    }
                    Ok(response) => (response.status().as_u16(), 0),
                    Err(_) => (0, 0),
                }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

/// Served requests and the cost their clients were told.
fn served_and_spent(outcomes: &[(u16, i64)]) -> (usize, i64) {
    (outcomes.iter().filter(|(status, _)| *status == 200).count(), outcomes.iter().map(|(_, cost)| cost).sum())
}

/// What `user`'s daily budget line has spent, as `node` reports it.
async fn budget_spent(node: &Node, user: &str) -> i64 {
    let report = admin_get(node, &format!("/admin/v1/budget?tenant=acme&user={user}")).await;
    report["budgets"][0]["spent"]["nano_usd"].as_i64().unwrap_or_else(|| panic!("{report}"))
}

/// One request costs 3 × 150 + 16 × 600 = 10,050 nanodollars (its reservation is no less).
const REQUEST_NANO: i64 = 10_050;

#[tokio::test]
async fn a_burst_over_three_nodes_spends_one_budget_even_when_its_owner_is_killed() {
    let sim = start_sim().await;
    let sim_url = format!("http://{}/_sim/behaviour", sim.addr);
    reqwest::Client::new().put(&sim_url).json(&json!({"ttft_ms": 150})).send().await.unwrap();
    let budget_nano = 50 * REQUEST_NANO;
    let members = [Member::new("node-a", 62), Member::new("node-b", 63), Member::new("node-c", 64)];
    let names: Vec<&str> = members.iter().map(|member| member.name.as_str()).collect();
    let mut nodes: Vec<Option<Node>> = start_all(sim.addr, &members, &users_with_budget(budget_nano)).await.into_iter().map(Some).collect();
    let urls: Vec<String> = nodes.iter().flatten().map(|node| node.http.clone()).collect();

    // 300 at once over three nodes, a budget covering 50.
    let outcomes = burst(&urls, "sk-alice", 300, Duration::ZERO).await;
    let (served, spent) = served_and_spent(&outcomes);
    println!("burst over 3 nodes: served {served}, spent {spent} of {budget_nano}");
    assert!(outcomes.iter().all(|(status, _)| *status == 200 || *status == 429), "{outcomes:?}");
    assert!(spent <= budget_nano, "spent {spent} of {budget_nano}");
    assert!(served <= 50);
    assert!(served >= 40, "served only {served}: allowances were stranded");
    for node in nodes.iter().flatten() {
        assert!(metric(node, "switchyard_budget_lease_asks_total{outcome=\"granted\"}").await > 0.0, "every node spent from a lease");
        assert_eq!(budget_spent(node, "alice").await, spent, "any node answers for the whole cluster");
    }

    // Carol's budget, with its owner SIGKILLed mid-burst: requests in flight on it may fail; the
    // survivors go on within their allowances, the standby takes over the table, and the total
    // never passes the budget.
    let owner = switchyard_actors::cluster::ring::owners_of_key("budget:user:acme/carol", &names, 1)[0].to_owned();
    let owner_index = names.iter().position(|name| *name == owner).unwrap();
    let alice_spent = spent;
    let killer = {
        let owner_node = nodes[owner_index].take().unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            owner_node.kill()
        })
    };
    let outcomes = burst(&urls, "sk-carol", 300, Duration::from_millis(10)).await;
    let killed_dir = killer.await.unwrap();
    let (mut served, mut spent) = served_and_spent(&outcomes);
    let failed = outcomes.iter().filter(|(status, _)| *status != 200 && *status != 429).count();
    println!("burst with the owner {owner} killed: served {served}, spent {spent}, {failed} failed (sent to the killed node)");
    assert!(spent <= budget_nano, "spent {spent} of {budget_nano}");
    // Then through the survivors, one at a time, until the budget refuses.
    let survivors: Vec<String> = nodes.iter().flatten().map(|node| node.http.clone()).collect();
    for survivor in nodes.iter().flatten() {
        settled(survivor, &names.iter().copied().filter(|name| *name != owner).collect::<Vec<_>>()).await;
    }
    loop {
        let outcome = burst(&survivors[..1], "sk-carol", 1, Duration::ZERO).await[0];
        if outcome.0 == 429 {
            break;
        }
        assert_eq!(outcome.0, 200, "the survivors serve within the budget");
        served += 1;
        spent += outcome.1;
        assert!(served <= 50);
    }
    println!("then served {served} in all, spent {spent} of {budget_nano}");
    assert!(spent <= budget_nano, "spent {spent} of {budget_nano}");
    // What the killed node held and had not spent stays counted (it may have spent it): that,
    // and no more, is what its death costs the budget.
    assert!(served >= 30, "served only {served}");
    // The standby took the line over: it rebuilt the table (from its copy and the survivors'
    // reports) before granting.
    let remaining: Vec<&str> = names.iter().copied().filter(|name| *name != owner).collect();
    let new_owner = switchyard_actors::cluster::ring::owners_of_key("budget:user:acme/carol", &remaining, 1)[0];
    let new_owner_node = nodes[names.iter().position(|name| *name == new_owner).unwrap()].as_ref().unwrap();
    assert!(new_owner_node.logs().contains("lease table rebuilt"), "{}", new_owner_node.logs());
    assert!(metric(new_owner_node, "switchyard_budget_lease_grants_total").await > 0.0);

    // Restarted with its ledger, the killed node is part of the sums again: a cost query through
    // any node equals what every client was told.
    nodes[owner_index] = Some(start_member_with(sim.addr, &members[owner_index], &others(&members, owner_index), &killed_dir, COOKIE, &users_with_budget(budget_nano)));
    for node in nodes.iter().flatten() {
        settled(node, &names).await;
    }
    for node in nodes.iter().flatten() {
        assert_eq!(budget_spent(node, "carol").await, spent, "carol's spend, summed over the three ledgers");
        assert_eq!(budget_spent(node, "alice").await, alice_spent);
    }
}

#[tokio::test]
async fn a_key_limited_to_60_a_minute_gets_60_a_minute_through_three_nodes() {
    let sim = start_sim().await;
    let members = [Member::new("node-a", 72), Member::new("node-b", 73), Member::new("node-c", 74)];
    let nodes = start_all(sim.addr, &members, &users_with_budget(1_000_000_000)).await;
    let urls: Vec<String> = nodes.iter().map(|node| node.http.clone()).collect();
    // Requests round-robin over the three nodes, four at a time, for a minute. Alone, a node
    // lets through the minute's quota at once (60) and then one a second: 120 in the first
    // minute, 60 in each after. Three nodes limiting on their own would let 360 through.
    let window = Duration::from_secs(60);
    let started = Instant::now();
    let mut served = 0usize;
    let mut limited = 0usize;
    let mut n = 0usize;
    while started.elapsed() < window {
        let outcomes = burst(&urls[n % 3..=n % 3], "sk-dave", 4, Duration::ZERO).await;
        n += 1;
        for (status, _) in outcomes {
            match status {
                200 => served += 1,
                429 => limited += 1,
                other => panic!("status {other}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The bound: the quota, one per second since, and a batch (one permit) per node.
    let most = 60.0 + elapsed.ceil() + 3.0;
    println!("served {served}, limited {limited} in {elapsed:.1} s (at most {most})");
    assert!(served as f64 >= 60.0 + 0.8 * elapsed.floor(), "the quota and then about one a second were served: {served}");
    assert!(served as f64 <= most, "served {served} > {most}");
    assert!(limited > 0);
    for node in &nodes {
        assert!(metric(node, "switchyard_rate_limit_asks_total{outcome=\"granted\"}").await > 0.0);
    }
}

/// The total a node reports for `date` (the whole cluster's).
async fn daily_total(node: &Node, date: &str) -> i64 {
    let report = admin_get(node, &format!("/admin/v1/cost/daily?date={date}")).await;
    report["total"]["nano_usd"].as_i64().unwrap_or_else(|| panic!("{report}"))
}

#[tokio::test]
async fn spend_across_midnight_is_neither_lost_nor_counted_twice() {
    const DAY_MS: i64 = 86_400_000;
    let sim = start_sim().await;
    let sim_url = format!("http://{}/_sim/behaviour", sim.addr);
    reqwest::Client::new().put(&sim_url).json(&json!({"ttft_ms": 30})).send().await.unwrap();
    // Every node's budget clock is shifted so that its midnight comes 20 s from now.
    let now = chrono::Utc::now().timestamp_millis();
    let midnight = (now / DAY_MS + 1) * DAY_MS;
    let offset = midnight - 20_000 - now;
    let node_now = move || chrono::Utc::now().timestamp_millis() + offset;
    let budget_nano = 30 * REQUEST_NANO;
    let shifted = move |config: String| users_with_budget(budget_nano)(config).replace("[tenancy]\n", &format!("[tenancy]\nbudget_clock_offset_ms = {offset}\n"));
    let members = [Member::new("node-a", 82), Member::new("node-b", 83), Member::new("node-c", 84)];
    let nodes = start_all(sim.addr, &members, &shifted).await;
    assert!(node_now() < midnight - 2_000, "the nodes took too long to start for the test's clock");
    let urls: Vec<String> = nodes.iter().map(|node| node.http.clone()).collect();
    let (mut served, mut told) = (0usize, 0i64);
    while node_now() < midnight + 3_000 {
        let outcomes = burst(&urls, "sk-alice", 6, Duration::ZERO).await;
        assert!(outcomes.iter().all(|(status, _)| *status == 200 || *status == 429), "{outcomes:?}");
        let (more, cost) = served_and_spent(&outcomes);
        served += more;
        told += cost;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let day = |ms: i64| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).unwrap().format("%Y-%m-%d").to_string();
    let (before, after) = (day(midnight - 1), day(midnight));
    println!("served {served}, told {told} across {before} and {after}");
    for node in &nodes {
        let (first, second) = (daily_total(node, &before).await, daily_total(node, &after).await);
        assert!(first > 0 && second > 0, "spend on both days: {first} and {second}");
        assert_eq!(first + second, told, "no spend lost or counted twice");
        assert!(first <= budget_nano && second <= budget_nano, "each day within its budget: {first}, {second}");
    }
    assert!(served <= 60);
}

#[tokio::test]
async fn budget_alerts_fire_once_on_the_cluster_spend_from_the_line_owner() {
    let (webhook, received) = common::alert_sink().await;

    let sim = start_sim().await;
    let budget_nano = 10 * REQUEST_NANO;
    let alerting = move |config: String| {
        users_with_budget(budget_nano)(config).replace("[tenancy]\n", &format!("[tenancy]\nalert_thresholds = [20, 50]\nalert_webhook = \"{webhook}\"\n"))
    };
    let members = [Member::new("node-a", 92), Member::new("node-b", 93), Member::new("node-c", 94)];
    let names: Vec<&str> = members.iter().map(|member| member.name.as_str()).collect();
    let nodes = start_all(sim.addr, &members, &alerting).await;
    let urls: Vec<String> = nodes.iter().map(|node| node.http.clone()).collect();
    // Two requests through each node: each node alone spent 20% of the budget, the cluster 60%.
    let outcomes = burst(&urls, "sk-alice", 6, Duration::from_millis(50)).await;
    assert!(outcomes.iter().all(|(status, _)| *status == 200), "{outcomes:?}");
    let owner = switchyard_actors::cluster::ring::owners_of_key("budget:user:acme/alice", &names, 1)[0];
    let owner_node = &nodes[names.iter().position(|name| *name == owner).unwrap()];
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Later reports must not alert again.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let alerts = received.lock().unwrap().clone();
    let mut thresholds: Vec<u64> = alerts.iter().map(|alert| alert["threshold_percent"].as_u64().unwrap()).collect();
    thresholds.sort_unstable();
    assert_eq!(thresholds, vec![20, 50], "each threshold once, on the cluster's spend: {alerts:?}");
    assert!(alerts.iter().all(|alert| alert["scope"] == "user acme/alice" && alert["limit_usd"].as_f64() == Some(budget_nano as f64 / 1e9)), "{alerts:?}");
    let crossed = |node: &Node| node.logs().lines().filter(|line| line.contains("budget threshold crossed")).count();
    assert_eq!(crossed(owner_node), 2, "the owner alerts");
    assert_eq!(nodes.iter().map(crossed).sum::<usize>(), 2, "and no other node");
    let gauge = "switchyard_budget_utilisation{period=\"daily\",scope=\"user acme/alice\"}";
    let utilisation = metric(owner_node, gauge).await;
    assert!((utilisation - 0.6).abs() < 1e-9, "the owner exports the cluster's utilisation: {utilisation}");
    for node in nodes.iter().filter(|node| node.http != owner_node.http) {
        let metrics = reqwest::get(format!("{}/metrics", node.http)).await.unwrap().text().await.unwrap();
        assert!(!metrics.contains(gauge), "only the owner exports a line's utilisation");
    }
}

/// The metric names a PromQL-bearing file names: every `switchyard_…` token.
fn metric_names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("switchyard_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alert_rules_query_is_one_the_nodes_export() {
    let sim = start_sim().await;
    let members = [Member::new("node-a", 102), Member::new("node-b", 103), Member::new("node-c", 104)];
    // Both cache layers on, Alice with a budget, Erin with a budget smaller than one request.
    let tweak = |config: String| {
        let config = users_with_budget(1_000_000_000)(config)
            .replace("[semantic_cache]\nenabled = false ", "[semantic_cache]\nenabled = true ")
            .replace("exact = false ", "exact = true ");
        config + "\n[[tenancy.keys]]\nid = \"erin-key\"\nkey_sha256 = \"1ba73778f50a157e4cdb409ed336a04eb85d97750c6972fbd452182df0defef0\"\ntenant = \"acme\"\nuser = \"erin\"\ntier = \"paid\"\ndaily_budget_usd = 0.000001\n"
    };
    let nodes = start_all(sim.addr, &members, &tweak).await;
    let client = reqwest::Client::new();
    let send = |node: &Node, key: &str, body: Value| client.post(format!("{}/v1/chat/completions", node.http)).bearer_auth(key.to_owned()).json(&body).send();
    // Misses, exact hits, semantic lookups (some on another node's partitions), streams, and a
    // budget refusal, through every node.
    for (n, node) in nodes.iter().enumerate() {
        for context in 0..6 {
            let body = question(context + 10 * n, "How do I reset my password?");
            assert_eq!(send(node, "sk-alice", body.clone()).await.unwrap().status(), 200);
            assert_eq!(send(node, "sk-alice", body).await.unwrap().status(), 200);
            let paraphrase = question(context + 10 * n, "How can I reset my password?");
            assert_eq!(send(node, "sk-alice", paraphrase).await.unwrap().status(), 200);
        }
        let stream = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": format!("stream {n}")}]});
        let streamed = send(node, "sk-alice", stream).await.unwrap();
        assert_eq!(streamed.status(), 200);
        streamed.text().await.unwrap();
        assert_eq!(send(node, "sk-erin", json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})).await.unwrap().status(), 429);
    }
    // Spend reaches the budget lines' owners, who export utilisation.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let mut exported = std::collections::BTreeSet::new();
    for node in &nodes {
        let metrics = reqwest::get(format!("{}/metrics", node.http)).await.unwrap().text().await.unwrap();
        for line in metrics.lines().filter(|line| !line.starts_with('#')) {
            if let Some(name) = line.split(['{', ' ']).next() {
                exported.insert(name.to_owned());
            }
        }
    }
    let dashboard = include_str!("../../deploy/grafana/dashboards/switchyard.json");
    let parsed: Value = serde_json::from_str(dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|panels| panels.len() > 10));
    for (file, text) in [("deploy/grafana/dashboards/switchyard.json", dashboard), ("deploy/prometheus/alerts.yml", include_str!("../../deploy/prometheus/alerts.yml"))] {
        let named = metric_names_in(text);
        assert!(named.len() > 5, "{file} names {named:?}");
        let missing: Vec<&String> = named.iter().filter(|name| !exported.contains(*name)).collect();
        assert!(missing.is_empty(), "{file} queries metrics the nodes do not export: {missing:?}\nexported: {exported:?}");
    }
}
