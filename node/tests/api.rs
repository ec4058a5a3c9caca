//! API fidelity end to end over real sockets: the Anthropic Messages front door (errors in
//! Anthropic's shape, nothing reaching an upstream on bad input), embeddings (priced, recorded,
//! exact-cached, never swapped for a chat model), and tool-call answers in the caches (replayed
//! with their calls, unary and streamed; never shared across tool sets, by either layer).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, config_for, sim_calls, sim_endpoint_calls, start_sim};
use serde_json::{Value, json};

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default()
}

async fn post(node: &Node, path: &str, body: &Value) -> reqwest::Response {
    http().post(format!("{}{path}", node.http)).json(body).send().await.unwrap()
}

/// `data:` lines of an SSE body, parsed, with their event names (empty for OpenAI's unnamed ones).
async fn sse(response: reqwest::Response) -> Vec<(String, Value)> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|frame| {
            let mut name = String::new();
            let mut data = None;
            for line in frame.lines() {
                if let Some(rest) = line.strip_prefix("event: ") {
                    name = rest.to_owned();
                } else if let Some(rest) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(rest).ok();
                }
            }
            Some((name, data?))
        })
        .collect()
}

const WEATHER: &str = r#"{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}"#;

#[tokio::test]
async fn the_messages_api_refuses_bad_input_in_anthropic_shape_and_calls_no_upstream() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    let weather: Value = serde_json::from_str(WEATHER).unwrap();
    let base = json!({"model": "claude-haiku", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let cases = [
        (json!({"model": "claude-haiku", "messages": [{"role": "user", "content": "hi"}]}), "max_tokens"),
        (with("temperature", json!(1.5)), "temperature"),
        (with("thinking", json!({"type": "enabled", "budget_tokens": 1024})), "thinking"),
        (with("tools", json!([{"type": "web_search_20250305", "name": "web_search"}])), "tools[0].type"),
        (json!({"model": "claude-haiku", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}], "tools": [weather.clone()], "tool_choice": {"type": "tool", "name": "nowhere"}}), "tool_choice"),
        (with("messages", json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}]}])), "messages[0].content[0].tool_use_id"),
        (with("messages", json!([{"role": "user", "content": [{"type": "document", "source": {}}]}])), "messages[0].content[0].type"),
        (with("messages", json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "get_weather", "input": "Paris"}]}])), "messages[1].content[0].input"),
        (with("stop_sequenses", json!(["x"])), "stop_sequenses"),
        (with("model", json!("gpt-17")), "gpt-17"),
        (with("top_k", json!(0)), "top_k"),
    ];
    for (body, named) in cases {
        let response = post(&node, "/v1/messages", &body).await;
        assert_eq!(response.status(), 400, "{named}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains(named), "{named}: {error}");
    }
    let wrong_version = http()
        .post(format!("{}/v1/messages", node.http))
        .header("anthropic-version", "2099-01-01")
        .json(&base)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_version.status(), 400);
    assert!(wrong_version.text().await.unwrap().contains("anthropic-version"));
    assert_eq!(sim_endpoint_calls(&sim, "anthropic").await + sim_endpoint_calls(&sim, "openai").await, 0, "nothing reached an upstream");

    // Top-k goes to Anthropic and to vLLM, never to OpenAI: a request naming an OpenAI model
    // fails over to one that honours it, and says so.
    let top_k = with("top_k", json!(20));
    let mut openai_top_k = top_k.clone();
    openai_top_k["model"] = json!("gpt-4o-mini");
    let response = post(&node, "/v1/messages", &openai_top_k).await;
    assert_eq!(response.status(), 200);
    assert_ne!(header(&response, "x-switchyard-provider"), "openai");
    assert!(header(&response, "x-switchyard-routing-reason").contains("top_k"), "{}", header(&response, "x-switchyard-routing-reason"));
}

#[tokio::test]
async fn a_messages_stream_cut_midway_ends_with_an_error_event() {
    let sim = start_sim().await;
    common::sim_behaviour(&sim, Some("claude-haiku"), json!({"answer_tokens": 40, "fault": {"type": "cut_stream", "after_tokens": 5}})).await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    let body = json!({"model": "claude-haiku", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "tell me a story"}]});
    let response = post(&node, "/v1/messages", &body).await;
    assert_eq!(response.status(), 200);
    let events = sse(response).await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"error"), "a cut stream never ends cleanly: {names:?}");
    assert!(!names.contains(&"message_stop"), "{names:?}");
}

