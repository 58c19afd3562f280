//! The block scan shared by both directions (and the BDAT bare CR/LF check,
//! `data::BareCheck`): skips canonical text, a block at a time.
//!
//! Canonical text is what neither side has to touch: every CR is followed by LF, every LF is
//! preceded by CR, and no line starts with `.`. Each of these is a property of a *pair* of
//! adjacent bytes, so a block is checked by comparing the block with itself shifted by one
//! byte: for every position `k`, with `p` the byte before and `c` the byte at `k`,
//!
//! ```text
//! (c == LF) != (p == CR)        a bare LF at k, or a bare CR at k - 1
//! (c == '.') & (p == LF)        a line starting with '.' at k
//! ```
//!
//! Written as a branch-free loop over fixed-size arrays, the compiler turns this into vector
//! compares and one mask test per block (SSE2 on x86_64, NEON on aarch64; checked in the
//! assembly). The scan stops at the first pair of a block that fails; the caller goes on a
//! CR/LF at a time from there, and comes back here after it. The last, partial block of the
//! input is checked the same way (padded with zeros, which are none of CR, LF and dot), so
//! every read is scanned to its end; a CR or LF there waits for the next read.
//!
//! Three builds, the fastest the CPU runs chosen at run time: AVX-512BW intrinsics (one load
//! and three compares into 64-bit masks per block, two blocks per step, a masked load for the
//! last one, [`avx512`]), the portable code compiled with AVX2, and the portable code for the target's baseline (the only one without `std`,
//! and the one miri runs). The `unsafe` calls of those builds and the intrinsics' loads and
//! stores are all of the crate's `unsafe` (with `fast::printable_prefix`); the `scan_paths` fuzz target holds every build to the
//! portable one, in all four forms (line limit or not, copying or not).

/// Pairs checked per block.
pub(crate) const BLOCK: usize = 64;

/// Whether the pairs `(w[k], w[k + 1])` of a block are canonical, and whether the block has an
/// LF (in `w[..BLOCK]`, i.e. counting the byte before the block and not its last byte).
#[inline(always)]
fn block(w: &[u8; BLOCK + 1]) -> (bool, bool) {
    let (prev, cur) = (&w[..BLOCK], &w[1..]);
    let mut bad = 0u8;
    let mut lf = 0u8;
    for k in 0..BLOCK {
        let (p, c) = (prev[k], cur[k]);
        bad |= (((c == b'\n') ^ (p == b'\r')) | ((c == b'.') & (p == b'\n'))) as u8;
        lf |= (p == b'\n') as u8;
    }
    (bad == 0, lf != 0)
}

/// The offset of the first pair of the block that is not canonical (`BLOCK` if none): the same
/// compares, stored as bytes (vectorised), then the first non-zero byte a word at a time.
#[inline(always)]
fn first_bad(w: &[u8; BLOCK + 1]) -> usize {
    let (prev, cur) = (&w[..BLOCK], &w[1..]);
    let mut v = [0u8; BLOCK];
    for k in 0..BLOCK {
        let (p, c) = (prev[k], cur[k]);
        v[k] = (((c == b'\n') ^ (p == b'\r')) | ((c == b'.') & (p == b'\n'))) as u8;
    }
    for (j, c) in v.chunks_exact(8).enumerate() {
        let x = u64::from_le_bytes(c.try_into().unwrap());
        if x != 0 {
            return j * 8 + (x.trailing_zeros() / 8) as usize;
        }
    }
    BLOCK
}

/// Skips canonical text in `hay` from `from`, where the caller is inside a line with nothing
/// held (the byte at `from` is not a line-start dot to check). Returns `r >= from` such that:
///
/// - every CR in `hay[from..r]` is followed by LF, every LF there is preceded by CR (inside
///   `hay[from..r]`) and followed by a byte other than `.` (inside `hay[from..r]`); so the
///   caller may continue at `r` exactly as if it had walked those lines one by one;
/// - `hay[r - 1]` (if `r > from`) is not a CR: nothing is held at `r`, which is inside a line
///   or at the start of one whose first byte is not `.`;
/// - with `LIMIT`: every line that ends (its LF) in `hay[from..r]` ends at or before its stop,
///   where `stop` is the first index that would cross the limit for the line around `from`
///   and `max_line` (`>= BLOCK`) is the limit for the lines after it.
///
/// `r == from` when nothing could be skipped.
#[inline]
pub(crate) fn skip_canonical<const LIMIT: bool>(hay: &[u8], from: usize, stop: usize, max_line: usize) -> usize {
    dispatch::<LIMIT, false>(hay, from, stop, max_line, &mut [])
}

