//! The receive side: streaming dot-unstuffing ([`DataDecoder`]).

use core::cmp::min;

use super::{find_line_byte, BarePolicy, DataError, Decoded, DecodedInto};
use crate::fast::scan;

/// A limit as a `usize` distance (saturating: a limit beyond the address space is none).
#[inline(always)]
fn clamp(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `"\r" X` for every byte X: the body emitted when a CR held across calls is followed by X.
static CR_PAIRS: [u8; 512] = {
    let mut t = [0u8; 512];
    let mut i = 0;
    while i < 256 {
        t[2 * i] = b'\r';
        t[2 * i + 1] = i as u8;
        i += 1;
    }
    t
};

/// `CR_PAIRS[..n]` after a held CR followed by `x`.
#[inline]
fn cr_then(x: u8, n: u64) -> &'static [u8] {
    let at = 2 * x as usize;
    &CR_PAIRS[at..at + n as usize]
}

/// Where the decoder stands in the byte stream. Together with `error`, `size` and `line_len`
/// this is all the state carried across calls: never a copy of body bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line: right after a CRLF, or at the very start of the content.
    LineStart,
    /// Inside a line, nothing held.
    Text,
    /// Inside a line; a CR was consumed but not emitted yet (its fate depends on the next byte).
    Cr,
    /// A line-start `.` was consumed (and dropped: stuffing or the terminator).
    Dot,
    /// A line-start `.` then a CR were consumed; an LF now ends the message.
    DotCr,
    /// The terminator was consumed.
    Done,
}

/// Streaming dot-unstuffing decoder for DATA content (RFC 5321 §4.5.2), positioned right after
/// the 354 reply.
///
/// Each [`decode`](Self::decode) call consumes a prefix of its input and returns at most one
/// chunk of unstuffed body, borrowed from the input ([`decode_into`](Self::decode_into) copies
/// it into a buffer of the caller's in the same pass instead). Only `CR LF . CR LF` (or `. CR LF` as the
/// very first line) ends the message; bytes after it are not consumed. Bare CR and bare LF are
/// handled by a [`BarePolicy`]; limits on the message size and the text line length are
/// enforced without buffering: after the first violation nothing more is emitted, the decoder
/// reads on to the real end and then reports the error. Any split of the input gives the same
/// body and the same result.
///
/// ```
/// use smtp_proto::data::{BarePolicy, DataDecoder};
///
/// let mut dec = DataDecoder::new(BarePolicy::Reject, Some(1 << 20), Some(1000));
/// let mut input: &[u8] = b"Subject: hi\r\n\r\n..dots\r\n.\r\nQUIT\r\n";
/// let mut body = Vec::new();
/// let end = loop {
///     let d = dec.decode(input);
///     body.extend_from_slice(d.body);
///     input = &input[d.consumed..];
///     if let Some(end) = d.end {
///         break end;
///     }
/// };
/// assert_eq!(body, b"Subject: hi\r\n\r\n.dots\r\n");
/// assert_eq!(end, Ok(22));
/// assert_eq!(input, b"QUIT\r\n"); // the next command, untouched
/// ```
#[derive(Debug, Clone)]
pub struct DataDecoder {
    policy: BarePolicy,
    state: State,
    /// The first violation; once set, nothing more is emitted or counted.
    error: Option<DataError>,
    /// Body bytes emitted so far (`<= max_size`).
    size: u64,
    /// Body bytes emitted since the last line start (`<= max_line`; kept exact only when there
    /// is a line limit).
    line_len: u64,
    max_size: u64,
    max_line: u64,
}

impl DataDecoder {
    /// A decoder positioned right after the 354 (at the start of a line).
    ///
    /// `max_size` limits the unstuffed body in octets; `max_line` limits each text line in
    /// octets including its CRLF but not a stuffing dot (RFC 5321 §4.5.3.1.6 says 1000).
    /// `None` means no limit.
    pub fn new(policy: BarePolicy, max_size: Option<u64>, max_line: Option<usize>) -> Self {
        Self {
            policy,
            state: State::LineStart,
            error: None,
            size: 0,
            line_len: 0,
            max_size: max_size.unwrap_or(u64::MAX),
            max_line: max_line.map_or(u64::MAX, |l| l as u64),
        }
    }

    /// Unstuffed body bytes emitted so far (counting stops at the first error).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the end of the message was consumed (then [`decode`](Self::decode) consumes
    /// nothing more).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The first violation seen so far, if any: the message will be refused with it at its end,
    /// and no more body is emitted.
    pub fn error(&self) -> Option<DataError> {
        self.error
    }

