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

use cuttle_e2e::{
    cli_binary, server_binary, temp_dir, tentacle_binary, wait_until, walkthrough_block, Netns,
};
use serde_json::{json, Value};

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

/// `script` under `bash -euo pipefail` in `ns`, in `dir` (also `HOME`), with only the programs
/// and the system's tools on the `PATH`, in a process group of its own. With `host`, `ns` is a
/// whole host: its own host name, and the cluster's shared store mounted at
/// `/mnt/cuttle-shared` (a directory the hosts share, as an NFS mount would be).
fn bash_in(
    ns: &Netns,
    dir: &Path,
    bin: &Path,
    script: &str,
    host: Option<(&str, &Path)>,
) -> std::process::Command {
    let mut cmd = match host {
        None => {
            let mut c = ns.command("bash");
            c.args(["-euo", "pipefail", "-c", script]);
            c
        }
        Some((name, shared)) => {
            let mut c = ns.command("unshare");
            c.args(["--uts", "--mount", "sh", "-c"])
                .arg(
                    "hostname \"$1\" && mount -t tmpfs tmpfs /mnt && mkdir /mnt/cuttle-shared \
                     && mount --bind \"$2\" /mnt/cuttle-shared && exec bash -euo pipefail -c \"$3\"",
                )
                .args(["sh", name])
                .arg(shared)
                .arg(script);
            c
        }
    };
    cmd.current_dir(dir)
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
        )
        .env("HOME", dir)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .process_group(0);
    cmd
}

/// Runs `script` in `ns` ([`bash_in`]). Everything it leaves running is killed at the end.
/// Returns its output (stdout then stderr), or panics with it and the logs of what ran in the
/// background.
fn run_in(ns: &Netns, dir: &Path, bin: &Path, script: &str, timeout: Duration) -> String {
    run(bash_in(ns, dir, bin, script, None), dir, timeout)
}

fn run(mut cmd: std::process::Command, dir: &Path, timeout: Duration) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bash");
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
    drop(Group(child));
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
/// model, a deployment, the CLI from a build pipeline, a runbook) and `docs/packages.md` (the
/// retention setting, a package from a build to a deployment), as a new user follows them.
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
        "echo '==> runbook'\n".to_owned(),
        walkthrough_block(&deployments, "runbook"),
        "echo '==> package-step'\n".to_owned(),
        walkthrough_block(&packages, "package-step"),
        "echo '==> end'\n".to_owned(),
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
    assert!(
        section("runbook").contains("[web-1] restarting on web-1"),
        "the runbook ran on the tentacle:\n{out}"
    );
    assert!(
        section("package-step").contains("[web-1] web is up, database Server=localhost"),
        "the package was deployed, its file substituted, its deploy.sh run:\n{out}"
    );
}

/// The README's first deployment with the CLI alone, from a fresh node: environments, a
/// lifecycle, a project, its process from a YAML file, a variable, a release, the deployment
/// followed to the end.
#[test]
fn the_cli_alone_takes_a_new_node_to_a_first_deployment() {
    let readme = doc("README.md");
    let dir = temp_dir("walkthrough-cli");
    let bin = programs_on_path(dir.path());
    let ns = Netns::new();
    let script = [
        format!(
            "( {} ) > node.log 2>&1 &\n",
            walkthrough_block(&readme, "first-node")
        ),
        "timeout 60 bash -c 'until curl -sf localhost:8080/api/nodes/ping > /dev/null; do sleep 0.1; done'\n"
            .to_owned(),
        walkthrough_block(&readme, "try-it"),
        "echo '==> cli-first-deployment'\n".to_owned(),
        walkthrough_block(&readme, "cli-first-deployment"),
        "echo '==> shown'\n".to_owned(),
        // What the README says besides the block: the process is shown as it was saved.
        "cuttle process show --project Hello\n".to_owned(),
    ]
    .concat();
    let out = run_in(&ns, dir.path(), &bin, &script, Duration::from_secs(180));
    let after = &out[out
        .find("==> cli-first-deployment")
        .expect("the CLI block ran")..];
    assert!(
        after.contains("Hello from Development"),
        "the step ran with the variable and the environment's name:\n{out}"
    );
    assert!(
        after.contains("deployed Hello 1.0.0 to Development"),
        "the deployment succeeded:\n{out}"
    );
    assert!(
        after.contains("created lifecycle") && after.contains("Development → Production"),
        "{out}"
    );
    let shown = &out[out.find("==> shown").expect("shown")..];
    assert!(
        shown.contains("name: Greet") && shown.contains("version:"),
        "{out}"
    );
}

