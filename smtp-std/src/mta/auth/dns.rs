//! Blocking DNS on top of [`hickory_resolver`]: TXT, MX and address lookups with failures
//! classified (no such name / no data / temporary), and [`Dns::resolve_mx`] for delivery
//! (RFC 5321 §5.1 with RFC 7505 null MX).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;

/// How long one query waits for an answer before it is retried or fails.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// A DNS lookup that did not give records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// `NXDOMAIN`: the name does not exist.
    NoSuchName,
    /// The name exists but has no records of that type (`NOERROR`, empty answer).
    NoData,
    /// Anything else (timeout, `SERVFAIL`, `REFUSED`, network error, a malformed name): the
    /// answer is unknown, try again later.
    Temporary(String),
}

impl DnsError {
    /// Whether the answer is unknown (as opposed to a definite "no").
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsError::Temporary(_))
    }

    /// Classifies a resolver error.
    pub fn from_net(e: &NetError) -> Self {
        match e {
            NetError::Dns(HickoryDnsError::NoRecordsFound(nr)) => match nr.response_code {
                ResponseCode::NXDomain => DnsError::NoSuchName,
                ResponseCode::NoError => DnsError::NoData,
                code => DnsError::Temporary(format!("DNS server answered {code}")),
            },
            _ => DnsError::Temporary(e.to_string()),
        }
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::NoSuchName => f.write_str("no such domain (NXDOMAIN)"),
            DnsError::NoData => f.write_str("no records of that type"),
            DnsError::Temporary(e) => write!(f, "temporary DNS failure: {e}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// One mail exchanger of a domain, with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// MX preference (lower first); 0 for the implicit MX.
    pub preference: u16,
    /// Host name, without the trailing dot.
    pub host: String,
    /// Its A and AAAA addresses (empty when it has none).
    pub addresses: Vec<IpAddr>,
}

/// Why [`Dns::resolve_mx`] found nowhere to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxError {
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    NullMx,
    /// The domain does not exist.
    NoSuchDomain,
    /// Neither MX nor address records, or no MX host has an address.
    NoAddress,
    /// DNS failed; try again later.
    Temporary(String),
}

impl fmt::Display for MxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MxError::NullMx => f.write_str("the domain accepts no mail (null MX, RFC 7505)"),
            MxError::NoSuchDomain => f.write_str("no such domain"),
            MxError::NoAddress => f.write_str("no mail exchanger with an address"),
            MxError::Temporary(e) => write!(f, "temporary DNS failure: {e}"),
        }
    }
}

impl std::error::Error for MxError {}

/// The answer of an A query ([`Dns::a`]): the addresses, and how long the answer may be kept.
pub type AAnswer = (Result<Vec<std::net::Ipv4Addr>, DnsError>, Option<Duration>);

/// A blocking DNS resolver: a hickory [`TokioResolver`] and the one current-thread tokio
/// runtime it runs on (see the [module notes](super)). Cheap to clone; clones share the
/// runtime, the connections and the cache.
#[derive(Clone)]
pub struct Dns {
    rt: Arc<tokio::runtime::Runtime>,
    resolver: TokioResolver,
    servers: Arc<[SocketAddr]>,
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns").field("name_servers", &self.servers).finish()
    }
}

fn fqdn(name: &str) -> Result<Name, DnsError> {
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        return Err(DnsError::Temporary("empty domain name".into()));
    }
    Name::from_str_relaxed(format!("{name}.")).map_err(|e| DnsError::Temporary(format!("bad name {name:?}: {e}")))
}

/// The IPv4 addresses in an answer.
fn v4_of(l: &hickory_resolver::lookup::Lookup) -> impl Iterator<Item = std::net::Ipv4Addr> + '_ {
    l.answers().iter().filter_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    })
}

fn name_string(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_owned()
}

impl Dns {
    /// The system's resolvers (`/etc/resolv.conf`), or only `server` (UDP and TCP) when given;
    /// each query waits [`QUERY_TIMEOUT`] and is tried twice.
    pub fn new(server: Option<SocketAddr>) -> io::Result<Self> {
        Self::with_timeout(server, QUERY_TIMEOUT, 2)
    }

    /// [`Dns::new`] with the time one query waits for an answer and how often it is tried.
    pub fn with_timeout(server: Option<SocketAddr>, timeout: Duration, attempts: usize) -> io::Result<Self> {
        Self::build(server, timeout, attempts, None)
    }

