//! `smtp-std serve --config`: the mail server of a domain. Recipient resolution at RCPT
//! (account, alias, subaddress, catch-all, postmaster, unknown `550 5.1.1`, relay `550
//! 5.7.1`), a Maildir per account with `Return-Path:` and `Delivered-To:`, alias fan-out as
//! hard links, a bad config refused with file, line and key; and with a real Dovecot: mail
//! delivered by `serve` (running as an ordinary user after binding) read back over IMAP with
//! Python `imaplib`, and the same through `[delivery] lmtp` into Dovecot's LMTP, with Sieve
//! filters and autoreplies (Pigeonhole) whose replies leave through port 25 and the queue.
// The mail server and the program (feature `mta`).
#![cfg(feature = "mta")]

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;
#[path = "common/dovecot.rs"]
mod dovecot;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const PASSWORDS: &str = "alice@example.org:wonderland\nbob@example.org:builder\ncarol@example.net:c4r0l\n";

/// Writes the accounts file and `smtp-std.toml` into `dir`; `extra` goes at the top level,
/// `[[domain]]` tables follow.
fn setup(dir: &Path, extra: &str) -> PathBuf {
    std::fs::write(dir.join("passwd"), passwd_text(PASSWORDS)).unwrap();
    let config = format!(
        r#"hostname = "mail.example.org"
data_dir = "data"
accounts = "passwd"
mail_auth = false
{extra}
[listen]
smtp = ["127.0.0.1:0"]

[[domain]]
name = "example.org"
[domain.aliases]
postmaster = "alice"
sales = ["alice", "bob"]

[[domain]]
name = "Example.NET"
catch_all = "carol"
[domain.aliases]
postmaster = "carol"
"#
    );
    let path = dir.join("smtp-std.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn mailbox(dir: &Path, account: &str) -> PathBuf {
    let (local, domain) = account.split_once('@').unwrap();
    dir.join("data/mailboxes").join(domain).join(local)
}

/// One transaction by hand; returns the reply to each RCPT and to the end of data (if any
/// recipient was accepted).
fn transaction(c: &mut Client, from: &str, rcpts: &[&str], body: &str) -> (Vec<String>, Option<String>) {
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    let replies: Vec<String> = rcpts.iter().map(|r| c.cmd(&format!("RCPT TO:<{r}>"))).collect();
    if !replies.iter().any(|r| r.starts_with("250")) {
        assert!(c.cmd("RSET").starts_with("250"));
        return (replies, None);
    }
    assert!(c.cmd("DATA").starts_with("354"));
    let end = c.cmd(&format!("{body}\r\n."));
    (replies, Some(end))
}

fn connect(p: &Program) -> Client {
    let mut c = Client::connect(p.addr);
    assert!(c.reply().starts_with("220 mail.example.org"));
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    c
}

#[test]
fn recipients_resolve_to_mailboxes() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "");
    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let mut c = connect(&p);

    // Unknown user and other domains: refused at RCPT, nothing stored.
    let (r, end) =
        transaction(&mut c, "x@client.example", &["nobody@example.org", "friend@gmail.example"], "Subject: no");
    assert!(r[0].starts_with("550 5.1.1 <nobody@example.org>"), "{r:?}");
    assert!(r[1].starts_with("550 5.7.1"), "{r:?}");
    assert!(end.is_none());
    assert!(!dir.path().join("data/mailboxes/example.org/nobody").exists());

    // Subaddress, case-insensitive domain and local part.
    let (r, end) = transaction(&mut c, "x@client.example", &["Alice+News@EXAMPLE.ORG"], "Subject: one");
    assert!(r[0].starts_with("250"), "{r:?}");
    assert!(end.unwrap().starts_with("250 2.0.0"));
    let alice = mailbox(dir.path(), "alice@example.org");
    let files = files(&alice, "new");
    assert_eq!(files.len(), 1);
    let msg = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        msg.starts_with(
            "Return-Path: <x@client.example>\r\nDelivered-To: Alice+News@EXAMPLE.ORG\r\nReceived: from client.example"
        ),
        "{msg}"
    );
    assert!(msg.ends_with("Subject: one\r\n"), "{msg}");

    // The null sender gets an empty Return-Path.
    let (_, end) = transaction(&mut c, "", &["bob@example.org"], "Subject: bounce");
    assert!(end.unwrap().starts_with("250"));
    let bob = mailbox(dir.path(), "bob@example.org");
    let msg = std::fs::read_to_string(&files_in(&bob)[0]).unwrap();
    assert!(msg.starts_with("Return-Path: <>\r\nDelivered-To: bob@example.org\r\n"), "{msg}");

    // Alias fan-out: one file, hard-linked into both mailboxes.
    let (_, end) = transaction(&mut c, "x@client.example", &["sales@example.org"], "Subject: fan-out");
    assert!(end.unwrap().starts_with("250"));
    let a = newest(&alice);
    let b = newest(&bob);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(std::fs::read_to_string(&a).unwrap().contains("Delivered-To: sales@example.org\r\n"));
    let (ma, mb) = (std::fs::metadata(&a).unwrap(), std::fs::metadata(&b).unwrap());
    assert_eq!((ma.ino(), ma.nlink()), (mb.ino(), 2), "alias copies are one file, hard-linked");

    // Two recipients reaching the same mailbox: one copy, with both Delivered-To lines; a
    // third recipient elsewhere gets its own file.
    let before = files_in(&alice).len();
    let (r, end) = transaction(
        &mut c,
        "x@client.example",
        &["alice@example.org", "alice+x@example.org", "bob@example.org"],
        "Subject: dup",
    );
    assert!(r.iter().all(|r| r.starts_with("250")), "{r:?}");
    assert!(end.unwrap().starts_with("250"));
    assert_eq!(files_in(&alice).len(), before + 1);
    let msg = std::fs::read_to_string(newest(&alice)).unwrap();
    assert!(msg.contains("Delivered-To: alice@example.org\r\nDelivered-To: alice+x@example.org\r\n"), "{msg}");
    let msg = std::fs::read_to_string(newest(&bob)).unwrap();
    assert!(msg.starts_with("Return-Path: <x@client.example>\r\nDelivered-To: bob@example.org\r\nReceived:"), "{msg}");
    assert!(msg.ends_with("Subject: dup\r\n"), "{msg}");

    // Catch-all of the second domain, and postmaster (bare and per domain).
    let (_, end) = transaction(&mut c, "x@client.example", &["whoever@example.net"], "Subject: catch");
    assert!(end.unwrap().starts_with("250"));
    assert!(std::fs::read_to_string(newest(&mailbox(dir.path(), "carol@example.net")))
        .unwrap()
        .contains("Subject: catch"));
    let (r, end) = transaction(&mut c, "x@client.example", &["postmaster", "PostMaster@example.net"], "Subject: pm");
    assert!(r.iter().all(|r| r.starts_with("250")), "{r:?}");
    assert!(end.unwrap().starts_with("250"));
    assert!(std::fs::read_to_string(newest(&alice)).unwrap().contains("Subject: pm"));
    assert!(std::fs::read_to_string(newest(&mailbox(dir.path(), "carol@example.net")))
        .unwrap()
        .contains("Subject: pm"));
    assert!(c.cmd("QUIT").starts_with("221"));

    // `smtp-std user add` while serve runs: the new account receives mail at once.
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-std"))
        .args(["user", "add", "dave@example.org", "--config", config.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"d4ve-secret\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(1100));
    let mut c = connect(&p);
    let (r, end) = transaction(&mut c, "x@client.example", &["dave@example.org"], "Subject: welcome");
    assert!(r[0].starts_with("250"), "{r:?}");
    assert!(end.unwrap().starts_with("250"));
}

fn files_in(maildir: &Path) -> Vec<PathBuf> {
    files(maildir, "new")
}

/// The most recently modified message in `maildir/new`.
fn newest(maildir: &Path) -> PathBuf {
    let mut v = files_in(maildir);
    v.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    v.pop().expect("a message")
}

#[test]
fn bad_config_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace("smtp = [\"127.0.0.1:0\"]", "smtp = [\"127.0.0.1\"]");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-std")).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:7: listen.smtp[0]: ", config.display())), "{err}");
    assert!(!err.contains("listening"), "{err}");

    // An alias to an unknown key, a postmaster that reaches no one.
    let config = setup(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace("postmaster = \"carol\"\n", "");
    std::fs::write(&config, text).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace("catch_all = \"carol\"\n", "");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-std")).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("postmaster@example.net reaches no account"), "{err}");

    let config = setup(dir.path(), "colour = \"blue\"");
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-std")).args(["serve", "--config"]).arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":5: ") && err.contains("unknown field `colour`"), "{err}");
}

