//! gRPC messages and services between Cuttle roles, generated from `proto/cuttle/v1`.

#![allow(unreachable_pub, clippy::all)] // generated code

/// `cuttle.v1`: the one protocol package.
pub mod v1 {
    tonic::include_proto!("cuttle.v1");
}
