//! The Sender Rewriting Scheme (SRS), so that forwarded mail passes SPF at its destination.
//!
//! A forwarder keeps the original envelope sender, so the destination sees mail "from"
//! `alice@a.test` arriving from our IP and SPF fails. SRS rewrites the sender to an address of
//! our own domain that still carries the original, signed and dated:
//!
//! ```text
//! alice@a.test  →  SRS0=HHHH=TT=a.test=alice@fwd.test
//!                       │    │  │      └ original local part (may itself contain '=')
//!                       │    │  └ original domain
//!                       │    └ day stamp: days since 1970 mod 1024, two base32 characters
//!                       └ hash: HMAC-SHA1(secret, lower(TT ‖ domain ‖ local)), base64, truncated
//! ```
//!
//! A bounce to that address comes back to us; [`Srs::reverse`] checks the hash and the age and
//! gives back `alice@a.test`, so we cannot be used to relay mail to arbitrary addresses.
//!
//! Forwarding an address that is already `SRS0` (a second forwarding hop) gives the shorter
//! `SRS1` form, which points back to the first forwarder rather than nesting:
//! `SRS1=HHHH=first.fwd==HHHH=TT=a.test=alice@second.fwd` (the hash covers `first.fwd` and the
//! rest). Reversing it gives the `SRS0` address at the first forwarder, which reverses it in turn.
//!
//! The format follows the public description of the scheme (Shevek's SRS paper, libsrs2 and
//! postsrsd): the hash is case-insensitive because some mail systems lower-case local parts,
//! and the input is lower-cased before hashing. The key file written by
//! [`load_or_create_secret`] holds one line of text, which is used as the key as it stands, as
//! postsrsd does with its secrets file.
//!
//! ```
//! use std::time::SystemTime;
//! use smtp_std::mta::srs::{Srs, SrsError};
//!
//! let srs = Srs::new(b"a long random secret", "fwd.test");
//! let now = SystemTime::now();
//! let rewritten = srs.forward("alice@a.test", now);
//! assert!(rewritten.starts_with("SRS0=") && rewritten.ends_with("=a.test=alice@fwd.test"));
//! assert_eq!(srs.reverse(&rewritten, now), Ok("alice@a.test".to_string()));
//! assert_eq!(srs.reverse("bob@fwd.test", now), Err(SrsError::NotSrs));
//! ```

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::hmac;

/// The 32 characters of a day stamp (RFC 4648 base32 alphabet).
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Day stamps count days modulo this (two base32 characters).
const TIME_SLOTS: u64 = 1024;
/// The longest hash: the unpadded base64 of an HMAC-SHA1 (20 bytes).
const MAX_HASH_LEN: usize = 27;

/// Why an address could not be reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrsError {
    /// The address is not an SRS address (its local part starts with neither `SRS0` nor `SRS1`
    /// and a separator).
    NotSrs,
    /// The hash does not match: the address was not made with our secret, or was altered.
    BadHash,
    /// The hash matches, but the day stamp is older than the maximum age.
    Expired,
    /// It starts like an SRS address but some part is missing or the day stamp is not base32.
    Malformed,
}

impl fmt::Display for SrsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SrsError::NotSrs => "not an SRS address",
            SrsError::BadHash => "SRS hash does not match",
            SrsError::Expired => "SRS address has expired",
            SrsError::Malformed => "malformed SRS address",
        })
    }
}

impl std::error::Error for SrsError {}

/// An SRS rewriter: our secret, our domain and how long rewritten addresses stay valid.
///
/// `Debug` shows the domain and settings, never the secret.
#[derive(Clone)]
pub struct Srs {
    /// Signs new addresses and checks them.
    key: hmac::Key,
    /// Earlier keys, still accepted by [`Srs::reverse`] (key rotation).
    previous: Vec<hmac::Key>,
    /// Our domain, lower-cased: the domain of every rewritten address.
    domain: String,
    max_age_days: u16,
    hash_len: usize,
}

impl fmt::Debug for Srs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Srs")
            .field("domain", &self.domain)
            .field("max_age_days", &self.max_age_days)
            .field("hash_len", &self.hash_len)
            .field("previous_secrets", &self.previous.len())
            .finish_non_exhaustive()
    }
}

