//! DMARC aggregate reports (RFC 7489 §7.2 and appendix C): the `feedback` document read from
//! XML (reports we receive) and written as XML (reports we send).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One aggregate report: who sent it, about which domain, and a row per source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// `report_metadata/org_name`: the reporting organisation.
    pub org_name: String,
    /// `report_metadata/email`.
    pub email: String,
    /// `report_metadata/report_id`.
    pub report_id: String,
    /// `date_range/begin`, seconds since the epoch (UTC).
    pub begin: u64,
    /// `date_range/end`.
    pub end: u64,
    /// `policy_published`: the record the receiver applied.
    pub policy: PolicyPublished,
    /// `record`: one per source and result.
    pub records: Vec<Row>,
}

/// `policy_published`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPublished {
    /// The policy domain.
    pub domain: String,
    /// `adkim`: `r` or `s`.
    pub adkim: String,
    /// `aspf`: `r` or `s`.
    pub aspf: String,
    /// `p`: `none`, `quarantine` or `reject`.
    pub p: String,
    /// `sp` (the subdomain policy).
    pub sp: String,
    /// `pct`.
    pub pct: u32,
}

/// One `record`: messages from one source with the same results.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Row {
    /// `row/source_ip`.
    pub source_ip: String,
    /// `row/count`.
    pub count: u64,
    /// `policy_evaluated/disposition`: `none`, `quarantine` or `reject`.
    pub disposition: String,
    /// `policy_evaluated/dkim`: the aligned DKIM result, `pass` or `fail`.
    pub dkim: String,
    /// `policy_evaluated/spf`: the aligned SPF result, `pass` or `fail`.
    pub spf: String,
    /// `identifiers/header_from`.
    pub header_from: String,
    /// `identifiers/envelope_from`.
    pub envelope_from: String,
    /// `auth_results/dkim`: each signature's domain, selector and result.
    pub dkim_results: Vec<AuthResult>,
    /// `auth_results/spf`: the domain, scope (`mfrom`, `helo`) and result.
    pub spf_results: Vec<AuthResult>,
}

impl Row {
    /// Whether DMARC passed for these messages (aligned DKIM or aligned SPF passed).
    pub fn dmarc_pass(&self) -> bool {
        self.dkim == "pass" || self.spf == "pass"
    }
}

/// One `auth_results` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AuthResult {
    /// `domain`.
    pub domain: String,
    /// DKIM: `selector`; SPF: `scope`.
    pub detail: String,
    /// `result`.
    pub result: String,
}

