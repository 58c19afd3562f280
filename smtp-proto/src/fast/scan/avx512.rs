use super::{walk, Drops, BLOCK};
use core::arch::x86_64::{
    __m512i, __mmask64, _kor_mask64, _kortestz_mask64_u8, _kshiftli_mask64, _kxor_mask64, _mm512_cmpeq_epi8_mask,
    _mm512_loadu_si512, _mm512_mask_storeu_epi8, _mm512_maskz_loadu_epi8, _mm512_min_epu8, _mm512_set1_epi8,
    _mm512_storeu_si512, _mm512_ternarylogic_epi32, _mm512_testn_epi8_mask, _mm512_xor_si512, _mm_prefetch,
    _MM_HINT_T0,
};

/// Pairs checked per block: the first byte of each block is the last of the one before.
const STEP: usize = BLOCK - 1;
/// Blocks per step of the main loop.
const N: usize = 4;
/// Every bit but bit 0 (the byte the block shares with the one before).
const PAIRS: u64 = !1;
/// The bytes a step of the main loop loads: its blocks and the byte before the first.
const WINDOW: usize = N * STEP + 2;

/// How far ahead the loop asks for the next blocks. A 1 MiB body is about the size of a
/// core's L2 here: without the hint the scan ran 5-15% slower depending on where the pages
/// landed. 512 and 2048 measured no better.
const PREFETCH: usize = 1024;

/// The 64 bytes of `hay` at `at`, as a vector.
#[inline]
#[target_feature(enable = "avx512bw")]
fn load(hay: &[u8], at: usize) -> __m512i {
    let b: &[u8; BLOCK] = hay[at..at + BLOCK].try_into().unwrap();
    // SAFETY: `b` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

/// The bytes of `hay` at `at..` selected by `mask` (bit `k` for `hay[at + k]`), zeros
/// elsewhere; `at` may be one before the start when bit 0 is clear.
#[inline]
#[target_feature(enable = "avx512bw")]
fn load_masked(hay: &[u8], at: isize, mask: u64) -> __m512i {
    assert!(at >= -1 && (at >= 0 || mask & 1 == 0));
    assert!(mask == 0 || at + (64 - mask.leading_zeros() as isize) <= hay.len() as isize);
    // SAFETY: the asserts keep every selected byte inside `hay` (bit 0 is clear when `at`
    // is one before the start, and the highest selected byte is below `hay.len()`); the
    // bytes the mask leaves out are not accessed (AVX-512 masked loads suppress their
    // faults), and `wrapping_offset` forms the address without an in-bounds requirement.
    unsafe { _mm512_maskz_loadu_epi8(mask, hay.as_ptr().wrapping_offset(at).cast()) }
}

/// Stores `v` into the 64 bytes of `out` at `at`.
#[inline]
#[target_feature(enable = "avx512bw")]
fn store(out: &mut [u8], at: usize, v: __m512i) {
    let o: &mut [u8; BLOCK] = (&mut out[at..at + BLOCK]).try_into().unwrap();
    // SAFETY: `o` is 64 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_si512(o.as_mut_ptr().cast(), v) };
}

/// The bytes compared with.
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
        Self { cr: _mm512_set1_epi8(b'\r' as i8), lf: _mm512_set1_epi8(b'\n' as i8), dot: _mm512_set1_epi8(b'.' as i8) }
    }

    /// The failing pairs and the `l` mask (LF or line-start dot) of the block `v` whose
    /// previous bytes are `p`; bit 0 of both is meaningless (see the module).
    #[inline]
    #[target_feature(enable = "avx512bw")]
    fn masks(self, v: __m512i, p: __m512i) -> (__mmask64, __mmask64) {
        // t | (v ^ dot): ternary-logic table 0xF6 (A = t, B = v, C = dot).
        let u = _mm512_ternarylogic_epi32::<0xF6>(_mm512_xor_si512(p, self.lf), v, self.dot);
        let m = _mm512_min_epu8(_mm512_xor_si512(v, self.lf), u);
        let l = _mm512_testn_epi8_mask(m, m);
        let c = _mm512_cmpeq_epi8_mask(v, self.cr);
        (_kxor_mask64(_kshiftli_mask64::<1>(c), l), l)
    }
}

