//! Password hashes in Dovecot's `{SCHEME}` form, the password field of a passwd-file line.
//!
//! We write `{ARGON2ID}` with the argon2 crate's defaults (the PHC string
//! `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`, which Dovecot 2.3 verifies) and verify the
//! schemes Dovecot writes for passwords that are worth storing: `{ARGON2ID}`, `{ARGON2I}`,
//! `{SHA512-CRYPT}`, `{SHA256-CRYPT}` and `{BLF-CRYPT}` (bcrypt). Scheme names are
//! case-insensitive. Anything else never verifies: clear text (no scheme, `{PLAIN}`, `{CLEAR}`,
//! ...) and the weak or unsalted schemes (`{MD5-CRYPT}`, `{SSHA}`, ...); [`check_hash`] says which
//! of those a stored value is, so a loader can refuse it with a precise message.
//!
//! ```
//! use smtp_std::mta::accounts::hash::{check_hash, hash_password, verify_password, HashError, Scheme};
//!
//! let stored = hash_password("correct horse");
//! assert!(stored.starts_with("{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$"));
//! assert_eq!(check_hash(&stored), Ok(Scheme::Argon2id));
//! assert!(verify_password(&stored, "correct horse"));
//! assert!(!verify_password(&stored, "Correct horse"));
//!
//! assert_eq!(check_hash("{PLAIN}secret"), Err(HashError::ClearText("PLAIN")));
//! assert!(!verify_password("{PLAIN}secret", "secret"));
//! ```

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use rand_core::{OsRng, RngCore};

/// A password scheme we verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `{ARGON2ID}`: Argon2id, PHC string (`$argon2id$...`). What we write.
    Argon2id,
    /// `{ARGON2I}`: Argon2i, PHC string (`$argon2i$...`).
    Argon2i,
    /// `{SHA512-CRYPT}`: SHA-crypt with SHA-512 (`$6$...`), Dovecot's long-time default.
    Sha512Crypt,
    /// `{SHA256-CRYPT}`: SHA-crypt with SHA-256 (`$5$...`).
    Sha256Crypt,
    /// `{BLF-CRYPT}`: bcrypt (`$2y$`, `$2b$` or `$2a$`).
    BlfCrypt,
}

impl Scheme {
    /// Every scheme we verify, the one we write first.
    pub const ALL: [Scheme; 5] =
        [Scheme::Argon2id, Scheme::Argon2i, Scheme::Sha512Crypt, Scheme::Sha256Crypt, Scheme::BlfCrypt];

    /// The scheme's name as Dovecot spells it, without braces (`ARGON2ID`).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Argon2i => "ARGON2I",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::BlfCrypt => "BLF-CRYPT",
        }
    }

    fn from_name(name: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a stored password field is not one we verify. No variant holds any part of the field
/// itself: a clear-text password must never reach a log line through an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashError {
    /// No `{SCHEME}` prefix: the field is the password in clear text.
    NoScheme,
    /// A clear-text scheme (`PLAIN`, `CLEAR`, `CLEARTEXT`, `PLAIN-TRUNC`).
    ClearText(&'static str),
    /// A scheme Dovecot knows and we do not verify (`MD5-CRYPT`, `SSHA`, `PBKDF2`, ...), by its
    /// name; `None` for a name Dovecot does not know either (not repeated: it could be a
    /// clear-text password that starts with `{`).
    Unsupported(Option<&'static str>),
    /// One of our schemes, but what follows is not a well-formed hash of it.
    Malformed(Scheme),
}

impl HashError {
    /// Whether the field holds the password itself (no scheme or a clear-text scheme).
    pub fn is_clear_text(&self) -> bool {
        matches!(self, HashError::NoScheme | HashError::ClearText(_))
    }
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::NoScheme => f.write_str("password not hashed (no {SCHEME} prefix)"),
            HashError::ClearText(s) => write!(f, "password not hashed ({{{s}}} is clear text)"),
            HashError::Unsupported(name) => {
                match name {
                    Some(s) => write!(f, "unsupported password scheme {{{s}}}")?,
                    None => f.write_str("unknown password scheme")?,
                }
                f.write_str(" (supported: ")?;
                for (i, s) in Scheme::ALL.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(s.name())?;
                }
                f.write_str(")")
            }
            HashError::Malformed(s) => write!(f, "not a valid {{{s}}} hash"),
        }
    }
}