#[tokio::test]
async fn embeddings_are_priced_recorded_and_exact_cached() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c.replace("exact = false ", "exact = true ")));
    let body = json!({"model": "text-embedding-3-small", "input": ["switch yard", "rail points"], "dimensions": 8});
    let first = post(&node, "/v1/embeddings", &body).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-switchyard-cache"), "none");
    // 4 words at $0.02 per million tokens.
    assert_eq!(header(&first, "x-switchyard-cost-usd"), "0.000000080");
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(first["usage"], json!({"prompt_tokens": 4, "total_tokens": 4}));
    assert_eq!(sim_calls(&sim, "text-embedding-3-small").await, 1);

    let mut base64 = body.clone();
    base64["encoding_format"] = json!("base64");
    let second = post(&node, "/v1/embeddings", &base64).await;
    assert_eq!(header(&second, "x-switchyard-cache"), "exact", "the encoding is presentation, not part of the key");
    assert_eq!(header(&second, "x-switchyard-cost-usd"), "0.000000000");
    let second: Value = second.json().await.unwrap();
    assert!(second["data"][1]["embedding"].is_string());
    assert_eq!(sim_calls(&sim, "text-embedding-3-small").await, 1, "the hit never reached the upstream");

    let mut other_dimensions = body.clone();
    other_dimensions["dimensions"] = json!(16);
    let third = post(&node, "/v1/embeddings", &other_dimensions).await;
    assert_eq!(header(&third, "x-switchyard-cache"), "none");

    let by_model: Value = http().get(format!("{}/admin/v1/cost/by-model", node.http)).send().await.unwrap().json().await.unwrap();
    assert!(by_model.to_string().contains("text-embedding-3-small"), "{by_model}");

    for (body, named) in [
        (json!({"model": "gpt-4o-mini", "input": "x"}), "gpt-4o-mini"),
        (json!({"input": "x"}), "model"),
        (json!({"model": "text-embedding-3-small", "input": ""}), "input[0]"),
        (json!({"model": "text-embedding-3-small", "input": [1, 2]}), "input[0]"),
        (json!({"model": "text-embedding-3-small", "input": "x", "encoding_format": "hex"}), "encoding_format"),
    ] {
        let response = post(&node, "/v1/embeddings", &body).await;
        assert_eq!(response.status(), 400, "{named}");
        assert!(response.text().await.unwrap().contains(named), "{named}");
    }
    let chat = json!({"model": "text-embedding-3-small", "messages": [{"role": "user", "content": "hi"}]});
    let response = post(&node, "/v1/chat/completions", &chat).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("embedding model"));
    assert_eq!(sim_calls(&sim, "text-embedding-3-small").await, 2);
}

#[tokio::test]
async fn tool_call_answers_are_replayed_with_their_calls_and_never_across_tool_sets() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c.replace("exact = false ", "exact = true ")));
    let tool = |name: &str| json!({"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    let body = |tools: Value| json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "weather in Paris?"}], "tools": tools, "tool_choice": "required"});
    let first = post(&node, "/v1/chat/completions", &body(json!([tool("get_weather")]))).await;
    assert_eq!(header(&first, "x-switchyard-cache"), "none");
    let first: Value = first.json().await.unwrap();
    let calls = first["choices"][0]["message"]["tool_calls"].clone();
    assert_eq!(calls.as_array().map(Vec::len), Some(1), "{first}");
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");

    let again = post(&node, "/v1/chat/completions", &body(json!([tool("get_weather")]))).await;
    assert_eq!(header(&again, "x-switchyard-cache"), "exact");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["choices"][0]["message"]["tool_calls"], calls);
    assert_eq!(again["choices"][0]["finish_reason"], "tool_calls");

    let mut streamed = body(json!([tool("get_weather")]));
    streamed["stream"] = json!(true);
    let replay = post(&node, "/v1/chat/completions", &streamed).await;
    assert_eq!(header(&replay, "x-switchyard-cache"), "exact");
    let chunks = sse(replay).await;
    let mut arguments = String::new();
    let mut finish = None;
    for (_, chunk) in &chunks {
        if let Some(delta) = chunk["choices"][0]["delta"]["tool_calls"].as_array() {
            for piece in delta {
                assert_eq!(piece["index"], 0);
                if let Some(id) = piece["id"].as_str() {
                    assert_eq!(id, calls[0]["id"]);
                }
                arguments.push_str(piece["function"]["arguments"].as_str().unwrap_or_default());
            }
        }
        if let Some(reason) = chunk["choices"][0]["finish_reason"].as_str() {
            finish = Some(reason.to_owned());
        }
    }
    assert_eq!(arguments, calls[0]["function"]["arguments"].as_str().unwrap());
    assert_eq!(finish.as_deref(), Some("tool_calls"));

    // Another tool set, or the same tool described differently, is another question.
    let other = post(&node, "/v1/chat/completions", &body(json!([tool("get_forecast")]))).await;
    assert_eq!(header(&other, "x-switchyard-cache"), "none");
    let mut described = tool("get_weather");
    described["function"]["description"] = json!("today's weather");
    let described = post(&node, "/v1/chat/completions", &body(json!([described]))).await;
    assert_eq!(header(&described, "x-switchyard-cache"), "none");
    assert_eq!(sim_calls(&sim, "gpt-4o-mini").await, 3);
}

