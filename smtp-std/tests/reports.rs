//! `[reports]` end to end. Sent: two servers (`serve --config`, a.test on 127.0.0.2 and b.test
//! on 127.0.0.3) with dnsmasq serving their MX, SPF and DMARC records; b.test receives mail
//! from a.test's server (SPF pass) and from another host in a.test's name (SPF fail), and
//! a.test's `rua` mailboxes get a gzipped RFC 7489 report that Python parses (`email`,
//! `gzip`, `xml.etree`) with the right counts, DKIM-signed by b.test; an external `rua` only with its
//! `_report._dmarc` authorisation. Received: reports built by Python's `email` package (DMARC
//! XML gzipped and zipped, a TLS-RPT JSON gzipped) mailed to the report address are kept and
//! `smtp-std reports` lists and sums them, the failing source first; a message that is no
//! report is delivered as usual.
#![cfg(feature = "mta")]

mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use dnsmasq::{txt, Dnsmasq};
use smtp_std::mta::auth::{DkimAlgorithm, DkimKey};

const T: Duration = Duration::from_secs(30);

fn skip() -> bool {
    if Dnsmasq::available() && have("python3") {
        return false;
    }
    assert!(std::env::var_os("CI").is_none(), "dnsmasq or python3 missing");
    true
}

/// A port free on both 127.0.0.2 and 127.0.0.3 right now.
fn common_port() -> u16 {
    loop {
        let a = TcpListener::bind("127.0.0.2:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.3", port)).is_ok() {
            return port;
        }
    }
}

/// Runs a Python script with `args`; its stdout.
fn python(script: &str, args: &[&str]) -> String {
    let out = run(Command::new("python3").arg("-c").arg(script).args(args), b"", T);
    assert_eq!(out.status, Some(0), "python failed: {}\n{}", out.stdout, out.stderr);
    out.stdout
}

/// Sends `message` from `from` to `to` at `server` (from the local address `source`).
const SEND: &str = r#"
import smtplib, sys
host, port, source, sender, rcpt, path = sys.argv[1:7]
with smtplib.SMTP(host, int(port), source_address=(source, 0), timeout=20) as s:
    s.ehlo("client.test")
    s.sendmail(sender, [rcpt], open(path, "rb").read())
"#;

fn send(server: &str, port: u16, source: &str, from: &str, to: &str, message: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message).unwrap();
    python(SEND, &[server, &port.to_string(), source, from, to, file.path().to_str().unwrap()]);
}

