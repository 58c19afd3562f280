//! Listeners, options, the connection cap and graceful shutdown.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use smtp_proto::ehlo::AuthMechanisms;
use smtp_proto::server::Config;
use smtp_proto::Reply;

use crate::handler::Handler;
use crate::idle::{Accepting, Idle, Listener};
use crate::limits::{ClientLimits, Permit, Tracker};
use crate::pool::Job;
use crate::pool::Pool;
use crate::session::{self, Shared};

mod accept;
pub(crate) use accept::refuse;

/// Stack of a session thread by default (the platform's default is 2 MiB). Measured need of
/// the heaviest session we have — STARTTLS or implicit TLS, AUTH, then the mail server's
/// handler verifying SPF, DKIM (RSA) and DMARC over DNS on a Tokio runtime and storing into a
/// Maildir — found by running it on ever smaller stacks until it overflowed: 64–80 KiB in a
/// release build, 224–240 KiB in a debug build. 512 KiB keeps a margin of 2x for debug builds
/// and 6x for release builds. See [`Options::session_stack_size`].
pub const DEFAULT_SESSION_STACK: usize = 512 * 1024;

/// How long shutdown lets sessions that were not waiting for input (in a handler, or writing)
/// finish before their sockets are shut down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How often [`Server::run`] looks at the shutdown flag while the pollers accept.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(50);

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
    /// Per-client limits ([`Options::max_connections_per_client`] and the others, in
    /// `limits.rs`).
    pub(crate) limits: ClientLimits,
    pub(crate) stack_size: usize,
    /// Peers that send a PROXY header first ([`Options::proxy_from`], in `proxy.rs`).
    pub(crate) proxy: crate::proxy::ProxyPolicy,
    /// After how long without input a session gives its thread back
    /// ([`Options::park_idle_sessions_after`]).
    pub(crate) park_after: Option<Duration>,
}

/// How long a session waits for its client on its own thread before it parks, by default:
/// not at all, a read that finds nothing parks it ([`Options::park_idle_sessions_after`]).
pub const DEFAULT_PARK_AFTER: Duration = Duration::ZERO;

impl Options {
    /// Defaults for a server called `hostname`: the core's defaults (RFC 5321 limits and
    /// timeouts), no TLS, no AUTH, at most 1,000 concurrent clients, per-client limits (50 at
    /// once, 120 new per minute, 10 AUTH failures per hour; see
    /// [`Options::max_connections_per_client`]).
    pub fn new(hostname: &str) -> Self {
        Self {
            config: Config::new(hostname),
            banner: "ESMTP smtp-std".to_owned(),
            tls: None,
            secure: false,
            max_clients: 1000,
            read_buffer: 64 * 1024,
            limits: ClientLimits::default(),
            stack_size: DEFAULT_SESSION_STACK,
            proxy: crate::proxy::ProxyPolicy::default(),
            park_after: Some(DEFAULT_PARK_AFTER),
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
    /// handshake would tie up the accepting thread). Default 1,000: an idle session parks
    /// without a thread ([`Options::park_idle_sessions_after`]), costs about 3.4 KiB and no
    /// CPU; 10,000 were measured to hold (the process needs as many file descriptors, see
    /// `ulimit -n`).
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

    /// Largest read buffer of a connection (at least the core's minimum). Default 64 KiB. A
    /// session starts with 4 KiB and grows it when a read fills it; a parked session keeps none.
    pub fn read_buffer(mut self, size: usize) -> Self {
        self.read_buffer = size;
        self
    }

    /// Stack size of each session thread, in bytes (at least 64 KiB). Default
    /// [`DEFAULT_SESSION_STACK`] (512 KiB). A stack costs memory only where it is touched, but
    /// its whole size is reserved: 10,000 sessions at the platform's 2 MiB are 20 GB of address
    /// space (and of commit charge where overcommit is strict). Raise it if your [`Handler`]
    /// recurses deeply or keeps large values on the stack: a stack overflow aborts the process.
    pub fn session_stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes.max(64 * 1024);
        self
    }

    /// A session whose client has sent nothing for this long parks: its socket and state wait
    /// in the server's epoll instance and its thread goes back to the pool; when the client
    /// sends, or the session's timeout is due, one of the threads waiting on that instance
    /// takes it up where it stopped, on its own stack. A waiting session so costs a few KiB of
    /// memory and no thread.
    ///
    /// The default, [`DEFAULT_PARK_AFTER`] (zero), parks a session as soon as a read finds
    /// nothing: a readiness loop run by a few threads (as many as the cores, at least two),
    /// which also accept new connections, and which costs the least CPU per message (no thread
    /// wakes up for a round trip when a busy server's threads find input waiting). A delay
    /// keeps a session on its thread for that long first: a thread per talking session, each
    /// woken by its own client. `None`: every session keeps its thread to its end, and one
    /// thread per listener accepts. Sessions are never parked in a [`Handler`] call: a handler
    /// may block as long as it needs, and the others are served meanwhile on other threads.
    pub fn park_idle_sessions_after(mut self, after: Option<Duration>) -> Self {
        self.park_after = after;
        self
    }
}

/// Asks a running [`Server`] to stop: it stops accepting, wakes every session blocked on a
/// read to close with `421 4.3.2` (others close at their next read), and [`Server::run`]
/// returns once they are all done.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    connections: Arc<Connections>,
}

