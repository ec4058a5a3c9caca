//! `POST /v1/embeddings` in OpenAI's shape: one deterministic unit vector per input text.
//!
//! A text's vector ([`embedding`]) is the normalised sum of one pseudo-random vector per word
//! (lowercase runs of letters and digits) and half of one for the whole text, each drawn from
//! xxh3 seeded by the word or the text. The same text always gets the same vector, different
//! texts get different vectors, and texts sharing words point in similar directions, as a
//! sentence embedder's would.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::openai::{OpenAiWire, invalid_request};
use super::respond::{self, to_json};
use super::state::{Endpoint, SimState};

/// Dimensions of a vector when the request does not say.
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 384;

/// Most dimensions a request may ask for.
const MAX_DIMENSIONS: u64 = 4096;

/// Most inputs in one request, as OpenAI allows.
const MAX_INPUTS: usize = 2048;

/// Weight of the whole text's vector against each word's.
const WHOLE_TEXT_WEIGHT: f64 = 0.5;

/// Seeds the draw of a word's vector.
const WORD_SEED: u64 = 0x5741_5244_5345_4544;

/// Seeds the draw of a whole text's vector.
const TEXT_SEED: u64 = 0x5445_5854_5345_4544;

/// The vector the simulator answers for `text`: `dimensions` `f32`s of unit length (see the
/// module documentation for how it is drawn). Empty for zero dimensions.
pub fn embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let mut sum = vec![0.0_f64; dimensions];
    let lowercase = text.to_lowercase();
    for word in lowercase
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
    {
        add_drawn(&mut sum, xxh3_64_with_seed(word.as_bytes(), WORD_SEED), 1.0);
    }
    add_drawn(
        &mut sum,
        xxh3_64_with_seed(text.as_bytes(), TEXT_SEED),
        WHOLE_TEXT_WEIGHT,
    );
    let norm = sum.iter().map(|value| value * value).sum::<f64>().sqrt();
    if norm > 0.0 {
        for value in &mut sum {
            *value /= norm;
        }
    }
    sum.into_iter().map(|value| value as f32).collect()
}

/// Adds `weight` times the pseudo-random vector seeded by `seed`, each coordinate in -1 to 1.
fn add_drawn(sum: &mut [f64], seed: u64, weight: f64) {
    for (dimension, value) in (0_u64..).zip(sum.iter_mut()) {
        let drawn = xxh3_64_with_seed(&dimension.to_le_bytes(), seed);
        let unit = (drawn >> 11) as f64 / (1_u64 << 53) as f64;
        *value += weight * (unit * 2.0 - 1.0);
    }
}

/// An embeddings request; `user` and other fields are ignored.
#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    /// The requested model.
    #[serde(default)]
    model: Option<String>,
    /// A string or a list of strings.
    #[serde(default)]
    input: Option<Value>,
    /// Dimensions of the vectors.
    #[serde(default)]
    dimensions: Option<Value>,
    /// `float` (the default) or `base64`.
    #[serde(default)]
    encoding_format: Option<String>,
}

/// A valid request, read.
struct Embed<'a> {
    /// The texts, in order.
    inputs: Vec<&'a str>,
    /// Dimensions of each vector.
    dimensions: usize,
    /// Whether vectors go as base64 of little-endian `f32`s.
    base64: bool,
}

impl EmbeddingsRequest {
    /// The request's texts and options, or why it is invalid.
    fn read(&self) -> Result<Embed<'_>, String> {
        if self.model.as_deref().is_none_or(str::is_empty) {
            return Err("you must provide a model parameter".to_owned());
        }
        let inputs = match &self.input {
            None | Some(Value::Null) => {
                return Err("Missing required parameter: 'input'.".to_owned());
            }
            Some(Value::String(text)) if text.is_empty() => {
                return Err(
                    "Invalid 'input': empty string. Expected a non-empty string.".to_owned(),
                );
            }
            Some(Value::String(text)) => vec![text.as_str()],
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(
                    "Invalid 'input': empty array. Expected an array with minimum length 1, but got an empty array instead."
                        .to_owned(),
                );
            }
            Some(Value::Array(items)) if items.len() > MAX_INPUTS => {
                return Err(format!(
                    "Invalid 'input': array too long. Expected an array with maximum length {MAX_INPUTS}, but got an array with length {} instead.",
                    items.len()
                ));
            }
            Some(Value::Array(items)) => {
                let mut texts = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some("") => {
                            return Err(format!(
                                "Invalid 'input[{index}]': empty string. Expected a non-empty string."
                            ));
                        }
                        Some(text) => texts.push(text),
                        None => {
                            return Err(format!(
                                "Invalid 'input[{index}]': expected a string (the simulator does not take token arrays), got {item}."
                            ));
                        }
                    }
                }
                texts
            }
            Some(other) => {
                return Err(format!(
                    "Invalid type for 'input': expected a string or an array of strings, but got {other} instead."
                ));
            }
        };
        let dimensions = match &self.dimensions {
            None | Some(Value::Null) => DEFAULT_EMBEDDING_DIMENSIONS,
            Some(value) => match value.as_u64().filter(|d| (1..=MAX_DIMENSIONS).contains(d)) {
                Some(dimensions) => {
                    usize::try_from(dimensions).unwrap_or(DEFAULT_EMBEDDING_DIMENSIONS)
                }
                None => {
                    return Err(format!(
                        "Invalid 'dimensions': {value}. Expected an integer from 1 to {MAX_DIMENSIONS}."
                    ));
                }
            },
        };
        let base64 = match self.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(format!(
                    "Invalid value for 'encoding_format': '{other}'. Supported values are: 'float' and 'base64'."
                ));
            }
        };
        Ok(Embed {
            inputs,
            dimensions,
            base64,
        })
    }
}

