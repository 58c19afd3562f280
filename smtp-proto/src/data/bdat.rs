//! Raw content (BDAT): the bare CR / bare LF rule for content that is not dot-stuffed.

use crate::fast::scan;

/// The bare CR / bare LF rule of [`BarePolicy::Reject`](super::BarePolicy::Reject) for
/// content that is not dot-stuffed (BDAT chunks, RFC 3030): every CR is followed by LF and
/// every LF is preceded by CR, exactly as [`DataDecoder`](super::DataDecoder) checks DATA
/// content. The only state carried across calls (and across chunks) is whether the content so
/// far ends with a CR, so any split gives the same answer.
///
/// Canonical text is skipped with the DATA path's block scan (`fast::scan`), which also stops
/// at a line-start `.`; that costs one CR/LF search before the scan goes on, nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct BareCheck {
    /// The content so far ends with a CR: the next octet decides whether it is bare.
    cr: bool,
}

impl BareCheck {
    /// Checks the next octets of the content. `None`: no bare CR or LF in them (a CR at their
    /// end is held, see [`holds_cr`](Self::holds_cr)). `Some(p)`: `bytes[..p]` are good and the
    /// rule breaks at `p`: a bare LF there, a CR there followed by something else than LF, or
    /// (`p == 0`) a CR held from before followed by something else than LF. After `Some`, the
    /// check is meaningless: the content is refused.
    pub(crate) fn check(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        if self.cr {
            match bytes.first() {
                None => return None,
                Some(b'\n') => {
                    self.cr = false;
                    i = 1;
                }
                Some(_) => return Some(0),
            }
        }
        loop {
            // Nothing is held at `i`: the scan's precondition, and the LF search's below.
            i = scan::skip_canonical::<false>(bytes, i, usize::MAX, usize::MAX).to;
            let p = i + memchr::memchr2(b'\r', b'\n', &bytes[i..])?;
            if bytes[p] == b'\n' {
                // Bare: nothing is held at `i` and `bytes[i..p]` has no CR.
                return Some(p);
            }
            match bytes.get(p + 1) {
                Some(b'\n') => i = p + 2,
                Some(_) => return Some(p),
                None => {
                    self.cr = true;
                    return None;
                }
            }
        }
    }

    /// Whether the content so far ends with a CR (bare if the content ends there).
    pub(crate) fn holds_cr(&self) -> bool {
        self.cr
    }
}
