//! The upstream simulator over real HTTP: both wire formats, unary and streamed, determinism,
//! call counting, pacing and every fault; tool calls, structured answers, token counts and
//! embeddings.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use futures::StreamExt as _;
use serde_json::{Value, json};
use switchyard_loadtest::sim::{
    self, Behaviour, CallCounts, DEFAULT_EMBEDDING_DIMENSIONS, FINGERPRINT_HEADER, Fault,
    SimConfig, SimHandle, embedding, fingerprint, predict_anthropic, predict_openai,
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
                "by_endpoint": { "openai": 3, "anthropic": 1, "count_tokens": 0, "embeddings": 0 } })
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

// ---------------------------------------------------------------------------------------------
// Tool calls, structured answers, token counts and embeddings.
// ---------------------------------------------------------------------------------------------

/// Three tools' JSON Schemas, by name, covering every kind of value.
fn tool_schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "get_weather",
            json!({ "type": "object", "properties": {
                "city": { "type": "string" },
                "unit": { "type": "string", "enum": ["celsius", "fahrenheit"] },
                "days": { "type": "integer", "minimum": 1, "maximum": 7 }
            }, "required": ["city"] }),
        ),
        (
            "search",
            json!({ "type": "object", "properties": {
                "query": { "type": "string" },
                "limit": { "type": "integer" },
                "filters": { "type": "object", "properties": {
                    "lang": { "type": "string" }, "safe": { "type": "boolean" }, "score": { "type": "number" }
                } }
            } }),
        ),
        (
            "book",
            json!({ "type": "object", "properties": {
                "seats": { "type": "array", "items": { "type": "object", "properties": {
                    "row": { "type": "integer" }, "seat": { "type": "string" }
                } } },
                "confirmed": { "type": "boolean" }
            } }),
        ),
    ]
}

/// The tools in OpenAI's shape.
fn openai_tools() -> Value {
    tool_schemas()
        .into_iter()
        .map(|(name, parameters)| {
            json!({ "type": "function", "function": {
                "name": name, "description": format!("the {name} tool"), "parameters": parameters
            } })
        })
        .collect()
}

/// The tools in Anthropic's shape.
fn anthropic_tools() -> Value {
    tool_schemas()
        .into_iter()
        .map(|(name, input_schema)| json!({ "name": name, "input_schema": input_schema }))
        .collect()
}

/// The schema of tool `name`.
fn schema_of(name: &str) -> anyhow::Result<Value> {
    tool_schemas()
        .into_iter()
        .find(|(tool, _)| *tool == name)
        .map(|(_, schema)| schema)
        .with_context(|| format!("no tool {name}"))
}

/// Checks that `value` follows `schema` as the simulator generates it: every property present, in
/// the schema's order, of the schema's type.
fn check_follows(value: &Value, schema: &Value) -> anyhow::Result<()> {
    if let Some(first) = schema["enum"].as_array().and_then(|values| values.first()) {
        ensure!(
            value == first,
            "{value} is not the first enum value {first}"
        );
        return Ok(());
    }
    match schema["type"].as_str().unwrap_or_default() {
        "object" => {
            let object = value
                .as_object()
                .with_context(|| format!("{value} is not an object"))?;
            let properties = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let keys: Vec<&String> = object.keys().collect();
            let expected: Vec<&String> = properties.keys().collect();
            ensure!(keys == expected, "keys {keys:?}, schema {expected:?}");
            for (name, property) in &properties {
                check_follows(&object[name], property)?;
            }
        }
        "array" => {
            let items = value
                .as_array()
                .with_context(|| format!("{value} is not an array"))?;
            ensure!(items.len() == 1, "{value} has not one element");
            check_follows(&items[0], &schema["items"])?;
        }
        "string" => ensure!(value.is_string(), "{value} is not a string"),
        "integer" => {
            let number = value
                .as_i64()
                .with_context(|| format!("{value} is not an integer"))?;
            if let (Some(low), Some(high)) =
                (schema["minimum"].as_i64(), schema["maximum"].as_i64())
            {
                ensure!(
                    (low..=high).contains(&number),
                    "{number} outside {low}..={high}"
                );
            }
        }
        "number" => ensure!(value.is_number(), "{value} is not a number"),
        "boolean" => ensure!(value.is_boolean(), "{value} is not a boolean"),
        other => anyhow::bail!("unexpected schema type {other}"),
    }
    Ok(())
}

/// Whether `id` is `prefix` and 16 lowercase hex digits.
fn is_call_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 16
            && hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    })
}

/// A tool call as both formats can be reduced to: id, name, arguments as compact JSON text.
#[derive(Debug, PartialEq, Eq)]
struct Call {
    id: String,
    name: String,
    arguments: String,
}

