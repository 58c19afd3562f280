//! What the client reports: an [`Event`] (with the [`Command`] a reply answers) and what to do
//! next ([`Progress`]) after each input, and each recipient's [`RcptResult`].

use crate::parse::reply::ParsedReply;
use crate::reply::EnhancedCode;

use super::Error;
#[cfg(doc)]
use super::{Client, Envelope};

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
