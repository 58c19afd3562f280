//! The client core against the server core, in memory, through pipes that cut the bytes at
//! arbitrary points: the server must see exactly the envelope the client was given (sender,
//! MAIL and RCPT parameters, recipients) and the canonical form of the body it sent.

use proptest::prelude::*;
use smtp_proto::client::{self, Client, Envelope, ErrorKind, Recipient};
use smtp_proto::parse::{Body, Notify, Ret};
use smtp_proto::testing::{canonical, pair_session, pair_session_with, MailSeen, PairOptions, RcptSeen};

/// One recipient: address, `NOTIFY`, `ORCPT` (unencoded).
type Rcpt = (String, Option<Notify>, Option<String>);

/// An owned envelope, as the strategies generate it.
#[derive(Debug, Clone)]
struct Env {
    from: String,
    size: Option<u64>,
    eight_bit: bool,
    ret: Option<Ret>,
    envid: Option<String>,
    rcpts: Vec<Rcpt>,
}

impl Env {
    fn simple(from: &str, rcpts: &[&str]) -> Self {
        Env {
            from: from.to_string(),
            size: None,
            eight_bit: false,
            ret: None,
            envid: None,
            rcpts: rcpts.iter().map(|r| (r.to_string(), None, None)).collect(),
        }
    }
}

/// What the server offers beyond [`PairOptions`].
#[derive(Debug, Clone, Copy)]
struct Offer {
    dsn: bool,
    size: bool,
}

const FULL_OFFER: Offer = Offer { dsn: true, size: true };

fn local_part(r: &str) -> &str {
    r.split('@').next().unwrap()
}

fn check(opts: &PairOptions, offer: Offer, env: &Env, body: &[u8]) {
    let to: Vec<Recipient<'_>> = env
        .rcpts
        .iter()
        .map(|(a, notify, orcpt)| Recipient { address: a, notify: *notify, orcpt: orcpt.as_deref() })
        .collect();
    let mut envelope = Envelope::new(&env.from, &to);
    envelope.size = env.size;
    envelope.eight_bit = env.eight_bit;
    envelope.ret = env.ret;
    envelope.envid = env.envid.as_deref();
    let out = pair_session_with(
        opts,
        &|c| {
            c.capabilities.dsn = offer.dsn;
            c.capabilities.size = offer.size;
        },
        &envelope,
        body,
    );

    // The server saw exactly one MAIL FROM, with exactly what the client was asked to send:
    // DSN parameters only when DSN is offered, SIZE only when SIZE is, SMTPUTF8 exactly when an
    // address needs it, and nothing else.
    let utf8 = !env.from.is_ascii() || env.rcpts.iter().any(|r| !r.0.is_ascii());
    let mail = MailSeen {
        from: env.from.clone(),
        size: env.size.filter(|_| offer.size),
        body: env.eight_bit.then_some(Body::EightBitMime),
        smtputf8: utf8,
        ret: env.ret.filter(|_| offer.dsn),
        envid: env.envid.as_ref().filter(|_| offer.dsn).map(|e| e.as_bytes().to_vec()),
        ..MailSeen::default()
    };
    assert_eq!(out.server_mail, [mail], "{:?}", out.client_events);
    let rcpts: Vec<RcptSeen> = env
        .rcpts
        .iter()
        .map(|(a, notify, orcpt)| RcptSeen {
            to: a.clone(),
            notify: notify.filter(|_| offer.dsn),
            orcpt: orcpt.as_ref().filter(|_| offer.dsn).map(|o| ("rfc822".to_string(), o.as_bytes().to_vec())),
            unknown: vec![],
        })
        .collect();
    assert_eq!(out.server_rcpts, rcpts);

    let expect: Vec<bool> = env.rcpts.iter().map(|r| !r.0.starts_with("bad")).collect();
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
        env.rcpts.iter().filter(|r| !r.0.starts_with("bad")).map(|r| local_part(&r.0).to_string()).collect();
    assert_eq!(out.server_accepted, accepted);
}

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(0u8), b'a'..=b'z', any::<u8>()],
        0..400,
    )
}

fn domain_strategy() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "example.org",
        "client.test",
        "sub-1.Example.NET",
        "[192.0.2.1]",
        "[IPv6:2001:db8::1]",
        "b\u{fc}cher.example",
    ])
}

/// A dot-atom local part (any atext), sometimes with a UTF-8 character.
fn local_strategy() -> impl Strategy<Value = String> {
    (
        "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,6}){0,2}",
        prop::option::weighted(0.2, prop::sample::select(vec!["\u{e9}", "\u{65e5}\u{672c}", "\u{1f600}"])),
    )
        .prop_map(|(l, u)| format!("{l}{}", u.unwrap_or("")))
}

/// The null sender `<>` or a mailbox.
fn sender_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        3 => (local_strategy(), domain_strategy()).prop_map(|(l, d)| format!("{l}@{d}")),
    ]
}

fn notify_strategy() -> impl Strategy<Value = Option<Notify>> {
    prop::option::of(prop_oneof![Just(Notify::NEVER), (1u8..=7).prop_map(Notify)])
}

