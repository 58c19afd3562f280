//! The client state machine: the caller's requests in, command bytes out, server replies in,
//! [`Event`]s out.
//!
//! A [`Client`] owns no reply bytes and no message bytes. The caller owns the input buffer and
//! feeds it to [`Client::handle_input`], which reports how many bytes it consumed and at most
//! one [`Event`] borrowing from that buffer (one event per reply). Requests — send a message
//! ([`Client::send_mail`]), [`Client::starttls`], [`Client::auth`], [`Client::quit`] — are
//! accepted when the client is idle: after [`Event::Capabilities`], [`Event::Authenticated`],
//! [`Event::Delivered`] or [`Event::Failed`]. Commands are written into a fixed internal
//! buffer ([`OUTPUT_BUFFER`] bytes) and leave through [`Client::poll_transmit`].
//!
//! **Drain rule**: after every call, write everything [`Client::poll_transmit`] gives to the
//! server; call [`Client::handle_input`] on unconsumed input until it answers
//! [`Progress::NeedInput`], then read the socket. The input buffer must hold
//! [`ReplyLimits::max_reply_len`](crate::parse::reply::ReplyLimits::max_reply_len) bytes (51 200 with the defaults) so that a whole reply fits.
//!
//! # The session
//! 1. `220` greeting → [`Event::Greeting`]; the client sends EHLO (HELO if EHLO gets 500/502;
//!    LHLO in [LMTP](#lmtp) mode).
//! 2. [`Event::Capabilities`]: idle. [`Client::capabilities`] holds what the server offers.
//! 3. Optionally [`Client::starttls`] → [`Event::TlsHandshake`]: do the handshake, then call
//!    [`Client::tls_established`]; the capabilities are dropped and EHLO is sent again.
//!    **Any byte after the `220` to STARTTLS, in the same read or before the handshake, is
//!    response injection: the session ends with [`ErrorKind::ResponseInjection`].**
//! 4. Optionally [`Client::auth`] (PLAIN, LOGIN, XOAUTH2) → [`Event::Authenticated`].
//! 5. [`Client::send_mail`]: MAIL, RCPT... and DATA (one group with PIPELINING, RFC 2920; one
//!    at a time otherwise) → an [`Event::Reply`] per MAIL and RCPT, then
//!    [`Event::ReadyForData`] if at least one recipient was accepted. Push the content with
//!    [`Client::send_body`] (any chunk size; dot-stuffed, CR/LF normalised), end it with
//!    [`Client::finish_body`] → [`Event::Delivered`] (LMTP: a reply per recipient, then
//!    [`Event::LmtpDone`]), with per-recipient results in [`Client::recipient_results`]. If nothing was accepted the client sends RSET and reports
//!    [`Event::Failed`].
//! 6. [`Client::quit`] → [`Progress::Closed`].
//!
//! A fatal problem (a malformed reply, injection, a refused greeting, `421`) is reported once
//! as [`Event::Error`]; then the session is closed (after a `QUIT` when the server is sane).
//!
//! # LMTP
//! With [`Config::lmtp()`] the client speaks LMTP (RFC 2033), the same session with three
//! differences:
//! 1. The greeting is answered with `LHLO`; there is no HELO fallback (a refused LHLO is
//!    fatal). PIPELINING is used as in SMTP, when the server offers it (RFC 2033 servers
//!    must); BDAT never (see [`Config::lmtp()`] for why).
//! 2. After the end of data the server sends one reply per recipient accepted at RCPT, in
//!    RCPT order: each is reported as [`Event::Reply`] with [`Command::DataEnd`] and the
//!    recipient's index in [`Envelope::to`], and replaces that recipient's entry in
//!    [`Client::recipient_results`]. After the last one, [`Event::LmtpDone`]: the client is
//!    idle. [`Event::Delivered`] is never reported in LMTP mode.
//! 3. [`Client::recipient_results`] is each recipient's final outcome once the transaction is
//!    over: its refusal at RCPT, or its reply after the data. From the end of data on, an
//!    accepted recipient's entry is `None` until its reply arrives; if the session dies
//!    first (a `421`, a malformed reply, a timeout), `None` means *unknown*: the message may
//!    or may not have been delivered to it. (A `421` in place of a recipient's reply is kept
//!    as that recipient's result, then the session ends.)
//!
//! ```
//! use smtp_proto::client::{Client, Command, Config, Envelope, Event, Progress, Recipient};
//!
//! let mut client: Client<4> = Client::new(Config::lmtp("mx.example"));
//! let mut out = [0u8; 512];
//! let mut feed = |client: &mut Client<4>, mut input: &[u8]| {
//!     let mut events = Vec::new();
//!     loop {
//!         let r = client.handle_input(input).unwrap();
//!         input = &input[r.consumed..];
//!         let Progress::Event(ev) = r.progress else { return events };
//!         events.push(match ev {
//!             Event::Reply { command: Command::DataEnd, recipient: Some(i), reply } => {
//!                 format!("{i}: {}", reply.code())
//!             }
//!             ev => format!("{ev:?}"),
//!         });
//!     }
//! };
//! feed(&mut client, b"220 lmtp.example LMTP ready\r\n");
//! let n = client.poll_transmit(&mut out);
//! assert_eq!(&out[..n], b"LHLO mx.example\r\n");
//! feed(&mut client, b"250-lmtp.example\r\n250 PIPELINING\r\n");
//! let to = [Recipient::new("a@example.org"), Recipient::new("b@example.org"), Recipient::new("c@example.org")];
//! client.send_mail(&Envelope::new("m@mx.example", &to)).unwrap();
//! feed(&mut client, b"250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n250 ok\r\n354 go\r\n");
//! client.send_body(b"Subject: hi\r\n\r\nhello\r\n").unwrap();
//! client.finish_body().unwrap();
//! // One reply per recipient accepted at RCPT (a and c), in RCPT order.
//! let events = feed(&mut client, b"250 2.0.0 saved\r\n452 4.2.2 over quota\r\n");
//! assert_eq!(events, ["0: 250", "2: 452", "LmtpDone { delivered: 1, accepted: 2 }"]);
//! let codes: Vec<u16> = client.recipient_results().iter().map(|r| r.unwrap().code).collect();
//! assert_eq!(codes, [250, 550, 452]);
//! assert!(client.is_ready());
//! ```
//!
//! # Capacity
//! `N` (default 100, the RFC 5321 §4.5.3.1.8 minimum a server must buffer) is the most
//! recipients per transaction. All of a transaction's commands are written at once into the
//! output buffer (released one by one without PIPELINING), so they must fit in
//! [`OUTPUT_BUFFER`] minus a small reserve: about 100 recipients of typical length.
//!
//! ```
//! use smtp_proto::client::{Client, Config, Envelope, Event, Progress, Recipient};
//!
//! let mut client: Client<4> = Client::new(Config::new("client.example"));
//! let mut out = [0u8; 512];
//! let mut feed = |client: &mut Client<4>, mut input: &[u8]| {
//!     let mut events = Vec::new();
//!     loop {
//!         let r = client.handle_input(input).unwrap();
//!         input = &input[r.consumed..];
//!         match r.progress {
//!             Progress::Event(ev) => events.push(format!("{ev:?}")),
//!             _ => return events,
//!         }
//!     }
//! };
//! feed(&mut client, b"220 mx.example ESMTP\r\n");
//! let n = client.poll_transmit(&mut out);
//! assert_eq!(&out[..n], b"EHLO client.example\r\n");
//! feed(&mut client, b"250-mx.example\r\n250 PIPELINING\r\n");
//! let to = [Recipient::new("b@example.org")];
//! client.send_mail(&Envelope::new("a@client.example", &to)).unwrap();
//! let n = client.poll_transmit(&mut out);
//! assert_eq!(&out[..n], b"MAIL FROM:<a@client.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
//! let events = feed(&mut client, b"250 ok\r\n250 ok\r\n354 go\r\n");
//! assert!(events[2].starts_with("ReadyForData"));
//! assert_eq!(client.send_body(b".hi\n"), Ok(4));
//! client.finish_body().unwrap();
//! let n = client.poll_transmit(&mut out);
//! assert_eq!(&out[..n], b"..hi\r\n.\r\n");
//! let events = feed(&mut client, b"250 2.0.0 queued\r\n");
//! assert!(events[0].starts_with("Delivered"));
//! assert!(client.recipient_results()[0].unwrap().is_accepted());
//! ```

