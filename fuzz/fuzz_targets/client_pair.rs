//! Differential: the client core against the server core on arbitrary envelopes and bodies,
//! through pipes cut at arbitrary sizes: the server sees exactly the canonical body (or, over
//! DATA with a line past the 1000-octet limit, refuses the message), and both sides agree on
//! which recipients were accepted.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smtp_proto::testing::{canonical, pair_session, PairOptions};

#[derive(Arbitrary, Debug)]
struct Input {
    rcpts: Vec<(bool, u8)>,
    body: Vec<u8>,
    pipelining: bool,
    chunking: bool,
    starttls: bool,
    pipe: u8,
    push: u8,
}

fuzz_target!(|input: Input| {
    if input.rcpts.is_empty() || input.rcpts.len() > 8 {
        return;
    }
    let rcpts: Vec<String> =
        input.rcpts.iter().map(|(bad, n)| format!("{}{n}@example.org", if *bad { "bad" } else { "u" })).collect();
    let opts = PairOptions {
        pipelining: input.pipelining,
        chunking: input.chunking,
        starttls: input.starttls,
        pipe: input.pipe.max(1) as usize,
        push: input.push.max(1) as usize,
    };
    let out = pair_session(&opts, "sender@client.test", &rcpts, &input.body);
    let expect: Vec<bool> = rcpts.iter().map(|r| !r.starts_with("bad")).collect();
    assert_eq!(out.client_results, expect);
    let body = canonical(&input.body);
    // The server's text line limit (1000 octets with CRLF) applies to DATA, not to BDAT: a
    // longer line makes it refuse the message (500 5.5.2) after its real end.
    let too_long = !opts.chunking && body.split(|&c| c == b'\n').any(|l| l.len() + 1 > 1000);
    if expect.iter().any(|a| *a) {
        assert_eq!(out.delivered, !too_long);
        if !too_long {
            assert_eq!(out.bodies, vec![body]);
        }
    } else {
        assert!(out.bodies.is_empty());
    }
});
