//! The blocking SMTP client: send a message to a host (a smarthost or, later, a recipient
//! domain's MX) over `std::net`, with rustls for STARTTLS and implicit TLS.
//!
//! Like the server side, this module holds **no SMTP logic**: the sans-IO core
//! [`smtp_proto::client::Client`] writes the commands (PIPELINING when offered, SIZE checked
//! before MAIL, DSN parameters, dot-stuffing with CR/LF normalised, the STARTTLS
//! response-injection check) and parses the replies. This module moves bytes, turns the core's
//! per-command timeouts into socket timeouts, does the TLS handshakes and applies the policy
//! the core leaves to its caller: whether TLS is required, whether AUTH may go in clear text.
//! The same session driver carries [`crate::lmtp`] (LMTP over TCP or a Unix socket).
//!
//! # Policy
//! - [`TlsMode::Required`] (the default): STARTTLS must be offered and succeed, with the
//!   certificate verified (Mozilla's roots from `webpki-roots`, or your own
//!   [`rustls::ClientConfig`]); nothing but EHLO and STARTTLS is sent before. The
//!   capabilities seen before TLS are discarded (RFC 3207 §4.2); bytes after the `220` to
//!   STARTTLS end the session ([`SendError::ResponseInjection`]).
//! - AUTH (PLAIN, else LOGIN) only when requested; [`SendError::AuthNotOffered`] if the server
//!   offers neither, and never over a connection without TLS unless
//!   [`SendOptions::allow_cleartext_auth`].
//! - Addresses and DSN values with control characters are refused before anything is
//!   written ([`SendError::Invalid`]).
//! - The message is read from a [`Read`] and streamed through a fixed chunk buffer.
//!
//! Per-recipient results come back in a [`Delivery`]: some recipients refused while others
//! were accepted is a success with [`Delivery::refused`] not empty. When every recipient is
//! refused the error is [`SendError::NoValidRecipients`], with each reply.
//!
//! # Example
//! ```
//! use smtp_std::client::{self, Envelope, SendOptions, TlsMode};
//! # use smtp_std::{Options, Server, Sink};
//! # let mut server = Server::new(Options::new("mx.example.org"), Sink);
//! # let addr = server.listen("127.0.0.1:0")?;
//! # let running = server.spawn();
//! # let smarthost = addr.to_string();
//!
//! let mut options = SendOptions::new(&smarthost, "client.example.org");
//! options.tls = TlsMode::Off; // a test server without TLS; the default is TlsMode::Required
//! let envelope = Envelope::new("me@example.org", ["you@example.net", "them@example.com"]);
//! let message = &b"Subject: hello\r\n\r\nHi there.\r\n"[..];
//!
//! let delivery = client::send(&options, &envelope, message)?;
//! assert!(delivery.all_accepted());
//! for r in &delivery.recipients {
//!     println!("{r}"); // you@example.net: accepted 250 2.1.5 Recipient OK
//! }
//! # running.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme, StreamOwned};
use smtp_proto::client::{
    self as core, ApiError, Client as Core, Command, Config, ErrorKind, Event, Progress, ReplySummary, Step, Timeouts,
};
use smtp_proto::ehlo::{AuthMechanisms, Capabilities};
use smtp_proto::parse::params::{Notify, Ret};
use smtp_proto::parse::reply::ParsedReply;
use smtp_proto::reply::EnhancedCode;
use smtp_proto::sasl::Credentials;

/// Bytes of message content read from the caller's [`Read`] at a time.
pub const CHUNK: usize = 64 * 1024;
/// The largest header block [`add_missing_headers`] scans.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Most characters of a server reply kept in a [`Reply`].
const MAX_REPLY_TEXT: usize = 1000;

/// When to use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsMode {
    /// STARTTLS must be offered and succeed (certificate verified); otherwise the session
    /// ends before anything but EHLO was sent.
    #[default]
    Required,
    /// STARTTLS when offered; plain text when not, or when the server refuses it. A failed
    /// handshake is still an error (the connection is unusable).
    Opportunistic,
    /// Never TLS.
    Off,
    /// TLS from the first byte (RFC 8314, port 465).
    Implicit,
}

impl std::str::FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "required" | "require" => Ok(TlsMode::Required),
            "opportunistic" | "may" => Ok(TlsMode::Opportunistic),
            "off" | "none" | "no" => Ok(TlsMode::Off),
            "implicit" | "smtps" => Ok(TlsMode::Implicit),
            _ => Err(format!("unknown TLS mode {s:?} (required, opportunistic, off, implicit)")),
        }
    }
}

/// AUTH credentials (PLAIN if the server offers it, else LOGIN).
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").field("user", &self.user).field("password", &"<hidden>").finish()
    }
}

/// How to reach the server and what to require of it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SendOptions {
    /// `host:port` (`[v6]:port` for an IPv6 address).
    pub server: String,
    /// Our name for EHLO.
    pub ehlo: String,
    /// When to use TLS.
    pub tls: TlsMode,
    /// The rustls configuration; `None`: certificates verified against Mozilla's roots
    /// ([`default_tls_config`]). See also [`tls_config_from_ca_file`] and
    /// [`insecure_tls_config`].
    pub tls_config: Option<Arc<ClientConfig>>,
    /// The name the certificate must match; `None`: the host part of [`Self::server`].
    pub tls_server_name: Option<String>,
    /// Authenticate with these credentials.
    pub auth: Option<Auth>,
    /// Allow AUTH over a connection without TLS (the password in clear text). Default off.
    pub allow_cleartext_auth: bool,
    /// Use PIPELINING when offered. Default on.
    pub pipelining: bool,
    /// Bound on establishing the TCP connection (each address tried).
    pub connect_timeout: Duration,
    /// Per-command timeouts (RFC 5321 §4.5.3.2 by default).
    pub timeouts: Timeouts,
    /// The local address to connect from (the one SPF and the PTR record name; Postfix's
    /// `smtp_bind_address`). `None`: the system's choice. Only servers of the same address
    /// family are reached.
    pub bind: Option<std::net::IpAddr>,
}

