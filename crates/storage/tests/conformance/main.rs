//! The storage conformance suite: the same behaviour checks against every backend. PostgreSQL
//! is a real server (see `cuttle_e2e::TestPostgres`); SQLite is a real file; SQL Server is the
//! server `CUTTLE_TEST_MSSQL_URL` names (those variants are ignored without one: run them with
//! `cargo nextest run --run-ignored only`).
//!
//! One module per area of the store, as the store itself is split; every test runs on all three
//! dialects.

mod configuration;
mod events;
mod keys;
mod migrations;
mod nodes;
mod packages;
mod queue;
mod sessions;
mod settings;
mod targets;

use std::collections::HashSet;
use std::time::Duration;

use cuttle_core::{
    Comms, NewEvent, NewTarget, NewTask, NodePatch, Scope, TargetId, TaskId, TaskKind, TaskRecord,
    TaskState,
};
use cuttle_e2e::{temp_dir, TempDir, TestPostgres, TestSqlServer};
use cuttle_storage::{
    audit_as, Audit, Completion, DeploymentFilter, DocumentWrite, Error, Execution, HashedWith,
    NewApiKey, NewDeployment, NewRelease, NodeRegistration, Revoke, Store, StoreOptions, Written,
    SCHEMA_VERSION,
};

/// One empty database, and a way to open more connections (as other nodes would) to it.
pub(crate) enum Fixture {
    Sqlite(TempDir),
    Postgres(TestPostgres),
    SqlServer(TestSqlServer),
}

impl Fixture {
    pub(crate) fn url(&self) -> String {
        match self {
            Fixture::Sqlite(d) => format!("sqlite://{}", d.path().join("cuttle.db").display()),
            Fixture::Postgres(pg) => pg.url().to_owned(),
            Fixture::SqlServer(ms) => ms.url().to_owned(),
        }
    }

    pub(crate) async fn open(&self) -> Store {
        Store::connect(&self.url(), &StoreOptions::default())
            .await
            .expect("connect")
    }

    /// Runs one statement straight on the database, bypassing the store: for states no store
    /// call makes (rows written by an older version, damaged rows). `{now_ms}` in `sql` is
    /// replaced by the dialect's clock, `{created_at}` by its creation-time column.
    pub(crate) fn raw(&self, sql: &str) {
        match self {
            Fixture::Sqlite(d) => {
                let sql = sql
                    .replace("{now_ms}", "CAST(unixepoch('subsec') * 1000 AS INTEGER)")
                    .replace("{created_at}", "created_at_ms")
                    .replace("{expires}", "expires_at_ms = 0");
                rusqlite::Connection::open(d.path().join("cuttle.db"))
                    .and_then(|c| c.execute_batch(&sql))
                    .expect("sqlite statement");
            }
            Fixture::Postgres(pg) => {
                let sql = sql
                    .replace(
                        "{now_ms}",
                        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                    )
                    .replace("{created_at}", "created_at_ms")
                    .replace("{expires}", "expires_at_ms = 0");
                pg.psql(&sql).expect("postgres statement");
            }
            Fixture::SqlServer(ms) => {
                ms.sql(
                    &sql.replace("{now_ms}", "SYSUTCDATETIME()")
                        .replace("{created_at}", "created_at")
                        .replace("{expires}", "expires_at = '2000-01-01'"),
                )
                .expect("SQL Server statement");
            }
        }
    }

    pub(crate) async fn migrated(&self) -> Store {
        let s = self.open().await;
        s.migrate().await.expect("migrate");
        s
    }
}

macro_rules! conformance {
    ($($area:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fx = super::Fixture::Sqlite(super::temp_dir("storage"));
                super::$area::$name(&fx).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let pg = super::TestPostgres::start().expect("start postgres");
                let fx = super::Fixture::Postgres(pg);
                super::$area::$name(&fx).await;
            })*
        }
        mod sqlserver {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs a SQL Server: set CUTTLE_TEST_MSSQL_URL, run with --run-ignored"]
            async fn $name() {
                let ms = super::TestSqlServer::start().expect("SQL Server test database");
                let fx = super::Fixture::SqlServer(ms);
                super::$area::$name(&fx).await;
            })*
        }
    };
}

