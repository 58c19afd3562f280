//! The blocking LMTP client (`smtp_std::lmtp`): against a scripted fake LMTP server over TCP
//! and over a Unix socket (the bytes it received and each recipient's outcome), and against a
//! real Dovecot LMTP when `/usr/sbin/dovecot` is installed.

mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;
#[path = "common/dovecot.rs"]
mod dovecot;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use smtp_std::lmtp::{self, LmtpError, LmtpOptions, LmtpTarget, MAX_RECIPIENTS};
use smtp_std::proto::client::Step;
use smtp_std::OwnedReply;

// ---------------------------------------------------------------------------------------------
// A scripted fake LMTP server
// ---------------------------------------------------------------------------------------------

/// What the fake server answers. Replies are written as given (CRLF included).
#[derive(Clone)]
struct Script {
    greeting: &'static str,
    lhlo: &'static str,
    mail: &'static str,
    /// One per RCPT, in order.
    rcpt: Vec<&'static str>,
    data: &'static str,
    /// Written in one piece after the end of data.
    after: &'static str,
    /// Close the connection right after `after`.
    close_after: bool,
}

const LHLO: &str = "250-lmtp.test\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n";

impl Script {
    fn new(rcpt: Vec<&'static str>, after: &'static str) -> Self {
        Script {
            greeting: "220 lmtp.test LMTP ready\r\n",
            lhlo: LHLO,
            mail: "250 2.1.0 OK\r\n",
            rcpt,
            data: "354 OK\r\n",
            after,
            close_after: false,
        }
    }
}

/// Plays `script` on one connection; returns every byte the client sent.
fn serve(mut r: impl BufRead, mut w: impl Write, script: &Script) -> Vec<u8> {
    let mut seen = Vec::new();
    let reply = |w: &mut dyn Write, s: &str| {
        let _ = w.write_all(s.as_bytes());
    };
    reply(&mut w, script.greeting);
    let mut rcpt = script.rcpt.iter();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return seen;
        }
        seen.extend_from_slice(&line);
        let verb = String::from_utf8_lossy(&line[..line.len().min(4)]).to_ascii_uppercase();
        match verb.as_str() {
            "LHLO" => reply(&mut w, script.lhlo),
            "MAIL" => reply(&mut w, script.mail),
            "RCPT" => reply(&mut w, rcpt.next().copied().unwrap_or("503 5.5.1 unexpected RCPT\r\n")),
            "DATA" => {
                reply(&mut w, script.data);
                if !script.data.starts_with("354") {
                    continue;
                }
                // The content, up to the line with a single dot.
                loop {
                    let mut line = Vec::new();
                    if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        return seen;
                    }
                    seen.extend_from_slice(&line);
                    if line == b".\r\n" {
                        break;
                    }
                }
                reply(&mut w, script.after);
                if script.close_after {
                    return seen;
                }
            }
            "RSET" => reply(&mut w, "250 2.0.0 OK\r\n"),
            "QUIT" => {
                reply(&mut w, "221 2.0.0 Bye\r\n");
                return seen;
            }
            _ => reply(&mut w, "500 5.5.1 unknown command\r\n"),
        }
    }
}

/// A fake server on a loopback TCP port, for one connection.
fn fake_tcp(script: Script) -> (LmtpTarget, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = LmtpTarget::Tcp(listener.local_addr().unwrap().to_string());
    let handle = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        serve(BufReader::new(&s), &s, &script)
    });
    (target, handle)
}

/// A fake server on a Unix socket in `dir`, for one connection.
fn fake_unix(dir: &Path, script: Script) -> (LmtpTarget, JoinHandle<Vec<u8>>) {
    let path = dir.join("lmtp.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let handle = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        serve(BufReader::new(&s), &s, &script)
    });
    (LmtpTarget::Unix(path), handle)
}

