//! The routing policy: configured models, named routes, ordered rules and a preference order,
//! evaluated against a [`RoutingContext`] and the live provider health.
//!
//! Rules are tried in order; the first whose conditions hold and whose target is available wins.
//! Without a matching rule the first available model in preference order serves. A request that
//! names a model gets it, with its fallbacks, unless its tier may not use it; one that names a
//! route gets the first available model of the route.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::error::GatewayError;
use crate::model::{ModelSelection, Quality, RoutingContext, Target, Tier, Usage};
use crate::provider::health::ProviderHealth;

/// Live health of every provider, by provider name.
pub type HealthTable = foldhash::HashMap<String, ProviderHealth>;

/// USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    /// Per million input tokens.
    pub input_usd_per_mtok: f64,
    /// Per million output tokens.
    pub output_usd_per_mtok: f64,
    /// Per million input tokens served from the provider's prompt cache; the input price when unset.
    pub cached_input_usd_per_mtok: Option<f64>,
    /// Per million input tokens written to the provider's prompt cache (Anthropic bills them
    /// above the input price); the input price when unset.
    pub cache_write_input_usd_per_mtok: Option<f64>,
}

impl Price {
    /// The cost of `usage` in dollars.
    pub fn cost(&self, usage: Usage) -> f64 {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let written = usage.cache_write_input_tokens.min(usage.input_tokens - cached);
        let fresh = usage.input_tokens - cached - written;
        let cached_price = self.cached_input_usd_per_mtok.unwrap_or(self.input_usd_per_mtok);
        let write_price = self.cache_write_input_usd_per_mtok.unwrap_or(self.input_usd_per_mtok);
        (f64::from(fresh) * self.input_usd_per_mtok
            + f64::from(cached) * cached_price
            + f64::from(written) * write_price
            + f64::from(usage.output_tokens) * self.output_usd_per_mtok)
            / 1_000_000.0
    }

    /// What `usage` is charged: its [`Price::cost`] in nanodollars. Every charge and every
    /// reservation of the gateway is priced here.
    pub fn charge(&self, usage: Usage) -> crate::budget::NanoUsd {
        crate::budget::NanoUsd::from_usd(self.cost(usage))
    }
}

#[cfg(test)]
mod price_tests {
    use super::*;

    #[test]
    fn cached_input_is_priced_apart_when_configured() {
        let usage = Usage { input_tokens: 1000, output_tokens: 100, cached_input_tokens: 800, cache_write_input_tokens: 150 };
        let plain = Price { input_usd_per_mtok: 2.0, output_usd_per_mtok: 10.0, cached_input_usd_per_mtok: None, cache_write_input_usd_per_mtok: None };
        assert!((plain.cost(usage) - (1000.0 * 2.0 + 100.0 * 10.0) / 1e6).abs() < 1e-15);
        let cached = Price { cached_input_usd_per_mtok: Some(0.5), cache_write_input_usd_per_mtok: Some(2.5), ..plain };
        assert!((cached.cost(usage) - (50.0 * 2.0 + 800.0 * 0.5 + 150.0 * 2.5 + 100.0 * 10.0) / 1e6).abs() < 1e-15);
        // Reads and writes never count more input than there was.
        let over = Usage { input_tokens: 100, output_tokens: 0, cached_input_tokens: 80, cache_write_input_tokens: 80 };
        assert!((cached.cost(over) - (80.0 * 0.5 + 20.0 * 2.5) / 1e6).abs() < 1e-15);
    }
}

/// What a model does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Answers chat requests.
    #[default]
    Chat,
    /// Embeds texts (`POST /v1/embeddings`); never chosen for a chat request.
    Embedding,
}

/// One model clients can ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSettings {
    /// The name clients use.
    pub name: String,
    /// Chat or embedding.
    pub kind: ModelKind,
    /// The provider serving it.
    pub provider: String,
    /// The name the provider knows it by.
    pub upstream_model: String,
    /// How good it is.
    pub quality: Quality,
    /// Tiers allowed to use it; empty for every tier.
    pub tiers: Vec<Tier>,
    /// Price; `None` when unknown (cost is then reported as unknown, never as zero).
    pub price: Option<Price>,
    /// Models to fall back to, in order.
    pub fallbacks: Vec<String>,
}

