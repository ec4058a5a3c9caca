//! Switchyard's load-testing kit: the upstream simulator the gateway is tested and benchmarked
//! against, and the closed-loop load generator that measures the gateway.
//!
//! # Layout
//! - [`sim`](mod@sim): the upstream simulator, an HTTP server speaking the OpenAI Chat
//!   Completions and Anthropic Messages wire formats with deterministic answers and injectable
//!   faults.
//! - [`bench`](mod@bench): the load generator behind `switchyard-loadtest bench` and `ramp`,
//!   calling a target over HTTP (OpenAI format) or gRPC (`switchyard.v1.Gateway`).
//! - [`semantic`](mod@semantic): the semantic cache's quality benchmark behind
//!   `switchyard-loadtest semantic-eval` and `semantic-fit`.
//! - [`workload`](mod@workload): workload files, `build-workload` and `run` (replay with hit
//!   ratios, semantic precision, percentiles by layer, cost avoided, JSON/Markdown/SVG reports).
//! - [`floor`](mod@floor): bare servers built from the node's stack with none of its pipeline,
//!   the floor under what a request costs the node.
//! - `src/bin/switchyard-sim.rs`: runs the simulator.
//! - `src/bin/switchyard-loadtest.rs`: runs benchmarks and ramps from the command line.

pub mod bench;
pub mod floor;
pub mod semantic;
pub mod sim;
pub mod workload;
