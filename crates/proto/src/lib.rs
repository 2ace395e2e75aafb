//! gRPC messages and services between Cuttle roles, generated from `proto/cuttle/v1`, and the
//! transport that runs them over a connection that is already open in either direction.

/// `cuttle.v1`: the one protocol package.
pub mod v1 {
    tonic::include_proto!("cuttle.v1");
}

pub mod wire;
