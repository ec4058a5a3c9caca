//! The semantic layer as the request path sees it: embed the last user turn, ask the partition's
//! `CacheShard` for candidates from the same context, let the [`HitPolicy`] decide, and store
//! complete answers. Every shard is reached through an actor message: the [`Directory`] says
//! which nodes serve the partition, and a lookup asks them in order, its own shard directly and
//! another node's through that node's cache peer with a deadline (`remote_lookup_timeout`),
//! going on to the next replica and in the end to a miss, so a cluster problem never fails or
//! stalls a request. An insert goes to every owner.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::{Actor, ActorCell, ActorRef};
use tokio::time::Instant;
use tracing::{Instrument as _, debug, info, info_span, instrument, warn};

use crate::budget::period::now_ms;
use crate::cache::exact::{CachedAnswer, Invalidation};
use crate::cache::semantic::partition::{PARTITIONS, context_key, partition_of, semantic_prompt};
use crate::cache::semantic::policy::{HitPolicy, PolicyError};
use crate::cache::semantic::peer::{CachePeer, CachePeerMessage};
use crate::cache::semantic::placement::{Placement, PlacementArgs};
use crate::cache::semantic::shard::{CacheShard, Candidate, SemanticEntry, ShardMessage, ShardMetrics, ShardSettings};
use crate::cluster::directory::{Directory, Route};
use crate::cluster::membership::ClusterView;
use crate::cluster::wire;
use crate::embed::{EmbedderHandle, EmbedderSettings};
use crate::metrics::Metrics;
use crate::model::ChatRequest;

/// Longest user turn looked up, in characters. The model reads at most 256 tokens; two long
/// prompts that differ only after that would look identical to it.
pub const DEFAULT_MAX_PROMPT_CHARS: usize = 1_000;

/// How long a lookup waits for its shard before treating the request as a miss.
const SHARD_TIMEOUT: Duration = Duration::from_millis(500);

/// Single embeddings timed at start to size the automatic lookup budget.
const BUDGET_PROBES: usize = 5;

/// The automatic lookup budget, as a multiple of the median single embedding measured at start.
const BUDGET_MULTIPLE: u32 = 2;

/// The text the automatic budget is timed on (with its number appended): a short question.
const BUDGET_PROBE: &str = "how long does embedding sentence number";

/// Bounds of the automatic lookup budget.
const AUTO_BUDGET_BOUNDS: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(250));

/// The semantic layer's validated settings.
#[derive(Clone, Debug)]
pub struct SemanticSettings {
    /// The embedding backend and its batching.
    pub embedder: EmbedderSettings,
    /// Most entries on this node, over all its shards together.
    pub max_entries: usize,
    /// Lifetime of an entry unless the request sets one.
    pub ttl: Duration,
    /// The precision the policy aims for unless the route has its own.
    pub precision: f32,
    /// Target precision per model or route name.
    pub route_precision: HashMap<String, f32>,
    /// Models and routes whose requests skip the semantic layer (no embedding, no lookup, no
    /// store); the exact layer still serves them.
    pub skip_routes: HashSet<String>,
    /// Candidates the shard returns for the policy to score.
    pub candidates: usize,
    /// Longest user turn looked up, in characters.
    pub max_prompt_chars: usize,
    /// Where shard snapshots go; `None` keeps the layer in memory only.
    pub data_dir: Option<PathBuf>,
    /// How often shards snapshot (they also do at shutdown).
    pub snapshot_interval: Duration,
    /// The hit decision (the shipped fitted policy, unless a benchmark passes another).
    pub policy: HitPolicy,
    /// Longest a request waits for its lookup (embedding and shards) before it goes on upstream
    /// as a miss; `None` sizes it at start from the measured single embedding.
    pub lookup_budget: Option<Duration>,
    /// Most answers waiting for a vector to be stored (their lookup ran out of budget while the
    /// embedding went on); past it an answer is not stored, and counted as dropped.
    pub store_queue: usize,
}

