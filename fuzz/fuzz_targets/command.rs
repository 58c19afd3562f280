//! Command-line parser: never panics; what it accepts respects the RFC 5321 limits; the
//! framing parser (`parse_command`, with its fast path for printable lines) agrees with a
//! plain LF search followed by `parse_command_line` on the same input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smtp_proto::parse::{parse_command, parse_command_line, Command, ForwardPath, Mailbox, ReversePath, Status};

fn check(m: &Mailbox<'_>) {
    assert!(m.local_part.len() <= 64, "local part over 64 octets accepted");
    assert!(m.domain_raw.len() <= 255, "domain over 255 octets accepted");
}

fuzz_target!(|line: &[u8]| {
    match parse_command_line(line) {
        Ok(Command::Mail { from: ReversePath::Mailbox(m), .. }) => check(&m),
        Ok(Command::Rcpt { to: ForwardPath::Mailbox(m), .. }) => check(&m),
        Ok(_) => {}
        // Every error knows its reply, and it is a valid 4xx/5xx (or the 221 for HTTP).
        Err(e) => assert!(e.reply().is_valid()),
    }
    // Reference framing: the first LF ends the line; a CR before it is not part of it.
    let framed = match line.iter().position(|&c| c == b'\n') {
        None => Status::Partial,
        Some(lf) => {
            let l = &line[..lf];
            Status::Complete((parse_command_line(l.strip_suffix(b"\r").unwrap_or(l)), lf + 1))
        }
    };
    assert_eq!(parse_command(line), framed);
});
