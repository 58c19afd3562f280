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
    config_from_pem(cert_chain, key, "the certificate", "the private key")
}

/// The certificate chain and the private key of two PEM sources, each error naming its source
/// (`cert_name`, `key_name`) and what is wrong (and whether the two look swapped).
fn parse_pem(
    cert_chain: &[u8],
    key: &[u8],
    cert_name: &str,
    key_name: &str,
) -> io::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let certs = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{cert_name}: not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        let hint = if key.starts_with(b"-----BEGIN CERT") || cert_chain.windows(11).any(|w| w == b"PRIVATE KEY") {
            " (it holds a private key: are cert and key swapped?)"
        } else {
            ""
        };
        return Err(invalid(format!("{cert_name}: no certificate in it (-----BEGIN CERTIFICATE-----){hint}")));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        let hint = if key.windows(11).any(|w| w == b"CERTIFICATE") {
            ": it holds a certificate, not a key (are cert and key swapped?)"
        } else {
            ""
        };
        invalid(format!("{key_name}: no private key in it (-----BEGIN PRIVATE KEY-----): {e}{hint}"))
    })?;
    Ok((certs, key))
}

/// A certificate and key that rustls refused together: whether they do not match, named.
fn pair_error(e: impl std::fmt::Display, cert_name: &str, key_name: &str) -> io::Error {
    let text = e.to_string();
    let message = if text.contains("KeyMismatch") || text.contains("consistent") || text.contains("mismatch") {
        format!("{key_name} is not the key of {cert_name}: they do not match ({text})")
    } else {
        format!("{cert_name} and {key_name}: {text}")
    };
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// [`server_config_from_pem`] with the names of the two PEM sources for its errors.
fn config_from_pem(
    cert_chain: &[u8],
    key: &[u8],
    cert_name: &str,
    key_name: &str,
) -> io::Result<Arc<rustls::ServerConfig>> {
    let (certs, key) = parse_pem(cert_chain, key, cert_name, key_name)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| pair_error(e, cert_name, key_name))?;
    Ok(Arc::new(config))
}

/// Reads the certificate and key files, with their names for errors.
fn read_pair(cert_path: &Path, key_path: &Path) -> io::Result<(Vec<u8>, Vec<u8>, String, String)> {
    let read = |what: &str, p: &Path| {
        std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{what} file {}: {e}", p.display())))
    };
    let cert = read("certificate", cert_path)?;
    let key = read("private key", key_path)?;
    Ok((
        cert,
        key,
        format!("certificate file {}", cert_path.display()),
        format!("private key file {}", key_path.display()),
    ))
}

/// Like [`server_config_from_pem`], reading the two PEM files; every error names its file.
pub fn server_config_from_files(cert_path: &Path, key_path: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    let (cert, key, cert_name, key_name) = read_pair(cert_path, key_path)?;
    config_from_pem(&cert, &key, &cert_name, &key_name)
}

/// A certificate chain and its private key from PEM data (as [`server_config_from_pem`] takes
/// them), checked to belong together.
pub fn certified_key_from_pem(cert_chain: &[u8], key: &[u8]) -> io::Result<Arc<CertifiedKey>> {
    certified_key_named(cert_chain, key, "the certificate", "the private key")
}

fn certified_key_named(
    cert_chain: &[u8],
    key: &[u8],
    cert_name: &str,
    key_name: &str,
) -> io::Result<Arc<CertifiedKey>> {
    let (certs, key) = parse_pem(cert_chain, key, cert_name, key_name)?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, key, &provider).map_err(|e| pair_error(e, cert_name, key_name))?;
    Ok(Arc::new(certified))
}

/// Like [`certified_key_from_pem`], reading the two PEM files; every error names its file.
pub fn certified_key_from_files(cert_path: &Path, key_path: &Path) -> io::Result<Arc<CertifiedKey>> {
    let (cert, key, cert_name, key_name) = read_pair(cert_path, key_path)?;
    certified_key_named(&cert, &key, &cert_name, &key_name)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    #[test]
    fn errors_name_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair("a.test");
        let (_, other_key) = pair("b.test");
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let (c, k, k2, junk) =
            (write("cert.pem", &cert), write("key.pem", &key), write("k2.pem", &other_key), write("junk.pem", "hello"));
        assert!(server_config_from_files(&c, &k).is_ok());
        let err = |c: &Path, k: &Path| server_config_from_files(c, k).unwrap_err().to_string();
        let e = err(&k, &c);
        assert!(e.contains(&format!("certificate file {}", k.display())) && e.contains("swapped"), "{e}");
        let e = err(&c, &c);
        assert!(e.contains(&format!("private key file {}", c.display())) && e.contains("swapped"), "{e}");
        let e = err(&c, &k2);
        assert!(e.contains(&format!("private key file {}", k2.display())) && e.contains("do not match"), "{e}");
        let e = err(&junk, &k);
        assert!(e.contains(&format!("certificate file {}", junk.display())) && e.contains("no certificate"), "{e}");
        let e = certified_key_from_files(&c, &k2).unwrap_err().to_string();
        assert!(e.contains(&format!("private key file {}", k2.display())) && e.contains("do not match"), "{e}");
        let e = certified_key_from_files(&k, &c).unwrap_err().to_string();
        assert!(e.contains(&format!("certificate file {}", k.display())) && e.contains("swapped"), "{e}");
        let e = err(&dir.path().join("missing.pem"), &k);
        assert!(e.contains("missing.pem") && e.contains("No such file"), "{e}");
    }
}
