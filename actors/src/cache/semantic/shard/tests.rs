//! The shard actor with synthetic unit vectors: context isolation, thresholds, TTL, eviction,
//! invalidation, and snapshot + restart.

use std::time::Duration;

use super::*;
use crate::cache::exact::Invalidation;

fn unit(seed: f32) -> Vec<f32> {
    let raw = [seed.cos(), seed.sin(), 0.5, 0.25];
    let norm = raw.iter().map(|v| v * v).sum::<f32>().sqrt();
    raw.iter().map(|v| v / norm).collect()
}

fn entry(context: &str, tenant: &str, prompt: &str, ttl_ms: i64) -> SemanticEntry {
    let now = now_ms();
    SemanticEntry {
        uid: 0,
        context_key: context.into(),
        prompt: prompt.into(),
        exact_key: Some(format!("key-{prompt}")),
        answer: CachedAnswer {
            embeddings: Vec::new(),
            tenant: tenant.into(),
            route: "auto".into(),
            text: format!("answer to {prompt}"),
            tool_calls: Vec::new(),
            model: "m".into(),
            provider: "p".into(),
            input_tokens: 1,
            output_tokens: 1,
            finish_reason: "stop".into(),
            cost_nano_usd: Some(1),
            created_ms: now,
        },
        created_ms: now,
        ttl_ms,
        hits: 0,
        last_used_ms: now,
    }
}

async fn start(capacity: usize, data_dir: Option<PathBuf>) -> ActorRef<ShardMessage> {
    let settings = ShardSettings { partition: 7, dimensions: 4, capacity, held: Default::default(), data_dir, metrics: None };
    Actor::spawn(None, CacheShard, settings).await.expect("shard starts").0
}

async fn lookup(shard: &ActorRef<ShardMessage>, context: &str, vector: Vec<f32>, min_similarity: f32) -> Vec<Candidate> {
    ractor::call!(shard, |reply| ShardMessage::Lookup { context_key: context.into(), vector, count: 3, min_similarity, reply })
        .expect("shard answers")
}

#[tokio::test]
async fn only_the_same_context_above_the_threshold_is_a_candidate() {
    let shard = start(100, None).await;
    shard.cast(ShardMessage::Insert { entry: Box::new(entry("ctx-a", "acme", "q1", 60_000)), vector: unit(0.0) }).expect("insert");
    shard.cast(ShardMessage::Insert { entry: Box::new(entry("ctx-b", "globex", "q1", 60_000)), vector: unit(0.0) }).expect("insert");
    let found = lookup(&shard, "ctx-a", unit(0.01), 0.9).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].entry.answer.tenant, "acme", "never another context's entry");
    assert!(found[0].similarity > 0.99);
    assert!(lookup(&shard, "ctx-a", unit(1.5), 0.95).await.is_empty(), "too far");
    assert!(lookup(&shard, "ctx-c", unit(0.0), 0.0).await.is_empty());
    shard.stop(None);
}

#[tokio::test(start_paused = true)]
async fn expired_entries_are_never_returned_and_capacity_evicts_the_least_recently_used() {
    let shard = start(10, None).await;
    shard.cast(ShardMessage::Insert { entry: Box::new(entry("c", "t", "short-lived", 30_000)), vector: unit(0.0) }).expect("insert");
    shard.cast(ShardMessage::Insert { entry: Box::new(entry("c", "t", "long-lived", 120_000)), vector: unit(0.001) }).expect("insert");
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(lookup(&shard, "c", unit(0.0), 0.5).await.len(), 2, "both alive before the first TTL");
    tokio::time::advance(Duration::from_secs(2)).await;
    let alive = lookup(&shard, "c", unit(0.0), 0.5).await;
    assert_eq!(alive.len(), 1, "the 30 s entry expired");
    assert_eq!(alive[0].entry.prompt, "long-lived");
    shard.cast(ShardMessage::Invalidate(Invalidation::All)).expect("invalidate");
    for n in 0..12 {
        let mut stored = entry("c", "t", &format!("q{n}"), 60_000);
        stored.last_used_ms += n;
        shard.cast(ShardMessage::Insert { entry: Box::new(stored), vector: unit(n as f32 * 0.2) }).expect("insert");
    }
    let held = ractor::call!(shard, ShardMessage::Len).expect("len");
    assert!(held <= 10, "held {held}");
    let oldest = lookup(&shard, "c", unit(0.0), 0.999).await;
    assert!(oldest.iter().all(|candidate| candidate.entry.prompt != "q0"), "the least recently used went first");
    shard.stop(None);
}

