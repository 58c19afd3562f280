//! `[reports]`: where DMARC and TLS reports arrive, and whether we send DMARC reports.

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

/// `[reports]` as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// The address DMARC aggregate (`rua`) and TLS-RPT reports are sent to, in one of our
    /// domains and reaching an account or alias (mail to it that is no report is delivered
    /// there as usual). `None`: reports that arrive are ordinary mail.
    pub address: Option<Spanned<String>>,
    /// Send DMARC aggregate reports to the domains whose mail we received (default on).
    pub send_dmarc: bool,
    /// Send TLS reports (RFC 8460) to the domains we delivered to under an MTA-STS policy or
    /// DANE, daily (default on).
    pub send_tls: bool,
    /// The reporting period for every domain instead of the domain's `ri` (rounded up to whole
    /// hours dividing a day, as mox does: 1, 2, 3, 4, 6, 8, 12 or 24 hours, default 24).
    /// For tests and for an operator who wants fewer reports; `None`: the record's `ri`.
    #[serde(deserialize_with = "duration_opt")]
    pub interval: Option<Duration>,
    /// The largest report read once uncompressed (a gzip or zip of a report is inflated at
    /// most this far; bigger ones are delivered as ordinary mail). Default 20 MiB.
    pub max_report_size: u64,
    /// The most evaluations kept per sending domain until its next report (beyond them the
    /// domain's evaluations are not recorded, and a warning is logged). Default 100000.
    pub max_evaluations: usize,
    /// Received reports older than this are deleted (looked at hourly). Default 400 days.
    #[serde(deserialize_with = "duration")]
    pub keep_received: Duration,
    /// The line of `address` (set once the file is read), for errors found later.
    #[serde(skip)]
    pub address_line: Option<usize>,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            address: None,
            send_dmarc: true,
            send_tls: true,
            interval: None,
            max_report_size: 20 << 20,
            max_evaluations: 100_000,
            keep_received: Duration::from_secs(400 * 86400),
            address_line: None,
        }
    }
}

impl PartialEq for ReportsConfig {
    fn eq(&self, o: &Self) -> bool {
        self.address() == o.address()
            && self.send_dmarc == o.send_dmarc
            && self.send_tls == o.send_tls
            && self.interval == o.interval
            && self.max_report_size == o.max_report_size
            && self.max_evaluations == o.max_evaluations
            && self.keep_received == o.keep_received
    }
}

impl ReportsConfig {
    /// The report address, lower case.
    pub fn address(&self) -> Option<String> {
        self.address.as_ref().map(|a| a.get_ref().trim().to_ascii_lowercase())
    }

    /// Checks the keys against our `domains` (lower case): the address is `local@domain` in
    /// one of them; `Err((byte span, key, message))`.
    pub fn check(&self, domains: &[String]) -> Result<(), (std::ops::Range<usize>, String, String)> {
        if let Some(a) = &self.address {
            let addr = a.get_ref().trim().to_ascii_lowercase();
            let ours = addr
                .rsplit_once('@')
                .filter(|(l, _)| !l.is_empty())
                .is_some_and(|(_, d)| domains.iter().any(|x| x == d.trim_end_matches('.')));
            if !ours {
                return Err((
                    a.span(),
                    "reports.address".into(),
                    format!(
                        "{addr:?} is not an address in one of our domains ({}): reports must arrive here",
                        domains.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::mta::config::parse_duration(&s).map_err(de::Error::custom)
}

fn duration_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    let t = crate::mta::config::parse_duration(&s).map_err(de::Error::custom)?;
    if t < Duration::from_secs(1) {
        return Err(de::Error::custom(format!("{s:?}: at least 1s")));
    }
    Ok(Some(t))
}
