//! Differential: a session fed whole and fed at arbitrary split points gives the same events
//! and reply bytes, for any input, under both bare-line-ending policies.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use smtp_proto::data::BarePolicy;
use smtp_proto::ehlo::AuthMechanisms;
use smtp_proto::server::Config;
use smtp_proto::testing::{picky, run, run_with};

#[derive(Arbitrary, Debug)]
struct Input {
    segments: Vec<Vec<u8>>,
    cuts: Vec<u16>,
    allow_bare: bool,
    small_limits: bool,
}

fuzz_target!(|input: Input| {
    let mut c = Config::new("fuzz.test");
    c.capabilities.starttls = true;
    c.capabilities.auth = AuthMechanisms::none().with(AuthMechanisms::PLAIN).with(AuthMechanisms::LOGIN);
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
});
