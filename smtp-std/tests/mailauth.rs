//! Mail authentication end to end against a real DNS server (dnsmasq on a loopback port):
//! SPF pass/fail/softfail by sending from different loopback addresses, DKIM signed with our
//! signer and verified by the server, DMARC none/quarantine/reject landing where they should,
//! DNS failures answered 451, `records` and `check`, and MX resolution.
#![cfg(feature = "mta")]

mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use dnsmasq::{txt, Dnsmasq};
use smtp_std::mta::auth::{sign, DkimAlgorithm, DkimKey, Dns, MxError};

/// One SMTP transaction from `source` (a loopback address): the MAIL reply, and the reply
/// to the end of data (empty when MAIL or RCPT was refused).
fn send_from(source: &str, server: SocketAddr, mail_from: &str, message: &[u8]) -> (String, String) {
    send_as(source, "client.test", server, mail_from, message)
}

/// [`send_from`] with the EHLO name `helo`.
fn send_as(source: &str, helo: &str, server: SocketAddr, mail_from: &str, message: &[u8]) -> (String, String) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect_timeout(&server.into(), Duration::from_secs(5)).unwrap();
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let reply = move |r: &mut BufReader<TcpStream>| {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    };
    assert!(reply(&mut r).starts_with("220"));
    write!(w, "EHLO {helo}\r\n").unwrap();
    assert!(reply(&mut r).starts_with("250"));
    write!(w, "MAIL FROM:<{mail_from}>\r\n").unwrap();
    let mail = reply(&mut r);
    if !mail.starts_with("250") {
        return (mail, String::new());
    }
    write!(w, "RCPT TO:<me@mx.test>\r\n").unwrap();
    assert!(reply(&mut r).starts_with("250"));
    write!(w, "DATA\r\n").unwrap();
    assert!(reply(&mut r).starts_with("354"));
    w.write_all(message).unwrap();
    w.write_all(b".\r\n").unwrap();
    let end = reply(&mut r);
    let _ = write!(w, "QUIT\r\n");
    (mail, end)
}

fn message(from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: Sender <{from}>\r\nTo: me@mx.test\r\nSubject: {subject}\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
         Message-ID: <{subject}@test>\r\n\r\nHello.\r\n"
    )
    .replace(' ', " ")
    .into_bytes()
}

fn read_all(dir: &Path, sub: &str) -> Vec<String> {
    files(dir, sub).iter().map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()).collect()
}

/// The one message whose Subject is `subject` in `<maildir>/<sub>`.
fn find(maildir: &Path, sub: &str, subject: &str) -> Option<String> {
    read_all(maildir, sub).into_iter().find(|m| m.contains(&format!("Subject: {subject}\r\n")))
}

/// The Authentication-Results header field of a stored message (unfolded).
fn auth_results(msg: &str) -> String {
    let msg = std::str::from_utf8(strip_trace(msg.as_bytes())).unwrap();
    assert!(msg.starts_with("Authentication-Results: mx.test;"), "no AR header after the trace fields: {msg}");
    let end = msg.find("\r\nReceived: ").expect("Received after AR");
    msg[..end].replace("\r\n\t", " ")
}

fn zone(keys: &[(&str, &str, &DkimKey)]) -> Vec<String> {
    let mut z = vec![
        // SPF: pass from 127.0.0.2, fail or softfail from elsewhere.
        txt("strict.test", "v=spf1 ip4:127.0.0.2 -all"),
        txt("soft.test", "v=spf1 ip4:127.0.0.2 ~all"),
        // DMARC policies, all with the strict SPF record.
        txt("none.test", "v=spf1 ip4:127.0.0.2 -all"),
        txt("_dmarc.none.test", "v=DMARC1; p=none"),
        txt("quar.test", "v=spf1 ip4:127.0.0.2 -all"),
        txt("_dmarc.quar.test", "v=DMARC1; p=quarantine"),
        txt("rej.test", "v=spf1 ip4:127.0.0.2 -all"),
        txt("_dmarc.rej.test", "v=DMARC1; p=reject"),
        // DKIM-signed mail: SPF never passes, so only DKIM can align.
        txt("signed.test", "v=spf1 -all"),
        txt("_dmarc.signed.test", "v=DMARC1; p=quarantine"),
        // A domain whose lookups fail (dnsmasq answers REFUSED: no upstream for it).
        "server=/dnsfail.test/#".to_owned(),
    ];
    for (domain, selector, key) in keys {
        z.push(txt(&format!("{selector}._domainkey.{domain}"), &key.record_value()));
    }
    z
}

