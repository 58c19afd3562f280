//! MTA-STS for outbound mail (RFC 8461): the policies of the recipients' domains.
//!
//! [`Sts::policy`] looks up `_mta-sts.<domain>` TXT (`v=STSv1; id=...`); with no cached
//! policy, a different id, or less than [`REFRESH_BEFORE`] (or half the `max_age`) left of the
//! cached one, it fetches `https://mta-sts.<domain>/.well-known/mta-sts.txt` (certificate
//! verified against Mozilla's roots and `[outbound] mta_sts_ca`, no redirect, at most 64 KiB,
//! bounded in time). Policies are cached in memory and under `data_dir/mta-sts/` (one private
//! file per domain) until their `max_age` runs out; a failed lookup or fetch keeps using the
//! cached policy (§5.1), and without one the domain has no policy.
//!
//! [`deliver`](crate::mta::deliver) then: `enforce`: only MX hosts the policy names, over TLS
//! whose certificate is valid for the MX name ([`Sts::tls`]); anything else is a temporary
//! failure naming the domain, the policy and what failed. `testing`: the certificate is
//! checked the same way, a failure is logged (and counted for TLS-RPT) and the message goes
//! out as without a policy. DANE takes precedence for a host with usable TLSA records.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::mta::auth::{Dns, DnsError};
use crate::mta::web::check::MAX_POLICY;
use crate::mta::web::client::Client;
use crate::mta::web::mtasts::{self, Fetched, Mode};

/// A cached policy is fetched again when less than this (or half its `max_age`) is left.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(86400);

/// How long a policy fetch may take in all.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A domain's policy, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The id of the `_mta-sts` record it came with.
    pub id: String,
    /// The policy.
    pub policy: Fetched,
    /// When it was fetched (seconds since the epoch).
    pub fetched: u64,
}

impl Policy {
    /// Seconds since the epoch when it runs out.
    fn expires(&self) -> u64 {
        self.fetched.saturating_add(self.policy.max_age.as_secs())
    }

    /// Whether it should be fetched again at `now`.
    fn stale(&self, now: u64) -> bool {
        let margin = REFRESH_BEFORE.as_secs().min(self.policy.max_age.as_secs() / 2);
        self.expires().saturating_sub(now) < margin
    }

    /// The cache file's text: `id`, `fetched` and the policy fields.
    fn to_text(&self) -> String {
        let mut s = format!(
            "id: {}\nfetched: {}\nversion: STSv1\nmode: {}\nmax_age: {}\n",
            self.id,
            self.fetched,
            self.policy.mode.as_str(),
            self.policy.max_age.as_secs()
        );
        for mx in &self.policy.mx {
            s.push_str(&format!("mx: {mx}\n"));
        }
        s
    }

    fn from_text(text: &str) -> Option<Self> {
        let field = |n: &str| text.lines().find_map(|l| l.strip_prefix(n)).map(str::trim);
        Some(Self {
            id: field("id:")?.to_owned(),
            fetched: field("fetched:")?.parse().ok()?,
            policy: mtasts::parse(text).ok()?,
        })
    }

    /// `enforce policy id X of example.org (mx: a, *.b)`.
    pub fn describe(&self, domain: &str) -> String {
        format!(
            "MTA-STS {} policy of {domain} (id {}, mx: {})",
            self.policy.mode.as_str(),
            self.id,
            self.policy.mx.join(", ")
        )
    }
}

/// Settings of [`Sts`].
#[derive(Debug, Clone, Default)]
pub struct StsOptions {
    /// Also trust the CA certificates of this PEM file, for policy hosts and MX hosts.
    pub ca: Option<PathBuf>,
    /// The policy hosts' HTTPS port instead of 443 (tests).
    pub https_port: Option<u16>,
}

/// Outbound MTA-STS: the policy cache and the TLS configuration that validates MX hosts.
pub struct Sts {
    dns: Dns,
    client: Client,
    tls: Arc<rustls::ClientConfig>,
    dir: PathBuf,
    cache: Mutex<HashMap<String, Policy>>,
}

