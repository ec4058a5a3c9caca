//! The `[[experiments]]` sections: A/B tests and canary splits between models, validated into
//! [`ExperimentSettings`].
//!
//! ```toml
//! [[experiments]]
//! name = "canary-4o"
//! route = "gpt-4o-mini"          # requests naming this model or route enter the experiment
//! tiers = ["paid"]               # optional; also `tenants`
//! variants = [
//!   { name = "control", model = "gpt-4o-mini", weight = 95 },
//!   { name = "canary", model = "gpt-4o", weight = 5 },
//! ]
//! rollback = { margin = 0.05, window = "5m", min_requests = 50 }   # optional
//! ```

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;
use switchyard_actors::experiment::{ExperimentSettings, RollbackSettings, VariantSettings};
use switchyard_actors::model::Tier;

use super::{ConfigError, invalid};

/// One `[[experiments]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExperiment {
    name: String,
    route: String,
    #[serde(default)]
    tiers: Vec<Tier>,
    #[serde(default)]
    tenants: Vec<String>,
    variants: Vec<RawVariant>,
    #[serde(default)]
    rollback: Option<RawRollback>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    name: String,
    model: String,
    weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollback {
    margin: f64,
    #[serde(with = "humantime_serde")]
    window: Duration,
    #[serde(default = "default_min_requests")]
    min_requests: usize,
}

fn default_min_requests() -> usize {
    20
}

/// Validates every experiment: a unique name, a known route, at least two variants of known chat
/// models with unique names and a weight above 0 in all, a sane rollback.
pub(super) fn validate(raw: &[RawExperiment], routes: &HashSet<&str>, chat_models: &HashSet<&str>) -> Result<Vec<ExperimentSettings>, ConfigError> {
    let mut names = HashSet::new();
    let mut entered = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(index, experiment)| {
            let at = format!("experiments[{index}]");
            if !names.insert(experiment.name.as_str()) {
                return Err(invalid(format!("{at}.name"), format!("\"{}\" names two experiments", experiment.name)));
            }
            if !routes.contains(experiment.route.as_str()) && experiment.route != "auto" {
                return Err(invalid(format!("{at}.route"), format!("unknown model or route \"{}\"", experiment.route)));
            }
            if !entered.insert(experiment.route.as_str()) && experiment.tiers.is_empty() && experiment.tenants.is_empty() {
                return Err(invalid(format!("{at}.route"), format!("\"{}\" is split by an earlier experiment already", experiment.route)));
            }
            if experiment.variants.len() < 2 {
                return Err(invalid(format!("{at}.variants"), "needs at least two variants (a control, then the others)"));
            }
            let mut variant_names = HashSet::new();
            for (position, variant) in experiment.variants.iter().enumerate() {
                if !variant_names.insert(variant.name.as_str()) {
                    return Err(invalid(format!("{at}.variants[{position}].name"), format!("\"{}\" names two variants", variant.name)));
                }
                if !chat_models.contains(variant.model.as_str()) {
                    return Err(invalid(format!("{at}.variants[{position}].model"), format!("unknown chat model \"{}\"", variant.model)));
                }
            }
            if experiment.variants.iter().all(|variant| variant.weight == 0) {
                return Err(invalid(format!("{at}.variants"), "at least one weight must be above 0"));
            }
            let rollback = experiment
                .rollback
                .as_ref()
                .map(|rollback| {
                    if !(0.0..1.0).contains(&rollback.margin) {
                        return Err(invalid(format!("{at}.rollback.margin"), format!("{} is outside 0.0 .. 1.0", rollback.margin)));
                    }
                    if rollback.window.is_zero() || rollback.min_requests == 0 {
                        return Err(invalid(format!("{at}.rollback"), "window and min_requests must be above 0"));
                    }
                    Ok(RollbackSettings { margin: rollback.margin, window: rollback.window, min_requests: rollback.min_requests })
                })
                .transpose()?;
            Ok(ExperimentSettings {
                name: experiment.name.clone(),
                route: experiment.route.clone(),
                tiers: experiment.tiers.clone(),
                tenants: experiment.tenants.clone(),
                variants: experiment
                    .variants
                    .iter()
                    .map(|variant| VariantSettings { name: variant.name.clone(), model: variant.model.clone(), weight: variant.weight })
                    .collect(),
                rollback,
            })
        })
        .collect()
}
