//! The mail server of a config file: [`crate::config`] → accounts, mailboxes, listeners, the
//! [`crate::inbound`] handler on the embeddable [`Server`], privileges dropped after binding.
//!
//! ```no_run
//! let config = smtp_std::config::Config::load("/etc/smtp-std/smtp-std.toml".as_ref())?;
//! smtp_std::mailserver::MailServer::new(&config)?.bind_and_run(&config)
//! # ; Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::path::Path;
use std::sync::Arc;

use smtp_proto::ehlo::AuthMechanisms;

use crate::accounts::{AccountsFile, Directory, Resolution};
use crate::config::Config;
use crate::inbound::{InboundHandler, InboundPolicy, Route, Store};
use crate::lmtp::{LmtpOptions, LmtpTarget};
use crate::maildir::{create_dir_durably, Maildir};
use crate::{privileges, tls, Options, Server};

/// A mail server ready to bind its ports.
pub struct MailServer {
    server: Server<InboundHandler>,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The SPF/DKIM/DMARC policy: DNS (`dns`, or the system's resolvers), the networks not
/// checked, and the largest message read back (our `Received:` on top of `max_message_size`).
#[cfg(feature = "auth")]
pub fn mail_auth_policy(
    hostname: &str,
    dns: Option<std::net::SocketAddr>,
    timeout: std::time::Duration,
    trusted_networks: &[String],
    max_message_size: u64,
) -> Result<crate::auth::MailAuthPolicy, String> {
    let trusted =
        trusted_networks.iter().map(|n| crate::auth::verify::parse_network(n)).collect::<Result<Vec<_>, _>>()?;
    let resolver = crate::auth::Dns::with_timeout(dns, timeout, 2).map_err(|e| format!("DNS: {e}"))?;
    tracing::info!(dns = ?dns, trusted = ?trusted_networks, "SPF, DKIM and DMARC checks on");
    Ok(crate::auth::MailAuthPolicy {
        verifier: crate::auth::Verifier::new(resolver, hostname.to_owned()),
        trusted,
        max_message_size: if max_message_size > 0 { max_message_size + 65536 } else { 64 << 20 },
    })
}

/// Creates `dir` (durably) and gives it to `user` when there is one.
fn own_dir(dir: &Path, user: Option<&str>) -> io::Result<()> {
    create_dir_durably(dir).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    if let Some(user) = user {
        privileges::chown_to(dir, user)?;
    }
    Ok(())
}

impl MailServer {
    /// Prepares the server of `config`: reads the accounts, creates `data_dir` and
    /// `mailboxes/` (owned by `user`), loads the TLS files, checks that `postmaster@` every
    /// domain reaches someone (RFC 5321 §4.5.1).
    pub fn new(config: &Config) -> io::Result<Self> {
        let accounts = Arc::new(AccountsFile::load(&config.accounts).map_err(|e| invalid(e.to_string()))?);
        let directory = Arc::new(Directory::new(config.domains.clone(), accounts.clone()));
        for d in &config.domains {
            let postmaster = format!("postmaster@{}", d.name);
            if !matches!(directory.resolve(&postmaster), Resolution::Local(_)) {
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
        let mut options = Options::new(&config.hostname)
            .max_clients(limits.max_clients)
            .size((limits.max_message_size > 0).then_some(limits.max_message_size))
            .auth_mechanisms(AuthMechanisms::none().with(AuthMechanisms::PLAIN).with(AuthMechanisms::LOGIN))
            .auth_optional(true);
        if let Some(t) = limits.timeout {
            options = options.socket_timeout(t);
        }
        let core = options.config_mut();
        core.max_recipients = limits.max_recipients.max(1);
        core.max_errors = limits.max_errors.max(1);
        if let Some(t) = &config.tls {
            options = options.tls(tls::server_config_from_files(&t.cert, &t.key)?);
        }
        let logins = Some(accounts);
        let store = match &config.delivery.lmtp {
            Some(lmtp) => {
                let target = LmtpTarget::parse(lmtp).map_err(invalid)?;
                let spool = config.data_dir.join("spool");
                own_dir(&spool, user)?;
                for sub in ["tmp", "new", "cur"] {
                    own_dir(&spool.join(sub), user)?;
                }
                tracing::info!(lmtp = %target, "delivering by LMTP");
                Store::Lmtp { target, options: LmtpOptions::new(&config.hostname), spool: Maildir::create(&spool)? }
            }
            None => Store::Maildirs(mailboxes),
        };
        let route = Route::Accounts { directory, store };
        #[allow(unused_mut)]
        let mut handler = InboundHandler::new(InboundPolicy { hostname: config.hostname.clone(), route, logins });
        #[cfg(feature = "auth")]
        if config.mail_auth {
            let timeout = config.dns.timeout.unwrap_or(std::time::Duration::from_secs(3));
            let policy = mail_auth_policy(
                &config.hostname,
                config.dns.server,
                timeout,
                &config.trusted_networks,
                limits.max_message_size,
            )
            .map_err(invalid)?;
            handler = handler.with_mail_auth(policy);
        } else {
            tracing::info!("SPF, DKIM and DMARC checks off (mail_auth = false)");
        }
        Ok(Self { server: Server::new(options, handler) })
    }

    /// Binds the listeners, becomes `user` (if configured), then serves until shut down.
    pub fn bind_and_run(mut self, config: &Config) -> io::Result<()> {
        for addr in &config.listen.smtp {
            let bound = self.server.listen(addr)?;
            tracing::info!(%bound, hostname = config.hostname, "listening for SMTP");
        }
        if let Some(user) = &config.user {
            privileges::drop_to(user)?;
            tracing::info!(user, "running as {user}");
        }
        self.server.run()
    }
}
