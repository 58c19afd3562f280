//! Group commit of a directory's flushes: the sessions that submit queue entries at the same
//! time share the `fsync`s of `entries/` instead of queueing one each.

use std::io;
use std::path::Path;
use std::sync::{Condvar, Mutex};

use super::store::sync_dir;

/// Group commit of one directory's flushes: a caller needs a flush that *started* after its
/// change (its new file's name); one flush serves every caller that asked before it began,
/// so 20 sessions submitting at once share flushes instead of queueing 20 of them.
#[derive(Debug, Default)]
pub(super) struct GroupSync {
    state: Mutex<Syncs>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct Syncs {
    /// Flushes started so far (the running one included).
    started: u64,
    /// The last flush that finished, and its error.
    finished: u64,
    error: Option<(io::ErrorKind, String)>,
    running: bool,
    /// The last flush that finished without an error.
    synced: u64,
}

impl GroupSync {
    /// The flush that covers a change made before this call: the next one to start.
    pub(super) fn next(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).started + 1
    }

    /// The last flush that finished without an error: every change covered by a flush up to
    /// this one is durable.
    pub(super) fn synced(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).synced
    }

    /// Returns once a flush of `dir` that started after this call has finished.
    pub(super) fn sync(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // The next flush to start is the first that covers this caller's change.
        let ticket = s.started + 1;
        loop {
            if s.finished >= ticket {
                return match &s.error {
                    None => Ok(()),
                    Some((kind, text)) => Err(io::Error::new(*kind, text.clone())),
                };
            }
            if !s.running {
                break;
            }
            s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.running = true;
        s.started += 1;
        let mine = s.started;
        drop(s);
        let result = sync_dir(dir);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.running = false;
        s.finished = mine;
        s.error = result.as_ref().err().map(|e| (e.kind(), e.to_string()));
        if result.is_ok() {
            s.synced = mine;
        }
        drop(s);
        self.done.notify_all();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn group_sync_serves_every_caller() {
        let dir = tempfile::tempdir().unwrap();
        let g = Arc::new(GroupSync::default());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (g, d) = (g.clone(), dir.path().to_owned());
                std::thread::spawn(move || (0..20).for_each(|_| g.sync(&d).unwrap()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let s = g.state.lock().unwrap();
        assert!(s.started >= 20 && s.started <= 320 && !s.running, "{s:?}");
        assert_eq!(s.finished, s.started);
        assert_eq!(s.synced, s.finished);
        drop(s);
        // An error reaches the callers it served, and the flush does not count as done.
        let synced = g.synced();
        assert!(g.sync(&dir.path().join("missing")).is_err());
        assert_eq!(g.synced(), synced);
        g.sync(dir.path()).unwrap();
        assert_eq!(g.synced(), synced + 2);
    }
}
