//! The running server's files in `data_dir`, by which commands find it and talk to it:
//!
//! - `smtp-std.pid`: its process id, the start time of that process (so that a pid reused by
//!   another process after a crash is not taken for the server) and its config file. Written
//!   (`0600`) once the listeners are bound, removed when it exits cleanly. A file whose process
//!   is gone is stale: the server is not running.
//! - `reload.status`: the outcome of its last reload (`SIGHUP`), with a generation counter
//!   that each reload raises, so that `smtp-std reload` knows the answer to its own signal.
//!
//! ```
//! use smtp_std::mta::control::{Outcome, ReloadStatus};
//!
//! let status = ReloadStatus {
//!     pid: 42,
//!     generation: 3,
//!     outcome: Outcome::Refused { error: "smtp-std.toml:7: listen.smtp[0]: invalid socket address syntax".into() },
//! };
//! assert_eq!(ReloadStatus::parse(&status.to_text()), Some(status));
//! ```

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The pid file's name in `data_dir`.
pub const PID_FILE: &str = "smtp-std.pid";
/// The reload status file's name in `data_dir`.
pub const STATUS_FILE: &str = "reload.status";

/// What the pid file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidFile {
    /// The server's process id.
    pub pid: u32,
    /// The start time of that process (clock ticks since boot, Linux's `/proc/<pid>/stat`),
    /// when known.
    pub start: Option<u64>,
    /// The config file it runs with.
    pub config: Option<PathBuf>,
}

/// The start time of process `pid` (Linux: field 22 of `/proc/<pid>/stat`); `None` where
/// unknown.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl PidFile {
    /// This process, running with `config` (made absolute: take it before a privilege drop
    /// may hide the way there).
    pub fn this_process(config: &Path) -> Self {
        let pid = std::process::id();
        Self { pid, start: start_time(pid), config: Some(absolute(config)) }
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n", self.pid);
        if let Some(start) = self.start {
            text.push_str(&format!("start {start}\n"));
        }
        if let Some(config) = &self.config {
            text.push_str(&format!("config {}\n", config.display()));
        }
        text
    }

    /// Reads the file's text (`None`: not a pid file of ours).
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let mut file = Self { pid, start: None, config: None };
        for line in lines {
            match line.split_once(' ') {
                Some(("start", s)) => file.start = s.trim().parse().ok(),
                Some(("config", c)) => file.config = Some(PathBuf::from(c)),
                _ => {}
            }
        }
        Some(file)
    }

    /// Whether the process is still there, and is the one that wrote the file (same start
    /// time, where it can be known).
    pub fn is_running(&self) -> bool {
        use nix::errno::Errno;
        let Ok(raw) = i32::try_from(self.pid) else { return false };
        let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
            Ok(()) | Err(Errno::EPERM) => true,
            Err(_) => false,
        };
        alive
            && match (self.start, start_time(self.pid)) {
                (Some(written), Some(now)) => written == now,
                _ => true,
            }
    }
}

/// `path` without symbolic links, or at least absolute (when it cannot be resolved).
pub fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_owned())
}

/// `<data_dir>/smtp-std.pid`.
pub fn pid_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PID_FILE)
}

/// `<data_dir>/reload.status`.
pub fn status_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATUS_FILE)
}

/// The pid file of `data_dir`, if there is one (running or stale: see [`PidFile::is_running`]).
pub fn read_pid_file(data_dir: &Path) -> io::Result<Option<PidFile>> {
    let path = pid_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => PidFile::parse(&text).map(Some).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a pid file (no process id)", path.display()))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// Writes `text` to `path` (`0600`) through a temporary file and a rename: a reader sees the
/// old text or the new one.
fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let written = crate::mta::private::create_new(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
    }
    Ok(())
}

/// Stops a second server on the same `data_dir`: an error naming the pid file and the
/// process when one runs. A stale pid file is no obstacle (it is replaced).
pub fn refuse_if_running(data_dir: &Path) -> io::Result<()> {
    match read_pid_file(data_dir) {
        Ok(Some(p)) if p.is_running() && p.pid != std::process::id() => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{}: smtp-std already runs with this data_dir (pid {}); stop it first, or use `smtp-std reload`",
                pid_path(data_dir).display(),
                p.pid
            ),
        )),
        _ => Ok(()),
    }
}

/// Writes the pid file `file` into `data_dir`.
pub fn write_pid_file(data_dir: &Path, file: &PidFile) -> io::Result<()> {
    write_atomically(&pid_path(data_dir), &file.to_text())
}