#[tokio::test]
async fn invalidation_and_a_snapshot_that_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("switchyard-shard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let shard = start(100, Some(dir.clone())).await;
    shard.cast(ShardMessage::Insert { entry: Box::new(entry("c", "acme", "keep", 60_000)), vector: unit(0.0) }).expect("insert");
    shard.cast(ShardMessage::Insert { entry: Box::new(entry("c", "globex", "drop", 60_000)), vector: unit(2.0) }).expect("insert");
    shard.cast(ShardMessage::Invalidate(Invalidation::Tenant("globex".into()))).expect("invalidate");
    assert!(lookup(&shard, "c", unit(2.0), 0.99).await.is_empty());
    assert_eq!(ractor::call!(shard, ShardMessage::Snapshot).expect("snapshot"), Ok(()));
    shard.stop(None);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let restored = start(100, Some(dir.clone())).await;
    let found = lookup(&restored, "c", unit(0.0), 0.99).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].entry.prompt, "keep");
    // New entries after a restart get fresh ids.
    restored.cast(ShardMessage::Insert { entry: Box::new(entry("c", "acme", "new", 60_000)), vector: unit(1.0) }).expect("insert");
    assert_eq!(ractor::call!(restored, ShardMessage::Len).expect("len"), 2);
    restored.stop(None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn capacity_is_shared_by_the_shards_of_a_layer() {
    let held = Arc::new(AtomicUsize::new(0));
    let shard = |partition| {
        let settings = ShardSettings { partition, dimensions: 4, capacity: 10, held: Arc::clone(&held), data_dir: None, metrics: None };
        async move { Actor::spawn(None, CacheShard, settings).await.expect("shard starts").0 }
    };
    let (busy, quiet) = (shard(1).await, shard(2).await);
    quiet.cast(ShardMessage::Insert { entry: Box::new(entry("q", "t", "quiet", 60_000)), vector: unit(0.0) }).expect("insert");
    for n in 0..9 {
        let mut stored = entry("b", "t", &format!("b{n}"), 60_000);
        stored.last_used_ms += n;
        busy.cast(ShardMessage::Insert { entry: Box::new(stored), vector: unit(n as f32 * 0.2) }).expect("insert");
    }
    assert_eq!(ractor::call!(busy, ShardMessage::Len).expect("len"), 9, "one context may use almost all of the capacity");
    assert_eq!(held.load(Ordering::Relaxed), 10);
    busy.cast(ShardMessage::Insert { entry: Box::new(entry("b", "t", "b9", 60_000)), vector: unit(3.0) }).expect("insert");
    assert_eq!(ractor::call!(busy, ShardMessage::Len).expect("len"), 8, "the growing shard evicted its own, down to 90 %");
    assert_eq!(ractor::call!(quiet, ShardMessage::Len).expect("len"), 1, "the other shard kept its entry");
    assert_eq!(held.load(Ordering::Relaxed), 9);
    busy.stop(None);
    quiet.stop(None);
}

#[tokio::test]
async fn an_entry_is_held_once_by_uid_and_a_partition_moves_in_chunks() {
    let source = start(100, None).await;
    for n in 0..10 {
        let mut stored = entry("c", "t", &format!("q{n}"), 60_000);
        stored.uid = 1000 + n;
        stored.answer.text = "x".repeat(200);
        source.cast(ShardMessage::Insert { entry: Box::new(stored.clone()), vector: unit(n as f32 * 0.3) }).expect("insert");
        // The same entry again (a repeated replication) changes nothing.
        source.cast(ShardMessage::Insert { entry: Box::new(stored), vector: unit(n as f32 * 0.3) }).expect("insert");
    }
    assert_eq!(ractor::call!(source, ShardMessage::Len).expect("len"), 10);

    let target = start(100, None).await;
    let mut cursor = 0;
    let mut chunks = 0;
    loop {
        let chunk = ractor::call!(source, |reply| ShardMessage::Chunk { after_id: cursor, max_bytes: 1_000, reply }).expect("chunk");
        chunks += 1;
        assert!(!chunk.entries.is_empty());
        cursor = chunk.entries.last().map(|(id, _, _)| *id).expect("an entry");
        let entries = chunk.entries.into_iter().map(|(_, entry, vector)| (entry, vector)).collect();
        let added = ractor::call!(target, |reply| ShardMessage::Merge { entries, reply }).expect("merge");
        assert!(added > 0);
        if chunk.done {
            break;
        }
    }
    assert!(chunks > 1, "1 kB chunks split ten 200-byte answers");
    assert_eq!(ractor::call!(target, ShardMessage::Len).expect("len"), 10);
    // Merging everything again adds nothing.
    let again = ractor::call!(source, |reply| ShardMessage::Chunk { after_id: 0, max_bytes: usize::MAX, reply }).expect("chunk");
    let entries = again.entries.into_iter().map(|(_, entry, vector)| (entry, vector)).collect();
    assert_eq!(ractor::call!(target, |reply| ShardMessage::Merge { entries, reply }).expect("merge"), 0);
    let found = lookup(&target, "c", unit(0.9), 0.9).await;
    assert_eq!(found[0].entry.uid, 1003, "the moved entry keeps its uid");

    target.cast(ShardMessage::Clear).expect("clear");
    assert_eq!(ractor::call!(target, ShardMessage::Len).expect("len"), 0);
    source.stop(None);
    target.stop(None);
}
