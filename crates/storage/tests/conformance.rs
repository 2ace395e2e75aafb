//! The storage conformance suite: the same behaviour checks against every backend. PostgreSQL
//! is a real server (see `cuttle_e2e::TestPostgres`); SQLite is a real file; SQL Server is the
//! server `CUTTLE_TEST_MSSQL_URL` names (those variants are ignored without one: run them with
//! `cargo nextest run --run-ignored only`).

use std::collections::HashSet;
use std::time::Duration;

use cuttle_core::{
    Comms, NewEvent, NewTarget, NewTask, NodePatch, Scope, TargetId, TaskId, TaskKind, TaskRecord,
    TaskState,
};
use cuttle_e2e::{temp_dir, TempDir, TestPostgres, TestSqlServer};
use cuttle_storage::{
    audit_as, Audit, Completion, DeploymentFilter, DocumentWrite, Execution, NewApiKey,
    NewDeployment, NewRelease, NodeRegistration, Store, StoreOptions, Written, SCHEMA_VERSION,
};

/// One empty database, and a way to open more connections (as other nodes would) to it.
enum Fixture {
    Sqlite(TempDir),
    Postgres(TestPostgres),
    SqlServer(TestSqlServer),
}

impl Fixture {
    fn url(&self) -> String {
        match self {
            Fixture::Sqlite(d) => format!("sqlite://{}", d.path().join("cuttle.db").display()),
            Fixture::Postgres(pg) => pg.url().to_owned(),
            Fixture::SqlServer(ms) => ms.url().to_owned(),
        }
    }

    async fn open(&self) -> Store {
        Store::connect(&self.url(), &StoreOptions::default())
            .await
            .expect("connect")
    }

    /// Runs one statement straight on the database, bypassing the store: for states no store
    /// call makes (rows written by an older version, damaged rows). `{now_ms}` in `sql` is
    /// replaced by the dialect's clock, `{created_at}` by its creation-time column.
    fn raw(&self, sql: &str) {
        match self {
            Fixture::Sqlite(d) => {
                let sql = sql
                    .replace("{now_ms}", "CAST(unixepoch('subsec') * 1000 AS INTEGER)")
                    .replace("{created_at}", "created_at_ms");
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
                    .replace("{created_at}", "created_at_ms");
                pg.psql(&sql).expect("postgres statement");
            }
            Fixture::SqlServer(ms) => {
                ms.sql(
                    &sql.replace("{now_ms}", "SYSUTCDATETIME()")
                        .replace("{created_at}", "created_at"),
                )
                .expect("SQL Server statement");
            }
        }
    }

    async fn migrated(&self) -> Store {
        let s = self.open().await;
        s.migrate().await.expect("migrate");
        s
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fx = super::Fixture::Sqlite(super::temp_dir("storage"));
                super::$name(&fx).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let pg = super::TestPostgres::start().expect("start postgres");
                let fx = super::Fixture::Postgres(pg);
                super::$name(&fx).await;
            })*
        }
        mod sqlserver {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs a SQL Server: set CUTTLE_TEST_MSSQL_URL, run with --run-ignored"]
            async fn $name() {
                let ms = super::TestSqlServer::start().expect("SQL Server test database");
                let fx = super::Fixture::SqlServer(ms);
                super::$name(&fx).await;
            })*
        }
    };
}

conformance!(
    migrations_are_versioned_and_idempotent,
    concurrent_migrations_run_once,
    claims_fifo_up_to_max,
    draining_zero_cap_or_unknown_nodes_claim_nothing,
    concurrency_tags_never_overlap,
    completions_are_fenced_by_epoch,
    lost_nodes_fail_their_tasks_exactly_once,
    restarted_node_releases_its_previous_tasks,
    heartbeat_reregisters_deleted_node_and_keeps_operator_state,
    cancel_queued_executing_and_orphaned,
    settings_are_shared_and_initialised_once,
    api_keys_are_stored_once_with_scope_expiry_and_target,
    keys_stored_before_schema_5_keep_working_and_are_rehashed,
    api_keys_are_listed_and_revoked_with_their_audit_events,
    lists_tasks_newest_first_with_filter,
    concurrent_claimers_take_each_task_once,
    complete_and_claim_in_one_call,
    changes_are_written_with_their_audit_events,
    targets_and_their_gateway_sessions,
    periodic_jobs_run_once_per_period_and_health_is_recorded,
    unstarted_claims_go_back_to_the_queue_in_their_place,
    documents_are_versioned_named_once_ordered_and_audited,
    releases_are_numbered_once_per_project_and_keep_their_snapshot,
    deployments_are_queued_with_their_task_and_show_its_state,
);

fn reg(name: &str, cap: u32) -> NodeRegistration {
    NodeRegistration {
        name: name.into(),
        roles: "api,worker".into(),
        version: "test".into(),
        http_address: "127.0.0.1:1".into(),
        grpc_address: "127.0.0.1:2".into(),
        gateway_address: None,
        initial_task_cap: cap,
    }
}

fn sleep_task(tag: Option<&str>) -> NewTask {
    NewTask {
        kind: TaskKind::Sleep { duration_ms: 0 },
        description: "t".into(),
        concurrency_tag: tag.map(str::to_owned),
    }
}

async fn enqueue_n(s: &Store, n: usize) -> Vec<TaskId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(s.enqueue(&sleep_task(None), None).await.unwrap().id);
    }
    ids
}

fn done(id: TaskId, epoch: i64) -> Completion {
    Completion {
        id,
        epoch,
        state: TaskState::Success,
        error: None,
    }
}

const LONG: Duration = Duration::from_secs(3600);

async fn migrations_are_versioned_and_idempotent(fx: &Fixture) {
    let s = fx.open().await;
    assert_eq!(s.schema_version().await.unwrap(), 0);
    assert!(s.check_schema().await.is_err());
    let first = s.migrate().await.unwrap();
    assert!(first.applied_any());
    assert_eq!((first.from, first.to), (0, SCHEMA_VERSION));
    let second = s.migrate().await.unwrap();
    assert!(!second.applied_any());
    assert_eq!(s.schema_version().await.unwrap(), SCHEMA_VERSION);
    s.check_schema().await.unwrap();
}

