//! BDAT (CHUNKING) content is as strict as DATA content: under the default
//! `BarePolicy::Reject` a bare CR or bare LF refuses the message with the reply DATA gives, at
//! any chunking and any split of the input; under `BarePolicy::Allow` both pass the bytes
//! unchanged. Each script runs whole, byte by byte, split at every index and at every pair of
//! indices (`run_all_splits`); the oracle at the end sends the same bodies both ways.

use smtp_proto::data::BarePolicy;
use smtp_proto::server::Config;
use smtp_proto::testing::{accept_all, check_data_vs_bdat, run_all_splits, send_as_data, Transcript, Verdict};

const ENVELOPE: &[u8] = b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n";
const BARE: &str = "550 5.5.2 Error: bare <CR> or <LF> received";
const NEED_MAIL: &str = "503 5.5.1 Error: need MAIL command";

fn config() -> Config {
    Config::new("mx.test")
}

fn allow() -> Config {
    let mut c = config();
    c.bare_line_endings = BarePolicy::Allow;
    c
}

/// `BDAT` commands for `chunks` (the last one `LAST`), each followed by its octets.
fn chunks(chunks: &[&[u8]]) -> Vec<u8> {
    let mut s = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
        s.extend_from_slice(format!("BDAT {}{last}\r\n", c.len()).as_bytes());
        s.extend_from_slice(c);
    }
    s
}

/// The envelope, the chunks and `then`, pipelined in one segment, run at every split.
fn session(c: Config, body: &[&[u8]], then: &[u8]) -> Transcript {
    let mut script = ENVELOPE.to_vec();
    script.extend_from_slice(&chunks(body));
    script.extend_from_slice(then);
    run_all_splits(c, accept_all, &[&script])
}

/// The replies after the envelope's (greeting, EHLO, MAIL, RCPT).
fn replies(t: &Transcript) -> Vec<String> {
    let out = t.output_str();
    let lines: Vec<&str> = out.split("\r\n").filter(|l| !l.is_empty() && !l.starts_with("250-")).collect();
    lines[4..].iter().map(|l| (*l).to_owned()).collect()
}

fn events(t: &Transcript) -> Vec<&str> {
    t.events
        .iter()
        .map(String::as_str)
        .filter(|e| !e.starts_with("Helo") && !e.starts_with("Mail") && !e.starts_with("Rcpt"))
        .collect()
}

/// The DATA reply to the same body, for comparison.
fn data_refusal(body: &[u8]) -> String {
    match send_as_data(config(), body, &[]) {
        Verdict::Refused { reply, .. } => reply,
        v => panic!("DATA accepted {v:?}"),
    }
}

#[test]
fn bare_lf_in_a_bdat_chunk_is_refused_as_in_data() {
    let t = session(config(), &[b"ab\ncd\r\n"], b"NOOP\r\n");
    assert_eq!(replies(&t), [BARE, "250 2.0.0 OK"]);
    assert_eq!(data_refusal(b"ab\ncd\r\n"), BARE, "the reply DATA gives");
    // What precedes the bare LF was passed on, as DATA passes it; then the abort.
    assert_eq!(events(&t), ["DataStart { chunked: true }", "Data:ab", "DataAborted { error: BareLineEnding }"]);
}

#[test]
fn bare_cr_in_the_middle_of_a_bdat_chunk_is_refused() {
    let t = session(config(), &[b"Subject: x\r\n\r\nab\rcd\r\n"], b"NOOP\r\n");
    assert_eq!(replies(&t), [BARE, "250 2.0.0 OK"]);
    assert_eq!(data_refusal(b"Subject: x\r\n\r\nab\rcd\r\n"), BARE);
    assert_eq!(
        events(&t),
        ["DataStart { chunked: true }", "Data:Subject: x\\r\\n\\r\\nab", "DataAborted { error: BareLineEnding }"]
    );
    // Bare CR then LF ("\r\r\n") and a bare CR before the end of a later chunk.
    let t = session(config(), &[b"ab\r\n", b"c\r\r\n"], b"NOOP\r\n");
    assert_eq!(replies(&t), ["250 2.0.0 4 octets received", BARE, "250 2.0.0 OK"]);
}

