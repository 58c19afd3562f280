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
    let findings = smtp_std::mta::auth::records::check(&dns, &args.domain, args.selector.as_deref());
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
