//! Listeners, options, the connection cap and graceful shutdown.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use smtp_proto::server::Config;
use smtp_proto::Reply;

use crate::handler::Handler;
use crate::idle::{Accepting, Idle, Listener};
use crate::limits::Tracker;
use crate::options::Options;
use crate::pool::Job;
use crate::pool::Pool;
use crate::session;
use crate::shared::{refuse, Accepted, ActiveGuard, Connections, Inherited, Shared, SHUTDOWN_POLL};

mod accept;

/// How long shutdown lets sessions that were not waiting for input (in a handler, or writing)
/// finish before their sockets are shut down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How often [`Server::run`] looks at the shutdown flag while the pollers accept.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(50);

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

/// The SMTP configuration new sessions of a [`Server`] start with (at first its
/// [`Options::config`]), which can be replaced while the server runs: each session takes the
/// one current when its connection is accepted and keeps it to its end. The core's settings
/// (host name, limits of a message and a session, timeouts, extensions) follow it; the rest of
/// [`Options`] (TLS, the concurrency cap, the per-client limits, PROXY, buffers, parking) stays
/// as the server was made with.
///
/// ```
/// use smtp_std::{Options, Server, Sink};
///
/// let server = Server::new(Options::new("mx.example.org"), Sink);
/// let handle = server.config_handle();
/// let mut config = handle.get();
/// config.max_recipients = 50;
/// handle.set(config);
/// assert_eq!(server.config_handle().get().max_recipients, 50);
/// ```
#[derive(Debug, Clone)]
pub struct ConfigHandle(Arc<RwLock<Config>>);

impl ConfigHandle {
    fn new(config: Config) -> Self {
        Self(Arc::new(RwLock::new(config)))
    }

    /// The configuration the next session starts with.
    pub fn get(&self) -> Config {
        *self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `config` the one the next sessions start with (sessions open now keep theirs).
    pub fn set(&self, config: Config) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = config;
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
    config: ConfigHandle,
    handler: H,
    listeners: Vec<(TcpListener, Accepted)>,
    shutdown: Arc<AtomicBool>,
    connections: Arc<Connections>,
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
            config: ConfigHandle::new(options.config),
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
            let t = &self.config.get().timeouts;
            let inherited = Inherited {
                read: self.options.park_after.filter(|p| !p.is_zero()).unwrap_or(SHUTDOWN_POLL),
                write: t.command.max(Duration::from_secs(1)),
            };
            sock.set_nodelay(true)?;
            sock.set_write_timeout(Some(inherited.write))?;
            sock.set_read_timeout(Some(inherited.read))?;
            Some(inherited)
        } else {
            sock.set_read_timeout(Some(SHUTDOWN_POLL))?;
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

    /// A handle to the SMTP configuration the next sessions start with.
    pub fn config_handle(&self) -> ConfigHandle {
        self.config.clone()
    }

    /// Runs on a new thread; returns at once.
    pub fn spawn(self) -> Running {
        let handle = self.shutdown_handle();
        let config = self.config_handle();
        let addrs = self.local_addrs();
        let thread = thread::Builder::new().name("smtp-accept".into()).spawn(move || self.run());
        Running { handle, config, addrs, thread: thread.ok() }
    }

    /// Accepts and serves connections until shutdown, then waits for every session to end.
    pub fn run(self) -> io::Result<()> {
        if self.listeners.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no listener: call listen() first"));
        }
        let min = self.config.get().min_input_buffer() + 1024;
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
            config: self.config.clone(),
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

/// A server running on its own thread ([`Server::spawn`]).
#[derive(Debug)]
pub struct Running {
    handle: ShutdownHandle,
    config: ConfigHandle,
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

    /// A handle to the SMTP configuration the next sessions start with.
    pub fn config_handle(&self) -> ConfigHandle {
        self.config.clone()
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
