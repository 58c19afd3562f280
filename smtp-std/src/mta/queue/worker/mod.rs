//! Delivery workers: a dispatcher finds due entries, a bounded number of workers attempt them.
//!
//! One attempt of an entry ([`attempt`]):
//! 1. take the entry's lock (skip it if someone holds it), read it again;
//! 2. make the next attempt time durable (`attempts + 1`, `next_attempt` from the schedule)
//!    **before** anything is sent, so a crash never causes a burst of re-sends (on a full disk
//!    it is kept in memory and the attempt goes ahead: see [`super::unwritten`]). An entry handed
//!    over at submission ([`Handoff::attempt_now`]) was written with that time already (its
//!    first attempt's `next_attempt` is the submission's time plus the first retry wait), so
//!    its first attempt starts without another write;
//! 3. deliver the pending recipients: ours through the local store, the others to their MX
//!    hosts (or the smarthost), in one transaction per destination domain;
//! 4. queue the reports the sender asked for (failures, delays, successes: RFC 3461/3464),
//!    then write each recipient's outcome — or remove the entry when nothing is left (what a
//!    full disk refuses waits in memory, written first at the entry's next look).
//!
//! An entry or state found damaged on the way is moved into `corrupt/` ([`super::corrupt`]).
//!
//! A remote `250` followed by a crash before step 4 is the one duplicate possible (RFC 1047).

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::ClientConfig;

use super::dsn;
use super::notify::report;
use super::schedule::{seed, Schedule};
use super::store::{unix, Entry, Found, Queue, Recipient, State};
use super::unwritten::{OwedReport, Pending, Unwritten};

mod send;
use crate::client::{self, Envelope, SendOptions, TlsMode};
use crate::mta::accounts::{Directory, Resolution};
use crate::mta::auth::Dns;
use crate::mta::deliver::{self, MxOptions, SessionPool, Spool};
use crate::mta::mailbox::{deliver_file, Store};
use crate::mta::metrics;
use send::deliver_pending;

/// A relay every outbound message goes through (`[outbound] smarthost`).
#[derive(Debug, Clone)]
pub struct Smarthost {
    /// `host:port`.
    pub server: String,
    /// AUTH credentials.
    pub auth: Option<client::Auth>,
    /// TLS policy (required by default: STARTTLS, the certificate verified).
    pub tls: TlsMode,
    /// Trust anchors; `None`: Mozilla's roots.
    pub tls_config: Option<Arc<ClientConfig>>,
}

/// How mail leaves (`[outbound]`).
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Our EHLO name.
    pub hostname: String,
    /// The MX hosts' port (25; tests point it elsewhere).
    pub port: u16,
    /// The source address of outgoing connections.
    pub bind: Option<IpAddr>,
    /// Send everything through this relay instead of the MX hosts.
    pub smarthost: Option<Smarthost>,
    /// Bound on each network wait; `None`: RFC 5321's.
    pub timeout: Option<Duration>,
    /// DANE for the MX hosts (`[dns] dnssec`), when on.
    pub dane: Option<Arc<crate::mta::dane::Dane>>,
    /// MTA-STS for the MX hosts without DANE (`[outbound] mta_sts`), when on.
    pub sts: Option<Arc<crate::mta::sts::Sts>>,
    /// Where the outcomes of TLS under a policy are counted (TLS-RPT), when on.
    pub tls_outcomes: Option<Arc<dyn crate::mta::sts::TlsOutcomes>>,
}

/// Our own mailboxes, for recipients in our domains (bounces to our senders, say).
#[derive(Debug)]
pub struct Local {
    /// Accounts and aliases.
    pub directory: Arc<Directory>,
    /// Where their mail goes.
    pub store: Arc<Store>,
}

/// The settings of the next attempts: replaceable while the workers run (a reload,
/// [`Context::set_settings`]); an attempt keeps the ones it started with.
#[derive(Debug)]
pub struct Settings {
    /// Retries, lifetime, delay notice.
    pub schedule: Schedule,
    /// How mail leaves.
    pub outbound: Outbound,
    /// DNS for MX lookups.
    pub dns: Dns,
    /// Our mailboxes.
    pub local: Option<Local>,
    /// Sessions kept open for the next message to the same host.
    pub pool: Arc<SessionPool>,
}

