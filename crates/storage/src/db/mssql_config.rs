//! SQL Server connection settings, from an ADO.NET connection string
//! (`Server=tcp:HOST,1433;Database=cuttle;User Id=…;Password=…;Encrypt=true;…`) or a URL
//! (`mssql://user:pass@host:1433/db?encrypt=true`). Nothing here talks to a server; the
//! password is kept out of every message.

use std::fmt;
use std::time::Duration;

use crate::{Error, Result};

/// How the connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encrypt {
    /// Only the login is encrypted (the server may still insist on more).
    Off,
    /// The whole connection is TLS.
    On,
    /// TDS 8.0: TLS before anything else, as SQL Server 2022 and Azure SQL offer.
    Strict,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct MssqlConfig {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// A named instance (`HOST\INSTANCE`), found through the SQL Browser service.
    pub(crate) instance: Option<String>,
    pub(crate) database: String,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) encrypt: Encrypt,
    pub(crate) trust_server_certificate: bool,
    pub(crate) multi_subnet_failover: bool,
    pub(crate) application_name: String,
    pub(crate) connect_timeout: Option<Duration>,
}

impl fmt::Debug for MssqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        write!(f, "MssqlConfig({})", self.describe())
    }
}

impl MssqlConfig {
    /// What to show in logs and errors: server, port and database, never credentials.
    pub(crate) fn describe(&self) -> String {
        match &self.instance {
            Some(i) => format!("sqlserver {}\\{i}/{}", self.host, self.database),
            None => format!("sqlserver {}:{}/{}", self.host, self.port, self.database),
        }
    }

    /// Parses either form; errors name the setting at fault, never its value when it could be
    /// a secret.
    pub(crate) fn parse(text: &str) -> Result<MssqlConfig> {
        if let Some(rest) = text.strip_prefix("mssql://") {
            parse_url(rest)
        } else {
            parse_ado(text)
        }
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidUrl(msg.into())
}

fn defaults() -> MssqlConfig {
    MssqlConfig {
        host: String::new(),
        port: 1433,
        instance: None,
        database: String::new(),
        user: String::new(),
        password: String::new(),
        // Safe by default: TLS, and the server's certificate checked.
        encrypt: Encrypt::On,
        trust_server_certificate: false,
        multi_subnet_failover: false,
        application_name: "cuttle-server".into(),
        connect_timeout: None,
    }
}

fn finish(c: MssqlConfig) -> Result<MssqlConfig> {
    if c.host.is_empty() {
        return Err(invalid("SQL Server connection string: no server"));
    }
    if c.database.is_empty() {
        return Err(invalid("SQL Server connection string: no database"));
    }
    if c.user.is_empty() {
        return Err(invalid(
            "SQL Server connection string: no user (SQL authentication is supported; Windows \
             authentication is not yet)",
        ));
    }
    Ok(c)
}

fn boolean(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(invalid(format!(
            "SQL Server connection string: {key} must be true or false, got {value:?}"
        ))),
    }
}

fn encrypt(key: &str, value: &str) -> Result<Encrypt> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "mandatory" => Ok(Encrypt::On),
        "strict" => Ok(Encrypt::Strict),
        "false" | "no" | "optional" => Ok(Encrypt::Off),
        _ => Err(invalid(format!(
            "SQL Server connection string: {key} must be true, false, mandatory, optional or \
             strict, got {value:?}"
        ))),
    }
}

fn timeout(key: &str, value: &str) -> Result<Duration> {
    value
        .parse::<u64>()
        .ok()
        .filter(|s| *s > 0 && *s <= 3600)
        .map(Duration::from_secs)
        .ok_or_else(|| {
            invalid(format!(
                "SQL Server connection string: {key} must be 1-3600 seconds, got {value:?}"
            ))
        })
}

/// `tcp:HOST,PORT`, `HOST,PORT`, `HOST\INSTANCE` or `HOST`.
fn server(c: &mut MssqlConfig, value: &str) -> Result<()> {
    let v = value.strip_prefix("tcp:").unwrap_or(value);
    if let Some((host, port)) = v.split_once(',') {
        c.host = host.trim().to_owned();
        c.port = port.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
            invalid(format!(
                "SQL Server connection string: bad port in {value:?}"
            ))
        })?;
    } else if let Some((host, instance)) = v.split_once('\\') {
        c.host = host.trim().to_owned();
        c.instance = Some(instance.trim().to_owned()).filter(|i| !i.is_empty());
    } else {
        c.host = v.trim().to_owned();
    }
    if c.host == "." || c.host.eq_ignore_ascii_case("(local)") {
        c.host = "localhost".into();
    }
    Ok(())
}