impl SendOptions {
    /// Options for `server` (`host:port`), saying `ehlo` in EHLO; TLS required.
    pub fn new(server: &str, ehlo: &str) -> Self {
        Self {
            server: server.to_owned(),
            ehlo: ehlo.to_owned(),
            tls: TlsMode::Required,
            tls_config: None,
            tls_server_name: None,
            auth: None,
            allow_cleartext_auth: false,
            pipelining: true,
            connect_timeout: Duration::from_secs(30),
            timeouts: Timeouts::default(),
            bind: None,
        }
    }

    /// Every timeout (connect, each command, the content, the TLS handshake) set to `t`.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self.timeouts = Timeouts {
            greeting: t,
            command: t,
            mail: t,
            rcpt: t,
            data_init: t,
            data_block: t,
            data_end: t,
            tls_handshake: t,
        };
        self
    }
}

/// One recipient and its DSN parameters (sent when the server offers DSN).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Recipient {
    /// The address, without angle brackets.
    pub address: String,
    /// `NOTIFY=` (RFC 3461).
    pub notify: Option<Notify>,
    /// `ORCPT=rfc822;...`.
    pub orcpt: Option<String>,
}

impl<S: Into<String>> From<S> for Recipient {
    fn from(address: S) -> Self {
        Self { address: address.into(), notify: None, orcpt: None }
    }
}

/// The envelope of a message: sender, recipients, DSN and size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Envelope {
    /// The reverse path without angle brackets; `""` for `<>`.
    pub from: String,
    /// The recipients.
    pub to: Vec<Recipient>,
    /// The message size to declare with `SIZE=`; checked against the server's SIZE before
    /// MAIL is sent.
    pub size: Option<u64>,
    /// `RET=` (DSN).
    pub ret: Option<Ret>,
    /// `ENVID=` (DSN).
    pub envid: Option<String>,
    /// `BODY=8BITMIME` (refused if the server does not offer 8BITMIME).
    pub eight_bit: bool,
}

impl Envelope {
    /// An envelope from `from` to `to`, without parameters.
    pub fn new<R: Into<Recipient>>(from: &str, to: impl IntoIterator<Item = R>) -> Self {
        Self {
            from: from.to_owned(),
            to: to.into_iter().map(Into::into).collect(),
            size: None,
            ret: None,
            envid: None,
            eight_bit: false,
        }
    }

    /// Refuses control characters (CR, LF, NUL...) and angle brackets in the addresses and
    /// control characters in ENVID/ORCPT: command injection, refused before connecting.
    pub fn validate(&self) -> Result<(), SendError> {
        let bad_addr = |s: &str| s.bytes().any(|c| c < b' ' || c == 0x7f || c == b'<' || c == b'>');
        let bad = |s: &str| s.bytes().any(|c| c < b' ' || c == 0x7f);
        let invalid = |what: String| Err(SendError::Invalid(what));
        if bad_addr(&self.from) {
            return invalid(format!("sender {:?}: forbidden character", self.from));
        }
        if self.to.is_empty() {
            return invalid("no recipients".into());
        }
        for r in &self.to {
            if bad_addr(&r.address) || r.address.is_empty() {
                return invalid(format!("recipient {:?}: forbidden character or empty", r.address));
            }
            if r.orcpt.as_deref().is_some_and(bad) {
                return invalid(format!("ORCPT of {:?}: forbidden character", r.address));
            }
        }
        if self.envid.as_deref().is_some_and(bad) {
            return invalid("ENVID: forbidden character".into());
        }
        Ok(())
    }
}

/// A server reply, owned: code, enhanced status code and text (lines joined by a space,
/// control characters replaced).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    /// The reply code.
    pub code: u16,
    /// The enhanced status code (RFC 3463), if any.
    pub enhanced: Option<EnhancedCode>,
    /// The text.
    pub text: String,
}

impl Reply {
    pub(crate) fn from_parsed(r: &ParsedReply<'_>) -> Self {
        let mut text = String::new();
        for line in r.text_lines() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&clean(&String::from_utf8_lossy(line)));
            if text.len() > MAX_REPLY_TEXT {
                let mut cut = MAX_REPLY_TEXT;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push_str("...");
                break;
            }
        }
        Self { code: r.code(), enhanced: r.enhanced(), text }
    }

    fn from_summary(r: &ReplySummary) -> Self {
        Self { code: r.code, enhanced: r.enhanced, text: clean(r.text()) }
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }
}

/// Control characters from a server never reach a terminal.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// The server's answer to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecipientResult {
    /// The address.
    pub address: String,
    /// The reply to its RCPT; `None` if none arrived (the transaction failed before).
    pub reply: Option<Reply>,
}

impl RecipientResult {
    /// Whether the RCPT was accepted (2xx).
    pub fn is_accepted(&self) -> bool {
        self.reply.as_ref().is_some_and(|r| r.code / 100 == 2)
    }

    /// Whether it was refused with a 4xx (try again later).
    pub fn is_transient(&self) -> bool {
        self.reply.as_ref().is_some_and(Reply::is_transient)
    }
}

/// `b@y: accepted 250 2.1.5 OK` / `c@z: refused 550 5.1.1 user unknown`.
impl fmt::Display for RecipientResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reply {
            Some(r) if self.is_accepted() => write!(f, "{}: accepted {r}", self.address),
            Some(r) if r.is_transient() => write!(f, "{}: deferred {r}", self.address),
            Some(r) => write!(f, "{}: refused {r}", self.address),
            None => write!(f, "{}: not attempted", self.address),
        }
    }
}

/// A message the server took: its reply to the end of data and each recipient's result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// The reply to the end of data (`250 2.0.0 queued as ...`).
    pub reply: Reply,
    /// Each recipient, in envelope order; the accepted ones got the message.
    pub recipients: Vec<RecipientResult>,
}

