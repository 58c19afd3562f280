//! Prometheus metrics: what the server did, counted as it happens, and served by
//! `[listen] metrics = ["127.0.0.1:9749"]` at `GET /metrics` ([`http`]) in the OpenMetrics
//! text format that Prometheus scrapes (through the official `prometheus-client` crate).
//!
//! Every name starts with `smtp_std_`; the README's "Monitoring" section lists them with
//! their labels. The counters live for the whole process ([`get`]): each label value is
//! resolved once, when they are made, and its handle kept, so that an event is one atomic
//! add, no lock and no map lookup (the delivery histograms take a short lock of their own,
//! in the queue's workers, never on a session's path). The gauges of the queue and of the
//! certificate are computed at each scrape ([`Metrics::encode`]).
//!
//! The events come from the session hooks through [`Metered`] (sessions, messages,
//! recipients, AUTH, limits) and from one call at each other place (deliveries, SPF/DKIM/DMARC,
//! DNSBL, milters).

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label's values, known in advance (each gets its counter when the metrics are made).
pub trait Values: Copy + 'static {
    /// Every value, in the order of [`Values::index`].
    const ALL: &'static [Self];
    /// The label value.
    fn label(self) -> &'static str;
    /// Its place in [`Values::ALL`].
    fn index(self) -> usize;
}

