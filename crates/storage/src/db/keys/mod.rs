//! The API-keys area of the [`Store`]: keys stored as hashes with their scope, expiry and display
//! prefix; one file per dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use cuttle_core::{Scope, TargetGrant, UnixMs};

use super::{dispatch, Audit, Store};
use crate::crypto::api_keys::{ApiKeyHasher, HMAC_SHA256, LEGACY_SHA256};
use crate::{Error, MasterKey, Result};

/// The setting holding the API-key HMAC secret, encrypted with the master key.
pub const SETTING_API_KEY_SECRET: &str = "api_key_hmac_key";
/// The setting holding the key sensitive variables are encrypted with, itself encrypted with
/// the master key (envelope encryption: rotating the master key re-encrypts this one key, not
/// every value).
pub const SETTING_VARIABLE_KEY: &str = "variable_encryption_key";

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
    /// Still stored as bare SHA-256 (made before schema 5 and not used since).
    pub legacy_hash: bool,
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
    let legacy_hash = match algorithm {
        HMAC_SHA256 => false,
        LEGACY_SHA256 => true,
        other => {
            return Err(Error::Database(format!(
                "api_keys row {id}: unknown hash algorithm {other:?}"
            )))
        }
    };
    Ok(ApiKeyRow {
        id,
        name,
        scope,
        prefix,
        created_at,
        expires_at,
        target_name,
        grant,
        legacy_hash,
    })
}

impl Store {
    /// The cluster's API-key hasher: its secret is made by the first node to ask (two racing
    /// nodes agree on one) and stored encrypted with the master key.
    pub async fn api_key_hasher(&self, master: &MasterKey) -> Result<ApiKeyHasher> {
        let sealed = match self.get_setting(SETTING_API_KEY_SECRET).await? {
            Some(v) => v,
            None => {
                let fresh = master.encrypt(&ApiKeyHasher::generate_secret()?)?;
                self.init_setting(SETTING_API_KEY_SECRET, &fresh).await?
            }
        };
        ApiKeyHasher::from_secret(&master.decrypt(&sealed)?)
    }

    /// The cluster's key for sensitive values: made by the first node to ask (two racing nodes
    /// agree on one) and stored encrypted with the master key.
    pub async fn variable_key(&self, master: &MasterKey) -> Result<MasterKey> {
        let sealed = match self.get_setting(SETTING_VARIABLE_KEY).await? {
            Some(v) => v,
            None => {
                let (_, b64) = MasterKey::generate()?;
                let fresh = master.encrypt(b64.as_bytes())?;
                self.init_setting(SETTING_VARIABLE_KEY, &fresh).await?
            }
        };
        let b64 = String::from_utf8(master.decrypt(&sealed)?)
            .map_err(|_| Error::MasterKey("the variable key is not text".into()))?;
        MasterKey::parse(&b64)
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

    /// The key stored under `hash`, or under `legacy` (bare SHA-256) for a key made before
    /// schema 5: one query either way.
    pub async fn find_api_key(&self, hash: &str, legacy: &str) -> Result<Option<FoundApiKey>> {
        dispatch!(self, b => b.find_api_key(hash, legacy).await)
    }

    /// Re-stores a legacy key under its HMAC hash (once: a key already upgraded is left alone).
    pub async fn upgrade_api_key_hash(&self, id: i64, hash: &str) -> Result<()> {
        dispatch!(self, b => b.upgrade_api_key_hash(id, hash).await)
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
