//! Idle sessions park (`Options::park_idle_sessions_after`): a session whose client is silent
//! gives its thread back and waits in the poller; when the client sends again it goes on where
//! it stopped — mid-line, mid-message, mid-BDAT chunk, under TLS — with the same handler and
//! session, its timeout still counting, and shutdown still reaching it.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use smtp_std::proto::parse::{ForwardPath, MailParams, RcptParams, ReversePath};
use smtp_std::{Decision, Handler, Options, Running, Server, Session};

/// Parks after 20 ms of silence; the tests wait ten times that.
const PARK: Duration = Duration::from_millis(20);
const SILENCE: Duration = Duration::from_millis(200);

#[derive(Clone, Default)]
struct Record {
    calls: Arc<Mutex<Vec<String>>>,
    body: Arc<Mutex<Vec<u8>>>,
}

impl Record {
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Handler for Record {
    fn helo(&mut self, _: &Session, host: &str) -> Decision {
        self.log(format!("helo {host}"));
        Decision::Accept
    }
    fn mail_from(&mut self, s: &Session, from: &ReversePath<'_>, _: &MailParams<'_>) -> Decision {
        self.log(format!("mail {} helo={:?}", smtp_std::handler::reverse_path_string(from), s.helo));
        Decision::Accept
    }
    fn rcpt_to(&mut self, _: &Session, to: &ForwardPath<'_>, _: &RcptParams<'_>) -> Decision {
        self.log(format!("rcpt {}", smtp_std::handler::forward_path_string(to)));
        Decision::Accept
    }
    fn data_chunk(&mut self, _: &Session, chunk: &[u8]) -> std::io::Result<()> {
        self.body.lock().unwrap().extend_from_slice(chunk);
        Ok(())
    }
    fn data_end(&mut self, _: &Session, size: u64) -> Decision {
        self.log(format!("end {size}"));
        Decision::Accept
    }
    fn close(&mut self, s: &Session) {
        self.log(format!("close helo={:?}", s.helo));
    }
}

fn start(options: Options, handler: Record) -> (Running, std::net::SocketAddr) {
    let mut server = Server::new(options, handler);
    let addr = server.listen("127.0.0.1:0").unwrap();
    (server.spawn(), addr)
}

/// Server threads of this process (the pool's are named `smtp-session`).
fn session_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "smtp-session"))
        .count()
}

#[test]
fn input_and_the_close_right_behind_it_are_both_seen() {
    // A command and the client's FIN in one go, to a parked session: it reads the command (a
    // read that comes back short), answers, and may park again without reading; the FIN
    // already there must still end it (the event that woke it said so: it reads to the end).
    let (running, addr) = start(Options::new("mx.test"), Record::default());
    for i in 0..50 {
        let mut c = Client::connect(addr);
        assert!(c.reply().starts_with("220 "), "connection {i}");
        c.stream.write_all(b"NOOP\r\n").unwrap();
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let end = std::io::Read::read_to_end(&mut c.stream, &mut rest);
        assert!(end.is_ok(), "connection {i}: the server did not close: {end:?}");
        assert!(String::from_utf8_lossy(&rest).starts_with("250"), "connection {i}");
    }
    running.shutdown().unwrap();
}

