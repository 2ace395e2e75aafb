//! API keys at rest: HMAC-SHA-256 under a cluster secret that only the master key unlocks, so a
//! copy of the database alone cannot test guesses against the stored hashes.
//!
//! The HMAC key is 32 random bytes made once per cluster and stored encrypted with the master
//! key (setting `api_key_hmac_key`), not derived from the master key: rotating the master key
//! re-encrypts it, and every API key keeps working. The secret itself is rotated with
//! `cuttle-server api-key-secret rotate`: the previous one (setting
//! `api_key_hmac_key_previous`) still finds keys stored under it, each re-hashed under the new
//! one at its next use, until `finish` forgets it. Each key's row names the secret its hash was
//! made with (`hmac-sha256/<secret id>`), so what still waits for re-hashing is known.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// How a key's hash was made: `hmac-sha256/<secret id>` for keys stored since the secret could
/// be rotated, `hmac-sha256` for keys stored before (under the cluster's first secret), `sha256`
/// for keys older than schema 5 until their next use re-hashes them.
pub(crate) const HMAC_SHA256: &str = "hmac-sha256";
pub(crate) const LEGACY_SHA256: &str = "sha256";
/// Hex characters of a secret's id (`hmac-sha256/` and these fit the 20-character column).
const SECRET_ID_LEN: usize = 8;

/// The secret a stored hash was made with, read from its row's `algorithm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashedWith {
    /// Bare SHA-256 (made before schema 5).
    Legacy,
    /// HMAC under the cluster's first secret, stored before secrets had ids.
    UnnamedSecret,
    /// HMAC under the secret with this id.
    Secret(String),
}

impl HashedWith {
    /// Reads an `algorithm` column; `None` for one this binary does not know.
    pub(crate) fn parse(algorithm: &str) -> Option<HashedWith> {
        match algorithm {
            LEGACY_SHA256 => Some(HashedWith::Legacy),
            HMAC_SHA256 => Some(HashedWith::UnnamedSecret),
            other => {
                let id = other.strip_prefix("hmac-sha256/")?;
                (id.len() == SECRET_ID_LEN
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                .then(|| HashedWith::Secret(id.to_owned()))
            }
        }
    }
}

/// Characters of a generated key shown in lists: `API-` and 4 of its 32 random characters (24
/// of its 192 bits).
const PREFIX_LEN: usize = 8;

/// Hashes API keys for storage and lookup. `Debug` never shows the secret.
#[derive(Clone)]
pub struct ApiKeyHasher {
    secret: [u8; 32],
    /// During a rotation: the secret before, still used to find keys not re-hashed yet.
    previous: Option<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeyHasher(redacted)")
    }
}

impl ApiKeyHasher {
    /// The current secret and, during a rotation, the previous one.
    pub fn from_secrets(secret: &[u8], previous: Option<&[u8]>) -> Result<ApiKeyHasher> {
        let check = |s: &[u8]| -> Result<[u8; 32]> {
            s.try_into().map_err(|_| {
                Error::MasterKey(format!(
                    "the API-key HMAC secret is {} bytes, not 32",
                    s.len()
                ))
            })
        };
        Ok(ApiKeyHasher {
            secret: check(secret)?,
            previous: previous.map(check).transpose()?,
        })
    }

    /// A new random secret (stored encrypted by the caller).
    pub fn generate_secret() -> Result<[u8; 32]> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret)
            .map_err(|e| Error::MasterKey(format!("no randomness for a secret: {e}")))?;
        Ok(secret)
    }

    /// HMAC-SHA-256 of the key (surrounding spaces ignored), hex: what is stored and looked up.
    pub fn hash(&self, key: &str) -> String {
        hmac_hex(&self.secret, key.trim().as_bytes())
    }

    /// During a rotation, the hash under the previous secret: how a key not re-hashed yet is
    /// stored.
    pub fn previous_hash(&self, key: &str) -> Option<String> {
        self.previous.map(|p| hmac_hex(&p, key.trim().as_bytes()))
    }

    /// The id of the current secret (the start of an HMAC it makes: it tells secrets apart and
    /// reveals nothing of them).
    pub fn secret_id(&self) -> String {
        secret_id(&self.secret)
    }

    /// During a rotation, the id of the previous secret.
    pub fn previous_id(&self) -> Option<String> {
        self.previous.as_ref().map(secret_id)
    }

    /// What a key hashed now records as its `algorithm`.
    pub fn algorithm(&self) -> String {
        format!("{HMAC_SHA256}/{}", self.secret_id())
    }

    /// Whether a key's stored hash is under the current secret (else it is re-hashed at its
    /// next use, and a rotation's `finish` waits for it). A hash from before secrets had ids is
    /// under the cluster's first secret: current until the first rotation.
    pub fn is_current(&self, with: &HashedWith) -> bool {
        match with {
            HashedWith::Legacy => false,
            HashedWith::UnnamedSecret => self.previous.is_none(),
            HashedWith::Secret(id) => *id == self.secret_id(),
        }
    }

    /// Bare SHA-256 of the key, hex: how keys were stored before schema 5, looked up only to
    /// re-hash such a key at its next use.
    pub fn legacy_hash(key: &str) -> String {
        hex(&Sha256::digest(key.trim().as_bytes()))
    }
}

