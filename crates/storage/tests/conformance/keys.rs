//! API keys.

#[allow(unused_imports)]
use super::*;

pub(crate) async fn api_keys_are_stored_once_with_scope_expiry_and_target(fx: &Fixture) {
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
        .find_api_key("hash1", &["no-legacy"])
        .await
        .unwrap()
        .expect("found");
    assert_eq!(found.key.id, first);
    assert_eq!(
        (found.key.name.as_str(), found.key.scope),
        ("ops", Scope::Operator)
    );
    assert_eq!(found.key.prefix, "API-abcd");
    assert!(
        !found.expired
            && !(found.key.hashed_with == HashedWith::Legacy)
            && found.key.expires_at.is_none()
    );
    assert_eq!(s.find_api_key("nope", &["nope"]).await.unwrap(), None);

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
    agent.grant = Some(cuttle_core::TargetGrant {
        environments: vec!["Test".into(), "Production".into()],
        roles: vec!["web".into()],
        reusable: true,
    });
    s.insert_api_key(&agent, None).await.unwrap().unwrap();

    let ci = s.find_api_key("hash-ci", &["x"]).await.unwrap().unwrap();
    assert!(!ci.expired);
    let left = ci.key.expires_at.unwrap() - ci.key.created_at;
    assert!(
        (3_599_000..=3_601_000).contains(&left),
        "expires an hour after creation: {left}"
    );
    assert!(
        s.find_api_key("hash-old", &["x"])
            .await
            .unwrap()
            .unwrap()
            .expired
    );
    let agent = s
        .find_api_key("hash-agent", &["x"])
        .await
        .unwrap()
        .unwrap()
        .key;
    assert_eq!(agent.scope, Scope::RegisterTarget);
    assert_eq!(agent.target_name.as_deref(), Some("web-01"));
    let grant = agent.grant.expect("the grant is kept with the key");
    assert_eq!(
        (grant.environments, grant.roles, grant.reusable),
        (
            vec!["Test".to_owned(), "Production".to_owned()],
            vec!["web".to_owned()],
            true
        )
    );
    assert!(ci.key.grant.is_none(), "other keys grant nothing");
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
    // A grant this binary cannot read is an error, never "grants nothing" or "grants all".
    fx.raw("UPDATE api_keys SET target_grant = '{\"environments\": 7}' WHERE name = 'web-01 registration'");
    let e = s.find_api_key("hash-agent", &["x"]).await.unwrap_err();
    assert!(e.to_string().contains("target_grant"), "{e}");
}

