//! Scripted sessions through the server core, each run whole, byte by byte, split at every
//! index and at every pair of indices: all must give the same events and reply bytes.

use smtp_proto::data::BarePolicy;
use smtp_proto::ehlo::AuthMechanisms;
use smtp_proto::reply::Reply;
use smtp_proto::server::{ApiMisuse, Config, Event, Progress, Server, Timeouts};
use smtp_proto::testing::{self as common, accept_all, picky, run, run_all_splits, Transcript};
use std::time::Duration;

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
    let t = run_all_splits(config(), accept_all, &[b"EHLO c\r\n", &line]);
    assert_eq!(replies(&t)[2..], ["500 5.5.2 Error: command line too long", "250 2.0.0 OK"]);
    // The core never needs more than min_input_buffer bytes of the line.
    let t2 =
        common::run_with(config(), accept_all, &[b"EHLO c\r\n", &line], &|_, s| (1..s.len()).step_by(1000).collect());
    assert_eq!(t, t2);
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
    assert_eq!(events(&t), ["Helo { host: \"c\", kind: Ehlo }"], "STARTTLS never reaches the application");
    let t = run_all_splits(config(), accept_all, &[b"EHLO c\r\n", b"STARTTLS\r\n", b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n"]);
    assert_eq!(
        replies(&t)[1..],
        [
            "250 STARTTLS",
            "220 2.0.0 Ready to start TLS",
            // STARTTLS is no longer offered (it was the last EHLO line).
            "250 ENHANCEDSTATUSCODES",
            "554 5.5.1 Error: TLS already active",
            "250 2.0.0 OK",
        ]
    );
    assert_eq!(events(&t).iter().filter(|e| **e == "StartTls").count(), 1);
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

/// One command or SASL line in, the event it gives (the input fully consumed).
fn line_event<'b>(s: &mut Server, line: &'b [u8]) -> Progress<'b> {
    let r = s.handle_input(line).unwrap();
    assert_eq!(r.consumed, line.len());
    r.progress
}

fn transmit(s: &mut Server) -> String {
    let mut out = [0u8; 4096];
    let n = s.poll_transmit(&mut out);
    String::from_utf8(out[..n].to_vec()).unwrap()
}

