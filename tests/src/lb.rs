use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{free_port, temp_dir, wait_until, HttpsTrust, Node, TempDir, TestCertificates};

/// A real haproxy (Debian's package) running `deploy/haproxy/haproxy.cfg`, with the example
/// node addresses and ports rewritten to this test's loopback ports and its certificate one
/// made here. Killed on drop.
pub struct Haproxy {
    child: Child,
    /// Plain HTTP: redirects to HTTPS.
    pub http_port: u16,
    /// HTTPS, ended here.
    pub https_port: u16,
    /// The CA of haproxy's certificate, for clients to trust.
    pub ca_pem: String,
    /// The one address for every polling tentacle (`listen tentacle_any`).
    pub tentacle_port: u16,
    /// The public gRPC API, TLS ended here (`frontend cuttle_grpc`).
    pub grpc_port: u16,
    _dir: TempDir,
}

/// Waits until the balancer answers the ping with a node's 200.
fn routes_to_a_node(what: &str, agent: &ureq::Agent, ping: &str) {
    wait_until(
        &format!("{what} to route to a healthy node"),
        Duration::from_secs(30),
        || {
            let r = agent.get(ping).call().ok()?;
            (r.status().as_u16() == 200).then_some(())
        },
    );
}

/// The repository's `deploy/` folder.
pub fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

impl Haproxy {
    /// Fronts exactly three nodes, as the shipped config does.
    pub fn start(nodes: [&Node; 3]) -> Result<Haproxy> {
        Self::start_from(nodes, None)
    }

