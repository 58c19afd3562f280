//! Spam defence of `smtp-std serve --config` against real peers: DNS blocklists and allow lists
//! served by dnsmasq (a listed client refused at RCPT but postmaster reached, a zone that lists
//! 127.0.0.1 or not 127.0.0.2 ignored, a failing zone never refusing, an allow list offsetting,
//! a score below the threshold filing into `.Junk`, the cache), greylisting with a 2 s delay
//! across a restart, verdict fields from outside renamed, and the verdict fields handed to LMTP.
#![cfg(feature = "mta")]

mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use dnsmasq::Dnsmasq;

const PASSWORDS: &str = "alice@example.org:wonderland\nbob@example.org:builder\n";

/// The accounts file and `smtp-std.toml` in `dir`; `extra` at the top level (before any
/// table), `tables` after `[listen]`.
fn setup(dir: &Path, extra: &str, tables: &str) -> PathBuf {
    std::fs::write(dir.join("passwd"), passwd_text(PASSWORDS)).unwrap();
    let config = format!(
        r#"hostname = "mail.example.org"
data_dir = "data"
accounts = "passwd"
{extra}
[listen]
smtp = ["127.0.0.1:0"]
{tables}

[[domain]]
name = "example.org"
[domain.aliases]
postmaster = "alice"
"#
    );
    let path = dir.join("smtp-std.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn start(dir: &Path, config: &Path) -> Program {
    Program::start(dir, &["--config", config.to_str().unwrap()])
}

fn mailbox(dir: &Path, account: &str) -> PathBuf {
    let (local, domain) = account.split_once('@').unwrap();
    dir.join("data/mailboxes").join(domain).join(local)
}

/// A session from the loopback address `source`, greeted and EHLO'd.
fn connect_from(source: &str, server: SocketAddr) -> Client {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.connect_timeout(&server.into(), Duration::from_secs(5)).unwrap();
    let mut c = Client::from_stream(sock.into());
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    c
}

/// MAIL, one RCPT, and when it is accepted DATA with `body`: the RCPT reply and the reply to
/// the end of data.
fn send(c: &mut Client, from: &str, rcpt: &str, body: &str) -> (String, Option<String>) {
    let mail = c.cmd(&format!("MAIL FROM:<{from}>"));
    assert!(mail.starts_with("250"), "{mail}");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    if !r.starts_with("250") {
        assert!(c.cmd("RSET").starts_with("250"));
        return (r, None);
    }
    assert!(c.cmd("DATA").starts_with("354"));
    (r, Some(c.cmd(&format!("{body}\r\n."))))
}

fn read_dir(dir: &Path) -> Vec<String> {
    files(dir, "").iter().filter(|p| p.is_file()).map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

/// The zones of the DNSBL tests. `bl.test`: a blocklist listing 127.0.0.9, .11, .12 (and its
/// test point); `wl.test`: an allow list listing 127.0.0.11; `broken.test` lists 127.0.0.1
/// (and so anyone); `nolist.test` does not list its test point; `fail.test` fails (REFUSED).
fn zones() -> Vec<String> {
    let a = |name: &str, ip: &str| format!("address=/{name}/{ip}");
    vec![
        // Answers with a TTL, so that they can be cached (dnsmasq's default is 0).
        "local-ttl=300".to_owned(),
        a("2.0.0.127.bl.test", "127.0.0.2"),
        a("9.0.0.127.bl.test", "127.0.0.4"),
        a("11.0.0.127.bl.test", "127.0.0.2"),
        a("12.0.0.127.bl.test", "127.0.0.2"),
        // Spamhaus's "query refused" code: not a listing.
        a("13.0.0.127.bl.test", "127.255.255.254"),
        a("2.0.0.127.wl.test", "127.0.10.0"),
        a("11.0.0.127.wl.test", "127.0.10.0"),
        a("1.0.0.127.broken.test", "127.0.0.2"),
        a("2.0.0.127.broken.test", "127.0.0.2"),
        a("10.0.0.127.broken.test", "127.0.0.2"),
        a("10.0.0.127.nolist.test", "127.0.0.2"),
        "server=/fail.test/#".to_owned(),
    ]
}

fn dnsbl_tables(dns: &Dnsmasq, spam: &str) -> String {
    format!(
        "[dns]\nserver = \"{}\"\ntimeout = \"1s\"\n{spam}\n\
         [[dnsbl]]\nzone = \"bl.test\"\n\
         [[dnsbl]]\nzone = \"wl.test\"\nscore = -2\n\
         [[dnsbl]]\nzone = \"broken.test\"\nscore = 5\n\
         [[dnsbl]]\nzone = \"nolist.test\"\nscore = 5\n\
         [[dnsbl]]\nzone = \"fail.test\"\nscore = 5\n",
        dns.arg()
    )
}

#[test]
fn dnsbl_refuses_at_rcpt_but_postmaster_still_reached() {
    if !Dnsmasq::available() {
        return;
    }
    let dns = Dnsmasq::start(&zones());
    let dir = tempfile::tempdir().unwrap();
    let config =
        setup(dir.path(), "mail_auth = false\ntrusted_networks = [\"127.0.0.12/32\"]", &dnsbl_tables(&dns, ""));
    let p = start(dir.path(), &config);
    assert!(p.log_contains("DNSBL zone ignored"), "{:?}", p.log.lock().unwrap());
    let log = p.log.lock().unwrap().join("\n");
    assert!(log.contains("broken.test") && log.contains("lists 127.0.0.1"), "{log}");
    assert!(log.contains("nolist.test") && log.contains("does not list 127.0.0.2"), "{log}");
    drop(log);

    // Listed (bl.test, 127.0.0.4): refused at RCPT, the connection goes on.
    let mut c = connect_from("127.0.0.9", p.addr);
    let (r, _) = send(&mut c, "a@client.test", "alice@example.org", "Subject: listed");
    assert!(r.starts_with("554 5.7.1 Service unavailable; client [127.0.0.9] blocked using bl.test"), "{r}");
    // ... but postmaster of our domains, and the bare <postmaster>, are reached.
    let (r, end) = send(&mut c, "a@client.test", "postmaster@example.org", "Subject: why am I listed?");
    assert!(r.starts_with("250"), "{r}");
    assert!(end.unwrap().starts_with("250"));
    let (r, end) = send(&mut c, "a@client.test", "postmaster", "Subject: bare postmaster");
    assert!(r.starts_with("250"), "{r}");
    assert!(end.unwrap().starts_with("250"));
    let alice = mailbox(dir.path(), "alice@example.org");
    assert_eq!(files(&alice, "new").len(), 2);
    assert!(read_dir(&alice.join("new")).iter().all(|m| m.contains("Delivered-To: postmaster")));
    drop(c);

    // Listed only by the ignored zone (and the failing one): accepted.
    let mut c = connect_from("127.0.0.10", p.addr);
    let (r, end) = send(&mut c, "a@client.test", "bob@example.org", "Subject: unlisted");
    assert!(r.starts_with("250"), "{r}");
    assert!(end.unwrap().starts_with("250"));
    // Listed by bl.test (+1) and the allow list wl.test (-2): accepted.
    let mut c = connect_from("127.0.0.11", p.addr);
    let (r, _) = send(&mut c, "a@client.test", "bob@example.org", "Subject: allowed");
    assert!(r.starts_with("250"), "{r}");
    // Listed, but from a trusted network: accepted.
    let mut c = connect_from("127.0.0.12", p.addr);
    let (r, _) = send(&mut c, "a@client.test", "bob@example.org", "Subject: trusted");
    assert!(r.starts_with("250"), "{r}");
    // A "query refused" answer is no listing.
    let mut c = connect_from("127.0.0.13", p.addr);
    let (r, _) = send(&mut c, "a@client.test", "bob@example.org", "Subject: refused query");
    assert!(r.starts_with("250"), "{r}");
    assert!(p.log_contains("no listing (query refused?)"));
    assert!(p.log_contains("DNSBL lookup failed (not counted)") && p.log_contains("fail.test"));
}

#[test]
fn dnsbl_below_the_threshold_files_into_junk_and_outside_verdicts_are_renamed() {
    if !Dnsmasq::available() {
        return;
    }
    let dns = Dnsmasq::start(&zones());
    let dir = tempfile::tempdir().unwrap();
    // bl.test scores 1: refused at 3, spam at 1. SPF, DKIM and DMARC on.
    let tables = dnsbl_tables(&dns, "[spam]\ndnsbl_threshold = 3\ndnsbl_junk_threshold = 1");
    let config = setup(dir.path(), "trusted_networks = []", &tables);
    let p = start(dir.path(), &config);
    let body = "Authentication-Results: mx.example.org; dmarc=pass\r\n\
                X-Spam-Flag: NO\r\n\
                X-Spam-Status: No, score=-50\r\n\
                From: <a@client.test>\r\n\
                Subject: pre-marked\r\n\
                \r\n\
                Authentication-Results: in the body stays\r\n";
    let mut c = connect_from("127.0.0.9", p.addr);
    let (r, end) = send(&mut c, "a@client.test", "alice@example.org", body);
    assert!(r.starts_with("250"), "{r}");
    assert!(end.unwrap().starts_with("250"));
    let alice = mailbox(dir.path(), "alice@example.org");
    assert!(files(&alice, "new").is_empty(), "nothing in the inbox");
    let junk = read_dir(&alice.join(".Junk/new"));
    assert_eq!(junk.len(), 1);
    let msg = &junk[0];
    let msg = std::str::from_utf8(strip_trace(msg.as_bytes())).unwrap();
    // Ours on top: Authentication-Results, the verdict, then Received.
    assert!(msg.starts_with("Authentication-Results: mail.example.org;"), "{msg}");
    assert!(
        msg.contains("\r\nX-Spam-Flag: YES\r\nX-Spam-Status: Yes, dnsbl=bl.test(+1) score=1\r\nReceived: "),
        "{msg}"
    );
    // Theirs renamed, where they were.
    assert!(
        msg.contains(
            "X-Original-Authentication-Results: mx.example.org; dmarc=pass\r\n\
             X-Original-X-Spam-Flag: NO\r\n\
             X-Original-X-Spam-Status: No, score=-50\r\n\
             From: <a@client.test>\r\n"
        ),
        "{msg}"
    );
    assert!(msg.ends_with("\r\n\r\nAuthentication-Results: in the body stays\r\n\r\n"), "{msg}");
    let header = msg.split("\r\n\r\n").next().unwrap();
    assert_eq!(header.lines().filter(|l| l.starts_with("Authentication-Results:")).count(), 1, "{header}");
    assert_eq!(msg.matches("X-Spam-Flag:").count(), 2, "ours, and theirs renamed");

    // An unlisted client: the inbox, no verdict fields, theirs renamed all the same.
    let mut c = connect_from("127.0.0.10", p.addr);
    let (_, end) = send(&mut c, "a@client.test", "bob@example.org", body);
    assert!(end.unwrap().starts_with("250"));
    let bob = read_dir(&mailbox(dir.path(), "bob@example.org").join("new"));
    assert_eq!(bob.len(), 1);
    assert!(
        !bob[0].contains("X-Spam-Flag: YES") && bob[0].contains("\r\nX-Original-X-Spam-Flag: NO\r\n"),
        "{}",
        bob[0]
    );
}

/// A minimal LMTP server (RFC 2033) on a loopback port: accepts everything, keeps the messages.
fn lmtp_sink() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            let _ = w.write_all(b"220 lmtp.test LMTP\r\n");
            let mut rcpts = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                match verb.as_str() {
                    "LHLO" => {
                        let _ = w.write_all(b"250-lmtp.test\r\n250 PIPELINING\r\n");
                    }
                    "RCPT" => {
                        rcpts += 1;
                        let _ = w.write_all(b"250 2.1.5 ok\r\n");
                    }
                    "DATA" => {
                        let _ = w.write_all(b"354 go\r\n");
                        let mut msg = String::new();
                        loop {
                            let mut l = String::new();
                            if r.read_line(&mut l).unwrap_or(0) == 0 || l == ".\r\n" {
                                break;
                            }
                            msg.push_str(&l);
                        }
                        for _ in 0..rcpts {
                            let _ = w.write_all(b"250 2.0.0 stored\r\n");
                        }
                        rcpts = 0;
                        let _ = tx.send(msg);
                    }
                    "QUIT" => {
                        let _ = w.write_all(b"221 bye\r\n");
                        break;
                    }
                    _ => {
                        let _ = w.write_all(b"250 ok\r\n");
                    }
                }
            }
        }
    });
    (port, rx)
}