/// Makes the path to `dir` traversable by others (tempdirs follow the umask; make sure).
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Logs in to Dovecot's IMAP as `user` with Python imaplib and returns every message of
/// `folder`, joined.
fn imap_fetch_all(port: u16, user: &str, password: &str, folder: &str) -> String {
    let script = format!(
        r#"
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", {port})
m.login({user:?}, {password:?})
typ, data = m.select({folder:?})
assert typ == "OK", data
typ, data = m.search(None, "ALL")
for num in data[0].split():
    typ, msg = m.fetch(num, "(RFC822)")
    sys.stdout.write(msg[0][1].decode())
    sys.stdout.write("\n=====\n")
m.logout()
"#
    );
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "imaplib: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn swaks(addr: std::net::SocketAddr, to: &str, subject: &str) {
    let out = Command::new("swaks")
        .args(["--server", &addr.to_string(), "--from", "sender@client.example", "--to", to])
        .args(["--h-Subject", subject, "--body", "hello from swaks"])
        .output()
        .unwrap();
    assert!(out.status.success(), "swaks: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn dovecot_reads_what_serve_delivered_as_an_ordinary_user() {
    if !dovecot::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    open_up(dir.path());
    let config = setup(dir.path(), "user = \"nobody\"");
    // Dovecot's auth process reads the accounts file as its own user.
    Command::new("chgrp").args(["dovecot"]).arg(dir.path().join("passwd")).status().unwrap();
    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    wait_until("the privilege drop", Duration::from_secs(10), || p.log_contains("running as nobody"));
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
    let ids = |key: &str| status.lines().find(|l| l.starts_with(key)).unwrap().to_owned();
    assert!(!ids("Uid:").contains("\t0\t") && !ids("Gid:").contains("\t0\t"), "{status}");
    assert_eq!(ids("Groups:").trim(), "Groups:", "supplementary groups cleared");

    swaks(p.addr, "alice+news@example.org", "via swaks");
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import smtplib; s = smtplib.SMTP('127.0.0.1', {}); s.sendmail('x@client.example', ['sales@example.org'], b'Subject: team\\r\\n\\r\\nfor both\\r\\n'); s.quit()",
            p.addr.port()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let alice = mailbox(dir.path(), "alice@example.org");
    let nobody_uid = std::fs::metadata(&alice).unwrap().uid();
    assert_ne!(nobody_uid, 0, "the mailbox belongs to the ordinary user");
    assert!(files_in(&alice).iter().all(|f| std::fs::metadata(f).unwrap().uid() == nobody_uid));

    let d = dovecot::Dovecot::start(
        &dir.path().join("dovecot"),
        &dir.path().join("passwd"),
        &dir.path().join("data/mailboxes"),
        "nobody",
        "nogroup",
    );
    let inbox = imap_fetch_all(d.imap, "alice@example.org", "wonderland", "INBOX");
    assert!(inbox.contains("Subject: via swaks") && inbox.contains("hello from swaks"), "{inbox}\n{}", d.log());
    assert!(inbox.contains("Return-Path: <sender@client.example>"), "{inbox}");
    assert!(inbox.contains("Subject: team"), "{inbox}");
    let bob = imap_fetch_all(d.imap, "bob@example.org", "builder", "INBOX");
    assert!(bob.contains("Subject: team") && !bob.contains("via swaks"), "{bob}");
}

#[test]
fn delivery_by_lmtp_into_dovecot() {
    if !dovecot::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    open_up(dir.path());
    std::fs::write(dir.path().join("passwd"), passwd_text(PASSWORDS)).unwrap();
    Command::new("chgrp").args(["dovecot"]).arg(dir.path().join("passwd")).status().unwrap();
    let d = dovecot::Dovecot::start(
        &dir.path().join("dovecot"),
        &dir.path().join("passwd"),
        &dir.path().join("data/mailboxes"),
        "nobody",
        "nogroup",
    );
    let config = setup(dir.path(), &format!("user = \"nobody\"\n[delivery]\nlmtp = \"127.0.0.1:{}\"", d.lmtp));
    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    assert!(p.log_contains("delivering by LMTP"), "{:?}", p.log.lock().unwrap());

    let mut c = connect(&p);
    let (r, end) = transaction(&mut c, "x@client.example", &["nobody@example.org"], "Subject: no");
    assert!(r[0].starts_with("550 5.1.1"), "{r:?}");
    assert!(end.is_none());
    let (r, end) = transaction(
        &mut c,
        "x@client.example",
        &["alice+news@example.org", "sales@example.org"],
        "Subject: by lmtp\r\n\r\n..dotted line",
    );
    assert!(r.iter().all(|r| r.starts_with("250")), "{r:?}");
    let end = end.unwrap();
    assert!(end.starts_with("250 2.0.0"), "{end}\n{}", d.log());
    assert!(c.cmd("QUIT").starts_with("221"));

    let alice = imap_fetch_all(d.imap, "alice@example.org", "wonderland", "INBOX");
    assert_eq!(alice.matches("Subject: by lmtp").count(), 1, "one copy for alice: {alice}");
    assert!(alice.contains("Return-Path: <x@client.example>") && alice.contains("\r\n.dotted line"), "{alice}");
    assert!(alice.contains("Received: from client.example"), "{alice}");
    let bob = imap_fetch_all(d.imap, "bob@example.org", "builder", "INBOX");
    assert!(bob.contains("Subject: by lmtp"), "{bob}");
    // Nothing left in the spool.
    assert!(files(&dir.path().join("data/spool"), "tmp").is_empty());
    assert!(p.log_contains("delivered by LMTP"));
}

/// Whether the tests run as root (then quickstart needs `--user`).
fn root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `smtp-std quickstart alice@example.org ...` into `setup`, its listeners on loopback ports,
/// the user `nobody` when we are root; `extra` arguments after. The printed text.
fn quickstart(setup: &Path, extra: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp-std"));
    cmd.args(["quickstart", "alice@example.org", "--hostname", "mail.example.org", "--ip", "203.0.113.7"]).args([
        "--listen",
        "127.0.0.1:0",
        "--submission",
        "127.0.0.1:0",
        "--submissions",
        "127.0.0.1:0",
    ]);
    if root() {
        cmd.args(["--user", "nobody"]);
    }
    let out = cmd.args(extra).arg("--dir").arg(setup).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The password quickstart printed for alice.
fn printed_password(text: &str) -> String {
    text.lines().find_map(|l| l.split("keep it): ").nth(1)).expect("password line").trim().to_owned()
}

/// The address a listener of `p` bound (its log line holds `what`).
fn bound(p: &Program, what: &str) -> std::net::SocketAddr {
    let find = || {
        let log = p.log.lock().unwrap();
        let line = log.iter().find(|l| l.contains(what))?;
        let at = line.find("bound=")?;
        line[at + 6..].split_whitespace().next()?.parse().ok()
    };
    wait_until(what, Duration::from_secs(10), || find().is_some());
    find().unwrap()
}

#[test]
fn quickstart_then_serve_at_once() {
    let dir = tempfile::tempdir().unwrap();
    open_up(dir.path());
    let setup = dir.path().join("etc");
    let text = quickstart(&setup, &[]);
    // The password is printed once and verifies against the accounts file written.
    let password = printed_password(&text);
    let accounts = smtp_std::mta::accounts::passwd::PasswdFile::load(&setup.join("passwd")).unwrap();
    assert!(accounts.verify("alice@example.org", &password));
    assert!(!std::fs::read_to_string(setup.join("passwd")).unwrap().contains(&password));
    // The records to publish and the command that starts the server.
    for want in [
        "example.org. 3600 IN MX 10 mail.example.org.",
        "\"v=spf1 ip4:203.0.113.7 mx -all\"",
        "s1._domainkey.example.org.",
        "_dmarc.example.org. 3600 IN TXT \"v=DMARC1; p=quarantine; rua=mailto:dmarc@example.org\"",
        "_smtp._tls.example.org. 3600 IN TXT \"v=TLSRPTv1; rua=mailto:dmarc@example.org\"",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(!text.contains("AAAA") && !text.contains("ip6:"), "{text}");
    let start = text.lines().find(|l| l.trim_start().starts_with("smtp-std serve --config ")).expect("start command");
    let config = start.trim().trim_start_matches("smtp-std serve --config ").to_owned();
    // The whole server: TLS, submission, DKIM signing on.
    let c = smtp_std::mta::config::Config::load(config.as_ref()).unwrap();
    assert!(c.tls.is_some() && !c.listen.submission.is_empty() && !c.listen.submissions.is_empty());
    assert_eq!(c.domains[0].dkim, Some(("s1".to_owned(), setup.join("dkim-s1.key"))));
    assert_eq!(c.reports.address().as_deref(), Some("dmarc@example.org"));
    let mode = |f: &str| std::fs::metadata(setup.join(f)).unwrap().mode() & 0o777;
    assert_eq!((mode("dkim-s1.key"), mode("key.pem"), mode("cert.pem")), (0o600, 0o600, 0o644));
    assert!(std::fs::read_to_string(setup.join("cert.pem")).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(std::fs::read_to_string(setup.join("dovecot.conf")).unwrap().contains("mail_location = maildir:"));
    if root() {
        // The server's user re-reads the accounts and the keys after its privilege drop.
        let owner = |f: &str| std::fs::metadata(setup.join(f)).unwrap().uid();
        assert!(owner("passwd") != 0 && owner("key.pem") != 0 && owner("dkim-s1.key") != 0);
        assert_eq!(mode("passwd"), 0o640);
    }
    // Running a second time changes nothing, and so does any one of the files in the way.
    let before: Vec<_> = std::fs::read_dir(&setup).unwrap().map(|e| e.unwrap().path()).collect();
    let again = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_smtp-std"))
            .args(["quickstart", "alice@example.org", "--hostname", "mail.example.org", "--ip", "203.0.113.7"])
            .args(["--user", "nobody", "--dir"])
            .arg(dir)
            .output()
            .unwrap()
    };
    let out = again(&setup);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(" exists: "));
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("cert.pem"), "mine").unwrap();
    let out = again(&other);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cert.pem exists: "), "{out:?}");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1, "nothing written");
    assert_eq!(std::fs::read_to_string(other.join("cert.pem")).unwrap(), "mine");
    if root() {
        // As root a user to run as is needed: Dovecot never reads mail as root.
        let out = Command::new(env!("CARGO_BIN_EXE_smtp-std"))
            .args(["quickstart", "alice@example.org", "--hostname", "mail.example.org", "--ip", "203.0.113.7"])
            .arg("--dir")
            .arg(dir.path().join("as-root"))
            .output()
            .unwrap();
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("give --user NAME"));
        assert!(!dir.path().join("as-root").exists());
    }
    assert_eq!(std::fs::read_dir(&setup).unwrap().count(), before.len());

    let p = Program::start(dir.path(), &["--config", &config]);
    let mut c = connect(&p);
    let (r, end) = transaction(
        &mut c,
        "x@client.example",
        &["alice@example.org", "postmaster@example.org", "bob@example.org"],
        "Subject: hi",
    );
    assert!(r[0].starts_with("250") && r[1].starts_with("250") && r[2].starts_with("550 5.1.1"), "{r:?}");
    assert!(end.unwrap().starts_with("250"));
    let msg = std::fs::read_to_string(newest(&setup.join("data/mailboxes/example.org/alice"))).unwrap();
    assert!(msg.contains("Delivered-To: postmaster@example.org\r\n") && msg.ends_with("Subject: hi\r\n"), "{msg}");
    // A refused recipient's reason is in the log, one line.
    assert!(p.log_contains("recipient refused"), "{:?}", p.log.lock().unwrap());
    let refusals: Vec<String> =
        p.log.lock().unwrap().iter().filter(|l| l.contains("recipient refused")).cloned().collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(refusals[0].contains("recipient refused: unknown user") && refusals[0].contains("bob@example.org"));
    assert!(p.log.lock().unwrap().iter().all(|l| !l.contains("Some(")), "{:?}", p.log.lock().unwrap());
}

