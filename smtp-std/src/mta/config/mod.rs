//! The mail server's config file (TOML): `smtp-std serve --config FILE`.
//!
//! Every value is checked while the file is read, so that a mistake is refused at start with
//! the file, the line and the key named (`smtp-std.toml:12: listen.smtp[0]: invalid socket
//! address syntax`), before anything listens. Relative paths are taken from the directory of
//! the config file.
//!
//! ```
//! let text = r#"
//! hostname = "mail.example.org"
//! data_dir = "/var/lib/smtp-std"
//! accounts = "/etc/smtp-std/passwd"
//! [listen]
//! smtp = ["0.0.0.0:25"]
//! [[domain]]
//! name = "Example.org"
//! catch_all = "alice"
//! [domain.aliases]
//! postmaster = "alice"
//! sales = ["alice", "bob"]
//! "#;
//! let config = smtp_std::mta::config::Config::parse(text, "smtp-std.toml".as_ref()).unwrap();
//! assert_eq!(config.domains[0].name, "example.org");
//! assert_eq!(config.domains[0].aliases["sales"], ["alice@example.org", "bob@example.org"]);
//!
//! let bad = smtp_std::mta::config::Config::parse("data_dir = 1\n", "x.toml".as_ref()).unwrap_err();
//! assert_eq!(bad.line, Some(1));
//! assert_eq!(bad.key.as_deref(), Some("data_dir"));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

mod sections;
mod web;
pub use sections::*;
use web::acme_checks;

/// A config file that cannot be used: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// The key, as a path (`domain[0].aliases.sales`), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The mail server's configuration, checked and with paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// Our name: greeting, `Received:`, EHLO. Default: the machine's host name.
    pub hostname: String,
    /// Where mailboxes (`mailboxes/<domain>/<local>/`) and the spool live; created if missing.
    pub data_dir: PathBuf,
    /// The accounts file (Dovecot passwd-file). Default: `<data_dir>/passwd`.
    pub accounts: PathBuf,
    /// Run as this user after binding the ports (and own the mailboxes as it).
    pub user: Option<String>,
    /// Networks whose mail is not checked (SPF, DKIM, DMARC). Default: this host.
    pub trusted_networks: Vec<String>,
    /// Networks whose clients may send mail to any domain without logging in, queued like
    /// submitted mail and signed when a DKIM key applies (Postfix's `permit_mynetworks`): for
    /// programs of this host such as Dovecot's Sieve autoreplies. Default: none.
    pub relay_networks: Vec<String>,
    /// Listeners.
    pub listen: Listen,
    /// TLS certificate and key (STARTTLS on the smtp listeners).
    pub tls: Option<TlsFiles>,
    /// The certificate from an ACME CA instead of `[tls]`.
    pub acme: Option<AcmeConfig>,
    /// `[[domain]] mta_sts` (and `mta_sts_max_age`): the domains whose MTA-STS policy we serve.
    pub mta_sts: BTreeMap<String, (crate::mta::web::mtasts::Mode, Duration)>,
    /// DNS for the checks.
    pub dns: DnsConfig,
    /// How accepted mail reaches the mailboxes.
    pub delivery: DeliveryConfig,
    /// Limits of the SMTP sessions.
    pub limits: Limits,
    /// How mail leaves.
    pub outbound: OutboundConfig,
    /// Retries and reports.
    pub queue: QueueConfig,
    /// Check SPF, DKIM and DMARC on mail from outside (`mail_auth = false` turns it off).
    pub mail_auth: bool,
    /// The domains we receive mail for.
    pub domains: Vec<DomainConfig>,
    /// Every alias member and catch-all target as written, for [`Config::check_members`]
    /// once the accounts are known.
    pub members: Vec<Member>,
    /// The line of each `[[domain]]`'s `name`, in the order of [`Config::domains`].
    pub domain_lines: Vec<usize>,
    /// `[[dnsbl]]`: DNS blocklists and allow lists asked about each client.
    pub dnsbl: Vec<DnsblZone>,
    /// `[spam]`: DNSBL thresholds, greylisting.
    pub spam: SpamConfig,
    /// `[[milter]]`: mail filters run on each message before it is stored.
    pub milters: Vec<crate::mta::milter::MilterConfig>,
    /// `[reports]`: DMARC and TLS reports received, DMARC reports sent.
    pub reports: crate::mta::reports::ReportsConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hostname: Option<String>,
    data_dir: PathBuf,
    accounts: Option<PathBuf>,
    user: Option<Spanned<String>>,
    trusted_networks: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    relay_networks: Vec<Spanned<String>>,
    #[serde(default)]
    listen: Listen,
    tls: Option<TlsFiles>,
    acme: Option<AcmeConfig>,
    #[serde(default)]
    dns: DnsConfig,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    outbound: OutboundConfig,
    #[serde(default)]
    queue: QueueConfig,
    #[serde(default = "yes")]
    mail_auth: bool,
    #[serde(default)]
    domain: Vec<RawDomain>,
    #[serde(default)]
    dnsbl: Vec<RawDnsbl>,
    #[serde(default)]
    spam: SpamConfig,
    #[serde(default)]
    milter: Vec<crate::mta::milter::MilterConfig>,
    #[serde(default)]
    reports: crate::mta::reports::ReportsConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsbl {
    zone: Spanned<String>,
    score: Option<Spanned<i32>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    lmtp: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: Spanned<String>,
    dkim_selector: Option<Spanned<String>>,
    dkim_key: Option<Spanned<PathBuf>>,
    catch_all: Option<Spanned<Targets>>,
    #[serde(default)]
    aliases: BTreeMap<String, Spanned<Targets>>,
    mta_sts: Option<Spanned<String>>,
    mta_sts_max_age: Option<Spanned<String>>,
}

