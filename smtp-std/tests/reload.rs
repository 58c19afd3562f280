//! Reload (issue 19 point 1): `SIGHUP` and `smtp-std reload --config` read the config file
//! again with everything it names. An alias and a domain added take effect for new sessions
//! while a session opened before finishes a transaction under its old rules; a broken config
//! (or one with a dangling alias) is refused whole, with file, line and key, and mail goes on
//! under the old one; changes that need a restart are named; a replaced certificate is served
//! to the next client (checked with Python's ssl), after a reload and by a file change alone
//! (certbot's symbolic links), while a TLS session begun before goes on.
// The mail server and the program (feature `mta`).
#![cfg(feature = "mta")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const PASSWORDS: &str = "alice@example.org:wonderland\nbob@example.org:builder\ncarol@example.net:c4r0l\n";

/// The config text: `extra` at the top level, `tls` after `[listen]`, `aliases` more lines
/// under example.org's aliases, `domains` more `[[domain]]` tables at the end.
fn config_text(extra: &str, listen: &str, tls: &str, aliases: &str, domains: &str) -> String {
    format!(
        r#"hostname = "mail.example.org"
data_dir = "data"
accounts = "passwd"
mail_auth = false
{extra}
[listen]
smtp = ["{listen}"]
{tls}
[[domain]]
name = "example.org"
[domain.aliases]
postmaster = "alice"
sales = ["alice", "bob"]
{aliases}
[[domain]]
name = "example.net"
catch_all = "carol"
[domain.aliases]
postmaster = "carol"
{domains}"#
    )
}

/// Writes the accounts and the config into `dir`; the path of the config.
fn setup(dir: &Path, tls: &str) -> PathBuf {
    std::fs::write(dir.join("passwd"), passwd_text(PASSWORDS)).unwrap();
    let path = dir.join("smtp-std.toml");
    std::fs::write(&path, config_text("", "127.0.0.1:0", tls, "", "")).unwrap();
    path
}

/// Starts `serve --config` and waits for its pid file (written once it handles signals).
fn start(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Program {
    let p = Program::start_env(dir, &["--config", config.to_str().unwrap()], env);
    wait_until("the pid file", Duration::from_secs(10), || dir.join("data/smtp-std.pid").exists());
    p
}

fn connect(addr: std::net::SocketAddr) -> Client {
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220 mail.example.org"));
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    c
}

/// The reply to RCPT TO `rcpt` in a new transaction (reset afterwards).
fn rcpt(c: &mut Client, rcpt: &str) -> String {
    assert!(c.cmd("MAIL FROM:<x@client.example>").starts_with("250"));
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(c.cmd("RSET").starts_with("250"));
    r
}

/// One whole transaction to `rcpt`: the reply to the end of data.
fn send(c: &mut Client, rcpt: &str, subject: &str) -> String {
    assert!(c.cmd("MAIL FROM:<x@client.example>").starts_with("250"));
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(r.starts_with("250"), "{rcpt}: {r}");
    assert!(c.cmd("DATA").starts_with("354"));
    c.cmd(&format!("Subject: {subject}\r\n\r\nhello\r\n."))
}

fn hup(p: &Program) {
    assert!(Command::new("kill").args(["-HUP", &p.pid().to_string()]).status().unwrap().success());
}

/// `smtp-std reload --config FILE`.
fn reload(config: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp-std"));
    cmd.args(["reload", "--config"]).arg(config);
    run(&mut cmd, b"", Duration::from_secs(30))
}

fn edit(config: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "{from:?} not in {text}");
    std::fs::write(config, text.replacen(from, to, 1)).unwrap();
}

/// The line of `config` that starts with `start`.
fn line_of(config: &Path, start: &str) -> usize {
    let text = std::fs::read_to_string(config).unwrap();
    text.lines().position(|l| l.starts_with(start)).expect("the line") + 1
}

fn mailbox(dir: &Path, account: &str) -> PathBuf {
    let (local, domain) = account.split_once('@').unwrap();
    dir.join("data/mailboxes").join(domain).join(local)
}

fn stored_subjects(dir: &Path, account: &str) -> String {
    files(&mailbox(dir, account), "new").iter().map(|f| std::fs::read_to_string(f).unwrap()).collect()
}