/// `smtp-std.toml` and the accounts file in `dir`.
fn setup(dir: &Path, passwd: &str, config: &str) -> PathBuf {
    std::fs::write(dir.join("passwd"), passwd_text(passwd)).unwrap();
    let path = dir.join("smtp-std.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn serve(dir: &Path, config: &Path) -> Program {
    Program::start(dir, &["--config", config.to_str().unwrap()])
}

/// What Python makes of the reports in a Maildir's `new/`: per file the attachment's name,
/// the subject, and `source_ip count spf dkim disposition` per record.
const READ_REPORTS: &str = r#"
import email, gzip, os, sys, xml.etree.ElementTree as ET
d = sys.argv[1]
for name in sorted(os.listdir(d)):
    msg = email.message_from_bytes(open(os.path.join(d, name), "rb").read())
    for part in msg.walk():
        if part.get_content_type() == "application/gzip":
            root = ET.fromstring(gzip.decompress(part.get_payload(decode=True)))
            print("FILE", part.get_filename())
            print("SUBJECT", " ".join(msg["Subject"].split()))
            print("FROM", msg["From"])
            print("POLICY", root.findtext("policy_published/domain"), root.findtext("policy_published/p"))
            print("ORG", root.findtext("report_metadata/org_name"))
            for r in root.findall("record"):
                print("ROW", r.findtext("row/source_ip"), r.findtext("row/count"),
                      r.findtext("row/policy_evaluated/spf"), r.findtext("row/policy_evaluated/dkim"),
                      r.findtext("row/policy_evaluated/disposition"), r.findtext("auth_results/spf/result"),
                      r.findtext("identifiers/header_from"))
"#;

/// The rows of every report in `maildir` summed per source: `(source, spf, count)`.
fn rows(maildir: &Path) -> (Vec<(String, String, u64)>, String) {
    let out = python(READ_REPORTS, &[maildir.join("new").to_str().unwrap()]);
    let mut sum: Vec<(String, String, u64)> = Vec::new();
    for l in out.lines().filter(|l| l.starts_with("ROW ")) {
        let f: Vec<&str> = l.split(' ').collect();
        let n: u64 = f[2].parse().unwrap();
        match sum.iter_mut().find(|(ip, spf, _)| ip == f[1] && spf == f[3]) {
            Some(s) => s.2 += n,
            None => sum.push((f[1].to_owned(), f[3].to_owned(), n)),
        }
    }
    sum.sort();
    (sum, out)
}

#[test]
fn dmarc_reports_sent_to_the_rua_of_the_senders_domain() {
    if skip() {
        return;
    }
    let port = common_port();
    // b.test signs its mail, the reports too (From postmaster@b.test, its host name).
    let (key, pem) = DkimKey::generate(DkimAlgorithm::Ed25519).unwrap();
    let dns = Dnsmasq::start(&[
        "host-record=mx.a.test,127.0.0.2".to_owned(),
        "host-record=mx.b.test,127.0.0.3".to_owned(),
        "mx-host=a.test,mx.a.test,10".to_owned(),
        "mx-host=c.test,mx.a.test,10".to_owned(),
        "mx-host=d.test,mx.a.test,10".to_owned(),
        "mx-host=b.test,mx.b.test,10".to_owned(),
        txt("a.test", "v=spf1 ip4:127.0.0.2 -all"),
        txt("_dmarc.a.test", "v=DMARC1; p=none; rua=mailto:dmarc@a.test,mailto:reports@c.test,mailto:x@d.test"),
        // c.test takes a.test's reports (RFC 7489 7.1); d.test does not.
        txt("a.test._report._dmarc.c.test", "v=DMARC1"),
        txt("b.test", "v=spf1 ip4:127.0.0.3 -all"),
        txt("_dmarc.b.test", "v=DMARC1; p=none; rua=mailto:dmarc@b.test"),
        txt("s1._domainkey.b.test", &key.record_value()),
    ]);
    let common = |name: &str, ip: &str, extra: &str| {
        format!(
            "hostname = \"{name}\"\ndata_dir = \"data\"\naccounts = \"passwd\"\n\
             trusted_networks = [\"192.0.2.0/24\"]\n{extra}\n\
             [listen]\nsmtp = [\"{ip}:{port}\"]\n[dns]\nserver = \"{}\"\ntimeout = \"2s\"\n\
             [outbound]\nport = {port}\nbind = \"{ip}\"\n",
            dns.arg()
        )
    };
    let a_dir = tempfile::tempdir().unwrap();
    let a_config = format!(
        "{}[reports]\nsend_dmarc = false\n\
         [[domain]]\nname = \"a.test\"\n[domain.aliases]\npostmaster = \"alice\"\n\
         [[domain]]\nname = \"c.test\"\n[domain.aliases]\npostmaster = \"alice@a.test\"\n\
         [[domain]]\nname = \"d.test\"\n[domain.aliases]\npostmaster = \"alice@a.test\"\n",
        common("a.test", "127.0.0.2", "relay_networks = [\"127.0.0.0/8\"]")
    );
    let a_conf = setup(a_dir.path(), "alice@a.test:x\ndmarc@a.test:x\nreports@c.test:x\nx@d.test:x\n", &a_config);
    let b_dir = tempfile::tempdir().unwrap();
    std::fs::write(b_dir.path().join("dkim.key"), pem).unwrap();
    let b_config = format!(
        "{}[reports]\naddress = \"dmarc@b.test\"\ninterval = \"3s\"\n\
         [[domain]]\nname = \"b.test\"\ndkim_selector = \"s1\"\ndkim_key = \"dkim.key\"\n\
         [domain.aliases]\npostmaster = \"bob\"\ndmarc = \"bob\"\n",
        common("b.test", "127.0.0.3", "")
    );
    let b_conf = setup(b_dir.path(), "bob@b.test:x\n", &b_config);
    let a = serve(a_dir.path(), &a_conf);
    let b = serve(b_dir.path(), &b_conf);

    // Two messages from a.test's own server (relayed by it from 127.0.0.2: SPF pass).
    for i in 0..2 {
        let m = format!("From: alice@a.test\r\nTo: bob@b.test\r\nSubject: hello {i}\r\n\r\nHi.\r\n");
        send("127.0.0.2", port, "127.0.0.1", "alice@a.test", "bob@b.test", m.as_bytes());
    }
    // One from another host in a.test's name (SPF fail, DMARC fail, p=none: delivered).
    let spoof = b"From: ceo@a.test\r\nTo: bob@b.test\r\nSubject: urgent\r\n\r\nPay.\r\n";
    send("127.0.0.3", port, "127.0.0.4", "ceo@a.test", "bob@b.test", spoof);
    // Not counted: mail to our report address (no reports about reports), and mail in our
    // own domain's name.
    let to_reports = b"From: ceo@a.test\r\nTo: dmarc@b.test\r\nSubject: not a report\r\n\r\nHello.\r\n";
    send("127.0.0.3", port, "127.0.0.4", "ceo@a.test", "dmarc@b.test", to_reports);
    let own = b"From: bob@b.test\r\nTo: bob@b.test\r\nSubject: spoofed\r\n\r\nx\r\n";
    send("127.0.0.3", port, "127.0.0.4", "bob@b.test", "bob@b.test", own);
    let bob = b_dir.path().join("data/mailboxes/b.test/bob");
    wait_until("b.test got 5 messages", T, || files(&bob, "new").len() == 5);

    let rua = a_dir.path().join("data/mailboxes/a.test/dmarc");
    let want = vec![("127.0.0.2".to_owned(), "pass".to_owned(), 2), ("127.0.0.4".to_owned(), "fail".to_owned(), 1)];
    let mut last = String::new();
    wait_until("a.test's rua got the counts", T, || {
        if files(&rua, "new").is_empty() {
            return false;
        }
        let (sum, out) = rows(&rua);
        last = out;
        sum == want
    });
    let first = last.clone();
    assert!(first.contains("FROM postmaster@b.test") && first.contains("ORG b.test"), "{first}");
    assert!(first.contains("POLICY a.test none"), "{first}");
    let file = first.lines().find(|l| l.starts_with("FILE ")).unwrap();
    let parts: Vec<&str> = file["FILE ".len()..].split('!').collect();
    assert_eq!((parts.len(), parts[0], parts[1]), (4, "b.test", "a.test"), "{file}");
    assert!(parts[3].ends_with(".xml.gz") && parts[2].parse::<u64>().is_ok(), "{file}");
    let subject = first.lines().find(|l| l.starts_with("SUBJECT ")).unwrap();
    assert!(subject.starts_with("SUBJECT Report Domain: a.test Submitter: b.test Report-ID: <"), "{subject}");
    // Signed by b.test, and a.test found the signature good.
    let stored = String::from_utf8(std::fs::read(&files(&rua, "new")[0]).unwrap()).unwrap().replace("\r\n\t", " ");
    assert!(stored.contains("dkim=pass header.d=b.test"), "{stored}");
    // The authorised external address got it too, the unauthorised one not.
    let c = a_dir.path().join("data/mailboxes/c.test/reports");
    wait_until("c.test's rua got the report", T, || !files(&c, "new").is_empty());
    assert_eq!(rows(&c).0, want);
    // Another period passes: nothing counted twice, nothing sent to d.test nor about b.test.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(rows(&rua).0, want);
    assert!(files(&a_dir.path().join("data/mailboxes/d.test/x"), "new").is_empty());
    assert!(!b_dir.path().join("data/reports/dmarc-out/b.test.jsonl").exists());
    assert!(b.log_contains("d.test does not authorise it"), "the refusal is logged");
    // The evaluations are kept private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(b_dir.path().join("data/reports/dmarc-out")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    drop((a, b));
}

/// A DMARC aggregate report (`zip`: zipped, else gzipped) from `org` about example.org.
const MAKE_DMARC: &str = r#"
import gzip, io, sys, zipfile
from email.message import EmailMessage
from email import policy
org, out, kind = sys.argv[1:4]
rows = [("192.0.2.1", 10, "pass", "pass", "none"), ("198.51.100.7", 4, "fail", "fail", "quarantine")]
if kind == "zip":
    rows = [("203.0.113.5", 3, "fail", "pass", "none")]
recs = "".join(
    f"<record><row><source_ip>{ip}</source_ip><count>{n}</count><policy_evaluated>"
    f"<disposition>{disp}</disposition><dkim>{dkim}</dkim><spf>{spf}</spf></policy_evaluated></row>"
    f"<identifiers><header_from>example.org</header_from></identifiers><auth_results>"
    f"<spf><domain>example.org</domain><result>{spf}</result></spf></auth_results></record>"
    for ip, n, spf, dkim, disp in rows)
xml = ("<?xml version='1.0'?><feedback><report_metadata><org_name>" + org + "</org_name>"
       "<email>noreply@" + org + "</email><report_id>42</report_id><date_range><begin>1700000000</begin>"
       "<end>1700086400</end></date_range></report_metadata><policy_published><domain>example.org</domain>"
       "<p>quarantine</p></policy_published>" + recs + "</feedback>").encode()
msg = EmailMessage()
msg["From"] = "noreply@" + org
msg["To"] = "dmarc@example.org"
msg["Subject"] = f"Report Domain: example.org Submitter: {org} Report-ID: <42>"
msg.set_content("This is an aggregate report.")
name = f"{org}!example.org!1700000000!1700086400"
if kind == "zip":
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name + ".xml", xml)
    msg.add_attachment(b.getvalue(), maintype="application", subtype="zip", filename=name + ".zip")