fn options() -> LmtpOptions {
    let mut o = LmtpOptions::new("mx.test");
    o.timeout = Duration::from_secs(10);
    o
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn codes(replies: &[OwnedReply]) -> Vec<u16> {
    replies.iter().map(|r| r.code).collect()
}

const BODY: &[u8] = b"Subject: test\n\n.leading dot\r\n..two dots\nbare\rcr\r\n.\r\nno final newline";
const BODY_SENT: &str =
    "Subject: test\r\n\r\n..leading dot\r\n...two dots\r\nbare\r\ncr\r\n..\r\nno final newline\r\n.\r\n";

// ---------------------------------------------------------------------------------------------
// Against the fake server
// ---------------------------------------------------------------------------------------------

#[test]
fn tcp_partial_success_with_the_bytes_sent() {
    let script = Script::new(
        vec![
            "250 2.1.5 OK\r\n",
            "550 5.1.1 <bad@example.org> User doesn't exist\r\n",
            "250 2.1.5 OK\r\n",
            "250 2.1.5 OK\r\n",
            "250 2.1.5 OK\r\n",
        ],
        "250 2.0.0 <a@example.org> Saved\r\n452 4.2.2 <c@example.org> Mailbox full, try later\r\n\
         552-5.2.2 <d@example.org> Quota exceeded\r\n552 5.2.2 for good\r\n250 2.0.0 <e@example.org> Saved\r\n",
    );
    let (target, server) = fake_tcp(script);
    let to = ["a@example.org", "bad@example.org", "c@example.org", "d@example.org", "e@example.org"];
    let replies = lmtp::deliver(&target, &options(), "sender@example.net", &to, &mut &BODY[..]).unwrap();
    assert_eq!(codes(&replies), [250, 550, 452, 552, 250]);
    assert_eq!(replies[0].text, "<a@example.org> Saved");
    assert_eq!(replies[1].text, "<bad@example.org> User doesn't exist");
    assert_eq!(replies[2], OwnedReply::new(452, Some((4, 2, 2)), "<c@example.org> Mailbox full, try later"));
    assert_eq!(replies[3].text, "<d@example.org> Quota exceeded for good");
    let seen = text(&server.join().unwrap());
    assert_eq!(
        seen,
        format!(
            "LHLO mx.test\r\nMAIL FROM:<sender@example.net>\r\nRCPT TO:<a@example.org>\r\n\
             RCPT TO:<bad@example.org>\r\nRCPT TO:<c@example.org>\r\nRCPT TO:<d@example.org>\r\n\
             RCPT TO:<e@example.org>\r\nDATA\r\n{BODY_SENT}QUIT\r\n"
        )
    );
}

#[test]
fn unix_socket_session_without_pipelining() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = Script::new(vec!["250 2.1.5 OK\r\n", "250 2.1.5 OK\r\n"], "250 2.0.0 a\r\n250 2.0.0 b\r\n");
    script.lhlo = "250-lmtp.test\r\n250 ENHANCEDSTATUSCODES\r\n";
    let (target, server) = fake_unix(dir.path(), script);
    let target = LmtpTarget::parse(&target.to_string()).unwrap();
    assert!(matches!(target, LmtpTarget::Unix(_)));
    let to = vec!["a@example.org".to_string(), "b@example.org".to_string()];
    let replies = lmtp::deliver(&target, &options(), "", &to, &mut &b"hello\r\n"[..]).unwrap();
    assert_eq!(replies, [OwnedReply::new(250, Some((2, 0, 0)), "a"), OwnedReply::new(250, Some((2, 0, 0)), "b")]);
    assert_eq!(
        text(&server.join().unwrap()),
        "LHLO mx.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n\
         hello\r\n.\r\nQUIT\r\n"
    );
}

/// A message of `lines` numbered lines, produced as it is read.
struct Generated {
    next: usize,
    lines: usize,
    pending: Vec<u8>,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            if self.next == self.lines {
                return Ok(0);
            }
            // Lines that start with a dot every so often, bare LF line ends.
            self.pending = format!(".line {} of the message, with some padding to make it longer\n", self.next).into();
            self.next += 1;
        }
        let n = buf.len().min(self.pending.len()).min(7);
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

#[test]
fn streams_a_large_message_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (target, server) = fake_unix(dir.path(), Script::new(vec!["250 OK\r\n"], "250 2.0.0 Saved\r\n"));
    let lines = 30_000;
    let mut message = Generated { next: 0, lines, pending: Vec::new() };
    let replies = lmtp::deliver(&target, &options(), "s@x", &["a@y"], &mut message).unwrap();
    assert_eq!(codes(&replies), [250]);
    let seen = server.join().unwrap();
    let body_start = text(&seen).find("DATA\r\n").unwrap() + 6;
    let body = &seen[body_start..seen.len() - "QUIT\r\n".len()];
    let mut want = String::new();
    for i in 0..lines {
        want += &format!("..line {i} of the message, with some padding to make it longer\r\n");
    }
    want += ".\r\n";
    assert!(body.len() > 1_000_000, "far more than any buffer");
    assert!(body == want.as_bytes(), "the content differs");
}

