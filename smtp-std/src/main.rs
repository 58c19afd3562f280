//! The `smtp-std` program: `smtp-std serve` receives mail into a Maildir.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use smtp_proto::ehlo::AuthMechanisms;
use smtp_std::maildir::{system_hostname, Maildir, MaildirHandler, MaildirPolicy, Users};
use smtp_std::{tls, Options, Server};

const LONG_ABOUT: &str = "\
smtp-std: an SMTP server built on the smtp-proto sans-IO core.

`smtp-std serve` listens for SMTP and delivers every accepted message into a Maildir
(tmp/ -> fsync -> new/, before the 250 is sent), with a Received: header on top.
With no flags it listens on 127.0.0.1:2525, accepts mail for any recipient and writes
into ./Maildir. One log line per event goes to stderr (RUST_LOG=debug for more).";

const SERVE_AFTER: &str = "\
EXAMPLES:
  Receive mail for anyone into ./Maildir on 127.0.0.1:2525:
    smtp-std serve

  Send it a message (swaks, curl, Python):
    swaks --server 127.0.0.1:2525 --to you@example.org
    curl smtp://127.0.0.1:2525 --mail-from me@example.org --mail-rcpt you@example.org \\
         --upload-file message.eml
    python3 -c 'import smtplib; smtplib.SMTP(\"127.0.0.1\", 2525).sendmail(\"me@x\", [\"you@y\"], \"Subject: hi\\r\\n\\r\\nhello\\r\\n\")'

  An MX for two domains with STARTTLS, and implicit TLS (port-465 style) too:
    smtp-std serve --listen 0.0.0.0:25 --tls-listen 0.0.0.0:465 \\
         --domain example.org --domain example.net \\
         --tls-cert cert.pem --tls-key key.pem --hostname mx.example.org

  Submission with AUTH PLAIN/LOGIN (users file: one `user:password` per line):
    smtp-std serve --listen 0.0.0.0:587 --tls-cert cert.pem --tls-key key.pem --users users.txt
    swaks --server 127.0.0.1:587 -tls --auth-user alice --auth-password secret --to bob@example.org

  Try it out by hand:
    openssl s_client -starttls smtp -connect 127.0.0.1:2525

NOTES:
  Recipients in domains not listed with --domain are refused `550 5.7.1 Relay access
  denied` unless the client authenticated. With --users, AUTH is required before MAIL
  unless --auth-optional; AUTH is offered only under TLS unless --allow-insecure-auth.
  Limits reply with the RFC codes: 552 5.3.4 (size), 452 4.5.3 (recipients),
  421 4.7.0 (errors, too many clients), 421 4.4.2 (timeout).";

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "smtp-std",
    version,
    about = "An SMTP server that delivers into a Maildir",
    long_about = LONG_ABOUT,
    after_help = "Examples and every flag: smtp-std serve --help"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive mail over SMTP and deliver it into a Maildir.
    #[command(after_long_help = SERVE_AFTER)]
    Serve(Serve),
    /// Make a DKIM signing key and print the DNS record to publish for it.
    #[cfg(feature = "auth")]
    #[command(after_long_help = KEYGEN_AFTER)]
    DkimKeygen(DkimKeygen),
    /// Print the DNS records to publish for mail to and from your own domain.
    #[cfg(feature = "auth")]
    #[command(after_long_help = RECORDS_AFTER)]
    Records(Records),
    /// Look up a domain's mail records and say what is missing or wrong (exit 0 if none).
    #[cfg(feature = "auth")]
    Check(Check),
}

#[cfg(feature = "auth")]
const KEYGEN_AFTER: &str = "\
EXAMPLE:
  smtp-std dkim-keygen --domain example.org --selector mail2025 --out dkim.key
  Publish the printed TXT record, then sign with the key file (`records --key` prints it too).

The key file is PKCS#8 PEM (`PRIVATE KEY`); it is written with mode 0600 and never
overwritten. Without --out the key goes to standard output after the record.";

#[cfg(feature = "auth")]
const RECORDS_AFTER: &str = "\
EXAMPLE:
  smtp-std records --domain example.org --host mail.example.org --ip 203.0.113.7 \\
       --ipv6 2001:db8::7 --selector mail2025 --key dkim.key --rua mailto:dmarc@example.org

Publish the lines in the example.org zone; the PTR lines go to whoever runs the reverse zone
of each address (your hosting provider). Then run `smtp-std check --domain example.org`.";

#[cfg(feature = "auth")]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KeyAlgorithm {
    /// rsa-sha256 with a 2048-bit key: understood by every verifier.
    Rsa,
    /// ed25519-sha256 (RFC 8463): small keys; not every verifier knows it yet.
    Ed25519,
}

