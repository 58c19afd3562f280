//! DANE for outbound SMTP (RFC 7672): the TLSA records of each MX host, taken only from
//! DNSSEC-validated answers, decide whether TLS is mandatory and which certificate the host
//! must present.
//!
//! - [`DnssecMode::Off`] (the default, as in Postfix): no DANE; TLS is opportunistic.
//! - [`DnssecMode::TrustAd`]: the resolver of `[dns] server` (or the system's) validates and
//!   says so with the AD bit; we trust that bit. Only safe with a resolver on this host
//!   (loopback) or on a path nobody else can write to.
//! - [`DnssecMode::Validate`]: hickory validates the answers itself, from the root's keys or
//!   `[dns] trust_anchor`.
//!
//! Per domain ([`Dane::mx_is_secure`]): DANE applies only when the MX answer is secure (RFC
//! 7672 §2.2); a bogus MX answer fails the delivery attempt for now. Per MX host
//! ([`Dane::host`]): `_PORT._tcp.HOST` TLSA; secure usable records (DANE-EE, DANE-TA) make TLS
//! mandatory with a [`verify::DaneVerifier`]; a secure set of only unusable records makes TLS
//! mandatory without authentication (§2.2); insecure or no records: opportunistic as without
//! DANE; a failed TLSA lookup makes the host unusable for now (§2.2.1), the next one is tried.
//!
//! MTA-STS (RFC 8461, [`crate::mta::sts`]) applies to the hosts without DANE (the MX answer
//! insecure, or no usable TLSA records): [`HostTls::WebPki`]; DANE takes precedence (§2).
//!
//! A domain without MX records whose denial is secure gets DANE for its implicit MX (the
//! domain itself as the host, §2.2.1).
//!
//! Not done: TLSA base names from CNAME expansion of MX hosts (§2.2.2; the MX host's own name
//! is used), and checking that the host's address records are secure before asking for TLSA
//! (we ask regardless, which only makes DANE apply more often).

pub mod lookup;
pub mod verify;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::rr::{RData, RecordType};
use serde::Deserialize;

use crate::mta::auth::Dns;
pub use lookup::{Answer, Validation};
pub use verify::{dane_tls_config, Tlsa};

/// A DNSSEC-signed name whose answer shows whether the resolver validates (what `check`
/// asks by default, and `serve` once at start).
pub const PROBE_NAME: &str = "ietf.org";

/// `[dns] dnssec`: where DNSSEC status comes from, and so whether DANE is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnssecMode {
    /// No DNSSEC, no DANE: opportunistic TLS (the default; DANE needs a validating
    /// resolver the server can trust, which only the administrator knows it has).
    #[default]
    Off,
    /// hickory validates every answer itself.
    Validate,
    /// Trust the AD bit of the configured resolver (a local validating resolver).
    TrustAd,
}

impl fmt::Display for DnssecMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnssecMode::Off => "off",
            DnssecMode::Validate => "validate",
            DnssecMode::TrustAd => "trust-ad",
        })
    }
}

/// The TLS an MX host gets.
#[derive(Debug, Clone)]
pub enum HostTls {
    /// No DANE and no MTA-STS for it: STARTTLS when offered, any certificate.
    Opportunistic,
    /// TLS is mandatory and the certificate must match one of `records`: `config` checks it.
    Authenticated {
        /// The client configuration with the [`verify::DaneVerifier`].
        config: Arc<rustls::ClientConfig>,
        /// The usable TLSA records.
        records: Vec<Tlsa>,
    },
    /// A secure TLSA set with only unusable records: TLS mandatory, not authenticated.
    Encrypted,
    /// An MTA-STS policy (no DANE for the host): TLS with a certificate `config` checks
    /// against the web PKI for the MX name; `enforce`: else no delivery, otherwise (`testing`)
    /// a failure is only reported.
    WebPki {
        /// Mozilla's roots and `[outbound] mta_sts_ca`.
        config: Arc<rustls::ClientConfig>,
        /// Whether the policy's mode is `enforce`.
        enforce: bool,
    },
    /// The host cannot be used now (its TLSA lookup failed): why.
    Unusable(String),
}

/// DANE's DNS side: validated lookups of MX and TLSA records.
#[derive(Debug, Clone)]
pub struct Dane {
    validation: Validation,
    mode: DnssecMode,
}

/// The error for a trust anchor file that cannot be used.
fn anchor_error(path: &Path, e: impl fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "dns.trust_anchor {}: {e} (DNSKEY records in zone file syntax: `name. IN DNSKEY 257 3 13 <key>`)",
            path.display()
        ),
    )
}