impl std::error::Error for HashError {}

/// Dovecot 2.3's clear-text schemes (`doveadm pw -l`).
const CLEAR_TEXT: [&str; 4] = ["PLAIN", "CLEAR", "CLEARTEXT", "PLAIN-TRUNC"];
/// The other schemes Dovecot 2.3 knows (`doveadm pw -l`), which we do not verify.
const OTHER_DOVECOT: [&str; 22] = [
    "CRYPT",
    "DES-CRYPT",
    "MD5-CRYPT",
    "MD5",
    "SMD5",
    "PLAIN-MD4",
    "PLAIN-MD5",
    "LDAP-MD5",
    "HMAC-MD5",
    "CRAM-MD5",
    "DIGEST-MD5",
    "SHA",
    "SHA1",
    "SSHA",
    "SHA256",
    "SSHA256",
    "SHA512",
    "SSHA512",
    "PBKDF2",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "OTP",
];

/// Splits `{SCHEME}rest` into our scheme and `rest`, or says why not.
fn split_scheme(stored: &str) -> Result<(Scheme, &str), HashError> {
    let Some((name, rest)) = stored.strip_prefix('{').and_then(|s| s.split_once('}')) else {
        return Err(HashError::NoScheme);
    };
    if let Some(scheme) = Scheme::from_name(name) {
        return Ok((scheme, rest));
    }
    // Dovecot allows an encoding suffix (`{PLAIN.b64}`, `{SHA256.HEX}`); it does not change
    // what the scheme is.
    let base = name.split_once('.').map_or(name, |(b, _)| b);
    if let Some(s) = CLEAR_TEXT.into_iter().find(|s| s.eq_ignore_ascii_case(base)) {
        return Err(HashError::ClearText(s));
    }
    let known =
        OTHER_DOVECOT.into_iter().chain(Scheme::ALL.iter().map(|s| s.name())).find(|s| s.eq_ignore_ascii_case(base));
    Err(HashError::Unsupported(known))
}

/// The crypt(3) base-64 alphabet (also bcrypt's, in another order).
fn crypt_b64(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

/// `$5$` / `$6$`, an optional `rounds=N$`, a salt of at most 16 characters, the hash.
fn sha_crypt_shape(rest: &str, id: &str, hash_len: usize) -> bool {
    let Some(rest) = rest.strip_prefix('$').and_then(|r| r.strip_prefix(id)).and_then(|r| r.strip_prefix('$')) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('$').collect();
    if parts.len() == 3 {
        let rounds = parts.remove(0);
        let ok = rounds
            .strip_prefix("rounds=")
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1_000..=999_999_999).contains(&n));
        if !ok {
            return false;
        }
    }
    match parts.as_slice() {
        [salt, hash] => {
            salt.len() <= 16
                && !salt.bytes().any(|b| b.is_ascii_control() || b == b':')
                && hash.len() == hash_len
                && crypt_b64(hash)
        }
        _ => false,
    }
}

/// `$2y$NN$` (or `2b`, `2a`), cost 4 to 31, 22 characters of salt and 31 of hash.
fn bcrypt_shape(rest: &str) -> bool {
    let b = rest.as_bytes();
    b.len() == 60
        && rest.starts_with("$2")
        && matches!(b[2], b'a' | b'b' | b'y')
        && b[3] == b'$'
        && b[6] == b'$'
        && rest[4..6].parse::<u32>().is_ok_and(|c| (4..=31).contains(&c))
        && b[4].is_ascii_digit()
        && crypt_b64(&rest[7..])
}

fn argon2_shape(rest: &str, algorithm: &str) -> bool {
    PasswordHash::new(rest).is_ok_and(|h| {
        h.algorithm.as_str() == algorithm
            && h.salt.is_some()
            && h.hash.is_some()
            && argon2::Params::try_from(&h).is_ok()
    })
}

