//! Task logs in the shared store. A log is written under a temporary name while its task runs
//! and is made durable (fsync) and renamed into place when the task ends, so a file in its final
//! place is always complete. Logs a node left behind when it died are salvaged: their complete
//! lines are kept, a line saying why the log ends is added, and they are renamed into place.
//!
//! Layout under `TaskLogs/`:
//! - `{task}.log`: the complete log of a task's first execution; `{task}.{epoch}.log` for a
//!   later one (a retry-safe task re-queued after its node was lost).
//! - `InProgress/{node}/{task}.{epoch}.log`: being written by that node.
//! - `InProgress/{node}/*.tmp`: a salvage under way; a node removes its own at start-up.
//!
//! Each node writes only under its own `InProgress/{node}/`, so a node can clean up its leftovers
//! without knowing what the others are doing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cuttle_core::{format_rfc3339_ms, TaskId, TaskRecord};
use tokio::sync::{mpsc, oneshot};

use super::SharedStore;
use crate::{Error, Result};

const IN_PROGRESS: &str = "InProgress";

/// One execution's log: a task and the claim epoch it ran under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Execution {
    pub task: TaskId,
    pub epoch: i64,
}

/// A task's log opened for reading: one file per execution, oldest first.
#[derive(Debug)]
pub struct TaskLog {
    pub parts: Vec<File>,
    /// The task has ended and every execution's log is complete and in its final place.
    pub complete: bool,
}

impl SharedStore {
    fn task_logs_dir(&self) -> PathBuf {
        self.root.join("TaskLogs")
    }

    /// Where an execution's complete log lives.
    pub fn task_log_path(&self, key: Execution) -> PathBuf {
        let name = if key.epoch <= 1 {
            format!("{}.log", key.task)
        } else {
            format!("{}.{}.log", key.task, key.epoch)
        };
        self.task_logs_dir().join(name)
    }

    fn in_progress_dir(&self, node: &str) -> PathBuf {
        self.task_logs_dir().join(IN_PROGRESS).join(node)
    }

    /// Where `node` writes an execution's log while the task runs.
    pub fn in_progress_path(&self, node: &str, key: Execution) -> PathBuf {
        self.in_progress_dir(node)
            .join(format!("{}.{}.log", key.task, key.epoch))
    }

    /// Opens every part of a task's log. A running execution's part is read from where its node
    /// is writing it; so is the part of one whose node died before salvage (not complete).
    pub fn open_task_log(&self, task: &TaskRecord) -> Result<TaskLog> {
        let mut log = TaskLog {
            parts: Vec::new(),
            complete: task.state.is_terminal(),
        };
        for epoch in 1..=task.claim_epoch {
            let key = Execution {
                task: task.id,
                epoch,
            };
            let done = self.task_log_path(key);
            if let Some(f) = open_existing(&done)? {
                log.parts.push(f);
                continue;
            }
            let writer = task.node.as_deref().filter(|_| epoch == task.claim_epoch);
            let partial = writer.map(|node| self.in_progress_path(node, key));
            match partial.as_deref().map(open_existing).transpose()?.flatten() {
                Some(f) => {
                    log.parts.push(f);
                    log.complete = false;
                }
                // Renamed into place between the two looks, or never written.
                None => match open_existing(&done)? {
                    Some(f) => log.parts.push(f),
                    None => log.complete = false,
                },
            }
        }
        Ok(log)
    }