async fn concurrent_migrations_run_once(fx: &Fixture) {
    let stores = [fx.open().await, fx.open().await, fx.open().await];
    let runs = stores.iter().map(|s| {
        let s = s.clone();
        tokio::spawn(async move { s.migrate().await.unwrap() })
    });
    let mut applied = 0;
    for r in runs.collect::<Vec<_>>() {
        if r.await.unwrap().applied_any() {
            applied += 1;
        }
    }
    assert_eq!(applied, 1, "exactly one store creates the schema");
    for s in &stores {
        s.check_schema().await.unwrap();
    }
}

async fn claims_fifo_up_to_max(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("n1", 5)).await.unwrap();
    let ids = enqueue_n(&s, 5).await;
    let first = s.claim("n1", 2).await.unwrap();
    assert_eq!(first.iter().map(|c| c.id).collect::<Vec<_>>(), ids[..2]);
    assert!(first.iter().all(|c| c.epoch == 1 && c.kind == "Sleep"));
    let rest = s.claim("n1", 10).await.unwrap();
    assert_eq!(rest.iter().map(|c| c.id).collect::<Vec<_>>(), ids[2..]);
    assert!(s.claim("n1", 10).await.unwrap().is_empty());
    let t = s.get_task(ids[0]).await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Executing);
    assert_eq!(t.node.as_deref(), Some("n1"));
    assert!(t.started_at.is_some());
    let node = s.get_node("n1", LONG).await.unwrap().unwrap();
    assert_eq!(node.running_tasks, 5);
}

async fn draining_zero_cap_or_unknown_nodes_claim_nothing(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("drainer", 5)).await.unwrap();
    s.register_node(&reg("zero", 0)).await.unwrap();
    enqueue_n(&s, 3).await;
    let drain = NodePatch {
        task_cap: None,
        draining: Some(true),
    };
    assert!(s.patch_node("drainer", &drain, None).await.unwrap());
    assert!(s.claim("drainer", 5).await.unwrap().is_empty());
    assert!(s.claim("zero", 5).await.unwrap().is_empty());
    assert!(s.claim("nobody", 5).await.unwrap().is_empty());
    let undrain = NodePatch {
        task_cap: None,
        draining: Some(false),
    };
    s.patch_node("drainer", &undrain, None).await.unwrap();
    assert_eq!(s.claim("drainer", 5).await.unwrap().len(), 3);
}

async fn concurrency_tags_never_overlap(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("n1", 10)).await.unwrap();
    s.register_node(&reg("n2", 10)).await.unwrap();
    let a = s.enqueue(&sleep_task(Some("p/e")), None).await.unwrap().id;
    let b = s.enqueue(&sleep_task(Some("p/e")), None).await.unwrap().id;
    let c = s.enqueue(&sleep_task(None), None).await.unwrap().id;
    let d = s
        .enqueue(&sleep_task(Some("other")), None)
        .await
        .unwrap()
        .id;
    let got: Vec<TaskId> = s
        .claim("n1", 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        got,
        vec![a, c, d],
        "b waits for a; untagged and other tags are not blocked"
    );
    assert!(
        s.claim("n2", 10).await.unwrap().is_empty(),
        "tag p/e is executing on n1"
    );
    let a_epoch = s.get_task(a).await.unwrap().unwrap().claim_epoch;
    s.complete("n1", &[done(a, a_epoch)]).await.unwrap();
    let got: Vec<TaskId> = s
        .claim("n2", 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(got, vec![b]);
}

async fn completions_are_fenced_by_epoch(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("n1", 5)).await.unwrap();
    let id = enqueue_n(&s, 1).await[0];
    let c = s.claim("n1", 1).await.unwrap().remove(0);
    assert!(s
        .complete("n1", &[done(id, c.epoch + 1)])
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .complete("n2", &[done(id, c.epoch)])
        .await
        .unwrap()
        .is_empty());
    let fail = Completion {
        id,
        epoch: c.epoch,
        state: TaskState::Failed,
        error: Some("boom".into()),
    };
    assert_eq!(s.complete("n1", &[fail]).await.unwrap(), vec![id]);
    let t = s.get_task(id).await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(t.error.as_deref(), Some("boom"));
    assert!(t.completed_at.is_some());
    // A second report of the same outcome is refused: the task is no longer executing.
    assert!(s
        .complete("n1", &[done(id, c.epoch)])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.get_task(id).await.unwrap().unwrap().state,
        TaskState::Failed
    );
}

async fn lost_nodes_fail_their_tasks_exactly_once(fx: &Fixture) {
    let s = fx.migrated().await;
    let other = fx.open().await;
    s.register_node(&reg("lost", 5)).await.unwrap();
    let ids = enqueue_n(&s, 2).await;
    let claimed = s.claim("lost", 5).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // Nobody is lost while heartbeats are fresh.
    assert!(s.handle_lost_nodes(LONG).await.unwrap().is_empty());
    // Two schedulers race: exactly one handles the node.
    let (a, b) = tokio::join!(
        s.handle_lost_nodes(Duration::ZERO),
        other.handle_lost_nodes(Duration::ZERO)
    );
    let mut all = a.unwrap();
    all.extend(b.unwrap());
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].name, "lost");
    assert_eq!(all[0].failed.len(), 2);
    assert!(all[0].requeued.is_empty());
    for id in &ids {
        let t = s.get_task(*id).await.unwrap().unwrap();
        assert_eq!(t.state, TaskState::Failed);
        assert!(
            t.error.as_deref().unwrap().contains("node lost was lost"),
            "{:?}",
            t.error
        );
    }
    // The lost node comes back: its late completions are refused.
    s.heartbeat(&reg("lost", 5), true).await.unwrap();
    let late: Vec<Completion> = claimed.iter().map(|c| done(c.id, c.epoch)).collect();
    assert!(s.complete("lost", &late).await.unwrap().is_empty());
    assert!(s.owned_tasks("lost").await.unwrap().is_empty());
    // Handled once: a second pass finds nothing new until the node goes silent again.
    assert!(s.handle_lost_nodes(LONG).await.unwrap().is_empty());
}

