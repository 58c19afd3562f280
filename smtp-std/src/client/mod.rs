//! The blocking SMTP client: send a message to a host (a smarthost or, later, a recipient
//! domain's MX) over `std::net`, with rustls for STARTTLS and implicit TLS.
//!
//! Like the server side, this module holds **no SMTP logic**: the sans-IO core
//! [`smtp_proto::client::Client`] writes the commands (PIPELINING when offered, SIZE checked
//! before MAIL, DSN parameters, dot-stuffing with CR/LF normalised, the STARTTLS
//! response-injection check) and parses the replies. This module moves bytes, turns the core's
//! per-command timeouts into socket timeouts, does the TLS handshakes and applies the policy
//! the core leaves to its caller: whether TLS is required, whether AUTH may go in clear text.
//! The same session driver carries [`crate::lmtp`] (LMTP over TCP or a Unix socket).
//!
//! # Policy
//! - [`TlsMode::Required`] (the default): STARTTLS must be offered and succeed, with the
//!   certificate verified (Mozilla's roots from `webpki-roots`, or your own
//!   [`rustls::ClientConfig`]); nothing but EHLO and STARTTLS is sent before. The
//!   capabilities seen before TLS are discarded (RFC 3207 §4.2); bytes after the `220` to
//!   STARTTLS end the session ([`SendError::ResponseInjection`]).
//! - AUTH (PLAIN, else LOGIN) only when requested; [`SendError::AuthNotOffered`] if the server
//!   offers neither, and never over a connection without TLS unless
//!   [`SendOptions::allow_cleartext_auth`].
//! - Addresses and DSN values with control characters are refused before anything is
//!   written ([`SendError::Invalid`]).
//! - The message is read from a [`Read`] and streamed through a fixed chunk buffer.
//!
//! Per-recipient results come back in a [`Delivery`]: some recipients refused while others
//! were accepted is a success with [`Delivery::refused`] not empty. When every recipient is
//! refused the error is [`SendError::NoValidRecipients`], with each reply.
//!
//! # Example
//! ```
//! use smtp_std::client::{self, Envelope, SendOptions, TlsMode};
//! # use smtp_std::{Options, Server, Sink};
//! # let mut server = Server::new(Options::new("mx.example.org"), Sink);
//! # let addr = server.listen("127.0.0.1:0")?;
//! # let running = server.spawn();
//! # let smarthost = addr.to_string();
//!
//! let mut options = SendOptions::new(&smarthost, "client.example.org");
//! options.tls = TlsMode::Off; // a test server without TLS; the default is TlsMode::Required
//! let envelope = Envelope::new("me@example.org", ["you@example.net", "them@example.com"]);
//! let message = &b"Subject: hello\r\n\r\nHi there.\r\n"[..];
//!
//! let delivery = client::send(&options, &envelope, message)?;
//! assert!(delivery.all_accepted());
//! for r in &delivery.recipients {
//!     println!("{r}"); // you@example.net: accepted 250 2.1.5 Recipient OK
//! }
//! # running.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use smtp_proto::client::{self as core, ApiError, Client as Core, Command, Config, ErrorKind, Event, Progress, Step};
use smtp_proto::ehlo::{AuthMechanisms, Capabilities};
use smtp_proto::sasl::Credentials;

mod conn;
mod envelope;
mod message;
mod outcome;
mod tls_config;

pub(crate) use conn::{connect_tcp, connect_tcp_from, Conn};
use conn::{handshake, is_timeout, Stream};
pub use envelope::*;
pub use message::*;
#[allow(unused_imports)]
use message::{header_block_end, is_field, memchr_lf_pairs};
pub use outcome::*;
use outcome::{command_name, from_core};
use tls_config::host_of;
pub use tls_config::*;
#[allow(unused_imports)]
use tls_config::{builder, provider};

/// Bytes of message content read from the caller's [`Read`] at a time.
pub const CHUNK: usize = 64 * 1024;
/// The largest header block [`add_missing_headers`] scans.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Most characters of a server reply kept in a [`Reply`].
pub(super) const MAX_REPLY_TEXT: usize = 1000;

