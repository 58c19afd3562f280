//! Direct delivery to the recipients' mail exchangers (RFC 5321 §5), without a smarthost,
//! and DKIM signing of what we send.
//!
//! [`deliver`] groups the recipients by domain (one transaction per domain), looks up each
//! domain's MX hosts with [`Dns::resolve_mx`] (implicit MX, RFC 7505 null MX), tries them in
//! preference order (equal preferences shuffled) and each host's addresses in turn, and moves
//! on after a connection failure or a temporary (4xx) failure: at the greeting, EHLO or MAIL,
//! at the end of data, or for recipients that got a 4xx (the ones accepted are done). A 5xx
//! greeting also moves on (the host does not want to talk to us); any other 5xx is final.
//!
//! The message is read once into a [`Spool`] (memory up to a bound, then an unlinked
//! temporary file) and sent from there to every domain.
//!
//! TLS: by default STARTTLS is used when offered, **without verifying the certificate**
//! ([`MxOptions::new`]): without DANE or MTA-STS there is no name a certificate could be
//! checked against that an attacker on the path could not also change (the MX record), so
//! MTAs encrypt opportunistically and accept any certificate. A failed handshake is retried
//! once without TLS, as MTAs do in that mode.
//!
//! With DANE ([`MxOptions::dane`], [`crate::mta::dane`]): for a domain whose MX answer is
//! DNSSEC-secure, each host's TLSA records decide; a host with usable records gets mandatory
//! TLS and a certificate check against them (no retry without TLS), and a failure there is a
//! temporary failure naming the host and the mismatch, the next host is tried.
//!
//! With MTA-STS ([`MxOptions::sts`], [`crate::mta::sts`]): for a host without DANE, a
//! domain's `enforce` policy allows only the MX hosts it names, over TLS with a certificate
//! valid for the MX name (else a temporary failure naming the domain, the policy and what
//! failed, and the next host); a `testing` policy checks the same, logs a failure and
//! delivers as without a policy.
//!
//! REQUIRETLS (RFC 8689, [`Envelope::requiretls`]): the message goes only to a host with
//! usable TLSA records of a domain whose MX answer is secure, over the TLS DANE checks (or
//! to an MX host of an MTA-STS `enforce` policy over TLS validated for its name), and
//! only if that host offers REQUIRETLS (the parameter is passed on); otherwise it fails with
//! `5.7.30` ([`RecipientStatus::enhanced`]).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{self, Envelope, Reply, SendError, SendOptions, SmtpClient, TlsMode};
use crate::mta::auth::{DkimKey, Dns, MxError, MxHost};
use crate::mta::dane::{Dane, HostTls};

mod spool;
pub use spool::{Spool, SPOOL_MEMORY};

/// Most addresses tried for one domain (like Postfix's `smtp_mx_address_limit`, higher).
pub const MAX_ADDRESSES: usize = 10;

/// A random number from the standard library's hasher keys (no extra dependency).
pub(super) fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}

/// Shuffles each run of hosts with the same preference (RFC 5321 §5.1), keeping the runs in
/// preference order.
pub fn shuffle_equal_preferences(hosts: &mut [MxHost]) {
    hosts.sort_by_key(|h| h.preference);
    let mut start = 0;
    while start < hosts.len() {
        let p = hosts[start].preference;
        let end = start + hosts[start..].iter().take_while(|h| h.preference == p).count();
        // Fisher-Yates on hosts[start..end].
        for i in (start + 1..end).rev() {
            let j = start + (random() % (i - start + 1) as u64) as usize;
            hosts.swap(i, j);
        }
        start = end;
    }
}

