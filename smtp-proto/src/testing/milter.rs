//! A milter conversation scripted from the milter's side, run whole and split
//! ([`milter_script`]).

use super::*;

/// What a scripted milter conversation gave ([`milter_script`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MilterTranscript {
    /// Every event, in order (`Debug` form), then `error: ...` if the milter broke the
    /// protocol, or `silent` if it stopped answering while a reply was awaited.
    pub events: Vec<String>,
    /// Every byte the MTA side wrote (body chunks included).
    pub sent: Vec<u8>,
}

/// Plays the MTA side of one milter conversation against the milter's bytes `stream`,
/// delivered in pieces cut at the offsets `cuts` (ascending): negotiate, connect, HELO, MAIL,
/// two RCPT, DATA, two header fields, end of headers, two body chunks (skipped when the
/// milter says so), end of message, quit. A verdict other than continue ends the message
/// (a refused recipient does not); then quit. Whatever the cuts, the transcript must be the
/// same. Panics on an API error (the machine refused a request the driver had the right to
/// make).
///
/// ```
/// use smtp_proto::testing::milter_script;
/// let stream = b"\0\0\0\x0dO\0\0\0\x06\0\0\0\x01\0\0\0\0\0\0\0\x01r";
/// let t = milter_script(stream, &[3, 9]);
/// assert_eq!(t, milter_script(stream, &[]));
/// assert!(t.events[1].contains("Reject"), "{:?}", t.events);
/// ```
pub fn milter_script(stream: &[u8], cuts: &[usize]) -> MilterTranscript {
    use crate::milter::{ApiError, Client, Config, Family, Progress as MProgress, Stage};

    struct Io<'s> {
        stream: &'s [u8],
        cuts: Vec<usize>,
        pos: usize,
        buf: Vec<u8>,
        t: MilterTranscript,
    }
    impl Io<'_> {
        /// Feeds the milter's bytes until the awaited reply is complete; the events of the
        /// wait, or `None` when the conversation is over (error or silence).
        fn wait(&mut self, m: &mut Client) -> Option<Vec<String>> {
            let mut seen = Vec::new();
            while m.awaiting_reply() {
                match m.handle_input(&self.buf) {
                    Ok(r) => {
                        assert!(r.consumed <= self.buf.len());
                        let event = match r.progress {
                            MProgress::Event(e) => Some(format!("{e:?}")),
                            MProgress::NeedInput => None,
                        };
                        self.buf.drain(..r.consumed);
                        match event {
                            Some(e) => seen.push(e),
                            None => {
                                if self.pos == self.stream.len() {
                                    self.t.events.extend(seen);
                                    self.t.events.push("silent".to_owned());
                                    return None;
                                }
                                let next =
                                    self.cuts.iter().copied().find(|&c| c > self.pos).unwrap_or(self.stream.len());
                                let next = next.min(self.stream.len());
                                self.buf.extend_from_slice(&self.stream[self.pos..next]);
                                self.pos = next;
                            }
                        }
                    }
                    Err(e) => {
                        self.t.events.extend(seen);
                        self.t.events.push(format!("error: {e}"));
                        return None;
                    }
                }
            }
            self.t.events.extend(seen.iter().cloned());
            Some(seen)
        }
    }

    let mut m = Client::new(Config::new());
    let mut io = Io { stream, cuts: cuts.to_vec(), pos: 0, buf: Vec::new(), t: MilterTranscript::default() };
    let mut out = vec![0u8; 4096];
    let ok = |r: Result<usize, ApiError>| r.unwrap_or_else(|e| panic!("API error: {e}"));
    // Whether the last wait ended with a verdict that ends the message.
    let ended = |events: &[String], stage: Stage| -> bool {
        let verdict = events.iter().any(|e| e.starts_with("Verdict"));
        let refused = events.iter().any(|e| e.contains("Reject") || e.contains("TempFail") || e.contains("ReplyCode"));
        let goes_on = events.iter().any(|e| e.ends_with("verdict: Continue }"))
            || (stage == Stage::Rcpt && refused)
            || (stage == Stage::Body && events.iter().any(|e| e.ends_with("verdict: Skip }")));
        verdict && !goes_on
    };
    macro_rules! step {
        ($stage:expr, $call:expr) => {{
            let n = ok($call);
            io.t.sent.extend_from_slice(&out[..n]);
            match io.wait(&mut m) {
                None => return io.t,
                Some(events) if ended(&events, $stage) => {
                    let n = ok(m.quit(&mut out));
                    io.t.sent.extend_from_slice(&out[..n]);
                    return io.t;
                }
                Some(_) => {}
            }
        }};
    }
    step!(Stage::Negotiate, m.negotiate(&mut out));
    let peer = "192.0.2.1:4567".parse().expect("an address");
    let connect = [("j", "mx.example.org"), ("{daemon_name}", "smtp-std"), ("{client_addr}", "192.0.2.1")];
    step!(Stage::Connect, m.connect(&connect, b"[192.0.2.1]", Family::Inet(peer), &mut out));
    step!(Stage::Helo, m.helo(&[], "client.example", &mut out));
    step!(Stage::Mail, m.mail(&[("{mail_addr}", "a@client.example")], "<a@client.example>", &["SIZE=100"], &mut out));
    step!(Stage::Rcpt, m.rcpt(&[("{rcpt_addr}", "b@example.org")], "<b@example.org>", &[], &mut out));
    step!(Stage::Rcpt, m.rcpt(&[("{rcpt_addr}", "c@example.org")], "<c@example.org>", &[], &mut out));
    step!(Stage::Data, m.data(&[("i", "Q1")], &mut out));
    step!(Stage::Header, m.header(b"Subject", b"hello", &mut out));
    step!(Stage::Header, m.header(b"From", b"a@client.example", &mut out));
    step!(Stage::EndOfHeaders, m.end_of_headers(&[], &mut out));
    for chunk in [&b"line one\r\n"[..], b"line two\r\n"] {
        match m.body(chunk.len()) {
            Ok(Some(head)) => {
                io.t.sent.extend_from_slice(&head);
                io.t.sent.extend_from_slice(chunk);
                match io.wait(&mut m) {
                    None => return io.t,
                    Some(events) if ended(&events, Stage::Body) => {
                        let n = ok(m.quit(&mut out));
                        io.t.sent.extend_from_slice(&out[..n]);
                        return io.t;
                    }
                    Some(_) => {}
                }
            }
            Ok(None) => {}
            Err(e) => panic!("API error: {e}"),
        }
    }
    step!(Stage::EndOfMessage, m.end_of_message(&[("i", "Q1")], &mut out));
    let n = ok(m.quit(&mut out));
    io.t.sent.extend_from_slice(&out[..n]);
    // Bytes the milter sent that nobody asked for.
    io.buf.extend_from_slice(&io.stream[io.pos..]);
    if !io.buf.is_empty() {
        io.t.events.push("trailing".to_owned());
    }
    io.t
}
