//! The cluster: nodes joined by `ractor_cluster` that behave as one.
//!
//! - [`membership`]: the `Membership` actor: the node server, seeds and redials, heartbeats,
//!   who is alive ([`membership::ClusterView`], published on a watch).
//! - [`ring`]: partition → owners by rendezvous hashing, as a pure versioned value.
//! - [`directory`]: the snapshot of partition → shard routes (local or on another node) that
//!   request tasks read without a mailbox round trip.
//! - [`tls`]: optional mutual TLS between nodes.
//! - [`wire`]: what nodes send each other (protobuf, version 1), trace context across nodes.

pub mod directory;
pub mod membership;
pub mod ring;
pub mod tls;
pub mod wire;
