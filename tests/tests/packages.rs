//! The built-in package repository: uploads streamed into the shared store whatever their size,
//! versions kept whole and unique, downloads by range, and nothing left behind by an upload that
//! does not finish.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cuttle_e2e::{
    download, multipart, peak_rss_kib, report, upload, wait_until, Cluster, Database, Generated,
    Haproxy, Node, NodeOptions,
};
use serde_json::{json, Value};

cuttle_e2e::on_every_database!(the_repository_keeps_each_version_whole_once_and_serves_it_by_range);

const RAW: &str = "/api/spaces/Spaces-1/packages/raw";

fn key_of(node: &Node, scope: &str) -> String {
    let (status, body) = node.post("/api/keys", &json!({"name": scope, "scope": scope}));
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

fn raw_upload(
    node: &Node,
    key: &str,
    query: &str,
    g: &Generated,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    upload(
        node.http(),
        &node.url(&format!("{RAW}?{query}")),
        key,
        "application/octet-stream",
        g.clone(),
        g.size,
        headers,
    )
}

fn multipart_upload(
    node: &Node,
    key: &str,
    path: &str,
    file_name: &str,
    data: &[u8],
) -> (u16, Value) {
    let (content_type, body) = multipart(file_name, data);
    let len = body.len() as u64;
    upload(
        node.http(),
        &node.url(path),
        key,
        &content_type,
        &body[..],
        len,
        &[],
    )
}

/// Every file under `Packages/` (relative), in-progress ones included.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn error_of(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn the_repository_keeps_each_version_whole_once_and_serves_it_by_range(db: Database) {
    let cluster = Cluster::new(db).unwrap();
    let n1 = cluster.start(NodeOptions::named("n1", 1));
    let n2 = cluster.start(NodeOptions::named("n2", 0));
    let packages = cluster.shared_dir().join("Packages");
    let (deployer, reader, operator) = (
        key_of(&n1, "deployer"),
        key_of(&n1, "reader"),
        key_of(&n1, "operator"),
    );

    // A raw body, named by the query, its hash checked.
    let v1 = Generated::zip(1, 300_000);
    let sha1 = v1.sha256();
    let (status, p1) = raw_upload(
        &n1,
        &deployer,
        "package_id=Acme.Web&version=1.0.0&format=zip",
        &v1,
        &[("X-Content-SHA256", &sha1)],
    );
    assert_eq!(status, 201, "{p1}");
    assert_eq!(
        (
            p1["package_id"].clone(),
            p1["version"].clone(),
            p1["size"].clone(),
            p1["sha256"].clone(),
            p1["format"].clone()
        ),
        (
            json!("Acme.Web"),
            json!("1.0.0"),
            json!(300_000),
            json!(sha1),
            json!("zip")
        )
    );
    assert_eq!(p1["uploaded_by"], "deployer (ApiKeys-2)", "{p1}");

    // Multipart on the other node, named by its file; the guide's short path; the id keeps the
    // case the repository first saw.
    let beta = Generated::zip(2, 70_000);
    let (status, p2) = multipart_upload(
        &n2,
        &deployer,
        RAW,
        "Acme.Web.1.10.0-beta.1.zip",
        &beta.to_vec(),
    );
    assert_eq!(status, 201, "{p2}");
    let v2 = Generated::gzip(3, 50_000);
    let (status, p3) = multipart_upload(
        &n2,
        &deployer,
        "/api/Spaces-1/packages/raw",
        "acme.web.2.0.0.tar.gz",
        &v2.to_vec(),
    );
    assert_eq!(status, 201, "{p3}");
    assert_eq!(
        (p3["package_id"].as_str(), p3["format"].as_str()),
        (Some("Acme.Web"), Some("tar.gz"))
    );
    let (status, _) = multipart_upload(
        &n1,
        &deployer,
        RAW,
        "Other.Tool.0.1.0.tgz",
        &Generated::gzip(4, 1000).to_vec(),
    );
    assert_eq!(status, 201);

    // The same version again, whatever the case or build metadata: 409 before the body is read,
    // unless it is to be replaced.
    let v1b = Generated::zip(5, 200_000);
    let (status, err) = raw_upload(
        &n2,
        &deployer,
        "package_id=ACME.WEB&version=1.0.0%2Bbuild.9&format=zip",
        &v1b,
        &[],
    );
    assert_eq!(status, 409, "{err}");
    assert!(error_of(&err).contains("replace=true"), "{err}");
    let old_file = files_under(&packages)
        .into_iter()
        .find(|f| f.contains("Acme.Web.1.0.0_"))
        .unwrap();
    // Replacing is an operator's call, never a deployer's.
    let (status, err) = raw_upload(
        &n2,
        &deployer,
        "package_id=ACME.WEB&version=1.0.0%2Bbuild.9&format=zip&replace=true",
        &v1b,
        &[],
    );
    assert_eq!(status, 403, "{err}");
    assert!(error_of(&err).contains("needs scope operator"), "{err}");
    let (status, replaced) = raw_upload(
        &n2,
        &operator,
        "package_id=ACME.WEB&version=1.0.0%2Bbuild.9&format=zip&replace=true",
        &v1b,
        &[],
    );
    assert_eq!(status, 201, "{replaced}");
    assert_eq!(replaced["version"], "1.0.0+build.9");
    assert!(
        !packages.join(&old_file).exists(),
        "the replaced version's file is gone"
    );

    // Newest first by SemVer precedence (1.10 after 1.9, a pre-release before its release).
    let (status, list) = n2.request_with_key(
        &reader,
        "GET",
        "/api/spaces/Spaces-1/packages?package_id=acme.web",
        None,
    );
    assert_eq!(status, 200, "{list}");
    let versions: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2.0.0", "1.10.0-beta.1", "1.0.0+build.9"]);
    let (_, latest) = n1.get("/api/spaces/default/packages?latest=true");
    let ids: Vec<String> = latest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}@{}",
                p["package_id"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(ids, ["Acme.Web@2.0.0", "Other.Tool@0.1.0"]);
    let (_, page) = n1.get("/api/spaces/Spaces-1/packages?limit=2");
    assert_eq!(
        (
            page["items"].as_array().unwrap().len(),
            page["next"].as_str(),
            page["total"].as_u64()
        ),
        (2, Some("2"), Some(4))
    );
    let (_, filtered) = n1.get("/api/spaces/Spaces-1/packages?filter=TOOL");
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);

    // Downloads, from the node that did not receive it: whole, by range, cached, refused range.
    let url = n1.url("/api/spaces/Spaces-1/packages/Acme.Web/2.0.0/raw");
    let whole = download(n1.http(), &url, &reader, &[]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, v2.to_vec());
    let etag = format!("\"{}\"", v2.sha256());
    assert_eq!(whole.headers["etag"], etag);
    assert_eq!(whole.headers["content-length"], "50000");
    assert_eq!(whole.headers["content-type"], "application/gzip");
    assert!(whole.headers["content-disposition"].contains("Acme.Web.2.0.0.tar.gz"));
    let part = download(n1.http(), &url, &reader, &[("Range", "bytes=1000-1999")]);
    assert_eq!(
        (part.status, part.headers["content-range"].as_str()),
        (206, "bytes 1000-1999/50000")
    );
    assert_eq!(part.body, v2.bytes_at(1000, 1000));
    let tail = download(n1.http(), &url, &reader, &[("Range", "bytes=-10")]);
    assert_eq!(
        (tail.status, tail.body.clone()),
        (206, v2.bytes_at(49_990, 10))
    );
    let cached = download(n1.http(), &url, &reader, &[("If-None-Match", &etag)]);
    assert_eq!((cached.status, cached.body.len()), (304, 0));
    let beyond = download(n1.http(), &url, &reader, &[("Range", "bytes=50000-")]);
    assert_eq!(
        (beyond.status, beyond.headers["content-range"].as_str()),
        (416, "bytes */50000")
    );
    let stale = download(
        n1.http(),
        &url,
        &reader,
        &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")],
    );
    assert_eq!(
        (stale.status, stale.body.len()),
        (200, 50_000),
        "a range of another copy is the whole file"
    );
    let (status, one) = n1.get("/api/spaces/Spaces-1/packages/acme.web/2.0.0");
    assert_eq!(
        (status, one["sha256"].as_str()),
        (200, Some(v2.sha256().as_str()))
    );

    // Refused, and nothing kept: a hash that does not match, a file that is not its format, bad
    // names, a reader's key.
    let before = files_under(&packages);
    let wrong = "0".repeat(64);
    let (status, err) = raw_upload(
        &n1,
        &deployer,
        "package_id=Acme.Web&version=3.0.0&format=zip",
        &Generated::zip(6, 5000),
        &[("X-Content-SHA256", &wrong)],
    );
    assert_eq!(status, 400, "{err}");
    assert!(error_of(&err).contains("nothing was kept"), "{err}");
    let (status, err) = raw_upload(
        &n1,
        &deployer,
        "package_id=Acme.Web&version=3.0.0&format=zip",
        &Generated::gzip(6, 5000),
        &[],
    );
    assert_eq!(status, 400, "{err}");
    assert!(error_of(&err).contains("not a zip archive"), "{err}");
    for (query, why) in [
        ("package_id=..%2Fetc&version=1.0.0&format=zip", "package id"),
        ("package_id=a%2Fb&version=1.0.0&format=zip", "package id"),
        ("package_id=CON&version=1.0.0&format=zip", "reserved"),
        ("package_id=Acme&version=1.0&format=zip", "semantic version"),
        ("package_id=Acme&version=1.0.0&format=rar", "format"),
        ("package_id=Acme&version=1.0.0", "missing format"),
        (
            "package_id=Acme&version=1.0.0&format=zip&replace=yes",
            "replace must be",
        ),
    ] {
        let (status, err) = raw_upload(&n1, &deployer, query, &Generated::zip(7, 100), &[]);
        assert_eq!(status, 400, "{query}: {err}");
        assert!(error_of(&err).contains(why), "{query}: {err}");
    }
    for name in [
        "Acme.Web.zip",
        "Acme..Web.1.0.0.zip",
        "Acme.Web.1.0.0.exe",
        ".hidden.1.0.0.zip",
    ] {
        let (status, err) = multipart_upload(&n1, &deployer, RAW, name, b"PK\x03\x04");
        assert_eq!(status, 400, "{name}: {err}");
    }
    // A client's path in the file name is never a path on the server.
    let (status, traversal) = multipart_upload(
        &n1,
        &deployer,
        RAW,
        "../../../etc/Evil.1.0.0.zip",
        &Generated::zip(8, 100).to_vec(),
    );
    assert_eq!(
        (status, traversal["package_id"].as_str()),
        (201, Some("Evil")),
        "{traversal}"
    );
    let (status, err) = n1.get("/api/spaces/Spaces-1/packages/..%2F..%2Fetc/1.0.0/raw");
    assert_eq!(status, 400, "{err}");
    let (status, err) = raw_upload(
        &n1,
        &reader,
        "package_id=Acme&version=9.0.0&format=zip",
        &Generated::zip(9, 100),
        &[],
    );
    assert_eq!(status, 403, "{err}");
    let mut after = files_under(&packages);
    after.retain(|f| !f.contains("Evil."));
    assert_eq!(after, before, "refused uploads leave no file");
    assert!(files_under(&packages)
        .iter()
        .all(|f| !f.starts_with("InProgress")));

    // Deleted by an operator (not by a deployer): row and file gone, audited.
    let (status, _) = n1.request_with_key(
        &deployer,
        "DELETE",
        "/api/spaces/Spaces-1/packages/Acme.Web/2.0.0",
        None,
    );
    assert_eq!(status, 403);
    let (status, gone) = n2.request_with_key(
        &operator,
        "DELETE",
        "/api/spaces/Spaces-1/packages/Acme.Web/2.0.0",
        None,
    );
    assert_eq!(status, 200, "{gone}");
    assert_eq!(
        n1.get("/api/spaces/Spaces-1/packages/Acme.Web/2.0.0").0,
        404
    );
    assert_eq!(download(n1.http(), &url, &reader, &[]).status, 404);
    let (_, events) = n1.get("/api/events?limit=100");
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("package."))
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "package.upload").count(),
        6,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "package.delete").count(),
        1
    );

    // What is in the store is exactly what the repository lists.
    let (_, all) = n1.get("/api/spaces/Spaces-1/packages?limit=1000");
    let mut listed: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sha256"].as_str().unwrap()[..16].to_owned())
        .collect();
    listed.sort();
    let mut stored: Vec<String> = files_under(&packages)
        .iter()
        .map(|f| f.rsplit_once('_').unwrap().1[..16].to_owned())
        .collect();
    stored.sort();
    assert_eq!(listed, stored);

    // The CLI: upload (hash sent, so a changed copy is refused), list, download (hash checked),
    // delete.
    let work = cuttle_e2e::temp_dir("package-cli");
    let cli = |key: &str, args: &[&str]| {
        let mut cmd = std::process::Command::new(cuttle_e2e::cli_binary());
        cmd.args(args)
            .env("CUTTLE_SERVER", n1.url(""))
            .env("CUTTLE_API_KEY", key)
            .current_dir(work.path());
        cuttle_e2e::run_to_exit(cmd, Duration::from_secs(60)).unwrap()
    };
    let file = work.path().join("Cli.Tool.3.2.1-rc.2+sha.abc.tar.gz");
    let cli_pkg = Generated::gzip(20, 3 << 20);
    std::fs::write(&file, cli_pkg.to_vec()).unwrap();
    let (st, out, err) = cli(&deployer, &["package", "upload", file.to_str().unwrap()]);
    assert!(st.success(), "{out}{err}");
    assert!(
        out.contains("uploaded Cli.Tool 3.2.1-rc.2+sha.abc (3145728 bytes"),
        "{out}"
    );
    let (st, _, err) = cli(&deployer, &["package", "upload", file.to_str().unwrap()]);
    assert!(
        !st.success() && err.contains("409") && err.contains("replace=true"),
        "{err}"
    );
    let (st, _, err) = cli(
        &deployer,
        &["package", "upload", "--replace", file.to_str().unwrap()],
    );
    assert!(
        !st.success() && err.contains("needs scope operator"),
        "{err}"
    );
    let (st, out, err) = cli(
        &operator,
        &["package", "upload", "--replace", file.to_str().unwrap()],
    );
    assert!(st.success(), "{out}{err}");
    let (st, _, err) = cli(
        &deployer,
        &[
            "package",
            "upload",
            work.path().join("nope.zip").to_str().unwrap(),
        ],
    );
    assert!(
        !st.success() && err.contains("PackageId.Version.ext"),
        "{err}"
    );
    let (st, out, _) = cli(&reader, &["package", "list", "--package-id", "cli.tool"]);
    assert!(
        st.success() && out.contains("3.2.1-rc.2+sha.abc") && out.contains("tar.gz"),
        "{out}"
    );
    let (st, out, err) = cli(
        &reader,
        &["package", "download", "Cli.Tool", "3.2.1-rc.2+sha.abc"],
    );
    assert!(st.success(), "{out}{err}");
    let fetched = std::fs::read(work.path().join("Cli.Tool.3.2.1-rc.2+sha.abc.tar.gz")).unwrap();
    assert!(fetched == cli_pkg.to_vec());
    let (st, _, err) = cli(
        &deployer,
        &["package", "delete", "Cli.Tool", "3.2.1-rc.2+sha.abc"],
    );
    assert!(!st.success() && err.contains("403"), "{err}");
    let (st, out, err) = cli(
        &operator,
        &["package", "delete", "Cli.Tool", "3.2.1-rc.2+sha.abc"],
    );
    assert!(st.success(), "{out}{err}");
    assert_eq!(
        n1.get("/api/spaces/Spaces-1/packages?package_id=Cli.Tool")
            .1["items"],
        json!([])
    );

    // Re-indexed after hands touched the store: a version whose file went is removed, a file
    // put there by hand is indexed, a leftover of a version another file holds is removed; a
    // file that does not hash to its name, or that is still fresh, is left alone.
    let dir = packages.join("Spaces-1");
    let other = files_under(&dir)
        .into_iter()
        .find(|f| f.starts_with("Other.Tool/"))
        .unwrap();
    std::fs::remove_file(dir.join(&other)).unwrap();
    let hand = Generated::gzip(10, 4096);
    let hand_name = format!(
        "Hand.Made/Hand.Made.2.1.0-rc.1_{}.tgz",
        &hand.sha256()[..16]
    );
    let leftover = format!(
        "Acme.Web/Acme.Web.1.0.0_{}.zip",
        &Generated::zip(11, 10).sha256()[..16]
    );
    let corrupt = format!("Acme.Web/Acme.Web.7.0.0_{}.zip", "0123456789abcdef");
    let fresh = format!(
        "Acme.Web/Acme.Web.8.0.0_{}.zip",
        &Generated::zip(12, 10).sha256()[..16]
    );
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for (name, bytes, when) in [
        (&hand_name, hand.to_vec(), Some(old)),
        (&leftover, Generated::zip(11, 10).to_vec(), Some(old)),
        (&corrupt, Generated::zip(13, 10).to_vec(), Some(old)),
        (&fresh, Generated::zip(12, 10).to_vec(), None),
    ] {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        if let Some(t) = when {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    }
    let (status, bad) = n1.post(
        "/api/tasks",
        &json!({"kind": "PackageReindex", "arguments": {"x": 1}}),
    );
    assert_eq!(status, 400, "{bad}");
    let task = n2.enqueue(json!({"kind": "PackageReindex", "arguments": {}}));
    let done = n1.wait_finished(&task, Duration::from_secs(60));
    let log = n1.task_log(&task);
    assert_eq!(done["state"], "Success", "{log}");
    assert_eq!(done["concurrency_tag"], "system/package-reindex");
    assert!(log.contains("1 indexed, 1 version(s) without a file removed, 1 leftover file(s) removed, 2 file(s) left alone"), "{log}");
    let (_, all) = n1.get("/api/spaces/Spaces-1/packages?limit=1000");
    let mut now: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}@{}",
                p["package_id"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect();
    now.sort();
    assert_eq!(
        now,
        [
            "Acme.Web@1.0.0+build.9",
            "Acme.Web@1.10.0-beta.1",
            "Evil@1.0.0",
            "Hand.Made@2.1.0-rc.1"
        ]
    );
    let got = download(
        n2.http(),
        &n2.url("/api/spaces/Spaces-1/packages/Hand.Made/2.1.0-rc.1/raw"),
        &reader,
        &[],
    );
    assert!(got.status == 200 && got.body == hand.to_vec());
    assert!(!dir.join(&leftover).exists());
    assert!(dir.join(&corrupt).exists() && dir.join(&fresh).exists());
    // Again: nothing left to do.
    let again = n1.enqueue(json!({"kind": "PackageReindex", "arguments": {}}));
    n1.wait_finished(&again, Duration::from_secs(60));
    assert!(n1.task_log(&again).contains("0 indexed, 0 version(s) without a file removed, 0 leftover file(s) removed, 2 file(s) left alone"));
}

