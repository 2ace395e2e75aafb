//! The packages area of the [`Store`]: which versions the built-in repository holds (the bytes
//! are files in the shared store, named in each row); one file per dialect beside this one.

mod mssql;
mod postgres;
mod sqlite;

use cuttle_core::{PackageFormat, SemVer, UnixMs};

use super::{dispatch, Audit, Store};
use crate::{Error, Result};

/// A package version to record, its file already complete in the shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPackage<'a> {
    /// The space id (`Spaces-1`).
    pub space: &'a str,
    pub package_id: &'a str,
    pub version: &'a str,
    /// What makes the version unique ([`cuttle_core::package_version_key`]).
    pub version_key: &'a str,
    pub format: PackageFormat,
    pub size: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: &'a str,
    /// The file, relative to the shared store's `Packages/` folder.
    pub file: &'a str,
    pub uploaded_by: &'a str,
}

/// A stored package version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRecord {
    pub id: i64,
    pub space: String,
    pub package_id: String,
    pub version: String,
    pub format: PackageFormat,
    pub size: u64,
    pub sha256: String,
    pub file: String,
    pub uploaded_by: String,
    pub uploaded_at: UnixMs,
}

/// A `packages` row as stored.
#[derive(Clone)]
pub(crate) struct PackageRow {
    pub(crate) id: i64,
    pub(crate) space: String,
    pub(crate) package_id: String,
    pub(crate) version: String,
    pub(crate) format: String,
    pub(crate) size: i64,
    pub(crate) sha256: String,
    pub(crate) file: String,
    pub(crate) uploaded_by: String,
    pub(crate) uploaded_at: UnixMs,
}

impl PackageRow {
    /// The record, refusing a format or size this binary cannot read rather than guessing.
    pub(crate) fn parse(self) -> Result<PackageRecord> {
        let bad = |why: String| Error::Database(format!("packages row {}: {why}", self.id));
        let format = PackageFormat::parse(&self.format).map_err(|e| bad(e.0))?;
        let size = u64::try_from(self.size).map_err(|_| bad(format!("size {}", self.size)))?;
        Ok(PackageRecord {
            id: self.id,
            space: self.space,
            package_id: self.package_id,
            version: self.version,
            format,
            size,
            sha256: self.sha256,
            file: self.file,
            uploaded_by: self.uploaded_by,
            uploaded_at: self.uploaded_at,
        })
    }
}

/// The columns every dialect reads into a [`PackageRow`], in order (SQL Server converts its time
/// to milliseconds in its own list).
pub(crate) const PACKAGE_COLUMNS: &str = "seq, space, package_id, version, format, size_bytes, \
     sha256, file, uploaded_by, uploaded_at_ms";

/// The newest of some versions by SemVer precedence (versions that do not parse are passed
/// over).
pub fn newest_package(versions: Vec<PackageRecord>) -> Option<PackageRecord> {
    versions
        .into_iter()
        .filter_map(|p| p.version.parse::<SemVer>().ok().map(|v| (v, p)))
        .max_by(|(a, _), (b, _)| a.precedence(b))
        .map(|(_, p)| p)
}

/// What was added, and the version it replaced (whose file the caller removes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedPackage {
    pub added: PackageRecord,
    pub replaced: Option<PackageRecord>,
}

impl Store {
    /// Records a package version with its audit event. A version the space already holds for
    /// this id (whatever the case, whatever the build metadata) is a [`Error::Conflict`] unless
    /// `replace`, which swaps the row in the same transaction and hands back the old one.
    pub async fn add_package(
        &self,
        p: &NewPackage<'_>,
        replace: bool,
        audit: Option<Audit<PackageRecord>>,
    ) -> Result<AddedPackage> {
        let size = i64::try_from(p.size)
            .map_err(|_| Error::Invalid(format!("package size {} is too large", p.size)))?;
        let key = p.package_id.to_lowercase();
        let (added, replaced) =
            dispatch!(self, b => b.add_package(p, &key, size, replace, audit).await).map_err(
                |e| match e {
                    Error::Conflict(_) => Error::Conflict(format!(
                        "package {} version {} is already in the repository (upload with \
                     replace=true to overwrite it)",
                        p.package_id, p.version
                    )),
                    other => other,
                },
            )?;
        Ok(AddedPackage {
            added: added.parse()?,
            replaced: replaced.map(PackageRow::parse).transpose()?,
        })
    }

    /// One version of a package (`version_key` as [`cuttle_core::package_version_key`] makes
    /// it); the id in any case.
    pub async fn get_package(
        &self,
        space: &str,
        package_id: &str,
        version_key: &str,
    ) -> Result<Option<PackageRecord>> {
        let key = package_id.to_lowercase();
        dispatch!(self, b => b.get_package(space, &key, version_key).await)?
            .map(PackageRow::parse)
            .transpose()
    }

    /// The versions of every package of `space` (every space when `None`), or of one package
    /// id (any case); in no particular order (the caller sorts by SemVer precedence).
    pub async fn list_packages(
        &self,
        space: Option<&str>,
        package_id: Option<&str>,
    ) -> Result<Vec<PackageRecord>> {
        let key = package_id.map(str::to_lowercase);
        dispatch!(self, b => b.list_packages(space, key.as_deref()).await)?
            .into_iter()
            .map(PackageRow::parse)
            .collect()
    }

    /// Removes a version's row with its audit event and gives it back (its file is the
    /// caller's to remove); `None` when there is no such version (and then no event).
    pub async fn delete_package(
        &self,
        space: &str,
        package_id: &str,
        version_key: &str,
        audit: Option<Audit<PackageRecord>>,
    ) -> Result<Option<PackageRecord>> {
        let Some(row) = self.get_package(space, package_id, version_key).await? else {
            return Ok(None);
        };
        let audit = audit.map(|a| {
            let row = row.clone();
            Box::new(move |_: &()| a(&row)) as Audit<()>
        });
        let gone = dispatch!(self, b => b.delete_package(row.id, audit).await)?;
        Ok(gone.then_some(row))
    }
}
