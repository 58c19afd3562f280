//! Milters over sockets: one message checked by a mail filter (rspamd's proxy worker in milter
//! mode, OpenDKIM, OpenDMARC, clamav-milter...) over TCP or a Unix socket.
//!
//! Like [`crate::lmtp`], this module holds no protocol logic: the sans-IO
//! [`smtp_proto::milter::Client`] writes the packets and reads the answers; here they move
//! over a socket with a timeout on each read and each write (a `SMFIR_PROGRESS` answer
//! restarts the wait, as every read does).
//!
//! **One connection per message**: [`check`] connects, negotiates, sends the connect, HELO,
//! MAIL and RCPT stages with their macros — all at the end of the data, in one go, as Postfix
//! can — then DATA, the header fields, the body in chunks of at most 64 KiB streamed from a
//! reader (never held whole), the end of the message, and quits. A refusal at any stage
//! (also at RCPT, where the recipient was already accepted: the message as a whole is then
//! refused with that answer) ends the exchange. What the milter asks for comes back as an
//! [`Outcome`]: the verdict and, when the message goes on, the header edits, the quarantine
//! reason and the other modifications; a replacement body is handed, chunk by chunk, to the
//! caller's sink (so it can be spooled to a file).
//!
//! ```no_run
//! use smtp_std::milter::{check, MilterAddress, Message, Verdict};
//! let address: MilterAddress = "127.0.0.1:11332".parse()?;
//! let message = Message {
//!     sender: "alice@example.net".into(),
//!     rcpts: vec!["bob@example.org".into()],
//!     ..Message::new("mx.example.org", "Q1")
//! };
//! let headers = [(&b"Subject"[..], &b" hello"[..])];
//! let mut body = &b"Hi Bob\r\n"[..];
//! let outcome = check(&address, std::time::Duration::from_secs(30), &message, &headers, &mut body, &mut |_| Ok(()))?;
//! match outcome.verdict {
//!     Verdict::Accept => println!("apply {} header edits", outcome.header_edits.len()),
//!     other => println!("{other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use smtp_proto::milter::{self as core, Family, Modification, Progress, Protocol, Stage, MAX_CHUNK};

use crate::handler::OwnedReply;

/// Where a milter listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MilterAddress {
    /// `host:port`.
    Tcp(String),
    /// The path of a Unix stream socket.
    Unix(PathBuf),
}

impl MilterAddress {
    /// Parses an address: `/path` (or `unix:/path`) is a Unix socket, anything else
    /// `host:port` (or `inet:host:port`, as Postfix writes it).
    ///
    /// ```
    /// use smtp_std::milter::MilterAddress;
    /// assert_eq!(MilterAddress::parse("127.0.0.1:11332"), Ok(MilterAddress::Tcp("127.0.0.1:11332".into())));
    /// assert_eq!(MilterAddress::parse("unix:/run/opendkim.sock"), Ok(MilterAddress::Unix("/run/opendkim.sock".into())));
    /// assert!(MilterAddress::parse("localhost").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:").or(s.starts_with('/').then_some(s)) {
            return if path.starts_with('/') {
                Ok(MilterAddress::Unix(path.into()))
            } else {
                Err(format!("milter address {s:?}: a Unix socket needs an absolute path"))
            };
        }
        let addr = s.strip_prefix("inet:").unwrap_or(s);
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(MilterAddress::Tcp(addr.to_owned()))
            }
            _ => Err(format!("milter address {s:?}: expected host:port or the absolute path of a Unix socket")),
        }
    }
}

impl FromStr for MilterAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl fmt::Display for MilterAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MilterAddress::Tcp(a) => f.write_str(a),
            MilterAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What the milter is told about the message (the connect, HELO, MAIL, RCPT and DATA stages
/// and their macros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Our host name (macro `j`).
    pub hostname: String,
    /// Macro `{daemon_name}`.
    pub daemon_name: String,
    /// The queue id (macro `i`).
    pub queue_id: String,
    /// The SMTP client's address, if it came over TCP.
    pub client: Option<SocketAddr>,
    /// The SMTP client's host name (`[192.0.2.1]` when not known).
    pub client_name: String,
    /// The HELO/EHLO argument.
    pub helo: Option<String>,
    /// The authenticated user (macro `{auth_authen}`), if any.
    pub auth: Option<String>,
    /// The envelope sender, without angle brackets (empty: the null sender).
    pub sender: String,
    /// ESMTP arguments of MAIL (`SIZE=1234`, `BODY=8BITMIME`, `SMTPUTF8`).
    pub mail_args: Vec<String>,
    /// The accepted recipients, without angle brackets.
    pub rcpts: Vec<String>,
}

