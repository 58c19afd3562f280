//! The mail server of a config file: [`crate::mta::config`] → accounts, mailboxes, listeners, the
//! [`crate::mta::inbound`] handler on the embeddable [`Server`], the outbound queue and its
//! workers, privileges dropped after binding.
//!
//! Listeners: `smtp` (port 25: mail for our domains; AUTH optional, offered under TLS),
//! `submission` (587: STARTTLS, AUTH required before MAIL) and `submissions` (465: implicit
//! TLS, AUTH required); `metrics` serves `GET /metrics` ([`crate::mta::metrics`]). One
//! handler serves all: an authenticated account may send to any domain (as its own addresses
//! only), everyone else only to ours.
//!
//! Everything a config file names is read and checked before anything is created: the
//! accounts, that every alias member and catch-all of ours and `postmaster@` every domain
//! reach an account, the TLS certificate and key, the DKIM keys, the smarthost's password and
//! CA. A reload ([`crate::mta::reload`], `SIGHUP`) does the same again and swaps the result in.
//!
//! ```no_run
//! let config = smtp_std::mta::config::Config::load("/etc/smtp-std/smtp-std.toml".as_ref())?;
//! smtp_std::mta::mailserver::MailServer::new(&config)?.bind_and_run(&config)
//! # ; Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use smtp_proto::ehlo::AuthMechanisms;

use crate::lmtp::{LmtpOptions, LmtpTarget};
use crate::mta::accounts::{AccountsFile, Directory};
use crate::mta::auth::{Dns, MailAuthPolicy};
use crate::mta::config::{Config, ConfigError};
use crate::mta::inbound::{InboundHandler, InboundPolicy, LivePolicy, Outgoing, Route, Signer};
use crate::mta::mailbox::Store;
use crate::mta::maildir::{create_dir_durably, Maildir};
use crate::mta::metrics::Metered;
use crate::mta::privileges;
use crate::mta::queue::worker::{Context, Handoff, Local, Outbound, Settings, Smarthost, Workers};
use crate::mta::queue::{Queue, Schedule};
use crate::tls::CertResolver;
use crate::{tls, Options, Server};

/// A mail server ready to bind its ports.
pub struct MailServer {
    /// Port 25.
    smtp: Server<Metered<InboundHandler>>,
    /// Ports 587 and 465 (AUTH required).
    submission: Option<Server<Metered<InboundHandler>>>,
    /// The queue's workers to start (the submission handler hands them new entries through
    /// the context's [`crate::mta::queue::worker::Handoff`]), how many, how often they scan.
    workers: (Arc<Context>, usize, Duration),
    /// What lives as long as the process.
    base: Base,
    /// The policy new sessions take (both servers share it).
    live: LivePolicy,
    /// The certificate every listener presents, when `[tls]` or `[acme]` is set.
    cert: Option<Arc<CertResolver>>,
    /// The https/http listeners' state, when `[listen] https` or `http` is set.
    web: Option<Arc<crate::mta::web::Web>>,
    /// The ACME certificate's renewer, when `[acme]` is set.
    acme: Option<crate::mta::acme::Acme>,
    /// `[reports]`: received reports kept, DMARC reports sent.
    reports: Arc<crate::mta::reports::Reports>,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The SPF/DKIM/DMARC policy: DNS (`dns`, or the system's resolvers) and the networks not
/// checked.
pub fn mail_auth_policy(
    hostname: &str,
    dns: Option<std::net::SocketAddr>,
    timeout: std::time::Duration,
    trusted_networks: &[String],
) -> Result<crate::mta::auth::MailAuthPolicy, String> {
    let trusted =
        trusted_networks.iter().map(|n| crate::mta::auth::verify::parse_network(n)).collect::<Result<Vec<_>, _>>()?;
    let resolver = crate::mta::auth::Dns::with_timeout(dns, timeout, 2).map_err(|e| format!("DNS: {e}"))?;
    let dns_server = dns.map_or_else(|| "the system's resolvers".to_owned(), |d| d.to_string());
    tracing::info!(dns = %dns_server, trusted = %trusted_networks.join(","), "SPF, DKIM and DMARC checks on");
    Ok(crate::mta::auth::MailAuthPolicy {
        verifier: crate::mta::auth::Verifier::new(resolver, hostname.to_owned()),
        trusted,
    })
}

/// On SIGTERM or SIGINT, shuts the servers of `handles` down gracefully: no new connections,
/// `421 4.3.2` to every session at its next read, messages in progress finished first.
pub fn shutdown_on_signals(handles: Vec<crate::ShutdownHandle>) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "shutting down");
            for h in &handles {
                h.shutdown();
            }
        }
    })?;
    Ok(())
}

