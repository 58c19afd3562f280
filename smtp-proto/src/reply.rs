//! SMTP replies: the one table of reply codes with their enhanced status codes, and the writer.
//!
//! Every reply the core sends by itself comes from the constants on [`Reply`], so a code and its
//! enhanced status code (RFC 3463, RFC 2034, registry RFC 5248) are decided in exactly one place.
//! Applications build their own replies with [`Reply::new`].
//!
//! ```
//! use smtp_proto::reply::{EnhancedCode, Reply};
//! let mut out = [0u8; 128];
//! let n = Reply::new(250, Some(EnhancedCode::new(2, 1, 0)), "Sender OK").write(true, &mut out).unwrap();
//! assert_eq!(&out[..n], b"250 2.1.0 Sender OK\r\n");
//! // Text with '\n' becomes a multi-line reply.
//! let n = Reply::new(550, None, "no such user\nreally").write(false, &mut out).unwrap();
//! assert_eq!(&out[..n], b"550-no such user\r\n550 really\r\n");
//! ```

use core::fmt;

/// An enhanced mail system status code `class.subject.detail` (RFC 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// Subject (0..=999).
    pub subject: u16,
    /// Detail (0..=999).
    pub detail: u16,
}

impl EnhancedCode {
    /// Builds a code; `class` must be 2, 4 or 5 and the others at most 999 to be sent.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self { class, subject, detail }
    }

    /// Whether this code can be written on the wire (RFC 3463 ranges).
    pub const fn is_valid(&self) -> bool {
        matches!(self.class, 2 | 4 | 5) && self.subject <= 999 && self.detail <= 999
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A reply: a three-digit code, an optional enhanced status code and a text.
///
/// A `'\n'` in `text` starts a new line of a multi-line reply; `'\r'` and other control
/// characters are replaced by spaces when written, so an application cannot inject a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reply<'a> {
    /// The reply code, 200..=599.
    pub code: u16,
    /// The enhanced status code (sent only when enhanced status codes are enabled).
    pub enhanced: Option<EnhancedCode>,
    /// The human-readable text; `'\n'` separates lines.
    pub text: &'a str,
}

/// The output buffer was too small for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall;

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("output buffer too small for the reply")
    }
}

/// Longest reply line we write, CRLF included (RFC 5321 §4.5.3.1.5).
pub const MAX_REPLY_LINE: usize = 512;

