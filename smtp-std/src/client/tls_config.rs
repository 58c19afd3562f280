//! rustls client configurations: Mozilla's roots, your own CA, or no verification (MX
//! delivery's opportunistic TLS).

use std::io::{self};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// TLS configurations.
pub(super) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(super) fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
}

fn config_with_roots(roots: RootCertStore) -> Arc<ClientConfig> {
    Arc::new(builder().with_root_certificates(roots).with_no_client_auth())
}

/// TLS 1.2/1.3 with *ring*, certificates verified against Mozilla's root store
/// (`webpki-roots`) and the server name.
pub fn default_tls_config() -> Arc<ClientConfig> {
    config_with_roots(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
}

/// Trusts only the CA certificates in `pem` (e.g. a test CA); names are still verified.
pub fn tls_config_from_ca_pem(pem: &[u8]) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("CA certificate: {e}")))?;
        roots.add(cert).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("CA certificate: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no certificate in the CA PEM data"));
    }
    Ok(config_with_roots(roots))
}

/// Mozilla's roots and also the CA certificates of the PEM file `extra` (a private CA);
/// names are verified. The error names the file.
pub fn tls_config_with_extra_ca(extra: Option<&Path>) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra {
        let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()));
        let pem = std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad("no certificate in it (-----BEGIN CERTIFICATE-----)".into()));
        }
    }
    Ok(config_with_roots(roots))
}

/// Like [`tls_config_from_ca_pem`], reading the file.
pub fn tls_config_from_ca_file(path: &Path) -> io::Result<Arc<ClientConfig>> {
    let pem = std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    tls_config_from_ca_pem(&pem).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// **No certificate verification** (any certificate, any name; the handshake signatures
/// are still checked): for tests against self-signed servers only. It gives no protection
/// against an active attacker.
pub fn insecure_tls_config() -> Arc<ClientConfig> {
    let verifier = Arc::new(NoVerification(provider()));
    Arc::new(builder().dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The host part of `host:port` / `[v6]:port`.
pub(super) fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}
