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
mod config;

#[cfg(feature = "alloc")]
pub use buffers::Heap;
pub use buffers::{
    sasl_buffer_for, Buffers, Inline, Lent, OutputTooSmall, MIN_OUTPUT_BUFFER, OUTPUT_BUFFER, SASL_BUFFER,
};
pub use config::{Config, HostName, Timeouts};

use core::fmt::Write as _;
use core::time::Duration;

use crate::data::{BarePolicy, DataDecoder, DataError};
use crate::parse::{parse_command_line, Body, Command, CommandError, ForwardPath, MailParams, RcptParams, ReversePath};
use crate::reply::{BufferTooSmall, Reply};
use crate::sasl::{self, Credentials, Mechanism};

use buffers::RESERVE;

/// Which greeting command opened the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeloKind {
    /// `HELO`: plain SMTP, no extensions.
    Helo,
    /// `EHLO`: ESMTP.
    Ehlo,
    /// `LHLO`: LMTP.
    Lhlo,
}

/// What the core reports after [`Server::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'b> {
    /// HELO / EHLO / LHLO. **Decision**: accept (the core writes the EHLO response from the
    /// capabilities) or reject.
    Helo {
        /// The argument as sent (validate it with [`crate::parse::path::parse_domain`] if you care).
        host: &'b str,
        /// Which command.
        kind: HeloKind,
    },
    /// MAIL FROM. **Decision.** Unknown parameters are in `params.unknown`: answer
    /// `555 5.5.4` ([`Reply::UNSUPPORTED_PARAMETER`]) or accept them.
    Mail {
        /// Reverse path.
        from: ReversePath<'b>,
        /// Parameters.
        params: MailParams<'b>,
    },
    /// RCPT TO. **Decision.**
    Rcpt {
        /// Forward path.
        to: ForwardPath<'b>,
        /// Parameters.
        params: RcptParams<'b>,
    },
    /// DATA, or the first BDAT of a transaction. **Decision**: accept (`354` for DATA) or reject.
    DataStart {
        /// `true` for BDAT (CHUNKING).
        chunked: bool,
    },
    /// Message content, dot-unstuffed (DATA) or raw (BDAT), borrowed from the input.
    Data(&'b [u8]),
    /// The message ended. **Decision**: accept only once the message is safely stored (`250`);
    /// with LMTP, one decision per accepted recipient, in RCPT order.
    DataEnd {
        /// Octets of content.
        size: u64,
    },
    /// The message was refused after its real end; the core already replied.
    DataAborted {
        /// Why.
        error: DataError,
    },
    /// AUTH. **Decision.** For PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER the core ran the exchange
    /// and [`Server::credentials`] holds the decoded credentials; for other mechanisms
    /// [`Server::sasl_data`] holds the decoded initial response and the application may answer
    /// with [`Server::auth_challenge`].
    Auth {
        /// The mechanism.
        mechanism: Mechanism<'b>,
    },
    /// The client's answer to [`Server::auth_challenge`], decoded in [`Server::sasl_data`].
    /// **Decision** (or another challenge).
    AuthResponse,
    /// The client cancelled AUTH with `*`; the core replied `501 5.7.0`.
    AuthCancelled,
    /// STARTTLS. **Decision**: accept (`220`, then do the handshake and call
    /// [`Server::tls_established`]) or reject (`454 4.7.0`).
    StartTls,
    /// Plaintext that followed STARTTLS was discarded, never executed (command injection).
    PlaintextDiscarded {
        /// How many bytes.
        len: usize,
    },
    /// RSET: the transaction was dropped; the core replied `250`.
    Reset,
    /// QUIT: the core replied `221`; the session is closed.
    Quit,
}

impl Event<'_> {
    /// Whether the core waits for [`Server::accept`] / [`Server::reply`] after this event.
    pub fn needs_decision(&self) -> bool {
        matches!(
            self,
            Event::Helo { .. }
                | Event::Mail { .. }
                | Event::Rcpt { .. }
                | Event::DataStart { .. }
                | Event::DataEnd { .. }
                | Event::Auth { .. }
                | Event::AuthResponse
                | Event::StartTls
        )
    }
}

