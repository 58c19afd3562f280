//! [`Options`]: everything a [`Server`](crate::Server) is configured with, in one place (the
//! core's SMTP [`Config`], TLS, the concurrency caps, the per-client [`limits`](crate::limits),
//! PROXY, parking).

use std::sync::Arc;
use std::time::Duration;

use smtp_proto::ehlo::AuthMechanisms;
use smtp_proto::server::Config;

use crate::limits::ClientLimits;
use crate::proxy::{Network, ProxyPolicy};

/// Stack of a session thread by default (the platform's default is 2 MiB). Measured need of
/// the heaviest session we have — STARTTLS or implicit TLS, AUTH, then the mail server's
/// handler verifying SPF, DKIM (RSA) and DMARC over DNS on a Tokio runtime and storing into a
/// Maildir — found by running it on ever smaller stacks until it overflowed: 64–80 KiB in a
/// release build, 224–240 KiB in a debug build. 512 KiB keeps a margin of 2x for debug builds
/// and 6x for release builds. See [`Options::session_stack_size`].
pub const DEFAULT_SESSION_STACK: usize = 512 * 1024;

/// Server options, named after Node `smtp-server`'s where they mean the same. Everything SMTP
/// (limits, timeouts, extensions) lives in the core's [`Config`], reachable through
/// [`Options::config_mut`]; the methods here are shortcuts onto it.
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) config: Config,
    pub(crate) banner: String,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) secure: bool,
    pub(crate) max_clients: usize,
    pub(crate) read_buffer: usize,
    /// Per-client limits ([`Options::max_connections_per_client`] and the others, in
    /// `limits.rs`).
    pub(crate) limits: ClientLimits,
    pub(crate) stack_size: usize,
    /// Peers that send a PROXY header first ([`Options::proxy_from`], in `proxy.rs`).
    pub(crate) proxy: ProxyPolicy,
    /// After how long without input a session gives its thread back
    /// ([`Options::park_idle_sessions_after`]).
    pub(crate) park_after: Option<Duration>,
}

/// How long a session waits for its client on its own thread before it parks, by default:
/// not at all, a read that finds nothing parks it ([`Options::park_idle_sessions_after`]).
pub const DEFAULT_PARK_AFTER: Duration = Duration::ZERO;

impl Options {
    /// Defaults for a server called `hostname`: the core's defaults (RFC 5321 limits and
    /// timeouts), no TLS, no AUTH, at most 1,000 concurrent clients, per-client limits (50 at
    /// once, 120 new per minute, 10 AUTH failures per hour; see
    /// [`Options::max_connections_per_client`]).
    pub fn new(hostname: &str) -> Self {
        Self {
            config: Config::new(hostname),
            banner: "ESMTP smtp-std".to_owned(),
            tls: None,
            secure: false,
            max_clients: 1000,
            read_buffer: 64 * 1024,
            limits: ClientLimits::default(),
            stack_size: DEFAULT_SESSION_STACK,
            proxy: ProxyPolicy::default(),
            park_after: Some(DEFAULT_PARK_AFTER),
        }
    }

    /// The core's configuration: limits, timeouts, capabilities, policies.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The core's configuration, to change anything the shortcuts do not cover.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// Greeting text after `220 <hostname> ` (smtp-server `banner`).
    pub fn banner(mut self, banner: &str) -> Self {
        banner.clone_into(&mut self.banner);
        self
    }

