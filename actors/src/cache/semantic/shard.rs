//! The `CacheShard` actor: one per semantic partition a node owns. It holds the partition's
//! vector index and entries (prompt, answer, context, created, TTL, hits), finds candidates for a
//! lookup within the same context only, evicts the least recently used past its capacity, drops
//! expired entries, and snapshots to `data_dir` (reloaded at start). Every entry carries a
//! cluster-wide `uid` chosen by the node that stored it, the same on every replica: inserting an
//! entry the shard already holds changes nothing, so replication and handoff can repeat safely.
//! A new owner pulls the partition from a replica in chunks ([`ShardMessage::Chunk`]) and merges
//! them ([`ShardMessage::Merge`]).
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
    /// Cluster-wide id, the same on every replica (0 in snapshots written before ids existed:
    /// one is derived from the entry at load).
    #[serde(default)]
    pub uid: u64,
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
    /// The uid derived from what the entry is: its context, prompt and store time.
    pub fn derived_uid(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for field in [self.context_key.as_bytes(), self.prompt.as_bytes(), &self.created_ms.to_le_bytes()] {
            hasher.update(&(field.len() as u64).to_le_bytes());
            hasher.update(field);
        }
        hasher.digest().max(1)
    }

    /// Roughly what the entry weighs on the wire with its vector, for chunking.
    fn wire_bytes(&self, dimensions: usize) -> usize {
        64 + self.context_key.len()
            + self.prompt.len()
            + self.exact_key.as_ref().map_or(0, String::len)
            + self.answer.text.len()
            + self.answer.tenant.len()
            + self.answer.route.len()
            + self.answer.model.len()
            + self.answer.provider.len()
            + dimensions * 4
    }

    fn expired(&self, now_ms: i64) -> bool {
        now_ms >= self.created_ms.saturating_add(self.ttl_ms)
    }
}

/// A chunk of a shard's entries, for a new owner.
#[derive(Clone, Debug, Default)]
pub struct ShardChunk {
    /// `(local id, entry, vector)`, in id order.
    pub entries: Vec<(u64, SemanticEntry, Vec<f32>)>,
    /// True when no entry follows.
    pub done: bool,
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
    /// Local id of each entry by its uid.
    by_uid: HashMap<u64, u64>,
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
    /// Stores the entries it does not hold yet (by uid), dropping expired ones: a chunk pulled
    /// from another owner.
    Merge {
        /// The entries with their vectors.
        entries: Vec<(SemanticEntry, Vec<f32>)>,
        /// Reply channel for RPC: how many were new.
        reply: RpcReplyPort<usize>,
    },
    /// The entries with a local id above `after_id`, in id order, up to about `max_bytes`.
    Chunk {
        /// The cursor: the last local id of the previous chunk (0 to start).
        after_id: u64,
        /// About the most bytes of entries returned (at least one entry is).
        max_bytes: usize,
        /// Reply channel for RPC: the chunk.
        reply: RpcReplyPort<ShardChunk>,
    },
    /// Drops every entry: the node no longer owns the partition.
    Clear,
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
        if let Some(entry) = self.entries.remove(&id) {
            self.by_uid.remove(&entry.uid);
            self.settings.held.fetch_sub(1, Ordering::Relaxed);
            if let Some(metrics) = &self.settings.metrics {
                metrics.entries.dec();
            }
        }
        if let Err(error) = self.index.remove(id) {
            warn!(partition = self.settings.partition, %error, "failed to remove a vector");
        }
    }

    /// Stores `entry` unless its uid is held already; true when stored.
    fn insert(&mut self, mut entry: SemanticEntry, vector: &[f32]) -> bool {
        if entry.uid == 0 {
            entry.uid = entry.derived_uid();
        }
        if self.by_uid.contains_key(&entry.uid) || entry.expired(self.clock.now_ms()) {
            return false;
        }
        let id = self.next_id;
        self.next_id += 1;
        match self.index.add(id, vector) {
            Ok(()) => {
                self.by_uid.insert(entry.uid, id);
                self.entries.insert(id, entry);
                self.settings.held.fetch_add(1, Ordering::Relaxed);
                self.dirty = true;
                if let Some(metrics) = &self.settings.metrics {
                    metrics.entries.inc();
                }
                self.evict();
                true
            }
            Err(error) => {
                warn!(partition = self.settings.partition, %error, "semantic insert failed");
                false
            }
        }
    }

    fn chunk(&self, after_id: u64, max_bytes: usize) -> ShardChunk {
        let mut ids: Vec<u64> = self.entries.keys().copied().filter(|id| *id > after_id).collect();
        ids.sort_unstable();
        let mut chunk = ShardChunk { entries: Vec::new(), done: true };
        let mut bytes = 0;
        for id in ids {
            if !chunk.entries.is_empty() && bytes >= max_bytes {
                chunk.done = false;
                break;
            }
            let (Some(entry), Some(vector)) = (self.entries.get(&id), self.index.get(id)) else { continue };
            bytes += entry.wire_bytes(self.settings.dimensions);
            chunk.entries.push((id, entry.clone(), vector));
        }
        chunk
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
            by_uid: HashMap::new(),
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
                for (id, mut entry) in snapshot.entries {
                    if !entry.expired(now) && state.index.contains(id) {
                        if entry.uid == 0 {
                            entry.uid = entry.derived_uid();
                        }
                        state.by_uid.insert(entry.uid, id);
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
                state.insert(*entry, &vector);
            }
            ShardMessage::Merge { entries, reply } => {
                let mut added = 0;
                for (entry, vector) in entries {
                    added += usize::from(state.insert(entry, &vector));
                }
                let _caller_gone = reply.send(added);
            }
            ShardMessage::Chunk { after_id, max_bytes, reply } => {
                let _caller_gone = reply.send(state.chunk(after_id, max_bytes));
            }
            ShardMessage::Clear => {
                let ids: Vec<u64> = state.entries.keys().copied().collect();
                for id in ids {
                    state.remove(id);
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
