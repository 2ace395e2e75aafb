//! The shared file store: its layout, the start-up probe, and the task logs.

mod artifacts;
mod event_exports;
mod packages;
mod task_log;

pub use artifacts::ArtifactFile;
pub use event_exports::DayExport;
pub use packages::{IncomingFile, PackageFile};
pub use task_log::{Execution, TaskLog, TaskLogWriter, DEFAULT_TASK_LOG_MAX_BYTES};

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The folders every node expects under the shared-store root.
pub const SHARED_FOLDERS: [&str; 6] = [
    "TaskLogs",
    "Artifacts",
    "Packages",
    "Imports",
    "EventExports",
    "Telemetry",
];

/// The shared file store every node of the cluster mounts at the same path.
#[derive(Debug, Clone)]
pub struct SharedStore {
    root: PathBuf,
}

impl SharedStore {
    /// Opens the store at `root`, which must exist: creates its folders and probes each for
    /// write access (write, read back, delete). Errors name the path and the OS error.
    pub fn open(root: &Path) -> Result<SharedStore> {
        let meta = std::fs::metadata(root).map_err(|e| Error::io("open shared store", root, e))?;
        if !meta.is_dir() {
            return Err(Error::io(
                "open shared store",
                root,
                std::io::Error::other("not a directory"),
            ));
        }
        for folder in SHARED_FOLDERS {
            let dir = root.join(folder);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create folder", &dir, e))?;
            probe(&dir)?;
        }
        Ok(SharedStore {
            root: root.to_owned(),
        })
    }

    /// Probes the folders tasks write to (write, read back, delete a file): is the store
    /// usable right now? Errors name the path and the OS error.
    pub fn check(&self) -> Result<()> {
        probe(&self.root.join("TaskLogs"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl SharedStore {
    /// A fresh temporary path under `{folder}/InProgress/{node}/`, which only that node writes
    /// and which it empties at start-up (and a scheduler empties when the node is lost).
    pub(crate) fn temp_in(&self, folder: &str, node: &str) -> Result<PathBuf> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.root.join(folder).join("InProgress").join(node);
        for d in [dir.parent().unwrap_or(&dir), dir.as_path()] {
            match std::fs::create_dir(d) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::io("create folder", d, e))
                }
                _ => {}
            }
        }
        Ok(dir.join(format!("{}-{n}.partial", std::process::id())))
    }

    /// Removes what `node` was receiving (artifacts, packages) when its process ended: at the
    /// node's start-up, or by a scheduler once the node is lost. How many files went.
    pub fn clear_in_progress(&self, node: &str) -> Result<usize> {
        let mut removed = 0;
        for folder in ["Artifacts", "Packages", "EventExports"] {
            let dir = self.root.join(folder).join("InProgress").join(node);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list files in progress", &dir, e)),
            };
            for entry in entries {
                let path = entry
                    .map_err(|e| Error::io("list files in progress", &dir, e))?
                    .path();
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::io("remove", &path, e))
                    }
                    _ => removed += 1,
                }
            }
        }
        Ok(removed)
    }
}

fn probe(dir: &Path) -> Result<()> {
    let path = dir.join(format!(".cuttle-probe-{}", std::process::id()));
    let payload = b"cuttle write probe";
    std::fs::write(&path, payload).map_err(|e| Error::io("write probe file", &path, e))?;
    let back = std::fs::read(&path).map_err(|e| Error::io("read probe file", &path, e))?;
    std::fs::remove_file(&path).map_err(|e| Error::io("delete probe file", &path, e))?;
    if back != payload {
        return Err(Error::io(
            "read back probe file",
            &path,
            std::io::Error::other("content differs from what was written"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cuttle-blob-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn open_creates_folders_and_rejects_missing_root() {
        let dir = temp_dir("layout");
        let store = SharedStore::open(&dir).unwrap();
        for f in SHARED_FOLDERS {
            assert!(dir.join(f).is_dir(), "{f}");
        }
        assert_eq!(store.root(), dir);
        let err = SharedStore::open(&dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing") && err.contains("No such file"),
            "{err}"
        );
    }
}
