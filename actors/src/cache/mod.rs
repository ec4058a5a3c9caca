//! The caches in front of the providers.
//!
//! - [`key`]: the exact cache's key: what two requests must share to share an answer.
//! - [`exact`]: the exact cache, in process (moka) with a per-entry TTL.

pub mod exact;
pub mod key;

pub use exact::{CachedAnswer, ExactCache, Lookup};
