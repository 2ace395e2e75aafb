//! The gateway role: the endpoint polling tentacles connect to (port 10943), and the relay that
//! lets a worker on any node reach them.
//!
//! A tentacle connects out and proves its identity with its certificate; a connection whose
//! certificate is not a registered polling target's is refused during the TLS handshake, before
//! anything is read. Over an accepted connection the roles reverse: the tentacle serves the
//! `Tentacle` gRPC service and the gateway calls it. One session per tentacle and gateway is
//! kept in memory and recorded in the database (`target_sessions`), which is how a worker
//! anywhere in the cluster finds a gateway that can reach a target.

mod relay;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cuttle_core::{Comms, TargetId};
use cuttle_proto::wire::Channel;
use cuttle_storage::Store;
use cuttle_tls::{Identity, Thumbprint, TrustStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use relay::TentacleRelayService;

/// How often the set of trusted tentacle certificates is re-read from the database: a newly
/// registered tentacle is accepted within this long (it retries with backoff meanwhile).
const TRUST_REFRESH: Duration = Duration::from_secs(2);
/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the gateway stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("accept tentacle connection: {0}")]
    Accept(std::io::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] cuttle_tls::Error),
}

/// One tentacle's session: which connection, the certificate it presented, and how to end it.
struct Session {
    serial: u64,
    channel: Channel,
    thumbprint: Thumbprint,
    cut: CancellationToken,
}

/// The live sessions this gateway holds, by target. Shared with the relay service.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<TargetId, Session>>>,
}

impl Sessions {
    /// The session with target `id`, and the certificate its tentacle presented.
    pub(crate) fn get(&self, id: TargetId) -> Option<(Channel, Thumbprint)> {
        self.lock()
            .get(&id)
            .map(|s| (s.channel.clone(), s.thumbprint))
    }

    fn insert(&self, id: TargetId, session: Session) {
        self.lock().insert(id, session);
    }

    /// Removes the session unless a newer one replaced it; true when removed.
    fn remove(&self, id: TargetId, serial: u64) -> bool {
        let mut map = self.lock();
        if map.get(&id).is_some_and(|s| s.serial == serial) {
            map.remove(&id);
            true
        } else {
            false
        }
    }

