//! Blocking `std::net` binding of [`smtp_proto`]: an embeddable SMTP server (plain, STARTTLS
//! and implicit TLS with rustls), a blocking SMTP and LMTP [`client`] ([`send`], [`lmtp`]) and,
//! on top of them, a mail server (the module `mta`, behind the default feature `mta`) and the
//! `smtp-std` program.
//!
//! # Two layers
//!
//! | layer | modules | dependencies |
//! |---|---|---|
//! | the binding (always) | [`Server`], [`Options`], [`Handler`], [`limits`], [`proxy`], [`tls`], [`client`], [`lmtp`], [`milter`], [`received`] | smtp-proto, rustls, webpki-roots, tracing, socket2, nix |
//! | the mail server (feature `mta`) | `mta::{config, accounts, mailbox, maildir, inbound, queue, srs, auth, deliver, privileges, mailserver}` | + serde, toml, argon2, bcrypt, sha-crypt, mail-auth, hickory-resolver, tokio, clap, ... |
//!
//! The binding never imports the mail server. `smtp-std = { default-features = false }` builds
//! the binding alone.
//!
//! This crate holds **no SMTP logic**: it moves bytes between sockets and the sans-IO core,
//! turns the core's per-state timeouts into socket read timeouts, and calls your [`Handler`]
//! for every decision the core leaves to the application. Syntax, sequencing, limits, the DATA
//! path (dot-unstuffing, the SMTP smuggling defence), STARTTLS command-injection defence and
//! the AUTH rules are all the core's.
//!
//! ```text
//!  TcpStream / rustls ──bytes──▶ smtp_proto::Server ──Event──▶ Handler (connect, helo, auth,
//!  TcpStream / rustls ◀─bytes── poll_transmit ◀──Decision──── mail_from, rcpt_to, data_*, close)
//! ```
//!
//! # Embedding
//!
//! One pool thread at a time waits for input, and serves whichever session has it, on its own
//! stack; a session that waits for its client parks without a thread (up to
//! [`Options::max_clients`] sessions). More threads join while the input outruns one (up to
//! one per core). The handler is cloned per connection, so `&mut self` holds per-connection
//! state, and it may block: call [`will_block`] first and another thread takes over the
//! waiting at once (else a watchdog starts one within a few milliseconds).
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::sync::{Arc, Mutex};
//! use smtp_std::{Decision, Handler, Options, Server, Session};
//!
//! #[derive(Clone, Default)]
//! struct Collect { body: Vec<u8>, inbox: Arc<Mutex<Vec<(Vec<String>, Vec<u8>)>>> }
//!
//! impl Handler for Collect {
//!     fn data_chunk(&mut self, _: &Session, chunk: &[u8]) -> std::io::Result<()> {
//!         self.body.extend_from_slice(chunk); // a real server streams to disk instead
//!         Ok(())
//!     }
//!     fn data_end(&mut self, s: &Session, _size: u64) -> Decision {
//!         let body = std::mem::take(&mut self.body);
//!         self.inbox.lock().unwrap().push((s.envelope.rcpt_to.clone(), body));
//!         Decision::Accept // only once the message is safe
//!     }
//! }
//!
//! let handler = Collect::default();
//! let inbox = handler.inbox.clone();
//! let mut server = Server::new(Options::new("mx.example.org"), handler);
//! let addr = server.listen("127.0.0.1:0")?;
//! let running = server.spawn();
//!
//! // A client, by hand.
//! let mut c = std::net::TcpStream::connect(addr)?;
//! let mut r = BufReader::new(c.try_clone()?);
//! let mut line = String::new();
//! for cmd in ["EHLO me", "MAIL FROM:<a@b.example>", "RCPT TO:<you@mx.example.org>", "DATA",
//!             "Subject: hi\r\n\r\nhello\r\n.", "QUIT"] {
//!     loop { // read the whole (multi-line) reply
//!         line.clear();
//!         r.read_line(&mut line)?;
//!         if line.len() < 4 || line.as_bytes()[3] == b' ' { break; }
//!     }
//!     write!(c, "{cmd}\r\n")?;
//! }
//! # let _ = r.read_line(&mut line);
//! running.shutdown()?;
//! assert_eq!(inbox.lock().unwrap()[0].1, b"Subject: hi\r\n\r\nhello\r\n");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Security notes
//! - **STARTTLS injection** (CVE-2011-0411): after the `220` to STARTTLS, the rest of the read
//!   buffer goes to the core, which reports it as [`proto::Event::PlaintextDiscarded`] (logged)
//!   and never executes it; only then does the handshake start.
//! - **AUTH in clear text** is refused (`538 5.7.11`) unless
//!   [`Options::allow_insecure_auth`]; passwords are never logged.
//! - **Timeouts and deadlines**: every wait for input is bounded by the core's timeout for the
//!   current state, and more, since an idle timeout alone lets a client drip a byte at a time
//!   forever: a command line must be complete within the command timeout of its first byte,
//!   and message data must arrive at [`Options::min_data_rate`] on average (1,024 octets/s)
//!   once the data timeout has passed since DATA/BDAT. They hold for parked sessions too (the
//!   poller wakes a session at the earliest of them). Past any of them the client gets
//!   `421 4.4.2`, the connection closes and a message in progress is dropped.
//! - **Concurrency cap**: past [`Options::max_clients`], `421 4.7.0` and close, no thread.
//! - **Per-client limits** ([`limits`]): connections at once and per minute, AUTH failures
//!   per hour (then a lockout), per client address (IPv6 by /64): `421 4.7.0` and close,
//!   everyone else still served.
//! - **PROXY protocol** only from [`Options::proxy_from`] networks, only as the first bytes and
//!   within [`Options::proxy_timeout`]; from anyone else it is not interpreted (see [`proxy`]).
//! - **Never a panic on peer input**; `#![forbid(unsafe_code)]`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod handler;
mod idle;
pub mod limits;
pub mod lmtp;
pub mod milter;
#[cfg(feature = "mta")]
pub mod mta;
mod options;
mod pool;
pub mod proxy;
pub mod received;
mod server;
mod session;
mod shared;
pub mod tls;

pub use client::{send, Delivery, SendError, SendOptions, SmtpClient, TlsMode};
pub use handler::{AuthRequest, Decision, Envelope, Handler, Limited, OwnedReply, Session, Sink};
pub use idle::will_block;
pub use options::{Options, DEFAULT_MIN_DATA_RATE, DEFAULT_PARK_AFTER, DEFAULT_SESSION_STACK};
pub use server::{ConfigHandle, Running, Server, ShutdownHandle};
pub use smtp_proto as proto;