async fn restarted_node_releases_its_previous_tasks(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("r", 5)).await.unwrap();
    s.register_node(&reg("other", 5)).await.unwrap();
    let ids = enqueue_n(&s, 3).await;
    let mine = s.claim("r", 2).await.unwrap();
    let theirs = s.claim("other", 5).await.unwrap();
    assert_eq!((mine.len(), theirs.len()), (2, 1));
    s.cancel(mine[1].id, LONG, None).await.unwrap();
    // The process of node r ends and starts again, well within the offline timeout.
    s.register_node(&reg("r", 5)).await.unwrap();
    let released = s.release_own_tasks("r").await.unwrap();
    let mut failed: Vec<TaskId> = released.failed.iter().map(|e| e.task).collect();
    failed.sort_by_key(|id| id.0);
    assert!(released.failed.iter().all(|e| e.epoch == 1), "{released:?}");
    assert_eq!(failed, vec![ids[0], ids[1]], "{released:?}");
    let first = s.get_task(mine[0].id).await.unwrap().unwrap();
    assert_eq!(first.state, TaskState::Failed);
    let error = first.error.unwrap();
    assert!(error.contains("node r restarted"), "{error}");
    let cancelled = s.get_task(mine[1].id).await.unwrap().unwrap();
    assert_eq!(cancelled.state, TaskState::Canceled);
    // Another node's task is untouched, and the old process's outcomes are refused.
    let t = s.get_task(theirs[0].id).await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Executing);
    let late: Vec<Completion> = mine.iter().map(|c| done(c.id, c.epoch)).collect();
    assert!(s.complete("r", &late).await.unwrap().is_empty());
    // Nothing left to release on a second start.
    let again = s.release_own_tasks("r").await.unwrap();
    assert!(again.failed.is_empty() && again.requeued.is_empty());
}

async fn unstarted_claims_go_back_to_the_queue_in_their_place(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("u", 5)).await.unwrap();
    s.register_node(&reg("other", 5)).await.unwrap();
    let ids = enqueue_n(&s, 4).await;
    // Node u's claim commits but its answer is lost; then a cancel arrives for one of them.
    let lost = s.claim("u", 2).await.unwrap();
    let theirs = s.claim("other", 1).await.unwrap();
    assert_eq!((lost.len(), theirs.len()), (2, 1));
    s.cancel(lost[1].id, LONG, None).await.unwrap();
    let held = |c: &cuttle_storage::ClaimedTask| Execution {
        task: c.id,
        epoch: c.epoch,
    };
    let mut executions: Vec<Execution> = lost.iter().map(held).collect();
    // Another node's claim, and a stale epoch, are not this node's to give back.
    executions.push(held(&theirs[0]));
    executions.push(Execution {
        task: lost[0].id,
        epoch: lost[0].epoch + 7,
    });
    let mut back = s.requeue_unstarted("u", &executions).await.unwrap();
    back.sort_by_key(|id| id.0);
    assert_eq!(back, vec![lost[0].id, lost[1].id]);
    let requeued = s.get_task(lost[0].id).await.unwrap().unwrap();
    assert_eq!(requeued.state, TaskState::Queued);
    assert_eq!(requeued.node, None);
    assert_eq!(requeued.started_at, None);
    assert!(requeued.error.unwrap().contains("never received its claim"));
    let cancelled = s.get_task(lost[1].id).await.unwrap().unwrap();
    assert_eq!(cancelled.state, TaskState::Canceled);
    assert!(cancelled.completed_at.is_some());
    let t = s.get_task(theirs[0].id).await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Executing);
    // Still first in line: the next claim takes it again (ahead of the younger ids[3]), under a
    // new epoch that fences anything the lost claim might still say.
    let again = s.claim("other", 1).await.unwrap();
    assert_eq!(again[0].id, ids[0]);
    assert_eq!(again[0].epoch, lost[0].epoch + 1);
    assert!(s
        .complete("u", &[done(lost[0].id, lost[0].epoch)])
        .await
        .unwrap()
        .is_empty());
    // Nothing more to give back.
    assert!(s
        .requeue_unstarted("u", &executions)
        .await
        .unwrap()
        .is_empty());
}

async fn heartbeat_reregisters_deleted_node_and_keeps_operator_state(fx: &Fixture) {
    let s = fx.migrated().await;
    let st = s.register_node(&reg("n1", 3)).await.unwrap();
    assert_eq!((st.task_cap, st.draining), (3, false));
    let patch = NodePatch {
        task_cap: Some(7),
        draining: Some(true),
    };
    assert!(s.patch_node("n1", &patch, None).await.unwrap());
    let st = s.heartbeat(&reg("n1", 3), false).await.unwrap();
    assert_eq!(
        (st.task_cap, st.draining),
        (7, true),
        "heartbeat reports operator changes"
    );
    let node = s.get_node("n1", LONG).await.unwrap().unwrap();
    assert!(
        !node.storage_ok,
        "the heartbeat records shared-store health"
    );
    // Restart: registration keeps the operator's settings.
    let st = s.register_node(&reg("n1", 3)).await.unwrap();
    assert_eq!((st.task_cap, st.draining), (7, true));
    assert!(s.delete_node("n1", None).await.unwrap());
    assert!(s.get_node("n1", LONG).await.unwrap().is_none());
    assert!(!s.delete_node("n1", None).await.unwrap());
    let st = s.heartbeat(&reg("n1", 3), true).await.unwrap();
    assert_eq!((st.task_cap, st.draining), (3, false));
    let node = s.get_node("n1", LONG).await.unwrap().unwrap();
    assert!(node.online);
    assert_eq!(node.roles, vec!["api", "worker"]);
    assert!(!s.patch_node("ghost", &patch, None).await.unwrap());
    let listed = s.list_nodes(LONG).await.unwrap();
    assert_eq!(listed.len(), 1);
}

