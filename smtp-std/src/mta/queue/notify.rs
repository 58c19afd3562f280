//! Which delivery status notifications are sent, and to whom: never about a message from
//! `<>`; the recipients whose NOTIFY asks for it; queued from `<>` to the entry's sender, and
//! handed to a worker at once. The report's format is [`super::dsn`]'s.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::dsn;
use super::schedule::Schedule;
use super::store::{Entry, Queue, Recipient, State};
use super::worker::{Handoff, Outcome, Outcome3};

/// Fails every pending recipient of entry `id` now (`queue bounce`): the sender gets the
/// report (as the recipients' NOTIFY asks), the entry is removed. Waits for the entry's lock.
pub fn bounce(queue: &Queue, hostname: &str, id: &str, reason: &str, now: SystemTime) -> io::Result<usize> {
    let _lock = queue.lock(id, true)?;
    let mut entry = queue.load(id)?;
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
    let n = failed.len();
    report(queue, hostname, None, &entry, &failed, dsn::Action::Failed, now, None)?;
    queue.remove(id)?;
    Ok(n)
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
    let mut original = queue.message(&entry.id)?;
    let message = dsn::build(&report, &mut original.reader()?, now)?;
    let mut bounce = Entry::new("", vec![Recipient::new(&entry.from)], now);
    if let Some((_, schedule)) = handoff {
        bounce.next_attempt = Handoff::first_attempt_due(schedule, now);
    }
    let id = queue.submit(&mut bounce, &message)?;
    if let Some((h, _)) = handoff {
        h.attempt_now(&id);
    }
    tracing::info!(id = entry.id, report = id, to = entry.from, %action, "delivery status notification queued");
    Ok(())
}