/// Where the `[listen]` keys are, for the errors that name them (a second, lenient reading
/// of the text).
#[derive(Debug, Default, Deserialize)]
struct ListenSpans {
    #[serde(default)]
    listen: ListenKeys,
    acme: Option<BTreeMap<String, Spanned<toml::Value>>>,
}

#[derive(Debug, Default, Deserialize)]
struct ListenKeys {
    submission: Option<Spanned<toml::Value>>,
    submissions: Option<Spanned<toml::Value>>,
    https: Option<Spanned<toml::Value>>,
}

/// One address or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Targets {
    One(String),
    Many(Vec<String>),
}

impl Targets {
    fn list(&self) -> Vec<&str> {
        match self {
            Targets::One(s) => vec![s.as_str()],
            Targets::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// Parses `"90s"`, `"5m"`, `"4h"`, `"5d"`, `"250ms"` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 =
        num.parse().map_err(|_| format!("{s:?}: expected a duration such as \"30s\", \"5m\", \"4h\", \"5d\""))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (ms, s, m, h, d)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?}: out of range"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(de::Error::custom)
}

fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if v.is_empty() {
        return Err(de::Error::custom("give at least one wait, e.g. [\"5m\", \"10m\"]"));
    }
    v.iter().map(|s| parse_duration(s).map_err(de::Error::custom)).collect()
}

fn duration_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map(Some).map_err(de::Error::custom)
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Whether `s` could be a domain name we serve (letters, digits, `-`, `.`; no empty label).
fn valid_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80)
        })
}

/// Whether `s` can be a local part of one of our own addresses (and so a directory name).
pub fn valid_local_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && !s.contains("..")
        && s.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'/' | b'\\' | b'@' | b'"' | b'(' | b')' | b'<' | b'>' | b',' | b';' | b':' | b'[' | b']'
                )
        })
}

