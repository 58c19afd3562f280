//! Spam defence for mail from outside: DNS blocklists and allow lists ([`dnsbl`]),
//! greylisting ([`greylist`]), the verdict's folder and header fields, and the renaming of
//! verdict fields that arrive with a message ([`headers`]).
//!
//! None of it applies to authenticated clients or to `trusted_networks` (this host by
//! default). What happens to a client from elsewhere:
//!
//! 1. **DNSBL**, once per connection, at its first RCPT: the scores of the `[[dnsbl]]` zones
//!    that list the client's address are added up. At `[spam] dnsbl_threshold` (default 1)
//!    or more, every RCPT gets `554 5.7.1 Service unavailable; client [IP] blocked using
//!    ZONE` — except RCPT to `postmaster` of our domains (RFC 5321 §4.5.1: a listed sender
//!    can still reach a person to ask why), and refusing at RCPT rather than at connect lets
//!    an account still log in and send. At `dnsbl_junk_threshold` (default 1) or more but
//!    below the refusal threshold (possible when the thresholds are set apart), its messages
//!    are spam. A negative total (an allow list) skips greylisting.
//! 2. **Greylisting** (`[spam] greylist = "5m"`, off by default), after the recipient is
//!    accepted: `451 4.7.1` for an unknown triplet, see [`greylist`].
//! 3. **While DATA streams** into the spool, `Authentication-Results:` and `X-Spam*:` fields
//!    of the message are renamed `X-Original-...` ([`headers`]).
//! 4. **At the end of DATA**, a spam verdict (DMARC `p=quarantine`, or the DNSBL junk
//!    threshold) adds `X-Spam-Flag: YES` and `X-Spam-Status: Yes, ...` on top (under
//!    `Authentication-Results:`) and files the message into `.Junk` (Maildirs); with LMTP
//!    delivery the fields are for the LMTP server's Sieve rules to act on.

pub mod dnsbl;
pub mod greylist;
pub mod headers;

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use smtp_proto::parse::{Domain, ForwardPath};

use crate::handler::{Decision, Session};
use crate::mta::config::Config;
use crate::mta::inbound::Route;

/// The spam settings and state shared by all sessions.
#[derive(Debug)]
pub struct Spam {
    /// Networks not checked, as `(address, prefix length)`.
    trusted: Vec<(IpAddr, u8)>,
    dnsbl: Option<dnsbl::Dnsbl>,
    threshold: i32,
    junk_threshold: i32,
    greylist: Option<greylist::Greylist>,
}

