//! HTTPS for the REST API: an ordinary web server certificate (a chain a browser or `curl`
//! checks against a CA), or the cluster's own certificate, served without asking clients for one.
//! The certificate can be replaced while the server runs: new connections get the new one,
//! open connections keep theirs.

use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{provider, Error, Identity, Result};

/// The certificate the API serves; [`ServedCertificate::replace`] swaps it for new connections.
#[derive(Debug)]
pub struct ServedCertificate(RwLock<Arc<CertifiedKey>>);

impl ServedCertificate {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<ServedCertificate> {
        Arc::new(ServedCertificate(RwLock::new(key)))
    }

    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
    }

    /// When the certificate now served (the chain's first) expires, in Unix seconds.
    pub fn not_after(&self) -> Option<i64> {
        let key = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        key.cert.first().and_then(|c| crate::not_after(c))
    }

    /// The thumbprint of the certificate now served (the chain's first).
    pub fn thumbprint(&self) -> Option<crate::Thumbprint> {
        let key = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        key.cert.first().map(|c| crate::Thumbprint::of(c))
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// A certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1), from PEM.
pub fn certified_key_from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Invalid(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Invalid(
            "certificate: no PEM CERTIFICATE block".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Invalid(format!("private key: {e}")))?;
    certified(chain, key)
}

impl Identity {
    /// This identity as a served certificate (`CUTTLE_HTTP_TLS=cluster`).
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>> {
        certified(vec![self.cert.clone()], self.key())
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Invalid(format!("private key: {e}")))?;
    let key = CertifiedKey::new(chain, signing);
    // The key must be the certificate's: a mismatch would fail every handshake later.
    key.keys_match().map_err(|e| {
        Error::Invalid(format!(
            "the private key does not match the certificate: {e}"
        ))
    })?;
    Ok(Arc::new(key))
}

/// A server configuration that presents what `served` holds and asks clients for no
/// certificate; HTTP/1.1 over ALPN.
pub fn https_server_config(served: Arc<ServedCertificate>) -> Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(served);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The public gRPC listener's TLS: the same certificate as HTTPS, speaking HTTP/2 (gRPC clients
/// insist on ALPN `h2`).
pub fn grpc_server_config(served: Arc<ServedCertificate>) -> Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(served);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_pair_loads_and_a_mismatched_key_is_refused() {
        let a = Identity::generate("a", 1).unwrap();
        let b = Identity::generate("b", 1).unwrap();
        let (cert_a, key_a) = a.to_pem();
        let (_, key_b) = b.to_pem();
        let key = certified_key_from_pem(cert_a.as_bytes(), key_a.as_bytes()).unwrap();
        assert_eq!(crate::Thumbprint::of(&key.cert[0]), a.thumbprint());
        let err = certified_key_from_pem(cert_a.as_bytes(), key_b.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        let err = certified_key_from_pem(b"", key_a.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }

    #[test]
    fn a_replaced_certificate_is_served_to_new_connections() {
        let a = Identity::generate("a", 1).unwrap();
        let b = Identity::generate("b", 1).unwrap();
        let served = ServedCertificate::new(a.certified_key().unwrap());
        assert_eq!(served.thumbprint(), Some(a.thumbprint()));
        served.replace(b.certified_key().unwrap());
        assert_eq!(served.thumbprint(), Some(b.thumbprint()));
    }
}
