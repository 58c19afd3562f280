//! The queue's files under `<data_dir>/queue/`: one file per message.
//!
//! ```text
//! queue/entries/<id>   written once, then only read:
//!                        smtp-std-queue 1 <envelope length> <message length>\n
//!                        <the envelope at submission (TOML)>
//!                        <the message>
//! queue/state/<id>     the envelope as it is now, once it changed after submission (TOML;
//!                      replaced atomically: state/<id>.tmp, fsync, rename, fsync state/)
//! queue/corrupt/       entries (and states) that cannot be read, kept for the postmaster
//! queue/entries/free.<pid>.<n>   a delivered entry's file, kept to be written over by the
//!                      next entry (see [`super::recycled`]); no id, so never read as an entry
//! ```
//!
//! [`Queue::submit`] writes the entry as `entries/<id>.tmp`, fsyncs it, renames it to
//! `entries/<id>`, then fsyncs `entries/`: when it returns, the entry survives a crash, and
//! only then may the `250` leave. One file per message to flush (Postfix flushes one queue
//! file; an entry of two files — message, envelope — cost twice that), and the directory,
//! whose flushes the sessions submitting at the same time share (a group commit: one flush
//! serves every entry created before it began).
//!
//! So a file under its final name was whole when it got that name: one that is short, or
//! whose first line or envelope cannot be read, was damaged later — it may have been
//! acknowledged, and it is never deleted for it. It is moved (with its state) into `corrupt/`
//! with one log line naming the file and the reason (by [`Queue::survey`], or the worker that
//! finds it so), where `smtp-std queue` lists, shows, bounces or deletes it (see
//! [`super::corrupt`]). Only a `.tmp` file is provably unacknowledged (its rename, which comes
//! before the `250`, never happened): [`Queue::sweep`] removes those at start. A state that
//! cannot be read is moved into `corrupt/` alone: the entry goes on from its envelope at
//! submission.
//!
//! An entry's state changes (an attempt's time, each recipient's outcome) go to `state/<id>`,
//! which, when present, is the envelope; the message is never copied again. One writer at a
//! time per entry: [`Queue::lock`] takes an exclusive `flock` on `entries/<id>` (renamed only
//! into `corrupt/`, so the lock stays with the entry) — the delivery workers and the
//! `smtp-std queue` commands both take it.
//!
//! [`Queue::remove`] unlinks the entry, then its state, without flushing the directories and
//! without writing anything (a full disk cannot stop it): a crash of the process cannot undo
//! an unlink, and a power loss that undoes one brings back an entry whose attempt was
//! finished, to be tried once more at its durable next attempt time (a possible second copy,
//! never a lost message, never a burst).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

pub use super::entry::{unix, Entry, Recipient, State};
use super::group_sync::GroupSync;
use super::recycled;

/// The queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    root: PathBuf,
    /// Flushes of `entries/`, shared by the sessions submitting at the same time.
    entries_sync: Arc<GroupSync>,
    /// Delivered entries' files, kept for new entries.
    recycled: Arc<recycled::Recycled>,
}

/// An exclusive hold on an entry (released on drop).
#[derive(Debug)]
pub struct Lock {
    _lock: Flock<File>,
}

/// The message of an entry: its file and where in it the message lies (to the file's end).
#[derive(Debug)]
pub struct Message {
    file: File,
    path: PathBuf,
    offset: u64,
    len: u64,
}

impl Message {
    /// The entry's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the message starts in [`Message::path`] (it runs to the file's end).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The message's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader from the message's first byte (again from the start at each call).
    pub fn reader(&mut self) -> io::Result<io::Take<&mut File>> {
        self.file.seek(SeekFrom::Start(self.offset))?;
        Ok((&mut self.file).take(self.len))
    }

    /// The open file, positioned nowhere in particular, with the message's offset and size.
    pub fn into_parts(self) -> (File, u64, u64) {
        (self.file, self.offset, self.len)
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The first line's tag; a changed layout gets another number.
const MAGIC: &str = "smtp-std-queue 1";
/// Longest first line read.
const MAX_FIRST_LINE: u64 = 80;
/// Largest envelope read (a thousand recipients with long replies fit many times over).
const MAX_ENVELOPE: u64 = 16 << 20;

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(super) fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn cut_short(path: &Path, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("{}: cut short ({why})", path.display()))
}

fn not_an_entry(path: &Path, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()))
}

