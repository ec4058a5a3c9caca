//! Live health of a provider and of each of its models: latency and time-to-first-token EMAs,
//! error rate, and the rate-limit headroom the upstream last reported.
//!
//! The `ProviderPool` actor folds every attempt into a [`HealthTracker`] and sends the resulting
//! [`ProviderHealth`] to the router, which keeps the cluster-wide table.

use std::collections::HashMap;
use std::time::Duration;

/// Weight of the newest sample in the moving averages.
const EMA_ALPHA: f64 = 0.2;

/// Health figures of one provider or one model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealthStats {
    /// Moving average of whole-answer latency, in milliseconds; `None` before the first success.
    pub latency_ema_ms: Option<f64>,
    /// Moving average of time to first token of streamed answers, in milliseconds.
    pub ttft_ema_ms: Option<f64>,
    /// Moving average of the failure indicator (0.0 ..= 1.0).
    pub error_rate: f64,
    /// Attempts seen.
    pub attempts: u64,
    /// Requests left in the upstream's rate-limit window, from its response headers.
    pub rate_limit_remaining: Option<u64>,
}

impl HealthStats {
    fn record(&mut self, sample: &AttemptSample) {
        self.attempts += 1;
        let failed = if sample.failed { 1.0 } else { 0.0 };
        self.error_rate = if self.attempts == 1 { failed } else { ema(self.error_rate, failed) };
        if !sample.failed {
            if let Some(latency) = sample.latency {
                let millis = latency.as_secs_f64() * 1000.0;
                self.latency_ema_ms = Some(self.latency_ema_ms.map_or(millis, |old| ema(old, millis)));
            }
            if let Some(ttft) = sample.time_to_first_token {
                let millis = ttft.as_secs_f64() * 1000.0;
                self.ttft_ema_ms = Some(self.ttft_ema_ms.map_or(millis, |old| ema(old, millis)));
            }
        }
        if sample.rate_limit_remaining.is_some() {
            self.rate_limit_remaining = sample.rate_limit_remaining;
        }
    }
}

fn ema(old: f64, sample: f64) -> f64 {
    old + EMA_ALPHA * (sample - old)
}

/// What one attempt tells about health.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttemptSample {
    /// The configured model name.
    pub model: String,
    /// Whether it failed in a way that counts against the provider.
    pub failed: bool,
    /// Whole-answer latency of a success.
    pub latency: Option<Duration>,
    /// Time to first token of a streamed success.
    pub time_to_first_token: Option<Duration>,
    /// `x-ratelimit-remaining-requests` (OpenAI) or `anthropic-ratelimit-requests-remaining`.
    pub rate_limit_remaining: Option<u64>,
}

/// Health of one provider as the router sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderHealth {
    /// The provider's name.
    pub provider: String,
    /// False while its circuit breaker is open.
    pub available: bool,
    /// Provider-wide figures.
    pub stats: HealthStats,
    /// Figures per configured model name.
    pub models: HashMap<String, HealthStats>,
}

impl ProviderHealth {
    /// Figures of `model`, falling back to the provider's when the model has none yet.
    pub fn model_stats(&self, model: &str) -> &HealthStats {
        self.models.get(model).unwrap_or(&self.stats)
    }
}

/// Folds attempts into provider and model figures. Models are the configured ones, so the map
/// is bounded by the config.
#[derive(Debug)]
pub struct HealthTracker {
    health: ProviderHealth,
}

impl HealthTracker {
    /// An empty tracker for `provider`.
    pub fn new(provider: &str) -> Self {
        Self {
            health: ProviderHealth {
                provider: provider.to_owned(),
                available: true,
                stats: HealthStats::default(),
                models: HashMap::new(),
            },
        }
    }

    /// Folds in one attempt.
    pub fn record(&mut self, sample: &AttemptSample) {
        self.health.stats.record(sample);
        match self.health.models.get_mut(&sample.model) {
            Some(stats) => stats.record(sample),
            None => {
                let mut stats = HealthStats::default();
                stats.record(sample);
                self.health.models.insert(sample.model.clone(), stats);
            }
        }
    }

    /// Sets whether the provider takes requests (its breaker is not open).
    pub fn set_available(&mut self, available: bool) {
        self.health.available = available;
    }

    /// The current figures.
    pub fn health(&self) -> &ProviderHealth {
        &self.health
    }
}

/// Reads the upstream's remaining-requests header, if it sent one.
pub fn rate_limit_remaining(headers: &http::HeaderMap) -> Option<u64> {
    ["x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_move_towards_new_samples_and_failures_raise_the_error_rate() {
        let mut tracker = HealthTracker::new("p");
        let ok = |millis| AttemptSample {
            model: "m".into(),
            latency: Some(Duration::from_millis(millis)),
            ..AttemptSample::default()
        };
        tracker.record(&ok(100));
        assert_eq!(tracker.health().stats.latency_ema_ms, Some(100.0));
        tracker.record(&ok(200));
        assert_eq!(tracker.health().model_stats("m").latency_ema_ms, Some(120.0));
        tracker.record(&AttemptSample { model: "m".into(), failed: true, ..AttemptSample::default() });
        assert!((tracker.health().stats.error_rate - 0.2).abs() < 1e-9);
        assert_eq!(tracker.health().model_stats("unknown").attempts, 3, "falls back to provider figures");
    }

    #[test]
    fn reads_rate_limit_headers_of_both_apis() {
        let mut headers = http::HeaderMap::new();
        headers.insert("anthropic-ratelimit-requests-remaining", http::HeaderValue::from_static("42"));
        assert_eq!(rate_limit_remaining(&headers), Some(42));
    }
}
