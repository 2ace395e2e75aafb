//! Start-up checks shared by `run`, `check` and the other commands: reach the database, agree
//! on the schema, the master key and the shared store. Each failure is one line that says what
//! is wrong and what to do.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cuttle_core::{ApiKeyRequest, NewEvent, Scope};
use cuttle_storage::{
    generate_api_key, key_prefix, ApiKeyHasher, Audit, MasterKey, NewApiKey, SharedStore, Store,
    StoreOptions, SETTING_MASTER_KEY_CHECK as SETTING_KEY_CHECK,
};

use crate::config::Config;

const SETTING_SHARED_PATH: &str = "shared_path";
const SETTING_FIRST_KEY_MINTER: &str = "first_admin_key_minter";

/// Connects, retrying for `db_wait` while the database is unreachable.
pub(crate) async fn connect(cfg: &Config) -> Result<Store> {
    // Whatever the database: the node keeps its own files there (the first admin key, the
    // work directories of its scripts).
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("create data directory {}", cfg.data_dir.display()))?;
    let opts = StoreOptions {
        pool_size: cfg.db_pool_size,
        connect_timeout: cfg.db_connect_timeout,
        command_timeout: cfg.db_command_timeout,
    };
    let deadline = Instant::now() + cfg.db_wait;
    let mut pause = Duration::from_millis(250);
    loop {
        match Store::connect(&cfg.database_url, &opts).await {
            Ok(store) => return Ok(store),
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                tracing::warn!(error = %e, "database unreachable; retrying");
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) if e.is_unavailable() => {
                return Err(anyhow!(e).context(format!(
                    "gave up after CUTTLE_DB_WAIT_SECS={}",
                    cfg.db_wait.as_secs()
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Creates the schema on an empty database (under the database's lock, so one node does it);
/// otherwise requires exactly the version this binary expects.
pub(crate) async fn prepare_schema(store: &Store) -> Result<()> {
    if store.schema_version().await? == 0 {
        let report = store.migrate().await?;
        if report.applied_any() {
            tracing::info!(
                from = report.from,
                to = report.to,
                "created database schema"
            );
        }
    }
    store.check_schema().await?;
    Ok(())
}

/// Resolves the master key and checks it against the database's key-check value (storing one
/// if this is the first node).
pub(crate) async fn master_key(cfg: &Config, store: &Store) -> Result<MasterKey> {
    let key = match &cfg.master_key {
        Some(b64) => MasterKey::parse(b64).context("CUTTLE_MASTER_KEY")?,
        None if cfg.database_is_embedded() => {
            let has_check = store.get_setting(SETTING_KEY_CHECK).await?.is_some();
            key_from_file(&cfg.data_dir.join("master.key"), !has_check)?
        }
        None => bail!(
            "CUTTLE_MASTER_KEY is required with an external database: give every node the same \
             key (base64 of 16 or 32 random bytes, e.g. `openssl rand 16 | base64`)"
        ),
    };
    let check = store
        .init_setting(SETTING_KEY_CHECK, &key.key_check_value()?)
        .await?;
    key.verify(&check)?;
    Ok(key)
}

/// The master key the settings give, read without the database (a restore checks it against
/// the backup's check value before writing anything): `CUTTLE_MASTER_KEY`, or `master.key` in
/// the data directory.
pub(crate) fn configured_master_key(cfg: &Config) -> Result<MasterKey> {
    match &cfg.master_key {
        Some(b64) => MasterKey::parse(b64).context("CUTTLE_MASTER_KEY"),
        None => key_from_file(&cfg.data_dir.join("master.key"), false),
    }
}

/// Checks the key against the database once more, after the node registered: a master-key
/// rotation that committed between the first check and the registration would otherwise leave
/// a node holding the old key that looks started after it (a data-key rotation waits for
/// every node started before the master key's rotation).
pub(crate) async fn master_key_still_matches(store: &Store, key: &MasterKey) -> Result<()> {
    let check = store
        .get_setting(SETTING_KEY_CHECK)
        .await?
        .context("the master key's check value is gone from the database")?;
    key.verify(&check)
        .context("the master key was rotated while this node started")?;
    Ok(())
}

/// Reads `master.key`, or generates it (mode 0600) when `may_create` and it is missing.
fn key_from_file(path: &Path, may_create: bool) -> Result<MasterKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            MasterKey::parse(&text).with_context(|| format!("master key in {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => {
            let (key, b64) = MasterKey::generate()?;
            use std::os::unix::fs::OpenOptionsExt;
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
            match created {
                Ok(mut f) => {
                    f.write_all(b64.as_bytes())
                        .and_then(|_| f.sync_all())
                        .with_context(|| format!("write master key {}", path.display()))?;
                    tracing::info!(path = %path.display(), "generated a new master key; back it up");
                    Ok(key)
                }
                // Another process on this host created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    key_from_file(path, false)
                }
                Err(e) => Err(e).with_context(|| format!("create master key {}", path.display())),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "the database was created with a master key but {} is missing: restore it or set \
             CUTTLE_MASTER_KEY",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("read master key {}", path.display())),
    }
}

/// Opens the shared store whose root the database names (recording ours if it names none),
/// creating its folders and probing each for write access.
pub(crate) async fn shared_store(cfg: &Config, store: &Store) -> Result<SharedStore> {
    let root = match store.get_setting(SETTING_SHARED_PATH).await? {
        Some(root) => std::path::PathBuf::from(root),
        None => {
            // First node: check our path works before the cluster adopts it, so a typo is a
            // start-up error rather than a setting every node then inherits.
            if cfg.shared_path_is_default {
                std::fs::create_dir_all(&cfg.shared_path).with_context(|| {
                    format!("create shared store {}", cfg.shared_path.display())
                })?;
            }
            open_shared(cfg.shared_path.clone()).await?;
            let ours = cfg.shared_path.to_string_lossy().into_owned();
            std::path::PathBuf::from(store.init_setting(SETTING_SHARED_PATH, &ours).await?)
        }
    };
    open_shared(root).await
}

async fn open_shared(root: std::path::PathBuf) -> Result<SharedStore> {
    Ok(tokio::task::spawn_blocking(move || SharedStore::open(&root)).await??)
}

/// Stores a new shared-store root after checking it is usable.
pub(crate) async fn set_shared_path(store: &Store, dir: &Path) -> Result<SharedStore> {
    let dir = if dir.is_absolute() {
        dir.to_owned()
    } else {
        std::env::current_dir()?.join(dir)
    };
    let probe = dir.clone();
    let shared = tokio::task::spawn_blocking(move || SharedStore::open(&probe)).await??;
    store
        .set_setting(SETTING_SHARED_PATH, &dir.to_string_lossy())
        .await?;
    Ok(shared)
}

/// The file the first admin key is written to, in the data directory of the node that minted it.
pub(crate) const FIRST_KEY_FILE: &str = "admin-api-key";

/// On a database with no API keys: registers `CUTTLE_ADMIN_API_KEY`, or mints one admin key for
/// the whole cluster and writes it to a 0600 file in this node's data directory (never to
/// stdout or the log, which are kept and shipped). When several nodes start on an empty
/// database at once, the one that claims the setting below mints it; the others do nothing.
/// Returns the file's path when this node wrote it.
pub(crate) async fn bootstrap_api_key(
    cfg: &Config,
    store: &Store,
    hasher: &ApiKeyHasher,
) -> Result<Option<PathBuf>> {
    if store.api_key_count().await? > 0 {
        return Ok(None);
    }
    if let Some(key) = &cfg.admin_api_key {
        check_key_strength(key)?;
        store
            .insert_api_key(&admin_key("admin", key, hasher), None)
            .await?;
        tracing::info!("registered CUTTLE_ADMIN_API_KEY as the first admin key");
        return Ok(None);
    }
    // Claimed once per cluster; a node that claimed it and died before the key was stored
    // claims it again at its next start (same name).
    let minter = store
        .init_setting(SETTING_FIRST_KEY_MINTER, &cfg.node_name)
        .await?;
    if minter != cfg.node_name {
        tracing::info!(node = %minter, "the first admin key is minted by another node: see its data directory");
        return Ok(None);
    }
    let key = generate_api_key()?;
    let path = cfg.data_dir.join(FIRST_KEY_FILE);
    write_private(&path, format!("{key}\n").as_bytes())
        .with_context(|| format!("write the first admin key to {}", path.display()))?;
    let id = store
        .insert_api_key(&admin_key("admin", &key, hasher), None)
        .await?;
    if let Some(id) = id {
        store
            .set_setting(cuttle_api_gateway::SETTING_FIRST_ADMIN_KEY, &id.to_string())
            .await?;
    }
    tracing::info!(file = %path.display(), "minted the first admin API key");
    Ok(Some(path))
}

/// Removes the first admin key's file from the data directory once the key has been used on
/// any node (checked every 2 s while the file is there): a key that works is no longer left
/// readable on disk.
pub(crate) async fn remove_first_key_when_used(
    store: Store,
    path: PathBuf,
    stop: tokio_util::sync::CancellationToken,
) {
    while path.exists() {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        match store
            .get_setting(cuttle_api_gateway::SETTING_FIRST_ADMIN_KEY_USED)
            .await
        {
            Ok(Some(node)) => {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::info!(file = %path.display(), used_on = %node,
                        "the first admin API key has been used: removed its file"),
                    Err(e) => tracing::warn!(file = %path.display(), error = %e,
                        "remove the first admin API key's file"),
                }
                return;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "check the first admin key's use"),
        }
    }
}

/// An admin key that never expires.
fn admin_key(name: &str, key: &str, hasher: &ApiKeyHasher) -> NewApiKey {
    NewApiKey {
        name: name.to_owned(),
        scope: Scope::Admin,
        prefix: key_prefix(key),
        hash: hasher.hash(key),
        algorithm: hasher.algorithm(),
        expires_in_secs: None,
        target_name: None,
        grant: None,
    }
}

/// `CUTTLE_ADMIN_API_KEY` must be a real secret: by a conservative estimate at least 128 bits
/// (its length times the bits of the smallest alphabet holding its characters), and not a
/// pattern (at least 10 different characters).
fn check_key_strength(key: &str) -> Result<()> {
    let key = key.trim();
    let has = |f: fn(&char) -> bool| key.chars().any(|c| f(&c));
    let alphabet = [
        (has(char::is_ascii_lowercase), 26),
        (has(char::is_ascii_uppercase), 26),
        (has(char::is_ascii_digit), 10),
        (has(|c| !c.is_ascii_alphanumeric()), 32),
    ]
    .iter()
    .filter(|(present, _)| *present)
    .map(|(_, n)| n)
    .sum::<u32>()
    .max(2);
    let bits = key.chars().count() as f64 * f64::from(alphabet).log2();
    let distinct = key.chars().collect::<std::collections::HashSet<_>>().len();
    if bits < 128.0 || distinct < 10 {
        bail!(
            "CUTTLE_ADMIN_API_KEY is too weak (about {bits:.0} bits, {distinct} different \
             characters): use at least 128 random bits, e.g. `openssl rand -base64 24`"
        );
    }
    Ok(())
}

/// Writes a new file readable by its owner only, from its creation (not chmod'ed afterwards),
/// under a unique temporary name renamed into place, so no one ever reads a partial key.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Creates a key as `cuttle-server api-key create` asks (recorded in the audit log as made by
/// the command line) and returns it.
pub(crate) async fn create_api_key(
    store: &Store,
    hasher: &ApiKeyHasher,
    req: &ApiKeyRequest,
) -> Result<String> {
    let lifetime = req.validate()?;
    let key = generate_api_key()?;
    let new = NewApiKey {
        name: req.name.trim().to_owned(),
        scope: req.scope,
        prefix: key_prefix(&key),
        hash: hasher.hash(&key),
        algorithm: hasher.algorithm(),
        // At most ten years: fits.
        expires_in_secs: lifetime.map(|l| l as u32),
        target_name: req.target.clone(),
        grant: req.grant(),
    };
    let details = serde_json::json!({
        "name": new.name, "scope": new.scope, "prefix": new.prefix,
        "expires_in": req.expires_in, "target": new.target_name, "grant": new.grant,
    });
    let audit: Audit<i64> = Box::new(move |id| NewEvent {
        actor: "cuttle-server api-key create".into(),
        action: "api_key.create".into(),
        target: format!("ApiKeys-{id}"),
        client_address: "local".into(),
        details: details.clone(),
    });
    store
        .insert_api_key(&new, Some(audit))
        .await?
        .context("a key with this hash exists; run the command again")?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_generated_once_with_private_mode() {
        let dir = std::env::temp_dir().join(format!("cuttle-keyfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        let err = key_from_file(&path, false).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        let k1 = key_from_file(&path, true).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = key_from_file(&path, true).unwrap();
        k2.verify(&k1.key_check_value().unwrap()).unwrap();
        std::fs::write(&path, "garbage").unwrap();
        assert!(key_from_file(&path, true).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn admin_keys_given_must_be_real_secrets() {
        for weak in [
            "short",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "0123456789012345678901234567890", // 31 digits: about 103 bits
            "changeme-changeme-changeme",
        ] {
            let e = check_key_strength(weak).unwrap_err().to_string();
            assert!(e.contains("CUTTLE_ADMIN_API_KEY"), "{weak}: {e}");
        }
        for strong in [
            "API-3q2+7wE_Rk9sLm0xYvB4nT8uHc1JdA6z", // generated form
            "c2f1b0a9e8d7c6b5a4f3e2d1c0b9a8f7",     // 128-bit hex
            "Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4",     // base64 of 24 bytes
        ] {
            check_key_strength(strong).unwrap();
        }
    }

    #[test]
    fn private_files_are_never_readable_by_others_and_never_partial() {
        let dir = std::env::temp_dir().join(format!("cuttle-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FIRST_KEY_FILE);
        write_private(&path, b"API-secret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"API-secret\n");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
