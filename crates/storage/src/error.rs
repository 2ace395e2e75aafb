/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached (connect, pool timeout, dropped connection). Safe to
    /// retry later; the ping reports 503 while this lasts.
    #[error("database {target} is unreachable: {reason}")]
    Unavailable { target: String, reason: String },
    /// The URL names no supported database or is malformed.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// The database answered with an error.
    #[error("database error: {0}")]
    Database(String),
    /// The write would break a uniqueness rule (a name or thumbprint already in use).
    #[error("{0}")]
    Conflict(String),
    /// What the caller asked to store breaks a rule the store checks (a name too long).
    #[error("{0}")]
    Invalid(String),
    /// The database holds a schema this binary does not know.
    #[error("database schema version {found} is newer than this binary supports ({supported}); upgrade cuttle-server")]
    SchemaTooNew { found: u32, supported: u32 },
    /// The schema is older than this binary expects.
    #[error("database schema version {found} is older than this binary expects ({supported}); run `cuttle-server upgrade-database`")]
    SchemaTooOld { found: u32, supported: u32 },
    /// A file in the shared store could not be read or written.
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Another live process holds this node's name (see `Store::register_node`).
    #[error("{0}")]
    NodeNameHeld(String),
    /// Master-key problems: malformed key, or a key that does not match the database.
    #[error("{0}")]
    MasterKey(String),
}

impl Error {
    /// True when the failure is about reaching the database, not about the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    pub fn io(context: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            context,
            path: path.to_owned(),
            source,
        }
    }
}
