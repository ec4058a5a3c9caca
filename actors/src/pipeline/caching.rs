//! Both cache layers as steps of the pipeline (DESIGN.md §1, steps 4, 5 and 9): the exact layer
//! first, the semantic layer on its miss, and after an upstream answer, storing it in both.

use std::sync::Arc;
use std::time::Duration;

use crate::budget::NanoUsd;
use crate::cache::semantic::{SemanticCache, SemanticLookup, SemanticMatch, SemanticProbe};
use crate::cache::{CachedAnswer, ExactCache, Invalidation, Lookup};
use crate::cache::key::exact_key;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::model::{CacheLayer, ChatRequest, Completion, Target};
use crate::tenancy::Principal;

/// The node's cache layers; either may be off.
#[derive(Clone, Debug)]
pub(crate) struct Caches {
    pub exact: Option<ExactCache>,
    pub semantic: Option<SemanticCache>,
    pub metrics: Arc<Metrics>,
}

/// A cached answer that serves the request.
#[derive(Debug)]
pub(crate) struct CacheHit {
    /// The answer.
    pub answer: Arc<CachedAnswer>,
    /// The layer that had it.
    pub layer: CacheLayer,
    /// For a semantic hit: how similar, and which entry.
    pub semantic: Option<SemanticMatch>,
}

impl CacheHit {
    /// The routing reason a hit reports.
    pub fn reason(&self) -> String {
        match &self.semantic {
            Some(found) => format!("semantic cache hit (similarity {:.3}, entry {})", found.similarity, found.entry),
            None => "exact cache hit".into(),
        }
    }
}

/// What a lookup leaves for storing the answer: where it goes in each layer.
#[derive(Debug)]
pub(crate) struct CacheProbe {
    /// The request's exact key, when a layer is on and not bypassed: the exact layer's key, and
    /// what invalidates the request's entries in both layers.
    pub exact_key: Option<String>,
    /// Whether the exact layer stores under `exact_key` (it is on).
    exact_layer: bool,
    semantic: Option<SemanticProbe>,
    tenant: String,
    route: String,
    ttl: Option<Duration>,
    no_store: bool,
}

impl CacheProbe {
    /// The entry both layers store for an answer to the probed request.
    pub fn entry(&self, completion: &Completion, target: &Target, cost: Option<NanoUsd>) -> CachedAnswer {
        let Completion { text, tool_calls, finish_reason, usage, .. } = completion;
        CachedAnswer {
            embeddings: Vec::new(),
            tenant: self.tenant.clone(),
            route: self.route.clone(),
            text: text.clone(),
            tool_calls: tool_calls.clone(),
            model: target.model.clone(),
            provider: target.provider.clone(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            finish_reason: finish_reason.as_str().to_owned(),
            cost_nano_usd: cost.map(|cost| cost.0),
            created_ms: crate::budget::period::now_ms(),
        }
    }

    /// True when an answer to the request is stored anywhere.
    pub fn stores(&self) -> bool {
        !self.no_store && ((self.exact_layer && self.exact_key.is_some()) || self.semantic.is_some())
    }
}

impl Caches {
    /// Looks `request` up in the exact layer, then the semantic one. `bypass` skips both (and
    /// storing), and so does asking for log-probabilities (a cached answer keeps none); an
    /// unavailable layer is a miss, never a failure.
    pub async fn lookup(&self, principal: &Principal, request: &ChatRequest) -> (CacheProbe, Option<CacheHit>) {
        let mut probe = CacheProbe {
            exact_key: None,
            exact_layer: self.exact.is_some(),
            semantic: None,
            tenant: principal.tenant.clone(),
            route: request.model.clone().unwrap_or_else(|| "auto".into()),
            ttl: request.cache.ttl_seconds.map(|seconds| Duration::from_secs(u64::from(seconds))),
            no_store: request.cache.no_store,
        };
        let skip = if request.cache.bypass {
            Some("bypass")
        } else {
            request.sampling.logprobs.is_some().then_some("skipped")
        };
        if let Some(result) = skip {
            for (layer, on) in [("exact", self.exact.is_some()), ("semantic", self.semantic.is_some())] {
                if on {
                    self.metrics.record_lookup(layer, result);
                }
            }
            return (probe, None);
        }
        if self.exact.is_none() && self.semantic.is_none() {
            return (probe, None);
        }
        let key = exact_key(&principal.tenant, request);
        if let Some(exact) = &self.exact
            && let Some(answer) = exact_lookup(exact, &key, &self.metrics).await
        {
            probe.exact_key = Some(key);
            return (probe, Some(CacheHit { answer, layer: CacheLayer::Exact, semantic: None }));
        }
        probe.exact_key = Some(key);
        if let Some(semantic) = &self.semantic {
            match semantic.lookup(&principal.tenant, request).await {
                SemanticLookup::Hit(answer, found) => {
                    return (probe, Some(CacheHit { answer, layer: CacheLayer::Semantic, semantic: Some(found) }));
                }
                SemanticLookup::Miss(semantic_probe) => probe.semantic = Some(semantic_probe),
                SemanticLookup::Skipped => {}
            }
        }
        (probe, None)
    }

    /// Stores an upstream answer in every layer the probe reached, unless the request said
    /// `no-store`.
    pub async fn store(&self, probe: CacheProbe, answer: CachedAnswer) {
        if probe.no_store {
            return;
        }
        if let (Some(semantic), Some(semantic_probe)) = (&self.semantic, probe.semantic) {
            semantic.store(semantic_probe, answer.clone(), probe.ttl, probe.exact_key.clone());
        }
        if let (Some(exact), Some(key)) = (&self.exact, probe.exact_key) {
            exact.put(key, answer, probe.ttl).await;
        }
    }

    /// Drops the matching entries from both layers.
    pub async fn invalidate(&self, what: &Invalidation) -> Result<(), GatewayError> {
        if let Some(semantic) = &self.semantic {
            semantic.invalidate(what).await.map_err(|error| GatewayError::Internal(format!("semantic cache invalidation failed: {error}")))?;
        }
        if let Some(exact) = &self.exact {
            exact.invalidate(what).await.map_err(|error| GatewayError::Internal(format!("cache invalidation failed: {error}")))?;
        }
        Ok(())
    }
}

/// Looks `key` up in the exact layer, counting the lookup; an unavailable backing is a miss.
#[tracing::instrument(name = "exact_cache", skip_all)]
pub(super) async fn exact_lookup(cache: &ExactCache, key: &str, metrics: &Metrics) -> Option<Arc<CachedAnswer>> {
    match cache.get(key).await {
        Lookup::Hit(cached) => {
            metrics.record_lookup("exact", "hit");
            Some(cached)
        }
        Lookup::Miss => {
            metrics.record_lookup("exact", "miss");
            None
        }
        Lookup::Unavailable => {
            metrics.record_lookup("exact", "error");
            None
        }
    }
}
