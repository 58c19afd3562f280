//! LMTP delivery (RFC 2033): hand a message to a local mail store — Dovecot's `lmtp`
//! service, Cyrus — over TCP or a Unix socket, and get one outcome per recipient.
//!
//! Like [`crate::client`], whose blocking session driver it reuses, this module holds no
//! protocol logic: the core [`smtp_proto::client::Client`] in LMTP mode
//! ([`Config::lmtp`](smtp_proto::client::Config::lmtp())) writes LHLO, MAIL, RCPT and DATA
//! (pipelined when the server offers PIPELINING), dot-stuffs the content with bare CR and bare
//! LF turned into CRLF (no smuggling sequence reaches the store), and maps each reply after the
//! end of data to its recipient. The message is streamed from a [`Read`] in
//! [`CHUNK`](crate::client::CHUNK)-sized pieces, never held whole. There is no TLS: LMTP is for
//! a local socket. BDAT is never used.
//!
//! # Outcomes
//! [`deliver`] returns one [`OwnedReply`] per recipient, in the order given:
//! - refused at RCPT: that refusal (nothing was sent for it);
//! - accepted at RCPT: the server's reply for it after the end of data — `2xx` delivered,
//!   `4xx` try again later, `5xx` failed for good;
//! - accepted at RCPT, but DATA refused: the reply to DATA.
//!
//! When every recipient is refused at RCPT no content is sent and the result is still `Ok`.
//! An [`LmtpError`] is a failure of the session as a whole; [`LmtpError::is_temporary`] says
//! whether to try again. **A failure after the end of data was sent** is
//! [`LmtpError::Interrupted`], with the replies that did arrive: a `2xx` there means the
//! message was delivered to that recipient, so do not deliver it there again.
//!
//! # Example
//! ```no_run
//! use smtp_std::lmtp::{self, LmtpOptions, LmtpTarget};
//!
//! let target: LmtpTarget = "/var/run/dovecot/lmtp".parse()?;
//! let options = LmtpOptions::new("mx.example.org");
//! let mut message = std::fs::File::open("queue/0001.eml")?;
//! let to = ["alice@example.org", "bob@example.org"];
//! match lmtp::deliver(&target, &options, "sender@example.net", &to, &mut message) {
//!     Ok(replies) => {
//!         for (rcpt, reply) in to.iter().zip(&replies) {
//!             println!("{rcpt}: {} {}", reply.code, reply.text); // 250 ... saved / 552 ... full
//!         }
//!     }
//!     Err(e) if e.is_temporary() => eprintln!("try again later: {e}"),
//!     Err(e) => eprintln!("failed: {e}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use smtp_proto::client::{self as core, Command, Config, ErrorKind, Event, Step, Timeouts};
use smtp_proto::parse::reply::ParsedReply;

use crate::client::{connect_tcp, Conn, Envelope, Flow, Reply, SendError, SmtpClient};
use crate::handler::OwnedReply;

/// The most recipients of one [`deliver`] call (the core's capacity per transaction); split
/// larger lists over several calls.
pub const MAX_RECIPIENTS: usize = 100;

/// The default of [`LmtpOptions::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the LMTP server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LmtpTarget {
    /// `host:port` (`[v6]:port` for an IPv6 address).
    Tcp(String),
    /// The path of a Unix stream socket (Dovecot: `/var/run/dovecot/lmtp`).
    Unix(PathBuf),
}

