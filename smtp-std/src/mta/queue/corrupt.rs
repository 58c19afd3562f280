//! Damaged entries: kept, shown and recoverable, never deleted for looking broken.
//!
//! An entry file under its final name was whole when it got it (see [`super::store`]), so one
//! that is short, has a bad first line, or an envelope that does not parse was damaged after
//! it may have been acknowledged. [`Queue::survey`] (the dispatcher's look at the queue, and
//! [`Queue::sweep`] at start) moves it, with its state, into `queue/corrupt/` and logs one line
//! naming the file and the reason; a damaged state alone goes there as `<id>.state`, and the
//! entry goes on from its envelope at submission (its message is still delivered; recipients
//! that had it already may get it twice). `smtp-std queue list` shows what lies there as
//! corrupt, `queue show` prints what can be read of it ([`Corrupt`]), `queue bounce` tells the
//! sender when the envelope can be read, `queue delete` drops it.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::store::{
    first_line_cut_short, parse_envelope, parse_first_line, read_first_line, sync_dir, with_path, Entry, Found, Lock,
    Queue,
};

/// What a look at the whole queue found.
#[derive(Debug, Default)]
pub struct Survey {
    /// The entries that can be read, oldest first.
    pub entries: Vec<Entry>,
    /// Without `repair`: damaged entries and states, those in `corrupt/` and those still in
    /// `entries/` and `state/`. (With it, the dispatcher's look, nothing: they were moved.)
    pub corrupt: Vec<Corrupt>,
    /// Entries that could not be read at all (no permission, an I/O error), with the error.
    pub unreadable: Vec<(String, io::Error)>,
}

/// What can be read of a damaged entry or state.
#[derive(Debug, Clone)]
pub struct Corrupt {
    /// The entry's id.
    pub id: String,
    /// The entry's file when it is damaged (in `corrupt/`, or still in `entries/`); `None`
    /// when only a state was damaged and the entry went on from its envelope at submission.
    pub path: Option<PathBuf>,
    /// Its state files that were kept (in `corrupt/`, or still in `state/`).
    pub states: Vec<PathBuf>,
    /// What is wrong, each naming its file.
    pub problems: Vec<String>,
    /// The envelope as far as it can be read: from a state that can be read, else the one of
    /// the entry's file (of an entry whose state alone is damaged, the one it goes on from).
    pub envelope: Option<Entry>,
    /// Where the message starts in [`Corrupt::path`], and how many of its bytes are there.
    pub message: Option<(u64, u64)>,
    /// The message's size as the entry's first line gives it.
    pub message_len: Option<u64>,
}

impl Corrupt {
    /// Reads what is there of entry `id`'s files: `path` (the entry's file, if damaged) and
    /// `states`.
    fn salvage(id: &str, path: Option<PathBuf>, states: Vec<PathBuf>) -> Self {
        let mut c = Corrupt {
            id: id.to_owned(),
            path,
            states,
            problems: Vec::new(),
            envelope: None,
            message: None,
            message_len: None,
        };
        for state in &c.states {
            match fs::read(state).map_err(|e| with_path(state, e)).and_then(|text| parse_envelope(&text, state)) {
                Ok(entry) if c.envelope.is_none() => c.envelope = Some(entry),
                Ok(_) => {}
                Err(e) => c.problems.push(e.to_string()),
            }
        }
        if let Some(path) = c.path.clone() {
            let entry = c.salvage_entry(&path);
            if c.envelope.is_none() {
                c.envelope = entry;
            }
        }
        c
    }

