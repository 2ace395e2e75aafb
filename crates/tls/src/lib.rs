//! Mutual TLS between nodes and tentacles, trusted by certificate thumbprint (SHA-256 of the DER
//! certificate) rather than by a certificate authority: each side knows exactly which
//! certificates it accepts. Both sides always present a certificate; a peer whose certificate is
//! malformed, expired, not yet valid or not trusted fails the handshake, so no byte of a command
//! is ever read from it.

mod https;
#[cfg(feature = "http-client")]
mod pinned_http;

pub use https::{
    certified_key_from_pem, grpc_server_config, https_server_config, ServedCertificate,
};
#[cfg(feature = "http-client")]
pub use pinned_http::{pinned_agent, Pin};

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generate certificate: {0}")]
    Generate(String),
    #[error("invalid certificate or key: {0}")]
    Invalid(String),
    #[error("invalid thumbprint {0:?}: expected 64 hexadecimal digits (SHA-256)")]
    Thumbprint(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The SHA-256 of a DER certificate: how a peer is recognised.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Thumbprint([u8; 32]);

impl Thumbprint {
    pub fn of(cert_der: &[u8]) -> Thumbprint {
        Thumbprint(Sha256::digest(cert_der).into())
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

impl FromStr for Thumbprint {
    type Err = Error;

    /// 64 hex digits, either case; colons and spaces between bytes are ignored.
    fn from_str(s: &str) -> Result<Thumbprint> {
        let hex: Vec<u8> = s.bytes().filter(|b| !matches!(b, b':' | b' ')).collect();
        let bad = || Error::Thumbprint(s.to_owned());
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
        }
        Ok(Thumbprint(out))
    }
}

/// A certificate and its private key (PKCS#8).
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        write!(f, "Identity({})", self.thumbprint())
    }
}

impl Identity {
    /// A new self-signed certificate (ECDSA P-256) for `name`, valid from yesterday (clock skew)
    /// for `days`.
    pub fn generate(name: &str, days: u32) -> Result<Identity> {
        let now = time::OffsetDateTime::now_utc();
        Identity::generate_valid_between(
            name,
            now - time::Duration::days(1),
            now + time::Duration::days(i64::from(days)),
        )
    }

    /// A self-signed certificate with an explicit validity period (tests use it to make expired
    /// and not-yet-valid certificates).
    pub fn generate_valid_between(
        name: &str,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<Identity> {
        let gen = |e: rcgen::Error| Error::Generate(e.to_string());
        let key = rcgen::KeyPair::generate().map_err(gen)?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(gen)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key).map_err(gen)?;
        Ok(Identity {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// Reads a certificate and key in PEM (as written by [`Identity::to_pem`]).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Identity> {
        let invalid = |what: &str, e: &dyn fmt::Display| Error::Invalid(format!("{what}: {e}"));
        let cert = pem_block(cert_pem, "CERTIFICATE").map_err(|e| invalid("certificate", &e))?;
        let key = pem_block(key_pem, "PRIVATE KEY").map_err(|e| invalid("private key", &e))?;
        let identity = Identity {
            cert: CertificateDer::from(cert),
            key: PrivatePkcs8KeyDer::from(key),
        };
        check_well_formed(&identity.cert).map_err(|e| invalid("certificate", &e))?;
        Ok(identity)
    }

    /// The certificate and the key, each in PEM.
    pub fn to_pem(&self) -> (String, String) {
        (
            pem("CERTIFICATE", &self.cert),
            pem("PRIVATE KEY", self.key.secret_pkcs8_der()),
        )
    }

    /// When the certificate expires (Unix seconds); `None` if it cannot be read.
    pub fn not_after(&self) -> Option<i64> {
        not_after(&self.cert)
    }

    pub fn thumbprint(&self) -> Thumbprint {
        Thumbprint::of(&self.cert)
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_block(text: &str, label: &str) -> std::result::Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no {begin} block"))?;
    let body = &text[start + begin.len()..];
    let stop = body.find(&end).ok_or_else(|| format!("no {end} line"))?;
    let b64: String = body[..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).map_err(|e| format!("bad base64: {e}"))
}

/// Which peer certificates one side accepts. Implemented by a fixed set, and by the gateway over
/// the registered targets.
pub trait TrustStore: Send + Sync + fmt::Debug {
    fn trusts(&self, thumbprint: &Thumbprint) -> bool;
}

/// A set of trusted thumbprints that can be changed while connections are accepted.
#[derive(Debug, Default)]
pub struct Trusted(RwLock<HashSet<Thumbprint>>);

impl Trusted {
    pub fn new(thumbprints: impl IntoIterator<Item = Thumbprint>) -> Arc<Trusted> {
        Arc::new(Trusted(RwLock::new(thumbprints.into_iter().collect())))
    }

    pub fn replace(&self, thumbprints: impl IntoIterator<Item = Thumbprint>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = thumbprints.into_iter().collect();
    }

    /// The trusted thumbprints, sorted.
    pub fn thumbprints(&self) -> Vec<Thumbprint> {
        let mut all: Vec<Thumbprint> = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        all.sort();
        all
    }
}

impl TrustStore for Trusted {
    fn trusts(&self, thumbprint: &Thumbprint) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(thumbprint)
    }
}

/// The cluster certificate a node presents, and every cluster certificate it accepts from other
/// nodes and tells tentacles to trust: its own alone, or more while a rotation is under way.
/// Cheap to clone; `accepted` is shared and may change while connections are accepted.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    pub identity: Identity,
    pub accepted: Arc<Trusted>,
}

impl ClusterTls {
    /// A cluster with one certificate.
    pub fn single(identity: Identity) -> ClusterTls {
        let accepted = Trusted::new([identity.thumbprint()]);
        ClusterTls { identity, accepted }
    }

