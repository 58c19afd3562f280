//! What a session gives back: replies, per-recipient results, errors.

use std::fmt;
use std::io;

use super::MAX_REPLY_TEXT;
use smtp_proto::client::{self as core, ApiError, ErrorKind, ReplySummary, Step};
use smtp_proto::parse::reply::ParsedReply;
use smtp_proto::reply::EnhancedCode;

/// A server reply, owned: code, enhanced status code and text (lines joined by a space,
/// control characters replaced).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    /// The reply code.
    pub code: u16,
    /// The enhanced status code (RFC 3463), if any.
    pub enhanced: Option<EnhancedCode>,
    /// The text.
    pub text: String,
}

impl Reply {
    pub(crate) fn from_parsed(r: &ParsedReply<'_>) -> Self {
        let mut text = String::new();
        for line in r.text_lines() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&clean(&String::from_utf8_lossy(line)));
            if text.len() > MAX_REPLY_TEXT {
                let mut cut = MAX_REPLY_TEXT;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push_str("...");
                break;
            }
        }
        Self { code: r.code(), enhanced: r.enhanced(), text }
    }

    fn from_summary(r: &ReplySummary) -> Self {
        Self { code: r.code, enhanced: r.enhanced, text: clean(r.text()) }
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }
}

/// Control characters from a server never reach a terminal.
pub(super) fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// The server's answer to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecipientResult {
    /// The address.
    pub address: String,
    /// The reply to its RCPT; `None` if none arrived (the transaction failed before).
    pub reply: Option<Reply>,
}

impl RecipientResult {
    /// Whether the RCPT was accepted (2xx).
    pub fn is_accepted(&self) -> bool {
        self.reply.as_ref().is_some_and(|r| r.code / 100 == 2)
    }

    /// Whether it was refused with a 4xx (try again later).
    pub fn is_transient(&self) -> bool {
        self.reply.as_ref().is_some_and(Reply::is_transient)
    }
}

/// `b@y: accepted 250 2.1.5 OK` / `c@z: refused 550 5.1.1 user unknown`.
impl fmt::Display for RecipientResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reply {
            Some(r) if self.is_accepted() => write!(f, "{}: accepted {r}", self.address),
            Some(r) if r.is_transient() => write!(f, "{}: deferred {r}", self.address),
            Some(r) => write!(f, "{}: refused {r}", self.address),
            None => write!(f, "{}: not attempted", self.address),
        }
    }
}

/// A message the server took: its reply to the end of data and each recipient's result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// The reply to the end of data (`250 2.0.0 queued as ...`).
    pub reply: Reply,
    /// Each recipient, in envelope order; the accepted ones got the message.
    pub recipients: Vec<RecipientResult>,
}

impl Delivery {
    /// Whether every recipient was accepted.
    pub fn all_accepted(&self) -> bool {
        self.recipients.iter().all(RecipientResult::is_accepted)
    }

    /// The recipients that were accepted.
    pub fn accepted(&self) -> impl Iterator<Item = &RecipientResult> {
        self.recipients.iter().filter(|r| r.is_accepted())
    }

    /// The recipients that were refused (4xx or 5xx).
    pub fn refused(&self) -> impl Iterator<Item = &RecipientResult> {
        self.recipients.iter().filter(|r| !r.is_accepted())
    }
}

/// What failed, at which step, with the server's reply when there was one.
#[derive(Debug)]
#[non_exhaustive]
pub enum SendError {
    /// The request is invalid (a control character in an address, no recipients...); nothing
    /// was sent.
    Invalid(String),
    /// The server's address does not resolve or no address accepted a connection.
    Connect {
        /// `host:port`.
        server: String,
        /// The last error.
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    Io {
        /// During this step.
        step: Step,
        /// The error.
        source: io::Error,
    },
    /// The server closed the connection.
    Closed {
        /// During this step.
        step: Step,
    },
    /// The server did not answer in time (the core's timeout for this step).
    Timeout {
        /// The step.
        step: Step,
    },
    /// TLS is required and the server does not offer STARTTLS.
    StartTlsNotOffered,
    /// The TLS handshake failed (e.g. the certificate does not verify).
    Tls(io::Error),
    /// Bytes followed the `220` to STARTTLS before the handshake: response injection
    /// (CVE-2011-0411 class). Nothing more was sent.
    ResponseInjection,
    /// AUTH was requested and the server offers neither PLAIN nor LOGIN (here: what it offers).
    AuthNotOffered(String),
    /// AUTH was requested over a connection without TLS and
    /// [`SendOptions::allow_cleartext_auth`](super::SendOptions::allow_cleartext_auth) is off; nothing was sent.
    CleartextAuth,
    /// A step was refused by the server (`RCPT TO:<x@y> refused: 550 5.1.1 user unknown`).
    Refused {
        /// The command (`MAIL FROM:<a@b>`, `STARTTLS`, `AUTH PLAIN`, `DATA`, ...).
        command: String,
        /// The server's reply.
        reply: Reply,
    },
    /// No recipient was accepted: each one's reply.
    NoValidRecipients(Vec<RecipientResult>),
    /// The core refused the request (SIZE exceeded, an extension the message needs is not
    /// offered...); nothing of it was sent.
    Request(ApiError),
    /// The server broke the protocol (a malformed reply...).
    Protocol(Box<core::Error>),
    /// Reading the message failed.
    Input(io::Error),
}

impl SendError {
    /// Whether trying again later may succeed: a 4xx, a connection problem, a timeout, a TLS
    /// failure, a broken server. (`EX_TEMPFAIL` in the program.)
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::Connect { .. }
            | SendError::Io { .. }
            | SendError::Closed { .. }
            | SendError::Timeout { .. }
            | SendError::StartTlsNotOffered
            | SendError::Tls(_)
            | SendError::ResponseInjection
            | SendError::Protocol(_) => true,
            SendError::Refused { reply, .. } => reply.is_transient(),
            SendError::NoValidRecipients(rs) => rs.iter().any(RecipientResult::is_transient),
            SendError::Invalid(_)
            | SendError::AuthNotOffered(_)
            | SendError::CleartextAuth
            | SendError::Request(_)
            | SendError::Input(_) => false,
        }
    }

    /// The server's reply, when the error carries one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            SendError::Refused { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

