//! The sections of the config file as [`Config`](super::Config) holds them once checked:
//! `[listen]`, `[tls]`, `[dns]`, `[delivery]`, `[limits]`, `[outbound]`, `[queue]`,
//! `[[domain]]`, `[[dnsbl]]` and `[spam]`, each with its defaults.

use super::*;

/// An alias member or a catch-all target of the config file, and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The key (`domain[0].aliases.sales`, `domain[1].catch_all`).
    pub key: String,
    /// Its line.
    pub line: usize,
    /// The full address (lower case).
    pub address: String,
}

/// One `[[dnsbl]]`: a DNS blocklist (or, with a negative score, an allow list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblZone {
    /// The zone (`zen.spamhaus.org`), lower case, without a trailing dot.
    pub zone: String,
    /// Added to the client's total when the zone lists it (default 1; negative for an allow
    /// list such as `list.dnswl.org`).
    pub score: i32,
}

/// `[spam]`: what the DNSBL total does, and greylisting (see [`crate::mta::spam`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpamConfig {
    /// At this DNSBL total (or more) the client is refused at RCPT (`554 5.7.1`). At least 1.
    #[serde(deserialize_with = "at_least_one")]
    pub dnsbl_threshold: i32,
    /// At this DNSBL total (or more), below `dnsbl_threshold`, its messages are spam: into
    /// `.Junk` (Maildirs) or marked `X-Spam-Flag: YES` (LMTP). At least 1; set it to
    /// `dnsbl_threshold` or above to never junk on DNSBL alone.
    #[serde(deserialize_with = "at_least_one")]
    pub dnsbl_junk_threshold: i32,
    /// Most DNSBL answers kept (per client address and zone); 0: none kept.
    pub dnsbl_cache_size: usize,
    /// An answer is kept for its TTL, at most this long.
    #[serde(deserialize_with = "duration")]
    pub dnsbl_max_ttl: Duration,
    /// How often each zone's test points are checked again (127.0.0.2 listed, 127.0.0.1 not).
    #[serde(deserialize_with = "duration")]
    pub dnsbl_health_interval: Duration,
    /// Greylisting: an unknown (client network, sender, recipient) triplet gets `451 4.7.1`
    /// until this long after its first attempt. `None` (the default, or `"0s"`): off.
    #[serde(deserialize_with = "duration_opt")]
    pub greylist: Option<Duration>,
    /// A triplet not retried within this long after its first attempt starts over.
    #[serde(deserialize_with = "duration")]
    pub greylist_retry_window: Duration,
    /// A triplet that passed is remembered this long after it was last seen.
    #[serde(deserialize_with = "duration")]
    pub greylist_max_age: Duration,
    /// Most triplets remembered (and as many sender domains); the least recently seen go.
    pub greylist_max_entries: usize,
    /// The client network of a triplet: IPv4 prefix length.
    #[serde(deserialize_with = "ipv4_prefix")]
    pub greylist_ipv4_prefix: u8,
    /// The client network of a triplet: IPv6 prefix length.
    #[serde(deserialize_with = "ipv6_prefix")]
    pub greylist_ipv6_prefix: u8,
}

impl Default for SpamConfig {
    fn default() -> Self {
        Self {
            dnsbl_threshold: 1,
            dnsbl_junk_threshold: 1,
            dnsbl_cache_size: 10_000,
            dnsbl_max_ttl: Duration::from_secs(3600),
            dnsbl_health_interval: Duration::from_secs(3600),
            greylist: None,
            greylist_retry_window: Duration::from_secs(2 * 86400),
            greylist_max_age: Duration::from_secs(35 * 86400),
            greylist_max_entries: 100_000,
            greylist_ipv4_prefix: 24,
            greylist_ipv6_prefix: 64,
        }
    }
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let n = i32::deserialize(d)?;
    if n < 1 {
        return Err(de::Error::custom(format!("{n}: must be at least 1 (a client on no list has the total 0)")));
    }
    Ok(n)
}

