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

/// What the server's user needs of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read the file (the config, certificates, keys: re-read at reload).
    Read,
    /// Create, write and remove inside the directory (`data_dir` and everything below).
    Write,
}

/// Who the server will run as: its uid and its one group (supplementary groups are dropped).
#[derive(Debug, Clone, Copy)]
struct Who {
    uid: u32,
    gid: u32,
}

impl Who {
    /// Whether the mode bits of `meta` give this user `bits` (4 read, 2 write, 1 search).
    fn may(&self, meta: &std::fs::Metadata, bits: u32) -> bool {
        use std::os::unix::fs::MetadataExt;
        if self.uid == 0 {
            return true;
        }
        let mode = meta.mode();
        let granted = if meta.uid() == self.uid {
            mode >> 6
        } else if meta.gid() == self.gid {
            mode >> 3
        } else {
            mode
        } & 7;
        granted & bits == bits
    }
}

/// `path`'s owner and mode, Dovecot's way: `dir owned by 0:0 mode=0700`.
pub(crate) fn describe(path: &Path, meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let kind = if meta.is_dir() { "dir" } else { "file" };
    format!("{}, {kind} owned by {}:{} mode={:04o}", path.display(), meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

/// Before the drop to `user`: refuses, naming the path, its owner and mode, the user and the
/// fix, when `user` could not reach `path` (every directory above it needs `+x` for that
/// user) or could not do what `need` says with it. A path that does not exist yet passes once
/// its existing parents can be searched (the server creates it and gives it to `user`).
/// `what` names the path's role (`data_dir`, `[tls] cert`, ...); `fix` replaces the fix that
/// is suggested for a file that cannot be read (`{user}` and `{path}` are filled in).
pub fn check_access(path: &Path, user: &str, need: Need, what: &str, fix: Option<&str>) -> io::Result<()> {
    let (uid, gid) = lookup(user)?;
    let who = Who { uid: uid.as_raw(), gid: gid.as_raw() };
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let refuse = |missing: &str, at: &Path, meta: &std::fs::Metadata, fix: String| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{what} {}: user {user} (uid {}) would not be able to use it: missing {missing} perm: {}; fix: {fix}",
                path.display(),
                who.uid,
                describe(at, meta)
            ),
        )
    };
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    for dir in ancestors {
        let Ok(meta) = std::fs::metadata(dir) else { break };
        if !who.may(&meta, 1) {
            let fix = format!("chmod o+x {} (or put {what} where {user} can reach it)", dir.display());
            return Err(refuse("+x", dir, &meta, fix));
        }
    }
    let Ok(meta) = std::fs::metadata(&path) else { return Ok(()) };
    match need {
        Need::Read if !who.may(&meta, 4) => {
            let p = path.display().to_string();
            let fix = match fix {
                Some(f) => f.replace("{user}", user).replace("{path}", &p),
                None => format!("chgrp {} {p}; chmod g+r {p} (or chown {user} {p})", group_name(gid)),
            };
            Err(refuse("+r", &path, &meta, fix))
        }
        Need::Write if meta.is_dir() && !who.may(&meta, 7) && !Uid::effective().is_root() => {
            let fix = format!("chown -R {user} {}", path.display());
            Err(refuse("+rwx", &path, &meta, fix))
        }
        _ => Ok(()),
    }
}

/// The name of group `gid` (or its number).
fn group_name(gid: Gid) -> String {
    unistd::Group::from_gid(gid).ok().flatten().map_or_else(|| gid.to_string(), |g| g.name)
}

/// Gives `dir` and everything below it to `user` when a directory or file in it belongs to
/// someone else (mailboxes and queue files of an earlier `user`), as root; returns how many
/// paths changed owner. Symbolic links are not followed.
pub fn give_tree_to(dir: &Path, user: &str) -> io::Result<usize> {
    use std::os::unix::fs::MetadataExt;
    if !Uid::effective().is_root() {
        return Ok(0);
    }
    let (uid, gid) = lookup(user)?;
    let mut changed = 0;
    let mut todo = vec![dir.to_owned()];
    while let Some(p) = todo.pop() {
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.uid() != uid.as_raw() || meta.gid() != gid.as_raw() {
            unistd::chown(&p, Some(uid), Some(gid))
                .map_err(|e| io::Error::other(format!("chown {user} {}: {e}", p.display())))?;
            changed += 1;
        }
        if meta.is_dir() {
            let entries =
                std::fs::read_dir(&p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
            for entry in entries {
                todo.push(entry.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?.path());
            }
        }
    }
    if changed > 0 {
        tracing::info!(dir = %dir.display(), user, changed, "gave the files of an earlier user to this one");
    }
    Ok(changed)
}
