//! What each provider kind can honour of a request. The pipeline asks before it routes: a
//! target whose provider cannot honour a field the request uses is left out of the chain (the
//! next one that can serves), and when none can, the request is refused with 400 naming the field
//! and the provider. A request is never sent anywhere with a field quietly dropped.
//!
//! | field                                   | openai | openai_compatible | anthropic                  |
//! | --------------------------------------- | ------ | ----------------- | -------------------------- |
//! | tools, tool_choice, tool turns          | yes    | yes               | yes (tool_use/tool_result) |
//! | parallel_tool_calls                     | yes    | yes               | yes (disable_parallel_…)   |
//! | tools[].function.strict                 | yes    | yes               | no                         |
//! | image parts (`https:`, `data:` URLs)    | yes    | yes               | yes (`detail` auto only)   |
//! | response_format json_object/json_schema | yes    | yes               | no                         |
//! | seed, penalties, logit_bias, logprobs   | yes    | yes               | no                         |
//! | reasoning_effort                        | yes    | yes               | no                         |
//! | top_k                                   | no     | yes (vLLM, TGI)   | yes                        |
//! | a tool result's is_error                | as `Error: …` text | same  | yes                        |
//! | unknown top-level fields                | with `pass_unknown_fields` | same | no                |

use crate::model::{ChatRequest, ContentPart, ResponseFormat};
use crate::provider::{ProviderKind, ProviderSettings, anthropic};

/// A field of a request that a provider cannot honour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unhonoured {
    /// The request field, as the error names it.
    pub field: String,
    /// Why, naming the provider.
    pub reason: String,
}

impl Unhonoured {
    fn new(field: impl Into<String>, provider: &ProviderSettings, why: &str) -> Self {
        Self { field: field.into(), reason: format!("provider \"{}\" ({}) {why}", provider.name, provider.kind.as_str()) }
    }
}

/// The first field of `request` that `provider` cannot honour, if any.
pub fn unhonoured(provider: &ProviderSettings, request: &ChatRequest) -> Option<Unhonoured> {
    if let Some(field) = request.passthrough.keys().next() {
        let passes = provider.pass_unknown_fields && provider.kind != ProviderKind::Anthropic;
        if !passes {
            return Some(Unhonoured::new(
                field.as_str(),
                provider,
                "does not take fields the gateway does not know (set `pass_unknown_fields = true` on an OpenAI-compatible provider to pass them on)",
            ));
        }
    }
    match provider.kind {
        ProviderKind::OpenAi if request.sampling.top_k.is_some() => Some(Unhonoured::new("top_k", provider, "has no equivalent of it")),
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => None,
        ProviderKind::Anthropic => anthropic_unhonoured(provider, request),
    }
}

