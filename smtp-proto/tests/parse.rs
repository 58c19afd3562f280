//! Integration tests of the pure parsers through the public API.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use smtp_proto::parse::{
    parse_command, parse_command_line, parse_domain, parse_forward_path, parse_mail_params, parse_mailbox,
    parse_rcpt_params, parse_reverse_path, Body, By, ByMode, Command, CommandError, Domain, ForwardPath, MailAuth,
    Mailbox, Notify, ParamError, PathError, Ret, ReversePath, Status, Verb, XText,
};

fn cmd(line: &str) -> Command<'_> {
    parse_command_line(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e:?}"))
}

fn cmd_err(line: &str) -> CommandError {
    parse_command_line(line.as_bytes()).expect_err(line)
}

fn mail(line: &str) -> (ReversePath<'_>, smtp_proto::parse::MailParams<'_>) {
    match cmd(line) {
        Command::Mail { from, params } => (from, params),
        other => panic!("{line}: {other:?}"),
    }
}

fn rcpt(line: &str) -> (ForwardPath<'_>, smtp_proto::parse::RcptParams<'_>) {
    match cmd(line) {
        Command::Rcpt { to, params } => (to, params),
        other => panic!("{line}: {other:?}"),
    }
}

fn sender(line: &str) -> Mailbox<'_> {
    match mail(line).0 {
        ReversePath::Mailbox(m) => m,
        ReversePath::Null => panic!("{line}: null path"),
    }
}

/// A valid domain name of exactly `n` octets (labels of at most 63).
fn domain_of(n: usize) -> String {
    let mut s = String::new();
    loop {
        let rem = n - s.len();
        let mut want = rem.min(63);
        if rem > want && rem - want < 2 {
            want -= 1;
        }
        s.push_str(&"d".repeat(want));
        if s.len() == n {
            return s;
        }
        s.push('.');
    }
}

// ---------------------------------------------------------------- verbs

#[test]
fn every_verb() {
    assert_eq!(cmd("HELO client.example"), Command::Helo { host: "client.example" });
    assert_eq!(cmd("EHLO client.example"), Command::Ehlo { host: "client.example" });
    assert_eq!(cmd("LHLO client.example"), Command::Lhlo { host: "client.example" });
    assert!(matches!(cmd("MAIL FROM:<a@b.example>"), Command::Mail { .. }));
    assert!(matches!(cmd("RCPT TO:<a@b.example>"), Command::Rcpt { .. }));
    assert_eq!(cmd("DATA"), Command::Data);
    assert_eq!(cmd("BDAT 42"), Command::Bdat { size: 42, last: false });
    assert_eq!(cmd("BDAT 42 LAST"), Command::Bdat { size: 42, last: true });
    assert_eq!(cmd("RSET"), Command::Rset);
    assert_eq!(cmd("NOOP"), Command::Noop);
    assert_eq!(cmd("NOOP hello there"), Command::Noop);
    assert_eq!(cmd("QUIT"), Command::Quit);
    assert_eq!(cmd("VRFY postmaster"), Command::Vrfy { arg: "postmaster" });
    assert_eq!(cmd("EXPN staff"), Command::Expn { arg: "staff" });
    assert_eq!(cmd("HELP"), Command::Help { topic: None });
    assert_eq!(cmd("HELP RCPT"), Command::Help { topic: Some("RCPT") });
    assert_eq!(cmd("STARTTLS"), Command::StartTls);
    assert_eq!(cmd("AUTH LOGIN"), Command::Auth { mechanism: "LOGIN", initial_response: None });
    assert_eq!(
        cmd("AUTH PLAIN AHVzZXIAcGFzcw=="),
        Command::Auth { mechanism: "PLAIN", initial_response: Some("AHVzZXIAcGFzcw==") }
    );
    assert_eq!(cmd("AUTH EXTERNAL ="), Command::Auth { mechanism: "EXTERNAL", initial_response: Some("=") });
}

