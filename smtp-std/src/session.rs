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
use crate::server::Options;

/// State shared by the accept loop and the sessions.
pub(crate) struct Shared {
    pub(crate) options: Options,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) active: AtomicUsize,
    pub(crate) next_id: AtomicU64,
}

/// How often a blocked read wakes up to look at the shutdown flag.
pub(crate) const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

type Stream = crate::tls::Stream<ServerConnection>;

/// Runs the TLS handshake on `tcp`, bounded by `timeout`; gives up early on shutdown.
fn handshake(
    mut tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    shutdown: &AtomicBool,
) -> io::Result<StreamOwned<ServerConnection, TcpStream>> {
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let deadline = Instant::now() + timeout;
    tcp.set_write_timeout(Some(timeout.max(Duration::from_secs(1))))?;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"));
        }
        if shutdown.load(Ordering::SeqCst) {
            return Err(io::Error::other("server shutting down during the TLS handshake"));
        }
        tcp.set_read_timeout(Some(left.min(SHUTDOWN_POLL)))?;
        match conn.complete_io(&mut tcp) {
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

/// Serves one accepted connection to its end.
pub(crate) fn serve<H: Handler>(tcp: TcpStream, peer: SocketAddr, implicit: bool, handler: H, shared: &Shared) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let local = tcp.local_addr().unwrap_or(peer);
    // Behind a listed proxy: the PROXY header first, and its client is the session's peer.
    let (peer, local) = match crate::proxy::accept(&tcp, id, peer, local, &shared.options.proxy, &shared.shutdown) {
        Ok(addrs) => addrs,
        Err(e) => {
            tracing::warn!(id, proxy = %peer, "closed without a greeting: {e}");
            return;
        }
    };
    let span = tracing::info_span!("smtp", id, %peer);
    let _enter = span.enter();
    tracing::info!(%local, implicit_tls = implicit, "connect");
    let mut conn = Conn {
        core: Box::new(smtp_proto::Server::new(shared.options.config)),
        handler,
        session: Session::new(id, peer, local, implicit),
        shared,
        out: vec![0u8; 4096],
        in_message: false,
        content_error: None,
        read_timeout: None,
    };
    let result = conn.run(tcp, implicit);
    if let Err(e) = &result {
        tracing::info!("connection error: {e}");
    }
    if conn.in_message {
        conn.in_message = false;
        tracing::info!("message abandoned: connection ended mid-DATA");
        conn.handler.data_abort(&conn.session, None);
    }
    conn.handler.close(&conn.session);
    tracing::info!("close");
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
    /// The socket's read timeout as last set: set again only when it changes (a syscall).
    read_timeout: Option<Duration>,
}

