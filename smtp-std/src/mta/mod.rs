//! The mail server (cargo feature `mta`, on by default): one application of the binding, for
//! the people of a domain. `smtp-std serve --config FILE` is [`mailserver::MailServer`].
//!
//! Nothing in the binding (the crate's top-level modules) imports anything from here; with
//! `default-features = false` this module and its dependencies (argon2, bcrypt, sha-crypt,
//! serde, toml, mail-auth, hickory-resolver, tokio, prometheus-client) are not built at all.
//!
//! Its parts, each a module of its own:
//!
//! | module | what it does |
//! |---|---|
//! | [`config`] | the TOML file, validated with file, line and key |
//! | [`accounts`] | users (Dovecot passwd-file, hashed), aliases, subaddressing, catch-all: [`accounts::Directory::resolve`] |
//! | [`mailbox`], [`maildir`] | local delivery: a Maildir per account, or LMTP to Dovecot |
//! | [`inbound`] | the SMTP decisions for mail from outside and from our accounts |
//! | [`milter`] | `[[milter]]`: rspamd, OpenDKIM... on each message before it is stored |
//! | [`sender`] | sender ownership of submitted mail: MAIL FROM, every `From:`, `Sender:` |
//! | [`header`], [`address`] | a message's header fields from its spool file; RFC 5322 address lists |
//! | [`queue`] | the durable outbound queue: store, schedule, workers, delivery status reports |
//! | [`deliver`] | delivery to the recipients' MX hosts (DNS, then the binding's client) |
//! | [`dane`] | DANE outbound (RFC 7672): validated TLSA records and the certificate check they make |
//! | [`stream`] | a spooled message read without holding it: its header block, CRLF lines |
//! | [`srs`] | the Sender Rewriting Scheme for forwarded mail |
//! | [`spam`] | DNS blocklists and allow lists, greylisting, spam verdicts to `.Junk` |
//! | [`reports`] | DMARC aggregate reports received and sent, TLS reports received (`[reports]`) |
//! | [`space`] | room on the disk: `452 4.3.1` at MAIL below `[limits] min_free_space` |
//! | [`auth`] | SPF, DKIM, DMARC, DKIM signing, the DNS records to publish |
//! | [`private`] | files 0600 and directories 0700 under `data_dir`, whatever the umask |
//! | [`privileges`] | the drop to an ordinary user after binding the ports |
//! | [`metrics`] | Prometheus counters and gauges, `GET /metrics` on `[listen] metrics` |
//! | [`mailserver`] | all of it put together: listeners, handler, queue workers, signals |
//! | [`reload`] | `SIGHUP`: the config read again and swapped in whole, or refused whole; certificate renewals |
//! | [`control`] | the running server's pid file and reload status in `data_dir` |
//! | [`web`] | `[listen] https`/`http`: MTA-STS policies, ACME challenges; a small HTTPS client |
//! | [`acme`] | `[acme]`: the certificate from an ACME CA (RFC 8555), renewed and swapped in |

pub mod accounts;
pub mod acme;
pub mod address;
pub mod auth;
pub mod config;
pub mod control;
pub mod dane;
pub mod deliver;
pub mod header;
pub mod inbound;
pub mod mailbox;
pub mod maildir;
pub mod mailserver;
pub mod metrics;
pub mod milter;
pub mod private;
pub mod privileges;
pub mod queue;
pub mod reload;
pub mod reports;
pub mod scratch;
pub mod sender;
pub mod space;
pub mod spam;
pub mod srs;
pub mod stream;
pub mod sts;
pub mod web;
pub mod x509;
