//! The package step end to end: a package from the repository sent to polling and listening
//! tentacles across two nodes, unpacked, its files substituted, its `deploy.sh` and the step's
//! script run in it, and the artifacts its scripts hand over collected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cuttle_e2e::{download, multipart, upload, wait_until, Cluster, Database, Node, NodeOptions};
use serde_json::{json, Value};

const RAW: &str = "/api/spaces/Spaces-1/packages/raw";

fn error_of(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn multipart_upload(node: &Node, file_name: &str, data: &[u8]) -> (u16, Value) {
    let (content_type, body) = multipart(file_name, data);
    let len = body.len() as u64;
    upload(
        node.http(),
        &node.url(RAW),
        &node.api_key(),
        &content_type,
        &body[..],
        len,
        &[],
    )
}

/// Registers a tentacle with role `web` in Development.
fn register_web(t: &cuttle_e2e::Tentacle, node: &Node, comms: &str, extra: &[&str]) {
    node.make_environments(&["Development"]);
    t.register(
        &node.url(""),
        &node.api_key(),
        "web",
        comms,
        &["Development"],
        extra,
    );
}

/// A real tar.gz made by tar(1) from files given as (path, text, executable).
fn tar_gz(dir: &Path, name: &str, files: &[(&str, &str, bool)]) -> PathBuf {
    let src = dir.join(format!("{name}.src"));
    for (path, text, exec) in files {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        if *exec {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let out = dir.join(name);
    let st = std::process::Command::new("tar")
        .arg("czf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    out
}

#[test]
fn a_package_step_unpacks_substitutes_and_runs_deploy_sh_on_three_tentacles() {
    const MIN: Duration = Duration::from_secs(60);
    let cluster = Cluster::new(Database::Postgres).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let n2 = cluster.start(NodeOptions::named("n2", 2));
    let dir = cuttle_e2e::temp_dir("package-step");
    let mut w1 = cuttle_e2e::Tentacle::new(dir.path(), "w1");
    let mut w2 = cuttle_e2e::Tentacle::new(dir.path(), "w2");
    let mut w3 = cuttle_e2e::Tentacle::new(dir.path(), "w3");
    register_web(&w1, &n1, "polling", &[]);
    register_web(&w2, &n2, "polling", &[]);
    let listen = format!("127.0.0.1:{}", cuttle_e2e::free_port());
    register_web(
        &w3,
        &n1,
        "listening",
        &["--listen", &listen, "--public-hostname", "127.0.0.1"],
    );
    for t in [&mut w1, &mut w2, &mut w3] {
        t.start();
    }
    wait_until("w1 and w2 to connect to both gateways", MIN, || {
        let (_, targets) = n1.get("/api/targets");
        let n = targets["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["connected_nodes"] == json!(["n1", "n2"]))
            .count();
        (n == 2).then_some(())
    });
    wait_until("w3 to listen", MIN, || {
        w3.log_text()
            .contains("listening for the cluster")
            .then_some(())
    });

    let env = serde_json::json!({"id": n1.environment("Development")});
    let (_, project) = n1.post("/api/spaces/default/projects", &json!({"name": "Shop"}));
    let project_path = format!(
        "/api/spaces/default/projects/{}",
        project["id"].as_str().unwrap()
    );
    let process = json!({"version": 1, "steps": [{
        "name": "Deploy app", "target_roles": ["web"],
        "action": {"type": "deploy-package", "package_id": "Acme.App",
                   "substitute_in_files": ["config/*.json", "missing/*.txt"],
                   "script": "echo \"step script in $(pwd) for #{Cuttle.Target.Name}\"; cat config/app.json; echo\n\
                              echo \"report of #{Cuttle.Target.Name}\" > report.txt\n\
                              echo \"##cuttle[createArtifact path='report.txt']\"\n\
                              echo \"##cuttle[createArtifact path='no/such/file' name='ghost']\""},
    }, {
        "name": "Summarise", "condition": "always",
        "action": {"type": "script", "script": "mkdir -p out && seq 1 10000 > out/numbers.txt\n\
                   echo \"##cuttle[createArtifact path='out/numbers.txt' name='../../numbers.txt']\""},
    }]});
    let (status, saved) = n1.request(
        "PUT",
        &format!("{project_path}/deploymentprocess"),
        Some(&process.to_string()),
    );
    assert_eq!(status, 200, "{saved}");
    let (status, vars) = n1.request(
        "PUT",
        &format!("{project_path}/variables"),
        Some(
            &json!({"version": 2, "variables": [
                {"name": "DbHost", "value": "db.dev.internal"},
            ]})
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{vars}");

    // No package yet: a release cannot be made, and says why.
    let (status, err) = n1.post(
        &format!("{project_path}/releases"),
        &json!({"version": "1.0.0"}),
    );
    assert_eq!(status, 400, "{err}");
    assert!(error_of(&err).contains("no package Acme.App"), "{err}");

    let pkg = tar_gz(dir.path(), "Acme.App.1.0.0.tar.gz", &[
        ("deploy.sh", "echo \"deploy.sh for $CUTTLE_TARGET_NAME\" > deployed.txt\necho \"##cuttle[setVariable name='Unpacked' value='$(pwd)']\"\n", true),
        ("config/app.json", "{\"db\": \"#{DbHost}\", \"env\": \"#{Cuttle.Environment.Name}\"}", false),
        ("bin/run", "#!/bin/sh\necho run #{NotSubstituted}\n", true),
    ]);
    let data = std::fs::read(&pkg).unwrap();
    let (status, up) = multipart_upload(&n2, "Acme.App.1.0.0.tar.gz", &data);
    assert_eq!(status, 201, "{up}");
    let (status, release) = n1.post(
        &format!("{project_path}/releases"),
        &json!({"version": "1.0.0"}),
    );
    assert_eq!(status, 201, "{release}");
    assert_eq!(
        release["packages"]["Deploy app"]["version"], "1.0.0",
        "{release}"
    );
    let (status, err) = n1.post(
        &format!("{project_path}/releases"),
        &json!({"version": "1.0.1", "packages": {"Deploy app": "9.9.9"}}),
    );
    assert_eq!(status, 400, "{err}");
    assert!(
        error_of(&err).contains("9.9.9 is not in the repository"),
        "{err}"
    );

    let deploy = |node: &Node| {
        let (status, d) = node.post(
            "/api/spaces/default/deployments",
            &json!({"release_id": release["id"], "environment_id": env["id"]}),
        );
        assert_eq!(status, 201, "{d}");
        let task = d["task_id"].as_str().unwrap().to_owned();
        let t = node.wait_finished(&task, MIN);
        (t, node.task_log(&task))
    };
    let (t, log) = deploy(&n1);
    assert_eq!(t["state"], "Success", "{log}");
    for w in [&w1, &w2, &w3] {
        let app = w.home.join("Applications/Development/Acme.App/1.0.0");
        assert_eq!(
            std::fs::read_to_string(app.join("config/app.json")).unwrap(),
            "{\"db\": \"db.dev.internal\", \"env\": \"Development\"}",
            "substituted on {}",
            w.name
        );
        assert_eq!(
            std::fs::read_to_string(app.join("deployed.txt")).unwrap(),
            format!("deploy.sh for {}\n", w.name)
        );
        assert!(
            std::fs::read_to_string(app.join("bin/run"))
                .unwrap()
                .contains("#{NotSubstituted}"),
            "only the files named"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(app.join("bin/run"))
                .unwrap()
                .permissions()
                .mode()
                & 0o111,
            0o111
        );
        assert!(
            log.contains(&format!("[{}] sent {} bytes", w.name, data.len())),
            "{log}"
        );
        assert!(
            log.contains(&format!("step script in {} for {}", app.display(), w.name)),
            "{log}"
        );
    }
    assert_eq!(
        log.matches("variables substituted in config/app.json")
            .count(),
        3,
        "{log}"
    );

    // Artifacts: each target's report, and the node's file under a name that cannot escape.
    let task = t["id"].as_str().unwrap();
    let (status, arts) = n2.get(&format!("/api/tasks/{task}/artifacts"));
    assert_eq!(status, 200, "{arts}");
    let mut names: Vec<String> = arts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a["source"].as_str().unwrap(),
                a["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    let on_node = format!("@{}:../../numbers.txt", t["node"].as_str().unwrap());
    assert_eq!(
        names,
        [
            on_node.as_str(),
            "w1:report.txt",
            "w2:report.txt",
            "w3:report.txt"
        ],
        "{log}"
    );
    assert_eq!(
        log.matches("artifact \"ghost\" was not collected").count(),
        3,
        "{log}"
    );
    for a in arts["items"].as_array().unwrap() {
        let url = n2.url(a["links"]["raw"].as_str().unwrap());
        let got = download(n2.http(), &url, &n2.api_key(), &[]);
        assert_eq!(got.status, 200, "{a}");
        if a["source"].as_str().unwrap().starts_with('@') {
            let numbers: String = (1..=10000).map(|i| format!("{i}\n")).collect();
            assert_eq!(got.body, numbers.as_bytes());
            let part = download(n2.http(), &url, &n2.api_key(), &[("Range", "bytes=0-1")]);
            assert_eq!((part.status, part.body), (206, b"1\n".to_vec()));
        } else {
            assert_eq!(
                String::from_utf8(got.body).unwrap(),
                format!("report of {}\n", a["source"].as_str().unwrap())
            );
        }
    }
    for w in [&w1, &w2, &w3] {
        let held = w.home.join("files/.artifacts");
        assert_eq!(
            std::fs::read_dir(&held).map(|d| d.count()).unwrap_or(0),
            0,
            "the tentacle's copies are removed once pulled"
        );
    }
    for bad in ["..%2F..%2FTaskLogs", "w1/..%2F..%2Fx", "nope"] {
        let (status, _) = n1.get(&format!("/api/tasks/{task}/artifacts/{bad}"));
        assert_eq!(status, 404, "{bad}");
    }
    assert_eq!(
        log.matches("no file matches \"missing/*.txt\"").count(),
        3,
        "{log}"
    );
    assert!(log.contains("\"db\": \"db.dev.internal\""), "{log}");

    // Deployed again from the other node: the targets hold the package, nothing is sent.
    let (t, log) = deploy(&n2);
    assert_eq!(t["state"], "Success", "{log}");
    assert_eq!(
        log.matches("already holds Acme.App 1.0.0 (same SHA-256): not sent again")
            .count(),
        3,
        "{log}"
    );
    assert!(!log.contains("] sent "), "{log}");
}
