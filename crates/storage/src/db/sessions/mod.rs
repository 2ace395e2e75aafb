//! The web UI's sessions: a random id in the browser's cookie, and here its HMAC, who signed in
//! and when it ends — fixed when it is made, by the database clock. Signing out deletes the row,
//! so a copied cookie stops working on every node; a session whose key was revoked or whose
//! user changed is refused by the API's own checks. One file per dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use cuttle_core::UnixMs;

use super::{dispatch, Audit, Store};
use crate::{Error, Result};

/// Longest session a sign-in makes, in seconds: twelve hours.
pub const MAX_SESSION_SECS: u32 = 12 * 3600;

/// Who a session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOf {
    /// Signed in with an API key: its HMAC, as `api_keys.key_hash` holds it.
    Key(String),
    /// A user of the web UI, at the version of their record they signed in at.
    User { id: i64, version: i64 },
}

/// A session to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// The HMAC of the id the browser holds (never the id).
    pub id_hash: String,
    pub of: SessionOf,
    /// Seconds from now (database clock); at most [`MAX_SESSION_SECS`].
    pub lifetime_secs: u32,
}

/// A session as stored, while it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub of: SessionOf,
    pub created_at: UnixMs,
    pub expires_at: UnixMs,
}

/// A row from its columns, refusing one that names neither a key nor a user (or both).
pub(super) fn session_row(
    key_hash: Option<String>,
    user: (Option<i64>, Option<i64>),
    created_at: UnixMs,
    expires_at: UnixMs,
) -> Result<SessionRow> {
    let of = match (key_hash, user) {
        (Some(k), (None, None)) => SessionOf::Key(k),
        (None, (Some(id), Some(version))) => SessionOf::User { id, version },
        _ => {
            return Err(Error::Database(
                "ui_sessions row names neither one API key nor one user".into(),
            ))
        }
    };
    Ok(SessionRow {
        of,
        created_at,
        expires_at,
    })
}

/// The columns a new session's row takes from [`SessionOf`].
pub(super) fn columns(of: &SessionOf) -> (Option<&str>, Option<i64>, Option<i64>) {
    match of {
        SessionOf::Key(k) => (Some(k.as_str()), None, None),
        SessionOf::User { id, version } => (None, Some(*id), Some(*version)),
    }
}

impl Store {
    /// Stores a session with its audit event (and removes sessions that have ended by now).
    pub async fn create_session(&self, s: &NewSession, audit: Option<Audit<()>>) -> Result<()> {
        if s.lifetime_secs == 0 || s.lifetime_secs > MAX_SESSION_SECS {
            return Err(Error::Invalid(format!(
                "a session lasts 1 to {MAX_SESSION_SECS} seconds"
            )));
        }
        dispatch!(self, b => b.create_session(s, audit).await)
    }

    /// The session stored under `id_hash`, unless it has ended (by the database clock).
    pub async fn find_session(&self, id_hash: &str) -> Result<Option<SessionRow>> {
        dispatch!(self, b => b.find_session(id_hash).await)
    }

    /// Ends a session (sign-out), with its audit event; false when there was none.
    pub async fn end_session(&self, id_hash: &str, audit: Option<Audit<()>>) -> Result<bool> {
        dispatch!(self, b => b.end_session(id_hash, audit).await)
    }
}