else:
    msg.add_attachment(gzip.compress(xml), maintype="application", subtype="gzip", filename=name + ".xml.gz")
open(out, "wb").write(msg.as_bytes(policy=policy.SMTP))
"#;

const MAKE_TLSRPT: &str = r#"
import gzip, json, sys
from email.message import EmailMessage
from email import policy
report = {"organization-name": "tls.example", "date-range": {"start-datetime": "2026-12-01T00:00:00Z",
    "end-datetime": "2026-12-01T23:59:59Z"}, "contact-info": "tls@tls.example", "report-id": "t-1",
    "policies": [{"policy": {"policy-type": "sts", "policy-domain": "example.org", "mx-host": ["mail.example.org"]},
    "summary": {"total-successful-session-count": 20, "total-failure-session-count": 2},
    "failure-details": [{"result-type": "certificate-expired", "sending-mta-ip": "192.0.2.50",
    "receiving-mx-hostname": "mail.example.org", "failed-session-count": 2}]}]}
msg = EmailMessage()
msg["From"] = "tls@tls.example"
msg["To"] = "dmarc@example.org"
msg["Subject"] = "Report Domain: example.org Submitter: tls.example Report-ID: <t-1>"
msg["TLS-Report-Domain"] = "example.org"
msg.set_content("TLS report.")
msg.add_attachment(gzip.compress(json.dumps(report).encode()), maintype="application",
    subtype="tlsrpt+gzip", filename="tls.example!example.org!1!2!t-1.json.gz")
