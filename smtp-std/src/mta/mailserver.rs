//! The mail server of a config file: [`crate::mta::config`] → accounts, mailboxes, listeners, the
//! [`crate::mta::inbound`] handler on the embeddable [`Server`], the outbound queue and its
//! workers, privileges dropped after binding.
//!
//! Listeners: `smtp` (port 25: mail for our domains; AUTH optional, offered under TLS),
//! `submission` (587: STARTTLS, AUTH required before MAIL) and `submissions` (465: implicit
//! TLS, AUTH required). One handler serves all: an authenticated account may send to any
//! domain (as its own addresses only), everyone else only to ours.
//!
//! ```no_run
//! let config = smtp_std::mta::config::Config::load("/etc/smtp-std/smtp-std.toml".as_ref())?;
//! smtp_std::mta::mailserver::MailServer::new(&config)?.bind_and_run(&config)
//! # ; Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::path::Path;
use std::sync::Arc;

use smtp_proto::ehlo::AuthMechanisms;

use crate::lmtp::{LmtpOptions, LmtpTarget};
use crate::mta::accounts::{AccountsFile, Directory};
use crate::mta::config::Config;
use crate::mta::inbound::{InboundHandler, InboundPolicy, Outgoing, Route};
use crate::mta::mailbox::Store;
use crate::mta::maildir::{create_dir_durably, Maildir};
use crate::mta::privileges;
use crate::{tls, Options, Server};

