//! The `cuttle-server` commands besides `run`, and the `cuttle` CLI, as an operator uses them.
//!
//! Past 800 lines for a reason: each test is one documented promise, end to end, with the
//! setup it needs in plain sight; splitting them would scatter the promises of one area.

use std::process::Command;
use std::time::Duration;

use cuttle_e2e::{cli_binary, run_to_exit, wait_until, Cluster, Database, NodeOptions};
use serde_json::{json, Value};

const MIN: Duration = Duration::from_secs(60);

/// A `cuttle-server` command against the cluster's database.
fn server_cmd(cluster: &Cluster, args: &[&str]) -> Command {
    cluster.server_command(args)
}

fn run_ok(cmd: Command) -> String {
    let (st, out, err) = run_to_exit(cmd, MIN).unwrap();
    assert!(st.success(), "exit {st}\nstdout:\n{out}\nstderr:\n{err}");
    out
}

/// `CUTTLE_DATABASE_URL` takes PostgreSQL's keyword form as the docs say, and a connection
/// string that is refused — whatever its form — is never echoed with its password.
#[test]
fn the_database_is_named_in_any_documented_form_and_no_refusal_shows_its_password() {
    let cluster = Cluster::new(Database::Postgres).unwrap();
    // postgres://USER@HOST:PORT/DB, as the harness makes it, in libpq's keyword form.
    let rest = cluster.db_url.strip_prefix("postgres://").unwrap();
    let (user, rest) = rest.split_once('@').unwrap();
    let (host_port, db) = rest.split_once('/').unwrap();
    let (host, port) = host_port.split_once(':').unwrap();
    let keywords = format!("host={host} port={port} user={user} dbname={db} sslmode=disable");
    let mut cmd = server_cmd(&cluster, &["upgrade-database"]);
    cmd.env("CUTTLE_DATABASE_URL", &keywords);
    let out = run_ok(cmd);
    assert!(out.contains("database schema upgraded"), "{out}");
    for refused in [
        "Database=cuttle;User Id=cuttle;Password=HUNTER2-secret",
        "Initial Catalog=cuttle;Password=\"HUNTER2;secret\";Server=sql;Encrypt=maybe",
        "host=127.0.0.1 user=u password=HUNTER2-secret dbname=x sslmode=sometimes",
        "mysql://cuttle:HUNTER2-secret@db/cuttle",
        "cuttle Password=HUNTER2-secret",
    ] {
        let mut cmd = server_cmd(&cluster, &["check"]);
        cmd.env("CUTTLE_DATABASE_URL", refused);
        let (st, out, err) = run_to_exit(cmd, MIN).unwrap();
        assert!(!st.success(), "{refused} was taken: {out}");
        assert!(
            !out.contains("HUNTER2") && !err.contains("HUNTER2"),
            "{refused}:\n{out}{err}"
        );
    }
}

