//! The shipped deployment files are valid as their tools read them: `deploy/kubernetes/` against
//! the Kubernetes API's schemas (kubernetes-validate, strict, for the oldest Kubernetes they
//! need and the newest), every YAML file under `deploy/` through yamllint; and they say what
//! the docs say — every `CUTTLE_*` variable they set is a documented setting, each pod stops
//! after its running tasks could, and each gateway pod has its own Service.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use cuttle_e2e::{deploy_dir, test_python};

/// Kubernetes 1.30 made the preStop `sleep` action generally available.
const OLDEST_KUBERNETES: &str = "1.30.0";

fn tool(name: &str) -> Command {
    let mut c = Command::new(test_python());
    c.args(["-m", name]);
    c
}

fn passes(mut cmd: Command) {
    let out = cmd.output().expect("run the tests' Python");
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Kubernetes resources (the kustomization and the adapter's rule are not).
fn manifests() -> Vec<PathBuf> {
    let listed =
        std::fs::read_to_string(deploy_dir().join("kubernetes/kustomization.yaml")).unwrap();
    let resources: Vec<PathBuf> = listed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|f| deploy_dir().join("kubernetes").join(f))
        .collect();
    let on_disk: BTreeSet<PathBuf> = std::fs::read_dir(deploy_dir().join("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".yaml")
                && name != "kustomization.yaml"
                && !name.starts_with("prometheus-")
        })
        .collect();
    assert_eq!(
        resources.iter().cloned().collect::<BTreeSet<_>>(),
        on_disk,
        "kustomization.yaml lists every manifest"
    );
    resources
}

#[test]
fn the_kubernetes_manifests_match_the_api_schemas() {
    for version in [OLDEST_KUBERNETES, "1.37.0"] {
        let mut cmd = tool("kubernetes_validate");
        cmd.args(["--strict", "--quiet", "-k", version])
            .args(manifests());
        passes(cmd);
    }
}

#[test]
fn every_yaml_file_under_deploy_passes_yamllint() {
    let mut cmd = tool("yamllint");
    cmd.args(["-c", ".yamllint.yaml", "."])
        .current_dir(deploy_dir());
    passes(cmd);
}

#[test]
fn the_manifests_say_what_the_docs_say() {
    let docs = std::fs::read_to_string(deploy_dir().join("../docs/configuration.md")).unwrap();
    let mut texts: Vec<(PathBuf, String)> = manifests()
        .into_iter()
        .map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    let compose = deploy_dir().join("compose/docker-compose.sqlserver.yml");
    texts.push((compose.clone(), std::fs::read_to_string(&compose).unwrap()));
    // Not the node's: the CLI's in the preStop hook, and the compose file's own password for
    // the SQL Server login it makes.
    let cli_settings = ["CUTTLE_SERVER", "CUTTLE_API_KEY", "CUTTLE_DB_PASSWORD"];
    for (path, text) in &texts {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("CUTTLE_") && !cli_settings.contains(&word) {
                assert!(
                    docs.contains(&format!("`{word}`")),
                    "{} sets {word}, which docs/configuration.md does not name",
                    path.display()
                );
            }
        }
    }
    let text =
        |name: &str| std::fs::read_to_string(deploy_dir().join("kubernetes").join(name)).unwrap();
    let number = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').parse().unwrap())
            .unwrap_or_else(|| panic!("no {key}"))
    };
    let grace = number(&text("configmap.yaml"), "CUTTLE_SHUTDOWN_GRACE_SECS:");
    for pods in ["api.yaml", "workers.yaml"] {
        let stop = number(&text(pods), "terminationGracePeriodSeconds:");
        assert!(
            stop > grace,
            "{pods}: Kubernetes kills the pod ({stop} s) before its tasks' grace ({grace} s) ends"
        );
    }
    let workers = text("workers.yaml");
    let drain: u64 = workers
        .split("--timeout ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the preStop drain's --timeout");
    assert!(
        drain <= grace,
        "the workers' drain ({drain} s) waits no longer than the tasks' grace ({grace} s)"
    );
    let stop = number(&workers, "terminationGracePeriodSeconds:");
    assert!(
        stop > drain + grace,
        "a worker's preStop drain ({drain} s) and its stop ({grace} s) both fit in {stop} s"
    );
    let replicas = number(&text("api.yaml"), "replicas:");
    let gateways = text("gateways.yaml");
    for i in 0..replicas {
        assert!(
            gateways.contains(&format!(
                "statefulset.kubernetes.io/pod-name: cuttle-api-{i}\n"
            )),
            "no Service for gateway pod cuttle-api-{i}"
        );
    }
    assert!(
        text("api.yaml").contains("path: /api/nodes/ping"),
        "readiness on the ping"
    );
}
