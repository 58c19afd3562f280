//! DATA path tests: `DataDecoder` against a deliberately naive byte-at-a-time reference, at
//! every split; smuggling sequences; limits; `Stuffer` round trips.

use std::cmp::min;

use proptest::prelude::*;
use smtp_proto::data::{
    __copy_floor, __scan_paths, __stuff_paths, __unstuff_paths, BarePolicy, DataDecoder, DataError, Stuffer,
};

type End = Option<Result<u64, DataError>>;

/// What a decoder made of some input: the body, the end, and the bytes consumed in total.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    body: Vec<u8>,
    end: End,
    consumed: usize,
}

/// The naive model: one byte at a time, written straight from the rules.
fn reference(input: &[u8], policy: BarePolicy, max_size: Option<u64>, max_line: Option<usize>) -> Outcome {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        LineStart,
        Text,
        Cr,
        Dot,
        DotCr,
    }
    struct M {
        body: Vec<u8>,
        err: Option<DataError>,
        line: u64,
        max_size: u64,
        max_line: u64,
        policy: BarePolicy,
    }
    impl M {
        fn emit(&mut self, b: u8) {
            if self.err.is_some() {
                return;
            }
            if self.body.len() as u64 + 1 > self.max_size {
                self.err = Some(DataError::TooBig);
            } else if self.line + 1 > self.max_line {
                self.err = Some(DataError::LineTooLong);
            } else {
                self.body.push(b);
                self.line += 1;
            }
        }
        fn bare(&mut self, b: u8) {
            match self.policy {
                BarePolicy::Allow => self.emit(b),
                _ => {
                    if self.err.is_none() {
                        self.err = Some(DataError::BareLineEnding);
                    }
                }
            }
        }
    }
    let mut m = M {
        body: Vec::new(),
        err: None,
        line: 0,
        max_size: max_size.unwrap_or(u64::MAX),
        max_line: max_line.map_or(u64::MAX, |l| l as u64),
        policy,
    };
    let mut s = S::LineStart;
    for (i, &b) in input.iter().enumerate() {
        // States that decide about `b` first, then maybe hand it over to `Text`.
        match s {
            S::LineStart if b == b'.' => {
                s = S::Dot;
                continue;
            }
            S::Dot if b == b'\r' => {
                s = S::DotCr;
                continue;
            }
            S::DotCr if b == b'\n' => {
                let end = Some(match m.err {
                    Some(e) => Err(e),
                    None => Ok(m.body.len() as u64),
                });
                return Outcome { body: m.body, end, consumed: i + 1 };
            }
            S::Cr if b == b'\n' => {
                m.emit(b'\r');
                m.emit(b'\n');
                m.line = 0;
                s = S::LineStart;
                continue;
            }
            S::Cr | S::DotCr => m.bare(b'\r'),
            _ => {}
        }
        // Text.
        s = S::Text;
        match b {
            b'\r' => s = S::Cr,
            b'\n' => m.bare(b'\n'),
            _ => m.emit(b),
        }
    }
    Outcome { body: m.body, end: None, consumed: input.len() }
}

/// Runs `DataDecoder` over `input` cut at `cuts` (sorted indices), checking the call contract;
/// and `decode_into` the same way, which must give the same outcome.
fn decode_split(
    input: &[u8],
    cuts: &[usize],
    policy: BarePolicy,
    max_size: Option<u64>,
    max_line: Option<usize>,
) -> Outcome {
    let got = decode_split_with(input, cuts, policy, max_size, max_line);
    let into = decode_split_into(input, cuts, policy, max_size, max_line);
    assert_eq!(into, got, "decode_into differs from decode on {input:?} cut at {cuts:?}");
    got
}

/// The pieces of `input` cut at `cuts`.
fn pieces<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c <= input.len()).collect();
    bounds.push(input.len());
    let mut at = 0;
    let mut out = Vec::new();
    for b in bounds {
        if b >= at {
            out.push(&input[at..b]);
            at = b;
        }
    }
    out
}

/// [`decode_split`] through `decode_into`, with output buffers (filled with junk first) of
/// sizes that cycle from the whole piece down to the smallest that makes progress.
fn decode_split_into(
    input: &[u8],
    cuts: &[usize],
    policy: BarePolicy,
    max_size: Option<u64>,
    max_line: Option<usize>,
) -> Outcome {
    let mut dec = DataDecoder::new(policy, max_size, max_line);
    let mut body = Vec::new();
    let mut consumed = 0;
    let mut calls = 0usize;
    for mut piece in pieces(input, cuts) {
        while !piece.is_empty() {
            let room = [piece.len() + 1, 2, 3, 67, 130][calls % 5];
            calls += 1;
            let mut out = vec![0xa5u8; room];
            let d = dec.decode_into(piece, &mut out);
            assert!(d.consumed > 0, "no progress on {piece:?} into {room}");
            assert!(d.consumed <= piece.len() && d.consumed < room && d.written <= d.consumed + 1);
            body.extend_from_slice(&out[..d.written]);
            consumed += d.consumed;
            piece = &piece[d.consumed..];
            if let Some(e) = d.end {
                assert!(dec.is_done());
                assert_eq!(dec.decode_into(piece, &mut out).consumed, 0);
                return Outcome { body, end: Some(e), consumed };
            }
        }
    }
    Outcome { body, end: None, consumed }
}

/// [`decode_split`] through `decode`.
fn decode_split_with(
    input: &[u8],
    cuts: &[usize],
    policy: BarePolicy,
    max_size: Option<u64>,
    max_line: Option<usize>,
) -> Outcome {
    let mut dec = DataDecoder::new(policy, max_size, max_line);
    let mut body = Vec::new();
    let mut consumed = 0;
    let mut end = None;
    'pieces: for mut piece in pieces(input, cuts) {
        while !piece.is_empty() {
            let d = dec.decode(piece);
            assert!(d.consumed > 0, "no progress on {piece:?}");
            assert!(d.consumed <= piece.len());
            body.extend_from_slice(d.body);
            consumed += d.consumed;
            piece = &piece[d.consumed..];
            if let Some(e) = d.end {
                end = Some(e);
                assert!(dec.is_done());
                // Nothing more is consumed after the end.
                assert_eq!(dec.decode(piece).consumed, 0);
                break 'pieces;
            }
            assert!(!dec.is_done());
        }
    }
    if let Some(Ok(size)) = end {
        assert_eq!(size, body.len() as u64);
    }
    assert_eq!(dec.size(), body.len() as u64);
    Outcome { body, end, consumed }
}

