//! What of the original message goes back with a report (RET), and the report's third part.

use super::*;

/// What of the original is attached, and why not more.
pub(super) struct Attached {
    /// The bytes, CRLF line ends, ending in CRLF (empty when the original was empty).
    pub(super) bytes: Vec<u8>,
    /// The whole message (else its header block).
    pub(super) full: bool,
    /// RET=FULL asked for but the message was over this limit.
    pub(super) too_big: Option<usize>,
    /// The header block was cut at [`MAX_HEADER_BLOCK`].
    pub(super) headers_cut: bool,
    /// Nothing could be read.
    pub(super) empty: bool,
    /// The whole original is attached as it streams ([`super::build_streamed`]); `bytes` is
    /// then its header block only.
    pub(super) streamed: Option<Scan>,
}

/// What one read of an original attached as it streams found.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scan {
    /// Its size with CRLF line ends.
    pub(super) len: u64,
    /// All of it is ASCII.
    pub(super) ascii: bool,
    /// It ends in a line end (else one is added after it).
    pub(super) ends_in_line_end: bool,
}

/// Measures `original` as [`crate::mta::stream::CrlfReader`] gives it; `None` past `max`
/// octets (it is then not read further).
pub(super) fn scan_original(original: &mut dyn Read, max: u64) -> io::Result<Option<Scan>> {
    let mut reader = crate::mta::stream::CrlfReader::new(original);
    let mut scan = Scan { len: 0, ascii: true, ends_in_line_end: true };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(Some(scan)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        scan.len += n as u64;
        if scan.len > max {
            return Ok(None);
        }
        scan.ascii &= buf[..n].is_ascii();
        scan.ends_in_line_end = buf[n - 1] == b'\n';
    }
}

/// Whether `needle` occurs in what `input` reads (CRLF line ends, as attached), at any split.
pub(super) fn contains(input: &mut dyn Read, needle: &[u8]) -> io::Result<bool> {
    let mut reader = crate::mta::stream::CrlfReader::new(input);
    let keep = needle.len().saturating_sub(1);
    let mut buf = vec![0u8; 64 * 1024 + keep];
    let mut have = 0;
    loop {
        let n = match reader.read(&mut buf[have..]) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        have += n;
        if buf[..have].windows(needle.len()).any(|w| w == needle) {
            return Ok(true);
        }
        // Keep the last `keep` octets: an occurrence may straddle two reads.
        let from = have.saturating_sub(keep);
        buf.copy_within(from..have, 0);
        have -= from;
    }
}

/// Reads what [`Ret`] asks for, within the limits.
pub(super) fn read_original(original: &mut dyn Read, ret: Ret, max_original: usize) -> io::Result<Attached> {
    let mut buf = Vec::new();
    match ret {
        Ret::Full => {
            original.take(max_original as u64 + 1).read_to_end(&mut buf)?;
            if buf.len() <= max_original {
                let empty = buf.is_empty();
                return Ok(Attached {
                    bytes: to_crlf(&buf),
                    full: true,
                    too_big: None,
                    headers_cut: false,
                    empty,
                    streamed: None,
                });
            }
            let (headers, cut) = header_block(&buf[..buf.len().min(MAX_HEADER_BLOCK)], false);
            Ok(Attached {
                bytes: to_crlf(headers),
                full: false,
                too_big: Some(max_original),
                headers_cut: cut,
                empty: false,
                streamed: None,
            })
        }
        Ret::Headers => {
            original.take(MAX_HEADER_BLOCK as u64).read_to_end(&mut buf)?;
            let complete = buf.len() < MAX_HEADER_BLOCK;
            let (headers, cut) = header_block(&buf, complete);
            Ok(Attached {
                bytes: to_crlf(headers),
                full: false,
                too_big: None,
                headers_cut: cut,
                empty: buf.is_empty(),
                streamed: None,
            })
        }
    }
}

/// The header block at the start of `message` (without the empty line after it), and whether
/// it was cut short. `complete`: `message` is the whole message, so a message without an empty
/// line is all header; otherwise the block is cut after the last whole line.
pub(super) fn header_block(message: &[u8], complete: bool) -> (&[u8], bool) {
    let mut start = 0;
    while start < message.len() {
        let Some(nl) = message[start..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let line = &message[start..start + nl];
        if line.is_empty() || line == b"\r" {
            return (&message[..start], false);
        }
        start += nl + 1;
    }
    if complete {
        (message, false)
    } else {
        (&message[..start], true)
    }
}

/// `bytes` with every line ending CRLF and a final CRLF ([`crate::client::to_crlf`]); nothing
/// for nothing.
pub(super) fn to_crlf(bytes: &[u8]) -> Vec<u8> {
    if bytes.is_empty() {
        return Vec::new();
    }
    crate::client::to_crlf(bytes)
}

/// The MIME header and body of the third part.
pub(super) fn third_part(attached: &Attached, utf8: bool) -> (String, Vec<u8>) {
    let eight = match &attached.streamed {
        Some(scan) => !scan.ascii,
        None => !attached.bytes.is_ascii(),
    };
    let (description, ctype) = match (attached.full, utf8) {
        (true, true) => ("Undelivered Message", "message/global"),
        (true, false) => ("Undelivered Message", "message/rfc822"),
        (false, true) => ("Undelivered Message Headers", "message/global-headers"),
        (false, false) => ("Undelivered Message Headers", "text/rfc822-headers"),
    };
    let mut headers = format!("Content-Description: {description}\r\nContent-Type: {ctype}");
    if !attached.full && !utf8 && eight {
        // 8-bit header text in a 7-bit report: base64 (as RFC 6533 §6.3 suggests).
        headers.push_str("; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n");
        let encoded = base64::engine::general_purpose::STANDARD.encode(&attached.bytes);
        let mut body = Vec::with_capacity(encoded.len() + encoded.len() / 38 + 2);
        for chunk in encoded.as_bytes().chunks(76) {
            body.extend_from_slice(chunk);
            body.extend_from_slice(b"\r\n");
        }
        return (headers, body);
    }
    let _ = write!(headers, "\r\nContent-Transfer-Encoding: {}\r\n", if eight { "8bit" } else { "7bit" });
    if attached.streamed.is_some() {
        // The body streams after the headers ([`super::Built`]).
        return (headers, Vec::new());
    }
    (headers, attached.bytes.clone())
}
