//! The DATA path: streaming dot-unstuffing on receive ([`DataDecoder`]) and dot-stuffing on send
//! ([`Stuffer`]). Correct at any split of the input; only `CRLF . CRLF` ends a message.
//!
//! Both sides skip canonical text (CRLF line ends, no line starting with `.`) 64 bytes at a
//! time with a vectorised pair check (`fast::scan`: the block compared with itself shifted by
//! one byte; AVX-512BW or AVX2 where the CPU has it), and walk CR/LF by CR/LF
//! (`find_line_byte`) only around what that check flags: a line-start dot, a bare CR or LF, a
//! line that may be too long, the end of the input. Ordinary lines neither end a body chunk
//! (receive) nor a copied run (send); the send side, and [`DataDecoder::decode_into`] on
//! receive, copy while they scan, and their scans go on through stuffed lines too, dropping
//! the stuffing dot (receive) or doubling a line-start dot (send) as they copy.

use core::cmp::min;
use core::fmt;

use crate::fast::scan;

mod bdat;
mod find;
mod receive;
mod send;

pub(crate) use bdat::BareCheck;
use find::find_line_byte;
pub use receive::DataDecoder;
pub use send::Stuffer;

/// What to do with a bare CR or bare LF in message content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BarePolicy {
    /// Reject the message (`550 5.5.2`: for DATA after the real end, for BDAT at the end of
    /// the chunk where it shows). The default: the SMTP smuggling defence.
    #[default]
    Reject,
    /// Pass them through unchanged. They never end a message and never start a line.
    Allow,
}

/// Why a message was refused after its real end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataError {
    /// A bare LF or bare CR under [`BarePolicy::Reject`].
    BareLineEnding,
    /// The message is larger than the limit.
    TooBig,
    /// A text line was longer than the limit.
    LineTooLong,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataError::BareLineEnding => "bare CR or LF in message content",
            DataError::TooBig => "message too big",
            DataError::LineTooLong => "text line too long",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DataError {}

/// One step of [`DataDecoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'b> {
    /// Input bytes consumed (always > 0 when the input was not empty).
    pub consumed: usize,
    /// Unstuffed body bytes: a sub-slice of the input, or a `'static` one for a CR held across
    /// calls. May be empty. Never includes the final `.CRLF`; includes the CRLF before it.
    pub body: &'b [u8],
    /// `Some` once the real end (`CRLF.CRLF`) was consumed: the body size, or why it is refused.
    pub end: Option<Result<u64, DataError>>,
}

/// One step of [`DataDecoder::decode_into`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedInto {
    /// Input bytes consumed.
    pub consumed: usize,
    /// Unstuffed body bytes written at the start of the output buffer. May be empty.
    pub written: usize,
    /// `Some` once the real end (`CRLF.CRLF`) was consumed: the body size, or why it is refused.
    pub end: Option<Result<u64, DataError>>,
}

/// Not part of the API: one build of the block scan, for the `scan_paths` fuzz target and the
/// tests. `build` 0 is the portable one, 1 the AVX2 one, 2 the AVX-512BW one; `None` if this
/// CPU cannot run it. With `max_line` the line limit is on (raised to the block size); with
/// `out` (at least `hay.len() - from` long) the scan copies what it skips. Returns where the
/// caller goes on and the first index the scan did not check (`r` and `q` in the scan's
/// contract): every pair ending in `from + 1..q` passed.
#[doc(hidden)]
pub fn __scan_paths(
    build: u8,
    hay: &[u8],
    from: usize,
    stop: usize,
    max_line: Option<usize>,
    out: Option<&mut [u8]>,
) -> Option<(usize, usize)> {
    let from = min(from, hay.len());
    let build = scan_build(build);
    let s = match (max_line, out) {
        (None, None) => scan::run::<false, false, { scan::KEEP }>(build, hay, from, stop, usize::MAX, &mut []),
        (Some(m), None) => {
            scan::run::<true, false, { scan::KEEP }>(build, hay, from, stop, m.max(scan::BLOCK), &mut [])
        }
        (None, Some(o)) => scan::run::<false, true, { scan::KEEP }>(build, hay, from, stop, usize::MAX, o),
        (Some(m), Some(o)) => scan::run::<true, true, { scan::KEEP }>(build, hay, from, stop, m.max(scan::BLOCK), o),
    };
    s.map(|s| (s.to, s.checked))
}

/// Not part of the API: one build of the unstuffing scan (`decode_into`'s), for the
/// `scan_paths` fuzz target and the tests, like [`__scan_paths`] with `out` (at least
/// `hay.len() - from` long). Returns `r`, `q`, how many stuffing dots it dropped and the index
/// of the last: `out[..r - from - dropped]` is `hay[from..r]` without them.
#[doc(hidden)]
pub fn __unstuff_paths(
    build: u8,
    hay: &[u8],
    from: usize,
    stop: usize,
    max_line: Option<usize>,
    out: &mut [u8],
) -> Option<(usize, usize, usize, usize)> {
    let from = min(from, hay.len());
    let build = scan_build(build);
    let s = match max_line {
        None => scan::run::<false, true, { scan::DROP }>(build, hay, from, stop, usize::MAX, out),
        Some(m) => scan::run::<true, true, { scan::DROP }>(build, hay, from, stop, m.max(scan::BLOCK), out),
    };
    s.map(|s| (s.to, s.checked, s.drops.n, s.drops.last))
}

/// Not part of the API: one build of the stuffing scan (the `Stuffer`'s), for the
/// `scan_paths` fuzz target and the tests, like [`__scan_paths`] with `out` (at least
/// `hay.len() - from` long) and no line limit. Returns `r`, `q`, how many line-start dots it
/// doubled and the index of the last: `out[..r - from + doubled]` is `hay[from..r]` with them
/// doubled.
#[doc(hidden)]
pub fn __stuff_paths(build: u8, hay: &[u8], from: usize, out: &mut [u8]) -> Option<(usize, usize, usize, usize)> {
    let from = min(from, hay.len());
    let s = scan::run::<false, true, { scan::DOUBLE }>(scan_build(build), hay, from, usize::MAX, usize::MAX, out);
    s.map(|s| (s.to, s.checked, s.drops.n, s.drops.last))
}

/// The build a test or fuzz target names by number.
fn scan_build(build: u8) -> scan::Build {
    match build {
        0 => scan::Build::Portable,
        1 => scan::Build::Avx2,
        _ => scan::Build::Avx512,
    }
}

/// Not part of the API: the floor of the AVX-512BW block scan for the `data` bench (per 63
/// pairs the two loads and the mask work, no exits); `None` without AVX-512BW.
#[doc(hidden)]
pub fn __scan_floor(hay: &[u8]) -> Option<u64> {
    scan::floor(hay)
}

/// Not part of the API: for the `data` bench, what no copying scan can beat on this CPU: `out`
/// (at least `hay.len()` long) gets `hay` through 64-byte vector loads and stores, with no
/// check. `false` (and nothing copied) without AVX-512BW.
#[doc(hidden)]
pub fn __copy_floor(hay: &[u8], out: &mut [u8]) -> bool {
    scan::copy_floor(hay, out)
}
