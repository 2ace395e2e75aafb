//! The data keys under the master key — the variable key that seals sensitive values, and the
//! HMAC secret API keys (and web sessions) are hashed with — kept current on every node and
//! rotated while the cluster runs.
//!
//! Rotating the master key re-seals these two keys but does not change them: whoever read them
//! before still opens every sensitive value. `variable-key rotate` replaces the variable key
//! and re-seals every sensitive value the database holds (projects, published runbooks,
//! releases) under the new one, then forgets the old one. `api-key-secret rotate` replaces the
//! HMAC secret: the previous one still finds keys until each is re-hashed at its next use, and
//! `api-key-secret finish` forgets it (refused while a working key still waits, unless
//! `--force`, which revokes such keys).
//!
//! Nodes re-read the keys every two seconds, seal a new value with the key stored at that
//! moment, and re-read before failing to open a value (see `cuttle_storage::Keyring`). A node
//! started before the master key's last rotation holds the previous master key and could not
//! read new data keys: both rotations wait until no such node is left (restarted, or its row
//! deleted), and until every node runs this version.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use cuttle_core::NewEvent;
use cuttle_storage::{
    audit_as, ApiKeyHasher, ApiKeyRow, DocumentWrite, HashedWith, Keyring, MasterKey, Revoke,
    Store, VariableKeys, Written, SETTING_API_KEY_SECRET, SETTING_API_KEY_SECRET_PREVIOUS,
    SETTING_MASTER_KEY_ROTATED_AT, SETTING_VARIABLE_KEY, SETTING_VARIABLE_KEY_PREVIOUS,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// How often a node re-reads the data keys.
const REFRESH: Duration = Duration::from_secs(2);
/// Passes over the database a variable-key rotation makes at most before it gives up: values
/// copied during a pass (a release made from a project not re-sealed yet) are re-sealed by the
/// next, and the previous key is forgotten only after a pass that found nothing to re-seal.
const MAX_PASSES: usize = 5;
/// Attempts at re-sealing one document or release that keeps changing under the rotation.
const MAX_ATTEMPTS: usize = 5;
const ACTOR: &str = "cuttle-server";

/// Keeps this node's data keys current until `stop`.
pub(crate) async fn keep_refreshed(keys: Keyring, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REFRESH) => {}
        }
        if let Err(e) = keys.refresh().await {
            tracing::warn!(error = %format!("{e:#}"), "re-read the data keys");
        }
    }
}

/// Refuses while a node — online or not — last started before the master key's last rotation
/// (both times on the database's clock): it holds the previous master key and could not read a
/// new data key (a node frozen or cut off now may come back). Refuses too while a node runs
/// another version of Cuttle: one from before the keys could be rotated would never take up
/// the new ones.
async fn check_nodes_hold_the_master_key(store: &Store, offline_after: Duration) -> Result<()> {
    let rotated_at: i64 = store
        .get_setting(SETTING_MASTER_KEY_ROTATED_AT)
        .await?
        .map(|v| v.parse().context("setting master_key_rotated_at_ms"))
        .transpose()?
        .unwrap_or(0);
    let nodes = store.list_nodes(offline_after).await?;
    let shown = |n: &cuttle_core::NodeRecord| {
        if n.online {
            n.name.clone()
        } else {
            format!("{} (offline)", n.name)
        }
    };
    let stale: Vec<String> = nodes
        .iter()
        .filter(|n| n.started_at < rotated_at)
        .map(shown)
        .collect();
    if !stale.is_empty() {
        bail!(
            "node(s) {} last started before the master key was rotated and hold the previous \
             one: restart them with the new master key first (a node that is gone for good: \
             `cuttle node delete NAME`)",
            stale.join(", ")
        );
    }
    let ours = env!("CARGO_PKG_VERSION");
    let other: Vec<String> = nodes
        .iter()
        .filter(|n| n.version != ours)
        .map(|n| format!("{} ({})", shown(n), n.version))
        .collect();
    if !other.is_empty() {
        bail!(
            "node(s) {} run another version than this command ({ours}): finish the upgrade \
             first",
            other.join(", ")
        );
    }
    Ok(())
}

/// What a variable-key rotation re-sealed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resealed {
    pub(crate) values: usize,
    pub(crate) documents: usize,
    pub(crate) releases: usize,
}

impl Resealed {
    fn add(&mut self, other: Resealed) {
        self.values += other.values;
        self.documents += other.documents;
        self.releases += other.releases;
    }
}

