//! The reply parser for the client side: streaming, zero-copy, bounded (RFC 5321 §4.2).
//!
//! ```text
//! Reply-line = *( Reply-code "-" [ textstring ] CRLF )
//!              Reply-code [ SP textstring ] CRLF
//! Reply-code = %x32-35 %x30-35 %x30-39
//! ```
//!
//! [`parse_reply`] looks at the start of the input and answers with a whole reply
//! ([`Status::Complete`] with the bytes it spans) or [`Status::Partial`] when its last line has
//! not arrived yet. Nothing is copied: a [`ParsedReply`] borrows the input and iterates over its
//! lines. The enhanced status code (RFC 2034, `class.subject.detail` after the code) is parsed
//! when present and its class matches the reply code.
//!
//! Limits keep a hostile server from making the client buffer without bound: a line longer than
//! [`ReplyLimits::max_line`] (CRLF included, RFC 5321 §4.5.3.1.5: 512) or a reply of more than
//! [`ReplyLimits::max_lines`] lines is a [`ReplyError`], found as soon as the offending bytes
//! are in the input. A caller whose buffer holds [`ReplyLimits::max_reply_len`] bytes can
//! therefore always make progress.
//!
//! Lines end with CRLF; a bare LF is accepted as a line end too (the CR, if any, is never part
//! of the text).
//!
//! ```
//! use smtp_proto::parse::reply::{parse_reply, ReplyLimits};
//! use smtp_proto::parse::Status;
//! use smtp_proto::EnhancedCode;
//!
//! let input = b"250-2.1.5 first\r\n250 2.1.5 second\r\nNEXT";
//! let Status::Complete((len, reply)) = parse_reply(input, &ReplyLimits::default()).unwrap() else {
//!     panic!("complete")
//! };
//! assert_eq!(len, input.len() - 4);
//! assert_eq!(reply.code(), 250);
//! assert_eq!(reply.enhanced(), Some(EnhancedCode::new(2, 1, 5)));
//! let texts: Vec<&[u8]> = reply.text_lines().collect();
//! assert_eq!(texts, [&b"first"[..], &b"second"[..]]);
//! assert_eq!(parse_reply(b"250-first\r\n250 sec", &ReplyLimits::default()), Ok(Status::Partial));
//! ```

use core::fmt;

use super::Status;
use crate::reply::EnhancedCode;

/// Bounds on a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyLimits {
    /// Longest line, code and CRLF included (RFC 5321 §4.5.3.1.5: 512).
    pub max_line: usize,
    /// Most lines in one reply.
    pub max_lines: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        Self { max_line: 512, max_lines: 100 }
    }
}

impl ReplyLimits {
    /// The longest reply these limits let through: an input buffer of this size always holds a
    /// whole reply or shows the error.
    pub const fn max_reply_len(&self) -> usize {
        self.max_line.saturating_mul(self.max_lines)
    }
}

/// A reply that breaks the grammar or the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line longer than [`ReplyLimits::max_line`].
    LineTooLong,
    /// More lines than [`ReplyLimits::max_lines`].
    TooManyLines,
    /// A line that does not start with a three-digit code `2xx`..`5xx`.
    BadCode,
    /// The code is not followed by `-`, a space or the line end.
    BadSeparator,
    /// A line of a multi-line reply has a different code than the first.
    InconsistentCode,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyError::LineTooLong => "reply line too long",
            ReplyError::TooManyLines => "too many reply lines",
            ReplyError::BadCode => "reply line without a valid reply code",
            ReplyError::BadSeparator => "reply code not followed by '-', ' ' or the line end",
            ReplyError::InconsistentCode => "reply code changes inside a multi-line reply",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ReplyError {}

/// A complete reply, borrowing the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedReply<'a> {
    code: u16,
    enhanced: Option<EnhancedCode>,
    raw: &'a [u8],
    lines: usize,
}