mod auth;
mod config;
mod envelope;
mod error;
mod event;
mod lmtp;
mod replies;
mod transaction;

pub use config::{Config, Timeouts};
pub use envelope::{Envelope, Recipient};
pub use error::{ApiError, Argument, Error, ErrorKind, Extension, ReplySummary, Step, SUMMARY_TEXT};
pub use event::{Command, Event, Input, Progress, RcptResult};

use core::time::Duration;

use crate::data::Stuffer;
use crate::ehlo::Capabilities;
use crate::parse::reply::{parse_reply, ParsedReply};
use crate::parse::Status;

use auth::AuthSteps;
use envelope::{Normaliser, W};

/// Size of the client's output buffer.
pub const OUTPUT_BUFFER: usize = 8192;
/// Output space kept free for RSET, QUIT and the end of data.
const RESERVE: usize = 64;
/// Room kept in front of BDAT content for its command line.
const BDAT_HEADER: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    /// EHLO, or LHLO in LMTP mode.
    Ehlo,
    Helo,
    Ready,
    StartTls,
    TlsPending,
    Auth,
    /// Waiting for the replies to MAIL, RCPT... and DATA.
    Envelope,
    /// The caller pushes content.
    Body,
    /// Waiting for the reply to a BDAT chunk.
    Bdat {
        last: bool,
    },
    /// Waiting for the reply to the end of data (LMTP: for the replies, see `Tx::lmtp_left`).
    DataEnd,
    /// `354` without an accepted recipient: sent `.`, waiting for its reply.
    EmptyData,
    /// Waiting for the reply to RSET (then report the stored failure, if any).
    Rset,
    Quit,
    Closed,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tx {
    count: usize,
    /// Index of the next reply in `[MAIL, RCPT 0.., DATA]`.
    next: usize,
    /// Where the DATA command ends; `None` with BDAT.
    data_end: Option<usize>,
    mail_ok: bool,
    accepted: usize,
    /// LMTP: replies after the end of data still due.
    lmtp_left: usize,
    /// LMTP: where to look for the recipient of the next reply after the end of data.
    lmtp_cursor: usize,
    /// LMTP: positive replies after the end of data so far.
    delivered: usize,
}

