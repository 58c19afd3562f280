//! The header section of a message (RFC 5322 §2.2): the fields asked for, read from a spooled
//! file (or any reader) without reading the message.
//!
//! [`read_fields`] reads up to the empty line that ends the section, at most a limit of octets
//! ([`MAX_HEADER_SECTION`] for submission), and gives every field with one of the names asked
//! for (case-insensitive, any number of them, in order), unfolded. Lines end with `CRLF` or a
//! bare `LF` alike, so that a message that came in with bare line ends under a permissive
//! policy is read as the mail readers and our own client (which turns every bare `CR` and `LF`
//! into `CRLF`) read it. A `CR` anywhere else in the section is an error
//! ([`HeaderError::BareCr`]): some readers end a line there and some do not, so the fields of
//! such a section are not the same for everyone.
//!
//! A line without a `:` (and not a continuation) belongs to no field and is skipped; the name
//! of a field may be followed by white space before its `:` (RFC 5322's obsolete syntax).
//!
//! ```
//! use smtp_std::mta::header::{read_fields, MAX_HEADER_SECTION};
//!
//! let message = b"from: Alice\r\n <alice@a.test>\nSubject: hi\r\nFROM : b@b.test\r\n\r\nFrom: body@c.test\r\n";
//! let fields = read_fields(&message[..], &["From"], MAX_HEADER_SECTION).unwrap();
//! let values: Vec<&[u8]> = fields.iter().map(|f| f.value.as_slice()).collect();
//! assert_eq!(values, [&b" Alice <alice@a.test>"[..], b" b@b.test"]);
//! ```

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

/// The largest header section read for a submission's sender check (256 KiB): a longer one
/// is refused. Far more than the fields of any real message (a thousand recipients in `To:`
/// is some 40 KiB), and bounded memory per session.
pub const MAX_HEADER_SECTION: u64 = 256 * 1024;

/// One header field, unfolded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name as written (without white space before the `:`).
    pub name: String,
    /// Everything after the `:`, the line ends of its folds removed (the white space that
    /// starts each continuation line kept); octets as they came.
    pub value: Vec<u8>,
}

/// Why the header section could not be read.
#[derive(Debug)]
pub enum HeaderError {
    /// No empty line within the limit (octets), and more content after it.
    TooLong {
        /// The limit, in octets.
        limit: u64,
    },
    /// A `CR` not followed by `LF` in the header section.
    BareCr,
    /// The reader failed.
    Io(io::Error),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::TooLong { limit } => write!(f, "header section longer than {limit} octets"),
            HeaderError::BareCr => f.write_str("bare CR in the header section"),
            HeaderError::Io(e) => write!(f, "cannot read the header section: {e}"),
        }
    }
}

impl std::error::Error for HeaderError {}

impl From<io::Error> for HeaderError {
    fn from(e: io::Error) -> Self {
        HeaderError::Io(e)
    }
}

/// The fields of `message`'s header section named one of `names` (ASCII case-insensitive),
/// in order, each unfolded. Reads up to the empty line that ends the section (or the end of
/// `message`), at most `limit` octets of it. See the module notes.
pub fn read_fields(message: impl Read, names: &[&str], limit: u64) -> Result<Vec<Field>, HeaderError> {
    let mut scan = Scan { names, fields: Vec::new(), current: None };
    let mut reader = BufReader::with_capacity(16 * 1024, message);
    let mut line: Vec<u8> = Vec::new();
    let mut read: u64 = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if buf.is_empty() {
            // The end of the message without an empty line: all of it was header.
            if !line.is_empty() {
                scan.line(&line)?;
            }
            return Ok(scan.finish());
        }
        let room = usize::try_from(limit.saturating_sub(read)).unwrap_or(usize::MAX);
        match buf.iter().position(|&b| b == b'\n') {
            Some(lf) if lf < room => {
                line.extend_from_slice(&buf[..lf]);
                reader.consume(lf + 1);
                read += lf as u64 + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.is_empty() {
                    return Ok(scan.finish());
                }
                scan.line(&line)?;
                line.clear();
            }
            _ if buf.len() <= room => {
                let n = buf.len();
                line.extend_from_slice(buf);
                reader.consume(n);
                read += n as u64;
            }
            _ => return Err(HeaderError::TooLong { limit }),
        }
    }
}

/// The fields found so far.
struct Scan<'n> {
    names: &'n [&'n str],
    fields: Vec<Field>,
    /// A wanted field whose continuation lines may follow.
    current: Option<Field>,
}

