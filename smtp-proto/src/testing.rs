//! A scripted-session driver for testing code built on the server core (feature `std`).
//!
//! A script is a list of segments the client sends, waiting for the replies between segments;
//! a [`Policy`] plays the application; the [`Transcript`] records the events (consecutive
//! [`Event::Data`] chunks merged, since their boundaries depend on how input arrives) and every
//! reply byte. The core promises that any split of the segments gives the same transcript;
//! [`run_all_splits`] checks it. It also promises that the size of the output queue changes
//! only how replies are batched: [`run_with`] (and so [`run`] and [`run_all_splits`]) runs
//! every script a second time with the smallest output queue the core accepts
//! ([`MIN_OUTPUT_BUFFER`], [`Lent`]), the application's decisions replayed, and checks that the
//! transcript is the same. [`run_session`] runs a script on a session with any [`Buffers`]. The
//! driver panics (it is for tests) on API misuse or a livelock.
//!
//! ```
//! use smtp_proto::server::Config;
//! use smtp_proto::testing::{accept_all, run_all_splits};
//! let t = run_all_splits(Config::new("mx.test"), accept_all, &[b"HELO c\r\nQUIT\r\n"]);
//! assert_eq!(t.output_str(), "220 mx.test ESMTP test\r\n250 mx.test\r\n221 2.0.0 mx.test Bye\r\n");
//! ```

use std::borrow::ToOwned;
use std::format;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use crate::client::{self, Client, Envelope, Recipient};
use crate::data::DataError;
use crate::parse::{Body, By, ForwardPath, MailAuth, MailParams, Notify, RcptParams, Ret, ReversePath, UnknownParams};
use crate::reply::Reply;
use crate::server::{self, ApiMisuse, Buffers, Config, Event, Lent, Progress, Server, MIN_OUTPUT_BUFFER, SASL_BUFFER};

/// What the application answers.
pub type Policy = fn(&Event<'_>, &Server) -> Option<Reply<'static>>;

/// What the application answers, on a session with any [`Buffers`] ([`run_session`]).
pub type Decide<'p, B> = dyn FnMut(&Event<'_>, &Server<B>) -> Option<Reply<'static>> + 'p;

