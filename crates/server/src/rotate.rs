//! `cuttle-server master-key rotate`: re-encrypts every secret the database holds under a new
//! master key, in one transaction, while the cluster keeps running.
//!
//! Running nodes are not disturbed: they hold what they decrypted at start-up. From the commit
//! on, a node must start with the new key (one started with the old key refuses, naming the
//! key-check value), so nodes are restarted one at a time with the new key. The data keys under
//! it are re-sealed, not changed: `variable-key rotate` and `api-key-secret rotate` replace
//! them (see `data_keys`), once every node runs with the new master key.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use cuttle_storage::{
    MasterKey, Store, SETTING_API_KEY_SECRET, SETTING_API_KEY_SECRET_PREVIOUS,
    SETTING_MASTER_KEY_CHECK as SETTING_KEY_CHECK, SETTING_MASTER_KEY_ROTATED_AT,
    SETTING_VARIABLE_KEY, SETTING_VARIABLE_KEY_PREVIOUS,
};
use serde_json::Value;

use crate::cluster_cert::SEALED_SETTINGS;

/// Where the new key comes from.
pub(crate) enum NewKey<'a> {
    /// A file holding it (base64 of 16 or 32 bytes), made by the operator.
    File(&'a Path),
    /// Generate one and write it to a new file, readable by its owner only.
    Generate(&'a Path),
}

/// Re-encrypts the sealed settings under the new key and replaces the key-check value, all or
/// nothing. Returns how many secrets were re-encrypted.
pub(crate) async fn rotate_master_key(
    store: &Store,
    old: &MasterKey,
    new: NewKey<'_>,
) -> Result<usize> {
    let new = match new {
        NewKey::File(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read the new master key from {}", path.display()))?;
            MasterKey::parse(&text)
                .with_context(|| format!("new master key in {}", path.display()))?
        }
        NewKey::Generate(path) => {
            let (key, b64) = MasterKey::generate()?;
            write_new_private(path, b64.as_bytes())
                .with_context(|| format!("write the new master key to {}", path.display()))?;
            key
        }
    };
    let Some(check) = store.get_setting(SETTING_KEY_CHECK).await? else {
        bail!("this database has no master key yet: start a node first");
    };
    if new.verify(&check).is_ok() {
        bail!("the new master key is the one in use: nothing to rotate");
    }
    let mut changes = vec![(SETTING_KEY_CHECK.to_owned(), check, new.key_check_value()?)];
    // Secrets sealed whole with the master key: the API-key secret, the variables' key, and
    // their previous ones during their own rotation.
    for setting in [
        SETTING_API_KEY_SECRET,
        SETTING_VARIABLE_KEY,
        SETTING_API_KEY_SECRET_PREVIOUS,
        SETTING_VARIABLE_KEY_PREVIOUS,
    ] {
        if let Some(sealed) = store.get_setting(setting).await?.filter(|s| !s.is_empty()) {
            let secret = old
                .decrypt(&sealed)
                .with_context(|| format!("the secret in setting {setting}"))?;
            changes.push((setting.to_owned(), sealed, new.encrypt(&secret)?));
        }
    }
    for setting in SEALED_SETTINGS {
        let Some(stored) = store.get_setting(setting).await?.filter(|s| !s.is_empty()) else {
            continue;
        };
        let mut v: Value = serde_json::from_str(&stored)
            .with_context(|| format!("setting {setting} is not JSON"))?;
        let sealed = v["key"]
            .as_str()
            .with_context(|| format!("setting {setting} lacks its key"))?;
        let private_key = old
            .decrypt(sealed)
            .with_context(|| format!("the key in setting {setting}"))?;
        v["key"] = Value::String(new.encrypt(&private_key)?);
        changes.push((setting.to_owned(), stored, v.to_string()));
    }
    let secrets = changes.len() - 1;
    // When, on the database's clock (the one nodes' start times are on): written with the
    // change, and again once it committed, so a node that checked the old key-check value
    // before the commit started before the time recorded (a data-key rotation waits for it).
    let rotated_at = store
        .init_setting(SETTING_MASTER_KEY_ROTATED_AT, "0")
        .await?;
    changes.push((
        SETTING_MASTER_KEY_ROTATED_AT.to_owned(),
        rotated_at,
        store.now_ms().await?.to_string(),
    ));
    if !store.replace_settings(&changes).await? {
        bail!(
            "a secret changed while it was being re-encrypted (a node was creating one): nothing \
             was changed; run the command again"
        );
    }
    store
        .set_setting(
            SETTING_MASTER_KEY_ROTATED_AT,
            &store.now_ms().await?.to_string(),
        )
        .await?;
    Ok(secrets)
}

/// Writes a new file readable by its owner only, from its creation; refuses to overwrite one.
fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