#[tokio::test]
async fn the_semantic_layer_never_answers_across_tool_sets_or_formats() {
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c.replace("[semantic_cache]\nenabled = false ", "[semantic_cache]\nenabled = true ")));
    let tool = |name: &str| json!({"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    // tool_choice none: answers are text, which the semantic layer stores.
    let ask = |extra: Value| {
        let mut body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital city of France?"}], "tool_choice": "none"});
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        body
    };
    let stored = post(&node, "/v1/chat/completions", &ask(json!({"tools": [tool("get_weather")]}))).await;
    assert_eq!(header(&stored, "x-switchyard-cache"), "none");
    let same = post(&node, "/v1/chat/completions", &ask(json!({"tools": [tool("get_weather")]}))).await;
    assert!(header(&same, "x-switchyard-cache").starts_with("semantic"), "{}", header(&same, "x-switchyard-cache"));
    for extra in [
        json!({"tools": [tool("lookup_city")]}),
        json!({"tools": [tool("get_weather"), tool("get_time")]}),
        json!({"tools": [tool("get_weather")], "response_format": {"type": "json_object"}}),
    ] {
        let response = post(&node, "/v1/chat/completions", &ask(extra.clone())).await;
        assert_eq!(header(&response, "x-switchyard-cache"), "none", "{extra}");
    }
}

/// What the simulator answers the OpenAI body `body`, predicted without a call.
fn predicted(body: &Value) -> switchyard_loadtest::sim::SimAnswer {
    switchyard_loadtest::sim::predict_openai(body, &switchyard_loadtest::sim::Behaviour::default()).expect("the sim takes the body")
}

#[tokio::test]
async fn grpc_tool_calls_are_the_calls_the_model_made_unary_and_streamed_over_both_wires() {
    use futures::StreamExt as _;
    use switchyard_proto::v1;

    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    let mut client = node.grpc_client().await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "days"]});
    for (model, anthropic) in [("gpt-4o-mini", false), ("claude-haiku", true)] {
        let question = format!("forecast for Lyon, asked of {model}");
        let request = v1::GenerateRequest {
            model: model.into(),
            tools: vec![v1::Tool { name: "get_forecast".into(), parameters_json: schema.to_string(), ..v1::Tool::default() }],
            tool_choice: Some(v1::ToolChoice { choice: Some(v1::tool_choice::Choice::Function("get_forecast".into())) }),
            ..common::grpc_request(&question)
        };
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "tools": [{"type": "function", "function": {"name": "get_forecast", "parameters": schema}}],
            "tool_choice": {"type": "function", "function": {"name": "get_forecast"}},
        });
        let expected = &predicted(&body).tool_calls[0];
        let expected_id = if anthropic { expected.anthropic_id() } else { expected.openai_id() };

        let answer = client.generate(request.clone()).await.unwrap().into_inner();
        assert_eq!(answer.finish_reason, "tool_calls", "{model}");
        assert_eq!(answer.tool_calls.len(), 1, "{model}");
        let call = &answer.tool_calls[0];
        assert_eq!((call.id.as_str(), call.name.as_str(), call.arguments.as_str()), (expected_id.as_str(), "get_forecast", expected.arguments.as_str()), "{model}");

        let mut stream = client.generate_stream(request).await.unwrap().into_inner();
        let (mut id, mut name, mut arguments, mut pieces, mut finish) = (String::new(), String::new(), String::new(), 0, String::new());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            if let Some(delta) = chunk.tool_call {
                assert_eq!(delta.index, 0);
                id.push_str(&delta.id);
                name.push_str(&delta.name);
                arguments.push_str(&delta.arguments);
                pieces += 1;
            }
            if !chunk.finish_reason.is_empty() {
                finish = chunk.finish_reason;
            }
        }
        assert_eq!((id.as_str(), name.as_str(), arguments.as_str()), (expected_id.as_str(), "get_forecast", expected.arguments.as_str()), "{model}");
        assert!(pieces >= 3, "{model}: the call arrived in {pieces} pieces, not as it was produced");
        assert_eq!(finish, "tool_calls", "{model}");
    }
}

