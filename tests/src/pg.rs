use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{free_port, temp_dir, wait_until, TempDir};

/// A PostgreSQL database for one test: either a fresh database on the server named by
/// `CUTTLE_TEST_PG_URL`, or a throwaway server made with `initdb` in a temporary directory and
/// run as a child of the test (`postgres`, as the `postgres` user when running as root), in the
/// test's process group: stopped on drop, and ended with the test however it ends (a test
/// runner's timeout kills the group; `pg_ctl` would have detached it).
pub struct TestPostgres {
    url: String,
    server: Option<Server>,
}

struct Server {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Also listening on this address (besides 127.0.0.1), for hosts of a test LAN.
    lan: Option<String>,
    /// `ssl=on` with the certificate and key in these files.
    tls: Option<(PathBuf, PathBuf)>,
    /// The postmaster while it runs.
    child: std::sync::Mutex<Option<std::process::Child>>,
    _dir: TempDir,
}

/// A CA and a server certificate it signed for the given names (DNS names or addresses), in
/// PEM: for TLS tests.
pub struct TestCertificates {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCertificates {
    pub fn new(server_names: &[&str]) -> Result<TestCertificates> {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Cuttle test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
        let names: Vec<String> = server_names.iter().map(|n| (*n).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names)?;
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        Ok(TestCertificates {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl TestPostgres {
    pub fn start() -> Result<TestPostgres> {
        static N: AtomicU32 = AtomicU32::new(0);
        let db = format!(
            "cuttle_t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        if let Ok(base) = std::env::var("CUTTLE_TEST_PG_URL") {
            psql(&base, &format!("CREATE DATABASE {db}"))?;
            let url = replace_db(&base, &db);
            return Ok(TestPostgres { url, server: None });
        }
        let server = Server::start(None)?;
        let base = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
        psql(&base, &format!("CREATE DATABASE {db}"))?;
        Ok(TestPostgres {
            url: replace_db(&base, &db),
            server: Some(server),
        })
    }

    /// A throwaway server of its own that hosts of a test LAN reach at `addr:port` (besides
    /// 127.0.0.1), with a login `user` (password `password`) owning the database `db`: a
    /// database server as a cluster's hosts see one.
    pub fn serving_lan(
        addr: &str,
        port: u16,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<TestPostgres> {
        let server = Server::start_on(None, Some(addr), port)?;
        let base = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        psql(
            &base,
            &format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"),
        )?;
        psql(&base, &format!("CREATE DATABASE {db} OWNER {user}"))?;
        Ok(TestPostgres {
            url: format!("postgres://{user}:{password}@{addr}:{port}/{db}"),
            server: Some(server),
        })
    }

    /// A throwaway server of its own with `ssl=on`, serving `cert_pem` with `key_pem`.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<TestPostgres> {
        let server = Server::start(Some((cert_pem, key_pem)))?;
        let base = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
        let db = format!("cuttle_tls{}", std::process::id());
        psql(&base, &format!("CREATE DATABASE {db}"))?;
        Ok(TestPostgres {
            url: replace_db(&base, &db),
            server: Some(server),
        })
    }

    /// `postgres://…` for the test's own database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs one statement on the test's database with `psql` and returns its output (rows
    /// unaligned, `|`-separated): for tests that set up states no API call makes.
    pub fn psql(&self, sql: &str) -> Result<String> {
        psql(&self.url, sql)
    }

    /// Stops the server (only for a server this harness started): for outage tests.
    pub fn stop_server(&self) -> Result<()> {
        let s = self
            .server
            .as_ref()
            .context("no harness-owned server to stop")?;
        s.stop();
        Ok(())
    }

    /// Starts the server again after [`TestPostgres::stop_server`].
    pub fn start_server(&self) -> Result<()> {
        let s = self
            .server
            .as_ref()
            .context("no harness-owned server to start")?;
        s.start_cmd()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.stop();
        }
    }
}

fn replace_db(url: &str, db: &str) -> String {
    let (head, _) = url.rsplit_once('/').unwrap_or((url, ""));
    format!("{head}/{db}")
}

/// Runs one statement with `psql`.
pub(crate) fn psql(url: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .context("run psql (install the postgresql client)")?;
    if !out.status.success() {
        bail!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn pg_bin_dir() -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    if let Some(d) = dirs.into_iter().rev().find(|d| d.join("initdb").exists()) {
        return Ok(d);
    }
    for d in std::env::var("PATH").unwrap_or_default().split(':') {
        let d = PathBuf::from(d);
        if d.join("initdb").exists() && d.join("postgres").exists() {
            return Ok(d);
        }
    }
    bail!("PostgreSQL server binaries (initdb, postgres) not found: install postgresql")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The `postgres` user's uid and gid.
fn postgres_ids() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("no postgres user")
    };
    Ok((id("-u")?, id("-g")?))
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root (the server refuses root).
fn pg_command(bin: &std::path::Path, tool: &str) -> Command {
    let path = bin.join(tool);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

impl Drop for Server {
    /// Also when the start failed half-way: nothing of it is left running.
    fn drop(&mut self) {
        self.stop();
    }
}

impl Server {
    fn start(tls: Option<(&str, &str)>) -> Result<Server> {
        Server::start_on(tls, None, free_port())
    }

    fn start_on(tls: Option<(&str, &str)>, lan: Option<&str>, port: u16) -> Result<Server> {
        let bin = pg_bin_dir()?;
        let dir = temp_dir("pg");
        let data = dir.path().join("data");
        let tls = match tls {
            None => None,
            Some((cert, key)) => {
                use std::os::unix::fs::PermissionsExt;
                let (cert_file, key_file) =
                    (dir.path().join("server.crt"), dir.path().join("server.key"));
                std::fs::write(&cert_file, cert)?;
                std::fs::write(&key_file, key)?;
                // The server refuses a key others can read.
                std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
                Some((cert_file, key_file))
            }
        };
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            if !st.success() {
                bail!("chown {} to postgres failed", dir.path().display());
            }
        }
        let out = pg_command(&bin, "initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .context("run initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        if lan.is_some() {
            // Hosts of the test's LAN sign in with a password, as a real server asks.
            let mut hba = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("pg_hba.conf"))?;
            use std::io::Write;
            writeln!(hba, "host all all 10.231.0.0/16 scram-sha-256")?;
        }
        let server = Server {
            bin,
            data,
            port,
            lan: lan.map(str::to_owned),
            tls,
            child: std::sync::Mutex::new(None),
            _dir: dir,
        };
        server.start_cmd()?;
        Ok(server)
    }

    fn start_cmd(&self) -> Result<()> {
        let mut opts: Vec<String> = vec![
            "-D".into(),
            self.data.display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-k".into(),
            self.data
                .parent()
                .expect("data dir has a parent")
                .display()
                .to_string(),
        ];
        let listen = match &self.lan {
            Some(addr) => format!("listen_addresses=127.0.0.1,{addr}"),
            None => "listen_addresses=127.0.0.1".to_owned(),
        };
        for setting in [listen.as_str(), "fsync=off", "max_connections=300"] {
            opts.extend(["-c".into(), setting.into()]);
        }
        if let Some((cert, key)) = &self.tls {
            opts.extend([
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", cert.display()),
                "-c".into(),
                format!("ssl_key_file={}", key.display()),
            ]);
        }
        let log = self.data.parent().expect("parent").join("postgres.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .context("open postgres.log")?;
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.args(&opts)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if is_root() {
            // Directly as the postgres user (the server refuses root): no runuser in between,
            // so signals reach the postmaster itself.
            use std::os::unix::process::CommandExt;
            let (uid, gid) = postgres_ids()?;
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().context("start postgres")?;
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        wait_until(
            "postgres to accept connections",
            Duration::from_secs(60),
            || psql(&url, "SELECT 1").ok(),
        );
        Ok(())
    }

    /// Immediate shutdown (`SIGQUIT`, as `pg_ctl stop -m immediate`), waited for.
    fn stop(&self) {
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut child) = child {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGQUIT);
            }
            let _ = child.wait();
        }
    }
}
