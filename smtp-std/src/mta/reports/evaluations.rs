//! The DMARC evaluations of received mail, kept per policy domain until its next report:
//! one line of JSON per message appended to `<dir>/<domain>.jsonl` (not fsynced: a crash
//! may lose the last seconds of evaluations, never mail); at a report's time the file is
//! renamed (and that fsynced) into `<dir>/sending/` (new evaluations start a new file) and
//! removed once the report is queued, so nothing is sent twice but the report being queued
//! at that moment.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::aggregate::Row;
use crate::mta::private;

/// The evaluation of one message, for the report to its From domain's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    /// When, seconds since the epoch.
    pub at: u64,
    /// The policy domain (lower case).
    pub domain: String,
    /// The domain's reporting period in hours when it was evaluated (24 when unknown; the
    /// sender looks up the `ri` of the record again, rounded: [`interval_hours`]).
    pub interval_hours: u32,
    /// The report row of this message (`count` 1).
    pub row: Row,
}

/// The period of a record's `ri` (seconds, default 86400) as mox rounds it: up to whole
/// hours, then down to the nearest of 24, 12, 8, 6, 4, 3, 2 or 1 hours, so that periods
/// begin at UTC midnight.
pub fn interval_hours(ri: Option<u64>) -> u32 {
    let hours = ri.unwrap_or(86400).div_ceil(3600);
    [24, 12, 8, 6, 4, 3, 2].into_iter().find(|&h| hours >= u64::from(h)).unwrap_or(1)
}

/// Whether a period of `hours` ends at `end` (seconds since the epoch, a whole hour): the
/// periods of a day start at UTC midnight, as mox's do.
pub fn due_at(end: u64, hours: u32) -> bool {
    let hour = match (end / 3600) % 24 {
        0 => 24,
        h => h,
    };
    end % 3600 == 0 && hour % u64::from(hours.max(1)) == 0
}

/// Whether `domain` can name a file (a DNS name in lower case, no `/` nor leading dot).
pub fn file_safe(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && !domain.starts_with('.')
        && domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !domain.contains("..")
}

/// The evaluations on disk.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    max: usize,
    /// Evaluations in each domain's current file (counted on first use).
    counts: Mutex<HashMap<String, usize>>,
}

impl Store {
    /// The store in `dir` (created private, with `sending/`); at most `max` evaluations per
    /// domain and period.
    pub fn open(dir: PathBuf, max: usize) -> io::Result<Self> {
        for d in [dir.clone(), dir.join("sending")] {
            match private::create_dir(&d) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(io::Error::new(e.kind(), format!("{}: {e}", d.display())))
                }
                _ => private::tighten_dir(&d)?,
            }
        }
        Ok(Self { dir, max, counts: Mutex::new(HashMap::new()) })
    }

    fn current(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}.jsonl"))
    }

    /// Appends `e` to its domain's file (not fsynced); `Ok(false)`: the domain has
    /// [`Store::open`]'s maximum already (not recorded).
    pub fn add(&self, e: &Evaluation) -> io::Result<bool> {
        if !file_safe(&e.domain) {
            return Ok(false);
        }
        let path = self.current(&e.domain);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = match counts.get(&e.domain) {
            Some(&n) => n,
            None => read(&path).map(|v| v.len()).unwrap_or(0),
        };
        if n >= self.max {
            counts.insert(e.domain.clone(), n);
            return Ok(false);
        }
        let mut line = serde_json::to_vec(e).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut f = OpenOptions::new().append(true).create(true).mode(private::FILE_MODE).open(&path)?;
        f.write_all(&line)?;
        counts.insert(e.domain.clone(), n + 1);
        // Not fsynced: an evaluation is statistics, not mail. The page cache writes it out
        // within seconds, and a crash loses at most those lines (a torn last line is skipped
        // by `read`); an fsync here would cost every received message a second journal
        // commit before its 250.
        drop(counts);
        Ok(true)
    }

    /// The domains with evaluations waiting, and the reporting period in hours of the last
    /// one of each.
    pub fn domains(&self) -> io::Result<Vec<(String, u32)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let Some(domain) = name.strip_suffix(".jsonl").filter(|d| file_safe(d)) else { continue };
            let hours = read(&self.current(domain))?.last().map_or(24, |e| e.interval_hours);
            out.push((domain.to_owned(), hours));
        }
        out.sort();
        Ok(out)
    }

    /// Moves `domain`'s evaluations aside for the report of the period ending at `end`; new
    /// ones go into a new file. The file in `sending/`.
    pub fn take(&self, domain: &str, end: u64) -> io::Result<Option<PathBuf>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let to = self.dir.join("sending").join(format!("{domain}.{end}.jsonl"));
        // The period's lines on the disk before the file changes its name (they were
        // appended without an fsync).
        match fs::File::open(self.current(domain)) {
            Ok(f) => f.sync_all()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        match fs::rename(self.current(domain), &to) {
            Ok(()) => {
                counts.insert(domain.to_owned(), 0);
                fs::File::open(&self.dir)?.sync_all()?;
                Ok(Some(to))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The files waiting in `sending/` (taken, not yet reported: also after a crash).
    pub fn taken(&self) -> io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.dir.join("sending"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        v.sort();
        Ok(v)
    }
}

/// The evaluations of a file; lines that do not read (a torn last line) are skipped.
pub fn read(path: &Path) -> io::Result<Vec<Evaluation>> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        if let Ok(e) = serde_json::from_str::<Evaluation>(&line?) {
            out.push(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_as_mox_does() {
        let h = |s| interval_hours(Some(s));
        assert_eq!(interval_hours(None), 24);
        assert_eq!((h(1), h(3600), h(3601), h(7200), h(5 * 3600), h(10 * 3600)), (1, 1, 2, 2, 4, 8));
        assert_eq!((h(13 * 3600), h(86400), h(7 * 86400)), (12, 24, 24));
    }

    #[test]
    fn periods_end_at_their_utc_hours() {
        let day = 20_000 * 86400;
        assert!(due_at(day, 24) && due_at(day, 1) && due_at(day, 8));
        assert!(!due_at(day + 3600, 24) && due_at(day + 3600, 1) && !due_at(day + 3600, 2));
        assert!(due_at(day + 8 * 3600, 8) && due_at(day + 8 * 3600, 4) && !due_at(day + 8 * 3600, 12));
        assert!(due_at(day + 12 * 3600, 12) && !due_at(day + 12 * 3600 + 5, 12), "whole hours only");
    }

    #[test]
    fn add_take_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("out"), 2).unwrap();
        let e = |at| Evaluation { at, domain: "a.test".into(), interval_hours: 24, row: Row::default() };
        assert!(store.add(&e(1)).unwrap() && store.add(&e(2)).unwrap());
        assert!(!store.add(&e(3)).unwrap(), "the limit");
        assert!(!store.add(&Evaluation { domain: "../x".into(), ..e(1) }).unwrap());
        assert_eq!(store.domains().unwrap(), [("a.test".to_owned(), 24)]);
        let taken = store.take("a.test", 100).unwrap().unwrap();
        assert_eq!(read(&taken).unwrap(), [e(1), e(2)]);
        assert!(store.add(&e(4)).unwrap(), "a new period");
        assert_eq!(store.taken().unwrap(), [taken]);
        assert_eq!(store.take("b.test", 100).unwrap(), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("out/a.test.jsonl")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
