//! The task queue: claims, completions, fencing, cancels, lost and restarted nodes.

#[allow(unused_imports)]
use super::*;

pub(crate) async fn claims_fifo_up_to_max(fx: &Fixture) {
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

/// A claim never takes a node past its task cap as stored at that moment, whatever the worker
/// asks for: a cap just lowered (or raised) applies at the next claim.
pub(crate) async fn claims_never_pass_the_task_cap_as_stored_now(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("n1", 3)).await.unwrap();
    enqueue_n(&s, 8).await;
    let first = s.claim("n1", 10).await.unwrap();
    assert_eq!(first.len(), 3, "the cap, not what was asked");
    let cap = |n: u32| NodePatch {
        task_cap: Some(n),
        draining: None,
    };
    assert!(s.patch_node("n1", &cap(1), None).await.unwrap());
    let one_done = [done(first[0].id, first[0].epoch)];
    let (accepted, claimed) = s.complete_and_claim("n1", &one_done, 10).await.unwrap();
    assert_eq!(
        (accepted.len(), claimed.len()),
        (1, 0),
        "two still run: over the new cap"
    );
    let rest: Vec<Completion> = first[1..].iter().map(|c| done(c.id, c.epoch)).collect();
    let (_, claimed) = s.complete_and_claim("n1", &rest, 10).await.unwrap();
    assert_eq!(
        claimed.len(),
        1,
        "the completions count: one under the cap of 1"
    );
    assert!(s.patch_node("n1", &cap(4), None).await.unwrap());
    assert_eq!(
        s.claim("n1", 10).await.unwrap().len(),
        3,
        "raised: up to 4 running"
    );
    assert!(s.claim("n1", 10).await.unwrap().is_empty());
}

pub(crate) async fn draining_zero_cap_or_unknown_nodes_claim_nothing(fx: &Fixture) {
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

pub(crate) async fn concurrency_tags_never_overlap(fx: &Fixture) {
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

pub(crate) async fn completions_are_fenced_by_epoch(fx: &Fixture) {
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

pub(crate) async fn lost_nodes_fail_their_tasks_exactly_once(fx: &Fixture) {
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

pub(crate) async fn restarted_node_releases_its_previous_tasks(fx: &Fixture) {
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

pub(crate) async fn unstarted_claims_go_back_to_the_queue_in_their_place(fx: &Fixture) {
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

pub(crate) async fn cancel_queued_executing_and_orphaned(fx: &Fixture) {
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

pub(crate) async fn lists_tasks_newest_first_with_filter(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("n1", 1)).await.unwrap();
    let ids = enqueue_n(&s, 4).await;
    s.claim("n1", 1).await.unwrap();
    let all: Vec<TaskId> = s
        .list_tasks(None, None, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(all, ids.iter().rev().copied().collect::<Vec<_>>());
    let queued = s
        .list_tasks(Some(TaskState::Queued), None, None, 2)
        .await
        .unwrap();
    assert_eq!(
        queued.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[3], ids[2]]
    );
    let executing = s
        .list_tasks(Some(TaskState::Executing), None, None, 10)
        .await
        .unwrap();
    assert_eq!(executing.len(), 1);
    assert_eq!(executing[0].kind, "Sleep");
    // By kind, whatever its case, with the state and paging.
    let reindex = s
        .enqueue(
            &NewTask {
                kind: TaskKind::PackageReindex,
                description: "s".into(),
                concurrency_tag: None,
            },
            None,
        )
        .await
        .unwrap();
    let by_kind = |kind: &'static str, state, before| {
        let s = &s;
        async move {
            s.list_tasks(state, Some(kind), before, 10)
                .await
                .unwrap()
                .iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(by_kind("packagereindex", None, None).await, [reindex.id]);
    assert_eq!(
        by_kind("SLEEP", Some(TaskState::Queued), None).await,
        [ids[3], ids[2], ids[1]]
    );
    assert_eq!(by_kind("Sleep", None, Some(ids[2])).await, [ids[1], ids[0]]);
    assert!(by_kind("Deploy", None, None).await.is_empty());
    assert_eq!(
        executing[0].arguments,
        serde_json::json!({"duration_ms": 0})
    );
}

pub(crate) async fn concurrent_claimers_take_each_task_once(fx: &Fixture) {
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
        .list_tasks(Some(TaskState::Success), None, None, 1000)
        .await
        .unwrap();
    assert_eq!(left.len(), TASKS);
}

pub(crate) async fn complete_and_claim_in_one_call(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("n1", 5)).await.unwrap();
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

/// "Kinds that are safe to repeat go back to the queue instead; deployments and scripts never
/// do": a lost node's retry-safe task is queued again in its place, its sleep is failed.
pub(crate) async fn lost_node_s_retry_safe_tasks_go_back_to_the_queue(fx: &Fixture) {
    let s = fx.migrated().await;
    s.register_node(&reg("lost", 5)).await.unwrap();
    let reindex = NewTask {
        kind: TaskKind::PackageReindex,
        description: "reindex".into(),
        concurrency_tag: None,
    };
    let safe = s.enqueue(&reindex, None).await.unwrap().id;
    let unsafe_one = s.enqueue(&sleep_task(None), None).await.unwrap().id;
    assert_eq!(s.claim("lost", 5).await.unwrap().len(), 2);
    let lost = s.handle_lost_nodes(Duration::ZERO).await.unwrap();
    assert_eq!(lost.len(), 1, "{lost:?}");
    let requeued: Vec<TaskId> = lost[0].requeued.iter().map(|e| e.task).collect();
    let failed: Vec<TaskId> = lost[0].failed.iter().map(|e| e.task).collect();
    assert_eq!((requeued, failed), (vec![safe], vec![unsafe_one]));
    let t = s.get_task(safe).await.unwrap().unwrap();
    assert_eq!((t.state, t.node), (TaskState::Queued, None));
    assert_eq!(
        s.get_task(unsafe_one).await.unwrap().unwrap().state,
        TaskState::Failed
    );
    // Queued again, it is claimed again (by a node that is alive), with a new epoch.
    s.register_node(&reg("alive", 5)).await.unwrap();
    let again = s.claim("alive", 5).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].epoch), (safe, 2));
}
