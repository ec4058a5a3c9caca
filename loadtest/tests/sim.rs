//! The upstream simulator over real HTTP: both wire formats, unary and streamed, determinism,
//! call counting, pacing and every fault.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use futures::StreamExt as _;
use serde_json::{Value, json};
use switchyard_loadtest::sim::{
    self, Behaviour, CallCounts, FINGERPRINT_HEADER, Fault, SimConfig, SimHandle, fingerprint,
};

/// Starts a simulator whose default behaviour is `behaviour`.
async fn start(behaviour: Behaviour) -> anyhow::Result<SimHandle> {
    sim::spawn(SimConfig {
        default_behaviour: behaviour,
    })
    .await
}

/// Starts a simulator with the default behaviour.
async fn start_default() -> anyhow::Result<SimHandle> {
    sim::spawn(SimConfig::default()).await
}

/// A behaviour injecting `fault` into every call.
fn faulty(fault: Fault) -> Behaviour {
    Behaviour {
        fault: Some(fault),
        ..Behaviour::default()
    }
}

/// A plain HTTP client.
fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// `POST /v1/chat/completions`.
async fn post_openai(sim: &SimHandle, body: &Value) -> anyhow::Result<reqwest::Response> {
    let url = format!("{}/v1/chat/completions", sim.url());
    Ok(client()
        .post(url)
        .bearer_auth("sk-test")
        .json(body)
        .send()
        .await?)
}

/// `POST /v1/messages`.
async fn post_anthropic(sim: &SimHandle, body: &Value) -> anyhow::Result<reqwest::Response> {
    let url = format!("{}/v1/messages", sim.url());
    let request = client()
        .post(url)
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(body);
    Ok(request.send().await?)
}

/// An OpenAI request for one user message.
fn openai_request(model: &str, prompt: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] })
}

/// An Anthropic request for one user message.
fn anthropic_request(model: &str, prompt: &str, max_tokens: u32) -> Value {
    json!({
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{ "role": "user", "content": prompt }],
    })
}

/// The `x-sim-fingerprint` header of `response`.
fn fingerprint_header(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(FINGERPRINT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// The `(event, data)` pairs of an SSE body with named events.
fn sse_events(body: &str) -> anyhow::Result<Vec<(String, Value)>> {
    body.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            let name = event.lines().find_map(|line| line.strip_prefix("event: "));
            let data = event.lines().find_map(|line| line.strip_prefix("data: "));
            let (Some(name), Some(data)) = (name, data) else {
                anyhow::bail!("incomplete event {event:?}");
            };
            Ok((name.to_owned(), serde_json::from_str(data)?))
        })
        .collect()
}

/// Reads a body to its end or to its first error; returns the text and whether it failed.
async fn read_until_error(response: reqwest::Response) -> (String, bool) {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(_) => return (String::from_utf8_lossy(&body).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&body).into_owned(), false)
}

/// `GET /_sim/calls`.
async fn calls(sim: &SimHandle) -> anyhow::Result<CallCounts> {
    Ok(client()
        .get(format!("{}/_sim/calls", sim.url()))
        .send()
        .await?
        .json()
        .await?)
}

/// `PUT /_sim/behaviour`.
async fn put_behaviour(sim: &SimHandle, body: &Value) -> anyhow::Result<reqwest::Response> {
    Ok(client()
        .put(format!("{}/_sim/behaviour", sim.url()))
        .json(body)
        .send()
        .await?)
}

#[tokio::test]
async fn openai_unary_answer_is_a_chat_completion() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let response = post_openai(&sim, &openai_request("gpt-test", "hello there")).await?;
    assert_eq!(response.status(), 200);
    let expected_fingerprint = fingerprint(&[("user", "hello there")]);
    assert_eq!(
        fingerprint_header(&response).as_deref(),
        Some(expected_fingerprint.as_str())
    );
    let body: Value = response.json().await?;
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-sim-"))
    );
    assert_eq!(body["object"], "chat.completion");
    assert!(
        body["created"]
            .as_u64()
            .is_some_and(|created| created > 1_600_000_000)
    );
    assert_eq!(body["model"], "gpt-test");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    let content = choice["message"]["content"]
        .as_str()
        .context("no content")?;
    assert!(
        content.starts_with(&format!("[sim {expected_fingerprint}] ")),
        "{content}"
    );
    assert_eq!(
        content.split(' ').count(),
        17,
        "16 tokens, the first with a space inside"
    );
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    assert_eq!(body["usage"]["completion_tokens"], 16);
    assert_eq!(body["usage"]["total_tokens"], 18);
    Ok(())
}

