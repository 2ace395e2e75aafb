//! docs/operations.md, "Backup and restore", as written: a cluster with a project, a sensitive
//! variable, a release, a deployment (its task, its log, an artifact) and a package is backed
//! up while it runs; restored into a fresh database and a fresh shared store, everything is
//! there, and a new deployment runs — its sensitive value opened with the same master key. A
//! backup never overwrites; a restore refuses a key that is not the backup's, and a database or
//! store that is not empty.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cuttle_e2e::{download, temp_dir, Cluster, Database, Generated, NodeOptions};
use serde_json::json;

const MIN: Duration = Duration::from_secs(60);

cuttle_e2e::on_every_database!(a_backup_restored_into_a_new_cluster_has_everything_and_deploys,);

fn a_backup_restored_into_a_new_cluster_has_everything_and_deploys(db: Database) {
    let sql_server = matches!(db, Database::SqlServer);
    let old = Cluster::new(db).unwrap();
    let n1 = old.start(NodeOptions::named("n1", 2));
    let dev = n1.environment("Development");
    let script = "echo \"#{Greeting} with #{Secret}\"\n\
                  echo report > report.txt\n\
                  echo \"##cuttle[createArtifact path='report.txt']\"";
    let project = n1.script_project("Shop", "Say", &[], script);
    let (status, vars) = n1.request(
        "PUT",
        &format!("{project}/variables"),
        Some(
            &json!({"version": 2, "variables": [
                {"name": "Greeting", "value": "Hello"},
                {"name": "Secret", "value": "S3cret-Value", "sensitive": true},
            ]})
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{vars}");
    let deploy = |node: &cuttle_e2e::Node, version: &str| {
        let task = node.deploy_release(&project, version, &dev);
        let t = node.wait_finished(&task, MIN);
        assert_eq!(t["state"], "Success", "{t}\n{}", node.task_log(&task));
        task
    };
    let task = deploy(&n1, "1.0.0");
    let log = n1.task_log(&task);
    assert!(log.contains("OUT   Hello with ********"), "{log}");
    let package = Generated::zip(21, 250_000);
    n1.upload_package("Shop", "1.0.0", &package);

    // Backed up while the node runs.
    let backups = temp_dir("backups");
    let to = backups.path().join("monday");
    let to = to.to_str().unwrap();
    let (ok, out) = old.run_server(&["backup", "--to", to], "");
    assert!(ok, "{out}");
    assert!(out.contains("backed up the"), "{out}");
    // The backup holds the cluster's (sealed) secrets: its owner's alone, every file of it.
    let mut dirs = vec![std::path::PathBuf::from(to)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let mode = entry.metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{:?} is readable by others", entry.path());
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    let (ok, out) = old.run_server(&["backup", "--to", to], "");
    assert!(
        !ok && out.contains("exists"),
        "a backup never overwrites: {out}"
    );
    if sql_server {
        // Cuttle cannot copy a SQL Server database: the backup says how, with SQL Server's own
        // command, beside the shared store it did copy.
        let how = std::fs::read_to_string(format!("{to}/database.sql-server.txt")).unwrap();
        assert!(how.contains("BACKUP DATABASE"), "{how}");
        return;
    }

    // Into a new cluster: its own empty database and shared store, the old one's master key.
    let mut new = Cluster::new(db).unwrap();
    new.api_key = old.api_key.clone();
    let (ok, out) = new.run_server(&["restore", "--from", to], "");
    assert!(
        !ok && out.contains("master key"),
        "another key is refused: {out}"
    );
    assert_eq!(
        std::fs::read_dir(new.shared_dir()).unwrap().count(),
        0,
        "nothing was written"
    );
    new.master_key = old.master_key.clone();
    let (ok, out) = new.run_server(&["restore", "--from", to], "");
    assert!(ok, "{out}");
    assert!(out.contains("restored the"), "{out}");
    let (ok, out) = new.run_server(&["restore", "--from", to], "");
    assert!(
        !ok && out.contains("not empty"),
        "a second restore is refused: {out}"
    );

    drop(n1);
    let n2 = new.start(NodeOptions::named("n2", 2));
    let (_, projects) = n2.get("/api/spaces/default/projects");
    assert_eq!(projects["items"][0]["name"], "Shop", "{projects}");
    assert_eq!(n2.task(&task)["state"], "Success");
    assert_eq!(n2.task_log(&task), log, "the task's log, whole");
    let (_, artifacts) = n2.get(&format!("/api/tasks/{task}/artifacts"));
    let raw = artifacts["items"][0]["links"]["raw"]
        .as_str()
        .unwrap_or_else(|| panic!("no artifact in {artifacts}"));
    let got = download(n2.http(), &n2.url(raw), &n2.api_key(), &[]);
    assert_eq!((got.status, got.body.as_slice()), (200, &b"report\n"[..]));
    let got = download(
        n2.http(),
        &n2.url("/api/spaces/Spaces-1/packages/Shop/1.0.0/raw"),
        &n2.api_key(),
        &[],
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.body, package.to_vec(), "the package, byte for byte");
    let (_, deployments) = n2.get("/api/spaces/default/deployments");
    assert_eq!(deployments["items"].as_array().map(Vec::len), Some(1));

    // And it deploys: the sensitive value opens with the same master key.
    let again = deploy(&n2, "1.0.1");
    assert!(n2.task_log(&again).contains("OUT   Hello with ********"));
}
