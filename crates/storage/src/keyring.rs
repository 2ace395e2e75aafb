//! A node's data keys — the API-key HMAC secret and the variable key, each with its previous
//! one during a rotation — kept current while the node runs.
//!
//! A rotation (`cuttle-server variable-key rotate`, `api-key-secret rotate`) changes the stored
//! keys while nodes run. A node re-reads them every few seconds ([`Keyring::refresh`]); it
//! seals a new sensitive value only with the key stored at that moment ([`Keyring::seal`]), and
//! a value its held keys cannot open makes it re-read them once before failing
//! ([`Keyring::open`]). A node whose master key was rotated away (it runs until its restart
//! with the new one) keeps the keys it holds: a data-key rotation waits until no such node is
//! left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::crypto::api_keys::ApiKeyHasher;
use crate::crypto::VariableKeys;
use crate::db::SealedDataKeys;
use crate::{Error, MasterKey, Result, Store};

/// The setting holding the master key's key-check value.
pub const SETTING_MASTER_KEY_CHECK: &str = "master_key_check";
/// When the master key was last rotated (milliseconds since the epoch, the rotating host's
/// clock): nodes started before it still hold the previous master key.
pub const SETTING_MASTER_KEY_ROTATED_AT: &str = "master_key_rotated_at_ms";

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
    held: RwLock<(SealedDataKeys, Arc<Keys>)>,
    /// Said once: the master key was rotated and this node holds the previous one.
    told_outdated: AtomicBool,
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
                held: RwLock::new((sealed, Arc::new(keys))),
                told_outdated: AtomicBool::new(false),
            }),
        })
    }

    /// The keys held now.
    pub fn get(&self) -> Arc<Keys> {
        let held = self.inner.held.read().unwrap_or_else(|p| p.into_inner());
        held.1.clone()
    }

    /// Re-reads the stored keys and holds them if they changed (a rotation). A node whose
    /// master key no longer matches the cluster's keeps what it holds (said once in the log).
    pub async fn refresh(&self) -> Result<()> {
        let inner = &self.inner;
        let sealed = inner.store.sealed_data_keys(&inner.master).await?;
        {
            let held = inner.held.read().unwrap_or_else(|p| p.into_inner());
            if held.0 == sealed {
                return Ok(());
            }
        }
        let keys = match open(&sealed, &inner.master) {
            Ok(k) => k,
            Err(e) => {
                let check = inner.store.get_setting(SETTING_MASTER_KEY_CHECK).await?;
                if check.is_some_and(|c| inner.master.verify(&c).is_err()) {
                    if !inner.told_outdated.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "the master key was rotated: this node keeps the data keys it holds \
                             until it is restarted with the new master key"
                        );
                    }
                    return Ok(());
                }
                return Err(e);
            }
        };
        let changed_secret = {
            let held = inner.held.read().unwrap_or_else(|p| p.into_inner());
            held.1.hasher.secret_id() != keys.hasher.secret_id()
                || held.1.hasher.previous_id() != keys.hasher.previous_id()
        };
        if changed_secret {
            tracing::info!(
                secret = %keys.hasher.secret_id(),
                previous = ?keys.hasher.previous_id(),
                "API-key secret changed"
            );
        }
        let mut held = inner.held.write().unwrap_or_else(|p| p.into_inner());
        *held = (sealed, Arc::new(keys));
        Ok(())
    }

    /// The keys stored now (read again first): what a new API key is hashed with.
    pub async fn fresh(&self) -> Result<Arc<Keys>> {
        self.refresh().await?;
        Ok(self.get())
    }

    /// Seals a sensitive value with the variable key stored now (read again first, so a value
    /// written during a rotation is sealed with the new key).
    pub async fn seal(&self, plaintext: &[u8]) -> Result<String> {
        self.fresh().await?.variables.encrypt(plaintext)
    }

    /// Opens a sensitive value with the keys held, else with the ones stored now (another node
    /// rotated them).
    pub async fn open(&self, sealed: &str) -> Result<Vec<u8>> {
        if let Ok(plain) = self.get().variables.decrypt(sealed) {
            return Ok(plain);
        }
        self.refresh().await?;
        self.get().variables.decrypt(sealed)
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
