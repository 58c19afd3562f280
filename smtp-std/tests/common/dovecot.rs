//! A real Dovecot for the tests: IMAP and LMTP on loopback ports, its own config file, its
//! passdb the accounts file `smtp-std` wrote, the mailboxes `serve` delivered into (owned by
//! an ordinary user: Dovecot refuses to read mail as root). Killed on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::ChildGuard;
use super::dnsmasq::free_port;

pub struct Dovecot {
    _child: ChildGuard,
    pub imap: u16,
    pub lmtp: u16,
    pub dir: PathBuf,
}

/// Whether the Dovecot tests can run here: dovecot installed and we are root (it must
/// start as root and read mail as another user). In CI (`CI` set) a missing Dovecot fails.
pub fn available() -> bool {
    let installed = Path::new("/usr/sbin/dovecot").exists();
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if std::env::var_os("CI").is_some() {
        assert!(installed, "CI: dovecot is not installed (apt dovecot-imapd dovecot-lmtpd)");
        assert!(root, "CI: the Dovecot tests need root");
    }
    if !(installed && root) {
        eprintln!("note: Dovecot test skipped (needs /usr/sbin/dovecot and root)");
    }
    installed && root
}

/// Whether Pigeonhole (Dovecot's Sieve plugin) is installed too; in CI a missing one fails.
pub fn sieve_available() -> bool {
    let installed = Path::new("/usr/lib/dovecot/modules/lib90_sieve_plugin.so").exists();
    if std::env::var_os("CI").is_some() {
        assert!(installed, "CI: Dovecot's Sieve plugin is not installed (apt dovecot-sieve)");
    }
    if !installed {
        eprintln!("note: Sieve test skipped (needs apt dovecot-sieve)");
    }
    installed
}

impl Dovecot {
    /// Starts Dovecot with its state in `dir`, users from `passwd` (Dovecot passwd-file),
    /// mail at `<mailboxes>/%d/%n` owned by `user`.
    pub fn start(dir: &Path, passwd: &Path, mailboxes: &Path, user: &str, group: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let (imap, lmtp) = (free_port(), free_port());
        let conf = format!(
            r#"
protocols = imap lmtp
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = smtp-std-test-{imap}
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{mailboxes}/%d/%n
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=ARGON2ID username_format=%Lu {passwd}
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={dir}/home/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
service anvil {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  separator = .
}}
"#,
            dir = dir.display(),
            mailboxes = mailboxes.display(),
            passwd = passwd.display(),
        );
        let up = |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        let guard =
            launch(dir, &conf, || up(imap) && up(lmtp)).unwrap_or_else(|log| panic!("dovecot did not start: {log}"));
        Self { _child: guard, imap, lmtp, dir: dir.to_owned() }
    }

    /// Starts Dovecot with the config file `conf` as written for a real server (by
    /// `smtp-std quickstart`), included unchanged and adapted only in what a test must: its
    /// state, sockets and log under `dir`, IMAP (STARTTLS) on a loopback port, imaps off.
    /// Ready when IMAP answers and `ready()` holds (an LMTP socket there, say).
    pub fn start_including(dir: &Path, conf: &Path, ready: impl Fn() -> bool) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let imap = free_port();
        let wrapper = format!(
            r#"!include {conf}
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = smtp-std-test-{imap}
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
listen = 127.0.0.1
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"#,
            conf = conf.display(),
            dir = dir.display(),
        );
        let up = || std::net::TcpStream::connect(("127.0.0.1", imap)).is_ok() && ready();
        let guard = launch(dir, &wrapper, up).unwrap_or_else(|log| panic!("dovecot did not start: {log}"));
        Self { _child: guard, imap, lmtp: 0, dir: dir.to_owned() }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }
}

/// Runs Dovecot in the foreground with `conf` written to `dir/dovecot.conf` (its log at
/// `dir/dovecot.log`, as `conf` says), until `ready()`. `Err` with the log when it exited or
/// was not ready within 20 seconds.
pub fn launch(dir: &Path, conf: &str, ready: impl Fn() -> bool) -> Result<ChildGuard, String> {
    let conf_path = dir.join("dovecot.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let log = dir.join("dovecot.log");
    let _ = std::fs::remove_file(&log);
    let child = Command::new("/usr/sbin/dovecot")
        .arg("-F")
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dovecot");
    let mut guard = ChildGuard(child);
    let end = Instant::now() + Duration::from_secs(20);
    while !ready() {
        if matches!(guard.0.try_wait(), Ok(Some(_))) || Instant::now() > end {
            return Err(std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(guard)
}