fn decode_all(input: &[u8], policy: BarePolicy) -> Outcome {
    decode_split(input, &[], policy, None, None)
}

/// Checks the decoder against the reference at every single split and every pair of splits
/// (pairs only for short inputs).
fn check_all_splits(input: &[u8], policy: BarePolicy, max_size: Option<u64>, max_line: Option<usize>) {
    let want = reference(input, policy, max_size, max_line);
    assert_eq!(decode_split(input, &[], policy, max_size, max_line), want, "whole {input:?}");
    for i in sample(0..=input.len()) {
        assert_eq!(decode_split(input, &[i], policy, max_size, max_line), want, "split {i} of {input:?}");
        if input.len() <= 24 && !cfg!(miri) {
            for j in i..=input.len() {
                let got = decode_split(input, &[i, j], policy, max_size, max_line);
                assert_eq!(got, want, "splits {i},{j} of {input:?}");
            }
        }
    }
    let bytewise: Vec<usize> = (0..=input.len()).collect();
    assert_eq!(decode_split(input, &bytewise, policy, max_size, max_line), want, "bytewise {input:?}");
}

const BOTH: [BarePolicy; 2] = [BarePolicy::Reject, BarePolicy::Allow];

/// The values of `r`, or under miri (`.ci/run` runs this file there, on the portable block
/// scan; it is slow) about four of them, ends included.
fn sample(r: std::ops::RangeInclusive<usize>) -> impl Iterator<Item = usize> {
    let (a, b) = (*r.start(), *r.end());
    let step = if cfg!(miri) { ((b - a) / 3).max(1) } else { 1 };
    (a..=b).step_by(step).chain(if cfg!(miri) && b > a && (b - a) % step != 0 { Some(b) } else { None })
}

