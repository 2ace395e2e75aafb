//! The web UI over plain HTTP: signing in on one node and reading pages from another, the
//! cookie's attributes, CSRF and cross-site refusals, the security headers, and what a person
//! can put on a page rendered as text. (A real browser drives the pages in `browser.rs`; users with passwords are in `ui_users.rs`.)

use cuttle_e2e::web::{form_token, send, session_of};
use cuttle_e2e::{Cluster, Database, NodeOptions};
use serde_json::json;

#[test]
fn a_sign_in_on_one_node_opens_the_nodes_page_on_another_and_ends_with_its_key() {
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let n2 = cluster.start(NodeOptions::named("n2", 0));

    // Not signed in: the address the server prints leads to the sign-in page.
    let home = send(&n1, "GET", "/", None, None, &[]);
    assert_eq!((home.status, home.location.as_str()), (303, "/ui/nodes"));
    let nodes = send(&n1, "GET", "/ui/nodes", None, None, &[]);
    assert_eq!(
        (nodes.status, nodes.location.as_str()),
        (303, "/ui/sign-in")
    );
    let page = send(&n1, "GET", "/ui/sign-in", None, None, &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<label for=\"api_key\">API key</label>"),
        "{}",
        page.body
    );
    assert!(
        page.csp.contains("script-src 'self'") && !page.csp.contains("unsafe-inline"),
        "{}",
        page.csp
    );
    let css = send(&n2, "GET", "/ui/assets/cuttle.css", None, None, &[]);
    assert!(css.status == 200 && css.body.contains("focus-visible"));

    // A key whose name is markup: it is shown as text.
    let (status, made) = n1.post(
        "/api/keys",
        &json!({"name": "<script>alert('x')</script>", "scope": "reader"}),
    );
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_owned();
    let form = format!(
        "api_key={}",
        key.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );

    let wrong = send(&n1, "POST", "/ui/sign-in", None, Some("api_key=nope"), &[]);
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("unknown, revoked or expired"),
        "{}",
        wrong.body
    );
    assert!(wrong.set_cookie.is_empty());
    let cross = send(
        &n1,
        "POST",
        "/ui/sign-in",
        None,
        Some(&form),
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(cross.status, 403, "a sign-in posted from another site");

    let signed = send(&n1, "POST", "/ui/sign-in", None, Some(&form), &[]);
    assert_eq!(
        (signed.status, signed.location.as_str()),
        (303, "/ui/nodes")
    );
    assert!(
        signed.set_cookie.contains("HttpOnly") && signed.set_cookie.contains("SameSite=Strict"),
        "{}",
        signed.set_cookie
    );
    let cookie = session_of(&signed.set_cookie);
    assert!(
        !cookie.contains(&key),
        "the key is sealed, not stored in clear"
    );

    // The other node accepts the session: the page lists both nodes, the name as text.
    let page = send(&n2, "GET", "/ui/nodes", Some(&cookie), None, &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    for name in ["n1", "n2"] {
        assert!(
            page.body
                .contains(&format!("<th scope=\"row\">{name}</th>")),
            "{}",
            page.body
        );
    }
    assert!(
        (page.body.contains("&lt;script&gt;") || page.body.contains("&#60;script&#62;"))
            && !page.body.contains("<script>alert"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<main id=\"main\">") && page.body.contains("<caption>"));
    assert!(
        !page.body.contains("/ui/nodes/n1\""),
        "a reader's page offers no changes"
    );
    let token = form_token(&page.body);

    // Sign-out needs the session's own form token, from this site.
    let forged = send(
        &n1,
        "POST",
        "/ui/sign-out",
        Some(&cookie),
        Some("csrf=00000000000000000000000000000000"),
        &[],
    );
    assert_eq!(forged.status, 403);
    let cross = send(
        &n1,
        "POST",
        "/ui/sign-out",
        Some(&cookie),
        Some(&format!("csrf={token}")),
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(cross.status, 403);
    let out = send(
        &n1,
        "POST",
        "/ui/sign-out",
        Some(&cookie),
        Some(&format!("csrf={token}")),
        &[],
    );
    assert_eq!((out.status, out.location.as_str()), (303, "/ui/sign-in"));
    assert!(out.set_cookie.contains("Max-Age=0"), "{}", out.set_cookie);

    // A revoked key ends every session made with it, on every node.
    let (status, keys) = n1.get("/api/keys");
    assert_eq!(status, 200);
    let id = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "<script>alert('x')</script>")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        n1.request("DELETE", &format!("/api/keys/{id}"), None).0,
        204
    );
    cuttle_e2e::wait_until(
        "the revoked key's session to end",
        std::time::Duration::from_secs(10),
        || {
            let page = send(&n2, "GET", "/ui/nodes", Some(&cookie), None, &[]);
            (page.status == 303).then_some(())
        },
    );
    // An operator changes nodes from the page: the database and the ping show it, audited.
    let (status, op) = n1.post("/api/keys", &json!({"name": "ops", "scope": "operator"}));
    assert_eq!(status, 201, "{op}");
    let op_key = op["key"].as_str().unwrap();
    let op_form = format!(
        "api_key={}",
        op_key
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    let op_cookie =
        session_of(&send(&n2, "POST", "/ui/sign-in", None, Some(&op_form), &[]).set_cookie);
    let page = send(&n1, "GET", "/ui/nodes", Some(&op_cookie), None, &[]);
    assert!(
        page.body.contains("action=\"/ui/nodes/n2\""),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("0 makes a UI-only node"),
        "the guide's advice is inline"
    );
    let op_token = form_token(&page.body);
    let act = |form: &str| {
        send(
            &n2,
            "POST",
            "/ui/nodes/n2",
            Some(&op_cookie),
            Some(&format!("csrf={op_token}&{form}")),
            &[],
        )
    };
    let done = act("action=cap&task_cap=3");
    assert_eq!(done.status, 303);
    assert!(
        done.location.starts_with("/ui/nodes?message="),
        "{}",
        done.location
    );
    assert_eq!(n1.get("/api/nodes/n2").1["task_cap"], 3);
    assert_eq!(act("action=drain").status, 303);
    assert_eq!(n1.get("/api/nodes/n2").1["draining"], true);
    cuttle_e2e::wait_until(
        "n2's ping to say draining",
        std::time::Duration::from_secs(10),
        || (n2.ping() == 418).then_some(()),
    );
    let refused = act("action=delete");
    assert!(refused.location.contains("confirm"), "{}", refused.location);
    assert_eq!(
        n1.get("/api/nodes/n2").0,
        200,
        "not deleted without the confirmation"
    );
    assert_eq!(act("action=undrain").status, 303);
    assert_eq!(n1.get("/api/nodes/n2").1["draining"], false);
    let (_, events) = n1.get("/api/events?limit=20");
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "node.update"
                && e["actor"].as_str().unwrap().starts_with("ops ("))
    );
    let forged = send(
        &n2,
        "POST",
        "/ui/nodes/n2",
        Some(&op_cookie),
        Some("csrf=x&action=drain"),
        &[],
    );
    assert_eq!(forged.status, 403);

    // The calculator: the guide's formula, with JavaScript or without.
    let calc = send(
        &n1,
        "GET",
        "/ui/nodes?projects=50&minutes=30&window=120&nodes=2",
        Some(&op_cookie),
        None,
        &[],
    );
    assert!(
        calc.body.contains("at least <strong>13</strong>"),
        "{}",
        calc.body
    );
    assert!(
        calc.body
            .contains("<strong>9</strong> per node on 2 node(s)"),
        "{}",
        calc.body
    );
    assert!(calc.body.contains("2 cores / 4 GB RAM"));

    // A cookie that is not ours opens nothing.
    let junk = send(&n1, "GET", "/ui/nodes", Some("AAAA"), None, &[]);
    assert_eq!((junk.status, junk.location.as_str()), (303, "/ui/sign-in"));
}

