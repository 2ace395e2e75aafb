//! Artifacts: files a task collected, kept as `Artifacts/{task}/{source}/{name}`, where source
//! is the target they came from (or `@{node}` for a script on a node). Both parts are
//! percent-encoded (only letters, digits, `-`, `_` and a non-leading `.` stay as they are), so
//! no name can climb out of the task's folder or contain a separator; a name the task already
//! has gets `~2`, `~3`, … (`~` is always encoded in a name), so two never collide. A file is
//! received under `Artifacts/InProgress/{node}/`, synced, and linked into place only whole.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cuttle_core::TaskId;

use super::SharedStore;
use crate::{Error, Result};

const ARTIFACTS: &str = "Artifacts";

/// One path component that means exactly `s`.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What [`encode`] encoded (a `~N` suffix, which it never makes, is kept as it is).
pub(crate) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An artifact as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    /// `{source}/{file}` as stored (encoded): what names it in the API.
    pub id: String,
    /// The target it came from, or `@{node}`.
    pub source: String,
    /// Its name as the script gave it (with `~N` when the task had one so named).
    pub name: String,
    pub size: u64,
    pub created: SystemTime,
}

impl SharedStore {
    /// A fresh temporary path for an artifact being received by `node`.
    pub fn artifact_temp(&self, node: &str) -> Result<PathBuf> {
        self.temp_in(ARTIFACTS, node)
    }

    fn task_dir(&self, task: TaskId) -> PathBuf {
        self.root.join(ARTIFACTS).join(task.to_string())
    }

    /// Puts a complete, synced artifact from `temp` in place under a name no other artifact of
    /// the task has; returns its id (`{source}/{file}`, encoded).
    pub fn place_artifact(
        &self,
        temp: &Path,
        task: TaskId,
        source: &str,
        name: &str,
    ) -> Result<String> {
        let source = encode(source);
        let dir = self.task_dir(task).join(&source);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create folder", &dir, e))?;
        let base = encode(name);
        for n in 1u32.. {
            let file = if n == 1 {
                base.clone()
            } else {
                format!("{base}~{n}")
            };
            let dest = dir.join(&file);
            // A hard link fails rather than replace: two artifacts never share a name.
            match std::fs::hard_link(temp, &dest) {
                Ok(()) => {
                    let _ = std::fs::remove_file(temp);
                    if let Ok(d) = std::fs::File::open(&dir) {
                        let _ = d.sync_all();
                    }
                    return Ok(format!("{source}/{file}"));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("put artifact in place", &dest, e)),
            }
        }
        Err(Error::io(
            "put artifact in place",
            &dir,
            std::io::Error::other("no free name"),
        ))
    }

    /// Every artifact of a task, oldest first.
    pub fn list_artifacts(&self, task: TaskId) -> Result<Vec<ArtifactFile>> {
        let dir = self.task_dir(task);
        let sources = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list artifacts", &dir, e)),
        };
        let mut out = Vec::new();
        for source in sources {
            let source = source.map_err(|e| Error::io("list artifacts", &dir, e))?;
            let source_name = source.file_name().to_string_lossy().into_owned();
            let files = match std::fs::read_dir(source.path()) {
                Ok(f) => f,
                Err(_) => continue,
            };
            for f in files.flatten() {
                let meta = match f.metadata() {
                    Ok(m) if m.is_file() => m,
                    _ => continue,
                };
                let file = f.file_name().to_string_lossy().into_owned();
                out.push(ArtifactFile {
                    id: format!("{source_name}/{file}"),
                    source: decode(&source_name),
                    name: decode(&file),
                    size: meta.len(),
                    created: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The file of the artifact `id` names, if `id` is one this store could have made (two
    /// encoded components, nothing that climbs).
    pub fn artifact_file(&self, task: TaskId, id: &str) -> Option<PathBuf> {
        let (source, file) = id.split_once('/')?;
        let fine = |c: &str| {
            !c.is_empty()
                && !c.starts_with('.')
                && c.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'%' | b'~')
                })
        };
        (fine(source) && fine(file)).then(|| self.task_dir(task).join(source).join(file))
    }

    /// Removes a task's artifacts (retention); how many files went.
    pub fn remove_artifacts(&self, task: TaskId) -> Result<usize> {
        let n = self.list_artifacts(task)?.len();
        let dir = self.task_dir(task);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io("remove artifacts", &dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_dir;
    use super::*;

    #[test]
    fn names_never_escape_or_collide() {
        for s in [
            "report.html",
            "../../etc/passwd",
            ".hidden",
            "a/b\\c",
            "ünï cødé~2",
            "%41",
        ] {
            let e = encode(s);
            assert!(
                !e.contains('/') && !e.starts_with('.') && !e.contains('~'),
                "{s} → {e}"
            );
            assert_eq!(decode(&e), s);
        }
        let dir = temp_dir("artifacts");
        let store = SharedStore::open(&dir).unwrap();
        let task = TaskId(7);
        let mut ids = Vec::new();
        for (source, name) in [
            ("web-1", "log.txt"),
            ("web-1", "log.txt"),
            ("@n1", "../log.txt"),
        ] {
            let temp = store.artifact_temp("n1").unwrap();
            std::fs::write(&temp, name).unwrap();
            ids.push(store.place_artifact(&temp, task, source, name).unwrap());
            assert!(!temp.exists());
        }
        assert_eq!(
            ids,
            ["web-1/log.txt", "web-1/log.txt~2", "%40n1/%2E.%2Flog.txt"]
        );
        let listed = store.list_artifacts(task).unwrap();
        let names: Vec<(String, String)> = listed
            .iter()
            .map(|a| (a.source.clone(), a.name.clone()))
            .collect();
        assert!(
            names.contains(&("@n1".into(), "../log.txt".into())),
            "{names:?}"
        );
        assert!(names.contains(&("web-1".into(), "log.txt~2".into())));
        let file = store.artifact_file(task, "%40n1/%2E.%2Flog.txt").unwrap();
        assert_eq!(std::fs::read_to_string(file).unwrap(), "../log.txt");
        for bad in ["../x", "a/../b", "a", "a/b/c", "./a/b", "a/.b", "a/b c"] {
            assert!(store.artifact_file(task, bad).is_none(), "{bad}");
        }
        assert_eq!(store.remove_artifacts(task).unwrap(), 3);
        assert!(store.list_artifacts(task).unwrap().is_empty());
    }
}
