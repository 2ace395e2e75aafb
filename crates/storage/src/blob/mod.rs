//! The shared file store: its layout, the start-up probe, and the task-log writer.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cuttle_core::{format_rfc3339_ms, TaskId};
use tokio::sync::{mpsc, oneshot};

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

    /// Where a task's log lives.
    pub fn task_log_path(&self, id: TaskId) -> PathBuf {
        self.root.join("TaskLogs").join(format!("{id}.log"))
    }

    /// Opens a task's log for reading; `None` when the task has written nothing yet.
    pub fn open_task_log(&self, id: TaskId) -> Result<Option<File>> {
        let path = self.task_log_path(id);
        match File::open(&path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open task log", &path, e)),
        }
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

enum LogMsg {
    Line(TaskId, String),
    Close(TaskId, oneshot::Sender<std::result::Result<(), String>>),
}

/// Writes task logs to `TaskLogs/` as lines are produced. One dedicated thread owns the files,
/// so tasks never block the async runtime on file I/O, and lines that arrive together are
/// written and flushed together. Cheap to clone.
#[derive(Clone)]
pub struct TaskLogWriter {
    tx: mpsc::Sender<LogMsg>,
}

/// How many lines may wait for the writer thread before producers are slowed down.
const LOG_QUEUE: usize = 8192;

/// An open task log; `out` is `None` when the file could not be opened (the error is
/// reported once, at close, and later lines are dropped).
struct OpenLog {
    out: Option<BufWriter<File>>,
    error: Option<String>,
}

impl TaskLogWriter {
    pub fn start(store: SharedStore) -> TaskLogWriter {
        let (tx, mut rx) = mpsc::channel::<LogMsg>(LOG_QUEUE);
        std::thread::Builder::new()
            .name("task-log-writer".into())
            .spawn(move || {
                let mut open: HashMap<TaskId, OpenLog> = HashMap::new();
                while let Some(first) = rx.blocking_recv() {
                    let mut msg = Some(first);
                    // Take everything already queued before flushing: one flush per burst.
                    while let Some(m) = msg.take() {
                        handle(&store, &mut open, m);
                        msg = rx.try_recv().ok();
                    }
                    for log in open.values_mut() {
                        if let Err(e) = flush(&mut log.out) {
                            log.error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
            })
            .expect("spawn task-log writer thread");
        TaskLogWriter { tx }
    }

    /// Appends one line, stamped with the current time, to a task's log.
    pub async fn line(&self, id: TaskId, text: impl Into<String>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut line = format_rfc3339_ms(now);
        line.push(' ');
        line.push_str(&text.into());
        line.push('\n');
        // The writer thread only stops when every sender is gone, so this cannot fail.
        let _ = self.tx.send(LogMsg::Line(id, line)).await;
    }

    /// Flushes and closes a task's log; returns the first write error it met, if any.
    pub async fn close(&self, id: TaskId) -> std::result::Result<(), String> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(LogMsg::Close(id, tx)).await.is_err() {
            return Err("task-log writer stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("task-log writer stopped".into()))
    }
}

fn flush(out: &mut Option<BufWriter<File>>) -> std::io::Result<()> {
    out.as_mut().map_or(Ok(()), |o| o.flush())
}

fn handle(store: &SharedStore, open: &mut HashMap<TaskId, OpenLog>, msg: LogMsg) {
    match msg {
        LogMsg::Line(id, line) => {
            let log = open.entry(id).or_insert_with(|| {
                let path = store.task_log_path(id);
                match OpenOptions::new().create(true).append(true).open(&path) {
                    Ok(f) => OpenLog {
                        out: Some(BufWriter::new(f)),
                        error: None,
                    },
                    Err(e) => OpenLog {
                        out: None,
                        error: Some(format!("open task log {}: {e}", path.display())),
                    },
                }
            });
            if let (Some(out), None) = (log.out.as_mut(), &log.error) {
                if let Err(e) = out.write_all(line.as_bytes()) {
                    log.error = Some(format!("write task log: {e}"));
                }
            }
        }
        LogMsg::Close(id, ack) => {
            let result = match open.remove(&id) {
                Some(mut log) => match (log.error.take(), flush(&mut log.out)) {
                    (Some(e), _) => Err(e),
                    (None, Err(e)) => Err(format!("flush task log: {e}")),
                    (None, Ok(())) => Ok(()),
                },
                None => Ok(()),
            };
            let _ = ack.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
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

    #[tokio::test]
    async fn writes_lines_as_produced_and_appends() {
        let dir = temp_dir("logs");
        let store = SharedStore::open(&dir).unwrap();
        let w = TaskLogWriter::start(store.clone());
        let id = TaskId(7);
        w.line(id, "first").await;
        w.close(id).await.unwrap();
        w.line(id, "second").await;
        w.close(id).await.unwrap();
        let text = std::fs::read_to_string(store.task_log_path(id)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].ends_with(" first") && lines[1].ends_with(" second"),
            "{text}"
        );
        assert!(
            lines[0].starts_with("20") && lines[0].contains('T'),
            "{text}"
        );
    }
}
