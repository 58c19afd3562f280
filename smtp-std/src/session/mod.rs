//! One connection: moves bytes between the socket (plain or rustls) and the core, turns the
//! core's timeouts into socket read timeouts and calls the handler. No SMTP logic lives here.
//!
//! Besides the core's idle timeout a wait for input has two deadlines (`conn.rs`,
//! [`Conn::limit`]), since an idle timeout alone lets a client drip a byte at a time forever:
//! a command line must be complete within the command timeout of its first byte, and message
//! data must arrive at [`Options::min_data_rate`](crate::Options::min_data_rate) on average
//! once the data timeout has passed since the message began. A session parks with the
//! earliest of the three as its deadline. No clock is read for them: a line or a message is
//! stamped with the start of the wait that follows the read that began it (the instant the
//! idle timeout already takes), and the input is measured as the core consumes it.
//!
//! This file holds the session's life: the accepted socket, [`serve`] up to the greeting, and
//! the read/park loop ([`Live`]); `conn.rs` its I/O (greeting, reads with the core's timeouts,
//! writes, STARTTLS, the end); `dispatch.rs` what each event of the core asks of the handler.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConnection, StreamOwned};
use smtp_proto::server::{Event, Heap, HeloKind, Progress};
use smtp_proto::Reply;

use crate::handler::{forward_path_string, reverse_path_string, AuthRequest, Decision, Envelope, Handler, Session};
use crate::idle::{Parked, Unparked};
use crate::limits::{Permit, Refusal};
use crate::shared::{refuse, Accepted, ActiveGuard, Inherited, Registered, Shared, SHUTDOWN_POLL};

/// Size of a session's output queue (the core's, on the heap): replies to a pipelined batch
/// of about 25 commands leave in one write. The core needs
/// [`MIN_OUTPUT_BUFFER`](smtp_proto::server::MIN_OUTPUT_BUFFER) (1,200) at least.
const OUTPUT_QUEUE: usize = 2048;

/// The read buffer on a session thread's stack: commands and small messages never need
/// another ([`Live::serve`]).
const STACK_READ: usize = 8192;

/// A log event of a session (a [`Session`] or anything with its `id` and `peer`): both ride on
/// every line. No span: entering one on each session thread registers the thread with the
/// subscriber, and tracing-subscriber's registry holds at most 4,096 threads at once.
macro_rules! log {
    ($level:ident, $s:expr, $($rest:tt)+) => {
        tracing::$level!(id = $s.id, peer = %$s.peer, $($rest)+)
    };
}

mod conn;
mod dispatch;

use conn::close;

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
    // The SMTP configuration current now is this session's to its end.
    let config = shared.config.get();
    // Before the first read: a shutdown from now on wakes this session (or it saw the flag).
    let registered = shared.connections.register(id, &tcp);
    let local = match accepted.local {
        Some(local) => local,
        None => tcp.local_addr().unwrap_or(peer),
    };
    let proxy = shared.options.proxy.trusts(peer.ip()).then_some(peer);
    // Behind a listed proxy: the PROXY header first, and its client is the session's peer.
    let (peer, local) =
        match crate::proxy::accept(&tcp, id, peer, local, &shared.options.proxy, &shared.shutdown, SHUTDOWN_POLL) {
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
                handler.limited(peer, crate::Limited::Client(r));
                if !implicit {
                    refuse(&tcp, &config, r.reply());
                }
                return;
            }
        },
        None => None,
    };
    let session = Session::new(id, peer, local, implicit);
    log!(info, session, %local, implicit_tls = implicit, "connect");
    let core = match smtp_proto::Server::with_buffers(config, Heap::new(OUTPUT_QUEUE)) {
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
        consumed: 0,
        line: None,
        message: None,
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
            ended: false,
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
    /// What woke it may be more than input (a FIN, a reset; [`Parked::resume`]): it does not
    /// take a short read for an empty socket.
    ended: bool,
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

    fn resume(mut self: Box<Self>, ended: bool) {
        self.ended = ended;
        self.run()
    }
}

