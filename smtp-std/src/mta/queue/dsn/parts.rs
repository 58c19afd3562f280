//! The report's first two parts: the text for people and the `message/delivery-status` fields.

use super::*;

/// The status code to write: the given one if its class is 2, 4 or 5 (sub-codes above 999
/// become 0), else one from the diagnostic or the action.
pub(super) fn status_of(r: &RecipientReport) -> String {
    let (class, subject, detail) = r.status;
    let (class, subject, detail) = if matches!(class, 2 | 4 | 5) {
        (class, subject, detail)
    } else {
        r.diagnostic.as_deref().and_then(status_from_reply).unwrap_or(match r.action {
            Action::Failed => (5, 0, 0),
            Action::Delayed => (4, 0, 0),
            _ => (2, 0, 0),
        })
    };
    let sub = |n: u16| if n > 999 { 0 } else { n };
    format!("{class}.{}.{}", sub(subject), sub(detail))
}

/// The `message/delivery-status` body: per-message fields, then a block per recipient.
pub(super) fn delivery_status(report: &Report<'_>) -> String {
    let utf8 = report.smtputf8;
    let mut s = String::new();
    if let Some(envid) = report.envelope_id {
        fold_field(&mut s, "Original-Envelope-Id", &clean(envid, utf8, MAX_ADDRESS));
    }
    fold_field(&mut s, "Reporting-MTA", &format!("dns; {}", clean(report.reporting_mta, utf8, MAX_ADDRESS)));
    fold_field(&mut s, "Arrival-Date", &rfc5322_date(report.arrival));
    for r in report.recipients {
        s.push_str("\r\n");
        if let Some(orcpt) = &r.original_recipient {
            let (kind, address) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
            fold_field(&mut s, "Original-Recipient", &typed_address(kind, address, utf8));
        }
        fold_field(&mut s, "Final-Recipient", &typed_address("rfc822", &r.final_recipient, utf8));
        fold_field(&mut s, "Action", r.action.as_str());
        fold_field(&mut s, "Status", &status_of(r));
        if let Some(host) = r.remote_mta.as_deref().map(|h| clean(h, utf8, MAX_ADDRESS)).filter(|h| !h.is_empty()) {
            fold_field(&mut s, "Remote-MTA", &format!("dns; {}", host.trim_end_matches('.')));
        }
        if let Some(diag) = r.diagnostic.as_deref().map(|d| clean(d, utf8, MAX_DIAGNOSTIC)).filter(|d| !d.is_empty()) {
            let kind = if status_from_reply(&diag).is_some() { "smtp" } else { "X-smtp-std" };
            fold_field(&mut s, "Diagnostic-Code", &format!("{kind}; {diag}"));
        }
        if let Some(t) = r.last_attempt {
            fold_field(&mut s, "Last-Attempt-Date", &rfc5322_date(t));
        }
        if let (Action::Delayed, Some(t)) = (r.action, r.will_retry_until) {
            fold_field(&mut s, "Will-Retry-Until", &rfc5322_date(t));
        }
    }
    s
}

/// Whether `text` is an SMTP reply (`550 5.1.1 ...`, `451-...`) rather than our own words.
fn is_reply(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 3
        && matches!(b[0], b'2' | b'4' | b'5')
        && b[1..3].iter().all(u8::is_ascii_digit)
        && b.get(3).is_none_or(|c| matches!(c, b' ' | b'-'))
}

/// The first part, for people.
pub(super) fn human_text(report: &Report<'_>, attached: &Attached) -> String {
    let utf8 = report.smtputf8;
    let rs = report.recipients;
    let mut t = String::new();
    wrap(
        &mut t,
        "",
        &format!("This is the mail delivery system at {}.", clean(report.reporting_mta, utf8, MAX_ADDRESS)),
    );
    t.push_str("\r\n");
    let failed = rs.iter().any(|r| r.action == Action::Failed);
    let delayed = rs.iter().any(|r| r.action == Action::Delayed);
    let intro = match (failed, delayed) {
        (true, _) => {
            "Your message could not be delivered to one or more recipients. For those marked \
             \"failed\" below the mail system has given up; sending the message again to the same \
             address will most likely fail in the same way."
        }
        (false, true) => {
            "Your message has not been delivered yet to one or more recipients. The mail system \
             keeps trying; you need not send it again. You will be told if it fails for good."
        }
        (false, false) => "Your message was delivered as you asked to be told (a delivery status notification).",
    };
    wrap(&mut t, "", intro);
    for r in rs {
        t.push_str("\r\n");
        let who = clean(&r.final_recipient, utf8, MAX_ADDRESS);
        let what = match (r.action, r.will_retry_until) {
            (Action::Failed, _) => "delivery failed permanently.".to_string(),
            (Action::Delayed, Some(until)) => {
                format!("not delivered yet; the mail system keeps trying until {}.", rfc5322_date(until))
            }
            (Action::Delayed, None) => "not delivered yet; the mail system keeps trying.".to_string(),
            (Action::Delivered, _) => "delivered to the recipient's mailbox.".to_string(),
            (Action::Relayed, _) => "relayed to a system that does not send delivery reports.".to_string(),
            (Action::Expanded, _) => "delivered to an alias or list, which may send its own reports.".to_string(),
        };
        wrap(&mut t, "", &format!("<{who}>: {what}"));
        let host = r.remote_mta.as_deref().map(|h| clean(h, utf8, MAX_ADDRESS)).filter(|h| !h.is_empty());
        let diag = r.diagnostic.as_deref().map(|d| clean(d, utf8, MAX_DIAGNOSTIC)).filter(|d| !d.is_empty());
        match (host, diag) {
            // A reply of the remote server.
            (Some(host), Some(diag)) if is_reply(&diag) => {
                wrap(&mut t, "    ", &format!("The mail server {host} answered:"));
                wrap(&mut t, "    ", &diag);
            }
            // Our own words: no connection ("could not connect to mx.example.net [192.0.2.1]:25:
            // ..."), a timeout, a TLS failure; the host named if the text does not.
            (Some(host), Some(diag)) if diag.contains(host.as_str()) => {
                wrap(&mut t, "    ", &format!("Reason: {diag}"))
            }
            (Some(host), Some(diag)) => wrap(&mut t, "    ", &format!("Reason: {diag} (the mail server {host})")),
            (None, Some(diag)) => wrap(&mut t, "    ", &format!("Reason: {diag}")),
            (Some(host), None) => wrap(&mut t, "    ", &format!("The mail server was {host}.")),
            (None, None) => {}
        }
    }
    t.push_str("\r\n");
    let note = if attached.empty {
        "Your message was empty, so it is not attached.".to_string()
    } else if attached.full {
        "Your message is attached.".to_string()
    } else if attached.bytes.is_empty() {
        "Your message has no header block, so nothing of it is attached.".to_string()
    } else if let Some(limit) = attached.too_big {
        format!("Your message is larger than {limit} bytes, so only its headers are attached.")
    } else {
        "The headers of your message are attached.".to_string()
    };
    wrap(&mut t, "", &note);
    if attached.headers_cut {
        wrap(
            &mut t,
            "",
            &format!("Its header block is longer than {MAX_HEADER_BLOCK} bytes; only the start is attached."),
        );
    }
    t
}
