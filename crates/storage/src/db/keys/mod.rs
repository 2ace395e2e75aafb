//! The API-keys area of the [`Store`]: keys stored as hashes with their scope, expiry and display
//! prefix; one file per dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use cuttle_core::{Scope, TargetGrant, UnixMs};

use super::{dispatch, Audit, Store};
use crate::crypto::api_keys::{ApiKeyHasher, HashedWith};
use crate::crypto::VariableKeys;
use crate::{Error, MasterKey, Result};

/// The setting holding the API-key HMAC secret, encrypted with the master key.
pub const SETTING_API_KEY_SECRET: &str = "api_key_hmac_key";
/// During a rotation of the API-key secret, the previous one (empty otherwise).
pub const SETTING_API_KEY_SECRET_PREVIOUS: &str = "api_key_hmac_key_previous";
/// The setting holding the key sensitive variables are encrypted with, itself encrypted with
/// the master key (envelope encryption: rotating the master key re-encrypts this one key, not
/// every value).
pub const SETTING_VARIABLE_KEY: &str = "variable_encryption_key";
/// During a rotation of the variable key, the previous one (empty otherwise).
pub const SETTING_VARIABLE_KEY_PREVIOUS: &str = "variable_encryption_key_previous";

/// The data keys as stored, each sealed with the master key; a previous one is empty unless its
/// rotation is under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedDataKeys {
    pub secret: String,
    pub secret_previous: String,
    pub variable: String,
    pub variable_previous: String,
}

impl SealedDataKeys {
    /// The API-key hasher they hold.
    pub fn open_hasher(&self, master: &MasterKey) -> Result<ApiKeyHasher> {
        let previous = match self.secret_previous.as_str() {
            "" => None,
            sealed => Some(master.decrypt(sealed)?),
        };
        ApiKeyHasher::from_secrets(&master.decrypt(&self.secret)?, previous.as_deref())
    }

    /// The variable keys they hold.
    pub fn open_variable_keys(&self, master: &MasterKey) -> Result<VariableKeys> {
        let open = |sealed: &str| -> Result<MasterKey> {
            let b64 = String::from_utf8(master.decrypt(sealed)?)
                .map_err(|_| Error::MasterKey("the variable key is not text".into()))?;
            MasterKey::parse(&b64)
        };
        let previous = match self.variable_previous.as_str() {
            "" => None,
            sealed => Some(open(sealed)?),
        };
        Ok(VariableKeys::new(open(&self.variable)?, previous))
    }
}

/// A key to store: never the key itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub name: String,
    pub scope: Scope,
    /// The start of the key, kept in clear for display.
    pub prefix: String,
    /// [`ApiKeyHasher::hash`] of the key.
    pub hash: String,
    /// Seconds from now (the database clock) until the key stops working; never when `None`.
    pub expires_in_secs: Option<u32>,
    /// For `register-target` keys: the one target the key may register.
    pub target_name: Option<String>,
    /// For `register-target` keys: what that target may claim.
    pub grant: Option<TargetGrant>,
    /// [`ApiKeyHasher::algorithm`] of the hasher that made `hash`.
    pub algorithm: String,
}

/// An API key as stored, without its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    pub prefix: String,
    pub created_at: UnixMs,
    pub expires_at: Option<UnixMs>,
    pub target_name: Option<String>,
    /// For `register-target` keys: what its target may claim (none stored: nothing).
    pub grant: Option<TargetGrant>,
    /// What its stored hash was made with: bare SHA-256 (made before schema 5 and not used
    /// since), or the HMAC secret named.
    pub hashed_with: HashedWith,
}

/// What a revoke did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    Revoked,
    NotFound,
    /// It is the last admin key that works: kept.
    LastAdmin,
}

/// How a revoke decides, from what it read under its lock: the key's scope and whether it still
/// works, and how many other admin keys still work.
pub(super) fn decide_revoke(key: Option<(String, bool)>, other_working_admins: i64) -> Revoke {
    match key {
        None => Revoke::NotFound,
        Some((scope, working)) if scope == "admin" && working && other_working_admins == 0 => {
            Revoke::LastAdmin
        }
        Some(_) => Revoke::Revoked,
    }
}

/// A key found by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundApiKey {
    pub key: ApiKeyRow,
    /// Past its expiry by the database clock.
    pub expired: bool,
    /// Which of the hashes looked up it is stored under.
    pub stored_hash: String,
}

/// The columns every dialect reads into an [`ApiKeyRow`], in order (SQL Server converts its
/// DATETIME2 columns to milliseconds in its own list).
pub(super) const KEY_COLUMNS: &str =
    "id, name, scope, prefix, created_at_ms, expires_at_ms, target_name, algorithm, target_grant";

/// A grant as stored (JSON), or none.
pub(super) fn grant_text(grant: Option<&TargetGrant>) -> Option<String> {
    grant.map(|g| serde_json::to_string(g).unwrap_or_default())
}

/// Builds a row from its stored text, refusing a scope or algorithm this binary does not know
/// (a row from a newer version, or a damaged one) rather than guessing.
#[allow(clippy::too_many_arguments)]
pub(super) fn key_row(
    id: i64,
    name: String,
    scope: &str,
    prefix: String,
    created_at: UnixMs,
    expires_at: Option<UnixMs>,
    target_name: Option<String>,
    algorithm: &str,
    grant: Option<String>,
) -> Result<ApiKeyRow> {
    let grant = grant
        .map(|g| serde_json::from_str::<TargetGrant>(&g))
        .transpose()
        .map_err(|e| Error::Database(format!("api_keys row {id}: target_grant: {e}")))?;
    let scope = scope
        .parse()
        .map_err(|e| Error::Database(format!("api_keys row {id}: {e}")))?;
    let hashed_with = HashedWith::parse(algorithm).ok_or_else(|| {
        Error::Database(format!(
            "api_keys row {id}: unknown hash algorithm {algorithm:?}"
        ))
    })?;
    Ok(ApiKeyRow {
        id,
        name,
        scope,
        prefix,
        created_at,
        expires_at,
        target_name,
        grant,
        hashed_with,
    })
}