#[test]
fn quickstart_ipv6_and_lmtp_records_and_configs() {
    let dir = tempfile::tempdir().unwrap();
    let setup = dir.path().join("etc");
    let text = quickstart(&setup, &["--ipv6", "2001:db8::7", "--lmtp", "127.0.0.1:24"]);
    assert!(text.contains("mail.example.org. 3600 IN AAAA 2001:db8::7\n"), "{text}");
    assert!(text.contains("\"v=spf1 ip4:203.0.113.7 ip6:2001:db8::7 mx -all\""), "{text}");
    assert!(text.contains(" IN PTR mail.example.org.\n") && text.contains(".ip6.arpa. "), "{text}");
    let c = smtp_std::mta::config::Config::load(&setup.join("smtp-std.toml")).unwrap();
    assert_eq!(c.delivery.lmtp.as_deref(), Some("127.0.0.1:24"));
    let conf = std::fs::read_to_string(setup.join("dovecot.conf")).unwrap();
    assert!(conf.contains("\nprotocols = imap lmtp\n"), "{conf}");
    assert!(conf.contains("inet_listener lmtp {\n    address = 127.0.0.1\n    port = 24\n"), "{conf}");
    if have("doveconf") {
        let out = Command::new("doveconf").arg("-c").arg(setup.join("dovecot.conf")).arg("-n").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Defaults: every listener on 0.0.0.0 and the IPv6 address too.
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-std"))
        .args(["quickstart", "alice@example.org", "--hostname", "mail.example.org", "--ip", "203.0.113.7"])
        .args(["--ipv6", "2001:db8::7", "--user", "nobody", "--dir"])
        .arg(dir.path().join("defaults"))
        .output()
        .unwrap();
    if out.status.success() {
        let c = smtp_std::mta::config::Config::load(&dir.path().join("defaults/smtp-std.toml")).unwrap();
        let s = |v: &[std::net::SocketAddr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(s(&c.listen.smtp), ["0.0.0.0:25", "[2001:db8::7]:25"]);
        assert_eq!(s(&c.listen.submission), ["0.0.0.0:587", "[2001:db8::7]:587"]);
        assert_eq!(s(&c.listen.submissions), ["0.0.0.0:465", "[2001:db8::7]:465"]);
    }
    // An LMTP port anyone could reach is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-std"))
        .args(["quickstart", "alice@example.org", "--hostname", "mail.example.org", "--ip", "203.0.113.7"])
        .args(["--lmtp", "203.0.113.7:24", "--user", "nobody", "--dir"])
        .arg(dir.path().join("lmtp"))
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("loopback"), "{out:?}");
}

/// Logs in to Dovecot's IMAP as `user` after STARTTLS (trusting only `ca`) and returns every
/// message of `folder`, joined. (From loopback Dovecot would take a login without TLS too.)
fn imap_fetch_all_tls(port: u16, ca: &Path, user: &str, password: &str, folder: &str) -> String {
    let script = format!(
        r#"
import imaplib, ssl, sys
ctx = ssl.create_default_context(cafile={ca:?})
ctx.check_hostname = False
m = imaplib.IMAP4("127.0.0.1", {port})
m.starttls(ssl_context=ctx)
m.login({user:?}, {password:?})
typ, data = m.select({folder:?})
assert typ == "OK", data
typ, data = m.search(None, "ALL")
for num in data[0].split():
    typ, msg = m.fetch(num, "(RFC822)")
    sys.stdout.write(msg[0][1].decode())
    sys.stdout.write("\n=====\n")
m.logout()
"#,
        ca = ca.display().to_string(),
    );
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "imaplib: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn quickstart_makes_a_whole_server_that_dovecot_serves() {
    if !dovecot::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    open_up(dir.path());
    let setup = dir.path().join("etc");
    let text = quickstart(&setup, &[]);
    let password = printed_password(&text);
    let (config, ca) = (setup.join("smtp-std.toml"), setup.join("cert.pem"));
    let out = Command::new("doveconf").arg("-c").arg(setup.join("dovecot.conf")).arg("-n").output().unwrap();
    assert!(out.status.success(), "doveconf: {}", String::from_utf8_lossy(&out.stderr));
    // The one change a test must make to smtp-std's config: mail for other domains goes to a
    // relay that is not there (it stays in the queue, to be looked at).
    let relay = dnsmasq::free_port();
    let mut f = std::fs::OpenOptions::new().append(true).open(&config).unwrap();
    std::io::Write::write_all(&mut f, format!("\n[outbound]\nsmarthost = \"127.0.0.1:{relay}\"\n").as_bytes()).unwrap();

    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    wait_until("the privilege drop", Duration::from_secs(10), || p.log_contains("running as nobody"));
    let submission = bound(&p, "listening for submission (STARTTLS");
    let submissions = bound(&p, "listening for submission over implicit TLS");

    // Port 25: mail from outside for alice; an unknown user and a relay attempt refused, each
    // with its reason in the log.
    let mut c = connect(&p);
    let (r, end) = transaction(
        &mut c,
        "x@client.example",
        &["alice@example.org", "nobody@example.org", "friend@elsewhere.test"],
        "From: x@client.example\r\nSubject: from outside\r\n\r\nhello alice",
    );
    assert!(r[0].starts_with("250") && r[1].starts_with("550 5.1.1") && r[2].starts_with("550 5.7.1"), "{r:?}");
    assert!(end.unwrap().starts_with("250"));
    assert!(p.log_contains("recipient refused: unknown user"), "{:?}", p.log.lock().unwrap());
    assert!(p.log_contains("recipient refused: relay denied"), "{:?}", p.log.lock().unwrap());

    // Submission (587, STARTTLS + AUTH with the printed password; 465 too): to alice's alias
    // abuse@ (stored at once) and to a friend elsewhere (queued, DKIM-signed).
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(cafile={ca:?})
ctx.check_hostname = False
s = smtplib.SMTP("127.0.0.1", {sub})
s.starttls(context=ctx)
s.login("alice@example.org", {password:?})
s.sendmail("alice@example.org", ["abuse@example.org", "friend@elsewhere.test"],
           b"From: Alice <alice@example.org>\r\nTo: friend@elsewhere.test\r\nSubject: signed\r\n\r\nfrom alice\r\n")
s.quit()
s = smtplib.SMTP_SSL("127.0.0.1", {subs}, context=ctx)
s.login("alice@example.org", {password:?})
s.quit()
"#,
        ca = ca.display().to_string(),
        sub = submission.port(),
        subs = submissions.port(),
    );
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "smtplib: {}", String::from_utf8_lossy(&out.stderr));
    let queue = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_smtp-std"))
            .arg("queue")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "queue {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    wait_until("the attempt at the relay", Duration::from_secs(20), || {
        queue(&["list"]).contains("last: could not connect to 127.0.0.1:")
    });
    let list = queue(&["list"]);
    let id = list
        .lines()
        .find(|l| l.contains("  from alice@example.org  "))
        .expect("the entry")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(list.contains("friend@elsewhere.test pending  last: could not connect to 127.0.0.1:"), "{list}");
    let show = queue(&["show", &id]);
    let signature = show.find("DKIM-Signature:").map(|at| &show[at..]).unwrap_or_else(|| panic!("not signed:\n{show}"));
    assert!(signature.contains("d=example.org") && signature.contains("s=s1"), "{show}");

    // Dovecot, with the dovecot.conf quickstart wrote: alice reads both over IMAP.
    let d = dovecot::Dovecot::start_including(&dir.path().join("dovecot"), &setup.join("dovecot.conf"), || true);
    let inbox = imap_fetch_all_tls(d.imap, &ca, "alice@example.org", &password, "INBOX");
    assert!(inbox.contains("Subject: from outside") && inbox.contains("hello alice"), "{inbox}\n{}", d.log());
    assert!(inbox.contains("Subject: signed") && inbox.contains("Delivered-To: abuse@example.org"), "{inbox}");
    // (A copy for our own accounts is stored as submitted: only mail that leaves is signed.)
    assert!(!inbox.contains("DKIM-Signature:"), "{inbox}");
    assert_eq!(imap_fetch_all_tls(d.imap, &ca, "alice@example.org", &password, "Junk"), "");
    assert!(p.log.lock().unwrap().iter().all(|l| !l.contains("Some(")), "{:?}", p.log.lock().unwrap());
    // Everything under data_dir belongs to the server's user, what Dovecot wrote there too.
    let nobody = std::fs::metadata(setup.join("data")).unwrap().uid();
    assert_ne!(nobody, 0);
    let mut todo = vec![setup.join("data")];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.uid(), nobody, "{} belongs to uid {}", path.display(), meta.uid());
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    // (Dovecot's own files keep their modes, dovecot-uidvalidity.* 0444, inside the 0700
    // directories.)
}

