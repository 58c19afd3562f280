//! `evloop-sink ADDR` (port 0 for any; the address bound is printed on stdout once it listens):
//! the `smtp-proto` server core in a single-threaded readiness loop (mio:
//! epoll on Linux), accepting every command and discarding every message, like Postfix's
//! `smtp-sink`. Not a server to run: `benches/e2e.py` starts it next to `smtp-std serve
//! --discard` (a thread per connection) and `smtp-sink` to show what the I/O model costs and
//! what it does not: the kernel's TCP work per SMTP round trip is the same for all three.
//!
//! The core's limits (line lengths, message size, recipients, errors) and timeouts apply as in
//! `smtp_proto::server::Config::default()`; STARTTLS and AUTH are not offered.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use smtp_proto::server::{Config, Event, Progress};
use smtp_proto::{Reply, Server};

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    tcp: TcpStream,
    core: Box<Server>,
    input: Vec<u8>,
    start: usize,
    end: usize,
    /// Replies not written yet (the socket's send buffer was full).
    pending: Vec<u8>,
    deadline: Option<Instant>,
}

impl Conn {
    /// Feeds the buffered input to the core and answers its events; `true` when the session
    /// is over.
    fn process(&mut self) -> io::Result<bool> {
        loop {
            let r = self.core.handle_input(&self.input[self.start..self.end]).map_err(io::Error::other)?;
            self.start += r.consumed;
            match r.progress {
                Progress::Event(ev) => {
                    let refuse = match ev {
                        Event::StartTls => Some(Reply::TLS_UNAVAILABLE),
                        Event::Auth { .. } | Event::AuthResponse => Some(Reply::AUTH_FAILED),
                        _ => None,
                    };
                    if self.core.is_pending() {
                        match refuse {
                            Some(reply) => self.core.reply(reply),
                            None => self.core.accept(),
                        }
                        .map_err(io::Error::other)?;
                    }
                }
                Progress::Flush => self.queue(),
                Progress::NeedInput => break,
                Progress::Closed => {
                    self.queue();
                    return Ok(true);
                }
            }
        }
        self.queue();
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.input.len() {
            self.input.copy_within(self.start..self.end, 0);
            (self.end, self.start) = (self.end - self.start, 0);
        }
        self.deadline = self.core.timeout().map(|t| Instant::now() + t);
        Ok(false)
    }

    /// Moves the core's replies into `pending`.
    fn queue(&mut self) {
        let mut buf = [0u8; 1024];
        loop {
            let n = self.core.poll_transmit(&mut buf);
            if n == 0 {
                break;
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Writes what it can of `pending`.
    fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            match self.tcp.write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads until the socket is drained (the readiness is edge-triggered) or the input buffer
    /// is full; `true` when the session is over.
    fn readable(&mut self) -> io::Result<bool> {
        loop {
            if self.end == self.input.len() {
                // Full: the core consumes at least a line-limit's worth, so this is rare.
                return self.process();
            }
            match self.tcp.read(&mut self.input[self.end..]) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    self.end += n;
                    if self.process()? {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// A session on an accepted connection: registered, greeted (the 220 goes out on the first
/// writable event).
fn open(mut tcp: TcpStream, token: Token, poll: &Poll, config: Config) -> io::Result<Conn> {
    tcp.set_nodelay(true)?;
    poll.registry().register(&mut tcp, token, Interest::READABLE | Interest::WRITABLE)?;
    let mut core = Box::new(Server::new(config));
    core.greet("ESMTP evloop-sink").map_err(io::Error::other)?;
    let size = config.min_input_buffer().max(64 * 1024);
    let mut c = Conn { tcp, core, input: vec![0; size], start: 0, end: 0, pending: Vec::new(), deadline: None };
    c.queue();
    c.deadline = c.core.timeout().map(|t| Instant::now() + t);
    Ok(c)
}

fn main() -> io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| io::Error::other("usage: evloop-sink ADDR:PORT"))?;
    let config = Config::default();
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    // The address bound (port 0 picks one): a line on stdout once the listener is ready.
    println!("{}", listener.local_addr()?);
    io::stdout().flush()?;
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next = 0usize;
    let mut events = Events::with_capacity(256);
    loop {
        let now = Instant::now();
        let wait = conns.values().filter_map(|c| c.deadline).min().map(|d| d.saturating_duration_since(now));
        match poll.poll(&mut events, wait) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => r?,
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            let id = next;
                            next = next.wrapping_add(1) % (usize::MAX - 1);
                            // A connection that fails here (reset before we got to it) is
                            // dropped; the others go on.
                            if let Ok(c) = open(tcp, Token(id), &poll, config) {
                                conns.insert(id, c);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        // Out of descriptors and the like: try again on the next wake-up.
                        Err(_) => break,
                    }
                }
                continue;
            }
            let id = ev.token().0;
            let Some(c) = conns.get_mut(&id) else { continue };
            let over = (if ev.is_readable() { c.readable() } else { Ok(false) })
                .and_then(|over| c.flush().map(|()| over))
                .unwrap_or(true);
            if over {
                // The last replies (221, 421) go out as far as the send buffer takes them.
                let _ = c.flush();
                if let Some(mut c) = conns.remove(&id) {
                    let _ = poll.registry().deregister(&mut c.tcp);
                }
            }
        }
        // Timeouts: 421 4.4.2 and close.
        let now = Instant::now();
        let expired: Vec<usize> =
            conns.iter().filter(|(_, c)| c.deadline.is_some_and(|d| d <= now)).map(|(&id, _)| id).collect();
        for id in expired {
            if let Some(mut c) = conns.remove(&id) {
                c.core.handle_timeout();
                c.queue();
                let _ = c.flush();
                let _ = poll.registry().deregister(&mut c.tcp);
            }
        }
    }
}
