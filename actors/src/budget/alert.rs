//! Budget alerts: a structured log line and a metric for every threshold crossed, and an
//! optional webhook POST, retried with backoff, sent off the actor's path.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use tracing::{info, warn};

use crate::budget::book::{Alert, Scope};
use crate::metrics::Metrics;

/// Delivers alerts.
#[derive(Clone, Debug)]
pub struct AlertNotifier {
    webhook: Option<reqwest::Url>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl AlertNotifier {
    /// A notifier posting to `webhook` when set.
    pub fn new(webhook: Option<reqwest::Url>, metrics: Arc<Metrics>) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        Self { webhook, client, metrics }
    }

    /// Logs, counts and (when configured) posts `alert`.
    pub fn notify(&self, alert: Alert) {
        let scope = alert.scope.to_string();
        warn!(
            target: "budget_alert",
            scope = %scope,
            period = alert.period.as_str(),
            period_key = %alert.period_key,
            threshold_percent = alert.threshold_percent,
            spent_usd = alert.spent.as_usd(),
            limit_usd = alert.limit.as_usd(),
            "budget threshold crossed"
        );
        let threshold = alert.threshold_percent.to_string();
        self.metrics.budget_alerts.with_label_values(&[&scope, alert.period.as_str(), &threshold]).inc();
        let Some(url) = self.webhook.clone() else { return };
        let (tenant, user) = match &alert.scope {
            Scope::User { tenant, user } => (tenant.to_string(), Some(user.to_string())),
            Scope::Tenant(tenant) => (tenant.to_string(), None),
        };
        let body = serde_json::json!({
            "kind": "budget_threshold",
            "scope": scope,
            "tenant": tenant,
            "user": user,
            "period": alert.period.as_str(),
            "period_key": alert.period_key,
            "threshold_percent": alert.threshold_percent,
            "spent_usd": alert.spent.as_usd(),
            "limit_usd": alert.limit.as_usd(),
        });
        let client = self.client.clone();
        tokio::spawn(async move {
            let send = || async {
                client.post(url.clone()).json(&body).send().await?.error_for_status().map(|_| ())
            };
            let backoff = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(5)
                .with_jitter();
            match send.retry(backoff).await {
                Ok(()) => info!(target: "budget_alert", scope = %scope, "alert webhook delivered"),
                Err(error) => warn!(target: "budget_alert", scope = %scope, %error, "alert webhook failed after retries"),
            }
        });
    }
}