#[test]
fn all_refused_at_rcpt_sends_no_content() {
    let mut script = Script::new(vec!["550 5.1.1 no such user\r\n", "450 4.2.1 try later\r\n"], "");
    script.data = "503 5.5.1 No valid recipients\r\n";
    let (target, server) = fake_tcp(script);
    let replies = lmtp::deliver(&target, &options(), "s@x", &["a@y", "b@y"], &mut &b"never sent"[..]).unwrap();
    assert_eq!(codes(&replies), [550, 450]);
    assert_eq!(replies[1].text, "try later");
    assert_eq!(
        text(&server.join().unwrap()),
        "LHLO mx.test\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@y>\r\nRCPT TO:<b@y>\r\nDATA\r\nRSET\r\nQUIT\r\n"
    );
}

#[test]
fn data_refused_is_the_outcome_of_the_accepted_recipients() {
    let mut script = Script::new(vec!["250 OK\r\n", "550 5.1.1 unknown\r\n", "250 OK\r\n"], "");
    script.data = "451 4.3.0 Temporary failure\r\n";
    let (target, server) = fake_tcp(script);
    let replies = lmtp::deliver(&target, &options(), "s@x", &["a@y", "b@y", "c@y"], &mut &b"x"[..]).unwrap();
    assert_eq!(codes(&replies), [451, 550, 451]);
    assert_eq!(replies[0].text, "Temporary failure");
    assert!(!text(&server.join().unwrap()).contains("\r\n.\r\n"));
}

#[test]
fn mail_refused() {
    for (reply, temporary) in [("451 4.3.0 try again\r\n", true), ("550 5.7.1 sender refused\r\n", false)] {
        let mut script = Script::new(vec!["250 OK\r\n"], "");
        script.mail = reply;
        script.data = "503 5.5.1 MAIL first\r\n";
        let (target, server) = fake_tcp(script);
        let e = lmtp::deliver(&target, &options(), "s@x", &["a@y"], &mut &b"x"[..]).unwrap_err();
        let LmtpError::Refused { step: Step::Mail, reply: r } = &e else { panic!("{e:?}") };
        assert_eq!(r.code, reply[..3].parse::<u16>().unwrap());
        assert_eq!(e.is_temporary(), temporary, "{e}");
        assert_eq!(e.reply(), Some(r));
        assert!(e.to_string().contains("MAIL FROM refused"), "{e}");
        let seen = text(&server.join().unwrap());
        assert!(seen.ends_with("DATA\r\nRSET\r\nQUIT\r\n"), "{seen}");
    }
}

#[test]
fn greeting_and_lhlo_refused() {
    for (greeting, temporary) in [("554 5.3.2 not now\r\n", false), ("421 4.3.2 busy\r\n", true)] {
        let mut script = Script::new(vec![], "");
        script.greeting = greeting;
        let (target, server) = fake_tcp(script);
        let e = lmtp::deliver(&target, &options(), "s@x", &["a@y"], &mut &b"x"[..]).unwrap_err();
        let LmtpError::Refused { step: Step::Greeting, reply } = &e else { panic!("{e:?}") };
        assert_eq!(reply.code, greeting[..3].parse::<u16>().unwrap());
        assert_eq!(e.is_temporary(), temporary);
        let seen = text(&server.join().unwrap());
        // QUIT to a refusing server; nothing to one that is closing.
        assert_eq!(seen, if temporary { "" } else { "QUIT\r\n" });
    }
    // LHLO refused: no HELO or EHLO fallback.
    let mut script = Script::new(vec![], "");
    script.lhlo = "500 5.5.1 unknown command\r\n";
    let (target, server) = fake_tcp(script);
    let e = lmtp::deliver(&target, &options(), "s@x", &["a@y"], &mut &b"x"[..]).unwrap_err();
    assert!(matches!(&e, LmtpError::Refused { step: Step::Lhlo, reply } if reply.code == 500), "{e:?}");
    assert!(!e.is_temporary());
    assert_eq!(text(&server.join().unwrap()), "LHLO mx.test\r\nQUIT\r\n");
}

