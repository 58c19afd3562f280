//! Greylisting (postgrey's way): the first attempt of an unknown triplet (client network,
//! sender, recipient) is deferred with `451 4.7.1`; a retry at least `delay` and at most
//! `retry_window` after it passes, and the triplet is remembered for `max_age` after it was
//! last seen, so that its later mail passes at once. Real MTAs retry; most spamware does not.
//!
//! Also passed at once: a sender domain for which SPF passes and which has passed greylisting
//! before with SPF passing (the domain's servers are known to retry, whichever of them sends).
//!
//! The client network is the address's /24 (IPv4) or /64 (IPv6), so that a sender's pool of
//! outgoing servers counts as one client. Sender and recipient compare case-insensitively.
//!
//! State: in memory, at most `max_entries` triplets and as many domains (the least recently
//! seen go first), and durable in `<data_dir>/greylist/greylist.log` (0600 in a 0700
//! directory): each change is one appended line, and the file is rewritten with only the live
//! entries (compacted) at start and whenever it has grown to more than twice their number.
//! Lines are not fsynced one by one (a power loss forgets the last few changes: at worst a
//! sender is greylisted once more); the compacted file is.
//!
//! Time is a parameter of [`Greylist::check`], so the rules are tested without sleeping.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::dnsbl::lock;

/// The log's name in its directory.
pub const LOG_FILE: &str = "greylist.log";

/// How far `last seen` may lag before a passed triplet's use is written again (its age is
/// measured in weeks: a day's precision is plenty, and most mail then writes nothing).
const TOUCH_PRECISION_MS: u64 = 86_400_000;

/// The settings of a [`Greylist`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// An unknown triplet passes on a retry this long after its first attempt.
    pub delay: Duration,
    /// A triplet not retried within this long starts over.
    pub retry_window: Duration,
    /// A passed triplet (or domain) is forgotten this long after it was last seen.
    pub max_age: Duration,
    /// Most triplets (and most domains) kept.
    pub max_entries: usize,
    /// The client network: IPv4 prefix length.
    pub ipv4_prefix: u8,
    /// The client network: IPv6 prefix length.
    pub ipv6_prefix: u8,
}

/// What greylisting says about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A triplet seen passing before.
    Known,
    /// A retry after the delay: the triplet passes now, and from now on.
    Passed,
    /// The sender domain passed SPF and has passed greylisting before.
    SpfDomain,
    /// Deferred: try again in this long.
    Defer(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Triplet {
    /// Unix milliseconds of the first attempt (of this round).
    first: u64,
    /// Unix milliseconds it was last seen (as written to the log).
    last: u64,
    passed: bool,
}

/// Entries by key, at most `cap`, the least recently used going first.
#[derive(Debug, Default)]
struct Lru<V> {
    cap: usize,
    seq: u64,
    map: HashMap<String, (V, u64)>,
    order: BTreeMap<u64, String>,
}

impl<V> Lru<V> {
    fn new(cap: usize) -> Self {
        Self { cap: cap.max(1), seq: 0, map: HashMap::new(), order: BTreeMap::new() }
    }

    /// The entry of `key`, made the most recently used.
    fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let (_, seq) = self.map.get(key)?;
        let old = *seq;
        self.seq += 1;
        let seq = self.seq;
        if let Some(k) = self.order.remove(&old) {
            self.order.insert(seq, k);
        }
        let entry = self.map.get_mut(key)?;
        entry.1 = seq;
        Some(&mut entry.0)
    }

    fn insert(&mut self, key: String, value: V) {
        if let Some((_, old)) = self.map.remove(&key) {
            self.order.remove(&old);
        }
        while self.map.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.map.remove(&oldest);
        }
        self.seq += 1;
        self.order.insert(self.seq, key.clone());
        self.map.insert(key, (value, self.seq));
    }

    fn remove(&mut self, key: &str) {
        if let Some((_, seq)) = self.map.remove(key) {
            self.order.remove(&seq);
        }
    }

    /// Oldest first.
    fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.order.values().filter_map(|k| self.map.get(k).map(|(v, _)| (k.as_str(), v)))
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

#[derive(Debug)]
struct State {
    triplets: Lru<Triplet>,
    /// SPF-passing sender domains that passed greylisting → last seen (Unix ms).
    domains: Lru<u64>,
    log: Option<File>,
    /// Lines in the log.
    lines: usize,
}

