//! The handler of `smtp-std serve`: mail for our domains, delivered into the mailboxes.
//!
//! At RCPT each recipient is resolved ([`crate::mta::accounts::Directory::resolve`]): an unknown
//! user of ours gets `550 5.1.1`, another domain `550 5.7.1` unless the client logged in or is
//! in `relay_networks` ([`Outgoing::relay_networks`]; then it goes to the queue). The
//! content streams into a spool file (never whole in memory), with our `Received:` on top.
//! At the end of DATA, for mail from outside, SPF (checked at MAIL), DKIM and DMARC give the
//! `Authentication-Results:` header and the folder (`.Junk` for DMARC `p=quarantine`), or a
//! refusal. For an authenticated session (submission), the end of data first checks that every
//! sender the message names (every mailbox of every `From:`, `Sender:`) is the user's
//! ([`crate::mta::sender`]; MAIL FROM is checked at MAIL): if not, nothing is stored, queued or
//! signed. Then every mailbox gets its copy, each fsynced, before the `250`:
//!
//! - **Maildir** ([`Store::Maildirs`]): `<root>/<domain>/<local>/`, created on first delivery.
//!   Final delivery puts `Return-Path: <sender>` (RFC 5321 §4.4) and one `Delivered-To:` per
//!   envelope recipient that reached the mailbox on top. Mailboxes reached by the same
//!   recipients (an alias's members) share one file through hard links.
//! - **LMTP** ([`Store::Lmtp`]): one LMTP transaction to Dovecot (or any LMTP server) for all
//!   the accounts; it writes `Return-Path:` and `Delivered-To:` itself. The message is accepted
//!   only when LMTP accepted it for every account; else `451` (any temporary refusal) or `550`.
//!
//! Without a config file (`smtp-std serve --maildir DIR`), [`Route::Maildir`] keeps the
//! behaviour of a simple receiver: every accepted recipient into one Maildir.
//!
//! Storage: with less free than [`InboundHandler::with_min_free_space`] asks, MAIL gets `452
//! 4.3.1 Insufficient system storage`; so does any write of a message (spool, mailbox, queue)
//! that fails with no space left or a quota exceeded ([`Decision::io_error`]); other local
//! errors get `451 4.3.0`.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use smtp_proto::data::DataError;
use smtp_proto::parse::{Domain, ForwardPath, MailParams, RcptParams, ReversePath};
use smtp_proto::Reply;

use crate::handler::{forward_path_string, reverse_path_string, AuthRequest, Decision, Handler, Session};
use crate::lmtp::{LmtpOptions, LmtpTarget};
use crate::mta::accounts::{AccountsFile, Directory, Resolution};
use crate::mta::mailbox::{clean, group_copies, store_copies, trace_prefix, unique_accounts, Copy, Store};
use crate::mta::maildir::{Delivery, Maildir};
use crate::mta::stream::{read_header_block, CrlfReader, MAX_HEADER_BLOCK};
use crate::received::received_header;

mod outgoing;
pub use outgoing::{Outgoing, Signer};

/// Where accepted recipients go.
#[derive(Debug)]
pub enum Route {
    /// Every accepted recipient into one Maildir. `domains` (lower case) are the recipient
    /// domains accepted from anyone; empty: every recipient. Authenticated clients may use any.
    Maildir {
        /// The Maildir.
        maildir: Maildir,
        /// Accepted recipient domains.
        domains: Vec<String>,
    },
    /// Our domains' accounts, each with its own mailbox.
    Accounts {
        /// Accounts, aliases, domains.
        directory: Arc<Directory>,
        /// How messages reach the mailboxes (shared with the queue's workers).
        store: Arc<Store>,
    },
}

/// The policy shared by all sessions.
#[derive(Debug)]
pub struct InboundPolicy {
    /// Our name, in the `Received:` header.
    pub hostname: String,
    /// Where recipients go.
    pub route: Route,
    /// Who may log in with AUTH; `None`: every AUTH is refused.
    pub logins: Option<Arc<AccountsFile>>,
    /// Where authenticated clients' mail for other domains goes; `None`: we relay for no one.
    pub outgoing: Option<Outgoing>,
}

