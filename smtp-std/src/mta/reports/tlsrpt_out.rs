//! TLS reports we send (RFC 8460): the outcome of every outbound TLS session under an
//! MTA-STS policy or DANE TLSA records (and of a policy that could not be fetched) is appended
//! as a line of JSON to `<data_dir>/reports/tlsrpt-out/outcomes.jsonl` (not fsynced: a crash
//! loses at most the last lines); at the end of each day (UTC; `[reports] interval` for tests)
//! the file is taken, and for each policy domain whose `_smtp._tls` TXT record names
//! `rua=mailto:` addresses outside our domains, a report (JSON, gzip,
//! `application/tlsrpt+gzip`) goes through the queue from `postmaster@<hostname>`.
//!
//! No report about a report: a report is mail from our postmaster, so its bounce stays here;
//! its own delivery is counted like any other (in the next day's report, no new message).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::outgoing::Reporter;
use super::tlsrpt::{DateRange, FailureDetail, Policy, PolicyResult, Summary, TlsReport};
use crate::mta::auth::dns::DnsError;
use crate::mta::sts::{PolicyRef, TlsOutcomes};

/// One outcome, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Seconds since the epoch.
    pub at: u64,
    /// The policy domain (the recipient's).
    pub domain: String,
    /// `sts`, `tlsa` or `no-policy-found`.
    pub policy_type: String,
    /// The MTA-STS policy's lines.
    #[serde(default)]
    pub policy_string: Vec<String>,
    /// The MX host (empty for a policy failure).
    pub mx: String,
    /// `None`: a successful session; else the RFC 8460 result type.
    pub result: Option<String>,
}

/// The outcome store: where [`TlsOutcomes`] goes.
#[derive(Debug)]
pub struct Counter {
    dir: PathBuf,
    max: usize,
    /// Lines written to the current file (bounded by `max`).
    written: Mutex<usize>,
}

/// The file being written.
const CURRENT: &str = "outcomes.jsonl";

impl Counter {
    /// The store in `dir` (created private), at most `max` outcomes per period.
    pub fn open(dir: PathBuf, max: usize) -> io::Result<Self> {
        match crate::mta::private::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
            }
            _ => crate::mta::private::tighten_dir(&dir)?,
        }
        let written = std::fs::read(dir.join(CURRENT)).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        Ok(Self { dir, max, written: Mutex::new(written) })
    }

    fn append(&self, o: &Outcome) -> io::Result<()> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if *written >= self.max {
            return Err(io::Error::other(format!(
                "[reports] max_evaluations ({}) TLS outcomes this period: not recorded",
                self.max
            )));
        }
        let path = self.dir.join(CURRENT);
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(crate::mta::private::FILE_MODE)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut line = serde_json::to_vec(o).map_err(io::Error::other)?;
        line.push(b'\n');
        f.write_all(&line).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        *written += 1;
        Ok(())
    }

    /// Takes the current file (renamed `outcomes.<end>.taken`) and returns every taken file.
    fn take(&self, end: u64) -> io::Result<Vec<PathBuf>> {
        {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            let from = self.dir.join(CURRENT);
            if from.exists() {
                std::fs::rename(&from, self.dir.join(format!("outcomes.{end}.taken")))?;
            }
            *written = 0;
        }
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "taken"))
            .collect();
        out.sort();
        Ok(out)
    }
}

impl TlsOutcomes for Counter {
    fn record(&self, domain: &str, policy: PolicyRef<'_>, host: &str, failure: Option<&'static str>) {
        let (policy_type, policy_string) = match policy {
            PolicyRef::Sts(p) => {
                let mut lines = vec!["version: STSv1".to_owned(), format!("mode: {}", p.policy.mode.as_str())];
                lines.extend(p.policy.mx.iter().map(|m| format!("mx: {m}")));
                lines.push(format!("max_age: {}", p.policy.max_age.as_secs()));
                ("sts", lines)
            }
            PolicyRef::Tlsa => ("tlsa", Vec::new()),
            PolicyRef::NotFound => ("no-policy-found", Vec::new()),
        };
        let o = Outcome {
            at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            policy_type: policy_type.to_owned(),
            policy_string,
            mx: host.trim_end_matches('.').to_ascii_lowercase(),
            result: failure.map(str::to_owned),
        };
        if let Err(e) = self.append(&o) {
            tracing::warn!(domain, "TLS outcome not recorded for TLS-RPT: {e}");
        }
    }
}