#[test]
fn oauth_mechanisms_through_the_state_machine() {
    use smtp_proto::sasl::{Credentials, Mechanism};
    let mut c = config();
    c.capabilities.auth = AuthMechanisms::none().with(AuthMechanisms::XOAUTH2).with(AuthMechanisms::OAUTHBEARER);
    c.allow_insecure_auth = true;
    let mut s = Server::new(c);
    s.greet("hi").unwrap();
    assert!(matches!(line_event(&mut s, b"EHLO c\r\n"), Progress::Event(Event::Helo { .. })));
    s.accept().unwrap();
    let ehlo = transmit(&mut s);
    assert!(ehlo.contains("AUTH XOAUTH2 OAUTHBEARER\r\n"), "{ehlo}");

    // OAUTHBEARER without an initial response, refused the RFC 7628 way: 334 with the JSON
    // error status, the client's %x01, then 535.
    assert_eq!(line_event(&mut s, b"AUTH OAUTHBEARER\r\n"), Progress::NeedInput);
    assert_eq!(transmit(&mut s), "334 \r\n");
    let gs2 = b"n,a=user@example.com,\x01host=mx.example\x01port=587\x01auth=Bearer bad-token\x01\x01";
    let mut b64 = [0u8; 256];
    let n = smtp_proto::sasl::encode_base64(gs2, &mut b64).unwrap();
    let line = [&b64[..n], b"\r\n"].concat();
    assert_eq!(line_event(&mut s, &line), Progress::Event(Event::Auth { mechanism: Mechanism::OAuthBearer }));
    assert_eq!(
        s.credentials(),
        Some(Credentials::OAuthBearer {
            authzid: Some("user@example.com"),
            host: Some("mx.example"),
            port: Some(587),
            token: "bad-token"
        })
    );
    let error = br#"{"status":"invalid_token","scope":"mail"}"#;
    s.auth_challenge(error).unwrap();
    let challenge = transmit(&mut s);
    let encoded = challenge.strip_prefix("334 ").and_then(|c| c.strip_suffix("\r\n")).unwrap();
    let mut decoded = [0u8; 128];
    let n = smtp_proto::sasl::decode_base64(encoded.as_bytes(), &mut decoded).unwrap();
    assert_eq!(&decoded[..n], error);
    assert_eq!(line_event(&mut s, b"AQ==\r\n"), Progress::Event(Event::AuthResponse));
    assert_eq!(s.sasl_data(), b"\x01");
    s.reply(Reply::AUTH_FAILED).unwrap();
    assert_eq!(transmit(&mut s), "535 5.7.8 Authentication credentials invalid\r\n");
    assert!(!s.is_authenticated());

    // XOAUTH2 with an initial response, accepted.
    let x = b"user=me@example.com\x01auth=Bearer good\x01\x01";
    let n = smtp_proto::sasl::encode_base64(x, &mut b64).unwrap();
    let line = [b"AUTH XOAUTH2 ", &b64[..n], b"\r\n"].concat();
    assert_eq!(line_event(&mut s, &line), Progress::Event(Event::Auth { mechanism: Mechanism::XOAuth2 }));
    assert_eq!(s.credentials(), Some(Credentials::XOAuth2 { user: "me@example.com", token: "good" }));
    s.accept().unwrap();
    assert_eq!(transmit(&mut s), "235 2.7.0 Authentication successful\r\n");
    assert!(s.is_authenticated());

    // A challenge is refused where the core ran a password exchange.
    let mut c = auth_config();
    c.allow_insecure_auth = true;
    let mut s = Server::new(c);
    s.greet("hi").unwrap();
    let _ = line_event(&mut s, b"EHLO c\r\n");
    s.accept().unwrap();
    let _ = transmit(&mut s);
    assert!(matches!(line_event(&mut s, b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n"), Progress::Event(Event::Auth { .. })));
    assert_eq!(s.auth_challenge(b"x"), Err(ApiMisuse::NoAuthPending));
}

// ---- MAIL/RCPT parameters the core does not know belong to the application ----

/// An application that implements one extension parameter, `X-OK=1`, on MAIL and RCPT and
/// refuses any other unknown parameter with `555 5.5.4`: a reply therefore shows exactly which
/// unknown parameters reached it.
fn only_x_ok(ev: &Event<'_>, _: &Server) -> Option<Reply<'static>> {
    let unknown: Vec<(&str, Option<&str>)> = match ev {
        Event::Mail { params, .. } => params.unknown.iter().collect(),
        Event::Rcpt { params, .. } => params.unknown.iter().collect(),
        _ => return None,
    };
    match unknown.as_slice() {
        [] | [("X-OK", Some("1"))] => None,
        _ => Some(Reply::UNSUPPORTED_PARAMETER),
    }
}

#[test]
fn unknown_parameters_reach_the_application_which_answers_555() {
    let t = run_all_splits(
        config(),
        only_x_ok,
        &[
            b"EHLO c\r\nMAIL FROM:<a@x.example> SIZE=10 X-FOO=bar BODY=8BITMIME XYZ\r\nRCPT TO:<b@y.example>\r\n",
            b"MAIL FROM:<a@x.example> SIZE=10 X-OK=1 BODY=8BITMIME\r\n",
            b"RCPT TO:<b@y.example> NOTIFY=NEVER X-OK=1\r\nRCPT TO:<c@y.example> x-ok=1\r\n\
              RCPT TO:<d@y.example> X-OK=1 X-OK=2\r\nRCPT TO:<e@y.example> X-OK=1=2\r\nDATA\r\n",
            b"hi\r\n.\r\n",
        ],
    );
    assert_eq!(
        replies(&t)[2..],
        [
            "555 5.5.4 Unsupported option",
            // The refused MAIL opened no transaction.
            "503 5.5.1 Error: need MAIL command",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            // Raw: the keyword as sent, not case-folded into the one the application knows.
            "555 5.5.4 Unsupported option",
            // Every unknown parameter, repeats included.
            "555 5.5.4 Unsupported option",
            // Not esmtp-param syntax (`=` in the value): the core's business, never the
            // application's.
            "501 5.5.4 Bad parameter syntax",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Message accepted",
        ]
    );
    let ev = events(&t);
    assert_eq!(ev.iter().filter(|e| e.starts_with("Mail")).count(), 2, "{ev:?}");
    assert_eq!(ev.iter().filter(|e| e.starts_with("Rcpt")).count(), 3, "{ev:?}");
    assert!(!ev.iter().any(|e| e.contains("e@y.example") || e.contains("1=2")), "{ev:?}");
    assert_eq!(t.bodies(), ["hi\\r\\n"]);
}

/// The same, driven by hand to look at the parameters themselves: known ones typed, unknown
/// ones raw and in order, the known ones skipped.
#[test]
fn unknown_parameters_are_raw_and_in_order() {
    let mut s = Server::new(config());
    s.greet("hi").unwrap();
    let mut out = [0u8; 1024];
    let r = s.handle_input(b"EHLO c\r\n").unwrap();
    assert!(matches!(r.progress, Progress::Event(Event::Helo { .. })));
    s.accept().unwrap();
    let _ = s.poll_transmit(&mut out);

    let line = "MAIL FROM:<a@x.example> SIZE=10 X-FOO=bar BODY=8BITMIME XYZ X-J=\u{e9}\r\n";
    let r = s.handle_input(line.as_bytes()).unwrap();
    assert_eq!(r.consumed, line.len());
    let Progress::Event(Event::Mail { params, .. }) = r.progress else { panic!("{:?}", r.progress) };
    assert_eq!(params.size, Some(10));
    assert_eq!(params.body, Some(smtp_proto::parse::Body::EightBitMime));
    assert_eq!(
        params.unknown.iter().collect::<Vec<_>>(),
        [("X-FOO", Some("bar")), ("XYZ", None), ("X-J", Some("\u{e9}"))]
    );
    s.reply(Reply::UNSUPPORTED_PARAMETER).unwrap();
    let n = s.poll_transmit(&mut out);
    assert_eq!(&out[..n], b"555 5.5.4 Unsupported option\r\n");
    assert!(!s.in_transaction());

    let r = s.handle_input(b"MAIL FROM:<>\r\n").unwrap();
    assert!(matches!(r.progress, Progress::Event(Event::Mail { from: smtp_proto::parse::ReversePath::Null, .. })));
    s.accept().unwrap();
    let r = s.handle_input(b"RCPT TO:<b@y.example> FOO=1 NOTIFY=NEVER bar\r\n").unwrap();
    let Progress::Event(Event::Rcpt { params, .. }) = r.progress else { panic!("{:?}", r.progress) };
    assert_eq!(params.notify, Some(smtp_proto::parse::Notify::NEVER));
    assert_eq!(params.unknown.iter().collect::<Vec<_>>(), [("FOO", Some("1")), ("bar", None)]);
    s.reply(Reply::UNSUPPORTED_PARAMETER).unwrap();
    let n = s.poll_transmit(&mut out);
    assert_eq!(&out[..n], b"250 2.1.0 Sender OK\r\n555 5.5.4 Unsupported option\r\n");
    assert_eq!(s.recipients(), 0);
    assert!(s.in_transaction());
}

// ---- the text line limit in DATA ----

fn open_data() -> &'static [u8] {
    b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n"
}

#[test]
fn an_over_long_text_line_is_refused_after_the_real_end_of_data() {
    let mut c = config();
    c.max_text_line = Some(16);
    let t = run_all_splits(
        c,
        accept_all,
        &[
            open_data(),
            // 14 + CRLF: at the limit; a stuffing dot does not count.
            b"0123456789abcd\r\n..123456789abcd\r\n.\r\n",
            b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n",
            // 15 + CRLF: one over. What follows it is still message content up to CRLF.CRLF.
            b"short\r\n0123456789abcde\r\nMAIL FROM:<evil@x.example>\r\n.\r\nNOOP\r\n",
            b"RCPT TO:<b@y.example>\r\nMAIL FROM:<a@x.example>\r\n",
        ],
    );
    assert_eq!(
        replies(&t)[2..],
        [
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Message accepted",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "500 5.5.2 Error: message line too long",
            "250 2.0.0 OK",
            // The refused message ended its transaction.
            "503 5.5.1 Error: need MAIL command",
            "250 2.1.0 Sender OK",
        ]
    );
    let ev = events(&t);
    assert!(ev.contains(&"DataEnd { size: 32 }"), "{ev:?}");
    assert_eq!(
        ev.iter().copied().filter(|e| e.starts_with("DataAborted")).collect::<Vec<_>>(),
        ["DataAborted { error: LineTooLong }"]
    );
    assert_eq!(ev.iter().filter(|e| e.starts_with("DataEnd")).count(), 1, "{ev:?}");
    assert!(!ev.iter().any(|e| e.contains("evil")), "{ev:?}");
    let bodies = t.bodies();
    assert_eq!(bodies[0], "0123456789abcd\\r\\n.123456789abcd\\r\\n");
    // Content passes up to the limit exactly (16 octets of the long line), then nothing more:
    // at any split.
    assert_eq!(bodies[1], "short\\r\\n0123456789abcde\\r");
}

#[test]
fn the_default_text_line_limit() {
    let c = config();
    let limit = c.max_text_line.expect("a text line limit by default");
    let line = |len: usize| {
        let mut l = vec![b'x'; len - 2];
        l.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
        l
    };
    let t = run_all_splits(c, accept_all, &[open_data(), &line(limit)]);
    assert_eq!(replies(&t)[5..], ["250 2.0.0 Message accepted", "250 2.0.0 OK"]);
    let t = run_all_splits(c, accept_all, &[open_data(), &line(limit + 1)]);
    assert_eq!(replies(&t)[5..], ["500 5.5.2 Error: message line too long", "250 2.0.0 OK"]);
    // No limit: a long line is content like any other.
    let mut c = config();
    c.max_text_line = None;
    let t = run(c, accept_all, &[open_data(), &line(limit * 10)]);
    assert_eq!(replies(&t)[5..], ["250 2.0.0 Message accepted", "250 2.0.0 OK"]);
}

// ---- the AUTH line limit ----

fn b64(data: &[u8]) -> String {
    let mut out = vec![0u8; data.len() * 2 + 4];
    let n = smtp_proto::sasl::encode_base64(data, &mut out).unwrap();
    String::from_utf8(out[..n].to_vec()).unwrap()
}

#[test]
fn an_over_long_auth_response_line_is_500_5_5_6_and_sync_holds() {
    let mut c = auth_config();
    c.allow_insecure_auth = true;
    c.max_auth_line = 32;
    // PLAIN credentials user/pass with an authorization identity to set the length:
    // 21 octets are 28 base64 characters (30 with CRLF, under the limit); 22 octets are 32
    // (34 with CRLF, over it).
    let fits = format!("{}\r\n", b64(b"abcdefghijk\0user\0pass"));
    let over = format!("{}\r\n", b64(b"abcdefghijkl\0user\0pass"));
    assert!(fits.len() <= c.max_auth_line && over.len() > c.max_auth_line);
    let t = run_all_splits(
        c,
        check_creds,
        &[b"EHLO c\r\nAUTH PLAIN\r\n", over.as_bytes(), b"NOOP\r\nAUTH PLAIN\r\n", fits.as_bytes(), b"NOOP\r\n"],
    );
    assert_eq!(
        replies(&t)[2..],
        [
            "334 ",
            "500 5.5.6 Authentication exchange line is too long",
            // Back to commands: the rest of the over-long line was not taken for one.
            "250 2.0.0 OK",
            "334 ",
            "235 2.7.0 Authentication successful",
            "250 2.0.0 OK",
        ]
    );
    assert_eq!(events(&t).iter().filter(|e| e.starts_with("Auth")).count(), 1);

    // The same with the default limit, read from the configuration, in LOGIN's second step.
    let mut c = auth_config();
    c.allow_insecure_auth = true;
    let mut long = vec![b'A'; c.max_auth_line];
    long.extend_from_slice(b"\r\nNOOP\r\n");
    let script: [&[u8]; 3] = [b"EHLO c\r\nAUTH LOGIN\r\ndXNlcg==\r\n", &long, b"AUTH LOGIN\r\n"];
    let t = run(c, check_creds, &script);
    assert_eq!(
        replies(&t)[2..],
        [
            "334 VXNlcm5hbWU6",
            "334 UGFzc3dvcmQ6",
            "500 5.5.6 Authentication exchange line is too long",
            "250 2.0.0 OK",
            "334 VXNlcm5hbWU6",
        ]
    );
    let steps = common::run_with(c, check_creds, &script, &|_, s| (1..s.len()).step_by(997).collect());
    assert_eq!(t, steps);
    let bytewise = common::run_with(c, check_creds, &script, &|_, s| (1..s.len()).collect());
    assert_eq!(t, bytewise);
}

#[test]
fn an_auth_command_line_has_the_auth_line_limit() {
    // PLAIN with an initial response of 29 octets (40 base64 characters): the AUTH command
    // line is 53 octets with CRLF.
    let line = format!("AUTH PLAIN {}\r\n", b64(b"abcdefghijklmnopqrs\0user\0pass"));
    assert_eq!(line.len(), 53);
    let script = |line: &str| format!("EHLO c\r\n{line}NOOP\r\n").into_bytes();

    // Under a command line limit of 32, the AUTH line is still read whole: its own limit is 64.
    let mut c = auth_config();
    c.allow_insecure_auth = true;
    c.max_command_line = 32;
    c.max_auth_line = 64;
    let t = run_all_splits(c, check_creds, &[&script(&line)]);
    assert_eq!(replies(&t)[2..], ["235 2.7.0 Authentication successful", "250 2.0.0 OK"]);
    // ... while any other line of that length breaks the command line limit.
    let noop = format!("NOOP {}\r\n", "x".repeat(line.len() - 7));
    let t = run_all_splits(c, check_creds, &[&script(&noop)]);
    assert_eq!(replies(&t)[2..], ["500 5.5.2 Error: command line too long", "250 2.0.0 OK"]);

    // Over the AUTH line limit (48 < 53 <= the command line limit): 500 5.5.6, never read as
    // a command, and the session goes on with the next line.
    c.max_command_line = 512;
    c.max_auth_line = 48;
    let t = run_all_splits(c, check_creds, &[&script(&line)]);
    assert_eq!(replies(&t)[2..], ["500 5.5.6 Authentication exchange line is too long", "250 2.0.0 OK"]);
    assert!(!events(&t).iter().any(|e| e.starts_with("Auth")));

    // The defaults: an AUTH line longer than the command line limit but within the AUTH limit
    // is an AUTH command (here with a response that is not base64: 501 from the SASL
    // decoder, not 500 5.5.2 from the line limit); past the AUTH limit it is 500 5.5.6.
    let mut c = auth_config();
    c.allow_insecure_auth = true;
    assert!(c.max_auth_line > c.max_command_line + 8);
    let long = |n: usize| format!("AUTH PLAIN {}\r\n", "A".repeat(n - 13));
    let t = run(c, check_creds, &[&script(&long(c.max_command_line + 4))]);
    assert_eq!(replies(&t)[2..], ["501 5.5.2 Malformed authentication data", "250 2.0.0 OK"]);
    let t = run(c, check_creds, &[&script(&long(c.max_auth_line + 4))]);
    assert_eq!(replies(&t)[2..], ["500 5.5.6 Authentication exchange line is too long", "250 2.0.0 OK"]);
}

// ---- timeouts ----

fn feed_one<'b>(s: &mut Server, input: &'b [u8]) -> Progress<'b> {
    let r = s.handle_input(input).unwrap();
    assert_eq!(r.consumed, input.len(), "{:?}", r.progress);
    r.progress
}

fn drain_str(s: &mut Server) -> String {
    let mut out = [0u8; 4096];
    let n = s.poll_transmit(&mut out);
    String::from_utf8(out[..n].to_vec()).unwrap()
}

/// A configuration whose three timeouts differ, so that which one applies is visible.
fn distinct_timeouts() -> Config {
    let mut c = config();
    c.timeouts = Timeouts {
        command: Duration::from_secs(11),
        data: Duration::from_secs(22),
        tls_handshake: Duration::from_secs(33),
    };
    c
}

#[test]
fn the_data_timeout_applies_while_content_is_expected() {
    let c = distinct_timeouts();
    let t = c.timeouts;
    let mut s = Server::new(c);
    s.greet("hi").unwrap();
    assert!(matches!(feed_one(&mut s, b"EHLO c\r\n"), Progress::Event(Event::Helo { .. })));
    s.accept().unwrap();
    assert!(matches!(feed_one(&mut s, b"MAIL FROM:<a@x.example>\r\n"), Progress::Event(Event::Mail { .. })));
    s.accept().unwrap();
    assert!(matches!(feed_one(&mut s, b"RCPT TO:<b@y.example>\r\n"), Progress::Event(Event::Rcpt { .. })));
    s.accept().unwrap();
    assert_eq!(s.timeout(), Some(t.command));
    assert!(matches!(feed_one(&mut s, b"DATA\r\n"), Progress::Event(Event::DataStart { chunked: false })));
    assert_eq!(s.timeout(), None, "the application decides");
    s.accept().unwrap();
    assert_eq!(s.timeout(), Some(t.data), "after 354");
    assert_eq!(feed_one(&mut s, b"Subject: x\r\n"), Progress::Event(Event::Data(b"Subject: x\r\n")));
    assert_eq!(s.timeout(), Some(t.data), "between pieces of content");
    assert_eq!(feed_one(&mut s, b"\r\n"), Progress::Event(Event::Data(b"\r\n")));
    assert_eq!(s.timeout(), Some(t.data));
    // The caller says it fired: 421 4.4.2, closed, no end of data, nothing more read.
    s.handle_timeout();
    let out = drain_str(&mut s);
    assert!(
        out.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n421 4.4.2 mx.test Error: timeout exceeded\r\n"),
        "{out:?}"
    );
    assert!(s.is_closed());
    assert_eq!(s.timeout(), None);
    let r = s.handle_input(b".\r\nQUIT\r\n").unwrap();
    assert_eq!(r.progress, Progress::Closed);
    assert_eq!(drain_str(&mut s), "", "one 421, nothing after it");

    // After the end of the content the command timeout is back.
    let mut s = Server::new(c);
    s.greet("hi").unwrap();
    for line in [&b"EHLO c\r\n"[..], b"MAIL FROM:<a@x.example>\r\n", b"RCPT TO:<b@y.example>\r\n", b"DATA\r\n"] {
        let _ = feed_one(&mut s, line);
        s.accept().unwrap();
    }
    assert_eq!(feed_one(&mut s, b"x\r\n"), Progress::Event(Event::Data(b"x\r\n")));
    assert_eq!(feed_one(&mut s, b".\r\n"), Progress::Event(Event::DataEnd { size: 3 }));
    assert_eq!(s.timeout(), None);
    s.accept().unwrap();
    assert_eq!(s.timeout(), Some(t.command));

    // BDAT: the data timeout while a chunk's octets are outstanding.
    let mut s = Server::new(c);
    s.greet("hi").unwrap();
    for line in [&b"EHLO c\r\n"[..], b"MAIL FROM:<a@x.example>\r\n", b"RCPT TO:<b@y.example>\r\n", b"BDAT 10\r\n"] {
        let _ = feed_one(&mut s, line);
        s.accept().unwrap();
    }
    assert_eq!(s.timeout(), Some(t.data));
    assert_eq!(feed_one(&mut s, b"01234"), Progress::Event(Event::Data(b"01234")));
    assert_eq!(s.timeout(), Some(t.data));
    s.handle_timeout();
    assert!(drain_str(&mut s).ends_with("421 4.4.2 mx.test Error: timeout exceeded\r\n"));
    assert!(s.is_closed());
}

#[test]
fn the_default_data_timeout_comes_from_the_configuration() {
    let c = config();
    let mut s = Server::new(c);
    s.greet("hi").unwrap();
    for line in [&b"EHLO c\r\n"[..], b"MAIL FROM:<a@x.example>\r\n", b"RCPT TO:<b@y.example>\r\n", b"DATA\r\n"] {
        let _ = feed_one(&mut s, line);
        s.accept().unwrap();
    }
    assert_eq!(s.timeout(), Some(c.timeouts.data));
    assert_eq!(c.timeouts, Timeouts::default());
    // RFC 5321 §4.5.3.2: never below the client's own data block timer (3 minutes), and the
    // command timeout at least 5 minutes.
    assert!(c.timeouts.data >= Duration::from_secs(180), "{:?}", c.timeouts);
    assert!(c.timeouts.command >= Duration::from_secs(300), "{:?}", c.timeouts);
}

#[test]
fn the_tls_handshake_timeout_applies_after_starttls() {
    let c = distinct_timeouts();
    let t = c.timeouts;
    let start = || {
        let mut s = Server::new(c);
        s.greet("hi").unwrap();
        let _ = feed_one(&mut s, b"EHLO c\r\n");
        s.accept().unwrap();
        assert_eq!(feed_one(&mut s, b"STARTTLS\r\n"), Progress::Event(Event::StartTls));
        assert_eq!(s.timeout(), None);
        s.accept().unwrap();
        assert!(s.is_tls_pending());
        assert!(drain_str(&mut s).ends_with("220 2.0.0 Ready to start TLS\r\n"));
        s
    };
    let mut s = start();
    assert_eq!(s.timeout(), Some(t.tls_handshake));
    // Plaintext while the handshake is due changes nothing.
    assert_eq!(feed_one(&mut s, b"NOOP\r\n"), Progress::Event(Event::PlaintextDiscarded { len: 6 }));
    assert_eq!(s.timeout(), Some(t.tls_handshake));
    s.handle_timeout();
    assert_eq!(drain_str(&mut s), "421 4.4.2 mx.test Error: timeout exceeded\r\n");
    assert!(s.is_closed());
    assert_eq!(s.timeout(), None);
    assert_eq!(s.tls_established(), Err(ApiMisuse::NoTlsPending), "too late");
    assert!(!s.is_tls());

    // A handshake in time: the command timeout again, for the new EHLO.
    let mut s = start();
    s.tls_established().unwrap();
    assert_eq!(s.timeout(), Some(t.command));
    assert!(matches!(feed_one(&mut s, b"EHLO c\r\n"), Progress::Event(Event::Helo { .. })));
}

// ---- the synchronisation checks, turned off ----

#[test]
fn without_early_talker_detection_input_waits_for_the_greeting() {
    let mut c = config();
    c.reject_early_talkers = false;
    let script: &[u8] = b"EHLO c\r\nMAIL FROM:<a@x.example>\r\n";
    for cut in 1..=script.len() {
        let mut s = Server::new(c);
        // Nothing to do with bytes before the greeting: the caller must keep them (nothing is
        // consumed) and greet first. Not a reply to the peer, not a closed session.
        assert_eq!(s.handle_input(&script[..cut]), Err(ApiMisuse::Greeting));
        assert!(!s.is_closed());
        assert!(!s.has_output());
        assert_eq!(s.handle_input(b"").unwrap().progress, Progress::NeedInput);
        s.greet("hi").unwrap();
        assert!(drain_str(&mut s).starts_with("220 mx.test hi"));
        // Then the early bytes are processed like any others.
        let r = s.handle_input(script).unwrap();
        assert!(matches!(r.progress, Progress::Event(Event::Helo { host: "c", .. })));
        s.accept().unwrap();
        let r2 = s.handle_input(&script[r.consumed..]).unwrap();
        assert!(matches!(r2.progress, Progress::Event(Event::Mail { .. })), "{:?}", r2.progress);
        assert_eq!(r.consumed + r2.consumed, script.len());
    }
    // With detection on (the default) the same bytes end the session.
    let mut s = Server::new(config());
    assert_eq!(s.handle_input(script).unwrap().progress, Progress::Closed);
    assert!(s.is_closed());
    // Either way a greeted session is the same.
    let t = run_all_splits(c, accept_all, &[script]);
    assert_eq!(t, run_all_splits(config(), accept_all, &[script]));
}

#[test]
fn without_the_pipelined_data_check_content_after_data_is_accepted() {
    let mut c = config();
    c.reject_pipelined_data = false;
    let script: &[u8] = b"EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n\
        Subject: x\r\n\r\nhi\r\n.\r\nMAIL FROM:<c@x.example>\r\nQUIT\r\n";
    let t = run_all_splits(c, accept_all, &[script]);
    assert_eq!(
        replies(&t)[2..],
        [
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Message accepted",
            "250 2.1.0 Sender OK",
            "221 2.0.0 mx.test Bye",
        ]
    );
    assert_eq!(t.bodies(), ["Subject: x\\r\\n\\r\\nhi\\r\\n"]);
    assert_eq!(events(&t).iter().filter(|e| e.starts_with("Mail")).count(), 2);
    // The same bytes in one read with the check on (the default): 554 and close, no content.
    let t = run(config(), accept_all, &[script]);
    assert_eq!(replies(&t).last().unwrap(), "554 5.5.0 mx.test Error: SMTP protocol synchronization");
    assert!(t.bodies().is_empty());
    // The check is about bytes the client sent before our 354: content that waited for it is
    // fine, at any split of what follows.
    let (head, tail) = script.split_at(script.windows(6).position(|w| w == b"DATA\r\n").unwrap() + 6);
    let t2 = run_all_splits(config(), accept_all, &[head, tail]);
    assert_eq!(replies(&t2)[2..], replies(&run_all_splits(c, accept_all, &[script]))[2..]);
}

// ---- SMTPUTF8 on the sender ----

#[test]
fn a_unicode_sender_needs_smtputf8() {
    let script = "EHLO c\r\nMAIL FROM:<jos\u{e9}@x.example>\r\nMAIL FROM:<a@b\u{fc}cher.example>\r\n\
        MAIL FROM:<jos\u{e9}@x.example> SMTPUTF8\r\nRCPT TO:<\u{65e5}@y.example>\r\n";
    let t = run_all_splits(config(), accept_all, &[script.as_bytes()]);
    assert_eq!(
        replies(&t)[2..],
        [
            "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
            "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
        ]
    );
    let ev = events(&t);
    assert_eq!(ev.iter().filter(|e| e.starts_with("Mail")).count(), 1, "the refused ones never reach the application");
    // Not offered: declaring SMTPUTF8 is an unsupported parameter, not declaring it still 553.
    let mut c = config();
    c.capabilities.smtputf8 = false;
    let script = "EHLO c\r\nMAIL FROM:<jos\u{e9}@x.example> SMTPUTF8\r\nMAIL FROM:<jos\u{e9}@x.example>\r\n";
    let t = run_all_splits(c, accept_all, &[script.as_bytes()]);
    assert_eq!(
        replies(&t)[2..],
        ["555 5.5.4 Unsupported option", "553 5.6.7 Must declare SMTPUTF8 to send unicode address"]
    );
    assert!(!t.output_str().contains("250-SMTPUTF8\r\n") && !t.output_str().contains("250 SMTPUTF8\r\n"));
}

#[test]
fn what_a_caller_needs_for_deadlines_discarded_lines_and_messages_in_progress() {
    let mut c = config();
    c.max_command_line = 32;
    let mut s = Server::new(c);
    s.greet("hi").unwrap();
    assert!(!s.is_discarding_line() && !s.is_receiving_message());
    // An unfinished line stays unconsumed: the caller sees it in its buffer.
    let r = s.handle_input(b"EHLO c").unwrap();
    assert_eq!((r.consumed, r.progress), (0, Progress::NeedInput));
    assert!(!s.is_discarding_line());
    // An over-long one is consumed as it comes: only the core knows it goes on.
    let long = [b'x'; 40];
    let r = s.handle_input(&long).unwrap();
    assert_eq!((r.consumed, r.progress), (40, Progress::NeedInput));
    assert!(s.is_discarding_line());
    assert_eq!(feed_one(&mut s, b"xx"), Progress::NeedInput);
    assert!(s.is_discarding_line());
    assert_eq!(feed_one(&mut s, b"\r\n"), Progress::NeedInput);
    assert!(!s.is_discarding_line());
    assert!(drain_str(&mut s).ends_with("500 5.5.2 Error: command line too long\r\n"));

    // DATA: from the 354 to the end of the content.
    for line in [&b"EHLO c\r\n"[..], b"MAIL FROM:<a@x.example>\r\n", b"RCPT TO:<b@y.example>\r\n", b"DATA\r\n"] {
        assert!(!s.is_receiving_message());
        let _ = feed_one(&mut s, line);
        s.accept().unwrap();
    }
    assert!(s.is_receiving_message());
    assert_eq!(feed_one(&mut s, b"x\r\n"), Progress::Event(Event::Data(b"x\r\n")));
    assert!(s.is_receiving_message());
    assert_eq!(feed_one(&mut s, b".\r\n"), Progress::Event(Event::DataEnd { size: 3 }));
    s.accept().unwrap();
    assert!(!s.is_receiving_message());

    // BDAT: from the first chunk to the decision on the LAST one, pauses between chunks too.
    for line in [&b"MAIL FROM:<a@x.example>\r\n"[..], b"RCPT TO:<b@y.example>\r\n", b"BDAT 3\r\n"] {
        assert!(!s.is_receiving_message());
        let _ = feed_one(&mut s, line);
        s.accept().unwrap();
    }
    assert!(s.is_receiving_message());
    assert_eq!(feed_one(&mut s, b"abc"), Progress::Event(Event::Data(b"abc")));
    assert_eq!(feed_one(&mut s, b""), Progress::NeedInput);
    assert!(s.is_receiving_message(), "between chunks");
    assert_eq!(feed_one(&mut s, b"BDAT 2 LAST\r\n"), Progress::NeedInput);
    assert!(s.is_receiving_message());
    assert_eq!(feed_one(&mut s, b"de"), Progress::Event(Event::Data(b"de")));
    assert_eq!(feed_one(&mut s, b""), Progress::Event(Event::DataEnd { size: 5 }));
    s.accept().unwrap();
    assert!(!s.is_receiving_message());
    // RSET between chunks ends the message.
    for line in [&b"MAIL FROM:<a@x.example>\r\n"[..], b"RCPT TO:<b@y.example>\r\n", b"BDAT 1\r\n"] {
        let _ = feed_one(&mut s, line);
        s.accept().unwrap();
    }
    assert_eq!(feed_one(&mut s, b"a"), Progress::Event(Event::Data(b"a")));
    assert!(s.is_receiving_message());
    assert!(matches!(feed_one(&mut s, b"RSET\r\n"), Progress::Event(Event::Reset)));
    assert!(!s.is_receiving_message());
}
