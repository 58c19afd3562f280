//! The send side: streaming dot-stuffing ([`Stuffer`]).

use core::cmp::min;

use super::{find_line_byte, BarePolicy, DataError};
use crate::fast::scan;

/// Where the stuffer stands in its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum SendState {
    /// At the start of an output line (also at the very start).
    #[default]
    LineStart,
    /// Inside a line.
    Text,
    /// Inside a line; a CR was consumed and nothing written for it yet.
    Cr,
    /// [`Stuffer::finish`] is writing `"\r\n.\r\n"[at..]`.
    Tail(u8),
    /// Everything, terminator included, was written.
    Finished,
}

const TAIL: &[u8; 5] = b"\r\n.\r\n";

/// Streaming dot-stuffer for the send side (RFC 5321 §4.5.2).
///
/// Writes canonical content: every line ends with CRLF, a line starting with `.` gets a second
/// one, and [`finish`](Self::finish) adds the terminator. Bare CR and bare LF are turned into
/// CRLF under [`BarePolicy::Allow`] and refused under [`BarePolicy::Reject`], so a smuggling
/// sequence is never forwarded. Input may come in chunks of any size (a CR at the end of a
/// chunk waits for the next one); output goes into a caller buffer of any size of at least
/// [`Stuffer::MIN_OUT`] bytes.
///
/// ```
/// use smtp_proto::data::{BarePolicy, Stuffer};
///
/// let mut s = Stuffer::new(BarePolicy::Allow);
/// let mut out = [0u8; 64];
/// let mut input: &[u8] = b".hidden\nline";
/// let mut n = 0;
/// while !input.is_empty() {
///     let (consumed, written) = s.stuff(input, &mut out[n..]).unwrap();
///     input = &input[consumed..];
///     n += written;
/// }
/// n += s.finish(&mut out[n..]).unwrap();
/// assert!(s.is_finished());
/// assert_eq!(&out[..n], b"..hidden\r\nline\r\n.\r\n");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Stuffer {
    policy: BarePolicy,
    state: SendState,
}

impl Stuffer {
    /// The smallest output buffer with which every [`stuff`](Self::stuff) call on non-empty
    /// input makes progress (a CRLF is never split).
    pub const MIN_OUT: usize = 2;
    /// The most [`finish`](Self::finish) writes; with this much room one call finishes.
    pub const FINISH_LEN: usize = 5;

    /// A stuffer at the start of the message body.
    pub fn new(policy: BarePolicy) -> Self {
        Self { policy, state: SendState::LineStart }
    }

    /// Whether [`finish`](Self::finish) wrote the whole terminator.
    pub fn is_finished(&self) -> bool {
        self.state == SendState::Finished
    }

