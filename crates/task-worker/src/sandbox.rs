//! Scripts on the node itself (the built-in worker) run **isolated**: as an unprivileged user of
//! their own (`CUTTLE_BUILTIN_WORKER_USER`, `cuttle-script` by default), never the node's, inside
//! a bubblewrap sandbox (`bwrap`, Debian's `bubblewrap`) with namespaces of their own:
//!
//! - a PID namespace: the node's processes (and their `/proc/PID/environ`) do not exist there,
//!   and every process of the script ends when the sandbox's first process does, `setsid` or
//!   not;
//! - a mount namespace: the host's file system read-only, with the node's data directory, the
//!   shared store, the configuration file and the TLS key replaced by empty ones; a fresh `/tmp`,
//!   `/dev` and `/proc`; writable only the script's own work directory (and any directory the
//!   operator lists in `CUTTLE_BUILTIN_WORKER_BIND`);
//! - a user namespace it cannot nest (`--disable-userns`), IPC and UTS namespaces; the network
//!   is the host's (scripts call APIs).
//!
//! The script's text reaches the sandbox as a file only it can read (`--ro-bind-data` from a
//! memory file), never on a command line. What happens in the work directory after the script
//! (collecting artifacts, removing it) happens as the script's user too, so the node never opens
//! a file a script made with its own privileges.
//!
//! There is no unisolated mode: a node that cannot isolate (no such user, no `bwrap`, not root
//! and without the capabilities to switch users, namespaces refused by the kernel) refuses
//! scripts on the node with the reason, and runs everything else.

use std::ffi::{CStr, CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use cuttle_core::TaskId;

/// `CUTTLE_BUILTIN_WORKER`: whether this node runs scripts on itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinWorker {
    /// Isolated, as described above (the default).
    Isolated,
    /// Scripts on the node are refused; targets and every other kind still run.
    Off,
}

impl std::str::FromStr for BuiltinWorker {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "isolated" => Ok(BuiltinWorker::Isolated),
            "off" => Ok(BuiltinWorker::Off),
            other => Err(format!(
                "must be isolated or off, got {other:?} (there is no unisolated mode)"
            )),
        }
    }
}

/// The default user scripts on a node run as.
pub const DEFAULT_SCRIPT_USER: &str = "cuttle-script";

/// How scripts on this node are isolated.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub mode: BuiltinWorker,
    /// The user scripts run as: never root, never the node's own.
    pub user: String,
    /// Directories and files scripts must not see: the data directory, the shared store, the
    /// configuration file, the TLS key. Directories become empty, files empty.
    pub hidden: Vec<PathBuf>,
    /// Directories scripts may write (bound read-write at the same path).
    pub writable: Vec<PathBuf>,
}

impl SandboxConfig {
    /// Isolated as `cuttle-script`, hiding `hidden`.
    pub fn isolated(hidden: Vec<PathBuf>) -> SandboxConfig {
        SandboxConfig {
            mode: BuiltinWorker::Isolated,
            user: DEFAULT_SCRIPT_USER.to_owned(),
            hidden,
            writable: Vec::new(),
        }
    }
}

/// Whether and how this node runs scripts on itself; decided once when the worker starts.
#[derive(Debug)]
pub(crate) struct Sandbox {
    state: State,
    hidden: Vec<PathBuf>,
    writable: Vec<PathBuf>,
    work_root: PathBuf,
}

#[derive(Debug)]
enum State {
    Ready(Ready),
    Refused(String),
}

#[derive(Debug)]
struct Ready {
    bwrap: PathBuf,
    uid: u32,
    gid: u32,
    user: String,
}

/// A script's work directory: made for its user, reached through a descriptor opened while the
/// path was known to be the node's.
pub(crate) struct WorkDir {
    pub(crate) path: PathBuf,
    fd: OwnedFd,
}

/// A sandboxed command and the descriptors it needs until it is spawned.
pub(crate) struct Sandboxed {
    cmd: std::process::Command,
    _keep: Vec<OwnedFd>,
}

impl Sandboxed {
    /// Starts it with these outputs; killed if the child handle is dropped.
    pub(crate) fn spawn(
        self,
        stdout: Stdio,
        stderr: Stdio,
    ) -> std::io::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::from(self.cmd);
        cmd.stdout(stdout).stderr(stderr).kill_on_drop(true);
        cmd.spawn()
        // The descriptors in `_keep` were copied into the child: closed here.
    }

    /// Runs it to its end (blocking); its error output is the error.
    fn run(mut self) -> Result<(), String> {
        let out = self
            .cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Err(if why.is_empty() {
                out.status.to_string()
            } else {
                why
            })
        }
    }
}