/// Everything a worker needs.
#[derive(Debug)]
pub struct Context {
    /// The queue.
    pub queue: Queue,
    /// Entries to attempt now, and the dispatcher's wake-up.
    pub handoff: Handoff,
    /// What could not be written for want of space, kept until it can be.
    pub unwritten: Unwritten,
    settings: RwLock<Arc<Settings>>,
}

impl Context {
    /// The context of `queue`'s workers.
    pub fn new(queue: Queue, handoff: Handoff, settings: Settings) -> Self {
        Self { queue, handoff, unwritten: Unwritten::default(), settings: RwLock::new(Arc::new(settings)) }
    }

    /// The settings of an attempt starting now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The next attempts use `settings` (those under way finish with theirs).
    pub fn set_settings(&self, settings: Settings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }
}

/// Entries handed over for an attempt now, and wake-ups of the dispatcher: cloned by whoever
/// queues mail (the submission handler, the workers' own reports), drained by the
/// dispatcher of [`Workers`].
#[derive(Debug, Clone, Default)]
pub struct Handoff(Arc<(Mutex<Wanted>, Condvar)>);

#[derive(Debug, Default)]
struct Wanted {
    /// Entries written with their first attempt's time already durable: attempt them now.
    fresh: Vec<String>,
    /// Look through the whole queue now.
    scan: bool,
    stop: bool,
}

impl Handoff {
    fn with<T>(&self, f: impl FnOnce(&mut Wanted) -> T) -> T {
        let t = f(&mut self.0 .0.lock().unwrap_or_else(|p| p.into_inner()));
        self.0 .1.notify_all();
        t
    }

    /// Entry `id` was just queued with its next attempt time in the future (the submission's
    /// time plus the first retry wait, durable): a worker attempts it now, without writing the
    /// entry first. Should the process die before, it is tried at that time.
    pub fn attempt_now(&self, id: &str) {
        self.with(|w| w.fresh.push(id.to_owned()));
    }

    /// Looks for due entries now.
    pub fn wake(&self) {
        self.with(|w| w.scan = true);
    }

    /// Waits up to `timeout` for something to do: the fresh entries (taken), whether to
    /// scan, whether to stop.
    fn wait(&self, timeout: Duration) -> (Vec<String>, bool, bool) {
        let (lock, cv) = &*self.0;
        let mut w = lock.lock().unwrap_or_else(|p| p.into_inner());
        if w.fresh.is_empty() && !w.scan && !w.stop {
            w = cv.wait_timeout(w, timeout).unwrap_or_else(|p| p.into_inner()).0;
        }
        let scan = std::mem::take(&mut w.scan);
        (std::mem::take(&mut w.fresh), scan, w.stop)
    }

    /// The time to write as a fresh entry's next attempt: `now` plus the first retry wait.
    pub fn first_attempt_due(schedule: &Schedule, now: SystemTime) -> u64 {
        let seed = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos().into());
        unix(now) + schedule.delay(1, seed).as_secs().max(1)
    }
}

/// What one recipient's attempt gave.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    pub(super) state: Outcome3,
    pub(super) text: String,
    pub(super) remote_mta: Option<String>,
    pub(super) status: (u8, u16, u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome3 {
    Delivered,
    Deferred,
    Failed,
}

impl Outcome {
    pub(super) fn new(
        state: Outcome3,
        text: impl Into<String>,
        remote_mta: Option<String>,
        status: (u8, u16, u16),
    ) -> Self {
        Self { state, text: text.into(), remote_mta, status }
    }

    fn from_reply(reply: &client::Reply, host: Option<String>) -> Self {
        let state = match reply.code / 100 {
            2 => Outcome3::Delivered,
            4 => Outcome3::Deferred,
            _ => Outcome3::Failed,
        };
        let status = reply.enhanced.map_or(
            match state {
                Outcome3::Delivered => (2, 0, 0),
                Outcome3::Deferred => (4, 0, 0),
                Outcome3::Failed => (5, 0, 0),
            },
            |e| (e.class, e.subject, e.detail),
        );
        Self::new(state, reply.to_string(), host, status)
    }
}

/// The outcome of one [`attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempted {
    /// Someone else holds the entry, it is held, not due, or gone.
    Skipped,
    /// Recipients are left for a later attempt.
    Retry,
    /// Nothing is left: the entry was removed.
    Done,
}