/// The calls of a unary OpenAI completion.
fn openai_calls(body: &Value) -> Vec<Call> {
    body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|call| Call {
            id: call["id"].as_str().unwrap_or_default().to_owned(),
            name: call["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            arguments: call["function"]["arguments"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

/// A streamed OpenAI answer put back together.
#[derive(Debug, Default)]
struct AssembledOpenAi {
    /// Content deltas, in order.
    content_deltas: Vec<String>,
    /// The calls, by index.
    calls: Vec<Call>,
    /// Argument fragments per call.
    fragments: Vec<usize>,
    /// The finish reason of the last choice chunk.
    finish_reason: Option<String>,
    /// The usage chunk's usage.
    usage: Option<Value>,
    /// Whether `[DONE]` ended the stream.
    done: bool,
}

/// Puts an OpenAI stream back together, checking the shape of each tool-call delta.
fn assemble_openai(body: &str) -> anyhow::Result<AssembledOpenAi> {
    let mut assembled = AssembledOpenAi::default();
    for data in sse_data(body) {
        if data == "[DONE]" {
            assembled.done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(&data)?;
        if !chunk["usage"].is_null() {
            assembled.usage = Some(chunk["usage"].clone());
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if let Some(reason) = choice["finish_reason"].as_str() {
            assembled.finish_reason = Some(reason.to_owned());
        }
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|text| !text.is_empty()) {
            assembled.content_deltas.push(text.to_owned());
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = usize::try_from(call["index"].as_u64().context("no index")?)?;
            if let Some(id) = call["id"].as_str() {
                ensure!(
                    index == assembled.calls.len(),
                    "call {index} opened out of order"
                );
                ensure!(call["type"] == "function", "{call}");
                ensure!(
                    call["function"]["arguments"] == "",
                    "the opening delta has arguments: {call}"
                );
                assembled.calls.push(Call {
                    id: id.to_owned(),
                    name: call["function"]["name"]
                        .as_str()
                        .context("no name")?
                        .to_owned(),
                    arguments: String::new(),
                });
                assembled.fragments.push(0);
            } else {
                ensure!(
                    call.get("type").is_none() && call["function"].get("name").is_none(),
                    "{call}"
                );
                let fragment = call["function"]["arguments"]
                    .as_str()
                    .context("no arguments")?;
                assembled
                    .calls
                    .get_mut(index)
                    .context("fragment of an unopened call")?
                    .arguments
                    .push_str(fragment);
                if let Some(count) = assembled.fragments.get_mut(index) {
                    *count += 1;
                }
            }
        }
    }
    Ok(assembled)
}

/// An OpenAI request for `prompt` offering the three tools.
fn openai_tool_request(prompt: &str) -> Value {
    json!({
        "model": "gpt-tools",
        "messages": [{ "role": "user", "content": prompt }],
        "tools": openai_tools(),
    })
}

#[tokio::test]
async fn openai_tool_calls_unary_and_streamed_agree() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let request = openai_tool_request("plan my trip");
    let response = post_openai(&sim, &request).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        fingerprint_header(&response).as_deref(),
        Some(fingerprint(&[("user", "plan my trip")]).as_str())
    );
    let unary: Value = response.json().await?;
    let choice = &unary["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = openai_calls(&unary);
    assert_eq!(calls.len(), 2, "parallel calls by default: {unary}");
    assert_ne!(calls[0].name, calls[1].name, "two different tools");
    assert_ne!(calls[0].id, calls[1].id);
    for call in &calls {
        assert!(is_call_id(&call.id, "call_"), "{}", call.id);
        let arguments: Value = serde_json::from_str(&call.arguments)?;
        assert_eq!(
            serde_json::to_string(&arguments)?,
            call.arguments,
            "compact JSON"
        );
        check_follows(&arguments, &schema_of(&call.name)?)?;
    }

    let predicted = predict_openai(&request, &Behaviour::default()).map_err(anyhow::Error::msg)?;
    let predicted_calls: Vec<Call> = predicted
        .tool_calls
        .iter()
        .map(|call| Call {
            id: call.openai_id(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        })
        .collect();
    assert_eq!(predicted_calls, calls, "the prediction is the answer");
    assert_eq!(predicted.content, None);
    assert_eq!(predicted.finish_reason, "tool_calls");
    assert_eq!(unary["usage"]["completion_tokens"], predicted.output_tokens);
    assert_eq!(unary["usage"]["prompt_tokens"], predicted.input_tokens);
    let pieces: usize = calls
        .iter()
        .map(|call| 1 + call.arguments.chars().count().div_ceil(8).max(2))
        .sum();
    assert_eq!(
        unary["usage"]["completion_tokens"], pieces,
        "one token per streamed piece"
    );

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({ "include_usage": true });
    let body = post_openai(&sim, &streamed).await?.text().await?;
    let first: Value = serde_json::from_str(&sse_data(&body)[0])?;
    assert_eq!(
        first["choices"][0]["delta"],
        json!({ "role": "assistant", "content": null })
    );
    let assembled = assemble_openai(&body)?;
    assert_eq!(
        assembled.calls, calls,
        "a stream and a unary answer call the same"
    );
    assert!(
        assembled.fragments.iter().all(|count| *count >= 2),
        "{:?}",
        assembled.fragments
    );
    assert!(assembled.content_deltas.is_empty());
    assert_eq!(assembled.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        assembled
            .usage
            .map(|usage| usage["completion_tokens"].clone()),
        Some(unary["usage"]["completion_tokens"].clone())
    );
    assert!(assembled.done);
    Ok(())
}

#[tokio::test]
async fn openai_one_call_when_parallel_is_off_named_or_a_single_tool() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let parallel: Value = post_openai(&sim, &openai_tool_request("what now"))
        .await?
        .json()
        .await?;
    let parallel = openai_calls(&parallel);

    let mut single = openai_tool_request("what now");
    single["parallel_tool_calls"] = json!(false);
    let single: Value = post_openai(&sim, &single).await?.json().await?;
    let single = openai_calls(&single);
    assert_eq!(single.len(), 1);
    assert_eq!(
        single[0], parallel[0],
        "the single call is the first of the parallel ones"
    );

    let mut named = openai_tool_request("what now");
    named["tool_choice"] = json!({ "type": "function", "function": { "name": "book" } });
    let named: Value = post_openai(&sim, &named).await?.json().await?;
    let named = openai_calls(&named);
    assert_eq!(named.len(), 1, "a named choice calls once");
    assert_eq!(named[0].name, "book");
    check_follows(
        &serde_json::from_str(&named[0].arguments)?,
        &schema_of("book")?,
    )?;

    let mut required = openai_tool_request("what now");
    required["tool_choice"] = json!("required");
    required["tools"] = json!([openai_tools()[1].clone()]);
    let required: Value = post_openai(&sim, &required).await?.json().await?;
    let required = openai_calls(&required);
    assert_eq!(required.len(), 1, "one tool, one call");
    assert_eq!(required[0].name, "search");
    Ok(())
}

#[tokio::test]
async fn openai_answers_text_after_a_tool_turn_or_with_choice_none() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let first: Value = post_openai(&sim, &openai_tool_request("weather in Paris"))
        .await?
        .json()
        .await?;
    let assistant = first["choices"][0]["message"].clone();
    let calls = openai_calls(&first);
    let mut messages = vec![
        json!({ "role": "user", "content": "weather in Paris" }),
        assistant,
    ];
    for call in &calls {
        messages.push(json!({ "role": "tool", "tool_call_id": call.id, "content": format!("result of {}", call.name) }));
    }
    let request = json!({ "model": "gpt-tools", "messages": messages, "tools": openai_tools() });
    let response = post_openai(&sim, &request).await?;
    assert_eq!(response.status(), 200);
    let header = fingerprint_header(&response);
    let body: Value = response.json().await?;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .context("no content")?;

    let mut entries: Vec<(String, String)> = vec![
        ("user".into(), "weather in Paris".into()),
        ("assistant".into(), String::new()),
    ];
    for call in &calls {
        entries.push((
            "tool_call".into(),
            format!("{} {}", call.name, call.arguments),
        ));
    }
    for call in &calls {
        entries.push(("tool".into(), format!("result of {}", call.name)));
    }
    let entries: Vec<(&str, &str)> = entries
        .iter()
        .map(|(role, text)| (role.as_str(), text.as_str()))
        .collect();
    let expected = fingerprint(&entries);
    assert_eq!(
        header.as_deref(),
        Some(expected.as_str()),
        "tool turns hash as documented"
    );
    assert!(
        content.starts_with(&format!("[sim {expected}]")),
        "{content}"
    );
    let predicted = predict_openai(&request, &Behaviour::default()).map_err(anyhow::Error::msg)?;
    assert_eq!(predicted.content.as_deref(), Some(content));

    let mut none = openai_tool_request("weather in Paris");
    none["tool_choice"] = json!("none");
    let none: Value = post_openai(&sim, &none).await?.json().await?;
    assert_eq!(none["choices"][0]["finish_reason"], "stop");
    assert!(none["choices"][0]["message"].get("tool_calls").is_none());
    assert!(
        none["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|text| text.starts_with("[sim "))
    );
    Ok(())
}

#[tokio::test]
async fn openai_json_answers_parse_and_stream_in_pieces() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let schema = json!({ "type": "object", "properties": {
        "title": { "type": "string" },
        "year": { "type": "integer", "minimum": 1900, "maximum": 2100 },
        "tags": { "type": "array", "items": { "type": "string" } },
        "rating": { "type": "object", "properties": { "stars": { "type": "number" }, "kind": { "enum": ["a", "b"] } } }
    } });
    let formats = [
        json!({ "type": "json_object" }),
        json!({ "type": "json_schema", "json_schema": { "name": "film", "schema": schema, "strict": true } }),
    ];
    for format in formats {
        let mut request = openai_request("describe a film", "describe a film");
        request["model"] = json!("gpt-json");
        request["response_format"] = format.clone();
        let unary: Value = post_openai(&sim, &request).await?.json().await?;
        assert_eq!(unary["choices"][0]["finish_reason"], "stop");
        let content = unary["choices"][0]["message"]["content"]
            .as_str()
            .context("no content")?
            .to_owned();
        let value: Value = serde_json::from_str(&content)?;
        if format["type"] == "json_object" {
            let answer = value["answer"].as_str().context("no answer")?;
            let expected = format!("[sim {}]", fingerprint(&[("user", "describe a film")]));
            assert!(answer.starts_with(&expected), "{answer}");
            assert_eq!(unary["usage"]["completion_tokens"], 16);
        } else {
            check_follows(&value, &schema)?;
        }
        let predicted =
            predict_openai(&request, &Behaviour::default()).map_err(anyhow::Error::msg)?;
        assert_eq!(predicted.content.as_deref(), Some(content.as_str()));

        request["stream"] = json!(true);
        let assembled = assemble_openai(&post_openai(&sim, &request).await?.text().await?)?;
        assert!(
            assembled.content_deltas.len() >= 2,
            "{:?}",
            assembled.content_deltas
        );
        assert_eq!(assembled.content_deltas.concat(), content);
        assert_eq!(assembled.finish_reason.as_deref(), Some("stop"));
    }
    Ok(())
}

#[tokio::test]
async fn openai_tool_and_format_mistakes_get_400() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let user = json!({ "role": "user", "content": "hi" });
    let assistant_call = |arguments: &str| {
        json!({ "role": "assistant", "content": null, "tool_calls": [
            { "id": "call_1", "type": "function", "function": { "name": "search", "arguments": arguments } }
        ] })
    };
    let tool_turn = |id: &str| json!({ "role": "tool", "tool_call_id": id, "content": "done" });
    let cases = [
        (
            "a named choice not among the tools",
            json!({ "model": "m", "messages": [user], "tools": openai_tools(),
            "tool_choice": { "type": "function", "function": { "name": "fly" } } }),
        ),
        (
            "required without tools",
            json!({ "model": "m", "messages": [user], "tool_choice": "required" }),
        ),
        (
            "a tool turn with no call before",
            json!({ "model": "m", "messages": [user, tool_turn("call_1")] }),
        ),
        (
            "a tool turn answering another id",
            json!({ "model": "m",
            "messages": [user, assistant_call("{}"), tool_turn("call_9")] }),
        ),
        (
            "arguments that are not JSON",
            json!({ "model": "m",
            "messages": [user, assistant_call("{\"query\": "), tool_turn("call_1")] }),
        ),
        (
            "a call left unanswered",
            json!({ "model": "m", "messages": [user, assistant_call("{}"), user] }),
        ),
        (
            "json_schema without a schema",
            json!({ "model": "m", "messages": [user],
            "response_format": { "type": "json_schema", "json_schema": { "name": "x" } } }),
        ),
        (
            "an Anthropic image block",
            json!({ "model": "m", "messages": [{ "role": "user", "content": [
            { "type": "image", "source": { "type": "url", "url": "https://example.com/a.png" } }
        ] }] }),
        ),
    ];
    for (case, request) in &cases {
        let response = post_openai(&sim, request).await?;
        assert_eq!(response.status(), 400, "{case}");
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["type"], "invalid_request_error", "{case}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{case}");
        assert_eq!(
            predict_openai(request, &Behaviour::default())
                .err()
                .as_deref(),
            Some(message),
            "{case}"
        );
    }
    let valid = json!({ "model": "m", "messages": [user, assistant_call("{\"query\":\"x\"}"), tool_turn("call_1")] });
    assert_eq!(post_openai(&sim, &valid).await?.status(), 200);
    Ok(())
}

/// An Anthropic request for `prompt` offering the three tools.
fn anthropic_tool_request(prompt: &str) -> Value {
    json!({
        "model": "claude-tools",
        "max_tokens": 256,
        "messages": [{ "role": "user", "content": prompt }],
        "tools": anthropic_tools(),
    })
}

/// The `tool_use` blocks of a unary Anthropic message, as calls.
fn anthropic_calls(body: &Value) -> anyhow::Result<Vec<Call>> {
    body["content"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|block| {
            ensure!(block["type"] == "tool_use", "{block}");
            ensure!(block["input"].is_object(), "{block}");
            Ok(Call {
                id: block["id"].as_str().unwrap_or_default().to_owned(),
                name: block["name"].as_str().unwrap_or_default().to_owned(),
                arguments: serde_json::to_string(&block["input"])?,
            })
        })
        .collect()
}

#[tokio::test]
async fn anthropic_tool_calls_unary_and_streamed_agree() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let request = anthropic_tool_request("plan my trip");
    let unary: Value = post_anthropic(&sim, &request).await?.json().await?;
    assert_eq!(unary["stop_reason"], "tool_use");
    let calls = anthropic_calls(&unary)?;
    assert_eq!(calls.len(), 2, "{unary}");
    assert_ne!(calls[0].name, calls[1].name);
    for call in &calls {
        assert!(is_call_id(&call.id, "toolu_"), "{}", call.id);
        check_follows(
            &serde_json::from_str(&call.arguments)?,
            &schema_of(&call.name)?,
        )?;
    }
    let predicted =
        predict_anthropic(&request, &Behaviour::default()).map_err(anyhow::Error::msg)?;
    assert_eq!(predicted.stop_reason, "tool_use");
    let predicted_calls: Vec<Call> = predicted
        .tool_calls
        .iter()
        .map(|call| Call {
            id: call.anthropic_id(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        })
        .collect();
    assert_eq!(predicted_calls, calls);
    assert_eq!(unary["usage"]["output_tokens"], predicted.output_tokens);

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let events = sse_events(&post_anthropic(&sim, &streamed).await?.text().await?)?;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let mut assembled: Vec<Call> = Vec::new();
    let mut fragments: Vec<usize> = Vec::new();
    let mut open: Option<u64> = None;
    let mut stop_reason = None;
    for (name, data) in &events {
        assert_eq!(&data["type"], name.as_str());
        match name.as_str() {
            "content_block_start" => {
                ensure!(open.is_none(), "a block opened before the last one stopped");
                let block = &data["content_block"];
                assert_eq!(block["type"], "tool_use");
                assert_eq!(block["input"], json!({}));
                assert_eq!(data["index"].as_u64(), Some(assembled.len() as u64));
                open = data["index"].as_u64();
                assembled.push(Call {
                    id: block["id"].as_str().unwrap_or_default().to_owned(),
                    name: block["name"].as_str().unwrap_or_default().to_owned(),
                    arguments: String::new(),
                });
                fragments.push(0);
            }
            "content_block_delta" => {
                assert_eq!(data["index"].as_u64(), open);
                assert_eq!(data["delta"]["type"], "input_json_delta");
                let partial = data["delta"]["partial_json"]
                    .as_str()
                    .context("no partial_json")?;
                assembled
                    .last_mut()
                    .context("no block")?
                    .arguments
                    .push_str(partial);
                if let Some(count) = fragments.last_mut() {
                    *count += 1;
                }
            }
            "content_block_stop" => {
                assert_eq!(data["index"].as_u64(), open);
                open = None;
            }
            "message_delta" => {
                stop_reason = data["delta"]["stop_reason"].as_str().map(str::to_owned);
                assert_eq!(
                    data["usage"]["output_tokens"],
                    unary["usage"]["output_tokens"]
                );
            }
            _ => {}
        }
    }
    assert!(open.is_none());
    assert_eq!(stop_reason.as_deref(), Some("tool_use"));
    assert!(fragments.iter().all(|count| *count >= 2), "{fragments:?}");
    for call in &mut assembled {
        call.arguments = serde_json::to_string(&serde_json::from_str::<Value>(&call.arguments)?)?;
    }
    assert_eq!(
        assembled, calls,
        "a stream and a unary answer call the same"
    );
    Ok(())
}

#[tokio::test]
async fn anthropic_choices_and_tool_results_steer_the_answer() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let mut single = anthropic_tool_request("what now");
    single["tool_choice"] = json!({ "type": "any", "disable_parallel_tool_use": true });
    let single: Value = post_anthropic(&sim, &single).await?.json().await?;
    assert_eq!(anthropic_calls(&single)?.len(), 1);

    let mut named = anthropic_tool_request("what now");
    named["tool_choice"] = json!({ "type": "tool", "name": "get_weather" });
    let named: Value = post_anthropic(&sim, &named).await?.json().await?;
    let named = anthropic_calls(&named)?;
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].name, "get_weather");

    let mut none = anthropic_tool_request("what now");
    none["tool_choice"] = json!({ "type": "none" });
    let none: Value = post_anthropic(&sim, &none).await?.json().await?;
    assert_eq!(none["stop_reason"], "end_turn");
    assert_eq!(none["content"][0]["type"], "text");

    let first: Value = post_anthropic(&sim, &anthropic_tool_request("weather in Paris"))
        .await?
        .json()
        .await?;
    let calls = anthropic_calls(&first)?;
    let results: Vec<Value> = calls
        .iter()
        .map(|call| json!({ "type": "tool_result", "tool_use_id": call.id,
                            "content": [{ "type": "text", "text": format!("result of {}", call.name) }] }))
        .collect();
    let follow_up = json!({
        "model": "claude-tools", "max_tokens": 256, "tools": anthropic_tools(),
        "messages": [
            { "role": "user", "content": "weather in Paris" },
            { "role": "assistant", "content": first["content"] },
            { "role": "user", "content": results },
        ],
    });
    let response = post_anthropic(&sim, &follow_up).await?;
    assert_eq!(response.status(), 200);
    let header = fingerprint_header(&response);
    let text: Value = response.json().await?;
    assert_eq!(text["stop_reason"], "end_turn");
    assert_eq!(text["content"][0]["type"], "text");

    // The same conversation in OpenAI's shape has the same fingerprint and answer.
    let mut openai_messages = vec![
        json!({ "role": "user", "content": "weather in Paris" }),
        json!({ "role": "assistant", "content": null, "tool_calls": calls.iter().map(|call| json!({
            "id": call.id, "type": "function", "function": { "name": call.name, "arguments": call.arguments }
        })).collect::<Vec<_>>() }),
    ];
    for call in &calls {
        openai_messages.push(json!({ "role": "tool", "tool_call_id": call.id, "content": format!("result of {}", call.name) }));
    }
    let openai =
        json!({ "model": "gpt-tools", "messages": openai_messages, "tools": openai_tools() });
    let openai_response = post_openai(&sim, &openai).await?;
    assert_eq!(fingerprint_header(&openai_response), header);
    let openai: Value = openai_response.json().await?;
    assert_eq!(
        openai["choices"][0]["message"]["content"],
        text["content"][0]["text"]
    );
    Ok(())
}

