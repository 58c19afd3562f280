//! Where a session keeps its bytes: sizes, the smallest output queue under every kind of load
//! (pipelining, the largest EHLO response, long AUTH payloads, BDAT, errors, every split), and
//! the SASL buffer taken only while an AUTH exchange runs.
//!
//! Every scripted session of `tests/server.rs` also runs with the smallest output queue
//! ([`smtp_proto::testing::run_with`] checks it); these are the cases aimed at the buffers.

use std::cell::Cell;

use smtp_proto::ehlo::AuthMechanisms;
use smtp_proto::reply::Reply;
use smtp_proto::server::{
    sasl_buffer_for, ApiMisuse, Buffers, Config, Event, Heap, Inline, Lent, OutputTooSmall, Progress, Server,
    MIN_OUTPUT_BUFFER, OUTPUT_BUFFER, SASL_BUFFER,
};
use smtp_proto::testing::{accept_all, run, run_all_splits, run_session, run_with, Transcript};

fn config() -> Config {
    let mut c = Config::new("mx.test");
    c.capabilities.auth = AuthMechanisms::none()
        .with(AuthMechanisms::PLAIN)
        .with(AuthMechanisms::LOGIN)
        .with(AuthMechanisms::XOAUTH2)
        .with(AuthMechanisms::CRAM_MD5);
    c.allow_insecure_auth = true;
    c
}

fn b64(data: &[u8]) -> String {
    let mut out = vec![0u8; data.len() * 4 / 3 + 4];
    let n = smtp_proto::sasl::encode_base64(data, &mut out).unwrap();
    String::from_utf8(out[..n].to_vec()).unwrap()
}

fn lines(t: &Transcript) -> Vec<String> {
    t.output_str().split("\r\n").filter(|l| !l.is_empty() && !l.starts_with("250-")).map(str::to_owned).collect()
}

#[test]
fn a_session_with_lent_or_heap_buffers_fits_in_2_kib() {
    let (inline, lent, heap) = (size_of::<Server>(), size_of::<Server<Lent<'static>>>(), size_of::<Server<Heap>>());
    println!("size_of: Server<Inline> {inline}, Server<Lent> {lent}, Server<Heap> {heap}");
    assert!(lent <= 2048, "{lent}");
    assert!(heap <= 2048, "{heap}");
    // Inline is today's layout: the two arrays and the same state.
    assert!(inline >= OUTPUT_BUFFER + SASL_BUFFER);
    assert!(inline <= OUTPUT_BUFFER + SASL_BUFFER + 1024, "{inline}");
    assert_eq!(size_of::<Server>(), size_of::<Server<Inline>>());
}

#[test]
fn the_output_queue_is_checked_at_construction() {
    let (mut out, mut sasl) = ([0u8; MIN_OUTPUT_BUFFER], [0u8; 0]);
    let r = Server::with_buffers(Config::default(), Lent::new(&mut out[..MIN_OUTPUT_BUFFER - 1], &mut sasl));
    assert_eq!(r.err(), Some(OutputTooSmall { len: MIN_OUTPUT_BUFFER - 1 }));
    assert!(Server::with_buffers(Config::default(), Lent::new(&mut out, &mut sasl)).is_ok());
    assert_eq!(Server::with_buffers(Config::default(), Heap::new(100)).err(), Some(OutputTooSmall { len: 100 }));
    assert!(Server::with_buffers(Config::default(), Heap::new(MIN_OUTPUT_BUFFER)).is_ok());
    assert!(Server::with_buffers(Config::default(), Heap::default()).is_ok());
    assert!(Server::with_buffers(Config::default(), Inline::new()).is_ok());
    assert_eq!(sasl_buffer_for(Config::default().max_auth_line), SASL_BUFFER);
}

/// Everything the EHLO response can say, at its longest: a 255-octet host name, every
/// capability, the largest numbers, and a greeting text longer than a line.
fn largest_ehlo_config(tls: bool) -> Config {
    let mut c = config();
    c.hostname = smtp_proto::server::HostName::new(&"h".repeat(300));
    let caps = &mut c.capabilities;
    caps.binarymime = true;
    caps.starttls = !tls;
    caps.requiretls = tls;
    caps.mt_priority = true;
    caps.future_release = Some(u64::MAX);
    caps.deliver_by = Some(u64::MAX);
    caps.vrfy = true;
    caps.help = true;
    caps.auth = AuthMechanisms::ALL.iter().fold(AuthMechanisms::none(), |set, (bit, _)| set.with(*bit));
    c.max_message_size = Some(u64::MAX);
    c
}

/// One input in, the event or progress it gives (draining nothing).
fn feed<'b, B: Buffers>(s: &mut Server<B>, input: &'b [u8]) -> (usize, Progress<'b>) {
    let r = s.handle_input(input).unwrap();
    (r.consumed, r.progress)
}

