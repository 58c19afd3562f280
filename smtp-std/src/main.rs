//! The `smtp-std` program: `smtp-std serve` receives mail into a Maildir, `smtp-std send`
//! sends a message through a smarthost or straight to the recipients' MX hosts.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use send::{SendArgs, SEND_AFTER};
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
    /// Send a message (stdin or --file) through a smarthost, or to the recipients' MX hosts.
    #[command(after_long_help = SEND_AFTER)]
    Send(SendArgs),
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
    /// (then 421 4.4.2). Default: RFC 5321 (300 s for commands and for content).
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
    /// Seconds one DNS query waits for an answer (each is tried twice; then 451 4.7.24 for
    /// SPF, 4.7.5 for a DKIM key, 4.7.0 for DMARC).
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
        Command::Send(s) => return send::run(s),
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

/// `smtp-std send`: one message through a smarthost, or directly to the recipients' MX hosts.
mod send {
    use std::io::Read;
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::time::Duration;

    use clap::{Args, ValueEnum};
    use smtp_proto::parse::params::{Notify, Ret};
    use smtp_std::client::{self, Envelope, SendError, SendOptions, TlsMode};
    #[cfg(feature = "auth")]
    use smtp_std::deliver;
    use smtp_std::maildir::system_hostname;

    pub(crate) const SEND_AFTER: &str = "\
EXAMPLES:
  Through your provider's submission server (STARTTLS required, AUTH PLAIN/LOGIN); the
  password comes from a file or from $SMTP_PASSWORD:
    smtp-std send --server smtp.example.net:587 --auth-user me@example.org \\
         --auth-password-file ~/.smtp-password \\
         --from me@example.org --to you@example.net < message.eml

  Implicit TLS (port 465), two recipients, a delivery status notification on failure:
    smtp-std send --server smtp.example.net:465 --tls implicit --auth-user me \\
         --from me@example.org --to a@example.net --to b@example.com \\
         --notify FAILURE,DELAY --ret hdrs --envid order-1234 --file message.eml

  Directly to each recipient domain's MX hosts (no --server), DKIM-signed:
    smtp-std send --from me@example.org --to you@example.net --to them@example.com \\
         --dkim-key dkim.key --dkim-selector s1 < message.eml