/// How the layer spreads over a cluster.
#[derive(Clone, Debug)]
pub struct SemanticClusterSettings {
    /// This node's name.
    pub this_node: String,
    /// Owners per partition.
    pub replication: usize,
    /// How long a lookup waits for another node before asking the next replica.
    pub remote_lookup_timeout: Duration,
    /// How long a partition this node lost keeps answering lookups.
    pub handoff_grace: Duration,
    /// The membership's view.
    pub view: tokio::sync::watch::Receiver<ClusterView>,
}

/// Which cached entry a semantic hit came from.
#[derive(Clone, Debug, PartialEq)]
pub struct SemanticMatch {
    /// Cosine similarity of the two user turns.
    pub similarity: f32,
    /// The entry: `<partition>-<id>`.
    pub entry: String,
}

/// A lookup that missed, kept to store the answer under the same vector.
#[derive(Debug)]
pub struct SemanticProbe {
    key: ProbeKey,
    vector: ProbeVector,
}

impl SemanticProbe {
    fn new(context_key: String, partition: u32, prompt: &str, vector: ProbeVector) -> Self {
        Self { key: ProbeKey { context_key, partition, prompt: prompt.to_owned() }, vector }
    }
}

/// Where a lookup's answer is stored: its context, partition and user turn.
#[derive(Debug)]
struct ProbeKey {
    context_key: String,
    partition: u32,
    prompt: String,
}

/// The vector of a lookup that missed: known, or still being computed because the lookup ran out
/// of budget first.
#[derive(Debug)]
enum ProbeVector {
    Ready(Vec<f32>),
    Pending(PendingVector),
}

/// An embedding that goes on after its lookup gave up on it, so the answer can still be stored
/// under it. Dropped unstored, it is cancelled.
#[derive(Debug)]
struct PendingVector(Option<tokio::task::JoinHandle<Result<Vec<f32>, crate::embed::EmbedError>>>);

impl PendingVector {
    async fn wait(mut self) -> Option<Vec<f32>> {
        let handle = self.0.take()?;
        handle.await.ok()?.ok()
    }
}

impl Drop for PendingVector {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum SemanticLookup {
    /// A cached answer good enough for the route.
    Hit(Arc<CachedAnswer>, SemanticMatch),
    /// Nothing good enough; the probe stores the answer once it is known.
    Miss(SemanticProbe),
    /// Not looked up (not a user turn, too long, a route that skips the layer) or the layer
    /// failed: nothing to store either.
    Skipped,
}

/// The node's semantic layer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SemanticCache {
    embedder: EmbedderHandle,
    /// Longest a request waits for its lookup.
    lookup_budget: LookupBudget,
    /// Stores waiting for their vector.
    stores: Arc<tokio::sync::Semaphore>,
    shards: Arc<Vec<ActorRef<ShardMessage>>>,
    directory: Arc<ArcSwap<Directory>>,
    remote_lookup_timeout: Duration,
    default_threshold: f32,
    route_thresholds: Arc<HashMap<String, f32>>,
    settings: Arc<SemanticSettings>,
    metrics: Arc<Metrics>,
}

/// A configured precision the policy cannot reach.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdError {
    /// The route whose precision it is; `None` for the default precision.
    pub route: Option<String>,
    /// What the policy said.
    pub error: PolicyError,
}

/// Score thresholds: the default, and per route.
type Thresholds = (f32, HashMap<String, f32>);

/// Maps each configured precision to the policy's threshold.
fn thresholds(settings: &SemanticSettings) -> Result<Thresholds, ThresholdError> {
    let policy = &settings.policy;
    let default = policy.threshold_for(settings.precision).map_err(|error| ThresholdError { route: None, error })?;
    let mut routes = HashMap::new();
    for (route, precision) in &settings.route_precision {
        let threshold = policy.threshold_for(*precision).map_err(|error| ThresholdError { route: Some(route.clone()), error })?;
        routes.insert(route.clone(), threshold);
    }
    Ok((default, routes))
}

impl SemanticCache {
    /// Checks that every configured precision maps to a threshold of the settings' policy.
    pub fn check(settings: &SemanticSettings) -> Result<(), ThresholdError> {
        thresholds(settings).map(|_| ())
    }

