//! The PROXY protocol (HAProxy's `send-proxy` / `send-proxy-v2`) in front of the server.
//!
//! A connection from one of the networks given to
//! [`Options::proxy_from`](crate::Options::proxy_from) must start with a PROXY header, v1 or v2
//! ([`smtp_proto::proxy`] parses it), within the
//! [`Options::proxy_timeout`](crate::Options::proxy_timeout) deadline, before the greeting. The
//! session then sees the client address it carries as [`Session::peer`](crate::Session::peer)
//! (and the address the client connected to as `local`): the `Received:` header, SPF, the
//! handler's hooks and the logs name the real client. A LOCAL (health check) or UNKNOWN
//! header keeps the connection's own addresses. A listed proxy that sends anything else,
//! closes, or stays silent past the deadline is disconnected without a greeting (and logged).
//!
//! From any other address a PROXY header is never interpreted: it is the client's first SMTP
//! line, and a bad one. Only the header's bytes are taken from the socket (it is peeked at,
//! then exactly its length is read), so what follows it — SMTP, or a TLS ClientHello on an
//! implicit-TLS listener — is read by the session as usual.
//!
//! [`Options::proxy_from`]: crate::Options::proxy_from
//! [`Options::proxy_timeout`]: crate::Options::proxy_timeout

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use smtp_proto::parse::Status;
use smtp_proto::proxy::{self, Origin, MAX_LEN};

/// An IP network in CIDR notation: `ADDR/LEN`, or `ADDR` alone for one host.
///
/// ```
/// use smtp_std::proxy::Network;
/// let net: Network = "10.1.0.0/16".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(net.contains("::ffff:10.1.2.3".parse().unwrap())); // IPv4-mapped
/// assert!(!net.contains("10.2.0.1".parse().unwrap()));
/// assert!("10.1.0.0/33".parse::<Network>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    len: u8,
}

impl Network {
    /// The network of `addr` with a prefix of `len` bits; `None` if `len` is longer than the
    /// address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        (len <= max_len(addr)).then_some(Self { addr, len })
    }

    /// Whether `ip` is in this network. IPv4 is compared as IPv4-mapped IPv6, so that a
    /// client of a dual-stack listener (`::ffff:192.0.2.1`) matches `192.0.2.0/24` and
    /// `::ffff:192.0.2.0/120` alike.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip {
            IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
            IpAddr::V6(a) => a.to_bits(),
        };
        let len = u32::from(self.len) + if self.addr.is_ipv4() { 96 } else { 0 };
        let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
        bits(ip) & mask == bits(self.addr) & mask
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// A network that is not `ADDR` or `ADDR/LEN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkError(String);

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NetworkError {}

impl FromStr for Network {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, NetworkError> {
        let (addr, len) = s.split_once('/').map_or((s, None), |(a, l)| (a, Some(l)));
        let addr: IpAddr = addr.parse().map_err(|_| NetworkError(format!("{s:?}: not an IP address or network")))?;
        let len = match len {
            // Digits only: no sign, no blanks.
            Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|c| c.is_ascii_digit()) => {
                l.parse().map_err(|_| NetworkError(format!("{s:?}: bad prefix length")))?
            }
            Some(_) => return Err(NetworkError(format!("{s:?}: bad prefix length"))),
            None => max_len(addr),
        };
        Self::new(addr, len).ok_or_else(|| NetworkError(format!("{s:?}: bad prefix length")))
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Which peers must start with a PROXY header, and how long they have to send it.
#[derive(Debug, Clone)]
pub(crate) struct ProxyPolicy {
    pub(crate) from: Vec<Network>,
    pub(crate) timeout: Duration,
}

impl Default for ProxyPolicy {
    fn default() -> Self {
        Self { from: Vec::new(), timeout: Duration::from_secs(5) }
    }
}

impl ProxyPolicy {
    /// Whether connections from `ip` come through a proxy (and must start with a header).
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.from.iter().any(|n| n.contains(ip))
    }
}