#[test]
fn database_commands_and_api_keys_on_postgres() {
    let mut cluster = Cluster::new(Database::Postgres).unwrap();
    // Fresh database: upgrade-database creates the schema; a second run has nothing to do.
    let out = run_ok(server_cmd(&cluster, &["upgrade-database"]));
    let version = out
        .trim()
        .strip_prefix("database schema upgraded from version 0 to ")
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let out = run_ok(server_cmd(&cluster, &["upgrade-database"]));
    assert!(out.contains("is current"), "{out}");
    // The shared store is stored in the database; a missing directory is refused with its path.
    let missing = cluster.dir().join("no-such-dir");
    let (st, _, err) = run_to_exit(
        server_cmd(
            &cluster,
            &["path", "--cluster-shared", missing.to_str().unwrap()],
        ),
        MIN,
    )
    .unwrap();
    assert!(!st.success());
    assert!(
        err.contains("no-such-dir") && err.contains("No such file"),
        "{err}"
    );
    let shared2 = cluster.dir().join("shared2");
    std::fs::create_dir_all(&shared2).unwrap();
    run_ok(server_cmd(
        &cluster,
        &["path", "--cluster-shared", shared2.to_str().unwrap()],
    ));
    // An API key made by the command works against a node.
    let out = run_ok(server_cmd(&cluster, &["api-key", "create", "--name", "ci"]));
    let key = out.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("API-"), "{out}");
    // CUTTLE_ADMIN_API_KEY only bootstraps an empty key table: from now on only `key` works.
    let bootstrap = std::mem::replace(&mut cluster.api_key, key.clone());
    let node = cluster.start(NodeOptions::named("n1", 1));
    let id = node.enqueue(json!({"kind": "AdHocScript", "arguments": {"script": "echo via-key"}}));
    node.wait_finished(&id, MIN);
    assert!(
        shared2.join("TaskLogs").join(format!("{id}.log")).exists(),
        "logs go to the shared store named in the database"
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .get(&node.url("/api/nodes"))
        .header("Authorization", &format!("Bearer {key}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = agent
        .get(&node.url("/api/nodes"))
        .header("X-Api-Key", &bootstrap)
        .call()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "the bootstrap key was not registered"
    );
    // check passes on a healthy cluster and names each check.
    let out = run_ok(server_cmd(&cluster, &["check"]));
    let schema = format!("schema version {version}");
    for want in ["database", schema.as_str(), "master key", "shared store"] {
        assert!(out.contains(want), "{out}");
    }
    // A wrong key fails the check with a one-line reason.
    let mut bad = server_cmd(&cluster, &["check"]);
    bad.env("CUTTLE_MASTER_KEY", "AAAAAAAAAAAAAAAAAAAAAA==");
    let (st, _, err) = run_to_exit(bad, MIN).unwrap();
    assert!(!st.success());
    assert!(err.contains("master key does not match"), "{err}");
    // A database from a newer release is refused, saying what to do.
    let pg_url = &cluster.db_url;
    let psql = Command::new("psql")
        .args([
            pg_url.as_str(),
            "-c",
            "INSERT INTO schema_migrations VALUES (99, 0)",
        ])
        .output()
        .unwrap();
    assert!(psql.status.success());
    let (st, _, err) = run_to_exit(server_cmd(&cluster, &["check"]), MIN).unwrap();
    assert!(!st.success());
    assert!(err.contains("newer than this binary supports"), "{err}");
}

#[test]
fn postgres_requires_a_master_key() {
    let cluster = Cluster::new(Database::Postgres).unwrap();
    let mut cmd = server_cmd(&cluster, &["run"]);
    cmd.env_remove("CUTTLE_MASTER_KEY");
    let (st, _, err) = run_to_exit(cmd, MIN).unwrap();
    assert!(!st.success());
    assert!(err.contains("CUTTLE_MASTER_KEY is required"), "{err}");
}

#[test]
fn ping_turns_503_when_the_database_is_down() {
    let cluster = Cluster::new(Database::Postgres).unwrap();
    let node = cluster.start(NodeOptions::named("n1", 1));
    assert_eq!(node.ping(), 200);
    let pg = cluster.postgres_server().expect("harness-owned server");
    pg.stop_server().unwrap();
    let body = wait_until("ping 503 while the database is down", MIN, || {
        let (status, body) = node.get("/api/nodes/ping");
        (status == 503).then_some(body)
    });
    // No key is needed for the ping, so it names no address and repeats no database error.
    assert_eq!(body["node"], "n1", "{body}");
    assert_eq!(body["state"], "unavailable", "{body}");
    assert_eq!(
        body["error"]["message"], "this node cannot reach the database",
        "{body}"
    );
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
    pg.start_server().unwrap();
    wait_until("ping 200 once the database is back", MIN, || {
        (node.ping() == 200).then_some(())
    });
}

fn cli(cluster: &Cluster, node: &cuttle_e2e::Node, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(cli_binary());
    cmd.args(args)
        .env("CUTTLE_SERVER", node.url(""))
        .env("CUTTLE_API_KEY", &cluster.api_key);
    let (st, out, err) = run_to_exit(cmd, MIN).unwrap();
    (st.success(), out, err)
}

#[test]
fn cli_refuses_plain_http_to_another_host() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    // Refused before any request: the name is never even looked up.
    let mut cmd = Command::new(cli_binary());
    cmd.args(["--server", "http://cuttle.invalid:8080", "node", "list"])
        .env("CUTTLE_API_KEY", &cluster.api_key);
    let (st, _, err) = run_to_exit(cmd, MIN).unwrap();
    assert!(!st.success());
    assert!(err.contains("--insecure"), "{err}");
    // This host over plain HTTP is fine.
    let (ok, out, err) = cli(&cluster, &n1, &["node", "list"]);
    assert!(ok, "{err}");
    assert!(out.contains("n1"), "{out}");
}

