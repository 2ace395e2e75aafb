//! Real `cuttle-tentacle` processes, each with its own home directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::node::workspace_binary;

static BIN: OnceLock<PathBuf> = OnceLock::new();

/// Makes every tentacle this process starts run `path` (a release build for benchmarks). Has
/// no effect once a tentacle was made.
pub fn use_tentacle_binary(path: PathBuf) {
    let _ = BIN.set(path);
}

/// The `cuttle-tentacle` binary: `CUTTLE_TENTACLE_BIN`, or the workspace's debug build.
pub fn tentacle_binary() -> PathBuf {
    BIN.get_or_init(|| {
        workspace_binary("CUTTLE_TENTACLE_BIN", "cuttle-tentacle", "cuttle-tentacle")
    })
    .clone()
}

/// One tentacle: its home (certificate, key, configuration) and, once started, its process.
/// Killed on drop.
pub struct Tentacle {
    pub name: String,
    pub home: PathBuf,
    /// Extra environment for `run` (applied last).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Tentacle {
    /// Creates the home under `dir` and a certificate in it.
    pub fn new(dir: &Path, name: &str) -> Tentacle {
        let home = dir.join(format!("tentacle-{name}"));
        let t = Tentacle {
            name: name.to_owned(),
            log: home.join("tentacle.log"),
            home,
            env: Vec::new(),
            child: None,
        };
        t.command(&["new-certificate"]);
        t
    }

    /// Runs `cuttle-tentacle ARGS` with this home, however it ends: (success, stdout, stderr).
    pub fn try_command(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(tentacle_binary())
            .args(args)
            .env("CUTTLE_TENTACLE_HOME", &self.home)
            .env_remove("CUTTLE_API_KEY")
            .stdin(Stdio::null())
            .output()
            .expect("run cuttle-tentacle");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Registers this tentacle with the cluster at `server` (`--role role`, `--comms comms`, one
    /// `--environment` per name, then `extra`); panics unless it succeeds.
    pub fn register(
        &self,
        server: &str,
        key: &str,
        role: &str,
        comms: &str,
        environments: &[&str],
        extra: &[&str],
    ) -> String {
        let mut args = vec![
            "register",
            "--server",
            server,
            "--api-key",
            key,
            "--name",
            &self.name,
            "--role",
            role,
            "--comms",
            comms,
        ];
        for e in environments {
            args.extend(["--environment", e]);
        }
        // Tests register targets before (or without) the steps that use their roles.
        args.push("--new-role");
        args.extend_from_slice(extra);
        self.command(&args)
    }

    /// Runs a command to completion; panics with its output unless it succeeds. Returns stdout.
    pub fn command(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.try_command(args);
        assert!(ok, "cuttle-tentacle {args:?} failed:\n{stdout}{stderr}");
        stdout
    }

    pub fn thumbprint(&self) -> String {
        self.command(&["show-thumbprint"]).trim().to_owned()
    }

    /// Starts `cuttle-tentacle run`; its log goes to `tentacle.log` in its home.
    pub fn start(&mut self) {
        self.start_with(None);
    }

    /// Starts it able to hold at most `files` open file descriptors (sockets included), as a
    /// small host's default limit would: for tests of what it does when it runs out.
    pub fn start_with_open_file_limit(&mut self, files: u64) {
        self.start_with(Some(files));
    }

    fn start_with(&mut self, nofile: Option<u64>) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("tentacle log");
        let mut cmd = Command::new(tentacle_binary());
        cmd.arg("run")
            .env("CUTTLE_TENTACLE_HOME", &self.home)
            .env("CUTTLE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        self.child = Some(cmd.spawn().expect("spawn cuttle-tentacle"));
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn config_path(&self) -> PathBuf {
        self.home.join("tentacle.toml")
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tentacle {
    fn drop(&mut self) {
        self.stop();
    }
}
