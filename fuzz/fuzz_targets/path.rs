//! Path parsers: never panic; accepted paths respect the RFC 5321 limits and are consumed
//! within the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smtp_proto::parse::path::{parse_domain, parse_forward_path, parse_mailbox, parse_reverse_path};
use smtp_proto::parse::{ForwardPath, Mailbox, ReversePath};

fn check(m: &Mailbox<'_>) {
    assert!(m.local_part.len() <= 64);
    assert!(m.domain_raw.len() <= 255);
}

fuzz_target!(|data: &[u8]| {
    if let Ok((p, n)) = parse_reverse_path(data) {
        assert!(n <= data.len() && n <= 256);
        if let ReversePath::Mailbox(m) = p {
            check(&m);
        }
    }
    if let Ok((p, n)) = parse_forward_path(data) {
        assert!(n <= data.len() && n <= 256);
        if let ForwardPath::Mailbox(m) = p {
            check(&m);
        }
    }
    if let Ok(m) = parse_mailbox(data) {
        check(&m);
    }
    let _ = parse_domain(data);
});