impl Delivery {
    /// Whether every recipient was accepted.
    pub fn all_accepted(&self) -> bool {
        self.recipients.iter().all(RecipientResult::is_accepted)
    }

    /// The recipients that were accepted.
    pub fn accepted(&self) -> impl Iterator<Item = &RecipientResult> {
        self.recipients.iter().filter(|r| r.is_accepted())
    }

    /// The recipients that were refused (4xx or 5xx).
    pub fn refused(&self) -> impl Iterator<Item = &RecipientResult> {
        self.recipients.iter().filter(|r| !r.is_accepted())
    }
}

/// What failed, at which step, with the server's reply when there was one.
#[derive(Debug)]
#[non_exhaustive]
pub enum SendError {
    /// The request is invalid (a control character in an address, no recipients...); nothing
    /// was sent.
    Invalid(String),
    /// The server's address does not resolve or no address accepted a connection.
    Connect {
        /// `host:port`.
        server: String,
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
    /// The server did not answer in time (the core's timeout for this step).
    Timeout {
        /// The step.
        step: Step,
    },
    /// TLS is required and the server does not offer STARTTLS.
    StartTlsNotOffered,
    /// The TLS handshake failed (e.g. the certificate does not verify).
    Tls(io::Error),
    /// Bytes followed the `220` to STARTTLS before the handshake: response injection
    /// (CVE-2011-0411 class). Nothing more was sent.
    ResponseInjection,
    /// AUTH was requested and the server offers neither PLAIN nor LOGIN (here: what it offers).
    AuthNotOffered(String),
    /// AUTH was requested over a connection without TLS and
    /// [`SendOptions::allow_cleartext_auth`] is off; nothing was sent.
    CleartextAuth,
    /// A step was refused by the server (`RCPT TO:<x@y> refused: 550 5.1.1 user unknown`).
    Refused {
        /// The command (`MAIL FROM:<a@b>`, `STARTTLS`, `AUTH PLAIN`, `DATA`, ...).
        command: String,
        /// The server's reply.
        reply: Reply,
    },
    /// No recipient was accepted: each one's reply.
    NoValidRecipients(Vec<RecipientResult>),
    /// The core refused the request (SIZE exceeded, an extension the message needs is not
    /// offered...); nothing of it was sent.
    Request(ApiError),
    /// The server broke the protocol (a malformed reply...).
    Protocol(Box<core::Error>),
    /// Reading the message failed.
    Input(io::Error),
}

impl SendError {
    /// Whether trying again later may succeed: a 4xx, a connection problem, a timeout, a TLS
    /// failure, a broken server. (`EX_TEMPFAIL` in the program.)
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::Connect { .. }
            | SendError::Io { .. }
            | SendError::Closed { .. }
            | SendError::Timeout { .. }
            | SendError::StartTlsNotOffered
            | SendError::Tls(_)
            | SendError::ResponseInjection
            | SendError::Protocol(_) => true,
            SendError::Refused { reply, .. } => reply.is_transient(),
            SendError::NoValidRecipients(rs) => rs.iter().any(RecipientResult::is_transient),
            SendError::Invalid(_)
            | SendError::AuthNotOffered(_)
            | SendError::CleartextAuth
            | SendError::Request(_)
            | SendError::Input(_) => false,
        }
    }

    /// The server's reply, when the error carries one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            SendError::Refused { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

/// A step as a word for messages.
fn step_name(step: Step) -> &'static str {
    match step {
        Step::Greeting => "the greeting",
        Step::Ehlo => "EHLO",
        Step::Helo => "HELO",
        Step::Lhlo => "LHLO",
        Step::StartTls => "STARTTLS",
        Step::Auth => "AUTH",
        Step::Mail => "MAIL FROM",
        Step::Rcpt => "RCPT TO",
        Step::Data => "DATA",
        Step::Body => "sending the message",
        Step::DataEnd => "the end of data",
        Step::Rset => "RSET",
        Step::Quit => "QUIT",
        _ => "an idle moment",
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Invalid(what) => write!(f, "invalid request: {what}"),
            SendError::Connect { server, source } => write!(f, "cannot connect to {server}: {source}"),
            SendError::Io { step, source } => write!(f, "connection failed during {}: {source}", step_name(*step)),
            SendError::Closed { step } => write!(f, "server closed the connection during {}", step_name(*step)),
            SendError::Timeout { step } => write!(f, "timeout waiting for the reply to {}", step_name(*step)),
            SendError::StartTlsNotOffered => f.write_str("TLS is required and the server does not offer STARTTLS"),
            SendError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            SendError::ResponseInjection => {
                f.write_str("STARTTLS response injection: the server sent more bytes after its 220 (session aborted)")
            }
            SendError::AuthNotOffered(offered) if offered.is_empty() => {
                f.write_str("AUTH requested but the server does not offer AUTH")
            }
            SendError::AuthNotOffered(offered) => {
                write!(f, "AUTH requested but the server offers neither PLAIN nor LOGIN (offers: {offered})")
            }
            SendError::CleartextAuth => {
                f.write_str("AUTH refused: the connection is not encrypted (the password would go in clear text)")
            }
            SendError::Refused { command, reply } => write!(f, "{command} refused: {reply}"),
            SendError::NoValidRecipients(rs) => {
                f.write_str("no recipient accepted")?;
                let mut sep = ": ";
                for r in rs {
                    match &r.reply {
                        Some(reply) => write!(f, "{sep}RCPT TO:<{}> refused: {reply}", r.address)?,
                        None => write!(f, "{sep}RCPT TO:<{}> not answered", r.address)?,
                    }
                    sep = "; ";
                }
                Ok(())
            }
            SendError::Request(e) => write!(f, "request refused before sending: {e}"),
            SendError::Protocol(e) => match e.kind {
                ErrorKind::Malformed(m) => write!(f, "malformed reply to {}: {m}", step_name(e.step)),
                _ => write!(f, "protocol error: {e}"),
            },
            SendError::Input(e) => write!(f, "cannot read the message: {e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect { source, .. } | SendError::Io { source, .. } => Some(source),
            SendError::Tls(e) | SendError::Input(e) => Some(e),
            SendError::Request(e) => Some(e),
            SendError::Protocol(e) => Some(&**e),
            _ => None,
        }
    }
}