impl ModelSettings {
    fn chats(&self) -> bool {
        self.kind == ModelKind::Chat
    }

    fn allows(&self, context: &RoutingContext) -> bool {
        (self.tiers.is_empty() || self.tiers.contains(&context.tier))
            && (context.allowed_models.is_empty() || context.allowed_models.contains(&self.name))
    }

    fn target(&self) -> Target {
        Target { model: self.name.clone(), provider: self.provider.clone(), upstream_model: self.upstream_model.clone() }
    }
}

/// One routing rule: conditions on the request and a target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingRule {
    /// Name shown in the routing reason.
    pub name: String,
    /// Matches these tiers; empty for any.
    pub tiers: Vec<Tier>,
    /// Matches these quality requirements; empty for any.
    pub qualities: Vec<Quality>,
    /// Matches these task types; empty for any.
    pub task_types: Vec<String>,
    /// Matches requests whose latency budget is below this many milliseconds.
    pub latency_budget_below_ms: Option<u32>,
    /// Matches requests estimated below this many tokens.
    pub estimated_tokens_below: Option<u64>,
    /// The target: this model, or (when `None`) the self-hosted model with the lowest latency EMA.
    pub model: Option<String>,
    /// The target must have a latency EMA below this (a model with no samples yet qualifies).
    pub max_latency_ema_ms: Option<f64>,
}

/// The whole policy.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingPolicy {
    models: Vec<ModelSettings>,
    /// Position of each model in `models`, by name (looked up several times per request: a fast
    /// hasher).
    index: foldhash::HashMap<String, usize>,
    /// Each model's target, built once: a selection shares them instead of copying names.
    targets: Vec<Arc<Target>>,
    self_hosted: HashSet<String>,
    routes: HashMap<String, Vec<String>>,
    rules: Vec<RoutingRule>,
    preference: Vec<String>,
    max_error_rate: f64,
}

impl RoutingPolicy {
    /// Builds a policy. Names must already be validated against each other (the node's config
    /// validation does that and reports every bad reference by key).
    pub fn new(
        models: Vec<ModelSettings>,
        self_hosted_providers: HashSet<String>,
        routes: HashMap<String, Vec<String>>,
        rules: Vec<RoutingRule>,
        preference: Vec<String>,
        max_error_rate: f64,
    ) -> Self {
        let index = models.iter().enumerate().map(|(position, model)| (model.name.clone(), position)).collect();
        let targets = models.iter().map(|model| Arc::new(model.target())).collect();
        Self { models, index, targets, self_hosted: self_hosted_providers, routes, rules, preference, max_error_rate }
    }

