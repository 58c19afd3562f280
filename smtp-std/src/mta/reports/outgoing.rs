//! DMARC aggregate reports we send (RFC 7489 §7.2): at the end of each period, per policy
//! domain with evaluations, the domain's DMARC record is looked up again; its `rua=mailto:`
//! addresses (outside our own domains; one in another domain only when
//! `<policy domain>._report._dmarc.<its domain>` says `v=DMARC1`, §7.1) get the report, a
//! gzipped XML attachment, through the queue from `postmaster@<hostname>`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::aggregate::{Feedback, PolicyPublished, Row};
use super::evaluations::{self, Evaluation};
use crate::mta::auth::dns::{Dns, DnsError};

/// Taken evaluations are dropped when they could not be reported for this long (a DNS
/// failure that lasts): two reports of the longest period, as mox does.
pub const MAX_AGE: Duration = Duration::from_secs(48 * 3600);

/// The tags of a DMARC record that a report needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// `policy_published` as the record says (defaults filled in).
    pub published: PolicyPublished,
    /// `rua`: the `mailto:` addresses, each with its size limit in bytes (`!10m`), if any.
    pub rua: Vec<(String, Option<u64>)>,
    /// `ri`, seconds.
    pub ri: Option<u64>,
}

/// Reads a DMARC record (`v=DMARC1; p=...`) of `domain`; `None`: not one.
pub fn parse_record(domain: &str, txt: &str) -> Option<Record> {
    let mut tags = BTreeMap::new();
    for (i, part) in txt.split(';').enumerate() {
        let Some((k, v)) = part.split_once('=') else { continue };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if i == 0 && (k != "v" || !v.eq_ignore_ascii_case("DMARC1")) {
            return None;
        }
        tags.entry(k).or_insert(v.to_owned());
    }
    let p = tags.get("p").map(|p| p.to_ascii_lowercase()).unwrap_or_else(|| "none".into());
    let tag = |k: &str, d: &str| tags.get(k).map_or(d.to_owned(), |v| v.to_ascii_lowercase());
    let published = PolicyPublished {
        domain: domain.to_owned(),
        adkim: tag("adkim", "r"),
        aspf: tag("aspf", "r"),
        sp: tag("sp", &p),
        p,
        pct: tags.get("pct").and_then(|v| v.parse().ok()).unwrap_or(100u32).min(100),
    };
    let rua = tags.get("rua").map_or_else(Vec::new, |v| v.split(',').filter_map(mailto).collect());
    Some(Record { published, rua, ri: tags.get("ri").and_then(|v| v.parse().ok()) })
}

/// `mailto:addr!10m` as the address (lower case) and its size limit; other schemes: `None`.
fn mailto(uri: &str) -> Option<(String, Option<u64>)> {
    let uri = uri.trim();
    let rest = uri.get(..7).filter(|s| s.eq_ignore_ascii_case("mailto:")).map(|_| &uri[7..])?;
    let (addr, size) = match rest.rsplit_once('!') {
        Some((a, s)) => {
            let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = match &s[digits.len()..] {
                "" => 1u64,
                "k" | "K" => 1 << 10,
                "m" | "M" => 1 << 20,
                "g" | "G" => 1 << 30,
                "t" | "T" => 1 << 40,
                _ => return None,
            };
            (a, Some(digits.parse::<u64>().ok()?.saturating_mul(unit)))
        }
        None => (rest, None),
    };
    let addr = addr.trim().to_ascii_lowercase();
    let (local, domain) = addr.rsplit_once('@')?;
    (!local.is_empty() && domain.contains('.')).then(|| (addr.clone(), size))
}

/// Whether `rua_domain` accepts reports about `policy_domain` (RFC 7489 §7.1): the same
/// domain, or `<policy>._report._dmarc.<rua domain>` has a `v=DMARC1` record. `Err`: the
/// answer is unknown (try again later).
pub fn authorised(dns: &Dns, policy_domain: &str, rua_domain: &str) -> Result<bool, String> {
    if rua_domain.eq_ignore_ascii_case(policy_domain) {
        return Ok(true);
    }
    match dns.txt(&format!("{policy_domain}._report._dmarc.{rua_domain}")) {
        Ok(records) => Ok(records.iter().any(|r| r.trim_start().to_ascii_lowercase().starts_with("v=dmarc1"))),
        Err(DnsError::NoSuchName | DnsError::NoData) => Ok(false),
        Err(DnsError::Temporary(e)) => Err(e),
    }
}

/// The rows of `evals`: equal rows counted once.
pub fn rows(evals: &[Evaluation]) -> Vec<Row> {
    let mut counted: BTreeMap<Row, u64> = BTreeMap::new();
    for e in evals {
        let key = Row { count: 0, ..e.row.clone() };
        *counted.entry(key).or_default() += e.row.count.max(1);
    }
    counted.into_iter().map(|(r, n)| Row { count: n, ..r }).collect()
}