#[test]
fn interrupted_by_421_after_the_data() {
    let mut script = Script::new(
        vec!["250 OK\r\n", "550 5.1.1 unknown\r\n", "250 OK\r\n", "250 OK\r\n"],
        "250 2.0.0 <a@y> Saved\r\n421 4.3.2 Shutting down\r\n",
    );
    script.close_after = true;
    let (target, server) = fake_tcp(script);
    let e = lmtp::deliver(&target, &options(), "s@x", &["a@y", "b@y", "c@y", "d@y"], &mut &b"x"[..]).unwrap_err();
    assert!(e.is_temporary());
    let LmtpError::Interrupted { replies, cause } = &e else { panic!("{e:?}") };
    let got: Vec<Option<u16>> = replies.iter().map(|r| r.as_ref().map(|r| r.code)).collect();
    // a delivered, b refused at RCPT, c got the 421, d unknown.
    assert_eq!(got, [Some(250), Some(550), Some(421), None]);
    assert_eq!(replies[2].as_ref().unwrap().text, "Shutting down");
    assert!(matches!(&**cause, LmtpError::Refused { step: Step::DataEnd, reply } if reply.code == 421), "{cause:?}");
    assert_eq!(e.reply().unwrap().code, 421);
    assert!(e.to_string().contains("3 of 4 outcomes known"), "{e}");
    // No QUIT to a closing server.
    assert!(text(&server.join().unwrap()).ends_with("x\r\n.\r\n"));
}

#[test]
fn interrupted_by_close_and_by_silence_after_the_data() {
    let mut script = Script::new(vec!["250 OK\r\n", "250 OK\r\n"], "250 2.0.0 Saved\r\n");
    script.close_after = true;
    let (target, _server) = fake_tcp(script);
    let e = lmtp::deliver(&target, &options(), "s@x", &["a@y", "b@y"], &mut &b"x"[..]).unwrap_err();
    let LmtpError::Interrupted { replies, cause } = &e else { panic!("{e:?}") };
    assert_eq!(replies.iter().map(|r| r.as_ref().map(|r| r.code)).collect::<Vec<_>>(), [Some(250), None]);
    assert!(matches!(**cause, LmtpError::Closed { step: Step::DataEnd }), "{cause:?}");

    let (target, server) = fake_tcp(Script::new(vec!["250 OK\r\n"], ""));
    let mut o = options();
    o.timeout = Duration::from_millis(300);
    let start = Instant::now();
    let e = lmtp::deliver(&target, &o, "s@x", &["a@y"], &mut &b"x"[..]).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    let LmtpError::Interrupted { replies, cause } = &e else { panic!("{e:?}") };
    assert_eq!(replies, &[None]);
    assert!(matches!(**cause, LmtpError::Timeout { step: Step::DataEnd }), "{cause:?}");
    assert!(e.is_temporary());
    server.join().unwrap();
}

#[test]
fn malformed_replies() {
    let mut script = Script::new(vec!["250 OK\r\n", "250 OK\r\n"], "250 2.0.0 Saved\r\n2x0 what\r\n");
    script.close_after = true;
    let (target, _server) = fake_tcp(script);
    let e = lmtp::deliver(&target, &options(), "s@x", &["a@y", "b@y"], &mut &b"x"[..]).unwrap_err();
    let LmtpError::Interrupted { replies, cause } = &e else { panic!("{e:?}") };
    assert_eq!(replies.iter().map(|r| r.as_ref().map(|r| r.code)).collect::<Vec<_>>(), [Some(250), None]);
    let LmtpError::Protocol { step: Step::DataEnd, detail } = &**cause else { panic!("{cause:?}") };
    assert!(detail.contains("malformed"), "{detail}");

    let mut script = Script::new(vec![], "");
    script.lhlo = "250-lmtp.test\r\n251 PIPELINING\r\n";
    let (target, _server) = fake_tcp(script);
    let e = lmtp::deliver(&target, &options(), "s@x", &["a@y"], &mut &b"x"[..]).unwrap_err();
    assert!(matches!(e, LmtpError::Protocol { step: Step::Lhlo, .. }), "{e:?}");
    assert!(e.is_temporary());
}

/// Fails after `ok` bytes.
struct Failing {
    ok: usize,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.ok);
        buf[..n].fill(b'a');
        self.ok -= n;
        Ok(n)
    }
}

