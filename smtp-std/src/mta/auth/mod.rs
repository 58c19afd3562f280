//! Mail for your own domain: SPF, DKIM and DMARC on receive, DKIM signing, MX resolution and
//! the DNS records to publish.
//!
//! The checks themselves are [`mail_auth`]'s (SPF, DKIM verification and signing, DMARC with
//! alignment, the `Authentication-Results:` text); DNS is [`hickory_resolver`]'s, in the
//! version mail-auth uses. This module only drives them from blocking code and turns their
//! results into SMTP decisions.
//!
//! # Async from blocking code
//! mail-auth and hickory are async (tokio). Each [`Dns`] owns **one shared current-thread
//! tokio runtime** (`tokio` with only `rt`, `net`, `time`), created once, and every blocking
//! caller — each session thread of the server — runs its lookups with
//! [`tokio::runtime::Runtime::block_on`] on it. Tokio allows that from many threads at once
//! on a current-thread runtime: one caller drives the I/O driver, the others wait for their
//! own future and take over driving when it is released. One runtime (rather than one per
//! connection) is needed because the resolver's name-server connections and its cache live on
//! the runtime they were created on. Every lookup is bounded by the resolver's timeout and the
//! whole verification of a message by [`verify::CHECK_TIMEOUT`].
//!
//! # DNS failures are never a pass
//! hickory reports `SERVFAIL` and `REFUSED` answers as "no records found", which mail-auth 0.7
//! treats like `NXDOMAIN` (SPF `none`, no DMARC record). [`verify`] therefore asks again for
//! the names whose result was "none" and turns any answer other than `NXDOMAIN`/`NOERROR`
//! into a temporary failure: `451` with `4.7.24` (SPF), `4.7.5` (a DKIM key) or `4.7.0`
//! (DMARC), see [`verify::Lookup::status`].

pub mod dkim;
pub mod dns;
pub mod records;
pub mod verify;

pub use dkim::{sign, sign_stream, DkimAlgorithm, DkimKey};
pub use dns::{resolve_mx, Dns, DnsError, MxError, MxHost};
pub use verify::{Action, Lookup, MailAuthPolicy, SpfCheck, Verdict, Verifier};
