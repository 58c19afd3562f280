//! DNS blocklists and allow lists (RFC 5782): the client's address, reversed, under each zone,
//! an A query; a listing adds the zone's score to the client's total.
//!
//! - `192.0.2.9` under `zen.spamhaus.org` is `9.2.0.192.zen.spamhaus.org`; an IPv6 address is
//!   its 32 nibbles reversed.
//! - An answer in `127.0.0.0/8` is a listing (the return codes are logged: Spamhaus ZEN says
//!   which list in the last octet), except the codes that mean "query refused":
//!   `127.255.255.0/24` (Spamhaus: a public resolver, a typo, too many queries), `127.0.0.1`
//!   (URIBL's refusal, and RFC 5782's test point that must never be listed) and `127.0.0.255`
//!   (dnswl.org: too many queries). An answer outside `127.0.0.0/8` is no listing either (a
//!   resolver that makes up addresses for unknown names).
//! - A DNS failure (timeout, `SERVFAIL`) is no listing: it never refuses anyone.
//! - Health: a zone must list `127.0.0.2` and must not list `127.0.0.1` (RFC 5782 §5); it is
//!   tested when the server starts and again every `dnsbl_health_interval` (by the first
//!   lookup that finds the test due). A zone that fails is ignored, with a log line, until it
//!   passes again; a test that cannot be answered (DNS failure) changes nothing.
//! - Answers are kept for their TTL (a negative answer for the zone's negative TTL), at most
//!   `dnsbl_max_ttl`, in a cache of at most `dnsbl_cache_size` answers (those that expire
//!   soonest go first).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::mta::auth::{Dns, DnsError};

/// The query name of `ip` under `zone`.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let mut s = String::with_capacity(80);
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let _ = write!(s, "{}.{}.{}.{}", o[3], o[2], o[1], o[0]);
        }
        IpAddr::V6(v6) => {
            for b in v6.octets().iter().rev() {
                let _ = write!(s, "{:x}.{:x}.", b & 0xf, b >> 4);
            }
            s.pop();
        }
    }
    s.push('.');
    s.push_str(zone);
    s
}

/// Whether an answer is a listing (see the [module notes](self)).
pub fn is_listing(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 127
        && !(o[1] == 255 && o[2] == 255)
        && a != Ipv4Addr::new(127, 0, 0, 1)
        && a != Ipv4Addr::new(127, 0, 0, 255)
}

/// A zone that lists the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The zone.
    pub zone: String,
    /// Its score.
    pub score: i32,
    /// Its return codes.
    pub codes: Vec<Ipv4Addr>,
}

/// What the zones say about one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The sum of the scores of the zones that list it.
    pub total: i32,
    /// Those zones.
    pub listings: Vec<Listing>,
    /// Zones whose lookup failed (counted as not listing).
    pub failed: Vec<String>,
}

impl Report {
    /// The first blocklist (positive score) that lists the client: the one the refusal names.
    pub fn blocked_by(&self) -> Option<&str> {
        self.listings.iter().find(|l| l.score > 0).map(|l| l.zone.as_str())
    }

    /// `zone(score)` for each listing, for logs and `X-Spam-Status:`.
    pub fn summary(&self) -> String {
        let v: Vec<String> = self.listings.iter().map(|l| format!("{}({:+})", l.zone, l.score)).collect();
        v.join(",")
    }
}

/// A zone's test points as last seen.
#[derive(Debug)]
struct Health {
    /// Used for lookups (a zone is usable until a test shows otherwise).
    usable: bool,
    /// When it was last tested; `None`: never.
    tested: Option<Instant>,
    /// A lookup is testing it now.
    testing: bool,
}

#[derive(Debug)]
struct Zone {
    name: String,
    score: i32,
    health: Mutex<Health>,
}

/// What a cached answer says: the listing codes (empty: not listed).
type Codes = Vec<Ipv4Addr>;

/// Answers by query name, each until its expiry, at most `cap` of them: when full, the one
/// that expires soonest goes.
#[derive(Debug, Default)]
struct Cache {
    cap: usize,
    seq: u64,
    map: HashMap<String, (Codes, Instant, u64)>,
    by_expiry: BTreeMap<(Instant, u64), String>,
}

impl Cache {
    fn get(&mut self, name: &str, now: Instant) -> Option<Codes> {
        let (codes, expires, seq) = self.map.get(name)?;
        if *expires > now {
            return Some(codes.clone());
        }
        let key = (*expires, *seq);
        self.by_expiry.remove(&key);
        self.map.remove(name);
        None
    }