/// A fatal error reported by the core.
fn from_core(e: core::Error, command: impl FnOnce(Step) -> String) -> SendError {
    match e.kind {
        ErrorKind::ResponseInjection => SendError::ResponseInjection,
        ErrorKind::Timeout => SendError::Timeout { step: e.step },
        ErrorKind::Refused | ErrorKind::UnexpectedReply => match e.reply {
            Some(r) => SendError::Refused { command: command(e.step), reply: Reply::from_summary(&r) },
            None => SendError::Protocol(Box::new(e)),
        },
        _ => SendError::Protocol(Box::new(e)),
    }
}

fn command_name(step: Step) -> String {
    match step {
        Step::Greeting => "connection (greeting)".into(),
        Step::DataEnd => "message".into(),
        s => step_name(s).into(),
    }
}

/// TLS configurations.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
}

fn config_with_roots(roots: RootCertStore) -> Arc<ClientConfig> {
    Arc::new(builder().with_root_certificates(roots).with_no_client_auth())
}

/// TLS 1.2/1.3 with *ring*, certificates verified against Mozilla's root store
/// (`webpki-roots`) and the server name.
pub fn default_tls_config() -> Arc<ClientConfig> {
    config_with_roots(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
}

/// Trusts only the CA certificates in `pem` (e.g. a test CA); names are still verified.
pub fn tls_config_from_ca_pem(pem: &[u8]) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("CA certificate: {e}")))?;
        roots.add(cert).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("CA certificate: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no certificate in the CA PEM data"));
    }
    Ok(config_with_roots(roots))
}

/// Like [`tls_config_from_ca_pem`], reading the file.
pub fn tls_config_from_ca_file(path: &Path) -> io::Result<Arc<ClientConfig>> {
    let pem = std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    tls_config_from_ca_pem(&pem).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// **No certificate verification** (any certificate, any name; the handshake signatures
/// are still checked): for tests against self-signed servers only. It gives no protection
/// against an active attacker.
pub fn insecure_tls_config() -> Arc<ClientConfig> {
    let verifier = Arc::new(NoVerification(provider()));
    Arc::new(builder().dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The host part of `host:port` / `[v6]:port`.
fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

type Stream = crate::tls::Stream<ClientConnection>;

/// What a session runs over: TCP (plain or TLS), or a Unix socket (LMTP, [`crate::lmtp`]).
pub(crate) enum Conn {
    /// TCP, plain or TLS.
    Net(Stream),
    /// A Unix stream socket (never TLS).
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
}

impl Conn {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Net(s) => s.tcp().set_read_timeout(t),
            #[cfg(unix)]
            Conn::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Conn::Net(s) => s.tcp().shutdown(std::net::Shutdown::Both),
            #[cfg(unix)]
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Net(s) => s.read(buf),
            #[cfg(unix)]
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Net(s) => s.write(buf),
            #[cfg(unix)]
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Net(s) => s.flush(),
            #[cfg(unix)]
            Conn::Unix(s) => s.flush(),
        }
    }
}

/// Turns every bare CR and bare LF into CRLF and ends the message with CRLF: the bytes the
/// client puts on the wire (before dot-stuffing), which is what a signature must cover.
pub fn to_crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 32 + 2);
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if message.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The first address of `server` (`host:port`) that accepts a TCP connection within
/// `timeout` each.
pub(crate) fn connect_tcp(server: &str, timeout: Duration) -> Result<TcpStream, SendError> {
    connect_tcp_from(server, timeout, None)
}

/// [`connect_tcp`] from the local address `bind` when given (addresses of the other family
/// are skipped).
pub(crate) fn connect_tcp_from(
    server: &str,
    timeout: Duration,
    bind: Option<std::net::IpAddr>,
) -> Result<TcpStream, SendError> {
    let connect_err = |source| SendError::Connect { server: server.to_owned(), source };
    let addrs = server.to_socket_addrs().map_err(connect_err)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        let attempt = match bind {
            None => TcpStream::connect_timeout(&addr, timeout),
            Some(local) if local.is_ipv4() != addr.is_ipv4() => {
                last = io::Error::new(io::ErrorKind::AddrNotAvailable, format!("{addr}: not reachable from {local}"));
                continue;
            }
            Some(local) => (|| {
                let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
                sock.bind(&std::net::SocketAddr::new(local, 0).into())?;
                sock.connect_timeout(&addr.into(), timeout)?;
                Ok(sock.into())
            })(),
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(connect_err(last))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// The TLS handshake on `tcp`, bounded by `timeout`.
fn handshake(
    mut tcp: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, TcpStream>, SendError> {
    let mut conn = ClientConnection::new(config, name).map_err(|e| SendError::Tls(io::Error::other(e)))?;
    let deadline = Instant::now() + timeout;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SendError::Timeout { step: Step::StartTls });
        }
        tcp.set_read_timeout(Some(left)).map_err(|e| SendError::Io { step: Step::StartTls, source: e })?;
        match conn.complete_io(&mut tcp) {
            Ok((0, 0)) if conn.is_handshaking() => return Err(SendError::Closed { step: Step::StartTls }),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
            Err(e) => return Err(SendError::Tls(e)),
        }
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// An SMTP session: connected, greeted, TLS and AUTH done as the options say; ready to
/// [`send`](Self::send) one message after another. Dropping it sends `QUIT` (best effort).
pub struct SmtpClient {
    pub(crate) core: Box<Core>,
    stream: Conn,
    tls_config: Option<Arc<ClientConfig>>,
    tls_name: String,
    handshake_timeout: Duration,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    pub(crate) step: Step,
    read_timeout: Option<Duration>,
    /// The TCP peer (`0.0.0.0:0` over a Unix socket: only [`crate::lmtp`] makes those and it
    /// does not hand them out).
    peer: SocketAddr,
}

impl fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpClient").field("peer", &self.peer).field("core", &self.core).finish_non_exhaustive()
    }
}