#[test]
fn aliases_and_domains_added_by_sighup_and_by_reload_while_a_session_stays() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "");
    let p = start(dir.path(), &config, &[]);
    // Opened before any reload: it keeps the rules it began with.
    let mut before = connect(p.addr);
    assert!(rcpt(&mut before, "team@example.org").starts_with("550 5.1.1"));

    let mut c = connect(p.addr);
    assert!(rcpt(&mut c, "team@example.org").starts_with("550 5.1.1"));
    assert!(rcpt(&mut c, "postmaster@example.com").starts_with("550 5.7.1"));
    assert!(c.cmd("QUIT").starts_with("221"));

    // An alias and a domain, by SIGHUP.
    edit(&config, "sales = [\"alice\", \"bob\"]\n", "sales = [\"alice\", \"bob\"]\nteam = \"bob\"\n");
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap()
            + "\n[[domain]]\nname = \"example.com\"\n[domain.aliases]\npostmaster = \"alice@example.org\"\n",
    )
    .unwrap();
    hup(&p);
    wait_until("the reload", Duration::from_secs(10), || p.log_contains("reloaded: new sessions"));
    let mut c = connect(p.addr);
    assert!(send(&mut c, "team@example.org", "to the team").starts_with("250"));
    assert!(send(&mut c, "postmaster@example.com", "to the new domain").starts_with("250"));
    assert!(c.cmd("QUIT").starts_with("221"));
    assert!(stored_subjects(dir.path(), "bob@example.org").contains("Subject: to the team"));
    assert!(stored_subjects(dir.path(), "alice@example.org").contains("Subject: to the new domain"));

    // The session from before: still the old rules, and it completes a transaction.
    assert!(rcpt(&mut before, "team@example.org").starts_with("550 5.1.1"));
    assert!(rcpt(&mut before, "postmaster@example.com").starts_with("550 5.7.1"));
    assert!(send(&mut before, "alice@example.org", "from the old session").starts_with("250"));
    assert!(before.cmd("QUIT").starts_with("221"));
    assert!(stored_subjects(dir.path(), "alice@example.org").contains("Subject: from the old session"));

    // Another alias, by the command, which waits for the outcome.
    edit(&config, "team = \"bob\"\n", "team = \"bob\"\ncrew = [\"alice\", \"carol@example.net\"]\n");
    let out = reload(&config);
    assert_eq!(out.status, Some(0), "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "reloaded\n");
    let mut c = connect(p.addr);
    assert!(send(&mut c, "crew@example.org", "to the crew").starts_with("250"));
    assert!(stored_subjects(dir.path(), "carol@example.net").contains("Subject: to the crew"));
    let status = std::fs::read_to_string(dir.path().join("data/reload.status")).unwrap();
    assert!(status.starts_with(&format!("pid {}\ngeneration 2\nreloaded\n", p.pid())), "{status}");
}

#[test]
fn a_broken_config_is_refused_whole_and_the_running_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "");
    let good = std::fs::read_to_string(&config).unwrap();
    let p = start(dir.path(), &config, &[]);

    // A new alias and, further down, a mistake: nothing of it is taken.
    edit(&config, "sales = [\"alice\", \"bob\"]\n", "sales = [\"alice\", \"bob\"]\nteam = \"bob\"\n");
    edit(&config, "catch_all = \"carol\"", "catch_all = \"car/ol\"");
    let line = line_of(&config, "catch_all");
    let out = reload(&config);
    assert_eq!(out.status, Some(1), "{}{}", out.stdout, out.stderr);
    let want = format!("{}:{line}: domain[1].catch_all: ", config.display());
    assert!(out.stderr.contains(&want) && out.stderr.contains("refused"), "{want} in {}", out.stderr);
    assert!(p.log_contains(&want), "{:?}", p.log.lock().unwrap());
    let mut c = connect(p.addr);
    assert!(rcpt(&mut c, "team@example.org").starts_with("550 5.1.1"));
    assert!(send(&mut c, "anyone@example.net", "catch-all as before").starts_with("250"));
    assert!(stored_subjects(dir.path(), "carol@example.net").contains("Subject: catch-all as before"));

    // A dangling alias member: refused at reload as at start, naming the key, line, member.
    std::fs::write(&config, &good).unwrap();
    edit(&config, "sales = [\"alice\", \"bob\"]\n", "sales = [\"alice\", \"bob\"]\nteam = [\"bob\", \"nobody\"]\n");
    let line = line_of(&config, "team");
    let out = reload(&config);
    assert_eq!(out.status, Some(1), "{}{}", out.stdout, out.stderr);
    let want = format!("{}:{line}: domain[0].aliases.team: nobody@example.org reaches no account", config.display());
    assert!(out.stderr.contains(&want), "{want} in {}", out.stderr);
    assert!(rcpt(&mut c, "team@example.org").starts_with("550 5.1.1"));

    // The same by SIGHUP: the log says it.
    edit(&config, "data_dir = \"data\"", "data_dir = \"data\"\nmax_clients = 3");
    let want = format!("{}:{}: ", config.display(), line_of(&config, "max_clients"));
    hup(&p);
    wait_until("the refusal logged", Duration::from_secs(10), || {
        p.log_contains(&want) && p.log_contains("unknown field `max_clients`")
    });
    assert!(p.log_contains("reload refused, the running configuration stays"));
    assert!(send(&mut c, "sales@example.org", "still served").starts_with("250"));

    // Changes that need a restart are named; the rest is taken, and the old port serves on.
    std::fs::write(&config, &good).unwrap();
    edit(&config, "smtp = [\"127.0.0.1:0\"]", "smtp = [\"127.0.0.1:1\"]");
    edit(&config, "sales = [\"alice\", \"bob\"]\n", "sales = [\"alice\", \"bob\"]\nteam = \"bob\"\n");
    edit(&config, "[listen]", "[limits]\nmax_clients = 7\nmax_recipients = 2\n[listen]");
    let out = reload(&config);
    assert_eq!(out.status, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("reloaded\n"), "{}", out.stdout);
    for key in ["listen.smtp changed", "limits.max_clients changed"] {
        assert!(out.stdout.contains(&format!("needs a restart: {key}")), "{key} in {}", out.stdout);
        assert!(p.log_contains(key));
    }
    assert!(!out.stdout.contains("max_recipients"), "{}", out.stdout);
    let mut c = connect(p.addr);
    assert!(rcpt(&mut c, "team@example.org").starts_with("250"));
    // [limits] max_recipients takes effect for new sessions.
    assert!(c.cmd("MAIL FROM:<x@client.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<carol@example.net>").starts_with("452 4.5.3"));
}