    /// The price of `model`; `None` when it is unknown or has none.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.model(model)?.price
    }

    /// The configured model called `name`.
    pub fn model(&self, name: &str) -> Option<&ModelSettings> {
        self.index.get(name).map(|position| &self.models[*position])
    }

    /// The target of `model`, one of this policy's.
    fn target(&self, model: &ModelSettings) -> Arc<Target> {
        self.index.get(&model.name).map_or_else(|| Arc::new(model.target()), |position| Arc::clone(&self.targets[*position]))
    }

    /// Every configured model, in config order.
    pub fn models(&self) -> &[ModelSettings] {
        &self.models
    }

    /// What a caller in `context` (its tier and its key's allowed names) may name: each model it
    /// may use, with its provider, then each route with at least one model it may use (owned by
    /// `switchyard`), as selection would judge them. Sorted by name within each kind.
    pub fn usable(&self, context: &RoutingContext) -> Vec<(String, String)> {
        let named = |name: &str| context.allowed_models.is_empty() || context.allowed_models.contains(name);
        let mut models: Vec<(String, String)> =
            self.models.iter().filter(|model| model.allows(context)).map(|model| (model.name.clone(), model.provider.clone())).collect();
        models.sort();
        let mut routes: Vec<(String, String)> = self
            .routes
            .iter()
            .filter(|(route, members)| named(route) && members.iter().filter_map(|name| self.model(name)).any(|model| model.allows(context)))
            .map(|(route, _)| (route.clone(), "switchyard".to_owned()))
            .collect();
        routes.sort();
        models.extend(routes);
        models
    }

    /// Every route name.
    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }

    fn available(&self, model: &ModelSettings, health: &HealthTable) -> bool {
        let Some(provider) = health.get(&model.provider) else { return true };
        provider.available && provider.model_stats(&model.name).error_rate < self.max_error_rate
    }

    fn latency_ema(model: &ModelSettings, health: &HealthTable) -> Option<f64> {
        health.get(&model.provider)?.model_stats(&model.name).latency_ema_ms
    }

    /// Decides the provider and model for one request.
    pub fn select(&self, context: &RoutingContext, health: &HealthTable) -> Result<ModelSelection, GatewayError> {
        if let Some(requested) = &context.requested {
            return self.select_requested(requested, context, health);
        }
        for rule in &self.rules {
            if let Some(model) = self.rule_target(rule, context, health) {
                return Ok(self.selection(model, describe(rule, model), context, health));
            }
        }
        let allowed = || self.preference.iter().filter_map(|name| self.model(name)).filter(|model| model.allows(context));
        if let Some(model) = allowed().find(|model| self.available(model, health)) {
            return Ok(self.selection(model, "first available model in preference order".into(), context, health));
        }
        let model = allowed().next().ok_or_else(|| GatewayError::ModelForbidden {
            model: self.preference.join(", "),
            tier: context.tier,
        })?;
        Ok(self.selection(model, "no model is healthy: trying preference order".into(), context, health))
    }

    fn select_requested(&self, requested: &str, context: &RoutingContext, health: &HealthTable) -> Result<ModelSelection, GatewayError> {
        if let Some(model) = self.model(requested) {
            if !model.chats() {
                return Err(GatewayError::invalid("model", format!("\"{requested}\" is an embedding model: ask POST /v1/embeddings")));
            }
            if !model.allows(context) {
                return Err(GatewayError::ModelForbidden { model: requested.to_owned(), tier: context.tier });
            }
            return Ok(self.selection(model, format!("requested model \"{requested}\""), context, health));
        }
        let route = self.routes.get(requested).ok_or_else(|| GatewayError::UnknownModel(requested.to_owned()))?;
        let allowed: Vec<&ModelSettings> =
            route.iter().filter_map(|name| self.model(name)).filter(|model| model.allows(context)).collect();
        let model = allowed
            .iter()
            .find(|model| self.available(model, health))
            .or_else(|| allowed.first())
            .ok_or_else(|| GatewayError::ModelForbidden { model: requested.to_owned(), tier: context.tier })?;
        let route_rest = allowed.iter().copied().filter(|candidate| candidate.name != model.name);
        Ok(ModelSelection {
            primary: self.target(model),
            reason: format!("route \"{requested}\": first available model"),
            fallbacks: self.fallbacks(model, route_rest, context, health),
        })
    }

    /// The embedding model `requested` for a caller in `context`: it must be one, and the caller
    /// may use it. It has no fallbacks: another model's vectors are in another space.
    pub fn select_embedding(&self, requested: &str, context: &RoutingContext) -> Result<Target, GatewayError> {
        let model = self.model(requested).ok_or_else(|| GatewayError::UnknownModel(requested.to_owned()))?;
        if model.chats() {
            return Err(GatewayError::invalid("model", format!("\"{requested}\" is a chat model, not an embedding model")));
        }
        if !model.allows(context) {
            return Err(GatewayError::ModelForbidden { model: requested.to_owned(), tier: context.tier });
        }
        Ok(model.target())
    }

    /// The cheapest model `context` may use (by the sum of its input and output prices),
    /// available ones first: what an exhausted budget is downgraded to.
    pub fn cheapest(&self, context: &RoutingContext, health: &HealthTable) -> Option<ModelSelection> {
        let price = |model: &ModelSettings| model.price.map_or(f64::INFINITY, |price| price.input_usd_per_mtok + price.output_usd_per_mtok);
        let permitted = || self.models.iter().filter(|model| model.chats() && model.allows(context));
        let model = permitted()
            .filter(|model| self.available(model, health))
            .min_by(|a, b| price(a).total_cmp(&price(b)))
            .or_else(|| permitted().min_by(|a, b| price(a).total_cmp(&price(b))))?;
        Some(self.selection(model, format!("budget exhausted: downgraded to the cheapest allowed model {}", model.name), context, health))
    }

    fn rule_target<'a>(&'a self, rule: &RoutingRule, context: &RoutingContext, health: &HealthTable) -> Option<&'a ModelSettings> {
        let matches = (rule.tiers.is_empty() || rule.tiers.contains(&context.tier))
            && (rule.qualities.is_empty() || rule.qualities.contains(&context.quality))
            && (rule.task_types.is_empty() || rule.task_types.contains(&context.task_type))
            && rule.latency_budget_below_ms.is_none_or(|bound| context.latency_budget_ms.is_some_and(|budget| budget < bound))
            && rule.estimated_tokens_below.is_none_or(|bound| context.estimated_tokens < bound);
        if !matches {
            return None;
        }
        let fast_enough = |model: &ModelSettings| {
            rule.max_latency_ema_ms.is_none_or(|bound| Self::latency_ema(model, health).is_none_or(|ema| ema < bound))
        };
        let usable = |model: &&ModelSettings| model.allows(context) && self.available(model, health) && fast_enough(model);
        match &rule.model {
            Some(name) => self.model(name).filter(usable),
            None => self
                .models
                .iter()
                .filter(|model| model.chats() && self.self_hosted.contains(&model.provider))
                .filter(usable)
                .min_by(|a, b| {
                    let a = Self::latency_ema(a, health).unwrap_or(0.0);
                    let b = Self::latency_ema(b, health).unwrap_or(0.0);
                    a.total_cmp(&b)
                }),
        }
    }

    /// The selection of `model` with its fallbacks, then the rest of the preference order;
    /// available models first, unavailable ones last (they may be probed back to health).
    fn selection(&self, model: &ModelSettings, reason: String, context: &RoutingContext, health: &HealthTable) -> ModelSelection {
        ModelSelection { primary: self.target(model), reason, fallbacks: self.fallbacks(model, std::iter::empty(), context, health) }
    }

    /// The fallbacks of `model`: the `first` candidates (a route's other models), then its own
    /// fallbacks, then the preference order; each model once, only those allowed in `context`,
    /// the available ones first (each group in that order).
    fn fallbacks<'a>(
        &'a self,
        model: &'a ModelSettings,
        first: impl Iterator<Item = &'a ModelSettings>,
        context: &RoutingContext,
        health: &HealthTable,
    ) -> Vec<Arc<Target>> {
        let mut seen: Vec<&str> = vec![&model.name];
        let candidates = first
            .chain(model.fallbacks.iter().chain(self.preference.iter()).filter_map(|name| self.model(name)).filter(|candidate| candidate.allows(context)))
            .filter(|candidate| {
                let new = !seen.contains(&candidate.name.as_str());
                if new {
                    seen.push(&candidate.name);
                }
                new
            });
        let (up, down): (Vec<&ModelSettings>, Vec<&ModelSettings>) = candidates.partition(|candidate| self.available(candidate, health));
        up.into_iter().chain(down).map(|candidate| self.target(candidate)).collect()
    }
}

fn describe(rule: &RoutingRule, model: &ModelSettings) -> String {
    let mut reason = format!("rule \"{}\"", rule.name);
    let mut conditions = Vec::new();
    if !rule.tiers.is_empty() {
        conditions.push(format!("tier {}", join(&rule.tiers)));
    }
    if !rule.qualities.is_empty() {
        conditions.push(format!("quality {}", join(&rule.qualities)));
    }
    if !rule.task_types.is_empty() {
        conditions.push(format!("task {}", rule.task_types.join("|")));
    }
    if let Some(bound) = rule.latency_budget_below_ms {
        conditions.push(format!("latency budget < {bound} ms"));
    }
    if let Some(bound) = rule.estimated_tokens_below {
        conditions.push(format!("estimated tokens < {bound}"));
    }
    if let Some(bound) = rule.max_latency_ema_ms {
        conditions.push(format!("target latency EMA < {bound} ms"));
    }
    if !conditions.is_empty() {
        let _ = write!(reason, " ({})", conditions.join(", "));
    }
    let _ = write!(reason, " -> {}", model.name);
    reason
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join("|")
}

#[cfg(test)]
mod tests;
