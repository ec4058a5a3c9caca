//! Speed of the cluster's semantic paths, between two real processes joined by ractor_cluster
//! over loopback TCP.
//!
//! `serve` starts a node (membership, one `CacheShard` for partition 0 filled with `--entries`
//! entries of 384-dimensional random unit vectors, the cache peer) and waits.
//! `measure` starts a second node that joins it, then:
//! 1. pulls partition 0 into a shard of its own, as a new owner's handoff does: time, bytes,
//!    entries;
//! 2. runs `--lookups` lookups one at a time against its own copy (a local shard round trip) and
//!    against the serving node (a remote lookup through its cache peer), with the same vectors:
//!    p50/p99 of each, and the CPU both processes spent per remote lookup (`--server-pid`);
//! 3. prints the size of a heartbeat and of a lookup and its reply, for sizing larger clusters.
//!
//! With `SWITCHYARD_BENCH_TLS_DIR` set to a directory made by `deploy/cluster-certs.sh`, both
//! processes talk mutual TLS.
//!
//! ```sh
//! cargo build --release -p switchyard-actors --example cluster-bench
//! target/release/examples/cluster-bench serve 127.0.0.2:7400 10000 &
//! target/release/examples/cluster-bench measure 127.0.0.3:7401 127.0.0.2:7400 2000 $!
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use ractor::{Actor, ActorRef};
use switchyard_actors::cache::CachedAnswer;
use switchyard_actors::cache::semantic::peer::{CachePeer, CachePeerMessage};
use switchyard_actors::cache::semantic::placement::pull_partition;
use switchyard_actors::cache::semantic::shard::{CacheShard, SemanticEntry, ShardMessage, ShardSettings};
use switchyard_actors::cluster::directory::Directory;
use switchyard_actors::cluster::membership::{ClusterView, Membership, MembershipArgs, MembershipSettings};
use switchyard_actors::cluster::tls::{self, ClusterTls, TlsFiles};
use switchyard_actors::cluster::wire;
use switchyard_actors::metrics::Metrics;

const DIMENSIONS: usize = 384;
const COOKIE: &str = "cluster-bench";
/// The same vectors in both processes: a fixed seed.
const SEED: u64 = 0x5eed;

fn settings(name: &str, listen: SocketAddr, seeds: Vec<String>) -> anyhow::Result<MembershipSettings> {
    Ok(MembershipSettings {
        node_name: name.into(),
        listen,
        advertise_host: listen.ip().to_string(),
        cookie: COOKIE.into(),
        seeds,
        discovery_interval: Duration::from_secs(5),
        heartbeat_interval: Duration::from_secs(1),
        down_after: Duration::from_secs(3),
        max_frame_bytes: 16 * 1024 * 1024,
        tls: tls()?,
    })
}

/// Mutual TLS from the certificates in `SWITCHYARD_BENCH_TLS_DIR`, when set.
fn tls() -> anyhow::Result<Option<ClusterTls>> {
    let Some(dir) = std::env::var_os("SWITCHYARD_BENCH_TLS_DIR").map(std::path::PathBuf::from) else {
        return Ok(None);
    };
    let files = TlsFiles { cert: dir.join("node.pem"), key: dir.join("node-key.pem"), ca: dir.join("ca.pem"), server_name: tls::DEFAULT_SERVER_NAME.into() };
    Ok(Some(ClusterTls::load(&files).context("the bench's TLS certificates")?))
}

async fn join(name: &str, listen: SocketAddr, seeds: Vec<String>, metrics: &Arc<Metrics>) -> anyhow::Result<()> {
    let (view, _watch) = tokio::sync::watch::channel(ClusterView::alone(name, true));
    let args = MembershipArgs { settings: settings(name, listen, seeds)?, view, metrics: Arc::clone(metrics) };
    Actor::spawn(Some(wire::actor_name("membership", name)), Membership, args).await?;
    Ok(())
}

async fn shard() -> anyhow::Result<ActorRef<ShardMessage>> {
    let settings = ShardSettings { partition: 0, dimensions: DIMENSIONS, capacity: 10_000_000, held: Default::default(), data_dir: None, metrics: None };
    Ok(Actor::spawn(None, CacheShard, settings).await?.0)
}

/// A deterministic stream of unit vectors.
struct Vectors(u64);

impl Vectors {
    fn next_unit(&mut self) -> Vec<f32> {
        let mut vector: Vec<f32> = (0..DIMENSIONS)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 % 2_000) as f32 / 1_000.0 - 1.0
            })
            .collect();
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        vector.iter_mut().for_each(|v| *v /= norm);
        vector
    }
}

fn entry(position: usize) -> SemanticEntry {
    let now = switchyard_actors::budget::period::now_ms();
    SemanticEntry {
        uid: position as u64 + 1,
        context_key: "bench".into(),
        prompt: format!("What does a railway switchyard do with train number {position}?"),
        exact_key: None,
        answer: CachedAnswer {
            embeddings: Vec::new(),
            tenant: "bench".into(),
            route: "auto".into(),
            text: "A switchyard sorts railway cars onto tracks by destination, so that trains can be assembled and split. ".repeat(3),
            tool_calls: Vec::new(),
            model: "gpt-4o-mini".into(),
            provider: "openai".into(),
            input_tokens: 14,
            output_tokens: 60,
            finish_reason: "stop".into(),
            cost_nano_usd: Some(42_000),
            created_ms: now,
        },
        created_ms: now,
        ttl_ms: 24 * 3_600_000,
        hits: 0,
        last_used_ms: now,
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() as f64 * fraction) as usize).min(sorted.len() - 1)]
}

/// CPU time (user + system) of process `pid`, from /proc.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("no process {pid}"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0) + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    // Linux reports CPU time in clock ticks of 1/100 s.
    Ok(Duration::from_millis(ticks * 10))
}