macro_rules! replies {
    ($( $(#[$doc:meta])* $name:ident = $code:literal $(($c:literal, $s:literal, $d:literal))? $text:literal; )*) => {
        impl Reply<'static> {
            $( $(#[$doc])* pub const $name: Reply<'static> = Reply {
                code: $code,
                enhanced: replies!(@esc $($c, $s, $d)?),
                text: $text,
            }; )*
        }
    };
    (@esc) => { None };
    (@esc $c:literal, $s:literal, $d:literal) => { Some(EnhancedCode::new($c, $s, $d)) };
}

replies! {
    /// `221 2.0.0` answer to QUIT.
    BYE = 221 (2, 0, 0) "Bye";
    /// `235 2.7.0` AUTH succeeded (RFC 4954).
    AUTH_OK = 235 (2, 7, 0) "Authentication successful";
    /// `250 2.0.0` generic OK (NOOP, RSET).
    OK = 250 (2, 0, 0) "OK";
    /// `250 2.1.0` MAIL accepted.
    MAIL_OK = 250 (2, 1, 0) "Sender OK";
    /// `250 2.1.5` RCPT accepted.
    RCPT_OK = 250 (2, 1, 5) "Recipient OK";
    /// `250 2.0.0` message accepted (end of DATA / BDAT LAST).
    MESSAGE_OK = 250 (2, 0, 0) "Message accepted";
    /// `250 2.0.0` reset.
    RESET_OK = 250 (2, 0, 0) "Reset state";
    /// `252 2.5.0` VRFY answered without verifying (RFC 5321 §3.5.3).
    VRFY_CANNOT = 252 (2, 5, 0) "Cannot VRFY user, but will accept message and attempt delivery";
    /// `214 2.0.0` HELP.
    HELP = 214 (2, 0, 0) "See RFC 5321";
    /// `220 2.0.0` go ahead with the TLS handshake (RFC 3207).
    STARTTLS_READY = 220 (2, 0, 0) "Ready to start TLS";
    /// `354` go ahead with the message (no enhanced code: RFC 2034 §3).
    DATA_GO_AHEAD = 354 "End data with <CR><LF>.<CR><LF>";
    /// `334` SASL challenge with empty text.
    AUTH_CONTINUE = 334 "";
    /// `421 4.4.2` timeout; the connection closes.
    TIMEOUT = 421 (4, 4, 2) "Error: timeout exceeded";
    /// `421 4.7.0` too many errors; the connection closes.
    TOO_MANY_ERRORS = 421 (4, 7, 0) "Error: too many errors";
    /// `421 4.3.2` service shutting down.
    SHUTTING_DOWN = 421 (4, 3, 2) "Service shutting down";
    /// `421 4.7.0` too many concurrent connections.
    TOO_MANY_CONNECTIONS = 421 (4, 7, 0) "Error: too many connections";
    /// `451 4.3.0` local error.
    LOCAL_ERROR = 451 (4, 3, 0) "Error: local error in processing";
    /// `452 4.5.3` too many recipients (RFC 5321 §4.5.3.1.10).
    TOO_MANY_RECIPIENTS = 452 (4, 5, 3) "Error: too many recipients";
    /// `452 4.3.1` out of storage (RFC 1870).
    INSUFFICIENT_STORAGE = 452 (4, 3, 1) "Insufficient system storage";
    /// `454 4.7.0` TLS unavailable (RFC 3207).
    TLS_UNAVAILABLE = 454 (4, 7, 0) "TLS not available due to local problem";
    /// `454 4.7.0` temporary authentication failure (RFC 4954).
    AUTH_TEMPFAIL = 454 (4, 7, 0) "Temporary authentication failure";
    /// `500 5.5.2` command line too long (RFC 5321 §4.5.3.1.9).
    LINE_TOO_LONG = 500 (5, 5, 2) "Error: command line too long";
    /// `500 5.5.2` a text line of the message was too long (RFC 5321 §4.5.3.1.6).
    TEXT_LINE_TOO_LONG = 500 (5, 5, 2) "Error: message line too long";
    /// `500 5.5.6` AUTH exchange line too long (RFC 4954).
    AUTH_LINE_TOO_LONG = 500 (5, 5, 6) "Authentication exchange line is too long";
    /// `500 5.5.1` unknown command.
    UNRECOGNIZED = 500 (5, 5, 1) "Error: command not recognized";
    /// `500 5.5.2` bare LF in a command line.
    COMMAND_BARE_LF = 500 (5, 5, 2) "Error: bare <LF> received";
    /// `500 5.5.2` a command line that is not UTF-8.
    BAD_UTF8 = 500 (5, 5, 2) "Error: bad UTF-8 syntax";
    /// `501 5.5.4` syntax error in arguments.
    SYNTAX = 501 (5, 5, 4) "Syntax error in parameters or arguments";
    /// `501 5.1.7` bad sender address.
    BAD_SENDER = 501 (5, 1, 7) "Bad sender address syntax";
    /// `501 5.1.3` bad recipient address.
    BAD_RECIPIENT = 501 (5, 1, 3) "Bad recipient address syntax";
    /// `501 5.1.7` reverse path too long (RFC 5321 §4.5.3.1.3).
    SENDER_TOO_LONG = 501 (5, 1, 7) "Path too long";
    /// `501 5.1.3` forward path too long.
    RECIPIENT_TOO_LONG = 501 (5, 1, 3) "Path too long";
    /// `501 5.7.0` client cancelled AUTH with `*`.
    AUTH_CANCELLED = 501 (5, 7, 0) "Authentication cancelled";
    /// `501 5.5.2` undecodable base64 in an AUTH exchange.
    AUTH_BAD_BASE64 = 501 (5, 5, 2) "Cannot decode response";
    /// `502 5.5.1` command not implemented (or disabled).
    NOT_IMPLEMENTED = 502 (5, 5, 1) "Error: command not implemented";
    /// `503 5.5.1` EHLO/HELO first.
    NEED_HELO = 503 (5, 5, 1) "Error: send HELO/EHLO first";
    /// `503 5.5.1` MAIL first.
    NEED_MAIL = 503 (5, 5, 1) "Error: need MAIL command";
    /// `503 5.5.1` RCPT first.
    NEED_RCPT = 503 (5, 5, 1) "Error: need RCPT command";
    /// `503 5.5.1` MAIL inside a transaction.
    NESTED_MAIL = 503 (5, 5, 1) "Error: nested MAIL command";
    /// `503 5.5.1` AUTH when already authenticated.
    ALREADY_AUTHENTICATED = 503 (5, 5, 1) "Error: already authenticated";
    /// `503 5.5.1` AUTH during a mail transaction.
    AUTH_IN_TRANSACTION = 503 (5, 5, 1) "Error: MAIL transaction in progress";
    /// `503 5.5.1` DATA after `BODY=BINARYMIME` (RFC 3030).
    DATA_AFTER_BINARYMIME = 503 (5, 5, 1) "Error: BDAT required for BINARYMIME";
    /// `503 5.5.1` DATA and BDAT mixed in one transaction (RFC 3030).
    DATA_AFTER_BDAT = 503 (5, 5, 1) "Error: DATA not allowed after BDAT";
    /// `504 5.5.4` SASL mechanism not offered.
    AUTH_UNKNOWN_MECHANISM = 504 (5, 5, 4) "Unrecognized authentication type";
    /// `530 5.7.0` authentication required.
    AUTH_REQUIRED = 530 (5, 7, 0) "Authentication required";
    /// `530 5.7.0` STARTTLS required first.
    TLS_REQUIRED = 530 (5, 7, 0) "Must issue a STARTTLS command first";
    /// `534 5.7.9` mechanism too weak.
    AUTH_TOO_WEAK = 534 (5, 7, 9) "Authentication mechanism is too weak";
    /// `535 5.7.8` credentials invalid.
    AUTH_FAILED = 535 (5, 7, 8) "Authentication credentials invalid";
    /// `538 5.7.11` encryption required for the mechanism (RFC 4954).
    AUTH_NEEDS_TLS = 538 (5, 7, 11) "Encryption required for requested authentication mechanism";
    /// `550 5.5.2` bare CR or LF in the message (the SMTP smuggling defence).
    BARE_LINE_ENDING = 550 (5, 5, 2) "Error: bare <CR> or <LF> received";
    /// `550 5.7.1` relaying denied.
    RELAY_DENIED = 550 (5, 7, 1) "Relay access denied";
    /// `550 5.1.1` unknown mailbox.
    NO_SUCH_USER = 550 (5, 1, 1) "Recipient address rejected: user unknown";
    /// `552 5.3.4` message too big (RFC 1870).
    TOO_BIG = 552 (5, 3, 4) "Message size exceeds fixed limit";
    /// `553 5.6.7` non-ASCII address without SMTPUTF8 (RFC 6531).
    NEED_SMTPUTF8 = 553 (5, 6, 7) "Must declare SMTPUTF8 to send unicode address";
    /// `554 5.5.0` protocol synchronisation error (early talker, pipelining after DATA).
    SYNC_ERROR = 554 (5, 5, 0) "Error: SMTP protocol synchronization";
    /// `554 5.5.1` DATA without any accepted recipient.
    NO_VALID_RECIPIENTS = 554 (5, 5, 1) "Error: no valid recipients";
    /// `554 5.5.1` STARTTLS when TLS is already active.
    TLS_ALREADY_ACTIVE = 554 (5, 5, 1) "Error: TLS already active";
    /// `554 5.3.2` connection refused at the greeting.
    NOT_ACCEPTING = 554 (5, 3, 2) "Not accepting connections";
    /// `555 5.5.4` MAIL/RCPT parameter not recognised or not implemented.
    UNSUPPORTED_PARAMETER = 555 (5, 5, 4) "Unsupported option";
    /// `521 5.5.4` BDAT syntax error: the chunk cannot be skipped, the connection closes.
    BDAT_SYNTAX = 521 (5, 5, 4) "Syntax: BDAT count [LAST]";
    /// `521 5.5.1` BDAT while CHUNKING is not offered: the connection closes.
    BDAT_NOT_OFFERED = 521 (5, 5, 1) "Error: CHUNKING not offered";
    /// `550 5.7.0` a non-SMTP (HTTP) command: cross-protocol defence.
    FORBIDDEN_COMMAND = 221 (2, 7, 0) "Error: I can break rules, too. Goodbye.";
}

impl<'a> Reply<'a> {
    /// Builds a reply.
    pub const fn new(code: u16, enhanced: Option<EnhancedCode>, text: &'a str) -> Self {
        Self { code, enhanced, text }
    }

    /// Same code and enhanced code with another text.
    pub const fn with_text<'b>(&self, text: &'b str) -> Reply<'b> {
        Reply { code: self.code, enhanced: self.enhanced, text }
    }

    /// 2xx or 3xx.
    pub const fn is_positive(&self) -> bool {
        self.code >= 200 && self.code < 400
    }

    /// 4xx.
    pub const fn is_transient(&self) -> bool {
        self.code >= 400 && self.code < 500
    }

    /// 5xx.
    pub const fn is_permanent(&self) -> bool {
        self.code >= 500 && self.code < 600
    }

    /// Whether the code is a valid SMTP reply code (200..=599).
    pub const fn is_valid(&self) -> bool {
        self.code >= 200 && self.code < 600
    }

    /// Writes the reply (single- or multi-line) into `out`, returning the bytes written.
    ///
    /// With `enhanced` the enhanced status code (if any, and not for 354/334) follows the code
    /// on every line. Lines longer than [`MAX_REPLY_LINE`] are cut, control characters become
    /// spaces.
    pub fn write(&self, enhanced: bool, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        self.write_with(enhanced, "", out)
    }

    /// Like [`Reply::write`], with `prefix` (e.g. the host name and a space) before the text of
    /// the first line.
    pub fn write_with(&self, enhanced: bool, prefix: &str, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer { out, len: 0 };
        let code = if self.is_valid() { self.code } else { 451 };
        let mut lines = self.text.split('\n').peekable();
        let mut first = true;
        while let Some(line) = lines.next() {
            let last = lines.peek().is_none();
            let start = w.len;
            w.code(code, if last { b' ' } else { b'-' })?;
            if enhanced {
                if let Some(e) = self.enhanced.filter(EnhancedCode::is_valid) {
                    w.esc(e)?;
                }
            }
            if first {
                w.text(prefix, start)?;
                first = false;
            }
            w.text(line, start)?;
            // Drop trailing space when there was no text at all.
            if w.out[w.len - 1] == b' ' && line.is_empty() && !(last && self.code == 334) {
                w.len -= 1;
            }
            w.bytes(b"\r\n")?;
        }
        Ok(w.len)
    }
}

