//! Sending for the people of a domain: submission (587, STARTTLS + AUTH) into the durable
//! queue, delivery to the recipients' MX hosts found through a real DNS server (dnsmasq), two
//! `serve` instances for a.test (127.0.0.2) and b.test (127.0.0.3) with SPF, DKIM and DMARC
//! passing at the receiver; retries on a greylisting receiver, a bounce (RFC 3464, parsed by
//! Python's `email`) for a `550 5.1.1`, a host down until a later attempt, a smarthost with
//! AUTH (Python aiosmtpd), and the `queue` commands. Schedules run in seconds.
#![cfg(feature = "mta")]

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dnsmasq::{txt, Dnsmasq};
use smtp_std::mta::auth::{DkimAlgorithm, DkimKey};
use smtp_std::proto::parse::{ForwardPath, RcptParams};
use smtp_std::{Decision, Handler, Options, Server, Session};

/// A port free on 127.0.0.2 to 127.0.0.6 alike: every test host listens on the same port.
fn shared_port() -> u16 {
    loop {
        let p = aiosmtpd::free_port();
        if (2..=6).all(|h| TcpListener::bind((Ipv4Addr::new(127, 0, 0, h), p)).is_ok()) {
            return p;
        }
    }
}

/// A port free on `ip`.
fn port_on(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

struct Mta {
    dir: tempfile::TempDir,
    program: Program,
    submission: u16,
    config: PathBuf,
}

impl Mta {
    fn mailbox(&self, account: &str) -> PathBuf {
        let (local, domain) = account.split_once('@').unwrap();
        self.dir.path().join("data/mailboxes").join(domain).join(local)
    }

    fn queue_len(&self) -> usize {
        queue_entries(&self.dir.path().join("data/queue/entries"))
    }

    fn queue(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_smtp-std"))
            .arg("queue")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }
}

/// `serve --config` for `domain` on `ip:port` (and submission on `ip`), delivering to port
/// `port` of other hosts, from `ip`, with a 1 s / 2 s retry schedule. `extra` goes into
/// `[outbound]`.
fn start_mta(domain: &str, ip: &str, port: u16, dns: &Dnsmasq, key_pem: Option<&str>, outbound: &str) -> Mta {
    start_mta_with(domain, ip, port, dns, key_pem, outbound, "", "0s")
}

/// [`start_mta`] with more `[domain.aliases]` lines and a delay notice after `delay`.
#[allow(clippy::too_many_arguments)]
fn start_mta_with(
    domain: &str,
    ip: &str,
    port: u16,
    dns: &Dnsmasq,
    key_pem: Option<&str>,
    outbound: &str,
    aliases: &str,
    delay: &str,
) -> Mta {
    let dir = tempfile::tempdir().unwrap();
    let c = cert(dir.path());
    std::fs::write(
        dir.path().join("passwd"),
        passwd_text(&format!("alice@{domain}:wonderland\nbob@{domain}:builder\n")),
    )
    .unwrap();
    let dkim = match key_pem {
        Some(pem) => {
            std::fs::write(dir.path().join("dkim.key"), pem).unwrap();
            "dkim_selector = \"s1\"\ndkim_key = \"dkim.key\"\n"
        }
        None => "",
    };
    let submission = port_on(ip);
    let config = format!(
        r#"hostname = "mx.{domain}"
data_dir = "data"
accounts = "passwd"
trusted_networks = []
[listen]
smtp = ["{ip}:{port}"]
submission = ["{ip}:{submission}"]
[tls]
cert = {cert:?}
key = {key_pem:?}
[dns]
server = "{dns}"
timeout = "2s"
[outbound]
port = {port}
bind = "{ip}"
timeout = "10s"
{outbound}
[queue]
retry = ["1s", "2s"]
scan_interval = "200ms"
lifetime = "1h"
delay_warning = "{delay}"
[[domain]]
name = "{domain}"
{dkim}[domain.aliases]
postmaster = "alice"
{aliases}
"#,
        cert = c.cert_pem,
        key_pem = c.key_pem,
        dns = dns.arg(),
    );
    let path = dir.path().join("smtp-std.toml");
    std::fs::write(&path, config).unwrap();
    let program = Program::start(dir.path(), &["--config", path.to_str().unwrap()]);
    wait_until("submission listening", Duration::from_secs(10), || {
        std::net::TcpStream::connect((ip, submission)).is_ok()
    });
    Mta { dir, program, submission, config: path }
}

/// Submits one message as alice over STARTTLS + AUTH with Python smtplib: each recipient
/// with its RCPT options (`NOTIFY=SUCCESS`, ...).
fn submit(mta: &Mta, ip: &str, from: &str, rcpts: &[(&str, &str)], message: &str) -> String {
    let rcpt_lines: String = rcpts
        .iter()
        .map(|(r, opts)| format!("    code, msg = s.rcpt({r:?}, {:?}.split())\n    out.append(code)\n", opts))
        .collect();
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP({ip:?}, {port})
s.starttls(context=ctx)
s.login("alice@{domain}", "wonderland")
out = []
code, msg = s.mail({from:?})
out.append(code)
if code == 250:
{rcpt_lines}    code, msg = s.data({message:?}.encode())
    out.append(code)
    out.append(msg.decode())
else:
    out.append(msg.decode())
print(out)
s.quit()
"#,
        port = mta.submission,
        domain = from.split_once('@').map_or("a.test", |(_, d)| d),
    );
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "smtplib: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// How a test receiver answers RCPT.
#[derive(Clone, Copy)]
enum Mode {
    /// `451 4.7.1` on the first `n` connections, then accept.
    Greylist(usize),
    /// `550 5.1.1` always.
    Refuse,
    /// Accept.
    Accept,
}

/// What a test receiver got: each message's recipients and content.
type Got = Arc<Mutex<Vec<(Vec<String>, Vec<u8>)>>>;

#[derive(Clone)]
struct Receiver {
    mode: Mode,
    conns: Arc<AtomicUsize>,
    got: Got,
    body: Vec<u8>,
    conn_no: usize,
}

impl Handler for Receiver {
    fn connect(&mut self, _: &Session) -> Decision {
        self.conn_no = self.conns.fetch_add(1, Ordering::SeqCst) + 1;
        Decision::Accept
    }
    fn rcpt_to(&mut self, _: &Session, to: &ForwardPath<'_>, _: &RcptParams<'_>) -> Decision {
        match self.mode {
            Mode::Greylist(n) if self.conn_no <= n => {
                Decision::reply(451, Some((4, 7, 1)), "Greylisted, try again later")
            }
            Mode::Refuse => Decision::reply(
                550,
                Some((5, 1, 1)),
                format!("<{}>: user unknown", smtp_std::handler::forward_path_string(to)),
            ),
            _ => Decision::Accept,
        }
    }
    fn data_chunk(&mut self, _: &Session, chunk: &[u8]) -> std::io::Result<()> {
        self.body.extend_from_slice(chunk);
        Ok(())
    }
    fn data_end(&mut self, s: &Session, _: u64) -> Decision {
        self.got.lock().unwrap().push((s.envelope.rcpt_to.clone(), std::mem::take(&mut self.body)));
        Decision::Accept
    }
}

struct TestReceiver {
    conns: Arc<AtomicUsize>,
    got: Got,
    _running: smtp_std::Running,
}

fn receiver(ip: &str, port: u16, mode: Mode) -> TestReceiver {
    let r = Receiver { mode, conns: Arc::default(), got: Arc::default(), body: Vec::new(), conn_no: 0 };
    let (conns, got) = (r.conns.clone(), r.got.clone());
    let mut server = Server::new(Options::new(&format!("receiver.{ip}")), r);
    server.listen(SocketAddr::new(ip.parse().unwrap(), port)).unwrap();
    TestReceiver { conns, got, _running: server.spawn() }
}

fn zone(key: Option<&DkimKey>, extra: &[&str]) -> Vec<String> {
    let mut z = vec![
        "mx-host=a.test,mx.a.test,10".to_owned(),
        "host-record=mx.a.test,127.0.0.2".to_owned(),
        "mx-host=b.test,mx.b.test,10".to_owned(),
        "host-record=mx.b.test,127.0.0.3".to_owned(),
        txt("a.test", "v=spf1 ip4:127.0.0.2 -all"),
        txt("_dmarc.a.test", "v=DMARC1; p=reject"),
    ];
    if let Some(k) = key {
        z.push(txt("s1._domainkey.a.test", &k.record_value()));
    }
    z.extend(extra.iter().map(|s| s.to_string()));
    z
}

fn skip() -> bool {
    !Dnsmasq::available() || !have("python3")
}

fn read_new(maildir: &Path) -> Vec<String> {
    files(maildir, "new").iter().map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()).collect()
}