fn prefix<'de, D: Deserializer<'de>>(d: D, max: u8) -> Result<u8, D::Error> {
    let n = u8::deserialize(d)?;
    if n > max {
        return Err(de::Error::custom(format!("{n}: a prefix length is at most {max}")));
    }
    Ok(n)
}

fn ipv4_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    prefix(d, 32)
}

fn ipv6_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    prefix(d, 128)
}

/// `[listen]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Mail from the world for our domains (port 25; STARTTLS when `[tls]` is set).
    #[serde(default)]
    pub smtp: Vec<SocketAddr>,
    /// Submission (RFC 6409, port 587): STARTTLS, AUTH required before MAIL. Needs `[tls]`.
    #[serde(default)]
    pub submission: Vec<SocketAddr>,
    /// Submission over implicit TLS (RFC 8314, port 465), AUTH required. Needs `[tls]`.
    #[serde(default)]
    pub submissions: Vec<SocketAddr>,
    /// Proxies (CIDR) that start each connection with a PROXY protocol header (HAProxy's
    /// `send-proxy-v2`), on every listener: the client address it carries is the session's.
    #[serde(default)]
    pub proxy: Vec<crate::proxy::Network>,
    /// HTTPS (port 443): the MTA-STS policies and ACME's tls-alpn-01. Needs `[tls]` or `[acme]`.
    #[serde(default)]
    pub https: Vec<SocketAddr>,
    /// Plain HTTP (port 80): ACME's http-01, and a redirect to https for everything else.
    #[serde(default)]
    pub http: Vec<SocketAddr>,
    /// `GET /metrics` (Prometheus text format) on these addresses; none by default. Keep it
    /// on loopback or a private network: it tells how much mail flows.
    #[serde(default)]
    pub metrics: Vec<SocketAddr>,
}

/// `[acme]`: the certificate from an ACME CA (RFC 8555), such as Let's Encrypt, instead of
/// `[tls]` files (see [`crate::mta::acme`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's directory URL (`https://acme-v02.api.letsencrypt.org/directory`).
    pub directory: String,
    /// The account's contact address (the CA writes about expiring certificates or problems).
    pub email: Option<String>,
    /// Trust this CA (PEM) for the directory too: a test CA such as pebble's.
    pub ca: Option<PathBuf>,
    /// How the CA checks that the names are ours.
    #[serde(default)]
    pub challenge: AcmeChallenge,
}

/// `[acme] challenge`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AcmeChallenge {
    /// RFC 8737: a TLS handshake on `[listen] https` (port 443) with ALPN `acme-tls/1`.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3: `GET /.well-known/acme-challenge/<token>` on `[listen] http` (port 80).
    #[serde(rename = "http-01")]
    Http01,
}

/// `[outbound]`: how mail leaves.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// The MX hosts' port (default 25).
    pub port: Option<u16>,
    /// The source address of outgoing connections (the one SPF and PTR name).
    pub bind: Option<std::net::IpAddr>,
    /// Relay everything through this host (`host:port`) instead of the MX hosts.
    pub smarthost: Option<String>,
    /// AUTH user at the smarthost.
    pub smarthost_user: Option<String>,
    /// A file whose first line is the smarthost password (kept out of the config file).
    pub smarthost_password_file: Option<PathBuf>,
    /// `starttls` (default: required, certificate verified), `tls` (implicit, port 465), or
    /// `none` (no TLS: a relay on this host, such as a filter; never sends AUTH).
    pub smarthost_tls: Option<String>,
    /// Trust only this CA file for the smarthost's certificate (default: Mozilla's roots).
    pub smarthost_ca: Option<PathBuf>,
    /// MTA-STS (RFC 8461) for the recipients' domains (default true).
    pub mta_sts: Option<bool>,
    /// Also trust this CA file (PEM) for MTA-STS: the policy hosts' and the MX hosts'
    /// certificates (a private CA; default: Mozilla's roots only).
    pub mta_sts_ca: Option<PathBuf>,
    /// Fetch MTA-STS policies from this port instead of 443 (tests).
    pub mta_sts_https_port: Option<u16>,
    /// Bound on each network wait (`"60s"`); default RFC 5321's.
    #[serde(default, deserialize_with = "duration_opt")]
    pub timeout: Option<Duration>,
}

