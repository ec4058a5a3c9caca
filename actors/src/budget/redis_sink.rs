//! The cost ledger's Redis side, when `redis.url` is set: every cost event is appended to a Redis
//! Stream (trimmed to a retention bound) and added to spend counters per (scope, period), in one
//! Lua script so the three happen atomically. The script first marks the event id as seen, so an
//! event pushed twice (a retry, or a re-push after a restart) is counted once.
//!
//! The local file ledger stays the write-ahead record the client's answer waits for; events reach
//! Redis from it in order, retried with backoff while Redis is down, never dropped. At start the
//! events of the last [`REPUSH_WINDOW_DAYS`] days are pushed again (the seen marks make that
//! idempotent), covering events written locally but not yet in Redis at a crash.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::budget::event::CostEvent;
use crate::budget::period::Period;

/// Events younger than this are pushed again at start.
pub const REPUSH_WINDOW_DAYS: i64 = 2;
/// How long an event id is remembered as seen (longer than the re-push window).
const SEEN_TTL_SECS: u64 = 3 * 86_400;
/// How long a daily counter lives after its last update.
const DAILY_TTL_SECS: u64 = 3 * 86_400;
/// How long a monthly counter lives after its last update.
const MONTHLY_TTL_SECS: u64 = 62 * 86_400;

const SCRIPT: &str = r#"
-- KEYS[1] seen mark, KEYS[2] stream, KEYS[3..6] counters (user daily, user monthly, tenant daily, tenant monthly)
-- ARGV[1] event JSON, ARGV[2] cost in nanodollars, ARGV[3] stream max length,
-- ARGV[4] seen TTL, ARGV[5] daily TTL, ARGV[6] monthly TTL
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[4]) then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[1])
for i = 3, 6 do
  redis.call('INCRBY', KEYS[i], ARGV[2])
  if i % 2 == 1 then
    redis.call('EXPIRE', KEYS[i], ARGV[5])
  else
    redis.call('EXPIRE', KEYS[i], ARGV[6])
  end
end
return 1
"#;

/// Redis settings of the ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct RedisLedgerSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key, one per deployment.
    pub key_prefix: String,
    /// Events kept in the stream (approximately; older ones are trimmed).
    pub stream_max_len: u64,
}

/// The key names for one deployment (schema version `v1`).
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self { prefix: format!("{prefix}:v1") }
    }

    /// The stream of cost events.
    pub fn stream(&self) -> String {
        format!("{}:cost-events", self.prefix)
    }

    fn seen(&self, event_id: &str) -> String {
        format!("{}:cost-seen:{event_id}", self.prefix)
    }

    /// The spend counter of a user (tenant and user length-prefixed, so no two scopes collide).
    pub fn user_counter(&self, tenant: &str, user: &str, period: Period, unix_ms: i64) -> String {
        format!("{}:spend:user:{}:{tenant}:{user}:{}", self.prefix, tenant.len(), period.key(unix_ms))
    }

    /// The spend counter of a tenant.
    pub fn tenant_counter(&self, tenant: &str, period: Period, unix_ms: i64) -> String {
        format!("{}:spend:tenant:{tenant}:{}", self.prefix, period.key(unix_ms))
    }
}

/// Hands events to the task that pushes them to Redis.
#[derive(Clone, Debug)]
pub struct RedisSink {
    events: mpsc::UnboundedSender<CostEvent>,
}

impl RedisSink {
    /// Starts the pushing task; `replayed` events of the last days are pushed first.
    pub fn start(settings: &RedisLedgerSettings, replayed: &[CostEvent]) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let client = redis::Client::open(settings.url.as_str()).with_context(|| format!("redis.url \"{}\" is not a Redis URL", settings.url))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config).context("failed to set up the Redis connection")?;
        let (events, receiver) = mpsc::unbounded_channel();
        let horizon = crate::budget::period::now_ms() - REPUSH_WINDOW_DAYS * 86_400_000;
        for event in replayed.iter().filter(|event| event.unix_ms >= horizon) {
            let _ = events.send(event.clone());
        }
        let keys = Keys::new(&settings.key_prefix);
        tokio::spawn(push_loop(connection, keys, settings.stream_max_len, receiver));
        Ok(Self { events })
    }

    /// Queues `event` for Redis.
    pub fn push(&self, event: CostEvent) {
        if self.events.send(event).is_err() {
            warn!("the Redis ledger task has stopped; the event stays in the local ledger only");
        }
    }
}

async fn push_loop(mut connection: ConnectionManager, keys: Keys, max_len: u64, mut events: mpsc::UnboundedReceiver<CostEvent>) {
    let script = redis::Script::new(SCRIPT);
    let mut down_since: Option<tokio::time::Instant> = None;
    while let Some(event) = events.recv().await {
        let mut delay = Duration::from_millis(100);
        loop {
            match push(&mut connection, &script, &keys, max_len, &event).await {
                Ok(()) => {
                    if let Some(since) = down_since.take() {
                        info!(down_for_ms = since.elapsed().as_millis() as u64, "Redis ledger writes resumed");
                    }
                    break;
                }
                Err(error) => {
                    if down_since.is_none() {
                        warn!(%error, "Redis ledger write failed; retrying until Redis answers (events stay in the local ledger)");
                        down_since = Some(tokio::time::Instant::now());
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

async fn push(connection: &mut ConnectionManager, script: &redis::Script, keys: &Keys, max_len: u64, event: &CostEvent) -> redis::RedisResult<()> {
    let json = serde_json::to_string(event).map_err(|error| redis::RedisError::from((redis::ErrorKind::Client, "event JSON", error.to_string())))?;
    let cost = event.charged().0;
    let mut invocation = script.prepare_invoke();
    invocation
        .key(keys.seen(&event.id))
        .key(keys.stream())
        .key(keys.user_counter(&event.tenant, &event.user, Period::Daily, event.unix_ms))
        .key(keys.user_counter(&event.tenant, &event.user, Period::Monthly, event.unix_ms))
        .key(keys.tenant_counter(&event.tenant, Period::Daily, event.unix_ms))
        .key(keys.tenant_counter(&event.tenant, Period::Monthly, event.unix_ms))
        .arg(json)
        .arg(cost)
        .arg(max_len)
        .arg(SEEN_TTL_SECS)
        .arg(DAILY_TTL_SECS)
        .arg(MONTHLY_TTL_SECS);
    let _added: i64 = invocation.invoke_async(connection).await?;
    Ok(())
}
