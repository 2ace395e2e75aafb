//! Node rows.

#[allow(unused_imports)]
use super::*;

pub(crate) async fn heartbeat_reregisters_deleted_node_and_keeps_operator_state(fx: &Fixture) {
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

/// One process holds a node's name: another is refused until the holder lets go or is taken
/// over as gone; a holder taken over learns it at its next heartbeat.
pub(crate) async fn a_node_name_is_held_by_one_process_at_a_time(fx: &Fixture) {
    let s = fx.migrated().await;
    let as_instance = |instance: &str, replaces: Option<&str>| NodeRegistration {
        instance: instance.into(),
        replaces: replaces.map(str::to_owned),
        ..reg("n1", 2)
    };
    let (a, b, c) = (
        as_instance("a", None),
        as_instance("b", None),
        as_instance("c", None),
    );
    s.register_node(&a).await.unwrap();
    let held = s.node_holder("n1").await.unwrap().unwrap();
    assert_eq!(held.instance.as_deref(), Some("a"));
    assert!(held.now_ms - held.last_seen_ms < 60_000, "{held:?}");
    assert!(s.node_holder("ghost").await.unwrap().is_none());
    assert!(matches!(
        s.register_node(&b).await,
        Err(Error::NodeNameHeld(_))
    ));
    assert!(matches!(
        s.heartbeat(&b, true).await,
        Err(Error::NodeNameHeld(_))
    ));
    s.register_node(&a)
        .await
        .expect("the holder registers again");
    s.heartbeat(&a, true).await.unwrap();
    // b found a gone (the caller's judgement) and takes over; a's next heartbeat is refused.
    s.register_node(&as_instance("b", Some("a"))).await.unwrap();
    assert!(matches!(
        s.heartbeat(&a, true).await,
        Err(Error::NodeNameHeld(_))
    ));
    s.heartbeat(&b, true).await.unwrap();
    // Letting go is only the holder's: a cannot free b's name; b can, and c takes it at once.
    s.release_node_name("n1", "a").await.unwrap();
    assert!(s.register_node(&c).await.is_err());
    s.release_node_name("n1", "b").await.unwrap();
    assert_eq!(
        s.node_holder("n1")
            .await
            .unwrap()
            .unwrap()
            .instance
            .as_deref(),
        Some(""),
        "released"
    );
    s.register_node(&c).await.unwrap();
    assert_eq!(
        s.node_holder("n1")
            .await
            .unwrap()
            .unwrap()
            .instance
            .as_deref(),
        Some("c")
    );
    // A deleted row is registered again by its holder's heartbeat, held by it.
    assert!(s.delete_node("n1", None).await.unwrap());
    s.heartbeat(&c, true).await.unwrap();
    assert_eq!(
        s.node_holder("n1")
            .await
            .unwrap()
            .unwrap()
            .instance
            .as_deref(),
        Some("c")
    );
}
