//! The process groups of running scripts, recorded on the node's disk, so that a node whose
//! process was killed stops, when it starts again, the scripts its previous process left
//! running. Each record holds the group's id and its leader's start time, so a process id that
//! was since given to another program is never killed by mistake.

use std::path::{Path, PathBuf};

use cuttle_core::TaskId;

const DIR: &str = ".process-groups";

/// Removed when dropped, that is when the task's script has been dealt with.
pub(crate) struct GroupRecord(PathBuf);

impl GroupRecord {
    pub(crate) fn create(work_root: &Path, task: TaskId, pgid: u32) -> Option<GroupRecord> {
        let dir = work_root.join(DIR);
        let start = start_time(pgid)?;
        let path = dir.join(task.to_string());
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, format!("{pgid} {start}")))
            .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "record script process group"))
            .ok()?;
        Some(GroupRecord(path))
    }
}

impl Drop for GroupRecord {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Kills the process groups recorded by a previous process of this node, and forgets them.
/// Returns how many were killed.
pub(crate) fn kill_leftovers(work_root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(work_root.join(DIR)) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let record = std::fs::read_to_string(&path).unwrap_or_default();
        let mut fields = record.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(pgid)), Some(Ok(start))) = (fields.next(), fields.next()) {
            // The leader still runs (same start time), or it is gone: then only members of the
            // old group can hold its id, since Linux does not reuse an id a group still uses.
            let ours = match start_time(pgid as u32) {
                Some(t) => t == start,
                None => true,
            };
            if let (true, Ok(pgid)) = (ours, i32::try_from(pgid)) {
                // SAFETY: kill has no memory-safety preconditions; -pgid names a process group.
                if unsafe { libc::kill(-pgid, libc::SIGKILL) } == 0 {
                    killed += 1;
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

/// A process's start time (clock ticks since boot), field 22 of `/proc/PID/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: count fields after its closing ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_recorded_group_is_killed_later_and_a_finished_record_is_gone() {
        let root = std::env::temp_dir().join(format!("cuttle-groups-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 600"])
            .process_group(0)
            .spawn()
            .unwrap();
        let record = GroupRecord::create(&root, TaskId(1), child.id()).unwrap();
        std::mem::forget(record); // as if the node died with the script running
        let done = GroupRecord::create(&root, TaskId(2), std::process::id()).unwrap();
        drop(done); // a script that ended normally leaves no record
        assert_eq!(kill_leftovers(&root), 1);
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed: {status}");
        assert_eq!(
            kill_leftovers(&root),
            0,
            "records are forgotten once handled"
        );
    }
}
