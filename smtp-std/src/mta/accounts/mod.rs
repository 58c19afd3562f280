//! Accounts of the mail server: users with hashed passwords (Dovecot's passwd-file), aliases,
//! subaddressing and catch-all, and the one function that resolves a recipient,
//! [`Directory::resolve`], which RCPT (and later submission and the queue) all use.
//!
//! Resolution order, for `local@domain` (case-insensitive) in one of our domains:
//! 1. an account `local@domain`;
//! 2. an alias `local` of the domain (its members: accounts, or other aliases of ours);
//! 3. with `local` of the form `base+tag` (RFC 5233 subaddressing): 1 and 2 for `base`;
//! 4. the domain's catch-all;
//! 5. otherwise [`Resolution::Unknown`]. A domain that is not ours is [`Resolution::Foreign`].
//!
//! ```
//! use std::collections::BTreeMap;
//! use smtp_std::mta::accounts::{Directory, Resolution};
//! use smtp_std::mta::config::DomainConfig;
//!
//! let domain = DomainConfig {
//!     name: "example.org".into(),
//!     catch_all: None,
//!     aliases: BTreeMap::from([("sales".into(), vec!["alice@example.org".into(), "bob@example.org".into()])]),
//!     dkim: None,
//! };
//! let dir = Directory::with_accounts(vec![domain], ["alice@example.org", "bob@example.org"]);
//! assert_eq!(dir.resolve("Alice+news@EXAMPLE.org"), Resolution::Local(vec!["alice@example.org".into()]));
//! assert_eq!(dir.resolve("sales@example.org").accounts().len(), 2);
//! assert_eq!(dir.resolve("nobody@example.org"), Resolution::Unknown);
//! assert_eq!(dir.resolve("friend@example.net"), Resolution::Foreign);
//! ```

pub mod hash;
pub mod passwd;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::mta::config::DomainConfig;
use passwd::PasswdFile;

/// What an address is to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Deliver into the mailboxes of these accounts (`local@domain`, lower case, each once).
    Local(Vec<String>),
    /// An alias with members in other domains: deliver to `accounts` (maybe none) and
    /// forward to `external` through the queue.
    Forward {
        /// Our accounts reached.
        accounts: Vec<String>,
        /// Addresses elsewhere.
        external: Vec<String>,
    },
    /// One of our domains, but no account, alias or catch-all takes it: `550 5.1.1`.
    Unknown,
    /// Not one of our domains.
    Foreign,
}

impl Resolution {
    /// The accounts to deliver to (empty unless [`Resolution::Local`]).
    pub fn accounts(&self) -> &[String] {
        match self {
            Resolution::Local(a) | Resolution::Forward { accounts: a, .. } => a,
            _ => &[],
        }
    }

    /// Whether the address is accepted (it reaches an account or is forwarded).
    pub fn is_deliverable(&self) -> bool {
        matches!(self, Resolution::Local(_) | Resolution::Forward { .. })
    }
}

/// A hash whose password nobody knows (32 random bytes, thrown away): accounts that exist for
/// delivery only.
const NO_PASSWORD: &str = "{SHA512-CRYPT}$6$Sx0YR4a8ycBxob.6$2Hkd1VGGm.fc02d3N.1jBgd7RZEdPwuk9GCDYriZg6m9xQGjN.mZ6FL1sdzXURx5Ao3b3M5C.HtG3dQt3HLEw/";

/// How deep aliases may point at aliases.
const MAX_ALIAS_DEPTH: usize = 8;
/// How often the accounts file is looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The accounts file, reloaded when it changes on disk (so `smtp-std user add` takes effect
/// without a restart). A file that cannot be read again keeps the last good version.
pub struct AccountsFile {
    path: Option<PathBuf>,
    state: Mutex<Loaded>,
    /// What a reloaded file must pass to be taken ([`AccountsFile::check_reloads_with`]).
    check: std::sync::OnceLock<ReloadCheck>,
}

