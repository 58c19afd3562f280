//! Eight bytes at a time (SWAR, "SIMD within a register") scans for the parsers' hot spans,
//! in safe code: a byte-class test over a `u64` whose lowest flagged byte is exact.
//!
//! The tricks, per byte `x` of a word (Hacker's Delight §6-1):
//! - `x < n` (for `n <= 0x80`): the high bit of `(x - n) & !x`;
//! - `x == 0`: the high bit of `(x - 0x01) & !x`.
//!
//! Subtracting across a whole word lets a borrow leak from one byte into the next, but only out
//! of a byte that was itself flagged, so bytes *above* the lowest flagged byte may be flagged
//! falsely while the lowest one is always right. Every function here uses only the lowest.

/// `0x01` in every byte.
const LO: u64 = u64::from_le_bytes([0x01; 8]);
/// `0x80` in every byte.
const HI: u64 = u64::from_le_bytes([0x80; 8]);

/// High bit set in the bytes of `w` below `n` (`n <= 0x80`; exact up to the lowest one).
#[inline(always)]
const fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(LO * n as u64) & !w & HI
}

/// High bit set in the bytes of `w` equal to `c` (exact up to the lowest one).
#[inline(always)]
const fn equal(w: u64, c: u8) -> u64 {
    below(w ^ (LO * c as u64), 1)
}

/// High bit set in the bytes of `w` within `lo..=hi` (`hi < 0x80`), exact for every byte below
/// 0x80 and up to the lowest byte at or above it (where an addition may carry upward):
/// `x + (0x80 - lo)` reaches 0x80 exactly when `x >= lo`, `x + (0x7F - hi)` when `x > hi`.
#[inline(always)]
const fn within(w: u64, lo: u8, hi: u8) -> u64 {
    w.wrapping_add(LO * (0x80 - lo) as u64) & !w.wrapping_add(LO * (0x7F - hi) as u64) & HI
}

/// The index of the first byte of `b` at or after `from` that `stop` flags (word-wise) or that
/// `stop_byte` says stops the span (for the tail shorter than a word); `b.len()` if none.
#[inline(always)]
fn scan(b: &[u8], from: usize, stop: impl Fn(u64) -> u64, stop_byte: impl Fn(u8) -> bool) -> usize {
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let m = stop(u64::from_le_bytes(w));
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if stop_byte(c) {
            return i;
        }
        i += 1;
    }
    b.len().max(from)
}

/// The index of the first byte of `b` that is a control character (`< 0x20`) or not ASCII
/// (`>= 0x80`), or `b.len()`. Printable ASCII and DEL pass.
///
/// ```text
/// w - 0x20 borrows (high bit set, `!w` high bit set) exactly for bytes < 0x20; `| w` adds
/// the bytes with the high bit already set (>= 0x80).
/// ```
#[inline]
pub(crate) fn first_ctl_or_non_ascii(b: &[u8]) -> usize {
    scan(b, 0, |w| (w.wrapping_sub(LO * 0x20) | w) & HI, |c| !(0x20..0x80).contains(&c))
}

/// The end of an `esmtp-value` run starting at `from`: the first byte that is not
/// `%d33-60 / %d62-126 / UTF8-non-ascii` (that is: a control, space, `=` or DEL), or `b.len()`.
#[inline]
pub(crate) fn value_end(b: &[u8], from: usize) -> usize {
    scan(
        b,
        from,
        |w| {
            // Bytes >= 0x80 are never flagged: `below` masks them out with `!w`.
            below(w, 0x21) | equal(w, b'=') | equal(w, 0x7F)
        },
        |c| c <= 0x20 || c == b'=' || c == 0x7F,
    )
}

/// The end of an `esmtp-keyword` run starting at `from`: the first byte that is not
/// `ALPHA / DIGIT / "-"` (RFC 5321 §4.1.2), or `b.len()`.
#[inline]
pub(crate) fn keyword_end(b: &[u8], from: usize) -> usize {
    scan(
        b,
        from,
        |w| {
            // Letters fold to lower case with `| 0x20`; no other byte folds into `a..=z`.
            let ok = within(w | (LO * 0x20), b'a', b'z') | within(w, b'0', b'9') | within(w, b'-', b'-');
            // Bytes >= 0x80 are flagged by `| w`; carries only run upward from them.
            (!ok | w) & HI
        },
        |c| !(c.is_ascii_alphanumeric() || c == b'-'),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time definitions the word-wise scans must equal.
    fn reference(b: &[u8], from: usize, stop: impl Fn(u8) -> bool) -> usize {
        (from..b.len()).find(|&i| stop(b[i])).unwrap_or(b.len().max(from))
    }

    #[test]
    fn every_byte_at_every_offset() {
        // Each byte value placed at each position of a 19-byte run of a passing byte, so it
        // falls in the first word, the second and the tail; with a second stopper later on, and
        // after a byte that borrows.
        for c in 0..=255u8 {
            for at in 0..19 {
                for filler in [b'a', 0xC3, b'~', b'Z', b'-', b'9'] {
                    let mut b = [filler; 19];
                    b[at] = c;
                    let ctl = |c: u8| !(0x20..0x80).contains(&c);
                    let val = |c: u8| c <= 0x20 || c == b'=' || c == 0x7F;
                    let kw = |c: u8| !(c.is_ascii_alphanumeric() || c == b'-');
                    assert_eq!(first_ctl_or_non_ascii(&b), reference(&b, 0, ctl), "{c:#x} at {at}");
                    for from in [0, 1, 7, 8, 19, 25] {
                        assert_eq!(value_end(&b, from), reference(&b, from, val), "{c:#x} at {at} from {from}");
                        assert_eq!(keyword_end(&b, from), reference(&b, from, kw), "{c:#x} at {at} from {from}");
                    }
                    if at + 1 < 19 {
                        b[at + 1] = 0;
                        assert_eq!(first_ctl_or_non_ascii(&b), reference(&b, 0, ctl));
                        assert_eq!(value_end(&b, 0), reference(&b, 0, val));
                        assert_eq!(keyword_end(&b, 0), reference(&b, 0, kw));
                    }
                }
            }
        }
    }
}