#[tokio::test]
async fn both_formats_make_the_same_calls_for_the_same_conversation() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let openai: Value = post_openai(&sim, &openai_tool_request("same question"))
        .await?
        .json()
        .await?;
    let mut anthropic = anthropic_tool_request("same question");
    anthropic["model"] = json!("another");
    let anthropic: Value = post_anthropic(&sim, &anthropic).await?.json().await?;
    let strip = |calls: Vec<Call>| -> Vec<(String, String, String)> {
        calls
            .into_iter()
            .map(|call| {
                let hex = call.id.rsplit('_').next().unwrap_or_default().to_owned();
                (hex, call.name, call.arguments)
            })
            .collect()
    };
    assert_eq!(
        strip(openai_calls(&openai)),
        strip(anthropic_calls(&anthropic)?)
    );
    Ok(())
}

#[tokio::test]
async fn anthropic_tool_mistakes_get_400() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let user = json!({ "role": "user", "content": "hi" });
    let uses = json!({ "role": "assistant", "content": [
        { "type": "tool_use", "id": "toolu_1", "name": "search", "input": { "query": "x" } }
    ] });
    let result = |id: &str| {
        json!({ "role": "user", "content": [
        { "type": "tool_result", "tool_use_id": id, "content": "done" }
    ] })
    };
    let body = |messages: Value, extra: Value| {
        let mut body = json!({ "model": "c", "max_tokens": 64, "messages": messages, "tools": anthropic_tools() });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let cases = [
        (
            "a result answering no tool_use before it",
            body(json!([user, uses, result("toolu_2")]), json!({})),
        ),
        (
            "a result with no assistant turn before",
            body(json!([user, result("toolu_1")]), json!({})),
        ),
        (
            "a tool_use left unanswered",
            body(json!([user, uses, user]), json!({})),
        ),
        (
            "a tool choice not among the tools",
            body(
                json!([user]),
                json!({ "tool_choice": { "type": "tool", "name": "fly" } }),
            ),
        ),
        (
            "an input_schema that is not an object",
            body(
                json!([user]),
                json!({ "tools": [{ "name": "f", "input_schema": "object" }] }),
            ),
        ),
        (
            "an OpenAI image part",
            body(
                json!([{ "role": "user", "content": [
            { "type": "image_url", "image_url": { "url": "https://example.com/a.png" } }
        ] }]),
                json!({}),
            ),
        ),
    ];
    for (case, request) in &cases {
        let response = post_anthropic(&sim, request).await?;
        assert_eq!(response.status(), 400, "{case}");
        let error: Value = response.json().await?;
        assert_eq!(error["type"], "error", "{case}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{case}");
        assert!(
            predict_anthropic(request, &Behaviour::default()).is_err(),
            "{case}"
        );
    }
    let valid = body(json!([user, uses, result("toolu_1")]), json!({}));
    assert_eq!(post_anthropic(&sim, &valid).await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn count_tokens_equals_the_input_tokens_of_a_messages_call() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let first: Value = post_anthropic(&sim, &anthropic_tool_request("weather in Paris and Rome"))
        .await?
        .json()
        .await?;
    let tool_calls = anthropic_calls(&first)?;
    let results: Vec<Value> = tool_calls
        .iter()
        .map(|call| json!({ "type": "tool_result", "tool_use_id": call.id, "content": "sunny and warm", "is_error": false }))
        .collect();
    let conversation = json!({
        "model": "claude-tools",
        "system": [{ "type": "text", "text": "you are a travel agent" }],
        "tools": anthropic_tools(),
        "messages": [
            { "role": "user", "content": "weather in Paris and Rome" },
            { "role": "assistant", "content": first["content"] },
            { "role": "user", "content": results },
        ],
    });
    let url = format!("{}/v1/messages/count_tokens", sim.url());
    let count = client()
        .post(&url)
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(&conversation)
        .send()
        .await?;
    assert_eq!(count.status(), 200);
    let count_fingerprint = fingerprint_header(&count);
    let count: Value = count.json().await?;
    let mut messages = conversation.clone();
    messages["max_tokens"] = json!(100);
    let answer = post_anthropic(&sim, &messages).await?;
    assert_eq!(fingerprint_header(&answer), count_fingerprint);
    let answer: Value = answer.json().await?;
    assert_eq!(
        count,
        json!({ "input_tokens": answer["usage"]["input_tokens"] })
    );
    assert!(
        count["input_tokens"]
            .as_u64()
            .is_some_and(|tokens| tokens > 5),
        "{count}"
    );
    let predicted =
        predict_anthropic(&messages, &Behaviour::default()).map_err(anyhow::Error::msg)?;
    assert_eq!(count["input_tokens"], predicted.input_tokens);

    let invalid = client()
        .post(&url)
        .json(&json!({ "model": "claude-tools", "messages": [] }))
        .send()
        .await?;
    assert_eq!(invalid.status(), 400);
    let invalid: Value = invalid.json().await?;
    assert_eq!(invalid["error"]["type"], "invalid_request_error");
    let counts = calls(&sim).await?;
    assert_eq!(counts.by_endpoint.get("count_tokens"), Some(&2));
    assert_eq!(counts.by_endpoint.get("anthropic"), Some(&2));
    Ok(())
}

/// `POST /v1/embeddings`.
async fn post_embeddings(sim: &SimHandle, body: &Value) -> anyhow::Result<reqwest::Response> {
    Ok(client()
        .post(format!("{}/v1/embeddings", sim.url()))
        .bearer_auth("sk-test")
        .json(body)
        .send()
        .await?)
}

/// Decodes standard base64 with padding.
fn decode_base64(text: &str) -> anyhow::Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0_u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|byte| *byte != b'=') {
        let value = ALPHABET
            .iter()
            .position(|c| *c == byte)
            .context("not base64")?;
        bits = (bits << 6) | u32::try_from(value)?;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(u8::try_from((bits >> count) & 0xff)?);
        }
    }
    Ok(out)
}