impl Spam {
    /// The checks of `config` (`[[dnsbl]]`, `[spam]`, `trusted_networks`); the DNSBL zones'
    /// test points are checked now and the greylist is read from `<data_dir>/greylist/`.
    /// `Ok(None)` when nothing is configured. The error names the setting.
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        let s = &config.spam;
        if config.dnsbl.is_empty() && s.greylist.is_none() {
            return Ok(None);
        }
        let trusted = config
            .trusted_networks
            .iter()
            .map(|n| crate::mta::auth::verify::parse_network(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: trusted_networks: {e}", config.file.display()))?;
        let dnsbl = if config.dnsbl.is_empty() {
            None
        } else {
            let timeout = config.dns.timeout.unwrap_or(crate::mta::auth::dns::QUERY_TIMEOUT);
            let dns = crate::mta::auth::Dns::with_timeout(config.dns.server, timeout, 2)
                .map_err(|e| format!("{}: [dns]: {e}", config.file.display()))?;
            let zones: Vec<(String, i32)> = config.dnsbl.iter().map(|z| (z.zone.clone(), z.score)).collect();
            let settings = dnsbl::DnsblSettings {
                cache_size: s.dnsbl_cache_size,
                max_ttl: s.dnsbl_max_ttl,
                health_interval: s.dnsbl_health_interval,
            };
            let d = dnsbl::Dnsbl::new(dns, &zones, &settings);
            tracing::info!(zones = ?d.zones(), threshold = s.dnsbl_threshold, junk = s.dnsbl_junk_threshold, "DNSBL checks on");
            Some(d)
        };
        let greylist = match s.greylist {
            Some(delay) => Some(
                greylist::Greylist::open(
                    &config.data_dir.join("greylist"),
                    greylist::Settings {
                        delay,
                        retry_window: s.greylist_retry_window,
                        max_age: s.greylist_max_age,
                        max_entries: s.greylist_max_entries,
                        ipv4_prefix: s.greylist_ipv4_prefix,
                        ipv6_prefix: s.greylist_ipv6_prefix,
                    },
                )
                .map_err(|e| format!("{}: [spam] greylist: {e}", config.file.display()))?,
            ),
            None => None,
        };
        Ok(Some(Self {
            trusted,
            dnsbl,
            threshold: s.dnsbl_threshold,
            junk_threshold: s.dnsbl_junk_threshold,
            greylist,
        }))
    }

    /// Checks with the given parts (for embedding and tests): networks not checked, the
    /// DNSBL zones with the refusal and junk thresholds, the greylist.
    pub fn new(
        trusted: Vec<(IpAddr, u8)>,
        dnsbl: Option<(dnsbl::Dnsbl, i32, i32)>,
        greylist: Option<greylist::Greylist>,
    ) -> Self {
        let (dnsbl, threshold, junk_threshold) = match dnsbl {
            Some((d, t, j)) => (Some(d), t, j),
            None => (None, 1, 1),
        };
        Self { trusted, dnsbl, threshold, junk_threshold, greylist }
    }

    /// Whether the checks apply to this session (not authenticated, not trusted).
    pub fn applies_to(&self, session: &Session) -> bool {
        let ip = session.peer.ip().to_canonical();
        session.user.is_none()
            && !self.trusted.iter().any(|&(net, len)| crate::mta::auth::verify::in_network(ip, net, len))
    }
}

/// Whether `to` is `postmaster` of a domain we receive mail for (or the bare `<postmaster>`).
pub fn is_postmaster(to: &ForwardPath<'_>, route: &Route) -> bool {
    match to {
        ForwardPath::Postmaster => true,
        ForwardPath::Mailbox(m) => {
            let Domain::Name(name) = m.domain else { return false };
            m.local_part.eq_ignore_ascii_case("postmaster")
                && match route {
                    Route::Accounts { directory, .. } => directory.is_ours(name),
                    Route::Maildir { domains, .. } => {
                        let name = name.trim_end_matches('.');
                        domains.is_empty() || domains.iter().any(|d| d.eq_ignore_ascii_case(name))
                    }
                }
        }
    }
}

/// A session's part of the checks (in each connection's handler).
#[derive(Debug, Clone, Default)]
pub struct SpamSession {
    spam: Option<Arc<Spam>>,
    /// The DNSBL report of this connection's client, once asked.
    dnsbl: Option<dnsbl::Report>,
    headers: headers::HeaderFilter,
}

impl SpamSession {
    /// A session's part of `spam` (`None`: no DNSBL, no greylisting, but the renaming of
    /// incoming verdict fields and the verdict fields of a DMARC quarantine still apply).
    pub fn new(spam: Option<Arc<Spam>>) -> Self {
        Self { spam, ..Self::default() }
    }

    /// The DNSBL report of this connection, asked once (only where the checks apply).
    fn report(&mut self, session: &Session) -> Option<&dnsbl::Report> {
        let spam = self.spam.as_ref()?;
        let d = spam.dnsbl.as_ref()?;
        if !spam.applies_to(session) {
            return None;
        }
        if self.dnsbl.is_none() {
            let ip = session.peer.ip().to_canonical();
            let started = std::time::Instant::now();
            crate::will_block();
            let r = d.check(ip);
            r.listings.iter().for_each(|l| crate::mta::metrics::get().dnsbl_hit(l.score));
            let took_ms = started.elapsed().as_secs_f64() * 1e3;
            if r.listings.is_empty() && r.failed.is_empty() {
                tracing::debug!(%ip, took_ms, "dnsbl: not listed");
            } else {
                tracing::info!(%ip, total = r.total, listed = r.summary(), failed = ?r.failed, took_ms, "dnsbl");
            }
            self.dnsbl = Some(r);
        }
        self.dnsbl.as_ref()
    }

