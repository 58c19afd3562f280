//! Listeners, options, the connection cap and graceful shutdown.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use smtp_proto::ehlo::AuthMechanisms;
use smtp_proto::server::Config;
use smtp_proto::Reply;

use crate::handler::Handler;
use crate::session::{self, Shared};

/// Server options, named after Node `smtp-server`'s where they mean the same. Everything SMTP
/// (limits, timeouts, extensions) lives in the core's [`Config`], reachable through
/// [`Options::config_mut`]; the methods here are shortcuts onto it.
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) config: Config,
    pub(crate) banner: String,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) secure: bool,
    pub(crate) max_clients: usize,
    pub(crate) read_buffer: usize,
    /// Peers that send a PROXY header first ([`Options::proxy_from`], in `proxy.rs`).
    pub(crate) proxy: crate::proxy::ProxyPolicy,
}

impl Options {
    /// Defaults for a server called `hostname`: the core's defaults (RFC 5321 limits and
    /// timeouts), no TLS, no AUTH, at most 100 concurrent clients.
    pub fn new(hostname: &str) -> Self {
        Self {
            config: Config::new(hostname),
            banner: "ESMTP smtp-std".to_owned(),
            tls: None,
            secure: false,
            max_clients: 100,
            read_buffer: 64 * 1024,
            proxy: crate::proxy::ProxyPolicy::default(),
        }
    }

    /// The core's configuration: limits, timeouts, capabilities, policies.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The core's configuration, to change anything the shortcuts do not cover.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// Greeting text after `220 <hostname> ` (smtp-server `banner`).
    pub fn banner(mut self, banner: &str) -> Self {
        banner.clone_into(&mut self.banner);
        self
    }

    /// TLS certificate and key: offers STARTTLS on plain listeners and allows
    /// [`Server::listen_tls`] (implicit TLS).
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self.config.capabilities.starttls = true;
        self
    }

    /// Every listener added with [`Server::listen`] speaks implicit TLS (smtp-server `secure`,
    /// RFC 8314 port 465). Needs [`Options::tls`].
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// SASL mechanisms to offer (AUTH); the core runs PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER and
    /// passes the credentials to [`Handler::auth`].
    pub fn auth_mechanisms(mut self, mechanisms: AuthMechanisms) -> Self {
        self.config.capabilities.auth = mechanisms;
        self
    }

    /// Whether MAIL is allowed without AUTH (smtp-server `authOptional`; core
    /// `!require_auth`). Default: optional.
    pub fn auth_optional(mut self, optional: bool) -> Self {
        self.config.require_auth = !optional;
        self
    }

    /// Allow AUTH without TLS (smtp-server `allowInsecureAuth`). Default: refused with
    /// `538 5.7.11` and not offered in clear text.
    pub fn allow_insecure_auth(mut self, allow: bool) -> Self {
        self.config.allow_insecure_auth = allow;
        self
    }

    /// Largest message in octets, advertised with SIZE (smtp-server `size`); `None`: no limit.
    pub fn size(mut self, max: Option<u64>) -> Self {
        self.config.max_message_size = max;
        self
    }

    /// Disables commands by withdrawing their extension (smtp-server `disabledCommands`):
    /// `AUTH`, `STARTTLS`, `BDAT`/`CHUNKING`, `SMTPUTF8`, `8BITMIME`, `DSN`, `PIPELINING`.
    /// Unknown names are ignored.
    pub fn disabled_commands(mut self, commands: &[&str]) -> Self {
        let caps = &mut self.config.capabilities;
        for c in commands {
            match c.to_ascii_uppercase().as_str() {
                "AUTH" => caps.auth = AuthMechanisms::none(),
                "STARTTLS" => caps.starttls = false,
                "BDAT" | "CHUNKING" => caps.chunking = false,
                "SMTPUTF8" => caps.smtputf8 = false,
                "8BITMIME" => caps.eightbitmime = false,
                "DSN" => caps.dsn = false,
                "PIPELINING" => caps.pipelining = false,
                _ => {}
            }
        }
        self
    }

    /// Most concurrent clients (smtp-server `maxClients`); past it a client gets
    /// `421 4.7.0` and is closed without a session thread (on an implicit-TLS listener it is
    /// closed without a reply: a plaintext 421 would be garbage to a TLS client, and a
    /// handshake would tie up the accept thread). Default 100.
    pub fn max_clients(mut self, max: usize) -> Self {
        self.max_clients = max.max(1);
        self
    }

    /// One inactivity timeout for every state (smtp-server `socketTimeout`): waiting for a
    /// command, for message content and for the TLS handshake. Default: the core's RFC 5321
    /// values (5 min for commands, 3 min for content).
    pub fn socket_timeout(mut self, timeout: Duration) -> Self {
        let t = &mut self.config.timeouts;
        t.command = timeout;
        t.data = timeout;
        t.tls_handshake = timeout;
        self
    }

    /// Size of each connection's read buffer (at least the core's minimum). Default 64 KiB.
    pub fn read_buffer(mut self, size: usize) -> Self {
        self.read_buffer = size;
        self
    }
}

