//! The exact cache key: a 128-bit xxh3 of, in order, the schema version, the tenant, the model or
//! route the caller named (`auto` for the router's choice), every message's role and
//! whitespace-normalised content, and every sampling parameter that changes the output
//! (temperature, top_p, max_tokens, stop sequences). Each field is length-prefixed, so no two
//! different requests encode alike; two requests that differ in any of these never share an
//! answer, and the tenant in every key keeps tenants apart.

use xxhash_rust::xxh3::Xxh3;

use crate::model::ChatRequest;

/// Bumped whenever the encoding below changes, so old entries are never read as new ones.
pub const SCHEMA_VERSION: &str = "exact-v1";

fn field(hasher: &mut Xxh3, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

fn optional(hasher: &mut Xxh3, value: Option<u32>) {
    match value {
        Some(value) => {
            hasher.update(&[1]);
            hasher.update(&value.to_le_bytes());
        }
        None => hasher.update(&[0]),
    }
}

/// Content with runs of whitespace collapsed to one space and the ends trimmed.
pub fn normalise(content: &str) -> String {
    content.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The key of `request` for `tenant`, as 32 hex digits.
pub fn exact_key(tenant: &str, request: &ChatRequest) -> String {
    let mut hasher = Xxh3::new();
    field(&mut hasher, SCHEMA_VERSION.as_bytes());
    field(&mut hasher, tenant.as_bytes());
    field(&mut hasher, request.model.as_deref().unwrap_or("auto").as_bytes());
    hasher.update(&(request.messages.len() as u64).to_le_bytes());
    for message in &request.messages {
        field(&mut hasher, message.role.as_str().as_bytes());
        field(&mut hasher, normalise(&message.content).as_bytes());
    }
    let sampling = &request.sampling;
    optional(&mut hasher, sampling.temperature.map(f32::to_bits));
    optional(&mut hasher, sampling.top_p.map(f32::to_bits));
    optional(&mut hasher, sampling.max_tokens);
    hasher.update(&(sampling.stop.len() as u64).to_le_bytes());
    for stop in &sampling.stop {
        field(&mut hasher, stop.as_bytes());
    }
    format!("{:032x}", hasher.digest128())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Message, Role};

    fn request(content: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![
                Message { role: Role::System, content: "be brief".into() },
                Message { role: Role::User, content: content.into() },
            ],
            model: Some("gpt-4o-mini".into()),
            ..ChatRequest::default()
        }
    }

    #[test]
    fn whitespace_does_not_matter_but_everything_else_does() {
        let base = exact_key("acme", &request("what is rust?"));
        assert_eq!(base, exact_key("acme", &request("  what   is\nrust? ")));
        assert_ne!(base, exact_key("globex", &request("what is rust?")), "tenant");
        assert_ne!(base, exact_key("acme", &request("what is go?")), "content");
        let mut other = request("what is rust?");
        other.model = Some("gpt-4o".into());
        assert_ne!(base, exact_key("acme", &other), "model");
        let mut other = request("what is rust?");
        other.sampling.temperature = Some(0.5);
        assert_ne!(base, exact_key("acme", &other), "temperature");
        let mut other = request("what is rust?");
        other.sampling.max_tokens = Some(10);
        assert_ne!(base, exact_key("acme", &other), "max_tokens");
        let mut other = request("what is rust?");
        other.sampling.stop = vec!["\n".into()];
        assert_ne!(base, exact_key("acme", &other), "stop");
        let mut other = request("what is rust?");
        other.messages[0].role = Role::User;
        assert_ne!(base, exact_key("acme", &other), "role");
        // Moving text between messages changes the key: fields are length-prefixed.
        let mut split = request("what is rust?");
        split.messages[0].content = "be brief what".into();
        split.messages[1].content = "is rust?".into();
        assert_ne!(base, exact_key("acme", &split));
    }
}
