//! [`Spool`]: a message read once and sent as often as needed, in memory up to a bound and
//! past it in a private temporary file.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;

use super::random;

/// The part of a message a [`Spool`] keeps in memory before it moves to a temporary file.
pub const SPOOL_MEMORY: usize = 4 << 20;

/// A message read once and sent as often as needed: in memory up to a bound, past it in a
/// temporary file (created with mode 0600 in [`std::env::temp_dir`] and unlinked at once on
/// Unix; elsewhere removed on drop).
#[derive(Debug)]
pub struct Spool {
    data: SpoolData,
    len: u64,
}

#[derive(Debug)]
enum SpoolData {
    Memory(Vec<u8>),
    File { file: File, offset: u64, remove: Option<PathBuf> },
}

impl Spool {
    /// Reads `input` to its end: up to `memory_limit` bytes stay in memory, a larger message
    /// goes to a temporary file.
    pub fn new(mut input: impl Read, memory_limit: usize) -> io::Result<Self> {
        let mut head = Vec::new();
        (&mut input).take(memory_limit as u64 + 1).read_to_end(&mut head)?;
        if head.len() <= memory_limit {
            return Ok(Self::from_bytes(head));
        }
        let (mut file, remove) = temp_file()?;
        file.write_all(&head)?;
        drop(head);
        io::copy(&mut input, &mut file)?;
        file.flush()?;
        let len = file.stream_position()?;
        Ok(Self { data: SpoolData::File { file, offset: 0, remove }, len })
    }

    /// A message already in a file (read from its start to its current length; the file is
    /// not removed).
    pub fn from_file(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self::from_file_range(file, 0, len))
    }

    /// A message that is `len` bytes of `file` from `offset` (a queue entry's message after
    /// its envelope, say; the file is not removed).
    pub fn from_file_range(file: File, offset: u64, len: u64) -> Self {
        Self { data: SpoolData::File { file, offset, remove: None }, len }
    }

    /// A message already in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let len = bytes.len() as u64;
        Self { data: SpoolData::Memory(bytes), len }
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it went to a temporary file.
    pub fn is_file(&self) -> bool {
        matches!(self.data, SpoolData::File { .. })
    }

    /// A reader from the start of the message.
    pub fn reader(&mut self) -> io::Result<Box<dyn Read + '_>> {
        match &mut self.data {
            SpoolData::Memory(v) => Ok(Box::new(&v[..])),
            SpoolData::File { file, offset, .. } => {
                file.seek(io::SeekFrom::Start(*offset))?;
                Ok(Box::new(file.take(self.len)))
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let SpoolData::File { remove: Some(path), .. } = &self.data {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A new temporary file, and its path when it could not be unlinked while open.
fn temp_file() -> io::Result<(File, Option<PathBuf>)> {
    let dir = std::env::temp_dir();
    for _ in 0..16 {
        let path = dir.join(format!(".smtp-std-spool-{}-{:016x}", std::process::id(), random()));
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(file) => {
                let remove = std::fs::remove_file(&path).is_err().then_some(path);
                return Ok((file, remove));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "cannot create a temporary file"))
}