    /// Starts the embedder and one shard per partition (each restoring its snapshot; the node's
    /// runtime writes snapshots on their interval); in a cluster also the cache peer other nodes reach the shards through and
    /// the placement actor that follows membership.
    pub async fn start(settings: SemanticSettings, cluster: Option<SemanticClusterSettings>, metrics: Arc<Metrics>) -> anyhow::Result<(Self, Vec<ActorCell>)> {
        let (default_threshold, route_thresholds) =
            thresholds(&settings).map_err(|wrong| anyhow::anyhow!("semantic cache precision for {}: {}", wrong.route.as_deref().unwrap_or("every route"), wrong.error))?;
        let (embedder, embedder_cell) = EmbedderHandle::start_observed(settings.embedder.clone(), Some(metrics.embedding_batch_size.clone())).await?;
        // One embedding up front: it tells the dimensions (a remote model's are not known before)
        // and takes the first-call cost off the first request.
        let dimensions = embedder.embed("warm up".into()).await?.len();
        let lookup_budget = match settings.lookup_budget {
            Some(budget) => LookupBudget::Fixed(budget),
            None => auto_budget(&embedder).await?,
        };
        if let Some(fitted) = settings.policy.parameters()
            && fitted.dimensions != dimensions
        {
            anyhow::bail!(
                "the embedding model gives {dimensions}-dimensional vectors but the hit policy was fitted on {}-dimensional ones ({}); \
                 use the model it was fitted for or refit it with `switchyard-loadtest semantic-fit`",
                fitted.dimensions,
                fitted.embedding_model
            );
        }
        let mut cells = vec![embedder_cell];
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let shard_metrics = ShardMetrics {
            entries: metrics.cache_entries.with_label_values(&["semantic"]),
            evictions: metrics.cache_evictions.with_label_values(&["semantic"]),
        };
        let mut shards = Vec::with_capacity(PARTITIONS as usize);
        for partition in 0..PARTITIONS {
            let shard_settings = ShardSettings {
                partition,
                dimensions,
                capacity: settings.max_entries,
                held: Arc::clone(&held),
                data_dir: settings.data_dir.clone(),
                metrics: Some(shard_metrics.clone()),
            };
            let (shard, _join) = Actor::spawn(None, CacheShard, shard_settings).await?;
            cells.push(shard.get_cell());
            shards.push(shard);
        }
        let shards = Arc::new(shards);
        let this_node = cluster.as_ref().map_or("local", |cluster| cluster.this_node.as_str());
        let replication = cluster.as_ref().map_or(1, |cluster| cluster.replication);
        let directory = Arc::new(ArcSwap::from_pointee(Directory::alone(this_node, PARTITIONS, replication, Arc::clone(&shards))));
        if let Some(cluster) = &cluster {
            let peer = CachePeer::start(&cluster.this_node, Arc::clone(&directory)).await?;
            cells.push(peer.get_cell());
            let placement = PlacementArgs {
                this_node: cluster.this_node.clone(),
                partitions: PARTITIONS,
                replication: cluster.replication,
                handoff_grace: cluster.handoff_grace,
                directory: Arc::clone(&directory),
                view: cluster.view.clone(),
                metrics: Arc::clone(&metrics),
            };
            let (placement, _join) = Actor::spawn(None, Placement, placement).await?;
            cells.push(placement.get_cell());
        }
        metrics.cluster_partitions_owned.set(i64::from(PARTITIONS));
        info!(
            partitions = PARTITIONS,
            max_entries = settings.max_entries,
            default_threshold,
            lookup_budget_ms = lookup_budget.for_len(BUDGET_PROBE.len()).as_secs_f64() * 1000.0,
            clustered = cluster.is_some(),
            "semantic cache ready"
        );
        let cache = Self {
            embedder,
            lookup_budget,
            stores: Arc::new(tokio::sync::Semaphore::new(settings.store_queue.max(1))),
            shards,
            directory,
            remote_lookup_timeout: cluster.as_ref().map_or(SHARD_TIMEOUT, |cluster| cluster.remote_lookup_timeout),
            default_threshold,
            route_thresholds: Arc::new(route_thresholds),
            settings: Arc::new(settings),
            metrics,
        };
        Ok((cache, cells))
    }