impl LmtpTarget {
    /// Parses a target: a value starting with `/` is a Unix socket path, anything else
    /// `host:port`. The prefixes `unix:` and `inet:` (as Postfix writes them) are accepted.
    ///
    /// ```
    /// use smtp_std::lmtp::LmtpTarget;
    /// assert_eq!(LmtpTarget::parse("/run/dovecot/lmtp"), Ok(LmtpTarget::Unix("/run/dovecot/lmtp".into())));
    /// assert_eq!(LmtpTarget::parse("127.0.0.1:24"), Ok(LmtpTarget::Tcp("127.0.0.1:24".into())));
    /// assert!(LmtpTarget::parse("localhost").is_err()); // no port
    /// ```
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            return if path.starts_with('/') {
                Ok(LmtpTarget::Unix(path.into()))
            } else {
                Err(format!("LMTP target {s:?}: a Unix socket needs an absolute path"))
            };
        }
        if s.starts_with('/') {
            return Ok(LmtpTarget::Unix(s.into()));
        }
        let addr = s.strip_prefix("inet:").unwrap_or(s);
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(LmtpTarget::Tcp(addr.to_owned()))
            }
            _ => Err(format!("LMTP target {s:?}: expected host:port or the absolute path of a Unix socket")),
        }
    }
}

impl FromStr for LmtpTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

/// `host:port`, or the socket's path.
impl fmt::Display for LmtpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LmtpTarget::Tcp(addr) => f.write_str(addr),
            LmtpTarget::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How to talk to the LMTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LmtpOptions {
    /// Our name in `LHLO`.
    pub lhlo: String,
    /// Bound on connecting (TCP) and on each wait: for the greeting, for each reply, for each
    /// write. Default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
}

impl LmtpOptions {
    /// Options saying `lhlo` in LHLO, with the default timeout.
    pub fn new(lhlo: &str) -> Self {
        Self { lhlo: lhlo.to_owned(), timeout: DEFAULT_TIMEOUT }
    }
}

impl Default for LmtpOptions {
    /// `LHLO localhost`, the default timeout.
    fn default() -> Self {
        Self::new("localhost")
    }
}

/// Why a delivery failed as a whole. [`LmtpError::is_temporary`] says whether to try again.
#[derive(Debug)]
#[non_exhaustive]
pub enum LmtpError {
    /// The request cannot be sent as it is: a control character or angle bracket in an
    /// address, no recipients, more than [`MAX_RECIPIENTS`], a non-ASCII address and a server
    /// without SMTPUTF8. Nothing was delivered.
    Invalid(String),
    /// The server cannot be reached (address, refused connection, missing socket).
    Connect {
        /// The target, as written.
        target: String,
        /// The last error.
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    Io {
        /// During this step.
        step: Step,
        /// The error.
        source: io::Error,
    },
    /// The server closed the connection.
    Closed {
        /// During this step.
        step: Step,
    },
    /// The server did not answer within [`LmtpOptions::timeout`].
    Timeout {
        /// The step.
        step: Step,
    },
    /// The server refused the session or the sender: its greeting ([`Step::Greeting`]), LHLO
    /// ([`Step::Lhlo`]), MAIL ([`Step::Mail`]), or a `421` (closing) at any step.
    Refused {
        /// Which step.
        step: Step,
        /// The server's reply (for a refused greeting, LHLO or `421`, its first line).
        reply: OwnedReply,
    },
    /// The server broke the protocol: a malformed reply, a reply nothing asked for.
    Protocol {
        /// The step.
        step: Step,
        /// What happened.
        detail: String,
    },
    /// Reading the message failed; the connection was dropped before the end of data, so
    /// nothing was delivered.
    Input(io::Error),
    /// The session failed after the end of data was sent: the message may have been delivered
    /// to some recipients.
    Interrupted {
        /// Per recipient, in order: its final reply if one arrived (a refusal at RCPT, or the
        /// reply after the data — `2xx`: delivered, do not deliver again), `None` if unknown
        /// (it may or may not have the message).
        replies: Vec<Option<OwnedReply>>,
        /// What went wrong.
        cause: Box<LmtpError>,
    },
}

impl LmtpError {
    /// Whether trying again later may succeed: a `4xx`, a connection problem, a timeout, a
    /// broken or interrupted session. Not for an invalid request, a `5xx`, or a failure to read
    /// the message (the caller's own input).
    pub fn is_temporary(&self) -> bool {
        match self {
            LmtpError::Connect { .. }
            | LmtpError::Io { .. }
            | LmtpError::Closed { .. }
            | LmtpError::Timeout { .. }
            | LmtpError::Protocol { .. }
            | LmtpError::Interrupted { .. } => true,
            LmtpError::Refused { reply, .. } => reply.code / 100 == 4,
            LmtpError::Invalid(_) | LmtpError::Input(_) => false,
        }
    }

