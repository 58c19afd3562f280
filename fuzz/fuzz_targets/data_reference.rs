//! Differential: the strict streaming DATA decoder against a deliberately simple
//! byte-at-a-time reference decoder written here, at arbitrary split points; and its copying
//! form (`decode_into`, into output buffers of arbitrary sizes) against the borrowing one.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smtp_proto::data::{BarePolicy, DataDecoder, DataError};

#[derive(Arbitrary, Debug)]
struct Input {
    body: Vec<u8>,
    cuts: Vec<u16>,
    allow: bool,
    max_size: Option<u16>,
    max_line: Option<u16>,
    /// Output room for `decode_into`: the piece plus one byte when `None`.
    room: Option<u8>,
}

struct Reference {
    body: Vec<u8>,
    consumed: usize,
    errors: Vec<DataError>,
}

/// RFC 5321 §4.5.2 read literally, one byte at a time: a line starts after CRLF (or at the
/// beginning); a line that is exactly "." ends the data; a leading "." is removed.
fn reference(input: &[u8], allow: bool, max_size: Option<u64>, max_line: Option<usize>) -> Option<Reference> {
    let mut r = Reference { body: Vec::new(), consumed: 0, errors: Vec::new() };
    let mut i = 0;
    let mut line_start = true;
    let mut line_len = 0usize;
    while i < input.len() {
        if line_start && input[i..].starts_with(b".\r\n") {
            r.consumed = i + 3;
            if max_size.is_some_and(|m| r.body.len() as u64 > m) {
                r.errors.push(DataError::TooBig);
            }
            return Some(r);
        }
        if line_start && input[i] == b'.' {
            i += 1;
            line_start = false;
            continue;
        }
        line_start = false;
        if input[i..].starts_with(b"\r\n") {
            r.body.extend_from_slice(b"\r\n");
            if max_line.is_some_and(|m| line_len + 2 > m) {
                r.errors.push(DataError::LineTooLong);
            }
            line_len = 0;
            i += 2;
            line_start = true;
            continue;
        }
        if (input[i] == b'\r' || input[i] == b'\n') && !allow {
            r.errors.push(DataError::BareLineEnding);
        }
        r.body.push(input[i]);
        line_len += 1;
        i += 1;
    }
    None
}

fuzz_target!(|input: Input| {
    let max_size = input.max_size.map(u64::from);
    let max_line = input.max_line.map(|m| m as usize + 3);
    let mut data = input.body;
    let Some(expected) = reference(&data, input.allow, max_size, max_line).or_else(|| {
        data.extend_from_slice(b"\r\n.\r\n");
        reference(&data, input.allow, max_size, max_line)
    }) else {
        return;
    };
    let policy = if input.allow { BarePolicy::Allow } else { BarePolicy::Reject };
    let mut decoder = DataDecoder::new(policy, max_size, max_line);
    let mut cuts: Vec<usize> = input.cuts.iter().map(|&c| c as usize).filter(|&c| c < data.len()).collect();
    cuts.sort_unstable();
    cuts.push(data.len());
    let (mut body, mut consumed, mut end, mut from) = (Vec::new(), 0usize, None, 0usize);
    'pieces: for &cut in &cuts {
        // The caller keeps unconsumed bytes and feeds them again with the next piece.
        while consumed < cut {
            let d = decoder.decode(&data[consumed..cut]);
            assert!(d.consumed > 0 && d.consumed <= cut - consumed);
            consumed += d.consumed;
            body.extend_from_slice(d.body);
            if let Some(e) = d.end {
                end = Some(e);
                break 'pieces;
            }
        }
        from = cut;
    }
    let _ = from;
    let end = end.expect("the real end was not found");
    // The same pieces through decode_into: the same body, end and consumption.
    let mut decoder = DataDecoder::new(policy, max_size, max_line);
    let (mut body2, mut consumed2, mut end2) = (Vec::new(), 0usize, None);
    let mut out = Vec::new();
    'pieces2: for &cut in &cuts {
        while consumed2 < cut {
            let room = input.room.map_or(cut - consumed2 + 1, |r| usize::from(r).max(2));
            out.clear();
            out.resize(room, 0xa5);
            let d = decoder.decode_into(&data[consumed2..cut], &mut out);
            assert!(d.consumed > 0 && d.consumed <= cut - consumed2 && d.consumed < room);
            assert!(d.written <= d.consumed + 1);
            consumed2 += d.consumed;
            body2.extend_from_slice(&out[..d.written]);
            if let Some(e) = d.end {
                end2 = Some(e);
                break 'pieces2;
            }
        }
    }
    assert_eq!((&body2, consumed2, end2), (&body, consumed, Some(end)), "decode_into differs from decode");
    assert_eq!(consumed, expected.consumed, "the message ended at the wrong place");
    match (end, expected.errors.first()) {
        (Ok(size), None) => {
            assert_eq!(body, expected.body);
            assert_eq!(size, expected.body.len() as u64);
        }
        (Err(e), Some(_)) => assert!(expected.errors.contains(&e), "{e:?} not in {:?}", expected.errors),
        (got, want) => panic!("decoder {got:?}, reference {want:?}"),
    }
});
