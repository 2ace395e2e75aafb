//! How the tentacle meets the cluster: it polls every gateway it knows (one session each,
//! reconnecting with backoff), or it listens for workers. Both are mutual TLS: the peer must
//! present the cluster certificate, and this tentacle presents its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cuttle_tls::{Identity, Trusted};
use tokio::net::{TcpListener, TcpStream};

use crate::agent::Agent;

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps a session with one gateway for ever: connect, serve until it ends, back off, again.
pub(crate) async fn poll(gateway: String, identity: Identity, cluster: Arc<Trusted>, agent: Agent) {
    let config = match cuttle_tls::client_config(&identity, cluster) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "TLS configuration");
            return;
        }
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut backoff = BACKOFF_START;
    loop {
        let session = async {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&gateway))
                .await
                .context("connect timed out")?
                .context("connect")?;
            let _ = tcp.set_nodelay(true);
            let tls = connector
                .connect(cuttle_tls::server_name(), tcp)
                .await
                .context("TLS handshake (is this the cluster's gateway?)")?;
            tracing::info!(%gateway, "connected to gateway");
            Ok::<_, anyhow::Error>(tls)
        };
        match session.await {
            Ok(tls) => {
                backoff = BACKOFF_START;
                // With TLS 1.3 a gateway that refuses this tentacle's certificate says so only
                // now, as the session's first message: the error then names the alert.
                let peer = cuttle_tls::peer_thumbprint(tls.get_ref().1);
                match cuttle_proto::wire::serve(tls, agent.clone().server(peer)).await {
                    Ok(()) => tracing::warn!(%gateway, "gateway closed the session"),
                    Err(e) => {
                        tracing::warn!(%gateway, error = %chain(e.as_ref()), "session with gateway lost")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%gateway, error = format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "cannot reach gateway")
            }
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// An error with its causes, outermost first.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Up to a quarter more, so tentacles that lost the same node do not return in lock-step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d / 4 * (nanos % 1000) / 1000
}

/// Connections from the cluster a listening tentacle holds at once (workers of every node
/// included), once their certificate is accepted; past this, new ones are closed.
const MAX_CONNECTIONS: usize = 256;
/// Connections still in their TLS handshake at once: past this, the one waiting longest is
/// ended to make room, so idle connections from anywhere cannot hold the door.
const MAX_HANDSHAKES: usize = 32;
/// Handshakes from one address at once; past this, new ones are closed at once.
const MAX_HANDSHAKES_PER_PEER: usize = 8;
/// A peer gets this long to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts workers' connections on `addr` until the process ends. Whoever can reach the port
/// can open connections without a certificate; these limits keep them from crowding out the
/// cluster: a handshake deadline, a cap per peer address and in all, and a pause (not a spin)
/// when accepting fails, as it does when the process runs out of file descriptors.
pub(crate) async fn listen(
    addr: SocketAddr,
    identity: Identity,
    cluster: Arc<Trusted>,
    agent: Agent,
) -> Result<()> {
    let config = cuttle_tls::server_config(&identity, cluster)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "listening for the cluster");
    let agent = Arc::new(agent);
    let admission = cuttle_proto::admission::Admission::new(cuttle_proto::admission::Limits {
        max_pending: MAX_HANDSHAKES,
        max_pending_per_peer: MAX_HANDSHAKES_PER_PEER,
        max_established: MAX_CONNECTIONS,
    });
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(handshake) = admission.begin(peer.ip()) else {
            tracing::debug!(%peer, "too many handshakes from one address; closed");
            continue;
        };
        let acceptor = acceptor.clone();
        let (agent, admission) = (agent.clone(), admission.clone());
        tokio::spawn(async move {
            // Refused here, before any request is read, unless the peer holds the cluster
            // certificate; a handshake that waits too long makes room for newer ones.
            let shaken = tokio::select! {
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
                () = handshake.evicted() => {
                    tracing::debug!(%peer, "handshake ended to make room");
                    return;
                }
            };
            drop(handshake);
            match shaken {
                Ok(Ok(tls)) => {
                    let Some(_place) = admission.establish() else {
                        tracing::warn!(%peer, "too many connections from the cluster; closed");
                        return;
                    };
                    let peer_cert = cuttle_tls::peer_thumbprint(tls.get_ref().1);
                    if let Err(e) =
                        cuttle_proto::wire::serve(tls, (*agent).clone().server(peer_cert)).await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                Ok(Err(e)) => tracing::warn!(%peer, error = %e, "refused a connection"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