/// A test of a reloaded accounts file: `Err(why)` keeps the last good version.
type ReloadCheck = Box<dyn Fn(&PasswdFile) -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for AccountsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountsFile").field("path", &self.path).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Loaded {
    file: Arc<PasswdFile>,
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl AccountsFile {
    /// Loads `path` (a missing file is no accounts yet).
    pub fn load(path: &Path) -> Result<Self, passwd::PasswdError> {
        let file = if path.exists() { PasswdFile::load(path)? } else { PasswdFile::default() };
        let loaded = Loaded { file: Arc::new(file), stamp: stamp(path), checked: Instant::now() };
        Ok(Self { path: Some(path.to_owned()), state: Mutex::new(loaded), check: Default::default() })
    }

    /// Fixed accounts, never reloaded.
    pub fn fixed(file: PasswdFile) -> Self {
        let loaded = Loaded { file: Arc::new(file), stamp: None, checked: Instant::now() };
        Self { path: None, state: Mutex::new(loaded), check: Default::default() }
    }

    /// Takes a changed file only when `check` passes it; otherwise the last good version stays
    /// and the log says why (once per change of the file). The first check set stays.
    pub fn check_reloads_with(&self, check: impl Fn(&PasswdFile) -> Result<(), String> + Send + Sync + 'static) {
        let _ = self.check.set(Box::new(check));
    }

    /// The current accounts (looked at on disk at most once a second).
    pub fn current(&self) -> Arc<PasswdFile> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.path {
            if state.checked.elapsed() >= RELOAD_CHECK {
                state.checked = Instant::now();
                let now = stamp(path);
                if now != state.stamp {
                    // Looked at once per change: a refused or unreadable version is not read
                    // (nor logged) again until the file changes once more.
                    state.stamp = now;
                    let loaded = PasswdFile::load(path).map_err(|e| e.to_string()).and_then(|file| {
                        match self.check.get().map_or(Ok(()), |check| check(&file)) {
                            Ok(()) => Ok(file),
                            Err(why) => Err(format!("{}: {why}", path.display())),
                        }
                    });
                    match loaded {
                        Ok(file) => {
                            tracing::info!(file = %path.display(), users = file.len(), "accounts reloaded");
                            state.file = Arc::new(file);
                        }
                        Err(e) => tracing::warn!("accounts not reloaded, keeping the last good version: {e}"),
                    }
                }
            }
        }
        state.file.clone()
    }

    /// Whether `user` with `password` may log in (see [`PasswdFile::verify`]).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        self.current().verify(user, password)
    }
}

/// Our domains and their accounts and aliases.
#[derive(Debug)]
pub struct Directory {
    domains: Vec<DomainConfig>,
    accounts: Arc<AccountsFile>,
}

/// Splits `local@domain`, lower-cases both, strips the domain's trailing dot and the quotes of a
/// quoted local part that needs none.
fn split(address: &str) -> Option<(String, String)> {
    let (local, domain) = address.rsplit_once('@')?;
    let local = match local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => inner,
        _ => local,
    };
    Some((local.to_ascii_lowercase(), domain.trim_end_matches('.').to_ascii_lowercase()))
}

impl Directory {
    /// The directory of `domains` with these accounts. From now on a changed accounts file is
    /// taken only if `postmaster@` every domain still reaches someone (an emptied or cut file
    /// would refuse all mail, postmaster's included): see [`Directory::unreachable_postmasters`].
    pub fn new(domains: Vec<DomainConfig>, accounts: Arc<AccountsFile>) -> Self {
        let check =
            Directory { domains: domains.clone(), accounts: Arc::new(AccountsFile::fixed(PasswdFile::default())) };
        accounts.check_reloads_with(move |file| match check.unreachable_postmasters(file).as_slice() {
            [] => Ok(()),
            lost => Err(format!("{} would reach no account", lost.join(", "))),
        });
        Self { domains, accounts }
    }

    /// `postmaster@` each domain that reaches no account with the accounts of `file`.
    pub fn unreachable_postmasters(&self, file: &PasswdFile) -> Vec<String> {
        self.domains
            .iter()
            .map(|d| format!("postmaster@{}", d.name))
            .filter(|p| !self.resolve_in(file, p, true).is_deliverable())
            .collect()
    }

