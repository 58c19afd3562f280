//! `[[milter]]` end to end: `smtp-std serve --config` with a milter in front of the mailboxes.
//! A scripted milter in this process (header edits, replaced body, quarantine, discard,
//! refusals, a broken or silent milter → the default action), then a real rspamd (its proxy
//! worker in milter mode with self-scan, started by the test with its own config): GTUBE
//! refused with rspamd's reply, a message it marks filed in `.Junk` with its headers, rspamd
//! stopped → 451 4.7.1; and the round trip cost per message.
#![cfg(feature = "mta")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PASSWORDS: &str = "alice@example.org:wonderland\n";

fn setup(dir: &Path, milters: &str) -> PathBuf {
    std::fs::write(dir.join("passwd"), passwd_text(PASSWORDS)).unwrap();
    let config = format!(
        r#"hostname = "mail.example.org"
data_dir = "data"
accounts = "passwd"
mail_auth = false
[listen]
smtp = ["127.0.0.1:0"]

[[domain]]
name = "example.org"
[domain.aliases]
postmaster = "alice"

{milters}"#
    );
    let path = dir.join("smtp-std.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn inbox(dir: &Path) -> PathBuf {
    dir.join("data/mailboxes/example.org/alice")
}

fn read_all(maildir: &Path, sub: &str) -> Vec<String> {
    files(maildir, sub).iter().map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()).collect()
}

