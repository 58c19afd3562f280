//! `[acme]`: the server's certificate from an ACME CA (RFC 8555) such as Let's Encrypt,
//! obtained and renewed on its own, for `hostname` and `mta-sts.<domain>` of every domain
//! whose MTA-STS policy we serve ([`crate::mta::config::Config::acme_names`]).
//!
//! - The account key, the certificate chain and its key live in `data_dir/acme/`
//!   (`account.key`, `cert.pem`, `key.pem`, `names`; files `0600`, the directory `0700`).
//! - At start the stored certificate is presented if it is there and was issued for the
//!   same names; otherwise a self-signed one until the CA's arrives (seconds, usually).
//! - Renewal at two thirds of the certificate's lifetime (day 60 of Let's Encrypt's 90);
//!   a failure is logged with what to check and retried after 1 minute, then 2, 4, ... at
//!   most 6 hours apart.
//! - A new certificate is written, then presented from the next handshake on by every
//!   listener (25, 465, 587 and the https listener): no restart.
//! - Challenges: `tls-alpn-01` (RFC 8737) on `[listen] https`, `http-01` on `[listen] http`
//!   ([`crate::mta::web`]). `[acme] ca` adds a CA trusted for the directory (a test CA).

pub mod protocol;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;

use crate::mta::config::{AcmeConfig, Config};
use crate::mta::web::client::Client;
use crate::mta::web::Challenges;
use crate::tls::CertResolver;

/// The first wait after a failed order; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest wait between two failed orders.
pub const RETRY_MAX: Duration = Duration::from_secs(6 * 3600);

/// Writes `data` to `path` privately (`0600`) and durably, replacing it whole (a temporary
/// file renamed over it).
pub(crate) fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = crate::mta::private::create(&tmp).map_err(|e| named(&tmp, e))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(|e| named(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| named(path, e))
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The ACME certificate of a server: its files, the CA, and the resolver it goes into.
pub struct Acme {
    config: AcmeConfig,
    names: Vec<String>,
    dir: PathBuf,
    client: Client,
    challenges: Arc<Challenges>,
    resolver: Arc<CertResolver>,
}

impl Acme {
    /// The files of `config`'s ACME state: `data_dir/acme/`.
    pub fn dir(config: &Config) -> PathBuf {
        config.data_dir.join("acme")
    }

    /// The certificate to present at start: the stored one when it was issued for `names`
    /// and loads, else a self-signed one for them (until the CA's arrives).
    pub fn initial(dir: &Path, names: &[String]) -> io::Result<Arc<CertifiedKey>> {
        if stored_names(dir).as_deref() == Some(names) {
            match crate::tls::certified_key_from_files(&dir.join("cert.pem"), &dir.join("key.pem")) {
                Ok(key) => return Ok(key),
                Err(e) => tracing::warn!("the stored ACME certificate cannot be used, ordering a new one: {e}"),
            }
        }
        let c = rcgen::generate_simple_self_signed(names.to_vec()).map_err(io::Error::other)?;
        crate::tls::certified_key_from_pem(c.cert.pem().as_bytes(), c.key_pair.serialize_pem().as_bytes())
    }

    /// The certificate manager of `config` (with `[acme]`), presenting through `resolver`
    /// and answering challenges through `challenges`.
    pub fn new(config: &Config, resolver: Arc<CertResolver>, challenges: Arc<Challenges>) -> io::Result<Self> {
        let acme = config.acme.clone().ok_or_else(|| io::Error::other("no [acme]"))?;
        let client = Client::new(acme.ca.as_deref())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: acme.ca: {e}", config.file.display())))?;
        Ok(Self { config: acme, names: config.acme_names(), dir: Self::dir(config), client, challenges, resolver })
    }

    /// When the present certificate is due for renewal (Unix seconds): two thirds into its
    /// lifetime; now when there is none for our names.
    fn due(&self) -> i64 {
        if stored_names(&self.dir).as_deref() != Some(self.names.as_slice()) {
            return 0;
        }
        let current = self.resolver.current();
        match current.cert.first().and_then(|c| crate::mta::x509::validity(c)) {
            Some((nb, na)) if na > nb => nb + (na - nb) * 2 / 3,
            _ => 0,
        }
    }

    /// Orders a certificate, stores it and presents it.
    pub fn renew(&self) -> Result<(), String> {
        let key = protocol::AccountKey::load_or_create(&self.dir.join("account.key"))?;
        let order = protocol::Order {
            directory: &self.config.directory,
            email: self.config.email.as_deref(),
            client: &self.client,
            key: &key,
            challenge: self.config.challenge,
            challenges: &self.challenges,
        };
        let (chain, cert_key) = protocol::obtain(&order, &self.names)?;
        let certified = crate::tls::certified_key_from_pem(chain.as_bytes(), cert_key.as_bytes())
            .map_err(|e| format!("the certificate from {}: {e}", self.config.directory))?;
        let store = || -> io::Result<()> {
            write_private(&self.dir.join("key.pem"), cert_key.as_bytes())?;
            write_private(&self.dir.join("cert.pem"), chain.as_bytes())?;
            write_private(&self.dir.join("names"), self.names.join("\n").as_bytes())
        };
        store().map_err(|e| format!("storing the new certificate: {e}"))?;
        self.resolver.set(certified);
        Ok(())
    }

    /// Starts the thread that renews the certificate when due, until `stop`.
    pub fn spawn(self, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name("acme".into()).spawn(move || {
            let mut retry = RETRY_FIRST;
            let mut wait_until = self.due();
            loop {
                while now() < wait_until {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                let names = self.names.join(", ");
                match self.renew() {
                    Ok(()) => {
                        retry = RETRY_FIRST;
                        wait_until = self.due();
                        let valid = self.resolver.current().cert.first().and_then(|c| crate::mta::x509::validity(c));
                        tracing::info!(
                            names,
                            directory = self.config.directory,
                            not_after = valid.map_or(0, |v| v.1),
                            renew_in_s = wait_until - now(),
                            "ACME certificate issued: every listener presents it from the next handshake on"
                        );
                    }
                    Err(e) => {
                        tracing::error!(
                            names,
                            retry_in_s = retry.as_secs(),
                            "ACME: no certificate from {}: {e}",
                            self.config.directory
                        );
                        wait_until = now() + retry.as_secs() as i64;
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            }
        })
    }
}

/// The names the stored certificate was issued for.
fn stored_names(dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("names")).ok()?;
    Some(text.lines().map(str::to_owned).collect())
}
