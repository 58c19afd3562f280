//! SASL payload decoders and base64: never panic; base64 round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smtp_proto::sasl;

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; 512];
    if let Ok(n) = sasl::decode_base64(data, &mut out) {
        let mut again = [0u8; 1024];
        let m = sasl::encode_base64(&out[..n], &mut again).unwrap();
        let mut back = [0u8; 512];
        let k = sasl::decode_base64(&again[..m], &mut back).unwrap();
        assert_eq!(&back[..k], &out[..n]);
    }
    let _ = sasl::parse_plain(data);
    let _ = sasl::parse_xoauth2(data);
    let _ = sasl::parse_oauthbearer(data);
    let _ = smtp_proto::ehlo::parse_ehlo_line(core::str::from_utf8(data).unwrap_or(""));
});
