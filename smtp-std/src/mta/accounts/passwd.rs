//! Dovecot's passwd-file format: the accounts file.
//!
//! One account a line, `user@domain:{SCHEME}hash[:uid:gid:gecos:home:shell:extra_fields]`;
//! lines starting with `#` and blank lines are comments. The same file can be Dovecot's
//! `passdb { driver = passwd-file }`. Only hashed passwords are accepted ([`super::hash`]): a
//! clear-text or unknown scheme makes the whole file fail to load, naming the file and the line,
//! so a mistake is seen at start instead of as a login that never works.
//!
//! User names compare case-insensitively (ASCII; kept lower case); every user is `local@domain`.
//!
//! The editing functions ([`add_user`], [`set_password`], [`remove_user`]) each rewrite the whole
//! file atomically under an exclusive lock (`flock(2)` on `<file>.lock`): every other line stays
//! byte for byte, the new file keeps the old one's mode and owner, and it replaces the old one by
//! a rename after an fsync, followed by an fsync of the directory. Readers need no lock: they see the old file
//! or the new one, never a mixture.
//!
//! ```
//! use smtp_std::mta::accounts::{hash, passwd::PasswdFile};
//!
//! let text = format!("# the accounts\nAlice@Example.org:{}::::::\n", hash::hash_password("s3cret"));
//! let file = PasswdFile::parse(&text)?;
//! assert!(file.contains("alice@example.org"));
//! assert!(file.verify("ALICE@example.org", "s3cret"));
//! assert!(!file.verify("alice@example.org", "guess"));
//! assert!(!file.verify("bob@example.org", "s3cret"));
//!
//! let err = PasswdFile::parse("bob@example.org:{PLAIN}s3cret\n").unwrap_err();
//! assert!(err.to_string().starts_with("line 1: bob@example.org: password not hashed"));
//! # Ok::<(), smtp_std::mta::accounts::passwd::PasswdError>(())
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::hash::{self, HashError};

/// The mode of an accounts file we create: the owner writes, the group (the mail server's)
/// reads, nobody else.
const NEW_FILE_MODE: u32 = 0o640;

/// An Argon2id hash (our parameters) of a random password nobody kept: an unknown user's
/// password is checked against it, so that a login attempt costs the same whether the user
/// exists or not.
const DUMMY_HASH: &str =
    "{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$7PFTWOtEsfILMhjOXdMg7A$xsPleIyhQl/HuP5Jm4XdEP1aINdT2MSffG8y55xtrqY";

/// What is wrong with one line of an accounts file. No variant holds the password field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    /// No `:` between the user name and the password.
    NoColon,
    /// The user name is not `local@domain` or holds a space or control character; the reason.
    BadUser(String, &'static str),
    /// The user appeared already, on the line given.
    Duplicate {
        /// The user (lower case).
        user: String,
        /// Where it was first.
        first_line: usize,
    },
    /// The password is not a hash we verify (clear text, or another scheme).
    Password {
        /// The user (lower case).
        user: String,
        /// Why.
        error: HashError,
    },
    /// The line is not UTF-8.
    NotUtf8,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineProblem::NoColon => {
                f.write_str("no `:` between the user and the password (`user@domain:{SCHEME}hash`)")
            }
            LineProblem::BadUser(user, why) => write!(f, "user `{user}`: {why}"),
            LineProblem::Duplicate { user, first_line } => {
                write!(f, "{user}: duplicate user (first on line {first_line})")
            }
            LineProblem::Password { user, error } => {
                write!(f, "{user}: {error}: set it with `smtp-std user passwd {user}`")
            }
            LineProblem::NotUtf8 => f.write_str("not UTF-8"),
        }
    }
}

