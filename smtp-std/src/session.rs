//! One connection: moves bytes between the socket (plain or rustls) and the core, turns the
//! core's timeouts into socket read timeouts and calls the handler. No SMTP logic lives here.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConnection, StreamOwned};
use smtp_proto::server::{Event, Heap, HeloKind, Progress};
use smtp_proto::Reply;

use crate::handler::{forward_path_string, reverse_path_string, AuthRequest, Decision, Envelope, Handler, Session};
use crate::idle::{Idle, Parked};
use crate::limits::{Permit, Refusal, Tracker};
use crate::pool::Pool;
use crate::server::{Accepted, ActiveGuard, Connections, Inherited, Options, Registered};

/// State shared by the accept loop and the sessions.
pub(crate) struct Shared {
    pub(crate) options: Options,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) active: AtomicUsize,
    pub(crate) next_id: AtomicU64,
    /// Per-client counters: connections (taken by the accept loop), AUTH failures (here).
    pub(crate) limits: Arc<Tracker>,
    /// Where shutdown finds the sockets to wake.
    pub(crate) connections: Arc<Connections>,
    /// The session threads.
    pub(crate) pool: Arc<Pool>,
    /// Where idle sessions wait without a thread (`None`: they keep theirs).
    pub(crate) idle: Option<Arc<Idle>>,
}

/// Size of a session's output queue (the core's, on the heap): replies to a pipelined batch
/// of about 25 commands leave in one write. The core needs
/// [`MIN_OUTPUT_BUFFER`](smtp_proto::server::MIN_OUTPUT_BUFFER) (1,200) at least.
const OUTPUT_QUEUE: usize = 2048;

/// The read buffer on a session thread's stack: commands and small messages never need
/// another ([`Live::serve`]).
const STACK_READ: usize = 8192;

/// How often a blocked accept (or a wait for a PROXY header) wakes up to look at the shutdown
/// flag. Sessions do not poll: shutdown wakes them ([`Connections`]).
pub(crate) const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// A log event of a session (a [`Session`] or anything with its `id` and `peer`): both ride on
/// every line. No span: entering one on each session thread registers the thread with the
/// subscriber, and tracing-subscriber's registry holds at most 4,096 threads at once.
macro_rules! log {
    ($level:ident, $s:expr, $($rest:tt)+) => {
        tracing::$level!(id = $s.id, peer = %$s.peer, $($rest)+)
    };
}

