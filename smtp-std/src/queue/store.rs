//! The queue's files under `<data_dir>/queue/`: one entry per message.
//!
//! ```text
//! queue/msg/<id>   the message, written once (fsynced, then its directory)
//! queue/env/<id>   envelope and per-recipient state (TOML), replaced atomically
//!                  (env/<id>.tmp, fsync, rename, fsync env/)
//! ```
//!
//! An entry exists once `env/<id>` exists: [`Queue::submit`] writes the message first and the
//! envelope last, so a crash in between leaves a message without envelope, which was never
//! acknowledged and is removed at start ([`Queue::sweep`]). One writer at a time per entry:
//! [`Queue::lock`] takes an exclusive `flock` on `msg/<id>` (never renamed, so the lock stays
//! with the entry) — the delivery workers and the `smtp-std queue` commands both take it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// What became of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not delivered yet: tried again at the next attempt.
    Pending,
    /// Delivered (a remote `250`, or stored in a local mailbox).
    Delivered,
    /// Failed for good (a `5xx`, or the lifetime ran out); the sender was told.
    Bounced,
}

/// One recipient of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address.
    pub address: String,
    /// Its state.
    pub state: State,
    /// RFC 3461 ORCPT as given (`rfc822;bob@example.org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    /// RFC 3461 NOTIFY as the sender gave it (`NEVER`, or `SUCCESS,FAILURE,DELAY` words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// The last reply or error, for people (`550 5.1.1 user unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<String>,
    /// The host that gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
    /// Attempts made for this recipient.
    #[serde(default)]
    pub attempts: u32,
}

impl Recipient {
    /// A pending recipient.
    pub fn new(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            state: State::Pending,
            orcpt: None,
            notify: None,
            last_reply: None,
            remote_mta: None,
            attempts: 0,
        }
    }

    /// Whether NOTIFY asks for (or, absent, defaults to) a report of `word`
    /// (`SUCCESS`, `FAILURE`, `DELAY`): without NOTIFY, failures and delays are reported.
    pub fn wants(&self, word: &str) -> bool {
        match &self.notify {
            None => word != "SUCCESS",
            Some(n) => n.split(',').any(|w| w.trim().eq_ignore_ascii_case(word)),
        }
    }
}

/// One queued message: envelope and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's id (file name).
    pub id: String,
    /// Envelope sender; `""` for `<>` (a bounce: never bounced itself).
    pub from: String,
    /// When we accepted it (Unix seconds).
    pub arrival: u64,
    /// When to try next (Unix seconds). Written before each attempt starts.
    pub next_attempt: u64,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// Held by the operator: no attempt until released.
    #[serde(default)]
    pub held: bool,
    /// RFC 3461 ENVID (decoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// RFC 3461 RET=FULL (else headers only).
    #[serde(default)]
    pub ret_full: bool,
    /// SMTPUTF8 was given.
    #[serde(default)]
    pub smtputf8: bool,
    /// The delay notice went out.
    #[serde(default)]
    pub delay_notified: bool,
    /// The recipients.
    pub recipients: Vec<Recipient>,
}

impl Entry {
    /// A new entry from `from` to `recipients`, due now.
    pub fn new(from: &str, recipients: Vec<Recipient>, now: SystemTime) -> Self {
        let t = unix(now);
        Self {
            id: String::new(),
            from: from.to_owned(),
            arrival: t,
            next_attempt: t,
            attempts: 0,
            held: false,
            envid: None,
            ret_full: false,
            smtputf8: false,
            delay_notified: false,
            recipients,
        }
    }

    /// The recipients still pending.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients.iter().filter(|r| r.state == State::Pending)
    }

    /// Whether nothing is left to do.
    pub fn is_done(&self) -> bool {
        self.pending().next().is_none()
    }
}

/// Unix seconds of `t`.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    root: PathBuf,
}