    /// Like [`Haproxy::start`], with haproxy connecting to the nodes from `source` (another
    /// loopback address), so nodes can tell it apart from clients on 127.0.0.1.
    pub fn start_from(nodes: [&Node; 3], source: Option<&str>) -> Result<Haproxy> {
        let shipped = std::fs::read_to_string(deploy_dir().join("haproxy/haproxy.cfg"))
            .context("read deploy/haproxy/haproxy.cfg")?;
        let (http_port, https_port, tentacle_port) = (free_port(), free_port(), free_port());
        let grpc_port = free_port();
        let dir = temp_dir("haproxy");
        let certs = TestCertificates::new(&["127.0.0.1"])?;
        let pem = dir.path().join("cuttle.pem");
        std::fs::write(&pem, format!("{}{}", certs.cert_pem, certs.key_pem))?;
        let mut cfg = shipped.replace("bind :80", &format!("bind 127.0.0.1:{http_port}"));
        cfg = cfg.replace(
            "bind :443 ssl crt /etc/haproxy/certs/cuttle.pem",
            &format!("bind 127.0.0.1:{https_port} ssl crt {}", pem.display()),
        );
        cfg = cfg.replace("bind :10950", &format!("bind 127.0.0.1:{tentacle_port}"));
        cfg = cfg.replace(
            "bind :8444 ssl crt /etc/haproxy/certs/cuttle.pem",
            &format!("bind 127.0.0.1:{grpc_port} ssl crt {}", pem.display()),
        );
        for (i, node) in nodes.iter().enumerate() {
            let example = format!("10.0.0.1{}", i + 1);
            cfg = cfg.replace(
                &format!("{example}:8080"),
                &format!("127.0.0.1:{}", node.http_port),
            );
            cfg = cfg.replace(
                &format!("{example}:10943"),
                &format!("127.0.0.1:{}", node.gateway_port),
            );
            cfg = cfg.replace(
                &format!("{example}:8444"),
                &format!("127.0.0.1:{}", node.public_grpc_port),
            );
            cfg = cfg.replace(
                &format!("addr {example} port 8080"),
                &format!("addr 127.0.0.1 port {}", node.http_port),
            );
            cfg = cfg.replace(
                &format!("bind :{}", 10943 + i),
                &format!("bind 127.0.0.1:{}", free_port()),
            );
        }
        let live = cfg.lines().filter(|l| !l.trim_start().starts_with('#'));
        if live.clone().any(|l| l.contains("10.0.0.")) || live.clone().any(|l| l.contains("bind :"))
        {
            bail!("the shipped haproxy.cfg no longer matches the test's rewriting");
        }
        // Faster checks than production, so the test does not wait on 2 s intervals.
        cfg = cfg.replace("inter 2s", "inter 200ms");
        if let Some(src) = source {
            cfg = cfg.replace(
                "default-server inter 200ms",
                &format!("default-server inter 200ms source {src}"),
            );
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg)?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("haproxy.log"))?)
            .spawn()
            .context("start haproxy (install Debian's haproxy package)")?;
        let lb = Haproxy {
            child,
            http_port,
            https_port,
            ca_pem: certs.ca_pem,
            tentacle_port,
            grpc_port,
            _dir: dir,
        };
        routes_to_a_node("haproxy", &lb.agent(), &lb.url("/api/nodes/ping"));
        Ok(lb)
    }

    /// `https://…` on haproxy's TLS port.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https_port)
    }

    /// A client trusting haproxy's certificate (status codes returned, not errors).
    pub fn agent(&self) -> ureq::Agent {
        crate::agent(Some(&HttpsTrust::Ca(self.ca_pem.clone())))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real nginx (Debian's package) running `deploy/nginx/cuttle.conf` in front of three nodes,
/// with the example addresses rewritten to this test's loopback ports and a certificate made
/// here. Killed on drop.
pub struct Nginx {
    child: Child,
    pub https_port: u16,
    /// The public gRPC API, TLS ended here.
    pub grpc_port: u16,
    pub ca_pem: String,
    _dir: TempDir,
}

impl Nginx {
    pub fn start(nodes: [&Node; 3]) -> Result<Nginx> {
        let shipped = std::fs::read_to_string(deploy_dir().join("nginx/cuttle.conf"))
            .context("read deploy/nginx/cuttle.conf")?;
        let (http_port, https_port, grpc_port) = (free_port(), free_port(), free_port());
        let dir = temp_dir("nginx");
        let certs = TestCertificates::new(&["127.0.0.1"])?;
        let (crt, key) = (dir.path().join("cuttle.crt"), dir.path().join("cuttle.key"));
        std::fs::write(&crt, &certs.cert_pem)?;
        std::fs::write(&key, &certs.key_pem)?;
        let mut cfg = shipped
            .replace("listen 80;", &format!("listen 127.0.0.1:{http_port};"))
            .replace(
                "listen 443 ssl;",
                &format!("listen 127.0.0.1:{https_port} ssl;"),
            )
            .replace(
                "listen 8444 ssl http2;",
                &format!("listen 127.0.0.1:{grpc_port} ssl http2;"),
            )
            .replace("/etc/nginx/certs/cuttle.crt", &crt.display().to_string())
            .replace("/etc/nginx/certs/cuttle.key", &key.display().to_string());
        for (i, node) in nodes.iter().enumerate() {
            cfg = cfg.replace(
                &format!("10.0.0.1{}:8080", i + 1),
                &format!("127.0.0.1:{}", node.http_port),
            );
            cfg = cfg.replace(
                &format!("10.0.0.1{}:8444", i + 1),
                &format!("127.0.0.1:{}", node.public_grpc_port),
            );
        }
        if cfg
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("10.0.0."))
        {
            bail!("the shipped cuttle.conf no longer matches the test's rewriting");
        }
        let site = dir.path().join("cuttle.conf");
        std::fs::write(&site, cfg)?;
        let d = dir.path().display();
        let main = format!(
            "user root;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {};\n}}\n",
            site.display()
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, main)?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start nginx (install Debian's nginx package)")?;
        let lb = Nginx {
            child,
            https_port,
            grpc_port,
            ca_pem: certs.ca_pem,
            _dir: dir,
        };
        routes_to_a_node("nginx", &lb.agent(), &lb.url("/api/nodes/ping"));
        Ok(lb)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https_port)
    }

    pub fn agent(&self) -> ureq::Agent {
        crate::agent(Some(&HttpsTrust::Ca(self.ca_pem.clone())))
    }
}

impl Drop for Nginx {
    /// nginx's fast shutdown (`SIGTERM`): the master stops its workers and then itself. A
    /// master that does not end within 5 s is killed with its workers.
    fn drop(&mut self) {
        let master = self.child.id() as i32;
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        unsafe {
            libc::kill(master, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20)); // polling a child's exit
        }
        for pid in crate::util::children_of(master) {
            // SAFETY: as above; the master is not reaped yet, so its children are its own.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
