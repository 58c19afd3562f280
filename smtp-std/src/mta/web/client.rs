//! A small blocking HTTPS client on rustls: one request per connection (`Connection: close`),
//! bounded in time and size. For the ACME protocol and for fetching MTA-STS policies; it
//! follows no redirects (RFC 8461 §3.3 forbids them for policies, ACME never needs them).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

/// Resolves a host name to addresses (the configured DNS rather than the system's).
pub type Resolve = Arc<dyn Fn(&str) -> io::Result<Vec<IpAddr>> + Send + Sync>;

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields (names in lower case), in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header field called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The client: its TLS configuration (which CAs it trusts), its limits.
#[derive(Clone)]
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    /// Bound on the whole exchange (connect, handshake, request, response).
    pub timeout: Duration,
    /// Largest response accepted (head and body).
    pub max_response: usize,
    /// How host names are resolved (`None`: the system's resolver).
    pub resolve: Option<Resolve>,
    /// Connect to this port instead of the URL's (tests: a policy server on a loopback port).
    pub port: Option<u16>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("timeout", &self.timeout).field("max_response", &self.max_response).finish()
    }
}

/// A URL's parts: host, port, path with query.
fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("https://").ok_or_else(|| format!("{url}: not an https:// URL"))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| format!("{url}: bad port {p:?}"))?)
        }
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok((host.to_owned(), port, path.to_owned()))
}

