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

mod config;
mod envelope;
mod error;
mod lmtp;

pub use config::{Config, Timeouts};
pub use envelope::{Envelope, Recipient};
pub use error::{ApiError, Argument, Error, ErrorKind, Extension, ReplySummary, Step, SUMMARY_TEXT};

use core::time::Duration;

use crate::data::Stuffer;
use crate::ehlo::{AuthMechanisms, Capabilities};
use crate::parse::params::Ret;
use crate::parse::reply::{parse_reply, ParsedReply};
use crate::parse::Status;
use crate::reply::EnhancedCode;
use crate::sasl::{self, Credentials};

use envelope::{check, check_dsn, Normaliser, W};

/// Size of the client's output buffer.
pub const OUTPUT_BUFFER: usize = 8192;
/// Output space kept free for RSET, QUIT and the end of data.
const RESERVE: usize = 64;
/// Room kept in front of BDAT content for its command line.
const BDAT_HEADER: usize = 32;

/// Which command a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// EHLO.
    Ehlo,
    /// HELO.
    Helo,
    /// STARTTLS.
    StartTls,
    /// AUTH, or one step of its exchange.
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA.
    Data,
    /// An intermediate BDAT chunk.
    Bdat,
    /// The end of data (or the last BDAT chunk).
    DataEnd,
    /// RSET.
    Rset,
    /// QUIT.
    Quit,
}

/// What the core reports after [`Client::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'b> {
    /// The `220` greeting; the client sent EHLO.
    Greeting(ParsedReply<'b>),
    /// The reply to EHLO (or HELO): the client is idle and [`Client::capabilities`] holds what
    /// the server offers. Unknown keywords: iterate `reply.text_lines()`.
    Capabilities {
        /// The reply (its first line is the server's name).
        reply: ParsedReply<'b>,
        /// `false` after the HELO fallback (no extensions).
        esmtp: bool,
    },
    /// The `220` to STARTTLS: do the TLS handshake, then call [`Client::tls_established`].
    TlsHandshake,
    /// AUTH succeeded (`235`); the client is idle.
    Authenticated(ParsedReply<'b>),
    /// A reply that does not end a step: to MAIL, to each RCPT (with its index in the
    /// envelope), to an intermediate BDAT chunk (push more content), to an AUTH step (`334`),
    /// to EHLO before the HELO fallback, to RSET; in LMTP mode, each recipient's reply after
    /// the end of data ([`Command::DataEnd`], with its index).
    Reply {
        /// The command answered.
        command: Command,
        /// For RCPT (and LMTP's end of data): the recipient's index in [`Envelope::to`].
        recipient: Option<usize>,
        /// The reply.
        reply: ParsedReply<'b>,
    },
    /// Push the content with [`Client::send_body`] and end it with [`Client::finish_body`].
    ReadyForData,
    /// The server took the message; the client is idle. Per-recipient results are in
    /// [`Client::recipient_results`]. Not in LMTP mode: see [`Event::LmtpDone`].
    Delivered {
        /// The reply to the end of data.
        reply: ParsedReply<'b>,
        /// Recipients accepted.
        accepted: usize,
    },
    /// LMTP: the reply after the end of data for the last accepted recipient arrived (each was
    /// reported as [`Event::Reply`] with [`Command::DataEnd`]); the client is idle. Each
    /// recipient's final outcome is in [`Client::recipient_results`].
    LmtpDone {
        /// Recipients whose reply after the data was positive (2xx): they have the message.
        delivered: usize,
        /// Recipients accepted at RCPT (one reply after the data each).
        accepted: usize,
    },
    /// A step failed (AUTH, STARTTLS, or the transaction: MAIL refused, no recipient accepted,
    /// DATA or the content refused); the client is idle again (RSET was sent if needed).
    Failed(Error),
    /// A fatal problem: drain the output, then close (see [`Progress::Closed`]).
    Error(Error),
}

/// What to do next after [`Client::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Progress<'b> {
    /// Handle this event, then call `handle_input` again with the rest of the input.
    Event(Event<'b>),
    /// Everything usable was consumed: drain [`Client::poll_transmit`], then read more (or,
    /// when idle, make a request).
    NeedInput,
    /// The session is over: drain [`Client::poll_transmit`], then close the connection.
    Closed,
}

/// The result of [`Client::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Input<'b> {
    /// Bytes of the input consumed; the caller keeps the rest and feeds it again.
    pub consumed: usize,
    /// What to do next.
    pub progress: Progress<'b>,
}

