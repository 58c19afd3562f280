//! The web side of the mail server: two tiny HTTP/1.1 listeners, never in the way of mail.
//!
//! - `[listen] https` (port 443): `https://mta-sts.<domain>/.well-known/mta-sts.txt`, the
//!   MTA-STS policy of each `[[domain]]` with `mta_sts` set ([`mtasts`]), under the server's
//!   certificate (the one of `[tls]` or of `[acme]`); and ACME's tls-alpn-01 challenge (RFC
//!   8737): a handshake offering ALPN `acme-tls/1` gets the challenge certificate of its name.
//! - `[listen] http` (port 80): ACME's http-01 challenge,
//!   `/.well-known/acme-challenge/<token>`; every other path is redirected to https.
//!
//! One thread accepts on each listener and one short-lived thread serves each connection,
//! at most [`MAX_CONNECTIONS`] at once; a request head is at most [`MAX_REQUEST`] octets and
//! must arrive within [`REQUEST_TIMEOUT`]; one request per connection.

pub mod check;
pub mod client;
pub mod mtasts;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::mta::config::Config;
use crate::tls::CertResolver;

/// Most connections served at once, both listeners together; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request head (request line and header fields).
pub const MAX_REQUEST: usize = 8192;
/// Bound on the TLS handshake and the request's arrival, and on writing the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocol of the tls-alpn-01 challenge (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The ACME challenges being validated now: http-01 tokens and tls-alpn-01 certificates.
#[derive(Debug, Default)]
pub struct Challenges {
    http: Mutex<HashMap<String, String>>,
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// Serves `key_authorization` at `/.well-known/acme-challenge/<token>`.
    pub fn set_http(&self, token: &str, key_authorization: &str) {
        lock(&self.http).insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Presents `cert` to a handshake for `name` offering ALPN `acme-tls/1`.
    pub fn set_alpn(&self, name: &str, cert: Arc<CertifiedKey>) {
        lock(&self.alpn).insert(name.to_ascii_lowercase(), cert);
    }

    /// Forgets every challenge (the order is over).
    pub fn clear(&self) {
        lock(&self.http).clear();
        lock(&self.alpn).clear();
    }

    fn http(&self, token: &str) -> Option<String> {
        lock(&self.http).get(token).cloned()
    }

    fn alpn(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.alpn).get(&name.to_ascii_lowercase()).cloned()
    }
}

/// The MTA-STS policy files served, by domain; replaced by a reload.
#[derive(Debug, Default)]
pub struct Sites {
    policies: RwLock<HashMap<String, String>>,
}

impl Sites {
    /// The policies of `config`'s domains.
    pub fn new(config: &Config) -> Self {
        let s = Self::default();
        s.set(config);
        s
    }

    /// Serves the policies of `config` from now on.
    pub fn set(&self, config: &Config) {
        let policies = config.mta_sts_policies().into_iter().map(|(d, p)| (d, p.text())).collect();
        *self.policies.write().unwrap_or_else(|p| p.into_inner()) = policies;
    }

    fn policy(&self, host: &str) -> Option<String> {
        let domain = host.to_ascii_lowercase();
        let domain = domain.strip_prefix("mta-sts.")?;
        self.policies.read().unwrap_or_else(|p| p.into_inner()).get(domain).cloned()
    }
}

/// The certificate of an https handshake: the challenge certificate for `acme-tls/1`, else
/// the server's.
#[derive(Debug)]
struct WebCerts {
    main: Option<Arc<CertResolver>>,
    challenges: Arc<Challenges>,
}

impl ResolvesServerCert for WebCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            return self.challenges.alpn(hello.server_name()?);
        }
        self.main.as_ref().map(|r| r.current())
    }
}

/// The two web listeners' shared state.
#[derive(Debug)]
pub struct Web {
    sites: Arc<Sites>,
    challenges: Arc<Challenges>,
    tls: Arc<rustls::ServerConfig>,
    active: AtomicUsize,
}

/// A bound web listener: https or not.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    https: bool,
}