#[tokio::test]
async fn unknown_fields_reach_only_providers_that_pass_them_on() {
    let sim = start_sim().await;
    let config = config_for(sim.addr, |c| c.replace("self_hosted = true\nrequest_timeout", "self_hosted = true\npass_unknown_fields = true\nrequest_timeout"));
    assert!(config.contains("pass_unknown_fields = true"), "the example's vllm provider is where the flag goes");
    let node = Node::start(&config);
    let body = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "prediction": {"type": "content", "content": "hello"}});
    let passed = post(&node, "/v1/chat/completions", &body("llama-3.1-8b")).await;
    assert_eq!(passed.status(), 200);
    assert_eq!(header(&passed, "x-switchyard-provider"), "vllm");
    // gpt-4o-mini falls back to llama-3.1-8b, which takes the field.
    let routed = post(&node, "/v1/chat/completions", &body("gpt-4o-mini")).await;
    assert_eq!(header(&routed, "x-switchyard-provider"), "vllm");
    assert!(header(&routed, "x-switchyard-routing-reason").contains("prediction"));
    // Without the flag no provider takes it: refused, naming it, before any upstream is called.
    let calls = sim_endpoint_calls(&sim, "openai").await;
    let strict = Node::start(&config_for(sim.addr, |c| c));
    let refused = post(&strict, "/v1/chat/completions", &body("gpt-4o-mini")).await;
    assert_eq!(refused.status(), 400);
    let message = refused.text().await.unwrap();
    assert!(message.contains("prediction") && message.contains("pass_unknown_fields"), "{message}");
    assert_eq!(sim_endpoint_calls(&sim, "openai").await, calls);
}

#[tokio::test]
async fn grpc_structured_output_and_image_parts_reach_the_model_and_fail_over_where_they_must() {
    use switchyard_proto::v1;

    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    let mut client = node.grpc_client().await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}}, "required": ["answer", "confidence"]});
    let request = v1::GenerateRequest {
        model: "gpt-4o-mini".into(),
        response_format: Some(v1::ResponseFormat { r#type: "json_schema".into(), schema_name: "verdict".into(), schema_json: schema.to_string(), strict: Some(true), ..v1::ResponseFormat::default() }),
        ..common::grpc_request("answer as JSON")
    };
    let answer = client.generate(request.clone()).await.unwrap().into_inner();
    let value: Value = serde_json::from_str(&answer.text).unwrap();
    assert_eq!(value.as_object().map(|fields| fields.keys().cloned().collect::<Vec<_>>()), Some(vec!["answer".to_owned(), "confidence".to_owned()]));
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "answer as JSON"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": true}}});
    assert_eq!(Some(answer.text.clone()), predicted(&body).content, "the schema reached the model as sent");
    // Anthropic has no structured output: a request naming an Anthropic model is served elsewhere.
    let failed_over = client.generate(v1::GenerateRequest { model: "claude-haiku".into(), ..request }).await.unwrap().into_inner();
    assert_ne!(failed_over.provider, "anthropic");
    assert!(failed_over.routing_reason.contains("response_format"), "{}", failed_over.routing_reason);

    // An image part goes to an Anthropic model as an image block.
    let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let parts = vec![
        v1::ContentPart { part: Some(v1::content_part::Part::Text("what is in this image?".into())) },
        v1::ContentPart { part: Some(v1::content_part::Part::Image(v1::ImagePart { url: png.into(), detail: String::new() })) },
    ];
    let request = v1::GenerateRequest {
        model: "claude-haiku".into(),
        messages: vec![v1::ChatMessage { role: "user".into(), parts, ..v1::ChatMessage::default() }],
        ..v1::GenerateRequest::default()
    };
    let answer = client.generate(request).await.unwrap().into_inner();
    assert_eq!(answer.provider, "anthropic");
    assert!(!answer.text.is_empty());
    let bad_detail = v1::GenerateRequest {
        model: "claude-haiku".into(),
        messages: vec![v1::ChatMessage {
            role: "user".into(),
            parts: vec![v1::ContentPart { part: Some(v1::content_part::Part::Image(v1::ImagePart { url: png.into(), detail: "huge".into() })) }],
            ..v1::ChatMessage::default()
        }],
        ..v1::GenerateRequest::default()
    };
    let status = client.generate(bad_detail).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("messages[0].parts[0].image.detail"), "{}", status.message());
}