/// Which of our schemes `stored` (`{SCHEME}hash`) is, after checking that the hash is well formed;
/// or why it is not one we would ever verify.
pub fn check_hash(stored: &str) -> Result<Scheme, HashError> {
    let (scheme, rest) = split_scheme(stored)?;
    let ok = match scheme {
        Scheme::Argon2id => argon2_shape(rest, "argon2id"),
        Scheme::Argon2i => argon2_shape(rest, "argon2i"),
        Scheme::Sha512Crypt => sha_crypt_shape(rest, "6", 86),
        Scheme::Sha256Crypt => sha_crypt_shape(rest, "5", 43),
        Scheme::BlfCrypt => bcrypt_shape(rest),
    };
    if ok {
        Ok(scheme)
    } else {
        Err(HashError::Malformed(scheme))
    }
}

/// Hashes `password` for the passwd file: `{ARGON2ID}` with the argon2 crate's default
/// parameters (m=19456 KiB, t=2, p=1) and a random 16-byte salt from the operating system.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    // Argon2 fails only on a password longer than 4 GiB, which no caller can hand us.
    let phc = Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 hash");
    format!("{{{}}}{phc}", Scheme::Argon2id.name())
}

/// Whether `password` matches `stored` (`{SCHEME}hash`, one of [`Scheme::ALL`]). A stored value
/// in any other scheme, clear text included, never matches. The comparison of the computed hash
/// with the stored one is constant-time (the crates' own verifiers).
///
/// At most as many verifications as the machine has cores run at once (the others wait their
/// turn): an Argon2id verification takes 19 MiB of memory and tens of milliseconds of CPU, so
/// 40 clients trying AUTH at once would otherwise take 760 MiB (and that memory stays with
/// the process).
pub fn verify_password(stored: &str, password: &str) -> bool {
    let _slot = Slot::take();
    let Ok((scheme, rest)) = split_scheme(stored) else {
        return false;
    };
    let pw = password.as_bytes();
    match scheme {
        Scheme::Argon2id | Scheme::Argon2i => {
            let want = if scheme == Scheme::Argon2id { "argon2id" } else { "argon2i" };
            match PasswordHash::new(rest) {
                Ok(h) if h.algorithm.as_str() == want => argon2_matches(&h, pw),
                _ => false,
            }
        }
        Scheme::Sha512Crypt => sha_crypt_shape(rest, "6", 86) && sha_crypt::sha512_check(password, rest).is_ok(),
        Scheme::Sha256Crypt => sha_crypt_shape(rest, "5", 43) && sha_crypt::sha256_check(password, rest).is_ok(),
        Scheme::BlfCrypt => bcrypt_shape(rest) && bcrypt::verify(pw, rest).unwrap_or(false),
    }
}

/// Whether `pw` hashes to `hash` (Argon2i or Argon2id, its parameters, salt and version), in
/// working memory kept from one verification to the next: freeing 19 MiB after every AUTH
/// would make glibc's malloc keep blocks of that size in every thread's arena afterwards
/// (its threshold for mapping large blocks rises to the largest one freed), hundreds of MiB
/// that stay with the process. The comparison is constant-time.
fn argon2_matches(hash: &PasswordHash<'_>, pw: &[u8]) -> bool {
    let (Ok(algorithm), Ok(params), Some(expected), Some(salt)) =
        (argon2::Algorithm::try_from(hash.algorithm), argon2::Params::try_from(hash), &hash.hash, hash.salt)
    else {
        return false;
    };
    let version = match hash.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let mut out = vec![0u8; expected.len()];
    let count = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    let mut memory = MEMORY.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
    if memory.len() < count {
        memory = vec![argon2::Block::new(); count];
    }
    let done = argon.hash_password_into_with_memory(pw, salt, &mut out, &mut memory[..count]).is_ok();
    MEMORY.lock().unwrap_or_else(|e| e.into_inner()).push(memory);
    // `Output`'s equality is constant-time.
    done && argon2::password_hash::Output::new(&out).is_ok_and(|o| o == *expected)
}

/// Argon2 working memory of past verifications, for the next (at most one per [`Slot`]).
static MEMORY: std::sync::Mutex<Vec<Vec<argon2::Block>>> = std::sync::Mutex::new(Vec::new());

/// One of the few verifications allowed at once ([`verify_password`]); given back on drop.
struct Slot;