impl<H: Handler> Live<H> {
    /// Serves until the session ends, or parks it when its client is silent.
    fn run(mut self: Box<Self>) {
        loop {
            match self.serve() {
                Ok(Stop::Idle) => {
                    let deadline = self.conn.deadline();
                    let idle = self.conn.shared.idle.clone();
                    let Some(idle) = idle else { unreachable!("Conn::park without a poller") };
                    match idle.park(self, deadline) {
                        Ok(()) => return,
                        Err(Unparked::Input(mut me)) => {
                            me.ended = true;
                            self = me;
                        }
                        // Cannot park (the server stops): this thread goes on waiting.
                        Err(Unparked::Refused(mut me)) => {
                            me.conn.park = false;
                            self = me;
                        }
                    }
                    continue;
                }
                Ok(Stop::Done) => {}
                Err(e) => log!(info, self.conn.session, "connection error: {e}"),
            }
            break;
        }
        if let Some(idle) = self.conn.shared.idle.clone() {
            idle.forget(&mut *self);
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
        // (At least what this session's configuration needs, should it have been replaced
        // since the server started.)
        let max = conn.shared.options.read_buffer.max(conn.core.config().min_input_buffer() + 1024);
        let mut stack = [0u8; STACK_READ];
        // Bytes carried over a park (a partial line) go back to the stack if they fit.
        if !self.buf.is_empty() && self.end - self.start <= STACK_READ / 2 {
            let n = self.end - self.start;
            stack[..n].copy_from_slice(&self.buf[self.start..self.end]);
            (self.start, self.end) = (0, n);
            self.buf = Vec::new();
        }
        // The last read was short: the socket was empty then ([`Conn::read`]).
        let mut drained = false;
        loop {
            let buf: &mut [u8] = if self.buf.is_empty() { &mut stack } else { &mut self.buf };
            // Feed everything we have until the core needs more input.
            let closed = loop {
                let r = conn.core.handle_input(&buf[self.start..self.end]).map_err(io::Error::other)?;
                self.start += r.consumed;
                conn.consumed += r.consumed as u64;
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
            // What is left unconsumed is the start of a line (the core consumes lines whole and
            // content as it comes).
            let partial = self.start < self.end;
            match conn.read(&mut self.stream, &mut buf[self.end..], partial, drained && !self.ended)? {
                Read_::Bytes(0) => {
                    log!(info, conn.session, "client closed the connection");
                    return Ok(Stop::Done);
                }
                Read_::Bytes(n) => {
                    self.end += n;
                    drained = n < free;
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

/// What ends a wait for input ([`Conn::limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// The core's timeout for the state, from the start of the wait.
    Idle,
    /// The command timeout from the first byte of an unfinished command line.
    Line,
    /// Message data under the least average rate, once the data timeout has passed since the
    /// message began.
    Rate,
}

/// What [`Conn::read`] got.
enum Read_ {
    /// Bytes (0: the client closed).
    Bytes(usize),
    /// Nothing for a while: park the session (only when it can).
    Idle,
    /// A timeout or deadline passed, or the server shuts down: the core was told and queued
    /// its `421`.
    Stop,
}

struct Conn<H: Handler> {
    core: Box<smtp_proto::Server<Heap>>,
    handler: H,
    session: Session,
    shared: Arc<Shared>,
    /// A message was accepted with 354 and has not ended yet.
    in_message: bool,
    /// The handler failed on a piece of content: the end of data is answered 451 (452 when
    /// storage ran out).
    content_error: Option<io::Error>,
    /// The socket's read timeout as last set (`Some(None)`: none), `None` when unknown: set
    /// again only when it changes (a syscall).
    read_timeout: Option<Option<Duration>>,
    /// Since when the session waits for input (the core's timeout runs from there; a parked
    /// session keeps it).
    waiting_since: Option<Instant>,
    /// Input the core consumed, in all.
    consumed: u64,
    /// The command line being received, unfinished: when it began (the start of the wait
    /// after the read that brought its first byte) and `consumed` then. It is the same line
    /// while the core consumes nothing more (or discards the rest of an over-long line).
    line: Option<(Instant, u64)>,
    /// The message being received ([`smtp_proto::Server::is_receiving_message`]): when it
    /// began (the start of the first wait for its data) and `consumed` then.
    message: Option<(Instant, u64)>,
    /// Whether the session may park when idle.
    park: bool,
}
