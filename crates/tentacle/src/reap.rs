//! No process outlives its script. The agent starts each script through `cuttle-tentacle
//! __reap AGENT_PID SHELL ARGS…` (its own binary, `/proc/self/exe`, which still runs after an
//! upgrade replaced the file): a small process that makes itself a *child subreaper*
//! (`PR_SET_CHILD_SUBREAPER`), so every process the script starts stays beneath it whatever it
//! does — `setsid`, double forks, `nohup` — because an orphan is re-parented to its nearest
//! subreaper, not to init. When the script's shell ends (or the reaper is told to stop with
//! `SIGTERM`: a cancel, or the agent dying, through `PR_SET_PDEATHSIG`), it kills every
//! process left beneath it, round after round until none is left, and exits with the shell's
//! status (`128 + signal` when the shell was killed by one, 143 when stopped). When stopped, the
//! processes first get `SIGTERM` and three seconds to end, so a script's `trap` can clean up.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};

/// The first argument that makes `cuttle-tentacle` a reaper.
pub(crate) const ARG: &str = "__reap";

/// Runs `argv` (after the agent's process id) beneath this process and returns the exit code
/// to leave with, once nothing started by it is left.
pub(crate) fn main(argv: &[OsString]) -> i32 {
    let agent = argv
        .first()
        .and_then(|p| p.to_str())
        .and_then(|p| p.parse::<libc::pid_t>().ok());
    let (Some(agent), Some((program, args))) = (agent, argv.get(1..).and_then(<[_]>::split_first))
    else {
        eprintln!("cuttle-tentacle {ARG}: usage: {ARG} AGENT_PID PROGRAM [ARGS…]");
        return 2;
    };
    let mut stop = signal_set(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    // SAFETY: plain system calls on this process's own attributes and a local signal set.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // The agent gone (killed, crashed): stop too, and take the script with us.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
        libc::pthread_sigmask(libc::SIG_BLOCK, &stop, std::ptr::null_mut());
    }
    // The agent may have died before the death signal was armed.
    if parent_gone(agent) {
        return 143;
    }
    let unblock = stop;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    // SAFETY: only async-signal-safe calls (sigprocmask) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cuttle-tentacle: start {}: {e}", program.to_string_lossy());
            return 127;
        }
    };
    let main_pid = child.id() as libc::pid_t;
    let code = match wait_for(main_pid, &mut stop) {
        Ended::Exited(code) => code,
        Ended::Stopped => {
            // Cancelled: the script's processes get SIGTERM first, so a `trap` can clean up.
            terminate_everything_beneath(&mut stop);
            143
        }
    };
    kill_everything_beneath();
    code
}

/// How long a cancelled script's processes have after `SIGTERM` before they are killed (the
/// agent gives the reaper longer).
const TERM_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

enum Ended {
    /// The shell ended with this code.
    Exited(i32),
    /// A stop signal came first.
    Stopped,
}

/// Sends `SIGTERM` to every process beneath this one, then reaps what ends within
/// [`TERM_GRACE`].
fn terminate_everything_beneath(set: &mut libc::sigset_t) {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut beneath = Vec::new();
    let mut next = vec![me];
    while let Some(p) = next.pop() {
        let children = children_of(p);
        next.extend(&children);
        beneath.extend(children);
    }
    for pid in beneath {
        // SAFETY: kill has no memory-safety preconditions; each is a live descendant.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = std::time::Instant::now() + TERM_GRACE;
    loop {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == 0 {
                break;
            }
            if pid < 0 {
                return; // nothing left beneath
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let wait = libc::timespec {
            tv_sec: 0,
            tv_nsec: left.min(std::time::Duration::from_millis(100)).as_nanos() as libc::c_long,
        };
        // SAFETY: sigtimedwait reads the (blocked) set and the timeout; no info is asked for.
        unsafe {
            libc::sigtimedwait(set, std::ptr::null_mut(), &wait);
        }
    }
}

fn parent_gone(agent: libc::pid_t) -> bool {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() != agent }
}

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Waits for the script's shell to end (its exit code) or for a stop signal.
fn wait_for(main_pid: libc::pid_t, set: &mut libc::sigset_t) -> Ended {
    loop {
        // Reap whatever has ended; the shell's end is the script's end.
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == main_pid {
                let s = std::process::ExitStatus::from_raw(status);
                return Ended::Exited(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)));
            }
        }
        let mut sig = 0;
        // SAFETY: sigwait reads the (blocked) set and writes the signal taken.
        if unsafe { libc::sigwait(set, &mut sig) } != 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            return Ended::Stopped;
        }
    }
}

/// Kills every process beneath this one. Killing a child re-parents its own children to this
/// process (the subreaper), so rounds go on until there is no child left to wait for.
fn kill_everything_beneath() {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    loop {
        for pid in children_of(me) {
            // SAFETY: kill has no memory-safety preconditions; `pid` is our own child (a
            // re-used pid cannot be: an unreaped child's pid stays taken).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`. Blocks until a child ends; ECHILD: none left.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            return;
        }
    }
}

/// The processes whose parent is `parent`, from `/proc`.
fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// The parent in `/proc/PID/stat`: the field after the state, after the command's `)`.
fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_is_read_from_proc() {
        // SAFETY: getpid/getppid have no preconditions.
        let (me, parent) = unsafe { (libc::getpid(), libc::getppid()) };
        assert_eq!(parent_of(me), Some(parent));
        assert_eq!(parent_of(-5), None);
    }
}