/// Attempts entry `id` now if it is due (see the module notes).
pub fn attempt(ctx: &Context, id: &str, now: SystemTime) -> io::Result<Attempted> {
    attempt_entry(ctx, id, now, false)
}

/// [`attempt`]; `fresh`: the entry was handed over at submission ([`Handoff::attempt_now`]).
fn attempt_entry(ctx: &Context, id: &str, now: SystemTime, fresh: bool) -> io::Result<Attempted> {
    let q = &ctx.queue;
    let lock = match q.lock(id, false) {
        Ok(Some(lock)) => lock,
        Ok(None) => return Ok(Attempted::Skipped),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            ctx.unwritten.forget(id);
            return Ok(Attempted::Skipped);
        }
        Err(e) => return Err(e),
    };
    // A damaged entry (or state) is moved into corrupt/ here (one log line), never deleted.
    let disk = match q.read_repaired(id, &lock) {
        Found::Entry(e) => e,
        Found::Gone => {
            ctx.unwritten.forget(id);
            return Ok(Attempted::Skipped);
        }
        Found::Failed(e) | Found::EntryDamaged(e) | Found::StateDamaged(e) => return Err(e),
    };
    let mut p = ctx.unwritten.take(disk);
    let result = attempt_pending(ctx, &mut p, now, fresh);
    if result.as_ref().is_ok_and(|a| *a == Attempted::Done) {
        ctx.unwritten.forget(id);
    } else {
        ctx.unwritten.keep(p);
    }
    result
}