/// Accept everything.
pub fn accept_all<B: Buffers>(_: &Event<'_>, _: &Server<B>) -> Option<Reply<'static>> {
    None
}

/// Reject recipients whose local part starts with "bad" (`550 5.1.1`), and MAIL from
/// `spammer@` (`550 5.7.1`).
pub fn picky<B: Buffers>(ev: &Event<'_>, _: &Server<B>) -> Option<Reply<'static>> {
    match ev {
        Event::Rcpt { to: crate::parse::ForwardPath::Mailbox(m), .. } if m.local_part.starts_with("bad") => {
            Some(Reply::NO_SUCH_USER)
        }
        Event::Mail { from: crate::parse::ReversePath::Mailbox(m), .. } if m.local_part == "spammer" => {
            Some(Reply::new(550, Some(crate::reply::EnhancedCode::new(5, 7, 1)), "Go away"))
        }
        _ => None,
    }
}

/// What a session produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transcript {
    /// Events, `Debug`-formatted; data chunks merged as `Data:<escaped bytes>`.
    pub events: Vec<String>,
    /// Every reply byte the server sent.
    pub output: Vec<u8>,
}

impl Transcript {
    /// The reply bytes as text.
    pub fn output_str(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// The message bodies received (merged Data events between DataStart and DataEnd).
    pub fn bodies(&self) -> Vec<String> {
        self.events.iter().filter_map(|e| e.strip_prefix("Data:")).map(str::to_owned).collect()
    }
}

fn escape(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

fn record(t: &mut Transcript, ev: &Event<'_>) {
    // How plaintext after STARTTLS arrives in pieces depends on the split: merge the counts.
    if let Event::PlaintextDiscarded { len } = ev {
        if let Some(last) = t.events.last_mut() {
            if let Some(prev) = last.strip_prefix("PlaintextDiscarded { len: ").and_then(|r| r.strip_suffix(" }")) {
                *last = format!("PlaintextDiscarded {{ len: {} }}", prev.parse::<usize>().unwrap() + len);
                return;
            }
        }
    }
    if let Event::Data(d) = ev {
        if let Some(last) = t.events.last_mut() {
            if let Some(prev) = last.strip_prefix("Data:") {
                *last = format!("Data:{prev}{}", escape(d));
                return;
            }
        }
        t.events.push(format!("Data:{}", escape(d)));
    } else {
        t.events.push(format!("{ev:?}"));
    }
}

fn drain<B: Buffers>(server: &mut Server<B>, t: &mut Transcript) {
    let mut buf = [0u8; 97]; // odd size: exercises partial drains
    loop {
        let n = server.poll_transmit(&mut buf);
        if n == 0 {
            break;
        }
        t.output.extend_from_slice(&buf[..n]);
    }
}

/// Runs `segments` with each segment cut at `cuts(segment_index, segment)`; then again with
/// the smallest output queue the core accepts, asserting the same transcript.
pub fn run_with(
    config: Config,
    policy: Policy,
    segments: &[&[u8]],
    cuts: &dyn Fn(usize, &[u8]) -> Vec<usize>,
) -> Transcript {
    let mut decisions = Vec::new();
    let mut record = |ev: &Event<'_>, s: &Server| {
        let d = policy(ev, s);
        decisions.push((format!("{ev:?}"), d));
        d
    };
    let t = run_session(Server::new(config), &mut record, segments, cuts);
    let (mut out, mut sasl) = (vec![0; MIN_OUTPUT_BUFFER], vec![0; SASL_BUFFER]);
    let small = Server::with_buffers(config, Lent::new(&mut out, &mut sasl)).unwrap();
    let mut replay = decisions.into_iter();
    let mut decide = |ev: &Event<'_>, _: &Server<Lent<'_>>| {
        let (seen, d) = replay.next().expect("the same decisions with the minimum output queue");
        assert_eq!(format!("{ev:?}"), seen, "another event with the minimum output queue");
        d
    };
    let t_small = run_session(small, &mut decide, segments, cuts);
    assert_eq!(t, t_small, "the minimum output queue gives another transcript");
    t
}

/// Runs `segments` on `server` (before its greeting), each cut at
/// `cuts(segment_index, segment)`, with `decide` playing the application.
pub fn run_session<B: Buffers>(
    mut server: Server<B>,
    decide: &mut Decide<'_, B>,
    segments: &[&[u8]],
    cuts: &dyn Fn(usize, &[u8]) -> Vec<usize>,
) -> Transcript {
    let mut t = Transcript::default();
    server.greet("ESMTP test").unwrap();
    drain(&mut server, &mut t);
    let mut buf: Vec<u8> = Vec::new();
    let mut closed = false;
    for (i, seg) in segments.iter().enumerate() {
        let mut points = cuts(i, seg);
        points.retain(|&p| p > 0 && p < seg.len());
        points.sort_unstable();
        points.dedup();
        points.push(seg.len());
        let mut from = 0;
        for p in points {
            if closed {
                break;
            }
            buf.extend_from_slice(&seg[from..p]);
            from = p;
            closed = feed(&mut server, &mut buf, decide, &mut t);
            drain(&mut server, &mut t);
        }
        if server.is_tls_pending() {
            // The client does its handshake after reading the 220: what it sent before is gone.
            server.tls_established().unwrap();
            t.events.push("TLS".into());
        }
    }
    t
}

/// A decision; when the output queue has no room for the reply, drains it and decides again
/// (what a binding does with [`ApiMisuse::ReplyTooLong`]).
fn decide_on<B: Buffers>(server: &mut Server<B>, reply: Option<Reply<'_>>, t: &mut Transcript) {
    let once = |server: &mut Server<B>| match reply {
        None => server.accept(),
        Some(reply) => server.reply(reply),
    };
    match once(server) {
        Err(ApiMisuse::ReplyTooLong) => {
            drain(server, t);
            once(server).unwrap();
        }
        r => r.unwrap(),
    }
}

/// Feeds the buffer until the core needs input; returns true once the session closed.
fn feed<B: Buffers>(server: &mut Server<B>, buf: &mut Vec<u8>, decide: &mut Decide<'_, B>, t: &mut Transcript) -> bool {
    let mut guard = 0;
    loop {
        guard += 1;
        assert!(guard < 1_000_000, "livelock");
        let r = server.handle_input(buf).unwrap();
        let consumed = r.consumed;
        let mut done = false;
        let mut closed = false;
        match r.progress {
            Progress::Event(ev) => {
                record(t, &ev);
                if ev.needs_decision() {
                    let reply = decide(&ev, server);
                    decide_on(server, reply, t);
                    // LMTP: one decision per recipient.
                    while server.is_pending() {
                        decide_on(server, None, t);
                    }
                }
            }
            Progress::NeedInput => done = true,
            Progress::Flush => drain(server, t),
            Progress::Closed => {
                done = true;
                closed = true;
            }
        }
        buf.drain(..consumed);
        if done {
            return closed;
        }
    }
}

/// Runs the script whole.
pub fn run(config: Config, policy: Policy, segments: &[&[u8]]) -> Transcript {
    run_with(config, policy, segments, &|_, _| vec![])
}

/// Runs whole, byte by byte, at every single split point and (for short segments) every pair,
/// asserting that every run gives the same transcript; returns it.
pub fn run_all_splits(config: Config, policy: Policy, segments: &[&[u8]]) -> Transcript {
    let whole = run(config, policy, segments);
    let bytewise = run_with(config, policy, segments, &|_, s| (1..s.len()).collect());
    assert_eq!(whole, bytewise, "byte-at-a-time differs");
    for (i, seg) in segments.iter().enumerate() {
        for p in 1..seg.len() {
            let t = run_with(config, policy, segments, &|j, _| {
                if j == i {
                    vec![p]
                } else {
                    vec![]
                }
            });
            assert_eq!(whole, t, "split of segment {i} at {p} differs");
        }
        if seg.len() <= 160 {
            for p in 1..seg.len() {
                for q in p + 1..seg.len() {
                    let t = run_with(config, policy, segments, &|j, _| {
                        if j == i {
                            vec![p, q]
                        } else {
                            vec![]
                        }
                    });
                    assert_eq!(whole, t, "split of segment {i} at {p},{q} differs");
                }
            }
        }
    }
    whole
}

// ---- one message as DATA and as BDAT ----

/// How a message sent through a server session ended, as the application saw it
/// ([`send_as_data`], [`send_as_bdat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// [`Event::DataEnd`]: the content the application received, escaped as in
    /// [`Transcript::bodies`] (see [`Verdict::accepted`]).
    Accepted(String),
    /// [`Event::DataAborted`].
    Refused {
        /// Why.
        error: DataError,
        /// The reply that refused the message: its first line.
        reply: String,
    },
}

impl Verdict {
    /// The verdict for `body` accepted whole.
    pub fn accepted(body: &[u8]) -> Self {
        Verdict::Accepted(escape(body))
    }
}

const ENVELOPE: &[u8] = b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n";

/// The verdict of a transcript of [`ENVELOPE`], one message, then `NOOP`; panics unless the
/// session is in sync after the message (the `NOOP` answered `250`, nothing else refused).
fn verdict(t: &Transcript) -> Verdict {
    let replies: Vec<String> = t.output_str().split("\r\n").map(str::to_owned).collect();
    assert!(
        replies.iter().rev().find(|l| !l.is_empty()).is_some_and(|l| l == "250 2.0.0 OK"),
        "the NOOP after the message was not answered: {replies:?}"
    );
    let ends: Vec<&String> =
        t.events.iter().filter(|e| e.starts_with("DataEnd") || e.starts_with("DataAborted")).collect();
    assert_eq!(ends.len(), 1, "one end of the message: {:?}", t.events);
    if ends[0].starts_with("DataEnd") {
        assert!(!replies.iter().any(|l| l.starts_with('5')), "{replies:?}");
        return Verdict::Accepted(t.bodies().first().cloned().unwrap_or_default());
    }
    let error = if ends[0].contains("BareLineEnding") {
        DataError::BareLineEnding
    } else if ends[0].contains("TooBig") {
        DataError::TooBig
    } else if ends[0].contains("LineTooLong") {
        DataError::LineTooLong
    } else {
        panic!("{}", ends[0])
    };
    let reply = replies.iter().find(|l| l.starts_with('5')).cloned().expect("a refusal");
    Verdict::Refused { error, reply }
}

/// Dot-stuffs `body` for DATA (a `.` is doubled at the start of the content and after each
/// CRLF, never after a bare CR or LF) and adds the terminator. `body` must be empty or end
/// with CRLF: what DATA can carry.
pub fn stuffed(body: &[u8]) -> Vec<u8> {
    assert!(body.is_empty() || body.ends_with(b"\r\n"), "DATA content ends with CRLF");
    let mut out = Vec::with_capacity(body.len() + 8);
    for (i, &c) in body.iter().enumerate() {
        if c == b'.' && (i == 0 || body[..i].ends_with(b"\r\n")) {
            out.push(b'.');
        }
        out.push(c);
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Sends `body` (empty or ending with CRLF) in one transaction with DATA, dot-stuffed, the
/// content and the `NOOP` after it cut at `cuts`; returns the verdict. The application
/// accepts everything ([`accept_all`]).
pub fn send_as_data(config: Config, body: &[u8], cuts: &[usize]) -> Verdict {
    let mut head = ENVELOPE.to_vec();
    head.extend_from_slice(b"DATA\r\n");
    let mut content = stuffed(body);
    content.extend_from_slice(b"NOOP\r\n");
    let t = run_with(config, accept_all, &[&head, &content], &|i, _| if i == 1 { cuts.to_vec() } else { vec![] });
    verdict(&t)
}

/// Sends `body` in one transaction with BDAT (CHUNKING is switched on), in chunks that end at
/// `chunks` (offsets into `body`; the last chunk, from the last offset to the end, is the
/// `LAST` one, so an offset of `body.len()` makes it `BDAT 0 LAST`), all pipelined with the
/// `NOOP` after them in one segment cut at `cuts`; returns the verdict. The application
/// accepts everything ([`accept_all`]).
pub fn send_as_bdat(mut config: Config, body: &[u8], chunks: &[usize], cuts: &[usize]) -> Verdict {
    config.capabilities.chunking = true;
    let mut ends: Vec<usize> = chunks.iter().copied().filter(|&c| c <= body.len()).collect();
    ends.sort_unstable();
    ends.dedup();
    let mut script = ENVELOPE.to_vec();
    let mut from = 0;
    for end in ends {
        script.extend_from_slice(format!("BDAT {}\r\n", end - from).as_bytes());
        script.extend_from_slice(&body[from..end]);
        from = end;
    }
    script.extend_from_slice(format!("BDAT {} LAST\r\n", body.len() - from).as_bytes());
    script.extend_from_slice(&body[from..]);
    script.extend_from_slice(b"NOOP\r\n");
    let t = run_with(config, accept_all, &[&script], &|_, _| cuts.to_vec());
    verdict(&t)
}

/// The verdict the core must give `body` sent with BDAT, read off the bytes one at a time:
/// refused as too big past `max_message_size`; under [`BarePolicy::Reject`](crate::data::BarePolicy::Reject)
/// refused for a CR not followed by LF (the end of the content included) or an LF not after a
/// CR. The first problem decides, a bare LF counting at its octet and a bare CR at the octet
/// after it (that is where it shows); a tie goes to the bare line ending.
pub fn bdat_reference(config: &Config, body: &[u8]) -> Verdict {
    let max = config.max_message_size.map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let bare = if config.bare_line_endings == crate::data::BarePolicy::Reject {
        (0..body.len()).find_map(|i| match body[i] {
            b'\r' if body.get(i + 1) != Some(&b'\n') => Some(i + 1),
            b'\n' if i == 0 || body[i - 1] != b'\r' => Some(i),
            _ => None,
        })
    } else {
        None
    };
    let line = |reply: Reply<'_>| {
        let mut buf = [0u8; 512];
        let n = reply.write(config.capabilities.enhanced_status_codes, &mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n - 2]).into_owned()
    };
    match bare {
        Some(at) if at <= max => {
            Verdict::Refused { error: DataError::BareLineEnding, reply: line(Reply::BARE_LINE_ENDING) }
        }
        _ if body.len() > max => Verdict::Refused {
            error: DataError::TooBig,
            reply: line(Reply::TOO_BIG.with_text("Chunk exceeds message size limit")),
        },
        _ => Verdict::accepted(body),
    }
}

/// The reply code and the enhanced status code (if any) of a reply line.
fn codes(line: &str) -> (&str, Option<&str>) {
    let mut words = line.splitn(3, ' ');
    let code = words.next().unwrap_or("");
    let esc = words.next().filter(|w| w.split('.').count() == 3 && w.bytes().all(|c| c == b'.' || c.is_ascii_digit()));
    (code, esc)
}

/// The oracle of the `bdat_data` fuzz target: BDAT is exactly as strict as DATA. `body` is
/// sent with BDAT in chunks ending at `chunks` and the session cut at `cuts`, and must get
/// [`bdat_reference`]'s verdict; then `body` (with a CRLF added unless it is empty or ends with
/// one) is sent with DATA and with BDAT, and both must get the same verdict: accepted with the
/// same content, or refused with the same reply code and enhanced status code (and the same
/// [`DataError`], but for one case: a bare CR that is itself the first octet past the size
/// limit is a bare line ending to DATA and too big to BDAT, which must answer the chunk it
/// ends before the octet after it arrives). Set `max_text_line` to `None`: BDAT has no text
/// line limit. Panics on a difference.
pub fn check_data_vs_bdat(config: Config, body: &[u8], chunks: &[usize], cuts: &[usize]) {
    let mut config = config;
    config.capabilities.chunking = true;
    assert_eq!(config.max_text_line, None, "BDAT has no text line limit");
    let bdat = send_as_bdat(config, body, chunks, cuts);
    assert_eq!(bdat, bdat_reference(&config, body), "BDAT against the reference, chunks {chunks:?}");
    let mut body = body.to_vec();
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        body.extend_from_slice(b"\r\n");
    }
    let bdat = send_as_bdat(config, &body, chunks, cuts);
    let data = send_as_data(config, &body, cuts);
    match (&data, &bdat) {
        (Verdict::Accepted(d), Verdict::Accepted(b)) => {
            assert_eq!(d, b, "the same content");
            assert_eq!(d, &escape(&body), "the content sent");
        }
        (Verdict::Refused { error: de, reply: dr }, Verdict::Refused { error: be, reply: br }) => {
            let max = config.max_message_size.and_then(|m| usize::try_from(m).ok());
            let cr_past_limit = max.is_some_and(|m| body.get(m) == Some(&b'\r'));
            if !(*de == DataError::BareLineEnding && *be == DataError::TooBig && cr_past_limit) {
                assert_eq!(de, be, "DATA {data:?}, BDAT {bdat:?}");
                assert_eq!(codes(dr), codes(br), "the same reply codes: DATA {data:?}, BDAT {bdat:?}");
            }
        }
        _ => panic!("DATA {data:?}, BDAT {bdat:?}, body {:?}", escape(&body)),
    }
}