/// Creates `dir` (durably, `0700`; an existing one loses group and other permissions) and gives
/// it to `user` when there is one.
fn own_dir(dir: &Path, user: Option<&str>) -> io::Result<()> {
    create_dir_durably(dir).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    crate::mta::private::tighten_dir(dir)?;
    if let Some(user) = user {
        privileges::chown_to(dir, user)?;
    }
    Ok(())
}

/// A Maildir-shaped directory (its `tmp/` is used for spooling) owned by `user`.
fn own_spool(dir: &Path, user: Option<&str>) -> io::Result<Maildir> {
    own_dir(dir, user)?;
    for sub in ["tmp", "new", "cur"] {
        own_dir(&dir.join(sub), user)?;
    }
    Maildir::create(dir)
}

/// The signer of mail from our accounts: the `[[domain]]` DKIM key of the From: domain.
fn signer(config: &Config) -> io::Result<crate::mta::inbound::Signer> {
    let mut keys = Vec::new();
    for d in &config.domains {
        if let Some((selector, path)) = &d.dkim {
            let key = crate::mta::auth::DkimKey::load(path).map_err(|e| {
                invalid(format!("{}: [[domain]] {}: dkim_key {}: {e}", config.file.display(), d.name, path.display()))
            })?;
            keys.push((d.name.clone(), selector.clone(), key));
        }
    }
    Ok(Box::new(move |header_block: &[u8], body: &mut dyn std::io::BufRead| {
        let domain = crate::mta::deliver::from_header_domain(header_block)?;
        let (d, selector, key) = keys.iter().find(|(d, _, _)| d.eq_ignore_ascii_case(&domain))?;
        match crate::mta::auth::sign_stream(header_block, body, key, d, selector) {
            Ok(signed) => Some(signed),
            Err(e) => {
                tracing::error!(domain = d, "DKIM signing failed: {e}");
                None
            }
        }
    }))
}

/// What lives as long as the process, whatever a reload changes: the queue in `data_dir`, the
/// workers' hand-over, the SRS key.
pub(crate) struct Base {
    pub(crate) data_dir: std::path::PathBuf,
    pub(crate) queue: Queue,
    pub(crate) handoff: Handoff,
    pub(crate) srs_secret: Vec<u8>,
    /// The MTA-STS policies the https listener serves (a reload replaces them).
    pub(crate) sites: Arc<crate::mta::web::Sites>,
    /// Where the outcomes of outbound TLS are counted for TLS-RPT (`[reports] send_tls`).
    pub(crate) tls_outcomes: Option<Arc<dyn crate::mta::sts::TlsOutcomes>>,
}

/// What a config's files gave, read and checked before anything is created or replaced.
pub(crate) struct Checked {
    accounts: Arc<AccountsFile>,
    directory: Arc<Directory>,
    cert: Option<Arc<CertifiedKey>>,
    sign: Signer,
    smarthost: Option<Smarthost>,
    queue_dns: Dns,
    dane: Option<Arc<crate::mta::dane::Dane>>,
    mail_auth: Option<MailAuthPolicy>,
}

/// The parts of a running server that a config makes: what a reload replaces.
pub(crate) struct Parts {
    pub(crate) policy: InboundPolicy,
    pub(crate) mail_auth: Option<MailAuthPolicy>,
    pub(crate) settings: Settings,
    pub(crate) cert: Option<Arc<CertifiedKey>>,
}

