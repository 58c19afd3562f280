//! Server limits, policies and timeouts: one place, RFC-sane defaults.

use core::time::Duration;

use crate::data::BarePolicy;
use crate::ehlo::Capabilities;

/// A host name stored inline (no heap), at most 255 octets.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostName {
    buf: [u8; 255],
    len: u8,
}

impl HostName {
    /// Stores `name`, cut to 255 octets at a character boundary; control characters and spaces
    /// become `-` so that the name can never break a reply line.
    pub fn new(name: &str) -> Self {
        let mut buf = [0u8; 255];
        let mut take = name.len().min(255);
        while !name.is_char_boundary(take) {
            take -= 1;
        }
        for (d, &s) in buf.iter_mut().zip(&name.as_bytes()[..take]) {
            *d = if s <= b' ' || s == 0x7f { b'-' } else { s };
        }
        Self { buf, len: take as u8 }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Built from a &str cut at a char boundary, with only ASCII bytes replaced by ASCII.
        core::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("localhost")
    }
}

impl core::fmt::Debug for HostName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Per-state timeouts (RFC 5321 §4.5.3.2). The core never reads a clock: it tells the caller
/// which one applies now ([`crate::server::Server::timeout`]); the caller says when it fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// Waiting for the next command (RFC 5321 §4.5.3.2.7: at least 5 minutes).
    pub command: Duration,
    /// Waiting for the next piece of DATA/BDAT content. RFC 5321 gives the server one timeout,
    /// at least 5 minutes (§4.5.3.2.7); the client's own data block timer is 3 minutes
    /// (§4.5.3.2.5), so a server that waits less could cut off a client within its rights.
    pub data: Duration,
    /// Waiting for the TLS handshake after `220` to STARTTLS.
    pub tls_handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            command: Duration::from_secs(300),
            data: Duration::from_secs(300),
            tls_handshake: Duration::from_secs(300),
        }
    }
}

/// Everything a server session is configured with.
///
/// ```
/// use smtp_proto::server::Config;
/// let mut config = Config::new("mx.example.org");
/// config.max_recipients = 50;
/// config.max_message_size = Some(10 << 20);
/// assert_eq!(config.hostname.as_str(), "mx.example.org");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Config {
    /// Our host name, written in the greeting and in replies.
    pub hostname: HostName,
    /// The extensions offered in the EHLO response.
    pub capabilities: Capabilities,
    /// Longest command line, CRLF included (RFC 5321 minimum 512; default 2048 like Postfix).
    /// A longer line is discarded up to its LF and answered `500 5.5.2`.
    pub max_command_line: usize,
    /// Longest AUTH command or SASL response line, CRLF included (RFC 4954: 12288).
    pub max_auth_line: usize,
    /// Longest text line in DATA, CRLF included (RFC 5321 §4.5.3.1.6: 1000); `None`: no limit.
    pub max_text_line: Option<usize>,
    /// Largest message in octets (SIZE, RFC 1870); `None`: no limit.
    pub max_message_size: Option<u64>,
    /// Most recipients per transaction (RFC 5321 requires at least 100); past it `452 4.5.3`.
    pub max_recipients: usize,
    /// Errors (4xx/5xx replies) without delivering mail before `421 4.7.0` and close.
    pub max_errors: u32,
    /// NOOP, RSET, VRFY, EXPN, HELP, HELO/EHLO beyond this many count as errors.
    pub max_junk_commands: u32,
    /// Bare CR / bare LF in message content (DATA and BDAT alike) and in command lines.
    pub bare_line_endings: BarePolicy,
    /// Bytes fed before the greeting is a synchronisation error (`554 5.5.0`, close).
    pub reject_early_talkers: bool,
    /// Bytes after the DATA line, before our 354, are a synchronisation error
    /// (`554 5.5.0`, close), as in Postfix ≥ 3.9.
    pub reject_pipelined_data: bool,
    /// MAIL, RCPT, DATA, BDAT, VRFY, EXPN and AUTH need TLS first (`530 5.7.0`).
    pub require_tls: bool,
    /// MAIL needs a successful AUTH first (`530 5.7.0`).
    pub require_auth: bool,
    /// Allow AUTH without TLS; otherwise AUTH is not offered in clear text and is answered
    /// `538 5.7.11`.
    pub allow_insecure_auth: bool,
    /// Speak LMTP (RFC 2033): LHLO instead of HELO/EHLO, one reply per recipient after DATA.
    pub lmtp: bool,
    /// Timeouts per state.
    pub timeouts: Timeouts,
}

impl Config {
    /// Defaults for a server called `hostname`.
    pub fn new(hostname: &str) -> Self {
        Self {
            hostname: HostName::new(hostname),
            capabilities: Capabilities::default(),
            max_command_line: 2048,
            max_auth_line: 12288,
            max_text_line: Some(1000),
            max_message_size: Some(25 << 20),
            max_recipients: 1000,
            max_errors: 20,
            max_junk_commands: 100,
            bare_line_endings: BarePolicy::Reject,
            reject_early_talkers: true,
            reject_pipelined_data: true,
            require_tls: false,
            require_auth: false,
            allow_insecure_auth: false,
            lmtp: false,
            timeouts: Timeouts::default(),
        }
    }

    /// The input buffer a caller needs at least: the longest line the core may have to see
    /// whole before it can consume it.
    pub fn min_input_buffer(&self) -> usize {
        self.max_command_line.max(self.max_auth_line)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new("localhost")
    }
}