#[test]
fn a_running_tasks_log_follows_live_on_a_page_served_by_another_node() {
    use std::io::{BufRead, BufReader};
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let runner = cluster.start(NodeOptions::named("runner", 1));
    let viewer = cluster.start(NodeOptions::named("viewer", 0));
    let key = runner.api_key();
    let form = format!(
        "api_key={}",
        key.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    let cookie =
        session_of(&send(&viewer, "POST", "/ui/sign-in", None, Some(&form), &[]).set_cookie);
    let task = runner.enqueue(json!({
        "kind": "AdHocScript",
        "description": "<script>alert('task')</script>",
        "arguments": {"script": "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done"},
    }));
    cuttle_e2e::wait_until(
        "the script to start",
        std::time::Duration::from_secs(30),
        || runner.task_log(&task).contains("tick 1").then_some(()),
    );

    // The page, from the node that does not run the task: escaped, and live.
    let page = send(
        &viewer,
        "GET",
        &format!("/ui/tasks/{task}"),
        Some(&cookie),
        None,
        &[],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        !page.body.contains("<script>alert") && page.body.contains("alert(&#39;task&#39;)"),
        "{}",
        page.body
    );
    assert!(page.body.contains("data-live="), "{}", page.body);
    let at = page.body.find("offset=").unwrap() + 7;
    let offset: String = page.body[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();

    // The events the page's script follows: the lines written after the page, then the end.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let mut resp = agent
        .get(&viewer.url(&format!("/ui/tasks/{task}/log/events?offset={offset}")))
        .header("Cookie", &format!("cuttle_session={cookie}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let reader = BufReader::new(resp.body_mut().as_reader());
    let mut seen = String::new();
    let mut lines = reader.lines();
    let mut last_id = String::new();
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        if line == "event: end" {
            // A browser dispatches no event without data.
            assert_eq!(lines.next().unwrap().unwrap(), "data: done");
            break;
        }
        if let Some(id) = line.strip_prefix("id: ") {
            last_id = id.to_owned();
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(seen.contains("tick 6"), "{seen}");
    assert!(
        !seen.contains("tick 1\n") || !page.body.contains("tick 1"),
        "lines already shown are not sent again"
    );
    assert_eq!(runner.task(&task)["state"], "Success");
    // A browser coming back with the last event's id goes on from there: nothing again.
    let mut resp = agent
        .get(&viewer.url(&format!("/ui/tasks/{task}/log/events?offset={offset}")))
        .header("Cookie", &format!("cuttle_session={cookie}"))
        .header("Last-Event-ID", &last_id)
        .call()
        .unwrap();
    let again = resp.body_mut().read_to_string().unwrap();
    assert_eq!(
        again.trim(),
        "event: end\ndata: done",
        "resumed at {last_id}"
    );

    // The list shows it; a finished task's page is whole and not live.
    let list = send(
        &viewer,
        "GET",
        "/ui/tasks?state=Success",
        Some(&cookie),
        None,
        &[],
    );
    assert!(
        list.body.contains(&format!("href=\"/ui/tasks/{task}\"")),
        "{}",
        list.body
    );
    // Filtered by kind, a page is filled from further back: 60 newer tasks of another kind do
    // not hide it.
    let sleeps: Vec<String> = (0..60)
        .map(|_| runner.enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 0}})))
        .collect();
    let by_kind = send(
        &viewer,
        "GET",
        "/ui/tasks?kind=adhocscript",
        Some(&cookie),
        None,
        &[],
    );
    assert!(
        by_kind.body.contains(&format!("href=\"/ui/tasks/{task}\""))
            && !by_kind
                .body
                .contains(&format!("href=\"/ui/tasks/{}\"", sleeps[0])),
        "{}",
        by_kind.body
    );
    // The API filters the same way.
    let (status, api) = runner.get("/api/tasks?kind=adhocscript&limit=100");
    assert_eq!(status, 200, "{api}");
    let kinds: Vec<&str> = api["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| *k == "AdHocScript"),
        "{api}"
    );
    let sleeping = send(
        &viewer,
        "GET",
        "/ui/tasks?kind=Sleep",
        Some(&cookie),
        None,
        &[],
    );
    assert_eq!(
        sleeping.body.matches("<tr>").count() - 1,
        50,
        "a full page of 50"
    );
    assert!(
        sleeping.body.contains("kind=Sleep&amp;before="),
        "{}",
        sleeping.body
    );
    let done = send(
        &viewer,
        "GET",
        &format!("/ui/tasks/{task}"),
        Some(&cookie),
        None,
        &[],
    );
    assert!(
        done.body.contains("tick 6") && !done.body.contains("data-live="),
        "{}",
        done.body
    );

    // Cancel from the page: a queued task is cancelled at once.
    let blocked = runner.enqueue(
        json!({"kind": "Sleep", "arguments": {"duration_ms": 60000}, "concurrency_tag": "t"}),
    );
    let queued = runner
        .enqueue(json!({"kind": "Sleep", "arguments": {"duration_ms": 1}, "concurrency_tag": "t"}));
    let page = send(
        &viewer,
        "GET",
        &format!("/ui/tasks/{queued}"),
        Some(&cookie),
        None,
        &[],
    );
    let token = form_token(&page.body);
    let cancelled = send(
        &viewer,
        "POST",
        &format!("/ui/tasks/{queued}/cancel"),
        Some(&cookie),
        Some(&format!("csrf={token}")),
        &[],
    );
    assert_eq!(cancelled.status, 303, "{}", cancelled.body);
    assert_eq!(runner.task(&queued)["state"], "Canceled");
    runner.request("POST", &format!("/api/tasks/{blocked}/cancel"), None);

    // The dashboard: each project's latest deployment to each environment.
    let empty = send(&viewer, "GET", "/ui/dashboard", Some(&cookie), None, &[]);
    assert!(empty.body.contains("No project yet"), "{}", empty.body);
    let (_, env) = runner.post("/api/spaces/default/environments", &json!({"name": "Dev"}));
    let (_, shop) = runner.post("/api/spaces/default/projects", &json!({"name": "Shop <b>"}));
    let path = format!(
        "/api/spaces/default/projects/{}",
        shop["id"].as_str().unwrap()
    );
    let process = json!({"version": 1, "steps": [{"name": "Say", "action": {"type": "script", "script": "echo hi"}}]});
    runner.request(
        "PUT",
        &format!("{path}/deploymentprocess"),
        Some(&process.to_string()),
    );
    let (_, release) = runner.post(&format!("{path}/releases"), &json!({"version": "2.3.4"}));
    let (status, d) = runner.post(
        "/api/spaces/default/deployments",
        &json!({"release_id": release["id"], "environment_id": env["id"]}),
    );
    assert_eq!(status, 201, "{d}");
    runner.wait_finished(
        d["task_id"].as_str().unwrap(),
        std::time::Duration::from_secs(60),
    );
    let grid = send(&viewer, "GET", "/ui/dashboard", Some(&cookie), None, &[]);
    assert!(
        grid.body.contains("<th scope=\"col\">Dev</th>"),
        "{}",
        grid.body
    );
    assert!(
        grid.body.contains("Shop &#60;b&#62;") || grid.body.contains("Shop &lt;b&gt;"),
        "{}",
        grid.body
    );
    assert!(
        grid.body.contains("<strong>2.3.4</strong>") && grid.body.contains("Success"),
        "{}",
        grid.body
    );

    // The audit page: who did what, filterable.
    let audit = send(
        &viewer,
        "GET",
        "/ui/events?action=deployment",
        Some(&cookie),
        None,
        &[],
    );
    assert!(
        audit.body.contains("deployment.create") && !audit.body.contains("project.create"),
        "{}",
        audit.body
    );
}
