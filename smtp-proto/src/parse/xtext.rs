//! xtext (RFC 3461 §4): `+XX` hex escapes for bytes outside `!`..`~`, `+` and `=`.

use super::path::byte_class;

/// Octets that stand for themselves in xtext (RFC 3461 §4):
///
/// ```text
/// xtext   = *( xchar / hexchar )
/// xchar   = any ASCII CHAR between "!" (33) and "~" (126) inclusive,
///           except for "+" and "=".
/// hexchar = ASCII "+" immediately followed by two upper case
///           hexadecimal digits
/// ```
static XCHAR: [bool; 256] = byte_class(&[(b'!', b'*'), (b',', b'<'), (b'>', b'~')]);

/// The value of an upper-case hexadecimal digit (`0-9`, `A-F`), as xtext requires.
#[inline]
pub(crate) const fn upper_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Whether `raw` is xtext; with `utf8`, UTF-8 non-ASCII characters are allowed as well (the
/// `utf-8-addr-xtext` of RFC 6533, used by `ORCPT=utf-8;...`). `raw` is a `str`, so any
/// non-ASCII octet in it belongs to a well-formed UTF-8 character.
pub(crate) fn is_xtext(raw: &str, utf8: bool) -> bool {
    let b = raw.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if XCHAR[c as usize] || (utf8 && c >= 0x80) {
            i += 1;
        } else if c == b'+' {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(&h), Some(&l)) if upper_hex(h).is_some() && upper_hex(l).is_some() => i += 3,
                _ => return false,
            }
        } else {
            return false;
        }
    }
    true
}

/// An xtext value as it appeared on the wire (still encoded). Zero-copy; decode on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct XText<'a>(pub(crate) &'a str);

impl<'a> XText<'a> {
    /// Validates `raw` as xtext (RFC 3461 §4) and wraps it. The empty string is valid xtext.
    pub fn new(raw: &'a str) -> Option<Self> {
        if is_xtext(raw, false) {
            Some(XText(raw))
        } else {
            None
        }
    }

    /// The encoded text as sent.
    pub fn as_encoded(&self) -> &'a str {
        self.0
    }

    /// The decoded bytes, one at a time.
    ///
    /// A `+` not followed by two upper-case hex digits (impossible for a value built by
    /// [`XText::new`]) is passed through unchanged.
    pub fn decoded(&self) -> impl Iterator<Item = u8> + 'a {
        Decoded { b: self.0.as_bytes(), i: 0 }
    }

    /// The number of bytes [`XText::decoded`] yields.
    pub fn decoded_len(&self) -> usize {
        self.decoded().count()
    }

    /// Decodes into `out`; returns the decoded length, or `None` if `out` is too small (in
    /// which case `out` holds a truncated prefix).
    pub fn decode_into(&self, out: &mut [u8]) -> Option<usize> {
        let mut n = 0;
        for byte in self.decoded() {
            *out.get_mut(n)? = byte;
            n += 1;
        }
        Some(n)
    }
}

/// Iterator behind [`XText::decoded`].
struct Decoded<'a> {
    b: &'a [u8],
    i: usize,
}

impl Iterator for Decoded<'_> {
    type Item = u8;

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        if c == b'+' {
            if let (Some(h), Some(l)) =
                (self.b.get(self.i + 1).and_then(|&h| upper_hex(h)), self.b.get(self.i + 2).and_then(|&l| upper_hex(l)))
            {
                self.i += 3;
                return Some(h << 4 | l);
            }
        }
        self.i += 1;
        Some(c)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.b.len().saturating_sub(self.i);
        (left.div_ceil(3), Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> std::vec::Vec<u8> {
        XText::new(s).unwrap().decoded().collect()
    }

    #[test]
    fn validates() {
        assert!(XText::new("").is_some());
        assert!(XText::new("abc").is_some());
        assert!(XText::new("a+2Bb").is_some());
        assert!(XText::new("!~<>").is_some());
        assert!(XText::new("a+2b").is_none(), "lower-case hex");
        assert!(XText::new("a+2").is_none());
        assert!(XText::new("a+").is_none());
        assert!(XText::new("+G0").is_none());
        assert!(XText::new("a=b").is_none());
        assert!(XText::new("a b").is_none());
        assert!(XText::new("a\tb").is_none());
        assert!(XText::new("é").is_none());
        assert!(XText::new("\u{7f}").is_none());
    }

    #[test]
    fn decodes() {
        assert_eq!(dec("a+2Bb+3D"), b"a+b=");
        assert_eq!(dec("+00+FF"), [0u8, 255]);
        assert_eq!(dec(""), b"");
        let x = XText::new("x+20y").unwrap();
        assert_eq!(x.decoded_len(), 3);
        assert_eq!(x.as_encoded(), "x+20y");
        let mut buf = [0u8; 3];
        assert_eq!(x.decode_into(&mut buf), Some(3));
        assert_eq!(&buf, b"x y");
        let mut small = [0u8; 2];
        assert_eq!(x.decode_into(&mut small), None);
        assert_eq!(x.decode_into(&mut []), None);
        assert_eq!(XText::new("").unwrap().decode_into(&mut []), Some(0));
    }

    #[test]
    fn unvalidated_decode_does_not_panic() {
        let v: std::vec::Vec<u8> = XText("a+4").decoded().collect();
        assert_eq!(v, b"a+4");
        let v: std::vec::Vec<u8> = XText("+").decoded().collect();
        assert_eq!(v, b"+");
    }

    #[test]
    fn utf8_variant() {
        assert!(is_xtext("jöe+2B", true));
        assert!(!is_xtext("jöe", false));
        assert!(!is_xtext("a b", true));
    }
}