/// The server's answer to one RCPT (in LMTP mode, after the data: the answer for that
/// recipient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RcptResult {
    /// The reply code.
    pub code: u16,
    /// The enhanced status code, if any.
    pub enhanced: Option<EnhancedCode>,
}

impl RcptResult {
    /// Whether the recipient was accepted (2xx).
    pub fn is_accepted(&self) -> bool {
        self.code / 100 == 2
    }
}

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

#[derive(Debug, Clone, Copy, Default)]
struct AuthSteps {
    ends: [usize; 3],
    n: usize,
    /// Steps released so far.
    at: usize,
}

impl AuthSteps {
    fn push(&mut self, end: usize) {
        if let Some(e) = self.ends.get_mut(self.n) {
            *e = end;
            self.n += 1;
        }
    }
}

/// `prefix` + base64 of the concatenated `payload` + CRLF.
fn b64_line(w: &mut W<'_>, raw: &mut [u8], prefix: &[u8], payload: &[&[u8]]) -> Result<(), ApiError> {
    let mut r = W { out: raw, len: 0 };
    for p in payload {
        r.bytes(p)?;
    }
    let n = r.len;
    w.bytes(prefix)?;
    let room = w.out.get_mut(w.len..).ok_or(ApiError::TooLong)?;
    w.len += sasl::encode_base64(&raw[..n], room).map_err(|_| ApiError::TooLong)?;
    w.bytes(b"\r\n")
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

    /// Authenticates with PLAIN (initial response), LOGIN (two `334` steps) or XOAUTH2
    /// (RFC 4954). Then [`Event::Authenticated`] or [`Event::Failed`] with the server's reply.
    ///
    /// # Errors
    /// [`ApiError::NotReady`] unless idle; [`ApiError::NotOffered`]`(Auth)` if the server does
    /// not offer the mechanism (or it is OAUTHBEARER, not implemented);
    /// [`ApiError::ForbiddenCharacter`] for a control character in the credentials;
    /// [`ApiError::TooLong`] if they do not fit.
    pub fn auth(&mut self, credentials: &Credentials<'_>) -> Result<(), ApiError> {
        self.ready()?;
        let (bit, fields): (u16, [&str; 3]) = match *credentials {
            Credentials::Plain { authzid, authcid, password } => (AuthMechanisms::PLAIN, [authzid, authcid, password]),
            Credentials::Login { username, password } => (AuthMechanisms::LOGIN, [username, password, ""]),
            Credentials::XOAuth2 { user, token } => (AuthMechanisms::XOAUTH2, [user, token, ""]),
            _ => return Err(ApiError::NotOffered(Extension::Auth)),
        };
        if !self.caps.auth.contains(bit) {
            return Err(ApiError::NotOffered(Extension::Auth));
        }
        for f in fields {
            check(f, Argument::Credentials, false)?;
        }
        self.compact();
        let mut raw = [0u8; 2048];
        let limit = OUTPUT_BUFFER - RESERVE;
        let mut w = W { out: &mut self.out[..limit], len: self.len };
        let mut steps = AuthSteps::default();
        let [a, b, c] = fields;
        match bit {
            AuthMechanisms::PLAIN => {
                b64_line(&mut w, &mut raw, b"AUTH PLAIN ", &[a.as_bytes(), b"\0", b.as_bytes(), b"\0", c.as_bytes()])?;
                steps.push(w.len);
            }
            AuthMechanisms::LOGIN => {
                w.bytes(b"AUTH LOGIN\r\n")?;
                steps.push(w.len);
                b64_line(&mut w, &mut raw, b"", &[a.as_bytes()])?;
                steps.push(w.len);
                b64_line(&mut w, &mut raw, b"", &[b.as_bytes()])?;
                steps.push(w.len);
            }
            _ => {
                let payload: [&[u8]; 5] = [b"user=", a.as_bytes(), b"\x01auth=Bearer ", b.as_bytes(), b"\x01\x01"];
                b64_line(&mut w, &mut raw, b"AUTH XOAUTH2 ", &payload)?;
                steps.push(w.len);
                // The answer to an error challenge (a 334 with a JSON status) is an empty line.
                w.bytes(b"\r\n")?;
                steps.push(w.len);
            }
        }
        self.len = w.len;
        steps.at = 1;
        self.released = steps.ends[0];
        self.auth = steps;
        self.state = State::Auth;
        Ok(())
    }

    /// Starts a transaction: MAIL, every RCPT and (unless BDAT is used) DATA. With PIPELINING
    /// they leave in one group; otherwise one at a time as the replies arrive. Then an
    /// [`Event::Reply`] per reply, and [`Event::ReadyForData`] or [`Event::Failed`].
    ///
    /// # Errors
    /// Nothing is written on error: [`ApiError::NotReady`] unless idle;
    /// [`ApiError::NoRecipients`], [`ApiError::TooManyRecipients`] (more than `N`);
    /// [`ApiError::ForbiddenCharacter`] for CR, LF, NUL, any control character or `<`/`>` in
    /// an address, or a control character in ENVID/ORCPT; [`ApiError::BadParameter`] for an
    /// empty ENVID/ORCPT or one too long once encoded; [`ApiError::SizeExceeded`] if the
    /// declared size exceeds the server's SIZE; [`ApiError::NotOffered`] for a non-ASCII
    /// address without SMTPUTF8 or `eight_bit` without 8BITMIME; [`ApiError::TooLong`] if the
    /// commands do not fit the output buffer.
    pub fn send_mail(&mut self, env: &Envelope<'_>) -> Result<(), ApiError> {
        self.ready()?;
        if env.to.is_empty() {
            return Err(ApiError::NoRecipients);
        }
        if env.to.len() > N {
            return Err(ApiError::TooManyRecipients);
        }
        check(env.from, Argument::Sender, true)?;
        let mut utf8 = !env.from.is_ascii();
        for (i, r) in env.to.iter().enumerate() {
            check(r.address, Argument::Recipient(i), true)?;
            if let Some(o) = r.orcpt {
                check(o, Argument::Orcpt(i), false)?;
                check_dsn(o, Argument::Orcpt(i), true)?;
            }
            utf8 |= !r.address.is_ascii();
        }
        if let Some(envid) = env.envid {
            check(envid, Argument::EnvId, false)?;
            check_dsn(envid, Argument::EnvId, false)?;
        }
        if let (Some(size), Some(limit)) = (env.size, self.size_limit) {
            if limit > 0 && size > limit && self.caps.size {
                return Err(ApiError::SizeExceeded { size, limit });
            }
        }
        if utf8 && !self.caps.smtputf8 {
            return Err(ApiError::NotOffered(Extension::SmtpUtf8));
        }
        if env.eight_bit && !self.caps.eightbitmime {
            return Err(ApiError::NotOffered(Extension::EightBitMime));
        }
        let caps = self.caps;
        self.compact();
        let start = self.len;
        let mut w = W { out: &mut self.out[..OUTPUT_BUFFER - RESERVE], len: start };
        w.bytes(b"MAIL FROM:<")?;
        w.bytes(env.from.as_bytes())?;
        w.bytes(b">")?;
        if let (Some(size), true) = (env.size, caps.size) {
            w.bytes(b" SIZE=")?;
            w.num(size)?;
        }
        if env.eight_bit {
            w.bytes(b" BODY=8BITMIME")?;
        }
        if utf8 {
            w.bytes(b" SMTPUTF8")?;
        }
        if caps.dsn {
            match env.ret {
                Some(Ret::Full) => w.bytes(b" RET=FULL")?,
                Some(Ret::Hdrs) => w.bytes(b" RET=HDRS")?,
                None => {}
            }
            if let Some(envid) = env.envid {
                w.bytes(b" ENVID=")?;
                w.xtext(envid)?;
            }
        }
        w.bytes(b"\r\n")?;
        let mail_end = w.len;
        for (i, r) in env.to.iter().enumerate() {
            w.bytes(b"RCPT TO:<")?;
            w.bytes(r.address.as_bytes())?;
            w.bytes(b">")?;
            if caps.dsn {
                if let Some(n) = r.notify {
                    w.notify(n)?;
                }
                if let Some(o) = r.orcpt {
                    w.bytes(b" ORCPT=rfc822;")?;
                    w.xtext(o)?;
                }
            }
            w.bytes(b"\r\n")?;
            self.rcpt_ends[i] = w.len;
        }
        let chunked = self.config.chunking && caps.chunking && !self.config.lmtp;
        let data_end = if chunked {
            None
        } else {
            w.bytes(b"DATA\r\n")?;
            Some(w.len)
        };
        let end = w.len;
        self.len = end;
        self.pipelined = self.config.pipelining && caps.pipelining;
        self.released = if self.pipelined { end } else { mail_end };
        self.chunked = chunked;
        self.tx = Tx { count: env.to.len(), next: 0, data_end, ..Tx::default() };
        self.results[..env.to.len()].fill(None);
        self.stuffer = Stuffer::new(self.config.bare_line_endings);
        self.normaliser = Normaliser::new(self.config.bare_line_endings);
        self.state = State::Envelope;
        Ok(())
    }

    /// Pushes message content: dot-stuffed (DATA) with bare CR/LF normalised to CRLF (or
    /// refused, per [`Config::bare_line_endings`]). Returns how many bytes of `chunk` were
    /// taken; push the rest after draining [`Client::poll_transmit`]. With BDAT each call
    /// sends one chunk and returns 0 until its reply ([`Event::Reply`] with
    /// [`Command::Bdat`]) arrived.
    ///
    /// # Errors
    /// [`ApiError::NotReady`] outside the content phase; [`ApiError::BareLineEnding`] under
    /// [`BarePolicy::Reject`](crate::data::BarePolicy::Reject): the session is over, close the connection.
    pub fn send_body(&mut self, chunk: &[u8]) -> Result<usize, ApiError> {
        if self.state == (State::Bdat { last: false }) {
            return Ok(0);
        }
        if !self.is_sending_body() {
            return Err(ApiError::NotReady);
        }
        self.compact();
        if self.chunked {
            return self.send_chunk(chunk);
        }
        match self.stuffer.stuff(chunk, &mut self.out[self.len..]) {
            Ok((consumed, written)) => {
                self.len += written;
                self.released = self.len;
                Ok(consumed)
            }
            Err(_) => Err(self.bare_line_ending()),
        }
    }

    fn send_chunk(&mut self, chunk: &[u8]) -> Result<usize, ApiError> {
        let at = self.len + BDAT_HEADER;
        if at + 2 > OUTPUT_BUFFER || chunk.is_empty() {
            return Ok(0);
        }
        let (consumed, k) = match self.normaliser.normalise(chunk, &mut self.out[at..]) {
            Ok(r) => r,
            Err(()) => return Err(self.bare_line_ending()),
        };
        if k > 0 {
            let mut head = [0u8; BDAT_HEADER];
            let mut w = W { out: &mut head, len: 0 };
            w.bytes(b"BDAT ")?;
            w.num(k as u64)?;
            w.bytes(b"\r\n")?;
            let h = w.len;
            self.out[self.len..self.len + h].copy_from_slice(&head[..h]);
            self.out.copy_within(at..at + k, self.len + h);
            self.len += h + k;
            self.released = self.len;
            self.state = State::Bdat { last: false };
        }
        Ok(consumed)
    }

    fn bare_line_ending(&mut self) -> ApiError {
        self.fatal(Error { step: Step::Body, kind: ErrorKind::BareLineEnding, reply: None });
        ApiError::BareLineEnding
    }

    /// Ends the content: the terminator `CRLF . CRLF` (DATA; a missing final CRLF is added),
    /// or the last BDAT chunk. Then [`Event::Delivered`] or [`Event::Failed`].
    ///
    /// # Errors
    /// [`ApiError::NotReady`] outside the content phase (with BDAT: also while a chunk's reply
    /// is outstanding); [`ApiError::OutputFull`]: drain and call again;
    /// [`ApiError::BareLineEnding`] for a final bare CR under [`BarePolicy::Reject`](crate::data::BarePolicy::Reject).
    pub fn finish_body(&mut self) -> Result<(), ApiError> {
        if !self.is_sending_body() {
            return Err(ApiError::NotReady);
        }
        self.compact();
        if OUTPUT_BUFFER - self.len < BDAT_HEADER {
            return Err(ApiError::OutputFull);
        }
        if self.chunked {
            let Ok(tail) = self.normaliser.finish() else {
                return Err(self.bare_line_ending());
            };
            let mut w = W { out: &mut self.out, len: self.len };
            w.bytes(b"BDAT ")?;
            w.num(tail.len() as u64)?;
            w.bytes(b" LAST\r\n")?;
            w.bytes(tail)?;
            self.len = w.len;
            self.state = State::Bdat { last: true };
        } else {
            match self.stuffer.finish(&mut self.out[self.len..]) {
                Ok(n) => self.len += n,
                Err(_) => return Err(self.bare_line_ending()),
            }
            self.state = State::DataEnd;
            if self.config.lmtp {
                self.lmtp_expect_replies();
            }
        }
        self.released = self.len;
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

    /// The step the client is in (for errors).
    fn step(&self) -> Step {
        match self.state {
            State::Greeting => Step::Greeting,
            State::Ehlo if self.config.lmtp => Step::Lhlo,
            State::Ehlo => Step::Ehlo,
            State::Helo => Step::Helo,
            State::StartTls | State::TlsPending => Step::StartTls,
            State::Auth => Step::Auth,
            State::Envelope => match self.tx.next {
                0 => Step::Mail,
                i if i <= self.tx.count => Step::Rcpt,
                _ => Step::Data,
            },
            State::Body => Step::Body,
            State::Bdat { .. } | State::DataEnd | State::EmptyData => Step::DataEnd,
            State::Rset => Step::Rset,
            State::Quit => Step::Quit,
            State::Ready | State::Closed => Step::Idle,
        }
    }

    fn on_reply<'b>(&mut self, r: ParsedReply<'b>, more: bool) -> Option<Event<'b>> {
        let step = self.step();
        let refused = |kind| Error { step, kind, reply: summary(&r) };
        if r.code() == 421 && self.state != State::Quit {
            // Service closing: no more replies will come.
            if self.state == State::DataEnd && self.config.lmtp {
                self.lmtp_record(&r);
            }
            let err = refused(ErrorKind::Refused);
            self.fatal(err);
            return Some(Event::Error(err));
        }
        let code = r.code();
        match self.state {
            State::Greeting => {
                if code != 220 {
                    return Some(self.fatal_quit(refused(ErrorKind::Refused)));
                }
                if self.hello(true).is_err() {
                    return Some(self.fatal_quit(refused(ErrorKind::Refused)));
                }
                Some(Event::Greeting(r))
            }
            State::Ehlo | State::Helo => {
                let ehlo = self.state == State::Ehlo;
                if code == 250 {
                    if ehlo {
                        let lines = r.text_lines().map(|l| core::str::from_utf8(l).unwrap_or(""));
                        let (caps, size) = Capabilities::from_ehlo_lines(lines);
                        self.caps = caps;
                        self.size_limit = size;
                    }
                    self.esmtp = ehlo;
                    self.state = State::Ready;
                    return Some(Event::Capabilities { reply: r, esmtp: ehlo });
                }
                if ehlo && !self.config.lmtp && (code == 500 || code == 502) && self.hello(false).is_ok() {
                    return Some(Event::Reply { command: Command::Ehlo, recipient: None, reply: r });
                }
                Some(self.fatal_quit(refused(ErrorKind::Refused)))
            }
            State::StartTls => {
                if code != 220 {
                    self.state = State::Ready;
                    return Some(Event::Failed(refused(ErrorKind::Refused)));
                }
                if more {
                    let err = refused(ErrorKind::ResponseInjection);
                    self.fatal(err);
                    return Some(Event::Error(err));
                }
                self.state = State::TlsPending;
                Some(Event::TlsHandshake)
            }
            State::Auth => {
                if code == 235 {
                    self.discard_unreleased();
                    self.authenticated = true;
                    self.state = State::Ready;
                    return Some(Event::Authenticated(r));
                }
                if code == 334 {
                    if self.auth.at < self.auth.n {
                        self.released = self.auth.ends[self.auth.at];
                        self.auth.at += 1;
                    } else {
                        // A challenge we have no answer for: cancel (RFC 4954 §4).
                        self.discard_unreleased();
                        self.compact();
                        let _ = self.command(b"*\r\n");
                    }
                    return Some(Event::Reply { command: Command::Auth, recipient: None, reply: r });
                }
                self.discard_unreleased();
                self.state = State::Ready;
                Some(Event::Failed(refused(ErrorKind::Refused)))
            }
            State::Envelope => self.envelope_reply(r, step),
            State::Bdat { last } => {
                if code != 250 {
                    let err = refused(ErrorKind::Refused);
                    return self.fail_transaction(err).or(Some(Event::Reply {
                        command: if last { Command::DataEnd } else { Command::Bdat },
                        recipient: None,
                        reply: r,
                    }));
                }
                if last {
                    self.state = State::Ready;
                    return Some(Event::Delivered { reply: r, accepted: self.tx.accepted });
                }
                self.state = State::Body;
                Some(Event::Reply { command: Command::Bdat, recipient: None, reply: r })
            }
            State::DataEnd if self.config.lmtp => Some(self.lmtp_reply(r)),
            State::DataEnd => {
                self.state = State::Ready;
                if code == 250 {
                    Some(Event::Delivered { reply: r, accepted: self.tx.accepted })
                } else {
                    Some(Event::Failed(refused(ErrorKind::Refused)))
                }
            }
            State::EmptyData => {
                self.state = State::Ready;
                Some(Event::Failed(Error { step: Step::Rcpt, kind: ErrorKind::NoValidRecipients, reply: None }))
            }
            State::Rset => {
                self.state = State::Ready;
                match self.failure.take() {
                    Some(f) => Some(Event::Failed(f)),
                    None => Some(Event::Reply { command: Command::Rset, recipient: None, reply: r }),
                }
            }
            State::Quit => {
                self.state = State::Closed;
                None
            }
            State::Ready | State::Body | State::TlsPending | State::Closed => {
                let err = refused(ErrorKind::UnexpectedReply);
                self.fatal(err);
                Some(Event::Error(err))
            }
        }
    }

    fn envelope_reply<'b>(&mut self, r: ParsedReply<'b>, step: Step) -> Option<Event<'b>> {
        let j = self.tx.next;
        self.tx.next += 1;
        let count = self.tx.count;
        let ok = r.is_success();
        if j == 0 {
            self.tx.mail_ok = ok;
            if !ok {
                let err = Error { step, kind: ErrorKind::Refused, reply: summary(&r) };
                if !self.pipelined {
                    if let Some(e) = self.fail_transaction(err) {
                        return Some(e);
                    }
                } else {
                    self.failure = Some(err);
                }
            } else if !self.pipelined {
                self.released = self.rcpt_ends[0];
            }
            return Some(Event::Reply { command: Command::Mail, recipient: None, reply: r });
        }
        if j <= count {
            let i = j - 1;
            if let Some(slot) = self.results.get_mut(i) {
                *slot = Some(RcptResult { code: r.code(), enhanced: r.enhanced() });
            }
            if ok && self.tx.mail_ok {
                self.tx.accepted += 1;
            }
            let ev = Event::Reply { command: Command::Rcpt, recipient: Some(i), reply: r };
            let usable = self.tx.mail_ok && self.tx.accepted > 0;
            if j < count {
                if !self.pipelined {
                    self.released = self.rcpt_ends[j];
                }
            } else if let Some(data_end) = self.tx.data_end {
                if !self.pipelined {
                    if usable {
                        self.released = data_end;
                    } else if let Some(e) = self.fail_transaction(self.no_valid_recipients()) {
                        return Some(e);
                    }
                }
            } else if usable {
                self.state = State::Body;
                self.deferred = Deferred::ReadyForData;
            } else {
                let f = self.failure.take().unwrap_or(self.no_valid_recipients());
                if let Some(e) = self.fail_transaction(f) {
                    return Some(e);
                }
            }
            return Some(ev);
        }
        // DATA.
        if r.code() == 354 {
            if self.tx.mail_ok && self.tx.accepted > 0 {
                self.state = State::Body;
                return Some(Event::ReadyForData);
            }
            if self.config.lmtp {
                // RFC 2033 §4.2: DATA must fail without a recipient. Ending the empty message
                // would leave an unknown number of replies to come: close without ending it.
                let err = Error { step, kind: ErrorKind::UnexpectedReply, reply: summary(&r) };
                self.fatal(err);
                return Some(Event::Error(err));
            }
            // RFC 2920 §3.1: end the empty message; its reply is a failure we report.
            self.compact();
            if self.command(b".\r\n").is_err() {
                let err = Error { step, kind: ErrorKind::Refused, reply: summary(&r) };
                return Some(self.fatal_quit(err));
            }
            self.state = State::EmptyData;
            return Some(Event::Reply { command: Command::Data, recipient: None, reply: r });
        }
        let err = match self.failure.take() {
            Some(f) => f,
            None if self.tx.accepted == 0 => self.no_valid_recipients(),
            None => Error { step, kind: ErrorKind::Refused, reply: summary(&r) },
        };
        if let Some(e) = self.fail_transaction(err) {
            return Some(e);
        }
        Some(Event::Reply { command: Command::Data, recipient: None, reply: r })
    }

    fn no_valid_recipients(&self) -> Error {
        Error { step: Step::Rcpt, kind: ErrorKind::NoValidRecipients, reply: None }
    }

    /// Drops unsent gated commands and sends RSET; `err` is reported after its reply. Returns
    /// the fatal event if even RSET does not fit (the caller did not drain the output).
    fn fail_transaction<'b>(&mut self, err: Error) -> Option<Event<'b>> {
        self.discard_unreleased();
        self.compact();
        self.failure = Some(err);
        if self.command(b"RSET\r\n").is_err() {
            self.fatal(err);
            return Some(Event::Error(err));
        }
        self.state = State::Rset;
        None
    }

    fn discard_unreleased(&mut self) {
        self.len = self.released;
        if self.sent == self.len {
            self.sent = 0;
            self.released = 0;
            self.len = 0;
        }
    }

    /// Ends the session without a QUIT.
    fn fatal(&mut self, err: Error) {
        self.discard_unreleased();
        self.error = Some(err);
        self.state = State::Closed;
        self.deferred = Deferred::Nothing;
    }

    /// Reports a fatal error to a sane server: QUIT, then close after its reply.
    fn fatal_quit<'b>(&mut self, err: Error) -> Event<'b> {
        self.discard_unreleased();
        self.compact();
        self.error = Some(err);
        self.state = if self.command(b"QUIT\r\n").is_ok() { State::Quit } else { State::Closed };
        Event::Error(err)
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
