//! Switchyard's protobuf API and its generated gRPC code.
//!
//! # Layout
//! - `switchyard/v1/gateway.proto`: the public `switchyard.v1.Gateway` service.
//! - `switchyard/v1/admin.proto`: the `switchyard.v1.Admin` service (cost and budget queries).
//! - `switchyard/v1/batch.proto`: the `switchyard.v1.Batches` service (batch jobs, the twin of
//!   the OpenAI-compatible Files and Batch APIs).
//! - `switchyard/cluster/v1/cluster.proto`: what nodes send each other (heartbeats, semantic
//!   shard lookups, inserts and partition handoff).
//! - [`v1`]: the generated messages, clients and servers.
//! - [`cluster`]: the generated cluster wire messages.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, served by gRPC reflection.

#![expect(missing_docs, reason = "generated code carries the .proto comments only")]

/// The public API, package `switchyard.v1`.
pub mod v1 {
    tonic::include_proto!("switchyard.v1");
}

/// The node-to-node wire messages, package `switchyard.cluster.v1`.
pub mod cluster {
    tonic::include_proto!("switchyard.cluster.v1");
}

/// Encoded `FileDescriptorSet` of every Switchyard `.proto`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("switchyard_descriptor");
