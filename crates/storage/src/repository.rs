//! Removing a package version, row and file together: the one operation of the repository that
//! spans the database and the shared store. The file is set aside first (under the node's
//! in-progress folder), then the row is deleted with its audit event, then the file removed; if
//! the row cannot be deleted the file is put back. So a version is never left in the index
//! without its file by a failed delete, and a file is never left in place without its row for a
//! re-index to bring back.

use crate::{Audit, PackageRecord, Result, SharedStore, Store};

/// Removes `p` (its version key as [`cuttle_core::package_version_key`] makes it) from the
/// repository; the removed version, or `None` when it was gone already.
pub async fn remove_package(
    store: &Store,
    shared: &SharedStore,
    node: &str,
    p: &PackageRecord,
    version_key: &str,
    audit: Option<Audit<PackageRecord>>,
) -> Result<Option<PackageRecord>> {
    let (s, n, file) = (shared.clone(), node.to_owned(), p.file.clone());
    let aside = tokio::task::spawn_blocking(move || s.set_package_aside(&n, &file))
        .await
        .map_err(|e| crate::Error::Database(format!("set a package aside: {e}")))??;
    let deleted = store
        .delete_package(&p.space, &p.package_id, version_key, audit)
        .await;
    let (s, file, put_back) = (shared.clone(), p.file.clone(), deleted.is_err());
    let _ = tokio::task::spawn_blocking(move || {
        let Some(aside) = aside else { return };
        if put_back {
            if let Err(e) = s.place_package(&aside, &file) {
                tracing::error!(error = %e, file, "put a package back after a failed delete");
            }
        } else if let Err(e) = std::fs::remove_file(&aside) {
            tracing::warn!(error = %e, path = %aside.display(), "remove a deleted package's file");
        }
    })
    .await;
    deleted
}