#[cfg(feature = "auth")]
#[derive(Debug, Args)]
struct DkimKeygen {
    /// The signing domain (d=).
    #[arg(long, value_name = "DOMAIN")]
    domain: String,
    /// The selector (s=): the key record is at SELECTOR._domainkey.DOMAIN.
    #[arg(long, value_name = "NAME")]
    selector: String,
    /// Key algorithm.
    #[arg(long, value_enum, default_value = "rsa")]
    algorithm: KeyAlgorithm,
    /// Write the private key here (refuses to overwrite) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[cfg(feature = "auth")]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DmarcPolicy {
    /// Monitor only: failing mail is delivered as usual.
    None,
    /// Failing mail goes to the junk folder.
    Quarantine,
    /// Failing mail is refused.
    Reject,
}

#[cfg(feature = "auth")]
#[derive(Debug, Args)]
struct Records {
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
}

#[cfg(feature = "auth")]
#[derive(Debug, Args)]
struct Check {
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

#[derive(Debug, Args)]
struct Serve {
    /// Address to listen on for SMTP (STARTTLS offered with --tls-cert). Repeatable.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2525")]
    listen: Vec<SocketAddr>,
    /// Address to listen on for implicit TLS (RFC 8314, port-465 style). Repeatable.
    /// Needs --tls-cert and --tls-key.
    #[arg(long, value_name = "ADDR")]
    tls_listen: Vec<SocketAddr>,
    /// Accepted recipient domain. Repeatable. Without any, every recipient is accepted;
    /// with some, other domains get `550 5.7.1 Relay access denied` unless authenticated.
    #[arg(long, value_name = "DOMAIN")]
    domain: Vec<String>,
    /// Maildir to deliver into (tmp/, new/, cur/ are created).
    #[arg(long, value_name = "DIR", default_value = "./Maildir")]
    maildir: PathBuf,
    /// PEM certificate chain; with --tls-key enables STARTTLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// AUTH users file: `user:password` lines. Enables AUTH PLAIN and LOGIN, and requires it
    /// before MAIL unless --auth-optional.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// Allow MAIL without AUTH even with --users.
    #[arg(long)]
    auth_optional: bool,
    /// Offer and allow AUTH without TLS (passwords in clear text: for tests only).
    #[arg(long)]
    allow_insecure_auth: bool,
    /// Largest message in octets (advertised with SIZE; past it 552 5.3.4). 0: no limit.
    #[arg(long, value_name = "BYTES", default_value_t = 25 << 20)]
    max_message_size: u64,
    /// Most recipients per message (past it 452 4.5.3).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    max_recipients: usize,
    /// Most concurrent clients (past it 421 4.7.0).
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_clients: usize,
    /// Inactivity timeout in seconds, for commands, message content and the TLS handshake
    /// (then 421 4.4.2). Default: RFC 5321 (300 s for commands, 180 s for content).
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Errors before the client is disconnected with 421 4.7.0.
    #[arg(long, value_name = "N", default_value_t = 20)]
    max_errors: u32,
    /// Accept every message and drop it, storing nothing (like Postfix smtp-sink): for
    /// benchmarks and tests. Ignores --maildir, --domain and --users.
    #[arg(long)]
    discard: bool,
    /// Our host name, in the greeting and the Received: header. Default: this machine's.
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Do not check SPF, DKIM and DMARC (no Authentication-Results:, no junk folder).
    #[cfg(feature = "auth")]
    #[arg(long)]
    no_mail_auth: bool,
    /// DNS server (ADDR:PORT) for the checks instead of the system's resolvers.
    #[cfg(feature = "auth")]
    #[arg(long, value_name = "ADDR")]
    dns: Option<SocketAddr>,
    /// Seconds one DNS query waits for an answer (each is tried twice; then 451 4.4.3).
    #[cfg(feature = "auth")]
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    dns_timeout: f64,
    /// Clients from this network (CIDR) are not checked, like authenticated ones. Repeatable;
    /// giving one replaces the default (this host only).
    #[cfg(feature = "auth")]
    #[arg(long, value_name = "CIDR", default_values = ["127.0.0.1/32", "::1/128"])]
    trusted_network: Vec<String>,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A log that cannot be written (stderr closed) must never take a session down.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(s) => serve(s),
        #[cfg(feature = "auth")]
        Command::DkimKeygen(k) => dkim_keygen(k),
        #[cfg(feature = "auth")]
        Command::Records(r) => records(r),
        #[cfg(feature = "auth")]
        Command::Check(c) => return check(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("smtp-std: {e}\n"));
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Serve) -> std::io::Result<()> {
    let hostname = args.hostname.clone().unwrap_or_else(system_hostname);
    let mut options = Options::new(&hostname)
        .max_clients(args.max_clients)
        .size((args.max_message_size > 0).then_some(args.max_message_size))
        .allow_insecure_auth(args.allow_insecure_auth);
    if let Some(secs) = args.timeout {
        if !(secs.is_finite() && secs > 0.0) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "--timeout must be > 0"));
        }
        options = options.socket_timeout(Duration::from_secs_f64(secs));
    }
    let config = options.config_mut();
    config.max_recipients = args.max_recipients.max(1);
    config.max_errors = args.max_errors.max(1);

    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        options = options.tls(tls::server_config_from_files(cert, key)?);
    } else if !args.tls_listen.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "--tls-listen needs --tls-cert and --tls-key",
        ));
    }
    let users = match &args.users {
        Some(path) => {
            let users = Users::load(path)?;
            options = options
                .auth_mechanisms(AuthMechanisms::none().with(AuthMechanisms::PLAIN).with(AuthMechanisms::LOGIN))
                .auth_optional(args.auth_optional);
            tracing::info!(users = users.len(), auth_optional = args.auth_optional, "AUTH PLAIN LOGIN enabled");
            if args.tls_cert.is_none() && !args.allow_insecure_auth && !args.auth_optional {
                tracing::warn!("AUTH is required but offered only under TLS, and TLS is off: no one can send");
            }
            Some(users)
        }
        None => None,
    };
    if args.discard {
        tracing::info!("discarding every message (--discard)");
        return listen_and_run(Server::new(options, smtp_std::Sink), &args, &hostname);
    }
    let maildir = Maildir::create(&args.maildir)?;
    let domains = args.domain.iter().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect();
    #[allow(unused_mut)]
    let mut handler = MaildirHandler::new(MaildirPolicy { maildir, hostname: hostname.clone(), domains, users });
    #[cfg(feature = "auth")]
    if args.no_mail_auth {
        tracing::info!("SPF, DKIM and DMARC checks off (--no-mail-auth)");
    } else {
        let trusted = args
            .trusted_network
            .iter()
            .map(|n| smtp_std::auth::verify::parse_network(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--trusted-network {e}")))?;
        if !(args.dns_timeout.is_finite() && args.dns_timeout > 0.0) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "--dns-timeout must be > 0"));
        }
        let dns = smtp_std::auth::Dns::with_timeout(args.dns, Duration::from_secs_f64(args.dns_timeout), 2)?;
        tracing::info!(dns = ?args.dns, trusted = ?args.trusted_network, "SPF, DKIM and DMARC checks on");
        handler = handler.with_mail_auth(smtp_std::auth::MailAuthPolicy {
            verifier: smtp_std::auth::Verifier::new(dns, hostname.clone()),
            trusted,
            // Room for our Received: header on top of the largest message.
            max_message_size: if args.max_message_size > 0 { args.max_message_size + 65536 } else { 64 << 20 },
        });
    }

    listen_and_run(Server::new(options, handler), &args, &hostname)
}