fn hmac_hex(secret: &[u8], data: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(data);
    hex(&mac.finalize().into_bytes())
}

fn secret_id(secret: &[u8; 32]) -> String {
    hmac_hex(secret, b"cuttle api-key secret id")[..SECRET_ID_LEN].to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random API key: `API-` and 32 characters of URL-safe base64 (192 bits).
pub fn generate_api_key() -> Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| Error::MasterKey(format!("no randomness for an API key: {e}")))?;
    Ok(format!("API-{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// A new web UI session id: 256 random bits, URL-safe base64 (a cookie value as it is).
pub fn generate_session_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| Error::MasterKey(format!("no randomness for a session: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The start of a key kept in clear to tell keys apart in lists: 8 characters of a generated
/// key (`API-` and 24 random bits), 4 of any other (an operator-chosen `CUTTLE_ADMIN_API_KEY`
/// may be as short as 22 characters; it keeps over 100 bits hidden).
pub fn key_prefix(key: &str) -> String {
    let key = key.trim();
    let n = if key.starts_with("API-") && key.len() >= 24 {
        PREFIX_LEN
    } else {
        4
    };
    key.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_hmac_under_the_cluster_secret() {
        let a = ApiKeyHasher::from_secrets(&[1u8; 32], None).unwrap();
        let b = ApiKeyHasher::from_secrets(&[2u8; 32], None).unwrap();
        let key = generate_api_key().unwrap();
        assert_eq!(a.hash(&key), a.hash(&format!(" {key} ")));
        assert_ne!(a.hash(&key), b.hash(&key), "another secret, another hash");
        assert_ne!(a.hash(&key), ApiKeyHasher::legacy_hash(&key));
        // RFC 4231 test case 2: key "Jefe", "what do ya want for nothing?".
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            ApiKeyHasher::legacy_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(ApiKeyHasher::from_secrets(&[0u8; 16], None).is_err());
        assert!(!format!("{a:?}").contains('1'));
    }

    #[test]
    fn a_rotated_secret_still_finds_keys_hashed_under_the_previous_one() {
        let old = ApiKeyHasher::from_secrets(&[1u8; 32], None).unwrap();
        let both = ApiKeyHasher::from_secrets(&[2u8; 32], Some(&[1u8; 32])).unwrap();
        let key = generate_api_key().unwrap();
        assert_eq!(both.previous_hash(&key), Some(old.hash(&key)));
        assert_ne!(both.hash(&key), old.hash(&key));
        assert_eq!(old.previous_hash(&key), None);
        assert_eq!(both.previous_id(), Some(old.secret_id()));
        assert_ne!(both.secret_id(), old.secret_id());
        let label = both.algorithm();
        assert!(label.len() <= 20, "fits the column: {label}");
        let with = HashedWith::parse(&label).unwrap();
        assert!(both.is_current(&with));
        assert!(!both.is_current(&HashedWith::parse(&old.algorithm()).unwrap()));
        assert!(old.is_current(&HashedWith::UnnamedSecret));
        assert!(!both.is_current(&HashedWith::UnnamedSecret));
        assert!(!both.is_current(&HashedWith::Legacy));
        for bad in [
            "hmac-sha256/",
            "hmac-sha256/ABCDEF12",
            "hmac-sha256/abc",
            "md5",
        ] {
            assert_eq!(HashedWith::parse(bad), None, "{bad}");
        }
        assert!(!format!("{both:?}").contains('2'));
    }

    #[test]
    fn generated_keys_are_random_and_show_a_short_prefix() {
        let (k1, k2) = (generate_api_key().unwrap(), generate_api_key().unwrap());
        assert_ne!(k1, k2);
        assert!(k1.starts_with("API-") && k1.len() == 36, "{k1}");
        assert_eq!(key_prefix(&k1), k1[..8]);
        assert_eq!(key_prefix("s3cr3t-operator-chosen-key"), "s3cr");
    }
}
