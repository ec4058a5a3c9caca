//! The semantic layer as the request path sees it: embed the last user turn, ask the partition's
//! `CacheShard` for candidates from the same context, let the [`HitPolicy`] decide, and store
//! complete answers. Every shard is reached through an actor message, so a partition can live on
//! another node without this code changing.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorRef};
use tokio::time::Instant;
use tracing::{info, instrument, warn};

use crate::budget::period::now_ms;
use crate::cache::exact::{CachedAnswer, Invalidation};
use crate::cache::semantic::partition::{PARTITIONS, context_key, partition_of, semantic_prompt};
use crate::cache::semantic::policy::{HitPolicy, PolicyError};
use crate::cache::semantic::shard::{CacheShard, Candidate, SemanticEntry, ShardMessage, ShardMetrics, ShardSettings};
use crate::embed::{EmbedderHandle, EmbedderSettings};
use crate::metrics::Metrics;
use crate::model::ChatRequest;

/// Longest user turn looked up, in characters. The model reads at most 256 tokens; two long
/// prompts that differ only after that would look identical to it.
pub const DEFAULT_MAX_PROMPT_CHARS: usize = 1_000;

/// How long a lookup waits for its shard before treating the request as a miss.
const SHARD_TIMEOUT: Duration = Duration::from_millis(500);

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
#[derive(Clone, Debug)]
pub struct SemanticProbe {
    context_key: String,
    partition: u32,
    prompt: String,
    vector: Vec<f32>,
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
    shards: Arc<Vec<ActorRef<ShardMessage>>>,
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

    /// Starts the embedder and one shard per partition (each restoring its snapshot), and the
    /// snapshot timer.
    pub async fn start(settings: SemanticSettings, metrics: Arc<Metrics>) -> anyhow::Result<(Self, Vec<ActorCell>)> {
        let (default_threshold, route_thresholds) =
            thresholds(&settings).map_err(|wrong| anyhow::anyhow!("semantic cache precision for {}: {}", wrong.route.as_deref().unwrap_or("every route"), wrong.error))?;
        let (embedder, embedder_cell) = EmbedderHandle::start_observed(settings.embedder.clone(), Some(metrics.embedding_batch_size.clone())).await?;
        // One embedding up front: it tells the dimensions (a remote model's are not known before)
        // and takes the first-call cost off the first request.
        let dimensions = embedder.embed("warm up".into()).await?.len();
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
        info!(partitions = PARTITIONS, max_entries = settings.max_entries, default_threshold, "semantic cache ready");
        let cache = Self {
            embedder,
            shards: Arc::new(shards),
            default_threshold,
            route_thresholds: Arc::new(route_thresholds),
            settings: Arc::new(settings),
            metrics,
        };
        if cache.settings.data_dir.is_some() {
            let timer = cache.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(timer.settings.snapshot_interval);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    if timer.shards.iter().any(|shard| shard.get_status() != ractor::ActorStatus::Running) {
                        return;
                    }
                    let _logged = timer.snapshot().await;
                }
            });
        }
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
        let context_key = context_key(tenant, request);
        let partition = partition_of(&context_key);
        tracing::Span::current().record("partition", partition);
        let embed_started = Instant::now();
        let vector = match self.embedder.embed(prompt.to_owned()).await {
            Ok(vector) => vector,
            Err(error) => {
                warn!(%error, "embedding failed; the request goes on uncached");
                self.metrics.record_lookup("semantic", "error");
                return SemanticLookup::Skipped;
            }
        };
        self.metrics.embedding_duration.observe(embed_started.elapsed().as_secs_f64());
        let Some(shard) = self.shards.get(partition as usize) else {
            return SemanticLookup::Skipped;
        };
        let count = self.settings.candidates;
        let min_similarity = self.settings.policy.loose_similarity();
        let asked = ractor::call_t!(
            shard,
            |reply| ShardMessage::Lookup { context_key: context_key.clone(), vector: vector.clone(), count, min_similarity, reply },
            SHARD_TIMEOUT.as_millis() as u64
        );
        let candidates = match asked {
            Ok(candidates) => candidates,
            Err(error) => {
                warn!(partition, %error, "semantic shard did not answer; the request goes on uncached");
                self.metrics.record_lookup("semantic", "error");
                return SemanticLookup::Skipped;
            }
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
                let _shard_gone = shard.cast(ShardMessage::Hit(candidate.id));
                self.metrics.record_lookup("semantic", "hit");
                self.metrics.semantic_similarity.observe(f64::from(candidate.similarity));
                let span = tracing::Span::current();
                span.record("similarity", candidate.similarity);
                span.record("score", score);
                let found = SemanticMatch { similarity: candidate.similarity, entry: format!("{partition}-{}", candidate.id) };
                SemanticLookup::Hit(Arc::new(candidate.entry.answer), found)
            }
            None => {
                self.metrics.record_lookup("semantic", "miss");
                SemanticLookup::Miss(SemanticProbe { context_key, partition, prompt: prompt.to_owned(), vector })
            }
        }
    }

    /// Stores a complete answer under the probe of the lookup that missed, with the request's
    /// exact key (invalidating that key drops it too). Only answers that ended naturally are
    /// stored: one cut at `max_tokens` is not an answer to the question.
    pub fn store(&self, probe: SemanticProbe, answer: CachedAnswer, ttl: Option<Duration>, exact_key: Option<String>) {
        if answer.finish_reason != "stop" {
            return;
        }
        let Some(shard) = self.shards.get(probe.partition as usize) else { return };
        let now = now_ms();
        let ttl_ms = i64::try_from(ttl.unwrap_or(self.settings.ttl).as_millis()).unwrap_or(i64::MAX);
        let entry = SemanticEntry {
            context_key: probe.context_key,
            prompt: probe.prompt,
            exact_key,
            answer,
            created_ms: now,
            ttl_ms,
            hits: 0,
            last_used_ms: now,
        };
        if let Err(error) = shard.cast(ShardMessage::Insert { entry: Box::new(entry), vector: probe.vector }) {
            warn!(partition = probe.partition, %error, "failed to store a semantic entry");
        }
    }

    /// Drops the matching entries from every shard.
    pub async fn invalidate(&self, what: &Invalidation) -> Result<(), String> {
        for shard in self.shards.iter() {
            shard.cast(ShardMessage::Invalidate(what.clone())).map_err(|error| format!("semantic shard unreachable: {error}"))?;
        }
        Ok(())
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

/// A cached answer longer than the request allows is not an answer to it.
fn fits(candidate: &Candidate, max_tokens: Option<u32>) -> bool {
    max_tokens.is_none_or(|max| candidate.entry.answer.output_tokens <= max)
}