/// Settings for [`deliver`].
#[derive(Debug, Clone)]
pub struct MxOptions {
    /// The session settings used with every host: EHLO name, TLS mode and configuration,
    /// timeouts, pipelining. [`SendOptions::server`] and [`SendOptions::tls_server_name`]
    /// are set for each host (the TLS name is the MX host's name); AUTH is never sent.
    pub session: SendOptions,
    /// The SMTP port of the MX hosts (25).
    pub port: u16,
    /// Most addresses tried per domain ([`MAX_ADDRESSES`]).
    pub max_addresses: usize,
    /// Keep sessions open for the next message to the same host (the queue's workers);
    /// `None`: QUIT after each message.
    pub pool: Option<Arc<SessionPool>>,
    /// DANE (RFC 7672) for the MX hosts of DNSSEC-signed domains; `None`: opportunistic TLS
    /// only.
    pub dane: Option<Arc<Dane>>,
    /// MTA-STS (RFC 8461) for the hosts without DANE; `None`: off.
    pub sts: Option<Arc<crate::mta::sts::Sts>>,
    /// Told the outcome of TLS with each host of a domain under a policy (TLS-RPT).
    pub tls_outcomes: Option<Arc<dyn crate::mta::sts::TlsOutcomes>>,
}

/// How long an unused session stays in a [`SessionPool`].
pub const POOL_IDLE: Duration = Duration::from_secs(10);

/// Sessions kept open after a delivery, so that the next message to the same host reuses the
/// connection (no new TCP and TLS handshake, no EHLO and AUTH): at most 16 idle sessions,
/// each closed after [`POOL_IDLE`] unused.
#[derive(Default)]
pub struct SessionPool {
    idle: Mutex<Vec<(String, SmtpClient, Instant)>>,
}

impl fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.idle.lock().map_or(0, |v| v.len());
        f.debug_struct("SessionPool").field("idle", &n).finish()
    }
}

impl SessionPool {
    /// An idle session to `key` (`host:port`), if one is fresh enough.
    pub fn take(&self, key: &str) -> Option<SmtpClient> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|(_, _, at)| at.elapsed() < POOL_IDLE);
        let i = idle.iter().position(|(k, _, _)| k == key)?;
        Some(idle.swap_remove(i).1)
    }

    /// Keeps `session` to `key` for the next message; closes it when the pool is full.
    pub fn put(&self, key: &str, session: SmtpClient) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < 16 {
            idle.push((key.to_owned(), session, Instant::now()));
        } else {
            drop(idle);
            let _ = session.quit();
        }
    }
}

impl MxOptions {
    /// Port 25, `ehlo` as our name, opportunistic TLS without certificate verification (see
    /// the [module notes](self)), the session timeouts of RFC 5321 and a 30-second connect
    /// timeout.
    pub fn new(ehlo: &str) -> Self {
        let mut session = SendOptions::new("", ehlo);
        session.tls = TlsMode::Opportunistic;
        session.tls_config = Some(client::insecure_tls_config());
        Self { session, port: 25, max_addresses: MAX_ADDRESSES, pool: None, dane: None, sts: None, tls_outcomes: None }
    }
}

/// What became of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// A server took the message for it.
    Accepted,
    /// Not delivered, try again later (a 4xx, no host reachable, a DNS failure).
    Deferred,
    /// Not delivered and never will be as is (a 5xx, a null MX, no such domain).
    Failed,
}

/// The result for one recipient of [`deliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// The address.
    pub address: String,
    /// Accepted, deferred or failed.
    pub status: Status,
    /// The server's reply to its RCPT, when that decided.
    pub reply: Option<Reply>,
    /// The error that decided otherwise (the last one when several hosts were tried).
    pub error: Option<String>,
    /// The failure is about the message or envelope itself (larger than the server's SIZE,
    /// a forbidden character): `EX_DATAERR` in the program.
    pub unsendable: bool,
    /// The host that gave the last answer: `name [address]`.
    pub host: Option<String>,
    /// The enhanced status code of a failure that has its own (`5.7.30` for REQUIRETLS).
    pub enhanced: Option<(u8, u16, u16)>,
}

impl RecipientStatus {
    fn error(address: &str, status: Status, error: impl fmt::Display, host: Option<&str>) -> Self {
        Self {
            address: address.to_owned(),
            status,
            reply: None,
            error: Some(error.to_string()),
            unsendable: false,
            host: host.map(str::to_owned),
            enhanced: None,
        }
    }
}

