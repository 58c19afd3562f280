//! A session's I/O: the greeting, reads bounded by the core's timeouts, writes, STARTTLS and
//! the end of the connection.

use super::*;

impl<H: Handler> Conn<H> {
    /// The TLS handshake of an implicit-TLS listener, the `connect` hook and the greeting.
    pub(super) fn open(&mut self, tcp: Sock, implicit: bool, inherited: Option<Inherited>) -> io::Result<Stream> {
        self.park = self.shared.idle.is_some() && self.shared.options.park_after.is_some();
        let options = &self.shared.options;
        let timeouts = self.core.config().timeouts;
        let write = timeouts.command.max(Duration::from_secs(1));
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
            let s = handshake(tcp, tls, timeouts.tls_handshake, &self.shared.shutdown)?;
            // The handshake set its own read timeouts.
            self.read_timeout = None;
            self.core.tls_established().map_err(io::Error::other)?;
            log!(info, self.session, version = tls_version(&s.conn), "TLS established (implicit)");
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
    pub(super) fn finish(&mut self) {
        if self.in_message {
            self.in_message = false;
            log!(info, self.session, "message abandoned: connection ended mid-DATA");
            self.handler.data_abort(&self.session, None);
        }
        self.handler.close(&self.session);
        log!(info, self.session, "close");
    }

    /// When the wait for input now ends (`None`: never): the earliest of the core's timeout
    /// and the deadlines ([`Conn::limit`]). A parked session's poller wakes it then.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.limit().map(|(at, _)| at)
    }

    /// Stamps the command line and the message being received, at the start of the wait at
    /// `since` (`partial`: the input buffer holds the start of a line). A line is new when the
    /// core consumed input since the last one began, unless it is discarding the rest of an
    /// over-long line (which then is the same line, or one that began in the same read as the
    /// end of the last: that one keeps the earlier stamp, the stricter).
    fn stamp(&mut self, since: Instant, partial: bool) {
        let discarding = self.core.is_discarding_line();
        self.line = match self.line {
            _ if !partial && !discarding => None,
            Some((at, mark)) if discarding || mark == self.consumed => Some((at, mark)),
            _ => Some((since, self.consumed)),
        };
        if !self.core.is_receiving_message() {
            self.message = None;
        } else if self.message.is_none() {
            self.message = Some((since, self.consumed));
        }
    }

    /// When the wait for input now ends, and why: the core's timeout from `waiting_since`, a
    /// command line's deadline (the command timeout from its first byte), or the message data
    /// rate's (the time by which the octets received so far fall under
    /// [`Options::min_data_rate`](crate::Options::min_data_rate), never before the data
    /// timeout has passed since the message began). Arithmetic only: no clock is read.
    pub(super) fn limit(&self) -> Option<(Instant, Limit)> {
        let since = self.waiting_since?;
        let timeout = self.core.timeout()?;
        let timeouts = &self.core.config().timeouts;
        let mut limit = since.checked_add(timeout).map(|at| (at, Limit::Idle));
        let mut earlier = |at: Option<Instant>, why: Limit| {
            if let Some(at) = at {
                if limit.is_none_or(|(l, _)| at < l) {
                    limit = Some((at, why));
                }
            }
        };
        if let Some((began, _)) = self.line {
            earlier(began.checked_add(timeouts.command), Limit::Line);
        }
        let rate = self.shared.options.min_data_rate;
        if let (Some((began, mark)), true) = (self.message, rate > 0) {
            let octets = self.consumed - mark;
            // The time those octets buy at the least rate: octets / rate seconds.
            let nanos = u128::from(octets % rate) * 1_000_000_000 / u128::from(rate);
            let bought = Duration::new(octets / rate, nanos as u32);
            earlier(began.checked_add(bought.max(timeouts.data)), Limit::Rate);
        }
        limit
    }

    /// A limit passed: logs which, and tells the core (`421 4.4.2`, closed).
    fn expired(&mut self, why: Limit) {
        let timeouts = self.core.config().timeouts;
        match why {
            Limit::Idle => {
                log!(info, self.session, timeout = ?self.core.timeout().unwrap_or_default(), "timeout");
            }
            Limit::Line => {
                log!(
                    info,
                    self.session,
                    timeout = ?timeouts.command,
                    "timeout: command line deadline (not complete within the timeout of its first byte)"
                );
            }
            Limit::Rate => {
                let (began, mark) = self.message.unwrap_or((Instant::now(), self.consumed));
                log!(
                    info,
                    self.session,
                    octets = self.consumed - mark,
                    elapsed = ?began.elapsed(),
                    min_data_rate = self.shared.options.min_data_rate,
                    "timeout: message data deadline (slower than min_data_rate on average)"
                );
            }
        }
        self.core.handle_timeout();
    }