open(sys.argv[1], "wb").write(msg.as_bytes(policy=policy.SMTP))
"#;

#[test]
fn received_reports_are_kept_listed_and_summarised() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        "alice@example.org:x\n",
        "hostname = \"mail.example.org\"\ndata_dir = \"data\"\naccounts = \"passwd\"\n\
         [listen]\nsmtp = [\"127.0.0.1:0\"]\n[reports]\naddress = \"dmarc@example.org\"\n\
         [[domain]]\nname = \"example.org\"\n[domain.aliases]\npostmaster = \"alice\"\ndmarc = \"alice\"\n",
    );
    let p = serve(dir.path(), &config);
    let port = p.addr.port();
    let mail = |script: &str, args: &[&str]| {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut a = args.to_vec();
        let path = f.path().to_str().unwrap().to_owned();
        if script == MAKE_DMARC {
            a.insert(1, &path);
        } else {
            a.insert(0, &path);
        }
        python(script, &a);
        let m = std::fs::read(f.path()).unwrap();
        send("127.0.0.1", port, "127.0.0.1", "noreply@r.test", "dmarc@example.org", &m);
    };
    mail(MAKE_DMARC, &["google.test", "gzip"]);
    mail(MAKE_DMARC, &["zipper.test", "zip"]);
    mail(MAKE_TLSRPT, &[]);
    // No report: delivered as usual to what the address reaches.
    send("127.0.0.1", port, "127.0.0.1", "friend@r.test", "dmarc@example.org", b"Subject: hi\r\n\r\nJust mail.\r\n");
    let alice = dir.path().join("data/mailboxes/example.org/alice");
    wait_until("the non-report delivered", T, || files(&alice, "new").len() == 1);
    let stored = String::from_utf8(std::fs::read(&files(&alice, "new")[0]).unwrap()).unwrap();
    assert!(stored.contains("Just mail."), "{stored}");
    let kept = dir.path().join("data/reports/received");
    assert_eq!(files(dir.path(), "data/reports/received").len(), 3, "three reports kept");
    use std::os::unix::fs::PermissionsExt;
    for f in files(dir.path(), "data/reports/received") {
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600, "{}", f.display());
    }
    assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o700);

    let out = run(
        Command::new(env!("CARGO_BIN_EXE_smtp-std")).args(["reports", "--config", config.to_str().unwrap()]),
        b"",
        T,
    );
    assert_eq!(out.status, Some(0), "{}\n{}", out.stdout, out.stderr);
    let text = out.stdout;
    assert!(text.contains("DMARC aggregate reports: 2"), "{text}");
    assert!(
        text.contains(
            "google.test  about example.org  2023-11-14 22:13 .. 2023-11-15 22:13  14 messages, 4 failing DMARC"
        ),
        "{text}"
    );
    assert!(text.contains("zipper.test  about example.org") && text.contains("3 messages, 0 failing DMARC"), "{text}");
    // Per source, failing first: 198.51.100.7 (4 failing, quarantined), then the others.
    let line = |ip: &str| {
        text.lines().position(|l| l.contains(ip) && !l.contains("about")).unwrap_or_else(|| panic!("{ip}: {text}"))
    };
    assert!(line("198.51.100.7") < line("192.0.2.1") && line("198.51.100.7") < line("203.0.113.5"), "{text}");
    let bad = &text.lines().nth(line("198.51.100.7")).unwrap();
    let cols: Vec<&str> = bad.split_whitespace().collect();
    assert_eq!(cols[..7], ["google.test", "example.org", "198.51.100.7", "4", "4", "0", "0"], "{bad}");
    assert!(bad.ends_with("4 quarantined"), "{bad}");
    let good: Vec<&str> = text.lines().nth(line("192.0.2.1")).unwrap().split_whitespace().collect();
    assert_eq!(good[3..8], ["10", "0", "10", "10", "none"]);
    assert!(text.contains("TLS reports: 1") && text.contains("tls.example"), "{text}");
    assert!(text.contains("sts policy of example.org: 20 successful, 2 failed sessions"), "{text}");
    assert!(text.contains("certificate-expired: 2 (from 192.0.2.50 to mail.example.org)"), "{text}");
    let other = run(
        Command::new(env!("CARGO_BIN_EXE_smtp-std")).args([
            "reports",
            "--config",
            config.to_str().unwrap(),
            "--domain",
            "other.test",
        ]),
        b"",
        T,
    );
    assert!(other.stdout.contains("No reports received"), "{}", other.stdout);
    drop(p);
}