async fn cancel_queued_executing_and_orphaned(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("n1", 5)).await.unwrap();
    let ids = enqueue_n(&s, 3).await;
    assert!(s
        .cancel(TaskId(999_999), LONG, None)
        .await
        .unwrap()
        .is_none());
    // Claim the first two; the third stays queued.
    let claimed = s.claim("n1", 2).await.unwrap();
    let t = s.cancel(ids[2], LONG, None).await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Canceled);
    assert!(t.completed_at.is_some());
    let t = s.cancel(ids[0], LONG, None).await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Cancelling);
    let owned = s.owned_tasks("n1").await.unwrap();
    assert!(owned
        .iter()
        .any(|o| o.id == ids[0] && o.state == TaskState::Cancelling));
    // The node stops it and reports Canceled.
    let c = Completion {
        id: ids[0],
        epoch: claimed[0].epoch,
        state: TaskState::Canceled,
        error: Some("canceled".into()),
    };
    assert_eq!(s.complete("n1", &[c]).await.unwrap(), vec![ids[0]]);
    // With the node considered offline, a cancel is final at once.
    let t = s
        .cancel(ids[1], Duration::ZERO, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.state, TaskState::Canceled);
    assert!(t.error.unwrap().contains("offline"));
    // Cancelling a finished task changes nothing.
    let t = s.cancel(ids[1], LONG, None).await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Canceled);
}

async fn settings_are_shared_and_initialised_once(fx: &Fixture) {
    let s = fx.migrated().await;
    let other = fx.open().await;
    assert_eq!(s.get_setting("k").await.unwrap(), None);
    let (a, b) = tokio::join!(
        s.init_setting("k", "from-a"),
        other.init_setting("k", "from-b")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "racing initialisers agree");
    s.set_setting("k", "changed").await.unwrap();
    assert_eq!(
        other.get_setting("k").await.unwrap().as_deref(),
        Some("changed")
    );
    // Several settings replaced together, each only if unchanged since read: all or none.
    s.init_setting("a", "a1").await.unwrap();
    let change = |k: &str, old: &str, new: &str| (k.to_owned(), old.to_owned(), new.to_owned());
    assert!(s
        .replace_settings(&[change("a", "a1", "a2"), change("k", "changed", "k2")])
        .await
        .unwrap());
    assert!(
        !s.replace_settings(&[change("a", "a2", "a3"), change("k", "stale", "k3")])
            .await
            .unwrap(),
        "one stale value: nothing changes"
    );
    assert_eq!(
        other.get_setting("a").await.unwrap().as_deref(),
        Some("a2"),
        "rolled back"
    );
    assert_eq!(other.get_setting("k").await.unwrap().as_deref(), Some("k2"));
}

fn new_key(name: &str, hash: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        scope: Scope::Operator,
        prefix: "API-abcd".into(),
        hash: hash.into(),
        expires_in_secs: None,
        target_name: None,
    }
}

async fn api_keys_are_stored_once_with_scope_expiry_and_target(fx: &Fixture) {
    let s = fx.migrated().await;
    assert_eq!(s.api_key_count().await.unwrap(), 0);
    let created = |id: &i64| {
        event(
            "api_key.create",
            format!("ApiKeys-{id}"),
            serde_json::json!({}),
        )
    };
    let first = s
        .insert_api_key(&new_key("ops", "hash1"), Some(Box::new(created)))
        .await
        .unwrap()
        .expect("stored");
    let again = s
        .insert_api_key(&new_key("ops-again", "hash1"), Some(Box::new(created)))
        .await
        .unwrap();
    assert_eq!(again, None, "a hash already stored is not stored twice");
    assert_eq!(s.api_key_count().await.unwrap(), 1);
    let creates: Vec<_> = s
        .list_events(10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "api_key.create")
        .map(|e| e.target)
        .collect();
    assert_eq!(
        creates,
        [format!("ApiKeys-{first}")],
        "one event, naming the new key"
    );

    let found = s
        .find_api_key("hash1", "no-legacy")
        .await
        .unwrap()
        .expect("found");
    assert_eq!(found.key.id, first);
    assert_eq!(
        (found.key.name.as_str(), found.key.scope),
        ("ops", Scope::Operator)
    );
    assert_eq!(found.key.prefix, "API-abcd");
    assert!(!found.expired && !found.key.legacy_hash && found.key.expires_at.is_none());
    assert_eq!(s.find_api_key("nope", "nope").await.unwrap(), None);

    let mut expiring = new_key("ci", "hash-ci");
    expiring.scope = Scope::Deployer;
    expiring.expires_in_secs = Some(3600);
    s.insert_api_key(&expiring, None).await.unwrap().unwrap();
    let mut expired = new_key("old", "hash-old");
    expired.expires_in_secs = Some(0);
    s.insert_api_key(&expired, None).await.unwrap().unwrap();
    let mut agent = new_key("web-01 registration", "hash-agent");
    agent.scope = Scope::RegisterTarget;
    agent.target_name = Some("web-01".into());
    s.insert_api_key(&agent, None).await.unwrap().unwrap();

    let ci = s.find_api_key("hash-ci", "x").await.unwrap().unwrap();
    assert!(!ci.expired);
    let left = ci.key.expires_at.unwrap() - ci.key.created_at;
    assert!(
        (3_599_000..=3_601_000).contains(&left),
        "expires an hour after creation: {left}"
    );
    assert!(
        s.find_api_key("hash-old", "x")
            .await
            .unwrap()
            .unwrap()
            .expired
    );
    let agent = s
        .find_api_key("hash-agent", "x")
        .await
        .unwrap()
        .unwrap()
        .key;
    assert_eq!(agent.scope, Scope::RegisterTarget);
    assert_eq!(agent.target_name.as_deref(), Some("web-01"));
    let names: Vec<String> = s
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(
        names,
        ["ops", "ci", "old", "web-01 registration"],
        "oldest first"
    );
}