    /// Reads with the core's timeout and the deadlines ([`Conn::limit`]; `partial`: the
    /// input buffer holds the start of a line). An idle session sleeps in `read` (shutdown
    /// wakes it by shutting down the socket's reading side: the read returns 0), for
    /// [`Options::park_idle_sessions_after`] when it may park, up to the limit otherwise.
    /// `drained`: the session's last read of plain TCP was short, after an event that said
    /// "input" alone, so the socket had nothing more then, not even its end; a session that
    /// parks at once then parks without reading (input or a FIN that comes later raises an
    /// event of its own).
    pub(super) fn read(
        &mut self,
        stream: &mut Stream,
        buf: &mut [u8],
        partial: bool,
        drained: bool,
    ) -> io::Result<Read_> {
        let timeout = self.core.timeout();
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        self.stamp(since, partial);
        let limit = self.limit();
        // Only the core's timeout applies now (no deadline comes earlier).
        let idle = matches!(limit, Some((_, Limit::Idle)));
        let park_after = if self.park { self.shared.options.park_after } else { None };
        // Parking at once: a read that finds nothing returns (and the session parks).
        let nowait = park_after == Some(Duration::ZERO);
        let mut first = true;
        loop {
            if self.shutting_down() {
                self.waiting_since = None;
                return Ok(Read_::Stop);
            }
            let left = limit.map(|(at, _)| at.saturating_duration_since(Instant::now()));
            if let (Some(Duration::ZERO), Some((_, why))) = (left, limit) {
                self.expired(why);
                self.waiting_since = None;
                return Ok(Read_::Stop);
            }
            // The same value every time while it can be (no syscall to set it again): the park
            // delay, or the whole timeout at first; what is left of the timeout near its end,
            // after an early wake-up, or when a deadline comes first.
            let wait = match (park_after, left) {
                (Some(p), Some(l)) if l <= p => Some(l),
                (Some(p), _) => Some(p),
                (None, _) if first && idle => timeout,
                (None, l) => l,
            };
            let read = if nowait && first && drained && matches!(stream, Stream::Plain(_)) {
                Err(io::ErrorKind::WouldBlock.into())
            } else if nowait {
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
            first = false;
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
                        let left = limit.map(|(at, _)| at.saturating_duration_since(Instant::now()));
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
    pub(super) fn shutting_down(&mut self) -> bool {
        if !self.shared.shutdown.load(Ordering::SeqCst) {
            return false;
        }
        if !self.core.is_closed() {
            log!(info, self.session, "server shutting down: closing the session");
            self.core.shutdown();
        }
        true
    }

    pub(super) fn drain(&mut self, stream: &mut Stream) -> io::Result<()> {
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
    pub(super) fn start_tls(&mut self, stream: &mut Stream) -> io::Result<()> {
        let Stream::Plain(tcp) = stream else {
            return Err(io::Error::other("STARTTLS under TLS"));
        };
        let tcp = Sock(tcp.0.clone(), false);
        let Some(tls) = self.shared.options.tls.clone() else {
            return Err(io::Error::other("STARTTLS without a certificate"));
        };
        let s = handshake(tcp, tls, self.core.config().timeouts.tls_handshake, &self.shared.shutdown)?;
        // The handshake set its own read timeouts.
        self.read_timeout = None;
        self.core.tls_established().map_err(io::Error::other)?;
        log!(info, self.session, version = tls_version(&s.conn), "TLS established (STARTTLS)");
        self.sync();
        *stream = Stream::Tls(Box::new(s));
        Ok(())
    }
}

/// The TLS version of a connection for the log (`TLSv1_3`), when known.
fn tls_version(conn: &rustls::ServerConnection) -> Option<tracing::field::DisplayValue<&'static str>> {
    conn.protocol_version().and_then(|v| v.as_str()).map(tracing::field::display)
}

/// The socket under `stream`.
pub(super) fn sock(stream: &mut Stream) -> &mut Sock {
    match stream {
        Stream::Plain(s) => s,
        Stream::Tls(s) => &mut s.sock,
    }
}

/// Closes the connection cleanly (TLS close_notify, then FIN).
pub(super) fn close(stream: &mut Stream) {
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
