//! The DATA block scan (and its copying form): its AVX2 build (behind run-time detection, the crate's only `unsafe`)
//! against its portable build, and both against the contract `skip_canonical` documents.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smtp_proto::data::__scan_paths;

#[derive(Arbitrary, Debug)]
struct Input {
    body: Vec<u8>,
    /// Map the bytes onto a small alphabet of line bytes and text.
    dense: bool,
    from: u16,
    stop: u16,
    max_line: u16,
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
    let (mut o0, mut o1) = (vec![0u8; hay.len() - from], vec![0u8; hay.len() - from]);
    let [r, portable, r_limit, portable_limit, r_copy, portable_copy] =
        __scan_paths(&hay, from, stop, max_line, [&mut o0, &mut o1]);
    assert_eq!(r, portable, "AVX2 and portable builds disagree");
    assert_eq!(r_limit, portable_limit, "AVX2 and portable builds disagree (line limit)");
    assert_eq!(r_copy, r, "the copying scan stops elsewhere");
    assert_eq!(portable_copy, r, "the copying scan stops elsewhere (portable)");
    assert_eq!(o0[..r - from], hay[from..r], "the copying scan copied wrong");
    assert_eq!(o1[..r - from], hay[from..r], "the copying scan copied wrong (portable)");
    for (limit, r) in [(false, r), (true, r_limit)] {
        assert!(from <= r && r <= hay.len());
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