/// One message from a@example.net to alice; the reply to the end of data.
fn send(c: &mut Client, subject: &str, extra_headers: &str, body: &str) -> String {
    assert!(c.cmd("MAIL FROM:<a@example.net>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let msg = format!(
        "From: a@example.net\r\nTo: alice@example.org\r\nSubject: {subject}\r\n\
         Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{subject}@example.net>\r\n{extra_headers}\r\n{body}\r\n."
    );
    c.cmd(&msg)
}

fn session(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.example.net").starts_with("250"));
    c
}

// ---------------------------------------------------------------------------------------
// A scripted milter.

/// What the scripted milter answers at the end of each message (its answers to the other
/// stages are "continue").
#[derive(Clone)]
struct Script {
    actions: u32,
    /// Packets sent in answer to the end of the message.
    eom: Vec<Vec<u8>>,
    /// Answer nothing at all to the end of the message (a hung milter).
    silent: bool,
}

fn packet(command: u8, data: &[u8]) -> Vec<u8> {
    let mut v = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(command);
    v.extend_from_slice(data);
    v
}

/// Serves milter connections with `script` on a loopback port; records every packet seen.
/// Every packet the scripted milter received: command byte and data.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(u8, Vec<u8>)>>>;

fn fake_milter(script: Script) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let script = script.clone();
            let seen = seen2.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
                loop {
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut p = vec![0u8; u32::from_be_bytes(len) as usize];
                    if s.read_exact(&mut p).is_err() || p.is_empty() {
                        return;
                    }
                    let (cmd, data) = (p[0], p[1..].to_vec());
                    seen.lock().unwrap().push((cmd, data));
                    let reply: Vec<u8> = match cmd {
                        b'O' => {
                            let mut d = 6u32.to_be_bytes().to_vec();
                            d.extend_from_slice(&script.actions.to_be_bytes());
                            d.extend_from_slice(&0u32.to_be_bytes());
                            packet(b'O', &d)
                        }
                        b'D' | b'A' => continue,
                        b'Q' => return,
                        b'E' if script.silent => {
                            std::thread::sleep(Duration::from_secs(5));
                            return;
                        }
                        b'E' => script.eom.concat(),
                        _ => packet(b'c', b""),
                    };
                    if s.write_all(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn start_with(dir: &Path, milter: &str) -> Program {
    let config = setup(dir, milter);
    Program::start(dir, &["--config", config.to_str().unwrap()])
}

#[test]
fn scripted_milter_edits_quarantine_discard_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let edits = Script {
        actions: 0x1ff,
        eom: vec![
            packet(b'p', b""),
            packet(b'i', b"\0\0\0\0X-Milter-Top\0first\0"),
            packet(b'm', b"\0\0\0\x01Subject\0rewritten\0"),
            packet(b'm', b"\0\0\0\x01Message-ID\0\0"),
            packet(b'h', b"X-Milter\0checked\n\tfolded\0"),
            packet(b'b', b"A new body.\r\n"),
            packet(b'b', b"Second chunk.\r\n"),
            packet(b'+', b"<someone@example.com>\0"),
            packet(b'c', b""),
        ],
        silent: false,
    };
    let (maddr, seen) = fake_milter(edits);
    let p = start_with(dir.path(), &format!("[[milter]]\naddress = \"{maddr}\"\ntimeout = \"5s\"\n"));
    let mut c = session(p.addr);
    assert!(send(&mut c, "edits", "", "Old body.").starts_with("250"));
    let msgs = read_all(&inbox(dir.path()), "new");
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    // Trace fields, then the milter's insertion on top of the content (our Received: second).
    let content = std::str::from_utf8(strip_trace(m.as_bytes())).unwrap();
    assert!(content.starts_with("X-Milter-Top: first\r\nReceived: "), "{m}");
    assert!(m.contains("Subject: rewritten\r\n") && !m.contains("Subject: edits"), "{m}");
    assert!(!m.contains("Message-ID:"), "{m}");
    assert!(m.contains("X-Milter: checked\r\n\tfolded\r\n\r\nA new body.\r\nSecond chunk.\r\n"), "{m}");
    assert!(!m.contains("Old body"), "{m}");
    assert!(!m.contains("someone@example.com"));
    assert!(p.log_contains("milter envelope change not applied"));
    // What the milter was told.
    let seen = seen.lock().unwrap().clone();
    let cmds: String = seen.iter().map(|(c, _)| *c as char).collect();
    assert!(cmds.starts_with("ODCHDMDRDTLLLLLLDNBDEQ"), "{cmds}");
    let data = |c: u8| seen.iter().find(|(x, _)| *x == c).unwrap().1.clone();
    assert!(data(b'C').starts_with(b"[127.0.0.1]\x004"), "{:?}", data(b'C'));
    assert_eq!(data(b'H'), b"client.example.net\0");
    assert_eq!(data(b'M'), b"<a@example.net>\0");
    assert_eq!(data(b'R'), b"<alice@example.org>\0");
    assert!(seen.iter().any(|(c, d)| *c == b'L' && d == b"Subject\0edits\0"));
    assert!(seen.iter().any(|(c, d)| *c == b'B' && d == b"Old body.\r\n"));
    assert!(seen.iter().any(|(c, d)| *c == b'D' && d.starts_with(b"Cj\0mail.example.org\0")));
    // No spool file left behind.
    assert!(files(&dir.path().join("data/mailboxes/example.org/alice"), "tmp").is_empty());

    // Quarantine → .Junk; discard → 250 and nothing; reply code; reject; tempfail.
    for (eom, subject, expect, junk) in [
        (vec![packet(b'q', b"looks bad\0"), packet(b'c', b"")], "quarantined", "250", true),
        (vec![packet(b'h', b"X-Spam\0Yes\0"), packet(b'a', b"")], "marked", "250", true),
        (vec![packet(b'd', b"")], "discarded", "250", false),
        (vec![packet(b'y', b"554 5.7.1 Go away\0")], "replycode", "554 5.7.1 Go away", false),
        (vec![packet(b'r', b"")], "rejected", "550 5.7.1 Command rejected", false),
        (vec![packet(b't', b"")], "tempfailed", "451 4.7.1 Service unavailable", false),
        (vec![packet(b'h', b"Bad Name\0v\0")], "broken", "451 4.7.1", false),
    ] {
        let d = tempfile::tempdir().unwrap();
        let (maddr, _) = fake_milter(Script { actions: 0x1ff, eom, silent: false });
        let p = start_with(d.path(), &format!("[[milter]]\naddress = \"{maddr}\"\n"));
        let mut c = session(p.addr);
        let reply = send(&mut c, subject, "", "Body.");
        assert!(reply.starts_with(expect), "{subject}: {reply}");
        let md = inbox(d.path());
        let (new, junk_files) = (read_all(&md, "new"), read_all(&md, ".Junk/new"));
        match (expect, junk) {
            ("250", true) => assert!(new.is_empty() && junk_files.len() == 1, "{subject}"),
            _ => assert!(new.is_empty() && junk_files.is_empty(), "{subject}: nothing kept"),
        }
    }
}

#[test]
fn failing_milters_get_the_default_action() {
    // Nothing listens: tempfail (the default), reject, accept.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for (action, expect, stored) in [
        ("", "451 4.7.1", false),
        ("default_action = \"reject\"\n", "550 5.7.1", false),
        ("default_action = \"accept\"\n", "250", true),
    ] {
        let d = tempfile::tempdir().unwrap();
        let p = start_with(d.path(), &format!("[[milter]]\naddress = \"{closed}\"\n{action}"));
        let mut c = session(p.addr);
        let reply = send(&mut c, "nobody-listens", "", "Body.");
        assert!(reply.starts_with(expect), "{action}: {reply}");
        assert_eq!(read_all(&inbox(d.path()), "new").len(), usize::from(stored));
    }
    // A milter that does not answer the end of the message within the timeout.
    let d = tempfile::tempdir().unwrap();
    let (maddr, _) = fake_milter(Script { actions: 0, eom: vec![], silent: true });
    let p = start_with(d.path(), &format!("[[milter]]\naddress = \"{maddr}\"\ntimeout = \"1s\"\n"));
    let mut c = session(p.addr);
    let t = Instant::now();
    let reply = send(&mut c, "hung", "", "Body.");
    assert!(reply.starts_with("451 4.7.1"), "{reply}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // The log comes through the program's stderr, read by a thread of its own: it may
    // arrive a moment after the reply.
    wait_until("the timeout logged", Duration::from_secs(5), || p.log_contains("timed out"));
}

// ---------------------------------------------------------------------------------------
// A real rspamd.

/// rspamd with its own config in a temp dir: only the proxy worker, in milter mode with
/// self-scan, on a free loopback port; DNS pointed at a closed port, a tiny TLD list and no
/// hyperscan so that it starts in seconds; `add_header` from a score of 5 and a rule that
/// scores 8 for messages with an `X-Test-Mark:` field.
struct Rspamd {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Rspamd {
    /// SIGTERM to the main process (it stops its workers, which SIGKILL would orphan, still
    /// listening), then SIGKILL if it is still there after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rspamd_available() -> bool {
    have("rspamd")
}

impl Rspamd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("local.d")).unwrap();
        std::fs::create_dir_all(d.join("db")).unwrap();
        std::fs::write(d.join("tld.dat"), "com\norg\nnet\ntest\n").unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = format!(
            r#".include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    filters = "";
    url_tld = "{tld}";
    disable_hyperscan = true;
    hs_cache_dir = "$DBDIR";
    dns {{ nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 1; }}
    cache_file = "$DBDIR/symbols.cache";
    control_socket = "$DBDIR/rspamd.sock mode=0600";
    allow_raw_input = true;
}}
logging {{ type = "console"; level = "warning"; }}
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{port}";
    milter = yes;
    timeout = 120s;
    upstream "local" {{ default = yes; self_scan = yes; }}
    count = 1;
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
}}
"#,
            tld = d.join("tld.dat").display()
        );
        std::fs::write(d.join("rspamd.conf"), conf).unwrap();
        std::fs::write(d.join("local.d/actions.conf"), "reject = 15;\nadd_header = 5;\ngreylist = null;\n").unwrap();
        std::fs::write(
            d.join("local.d/milter_headers.conf"),
            "use = [\"x-spamd-result\", \"x-spam-status\"];\nskip_local = false;\nskip_authenticated = false;\n",
        )
        .unwrap();
        std::fs::write(
            d.join("rspamd.local.lua"),
            "rspamd_config.SMTP_STD_TEST_MARK = {\n  callback = function(task) return task:get_header('X-Test-Mark') ~= nil end,\n  score = 8.0, description = 'smtp-std test: mark as spam',\n}\n",
        )
        .unwrap();
        let var = |k: &str, v: &Path| format!("--var={k}={}", v.display());
        let child = Command::new("rspamd")
            .args(["-f", "-u", "root", "-g", "root", "-i", "-c"])
            .arg(d.join("rspamd.conf"))
            .arg(var("LOCAL_CONFDIR", d))
            .arg(var("DBDIR", &d.join("db")))
            .arg(var("RUNDIR", d))
            .arg(var("LOGDIR", d))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rspamd");
        let mut rspamd = Self { child, port, _dir: dir };
        // Bounded start: the proxy listens once its worker is up.
        let deadline = Instant::now() + Duration::from_secs(90);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rspamd did not listen on {port} within 90 s");
            assert!(rspamd.child.try_wait().ok().flatten().is_none(), "rspamd exited at start");
            std::thread::sleep(Duration::from_millis(100));
        }
        rspamd
    }
}

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