// ---- the client core against the server core ----

/// How [`pair_session`] connects the two cores.
#[derive(Debug, Clone, Copy)]
pub struct PairOptions {
    /// The server offers PIPELINING.
    pub pipelining: bool,
    /// The server offers CHUNKING (the client uses BDAT then).
    pub chunking: bool,
    /// The server offers STARTTLS and the client upgrades first.
    pub starttls: bool,
    /// Bytes moved per pipe step.
    pub pipe: usize,
    /// Bytes offered per `send_body` call.
    pub push: usize,
}

/// A `MAIL FROM` as the server saw it ([`Event::Mail`]), owned; xtext values decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailSeen {
    /// The reverse path: `""` for `<>`, else `local@domain` as written.
    pub from: String,
    /// `SIZE=`.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<Body>,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `ENVID=`, xtext-decoded.
    pub envid: Option<Vec<u8>>,
    /// `AUTH=`: `"<>"` or the xtext-decoded identity.
    pub auth: Option<String>,
    /// `REQUIRETLS`.
    pub requiretls: bool,
    /// `MT-PRIORITY=`.
    pub mt_priority: Option<i8>,
    /// `HOLDFOR=`.
    pub hold_for: Option<u64>,
    /// `HOLDUNTIL=`.
    pub hold_until: Option<String>,
    /// `BY=`.
    pub by: Option<By>,
    /// Unknown parameters, raw, in order.
    pub unknown: Vec<(String, Option<String>)>,
}

