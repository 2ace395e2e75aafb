//! gRPC over an established connection (a TLS stream), in either direction. A polling
//! tentacle opens the connection but serves gRPC on it, and the gateway that accepted it calls
//! in: HTTP/2's client and server roles are independent of who dialled.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// How often an idle session is pinged, and how long a ping may go unanswered: a peer that
/// vanished without closing its connection (a cut cable, a frozen VM) is noticed in seconds.
const KEEPALIVE: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `service` (a generated tonic server) on one connection until it closes.
pub async fn serve<IO, S>(io: IO, service: S) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .serve_connection(
            TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(service),
        )
        .await
        .map_err(Into::into)
}

/// A gRPC channel over one connection, for generated tonic clients. Cheap to clone; calls
/// fail once the connection is gone.
#[derive(Clone, Debug)]
pub struct Channel {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
}

/// Opens an HTTP/2 client session on `io`. Returns the channel and a future that completes
/// when the connection ends (the session is over).
pub async fn connect<IO>(io: IO) -> Result<(Channel, impl Future<Output = ()> + Send), BoxError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(io))
        .await?;
    let closed = async move {
        let _ = conn.await;
    };
    Ok((Channel { send }, closed))
}

impl Channel {
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        // HTTP/2 requests carry a scheme and an authority; the connection is already chosen,
        // so they are placeholders.
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        if let Ok(uri) = format!("http://cuttle{path}").parse() {
            *req.uri_mut() = uri;
        }
        Box::pin(self.send.send_request(req))
    }
}

/// How long a TLS handshake on the internal port may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `service` on every connection `listener` accepts, over mutual TLS: only peers the
/// acceptor's configuration trusts get past the handshake, before any request is read. Stops
/// accepting when `shutdown` completes.
pub async fn serve_tls<S>(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    service: S,
    admission: std::sync::Arc<crate::admission::Admission>,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept on the internal gRPC port");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(handshake) = admission.begin(peer.ip()) else {
            tracing::debug!(%peer, "too many handshakes from one address; closed");
            continue;
        };
        let (acceptor, service, admission) = (acceptor.clone(), service.clone(), admission.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let shaken = tokio::select! {
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
                () = handshake.evicted() => {
                    tracing::debug!(%peer, "internal gRPC handshake ended to make room");
                    return;
                }
            };
            drop(handshake);
            match shaken {
                Ok(Ok(tls)) => {
                    let Some(_place) = admission.establish() else {
                        tracing::warn!(%peer, "internal gRPC connection refused: too many open");
                        return;
                    };
                    if let Err(e) = serve(tls, service).await {
                        tracing::debug!(%peer, error = %e, "internal gRPC connection ended");
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "refused an internal gRPC connection")
                }
                Err(_) => {
                    tracing::warn!(%peer, "refused an internal gRPC connection: handshake timed out")
                }
            }
        });
    }
}

/// A lazily connecting, reconnecting gRPC channel to another node's internal port, over mutual
/// TLS with the cluster certificate (each side must present one the cluster accepts).
pub fn cluster_channel(
    addr: &str,
    cluster: &cuttle_tls::ClusterTls,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, BoxError> {
    let connector = tokio_rustls::TlsConnector::from(cluster.client_config()?);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(connect_timeout);
    let dial = tower::service_fn(move |uri: http::Uri| {
        let connector = connector.clone();
        async move {
            let authority = uri
                .authority()
                .map(ToString::to_string)
                .ok_or_else(|| std::io::Error::other("no address"))?;
            let tcp = TcpStream::connect(authority).await?;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(cuttle_tls::server_name(), tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(dial))
}