/// What an event handler in [`SmtpClient::run`] says.
pub(crate) enum Flow<T> {
    Continue,
    Done(T),
}

impl SmtpClient {
    /// Connects to [`SendOptions::server`] and runs the session up to the point where a
    /// message can be sent: greeting, EHLO, STARTTLS (per [`SendOptions::tls`]), EHLO again,
    /// AUTH (when [`SendOptions::auth`] is set).
    pub fn connect(options: &SendOptions) -> Result<Self, SendError> {
        let tcp = connect_tcp_from(&options.server, options.connect_timeout, options.bind)?;
        let io_err = |source| SendError::Io { step: Step::Greeting, source };
        let peer = tcp.peer_addr().map_err(io_err)?;
        tcp.set_nodelay(true).map_err(io_err)?;
        // Writes are bounded by the content timeout (the longest a write may stall).
        tcp.set_write_timeout(Some(options.timeouts.data_block.max(Duration::from_secs(1)))).map_err(io_err)?;

        let mut config = Config::new(&options.ehlo);
        config.pipelining = options.pipelining;
        config.timeouts = options.timeouts;
        let mut client = SmtpClient::over(Conn::Net(Stream::Plain(tcp)), peer, config);
        client.tls_config = match options.tls {
            TlsMode::Off => None,
            _ => Some(options.tls_config.clone().unwrap_or_else(default_tls_config)),
        };
        client.tls_name = options.tls_server_name.clone().unwrap_or_else(|| host_of(&options.server).to_owned());
        if options.tls == TlsMode::Implicit {
            client.start_tls()?;
        }
        client.greet()?;
        let starttls = match options.tls {
            TlsMode::Required => {
                if !client.core.capabilities().starttls {
                    return Err(SendError::StartTlsNotOffered);
                }
                true
            }
            TlsMode::Opportunistic => client.core.capabilities().starttls,
            TlsMode::Off | TlsMode::Implicit => false,
        };
        if starttls {
            client.core.starttls().map_err(SendError::Request)?;
            client.step = Step::StartTls;
            let refused = client.run(|_, step, ev| {
                Ok(match ev {
                    // The handshake is done in `run`; then EHLO again.
                    Event::Capabilities { .. } => Flow::Done(None),
                    Event::Failed(e) => Flow::Done(Some(e)),
                    Event::Reply { command: Command::Ehlo, .. } => {
                        *step = Step::Helo;
                        Flow::Continue
                    }
                    _ => Flow::Continue,
                })
            })?;
            if let Some(e) = refused {
                let err = from_core(e, |_| "STARTTLS".into());
                if options.tls == TlsMode::Required {
                    return Err(err);
                }
                tracing::info!("STARTTLS refused, going on without TLS: {err}");
            }
        }
        if let Some(auth) = &options.auth {
            client.authenticate(auth, options.allow_cleartext_auth)?;
        }
        Ok(client)
    }

    /// A session over `conn`, before the greeting, without TLS.
    pub(crate) fn over(conn: Conn, peer: SocketAddr, config: Config) -> Self {
        let buffer = config.reply_limits.max_reply_len().max(4096);
        SmtpClient {
            core: Box::new(Core::new(config)),
            stream: conn,
            tls_config: None,
            tls_name: String::new(),
            handshake_timeout: config.timeouts.tls_handshake,
            buf: vec![0; buffer],
            start: 0,
            end: 0,
            out: vec![0; core::OUTPUT_BUFFER],
            step: Step::Greeting,
            read_timeout: None,
            peer,
        }
    }

    /// Waits for the greeting and the reply to EHLO (LHLO with an LMTP core).
    pub(crate) fn greet(&mut self) -> Result<(), SendError> {
        self.step = Step::Greeting;
        let hello = if self.core.config().lmtp { Step::Lhlo } else { Step::Ehlo };
        self.run(|_, step, ev| {
            Ok(match ev {
                Event::Greeting(_) => {
                    *step = hello;
                    Flow::Continue
                }
                Event::Capabilities { .. } => Flow::Done(()),
                _ => Flow::Continue,
            })
        })
    }

    fn authenticate(&mut self, auth: &Auth, allow_cleartext: bool) -> Result<(), SendError> {
        if !self.core.is_tls() && !allow_cleartext {
            return Err(SendError::CleartextAuth);
        }
        let offered = self.core.capabilities().auth;
        let (name, credentials) = if offered.contains(AuthMechanisms::PLAIN) {
            ("AUTH PLAIN", Credentials::Plain { authzid: "", authcid: &auth.user, password: &auth.password })
        } else if offered.contains(AuthMechanisms::LOGIN) {
            ("AUTH LOGIN", Credentials::Login { username: &auth.user, password: &auth.password })
        } else {
            let names: Vec<&str> =
                AuthMechanisms::ALL.iter().filter(|(bit, _)| offered.contains(*bit)).map(|(_, n)| *n).collect();
            return Err(SendError::AuthNotOffered(names.join(" ")));
        };
        self.core.auth(&credentials).map_err(|e| match e {
            ApiError::ForbiddenCharacter(_) => SendError::Invalid("forbidden character in the AUTH credentials".into()),
            e => SendError::Request(e),
        })?;
        self.step = Step::Auth;
        let failed = self.run(|_, _, ev| {
            Ok(match ev {
                Event::Authenticated(_) => Flow::Done(None),
                Event::Failed(e) => Flow::Done(Some(e)),
                _ => Flow::Continue,
            })
        })?;
        match failed {
            None => Ok(()),
            Some(e) => Err(from_core(e, |_| name.into())),
        }
    }

