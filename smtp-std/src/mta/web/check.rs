//! `smtp-std check`'s MTA-STS and TLS-RPT part: the `_mta-sts.<domain>` record, the policy
//! fetched over HTTPS (certificate verified, no redirect, at most 64 KiB, RFC 8461 §3.3),
//! and the `_smtp._tls.<domain>` record (RFC 8460).

use crate::mta::auth::records::{Finding, Level};
use crate::mta::auth::{Dns, DnsError};
use crate::mta::web::client::Client;
use crate::mta::web::mtasts;

/// The largest policy file a sender reads (RFC 8461 §3.3).
pub const MAX_POLICY: usize = 64 * 1024;

fn finding(level: Level, text: String) -> Finding {
    Finding { level, text }
}

/// The TXT records at `name` starting with `tag`.
fn tagged(dns: &Dns, name: &str, tag: &str) -> Result<Vec<String>, DnsError> {
    match dns.txt(name) {
        Ok(v) => Ok(v
            .into_iter()
            .filter(|t| t.trim_start().to_ascii_lowercase().starts_with(&tag.to_ascii_lowercase()))
            .collect()),
        Err(DnsError::NoData | DnsError::NoSuchName) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Checks `domain`'s MTA-STS record and policy (fetched with `client`, which should resolve
/// through `dns`) against its MX hosts, and its TLS-RPT record.
pub fn check(dns: &Dns, client: &Client, domain: &str) -> Vec<Finding> {
    let domain = domain.trim_end_matches('.');
    let mut out = Vec::new();
    let name = format!("_mta-sts.{domain}");
    match tagged(dns, &name, "v=STSv1") {
        Err(e) => out.push(finding(Level::Error, format!("MTA-STS lookup for {name} failed: {e}"))),
        Ok(v) if v.is_empty() => out.push(finding(
            Level::Warning,
            format!(
                "no MTA-STS record at {name}: senders cannot insist on TLS to you; set mta_sts in the \
                 [[domain]] and publish what `smtp-std records --mta-sts MODE` prints"
            ),
        )),
        Ok(v) if v.len() > 1 => out.push(finding(
            Level::Error,
            format!("{} MTA-STS records at {name}: there must be one (RFC 8461 3.1), senders ignore them all", v.len()),
        )),
        Ok(v) => policy(dns, client, domain, v[0].trim(), &mut out),
    }
    let name = format!("_smtp._tls.{domain}");
    match tagged(dns, &name, "v=TLSRPTv1") {
        Err(e) => out.push(finding(Level::Error, format!("TLS-RPT lookup for {name} failed: {e}"))),
        Ok(v) if v.is_empty() => out.push(finding(
            Level::Warning,
            format!("no TLS-RPT record at {name}: senders cannot tell you when TLS to you fails (TXT \"v=TLSRPTv1; rua=mailto:postmaster@{domain}\")"),
        )),
        Ok(v) if v.len() > 1 => {
            out.push(finding(Level::Error, format!("{} TLS-RPT records at {name}: there must be one", v.len())))
        }
        Ok(v) => {
            let rec = v[0].trim();
            let rua = rec.split(';').filter_map(|t| t.trim().strip_prefix("rua=")).next();
            match rua {
                Some(r) if r.split(',').all(|u| u.trim().starts_with("mailto:") || u.trim().starts_with("https:")) => {
                    out.push(finding(Level::Ok, format!("TLS-RPT {rec:?}")))
                }
                _ => out.push(finding(
                    Level::Error,
                    format!("TLS-RPT record {rec:?} at {name} has no rua=mailto:... (or https:) where reports go"),
                )),
            }
        }
    }
    out
}

/// The policy of `domain` whose TXT record is `rec`.
fn policy(dns: &Dns, client: &Client, domain: &str, rec: &str, out: &mut Vec<Finding>) {
    let id = rec.split(';').filter_map(|t| t.trim().strip_prefix("id=")).next().unwrap_or("");
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        out.push(finding(
            Level::Error,
            format!("MTA-STS record {rec:?}: id must be 1 to 32 letters and digits (RFC 8461 3.1); senders ignore it"),
        ));
        return;
    }
    let url = format!("https://mta-sts.{domain}/.well-known/mta-sts.txt");
    let mut client = client.clone();
    client.max_response = MAX_POLICY + 4096;
    let r = match client.get(&url) {
        Ok(r) => r,
        Err(e) => {
            out.push(finding(
                Level::Error,
                format!(
                    "MTA-STS policy: {e}; the https listener (port 443) must answer for mta-sts.{domain} \
                     with a certificate valid for that name ([listen] https, and [acme] or [tls])"
                ),
            ));
            return;
        }
    };
    if r.status != 200 {
        let m = format!("MTA-STS policy {url}: HTTP {} (senders need 200; they follow no redirect)", r.status);
        out.push(finding(Level::Error, m));
        return;
    }
    if !r.header("content-type").is_some_and(|t| t.to_ascii_lowercase().starts_with("text/plain")) {
        out.push(finding(Level::Error, format!("MTA-STS policy {url}: Content-Type must be text/plain")));
    }
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let mx: Vec<String> = match dns.mx(domain) {
        Ok(mx) => mx.into_iter().map(|(_, h)| h.trim_end_matches('.').to_owned()).filter(|h| !h.is_empty()).collect(),
        Err(_) => Vec::new(),
    };
    let problems = mtasts::problems(&text, &mx);
    if problems.is_empty() {
        let mode = text.lines().find_map(|l| l.strip_prefix("mode:")).unwrap_or("").trim().to_owned();
        let level = if mode == "enforce" { Level::Ok } else { Level::Warning };
        let more = if mode == "enforce" {
            ""
        } else {
            " (senders deliver even when TLS fails: enforce when this check is clean)"
        };
        out.push(finding(level, format!("MTA-STS policy {url}: mode {mode}, id {id}{more}")));
    }
    for p in problems {
        out.push(finding(Level::Error, format!("MTA-STS policy {url}: {p}")));
    }
    // Our own ids are a hash of the policy text: a different one was not updated with it.
    let expected = mtasts::id_of(&text);
    if text.starts_with("version: STSv1\r\n") && id.len() == 20 && id != expected {
        out.push(finding(
            Level::Warning,
            format!(
                "MTA-STS record {rec:?}: the policy served now has id {expected} (smtp-std's id is a hash of \
                 the policy): publish \"v=STSv1; id={expected}\" or senders keep their cached copy of the old policy"
            ),
        ));
    }
}