/// The session's socket, shared with [`Connections`] (which only ever shuts it down), and
/// whether reads return at once when there is nothing to read (`MSG_DONTWAIT`: the socket
/// itself stays blocking, for writes and the TLS handshake).
struct Sock(Arc<TcpStream>, bool);

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.1 {
            let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT;
            return nix::sys::socket::recv(self.0.as_raw_fd(), buf, flags).map_err(io::Error::from);
        }
        (&*self.0).read(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

impl std::borrow::Borrow<TcpStream> for Sock {
    fn borrow(&self) -> &TcpStream {
        &self.0
    }
}

type Stream = crate::tls::Stream<ServerConnection, Sock>;

/// Runs the TLS handshake on `tcp`, bounded by `timeout`; gives up early on shutdown.
fn handshake(
    mut tcp: Sock,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    shutdown: &AtomicBool,
) -> io::Result<StreamOwned<ServerConnection, Sock>> {
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let deadline = Instant::now() + timeout;
    tcp.0.set_write_timeout(Some(timeout.max(Duration::from_secs(1))))?;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"));
        }
        if shutdown.load(Ordering::SeqCst) {
            return Err(io::Error::other("server shutting down during the TLS handshake"));
        }
        // No polling: shutdown shuts the socket's reading side, which ends this read.
        tcp.0.set_read_timeout(Some(left))?;
        match conn.complete_io(&mut tcp) {
            Ok((0, 0)) if conn.is_handshaking() && shutdown.load(Ordering::SeqCst) => {
                return Err(io::Error::other("server shutting down during the TLS handshake"));
            }
            Ok((0, 0)) if conn.is_handshaking() => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed during the TLS handshake"));
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// Serves one accepted connection, session `id`: to its end, or until it parks (it then goes
/// on on another pool thread). `active` counts it until it ends.
pub(crate) fn serve<H: Handler>(
    tcp: Arc<TcpStream>,
    id: u64,
    peer: SocketAddr,
    accepted: Accepted,
    handler: H,
    shared: Arc<Shared>,
    active: ActiveGuard,
) {
    let implicit = accepted.implicit;
    // Before the first read: a shutdown from now on wakes this session (or it saw the flag).
    let registered = shared.connections.register(id, &tcp);
    let local = match accepted.local {
        Some(local) => local,
        None => tcp.local_addr().unwrap_or(peer),
    };
    let proxy = shared.options.proxy.trusts(peer.ip()).then_some(peer);
    // Behind a listed proxy: the PROXY header first, and its client is the session's peer.
    let (peer, local) = match crate::proxy::accept(&tcp, id, peer, local, &shared.options.proxy, &shared.shutdown) {
        Ok(addrs) => addrs,
        Err(e) => {
            tracing::warn!(id, proxy = %peer, "closed without a greeting: {e}");
            return;
        }
    };
    // The per-client limits of a proxied client, now that its address is known (the accept
    // loop counted everyone else).
    let permit = match proxy {
        Some(via) => match shared.limits.admit(peer.ip(), Instant::now()) {
            Ok(permit) => Some(permit),
            Err(r) => {
                tracing::warn!(id, %peer, proxy = %via, "refused: {r}");
                if !implicit {
                    crate::server::refuse(&tcp, &shared.options.config, r.reply());
                }
                return;
            }
        },
        None => None,
    };
    let session = Session::new(id, peer, local, implicit);
    log!(info, session, %local, implicit_tls = implicit, "connect");
    let core = match smtp_proto::Server::with_buffers(shared.options.config, Heap::new(OUTPUT_QUEUE)) {
        Ok(core) => core,
        Err(e) => {
            log!(error, session, "{e}");
            return;
        }
    };
    let mut conn = Conn {
        core: Box::new(core),
        handler,
        session,
        shared,
        in_message: false,
        content_error: None,
        read_timeout: None,
        waiting_since: None,
        park: false,
    };
    // What the socket inherited from the listener, unless a PROXY header was read (with its
    // own read timeout).
    let inherited = accepted.inherited.filter(|_| proxy.is_none());
    match conn.open(Sock(tcp, false), implicit, inherited) {
        Ok(stream) => Box::new(Live {
            conn,
            stream,
            buf: Vec::new(),
            start: 0,
            end: 0,
            _registered: registered,
            _permit: permit,
            _active: active,
            watched: false,
        })
        .run(),
        Err(e) => {
            log!(info, conn.session, "connection error: {e}");
            conn.finish();
        }
    }
}

/// A session past its greeting, with everything it holds; what parks in [`Idle`].
struct Live<H: Handler> {
    conn: Conn<H>,
    stream: Stream,
    /// Input: `buf[start..end]` is not consumed yet. Empty while parked with nothing pending.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    // Dropped after the rest, in this order: the socket's place in [`Connections`], the
    // proxied client's per-client slot, the active-session count.
    _registered: Registered,
    _permit: Option<Permit>,
    _active: ActiveGuard,
    /// Its socket is in the poller's interest list ([`Parked::watched`]).
    watched: bool,
}

/// Where [`Live::serve`] stopped.
enum Stop {
    /// The session is over.
    Done,
    /// The client has been silent for a while: park.
    Idle,
}

impl<H: Handler> Parked for Live<H> {
    fn socket(&self) -> &TcpStream {
        self.stream.tcp()
    }

    fn key(&self) -> u64 {
        self.conn.session.id
    }

    fn watched(&mut self) -> &mut bool {
        &mut self.watched
    }

    fn resume(self: Box<Self>) {
        self.run()
    }
}

impl<H: Handler> Live<H> {
    /// Serves until the session ends, or parks it when its client is silent.
    fn run(mut self: Box<Self>) {
        match self.serve() {
            Ok(Stop::Idle) => {
                let deadline = self.conn.deadline();
                let idle = self.conn.shared.idle.clone();
                let Some(idle) = idle else { unreachable!("Conn::park without a poller") };
                match idle.park(self, deadline) {
                    Ok(()) => return,
                    // Cannot park (the server stops): this thread goes on waiting.
                    Err(mut me) => {
                        me.conn.park = false;
                        return me.run();
                    }
                }
            }
            Ok(Stop::Done) => {}
            Err(e) => log!(info, self.conn.session, "connection error: {e}"),
        }
        self.conn.finish();
    }

    /// The session's loop: input to the core, events to the handler, replies out.
    ///
    /// Input is read into a buffer on this thread's stack ([`STACK_READ`] octets) while that
    /// holds it, and into `self.buf` on the heap (growing up to [`Options::read_buffer`]) once a
    /// read fills it or a line does not fit: commands never allocate, and whatever is
    /// allocated goes when the session parks.
    fn serve(&mut self) -> io::Result<Stop> {
        let conn = &mut self.conn;
        let max = conn.shared.options.read_buffer;
        let mut stack = [0u8; STACK_READ];
        // Bytes carried over a park (a partial line) go back to the stack if they fit.
        if !self.buf.is_empty() && self.end - self.start <= STACK_READ / 2 {
            let n = self.end - self.start;
            stack[..n].copy_from_slice(&self.buf[self.start..self.end]);
            (self.start, self.end) = (0, n);
            self.buf = Vec::new();
        }
        loop {
            let buf: &mut [u8] = if self.buf.is_empty() { &mut stack } else { &mut self.buf };
            // Feed everything we have until the core needs more input.
            let closed = loop {
                let r = conn.core.handle_input(&buf[self.start..self.end]).map_err(io::Error::other)?;
                self.start += r.consumed;
                match r.progress {
                    Progress::Event(ev) => conn.event(ev),
                    Progress::Flush => conn.drain(&mut self.stream)?,
                    Progress::NeedInput => break false,
                    Progress::Closed => break true,
                }
            };
            // The drain rule: every queued reply goes out before we read again.
            conn.drain(&mut self.stream)?;
            if closed {
                close(&mut self.stream);
                return Ok(Stop::Done);
            }
            if conn.core.is_tls_pending() {
                // The 220 went out and whatever followed STARTTLS was discarded by the core.
                (self.start, self.end) = (0, 0);
                conn.start_tls(&mut self.stream)?;
                continue;
            }
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.start > 0 && self.end == buf.len() {
                buf.copy_within(self.start..self.end, 0);
                (self.end, self.start) = (self.end - self.start, 0);
            }
            if self.end == buf.len() {
                // A line that does not fit yet: a larger buffer, on the heap (up to the limit,
                // which is at least the core's minimum).
                let len = (buf.len() * 4).min(max);
                if len <= buf.len() {
                    return Err(io::Error::other("input buffer full without progress"));
                }
                (self.start, self.end) = grow(&mut self.buf, &stack, (self.start, self.end), len);
                continue;
            }
            let free = buf.len() - self.end;
            match conn.read(&mut self.stream, &mut buf[self.end..])? {
                Read_::Bytes(0) => {
                    log!(info, conn.session, "client closed the connection");
                    return Ok(Stop::Done);
                }
                Read_::Bytes(n) => {
                    self.end += n;
                    // A read that fills the buffer: more is coming (a message), read more at once.
                    if n == free && buf.len() < max {
                        let len = (buf.len() * 4).min(max);
                        (self.start, self.end) = grow(&mut self.buf, &stack, (self.start, self.end), len);
                    }
                }
                Read_::Idle => {
                    // Parking: keep only what is not consumed yet (a partial line).
                    let buf: &[u8] = if self.buf.is_empty() { &stack } else { &self.buf };
                    let rest = buf[self.start..self.end].to_vec();
                    (self.start, self.end) = (0, rest.len());
                    self.buf = rest;
                    return Ok(Stop::Idle);
                }
                Read_::Stop => {
                    // Timeout or shutdown: the core queued its 421.
                    conn.drain(&mut self.stream)?;
                    close(&mut self.stream);
                    return Ok(Stop::Done);
                }
            }
        }
    }
}

/// Grows the input buffer to `len` octets: `heap` in place when it is the one in use (not
/// empty), else a new `heap` takes the unconsumed `stack[start..end]`. Returns the new
/// `(start, end)`.
fn grow(heap: &mut Vec<u8>, stack: &[u8], (start, end): (usize, usize), len: usize) -> (usize, usize) {
    if heap.is_empty() {
        let mut new = vec![0u8; len];
        new[..end - start].copy_from_slice(&stack[start..end]);
        *heap = new;
        (0, end - start)
    } else {
        heap.resize(len, 0);
        (start, end)
    }
}

/// What [`Conn::read`] got.
enum Read_ {
    /// Bytes (0: the client closed).
    Bytes(usize),
    /// Nothing for a while: park the session (only when it can).
    Idle,
    /// The timeout fired or the server shuts down: the core was told and queued its `421`.
    Stop,
}

struct Conn<H: Handler> {
    core: Box<smtp_proto::Server<Heap>>,
    handler: H,
    session: Session,
    shared: Arc<Shared>,
    /// A message was accepted with 354 and has not ended yet.
    in_message: bool,
    /// The handler failed on a piece of content: the end of data is answered 451.
    content_error: Option<io::Error>,
    /// The socket's read timeout as last set (`Some(None)`: none), `None` when unknown: set
    /// again only when it changes (a syscall).
    read_timeout: Option<Option<Duration>>,
    /// Since when the session waits for input (the core's timeout runs from there; a parked
    /// session keeps it).
    waiting_since: Option<Instant>,
    /// Whether the session may park when idle.
    park: bool,
}

impl<H: Handler> Conn<H> {
    /// The TLS handshake of an implicit-TLS listener, the `connect` hook and the greeting.
    fn open(&mut self, tcp: Sock, implicit: bool, inherited: Option<Inherited>) -> io::Result<Stream> {
        self.park = self.shared.idle.is_some() && self.shared.options.park_after.is_some();
        let options = &self.shared.options;
        let write = options.config.timeouts.command.max(Duration::from_secs(1));
        match inherited {
            Some(i) => {
                self.read_timeout = Some(Some(i.read));
                if i.write != write {
                    tcp.0.set_write_timeout(Some(write))?;
                }
            }
            None => tcp.0.set_write_timeout(Some(write))?,
        }
        let stream = if implicit {
            let Some(tls) = options.tls.clone() else {
                return Err(io::Error::other("implicit TLS without a certificate"));
            };
            let s = handshake(tcp, tls, options.config.timeouts.tls_handshake, &self.shared.shutdown)?;
            // The handshake set its own read timeouts.
            self.read_timeout = None;
            self.core.tls_established().map_err(io::Error::other)?;
            log!(info, self.session, version = ?s.conn.protocol_version(), "TLS established (implicit)");
            Stream::Tls(Box::new(s))
        } else {
            Stream::Plain(tcp)
        };
        self.session.tls = self.core.is_tls();

        match self.handler.connect(&self.session) {
            Decision::Reply(r) if !r.as_reply().is_positive() => {
                log!(info, self.session, code = r.code, "connection refused by handler");
                self.core.refuse(r.as_reply()).map_err(io::Error::other)?;
            }
            // A positive reply to connect: its text is this connection's banner.
            Decision::Reply(r) => self.core.greet(&r.text).map_err(io::Error::other)?,
            Decision::Accept => self.core.greet(&self.shared.options.banner).map_err(io::Error::other)?,
        }
        Ok(stream)
    }

    /// The end of the session: an unfinished message is abandoned, the `close` hook.
    fn finish(&mut self) {
        if self.in_message {
            self.in_message = false;
            log!(info, self.session, "message abandoned: connection ended mid-DATA");
            self.handler.data_abort(&self.session, None);
        }
        self.handler.close(&self.session);
        log!(info, self.session, "close");
    }

    /// When the core's timeout fires for the input awaited now (`None`: never).
    fn deadline(&self) -> Option<Instant> {
        let since = self.waiting_since?;
        self.core.timeout().and_then(|t| since.checked_add(t))
    }

    /// Reads with the core's timeout. An idle session sleeps in `read` (shutdown wakes it by
    /// shutting down the socket's reading side: the read returns 0), for
    /// [`Options::park_idle_sessions_after`] when it may park, for the whole timeout otherwise.
    fn read(&mut self, stream: &mut Stream, buf: &mut [u8]) -> io::Result<Read_> {
        let timeout = self.core.timeout();
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let park_after = if self.park { self.shared.options.park_after } else { None };
        // Parking at once: a read that finds nothing returns (and the session parks).
        let nowait = park_after == Some(Duration::ZERO);
        let mut first = true;
        loop {
            if self.shutting_down() {
                self.waiting_since = None;
                return Ok(Read_::Stop);
            }
            let left = timeout.map(|t| t.saturating_sub(since.elapsed()));
            if left == Some(Duration::ZERO) {
                log!(info, self.session, timeout = ?timeout.unwrap_or_default(), "timeout");
                self.core.handle_timeout();
                self.waiting_since = None;
                return Ok(Read_::Stop);
            }
            // The same value every time while it can be (no syscall to set it again): the park
            // delay, or the whole timeout at first; what is left of the timeout near its end,
            // or after an early wake-up.
            let wait = match (park_after, left) {
                (Some(p), Some(l)) if l <= p => Some(l),
                (Some(p), _) => Some(p),
                (None, _) if first => timeout,
                (None, l) => l,
            };
            first = false;
            let read = if nowait {
                sock(stream).1 = true;
                let read = stream.read(buf);
                sock(stream).1 = false;
                read
            } else {
                if self.read_timeout != Some(wait) {
                    stream.tcp().set_read_timeout(wait)?;
                    self.read_timeout = Some(wait);
                }
                stream.read(buf)
            };
            match read {
                Ok(0) if self.shutting_down() => {
                    self.waiting_since = None;
                    return Ok(Read_::Stop);
                }
                Ok(n) => {
                    self.waiting_since = None;
                    return Ok(Read_::Bytes(n));
                }
                // E.g. rustls: "peer closed connection without sending TLS close_notify".
                Err(_) if self.shutting_down() => {
                    self.waiting_since = None;
                    return Ok(Read_::Stop);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) =>
                {
                    if park_after.is_some() && e.kind() != io::ErrorKind::Interrupted {
                        // Silent for the park delay: the poller waits for it (or its deadline).
                        let left = timeout.map(|t| t.saturating_sub(since.elapsed()));
                        if left != Some(Duration::ZERO) {
                            return Ok(Read_::Idle);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the server shuts down; if so the core was told (it queued `421 4.3.2`).
    fn shutting_down(&mut self) -> bool {
        if !self.shared.shutdown.load(Ordering::SeqCst) {
            return false;
        }
        if !self.core.is_closed() {
            log!(info, self.session, "server shutting down: closing the session");
            self.core.shutdown();
        }
        true
    }

    fn drain(&mut self, stream: &mut Stream) -> io::Result<()> {
        if !self.core.has_output() {
            return Ok(());
        }
        // The whole queue in one write (on the stack: nothing of it stays with the session).
        let mut out = [0u8; OUTPUT_QUEUE];
        loop {
            let n = self.core.poll_transmit(&mut out);
            if n == 0 {
                return stream.flush();
            }
            stream.write_all(&out[..n])?;
        }
    }

    /// The TLS handshake after STARTTLS's 220: `stream` goes from plain to TLS.
    fn start_tls(&mut self, stream: &mut Stream) -> io::Result<()> {
        let Stream::Plain(tcp) = stream else {
            return Err(io::Error::other("STARTTLS under TLS"));
        };
        let tcp = Sock(tcp.0.clone(), false);
        let Some(tls) = self.shared.options.tls.clone() else {
            return Err(io::Error::other("STARTTLS without a certificate"));
        };
        let s = handshake(tcp, tls, self.shared.options.config.timeouts.tls_handshake, &self.shared.shutdown)?;
        // The handshake set its own read timeouts.
        self.read_timeout = None;
        self.core.tls_established().map_err(io::Error::other)?;
        log!(info, self.session, version = ?s.conn.protocol_version(), "TLS established (STARTTLS)");
        self.sync();
        *stream = Stream::Tls(Box::new(s));
        Ok(())
    }

    /// Applies the handler's decision to the pending event; returns whether it was accepted.
    fn decide(&mut self, decision: &Decision) -> bool {
        let (result, positive) = match decision {
            Decision::Accept => (self.core.accept(), true),
            Decision::Reply(r) => (self.core.reply(r.as_reply()), r.as_reply().is_positive()),
        };
        match result {
            Ok(()) => positive,
            Err(e) => {
                log!(error, self.session, ?decision, "handler reply not usable here ({e}): answering 451");
                if self.core.is_pending() {
                    let _ = self.core.reply(Reply::LOCAL_ERROR);
                }
                false
            }
        }
    }

    /// Mirrors the core's state into the owned session after each step.
    fn sync(&mut self) {
        self.session.tls = self.core.is_tls();
        if self.core.helo().is_none() {
            self.session.helo = None;
        }
        if !self.core.is_authenticated() {
            self.session.user = None;
        }
        if !self.core.in_transaction() {
            self.session.envelope = Envelope::default();
        }
    }

    fn event(&mut self, ev: Event<'_>) {
        let s = &self.session;
        match ev {
            Event::Helo { host, kind } => {
                let d = self.handler.helo(s, host);
                let ok = self.decide(&d);
                log!(info, self.session, host, ?kind, ok, "helo");
                if ok {
                    self.session.helo = Some(host.to_owned());
                    self.session.esmtp = kind != HeloKind::Helo;
                }
            }
            Event::Auth { .. } | Event::AuthResponse => {
                let creds = self.core.credentials();
                let req = creds.as_ref().and_then(AuthRequest::from_credentials);
                let ip = s.peer.ip();
                match req {
                    // Locked out meanwhile (by another of its sessions): the handler is not asked.
                    Some(req) if self.shared.limits.is_locked(ip, Instant::now()) => {
                        let (mechanism, user) = (req.mechanism, req.identity);
                        log!(warn, self.session, mechanism, user, "auth refused: client locked out");
                        self.decide(&Refusal::AuthLocked.reply().into());
                    }
                    Some(req) => {
                        let d = self.handler.auth(s, &req);
                        let (mechanism, user) = (req.mechanism, req.identity.to_owned());
                        // A permanent refusal is a wrong guess; a temporary one (454) is ours.
                        let failed = matches!(&d, Decision::Reply(r) if r.code >= 500);
                        if failed && self.shared.limits.auth_failed(ip, Instant::now()) {
                            log!(
                                warn,
                                self.session,
                                mechanism,
                                user,
                                "auth failed: too many failures, client locked out"
                            );
                            self.decide(&Refusal::AuthLocked.reply().into());
                        } else if self.decide(&d) {
                            log!(info, self.session, mechanism, user, "auth ok");
                            self.session.user = Some(user);
                        } else {
                            log!(warn, self.session, mechanism, user, "auth failed");
                        }
                    }
                    None => {
                        // A mechanism the application would have to drive: none is offered.
                        log!(warn, self.session, "auth with an unsupported mechanism");
                        self.decide(&Reply::AUTH_UNKNOWN_MECHANISM.into());
                    }
                }
            }
            Event::AuthCancelled => log!(info, self.session, "auth cancelled by the client"),
            Event::Mail { from, params } => {
                let d = self.handler.mail_from(s, &from, &params);
                let addr = reverse_path_string(&from);
                let ok = self.decide(&d);
                log!(info, self.session, from = %addr, size = ?params.size, ok, "mail");
                if ok {
                    self.session.envelope = Envelope {
                        mail_from: Some(addr),
                        rcpt_to: Vec::new(),
                        smtputf8: params.smtputf8,
                        eight_bit: params.body.is_some_and(|b| b != smtp_proto::parse::Body::SevenBit),
                        declared_size: params.size,
                    };
                }
            }
            Event::Rcpt { to, params } => {
                let d = self.handler.rcpt_to(s, &to, &params);
                let addr = forward_path_string(&to);
                let ok = self.decide(&d);
                log!(info, self.session, to = %addr, ok, "rcpt");
                if ok {
                    self.session.envelope.rcpt_to.push(addr);
                }
            }
            Event::DataStart { chunked } => {
                let d = self.handler.data_start(s);
                let ok = self.decide(&d);
                log!(debug, self.session, chunked, ok, "data");
                if ok {
                    self.in_message = true;
                    self.content_error = None;
                }
            }
            Event::Data(chunk) => {
                if self.in_message && self.content_error.is_none() {
                    if let Err(e) = self.handler.data_chunk(s, chunk) {
                        log!(error, self.session, "storing the message failed: {e}");
                        self.content_error = Some(e);
                    }
                }
            }
            Event::DataEnd { size } => {
                self.in_message = false;
                if self.content_error.take().is_some() {
                    self.handler.data_abort(s, None);
                    self.decide(&Reply::LOCAL_ERROR.into());
                } else {
                    let d = self.handler.data_end(s, size);
                    let ok = self.decide(&d);
                    log!(debug, self.session, size, ok, "end of data");
                    // LMTP: one decision per recipient; the same answer for each.
                    let mut left = self.session.envelope.rcpt_to.len();
                    while self.core.is_pending() && left > 0 {
                        left -= 1;
                        self.decide(&d);
                    }
                }
            }
            Event::DataAborted { error } => {
                log!(info, self.session, ?error, "message refused by the core");
                if self.in_message {
                    self.in_message = false;
                    self.content_error = None;
                    self.handler.data_abort(s, Some(error));
                }
            }
            Event::StartTls => {
                if self.shared.options.tls.is_some() {
                    self.decide(&Decision::Accept);
                    log!(info, self.session, "starttls");
                } else {
                    self.decide(&Reply::TLS_UNAVAILABLE.into());
                }
            }
            Event::PlaintextDiscarded { len } => {
                log!(
                    warn,
                    self.session,
                    len,
                    "discarded plaintext pipelined after STARTTLS (command injection attempt?)"
                );
            }
            Event::Reset => log!(debug, self.session, "rset"),
            Event::Quit => log!(debug, self.session, "quit"),
            other => {
                if other.needs_decision() {
                    log!(warn, self.session, ?other, "event not handled by smtp-std: refused");
                    self.decide(&Reply::NOT_IMPLEMENTED.into());
                }
            }
        }
        self.sync();
    }
}

/// The socket under `stream`.
fn sock(stream: &mut Stream) -> &mut Sock {
    match stream {
        Stream::Plain(s) => s,
        Stream::Tls(s) => &mut s.sock,
    }
}

/// Closes the connection cleanly (TLS close_notify, then FIN).
fn close(stream: &mut Stream) {
    match stream {
        Stream::Plain(s) => {
            let _ = s.0.shutdown(std::net::Shutdown::Write);
        }
        Stream::Tls(s) => {
            s.conn.send_close_notify();
            let _ = s.flush();
            let _ = s.get_ref().0.shutdown(std::net::Shutdown::Write);
        }
    }
}