macro_rules! values {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $label:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }
        impl Values for $name {
            const ALL: &'static [Self] = &[$($name::$variant,)*];
            fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

values! {
    /// The listener a session came in on (`smtp_std_sessions_opened_total{listener}`).
    Listener {
        /// `listen.smtp` (port 25).
        Smtp = "smtp",
        /// `listen.submission` (port 587, STARTTLS).
        Submission = "submission",
        /// `listen.submissions` (port 465, implicit TLS).
        Submissions = "submissions",
    }
}

mod cert;
mod handler;
pub mod http;

pub use cert::not_after;
pub use handler::Metered;

values! {
    /// What became of a message a client sent (`smtp_std_messages_received_total{result}`).
    Received {
        /// Stored or queued (`250`); also a message a milter discarded.
        Accepted = "accepted",
        /// Refused for good (`5xx`).
        Refused = "refused",
        /// Refused for now (`4xx`): the client tries again.
        Deferred = "deferred",
        /// The connection was lost (or shut down) in the middle of the message.
        Lost = "lost",
    }
}

values! {
    /// Why a message was refused (`reason`; empty for accepted and lost messages).
    Reason {
        /// None (accepted, lost).
        None = "",
        /// A policy: DMARC, a sender not the user's, a milter, a check's DNS failure (`x.7.x`).
        Policy = "policy",
        /// Larger than `max_message_size` (`x.3.4`).
        Size = "size",
        /// Bare CR or LF, a line too long, content refused (`5.5.2`, `x.6.x`).
        Content = "content",
        /// No room on the disk (`x.3.1`).
        Storage = "storage",
        /// Another local error (`x.3.0`, a mailbox or LMTP failure).
        Local = "local",
        /// Anything else.
        Other = "other",
    }
}

values! {
    /// Why a recipient was refused (`smtp_std_recipients_refused_total{reason}`).
    RcptReason {
        /// No such user or alias (`x.1.1`).
        UnknownUser = "unknown_user",
        /// Another domain, and the client may not relay (`550 5.7.1`).
        RelayDenied = "relay_denied",
        /// The client is on a DNS blocklist (`554 5.7.1`).
        Dnsbl = "dnsbl",
        /// Greylisted (`451 4.7.1`).
        Greylisted = "greylisted",
        /// No room on the disk (`452 4.3.1`).
        Storage = "storage",
        /// Another temporary refusal (`4xx`).
        Temporary = "temporary",
        /// Another permanent refusal (`5xx`).
        Other = "other",
    }
}

values! {
    /// What one recipient's delivery attempt from the queue gave
    /// (`smtp_std_deliveries_total{result}`).
    Delivery {
        /// Delivered (remote `250`, or into our mailbox).
        Delivered = "delivered",
        /// Tried again later.
        Deferred = "deferred",
        /// Failed for good (or expired): a bounce to the sender when it asked for one.
        Bounced = "bounced",
    }
}

values! {
    /// Which limit refused a client (`smtp_std_limit_hits_total{limit}`).
    Limit {
        /// `max_connections_per_client`.
        ConnectionsPerClient = "connections_per_client",
        /// `max_connection_rate`.
        ConnectionRate = "connection_rate",
        /// `max_auth_failures`: the client is locked out (its connection or AUTH refused).
        AuthFailures = "auth_failures",
        /// `max_clients`.
        MaxClients = "max_clients",
    }
}

values! {
    /// An SPF, DKIM or DMARC result, as the `Authentication-Results:` field gives it.
    AuthResult {
        /// `pass`.
        Pass = "pass",
        /// `fail`.
        Fail = "fail",
        /// `softfail` (SPF).
        Softfail = "softfail",
        /// `neutral`.
        Neutral = "neutral",
        /// `none`.
        None = "none",
        /// `temperror`.
        Temperror = "temperror",
        /// `permerror`.
        Permerror = "permerror",
        /// `policy` (DKIM).
        Policy = "policy",
        /// Anything else.
        Other = "other",
    }
}

values! {
    /// What the milters decided about a message (`smtp_std_milter_verdicts_total{verdict}`).
    Milter {
        /// Go on, into the inbox.
        Accept = "accept",
        /// Go on, into `.Junk` (quarantined or marked as spam).
        Junk = "junk",
        /// Refused for good.
        Reject = "reject",
        /// Refused for now.
        Tempfail = "tempfail",
        /// Accepted and thrown away.
        Discard = "discard",
    }
}

values! {
    /// A DNSBL zone that lists a client: a blocklist (positive score) or an allow list.
    Dnsbl {
        /// A blocklist.
        Block = "block",
        /// An allow list (negative score).
        Allow = "allow",
    }
}

/// One counter per value of `V`, resolved once.
struct ByLabel<V> {
    counters: Vec<Counter>,
    _values: std::marker::PhantomData<V>,
}

type Labels = [(&'static str, &'static str); 1];

impl<V: Values> ByLabel<V> {
    fn new(registry: &mut Registry, name: &str, help: &str, key: &'static str) -> Self {
        let family = Family::<Labels, Counter>::default();
        let counters = V::ALL.iter().map(|v| family.get_or_create_owned(&[(key, v.label())])).collect();
        registry.register(name, help, family);
        Self { counters, _values: std::marker::PhantomData }
    }

    fn inc(&self, v: V) {
        if let Some(c) = self.counters.get(v.index()) {
            c.inc();
        }
    }
}

/// What scrapes compute: the queue's entries and the certificate.
#[derive(Default)]
pub struct Sources {
    /// The outbound queue.
    pub queue: Option<crate::mta::queue::Queue>,
    /// The certificate every listener presents (replaced in place by reloads and renewals).
    pub cert: Option<std::sync::Arc<crate::tls::CertResolver>>,
}

/// Every metric of the process (see the module notes).
pub struct Metrics {
    registry: Registry,
    sessions: ByLabel<Listener>,
    received: Vec<Counter>,
    rcpt_refused: ByLabel<RcptReason>,
    submitted: Counter,
    deliveries: ByLabel<Delivery>,
    delivery_seconds: Vec<Histogram>,
    auth_failures: Counter,
    limits: ByLabel<Limit>,
    spf: ByLabel<AuthResult>,
    dkim: ByLabel<AuthResult>,
    dmarc: ByLabel<AuthResult>,
    dnsbl: ByLabel<Dnsbl>,
    milter: ByLabel<Milter>,
    queue_entries: Gauge,
    queue_oldest: Gauge,
    cert_expiry: Gauge,
    sources: Mutex<Sources>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The metrics of this process.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::with_prefix("smtp_std");
        let sessions = ByLabel::new(&mut r, "sessions_opened", "SMTP sessions opened, by listener", "listener");
        let received_family = Family::<[(&'static str, &'static str); 2], Counter>::default();
        let mut received = Vec::new();
        for result in Received::ALL {
            for reason in Reason::ALL {
                received.push(
                    received_family.get_or_create_owned(&[("result", result.label()), ("reason", reason.label())]),
                );
            }
        }
        r.register("messages_received", "Messages clients sent, by result and reason of a refusal", received_family);
        let rcpt_refused =
            ByLabel::new(&mut r, "recipients_refused", "Recipients refused at RCPT, by reason", "reason");
        let submitted = Counter::default();
        r.register(
            "messages_submitted",
            "Messages accepted from authenticated clients (submission)",
            submitted.clone(),
        );
        let deliveries =
            ByLabel::new(&mut r, "deliveries", "Recipients' delivery attempts from the queue, by result", "result");
        let seconds =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.01, 2.0, 16)));
        let delivery_seconds =
            Delivery::ALL.iter().map(|d| seconds.get_or_create_owned(&[("result", d.label())])).collect();
        r.register(
            "delivery_duration_seconds",
            "Duration of the delivery attempt of each recipient, by result",
            seconds,
        );
        let auth_failures = Counter::default();
        r.register("auth_failures", "AUTH attempts refused (wrong user or password)", auth_failures.clone());
        let limits =
            ByLabel::new(&mut r, "limit_hits", "Clients refused by a per-client limit or max_clients", "limit");
        let spf = ByLabel::new(&mut r, "spf_results", "SPF results of mail from outside", "result");
        let dkim =
            ByLabel::new(&mut r, "dkim_results", "DKIM results of mail from outside (one per signature)", "result");
        let dmarc = ByLabel::new(&mut r, "dmarc_results", "DMARC results of mail from outside", "result");
        let dnsbl = ByLabel::new(&mut r, "dnsbl_hits", "DNSBL zones listing a client, by kind of list", "list");
        let milter = ByLabel::new(&mut r, "milter_verdicts", "What the milters decided about a message", "verdict");
        let (queue_entries, queue_oldest, cert_expiry) = (Gauge::default(), Gauge::default(), Gauge::default());
        r.register("queue_entries", "Messages in the outbound queue", queue_entries.clone());
        r.register(
            "queue_oldest_age_seconds",
            "Age of the oldest message in the queue (0: empty)",
            queue_oldest.clone(),
        );
        r.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the [tls] certificate expires (its notAfter, unix seconds)",
            cert_expiry.clone(),
        );
        Self {
            registry: r,
            sessions,
            received,
            rcpt_refused,
            submitted,
            deliveries,
            delivery_seconds,
            auth_failures,
            limits,
            spf,
            dkim,
            dmarc,
            dnsbl,
            milter,
            queue_entries,
            queue_oldest,
            cert_expiry,
            sources: Mutex::new(Sources::default()),
        }
    }

    /// A session opened on `listener`.
    pub fn session_opened(&self, listener: Listener) {
        self.sessions.inc(listener);
    }

    /// A message ended as `result` (`reason`: why it was refused).
    pub fn received(&self, result: Received, reason: Reason) {
        if let Some(c) = self.received.get(result.index() * Reason::ALL.len() + reason.index()) {
            c.inc();
        }
    }

    /// A recipient refused.
    pub fn rcpt_refused(&self, reason: RcptReason) {
        self.rcpt_refused.inc(reason);
    }

    /// A message accepted from an authenticated client.
    pub fn submitted(&self) {
        self.submitted.inc();
    }

    /// A recipient's delivery attempt from the queue, and how long the attempt took.
    pub fn delivery(&self, result: Delivery, took: Duration) {
        self.deliveries.inc(result);
        if let Some(h) = self.delivery_seconds.get(result.index()) {
            h.observe(took.as_secs_f64());
        }
    }

    /// An AUTH refused.
    pub fn auth_failed(&self) {
        self.auth_failures.inc();
    }

    /// A client refused by a limit.
    pub fn limit_hit(&self, limit: Limit) {
        self.limits.inc(limit);
    }

    /// The SPF, DKIM and DMARC results an `Authentication-Results:` field gives
    /// (`method=result` after each `;`; one DKIM result per signature).
    pub fn auth_results(&self, field: &str) {
        for part in field.split(';').skip(1) {
            let Some((method, rest)) = part.trim_start().split_once('=') else { continue };
            let result = rest.split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("");
            let result = AuthResult::ALL
                .iter()
                .copied()
                .find(|r| r.label().eq_ignore_ascii_case(result))
                .unwrap_or(AuthResult::Other);
            match method.trim().to_ascii_lowercase().as_str() {
                "spf" => self.spf.inc(result),
                "dkim" => self.dkim.inc(result),
                "dmarc" => self.dmarc.inc(result),
                _ => {}
            }
        }
    }

    /// A DNSBL zone with this score listed a client.
    pub fn dnsbl_hit(&self, score: i32) {
        self.dnsbl.inc(if score > 0 { Dnsbl::Block } else { Dnsbl::Allow });
    }

    /// The milters' verdict on a message.
    pub fn milter(&self, verdict: Milter) {
        self.milter.inc(verdict);
    }

    /// The milters' verdict from what they made of it: go on (`junk` or not), or answer with
    /// `code` and keep nothing.
    pub fn milter_outcome(&self, outcome: &crate::mta::milter::MilterOutcome) {
        use crate::mta::milter::MilterOutcome;
        self.milter(match outcome {
            MilterOutcome::Continue { junk: false } => Milter::Accept,
            MilterOutcome::Continue { junk: true } => Milter::Junk,
            MilterOutcome::Done(d) => match handler::code(d) {
                Some(c) if c >= 500 => Milter::Reject,
                Some(c) if c >= 400 => Milter::Tempfail,
                _ => Milter::Discard,
            },
        });
    }

    /// The running server's queue and certificate, for the gauges computed at each scrape.
    pub fn set_sources(&self, sources: Sources) {
        *self.sources.lock().unwrap_or_else(|p| p.into_inner()) = sources;
    }

    /// Every metric in the OpenMetrics text format, the gauges computed now.
    pub fn encode(&self) -> String {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = &sources.queue {
            let (entries, oldest) = queue_now(q, SystemTime::now());
            self.queue_entries.set(entries);
            self.queue_oldest.set(oldest);
        }
        if let Some(cert) = &sources.cert {
            let key = cert.current();
            let expiry = key.cert.first().and_then(|c| not_after(c.as_ref()));
            self.cert_expiry.set(expiry.unwrap_or(0));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The number of entries in the queue and the age in seconds of the oldest (entries are
/// named oldest first; one that went meanwhile is passed over).
fn queue_now(q: &crate::mta::queue::Queue, now: SystemTime) -> (i64, i64) {
    let ids = match q.ids() {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(queue = %q.root().display(), "metrics: cannot list the queue: {e}");
            return (0, 0);
        }
    };
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let oldest = ids.iter().take(16).find_map(|id| q.load(id).ok()).map_or(0, |e| now.saturating_sub(e.arrival));
    (i64::try_from(ids.len()).unwrap_or(i64::MAX), i64::try_from(oldest).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_counts_in_the_text() {
        let m = Metrics::new();
        m.received(Received::Accepted, Reason::None);
        m.received(Received::Refused, Reason::Policy);
        m.received(Received::Refused, Reason::Policy);
        m.rcpt_refused(RcptReason::UnknownUser);
        m.session_opened(Listener::Submissions);
        m.delivery(Delivery::Bounced, Duration::from_millis(30));
        m.auth_results(
            "Authentication-Results: mx.test;\r\n\tdkim=pass header.d=a.test;\r\n\tspf=softfail (x) \
             smtp.mailfrom=a.test;\r\n\tdmarc=fail header.from=a.test",
        );
        let text = m.encode();
        for line in [
            "smtp_std_messages_received_total{result=\"accepted\",reason=\"\"} 1",
            "smtp_std_messages_received_total{result=\"refused\",reason=\"policy\"} 2",
            "smtp_std_messages_received_total{result=\"deferred\",reason=\"storage\"} 0",
            "smtp_std_recipients_refused_total{reason=\"unknown_user\"} 1",
            "smtp_std_sessions_opened_total{listener=\"submissions\"} 1",
            "smtp_std_sessions_opened_total{listener=\"smtp\"} 0",
            "smtp_std_deliveries_total{result=\"bounced\"} 1",
            "smtp_std_delivery_duration_seconds_count{result=\"bounced\"} 1",
            "smtp_std_dkim_results_total{result=\"pass\"} 1",
            "smtp_std_spf_results_total{result=\"softfail\"} 1",
            "smtp_std_dmarc_results_total{result=\"fail\"} 1",
            "smtp_std_queue_entries 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn milter_verdicts() {
        use crate::mta::milter::MilterOutcome;
        use crate::Decision;
        let m = Metrics::new();
        m.milter_outcome(&MilterOutcome::Continue { junk: false });
        m.milter_outcome(&MilterOutcome::Continue { junk: true });
        m.milter_outcome(&MilterOutcome::Done(Decision::reply(550, Some((5, 7, 1)), "no")));
        m.milter_outcome(&MilterOutcome::Done(Decision::reply(451, Some((4, 7, 1)), "later")));
        m.milter_outcome(&MilterOutcome::Done(Decision::reply(451, Some((4, 7, 1)), "later")));
        m.milter_outcome(&MilterOutcome::Done(Decision::reply(250, Some((2, 0, 0)), "discarded")));
        let got: Vec<u64> = Milter::ALL.iter().map(|v| m.milter.counters[v.index()].get()).collect();
        assert_eq!(got, [1, 1, 1, 2, 1]);
        m.dnsbl_hit(3);
        m.dnsbl_hit(-2);
        m.limit_hit(Limit::MaxClients);
        let text = m.encode();
        for line in [
            "smtp_std_milter_verdicts_total{verdict=\"tempfail\"} 2",
            "smtp_std_dnsbl_hits_total{list=\"allow\"} 1",
            "smtp_std_limit_hits_total{limit=\"max_clients\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
