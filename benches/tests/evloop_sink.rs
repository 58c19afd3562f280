//! The `evloop-sink` bench server speaks SMTP through the core: a session with pipelined
//! commands, a dot-stuffed body, a smuggling attempt refused, STARTTLS not offered, many sessions
//! at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Sink(Child, SocketAddr);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the sink on a port of its choosing (a port picked here and handed over could be
/// taken by the other test's sink in between) and reads the address it bound.
fn start() -> Sink {
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_evloop-sink")).arg("127.0.0.1:0").stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().parse().unwrap_or_else(|_| panic!("evloop-sink printed {line:?}"));
    Sink(child, addr)
}

struct Client(BufReader<TcpStream>);

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client(BufReader::new(tcp));
        assert!(c.reply().starts_with("220 "));
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.get_mut().write_all(bytes).unwrap();
    }

    /// One whole reply, its lines joined.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            assert!(self.0.read_line(&mut line).unwrap() > 0, "connection closed");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }
}

#[test]
fn session_pipelined_stuffed_and_smuggling() {
    let sink = start();
    let mut c = Client::connect(sink.1);
    c.send(b"EHLO client.test\r\n");
    let ehlo = c.reply();
    assert!(ehlo.contains("PIPELINING") && !ehlo.contains("STARTTLS"), "{ehlo}");
    c.send(b"STARTTLS\r\n");
    assert!(c.reply().starts_with("502 5.5.1"));
    // Pipelined envelope and a dot-stuffed body.
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@f.test>\r\nDATA\r\n");
    for want in ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354 "] {
        assert!(c.reply().starts_with(want));
    }
    c.send(b"Subject: x\r\n\r\n..leading dot\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0"));
    // A bare-LF terminator smuggles nothing: the message is refused after its real end and
    // the "second" transaction never happens.
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    for want in ["250 2.1.0", "250 2.1.5", "354 "] {
        assert!(c.reply().starts_with(want));
    }
    c.send(b"hi\n.\nMAIL FROM:<evil@x.test>\r\n\r\n.\r\n");
    assert!(c.reply().starts_with("550 5.5.2"));
    c.send(b"QUIT\r\n");
    assert!(c.reply().starts_with("221 "));
    let mut rest = Vec::new();
    c.0.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn many_sessions_at_once() {
    let sink = start();
    let mut clients: Vec<Client> = (0..50).map(|_| Client::connect(sink.1)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("HELO c{i}.test\r\nMAIL FROM:<a{i}@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n").as_bytes());
    }
    let body = "x".repeat(998) + "\r\n";
    for c in &mut clients {
        for want in ["250 ", "250 2.1.0", "250 2.1.5", "354 "] {
            assert!(c.reply().starts_with(want));
        }
        for _ in 0..100 {
            c.send(body.as_bytes());
        }
        c.send(b".\r\nQUIT\r\n");
    }
    for c in &mut clients {
        assert!(c.reply().starts_with("250 2.0.0"));
        assert!(c.reply().starts_with("221 "));
    }
}

#[test]
fn vanishing_clients_do_not_take_it_down() {
    let sink = start();
    for i in 0..200 {
        let mut tcp = TcpStream::connect(sink.1).unwrap();
        match i % 3 {
            // Gone at once.
            0 => {}
            // Half a command, then gone.
            1 => tcp.write_all(b"MAIL FROM:<a@b").unwrap(),
            // Gone with the greeting unread: the kernel answers the sink with a reset.
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    let mut c = Client::connect(sink.1);
    c.send(b"HELO c.test\r\nQUIT\r\n");
    assert!(c.reply().starts_with("250 "));
    assert!(c.reply().starts_with("221 "));
}
