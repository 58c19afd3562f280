//! Command lines (RFC 5321 §4.1.1 and the extensions): verb, arguments, parameters.

use nom::bytes::complete::{tag_no_case, take_while1};
use nom::character::complete::digit1;
use nom::combinator::{eof, opt};
use nom::sequence::preceded;
use nom::{IResult, Parser};

use super::params::{parse_mail_params, parse_rcpt_params, MailParams, ParamError, RcptParams};
use super::path::{byte_class, forward_path_str, reverse_path_str, ForwardPath, PathError, ReversePath};
use super::Status;
use crate::fast::printable_prefix;
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

/// What the first word of a line is.
enum Word {
    /// A command verb.
    Verb(Verb),
    /// An HTTP method or a mail header field name: a cross-protocol attack.
    Forbidden,
    /// Anything else.
    Unknown,
}

/// Folds four ASCII letters to lower case as one `u32` (`| 0x20` per byte: for a target made of
/// lower-case letters, equality after folding is exactly case-insensitive equality).
const fn fold4(w: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*w) | 0x2020_2020
}

const HELO: u32 = fold4(b"helo");
const EHLO: u32 = fold4(b"ehlo");
const LHLO: u32 = fold4(b"lhlo");
const MAIL: u32 = fold4(b"mail");
const RCPT: u32 = fold4(b"rcpt");
const DATA: u32 = fold4(b"data");
const BDAT: u32 = fold4(b"bdat");
const RSET: u32 = fold4(b"rset");
const NOOP: u32 = fold4(b"noop");
const QUIT: u32 = fold4(b"quit");
const VRFY: u32 = fold4(b"vrfy");
const EXPN: u32 = fold4(b"expn");
const HELP: u32 = fold4(b"help");
const AUTH: u32 = fold4(b"auth");
const HEAD: u32 = fold4(b"head");
const POST: u32 = fold4(b"post");

/// Classifies the first word of a line.
#[inline]
fn word(w: &[u8]) -> Word {
    if let Ok(four) = <&[u8; 4]>::try_from(w) {
        let verb = match fold4(four) {
            MAIL => Verb::Mail,
            RCPT => Verb::Rcpt,
            EHLO => Verb::Ehlo,
            HELO => Verb::Helo,
            LHLO => Verb::Lhlo,
            DATA => Verb::Data,
            BDAT => Verb::Bdat,
            RSET => Verb::Rset,
            NOOP => Verb::Noop,
            QUIT => Verb::Quit,
            VRFY => Verb::Vrfy,
            EXPN => Verb::Expn,
            HELP => Verb::Help,
            AUTH => Verb::Auth,
            HEAD | POST => return Word::Forbidden,
            _ => return Word::Unknown,
        };
        return Word::Verb(verb);
    }
    if w.eq_ignore_ascii_case(b"STARTTLS") {
        return Word::Verb(Verb::StartTls);
    }
    if w.eq_ignore_ascii_case(b"GET") || w.eq_ignore_ascii_case(b"PUT") || w.eq_ignore_ascii_case(b"CONNECT") {
        return Word::Forbidden;
    }
    // `Host: x`, `User-Agent: y`: a header field name followed by a colon (Postfix's
    // `/^[^ ]+: /` rule, also without the space).
    if matches!(memchr::memchr(b':', w), Some(p) if p > 0) {
        return Word::Forbidden;
    }
    Word::Unknown
}

/// SASL mechanism name characters (RFC 4422 §3.1; lower case accepted too, as many clients
/// send it):
///
/// ```text
/// sasl-mech    = 1*20mech-char
/// mech-char    = UPPER-ALPHA / DIGIT / HYPHEN / UNDERSCORE
/// ```
static MECH_CHAR: [bool; 256] = byte_class(&[(b'A', b'Z'), (b'a', b'z'), (b'0', b'9'), (b'-', b'-'), (b'_', b'_')]);

/// Base64 alphabet for the AUTH initial response (RFC 4648 §4; padding handled apart):
///
/// ```text
/// base64-char = ALPHA / DIGIT / "+" / "/"
/// ```
static BASE64: [bool; 256] = byte_class(&[(b'A', b'Z'), (b'a', b'z'), (b'0', b'9'), (b'+', b'+'), (b'/', b'/')]);

