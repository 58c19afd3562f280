//! Reload: `SIGHUP` (or `smtp-std reload --config FILE`, which sends it and waits for the
//! answer) reads the config file again, with everything it names — the accounts, the TLS
//! certificate and key, the DKIM keys, the smarthost's password and CA — checks it all as at
//! start, and swaps it in whole; or refuses it whole, naming the file, the line and the key,
//! and the running configuration stays.
//!
//! What takes effect:
//! - for **new sessions** (a session in progress finishes with the rules it began with):
//!   `hostname`, the domains, aliases, catch-alls, DKIM keys, the accounts file, `mail_auth`,
//!   `trusted_networks` (for the checks), `relay_networks`, `[dns]`, `[delivery]`, and of `[limits]`:
//!   `max_message_size`, `max_recipients`, `max_errors`, `timeout`;
//! - for **the next delivery attempts** of the queue (which keeps running): `[outbound]`
//!   (smarthost, credentials, port, bind, timeout), `[dns]`, and of `[queue]`: `retry`,
//!   `lifetime`, `delay_warning`;
//! - for **the next TLS handshake** on every listener: the certificate and key of `[tls]`.
//!
//! What needs a restart (named in the log and in `smtp-std reload`'s output; the rest of the
//! new configuration is taken, these keep their running values): `[listen]` (`smtp`,
//! `submission`, `submissions`, `proxy`, `metrics`), `user`, `data_dir`, adding or removing `[tls]`, and
//! of `[limits]`: `max_clients`, `max_connections_per_client`, `max_connection_rate`,
//! `max_auth_failures`; `trusted_networks` as the exemption from those per-client limits;
//! `[queue]` `workers` and `scan_interval`; `[reports]`.
//!
//! The certificate and key files are also looked at every minute on their own (their time,
//! size and inode, through symbolic links such as certbot's `live/`): when they change and
//! the new pair loads and matches, it is presented from the next handshake on; when it does
//! not (a key not written yet), the previous certificate stays and the files are tried again
//! when they change next. `SMTP_STD_CERT_CHECK_INTERVAL` (a duration, `"1s"`) sets another
//! interval, for tests.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rustls::sign::CertifiedKey;

use crate::mta::config::{Config, TlsFiles};
use crate::mta::control::{Outcome, ReloadStatus};
use crate::mta::inbound::LivePolicy;
use crate::mta::mailserver::{assemble, check, session_config, Base};
use crate::mta::queue::worker::Context;
use crate::tls::{self, CertResolver};
use crate::ConfigHandle;

/// How often the certificate files are looked at by default.
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The environment variable that sets another interval ([`cert_check_interval`]).
pub const CERT_CHECK_ENV: &str = "SMTP_STD_CERT_CHECK_INTERVAL";

/// How often the certificate files are looked at: `SMTP_STD_CERT_CHECK_INTERVAL` (a duration
/// such as `"1s"`, at least 100 ms) or [`CERT_CHECK_INTERVAL`].
pub fn cert_check_interval() -> Duration {
    match std::env::var(CERT_CHECK_ENV) {
        Ok(v) => match crate::mta::config::parse_duration(&v) {
            Ok(d) => d.max(Duration::from_millis(100)),
            Err(e) => {
                tracing::warn!("{CERT_CHECK_ENV}: {e}; looking every {}s", CERT_CHECK_INTERVAL.as_secs());
                CERT_CHECK_INTERVAL
            }
        },
        Err(_) => CERT_CHECK_INTERVAL,
    }
}

