//! The semantic cache's hit policy on real sentence vectors from the local all-MiniLM-L6-v2
//! (`.models/all-MiniLM-L6-v2`, or the directory named by `EMBEDDING_MODEL_DIR`; fetched by
//! `scripts/fetch-model`): near-miss questions that plain cosine would serve are refused at the
//! policy's 0.9-precision threshold, and paraphrases still pass the loose floor.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use switchyard_actors::cache::semantic::policy::HitPolicy;
use switchyard_actors::embed::pooling::cosine;
use switchyard_actors::embed::{LocalEncoder, LocalSettings};

fn vectors(texts: &[&str]) -> Vec<Vec<f32>> {
    let encoder = LocalEncoder::open(&LocalSettings::new(common::model_dir())).unwrap_or_else(|error| panic!("{error}"));
    encoder.embed(&texts.iter().map(|text| (*text).to_owned()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn near_misses_score_below_the_high_precision_threshold() {
    let policy = HitPolicy::shipped().unwrap();
    let threshold = policy.threshold_for(0.9).unwrap();
    let near_misses = [
        ("How do I learn Python?", "How do I learn Java?"),
        ("What is the capital of France?", "What is the capital of Germany?"),
        ("How do I lose 10 kg in a month?", "How do I lose 20 kg in a month?"),
    ];
    for (query, candidate) in near_misses {
        let vectors = vectors(&[query, candidate]);
        let score = policy.score(query, &vectors[0], candidate, &vectors[1]);
        let similarity = cosine(&vectors[0], &vectors[1]);
        assert!(
            score < threshold,
            "{query:?} vs {candidate:?}: score {score} (cosine {similarity}) is not below threshold_for(0.9) = {threshold}"
        );
    }
}

#[test]
fn paraphrases_score_above_near_misses() {
    let policy = HitPolicy::shipped().unwrap();
    let texts = ["How do I learn Python?", "What is the best way to learn Python?", "How do I learn Java?"];
    let vectors = vectors(&texts);
    let paraphrase = policy.score(texts[0], &vectors[0], texts[1], &vectors[1]);
    let near_miss = policy.score(texts[0], &vectors[0], texts[2], &vectors[2]);
    assert!(cosine(&vectors[0], &vectors[1]) >= policy.loose_similarity());
    assert!(paraphrase > near_miss, "paraphrase {paraphrase} vs near miss {near_miss}");
}

#[test]
fn scoring_is_symmetric() {
    let policy = HitPolicy::shipped().unwrap();
    let texts = ["Why is the sky blue?", "What makes the sky look blue?"];
    let vectors = vectors(&texts);
    let forward = policy.score(texts[0], &vectors[0], texts[1], &vectors[1]);
    let backward = policy.score(texts[1], &vectors[1], texts[0], &vectors[0]);
    assert!((forward - backward).abs() < 1e-5, "{forward} vs {backward}");
}
