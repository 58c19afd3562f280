//! The `smtp-std` program: `smtp-std serve` receives mail, `smtp-std send` sends a message
//! through a smarthost or straight to the recipients' MX hosts. One file per command in `cli/`.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

const LONG_ABOUT: &str = "\
smtp-std: an SMTP server built on the smtp-proto sans-IO core.

`smtp-std serve` listens for SMTP and delivers every accepted message into a Maildir
(tmp/ -> fsync -> new/, before the 250 is sent), with a Received: header on top.
With no flags it listens on 127.0.0.1:2525, accepts mail for any recipient and writes
into ./Maildir. One log line per event goes to stderr (RUST_LOG=debug for more).";

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