/// The addresses a new connection's session is seen with: `(peer, local)` as they are, or,
/// from a listed proxy, those of the PROXY header read first from `tcp`.
///
/// # Errors
/// From a listed proxy: no valid header (`InvalidData`), the deadline (`TimedOut`), the
/// connection closed (`UnexpectedEof`), shutdown, or a socket error. The caller closes the
/// connection without a greeting. `poll`: how often the wait looks at `shutdown`.
pub(crate) fn accept(
    tcp: &TcpStream,
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    policy: &ProxyPolicy,
    shutdown: &AtomicBool,
    poll: Duration,
) -> io::Result<(SocketAddr, SocketAddr)> {
    if !policy.trusts(peer.ip()) {
        return Ok((peer, local));
    }
    let deadline = Instant::now() + policy.timeout;
    let mut buf = [0u8; MAX_LEN];
    let mut have = 0;
    let result = loop {
        if shutdown.load(Ordering::SeqCst) {
            return Err(io::Error::other("server shutting down"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let timeout = policy.timeout;
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no PROXY header within {timeout:?}")));
        }
        tcp.set_read_timeout(Some(left.min(poll)))?;
        // Peek, so that nothing after the header is taken from the socket.
        let n = match tcp.peek(&mut buf[have..]) {
            // Shutdown may wake the wait by shutting the socket's reading side.
            Ok(0) if shutdown.load(Ordering::SeqCst) => return Err(io::Error::other("server shutting down")),
            Ok(0) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before the PROXY header"));
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        match proxy::parse(&buf[..have + n]) {
            Ok(Status::Complete((len, header))) => {
                let found = (header.version, header.origin);
                // The header's bytes are there: this read returns at once.
                (&*tcp).read_exact(&mut buf[have..len])?;
                break found;
            }
            Ok(Status::Partial) => {
                // All of it is header: take it and wait for the rest.
                (&*tcp).read_exact(&mut buf[have..have + n])?;
                have += n;
            }
            Err(e) => {
                let head = &buf[..(have + n).min(16)];
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{e} (starts {:?})", head.escape_ascii().to_string()),
                ));
            }
        }
    };
    match result {
        (version, Origin::Tcp { source, destination }) => {
            tracing::info!(id, proxy = %peer, client = %source, ?version, "PROXY header");
            Ok((source, destination))
        }
        (version, origin) => {
            tracing::info!(id, proxy = %peer, ?version, ?origin, "PROXY header without a client address");
            Ok((peer, local))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n = |s: &str| s.parse::<Network>();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(n("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(!n("127.0.0.1").unwrap().contains(ip("127.0.0.2")));
        assert!(n("127.0.0.0/8").unwrap().contains(ip("127.255.0.1")));
        assert!(n("0.0.0.0/0").unwrap().contains(ip("192.0.2.1")));
        assert!(!n("0.0.0.0/0").unwrap().contains(ip("2001:db8::1")));
        assert!(n("::/0").unwrap().contains(ip("2001:db8::1")));
        assert!(n("2001:db8::/32").unwrap().contains(ip("2001:db8:1::1")));
        assert!(!n("2001:db8::/32").unwrap().contains(ip("2001:db9::1")));
        assert!(n("::1").unwrap().contains(ip("::1")));
        // IPv4-mapped peers (a listener on [::]) match IPv4 networks, and the other way round.
        assert!(n("127.0.0.1/32").unwrap().contains(ip("::ffff:127.0.0.1")));
        assert!(n("::ffff:10.0.0.0/104").unwrap().contains(ip("10.9.9.9")));
        assert!(!n("::ffff:10.0.0.0/104").unwrap().contains(ip("11.0.0.1")));
        assert!(n("10.0.0.0/8").unwrap().contains(ip("::ffff:10.9.9.9")));
        assert_eq!(n("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        for bad in
            ["", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/ 8", "x/8", "10.0.0/8", "10.0.0.0/8/8"]
        {
            assert!(n(bad).is_err(), "{bad:?}");
        }
    }
}
