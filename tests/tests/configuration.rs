//! The deployment model's configuration over REST: spaces, environments and lifecycles, as
//! documents every node reads and writes at the version it read.

use std::time::Duration;

use cuttle_e2e::{Cluster, Database, Node, NodeOptions};
use serde_json::{json, Value};

cuttle_e2e::on_every_database!(
    environments_and_lifecycles_are_versioned_ordered_and_checked,
    projects_keep_their_process_and_variables_and_never_show_a_sensitive_value,
    a_release_keeps_the_process_and_variables_it_was_made_with,
    retention_keeps_the_newest_releases_and_those_deployments_still_need,
);

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

fn error_of(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn put(node: &Node, path: &str, body: &Value, if_match: Option<&str>) -> (u16, Value) {
    let key = node.api_key();
    let headers: Vec<(&str, &str)> = if_match.map(|v| ("If-Match", v)).into_iter().collect();
    node.request_with_headers(&key, "PUT", path, Some(&body.to_string()), &headers)
}

fn environments_and_lifecycles_are_versioned_ordered_and_checked(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 0));
    let n2 = cluster.start(NodeOptions::named("n2", 0));

    // Every cluster has the default space, named by id or by name whatever its case.
    let (status, spaces) = n1.get("/api/spaces");
    assert_eq!(
        (status, names(&spaces)),
        (200, vec!["Default".to_owned()]),
        "{spaces}"
    );
    let space_id = id(&spaces["items"][0]);
    assert_eq!(
        n2.get(&format!("/api/spaces/{space_id}")).1["name"],
        "Default"
    );
    assert_eq!(n2.get("/api/spaces/DEFAULT").1["id"], space_id.as_str());
    let (status, err) = n1.get("/api/spaces/nowhere/environments");
    assert_eq!(status, 404, "{err}");

    // Environments go last as they are made; names are unique whatever their case.
    let envs = "/api/spaces/default/environments";
    let mut made = Vec::new();
    for name in ["Development", "Test", "Production"] {
        let (status, env) = n1.post(
            envs,
            &json!({"name": name, "description": format!("{name} servers")}),
        );
        assert_eq!(status, 201, "{env}");
        assert_eq!(
            (env["version"].clone(), env["space_id"].clone()),
            (json!(1), json!(space_id))
        );
        made.push(id(&env));
    }
    let (dev, test, prod) = (made[0].clone(), made[1].clone(), made[2].clone());
    let (status, err) = n2.post(envs, &json!({"name": "production"}));
    assert_eq!(status, 409, "{err}");
    assert!(error_of(&err).contains("production"), "{err}");
    for (body, field) in [
        (json!({"name": "x", "colour": "red"}), "colour"),
        (json!({"name": ""}), "name"),
        (json!({"description": "no name"}), "name"),
        (json!({"name": "x", "version": "one"}), "version"),
    ] {
        let (status, err) = n1.post(envs, &body);
        assert_eq!(status, 400, "{body}: {err}");
        assert!(error_of(&err).contains(field), "{body}: {err}");
    }
    assert_eq!(
        names(&n2.get(envs).1),
        ["Development", "Test", "Production"]
    );

    // Reordered in one call, naming each exactly once.
    let reorder = format!("{envs}/reorder");
    let (status, err) = n1.post(&reorder, &json!({"ids": [prod, dev]}));
    assert_eq!(status, 400, "{err}");
    let (status, list) = n1.post(&reorder, &json!({"ids": [prod, test, dev]}));
    assert_eq!(
        (status, names(&list)),
        (
            200,
            vec!["Production".into(), "Test".into(), "Development".into()]
        )
    );
    assert_eq!(
        names(&n2.get(envs).1),
        ["Production", "Test", "Development"],
        "every node sees it"
    );
    n1.post(&reorder, &json!({"ids": [dev, test, prod]}));

    // A change names the version it was read at; a stale one changes nothing and says why.
    let test_path = format!("{envs}/{test}");
    let (status, err) = put(&n1, &test_path, &json!({"name": "QA"}), None);
    assert_eq!(status, 400, "{err}");
    assert!(error_of(&err).contains("version"), "{err}");
    let (status, qa) = put(&n1, &test_path, &json!({"name": "QA"}), Some("\"1\""));
    assert_eq!(
        (status, qa["version"].clone(), qa["name"].clone()),
        (200, json!(2), json!("QA")),
        "{qa}"
    );
    let (status, err) = put(&n2, &test_path, &json!({"name": "Staging"}), Some("\"1\""));
    assert_eq!(status, 409, "{err}");
    assert!(error_of(&err).contains("version 2"), "{err}");
    let (status, staging) = put(
        &n2,
        &test_path,
        &json!({"name": "Staging", "version": 2}),
        None,
    );
    assert_eq!(
        (status, staging["version"].clone()),
        (200, json!(3)),
        "{staging}"
    );
    assert_eq!(n1.get(&test_path).1["name"], "Staging");
    let (status, err) = put(
        &n1,
        &test_path,
        &json!({"name": "Development", "version": 3}),
        None,
    );
    assert_eq!(status, 409, "renamed onto another's name: {err}");

    // Lifecycles: phases of environments of this space, each in one phase.
    let lcs = "/api/spaces/default/lifecycles";
    let phases = json!([
        {"name": "Dev", "environments": [dev]},
        {"name": "Test", "environments": [test], "minimum_environments_before_promotion": 1},
        {"name": "Prod", "environments": [prod]},
    ]);
    let (status, lc) = n1.post(lcs, &json!({"name": "Standard", "phases": phases}));
    assert_eq!(status, 201, "{lc}");
    assert_eq!(lc["phases"][1]["minimum_environments_before_promotion"], 1);
    assert_eq!(
        n2.get(&format!("{lcs}/{}", id(&lc))).1["phases"],
        lc["phases"]
    );
    for (phases, says) in [
        (
            json!([{"name": "A", "environments": ["Environments-999"]}]),
            "not an environment",
        ),
        (
            json!([{"name": "A", "environments": [dev]}, {"name": "B", "environments": [dev]}]),
            "earlier phase",
        ),
        (
            json!([{"name": "A", "environments": [dev], "minimum_environments_before_promotion": 2}]),
            "minimum_environments_before_promotion",
        ),
        (json!([{"name": "A"}, {"name": "a"}]), "another phase"),
        (json!([{"name": "A", "wait": true}]), "wait"),
    ] {
        let (status, err) = n1.post(lcs, &json!({"name": "Bad", "phases": phases}));
        assert_eq!(status, 400, "{phases}: {err}");
        assert!(error_of(&err).contains(says), "{phases}: {err}");
    }
    // An environment in a lifecycle stays until the lifecycle lets go of it.
    let prod_path = format!("{envs}/{prod}");
    let (status, err) = n1.request("DELETE", &prod_path, None);
    assert_eq!(status, 409, "{err}");
    assert!(error_of(&err).contains("Standard"), "{err}");
    // A lifecycle a project goes through stays until the project goes another way.
    let (status, project) = n1.post(
        "/api/spaces/default/projects",
        &json!({"name": "Uses Standard", "lifecycle_id": id(&lc)}),
    );
    assert_eq!(status, 201, "{project}");
    let lc_path = format!("{lcs}/{}", id(&lc));
    let (status, err) = n1.request("DELETE", &lc_path, None);
    assert_eq!(status, 409, "{err}");
    assert!(error_of(&err).contains("Uses Standard"), "{err}");
    let project_path = format!("/api/spaces/default/projects/{}", id(&project));
    assert_eq!(n1.request("DELETE", &project_path, None).0, 204);
    assert_eq!(n1.request("DELETE", &lc_path, None).0, 204);
    assert_eq!(n1.request("DELETE", &prod_path, None).0, 204);
    assert_eq!(n2.get(&prod_path).0, 404);
    assert_eq!(names(&n2.get(envs).1), ["Development", "Staging"]);

    // Spaces keep their own names apart; only admins make spaces.
    let (status, ops) = n1.post(
        "/api/spaces",
        &json!({"name": "Ops", "description": "platform"}),
    );
    assert_eq!(status, 201, "{ops}");
    let (status, _) = n1.post(
        "/api/spaces/ops/environments",
        &json!({"name": "Development"}),
    );
    assert_eq!(status, 201);
    assert_eq!(
        names(&n1.get("/api/spaces/ops/environments").1),
        ["Development"]
    );
    let (_, reader) = n1.post("/api/keys", &json!({"name": "dash", "scope": "reader"}));
    let reader = reader["key"].as_str().unwrap();
    assert_eq!(n2.request_with_key(reader, "GET", envs, None).0, 200);
    let (status, err) = n2.request_with_key(reader, "POST", envs, Some(r#"{"name":"X"}"#));
    assert_eq!(status, 403, "{err}");
    assert!(error_of(&err).contains("needs scope operator"), "{err}");
    let (_, operator) = n1.post("/api/keys", &json!({"name": "ops", "scope": "operator"}));
    let operator = operator["key"].as_str().unwrap();
    let (status, err) =
        n2.request_with_key(operator, "POST", "/api/spaces", Some(r#"{"name":"Y"}"#));
    assert_eq!(status, 403, "{err}");

    // Every change has its event.
    let (_, events) = n1.get("/api/events?limit=100");
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for (action, times) in [
        ("environment.create", 4),
        ("environment.reorder", 2),
        ("environment.update", 2),
        ("environment.delete", 1),
        ("lifecycle.create", 1),
        ("lifecycle.delete", 1),
        ("space.create", 1),
    ] {
        assert_eq!(
            actions.iter().filter(|a| **a == action).count(),
            times,
            "{action}: {actions:?}"
        );
    }
    for n in [&n1, &n2] {
        assert!(
            n.unexpected_errors().is_empty(),
            "{:?}",
            n.unexpected_errors()
        );
    }
}

/// Everything the database holds about documents, as text, where the harness can read it.
fn stored_documents(cluster: &Cluster) -> Option<String> {
    if let Some(pg) = cluster.postgres_server() {
        return Some(pg.psql("SELECT name, body FROM documents").unwrap());
    }
    let path = cluster.db_url.strip_prefix("sqlite://")?;
    let mut all = Vec::new();
    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(format!("{path}{suffix}")) {
            all.extend(bytes);
        }
    }
    Some(String::from_utf8_lossy(&all).into_owned())
}

fn projects_keep_their_process_and_variables_and_never_show_a_sensitive_value(db: Database) {
    const SECRET: &str = "s3cr3t-Pa55-Wh1ch-N3ver-Sh0ws";
    let cluster = Cluster::new(db).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 0));
    let n2 = cluster.start(NodeOptions::named("n2", 0));
    let envs = "/api/spaces/default/environments";
    let dev = id(&n1.post(envs, &json!({"name": "Development"})).1);
    let prod = id(&n1.post(envs, &json!({"name": "Production"})).1);
    let (_, lc) = n1.post(
        "/api/spaces/default/lifecycles",
        &json!({"name": "Standard", "phases": [{"name": "Dev", "environments": [dev]}, {"name": "Prod", "environments": [prod]}]}),
    );

    // A project names a lifecycle of its space; its process and variables have their own calls.
    let projects = "/api/spaces/default/projects";
    let (status, err) = n1.post(
        projects,
        &json!({"name": "Shop", "lifecycle_id": "Lifecycles-999"}),
    );
    assert_eq!(status, 400, "{err}");
    assert!(error_of(&err).contains("lifecycle_id"), "{err}");
    let (status, shop) = n1.post(
        projects,
        &json!({"name": "Shop", "lifecycle_id": id(&lc), "retention": {"releases_to_keep": 5}}),
    );
    assert_eq!(status, 201, "{shop}");
    assert!(
        shop.get("process").is_none() && shop.get("variables").is_none(),
        "{shop}"
    );
    assert_eq!(shop["retention"]["releases_to_keep"], 5);
    let shop_path = format!("{projects}/{}", id(&shop));
    let process_path = format!("{shop_path}/deploymentprocess");
    let (status, process) = n2.get(&process_path);
    assert_eq!(
        (status, process["steps"].clone(), process["version"].clone()),
        (200, json!([]), json!(1))
    );

    // The process is saved as a whole, checked, at the version read.
    let steps = json!([
        {"name": "Deploy web", "target_roles": ["web"], "action": {"type": "script", "script": "echo web #{ConnStr}"}},
        {"name": "Migrate", "target_roles": ["db"], "action": {"type": "script", "script": "echo db", "timeout_secs": 600}, "environments": [prod]},
        {"name": "Notify", "condition": "always", "action": {"type": "script", "script": "echo done"}},
    ]);
    let (status, saved) = n1.request(
        "PUT",
        &process_path,
        Some(&json!({"steps": steps, "version": 1}).to_string()),
    );
    assert_eq!(status, 200, "{saved}");
    assert_eq!(
        (
            saved["version"].clone(),
            saved["steps"][1]["action"]["timeout_secs"].clone()
        ),
        (json!(2), json!(600))
    );
    assert_eq!(
        saved["steps"][0]["condition"], "success",
        "defaults are filled in"
    );
    for (bad, says) in [
        (
            json!([{"name": "A", "action": {"type": "script", "script": "x"}}, {"name": "a", "action": {"type": "script", "script": "y"}}]),
            "steps[1].name",
        ),
        (
            json!([{"name": "A", "action": {"type": "script", "script": "x"}, "environments": ["Environments-999"]}]),
            "not an environment",
        ),
        (
            json!([{"name": "A", "action": {"type": "script", "script": "x"}, "retries": 2}]),
            "retries",
        ),
        (
            json!([{"name": "A", "action": {"type": "script", "script": "x", "shell": "cmd"}}]),
            "steps[0].action.shell",
        ),
    ] {
        let (status, err) = n1.request(
            "PUT",
            &process_path,
            Some(&json!({"steps": bad, "version": 2}).to_string()),
        );
        assert_eq!(status, 400, "{bad}: {err}");
        assert!(error_of(&err).contains(says), "{bad}: {err}");
    }
    let (status, err) = n2.request(
        "PUT",
        &process_path,
        Some(&json!({"steps": [], "version": 1}).to_string()),
    );
    assert_eq!(status, 409, "{err}");

    // Changing the project's settings keeps its process.
    let (status, changed) = n2.request("PUT", &shop_path, Some(&json!({"name": "Shop", "description": "the shop", "lifecycle_id": id(&lc), "version": 2}).to_string()));
    assert_eq!(
        (status, changed["version"].clone()),
        (200, json!(3)),
        "{changed}"
    );
    assert_eq!(
        n1.get(&process_path).1["steps"].as_array().unwrap().len(),
        3
    );

    // Variables: a sensitive value is accepted, stored encrypted and never shown again.
    let vars_path = format!("{shop_path}/variables");
    let (status, vars) = n1.request(
        "PUT",
        &vars_path,
        Some(
            &json!({"version": 3, "variables": [
                {"name": "ConnStr", "value": "Server=db-prod", "scope": {"environments": [prod]}},
                {"name": "ConnStr", "value": "Server=localhost"},
                {"name": "ApiPassword", "value": SECRET, "sensitive": true},
            ]})
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{vars}");
    assert_eq!(vars["variables"][2]["value"], Value::Null, "{vars}");
    assert_eq!(vars["variables"][0]["value"], "Server=db-prod");
    let password_id = vars["variables"][2]["id"].as_str().unwrap().to_owned();
    // Saving the set again keeps the sensitive value by its id, without sending it.
    let (status, vars) = n2.request("PUT", &vars_path, Some(&json!({"version": 4, "variables": [
        {"name": "ConnStr", "value": "Server=localhost"},
        {"id": password_id, "name": "ApiPassword", "sensitive": true},
        {"name": "Region", "value": "eu", "scope": {"roles": ["web"], "targets": ["web-1"]}},
    ]}).to_string()));
    assert_eq!(status, 200, "{vars}");
    assert_eq!(vars["variables"][1]["id"], password_id.as_str());
    for (bad, says) in [
        (
            json!([{"name": "New", "sensitive": true}]),
            "variables[0].value",
        ),
        (
            json!([{"id": "Variables-999", "name": "X", "value": "1"}]),
            "variables[0].id",
        ),
        (json!([{"name": "Y"}]), "variables[0].value"),
        (
            json!([{"name": "Cuttle.Project.Name", "value": "x"}]),
            "cluster's own",
        ),
        (
            json!([{"name": "Z", "value": "1", "scope": {"environments": ["Environments-999"]}}]),
            "not an environment",
        ),
    ] {
        let (status, err) = n1.request(
            "PUT",
            &vars_path,
            Some(&json!({"version": 5, "variables": bad}).to_string()),
        );
        assert_eq!(status, 400, "{bad}: {err}");
        assert!(error_of(&err).contains(says), "{bad}: {err}");
    }
    // The value is in no answer, no event, and not in the database in the clear.
    let mut seen = String::new();
    for n in [&n1, &n2] {
        for path in [
            vars_path.as_str(),
            shop_path.as_str(),
            process_path.as_str(),
            "/api/events?limit=100",
            projects,
        ] {
            seen.push_str(&n.get(path).1.to_string());
        }
    }
    assert!(!seen.contains(SECRET), "a sensitive value was shown");
    if let Some(stored) = stored_documents(&cluster) {
        assert!(
            stored.contains("ApiPassword"),
            "the harness reads the documents"
        );
        assert!(
            !stored.contains(SECRET),
            "a sensitive value is stored in the clear"
        );
    }
    for n in [&n1, &n2] {
        assert!(
            !n.stderr_text().contains(SECRET) && !n.stdout_text().contains(SECRET),
            "logged"
        );
    }

    // Operators change projects; deployers only read them.
    let (_, deployer) = n1.post("/api/keys", &json!({"name": "ci", "scope": "deployer"}));
    let deployer = deployer["key"].as_str().unwrap();
    let (status, body) = n2.request_with_key(deployer, "GET", &vars_path, None);
    assert_eq!(status, 200, "{body}");
    let (status, err) = n2.request_with_key(
        deployer,
        "PUT",
        &process_path,
        Some(r#"{"steps":[],"version":5}"#),
    );
    assert_eq!(status, 403, "{err}");
    let (_, events) = n1.get("/api/events?limit=100");
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "project.create",
        "project.update",
        "project.process.update",
        "project.variables.update",
    ] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
    assert_eq!(n1.request("DELETE", &shop_path, None).0, 204);
    assert_eq!(n2.get(&process_path).0, 404);
}

fn a_release_keeps_the_process_and_variables_it_was_made_with(db: Database) {
    const SECRET: &str = "rel-s3cr3t-n0t-sh0wn";
    let cluster = Cluster::new(db).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 0));
    let n2 = cluster.start(NodeOptions::named("n2", 0));
    let (_, shop) = n1.post("/api/spaces/default/projects", &json!({"name": "Shop"}));
    let shop_path = format!("/api/spaces/default/projects/{}", id(&shop));
    let script = |s: &str| json!({"type": "script", "script": s});
    let two_steps = json!({"version": 1, "steps": [
        {"name": "Deploy", "target_roles": ["web"], "action": script("echo deploy")},
        {"name": "Smoke test", "action": script("echo smoke")},
    ]});
    let put = |path: &str, body: &Value| n1.request("PUT", path, Some(&body.to_string()));
    assert_eq!(
        put(&format!("{shop_path}/deploymentprocess"), &two_steps).0,
        200
    );
    let (status, _) = put(
        &format!("{shop_path}/variables"),
        &json!({"version": 2, "variables": [
            {"name": "Colour", "value": "blue"},
            {"name": "Token", "value": SECRET, "sensitive": true},
        ]}),
    );
    assert_eq!(status, 200);

    // A deployer (a build pipeline) makes the release; a reader may not.
    let (_, ci) = n1.post("/api/keys", &json!({"name": "ci", "scope": "deployer"}));
    let ci = ci["key"].as_str().unwrap().to_owned();
    let (_, reader) = n1.post("/api/keys", &json!({"name": "dash", "scope": "reader"}));
    let reader = reader["key"].as_str().unwrap().to_owned();
    let releases = format!("{shop_path}/releases");
    let body = json!({"version": "1.0.0", "notes": "first"}).to_string();
    let (status, err) = n2.request_with_key(&reader, "POST", &releases, Some(&body));
    assert_eq!(status, 403, "{err}");
    let (status, r1) = n2.request_with_key(&ci, "POST", &releases, Some(&body));
    assert_eq!(status, 201, "{r1}");
    assert_eq!(r1["process"]["steps"].as_array().unwrap().len(), 2);
    assert_eq!(r1["created_by"], "ci (ApiKeys-2)");
    assert_eq!(r1["variables"][1]["value"], Value::Null, "{r1}");

    // Editing the project afterwards changes the next release, never this one.
    let one_step = json!({"version": 3, "steps": [{"name": "Deploy", "target_roles": ["web"], "action": script("echo v2")}]});
    assert_eq!(
        put(&format!("{shop_path}/deploymentprocess"), &one_step).0,
        200
    );
    let vars = n1.get(&format!("{shop_path}/variables")).1;
    let token = vars["variables"][1]["id"].clone();
    let (status, _) = put(
        &format!("{shop_path}/variables"),
        &json!({"version": 4, "variables": [
            {"name": "Colour", "value": "green"},
            {"id": token, "name": "Token", "sensitive": true},
        ]}),
    );
    assert_eq!(status, 200);
    let r1_path = format!("/api/spaces/default/releases/{}", id(&r1));
    let again = n2.get(&r1_path).1;
    assert_eq!(
        again["process"], r1["process"],
        "the release's process is as it was"
    );
    assert_eq!(again["variables"][0]["value"], "blue");
    let (status, r2) = n1.post(&releases, &json!({"version": "1.1.0"}));
    assert_eq!(status, 201, "{r2}");
    assert_eq!(r2["process"]["steps"].as_array().unwrap().len(), 1);
    assert_eq!(r2["variables"][0]["value"], "green");

    // Versions are SemVer, one per project whatever their case; listed newest first.
    let (status, _) = n1.post(&releases, &json!({"version": "1.0.1-beta.2"}));
    assert_eq!(status, 201);
    for (version, status_wanted, says) in [
        ("1.0.0", 409, "1.0.0"),
        ("1.0", 400, "version"),
        ("1.1.0-Beta", 201, ""),
    ] {
        let (status, err) = n1.post(&releases, &json!({"version": version}));
        assert_eq!(status, status_wanted, "{version}: {err}");
        assert!(error_of(&err).contains(says), "{version}: {err}");
    }
    let (status, err) = n1.post(&releases, &json!({"version": "1.1.0-beta"}));
    assert_eq!(status, 409, "the same version in another case: {err}");
    let listed: Vec<String> = n2.get(&releases).1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ["1.1.0", "1.1.0-Beta", "1.0.1-beta.2", "1.0.0"]);
    assert_eq!(n2.get("/api/spaces/default/releases/Releases-999").0, 404);
    let (_, all) = n2.get("/api/events?limit=100");
    assert!(!all.to_string().contains(SECRET) && !again.to_string().contains(SECRET));
    assert_eq!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "release.create")
            .count(),
        4
    );
}

