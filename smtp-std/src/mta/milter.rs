//! Milters on the mail server: `[[milter]]` in the config (rspamd, OpenDKIM, OpenDMARC,
//! clamav-milter...), run on each message at the end of its data, before anything is stored,
//! queued or signed.
//!
//! ```toml
//! [[milter]]
//! address = "127.0.0.1:11332"   # or a Unix socket path ("/run/opendkim.sock", "unix:/...")
//! timeout = "30s"               # each connect, read and write (default 30s)
//! default_action = "tempfail"   # accept | reject | tempfail, when the milter fails
//! submission = false            # also for mail submitted with AUTH (default: no)
//! ```
//!
//! The milters run in the order given, each on the message as the ones before left it, over
//! **one connection per message** ([`crate::milter::check`]: the connect, HELO, MAIL and RCPT
//! stages are sent together at the end of the data, as Postfix can). The spooled message
//! streams to them; only its header block is held (at most
//! [`crate::mta::stream::MAX_HEADER_BLOCK`]). What each verdict does:
//!
//! | milter says | the client gets | the message |
//! |---|---|---|
//! | continue / accept | `250` (if storing works) | stored, with the header edits applied |
//! | reject | `550 5.7.1 Command rejected` | nothing kept |
//! | tempfail | `451 4.7.1 Service unavailable - try again later` | nothing kept |
//! | reply code | the milter's own reply (`554 5.7.1 Spam message rejected`) | nothing kept |
//! | discard | `250` | dropped (logged) |
//! | quarantine | `250` | filed in the mailbox's `.Junk` folder |
//! | shutdown, connection failure | `421 4.7.0` and the connection closes | nothing kept |
//! | fails (refused connection, timeout, broken packet) | `default_action`: `451 4.7.1` (tempfail), `550 5.7.1` (reject), or as if the milter were not there (accept) | |
//!
//! A refusal at RCPT (a recipient the SMTP session had already accepted) refuses the whole
//! message with that reply. Header edits (add, insert, change, delete) are applied to the
//! header block and the body streams from the spool file after it into a new spool file; a
//! replacement body is spooled to a file of its own first. A message the milter marked as
//! spam — a field `X-Spam: Yes` or `X-Spam-Flag: YES` that the milter added or set (rspamd's
//! "add header" action) — is filed in `.Junk` like a quarantined one (LMTP delivery: marked
//! `X-Spam-Flag: YES` for the LMTP server's Sieve rules). Recipient and sender changes are
//! logged and not applied.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::handler::{Decision, Session};
use crate::milter::{check, HeaderEdit, Message, MilterAddress, MilterError, Outcome, Verdict};
use crate::mta::maildir::Delivery;
use crate::mta::stream::{read_header_block, MAX_HEADER_BLOCK};

/// What a failing milter means for the message (Postfix's `milter_default_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Go on as if the milter were not there.
    Accept,
    /// Refuse the message (`550 5.7.1`).
    Reject,
    /// Refuse it for now (`451 4.7.1`): the client tries again later.
    #[default]
    Tempfail,
}

/// One `[[milter]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilterConfig {
    /// `host:port`, or a Unix socket path.
    #[serde(deserialize_with = "address")]
    pub address: MilterAddress,
    /// Bound on each connect, read and write (default 30 s).
    #[serde(default = "default_timeout", deserialize_with = "timeout")]
    pub timeout: Duration,
    /// When the milter fails.
    #[serde(default)]
    pub default_action: DefaultAction,
    /// Also for mail submitted with AUTH.
    #[serde(default)]
    pub submission: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn address<'de, D: Deserializer<'de>>(d: D) -> Result<MilterAddress, D::Error> {
    MilterAddress::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let t = crate::mta::config::parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)?;
    if t.is_zero() {
        return Err(serde::de::Error::custom("a milter timeout must be more than 0 (e.g. \"30s\")"));
    }
    Ok(t)
}

/// The milters of the server, in order.
#[derive(Debug, Clone)]
pub struct Milters {
    milters: Vec<MilterConfig>,
    hostname: String,
}

/// What the milters decided.
#[derive(Debug)]
pub enum MilterOutcome {
    /// Store the message (the spool now holds it with the edits); `junk`: into `.Junk`.
    Continue {
        /// Quarantined or marked as spam.
        junk: bool,
    },
    /// Answer this and keep nothing (a refusal, or `250` for a discarded message).
    Done(Decision),
}

/// One header field of the spooled message.
#[derive(Debug, Clone)]
struct Field {
    /// Its name, when the line is a field (`Name: value`).
    name: Option<Vec<u8>>,
    /// Where its value starts in `raw` (after the colon).
    value_at: usize,
    /// The field as written, continuation lines and line ends included.
    raw: Vec<u8>,
}