/// `a@x: accepted 250 2.1.5 Ok (mx.x [192.0.2.1])`, `a@x: deferred: could not connect to
/// mx.x [192.0.2.1]:25: ...` (the host once).
impl fmt::Display for RecipientStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self.status {
            Status::Accepted => "accepted",
            Status::Deferred => "deferred",
            Status::Failed if self.error.is_some() => "failed",
            Status::Failed => "refused",
        };
        match (&self.error, &self.reply) {
            (Some(e), _) => write!(f, "{}: {word}: {e}", self.address)?,
            (None, Some(r)) => write!(f, "{}: {word} {r}", self.address)?,
            (None, None) => write!(f, "{}: {word}", self.address)?,
        }
        match &self.host {
            Some(h) if !self.error.as_deref().is_some_and(|e| e.contains(h.as_str())) => write!(f, " ({h})"),
            _ => Ok(()),
        }
    }
}

/// The domain of an address (after the last `@`, lower case, without a trailing dot).
pub fn domain_of(address: &str) -> Option<String> {
    let (_, d) = address.rsplit_once('@')?;
    let d = d.trim_end_matches('.');
    (!d.is_empty()).then(|| d.to_ascii_lowercase())
}

/// Delivers `message` to every recipient of `envelope` through its domain's MX hosts: one
/// transaction per domain, in the order the domains first appear. Returns each recipient's
/// result in envelope order. `envelope.size` is set from the spool when unset.
pub fn deliver(dns: &Dns, options: &MxOptions, envelope: &Envelope, message: &mut Spool) -> Vec<RecipientStatus> {
    let mut out: Vec<Option<RecipientStatus>> = vec![None; envelope.to.len()];
    let mut domains: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in envelope.to.iter().enumerate() {
        match domain_of(&r.address) {
            Some(d) => match domains.iter_mut().find(|(x, _)| *x == d) {
                Some((_, v)) => v.push(i),
                None => domains.push((d, vec![i])),
            },
            None => {
                out[i] = Some(RecipientStatus::error(&r.address, Status::Failed, "no domain in the address", None));
            }
        }
    }
    let mut envelope = envelope.clone();
    if envelope.size.is_none() {
        envelope.size = Some(message.len());
    }
    for (domain, indices) in &domains {
        deliver_domain(dns, options, domain, &envelope, indices, message, &mut out);
    }
    out.into_iter()
        .zip(&envelope.to)
        .map(|(s, r)| s.unwrap_or_else(|| RecipientStatus::error(&r.address, Status::Deferred, "not attempted", None)))
        .collect()
}

/// A failure of one attempt: while setting up the session, or with the message.
enum Attempt {
    Setup(SendError),
    Send(SendError),
}

