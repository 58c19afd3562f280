//! Reply parser and EHLO capabilities: never panic; a complete reply is consumed within the
//! input, has one valid code on every line, and respects the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smtp_proto::ehlo::Capabilities;
use smtp_proto::parse::reply::{parse_reply, ReplyLimits};
use smtp_proto::parse::Status;

fuzz_target!(|data: &[u8]| {
    let limits = ReplyLimits { max_line: 64, max_lines: 8 };
    if let Ok(Status::Complete((n, reply))) = parse_reply(data, &limits) {
        assert!(n > 0 && n <= data.len());
        assert!((200..600).contains(&reply.code()));
        assert!(reply.line_count() >= 1 && reply.line_count() <= limits.max_lines);
        let texts: Vec<&[u8]> = reply.text_lines().collect();
        assert_eq!(texts.len(), reply.line_count());
        if let Ok(text) = core::str::from_utf8(reply.raw()) {
            let _ = Capabilities::from_ehlo_lines(text.lines());
        }
    }
});
