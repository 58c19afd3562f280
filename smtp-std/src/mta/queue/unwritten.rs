//! What the workers could not write yet because the disk is full: kept in memory, entry by
//! entry, and written at the next chance — so a full disk never stops delivery (delivering is
//! what frees space).
//!
//! - An attempt whose next attempt time cannot be made durable goes ahead; the time is kept
//!   here, and the dispatcher waits for it as for a durable one (no burst of re-sends). A
//!   crash meanwhile leaves the older time on disk: one attempt may come again, early.
//! - Outcomes and reports that cannot be written are kept here, in the order they must reach
//!   the disk (reports first, then the state): a recipient delivered is not tried again, a
//!   report is not lost; a crash meanwhile may send one recipient a second copy.
//! - A finished entry is removed by unlinking it: that needs no space.
//!
//! A full disk is logged once: when a first write fails for want of space, and when, a write
//! succeeding, nothing is owed any more — not at each write in between, nor each time the
//! room one entry's removal frees is taken again.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use super::dsn;
use super::store::Entry;
use super::worker::Outcome;

/// A report that could not be queued yet: about which recipients, what, and when.
#[derive(Debug, Clone)]
pub(super) struct OwedReport {
    pub(super) which: Vec<(usize, Outcome)>,
    pub(super) action: dsn::Action,
    pub(super) at: SystemTime,
    pub(super) until: Option<SystemTime>,
}

/// One entry as the worker holds it: as on disk, as it is now, and the reports owed.
#[derive(Debug)]
pub(super) struct Pending {
    /// The entry's state as it is on disk.
    pub(super) on_disk: Entry,
    /// Its state as it is now.
    pub(super) entry: Entry,
    /// Reports to queue before the state is written.
    pub(super) reports: Vec<OwedReport>,
}

impl Pending {
    /// Whether something is not written yet.
    pub(super) fn owes(&self) -> bool {
        !self.reports.is_empty() || self.entry != self.on_disk
    }
}

/// The entries with something unwritten, and whether the disk was last found full.
#[derive(Debug, Default)]
pub struct Unwritten {
    owed: Mutex<HashMap<String, Pending>>,
    /// The last write failed for want of space.
    full: AtomicBool,
    /// A full disk was logged, its end not yet.
    logged: AtomicBool,
}

impl Unwritten {
    fn owed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.owed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entry `disk` (as just read, under its lock) with what only memory knows of it. Changes
    /// made on disk by someone else since (`queue hold`, `release`, `retry`) win for whether it
    /// is held and when it is due; the recipients' outcomes are memory's.
    pub(super) fn take(&self, disk: Entry) -> Pending {
        match self.owed().remove(&disk.id) {
            Some(mut p) => {
                if p.on_disk != disk {
                    p.entry.held = disk.held;
                    p.entry.next_attempt = disk.next_attempt;
                    p.on_disk = disk;
                }
                p
            }
            None => Pending { entry: disk.clone(), on_disk: disk, reports: Vec::new() },
        }
    }

    /// Keeps what `p` owes, if anything.
    pub(super) fn keep(&self, p: Pending) {
        if p.owes() {
            self.owed().insert(p.entry.id.clone(), p);
        }
    }

    /// Forgets entry `id` (removed, or moved into `corrupt/`).
    pub(super) fn forget(&self, id: &str) {
        self.owed().remove(id);
    }

    /// For the dispatcher, of entry `disk` as read from disk: whether an attempt is due (when
    /// it is not held, not finished, and its next attempt time — memory's when newer — has
    /// come), and whether something of it is owed to the disk.
    pub(super) fn due(&self, disk: &Entry, now: u64) -> (bool, bool) {
        let owed = self.owed();
        let (held, next, done, owes) = match owed.get(&disk.id) {
            Some(p) if p.on_disk == *disk => (p.entry.held, p.entry.next_attempt, p.entry.is_done(), true),
            Some(p) => (disk.held, disk.next_attempt, p.entry.is_done(), true),
            None => (disk.held, disk.next_attempt, disk.is_done(), false),
        };
        (!held && next <= now && !done, owes)
    }

    /// Whether the last write found the disk full.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::SeqCst)
    }

    /// Whether `e` is a write failing for want of space (see [`crate::handler::is_storage_full`]);
    /// the first of a run is logged.
    pub(super) fn no_space(&self, e: &io::Error) -> bool {
        if !crate::handler::is_storage_full(e) {
            return false;
        }
        self.full.store(true, Ordering::SeqCst);
        if !self.logged.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                "queue: {e}: the disk is full; delivery goes on, and what cannot be written (next attempt \
                 times, outcomes, reports) is kept in memory until it can be (a restart meanwhile may repeat \
                 an attempt); free some space"
            );
        }
        true
    }

    /// A write succeeded: the end of a full disk is logged once nothing is owed any more.
    pub(super) fn wrote(&self) {
        self.full.store(false, Ordering::SeqCst);
        if self.logged.load(Ordering::SeqCst) && self.owed().is_empty() && self.logged.swap(false, Ordering::SeqCst) {
            tracing::info!("queue: the disk has room again, and everything kept in memory is written");
        }
    }
}
