//! Packets: `u32 length (network order) | command byte | data`, the length counting the
//! command byte and the data. Writing the MTA's commands into a caller's buffer, and reading
//! the fields of the milter's replies.

use core::fmt::Write as _;

use crate::reply::EnhancedCode;

use super::error::{ApiError, Error, Problem};
use super::event::{ReplyCode, Verdict};

/// Writes packets into a caller's buffer; an overflow is remembered and reported at the end
/// with the size that would have been needed.
pub(crate) struct Writer<'o> {
    out: &'o mut [u8],
    len: usize,
    /// Where the open packet's length field is.
    start: usize,
    nul: bool,
}

impl<'o> Writer<'o> {
    pub(crate) fn new(out: &'o mut [u8]) -> Self {
        Self { out, len: 0, start: 0, nul: false }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        if let Some(dst) = self.out.get_mut(self.len..self.len + b.len()) {
            dst.copy_from_slice(b);
        }
        self.len += b.len();
    }

    /// A string field: the bytes and a NUL (a NUL inside is an error).
    pub(crate) fn field(&mut self, b: &[u8]) {
        if b.contains(&0) {
            self.nul = true;
        }
        self.bytes(b);
        self.bytes(&[0]);
    }

    /// Opens a packet of `command`; [`Writer::close`] writes its length.
    pub(crate) fn open(&mut self, command: u8) {
        self.start = self.len;
        self.bytes(&[0, 0, 0, 0, command]);
    }

    pub(crate) fn close(&mut self) {
        let n = (self.len - self.start - 4) as u32;
        if let Some(dst) = self.out.get_mut(self.start..self.start + 4) {
            dst.copy_from_slice(&n.to_be_bytes());
        }
    }

    /// The octets written, or why nothing usable was.
    pub(crate) fn finish(self) -> Result<usize, ApiError> {
        if self.nul {
            Err(ApiError::Nul)
        } else if self.len > self.out.len() {
            Err(ApiError::BufferTooSmall { needed: self.len })
        } else {
            Ok(self.len)
        }
    }
}

impl core::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

/// Writes `args` as a display into the writer (an IP address, say).
pub(crate) fn display(w: &mut Writer<'_>, v: impl core::fmt::Display) {
    let _ = write!(w, "{v}");
}

/// Reads the fields of a reply's data.
pub(crate) struct Fields<'b> {
    rest: &'b [u8],
    command: u8,
}

impl<'b> Fields<'b> {
    pub(crate) fn new(command: u8, data: &'b [u8]) -> Self {
        Self { rest: data, command }
    }

    fn bad(&self, problem: Problem) -> Error {
        Error::Malformed { command: self.command, problem }
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        let (n, rest) = self.rest.split_first_chunk::<4>().ok_or(self.bad(Problem::Truncated))?;
        self.rest = rest;
        Ok(u32::from_be_bytes(*n))
    }

    /// A NUL-terminated string (without its NUL).
    pub(crate) fn string(&mut self) -> Result<&'b [u8], Error> {
        let end = self.rest.iter().position(|&b| b == 0).ok_or(self.bad(Problem::Truncated))?;
        let s = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Ok(s)
    }

    /// An optional last string (present when any byte is left).
    pub(crate) fn optional_string(&mut self) -> Result<Option<&'b [u8]>, Error> {
        if self.rest.is_empty() {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    pub(crate) fn rest(&mut self) -> &'b [u8] {
        core::mem::take(&mut self.rest)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Ends the packet: no byte may be left.
    pub(crate) fn end(&self) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.bad(Problem::TrailingData))
        }
    }

    /// A header field name: printable ASCII without a colon, not empty.
    pub(crate) fn header_name(&mut self) -> Result<&'b [u8], Error> {
        let name = self.string()?;
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_graphic() && b != b':') {
            return Err(self.bad(Problem::HeaderName));
        }
        Ok(name)
    }

    /// A header value: every line break (LF or CRLF) is followed by a space or a tab, and
    /// there is no bare CR and no break at the end — nothing can start a new field.
    pub(crate) fn header_value(&mut self) -> Result<&'b [u8], Error> {
        let value = self.string()?;
        let mut i = 0;
        while i < value.len() {
            let brk = match value[i] {
                b'\r' if value.get(i + 1) == Some(&b'\n') => 2,
                b'\n' => 1,
                b'\r' => return Err(self.bad(Problem::HeaderValue)),
                _ => 0,
            };
            if brk > 0 {
                i += brk;
                if !matches!(value.get(i), Some(b' ' | b'\t')) {
                    return Err(self.bad(Problem::HeaderValue));
                }
            } else {
                i += 1;
            }
        }
        Ok(value)
    }

    /// An address: a non-empty string.
    pub(crate) fn address(&mut self) -> Result<&'b [u8], Error> {
        let a = self.string()?;
        if a.is_empty() {
            return Err(self.bad(Problem::EmptyAddress));
        }
        Ok(a)
    }
}

/// `SMFIR_REPLYCODE`'s string: `4xx` or `5xx`, then the end, a space or a hyphen (more
/// lines), an optional enhanced code of the same class, the text.
pub(crate) fn reply_code(raw: &[u8]) -> Result<Verdict<'_>, Problem> {
    let digits = raw.get(..3).ok_or(Problem::ReplyCode)?;
    if !digits.iter().all(u8::is_ascii_digit) || !matches!(digits[0], b'4' | b'5') {
        return Err(Problem::ReplyCode);
    }
    let code = digits.iter().fold(0u16, |v, &d| v * 10 + u16::from(d - b'0'));
    let line_end = raw.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(raw.len());
    let line = &raw[..line_end];
    let mut text = match line.get(3) {
        None => &line[3..],
        Some(b' ' | b'-') => &line[4..],
        Some(_) => return Err(Problem::ReplyCode),
    };
    let mut enhanced = None;
    if let Some((e, n)) = crate::parse::reply::enhanced_code(text) {
        if u16::from(e.class) == code / 100 {
            enhanced = Some(EnhancedCode::new(e.class, e.subject, e.detail));
            text = &text[n..];
        }
    }
    Ok(Verdict::ReplyCode(ReplyCode { code, enhanced, text, raw }))
}