impl Message {
    /// A message of no one to no one, as received by `hostname` under `queue_id`.
    pub fn new(hostname: &str, queue_id: &str) -> Self {
        Self {
            hostname: hostname.to_owned(),
            daemon_name: "smtp-std".to_owned(),
            queue_id: queue_id.to_owned(),
            client: None,
            client_name: "localhost".to_owned(),
            helo: None,
            auth: None,
            sender: String::new(),
            mail_args: Vec::new(),
            rcpts: Vec::new(),
        }
    }
}

/// The milter's final word on the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted (continue or accept): apply the [`Outcome`]'s changes and go on.
    Accept,
    /// Refused: give the SMTP client this reply (5xx for `SMFIR_REJECT`, 4xx for
    /// `SMFIR_TEMPFAIL`, the milter's own for `SMFIR_REPLYCODE`; 421 for a shutdown or a
    /// connection failure). Nothing of the message is kept.
    Refuse(OwnedReply),
    /// Accept the message and drop it (`SMFIR_DISCARD`).
    Discard,
}

/// A header edit asked for at the end of the message, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Append the field.
    Add {
        /// Name.
        name: String,
        /// Value (folded lines joined by LF or CRLF, each followed by white space).
        value: Vec<u8>,
    },
    /// Insert the field before the `index`-th field (0: on top; past the end: appended).
    Insert {
        /// 0-based position.
        index: u32,
        /// Name.
        name: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Change the `index`-th field named `name` (1-based, names without case); an empty
    /// value deletes it; past the last such field, the field is appended.
    Change {
        /// 1-based occurrence of the name.
        index: u32,
        /// Name.
        name: String,
        /// New value; empty: delete.
        value: Vec<u8>,
    },
}

/// What one milter said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// The stage that gave it.
    pub stage: Stage,
    /// Header edits (only with [`Verdict::Accept`]).
    pub header_edits: Vec<HeaderEdit>,
    /// Values start with the space after the colon (the milter negotiated
    /// `SMFIP_HDR_LEADSPC`): write `Name:value`, not `Name: value`.
    pub leading_space: bool,
    /// The body was replaced: the new one went to the sink given to [`check`].
    pub body_replaced: bool,
    /// `SMFIR_QUARANTINE`: hold the message (file it as junk), with this reason.
    pub quarantine: Option<String>,
    /// Recipient and sender changes asked for (`+`, `-`, `e` as the protocol letter and the
    /// argument), reported to the caller, which may refuse them.
    pub envelope_changes: Vec<(char, String)>,
}

/// Why a milter gave no verdict: the caller applies its default action.
#[derive(Debug)]
pub enum MilterError {
    /// Connecting, reading or writing failed (a refused connection, a reset, a timeout).
    Io {
        /// The milter.
        milter: MilterAddress,
        /// What was being done.
        doing: &'static str,
        /// The error (`TimedOut`/`WouldBlock` for a timeout).
        source: io::Error,
    },
    /// The milter broke the protocol.
    Protocol {
        /// The milter.
        milter: MilterAddress,
        /// How.
        error: core::Error,
    },
    /// The milter closed the connection while an answer was awaited.
    Closed {
        /// The milter.
        milter: MilterAddress,
        /// The stage that was waiting.
        stage: Option<Stage>,
    },
}

impl MilterError {
    /// Whether it was a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, MilterError::Io { source, .. } if matches!(source.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock))
    }
}

