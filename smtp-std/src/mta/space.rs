//! Room on the disk: the check at MAIL against `[limits] min_free_space`.
//!
//! A write that finds the disk full is answered `452 4.3.1` where it fails
//! ([`crate::Decision::io_error`]); this check refuses earlier, at MAIL, while the file system
//! of the data directory has less room than asked, so that a message is not received only to
//! be refused at its end, and the room left is kept for the queue's own writes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use smtp_proto::Reply;

use crate::Decision;

/// With less than `min` octets (or no inode) free on the file system of `dir`, MAIL gets
/// `452 4.3.1 Insufficient system storage`; the first refusal and the end of the shortage are
/// logged, not each refusal.
#[derive(Debug)]
pub struct MinFreeSpace {
    dir: PathBuf,
    min: u64,
    low: AtomicBool,
}

impl MinFreeSpace {
    /// The check of `dir` against `min` octets.
    pub fn new(dir: PathBuf, min: u64) -> Self {
        Self { dir, min, low: AtomicBool::new(false) }
    }

    /// The refusal while there is too little room; `None` when there is enough.
    pub fn check(&self) -> Option<Decision> {
        match self.shortage() {
            Some(why) => {
                if !self.low.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        "{why}: MAIL is refused with 452 4.3.1 until there is room (logged once)"
                    );
                }
                Some(Reply::INSUFFICIENT_STORAGE.into())
            }
            None => {
                if self.low.swap(false, Ordering::Relaxed) {
                    tracing::info!(dir = %self.dir.display(), "room again: MAIL is accepted");
                }
                None
            }
        }
    }

    /// Why there is too little room now, if there is.
    fn shortage(&self) -> Option<String> {
        let st = match nix::sys::statvfs::statvfs(&self.dir) {
            Ok(st) => st,
            Err(e) => {
                // The check cannot tell: mail is taken (a write that fails says 452 itself).
                tracing::debug!(dir = %self.dir.display(), "free space unknown: {e}");
                return None;
            }
        };
        // (u32 on some targets.)
        #[allow(clippy::useless_conversion)]
        let free = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
        if free < self.min {
            Some(format!("{free} octets free, less than [limits] min_free_space = {}", self.min))
        } else if st.files() > 0 && st.files_available() == 0 {
            Some("no inode free".to_owned())
        } else {
            None
        }
    }
}
