//! The `x-switchyard-*` headers every HTTP API shares: routing hints and cache controls read off
//! a request, and who served an answer and why, written on the response.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use switchyard_actors::cache::semantic::SemanticMatch;
use switchyard_actors::error::GatewayError;
use switchyard_actors::model::{CacheControl, CacheLayer, Quality, RoutingHints, Target, Tier};

// Header names are constants: `HeaderName::from_static` is a `const fn`, and a lookup or an
// insert by `&str` parses the name again on every request.

/// Routing hint headers.
const TIER: HeaderName = HeaderName::from_static("x-switchyard-tier");
const TASK: HeaderName = HeaderName::from_static("x-switchyard-task");
const LATENCY_BUDGET: HeaderName = HeaderName::from_static("x-switchyard-latency-budget-ms");
const QUALITY: HeaderName = HeaderName::from_static("x-switchyard-quality");
/// Cache control headers: `bypass`, `no-store` (comma-separated), and a TTL in seconds; in an
/// answer, the layer that served it.
const CACHE: HeaderName = HeaderName::from_static("x-switchyard-cache");
const CACHE_TTL: HeaderName = HeaderName::from_static("x-switchyard-cache-ttl");

/// The answer's headers.
const CACHE_KEY: HeaderName = HeaderName::from_static("x-switchyard-cache-key");
const CACHE_ENTRY: HeaderName = HeaderName::from_static("x-switchyard-cache-entry");
const EXPERIMENT: HeaderName = HeaderName::from_static("x-switchyard-experiment");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-switchyard-request-id");
/// `x-switchyard-provider`.
pub const PROVIDER: HeaderName = HeaderName::from_static("x-switchyard-provider");
/// `x-switchyard-model`.
pub const MODEL: HeaderName = HeaderName::from_static("x-switchyard-model");
const ROUTING_REASON: HeaderName = HeaderName::from_static("x-switchyard-routing-reason");
const FALLBACK: HeaderName = HeaderName::from_static("x-switchyard-fallback");
const LATENCY_US: HeaderName = HeaderName::from_static("x-switchyard-latency-us");
const COST_USD: HeaderName = HeaderName::from_static("x-switchyard-cost-usd");

/// A header's value, trimmed; an error naming the header when it is not visible ASCII.
pub fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, GatewayError> {
    headers
        .get(name)
        .map(|value| value.to_str().map(str::trim).map_err(|_| GatewayError::invalid(name.as_str(), "is not visible ASCII")))
        .transpose()
}

/// The routing hints and cache controls of a request's headers.
pub fn parse_hints(headers: &HeaderMap) -> Result<(RoutingHints, CacheControl), GatewayError> {
    let tier = match header_text(headers, &TIER)? {
        None | Some("free") => Tier::Free,
        Some("paid") => Tier::Paid,
        Some("enterprise") => Tier::Enterprise,
        Some(other) => return Err(GatewayError::invalid(TIER.as_str(), format!("\"{other}\" is not free, paid or enterprise"))),
    };
    let quality = match header_text(headers, &QUALITY)? {
        None | Some("standard") => Quality::Standard,
        Some("low") => Quality::Low,
        Some("high") => Quality::High,
        Some(other) => return Err(GatewayError::invalid(QUALITY.as_str(), format!("\"{other}\" is not low, standard or high"))),
    };
    let latency_budget_ms = header_text(headers, &LATENCY_BUDGET)?
        .map(|value| value.parse::<u32>().map_err(|_| GatewayError::invalid(LATENCY_BUDGET.as_str(), format!("\"{value}\" is not a whole number of milliseconds"))))
        .transpose()?;
    let mut cache = CacheControl::default();
    for directive in header_text(headers, &CACHE)?.unwrap_or_default().split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive {
            "bypass" => cache.bypass = true,
            "no-store" => cache.no_store = true,
            other => return Err(GatewayError::invalid(CACHE.as_str(), format!("unknown directive \"{other}\" (expected bypass or no-store)"))),
        }
    }
    cache.ttl_seconds = header_text(headers, &CACHE_TTL)?
        .map(|value| value.parse::<u32>().map_err(|_| GatewayError::invalid(CACHE_TTL.as_str(), format!("\"{value}\" is not a whole number of seconds"))))
        .transpose()?;
    let task_type = header_text(headers, &TASK)?.unwrap_or_default().to_owned();
    Ok((RoutingHints { task_type, latency_budget_ms, quality, tier }, cache))
}

/// The product feature a request is for, tagging its cost.
const FEATURE: HeaderName = HeaderName::from_static("x-switchyard-feature");

