//! `cuttle-bench`: reproducible benchmarks of a real cluster — real `cuttle-server` processes
//! (release build) on a real database. Prints its figures and the machine they ran on.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a report is this program's output

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod deploy;
mod grpc;
mod tentacles;
mod ui;
mod upload;

use anyhow::{bail, Context, Result};
use cuttle_e2e::{wait_until, Cluster, Database, Node, NodeOptions};
use serde_json::{json, Value};

const USAGE: &str = "usage: cuttle-bench queue [--tasks N] [--workers K] [--cap C] \
[--clients E] [--db sqlite|postgres|sqlserver|both] [--idle-samples S]
       (sqlserver: a database on the server CUTTLE_TEST_MSSQL_URL names)
       cuttle-bench tentacles [--count N[,N…]] [--samples S]
       cuttle-bench deploy [--count N[,N…]]
       cuttle-bench upload [--size-mib M] [--push-mib P] [--runs R]
       cuttle-bench ui [--tasks N] [--targets T] [--samples S]
       cuttle-bench grpc [--samples S] [--size-mib M]";

struct Opts {
    tasks: usize,
    workers: usize,
    cap: u32,
    clients: usize,
    dbs: Vec<&'static str>,
    idle_samples: usize,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        tasks: 10_000,
        workers: 2,
        cap: 16,
        clients: 8,
        dbs: vec!["sqlite", "postgres"],
        idle_samples: 100,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--tasks" => o.tasks = val()?.parse()?,
            "--workers" => o.workers = val()?.parse()?,
            "--cap" => o.cap = val()?.parse()?,
            "--clients" => o.clients = val()?.parse()?,
            "--idle-samples" => o.idle_samples = val()?.parse()?,
            "--db" => {
                o.dbs = match val()?.as_str() {
                    "sqlite" => vec!["sqlite"],
                    "postgres" => vec!["postgres"],
                    "sqlserver" => vec!["sqlserver"],
                    "both" => vec!["sqlite", "postgres"],
                    other => bail!("unknown --db {other}\n{USAGE}"),
                }
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if o.tasks == 0 || o.workers == 0 || o.cap == 0 || o.clients == 0 {
        bail!("--tasks, --workers, --cap and --clients must be positive");
    }
    Ok(o)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("queue") => {
            let opts = parse(&args[1..])?;
            cuttle_e2e::use_server_binary(release_server()?);
            print_machine("queue");
            for db in &opts.dbs {
                queue(db, &opts)?;
            }
            Ok(())
        }
        Some("tentacles") => {
            let a = flags(&args[1..], &["--count", "--samples"])?;
            let counts = a
                .get("--count")
                .map_or(Ok(vec![1_000, 10_000]), |v| counts_of(v))?;
            let samples: usize = a.get("--samples").map_or(Ok(200), |v| v.parse())?;
            if counts.contains(&0) || samples == 0 {
                bail!("--count and --samples must be positive");
            }
            cuttle_e2e::use_server_binary(release_server()?);
            print_machine("tentacles");
            for n in counts {
                tentacles::run(n, samples)?;
            }
            Ok(())
        }
        Some("deploy") => {
            let a = flags(&args[1..], &["--count"])?;
            let counts = a
                .get("--count")
                .map_or(Ok(vec![100, 1_000]), |v| counts_of(v))?;
            if counts.contains(&0) {
                bail!("--count must be positive");
            }
            cuttle_e2e::use_server_binary(release_server()?);
            print_machine("deploy");
            for n in counts {
                deploy::run(n)?;
            }
            Ok(())
        }
        Some("upload") => {
            let a = flags(&args[1..], &["--size-mib", "--push-mib", "--runs"])?;
            let size: u64 = a.get("--size-mib").map_or(Ok(1024), |v| v.parse())?;
            let push: u64 = a.get("--push-mib").map_or(Ok(100), |v| v.parse())?;
            let runs: usize = a.get("--runs").map_or(Ok(3), |v| v.parse())?;
            if size == 0 || push == 0 || runs == 0 {
                bail!("--size-mib, --push-mib and --runs must be positive");
            }
            cuttle_e2e::use_server_binary(release_server()?);
            if std::env::var_os("CUTTLE_TENTACLE_BIN").is_none() {
                cuttle_e2e::use_tentacle_binary(
                    release_server()?.with_file_name("cuttle-tentacle"),
                );
            }
            print_machine("upload");
            upload::run(size, push, runs)
        }
        Some("ui") => {
            let a = flags(&args[1..], &["--tasks", "--targets", "--samples"])?;
            let tasks: usize = a.get("--tasks").map_or(Ok(1_000), |v| v.parse())?;
            let targets: usize = a.get("--targets").map_or(Ok(100), |v| v.parse())?;
            let samples: usize = a.get("--samples").map_or(Ok(50), |v| v.parse())?;
            if tasks == 0 || targets == 0 || samples == 0 {
                bail!("--tasks, --targets and --samples must be positive");
            }
            cuttle_e2e::use_server_binary(release_server()?);
            print_machine("ui");
            ui::run(tasks, targets, samples)
        }
        Some("grpc") => {
            let a = flags(&args[1..], &["--samples", "--size-mib"])?;
            let samples: usize = a.get("--samples").map_or(Ok(200), |v| v.parse())?;
            let size: u64 = a.get("--size-mib").map_or(Ok(1024), |v| v.parse())?;
            if samples == 0 || size == 0 {
                bail!("--samples and --size-mib must be positive");
            }
            cuttle_e2e::use_server_binary(release_server()?);
            print_machine("grpc");
            grpc::run(samples, size)
        }
        _ => bail!("{USAGE}"),
    }
}

