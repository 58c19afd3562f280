//! Scripted sessions through the server core, each run whole, byte by byte, split at every
//! index and at every pair of indices: all must give the same events and reply bytes.

use smtp_proto::data::BarePolicy;
use smtp_proto::ehlo::AuthMechanisms;
use smtp_proto::reply::Reply;
use smtp_proto::server::{Config, Event, Progress, Server};
use smtp_proto::testing::{self as common, accept_all, picky, run, run_all_splits, Transcript};

fn config() -> Config {
    let mut c = Config::new("mx.test");
    c.capabilities.starttls = true;
    c
}

/// The reply lines, the EHLO response folded to its first line.
fn replies(t: &Transcript) -> Vec<String> {
    t.output_str().split("\r\n").filter(|l| !l.is_empty() && !l.starts_with("250-")).map(str::to_owned).collect()
}

fn events(t: &Transcript) -> Vec<&str> {
    t.events.iter().map(String::as_str).collect()
}

#[test]
fn a_whole_pipelined_transaction() {
    let t = run_all_splits(
        config(),
        accept_all,
        &[
            b"EHLO client.example\r\n",
            b"MAIL FROM:<alice@a.example> SIZE=100\r\nRCPT TO:<bob@b.example>\r\nRCPT TO:<carol@b.example>\r\nDATA\r\n",
            b"Subject: hi\r\n\r\nHello\r\n..dot\r\n.\r\nQUIT\r\n",
        ],
    );
    assert_eq!(
        replies(&t),
        [
            "220 mx.test ESMTP test",
            "250 STARTTLS",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "250 2.1.5 Recipient OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Message accepted",
            "221 2.0.0 mx.test Bye",
        ]
    );
    assert_eq!(t.bodies(), ["Subject: hi\\r\\n\\r\\nHello\\r\\n.dot\\r\\n"]);
    assert!(t.events.last().unwrap().starts_with("Quit"));
    assert!(t.events.iter().any(|e| e == "DataEnd { size: 28 }"), "{:?}", t.events);
}

#[test]
fn the_first_line_can_end_the_message_and_dots_are_unstuffed() {
    let t = run_all_splits(
        config(),
        accept_all,
        &[
            b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\n",
            b".\r\n",
            b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n",
            b"...\r\n.a\r\n..\r\n\r\n.\r\n",
        ],
    );
    assert!(events(&t).contains(&"DataEnd { size: 0 }"), "{:?}", t.events);
    assert_eq!(t.bodies(), ["..\\r\\na\\r\\n.\\r\\n\\r\\n"]);
    assert_eq!(replies(&t).iter().filter(|r| r.starts_with("250 2.0.0 Message")).count(), 2);
}