impl MailSeen {
    /// Copies what [`Event::Mail`] carries.
    pub fn new(from: &ReversePath<'_>, p: &MailParams<'_>) -> Self {
        Self {
            from: match from {
                ReversePath::Null => String::new(),
                ReversePath::Mailbox(m) => m.to_string(),
            },
            size: p.size,
            body: p.body,
            smtputf8: p.smtputf8,
            ret: p.ret,
            envid: p.envid.map(|x| x.decoded().collect()),
            auth: p.auth.map(|a| match a {
                MailAuth::Empty => "<>".to_string(),
                MailAuth::Identity(x) => String::from_utf8_lossy(&x.decoded().collect::<Vec<u8>>()).into_owned(),
            }),
            requiretls: p.requiretls,
            mt_priority: p.mt_priority,
            hold_for: p.hold_for,
            hold_until: p.hold_until.map(str::to_owned),
            by: p.by,
            unknown: unknown_params(&p.unknown),
        }
    }
}

/// A `RCPT TO` as the server saw it ([`Event::Rcpt`]), owned; xtext values decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptSeen {
    /// The forward path: `postmaster` for `<postmaster>`, else `local@domain` as written.
    pub to: String,
    /// `NOTIFY=`.
    pub notify: Option<Notify>,
    /// `ORCPT=`: the address type and the xtext-decoded address.
    pub orcpt: Option<(String, Vec<u8>)>,
    /// Unknown parameters, raw, in order.
    pub unknown: Vec<(String, Option<String>)>,
}