#[test]
fn quickstart_with_lmtp_delivers_through_dovecot() {
    if !dovecot::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    open_up(dir.path());
    let setup = dir.path().join("etc");
    let socket = dir.path().join("lmtp");
    let text = quickstart(&setup, &["--lmtp", socket.to_str().unwrap()]);
    let password = printed_password(&text);
    let out = Command::new("doveconf").arg("-c").arg(setup.join("dovecot.conf")).arg("-n").output().unwrap();
    assert!(out.status.success(), "doveconf: {}", String::from_utf8_lossy(&out.stderr));
    let d =
        dovecot::Dovecot::start_including(&dir.path().join("dovecot"), &setup.join("dovecot.conf"), || socket.exists());
    let p = Program::start(dir.path(), &["--config", setup.join("smtp-std.toml").to_str().unwrap()]);
    assert!(p.log_contains("delivering by LMTP"), "{:?}", p.log.lock().unwrap());
    let mut c = connect(&p);
    let (r, end) = transaction(&mut c, "x@client.example", &["postmaster@example.org"], "Subject: by lmtp\r\n\r\nhi");
    assert!(r[0].starts_with("250"), "{r:?}");
    let end = end.unwrap();
    assert!(end.starts_with("250 2.0.0"), "{end}\n{}", d.log());
    let inbox = imap_fetch_all_tls(d.imap, &setup.join("cert.pem"), "alice@example.org", &password, "INBOX");
    assert!(inbox.contains("Subject: by lmtp") && inbox.contains("Return-Path: <x@client.example>"), "{inbox}");
    assert!(p.log_contains("delivered by LMTP"));
}