/// An accounts file that cannot be read, used or changed.
#[derive(Debug)]
pub enum PasswdError {
    /// A line that cannot be used; `file` is `None` for text given to [`PasswdFile::parse`].
    Line {
        /// The file.
        file: Option<PathBuf>,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        problem: LineProblem,
    },
    /// Reading the file failed.
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Writing the new file (or its lock, its temporary file, its directory) failed; the old
    /// file is unchanged.
    Write {
        /// The file that could not be written.
        file: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// [`add_user`] of a user that is already there.
    Exists {
        /// The accounts file.
        file: PathBuf,
        /// The user.
        user: String,
    },
    /// [`set_password`] or [`remove_user`] of a user that is not there.
    NoSuchUser {
        /// The accounts file.
        file: PathBuf,
        /// The user.
        user: String,
    },
    /// A user name that cannot go into the file; the name and the reason.
    BadUser(String, &'static str),
    /// A password field that is not a hash we verify.
    BadHash(HashError),
}

impl fmt::Display for PasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswdError::Line { file: Some(file), line, problem } => write!(f, "{}:{line}: {problem}", file.display()),
            PasswdError::Line { file: None, line, problem } => write!(f, "line {line}: {problem}"),
            PasswdError::Read { file, source } => write!(f, "{}: cannot read: {source}", file.display()),
            PasswdError::Write { file, source } => write!(f, "{}: cannot write: {source}", file.display()),
            PasswdError::Exists { file, user } => write!(f, "{}: user {user} exists already", file.display()),
            PasswdError::NoSuchUser { file, user } => write!(f, "{}: no user {user}", file.display()),
            PasswdError::BadUser(user, why) => write!(f, "user `{user}`: {why}"),
            PasswdError::BadHash(e) => write!(f, "refused to store the password: {e}"),
        }
    }
}

impl std::error::Error for PasswdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PasswdError::Read { source, .. } | PasswdError::Write { source, .. } => Some(source),
            PasswdError::BadHash(e) => Some(e),
            _ => None,
        }
    }
}

/// Checks a user name (`local@domain`, no space, control character or `:`) and lower-cases it.
pub fn normalize_user(user: &str) -> Result<String, &'static str> {
    if user.is_empty() {
        return Err("empty user name");
    }
    if user.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':') {
        return Err("a user name holds no space, control character or `:`");
    }
    if user.starts_with('#') {
        return Err("a user name cannot start with `#` (a comment)");
    }
    match user.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(user.to_ascii_lowercase()),
        _ => Err("not of the form `local@domain`"),
    }
}

/// The accounts: each user (lower case) and the password hash.
#[derive(Clone, Default)]
pub struct PasswdFile {
    users: BTreeMap<String, String>,
}

/// Shows the users, never the hashes.
impl fmt::Debug for PasswdFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswdFile").field("users", &self.users.keys().collect::<Vec<_>>()).finish()
    }
}

/// Whether a line (without its end) is a comment or blank.
fn is_comment(line: &[u8]) -> bool {
    let trimmed = line.trim_ascii_start();
    trimmed.is_empty() || trimmed[0] == b'#'
}

impl PasswdFile {
    /// Reads and checks `path`; errors name the file and the line.
    pub fn load(path: &Path) -> Result<Self, PasswdError> {
        let bytes = fs::read(path).map_err(|source| PasswdError::Read { file: path.to_owned(), source })?;
        Self::parse_bytes(&bytes, Some(path))
    }

    /// Checks the text of an accounts file (errors name the line only).
    pub fn parse(text: &str) -> Result<Self, PasswdError> {
        Self::parse_bytes(text.as_bytes(), None)
    }

    /// Checks the text of an accounts file read from `file` (named in errors).
    pub fn parse_named(text: &str, file: &Path) -> Result<Self, PasswdError> {
        Self::parse_bytes(text.as_bytes(), Some(file))
    }

