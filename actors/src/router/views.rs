//! Provider health as every node sees it, combined into the one table the routing policy reads.
//!
//! Each node's pools measure their own attempts; the router holds one view per (node, provider)
//! and combines them per provider (and per model) so that what one node learns, every node acts
//! on:
//! - **availability**: a provider is unavailable when its circuit is open on this node, or on any
//!   node whose view is fresh: an open circuit anywhere is known everywhere;
//! - **error rate**: the worst recent one wins: this node's, and each other node's that made an
//!   attempt within [`RECENT`] (an old error rate of a node that has stopped calling the provider
//!   says nothing of it now, and would otherwise keep it avoided forever);
//! - **latency and time to first token**: this node's own (the path from this node is what its
//!   requests will take), or, before it has any, the mean of the other nodes';
//! - **rate-limit headroom**: the least any node last saw (the upstream account is shared);
//! - **attempts**: the sum.
//!
//! A view from another node is fresh for [`STALE_AFTER`]: pools repeat their health every
//! [`REPEAT_EVERY`] while the node is clustered, so a node that dies or is cut off drops out of
//! the table within [`STALE_AFTER`].

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::provider::health::{HealthStats, ProviderHealth};
use crate::router::policy::HealthTable;

/// How often a clustered pool repeats its health to the other nodes' routers.
pub const REPEAT_EVERY: Duration = Duration::from_secs(1);
/// A view from another node not refreshed for this long is dropped.
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// Another node's error rate counts while its last attempt is at most this old.
pub const RECENT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
struct View {
    health: ProviderHealth,
    /// The sender's idle time when the view arrived.
    idle: Option<Duration>,
    received: Instant,
}

impl View {
    fn recent(&self, now: Instant) -> bool {
        self.idle.is_some_and(|idle| idle + now.saturating_duration_since(self.received) <= RECENT)
    }
}

/// Every node's view of every provider, and the combination the policy reads.
#[derive(Debug)]
pub struct HealthViews {
    this_node: String,
    views: HashMap<(String, String), View>,
}

impl HealthViews {
    /// No view yet; `this_node` names the views of this node's own pools.
    pub fn new(this_node: &str) -> Self {
        Self { this_node: this_node.to_owned(), views: HashMap::new() }
    }

    /// Records `node`'s view of a provider.
    pub fn record(&mut self, node: String, health: ProviderHealth, idle: Option<Duration>, now: Instant) {
        self.views.insert((node, health.provider.clone()), View { health, idle, received: now });
    }

    /// Drops other nodes' views not refreshed within [`STALE_AFTER`]; true if any was.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.views.len();
        let this_node = &self.this_node;
        self.views.retain(|(node, _), view| node == this_node || now.saturating_duration_since(view.received) < STALE_AFTER);
        self.views.len() != before
    }

    /// Nodes with a view of `provider`, this node's first if it has one.
    pub fn nodes_of(&self, provider: &str) -> Vec<&str> {
        let mut nodes: Vec<&str> = self.views.keys().filter(|(_, name)| name == provider).map(|(node, _)| node.as_str()).collect();
        nodes.sort_unstable_by_key(|node| (*node != self.this_node, *node));
        nodes
    }

    /// The combined table, one entry per provider any node has a view of.
    pub fn combined(&self, now: Instant) -> HealthTable {
        let mut by_provider: HashMap<&str, (Option<&View>, Vec<&View>)> = HashMap::new();
        for ((node, provider), view) in &self.views {
            let slot = by_provider.entry(provider.as_str()).or_default();
            if *node == self.this_node {
                slot.0 = Some(view);
            } else if now.saturating_duration_since(view.received) < STALE_AFTER {
                slot.1.push(view);
            }
        }
        by_provider
            .into_iter()
            .filter_map(|(provider, (local, remote))| {
                let any = local.or_else(|| remote.first().copied())?;
                let available = local.is_none_or(|view| view.health.available) && remote.iter().all(|view| view.health.available);
                let recent: Vec<&HealthStats> = remote.iter().filter(|view| view.recent(now)).map(|view| &view.health.stats).collect();
                let all: Vec<&HealthStats> = remote.iter().map(|view| &view.health.stats).collect();
                let stats = combine(local.map(|view| &view.health.stats), &recent, &all);
                let mut models: HashMap<String, HealthStats> = HashMap::new();
                let names: std::collections::BTreeSet<&String> = local.into_iter().chain(remote.iter().copied()).flat_map(|view| view.health.models.keys()).collect();
                for name in names {
                    let recent_models: Vec<&HealthStats> = remote.iter().filter(|view| view.recent(now)).filter_map(|view| view.health.models.get(name)).collect();
                    let all_models: Vec<&HealthStats> = remote.iter().filter_map(|view| view.health.models.get(name)).collect();
                    models.insert(name.clone(), combine(local.and_then(|view| view.health.models.get(name)), &recent_models, &all_models));
                }
                let health = ProviderHealth { provider: any.health.provider.clone(), available, stats, models };
                Some((provider.to_owned(), health))
            })
            .collect()
    }
}