/// The vectors of an embeddings answer, float or base64, in index order.
fn vectors(body: &Value) -> anyhow::Result<Vec<Vec<f32>>> {
    let data = body["data"].as_array().context("no data")?;
    let mut out = Vec::new();
    for (position, item) in data.iter().enumerate() {
        ensure!(
            item["object"] == "embedding" && item["index"] == position,
            "{item}"
        );
        let vector = match &item["embedding"] {
            Value::String(encoded) => decode_base64(encoded)?
                .chunks_exact(4)
                .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
                .collect(),
            Value::Array(numbers) => numbers
                .iter()
                .map(|number| number.as_f64().map(|n| n as f32).context("not a number"))
                .collect::<anyhow::Result<_>>()?,
            other => anyhow::bail!("unexpected embedding {other}"),
        };
        out.push(vector);
    }
    Ok(out)
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors_in_float_or_base64() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let texts = [
        "what is the weather in Paris",
        "a recipe for lemon cake",
        "what is the weather in Paris",
    ];
    let float: Value = post_embeddings(&sim, &json!({ "model": "embed-test", "input": texts }))
        .await?
        .json()
        .await?;
    assert_eq!(float["object"], "list");
    assert_eq!(float["model"], "embed-test");
    assert_eq!(
        float["usage"],
        json!({ "prompt_tokens": 6 + 5 + 6, "total_tokens": 17 })
    );
    let float_vectors = vectors(&float)?;
    assert_eq!(float_vectors.len(), 3);
    for (vector, text) in float_vectors.iter().zip(texts) {
        assert_eq!(vector.len(), DEFAULT_EMBEDDING_DIMENSIONS);
        let norm: f64 = vector
            .iter()
            .map(|x| f64::from(*x) * f64::from(*x))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        let expected = embedding(text, DEFAULT_EMBEDDING_DIMENSIONS);
        assert!(
            vector
                .iter()
                .zip(&expected)
                .all(|(a, b)| (a - b).abs() < 1e-7),
            "the exported function predicts it"
        );
    }
    assert_eq!(float_vectors[0], float_vectors[2], "same text, same vector");
    assert_ne!(
        float_vectors[0], float_vectors[1],
        "different text, different vector"
    );

    let base64: Value = post_embeddings(
        &sim,
        &json!({ "model": "embed-test", "input": texts, "encoding_format": "base64" }),
    )
    .await?
    .json()
    .await?;
    assert!(base64["data"][0]["embedding"].is_string());
    let base64_vectors = vectors(&base64)?;
    for (decoded, float) in base64_vectors.iter().zip(&float_vectors) {
        assert_eq!(decoded.len(), float.len());
        assert!(decoded.iter().zip(float).all(|(a, b)| (a - b).abs() < 1e-7));
    }
    assert_eq!(
        base64_vectors[0],
        embedding(texts[0], DEFAULT_EMBEDDING_DIMENSIONS),
        "base64 is exact"
    );

    let single: Value = post_embeddings(
        &sim,
        &json!({ "model": "embed-test", "input": "short text", "dimensions": 16 }),
    )
    .await?
    .json()
    .await?;
    let single = vectors(&single)?;
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].len(), 16);
    assert_eq!(sim.calls().by_endpoint.get("embeddings"), Some(&3));
    assert_eq!(sim.calls().by_model.get("embed-test"), Some(&3));
    Ok(())
}