    fn insert(&mut self, name: String, codes: Codes, expires: Instant) {
        if self.cap == 0 {
            return;
        }
        if let Some((_, e, s)) = self.map.remove(&name) {
            self.by_expiry.remove(&(e, s));
        }
        while self.map.len() >= self.cap {
            let Some((_, oldest)) = self.by_expiry.pop_first() else { break };
            self.map.remove(&oldest);
        }
        self.seq += 1;
        self.by_expiry.insert((expires, self.seq), name.clone());
        self.map.insert(name, (codes, expires, self.seq));
    }
}

/// The zones, their health and the answers cache (shared by all sessions).
#[derive(Debug)]
pub struct Dnsbl {
    dns: Dns,
    zones: Vec<Zone>,
    cache: Mutex<Cache>,
    max_ttl: Duration,
    health_interval: Duration,
}

/// The settings of [`Dnsbl::new`].
#[derive(Debug, Clone)]
pub struct DnsblSettings {
    /// Most answers cached; 0: none.
    pub cache_size: usize,
    /// Longest an answer is cached.
    pub max_ttl: Duration,
    /// How often a zone's test points are checked.
    pub health_interval: Duration,
}

impl Dnsbl {
    /// The zones `(name, score)` asked through `dns`; their test points are checked now.
    pub fn new(dns: Dns, zones: &[(String, i32)], settings: &DnsblSettings) -> Self {
        let zones = zones
            .iter()
            .map(|(name, score)| Zone {
                name: name.clone(),
                score: *score,
                health: Mutex::new(Health { usable: true, tested: None, testing: false }),
            })
            .collect();
        let d = Self {
            dns,
            zones,
            cache: Mutex::new(Cache { cap: settings.cache_size, ..Cache::default() }),
            max_ttl: settings.max_ttl,
            health_interval: settings.health_interval,
        };
        d.test_due_zones(Instant::now());
        d
    }

    /// The zones, with their scores and whether they are in use.
    pub fn zones(&self) -> Vec<(String, i32, bool)> {
        self.zones.iter().map(|z| (z.name.clone(), z.score, lock(&z.health).usable)).collect()
    }

