//! Web UI sessions.

#[allow(unused_imports)]
use super::*;

use cuttle_storage::{NewSession, SessionOf, MAX_SESSION_SECS};

pub(crate) async fn sessions_last_until_they_end_or_are_ended_and_are_audited(fx: &Fixture) {
    let s = fx.migrated().await;
    let key = NewSession {
        id_hash: "session-a".into(),
        of: SessionOf::Key("hmac-of-a-key".into()),
        lifetime_secs: 3600,
    };
    let user = NewSession {
        id_hash: "session-b".into(),
        of: SessionOf::User { id: 7, version: 3 },
        lifetime_secs: MAX_SESSION_SECS,
    };
    let signed_in = || -> cuttle_storage::Audit<()> {
        Box::new(|_| event("user.sign_in", "Users-7", serde_json::json!({})))
    };
    s.create_session(&key, None).await.unwrap();
    s.create_session(&user, Some(signed_in())).await.unwrap();
    let a = s.find_session("session-a").await.unwrap().expect("stored");
    assert_eq!(a.of, SessionOf::Key("hmac-of-a-key".into()));
    let left = a.expires_at - a.created_at;
    assert!((3_599_000..=3_601_000).contains(&left), "an hour: {left}");
    let b = s.find_session("session-b").await.unwrap().expect("stored");
    assert_eq!(b.of, SessionOf::User { id: 7, version: 3 });
    assert_eq!(s.find_session("nope").await.unwrap(), None);
    // Longer than the cap, or none at all: refused.
    for lifetime_secs in [0, MAX_SESSION_SECS + 1] {
        let e = s
            .create_session(
                &NewSession {
                    lifetime_secs,
                    ..key.clone()
                },
                None,
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("seconds"), "{e}");
    }
    // The same id twice: the second is refused, the first stays.
    assert!(s.create_session(&key, None).await.is_err());
    assert!(s.find_session("session-a").await.unwrap().is_some());

    // Signing out ends it on every node at once (they all read the one row).
    let signed_out: cuttle_storage::Audit<()> =
        Box::new(|_| event("user.sign_out", "Users-7", serde_json::json!({})));
    assert!(s.end_session("session-b", Some(signed_out)).await.unwrap());
    assert_eq!(s.find_session("session-b").await.unwrap(), None);
    assert!(!s.end_session("session-b", None).await.unwrap());
    let actions: Vec<String> = s
        .list_events(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .filter(|a| a.starts_with("user."))
        .collect();
    assert_eq!(actions.len(), 2, "{actions:?}");

    // A session past its end is gone, by the database's clock; a row naming nobody is an error.
    fx.raw("UPDATE ui_sessions SET {expires} WHERE id_hash = 'session-a'");
    assert_eq!(s.find_session("session-a").await.unwrap(), None);
    s.create_session(
        &NewSession {
            id_hash: "session-c".into(),
            ..key.clone()
        },
        None,
    )
    .await
    .unwrap();
    fx.raw("UPDATE ui_sessions SET key_hash = NULL WHERE id_hash = 'session-c'");
    assert!(s.find_session("session-c").await.is_err());
}
