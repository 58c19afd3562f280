//! DMARC aggregate reports both ways, and TLS reports received (`[reports]`).
//!
//! - **Received** ([`incoming`]): mail to `[reports] address` whose only recipient is that
//!   address is read whole (up to `max_report_size`); when a part holds a DMARC aggregate
//!   report (RFC 7489 XML, plain, gzip or zip) or a TLS report (RFC 8460 JSON, plain or gzip),
//!   the report is kept as JSON in `<data_dir>/reports/received/` and the message goes no
//!   further; a message that is no report is delivered to what the address reaches, as usual.
//!   `smtp-std reports --config FILE` lists and summarises them.
//! - **Sent** ([`outgoing`], unless `send_dmarc = false`): the DMARC evaluation of each message
//!   received from outside whose From domain has a DMARC record is appended to
//!   `<data_dir>/reports/dmarc-out/<domain>.jsonl` ([`evaluations`]); not for our own
//!   domains, nor for mail to the report address (no reports about reports). At the end of the
//!   domain's period (its `ri` rounded as mox does, by default a day, UTC; `[reports] interval`
//!   for every domain) a report goes through the queue to its `rua=mailto:` addresses.
//!
//! Files: [`config`] the keys, [`aggregate`] the XML we write and the reports we keep,
//! [`tlsrpt`] the TLS reports we keep, [`evaluations`] the store, [`incoming`] (mail-auth's
//! report parsers) and [`outgoing`], [`summary`] for the command.

pub mod aggregate;
pub mod config;
pub mod evaluations;
pub mod incoming;
pub mod outgoing;
pub mod summary;
pub mod tlsrpt;
pub mod tlsrpt_out;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use config::ReportsConfig;
pub use evaluations::Evaluation;

use crate::mta::private;

/// `<data_dir>/reports`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("reports")
}

/// `<data_dir>/reports/received`: the reports that arrived.
pub fn received_dir(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("received")
}

/// The reports of a running server: where received ones are kept, the evaluations waiting
/// for the reports we send.
pub struct Reports {
    config: ReportsConfig,
    address: Option<String>,
    received: PathBuf,
    store: Option<evaluations::Store>,
    /// The outcomes of our outbound TLS for the TLS reports we send (`send_tls`).
    tls: Option<Arc<tlsrpt_out::Counter>>,
    hostname: String,
    ours: Vec<String>,
    /// DKIM-signs a report when our key covers its From domain (the host name's).
    sign: Option<crate::mta::inbound::Signer>,
    /// Held while a message to the report address is in memory: one at a time, so that
    /// many sessions sending at once hold `max_report_size` (and its inflation) once.
    parsing: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reports").field("address", &self.address).field("received", &self.received).finish()
    }
}

