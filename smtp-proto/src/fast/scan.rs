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
//! The portable build writes this as a branch-free loop over fixed-size arrays, which the
//! compiler turns into vector compares and one mask test per block (SSE2 on x86_64, NEON on
//! aarch64; checked in the assembly), and walks a block pair by pair only where the test
//! fails, where a line may end past its limit, and for the last pairs of the input. The scan
//! stops at the first pair that fails; the caller goes on a CR/LF at a time from there, and
//! comes back here after it. Every read is scanned to its end; a CR or LF there waits for the
//! next read. The copying forms go on by themselves after a line-start dot that needs no
//! more than their own copy can do: the receive side's leaves a stuffing dot out
//! ([`unstuff_canonical`]), the send side's writes it twice ([`stuff_canonical`]).
//!
//! Three builds, the fastest the CPU runs chosen at run time: AVX-512BW intrinsics (two
//! overlapping loads, three integer vector operations and two mask tests per 63 pairs, four
//! blocks a step, [`avx512`]), the portable code compiled with AVX2, and the portable code for
//! the target's baseline (the only one without `std`, and the one miri runs). Where each stops
//! is defined by the bytes alone (see [`skip_canonical`]), so all three return the same. The
//! `unsafe` calls of those builds and the intrinsics' loads and stores are all of the crate's
//! `unsafe` (with `fast::printable_prefix`); the `scan_paths` fuzz target holds every build to
//! the portable one, in all its forms (line limit or not; scanning, copying, unstuffing or
//! stuffing), and the unstuffing and stuffing forms to the copying one restarted at each dot.

/// Pairs checked per block.
pub(crate) const BLOCK: usize = 64;

/// Whether the pairs `(w[k], w[k + 1])` of a block are canonical, and whether the block has an
/// LF among its pairs' second bytes (`w[1..]`). Written as a branch-free loop over fixed-size
/// arrays: the compiler turns it into vector compares and one mask test per block.
#[inline(always)]
fn block(w: &[u8; BLOCK + 1]) -> (bool, bool) {
    let (prev, cur) = (&w[..BLOCK], &w[1..]);
    let mut bad = 0u8;
    let mut lf = 0u8;
    for k in 0..BLOCK {
        let (p, c) = (prev[k], cur[k]);
        bad |= (((c == b'\n') ^ (p == b'\r')) | ((c == b'.') & (p == b'\n'))) as u8;
        lf |= (c == b'\n') as u8;
    }
    (bad == 0, lf != 0)
}

/// The pairs ending at `at..to`, one at a time: the first `k` whose pair `(hay[k - 1], hay[k])`
/// is not canonical or, with `LIMIT`, whose LF is at or past its line's stop (`stop`, moved on
/// to `k + 1 + max_line` at each LF that passes). `None` if every pair passes.
#[inline]
fn walk<const LIMIT: bool>(hay: &[u8], at: usize, to: usize, stop: &mut usize, max_line: usize) -> Option<usize> {
    for k in at..to {
        let (p, c) = (hay[k - 1], hay[k]);
        if ((c == b'\n') != (p == b'\r')) || (c == b'.' && p == b'\n') {
            return Some(k);
        }
        if LIMIT && c == b'\n' {
            if k >= *stop {
                return Some(k);
            }
            *stop = (k + 1).saturating_add(max_line);
        }
    }
    None
}

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// Where the caller goes on: `r` in [`skip_canonical`].
    pub to: usize,
    /// `q` in [`skip_canonical`] (or `to` when nothing was checked): every pair ending in
    /// `from + 1..checked` passed, the line limit included. `to` is `checked` or one or two
    /// before it; two when the scan backed up before a CRLF, whose LF passed.
    pub checked: usize,
    /// The dots [`unstuff_canonical`] dropped or [`stuff_canonical`] doubled (none in the other
    /// forms).
    pub drops: Drops,
}

/// The dots an unstuffing scan ([`unstuff_canonical`]) dropped, or a stuffing scan
/// ([`stuff_canonical`]) doubled, going on behind them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Drops {
    /// How many.
    pub n: usize,
    /// The index of the last one (meaningless when `n` is 0).
    pub last: usize,
}