impl ShutdownHandle {
    /// Starts the graceful shutdown.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // After the flag: a session registered after this sweep sees the flag at its first read.
        self.connections.wake(Shutdown::Read);
        self.connections.wake_listeners();
    }

    /// Whether shutdown was requested.
    pub fn is_shutdown(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// A blocking SMTP server: a session runs on a pool thread while it has input, and parks
/// without one while it waits for its client; a few threads wait on all parked sessions and
/// the listeners at once, and take up the sessions with input and the new connections.
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
    listeners: Vec<(TcpListener, Accepted)>,
    shutdown: Arc<AtomicBool>,
    connections: Arc<Connections>,
}

/// What a session knows of the listener that accepted it, which saves it system calls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accepted {
    /// Implicit TLS.
    pub(crate) implicit: bool,
    /// The listener's address when it is a specific one: every accepted socket's local address
    /// (no `getsockname`).
    pub(crate) local: Option<SocketAddr>,
    /// The socket options an accepted socket inherits from the listener (Linux copies the
    /// listening socket's `TCP_NODELAY`, `SO_RCVTIMEO` and `SO_SNDTIMEO`): a session does not
    /// set them again. `None` elsewhere.
    pub(crate) inherited: Option<Inherited>,
}

/// Socket timeouts an accepted socket starts with ([`Accepted::inherited`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inherited {
    pub(crate) read: Duration,
    pub(crate) write: Duration,
}

/// The open sessions' sockets, so that shutdown can wake sessions blocked on a read (a
/// read shut down returns at once) instead of every session waking up regularly to look;
/// and the listeners, whose blocked `accept` a shutdown of the listening socket ends.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    sockets: Mutex<HashMap<u64, Weak<TcpStream>>>,
    listeners: Mutex<Vec<TcpListener>>,
}

