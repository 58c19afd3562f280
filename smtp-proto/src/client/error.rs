//! What can go wrong on the client side: the peer's replies ([`Error`]) and the caller's
//! requests ([`ApiError`]).

use core::fmt;

use crate::parse::reply::{ParsedReply, ReplyError};
use crate::reply::EnhancedCode;

/// Bytes of the first reply line kept in a [`ReplySummary`].
pub const SUMMARY_TEXT: usize = 128;

/// A server reply copied out of the input: code, enhanced code and the start of the first line.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplySummary {
    /// The reply code.
    pub code: u16,
    /// The enhanced status code, if the reply had one.
    pub enhanced: Option<EnhancedCode>,
    text: [u8; SUMMARY_TEXT],
    text_len: u8,
}

impl ReplySummary {
    /// Copies the code, enhanced code and up to [`SUMMARY_TEXT`] bytes of the first line's text.
    pub fn new(reply: &ParsedReply<'_>) -> Self {
        let src = reply.first_text();
        let n = src.len().min(SUMMARY_TEXT);
        let mut text = [0u8; SUMMARY_TEXT];
        text[..n].copy_from_slice(&src[..n]);
        Self { code: reply.code(), enhanced: reply.enhanced(), text, text_len: n as u8 }
    }

    /// The first line's text (its longest UTF-8 prefix, cut at [`SUMMARY_TEXT`] bytes).
    pub fn text(&self) -> &str {
        let b = &self.text[..usize::from(self.text_len)];
        match core::str::from_utf8(b) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or_default(),
        }
    }
}

impl fmt::Debug for ReplySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplySummary")
            .field("code", &self.code)
            .field("enhanced", &self.enhanced)
            .field("text", &self.text())
            .finish()
    }
}

impl fmt::Display for ReplySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        write!(f, " {}", self.text())
    }
}

/// The step of the session an [`Error`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Waiting for the `220` greeting.
    Greeting,
    /// EHLO.
    Ehlo,
    /// HELO (the fallback after EHLO was refused with 500/502).
    Helo,
    /// LHLO (LMTP, RFC 2033).
    Lhlo,
    /// STARTTLS, or the TLS handshake after it.
    StartTls,
    /// AUTH.
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA (waiting for 354).
    Data,
    /// Sending the content (DATA or BDAT).
    Body,
    /// The reply after the end of data or to a BDAT chunk.
    DataEnd,
    /// RSET.
    Rset,
    /// QUIT.
    Quit,
    /// No command outstanding.
    Idle,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The server refused (4xx/5xx, or an unexpected positive code); see [`Error::reply`].
    Refused,
    /// The server's reply does not parse; the session is over.
    Malformed(ReplyError),
    /// Bytes followed the `220` to STARTTLS before the TLS handshake (response injection,
    /// the CVE-2011-0411 class); the session is over.
    ResponseInjection,
    /// No recipient was accepted, so no content was sent.
    NoValidRecipients,
    /// The caller reported that the timeout of this step fired.
    Timeout,
    /// A reply arrived while no command was outstanding.
    UnexpectedReply,
    /// A bare CR or LF in the content under [`crate::data::BarePolicy::Reject`]: the message
    /// cannot be ended safely; close the connection (nothing is delivered).
    BareLineEnding,
}

/// A failed step, with the server's reply when there was one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Error {
    /// Which step.
    pub step: Step,
    /// What happened.
    pub kind: ErrorKind,
    /// The server's reply (code, enhanced code, start of its text), if any.
    pub reply: Option<ReplySummary>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} failed: {:?}", self.step, self.kind)?;
        if let Some(r) = &self.reply {
            write!(f, " ({r})")?;
        }
        Ok(())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// A command argument, named in [`ApiError::ForbiddenCharacter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Argument {
    /// The EHLO/HELO name.
    Hostname,
    /// The reverse path (MAIL FROM).
    Sender,
    /// A forward path (RCPT TO), by index.
    Recipient(usize),
    /// `ENVID`.
    EnvId,
    /// `ORCPT` of a recipient, by index.
    Orcpt(usize),
    /// AUTH credentials.
    Credentials,
}

/// An extension the request needs and the server did not offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Extension {
    /// STARTTLS.
    StartTls,
    /// This AUTH mechanism.
    Auth,
    /// SMTPUTF8 (a non-ASCII address).
    SmtpUtf8,
    /// 8BITMIME.
    EightBitMime,
    /// REQUIRETLS (RFC 8689).
    RequireTls,
}

/// The caller's request was refused; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiError {
    /// Not possible in the current state (e.g. `send_mail` while a command is outstanding,
    /// `send_body` before [`crate::client::Event::ReadyForData`]).
    NotReady,
    /// The server does not offer what this needs.
    NotOffered(Extension),
    /// A CR, LF, NUL, other control character (or `<`/`>` in an address) in an argument:
    /// command injection refused before anything was written.
    ForbiddenCharacter(Argument),
    /// The declared message size exceeds the server's `SIZE` limit (RFC 1870).
    SizeExceeded {
        /// The declared size.
        size: u64,
        /// The server's limit.
        limit: u64,
    },
    /// No recipients.
    NoRecipients,
    /// More recipients than the client's capacity `N`.
    TooManyRecipients,
    /// The commands do not fit the output buffer (too many or too long arguments).
    TooLong,
    /// The output buffer is full: drain [`crate::client::Client::poll_transmit`] and call
    /// again.
    OutputFull,
    /// `tls_established` while no handshake is due.
    NoTlsPending,
    /// A bare CR or LF in the content under [`crate::data::BarePolicy::Reject`]; the session
    /// is over (see [`ErrorKind::BareLineEnding`]).
    BareLineEnding,
    /// An `ENVID` or `ORCPT` that is empty, or longer once xtext-encoded than RFC 3461 allows
    /// (100 characters for `ENVID`, 500 for the whole `ORCPT` value): a server would refuse it.
    BadParameter(Argument),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::NotReady => f.write_str("not possible in the current state"),
            ApiError::NotOffered(e) => write!(f, "server does not offer {e:?}"),
            ApiError::ForbiddenCharacter(a) => write!(f, "forbidden character in {a:?}"),
            ApiError::SizeExceeded { size, limit } => write!(f, "size {size} exceeds the server's limit {limit}"),
            ApiError::NoRecipients => f.write_str("no recipients"),
            ApiError::TooManyRecipients => f.write_str("too many recipients"),
            ApiError::TooLong => f.write_str("commands do not fit the output buffer"),
            ApiError::OutputFull => f.write_str("output buffer full: drain it first"),
            ApiError::NoTlsPending => f.write_str("no TLS handshake pending"),
            ApiError::BareLineEnding => f.write_str("bare CR or LF in content"),
            ApiError::BadParameter(a) => write!(f, "{a:?} empty or too long (RFC 3461)"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ApiError {}