/// The floor of [`skip`], for the bench: per block the two loads and the mask work, the
/// failures ORed, nothing else (no exits, no line limit, no copy).
///
/// # Safety
///
/// The CPU must support AVX-512BW.
#[target_feature(enable = "avx512bw")]
pub unsafe fn floor(hay: &[u8]) -> u64 {
    let k = Consts::new();
    let mut acc: __mmask64 = 0;
    let mut at = 1;
    while at + BLOCK <= hay.len() {
        let (bad, _) = k.masks(load(hay, at), load(hay, at - 1));
        acc = _kor_mask64(acc, bad);
        at += STEP;
    }
    acc
}

/// The floor of any copying scan, for the bench: `out[..hay.len()]` becomes `hay`
/// through vector registers, 64 bytes a load and a store, four a step, the stores
/// aligned; nothing checked. A scan that copies loads every byte into a register and
/// stores it, so it cannot run faster than this loop (which is not `memcpy`: that may use
/// `rep movsb`, which the CPU runs in wider internal moves that no check can see).
///
/// # Safety
///
/// The CPU must support AVX-512BW.
#[target_feature(enable = "avx512bw")]
pub unsafe fn copy_floor(hay: &[u8], out: &mut [u8]) {
    let out = &mut out[..hay.len()];
    // The first bytes, up to where the stores are aligned, as the tail is.
    let head = out.as_ptr().align_offset(BLOCK).min(hay.len());
    out[..head].copy_from_slice(&hay[..head]);
    let mut at = head;
    while at + N * BLOCK <= hay.len() {
        let vs: [__m512i; N] = core::array::from_fn(|b| load(hay, at + b * BLOCK));
        for (b, v) in vs.into_iter().enumerate() {
            store(out, at + b * BLOCK, v);
        }
        at += N * BLOCK;
    }
    out[at..].copy_from_slice(&hay[at..]);
}

/// The exact stop of the line after the last LF of the passing step at `at` (its pairs end
/// at `at..at + N * STEP`, at least one of them at an LF), for a line limit of `max_line`.
#[cold]
#[inline(never)]
fn exact_stop(hay: &[u8], at: usize, max_line: usize) -> usize {
    let last = memchr::memrchr(b'\n', &hay[at..at + N * STEP]).map_or(at, |j| at + j);
    (last + 1).saturating_add(max_line)
}

/// [`super::skip_portable`] with AVX-512BW.
///
/// # Safety
///
/// The CPU must support AVX-512BW.
#[target_feature(enable = "avx512bw")]
pub unsafe fn skip<const LIMIT: bool, const COPY: bool, const DOTS: u8>(
    hay: &[u8],
    from: usize,
    stop: usize,
    max_line: usize,
    out: &mut [u8],
    drops: &mut Drops,
) -> usize {
    by_dots!(DOTS, scan::<LIMIT, COPY>, hay, from, stop, max_line, out, drops)
}