/// Where a sandbox sees its work directory's descriptor and the script's memory file.
const DIR_FD: RawFd = 10;
const SCRIPT_FD: RawFd = 11;

impl Sandbox {
    /// Checks everything isolation needs, once; a node that cannot isolate says why in its log
    /// and in every script task it refuses.
    pub(crate) fn probe(cfg: &SandboxConfig, work_root: &Path) -> Sandbox {
        let state = match cfg.mode {
            BuiltinWorker::Off => State::Refused(
                "scripts on the node are off on this node (CUTTLE_BUILTIN_WORKER=off); run them \
                 on targets, or on a node that isolates them"
                    .to_owned(),
            ),
            BuiltinWorker::Isolated => match ready(cfg) {
                Ok(r) => State::Ready(r),
                Err(why) => State::Refused(format!(
                    "this node cannot run scripts isolated, so it runs none: {why} \
                     (docs/security.md, \"Scripts on a node\")"
                )),
            },
        };
        let sandbox = Sandbox {
            state,
            hidden: cfg.hidden.clone(),
            writable: cfg.writable.clone(),
            work_root: work_root.to_owned(),
        };
        // The proof that it works: a script that does nothing, in a real sandbox.
        if let State::Ready(r) = &sandbox.state {
            if let Err(why) = sandbox.trial() {
                let user = r.user.clone();
                return Sandbox {
                    state: State::Refused(format!(
                        "this node cannot run scripts isolated, so it runs none: a trial sandbox \
                         as {user} failed: {why} (docs/security.md, \"Scripts on a node\")"
                    )),
                    ..sandbox
                };
            }
        }
        match &sandbox.state {
            State::Ready(r) => {
                tracing::info!(user = %r.user, uid = r.uid, bwrap = %r.bwrap.display(),
                "scripts on this node run isolated")
            }
            State::Refused(why) => tracing::warn!("{why}"),
        }
        sandbox
    }

    /// Why this node refuses scripts on itself, if it does.
    pub(crate) fn refusal(&self) -> Option<&str> {
        match &self.state {
            State::Refused(why) => Some(why),
            State::Ready(_) => None,
        }
    }

    /// The environment a script on this node starts with: the basics (`PATH`, `LANG`, `TZ`, …)
    /// from the node's, `HOME` its work directory, `USER` its user; the task's own after this.
    pub(crate) fn base_env(&self, dir: &WorkDir) -> Vec<(OsString, OsString)> {
        let user = match &self.state {
            State::Ready(r) => r.user.clone(),
            State::Refused(_) => String::new(),
        };
        let mut env: Vec<(OsString, OsString)> =
            cuttle_proto::script_env::inherited(std::env::vars_os())
                .into_iter()
                .filter(|(k, _)| {
                    !matches!(k.to_str(), Some("HOME" | "USER" | "LOGNAME" | "TMPDIR"))
                })
                .collect();
        env.push(("HOME".into(), dir.path.clone().into_os_string()));
        env.push(("USER".into(), user.clone().into()));
        env.push(("LOGNAME".into(), user.into()));
        env
    }

    fn ready(&self) -> Result<&Ready, String> {
        match &self.state {
            State::Ready(r) => Ok(r),
            State::Refused(why) => Err(why.clone()),
        }
    }

    /// Makes `work_root/<task>/`, empty, owned by the script's user (mode 0700).
    pub(crate) fn work_dir(&self, task: TaskId) -> Result<WorkDir, String> {
        let r = self.ready()?;
        let path = self.work_root.join(task.to_string());
        std::fs::create_dir_all(&self.work_root)
            .and_then(|()| traversable(&self.work_root))
            .and_then(|()| self.work_root.parent().map_or(Ok(()), traversable))
            .map_err(|e| format!("create {}: {e}", self.work_root.display()))?;
        if path.symlink_metadata().is_ok() {
            // Left by a process of this node that died: emptied as its user, then removed.
            let old = open_dir(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
            self.empty(&WorkDir {
                path: path.clone(),
                fd: old,
            })?;
            std::fs::remove_dir(&path).map_err(|e| format!("remove {}: {e}", path.display()))?;
        }
        // Only the node writes in the work root: the path cannot be swapped under it.
        let made = std::fs::create_dir(&path)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            })
            .and_then(|()| std::os::unix::fs::lchown(&path, Some(r.uid), Some(r.gid)));
        if let Err(e) = made {
            let _ = std::fs::remove_dir(&path);
            return Err(format!("make {} for {}: {e}", path.display(), r.user));
        }
        let fd = open_dir(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        Ok(WorkDir { path, fd })
    }