impl fmt::Display for MilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MilterError::Io { milter, doing, source } if self.is_timeout() => {
                write!(f, "milter {milter}: timed out while {doing} ({source})")
            }
            MilterError::Io { milter, doing, source } => write!(f, "milter {milter}: {doing}: {source}"),
            MilterError::Protocol { milter, error } => write!(f, "milter {milter}: {error}"),
            MilterError::Closed { milter, stage: Some(stage) } => {
                write!(f, "milter {milter}: connection closed while waiting for the answer to {stage:?}")
            }
            MilterError::Closed { milter, stage: None } => write!(f, "milter {milter}: connection closed"),
        }
    }
}

impl std::error::Error for MilterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MilterError::Io { source, .. } => Some(source),
            MilterError::Protocol { error, .. } => Some(error),
            MilterError::Closed { .. } => None,
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn connect(address: &MilterAddress, timeout: Duration) -> io::Result<Stream> {
    let stream = match address {
        MilterAddress::Tcp(a) => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            let mut found = None;
            for addr in a.to_socket_addrs()? {
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(s) => {
                        found = Some(s);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            let s = found.ok_or(last)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            Stream::Tcp(s)
        }
        MilterAddress::Unix(p) => {
            let s = UnixStream::connect(p)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            Stream::Unix(s)
        }
    };
    Ok(stream)
}

/// One connection: the machine, the socket, the unconsumed input.
struct Conn<'a> {
    milter: &'a MilterAddress,
    machine: core::Client,
    stream: Stream,
    input: Vec<u8>,
    filled: usize,
    out: Vec<u8>,
}

/// What a wait for an answer gave.
enum Answer {
    Verdict(Stage, OwnedVerdict),
    /// A stage that is not answered (not sent, or no reply asked for).
    None,
}

#[derive(Debug)]
enum OwnedVerdict {
    Continue,
    Accept,
    Discard,
    Skip,
    Refuse(OwnedReply),
}

