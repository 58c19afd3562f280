//! The next CR or LF: where the decoder and the stuffer walk a line at a time around what the
//! block scan (`fast::scan`) could not pass. A vectorisable filter 32 bytes at a time, then a
//! word at a time (SWAR) in the block that holds one.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;
const CRS: u64 = LO * b'\r' as u64;
const LFS: u64 = LO * b'\n' as u64;

/// The lowest set bit of the result is the high bit of the first byte of `w` (in memory order)
/// equal to CR or LF; zero if there is none. Bits above the lowest may be spurious (borrows of
/// the classic has-zero-byte trick), so only the lowest one is used.
#[inline(always)]
fn first_cr_lf(w: u64) -> u64 {
    let x = w ^ CRS;
    let y = w ^ LFS;
    ((x.wrapping_sub(LO) & !x) | (y.wrapping_sub(LO) & !y)) & HI
}

#[inline(always)]
fn word(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// Bytes per step of the block filter.
const BLOCK: usize = 32;

/// Whether a block holds a CR or LF. Written as a branch-free byte-wise OR over a fixed-size
/// array so that the compiler turns it into a few vector compares (SSE2 on x86_64, NEON on
/// aarch64) and one mask test (checked in the assembly: keep the `u8` accumulator, a `bool`
/// one or an iterator fold is not vectorised when inlined).
#[inline(always)]
fn block_has_cr_lf(b: &[u8; BLOCK]) -> bool {
    let mut acc = 0u8;
    for &c in b {
        acc |= ((c == b'\r') | (c == b'\n')) as u8;
    }
    acc != 0
}

/// Index of the first CR or LF in `hay[from..]` (as an index into `hay`), or `hay.len()`.
///
/// [`BLOCK`] bytes per step through the vectorisable filter; only a block that holds a line
/// byte is searched exactly, a word at a time (SWAR).
#[inline(always)]
pub(crate) fn find_line_byte(hay: &[u8], from: usize) -> usize {
    let mut at = from;
    let mut blocks = hay[from..].chunks_exact(BLOCK);
    for b in &mut blocks {
        let b: &[u8; BLOCK] = b.try_into().unwrap();
        if block_has_cr_lf(b) {
            for w in b.chunks_exact(8) {
                let m = first_cr_lf(word(w));
                if m != 0 {
                    return at + (m.trailing_zeros() / 8) as usize;
                }
                at += 8;
            }
        } else {
            at += BLOCK;
        }
    }
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(8);
    for w in &mut words {
        let m = first_cr_lf(word(w));
        if m != 0 {
            return at + (m.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    for &c in words.remainder() {
        if c == b'\r' || c == b'\n' {
            return at;
        }
        at += 1;
    }
    hay.len()
}
