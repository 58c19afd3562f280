//! Sender ownership: the decision [`crate::mta::inbound`] takes at the end of data for every
//! message of an authenticated session (submission), whatever its recipients (ours, other
//! domains', forwarded) and whether it came with DATA or BDAT, before anything is stored,
//! queued or signed.
//!
//! The envelope sender is checked at MAIL already (`553 5.7.1`, not owned). Here the header
//! section of the spooled message is read ([`crate::mta::header`], at most
//! [`MAX_HEADER_SECTION`] octets, never the whole message) and every `From:` and `Sender:`
//! field parsed ([`crate::mta::address`]). The message goes on only if every mailbox of every
//! one of them is the user's own ([`Directory::owns`]: their address with any `+tag`, or an
//! alias that reaches them):
//!
//! | the header section | reply |
//! |---|---|
//! | every mailbox of every `From:` and `Sender:` owned, at least one in `From:` | accepted |
//! | a mailbox in a `From:` or `Sender:` the user does not own | `553 5.7.1` naming it and the user |
//! | a `From:` or `Sender:` that is not an address list (or not UTF-8) | `550 5.6.0` with the reason |
//! | a `From:` or `Sender:` that names no mailbox (`From: undisclosed:;`) | `550 5.6.0` |
//! | no `From:` at all | `550 5.6.0` (RFC 5322 requires one; we do not add it) |
//! | longer than [`MAX_HEADER_SECTION`] | `552 5.3.4` |
//! | a bare CR in it | `550 5.6.0` (readers would not agree on its fields) |
//! | the spool file unreadable | `451 4.3.0` |
//!
//! Several `From:` fields are each checked (every one of them must be owned), as are several
//! `Sender:` fields.

use std::fmt;
use std::io::Read;

use crate::handler::Decision;
use crate::mta::accounts::Directory;
use crate::mta::address::{parse_address_list, AddressError};
use crate::mta::header::{read_fields, HeaderError, MAX_HEADER_SECTION};
use crate::mta::mailbox::clean;

/// Why a submitted message is refused.
#[derive(Debug)]
pub enum Refusal {
    /// A mailbox in a `From:` or `Sender:` field that the user does not own.
    NotOwned {
        /// `From` or `Sender`.
        field: &'static str,
        /// The address (`local@domain`).
        address: String,
        /// The authenticated user.
        user: String,
    },
    /// A `From:` or `Sender:` field that is not an address list.
    Unparseable {
        /// `From` or `Sender`.
        field: &'static str,
        /// Where and why; `None`: the value is not UTF-8.
        error: Option<AddressError>,
    },
    /// A `From:` or `Sender:` field with no mailbox in it.
    NoMailbox {
        /// `From` or `Sender`.
        field: &'static str,
    },
    /// No `From:` field.
    NoFrom,
    /// The header section could not be read: too long, a bare CR, an I/O error.
    Header(HeaderError),
}

impl Refusal {
    /// The reply to the end of data (see the module notes).
    pub fn reply(&self) -> Decision {
        let (code, status) = match self {
            Refusal::NotOwned { .. } => (553, (5, 7, 1)),
            Refusal::Header(HeaderError::TooLong { .. }) => (552, (5, 3, 4)),
            Refusal::Header(HeaderError::Io(_)) => return smtp_proto::Reply::LOCAL_ERROR.into(),
            _ => (550, (5, 6, 0)),
        };
        Decision::reply(code, Some(status), self.to_string())
    }
}

/// At most this many characters of an address in a reply.
const SHOWN: usize = 200;

fn shown(address: &str) -> String {
    let c = clean(address);
    match c.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{}...", &c[..i]),
        None => c,
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotOwned { field, address, user } => {
                write!(f, "{field}: <{}> rejected: not owned by user {}", shown(address), shown(user))
            }
            Refusal::Unparseable { field, error: Some(e) } => {
                write!(f, "{field}: header field not understood ({e}): refused for submission")
            }
            Refusal::Unparseable { field, error: None } => {
                write!(f, "{field}: header field not UTF-8: refused for submission")
            }
            Refusal::NoMailbox { field } => write!(f, "{field}: header field names no mailbox: refused for submission"),
            Refusal::NoFrom => f.write_str("No From: header field (RFC 5322 requires one): refused for submission"),
            Refusal::Header(HeaderError::TooLong { limit }) => {
                write!(f, "Header section longer than {limit} octets: refused for submission")
            }
            Refusal::Header(HeaderError::BareCr) => {
                f.write_str("Bare CR in the header section: refused for submission")
            }
            Refusal::Header(e @ HeaderError::Io(_)) => write!(f, "{e}"),
        }
    }
}

