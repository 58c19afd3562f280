//! What `smtp-std reports` shows: the DMARC rows of the received reports added up per
//! reporting organisation, policy domain and source address, the sources failing first.

use std::collections::BTreeMap;

use super::incoming::Received;

/// The messages of one source as the reports of one organisation counted them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSummary {
    /// The reporting organisation (`org_name`).
    pub org: String,
    /// The policy domain (the one the reports are about).
    pub domain: String,
    /// The source address.
    pub source_ip: String,
    /// Messages in all.
    pub messages: u64,
    /// Messages that failed DMARC (neither aligned SPF nor aligned DKIM passed).
    pub dmarc_fail: u64,
    /// Messages whose aligned SPF passed.
    pub spf_pass: u64,
    /// Messages whose aligned DKIM passed.
    pub dkim_pass: u64,
    /// Messages the receiver quarantined.
    pub quarantined: u64,
    /// Messages the receiver rejected.
    pub rejected: u64,
}

/// The sources of every DMARC report in `reports`, those with the most DMARC failures first
/// (then the most messages).
pub fn sources<'a>(reports: impl IntoIterator<Item = &'a Received>) -> Vec<SourceSummary> {
    let mut by: BTreeMap<(String, String, String), SourceSummary> = BTreeMap::new();
    for f in reports.into_iter().filter_map(|r| r.dmarc.as_ref()) {
        for row in &f.records {
            let key = (f.org_name.clone(), f.policy.domain.clone(), row.source_ip.clone());
            let s = by.entry(key).or_insert_with(|| SourceSummary {
                org: f.org_name.clone(),
                domain: f.policy.domain.clone(),
                source_ip: row.source_ip.clone(),
                ..Default::default()
            });
            let n = row.count;
            s.messages += n;
            if !row.dmarc_pass() {
                s.dmarc_fail += n;
            }
            if row.spf == "pass" {
                s.spf_pass += n;
            }
            if row.dkim == "pass" {
                s.dkim_pass += n;
            }
            match row.disposition.as_str() {
                "quarantine" => s.quarantined += n,
                "reject" => s.rejected += n,
                _ => {}
            }
        }
    }
    let mut v: Vec<SourceSummary> = by.into_values().collect();
    v.sort_by(|a, b| {
        b.dmarc_fail.cmp(&a.dmarc_fail).then(b.messages.cmp(&a.messages)).then(a.source_ip.cmp(&b.source_ip))
    });
    v
}

/// `t` (seconds since the epoch) as `YYYY-MM-DD HH:MM` UTC.
pub fn utc(t: u64) -> String {
    let (days, secs) = (t / 86400, t % 86400);
    // Civil date from days since 1970-01-01 (the proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::super::aggregate::{Feedback, PolicyPublished, Row};
    use super::*;

    #[test]
    fn failing_sources_first() {
        let row = |ip: &str, n, spf: &str, dkim: &str, disp: &str| Row {
            source_ip: ip.into(),
            count: n,
            spf: spf.into(),
            dkim: dkim.into(),
            disposition: disp.into(),
            ..Default::default()
        };
        let report = |org: &str, rows| Received {
            dmarc: Some(Feedback {
                org_name: org.into(),
                policy: PolicyPublished { domain: "a.test".into(), ..Default::default() },
                records: rows,
                ..Default::default()
            }),
            ..Default::default()
        };
        let reports = [
            report(
                "g.test",
                vec![row("192.0.2.1", 10, "pass", "pass", "none"), row("198.51.100.9", 2, "fail", "fail", "reject")],
            ),
            report(
                "g.test",
                vec![row("198.51.100.9", 1, "fail", "fail", "quarantine"), row("192.0.2.1", 5, "fail", "pass", "none")],
            ),
            report("m.test", vec![row("192.0.2.1", 1, "pass", "fail", "none")]),
        ];
        let s = sources(&reports);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].source_ip.as_str(), s[0].messages, s[0].dmarc_fail), ("198.51.100.9", 3, 3));
        assert_eq!((s[0].rejected, s[0].quarantined), (2, 1));
        assert_eq!((s[1].org.as_str(), s[1].messages, s[1].spf_pass, s[1].dkim_pass), ("g.test", 15, 10, 15));
        assert_eq!(s[2].org, "m.test");
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_057_056_757), "2003-07-01 10:52");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
    }
}
