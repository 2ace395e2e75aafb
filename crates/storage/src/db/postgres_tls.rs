//! TLS to PostgreSQL through rustls, with libpq's `sslmode` and `sslrootcert`.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and no `sslrootcert`, so Cuttle
//! takes both parameters off the connection string itself, gives the driver the mode it knows
//! (`verify-*` become `require`), and decides in its own certificate verifier what a mode
//! checks:
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers it | not checked |
//! | `require` | always | not checked; with `sslrootcert`, must chain to it (as libpq) |
//! | `verify-ca` | always | must chain to `sslrootcert` (or the host's trusted CAs) |
//! | `verify-full` | always | as `verify-ca`, and must name the host connected to |

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode as DriverMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_rustls::client::TlsStream;

use crate::{Error, Result};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(v: &str) -> Result<SslMode> {
        Ok(match v {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // `allow` prefers plain text: never what a cluster's database connection wants.
            other => {
                return Err(Error::InvalidUrl(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                )))
            }
        })
    }

    /// The mode tokio-postgres negotiates with; the checking is the verifier's.
    pub(super) fn driver_mode(self) -> DriverMode {
        match self {
            SslMode::Disable => DriverMode::Disable,
            SslMode::Prefer => DriverMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverMode::Require,
        }
    }
}

/// The TLS parameters of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsParams {
    pub(super) mode: SslMode,
    pub(super) root_cert: Option<PathBuf>,
}

impl TlsParams {
    /// Whether the server's certificate is checked at all (`verify-ca`, `verify-full`, or
    /// `require` with `sslrootcert`): otherwise anyone on the path can pose as the database.
    pub(super) fn verifies(&self) -> bool {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => self.root_cert.is_some(),
            SslMode::Disable | SslMode::Prefer => false,
        }
    }

    /// The mode as written in a connection string.
    pub(super) fn mode_name(&self) -> &'static str {
        match self.mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Takes `sslmode` and `sslrootcert` off a `postgres://` URL or a `key=value` string, and
/// returns the rest for tokio-postgres.
pub(super) fn split(url: &str) -> Result<(String, TlsParams)> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<bool> {
        match key {
            "sslmode" => mode = Some(SslMode::parse(value)?),
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((head, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(k, &percent_decode(v)?)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    head.to_owned()
                } else {
                    format!("{head}?{}", kept.join("&"))
                }
            }
        }
    } else {
        // key=value form; Cuttle's two keys take plain values (no quotes or spaces).
        let mut kept = Vec::new();
        for item in url.split_whitespace() {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            if !take(k.trim(), v.trim())? {
                kept.push(item);
            }
        }
        kept.join(" ")
    };
    Ok((
        rest,
        TlsParams {
            mode: mode.unwrap_or(SslMode::Prefer),
            root_cert,
        },
    ))
}

fn percent_decode(v: &str) -> Result<String> {
    super::percent_decode(v)
        .ok_or_else(|| Error::InvalidUrl(format!("bad %-escape or not UTF-8 in {v:?}")))
}

/// Makes rustls connections for tokio-postgres as `params` ask.
#[derive(Clone)]
pub(super) struct MakeRustls {
    connector: tokio_rustls::TlsConnector,
}

impl MakeRustls {
    pub(super) fn new(params: &TlsParams) -> Result<MakeRustls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = match (params.mode, &params.root_cert) {
            (SslMode::Disable | SslMode::Prefer | SslMode::Require, None) => None,
            (_, root) => Some(webpki(root.as_ref(), &provider)?),
        };
        let verifier = Arc::new(ModeVerifier {
            chain,
            check_name: params.mode == SslMode::VerifyFull,
            provider: provider.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidUrl(format!("TLS settings: {e}")))?
            .dangerous() // the verifier above implements sslmode's rules
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

/// The CAs `sslrootcert` names, or the host's trusted ones, in rustls' standard verifier.
fn webpki(
    root: Option<&PathBuf>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>> {
    let mut roots = RootCertStore::empty();
    match root {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| Error::InvalidUrl(format!("sslrootcert {}: {e}", path.display())))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    Error::InvalidUrl(format!("sslrootcert {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    Error::InvalidUrl(format!("sslrootcert {}: {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(Error::InvalidUrl(format!(
                    "sslrootcert {} holds no PEM certificate",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert); // one unreadable system CA does not fail the others
            }
            if roots.is_empty() {
                return Err(Error::InvalidUrl(
                    "sslmode verify-ca/verify-full: no trusted CA certificates on this host; \
                     give sslrootcert=PATH"
                        .into(),
                ));
            }
        }
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::InvalidUrl(format!("TLS settings: {e}")))
}

/// What `sslmode` checks of the server's certificate. Without `chain` (`prefer`/`require`
/// without a root certificate) nothing, as libpq: the connection is encrypted, the certificate
/// taken as it is. With it, the chain must reach a trusted CA, and with `check_name`
/// (`verify-full`) the certificate must name the host. The handshake's signatures are always
/// checked, so the session is with whoever holds the presented certificate's key.
#[derive(Debug)]
struct ModeVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ModeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnect {
            name,
            connector: self.connector.clone(),
        })
    }
}

pub(super) struct RustlsConnect {
    name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = self.connector.connect(self.name, stream).await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// A TLS session with the server. It offers no channel binding, so SCRAM authenticates
/// without it (tokio-postgres's default `channel_binding=prefer` allows that).
pub(super) struct RustlsStream<S>(Box<TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mode: SslMode, root: Option<&str>) -> TlsParams {
        TlsParams {
            mode,
            root_cert: root.map(PathBuf::from),
        }
    }

    #[test]
    fn tls_parameters_come_off_the_url() {
        let (rest, p) = split(
            "postgres://u:pw@db:5432/cuttle?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:pw@db:5432/cuttle?application_name=x");
        assert_eq!(p, params(SslMode::VerifyFull, Some("/etc/ca.pem")));
        let (rest, p) = split("postgres://db/cuttle?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://db/cuttle");
        assert_eq!(p, params(SslMode::Require, None));
        let (rest, p) = split("postgres://db/cuttle").unwrap();
        assert_eq!(rest, "postgres://db/cuttle");
        assert_eq!(p, params(SslMode::Prefer, None), "libpq's default");
    }

    #[test]
    fn tls_parameters_come_off_key_value_strings() {
        let (rest, p) =
            split("host=db dbname=cuttle sslmode=verify-ca sslrootcert=/ca.pem user=u").unwrap();
        assert_eq!(rest, "host=db dbname=cuttle user=u");
        assert_eq!(p, params(SslMode::VerifyCa, Some("/ca.pem")));
    }

    #[test]
    fn unknown_modes_and_missing_files_are_named() {
        let e = split("postgres://db/c?sslmode=allow")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode=allow"), "{e}");
        let e = MakeRustls::new(&params(SslMode::VerifyFull, Some("/nonexistent/ca.pem")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn modes_map_to_what_the_driver_negotiates() {
        assert_eq!(SslMode::Disable.driver_mode(), DriverMode::Disable);
        assert_eq!(SslMode::Prefer.driver_mode(), DriverMode::Prefer);
        for m in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            assert_eq!(m.driver_mode(), DriverMode::Require);
        }
    }
}
