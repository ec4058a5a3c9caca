//! Who is calling and how much they may: API keys and their principals, and per-key rate limits.
//!
//! - [`keys`]: the key ring (only SHA-256 hashes of keys are held) and [`Principal`].
//! - [`limiter`]: requests-per-minute (GCRA from `governor`) and tokens-per-minute buckets.

pub mod keys;
pub mod limiter;

pub use keys::{KeyRing, KeySettings, Principal};
pub use limiter::{KeyLimiter, RateLimited};