/// A step as a word for messages.
pub(super) fn step_name(step: Step) -> &'static str {
    match step {
        Step::Greeting => "the greeting",
        Step::Ehlo => "EHLO",
        Step::Helo => "HELO",
        Step::Lhlo => "LHLO",
        Step::StartTls => "STARTTLS",
        Step::Auth => "AUTH",
        Step::Mail => "MAIL FROM",
        Step::Rcpt => "RCPT TO",
        Step::Data => "DATA",
        Step::Body => "sending the message",
        Step::DataEnd => "the end of data",
        Step::Rset => "RSET",
        Step::Quit => "QUIT",
        _ => "an idle moment",
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Invalid(what) => write!(f, "invalid request: {what}"),
            SendError::Connect { server, source } => write!(f, "cannot connect to {server}: {source}"),
            SendError::Io { step, source } => write!(f, "connection failed during {}: {source}", step_name(*step)),
            SendError::Closed { step } => write!(f, "server closed the connection during {}", step_name(*step)),
            SendError::Timeout { step } => write!(f, "timeout waiting for the reply to {}", step_name(*step)),
            SendError::StartTlsNotOffered => f.write_str("TLS is required and the server does not offer STARTTLS"),
            SendError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            SendError::ResponseInjection => {
                f.write_str("STARTTLS response injection: the server sent more bytes after its 220 (session aborted)")
            }
            SendError::AuthNotOffered(offered) if offered.is_empty() => {
                f.write_str("AUTH requested but the server does not offer AUTH")
            }
            SendError::AuthNotOffered(offered) => {
                write!(f, "AUTH requested but the server offers neither PLAIN nor LOGIN (offers: {offered})")
            }
            SendError::CleartextAuth => {
                f.write_str("AUTH refused: the connection is not encrypted (the password would go in clear text)")
            }
            SendError::Refused { command, reply } => write!(f, "{command} refused: {reply}"),
            SendError::NoValidRecipients(rs) => {
                f.write_str("no recipient accepted")?;
                let mut sep = ": ";
                for r in rs {
                    match &r.reply {
                        Some(reply) => write!(f, "{sep}RCPT TO:<{}> refused: {reply}", r.address)?,
                        None => write!(f, "{sep}RCPT TO:<{}> not answered", r.address)?,
                    }
                    sep = "; ";
                }
                Ok(())
            }
            SendError::Request(e) => write!(f, "request refused before sending: {e}"),
            SendError::Protocol(e) => match e.kind {
                ErrorKind::Malformed(m) => write!(f, "malformed reply to {}: {m}", step_name(e.step)),
                _ => write!(f, "protocol error: {e}"),
            },
            SendError::Input(e) => write!(f, "cannot read the message: {e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect { source, .. } | SendError::Io { source, .. } => Some(source),
            SendError::Tls(e) | SendError::Input(e) => Some(e),
            SendError::Request(e) => Some(e),
            SendError::Protocol(e) => Some(&**e),
            _ => None,
        }
    }
}

/// A fatal error reported by the core.
pub(super) fn from_core(e: core::Error, command: impl FnOnce(Step) -> String) -> SendError {
    match e.kind {
        ErrorKind::ResponseInjection => SendError::ResponseInjection,
        ErrorKind::Timeout => SendError::Timeout { step: e.step },
        ErrorKind::Refused | ErrorKind::UnexpectedReply => match e.reply {
            Some(r) => SendError::Refused { command: command(e.step), reply: Reply::from_summary(&r) },
            None => SendError::Protocol(Box::new(e)),
        },
        _ => SendError::Protocol(Box::new(e)),
    }
}

pub(super) fn command_name(step: Step) -> String {
    match step {
        Step::Greeting => "connection (greeting)".into(),
        Step::DataEnd => "message".into(),
        s => step_name(s).into(),
    }
}