/// No event: the core wants input, or a drain first (all it had is consumed or waits).
fn waits(p: Progress<'_>) -> bool {
    matches!(p, Progress::NeedInput | Progress::Flush)
}

/// Drains the queue (the replies are not looked at), then feeds one input.
fn step<'b, B: Buffers>(s: &mut Server<B>, input: &'b [u8]) -> (usize, Progress<'b>) {
    drain(s);
    feed(s, input)
}

fn drain<B: Buffers>(s: &mut Server<B>) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 61];
    loop {
        let n = s.poll_transmit(&mut buf);
        if n == 0 {
            return all;
        }
        all.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn the_largest_ehlo_response_fits_the_smallest_queue_even_behind_pipelined_replies() {
    for tls in [false, true] {
        let c = largest_ehlo_config(tls);
        // Measured in an empty, large queue.
        let mut s = Server::with_buffers(c, Heap::new(8192)).unwrap();
        if tls {
            s.tls_established().unwrap();
        }
        s.greet("hi").unwrap();
        drain(&mut s);
        assert!(matches!(feed(&mut s, b"EHLO c\r\n").1, Progress::Event(Event::Helo { .. })));
        let long = "x".repeat(600);
        s.reply(Reply::new(250, None, &long)).unwrap();
        let ehlo = drain(&mut s);
        println!("largest EHLO response (tls {tls}): {} octets", ehlo.len());
        assert!(ehlo.len() <= MIN_OUTPUT_BUFFER, "{}", ehlo.len());

        // With the smallest queue, after as many pipelined replies as the core takes: the
        // EHLO line waits for a flush, then its response fits.
        let (mut out, mut sasl) = ([0u8; MIN_OUTPUT_BUFFER], [0u8; 64]);
        let mut s = Server::with_buffers(c, Lent::new(&mut out, &mut sasl)).unwrap();
        if tls {
            s.tls_established().unwrap();
        }
        s.greet("hi").unwrap();
        drain(&mut s);
        let mut input = Vec::new();
        for _ in 0..40 {
            input.extend_from_slice(b"HELP\r\n");
        }
        input.extend_from_slice(b"EHLO c\r\n");
        let mut at = 0;
        let mut sent = drain(&mut s);
        let mut flushes = 0;
        loop {
            let (n, p) = feed(&mut s, &input[at..]);
            at += n;
            match p {
                Progress::Flush => {
                    flushes += 1;
                    sent.extend(drain(&mut s));
                }
                Progress::Event(Event::Helo { .. }) => {
                    s.reply(Reply::new(250, None, &long)).unwrap();
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        sent.extend(drain(&mut s));
        assert!(flushes > 0);
        assert!(sent.ends_with(&ehlo), "tls {tls}");
    }
}

/// A pipelined session exercising every path that writes, for the split tests.
fn busy_script() -> Vec<Vec<u8>> {
    let token = "t".repeat(1500);
    let xoauth2 = b64(format!("user=me@example.com\x01auth=Bearer {token}\x01\x01").as_bytes());
    let mut first = b"EHLO client.example\r\n".to_vec();
    for _ in 0..30 {
        first.extend_from_slice(b"NOOP\r\nHELP\r\nVRFY x\r\n");
    }
    vec![
        first,
        format!("AUTH XOAUTH2 {xoauth2}\r\n").into_bytes(),
        b"MAIL FROM:<a@a.example>\r\nRCPT TO:<bad1@b.example>\r\nRCPT TO:<b@b.example>\r\nBOGUS\r\n\
          RCPT TO:<c@b.example>\r\nBDAT 5\r\nhelloBDAT 6 LAST\r\n worldRSET\r\nBDAT 3\r\nabcNOOP\r\n"
            .to_vec(),
        b"MAIL FROM:<a@a.example>\r\nRCPT TO:<c@b.example>\r\nDATA\r\n".to_vec(),
        b"line\r\n..dot\r\n.\r\nQUIT\r\n".to_vec(),
    ]
}

fn busy_policy<B: Buffers>(ev: &Event<'_>, s: &Server<B>) -> Option<Reply<'static>> {
    match ev {
        Event::Auth { .. } => match s.credentials() {
            Some(smtp_proto::sasl::Credentials::XOAuth2 { user: "me@example.com", token }) if token.len() == 1500 => {
                None
            }
            other => panic!("{other:?}"),
        },
        _ => smtp_proto::testing::picky(ev, s),
    }
}

#[test]
fn the_smallest_queue_gives_the_same_replies_at_every_split() {
    let script = busy_script();
    let segs: Vec<&[u8]> = script.iter().map(Vec::as_slice).collect();
    let mut c = config();
    c.reject_pipelined_data = false;
    c.max_junk_commands = 1000;
    c.max_errors = 100;
    // Inline and the smallest lent queue, whole, byte by byte and at every single split
    // (`run_with` compares the two on every run).
    let t = run_all_splits(c, busy_policy, &segs);
    let replies = lines(&t);
    assert!(replies.contains(&"235 2.7.0 Authentication successful".to_string()), "{replies:?}");
    assert!(replies.iter().any(|r| r.starts_with("250 2.0.0 5 octets received")), "{replies:?}");
    assert!(replies.iter().any(|r| r.starts_with("503 5.5.1")), "{replies:?}");
    assert_eq!(replies.last().unwrap(), "221 2.0.0 mx.test Bye");
    assert_eq!(t.bodies(), ["hello world", "line\\r\\n.dot\\r\\n"]);
    // Heap with the smallest queue, and odd sizes in between, whole and byte by byte.
    for len in [MIN_OUTPUT_BUFFER, MIN_OUTPUT_BUFFER + 1, 1500, 2047, OUTPUT_BUFFER, 10_000] {
        for bytewise in [false, true] {
            let cuts = |_: usize, s: &[u8]| if bytewise { (1..s.len()).collect() } else { vec![] };
            let h = run_session(Server::with_buffers(c, Heap::new(len)).unwrap(), &mut busy_policy, &segs, &cuts);
            assert_eq!(h, t, "Heap {len}, byte by byte {bytewise}");
        }
    }
}

/// Output held back behind a refused BDAT chunk must not stop the session when the queue is
/// nearly full: before, a chunk split across reads after ~200 pipelined replies made the core
/// ask for a flush forever (a livelock any client could cause).
#[test]
fn a_refused_chunk_behind_a_full_queue_does_not_livelock() {
    let mut c = Config::new("mx.test");
    c.max_junk_commands = 10_000;
    for k in 0..230 {
        let mut first = b"EHLO c\r\n".to_vec();
        for _ in 0..k {
            first.extend_from_slice(b"NOOP\r\n");
        }
        first.extend_from_slice(b"BDAT 10\r\n12345");
        let t = run_with(c, accept_all, &[&first, b"67890", b"QUIT\r\n"], &|_, _| vec![]);
        let replies = lines(&t);
        assert_eq!(replies[replies.len() - 2], "503 5.5.1 Error: need MAIL command", "{k}");
        assert_eq!(replies[replies.len() - 1], "221 2.0.0 mx.test Bye", "{k}");
    }
}

/// A refusal of BDAT that does not fit the queue fails with `ReplyTooLong` and changes nothing:
/// drained, the queue gives what it held once and nothing stale, and the refusal, decided
/// again, goes out once, after the chunk.
#[test]
fn a_bdat_refusal_too_long_for_the_queue_can_be_retried() {
    let mut s = Server::with_buffers(Config::new("mx.test"), Heap::new(2000)).unwrap();
    s.greet("hi").unwrap();
    drain(&mut s);
    let input = b"HELO c\r\nMAIL FROM:<a@a.example>\r\nRCPT TO:<b@b.example>\r\nNOOP\r\nNOOP\r\nNOOP\r\n\
                  NOOP\r\nNOOP\r\nBDAT 3 LAST\r\nabc";
    let mut at = 0;
    loop {
        let (n, p) = feed(&mut s, &input[at..]);
        at += n;
        match p {
            Progress::Event(Event::DataStart { chunked: true }) => break,
            Progress::Event(_) => s.accept().unwrap(),
            other => panic!("{other:?}"),
        }
    }
    // Four lines of 476 octets: 1904, more than the free space now, less than the queue.
    let text = ["r".repeat(470), "r".repeat(470), "r".repeat(470), "r".repeat(470)].join("\n");
    let refusal = Reply::new(552, None, &text);
    assert_eq!(s.reply(refusal), Err(ApiMisuse::ReplyTooLong));
    let before = String::from_utf8(drain(&mut s)).unwrap();
    assert_eq!(before.matches("\r\n").count(), 8, "{before}");
    assert!(before.starts_with("250 mx.test\r\n250 2.1.0 Sender OK\r\n"), "{before}");
    assert!(before.ends_with("250 2.0.0 OK\r\n"), "{before}");
    assert_eq!(drain(&mut s), b"", "nothing stale");
    s.reply(refusal).unwrap();
    // Held until the chunk is consumed.
    assert_eq!(drain(&mut s), b"");
    // The chunk is consumed; the refusal leaves (the core asks for a flush: the queue is full).
    let (n, p) = feed(&mut s, &input[at..]);
    assert_eq!((at + n, p), (input.len(), Progress::Flush));
    let after = String::from_utf8(drain(&mut s)).unwrap();
    assert_eq!(after.len(), 1904, "{after}");
    assert_eq!(after.matches("552-").count(), 3, "{after}");
    assert_eq!(after.matches("552 ").count(), 1, "{after}");
}

/// Once a junk command or an error closed the session with 421, nothing follows the 421.
#[test]
fn nothing_is_written_after_the_last_421() {
    let mut c = Config::new("mx.test");
    c.max_junk_commands = 0;
    c.max_errors = 1;
    for script in [&b"NOOP\r\n"[..], b"HELP\r\n", b"RSET\r\n", b"VRFY x\r\n", b"EXPN x\r\n", b"EHLO a\r\nEHLO b\r\n"] {
        let t = run_all_splits(c, accept_all, &[script]);
        assert!(t.output_str().ends_with("421 4.7.0 mx.test Error: too many errors\r\n"), "{}", t.output_str());
        assert!(!t.events.iter().any(|e| e.starts_with("Helo { host: \"b\"") || e == "Reset"), "{:?}", t.events);
    }
}

// ---- the SASL buffer: taken when an exchange starts, given back when it ends ----

/// Lent buffers that check how the core takes and gives back the SASL buffer, and count it.
struct Counting<'a> {
    inner: Lent<'a>,
    wanted: usize,
    held: bool,
    /// Buffers taken and given back.
    counts: &'a Cell<(u32, u32)>,
    /// Refuse to give a buffer (a pool ran dry).
    dry: bool,
}

impl<'a> Counting<'a> {
    fn new(out: &'a mut [u8], sasl: &'a mut [u8], wanted: usize, counts: &'a Cell<(u32, u32)>) -> Self {
        Self { inner: Lent::new(out, sasl), wanted, held: false, counts, dry: false }
    }
}

impl Buffers for Counting<'_> {
    fn output(&mut self) -> &mut [u8] {
        self.inner.output()
    }
    fn acquire_sasl(&mut self, wanted: usize) -> bool {
        assert!(!self.held, "acquired twice");
        assert_eq!(wanted, self.wanted);
        if self.dry {
            return false;
        }
        self.held = true;
        let (a, r) = self.counts.get();
        self.counts.set((a + 1, r));
        self.inner.acquire_sasl(wanted)
    }
    fn sasl(&self) -> &[u8] {
        assert!(self.held, "read while not held");
        self.inner.sasl()
    }
    fn sasl_mut(&mut self) -> &mut [u8] {
        assert!(self.held, "written while not held");
        self.inner.sasl_mut()
    }
    fn release_sasl(&mut self) {
        assert!(self.held, "released while not held");
        assert!(self.inner.sasl().iter().all(|&b| b == 0), "released with the secret still in it");
        self.held = false;
        let (a, r) = self.counts.get();
        self.counts.set((a, r + 1));
    }
}

fn plain(user: &str, pass: &str) -> String {
    b64(format!("\0{user}\0{pass}").as_bytes())
}

/// Accepts the AUTH of user "ok" and refuses every other (so that a session can go on
/// authenticating), checking that the credentials are there while the decision is pending.
fn auth_policy<B: Buffers>(ev: &Event<'_>, s: &Server<B>) -> Option<Reply<'static>> {
    match ev {
        Event::Auth { .. } | Event::AuthResponse => match s.credentials() {
            Some(smtp_proto::sasl::Credentials::Plain { authcid: "ok", .. }) => None,
            Some(_) => Some(Reply::AUTH_FAILED),
            None => panic!("no credentials with {ev:?}"),
        },
        _ => None,
    }
}

fn counting_config() -> Config {
    let mut c = config();
    c.max_auth_line = 100;
    c
}

#[test]
fn the_sasl_buffer_is_held_only_while_an_exchange_runs() {
    let long = "A".repeat(3000);
    let scripts: Vec<Vec<Vec<u8>>> = vec![
        // Initial response refused, then accepted.
        vec![format!("EHLO c\r\nAUTH PLAIN {}\r\nAUTH PLAIN {}\r\nNOOP\r\n", plain("x", "y"), plain("ok", "p"))
            .into_bytes()],
        // Without an initial response; LOGIN in two steps; cancelled; bad base64 (the command,
        // a response); a payload longer than the buffer (50 octets); an AUTH line and a
        // response over the AUTH line limit (100); a bare LF in a response.
        vec![
            b"EHLO c\r\nAUTH PLAIN\r\n".to_vec(),
            format!("{}\r\n", plain("x", "y")).into_bytes(),
            b"AUTH LOGIN\r\n".to_vec(),
            format!("{}\r\n", b64(b"user")).into_bytes(),
            format!("{}\r\n", b64(b"pass")).into_bytes(),
            b"AUTH LOGIN\r\n*\r\nAUTH PLAIN Zh==\r\nAUTH PLAIN\r\n!!\r\n".to_vec(),
            format!("AUTH PLAIN {}\r\nAUTH PLAIN {long}\r\n", "QUFB".repeat(20)).into_bytes(),
            format!("AUTH PLAIN\r\n{}\r\n", "A".repeat(200)).into_bytes(),
            b"AUTH PLAIN\r\nAAAA\nNOOP\r\n".to_vec(),
            format!("AUTH PLAIN {}\r\nQUIT\r\n", plain("ok", "p")).into_bytes(),
        ],
    ];
    let c = counting_config();
    for script in &scripts {
        let segs: Vec<&[u8]> = script.iter().map(Vec::as_slice).collect();
        for bytewise in [false, true] {
            let counts = Cell::new((0, 0));
            let (mut out, mut sasl) = ([0u8; MIN_OUTPUT_BUFFER], [0u8; 50]);
            let b = Counting::new(&mut out, &mut sasl, sasl_buffer_for(100), &counts);
            let server = Server::with_buffers(c, b).unwrap();
            let cuts = |_: usize, s: &[u8]| if bytewise { (1..s.len()).collect() } else { vec![] };
            let mut decide = |ev: &Event<'_>, s: &Server<Counting<'_>>| {
                if matches!(ev, Event::Auth { .. } | Event::AuthResponse) {
                    assert!(s.buffers().held);
                }
                auth_policy(ev, s)
            };
            let t = run_session(server, &mut decide, &segs, &cuts);
            let replies = lines(&t);
            assert!(replies.contains(&"235 2.7.0 Authentication successful".into()), "{replies:?}");
            let (acquired, released) = counts.get();
            assert_eq!(acquired, released, "{replies:?}");
            assert!(acquired >= 2, "{acquired}");
        }
    }
    // The Inline and the smallest lent queue agree on these scripts too.
    for script in &scripts {
        let segs: Vec<&[u8]> = script.iter().map(Vec::as_slice).collect();
        run_all_splits(c, auth_policy, &segs[..segs.len().min(3)]);
    }
}

/// Mechanisms the application drives keep the buffer across challenges, until the decision.
#[test]
fn an_application_driven_exchange_holds_the_buffer_until_its_decision() {
    let counts = Cell::new((0, 0));
    let (mut out, mut sasl) = ([0u8; MIN_OUTPUT_BUFFER], [0u8; 50]);
    let c = counting_config();
    let mut s = Server::with_buffers(c, Counting::new(&mut out, &mut sasl, sasl_buffer_for(100), &counts)).unwrap();
    s.greet("hi").unwrap();
    drain(&mut s);
    let _ = step(&mut s, b"EHLO c\r\n");
    s.accept().unwrap();
    drain(&mut s);
    assert!(matches!(step(&mut s, b"AUTH CRAM-MD5\r\n").1, Progress::Event(Event::Auth { .. })));
    assert!(s.buffers().held);
    s.auth_challenge(b"<1.2@mx>").unwrap();
    assert!(s.buffers().held);
    assert_eq!(step(&mut s, b"dGltIGI5MTM=\r\n").1, Progress::Event(Event::AuthResponse));
    assert_eq!(s.sasl_data(), b"tim b913");
    s.auth_challenge(b"again").unwrap();
    assert_eq!(step(&mut s, b"dGlt\r\n").1, Progress::Event(Event::AuthResponse));
    assert_eq!(s.sasl_data(), b"tim");
    s.reply(Reply::AUTH_FAILED).unwrap();
    assert!(!s.buffers().held);
    assert_eq!(s.sasl_data(), b"");
    assert_eq!(counts.get(), (1, 1));
}

#[test]
fn a_timeout_or_shutdown_mid_exchange_gives_the_buffer_back() {
    let c = counting_config();
    for timeout in [true, false] {
        let end = |s: &mut Server<Counting<'_>>| if timeout { s.handle_timeout() } else { s.shutdown() };
        // Between the lines of LOGIN.
        let counts = Cell::new((0, 0));
        let (mut out, mut sasl) = ([0u8; MIN_OUTPUT_BUFFER], [0u8; 50]);
        let mut s = Server::with_buffers(c, Counting::new(&mut out, &mut sasl, sasl_buffer_for(100), &counts)).unwrap();
        s.greet("hi").unwrap();
        drain(&mut s);
        let _ = step(&mut s, b"EHLO c\r\n");
        s.accept().unwrap();
        drain(&mut s);
        assert!(waits(step(&mut s, b"AUTH LOGIN\r\n").1));
        assert!(waits(step(&mut s, format!("{}\r\n", b64(b"user")).as_bytes()).1));
        assert!(s.buffers().held);
        end(&mut s);
        assert!(!s.buffers().held);
        assert_eq!(counts.get(), (1, 1));
        // With the decision pending.
        let counts = Cell::new((0, 0));
        let (mut out, mut sasl) = ([0u8; MIN_OUTPUT_BUFFER], [0u8; 50]);
        let mut s = Server::with_buffers(c, Counting::new(&mut out, &mut sasl, sasl_buffer_for(100), &counts)).unwrap();
        s.greet("hi").unwrap();
        drain(&mut s);
        let _ = step(&mut s, b"EHLO c\r\n");
        s.accept().unwrap();
        drain(&mut s);
        let line = format!("AUTH PLAIN {}\r\n", plain("ok", "p"));
        assert!(matches!(step(&mut s, line.as_bytes()).1, Progress::Event(Event::Auth { .. })));
        assert!(s.credentials().is_some());
        end(&mut s);
        assert!(!s.buffers().held && s.credentials().is_none());
        assert_eq!(counts.get(), (1, 1));
        assert_eq!(s.reply(Reply::AUTH_OK), Err(ApiMisuse::NoDecisionPending));
    }
}

#[test]
fn no_sasl_buffer_to_be_had_is_454() {
    let c = config();
    // A lent empty buffer: no AUTH.
    let (mut out, mut sasl) = ([0u8; MIN_OUTPUT_BUFFER], [0u8; 0]);
    let mut s = Server::with_buffers(c, Lent::new(&mut out, &mut sasl)).unwrap();
    s.greet("hi").unwrap();
    drain(&mut s);
    let _ = step(&mut s, b"EHLO c\r\n");
    s.accept().unwrap();
    drain(&mut s);
    let line = format!("AUTH PLAIN {}\r\n", plain("ok", "p"));
    assert!(waits(step(&mut s, line.as_bytes()).1));
    assert_eq!(drain(&mut s), b"454 4.7.0 Temporary authentication failure\r\n");
    assert_eq!(s.errors(), 1);
    // The session goes on.
    assert!(waits(step(&mut s, b"NOOP\r\n").1));
    assert_eq!(drain(&mut s), b"250 2.0.0 OK\r\n");

    // A pool that ran dry, then has one again.
    let (mut out, mut sasl) = ([0u8; MIN_OUTPUT_BUFFER], [0u8; 64]);
    let counts = Cell::new((0, 0));
    let mut b = Counting::new(&mut out, &mut sasl, sasl_buffer_for(c.max_auth_line), &counts);
    b.dry = true;
    let mut s = Server::with_buffers(c, b).unwrap();
    s.greet("hi").unwrap();
    drain(&mut s);
    let _ = step(&mut s, b"EHLO c\r\n");
    s.accept().unwrap();
    drain(&mut s);
    assert!(waits(step(&mut s, b"AUTH LOGIN\r\n").1));
    assert_eq!(drain(&mut s), b"454 4.7.0 Temporary authentication failure\r\n");
    let mut b = s.into_buffers();
    b.dry = false;
    let mut s = Server::with_buffers(c, b).unwrap();
    s.greet("hi").unwrap();
    drain(&mut s);
    let _ = step(&mut s, b"EHLO c\r\n");
    s.accept().unwrap();
    drain(&mut s);
    assert!(matches!(step(&mut s, line.as_bytes()).1, Progress::Event(Event::Auth { .. })));
    s.accept().unwrap();
    assert!(drain(&mut s).ends_with(b"235 2.7.0 Authentication successful\r\n"));
}

#[test]
fn a_small_lent_sasl_buffer_refuses_longer_payloads_with_500_5_5_6() {
    let c = config();
    let (mut out, mut sasl) = ([0u8; MIN_OUTPUT_BUFFER], [0u8; 16]);
    let s = Server::with_buffers(c, Lent::new(&mut out, &mut sasl)).unwrap();
    let script = format!(
        "EHLO c\r\nAUTH PLAIN {}\r\nAUTH PLAIN {}\r\n",
        plain("someone-long", "a-longer-password"),
        plain("ok", "pw")
    );
    let mut decide = |ev: &Event<'_>, s: &Server<Lent<'_>>| match ev {
        Event::Auth { .. } => {
            assert!(matches!(
                s.credentials(),
                Some(smtp_proto::sasl::Credentials::Plain { authcid: "ok", password: "pw", .. })
            ));
            None
        }
        _ => None,
    };
    let t = run_session(s, &mut decide, &[script.as_bytes()], &|_, _| vec![]);
    assert_eq!(
        lines(&t)[2..],
        ["500 5.5.6 Authentication exchange line is too long", "235 2.7.0 Authentication successful"]
    );
}

#[test]
fn heap_allocates_the_sasl_buffer_only_during_the_exchange() {
    let c = config();
    let mut s = Server::with_buffers(c, Heap::default()).unwrap();
    s.greet("hi").unwrap();
    drain(&mut s);
    let _ = step(&mut s, b"EHLO c\r\n");
    s.accept().unwrap();
    drain(&mut s);
    assert!(!s.buffers().has_sasl());
    assert!(waits(step(&mut s, b"AUTH LOGIN\r\n").1));
    assert!(s.buffers().has_sasl());
    assert_eq!(format!("{:?}", s.buffers()), format!("Heap {{ output: 4096, sasl: Some({SASL_BUFFER}) }}"));
    let _ = step(&mut s, format!("{}\r\n", b64(b"user")).as_bytes());
    assert!(matches!(step(&mut s, format!("{}\r\n", b64(b"pw")).as_bytes()).1, Progress::Event(Event::Auth { .. })));
    assert_eq!(s.credentials(), Some(smtp_proto::sasl::Credentials::Login { username: "user", password: "pw" }));
    assert!(s.buffers().has_sasl());
    s.reply(Reply::AUTH_FAILED).unwrap();
    assert!(!s.buffers().has_sasl());
    assert_eq!(s.credentials(), None);
    // The whole pipelined XOAUTH2 session of the split test, on the heap.
    let script = busy_script();
    let segs: Vec<&[u8]> = script.iter().map(Vec::as_slice).collect();
    let mut c = config();
    c.reject_pipelined_data = false;
    c.max_junk_commands = 1000;
    let t = run(c, busy_policy, &segs);
    assert!(t.output_str().contains("235 2.7.0"));
}
