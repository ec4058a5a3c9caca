//! Partitions and their owners. The context key is what must match for a cached answer to be
//! reusable at all: tenant, model or route, earlier turns (the system prompt among them, with
//! their tool calls and results), stop sequences, sampling class and the answer's shape (tools,
//! tool choice, response format, seed and the other output controls). Its hash picks one
//! of a fixed number of partitions, so ownership moves in whole units; who owns a partition is
//! the cluster's ring ([`crate::cluster::ring`]). The hash is fixed and seedless (xxh3), never
//! `RandomState`, so every node puts a context in the same partition.

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::cache::key::{answer_shape, field, message};
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
/// user's and text only. Anything else (an assistant prefill, a conversation ending in a tool or
/// system turn, a question about an image) is not looked up.
pub fn semantic_prompt(request: &ChatRequest) -> Option<&str> {
    let last = request.messages.last()?;
    (last.role == Role::User && !last.has_image()).then_some(last.content.as_str())
}

/// The context key of `request` for `tenant`, as 16 hex digits: tenant, model or route, every
/// message before the last user turn (the system prompt and any earlier turns, whitespace
/// normalised, with their roles), the stop sequences and the sampling class. Only the last user
/// turn is matched by meaning; everything else must be identical.
pub fn context_key(tenant: &str, request: &ChatRequest) -> String {
    let mut hasher = Xxh3::new();
    field(&mut hasher, b"semantic-context-v4");
    field(&mut hasher, tenant.as_bytes());
    field(&mut hasher, request.model.as_deref().unwrap_or("auto").as_bytes());
    let earlier = request.messages.len().saturating_sub(1);
    for turn in &request.messages[..earlier] {
        message(&mut hasher, turn);
    }
    field(&mut hasher, b"stop");
    for stop in &request.sampling.stop {
        field(&mut hasher, stop.as_bytes());
    }
    field(&mut hasher, sampling_class(request).as_bytes());
    answer_shape(&mut hasher, request);
    format!("{:016x}", hasher.digest())
}

/// The partition of a context key.
pub fn partition_of(context_key: &str) -> u32 {
    (xxh3_64(context_key.as_bytes()) % u64::from(PARTITIONS)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    fn request(system: &str, temperature: Option<f32>) -> ChatRequest {
        let mut request = ChatRequest {
            messages: vec![Message::text(Role::System, system), Message::text(Role::User, "any question")],
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
        follow_up.messages.push(Message::text(Role::Assistant, "an answer"));
        follow_up.messages.push(Message::text(Role::User, "and then?"));
        let mut other_history = follow_up.clone();
        other_history.messages[1].content = "another question".into();
        assert_ne!(context_key("acme", &follow_up), context_key("acme", &other_history), "\"and then?\" depends on what came before");
        assert_eq!(semantic_prompt(&follow_up), Some("and then?"));
        let mut prefill = follow_up.clone();
        prefill.messages.push(Message::text(Role::Assistant, "Sure,"));
        assert_eq!(semantic_prompt(&prefill), None);
    }

    #[test]
    fn tool_sets_and_formats_are_context_and_images_are_not_matched() {
        let base = context_key("acme", &request("be brief", None));
        let mut tools = request("be brief", None);
        tools.tools = vec![crate::model::Tool { name: "f".into(), description: None, parameters: None, strict: None, prompt_cache: None }];
        let tools_key = context_key("acme", &tools);
        assert_ne!(base, tools_key);
        let mut other_tools = tools.clone();
        other_tools.tools[0].name = "g".into();
        assert_ne!(tools_key, context_key("acme", &other_tools));
        let mut json = request("be brief", None);
        json.response_format = Some(crate::model::ResponseFormat::JsonObject);
        assert_ne!(base, context_key("acme", &json));
        let mut image = request("be brief", None);
        image.messages[1].parts = vec![crate::model::ContentPart::Image { url: "https://x/a.png".into(), detail: None }];
        assert_eq!(semantic_prompt(&image), None);
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
