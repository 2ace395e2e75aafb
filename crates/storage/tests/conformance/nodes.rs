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