/// [`skip_canonical`] that also copies what it skips: `out[..r - from]` becomes
/// `hay[from..r]` (and more of `out` may be overwritten). `out` must be at least
/// `hay.len() - from` long. One pass over the bytes instead of a scan and then a copy.
#[inline]
pub(crate) fn copy_canonical<const LIMIT: bool>(
    hay: &[u8],
    from: usize,
    stop: usize,
    max_line: usize,
    out: &mut [u8],
) -> usize {
    dispatch::<LIMIT, true>(hay, from, stop, max_line, out)
}

/// The builds of the scan, fastest first (the dispatch takes the first the CPU runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Build {
    /// [`avx512::skip`]: explicit AVX-512BW intrinsics.
    Avx512,
    /// [`skip_portable`] compiled with AVX2 enabled.
    Avx2,
    /// [`skip_portable`] for the target's baseline.
    Portable,
}

/// The hot path's dispatch. The same arms as [`run`], written out: going through `run` with a
/// chosen [`Build`] (a second detection and a match) measured ~6% slower on the zero-copy bench.
#[inline(always)]
fn dispatch<const LIMIT: bool, const COPY: bool>(
    hay: &[u8],
    from: usize,
    stop: usize,
    max_line: usize,
    out: &mut [u8],
) -> usize {
    #[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
    {
        if std::is_x86_feature_detected!("avx512bw") {
            // SAFETY: `avx512::skip` needs AVX-512BW (and the AVX-512F it implies), which the
            // CPU was just found to have.
            return unsafe { avx512::skip::<LIMIT, COPY>(hay, from, stop, max_line, out) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: `skip_avx2` is `skip_portable` compiled with AVX2 enabled; calling it is
            // sound exactly when the CPU has AVX2, which was just checked.
            return unsafe { skip_avx2::<LIMIT, COPY>(hay, from, stop, max_line, out) };
        }
    }
    skip_portable::<LIMIT, COPY>(hay, from, stop, max_line, out)
}

/// The scan in a given build, for the tests and the fuzz target; `None` if this CPU (or this
/// compilation: no `std`, not x86_64, miri) cannot run it.
pub(crate) fn run<const LIMIT: bool, const COPY: bool>(
    build: Build,
    hay: &[u8],
    from: usize,
    stop: usize,
    max_line: usize,
    out: &mut [u8],
) -> Option<usize> {
    match build {
        Build::Portable => Some(skip_portable::<LIMIT, COPY>(hay, from, stop, max_line, out)),
        #[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
        Build::Avx512 if std::is_x86_feature_detected!("avx512bw") => {
            // SAFETY: `avx512::skip` needs AVX-512BW (and the AVX-512F it implies), which the
            // CPU was just found to have.
            Some(unsafe { avx512::skip::<LIMIT, COPY>(hay, from, stop, max_line, out) })
        }
        #[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
        Build::Avx2 if std::is_x86_feature_detected!("avx2") => {
            // SAFETY: `skip_avx2` is `skip_portable` compiled with AVX2 enabled; calling it is
            // sound exactly when the CPU has AVX2, which was just checked.
            Some(unsafe { skip_avx2::<LIMIT, COPY>(hay, from, stop, max_line, out) })
        }
        _ => None,
    }
}

/// [`avx512::floor`] if the CPU runs it (for the bench).
pub(crate) fn floor(hay: &[u8]) -> Option<u64> {
    #[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
    if std::is_x86_feature_detected!("avx512bw") {
        // SAFETY: `avx512::floor` needs AVX-512BW, which the CPU was just found to have.
        return Some(unsafe { avx512::floor(hay) });
    }
    let _ = hay;
    None
}

/// [`skip_portable`] compiled for AVX2 (twice the bytes per compare of the SSE2 baseline).
#[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
#[target_feature(enable = "avx2")]
fn skip_avx2<const LIMIT: bool, const COPY: bool>(
    hay: &[u8],
    from: usize,
    stop: usize,
    max_line: usize,
    out: &mut [u8],
) -> usize {
    skip_portable::<LIMIT, COPY>(hay, from, stop, max_line, out)
}

/// [`skip_canonical`] (and, with `COPY`, [`copy_canonical`]) in plain Rust, for the target's
/// baseline vector unit (or none).
#[inline(always)]
pub(crate) fn skip_portable<const LIMIT: bool, const COPY: bool>(
    hay: &[u8],
    from: usize,
    mut stop: usize,
    max_line: usize,
    out: &mut [u8],
) -> usize {
    debug_assert!(!LIMIT || max_line >= BLOCK);
    let end = hay.len();
    if end < BLOCK + 1 || from > end - (BLOCK + 1) || hay[from] == b'\n' {
        return from;
    }
    // Blocks of pairs ending at `i..i + BLOCK`; pair `k` is `(hay[k - 1], hay[k])`. The first
    // block starts at `from + 1`: the byte at `from` is a CR or text, both checked by pair
    // `from + 1`.
    let mut i = from + 1;
    if COPY {
        out[0] = hay[from];
    }
    'scan: {
        while i <= end - BLOCK {
            let w: &[u8; BLOCK + 1] = hay[i - 1..i + BLOCK].try_into().unwrap();
            if COPY {
                // Whether or not the block is canonical: the caller uses what comes before `r`.
                out[i - from..i - from + BLOCK].copy_from_slice(&w[1..]);
            }
            let (clean, lf) = block(w);
            if !clean {
                // Go on up to the first pair that is not canonical, unless that passes the end
                // of a line that may be too long (see below).
                if !(LIMIT && lf && i + BLOCK > stop) {
                    i += first_bad(w);
                }
                break 'scan;
            }
            if LIMIT && lf {
                // Lines ending in this block started at or after the stop's line, or at or after
                // `i` (an LF of this block is at `i - 1` or later); the ones starting after `i`
                // are at most BLOCK long, within `max_line`. So checking the block end against
                // `stop` covers the first, and `i + max_line` is a lower bound of the stop of the
                // line that goes on after the block.
                if i + BLOCK > stop {
                    break 'scan;
                }
                stop = i.saturating_add(max_line);
            }
            i += BLOCK;
        }
        // The last `n < BLOCK` pairs, as one more block padded with zeros (not CR, LF or dot,
        // so a padding pair fails only after a CR at the end, whose LF is not here yet: the
        // back-up below). Without it the caller walked the tail of every read line by line.
        let n = end - i;
        if n == 0 {
            break 'scan;
        }
        let mut w = [0u8; BLOCK + 1];
        w[..n + 1].copy_from_slice(&hay[i - 1..end]);
        if COPY {
            out[i - from..end - from].copy_from_slice(&hay[i..end]);
        }
        let lf = block(&w).1;
        let bad = first_bad(&w);
        if bad < n {
            if !(LIMIT && lf && end > stop) {
                i += bad;
            }
        } else if !(LIMIT && lf && end > stop) {
            i = end;
        }
    }
    // Pairs up to `i - 1` are checked: a CR at `i - 1` is not (its LF is unchecked), and an LF
    // at `i - 1` is not followed by a checked byte. Back up to before them.
    match hay[i - 1] {
        b'\n' => i - 2,
        b'\r' => i - 1,
        _ => i,
    }
}