    /// At RCPT, before the recipient is looked at: the refusal of a client the DNSBLs list
    /// at the threshold, unless the recipient is `postmaster` of our domains.
    pub fn before_rcpt(&mut self, session: &Session, to: &ForwardPath<'_>, route: &Route) -> Option<Decision> {
        let threshold = self.spam.as_ref()?.threshold;
        let report = self.report(session)?;
        if report.total < threshold {
            return None;
        }
        let zone = report.blocked_by().unwrap_or("DNSBL").to_owned();
        let ip = session.peer.ip().to_canonical();
        if is_postmaster(to, route) {
            tracing::info!(%ip, zone, "listed client: mail to postmaster accepted");
            return None;
        }
        tracing::info!(%ip, zone, total = report.total, "listed client: RCPT refused");
        Some(Decision::reply(554, Some((5, 7, 1)), format!("Service unavailable; client [{ip}] blocked using {zone}")))
    }

    /// At RCPT, once the recipient `to` is accepted (`decision`): greylisting, when on and
    /// when it applies. `spf` is the transaction's SPF result.
    pub fn after_rcpt(
        &mut self,
        session: &Session,
        to: &ForwardPath<'_>,
        spf: Option<&crate::mta::auth::SpfCheck>,
        decision: Decision,
    ) -> Decision {
        if !matches!(decision, Decision::Accept) {
            return decision;
        }
        let Some(spam) = self.spam.clone() else { return decision };
        let Some(g) = spam.greylist.as_ref() else { return decision };
        if !spam.applies_to(session) {
            return decision;
        }
        let rcpt = crate::handler::forward_path_string(to);
        let rcpt = rcpt.as_str();
        if self.report(session).is_some_and(|r| r.total < 0) {
            tracing::info!(rcpt, "greylisting skipped: the client is on an allow list");
            return decision;
        }
        let spf_pass = spf
            .filter(|s| s.result() == mail_auth::SpfResult::Pass && !s.helo_identity())
            .map(|s| s.domain().to_owned());
        let sender = session.envelope.mail_from.as_deref().unwrap_or("");
        let ip = session.peer.ip().to_canonical();
        match g.check(ip, sender, rcpt, spf_pass.as_deref(), SystemTime::now()) {
            greylist::Outcome::Defer(wait) => {
                tracing::info!(%ip, from = sender, rcpt, wait = ?wait, "greylisted");
                Decision::reply(
                    451,
                    Some((4, 7, 1)),
                    format!("Greylisted: please try again later (in {} seconds)", wait.as_secs().max(1)),
                )
            }
            outcome => {
                tracing::debug!(%ip, from = sender, rcpt, ?outcome, "greylisting passed");
                decision
            }
        }
    }

    /// At DATA: the renaming of incoming verdict fields starts, for clients the checks apply
    /// to (all of them when no checks are configured but trusted networks are unknown: none).
    pub fn start_data(&mut self, session: &Session, checked: bool) {
        let applies = match &self.spam {
            Some(s) => s.applies_to(session),
            None => checked,
        };
        self.headers.start(applies);
    }

    /// The next octets of the content, to the spool through `write`.
    pub fn data(&mut self, chunk: &[u8], write: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        self.headers.write(chunk, write)
    }

    /// The end of the content: the last octets held, to the spool through `write`.
    pub fn finish_data(&mut self, write: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let renamed = self.headers.renamed();
        if renamed > 0 {
            tracing::info!(renamed, "verdict header fields from outside renamed X-Original-*");
        }
        self.headers.finish(write)
    }

    /// The verdict at the end of DATA, given whether DMARC quarantines the message: `Some`
    /// (the `X-Spam-Flag:` and `X-Spam-Status:` fields to add) when it is spam, for `.Junk`.
    pub fn verdict(&self, dmarc_quarantine: bool) -> Option<String> {
        let mut reasons = Vec::new();
        if dmarc_quarantine {
            reasons.push("dmarc=quarantine".to_owned());
        }
        if let (Some(spam), Some(r)) = (&self.spam, &self.dnsbl) {
            if r.total >= spam.junk_threshold && r.total < spam.threshold {
                reasons.push(format!("dnsbl={} score={}", r.summary(), r.total));
            }
        }
        if reasons.is_empty() {
            return None;
        }
        Some(format!("X-Spam-Flag: YES\r\nX-Spam-Status: Yes, {}\r\n", reasons.join(" ")))
    }
}
