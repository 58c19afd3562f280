//! `smtp-std reload --config FILE`: finds the server running with `FILE` through the pid file in
//! its `data_dir`, sends it `SIGHUP`, waits for the outcome it writes (`reload.status`) and
//! says it, with the exit code: 0 reloaded, 1 refused (or no answer), 3 not running.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use smtp_std::mta::config::Config;
use smtp_std::mta::control::{self, Outcome};

pub(crate) const RELOAD_AFTER: &str = "\
WHAT TAKES EFFECT:
  For new sessions (sessions in progress finish as they began): hostname, domains, aliases,
  catch-alls, DKIM keys, the accounts, mail_auth, trusted_networks (the checks), [dns],
  [delivery], [limits] max_message_size, max_recipients, max_errors, timeout.
  For the next deliveries (the queue keeps running): [outbound], [queue] retry, lifetime,
  delay_warning. For the next TLS handshake: the certificate and key of [tls].
  A config with an error is refused whole and the running one stays; the error names the
  file, the line and the key.

NEEDS A RESTART (named in the output; the rest is taken):
  [listen], user, data_dir, adding or removing [tls], [limits] max_clients,
  max_connections_per_client, max_connection_rate, max_auth_failures, [queue] workers,
  scan_interval, [reports], and trusted_networks as the exemption from the per-client
  limits.

EXIT STATUS:
  0 reloaded, 1 refused (the error is printed) or no answer, 3 no server running.

The certificate files are also read again by themselves when they change (looked at
every minute), so a renewal (certbot) needs no reload.";

/// Command line.
#[derive(Debug, Args)]
pub(crate) struct Reload {
    /// The config file the server runs with (its data_dir holds the server's pid file).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Seconds to wait for the server's answer.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,
}

/// Exit status: the new configuration was refused (or no answer came).
const REFUSED: u8 = 1;
/// Exit status: no server runs with this data_dir.
const NOT_RUNNING: u8 = 3;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("smtp-std: {message}");
    ExitCode::from(code)
}

/// `data_dir` of the config file `path`: from the checked config, or, when it has an error
/// (the server will name it), from its `data_dir` key alone.
fn data_dir(path: &Path) -> Result<PathBuf, String> {
    let error = match Config::load(path) {
        Ok(config) => return Ok(config.data_dir),
        Err(e) => e,
    };
    let text = std::fs::read_to_string(path).map_err(|_| error.to_string())?;
    let table: toml::Table = toml::from_str(&text).map_err(|_| error.to_string())?;
    let dir = table.get("data_dir").and_then(|v| v.as_str()).ok_or_else(|| error.to_string())?;
    let dir = PathBuf::from(dir);
    Ok(if dir.is_relative() { path.parent().map(|p| p.join(&dir)).unwrap_or(dir) } else { dir })
}

pub(crate) fn run(args: Reload) -> ExitCode {
    let data_dir = match data_dir(&args.config) {
        Ok(d) => d,
        Err(e) => {
            return fail(REFUSED, format_args!("{e} (the server was not asked: the file has no usable data_dir)"))
        }
    };
    let pid_file = control::pid_path(&data_dir);
    let server = match control::read_pid_file(&data_dir) {
        Ok(Some(p)) if p.is_running() => p,
        Ok(Some(p)) => {
            return fail(
                NOT_RUNNING,
                format_args!("not running: stale pid file {} (process {} is gone)", pid_file.display(), p.pid),
            )
        }
        Ok(None) => return fail(NOT_RUNNING, format_args!("not running: no pid file {}", pid_file.display())),
        Err(e) => return fail(REFUSED, e),
    };
    // The server reads its own config file again: it must be this one.
    if let Some(running) = &server.config {
        let given = control::absolute(&args.config);
        if *running != given {
            return fail(
                REFUSED,
                format_args!(
                    "the server (pid {}) runs with {}, not {}: it would read its own file again",
                    server.pid,
                    running.display(),
                    given.display()
                ),
            );
        }
    }
    let before = control::read_status(&data_dir).filter(|s| s.pid == server.pid).map_or(0, |s| s.generation);
    let Ok(pid) = i32::try_from(server.pid) else {
        return fail(REFUSED, format_args!("{}: bad process id {}", pid_file.display(), server.pid));
    };
    if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP) {
        return match e {
            nix::errno::Errno::ESRCH => fail(NOT_RUNNING, format_args!("not running: process {pid} is gone")),
            e => fail(REFUSED, format_args!("cannot signal the server (pid {pid}): {e}")),
        };
    }
    let wait = Duration::try_from_secs_f64(args.timeout).unwrap_or(Duration::from_secs(10));
    let deadline = Instant::now() + wait;
    loop {
        if let Some(status) = control::read_status(&data_dir).filter(|s| s.pid == server.pid && s.generation > before) {
            return match status.outcome {
                Outcome::Reloaded { restart } => {
                    println!("reloaded");
                    for r in restart {
                        println!("needs a restart: {r}");
                    }
                    ExitCode::SUCCESS
                }
                Outcome::Refused { error } => {
                    fail(REFUSED, format_args!("reload refused, the running configuration stays: {error}"))
                }
            };
        }
        if Instant::now() >= deadline {
            return fail(
                REFUSED,
                format_args!(
                    "no answer from the server (pid {pid}) within {:.0} s: see its log ({} not updated)",
                    wait.as_secs_f64(),
                    control::status_path(&data_dir).display()
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
