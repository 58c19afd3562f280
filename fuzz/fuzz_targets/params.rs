//! MAIL/RCPT parameter parsers: never panic; unknown parameters iterate without panicking and
//! xtext values decode to at most their encoded length.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smtp_proto::parse::params::{parse_mail_params, parse_rcpt_params};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = core::str::from_utf8(data) else { return };
    if let Ok(p) = parse_mail_params(s) {
        for (k, _) in p.unknown.iter() {
            assert!(!k.is_empty());
        }
        if let Some(envid) = p.envid {
            assert!(envid.decoded().count() <= envid.as_encoded().len());
        }
    }
    if let Ok(p) = parse_rcpt_params(s) {
        let _ = p.unknown.iter().count();
        if let Some(o) = p.orcpt {
            assert!(o.addr.decoded().count() <= o.addr.as_encoded().len());
        }
    }
});