fn listen_and_run<H: smtp_std::Handler>(mut server: Server<H>, args: &Serve, hostname: &str) -> std::io::Result<()> {
    for addr in &args.listen {
        let bound = server.listen(addr)?;
        tracing::info!(%bound, hostname, maildir = %args.maildir.display(), discard = args.discard, "listening for SMTP");
    }
    for addr in &args.tls_listen {
        let bound = server.listen_tls(addr)?;
        tracing::info!(%bound, "listening for SMTP over implicit TLS");
    }
    server.run()
}

#[cfg(feature = "auth")]
fn dkim_keygen(args: DkimKeygen) -> std::io::Result<()> {
    use smtp_std::auth::{DkimAlgorithm, DkimKey};
    let algorithm = match args.algorithm {
        KeyAlgorithm::Rsa => DkimAlgorithm::Rsa,
        KeyAlgorithm::Ed25519 => DkimAlgorithm::Ed25519,
    };
    let (key, pem) = DkimKey::generate(algorithm)?;
    if let Some(path) = &args.out {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f =
            options.open(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        std::io::Write::write_all(&mut f, pem.as_bytes())?;
        f.sync_all()?;
        eprintln!("smtp-std: private key written to {}", path.display());
    }
    println!("; Publish this record in the {} zone:", args.domain.trim_end_matches('.'));
    println!("{}", key.txt_record(&args.domain, &args.selector));
    if args.out.is_none() {
        print!("{pem}");
    }
    Ok(())
}

#[cfg(feature = "auth")]
fn records(args: Records) -> std::io::Result<()> {
    let dkim = match (&args.selector, &args.key) {
        (Some(sel), Some(path)) => Some((sel.clone(), smtp_std::auth::DkimKey::load(path)?.record_value())),
        _ => None,
    };
    let policy = match args.dmarc_policy {
        DmarcPolicy::None => "none",
        DmarcPolicy::Quarantine => "quarantine",
        DmarcPolicy::Reject => "reject",
    };
    let r = smtp_std::auth::records::Records {
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

#[cfg(feature = "auth")]
fn check(args: Check) -> ExitCode {
    use smtp_std::auth::records::Level;
    let dns = match smtp_std::auth::Dns::new(args.dns) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("smtp-std: {e}");
            return ExitCode::FAILURE;
        }
    };
    let findings = smtp_std::auth::records::check(&dns, &args.domain, args.selector.as_deref());
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