    /// `/bin/sh` running `script` in the sandbox, in `dir`, with exactly `env`.
    pub(crate) fn script(
        &self,
        dir: &WorkDir,
        script: &str,
        env: Vec<(OsString, OsString)>,
    ) -> Result<Sandboxed, String> {
        let memfd = memory_file(script.as_bytes()).map_err(|e| format!("hold the script: {e}"))?;
        let inside = script_path(&self.work_root, &dir.path);
        let argv = [OsString::from("/bin/sh"), inside.clone().into_os_string()];
        self.command(dir, Some((memfd, inside)), &argv, env)
    }

    /// `argv` in the sandbox of `dir`, as the script's user, with a minimal environment: how
    /// the node reads or removes what a script left.
    pub(crate) fn helper(&self, dir: &WorkDir, argv: &[&str]) -> Result<Sandboxed, String> {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let env = vec![(
            OsString::from("PATH"),
            OsString::from("/usr/local/bin:/usr/bin:/bin"),
        )];
        self.command(dir, None, &argv, env)
    }

    fn command(
        &self,
        dir: &WorkDir,
        script: Option<(OwnedFd, PathBuf)>,
        argv: &[OsString],
        env: Vec<(OsString, OsString)>,
    ) -> Result<Sandboxed, String> {
        use std::os::unix::process::CommandExt;
        let r = self.ready()?;
        let mut cmd = std::process::Command::new(&r.bwrap);
        cmd.env_clear().envs(env);
        cmd.args([
            "--unshare-all",
            "--share-net",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "cuttle-script",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/var/tmp",
        ]);
        for w in &self.writable {
            cmd.arg("--bind").arg(w).arg(w);
        }
        for h in &self.hidden {
            if h.is_dir() {
                cmd.arg("--tmpfs").arg(h);
            } else if h.exists() {
                cmd.arg("--ro-bind").arg("/dev/null").arg(h);
            }
        }
        // The work root appears empty but for the script's own directory (and its text).
        cmd.arg("--tmpfs").arg(&self.work_root);
        cmd.arg("--bind-fd").arg(DIR_FD.to_string()).arg(&dir.path);
        let mut keep = Vec::new();
        let mut fds = vec![(dir.fd.as_raw_fd(), DIR_FD)];
        if let Some((memfd, inside)) = script {
            cmd.args(["--perms", "0400", "--ro-bind-data"])
                .arg(SCRIPT_FD.to_string())
                .arg(inside);
            fds.push((memfd.as_raw_fd(), SCRIPT_FD));
            keep.push(memfd);
        }
        cmd.arg("--chdir").arg(&dir.path).arg("--").args(argv);
        cmd.stdin(Stdio::null()).process_group(0);
        let (uid, gid) = (r.uid, r.gid);
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close, setgroups, setresgid,
        // setresuid, prctl, umask) on values computed before the fork.
        unsafe {
            cmd.pre_exec(move || become_script_user(&fds, uid, gid));
        }
        // The work directory's descriptor is the caller's: it outlives the spawn.
        Ok(Sandboxed { cmd, _keep: keep })
    }

    /// Empties `dir` as the script's user (whatever modes the script left), so that the node
    /// can remove the directory itself. Blocking.
    pub(crate) fn empty(&self, dir: &WorkDir) -> Result<(), String> {
        let s = self.helper(
            dir,
            &[
                "/bin/sh",
                "-c",
                "chmod -R u+rwX . 2>/dev/null; find . -mindepth 1 -delete",
            ],
        )?;
        s.run()
            .map_err(|e| format!("empty {}: {e}", dir.path.display()))
    }

    /// Empties and removes a work directory; a failure is logged, not fatal. Blocking.
    pub(crate) fn remove(&self, dir: WorkDir) {
        if let Err(e) = self.empty(&dir) {
            tracing::warn!(error = %e, "remove a script's work directory");
        }
        drop(dir.fd);
        if let Err(e) = std::fs::remove_dir(&dir.path) {
            tracing::warn!(dir = %dir.path.display(), error = %e, "remove a script's work directory");
        }
    }