/// The block scan with AVX-512BW: one 64-byte load per block, three byte compares into mask
/// registers, and the pair check on the 64-bit masks, each shifted by one with the last bit of
/// the block before carried in (the portable build compares the block with itself shifted,
/// which takes a second load and a fourth compare). Two blocks per step while both pass, one
/// at a time around anything else. Same contract and same results as [`skip_portable`].
///
/// The three compares are the floor here: on this project's AVX-512 machine a loop that only
/// loads and does them runs at ~3 cycles per 64 bytes, about `memcpy`'s speed on 1 MiB (the
/// README's Performance section has the measurement); CRLFs cost nothing beyond them.
#[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
pub(crate) mod avx512 {
    use super::BLOCK;
    use core::arch::x86_64::{
        __m512i, _mm512_cmpeq_epi8_mask, _mm512_loadu_si512, _mm512_mask_storeu_epi8, _mm512_maskz_loadu_epi8,
        _mm512_set1_epi8, _mm512_storeu_si512, _mm_prefetch, _MM_HINT_T0,
    };

    /// How far ahead the loop asks for the next blocks. A 1 MiB body is about the size of a
    /// core's L2 here: without the hint the scan ran at 0.80-0.90x of `memcpy` depending on
    /// where the pages landed; with it, 0.95-1.0x (README, Performance). 512 and 2048 measured
    /// no better.
    const PREFETCH: usize = 1024;