/// What to do next after [`Server::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
// Events carry typed MAIL parameters by value (no heap); one is returned per command.
#[allow(clippy::large_enum_variant)]
pub enum Progress<'b> {
    /// Handle this event, then call `handle_input` again with the rest of the input.
    Event(Event<'b>),
    /// Everything usable was consumed: drain [`Server::poll_transmit`], then read more.
    NeedInput,
    /// The output queue is full: drain [`Server::poll_transmit`], then call again.
    Flush,
    /// The session is over: drain [`Server::poll_transmit`], then close the connection.
    Closed,
}

/// The result of [`Server::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Input<'b> {
    /// Bytes of the input consumed; the caller keeps the rest and feeds it again.
    pub consumed: usize,
    /// What to do next.
    pub progress: Progress<'b>,
}

/// The caller used the API wrongly (never the peer's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiMisuse {
    /// `handle_input` while an event waits for a decision.
    DecisionPending,
    /// A decision while no event waits for one.
    NoDecisionPending,
    /// A positive reply with the wrong code for the pending event (e.g. 250 to DATA).
    WrongReplyCode,
    /// The reply does not fit the output queue: drain it, or send a shorter reply.
    ReplyTooLong,
    /// `greet`/`refuse` twice, or input before the greeting with early-talker detection off.
    Greeting,
    /// `tls_established` when no TLS handshake was due.
    NoTlsPending,
    /// `auth_challenge` when no AUTH exchange waits, or a challenge too long.
    NoAuthPending,
}

impl core::fmt::Display for ApiMisuse {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ApiMisuse::DecisionPending => "an event waits for a decision",
            ApiMisuse::NoDecisionPending => "no event waits for a decision",
            ApiMisuse::WrongReplyCode => "wrong positive reply code for this event",
            ApiMisuse::ReplyTooLong => "reply does not fit the output queue",
            ApiMisuse::Greeting => "greeting already sent, or input before the greeting",
            ApiMisuse::NoTlsPending => "no TLS handshake pending",
            ApiMisuse::NoAuthPending => "no AUTH exchange pending",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ApiMisuse {}

impl From<BufferTooSmall> for ApiMisuse {
    fn from(_: BufferTooSmall) -> Self {
        ApiMisuse::ReplyTooLong
    }
}

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

    /// The timeout fired: queues `421 4.4.2` and closes the session.
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

    /// Accepts the pending event with its standard positive reply.
    pub fn accept(&mut self) -> Result<(), ApiMisuse> {
        let reply = match self.pending.ok_or(ApiMisuse::NoDecisionPending)? {
            Pending::Helo(_) => Reply::new(250, None, ""),
            Pending::Mail { .. } => Reply::MAIL_OK,
            Pending::Rcpt => Reply::RCPT_OK,
            Pending::DataStart { .. } => Reply::DATA_GO_AHEAD,
            Pending::DataEnd => Reply::MESSAGE_OK,
            Pending::Auth => Reply::AUTH_OK,
            Pending::StartTls => Reply::STARTTLS_READY,
        };
        self.reply(reply)
    }

    /// Answers the pending event. A positive reply must have the code the event calls for
    /// (250 to HELO/EHLO/MAIL/end of data, 250–252 to RCPT, 354 to DATA, 235 to AUTH, 220 to
    /// STARTTLS); a 4xx/5xx reply refuses; `421` also closes the session. For HELO/EHLO, the
    /// text of a positive reply follows the host name on the first line.
    pub fn reply(&mut self, reply: Reply<'_>) -> Result<(), ApiMisuse> {
        let pending = self.pending.ok_or(ApiMisuse::NoDecisionPending)?;
        if !reply.is_valid() {
            return Err(ApiMisuse::WrongReplyCode);
        }
        if reply.is_positive() {
            let ok = match pending {
                Pending::Helo(_) | Pending::Mail { .. } | Pending::DataEnd => reply.code == 250,
                Pending::Rcpt => (250..=252).contains(&reply.code),
                Pending::DataStart { bdat: None } => reply.code == 354,
                Pending::DataStart { bdat: Some(_) } => true,
                Pending::Auth => reply.code == 235,
                Pending::StartTls => reply.code == 220,
            };
            if !ok {
                return Err(ApiMisuse::WrongReplyCode);
            }
            self.positive(pending, reply)?;
        } else {
            self.negative(pending, reply)?;
        }
        self.settle_sasl();
        Ok(())
    }