#[test]
fn submission_to_another_domain_passes_spf_dkim_dmarc() {
    if skip() {
        return;
    }
    let (key, pem) = DkimKey::generate(DkimAlgorithm::Rsa).unwrap();
    let dns = Dnsmasq::start(&zone(Some(&key), &[]));
    let port = shared_port();
    let a = start_mta("a.test", "127.0.0.2", port, &dns, Some(&pem), "");
    let b = start_mta("b.test", "127.0.0.3", port, &dns, None, "");

    let msg = "From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: hello bob\r\n\r\nHi Bob.\r\n.leading dot\r\n";
    let out = submit(&a, "127.0.0.2", "alice@a.test", &[("bob@b.test", "")], msg);
    assert!(out.starts_with("[250, 250, 250, '2.0.0 Ok: queued as "), "{out}");
    // swaks too (STARTTLS, AUTH LOGIN/PLAIN), its own From: alice@a.test.
    let sw = Command::new("swaks")
        .args(["--server", &format!("127.0.0.2:{}", a.submission), "-tls"])
        .args(["--auth-user", "alice@a.test", "--auth-password", "wonderland"])
        .args(["--from", "alice@a.test", "--to", "bob@b.test", "--h-Subject", "via swaks"])
        .output();
    if let Ok(o) = &sw {
        assert!(
            o.status.success(),
            "swaks: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let want = if sw.is_ok() { 2 } else { 1 };
    let bob = b.mailbox("bob@b.test");
    wait_until("bob's mail", Duration::from_secs(30), || files(&bob, "new").len() == want);
    for m in read_new(&bob) {
        let ar = m.split("\r\nReceived: ").next().unwrap().replace("\r\n\t", " ");
        assert!(
            ar.contains("spf=pass") && ar.contains("dkim=pass header.d=a.test") && ar.contains("dmarc=pass"),
            "{m}"
        );
        assert!(m.contains("DKIM-Signature: ") && m.starts_with("Return-Path: <alice@a.test>\r\n"), "{m}");
    }
    assert!(read_new(&bob).iter().any(|m| m.ends_with("Hi Bob.\r\n.leading dot\r\n")));
    wait_until("the queue empty", Duration::from_secs(10), || a.queue_len() == 0);

    // Not alice's address: 553 5.7.1 at MAIL; a From: that is not hers: 553 5.7.1 after DATA.
    let out = submit(&a, "127.0.0.2", "bob@a.test", &[("bob@b.test", "")], msg);
    assert!(
        out.starts_with("[553, '5.7.1 <bob@a.test>: Sender address rejected: not owned by user alice@a.test"),
        "{out}"
    );
    let forged = msg.replace("From: Alice <alice@a.test>", "From: Boss <boss@b.test>");
    let out = submit(&a, "127.0.0.2", "alice@a.test", &[("bob@b.test", "")], &forged);
    assert!(out.contains("553, '5.7.1 From: <boss@b.test> rejected"), "{out}");
    // Port 25 relays for no one unauthenticated.
    let mut c = Client::connect(a.program.addr);
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO x.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<alice@a.test>").starts_with("250"));
    let r = c.cmd("RCPT TO:<bob@b.test>");
    assert!(r.starts_with("550 5.7.1"), "{r}");
    assert_eq!(a.queue_len(), 0);
}

#[test]
fn greylisting_a_bounce_and_a_host_down() {
    if skip() {
        return;
    }
    let dns = Dnsmasq::start(&zone(
        None,
        &[
            "mx-host=grey.test,mx.grey.test,10",
            "host-record=mx.grey.test,127.0.0.3",
            "mx-host=bad.test,mx.bad.test,10",
            "host-record=mx.bad.test,127.0.0.4",
            "mx-host=late.test,mx.late.test,10",
            "host-record=mx.late.test,127.0.0.5",
        ],
    ));
    let port = shared_port();
    let a = start_mta("a.test", "127.0.0.2", port, &dns, None, "");
    let grey = receiver("127.0.0.3", port, Mode::Greylist(2));
    let bad = receiver("127.0.0.4", port, Mode::Refuse);

    let msg = "From: alice@a.test\r\nSubject: to three\r\nMessage-ID: <three@a.test>\r\n\r\nbody\r\n";
    let rcpts =
        [("x@grey.test", "NOTIFY=SUCCESS,FAILURE"), ("y@bad.test", "ORCPT=rfc822;Y@bad.test"), ("z@late.test", "")];
    let out = submit(&a, "127.0.0.2", "alice@a.test", &rcpts, msg);
    assert!(out.starts_with("[250, 250, 250, 250, 250"), "{out}");

    // late.test is down: wait for a failed attempt, then bring it up.
    let attempted =
        || a.program.log.lock().unwrap().iter().any(|l| l.contains("z@late.test") && l.contains("deferred"));
    let end = std::time::Instant::now() + Duration::from_secs(40);
    while !attempted() {
        // Once seen to time out under a loaded parallel run: the log says what happened.
        assert!(std::time::Instant::now() < end, "no attempt to late.test: {:#?}", a.program.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let late = receiver("127.0.0.5", port, Mode::Accept);

    wait_until("grey.test accepts", Duration::from_secs(30), || grey.got.lock().unwrap().len() == 1);
    assert_eq!(grey.conns.load(Ordering::SeqCst), 3, "451 twice, accepted on the third attempt");
    wait_until("late.test gets it", Duration::from_secs(30), || late.got.lock().unwrap().len() == 1);
    assert!(bad.got.lock().unwrap().is_empty());
    wait_until("the entries done", Duration::from_secs(30), || a.queue_len() == 0);

    // alice gets the bounce for y@bad.test and the success report for x@grey.test.
    let alice = a.mailbox("alice@a.test");
    wait_until("two reports for alice", Duration::from_secs(20), || files(&alice, "new").len() == 2);
    let reports = read_new(&alice);
    let bounce = reports.iter().find(|m| m.contains("y@bad.test") && m.contains("Action: failed")).expect("the bounce");
    assert!(bounce.starts_with("Return-Path: <>\r\n"), "{bounce}");
    let parsed = parse_dsn(bounce);
    assert_eq!(parsed["content_type"], "multipart/report");
    assert_eq!(parsed["report_type"], "delivery-status");
    assert_eq!(parsed["final_recipient"], "rfc822; y@bad.test");
    assert_eq!(parsed["original_recipient"], "rfc822; Y@bad.test");
    assert_eq!(parsed["action"], "failed");
    assert_eq!(parsed["status"], "5.1.1");
    assert_eq!(parsed["remote_mta"], "dns; mx.bad.test");
    assert!(parsed["diagnostic"].starts_with("smtp; 550 5.1.1"), "{parsed:?}");
    assert!(parsed["original"].contains("Subject: to three"), "{parsed:?}");
    assert_eq!(parsed["auto_submitted"], "auto-replied");
    let success = reports.iter().find(|m| m.contains("Action: delivered")).expect("the success report");
    assert!(success.contains("x@grey.test") && !success.contains("z@late.test"), "{success}");
}

/// The fields of a DSN, parsed by Python's `email` package.
fn parse_dsn(message: &str) -> std::collections::HashMap<String, String> {
    let script = r#"
import email, email.policy, json, sys
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
parts = list(m.iter_parts())
status = parts[1]
per_msg, per_rcpt = status.get_payload()[0], status.get_payload()[1]
def get(h, k):
    v = h.get(k)
    return "" if v is None else " ".join(str(v).split())
print(json.dumps({
    "content_type": m.get_content_type(),
    "report_type": m.get_param("report-type"),
    "auto_submitted": str(m["Auto-Submitted"]),
    "parts": str(len(parts)),
    "reporting_mta": get(per_msg, "Reporting-MTA"),
    "final_recipient": get(per_rcpt, "Final-Recipient"),
    "original_recipient": get(per_rcpt, "Original-Recipient"),
    "action": get(per_rcpt, "Action"),
    "status": get(per_rcpt, "Status"),
    "remote_mta": get(per_rcpt, "Remote-MTA"),
    "diagnostic": get(per_rcpt, "Diagnostic-Code"),
    "original": parts[2].as_string() if len(parts) > 2 else "",
}))
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python email: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    // A flat JSON object of strings: parsed without a JSON crate.
    let mut map = std::collections::HashMap::new();
    let v: Vec<String> = python_json_pairs(&text);
    for pair in v.chunks(2) {
        map.insert(pair[0].clone(), pair[1].clone());
    }
    map
}

/// The strings of a flat JSON object, in order (keys and values alternating), decoding the
/// escapes Python's json.dumps writes.
fn python_json_pairs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => s.push('\n'),
                    Some('r') => s.push('\r'),
                    Some('t') => s.push('\t'),
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).collect();
                        s.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap_or(0xfffd)).unwrap_or('\u{fffd}'));
                    }
                    Some(other) => s.push(other),
                    None => break,
                },
                c => s.push(c),
            }
        }
        out.push(s);
    }
    out
}

