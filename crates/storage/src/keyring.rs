//! A node's data keys — the API-key HMAC secret and the variable key, each with its previous
//! one during a rotation — kept current while the node runs.
//!
//! A rotation (`cuttle-server variable-key rotate`, `api-key-secret rotate`) changes the stored
//! keys while nodes run. A node re-reads them every few seconds ([`Keyring::refresh`], one at a
//! time, so an older read never replaces a newer one); it seals a new sensitive value, and
//! hashes a new API key, only with the keys stored at that moment ([`Keyring::fresh`]); a value
//! its held keys cannot open makes it re-read them once, and keys it held until a moment ago
//! still open values for a minute ([`Keyring::open`]: a deployment that read a snapshot just
//! before a rotation re-sealed it still runs).
//!
//! A node whose master key was rotated away (it runs until its restart with the new one) keeps
//! the keys it holds for what it already does, but seals and hashes nothing new: it cannot know
//! whether the keys changed since. A data-key rotation waits until no such node is left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::crypto::api_keys::ApiKeyHasher;
use crate::crypto::VariableKeys;
use crate::db::SealedDataKeys;
use crate::{Error, MasterKey, Result, Store};

/// The setting holding the master key's key-check value.
pub const SETTING_MASTER_KEY_CHECK: &str = "master_key_check";
/// When the master key was last rotated (milliseconds since the epoch, the database's clock,
/// written once the rotation committed): nodes started before it hold the previous master key.
pub const SETTING_MASTER_KEY_ROTATED_AT: &str = "master_key_rotated_at_ms";
/// How long keys a node no longer holds still open values it read before.
const RETIRED_FOR: Duration = Duration::from_secs(60);

/// The data keys a node holds at one moment.
#[derive(Debug)]
pub struct Keys {
    pub hasher: ApiKeyHasher,
    pub variables: VariableKeys,
}

/// A node's data keys, shared by its API and its worker. Cloning shares them.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    master: MasterKey,
    held: RwLock<Held>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// The master key no longer matches the cluster's (said once in the log).
    outdated: AtomicBool,
    /// Keys replaced by a refresh, and when: they still open values for [`RETIRED_FOR`].
    retired: Mutex<Option<(Arc<Keys>, Instant)>>,
}

struct Held {
    sealed: SealedDataKeys,
    keys: Arc<Keys>,
    read_at: Instant,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(redacted)")
    }
}

impl Keyring {
    /// Reads (making them when missing) the cluster's data keys.
    pub async fn load(store: &Store, master: &MasterKey) -> Result<Keyring> {
        let sealed = store.sealed_data_keys(master).await?;
        let keys = open(&sealed, master)?;
        Ok(Keyring {
            inner: Arc::new(Inner {
                store: store.clone(),
                master: master.clone(),
                held: RwLock::new(Held {
                    sealed,
                    keys: Arc::new(keys),
                    read_at: Instant::now(),
                }),
                refreshing: tokio::sync::Mutex::new(()),
                outdated: AtomicBool::new(false),
                retired: Mutex::new(None),
            }),
        })
    }

    /// The keys held now.
    pub fn get(&self) -> Arc<Keys> {
        let held = self.inner.held.read().unwrap_or_else(|p| p.into_inner());
        held.keys.clone()
    }

    /// Re-reads the stored keys, holds them if they changed (a rotation), and returns what is
    /// held. A node whose master key no longer matches the cluster's keeps what it holds.
    pub async fn refresh(&self) -> Result<Arc<Keys>> {
        let inner = &self.inner;
        let _one = inner.refreshing.lock().await;
        let sealed = inner.store.sealed_data_keys(&inner.master).await?;
        let unchanged = {
            let mut held = inner.held.write().unwrap_or_else(|p| p.into_inner());
            held.read_at = Instant::now();
            (held.sealed == sealed).then(|| held.keys.clone())
        };
        if let Some(keys) = unchanged {
            return Ok(keys);
        }
        let keys = match open(&sealed, &inner.master) {
            Ok(k) => Arc::new(k),
            Err(e) => {
                let check = inner.store.get_setting(SETTING_MASTER_KEY_CHECK).await?;
                if check.is_some_and(|c| inner.master.verify(&c).is_err()) {
                    if !inner.outdated.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "the master key was rotated: this node seals no new sensitive value \
                             and makes no API key until it is restarted with the new master key"
                        );
                    }
                    return Ok(self.get());
                }
                return Err(e);
            }
        };
        let old = {
            let mut held = inner.held.write().unwrap_or_else(|p| p.into_inner());
            let old = std::mem::replace(&mut held.keys, keys.clone());
            held.sealed = sealed;
            old
        };
        if old.hasher.secret_id() != keys.hasher.secret_id()
            || old.hasher.previous_id() != keys.hasher.previous_id()
        {
            tracing::info!(
                secret = %keys.hasher.secret_id(),
                previous = ?keys.hasher.previous_id(),
                "API-key secret changed"
            );
        }
        *inner.retired.lock().unwrap_or_else(|p| p.into_inner()) = Some((old, Instant::now()));
        Ok(keys)
    }

    /// Re-reads the keys if they were last read more than `age` ago: what a node does before it
    /// calls an API key unknown (another node may have re-hashed it under a new secret). The
    /// keys, if read.
    pub async fn refresh_if_older(&self, age: Duration) -> Result<Option<Arc<Keys>>> {
        let stale = {
            let held = self.inner.held.read().unwrap_or_else(|p| p.into_inner());
            held.read_at.elapsed() > age
        };
        if stale {
            self.refresh().await.map(Some)
        } else {
            Ok(None)
        }
    }

    /// The keys stored now (read again first): what a new sensitive value is sealed with and a
    /// new API key hashed with. Refused on a node whose master key was rotated away.
    pub async fn fresh(&self) -> Result<Arc<Keys>> {
        let keys = self.refresh().await?;
        if self.inner.outdated.load(Ordering::Relaxed) {
            return Err(Error::MasterKey(
                "the master key was rotated since this node started: restart it with the new \
                 master key (another node can do this meanwhile)"
                    .into(),
            ));
        }
        Ok(keys)
    }

    /// Opens a sensitive value with the keys held, else with the ones stored now (another node
    /// rotated them), else with the keys held until a moment ago.
    pub async fn open(&self, sealed: &str) -> Result<Vec<u8>> {
        if let Ok(plain) = self.get().variables.decrypt(sealed) {
            return Ok(plain);
        }
        let failed = match self.refresh().await?.variables.decrypt(sealed) {
            Ok(plain) => return Ok(plain),
            Err(e) => e,
        };
        let retired = self
            .inner
            .retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match retired {
            Some((keys, at)) if at.elapsed() < RETIRED_FOR => keys.variables.decrypt(sealed),
            _ => Err(failed),
        }
    }
}

fn open(sealed: &SealedDataKeys, master: &MasterKey) -> Result<Keys> {
    Ok(Keys {
        hasher: sealed.open_hasher(master)?,
        variables: sealed.open_variable_keys(master).map_err(|e| match e {
            Error::MasterKey(m) => Error::MasterKey(format!("the variable key: {m}")),
            other => other,
        })?,
    })
}