/// Splits `key=value;…` honouring values quoted with `"` or `'` (a doubled quote is one quote).
fn pairs(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ';') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(invalid(
                "SQL Server connection string: a setting has no name",
            ));
        }
        while chars.peek().is_some_and(|c| *c == ' ') {
            chars.next();
        }
        let mut value = String::new();
        match chars.peek().copied() {
            Some(q @ ('"' | '\'')) => {
                chars.next();
                loop {
                    match chars.next() {
                        Some(c) if c == q => {
                            if chars.peek() == Some(&q) {
                                chars.next();
                                value.push(q);
                            } else {
                                break;
                            }
                        }
                        Some(c) => value.push(c),
                        None => {
                            return Err(invalid(format!(
                                "SQL Server connection string: unterminated quote in {key}"
                            )))
                        }
                    }
                }
                while chars.peek().is_some_and(|c| *c != ';') {
                    chars.next();
                }
            }
            _ => {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_owned();
            }
        }
        out.push((key, value));
    }
}

fn parse_ado(text: &str) -> Result<MssqlConfig> {
    let mut c = defaults();
    for (key, value) in pairs(text)? {
        match key.as_str() {
            "server" | "data source" | "address" | "addr" | "network address" => {
                server(&mut c, &value)?
            }
            "database" | "initial catalog" => c.database = value,
            "user id" | "uid" | "user" => c.user = value,
            "password" | "pwd" => c.password = value,
            "encrypt" => c.encrypt = encrypt(&key, &value)?,
            "trustservercertificate" | "trust server certificate" => {
                c.trust_server_certificate = boolean(&key, &value)?
            }
            "multisubnetfailover" | "multi subnet failover" => {
                c.multi_subnet_failover = boolean(&key, &value)?
            }
            "application name" | "app" => c.application_name = value,
            "connect timeout" | "connection timeout" | "timeout" => {
                c.connect_timeout = Some(timeout(&key, &value)?)
            }
            "integrated security" | "trusted_connection" | "authentication" => {
                return Err(invalid(format!(
                    "SQL Server connection string: {key} is not supported yet; use SQL \
                     authentication (User Id and Password)"
                )))
            }
            // Accepted and ignored: pooling and the like are Cuttle's own settings, and what
            // the Azure portal, RDS and SSMS put in the strings they hand out changes nothing
            // Cuttle does (it runs one statement at a time per connection, without MARS, and
            // bounds its statements itself).
            "pooling"
            | "min pool size"
            | "max pool size"
            | "persist security info"
            | "applicationintent"
            | "application intent"
            | "packet size"
            | "multipleactiveresultsets"
            | "multiple active result sets"
            | "command timeout"
            | "connect retry count"
            | "connectretrycount"
            | "connect retry interval"
            | "connectretryinterval"
            | "load balance timeout"
            | "workstation id"
            | "wsid" => {}
            other => {
                return Err(invalid(format!(
                    "SQL Server connection string: unknown setting {other:?}"
                )))
            }
        }
    }
    finish(c)
}

fn percent_decode(s: &str) -> Result<String> {
    super::percent_decode(s).ok_or_else(|| invalid("mssql:// URL: bad %-escape or not UTF-8"))
}

