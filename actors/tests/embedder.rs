//! The embedder against the real all-MiniLM-L6-v2 (from `.models/all-MiniLM-L6-v2`, or the
//! directory named by `EMBEDDING_MODEL_DIR`; `scripts/fetch-model` puts it there) and against a
//! small OpenAI-compatible `/v1/embeddings` server started in the test.
//!
//! The reference vectors in `fixtures/minilm_embeddings.json` come from sentence-transformers,
//! generated once with (from the repository root, in a throwaway venv):
//!
//! ```sh
//! python3 -m venv /tmp/stvenv && /tmp/stvenv/bin/pip install sentence-transformers
//! /tmp/stvenv/bin/python actors/tests/fixtures/minilm_embeddings.py
//! ```

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use switchyard_actors::embed::pooling::cosine;
use switchyard_actors::embed::{
    BatchSettings, BucketSettings, EmbedError, EmbedderHandle, EmbedderSettings, LocalEncoder,
    LocalSettings, RemoteSettings, WeightFormat,
};

/// One reference sentence.
#[derive(serde::Deserialize)]
struct FixtureSentence {
    text: String,
    tokens: usize,
    embedding: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    sentences: Vec<FixtureSentence>,
}

fn fixture() -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_embeddings.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}


fn open_local(buckets: BucketSettings) -> LocalEncoder {
    open_with(buckets, WeightFormat::F32)
}

fn open_with(buckets: BucketSettings, weights: WeightFormat) -> LocalEncoder {
    LocalEncoder::open(&LocalSettings { buckets, weights, ..LocalSettings::new(common::model_dir()) }).unwrap_or_else(|error| panic!("{error}"))
}

