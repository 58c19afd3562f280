//! A `no_std`, sans-IO, heap-free SMTP protocol core.
//!
//! `smtp-proto` knows SMTP and nothing else: **no sockets, no clock, no TLS, no files, no
//! queue, no heap** (unless you choose `server::Heap`). You feed it bytes; it hands back events
//! (a command, a piece of message content, ...) borrowing from your buffer, waits for your
//! decision where policy is involved, and gives you the reply bytes to send. The same core runs
//! under blocking `std::net` (`smtp-std`), tokio (`examples/tokio_server.rs`), or on a
//! microcontroller.
//!
//! ```text
//!  socket/TLS ──bytes──▶ Server::handle_input ──Event<'b>──▶ application (policy, storage)
//!  socket/TLS ◀─bytes── Server::poll_transmit  ◀──accept()/reply()── application
//! ```
//!
//! # Modules
//! - [`parse`]: pure, zero-copy parsers for command lines, paths and ESMTP parameters.
//! - [`proxy`]: the PROXY protocol header (v1 and v2) a load balancer sends before SMTP.
//! - [`reply`]: the one table of reply codes with enhanced status codes, and the reply writer.
//! - [`ehlo`]: capabilities and the EHLO response.
//! - [`data`]: the DATA path — streaming dot-unstuffing (receive) and dot-stuffing (send).
//! - [`sasl`]: base64 and the SASL payloads of AUTH.
//! - [`server`]: the server state machine.
//! - [`client`]: the client state machine (EHLO/HELO, STARTTLS, AUTH, pipelined MAIL/RCPT/DATA
//!   or BDAT, per-recipient results) and, in [`parse::reply`], the streaming reply parser.
//! - [`milter`]: the milter protocol (Sendmail/Postfix mail filters, version 6), MTA side: a
//!   sans-IO client for rspamd, OpenDKIM, OpenDMARC, clamav-milter.
//! - `testing` (feature `std`): a scripted-session driver and a client-vs-server pair driver,
//!   for testing code built on the core.
//!
//! # The run loop
//!
//! **After every call that can produce output, drain [`server::Server::poll_transmit`] before
//! reading the socket again.** Keep unconsumed input in your buffer and feed it again.
//!
//! ```
//! use smtp_proto::server::{Config, Event, Progress, Server};
//!
//! let mut server = Server::new(Config::new("mx.example.org"));
//! server.greet("ESMTP ready").unwrap();
//!
//! // What a client sends (a real binding reads it from a socket, piece by piece).
//! let mut input: Vec<u8> =
//!     b"EHLO client.example\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n".to_vec();
//! let mut sent = Vec::new();
//! let mut message = Vec::new();
//! let mut out = [0u8; 1024];
//! let mut step = 0;
//! loop {
//!     let r = server.handle_input(&input).unwrap();
//!     let mut need_input = false;
//!     match r.progress {
//!         Progress::Event(Event::Data(chunk)) => message.extend_from_slice(chunk),
//!         Progress::Event(ev) if ev.needs_decision() => server.accept().unwrap(), // your policy here
//!         Progress::Event(_) => {}
//!         Progress::NeedInput | Progress::Flush => need_input = true,
//!         Progress::Closed => break,
//!     }
//!     input.drain(..r.consumed);
//!     if need_input {
//!         // Drain the replies, then "read the socket".
//!         loop {
//!             let n = server.poll_transmit(&mut out);
//!             if n == 0 { break; }
//!             sent.extend_from_slice(&out[..n]);
//!         }
//!         step += 1;
//!         match step {
//!             1 => input.extend_from_slice(b"Subject: hi\r\n\r\n..hello\r\n.\r\n"),
//!             2 => input.extend_from_slice(b"QUIT\r\n"),
//!             _ => break,
//!         }
//!     }
//! }
//! while let n @ 1.. = server.poll_transmit(&mut out) {
//!     sent.extend_from_slice(&out[..n]);
//! }
//! assert_eq!(message, b"Subject: hi\r\n\r\n.hello\r\n");
//! let sent = String::from_utf8(sent).unwrap();
//! assert!(sent.starts_with("220 mx.example.org ESMTP ready\r\n250-mx.example.org\r\n"));
//! assert!(sent.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Message accepted\r\n221 2.0.0 mx.example.org Bye\r\n"));
//! ```
//!
//! # Memory
//!
//! A server session is about 600 bytes of state plus an output queue and a SASL buffer, kept
//! where its [`server::Buffers`] say: inline with [`server::Server::new`] (4 KiB + 9 KiB,
//! 13.6 KiB in all), in slices you lend ([`server::Lent`]: an output queue of at least
//! [`server::MIN_OUTPUT_BUFFER`] = 1200 octets, a SASL buffer as long as the longest
//! credentials you take), or with the `alloc` feature on the heap (`server::Heap`, the SASL
//! buffer allocated only while an AUTH exchange runs). See [`server::Server::with_buffers`].
//!
//! # Security notes
//! - **SMTP smuggling**: only `CRLF . CRLF` ends a message, at any split of the input. A bare
//!   CR or LF in content is rejected by default (`550 5.5.2` once, after the real end; the
//!   session never goes back to commands mid-message), or passed through unchanged by policy.
//!   See [`data`]. BDAT content is held to the same policy, at any chunking (`550 5.5.2` to the
//!   chunk where the bare CR or LF shows; the rest of the transaction's chunks are consumed and
//!   answered `503 5.5.1`).
//! - **STARTTLS command injection** (CVE-2011-0411): plaintext after the STARTTLS line is
//!   discarded and reported ([`server::Event::PlaintextDiscarded`]), never executed; after the
//!   handshake the session starts over before EHLO.
//! - **Synchronisation**: bytes before the greeting or right after the DATA line are answered
//!   `554 5.5.0` and the session closes (configurable).
//! - **Limits**: command line, AUTH line, text line, message size, recipients, errors and junk
//!   commands are explicit in [`server::Config`]; an over-long line is discarded, not buffered.
//! - **No panics on input**: every parser and state machine is fuzzed (`fuzz/`).
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod client;
pub mod data;
pub mod ehlo;
// The one module with `unsafe` (see its documentation).
#[allow(unsafe_code)]
mod fast;
pub mod milter;
pub mod parse;
pub mod proxy;
pub mod reply;
pub mod sasl;
pub mod server;
#[cfg(feature = "std")]
pub mod testing;

pub use reply::{EnhancedCode, Reply};
pub use server::{Config, Event, Progress, Server};
