//! `smtp-std records`: the DNS records to publish for a mail domain.

use std::path::PathBuf;

use clap::Args;

pub(crate) const RECORDS_AFTER: &str = "\
EXAMPLE:
  smtp-std records --domain example.org --host mail.example.org --ip 203.0.113.7 \\
       --ipv6 2001:db8::7 --selector mail2025 --key dkim.key --rua mailto:dmarc@example.org \\
       --mta-sts enforce

Publish the lines in the example.org zone; the PTR lines go to whoever runs the reverse zone
of each address (your hosting provider). Then run `smtp-std check --domain example.org`.";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DmarcPolicy {
    /// Monitor only: failing mail is delivered as usual.
    None,
    /// Failing mail goes to the junk folder.
    Quarantine,
    /// Failing mail is refused.
    Reject,
}

#[derive(Debug, Args)]
pub(crate) struct Records {
    /// Your mail domain.
    #[arg(long, value_name = "DOMAIN")]
    domain: String,
    /// The host that receives (and sends) its mail: the MX.
    #[arg(long, value_name = "NAME")]
    host: String,
    /// The host's IPv4 address. Repeatable.
    #[arg(long, value_name = "ADDR", required = true)]
    ip: Vec<std::net::Ipv4Addr>,
    /// The host's IPv6 address. Repeatable.
    #[arg(long, value_name = "ADDR")]
    ipv6: Vec<std::net::Ipv6Addr>,
    /// DKIM selector of --key.
    #[arg(long, value_name = "NAME", requires = "key")]
    selector: Option<String>,
    /// DKIM private key file (from dkim-keygen): its public key record is printed.
    #[arg(long, value_name = "FILE", requires = "selector")]
    key: Option<PathBuf>,
    /// DMARC policy for mail that fails SPF and DKIM alignment.
    #[arg(long, value_enum, default_value = "quarantine")]
    dmarc_policy: DmarcPolicy,
    /// Where DMARC aggregate reports go (mailto:...).
    #[arg(long, value_name = "URI")]
    rua: Option<String>,
    /// The MTA-STS mode the server's `[[domain]] mta_sts` serves (enforce, testing, none):
    /// prints the mta-sts name and the `_mta-sts` record whose id matches that policy.
    #[arg(long, value_name = "MODE")]
    mta_sts: Option<String>,
    /// The policy's max_age, as `[[domain]] mta_sts_max_age` (default 7d).
    #[arg(long, value_name = "DURATION", requires = "mta_sts")]
    mta_sts_max_age: Option<String>,
    /// Where TLS reports go (the `_smtp._tls` record; default postmaster@DOMAIN).
    #[arg(long, value_name = "ADDRESS")]
    tls_rua: Option<String>,
}

pub(crate) fn run(args: Records) -> std::io::Result<()> {
    let dkim = match (&args.selector, &args.key) {
        (Some(sel), Some(path)) => Some((sel.clone(), smtp_std::mta::auth::DkimKey::load(path)?.record_value())),
        _ => None,
    };
    let policy = match args.dmarc_policy {
        DmarcPolicy::None => "none",
        DmarcPolicy::Quarantine => "quarantine",
        DmarcPolicy::Reject => "reject",
    };
    use smtp_std::mta::web::mtasts::{Mode, Policy, DEFAULT_MAX_AGE};
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let max_age = match &args.mta_sts_max_age {
        Some(a) => smtp_std::mta::config::parse_duration(a).map_err(|e| invalid(format!("--mta-sts-max-age {e}")))?,
        None => DEFAULT_MAX_AGE,
    };
    let mta_sts = match &args.mta_sts {
        Some(m) => Some(Policy {
            mode: Mode::parse(m).map_err(|e| invalid(format!("--mta-sts {e}")))?,
            mx: args.host.trim_end_matches('.').to_owned(),
            max_age,
        }),
        None => None,
    };
    let tlsrpt = Some(args.tls_rua.unwrap_or_else(|| format!("postmaster@{}", args.domain.trim_end_matches('.'))));
    let r = smtp_std::mta::auth::records::Records {
        mta_sts,
        tlsrpt,
        domain: args.domain,
        host: args.host,
        ipv4: args.ip,
        ipv6: args.ipv6,
        dkim,
        dmarc_policy: policy.to_owned(),
        rua: args.rua,
    };
    print!("{}", r.zone());
    Ok(())
}