/// `variable-key rotate`: a new variable key, every sensitive value re-sealed under it, and the
/// old key forgotten. A rotation that was interrupted (the previous key still stored) is
/// finished instead of starting another. `progress` is told what happens.
pub(crate) async fn rotate_variable_key(
    store: &Store,
    master: &MasterKey,
    offline_after: Duration,
    mut progress: impl FnMut(&str),
) -> Result<Resealed> {
    check_nodes_hold_the_master_key(store, offline_after).await?;
    let sealed = store.sealed_data_keys(master).await?;
    let previous_sealed = if sealed.variable_previous.is_empty() {
        let (_, b64) = MasterKey::generate()?;
        let fresh = master.encrypt(b64.as_bytes())?;
        store
            .init_setting(SETTING_VARIABLE_KEY_PREVIOUS, "")
            .await?;
        let changes = [
            change(SETTING_VARIABLE_KEY, &sealed.variable, &fresh),
            change(SETTING_VARIABLE_KEY_PREVIOUS, "", &sealed.variable),
        ];
        if !store.replace_settings(&changes).await? {
            bail!("the variable key changed meanwhile (another rotation?): nothing was changed");
        }
        progress("new variable key stored; nodes seal new values with it from now on");
        sealed.variable.clone()
    } else {
        progress("an earlier rotation was interrupted: finishing it");
        sealed.variable_previous.clone()
    };
    let keys = store.variable_keys(master).await?;
    if !keys.has_previous() {
        bail!("the previous variable key is gone (another rotation finished it meanwhile)");
    }
    let mut total = Resealed::default();
    let mut clean = false;
    for pass in 1..=MAX_PASSES {
        let done = reseal_everything(store, &keys).await?;
        progress(&format!(
            "pass {pass}: re-sealed {} value(s) in {} document(s) and {} release(s)",
            done.values, done.documents, done.releases
        ));
        total.add(done);
        if done.values == 0 {
            clean = true;
            break;
        }
    }
    if !clean {
        bail!(
            "sensitive values under the previous key kept appearing for {MAX_PASSES} passes; \
             the previous key is kept: run the command again"
        );
    }
    if !store
        .replace_settings(&[change(SETTING_VARIABLE_KEY_PREVIOUS, &previous_sealed, "")])
        .await?
    {
        bail!("the previous variable key changed meanwhile (another rotation?): run the command again");
    }
    progress("the previous variable key is forgotten");
    // A value sealed or copied under the old key just before a node took up the new one may
    // still land: once every node has re-read the keys (every 2 s), one more pass with the old
    // key, still held here, re-seals it.
    tokio::time::sleep(REFRESH * 2 + Duration::from_secs(1)).await;
    let late = reseal_everything(store, &keys).await?;
    progress(&format!(
        "last pass: re-sealed {} value(s) written during the rotation",
        late.values
    ));
    total.add(late);
    Ok(total)
}

/// One pass: every project, runbook and release of every space.
async fn reseal_everything(store: &Store, keys: &VariableKeys) -> Result<Resealed> {
    let mut done = Resealed::default();
    for space in store.list_documents("", "Space").await? {
        let space_id = format!("Spaces-{}", space.id);
        for kind in ["Project", "Runbook"] {
            for doc in store.list_documents(&space_id, kind).await? {
                let n = reseal_document(store, keys, &space_id, kind, doc).await?;
                if n > 0 {
                    done.values += n;
                    done.documents += 1;
                }
            }
        }
    }
    let (values, releases) = reseal_releases(store, keys).await?;
    done.values += values;
    done.releases += releases;
    Ok(done)
}

/// Re-seals one document, written only if it is still the version read (else read again).
async fn reseal_document(
    store: &Store,
    keys: &VariableKeys,
    space: &str,
    kind: &str,
    mut doc: cuttle_storage::Document,
) -> Result<usize> {
    for _ in 0..MAX_ATTEMPTS {
        let mut body = doc.body.clone();
        let n = reseal_values(&mut body, keys)
            .with_context(|| format!("{kind}s-{} ({:?})", doc.id, doc.name))?;
        if n == 0 {
            return Ok(0);
        }
        let target = format!("{kind}s-{}", doc.id);
        let audit = audit_as(event("variable_key.reseal", &target, json!({"values": n})));
        let w = DocumentWrite {
            space,
            kind,
            name: &doc.name,
            body: &body,
        };
        match store
            .update_document(doc.id, doc.version, &w, Some(audit))
            .await?
        {
            Written::Done(_) => return Ok(n),
            Written::NotFound => return Ok(0),
            Written::Stale { .. } => match store.get_document(space, kind, doc.id).await? {
                Some(again) => doc = again,
                None => return Ok(0),
            },
        }
    }
    bail!("{kind}s-{} keeps changing: run the command again", doc.id)
}

