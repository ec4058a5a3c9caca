//! API keys. The ring holds only the SHA-256 of each key; a presented key is hashed, looked up,
//! and confirmed with a constant-time comparison. With no keys configured the node runs open as
//! one anonymous tenant.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::GatewayError;
use crate::model::Tier;
use crate::tenancy::limiter::KeyLimiter;

/// The anonymous principal's tenant, user and key id when no keys are configured.
pub const ANONYMOUS: &str = "anonymous";

/// One key's settings, validated from config.
#[derive(Clone, Debug, PartialEq)]
pub struct KeySettings {
    /// Id shown in logs, metrics and cost records (never the key).
    pub id: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// The tenant.
    pub tenant: String,
    /// The user.
    pub user: String,
    /// The tier routing rules see.
    pub tier: Tier,
    /// Models and routes the key may name; empty for all.
    pub models: BTreeSet<String>,
    /// Requests per minute; `None` for no limit.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute (estimate before, real usage after); `None` for no limit.
    pub tokens_per_minute: Option<u32>,
}

/// Who a request belongs to.
#[derive(Debug)]
pub struct Principal {
    /// The key's id.
    pub key_id: String,
    /// The tenant.
    pub tenant: String,
    /// The user.
    pub user: String,
    /// The tier.
    pub tier: Tier,
    /// Models and routes it may name; empty for all.
    pub models: BTreeSet<String>,
    /// Its rate limits.
    pub limiter: KeyLimiter,
}

impl Principal {
    /// Whether the principal may use `model`.
    pub fn may_use(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.contains(model)
    }
}

/// Every key, by hash.
#[derive(Debug)]
pub struct KeyRing {
    keys: HashMap<[u8; 32], Arc<Principal>>,
    admin: Option<[u8; 32]>,
    anonymous: Arc<Principal>,
}

/// The SHA-256 of `key`.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl KeyRing {
    /// A ring of `keys` plus the admin key's hash. With no keys, every request is anonymous
    /// (tier `anonymous_tier`).
    pub fn new(keys: Vec<KeySettings>, admin: Option<[u8; 32]>, anonymous_tier: Tier) -> Self {
        let keys = keys
            .into_iter()
            .map(|key| {
                let principal = Principal {
                    limiter: KeyLimiter::new(key.requests_per_minute, key.tokens_per_minute),
                    key_id: key.id,
                    tenant: key.tenant,
                    user: key.user,
                    tier: key.tier,
                    models: key.models,
                };
                (key.sha256, Arc::new(principal))
            })
            .collect();
        let anonymous = Arc::new(Principal {
            key_id: ANONYMOUS.into(),
            tenant: ANONYMOUS.into(),
            user: ANONYMOUS.into(),
            tier: anonymous_tier,
            models: BTreeSet::new(),
            limiter: KeyLimiter::new(None, None),
        });
        Self { keys, admin, anonymous }
    }

    /// True when no keys are configured and requests run as the anonymous tenant.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every principal, for metrics and queries.
    pub fn principals(&self) -> impl Iterator<Item = &Arc<Principal>> {
        self.keys.values()
    }

    /// The principal of the key with id `key_id` (the anonymous one on an open node, whatever
    /// the id), for work that runs later as the key that asked for it (batch jobs).
    pub fn by_id(&self, key_id: &str) -> Option<Arc<Principal>> {
        if self.is_open() {
            return Some(Arc::clone(&self.anonymous));
        }
        self.keys.values().find(|principal| principal.key_id == key_id).cloned()
    }

    /// The principal of `bearer` (the `Authorization: Bearer …` token).
    pub fn authenticate(&self, bearer: Option<&str>) -> Result<Arc<Principal>, GatewayError> {
        if self.is_open() {
            return Ok(Arc::clone(&self.anonymous));
        }
        let token = bearer.ok_or_else(|| GatewayError::Unauthenticated("missing API key: send Authorization: Bearer <key>".into()))?;
        let hash = hash_key(token);
        match self.keys.get_key_value(&hash) {
            Some((stored, principal)) if bool::from(stored.ct_eq(&hash)) => Ok(Arc::clone(principal)),
            _ => Err(GatewayError::Unauthenticated("unknown API key".into())),
        }
    }

    /// Checks the admin key. Without an admin key configured the Admin API is closed, unless the
    /// node runs open (no keys at all).
    pub fn authenticate_admin(&self, bearer: Option<&str>) -> Result<(), GatewayError> {
        match (&self.admin, bearer) {
            (None, _) if self.is_open() => Ok(()),
            (None, _) => Err(GatewayError::Unauthenticated("the Admin API needs tenancy.admin_key_sha256 or admin_key_env".into())),
            (Some(_), None) => Err(GatewayError::Unauthenticated("missing admin key: send Authorization: Bearer <admin key>".into())),
            (Some(admin), Some(token)) => {
                if bool::from(admin.ct_eq(&hash_key(token))) {
                    Ok(())
                } else {
                    Err(GatewayError::Unauthenticated("wrong admin key".into()))
                }
            }
        }
    }
}

/// The token of an `Authorization: Bearer …` header value.
pub fn bearer(value: Option<&str>) -> Option<&str> {
    let value = value?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        let key = KeySettings {
            id: "alice-key".into(),
            sha256: hash_key("sk-alice"),
            tenant: "acme".into(),
            user: "alice".into(),
            tier: Tier::Paid,
            models: BTreeSet::from(["gpt-4o-mini".to_owned()]),
            requests_per_minute: None,
            tokens_per_minute: None,
        };
        KeyRing::new(vec![key], Some(hash_key("sk-admin")), Tier::Free)
    }

    #[test]
    fn keys_map_to_principals_and_unknown_keys_are_refused() {
        let ring = ring();
        let alice = ring.authenticate(Some("sk-alice"));
        assert_eq!(alice.as_ref().map(|p| (p.tenant.as_str(), p.tier)).ok(), Some(("acme", Tier::Paid)));
        assert!(alice.is_ok_and(|p| p.may_use("gpt-4o-mini") && !p.may_use("gpt-4o")));
        assert!(matches!(ring.authenticate(Some("sk-mallory")), Err(GatewayError::Unauthenticated(_))));
        assert!(matches!(ring.authenticate(None), Err(GatewayError::Unauthenticated(_))));
        assert!(ring.authenticate_admin(Some("sk-admin")).is_ok());
        assert!(ring.authenticate_admin(Some("sk-alice")).is_err());
    }

    #[test]
    fn an_open_ring_serves_everyone_as_anonymous() {
        let ring = KeyRing::new(Vec::new(), None, Tier::Free);
        assert!(ring.authenticate(None).is_ok_and(|p| p.tenant == ANONYMOUS));
        assert!(ring.authenticate_admin(None).is_ok());
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer(Some("Bearer sk-1")), Some("sk-1"));
        assert_eq!(bearer(Some("bearer  sk-1 ")), Some("sk-1"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
    }
}
