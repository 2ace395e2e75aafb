//! Configuration documents, releases and deployments.

#[allow(unused_imports)]
use super::*;

pub(crate) async fn documents_are_versioned_named_once_ordered_and_audited(fx: &Fixture) {
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

pub(crate) async fn releases_are_numbered_once_per_project_and_keep_their_snapshot(fx: &Fixture) {
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
    // Deleted (retention) once, with its event.
    let gone = audit_as(event(
        "release.delete",
        format!("Releases-{}", r2.id),
        serde_json::json!({}),
    ));
    assert!(
        s.delete_release("Spaces-2", r2.id, None)
            .await
            .is_ok_and(|d| !d),
        "another space"
    );
    assert!(s
        .delete_release("Spaces-1", r2.id, Some(gone))
        .await
        .unwrap());
    assert_eq!(s.get_release("Spaces-1", r2.id).await.unwrap(), None);
    assert!(!s.delete_release("Spaces-1", r2.id, None).await.unwrap());
    assert_eq!(
        s.list_events(10)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.action == "release.delete")
            .count(),
        1
    );
    fx.raw("UPDATE releases SET snapshot = 'nope' WHERE version = '1.0.0'");
    assert!(s
        .list_releases(7)
        .await
        .unwrap_err()
        .to_string()
        .contains("not JSON"));
}

pub(crate) async fn deployments_are_queued_with_their_task_and_show_its_state(fx: &Fixture) {
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
        before: None,
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
    // Paging: older than a given one.
    let older: Vec<i64> = s
        .list_deployments(DeploymentFilter::Space {
            space: "Spaces-1",
            project: None,
            before: Some(d3),
            limit: 10,
        })
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(older, [d2, d1]);
    // Every deployment of a project, past the first page of a thousand: the oldest one (of
    // an old release, perhaps still running) is not forgotten.
    for _ in 0..1000 {
        s.enqueue_deployment(&sleep_task(None), &deployment(11, "Environments-1"), None)
            .await
            .unwrap();
    }
    let all = s.all_deployments_of("Spaces-1", 5).await.unwrap();
    assert_eq!(all.len(), 1003);
    assert_eq!(
        all.last().map(|d| d.id),
        Some(d1),
        "the oldest is there too"
    );
    let events = s.list_events(10).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == "deployment.create")
            .count(),
        1
    );
}

/// A variable-key rotation re-seals a release's snapshot: written only if it is still the text
/// read, and it must stay JSON.
pub(crate) async fn release_snapshots_are_replaced_only_if_unchanged(fx: &Fixture) {
    let s = fx.migrated().await;
    let snapshot =
        serde_json::json!({"variables": [{"name": "A", "ciphertext": "old", "sensitive": true}]});
    let r = s
        .create_release(
            &NewRelease {
                space: "Spaces-1",
                project: 3,
                version: "1.0.0",
                notes: "",
                snapshot: &snapshot,
                created_by: "ci",
            },
            None,
        )
        .await
        .unwrap();
    let read = s.release_snapshots_after(0, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    let (id, text) = &read[0];
    assert_eq!(*id, r.id);
    let mut resealed = snapshot.clone();
    resealed["variables"][0]["ciphertext"] = "new".into();
    let new_text = resealed.to_string();
    assert!(s
        .replace_release_snapshot(r.id, text, &new_text)
        .await
        .unwrap());
    assert_eq!(
        s.get_release("Spaces-1", r.id)
            .await
            .unwrap()
            .unwrap()
            .snapshot,
        resealed
    );
    assert!(
        !s.replace_release_snapshot(r.id, text, "{}").await.unwrap(),
        "the text read is gone: nothing changes"
    );
    assert!(s
        .replace_release_snapshot(r.id, &new_text, "not json")
        .await
        .is_err());
    assert_eq!(
        s.release_snapshots_after(0, 10).await.unwrap()[0].1,
        new_text
    );
    assert!(s
        .release_snapshots_after(r.id, 10)
        .await
        .unwrap()
        .is_empty());
    // Paged by id, every project's (a deleted project's releases too).
    let more = |version: &'static str| NewRelease {
        space: "Spaces-1",
        project: 4,
        version,
        notes: "",
        snapshot: &snapshot,
        created_by: "ci",
    };
    let r2 = s.create_release(&more("1.0.0"), None).await.unwrap();
    let r3 = s.create_release(&more("2.0.0"), None).await.unwrap();
    let ids = |page: Vec<(i64, String)>| page.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.release_snapshots_after(0, 2).await.unwrap()),
        [r.id, r2.id]
    );
    assert_eq!(
        ids(s.release_snapshots_after(r2.id, 2).await.unwrap()),
        [r3.id]
    );
}
