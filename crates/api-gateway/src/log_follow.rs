//! Following a task's log as it is written, from any byte offset to its end: the web UI's live
//! log (server-sent events) and gRPC `Tasks.WatchLog` read it the same way. Each follower holds
//! a place among its person's streams (`ui::streams`), and every follower of one task on a node
//! shares that node's one watcher of its record.

use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use cuttle_core::{TaskId, TaskRecord};
use tokio::sync::watch;

use crate::ui::streams::{backoff, Slot, Watched};
use crate::AppState;

/// The most one read of a log takes (and the most of it a web page shows at once).
pub(crate) const LOG_CHUNK: u64 = 1 << 20;
/// How often a follower looks for more of a log, once nothing has come for a while.
const FOLLOW: Duration = Duration::from_millis(500);

/// What a follower found.
pub(crate) enum Step {
    /// Whole lines of the log (or its last, unterminated one once complete), ending at `end_at`.
    Text { text: String, end_at: u64 },
    /// Nothing new within one look: the caller may check what it needs and ask again.
    Quiet,
    /// The task ended and its log was read to its end, or the task no longer exists.
    Ended,
}

/// Where one follower of one task's log is.
pub(crate) struct LogFollow {
    offset: u64,
    /// Looks in a row that found nothing new (how long the next wait is).
    quiet: u32,
    watched: watch::Receiver<Watched>,
    /// Its place among its person's streams, given back when the follower is dropped.
    _slot: Slot,
}

impl LogFollow {
    pub(crate) fn start(s: &AppState, id: TaskId, offset: u64, slot: Slot) -> LogFollow {
        LogFollow {
            offset,
            quiet: 0,
            watched: s.streams.watch(s, id),
            _slot: slot,
        }
    }

    /// The task as this node's watcher last read it (`None` before the first read or once it
    /// is gone).
    pub(crate) fn task(&self) -> Option<TaskRecord> {
        match &*self.watched.borrow() {
            Watched::Task(t) => Some((**t).clone()),
            Watched::Pending | Watched::Gone => None,
        }
    }

    /// The next piece of the log from where this follower is.
    pub(crate) async fn next(&mut self, s: &AppState) -> Step {
        let task = match &*self.watched.borrow() {
            Watched::Gone => return Step::Ended,
            Watched::Pending => None,
            Watched::Task(t) => Some((**t).clone()),
        };
        let Some(task) = task else {
            let _ = tokio::time::timeout(FOLLOW, self.watched.changed()).await;
            return Step::Quiet;
        };
        // The log is complete a moment before the task's state says it ended: the end waits
        // for both, so a follower sees how it ended.
        let finished = task.state.is_terminal();
        let (s2, offset) = (s.clone(), self.offset);
        let read =
            tokio::task::spawn_blocking(move || read_log(&s2, &task, offset, LOG_CHUNK)).await;
        let Ok(Ok((text, end_at, complete))) = read else {
            // The shared store is away for a moment: look again later.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Step::Quiet;
        };
        self.offset = end_at;
        if !text.is_empty() {
            self.quiet = 0;
            return Step::Text { text, end_at };
        }
        if complete && finished {
            return Step::Ended;
        }
        tokio::time::sleep(backoff(self.quiet, FOLLOW)).await;
        self.quiet += 1;
        Step::Quiet
    }
}

/// Up to `max` bytes of a task's log from `offset`, whole lines only unless the log is complete;
/// the text, where it ends, and whether that is the end of a complete log.
pub(crate) fn read_log(
    s: &AppState,
    task: &TaskRecord,
    offset: u64,
    max: u64,
) -> Result<(String, u64, bool), String> {
    let log = s.shared.open_task_log(task).map_err(|e| e.to_string())?;
    let mut skipped = 0u64;
    let mut bytes = Vec::new();
    let mut total = 0u64;
    for mut part in log.parts {
        let len = part.metadata().map(|m| m.len()).unwrap_or(0);
        total += len;
        if skipped + len <= offset {
            skipped += len;
            continue;
        }
        let from = offset.saturating_sub(skipped);
        skipped += len;
        part.seek(SeekFrom::Start(from))
            .map_err(|e| e.to_string())?;
        let room = max.saturating_sub(bytes.len() as u64);
        part.take(room)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes.len() as u64 >= max {
            break;
        }
    }
    let at_end = offset + bytes.len() as u64 >= total;
    if !(log.complete && at_end) {
        whole_lines(&mut bytes, max);
    }
    let end = offset + bytes.len() as u64;
    Ok((
        String::from_utf8_lossy(&bytes).into_owned(),
        end,
        log.complete && end >= total,
    ))
}

/// Keeps the whole lines of a read: a line still being written is sent once it is whole. A
/// line longer than one read (no newline in `max` bytes) goes in pieces, or it would never be
/// sent at all.
fn whole_lines(bytes: &mut Vec<u8>, max: u64) {
    match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => bytes.truncate(i + 1),
        None if bytes.len() as u64 >= max => {}
        None => bytes.clear(),
    }
}

#[cfg(test)]
mod tests {
    use super::whole_lines;

    #[test]
    fn whole_lines_wait_for_their_end_but_a_giant_line_goes_in_pieces() {
        let mut b = b"one\ntw".to_vec();
        whole_lines(&mut b, 16);
        assert_eq!(b, b"one\n");
        let mut b = b"partial".to_vec();
        whole_lines(&mut b, 16);
        assert!(b.is_empty());
        let mut b = vec![b'x'; 16];
        whole_lines(&mut b, 16);
        assert_eq!(b.len(), 16, "a read full of one line is sent as it is");
    }
}