#[test]
fn lmtp_gets_the_verdict_fields_for_sieve() {
    if !Dnsmasq::available() {
        return;
    }
    let dns = Dnsmasq::start(&zones());
    let (port, messages) = lmtp_sink();
    let dir = tempfile::tempdir().unwrap();
    let tables =
        format!("[delivery]\nlmtp = \"127.0.0.1:{port}\"\n{}", dnsbl_tables(&dns, "[spam]\ndnsbl_threshold = 2"));
    let config = setup(dir.path(), "mail_auth = false\ntrusted_networks = []", &tables);
    let p = start(dir.path(), &config);
    let mut c = connect_from("127.0.0.9", p.addr);
    let (_, end) = send(&mut c, "a@client.test", "alice@example.org", "X-Spam-Flag: NO\r\nSubject: lmtp");
    assert!(end.unwrap().starts_with("250"));
    let msg = messages.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        msg.starts_with("X-Spam-Flag: YES\r\nX-Spam-Status: Yes, dnsbl=bl.test(+1) score=1\r\nReceived: "),
        "{msg}"
    );
    assert!(msg.contains("\r\nX-Original-X-Spam-Flag: NO\r\nSubject: lmtp\r\n"), "{msg}");
}

#[test]
fn a_cached_dnsbl_answer_is_faster() {
    if !Dnsmasq::available() {
        return;
    }
    let dns = Dnsmasq::start(&zones());
    let resolver = smtp_std::mta::auth::Dns::with_timeout(Some(dns.addr), Duration::from_secs(1), 2).unwrap();
    use smtp_std::mta::spam::dnsbl::{Dnsbl, DnsblSettings};
    let settings = DnsblSettings {
        cache_size: 100,
        max_ttl: Duration::from_secs(3600),
        health_interval: Duration::from_secs(3600),
    };
    let d = Dnsbl::new(resolver, &[("bl.test".to_owned(), 1)], &settings);
    let ip = "127.0.0.9".parse().unwrap();
    let t = Instant::now();
    let first = d.check(ip);
    let miss = t.elapsed();
    assert_eq!(first.total, 1);
    assert_eq!(first.listings[0].codes, ["127.0.0.4".parse::<std::net::Ipv4Addr>().unwrap()]);
    let t = Instant::now();
    for _ in 0..100 {
        assert_eq!(d.check(ip), first);
    }
    let hit = t.elapsed() / 100;
    eprintln!("DNSBL check of one zone: {miss:?} asked, {hit:?} cached");
    assert!(hit < miss, "{hit:?} vs {miss:?}");
}