/// What the report of one domain came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// Queued to these addresses.
    Queued(Vec<String>),
    /// Nothing to send, and why (no record, no `rua`, none authorised, ...).
    Nothing(String),
}

/// A report message built.
pub struct Built {
    /// The whole message (RFC 5322), CRLF line ends.
    pub message: Vec<u8>,
    /// The attachment's file name.
    pub file_name: String,
    /// The subject.
    pub subject: String,
}

/// The message of `feedback` from `hostname`'s postmaster to `to` (RFC 7489 §7.2.1.1): the
/// XML gzipped, named `receiver!policy-domain!begin!end.xml.gz`, subject `Report Domain: ...
/// Submitter: ... Report-ID: <...>`.
pub fn build(feedback: &Feedback, hostname: &str, to: &[String], now: SystemTime) -> io::Result<Built> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(feedback.to_xml().as_bytes())?;
    let gz = gz.finish()?;
    let domain = &feedback.policy.domain;
    let file_name = format!("{hostname}!{domain}!{}!{}.xml.gz", feedback.begin, feedback.end);
    let subject =
        format!("Report Domain: {domain} Submitter: {} Report-ID: <{}>", feedback.org_name, feedback.report_id);
    let boundary = format!("=_report_{}", feedback.report_id.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    let mut m = String::new();
    m.push_str(&format!("From: postmaster@{hostname}\r\nTo: {}\r\n", to.join(",\r\n ")));
    m.push_str(&format!("Subject: {subject}\r\nDate: {}\r\n", crate::received::rfc5322_date(now)));
    m.push_str(&format!("Message-ID: <{}@{hostname}>\r\n", feedback.report_id));
    m.push_str("MIME-Version: 1.0\r\nAuto-Submitted: auto-generated\r\n");
    m.push_str(&format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"));
    m.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"));
    m.push_str(&format!(
        "DMARC aggregate report from {hostname} about mail from {domain}\r\nbetween {} and {} (UTC).\r\n\r\n",
        crate::received::rfc5322_date(UNIX_EPOCH + Duration::from_secs(feedback.begin)),
        crate::received::rfc5322_date(UNIX_EPOCH + Duration::from_secs(feedback.end)),
    ));
    attach_last(&mut m, &boundary, "application/gzip", &file_name, &gz);
    Ok(Built { message: m.into_bytes(), file_name, subject })
}

/// Queues a message from `postmaster@hostname` to the addresses; its queue id.
pub type Enqueue<'a> = &'a dyn Fn(&[String], &[u8]) -> io::Result<String>;

/// Where a report goes and how it is queued: what [`report_file`] needs of the server.
pub struct Reporter<'a> {
    /// Our host name: the report's org_name, sender and file name.
    pub hostname: &'a str,
    /// Our domains (lower case): no reports to addresses in them.
    pub ours: &'a [String],
    /// The DNS for the records.
    pub dns: &'a Dns,
    /// Queues the report message ([`Enqueue`]).
    pub enqueue: Enqueue<'a>,
}

/// Appends the last part of a `multipart/*` report: `data` as a base64 attachment of type
/// `content_type` named `file_name`, in 76-column lines, then the closing boundary.
pub(super) fn attach_last(m: &mut String, boundary: &str, content_type: &str, file_name: &str, data: &[u8]) {
    use base64::Engine;
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{file_name}\"\r\n\r\n"
    ));
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    for chunk in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        m.push_str("\r\n");
    }
    m.push_str(&format!("--{boundary}--\r\n"));
}

/// Reports the evaluations of the taken file `path` (see [`evaluations::Store::take`]),
/// whose period ended at `end`; the file is removed when done. `Err`: a DNS or queue
/// failure; the file stays for the next period (until [`MAX_AGE`]).
pub fn report_file(r: &Reporter<'_>, path: &Path, now: SystemTime) -> io::Result<Sent> {
    let evals = evaluations::read(path)?;
    let Some(first) = evals.first() else {
        std::fs::remove_file(path)?;
        return Ok(Sent::Nothing("no evaluations".into()));
    };
    let domain = first.domain.clone();
    let begin = evals.iter().map(|e| e.at).min().unwrap_or(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let end = name
        .strip_suffix(".jsonl")
        .and_then(|n| n.rsplit_once('.'))
        .and_then(|(_, e)| e.parse::<u64>().ok())
        .unwrap_or(0)
        .max(evals.iter().map(|e| e.at + 1).max().unwrap_or(0));
    let sent = match compose(r, &domain, &evals, begin, end, now) {
        Ok(sent) => sent,
        Err(e) => {
            let age = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).saturating_sub(begin);
            if age > MAX_AGE.as_secs() {
                tracing::warn!(domain, "DMARC report not sent for two days ({e}): its evaluations dropped");
                std::fs::remove_file(path)?;
                return Ok(Sent::Nothing(e.to_string()));
            }
            return Err(e);
        }
    };
    std::fs::remove_file(path)?;
    Ok(sent)
}