/// The changes from `started` (the config the process started with) to `new` that take
/// effect only at the next start, each as a sentence naming the key.
pub fn restart_needed(started: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut changed = |differs: bool, key: &str, what: &str| {
        if differs {
            out.push(format!("{key} changed: {what} at the next restart"));
        }
    };
    let (a, b) = (&started.listen, &new.listen);
    changed(a.smtp != b.smtp, "listen.smtp", "the listeners change");
    changed(a.submission != b.submission, "listen.submission", "the listeners change");
    changed(a.submissions != b.submissions, "listen.submissions", "the listeners change");
    changed(a.proxy != b.proxy, "listen.proxy", "the proxies trusted change");
    changed(a.metrics != b.metrics, "listen.metrics", "the metrics listeners change");
    changed(started.user != new.user, "user", "the server's user changes");
    changed(started.data_dir != new.data_dir, "data_dir", "the data directory changes");
    changed(started.tls.is_none() && new.tls.is_some(), "tls", "STARTTLS and implicit TLS start");
    changed(started.tls.is_some() && new.tls.is_none(), "tls", "TLS stops (the certificate stays until then)");
    let (a, b) = (&started.limits, &new.limits);
    changed(a.max_clients != b.max_clients, "limits.max_clients", "the new cap applies");
    let per_client = "the new per-client limit applies";
    changed(
        a.max_connections_per_client != b.max_connections_per_client,
        "limits.max_connections_per_client",
        per_client,
    );
    changed(a.max_connection_rate != b.max_connection_rate, "limits.max_connection_rate", per_client);
    changed(a.max_auth_failures != b.max_auth_failures, "limits.max_auth_failures", per_client);
    changed(
        started.trusted_networks != new.trusted_networks,
        "trusted_networks",
        "the SPF, DKIM and DMARC checks follow it now; its exemption from the per-client limits changes",
    );
    changed(a.min_data_rate != b.min_data_rate, "limits.min_data_rate", "the new rate applies");
    changed(a.min_free_space != b.min_free_space, "limits.min_free_space", "the new floor applies");
    changed(started.dnsbl != new.dnsbl, "dnsbl", "the blocklists asked change");
    let debug = |x: &dyn std::fmt::Debug| format!("{x:?}");
    changed(debug(&started.spam) != debug(&new.spam), "spam", "the DNSBL thresholds and greylisting change");
    changed(debug(&started.milters) != debug(&new.milters), "milter", "the milters asked change");
    changed(started.reports != new.reports, "reports", "the report address and DMARC reports sent change");
    changed(started.queue.workers != new.queue.workers, "queue.workers", "the number of delivery workers changes");
    changed(
        started.queue.scan_interval != new.queue.scan_interval,
        "queue.scan_interval",
        "the queue scan interval changes",
    );
    out
}

/// A file's identity and version, as far as its metadata tell (through symbolic links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
    dev: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), len: m.len(), ino: m.ino(), dev: m.dev() })
}

/// The certificate files presented and what they looked like when last read.
#[derive(Debug)]
struct Watched {
    cert: PathBuf,
    key: PathBuf,
    stamps: (Option<Stamp>, Option<Stamp>),
}

impl Watched {
    fn stamps_now(&self) -> (Option<Stamp>, Option<Stamp>) {
        (stamp(&self.cert), stamp(&self.key))
    }
}

/// The certificate every listener presents, and its files.
#[derive(Debug)]
struct CertWatch {
    resolver: Arc<CertResolver>,
    files: Mutex<Watched>,
}

impl CertWatch {
    /// Presents `key` (read from `files`, which looked like `stamps` before) from now on.
    fn replace(&self, key: Arc<CertifiedKey>, files: &TlsFiles, stamps: (Option<Stamp>, Option<Stamp>)) {
        let mut w = self.files.lock().unwrap_or_else(|p| p.into_inner());
        *w = Watched { cert: files.cert.clone(), key: files.key.clone(), stamps };
        if self.resolver.current().cert != key.cert {
            tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded: the next handshakes present it");
        }
        self.resolver.set(key);
    }

    /// Reads the files again if they changed since they were last read.
    fn check(&self) {
        let mut w = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let now = w.stamps_now();
        if now == w.stamps {
            return;
        }
        w.stamps = now;
        match tls::certified_key_from_files(&w.cert, &w.key) {
            Ok(key) if self.resolver.current().cert == key.cert => {}
            Ok(key) => {
                self.resolver.set(key);
                tracing::info!(
                    cert = %w.cert.display(),
                    "TLS certificate changed on disk: reloaded, the next handshakes present it"
                );
            }
            Err(e) => tracing::warn!(
                "TLS certificate files changed but cannot be used (yet), the previous certificate stays: {e}"
            ),
        }
    }
}

