//! Running as an ordinary user: the server binds its ports as root, then becomes the
//! configured user (group and user, supplementary groups cleared) before it reads a byte from
//! the network. The mailboxes belong to that user — the one Dovecot reads them as.

use std::io;
use std::path::Path;

use nix::unistd::{self, Gid, Uid, User};

/// The uid and gid of `name`.
pub fn lookup(name: &str) -> io::Result<(Uid, Gid)> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok((u.uid, u.gid)),
        Ok(None) => Err(io::Error::new(io::ErrorKind::NotFound, format!("no such user {name:?}"))),
        Err(e) => Err(io::Error::other(format!("looking up user {name:?}: {e}"))),
    }
}

/// Makes `path` belong to `name` (not recursive), when we are root; else leaves it alone.
pub fn chown_to(path: &Path, name: &str) -> io::Result<()> {
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let (uid, gid) = lookup(name)?;
    unistd::chown(path, Some(uid), Some(gid))
        .map_err(|e| io::Error::other(format!("chown {} to {name}: {e}", path.display())))
}

/// Becomes `name` for good: supplementary groups cleared, then the group, then the user.
/// Checks that root cannot be taken back. Running as `name` already is fine; running as
/// another non-root user is an error (we cannot change user).
pub fn drop_to(name: &str) -> io::Result<()> {
    let (uid, gid) = lookup(name)?;
    if Uid::effective() == uid && Uid::current() == uid {
        return Ok(());
    }
    if !Uid::effective().is_root() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("user = {name:?} needs the server started as root (it runs as uid {})", Uid::effective()),
        ));
    }
    let err = |what: &str, e: nix::Error| io::Error::other(format!("dropping privileges to {name}: {what}: {e}"));
    unistd::setgroups(&[]).map_err(|e| err("setgroups", e))?;
    unistd::setgid(gid).map_err(|e| err("setgid", e))?;
    unistd::setuid(uid).map_err(|e| err("setuid", e))?;
    if uid.is_root() || unistd::setuid(Uid::from_raw(0)).is_err() {
        Ok(())
    } else {
        Err(io::Error::other(format!("dropping privileges to {name}: root could be taken back")))
    }
}

/// After the drop to `user`: `path` (when it exists) must be readable, or the server stops
/// here with the file, its owner and mode, and `fix` (`{user}` and `{path}` filled in).
pub fn check_readable(path: &Path, user: &str, what: &str, fix: &str) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::File::open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            let owner = std::fs::metadata(path)
                .map(|m| format!("owned by {}:{} mode={:o}", m.uid(), m.gid(), m.mode() & 0o7777))
                .unwrap_or_else(|_| "whose directory cannot be searched".to_owned());
            let fix = fix.replace("{user}", user).replace("{path}", &path.display().to_string());
            Err(io::Error::new(
                e.kind(),
                format!("{what} {} ({owner}) cannot be read as user {user}: {e}; fix: {fix}", path.display()),
            ))
        }
    }
}
