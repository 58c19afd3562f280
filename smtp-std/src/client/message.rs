//! The message as it goes on the wire: CRLF line ends, the header fields a client adds.

use super::MAX_HEADER_BLOCK;
use std::io::{self, Read};
use std::time::{SystemTime, UNIX_EPOCH};

/// Turns every bare CR and bare LF into CRLF and ends the message with CRLF: the bytes the
/// client puts on the wire (before dot-stuffing), which is what a signature must cover.
pub fn to_crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 2);
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if message.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The message with the added headers in front: what [`add_missing_headers`] returns.
pub type WithHeaders<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Adds `Date:` and `Message-ID:` at the top of the header block when it has none (RFC 5322
/// §3.6: both SHOULD be there; submission servers add them, smarthosts often do not).
///
/// Reads the header block (up to the first empty line, at most [`MAX_HEADER_BLOCK`] bytes)
/// into memory; the body stays in `message` and is streamed by the returned reader. Returns
/// the reader and how many bytes were added. The Message-ID is `<unique@hostname>`.
///
/// ```
/// use std::io::Read;
/// let (mut m, added) = smtp_std::client::add_missing_headers(&b"Subject: hi\n\nbody\n"[..], "me.example")?;
/// let mut s = String::new();
/// m.read_to_string(&mut s)?;
/// assert!(s.starts_with("Date: ") && s.contains("\r\nMessage-ID: <") && s.ends_with("@me.example>\r\nSubject: hi\n\nbody\n"));
/// assert_eq!(added as usize, s.len() - 18);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn add_missing_headers<R: Read>(mut message: R, hostname: &str) -> io::Result<(WithHeaders<R>, u64)> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if header_block_end(&head).is_some() {
            break;
        }
        if head.len() > MAX_HEADER_BLOCK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("header block larger than {MAX_HEADER_BLOCK} bytes (no empty line)"),
            ));
        }
        let n = match message.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        head.extend_from_slice(&chunk[..n]);
    }
    let end = header_block_end(&head).unwrap_or(head.len()).min(head.len());
    let (mut date, mut id) = (false, false);
    for line in head[..end].split(|&b| b == b'\n') {
        date |= is_field(line, b"date");
        id |= is_field(line, b"message-id");
    }
    let mut added = Vec::new();
    if !date {
        added.extend_from_slice(format!("Date: {}\r\n", rfc5322_date(SystemTime::now())).as_bytes());
    }
    if !id {
        added.extend_from_slice(format!("Message-ID: {}\r\n", message_id(hostname)).as_bytes());
    }
    let n = added.len() as u64;
    added.extend_from_slice(&head);
    Ok((io::Cursor::new(added).chain(message), n))
}

/// Where the header block ends (the index of the empty line), if it is in `b`.
pub(super) fn header_block_end(b: &[u8]) -> Option<usize> {
    if b.starts_with(b"\n") || b.starts_with(b"\r\n") {
        return Some(0);
    }
    let lf = memchr_lf_pairs(b)?;
    Some(lf)
}

/// The first `\n\n` or `\n\r\n`: the position after the first LF.
pub(super) fn memchr_lf_pairs(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = b.get(i..).and_then(|s| s.iter().position(|&c| c == b'\n')) {
        let at = i + p + 1;
        match b.get(at..) {
            Some([b'\n', ..]) | Some([b'\r', b'\n', ..]) => return Some(at),
            _ => {}
        }
        i = at;
    }
    None
}

/// Whether a header line is the field `name` (case-insensitive, `Name:` or `Name :`).
pub(super) fn is_field(line: &[u8], name: &[u8]) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name)
        && line[name.len()..].iter().find(|&&c| c != b' ' && c != b'\t') == Some(&b':')
}

/// RFC 5322 §3.3 date in UTC, as written in `Date:` and `Received:` headers.
pub use crate::received::rfc5322_date;

/// `<time.pid.counter.random@hostname>`.
pub fn message_id(hostname: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(count);
    h.write_u128(now.as_nanos());
    let host: String =
        hostname.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    let host = if host.is_empty() { "localhost".to_owned() } else { host };
    format!("<{:x}.{:x}.{:x}.{:016x}@{host}>", now.as_secs(), std::process::id(), count, h.finish())
}
