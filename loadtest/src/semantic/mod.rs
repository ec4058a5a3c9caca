//! The semantic cache's quality benchmark: labelled question pairs, their split, cached sentence
//! vectors, and the fitting and evaluation of the cache's hit policy.
//!
//! - [`pairs`]: reading labelled pairs and splitting them into fit, validation and test parts.
//! - [`embeddings`]: the pairs' sentence vectors, computed once and cached on disk.
//! - [`metrics`]: recall at a precision floor, best F1, calibration of thresholds.
//! - [`fit`]: fitting the policy's verifier on the train split (candle).
//! - [`eval`]: scoring the test split with a policy and with plain cosine.
//! - [`weights`]: the encoder's int8 weights against its f32 weights (vectors and decisions).

pub mod embeddings;
pub mod eval;
pub mod fit;
pub mod metrics;
pub mod pairs;
pub mod weights;