/// An SMTP session: connected, greeted, TLS and AUTH done as the options say; ready to
/// [`send`](Self::send) one message after another. Dropping it sends `QUIT` (best effort).
pub struct SmtpClient {
    pub(crate) core: Box<Core>,
    stream: Conn,
    tls_config: Option<Arc<ClientConfig>>,
    tls_name: String,
    handshake_timeout: Duration,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    pub(crate) step: Step,
    read_timeout: Option<Duration>,
    /// The TCP peer (`0.0.0.0:0` over a Unix socket: only [`crate::lmtp`] makes those and it
    /// does not hand them out).
    peer: SocketAddr,
}

impl fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpClient").field("peer", &self.peer).field("core", &self.core).finish_non_exhaustive()
    }
}

/// What an event handler in [`SmtpClient::run`] says.
pub(crate) enum Flow<T> {
    Continue,
    Done(T),
}

impl SmtpClient {
    /// Connects to [`SendOptions::server`] and runs the session up to the point where a
    /// message can be sent: greeting, EHLO, STARTTLS (per [`SendOptions::tls`]), EHLO again,
    /// AUTH (when [`SendOptions::auth`] is set).
    pub fn connect(options: &SendOptions) -> Result<Self, SendError> {
        let tcp = connect_tcp_from(&options.server, options.connect_timeout, options.bind)?;
        let io_err = |source| SendError::Io { step: Step::Greeting, source };
        let peer = tcp.peer_addr().map_err(io_err)?;
        tcp.set_nodelay(true).map_err(io_err)?;
        // Writes are bounded by the content timeout (the longest a write may stall).
        tcp.set_write_timeout(Some(options.timeouts.data_block.max(Duration::from_secs(1)))).map_err(io_err)?;

        let mut config = Config::new(&options.ehlo);
        config.pipelining = options.pipelining;
        config.timeouts = options.timeouts;
        let mut client = SmtpClient::over(Conn::Net(Stream::Plain(tcp)), peer, config);
        client.tls_config = match options.tls {
            TlsMode::Off => None,
            _ => Some(options.tls_config.clone().unwrap_or_else(default_tls_config)),
        };
        client.tls_name = options.tls_server_name.clone().unwrap_or_else(|| host_of(&options.server).to_owned());
        if options.tls == TlsMode::Implicit {
            client.start_tls()?;
        }
        client.greet()?;
        let starttls = match options.tls {
            TlsMode::Required => {
                if !client.core.capabilities().starttls {
                    return Err(SendError::StartTlsNotOffered);
                }
                true
            }
            TlsMode::Opportunistic => client.core.capabilities().starttls,
            TlsMode::Off | TlsMode::Implicit => false,
        };
        if starttls {
            client.core.starttls().map_err(SendError::Request)?;
            client.step = Step::StartTls;
            let refused = client.run(|_, step, ev| {
                Ok(match ev {
                    // The handshake is done in `run`; then EHLO again.
                    Event::Capabilities { .. } => Flow::Done(None),
                    Event::Failed(e) => Flow::Done(Some(e)),
                    Event::Reply { command: Command::Ehlo, .. } => {
                        *step = Step::Helo;
                        Flow::Continue
                    }
                    _ => Flow::Continue,
                })
            })?;
            if let Some(e) = refused {
                let err = from_core(e, |_| "STARTTLS".into());
                if options.tls == TlsMode::Required {
                    return Err(err);
                }
                tracing::info!("STARTTLS refused, going on without TLS: {err}");
            }
        }
        if let Some(auth) = &options.auth {
            client.authenticate(auth, options.allow_cleartext_auth)?;
        }
        Ok(client)
    }

    /// A session over `conn`, before the greeting, without TLS.
    pub(crate) fn over(conn: Conn, peer: SocketAddr, config: Config) -> Self {
        let buffer = config.reply_limits.max_reply_len().max(4096);
        SmtpClient {
            core: Box::new(Core::new(config)),
            stream: conn,
            tls_config: None,
            tls_name: String::new(),
            handshake_timeout: config.timeouts.tls_handshake,
            buf: vec![0; buffer],
            start: 0,
            end: 0,
            out: vec![0; core::OUTPUT_BUFFER],
            step: Step::Greeting,
            read_timeout: None,
            peer,
        }
    }