#[test]
fn cli_drains_a_node_and_waits_for_its_tasks() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let id = n1.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 1500}}));
    n1.wait_task(&id, "executing", MIN, |t| t["state"] == "Executing");
    let (ok, out, err) = cli(
        &cluster,
        &n1,
        &[
            "--output",
            "json",
            "node",
            "drain",
            "n1",
            "--wait",
            "--timeout",
            "30",
        ],
    );
    assert!(ok, "{err}");
    let node: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (node["draining"].as_bool(), node["running_tasks"].as_u64()),
        (Some(true), Some(0))
    );
    assert_eq!(
        n1.task(&id)["state"],
        "Success",
        "drain --wait returned before the task finished"
    );
    assert_eq!(n1.ping(), 418);
    let (ok, out, _) = cli(&cluster, &n1, &["node", "list"]);
    assert!(
        ok && out.contains("n1") && out.contains("DRAINING"),
        "{out}"
    );
    let (ok, _, _) = cli(&cluster, &n1, &["node", "undrain", "n1"]);
    assert!(ok);
    assert_eq!(n1.ping(), 200);
    let (ok, out, _) = cli(&cluster, &n1, &["task", "log", &id]);
    assert!(ok && out.contains("slept 1500 ms"), "{out}");
    let (ok, _, err) = cli(&cluster, &n1, &["node", "drain", "ghost"]);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, out, _) = cli(
        &cluster,
        &n1,
        &[
            "--output",
            "json",
            "capacity",
            "--projects",
            "50",
            "--minutes",
            "30",
            "--window",
            "120",
        ],
    );
    assert!(ok);
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["minimum_total_cap"], 13);
}

#[test]
fn concurrent_first_starts_mint_exactly_one_admin_key_into_a_private_file() {
    let cluster = Cluster::new(Database::Postgres).unwrap();
    // No CUTTLE_ADMIN_API_KEY (empty is unset): the cluster mints its first key.
    let opts = |name: &str| NodeOptions {
        env: vec![("CUTTLE_ADMIN_API_KEY".into(), String::new())],
        ..NodeOptions::named(name, 0)
    };
    let nodes: Vec<cuttle_e2e::Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| cluster.spawn(opts(n)))
        .collect();
    for n in &nodes {
        wait_until(&format!("{} to answer its ping", n.name), MIN, || {
            (n.ping() == 200).then_some(())
        });
    }
    let files: Vec<std::path::PathBuf> = nodes
        .iter()
        .map(|n| cluster.dir().join(&n.name).join("admin-api-key"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(files.len(), 1, "exactly one node mints the key: {files:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = std::fs::read_to_string(&files[0])
        .unwrap()
        .trim()
        .to_owned();
    let pg = cluster.postgres_server().unwrap();
    assert_eq!(pg.psql("SELECT count(*) FROM api_keys").unwrap(), "1");
    let minter = nodes
        .iter()
        .find(|n| files[0].starts_with(cluster.dir().join(&n.name)))
        .unwrap();
    assert!(
        minter.stdout_text().contains("admin-api-key"),
        "the minting node says where the key is: {}",
        minter.stdout_text()
    );
    // It works, and no node wrote it to its output or its log.
    let r = cuttle_e2e::agent(None)
        .get(&minter.url("/api/nodes"))
        .header("X-Api-Key", &key)
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    for n in &nodes {
        assert!(
            !n.stdout_text().contains(&key),
            "{} printed the key",
            n.name
        );
        assert!(!n.stderr_text().contains(&key), "{} logged the key", n.name);
    }
    // Once used, the key is not left readable on disk; it keeps working.
    wait_until("the used key's file to be removed", MIN, || {
        (!files[0].exists()).then_some(())
    });
    let r = cuttle_e2e::agent(None)
        .get(&nodes[2].url("/api/nodes"))
        .header("X-Api-Key", &key)
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_revoked_key_stops_working_on_every_node_within_a_second() {
    let cluster = Cluster::new(Database::Postgres).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 0));
    let n2 = cluster.start(NodeOptions::named("n2", 0));
    let n3 = cluster.start(NodeOptions::named("n3", 0));
    let out = run_ok(server_cmd(&cluster, &["api-key", "create", "--name", "ci"]));
    let ci_key = out.lines().last().unwrap().trim().to_owned();
    let with_key = |node: &cuttle_e2e::Node, key: &str| {
        cuttle_e2e::agent(None)
            .get(&node.url("/api/tasks"))
            .header("X-Api-Key", key)
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    // n2 and n3 have just used (and cached) the key that is about to be revoked.
    assert_eq!(with_key(&n2, &ci_key), 200);
    assert_eq!(with_key(&n3, &ci_key), 200);
    let (ok, listed, err) = cli(&cluster, &n1, &["--output", "json", "api-key", "list"]);
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let items = listed["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{listed}");
    assert!(
        !listed.to_string().contains(&ci_key),
        "a key is never listed"
    );
    let ci_id = items.iter().find(|k| k["name"] == "ci").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, _, err) = cli(&cluster, &n1, &["api-key", "revoke", &ci_id]);
    assert!(ok, "{err}");
    assert_eq!(
        with_key(&n1, &ci_key),
        401,
        "refused at once where it was revoked"
    );
    // On every other node within a second (its cache of known keys lives that long), measured
    // from the revoke's answer: half a second of slack for the requests themselves.
    wait_until(
        "n2 and n3 to refuse the revoked key",
        Duration::from_millis(1500),
        || (with_key(&n2, &ci_key) == 401 && with_key(&n3, &ci_key) == 401).then_some(()),
    );
    assert_eq!(
        with_key(&n2, &cluster.api_key),
        200,
        "other keys still work"
    );
    // The last key cannot be revoked.
    let admin_id = items.iter().find(|k| k["name"] != "ci").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = n1.request("DELETE", &format!("/api/keys/{admin_id}"), None);
    assert_eq!(status, 409, "{body}");
    let (_, events) = n2.get("/api/events?limit=20");
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "api_key.revoke" && e["target"] == ci_id.as_str()),
        "{events}"
    );
}