#[test]
fn greylisting_defers_then_passes_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        setup(dir.path(), "mail_auth = false\ntrusted_networks = [\"127.0.0.1/32\"]", "[spam]\ngreylist = \"2s\"\n");
    let p = start(dir.path(), &config);
    let mut c = connect_from("127.0.0.5", p.addr);
    let t0 = Instant::now();
    let (r, _) = send(&mut c, "a@client.test", "alice@example.org", "Subject: grey");
    assert!(r.starts_with("451 4.7.1 Greylisted: please try again later"), "{r}");
    // An unknown recipient is refused, not greylisted.
    let (r, _) = send(&mut c, "a@client.test", "nobody@example.org", "Subject: grey");
    assert!(r.starts_with("550 5.1.1"), "{r}");
    // Too soon: still deferred.
    let (r, _) = send(&mut c, "a@client.test", "alice@example.org", "Subject: grey");
    assert!(r.starts_with("451 4.7.1"), "{r}");
    // From a trusted network: never greylisted.
    let mut t = connect_from("127.0.0.1", p.addr);
    let (r, _) = send(&mut t, "a@client.test", "bob@example.org", "Subject: trusted");
    assert!(r.starts_with("250"), "{r}");
    // After the delay (another address of the same /24): passes, and then at once.
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(t0.elapsed()));
    let mut c = connect_from("127.0.0.6", p.addr);
    let (r, end) = send(&mut c, "A@client.test", "alice@example.org", "Subject: after the delay");
    assert!(r.starts_with("250"), "{r}");
    assert!(end.unwrap().starts_with("250"));
    let (r, end) = send(&mut c, "a@client.test", "alice@example.org", "Subject: second");
    assert!(r.starts_with("250"), "{r}");
    assert!(end.unwrap().starts_with("250"));
    // Another recipient is another triplet.
    let (r, _) = send(&mut c, "a@client.test", "bob@example.org", "Subject: grey");
    assert!(r.starts_with("451 4.7.1"), "{r}");
    assert_eq!(files(&mailbox(dir.path(), "alice@example.org"), "new").len(), 2);
    drop(c);
    drop(p);

    // A restart keeps it.
    let p = start(dir.path(), &config);
    let mut c = connect_from("127.0.0.5", p.addr);
    let (r, end) = send(&mut c, "a@client.test", "alice@example.org", "Subject: after the restart");
    assert!(r.starts_with("250"), "{r}");
    assert!(end.unwrap().starts_with("250"));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let g = dir.path().join("data/greylist");
    assert_eq!((mode(&g), mode(&g.join("greylist.log"))), (0o700, 0o600));
}