fn skip() -> bool {
    !Dnsmasq::available()
}

#[test]
fn spf_pass_fail_softfail_and_trusted_and_switch_off() {
    if skip() {
        return;
    }
    let dns = Dnsmasq::start(&zone(&[]));
    let dir = tempfile::tempdir().unwrap();
    let p = Program::start(dir.path(), &["--hostname", "mx.test", "--dns", &dns.arg()]);
    let md = dir.path().join("Maildir");

    let cases = [
        ("127.0.0.2", "a@strict.test", "spf-pass", "spf=pass"),
        ("127.0.0.3", "a@strict.test", "spf-fail", "spf=fail"),
        ("127.0.0.3", "a@soft.test", "spf-softfail", "spf=softfail"),
        ("127.0.0.3", "a@nospf.test", "spf-none", "spf=none"),
    ];
    for (src, from, subject, want) in cases {
        let (_, end) = send_from(src, p.addr, from, &message(from, subject));
        assert!(end.starts_with("250 "), "{subject}: {end}");
        let msg = find(&md, "new", subject).unwrap_or_else(|| panic!("{subject} not in new/"));
        let ar = auth_results(&msg);
        assert!(ar.contains(want), "{subject}: {ar}");
        assert!(ar.contains("dkim=none") && ar.contains("dmarc=none"), "{ar}");
        assert!(ar.contains(&format!("smtp.mailfrom={from}")), "{ar}");
    }
    // From 127.0.0.1 (trusted by default, like a local submission): no checks, no header.
    let (_, end) = send_from("127.0.0.1", p.addr, "a@rej.test", &message("a@rej.test", "trusted"));
    assert!(end.starts_with("250 "), "{end}");
    let msg = find(&md, "new", "trusted").unwrap();
    assert!(strip_trace(msg.as_bytes()).starts_with(b"Received: ") && !msg.contains("Authentication-Results"), "{msg}");
    drop(p);

    // --no-mail-auth: nothing checked, even p=reject mail from outside is stored.
    let dir2 = tempfile::tempdir().unwrap();
    let p = Program::start(dir2.path(), &["--hostname", "mx.test", "--dns", &dns.arg(), "--no-mail-auth"]);
    let (_, end) = send_from("127.0.0.3", p.addr, "a@rej.test", &message("a@rej.test", "unchecked"));
    assert!(end.starts_with("250 "), "{end}");
    let msg = find(&dir2.path().join("Maildir"), "new", "unchecked").unwrap();
    assert!(!msg.contains("Authentication-Results"), "{msg}");
}