const SMUGGLING: &[&[u8]] =
    &[b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r", b"\r\n.\0\r\n", b"\r\n\0.\r\n", b"\r.\r\n", b"\n.\r"];

fn smuggling_script(seq: &[u8]) -> Vec<u8> {
    let mut body = b"Subject: x\r\n\r\nbody".to_vec();
    body.extend_from_slice(seq);
    body.extend_from_slice(
        b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@b.example>\r\nDATA\r\nforged\r\n.\r\n",
    );
    body
}

#[test]
fn smuggling_sequences_never_end_the_message_rejected_by_default() {
    for seq in SMUGGLING {
        let body = smuggling_script(seq);
        let t = run_all_splits(
            config(),
            accept_all,
            &[b"EHLO c\r\nMAIL FROM:<a@a.example>\r\nRCPT TO:<b@b.example>\r\nDATA\r\n", &body, b"NOOP\r\n"],
        );
        let ev = events(&t);
        assert_eq!(ev.iter().filter(|e| e.starts_with("Mail")).count(), 1, "{seq:?}: {ev:?}");
        let aborted = ev.iter().filter(|e| e.starts_with("DataAborted")).count();
        let ended = ev.iter().filter(|e| e.starts_with("DataEnd")).count();
        if seq.contains(&0) {
            // NUL next to the dot: a plain body line, one message, nothing smuggled.
            assert_eq!((aborted, ended), (0, 1), "{seq:?}: {ev:?}");
            assert!(t.bodies()[0].contains("MAIL FROM:<evil"), "{seq:?}");
        } else {
            assert_eq!((aborted, ended), (1, 0), "{seq:?}: {ev:?}");
            assert!(replies(&t).contains(&"550 5.5.2 Error: bare <CR> or <LF> received".to_string()));
        }
        // One answer to the whole DATA, then the session is in sync.
        assert_eq!(replies(&t).last().unwrap(), "250 2.0.0 OK", "{seq:?}");
    }
}

#[test]
fn smuggling_sequences_pass_through_under_allow() {
    let mut c = config();
    c.bare_line_endings = BarePolicy::Allow;
    for seq in SMUGGLING {
        let body = smuggling_script(seq);
        let t = run_all_splits(
            c,
            accept_all,
            &[b"EHLO c\r\nMAIL FROM:<a@a.example>\r\nRCPT TO:<b@b.example>\r\nDATA\r\n", &body],
        );
        let ev = events(&t);
        assert_eq!(ev.iter().filter(|e| e.starts_with("Mail")).count(), 1, "{seq:?}: {ev:?}");
        assert_eq!(ev.iter().filter(|e| e.starts_with("DataEnd")).count(), 1, "{seq:?}: {ev:?}");
        let bodies = t.bodies();
        assert_eq!(bodies.len(), 1);
        assert!(bodies[0].contains("MAIL FROM:<evil@attacker.example>"), "{seq:?}: {bodies:?}");
    }
}

#[test]
fn wrong_order_gets_503_and_the_session_goes_on() {
    let t = run_all_splits(
        config(),
        accept_all,
        &[
            b"MAIL FROM:<a@a.example>\r\n",
            b"EHLO c\r\nRCPT TO:<b@b.example>\r\nDATA\r\n",
            b"MAIL FROM:<a@a.example>\r\nMAIL FROM:<a@a.example>\r\nDATA\r\n",
            b"BOGUS\r\nRSET\r\nNOOP\r\n",
        ],
    );
    assert_eq!(
        replies(&t)[1..],
        [
            "503 5.5.1 Error: send HELO/EHLO first",
            "250 STARTTLS",
            "503 5.5.1 Error: need MAIL command",
            "503 5.5.1 Error: need MAIL command",
            "250 2.1.0 Sender OK",
            "503 5.5.1 Error: nested MAIL command",
            "554 5.5.1 Error: no valid recipients",
            "500 5.5.1 Error: command not recognized",
            "250 2.0.0 Reset state",
            "250 2.0.0 OK",
        ]
    );
}

#[test]
fn policy_decisions_belong_to_the_application() {
    let t = run_all_splits(
        config(),
        picky,
        &[
            b"EHLO c\r\nMAIL FROM:<spammer@x.example>\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<bad@y.example>\r\nRCPT TO:<good@y.example>\r\nDATA\r\n",
            b"x\r\n.\r\n",
        ],
    );
    assert_eq!(
        replies(&t)[2..],
        [
            "550 5.7.1 Go away",
            "250 2.1.0 Sender OK",
            "550 5.1.1 Recipient address rejected: user unknown",
            "250 2.1.5 Recipient OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Message accepted",
        ]
    );
}

#[test]
fn too_many_recipients_is_452() {
    let mut c = config();
    c.max_recipients = 2;
    let t = run_all_splits(
        c,
        accept_all,
        &[b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<1@y.example>\r\nRCPT TO:<2@y.example>\r\nRCPT TO:<3@y.example>\r\n"],
    );
    assert_eq!(replies(&t).last().unwrap(), "452 4.5.3 Error: too many recipients");
    assert_eq!(events(&t).iter().filter(|e| e.starts_with("Rcpt")).count(), 2);
}

#[test]
fn too_many_errors_closes_with_421() {
    let mut c = config();
    c.max_errors = 3;
    let t = run_all_splits(c, accept_all, &[b"X\r\nY\r\nZ\r\nNOOP\r\n"]);
    assert_eq!(
        replies(&t)[1..],
        [
            "500 5.5.1 Error: command not recognized",
            "500 5.5.1 Error: command not recognized",
            "500 5.5.1 Error: command not recognized",
            "421 4.7.0 mx.test Error: too many errors",
        ]
    );
}

#[test]
fn an_over_long_line_is_skipped_without_buffering_and_sync_holds() {
    let mut line = b"NOOP ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 5000));
    line.extend_from_slice(b"\r\nNOOP\r\n");
    let t = run(config(), accept_all, &[b"EHLO c\r\n", &line]);
    assert_eq!(replies(&t)[2..], ["500 5.5.2 Error: command line too long", "250 2.0.0 OK"]);
    // The core never needs more than min_input_buffer bytes of the line.
    let t2 =
        common::run_with(config(), accept_all, &[b"EHLO c\r\n", &line], &|_, s| (1..s.len()).step_by(1000).collect());
    assert_eq!(t, t2);
    let bytewise = common::run_with(config(), accept_all, &[b"EHLO c\r\n", &line], &|_, s| (1..s.len()).collect());
    assert_eq!(t, bytewise);
}

#[test]
fn bare_lf_in_a_command_line_is_refused() {
    let t = run_all_splits(config(), accept_all, &[b"EHLO c\nNOOP\r\n"]);
    assert_eq!(replies(&t)[1..], ["500 5.5.2 Error: bare <LF> received", "250 2.0.0 OK"]);
}

#[test]
fn early_talkers_get_554_and_close() {
    let mut s = Server::new(config());
    let r = s.handle_input(b"EHLO c\r\n").unwrap();
    assert_eq!(r.progress, Progress::Closed);
    let mut out = [0u8; 256];
    let n = s.poll_transmit(&mut out);
    assert_eq!(&out[..n], b"554 5.5.0 mx.test Error: SMTP protocol synchronization\r\n");
    assert!(s.is_closed());
}

#[test]
fn bytes_pipelined_after_data_are_a_sync_error() {
    let t = run(
        config(),
        accept_all,
        &[b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\nSubject: x\r\n"],
    );
    assert_eq!(replies(&t).last().unwrap(), "554 5.5.0 mx.test Error: SMTP protocol synchronization");
    assert!(!events(&t).iter().any(|e| e.starts_with("DataStart")));
}

#[test]
fn plaintext_after_starttls_is_discarded_never_executed() {
    let t = run_all_splits(
        config(),
        accept_all,
        &[b"EHLO c\r\n", b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n", b"MAIL FROM:<a@x.example>\r\nEHLO c\r\n"],
    );
    let ev = events(&t);
    assert!(ev.contains(&"StartTls"));
    assert!(ev.contains(&"PlaintextDiscarded { len: 28 }"), "{ev:?}");
    assert!(!ev.iter().any(|e| e.contains("evil")), "{ev:?}");
    // After the handshake: back to before EHLO, and STARTTLS no longer offered.
    let r = replies(&t);
    assert_eq!(r[2], "220 2.0.0 Ready to start TLS");
    assert_eq!(r[3], "503 5.5.1 Error: send HELO/EHLO first");
    assert!(!t.output_str().rsplit("220 2.0.0").next().unwrap().contains("STARTTLS"));
}

#[test]
fn starttls_twice_and_without_offer() {
    let mut c = config();
    c.capabilities.starttls = false;
    let t = run_all_splits(c, accept_all, &[b"EHLO c\r\nSTARTTLS\r\n"]);
    assert_eq!(replies(&t).last().unwrap(), "502 5.5.1 Error: command not implemented");
    let t = run(config(), accept_all, &[b"EHLO c\r\n", b"STARTTLS\r\n", b"EHLO c\r\nSTARTTLS\r\n"]);
    assert_eq!(replies(&t).last().unwrap(), "554 5.5.1 Error: TLS already active");
}

fn auth_config() -> Config {
    let mut c = config();
    c.capabilities.auth = AuthMechanisms::none().with(AuthMechanisms::PLAIN).with(AuthMechanisms::LOGIN);
    c
}

fn check_creds(ev: &Event<'_>, s: &Server) -> Option<Reply<'static>> {
    if let Event::Auth { .. } = ev {
        return match s.credentials() {
            Some(smtp_proto::sasl::Credentials::Plain { authcid: "user", password: "pass", .. })
            | Some(smtp_proto::sasl::Credentials::Login { username: "user", password: "pass" }) => None,
            _ => Some(Reply::AUTH_FAILED),
        };
    }
    None
}

#[test]
fn auth_needs_tls_unless_allowed() {
    let t = run_all_splits(auth_config(), check_creds, &[b"EHLO c\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\n"]);
    assert_eq!(replies(&t).last().unwrap(), "538 5.7.11 Encryption required for requested authentication mechanism");
    assert!(!t.output_str().contains("AUTH"), "AUTH must not be offered in clear text");
}

#[test]
fn auth_plain_and_login_exchanges() {
    let mut c = auth_config();
    c.allow_insecure_auth = true;
    // PLAIN with initial response, good credentials.
    let t = run_all_splits(c, check_creds, &[b"EHLO c\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\n", b"AUTH PLAIN\r\n"]);
    assert_eq!(replies(&t)[2..], ["235 2.7.0 Authentication successful", "503 5.5.1 Error: already authenticated"]);
    // PLAIN without initial response, wrong password.
    let t = run_all_splits(c, check_creds, &[b"EHLO c\r\nAUTH PLAIN\r\n", b"AHVzZXIAd3Jvbmc=\r\n"]);
    assert_eq!(replies(&t)[2..], ["334 ", "535 5.7.8 Authentication credentials invalid"]);
    // LOGIN in two steps.
    let t = run_all_splits(c, check_creds, &[b"EHLO c\r\nAUTH LOGIN\r\n", b"dXNlcg==\r\n", b"cGFzcw==\r\n"]);
    assert_eq!(replies(&t)[2..], ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "235 2.7.0 Authentication successful"]);
    // Cancel, bad base64, unknown mechanism.
    let t = run_all_splits(
        c,
        check_creds,
        &[b"EHLO c\r\nAUTH LOGIN\r\n", b"*\r\n", b"AUTH PLAIN Zh==\r\nAUTH CRAM-MD5\r\n"],
    );
    assert_eq!(
        replies(&t)[2..],
        [
            "334 VXNlcm5hbWU6",
            "501 5.7.0 Authentication cancelled",
            "501 5.5.2 Cannot decode response",
            "504 5.5.4 Unrecognized authentication type",
        ]
    );
}

#[test]
fn auth_required_before_mail() {
    let mut c = auth_config();
    c.require_auth = true;
    c.allow_insecure_auth = true;
    let t = run_all_splits(
        c,
        check_creds,
        &[b"EHLO c\r\nMAIL FROM:<a@x.example>\r\n", b"AUTH PLAIN AHVzZXIAcGFzcw==\r\nMAIL FROM:<a@x.example>\r\n"],
    );
    assert_eq!(
        replies(&t)[2..],
        ["530 5.7.0 Authentication required", "235 2.7.0 Authentication successful", "250 2.1.0 Sender OK"]
    );
}

#[test]
fn bdat_chunks_stream_without_unstuffing() {
    let t = run_all_splits(
        config(),
        accept_all,
        &[b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nBDAT 7\r\n.\r\nhi\r\nBDAT 6 LAST\r\n\r\n.\r\n.NOOP\r\n"],
    );
    assert_eq!(t.bodies(), [".\\r\\nhi\\r\\n\\r\\n.\\r\\n."]);
    assert!(events(&t).contains(&"DataEnd { size: 13 }"), "{:?}", t.events);
    assert_eq!(replies(&t)[4..], ["250 2.0.0 7 octets received", "250 2.0.0 Message accepted", "250 2.0.0 OK"]);
}

#[test]
fn bdat_refused_chunks_are_skipped_then_answered() {
    let t = run_all_splits(config(), accept_all, &[b"EHLO c\r\nBDAT 6\r\nMAIL FNOOP\r\nBDAT 3 LAST\r\nabcNOOP\r\n"]);
    assert_eq!(
        replies(&t)[1..],
        [
            "250 STARTTLS",
            "503 5.5.1 Error: need MAIL command",
            "250 2.0.0 OK",
            "503 5.5.1 Error: need MAIL command",
            "250 2.0.0 OK"
        ]
    );
    assert!(!events(&t).iter().any(|e| e.starts_with("Mail") || e.starts_with("Data")));
}

#[test]
fn message_size_is_enforced_while_streaming() {
    let mut c = config();
    c.max_message_size = Some(10);
    let t = run_all_splits(
        c,
        accept_all,
        &[b"EHLO c\r\nMAIL FROM:<a@x.example> SIZE=11\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n", b"0123456789abcdef\r\n.\r\nNOOP\r\n"],
    );
    assert_eq!(
        replies(&t)[2..],
        [
            "552 5.3.4 Message size exceeds fixed limit",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "552 5.3.4 Message size exceeds fixed limit",
            "250 2.0.0 OK",
        ]
    );
    let t = run_all_splits(
        c,
        accept_all,
        &[b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nBDAT 8\r\n01234567BDAT 8 LAST\r\n89abcdefNOOP\r\n"],
    );
    assert_eq!(
        replies(&t)[4..],
        ["250 2.0.0 8 octets received", "552 5.3.4 Chunk exceeds message size limit", "250 2.0.0 OK"]
    );
    assert!(events(&t).contains(&"DataAborted { error: TooBig }"));
    assert_eq!(t.bodies(), ["0123456789"], "content passes up to the limit exactly, at any split");
}

#[test]
fn unicode_addresses_need_smtputf8() {
    let script = "EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<jos\u{e9}@y.example>\r\nRSET\r\nMAIL FROM:<a@x.example> SMTPUTF8\r\nRCPT TO:<jos\u{e9}@y.example>\r\n";
    let t = run_all_splits(config(), accept_all, &[script.as_bytes()]);
    assert_eq!(
        replies(&t)[3..],
        [
            "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
            "250 2.0.0 Reset state",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
        ]
    );
}

#[test]
fn lmtp_answers_once_per_recipient() {
    let mut c = config();
    c.lmtp = true;
    let t = run_all_splits(
        c,
        accept_all,
        &[b"EHLO c\r\nLHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<1@y.example>\r\nRCPT TO:<2@y.example>\r\nDATA\r\n", b"x\r\n.\r\n"],
    );
    let r = replies(&t);
    assert_eq!(r[1], "500 5.5.1 Error: command not recognized");
    assert_eq!(r.iter().filter(|l| l.as_str() == "250 2.0.0 Message accepted").count(), 2);
}

#[test]
fn small_commands_and_quit() {
    let t = run_all_splits(
        config(),
        accept_all,
        &[b"HELO c\r\nVRFY bob\r\nEXPN list\r\nHELP\r\nNOOP x\r\nQUIT\r\nNOOP\r\n"],
    );
    assert_eq!(
        replies(&t)[1..],
        [
            "250 mx.test",
            "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
            "502 5.5.1 Error: command not implemented",
            "214 2.0.0 See RFC 5321",
            "250 2.0.0 OK",
            "221 2.0.0 mx.test Bye",
        ]
    );
}

#[test]
fn http_requests_are_cut_off() {
    let t = run_all_splits(config(), accept_all, &[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]);
    assert_eq!(replies(&t)[1..], ["221 2.7.0 mx.test Error: I can break rules, too. Goodbye."]);
}

#[test]
fn timeouts_are_exposed_and_fire_as_421() {
    let mut s = Server::new(config());
    assert_eq!(s.timeout(), Some(std::time::Duration::from_secs(300)));
    s.greet("hi").unwrap();
    let r = s.handle_input(b"EHLO c\r\n").unwrap();
    assert!(matches!(r.progress, Progress::Event(Event::Helo { .. })));
    assert_eq!(s.timeout(), None, "waiting for the application: no peer timeout");
    s.accept().unwrap();
    s.handle_timeout();
    let mut out = [0u8; 1024];
    let n = s.poll_transmit(&mut out);
    assert!(std::str::from_utf8(&out[..n]).unwrap().ends_with("421 4.4.2 mx.test Error: timeout exceeded\r\n"));
    assert!(s.is_closed());
}

#[test]
fn api_misuse_is_a_typed_error() {
    let mut s = Server::new(config());
    assert!(s.accept().is_err());
    s.greet("hi").unwrap();
    assert!(s.greet("again").is_err());
    let _ = s.handle_input(b"EHLO c\r\n").unwrap();
    assert_eq!(s.handle_input(b"NOOP\r\n"), Err(smtp_proto::server::ApiMisuse::DecisionPending));
    assert_eq!(s.reply(Reply::new(354, None, "go")), Err(smtp_proto::server::ApiMisuse::WrongReplyCode));
    s.accept().unwrap();
}

mod props {
    use super::*;
    use proptest::prelude::*;

    const SCRIPTS: &[&[&[u8]]] = &[
        &[
            b"EHLO c\r\n",
            b"MAIL FROM:<a@x.example> BODY=8BITMIME\r\nRCPT TO:<b@y.example> NOTIFY=SUCCESS,FAILURE\r\nRCPT TO:<bad@y.example>\r\nDATA\r\n",
            b"From: a\r\n\r\n..x\r\n.y\r\n\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n",
        ],
        &[b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n", b"a\nb\r\n.\r\nNOOP\r\n"],
        &[b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nBDAT 3\r\nab\rBDAT 2 LAST\r\n\r\nQUIT\r\n"],
        &[b"EHLO c\r\n", b"STARTTLS\r\nRSET\r\n", b"EHLO c\r\nXYZ\r\nMAIL FROM:<>\r\n"],
        &[b"HELO c\r\nMAIL FROM:<a@x.example> SIZE=99999999999\r\nVRFY x\r\nAUTH PLAIN\r\n"],
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn any_split_gives_the_same_transcript(
            script in 0..SCRIPTS.len(),
            cuts in proptest::collection::vec(proptest::collection::vec(0usize..400, 0..12), 3),
        ) {
            let segs = SCRIPTS[script];
            let whole = run(config(), picky, segs);
            let split = common::run_with(config(), picky, segs, &|i, _| cuts.get(i).cloned().unwrap_or_default());
            prop_assert_eq!(whole, split);
        }
    }

    const TOKENS: &[&[u8]] = &[
        b"EHLO c\r\n",
        b"HELO c\r\n",
        b"MAIL FROM:<a@x.example>\r\n",
        b"RCPT TO:<b@y.example>\r\n",
        b"DATA\r\n",
        b"BDAT 4\r\n",
        b"BDAT 2 LAST\r\n",
        b"RSET\r\n",
        b"STARTTLS\r\n",
        b"AUTH LOGIN\r\n",
        b"dXNlcg==\r\n",
        b"*\r\n",
        b".\r\n",
        b"\r\n.\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b".",
        b"..",
        b"\0",
        b"x",
        b"QUIT\r\n",
        b"MAIL FROM:<j\xc3\xa9@x.example> SMTPUTF8\r\n",
        b"\xff\xfe",
        b"NOOP\r\n",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_token_streams_split_anywhere_give_the_same_transcript(
            toks in proptest::collection::vec(0..TOKENS.len(), 0..40),
            cuts in proptest::collection::vec(0usize..600, 0..20),
            allow in any::<bool>(),
        ) {
            let input: Vec<u8> = toks.iter().flat_map(|&i| TOKENS[i].iter().copied()).collect();
            let mut c = config();
            c.reject_pipelined_data = false;
            c.allow_insecure_auth = true;
            c.capabilities.auth = AuthMechanisms::none().with(AuthMechanisms::LOGIN);
            if allow {
                c.bare_line_endings = BarePolicy::Allow;
            }
            let whole = run(c, picky, &[&input]);
            let split = common::run_with(c, picky, &[&input], &|_, _| cuts.clone());
            prop_assert_eq!(whole, split);
        }
    }
}

/// Found by the `server_split` fuzz target: a line longer than the buffer limit arriving with
/// the next lines in the same read must not swallow them.
#[test]
fn an_over_long_line_followed_by_more_lines_in_one_read() {
    let mut c = config();
    c.max_command_line = 64;
    c.max_auth_line = 128;
    let mut input = vec![0xf9u8; 300];
    input.extend_from_slice(b"\n\xff\n\nNOOP\r\n");
    c.bare_line_endings = BarePolicy::Allow;
    let t = run_all_splits(c, accept_all, &[&input]);
    assert_eq!(
        replies(&t)[1..],
        [
            "500 5.5.2 Error: command line too long",
            "500 5.5.2 Error: bad UTF-8 syntax",
            "500 5.5.1 Error: command not recognized",
            "250 2.0.0 OK"
        ]
    );
}

/// Mechanisms the core does not decode (SCRAM, CRAM-MD5, ...) are driven by the application
/// with `auth_challenge` and `Event::AuthResponse`.
#[test]
fn application_driven_sasl_exchange() {
    let mut c = config();
    c.capabilities.auth = AuthMechanisms::none().with(AuthMechanisms::CRAM_MD5);
    c.allow_insecure_auth = true;
    let mut s = Server::new(c);
    s.greet("hi").unwrap();
    let mut out = [0u8; 2048];
    let mut input: &[u8] = b"EHLO c\r\n";
    let r = s.handle_input(input).unwrap();
    input = &input[r.consumed..];
    assert!(input.is_empty());
    s.accept().unwrap();
    let _ = s.poll_transmit(&mut out);
    let r = s.handle_input(b"AUTH CRAM-MD5\r\n").unwrap();
    assert!(matches!(r.progress, Progress::Event(Event::Auth { mechanism: smtp_proto::sasl::Mechanism::CramMd5 })));
    assert_eq!(s.sasl_data(), b"");
    s.auth_challenge(b"<1896.697170952@postoffice.example.net>").unwrap();
    let n = s.poll_transmit(&mut out);
    assert_eq!(&out[..n], b"334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UuZXhhbXBsZS5uZXQ+\r\n");
    let r = s.handle_input(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n").unwrap();
    assert_eq!(r.progress, Progress::Event(Event::AuthResponse));
    assert_eq!(s.sasl_data(), b"tim b913a602c7eda7a495b4e6e7334d3890");
    assert!(s.credentials().is_none());
    s.accept().unwrap();
    let n = s.poll_transmit(&mut out);
    assert_eq!(&out[..n], b"235 2.7.0 Authentication successful\r\n");
    assert!(s.is_authenticated());
}