  A local test server without TLS (e.g. `smtp-std serve`), and one with a test CA:
    printf 'Subject: hi\\n\\nhello\\n' | smtp-std send --server 127.0.0.1:2525 --tls off \\
         --from a@example.org --to b@example.org
    smtp-std send --server localhost:2525 --tls-ca test-ca.pem --from a@x --to b@y < m.eml

OUTPUT:
  One line per recipient on stdout (direct delivery adds the host that answered):
    b@example.net: accepted 250 2.1.5 Ok
    c@example.com: refused 550 5.1.1 user unknown
    d@example.com: deferred 451 4.7.1 greylisted (mx2.example.com [192.0.2.2])
  Errors name the step that failed and the server's reply, on stderr:
    smtp-std: MAIL FROM:<me@example.org> refused: 553 5.7.1 Sender address rejected

EXIT STATUS (sysexits.h):
  0   every recipient accepted
  75  EX_TEMPFAIL: try again later: a 4xx reply (to the message or to any recipient),
      connection failure, timeout, TLS required but unavailable or failed
  69  EX_UNAVAILABLE: refused for good (5xx) - the message, or some recipient while
      none was deferred (the others got the message: see stdout)
  65  EX_DATAERR: the message or envelope cannot be sent as is (a control character in
      an address, larger than the server's SIZE, a header block over 1 MiB)
  64  EX_USAGE: bad arguments (no password, an unreadable DKIM key)
  74  EX_IOERR: the message file cannot be read
  2   invalid command line (clap)

NOTES:
  Without Date: or Message-ID: in the header block, both are added on top (Date in UTC,
  Message-ID <unique@EHLO-name>). The message is streamed: bare LF becomes CRLF, lines
  starting with '.' are dot-stuffed, a missing final CRLF is added. PIPELINING is used when
  offered, SIZE is declared for files and checked against the server's limit before MAIL.
  DSN options are sent only when the server offers DSN. With --tls required (the default)
  nothing but EHLO and STARTTLS is sent before TLS, and the certificate is verified against
  Mozilla's roots (--tls-ca to trust your own CA; --insecure for self-signed test servers).
  AUTH is never sent without TLS unless --allow-cleartext-auth.

DIRECT DELIVERY (no --server):
  Recipients are grouped by domain, one transaction per domain. Each domain's MX hosts are
  tried in preference order (equal ones shuffled), every address of a host in turn; no MX
  means the domain's own A/AAAA (RFC 5321 5.1); a null MX (RFC 7505) fails at once (69).
  The next host is tried after a connection failure or a 4xx (greeting, EHLO, MAIL, end of
  data, or recipients deferred); a 5xx is final. If every host defers: 75 and the last reply.
  TLS is opportunistic by default: STARTTLS when offered, the certificate NOT verified (as
  MTAs do without DANE or MTA-STS: it protects against eavesdropping, not against an active
  attacker); --tls required verifies it. --dns ADDR:PORT and --port (default 25) point the
  lookups and the connections elsewhere (tests). The message is read once into memory (up to
  4 MiB) or an unlinked temporary file and sent from there to every domain.

DKIM (--dkim-key FILE --dkim-selector S [--dkim-domain D]):
  The final message (after Date/Message-ID were added, line ends made CRLF) is read into
  memory and a DKIM-Signature (rsa-sha256 or ed25519-sha256, per the key) is put on top;
  d= is --dkim-domain, else the From: header's domain, else --from's. With --server too.";

    const EX_USAGE: u8 = 64;
    const EX_DATAERR: u8 = 65;
    const EX_UNAVAILABLE: u8 = 69;
    const EX_IOERR: u8 = 74;
    const EX_TEMPFAIL: u8 = 75;

    #[derive(Debug, Clone, Copy, ValueEnum)]
    pub(crate) enum TlsArg {
        /// STARTTLS must succeed (certificate verified) before anything else is sent.
        Required,
        /// STARTTLS if offered, else plain text.
        Opportunistic,
        /// No TLS.
        Off,
        /// TLS from the first byte (port 465).
        Implicit,
    }

    #[derive(Debug, Clone, Copy, ValueEnum)]
    pub(crate) enum RetArg {
        /// Return the whole message in a DSN.
        Full,
        /// Return only the headers.
        Hdrs,
    }

    #[derive(Debug, Args)]
    pub(crate) struct SendArgs {
        /// Envelope sender (MAIL FROM); "" for the null sender <>.
        #[arg(long, value_name = "ADDR")]
        from: String,
        /// Recipient (RCPT TO). Repeatable.
        #[arg(long, value_name = "ADDR", required = true)]
        to: Vec<String>,
        /// The SMTP server (smarthost) as HOST:PORT. Without it: direct delivery to each
        /// recipient domain's MX hosts.
        #[arg(long, value_name = "HOST:PORT")]
        server: Option<String>,
        /// Direct delivery: the MX hosts' SMTP port.
        #[arg(long, value_name = "PORT", default_value_t = 25, conflicts_with = "server")]
        port: u16,
        /// Direct delivery: ask this DNS server (ADDR:PORT) instead of the system's resolvers.
        #[arg(long, value_name = "ADDR", conflicts_with = "server")]
        dns: Option<std::net::SocketAddr>,
        /// TLS policy. Default: required with --server; opportunistic (certificate not
        /// verified) for direct delivery.
        #[arg(long, value_enum, value_name = "MODE")]
        tls: Option<TlsArg>,
        /// Trust only the CA certificates in this PEM file (instead of Mozilla's roots).
        #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
        tls_ca: Option<PathBuf>,
        /// Do not verify the server's certificate (self-signed test servers only).
        #[arg(long)]
        insecure: bool,
        /// AUTH user name (PLAIN if offered, else LOGIN). The password comes from
        /// --auth-password-file or $SMTP_PASSWORD.
        #[arg(long, visible_alias = "auth", value_name = "USER")]
        auth_user: Option<String>,
        /// File whose first line is the AUTH password.
        #[arg(long, value_name = "FILE", requires = "auth_user")]
        auth_password_file: Option<PathBuf>,
        /// Allow AUTH without TLS (the password in clear text).
        #[arg(long)]
        allow_cleartext_auth: bool,
        /// Our name in EHLO and in the Message-ID. Default: this machine's name.
        #[arg(long, value_name = "NAME")]
        ehlo: Option<String>,
        /// Read the message from FILE instead of stdin.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// DSN NOTIFY for every recipient: NEVER, or a comma list of SUCCESS, FAILURE, DELAY.
        #[arg(long, value_name = "LIST", value_parser = parse_notify)]
        notify: Option<Notify>,
        /// DSN RET: what a bounce returns.
        #[arg(long, value_enum)]
        ret: Option<RetArg>,
        /// DSN ENVID: an identifier returned in DSNs.
        #[arg(long, value_name = "ID")]
        envid: Option<String>,
        /// Timeout in seconds for connecting and for each reply. Default: RFC 5321's
        /// (5 minutes for commands, 10 after the message; 30 s to connect).
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// Sign the message with this DKIM private key (PEM, from dkim-keygen): rsa-sha256 or
        /// ed25519-sha256 per the key.
        #[cfg(feature = "auth")]
        #[arg(long, value_name = "FILE", requires = "dkim_selector")]
        dkim_key: Option<PathBuf>,
        /// The DKIM selector (s=) of --dkim-key.
        #[cfg(feature = "auth")]
        #[arg(long, value_name = "NAME", requires = "dkim_key")]
        dkim_selector: Option<String>,
        /// The DKIM signing domain (d=). Default: the From: header's domain, else --from's.
        #[cfg(feature = "auth")]
        #[arg(long, value_name = "DOMAIN", requires = "dkim_key")]
        dkim_domain: Option<String>,
    }

    fn parse_notify(s: &str) -> Result<Notify, String> {
        if s.eq_ignore_ascii_case("never") {
            return Ok(Notify::NEVER);
        }
        let mut bits = 0;
        for word in s.split(',') {
            bits |= match word.trim().to_ascii_uppercase().as_str() {
                "SUCCESS" => Notify::SUCCESS,
                "FAILURE" => Notify::FAILURE,
                "DELAY" => Notify::DELAY,
                _ => return Err(format!("{word:?}: NEVER, or a list of SUCCESS, FAILURE, DELAY")),
            };
        }
        Ok(Notify(bits))
    }

    fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
        eprintln!("smtp-std: {msg}");
        ExitCode::from(code)
    }

