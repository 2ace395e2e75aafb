//! The API over HTTPS: the certificate it serves, and the reload of one given as files (on
//! SIGHUP, or when either file changes). The listener itself is [`crate::listener`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cuttle_tls::ServedCertificate;
use tokio_util::sync::CancellationToken;

/// How often the certificate files are looked at for a change.
const FILE_POLL: Duration = Duration::from_secs(2);

/// How the API serves HTTPS.
#[derive(Debug, Clone)]
pub struct Https {
    /// What new connections are presented.
    pub served: Arc<ServedCertificate>,
    /// The certificate and key files to reload it from; `None` for the cluster certificate.
    pub files: Option<(PathBuf, PathBuf)>,
}

/// Reloads the served certificate from `files` on SIGHUP and whenever either file changes,
/// until `shutdown`. A pair that does not load (half-written, mismatched) is logged and the
/// current certificate kept; open connections are never touched.
pub(crate) fn watch(
    files: (PathBuf, PathBuf),
    served: Arc<ServedCertificate>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: the certificate reloads on file change only");
                None
            }
        };
        let mut seen = modified(&files);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let why = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hup => "SIGHUP",
                _ = tokio::time::sleep(FILE_POLL) => {
                    let now = modified(&files);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "file change"
                }
            };
            reload(&files, &served, why);
        }
    });
}

fn modified(files: &(PathBuf, PathBuf)) -> (Option<SystemTime>, Option<SystemTime>) {
    let at = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (at(&files.0), at(&files.1))
}

fn reload(files: &(PathBuf, PathBuf), served: &ServedCertificate, why: &str) {
    let loaded = std::fs::read(&files.0)
        .map_err(|e| format!("read {}: {e}", files.0.display()))
        .and_then(|cert| {
            std::fs::read(&files.1)
                .map_err(|e| format!("read {}: {e}", files.1.display()))
                .map(|key| (cert, key))
        })
        .and_then(|(cert, key)| {
            cuttle_tls::certified_key_from_pem(&cert, &key).map_err(|e| e.to_string())
        });
    match loaded {
        Ok(key) => {
            served.replace(key);
            tracing::info!(why, thumbprint = ?served.thumbprint().map(|t| t.to_string()), "HTTPS certificate reloaded");
        }
        Err(e) => {
            tracing::error!(why, error = %e, "HTTPS certificate not reloaded; the current one stays")
        }
    }
}
