//! `smtp-std send` without `--server`: direct delivery to the recipients' MX hosts, against a
//! real DNS server (dnsmasq on a loopback port) and receiving servers on 127.0.0.2 and
//! 127.0.0.3 (the same port on both, given with `--port`): MX preference, fallback when a
//! host is down or answers 4xx, implicit MX, null MX, two domains in one send, temporary
//! failure everywhere, and a DKIM-signed message landing with `dkim=pass` in `smtp-std serve`.
#![cfg(feature = "mta")]

mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dnsmasq::{txt, Dnsmasq};
use smtp_std::mta::auth::{DkimAlgorithm, DkimKey};
use smtp_std::proto::parse::params::{MailParams, RcptParams};
use smtp_std::proto::parse::path::{ForwardPath, ReversePath};
use smtp_std::{Decision, Handler, Options, Running, Server, Session};

const T: Duration = Duration::from_secs(60);

/// A message that landed on a test MX.
#[derive(Debug, Clone)]
struct Got {
    mail_from: String,
    rcpt_to: Vec<String>,
    body: String,
    tls: bool,
}

/// How a test MX behaves.
#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// Reply to MAIL instead of accepting it.
    mail: Option<(u16, &'static str)>,
    /// Reply to every RCPT instead of accepting it.
    rcpt: Option<(u16, &'static str)>,
    /// Offer STARTTLS with a self-signed certificate for `localhost` (not the MX name).
    tls: bool,
}

/// A collecting handler.
#[derive(Clone)]
struct Collect {
    how: Behaviour,
    body: Vec<u8>,
    inbox: Arc<Mutex<Vec<Got>>>,
}

fn refusal(r: Option<(u16, &'static str)>) -> Decision {
    match r {
        Some((code, text)) => Decision::reply(code, None, text),
        None => Decision::Accept,
    }
}

impl Handler for Collect {
    fn mail_from(&mut self, _: &Session, _: &ReversePath<'_>, _: &MailParams<'_>) -> Decision {
        refusal(self.how.mail)
    }
    fn rcpt_to(&mut self, _: &Session, _: &ForwardPath<'_>, _: &RcptParams<'_>) -> Decision {
        refusal(self.how.rcpt)
    }
    fn data_chunk(&mut self, _: &Session, chunk: &[u8]) -> std::io::Result<()> {
        self.body.extend_from_slice(chunk);
        Ok(())
    }
    fn data_end(&mut self, s: &Session, _: u64) -> Decision {
        let body = String::from_utf8_lossy(&std::mem::take(&mut self.body)).into_owned();
        let got = Got {
            mail_from: s.envelope.mail_from.clone().unwrap_or_default(),
            rcpt_to: s.envelope.rcpt_to.clone(),
            body,
            tls: s.tls,
        };
        self.inbox.lock().unwrap().push(got);
        Decision::Accept
    }
    fn data_abort(&mut self, _: &Session, _: Option<smtp_std::proto::data::DataError>) {
        self.body.clear();
    }
}

/// A test MX on `ip:port`, stopped on drop.
struct Mx {
    running: Option<Running>,
    inbox: Arc<Mutex<Vec<Got>>>,
    _dir: tempfile::TempDir,
}

impl Mx {
    fn start(ip: &str, port: u16, name: &str, how: Behaviour) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut options = Options::new(name);
        if how.tls {
            let c = cert(dir.path());
            options = options.tls(smtp_std::tls::server_config_from_files(&c.cert_pem, &c.key_pem).unwrap());
        }
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let mut server = Server::new(options, Collect { how, body: Vec::new(), inbox: inbox.clone() });
        server.listen((ip, port)).unwrap();
        Self { running: Some(server.spawn()), inbox, _dir: dir }
    }

    fn got(&self) -> Vec<Got> {
        self.inbox.lock().unwrap().clone()
    }
}

impl Drop for Mx {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown();
        }
    }
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

/// The names every zone has: mx1.test is 127.0.0.2, mx2.test is 127.0.0.3.
fn zone(extra: &[&str]) -> Vec<String> {
    let mut z = vec!["host-record=mx1.test,127.0.0.2".to_owned(), "host-record=mx2.test,127.0.0.3".to_owned()];
    z.extend(extra.iter().map(|s| s.to_string()));
    z
}