/// Checks the `From:` and `Sender:` fields of `message` (the spooled content, read from its
/// start, only as far as its header section) against what `user` owns in `directory`.
pub fn check(directory: &Directory, user: &str, message: impl Read) -> Result<(), Refusal> {
    let fields = read_fields(message, &["From", "Sender"], MAX_HEADER_SECTION).map_err(Refusal::Header)?;
    let mut from_seen = false;
    for f in &fields {
        let field = if f.name.eq_ignore_ascii_case("from") { "From" } else { "Sender" };
        from_seen |= field == "From";
        let value = std::str::from_utf8(&f.value).map_err(|_| Refusal::Unparseable { field, error: None })?;
        let mailboxes = parse_address_list(value).map_err(|e| Refusal::Unparseable { field, error: Some(e) })?;
        if mailboxes.is_empty() {
            return Err(Refusal::NoMailbox { field });
        }
        if let Some(m) = mailboxes.iter().find(|m| !directory.owns(user, &m.addr_spec())) {
            return Err(Refusal::NotOwned { field, address: m.addr_spec(), user: user.to_owned() });
        }
    }
    if from_seen {
        Ok(())
    } else {
        Err(Refusal::NoFrom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mta::config::DomainConfig;

    fn directory() -> Directory {
        let mut aliases = std::collections::BTreeMap::new();
        aliases.insert("sales".to_owned(), vec!["alice@a.test".to_owned(), "bob@a.test".to_owned()]);
        aliases.insert("info".to_owned(), vec!["bob@a.test".to_owned()]);
        let d =
            DomainConfig { name: "a.test".into(), catch_all: Some(vec!["alice@a.test".into()]), aliases, dkim: None };
        Directory::with_accounts(vec![d], ["alice@a.test", "bob@a.test"])
    }

    fn verdict(header: &str) -> Result<(), String> {
        let message = format!("Received: from x by y\r\n{header}\r\nSubject: s\r\n\r\nFrom: body@b.test\r\n");
        check(&directory(), "alice@a.test", message.as_bytes()).map_err(|r| {
            let Decision::Reply(reply) = r.reply() else { panic!("accepted") };
            format!("{} {}", reply.code, reply.text)
        })
    }

    #[test]
    fn owned_addresses_pass() {
        for h in [
            "From: alice@a.test",
            "From: Alice Liddell <alice@a.test>",
            "From: \"Liddell, Alice\" <Alice@A.TEST> (me)",
            "From: alice+news@a.test",
            "From: sales@a.test",
            "From: \"alice\"@a.test",
            "From: alice@a.test\r\nSender: sales@a.test",
            "From: team: alice@a.test, Sales <sales@a.test>;",
            "From: alice@a.test, sales@a.test",
            "from: alice@a.test\r\nFROM: alice+x@a.test",
            "From: Alice\r\n <alice@a.test>",
        ] {
            assert_eq!(verdict(h), Ok(()), "{h}");
        }
    }

    #[test]
    fn each_refusal() {
        let cases = [
            ("From: bob@a.test", "553 From: <bob@a.test> rejected: not owned by user alice@a.test"),
            ("From: info@a.test", "553 From: <info@a.test> rejected: not owned by user alice@a.test"),
            ("From: nobody@a.test", "553 From: <nobody@a.test> rejected"),
            ("From: bob@a.test (<alice@a.test>)", "553 From: <bob@a.test> rejected"),
            ("From: bob@a.test, <alice@a.test>", "553 From: <bob@a.test> rejected"),
            ("From: <alice@a.test>, bob@a.test", "553 From: <bob@a.test> rejected"),
            ("From: Alice <alice@a.test>\r\nFrom: bob@a.test", "553 From: <bob@a.test> rejected"),
            ("From: alice@a.test\r\nSender: bob@a.test", "553 Sender: <bob@a.test> rejected"),
            ("From: team: alice@a.test, bob@b.test;", "553 From: <bob@b.test> rejected"),
            ("From: alice@a.test\r\n ,bob@a.test", "553 From: <bob@a.test> rejected"),
            ("From: \"alice@a.test\" <bob@a.test>", "553 From: <bob@a.test> rejected"),
            ("From: alice@a.test bob@a.test", "550 From: header field not understood (expected ',' between"),
            ("From: alice@a.test (", "550 From: header field not understood (comment not closed"),
            ("From: alice@a.test\r\nSender: <alice@a.test", "550 Sender: header field not understood"),
            ("From: alice@a.test\r\nSender: ", "550 Sender: header field names no mailbox"),
            ("From: undisclosed:;", "550 From: header field names no mailbox"),
            ("From: <@relay.test:alice@a.test>", "550 From: header field not understood (obsolete source route"),
            ("To: alice@a.test", "550 No From: header field"),
            ("Sender: alice@a.test", "550 No From: header field"),
        ];
        for (h, want) in cases {
            let got = verdict(h).expect_err(h);
            assert!(got.starts_with(want), "{h}: {got}");
        }
        let latin1 = b"From: \xe9@a.test\r\n\r\n";
        let r = check(&directory(), "alice@a.test", &latin1[..]).unwrap_err();
        assert_eq!(r.to_string(), "From: header field not UTF-8: refused for submission");
    }

    #[test]
    fn header_problems() {
        let bare_cr = b"Subject: x\r\r\nFrom: bob@a.test\r\nFrom: alice@a.test\r\n\r\n";
        let r = check(&directory(), "alice@a.test", &bare_cr[..]).unwrap_err();
        assert_eq!(r.to_string(), "Bare CR in the header section: refused for submission");
        let mut long = b"From: alice@a.test\r\n".to_vec();
        while long.len() as u64 <= MAX_HEADER_SECTION {
            long.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        long.extend_from_slice(b"\r\nbody\r\n");
        let r = check(&directory(), "alice@a.test", &long[..]).unwrap_err();
        let Decision::Reply(reply) = r.reply() else { panic!() };
        assert_eq!(reply.code, 552);
        assert_eq!(reply.text, "Header section longer than 262144 octets: refused for submission");
        // A very long foreign address is shortened in the reply.
        let huge = format!("From: {}@b.test\r\n\r\n", "x".repeat(5000));
        let text = check(&directory(), "alice@a.test", huge.as_bytes()).unwrap_err().to_string();
        assert!(text.len() < 300 && text.contains("...> rejected"), "{text}");
    }
}
