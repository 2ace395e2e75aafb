//! Targets and their gateway sessions.

#[allow(unused_imports)]
use super::*;

pub(crate) async fn targets_and_their_gateway_sessions(fx: &Fixture) {
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
