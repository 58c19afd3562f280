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
//! - The rename onto the new id is the same claim as a `.tmp` file's (`RENAME_NOREPLACE`
//!   where the system has it), after the file's flush, before the directory's.
//! - A crash that undoes the rename *into* `free.` (a power loss, on a file system that does
//!   not order metadata, such as ext4 without a journal) can bring back the old name over a
//!   file that meanwhile holds a newer message. Its envelope then names another id: reading
//!   an entry checks that the envelope's id is the file's name, and a file that fails is
//!   damage (moved to `corrupt/` with a log line), never delivered to the old recipients.
//! - At most [`KEPT`] files of at most [`LARGEST`] octets are kept per queue, so the disk they
//!   hold is bounded (64 MiB).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// At most this many recycled files are kept, over all queues of the process.
pub const KEPT: usize = 64;
/// A file larger than this is unlinked rather than kept (its blocks would stay held).
pub const LARGEST: u64 = 1 << 20;

const PREFIX: &str = "free.";

/// The kept files: the `entries/` directory of each, and its path.
static FREE: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());

fn free() -> std::sync::MutexGuard<'static, Vec<(PathBuf, PathBuf)>> {
    FREE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `name` (a file in `entries/`) is a recycled file.
pub fn is_recycled(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// A new name in `entries` for a file to recycle, or `None` when [`KEPT`] are kept already.
pub fn name(entries: &Path) -> Option<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    if free().len() >= KEPT {
        return None;
    }
    Some(entries.join(format!("{PREFIX}{}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))))
}

/// Keeps `file` (renamed to a [`name`] of `entries`) for a later entry; unlinks it when
/// [`KEPT`] are kept already.
pub fn give(entries: &Path, file: PathBuf) {
    let mut kept = free();
    if kept.len() < KEPT {
        kept.push((entries.to_owned(), file));
    } else {
        drop(kept);
        let _ = std::fs::remove_file(file);
    }
}

/// A kept file of `entries`, taken (the caller writes over it or removes it).
pub fn take(entries: &Path) -> Option<PathBuf> {
    let mut kept = free();
    let i = kept.iter().rposition(|(d, _)| d == entries)?;
    Some(kept.swap_remove(i).1)
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

    #[test]
    fn a_finished_entry_file_takes_the_next_entry() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path().join("queue")).unwrap();
        let long = vec![b'x'; 5000];
        let a = q.submit(&mut entry(), &long).unwrap();
        let ino = fs::metadata(q.entry_path(&a)).unwrap().ino();
        q.recycle(&a).unwrap();
        // Gone as an entry, kept under a name that is no id.
        assert!(q.ids().unwrap().is_empty());
        assert!(matches!(&names(&q)[..], [n] if super::is_recycled(n)), "{:?}", names(&q));
        // The next entry is that file, written over, exactly its own length.
        let b = q.submit(&mut entry(), b"Subject: short\r\n\r\nhi\r\n").unwrap();
        assert_eq!(fs::metadata(q.entry_path(&b)).unwrap().ino(), ino);
        assert_eq!(message(&q, &b), b"Subject: short\r\n\r\nhi\r\n");
        assert_eq!(q.load(&b).unwrap().id, b);
        assert_eq!(names(&q), vec![b.clone()]);
        // A large one is not kept.
        let big = q.submit(&mut entry(), &vec![b'y'; super::LARGEST as usize + 1]).unwrap();
        q.recycle(&big).unwrap();
        q.recycle(&b).unwrap();
        assert_eq!(names(&q).len(), 1);
        // What a process left is removed at start.
        let ended = dir.path().join("queue/entries/free.1.1");
        fs::write(&ended, b"junk").unwrap();
        q.sweep().unwrap();
        assert!(!ended.exists());
    }

    #[test]
    fn a_recycled_file_whose_rename_a_crash_undid_is_damage_not_the_old_entry() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path().join("queue")).unwrap();
        let old = q.submit(&mut entry(), b"Subject: old\r\n\r\nfor bob\r\n").unwrap();
        q.recycle(&old).unwrap();
        let new = q.submit(&mut entry(), b"Subject: new\r\n\r\nfor someone else\r\n").unwrap();
        // A power loss on a file system that does not order metadata can bring back the old
        // name over the file that now holds the new message.
        fs::rename(q.entry_path(&new), q.entry_path(&old)).unwrap();
        let e = q.load(&old).unwrap_err();
        assert!(is_damage(&e) && e.to_string().contains(&format!("entry {new}'s")), "{e}");
        assert!(q.message(&old).is_err());
        // The survey at start moves it into corrupt/: never delivered to the old recipients.
        q.sweep().unwrap();
        assert!(q.ids().unwrap().is_empty());
        assert_eq!(q.corrupt_entries().unwrap().len(), 1);
    }

    #[test]
    fn a_file_whose_last_worker_still_holds_its_lock_waits() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path().join("queue")).unwrap();
        let a = q.submit(&mut entry(), b"a\r\n").unwrap();
        let ino = fs::metadata(q.entry_path(&a)).unwrap().ino();
        let lock = q.lock(&a, false).unwrap().unwrap();
        q.recycle(&a).unwrap();
        // Still locked: a new file, so the new entry's worker can take its lock.
        let b = q.submit(&mut entry(), b"b\r\n").unwrap();
        assert_ne!(fs::metadata(q.entry_path(&b)).unwrap().ino(), ino);
        assert!(q.lock(&b, false).unwrap().is_some());
        drop(lock);
        let c = q.submit(&mut entry(), b"c\r\n").unwrap();
        assert_eq!(fs::metadata(q.entry_path(&c)).unwrap().ino(), ino);
        assert!(q.lock(&c, false).unwrap().is_some());
    }

    #[test]
    fn a_waiter_for_a_recycled_entry_finds_it_gone() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path().join("queue")).unwrap();
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