/// An event reported on the next [`Client::handle_input`] call (it borrows nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deferred {
    Nothing,
    ReadyForData,
    LmtpDone,
}

/// A client session; `N` is the most recipients per transaction. See the [module docs](self).
#[derive(Clone)]
pub struct Client<const N: usize = 100> {
    config: Config,
    state: State,
    caps: Capabilities,
    size_limit: Option<u64>,
    esmtp: bool,
    tls: bool,
    authenticated: bool,
    tx: Tx,
    results: [Option<RcptResult>; N],
    rcpt_ends: [usize; N],
    auth: AuthSteps,
    chunked: bool,
    pipelined: bool,
    stuffer: Stuffer,
    normaliser: Normaliser,
    /// A failure reported after the RSET reply.
    failure: Option<Error>,
    /// An event to report on the next call.
    deferred: Deferred,
    error: Option<Error>,
    out: [u8; OUTPUT_BUFFER],
    sent: usize,
    released: usize,
    len: usize,
}

impl<const N: usize> core::fmt::Debug for Client<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state)
            .field("tls", &self.tls)
            .field("authenticated", &self.authenticated)
            .field("esmtp", &self.esmtp)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

fn summary(reply: &ParsedReply<'_>) -> Option<ReplySummary> {
    Some(ReplySummary::new(reply))
}

impl<const N: usize> Client<N> {
    /// A new session waiting for the greeting. For implicit TLS (port 465) do the handshake
    /// first and call [`Client::tls_established`] before feeding input.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            state: State::Greeting,
            caps: Capabilities::none(),
            size_limit: None,
            esmtp: false,
            tls: false,
            authenticated: false,
            tx: Tx::default(),
            results: [None; N],
            rcpt_ends: [0; N],
            auth: AuthSteps::default(),
            chunked: false,
            pipelined: false,
            stuffer: Stuffer::new(config.bare_line_endings),
            normaliser: Normaliser::new(config.bare_line_endings),
            failure: None,
            deferred: Deferred::Nothing,
            error: None,
            out: [0; OUTPUT_BUFFER],
            sent: 0,
            released: 0,
            len: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the server offers (empty before EHLO, after HELO and right after STARTTLS).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The server's `SIZE` limit, if it announced one (`Some(0)`: no fixed limit).
    pub fn size_limit(&self) -> Option<u64> {
        self.size_limit
    }