/// A process group the test started (its leader our child): on drop, every process in it gets
/// `SIGTERM`, and what is still there 10 s later `SIGKILL`.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.id() as i32;
        // SAFETY: kill has no memory-safety preconditions; the group is the one our child leads
        // (its id stays the group's while the child is unreaped or any member lives).
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let _ = self.0.try_wait(); // the leader reaped, so only live members count
                                       // SAFETY: as above; signal 0 only asks whether the group has members.
            if unsafe { libc::kill(-pgid, 0) } != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20)); // polling the group's end
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// The README's cluster recipe across two hosts (network namespaces on one LAN, a PostgreSQL
/// server named `db.internal`, a shared directory mounted where the recipe says): the settings
/// made once on the first host and copied to the second, a node started on each exactly as
/// written. Each node advertises its own host's addresses — never `127.0.0.1` — so the other
/// reaches it, and work crosses between them.
#[test]
fn the_readme_cluster_runs_across_two_hosts() {
    let readme = doc("README.md");
    let lan = cuttle_e2e::Lan::new(&["host1", "host2"], "db.internal");
    let _db =
        cuttle_e2e::TestPostgres::serving_lan(&lan.gateway, 5432, "cuttle", "PASSWORD", "cuttle")
            .expect("a database server on the LAN");
    let dirs: Vec<_> = (0..2).map(|_| temp_dir("cluster-host")).collect();
    let shared = temp_dir("cluster-shared");
    let bin = programs_on_path(dirs[0].path());
    let host = |i: usize| (["host1", "host2"][i], shared.path());
    let once = walkthrough_block(&readme, "cluster-once");
    let out = run(
        bash_in(&lan.hosts[0], dirs[0].path(), &bin, &once, Some(host(0))),
        dirs[0].path(),
        Duration::from_secs(60),
    );
    // "Copy cuttle.env to every node's host."
    std::fs::copy(
        dirs[0].path().join("cuttle.env"),
        dirs[1].path().join("cuttle.env"),
    )
    .unwrap_or_else(|e| panic!("no cuttle.env after the first step ({e}):\n{out}"));
    let node = walkthrough_block(&readme, "cluster-node");
    let _nodes: Vec<Group> = (0..2)
        .map(|i| {
            let log = std::fs::File::create(dirs[i].path().join("node.log")).unwrap();
            let child = bash_in(&lan.hosts[i], dirs[i].path(), &bin, &node, Some(host(i)))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start the node");
            Group(child)
        })
        .collect();
    let agent = cuttle_e2e::agent(None);
    let log_of =
        |i: usize| std::fs::read_to_string(dirs[i].path().join("node.log")).unwrap_or_default();
    let url = |i: usize, path: &str| format!("http://{}:8080{path}", lan.hosts[i].address);
    for i in 0..2 {
        wait_until(
            &format!("node {} to answer on its host's address", i + 1),
            Duration::from_secs(60),
            || {
                let status = agent.get(&url(i, "/api/nodes/ping")).call().ok()?.status();
                (status == 200).then_some(())
            },
        );
    }
    // The first admin key: written by whichever node minted it.
    let key = wait_until("the first admin key", Duration::from_secs(30), || {
        (0..2).find_map(|i| {
            std::fs::read_to_string(dirs[i].path().join("cuttle-data/admin-api-key")).ok()
        })
    });
    let key = key.trim().to_owned();
    let call = |i: usize, method: &str, path: &str, body: Option<Value>| -> (u16, Value) {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(url(i, path))
            .header("X-Api-Key", &key)
            .header("Content-Type", "application/json");
        let sent = match body {
            Some(b) => agent.run(req.body(b.to_string()).unwrap()),
            None => agent.run(req.body(()).unwrap()),
        };
        let mut resp = sent.unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    };
    let (status, nodes) = call(0, "GET", "/api/nodes", None);
    assert_eq!(status, 200, "{nodes}");
    let items = nodes["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{nodes}\n{}\n{}", log_of(0), log_of(1));
    for (i, name) in ["host1", "host2"].iter().enumerate() {
        let n = items
            .iter()
            .find(|n| n["name"] == *name)
            .unwrap_or_else(|| panic!("{nodes}"));
        let addr = &lan.hosts[i].address;
        assert_eq!(n["http_address"], format!("{addr}:8080"), "{n}");
        assert_eq!(
            n["grpc_address"],
            format!("{addr}:8443"),
            "what other nodes dial: {n}"
        );
    }
    // Work crosses hosts: host1 takes none, so what is queued through it runs on host2, and
    // a cancel through host1 stops it there.
    let (status, body) = call(0, "PATCH", "/api/nodes/host1", Some(json!({"task_cap": 0})));
    assert_eq!(status, 200, "{body}");
    let (status, task) = call(
        0,
        "POST",
        "/api/tasks",
        Some(json!({"kind": "Sleep", "arguments": {"duration_ms": 60_000}})),
    );
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    wait_until(
        "the task executing on host2",
        Duration::from_secs(30),
        || {
            let (_, t) = call(0, "GET", &format!("/api/tasks/{id}"), None);
            (t["state"] == "Executing" && t["node"] == "host2").then_some(())
        },
    );
    let (status, _) = call(
        0,
        "POST",
        &format!("/api/tasks/{id}/cancel"),
        Some(json!({})),
    );
    assert_eq!(status, 202);
    wait_until("host2 to stop it", Duration::from_secs(30), || {
        let (_, t) = call(1, "GET", &format!("/api/tasks/{id}"), None);
        (t["state"] == "Canceled").then_some(())
    });
}
