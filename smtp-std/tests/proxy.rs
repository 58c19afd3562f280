//! The PROXY protocol in front of the server. A real HAProxy (`send-proxy-v2` with a CRC32c,
//! and `send-proxy`) relays clients connecting from their own loopback addresses to
//! `smtp-std serve --proxy-from 127.0.0.1/32`: the stored message's `Received:` names the
//! client, not the proxy. By hand: a v1 line from a listed address is honoured, and the SMTP
//! after it in the same segment is served; from an unlisted address it is a bad command and the
//! session keeps the real peer; garbage or silence from a listed proxy closes the connection
//! without a greeting; a v2 header ahead of implicit TLS, in the segment of the ClientHello.
// The tests run the program or its Maildir handler (feature `mta`).
#![cfg(feature = "mta")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use smtp_std::proto::proxy::{encode_v2, Origin};
use smtp_std::proxy::Network;

/// A TCP connection to `server` from the loopback address `source`.
fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect_timeout(&server.into(), Duration::from_secs(5)).unwrap();
    sock.into()
}

/// `serve` with a Maildir in `dir`, taking PROXY headers from 127.0.0.1, plus `args`.
fn serve(dir: &Path, args: &[&str]) -> Program {
    let maildir = dir.join("Maildir");
    let mut all = vec!["--proxy-from", "127.0.0.1/32", "--maildir", maildir.to_str().unwrap(), "--hostname", "mx.test"];
    // The client addresses of these tests have no SPF to check.
    #[cfg(feature = "mta")]
    all.push("--no-mail-auth");
    all.extend_from_slice(args);
    Program::start(dir, &all)
}

/// EHLO to QUIT, one message whose subject is `subject`; the greeting was read.
fn transaction(c: &mut Client, subject: &str) {
    let r = c.cmd("EHLO client.example");
    assert!(r.starts_with("250"), "EHLO: {r}");
    assert!(c.cmd("MAIL FROM:<a@client.example>").starts_with("250"), "MAIL");
    assert!(c.cmd("RCPT TO:<b@mx.test>").starts_with("250"), "RCPT");
    assert!(c.cmd("DATA").starts_with("354"), "DATA");
    let r = c.cmd(&format!("Subject: {subject}\r\n\r\nhello\r\n."));
    assert!(r.starts_with("250 "), "end of data: {r}");
    assert!(c.cmd("QUIT").starts_with("221"));
}

/// The stored message with this subject (waiting for it, bounded): its `Received:` header.
fn received(maildir: &Path, subject: &str) -> String {
    let needle = format!("Subject: {subject}\r\n");
    let mut found = None;
    wait_until(&format!("the message {subject:?}"), Duration::from_secs(20), || {
        found = files(maildir, "new")
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .find(|m| m.windows(needle.len()).any(|w| w == needle.as_bytes()));
        found.is_some()
    });
    let msg = found.unwrap();
    String::from_utf8_lossy(strip_received(&msg).0).into_owned()
}

/// Whether the peer closed without sending anything, within `within`.
fn closed_silently(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("expected a close, got {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Err(e) => panic!("expected a close, got {e}"),
    }
}

fn haproxy_binary() -> Option<PathBuf> {
    let on_path = Command::new("sh").arg("-c").arg("command -v haproxy").output().ok().filter(|o| o.status.success());
    let found = on_path
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .or_else(|| Some(PathBuf::from("/usr/sbin/haproxy")).filter(|p| p.exists()));
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "haproxy is missing on CI");
        eprintln!("skipped: haproxy is not installed");
    }
    found
}

/// HAProxy in TCP mode: a frontend on 127.0.0.5 with `send-proxy-v2` (and a CRC32c TLV) and
/// one with `send-proxy` (v1), both to `backend`. Killed on drop.
struct Haproxy {
    _child: ChildGuard,
    v2: SocketAddr,
    v1: SocketAddr,
}