    /// Decodes the next piece of `input`.
    ///
    /// Consumes at least one byte of a non-empty input (until the end was consumed, after which
    /// it consumes nothing), never a byte after the terminator.
    #[inline]
    pub fn decode<'b>(&mut self, input: &'b [u8]) -> Decoded<'b> {
        self.step::<false>(input, &mut [])
    }

    /// Decodes the next piece of `input` into `out`: the same steps as [`decode`](Self::decode),
    /// but the body is copied into `out[..written]` as it is scanned (one pass over the bytes,
    /// where `decode` and then a copy of its chunk take two).
    ///
    /// Consumes at most `out.len() - 1` bytes (a CR held from the call before can make the body
    /// one byte longer than what is consumed), so an `out` one byte longer than `input` takes
    /// all of it, up to the terminator. With `out.len() >= 2` it consumes at least one byte of a
    /// non-empty input (until the end was consumed). Bytes of `out` after `written` may be
    /// overwritten.
    ///
    /// ```
    /// use smtp_proto::data::{BarePolicy, DataDecoder};
    ///
    /// let mut dec = DataDecoder::new(BarePolicy::Reject, None, Some(1000));
    /// let input = b"one\r\n..two\r\n.\r\nQUIT\r\n";
    /// let mut out = [0u8; 64];
    /// let (mut at, mut n) = (0, 0);
    /// let end = loop {
    ///     let d = dec.decode_into(&input[at..], &mut out[n..]);
    ///     at += d.consumed;
    ///     n += d.written;
    ///     if let Some(end) = d.end {
    ///         break end;
    ///     }
    /// };
    /// assert_eq!(&out[..n], b"one\r\n.two\r\n");
    /// assert_eq!(end, Ok(11));
    /// assert_eq!(&input[at..], b"QUIT\r\n");
    /// ```
    #[inline]
    pub fn decode_into(&mut self, input: &[u8], out: &mut [u8]) -> DecodedInto {
        let (mut consumed, mut written) = (0, 0);
        // Step after step: the zero-copy form's step ends at each line-start dot (its body
        // being a slice of the input); this one's drops a stuffing dot and copies on behind
        // it, and ends only where the next one writes on. Each step gets at most the room
        // left minus one (a held CR makes the body one byte longer than what it consumes),
        // and the call consumes at most `out.len() - 1` in all.
        let most = min(input.len(), out.len().saturating_sub(1));
        loop {
            let room = out.len() - written;
            let piece = &input[consumed..most];
            let piece = &piece[..min(piece.len(), room.saturating_sub(1))];
            let d = self.step::<true>(piece, &mut out[written..]);
            consumed += d.consumed;
            written += d.body.len();
            if d.end.is_some() || d.consumed == 0 || d.consumed == piece.len() {
                return DecodedInto { consumed, written, end: d.end };
            }
        }
    }

    /// [`decode`](Self::decode), and with `COPY` also the body into `out` (at least
    /// `input.len() + 1` long): on return `out[..body.len()] == body`.
    #[inline(always)]
    fn step<'b, const COPY: bool>(&mut self, input: &'b [u8], out: &mut [u8]) -> Decoded<'b> {
        if self.error.is_some() {
            let (consumed, end) = self.skip(input, 0);
            return Decoded { consumed, body: &[], end };
        }
        let len = input.len();
        let mut pos = 0;
        // Prelude: the few states that look at single bytes. Loops at most three times.
        loop {
            match self.state {
                State::Text => break,
                State::Done => return Decoded { consumed: 0, body: &[], end: None },
                State::LineStart | State::Dot if pos == len => return Decoded { consumed: pos, body: &[], end: None },
                State::LineStart => {
                    if input[pos] == b'.' {
                        pos += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Dot => {
                    if input[pos] == b'\r' {
                        pos += 1;
                        self.state = State::DotCr;
                    } else {
                        // The dot was stuffing; what follows is ordinary text.
                        self.state = State::Text;
                    }
                }
                State::Cr | State::DotCr => {
                    if pos == len {
                        return Decoded { consumed: pos, body: &[], end: None };
                    }
                    let x = input[pos];
                    pos += 1;
                    if x == b'\n' {
                        if self.state == State::DotCr {
                            self.state = State::Done;
                            return Decoded { consumed: pos, body: &[], end: Some(Ok(self.size)) };
                        }
                        // The held CR and this LF are a line end.
                        let n = self.take(2);
                        self.line_len = 0;
                        self.state = State::LineStart;
                        return self.then_skip::<COPY>(input, pos, cr_then(x, n), out);
                    }
                    // The held CR is bare.
                    if self.policy == BarePolicy::Reject {
                        self.fail(DataError::BareLineEnding);
                        self.state = State::Text;
                        let (consumed, end) = self.skip(input, pos - 1);
                        return Decoded { consumed, body: &[], end };
                    }
                    let body = if x == b'\r' {
                        // A new CR to hold.
                        self.state = State::Cr;
                        cr_then(x, self.take(1))
                    } else {
                        self.state = State::Text;
                        cr_then(x, self.take(2))
                    };
                    return self.then_skip::<COPY>(input, pos, body, out);
                }
            }
        }
        let (d, copied, ob) = self.scan::<COPY>(input, pos, out);
        if COPY {
            // The scan copied up to `copied`; the rest of the chunk, if any, here. The chunk
            // is `input[ob..end]` less the dots dropped on the way: `out[k - ob]` is `input[k]`
            // after the last of them.
            let end = ob + d.body.len();
            if copied < end {
                out[copied - ob..end - ob].copy_from_slice(&input[copied..end]);
            }
        }
        d
    }

    /// The hot path: state `Text` at `start`, no error yet; emits one chunk starting there.
    ///
    /// Invariants of the loop:
    /// - `input[start..from]` is body; the decoder is inside a line at `from`, nothing held;
    /// - the current line started at `line_start` (or, for a line carried in from an earlier
    ///   call, `carried` bytes before `start`);
    /// - `stop` is the first index whose byte would cross a limit (size or line); every byte
    ///   before `from` is below it, so the limits cost one comparison per line;
    /// - the chunk ends only at a line-start dot (with `COPY`, only at one that is not
    ///   stuffing, see below), a violation, or the end of the input.
    ///
    /// Ordinary lines (`text CRLF` followed by a non-dot) extend the chunk: one block scan and a
    /// few comparisons per line, no stores.
    ///
    /// With `COPY`, the block scan also copies into `out`, and the bytes between its runs are
    /// copied before the next one. Line-start dots that are stuffing (a dot after a CRLF,
    /// followed by a byte other than CR) do not end the chunk there: they are dropped and the
    /// copy goes on one byte further back, so that `out[k - ob]` is `input[k]`, `ob` being
    /// `start` plus the dots dropped before `k`. Returns with the chunk (as `input[ob..end]`,
    /// whose length is what `out` holds), `copied` and `ob`: `out` holds the body up to input
    /// index `copied` (the caller copies the rest of the chunk).
    #[inline(always)]
    fn scan<'b, const COPY: bool>(
        &mut self,
        input: &'b [u8],
        start: usize,
        out: &mut [u8],
    ) -> (Decoded<'b>, usize, usize) {
        let len = input.len();
        let allow = self.policy == BarePolicy::Allow;
        // Limits are input indices; each dot dropped moves the size limit's one byte on.
        let mut size_stop = start.saturating_add(clamp(self.max_size - self.size));
        let max_line = clamp(self.max_line);
        let mut line_start = start;
        let mut carried = self.line_len;
        let mut stop = min(size_stop, start.saturating_add(clamp(self.max_line - carried)));
        let mut from = start;
        // The chunk's start in `out`'s terms (see above); `start` without `COPY`.
        let mut ob = start;
        // The block scan, with or without the line limit (too small a limit: no block scan).
        let limit = match self.max_line {
            u64::MAX => Some(false),
            l if l >= scan::BLOCK as u64 => Some(true),
            _ => None,
        };
        // `out` holds the body up to input index `copied`.
        let mut copied = start;
        loop {
            let scan_end = min(len, size_stop);
            let s = if COPY {
                if copied < from {
                    out[copied - ob..from - ob].copy_from_slice(&input[copied..from]);
                }
                // `out[from - ob..]` is at least `scan_end - from` long: `out` is longer
                // than `input`.
                let o = &mut out[from - ob..];
                let s = match limit {
                    Some(false) => scan::unstuff_canonical::<false>(&input[..scan_end], from, stop, max_line, o),
                    Some(true) => scan::unstuff_canonical::<true>(&input[..scan_end], from, stop, max_line, o),
                    None => scan::Skipped { to: from, checked: from, drops: scan::Drops::default() },
                };
                copied = s.to;
                if s.drops.n > 0 {
                    // Dots dropped on the way (see above).
                    ob += s.drops.n;
                    size_stop = size_stop.saturating_add(s.drops.n);
                    if limit == Some(false) {
                        stop = size_stop;
                    }
                }
                s
            } else {
                match limit {
                    Some(false) => scan::skip_canonical::<false>(&input[..scan_end], from, stop, max_line),
                    Some(true) => scan::skip_canonical::<true>(&input[..scan_end], from, stop, max_line),
                    None => scan::Skipped { to: from, checked: from, drops: scan::Drops::default() },
                }
            };
            let r = s.to;
            if r > from && limit == Some(true) {
                // Whole lines were skipped: the current one starts after the last LF (only
                // the line limit needs to know). When the scan stopped right after a CRLF (at
                // a line-start dot, most of the time), that LF passed the limit and the line
                // after it is the one to know; otherwise, a search back.
                let last = if s.checked == r + 2 {
                    Some(r + 1)
                } else {
                    memchr::memrchr(b'\n', &input[from..r]).map(|j| from + j)
                };
                if let Some(j) = last {
                    // A dot the scan dropped at the line's start is not part of it.
                    line_start = if COPY && s.drops.n > 0 && s.drops.last == j + 1 { j + 2 } else { j + 1 };
                    carried = 0;
                    stop = min(size_stop, line_start.saturating_add(max_line));
                }
            }
            // The scan stops right at the CR or LF it could not pass, most of the time.
            let p = match input.get(r) {
                Some(b'\r' | b'\n') => r,
                // The scan went to the end of the read (the usual end of a call).
                None => len,
                _ => find_line_byte(input, r),
            };
            if p == len {
                if len > stop {
                    return (self.over_limit(input, ob, stop, size_stop, len, State::Text), copied, ob);
                }
                self.emitted(ob, len, line_start, carried, State::Text);
                return (Decoded { consumed: len, body: &input[ob..], end: None }, copied, ob);
            }
            if input[p] == b'\r' {
                match input.get(p + 1) {
                    None => {
                        // Hold the CR: the next call decides whether it ends a line.
                        if p > stop {
                            return (self.over_limit(input, ob, stop, size_stop, len, State::Cr), copied, ob);
                        }
                        self.emitted(ob, p, line_start, carried, State::Cr);
                        return (Decoded { consumed: len, body: &input[ob..p], end: None }, copied, ob);
                    }
                    Some(b'\n') => {
                        let q = p + 2;
                        if q > stop {
                            return (self.over_limit(input, ob, stop, size_stop, q, State::LineStart), copied, ob);
                        }
                        line_start = q;
                        carried = 0;
                        stop = min(size_stop, q.saturating_add(max_line));
                        match input.get(q) {
                            Some(b'.') => {
                                if COPY && input.get(q + 1).is_some_and(|&x| x != b'\r') {
                                    // Stuffing: drop the dot and go on behind it, the line
                                    // (not counting the dot) starting after it.
                                    if copied < q {
                                        out[copied - ob..q - ob].copy_from_slice(&input[copied..q]);
                                    }
                                    ob += 1;
                                    copied = q + 1;
                                    from = q + 1;
                                    line_start = q + 1;
                                    size_stop = size_stop.saturating_add(1);
                                    stop = min(size_stop, from.saturating_add(max_line));
                                    continue;
                                }
                                self.emitted(ob, q, q, 0, State::Dot);
                                let body = &input[ob..q];
                                if input.get(q + 1) == Some(&b'\r') && input.get(q + 2) == Some(&b'\n') {
                                    self.state = State::Done;
                                    let end = Some(Ok(self.size));
                                    return (Decoded { consumed: q + 3, body, end }, copied, ob);
                                }
                                // Drop the dot; the next call goes on after it.
                                return (Decoded { consumed: q + 1, body, end: None }, copied, ob);
                            }
                            Some(_) => from = q,
                            None => {
                                self.emitted(ob, len, q, 0, State::LineStart);
                                return (Decoded { consumed: len, body: &input[ob..], end: None }, copied, ob);
                            }
                        }
                    }
                    Some(_) if allow => from = p + 1,
                    Some(_) => return (self.bare(input, ob, stop, size_stop, p), copied, ob),
                }
            } else if allow {
                // A bare LF (the LF of a CRLF is consumed with its CR above).
                from = p + 1;
            } else {
                return (self.bare(input, ob, stop, size_stop, p), copied, ob);
            }
        }
    }

    /// Records that `input[start..end]` was emitted, the line at `end` having started at
    /// `line_start` (plus `carried` bytes from earlier calls), and the state at `end`.
    #[inline(always)]
    fn emitted(&mut self, start: usize, end: usize, line_start: usize, carried: u64, state: State) {
        self.size += (end - start) as u64;
        self.line_len = carried + (end - line_start) as u64;
        self.state = state;
    }

    /// A limit is crossed at `stop` (`< end`): emit `input[start..stop]`, record the error, and
    /// skip on from `resume` (where the scan was, in `state`) towards the real end.
    #[cold]
    fn over_limit<'b>(
        &mut self,
        input: &'b [u8],
        start: usize,
        stop: usize,
        size_stop: usize,
        resume: usize,
        state: State,
    ) -> Decoded<'b> {
        self.size += (stop - start) as u64;
        self.fail(if size_stop <= stop { DataError::TooBig } else { DataError::LineTooLong });
        self.state = state;
        let (consumed, end) = self.skip(input, resume);
        Decoded { consumed, body: &input[start..stop], end }
    }

    /// A bare CR or LF at `p` under `Reject`: emit what precedes it (unless a limit came
    /// first), then skip to the end.
    #[cold]
    fn bare<'b>(&mut self, input: &'b [u8], start: usize, stop: usize, size_stop: usize, p: usize) -> Decoded<'b> {
        if p > stop {
            return self.over_limit(input, start, stop, size_stop, p + 1, State::Text);
        }
        self.size += (p - start) as u64;
        self.fail(DataError::BareLineEnding);
        self.state = State::Text;
        let (consumed, end) = self.skip(input, p + 1);
        Decoded { consumed, body: &input[start..p], end }
    }

    /// Returns `body` having consumed `input[..pos]`, or, if a violation was just recorded,
    /// having skipped on from `pos` towards the real end.
    #[inline]
    fn then_skip<'b, const COPY: bool>(
        &mut self,
        input: &'b [u8],
        pos: usize,
        body: &'b [u8],
        out: &mut [u8],
    ) -> Decoded<'b> {
        if COPY {
            out[..body.len()].copy_from_slice(body);
        }
        if self.error.is_some() {
            let (consumed, end) = self.skip(input, pos);
            Decoded { consumed, body, end }
        } else {
            Decoded { consumed: pos, body, end: None }
        }
    }

    /// Counts `n` more body bytes against both limits and returns how many of them may be
    /// emitted: `n`, or fewer if a limit is crossed, which records the error (at the same byte,
    /// the size limit wins).
    #[inline(always)]
    fn take(&mut self, n: u64) -> u64 {
        let size_room = self.max_size - self.size;
        let line_room = self.max_line - self.line_len;
        if n <= size_room && n <= line_room {
            self.size += n;
            self.line_len += n;
            return n;
        }
        let ok = min(size_room, line_room);
        self.size += ok;
        self.line_len += ok;
        self.fail(if size_room <= line_room { DataError::TooBig } else { DataError::LineTooLong });
        ok
    }

    fn fail(&mut self, e: DataError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Error mode: consumes from `i` up to and including the real end, emitting nothing.
    /// The states keep their meaning, so this is the same end detection as the hot path.
    /// Returns the consumed length (from 0) and the end, if reached.
    fn skip(&mut self, input: &[u8], mut i: usize) -> (usize, Option<Result<u64, DataError>>) {
        let len = input.len();
        while i < len {
            match self.state {
                State::Text => match memchr::memchr(b'\r', &input[i..]) {
                    None => return (len, None),
                    Some(k) => {
                        i += k + 1;
                        self.state = State::Cr;
                    }
                },
                State::Cr => {
                    match input[i] {
                        b'\n' => self.state = State::LineStart,
                        b'\r' => {}
                        _ => self.state = State::Text,
                    }
                    i += 1;
                }
                State::LineStart => {
                    if input[i] == b'.' {
                        i += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Dot => {
                    if input[i] == b'\r' {
                        i += 1;
                        self.state = State::DotCr;
                    } else {
                        self.state = State::Text;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        self.state = State::Done;
                        return (i + 1, Some(self.error.map_or(Ok(self.size), Err)));
                    }
                    // Not consumed: it is ordinary text (or a CR to hold).
                    self.state = State::Text;
                }
                State::Done => return (i, None),
            }
        }
        (len, None)
    }
}
