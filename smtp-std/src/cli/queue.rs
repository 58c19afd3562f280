//! `smtp-std queue`: look at and act on the outbound queue, safe while `serve` runs (each
//! change takes the entry's lock, the one the delivery workers take).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use smtp_std::mta::config::Config;
use smtp_std::mta::queue::corrupt::Corrupt;
use smtp_std::mta::queue::store::{is_damage, unix};
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

A damaged entry (cut short, a bad first line, an envelope or state that does not parse) is
never deleted for it: the server moves it into <data_dir>/queue/corrupt/ with one log line.
`list` shows it as corrupt, `show` prints what can be read of it, `bounce` tells the sender
(when its envelope can be read), `delete` drops it. A damaged state alone is kept there too;
the entry goes on from its envelope at submission.

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
    /// Every entry: id, age, sender, recipients with their state, next attempt, last reply;
    /// damaged ones as corrupt, with what is wrong.
    List,
    /// One entry: its envelope and state, and its message's header (of a damaged one, what
    /// can be read).
    Show { id: String },
    /// Try now: one entry, or all.
    Retry { id: Option<String> },
    /// No delivery attempt until released.
    Hold { id: String },
    /// Undo hold.
    Release { id: String },
    /// Remove without telling the sender (a damaged entry too).
    Delete { id: String },
    /// Fail every pending recipient now: the sender gets a bounce; the entry is removed (a
    /// damaged one too, when its envelope can be read).
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

/// One damaged entry in `list`: its id, what is wrong, and what can be read of it.
fn print_corrupt(c: &Corrupt, now: u64) {
    let what = if c.state_only() { "corrupt state (the entry goes on from its envelope)" } else { "corrupt" };
    println!("{}  {what}: {}", c.id, c.reason());
    match &c.envelope {
        Some(e) if !c.state_only() => {
            let from = if e.from.is_empty() { "<>" } else { &e.from };
            println!("    from {from}  age {}", human(Duration::from_secs(now.saturating_sub(e.arrival))));
            for r in &e.recipients {
                println!("    {} {}", r.address, state_word(r.state));
            }
        }
        Some(_) => {}
        None => println!("    (no envelope can be read: the sender is unknown)"),
    }
}

/// The first `max` bytes of `path`, as text.
fn head_of(path: &std::path::Path, max: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = std::io::Read::read_to_end(&mut std::io::Read::take(f, max), &mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Up to the empty line, in the first 64 KiB of `r`.
fn print_header(r: impl std::io::Read, size: u64) {
    let mut head = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::Read::take(r, 64 << 10), &mut head);
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").map_or(head.len(), |p| p + 2);
    println!("\n# message: {size} bytes; header:");
    print!("{}", String::from_utf8_lossy(&head[..end.min(head.len())]));
}

/// `show` of a damaged entry: what is wrong, then everything that can be read.
fn show_corrupt(c: &Corrupt, now: u64) {
    println!("{}  CORRUPT", c.id);
    for p in &c.problems {
        println!("    {p}");
    }
    for p in c.path.iter().chain(&c.states) {
        println!("    kept: {}", p.display());
    }
    match &c.envelope {
        Some(e) => {
            println!();
            print_entry(e, now);
            println!();
            print!("{}", toml::to_string(e).unwrap_or_default());
        }
        None if c.state_only() => println!("\n# the entry goes on from its envelope at submission"),
        None => {
            println!("\n# no envelope can be read; the entry's first 4 KiB:");
            if let Some(p) = &c.path {
                println!("{}", head_of(p, 4096));
            }
        }
    }
    for s in c.states.iter().filter(|s| c.problems.iter().any(|p| p.starts_with(&s.display().to_string()))) {
        println!("\n# {} (damaged), its first 4 KiB:\n{}", s.display(), head_of(s, 4096));
    }
    match (c.message_reader(), c.message) {
        (Ok(Some(m)), Some((_, present))) => {
            let of = c.message_len.filter(|&l| l != present).map(|l| format!(" of {l}")).unwrap_or_default();
            print_header(m, present);
            if !of.is_empty() {
                println!("# ({present}{of} bytes of the message are there)");
            }
        }
        (Err(e), _) => println!("\n# message: {e}"),
        _ if c.state_only() => {}
        _ => println!("\n# message: where it starts cannot be read"),
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
    let not_found = |id: &str| match queue.corrupt(id).filter(|c| !c.state_only()) {
        Some(c) => fail(
            1,
            format!(
                "queue entry {id} is corrupt ({}): `smtp-std queue show {id}`, then `queue bounce` or `queue delete`",
                c.reason()
            ),
        ),
        None => fail(EX_NOUSER, format!("no queue entry {id}")),
    };
    let update = |id: &str, change: &dyn Fn(&mut Entry)| -> ExitCode {
        let result = (|| {
            let _lock = queue.lock(id, true)?;
            let mut e = queue.load(id)?;
            change(&mut e);
            queue.save(&e)
        })();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => not_found(id),
            Err(e) if is_damage(&e) => fail(
                1,
                format!("{e}: queue entry {id} is damaged; `smtp-std queue show {id}`, then `queue bounce` or `queue delete`"),
            ),
            Err(e) => fail(1, e),
        }
    };
    match &args.command {
        QueueCommand::List => match queue.survey(false) {
            Ok(survey) => {
                for e in &survey.entries {
                    print_entry(e, t);
                }
                for (id, e) in &survey.unreadable {
                    println!("{id}  unreadable: {e}");
                }
                for c in &survey.corrupt {
                    print_corrupt(c, t);
                }
                let pending: usize = survey.entries.iter().map(|e| e.pending().count()).sum();
                let corrupt = match survey.corrupt.len() {
                    0 => String::new(),
                    n => format!(", {n} corrupt (see `smtp-std queue show ID`)"),
                };
                println!("{} entries, {pending} recipients pending{corrupt}", survey.entries.len());
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, e),
        },
        QueueCommand::Show { id } => match queue.load(id) {
            Ok(e) => {
                print_entry(&e, t);
                println!();
                print!("{}", toml::to_string(&e).unwrap_or_default());
                match queue.message(id) {
                    Ok(mut m) => {
                        let size = m.len();
                        match m.reader() {
                            Ok(r) => print_header(r, size),
                            Err(e) => println!("\n# message: {e}"),
                        }
                    }
                    Err(e) => println!("\n# message: {e}"),
                }
                // A damaged state of it kept aside.
                if let Some(c) = queue.corrupt(id) {
                    println!();
                    show_corrupt(&c, t);
                }
                ExitCode::SUCCESS
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || is_damage(&e) => match queue.inspect(id) {
                Some(c) => {
                    show_corrupt(&c, t);
                    ExitCode::SUCCESS
                }
                None => fail(EX_NOUSER, format!("no queue entry {id}")),
            },
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
            let live = match queue.lock(id, true).and_then(|_lock| queue.remove(id)) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return fail(1, e),
            };
            match queue.remove_corrupt(id) {
                Ok(kept) if live || kept => ExitCode::SUCCESS,
                Ok(_) => fail(EX_NOUSER, format!("no queue entry {id}")),
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