/// Whether `e` says a file is damaged (cut short, or not what it should be), rather than that
/// it could not be read at all (gone, no permission, an I/O error).
pub fn is_damage(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof)
}

pub(super) fn parse_envelope(text: &[u8], path: &Path) -> io::Result<Entry> {
    let text = std::str::from_utf8(text)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
    toml::from_str(text).map_err(|e| {
        // toml's messages span lines (a snippet of the input): one line for the log.
        let e = e.to_string().replace('\n', " ").split_whitespace().collect::<Vec<_>>().join(" ");
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: envelope: {e}", path.display()))
    })
}

/// The envelope's and the message's lengths from an entry's first line (with its `\n`).
pub(super) fn parse_first_line(line: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(line.strip_suffix(b"\n")?).ok()?;
    let mut words = text.strip_prefix(MAGIC)?.split_ascii_whitespace().map(|w| w.parse::<u64>().ok());
    match (words.next(), words.next(), words.next()) {
        (Some(Some(env)), Some(Some(msg)), None) if env <= MAX_ENVELOPE => Some((env, msg)),
        _ => None,
    }
}

/// Whether `line` (read by [`read_first_line`]) is the start of a first line, cut short.
pub(super) fn first_line_cut_short(line: &[u8]) -> bool {
    line.last() != Some(&b'\n')
        && (line.len() as u64) < MAX_FIRST_LINE
        && MAGIC.as_bytes().starts_with(&line[..line.len().min(MAGIC.len())])
}

/// Reads an entry file's first line (at most [`MAX_FIRST_LINE`] bytes, with its `\n`).
pub(super) fn read_first_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.take(MAX_FIRST_LINE).read_until(b'\n', &mut line)?;
    Ok(line)
}

/// Reads an entry file's first line and envelope: the envelope, the message's offset and
/// length. A file shorter than its first line says is [`io::ErrorKind::UnexpectedEof`], any
/// other damage [`io::ErrorKind::InvalidData`] (see [`is_damage`]).
fn read_entry(file: &File, path: &Path, with_envelope: bool) -> io::Result<(Option<Entry>, u64, u64)> {
    let size = file.metadata()?.len();
    // Only the first line when the envelope is not wanted (a deferred entry has its state
    // beside it): the dispatcher reads every entry at each scan.
    let mut r = BufReader::with_capacity(if with_envelope { 8192 } else { MAX_FIRST_LINE as usize }, file);
    let line = read_first_line(&mut r)?;
    if first_line_cut_short(&line) {
        return Err(cut_short(path, "in its first line"));
    }
    let Some((env_len, msg_len)) = parse_first_line(&line) else {
        return Err(not_an_entry(path, "not a queue entry (bad first line)"));
    };
    let offset = line.len() as u64 + env_len;
    match offset.checked_add(msg_len) {
        Some(total) if total == size => {}
        Some(total) if total > size => {
            return Err(cut_short(path, &format!("{} of its {total} bytes are missing", total - size)))
        }
        _ => return Err(not_an_entry(path, "longer than its first line says")),
    }
    let entry = if with_envelope {
        let mut env = vec![0; env_len as usize];
        r.read_exact(&mut env)?;
        let entry = parse_envelope(&env, path)?;
        // A recycled file whose rename a power loss undid (see `recycled`): never delivered.
        if path.file_name().is_some_and(|n| *n != *entry.id) {
            return Err(not_an_entry(
                path,
                &format!("its envelope is entry {}'s (a recycled file whose renaming a crash undid)", entry.id),
            ));
        }
        Some(entry)
    } else {
        None
    };
    Ok((entry, offset, msg_len))
}

/// What reading an entry found.
#[derive(Debug)]
pub(super) enum Found {
    /// Its state (or its envelope at submission, when it has no state yet).
    Entry(Entry),
    /// No such entry.
    Gone,
    /// The entry file is damaged (see [`is_damage`]).
    EntryDamaged(io::Error),
    /// The entry file is whole, its state is damaged.
    StateDamaged(io::Error),
    /// A file could not be read (permissions, an I/O error).
    Failed(io::Error),
}