    /// Waits for the greeting and the reply to EHLO (LHLO with an LMTP core).
    pub(crate) fn greet(&mut self) -> Result<(), SendError> {
        self.step = Step::Greeting;
        let hello = if self.core.config().lmtp { Step::Lhlo } else { Step::Ehlo };
        self.run(|_, step, ev| {
            Ok(match ev {
                Event::Greeting(_) => {
                    *step = hello;
                    Flow::Continue
                }
                Event::Capabilities { .. } => Flow::Done(()),
                _ => Flow::Continue,
            })
        })
    }

    fn authenticate(&mut self, auth: &Auth, allow_cleartext: bool) -> Result<(), SendError> {
        if !self.core.is_tls() && !allow_cleartext {
            return Err(SendError::CleartextAuth);
        }
        let offered = self.core.capabilities().auth;
        let (name, credentials) = if offered.contains(AuthMechanisms::PLAIN) {
            ("AUTH PLAIN", Credentials::Plain { authzid: "", authcid: &auth.user, password: &auth.password })
        } else if offered.contains(AuthMechanisms::LOGIN) {
            ("AUTH LOGIN", Credentials::Login { username: &auth.user, password: &auth.password })
        } else {
            let names: Vec<&str> =
                AuthMechanisms::ALL.iter().filter(|(bit, _)| offered.contains(*bit)).map(|(_, n)| *n).collect();
            return Err(SendError::AuthNotOffered(names.join(" ")));
        };
        self.core.auth(&credentials).map_err(|e| match e {
            ApiError::ForbiddenCharacter(_) => SendError::Invalid("forbidden character in the AUTH credentials".into()),
            e => SendError::Request(e),
        })?;
        self.step = Step::Auth;
        let failed = self.run(|_, _, ev| {
            Ok(match ev {
                Event::Authenticated(_) => Flow::Done(None),
                Event::Failed(e) => Flow::Done(Some(e)),
                _ => Flow::Continue,
            })
        })?;
        match failed {
            None => Ok(()),
            Some(e) => Err(from_core(e, |_| name.into())),
        }
    }

    /// What the server offers (after TLS: what it offers under TLS).
    pub fn capabilities(&self) -> &Capabilities {
        self.core.capabilities()
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.core.is_tls()
    }