impl Srs {
    /// How many days a rewritten address is accepted by default (as libsrs2).
    pub const DEFAULT_MAX_AGE_DAYS: u16 = 21;
    /// Hash characters written by default (as libsrs2 and postsrsd).
    pub const DEFAULT_HASH_LEN: usize = 4;

    /// A rewriter that signs with `secret` and rewrites to addresses `@domain`.
    ///
    /// The secret should be long and random (see [`load_or_create_secret`]); the domain must
    /// be one whose mail comes to us, so that bounces can be reversed.
    pub fn new(secret: &[u8], domain: &str) -> Self {
        Srs {
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret),
            previous: Vec::new(),
            domain: domain.trim().trim_end_matches('.').to_ascii_lowercase(),
            max_age_days: Self::DEFAULT_MAX_AGE_DAYS,
            hash_len: Self::DEFAULT_HASH_LEN,
        }
    }

    /// Accepts addresses for `days` days (clamped to 1..=1000: the day stamp wraps at 1024).
    pub fn with_max_age_days(mut self, days: u16) -> Self {
        self.max_age_days = days.clamp(1, 1000);
        self
    }

    /// Writes hashes of `len` characters (clamped to 4..=27) and accepts none shorter.
    pub fn with_hash_len(mut self, len: usize) -> Self {
        self.hash_len = len.clamp(4, MAX_HASH_LEN);
        self
    }

    /// Also accepts addresses signed with an earlier secret, for key rotation: new addresses are
    /// signed with the secret given to [`Srs::new`] only.
    pub fn with_previous_secret(mut self, secret: &[u8]) -> Self {
        self.previous.push(hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret));
        self
    }

    /// Our domain, lower-cased.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The envelope sender to use when forwarding a message from `sender`.
    ///
    /// - `""` (the null sender of bounces) stays `""`, and so does an address without `@`;
    /// - an address of our own domain stays as it is (nothing to fix for SPF);
    /// - an `SRS0` address of another domain becomes `SRS1=HHHH=thatdomain==...@ourdomain`;
    ///   an `SRS1` address is re-signed for our domain (it keeps pointing to the first hop);
    /// - any other address becomes `SRS0=HHHH=TT=domain=local@ourdomain`.
    ///
    /// A quoted local part (`"a b"@x`) is unquoted inside and the result quoted if it needs it.
    pub fn forward(&self, sender: &str, now: SystemTime) -> String {
        let Some((local, host)) = split_address(sender) else {
            return sender.to_string();
        };
        if host.is_empty() || local.is_empty() || host.trim_end_matches('.').eq_ignore_ascii_case(&self.domain) {
            return sender.to_string();
        }
        let new_local = if let Some(rest) = strip_tag(&local, "SRS1") {
            // SRS1=hash=firsthop=<sep>rest: keep the first hop, sign again with our key.
            match rest.split_once('=').and_then(|(_, r)| r.split_once('=')) {
                Some((first_hop, inner)) if !first_hop.is_empty() && !inner.is_empty() => {
                    format!("SRS1={}={first_hop}={inner}", self.hash(&self.key, &[first_hop, inner]))
                }
                _ => self.srs0(&local, host, now),
            }
        } else if strip_tag(&local, "SRS0").is_some() {
            // SRS0<sep>hash=TT=domain=local at `host`: point back to `host`. The separator is
            // kept as the first character of the rest.
            let inner = &local[4..];
            format!("SRS1={}={host}={inner}", self.hash(&self.key, &[host, inner]))
        } else {
            self.srs0(&local, host, now)
        };
        format!("{}@{}", quote_local(&new_local), self.domain)
    }

    /// The original sender of an SRS address of ours, after checking its hash (in constant
    /// time, case-insensitively) and, for `SRS0`, its age at `now`.
    ///
    /// `SRS0=HHHH=TT=a.test=alice@…` gives `alice@a.test`; `SRS1=HHHH=first.fwd==rest@…` gives
    /// `SRS0=rest@first.fwd`. The domain after `@` is not checked (routing decides which
    /// domains are ours); a bare local part without `@` is accepted too.
    pub fn reverse(&self, address: &str, now: SystemTime) -> Result<String, SrsError> {
        let local = match split_address(address) {
            Some((local, _)) => local,
            None => unquote_local(address),
        };
        if let Some(rest) = strip_tag(&local, "SRS0") {
            // hash=TT=domain=local; the local part may contain '='.
            let mut parts = rest.splitn(4, '=');
            let (Some(hash), Some(stamp), Some(host), Some(user)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(SrsError::Malformed);
            };
            if hash.is_empty() || host.is_empty() || user.is_empty() {
                return Err(SrsError::Malformed);
            }
            let then = decode_stamp(stamp).ok_or(SrsError::Malformed)?;
            self.check_hash(hash, &[stamp, host, user])?;
            let age = (day_slot(now) + TIME_SLOTS - then) % TIME_SLOTS;
            if age > u64::from(self.max_age_days) {
                return Err(SrsError::Expired);
            }
            Ok(format!("{}@{host}", quote_local(user)))
        } else if let Some(rest) = strip_tag(&local, "SRS1") {
            // hash=firsthop=<sep>rest
            let mut parts = rest.splitn(3, '=');
            let (Some(hash), Some(first_hop), Some(inner)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(SrsError::Malformed);
            };
            if hash.is_empty() || first_hop.is_empty() || inner.is_empty() {
                return Err(SrsError::Malformed);
            }
            self.check_hash(hash, &[first_hop, inner])?;
            Ok(format!("{}@{first_hop}", quote_local(&format!("SRS0{inner}"))))
        } else {
            Err(SrsError::NotSrs)
        }
    }

    /// Whether the local part of `address` starts with `SRS0` or `SRS1` and a separator
    /// (`=`, `+` or `-`), case-insensitively. Says nothing of its validity.
    pub fn is_srs(address: &str) -> bool {
        let local = match split_address(address) {
            Some((local, _)) => local,
            None => unquote_local(address),
        };
        strip_tag(&local, "SRS0").is_some() || strip_tag(&local, "SRS1").is_some()
    }

    /// The SRS0 local part for `local@host` at `now`.
    fn srs0(&self, local: &str, host: &str, now: SystemTime) -> String {
        let stamp = encode_stamp(day_slot(now));
        let hash = self.hash(&self.key, &[&stamp, host, local]);
        format!("SRS0={hash}={stamp}={host}={local}")
    }

    /// The base64 HMAC of the lower-cased concatenation of `parts`, truncated to our length.
    fn hash(&self, key: &hmac::Key, parts: &[&str]) -> String {
        let mut full = full_hash(key, parts);
        full.truncate(self.hash_len);
        full
    }

    /// Checks `given` against the hash of `parts` under every key we accept.
    fn check_hash(&self, given: &str, parts: &[&str]) -> Result<(), SrsError> {
        if given.len() < self.hash_len || given.len() > MAX_HASH_LEN {
            return Err(SrsError::BadHash);
        }
        let mut ok = false;
        for key in std::iter::once(&self.key).chain(&self.previous) {
            let expected = full_hash(key, parts);
            // Every key is tried, so the time does not say which one matched.
            ok |= eq_ignore_case_ct(given.as_bytes(), &expected.as_bytes()[..given.len()]);
        }
        if ok {
            Ok(())
        } else {
            Err(SrsError::BadHash)
        }
    }
}

