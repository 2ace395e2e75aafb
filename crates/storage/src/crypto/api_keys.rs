//! API keys at rest: HMAC-SHA-256 under a cluster secret that only the master key unlocks, so a
//! copy of the database alone cannot test guesses against the stored hashes.
//!
//! The HMAC key is 32 random bytes made once per cluster and stored encrypted with the master
//! key (setting `api_key_hmac_key`), not derived from the master key: rotating the master key
//! re-encrypts it, and every API key keeps working.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// How a key's hash was made: `hmac-sha256` for every key stored since schema 5; `sha256` for
/// older ones until their next use re-hashes them.
pub(crate) const HMAC_SHA256: &str = "hmac-sha256";
pub(crate) const LEGACY_SHA256: &str = "sha256";

/// Characters of a generated key shown in lists: `API-` and 4 of its 32 random characters (24
/// of its 192 bits).
const PREFIX_LEN: usize = 8;

/// Hashes API keys for storage and lookup. `Debug` never shows the secret.
#[derive(Clone)]
pub struct ApiKeyHasher {
    secret: [u8; 32],
}

impl std::fmt::Debug for ApiKeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeyHasher(redacted)")
    }
}

impl ApiKeyHasher {
    pub(crate) fn from_secret(secret: &[u8]) -> Result<ApiKeyHasher> {
        let secret = secret.try_into().map_err(|_| {
            Error::MasterKey(format!(
                "the API-key HMAC secret is {} bytes, not 32",
                secret.len()
            ))
        })?;
        Ok(ApiKeyHasher { secret })
    }

    /// A new random secret (stored encrypted by the caller).
    pub(crate) fn generate_secret() -> Result<[u8; 32]> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret)
            .map_err(|e| Error::MasterKey(format!("no randomness for a secret: {e}")))?;
        Ok(secret)
    }

    /// HMAC-SHA-256 of the key (surrounding spaces ignored), hex: what is stored and looked up.
    pub fn hash(&self, key: &str) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.secret)
            .expect("HMAC takes a key of any length");
        mac.update(key.trim().as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Bare SHA-256 of the key, hex: how keys were stored before schema 5, looked up only to
    /// re-hash such a key at its next use.
    pub fn legacy_hash(key: &str) -> String {
        hex(&Sha256::digest(key.trim().as_bytes()))
    }
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
        let a = ApiKeyHasher::from_secret(&[1u8; 32]).unwrap();
        let b = ApiKeyHasher::from_secret(&[2u8; 32]).unwrap();
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
        assert!(ApiKeyHasher::from_secret(&[0u8; 16]).is_err());
        assert!(!format!("{a:?}").contains('1'));
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