/// Asks a running [`Server`] to stop: it stops accepting, tells every session to close at its
/// next read (`421 4.3.2`), and [`Server::run`] returns once they are all done.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
}

impl ShutdownHandle {
    /// Starts the graceful shutdown.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown was requested.
    pub fn is_shutdown(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// A blocking SMTP server: one thread accepts on every listener, one thread per session.
///
/// ```no_run
/// use smtp_std::{Handler, Options, Server, Session, Decision};
///
/// #[derive(Clone)]
/// struct Print;
/// impl Handler for Print {
///     fn data_chunk(&mut self, _: &Session, chunk: &[u8]) -> std::io::Result<()> {
///         print!("{}", String::from_utf8_lossy(chunk));
///         Ok(())
///     }
/// }
///
/// let mut server = Server::new(Options::new("mx.example.org").max_clients(50), Print);
/// server.listen("127.0.0.1:2525")?;
/// server.run()?; // until a ShutdownHandle from server.shutdown_handle() is used
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server<H: Handler> {
    options: Arc<Options>,
    handler: H,
    listeners: Vec<(TcpListener, bool)>,
    shutdown: Arc<AtomicBool>,
}

impl<H: Handler> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("listeners", &self.local_addrs()).finish_non_exhaustive()
    }
}

impl<H: Handler> Server<H> {
    /// A server with these options; each connection gets a clone of `handler`.
    pub fn new(options: Options, handler: H) -> Self {
        Self { options: Arc::new(options), handler, listeners: Vec::new(), shutdown: Arc::new(AtomicBool::new(false)) }
    }

    /// Listens on `addr` (port 0 picks a free port): plain SMTP with STARTTLS when TLS is
    /// configured, or implicit TLS with [`Options::secure`]. Returns the bound address.
    pub fn listen(&mut self, addr: impl ToSocketAddrs) -> io::Result<SocketAddr> {
        let secure = self.options.secure;
        self.bind(addr, secure)
    }

    /// Listens on `addr` for implicit TLS (RFC 8314, the port-465 style): the TLS handshake
    /// comes first, then the greeting. Needs [`Options::tls`].
    pub fn listen_tls(&mut self, addr: impl ToSocketAddrs) -> io::Result<SocketAddr> {
        self.bind(addr, true)
    }