impl Config {
    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Checks the config `text` read from `file` (relative paths are taken from its directory).
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let err = |line: Option<usize>, key: Option<String>, message: String| ConfigError {
            file: file.to_owned(),
            line,
            key,
            message,
        };
        let de = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.inner();
            let line = inner.span().map(|s| line_of(text, s.start));
            err(line, (key != ".").then_some(key), inner.message().to_owned())
        })?;
        let at = |span: std::ops::Range<usize>, key: String, message: String| {
            err(Some(line_of(text, span.start)), Some(key), message)
        };
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

        if raw.domain.is_empty() {
            return Err(err(
                None,
                Some("domain".into()),
                "no [[domain]]: name at least one domain to receive mail for".into(),
            ));
        }
        let mut domains: Vec<DomainConfig> = Vec::new();
        // Every alias member and catch-all, checked once the accounts are known.
        let mut members: Vec<Member> = Vec::new();
        let mut domain_lines = Vec::new();
        let mut mta_sts = BTreeMap::new();
        for (i, d) in raw.domain.iter().enumerate() {
            let name = d.name.get_ref().trim_end_matches('.').to_ascii_lowercase();
            if !valid_domain(&name) {
                return Err(at(d.name.span(), format!("domain[{i}].name"), format!("{name:?} is not a domain name")));
            }
            if domains.iter().any(|x| x.name == name) {
                return Err(at(d.name.span(), format!("domain[{i}].name"), format!("{name} is listed twice")));
            }
            let mut full_list = |key: String, targets: &Spanned<Targets>| -> Result<Vec<String>, ConfigError> {
                let line = line_of(text, targets.span().start);
                let list = targets.get_ref().list();
                if list.is_empty() {
                    return Err(err(Some(line), Some(key), "needs at least one address".into()));
                }
                let mut out = Vec::new();
                for target in list {
                    let t = target.trim().to_ascii_lowercase();
                    let (local, dom) = match t.rsplit_once('@') {
                        Some((l, d)) => (l.to_owned(), d.trim_end_matches('.').to_owned()),
                        None => (t.clone(), name.clone()),
                    };
                    if !valid_local_part(&local) || !valid_domain(&dom) {
                        return Err(err(
                            Some(line),
                            Some(key),
                            format!("{target:?} is not an address or a local part"),
                        ));
                    }
                    let address = format!("{local}@{dom}");
                    members.push(Member { key: key.clone(), line, address: address.clone() });
                    out.push(address);
                }
                Ok(out)
            };
            let mut aliases = BTreeMap::new();
            for (local, targets) in &d.aliases {
                let key = format!("domain[{i}].aliases.{local}");
                let local = local.to_ascii_lowercase();
                if !valid_local_part(&local) {
                    return Err(at(targets.span(), key, format!("{local:?} cannot be a local part")));
                }
                aliases.insert(local, full_list(key, targets)?);
            }
            let catch_all = match &d.catch_all {
                Some(t) => Some(full_list(format!("domain[{i}].catch_all"), t)?),
                None => None,
            };
            let dkim = match (&d.dkim_selector, &d.dkim_key) {
                (Some(sel), Some(key)) => Some((sel.get_ref().clone(), resolve(key.get_ref().clone()))),
                (None, None) => None,
                (Some(s), None) => {
                    return Err(at(s.span(), format!("domain[{i}].dkim_selector"), "needs dkim_key too".into()))
                }
                (None, Some(k)) => {
                    return Err(at(k.span(), format!("domain[{i}].dkim_key"), "needs dkim_selector too".into()))
                }
            };
            if let Some(mode) = &d.mta_sts {
                use crate::mta::web::mtasts::{Mode, DEFAULT_MAX_AGE, MAX_MAX_AGE};
                let m = Mode::parse(mode.get_ref()).map_err(|m| at(mode.span(), format!("domain[{i}].mta_sts"), m))?;
                let max_age = match &d.mta_sts_max_age {
                    Some(a) => {
                        let key = format!("domain[{i}].mta_sts_max_age");
                        let age = parse_duration(a.get_ref()).map_err(|m| at(a.span(), key.clone(), m))?;
                        if age > MAX_MAX_AGE || age < Duration::from_secs(86400) {
                            return Err(at(a.span(), key, "between \"1d\" and \"365d\" (RFC 8461 3.2)".into()));
                        }
                        age
                    }
                    None => DEFAULT_MAX_AGE,
                };
                mta_sts.insert(name.clone(), (m, max_age));
            } else if let Some(a) = &d.mta_sts_max_age {
                return Err(at(a.span(), format!("domain[{i}].mta_sts_max_age"), "needs mta_sts too".into()));
            }
            domains.push(DomainConfig { name, catch_all, aliases, dkim });
            domain_lines.push(line_of(text, d.name.span().start));
        }

        let trusted_networks = match &raw.trusted_networks {
            Some(list) => {
                for (i, n) in list.iter().enumerate() {
                    check_network(n.get_ref()).map_err(|m| at(n.span(), format!("trusted_networks[{i}]"), m))?;
                }
                list.iter().map(|n| n.get_ref().clone()).collect()
            }
            None => vec!["127.0.0.1/32".to_owned(), "::1/128".to_owned()],
        };
        for (i, n) in raw.relay_networks.iter().enumerate() {
            check_network(n.get_ref()).map_err(|m| at(n.span(), format!("relay_networks[{i}]"), m))?;
        }
        let relay_networks = raw.relay_networks.iter().map(|n| n.get_ref().clone()).collect();
        if let Some(user) = &raw.user {
            if nix::unistd::User::from_name(user.get_ref()).ok().flatten().is_none() {
                return Err(at(
                    user.span(),
                    "user".into(),
                    format!("no such user {:?} on this system", user.get_ref()),
                ));
            }
        }
        if raw.listen.smtp.is_empty() {
            return Err(err(
                None,
                Some("listen.smtp".into()),
                "no listener: give at least one address, e.g. smtp = [\"0.0.0.0:25\"]".into(),
            ));
        }
        // Submission is AUTH, and AUTH goes only under TLS: without a certificate such a
        // listener would offer neither STARTTLS nor AUTH, and take no one's mail.
        let spans: ListenSpans = toml::from_str(text).unwrap_or_default();
        if let Some(acme) = &raw.acme {
            acme_checks(acme, &raw.tls, &raw.listen).map_err(|(key, m)| {
                let keys = spans.acme.as_ref();
                let line = key.strip_prefix("acme.").and_then(|k| keys?.get(k)).map(|v| line_of(text, v.span().start));
                err(line, Some(key), m)
            })?;
        }
        if raw.tls.is_none() && raw.acme.is_none() && !raw.listen.https.is_empty() {
            let line = spans.listen.https.as_ref().map(|s| line_of(text, s.span().start));
            let m = "needs a certificate: add [acme] (automatic) or [tls] (your files), or remove listen.https";
            return Err(err(line, Some("listen.https".into()), m.into()));
        }
        if raw.tls.is_none() && raw.acme.is_none() {
            for (key, addrs, span, what) in [
                ("listen.submission", &raw.listen.submission, spans.listen.submission, "STARTTLS"),
                ("listen.submissions", &raw.listen.submissions, spans.listen.submissions, "implicit TLS"),
            ] {
                if !addrs.is_empty() {
                    return Err(err(
                        span.map(|s| line_of(text, s.span().start)),
                        Some(key.into()),
                        format!(
                            "needs [tls] (cert and key): submission takes AUTH only under TLS ({what}); \
                             add a [tls] table or remove {key}"
                        ),
                    ));
                }
            }
        }
        if raw.dns.trust_anchor.is_some() && raw.dns.dnssec != crate::mta::dane::DnssecMode::Validate {
            return Err(err(
                None,
                Some("dns.trust_anchor".into()),
                "is used only with dnssec = \"validate\": set that, or remove trust_anchor".into(),
            ));
        }
        if let Some(lmtp) = &raw.delivery.lmtp {
            if let Err(message) = crate::lmtp::LmtpTarget::parse(lmtp.get_ref()) {
                return Err(at(lmtp.span(), "delivery.lmtp".into(), message));
            }
        }
        let mut dnsbl: Vec<DnsblZone> = Vec::new();
        for (i, z) in raw.dnsbl.iter().enumerate() {
            let zone = z.zone.get_ref().trim_end_matches('.').to_ascii_lowercase();
            if !valid_domain(&zone) || !zone.contains('.') {
                return Err(at(z.zone.span(), format!("dnsbl[{i}].zone"), format!("{zone:?} is not a DNS zone")));
            }
            if dnsbl.iter().any(|d| d.zone == zone) {
                return Err(at(z.zone.span(), format!("dnsbl[{i}].zone"), format!("{zone} is listed twice")));
            }
            let score = z.score.as_ref().map_or(1, |s| *s.get_ref());
            if let (0, Some(s)) = (score, &z.score) {
                return Err(at(
                    s.span(),
                    format!("dnsbl[{i}].score"),
                    "0 would change nothing: give a positive score (blocklist) or a negative one (allow list)".into(),
                ));
            }
            dnsbl.push(DnsblZone { zone, score });
        }
        let names: Vec<String> = domains.iter().map(|d: &DomainConfig| d.name.clone()).collect();
        raw.reports.check(&names).map_err(|(span, key, message)| at(span, key, message))?;
        let data_dir = resolve(raw.data_dir);
        Ok(Config {
            file: file.to_owned(),
            hostname: raw.hostname.unwrap_or_else(crate::mta::maildir::system_hostname),
            accounts: raw.accounts.map(&resolve).unwrap_or_else(|| data_dir.join("passwd")),
            data_dir,
            user: raw.user.map(Spanned::into_inner),
            trusted_networks,
            relay_networks,
            listen: raw.listen,
            tls: raw.tls.map(|t| TlsFiles { cert: resolve(t.cert), key: resolve(t.key) }),
            acme: raw.acme.map(|a| AcmeConfig { ca: a.ca.clone().map(&resolve), ..a }),
            mta_sts,
            dns: DnsConfig { trust_anchor: raw.dns.trust_anchor.clone().map(&resolve), ..raw.dns },
            delivery: DeliveryConfig { lmtp: raw.delivery.lmtp.map(Spanned::into_inner) },
            limits: raw.limits,
            outbound: OutboundConfig {
                smarthost_password_file: raw.outbound.smarthost_password_file.clone().map(&resolve),
                smarthost_ca: raw.outbound.smarthost_ca.clone().map(&resolve),
                mta_sts_ca: raw.outbound.mta_sts_ca.clone().map(&resolve),
                ..raw.outbound
            },
            queue: raw.queue,
            mail_auth: raw.mail_auth,
            domains,
            members,
            domain_lines,
            dnsbl,
            spam: SpamConfig { greylist: raw.spam.greylist.filter(|d| !d.is_zero()), ..raw.spam },
            milters: raw.milter,
            reports: crate::mta::reports::ReportsConfig {
                address_line: raw.reports.address.as_ref().map(|a| line_of(text, a.span().start)),
                ..raw.reports
            },
        })
    }

    /// Checks that every alias member and catch-all target in one of our domains reaches an
    /// account (`reaches`: it is an account or an alias of ours that reaches one); members in
    /// other domains are forwards. The error names the key, its line and the member.
    pub fn check_members(&self, reaches: impl Fn(&str) -> bool) -> Result<(), ConfigError> {
        for m in &self.members {
            let domain = m.address.rsplit_once('@').map_or("", |(_, d)| d);
            if self.domain(domain).is_some() && !reaches(&m.address) {
                return Err(ConfigError {
                    file: self.file.clone(),
                    line: Some(m.line),
                    key: Some(m.key.clone()),
                    message: format!(
                        "{} reaches no account (it is neither an account nor an alias of ours): \
                         add the account (smtp-std user add {}) or correct the member",
                        m.address, m.address
                    ),
                });
            }
        }
        Ok(())
    }

    /// The `[[domain]]` named `name` (compared case-insensitively).
    pub fn domain(&self, name: &str) -> Option<&DomainConfig> {
        let name = name.trim_end_matches('.');
        self.domains.iter().find(|d| d.name.eq_ignore_ascii_case(name))
    }

    /// `<data_dir>/mailboxes`.
    pub fn mailboxes_dir(&self) -> PathBuf {
        self.data_dir.join("mailboxes")
    }
}