    fn parse_bytes(bytes: &[u8], file: Option<&Path>) -> Result<Self, PasswdError> {
        let error = |line, problem| PasswdError::Line { file: file.map(Path::to_owned), line, problem };
        let mut users = BTreeMap::new();
        let mut first_seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let n = i + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if is_comment(raw) {
                continue;
            }
            let line = std::str::from_utf8(raw).map_err(|_| error(n, LineProblem::NotUtf8))?;
            let Some((user, rest)) = line.split_once(':') else {
                return Err(error(n, LineProblem::NoColon));
            };
            let user = normalize_user(user).map_err(|why| error(n, LineProblem::BadUser(user.to_owned(), why)))?;
            if let Some(&first_line) = first_seen.get(&user) {
                return Err(error(n, LineProblem::Duplicate { user, first_line }));
            }
            let password = rest.split(':').next().unwrap_or("");
            if let Err(e) = hash::check_hash(password) {
                return Err(error(n, LineProblem::Password { user, error: e }));
            }
            first_seen.insert(user.clone(), n);
            users.insert(user, password.to_owned());
        }
        Ok(Self { users })
    }

    /// Whether `password` is `user`'s. An unknown user costs the same as a known one with our
    /// hash parameters (a password is checked against a dummy hash), so the time taken does not
    /// tell who exists. Nothing is logged.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(&user.to_ascii_lowercase()) {
            Some(stored) => hash::verify_password(stored, password),
            None => {
                std::hint::black_box(hash::verify_password(DUMMY_HASH, password));
                false
            }
        }
    }

    /// Whether `user` exists (case-insensitive).
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(&user.to_ascii_lowercase())
    }

    /// The users, lower case, sorted.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The lines of `content`, each with its end (`\n`) if it has one.
fn lines(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    content.split_inclusive(|&b| b == b'\n')
}

/// A line without its end (`\n` or `\r\n`), and the end.
fn split_end(line: &[u8]) -> (&[u8], &[u8]) {
    let body_len = if line.ends_with(b"\r\n") {
        line.len() - 2
    } else if line.ends_with(b"\n") {
        line.len() - 1
    } else {
        line.len()
    };
    line.split_at(body_len)
}

/// Whether `line` (with or without its end) is the account of `user` (lower case).
fn is_user_line(line: &[u8], user: &str) -> bool {
    let (body, _) = split_end(line);
    if is_comment(body) {
        return false;
    }
    let name = body.split(|&b| b == b':').next().unwrap_or(body);
    name.eq_ignore_ascii_case(user.as_bytes())
}

