//! The DNS records that mail for your own domain needs ([`Records`], `smtp-std records`) and
//! a check of what is published ([`check`], `smtp-std check`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_resolver::proto::rr::Name;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::{Dmarc, Policy};
use mail_auth::spf::Spf;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;

use super::dkim::zone_txt;
use super::dns::{Dns, DnsError};

/// What to publish for a domain whose mail one host receives and sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Records {
    /// The mail domain (`example.org`).
    pub domain: String,
    /// The mail host (`mail.example.org`), its MX.
    pub host: String,
    /// The host's IPv4 addresses.
    pub ipv4: Vec<Ipv4Addr>,
    /// The host's IPv6 addresses.
    pub ipv6: Vec<Ipv6Addr>,
    /// DKIM: `(selector, record value)` (see [`super::DkimKey::record_value`]).
    pub dkim: Option<(String, String)>,
    /// DMARC policy: `none`, `quarantine` or `reject`.
    pub dmarc_policy: String,
    /// Where DMARC aggregate reports go (`mailto:...`).
    pub rua: Option<String>,
}

fn fq(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

impl Records {
    /// The records as zone-file lines with comments; the PTR lines at the end belong in the
    /// reverse zones of the addresses' provider.
    pub fn zone(&self) -> String {
        let (d, h) = (fq(&self.domain), fq(&self.host));
        let mut out = String::new();
        let mut line = |s: &str| {
            out.push_str(s);
            out.push('\n');
        };
        line(&format!("; DNS records for mail to and from {d}"));
        line("; MX: where mail for the domain goes.");
        line(&format!("{d} 3600 IN MX 10 {h}"));
        line("; The mail host's addresses.");
        for ip in &self.ipv4 {
            line(&format!("{h} 3600 IN A {ip}"));
        }
        for ip in &self.ipv6 {
            line(&format!("{h} 3600 IN AAAA {ip}"));
        }
        line("; SPF: only the mail host's addresses and the MX hosts send mail for the domain;");
        line(";   anything else fails.");
        let mut spf = "v=spf1".to_owned();
        for ip in &self.ipv4 {
            spf.push_str(&format!(" ip4:{ip}"));
        }
        for ip in &self.ipv6 {
            spf.push_str(&format!(" ip6:{ip}"));
        }
        spf.push_str(" mx -all");
        line(&zone_txt(&d, &spf));
        match &self.dkim {
            Some((selector, value)) => {
                line(&format!("; DKIM: the public key of selector {selector}."));
                line(&zone_txt(&format!("{selector}._domainkey.{d}"), value));
            }
            None => {
                line("; DKIM: make a key with `smtp-std dkim-keygen --domain D --selector S --out FILE`");
                line(";   and publish the record it prints (or pass --selector S --key FILE here).");
            }
        }
        line("; DMARC: what receivers do with mail that fails both SPF and DKIM alignment.");
        let mut dmarc = format!("v=DMARC1; p={}", self.dmarc_policy);
        if let Some(rua) = &self.rua {
            let rua = if rua.starts_with("mailto:") { rua.clone() } else { format!("mailto:{rua}") };
            dmarc.push_str(&format!("; rua={rua}"));
        }
        line(&zone_txt(&format!("_dmarc.{d}"), &dmarc));
        line("; Reverse DNS: ask the provider of each address to publish these PTR records.");
        let ips = self.ipv4.iter().map(|&a| IpAddr::V4(a)).chain(self.ipv6.iter().map(|&a| IpAddr::V6(a)));
        for ip in ips {
            line(&format!("{} 3600 IN PTR {h}", Name::from(ip).to_ascii()));
        }
        out
    }
}

/// How bad a finding of [`check`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but should change.
    Warning,
    /// Missing or wrong: mail will bounce, be junked or be spoofable.
    Error,
}

/// One line of [`check`]'s report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What was found, and why it matters.
    pub text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok:     ",
            Level::Warning => "warning:",
            Level::Error => "error:  ",
        };
        write!(f, "{tag} {}", self.text)
    }
}

fn ok(text: String) -> Finding {
    Finding { level: Level::Ok, text }
}
fn warn(text: String) -> Finding {
    Finding { level: Level::Warning, text }
}
fn err(text: String) -> Finding {
    Finding { level: Level::Error, text }
}