fn retention_keeps_the_newest_releases_and_those_deployments_still_need(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let dev = id(&n1
        .post(
            "/api/spaces/default/environments",
            &json!({"name": "Development"}),
        )
        .1);
    let (_, p) = n1.post(
        "/api/spaces/default/projects",
        &json!({"name": "Kept", "retention": {"releases_to_keep": 2}}),
    );
    let path = format!("/api/spaces/default/projects/{}", id(&p));
    let process = json!({"version": 1, "steps": [
        {"name": "Say", "action": {"type": "script", "script": "echo #{Cuttle.Release.Number}"}},
    ]});
    assert_eq!(
        n1.request(
            "PUT",
            &format!("{path}/deploymentprocess"),
            Some(&process.to_string())
        )
        .0,
        200
    );
    let release = |v: &str| {
        let (status, r) = n1.post(&format!("{path}/releases"), &json!({"version": v}));
        assert_eq!(status, 201, "{r}");
        id(&r)
    };
    let first = release("1.0.0");
    let (status, d) = n1.post(
        "/api/spaces/default/deployments",
        &json!({"release_id": first, "environment_id": dev}),
    );
    assert_eq!(status, 201, "{d}");
    let t = n1.wait_finished(d["task_id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(t["state"], "Success", "{t}");
    for v in ["1.0.1", "1.0.2", "1.0.3"] {
        release(v);
    }
    let (_, listed) = n1.get(&format!("{path}/releases"));
    let versions: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(
        versions,
        ["1.0.3", "1.0.2", "1.0.0"],
        "the newest two, and the one deployed"
    );
    let (_, events) = n1.get("/api/events?limit=50");
    let deleted: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "release.delete")
        .collect();
    assert_eq!(deleted.len(), 1, "{events}");
    assert_eq!(deleted[0]["details"]["version"], "1.0.1");
    // The dashboard still shows what is deployed.
    let (_, board) = n1.get("/api/spaces/default/dashboard");
    assert_eq!(board["items"][0]["release_version"], "1.0.0");
}

/// `PATCH` changes only what it names (a JSON merge patch), at the version read; `PUT`
/// replaces the settings whole. Neither touches the process.
#[test]
fn patch_changes_only_what_it_names() {
    let cluster = Cluster::sqlite();
    let n = cluster.start(NodeOptions::named("n1", 0));
    let space = "/api/spaces/default";
    let env = |name: &str| {
        let (status, e) = n.post(&format!("{space}/environments"), &json!({"name": name}));
        assert_eq!(status, 201, "{e}");
        id(&e)
    };
    let (dev, prod) = (env("Development"), env("Production"));
    let (_, lifecycle) = n.post(
        &format!("{space}/lifecycles"),
        &json!({"name": "Two", "phases": [{"name": "Dev", "environments": [dev]},
                                           {"name": "Prod", "environments": [prod]}]}),
    );
    let lifecycle = id(&lifecycle);
    let (_, p) = n.post(
        &format!("{space}/projects"),
        &json!({"name": "Shop", "lifecycle_id": lifecycle, "description": "the shop",
                "retention": {"releases_to_keep": 5, "releases_per_environment": 2}}),
    );
    let path = format!("{space}/projects/{}", id(&p));
    let step = json!({"name": "Say", "action": {"type": "script", "script": "echo hi"}});
    let (status, _) = put(
        &n,
        &format!("{path}/deploymentprocess"),
        &json!({"version": 1, "steps": [step]}),
        None,
    );
    assert_eq!(status, 200);
    let patch = |body: Value, if_match: Option<&str>| {
        let headers: Vec<(&str, &str)> = if_match.map(|v| ("If-Match", v)).into_iter().collect();
        n.request_with_headers(
            &n.api_key(),
            "PATCH",
            &path,
            Some(&body.to_string()),
            &headers,
        )
    };

    let (status, p) = patch(
        json!({"retention": {"releases_to_keep": 20}, "version": 2}),
        None,
    );
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (
            &p["lifecycle_id"],
            &p["description"],
            &p["retention"],
            &p["version"]
        ),
        (
            &json!(lifecycle),
            &json!("the shop"),
            &json!({"releases_to_keep": 20, "releases_per_environment": 2}),
            &json!(3)
        ),
        "only the retention's releases_to_keep changed: {p}"
    );
    // At a stale version: 409, nothing changes.
    let (status, err) = patch(json!({"description": "late"}), Some("\"2\""));
    assert_eq!(status, 409, "{err}");
    // null takes the default; a bad value is refused naming it, as a whole write would be.
    let (status, p) = patch(json!({"lifecycle_id": null}), Some("\"3\""));
    assert_eq!((status, &p["lifecycle_id"]), (200, &Value::Null), "{p}");
    let (status, err) = patch(
        json!({"lifecycle_id": "Lifecycles-999", "version": 4}),
        None,
    );
    assert_eq!(status, 400, "{err}");
    let (status, err) = patch(json!({"colour": "red", "version": 4}), None);
    assert!(status == 400 && error_of(&err).contains("colour"), "{err}");
    let (status, err) = patch(json!({"description": "x"}), None);
    assert!(status == 400 && error_of(&err).contains("version"), "{err}");
    // PUT replaces the settings whole: what it leaves out takes its default.
    let (status, p) = put(&n, &path, &json!({"name": "Shop", "version": 4}), None);
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (&p["description"], &p["retention"]["releases_to_keep"]),
        (&json!(""), &json!(0))
    );
    // The process was never touched.
    let (_, process) = n.get(&format!("{path}/deploymentprocess"));
    assert_eq!(process["steps"][0]["name"], "Say", "{process}");
    // A reader cannot patch.
    let reader = n.key_with_scope("r", "reader");
    let (status, _) = n.request_with_key(&reader, "PATCH", &path, Some(r#"{"version": 5}"#));
    assert_eq!(status, 403);
}