/// What a copying scan does where it stops at a line-start dot: stop there ([`KEEP`]), leave
/// the dot out and go on behind it ([`DROP`], receiving), or write it twice and go on
/// ([`DOUBLE`], sending).
pub(crate) const KEEP: u8 = 0;
/// See [`KEEP`].
pub(crate) const DROP: u8 = 1;
/// See [`KEEP`].
pub(crate) const DOUBLE: u8 = 2;

/// Whether the pair at `q`, where a scan from `from` stopped, is a stuffing dot that the
/// unstuffing scan drops and goes on behind: a dot after an LF (whose pair, and so its CR,
/// passed), followed by a byte other than CR or LF, and far enough from the end that the scan
/// from `q + 1` does not return at once.
#[inline(always)]
fn droppable(hay: &[u8], from: usize, q: usize) -> bool {
    q > from
        && q + 2 + BLOCK <= hay.len()
        && hay[q] == b'.'
        && hay[q - 1] == b'\n'
        && !matches!(hay[q + 1], b'\r' | b'\n')
}

/// Whether the pair at `q`, where a scan from `from` stopped, is a line-start dot that the
/// stuffing scan writes twice and goes on from: a dot after an LF, far enough from the end
/// that the scan from `q` does not return at once.
#[inline(always)]
fn doublable(hay: &[u8], from: usize, q: usize) -> bool {
    q > from && q + 1 + BLOCK <= hay.len() && hay[q] == b'.' && hay[q - 1] == b'\n'
}

/// [`unstuff_canonical`] (`DOTS` [`DROP`]) or [`stuff_canonical`] ([`DOUBLE`]) on one build's
/// copying scan, `scan(from, stop, out)` (`out[0]` for `hay[from]`). Dropping: the scan again
/// from the byte after each dot [`droppable`] accepts, with the stop of the line that dot
/// starts (the dot not counted), its copy one byte further back for each dot left out.
/// Doubling: a dot written where each dot [`doublable`] accepts goes, and the scan again from
/// that dot, its copy one byte further on, as long as `out` has room for all of `hay` after
/// it. Returns where the last scan stopped (its `q`).
#[inline(always)]
fn restarting<const DOTS: u8>(
    hay: &[u8],
    mut from: usize,
    mut stop: usize,
    max_line: usize,
    out: &mut [u8],
    drops: &mut Drops,
    mut scan: impl FnMut(usize, usize, &mut [u8]) -> usize,
) -> usize {
    let start = from;
    loop {
        let at = if DOTS == DOUBLE { from - start + drops.n } else { from - start - drops.n };
        let q = scan(from, stop, &mut out[at..]);
        if DOTS == DOUBLE {
            if !doublable(hay, from, q) || out.len() < hay.len() - start + drops.n + 1 {
                return q;
            }
            out[q - start + drops.n] = b'.';
            drops.n += 1;
            drops.last = q;
            from = q;
        } else {
            if !droppable(hay, from, q) {
                return q;
            }
            drops.n += 1;
            drops.last = q;
            from = q + 1;
            stop = (q + 1).saturating_add(max_line);
        }
    }
}

/// One build's scan `$scan::<LIMIT, COPY>(hay, from, stop, max_line, out)` in the form `DOTS`
/// names: called once with [`KEEP`], restarted at each dot by [`restarting`] otherwise. A
/// macro, so that the restarting closure is made in the build's own function and compiled
/// with its target features: a closure made in a function without them (`skip_portable`, even
/// inlined into `skip_avx2`) is compiled for the baseline if it is not inlined, and the AVX2
/// build's copying forms then ran the SSE2 code. The `KEEP` call is direct, as before there
/// were other forms.
macro_rules! by_dots {
    ($dots:ident, $scan:path, $hay:ident, $from:ident, $stop:ident, $max_line:ident, $out:ident, $drops:ident) => {
        if $dots == $crate::fast::scan::KEEP {
            $scan($hay, $from, $stop, $max_line, $out)
        } else {
            $crate::fast::scan::restarting::<$dots>($hay, $from, $stop, $max_line, $out, $drops, |from, stop, out| {
                $scan($hay, from, stop, $max_line, out)
            })
        }
    };
}

