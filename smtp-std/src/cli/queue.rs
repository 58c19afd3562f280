//! `smtp-std queue`: look at and act on the outbound queue, safe while `serve` runs (each
//! change takes the entry's lock, the one the delivery workers take).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use smtp_std::mta::config::Config;
use smtp_std::mta::queue::store::unix;
use smtp_std::mta::queue::{Entry, Queue, State};

pub(crate) const QUEUE_AFTER: &str = "\
EXAMPLES:
  smtp-std queue list --config /etc/smtp-std/smtp-std.toml
  smtp-std queue show 0067a3f1c20a31b2c4d0007 --config FILE
  smtp-std queue retry --config FILE              # every entry: try now
  smtp-std queue hold ID --config FILE            # no attempt until released
  smtp-std queue release ID --config FILE
  smtp-std queue delete ID --config FILE          # gone, no report to the sender
  smtp-std queue bounce ID --config FILE          # fail it now: the sender gets a bounce

The running server picks changes up at its next look at the queue ([queue] scan_interval).

EXIT STATUS: 0 done, 1 error, 67 no such entry.";

#[derive(Debug, Args)]
pub(crate) struct QueueArgs {
    #[command(subcommand)]
    command: QueueCommand,
    /// The server's config file (the queue is `<data_dir>/queue`).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Every entry: id, age, sender, recipients with their state, next attempt, last reply.
    List,
    /// One entry: its envelope and state, and its message's header.
    Show { id: String },
    /// Try now: one entry, or all.
    Retry { id: Option<String> },
    /// No delivery attempt until released.
    Hold { id: String },
    /// Undo hold.
    Release { id: String },
    /// Remove without telling the sender.
    Delete { id: String },
    /// Fail every pending recipient now: the sender gets a bounce; the entry is removed.
    Bounce { id: String },
}

const EX_NOUSER: u8 = 67;

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("smtp-std: {msg}");
    ExitCode::from(code)
}

/// `3d4h`, `12m`, `40s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{}h", s / 86_400, s / 3600 % 24),
    }
}

fn state_word(s: State) -> &'static str {
    match s {
        State::Pending => "pending",
        State::Delivered => "delivered",
        State::Bounced => "bounced",
    }
}

fn print_entry(e: &Entry, now: u64) {
    let age = human(Duration::from_secs(now.saturating_sub(e.arrival)));
    let next = if e.held {
        "held".to_owned()
    } else if e.next_attempt <= now {
        "now".to_owned()
    } else {
        format!("in {}", human(Duration::from_secs(e.next_attempt - now)))
    };
    let from = if e.from.is_empty() { "<>" } else { &e.from };
    println!("{}  age {age}  from {from}  attempts {}  next {next}", e.id, e.attempts);
    for r in &e.recipients {
        let last = r.last_reply.as_deref().map(|l| format!("  last: {l}")).unwrap_or_default();
        // The host, unless the last reply's text names it already (no connection).
        let named = |h: &str| r.last_reply.as_deref().is_some_and(|l| l.contains(h));
        let host = r.remote_mta.as_deref().filter(|h| !named(h)).map(|h| format!(" ({h})")).unwrap_or_default();
        println!("    {} {}{last}{host}", r.address, state_word(r.state));
    }
}

pub(crate) fn run(args: QueueArgs) -> ExitCode {
    let Some(path) = &args.config else {
        return fail(64, "--config FILE is required");
    };
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(78, e),
    };
    let queue = match Queue::open(config.data_dir.join("queue")) {
        Ok(q) => q,
        Err(e) => return fail(1, e),
    };
    let now = SystemTime::now();
    let t = unix(now);
    let update = |id: &str, change: &dyn Fn(&mut Entry)| -> ExitCode {
        let result = (|| {
            let _lock = queue.lock(id, true)?;
            let mut e = queue.load(id)?;
            change(&mut e);
            queue.save(&e)
        })();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(EX_NOUSER, format!("no queue entry {id}")),
            Err(e) => fail(1, e),
        }
    };
    match &args.command {
        QueueCommand::List => match queue.list() {
            Ok(entries) => {
                for e in &entries {
                    print_entry(e, t);
                }
                let pending: usize = entries.iter().map(|e| e.pending().count()).sum();
                println!("{} entries, {pending} recipients pending", entries.len());
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, e),
        },
        QueueCommand::Show { id } => match queue.load(id) {
            Ok(e) => {
                print_entry(&e, t);
                println!();
                print!("{}", toml::to_string(&e).unwrap_or_default());
                // The header: up to the empty line, in the first 64 KiB.
                let (mut head, mut size) = (Vec::new(), 0);
                if let Ok(mut m) = queue.message(id) {
                    size = m.len();
                    let _ = m
                        .reader()
                        .and_then(|r| std::io::Read::read_to_end(&mut std::io::Read::take(r, 64 << 10), &mut head));
                }
                let end = head.windows(4).position(|w| w == b"\r\n\r\n").map_or(head.len(), |p| p + 2);
                println!("\n# message: {size} bytes; header:");
                print!("{}", String::from_utf8_lossy(&head[..end.min(head.len())]));
                ExitCode::SUCCESS
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(EX_NOUSER, format!("no queue entry {id}")),
            Err(e) => fail(1, e),
        },
        QueueCommand::Retry { id: Some(id) } => update(id, &|e| e.next_attempt = t),
        QueueCommand::Retry { id: None } => match queue.ids() {
            Ok(ids) => {
                for id in ids {
                    let code = update(&id, &|e| e.next_attempt = t);
                    if code != ExitCode::SUCCESS && code != ExitCode::from(EX_NOUSER) {
                        return code;
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, e),
        },
        QueueCommand::Hold { id } => update(id, &|e| e.held = true),
        QueueCommand::Release { id } => update(id, &|e| e.held = false),
        QueueCommand::Delete { id } => {
            let result = queue.lock(id, true).and_then(|_lock| queue.remove(id));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(EX_NOUSER, format!("no queue entry {id}")),
                Err(e) => fail(1, e),
            }
        }
        QueueCommand::Bounce { id } => {
            match smtp_std::mta::queue::notify::bounce(
                &queue,
                &config.hostname,
                id,
                "deleted from the queue by the postmaster",
                now,
            ) {
                Ok(n) => {
                    eprintln!("smtp-std: {id}: {n} recipients bounced");
                    ExitCode::SUCCESS
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(EX_NOUSER, format!("no queue entry {id}")),
                Err(e) => fail(1, e),
            }
        }
    }
}
