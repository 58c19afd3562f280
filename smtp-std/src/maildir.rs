//! Delivery into a Maildir, and the handler of the `smtp-std serve` program.
//!
//! Each message streams into `tmp/<unique>` (never whole in memory), is `fsync`ed, renamed into
//! `new/`, and `new/` is `fsync`ed — all before the `250` goes out. A message that does not
//! end well (refused, connection lost) leaves nothing in `new/` and its `tmp/` file is removed.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use smtp_proto::data::DataError;
use smtp_proto::parse::{Domain, ForwardPath, RcptParams};
#[cfg(feature = "auth")]
use smtp_proto::parse::{MailParams, ReversePath};
use smtp_proto::Reply;

use crate::handler::{AuthRequest, Decision, Handler, Session};
use crate::received::received_header;

/// A Maildir: `tmp/`, `new/` and `cur/` under one directory.
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
    host: String,
}

/// Unique within this process (the `Q` part of a Maildir name).
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The host name of this machine (for Maildir names and defaults), `localhost` if unknown.
pub fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Maildir {
    /// Opens `root`, creating `tmp/`, `new/` and `cur/` as needed.
    pub fn create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for sub in ["tmp", "new", "cur"] {
            fs::create_dir_all(root.join(sub))?;
        }
        // The Maildir spec: '/' and ':' in the host name are written as octal escapes.
        let host = system_hostname().replace('/', "\\057").replace(':', "\\072");
        Ok(Self { root, host })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A unique file name: `<secs>.M<usec>P<pid>Q<counter>.<host>` (the Maildir convention).
    pub fn unique_name(&self) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let q = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{}.M{}P{}Q{}.{}", now.as_secs(), now.subsec_micros(), std::process::id(), q, self.host)
    }

    /// Starts a message: creates `tmp/<unique>`.
    pub fn begin(&self) -> io::Result<Delivery> {
        let name = self.unique_name();
        let tmp = self.root.join("tmp").join(&name);
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(Delivery {
            file: Some(BufWriter::with_capacity(64 * 1024, file)),
            tmp,
            name,
            size: 0,
            root: self.root.clone(),
        })
    }
}

/// A message being written into `tmp/`. Dropped without [`Delivery::commit`], its file is
/// removed.
#[derive(Debug)]
pub struct Delivery {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    name: String,
    size: u64,
    root: PathBuf,
}

impl Delivery {
    /// The unique name (also used as the queue id in replies and logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Octets written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends bytes to the message.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("delivery already finished"))?;
        f.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Makes the message durable: flush, `fsync` the file, rename it into `new/`, `fsync`
    /// `new/`. Returns the final path.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        let f = self.file.take().ok_or_else(|| io::Error::other("delivery already finished"))?;
        let file = f.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        self.publish(&self.root.clone())
    }

    /// Reads the message written so far back from `tmp/` (after a flush), refusing one larger
    /// than `limit` octets with [`io::ErrorKind::FileTooLarge`].
    pub fn read_back(&mut self, limit: u64) -> io::Result<Vec<u8>> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("delivery already finished"))?;
        f.flush()?;
        if self.size > limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "message too large to read back"));
        }
        let mut content = Vec::with_capacity(self.size as usize);
        File::open(&self.tmp)?.take(limit.saturating_add(1)).read_to_end(&mut content)?;
        if content.len() as u64 > limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "message too large to read back"));
        }
        Ok(content)
    }

    /// Like [`Delivery::commit`], but the stored message is `prefix` (header fields added
    /// after the content was checked) followed by `content` (what [`Delivery::read_back`]
    /// gave), and it goes into the Maildir++ subfolder `folder` (`.Junk`: created with its
    /// `tmp/`, `new/`, `cur/` and `maildirfolder` as needed) when given.
    pub fn commit_with(mut self, prefix: &[u8], content: &[u8], folder: Option<&str>) -> io::Result<PathBuf> {
        drop(self.file.take().ok_or_else(|| io::Error::other("delivery already finished"))?);
        let mut file = File::create(&self.tmp)?;
        file.write_all(prefix)?;
        file.write_all(content)?;
        file.sync_all()?;
        drop(file);
        let dir = match folder {
            Some(name) => {
                let dir = self.root.join(name);
                for sub in ["tmp", "new", "cur"] {
                    fs::create_dir_all(dir.join(sub))?;
                }
                if !dir.join("maildirfolder").exists() {
                    File::create(dir.join("maildirfolder"))?;
                    File::open(&dir)?.sync_all()?;
                    File::open(&self.root)?.sync_all()?;
                }
                dir
            }
            None => self.root.clone(),
        };
        self.publish(&dir)
    }

    /// Renames the synced `tmp/` file into `<dir>/new/` and syncs that directory.
    fn publish(&mut self, dir: &Path) -> io::Result<PathBuf> {
        let new_dir = dir.join("new");
        let dest = new_dir.join(&self.name);
        fs::rename(&self.tmp, &dest)?;
        File::open(&new_dir)?.sync_all()?;
        self.tmp = PathBuf::new();
        Ok(dest)
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.file = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// AUTH users: `user:password` lines (`#` comments and blank lines ignored).
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: HashMap<String, String>,
}