    /// The 64 bytes of `hay` at `at`, as a vector.
    #[inline]
    #[target_feature(enable = "avx512bw")]
    fn load(hay: &[u8], at: usize) -> __m512i {
        let b: &[u8; BLOCK] = hay[at..at + BLOCK].try_into().unwrap();
        // SAFETY: `b` is 64 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
    }

    /// Stores `v` into the 64 bytes of `out` at `at`.
    #[inline]
    #[target_feature(enable = "avx512bw")]
    fn store(out: &mut [u8], at: usize, v: __m512i) {
        let o: &mut [u8; BLOCK] = (&mut out[at..at + BLOCK]).try_into().unwrap();
        // SAFETY: `o` is 64 writable bytes; `storeu` has no alignment requirement.
        unsafe { _mm512_storeu_si512(o.as_mut_ptr().cast(), v) };
    }

    /// The three bytes compared with.
    #[derive(Clone, Copy)]
    struct Consts {
        cr: __m512i,
        lf: __m512i,
        dot: __m512i,
    }

    impl Consts {
        #[inline]
        #[target_feature(enable = "avx512bw")]
        fn new() -> Self {
            Self {
                cr: _mm512_set1_epi8(b'\r' as i8),
                lf: _mm512_set1_epi8(b'\n' as i8),
                dot: _mm512_set1_epi8(b'.' as i8),
            }
        }

        /// The pair check of the block `v`, given the bits of the byte before it (`cr_in`,
        /// `lf_in`): bit `k` of each mask is the byte at `k`. Returns the pairs that fail (a
        /// CR/LF mismatch, or a dot after an LF), the bytes after an LF, and the CR and LF
        /// masks (whose top bits are the next block's carries).
        #[inline]
        #[target_feature(enable = "avx512bw")]
        fn masks(self, v: __m512i, cr_in: u64, lf_in: u64) -> (u64, u64, u64, u64) {
            let (is_cr, is_lf) = (_mm512_cmpeq_epi8_mask(v, self.cr), _mm512_cmpeq_epi8_mask(v, self.lf));
            // The same masks for the byte before each one.
            let (after_cr, after_lf) = ((is_cr << 1) | cr_in, (is_lf << 1) | lf_in);
            let bad = (is_lf ^ after_cr) | (_mm512_cmpeq_epi8_mask(v, self.dot) & after_lf);
            (bad, after_lf, is_cr, is_lf)
        }
    }

    /// The floor of [`skip`], for the bench: per 64-byte block the load and the three
    /// compares, their masks ORed together, nothing else (no pair check, no carry, no exit).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512BW.
    #[target_feature(enable = "avx512bw")]
    pub unsafe fn floor(hay: &[u8]) -> u64 {
        let k = Consts::new();
        let mut acc = 0u64;
        for b in hay.chunks_exact(BLOCK) {
            let v = load(b, 0);
            acc |= _mm512_cmpeq_epi8_mask(v, k.cr) | _mm512_cmpeq_epi8_mask(v, k.lf) | _mm512_cmpeq_epi8_mask(v, k.dot);
        }
        acc
    }

