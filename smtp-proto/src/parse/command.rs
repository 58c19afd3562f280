//! Command lines (RFC 5321 §4.1.1 and the extensions): verb, arguments, parameters.

use super::params::{MailParams, ParamError, RcptParams};
use super::path::{ForwardPath, PathError, ReversePath};
use super::Status;
use crate::reply::Reply;

/// A parsed command line, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command<'a> {
    /// `HELO domain`
    Helo {
        /// The argument as sent.
        host: &'a str,
    },
    /// `EHLO domain-or-address-literal`
    Ehlo {
        /// The argument as sent.
        host: &'a str,
    },
    /// `LHLO domain` (LMTP, RFC 2033)
    Lhlo {
        /// The argument as sent.
        host: &'a str,
    },
    /// `MAIL FROM:<path> [params]`
    Mail {
        /// Reverse path.
        from: ReversePath<'a>,
        /// Parameters.
        params: MailParams<'a>,
    },
    /// `RCPT TO:<path> [params]`
    Rcpt {
        /// Forward path.
        to: ForwardPath<'a>,
        /// Parameters.
        params: RcptParams<'a>,
    },
    /// `DATA`
    Data,
    /// `BDAT size [LAST]` (RFC 3030)
    Bdat {
        /// Chunk size in octets.
        size: u64,
        /// `LAST` given.
        last: bool,
    },
    /// `RSET`
    Rset,
    /// `NOOP [string]`
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY string`
    Vrfy {
        /// The argument.
        arg: &'a str,
    },
    /// `EXPN string`
    Expn {
        /// The argument.
        arg: &'a str,
    },
    /// `HELP [topic]`
    Help {
        /// The topic.
        topic: Option<&'a str>,
    },
    /// `STARTTLS` (RFC 3207)
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954)
    Auth {
        /// The SASL mechanism name as sent.
        mechanism: &'a str,
        /// The initial response as sent (base64, or `=` for empty).
        initial_response: Option<&'a str>,
    },
}

/// The command verbs, for syntax replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verb {
    /// HELO
    Helo,
    /// EHLO
    Ehlo,
    /// LHLO
    Lhlo,
    /// MAIL
    Mail,
    /// RCPT
    Rcpt,
    /// DATA
    Data,
    /// BDAT
    Bdat,
    /// RSET
    Rset,
    /// NOOP
    Noop,
    /// QUIT
    Quit,
    /// VRFY
    Vrfy,
    /// EXPN
    Expn,
    /// HELP
    Help,
    /// STARTTLS
    StartTls,
    /// AUTH
    Auth,
}

/// A command line that did not parse, with the reply it deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// Unknown verb: `500 5.5.1`.
    Unrecognized,
    /// A non-SMTP verb (`GET`, `POST`, `CONNECT`, a header line): `221 2.7.0` and close.
    Forbidden,
    /// Arguments wrong for the verb: `501 5.5.4 Syntax: ...`.
    Syntax(Verb),
    /// The MAIL path is bad: `501 5.1.7`.
    BadSender(PathError),
    /// The RCPT path is bad: `501 5.1.3`.
    BadRecipient(PathError),
    /// A parameter is bad: `501 5.5.4`.
    Param(Verb, ParamError),
    /// Not UTF-8: `500 5.5.2`.
    Utf8,
}

impl Verb {
    /// The usage text for `501 5.5.4 Syntax: ...`.
    pub const fn usage(&self) -> &'static str {
        match self {
            Verb::Helo => "Syntax: HELO hostname",
            Verb::Ehlo => "Syntax: EHLO hostname",
            Verb::Lhlo => "Syntax: LHLO hostname",
            Verb::Mail => "Syntax: MAIL FROM:<address> [parameters]",
            Verb::Rcpt => "Syntax: RCPT TO:<address> [parameters]",
            Verb::Data => "Syntax: DATA",
            Verb::Bdat => "Syntax: BDAT count [LAST]",
            Verb::Rset => "Syntax: RSET",
            Verb::Noop => "Syntax: NOOP [string]",
            Verb::Quit => "Syntax: QUIT",
            Verb::Vrfy => "Syntax: VRFY address",
            Verb::Expn => "Syntax: EXPN list",
            Verb::Help => "Syntax: HELP [topic]",
            Verb::StartTls => "Syntax: STARTTLS",
            Verb::Auth => "Syntax: AUTH mechanism [initial-response]",
        }
    }
}

impl CommandError {
    /// The reply the server sends for this error.
    pub fn reply(&self) -> Reply<'static> {
        match self {
            CommandError::Unrecognized => Reply::UNRECOGNIZED,
            CommandError::Forbidden => Reply::FORBIDDEN_COMMAND,
            CommandError::Syntax(v) => Reply::SYNTAX.with_text(v.usage()),
            CommandError::BadSender(PathError::PathTooLong)
            | CommandError::BadSender(PathError::LocalPartTooLong)
            | CommandError::BadSender(PathError::DomainTooLong) => Reply::SENDER_TOO_LONG,
            CommandError::BadSender(_) => Reply::BAD_SENDER,
            CommandError::BadRecipient(PathError::PathTooLong)
            | CommandError::BadRecipient(PathError::LocalPartTooLong)
            | CommandError::BadRecipient(PathError::DomainTooLong) => Reply::RECIPIENT_TOO_LONG,
            CommandError::BadRecipient(_) => Reply::BAD_RECIPIENT,
            CommandError::Param(_, _) => Reply::SYNTAX.with_text("Bad parameter syntax"),
            CommandError::Utf8 => Reply::BAD_UTF8,
        }
    }
}

/// Parses one command line; `line` excludes the line ending.
pub fn parse_command_line(line: &[u8]) -> Result<Command<'_>, CommandError> {
    let _ = line;
    Err(CommandError::Unrecognized) // helper: implement
}

/// Finds the first line in `input` and parses it: `Partial` without a complete line, else the
/// command (or error) and the bytes the line took, line ending included. A line ends at LF; a CR
/// before it is removed (whether a bare LF is acceptable is the caller's policy).
pub fn parse_command(input: &[u8]) -> Status<(Result<Command<'_>, CommandError>, usize)> {
    match memchr::memchr(b'\n', input) {
        None => Status::Partial,
        Some(lf) => {
            let line = &input[..lf];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Status::Complete((parse_command_line(line), lf + 1))
        }
    }
}