impl Reports {
    /// The reports of `config` under `<data_dir>/reports/` (which must exist, the server's
    /// user's): creates `received/` and `dmarc-out/`, private.
    pub fn open(config: &crate::mta::config::Config) -> io::Result<Self> {
        let base = dir(&config.data_dir);
        let received = received_dir(&config.data_dir);
        match private::create_dir(&received) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io::Error::new(e.kind(), format!("{}: {e}", received.display())))
            }
            _ => private::tighten_dir(&received)?,
        }
        let r = &config.reports;
        let store = match r.send_dmarc {
            true => Some(evaluations::Store::open(base.join("dmarc-out"), r.max_evaluations)?),
            false => None,
        };
        let tls = match r.send_tls {
            true => Some(Arc::new(tlsrpt_out::Counter::open(base.join("tlsrpt-out"), r.max_evaluations)?)),
            false => None,
        };
        Ok(Self {
            tls,
            config: r.clone(),
            address: r.address(),
            received,
            store,
            hostname: config.hostname.clone(),
            ours: config.domains.iter().map(|d| d.name.to_ascii_lowercase()).collect(),
            sign: None,
            parsing: std::sync::Mutex::new(()),
        })
    }

    /// Signs the reports we send with `sign` (the one of submitted mail: our domains' keys).
    pub fn with_signer(mut self, sign: crate::mta::inbound::Signer) -> Self {
        self.sign = Some(sign);
        self
    }

    /// Where the outcomes of outbound TLS are counted for TLS-RPT (`None`: `send_tls` off).
    pub fn tls_outcomes(&self) -> Option<Arc<dyn crate::mta::sts::TlsOutcomes>> {
        self.tls.clone().map(|c| c as Arc<dyn crate::mta::sts::TlsOutcomes>)
    }

    /// Whether `rcpt` is the report address.
    pub fn is_report_address(&self, rcpt: &str) -> bool {
        self.address.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(rcpt.trim_end_matches('.')))
    }

    /// Records the DMARC evaluation of a message received for `rcpts` (unless one of them is
    /// the report address, or the domain is ours, or sending is off).
    pub fn record(&self, e: Evaluation, rcpts: &[(String, Vec<String>)]) {
        let Some(store) = &self.store else { return };
        if rcpts.iter().any(|(r, _)| self.is_report_address(r)) || self.ours.contains(&e.domain) {
            return;
        }
        match store.add(&e) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                domain = e.domain,
                max = self.config.max_evaluations,
                "DMARC evaluation not recorded: [reports] max_evaluations reached for this period"
            ),
            Err(e) => tracing::error!("DMARC evaluation not recorded: {e}"),
        }
    }

    /// A message for `rcpts` only to the report address, read from `content` (at most
    /// `max_report_size` of it is held, by one session at a time): when it holds a report, keeps it and says where
    /// (the message needs no delivery). `None`: deliver it as usual. `Err`: reading the
    /// message or writing the report failed.
    pub fn receive(
        &self,
        rcpts: &[(String, Vec<String>)],
        from: &str,
        content: &mut dyn Read,
    ) -> io::Result<Option<PathBuf>> {
        if rcpts.len() != 1 || !self.is_report_address(&rcpts[0].0) {
            return Ok(None);
        }
        let _one = self.parsing.lock().unwrap_or_else(|p| p.into_inner());
        let mut message = Vec::new();
        content.take(self.config.max_report_size.saturating_add(1)).read_to_end(&mut message)?;
        if message.len() as u64 > self.config.max_report_size {
            tracing::info!(
                from,
                max = self.config.max_report_size,
                "mail to the report address too big to be a report"
            );
            return Ok(None);
        }
        let Some(report) = incoming::parse(&message, from, self.config.max_report_size, SystemTime::now()) else {
            return Ok(None);
        };
        let path = incoming::store(&self.received, &report)?;
        let (kind, org) = match (&report.dmarc, &report.tls) {
            (Some(f), _) => ("DMARC", f.org_name.as_str()),
            (_, Some(t)) => ("TLS", t.organization_name.as_str()),
            _ => ("", ""),
        };
        tracing::info!(from, org, path = %path.display(), "{kind} report received");
        Ok(Some(path))
    }

    /// Starts the thread that sends the DMARC reports (when `send_dmarc` is on) at the end of
    /// each period (see [`outgoing`]), and deletes the received reports older than
    /// `keep_received`. It stops soon after `stop` is set.
    pub fn start_sender(
        self: &Arc<Self>,
        queue: crate::mta::queue::Queue,
        handoff: crate::mta::queue::worker::Handoff,
        dns: crate::mta::auth::dns::Dns,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Option<JoinHandle<()>>> {
        if self.store.is_none() {
            tracing::info!("DMARC aggregate reports not sent ([reports] send_dmarc = false)");
        }
        let me = self.clone();
        let step = self.config.interval.map_or(3600, |d| d.as_secs().max(1));
        let thread = std::thread::Builder::new().name("dmarc-reports".into()).spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let now = unix(SystemTime::now());
                let end = (now / step + 1) * step;
                while unix(SystemTime::now()) < end && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(200));
                }
                if !stop.load(Ordering::SeqCst) {
                    me.tick(end, &queue, &handoff, &dns);
                }
            }
        })?;
        Ok(Some(thread))
    }

    /// The end of a period at `end` (seconds since the epoch): the domains due give their
    /// evaluations up, and every file given up and not yet reported is reported.
    fn tick(
        &self,
        end: u64,
        queue: &crate::mta::queue::Queue,
        handoff: &crate::mta::queue::worker::Handoff,
        dns: &crate::mta::auth::dns::Dns,
    ) {
        let before = end.saturating_sub(self.config.keep_received.as_secs());
        match incoming::prune(&self.received, before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "received reports older than [reports] keep_received deleted"),
            Err(e) => tracing::warn!(dir = %self.received.display(), "old reports not deleted: {e}"),
        }
        self.tick_tls(end, queue, handoff, dns);
        let Some(store) = &self.store else { return };
        let domains = store.domains().unwrap_or_else(|e| {
            tracing::error!("DMARC evaluations: {e}");
            Vec::new()
        });
        for (domain, hours) in domains {
            // Without `interval` the step is an hour: a domain is due at the UTC hours that
            // are multiples of its period, from the `ri` of its record now (mox's schedule).
            let due = self.config.interval.is_some() || {
                let hours = match dns.txt(&format!("_dmarc.{domain}")) {
                    Ok(txt) => txt
                        .iter()
                        .find_map(|t| outgoing::parse_record(&domain, t))
                        .map_or(hours, |r| evaluations::interval_hours(r.ri)),
                    Err(_) => hours,
                };
                evaluations::due_at(end, hours)
            };
            if due {
                if let Err(e) = store.take(&domain, end) {
                    tracing::error!(domain, "DMARC evaluations: {e}");
                }
            }
        }
        let enqueue = |to: &[String], message: &[u8]| self.enqueue(queue, handoff, to, message);
        let reporter = outgoing::Reporter { hostname: &self.hostname, ours: &self.ours, dns, enqueue: &enqueue };
        for path in store.taken().unwrap_or_default() {
            match outgoing::report_file(&reporter, &path, SystemTime::now()) {
                Ok(outgoing::Sent::Queued(_)) => {}
                Ok(outgoing::Sent::Nothing(why)) => {
                    tracing::info!(file = %path.display(), "no DMARC report sent: {why}")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), "DMARC report not sent yet, tried again next period: {e}")
                }
            }
        }
    }
}

