//! The tentacle's home: its certificate, its key (mode 0600) and its configuration.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cuttle_tls::{Identity, Thumbprint};
use serde::{Deserialize, Serialize};

/// Lifetime of a tentacle certificate.
const CERT_DAYS: u32 = 10 * 365;

/// What `register` learnt and `run` needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) comms: String,
    pub(crate) server: String,
    pub(crate) target_id: String,
    /// The cluster certificate's thumbprint: the only server this tentacle talks to.
    pub(crate) cluster_thumbprint: String,
    /// Gateways a polling tentacle connects to (host:port).
    #[serde(default)]
    pub(crate) gateways: Vec<String>,
    /// Where a listening tentacle listens.
    #[serde(default)]
    pub(crate) listen: Option<String>,
}

pub(crate) struct Home(PathBuf);

impl Home {
    pub(crate) fn new(dir: PathBuf) -> Home {
        Home(dir)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.0
    }

    fn cert(&self) -> PathBuf {
        self.0.join("tentacle.crt")
    }

    fn key(&self) -> PathBuf {
        self.0.join("tentacle.key")
    }

    fn config(&self) -> PathBuf {
        self.0.join("tentacle.toml")
    }

    /// Creates the certificate and key; refuses to replace them unless `force`.
    pub(crate) fn new_certificate(&self, force: bool) -> Result<Identity> {
        if self.cert().exists() && !force {
            bail!(
                "{} already exists: the cluster trusts its thumbprint; use --force to replace it \
                 (and register the new thumbprint)",
                self.cert().display()
            );
        }
        std::fs::create_dir_all(&self.0).with_context(|| format!("create {}", self.0.display()))?;
        let identity = Identity::generate("cuttle-tentacle", CERT_DAYS)?;
        let (cert, key) = identity.to_pem();
        write_file(&self.key(), key.as_bytes(), 0o600)?;
        write_file(&self.cert(), cert.as_bytes(), 0o644)?;
        Ok(identity)
    }

    pub(crate) fn identity(&self) -> Result<Identity> {
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).with_context(|| {
                format!(
                    "read {} (run `cuttle-tentacle new-certificate` first)",
                    p.display()
                )
            })
        };
        Identity::from_pem(&read(self.cert())?, &read(self.key())?)
            .with_context(|| format!("certificate in {}", self.0.display()))
    }

    pub(crate) fn load(&self) -> Result<Config> {
        let path = self.config();
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "read {} (run `cuttle-tentacle register` first)",
                path.display()
            )
        })?;
        let config: Config =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        config
            .cluster_thumbprint
            .parse::<Thumbprint>()
            .with_context(|| format!("cluster_thumbprint in {}", path.display()))?;
        Ok(config)
    }

    pub(crate) fn save(&self, config: &Config) -> Result<()> {
        let text = toml::to_string(config).context("serialise configuration")?;
        write_file(&self.config(), text.as_bytes(), 0o600)
    }
}

/// Writes a whole file under a temporary name and renames it into place.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename into {}", path.display()))
}