    /// [`Dns::with_timeout`] validating every answer with DNSSEC from `trust_anchor` (the
    /// root's keys when `None`); each record then carries its proof (secure, insecure, bogus).
    pub fn validating(
        server: Option<SocketAddr>,
        timeout: Duration,
        attempts: usize,
        trust_anchor: Option<hickory_resolver::proto::dnssec::TrustAnchors>,
    ) -> io::Result<Self> {
        let anchors = trust_anchor.unwrap_or_default();
        Self::build(server, timeout, attempts, Some(Arc::new(anchors)))
    }

    fn build(
        server: Option<SocketAddr>,
        timeout: Duration,
        attempts: usize,
        validate: Option<Arc<hickory_resolver::proto::dnssec::TrustAnchors>>,
    ) -> io::Result<Self> {
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = attempts.max(1);
        let config = match server {
            Some(addr) => {
                opts.use_hosts_file = ResolveHosts::Never;
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = addr.port();
                        c
                    })
                    .collect();
                ResolverConfig::from_parts(None, vec![], vec![NameServerConfig::new(addr.ip(), true, connections)])
            }
            None => {
                let (config, sys) = hickory_resolver::system_conf::read_system_conf()
                    .map_err(|e| io::Error::other(format!("cannot read the system's DNS configuration: {e}")))?;
                opts.ndots = sys.ndots;
                config
            }
        };
        let servers: Arc<[SocketAddr]> = config
            .name_servers()
            .iter()
            .map(|ns| SocketAddr::new(ns.ip, ns.connections.first().map_or(53, |c| c.port)))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let resolver = {
            let _guard = rt.enter();
            let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
            if let Some(anchors) = validate {
                opts.validate = true;
                builder = builder.with_trust_anchor(anchors);
            }
            builder
                .with_options(opts)
                .build()
                .map_err(|e| io::Error::other(format!("cannot make the DNS resolver: {e}")))?
        };
        Ok(Self { rt: Arc::new(rt), resolver, servers })
    }

    /// The name servers asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The hickory resolver (to hand to mail-auth).
    pub fn resolver(&self) -> &TokioResolver {
        &self.resolver
    }

    /// Runs `fut` to completion on the shared runtime, blocking this thread.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    /// The TXT records of `name`, each record's strings joined (RFC 7208 §3.3).
    pub fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let n = fqdn(name)?;
        let lookup = self.block_on(self.resolver.txt_lookup(n)).map_err(|e| DnsError::from_net(&e))?;
        let records: Vec<String> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => {
                    let bytes: Vec<u8> = txt.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Err(DnsError::NoData);
        }
        Ok(records)
    }

    /// The MX records of `name` as `(preference, host)`, host without the trailing dot (`""`
    /// for a null MX).
    pub fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, DnsError> {
        let n = fqdn(name)?;
        let lookup = self.block_on(self.resolver.mx_lookup(n)).map_err(|e| DnsError::from_net(&e))?;
        let mut v: Vec<(u16, String)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, name_string(&mx.exchange))),
                _ => None,
            })
            .collect();
        if v.is_empty() {
            return Err(DnsError::NoData);
        }
        v.sort_by_key(|(p, _)| *p);
        Ok(v)
    }

    /// The A records of `name` and how long the answer may be kept: the records' remaining
    /// TTL, or for "no such name" and "no data" the zone's negative TTL when the answer
    /// carried its SOA (`None` when unknown, and for temporary failures).
    pub fn a(&self, name: &str) -> AAnswer {
        self.a_many(std::slice::from_ref(&name)).pop().unwrap_or((Err(DnsError::NoData), None))
    }

    /// [`Dns::a`] for each of `names`, the queries in flight together (the time of the
    /// slowest, not the sum), the answers in the order of `names`.
    pub fn a_many(&self, names: &[&str]) -> Vec<AAnswer> {
        let one = |name: &str| {
            let n = fqdn(name);
            async move {
                let n = match n {
                    Ok(n) => n,
                    Err(e) => return (Err(e), None),
                };
                match self.resolver.ipv4_lookup(n).await {
                    Ok(l) => {
                        let ttl = l.valid_until().saturating_duration_since(std::time::Instant::now());
                        let v: Vec<std::net::Ipv4Addr> = v4_of(&l).collect();
                        if v.is_empty() {
                            (Err(DnsError::NoData), Some(ttl))
                        } else {
                            (Ok(v), Some(ttl))
                        }
                    }
                    Err(e) => {
                        let negative = match &e {
                            NetError::Dns(HickoryDnsError::NoRecordsFound(nr)) => {
                                nr.negative_ttl.map(|t| Duration::from_secs(t.into()))
                            }
                            _ => None,
                        };
                        (Err(DnsError::from_net(&e)), negative)
                    }
                }
            }
        };
        self.block_on(join_all(names.iter().map(|n| one(n)).collect()))
    }

    /// The A and AAAA addresses of `name` (IPv4 first).
    pub fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let n = fqdn(name)?;
        let (v4, v6) = self.block_on(async {
            let v4 = self.resolver.ipv4_lookup(n.clone()).await;
            let v6 = self.resolver.ipv6_lookup(n).await;
            (v4, v6)
        });
        let mut out = Vec::new();
        let mut errors = Vec::new();
        match v4 {
            Ok(l) => out.extend(v4_of(&l).map(IpAddr::V4)),
            Err(e) => errors.push(DnsError::from_net(&e)),
        }
        match v6 {
            Ok(l) => out.extend(l.answers().iter().filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })),
            Err(e) => errors.push(DnsError::from_net(&e)),
        }
        if !out.is_empty() {
            return Ok(out);
        }
        if let Some(t) = errors.iter().find(|e| e.is_temporary()) {
            return Err(t.clone());
        }
        Err(errors.into_iter().find(|e| *e == DnsError::NoSuchName).unwrap_or(DnsError::NoData))
    }

    /// Where mail for `domain` goes (RFC 5321 §5.1): its MX hosts by preference, each with
    /// its addresses; without MX records the domain itself (the implicit MX, preference 0)
    /// when it has an address; a null MX (RFC 7505, `MX 0 .`) is [`MxError::NullMx`].
    /// Hosts whose addresses cannot be found are listed with none, so that the caller tries
    /// the others; when no host has an address the error says why.
    pub fn resolve_mx(&self, domain: &str) -> Result<Vec<MxHost>, MxError> {
        let domain = domain.trim_end_matches('.');
        let mx = match self.mx(domain) {
            Ok(mx) => mx,
            Err(DnsError::NoSuchName) => return Err(MxError::NoSuchDomain),
            Err(DnsError::NoData) => {
                // The implicit MX: the domain's own address records.
                return match self.addresses(domain) {
                    Ok(addresses) => Ok(vec![MxHost { preference: 0, host: domain.to_owned(), addresses }]),
                    Err(DnsError::Temporary(e)) => Err(MxError::Temporary(e)),
                    Err(DnsError::NoSuchName) => Err(MxError::NoSuchDomain),
                    Err(DnsError::NoData) => Err(MxError::NoAddress),
                };
            }
            Err(DnsError::Temporary(e)) => return Err(MxError::Temporary(e)),
        };
        // RFC 7505 §3: a null MX is the only MX of its domain; one mixed with real MX records
        // is a mistake, and is skipped.
        let real: Vec<(u16, String)> = mx.into_iter().filter(|(_, h)| !h.is_empty()).collect();
        if real.is_empty() {
            return Err(MxError::NullMx);
        }
        let mut hosts = Vec::with_capacity(real.len());
        let mut temporary = None;
        for (preference, host) in real {
            let addresses = match self.addresses(&host) {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(host, "MX host without an address: {e}");
                    if let DnsError::Temporary(t) = e {
                        temporary = Some(t);
                    }
                    Vec::new()
                }
            };
            hosts.push(MxHost { preference, host, addresses });
        }
        if hosts.iter().all(|h| h.addresses.is_empty()) {
            return Err(match temporary {
                Some(t) => MxError::Temporary(t),
                None => MxError::NoAddress,
            });
        }
        Ok(hosts)
    }
}

/// Runs `futures` together on the current task; their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// [`Dns::resolve_mx`] with the system's resolvers.
pub fn resolve_mx(domain: &str) -> Result<Vec<MxHost>, MxError> {
    Dns::new(None).map_err(|e| MxError::Temporary(e.to_string()))?.resolve_mx(domain)
}
