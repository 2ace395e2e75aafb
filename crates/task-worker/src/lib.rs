//! The worker role: claims queued tasks up to the node's task cap, runs them, writes their
//! logs, and reports outcomes — in batches, so the database sees few round trips per task.

mod artifacts;
mod ctx;
mod exec;
mod fence;
mod groups;
mod grpc;
mod kinds;
mod local;
mod output;
mod sandbox;
mod tentacles;
mod worker;

pub use grpc::WorkerControlService;
pub use sandbox::{BuiltinWorker, SandboxConfig, DEFAULT_SCRIPT_USER};
pub use worker::{serve, DbContact, Error, WorkerConfig, WorkerDeps, WorkerHandle};