#[test]
fn spf_checks_the_helo_name_for_a_null_sender() {
    if skip() {
        return;
    }
    let mut records = zone(&[]);
    // HELO names with their own SPF records (RFC 7208 §2.3); the From domains have none,
    // or a policy that must not decide.
    records.push(txt("mta.helo.test", "v=spf1 ip4:127.0.0.2 -all"));
    records.push(txt("soft.helo.test", "v=spf1 ip4:127.0.0.2 ~all"));
    let dns = Dnsmasq::start(&records);
    let dir = tempfile::tempdir().unwrap();
    let p = Program::start(dir.path(), &["--hostname", "mx.test", "--dns", &dns.arg()]);
    let md = dir.path().join("Maildir");

    let cases = [
        // Authorised address: pass, from the HELO name's record.
        ("127.0.0.2", "mta.helo.test", "helo-pass", "spf=pass", "postmaster@mta.helo.test designates 127.0.0.2"),
        // Same name, another address: fail (-all).
        ("127.0.0.3", "mta.helo.test", "helo-fail", "spf=fail", "postmaster@mta.helo.test does not designate"),
        // ~all: softfail.
        ("127.0.0.3", "soft.helo.test", "helo-softfail", "spf=softfail", "postmaster@soft.helo.test"),
        // No record for the HELO name: none.
        ("127.0.0.3", "norecord.helo.test", "helo-none", "spf=none", "postmaster@norecord.helo.test"),
    ];
    for (src, helo, subject, want, comment) in cases {
        // From: none.test (p=none): DMARC fails (the HELO name does not align), the message
        // is stored anyway, and the SPF verdict is the HELO name's alone.
        let (mail, end) = send_as(src, helo, p.addr, "", &message("a@none.test", subject));
        assert!(mail.starts_with("250 "), "{subject}: {mail}");
        assert!(end.starts_with("250 "), "{subject}: {end}");
        let msg = find(&md, "new", subject).unwrap_or_else(|| panic!("{subject} not in new/"));
        let ar = auth_results(&msg);
        assert!(ar.contains(&format!("{want} ")), "{subject}: {ar}");
        assert!(ar.contains(comment), "{subject}: {ar}");
        // RFC 8601 §2.7.2: the identity checked was the HELO name.
        assert!(ar.contains(&format!("smtp.helo={helo}")), "{subject}: {ar}");
        assert!(!ar.contains("smtp.mailfrom"), "{subject}: {ar}");
    }
    // The same null sender with a HELO name that is not a domain (an address literal): there
    // is nothing to check, SPF none.
    let (_, end) = send_as("127.0.0.2", "[127.0.0.2]", p.addr, "", &message("a@none.test", "helo-literal"));
    assert!(end.starts_with("250 "), "{end}");
    let ar = auth_results(&find(&md, "new", "helo-literal").unwrap());
    assert!(ar.contains("spf=none"), "{ar}");
    // A non-null MAIL FROM is checked, not the HELO name: mta.helo.test would pass from
    // 127.0.0.2 but strict.test's record is the one that decides from 127.0.0.3.
    let (_, end) = send_as("127.0.0.3", "mta.helo.test", p.addr, "a@strict.test", &message("a@strict.test", "mf"));
    assert!(end.starts_with("250 "), "{end}");
    let ar = auth_results(&find(&md, "new", "mf").unwrap());
    assert!(ar.contains("spf=fail") && ar.contains("smtp.mailfrom=a@strict.test"), "{ar}");
}

#[test]
fn dmarc_none_quarantine_reject() {
    if skip() {
        return;
    }
    let dns = Dnsmasq::start(&zone(&[]));
    let dir = tempfile::tempdir().unwrap();
    let p = Program::start(dir.path(), &["--hostname", "mx.test", "--dns", &dns.arg()]);
    let md = dir.path().join("Maildir");

    // SPF fails (wrong address), no DKIM: DMARC fails and the policy applies.
    let (_, end) = send_from("127.0.0.3", p.addr, "a@none.test", &message("a@none.test", "dmarc-none"));
    assert!(end.starts_with("250 "), "{end}");
    let ar = auth_results(&find(&md, "new", "dmarc-none").expect("p=none: inbox"));
    assert!(ar.contains("dmarc=fail") && ar.contains("header.from=none.test"), "{ar}");

    let (_, end) = send_from("127.0.0.3", p.addr, "a@quar.test", &message("a@quar.test", "dmarc-quarantine"));
    assert!(end.starts_with("250 "), "{end}");
    assert!(find(&md, "new", "dmarc-quarantine").is_none());
    let ar = auth_results(&find(&md, ".Junk/new", "dmarc-quarantine").expect("p=quarantine: .Junk"));
    assert!(ar.contains("dmarc=fail") && ar.contains("policy.dmarc=quarantine"), "{ar}");
    assert!(md.join(".Junk/cur").is_dir() && md.join(".Junk/tmp").is_dir() && md.join(".Junk/maildirfolder").exists());

    let (_, end) = send_from("127.0.0.3", p.addr, "a@rej.test", &message("a@rej.test", "dmarc-reject"));
    assert!(end.starts_with("550 5.7.1 "), "p=reject: {end}");
    assert!(find(&md, "new", "dmarc-reject").is_none() && find(&md, ".Junk/new", "dmarc-reject").is_none());

    // The same p=reject domain from its SPF-authorised address: aligned pass, inbox.
    let (_, end) = send_from("127.0.0.2", p.addr, "a@rej.test", &message("a@rej.test", "dmarc-pass"));
    assert!(end.starts_with("250 "), "{end}");
    let ar = auth_results(&find(&md, "new", "dmarc-pass").unwrap());
    assert!(ar.contains("spf=pass") && ar.contains("dmarc=pass"), "{ar}");

    // Nothing left behind in tmp/.
    wait_until("tmp/ empty", Duration::from_secs(5), || files(&md, "tmp").is_empty());
    assert_eq!(files(&md, "new").len(), 2);
    assert_eq!(files(&md, ".Junk/new").len(), 1);
}