    /// What the server offers (after TLS: what it offers under TLS).
    pub fn capabilities(&self) -> &Capabilities {
        self.core.capabilities()
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.core.is_tls()
    }

    /// Whether AUTH succeeded.
    pub fn is_authenticated(&self) -> bool {
        self.core.is_authenticated()
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one message: the envelope, then the content read from `message` in
    /// [`CHUNK`]-sized pieces (dot-stuffed, bare CR/LF turned into CRLF, a missing final CRLF
    /// added). Some recipients refused is still `Ok`; see [`Delivery::refused`].
    pub fn send(&mut self, envelope: &Envelope, mut message: impl Read) -> Result<Delivery, SendError> {
        envelope.validate()?;
        let to: Vec<core::Recipient<'_>> = envelope
            .to
            .iter()
            .map(|r| core::Recipient { address: &r.address, notify: r.notify, orcpt: r.orcpt.as_deref() })
            .collect();
        let mut env = core::Envelope::new(&envelope.from, &to);
        env.size = envelope.size;
        env.ret = envelope.ret;
        env.envid = envelope.envid.as_deref();
        env.eight_bit = envelope.eight_bit;
        self.core.send_mail(&env).map_err(|e| match e {
            ApiError::ForbiddenCharacter(a) => SendError::Invalid(format!("forbidden character in {a:?}")),
            e => SendError::Request(e),
        })?;

        let n = envelope.to.len();
        let mut replies: Vec<Option<Reply>> = vec![None; n];
        let mut mail: Option<Reply> = None;
        let mut data: Option<Reply> = None;
        self.step = Step::Mail;
        let failed = self.run(|_, step, ev| {
            Ok(match ev {
                Event::Reply { command: Command::Mail, reply, .. } => {
                    mail = Some(Reply::from_parsed(&reply));
                    *step = Step::Rcpt;
                    Flow::Continue
                }
                Event::Reply { command: Command::Rcpt, recipient: Some(i), reply } => {
                    if let Some(slot) = replies.get_mut(i) {
                        *slot = Some(Reply::from_parsed(&reply));
                    }
                    if i + 1 == n {
                        *step = Step::Data;
                    }
                    Flow::Continue
                }
                Event::Reply { command: Command::Data, reply, .. } => {
                    data = Some(Reply::from_parsed(&reply));
                    Flow::Continue
                }
                Event::ReadyForData => Flow::Done(None),
                Event::Failed(e) => Flow::Done(Some(e)),
                _ => Flow::Continue,
            })
        })?;
        let results = || -> Vec<RecipientResult> {
            envelope
                .to
                .iter()
                .zip(&replies)
                .map(|(r, reply)| RecipientResult { address: r.address.clone(), reply: reply.clone() })
                .collect()
        };
        if let Some(e) = failed {
            let mail_refused = mail.as_ref().filter(|r| r.code / 100 != 2);
            return Err(match (e.step, e.kind, mail_refused) {
                (_, _, Some(r)) => {
                    SendError::Refused { command: format!("MAIL FROM:<{}>", envelope.from), reply: r.clone() }
                }
                (_, ErrorKind::NoValidRecipients, None) => SendError::NoValidRecipients(results()),
                (Step::Data, _, None) => match data {
                    Some(reply) => SendError::Refused { command: "DATA".into(), reply },
                    None => from_core(e, command_name),
                },
                _ => from_core(e, command_name),
            });
        }

        self.step = Step::Body;
        self.push_body(&mut message)?;
        self.step = Step::DataEnd;
        let end = self.run(|_, _, ev| {
            Ok(match ev {
                Event::Delivered { reply, .. } => Flow::Done(Ok(Reply::from_parsed(&reply))),
                Event::Failed(e) => Flow::Done(Err(e)),
                _ => Flow::Continue,
            })
        })?;
        match end {
            Ok(reply) => Ok(Delivery { reply, recipients: results() }),
            Err(e) => Err(from_core(e, command_name)),
        }
    }

    /// Streams the content to the core and the socket.
    pub(crate) fn push_body(&mut self, message: &mut dyn Read) -> Result<(), SendError> {
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let n = match message.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.abort(SendError::Input(e))),
            };
            let mut rest = &chunk[..n];
            while !rest.is_empty() {
                let k = match self.core.send_body(rest) {
                    Ok(k) => k,
                    Err(e) => return Err(SendError::Request(e)),
                };
                rest = &rest[k..];
                if k == 0 && self.core.pending_output() == 0 {
                    // BDAT: wait for the reply to the chunk in flight.
                    self.wait_chunk_reply()?;
                }
                self.drain()?;
            }
        }
        loop {
            match self.core.finish_body() {
                Ok(()) => break,
                Err(ApiError::OutputFull) => self.drain()?,
                Err(ApiError::NotReady) if !self.core.is_sending_body() && !self.core.is_closed() => {
                    self.wait_chunk_reply()?;
                }
                Err(e) => return Err(SendError::Request(e)),
            }
        }
        self.drain()
    }

    fn wait_chunk_reply(&mut self) -> Result<(), SendError> {
        let failed = self.run(|core, _, ev| {
            Ok(match ev {
                Event::Reply { command: Command::Bdat, .. } if core.is_sending_body() => Flow::Done(None),
                Event::Failed(e) => Flow::Done(Some(e)),
                _ => Flow::Continue,
            })
        })?;
        match failed {
            None => Ok(()),
            Some(e) => Err(from_core(e, command_name)),
        }
    }

    /// A local failure in the middle of the content: the message must not be delivered, so
    /// the connection is dropped without ending it.
    fn abort(&mut self, e: SendError) -> SendError {
        self.stream.shutdown();
        e
    }

    /// Sends QUIT and waits (bounded by the command timeout) for the `221`.
    pub fn quit(mut self) -> Result<(), SendError> {
        self.quit_inner()
    }

    pub(crate) fn quit_inner(&mut self) -> Result<(), SendError> {
        if !self.core.is_ready() {
            return Ok(());
        }
        self.core.quit().map_err(SendError::Request)?;
        self.step = Step::Quit;
        match self.run::<()>(|_, _, _| Ok(Flow::Continue)) {
            Ok(()) | Err(SendError::Closed { step: Step::Quit }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes everything the core has to send.
    fn drain(&mut self) -> Result<(), SendError> {
        loop {
            let n = self.core.poll_transmit(&mut self.out);
            if n == 0 {
                return self.stream.flush().map_err(|e| SendError::Io { step: self.step, source: e });
            }
            if let Err(e) = self.stream.write_all(&self.out[..n]) {
                return Err(SendError::Io { step: self.step, source: e });
            }
        }
    }

    /// Bytes already waiting on the plain socket (a non-blocking peek).
    fn plaintext_waiting(&self) -> Option<Vec<u8>> {
        let Conn::Net(Stream::Plain(tcp)) = &self.stream else { return None };
        let mut b = [0u8; 64];
        tcp.set_nonblocking(true).ok()?;
        let r = tcp.peek(&mut b);
        let _ = tcp.set_nonblocking(false);
        match r {
            Ok(n) if n > 0 => Some(b[..n].to_vec()),
            _ => None,
        }
    }

    /// The STARTTLS (or implicit TLS) handshake on the plain stream.
    fn start_tls(&mut self) -> Result<(), SendError> {
        let Some(config) = self.tls_config.clone() else {
            return Err(SendError::Tls(io::Error::other("TLS is off")));
        };
        let name = ServerName::try_from(self.tls_name.clone()).map_err(|e| {
            SendError::Tls(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {e}", self.tls_name)))
        })?;
        let tcp = match &self.stream {
            Conn::Net(Stream::Plain(s)) => {
                s.try_clone().map_err(|e| SendError::Io { step: Step::StartTls, source: e })?
            }
            _ => return Err(SendError::Tls(io::Error::other("TLS already active or not over TCP"))),
        };
        let tls = handshake(tcp, config, name, self.handshake_timeout)?;
        self.read_timeout = None;
        self.stream = Conn::Net(Stream::Tls(Box::new(tls)));
        // Nothing read before the handshake survives it.
        (self.start, self.end) = (0, 0);
        self.core.tls_established().map_err(SendError::Request)?;
        tracing::debug!(server = %self.peer, "TLS established");
        Ok(())
    }

    /// Runs the core until `f` is done with an event: drains the output, feeds input, does
    /// the TLS handshake when the core asks, reads with the core's timeout. A fatal error of
    /// the core, a closed connection or a timeout end the loop with an error.
    pub(crate) fn run<T>(
        &mut self,
        mut f: impl FnMut(&Core, &mut Step, Event<'_>) -> Result<Flow<T>, SendError>,
    ) -> Result<T, SendError> {
        loop {
            self.drain()?;
            loop {
                let r = self.core.handle_input(&self.buf[self.start..self.end]).map_err(SendError::Request)?;
                self.start += r.consumed;
                match r.progress {
                    Progress::Event(Event::Error(e)) => {
                        // The core queued QUIT if the server is sane; the caller drops us.
                        let _ = self.drain();
                        return Err(from_core(e, command_name));
                    }
                    Progress::Event(Event::TlsHandshake) => {
                        self.drain()?;
                        // Plaintext that arrived after the 220 in a later segment is injection
                        // too: the core says so (it would otherwise break the handshake).
                        if let Some(early) = self.plaintext_waiting() {
                            if let Ok(r) = self.core.handle_input(&early) {
                                if let Progress::Event(Event::Error(e)) = r.progress {
                                    return Err(from_core(e, command_name));
                                }
                            }
                            return Err(SendError::ResponseInjection);
                        }
                        self.start_tls()?;
                    }
                    Progress::Event(ev) => {
                        if let Flow::Done(t) = f(&self.core, &mut self.step, ev)? {
                            self.drain()?;
                            return Ok(t);
                        }
                    }
                    Progress::NeedInput => break,
                    Progress::Closed => {
                        let _ = self.drain();
                        return Err(match self.core.error() {
                            Some(e) => from_core(*e, command_name),
                            None => SendError::Closed { step: self.step },
                        });
                    }
                }
            }
            self.drain()?;
            self.read_more()?;
        }
    }

    /// Reads more input, bounded by the core's timeout.
    fn read_more(&mut self) -> Result<(), SendError> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                // Cannot happen: the buffer holds the longest reply the core accepts.
                return Err(SendError::Io { step: self.step, source: io::Error::other("reply buffer full") });
            }
            self.buf.copy_within(self.start..self.end, 0);
            (self.end, self.start) = (self.end - self.start, 0);
        }
        let timeout = self.core.timeout().unwrap_or(Duration::from_secs(300)).max(Duration::from_millis(1));
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.core.handle_timeout();
                return Err(SendError::Timeout { step: self.step });
            }
            if self.read_timeout != Some(left) {
                self.stream.set_read_timeout(Some(left)).map_err(|e| SendError::Io { step: self.step, source: e })?;
                self.read_timeout = Some(left);
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(SendError::Closed { step: self.step }),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
                Err(e) => return Err(SendError::Io { step: self.step, source: e }),
            }
        }
    }
}