/// The Sieve script of alice, as written for quickstart's layout: a folder for work, an
/// autoreply for the rest.
const SIEVE: &str = r#"require ["fileinto", "vacation"];
if header :contains "subject" "work" {
  fileinto "Work";
  stop;
}
vacation :days 7 :subject "Away" "I am away until Monday.";
"#;

#[test]
fn quickstart_with_lmtp_runs_sieve_filters_and_autoreplies() {
    if !dovecot::available() || !dovecot::sieve_available() || !aiosmtpd::have_aiosmtpd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    open_up(dir.path());
    let setup = dir.path().join("etc");
    let socket = dir.path().join("lmtp");
    // Port 25 on a fixed loopback port: Dovecot's submission_host names it.
    let port25 = aiosmtpd::free_port();
    let listen = format!("127.0.0.1:{port25}");
    let text = quickstart(&setup, &["--lmtp", socket.to_str().unwrap(), "--listen", &listen]);
    let password = printed_password(&text);
    let conf = std::fs::read_to_string(setup.join("dovecot.conf")).unwrap();
    assert!(conf.contains(&format!("\nsubmission_host = {listen}\n")), "{conf}");
    let config = setup.join("smtp-std.toml");
    assert!(std::fs::read_to_string(&config).unwrap().contains("\nrelay_networks = [\"127.0.0.1/32\", \"::1/128\"]\n"));
    let out = Command::new("doveconf").arg("-c").arg(setup.join("dovecot.conf")).arg("-n").output().unwrap();
    assert!(out.status.success(), "doveconf: {}", String::from_utf8_lossy(&out.stderr));
    // The world outside: every other domain is delivered to aiosmtpd (the test's one change).
    let received = dir.path().join("received");
    std::fs::create_dir(&received).unwrap();
    let (_py, relay) = aiosmtpd::aiosmtpd(&received, None);
    let mut f = std::fs::OpenOptions::new().append(true).open(&config).unwrap();
    let outbound = format!("\n[outbound]\nsmarthost = \"127.0.0.1:{relay}\"\nsmarthost_tls = \"none\"\n");
    std::io::Write::write_all(&mut f, outbound.as_bytes()).unwrap();

    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    assert!(p.log_contains("delivering by LMTP"), "{:?}", p.log.lock().unwrap());
    if root() {
        wait_until("the privilege drop", Duration::from_secs(10), || p.log_contains("running as nobody"));
    }
    // alice's active script, where dovecot.conf says, owned by the server's user.
    let data = setup.join("data");
    let owner = std::fs::metadata(&data).unwrap();
    let home = data.join("home/example.org/alice");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join(".dovecot.sieve"), SIEVE).unwrap();
    for path in [data.join("home"), data.join("home/example.org"), home.clone(), home.join(".dovecot.sieve")] {
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    let d =
        dovecot::Dovecot::start_including(&dir.path().join("dovecot"), &setup.join("dovecot.conf"), || socket.exists());

    let mut c = Client::connect(format!("127.0.0.1:{port25}").parse().unwrap());
    assert!(c.reply().starts_with("220 mail.example.org"));
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    let mut send = |from: &str, subject: &str, extra: &str| {
        let body = format!("From: <{from}>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n{extra}\r\nhello alice");
        let (r, end) = transaction(&mut c, from, &["alice@example.org"], &body);
        assert!(r[0].starts_with("250"), "{r:?}");
        let end = end.unwrap();
        assert!(end.starts_with("250 2.0.0"), "{subject}: {end}\n{}", d.log());
    };
    send("boss@client.example", "work: the report", "");
    // Two from the same sender: one reply. None to <>, lists, bulk mail or autoreplies.
    send("friend@client.example", "first", "");
    send("friend@client.example", "second", "");
    send("", "a bounce", "");
    send("news@client.example", "a list", "Precedence: list\r\n");
    send("digest@client.example", "a list id", "List-Id: <digest.client.example>\r\n");
    send("robot@client.example", "an autoreply", "Auto-Submitted: auto-replied\r\n");
    send("other@client.example", "third", "");

    // The filter: work into Work (created), the rest in INBOX.
    let ca = setup.join("cert.pem");
    let work = imap_fetch_all_tls(d.imap, &ca, "alice@example.org", &password, "Work");
    assert!(work.contains("Subject: work: the report") && !work.contains("Subject: first"), "{work}\n{}", d.log());
    let inbox = imap_fetch_all_tls(d.imap, &ca, "alice@example.org", &password, "INBOX");
    assert!(inbox.contains("Subject: first") && inbox.contains("Subject: third"), "{inbox}");
    assert!(!inbox.contains("Subject: work"), "{inbox}");

    // The replies: two (friend once, other), sent during the LMTP deliveries above through
    // port 25 on loopback (relay_networks) into the queue, then to the world.
    let env = |n: usize| std::fs::read_to_string(received.join(format!("msg{n}.env"))).unwrap_or_default();
    wait_until("the two autoreplies", Duration::from_secs(30), || !env(2).is_empty());
    wait_until("their log lines", Duration::from_secs(10), || {
        p.log.lock().unwrap().iter().filter(|l| l.contains("recipient for the queue")).count() >= 2
    });
    let queued: Vec<String> =
        p.log.lock().unwrap().iter().filter(|l| l.contains("recipient for the queue")).cloned().collect();
    assert_eq!(queued.len(), 2, "{queued:?}\n{}", d.log());
    assert!(queued.iter().all(|l| l.contains("relay_networks")), "{queued:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!received.join("msg3.env").exists(), "{}", env(3));
    let mut to: Vec<String> =
        (1..=2).map(|n| env(n).lines().find_map(|l| l.strip_prefix("to=")).unwrap().into()).collect();
    to.sort();
    assert_eq!(to, ["friend@client.example", "other@client.example"], "{}", d.log());
    for n in 1..=2 {
        let (env, eml) = (env(n), std::fs::read_to_string(received.join(format!("msg{n}.eml"))).unwrap());
        // RFC 3834: from <>, marked auto-replied; signed by the domain's key as it left.
        assert!(env.starts_with("from=\n") || env.starts_with("from=<>\n"), "{env}");
        assert!(eml.contains("Auto-Submitted: auto-replied"), "{eml}");
        assert!(eml.contains("Subject: Away") && eml.contains("I am away until Monday."), "{eml}");
        let signature = eml.find("DKIM-Signature:").map(|at| &eml[at..]).unwrap_or_else(|| panic!("unsigned:\n{eml}"));
        assert!(signature.contains("d=example.org"), "{eml}");
    }
}

#[test]
fn auth_checks_the_accounts_under_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let c = cert(dir.path());
    let tls = format!("[tls]\ncert = {:?}\nkey = {:?}", c.cert_pem, c.key_pem);
    // The [tls] table must come after the top-level keys: put it after [listen].
    let config = setup(dir.path(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[[domain]]\nname = \"example.org\"", &format!("{tls}\n\n[[domain]]\nname = \"example.org\""));
    std::fs::write(&config, text).unwrap();
    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(cafile={ca:?})
ctx.check_hostname = False
s = smtplib.SMTP("127.0.0.1", {port})
s.ehlo("client.example")
assert not s.has_extn("auth"), "AUTH offered before TLS"
s.starttls(context=ctx)
s.ehlo("client.example")
try:
    s.login("alice@example.org", "not-her-password")
    raise SystemExit("a wrong password logged in")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535, e
s.login("alice@example.org", "wonderland")
s.sendmail("alice@example.org", ["bob@example.org"], b"From: alice@example.org\r\nSubject: from alice\r\n\r\nhi bob\r\n")
s.quit()
"#,
        ca = c.cert_pem,
        port = p.addr.port()
    );
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let msg = std::fs::read_to_string(newest(&mailbox(dir.path(), "bob@example.org"))).unwrap();
    assert!(msg.contains("with ESMTPSA") && msg.ends_with("hi bob\r\n"), "{msg}");
}

