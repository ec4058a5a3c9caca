//! The caches in front of the providers.
//!
//! - [`key`]: the exact cache's key: what two requests must share to share an answer.
//! - [`semantic`]: the semantic cache's partitions, vector index, `CacheShard` actor and hit policy.
//! - [`exact`]: the exact cache, in Redis or in process (moka), each entry with its own TTL.

pub mod exact;
pub mod key;
pub mod semantic;

pub use exact::{CachedAnswer, ExactCache, Invalidation, Lookup, RedisCacheSettings};
