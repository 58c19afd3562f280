//! Delivery status notifications: the bounce, delay and success reports of RFC 3464, in the
//! `multipart/report` container of RFC 6522, as asked for with the DSN extension (RFC 3461).
//!
//! [`build`] turns a [`Report`] (one message, one or more recipients) and the original message
//! into a complete RFC 5322 message with CRLF line ends, ready to be queued from `<>`:
//!
//! ```text
//! From: Mail Delivery System <MAILER-DAEMON@mx.example.org>
//! To: <alice@example.org>
//! Subject: Undelivered Mail Returned to Sender
//! Auto-Submitted: auto-replied                                   (RFC 3834: no auto-replies)
//! Content-Type: multipart/report; report-type=delivery-status; boundary="..."
//!
//!   1. text/plain; charset=utf-8        what happened, for people
//!   2. message/delivery-status          Reporting-MTA, Arrival-Date, then per recipient
//!                                        Final-Recipient, Action, Status, Remote-MTA, ...
//!   3. text/rfc822-headers              the original's header block (RET=HDRS, the default)
//!      or message/rfc822                the whole original (RET=FULL, up to a size limit)
//! ```
//!
//! With [`Report::smtputf8`] the report uses the internationalised types of RFC 6533
//! (`message/global-delivery-status`, `message/global-headers`, `message/global`) and keeps
//! UTF-8 as it is. Without it every field is 7-bit: non-ASCII characters in values become
//! `\x{HHHH}` (RFC 6533's escape), non-ASCII addresses use the `utf-8` address type, and
//! 8-bit original headers are attached in base64. An 8-bit original attached in full stays
//! 8-bit (`message/rfc822` allows no other encoding); the report then says
//! `Content-Transfer-Encoding: 8bit` at the top, so the sender can pick `BODY=8BITMIME`.
//!
//! Values that come from the network (addresses, remote replies, host names) never break a
//! header line: line breaks and other control characters become spaces, long values are folded
//! and capped. Building never panics, whatever the input.
//!
//! Which reports to send (NOTIFY, never to `<>`) is the caller's decision.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::received::rfc5322_date;

/// How much of the original [`build`] attaches with [`Ret::Full`] (10 MiB); a larger message
/// is returned as its headers only, and the report says so.
pub const DEFAULT_MAX_ORIGINAL: usize = 10 * 1024 * 1024;

/// The most of an original's header block that is attached (64 KiB); a longer one is cut at
/// a line end, and the report says so.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Longest remote reply kept in `Diagnostic-Code` and in the text (characters).
const MAX_DIAGNOSTIC: usize = 4096;
/// Longest address or host name kept (characters).
const MAX_ADDRESS: usize = 1024;
/// Where header fields and text lines are folded or wrapped.
const WRAP: usize = 76;
/// The longest run without a space that is kept whole on one line (RFC 5322 allows 998).
const MAX_WORD: usize = 900;

mod fields;
mod original;
mod parts;

use fields::*;
use original::*;
use parts::*;

/// What happened to one recipient (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Not delivered, and we have stopped trying.
    Failed,
    /// Not delivered yet; we keep trying.
    Delayed,
    /// Delivered to the recipient's mailbox (a success report, NOTIFY=SUCCESS).
    Delivered,
    /// Handed on to a system that does not send delivery reports.
    Relayed,
    /// Delivered, and forwarded to further recipients (an alias or list) that do not report.
    Expanded,
}

impl Action {
    /// The field value: `failed`, `delayed`, `delivered`, `relayed` or `expanded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much of the original goes back with the report (the RET parameter of RFC 3461).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ret {
    /// The whole message (`RET=FULL`), as `message/rfc822`, up to a size limit.
    Full,
    /// Its header block only (`RET=HDRS`, and the default), as `text/rfc822-headers`.
    #[default]
    Headers,
}

/// The outcome for one recipient: one per-recipient block of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The address we tried (`bob@example.net`).
    pub final_recipient: String,
    /// The ORCPT parameter, xtext-decoded, as `type;address` (`rfc822;Bob@Example.org`).
    pub original_recipient: Option<String>,
    /// What happened.
    pub action: Action,
    /// The enhanced status code (RFC 3463), `(5, 1, 1)` for `5.1.1`. For a reply without
    /// one use [`status_from_reply`]; a class other than 2, 4 or 5 is replaced by one derived
    /// from the diagnostic or the action.
    pub status: (u8, u16, u16),
    /// The host that answered (`mx.example.net`).
    pub remote_mta: Option<String>,
    /// Its reply (`550 5.1.1 <bob@example.net>: user unknown`), lines joined with spaces. Text
    /// that does not start with a reply code (a local error) is reported as
    /// `Diagnostic-Code: X-smtp-std; ...` instead of `smtp; ...`.
    pub diagnostic: Option<String>,
    /// When we last tried.
    pub last_attempt: Option<SystemTime>,
    /// Until when we keep trying (written for [`Action::Delayed`] only).
    pub will_retry_until: Option<SystemTime>,
}

/// One report: about one message, to its envelope sender.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// Our host name (`Reporting-MTA`, the `From:` and `Message-ID:` domain).
    pub reporting_mta: &'a str,
    /// The original envelope sender, who gets the report. Must not be empty: a message from
    /// `<>` is never reported on.
    pub to: &'a str,
    /// The ENVID parameter, xtext-decoded (`Original-Envelope-Id`).
    pub envelope_id: Option<&'a str>,
    /// When the original arrived.
    pub arrival: SystemTime,
    /// The recipients reported on (at least one).
    pub recipients: &'a [RecipientReport],
    /// How much of the original to attach.
    pub ret: Ret,
    /// Whether the original used SMTPUTF8: the report then uses RFC 6533's types and UTF-8.
    pub smtputf8: bool,
}

