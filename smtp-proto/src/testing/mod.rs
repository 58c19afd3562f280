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

mod bdat;
mod milter;
mod pair;
pub use bdat::*;
pub use milter::*;
pub use pair::*;