    fn threshold(&self, request: &ChatRequest) -> f32 {
        request.model.as_deref().and_then(|route| self.route_thresholds.get(route)).copied().unwrap_or(self.default_threshold)
    }

    /// Looks `request` up for `tenant`: a hit, or the probe to store its answer under.
    #[instrument(name = "semantic_cache", skip_all, fields(partition = tracing::field::Empty, similarity = tracing::field::Empty, score = tracing::field::Empty))]
    pub async fn lookup(&self, tenant: &str, request: &ChatRequest) -> SemanticLookup {
        let skipped_route = request.model.as_deref().is_some_and(|route| self.settings.skip_routes.contains(route));
        let Some(prompt) = semantic_prompt(request).filter(|_| !skipped_route) else {
            self.metrics.record_lookup("semantic", "skipped");
            return SemanticLookup::Skipped;
        };
        if prompt.chars().count() > self.settings.max_prompt_chars {
            self.metrics.record_lookup("semantic", "skipped");
            return SemanticLookup::Skipped;
        }
        // A lookup that would queue behind a saturated embedder past its budget is not started:
        // queueing it would only make every request wait.
        let budget = self.lookup_budget.for_len(prompt.len());
        if self.embedder.load.saturated_past(budget) {
            self.metrics.record_lookup("semantic", "shed");
            return SemanticLookup::Skipped;
        }
        let context_key = context_key(tenant, request);
        let partition = partition_of(&context_key);
        tracing::Span::current().record("partition", partition);
        let embed_started = Instant::now();
        let deadline = embed_started + budget;
        let embedder = self.embedder.clone();
        let text = prompt.to_owned();
        let mut embedding = tokio::spawn(async move { embedder.embed(text).await });
        let vector = match tokio::time::timeout_at(deadline, &mut embedding).await {
            Ok(Ok(Ok(vector))) => vector,
            Ok(Ok(Err(error))) => {
                warn!(%error, "embedding failed; the request goes on uncached");
                self.metrics.record_lookup("semantic", "error");
                return SemanticLookup::Skipped;
            }
            Ok(Err(error)) => {
                warn!(%error, "embedding task failed; the request goes on uncached");
                self.metrics.record_lookup("semantic", "error");
                return SemanticLookup::Skipped;
            }
            Err(_) => {
                // Out of budget: the request goes on upstream now; the embedding goes on for
                // storing its answer.
                self.metrics.record_lookup("semantic", "timeout");
                return SemanticLookup::Miss(SemanticProbe::new(context_key, partition, prompt, ProbeVector::Pending(PendingVector(Some(embedding)))));
            }
        };
        self.metrics.embedding_duration.observe(embed_started.elapsed().as_secs_f64());
        let asked = tokio::time::timeout_at(deadline, self.ask_shards(partition, &context_key, &vector)).await;
        let Ok(asked) = asked else {
            self.metrics.record_lookup("semantic", "timeout");
            return SemanticLookup::Miss(SemanticProbe::new(context_key, partition, prompt, ProbeVector::Ready(vector)));
        };
        let Some((candidates, answered_by)) = asked else {
            // Nobody answered: a miss, and the answer is still stored with the owners.
            self.metrics.record_lookup("semantic", "miss");
            return SemanticLookup::Miss(SemanticProbe::new(context_key, partition, prompt, ProbeVector::Ready(vector)));
        };
        let max_tokens = request.sampling.max_tokens;
        let threshold = self.threshold(request);
        let best = candidates
            .into_iter()
            .filter(|candidate| fits(candidate, max_tokens))
            .map(|candidate| (self.settings.policy.score(prompt, &vector, &candidate.entry.prompt, &candidate.vector), candidate))
            .filter(|(score, _)| *score >= threshold)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((score, candidate)) => {
                count_hit(&answered_by, partition, candidate.id);
                self.metrics.record_lookup("semantic", "hit");
                self.metrics.semantic_similarity.observe(f64::from(candidate.similarity));
                let span = tracing::Span::current();
                span.record("similarity", candidate.similarity);
                span.record("score", score);
                let found = SemanticMatch { similarity: candidate.similarity, entry: format!("{partition}-{:016x}", candidate.entry.uid) };
                SemanticLookup::Hit(Arc::new(candidate.entry.answer), found)
            }
            None => {
                self.metrics.record_lookup("semantic", "miss");
                SemanticLookup::Miss(SemanticProbe::new(context_key, partition, prompt, ProbeVector::Ready(vector)))
            }
        }
    }

    /// Stores a complete answer under the probe of the lookup that missed, with the request's
    /// exact key (invalidating that key drops it too). Only text answers that ended naturally
    /// are stored: one cut at `max_tokens` is not an answer to the question, and a tool call's
    /// arguments come from the question's exact words (a paraphrase about another city would get
    /// this one's weather), so tool calls are left to the exact layer.
    ///
    /// Storing never holds the request up: an answer whose vector is still being computed waits
    /// for it on a task of its own, while fewer than `store_queue` do; past that it is dropped
    /// (counted in `semantic_stores_total{result="dropped"}`).
    pub fn store(&self, probe: SemanticProbe, answer: CachedAnswer, ttl: Option<Duration>, exact_key: Option<String>) {
        if answer.finish_reason != "stop" || !answer.tool_calls.is_empty() {
            return;
        }
        let SemanticProbe { key, vector } = probe;
        let pending = match vector {
            ProbeVector::Ready(vector) => {
                self.insert(key, vector, answer, ttl, exact_key);
                return;
            }
            ProbeVector::Pending(pending) => pending,
        };
        let Ok(permit) = Arc::clone(&self.stores).try_acquire_owned() else {
            self.metrics.semantic_stores.with_label_values(&["dropped"]).inc();
            return;
        };
        let cache = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match pending.wait().await {
                Some(vector) => cache.insert(key, vector, answer, ttl, exact_key),
                None => cache.metrics.semantic_stores.with_label_values(&["failed"]).inc(),
            }
        });
    }

    /// Inserts an entry with every owner of its partition.
    fn insert(&self, probe: ProbeKey, vector: Vec<f32>, answer: CachedAnswer, ttl: Option<Duration>, exact_key: Option<String>) {
        self.metrics.semantic_stores.with_label_values(&["stored"]).inc();
        let now = now_ms();
        let ttl_ms = i64::try_from(ttl.unwrap_or(self.settings.ttl).as_millis()).unwrap_or(i64::MAX);
        let entry = SemanticEntry {
            uid: rand::random::<u64>().max(1),
            context_key: probe.context_key,
            prompt: probe.prompt,
            exact_key,
            answer,
            created_ms: now,
            ttl_ms,
            hits: 0,
            last_used_ms: now,
        };
        let directory = self.directory.load();
        let partition = probe.partition;
        // Other owners first, each sent the same encoded insert; this node's shard last, given
        // the entry itself (no copy of the answer on a node alone).
        let mut local = None;
        let mut wire_insert = None;
        for node in directory.insert_nodes(partition) {
            match directory.route(node, partition) {
                Some(Route::Local(shard)) => local = Some(shard),
                Some(Route::Remote { peer, .. }) => {
                    let bytes = wire_insert.get_or_insert_with(|| {
                        wire::encode(&wire::ShardInsert { traceparent: wire::traceparent(), partition, entry: Some(wire::entry_to_wire(&entry, &vector)) })
                    });
                    if let Err(error) = peer.cast(CachePeerMessage::Insert(bytes.clone())) {
                        warn!(partition, node, %error, "failed to send a semantic entry to its owner");
                    }
                }
                None => warn!(partition, node, "no route to a semantic partition's owner"),
            }
        }
        if let Some(shard) = local
            && let Err(error) = shard.cast(ShardMessage::Insert { entry: Box::new(entry), vector })
        {
            warn!(partition, %error, "failed to store a semantic entry");
        }
    }

    /// Asks the nodes serving `partition` in the directory's order until one answers: its
    /// candidates and who gave them, or `None` when nobody did.
    async fn ask_shards(&self, partition: u32, context_key: &str, vector: &[f32]) -> Option<(Vec<Candidate>, Route)> {
        let directory = self.directory.load_full();
        let count = self.settings.candidates;
        let min_similarity = self.settings.policy.loose_similarity();
        for node in directory.lookup_nodes(partition) {
            let Some(route) = directory.route(node, partition) else { continue };
            match &route {
                Route::Local(shard) => {
                    let asked = ractor::call_t!(
                        shard,
                        |reply| ShardMessage::Lookup { context_key: context_key.to_owned(), vector: vector.to_vec(), count, min_similarity, reply },
                        SHARD_TIMEOUT.as_millis() as u64
                    );
                    match asked {
                        Ok(candidates) => return Some((candidates, route)),
                        Err(error) => warn!(partition, %error, "semantic shard did not answer; asking the next replica"),
                    }
                }
                Route::Remote { node, peer } => {
                    let span = info_span!("remote_lookup", partition, node = %node);
                    let lookup = wire::ShardLookup {
                        traceparent: span.in_scope(wire::traceparent),
                        partition,
                        context_key: context_key.to_owned(),
                        vector: vector.to_vec(),
                        count: u32::try_from(count).unwrap_or(u32::MAX),
                        min_similarity,
                    };
                    let asked_at = Instant::now();
                    let bytes = wire::encode(&lookup);
                    let timeout_ms = self.remote_lookup_timeout.as_millis() as u64;
                    let asked = async { ractor::call_t!(peer, |reply| CachePeerMessage::Lookup(bytes, reply), timeout_ms) }.instrument(span).await;
                    self.metrics.cluster_remote_lookup_duration.observe(asked_at.elapsed().as_secs_f64());
                    let outcome = match asked {
                        Ok(reply) => match wire::decode::<wire::ShardLookupReply>("shard lookup reply", &reply) {
                            Ok(reply) if reply.served => {
                                self.metrics.cluster_remote_lookups.with_label_values(&["answered"]).inc();
                                let candidates = reply.candidates.into_iter().filter_map(candidate_from_wire).collect();
                                return Some((candidates, route));
                            }
                            Ok(_) => "not_served",
                            Err(error) => {
                                warn!(partition, node = %node, %error, "unreadable lookup reply");
                                "error"
                            }
                        },
                        Err(ractor::RactorErr::Timeout) => "timeout",
                        Err(error) => {
                            debug!(partition, node = %node, %error, "remote shard unreachable");
                            "error"
                        }
                    };
                    self.metrics.cluster_remote_lookups.with_label_values(&[outcome]).inc();
                }
            }
        }
        None
    }

    /// Drops the matching entries from every shard of every node this node reaches.
    pub async fn invalidate(&self, what: &Invalidation) -> Result<(), String> {
        for shard in self.shards.iter() {
            shard.cast(ShardMessage::Invalidate(what.clone())).map_err(|error| format!("semantic shard unreachable: {error}"))?;
        }
        let bytes = wire::encode(&wire::invalidation_to_wire(what));
        for (node, peer) in &self.directory.load().peers {
            if let Err(error) = peer.cast(CachePeerMessage::Invalidate(bytes.clone())) {
                warn!(node = %node, %error, "invalidation not sent to a peer");
            }
        }
        Ok(())
    }

    /// The directory as it stands: partitions, their owners and this node's state for each.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.load_full()
    }

    /// Writes every shard's snapshot; the first failure is returned (the rest still run).
    pub async fn snapshot(&self) -> Result<(), String> {
        let mut first_error = None;
        for shard in self.shards.iter() {
            let written = ractor::call!(shard, ShardMessage::Snapshot).map_err(|error| error.to_string()).and_then(|written| written);
            if let Err(error) = written {
                warn!(%error, "semantic snapshot failed");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Entries held by every shard.
    pub async fn entries(&self) -> usize {
        let mut total = 0;
        for shard in self.shards.iter() {
            total += ractor::call!(shard, ShardMessage::Len).unwrap_or(0);
        }
        total
    }
}

/// How long a request may wait for its lookup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LookupBudget {
    /// The configured duration, whatever the prompt.
    Fixed(Duration),
    /// Sized at start ([`auto_budget`]): [`BUDGET_MULTIPLE`] times the median embedding of the
    /// probe text, grown in proportion to a longer prompt (an embedding's work grows with its
    /// tokens: a prompt of 1,000 characters takes several times the probe of about 40), within
    /// [`AUTO_BUDGET_BOUNDS`].
    Scaled {
        /// The budget of a prompt as long as the probe.
        per_probe: Duration,
    },
}

impl LookupBudget {
    /// The budget of a prompt `bytes` long.
    pub fn for_len(self, bytes: usize) -> Duration {
        match self {
            Self::Fixed(budget) => budget,
            Self::Scaled { per_probe } => {
                let scale = (bytes as f64 / BUDGET_PROBE.len() as f64).max(1.0);
                let (low, high) = AUTO_BUDGET_BOUNDS;
                per_probe.mul_f64(scale).clamp(low, high)
            }
        }
    }
}

/// The automatic lookup budget: [`BUDGET_MULTIPLE`] times the median of a few single embeddings
/// of the probe text timed now, scaled by each prompt's length ([`LookupBudget::Scaled`]).
async fn auto_budget(embedder: &EmbedderHandle) -> anyhow::Result<LookupBudget> {
    let mut took = Vec::with_capacity(BUDGET_PROBES);
    for probe in 0..BUDGET_PROBES {
        let started = Instant::now();
        embedder.embed(format!("{BUDGET_PROBE} {probe}")).await?;
        took.push(started.elapsed());
    }
    took.sort();
    Ok(LookupBudget::Scaled { per_probe: took[took.len() / 2] * BUDGET_MULTIPLE })
}

/// Counts a hit on the entry `id` of whoever answered.
fn count_hit(answered_by: &Route, partition: u32, id: u64) {
    match answered_by {
        Route::Local(shard) => {
            let _shard_gone = shard.cast(ShardMessage::Hit(id));
        }
        Route::Remote { peer, .. } => {
            let _peer_gone = peer.cast(CachePeerMessage::Hit(wire::encode(&wire::ShardHit { partition, local_id: id })));
        }
    }
}

/// A candidate from another node; a malformed one is skipped.
fn candidate_from_wire(candidate: wire::Candidate) -> Option<Candidate> {
    let entry = candidate.entry?;
    match wire::entry_from_wire(entry) {
        Ok((entry, vector)) => Some(Candidate { id: candidate.local_id, similarity: candidate.similarity, entry, vector }),
        Err(error) => {
            warn!(%error, "candidate skipped");
            None
        }
    }
}

/// A cached answer longer than the request allows is not an answer to it.
fn fits(candidate: &Candidate, max_tokens: Option<u32>) -> bool {
    max_tokens.is_none_or(|max| candidate.entry.answer.output_tokens <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automatic_budget_grows_with_the_prompt_within_its_bounds() {
        let budget = LookupBudget::Scaled { per_probe: Duration::from_millis(6) };
        assert_eq!(budget.for_len(10), Duration::from_millis(6), "a prompt shorter than the probe gets the probe's budget");
        assert_eq!(budget.for_len(BUDGET_PROBE.len() * 4), Duration::from_millis(24));
        assert_eq!(budget.for_len(100_000), AUTO_BUDGET_BOUNDS.1, "capped");
        let quick = LookupBudget::Scaled { per_probe: Duration::from_millis(1) };
        assert_eq!(quick.for_len(10), AUTO_BUDGET_BOUNDS.0, "never below the floor");
        assert_eq!(LookupBudget::Fixed(Duration::from_millis(12)).for_len(100_000), Duration::from_millis(12), "a configured budget is what it says");
    }
}