#[test]
fn bad_spam_settings_are_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (tables, key, line) in [
        ("[spam]\ndnsbl_threshold = 0\n", "spam.dnsbl_threshold", 8),
        ("[spam]\ngreylist = \"5 fortnights\"\n", "spam.greylist", 8),
        ("[spam]\ngreylist_ipv4_prefix = 33\n", "spam.greylist_ipv4_prefix", 8),
        ("[[dnsbl]]\nzone = \"bl test\"\n", "dnsbl[0].zone", 8),
        ("[[dnsbl]]\nzone = \"bl.test\"\nscore = 0\n", "dnsbl[0].score", 9),
        ("[[dnsbl]]\nzone = \"bl.test\"\n[[dnsbl]]\nzone = \"BL.test.\"\n", "dnsbl[1].zone", 10),
        ("[[dnsbl]]\nzone = \"bl.test\"\ncolour = 1\n", "dnsbl[0]", 9),
    ] {
        let config = setup(dir.path(), "mail_auth = false", tables);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_smtp-std"))
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{}:{line}: {key}", config.display())), "{tables}: {err}");
    }
}

/// The time of one RCPT from `source` on a new connection (the first RCPT of a connection is
/// the one that asks the DNSBLs).
fn rcpt_time(source: &str, server: SocketAddr) -> Duration {
    let mut c = connect_from(source, server);
    assert!(c.cmd("MAIL FROM:<a@client.test>").starts_with("250"));
    let t = Instant::now();
    let r = c.cmd("RCPT TO:<bob@example.org>");
    let took = t.elapsed();
    assert!(r.starts_with("250"), "{r}");
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// What a DNSBL costs per connection: the RCPT that asks (one zone, dnsmasq on loopback),
/// the RCPT whose answer is cached, and no DNSBL at all. Printed for the README.
#[test]
fn rcpt_time_with_and_without_a_cached_dnsbl_answer() {
    if !Dnsmasq::available() {
        return;
    }
    let mut lines = vec!["local-ttl=300".to_owned(), "address=/2.0.0.127.m.test/127.0.0.2".to_owned()];
    lines.extend((20..40).map(|i| format!("address=/{i}.0.0.127.m.test/127.0.0.4")));
    let dns = Dnsmasq::start(&lines);
    let dir = tempfile::tempdir().unwrap();
    let tables =
        format!("[dns]\nserver = \"{}\"\n[spam]\ndnsbl_threshold = 100\n[[dnsbl]]\nzone = \"m.test\"\n", dns.arg());
    let config = setup(dir.path(), "mail_auth = false\ntrusted_networks = []", &tables);
    let p = start(dir.path(), &config);
    let sources: Vec<String> = (20..40).map(|i| format!("127.0.0.{i}")).collect();
    let asked = median(sources.iter().map(|s| rcpt_time(s, p.addr)).collect());
    let cached = median(sources.iter().map(|s| rcpt_time(s, p.addr)).collect());
    let listed = || p.log.lock().unwrap().iter().filter(|l| l.contains("m.test(+1)")).count();
    wait_until("40 DNSBL log lines", Duration::from_secs(10), || listed() == 40);
    drop(p);
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "mail_auth = false\ntrusted_networks = []", "");
    let p = start(dir.path(), &config);
    let none = median(sources.iter().map(|s| rcpt_time(s, p.addr)).collect());
    eprintln!("RCPT (median of 20): DNSBL asked {asked:?}, DNSBL answer cached {cached:?}, no DNSBL {none:?}");
}