#[test]
fn cr_ending_a_chunk_and_lf_starting_the_next_is_a_crlf() {
    let t = session(config(), &[b"ab\r", b"\ncd\r", b"\n"], b"NOOP\r\n");
    assert_eq!(
        replies(&t),
        ["250 2.0.0 3 octets received", "250 2.0.0 7 octets received", "250 2.0.0 Message accepted", "250 2.0.0 OK"]
    );
    assert_eq!(t.bodies(), ["ab\\r\\ncd\\r\\n"]);
    assert!(events(&t).contains(&"DataEnd { size: 8 }"), "{:?}", t.events);
    // Across an empty chunk too.
    let t = session(config(), &[b"ab\r", b"", b"\n"], b"NOOP\r\n");
    assert_eq!(replies(&t)[2..], ["250 2.0.0 Message accepted", "250 2.0.0 OK"]);
    // A CR ending a chunk followed by something else is bare: refused in the next chunk.
    let t = session(config(), &[b"ab\r", b"x\r\n", b"cd\r\n"], b"NOOP\r\n");
    assert_eq!(replies(&t), ["250 2.0.0 3 octets received", BARE, NEED_MAIL, "250 2.0.0 OK"]);
    assert_eq!(t.bodies(), ["ab\\r"], "the CR went up with its chunk, nothing after it");
}

#[test]
fn cr_ending_the_last_chunk_is_bare() {
    let t = session(config(), &[b"ab\r\n", b"cd\r"], b"NOOP\r\n");
    assert_eq!(replies(&t), ["250 2.0.0 4 octets received", BARE, "250 2.0.0 OK"]);
    assert!(events(&t).contains(&"DataAborted { error: BareLineEnding }"), "{:?}", t.events);
    assert!(!t.events.iter().any(|e| e.starts_with("DataEnd")));
    // `BDAT 0 LAST` after a chunk ending with CR.
    let t = session(config(), &[b"ab\r", b""], b"NOOP\r\n");
    assert_eq!(replies(&t), ["250 2.0.0 3 octets received", BARE, "250 2.0.0 OK"]);
    // A lone CR as the whole message.
    let t = session(config(), &[b"\r"], b"NOOP\r\n");
    assert_eq!(replies(&t), [BARE, "250 2.0.0 OK"]);
}