#[test]
fn a_parked_session_goes_on_where_it_stopped() {
    let handler = Record::default();
    let (running, addr) = start(Options::new("mx.test").park_idle_sessions_after(Some(PARK)), handler.clone());
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220 "));
    std::thread::sleep(SILENCE);
    assert!(c.cmd("EHLO park.example").starts_with("250"));
    std::thread::sleep(SILENCE);
    // Half a command line, silence, the rest.
    c.send(b"MAIL FROM:<a@park");
    std::thread::sleep(SILENCE);
    c.send(b".example>\r\n");
    assert!(c.reply().starts_with("250"), "MAIL split by a park");
    assert!(c.cmd("RCPT TO:<b@mx.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    // A message in three pieces, parked between them, one piece ending mid-line.
    c.send(b"Subject: parked\r\n\r\nline one\r\nline t");
    std::thread::sleep(SILENCE);
    c.send(b"wo\r\n..dot\r\n");
    std::thread::sleep(SILENCE);
    c.send(b".\r\n");
    assert!(c.reply().starts_with("250"), "end of data");
    // A BDAT chunk whose bytes come on both sides of a park.
    assert!(c.cmd("MAIL FROM:<c@park.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<d@mx.test>").starts_with("250"));
    c.send(b"BDAT 11 LAST\r\nhello");
    std::thread::sleep(SILENCE);
    c.send(b" world");
    assert!(c.reply().starts_with("250"), "BDAT split by a park");
    std::thread::sleep(SILENCE);
    assert!(c.cmd("QUIT").starts_with("221"));
    assert!(c.is_closed());
    running.shutdown().unwrap();

    assert_eq!(
        handler.calls(),
        [
            "helo park.example",
            "mail a@park.example helo=Some(\"park.example\")",
            "rcpt b@mx.test",
            "end 45",
            "mail c@park.example helo=Some(\"park.example\")",
            "rcpt d@mx.test",
            "end 11",
            "close helo=Some(\"park.example\")",
        ]
    );
    assert_eq!(
        handler.body.lock().unwrap().as_slice(),
        b"Subject: parked\r\n\r\nline one\r\nline two\r\n.dot\r\nhello world"
    );
}

#[test]
fn idle_sessions_hold_no_thread_and_all_answer() {
    const N: usize = 300;
    let options = Options::new("mx.test")
        .park_idle_sessions_after(Some(PARK))
        .max_connections_per_client(0)
        .max_connection_rate(0);
    let (running, addr) = start(options, Record::default());
    let mut clients: Vec<Client> = (0..N)
        .map(|_| {
            let mut c = Client::connect(addr);
            assert!(c.reply().starts_with("220 "));
            assert!(c.cmd("EHLO idle.example").starts_with("250"));
            c
        })
        .collect();
    std::thread::sleep(SILENCE * 2);
    // The pool keeps a few spare threads (64 at most), not one per session.
    let threads = session_threads();
    assert!(threads <= 64 + 8, "{threads} session threads for {N} idle sessions");
    for (i, c) in clients.iter_mut().enumerate() {
        assert!(c.cmd("NOOP").starts_with("250"), "session {i}");
    }
    std::thread::sleep(SILENCE);
    // Shutdown reaches the parked sessions.
    let stopper = std::thread::spawn(move || running.shutdown());
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.reply();
        assert!(r.starts_with("421 4.3.2"), "session {i}: {r:?}");
    }
    stopper.join().unwrap().unwrap();
}

#[test]
fn a_parked_session_still_times_out() {
    let options =
        Options::new("mx.test").park_idle_sessions_after(Some(PARK)).socket_timeout(Duration::from_millis(600));
    let (running, addr) = start(options, Record::default());
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO slow.example").starts_with("250"));
    // The timeout runs from the last input, parked or not.
    c.send(b"NOOP");
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r:?}");
    assert!(c.is_closed());
    running.shutdown().unwrap();
}

#[test]
fn without_parking_a_session_keeps_its_thread_and_its_timeout() {
    let options = Options::new("mx.test").park_idle_sessions_after(None).socket_timeout(Duration::from_millis(600));
    let handler = Record::default();
    let (running, addr) = start(options, handler.clone());
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO slow.example").starts_with("250"));
    std::thread::sleep(SILENCE);
    assert!(c.cmd("NOOP").starts_with("250"));
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r:?}");
    running.shutdown().unwrap();
    assert_eq!(handler.calls(), ["helo slow.example", "close helo=Some(\"slow.example\")"]);
}

