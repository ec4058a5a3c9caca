//! The data that flows between the front doors, the pipeline and the actors.
//!
//! - [`request`]: a validated chat request and the limits it is checked against.
//! - [`selection`]: what the router reads ([`RoutingContext`]) and decides ([`ModelSelection`]).
//! - [`response`]: what a provider answers, whole or as a stream of events.
//! - [`tools`]: tools, tool calls and structured output.
//! - [`embedding`]: an embeddings request.

pub mod embedding;
pub mod request;
pub mod response;
pub mod selection;
pub mod tools;

pub use embedding::EmbeddingRequest;
pub use request::{CacheControl, ChatRequest, ContentPart, Message, RequestLimits, Role, RoutingHints, Sampling};
pub use response::{CacheLayer, Completion, FinishReason, StreamEvent, Usage};
pub use tools::{ResponseFormat, Tool, ToolCall, ToolCallAssembler, ToolCallDelta, ToolChoice};
pub use selection::{ModelSelection, Quality, RoutingContext, Target, Tier};
