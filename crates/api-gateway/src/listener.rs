//! The API's listener: accepts connections, completes TLS when asked, and serves HTTP/1.1 on
//! each with limits that keep one client from starving the rest (slowloris and the like): a
//! cap on open connections, a smaller one per client address (not for trusted proxies, whose
//! connections carry many clients), a deadline for each request's headers, and a TLS
//! handshake deadline. Handshakes and header reads run on each connection's own task, never
//! on the accept path. HTTP/2 connections (the public gRPC API) have limits of their own
//! (`h2.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use cuttle_core::TrustedProxies;
use cuttle_proto::per_address::PerAddress;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// A client gets this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections the listener holds open, and for how long a request may dawdle.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Open connections at once; past this, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Open connections from one client address; past this, new ones are closed at once.
    pub max_per_client: usize,
    /// Time to receive a request's headers, from the connection's start or the end of the
    /// previous response; a connection that takes longer is closed.
    pub header_timeout: Duration,
    /// Time to receive a request's body once its headers are in; past it, 408.
    pub body_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            max_per_client: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

mod h2;

/// What a listener speaks: HTTP/1.1 (REST, the web UI) or HTTP/2 (gRPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// Serves `app` on `listener` until `shutdown`, then lets in-flight requests finish.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: ConnectionLimits,
    trusted: TrustedProxies,
    shutdown: CancellationToken,
    protocol: Protocol,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_client = Arc::new(PerAddress::default());
    // gRPC: calls open at once per client address, over all its connections.
    let calls = Arc::new(PerAddress::default());
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "accept an API connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let exempt = trusted.contains(peer.ip());
        let Some(client) = per_client.enter(peer.ip(), limits.max_per_client, exempt) else {
            tracing::debug!(%peer, limit = limits.max_per_client, "too many connections from one client; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, acceptor, stop) = (app.clone(), acceptor.clone(), shutdown.clone());
        let header_timeout = limits.header_timeout;
        let grpc = h2::Client {
            peer,
            calls: calls.clone(),
            max_calls: limits.max_per_client,
            exempt,
            idle_timeout: header_timeout,
        };
        tracker.spawn(async move {
            let _held = (permit, client);
            match acceptor {
                None if protocol == Protocol::Http2 => {
                    h2::serve_connection(stream, grpc, app, stop).await
                }
                None => serve_connection(stream, peer, app, header_timeout, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) if protocol == Protocol::Http2 => {
                            h2::serve_connection(tls, grpc, app, stop).await
                        }
                        Ok(Ok(tls)) => serve_connection(tls, peer, app, header_timeout, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            // What handlers read as the socket peer (audit events, trusted proxies).
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "API connection ended");
    }
}
