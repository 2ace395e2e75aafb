use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};
use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio_util::compat::TokioAsyncWriteCompatExt;

/// The variable naming the SQL Server the SQL Server tests run against.
pub(crate) const MSSQL_URL_VAR: &str = "CUTTLE_TEST_MSSQL_URL";
/// Shell commands that stop and start that server, for the outage tests (`docker stop ID`, a
/// forced availability-group failover, …).
pub(crate) const MSSQL_STOP_VAR: &str = "CUTTLE_TEST_MSSQL_STOP";
pub(crate) const MSSQL_START_VAR: &str = "CUTTLE_TEST_MSSQL_START";

/// A fresh database for one test on the SQL Server named by `CUTTLE_TEST_MSSQL_URL`
/// (`mssql://USER:PASSWORD@HOST:PORT/DB?encrypt=…&trust_server_certificate=…`, a login allowed
/// to create databases). The database is created with READ_COMMITTED_SNAPSHOT on, as
/// `docs/sql-server.md` asks (Babelfish refuses the setting: its READ COMMITTED already reads
/// committed versions), and dropped on drop unless `CUTTLE_TEST_KEEP` is set.
pub struct TestSqlServer {
    base: String,
    url: String,
    db: String,
    /// Stopped by this test and not started again yet: the drop starts it (a test that panics
    /// while the shared server is down must not leave every later test without it).
    stopped: std::sync::atomic::AtomicBool,
}