impl Bound {
    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Web {
    /// The web side serving `sites` and `challenges`, with `cert` (the server's certificate,
    /// if any) on https.
    pub fn new(sites: Arc<Sites>, challenges: Arc<Challenges>, cert: Option<Arc<CertResolver>>) -> io::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(WebCerts { main: cert, challenges: challenges.clone() }));
        tls.alpn_protocols = vec![ACME_TLS_ALPN.to_vec(), b"http/1.1".to_vec()];
        Ok(Self { sites, challenges, tls: Arc::new(tls), active: AtomicUsize::new(0) })
    }

    /// Binds `addr` (https or plain http).
    pub fn bind(addr: SocketAddr, https: bool) -> io::Result<Bound> {
        Ok(Bound { listener: TcpListener::bind(addr)?, https })
    }

    /// Serves `bound` on a thread of its own, for as long as the process lives.
    pub fn spawn(self: &Arc<Self>, bound: Bound) -> io::Result<()> {
        let me = self.clone();
        let name = if bound.https { "https" } else { "http" };
        std::thread::Builder::new().name(name.into()).spawn(move || {
            for conn in bound.listener.incoming() {
                let Ok(conn) = conn else { continue };
                if me.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    me.active.fetch_sub(1, Ordering::SeqCst);
                    continue; // dropped: closed
                }
                let me2 = me.clone();
                let https = bound.https;
                let spawned = std::thread::Builder::new().name("web".into()).spawn(move || {
                    if let Err(e) = me2.serve(conn, https) {
                        tracing::debug!("web request: {e}");
                    }
                    me2.active.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    me.active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
        Ok(())
    }

    fn serve(&self, tcp: TcpStream, https: bool) -> io::Result<()> {
        tcp.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        tcp.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        if !https {
            let mut tcp = tcp;
            let (path, host) = read_request(&mut tcp, deadline)?;
            let answer = self.answer_http(&path, &host);
            return tcp.write_all(answer.as_bytes());
        }
        let conn = rustls::ServerConnection::new(self.tls.clone()).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake too slow"));
            }
            tls.conn.complete_io(&mut tls.sock)?;
        }
        if tls.conn.alpn_protocol() == Some(ACME_TLS_ALPN) {
            // The challenge is the handshake itself (RFC 8737 §3): nothing more to say.
            tls.conn.send_close_notify();
            return tls.flush();
        }
        let sni = tls.conn.server_name().map(str::to_owned);
        let (path, host) = read_request(&mut tls, deadline)?;
        let answer = self.answer_https(&path, sni.as_deref().unwrap_or(&host));
        tls.write_all(answer.as_bytes())?;
        tls.conn.send_close_notify();
        tls.flush()
    }

    fn answer_http(&self, path: &str, host: &str) -> String {
        if let Some(token) = path.strip_prefix("/.well-known/acme-challenge/") {
            return match self.challenges.http(token) {
                Some(key_authorization) => response(200, "OK", &[], &key_authorization),
                None => response(404, "Not Found", &[], "no such challenge\n"),
            };
        }
        if host.is_empty() {
            return response(400, "Bad Request", &[], "no Host field\n");
        }
        let location = format!("https://{host}{path}");
        response(301, "Moved Permanently", &[("Location", &location)], "see https\n")
    }

    fn answer_https(&self, path: &str, host: &str) -> String {
        match (path, self.sites.policy(host)) {
            ("/.well-known/mta-sts.txt", Some(policy)) => response(200, "OK", &[], &policy),
            ("/.well-known/mta-sts.txt", None) => response(404, "Not Found", &[], "no MTA-STS policy for this name\n"),
            _ => response(404, "Not Found", &[], "nothing here but /.well-known/mta-sts.txt\n"),
        }
    }
}

/// A complete response, text/plain, closing the connection.
fn response(status: u16, reason: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

/// The path and the Host (without port) of a GET request, within [`MAX_REQUEST`] octets and
/// by `deadline`.
fn read_request(conn: &mut impl Read, deadline: Instant) -> io::Result<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if end > MAX_REQUEST {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
            }
            break end;
        }
        if buf.len() > MAX_REQUEST {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request too slow"));
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a request"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or("").split(' ');
    let (method, path) = (request.next().unwrap_or(""), request.next().unwrap_or("/"));
    if method != "GET" && method != "HEAD" {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("method {method:?}")));
    }
    let host = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.trim())
        .unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let host = if host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') { host } else { "" };
    Ok((path.to_owned(), host.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_within_bounds() {
        let later = Instant::now() + Duration::from_secs(5);
        let mut ok: &[u8] = b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.a.test:8443\r\n\r\n";
        let (path, host) = read_request(&mut ok, later).unwrap();
        assert_eq!((path.as_str(), host.as_str()), ("/.well-known/mta-sts.txt", "mta-sts.a.test"));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_REQUEST));
        assert!(read_request(&mut big.as_bytes(), later).is_err());
        let mut post: &[u8] = b"POST / HTTP/1.1\r\n\r\n";
        assert!(read_request(&mut post, later).is_err());
        let mut evil: &[u8] = b"GET / HTTP/1.1\r\nHost: a.test\r\nx\r\n\r\n";
        assert_eq!(read_request(&mut evil, later).unwrap().1, "a.test");
    }
}