impl Drop for SmtpClient {
    fn drop(&mut self) {
        // Best effort, without waiting for the 221.
        if self.core.is_ready() && self.core.quit().is_ok() {
            let _ = self.drain();
        }
    }
}

/// Connects, sends one message, quits: [`SmtpClient::connect`] + [`SmtpClient::send`]. The
/// envelope is checked before connecting. A failed QUIT after a delivery is not an error.
pub fn send(options: &SendOptions, envelope: &Envelope, message: impl Read) -> Result<Delivery, SendError> {
    envelope.validate()?;
    let mut client = SmtpClient::connect(options)?;
    let delivery = client.send(envelope, message)?;
    let _ = client.quit_inner();
    Ok(delivery)
}

/// The message with the added headers in front: what [`add_missing_headers`] returns.
pub type WithHeaders<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Adds `Date:` and `Message-ID:` at the top of the header block when it has none (RFC 5322
/// §3.6: both SHOULD be there; submission servers add them, smarthosts often do not).
///
/// Reads the header block (up to the first empty line, at most [`MAX_HEADER_BLOCK`] bytes)
/// into memory; the body stays in `message` and is streamed by the returned reader. Returns
/// the reader and how many bytes were added. The Message-ID is `<unique@hostname>`.
///
/// ```
/// use std::io::Read;
/// let (mut m, added) = smtp_std::client::add_missing_headers(&b"Subject: hi\n\nbody\n"[..], "me.example")?;
/// let mut s = String::new();
/// m.read_to_string(&mut s)?;
/// assert!(s.starts_with("Date: ") && s.contains("\r\nMessage-ID: <") && s.ends_with("@me.example>\r\nSubject: hi\n\nbody\n"));
/// assert_eq!(added as usize, s.len() - 18);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn add_missing_headers<R: Read>(mut message: R, hostname: &str) -> io::Result<(WithHeaders<R>, u64)> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if header_block_end(&head).is_some() {
            break;
        }
        if head.len() > MAX_HEADER_BLOCK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("header block larger than {MAX_HEADER_BLOCK} bytes (no empty line)"),
            ));
        }
        let n = match message.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        head.extend_from_slice(&chunk[..n]);
    }
    let end = header_block_end(&head).unwrap_or(head.len()).min(head.len());
    let (mut date, mut id) = (false, false);
    for line in head[..end].split(|&b| b == b'\n') {
        date |= is_field(line, b"date");
        id |= is_field(line, b"message-id");
    }
    let mut added = Vec::new();
    if !date {
        added.extend_from_slice(format!("Date: {}\r\n", rfc5322_date(SystemTime::now())).as_bytes());
    }
    if !id {
        added.extend_from_slice(format!("Message-ID: {}\r\n", message_id(hostname)).as_bytes());
    }
    let n = added.len() as u64;
    added.extend_from_slice(&head);
    Ok((io::Cursor::new(added).chain(message), n))
}