impl Client {
    /// A client trusting Mozilla's roots, and the CA certificates of the PEM file `ca` too.
    pub fn new(ca: Option<&std::path::Path>) -> io::Result<Self> {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(path) = ca {
            use rustls::pki_types::pem::PemObject;
            let pem = std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let mut n = 0;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()));
                roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
                n += 1;
            }
            if n == 0 {
                let m = format!("{}: no certificate in it (-----BEGIN CERTIFICATE-----)", path.display());
                return Err(io::Error::new(io::ErrorKind::InvalidData, m));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Arc::new(tls),
            timeout: Duration::from_secs(30),
            max_response: 1 << 20,
            resolve: None,
            port: None,
        })
    }

    /// `GET url`.
    pub fn get(&self, url: &str) -> Result<Response, String> {
        self.request("GET", url, None, b"")
    }

    /// `HEAD url`.
    pub fn head(&self, url: &str) -> Result<Response, String> {
        self.request("HEAD", url, None, b"")
    }

    /// `POST url` with `body` of `content_type`.
    pub fn post(&self, url: &str, content_type: &str, body: &[u8]) -> Result<Response, String> {
        self.request("POST", url, Some(content_type), body)
    }

    /// One request; the error names the URL and what failed.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Response, String> {
        self.exchange(method, url, content_type, body).map_err(|e| format!("{method} {url}: {e}"))
    }

    fn exchange(&self, method: &str, url: &str, content_type: Option<&str>, body: &[u8]) -> Result<Response, String> {
        let (host, url_port, path) = split_url(url)?;
        let port = self.port.unwrap_or(url_port);
        let authority = match (url_port, host.contains(':')) {
            (443, _) => host.clone(),
            (p, true) => format!("[{host}]:{p}"),
            (p, false) => format!("{host}:{p}"),
        };
        let deadline = Instant::now() + self.timeout;
        let addrs: Vec<SocketAddr> = match (host.parse::<IpAddr>(), &self.resolve) {
            (Ok(ip), _) => vec![SocketAddr::new(ip, port)],
            (Err(_), Some(resolve)) => resolve(&host)
                .map_err(|e| format!("resolving {host}: {e}"))?
                .into_iter()
                .map(|ip| (ip, port).into())
                .collect(),
            (Err(_), None) => std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .map_err(|e| format!("resolving {host}: {e}"))?
                .collect(),
        };
        let mut last = format!("{host} has no address");
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("connecting to {addr}: {e}"),
            }
        }
        let tcp = tcp.ok_or(last)?;
        tcp.set_read_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
        let conn = rustls::ClientConnection::new(self.tls.clone(), name).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: smtp-std/{}\r\nAccept: */*\r\nConnection: close\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        tls.write_all(&out).map_err(|e| tls_error(&host, e))?;
        tls.flush().map_err(|e| tls_error(&host, e))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if Instant::now() > deadline {
                return Err(format!("no complete response within {}s", self.timeout.as_secs()));
            }
            if let Some(r) = parse_response(&buf, method == "HEAD")? {
                return Ok(r);
            }
            match tls.read(&mut chunk) {
                Ok(0) => return parse_complete(&buf, method == "HEAD"),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A peer that closes without close_notify: the body ends there.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !buf.is_empty() => {
                    return parse_complete(&buf, method == "HEAD")
                }
                Err(e) => return Err(tls_error(&host, e)),
            }
            if buf.len() > self.max_response {
                return Err(format!("response larger than {} octets", self.max_response));
            }
        }
    }
}

fn tls_error(host: &str, e: io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => {
            format!(
                "the certificate of {host} is not valid: {c:?} (is it from a trusted CA, for this name, not expired?)"
            )
        }
        _ => e.to_string(),
    }
}

/// Header fields, names in lower case.
type Fields = Vec<(String, String)>;

/// The head's end, status and fields.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, u16, Fields)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP response: {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Some((end + 4, status, headers)))
}

/// A response complete in `buf` before the connection ends, if it is.
fn parse_response(buf: &[u8], head_only: bool) -> Result<Option<Response>, String> {
    let Some((start, status, headers)) = parse_head(buf)? else { return Ok(None) };
    let r = |body: Vec<u8>, headers| Ok(Some(Response { status, headers, body }));
    let field = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v): &(String, String)| v.clone());
    if head_only || status == 204 || status == 304 {
        return r(Vec::new(), headers);
    }
    if field("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        return match dechunk(&buf[start..])? {
            Some(body) => r(body, headers),
            None => Ok(None),
        };
    }
    if let Some(len) = field("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad Content-Length {len:?}"))?;
        if buf.len() - start >= len {
            return r(buf[start..start + len].to_vec(), headers);
        }
    }
    Ok(None)
}

/// The response of a connection that ended after `buf`.
fn parse_complete(buf: &[u8], head_only: bool) -> Result<Response, String> {
    if let Some(r) = parse_response(buf, head_only)? {
        return Ok(r);
    }
    let Some((start, status, headers)) = parse_head(buf)? else {
        return Err("the connection closed before a complete response".into());
    };
    if headers.iter().any(|(n, _)| n == "content-length" || n == "transfer-encoding") {
        return Err("the connection closed before the end of the body".into());
    }
    Ok(Response { status, headers, body: buf[start..].to_vec() })
}

/// A chunked body (RFC 9112 §7.1), if complete.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_bodies() {
        assert_eq!(split_url("https://a.test/dir").unwrap(), ("a.test".into(), 443, "/dir".into()));
        assert_eq!(split_url("https://127.0.0.1:14000").unwrap(), ("127.0.0.1".into(), 14000, "/".into()));
        assert_eq!(split_url("https://[::1]:8443/x").unwrap(), ("::1".into(), 8443, "/x".into()));
        assert!(split_url("http://a.test/").is_err());
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked, false).unwrap().unwrap().body, b"abcde");
        assert!(parse_response(&chunked[..chunked.len() - 8], false).unwrap().is_none());
        let sized = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nLocation: /x\r\n\r\nok";
        let r = parse_response(sized, false).unwrap().unwrap();
        assert_eq!((r.status, r.header("location"), r.body.as_slice()), (201, Some("/x"), &b"ok"[..]));
        assert_eq!(parse_complete(b"HTTP/1.0 200 OK\r\n\r\nall", false).unwrap().body, b"all");
        assert!(parse_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nall", false).is_err());
    }
}