    fn positive(&mut self, pending: Pending, reply: Reply<'_>) -> Result<(), ApiMisuse> {
        match pending {
            Pending::Helo(kind) => {
                let n = match kind {
                    HeloKind::Helo => {
                        let mut prefixed = PrefixBuf::new();
                        let _ = write!(prefixed, "{}", self.config.hostname.as_str());
                        if !reply.text.is_empty() {
                            let _ = write!(prefixed, " ");
                        }
                        reply.write_with(false, prefixed.as_str(), self.out_free())?
                    }
                    HeloKind::Ehlo | HeloKind::Lhlo => {
                        let mut caps = self.config.capabilities;
                        if !self.tls && !self.config.allow_insecure_auth {
                            caps.auth = crate::ehlo::AuthMechanisms::none();
                        }
                        caps.write_ehlo(
                            self.config.hostname.as_str(),
                            reply.text,
                            self.config.max_message_size,
                            self.tls,
                            &mut self.buffers.output()[self.out_len..self.out_cap],
                        )?
                    }
                };
                self.out_len += n;
                self.helo = Some(kind);
                self.tx = None;
            }
            Pending::Mail { smtputf8, body } => {
                self.write(reply)?;
                self.tx = Some(Transaction { smtputf8, body, recipients: 0, chunked: false, size: 0 });
            }
            Pending::Rcpt => {
                self.write(reply)?;
                if let Some(tx) = self.tx.as_mut() {
                    tx.recipients += 1;
                }
            }
            Pending::DataStart { bdat: None } => {
                self.write(reply)?;
                let c = &self.config;
                self.state = State::Data(DataDecoder::new(c.bare_line_endings, c.max_message_size, c.max_text_line));
            }
            Pending::DataStart { bdat: Some((size, last)) } => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.chunked = true;
                }
                self.start_chunk(size, last, Discard::No);
            }
            Pending::DataEnd => {
                self.write(reply)?;
                self.errors = 0;
                self.pending = None;
                self.end_of_data_decision();
                return Ok(());
            }
            Pending::Auth => {
                self.write(reply)?;
                self.authenticated = true;
            }
            Pending::StartTls => {
                self.write(reply)?;
                self.state = State::TlsPending;
            }
        }
        self.pending = None;
        Ok(())
    }

    fn negative(&mut self, pending: Pending, reply: Reply<'_>) -> Result<(), ApiMisuse> {
        match pending {
            Pending::DataStart { bdat: Some((size, last)) } => {
                // Held back from the first byte of the refusal, set once it is written (a reply
                // that does not fit leaves everything as it was: drain, then reply again).
                let at = self.out_len;
                self.write(reply)?;
                self.hold = Some(at);
                self.start_chunk(size, last, Discard::Refused);
            }
            _ => self.write(reply)?,
        }
        self.pending = None;
        if pending == Pending::DataEnd {
            self.end_of_data_decision();
        }
        if reply.code == 421 {
            self.state = State::Closed;
        } else {
            self.count_error();
        }
        Ok(())
    }

    fn end_of_data_decision(&mut self) {
        self.lmtp_left = self.lmtp_left.saturating_sub(1);
        if self.lmtp_left > 0 {
            self.pending = Some(Pending::DataEnd);
        } else {
            self.tx = None;
        }
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

    /// Feeds input. See the [module docs](self) for the loop.
    pub fn handle_input<'b>(&mut self, input: &'b [u8]) -> Result<Input<'b>, ApiMisuse> {
        let r = self.input(input);
        if self.sasl_held {
            self.settle_sasl();
        }
        r
    }

    fn input<'b>(&mut self, input: &'b [u8]) -> Result<Input<'b>, ApiMisuse> {
        if self.pending.is_some() {
            return Err(ApiMisuse::DecisionPending);
        }
        // Backpressure: take input only with RESERVE free, so that whatever it makes the core
        // write fits. Not while a refused BDAT chunk is skipped: that writes nothing, and its
        // reply, held back in the queue until the chunk is consumed, could not drain to make
        // room (the session would ask for a flush forever).
        if self.free() < RESERVE && self.hold.is_none() && !matches!(self.state, State::Closed) {
            return Ok(Input { consumed: 0, progress: Progress::Flush });
        }
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            let (n, step) = match self.state {
                State::Closed => (rest.len(), Step::Done(Progress::Closed)),
                State::Start => {
                    if rest.is_empty() {
                        (0, Step::Done(Progress::NeedInput))
                    } else if self.config.reject_early_talkers {
                        self.close_with(Reply::SYNC_ERROR);
                        (rest.len(), Step::Done(Progress::Closed))
                    } else {
                        return Err(ApiMisuse::Greeting);
                    }
                }
                State::TlsPending if rest.is_empty() => (0, Step::Done(Progress::NeedInput)),
                State::TlsPending => {
                    (rest.len(), Step::Done(Progress::Event(Event::PlaintextDiscarded { len: rest.len() })))
                }
                State::Data(_) => self.data(rest),
                State::DataDone(result) => (0, Step::Done(self.data_done(result))),
                State::Bdat { .. } => self.bdat(rest),
                State::Command | State::AuthExchange(_) => self.lines(rest),
            };
            consumed += n;
            match step {
                Step::Done(progress) => return Ok(Input { consumed, progress }),
                Step::Again => {}
            }
        }
    }

    fn data<'b>(&mut self, input: &'b [u8]) -> (usize, Step<'b>) {
        let mut consumed = 0;
        loop {
            let State::Data(decoder) = &mut self.state else {
                return (consumed, Step::Again);
            };
            let d = decoder.decode(&input[consumed..]);
            consumed += d.consumed;
            if let Some(result) = d.end {
                self.state = State::DataDone(result);
            }
            if !d.body.is_empty() {
                return (consumed, Step::Done(Progress::Event(Event::Data(d.body))));
            }
            if d.end.is_some() {
                return (consumed, Step::Again);
            }
            if consumed >= input.len() || d.consumed == 0 {
                return (consumed, Step::Done(Progress::NeedInput));
            }
        }
    }

    fn data_done<'b>(&mut self, result: Result<u64, DataError>) -> Progress<'b> {
        self.state = State::Command;
        match result {
            Ok(size) => self.data_end(size),
            Err(error) => {
                self.tx = None;
                self.fail(match error {
                    DataError::TooBig => Reply::TOO_BIG,
                    DataError::LineTooLong => Reply::TEXT_LINE_TOO_LONG,
                    _ => Reply::BARE_LINE_ENDING,
                });
                Progress::Event(Event::DataAborted { error })
            }
        }
    }

    fn data_end<'b>(&mut self, size: u64) -> Progress<'b> {
        self.lmtp_left = if self.config.lmtp { self.recipients() } else { 1 };
        self.pending = Some(Pending::DataEnd);
        Progress::Event(Event::DataEnd { size })
    }

    fn start_chunk(&mut self, size: u64, last: bool, discard: Discard) {
        self.state = State::Bdat { remaining: size, last, discard };
    }

    fn bdat<'b>(&mut self, input: &'b [u8]) -> (usize, Step<'b>) {
        let State::Bdat { remaining, last, discard } = &mut self.state else {
            return (0, Step::Again);
        };
        if *remaining == 0 {
            let (last, discard) = (*last, *discard);
            self.state = State::Command;
            self.hold = None;
            let step = match discard {
                Discard::Refused => Step::Again,
                Discard::TooBig => {
                    self.tx = None;
                    self.fail(Reply::TOO_BIG.with_text("Chunk exceeds message size limit"));
                    Step::Done(Progress::Event(Event::DataAborted { error: DataError::TooBig }))
                }
                Discard::No if last => Step::Done(self.data_end(self.tx.map_or(0, |t| t.size))),
                Discard::No => {
                    let mut text = PrefixBuf::new();
                    let _ = write!(text, "{} octets received", self.tx.map_or(0, |t| t.size));
                    self.say(Reply::OK.with_text(text.as_str()));
                    Step::Again
                }
            };
            return (0, step);
        }
        let n = (*remaining).min(input.len() as u64) as usize;
        if n == 0 {
            return (0, Step::Done(Progress::NeedInput));
        }
        *remaining -= n as u64;
        if *discard == Discard::No {
            let limit = self.config.max_message_size.unwrap_or(u64::MAX);
            let mut keep = n;
            if let Some(tx) = self.tx.as_mut() {
                // Pass content up to the limit exactly, so that any split reports the same.
                let room = limit.saturating_sub(tx.size);
                if n as u64 > room {
                    keep = room as usize;
                    *discard = Discard::TooBig;
                }
                tx.size += keep as u64;
            }
            if keep == 0 {
                return (n, Step::Again);
            }
            return (n, Step::Done(Progress::Event(Event::Data(&input[..keep]))));
        }
        (n, Step::Again)
    }

    fn lines<'b>(&mut self, input: &'b [u8]) -> (usize, Step<'b>) {
        let mut consumed = 0;
        loop {
            if self.pending.is_some() {
                return (consumed, Step::Done(Progress::NeedInput));
            }
            if !matches!(self.state, State::Command | State::AuthExchange(_)) {
                // BDAT chunk, closed...: let the dispatcher go on with the rest.
                return (consumed, Step::Again);
            }
            if self.free() < RESERVE {
                return (consumed, Step::Done(Progress::Flush));
            }
            let rest = &input[consumed..];
            let in_auth = matches!(self.state, State::AuthExchange(_));
            if let Some(skip) = self.skipping {
                let Some(lf) = memchr::memchr(b'\n', rest) else {
                    return (input.len(), Step::Done(Progress::NeedInput));
                };
                consumed += lf + 1;
                self.skipping = None;
                if in_auth {
                    self.state = State::Command;
                }
                self.fail(match skip {
                    Skip::Auth => Reply::AUTH_LINE_TOO_LONG,
                    Skip::Command => Reply::LINE_TOO_LONG,
                });
                continue;
            }
            // An AUTH command line and the SASL responses after it have the AUTH line limit,
            // every other command line the command line limit.
            let auth_line = in_auth || is_auth_line(rest);
            let limit = if auth_line { self.config.max_auth_line } else { self.config.max_command_line };
            let window = &rest[..rest.len().min(limit)];
            let Some(lf) = memchr::memchr(b'\n', window) else {
                if rest.len() >= limit {
                    // Too long: drop what we have of it and skip to its LF, never buffering it.
                    self.skipping = Some(if auth_line { Skip::Auth } else { Skip::Command });
                    consumed += window.len();
                    continue;
                }
                return (consumed, Step::Done(Progress::NeedInput));
            };
            consumed += lf + 1;
            let line = &rest[..lf];
            let (line, bare_lf) = match line.strip_suffix(b"\r") {
                Some(l) => (l, false),
                None => (line, true),
            };
            if bare_lf && self.config.bare_line_endings == BarePolicy::Reject {
                if in_auth {
                    self.state = State::Command;
                }
                self.fail(Reply::COMMAND_BARE_LF);
                continue;
            }
            if let State::AuthExchange(step) = self.state {
                if let Some(ev) = self.auth_line(step, line) {
                    return (consumed, Step::Done(Progress::Event(ev)));
                }
                continue;
            }
            let more = consumed < input.len();
            if let Some(ev) = self.command(parse_command_line(line), more) {
                return (consumed, Step::Done(Progress::Event(ev)));
            }
        }
    }

    /// One command line. Returns the event to report, if any.
    fn command<'b>(&mut self, parsed: Result<Command<'b>, CommandError>, more_input: bool) -> Option<Event<'b>> {
        let cmd = match parsed {
            Ok(cmd) => cmd,
            Err(CommandError::Forbidden) => {
                self.close_with(Reply::FORBIDDEN_COMMAND);
                return None;
            }
            Err(e) => {
                self.fail(e.reply());
                return None;
            }
        };
        let c = self.config;
        let caps = c.capabilities;
        let needs_tls = c.require_tls && !self.tls;
        match cmd {
            Command::Helo { host } | Command::Ehlo { host } | Command::Lhlo { host } => {
                let kind = match cmd {
                    Command::Helo { .. } => HeloKind::Helo,
                    Command::Ehlo { .. } => HeloKind::Ehlo,
                    _ => HeloKind::Lhlo,
                };
                if c.lmtp != (kind == HeloKind::Lhlo) {
                    self.fail(Reply::UNRECOGNIZED);
                    return None;
                }
                if self.helo.is_some() && self.junk() {
                    return None;
                }
                self.pending = Some(Pending::Helo(kind));
                Some(Event::Helo { host, kind })
            }
            Command::Mail { from, params } => {
                let reply = if self.helo.is_none() {
                    Reply::NEED_HELO
                } else if self.tx.is_some() {
                    Reply::NESTED_MAIL
                } else if needs_tls {
                    Reply::TLS_REQUIRED
                } else if c.require_auth && !self.authenticated {
                    Reply::AUTH_REQUIRED
                } else if let Some(r) = self.check_mail_params(&from, &params) {
                    r
                } else {
                    self.pending = Some(Pending::Mail { smtputf8: params.smtputf8, body: params.body });
                    return Some(Event::Mail { from, params });
                };
                self.fail(reply);
                None
            }
            Command::Rcpt { to, params } => {
                let reply = match self.tx {
                    None if self.helo.is_none() => Reply::NEED_HELO,
                    None => Reply::NEED_MAIL,
                    Some(_) if needs_tls => Reply::TLS_REQUIRED,
                    Some(tx) if tx.recipients >= c.max_recipients => Reply::TOO_MANY_RECIPIENTS,
                    Some(tx) if !tx.smtputf8 && matches!(to, ForwardPath::Mailbox(m) if m.needs_smtputf8()) => {
                        Reply::NEED_SMTPUTF8
                    }
                    Some(_) if !caps.dsn && (params.notify.is_some() || params.orcpt.is_some()) => {
                        Reply::UNSUPPORTED_PARAMETER
                    }
                    Some(_) => {
                        self.pending = Some(Pending::Rcpt);
                        return Some(Event::Rcpt { to, params });
                    }
                };
                self.fail(reply);
                None
            }
            Command::Data => {
                let reply = match self.tx {
                    None if self.helo.is_none() => Reply::NEED_HELO,
                    None => Reply::NEED_MAIL,
                    Some(tx) if tx.chunked => Reply::DATA_AFTER_BDAT,
                    Some(tx) if tx.body == Some(Body::BinaryMime) => Reply::DATA_AFTER_BINARYMIME,
                    Some(tx) if tx.recipients == 0 => Reply::NO_VALID_RECIPIENTS,
                    Some(_) if more_input && c.reject_pipelined_data => {
                        self.close_with(Reply::SYNC_ERROR);
                        return None;
                    }
                    Some(_) => {
                        self.pending = Some(Pending::DataStart { bdat: None });
                        return Some(Event::DataStart { chunked: false });
                    }
                };
                self.fail(reply);
                None
            }
            Command::Bdat { size, last } => {
                if !caps.chunking {
                    self.close_with(Reply::BDAT_NOT_OFFERED);
                    return None;
                }
                let refusal = match self.tx {
                    None if self.helo.is_none() => Some(Reply::NEED_HELO),
                    None => Some(Reply::NEED_MAIL),
                    Some(_) if needs_tls => Some(Reply::TLS_REQUIRED),
                    Some(tx) if tx.recipients == 0 => Some(Reply::NO_VALID_RECIPIENTS),
                    _ => None,
                };
                if let Some(reply) = refusal {
                    // The chunk follows regardless: skip it, then answer.
                    self.hold = Some(self.out_len);
                    self.say(reply);
                    self.start_chunk(size, last, Discard::Refused);
                    self.count_error();
                    return None;
                }
                if self.tx.is_some_and(|t| t.chunked) {
                    self.start_chunk(size, last, Discard::No);
                    return None;
                }
                self.pending = Some(Pending::DataStart { bdat: Some((size, last)) });
                Some(Event::DataStart { chunked: true })
            }
            Command::Rset => {
                if self.junk() {
                    return None;
                }
                self.tx = None;
                self.say(Reply::RESET_OK);
                Some(Event::Reset)
            }
            Command::Noop => {
                if !self.junk() {
                    self.say(Reply::OK);
                }
                None
            }
            Command::Quit => {
                self.say_prefixed(Reply::BYE);
                self.state = State::Closed;
                Some(Event::Quit)
            }
            Command::Vrfy { .. } => {
                if self.junk() {
                    return None;
                }
                if needs_tls {
                    self.fail(Reply::TLS_REQUIRED);
                } else {
                    self.say(Reply::VRFY_CANNOT);
                }
                None
            }
            Command::Expn { .. } => {
                if self.junk() {
                    return None;
                }
                self.fail(if needs_tls { Reply::TLS_REQUIRED } else { Reply::NOT_IMPLEMENTED });
                None
            }
            Command::Help { .. } => {
                if !self.junk() {
                    self.say(Reply::HELP);
                }
                None
            }
            Command::StartTls => {
                let reply = if !caps.starttls && !self.tls {
                    Reply::NOT_IMPLEMENTED
                } else if self.tls {
                    Reply::TLS_ALREADY_ACTIVE
                } else if self.helo.is_none() {
                    Reply::NEED_HELO
                } else if self.tx.is_some() {
                    Reply::AUTH_IN_TRANSACTION
                } else {
                    self.pending = Some(Pending::StartTls);
                    return Some(Event::StartTls);
                };
                self.fail(reply);
                None
            }
            Command::Auth { mechanism, initial_response } => self.auth(mechanism, initial_response),
        }
    }

    fn say_prefixed(&mut self, reply: Reply<'_>) {
        if self.write_prefixed(reply).is_err() {
            self.state = State::Closed;
        }
    }

    fn check_mail_params(&self, from: &ReversePath<'_>, p: &MailParams<'_>) -> Option<Reply<'static>> {
        let caps = &self.config.capabilities;
        if let (Some(size), Some(limit)) = (p.size, self.config.max_message_size) {
            if size > limit {
                return Some(Reply::TOO_BIG);
            }
        }
        let unsupported = (p.smtputf8 && !caps.smtputf8)
            || (p.body == Some(Body::EightBitMime) && !caps.eightbitmime)
            || (p.body == Some(Body::BinaryMime) && !(caps.binarymime && caps.chunking))
            || ((p.ret.is_some() || p.envid.is_some()) && !caps.dsn)
            || (p.requiretls && !(caps.requiretls && self.tls))
            || (p.mt_priority.is_some() && !caps.mt_priority)
            || ((p.hold_for.is_some() || p.hold_until.is_some()) && caps.future_release.is_none())
            || (p.by.is_some() && caps.deliver_by.is_none())
            || (p.auth.is_some() && caps.auth.is_empty());
        if unsupported {
            return Some(Reply::UNSUPPORTED_PARAMETER);
        }
        if !p.smtputf8 && matches!(from, ReversePath::Mailbox(m) if m.needs_smtputf8()) {
            return Some(Reply::NEED_SMTPUTF8);
        }
        None
    }

    fn auth<'b>(&mut self, name: &'b str, initial: Option<&'b str>) -> Option<Event<'b>> {
        let c = &self.config;
        let mechanism = Mechanism::from_name(name);
        let reply = if self.helo.is_none() {
            Reply::NEED_HELO
        } else if c.capabilities.auth.is_empty() {
            Reply::NOT_IMPLEMENTED
        } else if c.require_tls && !self.tls {
            Reply::TLS_REQUIRED
        } else if self.authenticated {
            Reply::ALREADY_AUTHENTICATED
        } else if self.tx.is_some() {
            Reply::AUTH_IN_TRANSACTION
        } else if !self.tls && !c.allow_insecure_auth {
            Reply::AUTH_NEEDS_TLS
        } else if !mechanism.bit().is_some_and(|b| c.capabilities.auth.contains(b)) {
            Reply::AUTH_UNKNOWN_MECHANISM
        } else if !self.take_sasl() {
            // No SASL buffer to be had now (see `Buffers::acquire_sasl`).
            Reply::AUTH_TEMPFAIL
        } else {
            let step = match mechanism {
                Mechanism::Plain => Sasl::Plain,
                Mechanism::Login => Sasl::LoginUser,
                Mechanism::XOAuth2 => Sasl::XOAuth2,
                Mechanism::OAuthBearer => Sasl::OAuthBearer,
                _ => Sasl::App,
            };
            self.sasl = step;
            self.sasl_len = 0;
            self.login_user_len = 0;
            return match initial {
                None if step == Sasl::App => {
                    self.pending = Some(Pending::Auth);
                    Some(Event::Auth { mechanism })
                }
                None => {
                    self.say(match step {
                        Sasl::LoginUser => Reply::new(334, None, "VXNlcm5hbWU6"),
                        _ => Reply::AUTH_CONTINUE,
                    });
                    self.state = State::AuthExchange(step);
                    None
                }
                Some(ir) => self.auth_line(step, ir.as_bytes()).map(|ev| match ev {
                    Event::Auth { .. } | Event::AuthResponse => Event::Auth { mechanism },
                    other => other,
                }),
            };
        };
        self.fail(reply);
        None
    }

    /// A SASL response line (or the initial response) for `step`.
    fn auth_line<'b>(&mut self, step: Sasl, line: &[u8]) -> Option<Event<'b>> {
        self.state = State::Command;
        if line == b"*" {
            self.fail(Reply::AUTH_CANCELLED);
            return Some(Event::AuthCancelled);
        }
        let start = if step == Sasl::LoginPassword { self.login_user_len } else { 0 };
        let decoded = if line == b"=" {
            Ok(0)
        } else {
            // Decoding writes at most as many octets as the line has, even when it fails.
            self.sasl_dirty = self.sasl_dirty.max(start.saturating_add(line.len()));
            sasl::decode_base64(line, self.buffers.sasl_mut().get_mut(start..).unwrap_or(&mut []))
        };
        let n = match decoded {
            Ok(n) => n,
            Err(sasl::SaslError::TooLong) => {
                self.fail(Reply::AUTH_LINE_TOO_LONG);
                return None;
            }
            Err(_) => {
                self.fail(Reply::AUTH_BAD_BASE64);
                return None;
            }
        };
        self.sasl_len = start + n;
        self.sasl = step;
        match step {
            Sasl::LoginUser => {
                self.login_user_len = n;
                self.say(Reply::new(334, None, "UGFzc3dvcmQ6"));
                self.state = State::AuthExchange(Sasl::LoginPassword);
                None
            }
            Sasl::App => {
                self.pending = Some(Pending::Auth);
                Some(Event::AuthResponse)
            }
            _ => {
                if self.credentials().is_none() {
                    self.fail(Reply::AUTH_BAD_BASE64.with_text("Malformed authentication data"));
                    return None;
                }
                self.pending = Some(Pending::Auth);
                Some(Event::Auth {
                    mechanism: match step {
                        Sasl::Plain => Mechanism::Plain,
                        Sasl::XOAuth2 => Mechanism::XOAuth2,
                        Sasl::OAuthBearer => Mechanism::OAuthBearer,
                        _ => Mechanism::Login,
                    },
                })
            }
        }
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
