//! The server state machine: bytes in, [`Event`]s out, decisions in, reply bytes out.
//!
//! A [`Server`] owns no message bytes. The caller owns the input buffer and feeds it to
//! [`Server::handle_input`], which reports how many bytes it consumed and at most one [`Event`]
//! borrowing from that buffer. Some events wait for the application's decision
//! ([`Event::needs_decision`]): answer them with [`Server::accept`] or [`Server::reply`] before
//! feeding more input. Reply bytes queue in the session's output queue and leave through
//! [`Server::poll_transmit`].
//!
//! **Drain rule**: keep calling `handle_input` on the unconsumed input until it answers
//! [`Progress::NeedInput`] (or [`Progress::Closed`]), then write everything
//! [`Server::poll_transmit`] gives to the peer, and only then read the socket again. Replies to
//! pipelined commands so leave in order, in one batch (RFC 2920).
//!
//! The caller's input buffer must hold at least [`Config::min_input_buffer`] bytes: a command
//! line that is not complete stays unconsumed until its line ending arrives, and a line longer
//! than the limit is consumed and discarded up to its line ending, then answered `500 5.5.2`.
//!
//! # Memory per session
//!
//! A session is about 600 bytes of state plus two buffers, the output queue and the SASL
//! buffer, kept where the [`Buffers`] type parameter says:
//! [`Server::new`] puts both inline ([`Inline`], [`OUTPUT_BUFFER`] + [`SASL_BUFFER`] octets:
//! `size_of::<Server>()` is 13,896 bytes); [`Server::with_buffers`] takes [`Lent`] slices of
//! the caller's (an output queue of at least [`MIN_OUTPUT_BUFFER`] octets, a SASL buffer of any
//! size) or, with the `alloc` feature, `Heap` (the SASL buffer allocated only while an AUTH
//! exchange runs). `size_of::<Server<Lent>>()` and `size_of::<Server<Heap>>()` are under
//! 2 KiB. The size of the output queue changes how many pipelined replies leave per drain,
//! never which bytes leave: the core stops taking input while less than [`MIN_OUTPUT_BUFFER`]
//! octets are free ([`Progress::Flush`]). A decision whose reply does not fit the free space
//! (a long multi-line reply, or many LMTP replies in a row) fails with
//! [`ApiMisuse::ReplyTooLong`] and changes nothing: drain [`Server::poll_transmit`] and decide
//! again. A single-line reply (≤ 512 octets) and the EHLO response always fit when the decision
//! follows its event.

mod buffers;
mod commands;
mod config;
mod decisions;
mod events;
mod input;

#[cfg(feature = "alloc")]
pub use buffers::Heap;
pub use buffers::{
    sasl_buffer_for, Buffers, Inline, Lent, OutputTooSmall, MIN_OUTPUT_BUFFER, OUTPUT_BUFFER, SASL_BUFFER,
};
pub use config::{Config, HostName, Timeouts};
pub use events::{ApiMisuse, Event, HeloKind, Input, Progress};

use core::fmt::Write as _;
use core::time::Duration;

use crate::data::{BareCheck, BarePolicy, DataDecoder, DataError};
use crate::parse::{parse_command_line, Body, Command, CommandError, ForwardPath, MailParams, RcptParams, ReversePath};
use crate::reply::{BufferTooSmall, Reply};
use crate::sasl::{self, Credentials, Mechanism};

use buffers::RESERVE;
/// One step of the input loop.
#[allow(clippy::large_enum_variant)]
enum Step<'b> {
    /// Report this.
    Done(Progress<'b>),
    /// The state changed without anything to report: dispatch again on the rest of the input.
    Again,
}

/// SASL exchanges the core runs itself, or hands to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sasl {
    Plain,
    LoginUser,
    LoginPassword,
    XOAuth2,
    OAuthBearer,
    App,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Helo(HeloKind),
    Mail { smtputf8: bool, body: Option<Body> },
    Rcpt,
    DataStart { bdat: Option<(u64, bool)> },
    DataEnd,
    Auth,
    StartTls,
}