/// The whole unpadded base64 HMAC-SHA1 (27 characters) of the lower-cased `parts`.
fn full_hash(key: &hmac::Key, parts: &[&str]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    for part in parts {
        ctx.update(part.to_lowercase().as_bytes());
    }
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(ctx.sign().as_ref())
}

/// Compares two equally long byte strings, ASCII case-insensitively, in time that depends
/// only on their length.
fn eq_ignore_case_ct(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase()));
    diff == 0
}

/// Days since 1970 at `now`, modulo 1024 (times before 1970 count as day 0).
fn day_slot(now: SystemTime) -> u64 {
    let days = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
    days % TIME_SLOTS
}

/// Two base32 characters for a day slot (0..1024).
fn encode_stamp(slot: u64) -> String {
    let hi = BASE32[((slot >> 5) & 31) as usize];
    let lo = BASE32[(slot & 31) as usize];
    String::from_utf8_lossy(&[hi, lo]).into_owned()
}

/// The day slot of a two-character base32 stamp, case-insensitively.
fn decode_stamp(stamp: &str) -> Option<u64> {
    let b = stamp.as_bytes();
    if b.len() != 2 {
        return None;
    }
    let value = |c: u8| BASE32.iter().position(|&x| x == c.to_ascii_uppercase()).map(|p| p as u64);
    Some(value(b[0])? << 5 | value(b[1])?)
}