/// `initial-response = base64 / "="` (RFC 4954 §4): base64 characters then at most two `=`.
fn is_initial_response(s: &str) -> bool {
    if s == "=" {
        return true;
    }
    let b = s.as_bytes();
    let data = b.iter().take_while(|&&c| BASE64[c as usize]).count();
    let pad = b.len() - data;
    data > 0 && pad <= 2 && b.iter().skip(data).all(|&c| c == b'=')
}

/// `BDAT` arguments (RFC 3030 §2): `chunk-size [ SP end-marker ]`, `end-marker = "LAST"`.
fn bdat_args(i: &str) -> IResult<&str, (&str, bool), ()> {
    (digit1, opt(preceded(take_while1(|c| c == ' '), tag_no_case("LAST"))), eof)
        .map(|(size, last, _)| (size, last.is_some()))
        .parse(i)
}

/// `AUTH` arguments: `mechanism [SP initial-response]`.
fn auth(args: &str) -> Result<Command<'_>, CommandError> {
    let (mechanism, rest) = match args.split_once(' ') {
        Some((m, r)) => (m, Some(r.trim_start_matches(' '))),
        None => (args, None),
    };
    if mechanism.is_empty() || mechanism.len() > 20 || !mechanism.bytes().all(|c| MECH_CHAR[c as usize]) {
        return Err(CommandError::Syntax(Verb::Auth));
    }
    let initial_response = match rest {
        None => None,
        Some(ir) if is_initial_response(ir) => Some(ir),
        Some(_) => return Err(CommandError::Syntax(Verb::Auth)),
    };
    Ok(Command::Auth { mechanism, initial_response })
}

/// Strips a case-insensitive `FROM:`/`TO:` and one optional space; the rest must start with `<`.
#[inline]
fn after_prefix<'a>(args: &'a str, prefix: &str, verb: Verb) -> Result<&'a str, CommandError> {
    let n = prefix.len();
    match (args.get(..n), args.get(n..)) {
        (Some(p), Some(rest)) if p.eq_ignore_ascii_case(prefix) => {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            if rest.starts_with('<') {
                Ok(rest)
            } else {
                Err(CommandError::Syntax(verb))
            }
        }
        _ => Err(CommandError::Syntax(verb)),
    }
}

/// What follows a path: nothing, or a space and the parameters.
#[inline]
fn params_after(rest: &str, verb: Verb) -> Result<&str, CommandError> {
    if rest.is_empty() || rest.starts_with(' ') {
        Ok(rest)
    } else {
        Err(CommandError::Syntax(verb))
    }
}

/// Parses one command line; `line` excludes the line ending.
///
/// Verbs are case-insensitive; trailing spaces are tolerated, as are extra spaces between the
/// verb and its arguments. The whole line must be UTF-8 ([`CommandError::Utf8`]); NUL, CR and
/// LF anywhere make it a syntax error. HTTP methods and header-like lines (`Host: x`) are
/// [`CommandError::Forbidden`]. `MAIL FROM:` and `RCPT TO:` accept one space before the `<`.
pub fn parse_command_line(line: &[u8]) -> Result<Command<'_>, CommandError> {
    // One word-wise pass tells whether the line is printable ASCII (the common case): then it
    // holds no NUL, CR or LF, and the search for them is skipped.
    let ascii = printable_prefix(line);
    parse_line(line, (ascii.len() == line.len()).then_some(ascii))
}