    /// The server's reply, when the error carries one.
    pub fn reply(&self) -> Option<&OwnedReply> {
        match self {
            LmtpError::Refused { reply, .. } => Some(reply),
            LmtpError::Interrupted { cause, .. } => cause.reply(),
            _ => None,
        }
    }
}

fn step_name(step: Step) -> String {
    match step {
        Step::Greeting => "the greeting".into(),
        Step::Mail => "MAIL FROM".into(),
        Step::Rcpt => "RCPT TO".into(),
        Step::Body => "sending the message".into(),
        Step::DataEnd => "the replies after the data".into(),
        s => format!("{s:?}").to_uppercase(),
    }
}

impl fmt::Display for LmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reply = |r: &OwnedReply| match r.enhanced {
            Some(e) => format!("{} {e} {}", r.code, r.text),
            None => format!("{} {}", r.code, r.text),
        };
        match self {
            LmtpError::Invalid(what) => write!(f, "invalid LMTP request: {what}"),
            LmtpError::Connect { target, source } => write!(f, "cannot connect to LMTP server {target}: {source}"),
            LmtpError::Io { step, source } => write!(f, "LMTP connection failed during {}: {source}", step_name(*step)),
            LmtpError::Closed { step } => write!(f, "LMTP server closed the connection during {}", step_name(*step)),
            LmtpError::Timeout { step } => write!(f, "LMTP server timed out during {}", step_name(*step)),
            LmtpError::Refused { step, reply: r } => write!(f, "LMTP {} refused: {}", step_name(*step), reply(r)),
            LmtpError::Protocol { step, detail } => {
                write!(f, "LMTP protocol error during {}: {detail}", step_name(*step))
            }
            LmtpError::Input(e) => write!(f, "cannot read the message: {e}"),
            LmtpError::Interrupted { replies, cause } => {
                let known = replies.iter().filter(|r| r.is_some()).count();
                write!(f, "{cause} (after the end of data; {known} of {} outcomes known)", replies.len())
            }
        }
    }
}

impl std::error::Error for LmtpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LmtpError::Connect { source, .. } | LmtpError::Io { source, .. } | LmtpError::Input(source) => Some(source),
            LmtpError::Interrupted { cause, .. } => Some(&**cause),
            _ => None,
        }
    }
}

/// Delivers `message` from `mail_from` (`""` for `<>`) to `recipients` over LMTP: connect,
/// LHLO, MAIL, RCPT..., DATA, the content streamed, one reply per accepted recipient, QUIT.
/// Returns one reply per recipient, in order (see the [module docs](self#outcomes)).
///
/// The request is checked before connecting ([`LmtpError::Invalid`]).
pub fn deliver<S: AsRef<str>>(
    target: &LmtpTarget,
    options: &LmtpOptions,
    mail_from: &str,
    recipients: &[S],
    message: &mut dyn Read,
) -> Result<Vec<OwnedReply>, LmtpError> {
    let to: Vec<&str> = recipients.iter().map(AsRef::as_ref).collect();
    Envelope::new(mail_from, to.iter().copied()).validate().map_err(|e| match e {
        SendError::Invalid(what) => LmtpError::Invalid(what),
        e => LmtpError::Invalid(e.to_string()),
    })?;
    if to.len() > MAX_RECIPIENTS {
        return Err(LmtpError::Invalid(format!("{} recipients, at most {MAX_RECIPIENTS} per delivery", to.len())));
    }
    let mut session = connect(target, options)?;
    let replies = transaction(&mut session, mail_from, &to, message)?;
    // The outcomes are final: a failed QUIT changes nothing.
    let _ = session.quit_inner();
    Ok(replies)
}

