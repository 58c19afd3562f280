//! Delivery status notifications read back by another implementation: Python's `email`
//! package (`policy.default`) parses each report built by `smtp_std::mta::queue::dsn` and the tests
//! check the structure and fields it sees, and that it found no defects.
//!
//! Without `python3` the tests fail when `CI` is set and otherwise say so and pass.
// The mail server and the program (feature `mta`).
#![cfg(feature = "mta")]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smtp_std::mta::queue::dsn::{self, Action, RecipientReport, Report, Ret};

/// Prints what Python sees of the report in argv[1], one `key=value` line each (line breaks in
/// values as `\n`).
const READ_BACK: &str = r#"
import email, email.policy, sys

def out(key, value):
    print(key + "=" + str(value).replace("\r", "").replace("\n", "\\n"))

msg = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
out("content_type", msg.get_content_type())
out("report_type", msg.get_param("report-type"))
for name in ["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version",
             "In-Reply-To", "Bcc"]:
    if msg[name] is not None:
        out("h." + name, msg[name])
parts = list(msg.iter_parts())
out("parts", len(parts))
for i, part in enumerate(parts):
    out("part%d.type" % i, part.get_content_type())
out("text", parts[0].get_content())
blocks = parts[1].get_payload()
if isinstance(blocks, list):
    out("blocks", len(blocks))
    for j, block in enumerate(blocks):
        for key, value in block.items():
            out("dsn%d.%s" % (j, key), value)
if len(parts) > 2:
    part = parts[2]
    if part.get_content_type() == "text/rfc822-headers":
        original = email.message_from_string(part.get_content(), policy=email.policy.default)
    else:
        original = part.get_payload(0)
        if part.get_content_type() in ("message/rfc822", "message/global"):
            out("orig.body", original.get_content())
    for key, value in original.items():
        out("orig." + key, value)
out("defects", ",".join(type(d).__name__ for p in msg.walk() for d in p.defects))
"#;

const ORIGINAL: &[u8] = b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n\
    Subject: Lunch on Friday?\r\nMessage-ID: <lunch.1@example.org>\r\nDate: Mon, 13 Nov 2023 09:00:00 +0000\r\n\
    \r\nShall we?\r\n";

fn python_available() -> bool {
    let ok = Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "python3 is needed on CI");
        eprintln!("skipped: python3 is not installed");
    }
    ok
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn recipient(addr: &str, action: Action, status: (u8, u16, u16), reply: &str) -> RecipientReport {
    RecipientReport {
        final_recipient: addr.to_string(),
        original_recipient: None,
        action,
        status,
        remote_mta: Some("mx.example.net".to_string()),
        diagnostic: Some(reply.to_string()),
        last_attempt: Some(at(1_700_000_100)),
        will_retry_until: None,
    }
}

fn report(recipients: &[RecipientReport]) -> Report<'_> {
    Report {
        reporting_mta: "mx.example.org",
        to: "alice@example.org",
        envelope_id: None,
        arrival: at(1_700_000_000),
        recipients,
        ret: Ret::Headers,
        smtputf8: false,
    }
}