/// [`parse_command_line`], given `line` as a `str` when it is known to be printable ASCII
/// (`clean`; then it holds no NUL, CR or LF and needs no UTF-8 check).
///
/// Not inlined: as a call, it builds its result straight in the caller's slot; inlined, the
/// ~200-byte result was built on the stack and copied out by `memcpy` (a fifth of a short
/// line's parse).
#[inline(never)]
fn parse_line<'a>(line: &'a [u8], clean: Option<&'a str>) -> Result<Command<'a>, CommandError> {
    let line = match clean {
        Some(line) => line,
        None => core::str::from_utf8(line).map_err(|_| CommandError::Utf8)?,
    };
    let b = line.as_bytes();
    let len = b.len() - b.iter().rev().take_while(|&&c| c == b' ').count();
    // The verb ends at a space, or at a NUL, CR or LF (which then make the arguments bad).
    let end = b[..len].iter().position(|&c| matches!(c, b' ' | 0 | b'\r' | b'\n')).unwrap_or(len);
    let start = end + b[end..len].iter().take_while(|&&c| c == b' ').count();
    let (verb_word, args) = match (line.get(..end), line.get(start..len)) {
        (Some(v), Some(a)) => (v, a),
        _ => (line, ""),
    };
    let verb = match word(verb_word.as_bytes()) {
        Word::Verb(v) => v,
        Word::Forbidden => return Err(CommandError::Forbidden),
        Word::Unknown => return Err(CommandError::Unrecognized),
    };
    if clean.is_none() && memchr::memchr3(0, b'\r', b'\n', args.as_bytes()).is_some() {
        return Err(CommandError::Syntax(verb));
    }
    let syntax = Err(CommandError::Syntax(verb));
    match verb {
        Verb::Mail => {
            let rest = after_prefix(args, "FROM:", verb)?;
            let (from, n) = reverse_path_str(rest).map_err(CommandError::BadSender)?;
            let params = params_after(rest.get(n..).unwrap_or(""), verb)?;
            let params = parse_mail_params(params).map_err(|e| CommandError::Param(verb, e))?;
            Ok(Command::Mail { from, params })
        }
        Verb::Rcpt => {
            let rest = after_prefix(args, "TO:", verb)?;
            let (to, n) = forward_path_str(rest).map_err(CommandError::BadRecipient)?;
            let params = params_after(rest.get(n..).unwrap_or(""), verb)?;
            let params = parse_rcpt_params(params).map_err(|e| CommandError::Param(verb, e))?;
            Ok(Command::Rcpt { to, params })
        }
        Verb::Helo | Verb::Ehlo | Verb::Lhlo if args.is_empty() => syntax,
        Verb::Helo => Ok(Command::Helo { host: args }),
        Verb::Ehlo => Ok(Command::Ehlo { host: args }),
        Verb::Lhlo => Ok(Command::Lhlo { host: args }),
        Verb::Data | Verb::Rset | Verb::Quit | Verb::StartTls if !args.is_empty() => syntax,
        Verb::Data => Ok(Command::Data),
        Verb::Rset => Ok(Command::Rset),
        Verb::Quit => Ok(Command::Quit),
        Verb::StartTls => Ok(Command::StartTls),
        Verb::Noop => Ok(Command::Noop),
        Verb::Bdat => match bdat_args(args) {
            Ok((_, (size, last))) => match size.parse::<u64>() {
                Ok(size) => Ok(Command::Bdat { size, last }),
                Err(_) => syntax,
            },
            Err(_) => syntax,
        },
        Verb::Vrfy | Verb::Expn if args.is_empty() => syntax,
        Verb::Vrfy => Ok(Command::Vrfy { arg: args }),
        Verb::Expn => Ok(Command::Expn { arg: args }),
        Verb::Help => Ok(Command::Help { topic: (!args.is_empty()).then_some(args) }),
        Verb::Auth => auth(args),
    }
}