/// Removes `data_dir`'s pid file if it names this process.
pub fn remove_pid_file(data_dir: &Path) {
    if let Ok(Some(p)) = read_pid_file(data_dir) {
        if p.pid == std::process::id() {
            let _ = std::fs::remove_file(pid_path(data_dir));
        }
    }
}

/// The outcome of a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new configuration is in use; the changes named here need a restart.
    Reloaded {
        /// Each change that takes effect only at the next start.
        restart: Vec<String>,
    },
    /// The new configuration was refused whole: the running one stays.
    Refused {
        /// Why (the file, the line, the key).
        error: String,
    },
}

/// What `reload.status` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadStatus {
    /// The server's process id.
    pub pid: u32,
    /// How many reloads this process has done (the first is 1).
    pub generation: u64,
    /// How the last one went.
    pub outcome: Outcome,
}

/// One line: a message's line ends become spaces.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

impl ReloadStatus {
    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut text = format!("pid {}\ngeneration {}\n", self.pid, self.generation);
        match &self.outcome {
            Outcome::Reloaded { restart } => {
                text.push_str("reloaded\n");
                for r in restart {
                    text.push_str(&format!("restart {}\n", one_line(r)));
                }
            }
            Outcome::Refused { error } => text.push_str(&format!("refused\nerror {}\n", one_line(error))),
        }
        text
    }

    /// Reads the file's text (`None`: incomplete or not ours).
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let pid = lines.next()?.strip_prefix("pid ")?.parse().ok()?;
        let generation = lines.next()?.strip_prefix("generation ")?.parse().ok()?;
        let outcome = match lines.next()? {
            "reloaded" => Outcome::Reloaded {
                restart: lines.filter_map(|l| l.strip_prefix("restart ")).map(str::to_owned).collect(),
            },
            "refused" => Outcome::Refused { error: lines.next()?.strip_prefix("error ")?.to_owned() },
            _ => return None,
        };
        Some(Self { pid, generation, outcome })
    }
}

/// Writes `data_dir`'s reload status.
pub fn write_status(data_dir: &Path, status: &ReloadStatus) -> io::Result<()> {
    write_atomically(&status_path(data_dir), &status.to_text())
}

/// `data_dir`'s reload status, if there is a readable one.
pub fn read_status(data_dir: &Path) -> Option<ReloadStatus> {
    ReloadStatus::parse(&std::fs::read_to_string(status_path(data_dir)).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files_round_trip_and_go_stale() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_pid_file(dir.path()).unwrap(), None);
        write_pid_file(dir.path(), &PidFile::this_process(Path::new("/etc/smtp-std.toml"))).unwrap();
        let p = read_pid_file(dir.path()).unwrap().unwrap();
        assert_eq!(p.pid, std::process::id());
        assert_eq!(p.config.as_deref(), Some(Path::new("/etc/smtp-std.toml")));
        assert!(p.is_running());
        if cfg!(target_os = "linux") {
            assert!(p.start.is_some());
            // Same pid, another start time: a reused pid, not the server.
            let other = PidFile { start: p.start.map(|s| s + 1), ..p.clone() };
            assert!(!other.is_running());
        }
        refuse_if_running(dir.path()).unwrap();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(pid_path(dir.path())).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);

        // A process that is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        std::fs::write(pid_path(dir.path()), format!("{gone}\n")).unwrap();
        assert!(!read_pid_file(dir.path()).unwrap().unwrap().is_running());
        refuse_if_running(dir.path()).unwrap();

        std::fs::write(pid_path(dir.path()), "garbage\n").unwrap();
        assert!(read_pid_file(dir.path()).unwrap_err().to_string().contains("not a pid file"));
        write_pid_file(dir.path(), &PidFile::this_process(Path::new("x.toml"))).unwrap();
        let p = read_pid_file(dir.path()).unwrap().unwrap();
        assert!(p.config.unwrap().is_absolute());
        remove_pid_file(dir.path());
        assert!(!pid_path(dir.path()).exists());
    }

    #[test]
    fn statuses_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_status(dir.path()), None);
        let ok = ReloadStatus {
            pid: 7,
            generation: 2,
            outcome: Outcome::Reloaded { restart: vec!["listen.smtp changed".into(), "user\nchanged".into()] },
        };
        write_status(dir.path(), &ok).unwrap();
        let back = read_status(dir.path()).unwrap();
        assert_eq!(
            back.outcome,
            Outcome::Reloaded { restart: vec!["listen.smtp changed".into(), "user changed".into()] }
        );
        assert_eq!(ReloadStatus::parse("pid 1\n"), None);
    }
}
