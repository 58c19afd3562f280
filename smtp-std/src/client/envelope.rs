//! What to send and how: TLS policy, credentials, session options, the envelope.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::SendError;
use rustls::ClientConfig;
use smtp_proto::client::Timeouts;
use smtp_proto::parse::params::{Notify, Ret};

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
    /// ([`default_tls_config`](super::default_tls_config)). See also [`tls_config_from_ca_file`](super::tls_config_from_ca_file) and
    /// [`insecure_tls_config`](super::insecure_tls_config).
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
    /// `REQUIRETLS` (RFC 8689; refused if the server does not offer it).
    pub requiretls: bool,
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
            requiretls: false,
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
