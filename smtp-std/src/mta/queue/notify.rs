//! Which delivery status notifications are sent, and to whom: never about a message from
//! `<>`; the recipients whose NOTIFY asks for it; queued from `<>` to the entry's sender, and
//! handed to a worker at once. The report's format is [`super::dsn`]'s.

use std::io::{self, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::dsn;
use super::schedule::Schedule;
use super::store::{Entry, Found, Queue, Recipient, State};
use super::worker::{Handoff, Outcome, Outcome3};

/// Fails every pending recipient of entry `id` now (`queue bounce`): the sender gets the
/// report (as the recipients' NOTIFY asks), the entry is removed. Waits for the entry's lock.
///
/// A damaged entry (in `corrupt/`, or found damaged now and moved there) is bounced from
/// what can be read of it: its envelope (from its state, else the one at submission) and as
/// much of the message as is left. When no envelope can be read, the sender is unknown: an
/// [`io::ErrorKind::InvalidData`] error says so and the entry stays.
pub fn bounce(queue: &Queue, hostname: &str, id: &str, reason: &str, now: SystemTime) -> io::Result<usize> {
    let lock = match queue.lock(id, true) {
        Ok(lock) => lock,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if let Some(lock) = lock {
        match queue.read_repaired(id, &lock) {
            Found::Entry(mut entry) => {
                let n = fail_pending(queue, hostname, &mut entry, reason, now, &mut queue.message(id)?)?;
                queue.remove(id)?;
                return Ok(n);
            }
            // Moved into corrupt/ just now.
            Found::Gone => {}
            Found::Failed(e) | Found::EntryDamaged(e) | Found::StateDamaged(e) => return Err(e),
        }
    }
    let no_entry = || io::Error::new(io::ErrorKind::NotFound, format!("no queue entry {id}"));
    let c = queue.corrupt(id).filter(|c| !c.state_only()).ok_or_else(no_entry)?;
    let Some(mut entry) = c.envelope.clone() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "cannot bounce {id}: no envelope can be read ({}), so the sender is unknown; \
                 `smtp-std queue show {id}` prints what is left, `queue delete {id}` drops it",
                c.reason()
            ),
        ));
    };
    let reason = format!("{reason} (the queued copy was damaged)");
    // What is left of the message, opened again for each read of it.
    let mut left = dsn::Reopen(|| -> io::Result<Box<dyn Read>> {
        Ok(match c.message_reader()? {
            Some(m) => Box::new(m),
            None => Box::new(io::empty()),
        })
    });
    let n = fail_pending(queue, hostname, &mut entry, &reason, now, &mut left)?;
    queue.remove_corrupt(id)?;
    Ok(n)
}

/// Fails every pending recipient of `entry` and queues the report about them (`original`:
/// the message); how many were reported.
fn fail_pending(
    queue: &Queue,
    hostname: &str,
    entry: &mut Entry,
    reason: &str,
    now: SystemTime,
    original: &mut dyn dsn::Original,
) -> io::Result<usize> {
    let mut failed = Vec::new();
    for (i, r) in entry.recipients.iter_mut().enumerate() {
        if r.state == State::Pending {
            r.state = State::Bounced;
            let o = Outcome::new(Outcome3::Failed, reason, r.remote_mta.clone(), (5, 0, 0));
            if r.wants("FAILURE") {
                failed.push((i, o));
            }
        }
    }
    report_of(queue, hostname, None, entry, &failed, dsn::Action::Failed, now, None, original)?;
    Ok(failed.len())
}

/// Queues a report of `action` about `which` recipients to the entry's sender (never for a
/// message from `<>`). With `handoff`, handed over for an attempt now; without, due now (for
/// the next scan of a running server).
#[allow(clippy::too_many_arguments)]
pub(super) fn report(
    queue: &Queue,
    hostname: &str,
    handoff: Option<(&Handoff, &Schedule)>,
    entry: &Entry,
    which: &[(usize, Outcome)],
    action: dsn::Action,
    now: SystemTime,
    until: Option<SystemTime>,
) -> io::Result<()> {
    if which.is_empty() || entry.from.is_empty() {
        return Ok(());
    }
    let mut original = queue.message(&entry.id)?;
    report_of(queue, hostname, handoff, entry, which, action, now, until, &mut original)
}

/// [`report`] with the original message read from `original`.
#[allow(clippy::too_many_arguments)]
fn report_of(
    queue: &Queue,
    hostname: &str,
    handoff: Option<(&Handoff, &Schedule)>,
    entry: &Entry,
    which: &[(usize, Outcome)],
    action: dsn::Action,
    now: SystemTime,
    until: Option<SystemTime>,
    original: &mut dyn dsn::Original,
) -> io::Result<()> {
    if which.is_empty() || entry.from.is_empty() {
        return Ok(());
    }
    let recipients: Vec<dsn::RecipientReport> = which
        .iter()
        .map(|(i, o)| {
            let r = &entry.recipients[*i];
            dsn::RecipientReport {
                final_recipient: r.address.clone(),
                original_recipient: r.orcpt.clone(),
                action,
                status: if action == dsn::Action::Delivered { (2, 0, 0) } else { o.status },
                // `mx.example.net [192.0.2.1]`: the name is the MTA's (RFC 3464 2.3.5).
                remote_mta: o.remote_mta.as_deref().map(|h| h.split(" [").next().unwrap_or(h).to_owned()),
                diagnostic: Some(o.text.clone()),
                last_attempt: Some(now),
                will_retry_until: until,
            }
        })
        .collect();
    let report = dsn::Report {
        reporting_mta: hostname,
        to: &entry.from,
        envelope_id: entry.envid.as_deref(),
        arrival: UNIX_EPOCH + Duration::from_secs(entry.arrival),
        recipients: &recipients,
        ret: if entry.ret_full { dsn::Ret::Full } else { dsn::Ret::Headers },
        smtputf8: entry.smtputf8,
    };
    // The original is attached as it streams (from its entry), never held whole.
    let built = dsn::build_streamed(&report, original, now, dsn::DEFAULT_MAX_ORIGINAL as u64)?;
    let mut bounce = Entry::new("", vec![Recipient::new(&entry.from)], now);
    if let Some((_, schedule)) = handoff {
        bounce.next_attempt = Handoff::first_attempt_due(schedule, now);
    }
    let len = built.len();
    let id = queue.submit_from(&mut bounce, len, &mut built.reader(original.open()?))?;
    if let Some((h, _)) = handoff {
        h.attempt_now(&id);
    }
    tracing::info!(id = entry.id, report = id, to = entry.from, %action, "delivery status notification queued");
    Ok(())
}