/// Connects and waits for the greeting and the reply to LHLO.
fn connect(target: &LmtpTarget, options: &LmtpOptions) -> Result<SmtpClient, LmtpError> {
    let t = options.timeout.max(Duration::from_millis(1));
    let connect_err = |source| LmtpError::Connect { target: target.to_string(), source };
    let (conn, peer) = match target {
        LmtpTarget::Tcp(addr) => {
            let tcp = connect_tcp(addr, t).map_err(|e| match e {
                SendError::Connect { source, .. } => connect_err(source),
                e => connect_err(io::Error::other(e.to_string())),
            })?;
            tcp.set_nodelay(true).map_err(connect_err)?;
            tcp.set_write_timeout(Some(t)).map_err(connect_err)?;
            let peer = tcp.peer_addr().map_err(connect_err)?;
            (Conn::Net(crate::tls::Stream::Plain(tcp)), peer)
        }
        #[cfg(unix)]
        LmtpTarget::Unix(path) => {
            let sock = std::os::unix::net::UnixStream::connect(path).map_err(connect_err)?;
            sock.set_write_timeout(Some(t)).map_err(connect_err)?;
            (Conn::Unix(sock), SocketAddr::from(([0, 0, 0, 0], 0)))
        }
        #[cfg(not(unix))]
        LmtpTarget::Unix(_) => {
            return Err(connect_err(io::Error::new(io::ErrorKind::Unsupported, "no Unix sockets on this platform")))
        }
    };
    let mut config = Config::lmtp(&options.lhlo);
    config.timeouts = Timeouts {
        greeting: t,
        command: t,
        mail: t,
        rcpt: t,
        data_init: t,
        data_block: t,
        data_end: t,
        tls_handshake: t,
    };
    let mut session = SmtpClient::over(conn, peer, config);
    session.greet().map_err(|e| session_error(e, &session))?;
    Ok(session)
}

fn owned(r: Reply) -> OwnedReply {
    OwnedReply { code: r.code, enhanced: r.enhanced, text: r.text }
}

fn owned_parsed(r: &ParsedReply<'_>) -> OwnedReply {
    owned(Reply::from_parsed(r))
}

/// An error of the session driver, made precise with the core's record of a fatal error.
fn session_error(e: SendError, session: &SmtpClient) -> LmtpError {
    let fatal = session.core.error().copied();
    match e {
        SendError::Connect { server, source } => LmtpError::Connect { target: server, source },
        SendError::Io { step, source } => LmtpError::Io { step, source },
        SendError::Closed { step } => LmtpError::Closed { step },
        SendError::Timeout { step } => LmtpError::Timeout { step },
        SendError::Input(e) => LmtpError::Input(e),
        SendError::Invalid(what) => LmtpError::Invalid(what),
        SendError::Request(e) => LmtpError::Invalid(e.to_string()),
        SendError::Refused { reply, .. } => match fatal {
            Some(f) if f.kind != ErrorKind::Refused => {
                LmtpError::Protocol { step: f.step, detail: format!("unexpected reply {reply}") }
            }
            f => LmtpError::Refused { step: f.map_or(session.step, |f| f.step), reply: owned(reply) },
        },
        SendError::Protocol(f) => {
            let detail = match f.kind {
                ErrorKind::Malformed(m) => format!("malformed reply: {m}"),
                _ => f.to_string(),
            };
            LmtpError::Protocol { step: f.step, detail }
        }
        e => LmtpError::Protocol { step: session.step, detail: e.to_string() },
    }
}

