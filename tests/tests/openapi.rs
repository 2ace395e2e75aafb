//! The REST API against its own OpenAPI document (`GET /api/openapi.json`), by a tool written
//! apart from the server: schemathesis (PyPI) reads the document and sends every operation
//! generated requests — schema-valid ones, hostile ones (wrong types, missing members, strings
//! that are not JSON), and sequences that follow the document's links (create, then read,
//! change, delete what was made) — with an admin key, on a node on PostgreSQL. Nothing may
//! answer 5xx, every answer must be what the document says (status, content type, headers,
//! body schema, the JSON error body of a refusal), and hostile input must be a 4xx. The node
//! must log no error meanwhile.
//!
//! And every operation that takes a key refuses a caller without one (`401`), and one whose
//! scope is below the one the document names (`403`), as `x-cuttle-scope` says.
//!
//! The Python environment is `scripts/test.sh`'s (`CUTTLE_TEST_PYTHON`, from
//! `tests/requirements.txt`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cuttle_e2e::{report, run_to_exit, Cluster, NodeOptions};
use serde_json::json;

fn python_bin(name: &str) -> PathBuf {
    cuttle_e2e::test_python()
        .parent()
        .expect("the Python's bin directory")
        .join(name)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// How many test cases the run says it generated (`… 4845 generated, …`).
fn generated(output: &str) -> u64 {
    output
        .lines()
        .filter_map(|l| l.trim().split_once(" generated"))
        .filter_map(|(n, _)| n.rsplit(' ').next()?.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no count of generated cases in:\n{output}"))
}

#[test]
fn schemathesis_finds_every_answer_as_documented_and_no_server_error() {
    let cluster = Cluster::postgres();
    let node = cluster.start(NodeOptions::named("n1", 2));
    // Something for the operations by id to find besides what the run makes itself.
    node.make_environments(&["Development"]);
    let (status, project) = node.post(
        "/api/spaces/Default/projects",
        &json!({"name": "Fuzzed", "description": "made before the run"}),
    );
    assert_eq!(status, 201, "{project}");
    // What the first runs found: a NUL character in a name, which PostgreSQL cannot store, was
    // a 500. It is refused at the edge.
    let (status, refused) = node.request(
        "POST",
        "/api/spaces/Default/environments",
        Some(r#"{"name": "a\u0000b"}"#),
    );
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NUL"),
        "{refused}"
    );

    // The same cases every run, unless CUTTLE_TEST_SEED asks for others.
    let seed = std::env::var("CUTTLE_TEST_SEED").unwrap_or_else(|_| "20261202".into());
    // And what a review of the document against the handlers found: a process `PUT` without
    // `steps` emptied the process (it is refused now, and the process stays), and a create
    // took a `version` the document does not have.
    let process = format!(
        "/api/spaces/Default/projects/{}/deploymentprocess",
        project["id"].as_str().unwrap()
    );
    let steps = r#"{"version": 1, "steps": [{"name": "Hi", "action": {"type": "script", "script": "echo hi"}}]}"#;
    let (status, saved) = node.request("PUT", &process, Some(steps));
    assert_eq!(status, 200, "{saved}");
    let (status, refused) = node.request("PUT", &process, Some(r#"{"version": 2}"#));
    assert_eq!(status, 400, "{refused}");
    let (_, kept) = node.get(&process);
    assert_eq!(kept["steps"].as_array().unwrap().len(), 1, "{kept}");
    let (status, refused) = node.request(
        "POST",
        "/api/spaces/Default/environments",
        Some(r#"{"name": "Versioned", "version": 3}"#),
    );
    assert_eq!(status, 400, "{refused}");

    let mut cmd = Command::new(python_bin("schemathesis"));
    cmd.arg("--no-color")
        .arg("--config-file")
        .arg(root().join("tests/openapi/schemathesis.toml"))
        .arg("run")
        .arg(node.url("/api/openapi.json"))
        .args(["--header", &format!("X-API-Key: {}", cluster.api_key)])
        // Every check but two: positive_data_acceptance wants every schema-valid request
        // accepted, which ids that name nothing can never be; ignored_auth sends unknown keys,
        // which the node's throttle answers with 429 after ten (the second test checks the
        // keys instead).
        .args(["--checks", "all"])
        .args(["--exclude-checks", "positive_data_acceptance,ignored_auth"])
        .args(["--seed", &seed, "--max-examples", "40"])
        .args(["--request-timeout", "30"])
        .env("NO_COLOR", "1");
    let (status, out, err) = run_to_exit(cmd, Duration::from_secs(900)).expect("run schemathesis");
    let text = format!("{out}{err}");
    assert!(status.success(), "schemathesis failed:\n{text}");
    let cases = generated(&text);
    assert!(cases > 3000, "only {cases} cases generated:\n{text}");
    report(format!(
        "schemathesis (seed {seed}): {cases} generated cases over every operation, none failed"
    ));
    // The key the run used still works: it was not revoked halfway, so every case was tried.
    let (status, nodes) = node.get("/api/nodes");
    assert_eq!(status, 200, "{nodes}");
}

/// Fills a path pattern's parameters with values that name nothing.
fn fill(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some((before, after)) = rest.split_once('{') {
        out.push_str(before);
        let (_, tail) = after.split_once('}').expect("a closed parameter");
        out.push_str("nothing-1");
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[test]
fn every_keyed_operation_refuses_no_key_and_a_scope_below_its_own() {
    let cluster = Cluster::sqlite();
    let node = cluster.start(NodeOptions::named("n1", 2));
    let reader = node.key_with_scope("reader-sweep", "reader");
    let (status, doc) = node.request_with_key("", "GET", "/api/openapi.json", None);
    assert_eq!(status, 200, "the document needs no key: {doc}");
    let mut keyed = 0;
    let mut above_reader = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let method = method.to_uppercase();
            let url = fill(path);
            let body = (method != "GET" && method != "DELETE").then_some("{}");
            let Some(scope) = op["x-cuttle-scope"].as_str() else {
                assert_eq!(
                    op["security"],
                    json!([]),
                    "{method} {path}: no scope, yet keyed"
                );
                let (status, _) = node.request_with_key("", &method, &url, body);
                assert_ne!(status, 401, "{method} {path} is documented as open");
                continue;
            };
            keyed += 1;
            let (status, answer) = node.request_with_key("", &method, &url, body);
            assert_eq!(status, 401, "{method} {path} without a key: {answer}");
            assert_eq!(answer["error"]["code"], "unauthorized", "{method} {path}");
            if scope != "reader" {
                above_reader += 1;
                let (status, answer) = node.request_with_key(&reader, &method, &url, body);
                assert_eq!(status, 403, "{method} {path} with a reader key: {answer}");
                let message = answer["error"]["message"].as_str().unwrap_or_default();
                assert!(message.contains(scope), "{method} {path}: {message}");
            } else {
                let (status, answer) = node.request_with_key(&reader, &method, &url, body);
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} refuses a reader key: {answer}"
                );
            }
        }
    }
    assert!(
        keyed > 60 && above_reader > 30,
        "{keyed} keyed, {above_reader} above reader"
    );
}
