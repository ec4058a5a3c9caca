//! A/B tests and canary splits between models (`[[experiments]]`). A request that names an
//! experiment's route (a model or route name), from a tier and tenant it covers, is given one of
//! its variants by weight — sticky per user: a hash of the experiment and the user picks the
//! variant, so one user always sees one variant while the weights stay — and is served by that
//! variant's model. Each variant counts its requests, upstream failures, latency, cost and cache
//! hits; a canary whose error rate over a window exceeds the control's by a margin is rolled back
//! by itself (its weight set to 0). Weights change at run time through the Admin API
//! ([`Experiments::set_weights`]): promotion and manual rollback without a restart.
//!
//! The state is the node's own: in a cluster each node splits and counts its own requests (the
//! hash makes every node pick the same variant for a user), and a rollback or a weight change
//! made on one node applies there.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::budget::NanoUsd;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::model::Tier;
use crate::tenancy::Principal;

/// One experiment as configured.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentSettings {
    /// Its name (in headers, metrics and the Admin API).
    pub name: String,
    /// The model or route name requests enter it by.
    pub route: String,
    /// Tiers it covers; empty: all.
    pub tiers: Vec<Tier>,
    /// Tenants it covers; empty: all.
    pub tenants: Vec<String>,
    /// The variants, the control first.
    pub variants: Vec<VariantSettings>,
    /// Automatic rollback, when configured.
    pub rollback: Option<RollbackSettings>,
}

/// One variant: a model and its share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantSettings {
    /// Its name (`control`, `canary`, …).
    pub name: String,
    /// The model that serves it.
    pub model: String,
    /// Its share of the experiment's requests, relative to the others' weights.
    pub weight: u32,
}

/// When a variant is rolled back by itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RollbackSettings {
    /// A variant is rolled back when its error rate exceeds the control's (the first variant's)
    /// by more than this (0.05: five points).
    pub margin: f64,
    /// Over the requests of the last `window`.
    pub window: Duration,
    /// Only once the variant has this many requests in the window.
    pub min_requests: usize,
}

/// Picks the variant for `user_hash` among `weights`: the hash's place in the total weight.
/// `None` when every weight is 0.
pub fn pick(weights: &[u32], user_hash: u64) -> Option<usize> {
    let total: u64 = weights.iter().map(|weight| u64::from(*weight)).sum();
    let mut point = user_hash.checked_rem(total)?;
    for (index, weight) in weights.iter().enumerate() {
        let weight = u64::from(*weight);
        if point < weight {
            return Some(index);
        }
        point -= weight;
    }
    None
}

/// The hash user `user` of `tenant` is placed by in `experiment` (xxh3 of the three: stable
/// across nodes and restarts).
pub fn user_hash(experiment: &str, tenant: &str, user: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in [experiment, tenant, user] {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    hasher.digest()
}

/// What a variant has served.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariantStats {
    /// Requests answered or failed upstream.
    pub requests: u64,
    /// Of those, not served by the variant's model (failed, or a fallback answered).
    pub errors: u64,
    /// Summed wall time, for the mean.
    pub latency_total: Duration,
    /// Charged cost.
    pub cost: NanoUsd,
    /// Answers served by a cache layer.
    pub cache_hits: u64,
}

/// A variant's report: settings, current weight and stats.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantReport {
    /// Name.
    pub name: String,
    /// Model.
    pub model: String,
    /// Weight now.
    pub weight: u32,
    /// What it has served since the node started.
    pub stats: VariantStats,
}

/// An experiment's report.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentReport {
    /// Name.
    pub name: String,
    /// The route it splits.
    pub route: String,
    /// Its variants.
    pub variants: Vec<VariantReport>,
    /// Why a variant was rolled back by itself, when one was.
    pub rolled_back: Option<String>,
}

#[derive(Debug)]
struct Experiment {
    settings: ExperimentSettings,
    state: Mutex<ExperimentState>,
}

#[derive(Debug)]
struct ExperimentState {
    weights: Vec<u32>,
    stats: Vec<VariantStats>,
    /// Per variant: (when, failed) of the requests within the rollback window.
    recent: Vec<VecDeque<(Instant, bool)>>,
    rolled_back: Option<String>,
}

/// The node's experiments. Shared behind an `Arc`.
#[derive(Debug)]
pub struct Experiments {
    experiments: Vec<Experiment>,
    metrics: Arc<Metrics>,
}

/// A request's place in an experiment; [`Assignment::record`] counts its outcome.
#[derive(Debug)]
pub struct Assignment {
    experiments: Arc<Experiments>,
    experiment: usize,
    variant: usize,
    started: Instant,
}