    /// Tests the zones whose test is due (none being tested by another session), all at once.
    fn test_due_zones(&self, now: Instant) {
        let due: Vec<&Zone> = self
            .zones
            .iter()
            .filter(|z| {
                let mut h = lock(&z.health);
                let due =
                    !h.testing && h.tested.is_none_or(|t| now.saturating_duration_since(t) >= self.health_interval);
                if due {
                    h.testing = true;
                }
                due
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let names: Vec<String> =
            due.iter().flat_map(|z| [format!("2.0.0.127.{}", z.name), format!("1.0.0.127.{}", z.name)]).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let answers = self.dns.a_many(&refs);
        for (zone, pair) in due.iter().zip(answers.chunks(2)) {
            let [(two, _), (one, _)] = pair else { continue };
            let listed = |r: &Result<Vec<Ipv4Addr>, DnsError>| matches!(r, Ok(a) if a.iter().copied().any(is_listing));
            let verdict = match (two, one) {
                (Err(e), _) | (_, Err(e)) if e.is_temporary() => Err(e.to_string()),
                (_, Ok(a)) if listed(one) || a.contains(&Ipv4Addr::new(127, 0, 0, 1)) => {
                    Ok(Some(format!("it lists 127.0.0.1 ({a:?}), which no list may: it would list anyone")))
                }
                _ if listed(two) => Ok(None),
                (Ok(a), _) => Ok(Some(format!("its answer for 127.0.0.2 is no listing ({a:?}): queries refused?"))),
                (Err(_), _) => Ok(Some("it does not list 127.0.0.2, its test point".to_owned())),
            };
            let mut h = lock(&zone.health);
            h.testing = false;
            h.tested = Some(now);
            match verdict {
                Err(e) => {
                    tracing::warn!(zone = zone.name, "DNSBL test points not answered: {e}; the zone stays as it was")
                }
                Ok(Some(why)) => {
                    if h.usable {
                        tracing::warn!(zone = zone.name, "DNSBL zone ignored: {why}");
                    }
                    h.usable = false;
                }
                Ok(None) => {
                    if !h.usable {
                        tracing::info!(
                            zone = zone.name,
                            "DNSBL zone in use again: its test points answer as they should"
                        );
                    }
                    h.usable = true;
                }
            }
        }
    }

    /// What the zones in use say about `ip` (from the cache, or asked all at once).
    pub fn check(&self, ip: IpAddr) -> Report {
        let now = Instant::now();
        self.test_due_zones(now);
        let zones: Vec<&Zone> = self.zones.iter().filter(|z| lock(&z.health).usable).collect();
        let names: Vec<String> = zones.iter().map(|z| query_name(ip, &z.name)).collect();
        let mut codes: Vec<Option<Result<Codes, String>>> = {
            let mut cache = lock(&self.cache);
            names.iter().map(|n| cache.get(n, now).map(Ok)).collect()
        };
        let missing: Vec<&str> =
            names.iter().zip(&codes).filter(|(_, c)| c.is_none()).map(|(n, _)| n.as_str()).collect();
        if !missing.is_empty() {
            let answers = self.dns.a_many(&missing);
            let mut cache = lock(&self.cache);
            let mut answers = answers.into_iter();
            for (name, slot) in names.iter().zip(codes.iter_mut()) {
                if slot.is_some() {
                    continue;
                }
                let Some((answer, ttl)) = answers.next() else { break };
                let listed = match answer {
                    Ok(a) => {
                        let refused: Vec<&Ipv4Addr> = a.iter().filter(|a| !is_listing(**a)).collect();
                        if !refused.is_empty() {
                            tracing::warn!(query = name, answer = ?refused, "DNSBL answer that is no listing (query refused?)");
                        }
                        Ok(a.into_iter().filter(|a| is_listing(*a)).collect::<Codes>())
                    }
                    Err(DnsError::NoSuchName | DnsError::NoData) => Ok(Vec::new()),
                    Err(e) => Err(e.to_string()),
                };
                if let (Ok(c), Some(ttl)) = (&listed, ttl) {
                    let ttl = ttl.min(self.max_ttl);
                    if !ttl.is_zero() {
                        cache.insert(name.clone(), c.clone(), now + ttl);
                    }
                }
                *slot = Some(listed);
            }
        }
        let mut report = Report::default();
        for (zone, c) in zones.iter().zip(codes) {
            match c {
                Some(Ok(c)) if !c.is_empty() => {
                    report.total = report.total.saturating_add(zone.score);
                    report.listings.push(Listing { zone: zone.name.clone(), score: zone.score, codes: c });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(zone = zone.name, %ip, "DNSBL lookup failed (not counted): {e}");
                    report.failed.push(zone.name.clone());
                }
                None => report.failed.push(zone.name.clone()),
            }
        }
        report
    }
}

/// A mutex's content even if a holder panicked (the data are plain values, never half-made).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names() {
        assert_eq!(query_name("192.0.2.99".parse().unwrap(), "zen.spamhaus.org"), "99.2.0.192.zen.spamhaus.org");
        assert_eq!(
            query_name("2001:db8:1:2:3:4:567:89ab".parse().unwrap(), "bl.test"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test"
        );
        assert_eq!(query_name("::ffff:127.0.0.9".parse().unwrap(), "bl.test"), "9.0.0.127.bl.test");
    }

    #[test]
    fn listings_and_refusals() {
        for a in ["127.0.0.2", "127.0.0.4", "127.0.0.10", "127.0.10.0", "127.0.15.3"] {
            assert!(is_listing(a.parse().unwrap()), "{a}");
        }
        for a in ["127.255.255.254", "127.255.255.252", "127.0.0.1", "127.0.0.255", "192.0.2.1", "10.0.0.2"] {
            assert!(!is_listing(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn cache_expires_and_is_bounded() {
        let t = Instant::now();
        let mut c = Cache { cap: 2, ..Cache::default() };
        c.insert("a".into(), vec![], t + Duration::from_secs(10));
        c.insert("b".into(), vec![Ipv4Addr::new(127, 0, 0, 2)], t + Duration::from_secs(5));
        assert_eq!(c.get("b", t), Some(vec![Ipv4Addr::new(127, 0, 0, 2)]));
        assert_eq!(c.get("b", t + Duration::from_secs(6)), None, "expired");
        c.insert("b".into(), vec![], t + Duration::from_secs(5));
        c.insert("c".into(), vec![], t + Duration::from_secs(20));
        assert_eq!((c.map.len(), c.by_expiry.len()), (2, 2));
        assert_eq!(c.get("b", t), None, "the soonest to expire went first");
        assert!(c.get("a", t).is_some() && c.get("c", t).is_some());
        c.insert("a".into(), vec![], t + Duration::from_secs(30));
        assert_eq!((c.map.len(), c.by_expiry.len()), (2, 2), "replaced, not added");
        let mut none = Cache::default();
        none.insert("a".into(), vec![], t + Duration::from_secs(30));
        assert!(none.map.is_empty());
    }
}