/// `smtp-std send` in direct-delivery mode, from a@sender.test, the message on stdin.
fn send(dns: &Dnsmasq, port: u16, to: &[&str], extra: &[&str], message: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp-std"));
    cmd.arg("send").env("RUST_LOG", "warn");
    cmd.args(["--dns", &dns.arg(), "--port", &port.to_string(), "--ehlo", "client.test", "--timeout", "10"]);
    cmd.args(["--from", "a@sender.test"]);
    for t in to {
        cmd.args(["--to", t]);
    }
    cmd.args(extra);
    run(&mut cmd, message, T)
}

const MSG: &[u8] = b"From: a@sender.test\nSubject: direct\n\nHello over MX.\n";

fn skip() -> bool {
    !Dnsmasq::available()
}

#[test]
fn preferred_host_gets_the_mail_with_opportunistic_tls() {
    if skip() {
        return;
    }
    let port = common_port();
    // The preferred host offers STARTTLS with a certificate for another name: used anyway.
    let mx1 = Mx::start("127.0.0.2", port, "mx1.test", Behaviour { tls: true, ..Default::default() });
    let mx2 = Mx::start("127.0.0.3", port, "mx2.test", Behaviour::default());
    let dns = Dnsmasq::start(&zone(&["mx-host=pref.test,mx2.test,20", "mx-host=pref.test,mx1.test,10"]));
    let out = send(&dns, port, &["x@pref.test", "y@pref.test"], &[], MSG);
    assert_eq!(out.status, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("x@pref.test: accepted 250") && out.stdout.contains("(mx1.test [127.0.0.2])"));
    let got = mx1.got();
    assert_eq!(got.len(), 1, "one transaction for the domain");
    assert_eq!(got[0].rcpt_to, ["x@pref.test", "y@pref.test"]);
    assert_eq!(got[0].mail_from, "a@sender.test");
    assert!(got[0].tls, "STARTTLS used when offered");
    assert!(got[0].body.contains("\r\nSubject: direct\r\n\r\nHello over MX.\r\n"), "{}", got[0].body);
    assert!(got[0].body.starts_with("Date: ") && got[0].body.contains("Message-ID: <"));
    assert!(mx2.got().is_empty());

    // --tls required verifies the certificate against Mozilla's roots: it does not verify,
    // so the next host (no STARTTLS at all) fails too: temporary.
    let out = send(&dns, port, &["x@pref.test"], &["--tls", "required"], MSG);
    assert_eq!(out.status, Some(75), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("x@pref.test: deferred: TLS is required"), "{}", out.stdout);
    assert_eq!(mx1.got().len(), 1);
}

#[test]
fn next_host_when_the_first_is_down() {
    if skip() {
        return;
    }
    let port = common_port();
    // Nothing listens on 127.0.0.2.
    let mx2 = Mx::start("127.0.0.3", port, "mx2.test", Behaviour::default());
    let dns = Dnsmasq::start(&zone(&["mx-host=down.test,mx1.test,10", "mx-host=down.test,mx2.test,20"]));
    let out = send(&dns, port, &["x@down.test"], &[], MSG);
    assert_eq!(out.status, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("x@down.test: accepted 250") && out.stdout.contains("[127.0.0.3]"), "{}", out.stdout);
    assert_eq!(mx2.got().len(), 1);
}

#[test]
fn next_host_after_451_to_rcpt_or_mail() {
    if skip() {
        return;
    }
    for (how, what) in [
        (Behaviour { rcpt: Some((451, "4.7.1 greylisted, try later")), ..Default::default() }, "RCPT"),
        (Behaviour { mail: Some((451, "4.3.0 busy")), ..Default::default() }, "MAIL"),
    ] {
        let port = common_port();
        let mx1 = Mx::start("127.0.0.2", port, "mx1.test", how);
        let mx2 = Mx::start("127.0.0.3", port, "mx2.test", Behaviour::default());
        let dns = Dnsmasq::start(&zone(&["mx-host=grey.test,mx1.test,10", "mx-host=grey.test,mx2.test,20"]));
        let out = send(&dns, port, &["x@grey.test", "y@grey.test"], &[], MSG);
        assert_eq!(out.status, Some(0), "451 to {what}: {}\n{}", out.stdout, out.stderr);
        assert!(mx1.got().is_empty(), "{what}");
        let got = mx2.got();
        assert_eq!(got.len(), 1, "{what}");
        assert_eq!(got[0].rcpt_to, ["x@grey.test", "y@grey.test"]);
    }
}