    pub(crate) fn run(args: SendArgs) -> ExitCode {
        let ehlo = args.ehlo.clone().unwrap_or_else(system_hostname);
        let mut envelope = Envelope::new(&args.from, args.to.iter().map(String::as_str));
        for r in &mut envelope.to {
            r.notify = args.notify;
        }
        envelope.ret = args.ret.map(|r| match r {
            RetArg::Full => Ret::Full,
            RetArg::Hdrs => Ret::Hdrs,
        });
        envelope.envid = args.envid.clone();
        // Refused before anything is read or written.
        if let Err(e) = envelope.validate() {
            return fail(EX_DATAERR, e);
        }
        let direct = args.server.is_none();
        let server = args.server.clone().unwrap_or_default();
        let mut options = SendOptions::new(&server, &ehlo);
        options.tls = match args.tls {
            Some(TlsArg::Required) => TlsMode::Required,
            Some(TlsArg::Opportunistic) => TlsMode::Opportunistic,
            Some(TlsArg::Off) => TlsMode::Off,
            Some(TlsArg::Implicit) => TlsMode::Implicit,
            None if direct => TlsMode::Opportunistic,
            None => TlsMode::Required,
        };
        if let Some(t) = args.timeout {
            if !(t.is_finite() && t > 0.0) {
                return fail(EX_USAGE, "--timeout must be > 0");
            }
            options = options.timeout(Duration::from_secs_f64(t));
        }
        if let Some(ca) = &args.tls_ca {
            match client::tls_config_from_ca_file(ca) {
                Ok(c) => options.tls_config = Some(c),
                Err(e) => return fail(EX_USAGE, format!("--tls-ca: {e}")),
            }
        } else if args.insecure || (direct && options.tls == TlsMode::Opportunistic) {
            // Opportunistic MX delivery encrypts but cannot authenticate (no DANE/MTA-STS).
            options.tls_config = Some(client::insecure_tls_config());
        }
        options.allow_cleartext_auth = args.allow_cleartext_auth;
        if direct && args.auth_user.is_some() {
            return fail(EX_USAGE, "--auth-user needs --server (MX hosts take mail without AUTH)");
        }
        if let Some(user) = &args.auth_user {
            let password = match &args.auth_password_file {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(s) => s.lines().next().unwrap_or_default().to_owned(),
                    Err(e) => return fail(EX_USAGE, format!("{}: {e}", path.display())),
                },
                None => match std::env::var("SMTP_PASSWORD") {
                    Ok(p) => p,
                    Err(_) => return fail(EX_USAGE, "--auth-user needs --auth-password-file or $SMTP_PASSWORD"),
                },
            };
            options.auth = Some(client::Auth { user: user.clone(), password });
        }

