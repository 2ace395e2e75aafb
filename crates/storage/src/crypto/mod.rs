//! The master key: AES-GCM encryption of secrets at rest, and the key-check value that lets a
//! node prove it holds the same key as the rest of the cluster.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::{Error, Result};

pub(crate) mod api_keys;
pub mod passwords;

/// The plaintext whose encryption is the key-check value.
const KEY_CHECK_PLAINTEXT: &[u8] = b"cuttle master key check v1";

/// The cluster's master key. Never printed: `Debug` shows only its length.
#[derive(Clone)]
pub struct MasterKey {
    cipher: Cipher,
    bits: usize,
}

#[derive(Clone)]
enum Cipher {
    Aes128(Box<Aes128Gcm>),
    Aes256(Box<Aes256Gcm>),
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(AES-{}-GCM, redacted)", self.bits)
    }
}

impl MasterKey {
    /// Parses the base64 of 16 or 32 random bytes.
    pub fn parse(b64: &str) -> Result<MasterKey> {
        let bytes = B64
            .decode(b64.trim())
            .map_err(|_| Error::MasterKey("master key is not valid base64".into()))?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<MasterKey> {
        let cipher = match bytes.len() {
            16 => Cipher::Aes128(Box::new(
                Aes128Gcm::new_from_slice(bytes).expect("16-byte key"),
            )),
            32 => Cipher::Aes256(Box::new(
                Aes256Gcm::new_from_slice(bytes).expect("32-byte key"),
            )),
            n => {
                return Err(Error::MasterKey(format!(
                    "master key must be 16 or 32 bytes, got {n}"
                )))
            }
        };
        Ok(MasterKey {
            cipher,
            bits: bytes.len() * 8,
        })
    }

    /// A new random 32-byte key and its base64 form (the only time it is shown).
    pub fn generate() -> Result<(MasterKey, String)> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| Error::MasterKey(format!("no randomness for a master key: {e}")))?;
        Ok((Self::from_bytes(&bytes)?, B64.encode(bytes)))
    }

    /// Encrypts with a fresh random nonce; returns base64 of nonce ‖ ciphertext ‖ tag.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String> {
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce)
            .map_err(|e| Error::MasterKey(format!("no randomness for a nonce: {e}")))?;
        let n = Nonce::from_slice(&nonce);
        let sealed = match &self.cipher {
            Cipher::Aes128(c) => c.encrypt(n, plaintext),
            Cipher::Aes256(c) => c.encrypt(n, plaintext),
        }
        .map_err(|_| Error::MasterKey("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(B64.encode(out))
    }

    /// Decrypts what [`MasterKey::encrypt`] produced; fails if the key differs or the data
    /// was altered.
    pub fn decrypt(&self, sealed_b64: &str) -> Result<Vec<u8>> {
        let bad = || Error::MasterKey("cannot decrypt: wrong master key or corrupted data".into());
        let raw = B64.decode(sealed_b64).map_err(|_| bad())?;
        if raw.len() < 12 + 16 {
            return Err(bad());
        }
        let (nonce, sealed) = raw.split_at(12);
        let n = Nonce::from_slice(nonce);
        match &self.cipher {
            Cipher::Aes128(c) => c.decrypt(n, sealed),
            Cipher::Aes256(c) => c.decrypt(n, sealed),
        }
        .map_err(|_| bad())
    }

    /// The value stored in the database to recognise this key later.
    pub fn key_check_value(&self) -> Result<String> {
        self.encrypt(KEY_CHECK_PLAINTEXT)
    }

    /// Fails with a one-line reason unless `kcv` was made with this key.
    pub fn verify(&self, kcv: &str) -> Result<()> {
        match self.decrypt(kcv) {
            Ok(p) if p == KEY_CHECK_PLAINTEXT => Ok(()),
            _ => Err(Error::MasterKey(
                "the master key does not match this database (key-check value differs); \
                 use the key the cluster was created with"
                    .into(),
            )),
        }
    }
}