/// Finds the first line in `input` and parses it: `Partial` without a complete line, else the
/// command (or error) and the bytes the line took, line ending included. A line ends at LF; a CR
/// before it is removed (whether a bare LF is acceptable is the caller's policy).
pub fn parse_command(input: &[u8]) -> Status<(Result<Command<'_>, CommandError>, usize)> {
    // The common case in one pass: printable ASCII up to the line ending, which is then the
    // first control character.
    let ascii = printable_prefix(input);
    let stop = ascii.len();
    let (line, rest) = input.split_at(stop);
    let (line, used, clean) = match rest {
        [b'\r', b'\n', ..] => (line, stop + 2, Some(ascii)),
        [b'\n', ..] => (line, stop + 1, Some(ascii)),
        [] => return Status::Partial,
        // Anything else: a control or non-ASCII byte inside the line. Find the LF (it cannot
        // come before `stop`) and check the line in full.
        _ => match memchr::memchr(b'\n', rest) {
            None => return Status::Partial,
            Some(lf) => {
                let line = &input[..stop + lf];
                (line.strip_suffix(b"\r").unwrap_or(line), stop + lf + 1, None)
            }
        },
    };
    Status::Complete((parse_line(line, clean), used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::path::Domain;

    fn ok(line: &str) -> Command<'_> {
        parse_command_line(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e:?}"))
    }

    fn err(line: &[u8]) -> CommandError {
        parse_command_line(line).unwrap_err()
    }

    #[test]
    fn verbs() {
        assert_eq!(ok("EHLO mx.example"), Command::Ehlo { host: "mx.example" });
        assert_eq!(ok("ehlo [192.0.2.1]"), Command::Ehlo { host: "[192.0.2.1]" });
        assert_eq!(ok("HeLo x"), Command::Helo { host: "x" });
        assert_eq!(ok("LHLO x"), Command::Lhlo { host: "x" });
        assert_eq!(ok("DATA"), Command::Data);
        assert_eq!(ok("rset"), Command::Rset);
        assert_eq!(ok("NOOP"), Command::Noop);
        assert_eq!(ok("NOOP anything at all"), Command::Noop);
        assert_eq!(ok("QUIT"), Command::Quit);
        assert_eq!(ok("StartTLS"), Command::StartTls);
        assert_eq!(ok("VRFY bob"), Command::Vrfy { arg: "bob" });
        assert_eq!(ok("EXPN list"), Command::Expn { arg: "list" });
        assert_eq!(ok("HELP"), Command::Help { topic: None });
        assert_eq!(ok("HELP mail"), Command::Help { topic: Some("mail") });
        assert_eq!(ok("BDAT 100"), Command::Bdat { size: 100, last: false });
        assert_eq!(ok("bdat 0 last"), Command::Bdat { size: 0, last: true });
    }

    #[test]
    fn syntax_errors() {
        for (line, verb) in [
            ("EHLO", Verb::Ehlo),
            ("EHLO   ", Verb::Ehlo),
            ("HELO", Verb::Helo),
            ("LHLO", Verb::Lhlo),
            ("DATA x", Verb::Data),
            ("RSET x", Verb::Rset),
            ("QUIT now", Verb::Quit),
            ("STARTTLS x", Verb::StartTls),
            ("VRFY", Verb::Vrfy),
            ("EXPN", Verb::Expn),
            ("BDAT", Verb::Bdat),
            ("BDAT x", Verb::Bdat),
            ("BDAT 18446744073709551616", Verb::Bdat),
            ("BDAT 1 FIRST", Verb::Bdat),
            ("BDAT 1 LAST x", Verb::Bdat),
            ("BDAT -1", Verb::Bdat),
            ("AUTH", Verb::Auth),
            ("AUTH PL@IN", Verb::Auth),
            ("AUTH ABCDEFGHIJKLMNOPQRSTU", Verb::Auth),
            ("AUTH PLAIN a b", Verb::Auth),
            ("AUTH PLAIN a=b", Verb::Auth),
            ("AUTH PLAIN ===", Verb::Auth),
            ("MAIL", Verb::Mail),
            ("MAIL TO:<a@b>", Verb::Mail),
            ("MAIL FROM:a@b", Verb::Mail),
            ("MAIL FROM:  <a@b>", Verb::Mail),
            ("MAIL FROM:<a@b>SIZE=1", Verb::Mail),
            ("RCPT", Verb::Rcpt),
            ("RCPT FROM:<a@b>", Verb::Rcpt),
        ] {
            assert_eq!(err(line.as_bytes()), CommandError::Syntax(verb), "{line}");
        }
        assert_eq!(ok("BDAT 18446744073709551615 LAST"), Command::Bdat { size: u64::MAX, last: true });
    }

    #[test]
    fn auth() {
        assert_eq!(ok("AUTH PLAIN"), Command::Auth { mechanism: "PLAIN", initial_response: None });
        assert_eq!(ok("AUTH PLAIN ="), Command::Auth { mechanism: "PLAIN", initial_response: Some("=") });
        assert_eq!(
            ok("auth SCRAM-SHA-256 AGJvYgBzZWNyZXQ="),
            Command::Auth { mechanism: "SCRAM-SHA-256", initial_response: Some("AGJvYgBzZWNyZXQ=") }
        );
        assert_eq!(
            ok("AUTH X_Y-12345678901234").clone(),
            Command::Auth { mechanism: "X_Y-12345678901234", initial_response: None }
        );
        assert!(matches!(ok("AUTH ABCDEFGHIJKLMNOPQRST"), Command::Auth { .. }));
    }

    #[test]
    fn mail_rcpt() {
        match ok("MAIL FROM:<a@b.example> SIZE=12345 BODY=8BITMIME ENVID=x RET=HDRS") {
            Command::Mail { from: ReversePath::Mailbox(m), params } => {
                assert_eq!(m.local_part, "a");
                assert_eq!(m.domain, Domain::Name("b.example"));
                assert_eq!(params.size, Some(12345));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(ok("mail from: <>"), Command::Mail { from: ReversePath::Null, .. }));
        assert!(matches!(ok("RCPT To:<Postmaster>"), Command::Rcpt { to: ForwardPath::Postmaster, .. }));
        assert_eq!(err(b"RCPT TO:<>"), CommandError::BadRecipient(PathError::Syntax));
        assert_eq!(err(b"MAIL FROM:<a>"), CommandError::BadSender(PathError::Syntax));
        assert_eq!(err(b"MAIL FROM:<a@b> SIZE=x"), CommandError::Param(Verb::Mail, ParamError::BadValue));
        assert_eq!(err(b"RCPT TO:<a@b> NOTIFY=NEVER,DELAY"), CommandError::Param(Verb::Rcpt, ParamError::BadValue));
    }

    #[test]
    fn forbidden_and_unknown() {
        for line in [
            "GET / HTTP/1.1",
            "post /x",
            "CONNECT a:443 HTTP/1.1",
            "HEAD /",
            "PUT /",
            "Host: x",
            "User-Agent: y",
            "X-Foo:bar",
            "Subject:",
        ] {
            assert_eq!(err(line.as_bytes()), CommandError::Forbidden, "{line}");
        }
        for line in ["", " ", "FOO", "EHL", "EHLOX", ":x", "\u{0}", "MAILFROM:<a@b>"] {
            let want = if line == "MAILFROM:<a@b>" { CommandError::Forbidden } else { CommandError::Unrecognized };
            assert_eq!(err(line.as_bytes()), want, "{line:?}");
        }
    }

    #[test]
    fn bytes() {
        assert_eq!(err(b"EHLO \xff"), CommandError::Utf8);
        assert_eq!(err(b"\xffHLO x"), CommandError::Utf8);
        assert_eq!(err(b"EHLO a\0b"), CommandError::Syntax(Verb::Ehlo));
        assert_eq!(err(b"NOOP a\rb"), CommandError::Syntax(Verb::Noop));
        assert_eq!(err(b"QUIT\r"), CommandError::Syntax(Verb::Quit));
        assert_eq!(err(b"RSET\0"), CommandError::Syntax(Verb::Rset));
        assert_eq!(err(b"EHLO\rx"), CommandError::Syntax(Verb::Ehlo));
        assert_eq!(err(b"MAIL FROM:<a@b>\0"), CommandError::Syntax(Verb::Mail));
        assert_eq!(err(b"RCPT TO:<a@b> X=\r"), CommandError::Syntax(Verb::Rcpt));
        assert_eq!(err(b"FOO\r"), CommandError::Unrecognized);
        assert_eq!(err(b"FOO \0"), CommandError::Unrecognized);
        assert_eq!(ok("QUIT   "), Command::Quit);
        assert_eq!(ok("EHLO   x  "), Command::Ehlo { host: "x" });
    }

    #[test]
    fn parse_command_framing() {
        assert_eq!(parse_command(b"QUIT"), Status::Partial);
        assert_eq!(parse_command(b"QUIT\r\nNOOP\r\n"), Status::Complete((Ok(Command::Quit), 6)));
        assert_eq!(parse_command(b"QUIT\n"), Status::Complete((Ok(Command::Quit), 5)));
    }
}