impl RcptSeen {
    /// Copies what [`Event::Rcpt`] carries.
    pub fn new(to: &ForwardPath<'_>, p: &RcptParams<'_>) -> Self {
        Self {
            to: match to {
                ForwardPath::Postmaster => "postmaster".to_string(),
                ForwardPath::Mailbox(m) => m.to_string(),
            },
            notify: p.notify,
            orcpt: p.orcpt.map(|o| (o.addr_type.to_string(), o.addr.decoded().collect())),
            unknown: unknown_params(&p.unknown),
        }
    }
}

fn unknown_params(u: &UnknownParams<'_>) -> Vec<(String, Option<String>)> {
    u.iter().map(|(k, v)| (k.to_string(), v.map(str::to_owned))).collect()
}

/// What a [`pair_session`] produced.
#[derive(Default, Debug)]
pub struct PairOutcome {
    /// Bodies the server received.
    pub bodies: Vec<Vec<u8>>,
    /// Every `MAIL FROM` the server reported, in order.
    pub server_mail: Vec<MailSeen>,
    /// Every `RCPT TO` the server reported, in order (accepted or not).
    pub server_rcpts: Vec<RcptSeen>,
    /// Local parts of the recipients the server accepted.
    pub server_accepted: Vec<String>,
    /// Client per-recipient results (accepted?).
    pub client_results: Vec<bool>,
    /// Client events, `Debug`-formatted.
    pub client_events: Vec<String>,
    /// The client saw the message delivered.
    pub delivered: bool,
    /// Both sides went through STARTTLS.
    pub tls: bool,
}