/// [`skip`]'s scan, which stops at every line-start dot.
#[inline]
#[target_feature(enable = "avx512bw")]
fn scan<const LIMIT: bool, const COPY: bool>(
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
    // The next pair to check ends at `i`; its block is loaded at `i - 1`, so a block's bit
    // `k` is the byte at `i - 1 + k` and the pair ending there. `stop` stays exact: after
    // a block with an LF it is that block's last LF + 1 + `max_line`.
    let mut i = from + 1;
    let out: &mut [u8] = if COPY {
        // The contract: `out` holds `hay.len() - from` bytes. Cut to that, so that the
        // slice for each block's store below is in bounds whenever the load is.
        &mut out[..end - from]
    } else {
        out
    };
    let k = Consts::new();
    if i == 1 {
        // The input's first pair: its block would start a byte before the input, and the
        // steps' loads need `i >= 2`. Checked alone, so that a call at the start of a read
        // (most are) goes to the steps at once, rather than through a block under masks.
        if COPY {
            out[..2].copy_from_slice(&hay[..2]);
        }
        if let Some(q) = walk::<LIMIT>(hay, 1, 2, &mut stop, max_line) {
            return q;
        }
        i = 2;
    }
    // With the line limit, the steps below rest on this: a step that follows a step with
    // an LF passes the limit. Its lines began in that step or in this one, so the first
    // ends fewer than two steps after it began (and the others sooner), under a limit of
    // two steps or more. Smaller limits: only the one-block step, which is exact.
    let steps_end = if LIMIT && max_line < 2 * N * STEP { 0 } else { end };
    // A limit beyond any index is the same as `isize::MAX`, and then `k + 1 + max_line`
    // cannot overflow for an index `k`.
    let max_line = max_line.min(isize::MAX as usize);
    'scan: loop {
        // N blocks a step while all pass; anything else goes to the one-block step below,
        // which is exact. With the line limit, the first step must end before `stop` (its
        // first LF is then below it), and after it `stop` is kept only when a step has no
        // LF (`stop` is for the line at `exact_at` and any index up to the next LF).
        let mut exact_at = i;
        let steps_end = if !LIMIT || i + N * STEP <= stop { steps_end } else { 0 };
        while i >= 2 && i + N * STEP <= steps_end {
            // The step's bytes and the one before them, as one array: the loads below
            // are at constant offsets into it, with no bounds check each.
            let w: &[u8; WINDOW] = hay[i - 2..i - 2 + WINDOW].try_into().unwrap();
            // A hint, not an access: an address past the end of `hay` (computed without
            // `add`'s in-bounds requirement) is harmless.
            _mm_prefetch::<_MM_HINT_T0>(hay.as_ptr().wrapping_add(i + PREFETCH).cast());
            _mm_prefetch::<_MM_HINT_T0>(hay.as_ptr().wrapping_add(i + PREFETCH + 2 * BLOCK).cast());
            let mut bad: __mmask64 = 0;
            let mut lfs: __mmask64 = 0;
            let mut fs = [0u64; N];
            let mut o: &mut [u8] = &mut [];
            if COPY {
                // The same for the stores.
                o = &mut out[i - 1 - from..i - 1 - from + WINDOW - 1];
            }
            // Every load of the step before its first store: a load behind a store to an
            // address with the same low 12 bits waits for it (the copy ran ~25% slower).
            let vs: [__m512i; N] = core::array::from_fn(|b| load(w, 1 + b * STEP));
            let ps: [__m512i; N] = core::array::from_fn(|b| load(w, b * STEP));
            for b in 0..N {
                if COPY {
                    store(o, b * STEP, vs[b]);
                }
                let (f, l) = k.masks(vs[b], ps[b]);
                bad = _kor_mask64(bad, f);
                fs[b] = f;
                if LIMIT {
                    lfs = _kor_mask64(lfs, l);
                }
            }
            if _kortestz_mask64_u8(bad & PAIRS, bad & PAIRS) == 0 {
                // The first failing pair, from the masks at hand. (A step that runs
                // passes the line limit: every LF before that pair is below its stop.)
                for (b, f) in fs.iter().enumerate() {
                    if f & PAIRS != 0 {
                        break 'scan i - 1 + b * STEP + (f & PAIRS).trailing_zeros() as usize;
                    }
                }
                break;
            }
            if LIMIT && lfs & PAIRS == 0 {
                // No LF in the step (in a passing step the mask holds only LFs): the line
                // goes on. Its stop, from the step before if that one had the last LF.
                if exact_at != i {
                    stop = exact_stop(hay, i - N * STEP, max_line);
                }
                i += N * STEP;
                exact_at = i;
                if i + N * STEP > stop {
                    // The next step may reach the stop.
                    break;
                }
                continue;
            }
            i += N * STEP;
        }
        if LIMIT && exact_at != i {
            // The steps ended with an LF at `i - N * STEP` or after, and fewer pairs than a
            // step are left: the next line's stop is past the end of the input.
            stop = i - N * STEP + 1 + max_line;
        }
        // The rest of the input, fewer pairs than a step, as one more step read and
        // written under masks: a read's end costs one step, not a block at a time. With
        // the line limit, a failure or a line that may cross its stop goes on below.
        if i >= 2 && i < end && i + N * STEP > end {
            let n = end - i;
            let mut bad: __mmask64 = 0;
            let mut fs = [0u64; N];
            let mut lfs = [0u64; N];
            for b in 0..N {
                let nb = n.saturating_sub(b * STEP).min(STEP);
                if nb == 0 {
                    break;
                }
                let at = i - 1 + b * STEP;
                let valid = u64::MAX >> (STEP - nb);
                let v = load_masked(hay, at as isize, valid);
                let p = load_masked(hay, at as isize - 1, valid);
                if COPY {
                    let o = &mut out[at - from..at - from + nb + 1];
                    // SAFETY: the mask selects the first `nb + 1` bytes, the length of
                    // `o`, all writable; the others are not written.
                    unsafe { _mm512_mask_storeu_epi8(o.as_mut_ptr().cast(), valid, v) };
                }
                let (f, l) = k.masks(v, p);
                fs[b] = f & valid & PAIRS;
                lfs[b] = l & valid & PAIRS;
                bad |= fs[b];
            }
            if bad == 0 {
                if !LIMIT {
                    break 'scan end;
                }
                match lfs.iter().rposition(|&l| l != 0) {
                    None => break 'scan end,
                    Some(_) if end > stop || max_line <= N * STEP => {}
                    Some(_) => break 'scan end,
                }
            } else if !LIMIT {
                for (b, f) in fs.iter().enumerate() {
                    if *f != 0 {
                        break 'scan i - 1 + b * STEP + f.trailing_zeros() as usize;
                    }
                }
            }
        }
        // One block, or the last `end - i < STEP` pairs as a block read under a mask.
        let n = (end - i).min(STEP);
        if n == 0 {
            break 'scan end;
        }
        let at = i - 1;
        let valid: u64 = if n == STEP { u64::MAX } else { (1 << (n + 1)) - 1 };
        let (v, p) = if n == STEP && at > 0 {
            (load(hay, at), load(hay, at - 1))
        } else {
            let v = load_masked(hay, at as isize, valid);
            (v, load_masked(hay, at as isize - 1, if at == 0 { valid & !1 } else { valid }))
        };
        if COPY {
            let o = &mut out[at - from..(end - from).min(at - from + BLOCK)];
            assert!(valid.count_ones() as usize <= o.len());
            // SAFETY: the mask selects the first `n + 1 <= o.len()` bytes (asserted), all
            // writable; the others are not written.
            unsafe { _mm512_mask_storeu_epi8(o.as_mut_ptr().cast(), valid, v) };
        }
        let (f, l) = k.masks(v, p);
        let (f, l) = (f & PAIRS & valid, l & PAIRS & valid);
        let mut q = if f != 0 { at + f.trailing_zeros() as usize } else { usize::MAX };
        if LIMIT && l != 0 {
            // The first LF ends the line `stop` is for; the lines after it begin in this
            // block, shorter than `max_line`.
            let first = at + l.trailing_zeros() as usize;
            if first >= stop {
                q = q.min(first);
            }
            if q == usize::MAX {
                stop = (at + 63 - l.leading_zeros() as usize + 1).saturating_add(max_line);
            }
        }
        if q != usize::MAX {
            break 'scan q;
        }
        i += n;
    }
}