    /// Ends, at once, every session whose certificate is no longer the one registered for its
    /// target (the thumbprint changed, or the target was deleted): no more work goes to it.
    pub(crate) fn cut_unless(&self, still_trusted: impl Fn(TargetId, &Thumbprint) -> bool) {
        for (id, s) in self.lock().iter() {
            if !still_trusted(*id, &s.thumbprint) && !s.cut.is_cancelled() {
                tracing::warn!(target = %id, thumbprint = %s.thumbprint, "cutting the session of a certificate no longer registered for its target");
                s.cut.cancel();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TargetId, Session>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The registered polling tentacles: thumbprint → target. Read by the TLS handshake. An unknown
/// certificate asks for a refresh now (a tentacle registered a moment ago, on any node, is
/// let in at its next attempt rather than after the periodic refresh), at most every
/// [`UNKNOWN_REFRESH_GAP`].
#[derive(Debug, Default)]
struct PollingTargets(Mutex<HashMap<Thumbprint, TargetId>>, tokio::sync::Notify);

/// The least time between two refreshes asked for by unknown certificates.
const UNKNOWN_REFRESH_GAP: Duration = Duration::from_millis(250);

impl PollingTargets {
    fn target(&self, t: &Thumbprint) -> Option<TargetId> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(t)
            .copied()
    }

    async fn refresh(&self, store: &Store) {
        match store.list_targets(None, Duration::ZERO).await {
            Ok(targets) => {
                let map = targets
                    .into_iter()
                    .filter(|t| t.comms == Comms::Polling)
                    .filter_map(|t| Some((t.thumbprint.parse().ok()?, t.id)))
                    .collect();
                *self.0.lock().unwrap_or_else(|p| p.into_inner()) = map;
            }
            Err(e) => tracing::debug!(error = %e, "refresh trusted tentacles"),
        }
    }
}

impl TrustStore for PollingTargets {
    fn trusts(&self, thumbprint: &Thumbprint) -> bool {
        let known = self.target(thumbprint).is_some();
        if !known {
            self.1.notify_one();
        }
        known
    }
}

/// What the gateway needs from the node.
pub struct GatewayDeps {
    pub node_name: String,
    pub store: Store,
    /// The cluster certificate, presented to every tentacle.
    pub identity: Identity,
    pub sessions: Sessions,
    /// Handshakes and sessions the gateway admits at once.
    pub admission: std::sync::Arc<cuttle_proto::admission::Admission>,
}

/// Serves the gateway on a bound listener until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    deps: GatewayDeps,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let targets = Arc::new(PollingTargets::default());
    targets.refresh(&deps.store).await;
    let acceptor = tokio_rustls::TlsAcceptor::from(cuttle_tls::server_config(
        &deps.identity,
        targets.clone(),
    )?);
    tracing::info!(?addr, "gateway listening for polling tentacles");
    let refresher = {
        let (targets, store, stop) = (targets.clone(), deps.store.clone(), shutdown.clone());
        let sessions = deps.sessions.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(TRUST_REFRESH) => {}
                    _ = targets.1.notified() => {}
                }
                targets.refresh(&store).await;
                sessions.cut_unless(|id, t| targets.target(t) == Some(id));
                tokio::time::sleep(UNKNOWN_REFRESH_GAP).await;
            }
        })
    };
    let deps = Arc::new(deps);
    let mut serial = 0u64;
    let result = loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept tentacle connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => break Err(Error::Accept(e)),
            },
        };
        serial += 1;
        let Some(handshake) = deps.admission.begin(peer.ip()) else {
            tracing::debug!(%peer, "too many handshakes from one address; closed");
            continue;
        };
        let (acceptor, targets, deps, stop) = (
            acceptor.clone(),
            targets.clone(),
            deps.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let shaken = tokio::select! {
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
                () = handshake.evicted() => {
                    tracing::debug!(%peer, "tentacle handshake ended to make room");
                    return;
                }
            };
            drop(handshake);
            let Some(_place) = deps.admission.establish() else {
                tracing::warn!(%peer, "refused a tentacle connection: too many open");
                return;
            };
            let tls = match shaken {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "refused a tentacle connection");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "refused a tentacle connection: handshake timed out");
                    return;
                }
            };
            let Some(thumbprint) = cuttle_tls::peer_thumbprint(tls.get_ref().1) else {
                return; // unreachable in practice: the handshake required a certificate
            };
            let Some(target) = targets.target(&thumbprint) else {
                return; // unreachable in practice: the handshake checked the same map
            };
            session(tls, target, thumbprint, serial, peer, &deps, stop).await;
        });
    };
    refresher.abort();
    result
}

/// Holds one tentacle's session until it ends, recording it in the database meanwhile.
async fn session<IO>(
    tls: IO,
    target: TargetId,
    thumbprint: Thumbprint,
    serial: u64,
    peer: SocketAddr,
    deps: &GatewayDeps,
    stop: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (channel, closed) = match cuttle_proto::wire::connect(tls).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%peer, %target, error = %e, "tentacle session could not start");
            return;
        }
    };
    let cut = stop.child_token();
    deps.sessions.insert(
        target,
        Session {
            serial,
            channel,
            thumbprint,
            cut: cut.clone(),
        },
    );
    tracing::info!(%peer, %target, "tentacle connected");
    if let Err(e) = deps.store.open_session(target, &deps.node_name).await {
        tracing::warn!(%target, error = %e, "record tentacle session");
    }
    // Cut (or shut down): returning drops the connection, which closes it.
    tokio::select! {
        _ = closed => tracing::info!(%peer, %target, "tentacle disconnected"),
        _ = cut.cancelled() => {}
    }
    if deps.sessions.remove(target, serial) {
        if let Err(e) = deps
            .store
            .close_sessions(Some(target), &deps.node_name)
            .await
        {
            tracing::warn!(%target, error = %e, "clear tentacle session");
        }
    }
}

/// Errors that concern one connection or a momentary resource shortage, not the listener.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
        || e.raw_os_error() == Some(24) // EMFILE: too many open files
        || e.raw_os_error() == Some(23) // ENFILE
}