/// Tags `metadata` with the feature header's value, unless the body named a feature itself.
pub fn tag_feature(headers: &HeaderMap, metadata: &mut std::collections::BTreeMap<String, String>) -> Result<(), GatewayError> {
    if let Some(feature) = header_text(headers, &FEATURE)?.filter(|feature| !feature.is_empty()) {
        metadata.entry("feature".into()).or_insert_with(|| feature.to_owned());
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or_default()
}

/// Sets a header, replacing what a header value cannot carry with `?`.
pub fn set_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let printable = |byte: u8| byte.is_ascii_graphic() || byte == b' ';
    let value = if value.bytes().all(printable) {
        HeaderValue::from_str(value)
    } else {
        HeaderValue::from_str(&value.chars().map(|c| if c.is_ascii() && printable(c as u8) { c } else { '?' }).collect::<String>())
    };
    if let Ok(value) = value {
        headers.insert(name, value);
    }
}

/// Who served an answer and why, as the headers tell it.
pub struct Served<'a> {
    /// The gateway's id of the answer.
    pub id: &'a str,
    /// The model and provider that answered (or whose answer was cached).
    pub target: &'a Target,
    /// Why the router chose it.
    pub routing_reason: &'a str,
    /// True when a fallback served.
    pub fallback: bool,
    /// The cache layer that answered.
    pub cache: CacheLayer,
    /// The exact-cache key, when the cache is on.
    pub cache_key: Option<&'a str>,
    /// For a semantic hit: its similarity and entry.
    pub cache_match: Option<&'a SemanticMatch>,
    /// The experiment and variant that served it, when one did.
    pub experiment: Option<&'a str>,
}

impl<'a> Served<'a> {
    /// What a whole answer says of itself.
    pub fn of_answer(answer: &'a switchyard_actors::pipeline::Answer) -> Self {
        Self {
            id: &answer.id,
            target: &answer.target,
            routing_reason: &answer.routing_reason,
            fallback: answer.fallback,
            cache: answer.cache_layer,
            cache_key: answer.cache_key.as_deref(),
            cache_match: answer.cache_match.as_ref(),
            experiment: answer.experiment.as_deref(),
        }
    }

    /// What a streamed answer says of itself.
    pub fn of_stream(answer: &'a switchyard_actors::pipeline::AnswerStream) -> Self {
        Self {
            id: &answer.id,
            target: &answer.target,
            routing_reason: &answer.routing_reason,
            fallback: answer.fallback,
            cache: answer.cache_layer,
            cache_key: answer.cache_key.as_deref(),
            cache_match: answer.cache_match.as_ref(),
            experiment: answer.experiment.as_deref(),
        }
    }
}

/// Writes the headers that say who served an answer and why.
pub fn answer_headers(headers: &mut HeaderMap, served: Served<'_>) {
    let Served { id, target, routing_reason, fallback, cache, cache_key, cache_match, experiment } = served;
    if let Some(experiment) = experiment {
        set_header(headers, EXPERIMENT, experiment);
    }
    if let Some(key) = cache_key {
        set_header(headers, CACHE_KEY, key);
    }
    match cache_match {
        Some(found) => {
            set_header(headers, CACHE, &format!("semantic; similarity={:.3}", found.similarity));
            set_header(headers, CACHE_ENTRY, &found.entry);
        }
        None => {
            headers.insert(CACHE, HeaderValue::from_static(cache.as_str()));
        }
    }
    set_header(headers, REQUEST_ID, id);
    set_header(headers, PROVIDER, &target.provider);
    set_header(headers, MODEL, &target.model);
    set_header(headers, ROUTING_REASON, routing_reason);
    headers.insert(FALLBACK, HeaderValue::from_static(if fallback { "true" } else { "false" }));
}

/// The headers of a whole answer: who served it, its latency and its cost.
pub fn whole_answer_headers(headers: &mut HeaderMap, answer: &switchyard_actors::pipeline::Answer) {
    answer_headers(headers, Served::of_answer(answer));
    latency_and_cost(headers, answer.latency, answer.cost);
}

/// The latency and cost headers (cost only when the model has a price).
pub fn latency_and_cost(headers: &mut HeaderMap, latency: std::time::Duration, cost: Option<switchyard_actors::budget::NanoUsd>) {
    headers.insert(LATENCY_US, HeaderValue::from(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)));
    if let Some(cost) = cost {
        set_header(headers, COST_USD, &format!("{:.9}", cost.as_usd()));
    }
}