impl Field {
    fn new(name: &str, value: &[u8], leading_space: bool) -> Self {
        let mut raw = name.as_bytes().to_vec();
        raw.push(b':');
        if !leading_space {
            raw.push(b' ');
        }
        let value_at = name.len() + 1;
        // Folded lines as CRLF (the milter may join them with LF).
        for (i, &b) in value.iter().enumerate() {
            if b == b'\n' && (i == 0 || value[i - 1] != b'\r') {
                raw.push(b'\r');
            }
            raw.push(b);
        }
        raw.extend_from_slice(b"\r\n");
        Self { name: Some(name.as_bytes().to_vec()), value_at, raw }
    }

    fn is(&self, name: &str) -> bool {
        self.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The value after the colon, its line end left out.
    fn value(&self) -> &[u8] {
        let v = &self.raw[self.value_at..];
        v.strip_suffix(b"\r\n").or(v.strip_suffix(b"\n")).unwrap_or(v)
    }
}

/// Splits a header block (as [`read_header_block`] gives it) into fields.
fn fields(block: &[u8]) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    let mut rest = block;
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        match (line.first(), out.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => last.raw.extend_from_slice(line),
            _ => {
                let colon = line.iter().position(|&b| b == b':');
                let name = colon
                    .map(|c| line[..c].trim_ascii_end())
                    .filter(|n| !n.is_empty() && n.iter().all(|&b| b.is_ascii_graphic()));
                let value_at = colon.map_or(0, |c| c + 1);
                out.push(Field { name: name.map(<[u8]>::to_vec), value_at, raw: line.to_vec() });
            }
        }
    }
    out
}

/// Applies the edits to the fields; whether one of them marks the message as spam.
fn apply(fields: &mut Vec<Field>, edits: &[HeaderEdit], leading_space: bool) -> bool {
    let mut spam = false;
    let marks = |name: &str, value: &[u8]| {
        let v = String::from_utf8_lossy(value);
        let v = v.trim();
        (name.eq_ignore_ascii_case("X-Spam") && v.eq_ignore_ascii_case("yes"))
            || (name.eq_ignore_ascii_case("X-Spam-Flag") && v.eq_ignore_ascii_case("yes"))
    };
    for edit in edits {
        match edit {
            HeaderEdit::Add { name, value } => {
                spam |= marks(name, value);
                fields.push(Field::new(name, value, leading_space));
            }
            HeaderEdit::Insert { index, name, value } => {
                spam |= marks(name, value);
                // The index counts the fields the milter saw (the named ones).
                let at = fields
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.name.is_some())
                    .nth(*index as usize)
                    .map_or(fields.len(), |(i, _)| i);
                fields.insert(at, Field::new(name, value, leading_space));
            }
            HeaderEdit::Change { index, name, value } => {
                let nth = (*index).max(1) as usize - 1;
                let found = fields.iter().enumerate().filter(|(_, f)| f.is(name)).nth(nth).map(|(i, _)| i);
                match (found, value.is_empty()) {
                    (Some(i), true) => {
                        fields.remove(i);
                    }
                    (Some(i), false) => {
                        spam |= marks(name, value);
                        fields[i] = Field::new(name, value, leading_space);
                    }
                    (None, true) => {}
                    (None, false) => {
                        spam |= marks(name, value);
                        fields.push(Field::new(name, value, leading_space));
                    }
                }
            }
        }
    }
    spam
}

/// Removes a file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn copy_into(d: &mut Delivery, r: &mut dyn Read) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => d.write(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Why one milter gave nothing usable.
enum Failure {
    Milter(MilterError),
    Local(io::Error),
    TooLong,
}

impl Milters {
    /// The milters of the config, for the server `hostname` (macro `j`).
    pub fn new(hostname: &str, milters: Vec<MilterConfig>) -> Self {
        Self { milters, hostname: hostname.to_owned() }
    }