impl std::fmt::Debug for Sts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sts").field("dir", &self.dir).finish()
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether `domain` is a plain host name (a file name we can use for its cache file).
fn plain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && !domain.starts_with('.')
        && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl Sts {
    /// MTA-STS with `dns` for the records and the policy hosts, its cache in `dir` (created
    /// private when missing). The error names the CA file or the directory.
    pub fn new(dns: Dns, dir: &Path, options: &StsOptions) -> io::Result<Self> {
        let ca = options.ca.as_deref();
        let mut client = Client::new(ca)?;
        client.timeout = FETCH_TIMEOUT;
        client.max_response = MAX_POLICY + 4096;
        client.port = options.https_port;
        let resolver = dns.clone();
        client.resolve = Some(Arc::new(move |name: &str| resolver.addresses(name).map_err(io::Error::other)));
        let tls = crate::client::tls_config_with_extra_ca(ca)?;
        if !dir.is_dir() {
            crate::mta::private::create_dir(dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        }
        Ok(Self { dns, client, tls, dir: dir.to_owned(), cache: Mutex::new(HashMap::new()) })
    }

    /// The TLS configuration for MX hosts under a policy: certificates verified against
    /// Mozilla's roots and the extra CA, for the MX host's name.
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    fn cached(&self, domain: &str) -> Option<Policy> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(domain) {
            return Some(p.clone());
        }
        let text = std::fs::read_to_string(self.dir.join(domain)).ok()?;
        let p = Policy::from_text(&text)?;
        cache.insert(domain.to_owned(), p.clone());
        Some(p)
    }

    fn store(&self, domain: &str, p: &Policy) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(domain.to_owned(), p.clone());
        let path = self.dir.join(domain);
        let tmp = self.dir.join(format!(".{domain}.tmp"));
        let r = crate::mta::private::create(&tmp)
            .and_then(|mut f| f.write_all(p.to_text().as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = r {
            tracing::warn!(domain, "MTA-STS: cannot keep the policy in {}: {e}", path.display());
        }
    }

    fn forget(&self, domain: &str) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(domain);
        let _ = std::fs::remove_file(self.dir.join(domain));
    }

    /// `domain`'s policy now (`None`: none, or mode `none`), fetched or refreshed as needed.
    /// The error is a lookup or fetch that failed with no cached policy to fall back on
    /// (for TLS-RPT: the domain is then treated as having no policy).
    pub fn policy(&self, domain: &str) -> Result<Option<Policy>, String> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !plain(&domain) {
            return Ok(None);
        }
        let now = now();
        let cached = self.cached(&domain).filter(|p| p.expires() > now);
        let name = format!("_mta-sts.{domain}");
        let records = match self.dns.txt(&name) {
            Ok(v) => v.into_iter().filter(|t| t.trim_start().starts_with("v=STSv1")).collect::<Vec<_>>(),
            Err(DnsError::NoData | DnsError::NoSuchName) => Vec::new(),
            Err(e) => {
                tracing::info!(
                    domain,
                    "MTA-STS: the lookup of {name} failed ({e}); cached policy: {}",
                    cached.is_some()
                );
                return Ok(cached.filter(|p| p.policy.mode != Mode::None));
            }
        };
        let id = match records.as_slice() {
            [one] => one.split(';').find_map(|t| t.trim().strip_prefix("id=")).map(str::to_owned),
            _ => None,
        };
        let Some(id) = id else {
            // No (usable) record: a cached policy still applies until it runs out (§5.1).
            return Ok(cached.filter(|p| p.policy.mode != Mode::None));
        };
        if let Some(p) = &cached {
            if p.id == id && !p.stale(now) {
                return Ok(Some(p.clone()).filter(|p| p.policy.mode != Mode::None));
            }
        }
        match self.fetch(&domain) {
            Ok(policy) => {
                let p = Policy { id, policy, fetched: now };
                tracing::info!(domain, "MTA-STS: fetched the {}", p.describe(&domain));
                if p.policy.mode == Mode::None {
                    self.forget(&domain);
                    return Ok(None);
                }
                self.store(&domain, &p);
                Ok(Some(p))
            }
            Err(e) => match cached {
                Some(p) => {
                    tracing::warn!(domain, "MTA-STS: {e}; still using the cached {}", p.describe(&domain));
                    Ok(Some(p).filter(|p| p.policy.mode != Mode::None))
                }
                None => {
                    tracing::warn!(domain, "MTA-STS: {e}; delivering as without a policy");
                    Err(e)
                }
            },
        }
    }

    /// [`Sts::policy`], a failure counted in `outcomes` (no policy then).
    pub fn policy_or_report(&self, domain: &str, outcomes: Option<&dyn TlsOutcomes>) -> Option<Policy> {
        self.policy(domain).unwrap_or_else(|e| {
            if let Some(r) = outcomes {
                r.record(domain, PolicyRef::NotFound, "", Some(fetch_result_type(&e)));
            }
            None
        })
    }

    fn fetch(&self, domain: &str) -> Result<Fetched, String> {
        let url = format!("https://mta-sts.{domain}/.well-known/mta-sts.txt");
        let r = self.client.get(&url).map_err(|e| format!("policy fetch failed: {e}"))?;
        if r.status != 200 {
            return Err(format!("policy fetch failed: {url}: HTTP {} (only 200 counts, no redirect)", r.status));
        }
        if r.body.len() > MAX_POLICY {
            return Err(format!("policy invalid: {url}: larger than {MAX_POLICY} bytes"));
        }
        if !r.header("content-type").is_some_and(|t| t.to_ascii_lowercase().starts_with("text/plain")) {
            return Err(format!("policy invalid: {url}: Content-Type is not text/plain"));
        }
        let text = String::from_utf8_lossy(&r.body);
        mtasts::parse(&text).map_err(|e| format!("policy invalid: {url}: {e}"))
    }
}