/// The policy (and the checks of mail from outside) that new sessions take: shared by the
/// handler and its clones, replaceable while the server runs ([`LivePolicy::set`]). A session
/// takes the current one when it connects and keeps it to its end.
#[derive(Debug, Clone)]
pub struct LivePolicy(Arc<RwLock<Current>>);

#[derive(Debug, Clone)]
struct Current {
    policy: Arc<InboundPolicy>,
    mail_auth: Option<Arc<crate::mta::auth::MailAuthPolicy>>,
}

impl LivePolicy {
    fn current(&self) -> Current {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Current)) {
        f(&mut self.0.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// New sessions take `policy`, with `mail_auth` checks (`None`: none); sessions open now
    /// finish with the one they began with.
    pub fn set(&self, policy: InboundPolicy, mail_auth: Option<crate::mta::auth::MailAuthPolicy>) {
        let next = Current { policy: Arc::new(policy), mail_auth: mail_auth.map(Arc::new) };
        self.update(|c| *c = next);
    }
}

/// The handler (cloned per connection; the policy is shared, and each session takes the
/// current one of its [`LivePolicy`] when it connects).
#[derive(Debug, Clone)]
pub struct InboundHandler {
    live: LivePolicy,
    policy: Arc<InboundPolicy>,
    /// Accepted recipients of the transaction: the address as given and the accounts it
    /// reaches (empty for [`Route::Maildir`]).
    rcpts: Vec<(String, Vec<String>)>,
    /// Accepted recipients in other domains (authenticated clients only, or the original
    /// sender behind an SRS address): for the queue, with the client's sender.
    remote: Vec<crate::mta::queue::Recipient>,
    /// Members in other domains of the aliases reached: forwarded, with an SRS sender in the
    /// domain of `forward_domain`.
    forward: Vec<String>,
    forward_domain: Option<String>,
    /// DSN parameters of the transaction (ENVID decoded, RET=FULL) and SMTPUTF8.
    envid: Option<String>,
    ret_full: bool,
    /// REQUIRETLS was given with MAIL (the core accepts it only under TLS).
    requiretls: bool,
    /// The message being received and where its copies go.
    current: Option<(Delivery, Vec<Copy>)>,
    mail_auth: Option<Arc<crate::mta::auth::MailAuthPolicy>>,
    /// SPF of the current transaction, when the checks apply to it.
    spf: Option<crate::mta::auth::SpfCheck>,
    free_space: Option<Arc<crate::mta::space::MinFreeSpace>>,
    /// DNSBL, greylisting, verdict fields ([`crate::mta::spam`]).
    spam: crate::mta::spam::SpamSession,
    /// `[[milter]]`, run at the end of data before anything is stored; the current message
    /// goes to `.Junk` when they say so.
    milters: Option<Arc<crate::mta::milter::Milters>>,
    milter_junk: bool,
    /// `[reports]`: reports arriving at its address, DMARC evaluations recorded.
    reports: Option<Arc<crate::mta::reports::Reports>>,
}

impl InboundHandler {
    /// A handler with this policy.
    pub fn new(policy: InboundPolicy) -> Self {
        let policy = Arc::new(policy);
        Self {
            live: LivePolicy(Arc::new(RwLock::new(Current { policy: policy.clone(), mail_auth: None }))),
            policy,
            rcpts: Vec::new(),
            remote: Vec::new(),
            forward: Vec::new(),
            forward_domain: None,
            envid: None,
            ret_full: false,
            requiretls: false,
            current: None,
            mail_auth: None,
            spf: None,
            free_space: None,
            spam: Default::default(),
            milters: None,
            milter_junk: false,
            reports: None,
        }
    }

    /// DNS blocklists, greylisting and spam verdicts ([`crate::mta::spam`]).
    pub fn with_spam(mut self, spam: crate::mta::spam::Spam) -> Self {
        self.spam = crate::mta::spam::SpamSession::new(Some(Arc::new(spam)));
        self
    }

    /// Runs these milters on each message ([`crate::mta::milter`]).
    pub fn with_milters(mut self, milters: crate::mta::milter::Milters) -> Self {
        self.milters = Some(Arc::new(milters));
        self
    }

    /// Keeps the reports that arrive at `[reports] address` and records DMARC evaluations
    /// ([`crate::mta::reports`]).
    pub fn with_reports(mut self, reports: Arc<crate::mta::reports::Reports>) -> Self {
        self.reports = Some(reports);
        self
    }

    /// Refuses MAIL with `452 4.3.1 Insufficient system storage` while fewer than `min`
    /// octets (or no inode) are free on the file system of `dir` (the data directory, where
    /// messages are spooled and stored). `min == 0`: no check.
    pub fn with_min_free_space(mut self, dir: impl Into<PathBuf>, min: u64) -> Self {
        self.free_space = (min > 0).then(|| Arc::new(crate::mta::space::MinFreeSpace::new(dir.into(), min)));
        self
    }

    /// Checks SPF, DKIM and DMARC on mail from the clients `auth` applies to.
    pub fn with_mail_auth(mut self, auth: crate::mta::auth::MailAuthPolicy) -> Self {
        let auth = Arc::new(auth);
        self.live.update(|c| c.mail_auth = Some(auth.clone()));
        self.mail_auth = Some(auth);
        self
    }

    /// The policy new sessions take, to replace it while the server runs (a reload).
    pub fn live(&self) -> LivePolicy {
        self.live.clone()
    }

    /// The copies of the current transaction: mailboxes grouped by the recipients that
    /// reached them (one group for [`Route::Maildir`]).
    fn copies(&self) -> io::Result<Vec<Copy>> {
        match &self.policy.route {
            Route::Maildir { maildir, .. } => Ok(vec![Copy {
                delivered_to: self.rcpts.iter().map(|(r, _)| r.clone()).collect(),
                maildirs: vec![maildir.path().to_owned()],
            }]),
            Route::Accounts { store, .. } => match &**store {
                Store::Lmtp { .. } => Ok(Vec::new()),
                Store::Maildirs(root) => group_copies(root, &self.rcpts),
            },
        }
    }

    /// Opens the spool file with the first copy's trace prefix and our `Received:`.
    fn begin(&mut self, session: &Session) -> io::Result<()> {
        let copies = self.copies()?;
        let lmtp_spool = match &self.policy.route {
            Route::Accounts { store, .. } => match &**store {
                Store::Lmtp { spool, .. } => Some(spool),
                Store::Maildirs(_) => None,
            },
            Route::Maildir { .. } => None,
        };
        let mut d = match (lmtp_spool, copies.first()) {
            (Some(spool), _) => spool.scratch()?,
            (_, Some(Copy { maildirs, delivered_to })) => {
                let first = maildirs.first().ok_or_else(|| io::Error::other("no mailbox"))?;
                let mut d = Maildir::create(first)?.begin()?;
                let from = session.envelope.mail_from.as_deref().unwrap_or("");
                d.write(trace_prefix(from, delivered_to).as_bytes())?;
                d
            }
            (_, None) => match &self.policy.outgoing {
                Some(o) if !self.remote.is_empty() || !self.forward.is_empty() => {
                    Maildir::create(o.queue.root().join("spool"))?.scratch()?
                }
                _ => return Err(io::Error::other("no mailbox")),
            },
        };
        d.mark_content_start();
        d.write(received_header(session, &self.policy.hostname, d.name(), SystemTime::now()).as_bytes())?;
        self.current = Some((d, copies));
        Ok(())
    }

    /// The end of DATA: the checks (when they apply), then every copy stored.
    fn end(&mut self, session: &Session, mut d: Delivery, copies: Vec<Copy>) -> Decision {
        let name = d.name().to_owned();
        let mut header = String::new();
        let mut folder = None;
        let mut reason = String::new();
        if let (Some(auth), Some(spf)) = (self.mail_auth.clone(), self.spf.take()) {
            use crate::mta::auth::Action;
            // The spooled message streams through the checks: only its header block is held.
            let mut verdict = match d.content().and_then(|mut f| auth.verifier.verify_spooled(&spf, &mut f)) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(id = name, "cannot read the spooled message back: {e}");
                    return Decision::io_error(&e);
                }
            };
            if let (Some(reports), Some(e)) = (&self.reports, verdict.evaluation.take()) {
                reports.record(e, &self.rcpts);
            }
            crate::mta::metrics::get().auth_results(&verdict.header);
            match verdict.action {
                Action::TempFail(lookup) => {
                    tracing::warn!(id = name, reason = verdict.reason, ?lookup, "DNS failure: message deferred");
                    return temp_fail_reply(lookup);
                }
                Action::Reject => {
                    tracing::info!(id = name, reason = verdict.reason, "message rejected (DMARC)");
                    return Decision::reply(550, Some((5, 7, 1)), format!("{} (DMARC)", verdict.reason));
                }
                Action::Junk => folder = Some(".Junk"),
                Action::Inbox => {}
            }
            header = verdict.header;
            reason = verdict.reason;
        }
        if std::mem::take(&mut self.milter_junk) {
            folder = Some(".Junk");
        }
        if let Some(fields) = self.spam.verdict(folder.is_some()) {
            folder = Some(".Junk");
            header.push_str(&fields);
        }
        if let Some(stored) = self.take_report(session, &mut d) {
            return stored;
        }
        if let Route::Accounts { store, .. } = &self.policy.route {
            if let Store::Lmtp { target, options, .. } = &**store {
                return self.deliver_lmtp(session, target, options, d, &header);
            }
        }
        match store_copies(Some(d), None, &copies, session.envelope.mail_from.as_deref().unwrap_or(""), &header, folder)
        {
            Ok(paths) => {
                // The checks' verdict, when they ran.
                let reason = (!reason.is_empty()).then_some(reason.as_str());
                for p in &paths {
                    tracing::info!(path = %p.display(), reason, junk = folder.is_some(), "stored message");
                }
                Decision::reply(250, Some((2, 0, 0)), format!("Ok: queued as {name}"))
            }
            Err(e) => {
                tracing::error!(id = name, "cannot store the message: {e}");
                Decision::io_error(&e)
            }
        }
    }
}

