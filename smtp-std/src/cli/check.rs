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