/// Creates a key over REST with the admin key; returns its id and the key.
fn create_key(node: &cuttle_e2e::Node, body: Value) -> (String, String) {
    let (status, created) = node.post("/api/keys", &body);
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert_eq!(created["prefix"], key[..8], "{created}");
    (created["id"].as_str().unwrap().to_owned(), key)
}

#[test]
fn scoped_keys_do_only_what_their_scope_allows() {
    let cluster = Cluster::new(Database::Postgres).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let pg = cluster.postgres_server().unwrap();
    let (_, reader) = create_key(&n1, json!({"name": "dashboards", "scope": "reader"}));
    let (_, deployer) = create_key(
        &n1,
        json!({"name": "ci", "scope": "deployer", "expires_in": "90d"}),
    );
    let (_, operator) = create_key(&n1, json!({"name": "ops", "scope": "operator"}));
    let (_, agent) = create_key(
        &n1,
        json!({"name": "web-01 bootstrap", "scope": "register-target", "target": "web-01"}),
    );
    let call = |key: &str, method: &str, path: &str, body: Option<Value>| {
        n1.request_with_key(key, method, path, body.map(|b| b.to_string()).as_deref())
    };
    let refused = |key: &str, method: &str, path: &str, body: Option<Value>, needs: &str| {
        let (status, err) = call(key, method, path, body);
        assert_eq!(status, 403, "{method} {path}: {err}");
        assert_eq!(err["error"]["code"], "forbidden");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("needs scope {needs}")), "{msg}");
    };
    let task = json!({"kind": "Sleep", "arguments": {"duration_ms": 0}});

    // reader: reads, nothing else.
    assert_eq!(call(&reader, "GET", "/api/tasks", None).0, 200);
    assert_eq!(call(&reader, "GET", "/api/events", None).0, 200);
    refused(
        &reader,
        "POST",
        "/api/tasks",
        Some(task.clone()),
        "deployer",
    );
    refused(&reader, "GET", "/api/keys", None, "admin");
    // deployer: tasks, not nodes.
    let (status, queued) = call(&deployer, "POST", "/api/tasks", Some(task.clone()));
    assert_eq!(status, 201, "{queued}");
    refused(
        &deployer,
        "PATCH",
        "/api/nodes/n1",
        Some(json!({"task_cap": 2})),
        "operator",
    );
    // operator: nodes and targets, not keys.
    assert_eq!(
        call(
            &operator,
            "PATCH",
            "/api/nodes/n1",
            Some(json!({"task_cap": 2}))
        )
        .0,
        200
    );
    refused(&operator, "GET", "/api/keys", None, "admin");
    refused(
        &operator,
        "POST",
        "/api/keys",
        Some(json!({"name": "x", "scope": "admin"})),
        "admin",
    );

    // register-target: its own target only.
    let thumb = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    let target = |name: &str, t: char| json!({"name": name, "comms": "polling", "thumbprint": thumb(t), "roles": ["web"], "new_roles": true});
    let (status, err) = call(&agent, "POST", "/api/targets", Some(target("web-02", 'B')));
    assert_eq!(status, 403, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"web-01\""),
        "{err}"
    );
    // It claims no role it was not granted (this key grants none).
    let (status, err) = call(&agent, "POST", "/api/targets", Some(target("web-01", 'A')));
    assert_eq!(status, 403, "{err}");
    assert!(err.to_string().contains("the roles [web]"), "{err}");
    let mut bare = target("web-01", 'A');
    bare["roles"] = json!([]);
    let (status, own) = call(&agent, "POST", "/api/targets", Some(bare));
    assert_eq!(status, 201, "{own}");
    let own_path = format!("/api/targets/{}", own["id"].as_str().unwrap());
    // Used up by that registration: the key is revoked, and it never changed the target.
    let (status, err) = call(
        &agent,
        "PATCH",
        &own_path,
        Some(json!({"roles": ["web", "api"]})),
    );
    assert_eq!(status, 401, "{err}");
    let (_, other) = call(
        &operator,
        "POST",
        "/api/targets",
        Some(target("db-01", 'C')),
    );
    let other_path = format!("/api/targets/{}", other["id"].as_str().unwrap());
    // A reusable key, granted the role: its own target only, and never a change.
    let (_, agent) = create_key(
        &n1,
        json!({"name": "db-01 bootstrap", "scope": "register-target", "target": "db-02",
               "roles": ["db"], "reusable": true}),
    );
    assert_eq!(call(&agent, "GET", &other_path, None).0, 403);
    refused(
        &agent,
        "PATCH",
        &other_path,
        Some(json!({"roles": []})),
        "operator",
    );
    let (status, db2) = call(
        &agent,
        "POST",
        "/api/targets",
        Some(json!({"name": "db-02",
        "comms": "polling", "thumbprint": thumb('D'), "roles": ["db"]})),
    );
    assert_eq!(status, 201, "{db2}");
    let db2_path = format!("/api/targets/{}", db2["id"].as_str().unwrap());
    assert_eq!(call(&agent, "GET", &db2_path, None).0, 200);
    refused(
        &agent,
        "PATCH",
        &db2_path,
        Some(json!({"roles": ["db", "web"]})),
        "operator",
    );
    refused(&agent, "GET", "/api/targets", None, "reader");
    refused(&agent, "DELETE", &db2_path, None, "operator");
    refused(&agent, "GET", "/api/tasks", None, "reader");

    // Listed with scope, prefix, target and expiry; never the key.
    let (_, listed) = n1.get("/api/keys");
    for key in [&reader, &deployer, &operator, &agent] {
        assert!(
            !listed.to_string().contains(key.as_str()),
            "a key is never listed"
        );
    }
    let items = listed["items"].as_array().unwrap();
    let ci = items.iter().find(|k| k["name"] == "ci").unwrap();
    assert_eq!(
        (ci["scope"].as_str(), ci["expired"].as_bool()),
        (Some("deployer"), Some(false))
    );
    assert!(ci["expires_at"].as_str().is_some(), "{ci}");
    let bootstraps: Vec<&Value> = items
        .iter()
        .filter(|k| k["scope"] == "register-target")
        .collect();
    assert_eq!(
        bootstraps.len(),
        1,
        "the single-use key is gone: {bootstraps:?}"
    );
    assert_eq!(
        (
            &bootstraps[0]["target"],
            &bootstraps[0]["roles"],
            &bootstraps[0]["reusable"]
        ),
        (&json!("db-02"), &json!(["db"]), &json!(true))
    );
    // Audit: who made each key, naming the key they used.
    let (_, events) = n1.get("/api/events?limit=50");
    let made = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "api_key.create")
        .collect::<Vec<_>>();
    assert_eq!(made.len(), 5, "{events}");
    assert!(
        made.iter().all(|e| e["actor"] == "admin (ApiKeys-1)"),
        "{events}"
    );

    // Bad requests name the field.
    for (body, field) in [
        (json!({"name": "x", "scope": "root"}), "scope"),
        (
            json!({"name": "x", "scope": "reader", "expires_in": "5x"}),
            "expires_in",
        ),
        (json!({"name": "x", "scope": "register-target"}), "target"),
        (json!({"name": "", "scope": "reader"}), "name"),
        (json!({"name": "x", "scope": "reader", "extra": 1}), "extra"),
    ] {
        let (status, err) = n1.post("/api/keys", &body);
        assert_eq!(status, 400, "{body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {err}"
        );
    }

    // An expired key is refused, saying so, on every node within a second.
    pg.psql("UPDATE api_keys SET expires_at_ms = 0 WHERE name = 'ci'")
        .unwrap();
    wait_until(
        "the expired key to be refused",
        Duration::from_secs(5),
        || {
            let (status, err) = call(&deployer, "GET", "/api/tasks", None);
            (status == 401).then_some(err)
        },
    );
    let (_, err) = call(&deployer, "GET", "/api/tasks", None);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired at 1970-01-01"),
        "{err}"
    );

    // A key stored by an older release (bare SHA-256, before scopes) still works, as admin, and
    // is stored as HMAC-SHA-256 from its first use.
    let old_key = "API-OldKeyFromBeforeSchemaFive0123456";
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(old_key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    pg.psql(&format!(
        "INSERT INTO api_keys (name, key_hash, created_at_ms) VALUES ('legacy', '{sha}', 0)"
    ))
    .unwrap();
    assert_eq!(call(old_key, "GET", "/api/keys", None).0, 200);
    let stored = pg
        .psql("SELECT algorithm, scope FROM api_keys WHERE name = 'legacy'")
        .unwrap();
    // Stored under the HMAC, naming the secret that made it (`hmac-sha256/` and its id).
    let (algorithm, scope) = stored.trim().split_once('|').unwrap();
    assert!(
        algorithm.starts_with("hmac-sha256/") && algorithm.len() == 20 && scope == "admin",
        "{stored}"
    );
    assert!(
        !pg.psql("SELECT key_hash FROM api_keys")
            .unwrap()
            .contains(&sha),
        "the SHA-256 is gone"
    );
    assert_eq!(
        call(old_key, "GET", "/api/keys", None).0,
        200,
        "and still works"
    );
    assert!(
        n1.unexpected_errors().is_empty(),
        "{:?}",
        n1.unexpected_errors()
    );
}

