//! The gateway role: the endpoint polling tentacles connect to (port 10943).
//!
//! For now it only holds its port, so the node registers a real gateway address and load
//! balancers can pass the port through. Until the tentacle protocol lands, it closes every
//! connection at once, before reading anything: no command can arrive through it.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why the gateway stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("accept tentacle connection: {0}")]
    Accept(std::io::Error),
}

/// Serves the gateway on a bound listener until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(
        ?addr,
        "gateway listening (tentacle protocol not enabled yet)"
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "closing tentacle connection: protocol not enabled yet");
                    drop(stream);
                }
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept tentacle connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(Error::Accept(e)),
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn closes_connections_without_reading() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, stop.clone()));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            conn.read(&mut buf).await.unwrap(),
            0,
            "closed straight away"
        );
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
