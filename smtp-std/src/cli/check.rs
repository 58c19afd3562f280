//! `smtp-std check`: look up a domain's mail records and name what is missing.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct Check {
    /// The domain to check.
    #[arg(long, value_name = "DOMAIN")]
    domain: String,
    /// Also check the DKIM key record of this selector.
    #[arg(long, value_name = "NAME")]
    selector: Option<String>,
    /// Ask this DNS server (ADDR:PORT) instead of the system's resolvers.
    #[arg(long, value_name = "ADDR")]
    dns: Option<SocketAddr>,
    /// Trust this CA (PEM) too for the MTA-STS policy's certificate (a private or test CA).
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Fetch the MTA-STS policy from this port instead of 443 (tests).
    #[arg(long, value_name = "PORT", hide = true)]
    https_port: Option<u16>,
    /// How the server gets DNSSEC status (`[dns] dnssec`): `trust-ad` (the resolver's AD bit),
    /// `validate` (its own validation) or `off` (no DNSSEC check). Says whether DANE can work.
    #[arg(long, value_name = "MODE", default_value = "trust-ad")]
    dnssec: String,
    /// With `--dnssec validate`: the trust anchor file (`[dns] trust_anchor`).
    #[arg(long, value_name = "FILE")]
    trust_anchor: Option<std::path::PathBuf>,
    /// A DNSSEC-signed name asked to see whether answers are validated.
    #[arg(long, value_name = "NAME", default_value = smtp_std::mta::dane::PROBE_NAME)]
    dnssec_probe: String,
}

/// Whether the resolver validates (DANE outbound needs it): `None` with `--dnssec off`.
fn dnssec_finding(args: &Check) -> Option<smtp_std::mta::auth::records::Finding> {
    use smtp_std::mta::auth::records::{Finding, Level};
    use smtp_std::mta::dane::{Dane, DnssecMode};
    let mode = match args.dnssec.as_str() {
        "off" => return None,
        "trust-ad" => DnssecMode::TrustAd,
        "validate" => DnssecMode::Validate,
        other => {
            return Some(Finding {
                level: Level::Error,
                text: format!("--dnssec {other:?}: give off, validate or trust-ad"),
            })
        }
    };
    let timeout = smtp_std::mta::auth::dns::QUERY_TIMEOUT;
    let dane = match Dane::new(mode, args.dns, timeout, args.trust_anchor.as_deref()) {
        Ok(Some(d)) => d,
        Ok(None) => return None,
        Err(e) => return Some(Finding { level: Level::Error, text: format!("DNSSEC: {e}") }),
    };
    let (secure, text) = dane.probe(&args.dnssec_probe);
    Some(Finding { level: if secure { Level::Ok } else { Level::Warning }, text })
}

pub(crate) fn run(args: Check) -> ExitCode {
    use smtp_std::mta::auth::records::Level;
    let dns = match smtp_std::mta::auth::Dns::new(args.dns) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("smtp-std: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut findings = smtp_std::mta::auth::records::check(&dns, &args.domain, args.selector.as_deref());
    let mut client = match smtp_std::mta::web::client::Client::new(args.ca.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smtp-std: --ca {e}");
            return ExitCode::FAILURE;
        }
    };
    // The policy's host is looked up through the same DNS as the records.
    let resolver = dns.clone();
    client.resolve =
        Some(std::sync::Arc::new(move |name: &str| resolver.addresses(name).map_err(std::io::Error::other)));
    client.port = args.https_port;
    findings.extend(smtp_std::mta::web::check::check(&dns, &client, &args.domain));
    findings.extend(dnssec_finding(&args));
    for f in &findings {
        println!("{f}");
    }
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    let warnings = findings.iter().filter(|f| f.level == Level::Warning).count();
    if errors == 0 {
        println!("{}: all good ({warnings} warnings)", args.domain);
        ExitCode::SUCCESS
    } else {
        println!("{}: {errors} problems, {warnings} warnings", args.domain);
        ExitCode::FAILURE
    }
}
