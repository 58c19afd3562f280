//! One connection: moves bytes between the socket (plain or rustls) and the core, turns the
//! core's timeouts into socket read timeouts and calls the handler. No SMTP logic lives here.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConnection, StreamOwned};
use smtp_proto::server::{Event, HeloKind, Progress};
use smtp_proto::Reply;

use crate::handler::{forward_path_string, reverse_path_string, AuthRequest, Decision, Envelope, Handler, Session};
use crate::limits::{Refusal, Tracker};
use crate::server::{Connections, Options};

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
}

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

/// The session's socket, shared with [`Connections`] (which only ever shuts it down).
struct Sock(Arc<TcpStream>);

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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

/// Serves one accepted connection, session `id`, to its end.
pub(crate) fn serve<H: Handler>(
    tcp: Arc<TcpStream>,
    id: u64,
    peer: SocketAddr,
    implicit: bool,
    handler: H,
    shared: &Shared,
) {
    // Before the first read: a shutdown from now on wakes this session (or it saw the flag).
    let _registered = shared.connections.register(id, &tcp);
    let local = tcp.local_addr().unwrap_or(peer);
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
    let _permit = match proxy {
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
    let mut conn = Conn {
        core: Box::new(smtp_proto::Server::new(shared.options.config)),
        handler,
        session,
        shared,
        out: vec![0u8; 4096],
        in_message: false,
        content_error: None,
        read_timeout: None,
    };
    let result = conn.run(Sock(tcp), implicit);
    if let Err(e) = &result {
        log!(info, conn.session, "connection error: {e}");
    }
    if conn.in_message {
        conn.in_message = false;
        log!(info, conn.session, "message abandoned: connection ended mid-DATA");
        conn.handler.data_abort(&conn.session, None);
    }
    conn.handler.close(&conn.session);
    log!(info, conn.session, "close");
}

struct Conn<'s, H: Handler> {
    core: Box<smtp_proto::Server>,
    handler: H,
    session: Session,
    shared: &'s Shared,
    out: Vec<u8>,
    /// A message was accepted with 354 and has not ended yet.
    in_message: bool,
    /// The handler failed on a piece of content: the end of data is answered 451.
    content_error: Option<io::Error>,
    /// The socket's read timeout as last set (`Some(None)`: none), `None` when unknown: set
    /// again only when it changes (a syscall).
    read_timeout: Option<Option<Duration>>,
}

impl<H: Handler> Conn<'_, H> {
    fn run(&mut self, tcp: Sock, implicit: bool) -> io::Result<()> {
        let options = &self.shared.options;
        tcp.0.set_write_timeout(Some(options.config.timeouts.command.max(Duration::from_secs(1))))?;
        let mut stream = if implicit {
            let Some(tls) = options.tls.clone() else {
                return Err(io::Error::other("implicit TLS without a certificate"));
            };
            let s = handshake(tcp, tls, options.config.timeouts.tls_handshake, &self.shared.shutdown)?;
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
            Decision::Accept => self.core.greet(&options.banner).map_err(io::Error::other)?,
        }

        let mut buf = vec![0u8; options.read_buffer];
        let (mut start, mut end) = (0usize, 0usize);
        loop {
            // Feed everything we have until the core needs more input.
            let closed = loop {
                let r = self.core.handle_input(&buf[start..end]).map_err(io::Error::other)?;
                start += r.consumed;
                match r.progress {
                    Progress::Event(ev) => self.event(ev),
                    Progress::Flush => self.drain(&mut stream)?,
                    Progress::NeedInput => break false,
                    Progress::Closed => break true,
                }
            };
            // The drain rule: every queued reply goes out before we read again.
            self.drain(&mut stream)?;
            if closed {
                close(stream);
                return Ok(());
            }
            if self.core.is_tls_pending() {
                // The 220 went out and whatever followed STARTTLS was discarded by the core.
                (start, end) = (0, 0);
                stream = self.start_tls(stream)?;
                continue;
            }
            if start == end {
                (start, end) = (0, 0);
            } else if end == buf.len() {
                if start == 0 {
                    // Cannot happen with a buffer of at least min_input_buffer(): be safe.
                    return Err(io::Error::other("input buffer full without progress"));
                }
                buf.copy_within(start..end, 0);
                (end, start) = (end - start, 0);
            }
            match self.read(&mut stream, &mut buf[end..])? {
                Some(0) => {
                    log!(info, self.session, "client closed the connection");
                    return Ok(());
                }
                Some(n) => end += n,
                None => {
                    // Timeout or shutdown: the core queued its 421.
                    self.drain(&mut stream)?;
                    close(stream);
                    return Ok(());
                }
            }
        }
    }

    /// Reads with the core's timeout; `None` when it fired or the server shuts down (the core
    /// was told and queued its `421`). An idle session sleeps in `read` for the whole timeout:
    /// shutdown wakes it by shutting down the socket's reading side (the read returns 0).
    fn read(&mut self, stream: &mut Stream, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let timeout = self.core.timeout();
        let start = Instant::now();
        // The whole timeout at first (the same value every time: no syscall to set it again),
        // what is left of it after an early wake-up.
        let mut wait = timeout;
        loop {
            if self.shutting_down() {
                return Ok(None);
            }
            if wait == Some(Duration::ZERO) {
                log!(info, self.session, timeout = ?timeout.unwrap_or_default(), "timeout");
                self.core.handle_timeout();
                return Ok(None);
            }
            if self.read_timeout != Some(wait) {
                stream.tcp().set_read_timeout(wait)?;
                self.read_timeout = Some(wait);
            }
            match stream.read(buf) {
                Ok(0) if self.shutting_down() => return Ok(None),
                Ok(n) => return Ok(Some(n)),
                // E.g. rustls: "peer closed connection without sending TLS close_notify".
                Err(_) if self.shutting_down() => return Ok(None),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
            // Timed out, or woken early (a signal).
            wait = timeout.map(|t| t.saturating_sub(start.elapsed()));
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
        loop {
            let n = self.core.poll_transmit(&mut self.out);
            if n == 0 {
                return stream.flush();
            }
            stream.write_all(&self.out[..n])?;
        }
    }

    fn start_tls(&mut self, stream: Stream) -> io::Result<Stream> {
        let Stream::Plain(tcp) = stream else {
            return Err(io::Error::other("STARTTLS under TLS"));
        };
        let Some(tls) = self.shared.options.tls.clone() else {
            return Err(io::Error::other("STARTTLS without a certificate"));
        };
        let s = handshake(tcp, tls, self.shared.options.config.timeouts.tls_handshake, &self.shared.shutdown)?;
        // The handshake set its own read timeouts.
        self.read_timeout = None;
        self.core.tls_established().map_err(io::Error::other)?;
        log!(info, self.session, version = ?s.conn.protocol_version(), "TLS established (STARTTLS)");
        self.sync();
        Ok(Stream::Tls(Box::new(s)))
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

/// Closes the connection cleanly (TLS close_notify, then FIN).
fn close(stream: Stream) {
    match stream {
        Stream::Plain(s) => {
            let _ = s.0.shutdown(std::net::Shutdown::Write);
        }
        Stream::Tls(mut s) => {
            s.conn.send_close_notify();
            let _ = s.flush();
            let _ = s.get_ref().0.shutdown(std::net::Shutdown::Write);
        }
    }
}