impl<'a> ParsedReply<'a> {
    /// The reply code (200..=599).
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code of the first line, if present (RFC 2034).
    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        self.code / 100 == 2
    }

    /// 3xx (354 to DATA, 334 to AUTH).
    pub fn is_intermediate(&self) -> bool {
        self.code / 100 == 3
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// The reply as received, every line with its line ending.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Number of lines.
    pub fn line_count(&self) -> usize {
        self.lines
    }

    /// The lines as received, without their line endings (`250-SIZE 1000`).
    pub fn lines(&self) -> Lines<'a> {
        Lines { rest: self.raw }
    }

    /// The text of each line: after the code and its separator, and after the enhanced status
    /// code if this reply has one and the line starts with it.
    pub fn text_lines(&self) -> TextLines<'a> {
        TextLines { lines: self.lines(), enhanced: self.enhanced.is_some() }
    }

    /// The text of the first line (see [`ParsedReply::text_lines`]).
    pub fn first_text(&self) -> &'a [u8] {
        self.text_lines().next().unwrap_or_default()
    }
}

impl fmt::Display for ParsedReply<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        let text = self.first_text();
        if !text.is_empty() {
            write!(f, " {}", text.escape_ascii())?;
        }
        Ok(())
    }
}

/// The lines of a [`ParsedReply`], line endings removed.
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match memchr::memchr(b'\n', self.rest) {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, &[][..]),
        };
        self.rest = rest;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// The texts of the lines of a [`ParsedReply`].
#[derive(Debug, Clone)]
pub struct TextLines<'a> {
    lines: Lines<'a>,
    enhanced: bool,
}

impl<'a> Iterator for TextLines<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let line = self.lines.next()?;
        let text = line.get(4..).unwrap_or_default();
        if self.enhanced {
            if let Some((_, n)) = enhanced_code(text) {
                return Some(text.get(n..).unwrap_or_default());
            }
        }
        Some(text)
    }
}

/// `class "." subject "." detail` (RFC 3463: 1 digit, 1-3 digits, 1-3 digits) followed by a
/// space or the end of the text; returns the code and the bytes it spans with the space.
pub(crate) fn enhanced_code(text: &[u8]) -> Option<(EnhancedCode, usize)> {
    fn number(b: &[u8], at: usize, max_digits: usize) -> Option<(u16, usize)> {
        let digits = b.get(at..)?.iter().take(max_digits + 1).take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > max_digits {
            return None;
        }
        let v = b[at..at + digits].iter().fold(0u16, |v, &c| v * 10 + u16::from(c - b'0'));
        Some((v, at + digits))
    }
    let (class, i) = number(text, 0, 1)?;
    if text.get(i) != Some(&b'.') {
        return None;
    }
    let (subject, i) = number(text, i + 1, 3)?;
    if text.get(i) != Some(&b'.') {
        return None;
    }
    let (detail, i) = number(text, i + 1, 3)?;
    match text.get(i) {
        None => {}
        Some(b' ') => {}
        Some(_) => return None,
    }
    let code = EnhancedCode::new(class as u8, subject, detail);
    code.is_valid().then_some((code, (i + 1).min(text.len())))
}

/// One parsed reply line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    /// The reply code.
    pub code: u16,
    /// `false` for a continuation line (`250-...`).
    pub last: bool,
    /// The text after the separator (enhanced code included), without the line ending.
    pub text: &'a [u8],
}

