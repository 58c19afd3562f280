//! A session's I/O: the greeting, reads bounded by the core's timeouts, writes, STARTTLS and
//! the end of the connection.

use super::*;

impl<H: Handler> Conn<H> {
    /// The TLS handshake of an implicit-TLS listener, the `connect` hook and the greeting.
    pub(super) fn open(&mut self, tcp: Sock, implicit: bool, inherited: Option<Inherited>) -> io::Result<Stream> {
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

    /// When the core's timeout fires for the input awaited now (`None`: never).
    pub(super) fn deadline(&self) -> Option<Instant> {
        let since = self.waiting_since?;
        self.core.timeout().and_then(|t| since.checked_add(t))
    }

    /// Reads with the core's timeout. An idle session sleeps in `read` (shutdown wakes it by
    /// shutting down the socket's reading side: the read returns 0), for
    /// [`Options::park_idle_sessions_after`] when it may park, for the whole timeout otherwise.
    pub(super) fn read(&mut self, stream: &mut Stream, buf: &mut [u8]) -> io::Result<Read_> {
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
        let s = handshake(tcp, tls, self.shared.options.config.timeouts.tls_handshake, &self.shared.shutdown)?;
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