/// A key stored before schema 5 (bare SHA-256, no scope) still works as the admin key it was,
/// and is re-hashed under HMAC once.
async fn keys_stored_before_schema_5_keep_working_and_are_rehashed(fx: &Fixture) {
    let s = fx.migrated().await;
    fx.raw("INSERT INTO api_keys (name, key_hash, {created_at}) VALUES ('legacy', 'sha-of-key', {now_ms})");
    let found = s
        .find_api_key("hmac-of-key", "sha-of-key")
        .await
        .unwrap()
        .expect("found");
    assert!(found.key.legacy_hash && !found.expired);
    assert_eq!(
        (found.key.scope, found.key.prefix.as_str()),
        (Scope::Admin, "")
    );
    s.upgrade_api_key_hash(found.key.id, "hmac-of-key")
        .await
        .unwrap();
    let again = s
        .find_api_key("hmac-of-key", "sha-of-key")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.key.id, found.key.id);
    assert!(!again.key.legacy_hash, "stored as HMAC now");
    assert_eq!(
        s.find_api_key("x", "sha-of-key").await.unwrap(),
        None,
        "the SHA-256 is gone"
    );
    s.upgrade_api_key_hash(found.key.id, "other").await.unwrap();
    assert!(
        s.find_api_key("hmac-of-key", "x").await.unwrap().is_some(),
        "upgraded once: a second upgrade changes nothing"
    );
    // A row this binary cannot read is an error, never a guess.
    fx.raw("UPDATE api_keys SET scope = 'root'");
    let err = s.list_api_keys().await.unwrap_err().to_string();
    assert!(err.contains("unknown scope"), "{err}");
    assert!(s.find_api_key("hmac-of-key", "x").await.is_err());
}

async fn api_keys_are_listed_and_revoked_with_their_audit_events(fx: &Fixture) {
    let s = fx.migrated().await;
    s.insert_api_key(&new_key("ci", "hash-ci"), None)
        .await
        .unwrap();
    s.insert_api_key(&new_key("ops", "hash-ops"), None)
        .await
        .unwrap();
    let keys = s.list_api_keys().await.unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["ci", "ops"], "oldest first");
    assert!(
        keys.iter().all(|k| k.created_at > 1_700_000_000_000),
        "{keys:?}"
    );
    let ci = keys[0].id;
    let revoke = |id: i64| {
        audit_as(event(
            "api_key.revoke",
            format!("ApiKeys-{id}"),
            serde_json::json!({}),
        ))
    };
    assert!(s.delete_api_key(ci, Some(revoke(ci))).await.unwrap());
    assert_eq!(
        s.find_api_key("hash-ci", "x").await.unwrap(),
        None,
        "revoked"
    );
    assert_eq!(
        s.find_api_key("hash-ops", "x")
            .await
            .unwrap()
            .unwrap()
            .key
            .name,
        "ops"
    );
    assert!(
        !s.delete_api_key(ci, Some(revoke(ci))).await.unwrap(),
        "already gone"
    );
    let revokes = s
        .list_events(10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "api_key.revoke")
        .count();
    assert_eq!(revokes, 1, "an event only for the revoke that happened");
    assert_eq!(s.list_api_keys().await.unwrap().len(), 1);
}

async fn lists_tasks_newest_first_with_filter(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("n1", 1)).await.unwrap();
    let ids = enqueue_n(&s, 4).await;
    s.claim("n1", 1).await.unwrap();
    let all: Vec<TaskId> = s
        .list_tasks(None, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(all, ids.iter().rev().copied().collect::<Vec<_>>());
    let queued = s
        .list_tasks(Some(TaskState::Queued), None, 2)
        .await
        .unwrap();
    assert_eq!(
        queued.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[3], ids[2]]
    );
    let executing = s
        .list_tasks(Some(TaskState::Executing), None, 10)
        .await
        .unwrap();
    assert_eq!(executing.len(), 1);
    assert_eq!(executing[0].kind, "Sleep");
    assert_eq!(
        executing[0].arguments,
        serde_json::json!({"duration_ms": 0})
    );
}

async fn concurrent_claimers_take_each_task_once(fx: &Fixture) {
    let s = fx.migrated().await;
    const TASKS: usize = 300;
    const CLAIMERS: usize = 4;
    for i in 0..CLAIMERS {
        s.register_node(&reg(&format!("c{i}"), 8)).await.unwrap();
    }
    let ids: HashSet<TaskId> = enqueue_n(&s, TASKS).await.into_iter().collect();
    let mut handles = Vec::new();
    for i in 0..CLAIMERS {
        let store = fx.open().await;
        handles.push(tokio::spawn(async move {
            let node = format!("c{i}");
            let mut mine = Vec::new();
            loop {
                let got = store.claim(&node, 8).await.unwrap();
                if got.is_empty() {
                    break;
                }
                let done: Vec<Completion> = got.iter().map(|c| done(c.id, c.epoch)).collect();
                let accepted = store.complete(&node, &done).await.unwrap();
                assert_eq!(accepted.len(), done.len());
                mine.extend(got.into_iter().map(|c| c.id));
            }
            mine
        }));
    }
    let mut seen = Vec::new();
    for h in handles {
        seen.extend(h.await.unwrap());
    }
    let unique: HashSet<TaskId> = seen.iter().copied().collect();
    assert_eq!(seen.len(), TASKS, "every task claimed exactly once");
    assert_eq!(unique, ids);
    let left = s
        .list_tasks(Some(TaskState::Success), None, 1000)
        .await
        .unwrap();
    assert_eq!(left.len(), TASKS);
}

async fn complete_and_claim_in_one_call(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("n1", 2)).await.unwrap();
    let a = s.enqueue(&sleep_task(Some("tag")), None).await.unwrap().id;
    let b = s.enqueue(&sleep_task(Some("tag")), None).await.unwrap().id;
    let ids = enqueue_n(&s, 3).await;
    let first = s.claim("n1", 2).await.unwrap();
    assert_eq!(
        first.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![a, ids[0]]
    );
    let done: Vec<Completion> = first.iter().map(|c| done(c.id, c.epoch)).collect();
    let (accepted, claimed) = s.complete_and_claim("n1", &done, 2).await.unwrap();
    assert_eq!(accepted.len(), 2);
    let mut got: Vec<TaskId> = claimed.iter().map(|c| c.id).collect();
    // `b` waited for `a`; once `a` is done it is claimable now or on the next call.
    if !got.contains(&b) {
        assert_eq!(got, vec![ids[1], ids[2]]);
        let more = s.complete_and_claim("n1", &[], 1).await.unwrap().1;
        got.extend(more.iter().map(|c| c.id));
        assert!(got.contains(&b), "{got:?}");
    }
    assert!(got.contains(&b));
    for id in [a, ids[0]] {
        assert_eq!(
            s.get_task(id).await.unwrap().unwrap().state,
            TaskState::Success
        );
    }
    // Fenced completions are refused while the claim still happens.
    let stale = Completion {
        id: ids[0],
        epoch: 99,
        state: TaskState::Failed,
        error: None,
    };
    let (accepted, _) = s.complete_and_claim("n1", &[stale], 5).await.unwrap();
    assert!(accepted.is_empty());
}

