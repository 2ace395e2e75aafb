//! `PackageReindex`: makes the package repository's rows agree with its files. A version whose
//! file is gone loses its row; a file no row names is indexed after its hash is checked, or
//! removed when another file already holds that version (what a replaced or lost upload
//! leaves). Files younger than [`SETTLE`] are left alone: an upload may be between putting its
//! file in place and writing its row. Safe on any node at any time, and again.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use cuttle_core::{package_version_key, NewEvent};
use cuttle_storage::{audit_as, Execution, NewPackage, PackageFile, PackageRecord};

use super::Executor;
use crate::ctx::{TaskCtx, TaskError, TaskResult};

/// How old a file must be before a re-index touches it.
const SETTLE: Duration = Duration::from_secs(300);

pub(crate) struct PackageReindex;

impl Executor for PackageReindex {
    async fn run(&self, key: Execution, ctx: &TaskCtx) -> TaskResult {
        ctx.until_stopped(reindex(key, ctx)).await
    }
}

/// What a version or file is called in the log and the audit trail.
fn label(space: &str, id: &str, version: &str) -> String {
    format!("{space}/{id}.{version}")
}

fn event(key: Execution, action: &str, target: String, details: serde_json::Value) -> NewEvent {
    NewEvent {
        actor: format!("PackageReindex ({})", key.task),
        action: action.to_owned(),
        target,
        client_address: String::new(),
        details,
    }
}

async fn reindex(key: Execution, ctx: &TaskCtx) -> TaskResult {
    let store = &ctx.targets.store;
    let shared = ctx.targets.shared.clone();
    let (files, strays) = tokio::task::spawn_blocking(move || shared.package_files())
        .await
        .map_err(|e| TaskError::Failed(e.to_string()))?
        .map_err(|e| TaskError::Failed(format!("list the repository's files: {e}")))?;
    let rows = store
        .list_packages(None, None)
        .await
        .map_err(|e| TaskError::Failed(format!("list the repository's versions: {e}")))?;
    ctx.logs
        .line(
            key,
            format!(
                "INFO  {} version(s) recorded, {} package file(s) found",
                rows.len(),
                files.len()
            ),
        )
        .await;
    for stray in &strays {
        ctx.logs
            .line(
                key,
                format!("WARN  not a package file, left alone: {}", stray.display()),
            )
            .await;
    }

    let on_disk: HashSet<&str> = files.iter().map(|f| f.file.as_str()).collect();
    let (mut dropped, mut indexed, mut removed, mut skipped) = (0, 0, 0, 0);
    for row in rows.iter().filter(|r| !on_disk.contains(r.file.as_str())) {
        // Listed before the rows were read: look again before deciding the file is gone.
        if ctx.targets.shared.package_path(&row.file).exists() {
            continue;
        }
        let target = label(&row.space, &row.package_id, &row.version);
        let audit = audit_as(event(
            key,
            "package.reindex.remove",
            target.clone(),
            serde_json::json!({"reason": "file missing", "file": row.file}),
        ));
        let version_key = row
            .version
            .parse()
            .map(|v| package_version_key(&v))
            .unwrap_or_else(|_| row.version.to_lowercase());
        match store
            .delete_package(&row.space, &row.package_id, &version_key, Some(audit))
            .await
        {
            Ok(_) => {
                dropped += 1;
                ctx.logs
                    .line(
                        key,
                        format!("WARN  {target}: its file is gone; version removed"),
                    )
                    .await;
            }
            Err(e) => return Err(TaskError::Failed(format!("remove {target}: {e}"))),
        }
    }

    let mut by_version: HashMap<(String, String, String), &PackageRecord> = HashMap::new();
    for r in &rows {
        if let Ok(v) = r.version.parse() {
            by_version.insert(
                (
                    r.space.clone(),
                    r.package_id.to_lowercase(),
                    package_version_key(&v),
                ),
                r,
            );
        }
    }
    let named: HashSet<&str> = rows.iter().map(|r| r.file.as_str()).collect();
    let now = SystemTime::now();
    for f in files.iter().filter(|f| !named.contains(f.file.as_str())) {
        if now.duration_since(f.modified).unwrap_or_default() < SETTLE {
            skipped += 1;
            continue;
        }
        let version = f.name.version.to_string();
        let target = label(&f.space, &f.name.package_id, &version);
        let holder = by_version.get(&(
            f.space.clone(),
            f.name.package_id.to_lowercase(),
            package_version_key(&f.name.version),
        ));
        if let Some(holder) = holder {
            let file = f.file.clone();
            let shared = ctx.targets.shared.clone();
            tokio::task::spawn_blocking(move || shared.remove_package_file(&file))
                .await
                .map_err(|e| TaskError::Failed(e.to_string()))?
                .map_err(|e| TaskError::Failed(format!("remove {}: {e}", f.file)))?;
            removed += 1;
            ctx.logs
                .line(
                    key,
                    format!(
                        "INFO  {target}: {} is not the version's file ({}); removed",
                        f.file, holder.file
                    ),
                )
                .await;
            continue;
        }
        match index(key, ctx, f).await {
            Ok(true) => {
                indexed += 1;
                ctx.logs
                    .line(key, format!("INFO  {target}: indexed from {}", f.file))
                    .await;
            }
            Ok(false) => {
                skipped += 1;
                ctx.logs
                    .line(
                        key,
                        format!(
                            "WARN  {target}: {} does not hash to its name; left alone",
                            f.file
                        ),
                    )
                    .await;
            }
            Err(e) => return Err(e),
        }
    }
    ctx.logs
        .line(
            key,
            format!(
                "INFO  re-index done: {indexed} indexed, {dropped} version(s) without a file \
                 removed, {removed} leftover file(s) removed, {skipped} file(s) left alone"
            ),
        )
        .await;
    Ok(())
}

/// Hashes a file and records it as its version; false when its content does not match its name.
async fn index(key: Execution, ctx: &TaskCtx, f: &PackageFile) -> Result<bool, TaskError> {
    let path = ctx.targets.shared.package_path(&f.file);
    let (size, sha256) =
        tokio::task::spawn_blocking(move || cuttle_proto::files::sha256_file(&path))
            .await
            .map_err(|e| TaskError::Failed(e.to_string()))?
            .map_err(|e| TaskError::Failed(format!("read {}: {e}", f.file)))?;
    if !sha256.starts_with(&f.name_hash.to_ascii_lowercase()) {
        return Ok(false);
    }
    let version = f.name.version.to_string();
    let audit = audit_as(event(
        key,
        "package.reindex.add",
        label(&f.space, &f.name.package_id, &version),
        serde_json::json!({"file": f.file, "sha256": sha256}),
    ));
    let added = ctx
        .targets
        .store
        .add_package(
            &NewPackage {
                space: &f.space,
                package_id: &f.name.package_id,
                version: &version,
                version_key: &package_version_key(&f.name.version),
                format: f.name.format,
                size,
                sha256: &sha256,
                file: &f.file,
                uploaded_by: &format!("PackageReindex ({})", key.task),
            },
            false,
            Some(audit),
        )
        .await;
    match added {
        Ok(_) => Ok(true),
        // An upload recorded the version meanwhile: its file stays, this one goes next time.
        Err(cuttle_storage::Error::Conflict(_)) => Ok(true),
        Err(e) => Err(TaskError::Failed(format!("record {}: {e}", f.file))),
    }
}