    /// A directory with fixed account names and no passwords (for tests and examples).
    pub fn with_accounts<'a>(domains: Vec<DomainConfig>, names: impl IntoIterator<Item = &'a str>) -> Self {
        let text: String = names.into_iter().map(|n| format!("{n}:{}\n", NO_PASSWORD)).collect();
        let file = PasswdFile::parse(&text).unwrap_or_default();
        Self::new(domains, Arc::new(AccountsFile::fixed(file)))
    }

    /// The accounts file.
    pub fn accounts(&self) -> &Arc<AccountsFile> {
        &self.accounts
    }

    /// Our domains.
    pub fn domains(&self) -> &[DomainConfig] {
        &self.domains
    }

    /// Whether `domain` is one of ours.
    pub fn is_ours(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        self.domains.iter().any(|d| d.name.eq_ignore_ascii_case(domain))
    }

    /// `postmaster@` our first domain: where a bare `<postmaster>` goes.
    pub fn postmaster(&self) -> String {
        format!("postmaster@{}", self.domains.first().map_or("localhost", |d| d.name.as_str()))
    }

    /// What `address` (`local@domain`) is to us; see the module notes for the order.
    pub fn resolve(&self, address: &str) -> Resolution {
        self.resolve_with(address, true)
    }

    /// Whether `address` reaches an account (or a forward) as an account, an alias or a
    /// subaddress of one, not counting the domain's catch-all: what every alias member and
    /// catch-all target in our domains must do ([`crate::mta::config::Config::check_members`]).
    pub fn reaches(&self, address: &str) -> bool {
        self.resolve_with(address, false).is_deliverable()
    }

    /// Whether `account` may send as `address`: its own address (with any `+tag`), or an
    /// alias that reaches it. A catch-all does not make an address one's own.
    pub fn owns(&self, account: &str, address: &str) -> bool {
        let account = account.to_ascii_lowercase();
        self.resolve_with(address, false).accounts().contains(&account)
    }

    /// The resolution, with or without the domain's catch-all.
    fn resolve_with(&self, address: &str, catch_all: bool) -> Resolution {
        self.resolve_in(&self.accounts.current(), address, catch_all)
    }

    /// [`Directory::resolve_with`] with the accounts of `accounts`.
    fn resolve_in(&self, accounts: &PasswdFile, address: &str, catch_all: bool) -> Resolution {
        let Some((local, domain)) = split(address) else {
            return Resolution::Unknown;
        };
        let Some(d) = self.domains.iter().find(|d| d.name == domain) else {
            return Resolution::Foreign;
        };
        let mut found = Found::default();
        let mut candidates = vec![local.as_str()];
        if let Some((base, _tag)) = local.split_once('+') {
            if !base.is_empty() {
                candidates.push(base);
            }
        }
        for l in candidates {
            if self.expand(accounts, &format!("{l}@{domain}"), 0, &mut found) {
                return found.resolution();
            }
        }
        if let Some(members) = d.catch_all.as_ref().filter(|_| catch_all) {
            for m in members {
                self.expand(accounts, m, 1, &mut found);
            }
            if !found.is_empty() {
                return found.resolution();
            }
        }
        Resolution::Unknown
    }

    /// Adds the accounts `address` reaches (an account, or an alias's members) to `found`;
    /// `false` if it is neither. Members in other domains go to `found.external`.
    fn expand(&self, accounts: &PasswdFile, address: &str, depth: usize, found: &mut Found) -> bool {
        if accounts.contains(address) {
            found.accounts.insert(address.to_owned());
            return true;
        }
        let Some((local, domain)) = address.rsplit_once('@') else {
            return false;
        };
        if depth > 0 && !self.is_ours(domain) {
            found.external.insert(address.to_owned());
            return true;
        }
        let Some(members) = self.domains.iter().find(|d| d.name == domain).and_then(|d| d.aliases.get(local)) else {
            return false;
        };
        if depth >= MAX_ALIAS_DEPTH {
            tracing::warn!(alias = address, "aliases nested too deep: ignored");
            return false;
        }
        let before = found.len();
        for m in members {
            if !self.expand(accounts, m, depth + 1, found) {
                tracing::warn!(alias = address, member = m.as_str(), "alias member is no account or alias");
            }
        }
        found.len() > before
    }
}