fn start_haproxy(bin: &Path, dir: &Path, backend: SocketAddr) -> Haproxy {
    // The ports are picked free, then bound by HAProxy: retry if another test took one.
    for attempt in 0..5 {
        let (v2, v1) = (free_port_on("127.0.0.5"), free_port_on("127.0.0.5"));
        let conf = dir.join("haproxy.cfg");
        std::fs::write(
            &conf,
            format!(
                "global\n    maxconn 100\n\
                 defaults\n    mode tcp\n    timeout connect 10s\n    timeout client 10s\n    timeout server 10s\n\
                 frontend smtp_v2\n    bind 127.0.0.5:{v2}\n    default_backend mx_v2\n\
                 frontend smtp_v1\n    bind 127.0.0.5:{v1}\n    default_backend mx_v1\n\
                 backend mx_v2\n    server s1 {backend} send-proxy-v2 proxy-v2-options crc32c\n\
                 backend mx_v1\n    server s1 {backend} send-proxy\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("haproxy-{attempt}.log"))).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(&conf)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let mut child = ChildGuard(child);
        let addrs: [SocketAddr; 2] =
            [format!("127.0.0.5:{v2}").parse().unwrap(), format!("127.0.0.5:{v1}").parse().unwrap()];
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if child.0.try_wait().unwrap().is_some() {
                break; // exited: a port was taken meanwhile, or a config error (shown below)
            }
            // HAProxy binds before it serves: once both frontends accept, it is ready.
            if addrs.iter().all(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok()) {
                return Haproxy { _child: child, v2: addrs[0], v1: addrs[1] };
            }
            assert!(Instant::now() < end, "haproxy did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(dir.join(format!("haproxy-{attempt}.log"))).unwrap_or_default();
        eprintln!("haproxy exited (attempt {attempt}): {text}");
    }
    panic!("haproxy did not start");
}

#[test]
fn haproxy_send_proxy_v2_and_v1_the_stored_received_names_the_client() {
    let Some(bin) = haproxy_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = serve(dir.path(), &[]);
    let hap = start_haproxy(&bin, dir.path(), p.addr);
    let maildir = dir.path().join("Maildir");

    let mut c = Client::from_stream(connect_from("127.0.0.7", hap.v2));
    let greeting = c.reply();
    assert!(greeting.starts_with("220 mx.test"), "{greeting}");
    transaction(&mut c, "through send-proxy-v2");
    let mut c = Client::from_stream(connect_from("127.0.0.8", hap.v1));
    assert!(c.reply().starts_with("220 mx.test"));
    transaction(&mut c, "through send-proxy");

    let v2 = received(&maildir, "through send-proxy-v2");
    assert!(v2.starts_with("Received: from client.example ([127.0.0.7])"), "{v2}");
    let v1 = received(&maildir, "through send-proxy");
    assert!(v1.starts_with("Received: from client.example ([127.0.0.8])"), "{v1}");
    assert!(p.log_contains("client=127.0.0.7:") && p.log_contains("version=V2"), "{:?}", p.log.lock().unwrap());
    assert!(p.log_contains("client=127.0.0.8:") && p.log_contains("version=V1"));
}

#[test]
fn v1_by_hand_from_a_listed_address_with_smtp_in_the_same_segment() {
    let dir = tempfile::tempdir().unwrap();
    let p = serve(dir.path(), &[]);
    let mut c = Client::from_stream(connect_from("127.0.0.1", p.addr));
    // The header and the first command in one write: the command is SMTP, served after the
    // greeting.
    c.send(b"PROXY TCP4 192.0.2.9 198.51.100.25 4242 25\r\nNOOP\r\n");
    assert!(c.reply().starts_with("220 mx.test"));
    assert!(c.reply().starts_with("250"), "NOOP after the header");
    transaction(&mut c, "v1 by hand");
    let r = received(&dir.path().join("Maildir"), "v1 by hand");
    assert!(r.starts_with("Received: from client.example ([192.0.2.9])"), "{r}");

    // TCP6 and UNKNOWN (the connection's own address stays).
    let mut c = Client::from_stream(connect_from("127.0.0.1", p.addr));
    c.send(b"PROXY TCP6 2001:db8::9 2001:db8::25 4242 25\r\n");
    assert!(c.reply().starts_with("220 "));
    transaction(&mut c, "v1 tcp6");
    let r = received(&dir.path().join("Maildir"), "v1 tcp6");
    assert!(r.starts_with("Received: from client.example ([2001:db8::9])"), "{r}");
    let mut c = Client::from_stream(connect_from("127.0.0.1", p.addr));
    c.send(b"PROXY UNKNOWN\r\n");
    assert!(c.reply().starts_with("220 "));
    transaction(&mut c, "v1 unknown");
    let r = received(&dir.path().join("Maildir"), "v1 unknown");
    assert!(r.starts_with("Received: from client.example ([127.0.0.1])"), "{r}");
}

#[test]
fn a_header_from_an_unlisted_address_is_a_bad_command() {
    let dir = tempfile::tempdir().unwrap();
    let p = serve(dir.path(), &[]);
    let mut c = Client::from_stream(connect_from("127.0.0.3", p.addr));
    // No header expected from here: the greeting comes at once.
    assert!(c.reply().starts_with("220 mx.test"));
    let r = c.cmd("PROXY TCP4 192.0.2.9 198.51.100.25 4242 25");
    assert!(r.starts_with("500 5.5.1"), "{r}");
    transaction(&mut c, "not proxied");
    let r = received(&dir.path().join("Maildir"), "not proxied");
    assert!(r.starts_with("Received: from client.example ([127.0.0.3])"), "{r}");
    assert!(p.log_lacks("PROXY header"));
}

#[test]
fn garbage_from_a_listed_proxy_closes_without_a_greeting() {
    let dir = tempfile::tempdir().unwrap();
    let p = serve(dir.path(), &[]);
    let bad: [&[u8]; 5] = [
        b"EHLO client.example\r\n",
        b"PROXY TCP4 192.0.2.9 198.51.100.25 04242 25\r\n",
        b"PROXY TCP4 192.0.2.9 198.51.100.25 4242 25\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
    ];
    for b in bad {
        let mut s = connect_from("127.0.0.1", p.addr);
        s.write_all(b).unwrap();
        assert!(closed_silently(&mut s, Duration::from_secs(10)), "{:?}", b.escape_ascii().to_string());
    }
    wait_until("the log lines", Duration::from_secs(10), || {
        p.log.lock().unwrap().iter().filter(|l| l.contains("closed without a greeting")).count() == bad.len()
    });
    assert!(p.log_contains("PROXY v2 header: version is not 2"));
    // The server goes on serving.
    let mut c = Client::from_stream(connect_from("127.0.0.1", p.addr));
    c.send(b"PROXY TCP4 192.0.2.10 198.51.100.25 4242 25\r\n");
    assert!(c.reply().starts_with("220 "));
    transaction(&mut c, "after the garbage");
}

#[test]
fn a_silent_proxy_is_closed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let p = serve(dir.path(), &["--proxy-timeout", "1"]);
    let start = Instant::now();
    let mut s = connect_from("127.0.0.1", p.addr);
    // Half a header, then nothing.
    s.write_all(b"PROXY TCP4 192.0.2").unwrap();
    assert!(closed_silently(&mut s, Duration::from_secs(10)));
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
    wait_until("the log line", Duration::from_secs(10), || p.log_contains("no PROXY header within 1s"));
}

#[test]
fn v2_header_ahead_of_implicit_tls_in_the_clienthello_segment() {
    let net: Network = "127.0.0.1/32".parse().unwrap();
    let server = MaildirServer::start_full(|o| o.proxy_from([net]), true, Vec::new(), None);
    let cert = server.cert.as_ref().unwrap();
    let origin =
        Origin::Tcp { source: "192.0.2.11:4242".parse().unwrap(), destination: "198.51.100.25:465".parse().unwrap() };
    let mut segment = [0u8; 64];
    let n = encode_v2(&origin, &mut segment).unwrap();
    let mut segment = segment[..n].to_vec();
    let mut conn =
        rustls::ClientConnection::new(tls_client_config(&cert.der), "localhost".try_into().unwrap()).unwrap();
    conn.write_tls(&mut segment).unwrap(); // the ClientHello, right after the header
    let mut tcp = connect_from("127.0.0.1", server.tls_addr.unwrap());
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(&segment).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let cmd = |tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>, line: &str| {
        if !line.is_empty() {
            tls.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        }
        // One reply, line by line.
        let mut all = Vec::new();
        let mut b = [0u8; 1];
        loop {
            assert_eq!(tls.read(&mut b).unwrap(), 1, "closed after {:?}", String::from_utf8_lossy(&all));
            all.push(b[0]);
            if all.ends_with(b"\r\n") {
                let last = all[..all.len() - 2].rsplit(|&x| x == b'\n').next().unwrap();
                if last.len() < 4 || last[3] == b' ' {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    };
    assert!(cmd(&mut tls, "").starts_with("220 "));
    assert!(cmd(&mut tls, "EHLO client.example").starts_with("250"));
    assert!(cmd(&mut tls, "MAIL FROM:<a@client.example>").starts_with("250"));
    assert!(cmd(&mut tls, "RCPT TO:<b@mx.test>").starts_with("250"));
    assert!(cmd(&mut tls, "DATA").starts_with("354"));
    assert!(cmd(&mut tls, "Subject: implicit tls\r\n\r\nhello\r\n.").starts_with("250 "));
    assert!(cmd(&mut tls, "QUIT").starts_with("221"));
    let r = received(&server.maildir, "implicit tls");
    assert!(r.starts_with("Received: from client.example ([192.0.2.11])"), "{r}");
}
