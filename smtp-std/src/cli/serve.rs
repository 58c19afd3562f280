//! `smtp-std serve`: the mail server of a config file, or a receiver into one Maildir.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use smtp_proto::ehlo::AuthMechanisms;
use std::sync::Arc;

use smtp_std::mta::accounts::AccountsFile;
use smtp_std::mta::config::Config;
use smtp_std::mta::inbound::{InboundHandler, InboundPolicy, Route};
use smtp_std::mta::maildir::{system_hostname, Maildir};
use smtp_std::mta::mailserver::MailServer;
use smtp_std::mta::metrics::Metered;
use smtp_std::proxy::Network;
use smtp_std::{tls, Options, Server};

pub(crate) const SERVE_AFTER: &str = "\
THE MAIL SERVER (--config):
  smtp-std quickstart alice@example.org --hostname mail.example.org --ip 203.0.113.7 \\
       --user vmail --dir /etc/smtp-std
  smtp-std serve --config /etc/smtp-std/smtp-std.toml
  Everything comes from the config file (listeners, TLS, domains, accounts, queue; the
  README's \"The config file\" lists every key); the flags below are for the Maildir mode.
  It binds its ports, drops to `user`, then serves: port 25 for mail to your domains,
  587/465 for your accounts (AUTH), mail to other domains queued and DKIM-signed.

THE MAILDIR MODE (no --config):
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

  Submission with AUTH PLAIN/LOGIN (users file: Dovecot passwd-file, hashed; made with
  `echo secret | smtp-std user add alice@example.org --accounts users.txt`):
    smtp-std serve --listen 0.0.0.0:587 --tls-cert cert.pem --tls-key key.pem --users users.txt
    swaks --server 127.0.0.1:587 -tls --auth-user alice@example.org --auth-password secret --to bob@example.org

  Behind HAProxy (`server mx 127.0.0.1:2525 send-proxy-v2`): the client address of the
  PROXY header is the one logged, checked (SPF) and written into Received:
    smtp-std serve --listen 127.0.0.1:2525 --proxy-from 127.0.0.1/32

  Try it out by hand:
    openssl s_client -starttls smtp -connect 127.0.0.1:2525

NOTES:
  Recipients in domains not listed with --domain are refused `550 5.7.1 Relay access
  denied` unless the client authenticated. With --users, AUTH is required before MAIL
  unless --auth-optional; AUTH is offered only under TLS unless --allow-insecure-auth.
  Limits reply with the RFC codes: 552 5.3.4 (size), 452 4.5.3 (recipients),
  421 4.7.0 (errors, too many clients), 421 4.4.2 (timeout, a command line not complete
  within the timeout of its first byte, message data under --min-data-rate), 452 4.3.1 (disk
  full or below --min-free-space).";

/// Command line.

#[derive(Debug, Args)]
pub(crate) struct Serve {
    /// The mail server's config file (TOML; `smtp-std quickstart` writes one): domains,
    /// accounts, mailboxes, listeners, TLS, the queue. With it, the flags below are refused:
    /// the file sets what they would. `SIGHUP` (or `smtp-std reload --config FILE`) reads it
    /// again.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
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
    /// AUTH users file: Dovecot's passwd-file format (hashed passwords; `smtp-std user add`). Enables AUTH PLAIN and LOGIN, and requires it
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
    /// Most concurrent clients (past it 421 4.7.0). A session waiting for its client parks in
    /// the readiness loop (a few KiB, no thread, no CPU); each needs a file descriptor (the
    /// soft `ulimit -n` is raised to the hard one at start).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    max_clients: usize,
    /// Most connections at once from one client address (IPv6: one /64), like Postfix's
    /// anvil; past it 421 4.7.0. 0: no limit. --trusted-network clients are exempt from the
    /// per-client limits.
    #[arg(long, value_name = "N", default_value_t = 50)]
    max_connections_per_client: u32,
    /// Most new connections per minute from one client address (that many at once, then one
    /// every 60/N seconds); past it 421 4.7.0. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 120)]
    max_connection_rate: u32,
    /// Most failed AUTH attempts per hour from one client address; the one that reaches it
    /// gets 421 4.7.0 and the address is locked out for an hour (421 4.7.0 at connect).
    /// 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_auth_failures: u32,
    /// Inactivity timeout in seconds, for commands, message content and the TLS handshake
    /// (then 421 4.4.2). Default: RFC 5321 (300 s for commands and for content). Also a
    /// deadline: a command line must be complete within it of its first byte.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Least average rate of message data in octets per second, once the timeout has passed
    /// since DATA/BDAT (then 421 4.4.2, nothing stored). 0: off.
    #[arg(long, value_name = "OCTETS", default_value_t = smtp_std::DEFAULT_MIN_DATA_RATE)]
    min_data_rate: u64,
    /// Octets that must stay free on the file system of --maildir: below it (or with no
    /// inode free), MAIL gets 452 4.3.1, as does a write that finds the disk full. 0: no check.
    #[arg(long, value_name = "BYTES", default_value_t = 100 << 20)]
    min_free_space: u64,
    /// Errors before the client is disconnected with 421 4.7.0.
    #[arg(long, value_name = "N", default_value_t = 20)]
    max_errors: u32,
    /// Accept every message and drop it, storing nothing (like Postfix smtp-sink): for
    /// benchmarks and tests. Ignores --maildir, --domain and --users.
    #[arg(long)]
    discard: bool,
    /// Connections from this network (CIDR) come through a proxy that sends the PROXY
    /// protocol first (v1 or v2, e.g. HAProxy's send-proxy-v2): the client address it carries
    /// is the one the session sees. A connection from it without a valid header is closed
    /// without a greeting. Repeatable.
    #[arg(long, value_name = "CIDR")]
    proxy_from: Vec<Network>,
    /// Seconds a proxy has to send its PROXY header.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    proxy_timeout: f64,
    /// Our host name, in the greeting and the Received: header. Default: this machine's.
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Do not check SPF, DKIM and DMARC (no Authentication-Results:, no junk folder).
    #[arg(long)]
    no_mail_auth: bool,
    /// DNS server (ADDR:PORT) for the checks instead of the system's resolvers.
    #[arg(long, value_name = "ADDR")]
    dns: Option<SocketAddr>,
    /// Seconds one DNS query waits for an answer (each is tried twice; then 451 4.7.24 for
    /// SPF, 4.7.5 for a DKIM key, 4.7.0 for DMARC).
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    dns_timeout: f64,
    /// Clients from this network (CIDR) are not checked, like authenticated ones, and no
    /// per-client limit applies to them. Repeatable; giving one replaces the default (this
    /// host only).
    #[arg(long, value_name = "CIDR", default_values = ["127.0.0.1/32", "::1/128"])]
    trusted_network: Vec<String>,
}

/// Each flag of `serve` with the config file's key that sets the same (`None`: no use with a
/// config file).
const SET_BY_CONFIG: &[(&str, Option<&str>)] = &[
    ("listen", Some("[listen] smtp")),
    ("tls_listen", Some("[listen] submissions")),
    ("domain", Some("[[domain]]")),
    ("maildir", Some("data_dir")),
    ("tls_cert", Some("[tls] cert")),
    ("tls_key", Some("[tls] key")),
    ("users", Some("accounts")),
    ("auth_optional", None),
    ("allow_insecure_auth", None),
    ("max_message_size", Some("[limits] max_message_size")),
    ("max_recipients", Some("[limits] max_recipients")),
    ("max_clients", Some("[limits] max_clients")),
    ("max_connections_per_client", Some("[limits] max_connections_per_client")),
    ("max_connection_rate", Some("[limits] max_connection_rate")),
    ("max_auth_failures", Some("[limits] max_auth_failures")),
    ("timeout", Some("[limits] timeout")),
    ("max_errors", Some("[limits] max_errors")),
    ("discard", None),
    ("proxy_from", Some("[listen] proxy")),
    ("proxy_timeout", None),
    ("hostname", Some("hostname")),
    ("no_mail_auth", Some("mail_auth")),
    ("dns", Some("[dns] server")),
    ("dns_timeout", Some("[dns] timeout")),
    ("trusted_network", Some("trusted_networks")),
];

/// The flags given on the command line beside `--config`, each with why it is refused.
fn flags_beside_config(matches: &clap::ArgMatches) -> Vec<String> {
    SET_BY_CONFIG
        .iter()
        .filter(|(id, _)| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        .map(|(id, key)| {
            let flag = format!("--{}", id.replace('_', "-"));
            match key {
                Some(key) => format!("{flag} is set by the config file; remove it or the config's {key}"),
                None => format!("{flag} does not apply with --config; remove it"),
            }
        })
        .collect()
}

/// `matches`: the command line's, to tell flags given from defaults.
pub(crate) fn run(args: Serve, matches: Option<&clap::ArgMatches>) -> std::io::Result<()> {
    if let (Some(path), Some(m)) = (&args.config, matches) {
        let refused = flags_beside_config(m);
        if !refused.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("serve --config {}: {}", path.display(), refused.join("; ")),
            ));
        }
    }
    raise_fd_limit();
    // Mail is private: whatever the umask we were started with, what we create is for our
    // user alone (the library creates its files 0600 and directories 0700 anyway).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    if let Some(path) = &args.config {
        return run_config(path);
    }
    let hostname = args.hostname.clone().unwrap_or_else(system_hostname);
    let mut options = Options::new(&hostname)
        .max_clients(args.max_clients)
        .max_connections_per_client(args.max_connections_per_client)
        .max_connection_rate(args.max_connection_rate)
        .max_auth_failures(args.max_auth_failures)
        .size((args.max_message_size > 0).then_some(args.max_message_size))
        .min_data_rate(args.min_data_rate)
        .allow_insecure_auth(args.allow_insecure_auth);
    if let Some(secs) = args.timeout {
        if !(secs.is_finite() && secs > 0.0) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "--timeout must be > 0"));
        }
        options = options.socket_timeout(Duration::from_secs_f64(secs));
    }
    if !args.proxy_from.is_empty() {
        if !(args.proxy_timeout.is_finite() && args.proxy_timeout > 0.0) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "--proxy-timeout must be > 0"));
        }
        let from: Vec<String> = args.proxy_from.iter().map(ToString::to_string).collect();
        tracing::info!(from = %from.join(","), "PROXY protocol expected");
        options = options
            .proxy_from(args.proxy_from.iter().copied())
            .proxy_timeout(Duration::from_secs_f64(args.proxy_timeout));
    }
    {
        let exempt = args.trusted_network.iter().map(|n| n.parse::<smtp_std::limits::Network>());
        let exempt = exempt
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--trusted-network {e}")))?;
        options = options.limits_exempt(exempt);
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
    let logins = match &args.users {
        Some(path) => {
            let users = AccountsFile::load(path)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            options = options
                .auth_mechanisms(AuthMechanisms::none().with(AuthMechanisms::PLAIN).with(AuthMechanisms::LOGIN))
                .auth_optional(args.auth_optional);
            tracing::info!(
                users = users.current().len(),
                auth_optional = args.auth_optional,
                "AUTH PLAIN LOGIN enabled"
            );
            if args.tls_cert.is_none() && !args.allow_insecure_auth && !args.auth_optional {
                tracing::warn!("AUTH is required but offered only under TLS, and TLS is off: no one can send");
            }
            Some(Arc::new(users))
        }
        None => None,
    };
    if args.discard {
        tracing::info!("discarding every message (--discard)");
        // Counted as the mail server counts (no metrics listener here): the benchmarks of
        // this mode measure what counting costs a session.
        return listen_and_run(Server::new(options, Metered::smtp(smtp_std::Sink)), &args, &hostname);
    }
    let maildir = Maildir::create(&args.maildir)?;
    let domains = args.domain.iter().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect();
    let mut handler = InboundHandler::new(InboundPolicy {
        hostname: hostname.clone(),
        route: Route::Maildir { maildir, domains },
        logins,
        outgoing: None,
    })
    .with_min_free_space(&args.maildir, args.min_free_space);
    if args.no_mail_auth {
        tracing::info!("SPF, DKIM and DMARC checks off (--no-mail-auth)");
    } else {
        if !(args.dns_timeout.is_finite() && args.dns_timeout > 0.0) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "--dns-timeout must be > 0"));
        }
        let timeout = Duration::from_secs_f64(args.dns_timeout);
        let policy =
            smtp_std::mta::mailserver::mail_auth_policy(&hostname, args.dns, timeout, &args.trusted_network)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--trusted-network {e}")))?;
        handler = handler.with_mail_auth(policy);
    }

    listen_and_run(Server::new(options, Metered::smtp(handler)), &args, &hostname)
}

