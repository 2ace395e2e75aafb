//! Cluster test harness: starts real PostgreSQL servers and real `cuttle-server` processes on
//! free loopback ports, each in its own temporary directory, and stops them on drop.
//!
//! Set `CUTTLE_TEST_KEEP=1` to keep the temporary directories (node logs, databases) after a
//! test for debugging. Set `CUTTLE_TEST_PG_URL` to use one running PostgreSQL server (each test
//! gets a fresh database on it) instead of starting one per test. Set `CUTTLE_TEST_MSSQL_URL`
//! to run the SQL Server variants of the conformance and cluster tests (ignored otherwise;
//! `scripts/test.sh` runs them when it is set).

mod browser;
mod lb;
mod model;
mod mssql;
mod netns;
mod node;
mod otlp;
mod packages;
mod partition;
mod pg;
mod tentacle;
mod util;
pub mod web;

pub use browser::{Browser, Element};
pub use lb::{deploy_dir, Haproxy, Nginx};
pub use mssql::TestSqlServer;
pub use netns::{walkthrough_block, Lan, Netns};
pub use node::{
    agent, cli_binary, run_to_exit, server_binary, use_server_binary, Cluster, Database,
    HttpsTrust, Node, NodeOptions,
};
pub use otlp::{Collector, ReceivedSpan};
pub use packages::{download, multipart, peak_rss_kib, upload, Downloaded, Generated};
pub use partition::Partition;
pub use pg::{TestCertificates, TestPostgres};
pub use tentacle::{tentacle_binary, use_tentacle_binary, Tentacle};
pub use util::{
    free_port, parse_rfc3339_ms, process_gone, processes_running, raise_open_file_limit, read_pid,
    report, temp_dir, test_python, wait_for_process, wait_until, Rng, SetOnDrop, TempDir,
};

/// One test per database for each named function taking a [`Database`], in modules `sqlite`,
/// `postgres` and `sqlserver` (those ignored without `CUTTLE_TEST_MSSQL_URL`): the same body
/// proves the same behaviour on each.
#[macro_export]
macro_rules! on_every_database {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name($crate::Database::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name($crate::Database::Postgres) })*
        }
        mod sqlserver {
            $(#[test]
            #[ignore = "needs a SQL Server: set CUTTLE_TEST_MSSQL_URL, run with --run-ignored"]
            fn $name() { super::$name($crate::Database::SqlServer) })*
        }
    };
}
