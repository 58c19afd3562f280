//! `smtp-std reports --config FILE`: the DMARC aggregate and TLS reports received at
//! `[reports] address`, listed, then the DMARC rows summed per reporting organisation, policy
//! domain and source address, the sources failing DMARC first.

use std::path::PathBuf;

use clap::Args;
use smtp_std::mta::config::Config;
use smtp_std::mta::reports::{incoming, summary};

pub(crate) const REPORTS_AFTER: &str = "\
WHAT IT SHOWS:
  Each report kept in <data_dir>/reports/received/ (the ones that arrived at
  [reports] address): when it came, who sent it, the period and its domain. Then, for DMARC,
  one line per reporting organisation, policy domain and source address (the sending host),
  the sources with the most DMARC failures first:
    MESSAGES    messages the receiver saw from that source in the period
    DMARC-FAIL  messages where neither aligned SPF nor aligned DKIM passed
    SPF, DKIM   how many passed aligned SPF and aligned DKIM
    ACTION      what the receiver did with the failing ones (quarantined, rejected)
  A source of yours with failures needs SPF (ip4:/include: in the SPF record) or DKIM
  signing; a source you do not know is someone sending in your name.
  For TLS reports: per policy, the sessions that succeeded and failed, and why.

Example:
  smtp-std reports --config /etc/smtp-std/smtp-std.toml";

/// Command line.
#[derive(Debug, Args)]
pub(crate) struct Reports {
    /// The config file (its data_dir holds the reports).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Only the reports about this domain.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
}

pub(crate) fn run(args: Reports) -> std::io::Result<()> {
    let config = Config::load(&args.config).map_err(|e| std::io::Error::other(e.to_string()))?;
    let dir = smtp_std::mta::reports::received_dir(&config.data_dir);
    let domain = args.domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
    let mut reports = Vec::new();
    for (path, r) in incoming::list(&dir)? {
        match r {
            Ok(r) => reports.push(r),
            Err(e) => println!("unreadable: {}: {e}", path.display()),
        }
    }
    reports.retain(|r| match (&domain, &r.dmarc, &r.tls) {
        (None, _, _) => true,
        (Some(d), Some(f), _) => f.policy.domain.eq_ignore_ascii_case(d),
        (Some(d), _, Some(t)) => t.policies.iter().any(|p| p.policy.policy_domain.eq_ignore_ascii_case(d)),
        _ => false,
    });
    let dmarc: Vec<_> = reports.iter().filter(|r| r.dmarc.is_some()).collect();
    let tls: Vec<_> = reports.iter().filter(|r| r.tls.is_some()).collect();
    if reports.is_empty() {
        let address = config.reports.address().unwrap_or_else(|| "(no [reports] address set)".into());
        println!("No reports received in {} (they arrive at {address}).", dir.display());
        return Ok(());
    }
    println!("DMARC aggregate reports: {}", dmarc.len());
    for r in &dmarc {
        let f = r.dmarc.as_ref().expect("filtered");
        let (messages, failed) = f
            .records
            .iter()
            .fold((0, 0), |(m, x), row| (m + row.count, x + if row.dmarc_pass() { 0 } else { row.count }));
        println!(
            "  {}  {}  about {}  {} .. {}  {} messages, {} failing DMARC  (id {})",
            summary::utc(r.received),
            f.org_name,
            f.policy.domain,
            summary::utc(f.begin),
            summary::utc(f.end),
            messages,
            failed,
            f.report_id
        );
    }
    let sources = summary::sources(dmarc.iter().copied());
    if !sources.is_empty() {
        println!();
        println!("DMARC per organisation and source, failing first:");
        let w_org = sources.iter().map(|s| s.org.len()).max().unwrap_or(0).max(12);
        let w_dom = sources.iter().map(|s| s.domain.len()).max().unwrap_or(0).max(6);
        let w_ip = sources.iter().map(|s| s.source_ip.len()).max().unwrap_or(0).max(6);
        println!(
            "  {:w_org$}  {:w_dom$}  {:w_ip$}  {:>8}  {:>10}  {:>5}  {:>5}  ACTION",
            "ORGANISATION", "DOMAIN", "SOURCE", "MESSAGES", "DMARC-FAIL", "SPF", "DKIM"
        );
        for s in &sources {
            let mut action = Vec::new();
            if s.quarantined > 0 {
                action.push(format!("{} quarantined", s.quarantined));
            }
            if s.rejected > 0 {
                action.push(format!("{} rejected", s.rejected));
            }
            if action.is_empty() {
                action.push("none".into());
            }
            println!(
                "  {:w_org$}  {:w_dom$}  {:w_ip$}  {:>8}  {:>10}  {:>5}  {:>5}  {}",
                s.org,
                s.domain,
                s.source_ip,
                s.messages,
                s.dmarc_fail,
                s.spf_pass,
                s.dkim_pass,
                action.join(", ")
            );
        }
    }
    println!();
    println!("TLS reports: {}", tls.len());
    for r in &tls {
        let t = r.tls.as_ref().expect("filtered");
        println!(
            "  {}  {}  {} .. {}  (id {})",
            summary::utc(r.received),
            t.organization_name,
            t.date_range.start,
            t.date_range.end,
            t.report_id
        );
        for p in &t.policies {
            println!(
                "    {} policy of {}: {} successful, {} failed sessions",
                p.policy.policy_type, p.policy.policy_domain, p.summary.successful, p.summary.failed
            );
            for d in &p.failure_details {
                println!(
                    "      {}: {} (from {} to {})",
                    d.result_type, d.failed_session_count, d.sending_mta_ip, d.receiving_mx_hostname
                );
            }
        }
    }
    Ok(())
}