/// `[queue]`: retries and reports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Waits between attempts; the last repeats.
    #[serde(deserialize_with = "durations")]
    pub retry: Vec<Duration>,
    /// Give up after this long (bounce).
    #[serde(deserialize_with = "duration")]
    pub lifetime: Duration,
    /// One delay notice after this long; `"0"` turns it off.
    #[serde(deserialize_with = "duration")]
    pub delay_warning: Duration,
    /// Delivery workers.
    pub workers: usize,
    /// How often the queue is looked at for due entries.
    #[serde(deserialize_with = "duration")]
    pub scan_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let s = crate::mta::queue::Schedule::default();
        Self {
            retry: s.retry,
            lifetime: s.lifetime,
            delay_warning: s.delay_warning,
            workers: 4,
            scan_interval: Duration::from_secs(30),
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[dns]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Ask this server (`ADDR:PORT`) instead of the system's resolvers.
    pub server: Option<SocketAddr>,
    /// How long one query waits (`"3s"`).
    #[serde(default, deserialize_with = "duration_opt")]
    pub timeout: Option<Duration>,
    /// DNSSEC, and so DANE outbound: `"off"` (the default), `"validate"` (hickory validates)
    /// or `"trust-ad"` (trust the AD bit of `server`, a local validating resolver).
    #[serde(default)]
    pub dnssec: crate::mta::dane::DnssecMode,
    /// With `dnssec = "validate"`: a file of DNSKEY records to validate from instead of the
    /// root's keys (a test zone's).
    pub trust_anchor: Option<PathBuf>,
}

/// `[delivery]`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryConfig {
    /// Hand every accepted message to this LMTP server (`host:port`, or a Unix socket path)
    /// instead of writing the Maildirs ourselves.
    pub lmtp: Option<String>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message in octets (advertised with SIZE); 0: no limit.
    pub max_message_size: u64,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Most concurrent clients.
    pub max_clients: usize,
    /// Most connections at once from one client address (IPv6: one /64); 0: no limit.
    /// `trusted_networks` are exempt from the per-client limits.
    pub max_connections_per_client: u32,
    /// Most new connections per minute from one client address; 0: no limit.
    pub max_connection_rate: u32,
    /// Most failed AUTH attempts per hour from one client address, then an hour locked out;
    /// 0: no limit.
    pub max_auth_failures: u32,
    /// Errors before a client is disconnected.
    pub max_errors: u32,
    /// Inactivity timeout (`"5m"`); default RFC 5321's. Also a deadline: a command line must
    /// be complete within it of its first byte.
    #[serde(deserialize_with = "duration_opt")]
    pub timeout: Option<Duration>,
    /// Least average rate of message data in octets/s, once `timeout` has passed since
    /// DATA/BDAT (then `421 4.4.2`, nothing stored); 0: off. Default 1024.
    pub min_data_rate: u64,
    /// Octets that must stay free on the file system of `data_dir`: below it, MAIL gets
    /// `452 4.3.1 Insufficient system storage` (so does a write that finds the disk full);
    /// 0: no check. Default 100 MiB.
    pub min_free_space: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 25 << 20,
            max_recipients: 1000,
            max_clients: 1000,
            max_connections_per_client: 50,
            max_connection_rate: 120,
            max_auth_failures: 10,
            max_errors: 20,
            timeout: None,
            min_data_rate: crate::DEFAULT_MIN_DATA_RATE,
            min_free_space: 100 << 20,
        }
    }
}

/// One `[[domain]]`: a domain we receive mail for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// The domain, lower case, without a trailing dot.
    pub name: String,
    /// Where mail for unknown local parts goes (full addresses), if anywhere.
    pub catch_all: Option<Vec<String>>,
    /// Local part (lower case) → full addresses it reaches.
    pub aliases: BTreeMap<String, Vec<String>>,
    /// DKIM selector and key file (PEM, from `dkim-keygen` or quickstart): mail from the
    /// domain's accounts is signed with it before it is queued.
    pub dkim: Option<(String, PathBuf)>,
}
