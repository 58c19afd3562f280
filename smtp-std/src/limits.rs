//! Per-client limits, the bookkeeping of Postfix's `anvil`: concurrent connections, new
//! connections per minute and AUTH failures per hour, counted per client address (IPv4 by
//! address, IPv6 by /64: one subscriber, one site, usually holds a whole /64).
//!
//! Rates are kept as a token bucket (GCRA: one timestamp per client and rate, no history):
//! "N per period" lets a client do N at once and then one every period/N, so within any
//! window of length `t` a client gets at most `N + N·t/period`. Time is a parameter of every
//! call, so the rules are tested without sleeping.
//!
//! Memory is bounded: a client's entry goes away once it holds no connection and its buckets
//! have drained (at most an hour after its last AUTH failure or the end of its lockout); the
//! table holds at most [`MAX_TRACKED`] entries (or the global connection cap, if larger), and
//! when full, idle entries are evicted, lockouts last.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use smtp_proto::reply::EnhancedCode;
use smtp_proto::Reply;

/// The networks of [`ClientLimits::exempt`] (the same CIDR type as the PROXY protocol's).
pub use crate::proxy::Network;

/// Most client entries kept at once (unless the global connection cap is larger): ~100 bytes
/// each, so about 1.6 MB at most.
pub const MAX_TRACKED: usize = 16_384;

/// How often expired entries are swept out even when the table is not full.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The per-client limits of a server ([`crate::Options`] holds one). A limit of 0 is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Most connections open at once from one client (Postfix
    /// `smtpd_client_connection_count_limit`, 50).
    pub max_connections: u32,
    /// Most new connections per minute from one client, with a burst of as many.
    pub max_rate: u32,
    /// Most refused AUTH attempts (5xx) per hour from one client; reaching it locks the
    /// client out for [`ClientLimits::lockout`].
    pub max_auth_failures: u32,
    /// How long a client that reached `max_auth_failures` is refused at connect.
    pub lockout: Duration,
    /// Clients not limited (e.g. this host, a trusted relay).
    pub exempt: Vec<Network>,
}

impl Default for ClientLimits {
    /// 50 concurrent (Postfix's default), 120 new per minute, 10 AUTH failures per hour then an
    /// hour locked out, nobody exempt.
    fn default() -> Self {
        Self {
            max_connections: 50,
            max_rate: 120,
            max_auth_failures: 10,
            lockout: Duration::from_secs(3600),
            exempt: Vec::new(),
        }
    }
}