    /// Server side of the internal port: presents this node's cluster certificate, requires one
    /// the cluster accepts.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        server_config(&self.identity, self.accepted.clone())
    }

    /// Client side of the internal port.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        client_config(&self.identity, self.accepted.clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS server side: presents `identity`, requires a client certificate `clients` trusts.
pub fn server_config(
    identity: &Identity,
    clients: Arc<dyn TrustStore>,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let verifier = Arc::new(ByThumbprint {
        trust: clients,
        provider: provider.clone(),
    });
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key())?;
    Ok(Arc::new(config))
}

/// The TLS client side: presents `identity`, accepts only a server certificate `server` trusts
/// (the name the client dialled plays no part).
pub fn client_config(
    identity: &Identity,
    server: Arc<dyn TrustStore>,
) -> Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let verifier = Arc::new(ByThumbprint {
        trust: server,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous() // trust by thumbprint, not by a CA: the point of this module
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key())?;
    Ok(Arc::new(config))
}

/// The name clients put in the handshake; certificates are not checked against it.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("cuttle").expect("a valid DNS name")
}

/// The thumbprint of the certificate the peer presented, once the handshake is done.
pub fn peer_thumbprint(conn: &rustls::CommonState) -> Option<Thumbprint> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| Thumbprint::of(c))
}

/// When a DER certificate expires (Unix seconds); `None` if it cannot be read.
pub fn not_after(cert_der: &[u8]) -> Option<i64> {
    x509_parser::parse_x509_certificate(cert_der)
        .ok()
        .map(|(_, c)| c.validity().not_after.timestamp())
}

#[derive(Debug)]
struct ByThumbprint {
    trust: Arc<dyn TrustStore>,
    provider: Arc<CryptoProvider>,
}

fn check_well_formed(cert: &CertificateDer<'_>) -> std::result::Result<(), rustls::Error> {
    x509_parser::parse_x509_certificate(cert)
        .map(|_| ())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
}

