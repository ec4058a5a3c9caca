//! Routing: which provider and model serve a request.
//!
//! - [`policy`]: the rules, models, routes and the pure `select` function (synchronous tests).
//! - [`router`]: the `Router` actor, single writer of the health table, publishing
//!   [`RoutingSnapshot`]s that request tasks read without a round trip.
//! - [`views`]: every node's view of every provider, combined into the table the policy reads.

pub mod policy;
#[expect(clippy::module_inception, reason = "one file per actor, named after the actor")]
pub mod router;
pub mod views;

pub use policy::{HealthTable, ModelKind, ModelSettings, Price, RoutingPolicy, RoutingRule};
pub use router::{Router, RouterHandle, RouterMessage, RoutingSnapshot};