impl<'a> Conn<'a> {
    fn io(&self, doing: &'static str) -> impl FnOnce(io::Error) -> MilterError + 'a {
        let milter = self.milter;
        move |source| MilterError::Io { milter: milter.clone(), doing, source }
    }

    fn api(&self, e: core::ApiError) -> MilterError {
        // A request the machine refused is a bug here; report it as the milter's session
        // failing rather than panicking.
        MilterError::Io { milter: self.milter.clone(), doing: "building a request", source: io::Error::other(e) }
    }

    /// Sends the `n` octets a request wrote, then waits for the answer if one is due.
    fn send(
        &mut self,
        n: Result<usize, core::ApiError>,
        modifications: &mut Collect<'_>,
    ) -> Result<Answer, MilterError> {
        let n = n.map_err(|e| self.api(e))?;
        let err = self.io("sending");
        self.stream.write_all(&self.out[..n]).map_err(err)?;
        self.wait(modifications)
    }

    fn wait(&mut self, modifications: &mut Collect<'_>) -> Result<Answer, MilterError> {
        while let Some(stage) = self.machine.awaiting() {
            let r = self
                .machine
                .handle_input(&self.input[..self.filled])
                .map_err(|error| MilterError::Protocol { milter: self.milter.clone(), error })?;
            let consumed = r.consumed;
            let mut answer = None;
            match r.progress {
                Progress::NeedInput => {
                    if self.filled == self.input.len() {
                        // Cannot happen: the buffer holds the largest packet accepted.
                        return Err(MilterError::Protocol {
                            milter: self.milter.clone(),
                            error: core::Error::Oversized { len: self.filled as u32, max: self.input.len() as u32 },
                        });
                    }
                    let err = self.io("waiting for an answer");
                    let n = self.stream.read(&mut self.input[self.filled..]).map_err(err)?;
                    if n == 0 {
                        return Err(MilterError::Closed { milter: self.milter.clone(), stage: Some(stage) });
                    }
                    self.filled += n;
                    continue;
                }
                Progress::Event(core::Event::Negotiated { options, macros }) => {
                    tracing::debug!(milter = %self.milter, ?options, ?macros, "milter negotiated");
                    modifications.leading_space = options.protocol.contains(Protocol::HEADER_LEADING_SPACE);
                }
                Progress::Event(core::Event::Progress) => {}
                Progress::Event(core::Event::Modification(m)) => modifications.take(m)?,
                Progress::Event(core::Event::Verdict { stage, verdict }) => {
                    answer = Some(Answer::Verdict(stage, owned(verdict)));
                }
                Progress::Event(_) => {}
            }
            self.input.copy_within(consumed..self.filled, 0);
            self.filled -= consumed;
            if let Some(a) = answer {
                return Ok(a);
            }
        }
        Ok(Answer::None)
    }
}

fn owned(v: core::Verdict<'_>) -> OwnedVerdict {
    match v {
        core::Verdict::Continue => OwnedVerdict::Continue,
        core::Verdict::Accept => OwnedVerdict::Accept,
        core::Verdict::Discard => OwnedVerdict::Discard,
        core::Verdict::Skip => OwnedVerdict::Skip,
        core::Verdict::Reject => OwnedVerdict::Refuse(OwnedReply::new(550, Some((5, 7, 1)), "Command rejected")),
        core::Verdict::TempFail => {
            OwnedVerdict::Refuse(OwnedReply::new(451, Some((4, 7, 1)), "Service unavailable - try again later"))
        }
        core::Verdict::ReplyCode(r) => {
            let text = String::from_utf8_lossy(r.text);
            let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            // (4xx → 4.0.0, 5xx → 5.0.0 when the milter gave no enhanced code.)
            let enhanced = r.enhanced.map_or(((r.code / 100) as u8, 0, 0), |e| (e.class, e.subject, e.detail));
            OwnedVerdict::Refuse(OwnedReply::new(r.code, Some(enhanced), text.trim().to_owned()))
        }
        core::Verdict::Shutdown | core::Verdict::ConnectionFailure => {
            OwnedVerdict::Refuse(OwnedReply::new(421, Some((4, 7, 0)), "Server closing connection"))
        }
        _ => OwnedVerdict::Refuse(OwnedReply::new(451, Some((4, 7, 1)), "Service unavailable - try again later")),
    }
}

/// The modifications of the end of the message, as they come.
struct Collect<'s> {
    edits: Vec<HeaderEdit>,
    quarantine: Option<String>,
    envelope: Vec<(char, String)>,
    body_replaced: bool,
    leading_space: bool,
    sink: &'s mut dyn FnMut(&[u8]) -> io::Result<()>,
    milter: &'s MilterAddress,
}

impl Collect<'_> {
    fn take(&mut self, m: Modification<'_>) -> Result<(), MilterError> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match m {
            Modification::AddHeader { name, value } => {
                self.edits.push(HeaderEdit::Add { name: text(name), value: value.to_vec() })
            }
            Modification::InsertHeader { index, name, value } => {
                self.edits.push(HeaderEdit::Insert { index, name: text(name), value: value.to_vec() })
            }
            Modification::ChangeHeader { index, name, value } => {
                self.edits.push(HeaderEdit::Change { index, name: text(name), value: value.to_vec() })
            }
            Modification::AddRecipient { rcpt, .. } => self.envelope.push(('+', text(rcpt))),
            Modification::DeleteRecipient { rcpt } => self.envelope.push(('-', text(rcpt))),
            Modification::ChangeFrom { from, .. } => self.envelope.push(('e', text(from))),
            Modification::ReplaceBody(chunk) => {
                self.body_replaced = true;
                (self.sink)(chunk).map_err(|source| MilterError::Io {
                    milter: self.milter.clone(),
                    doing: "spooling the replacement body",
                    source,
                })?;
            }
            Modification::Quarantine { reason } => self.quarantine = Some(text(reason)),
            _ => {}
        }
        Ok(())
    }
}

/// The actions offered: header edits, the body, quarantine, macro lists. Recipient and
/// sender changes are offered too (reported in [`Outcome::envelope_changes`]), since some
/// milters refuse to work without them; the caller decides what to do with them.
fn offer() -> core::Config {
    core::Config::new()
}