#[derive(Debug, Clone, Copy)]
struct Transaction {
    smtputf8: bool,
    body: Option<Body>,
    recipients: usize,
    /// BDAT seen in this transaction.
    chunked: bool,
    /// Octets received so far (BDAT).
    size: u64,
    /// BDAT content under [`BarePolicy::Reject`]: the bare CR/LF check, carried across chunks.
    bare: BareCheck,
}

#[derive(Debug, Clone)]
enum State {
    /// Before the greeting.
    Start,
    /// Reading command lines.
    Command,
    /// Reading SASL response lines.
    AuthExchange(Sasl),
    /// Reading DATA content.
    Data(DataDecoder),
    /// The DATA content ended; the result is reported on the next call.
    DataDone(Result<u64, DataError>),
    /// Reading a BDAT chunk.
    Bdat { remaining: u64, last: bool, discard: Discard },
    /// 220 to STARTTLS sent: no more plaintext.
    TlsPending,
    /// Over.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discard {
    /// Keep the chunk.
    No,
    /// Drop it; the reply is already queued (held until the chunk is consumed).
    Refused,
    /// Drop it: over the size limit.
    TooBig,
    /// Drop it: a bare CR or LF under [`BarePolicy::Reject`] (in this chunk, or the CR that
    /// ended the chunk before).
    Bare,
}

/// A server session. See the [module docs](self) for the run loop, and [`Buffers`] for where
/// it keeps its output queue and SASL buffer (`B`: [`Inline`] arrays unless you choose).
#[derive(Clone)]
pub struct Server<B: Buffers = Inline> {
    config: Config,
    state: State,
    pending: Option<Pending>,
    helo: Option<HeloKind>,
    tls: bool,
    authenticated: bool,
    tx: Option<Transaction>,
    errors: u32,
    junk: u32,
    /// Discarding an over-long line up to its LF, and which limit it broke.
    skipping: Option<Skip>,
    /// LMTP: DataEnd decisions still owed.
    lmtp_left: usize,
    sasl: Sasl,
    sasl_len: usize,
    /// The SASL buffer may hold decoded bytes up to here: zeroed when the exchange ends.
    sasl_dirty: usize,
    login_user_len: usize,
    /// The SASL buffer is acquired: an AUTH exchange runs.
    sasl_held: bool,
    /// Length of the output queue (`buffers.output()`).
    out_cap: usize,
    out_start: usize,
    out_len: usize,
    /// Output from here on is held back until the current BDAT chunk is consumed.
    hold: Option<usize>,
    buffers: B,
}

impl<B: Buffers> core::fmt::Debug for Server<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("state", &self.state)
            .field("pending", &self.pending)
            .field("helo", &self.helo)
            .field("tls", &self.tls)
            .field("authenticated", &self.authenticated)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

/// Which line limit an over-long line broke, for the reply sent after its LF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// The command line limit: `500 5.5.2`.
    Command,
    /// The AUTH line limit (an AUTH command or a SASL response): `500 5.5.6`.
    Auth,
}

fn is_auth_line(line: &[u8]) -> bool {
    line.len() >= 5 && line[..4].eq_ignore_ascii_case(b"AUTH") && line[4] == b' '
}

impl Server<Inline> {
    /// A new session, before the greeting, with its buffers inline ([`Inline`]: 13 KiB; see
    /// [`Server::with_buffers`] for smaller ones). Call [`Server::greet`] (or
    /// [`Server::refuse`]) first; for implicit TLS (port 465) call [`Server::tls_established`]
    /// before that.
    pub fn new(config: Config) -> Self {
        Self::build(config, Inline::new(), OUTPUT_BUFFER)
    }
}

impl<B: Buffers> Server<B> {
    /// A new session, before the greeting, keeping its output queue and SASL buffer in
    /// `buffers` (see [`Buffers`]: [`Lent`] for memory of the caller's, `Heap` with the
    /// feature `alloc`). Otherwise like [`Server::new`].
    ///
    /// # Errors
    /// [`OutputTooSmall`] when the output queue is shorter than [`MIN_OUTPUT_BUFFER`].
    pub fn with_buffers(config: Config, mut buffers: B) -> Result<Self, OutputTooSmall> {
        let len = buffers.output().len();
        if len < MIN_OUTPUT_BUFFER {
            return Err(OutputTooSmall { len });
        }
        Ok(Self::build(config, buffers, len))
    }

