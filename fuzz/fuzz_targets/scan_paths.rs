//! The DATA block scan, the crate's only `unsafe`: each build this CPU runs (AVX-512BW
//! intrinsics, the AVX2 build, behind run-time detection) against the portable build, in all
//! seven forms (with and without the line limit; scanning only, copying too, or copying and
//! dropping stuffing dots; and copying and doubling line-start dots), the portable build
//! against the contract `skip_canonical` documents, and the unstuffing and stuffing scans
//! against the copying scan restarted at each dot.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smtp_proto::data::{__scan_paths, __stuff_paths, __unstuff_paths};

#[derive(Arbitrary, Debug)]
struct Input {
    body: Vec<u8>,
    /// Map the bytes onto a small alphabet of line bytes and text.
    dense: bool,
    from: u16,
    stop: u16,
    max_line: u16,
    /// Room in the stuffing scan's output beyond the input's length.
    room: u8,
}

fuzz_target!(|input: Input| {
    let mut hay = input.body;
    if input.dense {
        for b in &mut hay {
            *b = b"abc.\r\n\r\n\r\nx "[*b as usize % 12];
        }
    }
    let from = (input.from as usize).min(hay.len());
    let stop = input.stop as usize;
    let max_line = (input.max_line as usize).max(64);
    let mut out = vec![0u8; hay.len() - from];
    let mut results = [(0usize, 0usize); 2];
    for (li, limit) in [None, Some(max_line)].into_iter().enumerate() {
        let portable = __scan_paths(0, &hay, from, stop, limit, None).unwrap();
        results[li] = portable;
        for build in 0..3 {
            let Some(r) = __scan_paths(build, &hay, from, stop, limit, None) else { continue };
            assert_eq!(r, portable, "build {build} and the portable one disagree (limit {limit:?})");
            out.fill(0);
            let (r, q) = __scan_paths(build, &hay, from, stop, limit, Some(&mut out)).unwrap();
            assert_eq!((r, q), portable, "the copying scan of build {build} stops elsewhere (limit {limit:?})");
            assert_eq!(out[..r - from], hay[from..r], "build {build} copied wrong (limit {limit:?})");
        }
        // The unstuffing scan: the copying one, again from the byte after each dot it stopped
        // at that is stuffing (a dot after an LF, then a byte other than CR or LF, a block and
        // a byte from the end), with the stop of the line the dot starts (the dot not counted).
        let (mut at, mut line_stop, mut expect, mut drops) = (from, stop, Vec::new(), Vec::new());
        let (r, q) = loop {
            let (r, q) = __scan_paths(0, &hay, at, line_stop, limit, None).unwrap();
            expect.extend_from_slice(&hay[at..r]);
            let dot = q > at
                && q + 2 + 64 <= hay.len()
                && hay[q] == b'.'
                && hay[q - 1] == b'\n'
                && !matches!(hay[q + 1], b'\r' | b'\n');
            if !dot {
                break (r, q);
            }
            expect.extend_from_slice(&hay[r..q]);
            drops.push(q);
            at = q + 1;
            line_stop = q + 1 + max_line;
        };
        let want = (r, q, drops.len(), drops.last().copied().unwrap_or(0));
        for build in 0..3 {
            out.fill(0);
            let Some(got) = __unstuff_paths(build, &hay, from, stop, limit, &mut out) else { continue };
            assert_eq!(got, want, "the unstuffing scan of build {build} stops elsewhere (limit {limit:?})");
            assert_eq!(out[..expect.len()], expect[..], "the unstuffing scan of build {build} copied wrong");
        }
    }
    // The stuffing scan: the copying one, again from each line-start dot it stopped at (a
    // block and a byte from the end) after writing a dot there, while the output has room
    // for all of the input after the dot.
    let room = hay.len() - from + usize::from(input.room % 8);
    let (mut at, mut expect, mut doubled) = (from, Vec::new(), Vec::new());
    let (r, q) = loop {
        let (r, q) = __scan_paths(0, &hay, at, 0, None, None).unwrap();
        expect.extend_from_slice(&hay[at..r]);
        let dot = q > at && q + 1 + 64 <= hay.len() && hay[q] == b'.' && hay[q - 1] == b'\n';
        if !dot || room < hay.len() - from + doubled.len() + 1 {
            break (r, q);
        }
        expect.extend_from_slice(&hay[r..q]);
        expect.push(b'.');
        doubled.push(q);
        at = q;
    };
    let want = (r, q, doubled.len(), doubled.last().copied().unwrap_or(0));
    let mut out = vec![0u8; room];
    for build in 0..3 {
        out.fill(0);
        let Some(got) = __stuff_paths(build, &hay, from, &mut out) else { continue };
        assert_eq!(got, want, "the stuffing scan of build {build} stops elsewhere");
        assert_eq!(out[..expect.len()], expect[..], "the stuffing scan of build {build} copied wrong");
    }
    for (limit, (r, q)) in [(false, results[0]), (true, results[1])] {
        assert!(from <= r && r <= q && q <= hay.len() && q - r <= 2);
        // Every pair ending before `q` passed (the decoder relies on the LF at `q - 1`).
        let mut line_stop = stop;
        for j in from + 1..q {
            let (p, c) = (hay[j - 1], hay[j]);
            assert!((c == b'\n') == (p == b'\r') && !(p == b'\n' && c == b'.'), "failing pair at {j} checked");
            if limit && c == b'\n' {
                assert!(j < line_stop, "over-long line ending at {j} checked");
                line_stop = j + 1 + max_line;
            }
        }
        if r == from {
            continue;
        }
        assert_ne!(hay[r - 1], b'\r', "ends holding a CR");
        let mut line_stop = stop;
        for j in from..r {
            match hay[j] {
                b'\r' => assert!(j + 1 < r && hay[j + 1] == b'\n', "bare CR at {j} skipped"),
                b'\n' => {
                    assert!(j > from && hay[j - 1] == b'\r', "bare LF at {j} skipped");
                    assert_ne!(hay.get(j + 1), Some(&b'.'), "line-start dot at {} skipped", j + 1);
                    assert!(j + 1 < hay.len());
                    if limit {
                        assert!(j < line_stop, "over-long line ending at {j} skipped");
                        line_stop = j + 1 + max_line;
                    }
                }
                _ => {}
            }
        }
    }
});
