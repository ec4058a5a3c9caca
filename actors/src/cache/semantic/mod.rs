//! The semantic cache's storage: answers found by the meaning of the last user turn, partitioned
//! so that only answers from the same context are ever candidates.
//!
//! - [`partition`]: the context key and its partition (its owners are the cluster's ring).
//! - [`index`]: a USearch HNSW index made safe for concurrent use (slots and a lock, per DESIGN §5).
//! - [`shard`]: the `CacheShard` actor holding one partition's index and entries, with capacity
//!   eviction, TTL expiry and snapshots.
//! - [`policy`]: the hit decision, [`HitPolicy`]: a verifier fitted on labelled question pairs
//!   that scores each candidate above a loose cosine floor, and the threshold for a route's
//!   target precision.
//! - [`layer`]: [`SemanticCache`], the layer as the request path uses it: embed, ask the
//!   partition's shards (local or on another node), decide, store with every owner.
//! - [`peer`]: the `CachePeer` actor, through which other nodes reach this node's shards.
//! - [`placement`]: the `Placement` actor: membership changes into partition ownership,
//!   handoffs and the published directory.

pub mod index;
pub mod layer;
pub mod partition;
pub mod peer;
pub mod placement;
pub mod policy;
pub mod shard;

pub use layer::{SemanticCache, SemanticClusterSettings, SemanticLookup, SemanticMatch, SemanticProbe, SemanticSettings};
pub use policy::{HitPolicy, PolicyError};