    /// Stuffs a prefix of `input` into `out`, returning `(consumed, written)`.
    ///
    /// Stops when `out` is full or `input` is used up; a CR at the end of `input` is consumed
    /// and written later (with the next chunk, or by [`finish`](Self::finish)). Under `Reject`,
    /// a bare CR or LF stops the call just before it; a call that starts with it returns
    /// `Err(DataError::BareLineEnding)` and consumes nothing (the stuffer stays there). With
    /// `out.len() >= MIN_OUT` and non-empty input, each `Ok` call consumes or writes something.
    /// After `finish` started, consumes nothing.
    pub fn stuff(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), DataError> {
        let len = input.len();
        let cap = out.len();
        let mut i = 0;
        let mut w = 0;
        if i == len {
            return Ok((0, 0));
        }
        match self.state {
            SendState::Tail(_) | SendState::Finished => return Ok((0, 0)),
            SendState::Cr => {
                if input[0] != b'\n' && self.policy == BarePolicy::Reject {
                    return Err(DataError::BareLineEnding);
                }
                if cap < 2 {
                    return Ok((0, 0));
                }
                out[..2].copy_from_slice(b"\r\n");
                w = 2;
                if input[0] == b'\n' {
                    i = 1;
                }
                self.state = SendState::LineStart;
            }
            SendState::LineStart | SendState::Text => {}
        }
        loop {
            if self.state == SendState::LineStart {
                if i == len {
                    return Ok((i, w));
                }
                if input[i] == b'.' {
                    if w == cap {
                        return Ok((i, w));
                    }
                    // The extra dot; the original one is copied with the run below.
                    out[w] = b'.';
                    w += 1;
                }
                self.state = SendState::Text;
            }
            // A run copied as long as it fits: `input[run..from]` is canonical text, the dots
            // at its line starts doubled by the block scan (`ins` of them), so that
            // `out[w + (k - run) + ins]` is where `input[k]` goes after the last of them.
            let run = i;
            let mut ins = 0;
            let limit = min(len, i + (cap - w));
            let mut from = i;
            // `input[run..copied]` is already in `out[w..]`: the block scan copies as it goes.
            let mut copied = i;
            loop {
                if copied < from {
                    out[w + (copied - run) + ins..w + (from - run) + ins].copy_from_slice(&input[copied..from]);
                }
                let s = scan::stuff_canonical(&input[..limit], from, &mut out[w + (from - run) + ins..]);
                // The scan doubles dots only while all of `input[..limit]` still fits after
                // them, so `limit` still bounds the run.
                ins += s.drops.n;
                debug_assert!(w + (limit - run) + ins <= cap);
                let r = s.to;
                copied = r;
                let p = find_line_byte(&input[..limit], r);
                // Copies the rest of `input[run..end]`; `i` becomes `end`.
                let mut flush = |end: usize, w: &mut usize, i: &mut usize| {
                    out[*w + (copied - run) + ins..*w + (end - run) + ins].copy_from_slice(&input[copied..end]);
                    *w += end - run + ins;
                    *i = end;
                };
                if p == limit {
                    flush(limit, &mut w, &mut i);
                    return Ok((i, w));
                }
                let crlf = input[p] == b'\r' && input.get(p + 1) == Some(&b'\n');
                if crlf {
                    let q = p + 2;
                    if q > limit {
                        // The CRLF does not fit whole.
                        flush(p, &mut w, &mut i);
                        return Ok((i, w));
                    }
                    if q == len || input[q] == b'.' {
                        flush(q, &mut w, &mut i);
                        self.state = SendState::LineStart;
                        break;
                    }
                    from = q;
                    continue;
                }
                flush(p, &mut w, &mut i);
                if input[p] == b'\r' && p + 1 == len {
                    // Hold the CR until we see what follows it.
                    self.state = SendState::Cr;
                    return Ok((len, w));
                }
                // A bare CR or LF at `p`.
                if self.policy == BarePolicy::Reject {
                    return if i == 0 && w == 0 { Err(DataError::BareLineEnding) } else { Ok((i, w)) };
                }
                if cap - w < 2 {
                    return Ok((i, w));
                }
                out[w..w + 2].copy_from_slice(b"\r\n");
                w += 2;
                i = p + 1;
                self.state = SendState::LineStart;
                break;
            }
        }
    }

    /// Ends the body: flushes a held CR (as CRLF under `Allow`; `Err` under `Reject`), adds a
    /// CRLF if the body does not end with one, then writes the terminator `.` CRLF. Returns
    /// the bytes written. If `out` is shorter than [`Stuffer::FINISH_LEN`] it may take several
    /// calls: call until [`is_finished`](Self::is_finished). Writes nothing once finished.
    pub fn finish(&mut self, out: &mut [u8]) -> Result<usize, DataError> {
        let at = match self.state {
            SendState::Cr if self.policy == BarePolicy::Reject => return Err(DataError::BareLineEnding),
            SendState::Cr | SendState::Text => 0,
            SendState::LineStart => 2,
            SendState::Tail(at) => at as usize,
            SendState::Finished => return Ok(0),
        };
        let n = min(out.len(), TAIL.len() - at);
        out[..n].copy_from_slice(&TAIL[at..at + n]);
        self.state = if at + n == TAIL.len() { SendState::Finished } else { SendState::Tail((at + n) as u8) };
        Ok(n)
    }
}