#[test]
fn dmarc_quarantine_files_into_each_mailboxs_junk() {
    if !dnsmasq::Dnsmasq::available() {
        return;
    }
    let dns = dnsmasq::Dnsmasq::start(&[
        dnsmasq::txt("quar.test", "v=spf1 ip4:127.0.0.2 -all"),
        dnsmasq::txt("_dmarc.quar.test", "v=DMARC1; p=quarantine"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &format!("trusted_networks = []\n[dns]\nserver = \"{}\"", dns.arg()));
    let text = std::fs::read_to_string(&config).unwrap().replace("mail_auth = false\n", "");
    std::fs::write(&config, text).unwrap();
    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    // From 127.0.0.3: SPF fails for quar.test, no DKIM: DMARC fails with p=quarantine.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.3:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    sock.connect(&p.addr.into()).unwrap();
    let mut c = Client::from_stream(sock.into());
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    let body = "From: <a@quar.test>\r\nSubject: spoofed\r\n\r\nhello";
    let (r, end) = transaction(&mut c, "a@quar.test", &["sales@example.org"], body);
    assert!(r[0].starts_with("250"), "{r:?}");
    assert!(end.unwrap().starts_with("250"));
    for account in ["alice@example.org", "bob@example.org"] {
        let junk = mailbox(dir.path(), account).join(".Junk");
        let msg = std::fs::read_to_string(newest(&junk)).unwrap();
        assert!(msg.starts_with("Return-Path: <a@quar.test>\r\nDelivered-To: sales@example.org\r\nAuthentication-Results: mail.example.org;"), "{msg}");
        assert!(msg.contains("dmarc=fail") && msg.ends_with("hello\r\n"), "{msg}");
        assert!(junk.join("maildirfolder").exists());
        assert!(files_in(&mailbox(dir.path(), account)).is_empty(), "nothing in the inbox");
    }
}

#[test]
fn sigterm_tells_every_session_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "");
    let mut p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let mut idle = connect(&p);
    // A client in the middle of a message gets 421 too: not acknowledged, it keeps the
    // message and sends it again later; nothing half-written is stored.
    let mut busy = connect(&p);
    assert!(busy.cmd("MAIL FROM:<x@client.example>").starts_with("250"));
    assert!(busy.cmd("RCPT TO:<bob@example.org>").starts_with("250"));
    assert!(busy.cmd("DATA").starts_with("354"));
    busy.send(b"Subject: in flight\r\n\r\nbody\r\n");
    assert!(Command::new("kill").args(["-TERM", &p.pid().to_string()]).status().unwrap().success());
    let r = idle.reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    // The 421 comes unasked, and the server closes: a "." sent now could meet a reset.
    let r = busy.reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    wait_until("the program exits", Duration::from_secs(10), || p.child.0.try_wait().ok().flatten().is_some());
    assert!(p.child.0.wait().unwrap().success());
    let bob = mailbox(dir.path(), "bob@example.org");
    assert!(files(&bob, "new").is_empty() && files(&bob, "tmp").is_empty());
}