#[test]
fn server_command_creates_scoped_expiring_keys_and_refuses_bad_ones() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 0));
    let out = run_ok(server_cmd(
        &cluster,
        &[
            "api-key",
            "create",
            "--name",
            "grafana",
            "--scope",
            "reader",
            "--expires-in",
            "30d",
        ],
    ));
    assert!(out.contains("created reader API key \"grafana\""), "{out}");
    let key = out.lines().last().unwrap().trim().to_owned();
    assert_eq!(n1.request_with_key(&key, "GET", "/api/nodes", None).0, 200);
    assert_eq!(
        n1.request_with_key(&key, "POST", "/api/tasks", Some("{}"))
            .0,
        403
    );
    for (args, want) in [
        (&["--scope", "root"][..], "unknown scope"),
        (
            &["--scope", "reader", "--expires-in", "forever"][..],
            "expires_in",
        ),
        (&["--scope", "register-target"][..], "target"),
    ] {
        let mut all = vec!["api-key", "create", "--name", "x"];
        all.extend_from_slice(args);
        let (st, _, err) = run_to_exit(server_cmd(&cluster, &all), MIN).unwrap();
        assert!(!st.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // The CLI does the same over REST with an admin key.
    let (ok, out, err) = cli(
        &cluster,
        &n1,
        &[
            "api-key",
            "create",
            "--name",
            "deploy-bot",
            "--scope",
            "deployer",
            "--expires-in",
            "12h",
        ],
    );
    assert!(ok, "{err}");
    let bot = out.lines().last().unwrap().trim().to_owned();
    assert!(bot.starts_with("API-") && out.contains("deployer"), "{out}");
    assert_eq!(
        n1.request_with_key(
            &bot,
            "POST",
            "/api/tasks",
            Some(r#"{"kind":"Sleep","arguments":{"duration_ms":0}}"#)
        )
        .0,
        201
    );
    let (ok, _, err) = cli(
        &cluster,
        &n1,
        &["api-key", "create", "--name", "x", "--scope", "root"],
    );
    assert!(!ok && err.contains("unknown scope"), "{err}");
}

#[test]
fn the_master_key_is_rotated_while_the_cluster_runs() {
    let cluster = Cluster::new(Database::Postgres).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let (_, ci) = create_key(&n1, json!({"name": "ci", "scope": "deployer"}));
    let (_, identity) = n1.get("/api/cluster/identity");
    let new_key = cluster.dir().join("new-master.key");
    let out = run_ok(server_cmd(
        &cluster,
        &[
            "master-key",
            "rotate",
            "--generate",
            new_key.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("re-encrypted 3 secret(s)"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&new_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the new key file is private from creation");
    let new_b64 = std::fs::read_to_string(&new_key).unwrap();
    // The running node keeps working: keys, tasks.
    assert_eq!(n1.request_with_key(&ci, "GET", "/api/tasks", None).0, 200);
    let id = n1.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 0}}));
    n1.wait_finished(&id, MIN);
    // A node started with the old key refuses, saying why.
    let mut stale = server_cmd(&cluster, &["check"]);
    stale.env("CUTTLE_MASTER_KEY", &cluster.master_key);
    let (st, _, err) = run_to_exit(stale, MIN).unwrap();
    assert!(!st.success());
    assert!(err.contains("master key does not match"), "{err}");
    // One started with the new key is the same cluster: same certificate, same API keys.
    let mut opts = NodeOptions::named("n2", 1);
    opts.env
        .push(("CUTTLE_MASTER_KEY".into(), new_b64.trim().to_owned()));
    let n2 = cluster.start(opts);
    assert_eq!(
        n2.get("/api/cluster/identity").1["thumbprint"],
        identity["thumbprint"]
    );
    assert_eq!(n2.request_with_key(&ci, "GET", "/api/tasks", None).0, 200);
    let id = n2.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 0}}));
    n2.wait_finished(&id, MIN);
    // Rotating to the key in use, or from a file that does not hold a key, changes nothing.
    let mut again = server_cmd(
        &cluster,
        &[
            "master-key",
            "rotate",
            "--new-key-file",
            new_key.to_str().unwrap(),
        ],
    );
    again.env("CUTTLE_MASTER_KEY", new_b64.trim());
    let (st, _, err) = run_to_exit(again, MIN).unwrap();
    assert!(!st.success() && err.contains("the one in use"), "{err}");
    let junk = cluster.dir().join("junk.key");
    std::fs::write(&junk, "not a key").unwrap();
    let mut bad = server_cmd(
        &cluster,
        &[
            "master-key",
            "rotate",
            "--new-key-file",
            junk.to_str().unwrap(),
        ],
    );
    bad.env("CUTTLE_MASTER_KEY", new_b64.trim());
    let (st, _, err) = run_to_exit(bad, MIN).unwrap();
    assert!(!st.success() && err.contains("junk.key"), "{err}");
    assert_eq!(n2.request_with_key(&ci, "GET", "/api/tasks", None).0, 200);
}

