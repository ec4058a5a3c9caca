//! The `[batch]` section: where batch jobs live, how hard they may run, and their webhook,
//! validated into [`BatchSettings`]. With `[redis] url` set, batches live in Redis (shared by
//! every node) and `data_dir` is not used.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::batch::BatchSettings;
use crate::batch::store::RedisStoreSettings;
use crate::batch::webhook::WebhookSettings;

use super::{ConfigError, at_least_one, invalid, positive, reqwest_like_url, secret_from_env_or_file};

/// `[batch]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBatch {
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    #[serde(default = "default_yield_in_flight")]
    yield_in_flight: usize,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_retry_base_delay", with = "humantime_serde")]
    retry_base_delay: Duration,
    #[serde(default = "default_retry_max_delay", with = "humantime_serde")]
    retry_max_delay: Duration,
    #[serde(default = "default_max_file_bytes")]
    max_file_bytes: usize,
    #[serde(default = "default_max_lines")]
    max_lines: usize,
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    webhook_secret_env: Option<String>,
    #[serde(default)]
    webhook_secret_file: Option<PathBuf>,
    #[serde(default = "default_webhook_max_attempts")]
    webhook_max_attempts: u32,
    #[serde(default = "default_webhook_base_delay", with = "humantime_serde")]
    webhook_base_delay: Duration,
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    webhook_timeout: Duration,
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    lease_ttl: Duration,
    /// This node's name in batch leases; empty = the cluster's node name, else
    /// `<host name>/<server.http_listen>`.
    #[serde(default)]
    node_id: String,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data/batches")
}
fn default_concurrency() -> usize {
    4
}
fn default_yield_in_flight() -> usize {
    64
}
fn default_max_attempts() -> u32 {
    3
}
fn default_retry_base_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max_delay() -> Duration {
    Duration::from_secs(60)
}
fn default_max_file_bytes() -> usize {
    200 * 1024 * 1024
}
fn default_max_lines() -> usize {
    50_000
}
fn default_webhook_max_attempts() -> u32 {
    10
}
fn default_webhook_base_delay() -> Duration {
    Duration::from_millis(500)
}
fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_lease_ttl() -> Duration {
    Duration::from_secs(30)
}

impl Default for RawBatch {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            concurrency: default_concurrency(),
            yield_in_flight: default_yield_in_flight(),
            max_attempts: default_max_attempts(),
            retry_base_delay: default_retry_base_delay(),
            retry_max_delay: default_retry_max_delay(),
            max_file_bytes: default_max_file_bytes(),
            max_lines: default_max_lines(),
            webhook_url: None,
            webhook_secret_env: None,
            webhook_secret_file: None,
            webhook_max_attempts: default_webhook_max_attempts(),
            webhook_base_delay: default_webhook_base_delay(),
            webhook_timeout: default_webhook_timeout(),
            lease_ttl: default_lease_ttl(),
            node_id: String::new(),
        }
    }
}

/// Most lines a node may run at once for batches.
const MAX_CONCURRENCY: usize = 1024;

