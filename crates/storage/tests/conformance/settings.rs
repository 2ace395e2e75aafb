//! Settings and periodic-job claims.

#[allow(unused_imports)]
use super::*;

pub(crate) async fn settings_are_shared_and_initialised_once(fx: &Fixture) {
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

pub(crate) async fn periodic_jobs_run_once_per_period_and_health_is_recorded(fx: &Fixture) {
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