#[test]
fn verbs_are_case_insensitive() {
    for line in ["ehlo x", "Ehlo x", "eHlO x"] {
        assert_eq!(cmd(line), Command::Ehlo { host: "x" });
    }
    assert_eq!(cmd("starttls"), Command::StartTls);
    assert_eq!(cmd("Quit"), Command::Quit);
    assert_eq!(cmd("bdat 1 Last"), Command::Bdat { size: 1, last: true });
    assert!(matches!(cmd("mail from:<a@b>"), Command::Mail { .. }));
    assert!(matches!(cmd("MAIL From:<a@b>"), Command::Mail { .. }));
    assert!(matches!(cmd("rcpt to:<a@b>"), Command::Rcpt { .. }));
    assert!(matches!(cmd("RCPT tO:<a@b>"), Command::Rcpt { .. }));
}

#[test]
fn no_argument_verbs_reject_arguments() {
    assert_eq!(cmd_err("DATA x"), CommandError::Syntax(Verb::Data));
    assert_eq!(cmd_err("RSET x"), CommandError::Syntax(Verb::Rset));
    assert_eq!(cmd_err("QUIT x"), CommandError::Syntax(Verb::Quit));
    assert_eq!(cmd_err("STARTTLS x"), CommandError::Syntax(Verb::StartTls));
}

#[test]
fn missing_arguments() {
    assert_eq!(cmd_err("HELO"), CommandError::Syntax(Verb::Helo));
    assert_eq!(cmd_err("EHLO"), CommandError::Syntax(Verb::Ehlo));
    assert_eq!(cmd_err("EHLO "), CommandError::Syntax(Verb::Ehlo));
    assert_eq!(cmd_err("LHLO"), CommandError::Syntax(Verb::Lhlo));
    assert_eq!(cmd_err("VRFY"), CommandError::Syntax(Verb::Vrfy));
    assert_eq!(cmd_err("EXPN"), CommandError::Syntax(Verb::Expn));
    assert_eq!(cmd_err("AUTH"), CommandError::Syntax(Verb::Auth));
    assert_eq!(cmd_err("BDAT"), CommandError::Syntax(Verb::Bdat));
    assert_eq!(cmd_err("MAIL"), CommandError::Syntax(Verb::Mail));
    assert_eq!(cmd_err("RCPT"), CommandError::Syntax(Verb::Rcpt));
}

#[test]
fn bdat() {
    assert_eq!(cmd("BDAT 0"), Command::Bdat { size: 0, last: false });
    assert_eq!(cmd("BDAT 18446744073709551615"), Command::Bdat { size: u64::MAX, last: false });
    for bad in ["BDAT 18446744073709551616", "BDAT 1x", "BDAT x", "BDAT -1", "BDAT +1", "BDAT 1 LASTX", "BDAT 1 LAST 2"]
    {
        assert_eq!(cmd_err(bad), CommandError::Syntax(Verb::Bdat), "{bad}");
    }
}

#[test]
fn auth_syntax() {
    let twenty = "A".repeat(20);
    assert!(matches!(cmd(&format!("AUTH {twenty}")), Command::Auth { .. }));
    assert_eq!(cmd_err(&format!("AUTH {twenty}A")), CommandError::Syntax(Verb::Auth));
    assert_eq!(cmd("AUTH scram-sha-1"), Command::Auth { mechanism: "scram-sha-1", initial_response: None });
    for bad in ["AUTH PL.AIN", "AUTH PLAIN abc$", "AUTH PLAIN ab=c", "AUTH PLAIN a===", "AUTH PLAIN a b"] {
        assert_eq!(cmd_err(bad), CommandError::Syntax(Verb::Auth), "{bad}");
    }
}

#[test]
fn forbidden_and_unrecognized() {
    for line in [
        "GET / HTTP/1.0",
        "get /",
        "POST /form HTTP/1.1",
        "CONNECT example.com:443 HTTP/1.1",
        "HEAD / HTTP/1.1",
        "PUT /x HTTP/1.1",
        "Host: mail.example",
        "User-Agent: curl/8.0",
        "Content-Type: text/plain",
    ] {
        assert_eq!(cmd_err(line), CommandError::Forbidden, "{line}");
    }
    for line in ["", "XYZZY", "EHLOO x", "MAI FROM:<a@b>", "TURN", "ETRN x", "\tEHLO x"] {
        assert_eq!(cmd_err(line), CommandError::Unrecognized, "{line:?}");
    }
}