/// Every file and directory under `root` whose mode lets group or others in, with its mode.
fn not_private(root: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut loose = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            loose.push(format!("{} {mode:o}", p.display()));
        }
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    loose
}

#[test]
fn everything_under_data_dir_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        "[dns]\nserver = \"127.0.0.1:9\"\ntimeout = \"1s\"\n[queue]\nretry = [\"1h\"]\nscan_interval = \"200ms\"\n",
    );
    // An alias that forwards: its mail goes through the queue (and a state file after the
    // first attempt fails: no DNS here).
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "sales = [\"alice\", \"bob\"]",
            "sales = [\"alice\", \"bob\"]\nfwd = \"friend@elsewhere.example\"",
        ),
    )
    .unwrap();
    // The program inherits a umask that takes nothing away.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    nix::sys::stat::umask(old);
    let mut c = connect(&p);
    for rcpt in ["alice@example.org", "sales@example.org", "fwd@example.org"] {
        let (r, end) = transaction(&mut c, "x@client.example", &[rcpt], "Subject: private");
        assert!(r[0].starts_with("250"), "{rcpt}: {r:?}");
        assert!(end.unwrap().starts_with("250"), "{rcpt}");
    }
    let data = dir.path().join("data");
    let state = data.join("queue/state");
    wait_until("the forwarded message deferred", Duration::from_secs(20), || {
        std::fs::read_dir(&state).is_ok_and(|d| d.count() > 0)
    });
    assert_eq!(files(&mailbox(dir.path(), "alice@example.org"), "new").len(), 2);
    assert!(queue_entries(&data.join("queue/entries")) > 0);
    let loose = not_private(&data);
    assert!(loose.is_empty(), "readable by others: {loose:?}");
}

/// The reply code of AUTH PLAIN as `user` over STARTTLS (Python smtplib).
fn auth_code(p: &Program, ca: &Path, user: &str, password: &str) -> i32 {
    let script = format!(
        r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile={ca:?})
ctx.check_hostname = False
s = smtplib.SMTP("127.0.0.1", {port})
s.starttls(context=ctx)
s.ehlo("client.example")
try:
    code = s.login({user:?}, {password:?})[0]
except smtplib.SMTPAuthenticationError as e:
    code = e.smtp_code
print(code)
"#,
        port = p.addr.port()
    );
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The documented setup for a server that drops to `nobody`: the accounts file owned by that
/// user (group dovecot for Dovecot's auth), 0640.
fn accounts_for_nobody(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    open_up(dir);
    let passwd = dir.join("passwd");
    let group = if Command::new("getent").args(["group", "dovecot"]).output().is_ok_and(|o| o.status.success()) {
        "nobody:dovecot"
    } else {
        "nobody"
    };
    assert!(Command::new("chown").arg(group).arg(&passwd).status().unwrap().success());
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o640)).unwrap();
}