impl Feedback {
    /// The report mail-auth read ([`mail_auth::report::Report::parse_rfc5322`], RFC 7489 or
    /// RFC 9990 XML, plain, gzip or zip) as kept.
    pub fn from_report(r: &mail_auth::report::Report) -> Feedback {
        let s = |x: &dyn std::fmt::Display| x.to_string();
        Feedback {
            org_name: r.org_name().to_owned(),
            email: r.email().to_owned(),
            report_id: r.report_id().to_owned(),
            begin: r.date_range_begin(),
            end: r.date_range_end(),
            policy: PolicyPublished {
                domain: r.domain().to_owned(),
                adkim: s(&r.adkim()),
                aspf: s(&r.aspf()),
                p: s(&r.p()),
                sp: s(&r.sp()),
                pct: 100,
            },
            records: r
                .records()
                .iter()
                .map(|rec| Row {
                    source_ip: rec.source_ip().map(|ip| ip.to_string()).unwrap_or_default(),
                    count: u64::from(rec.count()),
                    disposition: s(&rec.action_disposition()),
                    dkim: s(&rec.dmarc_dkim_result()),
                    spf: s(&rec.dmarc_spf_result()),
                    header_from: rec.header_from().to_owned(),
                    envelope_from: rec.envelope_from().to_owned(),
                    dkim_results: rec
                        .dkim_auth_result()
                        .iter()
                        .map(|d| AuthResult {
                            domain: d.domain.clone(),
                            detail: d.selector.clone(),
                            result: s(&d.result),
                        })
                        .collect(),
                    spf_results: rec
                        .spf_auth_result()
                        .iter()
                        .map(|x| AuthResult { domain: x.domain.clone(), detail: s(&x.scope), result: s(&x.result) })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The report as RFC 7489 appendix C XML.
    pub fn to_xml(&self) -> String {
        let mut x = String::with_capacity(1024 + self.records.len() * 600);
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n");
        x.push_str("  <version>1.0</version>\n  <report_metadata>\n");
        el(&mut x, 4, "org_name", &self.org_name);
        el(&mut x, 4, "email", &self.email);
        el(&mut x, 4, "report_id", &self.report_id);
        x.push_str("    <date_range>\n");
        el(&mut x, 6, "begin", &self.begin.to_string());
        el(&mut x, 6, "end", &self.end.to_string());
        x.push_str("    </date_range>\n  </report_metadata>\n  <policy_published>\n");
        let p = &self.policy;
        el(&mut x, 4, "domain", &p.domain);
        el(&mut x, 4, "adkim", &p.adkim);
        el(&mut x, 4, "aspf", &p.aspf);
        el(&mut x, 4, "p", &p.p);
        el(&mut x, 4, "sp", &p.sp);
        el(&mut x, 4, "pct", &p.pct.to_string());
        x.push_str("  </policy_published>\n");
        for r in &self.records {
            x.push_str("  <record>\n    <row>\n");
            el(&mut x, 6, "source_ip", &r.source_ip);
            el(&mut x, 6, "count", &r.count.to_string());
            x.push_str("      <policy_evaluated>\n");
            el(&mut x, 8, "disposition", &r.disposition);
            el(&mut x, 8, "dkim", &r.dkim);
            el(&mut x, 8, "spf", &r.spf);
            x.push_str("      </policy_evaluated>\n    </row>\n    <identifiers>\n");
            el(&mut x, 6, "header_from", &r.header_from);
            if !r.envelope_from.is_empty() {
                el(&mut x, 6, "envelope_from", &r.envelope_from);
            }
            x.push_str("    </identifiers>\n    <auth_results>\n");
            for d in &r.dkim_results {
                x.push_str("      <dkim>\n");
                el(&mut x, 8, "domain", &d.domain);
                if !d.detail.is_empty() {
                    el(&mut x, 8, "selector", &d.detail);
                }
                el(&mut x, 8, "result", &d.result);
                x.push_str("      </dkim>\n");
            }
            for s in &r.spf_results {
                x.push_str("      <spf>\n");
                el(&mut x, 8, "domain", &s.domain);
                if !s.detail.is_empty() {
                    el(&mut x, 8, "scope", &s.detail);
                }
                el(&mut x, 8, "result", &s.result);
                x.push_str("      </spf>\n");
            }
            x.push_str("    </auth_results>\n  </record>\n");
        }
        x.push_str("</feedback>\n");
        x
    }
}

/// `<name>value</name>` on a line of its own, the value escaped.
fn el(x: &mut String, indent: usize, name: &str, value: &str) {
    let _ = write!(x, "{:indent$}<{name}>", "");
    for c in value.chars() {
        match c {
            '<' => x.push_str("&lt;"),
            '>' => x.push_str("&gt;"),
            '&' => x.push_str("&amp;"),
            '"' => x.push_str("&quot;"),
            '\'' => x.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' => x.push(' '),
            c => x.push(c),
        }
    }
    let _ = writeln!(x, "</{name}>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Feedback {
        Feedback {
            org_name: "mx.b.test".into(),
            email: "postmaster@mx.b.test".into(),
            report_id: "r1".into(),
            begin: 100,
            end: 200,
            policy: PolicyPublished {
                domain: "a.test".into(),
                adkim: "r".into(),
                aspf: "r".into(),
                p: "none".into(),
                sp: "none".into(),
                pct: 100,
            },
            records: vec![Row {
                source_ip: "192.0.2.1".into(),
                count: 3,
                disposition: "none".into(),
                dkim: "fail".into(),
                spf: "pass".into(),
                header_from: "a.test".into(),
                envelope_from: "a.test".into(),
                dkim_results: vec![AuthResult {
                    domain: "a.test".into(),
                    detail: "s<1>".into(),
                    result: "fail".into(),
                }],
                spf_results: vec![AuthResult {
                    domain: "a.test".into(),
                    detail: "mfrom".into(),
                    result: "pass".into(),
                }],
            }],
        }
    }

    /// What we write, mail-auth reads back the same (a second implementation of the format).
    #[test]
    fn written_xml_reads_back_through_mail_auth() {
        let f = sample();
        let xml = f.to_xml();
        assert!(xml.contains("<selector>s&lt;1&gt;</selector>"), "{xml}");
        let back = mail_auth::report::Report::parse_xml(xml.as_bytes()).unwrap();
        assert_eq!(Feedback::from_report(&back), f);
    }
}
