//! Speed of the semantic cache, in two parts.
//!
//! `lookup` (default): the layer the request path uses, `SemanticCache` with the local MiniLM
//! model. It stores the answers to the first `--entries` questions (field `a` of
//! `qqp-dev.jsonl`), then `--concurrency` callers look up the paired questions (field `b`), each
//! caller one lookup at a time: embed + shard search + hit decision. Prints lookups/s, per-lookup
//! p50/p99 and the hit count.
//!
//! `search`: the vector search alone at scale. One `CacheShard` (one context, the worst case: every
//! entry is a candidate) is filled with `--entries` random unit vectors of 384 dimensions; then
//! `--lookups` searches run one at a time, timed both on the bare USearch index and as an actor
//! round trip to the shard. Prints p50/p99 of each.
//!
//! ```sh
//! scripts/fetch-model
//! cargo run --release -p switchyard-actors --example semantic-bench -- lookup --entries 2000 --concurrency 32
//! cargo run --release -p switchyard-actors --example semantic-bench -- search --entries 100000 --lookups 10000
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ractor::Actor;
use switchyard_actors::cache::CachedAnswer;
use switchyard_actors::cache::semantic::index::VectorIndex;
use switchyard_actors::cache::semantic::layer::DEFAULT_MAX_PROMPT_CHARS;
use switchyard_actors::cache::semantic::shard::{CacheShard, SemanticEntry, ShardMessage, ShardSettings};
use switchyard_actors::cache::semantic::{HitPolicy, SemanticCache, SemanticLookup, SemanticSettings};
use switchyard_actors::embed::{DEFAULT_MODEL_DIR, EmbedderSettings, MODEL_DIR_ENV};
use switchyard_actors::metrics::Metrics;
use switchyard_actors::model::{ChatRequest, Message, Role};

/// The command line.
struct Options {
    search_only: bool,
    entries: usize,
    lookups: usize,
    concurrency: usize,
    data: PathBuf,
    model_dir: PathBuf,
}

fn parse_options() -> anyhow::Result<Options> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let search_only = match args.first().map(String::as_str) {
        Some("search") => true,
        Some("lookup") => false,
        _ => bail!("first argument: lookup or search"),
    };
    args.remove(0);
    let mut options = Options {
        search_only,
        entries: if search_only { 100_000 } else { 2_000 },
        lookups: 10_000,
        concurrency: 32,
        data: root.join("../shared/data/qqp-dev.jsonl"),
        model_dir: std::env::var_os(MODEL_DIR_ENV).map_or_else(|| root.join(DEFAULT_MODEL_DIR), PathBuf::from),
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--entries" => options.entries = value()?.parse().context("--entries")?,
            "--lookups" => options.lookups = value()?.parse().context("--lookups")?,
            "--concurrency" => options.concurrency = value()?.parse().context("--concurrency")?,
            "--data" => options.data = value()?.into(),
            "--model-dir" => options.model_dir = value()?.into(),
            other => bail!("unknown option {other}"),
        }
    }
    if options.concurrency == 0 || options.entries == 0 || options.lookups == 0 {
        bail!("--entries, --lookups and --concurrency must be at least 1");
    }
    Ok(options)
}

/// The first `count` pairs (fields `a`, `b`) of a QQP JSON-lines file.
fn read_pairs(path: &PathBuf, count: usize) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    let mut pairs = Vec::with_capacity(count);
    for line in text.lines().filter(|line| !line.trim().is_empty()).take(count) {
        let row: serde_json::Value = serde_json::from_str(line).context("failed to parse a QQP line")?;
        let field = |name: &str| row[name].as_str().map(str::to_owned).with_context(|| format!("a QQP line without a string field \"{name}\""));
        pairs.push((field("a")?, field("b")?));
    }
    Ok(pairs)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).saturating_sub(1).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or_default()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn request(question: &str) -> ChatRequest {
    ChatRequest { messages: vec![Message::text(Role::User, question)], model: Some("bench".into()), ..ChatRequest::default() }
}

fn answer(question: &str) -> CachedAnswer {
    CachedAnswer {
        embeddings: Vec::new(),
        tenant: "bench".into(),
        route: "bench".into(),
        text: format!("the answer to {question}"),
        tool_calls: Vec::new(),
        model: "bench".into(),
        provider: "bench".into(),
        input_tokens: 10,
        output_tokens: 10,
        finish_reason: "stop".into(),
        cost_nano_usd: Some(1),
        created_ms: 0,
    }
}