impl RawBatch {
    /// Checks the section; `redis` is `[redis]`'s server when set, `default_node_id` this node's
    /// name unless `node_id` sets one.
    pub(super) fn validate(&self, redis: Option<RedisStoreSettings>, default_node_id: String) -> Result<BatchSettings, ConfigError> {
        if self.node_id.chars().any(char::is_whitespace) {
            return Err(invalid("batch.node_id", format!("\"{}\" has spaces", self.node_id)));
        }
        let node_id = if self.node_id.is_empty() { default_node_id } else { self.node_id.clone() };
        at_least_one("batch.concurrency", self.concurrency)?;
        if self.concurrency > MAX_CONCURRENCY {
            return Err(invalid("batch.concurrency", format!("{} is more than {MAX_CONCURRENCY}", self.concurrency)));
        }
        at_least_one("batch.yield_in_flight", self.yield_in_flight)?;
        at_least_one("batch.max_attempts", self.max_attempts)?;
        at_least_one("batch.max_file_bytes", self.max_file_bytes)?;
        at_least_one("batch.max_lines", self.max_lines)?;
        at_least_one("batch.webhook_max_attempts", self.webhook_max_attempts)?;
        if self.retry_base_delay > self.retry_max_delay {
            return Err(invalid("batch.retry_base_delay", "must not exceed batch.retry_max_delay"));
        }
        if self.data_dir.as_os_str().is_empty() && redis.is_none() {
            return Err(invalid("batch.data_dir", "must name a directory (or set [redis] url)"));
        }
        let secret = secret_from_env_or_file("batch", "webhook_secret", self.webhook_secret_env.as_deref(), self.webhook_secret_file.as_deref())?;
        let webhook = match (&self.webhook_url, secret) {
            (None, None) => None,
            (None, Some(_)) => return Err(invalid("batch.webhook_url", "is required with a webhook secret")),
            (Some(_), None) => return Err(invalid("batch", "webhook_url needs webhook_secret_env or webhook_secret_file: webhooks are always signed")),
            (Some(url), Some(secret)) => {
                if reqwest_like_url(url).is_none() {
                    return Err(invalid("batch.webhook_url", format!("\"{url}\" is not an http(s) URL")));
                }
                Some(WebhookSettings {
                    url: reqwest::Url::parse(url).map_err(|error| invalid("batch.webhook_url", error.to_string()))?,
                    secret,
                    max_attempts: self.webhook_max_attempts,
                    base_delay: positive("batch.webhook_base_delay", self.webhook_base_delay)?,
                    timeout: positive("batch.webhook_timeout", self.webhook_timeout)?,
                })
            }
        };
        Ok(BatchSettings {
            data_dir: self.data_dir.clone(),
            redis,
            concurrency: self.concurrency,
            yield_in_flight: self.yield_in_flight,
            max_attempts: self.max_attempts,
            retry_base_delay: positive("batch.retry_base_delay", self.retry_base_delay)?,
            retry_max_delay: self.retry_max_delay,
            max_file_bytes: self.max_file_bytes,
            max_lines: self.max_lines,
            webhook,
            node_id,
            lease_ttl: positive("batch.lease_ttl", self.lease_ttl)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(toml_text: &str) -> Result<BatchSettings, String> {
        let raw: RawBatch = toml::from_str(toml_text).map_err(|error| error.to_string())?;
        raw.validate(None, "node-a".into()).map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_run_four_lines_at_once_from_the_data_dir_without_a_webhook() {
        let settings = validate("").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(settings.concurrency, 4);
        assert_eq!(settings.data_dir, PathBuf::from("data/batches"));
        assert!(settings.webhook.is_none() && settings.redis.is_none());
        assert_eq!(settings.node_id, "node-a");
        let named = validate("node_id = \"gw-7\"").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(named.node_id, "gw-7");
    }

    #[test]
    fn a_webhook_is_always_signed_and_every_error_names_its_key() {
        let secret = std::env::temp_dir().join(format!("switchyard-batch-secret-{:x}", rand::random::<u64>()));
        std::fs::write(&secret, "s3cret\n").unwrap_or_default();
        let signed = format!("webhook_url = \"https://hooks.example/batches\"\nwebhook_secret_file = \"{}\"", secret.display());
        let settings = validate(&signed).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(settings.webhook.map(|webhook| webhook.secret).as_deref(), Some("s3cret"));
        let _ = std::fs::remove_file(secret);
        for (toml_text, named) in [
            ("webhook_url = \"https://hooks.example/batches\"", "webhook_secret_env"),
            ("webhook_secret_env = \"SWITCHYARD_TEST_UNSET_SECRET\"", "batch.webhook_secret_env"),
            ("concurrency = 0", "batch.concurrency"),
            ("yield_in_flight = 0", "batch.yield_in_flight"),
            ("retry_base_delay = \"2m\"", "batch.retry_base_delay"),
            ("lease_ttl = \"0s\"", "batch.lease_ttl"),
            ("concurency = 2", "concurency"),
        ] {
            let error = validate(toml_text).err().unwrap_or_default();
            assert!(error.contains(named), "{toml_text}: {error}");
        }
    }
}
