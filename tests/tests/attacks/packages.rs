//! Attacks of the second security review: H-4 (a released package version is never replaced) and
//! M-7 (zip bombs, uploads in flight).

use super::*;

/// H-4: released bytes never change. A deployer cannot replace a version; nobody can replace
/// one a release names; and bytes that changed under a release anyway (deleted and uploaded
/// again) are not deployed.
#[test]
fn h4_a_released_package_version_is_never_replaced_under_its_release() {
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let dir = cuttle_e2e::temp_dir("attack-packages");
    let mut web = cuttle_e2e::Tentacle::new(dir.path(), "web-1");
    web_tentacle(&n1, &mut web, &cluster.api_key);
    let deployer = n1.key_with_scope("ci", "deployer");
    let operator = n1.key_with_scope("ops", "operator");
    let upload = |key: &str, bytes: &[u8], replace: bool| {
        let q = if replace { "&replace=true" } else { "" };
        cuttle_e2e::upload(
            n1.http(),
            &n1.url(&format!(
                "/api/spaces/default/packages/raw?package_id=Shop.Web&version=1.0.0&format=tar.gz{q}"
            )),
            key,
            "application/octet-stream",
            bytes,
            bytes.len() as u64,
            &[],
        )
    };
    let tarball = |text: &str| {
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("version.txt"), text).unwrap();
        let out = dir.path().join("pkg.tar.gz");
        let ok = std::process::Command::new("tar")
            .args([
                "czf",
                out.to_str().unwrap(),
                "-C",
                src.to_str().unwrap(),
                "version.txt",
            ])
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::read(out).unwrap()
    };
    let (good, evil) = (tarball("good build"), tarball("evil build"));
    let (status, body) = upload(&deployer, &good, false);
    assert_eq!(status, 201, "{body}");
    // Released: the release records what it deploys, SHA-256 included.
    let step = json!([{"name": "Web", "target_roles": ["web"], "action": {
        "type": "deploy-package", "package_id": "Shop.Web",
        "script": "cat version.txt"}}]);
    let (t, log) = deploy_once(&n1, step, json!([]));
    assert_eq!(t["state"], "Success", "{t}\n{log}");
    assert!(log.contains("OUT   [web-1] good build"), "{log}");

    // The deployer's attack: replace the released version.
    let (status, err) = upload(&deployer, &evil, true);
    assert_eq!(status, 403, "{err}");
    // Not even an operator replaces a version a release names.
    let (status, err) = upload(&operator, &evil, true);
    assert_eq!(status, 409, "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("release 1.0.0 of Shop"), "{msg}");

    // Deleted and uploaded again with other bytes: the release refuses to deploy them.
    let (status, _) = n1.request_with_key(
        &operator,
        "DELETE",
        "/api/spaces/default/packages/Shop.Web/1.0.0",
        None,
    );
    assert_eq!(status, 200);
    let (status, body) = upload(&operator, &evil, false);
    assert_eq!(status, 201, "{body}");
    let (_, releases) = n1.get("/api/spaces/default/deployments");
    let first = &releases["items"][0];
    let (status, d) = n1.post(
        "/api/spaces/default/deployments",
        &json!({"release_id": first["release_id"], "environment_id": first["environment_id"]}),
    );
    assert_eq!(status, 201, "{d}");
    let task = d["task_id"].as_str().unwrap();
    let t = n1.wait_finished(task, MIN);
    let log = n1.task_log(task);
    assert_eq!(t["state"], "Failed", "{t}\n{log}");
    assert!(
        log.contains("is not the one the release was made with"),
        "{log}"
    );
    assert!(!log.contains("evil build"), "{log}");
}

/// M-7: a package that unpacks to far more than its size stops early on the target and leaves
/// nothing; one key holds at most four uploads at once.
#[test]
fn m7_a_zip_bomb_stops_early_and_one_key_holds_few_uploads() {
    use std::io::Write;
    let cluster = Cluster::sqlite();
    let n1 = cluster.start(NodeOptions::named("n1", 2));
    let dir = cuttle_e2e::temp_dir("attack-bomb");
    let mut web = cuttle_e2e::Tentacle::new(dir.path(), "web-1");
    web_tentacle(&n1, &mut web, &cluster.api_key);
    let deployer = n1.key_with_scope("ci", "deployer");
    // 300 MiB of zeros in a few hundred KiB.
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg("truncate -s 300M big.bin && tar czf bomb.tar.gz big.bin && rm big.bin")
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(made.success());
    let bomb = std::fs::read(dir.path().join("bomb.tar.gz")).unwrap();
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let url =
        n1.url("/api/spaces/default/packages/raw?package_id=Bomb&version=1.0.0&format=tar.gz");
    let (status, body) = cuttle_e2e::upload(
        n1.http(),
        &url,
        &deployer,
        "application/octet-stream",
        &bomb[..],
        bomb.len() as u64,
        &[],
    );
    assert_eq!(status, 201, "{body}");
    let step = json!([{"name": "Unpack", "target_roles": ["web"], "action": {
        "type": "deploy-package", "package_id": "Bomb"}}]);
    let (t, log) = deploy_once(&n1, step, json!([]));
    assert_eq!(t["state"], "Failed", "{t}");
    assert!(log.contains("unpacks to more than"), "{log}");
    let apps = web.home.join("Applications");
    let unpacked: u64 = walk_size(&apps);
    assert!(
        unpacked < 256 << 20,
        "{unpacked} bytes were left on the target"
    );

    // Four uploads of one key hold their places; a fifth is told to wait.
    let addr = n1.url("").trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for i in 0..4 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            c,
            "POST /api/spaces/default/packages/raw?package_id=Slow{i}&version=1.0.0&format=tar.gz HTTP/1.1\r\n\
             Host: x\r\nX-Api-Key: {deployer}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: 1000000\r\n\r\n"
        )
        .unwrap();
        c.write_all(&bomb[..1000]).unwrap();
        held.push(c);
    }
    let slow = |i: u32| {
        cuttle_e2e::upload(
            n1.http(),
            &n1.url(&format!(
                "/api/spaces/default/packages/raw?package_id=Fifth{i}&version=1.0.0&format=tar.gz"
            )),
            &deployer,
            "application/octet-stream",
            &bomb[..],
            bomb.len() as u64,
            &[],
        )
    };
    // Once the node counts the four held uploads, a fifth of that key is refused.
    let metric = |n: &cuttle_e2e::Node| {
        let mut resp = n
            .http()
            .get(&n.url("/metrics"))
            .header("X-Api-Key", &cluster.api_key)
            .call()
            .unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("cuttle_uploads_in_progress "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no upload gauge in\n{text}"))
    };
    cuttle_e2e::wait_until("the four held uploads to be counted", MIN, || {
        (metric(&n1) == 4).then_some(())
    });
    let (status, body) = slow(0);
    assert_eq!(status, 429, "{body}");
    // Another key is not affected.
    let (status, body) = cuttle_e2e::upload(
        n1.http(),
        &n1.url("/api/spaces/default/packages/raw?package_id=Other&version=1.0.0&format=tar.gz"),
        &cluster.api_key,
        "application/octet-stream",
        &bomb[..],
        bomb.len() as u64,
        &[],
    );
    assert_eq!(status, 201, "{body}");
    drop(held);
}

/// Bytes of every file under `dir`.
fn walk_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}