        // The message: a file (its size declared with SIZE) or stdin.
        let (input, size): (Box<dyn Read>, Option<u64>) = match &args.file {
            Some(path) => match std::fs::File::open(path) {
                Ok(f) => {
                    let size = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
                    (Box::new(f), size)
                }
                Err(e) => return fail(EX_IOERR, format!("{}: {e}", path.display())),
            },
            None => (Box::new(std::io::stdin().lock()), stdin_size()),
        };
        #[cfg_attr(not(feature = "auth"), allow(unused_mut))]
        let (mut message, added): (Box<dyn Read>, u64) = match client::add_missing_headers(input, &ehlo) {
            Ok((m, added)) => (Box::new(m), added),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return fail(EX_DATAERR, e),
            Err(e) => return fail(EX_IOERR, format!("reading the message: {e}")),
        };
        envelope.size = size.map(|s| s + added);
        // The final message (Date/Message-ID added) is signed: it must be read whole first.
        #[cfg(feature = "auth")]
        let message: Box<dyn Read> = match sign(&args, &envelope.from, &mut message) {
            Ok(Some(signed)) => {
                envelope.size = Some(signed.len() as u64);
                Box::new(std::io::Cursor::new(signed))
            }
            Ok(None) => message,
            Err(code) => return code,
        };
        if direct {
            return direct_mx(&args, options, &envelope, message);
        }