/// Tells the TLS-RPT counter the outcome of TLS with a host (under DANE or not): `None`
/// success, else the result type.
type Report<'a> = &'a dyn Fn(&str, bool, Option<&'static str>);

fn attempt(
    report: Report<'_>,
    options: &MxOptions,
    host: &MxHost,
    tls: &HostTls,
    addr: IpAddr,
    envelope: &Envelope,
    message: &mut Spool,
) -> Result<client::Delivery, Attempt> {
    let mut o = options.session.clone();
    o.server = SocketAddr::new(addr, options.port).to_string();
    o.tls_server_name = Some(host.host.clone());
    o.auth = None;
    // A kept session is reused only under the same policy (DANE checks the name, too).
    let key = match tls {
        HostTls::Authenticated { config, .. } => {
            o.tls = TlsMode::Required;
            o.tls_config = Some(config.clone());
            format!("{} dane {}", o.server, host.host)
        }
        HostTls::Encrypted => {
            o.tls = TlsMode::Required;
            format!("{} tls", o.server)
        }
        HostTls::WebPki { config, enforce } => {
            o.tls = TlsMode::Required;
            o.tls_config = Some(config.clone());
            format!("{} sts-{} {}", o.server, if *enforce { "enforce" } else { "testing" }, host.host)
        }
        _ => o.server.clone(),
    };
    if let Some(pool) = &options.pool {
        if let Some(mut session) = pool.take(&key) {
            let reader = message.reader().map_err(|e| Attempt::Send(SendError::Input(e)))?;
            match session.send(envelope, reader) {
                Ok(delivery) => {
                    pool.put(&key, session);
                    return Ok(delivery);
                }
                // A kept session the server has meanwhile closed: a new one below.
                Err(e) if e.is_transient() => tracing::debug!(host = %host.host, %addr, "kept session failed ({e})"),
                Err(e) => return Err(Attempt::Send(e)),
            }
        }
    }
    let mut connected = SmtpClient::connect(&o);
    let mut validated = matches!(tls, HostTls::WebPki { .. } | HostTls::Authenticated { .. });
    if let (Err(e @ (SendError::Tls(_) | SendError::StartTlsNotOffered)), HostTls::WebPki { enforce: false, .. }) =
        (&connected, tls)
    {
        // MTA-STS testing: the failure is reported, the message goes out as without a policy.
        tracing::info!(host = %host.host, %addr, "MTA-STS testing policy: {e}; delivering anyway");
        report(&host.host, false, Some(crate::mta::sts::result_type(e, false)));
        (o.tls, o.tls_config) = (options.session.tls, options.session.tls_config.clone());
        connected = SmtpClient::connect(&o);
        validated = false;
    }
    let mut session = match connected {
        Err(SendError::Tls(e)) if o.tls == TlsMode::Opportunistic => {
            tracing::info!(host = %host.host, %addr, "TLS handshake failed ({e}); trying again without TLS");
            o.tls = TlsMode::Off;
            SmtpClient::connect(&o).map_err(Attempt::Setup)?
        }
        r => r.map_err(Attempt::Setup)?,
    };
    tracing::debug!(host = %host.host, %addr, tls = session.is_tls(), "connected");
    if validated {
        report(&host.host, matches!(tls, HostTls::Authenticated { .. }), None);
    }
    let reader = message.reader().map_err(|e| Attempt::Send(SendError::Input(e)))?;
    let delivery = session.send(envelope, reader).map_err(Attempt::Send)?;
    match &options.pool {
        Some(pool) => pool.put(&key, session),
        None => {
            let _ = session.quit();
        }
    }
    Ok(delivery)
}

fn deliver_domain(
    dns: &Dns,
    options: &MxOptions,
    domain: &str,
    envelope: &Envelope,
    indices: &[usize],
    message: &mut Spool,
    out: &mut [Option<RecipientStatus>],
) {
    let mut hosts = match dns.resolve_mx(domain) {
        Ok(h) => h,
        Err(e) => {
            let status = if matches!(e, MxError::Temporary(_)) { Status::Deferred } else { Status::Failed };
            tracing::info!(domain, "no delivery: {e}");
            set_status(envelope, out, indices, status, &format_args!("{domain}: {e}"), None);
            return;
        }
    };
    shuffle_equal_preferences(&mut hosts);
    // DANE applies when the MX answer is secure (RFC 7672 §2.2). Without it is where an
    // MTA-STS policy (RFC 8461) would apply: DANE takes precedence.
    let dane = match &options.dane {
        Some(d) => match d.mx_is_secure(domain) {
            Ok(secure) => secure.then_some(d),
            Err(e) => {
                tracing::info!(domain, "no delivery: {e}");
                set_status(envelope, out, indices, Status::Deferred, &e, None);
                return;
            }
        },
        None => None,
    };
    let requiretls = |out: &mut [Option<RecipientStatus>], ids: &[usize], e: &str, host: Option<&str>| {
        tracing::info!(domain, "{e}");
        set_status(envelope, out, ids, Status::Failed, &e, host);
        for &i in ids {
            if let Some(s) = out[i].as_mut() {
                s.enhanced = Some((5, 7, 30));
            }
        }
    };
    // MTA-STS: the policy applies to the hosts without DANE (RFC 8461 §2).
    let sts = options.sts.as_ref().and_then(|s| s.policy_or_report(domain, options.tls_outcomes.as_deref()));
    let report = |host: &str, under_dane: bool, failure: Option<&'static str>| {
        if let Some(r) = &options.tls_outcomes {
            let policy = match &sts {
                _ if under_dane => crate::mta::sts::PolicyRef::Tlsa,
                Some(p) => crate::mta::sts::PolicyRef::Sts(p),
                None => return,
            };
            r.record(domain, policy, host, failure);
        }
    };
    let enforce = sts.as_ref().is_some_and(|p| p.policy.mode == crate::mta::web::mtasts::Mode::Enforce);
    if envelope.requiretls && dane.is_none() && !enforce {
        let why = if options.dane.is_some() { "its MX records are not DNSSEC-signed" } else { "DANE is off here" };
        let e = format!("REQUIRETLS: no validated TLS possible to {domain} ({why}, and no MTA-STS enforce policy)");
        requiretls(out, indices, &e, None);
        return;
    }
    let mut pending: Vec<usize> = indices.to_vec();
    let mut tried = 0;
    'hosts: for host in &hosts {
        let mut tls = match dane {
            Some(d) if !host.addresses.is_empty() => d.host(&host.host, options.port),
            _ => HostTls::Opportunistic,
        };
        if let (HostTls::Opportunistic, Some(p), Some(s)) = (&tls, &sts, &options.sts) {
            if !p.policy.allows(&host.host) {
                let e = format!("{}: the MX host {} is not one it names", p.describe(domain), host.host);
                report(&host.host, false, Some("validation-failure"));
                if enforce {
                    tracing::info!(domain, host = %host.host, "{e}");
                    set_status(envelope, out, &pending, Status::Deferred, &e, Some(&host.host));
                    continue 'hosts;
                }
                tracing::info!(domain, host = %host.host, "{e} (testing: delivering anyway)");
            } else {
                tls = HostTls::WebPki { config: s.tls(), enforce };
            }
        }
        match &tls {
            HostTls::Unusable(e) => {
                tracing::info!(domain, host = %host.host, "{e}");
                set_status(envelope, out, &pending, Status::Deferred, e, Some(&host.host));
                continue 'hosts;
            }
            HostTls::Authenticated { records, .. } => {
                tracing::debug!(domain, host = %host.host, records = records.len(), "DANE: TLS and a matching certificate required")
            }
            HostTls::Encrypted => {
                tracing::debug!(domain, host = %host.host, "DANE: only unusable TLSA records, TLS required")
            }
            HostTls::WebPki { .. } | HostTls::Opportunistic => {}
        }
        if envelope.requiretls && !matches!(tls, HostTls::Authenticated { .. } | HostTls::WebPki { enforce: true, .. })
        {
            let e = format!(
                "REQUIRETLS: {} has no usable TLSA records and no MTA-STS enforce policy names it, so its TLS cannot be validated",
                host.host
            );
            requiretls(out, &pending, &e, Some(&host.host));
            continue 'hosts;
        }
        for &addr in &host.addresses {
            if tried >= options.max_addresses {
                break 'hosts;
            }
            tried += 1;
            let label = format!("{} [{addr}]", host.host);
            let mut sub = envelope.clone();
            sub.to = pending.iter().map(|&i| envelope.to[i].clone()).collect();
            let rcpt_results = match attempt(&report, options, host, &tls, addr, &sub, message) {
                Ok(delivery) => {
                    tracing::info!(domain, host = %label, "message accepted: {}", delivery.reply);
                    delivery.recipients
                }
                Err(Attempt::Send(SendError::NoValidRecipients(rs))) => rs,
                Err(Attempt::Setup(SendError::Connect { source, .. })) => {
                    // Not even a connection (no reply to report): the host's next address.
                    let e = format!("could not connect to {label}:{}: {source}", options.port);
                    tracing::info!(domain, host = %label, "{e}");
                    set_status(envelope, out, &pending, Status::Deferred, &e, Some(&label));
                    continue;
                }
                Err(Attempt::Setup(e @ (SendError::StartTlsNotOffered | SendError::Tls(_))))
                    if matches!(tls, HostTls::WebPki { .. }) =>
                {
                    let what = match &e {
                        SendError::StartTlsNotOffered => "does not offer STARTTLS".to_owned(),
                        e => format!("TLS failed: {e}"),
                    };
                    let p = sts.as_ref().map_or_else(String::new, |p| p.describe(domain));
                    let e2 = format!("{p}: {label} {what}");
                    report(&host.host, false, Some(crate::mta::sts::result_type(&e, false)));
                    tracing::info!(domain, host = %label, "{e2}");
                    set_status(envelope, out, &pending, Status::Deferred, &e2, Some(&label));
                    continue 'hosts;
                }
                Err(Attempt::Setup(SendError::StartTlsNotOffered)) if !matches!(tls, HostTls::Opportunistic) => {
                    report(&host.host, true, Some("starttls-not-supported"));
                    let e = format!("DANE: {label} has TLSA records but does not offer STARTTLS");
                    tracing::info!(domain, host = %label, "{e}");
                    set_status(envelope, out, &pending, Status::Deferred, &e, Some(&label));
                    continue 'hosts;
                }
                Err(Attempt::Setup(e)) => {
                    if matches!((&e, &tls), (SendError::Tls(_), HostTls::Authenticated { .. })) {
                        report(&host.host, true, Some(crate::mta::sts::result_type(&e, true)));
                    }
                    // Greeting, EHLO or STARTTLS failed (4xx or 5xx): the next host.
                    tracing::info!(domain, host = %label, "{e}");
                    let status = if e.is_transient() { Status::Deferred } else { Status::Failed };
                    set_status(envelope, out, &pending, status, &e, Some(&label));
                    continue 'hosts;
                }
                Err(Attempt::Send(SendError::Request(smtp_proto::client::ApiError::NotOffered(
                    smtp_proto::client::Extension::RequireTls,
                )))) => {
                    let e = format!("REQUIRETLS: {label} does not offer REQUIRETLS, which the message requires");
                    requiretls(out, &pending, &e, Some(&label));
                    continue 'hosts;
                }
                Err(Attempt::Send(e)) if e.is_transient() => {
                    tracing::info!(domain, host = %label, "{e}");
                    set_status(envelope, out, &pending, Status::Deferred, &e, Some(&label));
                    continue 'hosts;
                }
                Err(Attempt::Send(e)) => {
                    tracing::info!(domain, host = %label, "{e}");
                    let unsendable = matches!(e, SendError::Invalid(_) | SendError::Request(_));
                    set_status(envelope, out, &pending, Status::Failed, &e, Some(&label));
                    for &i in &pending {
                        if let Some(s) = out[i].as_mut() {
                            s.unsendable = unsendable;
                        }
                    }
                    return;
                }
            };
            let mut still = Vec::new();
            for (r, &i) in rcpt_results.iter().zip(&pending) {
                let status = if r.is_accepted() {
                    Status::Accepted
                } else if r.is_transient() || r.reply.is_none() {
                    still.push(i);
                    Status::Deferred
                } else {
                    Status::Failed
                };
                out[i] = Some(RecipientStatus {
                    address: r.address.clone(),
                    status,
                    reply: r.reply.clone(),
                    error: r.reply.is_none().then(|| "not answered".to_owned()),
                    unsendable: false,
                    host: Some(label.clone()),
                    enhanced: None,
                });
            }
            pending = still;
            if pending.is_empty() {
                return;
            }
            // Recipients deferred by this host: the next host.
            continue 'hosts;
        }
    }
    for &i in &pending {
        if out[i].is_none() {
            out[i] = Some(RecipientStatus::error(
                &envelope.to[i].address,
                Status::Deferred,
                format_args!("{domain}: no MX host could be tried"),
                None,
            ));
        }
    }
}