#[test]
fn bytes_and_spaces() {
    assert_eq!(parse_command_line(b"EHLO \xc3\x28"), Err(CommandError::Utf8));
    assert_eq!(parse_command_line(b"NOOP \xff"), Err(CommandError::Utf8));
    assert_eq!(parse_command_line(b"EHLO a\x00b"), Err(CommandError::Syntax(Verb::Ehlo)));
    assert_eq!(parse_command_line(b"HELP a\rb"), Err(CommandError::Syntax(Verb::Help)));
    assert_eq!(parse_command_line(b"DATA\r"), Err(CommandError::Syntax(Verb::Data)));
    assert_eq!(parse_command_line(b"XXXX \x00"), Err(CommandError::Unrecognized));
    assert_eq!(cmd("DATA  "), Command::Data);
    assert_eq!(cmd("EHLO x "), Command::Ehlo { host: "x" });
    assert_eq!(sender("MAIL FROM:<a@b> ").local_part, "a");
    assert_eq!(mail("MAIL FROM:<a@b>  SIZE=1   BODY=7BIT  ").1.size, Some(1));
    // UTF-8 in the EHLO argument is passed through as sent
    assert_eq!(cmd("EHLO exämple.test"), Command::Ehlo { host: "exämple.test" });
}

#[test]
fn parse_command_finds_the_line() {
    assert_eq!(parse_command(b"EHLO x"), Status::Partial);
    assert_eq!(parse_command(b""), Status::Partial);
    assert_eq!(parse_command(b"EHLO x\r\nQUIT\r\n"), Status::Complete((Ok(Command::Ehlo { host: "x" }), 8)));
    assert_eq!(parse_command(b"QUIT\n"), Status::Complete((Ok(Command::Quit), 5)));
    assert_eq!(parse_command(b"QUIT\r\r\n"), Status::Complete((Err(CommandError::Syntax(Verb::Quit)), 7)));
}

// ---------------------------------------------------------------- MAIL / RCPT

#[test]
fn mail_space_after_colon() {
    assert_eq!(sender("MAIL FROM: <a@b.example>").domain_raw, "b.example");
    assert_eq!(mail("MAIL FROM: <>").0, ReversePath::Null);
    assert_eq!(cmd_err("MAIL FROM:  <a@b>"), CommandError::Syntax(Verb::Mail));
    assert!(matches!(rcpt("RCPT TO: <a@b>").0, ForwardPath::Mailbox(_)));
    assert_eq!(cmd_err("MAIL FROM <a@b>"), CommandError::Syntax(Verb::Mail));
    assert_eq!(cmd_err("MAIL FROM:a@b"), CommandError::Syntax(Verb::Mail));
    assert_eq!(cmd_err("MAIL FROM:<a@b>x"), CommandError::Syntax(Verb::Mail));
}

