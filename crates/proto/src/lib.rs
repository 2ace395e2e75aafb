//! gRPC messages and services between Cuttle roles, generated from `proto/cuttle/v1`, and the
//! transport that runs them over a connection that is already open in either direction.

/// `cuttle.v1`: the one protocol package.
pub mod v1 {
    tonic::include_proto!("cuttle.v1");
}

/// The public API's encoded `FileDescriptorSet` (its files and what they import), for server
/// reflection.
pub const PUBLIC_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/public_descriptor.bin"));

pub mod admission;
pub mod files;
pub mod lines;
pub mod per_address;
pub mod script_env;
pub mod wire;

/// Metadata naming the target of a relayed file push (its numeric id): a client-streaming call
/// has no first message to carry it in before the data.
pub const TARGET_METADATA: &str = "x-cuttle-target";