/// Proptest cases: `n`, or a couple under miri.
fn cases(n: u32) -> ProptestConfig {
    if cfg!(miri) {
        // No failure files either: miri isolates the file system.
        ProptestConfig { cases: 2, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig::with_cases(n)
    }
}

// ---------------------------------------------------------------------------------------------
// The reference itself (so that a broken model cannot hide a broken decoder).

#[test]
fn reference_model_basics() {
    let r = reference(b"a\r\n..b\r\n.\r\nX", BarePolicy::Reject, None, None);
    assert_eq!(r, Outcome { body: b"a\r\n.b\r\n".to_vec(), end: Some(Ok(7)), consumed: 11 });
    let r = reference(b"a\nb\r\n.\r\n", BarePolicy::Reject, None, None);
    assert_eq!(r, Outcome { body: b"a".to_vec(), end: Some(Err(DataError::BareLineEnding)), consumed: 8 });
    let r = reference(b"a\nb\r\n.\r\n", BarePolicy::Allow, None, None);
    assert_eq!(r.body, b"a\nb\r\n");
}

// ---------------------------------------------------------------------------------------------
// Decoder: fixed cases.

#[test]
fn simple_message_and_rest_untouched() {
    let input = b"Subject: x\r\n\r\nhello\r\n.\r\nMAIL FROM:<a@b>\r\n";
    for p in BOTH {
        let o = decode_all(input, p);
        assert_eq!(o.body, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(o.end, Some(Ok(21)));
        assert_eq!(&input[o.consumed..], b"MAIL FROM:<a@b>\r\n");
        check_all_splits(input, p, None, None);
    }
}

#[test]
fn first_line_dot_ends_empty_message() {
    for p in BOTH {
        let o = decode_all(b".\r\nQUIT\r\n", p);
        assert_eq!(o, Outcome { body: vec![], end: Some(Ok(0)), consumed: 3 });
        check_all_splits(b".\r\nQUIT\r\n", p, None, None);
    }
    // A first line that is not just a dot is stuffed content.
    let o = decode_all(b"..\r\n.\r\n", BarePolicy::Reject);
    assert_eq!(o, Outcome { body: b".\r\n".to_vec(), end: Some(Ok(3)), consumed: 7 });
    let o = decode_all(b".x\r\n.\r\n", BarePolicy::Reject);
    assert_eq!(o, Outcome { body: b"x\r\n".to_vec(), end: Some(Ok(3)), consumed: 7 });
}

#[test]
fn dot_unstuffing() {
    let input = b"..\r\n...\r\n.a\r\nb.\r\n..\r\n.\r\n";
    let o = decode_all(input, BarePolicy::Reject);
    assert_eq!(o.body, b".\r\n..\r\na\r\nb.\r\n.\r\n");
    assert_eq!(o.end, Some(Ok(o.body.len() as u64)));
    assert_eq!(o.consumed, input.len());
    check_all_splits(input, BarePolicy::Reject, None, None);
}

#[test]
fn body_chunks_are_zero_copy_and_span_lines() {
    // Ordinary lines do not cut the chunk: one call returns the whole body up to the end.
    let input = b"line one\r\nline two\r\nline three\r\n.\r\n";
    let mut dec = DataDecoder::new(BarePolicy::Reject, None, None);
    let d = dec.decode(input);
    assert_eq!(d.consumed, input.len());
    assert_eq!(d.body, &input[..input.len() - 3]);
    assert_eq!(d.body.as_ptr(), input.as_ptr());
    assert_eq!(d.end, Some(Ok(input.len() as u64 - 3)));
    // A stuffed dot ends a chunk just before it; the next starts after it.
    let input = b"ab\r\n..cd\r\n.\r\n";
    let mut dec = DataDecoder::new(BarePolicy::Reject, None, None);
    let d = dec.decode(input);
    assert_eq!((d.consumed, d.body, d.end), (5, &b"ab\r\n"[..], None));
    let d = dec.decode(&input[5..]);
    assert_eq!(d.body, b".cd\r\n");
    assert_eq!(d.body.as_ptr(), input[5..].as_ptr());
    assert_eq!(d.end, Some(Ok(9)));
}

#[test]
fn held_cr_across_calls() {
    let mut dec = DataDecoder::new(BarePolicy::Reject, None, None);
    let d = dec.decode(b"abc\r");
    assert_eq!((d.consumed, d.body, d.end), (4, &b"abc"[..], None));
    let d = dec.decode(b"\n.\r\n");
    assert_eq!((d.consumed, d.body, d.end), (1, &b"\r\n"[..], None));
    let d = dec.decode(b".\r\n");
    assert_eq!((d.consumed, d.body, d.end), (3, &b""[..], Some(Ok(5))));
    // Under Allow, a held CR followed by something else is body.
    let mut dec = DataDecoder::new(BarePolicy::Allow, None, None);
    assert_eq!(dec.decode(b"a\r").body, b"a");
    let d = dec.decode(b"x\r\n.\r\n");
    assert_eq!((d.consumed, d.body), (1, &b"\rx"[..]));
    let d = dec.decode(b"\r\n.\r\n");
    assert_eq!(d.body, b"\r\n");
    assert_eq!(d.end, Some(Ok(5)));
}

#[test]
fn smuggling_sequences_never_end_the_message() {
    let seqs: &[&[u8]] = &[
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r.\r\n",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\r\n.\r\r\n",
        b"\r\n.\0\r\n",
        b"\r\n\0.\r\n",
        b"\r\n.\n\r\n",
        b"\n.\n\n",
        b"\r\r\n.\r\r\n",
        b"\r\n .\r\n",
    ];
    for seq in seqs {
        let mut input = b"hello".to_vec();
        input.extend_from_slice(seq);
        input.extend_from_slice(b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\n");
        for p in BOTH {
            // Without the real end, nothing ends: everything is consumed, no end.
            let o = decode_all(&input, p);
            assert_eq!(o.end, None, "{seq:?} ended the message under {p:?}");
            assert_eq!(o.consumed, input.len());
            check_all_splits(&input, p, None, None);
            // With it, the message ends exactly there, and under Reject it is refused
            // unless the sequence held no bare CR/LF at all.
            let mut full = input.clone();
            full.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
            let o = decode_all(&full, p);
            assert_eq!(o.consumed, full.len() - 6, "{seq:?}");
            let canonical = !has_bare(seq);
            match p {
                BarePolicy::Reject if !canonical => {
                    assert_eq!(o.end, Some(Err(DataError::BareLineEnding)), "{seq:?}");
                    // Nothing after the first bare CR/LF is emitted.
                    assert!(o.body.len() <= b"hello\r\n".len(), "{seq:?}: {:?}", o.body);
                }
                _ => assert!(matches!(o.end, Some(Ok(_))), "{seq:?}: {:?}", o.end),
            }
            check_all_splits(&full, p, None, None);
        }
    }
}

#[test]
fn bare_lf_and_cr_policies() {
    let input = b"a\nb\rc\r\n.\r\n";
    let o = decode_all(input, BarePolicy::Reject);
    assert_eq!(o, Outcome { body: b"a".to_vec(), end: Some(Err(DataError::BareLineEnding)), consumed: 10 });
    let o = decode_all(input, BarePolicy::Allow);
    assert_eq!(o, Outcome { body: b"a\nb\rc\r\n".to_vec(), end: Some(Ok(7)), consumed: 10 });
    // A bare LF does not start a line: the dot after it is text, not stuffing.
    let o = decode_all(b"a\n.b\r\n.\r\n", BarePolicy::Allow);
    assert_eq!(o.body, b"a\n.b\r\n");
    let o = decode_all(b"a\r.b\r\n.\r\n", BarePolicy::Allow);
    assert_eq!(o.body, b"a\r.b\r\n");
    // A line-start dot followed by a bare CR/LF: the dot goes, the rest is text.
    let o = decode_all(b".\rx\r\n.\r\n", BarePolicy::Allow);
    assert_eq!(o.body, b"\rx\r\n");
    let o = decode_all(b".\nx\r\n.\r\n", BarePolicy::Allow);
    assert_eq!(o.body, b"\nx\r\n");
    for input in [&b".\rx\r\n.\r\n"[..], b".\nx\r\n.\r\n", b"x\r\n.\r\r\n.\r\n", b"\r\r\r\n.\r\n"] {
        for p in BOTH {
            check_all_splits(input, p, None, None);
        }
        assert_eq!(decode_all(input, BarePolicy::Reject).end, Some(Err(DataError::BareLineEnding)));
    }
}

#[test]
fn reject_keeps_reading_to_the_real_end() {
    // After a violation the decoder emits nothing more, and only CRLF.CRLF ends it.
    let input = b"ok\r\nbad\n\r\n.\n\r\n.\r\r\n..\r\n.\r\nNEXT";
    let o = decode_all(input, BarePolicy::Reject);
    assert_eq!(o.body, b"ok\r\nbad");
    assert_eq!(o.end, Some(Err(DataError::BareLineEnding)));
    assert_eq!(&input[o.consumed..], b"NEXT");
    check_all_splits(input, BarePolicy::Reject, None, None);
}

#[test]
fn size_limit_boundaries() {
    let input = b"abc\r\n..de\r\n.\r\nX"; // body "abc\r\n.de\r\n" = 10 bytes
    for p in BOTH {
        let o = decode_split(input, &[], p, Some(10), None);
        assert_eq!(o.end, Some(Ok(10)));
        let o = decode_split(input, &[], p, Some(9), None);
        assert_eq!(o.body, b"abc\r\n.de\r");
        assert_eq!(o.end, Some(Err(DataError::TooBig)));
        assert_eq!(o.consumed, input.len() - 1);
        let o = decode_split(input, &[], p, Some(0), None);
        assert_eq!((o.body.len(), o.end), (0, Some(Err(DataError::TooBig))));
        for limit in 0..=11 {
            check_all_splits(input, p, Some(limit), None);
        }
    }
    // Empty message within a zero limit.
    assert_eq!(decode_split(b".\r\n", &[], BarePolicy::Reject, Some(0), None).end, Some(Ok(0)));
}

#[test]
fn size_limit_memory_stays_flat() {
    // A large body over the limit: chunks stop at the limit, the whole input is consumed.
    let mut input = Vec::new();
    for i in 0..2000 {
        input.extend_from_slice(format!("line {i} of a rather long message\r\n").as_bytes());
    }
    input.extend_from_slice(b".\r\n");
    let o = decode_split(&input, &[100, 5000, 30000], BarePolicy::Reject, Some(1000), Some(1000));
    assert_eq!(o.body.len(), 1000);
    assert_eq!(o.end, Some(Err(DataError::TooBig)));
    assert_eq!(o.consumed, input.len());
}

#[test]
fn line_limit_boundaries() {
    // "abcd\r\n" is 6 octets; a stuffing dot does not count.
    let input = b"abcd\r\n.abcd\r\nab\r\n.\r\n";
    for p in BOTH {
        assert_eq!(decode_split(input, &[], p, None, Some(6)).end, Some(Ok(16)));
        let o = decode_split(input, &[], p, None, Some(5));
        assert_eq!(o.body, b"abcd\r");
        assert_eq!(o.end, Some(Err(DataError::LineTooLong)));
        for limit in 0..=8 {
            check_all_splits(input, p, None, Some(limit));
        }
    }
    // The first error wins: a long line before a bare LF, and the other way round.
    let o = decode_split(b"abcdef\nx\r\n.\r\n", &[], BarePolicy::Reject, None, Some(3));
    assert_eq!(o.end, Some(Err(DataError::LineTooLong)));
    let o = decode_split(b"ab\ncdef\r\n.\r\n", &[], BarePolicy::Reject, None, Some(3));
    assert_eq!(o.end, Some(Err(DataError::BareLineEnding)));
    // Under Allow a bare LF does not end the line.
    let o = decode_split(b"ab\ncd\r\n.\r\n", &[], BarePolicy::Allow, None, Some(6));
    assert_eq!(o.end, Some(Err(DataError::LineTooLong)));
    // Size and line limits crossed at the same byte: the size limit is reported.
    let o = decode_split(b"abcdef\r\n.\r\n", &[], BarePolicy::Reject, Some(3), Some(3));
    assert_eq!(o.end, Some(Err(DataError::TooBig)));
}

#[test]
fn long_lines_and_block_boundaries() {
    // Exercise the 16-byte block scan: line ends at every offset, tabs and NULs (which pass
    // the block filter) and high bytes.
    for len in sample(0..=39) {
        let mut input = Vec::new();
        for k in 0..3 {
            input.extend((0..len).map(|i| match (i + k) % 7 {
                0 => b'\t',
                1 => 0,
                2 => 0xff,
                3 => 0x8d,
                _ => b'a' + (i % 26) as u8,
            }));
            input.extend_from_slice(b"\r\n");
            if k == 1 {
                input.extend_from_slice(b"..x\r\n");
            }
        }
        input.extend_from_slice(b".\r\n");
        for p in BOTH {
            let want = reference(&input, p, None, None);
            assert!(matches!(want.end, Some(Ok(_))));
            for i in sample(0..=input.len()) {
                assert_eq!(decode_split(&input, &[i], p, None, None), want);
            }
        }
    }
}

#[test]
fn stuffed_lines_at_the_limits() {
    // Runs of stuffed lines, short and long (`decode_into` drops their dots inside the block
    // scan when a block's worth of input follows, in its own loop otherwise): the size limit
    // at the body's size and one under it, the line limit at the longest line without its
    // dot and one under it, the body by `decode` and `decode_into` against the reference.
    let mut input = Vec::new();
    let mut longest = 0;
    for (k, len) in [2usize, 70, 3, 1, 130, 64, 65, 63, 2, 2, 200, 5, 90].into_iter().enumerate() {
        let text: Vec<u8> = (0..len).map(|i| b'a' + ((i + k) % 26) as u8).collect();
        for dots in [".", "..", "x"] {
            input.extend_from_slice(dots.as_bytes());
            input.extend_from_slice(&text);
            input.extend_from_slice(b"\r\n");
            let unstuffed = len + 2 + usize::from(dots.len() == 2 || dots == "x");
            longest = longest.max(unstuffed);
        }
    }
    input.extend_from_slice(b".\r\n");
    let size = reference(&input, BarePolicy::Reject, None, None).body.len() as u64;
    for p in BOTH {
        let limits = [
            (Some(size), None),
            (None, Some(longest - 1)),
            (Some(size - 1), None),
            (None, Some(longest)),
            (Some(size / 2), Some(longest)),
            (None, Some(131)),
        ];
        for (max_size, max_line) in limits.into_iter().step_by(if cfg!(miri) { 3 } else { 1 }) {
            let want = reference(&input, p, max_size, max_line);
            for i in sample(0..=input.len()).step_by(if cfg!(miri) { 1 } else { 7 }) {
                let got = decode_split(&input, &[i], p, max_size, max_line);
                assert_eq!(got, want, "split {i}, size limit {max_size:?}, line limit {max_line:?}");
            }
            let got = decode_split(&input, &[], p, max_size, max_line);
            assert_eq!(got, want, "whole, size limit {max_size:?}, line limit {max_line:?}");
        }
        assert_eq!(reference(&input, p, Some(size), Some(longest)).end, Some(Ok(size)));
        assert!(matches!(reference(&input, p, None, Some(longest - 1)).end, Some(Err(DataError::LineTooLong))));
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder: properties.

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => Just(b'\r'),
        4 => Just(b'\n'),
        4 => Just(b'.'),
        2 => Just(b'a'),
        1 => Just(0u8),
        1 => Just(b'\t'),
        2 => any::<u8>(),
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(interesting_byte(), 0..64),
        prop::collection::vec(any::<u8>(), 0..200),
        // Mostly text with some line structure.
        prop::collection::vec(prop_oneof![8 => Just(b'x'), 2 => interesting_byte()], 0..300),
    ]
}

fn policy() -> impl Strategy<Value = BarePolicy> {
    prop_oneof![Just(BarePolicy::Reject), Just(BarePolicy::Allow)]
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn decoder_matches_reference_at_any_split(
        mut input in bytes(),
        terminate in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        p in policy(),
        max_size in prop::option::of(0u64..80),
        max_line in prop::option::of(0usize..40),
    ) {
        if terminate {
            input.extend_from_slice(b"\r\n.\r\nRSET\r\n");
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        cuts.sort_unstable();
        let want = reference(&input, p, max_size, max_line);
        let got = decode_split(&input, &cuts, p, max_size, max_line);
        prop_assert_eq!(&got, &want);
        if terminate {
            prop_assert!(want.end.is_some());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stuffer.

/// Stuffs `input` cut at `cuts` into output buffers of `out_len` bytes, then finishes.
fn stuff_split(input: &[u8], cuts: &[usize], out_len: usize, policy: BarePolicy) -> Result<Vec<u8>, DataError> {
    let mut s = Stuffer::new(policy);
    let mut out = Vec::new();
    let mut buf = vec![0u8; out_len];
    for mut piece in pieces(input, cuts) {
        while !piece.is_empty() {
            let (c, w) = s.stuff(piece, &mut buf)?;
            assert!(c + w > 0, "no progress");
            assert!(c <= piece.len() && w <= buf.len());
            out.extend_from_slice(&buf[..w]);
            piece = &piece[c..];
        }
    }
    while !s.is_finished() {
        let w = s.finish(&mut buf)?;
        assert!(w > 0);
        out.extend_from_slice(&buf[..w]);
    }
    assert_eq!(s.finish(&mut buf), Ok(0));
    Ok(out)
}

/// Bare CR and bare LF become CRLF; a non-empty result ends with CRLF.
fn canonical(x: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < x.len() {
        match x[i] {
            b'\r' if x.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The stuffed form is canonical: no bare CR/LF, every line starting with a dot has two,
/// and it ends with the terminator, which is the only `CRLF.CRLF` (or leading `.CRLF`).
fn assert_well_stuffed(s: &[u8]) {
    assert!(s.ends_with(b".\r\n"), "{s:?}");
    assert!(s.len() == 3 || s.ends_with(b"\r\n.\r\n"), "{s:?}");
    for (i, &b) in s.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(s.get(i + 1), Some(&b'\n'), "bare CR in {s:?}");
        }
        if b == b'\n' {
            assert!(i > 0 && s[i - 1] == b'\r', "bare LF in {s:?}");
        }
    }
    let body = &s[..s.len() - 3];
    let mut line_start = true;
    for (i, &b) in body.iter().enumerate() {
        if line_start && b == b'.' {
            assert_eq!(body.get(i + 1), Some(&b'.'), "unstuffed dot at {i} in {s:?}");
        }
        line_start = b == b'\n';
    }
}

/// Whether `x` holds a bare CR or a bare LF (a CR at the very end is bare).
fn has_bare(x: &[u8]) -> bool {
    (0..x.len()).any(|i| match x[i] {
        b'\r' => x.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || x[i - 1] != b'\r',
        _ => false,
    })
}

fn unstuff(s: &[u8]) -> Outcome {
    decode_all(s, BarePolicy::Reject)
}

#[test]
fn stuffer_examples() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"", b".\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\r\n.\r\n", b"..\r\n..\r\n.\r\n"),
        (b"x\r\n.y\r\n..\r\n", b"x\r\n..y\r\n...\r\n.\r\n"),
        (b"a.b\r\n", b"a.b\r\n.\r\n"),
    ];
    for (input, want) in cases {
        for p in BOTH {
            assert_eq!(stuff_split(input, &[], 64, p).unwrap(), *want, "{input:?}");
            for out_len in 2..8 {
                for cut in sample(0..=input.len()) {
                    assert_eq!(stuff_split(input, &[cut], out_len, p).unwrap(), *want);
                }
            }
        }
    }
}

#[test]
fn stuffer_bare_line_endings() {
    // Allow: normalised, and a dot after a normalised line end is stuffed.
    let got = stuff_split(b"a\n.b\rc\r\r\n.", &[], 64, BarePolicy::Allow).unwrap();
    assert_eq!(got, b"a\r\n..b\r\nc\r\n\r\n..\r\n.\r\n");
    for cut in 0..12 {
        assert_eq!(stuff_split(b"a\n.b\rc\r\r\n.", &[cut], 3, BarePolicy::Allow).unwrap(), got);
    }
    // Reject: an error at the offending byte, after the bytes before it were written.
    let mut s = Stuffer::new(BarePolicy::Reject);
    let mut out = [0u8; 16];
    assert_eq!(s.stuff(b"ab\ncd", &mut out), Ok((2, 2)));
    assert_eq!(&out[..2], b"ab");
    assert_eq!(s.stuff(b"\ncd", &mut out), Err(DataError::BareLineEnding));
    // A CR held at the end of a chunk, then not followed by LF.
    let mut s = Stuffer::new(BarePolicy::Reject);
    assert_eq!(s.stuff(b"ab\r", &mut out), Ok((3, 2)));
    assert_eq!(s.stuff(b"x", &mut out), Err(DataError::BareLineEnding));
    let mut s = Stuffer::new(BarePolicy::Reject);
    assert_eq!(s.stuff(b"ab\r", &mut out), Ok((3, 2)));
    assert_eq!(s.finish(&mut out), Err(DataError::BareLineEnding));
    for input in [&b"\r"[..], b"\n", b"a\rb", b"\r\r\n", b"a\r\n\n"] {
        assert_eq!(stuff_split(input, &[], 16, BarePolicy::Reject), Err(DataError::BareLineEnding));
        for cut in 0..=input.len() {
            assert_eq!(stuff_split(input, &[cut], 2, BarePolicy::Reject), Err(DataError::BareLineEnding));
        }
    }
}

#[test]
fn stuffer_small_output_and_finish_in_pieces() {
    let mut s = Stuffer::new(BarePolicy::Allow);
    let mut out = [0u8; 2];
    assert_eq!(s.stuff(b"x", &mut out), Ok((1, 1)));
    assert_eq!(s.finish(&mut out), Ok(2));
    assert_eq!(out, *b"\r\n");
    assert!(!s.is_finished());
    assert_eq!(s.finish(&mut out), Ok(2));
    assert_eq!(out, *b".\r");
    assert_eq!(s.finish(&mut out), Ok(1));
    assert!(s.is_finished());
    assert_eq!(s.stuff(b"more", &mut out), Ok((0, 0)));
}

fn canonical_text() -> impl Strategy<Value = Vec<u8>> {
    // Lines of arbitrary non-CR/LF bytes (biased to dots), each ending with CRLF.
    let line = prop::collection::vec(
        prop_oneof![4 => Just(b'.'), 4 => Just(b'a'), 1 => Just(0u8), 2 => any::<u8>()
            .prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n')],
        0..20,
    );
    prop::collection::vec(line, 0..12).prop_map(|lines| {
        let mut v = Vec::new();
        for l in lines {
            v.extend_from_slice(&l);
            v.extend_from_slice(b"\r\n");
        }
        v
    })
}

fn cuts_for(len: usize, cuts: &[prop::sample::Index]) -> Vec<usize> {
    let mut c: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    c.sort_unstable();
    c
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn stuff_then_unstuff_is_identity_on_canonical_text(
        x in canonical_text(),
        p in policy(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        dcuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        out_len in 2usize..40,
    ) {
        let stuffed = stuff_split(&x, &cuts_for(x.len(), &cuts), out_len, p).unwrap();
        assert_well_stuffed(&stuffed);
        let dc = cuts_for(stuffed.len(), &dcuts);
        let o = decode_split(&stuffed, &dc, BarePolicy::Reject, None, None);
        prop_assert_eq!(&o.body, &x);
        prop_assert_eq!(o.end, Some(Ok(x.len() as u64)));
        prop_assert_eq!(o.consumed, stuffed.len());
    }

    #[test]
    fn stuff_then_unstuff_is_canonical_under_allow(
        x in bytes(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        out_len in 2usize..40,
    ) {
        let stuffed = stuff_split(&x, &cuts_for(x.len(), &cuts), out_len, BarePolicy::Allow).unwrap();
        assert_well_stuffed(&stuffed);
        let o = unstuff(&stuffed);
        prop_assert_eq!(&o.body, &canonical(&x));
        prop_assert_eq!(o.consumed, stuffed.len());
        // The same, stuffed into one large buffer in one go.
        prop_assert_eq!(stuff_split(&x, &[], 4096, BarePolicy::Allow).unwrap(), stuffed);
    }

    #[test]
    fn stuff_under_reject_errs_exactly_on_bare_line_endings(
        x in bytes(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        out_len in 2usize..40,
    ) {
        let is_canonical = !has_bare(&x);
        let got = stuff_split(&x, &cuts_for(x.len(), &cuts), out_len, BarePolicy::Reject);
        match got {
            Ok(s) => {
                prop_assert!(is_canonical, "accepted {:?}", x);
                prop_assert_eq!(s, stuff_split(&x, &[], 4096, BarePolicy::Allow).unwrap());
            }
            Err(e) => {
                prop_assert!(!is_canonical, "refused {:?}", x);
                prop_assert_eq!(e, DataError::BareLineEnding);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The block scan: long canonical lines (which it skips a block at a time) with events at every
// offset of a block, line limits around the line lengths, and large output buffers.

/// `n` text bytes then CRLF.
fn text_line(n: usize, k: usize) -> Vec<u8> {
    (0..n).map(|i| b"abcdefghijklmnopqrstuvwxyz 0123456789"[(i + k) % 37]).chain(*b"\r\n").collect()
}

/// Naive stuffing, from the rules: canonical line endings, a dot doubled at line starts.
fn stuff_reference(x: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &b) in canonical(x).iter().enumerate() {
        if b == b'.' && (i == 0 || out.ends_with(b"\r\n")) {
            out.push(b'.');
        }
        out.push(b);
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[test]
fn block_scan_events_at_every_offset() {
    let events: [&[u8]; 9] =
        [b"\r\n.x", b"\r\n.\r\n", b"x\ry", b"x\ny", b"\r\r\n", b"\n\r\n", b"\r\n\n", b"\r\n\r\n.", b"\r"];
    for event in events {
        for at in sample(0..=149).step_by(if cfg!(miri) { 2 } else { 1 }) {
            let mut input = Vec::new();
            for k in 0..3 {
                input.extend(text_line(40 + 13 * k, k));
            }
            let mut tail = Vec::new();
            for k in 0..3 {
                tail.extend(text_line(70 + 29 * k, k));
            }
            tail.extend_from_slice(b".\r\n");
            let at = min(at, input.len());
            let mut v = input[..at].to_vec();
            v.extend_from_slice(event);
            v.extend_from_slice(&input[at..]);
            v.extend_from_slice(&tail);
            // Under miri, a few of the combinations.
            let m = if cfg!(miri) { 3 } else { 1 };
            for p in BOTH {
                for max_line in
                    [None, Some(64), Some(80), Some(99), Some(100), Some(101), Some(130)].into_iter().step_by(m)
                {
                    for max_size in [None, Some(150), Some(v.len() as u64)].into_iter().step_by(m) {
                        let want = reference(&v, p, max_size, max_line);
                        for cut in [0, 1, at, at + 1, at + 2, at + 65, v.len() / 2].into_iter().step_by(m) {
                            assert_eq!(
                                decode_split(&v, &[cut], p, max_size, max_line),
                                want,
                                "{v:?} {p:?} {max_size:?} {max_line:?} cut {cut}"
                            );
                        }
                    }
                }
            }
            // The send side on the same bytes (minus the terminator).
            let body = &v[..v.len() - 3];
            let want = stuff_reference(body);
            for out_len in [64, 65, 66, 100, 200, 4096].into_iter().step_by(m) {
                for cut in [0, at, at + 1, at + 70].into_iter().step_by(m) {
                    assert_eq!(stuff_split(body, &[cut], out_len, BarePolicy::Allow).unwrap(), want);
                }
            }
        }
    }
}

#[test]
fn block_scan_line_limit_around_line_lengths() {
    // Lines of 60..=140 bytes in a row, the limit at every length in between: exactly the
    // lines longer than the limit fail, wherever they are relative to the blocks.
    for max_line in sample(64..=142) {
        let mut v = Vec::new();
        for (k, n) in (58..=138).step_by(7).enumerate() {
            v.extend(text_line(n, k));
        }
        v.extend_from_slice(b".\r\n");
        let want = reference(&v, BarePolicy::Reject, None, Some(max_line));
        for cut in [0, 1, 63, 64, 65, v.len() / 3] {
            assert_eq!(decode_split(&v, &[cut], BarePolicy::Reject, None, Some(max_line)), want, "{max_line} {cut}");
        }
    }
}

#[test]
fn block_scan_line_limit_with_long_lines() {
    // Lines around the server's 1000-octet limit and around the scan's step lengths (252 and
    // 504 pairs), runs of short lines between them, the limit at each side of their lengths:
    // exactly the lines longer than the limit fail, at every build and split.
    let lengths =
        [70, 250, 251, 252, 253, 300, 400, 500, 501, 502, 503, 504, 505, 760, 996, 998, 999, 1000, 1001, 1300];
    let m = if cfg!(miri) { 5 } else { 1 };
    for (k, &long) in lengths.iter().enumerate().step_by(m) {
        let mut v = Vec::new();
        for j in 0..3 {
            for s in 0..(k % 4) * 3 {
                v.extend(text_line(60 + s, s));
            }
            v.extend(text_line(long - 2 + j, k + j));
        }
        v.extend(text_line(76, 0));
        v.extend_from_slice(b".\r\n");
        for max_line in
            [252, 253, 299, 300, 399, 400, 503, 504, 505, 760, 998, 999, 1000, 1001, 1299, 1300].into_iter().step_by(m)
        {
            let want = reference(&v, BarePolicy::Reject, None, Some(max_line));
            for cut in [0, 1, 253, 1000, v.len() / 2].into_iter().step_by(m) {
                assert_eq!(
                    decode_split(&v, &[cut], BarePolicy::Reject, None, Some(max_line)),
                    want,
                    "line {long} limit {max_line} cut {cut}"
                );
            }
            for from in [0, 1, 77, 300] {
                let portable = __scan_paths(0, &v, from, from + max_line, Some(max_line), None).unwrap();
                for build in 1..3 {
                    let r = __scan_paths(build, &v, from, from + max_line, Some(max_line), None);
                    assert!(r.is_none_or(|r| r == portable), "build {build} line {long} limit {max_line} from {from}");
                }
            }
        }
    }
}

#[test]
fn unstuffing_scan_at_line_limits() {
    // Stuffed lines of every length around the limit, then one event that stops the scan (a
    // bare CR before a dot, a dot before a CR or an LF, a dot close to the end): every build
    // drops exactly the stuffing dots and stops where the copying scan restarted after each
    // of them does, and a line is as long as its text without the dot.
    let events: [&[u8]; 5] = [b"x\r.y", b".\ny", b".\r\n", b".\r", b""];
    // Under miri (slow), a few limits and starts.
    let (m, froms): (usize, &[usize]) = if cfg!(miri) { (40, &[0, 61]) } else { (1, &[0, 1, 61, 200]) };
    for event in events {
        let mut v = Vec::new();
        for (k, n) in (58..=142).step_by(3).enumerate() {
            match k % 3 {
                0 => v.push(b'.'),
                1 => v.extend_from_slice(b".."),
                _ => {}
            }
            v.extend(text_line(n, k));
        }
        v.extend_from_slice(event);
        v.extend(text_line(70, 1));
        v.extend_from_slice(b".abc\r\n.x\r\n.");
        for max_line in (64..=144).step_by(m) {
            for &from in froms {
                for limit in [None, Some(max_line)] {
                    let (want, body) = unstuffed_by_restarts(&v, from, from + max_line, limit);
                    let mut out = vec![0u8; v.len() - from];
                    for build in 0..3 {
                        let Some(got) = __unstuff_paths(build, &v, from, from + max_line, limit, &mut out) else {
                            continue;
                        };
                        assert_eq!(got, want, "{event:?} build {build} limit {limit:?} from {from}");
                        assert_eq!(out[..body.len()], body[..], "{event:?} build {build} limit {limit:?} from {from}");
                    }
                }
            }
        }
    }
}

/// A [`text_line`] of fewer than `len` text bytes with fewer than `events` interesting bytes
/// inserted anywhere in it (`at` below `reach`, taken modulo the line's length).
fn line_with_events(len: usize, reach: usize, events: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..len, 0usize..37, prop::collection::vec((0..reach, interesting_byte()), 0..events)).prop_map(|(n, k, evs)| {
        let mut l = text_line(n, k);
        for (at, b) in evs {
            let at = at % l.len();
            l.insert(at, b);
        }
        l
    })
}

/// Lines of any length up to beyond the server's limit, mostly canonical.
fn long_lines() -> impl Strategy<Value = Vec<u8>> {
    let short = (0usize..90, 0usize..37).prop_map(|(n, k)| text_line(n, k));
    prop::collection::vec(prop_oneof![3 => short, 1 => line_with_events(1300, 1400, 2)], 0..24)
        .prop_map(|ls| ls.concat())
}

fn long_text() -> impl Strategy<Value = Vec<u8>> {
    // Long lines of mostly text, some events.
    prop::collection::vec(line_with_events(160, 200, 3), 0..12).prop_map(|ls| ls.concat())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn block_scan_decoder_matches_reference(
        mut input in long_text(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        p in policy(),
        max_size in prop::option::of(0u64..2000),
        max_line in prop::option::of(60usize..200),
    ) {
        input.extend_from_slice(b"\r\n.\r\n");
        let want = reference(&input, p, max_size, max_line);
        let got = decode_split(&input, &cuts_for(input.len(), &cuts), p, max_size, max_line);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn block_scan_stuffer_matches_reference(
        x in long_text(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        out_len in 60usize..300,
    ) {
        let got = stuff_split(&x, &cuts_for(x.len(), &cuts), out_len, BarePolicy::Allow).unwrap();
        prop_assert_eq!(&got, &stuff_reference(&x));
        let strict = stuff_split(&x, &cuts_for(x.len(), &cuts), out_len, BarePolicy::Reject);
        prop_assert_eq!(strict.is_ok(), !has_bare(&x));
    }
}

/// Every build of the block scan this CPU runs, from `from`, stops where the portable one does
/// (scanning only and copying), and copies exactly what it skips; and the unstuffing scan of
/// every build is the copying one restarted after each stuffing dot ([`unstuffed_by_restarts`]),
/// on `x` and on `x` with a dot at the start of every other line.
fn builds_agree(x: &[u8], from: usize, stop: usize, limit: Option<usize>) -> Result<(), TestCaseError> {
    let mut out = vec![0u8; x.len() - from];
    let portable = __scan_paths(0, x, from, stop, limit, None).unwrap();
    for build in 0..3 {
        let Some(r) = __scan_paths(build, x, from, stop, limit, None) else { continue };
        prop_assert_eq!(r, portable, "build {} limit {:?}", build, limit);
        out.fill(0);
        let r = __scan_paths(build, x, from, stop, limit, Some(&mut out)).unwrap();
        prop_assert_eq!(r, portable, "copying, build {} limit {:?}", build, limit);
        prop_assert_eq!(&out[..r.0 - from], &x[from..r.0]);
    }
    let mut dotted = Vec::new();
    for (k, line) in x.split_inclusive(|&b| b == b'\n').enumerate() {
        if k % 2 == 1 {
            dotted.push(b'.');
        }
        dotted.extend_from_slice(line);
    }
    for x in [x, &dotted[..]] {
        let from = min(from, x.len());
        let (want, body) = unstuffed_by_restarts(x, from, stop, limit);
        let mut out = vec![0u8; x.len() - from];
        for build in 0..3 {
            out.fill(0);
            let Some(got) = __unstuff_paths(build, x, from, stop, limit, &mut out) else { continue };
            prop_assert_eq!(got, want, "unstuffing, build {} limit {:?}", build, limit);
            prop_assert_eq!(&out[..body.len()], &body[..], "unstuffing, build {} limit {:?}", build, limit);
        }
        for extra in [0, 64, 1, 3].into_iter().take(if cfg!(miri) { 2 } else { 4 }) {
            let (want, wire) = stuffed_by_restarts(x, from, extra);
            let mut out = vec![0u8; x.len() - from + extra];
            for build in 0..3 {
                out.fill(0);
                let Some(got) = __stuff_paths(build, x, from, &mut out) else { continue };
                prop_assert_eq!(got, want, "stuffing, build {} room {}", build, extra);
                prop_assert_eq!(&out[..wire.len()], &wire[..], "stuffing, build {} room {}", build, extra);
            }
        }
    }
    Ok(())
}

/// What the stuffing scan returns (`r`, `q`, the dots doubled, the last of them) and writes,
/// into an output `extra` bytes longer than `x[from..]`: the portable copying scan from
/// `from`, again from each line-start dot it stops at (a block and a byte from the end) after
/// a dot written there, while the output has room for all of `x` after it.
fn stuffed_by_restarts(x: &[u8], from: usize, extra: usize) -> ((usize, usize, usize, usize), Vec<u8>) {
    let (mut at, mut wire, mut doubled) = (from, Vec::new(), Vec::new());
    loop {
        let (r, q) = __scan_paths(0, x, at, 0, None, None).unwrap();
        wire.extend_from_slice(&x[at..r]);
        let dot = q > at && q + 1 + 64 <= x.len() && x[q] == b'.' && x[q - 1] == b'\n';
        if !dot || doubled.len() + 1 > extra {
            return ((r, q, doubled.len(), doubled.last().copied().unwrap_or(0)), wire);
        }
        wire.extend_from_slice(&x[r..q]);
        wire.push(b'.');
        doubled.push(q);
        at = q;
    }
}

/// What the unstuffing scan returns (`r`, `q`, the dots dropped, the last of them) and copies:
/// the portable copying scan from `from`, again from the byte after each dot it stops at that
/// is stuffing (after an LF, followed by neither CR nor LF, a block and a byte from the end),
/// with the stop of the line the dot starts, not counting the dot.
fn unstuffed_by_restarts(
    x: &[u8],
    from: usize,
    stop: usize,
    limit: Option<usize>,
) -> ((usize, usize, usize, usize), Vec<u8>) {
    let (mut at, mut stop, mut body, mut drops) = (from, stop, Vec::new(), Vec::new());
    loop {
        let (r, q) = __scan_paths(0, x, at, stop, limit, None).unwrap();
        body.extend_from_slice(&x[at..r]);
        let stuffing =
            q > at && q + 2 + 64 <= x.len() && x[q] == b'.' && x[q - 1] == b'\n' && !matches!(x[q + 1], b'\r' | b'\n');
        if !stuffing {
            return ((r, q, drops.len(), drops.last().copied().unwrap_or(0)), body);
        }
        body.extend_from_slice(&x[r..q]);
        drops.push(q);
        at = q + 1;
        stop = q + 1 + limit.unwrap_or(0);
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// Every build of the block scan this CPU runs (AVX-512BW, AVX2) stops where the portable
    /// one does, in all four forms, and copies exactly what it skips. (The decoder tests above
    /// only reach the build the dispatch picks.)
    #[test]
    fn block_scan_builds_agree(
        x in long_text(),
        from in any::<prop::sample::Index>(),
        stop in 0usize..3000,
        max_line in 64usize..200,
    ) {
        let from = from.index(x.len() + 1);
        for limit in [None, Some(max_line)] {
            builds_agree(&x, from, stop, limit)?;
        }
    }

    /// The same with long lines and limits around them, where the scan keeps the line's stop
    /// only as a bound until a line could reach it.
    #[test]
    fn block_scan_builds_agree_on_long_lines(
        x in long_lines(),
        from in any::<prop::sample::Index>(),
        stop in 0usize..6000,
        max_line in 64usize..1400,
    ) {
        builds_agree(&x, from.index(x.len() + 1), stop, Some(max_line))?;
    }

    #[test]
    fn decoder_matches_reference_on_long_lines(
        mut input in long_lines(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        max_line in prop::option::of(64usize..1400),
    ) {
        input.extend_from_slice(b"\r\n.\r\n");
        let want = reference(&input, BarePolicy::Reject, None, max_line);
        let got = decode_split(&input, &cuts_for(input.len(), &cuts), BarePolicy::Reject, None, max_line);
        prop_assert_eq!(got, want);
    }
}

/// The bench's copy floor copies exactly, at every length around its step and every alignment
/// of the output, and writes nothing past the input's length.
#[test]
fn the_copy_floor_copies_exactly() {
    let hay: Vec<u8> = (0..700u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut out = vec![0u8; 800];
    for len in (0..300).chain(500..700) {
        for shift in 0..65 {
            out.fill(0xEE);
            if !__copy_floor(&hay[..len], &mut out[shift..]) {
                return; // no AVX-512BW here
            }
            assert_eq!(&out[shift..shift + len], &hay[..len], "len {len} shift {shift}");
            assert!(out[..shift].iter().chain(&out[shift + len..]).all(|&b| b == 0xEE));
        }
    }
}