#[test]
fn a_failing_message_is_never_ended() {
    let (target, server) = fake_tcp(Script::new(vec!["250 OK\r\n"], "250 2.0.0 Saved\r\n"));
    let e = lmtp::deliver(&target, &options(), "s@x", &["a@y"], &mut Failing { ok: 100_000 }).unwrap_err();
    assert!(matches!(&e, LmtpError::Input(err) if err.to_string() == "disk on fire"), "{e:?}");
    assert!(!e.is_temporary());
    let seen = server.join().unwrap();
    assert!(seen.ends_with(b"aaaa"), "the connection was dropped inside the content");
}

#[test]
fn connect_failures() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = LmtpTarget::Tcp(format!("127.0.0.1:{port}"));
    let e = lmtp::deliver(&target, &options(), "s@x", &["a@y"], &mut &b"x"[..]).unwrap_err();
    assert!(matches!(&e, LmtpError::Connect { target, .. } if target.ends_with(&port.to_string())), "{e:?}");
    assert!(e.is_temporary());
    let dir = tempfile::tempdir().unwrap();
    let target = LmtpTarget::Unix(dir.path().join("missing.sock"));
    let e = lmtp::deliver(&target, &options(), "s@x", &["a@y"], &mut &b"x"[..]).unwrap_err();
    assert!(matches!(e, LmtpError::Connect { .. }), "{e:?}");
}

#[test]
fn invalid_requests_are_refused_before_connecting() {
    let nowhere = LmtpTarget::Unix("/nonexistent/lmtp".into());
    let o = options();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("s@x", vec!["a@y\r\nRCPT TO:<b@y>".into()]),
        ("s@x\r\nRSET", vec!["a@y".into()]),
        ("s@x", vec!["<a@y>".into()]),
        ("s@x", vec![]),
        ("s@x", (0..=MAX_RECIPIENTS).map(|i| format!("r{i}@y")).collect()),
    ];
    for (from, to) in cases {
        let e = lmtp::deliver(&nowhere, &o, from, &to, &mut &b"x"[..]).unwrap_err();
        assert!(matches!(e, LmtpError::Invalid(_)), "{from:?} {to:?}: {e:?}");
        assert!(!e.is_temporary());
    }
}

#[test]
fn targets() {
    let p = |s: &str| LmtpTarget::parse(s);
    assert_eq!(p("/run/dovecot/lmtp"), Ok(LmtpTarget::Unix("/run/dovecot/lmtp".into())));
    assert_eq!(p("unix:/run/dovecot/lmtp"), Ok(LmtpTarget::Unix("/run/dovecot/lmtp".into())));
    assert_eq!(p("127.0.0.1:24"), Ok(LmtpTarget::Tcp("127.0.0.1:24".into())));
    assert_eq!(p("inet:mail.internal:2424"), Ok(LmtpTarget::Tcp("mail.internal:2424".into())));
    assert_eq!("[::1]:24".parse::<LmtpTarget>(), Ok(LmtpTarget::Tcp("[::1]:24".into())));
    for bad in ["localhost", "host:", ":24", "host:0", "host:99999", "unix:relative", ""] {
        assert!(p(bad).is_err(), "{bad}");
    }
    assert_eq!(p("/a/b").unwrap().to_string(), "/a/b");
    assert_eq!(LmtpOptions::default().lhlo, "localhost");
}

// ---------------------------------------------------------------------------------------------
// Against a real Dovecot
// ---------------------------------------------------------------------------------------------

/// Dovecot's master process (killed on drop) and its directory.
struct Dovecot {
    _child: common::ChildGuard,
    dir: PathBuf,
}

impl Dovecot {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }
}

fn chown_nobody(path: &Path) {
    let ok = Command::new("chown").arg("nobody:nogroup").arg(path).status().unwrap().success();
    assert!(ok, "chown nobody:nogroup {}", path.display());
}

