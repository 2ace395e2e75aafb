//! The docs' walk-throughs, run as written: each code block marked `<!-- walkthrough: NAME -->`
//! in the README and `docs/` is taken from the Markdown and run by `bash`, in the order a new
//! user follows them, on a host of its own (a network namespace, so `localhost:8080` is the
//! node the README starts), with `cuttle-server`, `cuttle` and `cuttle-tentacle` on the `PATH`
//! as the README's first step puts them there (this test uses the binaries it was built with
//! rather than building a release). Blocks that run in the foreground (a node, a tentacle) run
//! in the background, as "another terminal" would. It ends in a successful deployment onto a
//! real tentacle.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cuttle_e2e::{cli_binary, server_binary, temp_dir, tentacle_binary, walkthrough_block, Netns};

fn doc(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A directory holding the three programs under the names the docs use.
fn programs_on_path(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, path) in [
        ("cuttle-server", server_binary()),
        ("cuttle", cli_binary()),
        ("cuttle-tentacle", tentacle_binary()),
    ] {
        std::os::unix::fs::symlink(path, bin.join(name)).unwrap();
    }
    bin
}

/// Runs `script` under `bash -euo pipefail` in `ns`, in `dir` (also `HOME`), with only the
/// programs and the system's tools on the `PATH`. Everything it leaves running is killed at the
/// end. Returns its output (stdout then stderr), or panics with it and the logs of what ran in
/// the background.
fn run_in(ns: &Netns, dir: &Path, bin: &Path, script: &str, timeout: Duration) -> String {
    let mut child = ns
        .command("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
        )
        .env("HOME", dir)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start bash");
    let pgid = child.id() as i32;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100)); // polling a child's exit
    };
    // What the walk-through left running (the node, the tentacle) ends with it.
    // SAFETY: kill has no memory-safety preconditions; the group is the one bash led.
    unsafe {
        libc::kill(-pgid, libc::SIGTERM);
    }
    let _ = child.kill();
    let _ = child.wait();
    // What ignores SIGTERM for 5 s is killed.
    let gone = |pgid: i32| unsafe { libc::kill(-pgid, 0) } != 0;
    let until = Instant::now() + Duration::from_secs(5);
    while !gone(pgid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20)); // polling the group's end
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let output = format!(
        "{}{}",
        reader.join().unwrap_or_default(),
        err_reader.join().unwrap_or_default()
    );
    let logs: String = ["node.log", "tentacle.log"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            format!(
                "--- {f} (last lines)\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect();
    match status {
        Some(s) if s.success() => output,
        Some(s) => panic!("the walk-through failed ({s}):\n{output}\n{logs}"),
        None => panic!("the walk-through did not end within {timeout:?}:\n{output}\n{logs}"),
    }
}

/// README (programs, first node, "Try it", a deployment target), `docs/deployments.md` (the
/// model, a deployment, the CLI from a build pipeline) and `docs/packages.md`'s retention
/// setting, as a new user follows them.
#[test]
fn the_first_hour_ends_in_a_deployment_onto_a_tentacle() {
    let readme = doc("README.md");
    let deployments = doc("docs/deployments.md");
    let packages = doc("docs/packages.md");
    let dir = temp_dir("walkthrough");
    let bin = programs_on_path(dir.path());
    let ns = Netns::new();
    let background = |block: &str, log: &str| format!("( {block} ) > {log} 2>&1 &\n");
    let script = [
        background(&walkthrough_block(&readme, "first-node"), "node.log"),
        // "The steps below go in another terminal": once the node answers.
        "timeout 60 bash -c 'until curl -sf localhost:8080/api/nodes/ping > /dev/null; do sleep 0.1; done'\n"
            .to_owned(),
        "echo '==> try-it'\n".to_owned(),
        walkthrough_block(&readme, "try-it"),
        "echo '==> deployments-setup'\n".to_owned(),
        walkthrough_block(&deployments, "deployments-setup"),
        "echo '==> retention'\n".to_owned(),
        walkthrough_block(&packages, "retention"),
        // What the retention change must not touch: the project's lifecycle.
        "curl -sf \"${h[@]}\" $space/projects/$project | jq -e --arg l \"$lifecycle\" '.lifecycle_id == $l and .retention.releases_to_keep == 20'\n"
            .to_owned(),
        "echo '==> register-key'\n".to_owned(),
        walkthrough_block(&readme, "register-key"),
        // The value the README gives for "the node above".
        "SERVER=http://localhost:8080\necho '==> tentacle'\n".to_owned(),
        walkthrough_block(&readme, "tentacle"),
        background(&walkthrough_block(&readme, "tentacle-run"), "tentacle.log"),
        "echo '==> tentacle-connected'\n".to_owned(),
        walkthrough_block(&readme, "tentacle-connected"),
        "echo '==> deployments-deploy'\n".to_owned(),
        walkthrough_block(&deployments, "deployments-deploy"),
        "echo '==> deployments-cli'\n".to_owned(),
        walkthrough_block(&deployments, "deployments-cli"),
    ]
    .concat();
    let out = run_in(&ns, dir.path(), &bin, &script, Duration::from_secs(300));
    let section = |name: &str| {
        let start = out
            .find(&format!("==> {name}\n"))
            .unwrap_or_else(|| panic!("no {name} in:\n{out}"));
        let rest = &out[start + 5..];
        &rest[..rest.find("==> ").unwrap_or(rest.len())]
    };
    assert!(section("try-it").contains("hello"), "{out}");
    for part in ["deployments-deploy", "deployments-cli"] {
        let log = section(part);
        assert!(
            log.contains("[web-1] Deploying with Server=localhost"),
            "{part}: the web step ran on the tentacle with Development's value:\n{out}"
        );
        assert!(log.contains("done"), "{part}: the notification ran:\n{out}");
    }
}
