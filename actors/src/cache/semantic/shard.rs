//! The `CacheShard` actor: one per semantic partition a node owns. It holds the partition's
//! vector index and entries (prompt, answer, context, created, TTL, hits), finds candidates for a
//! lookup within the same context only, evicts the least recently used past its capacity, drops
//! expired entries, and snapshots to `data_dir` (reloaded at start).
//!
//! Searching happens inside the actor: it is CPU work of microseconds, never I/O, and keeps the
//! index single-threaded. The hit decision is not the shard's: it returns scored candidates and
//! the caller's policy decides.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tracing::{info, warn};

use crate::budget::period::now_ms;
use crate::cache::exact::CachedAnswer;
use crate::cache::semantic::index::VectorIndex;

/// One stored answer of the semantic cache.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SemanticEntry {
    /// The context key: only lookups with the same key may see this entry.
    pub context_key: String,
    /// The user turn that was embedded.
    pub prompt: String,
    /// The exact-cache key of the request that stored it, so invalidating that key drops it too.
    #[serde(default)]
    pub exact_key: Option<String>,
    /// The answer.
    pub answer: CachedAnswer,
    /// When it was stored, in milliseconds since the epoch.
    pub created_ms: i64,
    /// How long it lives, in milliseconds.
    pub ttl_ms: i64,
    /// Times it was served.
    pub hits: u64,
    /// Last store or hit, for least-recently-used eviction.
    pub last_used_ms: i64,
}

impl SemanticEntry {
    fn expired(&self, now_ms: i64) -> bool {
        now_ms >= self.created_ms.saturating_add(self.ttl_ms)
    }
}

/// A candidate for a lookup.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The entry's id within the shard.
    pub id: u64,
    /// Cosine similarity to the lookup.
    pub similarity: f32,
    /// The entry.
    pub entry: SemanticEntry,
    /// The entry's embedded user turn, for the hit policy.
    pub vector: Vec<f32>,
}

/// Settings of one shard.
#[derive(Clone, Debug)]
pub struct ShardSettings {
    /// The partition it holds.
    pub partition: u32,
    /// Embedding dimensions.
    pub dimensions: usize,
    /// Most entries held by all the layer's shards together. One context (one tenant and model,
    /// no system prompt) may fill most of it: capacity is not split per partition.
    pub capacity: usize,
    /// Entries held by all the layer's shards together, kept by the shards.
    pub held: Arc<AtomicUsize>,
    /// Where snapshots go; `None` keeps the shard in memory only.
    pub data_dir: Option<PathBuf>,
    /// The layer's entry gauge and eviction counter, shared by its shards.
    pub metrics: Option<ShardMetrics>,
}

/// The metrics a shard keeps up to date.
#[derive(Clone, Debug)]
pub struct ShardMetrics {
    /// Entries held by every shard of the layer.
    pub entries: prometheus::IntGauge,
    /// Entries evicted for space by every shard of the layer.
    pub evictions: prometheus::IntCounter,
}

/// The actor; its state is [`ShardState`].
#[derive(Debug, Default)]
pub struct CacheShard;

/// The shard's clock: wall time at start plus tokio's monotonic time since, so TTLs follow
/// tokio's clock (and paused time in tests) while entries keep wall-clock stamps that mean the
/// same after a restart.
#[derive(Debug)]
struct ShardClock {
    epoch_ms_at_start: i64,
    started: tokio::time::Instant,
}

impl ShardClock {
    fn new() -> Self {
        Self { epoch_ms_at_start: now_ms(), started: tokio::time::Instant::now() }
    }

    fn now_ms(&self) -> i64 {
        self.epoch_ms_at_start.saturating_add(i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX))
    }
}

/// The shard's state.
#[derive(Debug)]
pub struct ShardState {
    clock: ShardClock,
    settings: ShardSettings,
    index: VectorIndex,
    entries: HashMap<u64, SemanticEntry>,
    next_id: u64,
    /// Changed since the last snapshot.
    dirty: bool,
}

/// The entries half of a snapshot; the vectors are in the index file beside it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    next_id: u64,
    entries: Vec<(u64, SemanticEntry)>,
}

/// Messages to a shard.
#[derive(Debug, RactorMessage)]
pub enum ShardMessage {
    /// The best candidates in `context_key` for `vector`, at least `min_similarity`, at most `count`.
    Lookup {
        /// The context that must match.
        context_key: String,
        /// The embedded user turn.
        vector: Vec<f32>,
        /// Most candidates returned.
        count: usize,
        /// Loosest similarity worth returning.
        min_similarity: f32,
        /// Reply channel for RPC: candidates, most similar first.
        reply: RpcReplyPort<Vec<Candidate>>,
    },
    /// Stores an entry.
    Insert {
        /// The entry (boxed: it is most of the message's size).
        entry: Box<SemanticEntry>,
        /// Its embedded user turn.
        vector: Vec<f32>,
    },
    /// Counts a hit on an entry.
    Hit(u64),
    /// Drops the entries whose answer matches.
    Invalidate(crate::cache::exact::Invalidation),
    /// Writes a snapshot to `data_dir`.
    Snapshot(
        /// Reply channel for RPC: whether it was written.
        RpcReplyPort<Result<(), String>>,
    ),
    /// Entries held, for metrics and tests.
    Len(
        /// Reply channel for RPC: the count.
        RpcReplyPort<usize>,
    ),
}

