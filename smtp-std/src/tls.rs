//! TLS configuration: rustls with the *ring* provider, certificate chain and key from PEM;
//! and a certificate that can be replaced while the server runs ([`CertResolver`]).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A rustls server configuration (TLS 1.2 and 1.3, *ring*) from PEM data: the certificate
/// chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config_from_pem(cert_chain: &[u8], key: &[u8]) -> io::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no certificate in the PEM data"));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// Like [`server_config_from_pem`], reading the two PEM files.
pub fn server_config_from_files(cert_path: &Path, key_path: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    let cert =
        std::fs::read(cert_path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", cert_path.display())))?;
    let key = std::fs::read(key_path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", key_path.display())))?;
    server_config_from_pem(&cert, &key)
}

/// A certificate chain and its private key from PEM data (as [`server_config_from_pem`] takes
/// them), checked to belong together.
pub fn certified_key_from_pem(cert_chain: &[u8], key: &[u8]) -> io::Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no certificate in the PEM data"));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, key, &provider)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("certificate and key: {e}")))?;
    Ok(Arc::new(certified))
}

/// Like [`certified_key_from_pem`], reading the two PEM files (errors name the file).
pub fn certified_key_from_files(cert_path: &Path, key_path: &Path) -> io::Result<Arc<CertifiedKey>> {
    let cert =
        std::fs::read(cert_path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", cert_path.display())))?;
    let key = std::fs::read(key_path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", key_path.display())))?;
    certified_key_from_pem(&cert, &key)
        .map_err(|e| io::Error::new(e.kind(), format!("{} and {}: {e}", cert_path.display(), key_path.display())))
}

/// The certificate a server presents, replaceable while it runs: every handshake takes the
/// current one, so a renewed certificate ([`CertResolver::set`]) is served to the next client
/// without a restart and without a new [`rustls::ServerConfig`].
///
/// ```no_run
/// use std::sync::Arc;
/// use smtp_std::tls::{certified_key_from_files, server_config_with_resolver, CertResolver};
///
/// let resolver = Arc::new(CertResolver::new(certified_key_from_files("cert.pem".as_ref(), "key.pem".as_ref())?));
/// let options = smtp_std::Options::new("mx.example.org").tls(server_config_with_resolver(resolver.clone())?);
/// // Later, after a renewal:
/// resolver.set(certified_key_from_files("cert.pem".as_ref(), "key.pem".as_ref())?);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    /// A resolver presenting `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self { current: RwLock::new(key) }
    }

    /// The certificate and key presented now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Presents `key` from the next handshake on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A rustls server configuration (TLS 1.2 and 1.3, *ring*) presenting whatever `resolver`
/// holds at each handshake.
pub fn server_config_with_resolver(resolver: Arc<CertResolver>) -> io::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    Ok(Arc::new(config))
}

/// A connection, plain or under TLS (the server's and the client's, by `C`), over a TCP
/// socket `S` (owned, or shared for the server's shutdown).
pub(crate) enum Stream<C, S: Read + Write = TcpStream> {
    /// Plain TCP.
    Plain(S),
    /// TLS over TCP.
    Tls(Box<rustls::StreamOwned<C, S>>),
}

impl<C, S: Read + Write + std::borrow::Borrow<TcpStream>> Stream<C, S> {
    /// The TCP socket underneath (for timeouts and shutdown).
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s.borrow(),
            Stream::Tls(s) => s.sock.borrow(),
        }
    }
}

impl<C, S: Read + Write> Read for Stream<C, S>
where
    rustls::StreamOwned<C, S>: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl<C, S: Read + Write> Write for Stream<C, S>
where
    rustls::StreamOwned<C, S>: Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