impl<H: Handler> Conn<'_, H> {
    fn run(&mut self, tcp: TcpStream, implicit: bool) -> io::Result<()> {
        let options = &self.shared.options;
        tcp.set_write_timeout(Some(options.config.timeouts.command.max(Duration::from_secs(1))))?;
        let mut stream = if implicit {
            let Some(tls) = options.tls.clone() else {
                return Err(io::Error::other("implicit TLS without a certificate"));
            };
            let s = handshake(tcp, tls, options.config.timeouts.tls_handshake, &self.shared.shutdown)?;
            self.core.tls_established().map_err(io::Error::other)?;
            tracing::info!(version = ?s.conn.protocol_version(), "TLS established (implicit)");
            Stream::Tls(Box::new(s))
        } else {
            Stream::Plain(tcp)
        };
        self.session.tls = self.core.is_tls();

        match self.handler.connect(&self.session) {
            Decision::Reply(r) if !r.as_reply().is_positive() => {
                tracing::info!(code = r.code, "connection refused by handler");
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
                    tracing::info!("client closed the connection");
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
    /// was told and queued its `421`).
    fn read(&mut self, stream: &mut Stream, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let timeout = self.core.timeout();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.shared.shutdown.load(Ordering::SeqCst) {
                tracing::info!("server shutting down: closing the session");
                self.core.shutdown();
                return Ok(None);
            }
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        tracing::info!(timeout = ?timeout.unwrap_or_default(), "timeout");
                        self.core.handle_timeout();
                        return Ok(None);
                    }
                    left.min(SHUTDOWN_POLL)
                }
                None => SHUTDOWN_POLL,
            };
            if self.read_timeout != Some(wait) {
                stream.tcp().set_read_timeout(Some(wait))?;
                self.read_timeout = Some(wait);
            }
            match stream.read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
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
        tracing::info!(version = ?s.conn.protocol_version(), "TLS established (STARTTLS)");
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
                tracing::error!(?decision, "handler reply not usable here ({e}): answering 451");
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
                tracing::info!(host, ?kind, ok, "helo");
                if ok {
                    self.session.helo = Some(host.to_owned());
                    self.session.esmtp = kind != HeloKind::Helo;
                }
            }
            Event::Auth { .. } | Event::AuthResponse => {
                let creds = self.core.credentials();
                let req = creds.as_ref().and_then(AuthRequest::from_credentials);
                match req {
                    Some(req) => {
                        let d = self.handler.auth(s, &req);
                        let (mechanism, user) = (req.mechanism, req.identity.to_owned());
                        let ok = self.decide(&d);
                        if ok {
                            tracing::info!(mechanism, user, "auth ok");
                            self.session.user = Some(user);
                        } else {
                            tracing::warn!(mechanism, user, "auth failed");
                        }
                    }
                    None => {
                        // A mechanism the application would have to drive: none is offered.
                        tracing::warn!("auth with an unsupported mechanism");
                        self.decide(&Reply::AUTH_UNKNOWN_MECHANISM.into());
                    }
                }
            }
            Event::AuthCancelled => tracing::info!("auth cancelled by the client"),
            Event::Mail { from, params } => {
                let d = self.handler.mail_from(s, &from, &params);
                let addr = reverse_path_string(&from);
                let ok = self.decide(&d);
                tracing::info!(from = %addr, size = ?params.size, ok, "mail");
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
                tracing::info!(to = %addr, ok, "rcpt");
                if ok {
                    self.session.envelope.rcpt_to.push(addr);
                }
            }
            Event::DataStart { chunked } => {
                let d = self.handler.data_start(s);
                let ok = self.decide(&d);
                tracing::debug!(chunked, ok, "data");
                if ok {
                    self.in_message = true;
                    self.content_error = None;
                }
            }
            Event::Data(chunk) => {
                if self.in_message && self.content_error.is_none() {
                    if let Err(e) = self.handler.data_chunk(s, chunk) {
                        tracing::error!("storing the message failed: {e}");
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
                    tracing::debug!(size, ok, "end of data");
                    // LMTP: one decision per recipient; the same answer for each.
                    let mut left = self.session.envelope.rcpt_to.len();
                    while self.core.is_pending() && left > 0 {
                        left -= 1;
                        self.decide(&d);
                    }
                }
            }
            Event::DataAborted { error } => {
                tracing::info!(?error, "message refused by the core");
                if self.in_message {
                    self.in_message = false;
                    self.content_error = None;
                    self.handler.data_abort(s, Some(error));
                }
            }
            Event::StartTls => {
                if self.shared.options.tls.is_some() {
                    self.decide(&Decision::Accept);
                    tracing::info!("starttls");
                } else {
                    self.decide(&Reply::TLS_UNAVAILABLE.into());
                }
            }
            Event::PlaintextDiscarded { len } => {
                tracing::warn!(len, "discarded plaintext pipelined after STARTTLS (command injection attempt?)");
            }
            Event::Reset => tracing::debug!("rset"),
            Event::Quit => tracing::debug!("quit"),
            other => {
                if other.needs_decision() {
                    tracing::warn!(?other, "event not handled by smtp-std: refused");
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
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        Stream::Tls(mut s) => {
            s.conn.send_close_notify();
            let _ = s.flush();
            let _ = s.get_ref().shutdown(std::net::Shutdown::Write);
        }
    }
}