fn set_status(
    envelope: &Envelope,
    out: &mut [Option<RecipientStatus>],
    ids: &[usize],
    status: Status,
    e: &dyn fmt::Display,
    host: Option<&str>,
) {
    for &i in ids {
        out[i] = Some(RecipientStatus::error(&envelope.to[i].address, status, e, host));
    }
}

pub use crate::client::to_crlf;

/// The domain of the first mailbox of the message's first `From:` header field, if it has one
/// ([`crate::mta::address`]: a comment or a display name is never taken for it).
pub fn from_header_domain(message: &[u8]) -> Option<String> {
    use crate::mta::header::{read_fields, MAX_HEADER_SECTION};
    let fields = read_fields(message, &["From"], MAX_HEADER_SECTION).ok()?;
    let value = std::str::from_utf8(&fields.first()?.value).ok()?;
    let mailboxes = crate::mta::address::parse_address_list(value).ok()?;
    Some(mailboxes.first()?.domain.clone())
}

/// Normalises the line ends of `message` ([`to_crlf`]) and prepends a DKIM signature made with
/// [`crate::mta::auth::sign`] for `domain` and `selector`: the message to send, as is.
pub fn dkim_sign(message: &[u8], key: &DkimKey, domain: &str, selector: &str) -> Result<Vec<u8>, mail_auth::Error> {
    let body = to_crlf(message);
    let mut signed = crate::mta::auth::sign(&body, key, domain, selector)?;
    signed.extend_from_slice(&body);
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_and_from_domain() {
        assert_eq!(to_crlf(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(to_crlf(b"x\r\n"), b"x\r\n");
        let m = b"Subject: s\r\nFrom: \"A, B\" <me@Example.ORG>\r\nTo: x@y\r\n\r\nFrom: body@z\r\n";
        assert_eq!(from_header_domain(m).as_deref(), Some("example.org"));
        assert_eq!(from_header_domain(b"FROM :\r\n a@b.test\r\n\r\n").as_deref(), Some("b.test"));
        assert_eq!(from_header_domain(b"To: a@b\r\n\r\nFrom: c@d\r\n"), None);
        let tricky = b"From: \"x <y@b.test>\" (<z@c.test>) <me@A.test>\nTo: t@t.test\n\n";
        assert_eq!(from_header_domain(tricky).as_deref(), Some("a.test"));
        assert_eq!(domain_of("a@b@C.test."), Some("c.test".into()));
        assert_eq!(domain_of("postmaster"), None);
    }

    #[test]
    fn shuffle_keeps_preference_order() {
        let h = |p, n: &str| MxHost { preference: p, host: n.into(), addresses: vec![] };
        let mut seen_first = std::collections::HashSet::new();
        for _ in 0..64 {
            let mut v = vec![h(20, "c"), h(10, "a"), h(10, "b"), h(30, "d")];
            shuffle_equal_preferences(&mut v);
            let names: Vec<&str> = v.iter().map(|x| x.host.as_str()).collect();
            assert!(names[..2].contains(&"a") && names[..2].contains(&"b"));
            assert_eq!(&names[2..], ["c", "d"]);
            seen_first.insert(names[0].to_owned());
        }
        assert_eq!(seen_first.len(), 2, "equal preferences are shuffled");
    }

    #[test]
    fn spool_memory_and_file() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut s = Spool::new(&data[..], 1000).unwrap();
        assert!(s.is_file() && s.len() == data.len() as u64);
        for _ in 0..2 {
            let mut back = Vec::new();
            s.reader().unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
        }
        let mut m = Spool::new(&data[..], data.len()).unwrap();
        assert!(!m.is_file());
        let mut back = Vec::new();
        m.reader().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }
}
