//! Client configuration and per-command timeouts: one place, RFC defaults.

use core::time::Duration;

use crate::data::BarePolicy;
use crate::parse::reply::ReplyLimits;
use crate::server::HostName;

/// Per-command timeouts (RFC 5321 §4.5.3.2): the core never reads a clock, it says which one
/// applies now ([`crate::client::Client::timeout`]) and the caller says when it fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// Waiting for the `220` greeting (§4.5.3.2.1: 5 minutes).
    pub greeting: Duration,
    /// Waiting for the reply to EHLO, HELO, STARTTLS, AUTH, RSET, QUIT (5 minutes).
    pub command: Duration,
    /// Waiting for the reply to MAIL (§4.5.3.2.2: 5 minutes).
    pub mail: Duration,
    /// Waiting for the reply to RCPT (§4.5.3.2.3: 5 minutes).
    pub rcpt: Duration,
    /// Waiting for the `354` to DATA (§4.5.3.2.4: 2 minutes).
    pub data_init: Duration,
    /// Sending one block of content, or waiting for the reply to an intermediate BDAT chunk
    /// (§4.5.3.2.5: 3 minutes).
    pub data_block: Duration,
    /// Waiting for the reply after the end of data or the last BDAT chunk (§4.5.3.2.6:
    /// 10 minutes; a shorter one risks duplicate deliveries).
    pub data_end: Duration,
    /// The TLS handshake after the `220` to STARTTLS.
    pub tls_handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(60 * m);
        Self {
            greeting: min(5),
            command: min(5),
            mail: min(5),
            rcpt: min(5),
            data_init: min(2),
            data_block: min(3),
            data_end: min(10),
            tls_handshake: min(5),
        }
    }
}

/// Everything a client session is configured with.
///
/// ```
/// use smtp_proto::client::Config;
/// let mut config = Config::new("client.example.org");
/// config.pipelining = false; // even if the server offers it
/// assert_eq!(config.hostname.as_str(), "client.example.org");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Config {
    /// Our name, sent with EHLO/HELO. Spaces and control characters become `-`.
    pub hostname: HostName,
    /// Bounds on the server's replies.
    pub reply_limits: ReplyLimits,
    /// Bare CR / bare LF in content pushed with [`crate::client::Client::send_body`]:
    /// [`BarePolicy::Allow`] (the default here) turns each into CRLF, [`BarePolicy::Reject`]
    /// refuses the message. Either way no smuggling sequence is sent.
    pub bare_line_endings: BarePolicy,
    /// Use PIPELINING (RFC 2920) when offered. Default on.
    pub pipelining: bool,
    /// Use CHUNKING (BDAT, RFC 3030) instead of DATA when offered. Default off: DATA is what
    /// every server does best; BDAT sends each pushed piece as one chunk and waits for its
    /// reply. Never used in LMTP mode (see [`Config::lmtp()`]).
    pub chunking: bool,
    /// Speak LMTP (RFC 2033) instead of SMTP: `LHLO` (no HELO fallback), and after the end of
    /// data one reply per recipient accepted at RCPT. See [`Config::lmtp()`]. Default off.
    pub lmtp: bool,
    /// Timeouts per command.
    pub timeouts: Timeouts,
}

impl Config {
    /// Defaults for a client called `hostname`.
    pub fn new(hostname: &str) -> Self {
        Self {
            hostname: HostName::new(hostname),
            reply_limits: ReplyLimits::default(),
            bare_line_endings: BarePolicy::Allow,
            pipelining: true,
            chunking: false,
            lmtp: false,
            timeouts: Timeouts::default(),
        }
    }

    /// Defaults for an LMTP client (RFC 2033) called `hostname`: [`Config::new`] with the
    /// field [`lmtp`](Self#structfield.lmtp) set. PIPELINING is used when the server offers it (RFC 2033
    /// servers must); BDAT never, even with [`Config::chunking`]: after `BDAT LAST` a refusal
    /// of the command itself (one reply) could not be told from the first of the
    /// per-recipient replies, after `DATA`'s end it can (RFC 2033 §4.2 fixes their number).
    ///
    /// ```
    /// use smtp_proto::client::Config;
    /// let config = Config::lmtp("mx.example.org");
    /// assert!(config.lmtp && config.pipelining);
    /// ```
    pub fn lmtp(hostname: &str) -> Self {
        Self { lmtp: true, ..Self::new(hostname) }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new("localhost")
    }
}