/// The enhanced status code of an SMTP reply (`550 5.1.1 ...` gives `(5, 1, 1)`), or one
/// derived from its code when it has none (`5xx` → `5.0.0`, `4xx` → `4.0.0`, `2xx` →
/// `2.0.0`). `None` when the text does not start with a 2xx, 4xx or 5xx code.
///
/// ```
/// use smtp_std::mta::queue::dsn::status_from_reply;
/// assert_eq!(status_from_reply("550 5.1.1 <bob@example.net>: user unknown"), Some((5, 1, 1)));
/// assert_eq!(status_from_reply("451-greylisted\r\n451 try later"), Some((4, 0, 0)));
/// assert_eq!(status_from_reply("connection refused"), None);
/// ```
pub fn status_from_reply(reply: &str) -> Option<(u8, u16, u16)> {
    let reply = reply.trim_start();
    let code = reply.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let class = code.as_bytes()[0] - b'0';
    if !matches!(class, 2 | 4 | 5) {
        return None;
    }
    let rest = &reply[3..];
    let enhanced = rest.strip_prefix([' ', '-']).and_then(|r| r.split_whitespace().next()).and_then(|word| {
        let mut it = word.split('.');
        let (c, s, d) = (it.next()?, it.next()?, it.next()?);
        let number = |t: &str| {
            t.parse::<u16>().ok().filter(|_| (1..=3).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
        };
        (it.next().is_none() && c == &code[..1]).then_some((class, number(s)?, number(d)?))
    });
    Some(enhanced.unwrap_or((class, 0, 0)))
}

/// Builds the report on `report`, attaching (part of) `original`, dated `now`. The original
/// is read only as far as needed: at most [`MAX_HEADER_BLOCK`] for [`Ret::Headers`], at most
/// [`DEFAULT_MAX_ORIGINAL`] (plus one byte) for [`Ret::Full`].
///
/// Errors: reading `original` failed, no recipients, or an empty `to` (the null sender).
pub fn build(report: &Report<'_>, original: &mut dyn Read, now: SystemTime) -> io::Result<Vec<u8>> {
    build_with_limit(report, original, now, DEFAULT_MAX_ORIGINAL)
}

/// [`build`] with another limit on the original attached in full (bytes): past it, the
/// headers only.
pub fn build_with_limit(
    report: &Report<'_>,
    original: &mut dyn Read,
    now: SystemTime,
    max_original: usize,
) -> io::Result<Vec<u8>> {
    check(report)?;
    let attached = read_original(original, report.ret, max_original)?;
    let built = compose(report, &attached, now, &|_| false);
    let mut out = built.head;
    out.extend_from_slice(&built.tail);
    Ok(out)
}

/// A report whose attached original streams ([`build_streamed`]): `head`, then the original
/// with CRLF line ends ([`crate::mta::stream::CrlfReader`], `original` octets), then `tail`.
#[derive(Debug)]
pub struct Built {
    /// Everything before the attached original (the whole report when nothing streams).
    pub head: Vec<u8>,
    /// The octets of the original that go between `head` and `tail` (CRLF line ends).
    pub original: u64,
    /// Everything after it.
    pub tail: Vec<u8>,
}

impl Built {
    /// The report's size in octets.
    pub fn len(&self) -> u64 {
        self.head.len() as u64 + self.original + self.tail.len() as u64
    }

    /// Whether the report is empty (never: a report has a header).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The report, given a reader of the original from its start.
    pub fn reader<'a>(&'a self, original: impl Read + 'a) -> impl Read + 'a {
        let body = crate::mta::stream::CrlfReader::new(original).take(self.original);
        (&self.head[..]).chain(body).chain(&self.tail[..])
    }
}

/// An original a report is built on, read from its start as often as needed (once to measure
/// it, once to attach it).
pub trait Original {
    /// A reader of the whole original, from its start.
    fn open(&mut self) -> io::Result<Box<dyn Read + '_>>;
}

impl Original for &[u8] {
    fn open(&mut self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(*self))
    }
}

impl Original for crate::mta::queue::store::Message {
    fn open(&mut self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.reader()?))
    }
}

/// An [`Original`] that `F` opens, each time anew.
pub struct Reopen<F>(pub F);

impl<F: FnMut() -> io::Result<Box<dyn Read>>> Original for Reopen<F> {
    fn open(&mut self) -> io::Result<Box<dyn Read + '_>> {
        (self.0)()
    }
}

/// [`build`] without holding the original: with RET=FULL (and the original within
/// `max_original` octets) it is measured in one read and attached as [`Built::reader`]
/// streams it; otherwise its header block (at most [`MAX_HEADER_BLOCK`]) is all that is read.
pub fn build_streamed(
    report: &Report<'_>,
    original: &mut dyn Original,
    now: SystemTime,
    max_original: u64,
) -> io::Result<Built> {
    check(report)?;
    let attached = match report.ret {
        Ret::Full => {
            let scanned = scan_original(&mut *original.open()?, max_original)?;
            match scanned {
                Some(scan) if scan.len > 0 => {
                    let headers = read_original(&mut *original.open()?, Ret::Headers, 0)?;
                    Attached { full: true, streamed: Some(scan), ..headers }
                }
                Some(_) => read_original(&mut &b""[..], Ret::Full, 0)?,
                None => {
                    let mut headers = read_original(&mut *original.open()?, Ret::Headers, 0)?;
                    headers.too_big = Some(max_original as usize);
                    headers
                }
            }
        }
        Ret::Headers => read_original(&mut *original.open()?, Ret::Headers, 0)?,
    };
    // A boundary must not occur in the original: looked for as it streams (a candidate is
    // random, so the first one nearly always does).
    let original = std::cell::RefCell::new(original);
    let in_original = |b: &str| {
        let mut o = original.borrow_mut();
        o.open().and_then(|mut r| contains(&mut r, b.as_bytes())).unwrap_or(false)
    };
    let streams = attached.streamed.is_some();
    Ok(compose(report, &attached, now, if streams { &in_original } else { &|_| false }))
}