impl TestSqlServer {
    pub fn start() -> Result<TestSqlServer> {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::var(MSSQL_URL_VAR).with_context(|| {
            format!(
                "set {MSSQL_URL_VAR}=mssql://sa:PASSWORD@127.0.0.1:1433/master?\
                 trust_server_certificate=true to run the SQL Server tests"
            )
        })?;
        // The process id alone is not enough: ids are reused, and a database an earlier test
        // process left behind (killed before it dropped it) would be taken over, schema and
        // all. The clock's nanoseconds make the name new.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let db = format!(
            "cuttle_t{}_{}_{nanos:08x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        // The ALTER inside EXEC: Babelfish refuses it even where it would not run. Babelfish
        // also fails a CREATE DATABASE that races another ("tuple concurrently updated"), as
        // tests in other processes do: tried again, a few times, after a short random pause.
        let create = format!(
            "IF DB_ID(N'{db}') IS NULL CREATE DATABASE [{db}];
             IF SERVERPROPERTY('BabelfishVersion') IS NULL
                 EXEC(N'ALTER DATABASE [{db}] SET READ_COMMITTED_SNAPSHOT ON');"
        );
        let mut attempt = 0;
        while let Err(e) = run_sql(&base, &create) {
            attempt += 1;
            if attempt == 10 {
                return Err(e);
            }
            let jitter = u64::from(std::process::id() % 97) + 50 * attempt;
            std::thread::sleep(std::time::Duration::from_millis(jitter));
        }
        let url = replace_db(&base, &db);
        Ok(TestSqlServer {
            base,
            url,
            db,
            stopped: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// `mssql://…` for the test's own database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs a batch on the test's own database: for tests that set up states no API call
    /// makes.
    pub fn sql(&self, sql: &str) -> Result<()> {
        run_sql(&self.url, sql)
    }

    /// Stops the server with `CUTTLE_TEST_MSSQL_STOP`: for outage tests.
    pub fn stop_server(&self) -> Result<()> {
        self.stopped.store(true, Ordering::SeqCst);
        shell(MSSQL_STOP_VAR)
    }

    /// Starts it again with `CUTTLE_TEST_MSSQL_START` (returns once the command does; the
    /// server may take a while longer to accept connections).
    pub fn start_server(&self) -> Result<()> {
        shell(MSSQL_START_VAR)?;
        self.stopped.store(false, Ordering::SeqCst);
        Ok(())
    }
}

fn shell(var: &str) -> Result<()> {
    let cmd = std::env::var(var).with_context(|| {
        format!("set {var} to the shell command for the SQL Server outage tests")
    })?;
    let status = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .status()
        .with_context(|| format!("run {var}"))?;
    if !status.success() {
        bail!("{var} ({cmd:?}) failed: {status}");
    }
    Ok(())
}

impl Drop for TestSqlServer {
    fn drop(&mut self) {
        if self.stopped.load(Ordering::SeqCst) {
            if let Err(e) = shell(MSSQL_START_VAR) {
                crate::util::report(format_args!("could not start the SQL Server again: {e:#}"));
            }
        }
        if std::env::var_os("CUTTLE_TEST_KEEP").is_some() {
            return;
        }
        // SQL Server: close the sessions still open (a killed node's may linger), then drop.
        // Babelfish refuses SINGLE_USER; there the drop is tried until the test's sessions
        // have closed.
        let db = &self.db;
        let sql = format!(
            "IF SERVERPROPERTY('BabelfishVersion') IS NULL
                 EXEC(N'ALTER DATABASE [{db}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE');
             DROP DATABASE [{db}];"
        );
        for _ in 0..50 {
            if run_sql(&self.base, &sql).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        crate::util::report(format_args!("could not drop SQL Server test database {db}"));
    }
}

fn replace_db(url: &str, db: &str) -> String {
    let (main, query) = url.split_once('?').unwrap_or((url, ""));
    let after_scheme = main.len() - main.trim_start_matches("mssql://").len();
    let head = match main[after_scheme..].find('/') {
        Some(i) => &main[..after_scheme + i],
        None => main,
    };
    if query.is_empty() {
        format!("{head}/{db}")
    } else {
        format!("{head}/{db}?{query}")
    }
}

/// The harness's own reading of the URL: just enough to create and drop databases.
fn config(url: &str) -> Result<Config> {
    let Some(rest) = url.strip_prefix("mssql://") else {
        bail!("{MSSQL_URL_VAR} must be an mssql:// URL");
    };
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, db) = main.split_once('/').unwrap_or((main, "master"));
    let (creds, hostport) = authority
        .rsplit_once('@')
        .context("mssql:// URL without USER:PASSWORD@")?;
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "1433"));
    let mut c = Config::new();
    c.host(host);
    c.port(port.parse().context("port")?);
    c.database(if db.is_empty() { "master" } else { db });
    c.authentication(AuthMethod::sql_server(user, password));
    c.encryption(EncryptionLevel::Required);
    for pair in query.split('&') {
        match pair.to_ascii_lowercase().as_str() {
            "trust_server_certificate=true" | "trustservercertificate=true" => c.trust_cert(),
            "encrypt=false" => c.encryption(EncryptionLevel::Off),
            _ => {}
        }
    }
    Ok(c)
}

/// Runs one batch on the server, on a thread of its own (callers may be inside a runtime).
fn run_sql(url: &str, sql: &str) -> Result<()> {
    let config = config(url)?;
    let batch = sql.to_owned();
    std::thread::spawn(move || -> Result<()> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(config.get_addr()).await?;
            tcp.set_nodelay(true)?;
            let mut client = Client::connect(config, tcp.compat_write()).await?;
            client
                .simple_query(batch.as_str())
                .await?
                .into_results()
                .await?;
            Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("SQL Server helper thread panicked"))?
    .with_context(|| format!("run {sql:?} on the SQL Server named by {MSSQL_URL_VAR}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_and_keeps_the_query() {
        assert_eq!(
            super::replace_db("mssql://sa:pw@h:1433/master?encrypt=true", "t1"),
            "mssql://sa:pw@h:1433/t1?encrypt=true"
        );
        assert_eq!(
            super::replace_db("mssql://sa:pw@h:1433", "t1"),
            "mssql://sa:pw@h:1433/t1"
        );
    }
}
