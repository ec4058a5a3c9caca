//! The webhook a batch's end sends: one POST of an event
//! (`{"id": "evt_…", "object": "event", "type": "batch.completed", "created_at", "data": <batch>}`)
//! to `batch.webhook_url`, signed with `x-switchyard-signature: sha256=<hex HMAC-SHA256 of the
//! exact body under batch.webhook_secret>`, and carrying `webhook-id` (the event id, the same on
//! every attempt, for receivers that deduplicate). Retried with exponential backoff until a 2xx
//! or `webhook_max_attempts`.

use std::time::Duration;

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::batch::model::BatchRecord;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-switchyard-signature";
/// The event id header.
pub const EVENT_ID_HEADER: &str = "webhook-id";

/// Where and how batch events are sent.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// The receiver.
    pub url: reqwest::Url,
    /// The HMAC key.
    pub secret: String,
    /// Attempts before giving up (logged).
    pub max_attempts: u32,
    /// First wait between attempts; doubles each time, up to a minute.
    pub base_delay: Duration,
    /// Bound on one attempt.
    pub timeout: Duration,
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // An HMAC takes a key of any length: `new_from_slice` cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The event body for `batch`'s end.
pub fn event_body(batch: &BatchRecord, now: u64) -> (String, Vec<u8>) {
    let id = format!("evt_{}_{}", batch.id, batch.status.as_str());
    let body = serde_json::json!({
        "id": id,
        "object": "event",
        "type": format!("batch.{}", batch.status.as_str()),
        "created_at": now,
        "data": batch.to_json(),
    });
    (id, serde_json::to_vec(&body).unwrap_or_default())
}

/// Posts the event until the receiver answers 2xx; true when it did. Gives up early (false)
/// when `stop` fires: the node is shutting down, and the next start sends it again.
pub async fn deliver(client: &reqwest::Client, settings: &WebhookSettings, event_id: &str, body: Vec<u8>, stop: &CancellationToken) -> bool {
    let signature = signature(&settings.secret, &body);
    let mut delay = settings.base_delay;
    for attempt in 1..=settings.max_attempts {
        let sent = client
            .post(settings.url.clone())
            .timeout(settings.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .header(EVENT_ID_HEADER, event_id)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                info!(event = event_id, attempt, "batch webhook delivered");
                return true;
            }
            Ok(response) => warn!(event = event_id, attempt, status = %response.status(), "batch webhook refused; retrying"),
            Err(error) => warn!(event = event_id, attempt, %error, "batch webhook failed; retrying"),
        }
        if attempt == settings.max_attempts {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return false,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
    warn!(event = event_id, attempts = settings.max_attempts, "batch webhook given up");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