/// The checks every report passes first.
fn check(report: &Report<'_>) -> io::Result<()> {
    if report.recipients.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a delivery report needs a recipient"));
    }
    if report.to.chars().all(|c| matches!(c, '<' | '>') || c.is_whitespace()) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no delivery report to the null sender"));
    }
    Ok(())
}

/// The report on `report` with `attached`, dated `now`; `in_original` says whether a boundary
/// occurs in a streamed original.
fn compose(report: &Report<'_>, attached: &Attached, now: SystemTime, in_original: &dyn Fn(&str) -> bool) -> Built {
    let to: String = report.to.chars().filter(|c| !matches!(c, '<' | '>')).collect();
    let to = to.trim();
    let utf8 = report.smtputf8;
    let text = human_text(report, attached);
    let status = delivery_status(report);
    let (third_headers, third_body) = third_part(attached, utf8);
    let streamed = attached.streamed.as_ref();
    let boundary = choose_boundary(&[text.as_bytes(), status.as_bytes(), &third_body], random_hex, in_original);

    let any_8bit = [text.as_bytes(), status.as_bytes(), &third_body].iter().any(|p| !p.is_ascii())
        || streamed.is_some_and(|s| !s.ascii);

    let host = host_token(report.reporting_mta);
    let mut head = String::new();
    head.push_str("From: Mail Delivery System <MAILER-DAEMON@");
    head.push_str(&host);
    head.push_str(">\r\n");
    fold_field(&mut head, "To", &format!("<{}>", clean(to, utf8, MAX_ADDRESS)));
    let _ = write!(head, "Subject: {}\r\n", subject(report.recipients));
    let _ = write!(head, "Date: {}\r\n", rfc5322_date(now));
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let _ = write!(head, "Message-ID: <{secs}.{}@{host}>\r\n", random_hex());
    if let Some(id) = message_id(&attached.bytes) {
        let _ = write!(head, "In-Reply-To: {id}\r\nReferences: {id}\r\n");
    }
    head.push_str("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    let _ =
        write!(head, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n");
    if any_8bit {
        head.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    head.push_str("\r\nThis is a MIME-encapsulated message.\r\n");

    let cte = |s: &str| if s.is_ascii() { "7bit" } else { "8bit" };
    let mut out = head.into_bytes();
    let mut part = |headers: &str, body: &[u8]| {
        out.extend_from_slice(format!("\r\n--{boundary}\r\n{headers}\r\n").as_bytes());
        out.extend_from_slice(body);
    };
    part(
        &format!(
            "Content-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: {}\r\n",
            cte(&text)
        ),
        text.as_bytes(),
    );
    let status_type = if utf8 { "message/global-delivery-status" } else { "message/delivery-status" };
    part(
        &format!(
            "Content-Description: Delivery report\r\nContent-Type: {status_type}\r\n\
             Content-Transfer-Encoding: {}\r\n",
            cte(&status)
        ),
        status.as_bytes(),
    );
    let mut tail = Vec::new();
    let mut original = 0;
    match streamed {
        Some(s) => {
            part(&third_headers, b"");
            original = s.len;
            if !s.ends_in_line_end {
                tail.extend_from_slice(b"\r\n");
            }
        }
        None if !third_body.is_empty() => part(&third_headers, &third_body),
        None => {}
    }
    tail.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Built { head: out, original, tail }
}

/// A boundary that occurs in none of `parts`, from candidates made by `random`. After a few
/// collisions (a broken random source) a counter is appended, so it always ends.
fn choose_boundary(parts: &[&[u8]], mut random: impl FnMut() -> String, in_original: impl Fn(&str) -> bool) -> String {
    let mut n = 0u64;
    loop {
        n += 1;
        let mut candidate = format!("=_dsn_{}", random());
        if n > 4 {
            let _ = write!(candidate, "_{n}");
        }
        let b = candidate.as_bytes();
        if !parts.iter().any(|p| p.windows(b.len()).any(|w| w == b)) && !in_original(&candidate) {
            return candidate;
        }
    }
}

/// 24 hex digits from the operating system's random source (or, if that fails, from the clock,
/// the process id and a counter: unique, if not unpredictable).
fn random_hex() -> String {
    let mut bytes = [0u8; 12];
    if rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut bytes).is_err() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        bytes[..8].copy_from_slice(&(nanos ^ n.rotate_left(40)).to_be_bytes());
        bytes[8..].copy_from_slice(&std::process::id().to_be_bytes());
    }
    bytes.iter().fold(String::with_capacity(24), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The subject: the worst outcome among the recipients.
fn subject(recipients: &[RecipientReport]) -> &'static str {
    if recipients.iter().any(|r| r.action == Action::Failed) {
        "Undelivered Mail Returned to Sender"
    } else if recipients.iter().any(|r| r.action == Action::Delayed) {
        "Delayed Mail (still being retried)"
    } else {
        "Successful Mail Delivery Report"
    }
}

/// The `Message-ID` of the original's header block, when it is a plain `<...>`.
fn message_id(headers: &[u8]) -> Option<String> {
    let (block, _) = header_block(headers, true);
    let text = std::str::from_utf8(block).ok()?;
    let mut lines = text.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        let Some((name, value)) = line.split_once(':') else { continue };
        if !name.trim_end().eq_ignore_ascii_case("message-id") {
            continue;
        }
        let mut value = value.to_string();
        while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
            value.push_str(next);
        }
        let id = value.trim();
        let plain = id.len() <= 250
            && id.starts_with('<')
            && id.ends_with('>')
            && id.bytes().all(|b| b.is_ascii_graphic())
            && id[1..].find(['<', '>']) == Some(id.len() - 2);
        return plain.then(|| id.to_string());
    }
    None
}