/// Reads and checks everything `config` names: the accounts; that every alias member and
/// catch-all in our domains, and `postmaster@` every domain, reach an account; the TLS
/// certificate and key; the DKIM keys; the smarthost's password file and CA; DNS. Creates
/// nothing.
pub(crate) fn check(config: &Config) -> io::Result<Checked> {
    let file = config.file.display();
    if !config.accounts.exists() {
        return Err(invalid(format!(
            "{file}: accounts: the accounts file {} does not exist; add the first account with \
             `smtp-std user add you@{} --config {file}` (it creates the file)",
            config.accounts.display(),
            config.domains.first().map_or("example.org", |d| d.name.as_str()),
        )));
    }
    let accounts = Arc::new(AccountsFile::load(&config.accounts).map_err(|e| invalid(e.to_string()))?);
    let directory = Arc::new(Directory::new(config.domains.clone(), accounts.clone()));
    config.check_members(|m| directory.reaches(m)).map_err(|e| invalid(e.to_string()))?;
    for (i, d) in config.domains.iter().enumerate() {
        let postmaster = format!("postmaster@{}", d.name);
        if !directory.resolve(&postmaster).is_deliverable() {
            let e = ConfigError {
                file: config.file.clone(),
                line: config.domain_lines.get(i).copied(),
                key: Some(format!("domain[{i}]")),
                message: format!(
                    "{postmaster} reaches no account: mail to it must always be accepted (RFC 5321 4.5.1); \
                     add `postmaster = \"you\"` under [domain.aliases] of {}, or the account",
                    d.name
                ),
            };
            return Err(invalid(e.to_string()));
        }
    }
    if let Some(address) = config.reports.address() {
        if !directory.resolve(&address).is_deliverable() {
            let e = ConfigError {
                file: config.file.clone(),
                line: config.reports.address_line,
                key: Some("reports.address".into()),
                message: format!(
                    "{address} reaches no account: mail to it that is no report is delivered there; \
                     add an alias (`{} = \"you\"` under [domain.aliases]) or the account",
                    address.split('@').next().unwrap_or("dmarc")
                ),
            };
            return Err(invalid(e.to_string()));
        }
    }
    let cert = match &config.tls {
        Some(t) => {
            Some(tls::certified_key_from_files(&t.cert, &t.key).map_err(|e| invalid(format!("{file}: [tls]: {e}")))?)
        }
        None => None,
    };
    let o = &config.outbound;
    let smarthost = match &o.smarthost {
        Some(server) => {
            let auth = match (&o.smarthost_user, &o.smarthost_password_file) {
                (Some(user), Some(path)) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        invalid(format!("{file}: outbound.smarthost_password_file {}: {e}", path.display()))
                    })?;
                    Some(crate::client::Auth {
                        user: user.clone(),
                        password: text.lines().next().unwrap_or("").to_owned(),
                    })
                }
                _ => None,
            };
            let tls_config = match &o.smarthost_ca {
                Some(ca) => Some(
                    crate::client::tls_config_from_ca_file(ca)
                        .map_err(|e| invalid(format!("{file}: outbound.smarthost_ca {}: {e}", ca.display())))?,
                ),
                None => None,
            };
            let tls = match o.smarthost_tls.as_deref() {
                Some("tls") => crate::client::TlsMode::Implicit,
                Some("none") => crate::client::TlsMode::Off,
                _ => crate::client::TlsMode::Required,
            };
            Some(Smarthost { server: server.clone(), auth, tls, tls_config })
        }
        None => None,
    };
    let timeout = config.dns.timeout.unwrap_or(Duration::from_secs(3));
    let queue_dns =
        Dns::with_timeout(config.dns.server, timeout, 2).map_err(|e| invalid(format!("{file}: dns: {e}")))?;
    let d = &config.dns;
    let dane = crate::mta::dane::Dane::new(d.dnssec, d.server, timeout, d.trust_anchor.as_deref())
        .map_err(|e| invalid(format!("{file}: dns: {e}")))?
        .map(Arc::new);
    tracing::info!(dnssec = %d.dnssec, "DANE outbound {}", if dane.is_some() { "on" } else { "off" });
    if let Some(dane) = &dane {
        crate::mta::dane::Dane::log_probe(dane.clone());
    }
    if let Some(ca) = &o.mta_sts_ca {
        crate::client::tls_config_with_extra_ca(Some(ca))
            .map_err(|e| invalid(format!("{file}: outbound.mta_sts_ca: {e}")))?;
    }
    let mail_auth = if config.mail_auth {
        Some(
            mail_auth_policy(&config.hostname, config.dns.server, timeout, &config.trusted_networks)
                .map_err(|e| invalid(format!("{file}: {e}")))?,
        )
    } else {
        tracing::info!("SPF, DKIM and DMARC checks off (mail_auth = false)");
        None
    };
    Ok(Checked { accounts, directory, cert, sign: signer(config)?, smarthost, queue_dns, dane, mail_auth })
}