/// Combines this node's figures with other nodes': `recent` are those whose error rate counts,
/// `all` every fresh one.
fn combine(local: Option<&HealthStats>, recent: &[&HealthStats], all: &[&HealthStats]) -> HealthStats {
    let mean = |values: Vec<f64>| (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
    let error_rate = local.iter().chain(recent).map(|stats| stats.error_rate).fold(0.0, f64::max);
    let latency_ema_ms = local.and_then(|stats| stats.latency_ema_ms).or_else(|| mean(all.iter().filter_map(|stats| stats.latency_ema_ms).collect()));
    let ttft_ema_ms = local.and_then(|stats| stats.ttft_ema_ms).or_else(|| mean(all.iter().filter_map(|stats| stats.ttft_ema_ms).collect()));
    let rate_limit_remaining = local.iter().chain(all).filter_map(|stats| stats.rate_limit_remaining).min();
    let attempts = local.iter().chain(all).map(|stats| stats.attempts).sum();
    HealthStats { latency_ema_ms, ttft_ema_ms, error_rate, attempts, rate_limit_remaining }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn health(available: bool, error_rate: f64, latency: f64, headroom: Option<u64>) -> ProviderHealth {
        let stats = HealthStats { latency_ema_ms: Some(latency), ttft_ema_ms: None, error_rate, attempts: 10, rate_limit_remaining: headroom };
        ProviderHealth { provider: "openai".into(), available, stats: stats.clone(), models: HashMap::from([("gpt".to_owned(), stats)]) }
    }

    const BUSY: Option<Duration> = Some(Duration::from_millis(5));

    #[test]
    fn alone_the_table_is_this_nodes_own() {
        let now = Instant::now();
        let mut views = HealthViews::new("a");
        views.record("a".into(), health(true, 0.05, 120.0, Some(7)), BUSY, now);
        let table = views.combined(now);
        assert_eq!(table["openai"], health(true, 0.05, 120.0, Some(7)));
    }

    #[test]
    fn an_open_circuit_anywhere_and_the_worst_recent_error_rate_win_latency_stays_local() {
        let now = Instant::now();
        let mut views = HealthViews::new("b");
        views.record("b".into(), health(true, 0.0, 100.0, Some(50)), BUSY, now);
        views.record("a".into(), health(true, 0.6, 900.0, Some(20)), BUSY, now);
        let table = views.combined(now);
        let openai = &table["openai"];
        assert!(openai.available);
        assert!((openai.stats.error_rate - 0.6).abs() < 1e-9);
        assert!((openai.model_stats("gpt").error_rate - 0.6).abs() < 1e-9, "per model too");
        assert_eq!(openai.stats.latency_ema_ms, Some(100.0), "this node's own latency");
        assert_eq!(openai.stats.rate_limit_remaining, Some(20), "the least headroom");
        assert_eq!(openai.stats.attempts, 20);

        views.record("a".into(), health(false, 0.6, 900.0, Some(20)), BUSY, now);
        assert!(!views.combined(now)["openai"].available, "a circuit open on A is open on B");
        assert_eq!(views.nodes_of("openai"), vec!["b", "a"]);
    }

    #[test]
    fn an_idle_nodes_error_rate_and_a_stale_view_stop_counting() {
        let now = Instant::now();
        let mut views = HealthViews::new("b");
        views.record("b".into(), health(true, 0.0, 100.0, None), BUSY, now);
        views.record("a".into(), health(true, 0.9, 100.0, None), Some(RECENT), now);
        assert!(views.combined(now + Duration::from_millis(1))["openai"].stats.error_rate < 1e-9, "A has not called it for longer than RECENT");

        views.record("a".into(), health(false, 0.9, 100.0, None), BUSY, now);
        let later = now + STALE_AFTER;
        assert!(views.combined(later)["openai"].available, "a stale view does not count");
        assert!(views.expire(later));
        assert_eq!(views.nodes_of("openai"), vec!["b"]);
        assert!(!views.expire(later + STALE_AFTER), "this node's own views never expire");
    }

    #[test]
    fn a_provider_only_other_nodes_have_called_takes_their_figures() {
        let now = Instant::now();
        let mut views = HealthViews::new("c");
        views.record("a".into(), health(true, 0.2, 100.0, None), BUSY, now);
        views.record("b".into(), health(true, 0.1, 300.0, None), BUSY, now);
        let openai = &views.combined(now)["openai"];
        assert_eq!(openai.stats.latency_ema_ms, Some(200.0), "the mean of the other nodes' latency");
        assert!((openai.stats.error_rate - 0.2).abs() < 1e-9);
    }
}