fn event(action: &str, target: impl ToString, details: serde_json::Value) -> NewEvent {
    NewEvent {
        actor: "admin".into(),
        action: action.into(),
        target: target.to_string(),
        client_address: "203.0.113.7".into(),
        details,
    }
}

/// An operator's change and its audit event are written together: every change that happened
/// has its event, built from what the change produced; one that did not happen (no such row, a
/// conflict) has none. Listed newest first.
async fn changes_are_written_with_their_audit_events(fx: &Fixture) {
    let s = fx.migrated().await;
    assert!(s.list_events(10).await.unwrap().is_empty());
    let created: Audit<TaskRecord> =
        Box::new(|t| event("task.create", t.id, serde_json::json!({"kind": t.kind})));
    let task = s.enqueue(&sleep_task(None), Some(created)).await.unwrap();
    s.register_node(&reg("n1", 1)).await.unwrap();
    let patch = NodePatch {
        task_cap: Some(3),
        draining: None,
    };
    let details = serde_json::json!({"task_cap": 3});
    let update = |node: &str| audit_as(event("node.update", node, details.clone()));
    assert!(s
        .patch_node("n1", &patch, Some(update("n1")))
        .await
        .unwrap());
    assert!(!s
        .patch_node("ghost", &patch, Some(update("ghost")))
        .await
        .unwrap());
    let cancelled: Audit<TaskRecord> = Box::new(|t| {
        event(
            "task.cancel",
            t.id,
            serde_json::json!({"state": t.state.as_str()}),
        )
    });
    s.cancel(task.id, LONG, Some(cancelled))
        .await
        .unwrap()
        .unwrap();
    let registered =
        || -> Audit<TargetId> { Box::new(|id| event("target.create", id, serde_json::json!({}))) };
    let web = s
        .create_target(&target("web-1", 'A'), Some(registered()))
        .await
        .unwrap();
    assert!(matches!(
        s.create_target(&target("web-1", 'B'), Some(registered()))
            .await,
        Err(cuttle_storage::Error::Conflict(_))
    ));
    let ghost = TargetId(web.0 + 1000);
    let deleted = audit_as(event("target.delete", ghost, serde_json::json!({})));
    assert!(!s.delete_target(ghost, Some(deleted)).await.unwrap());

    let events = s.list_events(10).await.unwrap();
    let written: Vec<_> = events
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    let (task_id, web_id) = (task.id.to_string(), web.to_string());
    assert_eq!(
        written,
        [
            ("target.create", web_id.as_str()),
            ("task.cancel", task_id.as_str()),
            ("node.update", "n1"),
            ("task.create", task_id.as_str()),
        ]
    );
    assert_eq!(events[1].details, serde_json::json!({"state": "Canceled"}));
    assert_eq!(events[3].details, serde_json::json!({"kind": "Sleep"}));
    assert_eq!(events[0].client_address, "203.0.113.7");
    assert!(events
        .windows(2)
        .all(|w| w[0].occurred_at >= w[1].occurred_at));
    assert_eq!(s.list_events(2).await.unwrap(), events[..2]);
}

fn target(name: &str, thumb_digit: char) -> NewTarget {
    NewTarget {
        name: name.into(),
        environments: vec!["Production".into()],
        roles: vec!["web".into()],
        comms: Comms::Polling,
        thumbprint: thumb_digit.to_string().repeat(64),
        endpoint: None,
    }
}

async fn targets_and_their_gateway_sessions(fx: &Fixture) {
    let s = fx.migrated().await;
    let a = s.create_target(&target("web-1", 'A'), None).await.unwrap();
    let b = s.create_target(&target("web-2", 'B'), None).await.unwrap();
    assert_ne!(a, b);
    // Names and thumbprints are unique.
    for dup in [target("web-1", 'C'), target("web-3", 'A')] {
        match s.create_target(&dup, None).await {
            Err(cuttle_storage::Error::Conflict(msg)) => assert!(msg.contains("already"), "{msg}"),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    let mut changed = target("web-1", 'A');
    changed.roles = vec!["api".into()];
    assert!(s.update_target(a, &changed, None).await.unwrap());
    assert!(matches!(
        s.update_target(a, &target("web-2", 'A'), None).await,
        Err(cuttle_storage::Error::Conflict(_))
    ));
    let t = s.get_target(a, LONG).await.unwrap().unwrap();
    assert_eq!(
        (t.name.as_str(), t.roles.clone()),
        ("web-1", vec!["api".to_owned()])
    );
    assert_eq!(t.health, cuttle_core::TargetHealth::Unknown);

    // Sessions count only while their node is online.
    s.register_node(&reg("g1", 1)).await.unwrap();
    s.register_node(&reg("g2", 1)).await.unwrap();
    s.open_session(a, "g1").await.unwrap();
    s.open_session(a, "g2").await.unwrap();
    s.open_session(a, "g2").await.unwrap(); // refreshed, not doubled
    s.open_session(b, "g1").await.unwrap();
    let t = s.get_target(a, LONG).await.unwrap().unwrap();
    assert_eq!(t.connected_nodes, vec!["g1", "g2"]);
    assert!(s
        .get_target(a, Duration::ZERO)
        .await
        .unwrap()
        .unwrap()
        .connected_nodes
        .is_empty());
    s.close_sessions(Some(a), "g2").await.unwrap();
    assert_eq!(
        s.get_target(a, LONG)
            .await
            .unwrap()
            .unwrap()
            .connected_nodes,
        vec!["g1"]
    );
    s.close_sessions(None, "g1").await.unwrap();
    let all = s.list_targets(None, LONG).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|t| t.connected_nodes.is_empty()), "{all:?}");

    s.open_session(b, "g2").await.unwrap();
    assert!(s.delete_target(b, None).await.unwrap());
    assert!(!s.delete_target(b, None).await.unwrap());
    assert!(s.get_target(b, LONG).await.unwrap().is_none());
    assert_eq!(s.list_targets(None, LONG).await.unwrap().len(), 1);
}

