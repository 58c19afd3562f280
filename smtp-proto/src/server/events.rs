//! What a session reports to its caller: events, progress, and misuse of the API.

use super::*;

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
    /// Message content, dot-unstuffed (DATA) or raw (BDAT), borrowed from the input. Content
    /// of a message that is then refused is followed by [`Event::DataAborted`] instead of
    /// [`Event::DataEnd`].
    Data(&'b [u8]),
    /// The message ended. **Decision**: accept only once the message is safely stored (`250`);
    /// with LMTP, one decision per accepted recipient, in RCPT order.
    DataEnd {
        /// Octets of content.
        size: u64,
    },
    /// The message was refused (size limit, text line limit, or a bare CR or LF under
    /// [`BarePolicy::Reject`](crate::data::BarePolicy::Reject)) and the core already replied;
    /// discard the content received so far. DATA: after the real end of the content, which
    /// the core reads on to. BDAT: at the end of the chunk where the problem showed (that
    /// BDAT's reply); the transaction is over, and the BDATs of it that the client already
    /// sent are consumed and answered `503 5.5.1`.
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