/// Where the header block ends (the index of the empty line), if it is in `b`.
fn header_block_end(b: &[u8]) -> Option<usize> {
    if b.starts_with(b"\n") || b.starts_with(b"\r\n") {
        return Some(0);
    }
    let lf = memchr_lf_pairs(b)?;
    Some(lf)
}

/// The first `\n\n` or `\n\r\n`: the position after the first LF.
fn memchr_lf_pairs(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = b.get(i..).and_then(|s| s.iter().position(|&c| c == b'\n')) {
        let at = i + p + 1;
        match b.get(at..) {
            Some([b'\n', ..]) | Some([b'\r', b'\n', ..]) => return Some(at),
            _ => {}
        }
        i = at;
    }
    None
}

/// Whether a header line is the field `name` (case-insensitive, `Name:` or `Name :`).
fn is_field(line: &[u8], name: &[u8]) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name)
        && line[name.len()..].iter().find(|&&c| c != b' ' && c != b'\t') == Some(&b':')
}

/// RFC 5322 §3.3 date in UTC, as written in `Date:` and `Received:` headers.
pub use crate::received::rfc5322_date;

/// `<time.pid.counter.random@hostname>`.
pub fn message_id(hostname: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(count);
    h.write_u128(now.as_nanos());
    let host: String =
        hostname.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    let host = if host.is_empty() { "localhost".to_owned() } else { host };
    format!("<{:x}.{:x}.{:x}.{:016x}@{host}>", now.as_secs(), std::process::id(), count, h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_added_only_when_missing() {
        let run = |m: &[u8]| {
            let (mut r, n) = add_missing_headers(m, "h.example").unwrap();
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            assert_eq!(&v[n as usize..], m);
            String::from_utf8(v[..n as usize].to_vec()).unwrap()
        };
        assert_eq!(run(b"Date: x\r\nMessage-ID: <a@b>\r\n\r\nbody"), "");
        assert_eq!(run(b"date : x\nmessage-id:<a@b>\n\nDate: body\n"), "");
        let added = run(b"Subject: a\r\n\r\nDate: in the body\r\nMessage-ID: in the body\r\n");
        assert!(added.starts_with("Date: ") && added.contains("\r\nMessage-ID: <"), "{added}");
        assert!(run(b"Message-ID: <a@b>\n\n").starts_with("Date: "));
        assert!(run(b"").starts_with("Date: "));
        assert!(run(b"\r\nDate: body only").starts_with("Date: "));
        // A header block in many small reads, and a body that is never read.
        let big = [b"X-Pad: ".as_slice(), &[b'a'; 100_000], b"\nDate: d\nMessage-ID: <i@d>\n\nbody"].concat();
        assert_eq!(run(&big), "");
        let huge = vec![b'a'; MAX_HEADER_BLOCK + 10];
        assert!(add_missing_headers(&huge[..], "h").is_err());
    }

    #[test]
    fn message_ids_are_unique() {
        let a = message_id("h o.st");
        assert!(a.starts_with('<') && a.ends_with("@h-o.st>"), "{a}");
        assert_ne!(a, message_id("h o.st"));
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("mx.example:25"), "mx.example");
        assert_eq!(host_of("[::1]:25"), "::1");
        assert_eq!(host_of("127.0.0.1:587"), "127.0.0.1");
    }

    #[test]
    fn validation() {
        assert!(Envelope::new("a@b", ["c@d"]).validate().is_ok());
        assert!(Envelope::new("a@b", ["c@d\r\nRSET"]).validate().is_err());
        assert!(Envelope::new("a@b\n", ["c@d"]).validate().is_err());
        assert!(Envelope::new("a@b", ["<c@d>"]).validate().is_err());
        assert!(Envelope::new("a@b", Vec::<String>::new()).validate().is_err());
    }
}