    /// The buffers.
    pub fn buffers(&self) -> &B {
        &self.buffers
    }

    /// The buffers, back (e.g. to give them to the next session).
    pub fn into_buffers(self) -> B {
        self.buffers
    }

    // Inlined so that `Server::new` zeroes its arrays in place, without a copy of 13 KiB.
    #[inline(always)]
    fn build(config: Config, buffers: B, out_cap: usize) -> Self {
        Self {
            config,
            state: State::Start,
            pending: None,
            helo: None,
            tls: false,
            authenticated: false,
            tx: None,
            errors: 0,
            junk: 0,
            skipping: None,
            lmtp_left: 0,
            sasl: Sasl::Plain,
            sasl_len: 0,
            sasl_dirty: 0,
            login_user_len: 0,
            sasl_held: false,
            out_cap,
            out_start: 0,
            out_len: 0,
            hold: None,
            buffers,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether TLS is active (after [`Server::tls_established`]).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether AUTH succeeded in this session.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The greeting command the client used, if any.
    pub fn helo(&self) -> Option<HeloKind> {
        self.helo
    }

    /// Whether a mail transaction (MAIL accepted) is open.
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// Recipients accepted in the current transaction.
    pub fn recipients(&self) -> usize {
        self.tx.map_or(0, |t| t.recipients)
    }

    /// Errors counted so far (4xx/5xx replies since the last delivered message).
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// Whether the session is over (drain the output, then close).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether an event waits for a decision.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether a TLS handshake is due (after the `220` to STARTTLS).
    pub fn is_tls_pending(&self) -> bool {
        matches!(self.state, State::TlsPending)
    }

    /// The timeout that applies now, or `None` while the core waits for the application.
    pub fn timeout(&self) -> Option<Duration> {
        if self.pending.is_some() {
            return None;
        }
        let t = &self.config.timeouts;
        match self.state {
            State::Start | State::Command | State::AuthExchange(_) => Some(t.command),
            State::Data(_) | State::DataDone(_) | State::Bdat { .. } => Some(t.data),
            State::TlsPending => Some(t.tls_handshake),
            State::Closed => None,
        }
    }

    /// Whether a message is being received: DATA content up to its end, a BDAT chunk (a
    /// refused one too, which the core reads and drops), or the pause between the chunks of a
    /// BDAT message (a chunk accepted, the `LAST` one not yet). The core keeps no clock: a
    /// caller that holds its client to a minimum data rate measures the rate while this holds.
    pub fn is_receiving_message(&self) -> bool {
        match self.state {
            State::Data(_) | State::DataDone(_) | State::Bdat { .. } => true,
            State::Command | State::AuthExchange(_) => self.tx.is_some_and(|t| t.chunked),
            State::Start | State::TlsPending | State::Closed => false,
        }
    }

    /// Whether an over-long command or SASL line is being discarded up to its line ending.
    /// Every other unfinished line stays unconsumed in the caller's buffer, where the caller
    /// sees it; this one was consumed as it came, yet it has begun and is not complete. For a
    /// caller that gives each line a deadline from its first byte.
    pub fn is_discarding_line(&self) -> bool {
        self.skipping.is_some()
    }

    /// The timeout fired (or a deadline of the caller's passed): queues `421 4.4.2` and closes
    /// the session.
    pub fn handle_timeout(&mut self) {
        self.close_with(Reply::TIMEOUT);
    }

    /// Graceful shutdown: queues `421 4.3.2` and closes the session.
    pub fn shutdown(&mut self) {
        self.close_with(Reply::SHUTTING_DOWN);
    }

    /// Sends the `220` greeting: `220 <hostname> <text>`.
    pub fn greet(&mut self, text: &str) -> Result<(), ApiMisuse> {
        if !matches!(self.state, State::Start) {
            return Err(ApiMisuse::Greeting);
        }
        self.write_prefixed(Reply::new(220, None, text))?;
        self.state = State::Command;
        Ok(())
    }

    /// Refuses the connection at the greeting (e.g. `554 5.3.2` or `421 4.7.0`) and closes.
    pub fn refuse(&mut self, reply: Reply<'_>) -> Result<(), ApiMisuse> {
        if !matches!(self.state, State::Start) {
            return Err(ApiMisuse::Greeting);
        }
        self.write_prefixed(reply)?;
        self.state = State::Closed;
        Ok(())
    }

    /// The TLS handshake finished: after STARTTLS this resets the session to the state before
    /// EHLO (RFC 3207 §4.2: HELO, transaction and AUTH are forgotten, STARTTLS is no longer
    /// offered). Before the greeting it marks an implicit-TLS session (RFC 8314).
    pub fn tls_established(&mut self) -> Result<(), ApiMisuse> {
        match self.state {
            State::Start => {}
            State::TlsPending => self.state = State::Command,
            _ => return Err(ApiMisuse::NoTlsPending),
        }
        self.tls = true;
        self.helo = None;
        self.tx = None;
        self.authenticated = false;
        self.skipping = None;
        Ok(())
    }

    /// Decoded credentials of the AUTH exchange the core ran (PLAIN, LOGIN, XOAUTH2,
    /// OAUTHBEARER), while its [`Event::Auth`] waits for the decision; `None` once the exchange
    /// is over (the SASL buffer is cleared and given back then).
    pub fn credentials(&self) -> Option<Credentials<'_>> {
        if !self.sasl_held {
            return None;
        }
        let data = self.sasl_bytes();
        match self.sasl {
            Sasl::Plain => sasl::parse_plain(data).ok(),
            Sasl::XOAuth2 => sasl::parse_xoauth2(data).ok(),
            Sasl::OAuthBearer => sasl::parse_oauthbearer(data).ok(),
            Sasl::LoginPassword => {
                let (user, pass) = data.split_at(self.login_user_len.min(data.len()));
                sasl::login_credentials(user, pass).ok()
            }
            Sasl::LoginUser | Sasl::App => None,
        }
    }

    /// The decoded SASL payload: the initial response with [`Event::Auth`] (empty if none), the
    /// client's answer with [`Event::AuthResponse`]; empty once the exchange is over.
    pub fn sasl_data(&self) -> &[u8] {
        self.sasl_bytes()
    }

    fn sasl_bytes(&self) -> &[u8] {
        if !self.sasl_held {
            return &[];
        }
        self.buffers.sasl().get(..self.sasl_len).unwrap_or(&[])
    }

    /// Takes the SASL buffer for an AUTH exchange (or keeps it, if a failed exchange of the
    /// same input left it here); `false` if the buffers have none to give now.
    fn take_sasl(&mut self) -> bool {
        if !self.sasl_held {
            self.sasl_held = self.buffers.acquire_sasl(sasl_buffer_for(self.config.max_auth_line));
        }
        self.sasl_held
    }

    /// Gives the SASL buffer back, its decoded bytes zeroed, once no AUTH exchange runs: not
    /// reading SASL lines and no AUTH decision pending.
    fn settle_sasl(&mut self) {
        if !self.sasl_held || matches!(self.state, State::AuthExchange(_)) || self.pending == Some(Pending::Auth) {
            return;
        }
        let buf = self.buffers.sasl_mut();
        let dirty = self.sasl_dirty.min(buf.len());
        buf[..dirty].fill(0);
        self.sasl_dirty = 0;
        self.sasl_len = 0;
        self.login_user_len = 0;
        self.sasl_held = false;
        self.buffers.release_sasl();
    }

    /// Answers a pending [`Event::Auth`] or [`Event::AuthResponse`] with a `334` challenge
    /// (base64-encoded by the core); the client's answer comes as [`Event::AuthResponse`].
    ///
    /// For a mechanism whose exchange the core runs, this is allowed after XOAUTH2 and
    /// OAUTHBEARER only, for their failure (RFC 7628 §3.2.2): the application sends the JSON
    /// error status as the challenge, the client answers with a dummy response (`%x01` for
    /// OAUTHBEARER), and the application then refuses the [`Event::AuthResponse`] with `535`.
    pub fn auth_challenge(&mut self, challenge: &[u8]) -> Result<(), ApiMisuse> {
        if self.pending != Some(Pending::Auth) || !matches!(self.sasl, Sasl::App | Sasl::XOAuth2 | Sasl::OAuthBearer) {
            return Err(ApiMisuse::NoAuthPending);
        }
        let mut b64 = [0u8; 1024];
        let n = sasl::encode_base64(challenge, &mut b64).map_err(|_| ApiMisuse::NoAuthPending)?;
        let text = core::str::from_utf8(&b64[..n]).map_err(|_| ApiMisuse::NoAuthPending)?;
        self.write(Reply::new(334, None, text))?;
        self.pending = None;
        self.state = State::AuthExchange(Sasl::App);
        Ok(())
    }

    /// Copies queued reply bytes into `out`; returns how many. Call until it returns 0.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> usize {
        let end = self.hold.unwrap_or(self.out_len);
        let n = (end - self.out_start).min(out.len());
        let queue = self.buffers.output();
        out[..n].copy_from_slice(&queue[self.out_start..self.out_start + n]);
        self.out_start += n;
        if self.out_start == self.out_len {
            self.out_start = 0;
            self.out_len = 0;
        } else if self.hold.is_none() && self.out_start > self.out_cap / 2 {
            queue.copy_within(self.out_start..self.out_len, 0);
            self.out_len -= self.out_start;
            self.out_start = 0;
        }
        n
    }