/// `local` without the case-insensitive `tag` (`SRS0`/`SRS1`) and the separator after it.
fn strip_tag<'a>(local: &'a str, tag: &str) -> Option<&'a str> {
    let head = local.get(..tag.len())?;
    let rest = &local[tag.len()..];
    let sep = rest.chars().next()?;
    (head.eq_ignore_ascii_case(tag) && matches!(sep, '=' | '+' | '-')).then(|| &rest[1..])
}

/// Splits at the last `@` into the (unquoted) local part and the domain.
fn split_address(address: &str) -> Option<(String, &str)> {
    let address = address.trim();
    let address = address.strip_prefix('<').and_then(|a| a.strip_suffix('>')).unwrap_or(address);
    let (local, host) = address.rsplit_once('@')?;
    Some((unquote_local(local), host))
}

/// A quoted-string local part without its quotes and backslash escapes; others as they are.
fn unquote_local(local: &str) -> String {
    let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) else {
        return local.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A local part as it must be written: as is when it is a dot-atom, else quoted.
fn quote_local(local: &str) -> String {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    let dot_atom = !local.is_empty() && local.split('.').all(|atom| !atom.is_empty() && atom.chars().all(atext));
    if dot_atom {
        return local.to_string();
    }
    let mut out = String::with_capacity(local.len() + 2);
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Reads the SRS secret from `path`, or creates the file with a new random secret.
///
/// The file holds one line of text, used as the key as it stands (trailing white space and
/// anything after the first line are ignored), so a postsrsd secrets file works too. A new file
/// gets 32 random bytes from the operating system, base64-encoded (256 bits), mode 0600, written
/// to a temporary file, fsynced and linked into place (never over an existing file, so two
/// processes starting at once agree on one secret), then the directory is fsynced.
///
/// An existing file that is readable by others is used but logged as a warning; an empty one is
/// an error.
pub fn load_or_create_secret(path: &Path) -> io::Result<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => {
            warn_if_readable_by_others(path);
            return parse_secret(&bytes, path);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut raw = [0u8; 32];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut raw).map_err(|e| io::Error::other(e.to_string()))?;
    let secret = base64::engine::general_purpose::STANDARD.encode(raw);

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(format!("{secret}\n").as_bytes())?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            fs::File::open(dir)?.sync_all()?;
            Ok(secret.into_bytes())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => parse_secret(&fs::read(path)?, path),
        Err(e) => Err(e),
    }
}