/// A key stored before schema 5 (bare SHA-256, no scope) still works as the admin key it was,
/// and is re-hashed under HMAC once.
pub(crate) async fn keys_stored_before_schema_5_keep_working_and_are_rehashed(fx: &Fixture) {
    let s = fx.migrated().await;
    fx.raw("INSERT INTO api_keys (name, key_hash, {created_at}) VALUES ('legacy', 'sha-of-key', {now_ms})");
    let found = s
        .find_api_key("hmac-of-key", &["sha-of-key"])
        .await
        .unwrap()
        .expect("found");
    assert!((found.key.hashed_with == HashedWith::Legacy) && !found.expired);
    assert_eq!(
        (found.key.scope, found.key.prefix.as_str()),
        (Scope::Admin, "")
    );
    assert_eq!(found.stored_hash, "sha-of-key");
    let label = "hmac-sha256/0000aaaa";
    assert!(s
        .upgrade_api_key_hash(found.key.id, "sha-of-key", "hmac-of-key", label)
        .await
        .unwrap());
    let again = s
        .find_api_key("hmac-of-key", &["sha-of-key"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.key.id, found.key.id);
    assert_eq!(
        again.key.hashed_with,
        HashedWith::Secret("0000aaaa".into()),
        "stored as HMAC now"
    );
    assert_eq!(again.stored_hash, "hmac-of-key");
    assert_eq!(
        s.find_api_key("x", &["sha-of-key"]).await.unwrap(),
        None,
        "the SHA-256 is gone"
    );
    assert!(
        !s.upgrade_api_key_hash(found.key.id, "sha-of-key", "other", label)
            .await
            .unwrap(),
        "upgraded once: a second upgrade (another node's) changes nothing"
    );
    assert!(s
        .find_api_key("hmac-of-key", &["x"])
        .await
        .unwrap()
        .is_some());
    // A row this binary cannot read is an error, never a guess.
    fx.raw("UPDATE api_keys SET scope = 'root'");
    let err = s.list_api_keys().await.unwrap_err().to_string();
    assert!(err.contains("unknown scope"), "{err}");
    assert!(s.find_api_key("hmac-of-key", &["x"]).await.is_err());
}

/// A rotation of the HMAC secret: keys stored before secrets had ids are named, a key is found
/// by any of three hashes in one query (the one it is stored under is said), and re-hashed.
pub(crate) async fn keys_are_found_under_a_previous_secret_and_rehashed(fx: &Fixture) {
    let s = fx.migrated().await;
    let mut unnamed = new_key("ops", "hash-under-first");
    unnamed.algorithm = "hmac-sha256".into();
    let id = s.insert_api_key(&unnamed, None).await.unwrap().unwrap();
    s.insert_api_key(&new_key("legacy-like", "other-hash"), None)
        .await
        .unwrap()
        .unwrap();
    let row = |rows: Vec<cuttle_storage::ApiKeyRow>| rows.into_iter().find(|k| k.id == id).unwrap();
    assert_eq!(
        row(s.list_api_keys().await.unwrap()).hashed_with,
        HashedWith::UnnamedSecret
    );
    assert_eq!(
        s.name_unnamed_key_hashes("hmac-sha256/1111bbbb")
            .await
            .unwrap(),
        1,
        "only the unnamed key is named"
    );
    assert_eq!(
        row(s.list_api_keys().await.unwrap()).hashed_with,
        HashedWith::Secret("1111bbbb".into())
    );
    // Found by its hash under the previous secret, third in the list.
    let found = s
        .find_api_key("hash-under-new", &["nothing", "hash-under-first"])
        .await
        .unwrap()
        .expect("found under the previous secret");
    assert_eq!(
        (found.key.id, found.stored_hash.as_str()),
        (id, "hash-under-first")
    );
    assert!(s
        .upgrade_api_key_hash(
            id,
            "hash-under-first",
            "hash-under-new",
            "hmac-sha256/2222cccc"
        )
        .await
        .unwrap());
    let found = s
        .find_api_key("hash-under-new", &["hash-under-first"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.stored_hash, "hash-under-new");
    assert_eq!(found.key.hashed_with, HashedWith::Secret("2222cccc".into()));
    assert!(
        s.find_api_key("a", &["b", "c", "d"]).await.is_err(),
        "three at most"
    );
    fx.raw("UPDATE api_keys SET algorithm = 'hmac-sha256/NOTHEX!!'");
    let err = s.list_api_keys().await.unwrap_err().to_string();
    assert!(err.contains("unknown hash algorithm"), "{err}");
}

pub(crate) async fn api_keys_are_listed_and_revoked_with_their_audit_events(fx: &Fixture) {
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
    assert_eq!(
        s.revoke_api_key(ci, Some(revoke(ci))).await.unwrap(),
        Revoke::Revoked
    );
    assert_eq!(
        s.find_api_key("hash-ci", &["x"]).await.unwrap(),
        None,
        "revoked"
    );
    assert_eq!(
        s.find_api_key("hash-ops", &["x"])
            .await
            .unwrap()
            .unwrap()
            .key
            .name,
        "ops"
    );
    assert_eq!(
        s.revoke_api_key(ci, Some(revoke(ci))).await.unwrap(),
        Revoke::NotFound,
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

/// The last working admin key is never revoked — not even by two revokes at once of the last
/// two, from two connections (two nodes): exactly one of them happens.
pub(crate) async fn the_last_working_admin_key_is_kept_whatever_revokes_race(fx: &Fixture) {
    let s = fx.migrated().await;
    // A second store: another node's connections.
    let other = fx.open().await;
    let admin = |name: &str| NewApiKey {
        scope: Scope::Admin,
        ..new_key(name, &format!("hash-{name}"))
    };
    let working_admins = || async {
        s.list_api_keys()
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.scope == Scope::Admin && k.expires_at.is_none())
            .map(|k| k.id)
            .collect::<Vec<_>>()
    };
    let mut survivor = s
        .insert_api_key(&admin("first"), None)
        .await
        .unwrap()
        .unwrap();
    for round in 0..5 {
        let newcomer = s
            .insert_api_key(&admin(&format!("k{round}")), None)
            .await
            .unwrap()
            .unwrap();
        let (a, b) = tokio::join!(
            s.revoke_api_key(survivor, None),
            other.revoke_api_key(newcomer, None)
        );
        let results = [a.unwrap(), b.unwrap()];
        assert_eq!(
            results.iter().filter(|r| **r == Revoke::Revoked).count(),
            1,
            "round {round}: {results:?}"
        );
        assert!(results.contains(&Revoke::LastAdmin), "{results:?}");
        let left = working_admins().await;
        assert_eq!(left.len(), 1, "round {round}: {left:?}");
        survivor = left[0];
    }
    // An expired admin key does not count as one that works.
    let mut expired = admin("expired");
    expired.expires_in_secs = Some(0);
    s.insert_api_key(&expired, None).await.unwrap().unwrap();
    assert_eq!(
        s.revoke_api_key(survivor, None).await.unwrap(),
        Revoke::LastAdmin
    );
    // Other scopes are revoked whatever the admin keys.
    let ops = s
        .insert_api_key(&new_key("ops", "hash-ops"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.revoke_api_key(ops, None).await.unwrap(), Revoke::Revoked);
}

pub(crate) async fn users_are_named_once_their_passwords_replaced_in_turn_and_audited(
    fx: &Fixture,
) {
    let s = fx.migrated().await;
    let hash = |n: u8| format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${n}");
    let created = |d: &cuttle_storage::Document| {
        event(
            "user.create",
            format!("Users-{}", d.id),
            serde_json::json!({}),
        )
    };
    let alice = s
        .create_user("alice", Scope::Admin, &hash(1), Some(Box::new(created)))
        .await
        .unwrap();
    assert_eq!((alice.name.as_str(), alice.scope), ("alice", Scope::Admin));
    let taken = s
        .create_user("ALICE", Scope::Reader, &hash(2), Some(Box::new(created)))
        .await
        .unwrap_err();
    assert!(
        matches!(taken, cuttle_storage::Error::Conflict(_)),
        "{taken}"
    );
    assert!(s
        .create_user("no spaces", Scope::Reader, &hash(2), None)
        .await
        .is_err());
    assert_eq!(s.find_user("Alice").await.unwrap().unwrap(), alice);
    assert_eq!(s.get_user(alice.id).await.unwrap().unwrap(), alice);
    assert_eq!(s.find_user("bob").await.unwrap(), None);

    // A new password is a new version; a change made from an older read is refused.
    let changed = s.set_user_password(&alice, &hash(3), None).await.unwrap();
    assert_eq!(changed.version, alice.version + 1);
    assert_eq!(changed.password_hash, hash(3));
    assert!(matches!(
        s.set_user_password(&alice, &hash(4), None).await,
        Err(cuttle_storage::Error::Conflict(_))
    ));
    assert_eq!(
        s.get_user(alice.id).await.unwrap().unwrap().password_hash,
        hash(3)
    );
    // Users are not a space's documents: no space lists them.
    assert!(s
        .list_documents("Spaces-1", "User")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.list_users().await.unwrap().len(), 1);

    let events: Vec<_> = s
        .list_events(10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "user.create")
        .map(|e| e.target)
        .collect();
    assert_eq!(events, [format!("Users-{}", alice.id)]);
    assert!(s.delete_user(&changed, None).await.unwrap());
    assert!(!s.delete_user(&changed, None).await.unwrap());
    assert_eq!(s.find_user("alice").await.unwrap(), None);
}
