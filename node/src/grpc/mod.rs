//! The gRPC front door: [`gateway`] serves `switchyard.v1.Gateway`, [`admin`] serves
//! `switchyard.v1.Admin`, [`batches`] serves `switchyard.v1.Batches`. Each only converts between
//! protobuf and the pipeline's (or the batch service's) types.

pub mod admin;
pub mod batches;
pub mod gateway;

pub use admin::AdminService;
pub use batches::BatchService;
pub use gateway::GatewayService;