async fn periodic_jobs_run_once_per_period_and_health_is_recorded(fx: &Fixture) {
    let s = fx.migrated().await;
    let other = fx.open().await;
    let (a, b) = tokio::join!(s.claim_period("job", 5), other.claim_period("job", 5));
    assert!(
        a.unwrap() ^ b.unwrap(),
        "exactly one scheduler wins period 5"
    );
    assert!(!s.claim_period("job", 5).await.unwrap());
    assert!(
        !s.claim_period("job", 4).await.unwrap(),
        "never an earlier period"
    );
    assert!(other.claim_period("job", 6).await.unwrap());
    assert!(
        s.claim_period("another-job", 6).await.unwrap(),
        "jobs are independent"
    );

    let id = s.create_target(&target("db-1", 'D'), None).await.unwrap();
    s.set_target_health(id, cuttle_core::TargetHealth::Unavailable, "no session")
        .await
        .unwrap();
    let t = s.get_target(id, LONG).await.unwrap().unwrap();
    assert_eq!(t.health, cuttle_core::TargetHealth::Unavailable);
    assert_eq!(t.health_reason.as_deref(), Some("no session"));
    assert!(t.last_health_check.is_some());
}

async fn documents_are_versioned_named_once_ordered_and_audited(fx: &Fixture) {
    let s = fx.migrated().await;
    // Every cluster starts with the default space.
    let spaces = s.list_documents("", "Space").await.unwrap();
    assert_eq!(spaces.len(), 1);
    assert_eq!(spaces[0].name, "Default");
    let space = format!("Spaces-{}", spaces[0].id);
    fn write<'a>(space: &'a str, name: &'a str, body: &'a serde_json::Value) -> DocumentWrite<'a> {
        DocumentWrite {
            space,
            kind: "Environment",
            name,
            body,
        }
    }
    let made = |d: &cuttle_storage::Document| {
        event(
            "environment.create",
            d.id,
            serde_json::json!({"name": d.name}),
        )
    };
    let body = serde_json::json!({"description": "first"});
    let dev = s
        .create_document(&write(&space, "Development", &body), Some(Box::new(made)))
        .await
        .unwrap();
    assert_eq!(
        (dev.version, dev.position, dev.body.clone()),
        (1, 1, body.clone())
    );
    assert!(dev.created_at > 1_700_000_000_000 && dev.modified_at == dev.created_at);
    let test = s
        .create_document(&write(&space, "Test", &body), None)
        .await
        .unwrap();
    let prod = s
        .create_document(&write(&space, "Production", &body), None)
        .await
        .unwrap();
    assert_eq!(
        (test.position, prod.position),
        (2, 3),
        "each new one goes last"
    );
    // Names are unique per space and kind, whatever their case; other kinds and spaces may reuse them.
    let dup = s
        .create_document(&write(&space, "PRODUCTION", &body), None)
        .await
        .unwrap_err();
    assert!(matches!(dup, cuttle_storage::Error::Conflict(_)), "{dup}");
    assert!(dup.to_string().contains("PRODUCTION"), "{dup}");
    let other_kind = DocumentWrite {
        kind: "Lifecycle",
        ..write(&space, "Production", &body)
    };
    s.create_document(&other_kind, None).await.unwrap();
    let too_long = "x".repeat(201);
    assert!(matches!(
        s.create_document(&write(&space, &too_long, &body), None)
            .await
            .unwrap_err(),
        cuttle_storage::Error::Invalid(_)
    ));

    assert_eq!(
        s.find_document(&space, "Environment", "production")
            .await
            .unwrap()
            .unwrap()
            .id,
        prod.id
    );
    assert_eq!(
        s.get_document(&space, "Environment", test.id)
            .await
            .unwrap()
            .unwrap()
            .name,
        "Test"
    );
    assert_eq!(
        s.get_document(&space, "Lifecycle", test.id).await.unwrap(),
        None,
        "another kind"
    );
    assert_eq!(
        s.get_document("Spaces-999", "Environment", test.id)
            .await
            .unwrap(),
        None,
        "another space"
    );

    // Writes are checked against the version read.
    let changed = serde_json::json!({"description": "second"});
    let updated = |d: &cuttle_storage::Document| {
        event(
            "environment.update",
            d.id,
            serde_json::json!({"version": d.version}),
        )
    };
    match s
        .update_document(
            test.id,
            1,
            &write(&space, "QA", &changed),
            Some(Box::new(updated)),
        )
        .await
        .unwrap()
    {
        Written::Done(d) => {
            assert_eq!(
                (d.name.as_str(), d.version, d.body.clone()),
                ("QA", 2, changed.clone())
            );
            assert!(d.modified_at >= d.created_at);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.update_document(test.id, 1, &write(&space, "Stale", &body), None)
            .await
            .unwrap(),
        Written::Stale { current: 2 }
    );
    assert_eq!(
        s.update_document(999_999, 1, &write(&space, "X", &body), None)
            .await
            .unwrap(),
        Written::NotFound
    );
    assert!(
        matches!(
            s.update_document(test.id, 2, &write(&space, "development", &body), None)
                .await
                .unwrap_err(),
            cuttle_storage::Error::Conflict(_)
        ),
        "renaming onto another's name"
    );
    assert_eq!(
        s.get_document(&space, "Environment", test.id)
            .await
            .unwrap()
            .unwrap()
            .name,
        "QA",
        "unchanged"
    );

    // Reordered as a whole, or not at all.
    assert!(!s
        .reorder_documents(&space, "Environment", &[prod.id, dev.id], None)
        .await
        .unwrap());
    assert!(!s
        .reorder_documents(&space, "Environment", &[prod.id, dev.id, dev.id], None)
        .await
        .unwrap());
    assert!(!s
        .reorder_documents(&space, "Environment", &[prod.id, dev.id, 999_999], None)
        .await
        .unwrap());
    let reordered = audit_as(event(
        "environment.reorder",
        "Environments",
        serde_json::json!({}),
    ));
    assert!(s
        .reorder_documents(
            &space,
            "Environment",
            &[prod.id, dev.id, test.id],
            Some(reordered)
        )
        .await
        .unwrap());
    let names: Vec<String> = s
        .list_documents(&space, "Environment")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["Production", "Development", "QA"]);

    // Deleted at the version read.
    assert_eq!(
        s.delete_document(&space, "Environment", test.id, Some(1), None)
            .await
            .unwrap(),
        Written::Stale { current: 2 }
    );
    let deleted = audit_as(event("environment.delete", test.id, serde_json::json!({})));
    assert!(matches!(
        s.delete_document(&space, "Environment", test.id, Some(2), Some(deleted))
            .await
            .unwrap(),
        Written::Done(_)
    ));
    assert_eq!(
        s.delete_document(&space, "Environment", test.id, None, None)
            .await
            .unwrap(),
        Written::NotFound
    );
    let actions: Vec<String> = s
        .list_events(20)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for a in [
        "environment.create",
        "environment.update",
        "environment.reorder",
        "environment.delete",
    ] {
        assert_eq!(
            actions.iter().filter(|x| *x == a).count(),
            1,
            "{a}: {actions:?}"
        );
    }
    // A body that is not JSON is an error, never a guess.
    fx.raw("UPDATE documents SET body = 'not json' WHERE name = 'Production'");
    let err = s
        .list_documents(&space, "Environment")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not JSON"), "{err}");
}