impl Connections {
    /// Registers session `id`'s socket until the guard is dropped.
    pub(crate) fn register(self: &Arc<Self>, id: u64, socket: &Arc<TcpStream>) -> Registered {
        self.lock().insert(id, Arc::downgrade(socket));
        Registered { connections: self.clone(), id }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<TcpStream>>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the accept loops blocked on the listeners (Linux: `accept` on a listening socket
    /// shut down for reading fails at once; elsewhere the accept timeout ends it).
    fn wake_listeners(&self) {
        for l in self.listeners.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = socket2::SockRef::from(l).shutdown(Shutdown::Read);
        }
    }

    /// Shuts down `how` every registered socket.
    fn wake(&self, how: Shutdown) {
        for socket in self.lock().values().filter_map(Weak::upgrade) {
            let _ = socket.shutdown(how);
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A session's place in [`Connections`].
pub(crate) struct Registered {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

impl<H: Handler> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("listeners", &self.local_addrs()).finish_non_exhaustive()
    }
}

impl<H: Handler> Server<H> {
    /// A server with these options; each connection gets a clone of `handler`.
    pub fn new(options: Options, handler: H) -> Self {
        Self {
            options: Arc::new(options),
            handler,
            listeners: Vec::new(),
            shutdown: Arc::new(AtomicBool::new(false)),
            connections: Arc::default(),
        }
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
        let local = listener.local_addr()?;
        let sock = socket2::SockRef::from(&listener);
        // Where one thread per listener accepts (sessions without a poller): a blocking
        // accept that a shutdown wakes (the listening socket is shut down), and that wakes up
        // by itself now and then (Linux honours SO_RCVTIMEO on accept); the pollers make the
        // listener non-blocking instead. On Linux the accepted sockets inherit this timeout,
        // the write timeout and TCP_NODELAY: set here once, they cost a session no system
        // call (its first read waits for the park delay, when there is one).
        let inherited = if cfg!(target_os = "linux") {
            let t = &self.options.config.timeouts;
            let inherited = Inherited {
                read: self.options.park_after.filter(|p| !p.is_zero()).unwrap_or(session::SHUTDOWN_POLL),
                write: t.command.max(Duration::from_secs(1)),
            };
            sock.set_nodelay(true)?;
            sock.set_write_timeout(Some(inherited.write))?;
            sock.set_read_timeout(Some(inherited.read))?;
            Some(inherited)
        } else {
            sock.set_read_timeout(Some(session::SHUTDOWN_POLL))?;
            None
        };
        let specific = (!local.ip().is_unspecified()).then_some(local);
        self.connections.listeners.lock().unwrap_or_else(|p| p.into_inner()).push(listener.try_clone()?);
        self.listeners.push((listener, Accepted { implicit, local: specific, inherited }));
        Ok(local)
    }

    /// The bound addresses with whether each is implicit TLS.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.listeners.iter().filter_map(|(l, a)| Some((l.local_addr().ok()?, a.implicit))).collect()
    }

    /// A handle to stop the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { flag: self.shutdown.clone(), connections: self.connections.clone() }
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
        let tracker = Arc::new(Tracker::new(&options.limits, options.max_clients));
        let pool = Pool::new(options.stack_size);
        let idle = match options.park_after {
            Some(_) => match Idle::start(pool.clone()) {
                Ok(idle) => Some(idle),
                Err(e) => {
                    tracing::warn!("no poller for waiting sessions ({e}): each keeps its thread");
                    None
                }
            },
            None => None,
        };
        let shared = Arc::new(Shared {
            options,
            shutdown: self.shutdown.clone(),
            active: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            limits: tracker,
            connections: self.connections.clone(),
            pool: pool.clone(),
            idle: idle.clone(),
        });
        match &idle {
            // The pollers accept: a connection is served on the thread that accepted it.
            Some(idle) => {
                if let Err(e) = self.watch_listeners(idle, &shared) {
                    tracing::error!("cannot watch the listeners: {e}");
                    shared.shutdown.store(true, Ordering::SeqCst);
                }
                while !shared.shutdown.load(Ordering::SeqCst) {
                    thread::sleep(SHUTDOWN_WAIT);
                }
                idle.unlisten();
            }
            None => self.accept_threads(&shared),
        }
        drop(self.listeners);
        // The port is free once run returns (shutdown handles outlive the server).
        self.connections.listeners.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let running = || shared.active.load(Ordering::SeqCst);
        tracing::info!(sessions = running(), "shutting down: waiting for sessions");
        // Sessions waiting for input were woken and answer 421 at once; give the others (in a
        // handler, or writing to a client that does not read) a moment, then cut them off.
        let grace = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < grace && running() > 0 {
            thread::sleep(Duration::from_millis(10));
        }
        if running() > 0 {
            tracing::info!(left = self.connections.len(), "closing the sessions still running");
            self.connections.wake(Shutdown::Both);
        }
        while running() > 0 {
            thread::sleep(Duration::from_millis(10));
        }
        if let Some(idle) = idle {
            idle.stop();
        }
        pool.close();
        tracing::info!("shut down");
        Ok(())
    }
}

/// Decrements the active-client count when a session ends, even by panic, and gives the
/// client's per-client slot back.
pub(crate) struct ActiveGuard {
    shared: Arc<Shared>,
    _permit: Option<Permit>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
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
