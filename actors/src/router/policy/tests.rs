//! Routing rules against hand-built health tables.

use super::*;
use crate::provider::health::HealthStats;
use foldhash::HashMapExt as _;

fn model(name: &str, provider: &str, quality: Quality) -> ModelSettings {
    ModelSettings {
        name: name.into(),
        kind: ModelKind::Chat,
        provider: provider.into(),
        upstream_model: name.into(),
        quality,
        tiers: Vec::new(),
        price: None,
        fallbacks: Vec::new(),
    }
}

/// The shipped defaults in miniature: a best model, a strong model, a cheap model, a self-hosted one.
fn policy() -> RoutingPolicy {
    let mut best = model("best", "anthropic", Quality::High);
    best.tiers = vec![Tier::Paid, Tier::Enterprise];
    best.fallbacks = vec!["strong".into()];
    let models = vec![best, model("strong", "openai", Quality::High), model("cheap", "openai", Quality::Low), model("local", "vllm", Quality::Standard)];
    let rules = vec![
        RoutingRule {
            name: "enterprise-quality".into(),
            tiers: vec![Tier::Enterprise],
            qualities: vec![Quality::High],
            model: Some("best".into()),
            ..RoutingRule::default()
        },
        RoutingRule {
            name: "low-latency".into(),
            latency_budget_below_ms: Some(500),
            max_latency_ema_ms: Some(300.0),
            model: None,
            ..RoutingRule::default()
        },
        RoutingRule {
            name: "small".into(),
            estimated_tokens_below: Some(1000),
            qualities: vec![Quality::Low, Quality::Standard],
            model: Some("cheap".into()),
            ..RoutingRule::default()
        },
        RoutingRule { name: "code".into(), task_types: vec!["code".into()], model: Some("strong".into()), ..RoutingRule::default() },
    ];
    RoutingPolicy::new(
        models,
        HashSet::from(["vllm".to_owned()]),
        HashMap::from([("fast".to_owned(), vec!["local".to_owned(), "cheap".to_owned()])]),
        rules,
        vec!["strong".into(), "cheap".into(), "local".into()],
        0.1,
    )
}

fn context() -> RoutingContext {
    RoutingContext {
        tier: Tier::Paid,
        task_type: String::new(),
        estimated_tokens: 5000,
        latency_budget_ms: None,
        quality: Quality::Standard,
        requested: None,
        allowed_models: Default::default(),
    }
}

fn health(provider: &str, available: bool, error_rate: f64, latency_ms: Option<f64>) -> (String, ProviderHealth) {
    let stats = HealthStats { latency_ema_ms: latency_ms, error_rate, attempts: 10, ..HealthStats::default() };
    (provider.to_owned(), ProviderHealth { provider: provider.into(), available, stats, models: HashMap::new() })
}

fn primary(selection: Result<ModelSelection, GatewayError>) -> String {
    selection.map(|selection| selection.primary.model.clone()).unwrap_or_else(|error| format!("error: {error}"))
}

#[test]
fn enterprise_with_high_quality_gets_the_best_model() {
    let context = RoutingContext { tier: Tier::Enterprise, quality: Quality::High, ..context() };
    let selection = policy().select(&context, &HealthTable::new());
    assert!(selection.as_ref().is_ok_and(|s| s.reason.starts_with("rule \"enterprise-quality\"")), "{selection:?}");
    assert_eq!(primary(selection), "best");
}

#[test]
fn tight_latency_budget_goes_self_hosted_only_while_it_is_fast() {
    let context = RoutingContext { latency_budget_ms: Some(200), ..context() };
    let fast = [health("vllm", true, 0.0, Some(40.0))].into_iter().collect::<HealthTable>();
    assert_eq!(primary(policy().select(&context, &fast)), "local");
    let slow = [health("vllm", true, 0.0, Some(900.0))].into_iter().collect::<HealthTable>();
    assert_eq!(primary(policy().select(&context, &slow)), "strong");
    let roomy = RoutingContext { latency_budget_ms: Some(5000), ..context };
    assert_eq!(primary(policy().select(&roomy, &fast)), "strong");
}