/// Outbound MTA-STS (`[outbound] mta_sts`, on by default), its cache in `data_dir/mta-sts`.
fn sts(config: &Config, data_dir: &std::path::Path, dns: &Dns) -> io::Result<Option<Arc<crate::mta::sts::Sts>>> {
    let o = &config.outbound;
    if o.mta_sts == Some(false) {
        tracing::info!("MTA-STS outbound off (outbound.mta_sts = false)");
        return Ok(None);
    }
    let options = crate::mta::sts::StsOptions { ca: o.mta_sts_ca.clone(), https_port: o.mta_sts_https_port };
    let sts = crate::mta::sts::Sts::new(dns.clone(), &data_dir.join("mta-sts"), &options)
        .map_err(|e| invalid(format!("{}: outbound.mta_sts: {e}", config.file.display())))?;
    Ok(Some(Arc::new(sts)))
}

/// Puts the parts of a running server together from `config` and what [`check`] read, on
/// `base`; the LMTP spool, when there is one, is created for `owner`.
pub(crate) fn assemble(config: &Config, checked: Checked, base: &Base, owner: Option<&str>) -> io::Result<Parts> {
    let Checked { accounts, directory, cert, sign, smarthost, queue_dns, dane, mail_auth } = checked;
    let store = Arc::new(match &config.delivery.lmtp {
        Some(lmtp) => {
            let target = LmtpTarget::parse(lmtp)
                .map_err(|e| invalid(format!("{}: delivery.lmtp: {e}", config.file.display())))?;
            let spool = own_spool(&base.data_dir.join("spool"), owner)?;
            tracing::info!(lmtp = %target, "delivering by LMTP");
            Store::Lmtp { target, options: LmtpOptions::new(&config.hostname), spool }
        }
        None => Store::Maildirs(base.data_dir.join("mailboxes")),
    });
    let q = &config.queue;
    let o = &config.outbound;
    let settings = Settings {
        schedule: Schedule { retry: q.retry.clone(), lifetime: q.lifetime, delay_warning: q.delay_warning },
        outbound: Outbound {
            hostname: config.hostname.clone(),
            port: o.port.unwrap_or(25),
            bind: o.bind,
            smarthost,
            timeout: o.timeout,
            dane,
            sts: sts(config, &base.data_dir, &queue_dns)?,
            tls_outcomes: base.tls_outcomes.clone(),
        },
        dns: queue_dns,
        local: Some(Local { directory: directory.clone(), store: store.clone() }),
        pool: Default::default(),
    };
    let handoff = base.handoff.clone();
    let outgoing = Outgoing {
        queue: base.queue.clone(),
        notify: Box::new(move |id| handoff.attempt_now(id)),
        first_attempt_after: q.retry.first().copied().unwrap_or(Duration::from_secs(300)),
        sign,
        srs_secret: base.srs_secret.clone(),
        relay_networks: relay_networks(config)?,
    };
    let policy = InboundPolicy {
        hostname: config.hostname.clone(),
        route: Route::Accounts { directory, store },
        logins: Some(accounts),
        outgoing: Some(outgoing),
    };
    Ok(Parts { policy, mail_auth, settings, cert })
}