#[test]
fn a_violation_in_chunk_1_of_3_skips_the_rest_in_sync() {
    let mut then = chunks(&[b"MAIL FROM:<evil@x.example>\r\n"]);
    then.extend_from_slice(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n");
    then.extend_from_slice(&chunks(&[b"ok\r\n", b".\r\n"]));
    then.extend_from_slice(b"QUIT\r\n");
    let t = session(config(), &[b"a\nb\r\n", b"RSET\r\nDATA\r\n", b"QUIT\r\n"], &then);
    assert_eq!(
        replies(&t),
        [
            BARE,      // chunk 1: where the bare LF is
            NEED_MAIL, // chunk 2, consumed whole: its commands never run
            NEED_MAIL, // chunk 3 (LAST)
            NEED_MAIL, // a BDAT after that: no transaction
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "250 2.0.0 4 octets received",
            "250 2.0.0 Message accepted",
            "221 2.0.0 mx.test Bye",
        ]
    );
    assert_eq!(
        events(&t),
        [
            "DataStart { chunked: true }",
            "Data:a",
            "DataAborted { error: BareLineEnding }",
            "DataStart { chunked: true }",
            "Data:ok\\r\\n.\\r\\n",
            "DataEnd { size: 7 }",
            "Quit",
        ]
    );
    assert_eq!(t.events.iter().filter(|e| e.starts_with("Mail")).count(), 2, "{:?}", t.events);
}

#[test]
fn bare_line_endings_and_the_size_limit_in_bdat() {
    let mut c = config();
    c.max_message_size = Some(4);
    // The bare LF is the first octet past the limit: a bare line ending, as DATA says.
    let t = session(c, &[b"abcd\nx"], b"NOOP\r\n");
    assert_eq!(replies(&t), [BARE, "250 2.0.0 OK"]);
    assert_eq!(t.bodies(), ["abcd"]);
    // A CRLF across the limit is too big; a bare CR before the limit is bare.
    let t = session(c, &[b"abc\r", b"\n"], b"NOOP\r\n");
    assert_eq!(
        replies(&t),
        ["250 2.0.0 4 octets received", "552 5.3.4 Chunk exceeds message size limit", "250 2.0.0 OK"]
    );
    let t = session(c, &[b"abc\r", b"x"], b"NOOP\r\n");
    assert_eq!(replies(&t), ["250 2.0.0 4 octets received", BARE, "250 2.0.0 OK"]);
}

#[test]
fn the_permissive_policy_passes_bdat_unchanged() {
    let bodies: &[&[&[u8]]] = &[
        &[b"ab\ncd\r\n"],
        &[b"Subject: x\r\n\r\nab\rcd\r\n"],
        &[b"ab\r", b"\ncd\r", b"\n"],
        &[b"ab\r\n", b"cd\r"],
        &[b"ab\r", b""],
        &[b"a\nb\r\n", b"RSET\r\nDATA\r\n", b"QUIT\r\n"],
        &[b"\r\n.\n", b"\n.\r", b"\r.\r\n"],
    ];
    for body in bodies {
        let t = session(allow(), body, b"NOOP\r\n");
        let all: Vec<u8> = body.concat();
        let r = replies(&t);
        assert_eq!(r[r.len() - 2..], ["250 2.0.0 Message accepted", "250 2.0.0 OK"], "{body:?}");
        assert_eq!(t.bodies(), [all.escape_ascii().to_string()], "{body:?}");
        assert!(t.events.contains(&format!("DataEnd {{ size: {} }}", all.len())), "{:?}", t.events);
    }
}

/// A small deterministic generator (xorshift64*), so that the oracle runs the same cases in
/// every `cargo test`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The `bdat_data` fuzz target's oracle over generated cases: bodies made of the pieces that
/// matter (CR, LF, CRLF, dots, text, long runs of canonical text for the block scan), cut
/// into BDAT chunks and the input cut into pieces at random points, under both policies,
/// with and without a small size limit.
#[test]
fn data_and_bdat_give_the_same_verdict() {
    const PIECES: &[&[u8]] = &[
        b"\r",
        b"\n",
        b"\r\n",
        b"\r\n",
        b".",
        b"\r\n.",
        b"\r\n.\r\n",
        b"x",
        b"hello world",
        b"\0",
        b"a line of canonical text that is long enough to fill a block of the scan\r\n",
    ];
    let mut rng = Rng(0x5eed_bda7_da7a);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..400 {
        let mut body = Vec::new();
        for _ in 0..rng.below(12) {
            body.extend_from_slice(PIECES[rng.below(PIECES.len())]);
        }
        if case % 3 == 0 {
            // A body that is canonical except maybe at its very end.
            body.retain(|&c| c != b'\r' && c != b'\n');
            body.extend_from_slice([&b"\r\n"[..], b"\r", b"\n", b""][rng.below(4)]);
        }
        let chunks: Vec<usize> = (0..rng.below(5)).map(|_| rng.below(body.len() + 1)).collect();
        let cuts: Vec<usize> = (0..rng.below(4)).map(|_| rng.below(body.len() + 120)).collect();
        let mut c = Config::new("mx.test");
        c.max_text_line = None;
        c.max_errors = u32::MAX;
        if case % 2 == 1 {
            c.bare_line_endings = BarePolicy::Allow;
        }
        if case % 5 == 0 {
            c.max_message_size = Some(rng.below(body.len() + 2) as u64);
        }
        check_data_vs_bdat(c, &body, &chunks, &cuts);
        match smtp_proto::testing::bdat_reference(&c, &body) {
            Verdict::Accepted(_) => accepted += 1,
            Verdict::Refused { .. } => refused += 1,
        }
    }
    assert!(accepted > 100 && refused > 100, "both verdicts covered: {accepted} accepted, {refused} refused");
}