/// Sends `len` bytes of a raw upload on a plain connection and then `stop`s: the bytes sent so
/// far are a package cut short.
fn partial_upload(
    node: &Node,
    key: &str,
    query: &str,
    g: &Generated,
    send: u64,
) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.http_port)).unwrap();
    write!(
        s,
        "POST {RAW}?{query} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        g.size
    )
    .unwrap();
    let mut r = g.clone().take(send);
    std::io::copy(&mut r, &mut s).unwrap();
    s.flush().unwrap();
    s
}

fn in_progress(packages: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for node in std::fs::read_dir(packages.join("InProgress"))
        .into_iter()
        .flatten()
        .flatten()
    {
        out.extend(
            std::fs::read_dir(node.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        );
    }
    out
}

#[test]
fn a_gigabyte_goes_through_haproxy_in_bounded_memory_and_unfinished_uploads_leave_nothing() {
    let cluster = Cluster::new(Database::Postgres).unwrap();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| cluster.start(NodeOptions::named(&format!("n{i}"), 0)))
        .collect();
    let lb = Haproxy::start([&nodes[0], &nodes[1], &nodes[2]]).unwrap();
    let packages = cluster.shared_dir().join("Packages");
    let key = nodes[0].api_key();

    // 1 GiB generated on the fly, through the shipped haproxy config (TLS ended there).
    let big = Generated::gzip(42, 1 << 30);
    let sha = big.sha256();
    let rss_before: Vec<u64> = nodes
        .iter()
        .map(|n| peak_rss_kib(n.pid().unwrap()))
        .collect();
    let started = std::time::Instant::now();
    let (status, p) = upload(
        &lb.agent(),
        &lb.url("/api/Spaces-1/packages/raw?package_id=Big.App&version=1.0.0&format=tar.gz"),
        &key,
        "application/octet-stream",
        big.clone(),
        big.size,
        &[("X-Content-SHA256", &sha)],
    );
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(status, 201, "{p}");
    assert_eq!(
        (p["size"].as_u64(), p["sha256"].as_str()),
        (Some(1 << 30), Some(sha.as_str()))
    );
    let growth: Vec<u64> = nodes
        .iter()
        .zip(&rss_before)
        .map(|(n, before)| peak_rss_kib(n.pid().unwrap()).saturating_sub(*before))
        .collect();
    report(format!(
        "1 GiB through haproxy in {secs:.1} s ({:.0} MiB/s); nodes' peak RSS grew by {growth:?} KiB",
        1024.0 / secs
    ));
    let worst = growth.iter().max().copied().unwrap_or(0);
    assert!(
        worst < 16 * 1024,
        "a node's peak RSS grew by {worst} KiB during a 1 GiB upload"
    );
    // Read back by range through the balancer: the last MiB, and a piece across a MiB border.
    let url = lb.url("/api/spaces/Spaces-1/packages/Big.App/1.0.0/raw");
    let last = download(&lb.agent(), &url, &key, &[("Range", "bytes=-1048576")]);
    assert_eq!(last.status, 206);
    assert!(
        last.body == big.bytes_at((1 << 30) - (1 << 20), 1 << 20),
        "the last MiB differs"
    );
    let mid = download(
        &lb.agent(),
        &url,
        &key,
        &[("Range", "bytes=536870000-536871000")],
    );
    assert!(mid.body == big.bytes_at(536_870_000, 1001));

    // Cut off half-way: the node drops what it had, and records nothing.
    let cut = Generated::zip(43, 20 << 20);
    let s = partial_upload(
        &nodes[1],
        &key,
        "package_id=Cut.App&version=1.0.0&format=zip",
        &cut,
        8 << 20,
    );
    wait_until(
        "the upload to be in progress",
        Duration::from_secs(20),
        || (!in_progress(&packages).is_empty()).then_some(()),
    );
    drop(s);
    wait_until(
        "the cut-off upload's file to go",
        Duration::from_secs(20),
        || in_progress(&packages).is_empty().then_some(()),
    );
    assert_eq!(
        nodes[1]
            .get("/api/spaces/Spaces-1/packages?package_id=Cut.App")
            .1["items"],
        json!([])
    );

    // A node killed mid-upload: its restart removes the file; there never was a row.
    let s = partial_upload(
        &nodes[2],
        &key,
        "package_id=Killed.App&version=1.0.0&format=zip",
        &cut,
        8 << 20,
    );
    wait_until(
        "the upload to be in progress",
        Duration::from_secs(20),
        || (!in_progress(&packages).is_empty()).then_some(()),
    );
    nodes[2].kill9();
    drop(s);
    assert!(
        !in_progress(&packages).is_empty(),
        "a killed node's upload is left until it restarts"
    );
    cluster.restart(&mut nodes[2]);
    assert!(
        in_progress(&packages).is_empty(),
        "{:?}",
        in_progress(&packages)
    );
    assert_eq!(
        nodes[2]
            .get("/api/spaces/Spaces-1/packages?package_id=Killed.App")
            .1["items"],
        json!([])
    );

    // Two nodes receiving one version at once: one wins, the other hears 409, one whole file.
    let (a, b) = (Generated::zip(44, 30 << 20), Generated::zip(45, 30 << 20));
    let results: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = [(&nodes[0], &a), (&nodes[1], &b)]
            .into_iter()
            .map(|(node, g)| {
                let key = key.clone();
                scope.spawn(move || {
                    raw_upload(
                        node,
                        &key,
                        "package_id=Race.App&version=1.0.0&format=zip",
                        g,
                        &[],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{results:?}");
    let winner = results.iter().find(|(s, _)| *s == 201).unwrap().1["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let race_files: Vec<String> = std::fs::read_dir(packages.join("Spaces-1/Race.App"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        race_files,
        [format!("Race.App.1.0.0_{}.zip", &winner[..16])]
    );
    let got = download(
        nodes[2].http(),
        &nodes[2].url("/api/spaces/Spaces-1/packages/Race.App/1.0.0/raw"),
        &key,
        &[],
    );
    let expected = if a.sha256() == winner { &a } else { &b };
    assert!(
        got.body == expected.to_vec(),
        "the stored file is the winner's, whole"
    );
    assert!(in_progress(&packages).is_empty());
}