/// Whether the accounts file `path` has a line for `user`, even if other lines are broken (a
/// missing file has none).
pub fn has_user(path: &Path, user: &str) -> Result<bool, PasswdError> {
    match fs::read(path) {
        Ok(content) => Ok(lines(&content).any(|l| is_user_line(l, &user.to_ascii_lowercase()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(PasswdError::Read { file: path.to_owned(), source }),
    }
}

/// Adds `user` with `stored` (a `{SCHEME}hash` we verify) at the end of the accounts file
/// `path`, created (mode 0640) if missing. Refuses a user already there.
pub fn add_user(path: &Path, user: &str, stored: &str) -> Result<(), PasswdError> {
    let user = normalize_user(user).map_err(|why| PasswdError::BadUser(user.to_owned(), why))?;
    hash::check_hash(stored).map_err(PasswdError::BadHash)?;
    rewrite(path, |file, content| {
        if lines(content).any(|l| is_user_line(l, &user)) {
            return Err(PasswdError::Exists { file: file.to_owned(), user: user.clone() });
        }
        let mut out = content.to_vec();
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(format!("{user}:{stored}\n").as_bytes());
        Ok(out)
    })
}

/// Replaces `user`'s password field with `stored` (a `{SCHEME}hash` we verify); the rest of the
/// line (uid, gid, home, extra fields) stays as it was.
pub fn set_password(path: &Path, user: &str, stored: &str) -> Result<(), PasswdError> {
    let user = user.to_ascii_lowercase();
    hash::check_hash(stored).map_err(PasswdError::BadHash)?;
    rewrite(path, |file, content| {
        let mut out = Vec::with_capacity(content.len() + stored.len());
        let mut found = false;
        for line in lines(content) {
            if !is_user_line(line, &user) {
                out.extend_from_slice(line);
                continue;
            }
            found = true;
            let (body, end) = split_end(line);
            match body.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let field_end =
                        body[colon + 1..].iter().position(|&b| b == b':').map_or(body.len(), |p| colon + 1 + p);
                    out.extend_from_slice(&body[..=colon]);
                    out.extend_from_slice(stored.as_bytes());
                    out.extend_from_slice(&body[field_end..]);
                }
                None => {
                    out.extend_from_slice(body);
                    out.push(b':');
                    out.extend_from_slice(stored.as_bytes());
                }
            }
            out.extend_from_slice(if end.is_empty() { b"\n" } else { end });
        }
        if found {
            Ok(out)
        } else {
            Err(PasswdError::NoSuchUser { file: file.to_owned(), user: user.clone() })
        }
    })
}

/// Removes `user`'s line from the accounts file.
pub fn remove_user(path: &Path, user: &str) -> Result<(), PasswdError> {
    let user = user.to_ascii_lowercase();
    rewrite(path, |file, content| {
        let before = lines(content).count();
        let out: Vec<u8> = lines(content).filter(|l| !is_user_line(l, &user)).flatten().copied().collect();
        if lines(&out).count() == before {
            return Err(PasswdError::NoSuchUser { file: file.to_owned(), user: user.clone() });
        }
        Ok(out)
    })
}

/// `path` with `suffix` added to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Rewrites the file at `path` with what `edit` makes of its content (empty if there is no
/// file yet): lock, temporary file, fsync, same mode and owner, rename, fsync of the directory.
fn rewrite(path: &Path, edit: impl FnOnce(&Path, &[u8]) -> Result<Vec<u8>, PasswdError>) -> Result<(), PasswdError> {
    // A symbolic link stays one: the file it points at is the one rewritten.
    let target = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_owned(),
        Err(source) => return Err(PasswdError::Read { file: path.to_owned(), source }),
    };
    let write_err = |file: &Path| {
        let file = file.to_owned();
        move |source| PasswdError::Write { file, source }
    };

    let lock_path = with_suffix(&target, ".lock");
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(write_err(&lock_path))?;
    // flock(2) through nix: `File::lock` would need Rust 1.89 (the crate's MSRV is 1.85). The
    // lock is released when `lock` is dropped (the descriptor closed), error or not.
    let lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, errno)| write_err(&lock_path)(io::Error::from(errno)))?;

    let (content, old) = match fs::read(&target) {
        Ok(c) => {
            let meta = fs::metadata(&target).map_err(|source| PasswdError::Read { file: path.to_owned(), source })?;
            (c, Some(meta))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), None),
        Err(source) => return Err(PasswdError::Read { file: path.to_owned(), source }),
    };
    let new = edit(path, &content)?;

    let tmp = with_suffix(&target, ".tmp");
    // A temporary file left by a crash is ours (we hold the lock): start afresh.
    let _ = fs::remove_file(&tmp);
    let result = write_new(&tmp, &new, old.as_ref()).and_then(|()| fs::rename(&tmp, &target));
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(PasswdError::Write { file: path.to_owned(), source });
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(write_err(dir))?;
    drop(lock);
    Ok(())
}