#[test]
fn smarthost_with_auth_aiosmtpd() {
    if skip() || !aiosmtpd::have_aiosmtpd() {
        return;
    }
    let dns = Dnsmasq::start(&zone(None, &[]));
    let work = tempfile::tempdir().unwrap();
    let ca = aiosmtpd::test_ca(work.path());
    let (_py, relay_port) = aiosmtpd::aiosmtpd(work.path(), Some(&ca));
    std::fs::write(work.path().join("relay-password"), "s3cret\n").unwrap();
    let outbound = format!(
        "smarthost = \"localhost:{relay_port}\"\nsmarthost_user = \"alice\"\nsmarthost_password_file = {:?}\nsmarthost_ca = {:?}",
        work.path().join("relay-password"),
        ca.ca_pem
    );
    let a = start_mta("a.test", "127.0.0.2", shared_port(), &dns, None, &outbound);
    let out = submit(
        &a,
        "127.0.0.2",
        "alice@a.test",
        &[("friend@gmail.test", "")],
        "From: alice@a.test\r\nSubject: via relay\r\n\r\nhi\r\n",
    );
    assert!(out.starts_with("[250, 250, 250"), "{out}");
    wait_until("the relay got it", Duration::from_secs(30), || {
        files(work.path(), "").iter().any(|p| p.extension().is_some_and(|e| e == "env"))
    });
    let env = std::fs::read_to_string(work.path().join("msg1.env")).unwrap();
    assert_eq!(env, "from=alice@a.test\nto=friend@gmail.test\ntls=True\nauth=alice\n");
    let eml = std::fs::read_to_string(work.path().join("msg1.eml")).unwrap();
    assert!(eml.contains("Subject: via relay") && eml.contains("by mx.a.test with ESMTPSA"), "{eml}");
    wait_until("the queue empty", Duration::from_secs(10), || a.queue_len() == 0);
}