/// What an expansion reached.
#[derive(Debug, Default)]
struct Found {
    accounts: BTreeSet<String>,
    external: BTreeSet<String>,
}

impl Found {
    fn len(&self) -> usize {
        self.accounts.len() + self.external.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn resolution(self) -> Resolution {
        let accounts = self.accounts.into_iter().collect();
        if self.external.is_empty() {
            Resolution::Local(accounts)
        } else {
            Resolution::Forward { accounts, external: self.external.into_iter().collect() }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn dir() -> Directory {
        let a = DomainConfig {
            name: "a.test".into(),
            catch_all: None,
            aliases: BTreeMap::from([
                ("postmaster".into(), vec!["alice@a.test".into()]),
                ("sales".into(), vec!["alice@a.test".into(), "bob@a.test".into()]),
                ("team".into(), vec!["sales@a.test".into(), "carol@b.test".into(), "gone@a.test".into()]),
                ("loop".into(), vec!["loop@a.test".into()]),
                ("fwd".into(), vec!["alice@a.test".into(), "friend@elsewhere.test".into()]),
                ("away".into(), vec!["Friend@Elsewhere.test".into()]),
            ]),
            dkim: None,
        };
        let b = DomainConfig {
            name: "b.test".into(),
            catch_all: Some(vec!["carol@b.test".into()]),
            aliases: BTreeMap::new(),
            dkim: None,
        };
        Directory::with_accounts(vec![a, b], ["alice@a.test", "bob@a.test", "carol@b.test", "x+y@a.test"])
    }

    fn local(list: &[&str]) -> Resolution {
        Resolution::Local(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn order_account_alias_subaddress_catch_all() {
        let d = dir();
        assert_eq!(d.resolve("alice@a.test"), local(&["alice@a.test"]));
        assert_eq!(d.resolve("ALICE@A.Test."), local(&["alice@a.test"]));
        assert_eq!(d.resolve("\"alice\"@a.test"), local(&["alice@a.test"]));
        assert_eq!(d.resolve("sales@a.test"), local(&["alice@a.test", "bob@a.test"]));
        assert_eq!(d.resolve("team@a.test"), local(&["alice@a.test", "bob@a.test", "carol@b.test"]));
        assert_eq!(d.resolve("alice+news@a.test"), local(&["alice@a.test"]));
        assert_eq!(d.resolve("sales+q4@a.test"), local(&["alice@a.test", "bob@a.test"]));
        // An account whose name has a '+' wins over subaddressing.
        assert_eq!(d.resolve("x+y@a.test"), local(&["x+y@a.test"]));
        assert_eq!(d.resolve("x+z@a.test"), Resolution::Unknown);
        assert_eq!(d.resolve("+tag@a.test"), Resolution::Unknown);
        assert_eq!(d.resolve("nobody@a.test"), Resolution::Unknown);
        assert_eq!(d.resolve("loop@a.test"), Resolution::Unknown);
        assert_eq!(d.resolve("anyone@b.test"), local(&["carol@b.test"]));
        assert_eq!(d.resolve("postmaster@a.test"), local(&["alice@a.test"]));
        assert_eq!(d.resolve("bob@c.test"), Resolution::Foreign);
        assert_eq!(d.resolve("no-at-sign"), Resolution::Unknown);
        assert_eq!(
            d.resolve("fwd+x@a.test"),
            Resolution::Forward {
                accounts: vec!["alice@a.test".into()],
                external: vec!["friend@elsewhere.test".into()]
            }
        );
        assert_eq!(
            d.resolve("away@a.test"),
            Resolution::Forward { accounts: vec![], external: vec!["Friend@Elsewhere.test".into()] }
        );
        assert_eq!(d.postmaster(), "postmaster@a.test");
        assert!(d.owns("alice@a.test", "Alice+x@A.test") && d.owns("alice@a.test", "sales@a.test"));
        assert!(d.owns("bob@a.test", "team@a.test") && !d.owns("bob@a.test", "alice@a.test"));
        assert!(!d.owns("carol@b.test", "anyone@b.test"), "a catch-all is not an address of one's own");
        assert!(!d.owns("alice@a.test", "alice@c.test") && !d.owns("alice@a.test", ""));
    }
}
