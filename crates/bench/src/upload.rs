//! `cuttle-bench upload`: a package of `--size-mib` (1 GiB by default) uploaded with curl to one
//! node and through haproxy (TLS ended there, the shipped configuration), against `cp` of the same file
//! onto the same disk followed by an fsync of the copy (an upload is fsynced too), with a
//! `sync` (untimed) before each so none pays for the last one's writeback; the nodes'
//! peak-memory growth; then a `--push-mib` package (100 MiB) deployed to ten real tentacles.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cuttle_e2e::{
    peak_rss_kib, wait_until, Cluster, Database, Generated, Haproxy, Node, NodeOptions, Tentacle,
};
use serde_json::{json, Value};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Writes the generated package to `path` (once, outside any timing).
pub(crate) fn write_package(g: &Generated, path: &Path) -> Result<()> {
    let mut f = std::fs::File::create(path)?;
    std::io::copy(&mut g.clone(), &mut f)?;
    f.sync_all()?;
    Ok(())
}

fn cp_seconds(src: &Path, dst: &Path) -> Result<f64> {
    let _ = std::fs::remove_file(dst);
    let started = Instant::now();
    let st = Command::new("cp").arg(src).arg(dst).status()?;
    let synced = Command::new("sync").arg(dst).status()?;
    if !st.success() || !synced.success() {
        bail!("cp or sync failed");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Uploads the file to `url` with curl (a client that is not the bottleneck: ureq's reader
/// upload runs at a third of the node's speed); seconds. `ca` is the PEM to trust for HTTPS.
pub(crate) fn upload_seconds(
    url: &str,
    key: &str,
    file: &Path,
    sha: &str,
    ca: Option<&Path>,
) -> Result<f64> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-T",
    ])
    .arg(file)
    .args([
        "-H",
        "Expect:",
        "-H",
        "Content-Type: application/octet-stream",
    ])
    .arg("-H")
    .arg(format!("X-Api-Key: {key}"))
    .arg("-H")
    .arg(format!("X-Content-SHA256: {sha}"));
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    let started = Instant::now();
    let out = cmd.arg(url).output().context("run curl")?;
    let secs = started.elapsed().as_secs_f64();
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    if status != "201" {
        bail!(
            "upload answered {status}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(secs)
}

fn peak_growth_kib(nodes: &[&Node], before: &[u64]) -> u64 {
    nodes
        .iter()
        .zip(before)
        .map(|(n, b)| n.pid().map(peak_rss_kib).unwrap_or(0).saturating_sub(*b))
        .max()
        .unwrap_or(0)
}

pub(crate) fn run(size_mib: u64, push_mib: u64, runs: usize) -> Result<()> {
    let cluster = Cluster::new(Database::Postgres)?;
    let nodes: Vec<Node> = (1..=3)
        .map(|i| {
            cluster.start(NodeOptions {
                env: vec![("CUTTLE_HEALTH_CHECK_SECS".into(), "0".into())],
                ..NodeOptions::named(&format!("n{i}"), 4)
            })
        })
        .collect();
    let lb = Haproxy::start([&nodes[0], &nodes[1], &nodes[2]])?;
    let key = nodes[0].api_key();
    let work = cluster.dir().join("bench-upload");
    std::fs::create_dir_all(&work)?;
    let ca = work.join("haproxy-ca.pem");
    std::fs::write(&ca, &lb.ca_pem)?;
    let src = work.join("package.tar.gz");
    let g = Generated::gzip(7, size_mib << 20);
    write_package(&g, &src)?;
    let sha = g.sha256();
    println!("\n## upload of a {size_mib} MiB package, {runs} runs (PostgreSQL)");

    let node_refs: Vec<&Node> = nodes.iter().collect();
    let (mut cp, mut direct, mut through, mut rss_direct, mut rss_lb) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Before each timed phase, everything written so far goes to disk (untimed): each starts
    // with no writeback of the one before pending, or the later ones would pay for it.
    let settle = || Command::new("sync").status().map(|_| ());
    for run in 0..runs {
        settle()?;
        cp.push(cp_seconds(&src, &cluster.shared_dir().join("cp-copy"))?);
        settle()?;
        let before: Vec<u64> = nodes
            .iter()
            .map(|n| n.pid().map(peak_rss_kib).unwrap_or(0))
            .collect();
        let url = nodes[0].url(&format!(
            "/api/Spaces-1/packages/raw?package_id=Bench.Direct&version=1.0.{run}&format=tar.gz"
        ));
        direct.push(upload_seconds(&url, &key, &src, &sha, None)?);
        rss_direct.push(peak_growth_kib(&node_refs, &before) as f64);
        // Each run starts from the same store: the upload's file goes again (untimed).
        nodes[0].request(
            "DELETE",
            &format!("/api/spaces/Spaces-1/packages/Bench.Direct/1.0.{run}"),
            None,
        );
        settle()?;
        let before: Vec<u64> = nodes
            .iter()
            .map(|n| n.pid().map(peak_rss_kib).unwrap_or(0))
            .collect();
        let url = lb.url(&format!(
            "/api/Spaces-1/packages/raw?package_id=Bench.Balanced&version=1.0.{run}&format=tar.gz"
        ));
        through.push(upload_seconds(&url, &key, &src, &sha, Some(&ca))?);
        rss_lb.push(peak_growth_kib(&node_refs, &before) as f64);
        nodes[0].request(
            "DELETE",
            &format!("/api/spaces/Spaces-1/packages/Bench.Balanced/1.0.{run}"),
            None,
        );
    }
    let _ = std::fs::remove_file(cluster.shared_dir().join("cp-copy"));
    let mibs = |s: f64| size_mib as f64 / s;
    let (cp_m, d_m, t_m) = (
        median(cp.clone()),
        median(direct.clone()),
        median(through.clone()),
    );
    println!("| path | median s | MiB/s | vs cp | peak RSS growth (KiB, median) |");
    println!("|---|---|---|---|---|");
    println!(
        "| cp + fsync, same disk | {cp_m:.2} | {:.0} | 1.00 | — |",
        mibs(cp_m)
    );
    println!(
        "| upload to one node (HTTP) | {d_m:.2} | {:.0} | {:.2} | {:.0} |",
        mibs(d_m),
        d_m / cp_m,
        median(rss_direct)
    );
    println!(
        "| upload through haproxy (TLS) | {t_m:.2} | {:.0} | {:.2} | {:.0} |",
        mibs(t_m),
        t_m / cp_m,
        median(rss_lb)
    );
    println!("runs (s): cp {cp:.2?}; direct {direct:.2?}; haproxy {through:.2?}");
    push(&cluster, &nodes[0], push_mib, &work)
}

/// A package step sending a `mib` MiB package to ten real polling tentacles.
fn push(cluster: &Cluster, node: &Node, mib: u64, work: &Path) -> Result<()> {
    println!("\n## a {mib} MiB package deployed to 10 polling tentacles (one node)");
    let mut tentacles: Vec<Tentacle> = (0..10)
        .map(|i| Tentacle::new(work, &format!("t{i}")))
        .collect();
    let server = node.url("");
    let key = node.api_key();
    for t in &tentacles {
        t.register(&server, &key, "web", "polling", &["Bench"], &[]);
    }
    for t in &mut tentacles {
        t.start();
    }
    wait_until("ten tentacles connected", Duration::from_secs(60), || {
        let (_, targets) = node.get("/api/targets");
        let n = targets["items"]
            .as_array()?
            .iter()
            .filter(|t| {
                t["connected_nodes"]
                    .as_array()
                    .is_some_and(|c| !c.is_empty())
            })
            .count();
        (n == 10).then_some(())
    });
    // A real archive of incompressible bytes, made by tar(1) outside any timing.
    let content = work.join("push-content");
    std::fs::create_dir_all(&content)?;
    write_package(&Generated::zip(8, mib << 20), &content.join("payload.bin"))?;
    let file = work.join("push.tar.gz");
    let st = Command::new("tar")
        .args(["-I", "gzip -1", "-cf"])
        .arg(&file)
        .arg("-C")
        .arg(&content)
        .arg(".")
        .status()?;
    if !st.success() {
        bail!("tar failed");
    }
    let sha = {
        let out = Command::new("sha256sum").arg(&file).output()?;
        String::from_utf8_lossy(&out.stdout)
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let size = std::fs::metadata(&file)?.len();
    let url =
        node.url("/api/Spaces-1/packages/raw?package_id=Bench.Push&version=1.0.0&format=tar.gz");
    upload_seconds(&url, &key, &file, &sha, None)?;
    let id = |v: &Value| v["id"].as_str().unwrap_or_default().to_owned();
    let env = id(&node
        .post(
            "/api/spaces/default/environments",
            &json!({"name": "Bench"}),
        )
        .1);
    let project = id(&node
        .post("/api/spaces/default/projects", &json!({"name": "Push"}))
        .1);
    let path = format!("/api/spaces/default/projects/{project}");
    let process = json!({"version": 1, "steps": [{"name": "Send", "target_roles": ["web"],
        "action": {"type": "deploy-package", "package_id": "Bench.Push"}}]});
    node.request(
        "PUT",
        &format!("{path}/deploymentprocess"),
        Some(&process.to_string()),
    );
    let (_, release) = node.post(&format!("{path}/releases"), &json!({"version": "1.0.0"}));
    let started = Instant::now();
    let (status, d) = node.post(
        "/api/spaces/default/deployments",
        &json!({"release_id": release["id"], "environment_id": env}),
    );
    if status != 201 {
        bail!("deploy: {d}");
    }
    let task = d["task_id"].as_str().context("task id")?.to_owned();
    let t = node.wait_finished(&task, Duration::from_secs(600));
    let wall = started.elapsed().as_secs_f64();
    let log = node.task_log(&task);
    let sent = log.matches("] sent ").count();
    println!(
        "the package ({size} bytes) sent to {sent} of 10 tentacles and unpacked: {wall:.2} s wall \
         for the deployment ({:.0} MiB/s sent in all), {}; per target:",
        (size * sent as u64) as f64 / 1_048_576.0 / wall,
        t["state"].as_str().unwrap_or_default()
    );
    for line in log.lines().filter(|l| l.contains("] sent ")) {
        println!("  {}", line.split("INFO  ").nth(1).unwrap_or(line));
    }
    drop(tentacles);
    let _ = cluster;
    Ok(())
}