    /// Whether AUTH succeeded.
    pub fn is_authenticated(&self) -> bool {
        self.core.is_authenticated()
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one message: the envelope, then the content read from `message` in
    /// [`CHUNK`]-sized pieces (dot-stuffed, bare CR/LF turned into CRLF, a missing final CRLF
    /// added). Some recipients refused is still `Ok`; see [`Delivery::refused`].
    pub fn send(&mut self, envelope: &Envelope, mut message: impl Read) -> Result<Delivery, SendError> {
        envelope.validate()?;
        let to: Vec<core::Recipient<'_>> = envelope
            .to
            .iter()
            .map(|r| core::Recipient { address: &r.address, notify: r.notify, orcpt: r.orcpt.as_deref() })
            .collect();
        let mut env = core::Envelope::new(&envelope.from, &to);
        env.size = envelope.size;
        env.ret = envelope.ret;
        env.envid = envelope.envid.as_deref();
        env.eight_bit = envelope.eight_bit;
        env.requiretls = envelope.requiretls;
        self.core.send_mail(&env).map_err(|e| match e {
            ApiError::ForbiddenCharacter(a) => SendError::Invalid(format!("forbidden character in {a:?}")),
            e => SendError::Request(e),
        })?;

        let n = envelope.to.len();
        let mut replies: Vec<Option<Reply>> = vec![None; n];
        let mut mail: Option<Reply> = None;
        let mut data: Option<Reply> = None;
        self.step = Step::Mail;
        let failed = self.run(|_, step, ev| {
            Ok(match ev {
                Event::Reply { command: Command::Mail, reply, .. } => {
                    mail = Some(Reply::from_parsed(&reply));
                    *step = Step::Rcpt;
                    Flow::Continue
                }
                Event::Reply { command: Command::Rcpt, recipient: Some(i), reply } => {
                    if let Some(slot) = replies.get_mut(i) {
                        *slot = Some(Reply::from_parsed(&reply));
                    }
                    if i + 1 == n {
                        *step = Step::Data;
                    }
                    Flow::Continue
                }
                Event::Reply { command: Command::Data, reply, .. } => {
                    data = Some(Reply::from_parsed(&reply));
                    Flow::Continue
                }
                Event::ReadyForData => Flow::Done(None),
                Event::Failed(e) => Flow::Done(Some(e)),
                _ => Flow::Continue,
            })
        })?;
        let results = || -> Vec<RecipientResult> {
            envelope
                .to
                .iter()
                .zip(&replies)
                .map(|(r, reply)| RecipientResult { address: r.address.clone(), reply: reply.clone() })
                .collect()
        };
        if let Some(e) = failed {
            let mail_refused = mail.as_ref().filter(|r| r.code / 100 != 2);
            return Err(match (e.step, e.kind, mail_refused) {
                (_, _, Some(r)) => {
                    SendError::Refused { command: format!("MAIL FROM:<{}>", envelope.from), reply: r.clone() }
                }
                (_, ErrorKind::NoValidRecipients, None) => SendError::NoValidRecipients(results()),
                (Step::Data, _, None) => match data {
                    Some(reply) => SendError::Refused { command: "DATA".into(), reply },
                    None => from_core(e, command_name),
                },
                _ => from_core(e, command_name),
            });
        }

        self.step = Step::Body;
        self.push_body(&mut message)?;
        self.step = Step::DataEnd;
        let end = self.run(|_, _, ev| {
            Ok(match ev {
                Event::Delivered { reply, .. } => Flow::Done(Ok(Reply::from_parsed(&reply))),
                Event::Failed(e) => Flow::Done(Err(e)),
                _ => Flow::Continue,
            })
        })?;
        match end {
            Ok(reply) => Ok(Delivery { reply, recipients: results() }),
            Err(e) => Err(from_core(e, command_name)),
        }
    }

    /// Streams the content to the core and the socket.
    pub(crate) fn push_body(&mut self, message: &mut dyn Read) -> Result<(), SendError> {
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let n = match message.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.abort(SendError::Input(e))),
            };
            let mut rest = &chunk[..n];
            while !rest.is_empty() {
                let k = match self.core.send_body(rest) {
                    Ok(k) => k,
                    Err(e) => return Err(SendError::Request(e)),
                };
                rest = &rest[k..];
                if k == 0 && self.core.pending_output() == 0 {
                    // BDAT: wait for the reply to the chunk in flight.
                    self.wait_chunk_reply()?;
                }
                self.drain()?;
            }
        }
        loop {
            match self.core.finish_body() {
                Ok(()) => break,
                Err(ApiError::OutputFull) => self.drain()?,
                Err(ApiError::NotReady) if !self.core.is_sending_body() && !self.core.is_closed() => {
                    self.wait_chunk_reply()?;
                }
                Err(e) => return Err(SendError::Request(e)),
            }
        }
        self.drain()
    }

    fn wait_chunk_reply(&mut self) -> Result<(), SendError> {
        let failed = self.run(|core, _, ev| {
            Ok(match ev {
                Event::Reply { command: Command::Bdat, .. } if core.is_sending_body() => Flow::Done(None),
                Event::Failed(e) => Flow::Done(Some(e)),
                _ => Flow::Continue,
            })
        })?;
        match failed {
            None => Ok(()),
            Some(e) => Err(from_core(e, command_name)),
        }
    }

    /// A local failure in the middle of the content: the message must not be delivered, so
    /// the connection is dropped without ending it.
    fn abort(&mut self, e: SendError) -> SendError {
        self.stream.shutdown();
        e
    }

    /// Sends QUIT and waits (bounded by the command timeout) for the `221`.
    pub fn quit(mut self) -> Result<(), SendError> {
        self.quit_inner()
    }

    pub(crate) fn quit_inner(&mut self) -> Result<(), SendError> {
        if !self.core.is_ready() {
            return Ok(());
        }
        self.core.quit().map_err(SendError::Request)?;
        self.step = Step::Quit;
        match self.run::<()>(|_, _, _| Ok(Flow::Continue)) {
            Ok(()) | Err(SendError::Closed { step: Step::Quit }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes everything the core has to send.
    fn drain(&mut self) -> Result<(), SendError> {
        loop {
            let n = self.core.poll_transmit(&mut self.out);
            if n == 0 {
                return self.stream.flush().map_err(|e| SendError::Io { step: self.step, source: e });
            }
            if let Err(e) = self.stream.write_all(&self.out[..n]) {
                return Err(SendError::Io { step: self.step, source: e });
            }
        }
    }

    /// Bytes already waiting on the plain socket (a non-blocking peek).
    fn plaintext_waiting(&self) -> Option<Vec<u8>> {
        let Conn::Net(Stream::Plain(tcp)) = &self.stream else { return None };
        let mut b = [0u8; 64];
        tcp.set_nonblocking(true).ok()?;
        let r = tcp.peek(&mut b);
        let _ = tcp.set_nonblocking(false);
        match r {
            Ok(n) if n > 0 => Some(b[..n].to_vec()),
            _ => None,
        }
    }

    /// The STARTTLS (or implicit TLS) handshake on the plain stream.
    fn start_tls(&mut self) -> Result<(), SendError> {
        let Some(config) = self.tls_config.clone() else {
            return Err(SendError::Tls(io::Error::other("TLS is off")));
        };
        let name = ServerName::try_from(self.tls_name.clone()).map_err(|e| {
            SendError::Tls(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {e}", self.tls_name)))
        })?;
        let tcp = match &self.stream {
            Conn::Net(Stream::Plain(s)) => {
                s.try_clone().map_err(|e| SendError::Io { step: Step::StartTls, source: e })?
            }
            _ => return Err(SendError::Tls(io::Error::other("TLS already active or not over TCP"))),
        };
        let tls = handshake(tcp, config, name, self.handshake_timeout)?;
        self.read_timeout = None;
        self.stream = Conn::Net(Stream::Tls(Box::new(tls)));
        // Nothing read before the handshake survives it.
        (self.start, self.end) = (0, 0);
        self.core.tls_established().map_err(SendError::Request)?;
        tracing::debug!(server = %self.peer, "TLS established");
        Ok(())
    }

    /// Runs the core until `f` is done with an event: drains the output, feeds input, does
    /// the TLS handshake when the core asks, reads with the core's timeout. A fatal error of
    /// the core, a closed connection or a timeout end the loop with an error.
    pub(crate) fn run<T>(
        &mut self,
        mut f: impl FnMut(&Core, &mut Step, Event<'_>) -> Result<Flow<T>, SendError>,
    ) -> Result<T, SendError> {
        loop {
            self.drain()?;
            loop {
                let r = self.core.handle_input(&self.buf[self.start..self.end]).map_err(SendError::Request)?;
                self.start += r.consumed;
                match r.progress {
                    Progress::Event(Event::Error(e)) => {
                        // The core queued QUIT if the server is sane; the caller drops us.
                        let _ = self.drain();
                        return Err(from_core(e, command_name));
                    }
                    Progress::Event(Event::TlsHandshake) => {
                        self.drain()?;
                        // Plaintext that arrived after the 220 in a later segment is injection
                        // too: the core says so (it would otherwise break the handshake).
                        if let Some(early) = self.plaintext_waiting() {
                            if let Ok(r) = self.core.handle_input(&early) {
                                if let Progress::Event(Event::Error(e)) = r.progress {
                                    return Err(from_core(e, command_name));
                                }
                            }
                            return Err(SendError::ResponseInjection);
                        }
                        self.start_tls()?;
                    }
                    Progress::Event(ev) => {
                        if let Flow::Done(t) = f(&self.core, &mut self.step, ev)? {
                            self.drain()?;
                            return Ok(t);
                        }
                    }
                    Progress::NeedInput => break,
                    Progress::Closed => {
                        let _ = self.drain();
                        return Err(match self.core.error() {
                            Some(e) => from_core(*e, command_name),
                            None => SendError::Closed { step: self.step },
                        });
                    }
                }
            }
            self.drain()?;
            self.read_more()?;
        }
    }

    /// Reads more input, bounded by the core's timeout.
    fn read_more(&mut self) -> Result<(), SendError> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                // Cannot happen: the buffer holds the longest reply the core accepts.
                return Err(SendError::Io { step: self.step, source: io::Error::other("reply buffer full") });
            }
            self.buf.copy_within(self.start..self.end, 0);
            (self.end, self.start) = (self.end - self.start, 0);
        }
        let timeout = self.core.timeout().unwrap_or(Duration::from_secs(300)).max(Duration::from_millis(1));
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.core.handle_timeout();
                return Err(SendError::Timeout { step: self.step });
            }
            if self.read_timeout != Some(left) {
                self.stream.set_read_timeout(Some(left)).map_err(|e| SendError::Io { step: self.step, source: e })?;
                self.read_timeout = Some(left);
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(SendError::Closed { step: self.step }),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
                Err(e) => return Err(SendError::Io { step: self.step, source: e }),
            }
        }
    }
}

