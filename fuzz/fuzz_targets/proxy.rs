//! PROXY protocol header parser: never panics; what it accepts is consumed within the input (a
//! v1 line within 107 octets, ending in CRLF; any header within `MAX_LEN`), is the same header
//! when the accepted prefix is parsed alone, is `Partial` at every shorter prefix, and its
//! addresses survive re-encoding (v2 and v1) and parsing again. An error never turns into a
//! header when more input arrives.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smtp_proto::parse::Status;
use smtp_proto::proxy::{encode_v1, encode_v2, parse, Origin, Version, MAX_LEN, V1_MAX_LEN};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Status::Complete((n, header))) => {
            assert!(n > 0 && n <= data.len() && n <= MAX_LEN);
            if header.version == Version::V1 {
                assert!(n <= V1_MAX_LEN && data[..n].ends_with(b"\r\n"));
                assert_eq!(header.tlvs().count(), 0);
            }
            let tlv_bytes: usize = header.tlvs().map(|t| 3 + t.value.len()).sum();
            assert!(tlv_bytes <= n);
            assert_eq!(parse(&data[..n]), Ok(Status::Complete((n, header))));
            for k in 0..n {
                assert_eq!(parse(&data[..k]), Ok(Status::Partial), "prefix {k} of a {n}-octet header");
            }
            let mut buf = [0u8; 128];
            let m = encode_v2(&header.origin, &mut buf).expect("a parsed origin encodes");
            let Ok(Status::Complete((len, again))) = parse(&buf[..m]) else { panic!("re-encoded v2 does not parse") };
            assert_eq!((len, again.version, again.origin), (m, Version::V2, header.origin));
            let m = encode_v1(&header.origin, &mut buf).expect("a parsed origin encodes");
            let Ok(Status::Complete((len, again))) = parse(&buf[..m]) else { panic!("re-encoded v1 does not parse") };
            let want = if header.origin == Origin::Local { Origin::Unknown } else { header.origin };
            assert_eq!((len, again.version, again.origin), (m, Version::V1, want));
        }
        Ok(Status::Partial) => assert!(data.len() < MAX_LEN),
        Err(e) => {
            // Errors show from a prefix: more bytes never make it valid.
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n");
            assert_eq!(parse(&more), Err(e));
        }
    }
});
