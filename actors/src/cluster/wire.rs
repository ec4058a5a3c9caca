//! What nodes send each other, version 1. The messages are the protobuf types of
//! `proto/switchyard/cluster/v1/cluster.proto`; a remote actor's message enum carries each one
//! encoded (`Vec<u8>`), and its handler decodes it here, so a malformed frame is an error that
//! names what was wrong, never a panic. Variants travel by name: renaming one breaks a
//! mixed-version cluster.
//!
//! Every remote request carries the caller's W3C `traceparent`, so a request served through
//! another node's shard is one trace ([`traceparent`], [`remote_span_parent`]).

use switchyard_proto::cluster as pb;

use crate::cache::exact::CachedAnswer;
use crate::cache::semantic::shard::SemanticEntry;
use crate::budget::lease::{LeaseTable, NodeShare};
use crate::budget::{BudgetLine, NanoUsd, Period, Scope};
use crate::provider::health::{HealthStats, ProviderHealth};

pub use switchyard_proto::cluster::{Candidate, Heartbeat, PartitionChunk, PartitionPull, ShardHit, ShardInsert, ShardInvalidate, ShardLookup, ShardLookupReply};
pub use switchyard_proto::cluster::{RateAsk, RateGrant};
pub use switchyard_proto::cluster::{LeaseAsk, LeaseExhausted, LeaseGiveBack, LeaseReclaim, LeaseReply, LeaseReport, LeaseReportAsk, LeaseShare, LeaseSpent, lease_reply};
/// A lease table as it travels (the domain type is [`LeaseTable`]).
pub use switchyard_proto::cluster::LeaseTable as LeaseTableMessage;
/// A budget line as it travels (the domain type is [`BudgetLine`]).
pub use switchyard_proto::cluster::BudgetLine as BudgetLineMessage;
/// A pool's health as it travels (the domain type is [`ProviderHealth`]).
pub use switchyard_proto::cluster::ProviderHealth as ProviderHealthMessage;

/// The `pg` group every node's membership actor joins.
pub const MEMBERSHIP_GROUP: &str = "switchyard.membership.v1";
/// The `pg` group every node's semantic cache peer joins.
pub const CACHE_PEER_GROUP: &str = "switchyard.cache-peer.v1";
/// The `pg` group every node's lease owner joins (budget leases are asked of it).
pub const LEASE_OWNER_GROUP: &str = "switchyard.lease-owner.v1";
/// The `pg` group every node's lease replica joins (table copies, confirmations, reports).
pub const LEASE_REPLICA_GROUP: &str = "switchyard.lease-replica.v1";
/// The `pg` group every node's cost peer joins (cluster-wide cost queries).
pub const COST_PEER_GROUP: &str = "switchyard.cost-peer.v1";
/// The `pg` group every node's rate-limit owner joins.
pub const RATE_OWNER_GROUP: &str = "switchyard.rate-owner.v1";
/// The `pg` group every node's router joins: provider pools send their health to its members.
pub const ROUTER_GROUP: &str = "switchyard.router.v1";

/// The name a node's actor of `kind` registers under: `<kind>@<node>`, so a remote member of a
/// group says which node it lives on.
pub fn actor_name(kind: &str, node: &str) -> String {
    format!("{kind}@{node}")
}

/// The node an actor named by [`actor_name`] lives on.
pub fn node_of(actor_name: &str) -> Option<&str> {
    actor_name.split_once('@').map(|(_, node)| node)
}

/// A message from a peer that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what} from a peer: {cause}")]
pub struct WireError {
    /// The message expected.
    pub what: &'static str,
    /// What the decoder said.
    pub cause: String,
}

/// Decodes a `T` sent by a peer.
pub fn decode<T: prost::Message + Default>(what: &'static str, bytes: &[u8]) -> Result<T, WireError> {
    T::decode(bytes).map_err(|error| WireError { what, cause: error.to_string() })
}

/// Encodes a message for a peer.
pub fn encode<T: prost::Message>(message: &T) -> Vec<u8> {
    message.encode_to_vec()
}

fn stats_to_wire(stats: &HealthStats) -> pb::HealthStats {
    pb::HealthStats {
        latency_ema_ms: stats.latency_ema_ms,
        ttft_ema_ms: stats.ttft_ema_ms,
        error_rate: stats.error_rate,
        attempts: stats.attempts,
        rate_limit_remaining: stats.rate_limit_remaining,
    }
}

fn stats_from_wire(stats: pb::HealthStats) -> HealthStats {
    HealthStats {
        latency_ema_ms: stats.latency_ema_ms.filter(|ms| ms.is_finite()),
        ttft_ema_ms: stats.ttft_ema_ms.filter(|ms| ms.is_finite()),
        error_rate: if stats.error_rate.is_finite() { stats.error_rate.clamp(0.0, 1.0) } else { 1.0 },
        attempts: stats.attempts,
        rate_limit_remaining: stats.rate_limit_remaining,
    }
}