impl ShardState {
    fn snapshot_paths(&self) -> Option<(PathBuf, PathBuf)> {
        let dir = self.settings.data_dir.as_ref()?;
        Some(snapshot_paths(dir, self.settings.partition))
    }

    fn remove(&mut self, id: u64) {
        self.dirty = true;
        if self.entries.remove(&id).is_some() {
            self.settings.held.fetch_sub(1, Ordering::Relaxed);
            if let Some(metrics) = &self.settings.metrics {
                metrics.entries.dec();
            }
        }
        if let Err(error) = self.index.remove(id) {
            warn!(partition = self.settings.partition, %error, "failed to remove a vector");
        }
    }

    /// Past the layer's capacity, the shard that grew it evicts its own least recently used,
    /// down to 90 % of capacity at once so eviction is amortised (never its newest entry).
    fn evict(&mut self) {
        let held = self.settings.held.load(Ordering::Relaxed);
        if held <= self.settings.capacity {
            return;
        }
        let target = self.settings.capacity * 9 / 10;
        let excess = (held - target).min(self.entries.len().saturating_sub(1));
        let mut by_age: Vec<(i64, u64)> = self.entries.iter().map(|(id, entry)| (entry.last_used_ms, *id)).collect();
        by_age.sort_unstable();
        for (_, id) in by_age.into_iter().take(excess) {
            self.remove(id);
        }
        if let Some(metrics) = &self.settings.metrics {
            metrics.evictions.inc_by(excess as u64);
        }
    }

    fn lookup(&mut self, context_key: &str, vector: &[f32], count: usize, min_similarity: f32) -> Vec<Candidate> {
        let now = self.clock.now_ms();
        // The partition is shared by many contexts: search wider, then keep this context's.
        let found = match self.index.search(vector, (count * 8).max(16)) {
            Ok(found) => found,
            Err(error) => {
                warn!(partition = self.settings.partition, %error, "semantic search failed; treated as a miss");
                return Vec::new();
            }
        };
        let mut expired = Vec::new();
        let mut candidates = Vec::new();
        for (id, similarity) in found {
            let Some(entry) = self.entries.get(&id) else { continue };
            if entry.expired(now) {
                expired.push(id);
                continue;
            }
            if entry.context_key == context_key
                && similarity >= min_similarity
                && let Some(stored) = self.index.get(id)
            {
                candidates.push(Candidate { id, similarity, entry: entry.clone(), vector: stored });
            }
        }
        for id in expired {
            self.remove(id);
        }
        candidates.truncate(count);
        candidates
    }

    /// Writes the index, then the entries, each to a temporary file renamed into place. A crash
    /// between the two leaves a newer index beside older entries; loading keeps only the entries
    /// whose vectors the index holds.
    fn save(&mut self) -> Result<(), String> {
        if !self.dirty {
            return Ok(());
        }
        let Some((entries_path, index_path)) = self.snapshot_paths() else { return Ok(()) };
        let temporary_index = index_path.with_extension("usearch.tmp");
        self.index.save(&temporary_index).map_err(|error| format!("{}: {error}", temporary_index.display()))?;
        std::fs::rename(&temporary_index, &index_path).map_err(|error| format!("{}: {error}", index_path.display()))?;
        let snapshot = Snapshot { next_id: self.next_id, entries: self.entries.iter().map(|(id, entry)| (*id, entry.clone())).collect() };
        let json = serde_json::to_vec(&snapshot).map_err(|error| error.to_string())?;
        let temporary = entries_path.with_extension("json.tmp");
        std::fs::write(&temporary, json).map_err(|error| format!("{}: {error}", temporary.display()))?;
        std::fs::rename(&temporary, &entries_path).map_err(|error| format!("{}: {error}", entries_path.display()))?;
        self.dirty = false;
        Ok(())
    }
}

/// Where partition `partition`'s snapshot lives in `dir`: its entries and its index.
fn snapshot_paths(dir: &std::path::Path, partition: u32) -> (PathBuf, PathBuf) {
    (dir.join(format!("semantic-{partition:03}.json")), dir.join(format!("semantic-{partition:03}.usearch")))
}