/// The scan's result from `q`, the first index it could not pass (or the end; `from` when it
/// checked nothing): pairs up to `q - 1` are checked, but a CR at `q - 1` is not (its LF is
/// unchecked) and an LF at `q - 1` is not followed by a checked byte, so back up to before
/// them.
#[inline(always)]
fn finish(hay: &[u8], from: usize, q: usize, drops: Drops) -> Skipped {
    if q <= from {
        return Skipped { to: from, checked: from, drops };
    }
    let to = match hay[q - 1] {
        b'\n' => q - 2,
        b'\r' => q - 1,
        _ => q,
    };
    Skipped { to, checked: q, drops }
}

/// Skips canonical text in `hay` from `from`, where the caller is inside a line with nothing
/// held (the byte at `from` is not a line-start dot to check). Returns `r >= from` (and the
/// `q` it comes from, [`Skipped`]) such that:
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
/// `r` is exact, the same in every build: with `q` the first index after `from` whose pair
/// `(hay[q - 1], hay[q])` fails or (with `LIMIT`) whose LF is at or past its line's stop (the
/// end of `hay` if none), `r` is `q` backed up before a CR or CRLF that ends `hay[..q]`. It is
/// `from` when the input is shorter than `from + BLOCK + 1` or starts with an LF (the caller
/// walks those).
#[inline(always)]
pub(crate) fn skip_canonical<const LIMIT: bool>(hay: &[u8], from: usize, stop: usize, max_line: usize) -> Skipped {
    let mut drops = Drops::default();
    finish(hay, from, dispatch::<LIMIT, false, KEEP>(hay, from, stop, max_line, &mut [], &mut drops), drops)
}

/// [`skip_canonical`] that also copies what it skips and drops stuffing dots (the receive
/// side's copy, `DataDecoder::decode_into`'s). The copying scan copies `hay[from..r]` into
/// `out[..r - from]` (`out` at least `hay.len() - from` long; more of it may be written);
/// where it stops at a dot that [`droppable`] accepts, this one leaves the dot out of `out`
/// and scans on from the byte after it, the line it starts (not counting the dot) with a stop
/// of its own. `r` and `q` are where the last of those scans stopped, and
/// `out[..r - from - drops.n]` becomes `hay[from..r]` without the dropped dots. One call
/// through a run of stuffed lines, where the plain scan returns at each.
#[inline(always)]
pub(crate) fn unstuff_canonical<const LIMIT: bool>(
    hay: &[u8],
    from: usize,
    stop: usize,
    max_line: usize,
    out: &mut [u8],
) -> Skipped {
    let mut drops = Drops::default();
    finish(hay, from, dispatch::<LIMIT, true, DROP>(hay, from, stop, max_line, out, &mut drops), drops)
}