    /// Whether reply bytes wait in the queue.
    pub fn has_output(&self) -> bool {
        self.hold.unwrap_or(self.out_len) > self.out_start
    }

    fn free(&self) -> usize {
        self.out_cap - self.out_len
    }

    /// The free end of the output queue.
    fn out_free(&mut self) -> &mut [u8] {
        &mut self.buffers.output()[self.out_len..self.out_cap]
    }

    fn write(&mut self, reply: Reply<'_>) -> Result<(), BufferTooSmall> {
        let esc = self.config.capabilities.enhanced_status_codes;
        let n = reply.write(esc, self.out_free())?;
        self.out_len += n;
        Ok(())
    }

    /// Writes `code [esc] hostname text`.
    fn write_prefixed(&mut self, reply: Reply<'_>) -> Result<(), BufferTooSmall> {
        let esc = self.config.capabilities.enhanced_status_codes && reply.code != 220;
        let mut prefix = PrefixBuf::new();
        let _ = write!(prefix, "{}", self.config.hostname.as_str());
        if !reply.text.is_empty() {
            let _ = write!(prefix, " ");
        }
        let n = reply.write_with(esc, prefix.as_str(), self.out_free())?;
        self.out_len += n;
        Ok(())
    }

    /// A core reply that fits by construction (RESERVE is kept free before any input).
    fn say(&mut self, reply: Reply<'_>) {
        if self.write(reply).is_err() {
            // Unreachable while RESERVE holds; never lose sync silently: close.
            self.state = State::Closed;
        }
    }

    /// A protocol error: reply, count, maybe close with 421.
    fn fail(&mut self, reply: Reply<'_>) {
        self.say(reply);
        self.count_error();
    }

    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.config.max_errors && !matches!(self.state, State::Closed) {
            self.close_with(Reply::TOO_MANY_ERRORS);
        }
    }

    fn close_with(&mut self, reply: Reply<'_>) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.hold = None;
        if self.write_prefixed(reply).is_err() {
            // Make room: a last 421 always goes out.
            self.out_len = self.out_start;
            let _ = self.write_prefixed(reply);
        }
        self.pending = None;
        self.state = State::Closed;
        self.settle_sasl();
    }

    /// Counts a junk command; `true` if that closed the session (nothing more to answer).
    #[must_use]
    fn junk(&mut self) -> bool {
        self.junk += 1;
        if self.junk > self.config.max_junk_commands {
            self.count_error();
        }
        matches!(self.state, State::Closed)
    }
}

/// A small stack buffer for formatted reply texts.
struct PrefixBuf {
    buf: [u8; 300],
    len: usize,
}

impl PrefixBuf {
    fn new() -> Self {
        Self { buf: [0; 300], len: 0 }
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Write for PrefixBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