#[test]
fn reload_without_a_server_says_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "");
    let out = reload(&config);
    assert_eq!(out.status, Some(3), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("not running: no pid file"), "{}", out.stderr);

    // A stale pid file: its process is gone.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let mut child = Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    std::fs::write(dir.path().join("data/smtp-std.pid"), format!("{gone}\n")).unwrap();
    let out = reload(&config);
    assert_eq!(out.status, Some(3), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("not running: stale pid file"), "{}", out.stderr);

    // A server that was there and stopped cleanly leaves no pid file.
    let mut p = start(dir.path(), &config, &[]);
    assert!(Command::new("kill").args(["-TERM", &p.pid().to_string()]).status().unwrap().success());
    wait_until("the exit", Duration::from_secs(10), || p.child.0.try_wait().ok().flatten().is_some());
    assert!(!dir.path().join("data/smtp-std.pid").exists());
    assert_eq!(reload(&config).status, Some(3));
}

/// A self-signed certificate for `localhost` with `name` in its subject: (cert PEM, key PEM,
/// DER).
fn new_cert(name: &str) -> (String, String, Vec<u8>) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// The certificate the server at `port` presents after STARTTLS (Python's ssl), as DER.
fn served_cert(port: u16) -> Vec<u8> {
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {port})
s.starttls(context=ctx)
print(s.sock.getpeercert(binary_form=True).hex())
s.quit()
"#
    );
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hex = String::from_utf8(out.stdout).unwrap();
    (0..hex.trim().len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

/// A TLS session (STARTTLS) that trusts only `der`, after EHLO.
fn tls_session(addr: std::net::SocketAddr, der: &[u8]) -> Tls {
    let mut c = connect(addr);
    assert!(c.cmd("STARTTLS").starts_with("220"));
    let conn = rustls::ClientConnection::new(tls_client_config(der), "localhost".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, c.stream);
    assert!(tls_cmd(&mut tls, "EHLO client.example").starts_with("250"));
    tls
}

#[test]
fn a_replaced_certificate_is_served_after_a_reload_and_an_open_tls_session_goes_on() {
    if !have("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let one = new_cert("first");
    std::fs::write(&cert, &one.0).unwrap();
    std::fs::write(&key, &one.1).unwrap();
    let config = setup(dir.path(), &format!("[tls]\ncert = {cert:?}\nkey = {key:?}\n"));
    let p = start(dir.path(), &config, &[]);
    assert_eq!(served_cert(p.addr.port()), one.2);
    let mut open = tls_session(p.addr, &one.2);

    let two = new_cert("second");
    std::fs::write(&key, &two.1).unwrap();
    std::fs::write(&cert, &two.0).unwrap();
    let out = reload(&config);
    assert_eq!(out.status, Some(0), "{}{}", out.stdout, out.stderr);
    assert_eq!(served_cert(p.addr.port()), two.2, "the new certificate after the reload");
    assert!(p.log_contains("TLS certificate reloaded"));

    // The session that began under the first certificate completes a transaction.
    assert!(tls_cmd(&mut open, "MAIL FROM:<x@client.example>").starts_with("250"));
    assert!(tls_cmd(&mut open, "RCPT TO:<bob@example.org>").starts_with("250"));
    assert!(tls_cmd(&mut open, "DATA").starts_with("354"));
    assert!(tls_cmd(&mut open, "Subject: under TLS\r\n\r\nhi\r\n.").starts_with("250"));
    assert!(stored_subjects(dir.path(), "bob@example.org").contains("Subject: under TLS"));

    // A key that does not match the certificate: refused whole, the second one stays.
    let three = new_cert("third");
    std::fs::write(&cert, &three.0).unwrap();
    let out = reload(&config);
    assert_eq!(out.status, Some(1), "{}{}", out.stdout, out.stderr);
    let want =
        format!("[tls]: private key file {} is not the key of certificate file {}", key.display(), cert.display());
    assert!(out.stderr.contains(&want) && out.stderr.contains("do not match"), "{}", out.stderr);
    assert_eq!(served_cert(p.addr.port()), two.2);
}

#[test]
fn a_renewed_certificate_is_served_without_a_signal() {
    if !have("python3") {
        return;
    }
    // certbot's layout: live/ links into archive/, renewals write new files and move the links.
    let dir = tempfile::tempdir().unwrap();
    let (archive, live) = (dir.path().join("archive"), dir.path().join("live"));
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    let link = |name: &str, target: &Path| {
        let tmp = live.join(format!("{name}.tmp"));
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(&tmp, live.join(name)).unwrap();
    };
    let put = |n: u32, c: &(String, String, Vec<u8>)| {
        std::fs::write(archive.join(format!("fullchain{n}.pem")), &c.0).unwrap();
        std::fs::write(archive.join(format!("privkey{n}.pem")), &c.1).unwrap();
    };
    let one = new_cert("first");
    put(1, &one);
    link("fullchain.pem", &archive.join("fullchain1.pem"));
    link("privkey.pem", &archive.join("privkey1.pem"));
    let tls = format!("[tls]\ncert = {:?}\nkey = {:?}\n", live.join("fullchain.pem"), live.join("privkey.pem"));
    let config = setup(dir.path(), &tls);
    let p = start(dir.path(), &config, &[("SMTP_STD_CERT_CHECK_INTERVAL", "1s")]);
    assert_eq!(served_cert(p.addr.port()), one.2);

    // Half a renewal (the certificate, not yet its key): the first one stays.
    let two = new_cert("second");
    put(2, &two);
    link("fullchain.pem", &archive.join("fullchain2.pem"));
    wait_until("the mismatch logged", Duration::from_secs(10), || p.log_contains("cannot be used (yet)"));
    assert_eq!(served_cert(p.addr.port()), one.2);
    // The key follows: the new certificate is served within a few seconds.
    link("privkey.pem", &archive.join("privkey2.pem"));
    let start = std::time::Instant::now();
    wait_until("the renewed certificate served", Duration::from_secs(10), || served_cert(p.addr.port()) == two.2);
    eprintln!("renewal served after {:?}", start.elapsed());
    assert!(p.log_contains("TLS certificate changed on disk"));
    // Mail goes on.
    let mut c = connect(p.addr);
    assert!(send(&mut c, "alice@example.org", "after renewal").starts_with("250"));
}

#[test]
fn outbound_settings_apply_to_the_next_deliveries() {
    // Two relays; forwarded mail leaves through the configured one.
    let one = MaildirServer::start(|o| o);
    let two = MaildirServer::start(|o| o);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), passwd_text(PASSWORDS)).unwrap();
    let outbound =
        |relay: std::net::SocketAddr| format!("[outbound]\nsmarthost = \"{relay}\"\nsmarthost_tls = \"none\"\n");
    let config = dir.path().join("smtp-std.toml");
    let fwd = "fwd = \"friend@elsewhere.example\"\n";
    std::fs::write(&config, config_text(&outbound(one.addr), "127.0.0.1:0", "", fwd, "")).unwrap();
    let p = start(dir.path(), &config, &[]);
    let mut c = connect(p.addr);
    assert!(send(&mut c, "fwd@example.org", "through one").starts_with("250"));
    wait_until("relay one got it", Duration::from_secs(10), || one.new_files().len() == 1);

    edit(&config, &one.addr.to_string(), &two.addr.to_string());
    let out = reload(&config);
    assert_eq!(out.status, Some(0), "{}{}", out.stdout, out.stderr);
    // The session opened before the reload queues; the workers deliver with the new settings.
    assert!(send(&mut c, "fwd@example.org", "through two").starts_with("250"));
    wait_until("relay two got it", Duration::from_secs(10), || two.new_files().len() == 1);
    assert_eq!(one.new_files().len(), 1);
    assert!(std::fs::read_to_string(&two.new_files()[0]).unwrap().contains("Subject: through two"));
}
