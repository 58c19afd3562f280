//! Entry files kept for new entries: a delivered entry's file is renamed to `free.<pid>.<n>`
//! (no id: nothing reads it as an entry) and the next submission writes over it, instead of
//! an unlink and a new file.
//!
//! Why: creating a file allocates an inode under its directory's lock, and with 20 sessions
//! that lock is contended. `perf` of 100 KiB relays on this machine's ext4 (no journal: the
//! allocator skips each inode deleted in the last half minute, one lookup each) found inode
//! allocation and the spinning on `entries/`'s lock behind it at a fifth of the server's CPU,
//! growing from run to run. A recycled file costs a rename instead; its blocks are written
//! over rather than freed and allocated again.
//!
//! Safety:
//! - A recycled file has no id for a name, so the dispatcher, the survey and the commands
//!   never see it; [`super::store::Queue::sweep`] removes those a process left at start.
//! - A file is written over only once a flush of `entries/` that started after its rename
//!   into `free.` has finished (the sessions' group commit makes one at every submission):
//!   no crash can then bring back the old entry's name over the new content. Until then the
//!   next entry gets a new file.
//! - The rename onto the new id is the same claim as a `.tmp` file's (`RENAME_NOREPLACE`
//!   where the system has it), after the file's flush, before the directory's.
//! - Should a file system lose that order all the same, the file under the old name holds an
//!   envelope that names another id: reading an entry checks that the envelope's id is the
//!   file's name, and a file that fails is damage (moved to `corrupt/` with a log line), never
//!   delivered to the old recipients.
//! - At most [`KEPT`] files of at most [`LARGEST`] octets are kept per queue, so the disk they
//!   hold is bounded (64 MiB).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// At most this many recycled files are kept per queue.
pub const KEPT: usize = 64;
/// A file larger than this is unlinked rather than kept (its blocks would stay held).
pub const LARGEST: u64 = 1 << 20;

const PREFIX: &str = "free.";