/// Builds the report and returns what Python sees (`None`: no Python here).
fn read_back(report: &Report<'_>, original: &[u8]) -> Option<BTreeMap<String, String>> {
    if !python_available() {
        return None;
    }
    let message = dsn::build(report, &mut &original[..], at(1_700_000_200)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.eml");
    std::fs::write(&path, &message).unwrap();
    let output = Command::new("python3").arg("-c").arg(READ_BACK).arg(&path).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "python failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let fields: BTreeMap<String, String> =
        stdout.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(fields["defects"], "", "Python found defects in\n{}", String::from_utf8_lossy(&message));
    Some(fields)
}

/// What every report has: the container, three parts, the headers of an automatic reply.
fn check_container(f: &BTreeMap<String, String>, parts: usize) {
    assert_eq!(f["content_type"], "multipart/report");
    assert_eq!(f["report_type"], "delivery-status");
    assert_eq!(f["parts"], parts.to_string());
    assert_eq!(f["part0.type"], "text/plain");
    assert_eq!(f["part1.type"], "message/delivery-status");
    assert_eq!(f["h.From"], "Mail Delivery System <MAILER-DAEMON@mx.example.org>");
    assert_eq!(f["h.To"], "alice@example.org");
    assert_eq!(f["h.Auto-Submitted"], "auto-replied");
    assert_eq!(f["h.MIME-Version"], "1.0");
    assert_eq!(f["h.Date"], "Tue, 14 Nov 2023 22:16:40 +0000");
    assert!(f["h.Message-ID"].starts_with('<') && f["h.Message-ID"].ends_with("@mx.example.org>"));
    assert_eq!(f["dsn0.Reporting-MTA"], "dns; mx.example.org");
    assert_eq!(f["dsn0.Arrival-Date"], "Tue, 14 Nov 2023 22:13:20 +0000");
}

#[test]
fn bounce() {
    let rs = [recipient("bob@example.net", Action::Failed, (5, 1, 1), "550 5.1.1 <bob@example.net>: user unknown")];
    let Some(f) = read_back(&report(&rs), ORIGINAL) else { return };
    check_container(&f, 3);
    assert_eq!(f["h.Subject"], "Undelivered Mail Returned to Sender");
    assert_eq!(f["h.In-Reply-To"], "<lunch.1@example.org>");
    assert_eq!(f["blocks"], "2");
    assert_eq!(f["dsn1.Final-Recipient"], "rfc822; bob@example.net");
    assert_eq!(f["dsn1.Action"], "failed");
    assert_eq!(f["dsn1.Status"], "5.1.1");
    assert_eq!(f["dsn1.Remote-MTA"], "dns; mx.example.net");
    assert_eq!(f["dsn1.Diagnostic-Code"], "smtp; 550 5.1.1 <bob@example.net>: user unknown");
    assert_eq!(f["dsn1.Last-Attempt-Date"], "Tue, 14 Nov 2023 22:15:00 +0000");
    assert!(!f.contains_key("dsn1.Will-Retry-Until"));
    assert_eq!(f["part2.type"], "text/rfc822-headers");
    assert_eq!(f["orig.Subject"], "Lunch on Friday?");
    assert_eq!(f["orig.Message-ID"], "<lunch.1@example.org>");
    assert!(!f.contains_key("orig.body"));
    let text = &f["text"];
    assert!(text.contains("<bob@example.net>: delivery failed permanently."), "{text}");
    assert!(text.contains("The mail server mx.example.net answered:"), "{text}");
    assert!(text.contains("550 5.1.1 <bob@example.net>: user unknown"), "{text}");
}

#[test]
fn delay_notice() {
    let mut r =
        recipient("bob@example.net", Action::Delayed, (4, 2, 2), "452-4.2.2 mailbox full\r\n452 4.2.2 try later");
    r.will_retry_until = Some(at(1_700_432_000));
    let rs = [r];
    let Some(f) = read_back(&report(&rs), ORIGINAL) else { return };
    check_container(&f, 3);
    assert_eq!(f["h.Subject"], "Delayed Mail (still being retried)");
    assert_eq!(f["dsn1.Action"], "delayed");
    assert_eq!(f["dsn1.Status"], "4.2.2");
    assert_eq!(f["dsn1.Diagnostic-Code"], "smtp; 452-4.2.2 mailbox full 452 4.2.2 try later");
    assert_eq!(f["dsn1.Will-Retry-Until"], "Sun, 19 Nov 2023 22:13:20 +0000");
    let text = f["text"].replace("\\n", " ");
    assert!(text.contains("keeps trying until Sun, 19 Nov 2023 22:13:20 +0000."), "{text}");
}

#[test]
fn success_notice() {
    let rs = [recipient("bob@example.net", Action::Delivered, (2, 0, 0), "250 2.0.0 Ok: queued as 4Sx")];
    let Some(f) = read_back(&report(&rs), ORIGINAL) else { return };
    check_container(&f, 3);
    assert_eq!(f["h.Subject"], "Successful Mail Delivery Report");
    assert_eq!(f["dsn1.Action"], "delivered");
    assert_eq!(f["dsn1.Status"], "2.0.0");
}

#[test]
fn ret_full_attaches_the_message() {
    let rs = [recipient("bob@example.net", Action::Failed, (5, 7, 1), "554 5.7.1 rejected as spam")];
    let mut rep = report(&rs);
    rep.ret = Ret::Full;
    let Some(f) = read_back(&rep, ORIGINAL) else { return };
    check_container(&f, 3);
    assert_eq!(f["part2.type"], "message/rfc822");
    assert_eq!(f["orig.Subject"], "Lunch on Friday?");
    assert_eq!(f["orig.body"], "Shall we?\\n");
    assert!(f["text"].contains("Your message is attached."));
}

#[test]
fn orcpt_envid_and_two_recipients() {
    let mut bob = recipient("bob@example.net", Action::Failed, (5, 1, 1), "550 5.1.1 user unknown");
    bob.original_recipient = Some("rfc822;Bob@Example.NET".into());
    let mut carol = recipient("carol@example.com", Action::Failed, (5, 2, 2), "552 5.2.2 over quota");
    carol.remote_mta = Some("mx.example.com".into());
    let rs = [bob, carol];
    let mut rep = report(&rs);
    rep.envelope_id = Some("QQ314159+x");
    let Some(f) = read_back(&rep, ORIGINAL) else { return };
    check_container(&f, 3);
    assert_eq!(f["blocks"], "3");
    assert_eq!(f["dsn0.Original-Envelope-Id"], "QQ314159+x");
    assert_eq!(f["dsn1.Original-Recipient"], "rfc822; Bob@Example.NET");
    assert_eq!(f["dsn1.Final-Recipient"], "rfc822; bob@example.net");
    assert_eq!(f["dsn1.Status"], "5.1.1");
    assert!(!f.contains_key("dsn2.Original-Recipient"));
    assert_eq!(f["dsn2.Final-Recipient"], "rfc822; carol@example.com");
    assert_eq!(f["dsn2.Remote-MTA"], "dns; mx.example.com");
    assert_eq!(f["dsn2.Diagnostic-Code"], "smtp; 552 5.2.2 over quota");
    let text = &f["text"];
    assert!(text.contains("<bob@example.net>") && text.contains("<carol@example.com>"), "{text}");
}

#[test]
fn hostile_values_stay_in_their_fields() {
    let mut r =
        recipient("bob@example.net\r\nBcc: victim@x", Action::Failed, (5, 1, 1), "550 5.1.1 a\r\nBcc: victim@x\r\n");
    r.remote_mta = Some("mx\nBcc: victim@x".into());
    r.diagnostic = Some(format!("550 5.1.1 {}", "long ".repeat(400)));
    let rs = [r];
    let mut rep = report(&rs);
    rep.to = "alice@example.org\r\nBcc: victim@x";
    let Some(f) = read_back(&rep, ORIGINAL) else { return };
    assert!(!f.contains_key("h.Bcc"));
    assert_eq!(f["blocks"], "2");
    assert!(f["dsn1.Final-Recipient"].starts_with("rfc822; bob@example.net Bcc: victim@x"));
    assert!(f["dsn1.Diagnostic-Code"].starts_with("smtp; 550 5.1.1 long long"));
}

#[test]
fn smtputf8_report() {
    let rs = [recipient("jörg@bücher.example", Action::Failed, (5, 1, 1), "550 5.1.1 no such user")];
    let mut rep = report(&rs);
    rep.smtputf8 = true;
    let original = "From: jörg@bücher.example\r\nSubject: Grüße\r\n\r\nHallo\r\n".as_bytes();
    let Some(f) = read_back(&rep, original) else { return };
    assert_eq!(f["content_type"], "multipart/report");
    assert_eq!(f["parts"], "3");
    assert_eq!(f["part1.type"], "message/global-delivery-status");
    assert_eq!(f["part2.type"], "message/global-headers");
    assert!(f["text"].contains("<jörg@bücher.example>: delivery failed permanently."), "{}", f["text"]);
    assert_eq!(f["orig.Subject"], "Grüße");
    rep.ret = Ret::Full;
    let Some(f) = read_back(&rep, original) else { return };
    assert_eq!(f["part2.type"], "message/global");
    assert_eq!(f["orig.From"], "jörg@bücher.example");
    assert_eq!(f["orig.body"], "Hallo\\n");
    rep.ret = Ret::Headers;
    // Without SMTPUTF8 the same report is 7-bit.
    rep.smtputf8 = false;
    let Some(f) = read_back(&rep, original) else { return };
    assert_eq!(f["part1.type"], "message/delivery-status");
    assert_eq!(f["part2.type"], "text/rfc822-headers");
    assert_eq!(f["dsn1.Final-Recipient"], "utf-8; j\\x{F6}rg@b\\x{FC}cher.example");
    assert_eq!(f["orig.Subject"], "Grüße");
}