#[test]
fn account_changes_apply_after_the_privilege_drop_and_a_cut_file_is_not_taken() {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs the tests as root");
        eprintln!("skipped: needs root (user = \"nobody\")");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = cert(dir.path());
    let tls = format!("[tls]\ncert = {:?}\nkey = {:?}", c.cert_pem, c.key_pem);
    let config = setup(dir.path(), "user = \"nobody\"");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[[domain]]\nname = \"example.org\"", &format!("{tls}\n\n[[domain]]\nname = \"example.org\""));
    std::fs::write(&config, text).unwrap();
    accounts_for_nobody(dir.path());
    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    wait_until("the privilege drop", Duration::from_secs(10), || p.log_contains("running as nobody"));
    assert_eq!(auth_code(&p, &c.cert_pem, "bob@example.org", "builder"), 235);

    let user = |args: &[&str], stdin: &[u8]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp-std"));
        cmd.arg("user").args(args).args(["--config", config.to_str().unwrap()]);
        let out = run(&mut cmd, stdin, Duration::from_secs(30));
        assert_eq!(out.status, Some(0), "{}", out.stderr);
    };
    // A deleted account stops logging in at once (the server still reads the file).
    user(&["del", "bob@example.org"], b"");
    let start = std::time::Instant::now();
    wait_until("bob's AUTH refused", Duration::from_secs(2), || {
        auth_code(&p, &c.cert_pem, "bob@example.org", "builder") == 535
    });
    eprintln!("user del took effect in {:?}", start.elapsed());
    // A new account receives mail at once.
    user(&["add", "dave@example.org"], b"d4ve-pw\n");
    wait_until("RCPT to dave accepted", Duration::from_secs(2), || {
        let mut c = connect(&p);
        let ok = c.cmd("MAIL FROM:<x@client.example>").starts_with("250")
            && c.cmd("RCPT TO:<dave@example.org>").starts_with("250");
        c.cmd("QUIT");
        ok
    });
    // An emptied file would refuse mail to everyone, postmaster included: not taken.
    std::fs::OpenOptions::new().write(true).truncate(true).open(dir.path().join("passwd")).unwrap();
    // (The file is looked at when an address or a login needs it, at most once a second.)
    std::thread::sleep(Duration::from_millis(1100));
    let mut client = connect(&p);
    assert!(client.cmd("MAIL FROM:<x@client.example>").starts_with("250"));
    let r = client.cmd("RCPT TO:<dave@example.org>");
    assert!(r.starts_with("250"), "the last good accounts stay: {r}");
    assert_eq!(auth_code(&p, &c.cert_pem, "alice@example.org", "wonderland"), 235);
    wait_until("the refusal logged", Duration::from_secs(5), || p.log_contains("accounts not reloaded"));
    let log = p.log.lock().unwrap().join("\n");
    assert!(log.contains("postmaster@example.org, postmaster@example.net would reach no account"), "{log}");
    assert_eq!(log.matches("accounts not reloaded").count(), 1, "logged once per change: {log}");
}

#[test]
fn an_accounts_file_the_user_cannot_read_stops_serve_at_start() {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs the tests as root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "user = \"nobody\"");
    open_up(dir.path());
    let passwd = dir.path().join("passwd");
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp-std"));
    cmd.current_dir(dir.path()).args(["serve", "--config", config.to_str().unwrap()]);
    let out = run(&mut cmd, b"", Duration::from_secs(30));
    assert_ne!(out.status, Some(0));
    let err = &out.stderr;
    assert!(
        err.contains(&format!("the accounts file {}", passwd.display()))
            && err.contains("file owned by 0:0 mode=0600")
            && err.contains("user nobody")
            && err.contains("chown nobody:dovecot"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "nothing made before the refusal");
    assert_eq!(err.matches("cannot be read").count() + err.matches("would not be able").count(), 1, "said once: {err}");
}

#[test]
fn a_data_dir_the_user_cannot_reach_is_refused_before_anything_is_made() {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs the tests as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The temp dir is made 0700 root: nobody cannot reach `data` inside it.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let config = setup(dir.path(), "user = \"nobody\"");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp-std"));
    cmd.current_dir(dir.path()).args(["serve", "--config", config.to_str().unwrap()]);
    let out = run(&mut cmd, b"", Duration::from_secs(30));
    assert_ne!(out.status, Some(0));
    let want = format!("missing +x perm: {}, dir owned by 0:0 mode=0700", dir.path().display());
    assert!(
        out.stderr.contains(&want) && out.stderr.contains("user nobody") && out.stderr.contains("chmod o+x"),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("data").exists(), "nothing half-made");
}

#[test]
fn a_new_user_gets_the_mailboxes_of_the_one_before() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::Uid::effective().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs the tests as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    open_up(dir.path());
    let config = setup(dir.path(), "user = \"daemon\"");
    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let mut c = connect(&p);
    let (_, end) = transaction(&mut c, "x@client.example", &["alice@example.org"], "Subject: one");
    assert!(end.unwrap().starts_with("250"));
    drop(c);
    drop(p);
    let alice = mailbox(dir.path(), "alice@example.org");
    let daemon = nix::unistd::User::from_name("daemon").unwrap().unwrap().uid.as_raw();
    assert!(files(&alice, "new").iter().all(|f| std::fs::metadata(f).unwrap().uid() == daemon));
    // The same data_dir, another user: its files become the new user's, mail goes on.
    let text = std::fs::read_to_string(&config).unwrap().replace("user = \"daemon\"", "user = \"nobody\"");
    std::fs::write(&config, text).unwrap();
    let p = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let mut c = connect(&p);
    let (_, end) = transaction(&mut c, "x@client.example", &["alice@example.org"], "Subject: two");
    let end = end.unwrap();
    assert!(end.starts_with("250"), "{end}");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid.as_raw();
    let stored = files(&alice, "new");
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|f| std::fs::metadata(f).unwrap().uid() == nobody));
    assert!(p.log_contains("gave the files of an earlier user to this one"));
}

#[test]
fn start_errors_name_their_object_once() {
    let serve = |dir: &Path, config: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp-std"));
        cmd.current_dir(dir).args(["serve", "--config", config.to_str().unwrap()]);
        let out = run(&mut cmd, b"", Duration::from_secs(30));
        assert_ne!(out.status, Some(0), "{}", out.stderr);
        assert_eq!(out.stderr.matches("smtp-std: ").count(), 1, "said once: {}", out.stderr);
        out.stderr
    };
    // No accounts file: said as such, not as a postmaster without an account.
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "");
    std::fs::remove_file(dir.path().join("passwd")).unwrap();
    let err = serve(dir.path(), &config);
    let want = format!("the accounts file {} does not exist", dir.path().join("passwd").display());
    assert!(err.contains(&want) && err.contains("smtp-std user add"), "{err}");

    // A listener's address in use: which one.
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let config = setup(dir.path(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("smtp = [\"127.0.0.1:0\"]", &format!("smtp = [\"127.0.0.1:0\", \"127.0.0.1:{port}\"]"));
    std::fs::write(&config, text).unwrap();
    let err = serve(dir.path(), &config);
    assert!(
        err.contains(&format!("listen.smtp: cannot listen on 127.0.0.1:{port}")) && err.contains("in use"),
        "{err}"
    );

    // Certificate and key swapped: which file, and what is wrong.
    let dir = tempfile::tempdir().unwrap();
    let c = cert(dir.path());
    let config = setup(dir.path(), "");
    let tls = format!("[tls]\ncert = {:?}\nkey = {:?}", c.key_pem, c.cert_pem);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[[domain]]\nname = \"example.org\"", &format!("{tls}\n\n[[domain]]\nname = \"example.org\""));
    std::fs::write(&config, text).unwrap();
    let err = serve(dir.path(), &config);
    assert!(err.contains(&format!("certificate file {}", c.key_pem.display())) && err.contains("swapped"), "{err}");
}