/// The release build of `cuttle-server`, built if needed: a benchmark of a debug build
/// measures the wrong thing.
/// `--name value` pairs of a subcommand, each name one of `known`.
fn flags(args: &[String], known: &[&str]) -> Result<std::collections::HashMap<String, String>> {
    let mut out = std::collections::HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if !known.contains(&a.as_str()) {
            bail!("unknown argument {a}\n{USAGE}");
        }
        let v = it
            .next()
            .with_context(|| format!("{a} needs a value\n{USAGE}"))?;
        out.insert(a.clone(), v.clone());
    }
    Ok(out)
}

/// `N[,N…]`.
fn counts_of(v: &str) -> Result<Vec<usize>> {
    Ok(v.split(',')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?)
}

fn release_server() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("CUTTLE_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "cuttle-server",
            "-p",
            "cuttle-tentacle",
        ])
        .current_dir(&root)
        .status()
        .context("run cargo build --release")?;
    if !st.success() {
        bail!("cargo build --release -p cuttle-server -p cuttle-tentacle failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    Ok(target.join("release").join("cuttle-server"))
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn print_machine(benchmark: &str) {
    println!("# cuttle-bench {benchmark}");
    println!(
        "machine: {} cores, {}, {}",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("free -g | awk '/Mem:/ {print $2\" GiB RAM\"}'")
    );
    println!(
        "os: {}; postgres: {}",
        sh("uname -sr"),
        sh("postgres --version 2>/dev/null || ls /usr/lib/postgresql")
    );
    println!(
        "cuttle: {} ({})",
        env!("CARGO_PKG_VERSION"),
        sh("git rev-parse --short HEAD 2>/dev/null")
    );
    println!("note: shared machine; compare medians and ratios, not single runs\n");
}

fn sleep0() -> Value {
    json!({"kind": "Sleep", "arguments": {"duration_ms": 0}})
}

fn ms_of(t: &Value, f: &str) -> i64 {
    t[f].as_str()
        .and_then(cuttle_e2e::parse_rfc3339_ms)
        .unwrap_or(0)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Every task, paging through the list API.
fn all_tasks(node: &Node) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            Some(b) => format!("/api/tasks?limit=1000&before={b}"),
            None => "/api/tasks?limit=1000".into(),
        };
        let (_, body) = node.get(&path);
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return out;
        }
        before = items
            .last()
            .and_then(|t| t["id"].as_str())
            .map(str::to_owned);
        out.extend(items);
    }
}

/// Database commits made by every node so far, from their `/metrics`.
fn commits(nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .map(|n| {
            let (_, body) = n.get("/metrics");
            body.as_str()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with("cuttle_db_commits_total "))
                })
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

fn set_draining(node: &Node, names: &[String], draining: bool) {
    for name in names {
        let (st, body) = node.patch(
            &format!("/api/nodes/{name}"),
            &json!({"draining": draining}),
        );
        assert_eq!(st, 200, "{body}");
    }
}

fn enqueue_all(nodes: &[Node], n: usize, clients: usize) -> Duration {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..clients {
            let node = &nodes[c % nodes.len()];
            let next = &next;
            s.spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    node.enqueue(sleep0());
                }
            });
        }
    });
    start.elapsed()
}