async fn serve(listen: SocketAddr, entries: usize) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new()?);
    let shard = shard().await?;
    let mut vectors = Vectors(SEED);
    let started = Instant::now();
    for position in 0..entries {
        shard.cast(ShardMessage::Insert { entry: Box::new(entry(position)), vector: vectors.next_unit() })?;
    }
    let held = ractor::call!(shard, ShardMessage::Len)?;
    eprintln!("serve: {held} entries in partition 0 after {:?}", started.elapsed());
    let directory = Arc::new(ArcSwap::from_pointee(Directory::alone("bench-server", 1, 1, Arc::new(vec![shard]))));
    CachePeer::start("bench-server", directory).await?;
    join("bench-server", listen, Vec::new(), &metrics).await?;
    eprintln!("serve: ready on {listen}");
    std::future::pending::<()>().await;
    Ok(())
}

async fn measure(listen: SocketAddr, seed: String, lookups: usize, server_pid: Option<u32>) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new()?);
    join("bench-client", listen, vec![seed], &metrics).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let peer: ActorRef<CachePeerMessage> = loop {
        let found = ractor::pg::get_members(&wire::CACHE_PEER_GROUP.to_owned()).into_iter().find(|member| !member.get_id().is_local());
        if let Some(peer) = found {
            break peer.into();
        }
        if Instant::now() > deadline {
            bail!("the serving node's cache peer never appeared");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let local = shard().await?;
    let started = Instant::now();
    let (entries, bytes) = pull_partition(&peer, &local, 0, Some(&metrics)).await?;
    let took = started.elapsed();
    println!("handoff: {entries} entries, {bytes} bytes in {:.0} ms ({:.1} MB/s)", took.as_secs_f64() * 1e3, bytes as f64 / took.as_secs_f64() / 1e6);

    let mut vectors = Vectors(SEED ^ 0xfeed);
    let queries: Vec<Vec<f32>> = (0..lookups).map(|_| vectors.next_unit()).collect();
    let (mut local_times, mut remote_times) = (Vec::with_capacity(lookups), Vec::with_capacity(lookups));
    for query in &queries {
        let call = Instant::now();
        let found = ractor::call_t!(local, |reply| ShardMessage::Lookup { context_key: "bench".into(), vector: query.clone(), count: 4, min_similarity: -1.0, reply }, 5_000)?;
        local_times.push(call.elapsed());
        assert!(!found.is_empty());
    }
    let (client_cpu, server_cpu) = (cpu_time(std::process::id())?, server_pid.map(cpu_time).transpose()?);
    let remote_started = Instant::now();
    let mut request_bytes = 0;
    let mut reply_bytes = 0;
    for query in &queries {
        let lookup = wire::ShardLookup { traceparent: String::new(), partition: 0, context_key: "bench".into(), vector: query.clone(), count: 4, min_similarity: -1.0 };
        let bytes = wire::encode(&lookup);
        request_bytes = bytes.len();
        let call = Instant::now();
        let reply = ractor::call_t!(peer, |reply| CachePeerMessage::Lookup(bytes, reply), 5_000)?;
        let reply = wire::decode::<wire::ShardLookupReply>("reply", &reply)?;
        remote_times.push(call.elapsed());
        reply_bytes = wire::encode(&reply).len();
        assert!(reply.served && !reply.candidates.is_empty());
    }
    let remote_wall = remote_started.elapsed();
    let client_cpu = cpu_time(std::process::id())?.saturating_sub(client_cpu);
    let server_cpu = match (server_pid, server_cpu) {
        (Some(pid), Some(before)) => Some(cpu_time(pid)?.saturating_sub(before)),
        _ => None,
    };
    local_times.sort_unstable();
    remote_times.sort_unstable();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    println!("local shard lookup: p50 {:.0} µs, p99 {:.0} µs ({lookups} lookups, 4 candidates of {entries})", micros(percentile(&local_times, 0.5)), micros(percentile(&local_times, 0.99)));
    println!("remote shard lookup: p50 {:.0} µs, p99 {:.0} µs ({:.0} lookups/s one at a time)", micros(percentile(&remote_times, 0.5)), micros(percentile(&remote_times, 0.99)), lookups as f64 / remote_wall.as_secs_f64());
    println!(
        "remote lookup CPU: client {:.0} µs, server {} per lookup (with its local search)",
        micros(client_cpu) / lookups as f64,
        server_cpu.map_or("not measured".to_owned(), |cpu| format!("{:.0} µs", micros(cpu) / lookups as f64))
    );
    let heartbeat = wire::encode(&wire::Heartbeat {
        node: "switchyard-9".into(),
        advertise: "10.0.0.19:7946".into(),
        incarnation: 1_764_750_000_000,
        sent_unix_ms: 1_764_750_000_000,
        alive: (0..10).map(|n| format!("switchyard-{n}")).collect(),
        peers: (0..9).map(|n| format!("10.0.0.{}:7946", 10 + n)).collect(),
    });
    println!("message sizes: heartbeat (10 members) {} bytes, lookup {request_bytes} bytes, its reply {reply_bytes} bytes", heartbeat.len());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["serve", listen, entries] => serve(listen.parse()?, entries.parse()?).await,
        ["measure", listen, seed, lookups] => measure(listen.parse()?, (*seed).to_owned(), lookups.parse()?, None).await,
        ["measure", listen, seed, lookups, pid] => measure(listen.parse()?, (*seed).to_owned(), lookups.parse()?, Some(pid.parse()?)).await,
        _ => bail!("usage: cluster-bench serve LISTEN ENTRIES | cluster-bench measure LISTEN SEED LOOKUPS [SERVER_PID]"),
    }
}