/// MAIL, RCPT..., DATA, the content and the replies after it.
fn transaction(
    session: &mut SmtpClient,
    from: &str,
    to: &[&str],
    message: &mut dyn Read,
) -> Result<Vec<OwnedReply>, LmtpError> {
    let rcpts: Vec<core::Recipient<'_>> = to.iter().map(|a| core::Recipient::new(a)).collect();
    session.core.send_mail(&core::Envelope::new(from, &rcpts)).map_err(|e| LmtpError::Invalid(e.to_string()))?;
    let n = to.len();
    let mut at_rcpt: Vec<Option<OwnedReply>> = vec![None; n];
    let (mut mail, mut data) = (None, None);
    session.step = Step::Mail;
    let failed = session
        .run(|_, step, ev| {
            Ok(match ev {
                Event::Reply { command: Command::Mail, reply, .. } => {
                    mail = Some(owned_parsed(&reply));
                    *step = Step::Rcpt;
                    Flow::Continue
                }
                Event::Reply { command: Command::Rcpt, recipient: Some(i), reply } => {
                    if let Some(slot) = at_rcpt.get_mut(i) {
                        *slot = Some(owned_parsed(&reply));
                    }
                    if i + 1 == n {
                        *step = Step::Data;
                    }
                    Flow::Continue
                }
                Event::Reply { command: Command::Data, reply, .. } => {
                    data = Some(owned_parsed(&reply));
                    Flow::Continue
                }
                Event::ReadyForData => Flow::Done(None),
                Event::Failed(e) => Flow::Done(Some(e)),
                _ => Flow::Continue,
            })
        })
        .map_err(|e| session_error(e, session))?;
    let accepted = |r: &Option<OwnedReply>| r.as_ref().is_some_and(|r| r.code / 100 == 2);
    if let Some(e) = failed {
        if let Some(reply) = mail.filter(|r| r.code / 100 != 2) {
            return Err(LmtpError::Refused { step: Step::Mail, reply });
        }
        // Every recipient refused at RCPT, or DATA refused: each outcome is a real reply.
        let outcomes: Option<Vec<OwnedReply>> =
            at_rcpt.iter().map(|r| if accepted(r) { data.clone() } else { r.clone() }).collect();
        return outcomes.ok_or_else(|| LmtpError::Protocol { step: e.step, detail: e.to_string() });
    }

    session.step = Step::Body;
    let mut after: Vec<Option<OwnedReply>> = vec![None; n];
    let mut result = session.push_body(message);
    // Whether the end of data may have left (then the message may have been delivered).
    let ended = result.is_ok() || (!session.core.is_sending_body() && !session.core.is_closed());
    if result.is_ok() {
        session.step = Step::DataEnd;
        result = session.run(|_, _, ev| {
            Ok(match ev {
                Event::Reply { command: Command::DataEnd, recipient: Some(i), reply } => {
                    if let Some(slot) = after.get_mut(i) {
                        *slot = Some(owned_parsed(&reply));
                    }
                    Flow::Continue
                }
                Event::LmtpDone { .. } => Flow::Done(()),
                _ => Flow::Continue,
            })
        });
    }
    // Each recipient's final outcome: its refusal at RCPT or its reply after the data.
    let mut outcomes: Vec<Option<OwnedReply>> =
        at_rcpt.into_iter().zip(after).map(|(r, a)| if accepted(&r) { a } else { r }).collect();
    let Err(e) = result else {
        return outcomes
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| LmtpError::Protocol { step: Step::DataEnd, detail: "a recipient without a reply".into() });
    };
    let cause = session_error(e, session);
    if !ended {
        // The connection is dropped before the end of data: nothing was delivered.
        return Err(cause);
    }
    // A `421` in place of a recipient's reply is kept by the core as that recipient's result
    // (the core's entry of an accepted recipient is `None` until its reply arrives).
    for (slot, r) in outcomes.iter_mut().zip(session.core.recipient_results()) {
        if let (None, Some(r)) = (&slot, r) {
            let text = cause.reply().filter(|c| c.code == r.code).map_or_else(String::new, |c| c.text.clone());
            *slot = Some(OwnedReply { code: r.code, enhanced: r.enhanced, text });
        }
    }
    Err(LmtpError::Interrupted { replies: outcomes, cause: Box::new(cause) })
}