/// Re-seals every release (a deleted project's too), a page at a time; `(values, releases)`
/// re-sealed.
async fn reseal_releases(store: &Store, keys: &VariableKeys) -> Result<(usize, usize)> {
    const PAGE: u32 = 100;
    let (mut values, mut releases, mut after) = (0, 0, 0);
    loop {
        let page = store.release_snapshots_after(after, PAGE).await?;
        let Some(last) = page.last().map(|(id, _)| *id) else {
            return Ok((values, releases));
        };
        for (id, text) in page {
            let n = reseal_release(store, keys, id, text).await?;
            if n > 0 {
                values += n;
                releases += 1;
            }
        }
        after = last;
    }
}

/// Re-seals one release, written only if its snapshot is still the text read.
async fn reseal_release(
    store: &Store,
    keys: &VariableKeys,
    id: i64,
    mut text: String,
) -> Result<usize> {
    for _ in 0..MAX_ATTEMPTS {
        let mut snapshot: Value = serde_json::from_str(&text)
            .with_context(|| format!("release Releases-{id}: snapshot is not JSON"))?;
        let n =
            reseal_values(&mut snapshot, keys).with_context(|| format!("release Releases-{id}"))?;
        if n == 0 {
            return Ok(0);
        }
        if store
            .replace_release_snapshot(id, &text, &snapshot.to_string())
            .await?
        {
            return Ok(n);
        }
        match store.release_snapshots_after(id - 1, 1).await?.pop() {
            Some((found, again)) if found == id => text = again,
            _ => return Ok(0), // deleted meanwhile (retention)
        }
    }
    bail!("release Releases-{id} keeps changing: run the command again")
}

/// Re-seals under the current key every sensitive value in `v` that only the previous key
/// opens: any object with `"sensitive": true` and a `ciphertext` (a stored variable, wherever a
/// document or snapshot keeps one). How many were re-sealed; a value neither key opens is an
/// error (nothing is guessed, nothing dropped).
pub(crate) fn reseal_values(v: &mut Value, keys: &VariableKeys) -> Result<usize> {
    match v {
        Value::Object(m) => {
            let mut n = 0;
            if m.get("sensitive") == Some(&Value::Bool(true)) {
                if let Some(Value::String(sealed)) = m.get("ciphertext") {
                    let name = m.get("name").and_then(Value::as_str).unwrap_or("?");
                    if let Some(fresh) = keys
                        .reseal(sealed)
                        .with_context(|| format!("sensitive variable {name:?}"))?
                    {
                        m.insert("ciphertext".into(), Value::String(fresh));
                        n += 1;
                    }
                }
            }
            for (_, child) in m.iter_mut() {
                n += reseal_values(child, keys)?;
            }
            Ok(n)
        }
        Value::Array(items) => {
            let mut n = 0;
            for item in items {
                n += reseal_values(item, keys)?;
            }
            Ok(n)
        }
        _ => Ok(0),
    }
}

/// `api-key-secret rotate`: a new HMAC secret. Every key keeps working: found under the
/// previous secret, it is re-hashed under the new one at its next use. Web sessions end.
pub(crate) async fn rotate_api_key_secret(
    store: &Store,
    master: &MasterKey,
    offline_after: Duration,
) -> Result<String> {
    check_nodes_hold_the_master_key(store, offline_after).await?;
    let sealed = store.sealed_data_keys(master).await?;
    if !sealed.secret_previous.is_empty() {
        bail!(
            "a rotation of the API-key secret is under way: see `api-key-secret status`, then \
             `api-key-secret finish` it first"
        );
    }
    let current = sealed.open_hasher(master)?;
    // Keys stored before secrets had ids are under this one: named now, so they are known to
    // wait for re-hashing once it is the previous one.
    store.name_unnamed_key_hashes(&current.algorithm()).await?;
    let fresh = master.encrypt(&ApiKeyHasher::generate_secret()?)?;
    store
        .init_setting(SETTING_API_KEY_SECRET_PREVIOUS, "")
        .await?;
    let changes = [
        change(SETTING_API_KEY_SECRET, &sealed.secret, &fresh),
        change(SETTING_API_KEY_SECRET_PREVIOUS, "", &sealed.secret),
    ];
    if !store.replace_settings(&changes).await? {
        bail!("the API-key secret changed meanwhile (another rotation?): nothing was changed");
    }
    Ok(store.api_key_hasher(master).await?.secret_id())
}