#[test]
fn a_report_address_not_ours_or_reaching_nobody_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = "data_dir = \"data\"\n[listen]\nsmtp = [\"127.0.0.1:25\"]\n\
                [reports]\naddress = \"dmarc@elsewhere.test\"\n[[domain]]\nname = \"example.org\"\n";
    let e = smtp_std::mta::config::Config::parse(text, "x.toml".as_ref()).unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("reports.address")), "{e}");
    let e = smtp_std::mta::config::Config::parse(
        "data_dir = \"d\"\n[reports]\nsend = 1\n[[domain]]\nname = \"a.test\"\n",
        "x.toml".as_ref(),
    )
    .unwrap_err();
    assert!(e.message.contains("unknown field"), "{e}");
    let config = setup(
        dir.path(),
        "alice@example.org:x\n",
        "data_dir = \"data\"\naccounts = \"passwd\"\n[listen]\nsmtp = [\"127.0.0.1:0\"]\n\
         [reports]\naddress = \"dmarc@example.org\"\n\
         [[domain]]\nname = \"example.org\"\n[domain.aliases]\npostmaster = \"alice\"\n",
    );
    let out =
        run(Command::new(env!("CARGO_BIN_EXE_smtp-std")).args(["serve", "--config", config.to_str().unwrap()]), b"", T);
    assert_ne!(out.status, Some(0));
    assert!(
        out.stderr.contains("smtp-std.toml:6: reports.address: dmarc@example.org reaches no account"),
        "{}",
        out.stderr
    );
}
