//! Differential: a session fed whole and fed at arbitrary split points gives the same events
//! and reply bytes, for any input, under both bare-line-ending policies; and so does a session
//! with another output queue: the smallest (lent; `run_with` compares it on every run), one of
//! a size the input picks (lent), and the smallest on the heap, its SASL buffer allocated per
//! AUTH exchange (the reply bytes may leave in other batches, the concatenated output is the
//! same).
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smtp_proto::data::BarePolicy;
use smtp_proto::ehlo::AuthMechanisms;
use smtp_proto::server::{Config, Heap, Lent, Server, MIN_OUTPUT_BUFFER, SASL_BUFFER};
use smtp_proto::testing::{picky, run, run_session, run_with};

#[derive(Arbitrary, Debug)]
struct Input {
    segments: Vec<Vec<u8>>,
    cuts: Vec<u16>,
    allow_bare: bool,
    small_limits: bool,
    /// Another output queue: MIN_OUTPUT_BUFFER + this % 4096.
    out_extra: u16,
}

fuzz_target!(|input: Input| {
    let mut c = Config::new("fuzz.test");
    c.capabilities.starttls = true;
    c.capabilities.auth =
        AuthMechanisms::none().with(AuthMechanisms::PLAIN).with(AuthMechanisms::LOGIN).with(AuthMechanisms::XOAUTH2);
    c.allow_insecure_auth = true;
    c.reject_pipelined_data = false;
    if input.allow_bare {
        c.bare_line_endings = BarePolicy::Allow;
    }
    if input.small_limits {
        c.max_command_line = 64;
        c.max_auth_line = 128;
        c.max_text_line = Some(40);
        c.max_message_size = Some(100);
        c.max_recipients = 2;
        c.max_errors = 5;
    }
    let segs: Vec<&[u8]> = input.segments.iter().map(Vec::as_slice).collect();
    let whole = run(c, picky, &segs);
    let cuts: Vec<usize> = input.cuts.iter().map(|&c| c as usize).collect();
    let split = run_with(c, picky, &segs, &|_, _| cuts.clone());
    assert_eq!(whole, split);
    let bytewise = run_with(c, picky, &segs, &|_, s| (1..s.len()).collect());
    assert_eq!(whole, bytewise);
    let len = MIN_OUTPUT_BUFFER + usize::from(input.out_extra) % 4096;
    let (mut out, mut sasl) = (vec![0; len], vec![0; SASL_BUFFER]);
    let lent = Server::with_buffers(c, Lent::new(&mut out, &mut sasl)).unwrap();
    let t = run_session(lent, &mut picky::<Lent<'_>>, &segs, &|_, _| cuts.clone());
    assert_eq!(whole, t, "output queue of {len}");
    if !input.small_limits {
        // The heap's SASL buffer is sized for the AUTH line limit: SASL_BUFFER by default.
        let heap = Server::with_buffers(c, Heap::new(MIN_OUTPUT_BUFFER)).unwrap();
        let t = run_session(heap, &mut picky::<Heap>, &segs, &|_, _| cuts.clone());
        assert_eq!(whole, t, "heap");
    }
});