#[test]
fn small_requests_without_high_quality_go_cheap() {
    let small = RoutingContext { estimated_tokens: 200, ..context() };
    assert_eq!(primary(policy().select(&small, &HealthTable::new())), "cheap");
    let demanding = RoutingContext { quality: Quality::High, ..small };
    assert_eq!(primary(policy().select(&demanding, &HealthTable::new())), "strong");
}

#[test]
fn task_types_map_to_models() {
    let code = RoutingContext { task_type: "code".into(), ..context() };
    assert_eq!(primary(policy().select(&code, &HealthTable::new())), "strong");
}

#[test]
fn unhealthy_providers_are_skipped_and_tried_last() {
    let table = [health("openai", true, 0.5, None)].into_iter().collect::<HealthTable>();
    let selection = policy().select(&context(), &table);
    assert!(selection.as_ref().is_ok_and(|s| s.fallbacks.last().map(|t| t.provider.as_str()) == Some("openai")));
    assert_eq!(primary(selection), "local");
    let open = [health("openai", false, 0.0, None), health("vllm", false, 0.0, None)].into_iter().collect::<HealthTable>();
    let selection = policy().select(&context(), &open);
    assert!(selection.as_ref().is_ok_and(|s| s.reason.starts_with("no model is healthy")), "{selection:?}");
}

#[test]
fn explicit_models_and_routes_are_honoured_within_policy() {
    let named = RoutingContext { requested: Some("best".into()), ..context() };
    let selection = policy().select(&named, &HealthTable::new());
    assert_eq!(selection.as_ref().map(|s| s.fallbacks[0].model.as_str()).ok(), Some("strong"));
    assert_eq!(primary(selection), "best");

    let free = RoutingContext { tier: Tier::Free, ..named };
    assert!(matches!(policy().select(&free, &HealthTable::new()), Err(GatewayError::ModelForbidden { .. })));

    let unknown = RoutingContext { requested: Some("gpt-17".into()), ..context() };
    assert_eq!(policy().select(&unknown, &HealthTable::new()), Err(GatewayError::UnknownModel("gpt-17".into())));

    let restricted = RoutingContext { allowed_models: ["cheap".to_owned(), "local".to_owned()].into(), ..context() };
    assert_eq!(primary(policy().select(&restricted, &HealthTable::new())), "cheap");
    assert!(policy().select(&restricted, &HealthTable::new()).is_ok_and(|s| s.fallbacks.iter().all(|t| t.model != "strong")));

    let route = RoutingContext { requested: Some("fast".into()), ..context() };
    let down = [health("vllm", false, 0.0, None)].into_iter().collect::<HealthTable>();
    let selection = policy().select(&route, &down);
    assert_eq!(selection.as_ref().map(|s| s.fallbacks[0].model.as_str()).ok(), Some("strong"));
    assert_eq!(selection.as_ref().map(|s| s.fallbacks.last().map(|t| t.model.clone())).ok().flatten().as_deref(), Some("local"));
    assert_eq!(primary(selection), "cheap");
}

#[test]
fn embedding_models_are_named_only_for_embeddings() {
    let mut embed = model("embed", "openai", Quality::Standard);
    embed.kind = ModelKind::Embedding;
    let models = vec![model("chat", "openai", Quality::Standard), embed];
    let policy = RoutingPolicy::new(models, HashSet::new(), HashMap::new(), Vec::new(), vec!["chat".into()], 0.5);
    let mut context = RoutingContext { requested: Some("embed".into()), ..RoutingContext::default() };
    assert!(matches!(policy.select(&context, &HealthTable::new()), Err(GatewayError::InvalidArgument { .. })));
    assert_eq!(policy.select_embedding("embed", &context).map(|target| target.model).ok().as_deref(), Some("embed"));
    assert!(matches!(policy.select_embedding("chat", &context), Err(GatewayError::InvalidArgument { .. })));
    assert!(matches!(policy.select_embedding("nothing", &context), Err(GatewayError::UnknownModel(_))));
    context.requested = None;
    assert_eq!(policy.cheapest(&context, &HealthTable::new()).map(|selection| selection.primary.model.clone()).as_deref(), Some("chat"));
}