/// Parses the first line of `input`: `Complete((bytes spanned, line))`, or `Partial` while no
/// line end is in sight and fewer than `max_line` bytes are there.
///
/// # Errors
/// [`ReplyError::LineTooLong`], [`ReplyError::BadCode`], [`ReplyError::BadSeparator`]; errors
/// in the code are reported as soon as the first bytes show them.
///
/// ```
/// use smtp_proto::parse::reply::{parse_reply_line, ReplyError, ReplyLine};
/// use smtp_proto::parse::Status;
/// assert_eq!(
///     parse_reply_line(b"354 go\r\n", 512),
///     Ok(Status::Complete((8, ReplyLine { code: 354, last: true, text: b"go" })))
/// );
/// assert_eq!(parse_reply_line(b"25", 512), Ok(Status::Partial));
/// assert_eq!(parse_reply_line(b"650", 512), Err(ReplyError::BadCode));
/// ```
pub fn parse_reply_line(input: &[u8], max_line: usize) -> Result<Status<(usize, ReplyLine<'_>)>, ReplyError> {
    // Check what is there of the code first, so garbage fails early.
    for (i, &c) in input.iter().take(3).enumerate() {
        let ok = match i {
            0 => (b'2'..=b'5').contains(&c),
            _ => c.is_ascii_digit(),
        };
        if !ok {
            return Err(ReplyError::BadCode);
        }
    }
    if let Some(&sep) = input.get(3) {
        if !matches!(sep, b'-' | b' ' | b'\r' | b'\n') {
            return Err(ReplyError::BadSeparator);
        }
    }
    let window = &input[..input.len().min(max_line)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return if input.len() >= max_line { Err(ReplyError::LineTooLong) } else { Ok(Status::Partial) };
    };
    let line = &input[..lf];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() < 3 {
        return Err(ReplyError::BadCode);
    }
    let code = line[..3].iter().fold(0u16, |v, &c| v * 10 + u16::from(c - b'0'));
    let (last, text) = match line.get(3) {
        None => (true, &[][..]),
        Some(b'-') => (false, &line[4..]),
        Some(b' ') => (true, &line[4..]),
        Some(_) => return Err(ReplyError::BadSeparator),
    };
    Ok(Status::Complete((lf + 1, ReplyLine { code, last, text })))
}

/// Parses one whole reply from the start of `input`: `Complete((bytes spanned, reply))`, or
/// `Partial` until its last line is complete. See the [module docs](self).
///
/// # Errors
/// Any [`ReplyError`], as soon as the input shows it.
pub fn parse_reply<'a>(input: &'a [u8], limits: &ReplyLimits) -> Result<Status<(usize, ParsedReply<'a>)>, ReplyError> {
    let mut at = 0;
    let mut code = None;
    let mut lines = 0;
    loop {
        let rest = input.get(at..).unwrap_or_default();
        if lines >= limits.max_lines && !rest.is_empty() {
            return Err(ReplyError::TooManyLines);
        }
        if let (Some(c), Some(head)) = (code, rest.get(..3)) {
            // Catch a changed code before the line is complete.
            if head.iter().all(u8::is_ascii_digit) && head.iter().fold(0u16, |v, &d| v * 10 + u16::from(d - b'0')) != c
            {
                return Err(ReplyError::InconsistentCode);
            }
        }
        let (n, line) = match parse_reply_line(rest, limits.max_line)? {
            Status::Complete(l) => l,
            Status::Partial => return Ok(Status::Partial),
        };
        if code.is_some_and(|c| c != line.code) {
            return Err(ReplyError::InconsistentCode);
        }
        code = Some(line.code);
        lines += 1;
        at += n;
        if line.last {
            break;
        }
    }
    let raw = &input[..at];
    let code = code.unwrap_or(0);
    let first_text = raw.get(4..).unwrap_or_default();
    let enhanced = enhanced_code(first_text).map(|(e, _)| e).filter(|e| u16::from(e.class) == code / 100);
    Ok(Status::Complete((at, ParsedReply { code, enhanced, raw, lines })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_code_forms() {
        assert_eq!(enhanced_code(b"2.1.5 ok"), Some((EnhancedCode::new(2, 1, 5), 6)));
        assert_eq!(enhanced_code(b"5.7.1"), Some((EnhancedCode::new(5, 7, 1), 5)));
        assert_eq!(enhanced_code(b"5.123.999 x"), Some((EnhancedCode::new(5, 123, 999), 10)));
        assert_eq!(enhanced_code(b"5.1234.1 x"), None);
        assert_eq!(enhanced_code(b"5.1.1x"), None);
        assert_eq!(enhanced_code(b"mx.example.org"), None);
        assert_eq!(enhanced_code(b"1.2.3 x"), None);
        assert_eq!(enhanced_code(b""), None);
    }

    #[test]
    fn enhanced_class_must_match() {
        let Ok(Status::Complete((_, r))) = parse_reply(b"250 5.1.1 odd\r\n", &ReplyLimits::default()) else { panic!() };
        assert_eq!(r.enhanced(), None);
        assert_eq!(r.first_text(), b"5.1.1 odd");
    }
}