#[test]
fn dkim_signed_by_us_verifies_and_tampering_fails() {
    if skip() {
        return;
    }
    let (ed, _) = DkimKey::generate(DkimAlgorithm::Ed25519).unwrap();
    // The RSA key comes from the program, as a user would make it.
    let kdir = tempfile::tempdir().unwrap();
    let key_path = kdir.path().join("rsa.key");
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_smtp-std"))
            .args(["dkim-keygen", "--domain", "signed.test", "--selector", "r1"])
            .args(["--out".as_ref(), key_path.as_os_str()]),
        b"",
        Duration::from_secs(120),
    );
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let rsa = DkimKey::load(&key_path).unwrap();
    assert_eq!(rsa.algorithm(), DkimAlgorithm::Rsa);
    // What it printed is the record of the key it wrote, split into 255-character strings.
    assert!(out.stdout.contains(&rsa.txt_record("signed.test", "r1")), "{}", out.stdout);
    assert!(out.stdout.contains("r1._domainkey.signed.test. 3600 IN TXT \"v=DKIM1; k=rsa; p=MII"));

    let dns = Dnsmasq::start(&zone(&[("signed.test", "e1", &ed), ("signed.test", "r1", &rsa)]));
    let dir = tempfile::tempdir().unwrap();
    let p = Program::start(dir.path(), &["--hostname", "mx.test", "--dns", &dns.arg()]);
    let md = dir.path().join("Maildir");

    for (selector, key) in [("e1", &ed), ("r1", &rsa)] {
        let subject = format!("dkim-{selector}");
        let msg = message("a@signed.test", &subject);
        let mut signed = sign(&msg, key, "signed.test", selector).unwrap();
        assert!(signed.starts_with(b"DKIM-Signature: "));
        signed.extend_from_slice(&msg);
        let (_, end) = send_from("127.0.0.3", p.addr, "a@signed.test", &signed);
        assert!(end.starts_with("250 "), "{end}");
        let ar = auth_results(&find(&md, "new", &subject).expect("DKIM-aligned: inbox"));
        assert!(ar.contains("spf=fail"), "{ar}");
        assert!(ar.contains("dkim=pass header.d=signed.test") && ar.contains(&format!("header.s={selector}")), "{ar}");
        assert!(ar.contains("dmarc=pass"), "{ar}");

        // Tampered after signing: the subject changed in transit.
        let tampered = String::from_utf8(signed.clone()).unwrap().replace(&subject, &format!("{subject}-tampered"));
        let (_, end) = send_from("127.0.0.3", p.addr, "a@signed.test", tampered.as_bytes());
        assert!(end.starts_with("250 "), "{end}");
        let subject_t = format!("{subject}-tampered");
        assert!(find(&md, "new", &subject_t).is_none());
        let ar = auth_results(&find(&md, ".Junk/new", &subject_t).expect("p=quarantine: .Junk"));
        assert!(ar.contains("dkim=fail") && ar.contains("dmarc=fail"), "{ar}");

        // Tampered body: the body hash no longer matches: not a pass either.
        let body_t = String::from_utf8(signed.clone())
            .unwrap()
            .replace("Hello.", "Send money.")
            .replace(&subject, &format!("{subject}-body"));
        let _ = send_from("127.0.0.3", p.addr, "a@signed.test", body_t.as_bytes());
        let ar = auth_results(&find(&md, ".Junk/new", &format!("{subject}-body")).expect(".Junk"));
        assert!(!ar.contains("dkim=pass") && ar.contains("dmarc=fail"), "{ar}");
    }
}