#[test]
fn null_and_postmaster() {
    assert_eq!(mail("MAIL FROM:<>").0, ReversePath::Null);
    assert_eq!(cmd_err("RCPT TO:<>"), CommandError::BadRecipient(PathError::Syntax));
    assert_eq!(rcpt("RCPT TO:<postmaster>").0, ForwardPath::Postmaster);
    assert_eq!(rcpt("RCPT TO:<POSTMASTER>").0, ForwardPath::Postmaster);
    assert_eq!(cmd_err("MAIL FROM:<postmaster>"), CommandError::BadSender(PathError::Syntax));
    match rcpt("RCPT TO:<Postmaster@example.org>").0 {
        ForwardPath::Mailbox(m) => assert_eq!(m.domain, Domain::Name("example.org")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn quoted_local_parts() {
    assert_eq!(sender(r#"MAIL FROM:<"john doe"@example.org>"#).local_part, r#""john doe""#);
    assert_eq!(sender(r#"MAIL FROM:<"a\"b"@example.org>"#).local_part, r#""a\"b""#);
    assert_eq!(sender(r#"MAIL FROM:<"a>b"@example.org> SIZE=1"#).local_part, r#""a>b""#);
    assert_eq!(sender(r#"MAIL FROM:<"ü"@example.org>"#).local_part, r#""ü""#);
    assert_eq!(cmd_err(r#"MAIL FROM:<"a"b"@x>"#), CommandError::BadSender(PathError::Syntax));
}

#[test]
fn utf8_addresses() {
    let m = sender("MAIL FROM:<用户@例子.广告> SMTPUTF8");
    assert_eq!(m.local_part, "用户");
    assert_eq!(m.domain, Domain::Name("例子.广告"));
    assert!(m.needs_smtputf8());
    assert!(!sender("MAIL FROM:<a@b>").needs_smtputf8());
    match rcpt("RCPT TO:<θσερ@παράδειγμα.δοκιμή>").0 {
        ForwardPath::Mailbox(m) => assert!(m.needs_smtputf8()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn address_literals() {
    assert_eq!(sender("MAIL FROM:<a@[192.0.2.1]>").domain, Domain::Ipv4(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(
        sender("MAIL FROM:<a@[IPv6:2001:db8::1]>").domain,
        Domain::Ipv6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
    );
    assert_eq!(sender("MAIL FROM:<a@[IPv6:2001:db8::1]>").domain_raw, "[IPv6:2001:db8::1]");
    assert_eq!(sender("MAIL FROM:<a@[x400:c=us;a=b]>").domain, Domain::General { tag: "x400", content: "c=us;a=b" });
    for bad in ["<a@[192.0.2.300]>", "<a@[192.0.2]>", "<a@[IPv6:2001:db8:::1]>", "<a@[IPv6:192.0.2.1]>", "<a@[junk]>"] {
        assert_eq!(parse_reverse_path(bad.as_bytes()), Err(PathError::Syntax), "{bad}");
    }
    assert_eq!(parse_domain(b"[IPv6:::1]"), Ok(Domain::Ipv6(Ipv6Addr::LOCALHOST)));
    assert_eq!(parse_domain(b"[127.0.0.1]"), Ok(Domain::Ipv4(Ipv4Addr::LOCALHOST)));
}

#[test]
fn source_routes_are_ignored() {
    let m = sender("MAIL FROM:<@a.example,@b.example:user@c.example>");
    assert_eq!(m.local_part, "user");
    assert_eq!(m.domain, Domain::Name("c.example"));
    match rcpt("RCPT TO:<@hop.example:u@d.example> NOTIFY=NEVER").0 {
        ForwardPath::Mailbox(m) => assert_eq!(m.domain_raw, "d.example"),
        other => panic!("{other:?}"),
    }
    assert_eq!(cmd_err("MAIL FROM:<@a.example;u@c.example>"), CommandError::BadSender(PathError::Syntax));
}

#[test]
fn path_errors() {
    assert_eq!(cmd_err("MAIL FROM:<a b@c>"), CommandError::BadSender(PathError::Syntax));
    assert_eq!(cmd_err("RCPT TO:<a@-c>"), CommandError::BadRecipient(PathError::Syntax));
    let l65 = "l".repeat(65);
    assert_eq!(cmd_err(&format!("MAIL FROM:<{l65}@x>")), CommandError::BadSender(PathError::LocalPartTooLong));
    let d256 = domain_of(256);
    assert_eq!(cmd_err(&format!("RCPT TO:<a@{d256}>")), CommandError::BadRecipient(PathError::DomainTooLong));
    let long = format!("<{}@{}>", "l".repeat(64), domain_of(190));
    assert_eq!(long.len(), 257);
    assert_eq!(cmd_err(&format!("MAIL FROM:{long}")), CommandError::BadSender(PathError::PathTooLong));
    assert_eq!(cmd_err(&format!("RCPT TO:{long}")), CommandError::BadRecipient(PathError::PathTooLong));
    // The reply knows the difference.
    assert_eq!(CommandError::BadSender(PathError::PathTooLong).reply().code, 501);
}

#[test]
fn limits_at_and_past_the_boundary() {
    let l64 = "l".repeat(64);
    let l65 = "l".repeat(65);
    assert_eq!(parse_mailbox(format!("{l64}@x").as_bytes()).map(|m| m.local_part.len()), Ok(64));
    assert_eq!(parse_mailbox(format!("{l65}@x").as_bytes()), Err(PathError::LocalPartTooLong));

    let d255 = domain_of(255);
    let d256 = domain_of(256);
    assert_eq!(parse_domain(d255.as_bytes()), Ok(Domain::Name(&d255)));
    assert_eq!(parse_domain(d256.as_bytes()), Err(PathError::DomainTooLong));
    let lit255 = format!("[x:{}]", "c".repeat(251));
    assert_eq!(lit255.len(), 255);
    assert!(parse_domain(lit255.as_bytes()).is_ok());
    let lit256 = format!("[x:{}]", "c".repeat(252));
    assert_eq!(parse_domain(lit256.as_bytes()), Err(PathError::DomainTooLong));

    let p256 = format!("<{l64}@{}>", domain_of(189));
    let p257 = format!("<{l64}@{}>", domain_of(190));
    assert_eq!(p256.len(), 256);
    assert_eq!(parse_reverse_path(p256.as_bytes()).map(|r| r.1), Ok(256));
    assert_eq!(parse_forward_path(p256.as_bytes()).map(|r| r.1), Ok(256));
    assert_eq!(parse_reverse_path(p257.as_bytes()), Err(PathError::PathTooLong));
    assert_eq!(parse_forward_path(p257.as_bytes()), Err(PathError::PathTooLong));
    // parse_mailbox: the 256-octet path limit means at most 254 octets bare
    assert!(parse_mailbox(&p256.as_bytes()[1..255]).is_ok());
    let long_bare = format!("{l64}@{}", domain_of(190));
    assert_eq!(parse_mailbox(long_bare.as_bytes()), Err(PathError::PathTooLong));
}

// ---------------------------------------------------------------- parameters

#[test]
fn every_mail_param() {
    let (_, p) = mail(
        "MAIL FROM:<a@b> SIZE=1000 BODY=BINARYMIME SMTPUTF8 RET=FULL ENVID=QQ314159 \
         AUTH=e+3Dmc2@example.com REQUIRETLS MT-PRIORITY=9 HOLDFOR=3600 HOLDUNTIL=2030-01-01T00:00:00Z BY=3600;NT",
    );
    assert_eq!(p.size, Some(1000));
    assert_eq!(p.body, Some(Body::BinaryMime));
    assert!(p.smtputf8);
    assert_eq!(p.ret, Some(Ret::Full));
    assert_eq!(p.envid.map(|x| x.as_encoded()), Some("QQ314159"));
    match p.auth {
        Some(MailAuth::Identity(x)) => {
            assert_eq!(x.decoded().collect::<Vec<u8>>(), b"e=mc2@example.com")
        }
        other => panic!("{other:?}"),
    }
    assert!(p.requiretls);
    assert_eq!(p.mt_priority, Some(9));
    assert_eq!(p.hold_for, Some(3600));
    assert_eq!(p.hold_until, Some("2030-01-01T00:00:00Z"));
    assert_eq!(p.by, Some(By { time: 3600, mode: ByMode::Notify, trace: true }));
    assert!(p.unknown.is_empty());

    assert_eq!(mail("MAIL FROM:<> BODY=7BIT").1.body, Some(Body::SevenBit));
    assert_eq!(mail("MAIL FROM:<> BODY=8bitmime").1.body, Some(Body::EightBitMime));
    assert_eq!(mail("MAIL FROM:<> RET=hdrs").1.ret, Some(Ret::Hdrs));
    assert_eq!(mail("MAIL FROM:<> AUTH=<>").1.auth, Some(MailAuth::Empty));
    assert_eq!(mail("MAIL FROM:<> MT-PRIORITY=-9").1.mt_priority, Some(-9));
    assert_eq!(mail("MAIL FROM:<> BY=-60;N").1.by, Some(By { time: -60, mode: ByMode::Notify, trace: false }));
    assert_eq!(mail("MAIL FROM:<> by=60;r").1.by, Some(By { time: 60, mode: ByMode::Return, trace: false }));
}

#[test]
fn every_rcpt_param() {
    let (_, p) = rcpt("RCPT TO:<x@y.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y.example");
    let n = p.notify.unwrap();
    assert!(n.has(Notify::SUCCESS) && n.has(Notify::FAILURE) && !n.has(Notify::DELAY) && !n.is_never());
    let o = p.orcpt.unwrap();
    assert_eq!(o.addr_type, "rfc822");
    assert_eq!(o.addr.as_encoded(), "x@y.example");
    assert_eq!(rcpt("RCPT TO:<x@y> NOTIFY=NEVER").1.notify, Some(Notify::NEVER));
    assert_eq!(rcpt("RCPT TO:<x@y> notify=delay").1.notify, Some(Notify(Notify::DELAY)));
    assert_eq!(cmd_err("RCPT TO:<x@y> NOTIFY=NEVER,FAILURE"), CommandError::Param(Verb::Rcpt, ParamError::BadValue));
}

#[test]
fn param_errors() {
    let mail_err = |s: &str| cmd_err(&format!("MAIL FROM:<a@b> {s}"));
    let bad = |e| CommandError::Param(Verb::Mail, e);
    assert_eq!(mail_err("SIZE=1 SIZE=1"), bad(ParamError::Duplicate));
    assert_eq!(mail_err("BODY=7BIT body=8BITMIME"), bad(ParamError::Duplicate));
    assert_eq!(mail_err("SMTPUTF8 SMTPUTF8"), bad(ParamError::Duplicate));
    assert_eq!(mail_err("SIZE=123456789012345678901"), bad(ParamError::BadValue));
    assert_eq!(mail_err("BODY=9BIT"), bad(ParamError::BadValue));
    assert_eq!(mail_err("RET=NONE"), bad(ParamError::BadValue));
    assert_eq!(mail_err(&format!("ENVID={}", "x".repeat(101))), bad(ParamError::BadValue));
    assert_eq!(mail_err("MT-PRIORITY=-10"), bad(ParamError::BadValue));
    assert_eq!(mail_err("HOLDFOR=soon"), bad(ParamError::BadValue));
    assert_eq!(mail_err("BY=abc"), bad(ParamError::BadValue));
    assert_eq!(mail_err("SIZE=="), bad(ParamError::Syntax));
    assert_eq!(mail_err("=x"), bad(ParamError::Syntax));
    assert_eq!(mail_err("X=y\tZ"), bad(ParamError::Syntax));
    assert_eq!(
        cmd_err("RCPT TO:<a@b> ORCPT=rfc822;x ORCPT=rfc822;x"),
        CommandError::Param(Verb::Rcpt, ParamError::Duplicate)
    );
    assert_eq!(cmd_err("RCPT TO:<a@b> ORCPT=rfc822"), CommandError::Param(Verb::Rcpt, ParamError::BadValue));
}

#[test]
fn unknown_params_only_unknown() {
    let (_, p) = mail("MAIL FROM:<a@b> XFOO=1 SIZE=5 XBAR BODY=7BIT X-UTF=ü");
    assert_eq!(p.size, Some(5));
    assert_eq!(p.unknown.iter().collect::<Vec<_>>(), [("XFOO", Some("1")), ("XBAR", None), ("X-UTF", Some("ü"))]);
    let (_, r) = rcpt("RCPT TO:<a@b> NOTIFY=DELAY RRVS=2030-01-01T00:00:00Z;C");
    assert_eq!(r.unknown.iter().collect::<Vec<_>>(), [("RRVS", Some("2030-01-01T00:00:00Z;C"))]);
    assert!(mail("MAIL FROM:<a@b> SIZE=5").1.unknown.is_empty());
    // parse_*_params directly
    assert!(parse_mail_params("").unwrap().unknown.is_empty());
    assert_eq!(parse_rcpt_params(" A B ").unwrap().unknown.iter().count(), 2);
}

#[test]
fn xtext_api() {
    let x = XText::new("a+2Bb").unwrap();
    assert_eq!(x.as_encoded(), "a+2Bb");
    let mut out = [0u8; 8];
    assert_eq!(x.decode_into(&mut out), Some(3));
    assert_eq!(&out[..3], b"a+b");
    assert_eq!(x.decode_into(&mut [0u8; 2]), None);
    assert!(XText::new("a+2b").is_none());
    assert!(XText::new("a=b").is_none());
}

// ---------------------------------------------------------------- properties

fn atom() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}"
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
}

/// Proptest cases: the default number, or a couple under miri (`.ci/run` runs this file there
/// for the one `unsafe` on the parse path), without failure files (miri isolates the file
/// system).
fn cases() -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_command_line(&bytes);
        let _ = parse_command(&bytes);
        let _ = parse_reverse_path(&bytes);
        let _ = parse_forward_path(&bytes);
        let _ = parse_mailbox(&bytes);
        let _ = parse_domain(&bytes);
    }

    #[test]
    fn never_panics_on_smtp_like_lines(
        verb in "(MAIL FROM:|RCPT TO:|EHLO|BDAT|AUTH|mail from: )",
        rest in "[<>@\\[\\]:.\"\\\\ =;,+a-zA-Z0-9é\u{0}\r-]{0,80}",
    ) {
        let line = format!("{verb}{rest}");
        let _ = parse_command_line(line.as_bytes());
    }

    #[test]
    fn mail_round_trips(
        atoms in proptest::collection::vec(atom(), 1..4),
        labels in proptest::collection::vec(label(), 1..4),
        size in proptest::option::of(any::<u64>()),
        body in proptest::option::of(prop_oneof![Just("7BIT"), Just("8BITMIME"), Just("BINARYMIME")]),
        ret in proptest::option::of(prop_oneof![Just("FULL"), Just("HDRS")]),
        envid in proptest::option::of("[!-*,-<>-~]{1,20}"),
        smtputf8 in any::<bool>(),
        priority in proptest::option::of(-9i8..=9),
        space in any::<bool>(),
    ) {
        let local = atoms.join(".");
        let domain = labels.join(".");
        let mut line = format!("MAIL FROM:{}<{local}@{domain}>", if space { " " } else { "" });
        if let Some(s) = size { line += &format!(" SIZE={s}"); }
        if let Some(b) = body { line += &format!(" BODY={b}"); }
        if let Some(r) = ret { line += &format!(" RET={r}"); }
        if let Some(e) = &envid { line += &format!(" ENVID={e}"); }
        if smtputf8 { line += " SMTPUTF8"; }
        if let Some(p) = priority { line += &format!(" MT-PRIORITY={p}"); }
        let parsed = parse_command_line(line.as_bytes());
        let Ok(Command::Mail { from: ReversePath::Mailbox(m), params }) = parsed else {
            panic!("{line}: {parsed:?}");
        };
        prop_assert_eq!(m.local_part, local.as_str());
        prop_assert_eq!(m.domain, Domain::Name(&domain));
        prop_assert_eq!(m.domain_raw, domain.as_str());
        prop_assert_eq!(params.size, size);
        prop_assert_eq!(params.body, body.map(|b| match b {
            "7BIT" => Body::SevenBit,
            "8BITMIME" => Body::EightBitMime,
            _ => Body::BinaryMime,
        }));
        prop_assert_eq!(params.ret, ret.map(|r| if r == "FULL" { Ret::Full } else { Ret::Hdrs }));
        prop_assert_eq!(params.envid.map(|x| x.as_encoded()), envid.as_deref());
        prop_assert_eq!(params.smtputf8, smtputf8);
        prop_assert_eq!(params.mt_priority, priority);
        prop_assert!(params.unknown.is_empty());
    }

    #[test]
    fn xtext_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut enc = String::new();
        for &b in &bytes {
            if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
                enc.push(b as char);
            } else {
                enc += &format!("+{b:02X}");
            }
        }
        let x = XText::new(&enc).unwrap();
        prop_assert_eq!(x.decoded().collect::<Vec<u8>>(), bytes.clone());
        let mut out = vec![0u8; bytes.len()];
        prop_assert_eq!(x.decode_into(&mut out), Some(bytes.len()));
        prop_assert_eq!(out, bytes);
    }
}
