//! Refused at start, not discovered later (issue 19 point 4): `serve --config` stops before
//! listening, naming the file, the line and the key, when a submission listener has no
//! `[tls]`, when an alias member or a catch-all in one of our domains reaches no account, when
//! flags that the config file sets are given beside it, and when another server runs with the
//! same `data_dir`.
// The mail server and the program (feature `mta`).
#![cfg(feature = "mta")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const PASSWORDS: &str = "alice@example.org:wonderland\nbob@example.org:builder\ncarol@example.net:c4r0l\n";

const CONFIG: &str = r#"hostname = "mail.example.org"
data_dir = "data"
accounts = "passwd"
mail_auth = false
[listen]
smtp = ["127.0.0.1:0"]

[[domain]]
name = "example.org"
[domain.aliases]
postmaster = "alice"
sales = ["alice", "bob", "friend@elsewhere.example"]

[[domain]]
name = "example.net"
catch_all = "carol"
[domain.aliases]
postmaster = "carol@example.net"
"#;

/// Writes the accounts and the config (`CONFIG` with `from` replaced by `to`) into `dir`.
fn setup(dir: &Path, from: &str, to: &str) -> PathBuf {
    std::fs::write(dir.join("passwd"), passwd_text(PASSWORDS)).unwrap();
    assert!(CONFIG.contains(from));
    let path = dir.join("smtp-std.toml");
    std::fs::write(&path, CONFIG.replacen(from, to, 1)).unwrap();
    path
}

/// `smtp-std serve` with `args`: it must stop at once; its stderr.
fn refused(dir: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp-std"));
    cmd.current_dir(dir).arg("serve").args(args);
    let out = run(&mut cmd, b"", Duration::from_secs(30));
    assert_eq!(out.status, Some(1), "{}", out.stderr);
    assert!(!out.stderr.contains("listening"), "{}", out.stderr);
    out.stderr
}

fn line_of(config: &Path, start: &str) -> usize {
    let text = std::fs::read_to_string(config).unwrap();
    text.lines().position(|l| l.starts_with(start)).expect("the line") + 1
}

#[test]
fn submission_without_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for key in ["submission", "submissions"] {
        let config = setup(
            dir.path(),
            "smtp = [\"127.0.0.1:0\"]\n",
            &format!("smtp = [\"127.0.0.1:0\"]\n{key} = [\"127.0.0.1:0\"]\n"),
        );
        let err = refused(dir.path(), &["--config", config.to_str().unwrap()]);
        let want = format!("{}:{}: listen.{key}: needs [tls] (cert and key)", config.display(), line_of(&config, key));
        assert!(err.contains(&want), "{want} in {err}");
    }
    // With [tls] it starts, and offers STARTTLS and AUTH on submission.
    let c = cert(dir.path());
    let config = setup(
        dir.path(),
        "smtp = [\"127.0.0.1:0\"]\n",
        &format!(
            "smtp = [\"127.0.0.1:0\"]\nsubmission = [\"127.0.0.1:0\"]\n[tls]\ncert = {:?}\nkey = {:?}\n",
            c.cert_pem, c.key_pem
        ),
    );
    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    wait_until("submission listening", Duration::from_secs(10), || p.log_contains("listening for submission"));
}

#[test]
fn alias_members_and_catch_alls_that_reach_no_account_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "sales = [\"alice\", \"bob\",",
            "sales = [\"alice\", \"nobody\",",
            "sales",
            "domain[0].aliases.sales",
            "nobody@example.org",
        ),
        ("catch_all = \"carol\"", "catch_all = \"Karol\"", "catch_all", "domain[1].catch_all", "karol@example.net"),
        // A member in another of our domains must reach an account there too.
        (
            "postmaster = \"alice\"",
            "postmaster = \"alice@example.net\"",
            "postmaster",
            "domain[0].aliases.postmaster",
            "alice@example.net",
        ),
        // An alias pointing at itself reaches no one.
        (
            "[domain.aliases]\npostmaster = \"alice\"",
            "[domain.aliases]\npostmaster = \"alice\"\nloop = \"loop\"",
            "loop",
            "domain[0].aliases.loop",
            "loop@example.org",
        ),
    ];
    for (from, to, start, key, member) in cases {
        let config = setup(dir.path(), from, to);
        let err = refused(dir.path(), &["--config", config.to_str().unwrap()]);
        let want = format!("{}:{}: {key}: {member} reaches no account", config.display(), line_of(&config, start));
        assert!(err.contains(&want), "{want} in {err}");
        assert!(!dir.path().join("data").exists(), "nothing created before the checks: {err}");
    }
    // Members elsewhere are forwards, aliases of aliases are fine: it starts.
    let config = setup(dir.path(), "sales = [\"alice\", \"bob\",", "team = \"sales\"\nsales = [\"alice\", \"bob\",");
    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let mut c = Client::connect(p.addr);
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<x@client.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<team@example.org>").starts_with("250"));
}

#[test]
fn flags_the_config_file_sets_are_refused_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "", "");
    let c = config.to_str().unwrap();
    let err = refused(dir.path(), &["--config", c, "--listen", "127.0.0.1:2525", "--hostname", "mx.example.org"]);
    assert!(err.contains("--listen is set by the config file; remove it or the config's [listen] smtp"), "{err}");
    assert!(err.contains("--hostname is set by the config file; remove it or the config's hostname"), "{err}");
    let err =
        refused(dir.path(), &["--config", c, "--maildir", "x", "--users", "y", "--discard", "--max-clients", "5"]);
    for want in [
        "--maildir is set by the config file; remove it or the config's data_dir",
        "--users is set by the config file; remove it or the config's accounts",
        "--max-clients is set by the config file; remove it or the config's [limits] max_clients",
        "--discard does not apply with --config; remove it",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
    assert!(!dir.path().join("data").exists());
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "", "");
    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let pid_file = dir.path().join("data/smtp-std.pid");
    wait_until("the pid file", Duration::from_secs(10), || pid_file.exists());
    let err = refused(dir.path(), &["--config", config.to_str().unwrap()]);
    let want = format!("{}: smtp-std already runs with this data_dir (pid {})", pid_file.display(), p.pid());
    assert!(err.contains(&want), "{want} in {err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&pid_file).unwrap().permissions().mode() & 0o777, 0o600);
}