impl ByThumbprint {
    fn check(
        &self,
        cert: &CertificateDer<'_>,
        now: UnixTime,
    ) -> std::result::Result<(), rustls::Error> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let now = now.as_secs() as i64;
        let validity = parsed.validity();
        if now < validity.not_before.timestamp() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet,
            ));
        }
        if now > validity.not_after.timestamp() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
        }
        if !self.trust.trusts(&Thumbprint::of(cert)) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(())
    }

    fn tls12(
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

    fn tls13(
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

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for ByThumbprint {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, now)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for ByThumbprint {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, now)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Runs one handshake and a one-byte echo; Err says which side refused and why.
    async fn handshake(
        server: &Identity,
        server_trusts: &[Thumbprint],
        client: &Identity,
        client_trusts: &[Thumbprint],
    ) -> std::result::Result<Thumbprint, String> {
        let acceptor = tokio_rustls::TlsAcceptor::from(
            server_config(server, Trusted::new(server_trusts.to_vec())).unwrap(),
        );
        let connector = tokio_rustls::TlsConnector::from(
            client_config(client, Trusted::new(client_trusts.to_vec())).unwrap(),
        );
        let (a, b) = tokio::io::duplex(64 * 1024);
        let serve = async move {
            let mut tls = acceptor
                .accept(a)
                .await
                .map_err(|e| format!("server: {e}"))?;
            let peer = peer_thumbprint(tls.get_ref().1).ok_or("server: no peer certificate")?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte)
                .await
                .map_err(|e| format!("server read: {e}"))?;
            tls.write_all(&byte)
                .await
                .map_err(|e| format!("server write: {e}"))?;
            tls.flush()
                .await
                .map_err(|e| format!("server flush: {e}"))?;
            Ok::<_, String>(peer)
        };
        let dial = async move {
            let mut tls = connector
                .connect(server_name(), b)
                .await
                .map_err(|e| format!("client: {e}"))?;
            tls.write_all(b"x")
                .await
                .map_err(|e| format!("client write: {e}"))?;
            tls.flush()
                .await
                .map_err(|e| format!("client flush: {e}"))?;
            // TLS 1.3: a client learns that it was refused only when it next reads.
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte)
                .await
                .map_err(|e| format!("client read: {e}"))?;
            Ok::<_, String>(())
        };
        match tokio::join!(serve, dial) {
            (Ok(peer), Ok(())) => Ok(peer),
            (Err(s), Err(c)) => Err(format!("{s} / {c}")),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    #[tokio::test]
    async fn trusted_peers_connect_and_are_identified() {
        let node = Identity::generate("cluster", 365).unwrap();
        let agent = Identity::generate("tentacle", 365).unwrap();
        let peer = handshake(&node, &[agent.thumbprint()], &agent, &[node.thumbprint()])
            .await
            .unwrap();
        assert_eq!(peer, agent.thumbprint());
    }

    #[tokio::test]
    async fn an_untrusted_client_or_server_is_refused() {
        let node = Identity::generate("cluster", 365).unwrap();
        let agent = Identity::generate("tentacle", 365).unwrap();
        let stranger = Identity::generate("stranger", 365).unwrap();
        // The node does not know this client.
        let err = handshake(
            &node,
            &[agent.thumbprint()],
            &stranger,
            &[node.thumbprint()],
        )
        .await
        .unwrap_err();
        assert!(err.starts_with("server: invalid peer certificate"), "{err}");
        // The client does not know this server (a forged node).
        let err = handshake(
            &stranger,
            &[agent.thumbprint()],
            &agent,
            &[node.thumbprint()],
        )
        .await
        .unwrap_err();
        assert!(
            err.contains("client: invalid peer certificate: ApplicationVerificationFailure"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn expired_and_not_yet_valid_certificates_are_refused_even_when_trusted() {
        let node = Identity::generate("cluster", 365).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let expired = Identity::generate_valid_between("old", now - 10 * day, now - day).unwrap();
        let future = Identity::generate_valid_between("new", now + day, now + 10 * day).unwrap();
        for cert in [&expired, &future] {
            let err = handshake(&node, &[cert.thumbprint()], cert, &[node.thumbprint()])
                .await
                .unwrap_err();
            assert!(err.starts_with("server: invalid peer certificate"), "{err}");
        }
    }

    #[test]
    fn thumbprints_and_pem_round_trip() {
        let id = Identity::generate("tentacle", 30).unwrap();
        let (cert, key) = id.to_pem();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(key.contains("PRIVATE KEY"));
        let back = Identity::from_pem(&cert, &key).unwrap();
        assert_eq!(back.thumbprint(), id.thumbprint());
        let text = id.thumbprint().to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Thumbprint>().unwrap(), id.thumbprint());
        let lower_with_colons = text
            .to_lowercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            lower_with_colons.parse::<Thumbprint>().unwrap(),
            id.thumbprint()
        );
        assert!("abc".parse::<Thumbprint>().is_err());
        assert!("zz".repeat(32).parse::<Thumbprint>().is_err());
        let err = Identity::from_pem(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &key,
        )
        .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        assert!(!format!("{id:?}").contains("PRIVATE"));
    }
}
