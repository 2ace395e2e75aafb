//! Passwords of the web UI's users: Argon2id (RFC 9106, the `argon2` crate's defaults: 19 MiB,
//! two passes, one lane), stored as PHC strings with a random 16-byte salt. Verifying an unknown
//! user costs the same as a known one, so timing does not tell which names exist.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::{Error, Result};

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (a bound on the work one sign-in can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Refuses a password too short or too long to be stored.
pub fn check_password(password: &str) -> std::result::Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "a password has at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("a password has at most {MAX_PASSWORD_BYTES} bytes"));
    }
    Ok(())
}

/// The PHC string to store for `password`.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt)
        .map_err(|e| Error::MasterKey(format!("no randomness for a salt: {e}")))?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| Error::MasterKey(format!("encode a salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::MasterKey(format!("hash a password: {e}")))
}

/// A stored hash no password is known to match (of random bytes, made once): what an unknown
/// user's sign-in is checked against.
fn nobody() -> &'static str {
    static NOBODY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NOBODY.get_or_init(|| {
        let mut secret = [0u8; 32];
        let _ = getrandom::getrandom(&mut secret);
        let text: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        hash_password(&text).unwrap_or_default()
    })
}

/// Whether `password` matches `stored` (a PHC string); `None` for an unknown user, checked at
/// the same cost. A stored value that is not a PHC string never matches.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let (phc, known) = match stored {
        Some(s) => (s, true),
        None => (nobody(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        tracing::error!("a stored password hash is not a PHC string");
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_its_hash_and_nothing_else_does() {
        let stored = hash_password("correct horse battery").unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(verify_password("correct horse battery", Some(&stored)));
        assert!(!verify_password("correct horse batterY", Some(&stored)));
        // Salted: the same password hashes differently each time.
        assert_ne!(stored, hash_password("correct horse battery").unwrap());
        assert!(!verify_password("anything at all", None));
        assert!(!verify_password(
            "correct horse battery",
            Some("not a hash")
        ));
        assert!(!verify_password(&"x".repeat(2000), Some(&stored)));
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert!(check_password("short").is_err());
        assert!(check_password(&"y".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(check_password("twelve chars").is_ok());
    }
}