/// Writes what `p` owes, as far as the disk allows: its reports, then (all of them queued)
/// its state — or, nothing being left to do, removes the entry (which needs no space).
/// `Some(Done)` when the entry was removed.
fn settle(ctx: &Context, p: &mut Pending) -> io::Result<Option<Attempted>> {
    let s = ctx.settings();
    let (q, host) = (&ctx.queue, s.outbound.hostname.as_str());
    let first = Some((&ctx.handoff, &s.schedule));
    while let Some(r) = p.reports.first() {
        match report(q, host, first, &p.entry, &r.which, r.action, r.at, r.until) {
            Ok(()) => {
                ctx.unwritten.wrote();
                p.reports.remove(0);
            }
            Err(e) if ctx.unwritten.no_space(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    if p.entry.is_done() {
        q.recycle(&p.entry.id)?;
        return Ok(Some(Attempted::Done));
    }
    if p.entry != p.on_disk {
        match q.save(&p.entry) {
            Ok(()) => {
                ctx.unwritten.wrote();
                p.on_disk = p.entry.clone();
            }
            Err(e) if ctx.unwritten.no_space(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The attempt of [`attempt_entry`], on the entry as `p` holds it (its lock taken).
fn attempt_pending(ctx: &Context, p: &mut Pending, now: SystemTime, fresh: bool) -> io::Result<Attempted> {
    let s = ctx.settings();
    // What an earlier attempt could not write goes first.
    if p.owes() {
        if let Some(done) = settle(ctx, p)? {
            return Ok(done);
        }
    }
    let (id, t) = (p.entry.id.clone(), unix(now));
    let entry = &mut p.entry;
    // Handed over at submission, never attempted, and its next attempt time (durable since
    // the submission) still ahead: that is the time a crash from here on leaves.
    let fresh = fresh && entry.attempts == 0 && entry.next_attempt > t;
    if entry.held || (entry.next_attempt > t && !fresh) || entry.is_done() {
        return Ok(Attempted::Skipped);
    }
    entry.attempts += 1;
    if !fresh {
        // The next attempt time is durable before anything is sent — where the disk allows:
        // on a full one it is kept in memory, and the attempt goes ahead.
        entry.next_attempt = t + s.schedule.delay(entry.attempts, seed(&id)).as_secs().max(1);
        match ctx.queue.save(entry) {
            Ok(()) => {
                ctx.unwritten.wrote();
                p.on_disk = p.entry.clone();
            }
            Err(e) if ctx.unwritten.no_space(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let entry = &mut p.entry;

    let pending: Vec<usize> =
        entry.recipients.iter().enumerate().filter(|(_, r)| r.state == State::Pending).map(|(i, _)| i).collect();
    let started = std::time::Instant::now();
    let outcomes = deliver_pending(ctx, &s, entry, &pending);
    let took = started.elapsed();
    // The crash test (tests/queue.rs) dies here on purpose: after a remote 250, before the
    // outcome is written — the one window in which a recipient can get a second copy.
    if std::env::var_os("SMTP_STD_TEST_CRASH_AFTER_DELIVERY").is_some()
        && outcomes.iter().any(|o| o.state == Outcome3::Delivered)
    {
        tracing::warn!(id, "SMTP_STD_TEST_CRASH_AFTER_DELIVERY: aborting before the outcome is written");
        std::process::abort();
    }
    let age = Duration::from_secs(t.saturating_sub(entry.arrival));
    let expired = s.schedule.expired(age);

    let mut failed = Vec::new();
    let mut delivered = Vec::new();
    let mut delayed = Vec::new();
    for (&i, mut o) in pending.iter().zip(outcomes) {
        let r = &mut entry.recipients[i];
        r.attempts += 1;
        if o.state == Outcome3::Deferred && expired {
            o = Outcome::new(
                Outcome3::Failed,
                format!("delivery time expired after {} attempts; last: {}", r.attempts, o.text),
                o.remote_mta,
                (4, 4, 7),
            );
        }
        r.last_reply = Some(o.text.clone());
        r.remote_mta = o.remote_mta.clone();
        match o.state {
            Outcome3::Delivered => {
                tracing::info!(id, rcpt = r.address, reply = o.text, host = o.remote_mta.as_deref(), "delivered");
                r.state = State::Delivered;
                metrics::get().delivery(metrics::Delivery::Delivered, took);
                if r.wants("SUCCESS") {
                    delivered.push((i, o));
                }
            }
            Outcome3::Failed => {
                tracing::info!(id, rcpt = r.address, reply = o.text, host = o.remote_mta.as_deref(), "failed for good");
                r.state = State::Bounced;
                metrics::get().delivery(metrics::Delivery::Bounced, took);
                if r.wants("FAILURE") {
                    failed.push((i, o));
                }
            }
            Outcome3::Deferred => {
                tracing::info!(
                    id,
                    rcpt = r.address,
                    reply = o.text,
                    host = o.remote_mta.as_deref(),
                    next = entry.next_attempt,
                    "deferred"
                );
                metrics::get().delivery(metrics::Delivery::Deferred, took);
                if !entry.delay_notified && s.schedule.delay_notice_due(age) && r.wants("DELAY") {
                    delayed.push((i, o));
                }
            }
        }
    }
    // Reports first, then the state: a crash in between may report twice, never lose a
    // report. What the disk has no room for waits in memory (see super::unwritten).
    let until = UNIX_EPOCH + Duration::from_secs(entry.arrival) + s.schedule.lifetime;
    for (which, action, until) in [
        (failed, dsn::Action::Failed, None),
        (delivered, dsn::Action::Delivered, None),
        (delayed, dsn::Action::Delayed, Some(until)),
    ] {
        if !which.is_empty() {
            entry.delay_notified |= action == dsn::Action::Delayed;
            p.reports.push(OwedReport { which, action, at: now, until });
        }
    }
    Ok(settle(ctx, p)?.unwrap_or(Attempted::Retry))
}

/// Running workers; dropped or [`Workers::shutdown`], they finish their attempt and stop.
#[derive(Debug)]
pub struct Workers {
    handoff: Handoff,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A job for a worker: an entry id, and whether it was handed over at submission.
type Job = (String, bool);

impl Workers {
    /// Starts the dispatcher (looking for due entries every `scan`, when woken, and taking
    /// the entries handed over through the context's [`Handoff`]) and `workers` delivery
    /// threads.
    pub fn start(ctx: Arc<Context>, workers: usize, scan: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (jobs, queue_rx) = mpsc::sync_channel::<Job>(workers.max(1) * 2);
        let queue_rx = Arc::new(Mutex::new(queue_rx));
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut threads = Vec::new();
        for n in 0..workers.max(1) {
            let (ctx, rx, in_flight, stop) = (ctx.clone(), queue_rx.clone(), in_flight.clone(), stop.clone());
            let t = std::thread::Builder::new()
                .name(format!("queue-worker-{n}"))
                .spawn(move || worker(&ctx, &rx, &in_flight, &stop))
                .expect("spawn a queue worker");
            threads.push(t);
        }
        let handoff = ctx.handoff.clone();
        let d = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("queue-dispatcher".into())
                .spawn(move || dispatcher(&ctx, jobs, &in_flight, &stop, scan))
                .expect("spawn the queue dispatcher")
        };
        threads.push(d);
        Self { handoff, stop, threads }
    }

    /// Looks for due entries now.
    pub fn wake(&self) {
        self.handoff.wake();
    }

    /// Stops the workers after their current attempt.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.handoff.with(|w| w.stop = true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // A later set of workers on the same context starts afresh.
        self.handoff.with(|w| w.stop = false);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn dispatcher(
    ctx: &Context,
    jobs: SyncSender<Job>,
    in_flight: &Mutex<HashSet<String>>,
    stop: &AtomicBool,
    scan: Duration,
) {
    // Hands `id` to a worker unless one has it; waits while every worker is busy, so due
    // entries go out as workers free up. False once the workers are gone.
    let send = |id: String, fresh: bool| -> bool {
        if !in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone()) {
            return true;
        }
        jobs.send((id, fresh)).is_ok()
    };
    let mut next_scan = std::time::Instant::now();
    // Entries that could not be read at all, each logged once (damaged ones are moved aside).
    let mut unreadable: HashSet<String> = HashSet::new();
    while !stop.load(Ordering::SeqCst) {
        let (fresh, woken, stopping) = ctx.handoff.wait(next_scan.saturating_duration_since(std::time::Instant::now()));
        if stopping || stop.load(Ordering::SeqCst) {
            return;
        }
        for id in fresh {
            if !send(id, true) {
                return;
            }
        }
        if !woken && std::time::Instant::now() < next_scan {
            continue;
        }
        next_scan = std::time::Instant::now() + scan;
        let now = unix(SystemTime::now());
        match ctx.queue.survey(true) {
            Ok(survey) => {
                let now_unreadable: HashSet<String> = survey.unreadable.iter().map(|(id, _)| id.clone()).collect();
                for (id, e) in survey.unreadable {
                    if !unreadable.contains(&id) {
                        tracing::error!(id, "queue entry cannot be read (tried again at each look, logged once): {e}");
                    }
                }
                unreadable = now_unreadable;
                // On a full disk one entry with unwritten outcomes or reports is tried per look
                // (its write is the probe); once one succeeds, all of them are.
                let mut probe = ctx.unwritten.is_full();
                for e in survey.entries {
                    let (due, owes) = ctx.unwritten.due(&e, now);
                    let go = due || (owes && (!ctx.unwritten.is_full() || std::mem::take(&mut probe)));
                    if go && (stop.load(Ordering::SeqCst) || !send(e.id, false)) {
                        return;
                    }
                }
            }
            Err(e) => tracing::error!("reading the queue {}: {e}", ctx.queue.root().display()),
        }
    }
}

fn worker(ctx: &Context, jobs: &Mutex<Receiver<Job>>, in_flight: &Mutex<HashSet<String>>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv_timeout(Duration::from_millis(200));
        let (id, fresh) = match job {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if let Err(e) = attempt_entry(ctx, &id, SystemTime::now(), fresh) {
            tracing::error!(id, "queue attempt failed: {e}");
        }
        in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}
