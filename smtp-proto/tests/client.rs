//! Client sessions against scripted server replies: every script runs whole, byte by byte and
//! split at every index of every server segment, and must give the same events and bytes.

use smtp_proto::client::{
    ApiError, Argument, Client, Config, Envelope, ErrorKind, Event, Extension, Progress, Recipient, Step,
};
use smtp_proto::data::BarePolicy;
use smtp_proto::parse::params::{Notify, Ret};
use smtp_proto::parse::reply::{parse_reply, ReplyError, ReplyLimits};
use smtp_proto::parse::Status;
use smtp_proto::sasl::Credentials;
use smtp_proto::EnhancedCode;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Whole,
    Bytes,
    Split { feed: usize, at: usize },
}

struct Session {
    client: Client<8>,
    mode: Mode,
    feeds: usize,
    events: Vec<String>,
    output: Vec<u8>,
    buf: Vec<u8>,
}

impl Session {
    fn new(config: Config, mode: Mode) -> Self {
        Session { client: Client::new(config), mode, feeds: 0, events: vec![], output: vec![], buf: vec![] }
    }

    fn drain(&mut self) {
        let mut out = [0u8; 37];
        loop {
            let n = self.client.poll_transmit(&mut out);
            if n == 0 {
                break;
            }
            self.output.extend_from_slice(&out[..n]);
        }
    }

    /// The server sends `bytes` (cut according to the mode).
    fn feed(&mut self, bytes: &[u8]) {
        let cuts: Vec<usize> = match self.mode {
            Mode::Whole => vec![],
            Mode::Bytes => (1..bytes.len()).collect(),
            Mode::Split { feed, at } if feed == self.feeds && at < bytes.len() => vec![at],
            Mode::Split { .. } => vec![],
        };
        self.feeds += 1;
        let mut from = 0;
        for p in cuts.into_iter().chain([bytes.len()]) {
            self.buf.extend_from_slice(&bytes[from..p]);
            from = p;
            self.pump();
        }
    }

    fn pump(&mut self) {
        for _ in 0..10_000 {
            let r = self.client.handle_input(&self.buf).unwrap();
            let consumed = r.consumed;
            let stop = match r.progress {
                Progress::Event(ev) => {
                    self.events.push(format!("{ev:?}"));
                    false
                }
                Progress::NeedInput => true,
                Progress::Closed => {
                    // Once, however many reads arrive after the close.
                    if self.events.last().is_none_or(|e| e != "Closed") {
                        self.events.push("Closed".into());
                    }
                    true
                }
            };
            self.buf.drain(..consumed);
            self.drain();
            if stop {
                return;
            }
        }
        panic!("livelock");
    }

    fn body(&mut self, mut body: &[u8]) {
        while !body.is_empty() {
            let n = self.client.send_body(body).unwrap();
            body = &body[n..];
            self.drain();
        }
        self.client.finish_body().unwrap();
        self.drain();
    }