/// "`/metrics` (API key required)": no key, no metrics; a reader's key reads them.
#[test]
fn metrics_need_a_key() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let agent = cuttle_e2e::agent(None);
    let status = agent
        .get(&n1.url("/metrics"))
        .call()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 401, "metrics without a key");
    let reader = n1.key_with_scope("scraper", "reader");
    let mut resp = agent
        .get(&n1.url("/metrics"))
        .header("Authorization", &format!("Bearer {reader}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.body_mut().read_to_string().unwrap();
    assert!(
        text.contains("cuttle_db_commits_total ")
            && text.contains("cuttle_node_running_tasks{node=\"n1\"}"),
        "{text}"
    );
}

/// "A weak `CUTTLE_ADMIN_API_KEY` is refused": the first start on an empty database exits,
/// saying why, and never prints the key.
#[test]
fn a_weak_first_admin_key_is_refused_at_start() {
    let cluster = Cluster::sqlite();
    let weak = "password1234";
    let mut cmd = cluster.command(
        &NodeOptions::named("n1", 0),
        cuttle_e2e::free_port(),
        cuttle_e2e::free_port(),
    );
    cmd.env("CUTTLE_ADMIN_API_KEY", weak);
    let (status, _, err) = run_to_exit(cmd, MIN).unwrap();
    assert!(!status.success());
    assert!(err.contains("CUTTLE_ADMIN_API_KEY is too weak"), "{err}");
    assert!(!err.contains(weak), "the key is never printed: {err}");
}

/// The deployment model from the CLI, by name: environments, a project, its variables — a
/// sensitive value from standard input only, never from the command line.
#[test]
fn the_cli_makes_environments_projects_and_variables_by_name() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 0));
    let ok = |args: &[&str]| {
        let (ok, out, err) = cli(&cluster, &n1, args);
        assert!(ok, "cuttle {args:?}: {err}");
        out
    };
    ok(&["environment", "create", "Development"]);
    ok(&[
        "environment",
        "create",
        "Production",
        "--description",
        "live",
    ]);
    let listed = ok(&["--output", "json", "environment", "list"]);
    assert!(
        listed.contains("Development") && listed.contains("live"),
        "{listed}"
    );
    ok(&["project", "create", "Shop"]);
    assert!(ok(&["project", "list"]).contains("Shop"));
    ok(&["variable", "set", "shop", "ConnStr", "Server=dev"]);
    ok(&[
        "variable",
        "set",
        "Shop",
        "ConnStr",
        "Server=prod",
        "--environment",
        "production",
    ]);
    let (refused, _, err) = cli(
        &cluster,
        &n1,
        &[
            "variable",
            "set",
            "Shop",
            "Password",
            "s3cret-pw",
            "--sensitive",
        ],
    );
    assert!(
        !refused && err.contains("not taken from the command line"),
        "{err}"
    );
    let mut set = Command::new(cli_binary());
    set.args(["variable", "set", "Shop", "Password", "--sensitive"])
        .env("CUTTLE_SERVER", n1.url(""))
        .env("CUTTLE_API_KEY", &cluster.api_key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = set.spawn().unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Pa55-from-stdin\n")
        .unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    // Set again, unscoped: replaced, not added.
    ok(&["variable", "set", "Shop", "ConnStr", "Server=dev2"]);
    let (_, projects) = n1.get("/api/spaces/default/projects");
    let shop = projects["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, envs) = n1.get("/api/spaces/default/environments");
    let prod = envs["items"][1]["id"].clone();
    let (_, vars) = n1.get(&format!("/api/spaces/default/projects/{shop}/variables"));
    let vars = vars["variables"].as_array().unwrap().clone();
    assert_eq!(vars.len(), 3, "{vars:?}");
    let by = |name: &str, scoped: bool| {
        vars.iter()
            .find(|v| {
                let envs = v["scope"]["environments"].as_array().map_or(0, Vec::len);
                v["name"] == name && (envs > 0) == scoped
            })
            .unwrap_or_else(|| panic!("{name} in {vars:?}"))
            .clone()
    };
    assert_eq!(by("ConnStr", false)["value"], "Server=dev2");
    let prod_conn = by("ConnStr", true);
    assert_eq!(
        (&prod_conn["value"], &prod_conn["scope"]["environments"]),
        (&json!("Server=prod"), &json!([prod]))
    );
    let password = by("Password", false);
    assert_eq!(
        (&password["sensitive"], &password["value"]),
        (&json!(true), &Value::Null)
    );
    let listed = ok(&["variable", "list", "Shop"]);
    assert!(!listed.contains("Pa55-from-stdin"), "{listed}");
    ok(&["project", "delete", "Shop"]);
    assert!(!ok(&["project", "list"]).contains("Shop"));
}