/// A host name safe for `From:` and `Message-ID:`: characters outside letters, digits, `.`,
/// `-` and `_` (and `[]:` of an address literal) become `-`.
fn host_token(host: &str) -> String {
    let literal = host.trim().starts_with('[');
    let host: String = host
        .trim()
        .trim_end_matches('.')
        .chars()
        .take(253)
        .map(|c| if c.is_ascii_alphanumeric() || "-._".contains(c) || (literal && "[]:".contains(c)) { c } else { '-' })
        .collect();
    if host.is_empty() {
        "localhost".to_string()
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ORIGINAL: &[u8] = b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hi\r\n\
        Message-ID: <m1@example.org>\r\n\r\nthe body\r\n";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn failed(addr: &str) -> RecipientReport {
        RecipientReport {
            final_recipient: addr.into(),
            original_recipient: None,
            action: Action::Failed,
            status: (5, 1, 1),
            remote_mta: Some("mx.example.net".into()),
            diagnostic: Some(format!("550 5.1.1 <{addr}>: user unknown")),
            last_attempt: Some(at(1_700_000_100)),
            will_retry_until: None,
        }
    }

    fn report(recipients: &[RecipientReport]) -> Report<'_> {
        Report {
            reporting_mta: "mx.example.org",
            to: "alice@example.org",
            envelope_id: None,
            arrival: at(1_700_000_000),
            recipients,
            ret: Ret::Headers,
            smtputf8: false,
        }
    }

    fn make(r: &Report<'_>, original: &[u8]) -> String {
        let out = build(r, &mut &original[..], at(1_700_000_200)).unwrap();
        well_formed(&out, usize::MAX);
        String::from_utf8(out).unwrap()
    }

    /// CRLF only, and no line over 998 bytes before `original_at` (the attached original's own
    /// lines are its sender's business).
    fn well_formed(message: &[u8], original_at: usize) {
        for (i, &b) in message.iter().enumerate() {
            match b {
                b'\n' => assert!(i > 0 && message[i - 1] == b'\r', "bare LF at {i}"),
                b'\r' => assert_eq!(message.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
                _ => {}
            }
        }
        let head = &message[..original_at.min(message.len())];
        for line in head.split(|&b| b == b'\n') {
            assert!(line.len() <= 999, "line of {} bytes", line.len());
        }
    }

    /// The body parts (headers and body) between the boundaries.
    fn parts(message: &str) -> Vec<String> {
        let b = message.split("boundary=\"").nth(1).unwrap().split('"').next().unwrap();
        let mut parts: Vec<String> = message.split(&format!("\r\n--{b}")).skip(1).map(str::to_string).collect();
        assert_eq!(parts.pop().as_deref(), Some("--\r\n"));
        parts
    }

    fn unfold(s: &str) -> String {
        s.replace("\r\n ", " ").replace("\r\n\t", "\t")
    }

    #[test]
    fn bounce_with_headers() {
        let rs = [failed("bob@example.net")];
        let m = make(&report(&rs), ORIGINAL);
        assert!(
            m.starts_with("From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\nTo: <alice@example.org>\r\n")
        );
        for h in [
            "\r\nSubject: Undelivered Mail Returned to Sender\r\n",
            "\r\nDate: Tue, 14 Nov 2023 22:16:40 +0000\r\n",
            "\r\nAuto-Submitted: auto-replied\r\n",
            "\r\nMIME-Version: 1.0\r\n",
            "\r\nIn-Reply-To: <m1@example.org>\r\nReferences: <m1@example.org>\r\n",
            "\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"=_dsn_",
        ] {
            assert!(m.contains(h), "{h} in\n{m}");
        }
        assert!(m.contains("\r\nMessage-ID: <1700000200.") && m.contains("@mx.example.org>\r\n"));
        assert!(!m.contains("Content-Transfer-Encoding: 8bit"));
        let p = parts(&m);
        assert_eq!(p.len(), 3);
        assert!(
            p[0].starts_with("\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n")
        );
        let text = unfold(&p[0]);
        assert!(text.contains("<bob@example.net>: delivery failed permanently."), "{text}");
        assert!(p[0]
            .contains("The mail server mx.example.net answered:\r\n    550 5.1.1 <bob@example.net>: user unknown\r\n"));
        assert!(text.contains("The headers of your message are attached."));
        assert!(
            p[1].starts_with("\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n")
        );
        assert!(
            p[1].ends_with(
                "\r\n\r\nReporting-MTA: dns; mx.example.org\r\nArrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\n\
             Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\
             Remote-MTA: dns; mx.example.net\r\nDiagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: user \
             unknown\r\nLast-Attempt-Date: Tue, 14 Nov 2023 22:15:00 +0000\r\n"
            ),
            "{}",
            p[1]
        );
        assert!(p[2].starts_with(
            "\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n"
        ));
        assert!(p[2].ends_with("\r\n\r\nFrom: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hi\r\nMessage-ID: <m1@example.org>\r\n"));
    }

    #[test]
    fn network_values_cannot_add_header_lines() {
        let mut r = failed("bob@example.net\r\nBcc: evil@x");
        r.diagnostic = Some("550-5.7.1 first\r\n550-5.7.1 second\nBcc: evil@x\r\n550 5.7.1 \x00third\x1b".into());
        r.remote_mta = Some("mx.example.net\r\nX-Evil: 1".into());
        r.original_recipient = Some("rfc822;bob@x\rX-Evil: 2".into());
        let rs = [r];
        let mut rep = report(&rs);
        rep.to = "alice@example.org>\r\nBcc: evil@x";
        rep.envelope_id = Some("id\r\nX-Evil: 3");
        rep.reporting_mta = "mx.example.org\r\nX-Evil: 4";
        let m = make(&rep, ORIGINAL);
        for line in m.split("\r\n") {
            assert!(!line.starts_with("Bcc") && !line.starts_with("X-Evil"), "{line}");
        }
        let m = unfold(&m);
        assert!(
            m.contains("Diagnostic-Code: smtp; 550-5.7.1 first 550-5.7.1 second Bcc: evil@x 550 5.7.1 third\r\n"),
            "{m}"
        );
        assert!(m.contains("From: Mail Delivery System <MAILER-DAEMON@mx.example.org--X-Evil--4>\r\n"), "{m}");
        assert!(m.contains("\r\nTo: <alice@example.org Bcc: evil@x>\r\n"), "{m}");
    }

    #[test]
    fn long_values_are_folded_and_capped() {
        let mut r = failed("bob@example.net");
        let words = "word ".repeat(1200);
        r.diagnostic = Some(format!("550 5.0.0 {words}"));
        let mut r2 = failed("carol@example.net");
        r2.diagnostic = Some(format!("554 {}", "x".repeat(5000)));
        r2.remote_mta = Some("h".repeat(3000));
        let rs = [r, r2];
        let m = make(&report(&rs), ORIGINAL);
        let status = &parts(&m)[1];
        let mut long = 0;
        for line in status.split("\r\n") {
            if line.len() > 80 {
                long += 1;
                assert!(
                    !line.contains(' ') || line.starts_with(" x") || line.starts_with(" h") || line.contains(": "),
                    "{line}"
                );
            }
        }
        assert!(long > 0);
        let diag = unfold(status).lines().find(|l| l.starts_with("Diagnostic-Code: smtp; 550")).unwrap().to_string();
        assert!(diag.starts_with("Diagnostic-Code: smtp; 550 5.0.0 word word") && diag.ends_with("..."));
        assert!(diag.len() < 4200);
        // The 5000-byte token is split to keep lines short, and capped.
        assert!(unfold(status).contains("Diagnostic-Code: smtp; 554 xxx"));
    }

    #[test]
    fn status_codes() {
        assert_eq!(status_from_reply("550 5.1.1 user unknown"), Some((5, 1, 1)));
        assert_eq!(status_from_reply("  452-4.2.2 over quota\r\n452 4.2.2 really"), Some((4, 2, 2)));
        assert_eq!(status_from_reply("250 2.6.0 queued"), Some((2, 6, 0)));
        assert_eq!(status_from_reply("550 mailbox unavailable"), Some((5, 0, 0)));
        assert_eq!(status_from_reply("421"), Some((4, 0, 0)));
        assert_eq!(status_from_reply("550 4.1.1 class mismatch"), Some((5, 0, 0)));
        assert_eq!(status_from_reply("550 5.1234.1 too long"), Some((5, 0, 0)));
        assert_eq!(status_from_reply("550 5.1.1.1 too many"), Some((5, 0, 0)));
        assert_eq!(status_from_reply("550 5.1.+1"), Some((5, 0, 0)));
        assert_eq!(status_from_reply("550x5.1.1"), Some((5, 0, 0)));
        assert_eq!(status_from_reply("354 go on"), None);
        assert_eq!(status_from_reply("55"), None);
        assert_eq!(status_from_reply("5é0 x"), None);
        assert_eq!(status_from_reply("timed out"), None);
        let mut r = failed("b@x");
        r.status = (0, 0, 0);
        assert_eq!(status_of(&r), "5.1.1"); // from the diagnostic
        r.diagnostic = None;
        assert_eq!(status_of(&r), "5.0.0");
        r.action = Action::Delayed;
        assert_eq!(status_of(&r), "4.0.0");
        r.action = Action::Delivered;
        assert_eq!(status_of(&r), "2.0.0");
        r.status = (4, 1000, 7);
        assert_eq!(status_of(&r), "4.0.7");
    }

    #[test]
    fn delay_and_success_notices() {
        let mut r = failed("bob@example.net");
        r.action = Action::Delayed;
        r.status = (4, 4, 1);
        r.diagnostic = Some("451 4.4.1 try later".into());
        r.will_retry_until = Some(at(1_700_432_000));
        let rs = [r.clone()];
        let m = make(&report(&rs), ORIGINAL);
        assert!(m.contains("\r\nSubject: Delayed Mail (still being retried)\r\n"));
        let p = parts(&m);
        assert!(p[1].contains("Action: delayed\r\nStatus: 4.4.1\r\n"));
        assert!(p[1].contains("Will-Retry-Until: Sun, 19 Nov 2023 22:13:20 +0000\r\n"));
        assert!(p[0].replace("\r\n", " ").contains("keeps trying until Sun, 19 Nov 2023 22:13:20 +0000."));

        // Will-Retry-Until belongs to delayed recipients only.
        let mut f = failed("carol@example.net");
        f.will_retry_until = Some(at(1_700_432_000));
        let rs = [f, r];
        let m = make(&report(&rs), ORIGINAL);
        assert!(m.contains("\r\nSubject: Undelivered Mail Returned to Sender\r\n"));
        assert_eq!(m.matches("Will-Retry-Until").count(), 1);

        let mut d = failed("bob@example.net");
        d.action = Action::Delivered;
        d.status = (2, 0, 0);
        d.diagnostic = Some("250 2.0.0 Ok: queued as 123".into());
        let rs = [
            d.clone(),
            RecipientReport { action: Action::Relayed, ..d.clone() },
            RecipientReport { action: Action::Expanded, ..d },
        ];
        let m = make(&report(&rs), ORIGINAL);
        assert!(m.contains("\r\nSubject: Successful Mail Delivery Report\r\n"));
        for a in ["delivered", "relayed", "expanded"] {
            assert!(m.contains(&format!("\r\nAction: {a}\r\nStatus: 2.0.0\r\n")), "{a}");
        }
        assert!(unfold(&parts(&m)[0]).contains("<bob@example.net>: delivered to the recipient's mailbox."));
    }

    #[test]
    fn a_host_that_never_answered_is_not_said_to_have_answered() {
        let mut r = failed("bob@example.net");
        r.action = Action::Delayed;
        r.status = (4, 4, 1);
        r.diagnostic =
            Some("could not connect to mx.example.net [192.0.2.1]:25: Connection refused (os error 111)".into());
        let mut relay = failed("carol@example.net");
        relay.remote_mta = Some("relay.example.org:587".into());
        relay.diagnostic = Some("timeout waiting for the reply to DATA".into());
        let rs = [r, relay];
        // The text part with its wrapped lines joined.
        let text = parts(&make(&report(&rs), ORIGINAL))[0].replace("\r\n    ", " ");
        assert!(
            text.contains(
                " Reason: could not connect to mx.example.net [192.0.2.1]:25: Connection refused (os error 111)\r\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(" Reason: timeout waiting for the reply to DATA (the mail server relay.example.org:587)\r\n"),
            "{text}"
        );
        assert!(!text.contains("answered"), "{text}");
    }

    #[test]
    fn orcpt_and_envid() {
        let mut r = failed("bob@example.net");
        r.original_recipient = Some("rfc822;Bob@Example.org".into());
        let mut r2 = failed("carol@example.net");
        r2.original_recipient = Some("carol@example.net".into()); // no type: rfc822
        r2.remote_mta = None;
        r2.diagnostic = Some("connection refused".into());
        let rs = [r, r2];
        let mut rep = report(&rs);
        rep.envelope_id = Some("QQ314159");
        let m = make(&rep, ORIGINAL);
        let status = &parts(&m)[1];
        assert!(status.contains("\r\n\r\nOriginal-Envelope-Id: QQ314159\r\nReporting-MTA: dns; mx.example.org\r\n"));
        assert!(status.contains(
            "\r\n\r\nOriginal-Recipient: rfc822; Bob@Example.org\r\nFinal-Recipient: rfc822; bob@example.net\r\n"
        ));
        assert!(status.contains(
            "\r\n\r\nOriginal-Recipient: rfc822; carol@example.net\r\nFinal-Recipient: rfc822; carol@example.net\r\n"
        ));
        assert!(status.contains("Status: 5.1.1\r\nDiagnostic-Code: X-smtp-std; connection refused\r\n"));
        assert!(unfold(&parts(&m)[0]).contains("    Reason: connection refused"));
    }

    #[test]
    fn full_original() {
        let rs = [failed("bob@example.net")];
        let mut rep = report(&rs);
        rep.ret = Ret::Full;
        let lf = b"Subject: hi\nX: y\r\n\nline 1\nline 2\rline 3";
        let m = make(&rep, lf);
        let p = parts(&m);
        assert!(p[2].starts_with("\r\nContent-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"));
        assert!(p[2].ends_with("\r\n\r\nSubject: hi\r\nX: y\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"));
        assert!(unfold(&p[0]).contains("Your message is attached."));

        // Over the limit: the headers, and a note.
        let mut counted = Counting { inner: &ORIGINAL.repeat(10)[..], read: 0 };
        let out = build_with_limit(&rep, &mut counted, at(1_700_000_200), 100).unwrap();
        assert!(counted.read <= 101, "{}", counted.read);
        let m = String::from_utf8(out).unwrap();
        let p = parts(&m);
        assert!(p[2].contains("Content-Type: text/rfc822-headers\r\n"));
        assert!(p[2].ends_with("Subject: hi\r\nMessage-ID: <m1@example.org>\r\n") && !p[2].contains("the body"));
        assert!(unfold(&p[0]).contains("Your message is larger than 100 bytes, so only its headers are attached."));
    }

    struct Counting<'a> {
        inner: &'a [u8],
        read: usize,
    }

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n;
            Ok(n)
        }
    }

    #[test]
    fn header_block_is_bounded() {
        let rs = [failed("bob@example.net")];
        let big: Vec<u8> = (0..5000).flat_map(|i| format!("X-Header-{i}: some value here\r\n").into_bytes()).collect();
        let mut counted = Counting { inner: &big, read: 0 };
        let out = build(&report(&rs), &mut counted, at(1_700_000_200)).unwrap();
        assert!(counted.read <= MAX_HEADER_BLOCK);
        well_formed(&out, usize::MAX);
        let m = String::from_utf8(out).unwrap();
        let p = parts(&m);
        assert!(p[2].len() <= MAX_HEADER_BLOCK + 200);
        assert!(p[2].ends_with(": some value here\r\n"));
        assert!(unfold(&p[0]).contains("Its header block is longer than 65536 bytes; only the start is attached."));
    }

    #[test]
    fn empty_or_headerless_original() {
        let rs = [failed("bob@example.net")];
        let m = make(&report(&rs), b"");
        assert_eq!(parts(&m).len(), 2);
        assert!(unfold(&parts(&m)[0]).contains("Your message was empty, so it is not attached."));
        let m = make(&report(&rs), b"\r\nno headers at all\r\n");
        assert_eq!(parts(&m).len(), 2);
        assert!(unfold(&parts(&m)[0]).contains("has no header block"));
        // A message without a body is all header.
        let m = make(&report(&rs), b"Subject: only headers");
        assert!(parts(&m)[2].ends_with("\r\n\r\nSubject: only headers\r\n"));
    }

    #[test]
    fn non_ascii_in_a_7bit_report() {
        let mut r = failed("jösé@bücher.example");
        r.original_recipient = Some("rfc822;Jösé+x=y@bücher.example".into());
        r.diagnostic = Some("550 5.1.1 unknown user jösé".into());
        let rs = [r];
        let original = "Subject: héllo\r\nFrom: a@x\r\n\r\nbödy\r\n".as_bytes();
        let m = make(&report(&rs), original);
        assert!(m.is_ascii());
        assert!(m.contains("\r\nFinal-Recipient: utf-8; j\\x{F6}s\\x{E9}@b\\x{FC}cher.example\r\n"), "{m}");
        assert!(
            m.contains("\r\nOriginal-Recipient: utf-8; J\\x{F6}s\\x{E9}\\x{2B}x\\x{3D}y@b\\x{FC}cher.example\r\n"),
            "{m}"
        );
        assert!(m.contains("unknown user j\\x{00F6}s\\x{00E9}"));
        let p = parts(&m);
        assert!(
            p[2].contains("Content-Type: text/rfc822-headers; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n")
        );
        let b64: String = p[2].split("\r\n\r\n").nth(1).unwrap().split("\r\n").collect();
        let decoded = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        assert_eq!(decoded, "Subject: héllo\r\nFrom: a@x\r\n".as_bytes());
    }

    #[test]
    fn smtputf8_report() {
        let mut r = failed("jösé@bücher.example");
        r.diagnostic = Some("550 5.1.1 unknown user jösé".into());
        let rs = [r];
        let mut rep = report(&rs);
        rep.smtputf8 = true;
        let original = "Subject: héllo\r\nFrom: a@x\r\n\r\nbödy\r\n".as_bytes();
        let m = make(&rep, original);
        assert!(m.contains("\r\nContent-Transfer-Encoding: 8bit\r\n\r\nThis is a MIME"));
        let p = parts(&m);
        assert!(p[0].contains("Content-Transfer-Encoding: 8bit\r\n"));
        assert!(p[1].contains("Content-Type: message/global-delivery-status\r\nContent-Transfer-Encoding: 8bit\r\n"));
        assert!(p[1].contains("\r\nFinal-Recipient: utf-8; jösé@bücher.example\r\n"));
        assert!(p[1].contains("unknown user jösé"));
        assert!(p[2].contains(
            "Content-Type: message/global-headers\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSubject: héllo\r\n"
        ));
        rep.ret = Ret::Full;
        let m = make(&rep, original);
        assert!(parts(&m)[2]
            .contains("Content-Type: message/global\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSubject: héllo\r\n"));
        // An ASCII-only report of an SMTPUTF8 message says 7bit.
        let rs = [failed("bob@example.net")];
        let mut rep = report(&rs);
        rep.smtputf8 = true;
        let m = make(&rep, ORIGINAL);
        assert!(!m.contains("8bit"));
        assert!(m.contains("Content-Type: message/global-headers\r\nContent-Transfer-Encoding: 7bit\r\n"));
    }

    #[test]
    fn eight_bit_original_in_full_marks_the_report_8bit() {
        let rs = [failed("bob@example.net")];
        let mut rep = report(&rs);
        rep.ret = Ret::Full;
        let m = make(&rep, "Subject: x\r\n\r\nbödy\r\n".as_bytes());
        assert!(m.contains("\r\nContent-Transfer-Encoding: 8bit\r\n\r\nThis is a MIME"));
        assert!(parts(&m)[2].contains("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n"));
        assert!(parts(&m)[0].contains("Content-Transfer-Encoding: 7bit\r\n"));
    }

    #[test]
    fn boundary_never_in_the_parts() {
        let mut seq = ["aaa", "bbb"].into_iter();
        let b = choose_boundary(&[b"x", b"--=_dsn_aaa--"], || seq.next().unwrap_or("zzz").to_string(), |_| false);
        assert_eq!(b, "=_dsn_bbb");
        // A random source stuck on one value still ends.
        let b = choose_boundary(&[b"=_dsn_aaa"], || "aaa".to_string(), |_| false);
        assert_eq!(b, "=_dsn_aaa_5");
        assert_ne!(random_hex(), random_hex());
        assert_eq!(random_hex().len(), 24);
    }

    #[test]
    fn helpers() {
        assert_eq!(to_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(to_crlf(b"\r"), b"\r\n");
        assert_eq!(to_crlf(b""), b"");
        assert_eq!(header_block(b"A: 1\nB: 2\n\nbody", false), (&b"A: 1\nB: 2\n"[..], false));
        assert_eq!(header_block(b"A: 1\r\n\r\n", false), (&b"A: 1\r\n"[..], false));
        assert_eq!(header_block(b"A: 1\r\nB: par", false), (&b"A: 1\r\n"[..], true));
        assert_eq!(header_block(b"A: 1\r\nB: 2", true), (&b"A: 1\r\nB: 2"[..], false));
        assert_eq!(message_id(b"Subject: x\r\nMessage-Id:\r\n  <a.b@c>\r\n\r\n"), Some("<a.b@c>".into()));
        assert_eq!(message_id(b"message-id: <a b@c>\r\n"), None);
        assert_eq!(message_id(b"Message-ID: <a@b><c@d>\r\n"), None);
        assert_eq!(message_id(b"Message-ID: <>x\r\n"), None);
        assert_eq!(message_id(b"Message-ID: <\xff@b>\r\n"), None);
        assert_eq!(message_id(b"Subject: x\r\n\r\nMessage-ID: <in@body>\r\n"), None);
        assert_eq!(host_token(" mx.example.org. "), "mx.example.org");
        assert_eq!(host_token("a b<c>:25"), "a-b-c--25");
        assert_eq!(host_token("[IPv6:2001:db8::1]"), "[IPv6:2001:db8::1]");
        assert_eq!(host_token(""), "localhost");
        assert_eq!(clean("a\r\n\tb  c\u{0}", false, 100), "a b c");
        assert_eq!(clean("abcdef", false, 3), "abc...");
        assert_eq!(clean("ü", false, 3), "\\x{00FC}");
        assert_eq!(Action::Expanded.to_string(), "expanded");
        assert_eq!(Ret::default(), Ret::Headers);
    }

    #[test]
    fn refusals_and_read_errors() {
        let rs = [failed("bob@example.net")];
        let none: [RecipientReport; 0] = [];
        let e = build(&report(&none), &mut &ORIGINAL[..], at(0)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        for to in ["", "<>", "  "] {
            let mut rep = report(&rs);
            rep.to = to;
            assert_eq!(build(&rep, &mut &ORIGINAL[..], at(0)).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        }
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let e = build(&report(&rs), &mut Broken, at(0)).unwrap_err();
        assert_eq!(e.to_string(), "disk on fire");
    }

    /// Random field values and originals (CR, LF, NUL, non-ASCII, long runs) never panic and
    /// always give a well-formed message.
    #[test]
    fn never_panics() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let long = "x".repeat(300);
        let pieces = [
            "a",
            "@",
            " ",
            "\r",
            "\n",
            "\r\n",
            "\0",
            "é",
            "日本",
            "=",
            ";",
            "<",
            ">",
            "550 5.1.1",
            &long,
            "\u{2028}",
            "\t",
            "\\",
        ];
        let mut text = |n: u64| -> String { (0..n).map(|_| pieces[(next() % pieces.len() as u64) as usize]).collect() };
        for round in 0..300u64 {
            let len = round % 40;
            let r = RecipientReport {
                final_recipient: text(len),
                original_recipient: (round % 3 == 0).then(|| text(len)),
                action: [Action::Failed, Action::Delayed, Action::Delivered, Action::Relayed, Action::Expanded]
                    [(round % 5) as usize],
                status: ((round % 7) as u8, (round * 37 % 1200) as u16, (round * 91 % 70000) as u16),
                remote_mta: (round % 2 == 0).then(|| text(len / 2)),
                diagnostic: (round % 4 != 0).then(|| text(len * 3)),
                last_attempt: Some(at(round * 1_000_000_007)),
                will_retry_until: Some(at(u64::MAX / 2_000_000_000_000)),
            };
            let rs = [r.clone(), r];
            let (mta, to, envid) = (text(len / 3), format!("x{}", text(len)), text(len / 4));
            let original = text(len * 10).into_bytes();
            let rep = Report {
                reporting_mta: &mta,
                to: &to,
                envelope_id: Some(&envid),
                arrival: UNIX_EPOCH,
                recipients: &rs,
                ret: if round % 2 == 0 { Ret::Full } else { Ret::Headers },
                smtputf8: round % 3 == 1,
            };
            let out = build_with_limit(&rep, &mut &original[..], at(round), 200).unwrap();
            let original_at = out.windows(29).position(|w| w == b"Content-Description: Undelive").unwrap_or(out.len());
            well_formed(&out, original_at);
            if !rep.smtputf8 {
                assert!(out[..original_at].is_ascii());
            }
        }
    }

    /// The report [`build_streamed`] makes, read whole.
    fn make_streamed(r: &Report<'_>, original: &[u8], max: u64) -> String {
        let mut o: &[u8] = original;
        let built = build_streamed(r, &mut o, at(1_700_000_200), max).unwrap();
        let mut out = Vec::new();
        built.reader(original).read_to_end(&mut out).unwrap();
        assert_eq!(out.len() as u64, built.len());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn streamed_reports_have_the_same_parts() {
        let rs = [failed("bob@example.net")];
        let big: Vec<u8> = [&b"Subject: big\nX: \xc3\xa9\n\n"[..], &b"line =_dsn_ of text\n".repeat(60_000)].concat();
        let cases: [(&[u8], Ret); 8] = [
            (ORIGINAL, Ret::Full),
            (ORIGINAL, Ret::Headers),
            (b"Subject: hi\nX: y\r\n\nline 1\nline 2\rline 3", Ret::Full),
            (b"Subject: no end", Ret::Full),
            (b"", Ret::Full),
            (b"\r\nno header block\r\n", Ret::Full),
            (b"Subject: \xc3\xa9\r\n\r\n8-bit \xc3\xa9\r\n", Ret::Full),
            (&big, Ret::Full),
        ];
        for (original, ret) in cases {
            let mut rep = report(&rs);
            rep.ret = ret;
            let whole = build_with_limit(&rep, &mut &original[..], at(1_700_000_200), 2 << 20).unwrap();
            let whole = String::from_utf8(whole).unwrap();
            let streamed = make_streamed(&rep, original, 2 << 20);
            well_formed(streamed.as_bytes(), usize::MAX);
            // Boundaries and Message-IDs are random: the parts are the same.
            assert_eq!(
                parts(&whole),
                parts(&streamed),
                "{:?}",
                String::from_utf8_lossy(&original[..original.len().min(40)])
            );
            assert_eq!(
                whole.contains("Content-Transfer-Encoding: 8bit\r\n\r\nThis"),
                streamed.contains("Content-Transfer-Encoding: 8bit\r\n\r\nThis")
            );
        }
        // Past the limit: the headers, and the note, without reading the whole original twice.
        let mut rep = report(&rs);
        rep.ret = Ret::Full;
        let m = make_streamed(&rep, &big, 1000);
        assert!(
            unfold(&parts(&m)[0]).contains("Your message is larger than 1000 bytes, so only its headers are attached.")
        );
        assert!(parts(&m)[2].contains("Content-Type: text/rfc822-headers"));
    }
}
