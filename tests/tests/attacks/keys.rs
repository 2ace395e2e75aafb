//! Attacks of the second security review: H-1 (register-target grants) and the low findings about
//! keys and what the cluster shows: `--dump-config`, the identity, the rotation of the data keys.

use super::*;

/// H-1: a register-target key puts its target only where it was made to, registers once, and
/// never changes a target afterwards — its own or another's.
#[test]
fn h1_a_register_target_key_claims_only_what_it_was_granted() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    for env in ["Test", "Production"] {
        n1.post("/api/spaces/default/environments", &json!({"name": env}));
    }
    let thumb = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    let (_, prod_web) = n1.post(
        "/api/targets",
        &json!({"name": "prod-web", "environments": ["Production"], "roles": ["web"],
                "comms": "polling", "thumbprint": thumb('A'), "new_roles": true}),
    );
    let prod_path = format!("/api/targets/{}", prod_web["id"].as_str().unwrap());
    let (_, key) = n1.create_key(
        &json!({"name": "web-9 bootstrap", "scope": "register-target",
        "target": "web-9", "environments": ["Test"], "roles": ["web"]}),
    );
    let dir = cuttle_e2e::temp_dir("attack-register");
    let t = cuttle_e2e::Tentacle::new(dir.path(), "web-9");
    let server = n1.url("");
    let register = |envs: &[&str], role: &str| {
        let mut args = vec![
            "register",
            "--server",
            &server,
            "--api-key",
            &key,
            "--name",
            "web-9",
            "--role",
            role,
            "--comms",
            "polling",
        ];
        for e in envs {
            args.extend(["--environment", e]);
        }
        t.try_command(&args)
    };
    // The attack: Production, to receive its deployments and their secrets; or another role.
    let (ok, out, err) = register(&["Production"], "web");
    assert!(!ok && err.contains("[Production]"), "{out}{err}");
    let (ok, out, err) = register(&["Test"], "db");
    assert!(!ok && err.contains("the roles [db]"), "{out}{err}");
    // What it was made for works, once.
    let (ok, out, err) = register(&["Test"], "web");
    assert!(ok, "{out}{err}");
    let (ok, _, err) = register(&["Test"], "web");
    assert!(!ok && err.contains("401"), "the key is used up: {err}");
    // Nor does a key that may register again change anything afterwards.
    let (_, again) = n1.create_key(
        &json!({"name": "api-1 bootstrap", "scope": "register-target",
        "target": "api-1", "environments": ["Test"], "roles": ["api"], "reusable": true}),
    );
    let (status, own) = n1.request_with_key(
        &again,
        "POST",
        "/api/targets",
        Some(
            &json!({"name": "api-1", "environments": ["Test"], "roles": ["api"],
                    "comms": "polling", "thumbprint": thumb('B')})
            .to_string(),
        ),
    );
    assert_eq!(status, 201, "{own}");
    let own_path = format!("/api/targets/{}", own["id"].as_str().unwrap());
    for (path, change) in [
        (&own_path, json!({"environments": ["Production"]})),
        (
            &own_path,
            json!({"endpoint": "10.0.0.1:22", "comms": "listening"}),
        ),
        (&prod_path, json!({"thumbprint": thumb('C')})),
        (&prod_path, json!({"environments": ["Test"]})),
    ] {
        let (status, err) = n1.request_with_key(&again, "PATCH", path, Some(&change.to_string()));
        assert_eq!(status, 403, "{path} {change}: {err}");
    }
    let (_, prod) = n1.get(&prod_path);
    assert_eq!(
        (&prod["thumbprint"], &prod["environments"]),
        (&json!(thumb('A')), &json!(["Production"]))
    );
}