#[test]
fn dns_failures_are_451_never_a_pass() {
    if skip() {
        return;
    }
    let dns = Dnsmasq::start(&zone(&[]));
    let dir = tempfile::tempdir().unwrap();
    let p = Program::start(dir.path(), &["--hostname", "mx.test", "--dns", &dns.arg()]);
    let md = dir.path().join("Maildir");

    // SPF lookup refused by the server (hickory: "no records", mail-auth: none): 451 at MAIL,
    // RFC 7372's "SPF validation error".
    let (mail, _) = send_from("127.0.0.3", p.addr, "a@dnsfail.test", &message("a@dnsfail.test", "x"));
    assert!(mail.starts_with("451 4.7.24 SPF validation error"), "{mail}");
    // The same for the HELO identity of a null sender.
    let (mail, _) = send_as("127.0.0.3", "mta.dnsfail.test", p.addr, "", &message("a@strict.test", "x"));
    assert!(mail.starts_with("451 4.7.24 SPF validation error"), "{mail}");
    // SPF passes, but the From domain's DMARC lookup fails: 451 at the end of DATA.
    let (_, end) = send_from("127.0.0.2", p.addr, "a@strict.test", &message("a@dnsfail.test", "dmarc-dnsfail"));
    assert!(end.starts_with("451 4.7.0 DMARC policy not available"), "{end}");
    // SPF passes, the From domain has no DMARC record (NXDOMAIN, not a failure), but the key
    // of the DKIM signature cannot be fetched: 451 at the end of DATA.
    let (key, _) = DkimKey::generate(DkimAlgorithm::Ed25519).unwrap();
    let msg = message("a@strict.test", "dkim-dnsfail");
    let mut signed = sign(&msg, &key, "dnsfail.test", "s1").unwrap();
    signed.extend_from_slice(&msg);
    let (_, end) = send_from("127.0.0.2", p.addr, "a@strict.test", &signed);
    assert!(end.starts_with("451 4.7.5 DKIM key not available"), "{end}");
    // The same message unsigned is fine: only the key lookup made it temporary.
    let (_, end) = send_from("127.0.0.2", p.addr, "a@strict.test", &message("a@strict.test", "unsigned"));
    assert!(end.starts_with("250 "), "{end}");
    assert_eq!(files(&md, "new").len(), 1);
    assert!(find(&md, "new", "unsigned").is_some());
    assert!(files(&md, ".Junk/new").is_empty());
    wait_until("tmp/ empty", Duration::from_secs(5), || files(&md, "tmp").is_empty());
    drop(p);

    // The resolver pointed at a dead port: every lookup times out.
    let dead = dnsmasq::free_port();
    let dir = tempfile::tempdir().unwrap();
    let p = Program::start(
        dir.path(),
        &["--hostname", "mx.test", "--dns", &format!("127.0.0.1:{dead}"), "--dns-timeout", "0.3"],
    );
    let t = Instant::now();
    let (mail, _) = send_from("127.0.0.3", p.addr, "a@strict.test", &message("a@strict.test", "y"));
    assert!(mail.starts_with("451 4.7.24 "), "{mail}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(files(&dir.path().join("Maildir"), "new").is_empty());
}

fn program(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_smtp-std")).args(args), b"", Duration::from_secs(60))
}

#[test]
fn dkim_keygen_ed25519_to_a_file_and_to_stdout() {
    // --out: the key in a new private file, only the record on stdout.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ed.key");
    let p = path.to_str().unwrap();
    let args = ["dkim-keygen", "--domain", "ed.test.", "--selector", "e1", "--algorithm", "ed25519", "--out", p];
    let out = program(&args);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("private key written to {p}")), "{}", out.stderr);
    let key = DkimKey::load(&path).unwrap();
    assert_eq!(key.algorithm(), DkimAlgorithm::Ed25519);
    let record = key.txt_record("ed.test", "e1");
    assert!(record.starts_with("e1._domainkey.ed.test. 3600 IN TXT \"v=DKIM1; k=ed25519; p="), "{record}");
    assert_eq!(out.stdout, format!("; Publish this record in the ed.test zone:\n{record}\n"));
    assert!(!out.stdout.contains("PRIVATE KEY"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // It never overwrites a key.
    let before = std::fs::read(&path).unwrap();
    let again = program(&args);
    assert_ne!(again.status, Some(0), "{}", again.stdout);
    assert!(again.stderr.contains(p), "{}", again.stderr);
    assert!(again.stdout.is_empty(), "{}", again.stdout);
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // Without --out: the record, then the private key as PEM, on stdout; the two match and
    // the key signs with ed25519-sha256.
    let out = program(&["dkim-keygen", "--domain", "ed.test", "--selector", "e2", "--algorithm", "ed25519"]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let (head, pem) = out.stdout.split_once("-----BEGIN PRIVATE KEY-----").expect("PEM on stdout");
    assert!(out.stdout.ends_with("-----END PRIVATE KEY-----\n"), "{}", out.stdout);
    let key = DkimKey::from_bytes(format!("-----BEGIN PRIVATE KEY-----{pem}").as_bytes()).unwrap();
    assert_eq!(key.algorithm(), DkimAlgorithm::Ed25519);
    assert_eq!(head, format!("; Publish this record in the ed.test zone:\n{}\n", key.txt_record("ed.test", "e2")));
    assert!(head.contains("k=ed25519; p="), "{head}");
    let signature = sign(&message("a@ed.test", "keygen"), &key, "ed.test", "e2").unwrap();
    let signature = String::from_utf8(signature).unwrap();
    assert!(signature.contains("a=ed25519-sha256") && signature.contains("s=e2") && signature.contains("d=ed.test"));
}

#[test]
fn records_golden() {
    let out = program(&[
        "records",
        "--domain",
        "example.org",
        "--host",
        "mail.example.org",
        "--ip",
        "203.0.113.7",
        "--ipv6",
        "2001:db8::7",
        "--dmarc-policy",
        "reject",
        "--rua",
        "mailto:dmarc@example.org",
    ]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let golden = "\
; DNS records for mail to and from example.org.
; MX: where mail for the domain goes.
example.org. 3600 IN MX 10 mail.example.org.
; The mail host's addresses.
mail.example.org. 3600 IN A 203.0.113.7
mail.example.org. 3600 IN AAAA 2001:db8::7
; SPF: only the mail host's addresses and the MX hosts send mail for the domain;
;   anything else fails.
example.org. 3600 IN TXT \"v=spf1 ip4:203.0.113.7 ip6:2001:db8::7 mx -all\"
; DKIM: make a key with `smtp-std dkim-keygen --domain D --selector S --out FILE`
;   and publish the record it prints (or pass --selector S --key FILE here).
; DMARC: what receivers do with mail that fails both SPF and DKIM alignment.
_dmarc.example.org. 3600 IN TXT \"v=DMARC1; p=reject; rua=mailto:dmarc@example.org\"
; TLS reports: senders report their TLS failures to this address (RFC 8460).
_smtp._tls.example.org. 3600 IN TXT \"v=TLSRPTv1; rua=mailto:postmaster@example.org\"
; Reverse DNS: ask the provider of each address to publish these PTR records.
7.113.0.203.in-addr.arpa. 3600 IN PTR mail.example.org.
7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 3600 IN PTR mail.example.org.
";
    assert_eq!(out.stdout, golden);

    // With a key: its record, as dkim-keygen printed it.
    let dir = tempfile::tempdir().unwrap();
    let (key, pem) = DkimKey::generate(DkimAlgorithm::Ed25519).unwrap();
    let kp = dir.path().join("k.pem");
    std::fs::write(&kp, pem).unwrap();
    let kp = kp.to_str().unwrap();
    let out = program(&[
        "records",
        "--domain",
        "example.org",
        "--host",
        "mx.example.org",
        "--ip",
        "192.0.2.1",
        "--selector",
        "s1",
        "--key",
        kp,
    ]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains(&format!("{}\n", key.txt_record("example.org", "s1"))), "{}", out.stdout);
    assert!(out.stdout.contains("_dmarc.example.org. 3600 IN TXT \"v=DMARC1; p=quarantine\"\n"), "{}", out.stdout);
}

#[test]
fn check_good_and_broken_domains() {
    if skip() {
        return;
    }
    let (key, _) = DkimKey::generate(DkimAlgorithm::Ed25519).unwrap();
    let dns = Dnsmasq::start(&[
        "mx-host=good.test,mail.good.test,10".to_owned(),
        "host-record=mail.good.test,192.0.2.1,2001:db8::1".to_owned(),
        txt("good.test", "v=spf1 mx -all"),
        txt("_dmarc.good.test", "v=DMARC1; p=reject; rua=mailto:d@good.test"),
        txt("s1._domainkey.good.test", &key.record_value()),
        txt("_smtp._tls.good.test", "v=TLSRPTv1; rua=mailto:tls@good.test"),
        // Warnings only: p=none.
        "mx-host=monitor.test,mail.good.test,10".to_owned(),
        txt("monitor.test", "v=spf1 mx ~all"),
        txt("_dmarc.monitor.test", "v=DMARC1; p=none"),
        // Everything wrong.
        "mx-host=broken.test,nowhere.broken.test,10".to_owned(),
        txt("broken.test", "v=spf1 mx"),
        txt("broken.test", "v=spf1 -all"),
        txt("s1._domainkey.broken.test", "v=DKIM1; k=rsa; p=AAAA"),
        txt("_mta-sts.broken.test", "v=STSv1; id=not-an-id"),
        txt("_smtp._tls.broken.test", "v=TLSRPTv1;"),
        // No MX at all, one SPF record without -all.
        "host-record=nomx.test,192.0.2.2".to_owned(),
        txt("nomx.test", "v=spf1 a"),
    ]);
    let check = |domain: &str, selector: Option<&str>| {
        // dnsmasq does not validate: the DNSSEC line (tests/dane.rs) would be a warning.
        let mut args = vec!["check", "--dnssec", "off", "--domain", domain, "--dns"];
        let a = dns.arg();
        args.push(&a);
        if let Some(s) = selector {
            args.extend(["--selector", s]);
        }
        program(&args)
    };
    let out = check("good.test", Some("s1"));
    assert_eq!(out.status, Some(0), "{}", out.stdout);
    assert!(out.stdout.contains("ok:      MX 10 mail.good.test (192.0.2.1, 2001:db8::1)"), "{}", out.stdout);
    assert!(out.stdout.contains("ok:      DKIM key at s1._domainkey.good.test"), "{}", out.stdout);
    assert!(out.stdout.contains("ok:      TLS-RPT \"v=TLSRPTv1; rua=mailto:tls@good.test\""), "{}", out.stdout);
    // Only MTA-STS is missing (a warning: senders cannot insist on TLS).
    let warnings: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("warning:")).collect();
    assert!(warnings.len() == 1 && warnings[0].contains("no MTA-STS record at _mta-sts.good.test"), "{}", out.stdout);
    assert!(!out.stdout.contains("error"), "{}", out.stdout);

    let out = check("monitor.test", None);
    assert_eq!(out.status, Some(0), "{}", out.stdout);
    assert!(out.stdout.contains("warning: DMARC") && out.stdout.contains("p=none"), "{}", out.stdout);

    let out = check("broken.test", Some("s1"));
    assert_eq!(out.status, Some(1), "{}", out.stdout);
    for want in [
        "error:   MX host nowhere.broken.test has no A/AAAA record",
        "error:   2 SPF records for broken.test",
        "error:   no DMARC record",
        "error:   DKIM record at s1._domainkey.broken.test is bad",
        "error:   MTA-STS record \"v=STSv1; id=not-an-id\": id must be 1 to 32 letters and digits",
        "error:   TLS-RPT record \"v=TLSRPTv1;\" at _smtp._tls.broken.test has no rua=mailto:",
    ] {
        assert!(out.stdout.contains(want), "{want:?} missing in:\n{}", out.stdout);
    }
    let out = check("broken.test", Some("s2"));
    assert!(out.stdout.contains("error:   no DKIM key record"), "{}", out.stdout);

    let out = check("nomx.test", None);
    assert_eq!(out.status, Some(1), "{}", out.stdout);
    assert!(out.stdout.contains("error:   no MX record for nomx.test"), "{}", out.stdout);
    assert!(out.stdout.contains("does not end in -all or ~all"), "{}", out.stdout);
}

#[test]
fn resolve_mx_against_dnsmasq() {
    if skip() {
        return;
    }
    let dns = Dnsmasq::start(&[
        "mx-host=two.test,b.two.test,20".to_owned(),
        "mx-host=two.test,a.two.test,10".to_owned(),
        "host-record=a.two.test,192.0.2.10".to_owned(),
        "host-record=b.two.test,192.0.2.11,2001:db8::11".to_owned(),
        "host-record=implicit.test,192.0.2.12".to_owned(),
        "mx-host=null.test,.,0".to_owned(),
        txt("noaddr.test", "exists"),
        "mx-host=dangling.test,nowhere.dangling.test,10".to_owned(),
        "mx-host=half.test,nowhere.half.test,5".to_owned(),
        "mx-host=half.test,a.two.test,10".to_owned(),
        "server=/dnsfail.test/#".to_owned(),
    ]);
    let r = Dns::new(Some(dns.addr)).unwrap();
    let two = r.resolve_mx("two.test").unwrap();
    let got: Vec<(u16, &str, Vec<String>)> = two
        .iter()
        .map(|h| (h.preference, h.host.as_str(), h.addresses.iter().map(|a| a.to_string()).collect()))
        .collect();
    assert_eq!(
        got,
        vec![
            (10, "a.two.test", vec!["192.0.2.10".to_owned()]),
            (20, "b.two.test", vec!["192.0.2.11".to_owned(), "2001:db8::11".to_owned()])
        ]
    );
    // RFC 5321 §5.1: no MX, an address: the domain is its own MX.
    let imp = r.resolve_mx("implicit.test.").unwrap();
    assert_eq!((imp.len(), imp[0].preference, imp[0].host.as_str()), (1, 0, "implicit.test"));
    assert_eq!(imp[0].addresses, vec!["192.0.2.12".parse::<std::net::IpAddr>().unwrap()]);
    // RFC 7505 null MX.
    assert_eq!(r.resolve_mx("null.test"), Err(MxError::NullMx));
    assert_eq!(r.resolve_mx("noaddr.test"), Err(MxError::NoAddress));
    assert_eq!(r.resolve_mx("nosuch.test"), Err(MxError::NoSuchDomain));
    assert_eq!(r.resolve_mx("dangling.test"), Err(MxError::NoAddress));
    // One MX host without an address: listed empty, the other one is usable.
    let half = r.resolve_mx("half.test").unwrap();
    assert_eq!(half.len(), 2);
    assert!(half[0].addresses.is_empty() && !half[1].addresses.is_empty());
    assert!(matches!(r.resolve_mx("dnsfail.test"), Err(MxError::Temporary(_))));
}
