//! Accounts against a real peer: our hashes checked by Dovecot's `doveadm pw -t`, Dovecot's hashes
//! (`doveadm pw -s`) checked by us, and the `smtp-std user` command through the built binary.
//!
//! Without `doveadm` the Dovecot tests fail when `CI` is set and otherwise say so and pass.
// The mail server and the program (feature `mta`).
#![cfg(feature = "mta")]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use smtp_std::mta::accounts::hash::{check_hash, hash_password, verify_password, Scheme};
use smtp_std::mta::accounts::passwd::PasswdFile;

/// Passwords that exercise the edges: spaces, non-ASCII, shell and passwd-file punctuation.
const PASSWORDS: [&str; 4] = ["correct horse battery staple", "pässwörd-ünïcode-☃", "a:b$c{PLAIN}d\\e'f\"g", "x"];

fn doveadm() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("doveadm")).find(|f| f.is_file()));
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "doveadm (Dovecot) is needed in CI: apt-get install dovecot-core");
        eprintln!("note: doveadm not found: Dovecot interoperability not tested");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// `doveadm pw -t STORED -p PASSWORD`: whether Dovecot says "(verified)".
fn dovecot_verifies(doveadm: &Path, stored: &str, password: &str) -> bool {
    let out = run(Command::new(doveadm).args(["pw", "-t", stored, "-p", password]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verified = stdout.contains("(verified)");
    assert_eq!(verified, out.status.success(), "doveadm says {stdout:?} but exits {:?}", out.status);
    verified
}

#[test]
fn dovecot_verifies_our_hashes() {
    let Some(doveadm) = doveadm() else { return };
    for password in PASSWORDS {
        let stored = hash_password(password);
        assert!(stored.starts_with("{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(dovecot_verifies(&doveadm, &stored, password), "Dovecot refuses our hash of {password:?}");
        assert!(!dovecot_verifies(&doveadm, &stored, &format!("{password}!")), "Dovecot takes a wrong password");
    }
    // The check can fail: a hash of another password is refused.
    assert!(!dovecot_verifies(&doveadm, &hash_password("one"), "two"));
}

#[test]
fn we_verify_dovecot_hashes() {
    let Some(doveadm) = doveadm() else { return };
    let cases: [(&[&str], Scheme); 6] = [
        (&["-s", "ARGON2ID"], Scheme::Argon2id),
        (&["-s", "ARGON2I"], Scheme::Argon2i),
        (&["-s", "SHA512-CRYPT"], Scheme::Sha512Crypt),
        (&["-s", "SHA512-CRYPT", "-r", "20000"], Scheme::Sha512Crypt),
        (&["-s", "SHA256-CRYPT"], Scheme::Sha256Crypt),
        (&["-s", "BLF-CRYPT"], Scheme::BlfCrypt),
    ];
    for (args, scheme) in cases {
        for password in PASSWORDS {
            let out = run(Command::new(&doveadm).arg("pw").args(args).args(["-p", password]));
            assert!(out.status.success(), "doveadm pw {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            let stored = String::from_utf8(out.stdout).unwrap().trim_end().to_owned();
            assert_eq!(check_hash(&stored), Ok(scheme), "{stored}");
            assert!(verify_password(&stored, password), "{args:?} {password:?}: {stored}");
            assert!(!verify_password(&stored, &format!("{password}!")), "{stored}");
            assert!(!verify_password(&stored, ""), "{stored}");
            // The scheme name in lower case is the same scheme.
            let (name, rest) = stored[1..].split_once('}').unwrap();
            assert!(verify_password(&format!("{{{}}}{rest}", name.to_ascii_lowercase()), password));
        }
    }
    // Dovecot's clear-text and weak schemes never verify here, though Dovecot takes them.
    for s in ["PLAIN", "CLEAR", "MD5-CRYPT", "SSHA512", "PBKDF2"] {
        let out = run(Command::new(&doveadm).args(["pw", "-s", s, "-p", "secret"]));
        let stored = String::from_utf8(out.stdout).unwrap().trim_end().to_owned();
        assert!(dovecot_verifies(&doveadm, &stored, "secret"), "{stored}");
        assert!(check_hash(&stored).is_err(), "{stored}");
        assert!(!verify_password(&stored, "secret"), "{stored}");
    }
}

/// `smtp-std ARGS` with `stdin` on standard input (a pipe, never a terminal).
fn smtp_std(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smtp-std"))
        .args(args)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that does not read its input (or stops early) may be gone already.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

/// Checks the exit code, that stderr is at most one `smtp-std: ` line and holds no password.
#[track_caller]
fn expect(out: &Output, code: i32, secrets: &[&str]) -> String {
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(out.status.code(), Some(code), "stdout {stdout:?} stderr {stderr:?}");
    assert!(stderr.lines().count() <= 1 && stderr.lines().all(|l| l.starts_with("smtp-std: ")), "{stderr:?}");
    for s in secrets {
        assert!(!stderr.contains(s) && !stdout.contains(s), "a password on the output: {stdout:?} {stderr:?}");
    }
    stdout
}

/// The password field of `user`'s line.
fn stored_of(text: &str, user: &str) -> String {
    let line = text.lines().find(|l| l.starts_with(&format!("{user}:"))).unwrap();
    line.split(':').nth(1).unwrap().to_owned()
}

#[test]
fn user_command_edits_the_accounts_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let f = file.to_str().unwrap();
    let bob =
        format!("bob@example.org:{}:1000:1000::/home/bob::userdb_quota_rule=*:storage=1G\n", hash_password("bob pw"));
    let original = format!("# Accounts of example.org.\n\n{bob}# end\n");
    fs::write(&file, &original).unwrap();

    // add: the password from stdin, hashed; the other lines untouched.
    let out = smtp_std(&["user", "add", "Alice@Example.org", "--accounts", f], "first secret\n");
    assert_eq!(expect(&out, 0, &["first secret"]), "", "nothing on stdout for a password from stdin");
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.starts_with(&original), "{text}");
    assert!(!text.contains("first secret"), "clear text in the file: {text}");
    let alice = stored_of(&text, "alice@example.org");
    assert_eq!(check_hash(&alice), Ok(Scheme::Argon2id));
    let accounts = PasswdFile::load(&file).unwrap();
    assert!(accounts.verify("alice@example.org", "first secret"));
    assert!(accounts.verify("bob@example.org", "bob pw"));
    if let Some(doveadm) = doveadm() {
        assert!(dovecot_verifies(&doveadm, &alice, "first secret"));
    }

    // A second add of the same user (any case) is refused and changes nothing.
    let out = smtp_std(&["user", "add", "ALICE@example.org", "--accounts", f], "other secret\n");
    expect(&out, 1, &["other secret"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
    assert_eq!(fs::read_to_string(&file).unwrap(), text);

    // passwd: CRLF stripped, only alice's password field changes.
    let out = smtp_std(&["user", "passwd", "alice@example.org", "--accounts", f], "second secret\r\nignored\n");
    expect(&out, 0, &["second secret"]);
    let text2 = fs::read_to_string(&file).unwrap();
    assert_eq!(text2.replace(&stored_of(&text2, "alice@example.org"), &alice), text);
    let accounts = PasswdFile::load(&file).unwrap();
    assert!(accounts.verify("alice@example.org", "second secret"));
    assert!(!accounts.verify("alice@example.org", "first secret"));
    assert!(!accounts.verify("alice@example.org", "second secret\r"));

    // list: the users, one a line.
    let out = smtp_std(&["user", "list", "--accounts", f], "");
    assert_eq!(expect(&out, 0, &[]), "alice@example.org\nbob@example.org\n");

    // Unknown users: EX_NOUSER (67), nothing changed.
    expect(&smtp_std(&["user", "del", "carol@example.org", "--accounts", f], ""), 67, &[]);
    expect(&smtp_std(&["user", "passwd", "carol@example.org", "--accounts", f], "x\n"), 67, &[]);
    assert_eq!(fs::read_to_string(&file).unwrap(), text2);

    // Refused passwords and addresses: EX_USAGE (64).
    expect(&smtp_std(&["user", "add", "carol@example.org", "--accounts", f], "\n"), 64, &[]);
    expect(&smtp_std(&["user", "add", "carol@example.org", "--accounts", f], ""), 64, &[]);
    expect(&smtp_std(&["user", "add", "carol", "--accounts", f], "pw\n"), 64, &[]);
    assert_eq!(fs::read_to_string(&file).unwrap(), text2);

    // del: back to the original file, byte for byte.
    expect(&smtp_std(&["user", "del", "alice@EXAMPLE.org", "--accounts", f], ""), 0, &[]);
    assert_eq!(fs::read_to_string(&file).unwrap(), original);
    let out = smtp_std(&["user", "list", "--accounts", f], "");
    assert_eq!(expect(&out, 0, &[]), "bob@example.org\n");

    // No password on standard input: the error says how to have one made; --generate prints
    // one, once, on standard output (standard input is not read).
    let out = smtp_std(&["user", "add", "carol@example.org", "--accounts", f], "");
    expect(&out, 64, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --generate"), "{out:?}");
    let generated = |args: &[&str]| {
        let out = smtp_std(args, "not this one\n");
        let stdout = expect(&out, 0, &["not this one"]);
        let password = stdout.strip_prefix("password for carol@example.org: ").expect("the password line");
        password.trim_end().to_owned()
    };
    let first = generated(&["user", "add", "carol@example.org", "--accounts", f, "--generate"]);
    assert!(first.len() >= 16, "{first}");
    assert!(PasswdFile::load(&file).unwrap().verify("carol@example.org", &first));
    let second = generated(&["user", "passwd", "carol@example.org", "--accounts", f, "--generate"]);
    let accounts = PasswdFile::load(&file).unwrap();
    assert!(accounts.verify("carol@example.org", &second) && !accounts.verify("carol@example.org", &first));
    // An existing user is refused before a password is made.
    let out = smtp_std(&["user", "add", "carol@example.org", "--accounts", f, "--generate"], "");
    assert_eq!(expect(&out, 1, &[]), "", "no password printed for nothing");
}

#[test]
fn user_command_with_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("smtp-std.toml");
    fs::write(&config, "data_dir = \"data\"\naccounts = \"passwd\"\n[listen]\nsmtp = [\"127.0.0.1:2525\"]\n[[domain]]\nname = \"Example.org\"\n").unwrap();
    let c = config.to_str().unwrap();
    let accounts = dir.path().join("passwd");

    // A domain the config does not serve is refused; the file is not even created.
    let out = smtp_std(&["user", "add", "carol@example.net", "--config", c], "pw one\n");
    expect(&out, 64, &["pw one"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("example.net"));
    assert!(!accounts.exists());

    // The config's accounts file (relative to the config), created with mode 0640.
    expect(&smtp_std(&["user", "add", "carol@EXAMPLE.org", "--config", c], "pw one\n"), 0, &["pw one"]);
    let file = PasswdFile::load(&accounts).unwrap();
    assert!(file.verify("carol@example.org", "pw one"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&accounts).unwrap().permissions().mode() & 0o777, 0o640);
    assert_eq!(expect(&smtp_std(&["user", "list", "--config", c], ""), 0, &[]), "carol@example.org\n");

    // A config file that cannot be used: EX_CONFIG (78), named in the message.
    let missing = dir.path().join("missing.toml");
    let out = smtp_std(&["user", "list", "--config", missing.to_str().unwrap()], "");
    expect(&out, 78, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));

    // Neither --config nor --accounts: a usage error from the command line parser.
    assert_eq!(smtp_std(&["user", "list"], "").status.code(), Some(2));
}

#[test]
fn a_clear_text_line_is_refused_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let f = file.to_str().unwrap();
    fs::write(&file, "# old style\ndave@example.org:{PLAIN}hunter2::::::\n").unwrap();

    let out = smtp_std(&["user", "list", "--accounts", f], "");
    expect(&out, 1, &["hunter2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{f}:2: dave@example.org: password not hashed")), "{stderr}");
    assert!(stderr.contains("smtp-std user passwd"), "{stderr}");

    expect(&smtp_std(&["user", "passwd", "dave@example.org", "--accounts", f], "new pw\n"), 0, &["new pw", "hunter2"]);
    let text = fs::read_to_string(&file).unwrap();
    assert!(!text.contains("hunter2") && text.ends_with("::::::\n"), "{text}");
    assert!(PasswdFile::load(&file).unwrap().verify("dave@example.org", "new pw"));
}