/// What a reload replaces, and how it went last.
pub(crate) struct Reloader {
    /// The config the process started with: its file is the one read again, and its
    /// restart-only settings stay.
    started: Config,
    /// The config in use now.
    running: Mutex<Config>,
    base: Base,
    live: LivePolicy,
    ctx: Arc<Context>,
    /// The SMTP configurations of the servers (port 25, submission).
    configs: Vec<ConfigHandle>,
    cert: Option<CertWatch>,
    generation: AtomicU64,
}

impl Reloader {
    /// The reloader of a server started with `config`.
    pub(crate) fn new(
        config: Config,
        base: Base,
        live: LivePolicy,
        ctx: Arc<Context>,
        configs: Vec<ConfigHandle>,
        cert: Option<Arc<CertResolver>>,
    ) -> Self {
        let cert = match (cert, &config.tls) {
            (Some(resolver), Some(files)) => {
                let mut watched = Watched { cert: files.cert.clone(), key: files.key.clone(), stamps: (None, None) };
                watched.stamps = watched.stamps_now();
                Some(CertWatch { resolver, files: Mutex::new(watched) })
            }
            _ => None,
        };
        Self {
            running: Mutex::new(config.clone()),
            started: config,
            base,
            live,
            ctx,
            configs,
            cert,
            generation: AtomicU64::new(0),
        }
    }

    /// Reads the config file again and swaps it in, or refuses it; logs the outcome and
    /// writes it into `data_dir/reload.status` for `smtp-std reload`.
    pub(crate) fn reload(&self) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let outcome = match self.try_reload() {
            Ok(restart) => {
                tracing::info!(
                    config = %self.started.file.display(),
                    generation,
                    "reloaded: new sessions and the next deliveries use the new configuration"
                );
                for r in &restart {
                    tracing::warn!("{r}");
                }
                Outcome::Reloaded { restart }
            }
            Err(error) => {
                tracing::error!(generation, "reload refused, the running configuration stays: {error}");
                Outcome::Refused { error }
            }
        };
        let status = ReloadStatus { pid: std::process::id(), generation, outcome };
        if let Err(e) = crate::mta::control::write_status(&self.base.data_dir, &status) {
            tracing::error!("cannot write the reload status: {e}");
        }
    }

    /// The reload: the changes that need a restart, or why the new config is refused.
    fn try_reload(&self) -> Result<Vec<String>, String> {
        let new = Config::load(&self.started.file).map_err(|e| e.to_string())?;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let restart = restart_needed(&self.started, &new);
        let started = &self.started;
        // The restart-only settings keep their running values.
        let tls = match (&started.tls, new.tls.clone()) {
            (None, _) => None,
            (Some(_), None) => running.tls.clone(),
            (Some(_), Some(t)) => Some(t),
        };
        let effective = Config {
            data_dir: started.data_dir.clone(),
            user: started.user.clone(),
            listen: started.listen.clone(),
            tls,
            ..new
        };
        let stamps = effective.tls.as_ref().map(|t| (stamp(&t.cert), stamp(&t.key)));
        let checked = check(&effective).map_err(|e| e.to_string())?;
        let parts = assemble(&effective, checked, &self.base, None).map_err(|e| e.to_string())?;
        // Everything is read and checked: in it goes.
        self.live.set(parts.policy, parts.mail_auth);
        self.ctx.set_settings(parts.settings);
        for handle in &self.configs {
            handle.set(session_config(&effective, handle.get()));
        }
        if let (Some(w), Some(key), Some(files), Some(stamps)) = (&self.cert, parts.cert, &effective.tls, stamps) {
            w.replace(key, files, stamps);
        }
        *running = effective;
        Ok(restart)
    }

    /// Starts the thread that looks at the certificate files every
    /// [`cert_check_interval`], until `stop`; `None` without TLS.
    pub(crate) fn watch_certificates(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Option<JoinHandle<()>>> {
        if self.cert.is_none() {
            return Ok(None);
        }
        let interval = cert_check_interval();
        let me = self.clone();
        let thread = std::thread::Builder::new().name("tls-watch".into()).spawn(move || loop {
            let due = Instant::now() + interval;
            while Instant::now() < due {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(interval.min(Duration::from_millis(200)));
            }
            if let Some(w) = &me.cert {
                w.check();
            }
        })?;
        Ok(Some(thread))
    }
}