/// `relay_networks` as networks (checked when the config was read).
fn relay_networks(config: &Config) -> io::Result<Vec<(std::net::IpAddr, u8)>> {
    let parse = |n: &String| crate::mta::auth::verify::parse_network(n);
    let nets = config.relay_networks.iter().map(parse).collect::<Result<Vec<_>, _>>();
    let nets = nets.map_err(|e| invalid(format!("{}: relay_networks: {e}", config.file.display())))?;
    if !nets.is_empty() {
        tracing::info!(networks = %config.relay_networks.join(","), "relaying for relay_networks without login");
    }
    Ok(nets)
}

/// `core` (a server's SMTP configuration) with what `config` sets: our name, the size of a
/// message, recipients, errors, the inactivity timeout. The rest (extensions, AUTH rules)
/// stays.
pub(crate) fn session_config(config: &Config, mut core: smtp_proto::server::Config) -> smtp_proto::server::Config {
    let limits = &config.limits;
    core.hostname = smtp_proto::server::HostName::new(&config.hostname);
    core.max_message_size = (limits.max_message_size > 0).then_some(limits.max_message_size);
    core.max_recipients = limits.max_recipients.max(1);
    core.max_errors = limits.max_errors.max(1);
    // Advertised only under TLS (the core's rule); messages carrying it leave only by DANE.
    core.capabilities.requiretls = true;
    core.timeouts = match limits.timeout {
        Some(t) => smtp_proto::server::Timeouts { command: t, data: t, tls_handshake: t },
        None => smtp_proto::server::Timeouts::default(),
    };
    core
}