impl Experiments {
    /// The experiments of `settings` (validated by the config loader).
    pub fn new(settings: Vec<ExperimentSettings>, metrics: Arc<Metrics>) -> Arc<Self> {
        let experiments = settings
            .into_iter()
            .map(|settings| {
                let count = settings.variants.len();
                let state = ExperimentState {
                    weights: settings.variants.iter().map(|variant| variant.weight).collect(),
                    stats: vec![VariantStats::default(); count],
                    recent: vec![VecDeque::new(); count],
                    rolled_back: None,
                };
                Experiment { settings, state: Mutex::new(state) }
            })
            .collect();
        Arc::new(Self { experiments, metrics })
    }

    /// Places a request naming `route` by `principal` (end user `user` of the principal's tenant,
    /// tier `tier`) in the first experiment that covers it: the variant and its model. `None` when
    /// none does.
    pub fn assign(self: &Arc<Self>, principal: &Principal, user: &str, tier: Tier, route: &str) -> Option<(Assignment, String)> {
        let (index, experiment) = self.experiments.iter().enumerate().find(|(_, experiment)| {
            let settings = &experiment.settings;
            settings.route == route
                && (settings.tiers.is_empty() || settings.tiers.contains(&tier))
                && (settings.tenants.is_empty() || settings.tenants.contains(&principal.tenant))
        })?;
        let variant = pick(&lock(&experiment.state).weights, user_hash(&experiment.settings.name, &principal.tenant, user))?;
        let model = experiment.settings.variants[variant].model.clone();
        Some((Assignment { experiments: Arc::clone(self), experiment: index, variant, started: Instant::now() }, model))
    }

    /// Every experiment's variants, weights and stats.
    pub fn report(&self) -> Vec<ExperimentReport> {
        self.experiments
            .iter()
            .map(|experiment| {
                let state = lock(&experiment.state);
                ExperimentReport {
                    name: experiment.settings.name.clone(),
                    route: experiment.settings.route.clone(),
                    variants: experiment
                        .settings
                        .variants
                        .iter()
                        .zip(state.weights.iter().zip(&state.stats))
                        .map(|(variant, (weight, stats))| VariantReport {
                            name: variant.name.clone(),
                            model: variant.model.clone(),
                            weight: *weight,
                            stats: stats.clone(),
                        })
                        .collect(),
                    rolled_back: state.rolled_back.clone(),
                }
            })
            .collect()
    }

    /// Sets the weights of experiment `name` (every variant named, not all zero): promotes a
    /// canary, or rolls it back, without a restart. Changes nothing on an error.
    pub fn set_weights(&self, name: &str, weights: &[(String, u32)]) -> Result<(), GatewayError> {
        let experiment = self
            .experiments
            .iter()
            .find(|experiment| experiment.settings.name == name)
            .ok_or_else(|| GatewayError::NotFound { what: "experiment", id: name.to_owned() })?;
        let variants = &experiment.settings.variants;
        let mut new = vec![None; variants.len()];
        for (variant, weight) in weights {
            let index = variants
                .iter()
                .position(|known| &known.name == variant)
                .ok_or_else(|| GatewayError::invalid("weights", format!("experiment \"{name}\" has no variant \"{variant}\"")))?;
            new[index] = Some(*weight);
        }
        let new: Vec<u32> = match new.iter().zip(variants).find(|(weight, _)| weight.is_none()) {
            Some((_, missing)) => return Err(GatewayError::invalid("weights", format!("variant \"{}\" has no weight", missing.name))),
            None => new.into_iter().flatten().collect(),
        };
        if new.iter().all(|weight| *weight == 0) {
            return Err(GatewayError::invalid("weights", "at least one weight must be above 0"));
        }
        let mut state = lock(&experiment.state);
        state.weights = new;
        state.rolled_back = None;
        Ok(())
    }
}

/// What [`Experiments::reload`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Experiments whose weights were set from the reloaded config.
    pub reweighted: Vec<String>,
    /// Experiments added, removed or with other variants in the reloaded config: they change at
    /// the next restart.
    pub need_restart: Vec<String>,
}

impl Experiments {
    /// Applies the weights of a reloaded config to the experiments it names with the same
    /// variants (clearing an automatic rollback: the operator has spoken); anything else about an
    /// experiment, and experiments added or removed, wait for a restart.
    pub fn reload(&self, settings: &[ExperimentSettings]) -> ReloadOutcome {
        let mut outcome = ReloadOutcome::default();
        for experiment in &self.experiments {
            let current = &experiment.settings;
            let same_variants = |new: &ExperimentSettings| {
                new.variants.len() == current.variants.len()
                    && new.variants.iter().zip(&current.variants).all(|(new, old)| new.name == old.name && new.model == old.model)
            };
            match settings.iter().find(|new| new.name == current.name) {
                Some(new) if same_variants(new) => {
                    let mut state = lock(&experiment.state);
                    state.weights = new.variants.iter().map(|variant| variant.weight).collect();
                    state.rolled_back = None;
                    outcome.reweighted.push(current.name.clone());
                }
                _ => outcome.need_restart.push(current.name.clone()),
            }
        }
        let added = settings.iter().filter(|new| !self.experiments.iter().any(|known| known.settings.name == new.name));
        outcome.need_restart.extend(added.map(|new| new.name.clone()));
        outcome
    }
}