#[test]
fn implicit_mx_and_null_mx() {
    if skip() {
        return;
    }
    let port = common_port();
    let mx1 = Mx::start("127.0.0.2", port, "mx1.test", Behaviour::default());
    let mx2 = Mx::start("127.0.0.3", port, "mx2.test", Behaviour::default());
    let dns = Dnsmasq::start(&zone(&["host-record=implicit.test,127.0.0.3", "mx-host=null.test,.,0"]));

    // No MX record, an A record: the domain is its own MX.
    let out = send(&dns, port, &["x@implicit.test"], &[], MSG);
    assert_eq!(out.status, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("(implicit.test [127.0.0.3])"), "{}", out.stdout);
    assert_eq!(mx2.got().len(), 1);

    // RFC 7505 null MX: refused for good, nothing sent anywhere.
    let out = send(&dns, port, &["x@null.test"], &[], MSG);
    assert_eq!(out.status, Some(69), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("x@null.test: failed: null.test: the domain accepts no mail (null MX"),
        "{}",
        out.stdout
    );
    assert!(mx1.got().is_empty());
    assert_eq!(mx2.got().len(), 1);

    // A null-MX recipient next to a good one: the good one gets it, the status is 69.
    let out = send(&dns, port, &["x@null.test", "y@implicit.test"], &[], MSG);
    assert_eq!(out.status, Some(69), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("y@implicit.test: accepted"), "{}", out.stdout);
    assert_eq!(mx2.got().len(), 2);
    assert_eq!(mx2.got()[1].rcpt_to, ["y@implicit.test"]);
}

#[test]
fn two_domains_each_on_its_own_host() {
    if skip() {
        return;
    }
    let port = common_port();
    let mx1 = Mx::start("127.0.0.2", port, "mx1.test", Behaviour::default());
    let mx2 = Mx::start("127.0.0.3", port, "mx2.test", Behaviour::default());
    let dns = Dnsmasq::start(&zone(&["mx-host=one.test,mx1.test,10", "mx-host=two.test,mx2.test,10"]));
    // Bigger than the in-memory spool bound would matter only past 4 MiB; the same bytes must
    // reach both hosts.
    let mut msg =
        b"From: a@sender.test\nSubject: two\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <two@test>\n\n".to_vec();
    for i in 0..20_000 {
        msg.extend_from_slice(format!("line {i}\n").as_bytes());
    }
    let out = send(&dns, port, &["a@one.test", "b@two.test", "c@One.test"], &[], &msg);
    assert_eq!(out.status, Some(0), "{}\n{}", out.stdout, out.stderr);
    let (g1, g2) = (mx1.got(), mx2.got());
    assert_eq!((g1.len(), g2.len()), (1, 1));
    assert_eq!(g1[0].rcpt_to, ["a@one.test", "c@One.test"]);
    assert_eq!(g2[0].rcpt_to, ["b@two.test"]);
    assert_eq!(g1[0].body, g2[0].body);
    assert!(g1[0].body.ends_with("line 19999\r\n"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].starts_with("a@one.test: accepted") && lines[1].starts_with("b@two.test: accepted"));
}

#[test]
fn temporary_failure_everywhere_is_75_with_the_last_reply() {
    if skip() {
        return;
    }
    let port = common_port();
    let mx1 = Mx::start(
        "127.0.0.2",
        port,
        "mx1.test",
        Behaviour { mail: Some((451, "4.3.0 mx1 busy")), ..Default::default() },
    );
    let mx2 = Mx::start(
        "127.0.0.3",
        port,
        "mx2.test",
        Behaviour { rcpt: Some((450, "4.2.0 mx2 mailbox busy")), ..Default::default() },
    );
    let dns = Dnsmasq::start(&zone(&[
        "mx-host=busy.test,mx1.test,10",
        "mx-host=busy.test,mx2.test,20",
        // An MX host without an address is skipped.
        "mx-host=busy.test,nowhere.busy.test,30",
    ]));
    let out = send(&dns, port, &["x@busy.test"], &[], MSG);
    assert_eq!(out.status, Some(75), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("x@busy.test: deferred 450 4.2.0 mx2 mailbox busy (mx2.test [127.0.0.3])"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("try again later"), "{}", out.stderr);
    assert!(mx1.got().is_empty() && mx2.got().is_empty());

    // Nothing listening anywhere (port 1 on loopback: refused): temporary too.
    let out = send(&dns, 1, &["x@busy.test"], &[], MSG);
    assert_eq!(out.status, Some(75), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("x@busy.test: deferred: could not connect to mx2.test [127.0.0.3]:1: "),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(") (mx2.test"), "the host named once: {}", out.stdout);
}

fn read_new(maildir: &Path) -> Vec<String> {
    files(maildir, "new").iter().map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()).collect()
}