/// Runs one message through the milter at `address` (see the [module docs](self)):
/// `headers` are the message's header fields as `(name, value)` with the value as it follows
/// the colon (its first space included; folded lines joined by CRLF), `body` its body (CRLF
/// line ends). A replacement body goes to `replace_body` chunk by chunk. Each connect, read
/// and write waits at most `timeout`.
pub fn check(
    address: &MilterAddress,
    timeout: Duration,
    message: &Message,
    headers: &[(&[u8], &[u8])],
    body: &mut dyn Read,
    replace_body: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<Outcome, MilterError> {
    let stream = connect(address, timeout).map_err(|source| MilterError::Io {
        milter: address.clone(),
        doing: "connecting",
        source,
    })?;
    let mut conn = Conn {
        milter: address,
        machine: core::Client::new(offer()),
        stream,
        input: vec![0; 4 + core::MAX_PACKET],
        filled: 0,
        out: vec![0; 4096],
    };
    let mut collect = Collect {
        edits: Vec::new(),
        quarantine: None,
        envelope: Vec::new(),
        body_replaced: false,
        leading_space: false,
        sink: replace_body,
        milter: address,
    };
    let result = converse(&mut conn, message, headers, body, &mut collect);
    // Quit in any case (a milter keeps no state for a connection that just closes, but
    // libmilter logs less with a quit).
    if let Ok(n) = conn.machine.quit(&mut conn.out) {
        let _ = conn.stream.write_all(&conn.out[..n]);
    }
    let (stage, verdict) = result?;
    let accepted = matches!(verdict, Verdict::Accept);
    Ok(Outcome {
        verdict,
        stage,
        leading_space: collect.leading_space,
        header_edits: if accepted { collect.edits } else { Vec::new() },
        body_replaced: accepted && collect.body_replaced,
        quarantine: collect.quarantine.filter(|_| accepted),
        envelope_changes: if accepted { collect.envelope } else { Vec::new() },
    })
}

fn converse(
    conn: &mut Conn<'_>,
    m: &Message,
    headers: &[(&[u8], &[u8])],
    body: &mut dyn Read,
    collect: &mut Collect<'_>,
) -> Result<(Stage, Verdict), MilterError> {
    // Each stage: a verdict other than continue ends the exchange (a refused recipient
    // refuses the message: the RCPT was answered long ago).
    macro_rules! stage {
        ($request:expr) => {{
            let n = $request;
            match conn.send(n, collect)? {
                Answer::None | Answer::Verdict(_, OwnedVerdict::Continue) => {}
                Answer::Verdict(stage, OwnedVerdict::Accept) => return Ok((stage, Verdict::Accept)),
                Answer::Verdict(stage, OwnedVerdict::Discard) => return Ok((stage, Verdict::Discard)),
                Answer::Verdict(stage, OwnedVerdict::Refuse(r)) => return Ok((stage, Verdict::Refuse(r))),
                Answer::Verdict(stage, OwnedVerdict::Skip) => {
                    // Only a body chunk may be skipped; the machine refuses it elsewhere.
                    let _ = stage;
                }
            }
        }};
    }
    let c = &mut conn.machine;
    let out = &mut conn.out;
    let n = c.negotiate(out);
    stage!(n);
    let ip = m.client.map(|a| a.ip().to_string());
    let ip = ip.as_deref().unwrap_or("");
    let underscore = format!("{} [{ip}]", m.client_name);
    let connect_macros =
        [("j", m.hostname.as_str()), ("_", &underscore), ("{daemon_name}", &m.daemon_name), ("{client_addr}", ip)];
    let family = m.client.map_or(Family::Unknown, Family::Inet);
    let n = conn.machine.connect(&connect_macros, m.client_name.as_bytes(), family, &mut conn.out);
    stage!(n);
    if let Some(helo) = &m.helo {
        let n = conn.machine.helo(&[], helo, &mut conn.out);
        stage!(n);
    }
    let sender = format!("<{}>", m.sender);
    let args: Vec<&str> = m.mail_args.iter().map(String::as_str).collect();
    let mut mail_macros = vec![("{mail_addr}", m.sender.as_str())];
    if let Some(user) = &m.auth {
        mail_macros.push(("{auth_authen}", user));
    }
    let n = conn.machine.mail(&mail_macros, &sender, &args, &mut conn.out);
    stage!(n);
    for rcpt in &m.rcpts {
        let n = conn.machine.rcpt(&[("{rcpt_addr}", rcpt)], &format!("<{rcpt}>"), &[], &mut conn.out);
        stage!(n);
    }
    let queue = [("i", m.queue_id.as_str())];
    let n = conn.machine.data(&queue, &mut conn.out);
    stage!(n);
    let leading = conn.machine.negotiated().is_some_and(|o| o.protocol.contains(Protocol::HEADER_LEADING_SPACE));
    for (name, value) in headers {
        let value = header_value(value, leading);
        let needed = 16 + name.len() + value.len();
        if conn.out.len() < needed {
            conn.out.resize(needed, 0);
        }
        let n = conn.machine.header(name, &value, &mut conn.out);
        stage!(n);
    }
    let n = conn.machine.end_of_headers(&queue, &mut conn.out);
    stage!(n);
    let mut chunk = vec![0u8; MAX_CHUNK];
    loop {
        let len = read_full(body, &mut chunk).map_err(|source| MilterError::Io {
            milter: conn.milter.clone(),
            doing: "reading the message",
            source,
        })?;
        if len == 0 {
            break;
        }
        let Some(head) = conn.machine.body(len).map_err(|e| conn.api(e))? else { break };
        let err = conn.io("sending the body");
        conn.stream.write_all(&head).and_then(|()| conn.stream.write_all(&chunk[..len])).map_err(err)?;
        match conn.wait(collect)? {
            Answer::None | Answer::Verdict(_, OwnedVerdict::Continue | OwnedVerdict::Skip) => {}
            Answer::Verdict(stage, OwnedVerdict::Accept) => return Ok((stage, Verdict::Accept)),
            Answer::Verdict(stage, OwnedVerdict::Discard) => return Ok((stage, Verdict::Discard)),
            Answer::Verdict(stage, OwnedVerdict::Refuse(r)) => return Ok((stage, Verdict::Refuse(r))),
        }
        if len < chunk.len() {
            break;
        }
    }
    let n = conn.machine.end_of_message(&queue, &mut conn.out);
    match conn.send(n, collect)? {
        Answer::Verdict(stage, OwnedVerdict::Refuse(r)) => Ok((stage, Verdict::Refuse(r))),
        Answer::Verdict(stage, OwnedVerdict::Discard) => Ok((stage, Verdict::Discard)),
        Answer::Verdict(stage, _) => Ok((stage, Verdict::Accept)),
        Answer::None => Ok((Stage::EndOfMessage, Verdict::Accept)),
    }
}

/// A header value as the milter gets it: without the space after the colon (unless it
/// asked for it), folded lines joined by LF (as Sendmail and Postfix send them), NULs
/// (which would end the field early) as spaces.
fn header_value(value: &[u8], leading_space: bool) -> Vec<u8> {
    let mut v = value;
    if !leading_space {
        while let [b' ' | b'\t', rest @ ..] = v {
            v = rest;
        }
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'\r' if v.get(i + 1) == Some(&b'\n') => {}
            0 => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    while out.last().is_some_and(|b| matches!(b, b'\r' | b'\n')) {
        out.pop();
    }
    out
}

/// Reads until `buf` is full or the input ends.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_as_sent() {
        assert_eq!(header_value(b" hello", false), b"hello");
        assert_eq!(header_value(b" a\r\n\tb\r\n", false), b"a\n\tb");
        assert_eq!(header_value(b" a\0b", true), b" a b");
    }

    #[test]
    fn addresses() {
        assert_eq!(MilterAddress::parse("inet:localhost:8891"), Ok(MilterAddress::Tcp("localhost:8891".into())));
        assert_eq!(MilterAddress::parse("/run/x.sock"), Ok(MilterAddress::Unix("/run/x.sock".into())));
        assert!(MilterAddress::parse("unix:run/x.sock").is_err());
        assert!(MilterAddress::parse("127.0.0.1:0").is_err());
        assert_eq!(MilterAddress::Unix("/a".into()).to_string(), "unix:/a");
    }
}