/// The keys sensitive values are sealed with: the current one, and during a rotation the one
/// before, which still opens values not re-sealed yet. `Debug` shows no key.
#[derive(Clone, Debug)]
pub struct VariableKeys {
    current: MasterKey,
    previous: Option<MasterKey>,
}

impl VariableKeys {
    pub fn new(current: MasterKey, previous: Option<MasterKey>) -> VariableKeys {
        VariableKeys { current, previous }
    }

    /// Seals with the current key.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String> {
        self.current.encrypt(plaintext)
    }

    /// Opens with the current key, else the previous one.
    pub fn decrypt(&self, sealed: &str) -> Result<Vec<u8>> {
        match (self.current.decrypt(sealed), &self.previous) {
            (Ok(p), _) => Ok(p),
            (Err(_), Some(previous)) => previous.decrypt(sealed),
            (Err(e), None) => Err(e),
        }
    }

    /// A value only the previous key opens, sealed again with the current one; `None` when the
    /// current key opens it already. A value neither key opens is an error.
    pub fn reseal(&self, sealed: &str) -> Result<Option<String>> {
        if self.current.decrypt(sealed).is_ok() {
            return Ok(None);
        }
        let previous = self.previous.as_ref().ok_or_else(|| {
            Error::MasterKey("a sensitive value the variable key does not open".into())
        })?;
        let plain = previous
            .decrypt(sealed)
            .map_err(|_| Error::MasterKey("a sensitive value neither variable key opens".into()))?;
        self.current.encrypt(&plain).map(Some)
    }

    /// Whether a previous key is still held (a rotation not finished).
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_keys_open_both_generations_and_reseal_only_the_old_one() {
        let (old, _) = MasterKey::generate().unwrap();
        let (new, _) = MasterKey::generate().unwrap();
        let sealed_old = old.encrypt(b"hunter2").unwrap();
        let ring = VariableKeys::new(new.clone(), Some(old.clone()));
        assert_eq!(ring.decrypt(&sealed_old).unwrap(), b"hunter2");
        let resealed = ring.reseal(&sealed_old).unwrap().expect("re-sealed");
        assert!(
            old.decrypt(&resealed).is_err(),
            "the old key no longer opens it"
        );
        assert_eq!(new.decrypt(&resealed).unwrap(), b"hunter2");
        assert_eq!(ring.reseal(&resealed).unwrap(), None, "current already");
        let (other, _) = MasterKey::generate().unwrap();
        assert!(ring.reseal(&other.encrypt(b"x").unwrap()).is_err());
        let only_new = VariableKeys::new(new, None);
        assert!(only_new.decrypt(&sealed_old).is_err());
        assert!(only_new.reseal(&sealed_old).is_err());
    }

    #[test]
    fn round_trips_and_detects_wrong_keys() {
        let (k, b64) = MasterKey::generate().unwrap();
        let again = MasterKey::parse(&b64).unwrap();
        let sealed = k.encrypt(b"s3cret").unwrap();
        assert_eq!(again.decrypt(&sealed).unwrap(), b"s3cret");
        let kcv = k.key_check_value().unwrap();
        again.verify(&kcv).unwrap();
        let (other, _) = MasterKey::generate().unwrap();
        assert!(other.verify(&kcv).is_err());
        assert!(other.decrypt(&sealed).is_err());
        // Two encryptions of one plaintext differ (fresh nonce).
        assert_ne!(k.encrypt(b"x").unwrap(), k.encrypt(b"x").unwrap());
    }

    #[test]
    fn accepts_16_and_32_byte_keys_only() {
        let k16 = MasterKey::parse(&B64.encode([7u8; 16])).unwrap();
        assert_eq!(k16.decrypt(&k16.encrypt(b"a").unwrap()).unwrap(), b"a");
        assert!(MasterKey::parse(&B64.encode([7u8; 24])).is_err());
        assert!(MasterKey::parse("not base64!").is_err());
        assert!(
            !format!("{k16:?}").contains("Bw"),
            "debug must not show key bytes"
        );
    }
}