conformance!(
    migrations::migrations_are_versioned_and_idempotent,
    migrations::concurrent_migrations_run_once,
    queue::claims_fifo_up_to_max,
    queue::claims_never_pass_the_task_cap_as_stored_now,
    queue::lost_node_s_retry_safe_tasks_go_back_to_the_queue,
    queue::draining_zero_cap_or_unknown_nodes_claim_nothing,
    queue::concurrency_tags_never_overlap,
    queue::completions_are_fenced_by_epoch,
    queue::lost_nodes_fail_their_tasks_exactly_once,
    queue::restarted_node_releases_its_previous_tasks,
    nodes::heartbeat_reregisters_deleted_node_and_keeps_operator_state,
    nodes::a_node_name_is_held_by_one_process_at_a_time,
    queue::cancel_queued_executing_and_orphaned,
    settings::settings_are_shared_and_initialised_once,
    keys::api_keys_are_stored_once_with_scope_expiry_and_target,
    keys::keys_stored_before_schema_5_keep_working_and_are_rehashed,
    keys::keys_are_found_under_a_previous_secret_and_rehashed,
    keys::api_keys_are_listed_and_revoked_with_their_audit_events,
    keys::the_last_working_admin_key_is_kept_whatever_revokes_race,
    keys::users_are_named_once_their_passwords_replaced_in_turn_and_audited,
    queue::lists_tasks_newest_first_with_filter,
    queue::concurrent_claimers_take_each_task_once,
    queue::complete_and_claim_in_one_call,
    events::changes_are_written_with_their_audit_events,
    events::events_are_read_by_time_in_pages_and_deleted_by_range,
    targets::targets_and_their_gateway_sessions,
    settings::periodic_jobs_run_once_per_period_and_health_is_recorded,
    queue::unstarted_claims_go_back_to_the_queue_in_their_place,
    configuration::documents_are_versioned_named_once_ordered_and_audited,
    configuration::releases_are_numbered_once_per_project_and_keep_their_snapshot,
    configuration::release_snapshots_are_replaced_only_if_unchanged,
    configuration::deployments_are_queued_with_their_task_and_show_its_state,
    packages::package_versions_are_stored_once_replaced_whole_and_audited,
    sessions::sessions_last_until_they_end_or_are_ended_and_are_audited,
);

pub(crate) fn reg(name: &str, cap: u32) -> NodeRegistration {
    NodeRegistration {
        name: name.into(),
        roles: "api,worker".into(),
        version: "test".into(),
        http_address: "127.0.0.1:1".into(),
        grpc_address: "127.0.0.1:2".into(),
        gateway_address: None,
        initial_task_cap: cap,
        instance: format!("{name}-instance"),
        replaces: None,
    }
}

pub(crate) fn sleep_task(tag: Option<&str>) -> NewTask {
    NewTask {
        kind: TaskKind::Sleep { duration_ms: 0 },
        description: "t".into(),
        concurrency_tag: tag.map(str::to_owned),
    }
}

pub(crate) async fn enqueue_n(s: &Store, n: usize) -> Vec<TaskId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(s.enqueue(&sleep_task(None), None).await.unwrap().id);
    }
    ids
}

pub(crate) fn done(id: TaskId, epoch: i64) -> Completion {
    Completion {
        id,
        epoch,
        state: TaskState::Success,
        error: None,
    }
}

pub(crate) const LONG: Duration = Duration::from_secs(3600);

pub(crate) fn new_key(name: &str, hash: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        scope: Scope::Operator,
        prefix: "API-abcd".into(),
        hash: hash.into(),
        algorithm: "hmac-sha256/0000aaaa".into(),
        expires_in_secs: None,
        target_name: None,
        grant: None,
    }
}

pub(crate) fn event(action: &str, target: impl ToString, details: serde_json::Value) -> NewEvent {
    NewEvent {
        actor: "admin".into(),
        action: action.into(),
        target: target.to_string(),
        client_address: "203.0.113.7".into(),
        details,
    }
}

pub(crate) fn target(name: &str, thumb_digit: char) -> NewTarget {
    NewTarget {
        name: name.into(),
        environments: vec!["Production".into()],
        roles: vec!["web".into()],
        comms: Comms::Polling,
        thumbprint: thumb_digit.to_string().repeat(64),
        endpoint: None,
    }
}