fn compose(
    r: &Reporter<'_>,
    domain: &str,
    evals: &[Evaluation],
    begin: u64,
    end: u64,
    now: SystemTime,
) -> io::Result<Sent> {
    let txt = match r.dns.txt(&format!("_dmarc.{domain}")) {
        Ok(v) => v,
        Err(DnsError::NoSuchName | DnsError::NoData) => return Ok(Sent::Nothing("no DMARC record".into())),
        Err(DnsError::Temporary(e)) => return Err(io::Error::other(format!("DMARC record of {domain}: {e}"))),
    };
    let mut records = txt.iter().filter_map(|t| parse_record(domain, t));
    let (Some(record), None) = (records.next(), records.next()) else {
        return Ok(Sent::Nothing("not exactly one DMARC record".into()));
    };
    let mut feedback = Feedback {
        org_name: r.hostname.to_owned(),
        email: format!("postmaster@{}", r.hostname),
        report_id: format!("{end}.{domain}"),
        begin,
        end,
        policy: record.published.clone(),
        records: rows(evals),
    };
    feedback.policy.domain = domain.to_owned();
    let provisional = build(&feedback, r.hostname, &[], now)?;
    let mut to = Vec::new();
    let mut why = Vec::new();
    for (addr, max) in &record.rua {
        let rua_domain = addr.rsplit_once('@').map_or("", |(_, d)| d);
        if r.ours.iter().any(|d| d == rua_domain) {
            why.push(format!("{addr}: ours"));
        } else if max.is_some_and(|m| (provisional.message.len() as u64) > m) {
            why.push(format!("{addr}: over its size limit"));
        } else if !authorised(r.dns, domain, rua_domain).map_err(io::Error::other)? {
            why.push(format!("{addr}: {domain}._report._dmarc.{rua_domain} does not authorise it"));
        } else if !to.contains(addr) {
            to.push(addr.clone());
        }
    }
    if to.is_empty() {
        if record.rua.is_empty() {
            why.push("no rua=mailto:".into());
        }
        return Ok(Sent::Nothing(why.join("; ")));
    }
    let built = build(&feedback, r.hostname, &to, now)?;
    let id = (r.enqueue)(&to, &built.message)?;
    tracing::info!(domain, to = %to.join(","), rows = feedback.records.len(), id, file = built.file_name, "DMARC aggregate report queued");
    for w in &why {
        tracing::info!(domain, "DMARC report not sent to {w}");
    }
    Ok(Sent::Queued(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_mailto() {
        let r =
            parse_record("a.test", "v=DMARC1; p=Reject; rua=mailto:D@a.test,mailto:x@b.test!10m, https://x; ri=3600")
                .unwrap();
        assert_eq!(r.rua, [("d@a.test".to_owned(), None), ("x@b.test".to_owned(), Some(10 << 20))]);
        assert_eq!(
            (r.published.p.as_str(), r.published.sp.as_str(), r.published.adkim.as_str()),
            ("reject", "reject", "r")
        );
        assert_eq!((r.ri, r.published.pct), (Some(3600), 100));
        assert_eq!(parse_record("a.test", "v=spf1 -all"), None);
        assert_eq!(parse_record("a.test", "p=none; v=DMARC1"), None, "v first");
        assert_eq!(mailto("mailto:x@b.test!5q"), None);
    }

    #[test]
    fn rows_count_equal_evaluations() {
        let e = |ip: &str| Evaluation {
            at: 1,
            domain: "a.test".into(),
            interval_hours: 24,
            row: Row { source_ip: ip.into(), count: 1, ..Row::default() },
        };
        let rows = rows(&[e("192.0.2.1"), e("192.0.2.2"), e("192.0.2.1")]);
        assert_eq!(
            rows.iter().map(|r| (r.source_ip.as_str(), r.count)).collect::<Vec<_>>(),
            [("192.0.2.1", 2), ("192.0.2.2", 1)]
        );
    }

    #[test]
    fn message_names_file_and_subject_as_the_rfc_says() {
        let f = Feedback {
            org_name: "mx.b.test".into(),
            report_id: "100.a.test".into(),
            begin: 10,
            end: 100,
            policy: PolicyPublished {
                domain: "a.test".into(),
                adkim: "r".into(),
                aspf: "s".into(),
                p: "reject".into(),
                sp: "none".into(),
                pct: 100,
            },
            ..Default::default()
        };
        let b = build(&f, "mx.b.test", &["d@a.test".into()], UNIX_EPOCH).unwrap();
        assert_eq!(b.file_name, "mx.b.test!a.test!10!100.xml.gz");
        assert_eq!(b.subject, "Report Domain: a.test Submitter: mx.b.test Report-ID: <100.a.test>");
        let text = String::from_utf8(b.message).unwrap();
        assert!(
            text.contains("Content-Type: application/gzip")
                && text.contains("filename=\"mx.b.test!a.test!10!100.xml.gz\"")
        );
        let back = super::super::incoming::parse(text.as_bytes(), "", 1 << 20, UNIX_EPOCH).unwrap();
        assert_eq!(back.dmarc.unwrap(), f);
    }
}
