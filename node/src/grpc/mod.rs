//! The gRPC front door: [`gateway`] serves `switchyard.v1.Gateway`, [`admin`] serves
//! `switchyard.v1.Admin`. Both only convert between protobuf and the pipeline's types.

pub mod admin;
pub mod gateway;

pub use admin::AdminService;
pub use gateway::GatewayService;
