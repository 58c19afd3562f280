//! MTA-STS (RFC 8461) for our own domains: the policy served at
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt` and the `_mta-sts.<domain>` TXT record
//! whose id changes whenever the policy does.

use std::time::Duration;

/// The default `max_age` of our policies: one week (RFC 8461 §3.2 recommends weeks).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 86400);

/// The largest `max_age` RFC 8461 allows: one year.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(31_557_600);

/// `[[domain]] mta_sts`: what senders are told to do when TLS to our MX fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only over TLS with a valid certificate for an MX the policy names.
    Enforce,
    /// Deliver anyway, and report failures (TLS-RPT).
    Testing,
    /// No policy (the way to withdraw one: senders forget their cached one).
    None,
}

impl Mode {
    /// The mode's name in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }

    /// `enforce`, `testing` or `none`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "testing" => Ok(Mode::Testing),
            "none" => Ok(Mode::None),
            _ => Err(format!("{s:?}: expected \"enforce\", \"testing\" or \"none\"")),
        }
    }
}

/// The MTA-STS policy of one of our domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The mode.
    pub mode: Mode,
    /// Our MX host (the server's `hostname`).
    pub mx: String,
    /// How long senders may cache it.
    pub max_age: Duration,
}

impl Policy {
    /// The policy file (RFC 8461 §3.2), lines ending in CRLF.
    pub fn text(&self) -> String {
        format!(
            "version: STSv1\r\nmode: {}\r\nmx: {}\r\nmax_age: {}\r\n",
            self.mode.as_str(),
            self.mx,
            self.max_age.as_secs()
        )
    }

    /// The policy's id: 20 hex digits of the SHA-256 of its text, so that it changes exactly
    /// when the policy does.
    pub fn id(&self) -> String {
        id_of(&self.text())
    }

    /// The value of the `_mta-sts.<domain>` TXT record.
    pub fn txt(&self) -> String {
        format!("v=STSv1; id={}", self.id())
    }
}

/// The id smtp-std publishes for the policy file `text`: 20 hex digits of its SHA-256.
pub fn id_of(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref()[..10].iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of the `_smtp._tls.<domain>` TXT record (RFC 8460) sending TLS reports to
/// `address`.
pub fn tlsrpt_txt(address: &str) -> String {
    format!("v=TLSRPTv1; rua=mailto:{address}")
}

/// Whether the policy's `mx` pattern (`mail.example.org`, `*.example.org`) matches `host`.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let (p, h) = (pattern.trim_end_matches('.').to_ascii_lowercase(), host.trim_end_matches('.').to_ascii_lowercase());
    match p.strip_prefix("*.") {
        Some(rest) => h.split_once('.').is_some_and(|(_, parent)| parent == rest),
        None => p == h,
    }
}

/// A policy fetched from another domain (RFC 8461 §3.2): what a sender enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The mode.
    pub mode: Mode,
    /// The `mx` patterns (`mail.example.org`, `*.example.org`).
    pub mx: Vec<String>,
    /// How long it may be cached.
    pub max_age: Duration,
}

impl Fetched {
    /// Whether one of the policy's `mx` patterns matches `host`.
    pub fn allows(&self, host: &str) -> bool {
        self.mx.iter().any(|p| mx_matches(p, host))
    }
}

/// The values of the fields called `name` in a policy text.
fn fields<'a>(text: &'a str, name: &'static str) -> impl Iterator<Item = &'a str> + 'a {
    text.lines().filter_map(|l| l.split_once(':')).filter(move |(k, _)| k.trim() == name).map(|(_, v)| v.trim())
}

/// Parses a fetched policy `text`; the error says what is wrong with it (the problems of
/// [`problems`]). A policy in `enforce` or `testing` mode without an `mx` line is invalid.
pub fn parse(text: &str) -> Result<Fetched, String> {
    let mut errors = problems(text, &[]);
    let mx: Vec<String> = fields(text, "mx").map(str::to_owned).collect();
    let mode = fields(text, "mode").next().and_then(|m| Mode::parse(m).ok());
    if mx.is_empty() && mode.is_some_and(|m| m != Mode::None) {
        errors.push("no mx line".to_owned());
    }
    let max_age = fields(text, "max_age").next().and_then(|v| v.parse::<u64>().ok());
    match (mode, max_age) {
        (Some(mode), Some(secs)) if errors.is_empty() => Ok(Fetched { mode, mx, max_age: Duration::from_secs(secs) }),
        _ => Err(errors.join("; ")),
    }
}

/// What is wrong with a fetched policy `text` whose domain has the MX hosts `mx_hosts`
/// (nothing: it is valid and names every one of them).
pub fn problems(text: &str, mx_hosts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let field = |name: &'static str| fields(text, name);
    if field("version").next() != Some("STSv1") {
        out.push("no \"version: STSv1\" line".to_owned());
    }
    match field("mode").next() {
        Some(m) if Mode::parse(m).is_ok() => {}
        m => out.push(format!("mode {m:?}: expected enforce, testing or none")),
    }
    match field("max_age").next().map(str::parse::<u64>) {
        Some(Ok(n)) if n <= MAX_MAX_AGE.as_secs() => {}
        m => out.push(format!("max_age {m:?}: expected seconds, at most {}", MAX_MAX_AGE.as_secs())),
    }
    for host in mx_hosts {
        if !field("mx").any(|p| mx_matches(p, host)) {
            out.push(format!(
                "no mx line matches the MX host {host}: senders that enforce the policy will not deliver there"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_text_id_and_check() {
        let p = Policy { mode: Mode::Enforce, mx: "mx.a.test".into(), max_age: DEFAULT_MAX_AGE };
        assert_eq!(p.text(), "version: STSv1\r\nmode: enforce\r\nmx: mx.a.test\r\nmax_age: 604800\r\n");
        assert_eq!(p.id().len(), 20);
        let testing = Policy { mode: Mode::Testing, ..p.clone() };
        assert_ne!(p.id(), testing.id(), "the id changes with the policy");
        assert!(p.txt().starts_with("v=STSv1; id="));
        let mx = ["mx.a.test".to_owned()];
        assert!(problems(&p.text(), &mx).is_empty());
        assert!(problems("version: STSv1\nmode: enforce\nmx: *.a.test\nmax_age: 86400\n", &mx).is_empty());
        assert!(!mx_matches("*.a.test", "a.test") && !mx_matches("*.a.test", "x.mx.a.test"));
        let bad = problems("version: STSv1\nmode: strict\nmx: other.test\n", &mx);
        assert_eq!(bad.len(), 3, "{bad:?}");
        let f = parse("version: STSv1\nmode: enforce\nmx: *.a.test\nmx: mx.b.test\nmax_age: 86400\n").unwrap();
        assert!(f.allows("mx1.a.test") && f.allows("MX.B.TEST.") && !f.allows("a.test"));
        assert!(parse("version: STSv1\nmode: enforce\nmax_age: 86400\n").is_err());
        assert!(parse("garbage").is_err());
        assert_eq!(tlsrpt_txt("postmaster@a.test"), "v=TLSRPTv1; rua=mailto:postmaster@a.test");
    }
}
