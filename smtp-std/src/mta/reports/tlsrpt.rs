//! SMTP TLS reports (RFC 8460 §4): the JSON document read into what the summary shows.

use serde::{Deserialize, Serialize};

/// One TLS report: who sent it, for which period, and per policy the sessions that
/// succeeded and failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsReport {
    /// `organization-name`.
    #[serde(rename = "organization-name")]
    pub organization_name: String,
    /// `date-range`.
    #[serde(rename = "date-range")]
    pub date_range: DateRange,
    /// `contact-info`.
    #[serde(rename = "contact-info")]
    pub contact_info: String,
    /// `report-id`.
    #[serde(rename = "report-id")]
    pub report_id: String,
    /// `policies`.
    pub policies: Vec<PolicyResult>,
}

/// `date-range` (RFC 3339 times, as written).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DateRange {
    /// `start-datetime`.
    #[serde(rename = "start-datetime")]
    pub start: String,
    /// `end-datetime`.
    #[serde(rename = "end-datetime")]
    pub end: String,
}

/// One entry of `policies`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyResult {
    /// `policy`.
    pub policy: Policy,
    /// `summary`.
    pub summary: Summary,
    /// `failure-details`.
    #[serde(rename = "failure-details")]
    pub failure_details: Vec<FailureDetail>,
}

/// `policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// `policy-type`: `sts`, `tlsa` or `no-policy-found`.
    #[serde(rename = "policy-type")]
    pub policy_type: String,
    /// `policy-domain`.
    #[serde(rename = "policy-domain")]
    pub policy_domain: String,
    /// `policy-string`: the policy's lines (an MTA-STS policy), when there is one.
    #[serde(rename = "policy-string", skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    /// `mx-host`.
    #[serde(rename = "mx-host")]
    pub mx_host: Vec<String>,
}

/// `summary`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// `total-successful-session-count`.
    #[serde(rename = "total-successful-session-count")]
    pub successful: u64,
    /// `total-failure-session-count`.
    #[serde(rename = "total-failure-session-count")]
    pub failed: u64,
}

/// One entry of `failure-details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureDetail {
    /// `result-type` (`starttls-not-supported`, `certificate-expired`, `validation-failure`...).
    #[serde(rename = "result-type")]
    pub result_type: String,
    /// `sending-mta-ip`.
    #[serde(rename = "sending-mta-ip", skip_serializing_if = "String::is_empty")]
    pub sending_mta_ip: String,
    /// `receiving-mx-hostname`.
    #[serde(rename = "receiving-mx-hostname")]
    pub receiving_mx_hostname: String,
    /// `failed-session-count`.
    #[serde(rename = "failed-session-count")]
    pub failed_session_count: u64,
}

impl TlsReport {
    /// Reads a TLS report; a JSON document without `policies` or `organization-name` is none.
    pub fn parse_json(json: &[u8]) -> Result<TlsReport, String> {
        // The member names tell a TLS report from any other JSON.
        let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        if value.get("policies").is_none() || value.get("organization-name").is_none() {
            return Err("JSON without \"organization-name\" and \"policies\": no TLS report".into());
        }
        serde_json::from_value(value).map_err(|e| format!("not a TLS report: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8460_sample_reads() {
        let json = br#"{"organization-name":"Company-X","date-range":{"start-datetime":"2016-04-01T00:00:00Z",
            "end-datetime":"2016-04-01T23:59:59Z"},"contact-info":"sts-reporting@company-x.example",
            "report-id":"5065427c-23d3-47ca-b6e0-946ea0e8c4be","policies":[{"policy":{"policy-type":"sts",
            "policy-string":["version: STSv1","mode: testing"],"policy-domain":"company-y.example",
            "mx-host":["*.mail.company-y.example"]},"summary":{"total-successful-session-count":5326,
            "total-failure-session-count":303},"failure-details":[{"result-type":"certificate-expired",
            "sending-mta-ip":"2001:db8:abcd:0012::1","receiving-mx-hostname":"mx1.mail.company-y.example",
            "failed-session-count":100}]}]}"#;
        let r = TlsReport::parse_json(json).unwrap();
        assert_eq!(r.organization_name, "Company-X");
        assert_eq!(r.policies[0].summary, Summary { successful: 5326, failed: 303 });
        assert_eq!(r.policies[0].failure_details[0].result_type, "certificate-expired");
        assert!(TlsReport::parse_json(b"{\"a\":1}").is_err());
        assert!(TlsReport::parse_json(b"nope").is_err());
    }
}