/// Verifications running now, and the condition a waiting one sleeps on.
static SLOTS: (std::sync::Mutex<usize>, std::sync::Condvar) = (std::sync::Mutex::new(0), std::sync::Condvar::new());

impl Slot {
    fn take() -> Slot {
        let most = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let mut running = SLOTS.0.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= most {
            running = SLOTS.1.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = SLOTS.0.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        SLOTS.1.notify_one();
    }
}

/// Letters and digits that cannot be mistaken for one another (no `0 O o 1 l I`): 56 symbols.
const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Length of a generated password: 20 symbols of 56, about 116 bits.
const GENERATED_LEN: usize = 20;

/// A new random password (20 characters from an alphabet without look-alikes, from the
/// operating system's random source), for `smtp-std user add` and `quickstart`.
pub fn generate_password() -> String {
    // Rejection sampling keeps every symbol equally likely: bytes from 224 (4 x 56) up are drawn
    // again.
    let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut out = String::with_capacity(GENERATED_LEN);
    let mut buf = [0u8; 32];
    while out.len() < GENERATED_LEN {
        OsRng.fill_bytes(&mut buf);
        for &b in buf.iter().filter(|&&b| b < limit) {
            if out.len() == GENERATED_LEN {
                break;
            }
            out.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by Dovecot 2.3 (`doveadm pw -s SCHEME -p 'p@ss wörd'`): hashes written by another
    // implementation, kept here so the unit tests need no doveadm.
    const PASSWORD: &str = "p@ss wörd";
    const DOVECOT: [(&str, Scheme); 5] = [
        ("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$1hNTjGkAlL/etRdfIqtOLg$eFXt1ugum6APWEazlFhmtddN/griBgDxms26hNbt2mU", Scheme::Argon2id),
        ("{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$8H55iVdCGwc0z0ouEygyoQ$AzuSSx6pKQ4TYBGm5qnupmiNIxyfejSF5bx3UpHfVH4", Scheme::Argon2i),
        ("{SHA512-CRYPT}$6$Esuv5//fsvBkERsq$7ZCCGp6DP1u/dnVFPQmo.6nthih3jXu5BKTOMEsCPwcW0NO4ZXc1HBbxMYIgndSqRYJaoRqfISsww9ur34dJO/", Scheme::Sha512Crypt),
        ("{SHA256-CRYPT}$5$8z0Ysb/XF/7.oadt$xBMbEyMU2tzrO2pcbUICDy7.hDKDH6I9gVlkT6EgQVC", Scheme::Sha256Crypt),
        ("{BLF-CRYPT}$2y$05$iBkAra3bMwCKOhih8k/Sz.JVqntMJaScaJkjXw9wFfHOcG1k.QfUG", Scheme::BlfCrypt),
    ];

    #[test]
    fn dovecot_hashes_verify() {
        for (stored, scheme) in DOVECOT {
            assert_eq!(check_hash(stored), Ok(scheme), "{stored}");
            assert!(verify_password(stored, PASSWORD), "{stored}");
            assert!(!verify_password(stored, "p@ss word"), "{stored}");
            assert!(!verify_password(stored, ""), "{stored}");
        }
    }

    #[test]
    fn scheme_names_are_case_insensitive() {
        for (stored, scheme) in DOVECOT {
            let (_, rest) = stored.split_once('}').unwrap();
            let lower = format!("{{{}}}{rest}", scheme.name().to_ascii_lowercase());
            assert_eq!(check_hash(&lower), Ok(scheme));
            assert!(verify_password(&lower, PASSWORD));
        }
    }

    #[test]
    fn our_hash_round_trips() {
        let stored = hash_password(PASSWORD);
        assert!(stored.starts_with("{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert_eq!(check_hash(&stored), Ok(Scheme::Argon2id));
        assert!(verify_password(&stored, PASSWORD));
        assert!(!verify_password(&stored, "p@ss wörd "));
        // A fresh salt each time.
        assert_ne!(stored, hash_password(PASSWORD));
    }

    #[test]
    fn clear_text_and_other_schemes_never_verify() {
        for (stored, want) in [
            ("secret", HashError::NoScheme),
            ("", HashError::NoScheme),
            ("{ARGON2ID", HashError::NoScheme),
            ("{PLAIN}secret", HashError::ClearText("PLAIN")),
            ("{plain}secret", HashError::ClearText("PLAIN")),
            ("{CLEAR}secret", HashError::ClearText("CLEAR")),
            ("{CLEARTEXT}secret", HashError::ClearText("CLEARTEXT")),
            ("{PLAIN.b64}c2VjcmV0", HashError::ClearText("PLAIN")),
            ("{MD5-CRYPT}$1$abc$xyz", HashError::Unsupported(Some("MD5-CRYPT"))),
            ("{SSHA}abcdef", HashError::Unsupported(Some("SSHA"))),
            ("{hunter2}", HashError::Unsupported(None)),
        ] {
            assert_eq!(check_hash(stored), Err(want), "{stored}");
            assert!(!verify_password(stored, "secret"));
            assert!(!verify_password(stored, stored));
        }
        assert!(check_hash("{PLAIN}x").unwrap_err().is_clear_text());
        assert!(check_hash("x").unwrap_err().is_clear_text());
        assert!(!check_hash("{SSHA}x").unwrap_err().is_clear_text());
        // The unknown scheme's name is not repeated: it could be part of a password.
        assert!(!HashError::Unsupported(None).to_string().contains("hunter2"));
        assert_eq!(HashError::ClearText("PLAIN").to_string(), "password not hashed ({PLAIN} is clear text)");
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for stored in [
            "{ARGON2ID}",
            "{ARGON2ID}secret",
            // The right scheme name in front of the other Argon2 variant.
            "{ARGON2ID}$argon2i$v=19$m=32768,t=4,p=1$8H55iVdCGwc0z0ouEygyoQ$AzuSSx6pKQ4TYBGm5qnupmiNIxyfejSF5bx3UpHfVH4",
            "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$1hNTjGkAlL/etRdfIqtOLg",
            "{SHA512-CRYPT}$6$salt$short",
            "{SHA512-CRYPT}$5$8z0Ysb/XF/7.oadt$xBMbEyMU2tzrO2pcbUICDy7.hDKDH6I9gVlkT6EgQVC",
            "{SHA512-CRYPT}$6$rounds=10$Esuv5//fsvBkERsq$7ZCCGp6DP1u/dnVFPQmo.6nthih3jXu5BKTOMEsCPwcW0NO4ZXc1HBbxMYIgndSqRYJaoRqfISsww9ur34dJO/",
            "{SHA256-CRYPT}",
            "{BLF-CRYPT}$2x$05$iBkAra3bMwCKOhih8k/Sz.JVqntMJaScaJkjXw9wFfHOcG1k.QfUG",
            "{BLF-CRYPT}$2y$99$iBkAra3bMwCKOhih8k/Sz.JVqntMJaScaJkjXw9wFfHOcG1k.QfUG",
            "{BLF-CRYPT}$2y$05$iBkAra3bMwCKOhih8k/Sz.JVqntMJaScaJkjXw9wFfHOcG1k.QfU",
        ] {
            assert!(matches!(check_hash(stored), Err(HashError::Malformed(_))), "{stored}");
            assert!(!verify_password(stored, PASSWORD), "{stored}");
        }
    }

    #[test]
    fn sha_crypt_with_rounds() {
        // Test vector of the SHA-crypt specification (Drepper), with `rounds=`.
        let stored = "{SHA512-CRYPT}$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.";
        assert_eq!(check_hash(stored), Ok(Scheme::Sha512Crypt));
        assert!(verify_password(stored, "Hello world!"));
        assert!(!verify_password(stored, "Hello world"));
    }

    #[test]
    fn generated_passwords() {
        let a = generate_password();
        assert_eq!(a.len(), GENERATED_LEN);
        assert!(a.bytes().all(|b| ALPHABET.contains(&b)), "{a}");
        assert_ne!(a, generate_password());
        // Every symbol turns up over enough draws (a biased or truncated alphabet would not).
        let all: String = (0..200).map(|_| generate_password()).collect();
        assert!(ALPHABET.iter().all(|&c| all.as_bytes().contains(&c)));
    }
}
