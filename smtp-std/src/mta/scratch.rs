//! Scratch files: unnamed files for a message that is only passing through (spooled for the
//! queue or for LMTP, then gone), reused from message to message.
//!
//! A named spool file costs two operations on its directory (create, then unlink), each under
//! the directory's lock, and a new inode. With 20 sessions on 2 cores the lock is where the
//! time went: `perf` of 1 KiB submissions found a quarter of the sessions' CPU spinning on the
//! directory's rwsem (`rwsem_spin_on_owner`, `osq_lock`) while another session allocated an
//! inode under it (on ext4 without a journal that skips each recently deleted inode). A
//! scratch file is opened with `O_TMPFILE` (no name, no directory lock), and when its message
//! is done it is emptied and kept open for the next one, up to [`KEPT`] files: in a steady
//! stream no directory operation and no inode allocation per message. Nothing of it survives
//! the process, so a crash leaves nothing to sweep. Where the file system has no `O_TMPFILE`
//! it is a named file unlinked at once.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// At most this many emptied scratch files are kept open, in all directories together.
pub const KEPT: usize = 64;

/// The emptied files, with the directory each was made in.
static KEPT_FILES: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

/// An empty scratch file in `dir` (`0600`), open for reading and writing at offset 0: one kept
/// from an earlier message, or a new one.
pub fn take(dir: &Path) -> io::Result<File> {
    {
        let mut kept = KEPT_FILES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = kept.iter().rposition(|(d, _)| d == dir) {
            return Ok(kept.swap_remove(i).1);
        }
    }
    let unnamed = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_TMPFILE.bits())
        .mode(crate::mta::private::FILE_MODE)
        .open(dir);
    match unnamed {
        Ok(file) => Ok(file),
        // No O_TMPFILE here (an old kernel, a file system without it): a named file, unlinked.
        Err(e) if matches!(e.raw_os_error(), Some(nix::libc::EOPNOTSUPP | nix::libc::EISDIR | nix::libc::EINVAL)) => {
            named(dir)
        }
        Err(e) => {
            // The directory's owner and mode, Dovecot's way, when it is there to say.
            let what = std::fs::metadata(dir)
                .map_or_else(|_| dir.display().to_string(), |m| crate::mta::privileges::describe(dir, &m));
            Err(io::Error::new(e.kind(), format!("open a scratch file in {what}: {e}")))
        }
    }
}

/// A named file in `dir`, unlinked once open.
fn named(dir: &Path) -> io::Result<File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(".scratch.{}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(crate::mta::private::FILE_MODE)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", path.display())))?;
    std::fs::remove_file(&path).map_err(|e| io::Error::new(e.kind(), format!("unlink {}: {e}", path.display())))?;
    Ok(file)
}

/// Gives back a scratch file of `dir` whose message is done: emptied and kept for the next
/// one, or closed (and so freed) when [`KEPT`] are kept already or it cannot be emptied.
pub fn give(dir: &Path, mut file: File) {
    if file.set_len(0).is_err() || file.seek(SeekFrom::Start(0)).is_err() {
        return;
    }
    let mut kept = KEPT_FILES.lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() < KEPT {
        kept.push((dir.to_owned(), file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn scratch_files_have_no_name_and_come_back_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = take(dir.path()).unwrap();
        f.write_all(b"a message passing through").unwrap();
        // Nothing in the directory: the file has no name.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        give(dir.path(), f);
        let mut again = take(dir.path()).unwrap();
        assert_eq!(again.metadata().unwrap().len(), 0);
        assert_eq!(again.stream_position().unwrap(), 0);
        again.write_all(b"next").unwrap();
        again.seek(SeekFrom::Start(0)).unwrap();
        let mut s = String::new();
        again.read_to_string(&mut s).unwrap();
        assert_eq!(s, "next");
        // Private whatever the umask.
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(again.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn what_is_in_the_way_is_named_with_owner_and_mode() {
        // A file where the spool directory should be (root or not, it is refused).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tmp");
        std::fs::write(&file, b"").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = take(&file).unwrap_err();
        assert!(e.to_string().contains("tmp, file owned by") && e.to_string().contains("mode=0640"), "{e}");
    }

    #[test]
    fn a_missing_directory_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nope");
        let e = take(&gone).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
