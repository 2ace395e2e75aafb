//! Audit events written with their changes.

#[allow(unused_imports)]
use super::*;

/// An operator's change and its audit event are written together: every change that happened
/// has its event, built from what the change produced; one that did not happen (no such row, a
/// conflict) has none. Listed newest first.
pub(crate) async fn changes_are_written_with_their_audit_events(fx: &Fixture) {
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

/// What the audit archive reads and deletes: events in a time range, paged by sequence number,
/// and the oldest event's time.
pub(crate) async fn events_are_read_by_time_in_pages_and_deleted_by_range(fx: &Fixture) {
    let s = fx.migrated().await;
    assert_eq!(s.oldest_event_at().await.unwrap(), None);
    for _ in 0..3 {
        let created: Audit<TaskRecord> =
            Box::new(|t| event("task.create", t.id, serde_json::json!({"kind": t.kind})));
        s.enqueue(&sleep_task(None), Some(created)).await.unwrap();
    }
    let oldest = s.oldest_event_at().await.unwrap().expect("an oldest event");
    let day = 86_400_000;
    assert!(oldest > 1_700_000_000_000);
    let first = s
        .events_between(oldest - day, oldest + day, 0, 2)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert!(first[0].0 < first[1].0, "oldest first");
    assert_eq!(first[0].1.occurred_at, oldest);
    assert_eq!(first[0].1.details["kind"], "Sleep");
    let rest = s
        .events_between(oldest - day, oldest + day, first[1].0, 2)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert!(s
        .events_between(oldest + day, oldest + 2 * day, 0, 10)
        .await
        .unwrap()
        .is_empty());
    // The end is exclusive: nothing before the oldest.
    assert_eq!(
        s.delete_events_between(oldest - day, oldest).await.unwrap(),
        0
    );
    assert_eq!(
        s.delete_events_between(oldest - day, oldest + day)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        s.delete_events_between(oldest - day, oldest + day)
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.oldest_event_at().await.unwrap(), None);
}