/// The TXT records of `name` that start with `tag` (case-insensitive), or the failure.
fn tagged(dns: &Dns, name: &str, tag: &str) -> Result<Vec<String>, DnsError> {
    match dns.txt(name) {
        Ok(v) => Ok(v
            .into_iter()
            .filter(|r| {
                let r = r.trim_start();
                r.len() >= tag.len()
                    && r[..tag.len()].eq_ignore_ascii_case(tag)
                    && r[tag.len()..].chars().next().is_none_or(|c| c == ' ' || c == ';')
            })
            .collect()),
        Err(DnsError::NoData | DnsError::NoSuchName) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Looks up what `domain` publishes for mail and says what is missing or wrong: MX (and
/// that every MX host has an address), SPF (exactly one, ending in `-all` or `~all`),
/// DMARC (present; `p=none` is a warning) and, with `selector`, the DKIM key record.
pub fn check(dns: &Dns, domain: &str, selector: Option<&str>) -> Vec<Finding> {
    let domain = domain.trim_end_matches('.');
    let mut out = Vec::new();

    // MX, and each MX host's addresses.
    match dns.mx(domain) {
        Ok(mx) if mx.iter().all(|(_, h)| h.is_empty()) => {
            out.push(err(format!("{domain} has a null MX (RFC 7505): it says it receives no mail")))
        }
        Ok(mx) => {
            for (pref, host) in mx.into_iter().filter(|(_, h)| !h.is_empty()) {
                match dns.addresses(&host) {
                    Ok(ips) => {
                        let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                        out.push(ok(format!("MX {pref} {host} ({})", ips.join(", "))));
                    }
                    Err(e) => out.push(err(format!("MX host {host} has no A/AAAA record: {e}"))),
                }
            }
        }
        Err(DnsError::Temporary(e)) => out.push(err(format!("MX lookup for {domain} failed: {e}"))),
        Err(e) => out.push(err(format!("no MX record for {domain} ({e}): senders fall back to its A record, if any"))),
    }

    // SPF.
    match tagged(dns, domain, "v=spf1") {
        Err(e) => out.push(err(format!("SPF lookup for {domain} failed: {e}"))),
        Ok(v) if v.is_empty() => out.push(err(format!("no SPF record (TXT \"v=spf1 ...\") for {domain}"))),
        Ok(v) if v.len() > 1 => out.push(err(format!(
            "{} SPF records for {domain}: there must be exactly one (RFC 7208 §4.5: permerror)",
            v.len()
        ))),
        Ok(v) => {
            let rec = v[0].trim();
            let last = rec.split_whitespace().last().unwrap_or("").to_ascii_lowercase();
            if let Err(e) = Spf::parse(rec.as_bytes()) {
                out.push(err(format!("SPF record {rec:?} does not parse: {e}")));
            } else if last == "-all" || last == "~all" {
                out.push(ok(format!("SPF {rec:?}")));
            } else {
                out.push(err(format!(
                    "SPF record {rec:?} does not end in -all or ~all: it does not say what to do with other senders"
                )));
            }
        }
    }

    // DMARC.
    let dmarc_name = format!("_dmarc.{domain}");
    match tagged(dns, &dmarc_name, "v=DMARC1") {
        Err(e) => out.push(err(format!("DMARC lookup for {dmarc_name} failed: {e}"))),
        Ok(v) if v.is_empty() => out.push(err(format!("no DMARC record (TXT \"v=DMARC1; p=...\") at {dmarc_name}"))),
        Ok(v) if v.len() > 1 => out.push(err(format!("{} DMARC records at {dmarc_name}: there must be one", v.len()))),
        Ok(v) => {
            let rec = v[0].trim();
            match Dmarc::parse(rec.as_bytes()) {
                Err(e) => out.push(err(format!("DMARC record {rec:?} does not parse: {e}"))),
                Ok(d) if matches!(d.p, Policy::None | Policy::Unspecified) => out.push(warn(format!(
                    "DMARC {rec:?}: p=none only monitors; mail failing SPF and DKIM is still delivered (use quarantine or reject)"
                ))),
                Ok(_) => out.push(ok(format!("DMARC {rec:?}"))),
            }
        }
    }

    // DKIM.
    if let Some(sel) = selector {
        let name = format!("{sel}._domainkey.{domain}");
        match tagged(dns, &name, "v=DKIM1") {
            Err(e) => out.push(err(format!("DKIM lookup for {name} failed: {e}"))),
            Ok(v) if v.is_empty() => out.push(err(format!("no DKIM key record (TXT \"v=DKIM1; ...\") at {name}"))),
            Ok(v) => {
                let rec = v[0].trim();
                match dkim_key_problem(rec) {
                    None => out.push(ok(format!("DKIM key at {name}"))),
                    Some(p) => out.push(err(format!("DKIM record at {name} is bad: {p}"))),
                }
            }
        }
    }
    out
}

/// What is wrong with a DKIM key record, if anything.
fn dkim_key_problem(rec: &str) -> Option<String> {
    use base64::Engine as _;
    use mail_auth::common::verify::DomainKey;
    if let Err(e) = DomainKey::parse(rec.as_bytes()) {
        return Some(format!("does not parse: {e}"));
    }
    let tag = |t: &str| {
        rec.split(';')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.trim() == t)
            .map(|(_, v)| v.trim().to_owned())
    };
    let p: String = tag("p").unwrap_or_default().chars().filter(|c| !c.is_whitespace()).collect();
    if p.is_empty() {
        return Some("empty p= (the key is revoked)".into());
    }
    let Ok(key) = base64::engine::general_purpose::STANDARD.decode(p.as_bytes()) else {
        return Some("p= is not base64".into());
    };
    match tag("k").as_deref().unwrap_or("rsa") {
        "rsa" => {
            let parsed =
                rsa::RsaPublicKey::from_public_key_der(&key).or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(&key));
            match parsed {
                Ok(k) if rsa::traits::PublicKeyParts::size(&k) * 8 < 1024 => {
                    Some("RSA key shorter than 1024 bits".into())
                }
                Ok(_) => None,
                Err(e) => Some(format!("p= is not an RSA public key: {e}")),
            }
        }
        "ed25519" if key.len() == 32 => None,
        "ed25519" => Some(format!("an Ed25519 key is 32 bytes, p= has {}", key.len())),
        other => Some(format!("unknown key type k={other}")),
    }
}