/// Low: `--dump-config` shows the database URL without its password, whatever its form.
#[test]
fn low_dump_config_never_prints_the_database_password() {
    let cluster = Cluster::sqlite();
    for url in [
        "postgres://cuttle:Pa55w0rd-dump@db.internal:5432/cuttle",
        "host=db.internal user=cuttle password=Pa55w0rd-dump dbname=cuttle",
        "Server=tcp:sql.internal,1433;Database=cuttle;User Id=cuttle;Password=Pa55w0rd-dump;Encrypt=true",
    ] {
        let out = cluster
            .server_command(&["--dump-config", "run"])
            .env("CUTTLE_DATABASE_URL", url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("database_url"), "{text}");
        assert!(!text.contains("Pa55w0rd-dump"), "{text}");
    }
}

/// Low: `/api/cluster/identity` tells a caller without a key the cluster's thumbprint (which
/// every gateway handshake presents anyway) and nothing else — no gateway address, and never a
/// database error naming its host.
#[test]
fn low_the_identity_shows_gateways_only_to_a_key_and_never_the_database() {
    let cluster = Cluster::postgres();
    let n1 = cluster.start(NodeOptions {
        expected_errors: vec!["heartbeat".into()],
        ..NodeOptions::named("n1", 1)
    });
    let anonymous = || {
        let mut r = cuttle_e2e::agent(None)
            .get(&n1.url("/api/cluster/identity"))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap())
    };
    let (status, body) = anonymous();
    assert_eq!(status, 200);
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        shown["thumbprint"].is_string() && shown.get("gateways").is_none(),
        "{body}"
    );
    let (_, with_key) = n1.get("/api/cluster/identity");
    assert_eq!(
        with_key["gateways"].as_array().map(Vec::len),
        Some(1),
        "{with_key}"
    );
    // The database away: the thumbprint still, and no word of where the database is.
    cluster.stop_database().unwrap();
    let host_port = cluster
        .db_url
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let (status, body) = anonymous();
    assert_eq!(status, 200, "{body}");
    let (status, body) = n1.get("/api/cluster/identity");
    assert!(!body.to_string().contains(&host_port), "{status} {body}");
    cluster.start_database().unwrap();
}