/// The server's policy in [`pair_session`]: refuse recipients whose local part starts with "bad".
/// Records MAIL and RCPT as the server saw them.
fn decide(ev: &server::Event<'_>, out: &mut PairOutcome) -> Option<Reply<'static>> {
    match ev {
        server::Event::Mail { from, params } => {
            out.server_mail.push(MailSeen::new(from, params));
            None
        }
        server::Event::Rcpt { to, params } => {
            out.server_rcpts.push(RcptSeen::new(to, params));
            let local = match to {
                ForwardPath::Mailbox(m) => m.local_part,
                ForwardPath::Postmaster => "postmaster",
            };
            if local.starts_with("bad") {
                Some(Reply::NO_SUCH_USER)
            } else {
                out.server_accepted.push(local.to_string());
                None
            }
        }
        _ => None,
    }
}

/// The canonical form of a body as it travels: every CR, LF and CRLF becomes CRLF, and a
/// non-empty body ends with CRLF.
pub fn canonical(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Runs the client core against the server core in memory, through pipes that move
/// `opts.pipe` bytes per step; the client sends one message from `from` to `rcpts`, then QUIT.
pub fn pair_session(opts: &PairOptions, from: &str, rcpts: &[String], body: &[u8]) -> PairOutcome {
    let to: Vec<Recipient<'_>> = rcpts.iter().map(|r| Recipient::new(r)).collect();
    pair_session_with(opts, &|_| {}, &Envelope::new(from, &to), body)
}

/// [`pair_session`] with a whole envelope (sender, parameters, recipients with DSN
/// parameters; at most 8 recipients), and `server` adjusting the server's configuration after
/// `opts` was applied (e.g. to withdraw DSN or SIZE).
pub fn pair_session_with(
    opts: &PairOptions,
    server: &dyn Fn(&mut server::Config),
    envelope: &Envelope<'_>,
    body: &[u8],
) -> PairOutcome {
    let mut sconfig = server::Config::new("mx.test");
    sconfig.capabilities.pipelining = opts.pipelining;
    sconfig.capabilities.chunking = opts.chunking;
    sconfig.capabilities.starttls = opts.starttls;
    server(&mut sconfig);
    let mut server = Server::new(sconfig);
    server.greet("ESMTP").unwrap();
    let mut cconfig = client::Config::new("client.test");
    cconfig.chunking = true;
    let mut client: Client<8> = Client::new(cconfig);

    let mut out = PairOutcome::default();
    let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
    let (mut s_in, mut c_in) = (Vec::new(), Vec::new());
    let mut body_rest = body;
    let mut sent_mail = false;
    let mut buf = [0u8; 333];
    for _round in 0..100_000 {
        // Client → pipe.
        loop {
            let n = client.poll_transmit(&mut buf);
            if n == 0 {
                break;
            }
            c2s.extend_from_slice(&buf[..n]);
        }
        // Pipe → server, a piece at a time.
        let n = opts.pipe.min(c2s.len());
        s_in.extend(c2s.drain(..n));
        loop {
            let r = server.handle_input(&s_in).unwrap();
            let consumed = r.consumed;
            let mut stop = false;
            match r.progress {
                server::Progress::Event(ev) => {
                    if let server::Event::Data(d) = ev {
                        out.bodies.last_mut().expect("DataStart first").extend_from_slice(d);
                    }
                    if let server::Event::DataStart { .. } = ev {
                        out.bodies.push(Vec::new());
                    }
                    if ev.needs_decision() {
                        match decide(&ev, &mut out) {
                            None => server.accept().unwrap(),
                            Some(reply) => server.reply(reply).unwrap(),
                        }
                    }
                }
                _ => stop = true,
            }
            s_in.drain(..consumed);
            if stop {
                break;
            }
        }
        loop {
            let n = server.poll_transmit(&mut buf);
            if n == 0 {
                break;
            }
            s2c.extend_from_slice(&buf[..n]);
        }
        // Pipe → client.
        let n = opts.pipe.min(s2c.len());
        c_in.extend(s2c.drain(..n));
        loop {
            let r = client.handle_input(&c_in).unwrap();
            let consumed = r.consumed;
            let mut stop = false;
            match r.progress {
                client::Progress::Event(ev) => {
                    out.client_events.push(format!("{ev:?}"));
                    match ev {
                        client::Event::TlsHandshake => {
                            assert!(server.is_tls_pending());
                            server.tls_established().unwrap();
                            client.tls_established().unwrap();
                            out.tls = true;
                        }
                        client::Event::Delivered { .. } => out.delivered = true,
                        client::Event::Error(e) => panic!("client error {e:?}"),
                        _ => {}
                    }
                }
                client::Progress::NeedInput => stop = true,
                client::Progress::Closed => {
                    out.client_results =
                        client.recipient_results().iter().map(|r| r.is_some_and(|r| r.is_accepted())).collect();
                    return out;
                }
            }
            c_in.drain(..consumed);
            if stop {
                break;
            }
        }
        // The application.
        if client.is_ready() {
            if opts.starttls && !client.is_tls() {
                client.starttls().unwrap();
            } else if !sent_mail {
                client.send_mail(envelope).unwrap();
                sent_mail = true;
            } else {
                client.quit().unwrap();
            }
        }
        while client.is_sending_body() {
            if body_rest.is_empty() {
                match client.finish_body() {
                    Ok(()) => {}
                    Err(client::ApiError::OutputFull) => break,
                    Err(e) => panic!("{e:?}"),
                }
                break;
            }
            let take = opts.push.min(body_rest.len());
            let n = client.send_body(&body_rest[..take]).unwrap();
            body_rest = &body_rest[n..];
            if n == 0 {
                break;
            }
        }
    }
    panic!("livelock: {:?}", out.client_events);
}

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
