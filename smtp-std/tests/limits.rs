//! Hostile load: per-client limits (half-line connections from one address, password
//! guessing), thousands of idle sessions that answer and cost no CPU, and a shutdown that
//! reaches every one of them at once. Every loop is bounded.

// Without `mta` the tests on the Maildir handler are left out, and what only they use.
#![cfg_attr(not(feature = "mta"), allow(unused_imports, dead_code))]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use smtp_std::proto::ehlo::AuthMechanisms;
use smtp_std::proto::Reply;
use smtp_std::{AuthRequest, Decision, Handler, Options, Server, Session};

/// A client socket bound to `source` (a loopback address) before connecting.
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect_timeout(&addr.into(), Duration::from_secs(10)).unwrap();
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream
}

fn client_from(source: &str, addr: SocketAddr) -> Client {
    Client::from_stream(connect_from(source, addr))
}

/// One whole reply from a bare socket (no second descriptor for a reader); "" at EOF.
fn read_reply(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..100 {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if all.ends_with(b"\r\n") {
            let body = &all[..all.len() - 2];
            let last = body.rsplit(|&b| b == b'\n').next().unwrap_or(body);
            if last.len() < 4 || last[3] == b' ' {
                break;
            }
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// Raises the soft limit on open files to at least `need` (up to the hard limit).
fn raise_fd_limit(need: u64) -> bool {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    soft >= need || (hard >= need && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok())
}

/// The rest of a plain session after the greeting, which must all succeed.
fn transaction(c: &mut Client) {
    assert!(c.cmd("EHLO ok.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@ok.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@mx.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let r = c.cmd("Subject: served\r\n\r\nhello\r\n.");
    assert!(r.starts_with("250 "), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));
}

#[test]
#[cfg(feature = "mta")] // the Maildir handler
fn half_line_connections_from_one_address_leave_room_for_others() {
    // The defaults: 1,000 clients, 50 at once from one address.
    let server = MaildirServer::start(|o| o);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..500 {
        let mut c = client_from("127.0.0.1", server.addr);
        let r = c.reply();
        if r.starts_with("220 ") {
            c.send(b"EHL");
            held.push(c);
        } else {
            assert!(r.starts_with("421 4.7.0 ") && r.contains("Too many connections from your address"), "{r}");
            assert!(c.is_closed());
            refused += 1;
        }
    }
    assert_eq!((held.len(), refused), (50, 450));

    // Another address is served at once.
    let start = Instant::now();
    let mut c = client_from("127.0.0.2", server.addr);
    assert!(c.reply().starts_with("220 "));
    transaction(&mut c);
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    assert_eq!(server.new_files().len(), 1);

    // The 50 are sessions like any other: the rest of their line makes an EHLO.
    for c in &mut held[..3] {
        c.send(b"O slow.example\r\n");
        assert!(c.reply().starts_with("250"));
    }
    // Once they go, their address is served again.
    drop(held);
    let mut served = false;
    for _ in 0..100 {
        let mut c = client_from("127.0.0.1", server.addr);
        if c.reply().starts_with("220 ") {
            transaction(&mut c);
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served);
}

/// Accepts `alice` / `secret` over AUTH; counts how often it is asked.
#[derive(Clone)]
struct Password(Arc<AtomicUsize>);

impl Handler for Password {
    fn auth(&mut self, _: &Session, auth: &AuthRequest<'_>) -> Decision {
        self.0.fetch_add(1, Ordering::SeqCst);
        if auth.identity == "alice" && auth.secret == "secret" {
            Decision::Accept
        } else {
            Reply::AUTH_FAILED.into()
        }
    }
}

fn plain(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    format!("AUTH PLAIN {b64}")
}

#[test]
fn password_guessing_locks_one_address_out() {
    let asked = Arc::new(AtomicUsize::new(0));
    let options = Options::new("mx.test")
        .auth_mechanisms(AuthMechanisms::none().with(AuthMechanisms::PLAIN))
        .allow_insecure_auth(true);
    let mut server = Server::new(options, Password(asked.clone()));
    let addr = server.listen("127.0.0.1:0").unwrap();
    let _running = server.spawn();

    // A session of the guesser's address opened before the guessing.
    let mut early = client_from("127.0.0.1", addr);
    assert!(early.reply().starts_with("220 "));
    assert!(early.cmd("EHLO early.example").contains("AUTH PLAIN"));

    // 100 wrong passwords, on as few connections as the server allows.
    let mut outcomes = Vec::new();
    let mut conn: Option<Client> = None;
    for _ in 0..100 {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let mut c = client_from("127.0.0.1", addr);
                let greeting = c.reply();
                if !greeting.starts_with("220 ") {
                    assert!(
                        greeting.starts_with("421 4.7.0 ") && greeting.contains("Too many authentication failures"),
                        "{greeting}"
                    );
                    assert!(c.is_closed(), "refused at connect: no EHLO, no AUTH offered");
                    outcomes.push("421 at connect");
                    continue;
                }
                assert!(c.cmd("EHLO guesser.example").contains("AUTH PLAIN"));
                conn.insert(c)
            }
        };
        let r = c.cmd(&plain("alice", "guess"));
        if r.starts_with("535 5.7.8") {
            outcomes.push("535");
        } else {
            assert!(r.starts_with("421 4.7.0 Too many authentication failures"), "{r}");
            assert!(c.is_closed());
            outcomes.push("421 at AUTH");
            conn = None;
        }
    }
    let mut expected = vec!["535"; 9];
    expected.push("421 at AUTH");
    expected.extend(["421 at connect"; 90]);
    assert_eq!(outcomes, expected);
    assert_eq!(asked.load(Ordering::SeqCst), 10, "the handler saw the ten failures, then nothing");

    // Its session opened before: AUTH refused, even with the right password, without asking.
    let r = early.cmd(&plain("alice", "secret"));
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert!(early.is_closed());
    assert_eq!(asked.load(Ordering::SeqCst), 10);

    // Another address logs in with the right password and sends.
    let mut c = client_from("127.0.0.2", addr);
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO ok.example").contains("AUTH PLAIN"));
    let r = c.cmd(&plain("alice", "secret"));
    assert!(r.starts_with("235"), "{r}");
    assert!(c.cmd("MAIL FROM:<alice@ok.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@mx.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd("Subject: hi\r\n\r\nhello\r\n.").starts_with("250 "));

    // The guesser's address is still refused at connect.
    let mut c = client_from("127.0.0.1", addr);
    assert!(c.reply().starts_with("421 4.7.0"));
}

/// CPU ticks (user + system) of this process's server threads (named `smtp-…`: the pool's
/// session threads, the idle sessions' poller, the accept loop), and how many there are.
fn session_thread_ticks() -> (u64, usize) {
    let (mut ticks, mut threads) = (0, 0);
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = &stat[open + 1..close];
        if !name.starts_with("smtp-") {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // After the name: state is field 3 of stat(5); utime and stime are 14 and 15.
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        threads += 1;
    }
    (ticks, threads)
}

#[test]
#[cfg(feature = "mta")] // the Maildir handler
fn five_thousand_idle_sessions_answer_cost_no_cpu_and_shut_down_at_once() {
    const N: usize = 5000;
    // N server sockets, N client sockets, and some to spare.
    if !raise_fd_limit(2 * N as u64 + 500) {
        assert!(std::env::var_os("CI").is_none(), "cannot raise the open files limit on CI");
        eprintln!("skipped: the hard limit on open files is below {}", 2 * N + 500);
        return;
    }
    // The program's kind of subscriber (fmt over tracing-subscriber's registry): when each
    // session thread entered a span, thread 4,097 panicked in its slab.
    let _ = tracing_subscriber::fmt().with_writer(std::io::sink).try_init();
    let panics = Arc::new(AtomicUsize::new(0));
    let count = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name().is_some_and(|n| n.starts_with("smtp-")) {
            count.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));

    let mut server =
        MaildirServer::start(|o| o.max_clients(N + 100).max_connections_per_client(0).max_connection_rate(0));
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        let mut s = connect_from("127.0.0.1", server.addr);
        let r = read_reply(&mut s);
        assert!(r.starts_with("220 "), "connection {i}: {r:?}");
        s.write_all(b"EHLO idle.example\r\n").unwrap();
        assert!(read_reply(&mut s).starts_with("250"), "connection {i}");
        clients.push(s);
    }
    // All open, all answering.
    for (i, s) in clients.iter_mut().enumerate() {
        s.write_all(b"NOOP\r\n").unwrap();
        let r = read_reply(s);
        assert!(r.starts_with("250"), "connection {i}: {r:?}");
    }
    // Silent past the park delay, they give their threads back and wait in the poller: a
    // few spare threads are left, not one per session.
    std::thread::sleep(smtp_std::DEFAULT_PARK_AFTER + Duration::from_millis(1500));
    let (before, threads) = session_thread_ticks();
    assert!(threads < 100, "{threads} server threads for {N} idle sessions");
    // Idle, they cost nothing: not one tick of CPU over 3 s (waking every 200 ms to look at
    // a shutdown flag, 5,000 sessions burnt ~13% of a core).
    std::thread::sleep(Duration::from_secs(3));
    let (after, _) = session_thread_ticks();
    assert!(after - before <= 1, "idle sessions used {} ticks", after - before);

    // Shutdown reaches every one of them within a second.
    let running = server.running.take().unwrap();
    let start = Instant::now();
    let stopper = std::thread::spawn(move || running.shutdown());
    for (i, s) in clients.iter_mut().enumerate() {
        let r = read_reply(s);
        assert!(r.starts_with("421 4.3.2"), "connection {i}: {r:?}");
    }
    let reached = start.elapsed();
    stopper.join().unwrap().unwrap();
    assert!(reached < Duration::from_secs(1), "shutdown reached the last session after {reached:?}");
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a server thread panicked");
}

/// A TLS client over `tcp` that trusts `der`.
fn tls_client(tcp: TcpStream, der: &[u8]) -> Tls {
    let conn = rustls::ClientConnection::new(tls_client_config(der), "localhost".try_into().unwrap()).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
#[cfg(feature = "mta")] // the Maildir handler
fn shutdown_wakes_tls_sessions_and_handshakes() {
    let mut server = MaildirServer::start_full(|o| o, true, Vec::new(), None);
    let der = server.cert.as_ref().unwrap().der.clone();
    // An implicit-TLS session, idle after EHLO.
    let mut implicit = tls_client(TcpStream::connect(server.tls_addr.unwrap()).unwrap(), &der);
    assert!(tls_reply(&mut implicit).starts_with("220 "));
    implicit.write_all(b"EHLO tls.example\r\n").unwrap();
    assert!(tls_reply(&mut implicit).starts_with("250"));
    // A STARTTLS session, idle after its new EHLO.
    let mut c = Client::connect(server.addr);
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO tls.example").contains("STARTTLS"));
    assert!(c.cmd("STARTTLS").starts_with("220"));
    let mut starttls = tls_client(c.stream.try_clone().unwrap(), &der);
    starttls.write_all(b"EHLO tls.example\r\n").unwrap();
    assert!(tls_reply(&mut starttls).starts_with("250"));
    // A client that connects to the TLS port and never starts its handshake.
    let silent = TcpStream::connect(server.tls_addr.unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let running = server.running.take().unwrap();
    let start = Instant::now();
    let stopper = std::thread::spawn(move || running.shutdown());
    assert!(tls_reply(&mut implicit).starts_with("421 4.3.2"));
    assert!(tls_reply(&mut starttls).starts_with("421 4.3.2"));
    stopper.join().unwrap().unwrap();
    assert!(start.elapsed() < Duration::from_secs(1), "shutdown took {:?}", start.elapsed());
    drop(silent);
}

#[test]
#[cfg(feature = "mta")] // the Maildir handler
fn behind_a_proxy_the_carried_address_is_the_one_limited() {
    let server = MaildirServer::start(|o| {
        o.proxy_from(["127.0.0.1/32".parse().unwrap()]).max_connections_per_client(2).max_connection_rate(0)
    });
    let via_proxy = |client: &str| {
        let mut c = Client::connect(server.addr);
        c.send(format!("PROXY TCP4 {client} 127.0.0.1 40000 25\r\n").as_bytes());
        c
    };
    // Two at once from one client behind the proxy, not a third.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = via_proxy("192.0.2.1");
        assert!(c.reply().starts_with("220 "));
        held.push(c);
    }
    let mut c = via_proxy("192.0.2.1");
    let r = c.reply();
    assert!(r.starts_with("421 4.7.0 ") && r.contains("Too many connections from your address"), "{r}");
    assert!(c.is_closed());
    // Every other client behind the same proxy is its own.
    for i in 2..12 {
        let mut c = via_proxy(&format!("192.0.2.{i}"));
        assert!(c.reply().starts_with("220 "), "client {i}");
        transaction(&mut c);
    }
    assert!(held[0].cmd("NOOP").starts_with("250"));
}
