//! Values from the network made safe for a header field or a line of text: cleaned, escaped
//! for 7-bit reports, folded and wrapped within RFC 5322's line limits.

use super::*;

/// A value from the network made safe for one header field or text line: line breaks join
/// lines with one space, other control characters become spaces, runs of spaces one, at most
/// `max` characters (then `...`). Without `utf8`, non-ASCII characters become `\x{HHHH}`.
pub(super) fn clean(value: &str, utf8: bool, max: usize) -> String {
    let mut out = String::with_capacity(value.len().min(max + 16));
    for (count, c) in value.chars().enumerate() {
        if count >= max {
            out.push_str("...");
            break;
        }
        if c.is_control() || c.is_whitespace() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
        } else if c.is_ascii() || utf8 {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:04X}}}", c as u32);
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// An address with its type for `Final-Recipient`/`Original-Recipient` (RFC 3464 §2.3.1,
/// RFC 6533 §3): `rfc822; addr`, or `utf-8; addr` for a non-ASCII one (escaped as
/// utf-8-addr-xtext in a 7-bit report).
pub(super) fn typed_address(kind: &str, address: &str, utf8: bool) -> String {
    let kind = kind.trim();
    let kind =
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') { "rfc822" } else { kind };
    let address = clean(address.trim(), true, MAX_ADDRESS);
    if address.is_ascii() {
        return format!("{kind}; {address}");
    }
    if !kind.eq_ignore_ascii_case("rfc822") && !kind.eq_ignore_ascii_case("utf-8") {
        return format!("{kind}; {}", clean(&address, utf8, MAX_ADDRESS));
    }
    if utf8 {
        return format!("utf-8; {address}");
    }
    let mut x = String::from("utf-8; ");
    for c in address.chars() {
        if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
            x.push(c);
        } else {
            let _ = write!(x, "\\x{{{:X}}}", c as u32);
        }
    }
    x
}

/// Appends `Name: value` CRLF, folded at spaces before [`WRAP`] columns; a run without spaces
/// longer than [`MAX_WORD`] is split (nothing else can keep the line within RFC 5322's 998).
pub(super) fn fold_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let mut column = name.len() + 1;
    let mut first = true;
    for word in words(value) {
        let width = word.chars().count();
        if !first && column + 1 + width > WRAP {
            out.push_str("\r\n");
            column = 0;
        }
        out.push(' ');
        out.push_str(word);
        column += 1 + width;
        first = false;
    }
    out.push_str("\r\n");
}

/// The words of `text` (split at spaces), with words longer than [`MAX_WORD`] bytes split at
/// character boundaries.
pub(super) fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(' ').filter(|w| !w.is_empty()).flat_map(|mut word| {
        let mut pieces = Vec::new();
        while word.len() > MAX_WORD {
            let mut at = MAX_WORD;
            while !word.is_char_boundary(at) {
                at -= 1;
            }
            pieces.push(&word[..at]);
            word = &word[at..];
        }
        pieces.push(word);
        pieces
    })
}

/// Appends `text` wrapped at [`WRAP`] columns, each line starting with `indent`, CRLF ends.
pub(super) fn wrap(out: &mut String, indent: &str, text: &str) {
    let mut column = 0;
    for word in words(text) {
        let width = word.chars().count();
        if column > 0 && column + 1 + width > WRAP {
            out.push_str("\r\n");
            column = 0;
        }
        if column == 0 {
            out.push_str(indent);
            column = indent.len();
        } else {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += width;
    }
    if column > 0 {
        out.push_str("\r\n");
    }
}
