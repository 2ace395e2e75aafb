//! The documents area of the [`Store`]: configuration aggregates (spaces, environments,
//! lifecycles, projects with their process and variables, runbooks) kept as versioned JSON
//! bodies behind one generic API, implemented once per dialect, so a new aggregate needs no new
//! SQL. Releases, deployments and the queue stay relational.
//!
//! Every write is checked against the version the caller read (optimistic concurrency: a stale
//! write changes nothing and says which version is current) and commits with its audit event.

mod mssql;
mod postgres;
mod sqlite;

use cuttle_core::UnixMs;

use super::{dispatch, Audit, Store};
use crate::{Error, Result};

/// Longest document name.
pub const MAX_DOCUMENT_NAME_LEN: usize = 200;

/// A stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: i64,
    /// The id of the space holding it (`""` for a space).
    pub space: String,
    pub kind: String,
    pub name: String,
    /// Its place among the documents of its kind in its space (lists are in this order).
    pub position: i64,
    /// 1 when created, one more at each change.
    pub version: i64,
    pub body: serde_json::Value,
    pub created_at: UnixMs,
    pub modified_at: UnixMs,
}

/// A document to create, or what to replace one with.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentWrite<'a> {
    pub space: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub body: &'a serde_json::Value,
}

/// What became of a write checked against a version.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    Done(Document),
    NotFound,
    /// The document changed since the caller read it: this is its current version.
    Stale {
        current: i64,
    },
}

/// A `documents` row as stored; the body is JSON text.
#[derive(Clone)]
pub(crate) struct DocumentRow {
    pub(crate) id: i64,
    pub(crate) space: String,
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) position: i64,
    pub(crate) version: i64,
    pub(crate) body: String,
    pub(crate) created_at: UnixMs,
    pub(crate) modified_at: UnixMs,
}

impl DocumentRow {
    /// The document as just written, with the body the writer gave (no need to parse it back).
    pub(crate) fn with_body(&self, body: &serde_json::Value) -> Document {
        Document {
            id: self.id,
            space: self.space.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            position: self.position,
            version: self.version,
            body: body.clone(),
            created_at: self.created_at,
            modified_at: self.modified_at,
        }
    }

    /// The document, refusing a body that is not JSON rather than guessing.
    pub(crate) fn parse(self) -> Result<Document> {
        let body = serde_json::from_str(&self.body).map_err(|e| {
            Error::Database(format!("documents row {}: body is not JSON: {e}", self.id))
        })?;
        Ok(Document {
            id: self.id,
            space: self.space,
            kind: self.kind,
            name: self.name,
            position: self.position,
            version: self.version,
            body,
            created_at: self.created_at,
            modified_at: self.modified_at,
        })
    }
}

/// The columns every dialect reads into a [`DocumentRow`], in order (SQL Server converts its
/// times to milliseconds in its own list).
pub(crate) const DOCUMENT_COLUMNS: &str =
    "seq, space, kind, name, position, version, body, created_at_ms, modified_at_ms";

/// The key names are unique by: the same whatever the case.
pub(crate) fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
}

fn conflict(w: &DocumentWrite<'_>) -> Error {
    let kind = w.kind.to_lowercase();
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    Error::Conflict(format!(
        "{article} {kind} named {:?} already exists",
        w.name
    ))
}

fn check(w: &DocumentWrite<'_>) -> Result<String> {
    let name = w.name.trim();
    if name.is_empty() || name.chars().count() > MAX_DOCUMENT_NAME_LEN {
        return Err(Error::Invalid(format!(
            "name: 1 to {MAX_DOCUMENT_NAME_LEN} characters"
        )));
    }
    serde_json::to_string(w.body).map_err(|e| Error::Invalid(format!("body: {e}")))
}

impl Store {
    /// Creates a document at the end of its kind's order, with its audit event (built from the
    /// new document). A name already used by that kind in that space is a [`Error::Conflict`].
    pub async fn create_document(
        &self,
        w: &DocumentWrite<'_>,
        audit: Option<Audit<Document>>,
    ) -> Result<Document> {
        let body = check(w)?;
        let key = name_key(w.name);
        let row =
            dispatch!(self, b => b.create_document(w, &key, &body, audit).await).map_err(|e| {
                match e {
                    Error::Conflict(_) => conflict(w),
                    other => other,
                }
            })?;
        row.parse()
    }

    pub async fn get_document(&self, space: &str, kind: &str, id: i64) -> Result<Option<Document>> {
        dispatch!(self, b => b.get_document(space, kind, id).await)?
            .map(DocumentRow::parse)
            .transpose()
    }

    /// The document of this kind named `name` (whatever its case), if any.
    pub async fn find_document(
        &self,
        space: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<Document>> {
        dispatch!(self, b => b.find_document(space, kind, &name_key(name)).await)?
            .map(DocumentRow::parse)
            .transpose()
    }

    /// Every document of a kind in a space, in their order.
    pub async fn list_documents(&self, space: &str, kind: &str) -> Result<Vec<Document>> {
        dispatch!(self, b => b.list_documents(space, kind).await)?
            .into_iter()
            .map(DocumentRow::parse)
            .collect()
    }

    /// Replaces a document's name and body if it is still at `expected_version`.
    pub async fn update_document(
        &self,
        id: i64,
        expected_version: i64,
        w: &DocumentWrite<'_>,
        audit: Option<Audit<Document>>,
    ) -> Result<Written> {
        let body = check(w)?;
        let key = name_key(w.name);
        let outcome = dispatch!(self, b => b.update_document(id, expected_version, w, &key, &body, audit).await)
            .map_err(|e| match e {
                Error::Conflict(_) => conflict(w),
                other => other,
            })?;
        Ok(match outcome {
            RowWritten::Done(row) => Written::Done(row.parse()?),
            RowWritten::NotFound => Written::NotFound,
            RowWritten::Stale { current } => Written::Stale { current },
        })
    }

    /// Deletes a document if it is still at `expected_version` (any version when `None`).
    pub async fn delete_document(
        &self,
        space: &str,
        kind: &str,
        id: i64,
        expected_version: Option<i64>,
        audit: Option<Audit<()>>,
    ) -> Result<Written> {
        let outcome = dispatch!(self, b => b.delete_document(space, kind, id, expected_version, audit).await)?;
        Ok(match outcome {
            RowWritten::Done(row) => Written::Done(row.parse()?),
            RowWritten::NotFound => Written::NotFound,
            RowWritten::Stale { current } => Written::Stale { current },
        })
    }

    /// Puts every document of a kind in a space in the order of `ids`, which must name each of
    /// them exactly once (false, and nothing changes, otherwise).
    pub async fn reorder_documents(
        &self,
        space: &str,
        kind: &str,
        ids: &[i64],
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != ids.len() {
            return Ok(false);
        }
        dispatch!(self, b => b.reorder_documents(space, kind, ids, audit).await)
    }
}

/// [`Written`] before the body is parsed.
pub(crate) enum RowWritten {
    Done(DocumentRow),
    NotFound,
    Stale { current: i64 },
}