async fn releases_are_numbered_once_per_project_and_keep_their_snapshot(fx: &Fixture) {
    let s = fx.migrated().await;
    let snapshot = serde_json::json!({"process": {"steps": [{"name": "Deploy"}]}, "variables": [{"name": "A", "ciphertext": "xyz"}]});
    let release = |version: &'static str, project: i64| NewRelease {
        space: "Spaces-1",
        project,
        version,
        notes: "first cut",
        snapshot: &snapshot,
        created_by: "ci (ApiKeys-2)",
    };
    let made = |r: &cuttle_storage::Release| {
        event(
            "release.create",
            format!("Releases-{}", r.id),
            serde_json::json!({"version": r.version}),
        )
    };
    let r1 = s
        .create_release(&release("1.0.0", 7), Some(Box::new(made)))
        .await
        .unwrap();
    assert_eq!(
        (r1.version.as_str(), r1.project, r1.snapshot.clone()),
        ("1.0.0", 7, snapshot.clone())
    );
    assert!(r1.created_at > 1_700_000_000_000);
    let r2 = s
        .create_release(&release("1.1.0-beta.1", 7), None)
        .await
        .unwrap();
    let other = s.create_release(&release("1.0.0", 8), None).await.unwrap();
    assert_ne!(other.id, r1.id, "another project may reuse a version");
    let dup = s
        .create_release(&release("1.1.0-BETA.1", 7), Some(Box::new(made)))
        .await
        .unwrap_err();
    assert!(matches!(dup, cuttle_storage::Error::Conflict(_)), "{dup}");
    assert!(dup.to_string().contains("1.1.0-BETA.1"), "{dup}");
    let listed: Vec<String> = s
        .list_releases(7)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(listed, ["1.0.0", "1.1.0-beta.1"]);
    assert_eq!(
        s.get_release("Spaces-1", r2.id)
            .await
            .unwrap()
            .unwrap()
            .notes,
        "first cut"
    );
    assert_eq!(
        s.get_release("Spaces-2", r2.id).await.unwrap(),
        None,
        "another space"
    );
    let creates = s
        .list_events(10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "release.create")
        .count();
    assert_eq!(
        creates, 1,
        "an event for the release made, none for the one refused"
    );
    fx.raw("UPDATE releases SET snapshot = 'nope' WHERE version = '1.0.0'");
    assert!(s
        .list_releases(7)
        .await
        .unwrap_err()
        .to_string()
        .contains("not JSON"));
}

async fn deployments_are_queued_with_their_task_and_show_its_state(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("n1", 2)).await.unwrap();
    let deployment = |release: i64, env: &'static str| NewDeployment {
        space: "Spaces-1",
        project: 5,
        release,
        environment: env,
        created_by: "ci (ApiKeys-2)",
    };
    let queued =
        |t: &cuttle_core::TaskRecord| event("deployment.create", t.id, serde_json::json!({}));
    let (t1, d1) = s
        .enqueue_deployment(
            &sleep_task(Some("Projects-5/Environments-1")),
            &deployment(9, "Environments-1"),
            Some(Box::new(queued)),
        )
        .await
        .unwrap();
    let (_, d2) = s
        .enqueue_deployment(&sleep_task(None), &deployment(9, "Environments-2"), None)
        .await
        .unwrap();
    let (_, d3) = s
        .enqueue_deployment(&sleep_task(None), &deployment(10, "Environments-1"), None)
        .await
        .unwrap();
    assert!(d1 < d2 && d2 < d3);
    let of_release: Vec<i64> = s
        .list_deployments(DeploymentFilter::Release(9))
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(of_release, [d2, d1], "newest first");
    let first = s.get_deployment("Spaces-1", d1).await.unwrap().unwrap();
    assert_eq!(
        (first.task, first.state, first.environment.as_str()),
        (t1.id, TaskState::Queued, "Environments-1")
    );
    assert_eq!(first.completed_at, None);
    assert_eq!(s.get_deployment("Spaces-2", d1).await.unwrap(), None);
    // Its state is its task's.
    let claimed = s.claim("n1", 1).await.unwrap();
    assert_eq!(claimed[0].id, t1.id);
    s.complete(
        "n1",
        &[Completion {
            id: t1.id,
            epoch: claimed[0].epoch,
            state: TaskState::Success,
            error: None,
        }],
    )
    .await
    .unwrap();
    let first = s.get_deployment("Spaces-1", d1).await.unwrap().unwrap();
    assert_eq!(first.state, TaskState::Success);
    assert!(first.completed_at.is_some());
    let space = |project, limit| DeploymentFilter::Space {
        space: "Spaces-1",
        project,
        limit,
    };
    assert_eq!(
        s.list_deployments(space(None, 2)).await.unwrap().len(),
        2,
        "limited"
    );
    assert_eq!(
        s.list_deployments(space(Some(5), 10)).await.unwrap().len(),
        3
    );
    assert!(s
        .list_deployments(space(Some(6), 10))
        .await
        .unwrap()
        .is_empty());
    let events = s.list_events(10).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == "deployment.create")
            .count(),
        1
    );
}
