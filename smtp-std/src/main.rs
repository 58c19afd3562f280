//! The `smtp-std` program: `smtp-std serve --config FILE` is the mail server of your domains
//! (`smtp-std quickstart` writes the file), `smtp-std serve` alone a receiver into one Maildir,
//! `smtp-std send` sends a message through a smarthost or straight to the recipients' MX hosts.
//! One file per command in `cli/`.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

const LONG_ABOUT: &str = "\
smtp-std: a mail server built on the smtp-proto sans-IO SMTP core.

`smtp-std serve --config FILE` is the mail server of your domains (`smtp-std quickstart`
writes FILE, a Dovecot config and the DNS records to publish): mail from the world for your
accounts, refused at RCPT for anyone unknown, stored in a Maildir per account (or handed to
Dovecot's LMTP) before the 250; your accounts submit on 587/465 with their password, and
their mail leaves DKIM-signed through a queue that retries for days.

`smtp-std serve` without --config is a plain receiver: it listens on 127.0.0.1:2525, accepts
mail for any recipient and writes it into one Maildir, ./Maildir (tmp/ -> fsync -> new/
before the 250).

Either way a readiness loop on a few threads (as many as the cores) serves every session; a
waiting session costs a few KiB and no thread. One log line per event goes to stderr
(RUST_LOG=info by default; RUST_LOG=debug for more).";

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "smtp-std",
    version,
    about = "A mail server for your domains: SMTP in, submission and a queue out, Maildirs or Dovecot",
    long_about = LONG_ABOUT,
    after_help = "Examples and every flag: smtp-std serve --help"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the mail server of a config file (--config), or receive mail into one Maildir.
    #[command(after_long_help = cli::serve::SERVE_AFTER)]
    Serve(cli::serve::Serve),
    /// Send a message (stdin or --file) through a smarthost, or to the recipients' MX hosts.
    #[command(after_long_help = cli::send::SEND_AFTER)]
    Send(cli::send::SendArgs),
    /// Make a DKIM signing key and print the DNS record to publish for it.
    #[command(after_long_help = cli::dkim_keygen::KEYGEN_AFTER)]
    DkimKeygen(cli::dkim_keygen::DkimKeygen),
    /// Print the DNS records to publish for mail to and from your own domain.
    #[command(after_long_help = cli::records::RECORDS_AFTER)]
    Records(cli::records::Records),
    /// Look up a domain's mail records and say what is missing or wrong (exit 0 if none).
    Check(cli::check::Check),
    /// Set up a mail server for a domain: config, first account, DKIM key, DNS records.
    #[command(after_long_help = cli::quickstart::QUICKSTART_AFTER)]
    Quickstart(cli::quickstart::Quickstart),
    /// Look at and act on the outbound queue (list, show, retry, hold, release, delete, bounce).
    #[command(after_long_help = cli::queue::QUEUE_AFTER)]
    Queue(cli::queue::QueueArgs),
    /// Manage the accounts (users and their hashed passwords).
    User(cli::user::UserArgs),
    /// Make the running server read its config file again (SIGHUP) and say how it went.
    #[command(after_long_help = cli::reload::RELOAD_AFTER)]
    Reload(cli::reload::Reload),
    /// List and summarise the DMARC and TLS reports received at [reports] address.
    #[command(after_long_help = cli::reports::REPORTS_AFTER)]
    Reports(cli::reports::Reports),
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A log that cannot be written (stderr closed) must never take a session down. Sessions
    // enter no span (the registry holds 4,096 threads at most): their own lines carry
    // `id=` and `peer=`, and the thread name (`smtp-<id>`) ties the handler's lines to them.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_thread_names(true)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .init();
    let matches = Cli::command().get_matches();
    let args = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match args.command {
        Command::Serve(s) => cli::serve::run(s, matches.subcommand_matches("serve")),
        Command::Send(s) => return cli::send::run(s),
        Command::DkimKeygen(k) => cli::dkim_keygen::run(k),
        Command::Records(r) => cli::records::run(r),
        Command::Check(c) => return cli::check::run(c),
        Command::Quickstart(q) => cli::quickstart::run(q),
        Command::Queue(q) => return cli::queue::run(q),
        Command::User(u) => return cli::user::run(u),
        Command::Reload(r) => return cli::reload::run(r),
        Command::Reports(r) => cli::reports::run(r),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, on stderr (where the log goes too).
            let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("smtp-std: {e}\n"));
            ExitCode::FAILURE
        }
    }
}