/// Low (data keys): a master-key rotation re-sealed the variable key and the HMAC secret without
/// changing them, so whoever had read them once (with the old master key and the database)
/// still opened every sensitive value and signed what nodes trust. `variable-key rotate` and
/// `api-key-secret rotate` / `finish` replace them while the cluster runs: the stolen keys open
/// no value the database holds and sign nothing a node shows, while every value, release,
/// published runbook and API key in use keeps working.
#[test]
fn low_rotated_data_keys_leave_stolen_ones_opening_and_signing_nothing() {
    use cuttle_e2e::web::{send, session_of};
    use cuttle_storage::{ApiKeyHasher, MasterKey};
    use sha2::Digest;
    let cluster = Cluster::new(cuttle_e2e::Database::Postgres).unwrap();
    let pg = cluster.postgres_server().unwrap();
    let mut n1 = cluster.start(NodeOptions::named("n1", 1));
    let secret = "correct-horse-battery-staple";
    let digest: String = sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let steps = json!([{"name": "Use", "action": {"type": "script",
        "script": "printf %s '#{Password}' | sha256sum"}}]);
    let (t, log) = deploy_once(
        &n1,
        steps.clone(),
        json!([{"name": "Password", "value": secret, "sensitive": true}]),
    );
    assert_eq!(t["state"], "Success", "{t}\n{log}");
    assert!(log.contains(&digest), "{log}");
    let (_, projects) = n1.get("/api/spaces/default/projects");
    let project = projects["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, runbook) = n1.post(
        "/api/spaces/default/runbooks",
        &json!({"name": "Check", "project_id": project}),
    );
    assert_eq!(status, 201, "{runbook}");
    let runbook = format!(
        "/api/spaces/default/runbooks/{}",
        runbook["id"].as_str().unwrap()
    );
    let (status, saved) = n1.request(
        "PUT",
        &format!("{runbook}/process"),
        Some(&json!({"version": 1, "steps": steps}).to_string()),
    );
    assert_eq!(status, 200, "{saved}");
    let (status, published) = n1.post(&format!("{runbook}/publish"), &json!({}));
    assert_eq!(status, 200, "{published}");
    // A project deleted since: its release stays, and so does its sealed value.
    let (_, old) = n1.post("/api/spaces/default/projects", &json!({"name": "Retired"}));
    let old = format!(
        "/api/spaces/default/projects/{}",
        old["id"].as_str().unwrap()
    );
    let (status, saved) = n1.request(
        "PUT",
        &format!("{old}/variables"),
        Some(
            &json!({"version": 1, "variables": [
                {"name": "Password", "value": "retired-password-1", "sensitive": true}]})
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{saved}");
    let (status, release) = n1.post(&format!("{old}/releases"), &json!({"version": "0.9.0"}));
    assert_eq!(status, 201, "{release}");
    assert_eq!(n1.request("DELETE", &old, None).0, 204);
    let ci = n1.key_with_scope("ci", "deployer");
    let idle = n1.key_with_scope("idle", "reader");

    // The attacker read the database and the master key once: the data keys are theirs.
    let setting = |name: &str| {
        pg.psql(&format!("SELECT value FROM settings WHERE key = '{name}'"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let old_master = MasterKey::parse(&cluster.master_key).unwrap();
    let stolen_variable_b64 = String::from_utf8(
        old_master
            .decrypt(&setting("variable_encryption_key"))
            .unwrap(),
    )
    .unwrap();
    let stolen_variable_key = MasterKey::parse(&stolen_variable_b64).unwrap();
    let stolen_secret = old_master.decrypt(&setting("api_key_hmac_key")).unwrap();
    let stolen_hasher = ApiKeyHasher::from_secrets(&stolen_secret, None).unwrap();
    let ciphertexts = || -> Vec<String> {
        let rows = pg
            .psql(
                "SELECT body FROM documents WHERE kind IN ('Project', 'Runbook') \
                 UNION ALL SELECT snapshot FROM releases",
            )
            .unwrap();
        let mut found = Vec::new();
        for row in rows.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(row).unwrap();
            collect_ciphertexts(&v, &mut found);
        }
        found
    };
    let before = ciphertexts();
    assert_eq!(
        before.len(),
        4,
        "the project, its release, the published runbook, a deleted project's release: {before:?}"
    );
    assert!(
        before
            .iter()
            .all(|c| stolen_variable_key.decrypt(c).is_ok()),
        "the stolen key opens every value"
    );
    let forged = "Your cluster was compromised: call 555-0100";
    let forged_seal = &stolen_hasher.hash(&format!("ui-message {forged}"))[..32];
    let forged_link = format!(
        "/ui/nodes?message={}&seal={forged_seal}",
        forged.replace(' ', "+").replace(':', "%3A")
    );
    let page_of = |n: &cuttle_e2e::Node, link: &str| {
        let signed = send(
            n,
            "POST",
            "/ui/sign-in",
            None,
            Some(&format!("api_key={}", cluster.api_key)),
            &[],
        );
        let cookie = session_of(&signed.set_cookie);
        send(n, "GET", link, Some(&cookie), None, &[]).body
    };
    assert!(
        page_of(&n1, &forged_link).contains("555-0100"),
        "the stolen secret signs"
    );

    // The operator rotates the master key; that alone changes neither data key.
    let new_key = cluster.dir().join("new-master.key");
    let (ok, out) = cluster.run_server(
        &[
            "master-key",
            "rotate",
            "--generate",
            new_key.to_str().unwrap(),
        ],
        "",
    );
    assert!(ok, "{out}");
    let new_master = std::fs::read_to_string(&new_key).unwrap().trim().to_owned();
    let with_new_key = |args: &[&str]| {
        let mut cmd = cluster.server_command(args);
        cmd.env("CUTTLE_MASTER_KEY", &new_master);
        cuttle_e2e::run_to_exit(cmd, MIN).unwrap()
    };
    // Not while a node holds the old master key: it could not read the new data keys. Until
    // it is restarted it seals no new value and makes no key, saying why.
    let (st, _, err) = with_new_key(&["variable-key", "rotate"]);
    assert!(!st.success() && err.contains("n1"), "{err}");
    let (_, vars) = n1.get(&format!("/api/spaces/default/projects/{project}/variables"));
    let (status, refused) = n1.request(
        "PUT",
        &format!("/api/spaces/default/projects/{project}/variables"),
        Some(
            &json!({"version": vars["version"], "variables": [
                {"name": "Password", "value": "while-outdated", "sensitive": true}]})
            .to_string(),
        ),
    );
    assert_eq!(status, 503, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("restart it with the new master key"),
        "{refused}"
    );
    let (status, refused) = n1.post("/api/keys", &json!({"name": "late", "scope": "reader"}));
    assert_eq!(status, 503, "{refused}");
    n1.terminate();
    n1.wait_exit(MIN).unwrap();
    n1.opts
        .env
        .push(("CUTTLE_MASTER_KEY".into(), new_master.clone()));
    cluster.restart(&mut n1);
    assert!(
        ciphertexts()
            .iter()
            .all(|c| stolen_variable_key.decrypt(c).is_ok()),
        "a master-key rotation alone leaves every value open to the stolen key"
    );

    let (st, out, err) = with_new_key(&["variable-key", "rotate"]);
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("4 sensitive value(s) re-sealed"), "{out}");
    // A web session signed in before the secret's rotation ends with it.
    let signed = send(
        &n1,
        "POST",
        "/ui/sign-in",
        None,
        Some(&format!("api_key={}", cluster.api_key)),
        &[],
    );
    let old_session = session_of(&signed.set_cookie);
    assert_eq!(
        send(&n1, "GET", "/ui/nodes", Some(&old_session), None, &[]).status,
        200
    );
    let (st, out, err) = with_new_key(&["api-key-secret", "rotate"]);
    assert!(st.success(), "{out}{err}");
    cuttle_e2e::wait_until("the old web session to end", MIN, || {
        (send(&n1, "GET", "/ui/nodes", Some(&old_session), None, &[]).status == 303).then_some(())
    });

    let after = ciphertexts();
    assert_eq!(after.len(), 4);
    for c in &after {
        assert!(
            stolen_variable_key.decrypt(c).is_err(),
            "the stolen key opens {c}"
        );
    }
    assert_eq!(
        setting("variable_encryption_key_previous"),
        "",
        "the old key is gone"
    );
    // A value written now, by the running node, is sealed with the new key too.
    let (_, vars) = n1.get(&format!("/api/spaces/default/projects/{project}/variables"));
    let kept = vars["variables"][0]["id"].as_str().unwrap().to_owned();
    let (status, saved) = n1.request(
        "PUT",
        &format!("/api/spaces/default/projects/{project}/variables"),
        Some(
            &json!({"version": vars["version"], "variables": [
                {"id": kept, "name": "Password", "sensitive": true},
                {"name": "Token", "value": "tok-after-rotation", "sensitive": true}]})
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{saved}");
    let now = ciphertexts();
    assert_eq!(now.len(), 5);
    assert!(now.iter().all(|c| stolen_variable_key.decrypt(c).is_err()));
    // The old release and the published runbook still deploy the right value.
    let env = production(&n1);
    let (_, releases) = n1.get(&format!("/api/spaces/default/projects/{project}/releases"));
    let release = releases["items"][0]["id"].as_str().unwrap();
    let (status, d) = n1.request_with_key(
        &ci,
        "POST",
        "/api/spaces/default/deployments",
        Some(&json!({"release_id": release, "environment_id": env}).to_string()),
    );
    assert_eq!(status, 201, "the ci key still works: {d}");
    let task = d["task_id"].as_str().unwrap();
    let t = n1.wait_finished(task, MIN);
    let log = n1.task_log(task);
    assert!(
        t["state"] == "Success" && log.contains(&digest),
        "{t}\n{log}"
    );
    let (status, run) = n1.post(&format!("{runbook}/runs"), &json!({"environment_id": env}));
    assert_eq!(status, 201, "{run}");
    let task = run["id"].as_str().unwrap().to_owned();
    let t = n1.wait_finished(&task, MIN);
    let log = n1.task_log(&task);
    assert!(
        t["state"] == "Success" && log.contains(&digest),
        "{t}\n{log}"
    );

    // The stolen secret signs nothing a node shows, and no key is stored under it.
    assert!(!page_of(&n1, &forged_link).contains("555-0100"));
    for key in [&ci, &cluster.api_key] {
        let stale = stolen_hasher.hash(key);
        let n = pg
            .psql(&format!(
                "SELECT COUNT(*) FROM api_keys WHERE key_hash = '{stale}'"
            ))
            .unwrap();
        assert_eq!(
            n.trim(),
            "0",
            "a key in use is re-hashed under the new secret"
        );
    }
    // A key not used since waits: `finish` says which, and revokes it only when told to.
    let (st, out, _) = with_new_key(&["api-key-secret", "status"]);
    assert!(
        st.success() && out.contains("idle") && !out.contains("(ci,"),
        "{out}"
    );
    let (st, _, err) = with_new_key(&["api-key-secret", "finish"]);
    assert!(!st.success() && err.contains("idle"), "{err}");
    let (st, out, err) = with_new_key(&["api-key-secret", "finish", "--force"]);
    assert!(st.success() && out.contains("1 key(s)"), "{out}{err}");
    assert_eq!(setting("api_key_hmac_key_previous"), "");
    let under_old = pg
        .psql(&format!(
            "SELECT COUNT(*) FROM api_keys WHERE algorithm IN ('hmac-sha256', 'hmac-sha256/{}')",
            stolen_hasher.secret_id()
        ))
        .unwrap();
    assert_eq!(
        under_old.trim(),
        "0",
        "no key is left under the stolen secret"
    );
    cuttle_e2e::wait_until("the idle key to stop working", MIN, || {
        (n1.request_with_key(&idle, "GET", "/api/tasks", None).0 == 401).then_some(())
    });
    assert_eq!(n1.request_with_key(&ci, "GET", "/api/tasks", None).0, 200);

    // A variable-key rotation interrupted after it stored the new key (the old one still kept
    // as the previous, a value still under it) is finished by the next run, not restarted.
    let new_master_key = MasterKey::parse(&new_master).unwrap();
    let current = setting("variable_encryption_key");
    let previous = new_master_key
        .encrypt(stolen_variable_b64.as_bytes())
        .unwrap();
    let late = stolen_variable_key.encrypt(b"interrupted").unwrap();
    pg.psql(&format!(
        "UPDATE settings SET value = '{previous}' WHERE key = 'variable_encryption_key_previous'; \
         UPDATE documents SET body = jsonb_set(body::jsonb, '{{variables,0,ciphertext}}', \
             to_jsonb('{late}'::text))::text WHERE kind = 'Project'"
    ))
    .unwrap();
    assert!(ciphertexts()
        .iter()
        .any(|c| stolen_variable_key.decrypt(c).is_ok()));
    let (st, out, err) = with_new_key(&["variable-key", "rotate"]);
    assert!(st.success(), "{out}{err}");
    assert!(
        out.contains("interrupted") && out.contains("1 sensitive value(s) re-sealed"),
        "{out}"
    );
    assert_eq!(
        setting("variable_encryption_key"),
        current,
        "the same new key"
    );
    assert_eq!(setting("variable_encryption_key_previous"), "");
    assert!(ciphertexts()
        .iter()
        .all(|c| stolen_variable_key.decrypt(c).is_err()));
}

/// Every `ciphertext` of a sensitive variable in a stored document or snapshot.
fn collect_ciphertexts(v: &serde_json::Value, found: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let (Some(true), Some(c)) = (
                m.get("sensitive").and_then(|s| s.as_bool()),
                m.get("ciphertext").and_then(|c| c.as_str()),
            ) {
                found.push(c.to_owned());
            }
            m.values().for_each(|c| collect_ciphertexts(c, found));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| collect_ciphertexts(c, found)),
        _ => {}
    }
}
