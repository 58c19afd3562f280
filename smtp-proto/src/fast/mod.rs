//! Everything `unsafe` in the crate, each use measured to pay for itself (README,
//! Performance):
//!
//! - [`scan`]: the DATA block scan's AVX-512BW build (intrinsics) and the calls of the
//!   AVX-512BW and AVX2 builds after run-time detection;
//! - [`printable_prefix`]: a command line's printable-ASCII prefix as a `str` without a second
//!   UTF-8 validation pass.
//!
//! Miri runs the DATA and parser tests on the code here (the vector builds are left out under
//! miri); the `scan_paths` fuzz target holds every scan build to the portable one, and the
//! `command` fuzz target (built with debug assertions) re-checks every prefix.

pub(crate) mod scan;

/// The longest prefix of `b` without a control character (`< 0x20`) or a non-ASCII byte
/// (`>= 0x80`), as a `str`: the printable ASCII (and DEL) that a command line is made of.
#[inline(always)]
pub(crate) fn printable_prefix(b: &[u8]) -> &str {
    let n = crate::parse::swar::first_ctl_or_non_ascii(b);
    let p = &b[..n];
    debug_assert!(p.iter().all(|&c| (0x20..0x80).contains(&c)), "{p:?}");
    // SAFETY: `first_ctl_or_non_ascii` returns the index of the first byte below 0x20 or at or
    // above 0x80 (or the length): its word-wise test flags every such byte (a borrow out of
    // `w - 0x2020..` sets a byte's high bit exactly when the byte is below 0x20, `| w` adds
    // the bytes whose high bit is already set) and reports the lowest flagged one, which is
    // exact (only bytes above a flagged byte can be flagged falsely); its byte-wise tail tests
    // the same range directly. So every byte of `p` is in 0x20..0x80: ASCII, hence UTF-8.
    unsafe { core::str::from_utf8_unchecked(p) }
}
