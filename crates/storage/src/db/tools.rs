//! What the databases' own tools need to reach the database a URL names: `pg_dump` and
//! `pg_restore` take libpq's keyword form (the password apart, for the environment — never on a
//! command line every local user can read); SQLite's file is copied by SQLite itself.

use super::postgres_tls;
use crate::{Error, Result};

/// Debian's (and Ubuntu's) bundle of the host's trusted CAs.
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A PostgreSQL database as libpq's tools reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct ToolConnection {
    /// `host=… port=… user=… dbname=… sslmode=…`, without the password.
    pub conninfo: String,
    /// For `PGPASSWORD`.
    pub password: Option<String>,
}

impl std::fmt::Debug for ToolConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolConnection")
            .field("conninfo", &self.conninfo)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Which database a URL names, for the backup and restore commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite(std::path::PathBuf),
    Postgres(ToolConnection),
    SqlServer { database: String },
}

/// A libpq value, quoted when it must be.
fn quote(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\']) {
        return v.to_owned();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The kind of database `url` names, with what its tools need.
pub fn database_kind(url: &str) -> Result<DatabaseKind> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(DatabaseKind::Sqlite(path.into()));
    }
    if url.starts_with("mssql://") || super::is_ado_net(url) {
        let c = super::mssql_config::MssqlConfig::parse(url)?;
        return Ok(DatabaseKind::SqlServer {
            database: c.database,
        });
    }
    let (rest, tls) = postgres_tls::split(url)?;
    let config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| Error::InvalidUrl(format!("{}: {e}", super::redact_url(url))))?;
    let mut parts = Vec::new();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.to_string_lossy().into_owned(),
        })
        .collect();
    if !hosts.is_empty() {
        parts.push(format!("host={}", quote(&hosts.join(","))));
    }
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        parts.push(format!("port={}", ports.join(",")));
    }
    if let Some(u) = config.get_user() {
        parts.push(format!("user={}", quote(u)));
    }
    if let Some(d) = config.get_dbname() {
        parts.push(format!("dbname={}", quote(d)));
    }
    parts.push(format!("sslmode={}", tls.mode_name()));
    // Without a root certificate Cuttle trusts the host's CAs; libpq would look in
    // ~/.postgresql/root.crt instead (and `system` needs libpq 16): give it the host's bundle.
    let root = tls.root_cert.clone().or_else(|| {
        let bundle = std::path::Path::new(HOST_CA_BUNDLE);
        (tls.verifies() && bundle.exists()).then(|| bundle.to_owned())
    });
    if let Some(root) = &root {
        parts.push(format!("sslrootcert={}", quote(&root.to_string_lossy())));
    }
    Ok(DatabaseKind::Postgres(ToolConnection {
        conninfo: parts.join(" "),
        password: config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_becomes_keywords_and_a_password_apart() {
        let kind = database_kind(
            "postgres://cuttle:s%3Fcret@db.internal:5433/cuttle?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        )
        .unwrap();
        assert_eq!(
            kind,
            DatabaseKind::Postgres(ToolConnection {
                conninfo: "host=db.internal port=5433 user=cuttle dbname=cuttle sslmode=verify-full sslrootcert=/etc/ca.pem".into(),
                password: Some("s?cret".into()),
            })
        );
        let DatabaseKind::Postgres(t) =
            database_kind("host=db user=o'brien dbname='my db' password=x").unwrap()
        else {
            panic!("not PostgreSQL")
        };
        assert_eq!(
            t.conninfo,
            "host=db user='o\\'brien' dbname='my db' sslmode=prefer"
        );
        assert!(!format!("{t:?}").contains("password: Some(\"x\")"));
    }

    #[test]
    fn sqlite_and_sql_server_are_named() {
        assert_eq!(
            database_kind("sqlite:///var/lib/cuttle/cuttle.db").unwrap(),
            DatabaseKind::Sqlite("/var/lib/cuttle/cuttle.db".into())
        );
        assert!(matches!(
            database_kind("mssql://u:p@h:1433/cuttle").unwrap(),
            DatabaseKind::SqlServer { database } if database == "cuttle"
        ));
    }
}
