//! The releases area of the [`Store`]: a project's numbered snapshots (process and variables as
//! they were); one file per dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use cuttle_core::UnixMs;

use super::{dispatch, Audit, Store};
use crate::{Error, Result};

/// A release to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRelease<'a> {
    /// The space id (`Spaces-1`).
    pub space: &'a str,
    /// The project's document number.
    pub project: i64,
    pub version: &'a str,
    pub notes: &'a str,
    pub snapshot: &'a serde_json::Value,
    pub created_by: &'a str,
}

/// A stored release.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub id: i64,
    pub space: String,
    pub project: i64,
    pub version: String,
    pub notes: String,
    pub snapshot: serde_json::Value,
    pub created_by: String,
    pub created_at: UnixMs,
}

/// A `releases` row as stored; the snapshot is JSON text.
#[derive(Clone)]
pub(crate) struct ReleaseRow {
    pub(crate) id: i64,
    pub(crate) space: String,
    pub(crate) project: i64,
    pub(crate) version: String,
    pub(crate) notes: String,
    pub(crate) snapshot: String,
    pub(crate) created_by: String,
    pub(crate) created_at: UnixMs,
}

impl ReleaseRow {
    /// The release, refusing a snapshot that is not JSON rather than guessing.
    pub(crate) fn parse(self) -> Result<Release> {
        let snapshot = serde_json::from_str(&self.snapshot).map_err(|e| {
            Error::Database(format!(
                "releases row {}: snapshot is not JSON: {e}",
                self.id
            ))
        })?;
        Ok(Release {
            id: self.id,
            space: self.space,
            project: self.project,
            version: self.version,
            notes: self.notes,
            snapshot,
            created_by: self.created_by,
            created_at: self.created_at,
        })
    }
}

/// The columns every dialect reads into a [`ReleaseRow`], in order (SQL Server converts its
/// time to milliseconds in its own list).
pub(crate) const RELEASE_COLUMNS: &str =
    "seq, space, project, version, notes, snapshot, created_by, created_at_ms";

impl Store {
    /// Stores a release with its audit event (built from the new release). A version the
    /// project already has (whatever its case) is a [`Error::Conflict`].
    pub async fn create_release(
        &self,
        r: &NewRelease<'_>,
        audit: Option<Audit<Release>>,
    ) -> Result<Release> {
        let snapshot = serde_json::to_string(r.snapshot)
            .map_err(|e| Error::Invalid(format!("snapshot: {e}")))?;
        let key = r.version.to_lowercase();
        dispatch!(self, b => b.create_release(r, &key, &snapshot, audit).await)
            .map_err(|e| match e {
                Error::Conflict(_) => Error::Conflict(format!(
                    "this project already has a release {:?}",
                    r.version
                )),
                other => other,
            })?
            .parse()
    }

    pub async fn get_release(&self, space: &str, id: i64) -> Result<Option<Release>> {
        dispatch!(self, b => b.get_release(space, id).await)?
            .map(ReleaseRow::parse)
            .transpose()
    }

    /// Deletes a release (retention); false when there is no such release (and then no event).
    pub async fn delete_release(
        &self,
        space: &str,
        id: i64,
        audit: Option<Audit<()>>,
    ) -> Result<bool> {
        dispatch!(self, b => b.delete_release(space, id, audit).await)
    }

    /// Every release of a project, oldest first.
    pub async fn list_releases(&self, project: i64) -> Result<Vec<Release>> {
        dispatch!(self, b => b.list_releases(project).await)?
            .into_iter()
            .map(ReleaseRow::parse)
            .collect()
    }

    /// Releases after `after` (by id), at most `limit`, as `(id, snapshot as stored)`, oldest
    /// first: what a rotation of the variable key re-seals, every release whether its project
    /// still exists or not, a page at a time; compared as text when it writes back.
    pub async fn release_snapshots_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String)>> {
        dispatch!(self, b => b.release_snapshots_after(after, i64::from(limit)).await)
    }

    /// Replaces a release's snapshot if it is still `old` (as [`Store::release_snapshots`]
    /// read it); false, and nothing changes, otherwise. Only a rotation of the variable key
    /// writes a release after its creation: what it changes is sealed values, never what the
    /// release deploys.
    pub async fn replace_release_snapshot(&self, id: i64, old: &str, new: &str) -> Result<bool> {
        serde_json::from_str::<serde_json::Value>(new)
            .map_err(|e| Error::Invalid(format!("snapshot: {e}")))?;
        dispatch!(self, b => b.replace_release_snapshot(id, old, new).await)
    }
}