/// The answer: `{"object": "list", "data": [...], "model": ..., "usage": {...}}`.
#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

/// One vector of the answer.
#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: Encoded,
}

/// A vector as numbers or as base64.
#[derive(Serialize)]
#[serde(untagged)]
enum Encoded {
    /// `[0.1, ...]`.
    Float(Vec<f32>),
    /// Base64 of the little-endian `f32`s.
    Base64(String),
}

/// `usage` of an embeddings answer.
#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

/// The body answering `embed` for `model`.
fn answer_body(model: &str, embed: &Embed<'_>) -> Vec<u8> {
    let data = embed
        .inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embedding(text, embed.dimensions);
            let embedding = if embed.base64 {
                let bytes: Vec<u8> = vector
                    .iter()
                    .flat_map(|value| value.to_le_bytes())
                    .collect();
                Encoded::Base64(base64(&bytes))
            } else {
                Encoded::Float(vector)
            };
            EmbeddingItem {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let tokens = embed
        .inputs
        .iter()
        .map(|text| {
            u32::try_from(text.split_whitespace().count())
                .unwrap_or(u32::MAX)
                .max(1)
        })
        .fold(0_u32, u32::saturating_add);
    to_json(&EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let triple = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let sextets = [triple >> 18, triple >> 12, triple >> 6, triple];
        for (position, sextet) in sextets.into_iter().enumerate() {
            if position <= chunk.len() {
                let index = usize::try_from(sextet & 0x3f).unwrap_or(0);
                out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(
    State(state): State<Arc<SimState>>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    let arrival = Instant::now();
    let caller_opt = super::control::caller(&headers);
    let request: EmbeddingsRequest = match state.parse_body(Endpoint::Embeddings, caller_opt.as_deref(), &body) {
        Ok(request) => request,
        Err(problem) => return invalid_request(&problem),
    };
    let model_opt = request.model.as_deref().filter(|model| !model.is_empty());
    let read = request.read();
    let behaviour = state.begin_call(
        Endpoint::Embeddings,
        model_opt,
        caller_opt.as_deref(),
        read.is_ok(),
    );
    let embed = match read {
        Ok(embed) => embed,
        Err(problem) => return invalid_request(&problem),
    };
    let body = answer_body(model_opt.unwrap_or_default(), &embed);
    respond::respond_plain(state, arrival, behaviour, body, None, OpenAiWire::default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    #[test]
    fn vectors_are_unit_length_deterministic_and_distinct() {
        let vector = embedding("what is the weather in Paris", 384);
        assert_eq!(vector.len(), 384);
        assert!((cosine(&vector, &vector) - 1.0).abs() < 1e-5);
        assert_eq!(vector, embedding("what is the weather in Paris", 384));
        let reordered = embedding("Paris weather: what is it in", 384);
        assert_ne!(vector, reordered);
        let similar = embedding("What is the weather in Paris?", 384);
        let unrelated = embedding("recipe for a lemon cake", 384);
        assert!(
            cosine(&vector, &similar) > 0.8,
            "{}",
            cosine(&vector, &similar)
        );
        assert!(
            cosine(&vector, &unrelated) < 0.5,
            "{}",
            cosine(&vector, &unrelated)
        );
        assert!(embedding("x", 0).is_empty());
    }

    #[test]
    fn base64_follows_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn requests_are_checked() -> anyhow::Result<()> {
        let read = |json: &str| -> anyhow::Result<Result<usize, String>> {
            let request: EmbeddingsRequest = serde_json::from_str(json)?;
            Ok(request
                .read()
                .map(|embed| embed.inputs.len() * embed.dimensions))
        };
        assert_eq!(read(r#"{"model":"e","input":"hi"}"#)?, Ok(384));
        assert_eq!(
            read(r#"{"model":"e","input":["a","b"],"dimensions":8}"#)?,
            Ok(16)
        );
        for bad in [
            r#"{"input":"hi"}"#,
            r#"{"model":"e"}"#,
            r#"{"model":"e","input":""}"#,
            r#"{"model":"e","input":[]}"#,
            r#"{"model":"e","input":["a",""]}"#,
            r#"{"model":"e","input":[[1,2]]}"#,
            r#"{"model":"e","input":"hi","dimensions":0}"#,
            r#"{"model":"e","input":"hi","encoding_format":"hex"}"#,
        ] {
            assert!(read(bad)?.is_err(), "{bad}");
        }
        let many = serde_json::json!({ "model": "e", "input": vec!["x"; MAX_INPUTS + 1] });
        assert!(read(&many.to_string())?.is_err());
        Ok(())
    }
}