    /// Runs the milters that apply to this session (all of them for mail from outside;
    /// those with `submission = true` for authenticated sessions) on the spooled message `d`,
    /// which is replaced by its edited copy when a milter changed it.
    pub fn check(&self, session: &Session, d: &mut Delivery) -> MilterOutcome {
        let mut junk = false;
        for m in self.milters.iter().filter(|m| session.user.is_none() || m.submission) {
            let id = d.name().to_owned();
            match self.one(m, session, d) {
                Ok(Ok(j)) => junk |= j,
                Ok(Err(decision)) => return MilterOutcome::Done(decision),
                Err(failure) => {
                    let why = match &failure {
                        Failure::Milter(e) => e.to_string(),
                        Failure::Local(e) => format!("milter {}: {e}", m.address),
                        Failure::TooLong => format!("milter {}: header block too long to filter", m.address),
                    };
                    if let Failure::Local(e) = failure {
                        tracing::error!(id, "{why}");
                        return MilterOutcome::Done(Decision::io_error(&e));
                    }
                    tracing::warn!(id, action = ?m.default_action, "{why}");
                    match m.default_action {
                        DefaultAction::Accept => {}
                        DefaultAction::Reject => {
                            return MilterOutcome::Done(Decision::reply(550, Some((5, 7, 1)), "Service unavailable"))
                        }
                        DefaultAction::Tempfail => {
                            return MilterOutcome::Done(Decision::reply(
                                451,
                                Some((4, 7, 1)),
                                "Service unavailable - try again later",
                            ))
                        }
                    }
                }
            }
        }
        MilterOutcome::Continue { junk }
    }