    /// Reads the entry's file as far as it goes; its envelope, if it parses.
    fn salvage_entry(&mut self, path: &Path) -> Option<Entry> {
        let problem = |why: String| format!("{}: {why}", path.display());
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.problems.push(problem(e.to_string()));
                return None;
            }
        };
        let size = file.metadata().map_or(0, |m| m.len());
        let mut r = BufReader::new(&file);
        let line = read_first_line(&mut r).unwrap_or_default();
        let Some((env_len, msg_len)) = parse_first_line(&line) else {
            self.problems.push(problem(if first_line_cut_short(&line) {
                format!("cut short in its first line ({size} bytes)")
            } else {
                "not a queue entry (bad first line)".into()
            }));
            return None;
        };
        self.message_len = Some(msg_len);
        let offset = line.len() as u64 + env_len;
        if size < offset {
            self.problems.push(problem(format!(
                "cut short in its envelope ({} of its {env_len} bytes are there)",
                size.saturating_sub(line.len() as u64)
            )));
            return None;
        }
        let mut env = vec![0; env_len as usize];
        let entry = match r.read_exact(&mut env).map_err(|e| problem(e.to_string())) {
            Ok(()) => parse_envelope(&env, path).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let present = size - offset;
        if present < msg_len {
            self.problems.push(problem(format!(
                "cut short: {} of its message's {msg_len} bytes are missing",
                msg_len - present
            )));
        } else if present > msg_len {
            self.problems.push(problem(format!("longer than its first line says ({} bytes more)", present - msg_len)));
        }
        self.message = Some((offset, present.min(msg_len)));
        match entry {
            Ok(e) => Some(e),
            Err(e) => {
                self.problems.push(e);
                None
            }
        }
    }

    /// The part of the message that is there, from its first byte.
    pub fn message_reader(&self) -> io::Result<Option<io::Take<File>>> {
        let (Some(path), Some((offset, len))) = (&self.path, self.message) else {
            return Ok(None);
        };
        let mut file = File::open(path).map_err(|e| with_path(path, e))?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| with_path(path, e))?;
        Ok(Some(file.take(len)))
    }

    /// Whether only a state is damaged (the entry itself went on).
    pub fn state_only(&self) -> bool {
        self.path.is_none()
    }

    /// One line: what is wrong.
    pub fn reason(&self) -> String {
        if self.problems.is_empty() {
            "no damage found now".to_owned()
        } else {
            self.problems.join("; ")
        }
    }
}

