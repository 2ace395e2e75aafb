//! One HTTP/2 connection of the public gRPC listener, kept within what one client may hold: a
//! connection that has no call open for the header deadline (from its start, or since its last
//! call ended) is closed, as an idle HTTP/1.1 connection is; at most
//! [`MAX_STREAMS_PER_CONNECTION`] calls at once on it, and at most `max_per_client` calls at
//! once from one client address over all its connections (trusted proxies exempt).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use cuttle_proto::per_address::{AddressSlot, PerAddress};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Calls one client may have open at once on one connection.
pub(super) const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// How often a connection looks at whether it has been idle too long.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// What is open on one connection, and since when nothing has been.
struct Activity {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    /// How long nothing has been open (`None` while a call is).
    fn idle_for(&self) -> Option<Duration> {
        (self.open.load(Ordering::SeqCst) == 0).then(|| {
            self.idle_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
        })
    }
}

/// One call in flight: counted open until its response has been sent (or dropped).
struct Open {
    activity: Arc<Activity>,
    _client: AddressSlot,
}

impl Drop for Open {
    fn drop(&mut self) {
        *self
            .activity
            .idle_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.activity.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its call counted until it ends.
struct Tracked {
    inner: Body,
    _open: Open,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What a connection needs to know of its client and the listener's limits.
pub(super) struct Client {
    pub(super) peer: SocketAddr,
    pub(super) calls: Arc<PerAddress>,
    pub(super) max_calls: usize,
    pub(super) exempt: bool,
    pub(super) idle_timeout: Duration,
}

/// Serves gRPC calls on one connection until it ends, idles out or `shutdown`.
pub(super) async fn serve_connection<IO>(
    io: IO,
    client: Client,
    app: Router,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        open: AtomicUsize::new(0),
        idle_since: Mutex::new(Instant::now()),
    });
    let (peer, calls, seen) = (client.peer, client.calls.clone(), activity.clone());
    let (max_calls, exempt) = (client.max_calls, client.exempt);
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let (app, calls, activity) = (app.clone(), calls.clone(), seen.clone());
            async move {
                let Some(slot) = calls.enter(peer.ip(), max_calls, exempt) else {
                    let refused = tonic::Status::resource_exhausted(format!(
                        "at most {max_calls} calls at once from one client address"
                    ));
                    return Ok(refused.into_http::<Body>());
                };
                activity.open.fetch_add(1, Ordering::SeqCst);
                let open = Open {
                    activity,
                    _client: slot,
                };
                // What handlers read as the socket peer (audit events, trusted proxies).
                req.extensions_mut().insert(ConnectInfo(peer));
                let resp = app.oneshot(req).await?;
                Ok::<_, std::convert::Infallible>(
                    resp.map(|inner| Body::new(Tracked { inner, _open: open })),
                )
            }
        });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        // A client that vanished without closing is noticed.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(IDLE_CHECK);
    let mut closing = false;
    let ended = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                // Nothing open for as long as a client may take to send a request's headers
                // (a client that never even started HTTP/2 among them): closed.
                if activity.idle_for().is_some_and(|d| d >= client.idle_timeout) {
                    tracing::debug!(%peer, "idle gRPC connection closed");
                    return;
                }
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "gRPC connection ended");
    }
}