impl MailServer {
    /// Prepares the server of `config`: reads and checks everything it names (the accounts;
    /// that alias members, catch-alls and `postmaster@` every domain reach an account (RFC
    /// 5321 §4.5.1); the TLS files; the DKIM keys; the smarthost's files), refuses a
    /// `data_dir` another server runs with, then creates `data_dir`, `mailboxes/` and
    /// `queue/` (owned by `user`).
    pub fn new(config: &Config) -> io::Result<Self> {
        if let Some(user) = config.user.as_deref() {
            check_user_access(config, user)?;
        }
        let checked = check(config)?;
        crate::mta::control::refuse_if_running(&config.data_dir)?;
        let user = config.user.as_deref();
        own_dir(&config.data_dir, user)?;
        own_dir(&config.mailboxes_dir(), user)?;
        let root = config.data_dir.join("queue");
        own_dir(&root, user)?;
        for sub in ["entries", "state"] {
            own_dir(&root.join(sub), user)?;
        }
        own_spool(&root.join("spool"), user)?;
        let queue = Queue::open(&root)?;
        // (On a full disk it is made later, by the first entry put there.)
        if let (Some(user), Ok(corrupt)) = (user, queue.corrupt_dir()) {
            privileges::chown_to(&corrupt, user)?;
        }
        own_dir(&crate::mta::reports::dir(&config.data_dir), user)?;
        // The MTA-STS policy cache and the TLS outcomes are written by the server's user.
        own_dir(&config.data_dir.join("mta-sts"), user)?;
        own_dir(&crate::mta::reports::dir(&config.data_dir).join("tlsrpt-out"), user)?;
        let reports = Arc::new(crate::mta::reports::Reports::open(config)?.with_signer(signer(config)?));
        let base = Base {
            tls_outcomes: reports.tls_outcomes(),
            data_dir: config.data_dir.clone(),
            queue,
            handoff: Handoff::default(),
            srs_secret: {
                // Like everything under data_dir, the SRS key belongs to the server's user.
                let srs_key = config.data_dir.join("srs.key");
                let secret = crate::mta::srs::load_or_create_secret(&srs_key)?;
                if let Some(user) = user {
                    privileges::chown_to(&srs_key, user)?;
                }
                secret
            },
            sites: Arc::new(crate::mta::web::Sites::new(config)),
        };
        let parts = assemble(config, checked, &base, user)?;

        let limits = &config.limits;
        // The trusted networks (this host by default) are exempt, as Postfix exempts $mynetworks.
        let exempt = config.trusted_networks.iter().map(|n| n.parse::<crate::limits::Network>());
        let exempt = exempt.collect::<Result<Vec<_>, _>>().map_err(|e| invalid(format!("trusted_networks: {e}")))?;
        let mut options = Options::new(&config.hostname)
            .max_clients(limits.max_clients)
            .max_connections_per_client(limits.max_connections_per_client)
            .max_connection_rate(limits.max_connection_rate)
            .max_auth_failures(limits.max_auth_failures)
            .limits_exempt(exempt)
            .auth_mechanisms(AuthMechanisms::none().with(AuthMechanisms::PLAIN).with(AuthMechanisms::LOGIN))
            .auth_optional(true)
            .proxy_from(config.listen.proxy.iter().copied())
            .min_data_rate(limits.min_data_rate);
        *options.config_mut() = session_config(config, *options.config());
        // With [acme]: the stored certificate, or a self-signed one until the CA's comes.
        let acme_cert = match &config.acme {
            Some(_) => {
                let dir = crate::mta::acme::Acme::dir(config);
                own_dir(&dir, user)?;
                Some(crate::mta::acme::Acme::initial(&dir, &config.acme_names())?)
            }
            None => None,
        };
        // One certificate for every listener, replaced in place by a reload or a renewal.
        let cert = match parts.cert.or(acme_cert) {
            Some(key) => {
                let resolver = Arc::new(CertResolver::new(key));
                options = options.tls(tls::server_config_with_resolver(resolver.clone())?);
                Some(resolver)
            }
            None => None,
        };

        let ctx = Arc::new(Context::new(base.queue.clone(), base.handoff.clone(), parts.settings));
        let mut handler =
            InboundHandler::new(parts.policy).with_min_free_space(&config.data_dir, limits.min_free_space);
        if let Some(spam) = crate::mta::spam::Spam::from_config(config).map_err(invalid)? {
            handler = handler.with_spam(spam);
        }
        if !config.milters.is_empty() {
            let list: Vec<String> = config.milters.iter().map(|m| m.address.to_string()).collect();
            tracing::info!(milters = %list.join(","), "milters on");
            handler = handler.with_milters(crate::mta::milter::Milters::new(&config.hostname, config.milters.clone()));
        }
        if let Some(auth) = parts.mail_auth {
            handler = handler.with_mail_auth(auth);
        }
        handler = handler.with_reports(reports.clone());
        let live = handler.live();
        let submission = (!config.listen.submission.is_empty() || !config.listen.submissions.is_empty())
            .then(|| Server::new(options.clone().auth_optional(false), Metered::submission(handler.clone())));
        let challenges = Arc::new(crate::mta::web::Challenges::default());
        let listen = &config.listen;
        let web = (!listen.https.is_empty() || !listen.http.is_empty())
            .then(|| crate::mta::web::Web::new(base.sites.clone(), challenges.clone(), cert.clone()).map(Arc::new))
            .transpose()?;
        let acme = match (&config.acme, &cert) {
            (Some(_), Some(resolver)) => Some(crate::mta::acme::Acme::new(config, resolver.clone(), challenges)?),
            _ => None,
        };
        let q = &config.queue;
        Ok(Self {
            smtp: Server::new(options, Metered::smtp(handler)),
            submission,
            workers: (ctx, q.workers, q.scan_interval),
            base,
            live,
            cert,
            web,
            acme,
            reports,
        })
    }

