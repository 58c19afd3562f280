//! TLS configuration: rustls with the *ring* provider, certificate chain and key from PEM.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
