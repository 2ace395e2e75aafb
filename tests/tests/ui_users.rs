//! Web UI users made with `cuttle-server admin`: signing in with a name and password on any
//! node, what a new password or deleting the user does to their sessions, what a reader's
//! pages offer and refuse, and the audit trail naming the user.

use cuttle_e2e::web::{form_token, send, session_of};
use cuttle_e2e::{Cluster, Database, NodeOptions};

#[test]
fn a_user_made_with_admin_create_signs_in_with_a_password_until_it_changes() {
    let cluster = Cluster::new(Database::Sqlite).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let n2 = cluster.start(NodeOptions::named("n2", 1));
    let create = [
        "admin",
        "create",
        "--username",
        "alice",
        "--scope",
        "operator",
    ];
    let (ok, out) = cluster.run_server(&[&create[..], &["--password-stdin"]].concat(), "short\n");
    assert!(!ok && out.contains("at least 12 characters"), "{out}");
    let (ok, out) = cluster.run_server(&create, "");
    assert!(
        !ok && out.contains("--password-stdin"),
        "not a terminal: {out}"
    );
    let password = "correct horse battery staple";
    let (ok, out) = cluster.run_server(
        &[&create[..], &["--password-stdin"]].concat(),
        &format!("{password}\n"),
    );
    assert!(
        ok && out.contains("created operator user \"alice\""),
        "{out}"
    );
    let (ok, out) = cluster.run_server(
        &["admin", "create", "--username", "ALICE", "--password-stdin"],
        &format!("{password}\n"),
    );
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = cluster.run_server(&["admin", "list"], "");
    assert!(
        ok && out.contains("\talice\toperator\t") && !out.contains("argon2"),
        "{out}"
    );

    // Wrong passwords and unknown names get the same answer.
    for form in [
        "username=alice&password=wrong+password+here",
        "username=bob&password=x",
    ] {
        let refused = send(&n1, "POST", "/ui/sign-in", None, Some(form), &[]);
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert!(refused
            .body
            .contains("That name and password do not match."));
        assert!(refused.set_cookie.is_empty());
    }
    // Signed in on n1, read on n2, acting under the user's own name.
    let form = format!("username=alice&password={}", password.replace(' ', "+"));
    let signed = send(&n1, "POST", "/ui/sign-in", None, Some(&form), &[]);
    assert_eq!(signed.status, 303, "{}", signed.body);
    let cookie = session_of(&signed.set_cookie);
    assert!(!cookie.is_empty() && !signed.set_cookie.contains(password));
    let page = send(&n2, "GET", "/ui/nodes", Some(&cookie), None, &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<strong>alice</strong> (operator)"),
        "{}",
        page.body
    );
    let token = form_token(&page.body);
    let drained = send(
        &n2,
        "POST",
        "/ui/nodes/n1",
        Some(&cookie),
        Some(&format!("csrf={token}&action=drain")),
        &[],
    );
    assert_eq!(drained.status, 303);
    let (_, events) = n1.get("/api/events?limit=5");
    let drain = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "node.update")
        .cloned()
        .unwrap_or_else(|| panic!("no node.update in {events}"));
    assert!(
        drain["actor"]
            .as_str()
            .unwrap()
            .starts_with("alice (Users-"),
        "{drain}"
    );

    // A new password ends the session made with the old one, on every node.
    let new_password = "a much longer passphrase now";
    let (ok, out) = cluster.run_server(
        &[
            "admin",
            "set-password",
            "--username",
            "alice",
            "--password-stdin",
        ],
        &format!("{new_password}\n"),
    );
    assert!(ok, "{out}");
    for node in [&n1, &n2] {
        let page = send(node, "GET", "/ui/nodes", Some(&cookie), None, &[]);
        assert_eq!((page.status, page.location.as_str()), (303, "/ui/sign-in"));
    }
    let old = send(&n2, "POST", "/ui/sign-in", None, Some(&form), &[]);
    assert_eq!(old.status, 401);
    let again = send(
        &n2,
        "POST",
        "/ui/sign-in",
        None,
        Some(&format!(
            "username=Alice&password={}",
            new_password.replace(' ', "+")
        )),
        &[],
    );
    assert_eq!(again.status, 303, "names are found whatever their case");
    let cookie = session_of(&again.set_cookie);
    assert_eq!(
        send(&n1, "GET", "/ui/tasks", Some(&cookie), None, &[]).status,
        200
    );

    // A reader sees no forms, and a form posted anyway changes nothing.
    let (ok, out) = cluster.run_server(
        &[
            "admin",
            "create",
            "--username",
            "viewer",
            "--scope",
            "reader",
            "--password-stdin",
        ],
        "a reader's long password\n",
    );
    assert!(ok, "{out}");
    let reader = session_of(
        &send(
            &n1,
            "POST",
            "/ui/sign-in",
            None,
            Some("username=viewer&password=a+reader%27s+long+password"),
            &[],
        )
        .set_cookie,
    );
    let page = send(&n1, "GET", "/ui/nodes", Some(&reader), None, &[]);
    assert!(
        page.body.contains("(reader)") && !page.body.contains(">Drain<"),
        "{}",
        page.body
    );
    let token = form_token(&page.body);
    let refused = send(
        &n1,
        "POST",
        "/ui/nodes/n2",
        Some(&reader),
        Some(&format!("csrf={token}&action=drain")),
        &[],
    );
    let shown = send(&n1, "GET", &refused.location, Some(&reader), None, &[]);
    assert!(
        shown
            .body
            .contains("Signed in as viewer (reader), you may not change nodes."),
        "{}",
        shown.body
    );
    assert_eq!(n2.ping(), 200, "n2 still takes work");

    // Deleting the user ends that session too.
    let (ok, out) = cluster.run_server(&["admin", "delete", "--username", "alice"], "");
    assert!(ok, "{out}");
    let gone = send(&n1, "GET", "/ui/tasks", Some(&cookie), None, &[]);
    assert_eq!((gone.status, gone.location.as_str()), (303, "/ui/sign-in"));
}
