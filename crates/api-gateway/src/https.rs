//! The API over HTTPS: a listener that completes TLS handshakes off the accept path, and the
//! reload of a certificate given as files (on SIGHUP, or when either file changes).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cuttle_tls::ServedCertificate;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// A slow or silent client gets this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; past this, new connections wait to be accepted.
const MAX_HANDSHAKES: usize = 1024;
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

/// Accepts TCP connections and hands axum those whose TLS handshake completed. Handshakes run
/// on tasks of their own, so one slow client never holds up the next.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub(crate) fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = tcp.accept() => a,
                };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "accept an HTTPS connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The acceptor stopped: shutdown is under way, and axum stops accepting with it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
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