/// The copying scan (see [`unstuff_canonical`]) that also doubles line-start dots, with no
/// line limit (the send side's copy, [`Stuffer`](crate::data::Stuffer)'s): where that scan
/// stops at a dot that [`doublable`] accepts, this one writes a dot there and scans on from
/// the dot, whose copy makes the second, as long as `out` has room for all of `hay` after
/// it. `r` and `q` are where the last of those scans stopped, and `out[..r - from + drops.n]`
/// becomes `hay[from..r]` with those dots doubled; `out` must be at least `hay.len() - from`
/// long, and is written up to `hay.len() - from + drops.n`. The send side's copy through a
/// run of lines that start with a dot, where the plain scan returns at each.
#[inline]
pub(crate) fn stuff_canonical(hay: &[u8], from: usize, out: &mut [u8]) -> Skipped {
    let mut drops = Drops::default();
    let q = dispatch::<false, true, DOUBLE>(hay, from, usize::MAX, usize::MAX, out, &mut drops);
    finish(hay, from, q, drops)
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

/// The hot path's dispatch: `q` (see [`finish`]). The same arms as [`run`], written out: going
/// through `run` with a chosen [`Build`] (a second detection and a match) measured ~6% slower
/// on the zero-copy bench.
#[inline(always)]
fn dispatch<const LIMIT: bool, const COPY: bool, const DOTS: u8>(
    hay: &[u8],
    from: usize,
    stop: usize,
    max_line: usize,
    out: &mut [u8],
    drops: &mut Drops,
) -> usize {
    #[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
    {
        if std::is_x86_feature_detected!("avx512bw") {
            // SAFETY: `avx512::skip` needs AVX-512BW (and the AVX-512F it implies), which the
            // CPU was just found to have.
            return unsafe { avx512::skip::<LIMIT, COPY, DOTS>(hay, from, stop, max_line, out, drops) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: `skip_avx2` is `skip_portable` compiled with AVX2 enabled; calling it is
            // sound exactly when the CPU has AVX2, which was just checked.
            return unsafe { skip_avx2::<LIMIT, COPY, DOTS>(hay, from, stop, max_line, out, drops) };
        }
    }
    skip_portable::<LIMIT, COPY, DOTS>(hay, from, stop, max_line, out, drops)
}

/// The scan in a given build, for the tests and the fuzz target; `None` if this CPU (or this
/// compilation: no `std`, not x86_64, miri) cannot run it.
pub(crate) fn run<const LIMIT: bool, const COPY: bool, const DOTS: u8>(
    build: Build,
    hay: &[u8],
    from: usize,
    stop: usize,
    max_line: usize,
    out: &mut [u8],
) -> Option<Skipped> {
    let mut drops = Drops::default();
    let d = &mut drops;
    let q = match build {
        Build::Portable => Some(skip_portable::<LIMIT, COPY, DOTS>(hay, from, stop, max_line, out, d)),
        #[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
        Build::Avx512 if std::is_x86_feature_detected!("avx512bw") => {
            // SAFETY: `avx512::skip` needs AVX-512BW (and the AVX-512F it implies), which the
            // CPU was just found to have.
            Some(unsafe { avx512::skip::<LIMIT, COPY, DOTS>(hay, from, stop, max_line, out, d) })
        }
        #[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
        Build::Avx2 if std::is_x86_feature_detected!("avx2") => {
            // SAFETY: `skip_avx2` is `skip_portable` compiled with AVX2 enabled; calling it is
            // sound exactly when the CPU has AVX2, which was just checked.
            Some(unsafe { skip_avx2::<LIMIT, COPY, DOTS>(hay, from, stop, max_line, out, d) })
        }
        _ => None,
    };
    q.map(|q| finish(hay, from, q, drops))
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

/// [`avx512::copy_floor`] if the CPU runs it (for the bench): `false` otherwise.
pub(crate) fn copy_floor(hay: &[u8], out: &mut [u8]) -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
    if std::is_x86_feature_detected!("avx512bw") {
        // SAFETY: `avx512::copy_floor` needs AVX-512BW, which the CPU was just found to have.
        unsafe { avx512::copy_floor(hay, out) };
        return true;
    }
    let _ = (hay, out);
    false
}

/// [`skip_portable`] compiled for AVX2 (twice the bytes per compare of the SSE2 baseline), its
/// restarting closure included (see [`by_dots`]).
#[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
#[target_feature(enable = "avx2")]
fn skip_avx2<const LIMIT: bool, const COPY: bool, const DOTS: u8>(
    hay: &[u8],
    from: usize,
    stop: usize,
    max_line: usize,
    out: &mut [u8],
    drops: &mut Drops,
) -> usize {
    by_dots!(DOTS, scan_portable::<LIMIT, COPY>, hay, from, stop, max_line, out, drops)
}

/// [`skip_canonical`] (and, with `COPY`, the copying scan) in plain Rust, for the target's
/// baseline vector unit (or none): blocks of [`BLOCK`] pairs through the vectorised
/// [`block`] test, the exact [`walk`] only where a block fails, where a line may end past its
/// stop, and for the last pairs. Returns `q` (see [`finish`]), like every build; with `DOTS`
/// [`DROP`] or [`DOUBLE`] (and `COPY`), [`unstuff_canonical`]'s or [`stuff_canonical`]'s,
/// counting the dots dropped or doubled in `drops`.
#[inline(always)]
pub(crate) fn skip_portable<const LIMIT: bool, const COPY: bool, const DOTS: u8>(
    hay: &[u8],
    from: usize,
    stop: usize,
    max_line: usize,
    out: &mut [u8],
    drops: &mut Drops,
) -> usize {
    by_dots!(DOTS, scan_portable::<LIMIT, COPY>, hay, from, stop, max_line, out, drops)
}

/// [`skip_portable`]'s scan, which stops at every line-start dot.
#[inline(always)]
fn scan_portable<const LIMIT: bool, const COPY: bool>(
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
    // With `LIMIT`, `stop` is exact but for the last block with an LF, `pending`: its last LF
    // is not looked for until a line could cross the stop it sets (at least
    // `pending + 1 + max_line`, the LF being at `pending` or after).
    let mut pending: Option<usize> = None;
    // `i + BLOCK <= pending + 1 + max_line` is `i <= pending + reach` (with a limit beyond any
    // index taken as `isize::MAX`, no overflow).
    let reach = (max_line.min(isize::MAX as usize) + 1).saturating_sub(BLOCK);
    // (A function of values, not a closure over `&mut`: that kept `stop` and `pending` in
    // memory through every block.)
    let resolve = |pending: Option<usize>, stop: usize| match pending {
        Some(p) => (memchr::memrchr(b'\n', &hay[p..p + BLOCK]).map_or(p, |j| p + j) + 1).saturating_add(max_line),
        None => stop,
    };
    'scan: {
        while i + BLOCK <= end {
            let w: &[u8; BLOCK + 1] = hay[i - 1..i + BLOCK].try_into().unwrap();
            if COPY {
                // Whether or not the block is canonical: the caller uses what comes before `r`.
                out[i - from..i - from + BLOCK].copy_from_slice(&w[1..]);
            }
            let (clean, lf) = block(w);
            if clean && LIMIT && lf {
                // The block's first LF ends the line whose stop is `stop` (or the pending
                // block's); the lines after it start in the block and are shorter than
                // `max_line`. Only a block that reaches that stop needs a closer look.
                if let Some(p) = pending {
                    if i <= p + reach {
                        pending = Some(i);
                        i += BLOCK;
                        continue;
                    }
                    stop = resolve(pending.take(), stop);
                }
                if i + BLOCK <= stop {
                    pending = Some(i);
                    i += BLOCK;
                    continue;
                }
            } else if clean {
                i += BLOCK;
                continue;
            }
            stop = resolve(pending.take(), stop);
            if let Some(q) = walk::<LIMIT>(hay, i, i + BLOCK, &mut stop, max_line) {
                break 'scan q;
            }
            i += BLOCK;
        }
        // The last `end - i < BLOCK` pairs.
        if COPY {
            out[i - from..end - from].copy_from_slice(&hay[i..end]);
        }
        stop = resolve(pending.take(), stop);
        walk::<LIMIT>(hay, i, end, &mut stop, max_line).unwrap_or(end)
    }
}

/// The block scan with AVX-512BW, [`skip_portable`]'s exact result in fewer instructions.
///
/// A block is one 64-byte load `v` at `at` and the load `p` of the 64 bytes before each of its
/// bytes (at `at - 1`). Bit `k` of two masks, for the pair ending at `at + k`:
///
/// - `l`: the byte is an LF, or a dot after an LF. One mask-producing test for both, on
///   `min(v ^ LF, (p ^ LF) | (v ^ '.'))`, which is zero exactly there (three vector
///   operations on the integer units, which have more ports than the mask compares);
/// - `c`: the byte is a CR (one compare).
///
/// A pair is canonical exactly when its first byte is a CR if and only if the second is an LF
/// that is not a dot (a line-start dot follows an LF, never a CR), so the failing pairs are
/// `(c << 1) ^ l`. Bit 0 would need the byte before `p`: each block overlaps the one before by
/// a byte and checks 63 pairs, bits 1 to 63, which needs no carry from block to block. Four
/// blocks a step, their failures ORed in mask registers and tested once.
///
/// On this project's AVX-512 machine (README, Performance) this runs faster than the three
/// compares per block that the build before it did (one load, compares for CR, LF and dot, the
/// masks shifted and carried in general registers).
#[cfg(all(feature = "std", target_arch = "x86_64", not(miri)))]
pub(crate) mod avx512;
