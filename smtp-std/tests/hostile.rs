//! Hostile clients over real sockets: SMTP smuggling, STARTTLS injection, over-long lines,
//! oversized messages, too many recipients/errors/clients, timeouts, clients killed mid-DATA.
//! Each gets the right reply and the server goes on serving others.
// The mail server and the program (feature `mta`).
#![cfg(feature = "mta")]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

fn open_transaction(c: &mut Client) {
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO hostile.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@hostile.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@mx.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
}

/// What the stored message must hold for an accepted smuggling attempt: the content with the
/// dot-stuffing of each line undone (RFC 5321 §4.5.2), up to the CRLF before the final dot.
fn unstuffed(content: &[u8]) -> Vec<u8> {
    let body = content.strip_suffix(b".\r\n").expect("ends with the terminator");
    let mut out = Vec::new();
    for line in body.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

#[test]
fn smtp_smuggling_never_yields_a_second_message() {
    // Default policy: bare CR and bare LF in content are refused (550 5.5.2).
    let server = MaildirServer::start(|o| o);
    let smuggled =
        b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@mx.test>\r\nDATA\r\nFrom: ceo\r\n\r\nSmuggled\r\n";
    // (sequence between "first" and the smuggled commands, accepted?)
    let sequences: [(&[u8], bool); 12] = [
        // A bare LF or CR somewhere in a would-be end of data: refused, whatever the receiver
        // behind us would have made of it.
        (b"\n.\n", false),
        (b"\n.\r\n", false),
        (b"\r.\r", false),
        (b"\r.\r\n", false),
        (b"\n.\r", false),
        (b"\r\n.\n", false),
        (b"\r\n.\r", false),
        (b"\r\n.\r\0\n", false),
        (b"\r\n\r.\r\n", false),
        // Only CRLF line endings: legal content that ends nothing. The line ".\0" is
        // dot-stuffed "\0"; "\0." and ".." are ordinary lines.
        (b"\r\n.\0\r\n", true),
        (b"\r\n\0.\r\n", true),
        (b"\r\n..\r\n", true),
    ];
    let mut expected_files = 0;
    for (seq, accepted) in sequences {
        let before = server.new_files();
        let mut c = Client::connect(server.addr);
        open_transaction(&mut c);
        let mut data = b"Subject: smuggling test\r\n\r\nfirst".to_vec();
        data.extend_from_slice(seq);
        data.extend_from_slice(smuggled);
        data.extend_from_slice(b"\r\n.\r\n");
        c.send(&data);
        // Exactly one reply to the whole content.
        let r = c.reply();
        if accepted {
            assert!(r.starts_with("250 2.0.0 "), "{seq:?} must be accepted as one message: {r}");
            expected_files += 1;
        } else {
            assert!(r.starts_with("550 5.5.2 "), "{seq:?} must be refused: {r}");
        }
        // The smuggled commands never ran: the next reply answers our QUIT, then the end.
        let q = c.cmd("QUIT");
        assert!(q.starts_with("221 "), "{seq:?}: smuggled commands were answered: {q}");
        assert!(c.is_closed(), "{seq:?}: more replies after QUIT");

        let after = server.new_files();
        let added: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
        assert_eq!(added.len(), usize::from(accepted), "{seq:?}: files added {added:?}");
        assert_eq!(after.len(), expected_files, "{seq:?}");
        wait_until("tmp/ empty", Duration::from_secs(5), || server.tmp_files().is_empty());
        if let [path] = added.as_slice() {
            let msg = std::fs::read(path).unwrap();
            let (received, body) = strip_received(&msg);
            let received = String::from_utf8_lossy(received);
            // One transaction: our envelope only (the one recipient is named in Received:).
            assert!(received.contains("for <b@mx.test>;"), "{seq:?}: {received}");
            assert!(!received.contains("victim") && !received.contains("attacker"), "{seq:?}: {received}");
            // The message is exactly what was sent, smuggled commands included as text.
            assert_eq!(body, unstuffed(&data).as_slice(), "{seq:?}: stored content");
            let text = String::from_utf8_lossy(&msg);
            assert_eq!(text.matches("Received: ").count(), 1, "{seq:?}: {text}");
            assert_eq!(text.matches("MAIL FROM:<evil@attacker.example>").count(), 1, "{seq:?}");
            assert_eq!(text.matches("Subject: ").count(), 1, "{seq:?}");
        }
    }
    assert_eq!(expected_files, 3);
    // No stored message starts with (or is) the smuggled one.
    for path in server.new_files() {
        let msg = std::fs::read(path).unwrap();
        let (_, body) = strip_received(&msg);
        assert!(body.starts_with(b"Subject: smuggling test\r\n\r\nfirst"), "{}", String::from_utf8_lossy(body));
    }
    send_ok(server.addr, "Subject: still serving");
    assert_eq!(server.new_files().len(), expected_files + 1);
}

#[test]
fn bytes_pipelined_after_starttls_never_run() {
    let server = MaildirServer::start_full(|o| o, true, Vec::new(), None);
    let cert = server.cert.as_ref().unwrap();
    let mut c = Client::connect(server.addr);
    assert!(c.reply().starts_with("220 "));
    let ehlo = c.cmd("EHLO inject.example");
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    // STARTTLS and injected commands in one segment (CVE-2011-0411).
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<b@mx.test>\r\nDATA\r\nevil\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("220 2.0.0"), "{r}");

    let conn = rustls::ClientConnection::new(tls_client_config(&cert.der), "localhost".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, c.stream.try_clone().unwrap());
    let read_reply = |tls: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>| {
        let mut all = Vec::new();
        let mut b = [0u8; 1];
        loop {
            let n = tls.read(&mut b).unwrap();
            if n == 0 {
                break;
            }
            all.push(b[0]);
            if all.ends_with(b"\r\n") {
                let last = all[..all.len() - 2].rsplit(|&x| x == b'\n').next().unwrap().to_vec();
                if last.len() < 4 || last[3] == b' ' {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    };
    // Nothing arrives before our own first command: the injected ones were discarded.
    tls.write_all(b"NOOP\r\n").unwrap();
    let r = read_reply(&mut tls);
    assert!(r.starts_with("250 2.0.0"), "first reply after TLS must answer NOOP: {r}");
    // The session starts over before EHLO (RFC 3207 §4.2), STARTTLS no longer offered.
    tls.write_all(b"MAIL FROM:<a@b.example>\r\n").unwrap();
    let r = read_reply(&mut tls);
    assert!(r.starts_with("503"), "{r}");
    tls.write_all(b"EHLO inject.example\r\n").unwrap();
    let r = read_reply(&mut tls);
    assert!(r.starts_with("250") && !r.contains("STARTTLS"), "{r}");
    tls.write_all(b"QUIT\r\n").unwrap();
    assert!(read_reply(&mut tls).starts_with("221"));
    assert_eq!(server.new_files().len(), 0);
    send_ok(server.addr, "Subject: still serving");
}

#[test]
fn over_long_command_line_keeps_the_session_in_sync() {
    let server = MaildirServer::start(|o| o);
    let mut c = Client::connect(server.addr);
    assert!(c.reply().starts_with("220 "));
    let long = format!("NOOP {}", "x".repeat(10_000));
    let r = c.cmd(&long);
    assert!(r.starts_with("500 5.5.2"), "{r}");
    assert!(c.cmd("NOOP").starts_with("250"));
    assert!(c.cmd("QUIT").starts_with("221"));
    send_ok(server.addr, "Subject: still serving");
}

#[test]
fn oversized_message_is_refused_and_never_stored() {
    let server = MaildirServer::start(|o| o.size(Some(100_000)));
    let mut c = Client::connect(server.addr);
    open_transaction(&mut c);
    let line = format!("{}\r\n", "y".repeat(998));
    let chunk = line.repeat(1000); // ~1 MB per write, 10 MB total
    for _ in 0..10 {
        c.send(chunk.as_bytes());
    }
    let r = c.cmd(".");
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));
    assert!(server.new_files().is_empty());
    wait_until("tmp/ cleaned", Duration::from_secs(5), || server.tmp_files().is_empty());
    // MAIL with a declared SIZE over the limit is refused up front.
    let mut c = Client::connect(server.addr);
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO x.example").contains("SIZE 100000"));
    assert!(c.cmd("MAIL FROM:<a@x.example> SIZE=200000").starts_with("552 5.3.4"));
    send_ok(server.addr, "Subject: still serving");
}

#[test]
fn too_many_recipients() {
    let server = MaildirServer::start(|mut o| {
        o.config_mut().max_recipients = 3;
        o
    });
    let mut c = Client::connect(server.addr);
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO x.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@x.example>").starts_with("250"));
    for i in 0..3 {
        assert!(c.cmd(&format!("RCPT TO:<r{i}@mx.test>")).starts_with("250"));
    }
    let r = c.cmd("RCPT TO:<r4@mx.test>");
    assert!(r.starts_with("452 4.5.3"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd("Subject: three\r\n\r\nhi\r\n.").starts_with("250"));
    assert_eq!(server.new_files().len(), 1);
    send_ok(server.addr, "Subject: still serving");
}

#[test]
fn too_many_errors_closes_with_421() {
    let server = MaildirServer::start(|mut o| {
        o.config_mut().max_errors = 3;
        o
    });
    let mut c = Client::connect(server.addr);
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("BOGUS 1").starts_with("5"));
    assert!(c.cmd("BOGUS 2").starts_with("5"));
    let r = c.cmd("BOGUS 3");
    assert!(r.starts_with("5"), "{r}");
    let r = if r.contains("421") { r } else { c.reply() };
    assert!(r.contains("421 4.7.0"), "{r}");
    assert!(c.is_closed());
    send_ok(server.addr, "Subject: still serving");
}

#[test]
fn a_client_that_never_finishes_a_line_times_out() {
    let server = MaildirServer::start(|o| o.socket_timeout(Duration::from_millis(700)));
    let mut c = Client::connect(server.addr);
    assert!(c.reply().starts_with("220 "));
    c.send(b"EHLO never-ending");
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(c.is_closed());
    // Also mid-DATA: the message is dropped, nothing stored.
    let mut c = Client::connect(server.addr);
    open_transaction(&mut c);
    c.send(b"Subject: slow\r\n\r\npart");
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(server.new_files().is_empty());
    wait_until("tmp/ cleaned", Duration::from_secs(5), || server.tmp_files().is_empty());
    send_ok(server.addr, "Subject: still serving");
}

#[test]
fn more_clients_than_the_cap_get_421() {
    let server = MaildirServer::start(|o| o.max_clients(2));
    let mut a = Client::connect(server.addr);
    let mut b = Client::connect(server.addr);
    assert!(a.reply().starts_with("220 "));
    assert!(b.reply().starts_with("220 "));
    let mut c = Client::connect(server.addr);
    let r = c.reply();
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert!(c.is_closed());
    assert!(a.cmd("QUIT").starts_with("221"));
    // A slot frees up: others are served again.
    let mut served = false;
    for _ in 0..100 {
        let mut d = Client::connect(server.addr);
        if d.reply().starts_with("220 ") {
            assert!(d.cmd("QUIT").starts_with("221"));
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served);
    assert!(b.cmd("NOOP").starts_with("250"));
}

#[test]
fn a_client_killed_mid_data_leaves_no_file() {
    let server = MaildirServer::start(|o| o);
    let mut c = Client::connect(server.addr);
    open_transaction(&mut c);
    c.send(b"Subject: cut\r\n\r\n");
    c.send("z".repeat(100_000).as_bytes());
    wait_until("tmp file", Duration::from_secs(5), || !server.tmp_files().is_empty());
    c.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(c);
    wait_until("tmp/ cleaned", Duration::from_secs(5), || server.tmp_files().is_empty());
    assert!(server.new_files().is_empty());
    send_ok(server.addr, "Subject: still serving");
}

#[test]
fn auth_rules_in_clear_text_and_relay() {
    let users = "alice@mx.test:secret\n# comment\n";
    let server = MaildirServer::start_full(|o| o.auth_optional(true), false, vec!["mx.test".into()], Some(users));
    let mut c = Client::connect(server.addr);
    assert!(c.reply().starts_with("220 "));
    let ehlo = c.cmd("EHLO x.example");
    assert!(!ehlo.contains("AUTH"), "AUTH must not be offered in clear text: {ehlo}");
    let r = c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==");
    assert!(r.starts_with("538 5.7.11"), "{r}");
    assert!(c.cmd("MAIL FROM:<a@x.example>").starts_with("250"));
    let r = c.cmd("RCPT TO:<victim@elsewhere.example>");
    assert!(r.starts_with("550 5.7.1"), "{r}");
    assert!(c.cmd("RCPT TO:<b@MX.test>").starts_with("250"));
}

#[test]
fn graceful_shutdown_tells_idle_sessions() {
    let mut server = MaildirServer::start(|o| o);
    let mut c = Client::connect(server.addr);
    assert!(c.reply().starts_with("220 "));
    let running = server.running.take().unwrap();
    let t = std::thread::spawn(move || running.shutdown());
    let r = c.reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    t.join().unwrap().unwrap();
    assert!(
        std::net::TcpStream::connect(server.addr).is_err() || {
            let mut d = Client::connect(server.addr);
            d.reply().is_empty()
        }
    );
}

#[test]
fn program_memory_stays_flat_on_a_huge_message() {
    let dir = tempfile::tempdir().unwrap();
    let p = Program::start(dir.path(), &["--max-message-size", "1000000"]);
    let mut c = Client::connect(p.addr);
    open_transaction(&mut c);
    let chunk = format!("{}\r\n", "m".repeat(998)).repeat(1000);
    for _ in 0..40 {
        c.stream.write_all(chunk.as_bytes()).unwrap();
    }
    let r = c.cmd(".");
    assert!(r.starts_with("552 5.3.4"), "{r}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap_or_default();
    if let Some(hwm) = status.lines().find(|l| l.starts_with("VmHWM:")) {
        let kb: u64 = hwm.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(kb < 40_000, "peak RSS {kb} kB after a 40 MB message");
    }
    assert!(common::files(&dir.path().join("Maildir"), "new").is_empty());
    assert!(common::files(&dir.path().join("Maildir"), "tmp").is_empty());
}

#[test]
fn bdat_chunks_are_stored_and_pipelined_data_is_a_sync_error() {
    let server = MaildirServer::start(|o| o);
    let mut c = Client::connect(server.addr);
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO x.example").contains("CHUNKING"));
    assert!(c.cmd("MAIL FROM:<a@x.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@mx.test>").starts_with("250"));
    c.send(b"BDAT 12\r\nSubject: b\r\n");
    assert!(c.reply().starts_with("250"));
    c.send(b"BDAT 9 LAST\r\n\r\n.hi\r\n\r\n");
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
    let files = server.new_files();
    assert_eq!(files.len(), 1);
    assert_eq!(strip_received(&std::fs::read(&files[0]).unwrap()).1, b"Subject: b\r\n\r\n.hi\r\n\r\n");
    // Content pipelined right after the DATA line, before the 354: 554 5.5.0 and close.
    assert!(c.cmd("MAIL FROM:<a@x.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@mx.test>").starts_with("250"));
    c.send(b"DATA\r\nSubject: early\r\n\r\nx\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("554 5.5.0"), "{r}");
    assert!(c.is_closed());
    assert_eq!(server.new_files().len(), 1);
    send_ok(server.addr, "Subject: still serving");
}