/// Raises the soft limit on open files to the hard one: a connection is a descriptor, and the
/// usual soft limit (1,024) is below the default client cap.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "open files limit raised"),
            Err(e) => tracing::warn!(soft, hard, "cannot raise the open files limit: {e}"),
        }
    }
}

/// `serve --config FILE`: the mail server for the config's domains.
fn run_config(path: &std::path::Path) -> std::io::Result<()> {
    let config =
        Config::load(path).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let server = MailServer::new(&config)?;
    server.bind_and_run(&config)
}

fn listen_and_run<H: smtp_std::Handler>(mut server: Server<H>, args: &Serve, hostname: &str) -> std::io::Result<()> {
    for addr in &args.listen {
        let bound = server.listen(addr).map_err(|e| std::io::Error::new(e.kind(), format!("--listen {addr}: {e}")))?;
        tracing::info!(%bound, hostname, maildir = %args.maildir.display(), discard = args.discard, "listening for SMTP");
    }
    for addr in &args.tls_listen {
        let bound =
            server.listen_tls(addr).map_err(|e| std::io::Error::new(e.kind(), format!("--tls-listen {addr}: {e}")))?;
        tracing::info!(%bound, "listening for SMTP over implicit TLS");
    }
    smtp_std::mta::mailserver::shutdown_on_signals(vec![server.shutdown_handle()])?;
    server.run()
}