/// Starts Dovecot's LMTP with everything in `dir`: a Unix socket `dir/lmtp.sock` and a
/// loopback port (returned), users alice, bob (no quota) and carol (a 100-byte quota: her
/// delivery fails after the data) from a passwd-file, mail in `dir/mail/<domain>/<user>`.
fn start_dovecot(dir: &Path) -> (Dovecot, u16) {
    // Dovecot's unprivileged processes must reach the mail and home directories.
    Command::new("chmod").arg("755").arg(dir).status().unwrap();
    for sub in ["mail", "home"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        chown_nobody(&dir.join(sub));
    }
    let home = dir.join("home");
    let users: String =
        [("alice", "userdb_quota_rule=*:storage=10M"), ("bob", "userdb_quota_rule=*:storage=10M"), ("carol", "")]
            .iter()
            .map(|(u, extra)| format!("{u}@example.org::65534:65534::{}/{u}::{extra}\n", home.display()))
            .collect();
    std::fs::write(dir.join("users"), users).unwrap();
    let mut last_log = String::new();
    // A free port can be taken between our check and Dovecot's bind: try a few.
    for _ in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = dir.display();
        let conf = format!(
            "protocols = lmtp\n\
             listen = 127.0.0.1\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = smtp-std-lmtp-test-{port}\n\
             log_path = {d}/dovecot.log\n\
             ssl = no\n\
             first_valid_uid = 1\n\
             mail_location = maildir:{d}/mail/%d/%n\n\
             mail_plugins = quota\n\
             plugin {{\n  quota = maildir:User quota\n  quota_rule = *:storage=100B\n}}\n\
             passdb {{\n  driver = static\n  args = nopassword=y\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
             service lmtp {{\n\
               inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
               unix_listener {d}/lmtp.sock {{\n    mode = 0666\n  }}\n\
             }}\n"
        );
        let up = || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && std::os::unix::net::UnixStream::connect(dir.join("lmtp.sock")).is_ok()
        };
        match dovecot::launch(dir, &conf, up) {
            Ok(child) => return (Dovecot { _child: child, dir: dir.to_owned() }, port),
            Err(log) => last_log = log,
        }
    }
    panic!("dovecot did not start: {last_log}");
}

/// The messages in `<dir>/mail/example.org/<user>/new`.
fn delivered(dir: &Path, user: &str) -> Vec<Vec<u8>> {
    let new = dir.join("mail/example.org").join(user).join("new");
    let Ok(entries) = std::fs::read_dir(&new) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn dovecot_lmtp() {
    if !dovecot::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (dovecot, port) = start_dovecot(dir);
    let message = b"From: s@example.net\nSubject: over LMTP\n\n.a line with a leading dot\nbare LF\n";

    // Over the Unix socket: two recipients, both delivered.
    let target = LmtpTarget::Unix(dir.join("lmtp.sock"));
    let to = ["alice@example.org", "bob@example.org"];
    let replies = lmtp::deliver(&target, &options(), "s@example.net", &to, &mut &message[..])
        .unwrap_or_else(|e| panic!("{e}\n{}", dovecot.log()));
    assert_eq!(codes(&replies), [250, 250], "{replies:?}\n{}", dovecot.log());
    assert!(replies[0].text.starts_with("<alice@example.org>"), "{:?}", replies[0]);
    for user in ["alice", "bob"] {
        let mails = delivered(dir, user);
        assert_eq!(mails.len(), 1, "{user}: {}", dovecot.log());
        let mail = text(&mails[0]);
        assert!(mail.starts_with("Return-Path: <s@example.net>\n"), "{mail}");
        // Dovecot stores LF line ends; the dot-stuffing is undone.
        assert!(mail.ends_with("Subject: over LMTP\n\n.a line with a leading dot\nbare LF\n"), "{mail}");
    }

    // Over TCP: one recipient unknown at RCPT, one over quota after the data, one delivered.
    let target = LmtpTarget::Tcp(format!("127.0.0.1:{port}"));
    let to = ["alice@example.org", "nobody-here@example.org", "carol@example.org"];
    let replies = lmtp::deliver(&target, &options(), "s@example.net", &to, &mut &message[..])
        .unwrap_or_else(|e| panic!("{e}\n{}", dovecot.log()));
    assert_eq!(codes(&replies), [250, 550, 552], "{replies:?}\n{}", dovecot.log());
    assert_eq!(replies[2].enhanced.map(|e| e.to_string()), Some("5.2.2".to_string()));
    assert_eq!(delivered(dir, "alice").len(), 2);
    assert_eq!(delivered(dir, "carol").len(), 0);
    assert!(!dir.join("mail/example.org/nobody-here").exists());

    // All refused at RCPT: nothing sent, the session still ends cleanly.
    let replies = lmtp::deliver(&target, &options(), "s@example.net", &["ghost@example.org"], &mut &message[..])
        .unwrap_or_else(|e| panic!("{e}\n{}", dovecot.log()));
    assert_eq!(codes(&replies), [550]);
    drop(dovecot);
}
