//! unstuff(stuff(x)) == canonical(x) at any chunking, and stuffing never emits a bare CR/LF.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smtp_proto::data::{BarePolicy, DataDecoder, Stuffer};

#[derive(Arbitrary, Debug)]
struct Input {
    body: Vec<u8>,
    chunk: u8,
    out_size: u8,
}

/// Every CR, LF and CRLF becomes CRLF; a non-empty body gets a final CRLF.
fn canonical(x: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < x.len() {
        match x[i] {
            b'\r' if x.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fuzz_target!(|input: Input| {
    let mut stuffer = Stuffer::new(BarePolicy::Allow);
    let chunk = input.chunk.max(1) as usize;
    let mut out = vec![0u8; (input.out_size as usize).max(8)];
    let mut wire = Vec::new();
    for piece in input.body.chunks(chunk) {
        let mut at = 0;
        while at < piece.len() {
            let (c, w) = stuffer.stuff(&piece[at..], &mut out).unwrap();
            assert!(c > 0 || w > 0, "no progress");
            at += c;
            wire.extend_from_slice(&out[..w]);
        }
    }
    let w = stuffer.finish(&mut out).unwrap();
    wire.extend_from_slice(&out[..w]);
    // Canonical on the wire: every CR is followed by LF and every LF preceded by CR.
    for (i, &b) in wire.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(wire.get(i + 1), Some(&b'\n'));
        }
        if b == b'\n' {
            assert!(i > 0 && wire[i - 1] == b'\r');
        }
    }
    let mut decoder = DataDecoder::new(BarePolicy::Reject, None, None);
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let d = decoder.decode(&wire[at..]);
        at += d.consumed;
        body.extend_from_slice(d.body);
        if let Some(end) = d.end {
            assert_eq!(end, Ok(body.len() as u64));
            break;
        }
        assert!(at < wire.len(), "stuffed data has no end");
    }
    assert_eq!(at, wire.len(), "bytes after the end");
    assert_eq!(body, canonical(&input.body));
});
