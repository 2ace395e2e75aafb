//! Compiles `proto/` with protox (pure Rust), so building needs no `protoc` on the machine. The
//! public API's files are also written as one encoded descriptor set (with what they import),
//! for gRPC server reflection and the wire-compatibility check.

use std::path::PathBuf;

/// The internal protocol between roles and with tentacles.
const INTERNAL: [&str; 2] = ["cuttle/v1/worker.proto", "cuttle/v1/tentacle.proto"];
/// The public API (`CUTTLE_PUBLIC_GRPC_LISTEN`).
const PUBLIC: [&str; 14] = [
    "cuttle/v1/tasks.proto",
    "cuttle/v1/spaces.proto",
    "cuttle/v1/environments.proto",
    "cuttle/v1/projects.proto",
    "cuttle/v1/releases.proto",
    "cuttle/v1/deployments.proto",
    "cuttle/v1/packages.proto",
    "cuttle/v1/nodes.proto",
    "cuttle/v1/lifecycles.proto",
    "cuttle/v1/runbooks.proto",
    "cuttle/v1/events.proto",
    "cuttle/v1/api_keys.proto",
    "cuttle/v1/targets.proto",
    "cuttle/v1/artifacts.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    println!("cargo:rerun-if-changed={root}");
    let all: Vec<&str> = INTERNAL.iter().chain(PUBLIC.iter()).copied().collect();
    let fds = protox::compile(&all, [root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // A package's bytes are sliced from the received buffer, never copied again.
        .bytes(".cuttle.v1.UploadPackageRequest.data")
        .bytes(".cuttle.v1.PackageChunk.data")
        .bytes(".cuttle.v1.ArtifactChunk.data")
        .compile_fds(fds)?;

    let mut public = protox::Compiler::new([root])?;
    public.include_imports(true).include_source_info(true);
    public.open_files(PUBLIC)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("public_descriptor.bin");
    std::fs::write(out, public.encode_file_descriptor_set())?;
    Ok(())
}