impl Users {
    /// Parses the users file format.
    pub fn parse(text: &str) -> io::Result<Self> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((user, pass)) = line.split_once(':') else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("line {}: expected user:password", n + 1),
                ));
            };
            users.insert(user.to_owned(), pass.to_owned());
        }
        Ok(Self { users })
    }

    /// Reads and parses a users file.
    pub fn load(path: &Path) -> io::Result<Self> {
        let text =
            fs::read_to_string(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// Whether `user` exists with `password` (compared in constant time).
    pub fn check(&self, user: &str, password: &str) -> bool {
        let Some(expected) = self.users.get(user) else {
            return false;
        };
        let (a, b) = (expected.as_bytes(), password.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Policy of the [`MaildirHandler`].
#[derive(Debug)]
pub struct MaildirPolicy {
    /// Where messages go.
    pub maildir: Maildir,
    /// Our name, in the `Received:` header.
    pub hostname: String,
    /// Accepted recipient domains (lower case); empty: accept every recipient. Other domains
    /// are refused `550 5.7.1 Relay access denied` unless the client authenticated.
    pub domains: Vec<String>,
    /// AUTH users; `None`: every AUTH is refused.
    pub users: Option<Users>,
}

/// The handler of `smtp-std serve`: stores every accepted message into a Maildir with a
/// `Received:` header, checks AUTH against a [`Users`] list and recipients against the
/// accepted domains.
///
/// With [`MaildirHandler::with_mail_auth`] (feature `auth`) it also checks mail from the
/// outside: SPF at `MAIL FROM` (remembered for the transaction), DKIM and DMARC at the end of
/// DATA on the message read back from `tmp/`. It then prepends `Authentication-Results:` and
/// applies the From domain's DMARC policy: delivered into `new/` (pass, or `p=none`),
/// into `.Junk/new/` (`p=quarantine`), or refused `550 5.7.1` and removed (`p=reject`). A DNS
/// failure is answered `451` and nothing is stored: `4.7.24` for SPF, `4.7.5` for a DKIM key,
/// `4.7.0` for DMARC (RFC 7372, RFC 3463; see [`crate::auth::Lookup::status`]).
#[derive(Debug, Clone)]
pub struct MaildirHandler {
    policy: Arc<MaildirPolicy>,
    current: Option<Delivery>,
    #[cfg(feature = "auth")]
    mail_auth: Option<Arc<crate::auth::MailAuthPolicy>>,
    /// SPF of the current transaction, when the checks apply to it.
    #[cfg(feature = "auth")]
    spf: Option<crate::auth::SpfCheck>,
}

impl MaildirHandler {
    /// A handler with this policy.
    pub fn new(policy: MaildirPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
            current: None,
            #[cfg(feature = "auth")]
            mail_auth: None,
            #[cfg(feature = "auth")]
            spf: None,
        }
    }

    /// Checks SPF, DKIM and DMARC on mail from the clients `auth` applies to (see the type's
    /// notes).
    #[cfg(feature = "auth")]
    pub fn with_mail_auth(mut self, auth: crate::auth::MailAuthPolicy) -> Self {
        self.mail_auth = Some(Arc::new(auth));
        self
    }

    /// The end of DATA with the checks: verdict, header, folder or refusal.
    #[cfg(feature = "auth")]
    fn end_checked(
        &mut self,
        auth: &crate::auth::MailAuthPolicy,
        spf: &crate::auth::SpfCheck,
        mut d: Delivery,
    ) -> Decision {
        use crate::auth::Action;
        let content = match d.read_back(auth.max_message_size) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                return Decision::reply(552, Some((5, 3, 4)), "Message too big to authenticate");
            }
            Err(e) => {
                tracing::error!("cannot read the message back: {e}");
                return Reply::LOCAL_ERROR.into();
            }
        };
        let verdict = auth.verifier.verify(spf, &content);
        let name = d.name().to_owned();
        let folder = match verdict.action {
            Action::TempFail(lookup) => {
                tracing::warn!(id = name, reason = verdict.reason, ?lookup, "DNS failure: message deferred");
                return temp_fail_reply(lookup);
            }
            Action::Reject => {
                tracing::info!(id = name, reason = verdict.reason, "message rejected (DMARC)");
                let text = format!("{} (DMARC)", verdict.reason);
                return Decision::reply(550, Some((5, 7, 1)), text);
            }
            Action::Junk => Some(".Junk"),
            Action::Inbox => None,
        };
        let size = content.len() + verdict.header.len();
        match d.commit_with(verdict.header.as_bytes(), &content, folder) {
            Ok(path) => {
                tracing::info!(path = %path.display(), size, reason = verdict.reason, junk = folder.is_some(), "stored message");
                Decision::reply(250, Some((2, 0, 0)), format!("Ok: queued as {name}"))
            }
            Err(e) => {
                tracing::error!("cannot store the message: {e}");
                Reply::LOCAL_ERROR.into()
            }
        }
    }
}

impl Clone for Delivery {
    /// A clone of a delivery in progress is never useful: handlers are cloned only between
    /// connections, when no message is open. The clone is an empty, finished delivery.
    fn clone(&self) -> Self {
        Delivery { file: None, tmp: PathBuf::new(), name: self.name.clone(), size: 0, root: self.root.clone() }
    }
}

/// The reply when a lookup of the checks failed: `451`, nothing stored, the client retries.
/// The enhanced status code is in the security class `4.7.x`, never `4.4.3` (a routing
/// failure), and names the check (RFC 7372 and RFC 3463, see [`crate::auth::Lookup::status`]):
/// `451 4.7.24` SPF validation error (SPF `temperror`), `451 4.7.5` a DKIM key could not be
/// fetched, `451 4.7.0` the DMARC record could not be fetched (or DKIM + DMARC timed out).
#[cfg(feature = "auth")]
fn temp_fail_reply(lookup: crate::auth::Lookup) -> Decision {
    use crate::auth::Lookup;
    let text = match lookup {
        Lookup::Spf => "SPF validation error: temporary DNS failure, try again later",
        Lookup::DkimKey => "DKIM key not available: temporary DNS failure, try again later",
        Lookup::Dmarc => "DMARC policy not available: temporary DNS failure, try again later",
    };
    Decision::reply(451, Some(lookup.status()), text)
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

impl Handler for MaildirHandler {
    fn auth(&mut self, _session: &Session, auth: &AuthRequest<'_>) -> Decision {
        let ok = self.policy.users.as_ref().is_some_and(|u| u.check(auth.identity, auth.secret))
            && auth.authzid.is_none_or(|z| z == auth.identity);
        if ok {
            Decision::Accept
        } else {
            Reply::AUTH_FAILED.into()
        }
    }

    #[cfg(feature = "auth")]
    fn mail_from(&mut self, session: &Session, from: &ReversePath<'_>, _params: &MailParams<'_>) -> Decision {
        self.spf = None;
        let Some(auth) = self.mail_auth.clone().filter(|a| a.applies_to(session)) else {
            return Decision::Accept;
        };
        let from = crate::handler::reverse_path_string(from);
        let spf = auth.verifier.check_spf(session.peer.ip(), session.helo.as_deref().unwrap_or(""), &from);
        tracing::info!(result = ?spf.result(), domain = spf.domain(), "spf");
        if let Some(reason) = spf.temporary() {
            tracing::warn!(reason, "SPF: DNS failure");
            return temp_fail_reply(crate::auth::Lookup::Spf);
        }
        self.spf = Some(spf);
        Decision::Accept
    }

    fn rcpt_to(&mut self, session: &Session, to: &ForwardPath<'_>, _params: &RcptParams<'_>) -> Decision {
        let p = &self.policy;
        if p.domains.is_empty() || session.user.is_some() || domain_accepted(&p.domains, to) {
            Decision::Accept
        } else {
            Reply::RELAY_DENIED.into()
        }
    }

    fn data_start(&mut self, session: &Session) -> Decision {
        self.current = None;
        match self.policy.maildir.begin() {
            Ok(mut d) => {
                let header = received_header(session, &self.policy.hostname, d.name(), SystemTime::now());
                if let Err(e) = d.write(header.as_bytes()) {
                    tracing::error!("cannot write into {}: {e}", self.policy.maildir.path().display());
                    return Reply::LOCAL_ERROR.into();
                }
                self.current = Some(d);
                Decision::Accept
            }
            Err(e) => {
                tracing::error!("cannot create a message in {}/tmp: {e}", self.policy.maildir.path().display());
                Reply::LOCAL_ERROR.into()
            }
        }
    }

    fn data_chunk(&mut self, _session: &Session, chunk: &[u8]) -> io::Result<()> {
        match self.current.as_mut() {
            Some(d) => d.write(chunk),
            None => Err(io::Error::other("no message open")),
        }
    }

    fn data_end(&mut self, _session: &Session, _size: u64) -> Decision {
        let Some(d) = self.current.take() else {
            return Reply::LOCAL_ERROR.into();
        };
        #[cfg(feature = "auth")]
        if let (Some(auth), Some(spf)) = (self.mail_auth.clone(), self.spf.take()) {
            return self.end_checked(&auth, &spf, d);
        }
        let (name, size) = (d.name().to_owned(), d.size());
        match d.commit() {
            Ok(path) => {
                tracing::info!(path = %path.display(), size, "stored message");
                Decision::reply(250, Some((2, 0, 0)), format!("Ok: queued as {name}"))
            }
            Err(e) => {
                tracing::error!("cannot store the message: {e}");
                Reply::LOCAL_ERROR.into()
            }
        }
    }

    fn data_abort(&mut self, _session: &Session, error: Option<DataError>) {
        if let Some(d) = self.current.take() {
            tracing::info!(?error, id = d.name(), "message discarded");
        }
    }

    fn close(&mut self, _session: &Session) {
        self.current = None;
    }
}
