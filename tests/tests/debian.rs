//! docs/operations.md, "Installing from Debian packages", as written: `packaging/build-debs.sh`
//! builds cuttle-server, cuttle-tentacle and cuttle; `dpkg -i` installs them (system users,
//! directories at 0700, a 0600 environment file); `systemd-analyze` verifies the units and
//! scores their sandbox; the server and the tentacle start as their units say (their users,
//! environment, capabilities, umask — this machine runs no systemd), and the packaged CLI takes
//! them to a first deployment onto the tentacle. Then the packages are purged.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cuttle_e2e::{free_port, report, run_to_exit, server_binary, temp_dir, wait_until};

const MIN: Duration = Duration::from_secs(60);
const UNITS: &str = "/lib/systemd/system";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// A unit's `Key=value` lines (every value of a key repeated).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(UNITS).join(unit)).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

/// `KEY=value` lines of an environment file, as systemd reads them (comments and blanks skipped).
fn env_file(path: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Starts a unit's `ExecStart` the way systemd would here: a clean environment with the unit's
/// `Environment=` and `EnvironmentFile=`, as its `User=`, with its ambient capabilities and
/// `UMask=`, its output to `log`.
fn start_as_unit(unit: &str, log: &Path) -> Child {
    let user = unit_values(unit, "User").pop().expect("User=");
    let exec: Vec<String> = unit_values(unit, "ExecStart")
        .pop()
        .expect("ExecStart=")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut env: Vec<(String, String)> = unit_values(unit, "Environment")
        .iter()
        .filter_map(|v| v.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    for file in unit_values(unit, "EnvironmentFile") {
        env.extend(env_file(file.trim_start_matches('-')));
    }
    let caps: Vec<String> = unit_values(unit, "AmbientCapabilities")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let umask = unit_values(unit, "UMask")
        .pop()
        .map(|m| u32::from_str_radix(&m, 8).unwrap());
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={user}"))
        .arg(format!("--regid={user}"))
        .arg("--init-groups");
    if !caps.is_empty() {
        cmd.arg(format!("--inh-caps={}", caps.join(",")))
            .arg(format!("--ambient-caps={}", caps.join(",")));
    }
    let out = std::fs::File::create(log).unwrap();
    cmd.arg("--")
        .args(&exec)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    if let Some(mask) = umask {
        // SAFETY: umask is async-signal-safe and changes only the child.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(mask);
                Ok(())
            });
        }
    }
    cmd.spawn().unwrap_or_else(|e| panic!("start {unit}: {e}"))
}

/// What the test installed and started; stopped and purged however the test ends.
struct Installed {
    processes: Vec<Child>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        for p in &mut self.processes {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe {
                libc::kill(p.id() as i32, libc::SIGTERM);
            }
            let _ = p.wait();
        }
        let _ = Command::new("dpkg")
            .args(["--purge", "cuttle", "cuttle-tentacle", "cuttle-server"])
            .output();
        for dir in ["/var/lib/cuttle", "/var/lib/cuttle-tentacle", "/etc/cuttle"] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn mode(path: &str) -> (u32, u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.permissions().mode() & 0o7777, m.uid())
}

fn uid_of(user: &str) -> u32 {
    let out = run(Command::new("id").args(["-u", user]));
    out.trim().parse().unwrap()
}

/// The exposure level `systemd-analyze security` gives a unit (0 best, 10 worst).
fn exposure(unit: &str) -> f64 {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(Path::new(UNITS).join(unit)));
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in {out}"));
    line.split(": ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unreadable score: {line}"))
}