impl Scan<'_> {
    /// One line of the section, without its line end.
    fn line(&mut self, line: &[u8]) -> Result<(), HeaderError> {
        if line.contains(&b'\r') {
            return Err(HeaderError::BareCr);
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(f) = &mut self.current {
                f.value.extend_from_slice(line);
            }
            return Ok(());
        }
        self.fields.extend(self.current.take());
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Ok(());
        };
        let name = trim_end(&line[..colon]);
        if self.names.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name)) {
            let name = String::from_utf8_lossy(name).into_owned();
            self.current = Some(Field { name, value: line[colon + 1..].to_vec() });
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<Field> {
        self.fields.extend(self.current.take());
        self.fields
    }
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_sender(message: &[u8]) -> Vec<(String, String)> {
        read_fields(message, &["From", "Sender"], MAX_HEADER_SECTION)
            .unwrap()
            .into_iter()
            .map(|f| (f.name, String::from_utf8(f.value).unwrap()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn finds_every_field_unfolded_with_either_line_end() {
        let m = b"Received: from x\r\n\tby y\r\nFrom: Alice\r\n <alice@a.test>,\r\n\tbob@a.test\r\nSubject: s\r\nsender: carol@a.test\r\nFROM:x@y.test\r\n\r\nFrom: body@z.test\r\n";
        assert_eq!(
            from_sender(m),
            pairs(&[("From", " Alice <alice@a.test>,\tbob@a.test"), ("sender", " carol@a.test"), ("FROM", "x@y.test")])
        );
        let lf: Vec<u8> = m.iter().copied().filter(|&b| b != b'\r').collect();
        assert_eq!(from_sender(&lf), from_sender(m));
        // Mixed line ends, the empty line bare.
        assert_eq!(
            from_sender(b"From: a@x.test\nTo: b\r\nFrom : c@x.test\n\nFrom: d@x.test\n"),
            pairs(&[("From", " a@x.test"), ("From", " c@x.test")])
        );
    }

    #[test]
    fn odd_lines() {
        // No empty line: everything is header. A header-only message without a final line end.
        assert_eq!(from_sender(b"Subject: x\r\nFrom: a@x.test"), pairs(&[("From", " a@x.test")]));
        // Lines without a colon, a continuation with no field before it, other names.
        assert_eq!(
            from_sender(b" lost\r\nFrom bob@mbox\r\nX-From: no\r\nFromage: no\r\nFrom: yes\r\n"),
            pairs(&[("From", " yes")])
        );
        // A white-space-only line continues the field; only an empty line ends the section.
        assert_eq!(from_sender(b"From: a\r\n \r\nSender: b\r\n"), pairs(&[("From", " a "), ("Sender", " b")]));
        assert!(from_sender(b"").is_empty());
        assert!(from_sender(b"\r\nFrom: a\r\n").is_empty());
    }

    #[test]
    fn bare_cr_is_an_error() {
        for m in [&b"Subject: x\r\r\nFrom: b@b.test\r\n"[..], b"Subject: x\rFrom: b@b.test\r\n", b"A: b\r\nFrom: x\r"] {
            assert!(matches!(read_fields(m, &["From"], 1000), Err(HeaderError::BareCr)), "{m:?}");
        }
        // In the body it does not matter.
        assert_eq!(from_sender(b"From: a\r\n\r\nx\ry\r"), pairs(&[("From", " a")]));
    }

    #[test]
    fn bounded_by_the_limit() {
        let mut m = b"From: a@x.test\r\n".to_vec();
        m.extend(std::iter::repeat_n(b"X-Filler: 0123456789\r\n".as_slice(), 100).flatten());
        let section = m.len() as u64 + 2;
        m.extend_from_slice(b"\r\n");
        m.extend(std::iter::repeat_n(b'b', 1 << 20));
        // The body is never read: the limit counts the header section only.
        assert_eq!(read_fields(&m[..], &["From"], section).unwrap().len(), 1);
        assert!(
            matches!(read_fields(&m[..], &["From"], section - 1), Err(HeaderError::TooLong { limit }) if limit == section - 1)
        );
        // One endless line.
        let endless = vec![b'a'; 1 << 20];
        assert!(matches!(read_fields(&endless[..], &["From"], 4096), Err(HeaderError::TooLong { .. })));
        // A reader handing out one octet at a time gives the same fields.
        struct Slow<'a>(&'a [u8]);
        impl Read for Slow<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let m = b"From: A\r\n <a@x.test>\nSender: s@x.test\r\n\r\nbody";
        let slow = read_fields(Slow(m), &["From", "Sender"], 1000).unwrap();
        assert_eq!(slow, read_fields(&m[..], &["From", "Sender"], 1000).unwrap());
    }
}
