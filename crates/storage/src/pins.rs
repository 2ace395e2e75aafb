//! Package versions that something still names, so they must stay as they are: a release's
//! chosen versions (recorded with their SHA-256 when it was made), and the versions a project's
//! process or a published runbook names explicitly. Read from the configuration documents and
//! the releases; no SQL of its own. A snapshot that cannot be read is an error, never "no pins":
//! a missed pin would let a released version be replaced.

use cuttle_core::plan::{Action, Process};
use cuttle_core::{package_version_key, parse_package_version};

use crate::{Error, Result, Store};

/// A package version named by a release, a process or a published runbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagePin {
    /// The space's id (`Spaces-1`).
    pub space: String,
    /// The package id in lower case (ids are compared whatever their case).
    pub package_id: String,
    /// [`cuttle_core::package_version_key`] of the version.
    pub version_key: String,
    /// What names it, for messages: `release 1.4.2 of Shop`.
    pub by: String,
}

fn corrupt(what: &str, why: impl std::fmt::Display) -> Error {
    Error::Database(format!("{what} cannot be read: {why}"))
}

/// Every pin in `space` (the space's id).
pub async fn package_pins(store: &Store, space: &str) -> Result<Vec<PackagePin>> {
    let mut pins = Vec::new();
    let mut pin = |package_id: &str, version: &str, by: String| -> Result<()> {
        let v = parse_package_version(version)
            .map_err(|e| corrupt(&by, format!("version {version:?}: {e}")))?;
        pins.push(PackagePin {
            space: space.to_owned(),
            package_id: package_id.to_lowercase(),
            version_key: package_version_key(&v),
            by,
        });
        Ok(())
    };
    for project in store.list_documents(space, "Project").await? {
        for r in store.list_releases(project.id).await? {
            let by = format!("release {} of {}", r.version, project.name);
            let chosen = match r.snapshot.get("packages") {
                None | Some(serde_json::Value::Null) => continue,
                Some(serde_json::Value::Object(m)) => m,
                Some(other) => return Err(corrupt(&by, format!("packages is {other}"))),
            };
            for p in chosen.values() {
                let (Some(id), Some(v)) = (p["package_id"].as_str(), p["version"].as_str()) else {
                    return Err(corrupt(
                        &by,
                        format!("a package without id or version: {p}"),
                    ));
                };
                pin(id, v, by.clone())?;
            }
        }
        if let Some(process) = project.body.get("process") {
            let by = format!("the process of {}", project.name);
            for (id, v) in explicit_versions(process, &by)? {
                pin(&id, &v, by.clone())?;
            }
        }
    }
    for runbook in store.list_documents(space, "Runbook").await? {
        let Some(process) = runbook
            .body
            .get("published")
            .filter(|p| !p.is_null())
            .and_then(|p| p.get("process"))
        else {
            continue;
        };
        let by = format!("the published runbook {}", runbook.name);
        for (id, v) in explicit_versions(process, &by)? {
            pin(&id, &v, by.clone())?;
        }
    }
    Ok(pins)
}

/// The `(package id, version)` pairs a process's package steps name explicitly.
fn explicit_versions(process: &serde_json::Value, by: &str) -> Result<Vec<(String, String)>> {
    let process: Process = serde_json::from_value(process.clone()).map_err(|e| corrupt(by, e))?;
    Ok(process
        .steps
        .into_iter()
        .filter_map(|s| match s.action {
            Action::DeployPackage {
                package_id,
                version: Some(v),
                ..
            } => Some((package_id, v)),
            _ => None,
        })
        .collect())
}