impl Dane {
    /// DANE with `mode`'s validation, asking `server` (else the system's resolvers), each
    /// query waiting `timeout`; `None` when `mode` is [`DnssecMode::Off`]. `trust_anchor`:
    /// DNSKEY records to validate from instead of the root's (with [`DnssecMode::Validate`]).
    pub fn new(
        mode: DnssecMode,
        server: Option<SocketAddr>,
        timeout: Duration,
        trust_anchor: Option<&Path>,
    ) -> io::Result<Option<Self>> {
        let validation = match mode {
            DnssecMode::Off => return Ok(None),
            DnssecMode::TrustAd => {
                let servers = match server {
                    Some(s) => vec![s],
                    None => Dns::new(None)?.servers().to_vec(),
                };
                Validation::TrustAd { servers, timeout }
            }
            DnssecMode::Validate => {
                let anchors = match trust_anchor {
                    Some(path) => {
                        let text = std::fs::read_to_string(path).map_err(|e| anchor_error(path, e))?;
                        let anchors = text
                            .parse::<hickory_resolver::proto::dnssec::TrustAnchors>()
                            .map_err(|e| anchor_error(path, e))?;
                        Some(anchors)
                    }
                    None => None,
                };
                Validation::Hickory(Box::new(Dns::validating(server, timeout, 2, anchors)?))
            }
        };
        Ok(Some(Self { validation, mode }))
    }

    /// The mode it was made with.
    pub fn mode(&self) -> DnssecMode {
        self.mode
    }

    /// The validated lookups.
    pub fn validation(&self) -> &Validation {
        &self.validation
    }

    /// Whether `domain`'s MX answer is secure (DANE applies to its hosts); `Err` when the
    /// answer could not be had or failed validation (the attempt is deferred).
    pub fn mx_is_secure(&self, domain: &str) -> Result<bool, String> {
        match self.validation.lookup(domain, RecordType::MX) {
            Answer::Secure(_) => Ok(true),
            Answer::Insecure(_) => Ok(false),
            Answer::Failed(e) => Err(format!("DANE: the MX records of {domain} cannot be validated: {e}")),
        }
    }

    /// What TLS `host` (an MX host of a domain whose MX answer is secure) gets on `port`.
    pub fn host(&self, host: &str, port: u16) -> HostTls {
        let name = format!("_{port}._tcp.{}", host.trim_end_matches('.'));
        let records = match self.validation.lookup(&name, RecordType::TLSA) {
            Answer::Secure(r) => r,
            Answer::Insecure(_) => return HostTls::Opportunistic,
            Answer::Failed(e) => return HostTls::Unusable(format!("DANE: the TLSA records of {name}: {e}")),
        };
        let all: Vec<Tlsa> = records
            .into_iter()
            .filter_map(|r| match r {
                RData::TLSA(t) => Some(Tlsa {
                    usage: t.cert_usage.into(),
                    selector: t.selector.into(),
                    matching: t.matching.into(),
                    data: t.cert_data,
                }),
                _ => None,
            })
            .collect();
        if all.is_empty() {
            return HostTls::Opportunistic;
        }
        let usable: Vec<Tlsa> = all.into_iter().filter(Tlsa::is_usable).collect();
        if usable.is_empty() {
            return HostTls::Encrypted;
        }
        HostTls::Authenticated { config: dane_tls_config(host.trim_end_matches('.'), usable.clone()), records: usable }
    }

    /// [`Dane::probe`] of [`PROBE_NAME`] in the background, its sentence logged (a warning
    /// when the resolver does not validate: DANE would then silently never apply). `serve`
    /// calls it once at start; there is no delay, and without a network the log says so.
    pub fn log_probe(dane: std::sync::Arc<Dane>) {
        let _ = std::thread::Builder::new().name("dnssec-probe".into()).spawn(move || match dane.probe(PROBE_NAME) {
            (true, text) => tracing::info!("{text}"),
            (false, text) => tracing::warn!("{text}"),
        });
    }

    /// Whether the resolver validates, from the answer for `name` (a name known to be signed,
    /// such as `ietf.org`): a sentence for `check`, and whether it is good news.
    pub fn probe(&self, name: &str) -> (bool, String) {
        let how = match self.mode {
            DnssecMode::TrustAd => "the resolver's AD bit (dnssec = \"trust-ad\")",
            _ => "hickory's own validation (dnssec = \"validate\")",
        };
        match self.validation.lookup(name, RecordType::SOA) {
            Answer::Secure(_) => {
                (true, format!("DNSSEC: the answer for {name} is validated by {how}: DANE outbound works with it"))
            }
            Answer::Insecure(_) => (
                false,
                format!(
                    "DNSSEC: the answer for {name} is not validated by {how}: the resolver does not validate \
                     (or {name} is not signed); DANE never applies. Run a validating resolver such as unbound \
                     on 127.0.0.1 and point [dns] server at it"
                ),
            ),
            Answer::Failed(e) => (false, format!("DNSSEC: no answer for {name} through {how}: {e}")),
        }
    }
}