/// The address a client is counted under: an IPv4 address (also when it arrives IPv4-mapped
/// on an IPv6 socket), or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key of a client address.
    pub fn of(ip: IpAddr) -> Self {
        match canonical(ip) {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                ClientKey(IpAddr::V6(Ipv6Addr::from(bits)))
            }
            v4 => ClientKey(v4),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why a connection is refused: each gives its `421 4.7.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client reached [`ClientLimits::max_auth_failures`] and is locked out.
    AuthLocked,
    /// The client holds [`ClientLimits::max_connections`] connections already.
    TooManyConnections,
    /// The client opens connections faster than [`ClientLimits::max_rate`].
    RateExceeded,
}

impl Refusal {
    /// The reply: `421 4.7.0` with the reason.
    pub fn reply(self) -> Reply<'static> {
        let text = match self {
            Refusal::AuthLocked => "Too many authentication failures from your address, try again later",
            Refusal::TooManyConnections => "Too many connections from your address",
            Refusal::RateExceeded => "Too many new connections from your address, slow down",
        };
        Reply::new(421, Some(EnhancedCode::new(4, 7, 0)), text)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::AuthLocked => "locked out after too many AUTH failures",
            Refusal::TooManyConnections => "too many connections from this client",
            Refusal::RateExceeded => "connection rate exceeded",
        })
    }
}

/// One client's counters.
#[derive(Debug, Default)]
struct Entry {
    /// Connections open now.
    active: u32,
    /// Theoretical arrival time of the connection-rate bucket (empty when `<= now`).
    rate_tat: Option<Instant>,
    /// The same for AUTH failures.
    auth_tat: Option<Instant>,
    /// Locked out until then.
    locked_until: Option<Instant>,
}

impl Entry {
    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }

    /// Nothing left to remember.
    fn expired(&self, now: Instant) -> bool {
        let past = |t: Option<Instant>| t.is_none_or(|t| t <= now);
        self.active == 0 && past(self.rate_tat) && past(self.auth_tat) && past(self.locked_until)
    }
}

/// "`n` per `period`" as a GCRA bucket.
#[derive(Debug, Clone, Copy)]
struct Rate {
    period: Duration,
    interval: Duration,
}

impl Rate {
    fn new(n: u32, period: Duration) -> Option<Self> {
        (n > 0).then(|| Rate { period, interval: (period / n).max(Duration::from_nanos(1)) })
    }

    /// Whether one more event at `now` fits in a bucket whose theoretical arrival time is
    /// `tat`.
    fn fits(&self, tat: Option<Instant>, now: Instant) -> bool {
        let owed = tat.map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        owed + self.interval <= self.period
    }

    /// The bucket after one more event at `now`.
    fn add(&self, tat: Option<Instant>, now: Instant) -> Option<Instant> {
        Some(tat.map_or(now, |t| t.max(now)) + self.interval)
    }
}

/// The table of every client's counters, shared by the accept loops and the sessions.
#[derive(Debug)]
pub struct Tracker {
    max_connections: u32,
    rate: Option<Rate>,
    auth: Option<Rate>,
    lockout: Duration,
    exempt: Vec<Network>,
    cap: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    clients: HashMap<ClientKey, Entry>,
    next_sweep: Option<Instant>,
}

impl Tracker {
    /// A tracker for `limits`, keeping at most `cap` entries (raised to [`MAX_TRACKED`] if lower;
    /// entries with open connections are never dropped, so pass the global connection cap if
    /// it is larger).
    pub fn new(limits: &ClientLimits, cap: usize) -> Self {
        Self {
            max_connections: limits.max_connections,
            rate: Rate::new(limits.max_rate, Duration::from_secs(60)),
            auth: Rate::new(limits.max_auth_failures, Duration::from_secs(3600)),
            lockout: limits.lockout,
            exempt: limits.exempt.clone(),
            cap: cap.max(MAX_TRACKED),
            state: Mutex::new(State { clients: HashMap::new(), next_sweep: None }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|n| n.contains(ip))
    }

    /// A new connection from `ip` at `now`: counted and allowed (the [`Permit`] gives it back
    /// when dropped), or refused without counting.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Permit, Refusal> {
        if self.exempt(ip) {
            return Ok(Permit { tracker: None, key: ClientKey::of(ip) });
        }
        let key = ClientKey::of(ip);
        let mut state = self.lock();
        if let Some(e) = state.clients.get(&key) {
            if e.locked(now) {
                return Err(Refusal::AuthLocked);
            }
            if self.max_connections > 0 && e.active >= self.max_connections {
                return Err(Refusal::TooManyConnections);
            }
            if self.rate.is_some_and(|r| !r.fits(e.rate_tat, now)) {
                return Err(Refusal::RateExceeded);
            }
        }
        let cap = self.cap;
        let e = state.entry(key, now, cap);
        e.active += 1;
        if let Some(r) = self.rate {
            e.rate_tat = r.add(e.rate_tat, now);
        }
        Ok(Permit { tracker: Some(self.clone()), key })
    }

    fn release(&self, key: ClientKey) {
        let mut state = self.lock();
        if let Some(e) = state.clients.get_mut(&key) {
            e.active = e.active.saturating_sub(1);
        }
    }

    /// Whether `ip` is locked out after too many AUTH failures.
    pub fn is_locked(&self, ip: IpAddr, now: Instant) -> bool {
        !self.exempt(ip) && self.lock().clients.get(&ClientKey::of(ip)).is_some_and(|e| e.locked(now))
    }

    /// Counts a refused AUTH from `ip`; returns whether this failure locked it out.
    pub fn auth_failed(&self, ip: IpAddr, now: Instant) -> bool {
        let Some(rate) = self.auth else { return false };
        if self.exempt(ip) {
            return false;
        }
        let mut state = self.lock();
        let cap = self.cap;
        let e = state.entry(ClientKey::of(ip), now, cap);
        if e.locked(now) {
            return true;
        }
        e.auth_tat = rate.add(e.auth_tat, now);
        if rate.fits(e.auth_tat, now) {
            return false;
        }
        e.auth_tat = None;
        e.locked_until = Some(now + self.lockout);
        true
    }

    /// How many clients are tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().clients.len()
    }

    /// Drops what `now` makes obsolete.
    pub fn sweep(&self, now: Instant) {
        self.lock().sweep(now);
    }
}

impl State {
    /// The entry of `key`, made room for if new.
    fn entry(&mut self, key: ClientKey, now: Instant, cap: usize) -> &mut Entry {
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.sweep(now);
        }
        if !self.clients.contains_key(&key) && self.clients.len() >= cap {
            self.sweep(now);
            if self.clients.len() >= cap {
                self.evict(now, cap - cap / 10);
            }
        }
        self.clients.entry(key).or_default()
    }

    fn sweep(&mut self, now: Instant) {
        self.clients.retain(|_, e| !e.expired(now));
        self.next_sweep = Some(now + SWEEP_EVERY);
    }

    /// Forgets idle clients until `target` remain: those not locked out first. Clients with
    /// open connections stay (their count must stay right).
    fn evict(&mut self, now: Instant, target: usize) {
        for keep_locked in [true, false] {
            let excess = self.clients.len().saturating_sub(target);
            if excess == 0 {
                return;
            }
            let victims: Vec<ClientKey> = self
                .clients
                .iter()
                .filter(|(_, e)| e.active == 0 && !(keep_locked && e.locked(now)))
                .map(|(k, _)| *k)
                .take(excess)
                .collect();
            for k in victims {
                self.clients.remove(&k);
            }
        }
    }
}

/// A counted connection; dropping it gives the slot back.
#[derive(Debug)]
pub struct Permit {
    tracker: Option<Arc<Tracker>>,
    key: ClientKey,
}

impl Permit {
    /// The client's key.
    pub fn key(&self) -> ClientKey {
        self.key
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(t) = &self.tracker {
            t.release(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tracker(limits: ClientLimits) -> Arc<Tracker> {
        Arc::new(Tracker::new(&limits, 0))
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn keys_group_ipv6_by_64_and_unmap_ipv4() {
        assert_eq!(ClientKey::of(ip("2001:db8:1:2:aaaa::1")), ClientKey::of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(ClientKey::of(ip("2001:db8:1:2::1")), ClientKey::of(ip("2001:db8:1:3::1")));
        assert_eq!(ClientKey::of(ip("::ffff:192.0.2.7")), ClientKey::of(ip("192.0.2.7")));
        assert_ne!(ClientKey::of(ip("192.0.2.7")), ClientKey::of(ip("192.0.2.8")));
        assert_eq!(ClientKey::of(ip("2001:db8:1:2:aaaa::1")).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn concurrent_connections_per_client() {
        let t = tracker(ClientLimits { max_connections: 3, max_rate: 0, ..Default::default() });
        let now = Instant::now();
        let held: Vec<Permit> = (0..3).map(|_| t.admit(ip("192.0.2.1"), now).unwrap()).collect();
        assert_eq!(t.admit(ip("192.0.2.1"), now).unwrap_err(), Refusal::TooManyConnections);
        // The same /64, another address in it.
        let v6: Vec<Permit> = (0..3).map(|i| t.admit(ip(&format!("2001:db8::{i}")), now).unwrap()).collect();
        assert_eq!(t.admit(ip("2001:db8::ff:1"), now).unwrap_err(), Refusal::TooManyConnections);
        // Others are not affected.
        let other = t.admit(ip("192.0.2.2"), now).unwrap();
        drop(held);
        drop(v6);
        assert!(t.admit(ip("192.0.2.1"), now).is_ok());
        drop(other);
        assert_eq!(t.tracked(), 3);
        t.sweep(now);
        assert_eq!(t.tracked(), 0, "nothing left to remember once the connections are gone");
    }

    #[test]
    fn connection_rate_burst_then_steady() {
        let t = tracker(ClientLimits { max_connections: 0, max_rate: 6, ..Default::default() });
        let start = Instant::now();
        for _ in 0..6 {
            drop(t.admit(ip("192.0.2.1"), start).unwrap());
        }
        assert_eq!(t.admit(ip("192.0.2.1"), start).unwrap_err(), Refusal::RateExceeded);
        // Refusals are not counted: one slot comes back every 10 s.
        assert!(t.admit(ip("192.0.2.1"), start + 9 * SEC).is_err());
        drop(t.admit(ip("192.0.2.1"), start + 10 * SEC).unwrap());
        assert!(t.admit(ip("192.0.2.1"), start + 11 * SEC).is_err());
        drop(t.admit(ip("192.0.2.1"), start + 20 * SEC).unwrap());
        // A minute of quiet fills the bucket again.
        let later = start + 80 * SEC;
        for _ in 0..6 {
            drop(t.admit(ip("192.0.2.1"), later).unwrap());
        }
        assert!(t.admit(ip("192.0.2.1"), later).is_err());
        assert!(t.admit(ip("192.0.2.99"), later).is_ok());
        // Expired once drained.
        t.sweep(later + 61 * SEC);
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn auth_failures_lock_out_then_cool_down() {
        let limits = ClientLimits { max_auth_failures: 3, lockout: Duration::from_secs(600), ..Default::default() };
        let t = tracker(limits);
        let start = Instant::now();
        let held = t.admit(ip("2001:db8::1"), start).unwrap();
        assert!(!t.auth_failed(ip("2001:db8::1"), start));
        assert!(!t.auth_failed(ip("2001:db8::2"), start + SEC));
        assert!(!t.is_locked(ip("2001:db8::1"), start + SEC));
        assert!(t.auth_failed(ip("2001:db8::3"), start + 2 * SEC), "the third failure in the hour locks");
        assert!(t.is_locked(ip("2001:db8::1"), start + 3 * SEC));
        assert_eq!(t.admit(ip("2001:db8::1"), start + 3 * SEC).unwrap_err(), Refusal::AuthLocked);
        assert!(!t.is_locked(ip("2001:db9::1"), start + 3 * SEC));
        drop(held);
        // Still locked just before the end of the cool-down, free after it, with a fresh count.
        let end = start + 2 * SEC + Duration::from_secs(600);
        assert!(t.admit(ip("2001:db8::1"), end - SEC).is_err());
        assert!(t.admit(ip("2001:db8::1"), end).is_ok());
        assert!(!t.auth_failed(ip("2001:db8::1"), end));
        // Failures spread out over more than an hour never lock.
        let t = tracker(ClientLimits { max_auth_failures: 3, ..Default::default() });
        for i in 0..20 {
            assert!(!t.auth_failed(ip("192.0.2.1"), start + i * Duration::from_secs(1200)), "failure {i}");
        }
        t.sweep(start + Duration::from_secs(20 * 1200 + 3600));
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn off_and_exempt() {
        let limits = ClientLimits {
            max_connections: 0,
            max_rate: 0,
            max_auth_failures: 0,
            exempt: vec!["127.0.0.0/8".parse().unwrap()],
            ..Default::default()
        };
        let t = tracker(limits);
        let now = Instant::now();
        let held: Vec<Permit> = (0..1000).map(|_| t.admit(ip("192.0.2.1"), now).unwrap()).collect();
        assert!((0..100).all(|_| !t.auth_failed(ip("192.0.2.1"), now)));
        drop(held);
        let t = tracker(ClientLimits {
            max_connections: 1,
            max_auth_failures: 1,
            exempt: vec!["127.0.0.0/8".parse().unwrap()],
            ..Default::default()
        });
        let held: Vec<Permit> = (0..10).map(|_| t.admit(ip("127.0.0.5"), now).unwrap()).collect();
        assert!(!t.auth_failed(ip("127.0.0.5"), now) && !t.is_locked(ip("127.0.0.5"), now));
        assert_eq!(t.tracked(), 0);
        drop(held);
        assert!(t.auth_failed(ip("192.0.2.1"), now));
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = tracker(ClientLimits::default());
        let now = Instant::now();
        // A lockout, and a client holding a connection, among a flood of one-off clients.
        for _ in 0..10 {
            t.auth_failed(ip("192.0.2.1"), now);
        }
        let held = t.admit(ip("192.0.2.2"), now).unwrap();
        for i in 0..(3 * MAX_TRACKED as u32) {
            let a = IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | (u128::from(i) << 64)));
            drop(t.admit(a, now + Duration::from_millis(u64::from(i) / 1000)).unwrap());
            assert!(t.tracked() <= MAX_TRACKED);
        }
        assert!(t.is_locked(ip("192.0.2.1"), now + SEC), "lockouts are evicted last");
        assert_eq!(t.lock().clients[&held.key()].active, 1, "a client with a connection is never evicted");
        drop(held);
        t.sweep(now + Duration::from_secs(2 * 3600));
        assert_eq!(t.tracked(), 0);
    }
}