/// Keys still stored under the previous secret (not used since the rotation).
fn under_previous(keys: Vec<ApiKeyRow>, hasher: &ApiKeyHasher) -> Vec<ApiKeyRow> {
    keys.into_iter()
        .filter(|k| k.hashed_with != HashedWith::Legacy && !hasher.is_current(&k.hashed_with))
        .collect()
}

/// Of those, the ones that still work: what a `finish` waits for.
fn keys_waiting(keys: Vec<ApiKeyRow>, hasher: &ApiKeyHasher, now: i64) -> Vec<ApiKeyRow> {
    under_previous(keys, hasher)
        .into_iter()
        .filter(|k| k.expires_at.is_none_or(|at| at > now))
        .collect()
}

fn named(keys: &[ApiKeyRow]) -> String {
    keys.iter()
        .map(|k| format!("ApiKeys-{} ({}, {})", k.id, k.name, k.scope))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `api-key-secret status`: the secrets, and the keys a `finish` waits for.
pub(crate) async fn api_key_secret_status(store: &Store, master: &MasterKey) -> Result<String> {
    let hasher = store.api_key_hasher(master).await?;
    let mut out = format!("current secret:  {}\n", hasher.secret_id());
    match hasher.previous_id() {
        None => out.push_str("previous secret: none (no rotation under way)\n"),
        Some(id) => {
            out.push_str(&format!("previous secret: {id} (still finds keys)\n"));
            let waiting = keys_waiting(store.list_api_keys().await?, &hasher, now_ms());
            if waiting.is_empty() {
                out.push_str("every working key is re-hashed: `finish` may run\n");
            } else {
                out.push_str(&format!(
                    "keys not used since the rotation (re-hashed at their next use): {}\n",
                    named(&waiting)
                ));
            }
        }
    }
    Ok(out)
}

/// `api-key-secret finish`: the previous secret is forgotten (every node within seconds), and
/// no key is left stored under it: expired keys still under it are deleted. Refused while a
/// working key is still stored under it, unless `force`: then those keys are revoked (each with
/// its audit event) — never the cluster's last working admin key.
pub(crate) async fn finish_api_key_secret(
    store: &Store,
    master: &MasterKey,
    offline_after: Duration,
    force: bool,
) -> Result<usize> {
    check_nodes_hold_the_master_key(store, offline_after).await?;
    let sealed = store.sealed_data_keys(master).await?;
    if sealed.secret_previous.is_empty() {
        bail!("no rotation of the API-key secret to finish");
    }
    let hasher = sealed.open_hasher(master)?;
    let all = store.list_api_keys().await?;
    let now = now_ms();
    let waiting = keys_waiting(all.clone(), &hasher, now);
    if !waiting.is_empty() && !force {
        bail!(
            "{} working key(s) are not re-hashed yet: {} — each is at its next use; use them, \
             revoke them, or give --force to revoke them",
            waiting.len(),
            named(&waiting)
        );
    }
    let admin_kept = all.iter().any(|k| {
        k.scope == cuttle_core::Scope::Admin
            && k.expires_at.is_none_or(|at| at > now)
            && !waiting.iter().any(|w| w.id == k.id)
    });
    if !admin_kept && waiting.iter().any(|k| k.scope == cuttle_core::Scope::Admin) {
        bail!(
            "no working admin key is re-hashed yet: use one once (any request) first, or the \
             cluster would be left without an admin key"
        );
    }
    let expired: Vec<ApiKeyRow> = under_previous(all, &hasher)
        .into_iter()
        .filter(|k| k.expires_at.is_some_and(|at| at <= now))
        .collect();
    for k in expired.iter().chain(&waiting) {
        let target = format!("ApiKeys-{}", k.id);
        let details = json!({"reason": "not re-hashed before api-key-secret finish"});
        let audit = audit_as(event("api_key.revoke", &target, details));
        match store.revoke_api_key(k.id, Some(audit)).await? {
            Revoke::Revoked | Revoke::NotFound => {}
            Revoke::LastAdmin => bail!("{target} is the last working admin key: use it once first"),
        }
    }
    if !store
        .replace_settings(&[change(
            SETTING_API_KEY_SECRET_PREVIOUS,
            &sealed.secret_previous,
            "",
        )])
        .await?
    {
        bail!("the API-key secrets changed meanwhile: run the command again");
    }
    Ok(waiting.len())
}

fn event(action: &str, target: &str, details: Value) -> NewEvent {
    NewEvent {
        actor: ACTOR.into(),
        action: action.into(),
        target: target.into(),
        client_address: "local".into(),
        details,
    }
}

fn change(key: &str, old: &str, new: &str) -> (String, String, String) {
    (key.to_owned(), old.to_owned(), new.to_owned())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_values_under_the_previous_key_are_resealed_wherever_they_are_kept() {
        let (old, _) = MasterKey::generate().unwrap();
        let (new, _) = MasterKey::generate().unwrap();
        let keys = VariableKeys::new(new.clone(), Some(old.clone()));
        let under_old = old.encrypt(b"s3cret").unwrap();
        let under_new = new.encrypt(b"fresh").unwrap();
        let mut snapshot = json!({
            "project_name": "Web",
            "variables": [
                {"id": "Variables-1", "name": "Password", "ciphertext": under_old, "sensitive": true},
                {"id": "Variables-2", "name": "Token", "ciphertext": under_new, "sensitive": true},
                {"id": "Variables-3", "name": "Plain", "value": "x", "sensitive": false},
                // Not a sensitive variable: left alone whatever it holds.
                {"name": "Odd", "ciphertext": "not base64", "sensitive": false},
            ],
            "published": {"variables": [
                {"id": "Variables-1", "name": "Password", "ciphertext": under_old, "sensitive": true},
            ]},
        });
        assert_eq!(reseal_values(&mut snapshot, &keys).unwrap(), 2);
        let first = snapshot["variables"][0]["ciphertext"].as_str().unwrap();
        assert!(old.decrypt(first).is_err());
        assert_eq!(new.decrypt(first).unwrap(), b"s3cret");
        assert_eq!(snapshot["variables"][1]["ciphertext"], json!(under_new));
        assert_eq!(snapshot["variables"][3]["ciphertext"], json!("not base64"));
        let published = snapshot["published"]["variables"][0]["ciphertext"]
            .as_str()
            .unwrap();
        assert_eq!(new.decrypt(published).unwrap(), b"s3cret");
        assert_eq!(
            reseal_values(&mut snapshot, &keys).unwrap(),
            0,
            "nothing left"
        );

        // A value neither key opens stops the rotation, naming it.
        let (other, _) = MasterKey::generate().unwrap();
        let mut lost = json!({"variables": [
            {"name": "Lost", "ciphertext": other.encrypt(b"?").unwrap(), "sensitive": true}
        ]});
        let err = format!("{:#}", reseal_values(&mut lost, &keys).unwrap_err());
        assert!(err.contains("\"Lost\""), "{err}");
    }

    #[test]
    fn a_finish_waits_for_working_keys_under_the_previous_secret_only() {
        let old = ApiKeyHasher::from_secrets(&[1; 32], None).unwrap();
        let both = ApiKeyHasher::from_secrets(&[2; 32], Some(&[1; 32])).unwrap();
        let row = |id: i64, with: HashedWith, expires_at: Option<i64>| ApiKeyRow {
            id,
            name: format!("k{id}"),
            scope: cuttle_core::Scope::Operator,
            prefix: "API-abcd".into(),
            created_at: 0,
            expires_at,
            target_name: None,
            grant: None,
            hashed_with: with,
        };
        let old_id = HashedWith::Secret(old.secret_id());
        let new_id = HashedWith::Secret(both.secret_id());
        let keys = vec![
            row(1, old_id.clone(), None),
            row(2, new_id, None),
            row(3, HashedWith::Legacy, None),
            row(4, old_id, Some(10)),
            row(5, HashedWith::UnnamedSecret, None),
        ];
        let waiting: Vec<i64> = keys_waiting(keys, &both, 100)
            .iter()
            .map(|k| k.id)
            .collect();
        assert_eq!(
            waiting,
            [1, 5],
            "expired and legacy keys do not hold a finish up"
        );
    }
}
