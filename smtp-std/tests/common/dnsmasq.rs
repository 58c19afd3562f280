//! A real DNS server for the tests: dnsmasq on a loopback port, authoritative for `.test`
//! (unknown names there are NXDOMAIN), killed on drop.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{have, ChildGuard};

pub struct Dnsmasq {
    child: ChildGuard,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

pub use super::common::free_port;

/// The dnsmasq binary (in /usr/sbin, which may not be on a user's PATH).
fn program() -> &'static str {
    if Path::new("/usr/sbin/dnsmasq").exists() {
        "/usr/sbin/dnsmasq"
    } else {
        "dnsmasq"
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Dnsmasq {
    /// Whether dnsmasq is installed (tests skip without it, except on CI).
    pub fn available() -> bool {
        have(program())
    }

    /// Starts dnsmasq serving `lines` (dnsmasq.conf lines: `txt-record=...`, `mx-host=...`,
    /// `host-record=...`). Waits (bounded) until it answers on TCP.
    pub fn start(lines: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for _attempt in 0..5 {
            let port = free_port();
            let mut conf = format!(
                "port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\npid-file=\nlocal=/test/\n"
            );
            if is_root() {
                conf.push_str("user=root\n");
            }
            for l in lines {
                conf.push_str(l);
                conf.push('\n');
            }
            let path: PathBuf = dir.path().join("dnsmasq.conf");
            std::fs::write(&path, conf).unwrap();
            let log = std::fs::File::create(dir.path().join("dnsmasq.log")).unwrap();
            let child = Command::new(program())
                .arg("--no-daemon")
                .arg(format!("--conf-file={}", path.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start dnsmasq");
            let mut guard = ChildGuard(child);
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = guard.0.try_wait() {
                    break; // exited (port taken?): try another port
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Self { child: guard, addr, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = guard.0.kill();
        }
        let log = std::fs::read_to_string(dir.path().join("dnsmasq.log")).unwrap_or_default();
        panic!("dnsmasq did not start: {log}");
    }

    /// The `--dns` argument for the program.
    pub fn arg(&self) -> String {
        self.addr.to_string()
    }
}

/// `txt-record=name,"..."` with the value split into strings of at most 255 characters.
pub fn txt(name: &str, value: &str) -> String {
    let parts: Vec<String> =
        value.as_bytes().chunks(255).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
    format!("txt-record={name},{}", parts.join(","))
}