/// The policy a TLS outcome was under (RFC 8460 §4.3 policy types).
#[derive(Debug, Clone, Copy)]
pub enum PolicyRef<'a> {
    /// An MTA-STS policy.
    Sts(&'a Policy),
    /// DANE TLSA records.
    Tlsa,
    /// None could be had (a failed policy fetch).
    NotFound,
}

/// Where the outcomes of outbound TLS under a policy go (the TLS-RPT counter).
pub trait TlsOutcomes: Send + Sync + std::fmt::Debug {
    /// One outcome with `host` (empty: the policy itself) of `domain`: `None` a successful
    /// session, else the RFC 8460 result type of the failure.
    fn record(&self, domain: &str, policy: PolicyRef<'_>, host: &str, failure: Option<&'static str>);
}

/// The RFC 8460 §4.3 result type of a policy that could not be had ([`Sts::policy`]'s error).
pub fn fetch_result_type(e: &str) -> &'static str {
    if e.starts_with("policy invalid") {
        "sts-policy-invalid"
    } else if e.to_ascii_lowercase().contains("certificate") {
        "sts-webpki-invalid"
    } else {
        "sts-policy-fetch-error"
    }
}

/// The RFC 8460 §4.3 result type of a failed TLS setup (`dane`: under TLSA records).
pub fn result_type(e: &crate::client::SendError, dane: bool) -> &'static str {
    let text = match e {
        crate::client::SendError::StartTlsNotOffered => return "starttls-not-supported",
        e => format!("{e:?}"),
    };
    if dane {
        "validation-failure"
    } else if text.contains("NotValidForName") {
        "certificate-host-mismatch"
    } else if text.contains("Expired") {
        "certificate-expired"
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        "certificate-not-trusted"
    } else {
        "validation-failure"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_text_round_trip_and_staleness() {
        let policy =
            Fetched { mode: Mode::Enforce, mx: vec!["*.a.test".into()], max_age: Duration::from_secs(86400 * 10) };
        let p = Policy { id: "abc".into(), policy, fetched: 1000 };
        assert_eq!(Policy::from_text(&p.to_text()), Some(p.clone()));
        assert!(!p.stale(1000 + 86400));
        assert!(p.stale(1000 + 86400 * 9 + 1));
        assert!(Policy::from_text("id: x\n").is_none());
        assert!(plain("a-b.example") && !plain("../x") && !plain("a/b") && !plain(""));
    }
}