#[test]
fn queue_commands_list_hold_release_bounce_delete() {
    if skip() {
        return;
    }
    let dns = Dnsmasq::start(&zone(None, &["mx-host=down.test,mx.down.test,10", "host-record=mx.down.test,127.0.0.6"]));
    let a = start_mta_with("a.test", "127.0.0.2", shared_port(), &dns, None, "", "", "1s");
    for subject in ["one", "two"] {
        let out = submit(
            &a,
            "127.0.0.2",
            "alice@a.test",
            &[("x@down.test", "")],
            &format!("From: alice@a.test\r\nSubject: {subject}\r\n\r\nhi\r\n"),
        );
        assert!(out.starts_with("[250, 250, 250"), "{out}");
    }
    wait_until("two failed attempts", Duration::from_secs(20), || {
        a.program.log.lock().unwrap().iter().filter(|l| l.contains("x@down.test") && l.contains("deferred")).count()
            >= 2
    });
    let list = a.queue(&["list"]);
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    // (The delay notices to alice, from <>, may be in the queue for a moment too.)
    assert!(list.status.success() && text.contains(" entries, ") && text.contains(" recipients pending"), "{text}");
    assert!(text.contains("x@down.test pending  last: could not connect to mx.down.test [127.0.0.6]:"), "{text}");
    let ids: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(' ') && l.contains("  from alice@a.test  "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);

    let ok = |args: &[&str]| {
        let o = a.queue(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&["hold", &ids[0]]);
    let show = ok(&["show", &ids[0]]);
    assert!(show.contains("next held") && show.contains("held = true") && show.contains("Subject: one"), "{show}");
    let attempts = |id: &str| -> u32 {
        let s = ok(&["show", id]);
        s.lines().find_map(|l| l.strip_prefix("attempts = ")).unwrap().trim().parse().unwrap()
    };
    let held_at = attempts(&ids[0]);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(attempts(&ids[0]), held_at, "no attempt while held");
    ok(&["release", &ids[0]]);
    ok(&["retry", &ids[0]]);
    wait_until("an attempt after release", Duration::from_secs(10), || attempts(&ids[0]) > held_at);

    // bounce: alice is told; delete: gone without a word.
    ok(&["bounce", &ids[0]]);
    ok(&["delete", &ids[1]]);
    assert_eq!(a.queue(&["show", &ids[1]]).status.code(), Some(67));
    // alice had one delay notice per message (after 1 s), then the bounce.
    let alice = a.mailbox("alice@a.test");
    wait_until("two delay notices and the bounce", Duration::from_secs(20), || files(&alice, "new").len() == 3);
    let reports = read_new(&alice);
    let b = reports.iter().find(|m| m.contains("Action: failed")).expect("the bounce");
    assert!(b.contains("x@down.test") && b.contains("Subject: one"), "{b}");
    let delays: Vec<&String> = reports.iter().filter(|m| m.contains("Action: delayed")).collect();
    assert_eq!(delays.len(), 2, "one delay notice per message, never two");
    let parsed = parse_dsn(delays[0]);
    assert_eq!((parsed["action"].as_str(), parsed["status"].starts_with("4.")), ("delayed", true), "{parsed:?}");
    assert!(delays[0].contains("Will-Retry-Until: "), "{}", delays[0]);
    wait_until("the queue empty", Duration::from_secs(10), || a.queue_len() == 0);
}

/// One SMTP transaction from `source` to `server` (port 25), as a stranger; the replies.
fn send_from(source: &str, server: SocketAddr, helo: &str, from: &str, to: &str, body: &str) -> Vec<String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.connect_timeout(&server.into(), Duration::from_secs(5)).unwrap();
    let mut c = Client::from_stream(sock.into());
    let mut replies = vec![c.reply(), c.cmd(&format!("EHLO {helo}")), c.cmd(&format!("MAIL FROM:<{from}>"))];
    let rcpt = c.cmd(&format!("RCPT TO:<{to}>"));
    let accepted = rcpt.starts_with("250");
    replies.push(rcpt);
    if accepted {
        replies.push(c.cmd("DATA"));
        replies.push(c.cmd(&format!("{body}\r\n.")));
    }
    replies.push(c.cmd("QUIT"));
    replies
}