/// Whether `name` (a file in `entries/`) is a recycled file.
pub fn is_recycled(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// The recycled files of a queue (each [`super::store::Queue`] has one, shared by its clones).
#[derive(Debug, Default)]
pub struct Recycled {
    kept: Mutex<Vec<Kept>>,
    names: AtomicU64,
}

/// A recycled file, and the flush of `entries/` that makes its rename durable.
#[derive(Debug)]
pub struct Kept {
    path: PathBuf,
    flush: u64,
}

impl Kept {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file, taken.
    pub fn into_path(self) -> PathBuf {
        self.path
    }
}

impl Recycled {
    fn kept(&self) -> MutexGuard<'_, Vec<Kept>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new name in `entries` for a file to recycle, or `None` when [`KEPT`] are kept already.
    pub fn name(&self, entries: &Path) -> Option<PathBuf> {
        if self.kept().len() >= KEPT {
            return None;
        }
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        Some(entries.join(format!("{PREFIX}{}.{n}", std::process::id())))
    }

    /// Keeps `path` (renamed to a [`Recycled::name`]) for a later entry once flush `flush` of
    /// `entries/` has finished; unlinks it when [`KEPT`] are kept already.
    pub fn give(&self, path: PathBuf, flush: u64) {
        let mut kept = self.kept();
        if kept.len() < KEPT {
            kept.push(Kept { path, flush });
        } else {
            drop(kept);
            let _ = std::fs::remove_file(path);
        }
    }

    /// A kept file whose rename is durable (its flush is `synced` or older), taken: the caller
    /// writes over it, removes it, or puts it back.
    pub fn take(&self, synced: u64) -> Option<Kept> {
        let mut kept = self.kept();
        let i = kept.iter().position(|k| k.flush <= synced)?;
        Some(kept.swap_remove(i))
    }

    /// Puts back a file [`Recycled::take`] gave.
    pub fn put_back(&self, k: Kept) {
        self.kept().push(k);
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    use std::time::SystemTime;

    use super::super::store::{is_damage, Entry, Queue, Recipient};

    fn entry() -> Entry {
        Entry::new("alice@a.test", vec![Recipient::new("bob@b.test")], SystemTime::now())
    }

    fn message(q: &Queue, id: &str) -> Vec<u8> {
        let mut m = q.message(id).unwrap();
        let mut out = Vec::new();
        m.reader().unwrap().read_to_end(&mut out).unwrap();
        out
    }

    fn names(q: &Queue) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(q.root().join("entries"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// A new queue in a temp dir (kept while the queue is used).
    fn queue() -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path().join("queue")).unwrap();
        (dir, q)
    }

    fn ino(q: &Queue, id: &str) -> u64 {
        fs::metadata(q.entry_path(id)).unwrap().ino()
    }

    #[test]
    fn a_finished_entry_file_takes_a_later_entry_once_its_rename_is_durable() {
        let (dir, q) = queue();
        let long = vec![b'x'; 5000];
        let a = q.submit(&mut entry(), &long).unwrap();
        let a_ino = ino(&q, &a);
        q.recycle(&a).unwrap();
        // Gone as an entry, kept under a name that is no id.
        assert!(q.ids().unwrap().is_empty());
        assert!(matches!(&names(&q)[..], [n] if super::is_recycled(n)), "{:?}", names(&q));
        // No flush of entries/ since its rename: the next entry gets a new file, and its
        // submission flushes entries/.
        let b = q.submit(&mut entry(), b"b\r\n").unwrap();
        assert_ne!(ino(&q, &b), a_ino);
        // Now the file is written over, exactly the new entry's length.
        let c = q.submit(&mut entry(), b"Subject: short\r\n\r\nhi\r\n").unwrap();
        assert_eq!(ino(&q, &c), a_ino);
        assert_eq!(message(&q, &c), b"Subject: short\r\n\r\nhi\r\n");
        assert_eq!(q.load(&c).unwrap().id, c);
        let mut all = vec![b.clone(), c.clone()];
        all.sort();
        assert_eq!(names(&q), all);
        // A large one is not kept.
        let big = q.submit(&mut entry(), &vec![b'y'; super::LARGEST as usize + 1]).unwrap();
        q.recycle(&big).unwrap();
        q.recycle(&b).unwrap();
        q.recycle(&c).unwrap();
        assert_eq!(names(&q).len(), 2);
        // What a process left is removed at start.
        let ended = dir.path().join("queue/entries/free.1.1");
        fs::write(&ended, b"junk").unwrap();
        q.sweep().unwrap();
        assert!(!ended.exists());
    }

    #[test]
    fn a_recycled_file_whose_rename_a_crash_undid_is_damage_not_the_old_entry() {
        let (_dir, q) = queue();
        let old = q.submit(&mut entry(), b"Subject: old\r\n\r\nfor bob\r\n").unwrap();
        let old_ino = ino(&q, &old);
        q.recycle(&old).unwrap();
        q.submit(&mut entry(), b"flushes entries/\r\n").unwrap();
        let new = q.submit(&mut entry(), b"Subject: new\r\n\r\nfor someone else\r\n").unwrap();
        assert_eq!(ino(&q, &new), old_ino);
        // Were a file system to bring back the old name over the file that now holds the new
        // message (the order the flushes keep, lost):
        fs::rename(q.entry_path(&new), q.entry_path(&old)).unwrap();
        let e = q.load(&old).unwrap_err();
        assert!(is_damage(&e) && e.to_string().contains(&format!("entry {new}'s")), "{e}");
        assert!(q.message(&old).is_err());
        // The survey at start moves it into corrupt/: never delivered to the old recipients.
        q.sweep().unwrap();
        assert_eq!(q.ids().unwrap().len(), 1);
        assert_eq!(q.corrupt_entries().unwrap().len(), 1);
    }

    #[test]
    fn a_file_whose_last_worker_still_holds_its_lock_waits() {
        let (_dir, q) = queue();
        let a = q.submit(&mut entry(), b"a\r\n").unwrap();
        let a_ino = ino(&q, &a);
        let lock = q.lock(&a, false).unwrap().unwrap();
        q.recycle(&a).unwrap();
        q.submit(&mut entry(), b"flushes entries/\r\n").unwrap();
        // Durable, but still locked: a new file, so the new entry's worker can take its lock.
        let b = q.submit(&mut entry(), b"b\r\n").unwrap();
        assert_ne!(ino(&q, &b), a_ino);
        assert!(q.lock(&b, false).unwrap().is_some());
        drop(lock);
        let c = q.submit(&mut entry(), b"c\r\n").unwrap();
        assert_eq!(ino(&q, &c), a_ino);
        assert!(q.lock(&c, false).unwrap().is_some());
    }

    #[test]
    fn a_waiter_for_a_recycled_entry_finds_it_gone() {
        let (_dir, q) = queue();
        let a = q.submit(&mut entry(), b"a\r\n").unwrap();
        let lock = q.lock(&a, false).unwrap().unwrap();
        let (q2, a2) = (q.clone(), a.clone());
        let waiter = std::thread::spawn(move || q2.lock(&a2, true).map(|l| l.is_some()));
        // The waiter opens the entry and waits for the lock (bounded: it cannot get it).
        std::thread::sleep(std::time::Duration::from_millis(200));
        q.recycle(&a).unwrap();
        drop(lock);
        let got = waiter.join().unwrap();
        assert_eq!(got.unwrap_err().kind(), std::io::ErrorKind::NotFound);
        // The file went on to the next entry, whose lock is free.
        let b = q.submit(&mut entry(), b"b\r\n").unwrap();
        assert!(q.lock(&b, false).unwrap().is_some());
    }
}