#[test]
fn the_debian_packages_install_run_a_first_deployment_and_purge() {
    let bins: PathBuf = server_binary().parent().unwrap().to_owned();
    let out = temp_dir("debs");
    run(Command::new("packaging/build-debs.sh")
        .env("CUTTLE_DEB_COMPRESSION", "gzip")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .arg(out.path())
        .arg(&bins));
    let debs: Vec<PathBuf> = ["cuttle-server", "cuttle-tentacle", "cuttle"]
        .iter()
        .map(|p| {
            out.path()
                .join(format!("{p}_{}_{}.deb", env!("CARGO_PKG_VERSION"), arch()))
        })
        .collect();
    let mut installed = Installed {
        processes: Vec::new(),
    };
    run(Command::new("dpkg").arg("-i").args(&debs));

    // What installing made.
    for user in ["cuttle", "cuttle-script", "cuttle-tentacle"] {
        uid_of(user);
    }
    assert_eq!(mode("/var/lib/cuttle"), (0o700, uid_of("cuttle")));
    assert_eq!(
        mode("/var/lib/cuttle-tentacle"),
        (0o700, uid_of("cuttle-tentacle"))
    );
    assert_eq!(mode("/etc/cuttle/cuttle.env"), (0o600, 0));
    for page in ["cuttle.1.gz", "cuttle-deploy.1.gz"] {
        assert!(
            Path::new("/usr/share/man/man1").join(page).exists(),
            "{page}"
        );
    }
    assert!(Path::new("/usr/share/bash-completion/completions/cuttle").exists());

    // The units: valid, and sandboxed.
    let units = ["cuttle-server.service", "cuttle-tentacle.service"];
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|u| Path::new(UNITS).join(u)))
        .output()
        .unwrap();
    assert!(
        verified.status.success() && verified.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let (server, tentacle) = (exposure(units[0]), exposure(units[1]));
    report(format!(
        "systemd-analyze security: cuttle-server.service {server}, cuttle-tentacle.service {tentacle} (0 best, 10 worst)"
    ));
    assert!(server <= 5.0, "cuttle-server.service exposure {server}");
    assert!(
        tentacle <= 6.5,
        "cuttle-tentacle.service exposure {tentacle}"
    );

    // The operator sets the node's addresses in its environment file, then starts it.
    let http = free_port();
    let mut env = std::fs::read_to_string("/etc/cuttle/cuttle.env").unwrap();
    for (k, v) in [
        ("CUTTLE_NODE_NAME", "deb1".to_owned()),
        ("CUTTLE_HTTP_LISTEN", format!("127.0.0.1:{http}")),
        ("CUTTLE_GRPC_LISTEN", format!("127.0.0.1:{}", free_port())),
        (
            "CUTTLE_GATEWAY_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "CUTTLE_PUBLIC_GRPC_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ),
    ] {
        env.push_str(&format!("{k}={v}\n"));
    }
    std::fs::write("/etc/cuttle/cuttle.env", env).unwrap();
    let logs = temp_dir("debian-logs");
    installed
        .processes
        .push(start_as_unit(units[0], &logs.path().join("server.log")));
    let server_url = format!("http://127.0.0.1:{http}");
    let agent = cuttle_e2e::agent(None);
    wait_until("the packaged node to answer", MIN, || {
        let ok = agent
            .get(&format!("{server_url}/api/nodes/ping"))
            .call()
            .is_ok_and(|r| r.status() == 200);
        ok.then_some(())
    });
    let key = std::fs::read_to_string("/var/lib/cuttle/admin-api-key")
        .unwrap()
        .trim()
        .to_owned();
    let data = std::fs::read_dir("/var/lib/cuttle").unwrap();
    for entry in data.flatten() {
        let m = entry.metadata().unwrap();
        assert_eq!(m.uid(), uid_of("cuttle"), "{:?}", entry.path());
        // Traversable at most (the work folder, for the script user): never readable or
        // writable by anyone else.
        assert_eq!(
            m.permissions().mode() & 0o066,
            0,
            "{:?} is the node's alone",
            entry.path()
        );
    }

    // The CLI from the package, as README's first deployment uses it, onto a tentacle.
    let cli = |args: &[&str]| -> String {
        let mut cmd = Command::new("/usr/bin/cuttle");
        cmd.args(args)
            .env("CUTTLE_SERVER", &server_url)
            .env("CUTTLE_API_KEY", &key)
            .current_dir(logs.path());
        let (status, stdout, stderr) = run_to_exit(cmd, MIN).unwrap();
        assert!(status.success(), "cuttle {args:?}:\n{stdout}{stderr}");
        stdout
    };
    cli(&["environment", "create", "Development"]);

    // The tentacle, set up as its unit's comment says, then started as the unit would.
    let as_tentacle = |args: &[&str]| {
        run(Command::new("runuser")
            .args(["-u", "cuttle-tentacle", "--", "/usr/bin/cuttle-tentacle"])
            .args(["--home", "/var/lib/cuttle-tentacle"])
            .args(args)
            .current_dir("/"))
    };
    as_tentacle(&["new-certificate"]);
    as_tentacle(&[
        "register",
        "--server",
        &server_url,
        "--api-key",
        &key,
        "--name",
        "deb-web",
        "--environment",
        "Development",
        "--role",
        "web",
        "--new-role",
        "--comms",
        "polling",
    ]);
    installed
        .processes
        .push(start_as_unit(units[1], &logs.path().join("tentacle.log")));

    cli(&["project", "create", "Hello"]);
    std::fs::write(
        logs.path().join("hello-process.yaml"),
        "steps:\n  - name: Greet\n    target_roles: [web]\n    action:\n      type: script\n      script: |\n        echo \"#{Greeting} from $(id -un) on #{Cuttle.Target.Name}\"\n",
    )
    .unwrap();
    cli(&[
        "process",
        "edit",
        "--project",
        "Hello",
        "--file",
        "hello-process.yaml",
    ]);
    cli(&["variable", "set", "Hello", "Greeting", "Hello"]);
    cli(&[
        "release",
        "create",
        "--project",
        "Hello",
        "--version",
        "1.0.0",
    ]);
    wait_until("the tentacle's session", MIN, || {
        let targets = cli(&["target", "list", "--output", "json"]);
        targets.contains("deb1").then_some(())
    });
    let deployed = cli(&[
        "deploy",
        "--project",
        "Hello",
        "--release",
        "1.0.0",
        "--environment",
        "Development",
        "--wait",
    ]);
    assert!(
        deployed.contains("Hello from cuttle-tentacle on deb-web"),
        "{deployed}\n{}",
        std::fs::read_to_string(logs.path().join("tentacle.log")).unwrap_or_default()
    );
    drop(installed);
    for gone in [
        "/usr/bin/cuttle-server",
        "/usr/bin/cuttle",
        "/etc/cuttle/cuttle.env",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} after purge");
    }
}

fn arch() -> String {
    run(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_owned()
}
