//! Delivery into a Maildir: the storage under the `smtp-std serve` handler
//! ([`crate::mta::inbound`]).
//!
//! Each message streams into `tmp/<unique>` (never whole in memory), is `fsync`ed, renamed into
//! `new/`, and `new/` is `fsync`ed — all before the `250` goes out. A message that does not
//! end well (refused, connection lost) leaves nothing in `new/` and its `tmp/` file is removed.
//! Directories created on the way are made durable too (their parents `fsync`ed), so the first
//! message of a new mailbox survives a crash with its mailbox.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// Opens `root`, creating `tmp/`, `new/` and `cur/` as needed (durably: see the module
    /// notes).
    pub fn create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for sub in ["tmp", "new", "cur"] {
            create_dir_durably(&root.join(sub))?;
        }
        // The Maildir spec: '/' and ':' in the host name are written as octal escapes.
        // Read once: a Maildir is opened for every message.
        static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let host = HOST.get_or_init(|| system_hostname().replace('/', "\\057").replace(':', "\\072")).clone();
        Ok(Self { root, host })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The Maildir++ folder `name` (`.Junk`) inside this Maildir, created (with its
    /// `maildirfolder` marker) if missing.
    pub fn folder(&self, name: &str) -> io::Result<Maildir> {
        let folder = Maildir::create(self.root.join(name))?;
        let marker = folder.root.join("maildirfolder");
        if !marker.exists() {
            drop(crate::mta::private::create(&marker)?);
            File::open(&folder.root)?.sync_all()?;
        }
        Ok(folder)
    }

    /// Writes a message whole: `tmp/<name>` from `content`, `fsync`, renamed into `new/`,
    /// `new/` `fsync`ed. Returns the final path.
    pub fn write_message(&self, name: &str, content: &mut dyn Read) -> io::Result<PathBuf> {
        let tmp = self.root.join("tmp").join(name);
        let result = (|| {
            let mut file = crate::mta::private::create_new(&tmp)?;
            io::copy(content, &mut file)?;
            file.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        publish(&tmp, &self.root, name)
    }

    /// Puts the already durable message at `existing` into `new/<name>` as a hard link (one
    /// copy on disk for several mailboxes), or as a copy where the file system cannot link.
    pub fn link_message(&self, existing: &Path, name: &str) -> io::Result<PathBuf> {
        let new_dir = self.root.join("new");
        let dest = new_dir.join(name);
        match fs::hard_link(existing, &dest) {
            Ok(()) => {
                File::open(&new_dir)?.sync_all()?;
                Ok(dest)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
            Err(_) => self.write_message(name, &mut File::open(existing)?),
        }
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
        let file = crate::mta::private::create_new(&tmp)?;
        Ok(Delivery {
            file: Some(BufWriter::with_capacity(64 * 1024, file)),
            tmp,
            name,
            size: 0,
            content_start: 0,
            root: self.root.clone(),
            scratch: false,
        })
    }

    /// Starts a message that only passes through (spooled for the queue or for LMTP): an
    /// unnamed scratch file in `tmp/` ([`crate::mta::scratch`]), which cannot be committed and
    /// is emptied for the next message when the delivery is dropped. It has a unique name all
    /// the same, for the logs.
    pub fn scratch(&self) -> io::Result<Delivery> {
        let name = self.unique_name();
        let tmp = self.root.join("tmp");
        let file = crate::mta::scratch::take(&tmp)?;
        Ok(Delivery {
            file: Some(BufWriter::with_capacity(64 * 1024, file)),
            tmp: tmp.join(&name),
            name,
            size: 0,
            content_start: 0,
            root: self.root.clone(),
            scratch: true,
        })
    }
}

/// A message being written into `tmp/`. Dropped without [`Delivery::commit`], its file is
/// removed (a scratch file is emptied and kept for the next message).
#[derive(Debug)]
pub struct Delivery {
    file: Option<BufWriter<File>>,
    /// `tmp/<name>`: the file (none for a scratch file, whose side files go there too).
    tmp: PathBuf,
    name: String,
    size: u64,
    content_start: u64,
    root: PathBuf,
    /// An unnamed scratch file ([`Maildir::scratch`]).
    scratch: bool,
}

/// The content of a message being written, for reading ([`Delivery::content`]): its own
/// position, positional reads of the delivery's file (no second open of it by name). It
/// borrows the delivery: a scratch file goes to the next message when its delivery ends.
#[derive(Debug)]
pub struct Content<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for Content<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Delivery {
    /// What was written so far is a prefix (trace fields of the final delivery): the content,
    /// which [`Delivery::content`] gives, starts here.
    pub fn mark_content_start(&mut self) {
        self.content_start = self.size;
    }

    /// Where the content starts in the file (see [`Delivery::mark_content_start`]).
    pub fn content_start(&self) -> u64 {
        self.content_start
    }

    /// The file in `tmp/` (until committed). For a scratch file ([`Maildir::scratch`]) no
    /// file has this name; it names side files (a milter's replacement body) all the same.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes and opens the content written so far for reading (after the prefix).
    pub fn content(&mut self) -> io::Result<Content<'_>> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("delivery already finished"))?;
        f.flush()?;
        Ok(Content { file: f.get_ref(), pos: self.content_start })
    }

    /// A new message in the same `tmp/` that starts with this one's prefix (what was written
    /// before [`Delivery::mark_content_start`]), its content still to be written: an edited
    /// copy (a milter's changes) that then takes this one's place.
    pub fn rewrite(&mut self) -> io::Result<Delivery> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("delivery already finished"))?;
        f.flush()?;
        let dir = Maildir::create(&self.root)?;
        let mut next = if self.scratch { dir.scratch()? } else { dir.begin()? };
        let mut prefix = Content { file: f.get_ref(), pos: 0 }.take(self.content_start);
        let mut buf = vec![0u8; 8192];
        loop {
            let n = prefix.read(&mut buf)?;
            if n == 0 {
                break;
            }
            next.write(&buf[..n])?;
        }
        next.mark_content_start();
        Ok(next)
    }

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
    pub fn commit(self) -> io::Result<PathBuf> {
        let root = self.root.clone();
        self.commit_into(&root)
    }

    /// Like [`Delivery::commit`], into the Maildir at `dir` (a folder of this one, or another
    /// Maildir on the same file system).
    pub fn commit_into(mut self, dir: &Path) -> io::Result<PathBuf> {
        if self.scratch {
            return Err(io::Error::other(format!("{}: a scratch file is not stored", self.name)));
        }
        let f = self.file.take().ok_or_else(|| io::Error::other("delivery already finished"))?;
        let file = f.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        self.publish(dir)
    }

    /// Renames the synced `tmp/` file into `<dir>/new/` and syncs that directory.
    fn publish(&mut self, dir: &Path) -> io::Result<PathBuf> {
        let dest = publish(&self.tmp, dir, &self.name)?;
        self.tmp = PathBuf::new();
        Ok(dest)
    }
}