impl Reports {
    /// The queued submission of a report from `postmaster@<hostname>`, DKIM-signed when we can.
    fn enqueue(
        &self,
        queue: &crate::mta::queue::Queue,
        handoff: &crate::mta::queue::worker::Handoff,
        to: &[String],
        message: &[u8],
    ) -> io::Result<String> {
        let from = format!("postmaster@{}", self.hostname);
        let rcpts = to.iter().map(|a| crate::mta::queue::Recipient::new(a)).collect();
        let mut entry = crate::mta::queue::Entry::new(&from, rcpts, SystemTime::now());
        let split = message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message.len(), |i| i + 4);
        let signature = self.sign.as_ref().and_then(|sign| sign(&message[..split], &mut &message[split..]));
        let signed = [signature.as_deref().unwrap_or_default(), message].concat();
        let id = queue.submit(&mut entry, &signed)?;
        handoff.attempt_now(&id);
        Ok(id)
    }

    /// The TLS reports: daily (at 00:00 UTC), or every `interval`.
    fn tick_tls(
        &self,
        end: u64,
        queue: &crate::mta::queue::Queue,
        handoff: &crate::mta::queue::worker::Handoff,
        dns: &crate::mta::auth::dns::Dns,
    ) {
        let Some(counter) = &self.tls else { return };
        let period = self.config.interval.unwrap_or(Duration::from_secs(86400));
        if self.config.interval.is_none() && end % 86400 != 0 {
            return;
        }
        let enqueue = |to: &[String], message: &[u8]| self.enqueue(queue, handoff, to, message);
        let reporter = outgoing::Reporter { hostname: &self.hostname, ours: &self.ours, dns, enqueue: &enqueue };
        tlsrpt_out::tick(counter, &reporter, end, period);
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What the checks of one message found, for [`evaluation`].
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The client's address.
    pub ip: std::net::IpAddr,
    /// The domain SPF checked (the MAIL FROM domain, or the HELO name for `<>`).
    pub spf_domain: &'a str,
    /// `mfrom` or `helo`.
    pub spf_scope: &'a str,
    /// SPF's result (`pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror`).
    pub spf: &'a str,
    /// Each DKIM signature's domain, selector and result.
    pub dkim: Vec<(String, String, &'a str)>,
    /// The From domain (where the DMARC record was found).
    pub header_from: &'a str,
    /// Aligned DKIM passed.
    pub dkim_aligned: bool,
    /// Aligned SPF passed.
    pub spf_aligned: bool,
    /// What was done: `none`, `quarantine` or `reject`.
    pub disposition: &'a str,
    /// The record's `ri` (seconds), if it says.
    pub ri: Option<u64>,
}

/// The evaluation of a message as a report row (count 1), now.
pub fn evaluation(o: Observed<'_>) -> Evaluation {
    use aggregate::{AuthResult, Row};
    let pass = |b: bool| if b { "pass" } else { "fail" }.to_owned();
    let domain = o.header_from.trim_end_matches('.').to_ascii_lowercase();
    Evaluation {
        at: unix(SystemTime::now()),
        interval_hours: evaluations::interval_hours(o.ri),
        row: Row {
            source_ip: o.ip.to_canonical().to_string(),
            count: 1,
            disposition: o.disposition.to_owned(),
            dkim: pass(o.dkim_aligned),
            spf: pass(o.spf_aligned),
            header_from: domain.clone(),
            envelope_from: o.spf_domain.to_ascii_lowercase(),
            dkim_results: o
                .dkim
                .into_iter()
                .map(|(d, s, r)| AuthResult { domain: d.to_ascii_lowercase(), detail: s, result: r.to_owned() })
                .collect(),
            spf_results: vec![AuthResult {
                domain: o.spf_domain.to_ascii_lowercase(),
                detail: o.spf_scope.to_owned(),
                result: o.spf.to_owned(),
            }],
        },
        domain,
    }
}