impl Drop for SmtpClient {
    fn drop(&mut self) {
        // Best effort, without waiting for the 221.
        if self.core.is_ready() && self.core.quit().is_ok() {
            let _ = self.drain();
        }
    }
}

/// Connects, sends one message, quits: [`SmtpClient::connect`] + [`SmtpClient::send`]. The
/// envelope is checked before connecting. A failed QUIT after a delivery is not an error.
pub fn send(options: &SendOptions, envelope: &Envelope, message: impl Read) -> Result<Delivery, SendError> {
    envelope.validate()?;
    let mut client = SmtpClient::connect(options)?;
    let delivery = client.send(envelope, message)?;
    let _ = client.quit_inner();
    Ok(delivery)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_added_only_when_missing() {
        let run = |m: &[u8]| {
            let (mut r, n) = add_missing_headers(m, "h.example").unwrap();
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            assert_eq!(&v[n as usize..], m);
            String::from_utf8(v[..n as usize].to_vec()).unwrap()
        };
        assert_eq!(run(b"Date: x\r\nMessage-ID: <a@b>\r\n\r\nbody"), "");
        assert_eq!(run(b"date : x\nmessage-id:<a@b>\n\nDate: body\n"), "");
        let added = run(b"Subject: a\r\n\r\nDate: in the body\r\nMessage-ID: in the body\r\n");
        assert!(added.starts_with("Date: ") && added.contains("\r\nMessage-ID: <"), "{added}");
        assert!(run(b"Message-ID: <a@b>\n\n").starts_with("Date: "));
        assert!(run(b"").starts_with("Date: "));
        assert!(run(b"\r\nDate: body only").starts_with("Date: "));
        // A header block in many small reads, and a body that is never read.
        let big = [b"X-Pad: ".as_slice(), &[b'a'; 100_000], b"\nDate: d\nMessage-ID: <i@d>\n\nbody"].concat();
        assert_eq!(run(&big), "");
        let huge = vec![b'a'; MAX_HEADER_BLOCK + 10];
        assert!(add_missing_headers(&huge[..], "h").is_err());
    }

    #[test]
    fn message_ids_are_unique() {
        let a = message_id("h o.st");
        assert!(a.starts_with('<') && a.ends_with("@h-o.st>"), "{a}");
        assert_ne!(a, message_id("h o.st"));
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("mx.example:25"), "mx.example");
        assert_eq!(host_of("[::1]:25"), "::1");
        assert_eq!(host_of("127.0.0.1:587"), "127.0.0.1");
    }

    #[test]
    fn validation() {
        assert!(Envelope::new("a@b", ["c@d"]).validate().is_ok());
        assert!(Envelope::new("a@b", ["c@d\r\nRSET"]).validate().is_err());
        assert!(Envelope::new("a@b\n", ["c@d"]).validate().is_err());
        assert!(Envelope::new("a@b", ["<c@d>"]).validate().is_err());
        assert!(Envelope::new("a@b", Vec::<String>::new()).validate().is_err());
    }
}