    /// Whether the server answered EHLO (not just HELO).
    pub fn is_esmtp(&self) -> bool {
        self.esmtp
    }

    /// Whether TLS is active (after [`Client::tls_established`]).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether AUTH succeeded.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Whether the client is idle: a request ([`Client::send_mail`], ...) is possible.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready && self.deferred == Deferred::Nothing
    }

    /// Whether content may be pushed now ([`Client::send_body`]).
    pub fn is_sending_body(&self) -> bool {
        self.state == State::Body && self.deferred == Deferred::Nothing
    }

    /// Whether a TLS handshake is due (after [`Event::TlsHandshake`]).
    pub fn is_tls_pending(&self) -> bool {
        self.state == State::TlsPending
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The fatal error that ended the session, if any.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// The results of the current (or last) transaction's RCPTs, in envelope order; `None` for
    /// a recipient whose reply has not arrived (or was never asked, after MAIL was refused).
    /// In LMTP mode, from the end of data on, an accepted recipient's entry is its reply
    /// after the data, `None` until it arrives (see the [module docs](self#lmtp)).
    pub fn recipient_results(&self) -> &[Option<RcptResult>] {
        &self.results[..self.tx.count]
    }

    /// The timeout that applies now (RFC 5321 §4.5.3.2), or `None` while the client waits for
    /// the caller (idle, or a TLS handshake... see [`Timeouts::tls_handshake`]) or is closed.
    pub fn timeout(&self) -> Option<Duration> {
        let t = &self.config.timeouts;
        match self.state {
            State::Greeting => Some(t.greeting),
            State::Ehlo | State::Helo | State::StartTls | State::Auth | State::Rset | State::Quit => Some(t.command),
            State::TlsPending => Some(t.tls_handshake),
            State::Envelope => Some(match self.tx.next {
                0 => t.mail,
                i if i <= self.tx.count => t.rcpt,
                _ => t.data_init,
            }),
            State::Body | State::Bdat { last: false } => Some(t.data_block),
            State::Bdat { last: true } | State::DataEnd | State::EmptyData => Some(t.data_end),
            State::Ready | State::Closed => None,
        }
    }

    /// The timeout from [`Client::timeout`] fired: the session is over (no QUIT: the server is
    /// not answering). [`Client::error`] says which step.
    pub fn handle_timeout(&mut self) {
        if self.state != State::Closed {
            let step = self.step();
            self.fatal(Error { step, kind: ErrorKind::Timeout, reply: None });
        }
    }

    /// Copies pending command and content bytes into `out`; returns how many. Call until it
    /// returns 0.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> usize {
        let n = (self.released - self.sent).min(out.len());
        out[..n].copy_from_slice(&self.out[self.sent..self.sent + n]);
        self.sent += n;
        if self.sent == self.len {
            self.sent = 0;
            self.released = 0;
            self.len = 0;
        }
        n
    }

    /// Bytes waiting in [`Client::poll_transmit`].
    pub fn pending_output(&self) -> usize {
        self.released - self.sent
    }

    /// The TLS handshake finished. After [`Event::TlsHandshake`]: the capabilities are dropped
    /// (RFC 3207 §4.2) and EHLO is sent again. Before the greeting: marks an implicit-TLS
    /// session (RFC 8314).
    ///
    /// # Errors
    /// [`ApiError::NoTlsPending`] at any other time.
    pub fn tls_established(&mut self) -> Result<(), ApiError> {
        match self.state {
            State::Greeting if self.len == 0 => {}
            State::TlsPending => {
                self.caps = Capabilities::none();
                self.size_limit = None;
                self.esmtp = false;
                self.authenticated = false;
                self.hello(true)?;
            }
            _ => return Err(ApiError::NoTlsPending),
        }
        self.tls = true;
        Ok(())
    }

    /// Sends STARTTLS (RFC 3207). Then [`Event::TlsHandshake`] or [`Event::Failed`].
    ///
    /// # Errors
    /// [`ApiError::NotReady`] unless idle; [`ApiError::NotOffered`] if the server did not offer
    /// STARTTLS or TLS is already active.
    pub fn starttls(&mut self) -> Result<(), ApiError> {
        self.ready()?;
        if !self.caps.starttls || self.tls {
            return Err(ApiError::NotOffered(Extension::StartTls));
        }
        self.command(b"STARTTLS\r\n")?;
        self.state = State::StartTls;
        Ok(())
    }

    /// Sends QUIT; the session closes after the `221` ([`Progress::Closed`]).
    ///
    /// # Errors
    /// [`ApiError::NotReady`] unless idle.
    pub fn quit(&mut self) -> Result<(), ApiError> {
        self.ready()?;
        self.command(b"QUIT\r\n")?;
        self.state = State::Quit;
        Ok(())
    }

    /// Feeds the server's bytes. See the [module docs](self) for the loop.
    ///
    /// # Errors
    /// None today; reserved for caller mistakes (the signature mirrors the server's).
    pub fn handle_input<'b>(&mut self, input: &'b [u8]) -> Result<Input<'b>, ApiError> {
        let done = |progress| Ok(Input { consumed: 0, progress });
        match core::mem::replace(&mut self.deferred, Deferred::Nothing) {
            Deferred::Nothing => {}
            Deferred::ReadyForData => return done(Progress::Event(Event::ReadyForData)),
            Deferred::LmtpDone => {
                let (delivered, accepted) = (self.tx.delivered, self.tx.accepted);
                return done(Progress::Event(Event::LmtpDone { delivered, accepted }));
            }
        }
        match self.state {
            State::Closed => return done(Progress::Closed),
            State::TlsPending if !input.is_empty() => {
                let err = Error { step: Step::StartTls, kind: ErrorKind::ResponseInjection, reply: None };
                self.fatal(err);
                return done(Progress::Event(Event::Error(err)));
            }
            _ => {}
        }
        let (n, reply) = match parse_reply(input, &self.config.reply_limits) {
            Ok(Status::Complete(r)) => r,
            Ok(Status::Partial) => return done(Progress::NeedInput),
            Err(e) => {
                let err = Error { step: self.step(), kind: ErrorKind::Malformed(e), reply: None };
                self.fatal(err);
                return done(Progress::Event(Event::Error(err)));
            }
        };
        let more = n < input.len();
        let progress = match self.on_reply(reply, more) {
            Some(ev) => Progress::Event(ev),
            None if self.state == State::Closed => Progress::Closed,
            None => Progress::NeedInput,
        };
        Ok(Input { consumed: n, progress })
    }

    fn ready(&self) -> Result<(), ApiError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(ApiError::NotReady)
        }
    }

    /// Moves unsent bytes to the front when no gated command is waiting.
    fn compact(&mut self) {
        if self.released == self.len && self.sent > 0 {
            self.out.copy_within(self.sent..self.len, 0);
            self.len -= self.sent;
            self.released = self.len;
            self.sent = 0;
        }
    }

    /// Appends and releases a command.
    fn command(&mut self, line: &[u8]) -> Result<(), ApiError> {
        let mut w = W { out: &mut self.out, len: self.len };
        w.bytes(line)?;
        self.len = w.len;
        self.released = self.len;
        Ok(())
    }

    fn hello(&mut self, ehlo: bool) -> Result<(), ApiError> {
        self.compact();
        let name = self.config.hostname;
        let mut w = W { out: &mut self.out, len: self.len };
        w.bytes(match (self.config.lmtp, ehlo) {
            (true, _) => b"LHLO ",
            (false, true) => b"EHLO ",
            (false, false) => b"HELO ",
        })?;
        w.bytes(name.as_str().as_bytes())?;
        w.bytes(b"\r\n")?;
        self.len = w.len;
        self.released = self.len;
        self.state = if ehlo { State::Ehlo } else { State::Helo };
        Ok(())
    }
}