/// Reads a snapshot: the entries and the index they were saved with.
fn load(settings: &ShardSettings) -> Result<Option<(Snapshot, VectorIndex)>, String> {
    let Some(dir) = &settings.data_dir else { return Ok(None) };
    let (entries_path, index_path) = snapshot_paths(dir, settings.partition);
    let bytes = match std::fs::read(&entries_path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("{}: {error}", entries_path.display())),
    };
    let snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(|error| format!("{}: {error}", entries_path.display()))?;
    let index = VectorIndex::load(&index_path, settings.dimensions).map_err(|error| error.to_string())?;
    Ok(Some((snapshot, index)))
}

impl Actor for CacheShard {
    type Msg = ShardMessage;
    type State = ShardState;
    type Arguments = ShardSettings;

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, settings: ShardSettings) -> Result<ShardState, ActorProcessingErr> {
        if let Some(dir) = &settings.data_dir {
            std::fs::create_dir_all(dir)?;
        }
        let mut state = ShardState {
            clock: ShardClock::new(),
            index: VectorIndex::new(settings.dimensions)?,
            entries: HashMap::new(),
            next_id: 1,
            dirty: false,
            settings,
        };
        // The index is loaded as saved, never rebuilt; entries without a vector in it (a crash
        // between the two writes) and expired ones are dropped.
        match load(&state.settings) {
            Ok(Some((snapshot, index))) => {
                let now = state.clock.now_ms();
                state.next_id = snapshot.next_id;
                state.index = index;
                for (id, entry) in snapshot.entries {
                    if !entry.expired(now) && state.index.contains(id) {
                        state.entries.insert(id, entry);
                    }
                }
                let stale: Vec<u64> = (0..state.next_id).filter(|id| state.index.contains(*id) && !state.entries.contains_key(id)).collect();
                for id in stale {
                    if let Err(error) = state.index.remove(id) {
                        warn!(partition = state.settings.partition, %error, "failed to drop a stale vector");
                    }
                }
                state.settings.held.fetch_add(state.entries.len(), Ordering::Relaxed);
                if let Some(metrics) = &state.settings.metrics {
                    metrics.entries.add(i64::try_from(state.entries.len()).unwrap_or(i64::MAX));
                }
                info!(partition = state.settings.partition, entries = state.entries.len(), "semantic shard restored");
            }
            Ok(None) => {}
            Err(error) => warn!(partition = state.settings.partition, %error, "semantic snapshot unreadable; starting empty"),
        }
        Ok(state)
    }

    async fn handle(&self, _myself: ActorRef<Self::Msg>, message: ShardMessage, state: &mut ShardState) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMessage::Lookup { context_key, vector, count, min_similarity, reply } => {
                let _caller_gone = reply.send(state.lookup(&context_key, &vector, count, min_similarity));
            }
            ShardMessage::Insert { entry, vector } => {
                let id = state.next_id;
                state.next_id += 1;
                match state.index.add(id, &vector) {
                    Ok(()) => {
                        state.entries.insert(id, *entry);
                        state.settings.held.fetch_add(1, Ordering::Relaxed);
                        state.dirty = true;
                        if let Some(metrics) = &state.settings.metrics {
                            metrics.entries.inc();
                        }
                        state.evict();
                    }
                    Err(error) => warn!(partition = state.settings.partition, %error, "semantic insert failed"),
                }
            }
            ShardMessage::Hit(id) => {
                if let Some(entry) = state.entries.get_mut(&id) {
                    entry.hits += 1;
                    entry.last_used_ms = state.clock.now_ms();
                    state.dirty = true;
                }
            }
            ShardMessage::Invalidate(what) => {
                use crate::cache::exact::Invalidation;
                let doomed: Vec<u64> = state
                    .entries
                    .iter()
                    .filter(|(_, entry)| match &what {
                        Invalidation::All => true,
                        Invalidation::Tenant(tenant) => entry.answer.tenant == *tenant,
                        Invalidation::Model(model) => entry.answer.model == *model || entry.answer.route == *model,
                        Invalidation::Key(key) => entry.exact_key.as_deref() == Some(key.as_str()),
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in doomed {
                    state.remove(id);
                }
            }
            ShardMessage::Snapshot(reply) => {
                let _caller_gone = reply.send(state.save());
            }
            ShardMessage::Len(reply) => {
                let _caller_gone = reply.send(state.entries.len());
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut ShardState) -> Result<(), ActorProcessingErr> {
        if let Err(error) = state.save() {
            warn!(partition = state.settings.partition, %error, "failed to snapshot the semantic shard at stop");
        }
        state.settings.held.fetch_sub(state.entries.len(), Ordering::Relaxed);
        if let Some(metrics) = &state.settings.metrics {
            metrics.entries.sub(i64::try_from(state.entries.len()).unwrap_or(i64::MAX));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
