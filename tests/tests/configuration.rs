//! The deployment model's configuration over REST: spaces, environments and lifecycles, as
//! documents every node reads and writes at the version it read.

use cuttle_e2e::{Cluster, Database, Node, NodeOptions};
use serde_json::{json, Value};

cuttle_e2e::on_every_database!(environments_and_lifecycles_are_versioned_ordered_and_checked,);

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
    assert_eq!(
        n1.request("DELETE", &format!("{lcs}/{}", id(&lc)), None).0,
        204
    );
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