impl Queue {
    /// `queue/corrupt/` (made, mode 0700, when missing).
    pub fn corrupt_dir(&self) -> io::Result<PathBuf> {
        let dir = self.root().join("corrupt");
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(with_path(&dir, e)),
                _ => sync_dir(self.root()).map_err(|e| with_path(self.root(), e))?,
            }
        }
        Ok(dir)
    }

    /// Moves damaged entry `id` (whose lock the caller holds) into `corrupt/`: its state first
    /// (so that a crash in between leaves no state without an entry for [`Queue::sweep`] to
    /// remove), then the entry; one log line names the file and `reason`.
    pub(super) fn quarantine(&self, id: &str, reason: &io::Error, _held: &Lock) -> io::Result<PathBuf> {
        let dir = self.corrupt_dir()?;
        let state = self.state_path(id);
        if state.exists() {
            let to = free_name(&dir, &format!("{id}.state"));
            fs::rename(&state, &to).map_err(|e| with_path(&state, e))?;
        }
        let (from, to) = (self.entry_path(id), free_name(&dir, id));
        fs::rename(&from, &to).map_err(|e| with_path(&from, e))?;
        tracing::warn!(
            id,
            file = %to.display(),
            "queue entry damaged, kept in {}: {reason}; `smtp-std queue show {id}` prints what is left, \
             `queue bounce {id}` tells the sender, `queue delete {id}` drops it",
            dir.display()
        );
        for d in [dir.clone(), self.root().join("entries"), self.root().join("state")] {
            sync_dir(&d).map_err(|e| with_path(&d, e))?;
        }
        Ok(to)
    }

    /// Moves entry `id`'s damaged state (the caller holds the entry's lock) into `corrupt/`:
    /// the entry goes on from its envelope at submission. One log line.
    fn quarantine_state(&self, id: &str, reason: &io::Error, _held: &Lock) -> io::Result<PathBuf> {
        let dir = self.corrupt_dir()?;
        let (from, to) = (self.state_path(id), free_name(&dir, &format!("{id}.state")));
        fs::rename(&from, &to).map_err(|e| with_path(&from, e))?;
        tracing::warn!(
            id,
            file = %to.display(),
            "queue state damaged, kept in {}: {reason}; the entry goes on from its envelope at submission \
             (recipients that had the message may get it again); `smtp-std queue delete {id}` drops the copy",
            dir.display()
        );
        for d in [dir.clone(), self.root().join("state")] {
            sync_dir(&d).map_err(|e| with_path(&d, e))?;
        }
        Ok(to)
    }

    /// Reads entry `id` (whose lock the caller holds), moving what is damaged into
    /// `corrupt/`: the entry (then [`Found::Gone`]), or its state alone (then the entry as
    /// its envelope at submission gives it).
    pub(super) fn read_repaired(&self, id: &str, held: &Lock) -> Found {
        match self.read(id) {
            Found::EntryDamaged(e) => match self.quarantine(id, &e, held) {
                Ok(_) => Found::Gone,
                Err(q) => Found::Failed(io::Error::new(q.kind(), format!("{e}; moving it into corrupt/: {q}"))),
            },
            Found::StateDamaged(e) => match self.quarantine_state(id, &e, held) {
                // Without its state, only the entry's own envelope can be damaged.
                Ok(_) => match self.read(id) {
                    Found::EntryDamaged(e) => match self.quarantine(id, &e, held) {
                        Ok(_) => Found::Gone,
                        Err(q) => Found::Failed(q),
                    },
                    found => found,
                },
                Err(q) => Found::Failed(io::Error::new(q.kind(), format!("{e}; moving it into corrupt/: {q}"))),
            },
            found => found,
        }
    }

    /// Reads every entry. With `repair`, damaged ones (and damaged states) are moved into
    /// `corrupt/` (an entry someone holds is left for the next look; its holder moves it when
    /// it reads it); without, nothing is changed and they are reported as they lie.
    pub fn survey(&self, repair: bool) -> io::Result<Survey> {
        let mut s = Survey::default();
        for id in self.ids()? {
            let found = match self.read(&id) {
                Found::EntryDamaged(_) | Found::StateDamaged(_) if repair => match self.lock(&id, false) {
                    Ok(Some(lock)) => self.read_repaired(&id, &lock),
                    Ok(None) | Err(_) => continue,
                },
                found => found,
            };
            match found {
                Found::Entry(e) => s.entries.push(e),
                Found::Gone => {}
                Found::Failed(e) => s.unreadable.push((id, e)),
                Found::EntryDamaged(_) => s.corrupt.extend(self.inspect(&id)),
                Found::StateDamaged(_) => {
                    s.entries.extend(self.submitted(&id).ok());
                    s.corrupt.extend(self.inspect(&id));
                }
            }
        }
        if !repair {
            s.corrupt.extend(self.corrupt_entries()?);
            s.corrupt.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Ok(s)
    }

    /// What can be read of entry `id` where it lies, when it (or its state) is damaged: in
    /// `entries/` and `state/` (nothing is moved), else in `corrupt/`. `None`: neither.
    pub fn inspect(&self, id: &str) -> Option<Corrupt> {
        if !Self::valid_id(id) {
            return None;
        }
        let state = Some(self.state_path(id)).filter(|p| p.exists());
        match self.read(id) {
            Found::EntryDamaged(_) => {
                Some(Corrupt::salvage(id, Some(self.entry_path(id)), state.into_iter().collect()))
            }
            Found::StateDamaged(_) => {
                let mut c = Corrupt::salvage(id, None, state.into_iter().collect());
                c.envelope = self.submitted(id).ok();
                Some(c)
            }
            _ => self.corrupt(id),
        }
    }

    /// What lies in `corrupt/`, by id.
    pub fn corrupt_entries(&self) -> io::Result<Vec<Corrupt>> {
        let dir = self.root().join("corrupt");
        let names: Vec<String> = match fs::read_dir(&dir) {
            Ok(d) => d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(with_path(&dir, e)),
        };
        let mut ids: Vec<&str> =
            names.iter().map(|n| n.split('.').next().unwrap_or("")).filter(|id| Self::valid_id(id)).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids.into_iter().filter_map(|id| self.corrupt(id)).collect())
    }

    /// What `corrupt/` holds of entry `id`, if anything.
    pub fn corrupt(&self, id: &str) -> Option<Corrupt> {
        if !Self::valid_id(id) {
            return None;
        }
        let dir = self.root().join("corrupt");
        let path = Some(dir.join(id)).filter(|p| p.exists());
        let mut states: Vec<PathBuf> = fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix(id)?.starts_with(".state").then(|| dir.join(name))
            })
            .collect();
        states.sort();
        (path.is_some() || !states.is_empty()).then(|| Corrupt::salvage(id, path, states))
    }

    /// Removes what `corrupt/` holds of entry `id`; whether there was anything.
    pub fn remove_corrupt(&self, id: &str) -> io::Result<bool> {
        let Some(c) = self.corrupt(id) else {
            return Ok(false);
        };
        for p in c.path.iter().chain(&c.states) {
            fs::remove_file(p).map_err(|e| with_path(p, e))?;
        }
        Ok(true)
    }
}

/// `dir/name`, or `dir/name.2`, `.3`, ... when taken: nothing kept there is written over.
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    (2..10_000).map(|n| dir.join(format!("{name}.{n}"))).find(|p| !p.exists()).unwrap_or(first)
}