#[test]
fn forwarding_with_srs_and_the_bounce_back() {
    if skip() {
        return;
    }
    let dns = Dnsmasq::start(&zone(
        None,
        &[
            &txt("c.test", "v=spf1 ip4:127.0.0.4 -all"),
            "mx-host=c.test,mx.c.test,10",
            "host-record=mx.c.test,127.0.0.4",
        ],
    ));
    let port = shared_port();
    let a = start_mta_with("a.test", "127.0.0.2", port, &dns, None, "", "fwd = [\"alice\", \"bob@b.test\"]", "0s");
    let b = start_mta("b.test", "127.0.0.3", port, &dns, None, "");

    // sender@c.test (from its own address, 127.0.0.4) writes to fwd@a.test: alice gets it,
    // and bob@b.test gets it forwarded from 127.0.0.2 with an SRS sender in a.test: SPF passes.
    let r = send_from(
        "127.0.0.4",
        a.program.addr,
        "mx.c.test",
        "sender@c.test",
        "fwd@a.test",
        "From: sender@c.test\r\nSubject: forward me\r\n\r\nhi",
    );
    assert!(r[5].starts_with("250"), "{r:?}");
    assert!(read_new(&a.mailbox("alice@a.test"))[0].contains("Subject: forward me"));
    let bob = b.mailbox("bob@b.test");
    wait_until("the forwarded copy", Duration::from_secs(30), || files(&bob, "new").len() == 1);
    let m = &read_new(&bob)[0];
    let srs = m.strip_prefix("Return-Path: <").and_then(|r| r.split('>').next()).unwrap().to_owned();
    assert!(srs.starts_with("SRS0=") && srs.ends_with("=c.test=sender@a.test"), "{m}");
    assert!(m.contains("spf=pass") && m.contains("smtp.mailfrom=\"SRS0=") && m.contains("designates 127.0.0.2"), "{m}");

    // A bounce to the SRS address goes back to sender@c.test; a forged one is refused.
    let c_mx = receiver("127.0.0.4", port, Mode::Accept);
    let r = send_from(
        "127.0.0.3",
        a.program.addr,
        "mx.b.test",
        "",
        &srs,
        "From: MAILER-DAEMON@b.test\r\nSubject: bounce\r\n\r\ngone",
    );
    assert!(r[3].starts_with("250") && r[5].starts_with("250"), "{r:?}");
    wait_until("the bounce back at c.test", Duration::from_secs(30), || c_mx.got.lock().unwrap().len() == 1);
    assert_eq!(c_mx.got.lock().unwrap()[0].0, ["sender@c.test"]);
    let forged = srs.replacen("SRS0=", "SRS0=x", 1);
    let r = send_from("127.0.0.3", a.program.addr, "mx.b.test", "", &forged, "x");
    assert!(r[3].starts_with("550 5.1.1"), "{r:?}");
}