/// See the [module notes](self).
#[derive(Debug)]
pub struct Greylist {
    settings: Settings,
    dir: PathBuf,
    state: Mutex<State>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A log field: octets that could split or end it (space, controls, `%`) as `%XX`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || c == ' ' || c == '%' {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The client network of `ip` as text (`192.0.2.0/24`).
pub fn network(ip: IpAddr, v4: u8, v6: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let len = v4.min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let len = v6.min(128);
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            format!("{}/{len}", std::net::Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

impl Greylist {
    /// The greylist kept in `dir` (created `0700` if missing; its log read back, compacted).
    pub fn open(dir: &Path, settings: Settings) -> io::Result<Self> {
        Self::open_at(dir, settings, SystemTime::now())
    }

    /// [`Greylist::open`] with the time now (entries too old by then are left out).
    pub fn open_at(dir: &Path, settings: Settings, now: SystemTime) -> io::Result<Self> {
        let named = |e: io::Error, what: &str, p: &Path| {
            io::Error::new(e.kind(), format!("greylist: {what} {}: {e}", p.display()))
        };
        match crate::mta::private::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => crate::mta::private::tighten_dir(dir)?,
            Err(e) => return Err(named(e, "cannot create", dir)),
        }
        let mut state = State {
            triplets: Lru::new(settings.max_entries),
            domains: Lru::new(settings.max_entries),
            log: None,
            lines: 0,
        };
        let path = dir.join(LOG_FILE);
        let mut bad = 0usize;
        match File::open(&path) {
            Ok(f) => {
                for line in BufReader::new(f).split(b'\n') {
                    let line = line.map_err(|e| named(e, "cannot read", &path))?;
                    if !load_line(&mut state, &String::from_utf8_lossy(&line)) {
                        bad += 1;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(named(e, "cannot open", &path)),
        }
        if bad > 0 {
            tracing::warn!(file = %path.display(), lines = bad, "greylist: lines not understood were left out");
        }
        let g = Self { settings, dir: dir.to_owned(), state: Mutex::new(state) };
        {
            let mut state = lock(&g.state);
            g.compact(&mut state, unix_ms(now)).map_err(|e| named(e, "cannot write", &path))?;
            tracing::info!(
                file = %path.display(),
                triplets = state.triplets.len(),
                domains = state.domains.len(),
                delay = ?g.settings.delay,
                "greylisting on"
            );
        }
        Ok(g)
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Rewrites the log with the live entries only (oldest first), durably, and keeps it
    /// open for appending.
    fn compact(&self, state: &mut State, now: u64) -> io::Result<()> {
        let (max_age, window) = (ms(self.settings.max_age), ms(self.settings.retry_window));
        let stale: Vec<String> = state
            .triplets
            .iter()
            .filter(|(_, t)| {
                let age = now.saturating_sub(if t.passed { t.last } else { t.first });
                age > if t.passed { max_age } else { window }
            })
            .map(|(k, _)| k.to_owned())
            .collect();
        stale.iter().for_each(|k| state.triplets.remove(k));
        let stale: Vec<String> =
            state.domains.iter().filter(|(_, &l)| now.saturating_sub(l) > max_age).map(|(k, _)| k.to_owned()).collect();
        stale.iter().for_each(|k| state.domains.remove(k));

        let path = self.dir.join(LOG_FILE);
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let mut w = io::BufWriter::new(crate::mta::private::create(&tmp)?);
        let mut lines = 0;
        for (k, t) in state.triplets.iter() {
            writeln!(w, "{}", triplet_line(k, t))?;
            lines += 1;
        }
        for (d, last) in state.domains.iter() {
            writeln!(w, "d {last} {d}")?;
            lines += 1;
        }
        let f = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        state.log = Some(std::fs::OpenOptions::new().append(true).open(&path)?);
        state.lines = lines;
        Ok(())
    }

    /// Appends `line` to the log (compacting it when it has grown); a failure is logged, the
    /// decision stands.
    fn append(&self, state: &mut State, line: &str, now: u64) {
        let written = match state.log.as_mut() {
            Some(f) => f.write_all(format!("{line}\n").as_bytes()),
            None => Err(io::Error::other("not open")),
        };
        match written {
            Ok(()) => state.lines += 1,
            Err(e) => tracing::error!(file = %self.dir.join(LOG_FILE).display(), "greylist: cannot append: {e}"),
        }
        if state.lines > 2 * (state.triplets.len() + state.domains.len()) + 1000 {
            if let Err(e) = self.compact(state, now) {
                tracing::error!(file = %self.dir.join(LOG_FILE).display(), "greylist: cannot compact: {e}");
            }
        }
    }

    /// The key of a triplet.
    pub fn key(&self, ip: IpAddr, sender: &str, rcpt: &str) -> String {
        format!(
            "{} {} {}",
            network(ip, self.settings.ipv4_prefix, self.settings.ipv6_prefix),
            escape(&sender.to_lowercase()),
            escape(&rcpt.to_lowercase())
        )
    }

    /// Greylisting's verdict on an attempt from `ip`, `sender` (`""` for `<>`) to `rcpt` at
    /// `now`; `spf_pass` is the sender domain when SPF passed for it.
    pub fn check(&self, ip: IpAddr, sender: &str, rcpt: &str, spf_pass: Option<&str>, now: SystemTime) -> Outcome {
        let now = unix_ms(now);
        let s = &self.settings;
        let (delay, window, max_age) = (ms(s.delay), ms(s.retry_window), ms(s.max_age));
        let mut state = lock(&self.state);
        let domain = spf_pass.map(|d| escape(&d.trim_end_matches('.').to_lowercase()));
        if let Some(d) = &domain {
            if let Some(last) = state.domains.get_mut(d).map(|l| *l) {
                if now.saturating_sub(last) <= max_age {
                    if now.saturating_sub(last) > TOUCH_PRECISION_MS {
                        if let Some(l) = state.domains.get_mut(d) {
                            *l = now;
                        }
                        self.append(&mut state, &format!("d {now} {d}"), now);
                    }
                    return Outcome::SpfDomain;
                }
            }
        }
        let key = self.key(ip, sender, rcpt);
        let (outcome, write) = match state.triplets.get_mut(&key) {
            Some(t) if t.passed && now.saturating_sub(t.last) <= max_age => {
                let write = now.saturating_sub(t.last) > TOUCH_PRECISION_MS;
                if write {
                    t.last = now;
                }
                (Outcome::Known, write.then_some(*t))
            }
            Some(t) if !t.passed && now.saturating_sub(t.first) <= window && now.saturating_sub(t.first) >= delay => {
                t.passed = true;
                t.last = now;
                (Outcome::Passed, Some(*t))
            }
            Some(t) if !t.passed && now >= t.first && now - t.first < delay => {
                (Outcome::Defer(Duration::from_millis(delay - (now - t.first))), None)
            }
            _ => {
                let t = Triplet { first: now, last: now, passed: false };
                state.triplets.insert(key.clone(), t);
                (Outcome::Defer(s.delay), Some(t))
            }
        };
        if let Some(t) = write {
            self.append(&mut state, &triplet_line(&key, &t), now);
        }
        if let (Outcome::Passed, Some(d)) = (outcome, domain) {
            state.domains.insert(d.clone(), now);
            self.append(&mut state, &format!("d {now} {d}"), now);
        }
        outcome
    }
}

fn triplet_line(key: &str, t: &Triplet) -> String {
    format!("t {} {} {} {key}", t.first, t.last, u8::from(t.passed))
}

/// Replays one log line into `state`; `false` when it is not understood.
fn load_line(state: &mut State, line: &str) -> bool {
    let f: Vec<&str> = line.split(' ').collect();
    match f.as_slice() {
        [] | [""] => true,
        ["t", first, last, passed, net, sender, rcpt] => {
            let (Ok(first), Ok(last)) = (first.parse(), last.parse()) else { return false };
            let passed = match *passed {
                "0" => false,
                "1" => true,
                _ => return false,
            };
            if net.parse::<crate::proxy::Network>().is_err() {
                return false;
            }
            state.triplets.insert(format!("{net} {sender} {rcpt}"), Triplet { first, last, passed });
            true
        }
        ["d", last, domain] if !domain.is_empty() => match last.parse() {
            Ok(last) => {
                state.domains.insert((*domain).to_owned(), last);
                true
            }
            Err(_) => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_entries: usize) -> Settings {
        Settings {
            delay: Duration::from_secs(300),
            retry_window: Duration::from_secs(2 * 86400),
            max_age: Duration::from_secs(35 * 86400),
            max_entries,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn networks() {
        assert_eq!(network("192.0.2.77".parse().unwrap(), 24, 64), "192.0.2.0/24");
        assert_eq!(network("::ffff:192.0.2.77".parse().unwrap(), 24, 64), "192.0.2.0/24");
        assert_eq!(network("2001:db8:1:2:3:4:5:6".parse().unwrap(), 24, 64), "2001:db8:1:2::/64");
        assert_eq!(network("192.0.2.77".parse().unwrap(), 32, 64), "192.0.2.77/32");
        assert_eq!(escape("a b%c\r\n"), "a%20b%25c%0D%0A");
    }

    #[test]
    fn delay_window_age_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let g = Greylist::open_at(&dir.path().join("greylist"), settings(100), at(0)).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.200".parse().unwrap();
        assert_eq!(g.check(ip, "A@x.example", "me@ours", None, at(0)), Outcome::Defer(Duration::from_secs(300)));
        assert_eq!(g.check(ip, "a@x.example", "me@ours", None, at(100)), Outcome::Defer(Duration::from_secs(200)));
        // Another address of the same /24 is the same client.
        assert_eq!(g.check(other, "a@x.example", "ME@ours", None, at(300)), Outcome::Passed);
        assert_eq!(g.check(ip, "a@x.example", "me@ours", None, at(301)), Outcome::Known);
        // Another recipient is another triplet.
        assert!(matches!(g.check(ip, "a@x.example", "you@ours", None, at(301)), Outcome::Defer(_)));
        // Not retried within the window: starts over.
        assert!(matches!(g.check(ip, "b@x.example", "me@ours", None, at(0)), Outcome::Defer(_)));
        assert!(matches!(g.check(ip, "b@x.example", "me@ours", None, at(3 * 86400)), Outcome::Defer(_)));
        drop(g);

        // A restart keeps what passed, and the unpassed triplets' first attempts.
        let g = Greylist::open_at(&dir.path().join("greylist"), settings(100), at(0)).unwrap();
        assert_eq!(g.check(ip, "a@x.example", "me@ours", None, at(400)), Outcome::Known);
        assert_eq!(g.check(ip, "a@x.example", "you@ours", None, at(601)), Outcome::Passed);
        // Passed, then unseen for longer than max_age: forgotten.
        assert!(matches!(g.check(ip, "a@x.example", "me@ours", None, at(400 + 36 * 86400)), Outcome::Defer(_)));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("greylist").join(LOG_FILE)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn spf_domains_that_passed_before_skip_it() {
        let dir = tempfile::tempdir().unwrap();
        let g = Greylist::open_at(dir.path(), settings(100), at(0)).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let far: IpAddr = "198.51.100.1".parse().unwrap();
        // SPF passes, but the domain never passed greylisting: greylisted.
        assert!(matches!(g.check(ip, "a@x.example", "me@ours", Some("x.example"), at(0)), Outcome::Defer(_)));
        assert_eq!(g.check(ip, "a@x.example", "me@ours", Some("x.example"), at(300)), Outcome::Passed);
        // From now on, any sender of the domain from anywhere, when SPF passes.
        assert_eq!(g.check(far, "b@x.example", "you@ours", Some("X.example."), at(301)), Outcome::SpfDomain);
        // Not without SPF passing.
        assert!(matches!(g.check(far, "b@x.example", "you@ours", None, at(302)), Outcome::Defer(_)));
        drop(g);
        let g = Greylist::open_at(dir.path(), settings(100), at(0)).unwrap();
        assert_eq!(g.check(far, "c@x.example", "you@ours", Some("x.example"), at(303)), Outcome::SpfDomain);
    }

    #[test]
    fn bounded_and_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let g = Greylist::open_at(dir.path(), settings(10), at(5000)).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for i in 0..5000 {
            let _ = g.check(ip, &format!("s{i}@x"), "me@ours", None, at(i));
        }
        let state = lock(&g.state);
        assert_eq!(state.triplets.len(), 10, "the oldest went");
        assert!(state.triplets.map.contains_key(&g.key(ip, "s4999@x", "me@ours")));
        assert!(state.lines <= 2 * 10 + 1001, "compacted: {}", state.lines);
        drop(state);
        let text = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert!(text.lines().count() <= 1021);
        // A torn or foreign line is left out, the rest is read.
        std::fs::write(dir.path().join(LOG_FILE), format!("{text}t 1 2 x\ngarbage\nt 5 6 1 192.0.2.0/24 a b")).unwrap();
        drop(g);
        let g = Greylist::open_at(dir.path(), settings(10), at(5000)).unwrap();
        assert!(matches!(g.check(ip, "a", "b", None, at(7)), Outcome::Defer(_)), "the timestamps are ancient");
        assert_eq!(g.check(ip, "s4999@x", "me@ours", None, at(5000)), Outcome::Defer(Duration::from_secs(299)));
    }
}