/// An exclusive hold on an entry (released on drop).
#[derive(Debug)]
pub struct Lock {
    _lock: Flock<File>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Queue {
    /// Opens (creating) the queue at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for sub in ["msg", "env"] {
            crate::maildir::create_dir_durably(&root.join(sub)).map_err(|e| with_path(&root.join(sub), e))?;
        }
        Ok(Self { root })
    }

    /// The queue's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The message file of entry `id`.
    pub fn message_path(&self, id: &str) -> PathBuf {
        self.root.join("msg").join(id)
    }

    fn env_path(&self, id: &str) -> PathBuf {
        self.root.join("env").join(id)
    }

    /// A new, unique, sortable id.
    fn new_id(now: SystemTime) -> String {
        let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:010x}{:05x}{:06x}{:04x}",
            d.as_secs(),
            d.subsec_micros() >> 4,
            std::process::id() & 0xff_ffff,
            n & 0xffff
        )
    }

    /// Whether `id` can name an entry (no path tricks from the command line).
    pub fn valid_id(id: &str) -> bool {
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
    }

    /// Queues `message` for `entry` (its id is set): the message, then the envelope, each
    /// fsynced with its directory. When this returns `Ok`, the entry survives a crash.
    pub fn submit(&self, entry: &mut Entry, message: &mut dyn Read) -> io::Result<String> {
        let id = Self::new_id(SystemTime::now());
        entry.id = id.clone();
        let path = self.message_path(&id);
        let mut write = || -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&path)?;
            io::copy(message, &mut f)?;
            f.sync_all()?;
            sync_dir(&self.root.join("msg"))
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&path);
            return Err(with_path(&path, e));
        }
        if let Err(e) = self.save(entry) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(id)
    }

    /// Writes `entry`'s envelope atomically and durably.
    pub fn save(&self, entry: &Entry) -> io::Result<()> {
        let path = self.env_path(&entry.id);
        let tmp = path.with_extension("tmp");
        let text = toml::to_string(entry).map_err(io::Error::other)?;
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&self.root.join("env"))
        };
        write().map_err(|e| with_path(&path, e))
    }

    /// Reads entry `id`.
    pub fn load(&self, id: &str) -> io::Result<Entry> {
        if !Self::valid_id(id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{id:?} is no queue id")));
        }
        let path = self.env_path(id);
        let text = fs::read_to_string(&path).map_err(|e| with_path(&path, e))?;
        toml::from_str(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
    }

    /// Removes entry `id`: the envelope first (the entry is gone), then the message.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        let env = self.env_path(id);
        fs::remove_file(&env).map_err(|e| with_path(&env, e))?;
        sync_dir(&self.root.join("env"))?;
        let _ = fs::remove_file(self.message_path(id));
        Ok(())
    }

    /// The ids of every entry, oldest first.
    pub fn ids(&self) -> io::Result<Vec<String>> {
        let mut ids: Vec<String> = fs::read_dir(self.root.join("env"))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| Self::valid_id(n))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every entry that can be read, oldest first (an unreadable one is logged and skipped).
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        Ok(self
            .ids()?
            .into_iter()
            .filter_map(|id| match self.load(&id) {
                Ok(e) => Some(e),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::warn!("queue entry {id}: {e}");
                    None
                }
            })
            .collect())
    }

    /// Takes entry `id`'s lock; with `wait == false`, `Ok(None)` when someone holds it.
    pub fn lock(&self, id: &str, wait: bool) -> io::Result<Option<Lock>> {
        if !Self::valid_id(id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{id:?} is no queue id")));
        }
        let path = self.message_path(id);
        let file = File::open(&path).map_err(|e| with_path(&path, e))?;
        let _ = file.as_fd();
        let arg = if wait { FlockArg::LockExclusive } else { FlockArg::LockExclusiveNonblock };
        match Flock::lock(file, arg) {
            Ok(lock) => Ok(Some(Lock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => Ok(None),
            Err((_, e)) => Err(io::Error::other(format!("locking {}: {e}", path.display()))),
        }
    }

    /// Removes what a crash can leave: messages without an envelope (never acknowledged) and
    /// half-written envelopes. Call at start, before the workers.
    pub fn sweep(&self) -> io::Result<usize> {
        let mut removed = 0;
        for e in fs::read_dir(self.root.join("env"))?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        for e in fs::read_dir(self.root.join("msg"))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !self.env_path(&name).exists() {
                tracing::info!(id = name, "removing a message without envelope (never acknowledged)");
                let _ = fs::remove_file(e.path());
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_load_save_remove_and_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path().join("queue")).unwrap();
        let mut r = Recipient::new("bob@b.test");
        r.notify = Some("SUCCESS,FAILURE".into());
        r.orcpt = Some("rfc822;Bob@B.test".into());
        let mut e = Entry::new("alice@a.test", vec![r, Recipient::new("carol@c.test")], SystemTime::now());
        e.envid = Some("x=1".into());
        let id = q.submit(&mut e, &mut &b"Subject: hi\r\n\r\nhello\r\n"[..]).unwrap();
        assert_eq!(q.load(&id).unwrap(), e);
        assert_eq!(fs::read(q.message_path(&id)).unwrap(), b"Subject: hi\r\n\r\nhello\r\n");
        e.recipients[0].state = State::Delivered;
        e.attempts = 1;
        q.save(&e).unwrap();
        assert_eq!(q.load(&id).unwrap().recipients[0].state, State::Delivered);
        assert_eq!(q.ids().unwrap(), std::slice::from_ref(&id));
        {
            let _held = q.lock(&id, false).unwrap().expect("free");
            let q2 = q.clone();
            let id2 = id.clone();
            // flock is per open file description: a second open sees it held.
            assert!(std::thread::spawn(move || q2.lock(&id2, false).unwrap().is_none()).join().unwrap());
        }
        assert!(q.lock(&id, false).unwrap().is_some());
        // A message left without envelope is swept; the entry stays.
        fs::write(q.message_path("0000orphan"), b"x").unwrap();
        assert_eq!(q.sweep().unwrap(), 1);
        assert!(q.load(&id).is_ok());
        q.remove(&id).unwrap();
        assert!(q.list().unwrap().is_empty());
        assert!(!q.message_path(&id).exists());
        assert!(q.load("../etc/passwd").is_err());
    }

    #[test]
    fn notify_defaults() {
        let mut r = Recipient::new("a@b");
        assert!(r.wants("FAILURE") && r.wants("DELAY") && !r.wants("SUCCESS"));
        r.notify = Some("NEVER".into());
        assert!(!r.wants("FAILURE"));
        r.notify = Some("SUCCESS".into());
        assert!(r.wants("SUCCESS") && !r.wants("FAILURE"));
    }

    #[test]
    fn ids_are_unique_and_sortable() {
        let t = SystemTime::now();
        let a = Queue::new_id(t);
        let b = Queue::new_id(t);
        assert_ne!(a, b);
        assert!(Queue::valid_id(&a));
        assert!(a < Queue::new_id(t + std::time::Duration::from_secs(1)));
    }
}
