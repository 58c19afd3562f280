//! The `Received:` trace header (RFC 5321 §4.4) and RFC 5322 dates, without a date crate.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::handler::Session;

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Civil date (year, month 1..=12, day 1..=31) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days_from_civil inverse, for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// An RFC 5322 §3.3 date-time in UTC, e.g. `Tue, 1 Jul 2003 10:52:37 +0000`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_secs(1_057_056_757);
/// assert_eq!(smtp_std::received::rfc5322_date(t), "Tue, 1 Jul 2003 10:52:37 +0000");
/// ```
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Replaces what could break a header line (controls, CR, LF) and caps the length.
fn clean(s: &str, max: usize) -> String {
    s.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The protocol keyword of RFC 3848 / RFC 6531: `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA`,
/// `UTF8SMTP`, `UTF8SMTPS`, ...
pub fn with_protocol(session: &Session) -> String {
    let mut p = String::from(match (session.esmtp, session.envelope.smtputf8) {
        (false, _) => "SMTP",
        (true, false) => "ESMTP",
        (true, true) => "UTF8SMTP",
    });
    if session.esmtp && session.tls {
        p.push('S');
    }
    if session.esmtp && session.user.is_some() {
        p.push('A');
    }
    p
}

/// The `Received:` header for the message of `session`'s current transaction, CRLF-terminated
/// and folded:
///
/// ```text
/// Received: from <helo> ([<ip>])
///         by <hostname> with ESMTP[S][A] id <id>
///         for <rcpt>; <RFC 5322 date>
/// ```
///
/// The client is named by its IP literal (no reverse DNS lookup). `for` is written only for a
/// single recipient, so that the other recipients of a message are not disclosed.
pub fn received_header(session: &Session, hostname: &str, id: &str, now: SystemTime) -> String {
    let mut h = String::with_capacity(256);
    let helo = session.helo.as_deref().map_or_else(|| "unknown".to_owned(), |s| clean(s, 255));
    let _ = write!(h, "Received: from {helo} ([{}])\r\n", session.peer.ip());
    let _ = write!(h, "\tby {} with {} id {}", clean(hostname, 255), with_protocol(session), clean(id, 255));
    if let [rcpt] = session.envelope.rcpt_to.as_slice() {
        let _ = write!(h, "\r\n\tfor <{}>", clean(rcpt, 300));
    }
    let _ = write!(h, "; {}\r\n", rfc5322_date(now));
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH + Duration::from_secs(951_782_400)), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH + Duration::from_secs(1_709_251_199)), "Thu, 29 Feb 2024 23:59:59 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH + Duration::from_secs(4_102_444_800)), "Fri, 1 Jan 2100 00:00:00 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH + Duration::from_secs(1_751_373_296)), "Tue, 1 Jul 2025 12:34:56 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH + Duration::from_secs(4_107_542_399)), "Sun, 28 Feb 2100 23:59:59 +0000");
    }

    #[test]
    fn header() {
        let mut s = Session::new(7, "192.0.2.1:4000".parse().unwrap(), "192.0.2.2:25".parse().unwrap(), false);
        s.helo = Some("client\r\nX-Injected: 1".into());
        s.esmtp = true;
        s.tls = true;
        s.envelope.rcpt_to.push("b@example.org".into());
        let h = received_header(&s, "mx.example.org", "abc", UNIX_EPOCH);
        assert_eq!(
            h,
            "Received: from client??X-Injected: 1 ([192.0.2.1])\r\n\tby mx.example.org with ESMTPS id abc\r\n\
             \tfor <b@example.org>; Thu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
    }
}