        match client::send(&options, &envelope, message) {
            Ok(delivery) => {
                for r in &delivery.recipients {
                    println!("{r}");
                }
                eprintln!("smtp-std: message accepted by {server}: {}", delivery.reply);
                if delivery.all_accepted() {
                    ExitCode::SUCCESS
                } else if delivery.refused().any(|r| r.is_transient()) {
                    ExitCode::from(EX_TEMPFAIL)
                } else {
                    ExitCode::from(EX_UNAVAILABLE)
                }
            }
            Err(e) => {
                match &e {
                    SendError::NoValidRecipients(rs) => {
                        for r in rs {
                            println!("{r}");
                        }
                    }
                    e => {
                        let word = if e.is_transient() { "deferred" } else { "failed" };
                        for r in &envelope.to {
                            println!("{}: {word}: {e}", r.address);
                        }
                    }
                }
                let code = match &e {
                    SendError::Invalid(_) | SendError::Request(_) => EX_DATAERR,
                    SendError::Input(_) => EX_IOERR,
                    e if e.is_transient() => EX_TEMPFAIL,
                    _ => EX_UNAVAILABLE,
                };
                fail(code, e)
            }
        }
    }

    /// The size of stdin when it is a regular file (`< message.eml`).
    fn stdin_size() -> Option<u64> {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
            let meta = std::fs::File::from(fd).metadata().ok()?;
            meta.is_file().then_some(meta.len())
        }
        #[cfg(not(unix))]
        None
    }

    /// `--dkim-key`: the message read whole, its line ends made CRLF and a DKIM-Signature
    /// prepended; `None` without the flag.
    #[cfg(feature = "auth")]
    fn sign(args: &SendArgs, mail_from: &str, message: &mut dyn Read) -> Result<Option<Vec<u8>>, ExitCode> {
        let (Some(path), Some(selector)) = (&args.dkim_key, &args.dkim_selector) else {
            return Ok(None);
        };
        let key = smtp_std::auth::DkimKey::load(path)
            .map_err(|e| fail(EX_USAGE, format!("--dkim-key {}: {e}", path.display())))?;
        let mut bytes = Vec::new();
        if let Err(e) = message.read_to_end(&mut bytes) {
            return Err(fail(EX_IOERR, format!("reading the message: {e}")));
        }
        let domain = match &args.dkim_domain {
            Some(d) => d.clone(),
            None => match deliver::from_header_domain(&bytes).or_else(|| deliver::domain_of(mail_from)) {
                Some(d) => d,
                None => return Err(fail(EX_USAGE, "no From: domain to sign for: give --dkim-domain")),
            },
        };
        match deliver::dkim_sign(&bytes, &key, &domain, selector) {
            Ok(signed) => Ok(Some(signed)),
            Err(e) => Err(fail(EX_DATAERR, format!("DKIM signing failed: {e}"))),
        }
    }

    /// Without a smarthost: each recipient domain's MX hosts (`smtp_std::deliver`), the
    /// message spooled first since it goes out once per domain.
    #[cfg(feature = "auth")]
    fn direct_mx(args: &SendArgs, session: SendOptions, envelope: &Envelope, message: Box<dyn Read>) -> ExitCode {
        use smtp_std::deliver::{MxOptions, Spool, Status, SPOOL_MEMORY};
        let dns = match smtp_std::auth::Dns::new(args.dns) {
            Ok(d) => d,
            Err(e) => return fail(EX_UNAVAILABLE, format!("DNS: {e}")),
        };
        let mut spool = match Spool::new(message, SPOOL_MEMORY) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return fail(EX_DATAERR, e),
            Err(e) => return fail(EX_IOERR, format!("reading the message: {e}")),
        };
        let mut options = MxOptions::new(&session.ehlo);
        options.session = session;
        options.port = args.port;
        let results = deliver::deliver(&dns, &options, envelope, &mut spool);
        for r in &results {
            println!("{r}");
        }
        let count = |s| results.iter().filter(|r| r.status == s).count();
        let (ok, deferred, failed) = (count(Status::Accepted), count(Status::Deferred), count(Status::Failed));
        eprintln!("smtp-std: {ok} accepted, {deferred} deferred, {failed} failed");
        if deferred > 0 {
            if let Some(last) = results.iter().rev().find(|r| r.status == Status::Deferred) {
                eprintln!("smtp-std: try again later; last: {last}");
            }
            ExitCode::from(EX_TEMPFAIL)
        } else if failed == 0 {
            ExitCode::SUCCESS
        } else if results.iter().filter(|r| r.status == Status::Failed).all(|r| r.unsendable) {
            ExitCode::from(EX_DATAERR)
        } else {
            ExitCode::from(EX_UNAVAILABLE)
        }
    }

    #[cfg(not(feature = "auth"))]
    fn direct_mx(_: &SendArgs, _: SendOptions, _: &Envelope, _: Box<dyn Read>) -> ExitCode {
        fail(EX_USAGE, "no --server given: direct delivery to MX hosts needs the `auth` feature (DNS)")
    }
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
