//! Schema migrations.

#[allow(unused_imports)]
use super::*;

pub(crate) async fn migrations_are_versioned_and_idempotent(fx: &Fixture) {
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

pub(crate) async fn concurrent_migrations_run_once(fx: &Fixture) {
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