/// A pool's health as it travels: measured on `node`, idle for `idle` since its last attempt.
pub fn health_to_wire(node: &str, health: &ProviderHealth, idle: Option<std::time::Duration>) -> pb::ProviderHealth {
    pb::ProviderHealth {
        node: node.to_owned(),
        provider: health.provider.clone(),
        available: health.available,
        stats: Some(stats_to_wire(&health.stats)),
        models: health.models.iter().map(|(model, stats)| (model.clone(), stats_to_wire(stats))).collect(),
        idle_ms: idle.map(|idle| u64::try_from(idle.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// A pool's health from a peer (figures that are not numbers count as the worst), with the
/// sender's node and how long its pool had been idle.
pub fn health_from_wire(health: pb::ProviderHealth) -> (String, ProviderHealth, Option<std::time::Duration>) {
    let decoded = ProviderHealth {
        provider: health.provider,
        available: health.available,
        stats: stats_from_wire(health.stats.unwrap_or_default()),
        models: health.models.into_iter().map(|(model, stats)| (model, stats_from_wire(stats))).collect(),
    };
    (health.node, decoded, health.idle_ms.map(std::time::Duration::from_millis))
}

/// A limited budget line in a period as it travels.
pub fn line_to_wire(line: &BudgetLine, period_key: &str) -> pb::BudgetLine {
    let (scope_kind, tenant, user) = match &line.scope {
        Scope::User { tenant, user } => ("user", tenant.to_string(), user.to_string()),
        Scope::Tenant(tenant) => ("tenant", tenant.to_string(), String::new()),
    };
    pb::BudgetLine {
        scope_kind: scope_kind.into(),
        tenant,
        user,
        period: line.period.as_str().into(),
        period_key: period_key.to_owned(),
        limit_nano_usd: line.limit.unwrap_or_default().0,
    }
}

/// A budget line from a peer, checked: its scope, period and limit.
pub fn line_from_wire(line: &pb::BudgetLine) -> Result<(BudgetLine, String), WireError> {
    let bad = |cause: String| WireError { what: "budget line", cause };
    let scope = match line.scope_kind.as_str() {
        "user" => Scope::User { tenant: line.tenant.as_str().into(), user: line.user.as_str().into() },
        "tenant" => Scope::Tenant(line.tenant.as_str().into()),
        other => return Err(bad(format!("scope kind \"{other}\""))),
    };
    let period = match line.period.as_str() {
        "daily" => Period::Daily,
        "monthly" => Period::Monthly,
        other => return Err(bad(format!("period \"{other}\""))),
    };
    if line.limit_nano_usd < 0 || line.period_key.is_empty() {
        return Err(bad("a negative limit or no period key".into()));
    }
    Ok((BudgetLine { scope, period, limit: Some(NanoUsd(line.limit_nano_usd)) }, line.period_key.clone()))
}

/// A lease table as it travels.
pub fn table_to_wire(line: pb::BudgetLine, table: &LeaseTable, confirm: bool) -> pb::LeaseTable {
    pb::LeaseTable {
        line: Some(line),
        version: table.version,
        shares: table
            .nodes
            .iter()
            .map(|(node, share)| pb::LeaseShare { node: node.clone(), incarnation: share.incarnation, allowance_nano_usd: share.allowance.0, spent_nano_usd: share.spent.0 })
            .collect(),
        confirm,
        alerted_percent: table.alerted.clone(),
    }
}

/// A lease table from a peer.
pub fn table_from_wire(table: &pb::LeaseTable, limit: NanoUsd) -> LeaseTable {
    LeaseTable {
        limit,
        version: table.version,
        nodes: table
            .shares
            .iter()
            .map(|share| (share.node.clone(), NodeShare { incarnation: share.incarnation, allowance: NanoUsd(share.allowance_nano_usd.max(0)), spent: NanoUsd(share.spent_nano_usd.max(0)) }))
            .collect(),
        alerted: table.alerted_percent.clone(),
    }
}

/// A semantic entry and its vector as they travel.
pub fn entry_to_wire(entry: &SemanticEntry, vector: &[f32]) -> pb::SemanticEntry {
    let answer = &entry.answer;
    pb::SemanticEntry {
        uid: entry.uid,
        context_key: entry.context_key.clone(),
        prompt: entry.prompt.clone(),
        exact_key: entry.exact_key.clone(),
        answer: Some(pb::CachedAnswer {
            tenant: answer.tenant.clone(),
            route: answer.route.clone(),
            text: answer.text.clone(),
            model: answer.model.clone(),
            provider: answer.provider.clone(),
            input_tokens: answer.input_tokens,
            output_tokens: answer.output_tokens,
            finish_reason: answer.finish_reason.clone(),
            cost_nano_usd: answer.cost_nano_usd,
            created_ms: answer.created_ms,
        }),
        created_ms: entry.created_ms,
        ttl_ms: entry.ttl_ms,
        hits: entry.hits,
        last_used_ms: entry.last_used_ms,
        vector: vector.to_vec(),
    }
}

/// A travelling entry back as the shard holds it, with its vector; an entry without its answer
/// or without a uid is malformed.
pub fn entry_from_wire(wire: pb::SemanticEntry) -> Result<(SemanticEntry, Vec<f32>), WireError> {
    let malformed = |cause: &str| WireError { what: "semantic entry", cause: cause.to_owned() };
    let answer = wire.answer.ok_or_else(|| malformed("no answer"))?;
    if wire.uid == 0 {
        return Err(malformed("no uid"));
    }
    if wire.vector.is_empty() {
        return Err(malformed("no vector"));
    }
    let entry = SemanticEntry {
        uid: wire.uid,
        context_key: wire.context_key,
        prompt: wire.prompt,
        exact_key: wire.exact_key,
        answer: CachedAnswer {
            embeddings: Vec::new(),
            tenant: answer.tenant,
            route: answer.route,
            text: answer.text,
            tool_calls: Vec::new(),
            model: answer.model,
            provider: answer.provider,
            input_tokens: answer.input_tokens,
            output_tokens: answer.output_tokens,
            finish_reason: answer.finish_reason,
            cost_nano_usd: answer.cost_nano_usd,
            created_ms: answer.created_ms,
        },
        created_ms: wire.created_ms,
        ttl_ms: wire.ttl_ms,
        hits: wire.hits,
        last_used_ms: wire.last_used_ms,
    };
    Ok((entry, wire.vector))
}

/// An invalidation as it travels.
pub fn invalidation_to_wire(what: &crate::cache::exact::Invalidation) -> pb::ShardInvalidate {
    use crate::cache::exact::Invalidation;
    use pb::shard_invalidate::What;
    let what = match what {
        Invalidation::Key(key) => What::Key(key.clone()),
        Invalidation::Tenant(tenant) => What::Tenant(tenant.clone()),
        Invalidation::Model(model) => What::Model(model.clone()),
        Invalidation::All => What::All(true),
    };
    pb::ShardInvalidate { what: Some(what) }
}

/// A travelling invalidation back; one that names nothing is malformed.
pub fn invalidation_from_wire(wire: pb::ShardInvalidate) -> Result<crate::cache::exact::Invalidation, WireError> {
    use crate::cache::exact::Invalidation;
    use pb::shard_invalidate::What;
    match wire.what {
        Some(What::Key(key)) => Ok(Invalidation::Key(key)),
        Some(What::Tenant(tenant)) => Ok(Invalidation::Tenant(tenant)),
        Some(What::Model(model)) => Ok(Invalidation::Model(model)),
        Some(What::All(true)) => Ok(Invalidation::All),
        Some(What::All(false)) | None => Err(WireError { what: "invalidation", cause: "names nothing to drop".into() }),
    }
}

/// The W3C `traceparent` of the current span, or empty when it is not sampled into a trace.
pub fn traceparent() -> String {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return String::new();
    }
    format!("00-{}-{}-{:02x}", span_context.trace_id(), span_context.span_id(), span_context.trace_flags().to_u8())
}

/// Makes `span` a child of the remote caller's span named by `traceparent` (ignored when empty
/// or malformed: the work is then traced on its own).
pub fn remote_span_parent(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if traceparent.is_empty() {
        return;
    }
    let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _not_traced = span.set_parent(context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> SemanticEntry {
        SemanticEntry {
            uid: 42,
            context_key: "ctx".into(),
            prompt: "what is rust".into(),
            exact_key: Some("k".into()),
            answer: CachedAnswer {
                embeddings: Vec::new(),
                tenant: "acme".into(),
                route: "auto".into(),
                text: "a language".into(),
                tool_calls: Vec::new(),
                model: "m".into(),
                provider: "p".into(),
                input_tokens: 3,
                output_tokens: 2,
                finish_reason: "stop".into(),
                cost_nano_usd: None,
                created_ms: 5,
            },
            created_ms: 5,
            ttl_ms: 1000,
            hits: 1,
            last_used_ms: 6,
        }
    }

    #[test]
    fn an_entry_survives_the_wire() {
        let wire = entry_to_wire(&entry(), &[0.5, 0.5]);
        let bytes = encode(&wire);
        let back = entry_from_wire(decode::<pb::SemanticEntry>("semantic entry", &bytes).expect("decodes")).expect("valid");
        assert_eq!(back, (entry(), vec![0.5, 0.5]));
    }

    #[test]
    fn malformed_frames_are_errors_naming_the_message() {
        let error = decode::<pb::ShardLookup>("shard lookup", &[0xff, 0xff, 0xff]).expect_err("garbage");
        assert!(error.to_string().starts_with("malformed shard lookup from a peer"), "{error}");
        let mut wire = entry_to_wire(&entry(), &[1.0]);
        wire.answer = None;
        assert!(entry_from_wire(wire).expect_err("no answer").to_string().contains("no answer"));
        assert!(invalidation_from_wire(pb::ShardInvalidate { what: None }).is_err());
    }

    #[test]
    fn actor_names_say_their_node() {
        let name = actor_name("cache-peer", "node-a");
        assert_eq!(node_of(&name), Some("node-a"));
        assert_eq!(node_of("plain"), None);
    }
}
