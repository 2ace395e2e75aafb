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
    /// The cluster certificate's thumbprint pinned at registration.
    pub(crate) cluster_thumbprint: String,
    /// The cluster certificates trusted since the cluster last said (at a health check); while
    /// empty, only `cluster_thumbprint`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) cluster_thumbprints: Vec<String>,
    /// Gateways a polling tentacle connects to (host:port).
    #[serde(default)]
    pub(crate) gateways: Vec<String>,
    /// Where a listening tentacle listens.
    #[serde(default)]
    pub(crate) listen: Option<String>,
}

impl Config {
    /// The cluster certificates this tentacle talks to.
    pub(crate) fn trusted_clusters(&self) -> Result<Vec<Thumbprint>> {
        if self.cluster_thumbprints.is_empty() {
            return Ok(vec![self.cluster_thumbprint.parse()?]);
        }
        self.cluster_thumbprints
            .iter()
            .map(|t| t.parse().map_err(Into::into))
            .collect()
    }
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
        self.create_private_dir()?;
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
            .trusted_clusters()
            .with_context(|| format!("cluster thumbprints in {}", path.display()))?;
        Ok(config)
    }

    pub(crate) fn save(&self, config: &Config) -> Result<()> {
        let text = toml::to_string(config).context("serialise configuration")?;
        write_file(&self.config(), text.as_bytes(), 0o600)
    }
}

impl Home {
    /// The home, readable by this user only (made so when it already exists: it holds the
    /// private key).
    fn create_private_dir(&self) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.0)
            .with_context(|| format!("create {}", self.0.display()))?;
        std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("make {} private", self.0.display()))
    }
}

/// Writes a whole file under a unique temporary name (created new, with `mode` from the start:
/// never a file someone else placed or linked there) and renames it into place.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce).context("random temporary name")?;
    let tmp = path.with_extension(format!(
        "tmp-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(nonce)
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename into {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_home_and_the_key_are_private_from_creation() {
        let base = std::env::temp_dir().join(format!("cuttle-home-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        // An existing home others can read is made private.
        std::fs::create_dir_all(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = Home::new(base.clone());
        home.new_certificate(false).unwrap();
        assert_eq!(mode(&base), 0o700);
        assert_eq!(mode(&home.key()), 0o600);
        assert_eq!(mode(&home.cert()), 0o644);
        // Replaced in place, nothing left under a temporary name.
        home.new_certificate(true).unwrap();
        let names: Vec<String> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
        assert_eq!(mode(&home.key()), 0o600);
        let _ = std::fs::remove_dir_all(&base);
    }
}