/// Message-IDs of what a receiver got, in order.
fn message_ids(got: &Got) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, body)| {
            let text = String::from_utf8_lossy(body);
            let line = text.lines().find(|l| l.starts_with("Message-ID: <"))?;
            Some(line.trim_start_matches("Message-ID: <").trim_end_matches('>').to_owned())
        })
        .collect()
}

#[test]
fn sigkill_at_any_moment_loses_nothing_acknowledged() {
    if skip() {
        return;
    }
    let dns = Dnsmasq::start(&zone(None, &[]));
    let port = shared_port();
    let b = receiver("127.0.0.3", port, Mode::Accept);
    let a = start_mta("a.test", "127.0.0.2", port, &dns, None, "");
    let config = a.config.to_str().unwrap().to_owned();
    let dir = a.dir.path().to_owned();
    let submission = format!("127.0.0.2:{}", a.submission);
    let Mta { dir: tempdir, program, .. } = a;
    let mut program = Some(program);

    // One thread submits numbered messages without pause; the acknowledged ones are noted.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let submitter = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut options = smtp_std::client::SendOptions::new(&submission, "client.test");
            options.tls_config = Some(smtp_std::client::insecure_tls_config());
            options.tls_server_name = Some("localhost".into());
            options.auth = Some(smtp_std::client::Auth { user: "alice@a.test".into(), password: "wonderland".into() });
            options = options.timeout(Duration::from_secs(5));
            let mut n = 0;
            let mut tried = 0;
            while !stop.load(Ordering::SeqCst) && tried < 2000 {
                tried += 1;
                let id = format!("m{n}@a.test");
                let body = format!(
                    "From: alice@a.test\r\nMessage-ID: <{id}>\r\nSubject: {n}\r\n\r\n{}",
                    format!("{}\r\n", "x".repeat(76)).repeat(26)
                );
                let envelope = smtp_std::client::Envelope::new("alice@a.test", ["bob@b.test"]);
                match smtp_std::client::send(&options, &envelope, body.as_bytes()) {
                    Ok(d) if d.all_accepted() => {
                        acked.lock().unwrap().push(id);
                        n += 1;
                    }
                    _ => {
                        n += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        })
    };

    // SIGKILL at changing moments: during receipt, after the 250, mid-delivery. Then once
    // on purpose between a remote 250 and the state update.
    let mut kills = 0;
    for round in 0..12u64 {
        std::thread::sleep(Duration::from_millis(150 + (round * 97) % 400));
        let mut p = program.take().unwrap();
        let _ = p.child.0.kill();
        let _ = p.child.0.wait();
        kills += 1;
        let env: &[(&str, &str)] = if round == 6 { &[("SMTP_STD_TEST_CRASH_AFTER_DELIVERY", "1")] } else { &[] };
        program = Some(Program::start_env(&dir, &["--config", &config], env));
        if round == 6 {
            // It aborts itself at its first delivery; start it again without the hook.
            let mut p = program.take().unwrap();
            let end = std::time::Instant::now() + Duration::from_secs(20);
            while p.child.0.try_wait().ok().flatten().is_none() {
                assert!(
                    std::time::Instant::now() < end,
                    "no deliberate abort; acked {}; log: {:?}",
                    acked.lock().unwrap().len(),
                    p.log.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            kills += 1;
            program = Some(Program::start(&dir, &["--config", &config]));
        }
    }
    stop.store(true, Ordering::SeqCst);
    submitter.join().unwrap();
    let program = program.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 20, "too few messages went through: {}", acked.len());
    wait_until("every acknowledged message delivered", Duration::from_secs(60), || {
        let got = message_ids(&b.got);
        acked.iter().all(|id| got.contains(id))
    });
    wait_until("the queue empty", Duration::from_secs(30), || queue_entries(&dir.join("data/queue/entries")) == 0);
    let got = message_ids(&b.got);
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    let duplicates = got.len() - unique.len();
    eprintln!(
        "crash test: {} acknowledged, {} delivered ({} unique), {duplicates} second copies after {kills} kills",
        acked.len(),
        got.len(),
        unique.len()
    );
    assert!(duplicates >= 1, "the deliberate crash after a remote 250 re-sends that message");
    assert!(duplicates <= kills * 4, "more second copies than the window allows: {duplicates}");
    drop(program);
    drop(tempdir);
}

/// Three messages to `to`, one after the other, through `serve` with `outbound`: the receiver
/// on 127.0.0.3 gets them all over one connection.
fn one_session_for_three_messages(to: &str, outbound: impl Fn(u16) -> String) {
    if skip() {
        return;
    }
    let dns = Dnsmasq::start(&zone(None, &[]));
    let port = shared_port();
    let receiver = receiver("127.0.0.3", port, Mode::Accept);
    let a = start_mta("a.test", "127.0.0.2", port, &dns, None, &outbound(port));
    for n in 0..3 {
        let message = format!("From: alice@a.test\r\nMessage-ID: <{n}@a.test>\r\n\r\nhi\r\n");
        let out = submit(&a, "127.0.0.2", "alice@a.test", &[(to, "")], &message);
        assert!(out.starts_with("[250, 250, 250"), "{out}");
        wait_until("the receiver got it", Duration::from_secs(20), || receiver.got.lock().unwrap().len() == n + 1);
    }
    assert_eq!(message_ids(&receiver.got), ["0@a.test", "1@a.test", "2@a.test"]);
    assert_eq!(receiver.conns.load(Ordering::SeqCst), 1, "one session for the three messages");
}

#[test]
fn a_relay_session_is_reused_for_the_next_messages() {
    one_session_for_three_messages("x@far.test", |port| {
        format!("smarthost = \"127.0.0.3:{port}\"\nsmarthost_tls = \"none\"")
    });
}

#[test]
fn an_mx_session_is_reused_for_the_next_messages() {
    one_session_for_three_messages("bob@b.test", |_| String::new());
}
