//! xtext (RFC 3461 §4): `+XX` hex escapes for bytes outside `!`..`~`, `+` and `=`.

/// An xtext value as it appeared on the wire (still encoded). Zero-copy; decode on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct XText<'a>(pub(crate) &'a str);

impl<'a> XText<'a> {
    /// Validates `raw` as xtext (RFC 3461 §4) and wraps it.
    pub fn new(raw: &'a str) -> Option<Self> {
        let _ = raw;
        None // helper: implement
    }

    /// The encoded text as sent.
    pub fn as_encoded(&self) -> &'a str {
        self.0
    }

    /// The decoded bytes, one at a time.
    pub fn decoded(&self) -> impl Iterator<Item = u8> + 'a {
        self.0.bytes()
    }
}