    /// Binds the listeners, becomes `user` (if configured), writes the pid file, starts the
    /// queue's workers, then serves until shut down (`SIGTERM`, `SIGINT`); `SIGHUP` reloads
    /// `config`'s file ([`crate::mta::reload`]), and the certificate files are looked at for
    /// a renewal every minute.
    pub fn bind_and_run(mut self, config: &Config) -> io::Result<()> {
        let pid_file = crate::mta::control::PidFile::this_process(&config.file);
        // The signals first: a SIGTERM as soon as the ports are bound must find its handler.
        let (ctx, n, scan) = self.workers.clone();
        let mut handles = vec![self.smtp.shutdown_handle()];
        handles.extend(self.submission.as_ref().map(Server::shutdown_handle));
        let mut configs = vec![self.smtp.config_handle()];
        configs.extend(self.submission.as_ref().map(Server::config_handle));
        let mut web_listeners = Vec::new();
        for (key, addrs, https) in [("https", &config.listen.https, true), ("http", &config.listen.http, false)] {
            for addr in addrs {
                let bound = crate::mta::web::Web::bind(*addr, https).map_err(|e| bind_error(config, key, addr, e))?;
                tracing::info!(bound = %bound.local_addr()?, "listening for {key} (MTA-STS, ACME)");
                web_listeners.push(bound);
            }
        }
        if let Some(web) = &self.web {
            for bound in web_listeners {
                web.spawn(bound)?;
            }
        }
        let sources = crate::mta::metrics::Sources { queue: Some(self.base.queue.clone()), cert: self.cert.clone() };
        crate::mta::metrics::get().set_sources(sources);
        let reloader =
            crate::mta::reload::Reloader::new(config.clone(), self.base, self.live, ctx.clone(), configs, self.cert);
        let reloader = Arc::new(reloader);
        signals(handles, reloader.clone())?;
        for addr in &config.listen.smtp {
            let bound = self.smtp.listen(addr).map_err(|e| bind_error(config, "smtp", addr, e))?;
            tracing::info!(%bound, hostname = config.hostname, "listening for SMTP");
        }
        if let Some(sub) = &mut self.submission {
            for addr in &config.listen.submission {
                let bound = sub.listen(addr).map_err(|e| bind_error(config, "submission", addr, e))?;
                tracing::info!(%bound, "listening for submission (STARTTLS, AUTH required)");
            }
            for addr in &config.listen.submissions {
                let bound = sub.listen_tls(addr).map_err(|e| bind_error(config, "submissions", addr, e))?;
                tracing::info!(%bound, "listening for submission over implicit TLS (AUTH required)");
            }
        }
        for addr in &config.listen.metrics {
            let listener = std::net::TcpListener::bind(addr).map_err(|e| bind_error(config, "metrics", addr, e))?;
            let bound = listener.local_addr()?;
            crate::mta::metrics::http::spawn(listener)?;
            tracing::info!(%bound, "serving metrics at GET /metrics");
        }
        if let Some(user) = &config.user {
            privileges::drop_to(user)?;
            tracing::info!(user, "running as {user}");
            // It re-reads the accounts file when it changes (user add, del, passwd): as `user`.
            privileges::check_readable(
                &config.accounts,
                user,
                "the accounts file",
                "chown {user}:dovecot {path}; chmod 640 {path}",
            )?;
            // A reload and a certificate renewal read these again, as `user`.
            let mut again = vec![(config.file.as_path(), "the config file")];
            if let Some(t) = &config.tls {
                again.push((t.cert.as_path(), "the TLS certificate"));
                again.push((t.key.as_path(), "the TLS key"));
            }
            for d in &config.domains {
                if let Some((_, key)) = &d.dkim {
                    again.push((key.as_path(), "a DKIM key"));
                }
            }
            for (path, what) in again {
                if let Err(e) = privileges::check_readable(path, user, what, "chown {user} {path}") {
                    tracing::warn!("a reload will fail: {e}");
                }
            }
        }
        let swept = ctx.queue.sweep()?;
        let (queue, handoff, dns) = (ctx.queue.clone(), ctx.handoff.clone(), ctx.settings().dns.clone());
        let workers = Workers::start(ctx, n, scan);
        tracing::info!(workers = n, swept, "queue running");
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = reloader.watch_certificates(stop.clone())?;
        let acme = self.acme.map(|a| a.spawn(stop.clone())).transpose()?;
        let reporter = self.reports.start_sender(queue, handoff, dns, stop.clone())?;
        // From here `smtp-std reload` finds the server (its signal handler is in place). A
        // pid file that cannot be written (a full disk) stops only that, not the mail.
        if let Err(e) = crate::mta::control::write_pid_file(&config.data_dir, &pid_file) {
            tracing::warn!(
                "{e}: `smtp-std reload` will not find this server; send SIGHUP to pid {} instead",
                std::process::id()
            );
        }
        let result = match self.submission {
            Some(sub) if config.listen.smtp.is_empty() => sub.run(),
            Some(sub) => {
                let running = sub.spawn();
                let result = self.smtp.run();
                let _ = running.shutdown();
                result
            }
            None => self.smtp.run(),
        };
        stop.store(true, Ordering::SeqCst);
        for w in watcher.into_iter().chain(acme) {
            let _ = w.join();
        }
        if let Some(r) = reporter {
            let _ = r.join();
        }
        workers.shutdown();
        crate::mta::control::remove_pid_file(&config.data_dir);
        result
    }
}