    /// Finishes the logs `node` left behind when its tasks were stopped without it: keeps their
    /// complete lines, adds `note` (why the log ends), makes them durable and puts them in
    /// place. An execution in `stopped` that wrote nothing gets a log of just the note. With
    /// `sweep` (only the node itself, at start-up, when none of its tasks runs), every log it
    /// left in progress is finished and the temporary files of an interrupted salvage are
    /// removed; without, only `stopped` is touched (the node may be alive and writing others).
    /// Returns how many logs were put in place.
    pub fn salvage_task_logs(
        &self,
        node: &str,
        stopped: &[Execution],
        sweep: bool,
        note: &str,
    ) -> Result<usize> {
        let dir = self.in_progress_dir(node);
        let mut placed = 0;
        for &execution in stopped {
            let partial = self.in_progress_path(node, execution);
            if self.salvage_one(&partial, execution, note)? {
                placed += 1;
            }
        }
        if !sweep {
            return Ok(placed);
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(placed),
            Err(e) => return Err(Error::io("list task logs in progress", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list task logs in progress", &dir, e))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") {
                remove_if_exists(&path)?;
            } else if let Some(execution) = parse_in_progress_name(name) {
                if self.salvage_one(&path, execution, note)? {
                    placed += 1;
                }
            }
        }
        Ok(placed)
    }

    /// False when the log was already in place (finished by its writer, or salvaged before).
    fn salvage_one(&self, partial: &Path, key: Execution, note: &str) -> Result<bool> {
        let done = self.task_log_path(key);
        let mut src = match File::open(partial) {
            Ok(f) => Some(f),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("open task log in progress", partial, e))
            }
            Err(_) if done.exists() => return Ok(false),
            // Stopped before it wrote anything: the log is the note alone.
            Err(_) => None,
        };
        make_node_dir(partial).map_err(|e| Error::io("create folder for", partial, e))?;
        let tmp = partial.with_extension(format!("{}.tmp", unique_suffix()));
        let written = File::create(&tmp).and_then(|mut out| {
            if let Some(src) = src.as_mut() {
                copy_complete_lines(src, &mut out)?;
            }
            out.write_all(stamp(note).as_bytes())?;
            out.sync_all()
        });
        written.map_err(|e| Error::io("write salvaged task log", &tmp, e))?;
        // Never over a log its writer put in place meanwhile (a node thought lost that was only
        // frozen): the writer's version is complete and longer.
        let placed = match std::fs::hard_link(&tmp, &done) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            // A file system without hard links: rename, which replaces.
            Err(_) => std::fs::rename(&tmp, &done)
                .map(|()| true)
                .map_err(|e| Error::io("rename task log into place", &done, e))?,
        };
        remove_if_exists(&tmp)?;
        remove_if_exists(partial)?;
        Ok(placed)
    }
}

/// `{task}.{epoch}.log` → the key.
fn parse_in_progress_name(name: &str) -> Option<Execution> {
    let (task, epoch) = name.strip_suffix(".log")?.rsplit_once('.')?;
    Some(Execution {
        task: task.parse().ok()?,
        epoch: epoch.parse().ok()?,
    })
}

/// Copies `src` to `out`, dropping a last line that has no newline (a write cut short).
fn copy_complete_lines(src: &mut File, out: &mut File) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut written, mut complete) = (0u64, 0u64);
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            complete = written + i as u64 + 1;
        }
        written += n as u64;
    }
    if complete < written {
        out.set_len(complete)?;
        out.seek(SeekFrom::Start(complete))?;
    }
    Ok(())
}

fn open_existing(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("open task log", path, e)),
    }
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Unique among the processes of a cluster that might salvage the same log at once.
fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}-{nanos}", std::process::id())
}

/// The longest text one log line holds, in bytes; longer text goes on as further lines.
pub(crate) const MAX_LOG_LINE: usize = 64 * 1024;

/// A task log's default bound, in bytes (`CUTTLE_TASK_LOG_MAX_BYTES`).
pub const DEFAULT_TASK_LOG_MAX_BYTES: u64 = 100 * 1024 * 1024;