/// Text the client xtext-encodes: printable ASCII (space, `+`, `=` included) and UTF-8.
fn xtext_source(max: usize) -> impl Strategy<Value = String> {
    prop::string::string_regex(&format!("[ -~\u{e9}\u{65e5}]{{1,{max}}}")).unwrap()
}

fn rcpt_strategy() -> impl Strategy<Value = Rcpt> {
    let address = prop_oneof![
        1 => Just("postmaster".to_string()),
        8 => (any::<bool>(), 0..100u32, local_strategy(), domain_strategy())
            .prop_map(|(bad, n, l, d)| format!("{}{n}{l}@{d}", if bad { "bad" } else { "u" })),
    ];
    (address, notify_strategy(), prop::option::of(xtext_source(30)))
}

fn envelope_strategy() -> impl Strategy<Value = Env> {
    (
        sender_strategy(),
        prop::option::of(0..=25u64 << 20),
        any::<bool>(),
        prop::option::of(prop_oneof![Just(Ret::Full), Just(Ret::Hdrs)]),
        // ENVID is at most 100 characters once xtext-encoded (RFC 3461 §4.4): 16 × "+E6+97+A5".
        prop::option::of(prop::string::string_regex("[ -~\u{e9}]{1,16}").unwrap()),
        prop::collection::vec(rcpt_strategy(), 1..=5),
    )
        .prop_map(|(from, size, eight_bit, ret, envid, rcpts)| Env { from, size, eight_bit, ret, envid, rcpts })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn round_trip(
        env in envelope_strategy(),
        body in body_strategy(),
        pipelining in any::<bool>(),
        chunking in any::<bool>(),
        starttls in any::<bool>(),
        dsn in any::<bool>(),
        size in any::<bool>(),
        pipe in 1..80usize,
        push in 1..120usize,
    ) {
        check(&PairOptions { pipelining, chunking, starttls, pipe, push }, Offer { dsn, size }, &env, &body);
    }
}

#[test]
fn fixed_cases() {
    let plain = Env::simple("sender@client.test", &["a@x.test", "bad@x.test", "b@x.test"]);
    let null_with_params = Env {
        from: String::new(),
        size: Some(12345),
        eight_bit: true,
        ret: Some(Ret::Hdrs),
        envid: Some("id+1=2 \u{e9}".to_string()),
        rcpts: vec![
            ("a@x.test".to_string(), Some(Notify(Notify::SUCCESS | Notify::DELAY)), Some("Orig+=@x".to_string())),
            ("bad@x.test".to_string(), Some(Notify::NEVER), None),
            ("postmaster".to_string(), None, Some("p\u{e9}@x".to_string())),
        ],
    };
    let utf8 = Env::simple("jos\u{e9}@b\u{fc}cher.example", &["\u{65e5}@x.test", "b@[192.0.2.1]"]);
    for pipelining in [false, true] {
        for chunking in [false, true] {
            for starttls in [false, true] {
                for pipe in [1, 7, 4096] {
                    let opts = PairOptions { pipelining, chunking, starttls, pipe, push: 5 };
                    for offer in [FULL_OFFER, Offer { dsn: false, size: false }] {
                        check(&opts, offer, &plain, b".leading dot\n.\r\nbare\rCR\0NUL\r\n.\r\nend");
                        check(&opts, offer, &null_with_params, b"");
                        check(&opts, offer, &utf8, b"x");
                        check(&opts, offer, &Env::simple("s@x", &["bad1@x"]), b"never sent");
                    }
                }
            }
        }
    }
}

/// The driver records what it claims to: a different sender or parameter than the one sent
/// would fail [`check`].
#[test]
fn the_driver_records_mail_and_rcpt() {
    let opts = PairOptions { pipelining: true, chunking: false, starttls: false, pipe: 4096, push: 64 };
    let out = pair_session(&opts, "", &["postmaster".to_string(), "bad@x".to_string()], b"hi\r\n");
    assert_eq!(out.server_mail, [MailSeen::default()]);
    assert_eq!(out.server_rcpts.iter().map(|r| r.to.as_str()).collect::<Vec<_>>(), ["postmaster", "bad@x"]);
    assert_eq!(out.server_accepted, ["postmaster"]);
    assert_eq!(out.bodies, [b"hi\r\n".to_vec()]);
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

/// Regression (found by the `client_pair` fuzz target): a body line past the server's text line
/// limit (1000 octets with CRLF) is refused over DATA after its real end, and goes through over
/// BDAT, where the limit does not apply; the recipients' results stay the same either way.
#[test]
fn a_line_past_the_text_limit_over_data_and_over_bdat() {
    let rcpts = ["a".to_string(), "b".to_string()].map(|l| format!("{l}@x.test"));
    for (len, fits) in [(998, true), (999, false), (1021, false)] {
        let body = vec![b'x'; len];
        for chunking in [false, true] {
            let opts = PairOptions { pipelining: true, chunking, starttls: false, pipe: 64, push: 64 };
            let out = pair_session(&opts, "s@x.test", &rcpts, &body);
            assert_eq!(out.client_results, [true, true]);
            let delivered = fits || chunking;
            assert_eq!(out.delivered, delivered, "{len} octets, chunking {chunking}");
            if delivered {
                assert_eq!(out.bodies, vec![canonical(&body)]);
            }
        }
    }
}