impl Store {
    /// The cluster's API-key hasher: its secret is made by the first node to ask (two racing
    /// nodes agree on one) and stored encrypted with the master key; during a rotation, the
    /// previous secret too.
    pub async fn api_key_hasher(&self, master: &MasterKey) -> Result<ApiKeyHasher> {
        let sealed = self.sealed_data_keys(master).await?;
        sealed.open_hasher(master)
    }

    /// The cluster's keys for sensitive values: the current one, made by the first node to ask
    /// (two racing nodes agree on one) and stored encrypted with the master key; during a
    /// rotation, the previous one too.
    pub async fn variable_keys(&self, master: &MasterKey) -> Result<VariableKeys> {
        let sealed = self.sealed_data_keys(master).await?;
        sealed.open_variable_keys(master)
    }

    /// The data keys as stored (sealed with the master key); a current one missing is made
    /// (two racing nodes agree on one). A consistent set: every rotation changes a current
    /// key, so the current ones are read again after the previous ones, and all four again if a
    /// rotation committed in between.
    pub async fn sealed_data_keys(&self, master: &MasterKey) -> Result<SealedDataKeys> {
        for _ in 0..5 {
            let (secret, variable) = self.current_data_keys(master).await?;
            let secret_previous = self
                .get_setting(SETTING_API_KEY_SECRET_PREVIOUS)
                .await?
                .unwrap_or_default();
            let variable_previous = self
                .get_setting(SETTING_VARIABLE_KEY_PREVIOUS)
                .await?
                .unwrap_or_default();
            if self.current_data_keys(master).await? == (secret.clone(), variable.clone()) {
                return Ok(SealedDataKeys {
                    secret,
                    secret_previous,
                    variable,
                    variable_previous,
                });
            }
        }
        Err(Error::Conflict(
            "the data keys keep changing (rotations running): try again".into(),
        ))
    }

    /// The current API-key secret and variable key as stored, each made when missing.
    async fn current_data_keys(&self, master: &MasterKey) -> Result<(String, String)> {
        let secret = match self.get_setting(SETTING_API_KEY_SECRET).await? {
            Some(v) => v,
            None => {
                let fresh = master.encrypt(&ApiKeyHasher::generate_secret()?)?;
                self.init_setting(SETTING_API_KEY_SECRET, &fresh).await?
            }
        };
        let variable = match self.get_setting(SETTING_VARIABLE_KEY).await? {
            Some(v) => v,
            None => {
                let (_, b64) = MasterKey::generate()?;
                let fresh = master.encrypt(b64.as_bytes())?;
                self.init_setting(SETTING_VARIABLE_KEY, &fresh).await?
            }
        };
        Ok((secret, variable))
    }

    pub async fn api_key_count(&self) -> Result<u64> {
        dispatch!(self, b => b.api_key_count().await)
    }

    /// Stores a key with its audit event, built from the new key's id. `None` (and no event)
    /// when a key with this hash is already stored.
    pub async fn insert_api_key(
        &self,
        key: &NewApiKey,
        audit: Option<Audit<i64>>,
    ) -> Result<Option<i64>> {
        dispatch!(self, b => b.insert_api_key(key, audit).await)
    }

    /// The key stored under `hash`, or under one of `others` (at most two: the hash under the
    /// previous HMAC secret during a rotation, the bare SHA-256 of a key made before schema 5):
    /// one query whichever it is.
    pub async fn find_api_key(&self, hash: &str, others: &[&str]) -> Result<Option<FoundApiKey>> {
        if others.len() > 2 {
            return Err(Error::Invalid("at most three hashes are looked up".into()));
        }
        let at = |i: usize| others.get(i).copied().unwrap_or(hash);
        dispatch!(self, b => b.find_api_key([hash, at(0), at(1)]).await)
    }

    /// Re-stores a key under its hash made now (`algorithm` names how), if it is still stored
    /// under `from`: a key already re-hashed (by another node) is left alone. True when changed.
    pub async fn upgrade_api_key_hash(
        &self,
        id: i64,
        from: &str,
        to: &str,
        algorithm: &str,
    ) -> Result<bool> {
        dispatch!(self, b => b.upgrade_api_key_hash(id, from, to, algorithm).await)
    }

    /// Names the secret of every key hashed before secrets had ids (`hmac-sha256`, the
    /// cluster's first secret) as `algorithm`: done before that secret's first rotation, so
    /// what still waits to be re-hashed under the next one is known. How many were named.
    pub async fn name_unnamed_key_hashes(&self, algorithm: &str) -> Result<u64> {
        dispatch!(self, b => b.name_unnamed_key_hashes(algorithm).await)
    }

    /// Every API key (never a key or its hash), oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        dispatch!(self, b => b.list_api_keys().await)
    }

    /// Revokes (deletes) an API key with its audit event — unless it is the cluster's last
    /// working admin key: then nothing changes. Decided in the one transaction that deletes,
    /// holding every admin key, so two revokes at once never leave the cluster without one.
    pub async fn revoke_api_key(&self, id: i64, audit: Option<Audit<()>>) -> Result<Revoke> {
        dispatch!(self, b => b.revoke_api_key(id, audit).await)
    }
}