/// `text` as the log lines it is written as: each at most [`MAX_LOG_LINE`] bytes (split at a
/// character boundary), with every control character but tab — escape and the C1 controls
/// included — shown as U+FFFD. So no one — a script, a tentacle — can start a line of their
/// own in a log (every line starts with the writer's time stamp), nor send a terminal that
/// shows the log escape sequences (colours, but also a new window title, a hidden hyperlink, a
/// write to the clipboard).
fn log_lines(text: &str) -> Vec<Cow<'_, str>> {
    let neutralised = |c: char| c.is_control() && c != '\t';
    // The common line, short and clean, is passed on as it is: no copy on the hot path.
    let clean: Cow<'_, str> = if text.chars().any(neutralised) {
        Cow::Owned(
            text.chars()
                .map(|c| if neutralised(c) { '\u{fffd}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    };
    if clean.len() <= MAX_LOG_LINE {
        return vec![clean];
    }
    let mut out = Vec::new();
    let mut rest = clean.as_ref();
    while !rest.is_empty() {
        let mut cut = rest.len().min(MAX_LOG_LINE);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(Cow::Owned(rest[..cut].to_owned()));
        rest = &rest[cut..];
    }
    out
}

/// A log line: the current time, a space, the text, a newline.
fn stamp(text: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut line = format_rfc3339_ms(now);
    line.push(' ');
    line.push_str(text);
    line.push('\n');
    line
}

enum LogMsg {
    Open(Execution),
    Line(Execution, String),
    Close(Execution, oneshot::Sender<std::result::Result<(), String>>),
}

/// Writes one node's task logs as lines are produced. One dedicated thread owns the open files,
/// so tasks never block the async runtime on file I/O, and lines that arrive together are
/// written and flushed together; the fsync and rename that end a log run on the blocking pool,
/// so many logs finish in parallel. Cheap to clone.
#[derive(Clone)]
pub struct TaskLogWriter {
    tx: mpsc::Sender<LogMsg>,
}

/// How many lines may wait for the writer thread before producers are slowed down.
const LOG_QUEUE: usize = 8192;

/// An open task log; `out` is `None` when the file could not be created. The first error is
/// reported at close and later lines are dropped; so are lines past the log's bound, after one
/// that says so.
struct OpenLog {
    out: Option<BufWriter<File>>,
    error: Option<String>,
    written: u64,
    limit: u64,
    cut: bool,
}

impl TaskLogWriter {
    /// Starts the writer for `node`. Must be called within a Tokio runtime.
    /// Each log holds at most `max_bytes` (then one line saying it was cut).
    pub fn start(store: SharedStore, node: &str, max_bytes: u64) -> TaskLogWriter {
        let (tx, mut rx) = mpsc::channel::<LogMsg>(LOG_QUEUE);
        let runtime = tokio::runtime::Handle::current();
        let node = node.to_owned();
        std::thread::Builder::new()
            .name("task-log-writer".into())
            .spawn(move || {
                let mut open: HashMap<Execution, OpenLog> = HashMap::new();
                while let Some(first) = rx.blocking_recv() {
                    let mut msg = Some(first);
                    // Take everything already queued before flushing: one flush per burst.
                    while let Some(m) = msg.take() {
                        match m {
                            LogMsg::Open(key) => {
                                let path = store.in_progress_path(&node, key);
                                open.insert(key, create(&path, max_bytes));
                            }
                            LogMsg::Line(key, line) => {
                                // Lines for a log not open (already closed) are dropped.
                                if let Some(log) = open.get_mut(&key) {
                                    log.write(&line);
                                }
                            }
                            LogMsg::Close(key, ack) => {
                                let Some(log) = open.remove(&key) else {
                                    let _ = ack.send(Ok(()));
                                    continue;
                                };
                                let partial = store.in_progress_path(&node, key);
                                let done = store.task_log_path(key);
                                runtime.spawn_blocking(move || {
                                    let _ = ack.send(log.finish(&partial, &done));
                                });
                            }
                        }
                        msg = rx.try_recv().ok();
                    }
                    for log in open.values_mut() {
                        if let Some(Err(e)) = log.out.as_mut().map(|o| o.flush()) {
                            log.error
                                .get_or_insert_with(|| format!("write task log: {e}"));
                        }
                    }
                }
            })
            .expect("spawn task-log writer thread");
        TaskLogWriter { tx }
    }

    /// Starts an execution's log. Lines sent before this, or after `close`, are dropped.
    pub async fn open(&self, key: Execution) {
        // The writer thread only stops when every sender is gone, so this cannot fail.
        let _ = self.tx.send(LogMsg::Open(key)).await;
    }

    /// Appends `text`, stamped with the current time: one line, or several when it is longer
    /// than [`MAX_LOG_LINE`]; control characters are neutralised (see [`log_lines`]).
    pub async fn line(&self, key: Execution, text: impl AsRef<str>) {
        for line in log_lines(text.as_ref()) {
            let _ = self.tx.send(LogMsg::Line(key, stamp(&line))).await;
        }
    }

    /// Ends an execution's log: flushes it, makes it durable and renames it into place. Returns
    /// the first error met while writing it, if any.
    pub async fn close(&self, key: Execution) -> std::result::Result<(), String> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(LogMsg::Close(key, tx)).await.is_err() {
            return Err("task-log writer stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("task-log writer stopped".into()))
    }
}

fn create(path: &Path, limit: u64) -> OpenLog {
    let open = || {
        OpenOptions::new()
            .read(true) // to add its end to a salvaged copy, see `append_after_salvage`
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    };
    let file = open().or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => make_node_dir(path).and_then(|()| open()),
        _ => Err(e),
    });
    match file {
        Ok(f) => OpenLog {
            out: Some(BufWriter::new(f)),
            error: None,
            written: 0,
            limit,
            cut: false,
        },
        Err(e) => OpenLog {
            out: None,
            error: Some(format!("create task log {}: {e}", path.display())),
            written: 0,
            limit,
            cut: false,
        },
    }
}

/// Makes `InProgress/{node}/` on first use. Only those two levels: were `TaskLogs/` itself
/// missing, the store is not mounted, and recreating it would write to the local disk.
fn make_node_dir(log: &Path) -> std::io::Result<()> {
    let node_dir = log.parent().ok_or(std::io::ErrorKind::NotFound)?;
    let in_progress = node_dir.parent().ok_or(std::io::ErrorKind::NotFound)?;
    for dir in [in_progress, node_dir] {
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

impl OpenLog {
    fn write(&mut self, line: &str) {
        if self.cut {
            return;
        }
        let marker;
        let line = if self.written + line.len() as u64 > self.limit {
            self.cut = true;
            marker = stamp(&format!(
                "WARN  log cut here: it reached its limit of {} bytes (CUTTLE_TASK_LOG_MAX_BYTES); \
                 later output was dropped",
                self.limit
            ));
            marker.as_str()
        } else {
            line
        };
        self.written += line.len() as u64;
        if let (Some(out), None) = (self.out.as_mut(), &self.error) {
            if let Err(e) = out.write_all(line.as_bytes()) {
                self.error = Some(format!("write task log: {e}"));
            }
        }
    }

    /// Flush, fsync, rename into place. Done even after a write error, so that what was
    /// written can be read; the first error is returned.
    fn finish(self, partial: &Path, done: &Path) -> std::result::Result<(), String> {
        let Some(out) = self.out else {
            return Err(self.error.unwrap_or_default());
        };
        let file = out.into_inner().map_err(|e| e.into_error());
        let synced = file
            .as_ref()
            .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("write task log: {e}"));
        let renamed = match (std::fs::rename(partial, done), file) {
            // Another node salvaged this log while this one was frozen: add what came after.
            (Err(e), Ok(mut f)) if e.kind() == std::io::ErrorKind::NotFound => {
                append_after_salvage(&mut f, partial, done)
            }
            (r, _) => r,
        }
        .map_err(|e| format!("put task log in place {}: {e}", done.display()));
        match (self.error, synced, renamed) {
            (Some(e), _, _) | (None, Err(e), _) | (None, Ok(()), Err(e)) => Err(e),
            (None, Ok(()), Ok(())) => Ok(()),
        }
    }
}

/// `done` is a salvage of this writer's log: its complete lines up to some point, then one line
/// saying why it ends. Rewrites it as that, followed by everything this writer wrote after the
/// point, so no line of either is lost.
fn append_after_salvage(mine: &mut File, partial: &Path, done: &Path) -> std::io::Result<()> {
    let mut salvaged = File::open(done)?;
    let len = salvaged.metadata()?.len();
    // The salvage's own last line starts after the previous newline.
    let tail_start = len.saturating_sub(4096);
    let mut tail = Vec::new();
    salvaged.seek(SeekFrom::Start(tail_start))?;
    salvaged.read_to_end(&mut tail)?;
    let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
    let kept = tail_start
        + body
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i as u64 + 1);
    let tmp = partial.with_extension(format!("{}.tmp", unique_suffix()));
    let mut out = File::create(&tmp)?;
    salvaged.seek(SeekFrom::Start(0))?;
    std::io::copy(&mut salvaged, &mut out)?;
    mine.seek(SeekFrom::Start(kept))?;
    std::io::copy(mine, &mut out)?;
    out.sync_all()?;
    std::fs::rename(&tmp, done)
}

/// What a log cleared by retention says instead.
const CLEARED: &str = "removed by retention";

impl SharedStore {
    /// Replaces each complete part of a finished task's log with one line saying it was removed
    /// by retention and why (each part written beside it and renamed over it, so a reader sees
    /// one or the other). False when there was nothing left to remove.
    pub fn clear_task_log(&self, task: &TaskRecord, why: &str) -> Result<bool> {
        let mut changed = false;
        for epoch in 1..=task.claim_epoch {
            let path = self.task_log_path(Execution {
                task: task.id,
                epoch,
            });
            let small = match std::fs::metadata(&path) {
                Ok(m) => m.len() < 4096,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read task log", &path, e)),
            };
            if small && std::fs::read_to_string(&path).is_ok_and(|t| t.contains(CLEARED)) {
                continue;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let line = format!(
                "{} INFO  this log was {CLEARED}: {why}\n",
                cuttle_core::format_rfc3339_ms(now)
            );
            let temp = path.with_extension("log.clearing");
            std::fs::write(&temp, line).map_err(|e| Error::io("write task log", &temp, e))?;
            std::fs::rename(&temp, &path).map_err(|e| Error::io("replace task log", &path, e))?;
            changed = true;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::tests::temp_dir;
    use cuttle_core::TaskState;

    fn key(task: i64, epoch: i64) -> Execution {
        Execution {
            task: TaskId(task),
            epoch,
        }
    }

    fn record(id: i64, epoch: i64, state: TaskState, node: Option<&str>) -> TaskRecord {
        TaskRecord {
            id: TaskId(id),
            kind: "Sleep".into(),
            arguments: serde_json::json!({}),
            state,
            description: String::new(),
            concurrency_tag: None,
            node: node.map(str::to_owned),
            claim_epoch: epoch,
            queued_at: 0,
            started_at: None,
            completed_at: None,
            error: None,
        }
    }

    fn read_all(log: TaskLog) -> String {
        let mut text = String::new();
        for mut f in log.parts {
            f.read_to_string(&mut text).unwrap();
        }
        text
    }

    #[tokio::test]
    async fn a_log_is_in_progress_until_closed_then_in_place() {
        let store = SharedStore::open(&temp_dir("logs")).unwrap();
        let w = TaskLogWriter::start(store.clone(), "n1", DEFAULT_TASK_LOG_MAX_BYTES);
        let k = key(7, 1);
        w.line(k, "before open").await;
        w.open(k).await;
        w.line(k, "first").await;
        // Readable while running, from where the node writes it, and marked incomplete.
        let running = record(7, 1, TaskState::Executing, Some("n1"));
        let text = loop {
            let log = store.open_task_log(&running).unwrap();
            assert!(!log.complete);
            let text = read_all(log);
            if !text.is_empty() {
                break text;
            }
            tokio::task::yield_now().await;
        };
        assert!(!store.task_log_path(k).exists());
        assert!(text.ends_with(" first\n"), "{text:?}");
        w.line(k, "second").await;
        w.close(k).await.unwrap();
        w.line(k, "after close").await;
        assert!(!store.in_progress_path("n1", k).exists());
        let log = store
            .open_task_log(&record(7, 1, TaskState::Success, Some("n1")))
            .unwrap();
        assert!(log.complete);
        let text = read_all(log);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with(" first") && lines[1].ends_with(" second"));
        assert!(lines[0].starts_with("20") && lines[0].contains('T'));
    }

    #[test]
    fn salvage_keeps_complete_lines_adds_the_reason_and_cleans_up() {
        let store = SharedStore::open(&temp_dir("salvage")).unwrap();
        let dir = store.in_progress_dir("gone");
        std::fs::create_dir_all(&dir).unwrap();
        // A log cut mid-line by a crash, another task's log, and a salvage's leftover.
        std::fs::write(store.in_progress_path("gone", key(1, 2)), "a\nb\nhalf").unwrap();
        std::fs::write(store.in_progress_path("gone", key(2, 1)), "c\n").unwrap();
        std::fs::write(dir.join("ServerTasks-1.2.999.tmp"), "junk").unwrap();

        // A scheduler salvages only the tasks it stopped, and leaves temporary files alone; a
        // task stopped before it wrote anything gets a log saying why.
        let stopped = [key(1, 2), key(5, 1)];
        let n = store
            .salvage_task_logs("gone", &stopped, false, "node gone was lost")
            .unwrap();
        assert_eq!(n, 2);
        let text = std::fs::read_to_string(store.task_log_path(key(5, 1))).unwrap();
        assert!(text.starts_with("20") && text.ends_with(" node gone was lost\n"));
        assert_eq!(text.lines().count(), 1);
        let text = std::fs::read_to_string(store.task_log_path(key(1, 2))).unwrap();
        assert!(text.starts_with("a\nb\n20"), "{text:?}");
        assert!(text.ends_with(" node gone was lost\n"), "{text:?}");
        assert!(!store.in_progress_path("gone", key(1, 2)).exists());
        assert!(dir.join("ServerTasks-1.2.999.tmp").exists());

        // The node itself, restarting, salvages the rest and removes the leftovers.
        let n = store
            .salvage_task_logs("gone", &stopped, true, "node gone restarted")
            .unwrap();
        assert_eq!(n, 1, "only task 2 was still in progress");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let text = std::fs::read_to_string(store.task_log_path(key(2, 1))).unwrap();
        assert!(text.starts_with("c\n") && text.ends_with(" node gone restarted\n"));
    }

    #[tokio::test]
    async fn a_writer_that_was_salvaged_meanwhile_adds_its_end() {
        let store = SharedStore::open(&temp_dir("frozen")).unwrap();
        let w = TaskLogWriter::start(store.clone(), "frozen", DEFAULT_TASK_LOG_MAX_BYTES);
        let k = key(9, 1);
        w.open(k).await;
        w.line(k, "before").await;
        let partial = store.in_progress_path("frozen", k);
        let flushed = || std::fs::read_to_string(&partial).unwrap_or_default();
        while !flushed().ends_with(" before\n") {
            tokio::task::yield_now().await;
        }
        // Another node declares this one lost and salvages the log.
        let n = store
            .salvage_task_logs("frozen", &[k], false, "node frozen was lost")
            .unwrap();
        assert_eq!(n, 1);
        // This node wakes up, notices, and finishes.
        w.line(k, "after").await;
        w.close(k).await.unwrap();
        let text = std::fs::read_to_string(store.task_log_path(k)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with(" before"), "{text}");
        assert!(lines[1].ends_with(" node frozen was lost"), "{text}");
        assert!(lines[2].ends_with(" after"), "{text}");
        assert_eq!(
            std::fs::read_dir(partial.parent().unwrap())
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn every_execution_is_read_in_order_and_gaps_are_incomplete() {
        let store = SharedStore::open(&temp_dir("parts")).unwrap();
        std::fs::write(store.task_log_path(key(3, 1)), "one\n").unwrap();
        std::fs::write(store.task_log_path(key(3, 3)), "three\n").unwrap();
        let log = store
            .open_task_log(&record(3, 3, TaskState::Success, Some("n")))
            .unwrap();
        assert!(!log.complete, "the second execution's log is missing");
        assert_eq!(read_all(log), "one\nthree\n");
        std::fs::write(store.task_log_path(key(3, 2)), "two\n").unwrap();
        let log = store
            .open_task_log(&record(3, 3, TaskState::Success, Some("n")))
            .unwrap();
        assert!(log.complete);
        assert_eq!(read_all(log), "one\ntwo\nthree\n");
        // Never claimed: nothing to read, and complete only once it has ended.
        let queued = store
            .open_task_log(&record(4, 0, TaskState::Queued, None))
            .unwrap();
        assert!(queued.parts.is_empty() && !queued.complete);
    }

    #[test]
    fn in_progress_names_round_trip() {
        let store = SharedStore::open(&temp_dir("names")).unwrap();
        let p = store.in_progress_path("n", key(12, 4));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_in_progress_name(name), Some(key(12, 4)));
        assert_eq!(parse_in_progress_name("x.tmp"), None);
        assert_eq!(parse_in_progress_name("ServerTasks-1.log"), None);
    }

    #[test]
    fn text_becomes_stamped_lines_no_one_can_forge() {
        let forged = "ok\n2026-01-01T00:00:00.000Z INFO  task succeeded\r";
        assert_eq!(
            log_lines(forged),
            vec!["ok\u{fffd}2026-01-01T00:00:00.000Z INFO  task succeeded\u{fffd}"]
        );
        assert_eq!(
            log_lines("tab\tand \u{1b}[31mcolour \u{1b}]52;c;cm0gLXJm\u{7} \u{9b}2J"),
            vec!["tab\tand \u{fffd}[31mcolour \u{fffd}]52;c;cm0gLXJm\u{fffd} \u{fffd}2J"]
        );
        let long = "é".repeat(MAX_LOG_LINE); // two bytes each
        let lines = log_lines(&long);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() <= MAX_LOG_LINE));
        assert_eq!(lines.concat(), long);
    }

    #[tokio::test]
    async fn a_log_past_its_bound_says_so_and_keeps_nothing_more() {
        let store = SharedStore::open(&temp_dir("logs-bound")).unwrap();
        let w = TaskLogWriter::start(store.clone(), "n1", 1000);
        let k = key(9, 1);
        w.open(k).await;
        for i in 0..100 {
            w.line(k, format!("line {i} of some output")).await;
        }
        w.close(k).await.unwrap();
        let text = read_all(
            store
                .open_task_log(&record(9, 1, TaskState::Success, Some("n1")))
                .unwrap(),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.last().unwrap().contains("log cut here"), "{text}");
        assert!(lines.len() < 40, "{}", lines.len());
        let kept = text.len() - lines.last().unwrap().len() - 1;
        assert!(kept <= 1000, "{kept}");
        assert!(text.contains(" line 0 of some output\n"));
    }
}