    /// One milter: `Ok(Ok(junk))` to go on, `Ok(Err(decision))` when it decided.
    fn one(&self, m: &MilterConfig, session: &Session, d: &mut Delivery) -> Result<Result<bool, Decision>, Failure> {
        let id = d.name().to_owned();
        // A replacement body is spooled next to the message.
        let mut body_path = d.tmp_path().as_os_str().to_owned();
        body_path.push(".body");
        let mut reader = BufReader::with_capacity(64 * 1024, d.content().map_err(Failure::Local)?);
        let block = read_header_block(&mut reader, MAX_HEADER_BLOCK).map_err(Failure::Local)?;
        if block.cut {
            return Err(Failure::TooLong);
        }
        let mut fields = fields(&block.bytes);
        let headers: Vec<(&[u8], &[u8])> =
            fields.iter().filter_map(|f| f.name.as_deref().map(|n| (n, f.value()))).collect();
        let env = &session.envelope;
        let mut mail_args = Vec::new();
        if let Some(size) = env.declared_size {
            mail_args.push(format!("SIZE={size}"));
        }
        if env.eight_bit {
            mail_args.push("BODY=8BITMIME".to_owned());
        }
        if env.smtputf8 {
            mail_args.push("SMTPUTF8".to_owned());
        }
        let message = Message {
            hostname: self.hostname.clone(),
            daemon_name: "smtp-std".to_owned(),
            queue_id: id.clone(),
            client: Some(session.peer),
            client_name: format!("[{}]", session.peer.ip()),
            helo: session.helo.clone(),
            auth: session.user.clone(),
            sender: env.mail_from.clone().unwrap_or_default(),
            mail_args,
            rcpts: env.rcpt_to.clone(),
        };
        let body_file = TempFile(body_path.into());
        let mut spool: Option<File> = None;
        let mut sink = |chunk: &[u8]| -> io::Result<()> {
            if spool.is_none() {
                spool = Some(crate::mta::private::create_new(&body_file.0)?);
            }
            spool.as_mut().map_or(Ok(()), |f| f.write_all(chunk))
        };
        let started = std::time::Instant::now();
        let outcome: Outcome =
            check(&m.address, m.timeout, &message, &headers, &mut reader, &mut sink).map_err(Failure::Milter)?;
        drop(reader);
        let took = started.elapsed();
        match outcome.verdict {
            Verdict::Refuse(reply) => {
                tracing::info!(id, milter = %m.address, stage = ?outcome.stage, code = reply.code, reply = reply.text, ?took, "milter refused the message");
                return Ok(Err(Decision::Reply(reply)));
            }
            Verdict::Discard => {
                tracing::info!(id, milter = %m.address, stage = ?outcome.stage, ?took, "milter discarded the message");
                return Ok(Err(Decision::reply(250, Some((2, 0, 0)), format!("Ok: queued as {id}"))));
            }
            Verdict::Accept => {}
        }
        for (what, arg) in &outcome.envelope_changes {
            tracing::warn!(id, milter = %m.address, change = %what, arg, "milter envelope change not applied");
        }
        let spam = apply(&mut fields, &outcome.header_edits, outcome.leading_space);
        let junk = spam || outcome.quarantine.is_some();
        tracing::info!(
            id,
            milter = %m.address,
            edits = outcome.header_edits.len(),
            body_replaced = outcome.body_replaced,
            quarantine = outcome.quarantine.as_deref(),
            junk,
            ?took,
            "milter accepted the message"
        );
        if outcome.header_edits.is_empty() && !outcome.body_replaced {
            return Ok(Ok(junk));
        }
        // The edited message: the same prefix, the edited header block, the body (the
        // spooled one after its header block, or the replacement).
        let mut next = d.rewrite().map_err(Failure::Local)?;
        let mut write = || -> io::Result<()> {
            for f in &fields {
                next.write(&f.raw)?;
            }
            next.write(b"\r\n")?;
            if outcome.body_replaced {
                if let Some(mut f) = spool.take() {
                    f.flush()?;
                }
                copy_into(&mut next, &mut File::open(&body_file.0)?)
            } else {
                let mut r = BufReader::with_capacity(64 * 1024, d.content()?);
                read_header_block(&mut r, MAX_HEADER_BLOCK)?;
                copy_into(&mut next, &mut r)
            }
        };
        write().map_err(Failure::Local)?;
        *d = next;
        Ok(Ok(junk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(fields: &[Field]) -> String {
        fields.iter().map(|f| String::from_utf8_lossy(&f.raw).into_owned()).collect()
    }

    #[test]
    fn fields_and_edits() {
        let block = b"Received: from x\r\n\tby y\r\nSubject: hi\r\nX-Spam: no\r\nsubject: again\r\n\r\n";
        let mut f = fields(block);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].value(), b" from x\r\n\tby y");
        let edits = [
            HeaderEdit::Insert { index: 0, name: "X-Top".into(), value: b"1".to_vec() },
            HeaderEdit::Insert { index: 99, name: "X-End".into(), value: b"2\n\tfolded".to_vec() },
            HeaderEdit::Change { index: 2, name: "SUBJECT".into(), value: b"changed".to_vec() },
            HeaderEdit::Change { index: 1, name: "X-Spam".into(), value: Vec::new() },
            HeaderEdit::Change { index: 1, name: "X-Missing".into(), value: Vec::new() },
            HeaderEdit::Add { name: "X-Spam".into(), value: b"Yes".to_vec() },
        ];
        assert!(apply(&mut f, &edits, false));
        assert_eq!(
            text(&f),
            "X-Top: 1\r\nReceived: from x\r\n\tby y\r\nSubject: hi\r\nSUBJECT: changed\r\nX-End: 2\r\n\tfolded\r\nX-Spam: Yes\r\n"
        );
        let mut f = fields(b"A: 1\r\n\r\n");
        assert!(!apply(
            &mut f,
            &[HeaderEdit::Change { index: 3, name: "X-Spam-Flag".into(), value: b"NO".to_vec() }],
            true
        ));
        assert_eq!(text(&f), "A: 1\r\nX-Spam-Flag:NO\r\n");
        assert!(apply(
            &mut f,
            &[HeaderEdit::Change { index: 1, name: "x-spam-flag".into(), value: b" YES".to_vec() }],
            true
        ));
    }

    #[test]
    fn config() {
        let base = "data_dir = \"/x\"\n[listen]\nsmtp = [\"127.0.0.1:25\"]\n[[domain]]\nname = \"a.test\"\n";
        let parse = |extra: &str| crate::mta::config::Config::parse(&format!("{base}{extra}"), "/etc/s.toml".as_ref());
        let c = parse("[[milter]]\naddress = \"127.0.0.1:11332\"\n[[milter]]\naddress = \"/run/dkim.sock\"\ntimeout = \"5s\"\ndefault_action = \"accept\"\nsubmission = true\n").unwrap();
        assert_eq!(c.milters.len(), 2);
        assert_eq!(c.milters[0].address, MilterAddress::Tcp("127.0.0.1:11332".into()));
        assert_eq!(
            (c.milters[0].timeout, c.milters[0].default_action, c.milters[0].submission),
            (Duration::from_secs(30), DefaultAction::Tempfail, false)
        );
        assert_eq!(
            (c.milters[1].timeout, c.milters[1].default_action, c.milters[1].submission),
            (Duration::from_secs(5), DefaultAction::Accept, true)
        );
        for (extra, line, key) in [
            ("[[milter]]\naddress = \"localhost\"\n", 7, "milter[0].address"),
            ("[[milter]]\naddress = \"a:1\"\ntimeout = \"0s\"\n", 8, "milter[0].timeout"),
            ("[[milter]]\naddress = \"a:1\"\ndefault_action = \"shutdown\"\n", 8, "milter[0].default_action"),
            ("[[milter]]\naddress = \"a:1\"\nsubmision = true\n", 8, "milter[0].submision"),
            ("[[milter]]\ntimeout = \"1s\"\n", 6, "milter[0]"),
        ] {
            let e = parse(extra).unwrap_err();
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{extra}: {e}");
        }
    }
}
