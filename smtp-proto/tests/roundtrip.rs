//! The client core against the server core, in memory, through pipes that cut the bytes at
//! arbitrary points: the server must see exactly the canonical form of what the client sent.

use proptest::prelude::*;
use smtp_proto::client::{self, Client, Envelope, ErrorKind, Recipient};
use smtp_proto::parse::ForwardPath;
use smtp_proto::server::{self, Server};
use smtp_proto::Reply;

struct Opts {
    pipelining: bool,
    chunking: bool,
    starttls: bool,
    /// Bytes moved per pipe step.
    pipe: usize,
    /// Bytes offered per `send_body` call.
    push: usize,
}

#[derive(Default, Debug)]
struct Outcome {
    /// Bodies the server received.
    bodies: Vec<Vec<u8>>,
    /// Recipients the server accepted.
    server_accepted: Vec<String>,
    /// Client per-recipient results (accepted?).
    client_results: Vec<bool>,
    client_events: Vec<String>,
    delivered: bool,
    tls: bool,
}

/// The server's policy: refuse recipients whose local part starts with "bad".
fn decide(ev: &server::Event<'_>, out: &mut Outcome) -> Option<Reply<'static>> {
    match ev {
        server::Event::Rcpt { to: ForwardPath::Mailbox(m), .. } => {
            if m.local_part.starts_with("bad") {
                Some(Reply::NO_SUCH_USER)
            } else {
                out.server_accepted.push(m.local_part.to_string());
                None
            }
        }
        _ => None,
    }
}

fn canonical(body: &[u8]) -> Vec<u8> {
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

fn run(opts: &Opts, from: &str, rcpts: &[String], body: &[u8]) -> Outcome {
    let mut sconfig = server::Config::new("mx.test");
    sconfig.capabilities.pipelining = opts.pipelining;
    sconfig.capabilities.chunking = opts.chunking;
    sconfig.capabilities.starttls = opts.starttls;
    let mut server = Server::new(sconfig);
    server.greet("ESMTP").unwrap();
    let mut cconfig = client::Config::new("client.test");
    cconfig.chunking = true;
    let mut client: Client<8> = Client::new(cconfig);
    let to: Vec<Recipient<'_>> = rcpts.iter().map(|r| Recipient::new(r)).collect();
    let envelope = Envelope::new(from, &to);

    let mut out = Outcome::default();
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
                client.send_mail(&envelope).unwrap();
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

fn check(opts: &Opts, rcpts: &[String], body: &[u8]) {
    let out = run(opts, "sender@client.test", rcpts, body);
    let expect: Vec<bool> = rcpts.iter().map(|r| !r.starts_with("bad")).collect();
    assert_eq!(out.client_results, expect);
    assert_eq!(out.tls, opts.starttls);
    if expect.iter().any(|a| *a) {
        assert!(out.delivered, "{:?}", out.client_events);
        assert_eq!(out.bodies.len(), 1);
        assert_eq!(out.bodies[0].escape_ascii().to_string(), canonical(body).escape_ascii().to_string());
    } else {
        assert!(!out.delivered);
        assert!(out.bodies.is_empty());
        assert!(out.client_events.iter().any(|e| e.contains("NoValidRecipients")), "{:?}", out.client_events);
    }
    let accepted: Vec<String> =
        rcpts.iter().filter(|r| !r.starts_with("bad")).map(|r| r.split('@').next().unwrap().to_string()).collect();
    assert_eq!(out.server_accepted, accepted);
}

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(0u8), b'a'..=b'z', any::<u8>()],
        0..400,
    )
}

fn rcpt_strategy() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec((any::<bool>(), 0..100u32), 1..=5).prop_map(|v| {
        v.into_iter().map(|(bad, n)| format!("{}{n}@example.org", if bad { "bad" } else { "u" })).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn round_trip(
        rcpts in rcpt_strategy(),
        body in body_strategy(),
        pipelining in any::<bool>(),
        chunking in any::<bool>(),
        starttls in any::<bool>(),
        pipe in 1..80usize,
        push in 1..120usize,
    ) {
        check(&Opts { pipelining, chunking, starttls, pipe, push }, &rcpts, &body);
    }
}

#[test]
fn fixed_cases() {
    let rcpts = vec!["a@x.test".to_string(), "bad@x.test".to_string(), "b@x.test".to_string()];
    for pipelining in [false, true] {
        for chunking in [false, true] {
            for starttls in [false, true] {
                for pipe in [1, 7, 4096] {
                    let opts = Opts { pipelining, chunking, starttls, pipe, push: 5 };
                    check(&opts, &rcpts, b".leading dot\n.\r\nbare\rCR\0NUL\r\n.\r\nend");
                    check(&opts, &rcpts, b"");
                    check(&opts, &["bad1@x".to_string()], b"never sent");
                }
            }
        }
    }
}

#[test]
fn starttls_response_injection_from_a_fake_server() {
    let mut client: Client<4> = Client::new(client::Config::new("c"));
    let mut events = Vec::new();
    let mut feed = |client: &mut Client<4>, mut input: &[u8]| loop {
        let r = client.handle_input(input).unwrap();
        input = &input[r.consumed..];
        match r.progress {
            client::Progress::Event(ev) => events.push(format!("{ev:?}")),
            _ => return,
        }
    };
    feed(&mut client, b"220 fake ESMTP\r\n");
    feed(&mut client, b"250-fake\r\n250 STARTTLS\r\n");
    client.starttls().unwrap();
    let mut buf = [0u8; 64];
    while client.poll_transmit(&mut buf) > 0 {}
    feed(&mut client, b"220 Ready\r\n250-injected\r\n");
    assert!(client.is_closed());
    assert_eq!(client.error().unwrap().kind, ErrorKind::ResponseInjection);
    assert_eq!(client.poll_transmit(&mut buf), 0, "nothing more is sent");
    assert!(!events.iter().any(|e| e.contains("TlsHandshake")));
}