    /// TLS certificate and key: offers STARTTLS on plain listeners and allows
    /// [`Server::listen_tls`] (implicit TLS).
    ///
    /// [`Server::listen_tls`]: crate::Server::listen_tls
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self.config.capabilities.starttls = true;
        self
    }

    /// Every listener added with [`Server::listen`] speaks implicit TLS (smtp-server `secure`,
    /// RFC 8314 port 465). Needs [`Options::tls`].
    ///
    /// [`Server::listen`]: crate::Server::listen
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// SASL mechanisms to offer (AUTH); the core runs PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER and
    /// passes the credentials to [`Handler::auth`].
    ///
    /// [`Handler::auth`]: crate::Handler::auth
    pub fn auth_mechanisms(mut self, mechanisms: AuthMechanisms) -> Self {
        self.config.capabilities.auth = mechanisms;
        self
    }

    /// Whether MAIL is allowed without AUTH (smtp-server `authOptional`; core
    /// `!require_auth`). Default: optional.
    pub fn auth_optional(mut self, optional: bool) -> Self {
        self.config.require_auth = !optional;
        self
    }

    /// Allow AUTH without TLS (smtp-server `allowInsecureAuth`). Default: refused with
    /// `538 5.7.11` and not offered in clear text.
    pub fn allow_insecure_auth(mut self, allow: bool) -> Self {
        self.config.allow_insecure_auth = allow;
        self
    }

    /// Largest message in octets, advertised with SIZE (smtp-server `size`); `None`: no limit.
    pub fn size(mut self, max: Option<u64>) -> Self {
        self.config.max_message_size = max;
        self
    }

    /// Disables commands by withdrawing their extension (smtp-server `disabledCommands`):
    /// `AUTH`, `STARTTLS`, `BDAT`/`CHUNKING`, `SMTPUTF8`, `8BITMIME`, `DSN`, `PIPELINING`.
    /// Unknown names are ignored.
    pub fn disabled_commands(mut self, commands: &[&str]) -> Self {
        let caps = &mut self.config.capabilities;
        for c in commands {
            match c.to_ascii_uppercase().as_str() {
                "AUTH" => caps.auth = AuthMechanisms::none(),
                "STARTTLS" => caps.starttls = false,
                "BDAT" | "CHUNKING" => caps.chunking = false,
                "SMTPUTF8" => caps.smtputf8 = false,
                "8BITMIME" => caps.eightbitmime = false,
                "DSN" => caps.dsn = false,
                "PIPELINING" => caps.pipelining = false,
                _ => {}
            }
        }
        self
    }

    /// Most concurrent clients (smtp-server `maxClients`); past it a client gets
    /// `421 4.7.0` and is closed without a session thread (on an implicit-TLS listener it is
    /// closed without a reply: a plaintext 421 would be garbage to a TLS client, and a
    /// handshake would tie up the accepting thread). Default 1,000: an idle session parks
    /// without a thread ([`Options::park_idle_sessions_after`]), costs about 3.4 KiB and no
    /// CPU; 10,000 were measured to hold (the process needs as many file descriptors, see
    /// `ulimit -n`).
    pub fn max_clients(mut self, max: usize) -> Self {
        self.max_clients = max.max(1);
        self
    }

    /// One inactivity timeout for every state (smtp-server `socketTimeout`): waiting for a
    /// command, for message content and for the TLS handshake. Default: the core's RFC 5321
    /// values (5 min for commands, 3 min for content).
    pub fn socket_timeout(mut self, timeout: Duration) -> Self {
        let t = &mut self.config.timeouts;
        t.command = timeout;
        t.data = timeout;
        t.tls_handshake = timeout;
        self
    }

    /// Largest read buffer of a connection (at least the core's minimum). Default 64 KiB. A
    /// session starts with 4 KiB and grows it when a read fills it; a parked session keeps none.
    pub fn read_buffer(mut self, size: usize) -> Self {
        self.read_buffer = size;
        self
    }

    /// Stack size of each session thread, in bytes (at least 64 KiB). Default
    /// [`DEFAULT_SESSION_STACK`] (512 KiB). A stack costs memory only where it is touched, but
    /// its whole size is reserved: 10,000 sessions at the platform's 2 MiB are 20 GB of address
    /// space (and of commit charge where overcommit is strict). Raise it if your [`Handler`]
    /// recurses deeply or keeps large values on the stack: a stack overflow aborts the process.
    ///
    /// [`Handler`]: crate::Handler
    pub fn session_stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes.max(64 * 1024);
        self
    }

    /// A session whose client has sent nothing for this long parks: its socket and state wait
    /// in the server's epoll instance and its thread goes back to the pool; when the client
    /// sends, or the session's timeout is due, one of the threads waiting on that instance
    /// takes it up where it stopped, on its own stack. A waiting session so costs a few KiB of
    /// memory and no thread.
    ///
    /// The default, [`DEFAULT_PARK_AFTER`] (zero), parks a session as soon as a read finds
    /// nothing: a readiness loop run by a few threads (as many as the cores, at least two),
    /// which also accept new connections, and which costs the least CPU per message (no thread
    /// wakes up for a round trip when a busy server's threads find input waiting). A delay
    /// keeps a session on its thread for that long first: a thread per talking session, each
    /// woken by its own client. `None`: every session keeps its thread to its end, and one
    /// thread per listener accepts. Sessions are never parked in a [`Handler`] call: a handler
    /// may block as long as it needs, and the others are served meanwhile on other threads.
    ///
    /// [`Handler`]: crate::Handler
    pub fn park_idle_sessions_after(mut self, after: Option<Duration>) -> Self {
        self.park_after = after;
        self
    }

    /// Most connections open at once from one client address (IPv6: one /64), like Postfix's
    /// `smtpd_client_connection_count_limit`; past it `421 4.7.0 Too many connections from
    /// your address` and close, before any thread is started. 0: no limit. Default 50
    /// (Postfix's): one address holding its share cannot fill the server.
    pub fn max_connections_per_client(mut self, max: u32) -> Self {
        self.limits.max_connections = max;
        self
    }

    /// Most new connections per minute from one client address (a token bucket: that many at
    /// once, then one every 60/N s); past it `421 4.7.0` and close. Refused connections are
    /// not counted. 0: no limit. Default 120: a sender that opens a connection per message
    /// still gets 2 a second, while one address cannot make the server start threads (and
    /// TLS handshakes) as fast as it can connect. Postfix's `smtpd_client_connection_rate_limit`
    /// is off by default; sites set it around 30.
    pub fn max_connection_rate(mut self, per_minute: u32) -> Self {
        self.limits.max_rate = per_minute;
        self
    }

    /// Most refused AUTH attempts (5xx from [`crate::Handler::auth`]; a temporary 4xx is not
    /// counted) per hour from one client address; the one that reaches it is answered
    /// `421 4.7.0` and the client is locked out for [`Options::auth_lockout`]: new connections
    /// get `421 4.7.0` at once, and AUTH in its sessions still open is answered `421 4.7.0`
    /// without asking the handler. 0: no limit. Default 10.
    ///
    /// [`Options::auth_lockout`]: crate::Options::auth_lockout
    pub fn max_auth_failures(mut self, per_hour: u32) -> Self {
        self.limits.max_auth_failures = per_hour;
        self
    }

    /// How long a client that reached [`crate::Options::max_auth_failures`] stays locked out.
    /// Default one hour.
    pub fn auth_lockout(mut self, cool_down: Duration) -> Self {
        self.limits.lockout = cool_down;
        self
    }

    /// Clients that no per-client limit applies to (this host, a trusted relay; Postfix
    /// exempts `$mynetworks`). Replaces the list given before. Default: none.
    pub fn limits_exempt(mut self, networks: impl IntoIterator<Item = Network>) -> Self {
        self.limits.exempt = networks.into_iter().collect();
        self
    }

    /// The per-client limits.
    pub fn client_limits(&self) -> &ClientLimits {
        &self.limits
    }

    /// Connections from these networks come through a proxy that sends the PROXY protocol
    /// (v1 or v2) first, like HAProxy's `send-proxy-v2`: the session sees the client address
    /// it carries. A connection from them without a valid header is closed without a greeting;
    /// from anyone else a header is not interpreted. Replaces the list given before; applies to
    /// every listener of the server. Default: none. See [`crate::proxy`].
    pub fn proxy_from(mut self, networks: impl IntoIterator<Item = Network>) -> Self {
        self.proxy.from = networks.into_iter().collect();
        self
    }

    /// How long a proxy has to send its PROXY header once connected. Default 5 s.
    pub fn proxy_timeout(mut self, timeout: Duration) -> Self {
        self.proxy.timeout = timeout;
        self
    }
}