/// RFC 3339 UTC time of `secs`.
fn rfc3339(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// One policy's part of a report being counted: its MX hosts, the summary, the failures by
/// result type and MX host.
type Counted = (Vec<String>, Summary, BTreeMap<(String, String), u64>);

/// The report about `outcomes` (all of one domain) for the period `begin..end`.
pub fn report(hostname: &str, domain: &str, outcomes: &[Outcome], begin: u64, end: u64) -> TlsReport {
    let mut policies: BTreeMap<(String, Vec<String>), Counted> = BTreeMap::new();
    for o in outcomes {
        let entry = policies.entry((o.policy_type.clone(), o.policy_string.clone())).or_default();
        if !o.mx.is_empty() && !entry.0.contains(&o.mx) {
            entry.0.push(o.mx.clone());
        }
        match &o.result {
            None => entry.1.successful += 1,
            Some(r) => {
                entry.1.failed += 1;
                *entry.2.entry((r.clone(), o.mx.clone())).or_default() += 1;
            }
        }
    }
    TlsReport {
        organization_name: hostname.to_owned(),
        date_range: DateRange { start: rfc3339(begin), end: rfc3339(end) },
        contact_info: format!("postmaster@{hostname}"),
        report_id: format!("{end}.{domain}@{hostname}"),
        policies: policies
            .into_iter()
            .map(|((policy_type, policy_string), (mx, summary, failures))| PolicyResult {
                policy: Policy { policy_type, policy_domain: domain.to_owned(), policy_string, mx_host: mx },
                summary,
                failure_details: failures
                    .into_iter()
                    .map(|((result_type, mx), n)| FailureDetail {
                        result_type,
                        sending_mta_ip: String::new(),
                        receiving_mx_hostname: mx,
                        failed_session_count: n,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The report message (RFC 8460 §5.3) to `to`.
pub fn message(
    report: &TlsReport,
    domain: &str,
    hostname: &str,
    to: &[String],
    now: SystemTime,
) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(report).map_err(io::Error::other)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json)?;
    let gz = gz.finish()?;
    let begin = report.date_range.start.get(..10).unwrap_or("");
    let file_name =
        format!("{hostname}!{domain}!{}!{}.json.gz", begin, report.report_id.split('.').next().unwrap_or(""));
    let boundary = format!("=_tlsrpt_{}", report.report_id.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    let mut m = String::new();
    m.push_str(&format!("From: postmaster@{hostname}\r\nTo: {}\r\n", to.join(",\r\n ")));
    m.push_str(&format!(
        "Subject: Report Domain: {domain} Submitter: {hostname} Report-ID: <{}>\r\n",
        report.report_id
    ));
    m.push_str(&format!("Date: {}\r\n", crate::received::rfc5322_date(now)));
    m.push_str(&format!("Message-ID: <tlsrpt.{}>\r\n", report.report_id));
    m.push_str(&format!("TLS-Report-Domain: {domain}\r\nTLS-Report-Submitter: {hostname}\r\n"));
    m.push_str("MIME-Version: 1.0\r\nAuto-Submitted: auto-generated\r\n");
    m.push_str(&format!("Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"{boundary}\"\r\n\r\n"));
    m.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"));
    m.push_str(&format!(
        "TLS report from {hostname} about mail to {domain}\r\nfrom {} to {}.\r\n\r\n",
        report.date_range.start, report.date_range.end
    ));
    super::outgoing::attach_last(&mut m, &boundary, "application/tlsrpt+gzip", &file_name, &gz);
    Ok(m.into_bytes())
}

/// The `mailto:` addresses of a `_smtp._tls` record (`v=TLSRPTv1; rua=mailto:a@b,https://...`).
pub fn rua(txt: &str) -> Option<Vec<String>> {
    let mut parts = txt.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("v=TLSRPTv1") {
        return None;
    }
    let rua = parts.find_map(|p| p.strip_prefix("rua="))?;
    Some(
        rua.split(',')
            .filter_map(|u| u.trim().strip_prefix("mailto:"))
            .map(|a| a.trim().to_ascii_lowercase())
            .filter(|a| a.rsplit_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.')))
            .collect(),
    )
}

/// Reads an outcome file (lines that do not parse are skipped).
fn read(path: &Path) -> io::Result<Vec<Outcome>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// The end of a period at `end`: takes the outcomes and sends each domain's report.
pub fn tick(counter: &Counter, r: &Reporter<'_>, end: u64, period: Duration) {
    let files = match counter.take(end) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(dir = %counter.dir.display(), "TLS outcomes not taken: {e}");
            return;
        }
    };
    for path in files {
        let outcomes = match read(&path) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("TLS outcomes: {e}");
                continue;
            }
        };
        let mut by_domain: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
        for o in outcomes {
            by_domain.entry(o.domain.clone()).or_default().push(o);
        }
        for (domain, outcomes) in by_domain {
            if r.ours.contains(&domain) {
                continue;
            }
            let begin = outcomes.iter().map(|o| o.at).min().unwrap_or(end).min(end.saturating_sub(period.as_secs()));
            if let Err(e) = send(r, &domain, &outcomes, begin, end) {
                tracing::warn!(domain, "TLS report not sent (its outcomes are dropped): {e}");
            }
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::error!(file = %path.display(), "TLS outcomes not removed: {e}");
        }
    }
}

fn send(r: &Reporter<'_>, domain: &str, outcomes: &[Outcome], begin: u64, end: u64) -> io::Result<()> {
    let name = format!("_smtp._tls.{domain}");
    let txt = match r.dns.txt(&name) {
        Ok(v) => v,
        Err(DnsError::NoSuchName | DnsError::NoData) => {
            tracing::info!(domain, "no TLS report sent: no {name} record");
            return Ok(());
        }
        Err(e) => return Err(io::Error::other(format!("{name}: {e}"))),
    };
    let mut records = txt.iter().filter_map(|t| rua(t));
    let (Some(all), None) = (records.next(), records.next()) else {
        tracing::info!(domain, "no TLS report sent: not exactly one TLS-RPT record at {name}");
        return Ok(());
    };
    let to: Vec<String> =
        all.into_iter().filter(|a| !r.ours.iter().any(|d| a.rsplit_once('@').is_some_and(|(_, x)| x == d))).collect();
    if to.is_empty() {
        tracing::info!(domain, "no TLS report sent: {name} names no mailto: address outside our domains");
        return Ok(());
    }
    let report = report(r.hostname, domain, outcomes, begin, end);
    let m = message(&report, domain, r.hostname, &to, SystemTime::now())?;
    let id = (r.enqueue)(&to, &m)?;
    let (ok, failed) =
        report.policies.iter().fold((0, 0), |(a, b), p| (a + p.summary.successful, b + p.summary.failed));
    tracing::info!(domain, to = %to.join(","), ok, failed, id, "TLS report queued");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_and_record() {
        let o = |mx: &str, r: Option<&str>| Outcome {
            at: 10,
            domain: "a.test".into(),
            policy_type: "sts".into(),
            policy_string: vec!["version: STSv1".into()],
            mx: mx.into(),
            result: r.map(str::to_owned),
        };
        let rep = report(
            "mx.me.test",
            "a.test",
            &[o("mx.a.test", None), o("mx.a.test", Some("starttls-not-supported")), o("mx.a.test", None)],
            0,
            86400,
        );
        assert_eq!(rep.policies.len(), 1);
        assert_eq!((rep.policies[0].summary.successful, rep.policies[0].summary.failed), (2, 1));
        assert_eq!(rep.policies[0].failure_details[0].result_type, "starttls-not-supported");
        assert_eq!(rep.date_range.end, "1970-01-02T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rua("v=TLSRPTv1; rua=mailto:Tls@a.test,https://x.test/r"), Some(vec!["tls@a.test".to_owned()]));
        assert_eq!(rua("v=spf1"), None);
    }
}