impl Queue {
    /// Opens (creating) the queue at `root`. A queue of the earlier layout (`msg/<id>` and
    /// `env/<id>`) is converted, entry by entry, durably.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for sub in ["entries", "state"] {
            crate::mta::maildir::create_dir_durably(&root.join(sub)).map_err(|e| with_path(&root.join(sub), e))?;
        }
        let q = Self { root, entries_sync: Arc::default(), recycled: Arc::default() };
        // Made now, while there is room; a full disk does not keep the queue from opening
        // (the first entry to quarantine tries again).
        if let Err(e) = q.corrupt_dir() {
            tracing::warn!("{e}");
        }
        q.convert_two_file_entries()?;
        Ok(q)
    }

    /// The queue's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of entry `id` (first line, envelope at submission, message).
    pub fn entry_path(&self, id: &str) -> PathBuf {
        self.root.join("entries").join(id)
    }

    /// The state file of entry `id` (there is one once its state changed after submission).
    pub fn state_path(&self, id: &str) -> PathBuf {
        self.root.join("state").join(id)
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

    fn check_id(id: &str) -> io::Result<()> {
        if Self::valid_id(id) {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{id:?} is no queue id")))
        }
    }

    /// Queues `message` for `entry` (its id is set): one file, fsynced, then its directory.
    /// When this returns `Ok`, the entry survives a crash.
    pub fn submit(&self, entry: &mut Entry, message: &[u8]) -> io::Result<String> {
        self.submit_from(entry, message.len() as u64, &mut &message[..])
    }

    /// [`Queue::submit`] of a message that streams from `message`: exactly `len` octets of
    /// it (fewer is an error, and nothing is queued). Only a buffer is held in memory.
    pub fn submit_from(&self, entry: &mut Entry, len: u64, message: &mut dyn Read) -> io::Result<String> {
        let mut tries = 0;
        loop {
            let id = Self::new_id(SystemTime::now());
            match self.write_entry(&id, entry, len, message) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
                Err(e) => return Err(e),
                Ok(()) => return Ok(id),
            }
        }
    }

    /// Writes entry `id` (a new file; the entry's id is set to `id`): as `entries/<id>.tmp`
    /// (or a recycled file, see [`Queue::recycle`]), flushed, renamed to `entries/<id>`, then
    /// `entries/` flushed. On failure, nothing of it is left. The message is copied from
    /// `message`, exactly `len` octets.
    fn write_entry(&self, id: &str, entry: &mut Entry, len: u64, message: &mut dyn Read) -> io::Result<()> {
        let path = self.entry_path(id);
        let entries = self.root.join("entries");
        // A recycled file (gone if someone swept it meanwhile: then a new one), else a new
        // `.tmp` file, whose name claims the id (`create_new`): ids carry the process id, so
        // no other writer renames onto `path` meanwhile.
        let recycled = self.recycled.take(self.entries_sync.synced()).and_then(|kept| {
            let file = OpenOptions::new().write(true).open(kept.path()).ok()?;
            // The worker that finished its entry may hold its lock a moment longer: a lock
            // still held would sit on the new entry and keep the worker handed it off it.
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(held) => Some((held.unlock().ok()?, kept.into_path())),
                Err(_) => {
                    self.recycled.put_back(kept);
                    None
                }
            }
        });
        let reused = recycled.is_some();
        let (mut file, tmp) = match recycled {
            Some(found) => found,
            None => {
                let tmp = path.with_extension("tmp");
                (crate::mta::private::create_new(&tmp).map_err(|e| with_path(&tmp, e))?, tmp)
            }
        };
        entry.id = id.to_owned();
        let mut write = || -> io::Result<()> {
            let envelope = toml::to_string(entry).map_err(io::Error::other)?;
            let first = format!("{MAGIC} {} {len}\n", envelope.len());
            let mut head = Vec::with_capacity(first.len() + envelope.len());
            head.extend_from_slice(first.as_bytes());
            head.extend_from_slice(envelope.as_bytes());
            file.write_all(&head)?;
            copy_exactly(message, &mut file, len)?;
            if reused {
                // What the file held before ends here.
                file.set_len(head.len() as u64 + len)?;
            }
            file.sync_all()?;
            rename_new(&tmp, &path)?;
            self.entries_sync.sync(&entries)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            if e.kind() != io::ErrorKind::AlreadyExists {
                let _ = fs::remove_file(&path);
            }
            with_path(&path, e)
        })
    }

    /// Writes `entry`'s state atomically and durably (`state/<id>`).
    pub fn save(&self, entry: &Entry) -> io::Result<()> {
        Self::check_id(&entry.id)?;
        let path = self.state_path(&entry.id);
        let tmp = path.with_extension("tmp");
        let text = toml::to_string(entry).map_err(io::Error::other)?;
        let write = || -> io::Result<()> {
            let mut f = crate::mta::private::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&self.root.join("state"))
        };
        write().map_err(|e| {
            // What a full disk let be written of it is given back.
            let _ = fs::remove_file(&tmp);
            with_path(&path, e)
        })
    }

    /// Reads entry `id`: its latest state. A damaged entry or state is an error (see
    /// [`is_damage`]) naming the file.
    pub fn load(&self, id: &str) -> io::Result<Entry> {
        Self::check_id(id)?;
        match self.read(id) {
            Found::Entry(e) => Ok(e),
            Found::Gone => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such entry", self.entry_path(id).display()),
            )),
            Found::EntryDamaged(e) | Found::StateDamaged(e) | Found::Failed(e) => Err(e),
        }
    }

    /// Reads entry `id` (a valid id) and says which file is damaged, if one is.
    pub(super) fn read(&self, id: &str) -> Found {
        let path = self.entry_path(id);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Found::Gone,
            Err(e) => return Found::Failed(with_path(&path, e)),
        };
        let damaged =
            |e: io::Error| if is_damage(&e) { Found::EntryDamaged(e) } else { Found::Failed(with_path(&path, e)) };
        let state = self.state_path(id);
        match fs::read(&state) {
            Ok(text) => {
                // The entry must be whole all the same, its envelope its own (see `recycled`).
                if let Err(e) = read_entry(&file, &path, true) {
                    return damaged(e);
                }
                match parse_envelope(&text, &state) {
                    Ok(entry) => Found::Entry(entry),
                    Err(e) => Found::StateDamaged(e),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match read_entry(&file, &path, true) {
                Ok((Some(entry), _, _)) => Found::Entry(entry),
                Ok((None, _, _)) => Found::Failed(io::Error::other(format!("{}: no envelope", path.display()))),
                Err(e) => damaged(e),
            },
            Err(e) => Found::Failed(with_path(&state, e)),
        }
    }

    /// Entry `id` as its envelope at submission gives it (whatever its state says).
    pub(super) fn submitted(&self, id: &str) -> io::Result<Entry> {
        let path = self.entry_path(id);
        let file = File::open(&path).map_err(|e| with_path(&path, e))?;
        let (entry, _, _) = read_entry(&file, &path, true)?;
        entry.ok_or_else(|| io::Error::other(format!("{}: no envelope", path.display())))
    }

    /// Opens entry `id`'s message.
    pub fn message(&self, id: &str) -> io::Result<Message> {
        Self::check_id(id)?;
        let path = self.entry_path(id);
        let file = File::open(&path).map_err(|e| with_path(&path, e))?;
        // With the envelope, to check its id (see `recycled`).
        let (_, offset, len) = read_entry(&file, &path, true)?;
        Ok(Message { file, path, offset, len })
    }

    /// Removes entry `id`: the entry (it is gone), then its state (see the module notes).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        Self::check_id(id)?;
        let path = self.entry_path(id);
        fs::remove_file(&path).map_err(|e| with_path(&path, e))?;
        self.remove_state(id)
    }

    /// Unlinks entry `id`'s state, if it has one.
    fn remove_state(&self, id: &str) -> io::Result<()> {
        let state = self.state_path(id);
        match fs::remove_file(&state) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(&state, e)),
            _ => Ok(()),
        }
    }

    /// Removes entry `id` as [`Queue::remove`] does, but keeps its file for a later entry
    /// when it is small (see [`recycled`]): renamed to a name that is no id, for
    /// [`Queue::submit`] to write over. The delivery workers do this with the entries they
    /// finished; what other processes remove is unlinked.
    pub fn recycle(&self, id: &str) -> io::Result<()> {
        Self::check_id(id)?;
        let entries = self.root.join("entries");
        let path = entries.join(id);
        let small = fs::metadata(&path).is_ok_and(|m| m.len() <= recycled::LARGEST);
        match self.recycled.name(&entries).filter(|_| small) {
            None => self.remove(id),
            Some(free) => {
                fs::rename(&path, &free).map_err(|e| with_path(&path, e))?;
                // Written over only once a flush of `entries/` made this rename durable.
                self.recycled.give(free, self.entries_sync.next());
                self.remove_state(id)
            }
        }
    }

    /// The ids of every entry, oldest first.
    pub fn ids(&self) -> io::Result<Vec<String>> {
        let mut ids: Vec<String> = fs::read_dir(self.root.join("entries"))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| Self::valid_id(n))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every entry that can be read, oldest first; nothing is changed (an entry whose state
    /// is damaged is given with its envelope at submission; see [`Queue::survey`] for the
    /// others).
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        Ok(self.survey(false)?.entries)
    }

    /// Takes entry `id`'s lock; with `wait == false`, `Ok(None)` when someone holds it. An
    /// entry that is gone, or went while this waited, is [`io::ErrorKind::NotFound`].
    pub fn lock(&self, id: &str, wait: bool) -> io::Result<Option<Lock>> {
        Self::check_id(id)?;
        let path = self.entry_path(id);
        let file = File::open(&path).map_err(|e| with_path(&path, e))?;
        let arg = if wait { FlockArg::LockExclusive } else { FlockArg::LockExclusiveNonblock };
        match Flock::lock(file, arg) {
            Ok(lock) => {
                // Waited for, the file may have stopped being this entry meanwhile (removed,
                // or recycled for another: see `recycled`): then the entry is gone.
                use std::os::unix::fs::MetadataExt;
                let held = lock.metadata().map(|m| (m.dev(), m.ino()))?;
                match fs::metadata(&path) {
                    Ok(m) if (m.dev(), m.ino()) == held => Ok(Some(Lock { _lock: lock })),
                    Ok(_) => Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: gone", path.display()))),
                    Err(e) => Err(with_path(&path, e)),
                }
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => Ok(None),
            Err((_, e)) => Err(io::Error::other(format!("locking {}: {e}", path.display()))),
        }
    }

    /// Cleans up what a crash can leave, at start (before the workers and the listeners):
    /// entries never renamed from `.tmp` (provably never acknowledged), half-written states,
    /// states without an entry (a crash inside [`Queue::remove`]); moves damaged entries into
    /// `corrupt/` ([`Queue::survey`]). Returns how many `.tmp` entries were removed.
    pub fn sweep(&self) -> io::Result<usize> {
        let entries = self.root.join("entries");
        let mut removed = 0;
        for e in fs::read_dir(&entries).map_err(|e| with_path(&entries, e))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if recycled::is_recycled(&name) {
                // Kept by a process that ended: nothing of it is an entry.
                let _ = fs::remove_file(e.path());
            } else if name.strip_suffix(".tmp").is_some_and(Self::valid_id) {
                tracing::info!(file = %e.path().display(), "removing an entry never acknowledged (its write was cut short)");
                let _ = fs::remove_file(e.path());
                removed += 1;
            }
        }
        let states = self.root.join("state");
        for e in fs::read_dir(&states).map_err(|e| with_path(&states, e))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || !self.entry_path(&name).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
        self.survey(true)?;
        Ok(removed)
    }

    /// Converts entries of the earlier layout (`msg/<id>`, `env/<id>`) into this one: each
    /// written and flushed here before its old files go; the old directories are removed
    /// when empty.
    fn convert_two_file_entries(&self) -> io::Result<()> {
        let (msg_dir, env_dir) = (self.root.join("msg"), self.root.join("env"));
        let Ok(envs) = fs::read_dir(&env_dir) else {
            return Ok(());
        };
        for e in envs.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !Self::valid_id(&name) {
                continue;
            }
            let (env_path, msg_path) = (e.path(), msg_dir.join(&name));
            let mut entry = parse_envelope(&fs::read(&env_path).map_err(|e| with_path(&env_path, e))?, &env_path)?;
            let message = fs::read(&msg_path).map_err(|e| with_path(&msg_path, e))?;
            // A conversion a crash cut short is done again.
            let _ = fs::remove_file(self.entry_path(&name));
            let _ = fs::remove_file(self.state_path(&name));
            self.write_entry(&name, &mut entry, message.len() as u64, &mut &message[..])?;
            tracing::info!(id = name, "queue entry converted to the one-file layout");
            fs::remove_file(&env_path).map_err(|e| with_path(&env_path, e))?;
            let _ = fs::remove_file(&msg_path);
        }
        for dir in [&env_dir, &msg_dir] {
            if let Ok(files) = fs::read_dir(dir) {
                for f in files.flatten() {
                    let _ = fs::remove_file(f.path());
                }
            }
            let _ = fs::remove_dir(dir);
        }
        Ok(())
    }
}