/// Renames the synced file `tmp` into `<dir>/new/<name>` and syncs `new/`.
fn publish(tmp: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    let new_dir = dir.join("new");
    let dest = new_dir.join(name);
    fs::rename(tmp, &dest)?;
    File::open(&new_dir)?.sync_all()?;
    Ok(dest)
}

/// Creates `dir` and its missing parents (`0700`, see [`crate::mta::private`]), then `fsync`s
/// the parent of each one created, so that the directories survive a crash (a file inside
/// them is only as durable as they are).
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.as_os_str().is_empty() && !p.exists() {
        missing.push(p.to_owned());
        p = match p.parent() {
            Some(parent) => parent,
            None => break,
        };
    }
    for d in missing.iter().rev() {
        match crate::mta::private::create_dir(d) {
            Ok(()) => {}
            // Made meanwhile by someone else: fine.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.scratch {
            // Its buffered bytes are dropped unwritten; the file is emptied for the next one.
            if let (Some(f), Some(tmp)) = (self.file.take(), self.tmp.parent()) {
                crate::mta::scratch::give(tmp, f.into_parts().0);
            }
            return;
        }
        if !self.tmp.as_os_str().is_empty() {
            self.file = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Clone for Delivery {
    /// A clone of a delivery in progress is never useful: handlers are cloned only between
    /// connections, when no message is open. The clone is an empty, finished delivery.
    fn clone(&self) -> Self {
        Delivery {
            file: None,
            tmp: PathBuf::new(),
            name: self.name.clone(),
            size: 0,
            content_start: 0,
            root: self.root.clone(),
            scratch: false,
        }
    }
}
