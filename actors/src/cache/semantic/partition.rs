//! Partitions and their owners. The context key is what must match for a cached answer to be
//! reusable at all: tenant, model or route, earlier turns (the system prompt among them), stop
//! sequences and sampling class. Its hash picks one
//! of a fixed number of partitions, so ownership moves in whole units; a partition's owners are the
//! top-R members by rendezvous hashing. All hashes are fixed and seedless (xxh3), never
//! `RandomState`, so every node computes the same map from the same member list.

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::cache::key::normalise;
use crate::model::{ChatRequest, Role};

/// Partitions of the semantic cache.
pub const PARTITIONS: u32 = 64;

/// Sampling classes: answers sampled alike may be reused for each other.
fn sampling_class(request: &ChatRequest) -> &'static str {
    match request.sampling.temperature {
        None => "default",
        Some(temperature) if temperature <= 0.3 => "precise",
        Some(temperature) if temperature <= 1.0 => "balanced",
        Some(_) => "creative",
    }
}

/// The user turn the semantic cache matches by meaning: the last message, when it is the
/// user's. Anything else (an assistant prefill, a conversation ending in a tool or system turn)
/// is not looked up.
pub fn semantic_prompt(request: &ChatRequest) -> Option<&str> {
    let last = request.messages.last()?;
    (last.role == Role::User).then_some(last.content.as_str())
}

/// The context key of `request` for `tenant`, as 16 hex digits: tenant, model or route, every
/// message before the last user turn (the system prompt and any earlier turns, whitespace
/// normalised, with their roles), the stop sequences and the sampling class. Only the last user
/// turn is matched by meaning; everything else must be identical.
pub fn context_key(tenant: &str, request: &ChatRequest) -> String {
    let mut hasher = Xxh3::new();
    let mut field = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(b"semantic-context-v2");
    field(tenant.as_bytes());
    field(request.model.as_deref().unwrap_or("auto").as_bytes());
    let earlier = request.messages.len().saturating_sub(1);
    for message in &request.messages[..earlier] {
        field(message.role.as_str().as_bytes());
        field(normalise(&message.content).as_bytes());
    }
    field(b"stop");
    for stop in &request.sampling.stop {
        field(stop.as_bytes());
    }
    field(sampling_class(request).as_bytes());
    format!("{:016x}", hasher.digest())
}

/// The partition of a context key.
pub fn partition_of(context_key: &str) -> u32 {
    (xxh3_64(context_key.as_bytes()) % u64::from(PARTITIONS)) as u32
}

/// The owners of `partition` among `members`: the `replication` members with the highest
/// rendezvous weight, best first (fewer when the cluster is smaller).
pub fn owners(partition: u32, members: &[String], replication: usize) -> Vec<&str> {
    let mut weighted: Vec<(u64, &str)> = members
        .iter()
        .map(|member| {
            let mut hasher = Xxh3::new();
            hasher.update(member.as_bytes());
            hasher.update(&partition.to_le_bytes());
            (hasher.digest(), member.as_str())
        })
        .collect();
    weighted.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    weighted.dedup_by(|a, b| a.1 == b.1);
    weighted.into_iter().take(replication).map(|(_, member)| member).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::Message;

    fn request(system: &str, temperature: Option<f32>) -> ChatRequest {
        let mut request = ChatRequest {
            messages: vec![
                Message { role: Role::System, content: system.into() },
                Message { role: Role::User, content: "any question".into() },
            ],
            ..ChatRequest::default()
        };
        request.sampling.temperature = temperature;
        request
    }

    #[test]
    fn the_context_is_tenant_model_earlier_turns_stops_and_sampling_class() {
        let base = context_key("acme", &request("be brief", None));
        let mut other_question = request("be  brief", None);
        other_question.messages[1].content = "a different question".into();
        assert_eq!(base, context_key("acme", &other_question), "the question itself is not context");
        assert_ne!(base, context_key("globex", &request("be brief", None)));
        assert_ne!(base, context_key("acme", &request("be verbose", None)));
        assert_ne!(base, context_key("acme", &request("be brief", Some(1.5))));
        assert_eq!(context_key("acme", &request("x", Some(0.1))), context_key("acme", &request("x", Some(0.2))));
        let mut with_stop = request("be brief", None);
        with_stop.sampling.stop = vec!["\n".into()];
        assert_ne!(base, context_key("acme", &with_stop));
    }

    #[test]
    fn earlier_turns_are_context_and_only_a_final_user_turn_is_matched() {
        let mut follow_up = request("be brief", None);
        follow_up.messages.push(Message { role: Role::Assistant, content: "an answer".into() });
        follow_up.messages.push(Message { role: Role::User, content: "and then?".into() });
        let mut other_history = follow_up.clone();
        other_history.messages[1].content = "another question".into();
        assert_ne!(context_key("acme", &follow_up), context_key("acme", &other_history), "\"and then?\" depends on what came before");
        assert_eq!(semantic_prompt(&follow_up), Some("and then?"));
        let mut prefill = follow_up.clone();
        prefill.messages.push(Message { role: Role::Assistant, content: "Sure,".into() });
        assert_eq!(semantic_prompt(&prefill), None);
    }

    fn members(count: usize) -> Vec<String> {
        (0..count).map(|n| format!("node-{n}")).collect()
    }

    proptest! {
        #[test]
        fn owners_are_distinct_members_capped_by_cluster_size(partition in 0..PARTITIONS, count in 1usize..8, replication in 1usize..4) {
            let members = members(count);
            let owners = owners(partition, &members, replication);
            prop_assert_eq!(owners.len(), replication.min(count));
            let mut unique = owners.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), owners.len());
            prop_assert!(owners.iter().all(|owner| members.iter().any(|member| member == owner)));
        }

        #[test]
        fn losing_a_non_owner_moves_nothing(partition in 0..PARTITIONS, count in 3usize..8) {
            let members = members(count);
            let before: Vec<String> = owners(partition, &members, 2).into_iter().map(str::to_owned).collect();
            let survivor_set: Vec<String> = members.iter().filter(|member| !before.contains(member)).skip(1).cloned()
                .chain(before.iter().cloned()).collect();
            let after: Vec<String> = owners(partition, &survivor_set, 2).into_iter().map(str::to_owned).collect();
            prop_assert_eq!(before, after);
        }

        #[test]
        fn losing_an_owner_keeps_the_other(partition in 0..PARTITIONS, count in 3usize..8) {
            let members = members(count);
            let before: Vec<String> = owners(partition, &members, 2).into_iter().map(str::to_owned).collect();
            let without_first: Vec<String> = members.iter().filter(|member| **member != before[0]).cloned().collect();
            let after = owners(partition, &without_first, 2);
            prop_assert_eq!(after[0], before[1].as_str(), "the replica becomes the primary");
        }
    }

    #[test]
    fn partitions_spread_contexts() {
        let mut seen = std::collections::HashSet::new();
        for tenant in 0..500 {
            seen.insert(partition_of(&context_key(&format!("t{tenant}"), &request("s", None))));
        }
        assert!(seen.len() > 50, "only {} of {PARTITIONS} partitions used", seen.len());
    }
}