#[tokio::test]
async fn openai_max_tokens_cuts_the_answer_with_length() -> anyhow::Result<()> {
    let sim = start_default().await?;
    for limit in ["max_tokens", "max_completion_tokens"] {
        let mut request = openai_request("m", "count to three");
        request[limit] = json!(3);
        let body: Value = post_openai(&sim, &request).await?.json().await?;
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["completion_tokens"], 3);
        let content = body["choices"][0]["message"]["content"]
            .as_str()
            .context("no content")?;
        assert_eq!(content.split(' ').count(), 4);
    }
    Ok(())
}

#[tokio::test]
async fn answers_are_deterministic_and_follow_the_fingerprint() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let other = start_default().await?;
    let as_string = openai_request("m", "same prompt");
    let as_blocks = json!({
        "model": "another-model",
        "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "same " }, { "type": "text", "text": "prompt" }
        ] }],
    });
    let mut answers = Vec::new();
    for (server, request) in [(&sim, &as_string), (&sim, &as_string), (&other, &as_blocks)] {
        let body: Value = post_openai(server, request).await?.json().await?;
        answers.push(body["choices"][0]["message"]["content"].clone());
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);

    let different: Value = post_openai(&sim, &openai_request("m", "another prompt"))
        .await?
        .json()
        .await?;
    assert_ne!(different["choices"][0]["message"]["content"], answers[0]);
    let expected = format!("[sim {}]", fingerprint(&[("user", "another prompt")]));
    let content = different["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(content.starts_with(&expected));
    Ok(())
}

#[tokio::test]
async fn openai_stream_sends_role_tokens_finish_usage_and_done() -> anyhow::Result<()> {
    let sim = start(Behaviour {
        answer_tokens: 4,
        ..Behaviour::default()
    })
    .await?;
    let mut request = openai_request("m", "stream please");
    request["stream"] = json!(true);
    request["stream_options"] = json!({ "include_usage": true });
    let response = post_openai(&sim, &request).await?;
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    assert_eq!(content_type, Some("text/event-stream"));
    assert!(fingerprint_header(&response).is_some());
    let data = sse_data(&response.text().await?);
    assert_eq!(data.len(), 1 + 4 + 1 + 1 + 1, "{data:?}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d))
        .collect::<Result<_, _>>()?;
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "m");
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({ "role": "assistant", "content": "" })
    );
    let text: String = chunks[1..5]
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    let unary: Value = post_openai(&sim, &openai_request("m", "stream please"))
        .await?
        .json()
        .await?;
    let unary_text = unary["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(text, unary_text, "a stream and a unary answer say the same");
    assert_eq!(chunks[5]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 4);
    assert_eq!(chunks[6]["usage"]["prompt_tokens"], 2);
    Ok(())
}

#[tokio::test]
async fn openai_stream_without_include_usage_has_no_usage_chunk() -> anyhow::Result<()> {
    let sim = start(Behaviour {
        answer_tokens: 3,
        ..Behaviour::default()
    })
    .await?;
    let mut request = openai_request("m", "hi");
    request["stream"] = json!(true);
    request["max_tokens"] = json!(2);
    let data = sse_data(&post_openai(&sim, &request).await?.text().await?);
    assert_eq!(data.len(), 1 + 2 + 1 + 1);
    let finish: Value = serde_json::from_str(&data[3])?;
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert!(finish.get("usage").is_none());
    Ok(())
}

#[tokio::test]
async fn openai_invalid_requests_get_400_and_are_counted() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let cases = [
        json!({ "messages": [{ "role": "user", "content": "hi" }] }),
        json!({ "model": "bad-model", "messages": [] }),
        json!({ "model": "bad-model" }),
    ];
    for request in &cases {
        let response = post_openai(&sim, request).await?;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["message"].is_string());
    }
    let not_json = client()
        .post(format!("{}/v1/chat/completions", sim.url()))
        .body("{not json")
        .send()
        .await?;
    assert_eq!(not_json.status(), 400);
    let counts = calls(&sim).await?;
    assert_eq!(counts.total, 4);
    assert_eq!(counts.by_model.get("bad-model"), Some(&2));
    assert_eq!(counts.by_endpoint.get("openai"), Some(&4));
    Ok(())
}