/// Writes `content` into the new file `tmp` with the mode and owner of `old` (or mode 0640),
/// and fsyncs it.
fn write_new(tmp: &Path, content: &[u8], old: Option<&fs::Metadata>) -> io::Result<()> {
    // Created readable by its owner only; the final mode is set once the owner is right.
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(tmp)?;
    let mode = match old {
        Some(old) => {
            let mine = f.metadata()?;
            if (mine.uid(), mine.gid()) != (old.uid(), old.gid()) {
                std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid()))?;
            }
            old.mode() & 0o7777
        }
        None => NEW_FILE_MODE,
    };
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(content)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(password: &str) -> String {
        hash::hash_password(password)
    }

    #[test]
    fn parses_users_comments_and_extra_fields() {
        let text = format!(
            "# accounts\n\n   \nAlice@Example.ORG:{}\r\nbob@example.org:{}:1000:1000::/home/bob::userdb_quota_rule=*:storage=1G\n",
            h("a"),
            "{SHA512-CRYPT}$6$Esuv5//fsvBkERsq$7ZCCGp6DP1u/dnVFPQmo.6nthih3jXu5BKTOMEsCPwcW0NO4ZXc1HBbxMYIgndSqRYJaoRqfISsww9ur34dJO/"
        );
        let f = PasswdFile::parse(&text).unwrap();
        assert_eq!(f.len(), 2);
        assert!(!f.is_empty());
        assert_eq!(f.users().collect::<Vec<_>>(), ["alice@example.org", "bob@example.org"]);
        assert!(f.contains("ALICE@example.org"));
        assert!(f.verify("alice@EXAMPLE.org", "a"));
        assert!(f.verify("bob@example.org", "p@ss wörd"));
        assert!(!f.verify("bob@example.org", "a"));
        assert!(!f.verify("carol@example.org", "a"));
        assert!(!format!("{f:?}").contains("ARGON2"), "Debug shows no hash");
        assert!(PasswdFile::parse("").unwrap().is_empty());
        assert!(PasswdFile::default().is_empty());
    }

    #[test]
    fn errors_name_file_and_line() {
        let file = Path::new("/etc/smtp-std/passwd");
        let good = format!("a@x.test:{}\n", h("a"));
        let cases: [(String, &str); 8] = [
            (format!("# c\n{good}b@x.test\n"), "/etc/smtp-std/passwd:3: no `:`"),
            (format!("{good}\nbob:{}\n", h("b")), "/etc/smtp-std/passwd:3: user `bob`: not of the form `local@domain`"),
            (format!("{good}@x.test:{}\n", h("b")), "/etc/smtp-std/passwd:2: user `@x.test`"),
            (format!("{good}A@X.test:{}\n", h("b")), "/etc/smtp-std/passwd:2: a@x.test: duplicate user (first on line 1)"),
            (
                format!("{good}b@x.test:{{PLAIN}}hunter2\n"),
                "/etc/smtp-std/passwd:2: b@x.test: password not hashed ({PLAIN} is clear text): set it with `smtp-std user passwd b@x.test`",
            ),
            (format!("b@x.test:hunter2:1:1\n{good}"), "/etc/smtp-std/passwd:1: b@x.test: password not hashed (no {SCHEME} prefix)"),
            (format!("b@x.test:\n{good}"), "/etc/smtp-std/passwd:1: b@x.test: password not hashed"),
            (format!("{good}b@x.test:{{MD5-CRYPT}}$1$x$y\n"), "/etc/smtp-std/passwd:2: b@x.test: unsupported password scheme {MD5-CRYPT}"),
        ];
        for (text, want) in cases {
            let e = PasswdFile::parse_named(&text, file).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e:?} should start with {want:?}");
            assert!(!e.contains("hunter2"), "a password in an error: {e}");
        }
        let e = PasswdFile::parse("x@y:{CLEAR}pw\n").unwrap_err();
        assert!(matches!(
            &e,
            PasswdError::Line { file: None, line: 1, problem: LineProblem::Password { error, .. } } if error.is_clear_text()
        ));
    }

    #[test]
    fn not_utf8_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        fs::write(&path, b"# ok\nal\xffce@x.test:{PLAIN}x\n").unwrap();
        let e = PasswdFile::load(&path).unwrap_err().to_string();
        assert_eq!(e, format!("{}:2: not UTF-8", path.display()));
    }

    #[test]
    fn user_names() {
        assert_eq!(normalize_user("Alice@Example.Org"), Ok("alice@example.org".into()));
        assert!(normalize_user("\"a b\"@x").is_err());
        for bad in ["", "alice", "alice@", "@x", "a:b@x", "a\tb@x", "#a@x"] {
            assert!(normalize_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_user_costs_a_hash() {
        // The dummy is one of our hashes, with our parameters: as slow as a real account's.
        assert_eq!(hash::check_hash(DUMMY_HASH), Ok(hash::Scheme::Argon2id));
        assert!(DUMMY_HASH.contains("$m=19456,t=2,p=1$"));
        let f = PasswdFile::parse(&format!("a@x.test:{}\n", h("pw"))).unwrap();
        let time = |user: &str| {
            let start = std::time::Instant::now();
            for _ in 0..3 {
                assert!(!f.verify(user, "wrong"));
            }
            start.elapsed()
        };
        let known = time("a@x.test");
        let unknown = time("nobody@x.test");
        // Loose bounds (a loaded machine is noisy): a skipped hash would be ~1000x faster.
        assert!(unknown * 4 > known, "unknown {unknown:?} vs known {known:?}");
    }

    #[test]
    fn edits_keep_other_lines_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let bob = format!("bob@x.test:{}:1000:1000::/home/bob::userdb_quota_rule=*:storage=1G\r\n", h("b"));
        let head = format!("# Our accounts.\n\n{bob}");
        fs::write(&path, &head).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();

        add_user(&path, "Alice@X.test", &h("a1")).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&head), "{text}");
        assert!(text[head.len()..].starts_with("alice@x.test:{ARGON2ID}$argon2id$"));
        assert!(PasswdFile::load(&path).unwrap().verify("alice@x.test", "a1"));
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o604, "mode kept");
        assert!(!with_suffix(&path, ".tmp").exists());

        assert!(matches!(add_user(&path, "ALICE@x.test", &h("a2")), Err(PasswdError::Exists { .. })));
        assert!(matches!(add_user(&path, "carol", &h("c")), Err(PasswdError::BadUser(..))));
        assert!(matches!(add_user(&path, "carol@x.test", "{PLAIN}c"), Err(PasswdError::BadHash(_))));
        assert!(matches!(set_password(&path, "carol@x.test", &h("c")), Err(PasswdError::NoSuchUser { .. })));
        assert!(matches!(remove_user(&path, "carol@x.test"), Err(PasswdError::NoSuchUser { .. })));
        assert_eq!(fs::read_to_string(&path).unwrap(), text, "refused edits change nothing");

        // A new password keeps bob's extra fields and line end.
        let new_b = h("b2");
        set_password(&path, "BOB@x.test", &new_b).unwrap();
        let after = fs::read_to_string(&path).unwrap();
        let want_bob = format!("bob@x.test:{new_b}:1000:1000::/home/bob::userdb_quota_rule=*:storage=1G\r\n");
        assert_eq!(after, text.replace(&bob, &want_bob));
        let f = PasswdFile::load(&path).unwrap();
        assert!(f.verify("bob@x.test", "b2") && !f.verify("bob@x.test", "b"));

        remove_user(&path, "alice@x.test").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("# Our accounts.\n\n{want_bob}"));
    }

    #[test]
    fn set_password_repairs_a_clear_text_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        fs::write(&path, "# x\nold@x.test:{PLAIN}hunter2:::\nlast@x.test:hunter3").unwrap();
        assert!(PasswdFile::load(&path).is_err());
        assert!(has_user(&path, "OLD@x.test").unwrap() && has_user(&path, "last@x.test").unwrap());
        assert!(!has_user(&path, "x").unwrap() && !has_user(&dir.path().join("none"), "old@x.test").unwrap());
        set_password(&path, "old@x.test", &h("n")).unwrap();
        set_password(&path, "last@x.test", &h("m")).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("hunter"), "{text}");
        assert!(text.contains(":::\nlast@x.test:{ARGON2ID}"), "{text}");
        let f = PasswdFile::load(&path).unwrap();
        assert!(f.verify("old@x.test", "n") && f.verify("last@x.test", "m"));
    }

    #[test]
    fn add_creates_the_file_0640_and_appends_after_a_last_line_without_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        add_user(&path, "a@x.test", &h("a")).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, NEW_FILE_MODE);
        // No file: nothing to change, and nothing created.
        let none = dir.path().join("none");
        assert!(matches!(remove_user(&none, "a@x.test"), Err(PasswdError::NoSuchUser { .. })));
        assert!(!none.exists());

        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.trim_end()).unwrap();
        add_user(&path, "b@x.test", &h("b")).unwrap();
        assert_eq!(PasswdFile::load(&path).unwrap().len(), 2);
    }

    #[test]
    fn a_symlink_stays_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let link = dir.path().join("link");
        fs::write(&real, "").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        add_user(&link, "a@x.test", &h("a")).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(PasswdFile::load(&real).unwrap().contains("a@x.test"));
    }

    #[test]
    fn concurrent_adds_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let stored = h("same");
        std::thread::scope(|s| {
            for i in 0..8 {
                let (path, stored) = (&path, &stored);
                s.spawn(move || add_user(path, &format!("u{i}@x.test"), stored).unwrap());
            }
        });
        assert_eq!(PasswdFile::load(&path).unwrap().len(), 8);
    }
}