    fn bind(&mut self, addr: impl ToSocketAddrs, implicit: bool) -> io::Result<SocketAddr> {
        if implicit && self.options.tls.is_none() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "implicit TLS needs a certificate (Options::tls)"));
        }
        let listener = TcpListener::bind(addr)?;
        // Blocking accept that wakes up regularly to notice a shutdown (Linux honours
        // SO_RCVTIMEO on accept): no polling loop, no added latency per connection.
        socket2::SockRef::from(&listener).set_read_timeout(Some(session::SHUTDOWN_POLL))?;
        let local = listener.local_addr()?;
        self.listeners.push((listener, implicit));
        Ok(local)
    }

    /// The bound addresses with whether each is implicit TLS.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.listeners.iter().filter_map(|(l, tls)| Some((l.local_addr().ok()?, *tls))).collect()
    }

    /// A handle to stop the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { flag: self.shutdown.clone() }
    }

    /// Runs on a new thread; returns at once.
    pub fn spawn(self) -> Running {
        let handle = self.shutdown_handle();
        let addrs = self.local_addrs();
        let thread = thread::Builder::new().name("smtp-accept".into()).spawn(move || self.run());
        Running { handle, addrs, thread: thread.ok() }
    }

    /// Accepts and serves connections until shutdown, then waits for every session to end.
    pub fn run(self) -> io::Result<()> {
        if self.listeners.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no listener: call listen() first"));
        }
        let min = self.options.config.min_input_buffer() + 1024;
        let mut options = (*self.options).clone();
        options.read_buffer = options.read_buffer.max(min);
        let shared = Arc::new(Shared {
            options,
            shutdown: self.shutdown.clone(),
            active: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        });
        let sessions: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());
        thread::scope(|scope| {
            for (listener, implicit) in &self.listeners {
                let (shared, sessions, handler) = (&shared, &sessions, self.handler.clone());
                let accept = move || Self::accept_loop(listener, *implicit, shared, sessions, handler);
                if let Err(e) = thread::Builder::new().name("smtp-accept".into()).spawn_scoped(scope, accept) {
                    tracing::error!("cannot spawn an accept thread: {e}");
                    shared.shutdown.store(true, Ordering::SeqCst);
                }
            }
        });
        drop(self.listeners);
        let sessions = sessions.into_inner().unwrap_or_else(|p| p.into_inner());
        tracing::info!(sessions = sessions.len(), "shutting down: waiting for sessions");
        for t in sessions {
            let _ = t.join();
        }
        tracing::info!("shut down");
        Ok(())
    }

    /// One listener's accept loop, until shutdown.
    fn accept_loop(
        listener: &TcpListener,
        implicit: bool,
        shared: &Arc<Shared>,
        sessions: &Mutex<Vec<JoinHandle<()>>>,
        handler: H,
    ) {
        while !shared.shutdown.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    if let Some(t) = Self::start(&handler, shared, stream, peer, implicit) {
                        let mut list = sessions.lock().unwrap_or_else(|p| p.into_inner());
                        list.retain(|t| !t.is_finished());
                        list.push(t);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    // E.g. EMFILE: log, back off, go on serving.
                    tracing::warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn start(
        handler: &H,
        shared: &Arc<Shared>,
        stream: TcpStream,
        peer: SocketAddr,
        implicit: bool,
    ) -> Option<JoinHandle<()>> {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        let active = shared.active.fetch_add(1, Ordering::SeqCst);
        if active >= shared.options.max_clients {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(%peer, active, "too many clients: refused");
            if !implicit {
                refuse_busy(stream, &shared.options.config);
            }
            return None;
        }
        let guard = ActiveGuard(shared.clone());
        let handler = handler.clone();
        let shared2 = shared.clone();
        let spawned = thread::Builder::new().name(format!("smtp-{peer}")).spawn(move || {
            let _guard = guard;
            session::serve(stream, peer, implicit, handler, &shared2);
        });
        match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(%peer, "cannot spawn a session thread: {e}");
                None
            }
        }
    }
}

/// Writes `421 4.7.0` from a session that is never started, then closes.
fn refuse_busy(mut stream: TcpStream, config: &Config) {
    let mut core = smtp_proto::Server::new(*config);
    if core.refuse(Reply::TOO_MANY_CONNECTIONS).is_err() {
        return;
    }
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut out = [0u8; 512];
    loop {
        let n = core.poll_transmit(&mut out);
        if n == 0 || stream.write_all(&out[..n]).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Decrements the active-client count when a session thread ends, even by panic.
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A server running on its own thread ([`Server::spawn`]).
#[derive(Debug)]
pub struct Running {
    handle: ShutdownHandle,
    addrs: Vec<(SocketAddr, bool)>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    /// The bound addresses with whether each is implicit TLS.
    pub fn local_addrs(&self) -> &[(SocketAddr, bool)] {
        &self.addrs
    }

    /// The first bound address, if any.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addrs.first().map(|a| a.0)
    }

    /// A handle to stop the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Graceful shutdown, then waits for every session to end.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.handle.shutdown();
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(io::Error::other("server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        let _ = self.join();
    }
}