#[tokio::test]
async fn anthropic_unary_answer_is_a_message() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let request = json!({
        "model": "claude-test",
        "max_tokens": 100,
        "system": "be brief",
        "messages": [{ "role": "user", "content": [{ "type": "text", "text": "hello there" }] }],
    });
    let response = post_anthropic(&sim, &request).await?;
    assert_eq!(response.status(), 200);
    let expected_fingerprint = fingerprint(&[("system", "be brief"), ("user", "hello there")]);
    assert_eq!(
        fingerprint_header(&response).as_deref(),
        Some(expected_fingerprint.as_str())
    );
    let body: Value = response.json().await?;
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("msg_sim_"))
    );
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-test");
    assert_eq!(body["content"][0]["type"], "text");
    let text = body["content"][0]["text"].as_str().context("no text")?;
    assert!(text.starts_with(&format!("[sim {expected_fingerprint}]")));
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["stop_sequence"], Value::Null);
    assert_eq!(
        body["usage"],
        json!({ "input_tokens": 4, "output_tokens": 16 })
    );

    let cut: Value = post_anthropic(&sim, &anthropic_request("claude-test", "hi", 5))
        .await?
        .json()
        .await?;
    assert_eq!(cut["stop_reason"], "max_tokens");
    assert_eq!(cut["usage"]["output_tokens"], 5);
    Ok(())
}

#[tokio::test]
async fn anthropic_and_openai_agree_on_the_same_conversation() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let openai = json!({
        "model": "m",
        "messages": [{ "role": "system", "content": "be brief" }, { "role": "user", "content": "hi" }],
    });
    let anthropic = json!({
        "model": "m", "max_tokens": 64, "system": [{ "type": "text", "text": "be brief" }],
        "messages": [{ "role": "user", "content": "hi" }],
    });
    let openai: Value = post_openai(&sim, &openai).await?.json().await?;
    let anthropic: Value = post_anthropic(&sim, &anthropic).await?.json().await?;
    assert_eq!(
        openai["choices"][0]["message"]["content"],
        anthropic["content"][0]["text"]
    );
    Ok(())
}

#[tokio::test]
async fn anthropic_stream_sends_every_event_in_order() -> anyhow::Result<()> {
    let sim = start(Behaviour {
        answer_tokens: 3,
        ..Behaviour::default()
    })
    .await?;
    let mut request = anthropic_request("claude-test", "stream please", 100);
    request["stream"] = json!(true);
    let response = post_anthropic(&sim, &request).await?;
    assert_eq!(response.status(), 200);
    let events = sse_events(&response.text().await?)?;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &events {
        assert_eq!(&data["type"], name.as_str());
    }
    let message = &events[0].1["message"];
    assert!(
        message["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("msg_sim_"))
    );
    assert_eq!(message["model"], "claude-test");
    assert_eq!(
        message["usage"],
        json!({ "input_tokens": 2, "output_tokens": 1 })
    );
    assert_eq!(
        events[1].1["content_block"],
        json!({ "type": "text", "text": "" })
    );
    let text: String = events[3..6]
        .iter()
        .filter_map(|(_, data)| {
            (data["delta"]["type"] == "text_delta").then(|| data["delta"]["text"].as_str())?
        })
        .collect();
    let expected = format!("[sim {}]", fingerprint(&[("user", "stream please")]));
    assert!(text.starts_with(&expected), "{text}");
    assert_eq!(text.split(' ').count(), 4);
    assert_eq!(
        events[7].1["delta"],
        json!({ "stop_reason": "end_turn", "stop_sequence": null })
    );
    assert_eq!(events[7].1["usage"]["output_tokens"], 3);
    Ok(())
}

#[tokio::test]
async fn anthropic_invalid_requests_get_400() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let no_max_tokens = json!({ "model": "c", "messages": [{ "role": "user", "content": "hi" }] });
    let response = post_anthropic(&sim, &no_max_tokens).await?;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await?;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_tokens"))
    );
    let counts = calls(&sim).await?;
    assert_eq!((counts.total, counts.by_model.get("c")), (1, Some(&1)));
    assert_eq!(counts.by_endpoint.get("anthropic"), Some(&1));
    Ok(())
}