#[test]
fn rspamd_refuses_gtube_files_marked_mail_in_junk_and_stopped_means_tempfail() {
    if !rspamd_available() {
        return;
    }
    let rspamd = Rspamd::start();
    let dir = tempfile::tempdir().unwrap();
    let p =
        start_with(dir.path(), &format!("[[milter]]\naddress = \"127.0.0.1:{}\"\ntimeout = \"30s\"\n", rspamd.port));
    let md = inbox(dir.path());
    let mut c = session(p.addr);

    // A clean message: delivered to the inbox. The first scans also warm rspamd up.
    let r = send(&mut c, "clean", "", "Hello Alice, see you tomorrow.");
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(read_all(&md, "new").len(), 1);

    // GTUBE: refused with rspamd's own reply.
    let r = send(&mut c, "gtube", "", GTUBE);
    assert!(r.starts_with("554 5.7.1 Gtube pattern"), "rspamd's own reply: {r}");
    assert_eq!(read_all(&md, "new").len(), 1);

    // Marked (score 8: add header): filed in .Junk with rspamd's headers.
    let r = send(&mut c, "marked", "X-Test-Mark: yes\r\n", "Hello Alice.");
    assert!(r.starts_with("250"), "{r}");
    let junk = read_all(&md, ".Junk/new");
    assert_eq!(junk.len(), 1, "{:?}", read_all(&md, "new"));
    assert!(junk[0].contains("Subject: marked\r\n"));
    assert!(junk[0].contains("X-Spam: Yes\r\n"), "{}", junk[0]);
    assert!(junk[0].contains("X-Spamd-Result: ") && junk[0].contains("SMTP_STD_TEST_MARK"), "{}", junk[0]);
    assert_eq!(read_all(&md, "new").len(), 1, "not in the inbox");

    // The round trip: messages through rspamd vs the same server without a milter.
    let n = 20;
    let timed = |c: &mut Client, subject: &str| {
        let t = Instant::now();
        for i in 0..n {
            let r = send(c, &format!("{subject}-{i}"), "", "Hello Alice, see you tomorrow.");
            assert!(r.starts_with("250"), "{r}");
        }
        t.elapsed() / n
    };
    let with = timed(&mut c, "timed");
    let d2 = tempfile::tempdir().unwrap();
    let plain = start_with(d2.path(), "");
    let without = timed(&mut session(plain.addr), "plain");
    eprintln!(
        "milter round trip: {with:?} per message with rspamd (self-scan) on loopback, {without:?} without a milter, \
         {:?} for the milter ({n} messages, one session)",
        with.saturating_sub(without)
    );

    // rspamd stopped: the default action (tempfail).
    drop(rspamd);
    let r = send(&mut c, "stopped", "", "Hello Alice.");
    assert!(r.starts_with("451 4.7.1"), "{r}");
    assert!(p.log_contains("milter 127.0.0.1:"));
}