/// The first line of a key file, without trailing white space; an error when that is empty.
fn parse_secret(bytes: &[u8], path: &Path) -> io::Result<Vec<u8>> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.trim_ascii_end();
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: the SRS secret file is empty", path.display()),
        ));
    }
    Ok(line.to_vec())
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the SRS secret file is readable by others (chmod 600 it)");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn day(n: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(n * 86_400 + 3_600)
    }

    fn srs() -> Srs {
        Srs::new(b"test secret, not random", "fwd.test")
    }

    /// The parts of an SRS0 local part: hash, stamp, domain, local.
    fn parts(address: &str) -> Vec<String> {
        let local = address.rsplit_once('@').unwrap().0;
        local.splitn(5, '=').map(str::to_string).collect()
    }

    #[test]
    fn round_trip() {
        let s = srs();
        let now = day(20_000);
        let fwd = s.forward("alice@a.test", now);
        let p = parts(&fwd);
        assert_eq!(p[0], "SRS0");
        assert_eq!(p[1].len(), 4);
        assert_eq!(p[2], encode_stamp(20_000 % 1024));
        assert_eq!(&p[3..], ["a.test", "alice"]);
        assert!(fwd.ends_with("=a.test=alice@fwd.test"), "{fwd}");
        assert!(Srs::is_srs(&fwd));
        assert_eq!(s.reverse(&fwd, now).unwrap(), "alice@a.test");
        assert_eq!(s.reverse(&format!("<{fwd}>"), now).unwrap(), "alice@a.test");
        // Deterministic for the same day, different on another day.
        assert_eq!(s.forward("alice@a.test", now), fwd);
        assert_ne!(s.forward("alice@a.test", day(20_001)), fwd);
        // Still valid after the maximum age, not a day later.
        assert_eq!(s.reverse(&fwd, day(20_021)).unwrap(), "alice@a.test");
        assert_eq!(s.reverse(&fwd, day(20_022)), Err(SrsError::Expired));
    }

    #[test]
    fn hash_is_case_insensitive_and_covers_case_folded_input() {
        let s = srs();
        let now = day(19_000);
        let fwd = s.forward("Alice@A.Test", now);
        assert_eq!(s.reverse(&fwd.to_lowercase(), now).unwrap(), "alice@a.test");
        assert_eq!(s.reverse(&fwd.to_uppercase(), now).unwrap(), "ALICE@A.TEST");
        assert_eq!(s.reverse(&fwd, now).unwrap(), "Alice@A.Test");
        // The hash of the lower-cased input is the same.
        assert_eq!(parts(&fwd)[1], parts(&s.forward("alice@a.test", now))[1]);
    }

    #[test]
    fn tampered_addresses_are_refused() {
        let s = srs();
        let now = day(19_500);
        let fwd = s.forward("alice@a.test", now);
        let p = parts(&fwd);
        let with = |i: usize, v: &str| {
            let mut q = p.clone();
            q[i] = v.to_string();
            q.join("=")
        };
        let mut hash = p[1].clone().into_bytes();
        hash[0] = if hash[0] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.reverse(&with(1, std::str::from_utf8(&hash).unwrap()), now), Err(SrsError::BadHash));
        assert_eq!(s.reverse(&with(1, &p[1][..3]), now), Err(SrsError::BadHash)); // too short
        assert_eq!(s.reverse(&with(3, "evil.test"), now), Err(SrsError::BadHash));
        assert_eq!(s.reverse(&with(4, "mallory@fwd.test"), now), Err(SrsError::BadHash));
        // Moving the date forward needs a new hash.
        assert_eq!(s.reverse(&with(2, &encode_stamp((19_500 + 1) % 1024)), now), Err(SrsError::BadHash));
        // Another secret does not verify; a previous secret does.
        let other = Srs::new(b"another secret", "fwd.test");
        assert_eq!(other.reverse(&fwd, now), Err(SrsError::BadHash));
        let rotated = Srs::new(b"another secret", "fwd.test").with_previous_secret(b"test secret, not random");
        assert_eq!(rotated.reverse(&fwd, now).unwrap(), "alice@a.test");
        assert_eq!(parts(&rotated.forward("alice@a.test", now))[1], parts(&other.forward("alice@a.test", now))[1]);
    }

    #[test]
    fn longer_hashes() {
        let s = srs().with_hash_len(8);
        let now = day(100);
        let fwd = s.forward("alice@a.test", now);
        assert_eq!(parts(&fwd)[1].len(), 8);
        assert_eq!(s.reverse(&fwd, now).unwrap(), "alice@a.test");
        // A 4-character hash is too short for this rewriter, fine for the default one.
        let short = srs().forward("alice@a.test", now);
        assert_eq!(s.reverse(&short, now), Err(SrsError::BadHash));
        assert_eq!(srs().reverse(&fwd, now).unwrap(), "alice@a.test");
    }

    #[test]
    fn expiry() {
        let s = srs().with_max_age_days(3);
        let fwd = s.forward("alice@a.test", day(5000));
        assert!(s.reverse(&fwd, day(5003)).is_ok());
        assert_eq!(s.reverse(&fwd, day(5004)), Err(SrsError::Expired));
        assert_eq!(s.reverse(&fwd, day(5000 + 500)), Err(SrsError::Expired));
        // A stamp from the future (clock skew) counts as very old.
        assert_eq!(s.reverse(&fwd, day(4999)), Err(SrsError::Expired));
    }

    #[test]
    fn stamp_wraps_at_1024_days() {
        let s = srs();
        // Day 1023 mod 1024, then the counter wraps to 0, 1, ...
        let start = 19 * 1024 + 1020;
        let fwd = s.forward("alice@a.test", day(start));
        assert_eq!(parts(&fwd)[2], "74"); // 1020 = 31·32 + 28
        for later in [start, start + 3, start + 4, start + 5, start + 21] {
            assert_eq!(s.reverse(&fwd, day(later)).unwrap(), "alice@a.test", "day {later}");
        }
        assert_eq!(parts(&s.forward("x@a.test", day(start + 4)))[2], "AA");
        assert_eq!(s.reverse(&fwd, day(start + 22)), Err(SrsError::Expired));
        // 1024 days later the same stamp comes round again: SRS cannot tell (by design).
        assert!(s.reverse(&fwd, day(start + 1024)).is_ok());
        for slot in 0..1024 {
            assert_eq!(decode_stamp(&encode_stamp(slot)), Some(slot));
            assert_eq!(decode_stamp(&encode_stamp(slot).to_lowercase()), Some(slot));
        }
        assert_eq!(decode_stamp("A1"), None);
        assert_eq!(decode_stamp("AAA"), None);
        assert_eq!(decode_stamp("é"), None);
    }

    #[test]
    fn local_parts_with_separators() {
        let s = srs();
        let now = day(20_300);
        for sender in ["a=b@x.test", "a+tag@x.test", "a=b=c+d-e@x.test", "=@x.test", "a-b@x.test", "SRS0@x.test"] {
            let fwd = s.forward(sender, now);
            assert!(fwd.ends_with("@fwd.test"), "{fwd}");
            assert_eq!(s.reverse(&fwd, now).unwrap(), sender);
        }
        // A quoted local part is carried unquoted and quoted again on the way back.
        let fwd = s.forward("\"john smith\"@x.test", now);
        assert!(fwd.starts_with("\"SRS0=") && fwd.ends_with("=x.test=john smith\"@fwd.test"), "{fwd}");
        assert_eq!(s.reverse(&fwd, now).unwrap(), "\"john smith\"@x.test");
        let fwd = s.forward("\"a\\\"b\"@x.test", now);
        assert_eq!(s.reverse(&fwd, now).unwrap(), "\"a\\\"b\"@x.test");
    }

    #[test]
    fn unchanged_addresses() {
        let s = srs();
        let now = day(1);
        assert_eq!(s.forward("", now), "");
        assert_eq!(s.forward("postmaster", now), "postmaster");
        assert_eq!(s.forward("bob@fwd.test", now), "bob@fwd.test");
        assert_eq!(s.forward("bob@FWD.Test", now), "bob@FWD.Test");
        assert_eq!(s.forward("bob@", now), "bob@");
        assert_eq!(s.forward("@x.test", now), "@x.test");
        assert_eq!(Srs::new(b"k", "FWD.test.").domain(), "fwd.test");
    }

    #[test]
    fn not_srs_and_malformed() {
        let s = srs();
        let now = day(1);
        assert_eq!(s.reverse("bob@fwd.test", now), Err(SrsError::NotSrs));
        assert_eq!(s.reverse("", now), Err(SrsError::NotSrs));
        assert_eq!(s.reverse("SRS0@fwd.test", now), Err(SrsError::NotSrs));
        assert_eq!(s.reverse("SRS2=x=y@fwd.test", now), Err(SrsError::NotSrs));
        assert_eq!(s.reverse("SRSé=x@fwd.test", now), Err(SrsError::NotSrs));
        assert!(!Srs::is_srs("bob@fwd.test"));
        assert!(!Srs::is_srs("srs0x@fwd.test"));
        assert!(Srs::is_srs("srs0+abcd=AA=x=y@fwd.test"));
        assert!(Srs::is_srs("SRS1=abcd=x==y@fwd.test"));
        for bad in [
            "SRS0=@fwd.test",
            "SRS0=abcd@fwd.test",
            "SRS0=abcd=AA@fwd.test",
            "SRS0=abcd=AA=x.test@fwd.test",
            "SRS0=abcd=AA=x.test=@fwd.test",
            "SRS0==AA=x.test=a@fwd.test",
            "SRS0=abcd=A1=x.test=a@fwd.test",
            "SRS0=abcd=AAA=x.test=a@fwd.test",
            "SRS0=abcd=AA==a@fwd.test",
            "SRS1=abcd@fwd.test",
            "SRS1=abcd=x@fwd.test",
            "SRS1=abcd=x=@fwd.test",
            "SRS1==x==y@fwd.test",
        ] {
            assert_eq!(s.reverse(bad, now), Err(SrsError::Malformed), "{bad}");
        }
        assert_eq!(s.reverse("SRS0=abcd=AA=x.test=a@fwd.test", now), Err(SrsError::BadHash));
        assert_eq!(s.reverse("SRS0=\u{e9}\u{e9}\u{e9}\u{e9}=AA=x.test=a@fwd.test", now), Err(SrsError::BadHash));
    }

    #[test]
    fn second_hop_uses_srs1() {
        let first = Srs::new(b"first", "one.test");
        let second = Srs::new(b"second", "two.test");
        let third = Srs::new(b"third", "three.test");
        let now = day(20_000);
        let srs0 = first.forward("alice@a.test", now);
        let srs1 = second.forward(&srs0, now);
        let inner = srs0.strip_prefix("SRS0").unwrap().rsplit_once('@').unwrap().0;
        assert!(srs1.starts_with("SRS1=") && srs1.ends_with(&format!("=one.test={inner}@two.test")), "{srs1}");
        // A third hop re-signs the SRS1 address and still points to the first forwarder.
        let again = third.forward(&srs1, now);
        assert!(again.ends_with(&format!("=one.test={inner}@three.test")), "{again}");
        let back_to_second = third.reverse(&again, now).unwrap();
        assert_eq!(back_to_second, srs0);
        // Each hop reverses its own form; the first forwarder gets the original back.
        assert_eq!(second.reverse(&srs1, now).unwrap(), srs0);
        assert_eq!(first.reverse(&second.reverse(&srs1, now).unwrap(), now).unwrap(), "alice@a.test");
        assert_eq!(first.reverse(&srs1, now), Err(SrsError::BadHash));
        // The SRS1 hash is case-insensitive too and never expires.
        let reversed = second.reverse(&srs1.to_lowercase(), day(30_000)).unwrap();
        assert!(reversed.eq_ignore_ascii_case(&srs0), "{reversed}");
        assert_eq!(first.reverse(&reversed, now).unwrap(), "alice@a.test");
        // An SRS address of our own domain is left alone.
        assert_eq!(first.forward(&srs0, now), srs0);
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", Srs::new(b"hunter2-secret", "fwd.test"));
        assert!(text.contains("fwd.test") && !text.contains("hunter2"), "{text}");
    }

    #[test]
    fn secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("srs.key");
        let created = load_or_create_secret(&path).unwrap();
        assert_eq!(created.len(), 44); // 32 bytes in base64
        let decoded = base64::engine::general_purpose::STANDARD.decode(&created).unwrap();
        assert_eq!(decoded.len(), 32);
        assert_eq!(load_or_create_secret(&path).unwrap(), created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // Only the key file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A second new file differs.
        let other = load_or_create_secret(&dir.path().join("other.key")).unwrap();
        assert_ne!(other, created);
        // A hand-written secret: its first line, without trailing white space.
        let manual = dir.path().join("manual.key");
        fs::write(&manual, "my secret \r\nsecond line\n").unwrap();
        assert_eq!(load_or_create_secret(&manual).unwrap(), b"my secret");
        fs::write(&manual, "\n").unwrap();
        assert_eq!(load_or_create_secret(&manual).unwrap_err().kind(), io::ErrorKind::InvalidData);
        // A missing directory is an error, not a panic.
        assert!(load_or_create_secret(&dir.path().join("no/such/dir/key")).is_err());
    }
}