impl InboundHandler {
    /// A report for `[reports] address` (its only recipient): kept, and the `250` to give
    /// ([`crate::mta::reports::Reports::receive`]); `None`: deliver the message as usual.
    fn take_report(&self, session: &Session, d: &mut Delivery) -> Option<Decision> {
        let reports = self.reports.as_ref()?;
        let from = session.envelope.mail_from.as_deref().unwrap_or("");
        match d.content().and_then(|mut f| reports.receive(&self.rcpts, from, &mut f)) {
            Ok(Some(_)) => Some(Decision::reply(250, Some((2, 0, 0)), format!("Ok: report kept as {}", d.name()))),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(id = d.name(), "cannot keep the report: {e}");
                Some(Decision::io_error(&e))
            }
        }
    }

    /// Hands the message to the LMTP server for every account (in groups of at most
    /// [`crate::lmtp::MAX_RECIPIENTS`]); `250` only when LMTP accepted it for all of them.
    fn deliver_lmtp(
        &self,
        session: &Session,
        target: &LmtpTarget,
        options: &LmtpOptions,
        mut d: Delivery,
        prefix: &str,
    ) -> Decision {
        let name = d.name().to_owned();
        let from = session.envelope.mail_from.as_deref().unwrap_or("");
        let accounts = unique_accounts(&self.rcpts);
        let mut refused: Vec<(String, crate::OwnedReply)> = Vec::new();
        for group in accounts.chunks(crate::lmtp::MAX_RECIPIENTS) {
            let mut body = match d.content() {
                Ok(b) => prefix.as_bytes().chain(b),
                Err(e) => {
                    tracing::error!(id = name, "cannot read the spooled message: {e}");
                    return Decision::io_error(&e);
                }
            };
            match crate::lmtp::deliver(target, options, from, group, &mut body) {
                Ok(replies) => {
                    for (account, reply) in group.iter().zip(replies) {
                        if reply.code / 100 == 2 {
                            tracing::info!(id = name, account, lmtp = %target, reply = %reply.text, "delivered by LMTP");
                        } else {
                            tracing::warn!(id = name, account, lmtp = %target, code = reply.code, reply = %reply.text, "LMTP refused");
                            refused.push((account.to_string(), reply));
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(id = name, lmtp = %target, "LMTP delivery failed: {e}");
                    return if e.is_temporary() {
                        Decision::reply(451, Some((4, 3, 0)), "Mailbox delivery failed, try again later")
                    } else {
                        Decision::reply(554, Some((5, 3, 0)), "Mailbox delivery failed")
                    };
                }
            }
        }
        drop(d);
        match refused.iter().find(|(_, r)| r.code / 100 == 4).or(refused.first()) {
            None => Decision::reply(250, Some((2, 0, 0)), format!("Ok: queued as {name}")),
            Some((account, r)) if r.code / 100 == 4 => {
                let e = r.enhanced.map_or((4, 3, 0), |e| (4, e.subject, e.detail));
                Decision::reply(451, Some(e), format!("<{account}>: temporarily not delivered, try again later"))
            }
            Some((account, r)) => {
                let e = r.enhanced.map_or((5, 0, 0), |e| (5, e.subject, e.detail));
                Decision::reply(550, Some(e), format!("<{account}>: {}", clean(&r.text)))
            }
        }
    }
}

/// The reply when a lookup of the checks failed: `451`, nothing stored, the client retries.
/// The enhanced status code is in the security class `4.7.x`, never `4.4.3` (a routing
/// failure), and names the check (RFC 7372 and RFC 3463, see [`crate::mta::auth::Lookup::status`]):
/// `451 4.7.24` SPF validation error (SPF `temperror`), `451 4.7.5` a DKIM key could not be
/// fetched, `451 4.7.0` the DMARC record could not be fetched (or DKIM + DMARC timed out).
fn temp_fail_reply(lookup: crate::mta::auth::Lookup) -> Decision {
    use crate::mta::auth::Lookup;
    let text = match lookup {
        Lookup::Spf => "SPF validation error: temporary DNS failure, try again later",
        Lookup::DkimKey => "DKIM key not available: temporary DNS failure, try again later",
        Lookup::Dmarc => "DMARC policy not available: temporary DNS failure, try again later",
    };
    Decision::reply(451, Some(lookup.status()), text)
}

/// Why a recipient of another domain is refused to a client that did not log in.
const NOT_OURS: &str = "relay denied: not one of our domains, not authenticated";

/// A refused recipient: the reason logged, one line (the session's `rcpt ... ok=false` line
/// says only that it was refused), and the reply.
fn refused(session: &Session, rcpt: &str, why: &str, reply: impl Into<Decision>) -> Decision {
    tracing::info!(id = session.id, peer = %session.peer, rcpt, "recipient refused: {why}");
    reply.into()
}

/// NOTIFY flags as the words the queue stores.
fn notify_words(n: smtp_proto::parse::params::Notify) -> String {
    use smtp_proto::parse::params::Notify;
    if n.0 == Notify::NEVER.0 {
        return "NEVER".into();
    }
    let words: Vec<&str> = [(Notify::SUCCESS, "SUCCESS"), (Notify::FAILURE, "FAILURE"), (Notify::DELAY, "DELAY")]
        .iter()
        .filter(|(bit, _)| n.0 & bit != 0)
        .map(|(_, w)| *w)
        .collect();
    words.join(",")
}

fn domain_accepted(domains: &[String], to: &ForwardPath<'_>) -> bool {
    match to {
        ForwardPath::Postmaster => true,
        ForwardPath::Mailbox(m) => match m.domain {
            Domain::Name(name) => {
                let name = name.trim_end_matches('.');
                domains.iter().any(|d| d.eq_ignore_ascii_case(name))
            }
            _ => false,
        },
    }
}

impl Handler for InboundHandler {
    fn connect(&mut self, _session: &Session) -> Decision {
        // The policy current now is this session's to its end.
        let current = self.live.current();
        self.policy = current.policy;
        self.mail_auth = current.mail_auth;
        Decision::Accept
    }

    fn auth(&mut self, _session: &Session, auth: &AuthRequest<'_>) -> Decision {
        // A password hash takes milliseconds of CPU.
        crate::will_block();
        let ok = self.policy.logins.as_ref().is_some_and(|u| u.verify(auth.identity, auth.secret))
            && auth.authzid.is_none_or(|z| z.eq_ignore_ascii_case(auth.identity));
        if ok {
            Decision::Accept
        } else {
            Reply::AUTH_FAILED.into()
        }
    }

    fn knows_user(&mut self, _session: &Session, identity: &str) -> bool {
        self.policy.logins.as_ref().is_some_and(|u| u.current().contains(identity))
    }

    fn mail_from(&mut self, session: &Session, from: &ReversePath<'_>, params: &MailParams<'_>) -> Decision {
        self.rcpts.clear();
        self.remote.clear();
        self.forward.clear();
        self.forward_domain = None;
        if let Some(refusal) = self.free_space.as_ref().and_then(|space| space.check()) {
            return refusal;
        }
        self.envid = params.envid.map(|x| String::from_utf8_lossy(&x.decoded().collect::<Vec<u8>>()).into_owned());
        self.ret_full = params.ret == Some(smtp_proto::parse::params::Ret::Full);
        self.requiretls = params.requiretls;
        if let (Some(user), Route::Accounts { directory, .. }) = (&session.user, &self.policy.route) {
            let address = reverse_path_string(from);
            if !directory.owns(user, &address) {
                tracing::info!(user, from = address, "sender not owned");
                let text = format!("<{}>: Sender address rejected: not owned by user {}", clean(&address), clean(user));
                return Decision::reply(553, Some((5, 7, 1)), text);
            }
        }
        {
            self.spf = None;
            let Some(auth) = self.mail_auth.clone().filter(|a| a.applies_to(session)) else {
                return Decision::Accept;
            };
            let from = reverse_path_string(from);
            crate::will_block();
            let spf = auth.verifier.check_spf(session.peer.ip(), session.helo.as_deref().unwrap_or(""), &from);
            tracing::info!(result = ?spf.result(), domain = spf.domain(), "spf");
            if let Some(reason) = spf.temporary() {
                tracing::warn!(reason, "SPF: DNS failure");
                return temp_fail_reply(crate::mta::auth::Lookup::Spf);
            }
            self.spf = Some(spf);
        }
        Decision::Accept
    }

    fn rcpt_to(&mut self, session: &Session, to: &ForwardPath<'_>, params: &RcptParams<'_>) -> Decision {
        if let Some(refusal) = self.spam.before_rcpt(session, to, &self.policy.route) {
            return refusal;
        }
        let address = forward_path_string(to);
        let policy = Arc::clone(&self.policy);
        let decision = match &policy.route {
            Route::Maildir { domains, .. } => {
                if domains.is_empty() || session.user.is_some() || domain_accepted(domains, to) {
                    self.rcpts.push((address, Vec::new()));
                    Decision::Accept
                } else {
                    refused(session, &address, NOT_OURS, Reply::RELAY_DENIED)
                }
            }
            Route::Accounts { directory, .. } => {
                let lookup = match to {
                    ForwardPath::Postmaster => directory.postmaster(),
                    ForwardPath::Mailbox(m) if matches!(m.domain, Domain::Name(_)) => address.clone(),
                    ForwardPath::Mailbox(_) => {
                        return refused(session, &address, "relay denied: an address literal", Reply::RELAY_DENIED)
                    }
                };
                if let (true, Some(out)) = (crate::mta::srs::Srs::is_srs(&lookup), &policy.outgoing) {
                    return self.srs_bounce(session, directory, out, &lookup);
                }
                match directory.resolve(&lookup) {
                    Resolution::Local(accounts) => {
                        tracing::info!(rcpt = address, accounts = %accounts.join(","), "recipient");
                        self.rcpts.push((address, accounts));
                        Decision::Accept
                    }
                    Resolution::Forward { accounts, external } if self.policy.outgoing.is_some() => {
                        let (to, forward) = (accounts.join(","), external.join(","));
                        tracing::info!(rcpt = address, accounts = to, forward, "recipient, forwarded");
                        for e in external {
                            if !self.forward.contains(&e) {
                                self.forward.push(e);
                            }
                        }
                        if self.forward_domain.is_none() {
                            self.forward_domain =
                                address.rsplit_once('@').map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase());
                        }
                        self.rcpts.push((address, accounts));
                        Decision::Accept
                    }
                    Resolution::Forward { .. } => refused(
                        session,
                        &address,
                        "an alias with members in other domains, and no queue to forward with",
                        Reply::LOCAL_ERROR,
                    ),
                    Resolution::Unknown => {
                        let text = format!("<{}>: Recipient address rejected: User unknown", clean(&address));
                        refused(session, &address, "unknown user", Decision::reply(550, Some((5, 1, 1)), text))
                    }
                    Resolution::Foreign if policy.outgoing.as_ref().is_some_and(|o| o.may_relay(session)) => {
                        let mut r = crate::mta::queue::Recipient::new(&address);
                        r.notify = params.notify.map(notify_words);
                        r.orcpt = params.orcpt.map(|o| {
                            let addr = String::from_utf8_lossy(&o.addr.decoded().collect::<Vec<u8>>()).into_owned();
                            format!("{};{}", o.addr_type, clean(&addr))
                        });
                        let relay = if session.user.is_some() { "authenticated" } else { "relay_networks" };
                        tracing::info!(rcpt = address, relay, "recipient for the queue");
                        self.remote.push(r);
                        Decision::Accept
                    }
                    Resolution::Foreign => {
                        let why =
                            if session.user.is_some() { "relay denied: no queue for other domains" } else { NOT_OURS };
                        refused(session, &address, why, Reply::RELAY_DENIED)
                    }
                }
            }
        };
        self.spam.after_rcpt(session, to, self.spf.as_ref(), decision)
    }

    fn data_start(&mut self, session: &Session) -> Decision {
        self.current = None;
        self.spam.start_data(session, self.mail_auth.as_ref().is_some_and(|a| a.applies_to(session)));
        match self.begin(session) {
            Ok(()) => Decision::Accept,
            Err(e) => {
                tracing::error!("cannot start a message: {e}");
                Decision::io_error(&e)
            }
        }
    }

    fn data_chunk(&mut self, _session: &Session, chunk: &[u8]) -> io::Result<()> {
        match self.current.as_mut() {
            Some((d, _)) => self.spam.data(chunk, &mut |b| d.write(b)),
            None => Err(io::Error::other("no message open")),
        }
    }

    fn data_end(&mut self, session: &Session, _size: u64) -> Decision {
        // Milters, the queue's and the mailboxes' fsyncs.
        crate::will_block();
        let Some((mut d, copies)) = self.current.take() else {
            return Reply::LOCAL_ERROR.into();
        };
        if let Err(e) = self.spam.finish_data(&mut |b| d.write(b)) {
            return Decision::io_error(&e);
        }
        // Submission: every sender the message names must be the user's, before any copy,
        // queue entry or signature is made (the spool file goes with `d`).
        if let Some(refusal) = self.sender_refused(session, &mut d) {
            return refusal;
        }
        // Milters: their verdict, their edits applied to the spool before it is stored,
        // queued or signed.
        if let Some(milters) = self.milters.clone() {
            let outcome = milters.check(session, &mut d);
            crate::mta::metrics::get().milter_outcome(&outcome);
            match outcome {
                crate::mta::milter::MilterOutcome::Continue { junk } => self.milter_junk = junk,
                crate::mta::milter::MilterOutcome::Done(decision) => return decision,
            }
        }
        // Recipients elsewhere: the message (signed) into the queue first; if the local copies
        // then fail, the entry is taken out again and the client tries later.
        let queued = match self.enqueue(session, &mut d) {
            Ok(q) => q,
            Err(decision) => return decision,
        };
        let local = matches!(self.policy.route, Route::Maildir { .. }) || self.rcpts.iter().any(|(_, a)| !a.is_empty());
        if !local {
            return match (queued.first(), &self.policy.outgoing) {
                (Some(id), Some(out)) => {
                    queued.iter().for_each(|id| (out.notify)(id));
                    Decision::reply(250, Some((2, 0, 0)), format!("Ok: queued as {id}"))
                }
                _ => Reply::LOCAL_ERROR.into(),
            };
        }
        let decision = self.end(session, d, copies);
        if let (Some(out), Decision::Reply(r)) = (&self.policy.outgoing, &decision) {
            // The queue's part goes ahead only when the local part was stored too.
            for id in &queued {
                if r.code / 100 == 2 {
                    (out.notify)(id);
                } else {
                    tracing::warn!(id, "local delivery failed: taking the queue entry back");
                    let _ = out.queue.remove(id);
                }
            }
        }
        decision
    }

    fn data_abort(&mut self, _session: &Session, error: Option<DataError>) {
        if let Some((d, _)) = self.current.take() {
            tracing::info!(error = error.map(tracing::field::display), id = d.name(), "message discarded");
        }
    }

    fn close(&mut self, _session: &Session) {
        self.current = None;
    }
}