impl fmt::Display for Reply<'_> {
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

struct Writer<'o> {
    out: &'o mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), BufferTooSmall> {
        let end = self.len.checked_add(b.len()).ok_or(BufferTooSmall)?;
        self.out.get_mut(self.len..end).ok_or(BufferTooSmall)?.copy_from_slice(b);
        self.len = end;
        Ok(())
    }

    fn code(&mut self, code: u16, sep: u8) -> Result<(), BufferTooSmall> {
        let d = [b'0' + (code / 100) as u8, b'0' + (code / 10 % 10) as u8, b'0' + (code % 10) as u8, sep];
        self.bytes(&d)
    }

    fn num(&mut self, n: u16) -> Result<(), BufferTooSmall> {
        let mut buf = [0u8; 3];
        let mut i = 3;
        let mut n = n;
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.bytes(&buf[i..])
    }

    fn esc(&mut self, e: EnhancedCode) -> Result<(), BufferTooSmall> {
        self.num(e.class as u16)?;
        self.bytes(b".")?;
        self.num(e.subject)?;
        self.bytes(b".")?;
        self.num(e.detail)?;
        self.bytes(b" ")
    }

    /// Text, control characters replaced, cut so that the line stays within MAX_REPLY_LINE.
    fn text(&mut self, text: &str, line_start: usize) -> Result<(), BufferTooSmall> {
        let room = (MAX_REPLY_LINE - 2).saturating_sub(self.len - line_start);
        let mut take = text.len().min(room);
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        let end = self.len.checked_add(take).ok_or(BufferTooSmall)?;
        let dst = self.out.get_mut(self.len..end).ok_or(BufferTooSmall)?;
        for (d, &s) in dst.iter_mut().zip(text.as_bytes()) {
            *d = if s < 0x20 || s == 0x7f { b' ' } else { s };
        }
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(r: Reply<'_>, esc: bool) -> ([u8; 1024], usize) {
        let mut out = [0u8; 1024];
        let n = r.write(esc, &mut out).unwrap();
        (out, n)
    }

    #[test]
    fn single_line_with_and_without_enhanced() {
        let (o, n) = w(Reply::TOO_MANY_RECIPIENTS, true);
        assert_eq!(&o[..n], b"452 4.5.3 Error: too many recipients\r\n");
        let (o, n) = w(Reply::TOO_MANY_RECIPIENTS, false);
        assert_eq!(&o[..n], b"452 Error: too many recipients\r\n");
    }

    #[test]
    fn multi_line_and_injection_safe() {
        let (o, n) = w(Reply::new(250, Some(EnhancedCode::new(2, 0, 0)), "a\nb\r\n250 c"), true);
        assert_eq!(&o[..n], b"250-2.0.0 a\r\n250-2.0.0 b \r\n250 2.0.0 250 c\r\n");
    }

    #[test]
    fn empty_texts() {
        let (o, n) = w(Reply::AUTH_CONTINUE, true);
        assert_eq!(&o[..n], b"334 \r\n");
        let (o, n) = w(Reply::new(250, None, ""), true);
        assert_eq!(&o[..n], b"250\r\n");
    }

    #[test]
    fn long_lines_are_cut_and_small_buffers_refused() {
        let long = "x".repeat(2000);
        let (o, n) = w(Reply::new(550, None, &long), false);
        assert_eq!(n, MAX_REPLY_LINE);
        assert_eq!(&o[n - 2..n], b"\r\n");
        let mut small = [0u8; 4];
        assert_eq!(Reply::OK.write(true, &mut small), Err(BufferTooSmall));
    }
}
