//! The connection under a client session: TCP (from a bound address when asked), a Unix
//! socket (LMTP), and TLS over TCP after STARTTLS or at once.

use super::*;

pub(super) type Stream = crate::tls::Stream<ClientConnection>;

/// What a session runs over: TCP (plain or TLS), or a Unix socket (LMTP, [`crate::lmtp`]).
pub(crate) enum Conn {
    /// TCP, plain or TLS.
    Net(Stream),
    /// A Unix stream socket (never TLS).
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
}

impl Conn {
    pub(super) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Net(s) => s.tcp().set_read_timeout(t),
            #[cfg(unix)]
            Conn::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub(super) fn shutdown(&self) {
        let _ = match self {
            Conn::Net(s) => s.tcp().shutdown(std::net::Shutdown::Both),
            #[cfg(unix)]
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Net(s) => s.read(buf),
            #[cfg(unix)]
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Net(s) => s.write(buf),
            #[cfg(unix)]
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Net(s) => s.flush(),
            #[cfg(unix)]
            Conn::Unix(s) => s.flush(),
        }
    }
}

/// The first address of `server` (`host:port`) that accepts a TCP connection within
/// `timeout` each.
pub(crate) fn connect_tcp(server: &str, timeout: Duration) -> Result<TcpStream, SendError> {
    connect_tcp_from(server, timeout, None)
}

/// [`connect_tcp`] from the local address `bind` when given (addresses of the other family
/// are skipped).
pub(crate) fn connect_tcp_from(
    server: &str,
    timeout: Duration,
    bind: Option<std::net::IpAddr>,
) -> Result<TcpStream, SendError> {
    let connect_err = |source| SendError::Connect { server: server.to_owned(), source };
    let addrs = server.to_socket_addrs().map_err(connect_err)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        let attempt = match bind {
            None => TcpStream::connect_timeout(&addr, timeout),
            Some(local) if local.is_ipv4() != addr.is_ipv4() => {
                last = io::Error::new(io::ErrorKind::AddrNotAvailable, format!("{addr}: not reachable from {local}"));
                continue;
            }
            Some(local) => (|| {
                let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
                sock.bind(&std::net::SocketAddr::new(local, 0).into())?;
                sock.connect_timeout(&addr.into(), timeout)?;
                Ok(sock.into())
            })(),
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(connect_err(last))
}

pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// The TLS handshake on `tcp`, bounded by `timeout`.
pub(super) fn handshake(
    mut tcp: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, TcpStream>, SendError> {
    let mut conn = ClientConnection::new(config, name).map_err(|e| SendError::Tls(io::Error::other(e)))?;
    let deadline = Instant::now() + timeout;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SendError::Timeout { step: Step::StartTls });
        }
        tcp.set_read_timeout(Some(left)).map_err(|e| SendError::Io { step: Step::StartTls, source: e })?;
        match conn.complete_io(&mut tcp) {
            Ok((0, 0)) if conn.is_handshaking() => return Err(SendError::Closed { step: Step::StartTls }),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
            Err(e) => return Err(SendError::Tls(e)),
        }
    }
    Ok(StreamOwned::new(conn, tcp))
}