#[tokio::test]
async fn calls_are_counted_and_reset() -> anyhow::Result<()> {
    let sim = start(Behaviour {
        answer_tokens: 2,
        ..Behaviour::default()
    })
    .await?;
    post_openai(&sim, &openai_request("a", "x")).await?;
    post_openai(&sim, &openai_request("a", "y")).await?;
    post_anthropic(&sim, &anthropic_request("b", "z", 10)).await?;
    put_behaviour(
        &sim,
        &json!({ "model": "a", "fault": { "type": "status", "status": 500 } }),
    )
    .await?;
    post_openai(&sim, &openai_request("a", "faulted")).await?;

    let raw: Value = client()
        .get(format!("{}/_sim/calls", sim.url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        raw,
        json!({ "total": 4, "by_model": { "a": 3, "b": 1 },
                "by_endpoint": { "openai": 3, "anthropic": 1 } })
    );
    assert_eq!(sim.calls(), serde_json::from_value(raw)?);

    let models: Value = client()
        .get(format!("{}/v1/models", sim.url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .map(|data| {
            data.iter()
                .filter_map(|model| model["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids, ["a", "b"]);

    let reset = client()
        .post(format!("{}/_sim/reset", sim.url()))
        .send()
        .await?;
    assert!(reset.status().is_success());
    let counts = calls(&sim).await?;
    assert_eq!(counts.total, 0);
    assert!(counts.by_model.is_empty());
    assert_eq!(counts.by_endpoint.get("openai"), Some(&0));
    let after: Value = post_openai(&sim, &openai_request("a", "x"))
        .await?
        .json()
        .await?;
    assert_eq!(
        after["usage"]["completion_tokens"], 2,
        "the startup default is back"
    );
    Ok(())
}

#[tokio::test]
async fn behaviours_are_set_per_model_or_as_the_default() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let set = put_behaviour(&sim, &json!({ "model": "short", "answer_tokens": 2 })).await?;
    assert_eq!(set.status(), 200);
    let set = put_behaviour(&sim, &json!({ "answer_tokens": 5 })).await?;
    assert_eq!(set.status(), 200);
    let short: Value = post_openai(&sim, &openai_request("short", "q"))
        .await?
        .json()
        .await?;
    let other: Value = post_openai(&sim, &openai_request("other", "q"))
        .await?
        .json()
        .await?;
    assert_eq!(short["usage"]["completion_tokens"], 2);
    assert_eq!(other["usage"]["completion_tokens"], 5);

    let rejected = put_behaviour(&sim, &json!({ "model": "short", "tokens": 3 })).await?;
    assert_eq!(rejected.status(), 400);
    let behaviours = sim.behaviours();
    assert_eq!(behaviours.default.answer_tokens, 5);
    assert_eq!(
        behaviours.models.get("short").map(|b| b.answer_tokens),
        Some(2)
    );
    Ok(())
}

#[tokio::test]
async fn streamed_chunks_arrive_spaced_in_time() -> anyhow::Result<()> {
    let behaviour = Behaviour {
        ttft_ms: 100,
        tokens_per_sec: 20,
        answer_tokens: 6,
        ..Behaviour::default()
    };
    let sim = start(behaviour).await?;
    let mut request = openai_request("m", "slowly");
    request["stream"] = json!(true);
    let sent_at = Instant::now();
    let response = post_openai(&sim, &request).await?;
    let mut token_arrivals = Vec::new();
    let mut chunks = response.bytes_stream();
    let mut pending = String::new();
    while let Some(chunk) = chunks.next().await {
        pending.push_str(std::str::from_utf8(&chunk?)?);
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let chunk: Value = serde_json::from_str(data)?;
            let content = chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default();
            if !content.is_empty() {
                token_arrivals.push(sent_at.elapsed());
            }
        }
    }
    let done_at = sent_at.elapsed();
    assert_eq!(token_arrivals.len(), 6);
    // Token i is due 100 ms + i * 50 ms after the request; timers never fire early, so each
    // arrival is a lower bound however loaded the machine is.
    for (index, arrival) in token_arrivals.iter().enumerate() {
        let due = Duration::from_millis(100 + 50 * index as u64);
        assert!(
            *arrival >= due,
            "token {index} at {arrival:?}, due at {due:?}: {token_arrivals:?}"
        );
    }
    assert!(
        done_at - token_arrivals[0] >= Duration::from_millis(150),
        "the first token came {:?} before the end, not streamed",
        done_at - token_arrivals[0]
    );
    Ok(())
}

#[tokio::test]
async fn anthropic_stream_is_paced_too() -> anyhow::Result<()> {
    let behaviour = Behaviour {
        ttft_ms: 50,
        tokens_per_sec: 25,
        answer_tokens: 4,
        ..Behaviour::default()
    };
    let sim = start(behaviour).await?;
    let mut request = anthropic_request("c", "slowly", 100);
    request["stream"] = json!(true);
    let sent_at = Instant::now();
    let response = post_anthropic(&sim, &request).await?;
    let mut chunks = response.bytes_stream();
    let mut first_delta_at = None;
    let mut body = String::new();
    while let Some(chunk) = chunks.next().await {
        body.push_str(std::str::from_utf8(&chunk?)?);
        if first_delta_at.is_none() && body.contains("content_block_delta") {
            first_delta_at = Some(sent_at.elapsed());
        }
    }
    let done_at = sent_at.elapsed();
    let first_delta_at = first_delta_at.context("no content_block_delta")?;
    assert!(
        first_delta_at >= Duration::from_millis(45),
        "{first_delta_at:?}"
    );
    assert!(
        done_at - first_delta_at >= Duration::from_millis(100),
        "{done_at:?} {first_delta_at:?}"
    );
    Ok(())
}

#[tokio::test]
async fn unary_answers_take_as_long_as_streaming_them() -> anyhow::Result<()> {
    let behaviour = Behaviour {
        ttft_ms: 100,
        tokens_per_sec: 20,
        answer_tokens: 5,
        ..Behaviour::default()
    };
    let sim = start(behaviour).await?;
    let sent_at = Instant::now();
    let response = post_openai(&sim, &openai_request("m", "wait")).await?;
    assert_eq!(response.status(), 200);
    let elapsed = sent_at.elapsed();
    assert!(
        elapsed >= Duration::from_millis(295),
        "answered after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "answered after {elapsed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn status_fault_answers_a_provider_error() -> anyhow::Result<()> {
    let sim = start(faulty(Fault::Status { status: 503 })).await?;
    let response = post_openai(&sim, &openai_request("m", "hi")).await?;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["type"], "server_error");

    sim.set_behaviour(None, faulty(Fault::Status { status: 529 }));
    let response = post_anthropic(&sim, &anthropic_request("c", "hi", 10)).await?;
    assert_eq!(response.status(), 529);
    let body: Value = response.json().await?;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(sim.calls().total, 2, "faulted calls are counted");
    Ok(())
}

#[tokio::test]
async fn rate_limit_fault_sets_retry_after() -> anyhow::Result<()> {
    let sim = start(faulty(Fault::RateLimit { retry_after_s: 7 })).await?;
    for response in [
        post_openai(&sim, &openai_request("m", "hi")).await?,
        post_anthropic(&sim, &anthropic_request("c", "hi", 10)).await?,
    ] {
        assert_eq!(response.status(), 429);
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok());
        assert_eq!(retry_after, Some("7"));
        let body: Value = response.json().await?;
        assert!(body["error"]["message"].is_string());
    }
    Ok(())
}

#[tokio::test]
async fn hang_fault_never_answers() -> anyhow::Result<()> {
    let sim = start(faulty(Fault::Hang)).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()?;
    let started = Instant::now();
    let result = client
        .post(format!("{}/v1/chat/completions", sim.url()))
        .json(&openai_request("m", "hi"))
        .send()
        .await;
    let error = result.err().context("a hanging call answered")?;
    assert!(error.is_timeout(), "{error}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.calls().total, 1);
    tokio::time::timeout(Duration::from_secs(5), sim.shutdown())
        .await
        .context("shutting down waited for the hanging call")??;
    Ok(())
}

#[tokio::test]
async fn malformed_fault_sends_invalid_json() -> anyhow::Result<()> {
    let sim = start(faulty(Fault::Malformed)).await?;
    let response = post_openai(&sim, &openai_request("m", "hi")).await?;
    assert_eq!(response.status(), 200);
    assert!(serde_json::from_slice::<Value>(&response.bytes().await?).is_err());

    let response = post_anthropic(&sim, &anthropic_request("c", "hi", 10)).await?;
    assert_eq!(response.status(), 200);
    assert!(serde_json::from_slice::<Value>(&response.bytes().await?).is_err());

    let mut request = openai_request("m", "hi");
    request["stream"] = json!(true);
    let data = sse_data(&post_openai(&sim, &request).await?.text().await?);
    ensure!(!data.is_empty(), "an empty stream");
    assert!(
        data.iter()
            .any(|d| serde_json::from_str::<Value>(d).is_err()),
        "{data:?}"
    );

    let mut request = anthropic_request("c", "hi", 10);
    request["stream"] = json!(true);
    let data = sse_data(&post_anthropic(&sim, &request).await?.text().await?);
    assert!(
        data.iter()
            .any(|d| serde_json::from_str::<Value>(d).is_err()),
        "{data:?}"
    );
    Ok(())
}

#[tokio::test]
async fn cut_stream_fault_ends_openai_streams_abruptly() -> anyhow::Result<()> {
    let sim = start(faulty(Fault::CutStream { after_tokens: 3 })).await?;
    let mut request = openai_request("m", "hi");
    request["stream"] = json!(true);
    request["stream_options"] = json!({ "include_usage": true });
    let response = post_openai(&sim, &request).await?;
    assert_eq!(response.status(), 200);
    let (body, failed) = read_until_error(response).await;
    assert!(failed, "the body ended cleanly: {body}");
    let data = sse_data(&body);
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data
        .iter()
        .map(|d| serde_json::from_str(d))
        .collect::<Result<_, _>>()?;
    let tokens = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert_eq!(tokens, 3);
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    Ok(())
}

#[tokio::test]
async fn cut_stream_fault_ends_anthropic_streams_abruptly() -> anyhow::Result<()> {
    let sim = start(faulty(Fault::CutStream { after_tokens: 2 })).await?;
    let mut request = anthropic_request("c", "hi", 100);
    request["stream"] = json!(true);
    let (body, failed) = read_until_error(post_anthropic(&sim, &request).await?).await;
    assert!(failed, "the body ended cleanly: {body}");
    let events = sse_events(&body)?;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn cut_stream_fault_truncates_unary_bodies() -> anyhow::Result<()> {
    let sim = start(faulty(Fault::CutStream { after_tokens: 1 })).await?;
    let response = post_openai(&sim, &openai_request("m", "hi")).await?;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none());
    let (body, _) = read_until_error(response).await;
    assert!(body.starts_with("{\"id\""), "{body}");
    assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_fault_count_clears_the_fault_after_n_calls() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let update = json!({
        "model": "flaky", "fault": { "type": "status", "status": 502 }, "fault_count": 2
    });
    assert_eq!(put_behaviour(&sim, &update).await?.status(), 200);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            post_openai(&sim, &openai_request("flaky", "hi"))
                .await?
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [502, 502, 200, 200]);
    let healthy = post_openai(&sim, &openai_request("steady", "hi")).await?;
    assert_eq!(healthy.status(), 200);
    Ok(())
}

#[tokio::test]
async fn concurrent_calls_consume_a_fault_count_exactly() -> anyhow::Result<()> {
    let sim = start(Behaviour {
        fault: Some(Fault::Status { status: 500 }),
        fault_count: Some(10),
        ..Behaviour::default()
    })
    .await?;
    let calls = (0..40).map(|i| {
        let request = openai_request("m", &format!("call {i}"));
        let url = format!("{}/v1/chat/completions", sim.url());
        async move {
            client()
                .post(url)
                .json(&request)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let statuses = futures::future::try_join_all(calls).await?;
    assert_eq!(statuses.iter().filter(|&&status| status == 500).count(), 10);
    assert_eq!(statuses.iter().filter(|&&status| status == 200).count(), 30);
    assert_eq!(sim.calls().total, 40);
    Ok(())
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let addr = sim.addr;
    drop(sim);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let result = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&openai_request("m", "hi"))
        .send()
        .await;
    assert!(result.is_err(), "the server still answers");
    Ok(())
}