fn wait_done(node: &Node, timeout: Duration) {
    wait_until("the queue to drain", timeout, || {
        let busy = ["Queued", "Executing", "Cancelling"].iter().any(|s| {
            let (_, b) = node.get(&format!("/api/tasks?state={s}&limit=1"));
            !b["items"].as_array().map(Vec::is_empty).unwrap_or(true)
        });
        (!busy).then_some(())
    });
}

fn latencies(tasks: &[Value]) -> Vec<i64> {
    let mut l: Vec<i64> = tasks
        .iter()
        .map(|t| ms_of(t, "started_at") - ms_of(t, "queued_at"))
        .collect();
    l.sort_unstable();
    l
}

fn queue(db: &str, o: &Opts) -> Result<()> {
    println!(
        "## {db}: {} worker nodes x cap {}, {} tasks Sleep{{0}}, {} HTTP clients",
        o.workers, o.cap, o.tasks, o.clients
    );
    let cluster = Cluster::new(match db {
        "sqlite" => Database::Sqlite,
        "sqlserver" => Database::SqlServer,
        _ => Database::Postgres,
    })?;
    let worker_opts = |i: usize| NodeOptions {
        heartbeat_secs: 5,
        offline_after_secs: 30,
        poll_ms: 1000,
        env: vec![("CUTTLE_LOG".into(), "warn".into())],
        ..NodeOptions::named(&format!("w{i}"), o.cap)
    };
    let nodes: Vec<Node> = (0..o.workers)
        .map(|i| cluster.start(worker_opts(i)))
        .collect();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();

    // 1. Idle cluster: one task at a time, enqueue -> start.
    let mut idle = Vec::new();
    for i in 0..o.idle_samples {
        let id = nodes[i % nodes.len()].enqueue(sleep0());
        idle.push(nodes[0].wait_finished(&id, Duration::from_secs(30)));
    }
    let idle = latencies(&idle);

    // 2. Drain a backlog: enqueue with workers draining, then release them all at once.
    set_draining(&nodes[0], &names, true);
    let enq = enqueue_all(&nodes, o.tasks, o.clients);
    let c0 = commits(&nodes);
    let t0 = Instant::now();
    set_draining(&nodes[0], &names, false);
    wait_done(&nodes[0], Duration::from_secs(600));
    let drain = t0.elapsed();
    let drain_commits = commits(&nodes) - c0;

    // 3. Saturation: enqueue as fast as the clients can while the workers run.
    let c1 = commits(&nodes);
    let t1 = Instant::now();
    let enq2 = enqueue_all(&nodes, o.tasks, o.clients);
    wait_done(&nodes[0], Duration::from_secs(600));
    let sat = t1.elapsed();
    let sat_commits = commits(&nodes) - c1;
    let tasks = all_tasks(&nodes[0]);
    let newest: Vec<Value> = tasks.iter().take(o.tasks).cloned().collect();
    let failed = tasks.iter().filter(|t| t["state"] != "Success").count();
    let sat_lat = latencies(&newest);

    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    println!("| measure | value |\n|---|---|");
    println!(
        "| enqueue -> start, idle cluster (p50 / p99, {} samples) | {} ms / {} ms |",
        idle.len(),
        percentile(&idle, 0.5),
        percentile(&idle, 0.99)
    );
    println!(
        "| enqueue rate over HTTP ({} clients) | {:.0} tasks/s |",
        o.clients,
        rate(o.tasks, enq)
    );
    println!(
        "| drain of a {}-task backlog | {:.0} tasks/s ({:.2} s) |",
        o.tasks,
        rate(o.tasks, drain),
        drain.as_secs_f64()
    );
    println!(
        "| database commits per task while draining (claims + completions + heartbeats) | {:.3} |",
        drain_commits as f64 / o.tasks as f64
    );
    println!(
        "| saturation: enqueue and run together | {:.0} tasks/s (enqueue {:.0}/s) |",
        rate(o.tasks, sat),
        rate(o.tasks, enq2)
    );
    println!(
        "| enqueue -> start at saturation (p50 / p99) | {} ms / {} ms |",
        percentile(&sat_lat, 0.5),
        percentile(&sat_lat, 0.99)
    );
    println!(
        "| database commits per task at saturation (enqueue included) | {:.3} |",
        sat_commits as f64 / o.tasks as f64
    );
    println!("| tasks not Success | {failed} |\n");
    if failed > 0 {
        bail!("{failed} tasks did not succeed");
    }
    Ok(())
}