fn anthropic_unhonoured(provider: &ProviderSettings, request: &ChatRequest) -> Option<Unhonoured> {
    let sampling = &request.sampling;
    let unsupported = [
        ("seed", sampling.seed.is_some()),
        ("frequency_penalty", sampling.frequency_penalty.is_some()),
        ("presence_penalty", sampling.presence_penalty.is_some()),
        ("logit_bias", !sampling.logit_bias.is_empty()),
        ("logprobs", sampling.logprobs.is_some()),
        ("reasoning_effort", sampling.reasoning_effort.is_some()),
        ("response_format", request.response_format.as_ref().is_some_and(|format| *format != ResponseFormat::Text)),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, used)| *used) {
        return Some(Unhonoured::new(*field, provider, "has no equivalent of it"));
    }
    if let Some(index) = request.tools.iter().position(|tool| tool.strict == Some(true)) {
        return Some(Unhonoured::new(format!("tools[{index}].function.strict"), provider, "does not guarantee schema adherence"));
    }
    for (index, message) in request.messages.iter().enumerate() {
        if let Some(call) = message.tool_calls.iter().position(|call| anthropic::call_input(call).is_none()) {
            return Some(Unhonoured::new(
                format!("messages[{index}].tool_calls[{call}].function.arguments"),
                provider,
                "takes tool call arguments only as a JSON object",
            ));
        }
        for (part_index, part) in message.parts.iter().enumerate() {
            let ContentPart::Image { url, detail } = part else { continue };
            let field = format!("messages[{index}].content[{part_index}].image_url");
            if anthropic::image_block(url).is_none() {
                return Some(Unhonoured::new(format!("{field}.url"), provider, "takes images only as https: or base64 data: URLs"));
            }
            if detail.as_deref().is_some_and(|detail| detail != "auto") {
                return Some(Unhonoured::new(format!("{field}.detail"), provider, "chooses image resolution itself"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Message, Role, Tool, ToolCall};

    fn provider(kind: ProviderKind, pass_unknown_fields: bool) -> ProviderSettings {
        ProviderSettings {
            name: "p".into(),
            kind,
            base_url: "http://127.0.0.1:1".into(),
            api_key: None,
            self_hosted: false,
            request_timeout: std::time::Duration::from_secs(1),
            connect_timeout: std::time::Duration::from_secs(1),
            first_token_timeout: std::time::Duration::from_secs(1),
            max_concurrent: 1,
            retry: crate::provider::RetrySettings::default(),
            breaker: crate::provider::BreakerSettings::default(),
            anthropic_version: "2023-06-01".into(),
            default_max_tokens: 16,
            pass_unknown_fields,
        }
    }

    fn request() -> ChatRequest {
        ChatRequest { messages: vec![Message::text(Role::User, "hi")], ..ChatRequest::default() }
    }

    #[test]
    fn openai_honours_everything_but_unknown_fields_unless_told() {
        let mut request = request();
        request.sampling.seed = Some(7);
        request.response_format = Some(ResponseFormat::JsonObject);
        assert_eq!(unhonoured(&provider(ProviderKind::OpenAi, false), &request), None);
        request.passthrough.insert("prediction".into(), serde_json::json!({"type": "content"}));
        let refused = unhonoured(&provider(ProviderKind::OpenAiCompatible, false), &request);
        assert_eq!(refused.map(|refused| refused.field), Some("prediction".to_owned()));
        assert_eq!(unhonoured(&provider(ProviderKind::OpenAiCompatible, true), &request), None);
        assert!(unhonoured(&provider(ProviderKind::Anthropic, true), &request).is_some(), "Anthropic never takes unknown fields");
    }

    #[test]
    fn top_k_goes_where_it_is_understood() {
        let mut request = request();
        request.sampling.top_k = Some(40);
        let field = |kind| unhonoured(&provider(kind, false), &request).map(|refused| refused.field);
        assert_eq!(field(ProviderKind::OpenAi).as_deref(), Some("top_k"));
        assert_eq!(field(ProviderKind::OpenAiCompatible), None);
        assert_eq!(field(ProviderKind::Anthropic), None);
    }

    #[test]
    fn anthropic_names_what_it_cannot_do() {
        let anthropic = provider(ProviderKind::Anthropic, false);
        let field = |request: &ChatRequest| unhonoured(&anthropic, request).map(|refused| refused.field);
        let mut tools = request();
        tools.tools = vec![Tool { name: "f".into(), description: None, parameters: None, strict: None, prompt_cache: None }];
        assert_eq!(field(&tools), None);
        tools.tools[0].strict = Some(true);
        assert_eq!(field(&tools).as_deref(), Some("tools[0].function.strict"));
        let mut seeded = request();
        seeded.sampling.seed = Some(1);
        assert_eq!(field(&seeded).as_deref(), Some("seed"));
        let mut json = request();
        json.response_format = Some(ResponseFormat::JsonObject);
        assert_eq!(field(&json).as_deref(), Some("response_format"));
        let mut bad_arguments = request();
        bad_arguments.messages.push(Message {
            role: Role::Assistant,
            tool_calls: vec![ToolCall { id: "c".into(), name: "f".into(), arguments: "[1]".into() }],
            ..Message::default()
        });
        assert_eq!(field(&bad_arguments).as_deref(), Some("messages[1].tool_calls[0].function.arguments"));
        let mut image = request();
        image.messages[0].parts = vec![ContentPart::Image { url: "ftp://x/y.png".into(), detail: None }];
        assert_eq!(field(&image).as_deref(), Some("messages[0].content[0].image_url.url"));
        image.messages[0].parts = vec![ContentPart::Image { url: "data:image/png;base64,AAAA".into(), detail: Some("high".into()) }];
        assert_eq!(field(&image).as_deref(), Some("messages[0].content[0].image_url.detail"));
        image.messages[0].parts = vec![ContentPart::Image { url: "https://example.com/cat.png".into(), detail: Some("auto".into()) }];
        assert_eq!(field(&image), None);
        let refused = unhonoured(&anthropic, &seeded).map(|refused| refused.reason);
        assert_eq!(refused.as_deref(), Some("provider \"p\" (anthropic) has no equivalent of it"));
    }
}
