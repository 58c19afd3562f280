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
}

/// Reads what [`Ret`] asks for, within the limits.
pub(super) fn read_original(original: &mut dyn Read, ret: Ret, max_original: usize) -> io::Result<Attached> {
    let mut buf = Vec::new();
    match ret {
        Ret::Full => {
            original.take(max_original as u64 + 1).read_to_end(&mut buf)?;
            if buf.len() <= max_original {
                let empty = buf.is_empty();
                return Ok(Attached { bytes: to_crlf(&buf), full: true, too_big: None, headers_cut: false, empty });
            }
            let (headers, cut) = header_block(&buf[..buf.len().min(MAX_HEADER_BLOCK)], false);
            Ok(Attached {
                bytes: to_crlf(headers),
                full: false,
                too_big: Some(max_original),
                headers_cut: cut,
                empty: false,
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
    let eight = !attached.bytes.is_ascii();
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
    (headers, attached.bytes.clone())
}
