//! What an operator sees of a Cuttle process: its log lines ([`logging`]), its Prometheus
//! metrics ([`metrics`]) and its traces ([`trace`]). Every binary sets its logging up here, and every crate that counts
//! something counts it in the one registry [`metrics()`] holds, so `/metrics` shows it all.

pub mod logging;
pub mod metrics;
pub mod trace;

pub use metrics::{metrics, Metrics, Snapshot};
pub use prometheus::IntCounter;