impl Assignment {
    /// `experiment/variant`, as answers and cost events name it.
    pub fn label(&self) -> String {
        let experiment = &self.experiments.experiments[self.experiment].settings;
        format!("{}/{}", experiment.name, experiment.variants[self.variant].name)
    }

    /// Counts the request's outcome (`failed`: the variant's model did not serve it — an error,
    /// or a fallback model answered) and rolls a variant back
    /// when its error rate has left the control's behind by the margin.
    pub fn record(self, failed: bool, cost: NanoUsd, cache_hit: bool) {
        let experiment = &self.experiments.experiments[self.experiment];
        let settings = &experiment.settings;
        let variant = &settings.variants[self.variant].name;
        let result = if failed { "error" } else { "ok" };
        self.experiments.metrics.experiment_requests.with_label_values(&[&settings.name, variant, result]).inc();
        let now = Instant::now();
        let mut state = lock(&experiment.state);
        let stats = &mut state.stats[self.variant];
        stats.requests += 1;
        stats.errors += u64::from(failed);
        stats.latency_total += now.duration_since(self.started);
        stats.cost = stats.cost.plus(cost);
        stats.cache_hits += u64::from(cache_hit);
        let Some(rollback) = settings.rollback else { return };
        state.recent[self.variant].push_back((now, failed));
        for recent in &mut state.recent {
            while recent.front().is_some_and(|(when, _)| now.duration_since(*when) > rollback.window) {
                recent.pop_front();
            }
        }
        let rate = |recent: &VecDeque<(Instant, bool)>| recent.iter().filter(|(_, failed)| *failed).count() as f64 / recent.len().max(1) as f64;
        let control = rate(&state.recent[0]);
        let worse = (1..settings.variants.len()).find(|index| {
            let recent = &state.recent[*index];
            state.weights[*index] > 0 && recent.len() >= rollback.min_requests && rate(recent) > control + rollback.margin
        });
        if let Some(index) = worse {
            let reason = format!(
                "variant \"{}\" rolled back: error rate {:.3} over the last {} requests against the control's {control:.3}",
                settings.variants[index].name,
                rate(&state.recent[index]),
                state.recent[index].len()
            );
            warn!(experiment = %settings.name, variant = %settings.variants[index].name, "{reason}");
            self.experiments.metrics.experiment_rollbacks.with_label_values(&[&settings.name, &settings.variants[index].name]).inc();
            state.weights[index] = 0;
            state.recent[index].clear();
            state.rolled_back = Some(reason);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_over_ten_thousand_users_keeps_its_weights_and_each_user_keeps_a_variant() {
        let weights = [95, 5];
        let mut counts = [0u32; 2];
        for user in 0..10_000 {
            let hash = user_hash("canary", "acme", &format!("user-{user}"));
            let variant = pick(&weights, hash).unwrap_or(9);
            counts[variant] += 1;
            assert_eq!(pick(&weights, user_hash("canary", "acme", &format!("user-{user}"))), Some(variant), "sticky");
        }
        // Binomial(10,000, 0.05): mean 500, standard deviation ~21.8; four deviations either way.
        assert!((413..=587).contains(&counts[1]), "{counts:?}");
        let mut halves = [0u32; 2];
        for user in 0..10_000 {
            halves[pick(&[50, 50], user_hash("ab", "acme", &format!("user-{user}"))).unwrap_or(9)] += 1;
        }
        // Binomial(10,000, 0.5): standard deviation 50.
        assert!((4800..=5200).contains(&halves[0]), "{halves:?}");
    }

    #[test]
    fn another_experiment_places_the_same_users_independently() {
        let same = (0..2_000).filter(|user| {
            let user = format!("user-{user}");
            pick(&[50, 50], user_hash("one", "acme", &user)) == pick(&[50, 50], user_hash("two", "acme", &user))
        });
        let same = same.count();
        assert!((850..=1150).contains(&same), "{same}");
    }

    #[test]
    fn zero_weights_pick_nothing_and_a_zero_weight_is_never_picked() {
        assert_eq!(pick(&[0, 0], 7), None);
        assert!((0..1_000).all(|hash| pick(&[0, 3], hash) == Some(1)));
    }
}