#[test]
fn dkim_signed_through_mx_into_serve_passes() {
    if skip() {
        return;
    }
    let kdir = tempfile::tempdir().unwrap();
    let (key, pem) = DkimKey::generate(DkimAlgorithm::Ed25519).unwrap();
    let key_path = kdir.path().join("dkim.key");
    std::fs::write(&key_path, pem).unwrap();
    let port = common_port();
    let dns = Dnsmasq::start(&zone(&[
        "mx-host=dest.test,mx1.test,10",
        // We send from 127.0.0.1 (the kernel's source address for 127/8): SPF covers it.
        &txt("sender.test", "v=spf1 ip4:127.0.0.1 -all"),
        &txt("_dmarc.sender.test", "v=DMARC1; p=reject"),
        &txt("s1._domainkey.sender.test", &key.record_value()),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.2:{port}");
    // `serve` trusts 127.0.0.1 (this host) by default and would skip the checks: make only
    // an unrelated network trusted.
    let p = Program::start(
        dir.path(),
        &["--listen", &listen, "--hostname", "mx.test", "--dns", &dns.arg(), "--trusted-network", "192.0.2.0/24"],
    );
    let md = dir.path().join("Maildir");
    let dkim = ["--dkim-key", key_path.to_str().unwrap(), "--dkim-selector", "s1"];
    let msg = b"From: Sender <a@sender.test>\nTo: x@dest.test\nSubject: signed over MX\n\nHello.\n.dot\n";
    let out = send(&dns, port, &["x@dest.test"], &dkim, msg);
    assert_eq!(out.status, Some(0), "{}\n{}", out.stdout, out.stderr);
    let stored = read_new(&md);
    assert_eq!(stored.len(), 1);
    let m = std::str::from_utf8(strip_trace(stored[0].as_bytes())).unwrap();
    assert!(m.starts_with("Authentication-Results: mx.test;"), "{m}");
    let ar = m[..m.find("\r\nReceived: ").unwrap()].replace("\r\n\t", " ");
    assert!(ar.contains("dkim=pass header.d=sender.test") && ar.contains("header.s=s1"), "{ar}");
    assert!(ar.contains("spf=pass") && ar.contains("dmarc=pass"), "{ar}");
    // Signed after Date and Message-ID were added, and they are signed.
    let sig_at = m.find("DKIM-Signature: ").expect("signature");
    assert!(sig_at < m.find("\r\nDate: ").unwrap() && sig_at < m.find("\r\nMessage-ID: ").unwrap());
    let sig = &m[sig_at..m[sig_at..].find("\r\nDate: ").unwrap() + sig_at].replace("\r\n\t", "");
    assert!(sig.contains("a=ed25519-sha256") && sig.to_ascii_lowercase().contains("message-id"), "{sig}");

    // Through a smarthost (the same server) with --dkim-domain: signed too.
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_smtp-std"))
            .args(["send", "--server", &listen, "--tls", "off", "--from", "a@sender.test", "--to", "x@dest.test"])
            .args(dkim)
            .args(["--dkim-domain", "sender.test"]),
        b"From: a@sender.test\nSubject: signed via smarthost\n\nHi.\n",
        T,
    );
    assert_eq!(out.status, Some(0), "{}\n{}", out.stdout, out.stderr);
    let m = read_new(&md).into_iter().find(|m| m.contains("signed via smarthost")).unwrap();
    assert!(m.contains("dkim=pass header.d=sender.test"), "{m}");
    drop(p);
}
