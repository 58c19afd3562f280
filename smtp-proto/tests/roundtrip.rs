//! The client core against the server core, in memory, through pipes that cut the bytes at
//! arbitrary points: the server must see exactly the canonical form of what the client sent.

use proptest::prelude::*;
use smtp_proto::client::{self, Client, ErrorKind};
use smtp_proto::testing::{canonical, pair_session, PairOptions};

fn check(opts: &PairOptions, rcpts: &[String], body: &[u8]) {
    let out = pair_session(opts, "sender@client.test", rcpts, body);
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
        check(&PairOptions { pipelining, chunking, starttls, pipe, push }, &rcpts, &body);
    }
}

#[test]
fn fixed_cases() {
    let rcpts = vec!["a@x.test".to_string(), "bad@x.test".to_string(), "b@x.test".to_string()];
    for pipelining in [false, true] {
        for chunking in [false, true] {
            for starttls in [false, true] {
                for pipe in [1, 7, 4096] {
                    let opts = PairOptions { pipelining, chunking, starttls, pipe, push: 5 };
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