async fn lookup_bench(options: &Options) -> anyhow::Result<()> {
    let pairs = Arc::new(read_pairs(&options.data, options.entries)?);
    let settings = SemanticSettings {
        embedder: EmbedderSettings::local(&options.model_dir),
        max_entries: options.entries * 2,
        ttl: Duration::from_secs(3600),
        precision: 0.9,
        route_precision: Default::default(),
        skip_routes: Default::default(),
        candidates: 4,
        max_prompt_chars: DEFAULT_MAX_PROMPT_CHARS,
        data_dir: None,
        snapshot_interval: Duration::from_secs(3600),
        policy: HitPolicy::shipped()?,
        // The benchmark measures lookups themselves: never shed or cut short.
        lookup_budget: Some(Duration::from_secs(60)),
        store_queue: 1024,
    };
    let metrics = Arc::new(Metrics::new()?);
    let (cache, _cells) = SemanticCache::start(settings, None, metrics).await?;
    for (question, _) in pairs.iter() {
        if let SemanticLookup::Miss(probe) = cache.lookup("bench", &request(question)).await {
            cache.store(probe, answer(question), None, None);
        }
    }
    let stored = cache.entries().await;

    let next = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..options.concurrency)
        .map(|_| {
            let (cache, pairs, next, hits) = (cache.clone(), Arc::clone(&pairs), Arc::clone(&next), Arc::clone(&hits));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, paired)) = pairs.get(index) else { break };
                    let call = Instant::now();
                    if let SemanticLookup::Hit(..) = cache.lookup("bench", &request(paired)).await {
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                    latencies.push(call.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(pairs.len());
    for worker in workers {
        latencies.extend(worker.await.context("a caller panicked")?);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    println!(
        "{{\"bench\":\"lookup\",\"stored\":{stored},\"lookups\":{},\"concurrency\":{},\"hits\":{},\"seconds\":{:.2},\"lookups_per_s\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
        latencies.len(),
        options.concurrency,
        hits.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        millis(percentile(&latencies, 0.50)),
        millis(percentile(&latencies, 0.99)),
    );
    Ok(())
}

fn random_unit(rng: &mut impl rand::Rng, dimensions: usize) -> Vec<f32> {
    let raw: Vec<f32> = (0..dimensions).map(|_| rng.random::<f32>() - 0.5).collect();
    let norm = raw.iter().map(|value| value * value).sum::<f32>().sqrt().max(f32::EPSILON);
    raw.into_iter().map(|value| value / norm).collect()
}

async fn search_bench(options: &Options) -> anyhow::Result<()> {
    const DIMENSIONS: usize = 384;
    let mut rng = rand::rng();
    let vectors: Vec<Vec<f32>> = (0..options.entries).map(|_| random_unit(&mut rng, DIMENSIONS)).collect();
    let queries: Vec<Vec<f32>> = (0..options.lookups).map(|_| random_unit(&mut rng, DIMENSIONS)).collect();

    let build = Instant::now();
    let mut index = VectorIndex::new(DIMENSIONS)?;
    for (key, vector) in vectors.iter().enumerate() {
        index.add(key as u64, vector)?;
    }
    let build_seconds = build.elapsed().as_secs_f64();
    let mut bare = Vec::with_capacity(queries.len());
    for query in &queries {
        let call = Instant::now();
        index.search(query, 16)?;
        bare.push(call.elapsed());
    }
    bare.sort_unstable();
    drop(index);

    let settings = ShardSettings { partition: 0, dimensions: DIMENSIONS, capacity: options.entries * 2, held: Default::default(), data_dir: None, metrics: None };
    let (shard, _join) = Actor::spawn(None, CacheShard, settings).await?;
    for (position, vector) in vectors.into_iter().enumerate() {
        let entry = SemanticEntry {
            uid: 0,
            context_key: "bench".into(),
            prompt: format!("question {position}"),
            exact_key: None,
            answer: answer("a question"),
            created_ms: switchyard_actors::budget::period::now_ms(),
            ttl_ms: 3_600_000,
            hits: 0,
            last_used_ms: 0,
        };
        shard.cast(ShardMessage::Insert { entry: Box::new(entry), vector })?;
    }
    let held = ractor::call!(shard, ShardMessage::Len)?;
    let mut through_actor = Vec::with_capacity(queries.len());
    for query in queries {
        let call = Instant::now();
        ractor::call!(shard, |reply| ShardMessage::Lookup { context_key: "bench".into(), vector: query, count: 4, min_similarity: 0.0, reply })?;
        through_actor.push(call.elapsed());
    }
    through_actor.sort_unstable();
    println!(
        "{{\"bench\":\"search\",\"entries\":{held},\"lookups\":{},\"build_s\":{build_seconds:.1},\"index_p50_ms\":{:.3},\"index_p99_ms\":{:.3},\"shard_p50_ms\":{:.3},\"shard_p99_ms\":{:.3}}}",
        through_actor.len(),
        millis(percentile(&bare, 0.50)),
        millis(percentile(&bare, 0.99)),
        millis(percentile(&through_actor, 0.50)),
        millis(percentile(&through_actor, 0.99)),
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    if options.search_only { search_bench(&options).await } else { lookup_bench(&options).await }
}