    fn output_str(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

/// Runs `script` whole, byte by byte and split at every index of every feed; all must agree.
fn all_splits(config: Config, script: impl Fn(&mut Session)) -> Session {
    let run = |mode| {
        let mut s = Session::new(config, mode);
        script(&mut s);
        s
    };
    let whole = run(Mode::Whole);
    let check = |s: Session, what: &str| {
        assert_eq!(s.events, whole.events, "{what}: events differ");
        assert_eq!(s.output, whole.output, "{what}: output differs");
    };
    check(run(Mode::Bytes), "byte by byte");
    for feed in 0..whole.feeds {
        for at in 1..600 {
            let s = run(Mode::Split { feed, at });
            check(s, &format!("split feed {feed} at {at}"));
        }
    }
    whole
}

const EHLO_FULL: &[u8] = b"250-mx.test hi\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-DSN\r\n\
250-AUTH PLAIN LOGIN XOAUTH2\r\n250-STARTTLS\r\n250-X-CUSTOM a b\r\n250 ENHANCEDSTATUSCODES\r\n";

fn greet(s: &mut Session, ehlo: &[u8]) {
    s.feed(b"220 mx.test ESMTP\r\n");
    s.feed(ehlo);
}

fn to(addrs: &[&'static str]) -> Vec<Recipient<'static>> {
    addrs.iter().map(|a| Recipient::new(a)).collect()
}

#[test]
fn pipelined_session_with_refusals() {
    let s = all_splits(Config::new("client.test"), |s| {
        greet(s, EHLO_FULL);
        assert!(s.client.is_ready());
        let caps = s.client.capabilities();
        assert!(caps.pipelining && caps.dsn && caps.starttls && caps.enhanced_status_codes);
        assert_eq!(s.client.size_limit(), Some(1000));
        let rcpts = to(&["a@x.test", "bad@x.test", "c@x.test"]);
        s.client.send_mail(&Envelope::new("me@client.test", &rcpts)).unwrap();
        s.drain();
        s.feed(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n354 go\r\n");
        assert!(s.client.is_sending_body());
        s.body(b".dot\nbare\rcr\r\n");
        s.feed(b"250 2.0.0 queued as X\r\n");
        let r = s.client.recipient_results();
        assert_eq!(r.iter().map(|r| r.unwrap().is_accepted()).collect::<Vec<_>>(), [true, false, true]);
        assert_eq!(r[1].unwrap().enhanced, Some(EnhancedCode::new(5, 1, 1)));
        s.client.quit().unwrap();
        s.drain();
        s.feed(b"221 bye\r\n");
        assert!(s.client.is_closed());
    });
    assert_eq!(
        s.output_str(),
        "EHLO client.test\r\nMAIL FROM:<me@client.test> SIZE=0\r\n".replace(" SIZE=0", "").to_string()
            + "RCPT TO:<a@x.test>\r\nRCPT TO:<bad@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n\
               ..dot\r\nbare\r\ncr\r\n.\r\nQUIT\r\n"
    );
    let ev = &s.events;
    assert!(ev[0].starts_with("Greeting"));
    assert!(ev[1].starts_with("Capabilities"));
    assert!(ev[2].starts_with("Reply { command: Mail"));
    assert!(ev[4].starts_with("Reply { command: Rcpt, recipient: Some(1)"));
    assert_eq!(ev[6], "ReadyForData");
    assert!(ev[7].starts_with("Delivered"));
    assert_eq!(ev[8], "Closed");
}

#[test]
fn unknown_keywords_stay_accessible() {
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    s.feed(b"220 hi\r\n");
    let input = EHLO_FULL;
    let r = s.client.handle_input(input).unwrap();
    let Progress::Event(Event::Capabilities { reply, esmtp: true }) = r.progress else { panic!("{r:?}") };
    assert!(reply.text_lines().any(|l| l == b"X-CUSTOM a b"));
    assert_eq!(reply.lines().count(), 9);
}

#[test]
fn one_at_a_time_without_pipelining() {
    let s = all_splits(Config::new("c"), |s| {
        greet(s, b"250-mx\r\n250 DSN\r\n");
        let rcpts = to(&["a@x", "b@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        assert_eq!(s.client.timeout(), Some(Duration::from_secs(300)));
        s.feed(b"250 ok\r\n");
        s.feed(b"550 no\r\n");
        s.feed(b"250 ok\r\n");
        assert_eq!(s.client.timeout(), Some(Duration::from_secs(120)));
        s.feed(b"354 go\r\n");
        s.body(b"hi");
        assert_eq!(s.client.timeout(), Some(Duration::from_secs(600)));
        s.feed(b"250 ok\r\n");
    });
    // Each command left only after the previous reply: check the order with the events.
    assert_eq!(s.output_str(), "EHLO c\r\nMAIL FROM:<m@c>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\nhi\r\n.\r\n");
}

#[test]
fn commands_are_released_one_by_one() {
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    greet(&mut s, b"250 mx\r\n");
    s.output.clear();
    let rcpts = to(&["a@x", "b@x"]);
    s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
    s.drain();
    assert_eq!(s.output_str(), "MAIL FROM:<m@c>\r\n");
    s.feed(b"250 ok\r\n");
    assert_eq!(s.output_str(), "MAIL FROM:<m@c>\r\nRCPT TO:<a@x>\r\n");
    // MAIL accepted, then every recipient refused: DATA is never sent, RSET is.
    s.feed(b"550 no\r\n");
    s.feed(b"550 no\r\n");
    assert_eq!(s.output_str(), "MAIL FROM:<m@c>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nRSET\r\n");
    s.feed(b"250 ok\r\n");
    assert!(s.events.last().unwrap().contains("Failed(Error { step: Rcpt, kind: NoValidRecipients"));
    assert!(s.client.is_ready());
}

#[test]
fn all_refused_pipelined_sends_rset() {
    let s = all_splits(Config::new("c"), |s| {
        greet(s, b"250-mx\r\n250 PIPELINING\r\n");
        let rcpts = to(&["a@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.feed(b"250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n");
        s.feed(b"250 reset\r\n");
        assert!(s.client.is_ready());
    });
    assert!(s.output_str().ends_with("DATA\r\nRSET\r\n"));
    assert!(s.events.last().unwrap().starts_with("Failed(Error { step: Rcpt, kind: NoValidRecipients"));
}

#[test]
fn mail_refused() {
    let s = all_splits(Config::new("c"), |s| {
        greet(s, b"250 mx\r\n");
        let rcpts = to(&["a@x", "b@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.feed(b"550 5.7.1 go away\r\n");
        s.feed(b"250 ok\r\n");
    });
    assert_eq!(s.output_str(), "EHLO c\r\nMAIL FROM:<m@c>\r\nRSET\r\n");
    let last = s.events.last().unwrap();
    assert!(last.contains("step: Mail, kind: Refused") && last.contains("go away"), "{last}");
}

#[test]
fn helo_fallback() {
    for code in ["500", "502"] {
        let reply = format!("{code} 5.5.1 what\r\n");
        let s = all_splits(Config::new("c"), |s| {
            s.feed(b"220 old\r\n");
            s.feed(reply.as_bytes());
            s.feed(b"250 old.test\r\n");
            assert!(!s.client.is_esmtp());
            assert!(s.client.is_ready());
        });
        assert_eq!(s.output_str(), "EHLO c\r\nHELO c\r\n");
        assert!(s.events[2].starts_with("Capabilities") && s.events[2].ends_with("esmtp: false }"));
    }
    // Other refusals of EHLO are fatal (QUIT goes out).
    let s = all_splits(Config::new("c"), |s| {
        s.feed(b"220 x\r\n");
        s.feed(b"554 no\r\n");
        s.feed(b"221 bye\r\n");
    });
    assert_eq!(s.output_str(), "EHLO c\r\nQUIT\r\n");
    assert!(s.events[1].starts_with("Error(Error { step: Ehlo, kind: Refused"));
    assert_eq!(s.events[2], "Closed");
}

#[test]
fn greeting_refused_and_421() {
    let s = all_splits(Config::new("c"), |s| {
        s.feed(b"554 5.3.2 not accepting\r\n");
        s.feed(b"221 bye\r\n");
    });
    assert_eq!(s.output_str(), "QUIT\r\n");
    assert!(s.events[0].contains("step: Greeting, kind: Refused"));
    let s = all_splits(Config::new("c"), |s| {
        greet(s, b"250 mx\r\n");
        let rcpts = to(&["a@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.feed(b"421 4.3.2 shutting down\r\n");
    });
    assert!(s.events[s.events.len() - 2].contains("step: Mail, kind: Refused"), "{:?}", s.events);
    assert_eq!(s.events.last().unwrap(), "Closed");
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    greet(&mut s, b"250 mx\r\n");
    s.feed(b"250 unexpected\r\n");
    assert!(s.events[s.events.len() - 2].contains("UnexpectedReply"));
    assert!(s.client.is_closed());
}

#[test]
fn command_injection_refused_before_writing() {
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    greet(&mut s, EHLO_FULL);
    s.output.clear();
    let bad = [
        ("m@c\r\nRCPT TO:<x@y>", "a@x", Argument::Sender),
        ("m@c", "a@x\r\nDATA", Argument::Recipient(0)),
        ("m@c", "a@x\n", Argument::Recipient(0)),
        ("m@c", "a\0@x", Argument::Recipient(0)),
        ("m@c", "a@x> NOTIFY=NEVER", Argument::Recipient(0)),
        ("m@\x1bc", "a@x", Argument::Sender),
    ];
    for (from, rcpt, what) in bad {
        let rcpts = [Recipient::new(rcpt)];
        assert_eq!(s.client.send_mail(&Envelope::new(from, &rcpts)), Err(ApiError::ForbiddenCharacter(what)));
    }
    let rcpts = [Recipient { address: "a@x", notify: None, orcpt: Some("o\r\n@x") }];
    assert_eq!(
        s.client.send_mail(&Envelope::new("m@c", &rcpts)),
        Err(ApiError::ForbiddenCharacter(Argument::Orcpt(0)))
    );
    let rcpts = to(&["a@x"]);
    let mut env = Envelope::new("m@c", &rcpts);
    env.envid = Some("id\r\n");
    assert_eq!(s.client.send_mail(&env), Err(ApiError::ForbiddenCharacter(Argument::EnvId)));
    let creds = Credentials::Plain { authzid: "", authcid: "u\r\nQUIT", password: "p" };
    assert_eq!(s.client.auth(&creds), Err(ApiError::ForbiddenCharacter(Argument::Credentials)));
    s.drain();
    assert!(s.output.is_empty(), "{:?}", s.output_str());
    assert!(s.client.is_ready());
}

#[test]
fn dsn_values_a_server_would_refuse_are_refused_before_writing() {
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    greet(&mut s, EHLO_FULL);
    s.output.clear();
    let rcpts = to(&["a@x"]);
    fn envid<'a>(rcpts: &'a [Recipient<'a>], v: &'a str) -> Envelope<'a> {
        let mut env = Envelope::new("m@c", rcpts);
        env.envid = Some(v);
        env
    }
    // ENVID: at most 100 characters once xtext-encoded ("+" takes three).
    let at_limit = "x".repeat(97) + "+";
    let s100 = envid(&rcpts, &at_limit);
    let over = "x".repeat(98) + "+";
    assert_eq!(s.client.send_mail(&envid(&rcpts, "")), Err(ApiError::BadParameter(Argument::EnvId)));
    assert_eq!(s.client.send_mail(&envid(&rcpts, &over)), Err(ApiError::BadParameter(Argument::EnvId)));
    // ORCPT: "rfc822;" and the encoded address, at most 500.
    let long = format!("{}@x", "a".repeat(500 - 7 - 2 + 1));
    for o in ["", long.as_str()] {
        let rcpts = [Recipient { address: "a@x", notify: None, orcpt: Some(o) }];
        assert_eq!(s.client.send_mail(&Envelope::new("m@c", &rcpts)), Err(ApiError::BadParameter(Argument::Orcpt(0))));
    }
    s.drain();
    assert!(s.output.is_empty(), "{:?}", s.output_str());
    // At the limits, they go out.
    assert_eq!(s.client.send_mail(&s100), Ok(()));
    s.drain();
    assert!(s.output_str().contains(&format!("ENVID={}+2B", "x".repeat(97))), "{}", s.output_str());
}

#[test]
fn envelope_checks() {
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    greet(&mut s, EHLO_FULL);
    s.output.clear();
    let rcpts = to(&["a@x"]);
    let mut env = Envelope::new("m@c", &rcpts);
    env.size = Some(1001);
    assert_eq!(s.client.send_mail(&env), Err(ApiError::SizeExceeded { size: 1001, limit: 1000 }));
    assert_eq!(s.client.send_mail(&Envelope::new("m@c", &[])), Err(ApiError::NoRecipients));
    let many = to(&["a@x"; 9]);
    assert_eq!(s.client.send_mail(&Envelope::new("m@c", &many)), Err(ApiError::TooManyRecipients));
    let utf8 = to(&["ü@x"]);
    assert_eq!(s.client.send_mail(&Envelope::new("m@c", &utf8)), Err(ApiError::NotOffered(Extension::SmtpUtf8)));
    assert_eq!(s.client.send_body(b"x"), Err(ApiError::NotReady));
    assert_eq!(s.client.tls_established(), Err(ApiError::NoTlsPending));
    s.drain();
    assert!(s.output.is_empty());
    // DSN parameters pass when offered.
    let rcpts = [Recipient { address: "a@x", notify: Some(Notify(Notify::FAILURE)), orcpt: Some("a+b@x") }];
    let mut env = Envelope::new("m@c", &rcpts);
    env.size = Some(1000);
    env.ret = Some(Ret::Hdrs);
    env.envid = Some("ID 1");
    env.eight_bit = true;
    s.client.send_mail(&env).unwrap();
    s.drain();
    assert_eq!(
        s.output_str(),
        "MAIL FROM:<m@c> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=ID+201\r\n\
         RCPT TO:<a@x> NOTIFY=FAILURE ORCPT=rfc822;a+2Bb@x\r\nDATA\r\n"
    );
    assert_eq!(s.client.send_mail(&env), Err(ApiError::NotReady));
    // ... and are dropped when not.
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    greet(&mut s, b"250 mx\r\n");
    s.output.clear();
    s.client.send_mail(&env).unwrap_err();
    env.eight_bit = false;
    env.requiretls = true;
    assert_eq!(s.client.send_mail(&env), Err(ApiError::NotOffered(Extension::RequireTls)));
    env.requiretls = false;
    s.client.send_mail(&env).unwrap();
    s.drain();
    assert_eq!(s.output_str(), "MAIL FROM:<m@c>\r\n");
}

#[test]
fn requiretls_when_offered() {
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    greet(&mut s, b"250-mx\r\n250 REQUIRETLS\r\n");
    s.output.clear();
    let rcpts = to(&["a@x"]);
    let mut env = Envelope::new("m@c", &rcpts);
    env.requiretls = true;
    s.client.send_mail(&env).unwrap();
    s.drain();
    assert_eq!(s.output_str(), "MAIL FROM:<m@c> REQUIRETLS\r\n");
}

#[test]
fn starttls_then_ehlo_again() {
    let s = all_splits(Config::new("c"), |s| {
        greet(s, EHLO_FULL);
        s.client.starttls().unwrap();
        s.drain();
        s.feed(b"220 2.0.0 go ahead\r\n");
        assert!(s.client.is_tls_pending());
        assert_eq!(s.client.timeout(), Some(Duration::from_secs(300)));
        s.client.tls_established().unwrap();
        assert!(s.client.capabilities().auth.is_empty() && !s.client.capabilities().pipelining);
        assert_eq!(s.client.size_limit(), None);
        s.drain();
        s.feed(b"250-mx\r\n250 AUTH PLAIN\r\n");
        assert!(s.client.is_tls() && s.client.is_ready());
        assert_eq!(s.client.starttls(), Err(ApiError::NotOffered(Extension::StartTls)));
    });
    assert_eq!(s.output_str(), "EHLO c\r\nSTARTTLS\r\nEHLO c\r\n");
    assert_eq!(s.events[2], "TlsHandshake");
}

#[test]
fn starttls_response_injection() {
    // In one segment, the client aborts without sending anything more.
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    greet(&mut s, EHLO_FULL);
    s.client.starttls().unwrap();
    s.drain();
    s.output.clear();
    s.feed(b"220 Ready\r\n250-injected\r\n");
    assert!(s.events[2].contains("kind: ResponseInjection"), "{:?}", s.events);
    assert_eq!(s.events[3], "Closed");
    assert!(s.output.is_empty());
    assert_eq!(s.client.error().unwrap().kind, ErrorKind::ResponseInjection);
    assert_eq!(s.client.tls_established(), Err(ApiError::NoTlsPending));
    // Split anywhere: the bytes after the 220 still never reach the post-TLS parser.
    for at in 1..26 {
        let mut s = Session::new(Config::new("c"), Mode::Split { feed: 2, at });
        greet(&mut s, EHLO_FULL);
        s.client.starttls().unwrap();
        s.feed(b"220 Ready\r\n250-injected\r\n");
        assert!(s.client.is_closed(), "at {at}");
        assert_eq!(s.client.error().unwrap().kind, ErrorKind::ResponseInjection);
    }
    // A refused STARTTLS is not fatal.
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    greet(&mut s, EHLO_FULL);
    s.client.starttls().unwrap();
    s.feed(b"454 4.7.0 TLS not available\r\n");
    assert!(s.events[2].starts_with("Failed(Error { step: StartTls"));
    assert!(s.client.is_ready());
}

#[test]
fn auth_mechanisms() {
    let cases: [(Credentials, &[&[u8]], &str); 4] = [
        (
            Credentials::Plain { authzid: "", authcid: "tim", password: "tanstaaftanstaaf" },
            &[b"235 2.7.0 ok\r\n"],
            "AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n",
        ),
        (
            Credentials::Login { username: "tim", password: "pw" },
            &[b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n", b"235 ok\r\n"],
            "AUTH LOGIN\r\ndGlt\r\ncHc=\r\n",
        ),
        (
            Credentials::XOAuth2 { user: "u@x", token: "tok" },
            &[b"235 ok\r\n"],
            "AUTH XOAUTH2 dXNlcj11QHgBYXV0aD1CZWFyZXIgdG9rAQE=\r\n",
        ),
        (
            Credentials::XOAuth2 { user: "u@x", token: "tok" },
            &[b"334 eyJzdGF0dXMiOiI0MDEifQ==\r\n", b"535 5.7.8 bad\r\n"],
            "AUTH XOAUTH2 dXNlcj11QHgBYXV0aD1CZWFyZXIgdG9rAQE=\r\n\r\n",
        ),
    ];
    for (creds, replies, want) in cases {
        let s = all_splits(Config::new("c"), |s| {
            greet(s, EHLO_FULL);
            s.output.clear();
            s.client.auth(&creds).unwrap();
            s.drain();
            for r in replies {
                s.feed(r);
            }
            assert!(s.client.is_ready());
        });
        assert_eq!(s.output_str(), want);
        let ok = replies.last().unwrap().starts_with(b"235");
        assert_eq!(s.client.is_authenticated(), ok);
        assert!(s.events.last().unwrap().starts_with(if ok { "Authenticated" } else { "Failed(Error { step: Auth" }));
    }
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    greet(&mut s, b"250 mx\r\n");
    let creds = Credentials::Plain { authzid: "", authcid: "a", password: "b" };
    assert_eq!(s.client.auth(&creds), Err(ApiError::NotOffered(Extension::Auth)));
}

#[test]
fn bdat_session() {
    let mut config = Config::new("c");
    config.chunking = true;
    let s = all_splits(config, |s| {
        greet(s, b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
        let rcpts = to(&["a@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.feed(b"250 ok\r\n250 ok\r\n");
        assert!(s.client.is_sending_body());
        assert_eq!(s.client.send_body(b".a\nb"), Ok(4));
        assert_eq!(s.client.send_body(b"more"), Ok(0));
        assert_eq!(s.client.finish_body(), Err(ApiError::NotReady));
        s.drain();
        s.feed(b"250 5 octets\r\n");
        s.client.finish_body().unwrap();
        s.drain();
        s.feed(b"250 2.0.0 queued\r\n");
    });
    assert_eq!(s.output_str(), "EHLO c\r\nMAIL FROM:<m@c>\r\nRCPT TO:<a@x>\r\nBDAT 5\r\n.a\r\nbBDAT 2 LAST\r\n\r\n");
    assert!(s.events.last().unwrap().starts_with("Delivered"));
}

#[test]
fn bare_line_endings_refused_by_policy() {
    let mut config = Config::new("c");
    config.bare_line_endings = BarePolicy::Reject;
    let mut s = Session::new(config, Mode::Whole);
    greet(&mut s, b"250 mx\r\n");
    let rcpts = to(&["a@x"]);
    s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
    s.feed(b"250 ok\r\n");
    s.feed(b"250 ok\r\n");
    s.feed(b"354 go\r\n");
    s.drain();
    s.output.clear();
    assert_eq!(s.client.send_body(b"ok\r\nbad\nx"), Ok(7));
    assert_eq!(s.client.send_body(b"\nx"), Err(ApiError::BareLineEnding));
    assert!(s.client.is_closed());
    assert_eq!(s.client.error().unwrap().kind, ErrorKind::BareLineEnding);
    s.drain();
    // What was sent never contains an end of data.
    assert_eq!(s.output_str(), "ok\r\nbad");
}

#[test]
fn timeouts_per_state() {
    let t = |s: &Session| s.client.timeout().map(|d| d.as_secs() / 60);
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    assert_eq!(t(&s), Some(5)); // greeting
    s.feed(b"220 x\r\n");
    assert_eq!(t(&s), Some(5)); // EHLO
    s.feed(b"250-mx\r\n250 PIPELINING\r\n");
    assert_eq!(t(&s), None); // idle
    let rcpts = to(&["a@x", "b@x"]);
    s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
    assert_eq!(t(&s), Some(5)); // MAIL
    s.feed(b"250 ok\r\n");
    assert_eq!(t(&s), Some(5)); // RCPT
    s.feed(b"250 ok\r\n250 ok\r\n");
    assert_eq!(t(&s), Some(2)); // DATA initiation
    s.feed(b"354 go\r\n");
    assert_eq!(t(&s), Some(3)); // data block
    s.client.finish_body().unwrap();
    assert_eq!(t(&s), Some(10)); // DATA termination
    s.client.handle_timeout();
    assert!(s.client.is_closed());
    let e = s.client.error().unwrap();
    assert_eq!((e.step, e.kind), (Step::DataEnd, ErrorKind::Timeout));
    assert_eq!(t(&s), None);
    let mut s = Session::new(Config::new("c"), Mode::Whole);
    s.client.handle_timeout();
    assert_eq!(s.client.error().unwrap().step, Step::Greeting);
    s.feed(b"220 late\r\n");
    assert_eq!(s.events, ["Closed"]);
}

#[test]
fn malformed_replies_end_the_session() {
    for (bad, err) in [
        (&b"220 x\r\n2x0 oops\r\n"[..], ReplyError::BadCode),
        (b"220 x\r\n250_x\r\n", ReplyError::BadSeparator),
        (b"220 x\r\n250-a\r\n251 b\r\n", ReplyError::InconsistentCode),
        (b"220 x\r\n150 x\r\n", ReplyError::BadCode),
    ] {
        let mut s = Session::new(Config::new("c"), Mode::Whole);
        s.feed(bad);
        let e = s.client.error().expect("error");
        assert_eq!((e.step, e.kind), (Step::Ehlo, ErrorKind::Malformed(err)));
        assert!(s.client.is_closed());
    }
    let mut config = Config::new("c");
    config.reply_limits = ReplyLimits { max_line: 64, max_lines: 3 };
    let mut s = Session::new(config, Mode::Whole);
    s.feed(b"220 x\r\n250-a\r\n250-b\r\n250-c\r\n250 d\r\n");
    assert_eq!(s.client.error().unwrap().kind, ErrorKind::Malformed(ReplyError::TooManyLines));
    let mut s = Session::new(config, Mode::Bytes);
    s.feed(&[b"220 x\r\n250 ".as_slice(), &[b'x'; 100]].concat());
    assert_eq!(s.client.error().unwrap().kind, ErrorKind::Malformed(ReplyError::LineTooLong));
}

// ---------------------------------------------------------------------------------------------
// The reply parser
// ---------------------------------------------------------------------------------------------

fn parse(input: &[u8]) -> Result<Status<(usize, String)>, ReplyError> {
    parse_reply(input, &ReplyLimits::default()).map(|s| match s {
        Status::Complete((n, r)) => Status::Complete((n, format!("{r}"))),
        Status::Partial => Status::Partial,
    })
}

#[test]
fn reply_parser_complete_and_partial_at_every_prefix() {
    let input = b"250-2.0.0 mx.test\r\n250-PIPELINING\r\n250 2.0.0 SIZE 10\r\n";
    for n in 0..input.len() {
        assert_eq!(parse(&input[..n]), Ok(Status::Partial), "prefix {n}");
    }
    assert_eq!(parse(input), Ok(Status::Complete((input.len(), "250 2.0.0 mx.test".into()))));
    let Ok(Status::Complete((_, r))) = parse_reply(input, &ReplyLimits::default()) else { panic!() };
    assert_eq!(r.line_count(), 3);
    let texts: Vec<&[u8]> = r.text_lines().collect();
    assert_eq!(texts, [&b"mx.test"[..], b"PIPELINING", b"SIZE 10"]);
    assert_eq!(r.raw(), input);
    // Forms without text and with bare LF.
    assert_eq!(parse(b"250\r\n"), Ok(Status::Complete((5, "250".into()))));
    assert_eq!(parse(b"354 \n"), Ok(Status::Complete((5, "354".into()))));
    assert_eq!(parse(b"250-\r\n250 x\r\n"), Ok(Status::Complete((13, "250".into()))));
    assert_eq!(parse(b"550 5.1.1\r\n"), Ok(Status::Complete((11, "550 5.1.1".into()))));
}

#[test]
fn reply_parser_errors() {
    assert_eq!(parse(b"X"), Err(ReplyError::BadCode));
    assert_eq!(parse(b"199 x\r\n"), Err(ReplyError::BadCode));
    assert_eq!(parse(b"600 x\r\n"), Err(ReplyError::BadCode));
    assert_eq!(parse(b"25a x\r\n"), Err(ReplyError::BadCode));
    assert_eq!(parse(b"25\r\n"), Err(ReplyError::BadCode));
    assert_eq!(parse(b"2500 x\r\n"), Err(ReplyError::BadSeparator));
    assert_eq!(parse(b"250\rx\r\n"), Err(ReplyError::BadSeparator));
    assert_eq!(parse(b"250-a\r\n251 b\r\n"), Err(ReplyError::InconsistentCode));
    assert_eq!(parse(b"250-a\r\n251"), Err(ReplyError::InconsistentCode));
    assert_eq!(parse(b"250-a\r\nxyz"), Err(ReplyError::BadCode));
    let long = [b"250 ".as_slice(), &[b'x'; 508]].concat();
    assert_eq!(parse(&long), Err(ReplyError::LineTooLong));
    assert_eq!(parse(&[long.as_slice(), b"\r\n"].concat()), Err(ReplyError::LineTooLong));
    let ok = [b"250 ".as_slice(), &[b'x'; 506], b"\r\n"].concat();
    assert_eq!(ok.len(), 512);
    assert!(matches!(parse(&ok), Ok(Status::Complete((512, _)))));
    let limits = ReplyLimits { max_line: 512, max_lines: 2 };
    assert_eq!(parse_reply(b"250-a\r\n250-b\r\n250 c\r\n", &limits), Err(ReplyError::TooManyLines));
    assert!(matches!(parse_reply(b"250-a\r\n250 b\r\n", &limits), Ok(Status::Complete(_))));
    assert_eq!(limits.max_reply_len(), 1024);
}

// ---------------------------------------------------------------------------------------------
// LMTP (RFC 2033): LHLO, one reply per accepted recipient after the end of data
// ---------------------------------------------------------------------------------------------

const LHLO_PIPELINING: &[u8] = b"250-lmtp.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n";

/// The codes of `recipient_results()`, 0 for `None`.
fn codes(s: &Session) -> Vec<u16> {
    s.client.recipient_results().iter().map(|r| r.map_or(0, |r| r.code)).collect()
}

#[test]
fn lmtp_pipelined_partial_success() {
    let s = all_splits(Config::lmtp("client.test"), |s| {
        greet(s, LHLO_PIPELINING);
        assert!(s.client.is_ready() && s.client.is_esmtp());
        let rcpts = to(&["a@x", "bad@x", "c@x", "d@x", "e@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        // Every envelope reply in one read.
        s.feed(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n250 ok\r\n354 go\r\n");
        assert!(s.client.is_sending_body());
        assert_eq!(codes(s), [250, 550, 250, 250, 250]);
        s.body(b".dot\nbare\rcr\r\n");
        // From the end of data, accepted recipients wait for their own reply.
        assert_eq!(codes(s), [0, 550, 0, 0, 0]);
        assert_eq!(s.client.timeout(), Some(Duration::from_secs(600)));
        s.feed(b"250 2.0.0 <a@x> saved\r\n");
        assert_eq!(codes(s), [250, 550, 0, 0, 0]);
        assert!(!s.client.is_ready());
        // The other three in one read: over quota (temporary), mailbox full, saved.
        s.feed(b"452 4.2.2 <c@x> over quota\r\n552 5.2.2 <d@x> mailbox full\r\n250 2.0.0 <e@x> saved\r\n");
        assert!(s.client.is_ready());
        assert_eq!(s.client.timeout(), None);
        assert_eq!(codes(s), [250, 550, 452, 552, 250]);
        let r = s.client.recipient_results();
        assert_eq!(r[2].unwrap().enhanced, Some(EnhancedCode::new(4, 2, 2)));
        assert_eq!(r.iter().map(|r| r.unwrap().is_accepted()).collect::<Vec<_>>(), [true, false, false, false, true]);
        // A second transaction on the same session starts afresh.
        let rcpts = to(&["f@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
        assert_eq!(codes(s), [250]);
        s.body(b"two");
        s.feed(b"250 2.0.0 <f@x> saved\r\n");
        assert_eq!(codes(s), [250]);
        s.client.quit().unwrap();
        s.drain();
        s.feed(b"221 bye\r\n");
        assert!(s.client.is_closed());
    });
    assert_eq!(
        s.output_str(),
        "LHLO client.test\r\nMAIL FROM:<m@c>\r\nRCPT TO:<a@x>\r\nRCPT TO:<bad@x>\r\nRCPT TO:<c@x>\r\n\
         RCPT TO:<d@x>\r\nRCPT TO:<e@x>\r\nDATA\r\n..dot\r\nbare\r\ncr\r\n.\r\n\
         MAIL FROM:<m@c>\r\nRCPT TO:<f@x>\r\nDATA\r\ntwo\r\n.\r\nQUIT\r\n"
    );
    let ev = &s.events;
    assert!(ev[0].starts_with("Greeting"), "{ev:?}");
    assert!(ev[1].starts_with("Capabilities") && ev[1].ends_with("esmtp: true }"));
    assert_eq!(ev[8], "ReadyForData");
    let after: Vec<(&str, &str)> = ev[9..13]
        .iter()
        .map(|e| {
            let (head, rest) = e.split_at(e.find(", reply").unwrap());
            (head, &rest[rest.find("code: ").unwrap() + 6..][..3])
        })
        .collect();
    assert_eq!(
        after,
        [
            ("Reply { command: DataEnd, recipient: Some(0)", "250"),
            ("Reply { command: DataEnd, recipient: Some(2)", "452"),
            ("Reply { command: DataEnd, recipient: Some(3)", "552"),
            ("Reply { command: DataEnd, recipient: Some(4)", "250"),
        ]
    );
    assert_eq!(ev[13], "LmtpDone { delivered: 2, accepted: 4 }");
    assert!(ev[17].starts_with("Reply { command: DataEnd, recipient: Some(0)"), "{:?}", &ev[14..]);
    assert_eq!(ev[18], "LmtpDone { delivered: 1, accepted: 1 }");
    assert_eq!(ev[19], "Closed");
    assert_eq!(ev.len(), 20);
    assert!(!ev.iter().any(|e| e.starts_with("Delivered")));
}

#[test]
fn lmtp_one_at_a_time_without_pipelining() {
    let s = all_splits(Config::lmtp("c"), |s| {
        greet(s, b"250 lmtp.test\r\n");
        let rcpts = to(&["a@x", "b@x", "c@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        assert_eq!(s.output_str(), "LHLO c\r\nMAIL FROM:<m@c>\r\n");
        s.feed(b"250 ok\r\n");
        s.feed(b"250 ok\r\n");
        s.feed(b"450 4.2.1 try later\r\n");
        s.feed(b"250 ok\r\n");
        s.feed(b"354 go\r\n");
        s.body(b"hi\r\n");
        s.feed(b"250 2.0.0 a\r\n");
        s.feed(b"550 5.7.1 c refused after all\r\n");
        assert!(s.client.is_ready());
        assert_eq!(codes(s), [250, 450, 550]);
    });
    assert_eq!(
        s.output_str(),
        "LHLO c\r\nMAIL FROM:<m@c>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\nDATA\r\nhi\r\n.\r\n"
    );
    assert_eq!(s.events.last().unwrap(), "LmtpDone { delivered: 1, accepted: 2 }");
}

#[test]
fn lmtp_all_refused_at_rcpt_sends_no_data() {
    // Pipelined: DATA went out with the group; its 503 (RFC 2033 §4.2) and then RSET.
    let s = all_splits(Config::lmtp("c"), |s| {
        greet(s, LHLO_PIPELINING);
        let rcpts = to(&["a@x", "b@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.feed(b"250 ok\r\n550 5.1.1 no\r\n452 4.2.2 full\r\n503 5.5.1 no valid recipients\r\n");
        s.feed(b"250 reset\r\n");
        assert!(s.client.is_ready());
        assert_eq!(codes(s), [550, 452]);
    });
    assert!(s.output_str().ends_with("RCPT TO:<b@x>\r\nDATA\r\nRSET\r\n"), "{}", s.output_str());
    assert!(s.events.last().unwrap().starts_with("Failed(Error { step: Rcpt, kind: NoValidRecipients"));
    assert!(!s.events.iter().any(|e| e == "ReadyForData" || e.starts_with("LmtpDone")));
    // One at a time: DATA is never sent.
    let s = all_splits(Config::lmtp("c"), |s| {
        greet(s, b"250 lmtp.test\r\n");
        let rcpts = to(&["a@x", "b@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.feed(b"250 ok\r\n");
        s.feed(b"550 no\r\n");
        s.feed(b"550 no\r\n");
        s.feed(b"250 reset\r\n");
        assert!(s.client.is_ready());
    });
    assert_eq!(s.output_str(), "LHLO c\r\nMAIL FROM:<m@c>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nRSET\r\n");
}

#[test]
fn lmtp_421_midway() {
    // After the end of data: the recipients answered keep their reply, the 421 is kept as the
    // next one's, the rest stay unknown; no QUIT to a closing server.
    let s = all_splits(Config::lmtp("c"), |s| {
        greet(s, LHLO_PIPELINING);
        let rcpts = to(&["a@x", "b@x", "c@x", "d@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.feed(b"250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n250 ok\r\n354 go\r\n");
        s.body(b"hi");
        s.output.clear();
        s.feed(b"250 2.0.0 saved\r\n421 4.3.2 shutting down\r\n");
        assert!(s.client.is_closed());
        assert_eq!(codes(s), [250, 550, 421, 0]);
    });
    assert_eq!(s.output_str(), "");
    let ev = &s.events;
    assert!(ev[ev.len() - 3].starts_with("Reply { command: DataEnd, recipient: Some(0)"), "{ev:?}");
    assert!(ev[ev.len() - 2].starts_with("Error(Error { step: DataEnd, kind: Refused"), "{ev:?}");
    assert!(ev[ev.len() - 2].contains("code: 421"));
    assert_eq!(ev[ev.len() - 1], "Closed");
    let e = s.client.error().unwrap();
    assert_eq!((e.step, e.kind, e.reply.unwrap().code), (Step::DataEnd, ErrorKind::Refused, 421));
    // At RCPT: fatal too, nothing more is sent.
    let s = all_splits(Config::lmtp("c"), |s| {
        greet(s, LHLO_PIPELINING);
        let rcpts = to(&["a@x", "b@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.feed(b"250 ok\r\n250 ok\r\n421 4.3.2 bye\r\n");
        assert!(s.client.is_closed());
    });
    assert!(s.output_str().ends_with("DATA\r\n"));
    assert!(s.events[s.events.len() - 2].contains("step: Rcpt, kind: Refused"), "{:?}", s.events);
}

#[test]
fn lmtp_malformed_reply_after_data() {
    let s = all_splits(Config::lmtp("c"), |s| {
        greet(s, LHLO_PIPELINING);
        let rcpts = to(&["a@x", "b@x", "c@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.feed(b"250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
        s.body(b"hi");
        // What follows a malformed reply is never parsed.
        s.feed(b"250 2.0.0 saved\r\n25x oops\r\n250 2.0.0 saved\r\n");
        assert!(s.client.is_closed());
        assert_eq!(codes(s), [250, 0, 0]);
    });
    let e = s.events.iter().find(|e| e.starts_with("Error")).unwrap();
    assert!(e.contains("step: DataEnd, kind: Malformed(BadCode)"), "{e}");
    assert!(!s.events.iter().any(|e| e.starts_with("LmtpDone")));
    // More replies than recipients: the extra one is unexpected.
    let s = all_splits(Config::lmtp("c"), |s| {
        greet(s, LHLO_PIPELINING);
        let rcpts = to(&["a@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
        s.body(b"hi");
        s.feed(b"250 2.0.0 saved\r\n250 2.0.0 saved again\r\n");
        assert!(s.client.is_closed());
        assert_eq!(codes(s), [250]);
    });
    let n = s.events.len();
    assert_eq!(s.events[n - 3], "LmtpDone { delivered: 1, accepted: 1 }");
    assert!(s.events[n - 2].contains("kind: UnexpectedReply"), "{:?}", s.events);
}

#[test]
fn lmtp_lhlo_refused_has_no_helo_fallback() {
    for reply in [&b"500 5.5.1 what\r\n"[..], b"502 5.5.1 no\r\n", b"554 go away\r\n"] {
        let s = all_splits(Config::lmtp("c"), |s| {
            s.feed(b"220 lmtp.test LMTP\r\n");
            s.feed(reply);
            s.feed(b"221 bye\r\n");
            assert!(s.client.is_closed());
        });
        assert_eq!(s.output_str(), "LHLO c\r\nQUIT\r\n");
        assert!(s.events[1].starts_with("Error(Error { step: Lhlo, kind: Refused"), "{:?}", s.events);
        assert_eq!(s.client.error().unwrap().step, Step::Lhlo);
    }
    // A malformed LHLO reply.
    let mut s = Session::new(Config::lmtp("c"), Mode::Whole);
    s.feed(b"220 x\r\n250_x\r\n");
    let e = s.client.error().unwrap();
    assert_eq!((e.step, e.kind), (Step::Lhlo, ErrorKind::Malformed(ReplyError::BadSeparator)));
}

#[test]
fn lmtp_never_uses_bdat() {
    let mut config = Config::lmtp("c");
    config.chunking = true;
    let s = all_splits(config, |s| {
        greet(s, b"250-lmtp.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
        assert!(s.client.capabilities().chunking);
        let rcpts = to(&["a@x", "b@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.feed(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
        s.body(b"x");
        s.feed(b"250 a\r\n250 b\r\n");
    });
    assert_eq!(s.output_str(), "LHLO c\r\nMAIL FROM:<m@c>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(s.events.last().unwrap(), "LmtpDone { delivered: 2, accepted: 2 }");
}

#[test]
fn lmtp_354_without_recipients_closes_without_ending_the_message() {
    // A broken server: 354 although no recipient was accepted. Ending the message would leave
    // an unknown number of replies to come; the client closes instead (nothing delivered).
    let s = all_splits(Config::lmtp("c"), |s| {
        greet(s, LHLO_PIPELINING);
        let rcpts = to(&["a@x"]);
        s.client.send_mail(&Envelope::new("m@c", &rcpts)).unwrap();
        s.drain();
        s.output.clear();
        s.feed(b"250 ok\r\n550 no\r\n354 go\r\n");
        assert!(s.client.is_closed());
    });
    assert_eq!(s.output_str(), "");
    assert!(s.events[s.events.len() - 2].contains("step: Data, kind: UnexpectedReply"), "{:?}", s.events);
}

#[test]
fn lmtp_starttls_then_lhlo_again() {
    let s = all_splits(Config::lmtp("c"), |s| {
        greet(s, b"250-lmtp.test\r\n250 STARTTLS\r\n");
        s.client.starttls().unwrap();
        s.drain();
        s.feed(b"220 go ahead\r\n");
        s.client.tls_established().unwrap();
        s.drain();
        s.feed(b"250-lmtp.test\r\n250 PIPELINING\r\n");
        assert!(s.client.is_tls() && s.client.is_ready() && s.client.capabilities().pipelining);
    });
    assert_eq!(s.output_str(), "LHLO c\r\nSTARTTLS\r\nLHLO c\r\n");
}

/// The LMTP client against the LMTP server core, through pipes of `pipe` bytes: the server
/// refuses RCPT for local parts starting with "bad" and, after the data, answers each
/// accepted recipient with `after[k]` (`None`: accept).
fn lmtp_pair(
    pipe: usize,
    rcpts: &[&'static str],
    after: &[Option<u16>],
    body: &[u8],
) -> (Vec<String>, Vec<u16>, Vec<u8>) {
    use smtp_proto::parse::ForwardPath;
    use smtp_proto::server::{self, Server};
    use smtp_proto::Reply;
    let mut sconfig = server::Config::new("lmtp.test");
    sconfig.lmtp = true;
    let mut server = Server::new(sconfig);
    server.greet("LMTP").unwrap();
    let mut client: Client<8> = Client::new(Config::lmtp("client.test"));
    let to = to(rcpts);
    let env = Envelope::new("m@c", &to);
    let (mut c2s, mut s2c, mut s_in, mut c_in) = (vec![], vec![], vec![], vec![]);
    let (mut events, mut received, mut ends) = (vec![], vec![], 0);
    let (mut sent, mut body_rest) = (false, body);
    let mut buf = [0u8; 333];
    for _ in 0..100_000 {
        while let n @ 1.. = client.poll_transmit(&mut buf) {
            c2s.extend_from_slice(&buf[..n]);
        }
        s_in.extend(c2s.drain(..pipe.min(c2s.len())));
        loop {
            let r = server.handle_input(&s_in).unwrap();
            let consumed = r.consumed;
            let server::Progress::Event(ev) = r.progress else {
                s_in.drain(..consumed);
                break;
            };
            if let server::Event::Data(d) = ev {
                received.extend_from_slice(d);
            }
            let refuse = match ev {
                server::Event::Rcpt { to: ForwardPath::Mailbox(m), .. } => m.local_part.starts_with("bad"),
                _ => false,
            };
            if ev.needs_decision() {
                if refuse {
                    server.reply(Reply::NO_SUCH_USER).unwrap();
                } else if let server::Event::DataEnd { .. } = ev {
                    // One decision per accepted recipient.
                    loop {
                        match after[ends] {
                            None => server.accept().unwrap(),
                            Some(code) => server.reply(Reply::new(code, None, "not now")).unwrap(),
                        }
                        ends += 1;
                        if !server.is_pending() {
                            break;
                        }
                    }
                } else {
                    server.accept().unwrap();
                }
            }
            s_in.drain(..consumed);
        }
        while let n @ 1.. = server.poll_transmit(&mut buf) {
            s2c.extend_from_slice(&buf[..n]);
        }
        c_in.extend(s2c.drain(..pipe.min(s2c.len())));
        loop {
            let r = client.handle_input(&c_in).unwrap();
            let consumed = r.consumed;
            match r.progress {
                Progress::Event(Event::Error(e)) => panic!("client error {e:?}"),
                Progress::Event(ev) => events.push(format!("{ev:?}")),
                Progress::NeedInput => break,
                Progress::Closed => {
                    let codes = client.recipient_results().iter().map(|r| r.unwrap().code).collect();
                    return (events, codes, received);
                }
            }
            c_in.drain(..consumed);
        }
        if client.is_ready() {
            if sent {
                client.quit().unwrap();
            } else {
                client.send_mail(&env).unwrap();
                sent = true;
            }
        }
        while client.is_sending_body() {
            if body_rest.is_empty() {
                client.finish_body().unwrap();
                break;
            }
            let n = client.send_body(&body_rest[..7.min(body_rest.len())]).unwrap();
            body_rest = &body_rest[n..];
        }
    }
    panic!("livelock: {events:?}");
}

#[test]
fn lmtp_client_against_the_lmtp_server_core() {
    let body = b"Subject: x\r\n\r\n.leading dot\r\nbare\nlf\r\n";
    for pipe in [1, 2, 5, 64, 4096] {
        let (events, codes, received) =
            lmtp_pair(pipe, &["a@x", "bad@x", "c@x", "d@x"], &[None, Some(452), None], body);
        assert_eq!(codes, [250, 550, 452, 250], "pipe {pipe}");
        assert_eq!(received, b"Subject: x\r\n\r\n.leading dot\r\nbare\r\nlf\r\n");
        let ends: Vec<&String> = events.iter().filter(|e| e.starts_with("Reply { command: DataEnd")).collect();
        assert_eq!(ends.len(), 3);
        assert!(ends[1].starts_with("Reply { command: DataEnd, recipient: Some(2)") && ends[1].contains("code: 452"));
        assert!(events.contains(&"LmtpDone { delivered: 2, accepted: 3 }".to_string()), "{events:?}");
    }
}