/// A mail server ready to bind its ports.
pub struct MailServer {
    /// Port 25.
    smtp: Server<InboundHandler>,
    /// Ports 587 and 465 (AUTH required).
    submission: Option<Server<InboundHandler>>,
    /// The queue's workers to start (the submission handler hands them new entries through
    /// the context's [`crate::mta::queue::worker::Handoff`]).
    workers: Option<(Arc<crate::mta::queue::worker::Context>, usize, std::time::Duration)>,
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
    tracing::info!(dns = ?dns, trusted = ?trusted_networks, "SPF, DKIM and DMARC checks on");
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

impl MailServer {
    /// Prepares the server of `config`: reads the accounts, creates `data_dir`, `mailboxes/`
    /// and `queue/` (owned by `user`), loads the TLS files and DKIM keys, checks that
    /// `postmaster@` every domain reaches someone (RFC 5321 §4.5.1).
    pub fn new(config: &Config) -> io::Result<Self> {
        if !config.accounts.exists() {
            return Err(invalid(format!(
                "{}: accounts: the accounts file {} does not exist; add the first account with \
                 `smtp-std user add you@{} --config {}` (it creates the file)",
                config.file.display(),
                config.accounts.display(),
                config.domains.first().map_or("example.org", |d| d.name.as_str()),
                config.file.display()
            )));
        }
        if let Some(user) = config.user.as_deref() {
            check_user_access(config, user)?;
        }
        let accounts = Arc::new(AccountsFile::load(&config.accounts).map_err(|e| invalid(e.to_string()))?);
        let directory = Arc::new(Directory::new(config.domains.clone(), accounts.clone()));
        for d in &config.domains {
            let postmaster = format!("postmaster@{}", d.name);
            if !directory.resolve(&postmaster).is_deliverable() {
                return Err(invalid(format!(
                    "{}: {postmaster} reaches no account: mail to it must always be accepted (RFC 5321 4.5.1); \
                     add `postmaster = \"you\"` under [domain.aliases] of {}, or the account",
                    config.file.display(),
                    d.name
                )));
            }
        }
        let user = config.user.as_deref();
        own_dir(&config.data_dir, user)?;
        let mailboxes = config.mailboxes_dir();
        own_dir(&mailboxes, user)?;

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
            .size((limits.max_message_size > 0).then_some(limits.max_message_size))
            .auth_mechanisms(AuthMechanisms::none().with(AuthMechanisms::PLAIN).with(AuthMechanisms::LOGIN))
            .auth_optional(true)
            .proxy_from(config.listen.proxy.iter().copied())
            .min_data_rate(limits.min_data_rate);
        if let Some(t) = limits.timeout {
            options = options.socket_timeout(t);
        }
        let core = options.config_mut();
        core.max_recipients = limits.max_recipients.max(1);
        core.max_errors = limits.max_errors.max(1);
        if let Some(t) = &config.tls {
            options = options.tls(tls::server_config_from_files(&t.cert, &t.key)?);
        }
        let store = Arc::new(match &config.delivery.lmtp {
            Some(lmtp) => {
                let target = LmtpTarget::parse(lmtp).map_err(invalid)?;
                let spool = own_spool(&config.data_dir.join("spool"), user)?;
                tracing::info!(lmtp = %target, "delivering by LMTP");
                Store::Lmtp { target, options: LmtpOptions::new(&config.hostname), spool }
            }
            None => Store::Maildirs(mailboxes),
        });

        let (outgoing, workers) = {
            use crate::mta::queue::worker::{Context, Local, Outbound, Smarthost};
            let root = config.data_dir.join("queue");
            own_dir(&root, user)?;
            for sub in ["entries", "state"] {
                own_dir(&root.join(sub), user)?;
            }
            let queue = crate::mta::queue::Queue::open(&root)?;
            // (On a full disk it is made later, by the first entry put there.)
            if let (Some(user), Ok(corrupt)) = (user, queue.corrupt_dir()) {
                privileges::chown_to(&corrupt, user)?;
            }
            own_spool(&root.join("spool"), user)?;
            let o = &config.outbound;
            let smarthost = match &o.smarthost {
                Some(server) => {
                    let auth = match (&o.smarthost_user, &o.smarthost_password_file) {
                        (Some(user), Some(file)) => {
                            let text = std::fs::read_to_string(file).map_err(|e| {
                                invalid(format!(
                                    "{}: outbound.smarthost_password_file {}: {e}",
                                    config.file.display(),
                                    file.display()
                                ))
                            })?;
                            Some(crate::client::Auth {
                                user: user.clone(),
                                password: text.lines().next().unwrap_or("").to_owned(),
                            })
                        }
                        _ => None,
                    };
                    let tls_config = match &o.smarthost_ca {
                        Some(ca) => Some(crate::client::tls_config_from_ca_file(ca).map_err(|e| {
                            invalid(format!("{}: outbound.smarthost_ca {}: {e}", config.file.display(), ca.display()))
                        })?),
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
            let timeout = config.dns.timeout.unwrap_or(std::time::Duration::from_secs(3));
            let dns = crate::mta::auth::Dns::with_timeout(config.dns.server, timeout, 2)?;
            let q = &config.queue;
            let ctx = Arc::new(Context {
                queue: queue.clone(),
                schedule: crate::mta::queue::Schedule {
                    retry: q.retry.clone(),
                    lifetime: q.lifetime,
                    delay_warning: q.delay_warning,
                },
                outbound: Outbound {
                    hostname: config.hostname.clone(),
                    port: o.port.unwrap_or(25),
                    bind: o.bind,
                    smarthost,
                    timeout: o.timeout,
                },
                dns,
                local: Some(Local { directory: directory.clone(), store: store.clone() }),
                pool: Default::default(),
                handoff: Default::default(),
                unwritten: Default::default(),
            });
            let handoff = ctx.handoff.clone();
            let outgoing = Outgoing {
                queue,
                notify: Box::new(move |id| handoff.attempt_now(id)),
                first_attempt_after: q.retry.first().copied().unwrap_or(std::time::Duration::from_secs(300)),
                sign: signer(config)?,
                srs_secret: crate::mta::srs::load_or_create_secret(&config.data_dir.join("srs.key"))?,
            };
            (Some(outgoing), Some((ctx, q.workers, q.scan_interval)))
        };

        let route = Route::Accounts { directory, store };
        let mut handler = InboundHandler::new(InboundPolicy {
            hostname: config.hostname.clone(),
            route,
            logins: Some(accounts),
            outgoing,
        })
        .with_min_free_space(&config.data_dir, limits.min_free_space);
        if config.mail_auth {
            let timeout = config.dns.timeout.unwrap_or(std::time::Duration::from_secs(3));
            let policy = mail_auth_policy(&config.hostname, config.dns.server, timeout, &config.trusted_networks)
                .map_err(invalid)?;
            handler = handler.with_mail_auth(policy);
        } else {
            tracing::info!("SPF, DKIM and DMARC checks off (mail_auth = false)");
        }
        if !config.milters.is_empty() {
            let list: Vec<String> = config.milters.iter().map(|m| m.address.to_string()).collect();
            tracing::info!(milters = ?list, "milters on");
            handler = handler.with_milters(crate::mta::milter::Milters::new(&config.hostname, config.milters.clone()));
        }
        let submission = (!config.listen.submission.is_empty() || !config.listen.submissions.is_empty())
            .then(|| Server::new(options.clone().auth_optional(false), handler.clone()));
        Ok(Self { smtp: Server::new(options, handler), submission, workers })
    }

    /// Binds the listeners, becomes `user` (if configured), starts the queue's workers, then
    /// serves until shut down.
    pub fn bind_and_run(mut self, config: &Config) -> io::Result<()> {
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
        }
        let _workers = match self.workers.take() {
            Some((ctx, n, scan)) => {
                let swept = ctx.queue.sweep()?;
                let workers = crate::mta::queue::worker::Workers::start(ctx, n, scan);
                tracing::info!(workers = n, swept, "queue running");
                Some(workers)
            }
            None => None,
        };
        let mut handles = vec![self.smtp.shutdown_handle()];
        handles.extend(self.submission.as_ref().map(Server::shutdown_handle));
        shutdown_on_signals(handles)?;
        match self.submission {
            Some(sub) if config.listen.smtp.is_empty() => sub.run(),
            Some(sub) => {
                let running = sub.spawn();
                let result = self.smtp.run();
                let _ = running.shutdown();
                result
            }
            None => self.smtp.run(),
        }
    }
}
