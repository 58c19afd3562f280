//! Everything the mail server writes under `data_dir` is private to the server's user: files
//! are created `0600` and directories `0700`, whatever the process's umask (a umask can only
//! take permissions away, never add them). Mail, queue entries, their states and keys are
//! nobody else's business.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every file the server creates under `data_dir`.
pub const FILE_MODE: u32 = 0o600;
/// The mode of every directory the server creates under `data_dir`.
pub const DIR_MODE: u32 = 0o700;

/// Creates `path` for writing (and reading back), failing if it exists, with [`FILE_MODE`].
pub fn create_new(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new().read(true).write(true).create_new(true).mode(FILE_MODE).open(path)?;
    adopt(path, Some(&file))?;
    Ok(file)
}

/// Creates or truncates `path` for writing; a new file gets [`FILE_MODE`].
pub fn create(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(path)?;
    adopt(path, Some(&file))?;
    Ok(file)
}

/// Creates the directory `path` (not its parents) with [`DIR_MODE`].
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(path)?;
    adopt(path, None)
}

/// Run as root (the `queue` and `user` commands beside a server that dropped to its `user`),
/// what is created belongs to the owner of its directory: private files must stay readable
/// by the server. As anyone else, nothing to do.
fn adopt(path: &Path, file: Option<&File>) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else { return Ok(()) };
    let owner = fs::metadata(dir)?;
    if owner.uid() == 0 {
        return Ok(());
    }
    let (uid, gid) = (Some(nix::unistd::Uid::from_raw(owner.uid())), Some(nix::unistd::Gid::from_raw(owner.gid())));
    let done = match file {
        Some(f) => std::os::unix::fs::fchown(f, uid.map(|u| u.as_raw()), gid.map(|g| g.as_raw())),
        None => nix::unistd::chown(path, uid, gid).map_err(io::Error::from),
    };
    done.map_err(|e| {
        io::Error::new(e.kind(), format!("chown {} to the owner of {}: {e}", path.display(), dir.display()))
    })
}

/// Takes group and other permissions away from the existing directory `dir` (made by an
/// earlier version, or by hand with a loose umask), saying so in the log.
pub fn tighten_dir(dir: &Path) -> io::Result<()> {
    let mode = fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & !0o077))
            .map_err(|e| io::Error::new(e.kind(), format!("chmod go-rwx {}: {e}", dir.display())))?;
        tracing::info!(dir = %dir.display(), was = format_args!("{mode:o}"), now = format_args!("{:o}", mode & !0o077), "made private");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_hold_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let f = dir.path().join("f");
        drop(create_new(&f).unwrap());
        let g = dir.path().join("g");
        drop(create(&g).unwrap());
        let d = dir.path().join("d");
        create_dir(&d).unwrap();
        nix::sys::stat::umask(old);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode(&f), mode(&g), mode(&d)), (0o600, 0o600, 0o700));
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        tighten_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
    }

    #[test]
    fn made_as_root_it_belongs_to_the_owner_of_its_directory() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let queue = dir.path().join("queue");
        create_dir(&queue).unwrap();
        assert_eq!(fs::metadata(&queue).unwrap().uid(), 0, "the temp dir is root's: so is what is made in it");
        nix::unistd::chown(&queue, Some(nobody.uid), Some(nobody.gid)).unwrap();
        drop(create_new(&queue.join("entry")).unwrap());
        create_dir(&queue.join("state")).unwrap();
        for p in [queue.join("entry"), queue.join("state")] {
            let m = fs::metadata(&p).unwrap();
            assert_eq!((m.uid(), m.gid()), (nobody.uid.as_raw(), nobody.gid.as_raw()), "{}", p.display());
        }
    }
}