    fn trial(&self) -> Result<(), String> {
        let dir = self.work_dir(TaskId(0))?;
        let ran = self.script(&dir, "exit 0", Vec::new())?.run();
        self.remove(dir);
        ran
    }
}

/// Where the script's text is inside the sandbox: beside its work directory, in the work root
/// that only the sandbox's empty copy of holds it.
fn script_path(work_root: &Path, dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    work_root.join(format!(".{name}.script"))
}

/// Everything isolation needs, or why it is not there.
fn ready(cfg: &SandboxConfig) -> Result<Ready, String> {
    let (uid, gid) = user_ids(&cfg.user)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if uid == 0 {
        return Err(format!(
            "CUTTLE_BUILTIN_WORKER_USER {:?} is root: scripts need a user of their own",
            cfg.user
        ));
    }
    if uid == me {
        return Err(format!(
            "CUTTLE_BUILTIN_WORKER_USER {:?} is the node's own user: scripts need a user of \
             their own",
            cfg.user
        ));
    }
    if me != 0 {
        let missing = missing_capabilities();
        if !missing.is_empty() {
            return Err(format!(
                "the node runs as uid {me} without {} (run it as root, or give it these \
                 capabilities as the shipped systemd unit does)",
                missing.join(", ")
            ));
        }
    }
    let bwrap = find_bwrap().ok_or_else(|| {
        "bubblewrap is not installed (no bwrap on PATH or in /usr/bin): install the package \
         bubblewrap"
            .to_owned()
    })?;
    Ok(Ready {
        bwrap,
        uid,
        gid,
        user: cfg.user.clone(),
    })
}

/// The user's uid and primary gid.
fn user_ids(user: &str) -> Result<(u32, u32), String> {
    let name = CString::new(user).map_err(|_| format!("user name {user:?} holds a NUL"))?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` outlives the read of `pwd` below.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(format!(
            "there is no user {user:?} (create it: useradd --system --user-group \
             --no-create-home --shell /usr/sbin/nologin {user}; or name another in \
             CUTTLE_BUILTIN_WORKER_USER)"
        ));
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

/// The capabilities a non-root node needs to start scripts as another user and stop them.
fn missing_capabilities() -> Vec<&'static str> {
    const NEEDED: [(u32, &str); 4] = [
        (0, "CAP_CHOWN"),
        (5, "CAP_KILL"),
        (6, "CAP_SETGID"),
        (7, "CAP_SETUID"),
    ];
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    NEEDED
        .iter()
        .filter(|(bit, _)| effective & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}

fn find_bwrap() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
}

/// The work root and the data directory holding it must be traversable by the script's user
/// (to reach its own directory; neither lists its names to others, and what is in them is the
/// node's alone).
fn traversable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o011 != 0o011 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))?;
    }
    Ok(())
}

fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid C string; the descriptor returned is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A memory file holding `bytes`, positioned at its start.
fn memory_file(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    use std::io::{Seek, Write};
    const NAME: &CStr = c"cuttle-script";
    // SAFETY: a valid C string; the descriptor returned is owned below.
    let fd = unsafe { libc::memfd_create(NAME.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes)?;
    file.seek(std::io::SeekFrom::Start(0))?;
    Ok(OwnedFd::from(file))
}

/// In the child, before `bwrap` starts: the descriptors it is given at fixed numbers, then the
/// script's user for good (no supplementary groups, no capabilities kept), and the usual umask.
fn become_script_user(fds: &[(RawFd, RawFd)], uid: u32, gid: u32) -> std::io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    // Moved out of the way first, so that placing one never overwrites another.
    let mut moved = Vec::with_capacity(fds.len());
    for &(from, to) in fds {
        // SAFETY: fcntl on descriptors of this process.
        let tmp = check(unsafe { libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 100) })?;
        moved.push((tmp, to));
    }
    for (tmp, to) in moved {
        // SAFETY: dup2 on descriptors of this process; the copy at `to` is not close-on-exec.
        check(unsafe { libc::dup2(tmp, to) })?;
        // SAFETY: closing our own temporary copy.
        unsafe { libc::close(tmp) };
    }
    // SAFETY: plain system calls; failure is reported and the child never runs bwrap.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(gid, gid, gid))?;
        check(libc::setresuid(uid, uid, uid))?;
        // A node given capabilities as ambient ones would otherwise pass them on.
        check(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ))?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        libc::umask(0o022);
    }
    Ok(())
}