#[tokio::test]
async fn embeddings_mistakes_get_400_and_faults_apply() -> anyhow::Result<()> {
    let sim = start_default().await?;
    let too_many = vec!["x"; 2049];
    let cases = [
        json!({ "input": "hi" }),
        json!({ "model": "e" }),
        json!({ "model": "e", "input": "" }),
        json!({ "model": "e", "input": [] }),
        json!({ "model": "e", "input": ["fine", ""] }),
        json!({ "model": "e", "input": too_many }),
        json!({ "model": "e", "input": "hi", "dimensions": 0 }),
        json!({ "model": "e", "input": "hi", "encoding_format": "hex" }),
    ];
    for request in &cases {
        let response = post_embeddings(&sim, request).await?;
        assert_eq!(response.status(), 400, "{request}");
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["type"], "invalid_request_error", "{request}");
    }
    assert_eq!(
        sim.calls().by_endpoint.get("embeddings"),
        Some(&(cases.len() as u64))
    );

    sim.set_behaviour(Some("e"), faulty(Fault::Status { status: 503 }));
    let failed = post_embeddings(&sim, &json!({ "model": "e", "input": "hi" })).await?;
    assert_eq!(failed.status(), 503);
    let body: Value = failed.json().await?;
    assert_eq!(body["error"]["type"], "server_error");

    sim.set_behaviour(Some("e"), faulty(Fault::Malformed));
    let malformed = post_embeddings(&sim, &json!({ "model": "e", "input": "hi" })).await?;
    assert_eq!(malformed.status(), 200);
    assert!(serde_json::from_slice::<Value>(&malformed.bytes().await?).is_err());

    sim.set_behaviour(
        Some("e"),
        Behaviour {
            ttft_ms: 150,
            ..Behaviour::default()
        },
    );
    let sent_at = Instant::now();
    let slow = post_embeddings(&sim, &json!({ "model": "e", "input": "hi" })).await?;
    assert_eq!(slow.status(), 200);
    assert!(
        sent_at.elapsed() >= Duration::from_millis(150),
        "{:?}",
        sent_at.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn tool_call_streams_are_paced_and_cut_like_text() -> anyhow::Result<()> {
    let sim = start(Behaviour {
        ttft_ms: 60,
        tokens_per_sec: 50,
        ..Behaviour::default()
    })
    .await?;
    let mut request = openai_tool_request("slow tools");
    request["stream"] = json!(true);
    request["parallel_tool_calls"] = json!(false);
    let sent_at = Instant::now();
    let body = post_openai(&sim, &request).await?.text().await?;
    let elapsed = sent_at.elapsed();
    let assembled = assemble_openai(&body)?;
    let pieces = 1 + assembled.fragments.iter().sum::<usize>();
    // The first piece at 60 ms, then one every 20 ms.
    let due = Duration::from_millis(60 + 20 * (pieces as u64 - 1));
    assert!(elapsed >= due, "{elapsed:?} < {due:?} for {pieces} pieces");

    sim.set_behaviour(None, faulty(Fault::CutStream { after_tokens: 2 }));
    let (body, failed) = read_until_error(post_openai(&sim, &request).await?).await;
    assert!(failed, "the body ended cleanly: {body}");
    assert!(!body.contains("[DONE]"));
    let cut = assemble_openai(&body)?;
    assert_eq!(cut.calls.len(), 1);
    assert_eq!(cut.fragments, [1], "the opening piece and one fragment");
    assert_eq!(cut.finish_reason, None);

    let mut anthropic = anthropic_tool_request("slow tools");
    anthropic["stream"] = json!(true);
    let (body, failed) = read_until_error(post_anthropic(&sim, &anthropic).await?).await;
    assert!(failed);
    let names: Vec<String> = sse_events(&body)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta"
        ]
    );
    Ok(())
}