fn max_difference(left: &[f32], right: &[f32]) -> f32 {
    assert_eq!(left.len(), right.len());
    left.iter().zip(right).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

#[test]
fn local_vectors_match_sentence_transformers() {
    let fixture = fixture();
    let encoder = open_local(BucketSettings::default());
    assert_eq!(encoder.dimensions(), 384);
    assert_eq!(encoder.max_seq_length(), 256);
    let texts: Vec<String> = fixture.sentences.iter().map(|sentence| sentence.text.clone()).collect();
    assert_eq!(
        encoder.token_lengths(&texts).unwrap(),
        fixture.sentences.iter().map(|sentence| sentence.tokens).collect::<Vec<_>>(),
        "token counts (after truncation at 256) differ from the reference tokenizer"
    );
    assert!(fixture.sentences.iter().any(|sentence| sentence.tokens == 256), "the fixture has a truncated sentence");
    let vectors = encoder.embed(&texts).unwrap();
    for (sentence, vector) in fixture.sentences.iter().zip(&vectors) {
        assert_eq!(vector.len(), 384);
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{:?}: norm {norm}", sentence.text);
        let similarity = cosine(vector, &sentence.embedding);
        assert!(similarity >= 1.0 - 1e-3, "{:?}: cosine {similarity} to the reference", sentence.text);
    }
}

/// The int8 weights against the f32 ones and against sentence-transformers, on the fixture's
/// sentences (short questions to a truncated 256-token text). The bound has a margin over the
/// worst cosine measured on 14,833 questions, 0.9966 (BENCHMARKS.md, "int8 weights").
#[test]
fn int8_vectors_stay_close_to_the_float_ones() {
    const MIN_COSINE: f32 = 0.993;
    let fixture = fixture();
    let texts: Vec<String> = fixture.sentences.iter().map(|sentence| sentence.text.clone()).collect();
    let float = open_with(BucketSettings::default(), WeightFormat::F32).embed(&texts).unwrap();
    let int8 = open_with(BucketSettings::default(), WeightFormat::Int8).embed(&texts).unwrap();
    let mut worst = 1.0_f32;
    for ((sentence, float), int8) in fixture.sentences.iter().zip(&float).zip(&int8) {
        let norm = int8.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{:?}: norm {norm}", sentence.text);
        let to_float = cosine(int8, float);
        let to_reference = cosine(int8, &sentence.embedding);
        assert!(to_float >= MIN_COSINE, "{:?}: cosine {to_float} to the f32 vector", sentence.text);
        assert!(to_reference >= MIN_COSINE, "{:?}: cosine {to_reference} to the reference", sentence.text);
        assert!(to_float < 1.0 - 1e-7, "{:?}: the int8 vector is the f32 one; is the int8 path used?", sentence.text);
        worst = worst.min(to_float);
    }
    eprintln!("worst cosine of int8 to f32 on the fixture: {worst}");
}

#[test]
fn bucketing_does_not_change_the_vectors() {
    let fixture = fixture();
    let texts: Vec<String> = fixture.sentences.iter().map(|sentence| sentence.text.clone()).collect();
    let bucketed = open_local(BucketSettings::default()).embed(&texts).unwrap();
    let single_pass = open_local(BucketSettings::single_pass()).embed(&texts).unwrap();
    let one_by_one: Vec<Vec<f32>> =
        texts.iter().map(|text| open_local(BucketSettings::default()).embed(std::slice::from_ref(text)).unwrap().remove(0)).take(3).collect();
    for (index, text) in texts.iter().enumerate() {
        assert!(max_difference(&bucketed[index], &single_pass[index]) < 1e-5, "{text:?}");
    }
    for (index, vector) in one_by_one.iter().enumerate() {
        assert!(max_difference(&bucketed[index], vector) < 1e-5, "{:?}", texts[index]);
    }
}

/// The packed forward pass against candle-transformers' `BertModel` (padded batch, attention
/// mask, then masked mean pooling): the same vectors, to float rounding.
#[test]
fn packed_forward_pass_matches_candle_transformers() {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::{BertModel, Config};
    use switchyard_actors::embed::bert::Bert;
    use switchyard_actors::embed::pooling::{l2_normalize, mean_pool};

    let dir = common::model_dir();
    let config: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let variables = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu).unwrap();
    let packed = Bert::load(variables.clone(), &config, switchyard_actors::embed::WeightFormat::F32).unwrap();
    let reference = BertModel::load(variables, &config).unwrap();

    let sequences: Vec<Vec<u32>> =
        [3_usize, 17, 1, 40, 9].iter().map(|&length| (0..length).map(|index| (101 + index * 37 % 2000) as u32).collect()).collect();
    let slices: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
    let ours = packed.embed(&slices).unwrap();

    let longest = sequences.iter().map(Vec::len).max().unwrap();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for sequence in &sequences {
        ids.extend(sequence.iter().copied().chain(std::iter::repeat(0)).take(longest));
        mask.extend((0..longest).map(|index| u32::from(index < sequence.len())));
    }
    let ids = Tensor::from_vec(ids, (sequences.len(), longest), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(mask, (sequences.len(), longest), &Device::Cpu).unwrap();
    let hidden = reference.forward(&ids, &ids.zeros_like().unwrap(), Some(&mask)).unwrap();
    let hidden: Vec<Vec<Vec<f32>>> = hidden.to_vec3().unwrap();
    for ((sequence, states), vector) in sequences.iter().zip(hidden).zip(&ours) {
        let rows: Vec<f32> = states.into_iter().flatten().collect();
        let mut expected = mean_pool(&rows, sequence.len(), 384);
        l2_normalize(&mut expected);
        assert!(max_difference(vector, &expected) < 1e-5, "a sequence of {} tokens", sequence.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_batched_and_match_one_at_a_time() {
    let fixture = fixture();
    let texts: Vec<String> = (0..64)
        .map(|index| format!("{} (variant {index})", fixture.sentences[index % fixture.sentences.len()].text))
        .collect();
    let (embedder, _cell) = EmbedderHandle::start(EmbedderSettings::local(common::model_dir())).await.unwrap();

    let mut one_at_a_time = Vec::new();
    for text in &texts {
        one_at_a_time.push(embedder.embed(text.clone()).await.unwrap());
    }
    let concurrent = futures::future::join_all(texts.iter().map(|text| {
        let embedder = embedder.clone();
        let text = text.clone();
        tokio::spawn(async move { embedder.embed(text).await })
    }))
    .await;
    assert_eq!(concurrent.len(), 64);
    for ((text, alone), together) in texts.iter().zip(&one_at_a_time).zip(concurrent) {
        let together = together.unwrap().unwrap();
        assert!(max_difference(alone, &together) < 1e-5, "{text:?}");
    }
}

#[tokio::test]
async fn a_missing_model_directory_fails_at_start_with_the_fetch_command() {
    let missing = std::env::temp_dir().join("switchyard-no-such-model-dir");
    let error = EmbedderHandle::start(EmbedderSettings::local(&missing)).await.unwrap_err();
    assert_eq!(error, EmbedError::ModelMissing { path: missing.clone() });
    let message = error.to_string();
    assert!(message.contains(&missing.display().to_string()), "{message}");
    assert!(message.contains("run scripts/fetch-model"), "{message}");
}

/// What the fake embeddings server saw.
#[derive(Default)]
struct ServerLog {
    requests: AtomicUsize,
}

/// Answers `/v1/embeddings` like vLLM would, but with vectors derived from the text (its length,
/// then 1, then its first byte), not normalised and in reverse order. Model `broken` gets a 500.
async fn embeddings(
    State(log): State<Arc<ServerLog>>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    log.requests.fetch_add(1, Ordering::SeqCst);
    assert_eq!(headers.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer test-key"));
    if body["model"] == "broken" {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": {"message": "model crashed"}})));
    }
    let inputs: Vec<String> = serde_json::from_value(body["input"].clone()).unwrap();
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(index, text)| {
            let first = f32::from(text.bytes().next().unwrap_or(0));
            serde_json::json!({"object": "embedding", "index": index, "embedding": [text.len() as f32, 1.0, first]})
        })
        .collect();
    (StatusCode::OK, Json(serde_json::json!({"object": "list", "data": data, "model": body["model"]})))
}

async fn start_embeddings_server() -> (String, Arc<ServerLog>) {
    let log = Arc::new(ServerLog::default());
    let app = axum::Router::new().route("/v1/embeddings", post(embeddings)).with_state(Arc::clone(&log));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/v1"), log)
}

fn remote_settings(base_url: &str, model: &str) -> EmbedderSettings {
    let mut settings = EmbedderSettings::remote(RemoteSettings {
        base_url: base_url.to_owned(),
        model: model.to_owned(),
        api_key: Some("test-key".into()),
        request_timeout: Duration::from_secs(5),
    });
    // Ten callers, one request: the batch goes out when the tenth arrives.
    settings.batch = BatchSettings { max_batch: 10, max_wait: Duration::from_secs(2), max_in_flight: 4 };
    settings
}

#[tokio::test]
async fn remote_vectors_come_back_per_caller_normalised_in_batched_requests() {
    let (base_url, log) = start_embeddings_server().await;
    let (embedder, _cell) = EmbedderHandle::start(remote_settings(&base_url, "text-embedding-test")).await.unwrap();
    let texts: Vec<String> = (0..10).map(|index| format!("{}{}", char::from(b'a' + index as u8), "x".repeat(index))).collect();
    let answers = futures::future::join_all(texts.iter().map(|text| embedder.embed(text.clone()))).await;
    // The first text finds the embedder idle and goes out at once; the nine behind it share one
    // request.
    assert_eq!(log.requests.load(Ordering::SeqCst), 2);
    for (text, answer) in texts.iter().zip(answers) {
        let vector = answer.unwrap();
        let raw = [text.len() as f32, 1.0, f32::from(text.as_bytes()[0])];
        let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
        let expected: Vec<f32> = raw.iter().map(|x| x / norm).collect();
        assert!(max_difference(&vector, &expected) < 1e-6, "{text:?}: {vector:?}");
    }
}

#[tokio::test]
async fn a_remote_error_reaches_every_caller_of_the_batch() {
    let (base_url, _log) = start_embeddings_server().await;
    let (embedder, _cell) = EmbedderHandle::start(remote_settings(&base_url, "broken")).await.unwrap();
    let answers = futures::future::join_all((0..10).map(|index| embedder.embed(format!("text {index}")))).await;
    for answer in answers {
        match answer {
            Err(EmbedError::RemoteStatus { status, body, url }) => {
                assert_eq!(status, 500);
                assert!(body.contains("model crashed"), "{body}");
                assert_eq!(url, format!("{base_url}/embeddings"));
            }
            other => panic!("expected a 500 from the server, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_remote_server_is_a_clear_error() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let mut settings = remote_settings(&format!("http://{address}/v1"), "m");
    settings.batch.max_batch = 1;
    let (embedder, _cell) = EmbedderHandle::start(settings).await.unwrap();
    let error = embedder.embed("hello".into()).await.unwrap_err();
    assert!(matches!(error, EmbedError::RemoteUnreachable { .. }), "{error:?}");
    assert!(error.to_string().contains(&address.to_string()), "{error}");
}
