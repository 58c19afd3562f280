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
                for filler in [b'a', 0xC3, b'~'] {
                    let mut b = [filler; 19];
                    b[at] = c;
                    let ctl = |c: u8| !(0x20..0x80).contains(&c);
                    let val = |c: u8| c <= 0x20 || c == b'=' || c == 0x7F;
                    assert_eq!(first_ctl_or_non_ascii(&b), reference(&b, 0, ctl), "{c:#x} at {at}");
                    for from in [0, 1, 7, 8, 19, 25] {
                        assert_eq!(value_end(&b, from), reference(&b, from, val), "{c:#x} at {at} from {from}");
                    }
                    if at + 1 < 19 {
                        b[at + 1] = 0;
                        assert_eq!(first_ctl_or_non_ascii(&b), reference(&b, 0, ctl));
                        assert_eq!(value_end(&b, 0), reference(&b, 0, val));
                    }
                }
            }
        }
    }
}