fn parse_url(rest: &str) -> Result<MssqlConfig> {
    let mut c = defaults();
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = main.split_once('/').unwrap_or((main, ""));
    let (creds, hostport) = authority
        .rsplit_once('@')
        .ok_or_else(|| invalid("mssql:// URL: no user (mssql://USER:PASSWORD@HOST:PORT/DB)"))?;
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    c.user = percent_decode(user)?;
    c.password = percent_decode(password)?;
    match hostport.rsplit_once(':') {
        Some((host, port)) => {
            c.host = host.to_owned();
            c.port = port
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid("mssql:// URL: bad port"))?;
        }
        None => c.host = hostport.to_owned(),
    }
    c.database = percent_decode(path.trim_end_matches('/'))?;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)?;
        match key.to_ascii_lowercase().as_str() {
            "encrypt" => c.encrypt = encrypt(key, &value)?,
            "trust_server_certificate" | "trustservercertificate" => {
                c.trust_server_certificate = boolean(key, &value)?
            }
            "multi_subnet_failover" | "multisubnetfailover" => {
                c.multi_subnet_failover = boolean(key, &value)?
            }
            "instance" => c.instance = Some(value).filter(|v| !v.is_empty()),
            "application_name" => c.application_name = value,
            "connect_timeout" => c.connect_timeout = Some(timeout(key, &value)?),
            other => {
                return Err(invalid(format!(
                    "mssql:// URL: unknown parameter {other:?}"
                )))
            }
        }
    }
    finish(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr;et'pw";

    #[test]
    fn ado_net_strings_with_synonyms_quotes_and_defaults() {
        let c = MssqlConfig::parse(
            "Server=tcp:db.example.com,1444;Database=cuttle;User Id=cuttle;\
             Password='s3cr;et''pw';Encrypt=true;TrustServerCertificate=false;\
             MultiSubnetFailover=True;Connect Timeout=15",
        )
        .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("db.example.com", 1444));
        assert_eq!((c.database.as_str(), c.user.as_str()), ("cuttle", "cuttle"));
        assert_eq!(c.password, SECRET);
        assert_eq!(c.encrypt, Encrypt::On);
        assert!(!c.trust_server_certificate && c.multi_subnet_failover);
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(15)));
        assert!(!format!("{c:?}").contains("s3cr"), "{c:?}");
        assert_eq!(c.describe(), "sqlserver db.example.com:1444/cuttle");

        let c = MssqlConfig::parse(
            r#"Data Source=sql01\PROD; Initial Catalog="cuttle"; UID=app; PWD=x"#,
        )
        .unwrap();
        assert_eq!(c.host, "sql01");
        assert_eq!(c.instance.as_deref(), Some("PROD"));
        assert_eq!(c.port, 1433);
        assert_eq!(c.encrypt, Encrypt::On, "encrypted unless told otherwise");
        assert_eq!(c.describe(), "sqlserver sql01\\PROD/cuttle");
        let c =
            MssqlConfig::parse("Server=.;Database=d;User=u;Password=p;Encrypt=optional").unwrap();
        assert_eq!((c.host.as_str(), c.encrypt), ("localhost", Encrypt::Off));
        let c = MssqlConfig::parse("Server=h;Database=d;User=u;Password=p;Encrypt=Strict").unwrap();
        assert_eq!(c.encrypt, Encrypt::Strict, "TDS 8.0");
    }

    /// What the Azure portal, SSMS and RDS hand out is taken as it is.
    #[test]
    fn strings_cloud_portals_and_tools_hand_out_are_accepted() {
        for text in [
            "Server=tcp:cuttle.database.windows.net,1433;Initial Catalog=cuttle;Persist Security \
             Info=False;User ID=cuttle;Password=s3cret;MultipleActiveResultSets=False;\
             Encrypt=True;TrustServerCertificate=False;Connection Timeout=30;",
            "Data Source=sql.example.com;Initial Catalog=cuttle;User ID=cuttle;Password=s3cret;\
             Connect Timeout=30;Encrypt=True;Trust Server Certificate=False;Application \
             Intent=ReadWrite;Multi Subnet Failover=False;Connect Retry Count=1;\
             Connect Retry Interval=10;Command Timeout=0",
            "Server=db.abc.eu-west-1.rds.amazonaws.com,1433;Database=cuttle;User Id=cuttle;\
             Password=s3cret;Encrypt=true;Workstation ID=build-01",
        ] {
            let c = MssqlConfig::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (c.database.as_str(), c.password.as_str()),
                ("cuttle", "s3cret")
            );
        }
    }

    #[test]
    fn urls_are_decoded() {
        let c = MssqlConfig::parse(
            "mssql://cuttle:s3cr%3Bet'pw@db:1433/cuttle?encrypt=true&trust_server_certificate=true",
        )
        .unwrap();
        assert_eq!(c.password, SECRET);
        assert_eq!(
            (c.host.as_str(), c.port, c.database.as_str()),
            ("db", 1433, "cuttle")
        );
        assert!(c.trust_server_certificate);
        let c = MssqlConfig::parse("mssql://u:p@db/cuttle").unwrap();
        assert_eq!(c.port, 1433);
    }

    #[test]
    fn mistakes_are_named_and_secrets_never_shown() {
        for (text, want) in [
            ("Database=d;User Id=u;Password=hunter2", "no server"),
            ("Server=h;User Id=u;Password=hunter2", "no database"),
            (
                "Server=h;Database=d;Integrated Security=SSPI",
                "not supported yet",
            ),
            (
                "Server=h;Database=d;User Id=u;Password=hunter2;Encrypt=maybe",
                "encrypt must be",
            ),
            (
                "Server=h,99999;Database=d;User Id=u;Password=hunter2",
                "bad port",
            ),
            (
                "Server=h;Database=d;User Id=u;Password='hunter2",
                "unterminated quote",
            ),
            (
                "Server=h;Database=d;User Id=u;Password=hunter2;Colour=red",
                "unknown setting",
            ),
            ("mssql://db/cuttle", "no user"),
            ("mssql://u:hunter2@db:x/cuttle", "bad port"),
            ("mssql://u:hunter2@db/cuttle?ssl=1", "unknown parameter"),
        ] {
            let err = MssqlConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains("hunter2"), "{text}: {err}");
        }
    }
}