fn tls_client(tcp: TcpStream, der: &[u8]) -> Tls {
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = rustls::ClientConnection::new(tls_client_config(der), "localhost".try_into().unwrap()).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn tls_sessions_park_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let cert = cert(dir.path());
    let tls = smtp_std::tls::server_config_from_files(&cert.cert_pem, &cert.key_pem).unwrap();
    let handler = Record::default();
    let mut server =
        Server::new(Options::new("mx.test").tls(tls).park_idle_sessions_after(Some(PARK)), handler.clone());
    let addr = server.listen("127.0.0.1:0").unwrap();
    let tls_addr = server.listen_tls("127.0.0.1:0").unwrap();
    let running = server.spawn();

    // Implicit TLS: parked after the greeting and after EHLO.
    let mut implicit = tls_client(TcpStream::connect(tls_addr).unwrap(), &cert.der);
    assert!(tls_reply(&mut implicit).starts_with("220 "));
    std::thread::sleep(SILENCE);
    assert!(tls_cmd(&mut implicit, "EHLO implicit.example").starts_with("250"));
    std::thread::sleep(SILENCE);
    assert!(tls_cmd(&mut implicit, "MAIL FROM:<a@implicit.example>").starts_with("250"));

    // STARTTLS: parked before and after the handshake, mid-line under TLS.
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220 "));
    std::thread::sleep(SILENCE);
    assert!(c.cmd("EHLO plain.example").contains("STARTTLS"));
    assert!(c.cmd("STARTTLS").starts_with("220"));
    let mut starttls = tls_client(c.stream.try_clone().unwrap(), &cert.der);
    assert!(tls_cmd(&mut starttls, "EHLO starttls.example").starts_with("250"));
    std::thread::sleep(SILENCE);
    starttls.write_all(b"MAIL FROM:<b@starttls").unwrap();
    starttls.flush().unwrap();
    std::thread::sleep(SILENCE);
    assert!(tls_cmd(&mut starttls, ".example>").starts_with("250"));
    std::thread::sleep(SILENCE);

    // Shutdown reaches both, parked under TLS.
    let stopper = std::thread::spawn(move || running.shutdown());
    assert!(tls_reply(&mut implicit).starts_with("421 4.3.2"));
    assert!(tls_reply(&mut starttls).starts_with("421 4.3.2"));
    stopper.join().unwrap().unwrap();
    let calls = handler.calls();
    assert!(calls.contains(&"mail a@implicit.example helo=Some(\"implicit.example\")".to_owned()), "{calls:?}");
    assert!(calls.contains(&"mail b@starttls.example helo=Some(\"starttls.example\")".to_owned()), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| c.starts_with("close")).count(), 2, "{calls:?}");
}

/// Blocks in `helo` for hosts named `block…` until the gate opens, panics for `panic…`.
#[derive(Clone, Default)]
struct Stall {
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
    blocked: Arc<std::sync::atomic::AtomicUsize>,
}

impl Handler for Stall {
    fn helo(&mut self, _: &Session, host: &str) -> Decision {
        if host.starts_with("panic") {
            panic!("a handler panicked (on purpose, tests/park.rs)");
        }
        if host.starts_with("block") {
            self.blocked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (open, opened) = &*self.gate;
            let mut open = open.lock().unwrap();
            let until = std::time::Instant::now() + Duration::from_secs(30);
            while !*open && std::time::Instant::now() < until {
                open = opened.wait_timeout(open, Duration::from_millis(100)).unwrap().0;
            }
        }
        Decision::Accept
    }
}

#[test]
fn handlers_that_block_or_panic_do_not_stall_the_other_sessions() {
    // The default: sessions park as soon as they wait, and a few threads (as many as the
    // cores) wait on them all. More handlers block at once than there are such threads.
    let n = std::thread::available_parallelism().map_or(2, |n| n.get()) + 4;
    let handler = Stall::default();
    let mut server =
        Server::new(Options::new("mx.test").max_connections_per_client(0).max_connection_rate(0), handler.clone());
    let addr = server.listen("127.0.0.1:0").unwrap();
    let running = server.spawn();
    let mut stuck: Vec<Client> = (0..n)
        .map(|i| {
            let mut c = Client::connect(addr);
            assert!(c.reply().starts_with("220 "));
            c.send(format!("EHLO block{i}.example\r\n").as_bytes());
            c
        })
        .collect();
    for _ in 0..2000 {
        if handler.blocked.load(std::sync::atomic::Ordering::SeqCst) == n {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(handler.blocked.load(std::sync::atomic::Ordering::SeqCst), n, "not all handlers blocked");
    // Handlers that panic end their own sessions only, however many.
    for i in 0..2 * n {
        let mut c = Client::connect(addr);
        assert!(c.reply().starts_with("220 "), "panicking session {i}");
        c.send(b"EHLO panic.example\r\n");
        assert!(c.is_closed(), "panicking session {i}");
    }
    // Meanwhile, another client is served at once, every command.
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO free.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@free.example>").starts_with("250"));
    assert!(c.cmd("NOOP").starts_with("250"));
    // The blocked ones go on once their handlers return.
    *handler.gate.0.lock().unwrap() = true;
    handler.gate.1.notify_all();
    for (i, c) in stuck.iter_mut().enumerate() {
        assert!(c.reply().starts_with("250"), "blocked session {i}");
        assert!(c.cmd("NOOP").starts_with("250"), "blocked session {i}");
    }
    running.shutdown().unwrap();
}