/// `SIGHUP`: a reload; `SIGTERM`, `SIGINT`: the graceful shutdown of `handles`' servers.
fn signals(handles: Vec<crate::ShutdownHandle>, reloader: Arc<crate::mta::reload::Reloader>) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            if signal == SIGHUP {
                tracing::info!("SIGHUP: reloading");
                reloader.reload();
                continue;
            }
            tracing::info!(signal, "shutting down");
            for h in &handles {
                h.shutdown();
            }
            return;
        }
    })?;
    Ok(())
}

/// A listener that could not be bound, with its address and the key that names it.
fn bind_error(config: &Config, key: &str, addr: &impl std::fmt::Display, e: io::Error) -> io::Error {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => " (another server listens there: stop it, or change the address)",
        io::ErrorKind::PermissionDenied => " (ports below 1024 need root: start as root with `user` set)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("{}: listen.{key}: cannot listen on {addr}: {e}{hint}", config.file.display()))
}

/// Before anything is created: the paths `user` will need after the privilege drop (to
/// write `data_dir`, to re-read the config, accounts, certificates and keys) are within its
/// reach, or the start is refused naming the path, its owner and mode, and the fix; the files
/// of an earlier `user` under `data_dir` are given to this one.
fn check_user_access(config: &Config, user: &str) -> io::Result<()> {
    use privileges::{check_access, Need};
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    check_access(&config.data_dir, user, Need::Write, "data_dir", None)?;
    check_access(&config.file, user, Need::Read, "the config file", None)?;
    let fix = "chown {user}:dovecot {path}; chmod 640 {path}";
    check_access(&config.accounts, user, Need::Read, "the accounts file", Some(fix))?;
    if let Some(t) = &config.tls {
        check_access(&t.cert, user, Need::Read, "[tls] cert", None)?;
        check_access(&t.key, user, Need::Read, "[tls] key", None)?;
    }
    for d in &config.domains {
        if let Some((_, key)) = &d.dkim {
            check_access(key, user, Need::Read, &format!("the dkim_key of {}", d.name), None)?;
        }
    }
    // After a change of `user`: what the earlier one made becomes this one's (only where a
    // top directory shows it, so that a start does not walk every mailbox each time).
    let (uid, _) = privileges::lookup(user)?;
    let tops =
        [config.data_dir.clone(), config.mailboxes_dir(), config.data_dir.join("queue"), config.data_dir.join("spool")];
    for top in tops {
        let owner = std::fs::metadata(&top).map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        if owner.is_ok_and(|o| o != uid.as_raw()) {
            privileges::give_tree_to(&top, user)?;
        }
    }
    Ok(())
}
