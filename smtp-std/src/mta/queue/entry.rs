//! A queue entry's envelope: the sender, each recipient with its DSN options and its state,
//! the attempts so far and the next one (what `entries/<id>` holds after its first line, and
//! `state/<id>` once it changed).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What became of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not delivered yet: tried again at the next attempt.
    Pending,
    /// Delivered (a remote `250`, or stored in a local mailbox).
    Delivered,
    /// Failed for good (a `5xx`, or the lifetime ran out); the sender was told.
    Bounced,
}

/// One recipient of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address.
    pub address: String,
    /// Its state.
    pub state: State,
    /// RFC 3461 ORCPT as given (`rfc822;bob@example.org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    /// RFC 3461 NOTIFY as the sender gave it (`NEVER`, or `SUCCESS,FAILURE,DELAY` words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// The last reply or error, for people (`550 5.1.1 user unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<String>,
    /// The host that gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
    /// Attempts made for this recipient.
    #[serde(default)]
    pub attempts: u32,
}

impl Recipient {
    /// A pending recipient.
    pub fn new(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            state: State::Pending,
            orcpt: None,
            notify: None,
            last_reply: None,
            remote_mta: None,
            attempts: 0,
        }
    }

    /// Whether NOTIFY asks for (or, absent, defaults to) a report of `word`
    /// (`SUCCESS`, `FAILURE`, `DELAY`): without NOTIFY, failures and delays are reported.
    pub fn wants(&self, word: &str) -> bool {
        match &self.notify {
            None => word != "SUCCESS",
            Some(n) => n.split(',').any(|w| w.trim().eq_ignore_ascii_case(word)),
        }
    }
}

/// One queued message: envelope and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's id (file name).
    pub id: String,
    /// Envelope sender; `""` for `<>` (a bounce: never bounced itself).
    pub from: String,
    /// When we accepted it (Unix seconds).
    pub arrival: u64,
    /// When to try next (Unix seconds). Written before each attempt starts.
    pub next_attempt: u64,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// Held by the operator: no attempt until released.
    #[serde(default)]
    pub held: bool,
    /// RFC 3461 ENVID (decoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// RFC 3461 RET=FULL (else headers only).
    #[serde(default)]
    pub ret_full: bool,
    /// SMTPUTF8 was given.
    #[serde(default)]
    pub smtputf8: bool,
    /// REQUIRETLS (RFC 8689) was given: the message leaves only over TLS validated by DANE,
    /// with REQUIRETLS passed on, else it bounces (`5.7.30`). Absent in older entries: off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requiretls: bool,
    /// The delay notice went out.
    #[serde(default)]
    pub delay_notified: bool,
    /// The recipients.
    pub recipients: Vec<Recipient>,
}

impl Entry {
    /// A new entry from `from` to `recipients`, due now.
    pub fn new(from: &str, recipients: Vec<Recipient>, now: SystemTime) -> Self {
        let t = unix(now);
        Self {
            id: String::new(),
            from: from.to_owned(),
            arrival: t,
            next_attempt: t,
            attempts: 0,
            held: false,
            envid: None,
            ret_full: false,
            smtputf8: false,
            requiretls: false,
            delay_notified: false,
            recipients,
        }
    }

    /// The recipients still pending.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients.iter().filter(|r| r.state == State::Pending)
    }

    /// Whether nothing is left to do.
    pub fn is_done(&self) -> bool {
        self.pending().next().is_none()
    }
}

/// Unix seconds of `t`.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requiretls_is_written_only_when_set_and_read_back_from_older_entries() {
        let mut e = Entry::new("a@b.test", vec![Recipient::new("c@d.test")], UNIX_EPOCH);
        let old = toml::to_string(&e).unwrap();
        assert!(!old.contains("requiretls"), "{old}");
        assert!(!toml::from_str::<Entry>(&old).unwrap().requiretls);
        e.requiretls = true;
        let text = toml::to_string(&e).unwrap();
        assert!(text.contains("requiretls = true"), "{text}");
        assert_eq!(toml::from_str::<Entry>(&text).unwrap(), e);
    }
}
