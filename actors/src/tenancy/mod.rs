//! Who is calling and how much they may: API keys and their principals, and per-key rate limits.
//!
//! - [`keys`]: the key ring (only SHA-256 hashes of keys are held) and [`Principal`].
//! - [`limiter`]: requests-per-minute (GCRA from `governor`) and tokens-per-minute buckets.
//! - [`rate_owner`]: in a cluster, the `RateOwner` actor holding the keys it owns' limits;
//!   [`rate_client`]: the pools of permits a node spends locally.

pub mod keys;
pub mod limiter;
pub mod rate_client;
pub mod rate_owner;

pub use keys::{KeyRing, KeySettings, Principal};
pub use limiter::{KeyLimiter, RateLimited};