    /// [`super::skip_portable`] with AVX-512BW.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512BW.
    #[target_feature(enable = "avx512bw")]
    pub unsafe fn skip<const LIMIT: bool, const COPY: bool>(
        hay: &[u8],
        from: usize,
        mut stop: usize,
        max_line: usize,
        out: &mut [u8],
    ) -> usize {
        debug_assert!(!LIMIT || max_line >= BLOCK);
        let end = hay.len();
        if end < BLOCK + 1 || from > end - (BLOCK + 1) || hay[from] == b'\n' {
            return from;
        }
        // The entry test and the back-up at the end are the portable build's, written out: as
        // shared helpers they measured a few percent slower on the zero-copy bench.
        // Pair `k` is `(hay[k - 1], hay[k])`, as in the portable build; the block at `i` holds
        // the pairs `i..i + BLOCK`, the first one starts at `from + 1`. Bit `k` of a mask is the
        // byte at `i + k`; `cr_in` and `lf_in` are the bits for the byte at `i - 1`.
        let mut i = from + 1;
        let mut cr_in = (hay[from] == b'\r') as u64;
        let mut lf_in = 0u64;
        let out: &mut [u8] = if COPY {
            out[0] = hay[from];
            // The contract: `out` holds `hay.len() - from` bytes. Cut to that, so that the
            // slice for each block's store below is in bounds whenever the load is.
            &mut out[..end - from]
        } else {
            out
        };
        let k = Consts::new();
        'scan: {
            loop {
                // Two blocks a step and one branch for both, while both are canonical (and, with
                // the line limit, no line ends past its stop): the loop's own instructions (index,
                // bounds, branch) per block halved, which measured ~10% on the zero-copy bench.
                // Anything else goes to the one-block step below, which redoes the first block
                // exactly as the portable build does, so the result is the same.
                while i + 2 * BLOCK <= end {
                    let (v0, v1) = (load(hay, i), load(hay, i + BLOCK));
                    // Hints, not accesses: an address past the end of `hay` (computed without
                    // `add`'s in-bounds requirement) is harmless.
                    _mm_prefetch::<_MM_HINT_T0>(hay.as_ptr().wrapping_add(i + PREFETCH).cast());
                    _mm_prefetch::<_MM_HINT_T0>(hay.as_ptr().wrapping_add(i + BLOCK + PREFETCH).cast());
                    if COPY {
                        // Both loads come before both stores: a load behind a store waited for
                        // it (the copying scan ran at ~0.6x memcpy that way).
                        store(out, i - from, v0);
                        store(out, i - from + BLOCK, v1);
                    }
                    let (bad0, lf0, is_cr0, is_lf0) = k.masks(v0, cr_in, lf_in);
                    let (bad1, lf1, is_cr1, is_lf1) = k.masks(v1, is_cr0 >> 63, is_lf0 >> 63);
                    if bad0 | bad1 != 0 {
                        break;
                    }
                    if LIMIT {
                        let mut s = stop;
                        if lf0 != 0 {
                            if i + BLOCK > s {
                                break;
                            }
                            s = i.saturating_add(max_line);
                        }
                        if lf1 != 0 {
                            if i + 2 * BLOCK > s {
                                break;
                            }
                            s = (i + BLOCK).saturating_add(max_line);
                        }
                        stop = s;
                    }
                    (cr_in, lf_in) = (is_cr1 >> 63, is_lf1 >> 63);
                    i += 2 * BLOCK;
                }
                if i + BLOCK > end {
                    break;
                }
                // One block, as in the portable build.
                let v = load(hay, i);
                if COPY {
                    store(out, i - from, v);
                }
                let (bad, after_lf, is_cr, is_lf) = k.masks(v, cr_in, lf_in);
                if bad != 0 {
                    if !(LIMIT && after_lf != 0 && i + BLOCK > stop) {
                        i += bad.trailing_zeros() as usize;
                    }
                    break 'scan;
                }
                // The line limit exactly as in the portable build (`after_lf` is its `lf`).
                if LIMIT && after_lf != 0 {
                    if i + BLOCK > stop {
                        break 'scan;
                    }
                    stop = i.saturating_add(max_line);
                }
                (cr_in, lf_in) = (is_cr >> 63, is_lf >> 63);
                i += BLOCK;
            }
            // The last `n < BLOCK` pairs, as the portable build does them: the bytes past the end
            // read as zeros (a masked load), the pairs from `n` on ignored but for the LF test.
            let n = end - i;
            if n == 0 {
                break 'scan;
            }
            let valid = (1u64 << n) - 1;
            let b = &hay[i..end];
            // SAFETY: the mask selects the first `n` bytes, the `n` readable bytes of `b`; the
            // bytes it leaves out are not accessed (AVX-512 masked loads suppress their faults).
            let v = unsafe { _mm512_maskz_loadu_epi8(valid, b.as_ptr().cast()) };
            if COPY {
                let o = &mut out[i - from..end - from];
                // SAFETY: the mask selects the first `n` bytes, the `n` writable bytes of `o`; the
                // others are not written.
                unsafe { _mm512_mask_storeu_epi8(o.as_mut_ptr().cast(), valid, v) };
            }
            let (bad, after_lf, _, _) = k.masks(v, cr_in, lf_in);
            let bad = bad & valid;
            if !(LIMIT && after_lf != 0 && end > stop) {
                i += if bad != 0 { bad.trailing_zeros() as usize } else { n };
            }
        }
        match hay[i - 1] {
            b'\n' => i - 2,
            b'\r' => i - 1,
            _ => i,
        }
    }
}
