//! HTTPS that trusts exactly one server certificate, by its SHA-256 thumbprint: how
//! `cuttle-tentacle register` and `cuttle` reach a cluster that serves the API with its own
//! certificate (`CUTTLE_HTTP_TLS=cluster`), and how they make sure a server that merely *claims*
//! the pinned thumbprint never sees the API key — the check is on the certificate the TLS
//! handshake proves, before any request is sent.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::{ClientConnection, StreamOwned};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, TcpConnector,
    Transport, TransportAdapter,
};

use crate::{server_name, ByThumbprint, Result, Thumbprint, Trusted};

/// Which server certificates a pinned agent accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Exactly this one (`--server-thumbprint`); the name in the URL plays no part.
    Only(Thumbprint),
    /// This one (the cluster's own certificate, `CUTTLE_HTTP_TLS=cluster`), or else one a
    /// public certificate authority vouches for the name in the URL (a load balancer's).
    OrPublicCa(Thumbprint),
}

/// A ureq agent (with `config`) whose `https://` connections accept only the server
/// certificates `pin` allows, checked in the handshake before any request is sent. Plain
/// `http://` is left as it is.
pub fn pinned_agent(config: ureq::config::Config, pin: Pin) -> Result<ureq::Agent> {
    let provider = crate::provider();
    let (thumbprint, ca) = match pin {
        Pin::Only(t) => (t, None),
        Pin::OrPublicCa(t) => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| crate::Error::Config(rustls::Error::General(e.to_string())))?;
            (t, Some(webpki))
        }
    };
    let verifier = Arc::new(PinOrCa {
        pinned: ByThumbprint {
            trust: Trusted::new([thumbprint]),
            provider: provider.clone(),
        },
        ca,
    });
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous() // trust by thumbprint, not by a CA: the point of this module
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let connector = TcpConnector::default().chain(PinnedTls {
        config: Arc::new(tls),
        ca: matches!(pin, Pin::OrPublicCa(_)),
    });
    Ok(ureq::Agent::with_parts(
        config,
        connector,
        DefaultResolver::default(),
    ))
}

struct PinnedTls {
    config: Arc<rustls::ClientConfig>,
    /// Whether the URL's name is sent (a public CA's certificate is checked against it).
    ca: bool,
}

/// The pinned certificate, or (when allowed) one a public CA vouches for.
#[derive(Debug)]
struct PinOrCa {
    pinned: ByThumbprint,
    ca: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl rustls::client::danger::ServerCertVerifier for PinOrCa {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match (self.pinned.check(end_entity, now), &self.ca) {
            (Ok(()), _) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            (Err(_), Some(ca)) => {
                ca.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            }
            (Err(e), None) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.pinned.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.pinned.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.pinned.schemes()
    }
}

impl fmt::Debug for PinnedTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinnedTls")
    }
}

impl<In: Transport> Connector<In> for PinnedTls {
    type Out = Either<In, PinnedTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> std::result::Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        // The name only matters to a public CA's certificate (and SNI).
        let name = match (self.ca, details.uri.host()) {
            (true, Some(host)) => {
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .unwrap_or_else(|_| server_name())
            }
            _ => server_name(),
        };
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        // The handshake — and with it the check of the certificate — before any request.
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(PinnedTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// An HTTPS connection to the pinned server.
pub(crate) struct PinnedTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for PinnedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinnedTransport")
    }
}

impl Transport for PinnedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(
        &mut self,
        amount: usize,
        timeout: NextTimeout,
    ) -> std::result::Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> std::result::Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