/// Checks a `trusted_networks` entry (`ADDR` or `ADDR/LEN`).
fn check_network(s: &str) -> Result<(), String> {
    let (addr, len) = s.split_once('/').map_or((s, None), |(a, l)| (a, Some(l)));
    let ip: std::net::IpAddr = addr.parse().map_err(|_| format!("{s:?}: not an IP address or network"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match len {
        Some(l) if l.parse::<u8>().ok().is_none_or(|l| l > max) => Err(format!("{s:?}: bad prefix length")),
        _ => Ok(()),
    }
}

/// A network in the config file (`"10.0.0.0/8"`, `"::1/128"`): [`crate::proxy::Network`]'s
/// own syntax, with its parse error.
impl<'de> Deserialize<'de> for crate::proxy::Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"hostname = "mail.example.org"          # greeting, Received:, our EHLO name
data_dir = "/var/lib/smtp-std"         # mailboxes/, and later queue/; created if missing
accounts = "/etc/smtp-std/passwd"      # see 2
[listen]
smtp = ["0.0.0.0:25"]                  # mail from the world for our domains
[tls]                                  # optional; STARTTLS on smtp when present
cert = "/etc/smtp-std/cert.pem"
key = "/etc/smtp-std/key.pem"
[dns]                                  # optional; default: the system's resolvers
server = "127.0.0.1:5353"
[[domain]]
name = "example.org"
catch_all = "alice"                    # optional
[domain.aliases]
postmaster = "alice"
sales = ["alice", "bob"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/smtp-std/smtp-std.toml"))
    }

    #[test]
    fn dnssec_modes() {
        assert_eq!(parse(EXAMPLE).unwrap().dns.dnssec, crate::mta::dane::DnssecMode::Off);
        let c = parse(&EXAMPLE.replace("[dns]", "[dns]\ndnssec = \"trust-ad\"")).unwrap();
        assert_eq!(c.dns.dnssec, crate::mta::dane::DnssecMode::TrustAd);
        let c = parse(&EXAMPLE.replace("[dns]", "[dns]\ndnssec = \"validate\"\ntrust_anchor = \"ta.key\"")).unwrap();
        assert_eq!(c.dns.trust_anchor.as_deref(), Some(Path::new("/etc/smtp-std/ta.key")));
        let (line, key, m) = error(&EXAMPLE.replace("[dns]", "[dns]\ndnssec = \"yes\""));
        // toml places an unknown enum value at its table's line.
        assert_eq!((line, key.as_deref()), (Some(10), Some("dns.dnssec")));
        assert!(m.contains("`off`, `validate`, `trust-ad`"), "{m}");
        let (_, key, m) = error(&EXAMPLE.replace("[dns]", "[dns]\ntrust_anchor = \"ta.key\""));
        assert_eq!(key.as_deref(), Some("dns.trust_anchor"), "{m}");
    }

    #[test]
    fn mta_sts_outbound_keys() {
        let c = parse(&EXAMPLE.replace(
            "[dns]",
            "[outbound]\nmta_sts = false\nmta_sts_ca = \"ca.pem\"\nmta_sts_https_port = 8443\n[dns]",
        ))
        .unwrap();
        assert_eq!(c.outbound.mta_sts, Some(false));
        assert_eq!(c.outbound.mta_sts_ca.as_deref(), Some(Path::new("/etc/smtp-std/ca.pem")), "relative to the file");
        assert_eq!(c.outbound.mta_sts_https_port, Some(8443));
        assert_eq!(parse(EXAMPLE).unwrap().outbound.mta_sts, None, "on by default");
        let (_, key, m) = error(&EXAMPLE.replace("[dns]", "[outbound]\nmta_sts_cafile = \"x\"\n[dns]"));
        assert_eq!(key.as_deref(), Some("outbound.mta_sts_cafile"), "{m}");
        assert!(m.contains("mta_sts_cafile"), "{m}");
    }

    #[test]
    fn the_issue_example_as_written() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.hostname, "mail.example.org");
        assert_eq!(c.data_dir, Path::new("/var/lib/smtp-std"));
        assert_eq!(c.accounts, Path::new("/etc/smtp-std/passwd"));
        assert_eq!(c.listen.smtp, ["0.0.0.0:25".parse::<SocketAddr>().unwrap()]);
        assert_eq!(c.dns.server, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(c.tls.unwrap().key, Path::new("/etc/smtp-std/key.pem"));
        let d = &c.domains[0];
        assert_eq!(d.catch_all.as_deref(), Some(&["alice@example.org".to_owned()][..]));
        assert_eq!(d.aliases["postmaster"], ["alice@example.org"]);
        assert_eq!(c.trusted_networks, ["127.0.0.1/32", "::1/128"]);
        assert!(c.relay_networks.is_empty());
        assert!(c.mail_auth);
    }

    fn error(text: &str) -> (Option<usize>, Option<String>, String) {
        let e = parse(text).unwrap_err();
        assert!(e.to_string().starts_with("/etc/smtp-std/smtp-std.toml"), "{e}");
        (e.line, e.key, e.message)
    }

    #[test]
    fn errors_name_line_and_key() {
        let bad = EXAMPLE.replace("smtp = [\"0.0.0.0:25\"]", "smtp = [\"0.0.0.0\"]");
        let (line, key, _) = error(&bad);
        assert_eq!((line, key.as_deref()), (Some(5), Some("listen.smtp[0]")));

        let bad = EXAMPLE.replace("hostname =", "hostnme =");
        let (line, _, msg) = error(&bad);
        assert_eq!(line, Some(1));
        assert!(msg.contains("unknown field `hostnme`"), "{msg}");

        let forward = EXAMPLE.replace("sales = [\"alice\", \"bob\"]", "sales = [\"alice\", \"bob@gmail.com\"]");
        assert_eq!(parse(&forward).unwrap().domains[0].aliases["sales"], ["alice@example.org", "bob@gmail.com"]);

        let bad = EXAMPLE.replace("catch_all = \"alice\"", "catch_all = \"al/ice\"");
        let (line, key, _) = error(&bad);
        assert_eq!((line, key.as_deref()), (Some(13), Some("domain[0].catch_all")));

        let bad = format!("{EXAMPLE}[limits]\ntimeout = \"5 parsecs\"\n");
        let (line, key, msg) = error(&bad);
        assert_eq!((line, key.as_deref()), (Some(18), Some("limits.timeout")));
        assert!(msg.contains("unknown unit"), "{msg}");

        let bad = format!("{EXAMPLE}[limits]\ntimeout = \"20s\"\nmin_data_rate = -1\n");
        let (line, key, _) = error(&bad);
        assert_eq!((line, key.as_deref()), (Some(19), Some("limits.min_data_rate")));
        let bad = format!("{EXAMPLE}[limits]\nmin_data_rate = \"1k\"\n");
        assert_eq!(error(&bad).1.as_deref(), Some("limits.min_data_rate"));

        let with_proxy = EXAMPLE.replace("[tls]", "proxy = [\"127.0.0.1/32\", \"::1\"]\n[tls]");
        assert_eq!(
            parse(&with_proxy).unwrap().listen.proxy,
            ["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()]
        );
        let bad = EXAMPLE.replace("[tls]", "proxy = [\"127.0.0.1/40\"]\n[tls]");
        assert_eq!(error(&bad).1.as_deref(), Some("listen.proxy[0]"));

        let bad = format!("trusted_networks = [\"10.0.0.0/33\"]\n{EXAMPLE}");
        assert_eq!(error(&bad).1.as_deref(), Some("trusted_networks[0]"));
        let bad = format!("relay_networks = [\"127.0.0.1/32\", \"localhost\"]\n{EXAMPLE}");
        assert_eq!(error(&bad).1.as_deref(), Some("relay_networks[1]"));

        let bad = EXAMPLE.replace("name = \"example.org\"", "name = \"exa mple.org\"");
        assert_eq!(error(&bad).0, Some(12));

        let (_, key, _) = error("data_dir = \"/x\"\n[listen]\nsmtp = [\"127.0.0.1:25\"]\n");
        assert_eq!(key.as_deref(), Some("domain"));
        let (line, key, _) = error(&format!("user = \"no-such-user-here\"\n{EXAMPLE}"));
        assert_eq!((line, key.as_deref()), (Some(1), Some("user")));
        assert!(error("data_dir = [").0.is_some());
    }

    #[test]
    fn submission_needs_tls_and_members_are_kept_with_their_lines() {
        let no_tls = EXAMPLE
            .replace("[tls]", "[x]")
            .replace("cert = \"/etc/smtp-std/cert.pem\"\nkey = \"/etc/smtp-std/key.pem\"\n", "");
        let no_tls =
            no_tls.replace("[x]                                  # optional; STARTTLS on smtp when present\n", "");
        assert!(parse(&no_tls).unwrap().tls.is_none());
        let bad = no_tls.replace("smtp = [\"0.0.0.0:25\"]", "smtp = [\"0.0.0.0:25\"]\nsubmission = [\"0.0.0.0:587\"]");
        let (line, key, msg) = error(&bad);
        assert_eq!((line, key.as_deref()), (Some(6), Some("listen.submission")));
        assert!(msg.contains("needs [tls]"), "{msg}");
        let bad =
            no_tls.replace("smtp = [\"0.0.0.0:25\"]", "smtp = [\"0.0.0.0:25\"]\n\nsubmissions = [\"0.0.0.0:465\"]");
        assert_eq!(error(&bad).0, Some(7));
        assert_eq!(error(&bad).1.as_deref(), Some("listen.submissions"));
        let ok = EXAMPLE.replace("smtp = [\"0.0.0.0:25\"]", "smtp = [\"0.0.0.0:25\"]\nsubmission = [\"0.0.0.0:587\"]");
        assert_eq!(parse(&ok).unwrap().listen.submission.len(), 1);

        let c = parse(
            &EXAMPLE.replace("sales = [\"alice\", \"bob\"]", "sales = [\"alice\", \"bob@elsewhere.test\", \"nobody\"]"),
        )
        .unwrap();
        assert_eq!(c.domain_lines, [12]);
        let m: Vec<(&str, usize, &str)> =
            c.members.iter().map(|m| (m.key.as_str(), m.line, m.address.as_str())).collect();
        assert!(m.contains(&("domain[0].aliases.sales", 16, "nobody@example.org")), "{m:?}");
        assert!(m.contains(&("domain[0].catch_all", 13, "alice@example.org")), "{m:?}");
        // Members elsewhere are forwards; ours must reach someone.
        let e = c.check_members(|a| a == "alice@example.org").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(16), Some("domain[0].aliases.sales")));
        assert!(
            e.to_string().starts_with(
                "/etc/smtp-std/smtp-std.toml:16: domain[0].aliases.sales: nobody@example.org reaches no account"
            ),
            "{e}"
        );
        c.check_members(|a| a.ends_with("@example.org")).unwrap();
    }

    #[test]
    fn relative_paths_and_defaults() {
        let c = Config::parse(
            "data_dir = \"data\"\n[listen]\nsmtp = [\"127.0.0.1:2525\"]\n[[domain]]\nname = \"A.Test.\"\n",
            Path::new("/srv/mail/smtp-std.toml"),
        )
        .unwrap();
        assert_eq!(c.data_dir, Path::new("/srv/mail/data"));
        assert_eq!(c.accounts, Path::new("/srv/mail/data/passwd"));
        assert_eq!(c.domains[0].name, "a.test");
        assert_eq!(c.limits.max_clients, 1000);
        assert_eq!(c.limits.max_connections_per_client, 50);
        assert_eq!(c.limits.min_data_rate, 1024);
        let keys = "[limits]\nmax_connections_per_client = 5\nmax_connection_rate = 0\nmax_auth_failures = 3\n";
        let l = parse(&format!("{EXAMPLE}{keys}min_data_rate = 0\n")).unwrap().limits;
        assert_eq!((l.max_connections_per_client, l.max_connection_rate, l.max_auth_failures), (5, 0, 3));
        assert_eq!(l.min_data_rate, 0);
        assert_eq!(c.limits.min_free_space, 100 << 20);
        let l = parse(&format!("{EXAMPLE}[limits]\nmin_free_space = 0\n")).unwrap().limits;
        assert_eq!(l.min_free_space, 0, "0 turns the check off");
        let l = parse(&format!("{EXAMPLE}[limits]\nmin_free_space = 5_000_000_000\n")).unwrap().limits;
        assert_eq!(l.min_free_space, 5_000_000_000);
        for bad in ["-1", "\"100M\"", "1.5"] {
            let (line, key, msg) = error(&format!("{EXAMPLE}[limits]\nmin_free_space = {bad}\n"));
            assert_eq!((line, key.as_deref()), (Some(18), Some("limits.min_free_space")), "{bad}: {msg}");
        }
    }

    #[test]
    fn spam_defaults_and_zones() {
        let c = parse(EXAMPLE).unwrap();
        assert!(c.dnsbl.is_empty());
        let s = &c.spam;
        assert_eq!((s.dnsbl_threshold, s.dnsbl_junk_threshold, s.greylist), (1, 1, None));
        assert_eq!(
            (s.greylist_max_age, s.greylist_retry_window),
            (Duration::from_secs(35 * 86400), Duration::from_secs(172_800))
        );
        assert_eq!((s.greylist_ipv4_prefix, s.greylist_ipv6_prefix, s.greylist_max_entries), (24, 64, 100_000));
        let text = format!(
            "{EXAMPLE}[spam]\ngreylist = \"5m\"\ndnsbl_threshold = 3\n\
             [[dnsbl]]\nzone = \"Zen.Spamhaus.org.\"\nscore = 3\n[[dnsbl]]\nzone = \"list.dnswl.org\"\nscore = -4\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.spam.greylist, Some(Duration::from_secs(300)));
        assert_eq!(c.spam.dnsbl_threshold, 3);
        let zones: Vec<(&str, i32)> = c.dnsbl.iter().map(|z| (z.zone.as_str(), z.score)).collect();
        assert_eq!(zones, [("zen.spamhaus.org", 3), ("list.dnswl.org", -4)]);
        let off = parse(&format!("{EXAMPLE}[spam]\ngreylist = \"0s\"\n")).unwrap();
        assert_eq!(off.spam.greylist, None, "0s: off");
        let (line, key, _) = error(&format!("{EXAMPLE}[[dnsbl]]\nzone = \"localhost\"\n"));
        assert_eq!((line, key.as_deref()), (Some(18), Some("dnsbl[0].zone")));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(432_000)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
