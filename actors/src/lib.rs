//! Switchyard's actors, the domain types that flow between them, and the request pipeline that
//! drives them. No server code lives here: the node's front doors call [`pipeline::Gateway`].
//!
//! # Layout
//! - [`model`]: requests, routing context and selection, answers and stream events.
//! - [`router`]: the `Router` actor and its pure routing policy.
//! - [`provider`]: the `ProviderPool` actor, wire formats (OpenAI, Anthropic), HTTP client,
//!   circuit breaker, health, retries and error classification.
//! - [`pipeline`]: one request through validation, routing, the provider chain and pricing.
//! - [`cache`]: the exact cache and its key, and the semantic cache spread over the cluster.
//! - [`cluster`]: membership, the ring, the shard directory and the wire between nodes.
//! - [`embed`]: the `Embedder` actor and its backends (local MiniLM, remote `/v1/embeddings`).
//! - [`budget`]: the `Budget` actor, cost events, the ledger, budgets and alerts.
//! - [`tenancy`]: API keys, principals and rate limits.
//! - [`metrics`]: the node's Prometheus registry.
//! - [`outbox`]: fire-and-forget reports batched into one actor message under load.
//! - [`runtime`]: the root supervisor every actor of the node is linked under.
//! - [`experiment`]: A/B tests and canary splits between models, sticky per user.
//! - [`guard`]: guardrails on prompts and answers: personal data, injections, deny lists.
//! - [`error`]: [`error::GatewayError`], what a request can fail with.

pub mod budget;
pub mod cache;
pub mod cluster;
pub mod embed;
pub mod error;
pub mod experiment;
pub mod guard;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod pipeline;
pub mod provider;
pub mod router;
pub mod runtime;
pub mod tenancy;