/// Renames the new entry file `from` to `to`, failing with `AlreadyExists` if `to` exists
/// (atomically where the system has `RENAME_NOREPLACE`).
fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{renameat2, RenameFlags};
        match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EEXIST) => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "an entry of that id exists"))
            }
            // A file system without the flag: as below.
            Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if to.exists() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "an entry of that id exists"));
    }
    fs::rename(from, to)
}

/// Copies exactly `len` octets of `from` into `to`, in large writes (a small message in one).
fn copy_exactly(from: &mut dyn Read, to: &mut File, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; len.clamp(1, 256 * 1024) as usize];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let mut filled = 0;
        while filled < want {
            match from.read(&mut buf[filled..want]) {
                Ok(0) => {
                    let got = len - left + filled as u64;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the message ended after {got} of {len} octets"),
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        to.write_all(&buf[..filled])?;
        left -= filled as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_message(q: &Queue, id: &str) -> Vec<u8> {
        let mut m = q.message(id).unwrap();
        let mut out = Vec::new();
        m.reader().unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out.len() as u64, m.len());
        out
    }

    #[test]
    fn submit_load_save_remove_and_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path().join("queue")).unwrap();
        let mut r = Recipient::new("bob@b.test");
        r.notify = Some("SUCCESS,FAILURE".into());
        r.orcpt = Some("rfc822;Bob@B.test".into());
        let mut e = Entry::new("alice@a.test", vec![r, Recipient::new("carol@c.test")], SystemTime::now());
        e.envid = Some("x=1".into());
        let id = q.submit(&mut e, b"Subject: hi\r\n\r\nhello\r\n").unwrap();
        assert_eq!(q.load(&id).unwrap(), e);
        assert_eq!(read_message(&q, &id), b"Subject: hi\r\n\r\nhello\r\n");
        // One file holds the entry.
        let text = fs::read(q.entry_path(&id)).unwrap();
        assert!(text.starts_with(b"smtp-std-queue 1 ") && text.ends_with(b"\r\n\r\nhello\r\n"));
        // A changed state goes beside it; the message stays as it was.
        e.recipients[0].state = State::Delivered;
        e.attempts = 1;
        q.save(&e).unwrap();
        assert_eq!(q.load(&id).unwrap(), e);
        assert_eq!(fs::read(q.entry_path(&id)).unwrap(), text);
        assert_eq!(read_message(&q, &id), b"Subject: hi\r\n\r\nhello\r\n");
        assert_eq!(q.ids().unwrap(), std::slice::from_ref(&id));
        {
            let _held = q.lock(&id, false).unwrap().expect("free");
            let q2 = q.clone();
            let id2 = id.clone();
            // flock is per open file description: a second open sees it held.
            assert!(std::thread::spawn(move || q2.lock(&id2, false).unwrap().is_none()).join().unwrap());
        }
        assert!(q.lock(&id, false).unwrap().is_some());
        // What a crash leaves: an entry never renamed from .tmp, a half-written state, a state
        // without entry. Swept; the whole entry stays.
        fs::write(q.root().join("entries/0000crashed.tmp"), &text[..text.len() - 3]).unwrap();
        fs::write(q.root().join("state/0000gone"), b"x").unwrap();
        fs::write(q.root().join("state/0000gone.tmp"), b"x").unwrap();
        assert_eq!(q.ids().unwrap(), std::slice::from_ref(&id), "a .tmp entry is no entry");
        // What damage leaves under a final name (it may have been acknowledged): an entry cut
        // short (with a state: acknowledged for sure), one cut in its first line, one not
        // ours, one longer than it says. Kept, in corrupt/, never removed.
        fs::write(q.entry_path("0000cut"), &text[..text.len() - 3]).unwrap();
        fs::write(q.state_path("0000cut"), fs::read(q.state_path(&id)).unwrap()).unwrap();
        fs::write(q.entry_path("0000cutfirstline"), &text[..8]).unwrap();
        fs::write(q.entry_path("0000junk"), b"hello world\n").unwrap();
        fs::write(q.entry_path("0000long"), [&text[..], b"more"].concat()).unwrap();
        assert_eq!(q.load("0000cut").unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(q.load("0000junk").unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(q.load("0000long").unwrap_err().kind(), io::ErrorKind::InvalidData);
        let s = q.survey(false).unwrap();
        assert_eq!(s.entries, [e.clone()]);
        let corrupt: Vec<&str> = s.corrupt.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(corrupt, ["0000cut", "0000cutfirstline", "0000junk", "0000long"]);
        assert!(q.entry_path("0000cut").exists(), "nothing moved without repair");
        assert_eq!(q.sweep().unwrap(), 1, "the .tmp entry");
        assert!(!q.root().join("entries/0000crashed.tmp").exists() && !q.root().join("state/0000gone").exists());
        assert!(!q.root().join("state/0000gone.tmp").exists());
        assert_eq!(q.ids().unwrap(), std::slice::from_ref(&id));
        let kept = q.corrupt_entries().unwrap();
        assert_eq!(kept.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), corrupt);
        let cut = &kept[0];
        assert_eq!(cut.path.as_deref(), Some(&*q.root().join("corrupt/0000cut")));
        assert_eq!(cut.states, [q.root().join("corrupt/0000cut.state")]);
        assert_eq!(cut.envelope.as_ref().map(|e| e.attempts), Some(1), "the envelope of its state");
        assert!(cut.reason().contains("cut short: 3 of its message's 22 bytes are missing"), "{}", cut.reason());
        let mut part = Vec::new();
        cut.message_reader().unwrap().unwrap().read_to_end(&mut part).unwrap();
        assert_eq!(part, b"Subject: hi\r\n\r\nhell");
        assert!(kept[1].envelope.is_none() && kept[1].reason().contains("cut short in its first line"));
        assert!(kept[2].reason().contains("not a queue entry (bad first line)"), "{}", kept[2].reason());
        assert!(kept[3].reason().contains("longer than its first line says (4 bytes more)"), "{}", kept[3].reason());
        assert_eq!(kept[3].envelope.as_ref().map(|e| e.from.as_str()), Some("alice@a.test"));
        let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).unwrap().permissions()) & 0o777;
        assert_eq!(mode(&q.root().join("corrupt")), 0o700);
        for c in ["0000cut", "0000cutfirstline", "0000junk", "0000long"] {
            assert!(q.remove_corrupt(c).unwrap());
        }
        assert!(q.corrupt_entries().unwrap().is_empty() && !q.remove_corrupt("0000cut").unwrap());
        assert_eq!(q.load(&id).unwrap(), e);
        // A damaged state alone: kept in corrupt/, the entry goes on from its envelope at
        // submission.
        fs::write(q.state_path(&id), b"attempts = [").unwrap();
        assert!(q.load(&id).unwrap_err().to_string().contains("envelope"));
        assert_eq!(q.survey(true).unwrap().entries[0].attempts, 0, "its envelope at submission");
        assert!(!q.state_path(&id).exists());
        let kept = q.corrupt(&id).unwrap();
        assert!(kept.state_only() && kept.states == [q.root().join(format!("corrupt/{id}.state"))]);
        q.remove(&id).unwrap();
        assert!(q.remove_corrupt(&id).unwrap());
        assert!(q.list().unwrap().is_empty());
        assert!(!q.entry_path(&id).exists() && !q.state_path(&id).exists());
        assert!(q.load("../etc/passwd").is_err());
    }

    #[test]
    fn entries_of_the_two_file_layout_are_converted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("queue");
        fs::create_dir_all(root.join("msg")).unwrap();
        fs::create_dir_all(root.join("env")).unwrap();
        let mut e = Entry::new("alice@a.test", vec![Recipient::new("bob@b.test")], SystemTime::now());
        e.id = "00000000aa".into();
        e.attempts = 3;
        fs::write(root.join("env/00000000aa"), toml::to_string(&e).unwrap()).unwrap();
        fs::write(root.join("msg/00000000aa"), b"Subject: old\r\n\r\nbody\r\n").unwrap();
        fs::write(root.join("msg/00000000bb"), b"never acknowledged").unwrap();
        let q = Queue::open(&root).unwrap();
        assert_eq!(q.load("00000000aa").unwrap(), e);
        assert_eq!(read_message(&q, "00000000aa"), b"Subject: old\r\n\r\nbody\r\n");
        assert_eq!(q.ids().unwrap(), ["00000000aa"]);
        assert!(!root.join("msg").exists() && !root.join("env").exists());
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
