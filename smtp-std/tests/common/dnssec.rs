//! A DNSSEC-signed test zone behind a validating resolver, all on loopback: the zone signed
//! offline (`dnssec-keygen` + `dnssec-signzone`, bind9-utils), served by `knotd`, and a
//! validating `unbound` that reaches it through a stub zone, anchored to the zone's key.
//! Unsigned zones served by the same knotd are insecure (no other trust anchor). Both
//! processes are killed on drop.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{have, ChildGuard};
use super::dnsmasq::free_port;

pub struct SignedDns {
    _knot: ChildGuard,
    _unbound: ChildGuard,
    /// The validating resolver (unbound).
    pub resolver: SocketAddr,
    /// The authoritative server (knotd): answers without validation.
    pub authoritative: SocketAddr,
    /// The signed zone's DNSKEY, as a trust anchor file.
    pub anchor: PathBuf,
    pub dir: tempfile::TempDir,
}

/// A zone: its name, and records in zone file syntax (owner names absolute).
pub struct Zone<'a> {
    pub name: &'a str,
    pub records: Vec<String>,
}

fn sbin(tool: &str) -> String {
    let p = format!("/usr/sbin/{tool}");
    if Path::new(&p).exists() {
        p
    } else {
        tool.to_owned()
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn wait_tcp(addr: SocketAddr, child: &mut ChildGuard, log: &Path) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Ok(Some(st)) = child.0.try_wait() {
            panic!("{addr}: exited with {st}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{addr} did not start: {}", std::fs::read_to_string(log).unwrap_or_default());
}

fn soa(name: &str) -> String {
    format!("$TTL 300\n{name}. IN SOA ns.{name}. admin.{name}. 1 3600 600 86400 300\n{name}. IN NS ns.{name}.\nns.{name}. IN A 127.0.0.1\n")
}

impl SignedDns {
    /// Whether knotd, unbound and the bind9 signing tools are installed (tests skip without
    /// them, except on CI).
    pub fn available() -> bool {
        ["dnssec-keygen", "dnssec-signzone"].iter().all(|t| have(t))
            && [sbin("knotd"), sbin("unbound")].iter().all(|t| have(t))
    }

    /// Signs `signed` (then applies `tamper` to the signed text: a record altered after
    /// signing is bogus), serves it and the `unsigned` zones with knotd, and starts unbound
    /// validating with the signed zone's key as its only trust anchor.
    pub fn start(signed: &Zone<'_>, tamper: impl Fn(&str) -> String, unsigned: &[Zone<'_>]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let zone_text = |z: &Zone<'_>| format!("{}{}\n", soa(z.name), z.records.join("\n"));
        std::fs::write(d.join("signed.src"), zone_text(signed)).unwrap();
        run(Command::new("dnssec-keygen")
            .args(["-q", "-a", "ECDSAP256SHA256", "-f", "KSK", "-K"])
            .arg(d)
            .arg(signed.name));
        run(Command::new("dnssec-signzone")
            .args(["-S", "-z", "-O", "full", "-K"])
            .arg(d)
            .arg("-d") // the dsset file too, not in the working directory
            .arg(d)
            .args(["-o", signed.name, "-f"])
            .arg(d.join("signed.zone"))
            .arg(d.join("signed.src"))
            .stdout(Stdio::null()));
        let text = std::fs::read_to_string(d.join("signed.zone")).unwrap();
        std::fs::write(d.join("signed.zone"), tamper(&text)).unwrap();
        let key = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "key"))
            .unwrap();
        let anchor: String = std::fs::read_to_string(key)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with(';'))
            .collect::<Vec<_>>()
            .join("\n");
        let anchor_path = d.join("anchor.key");
        std::fs::write(&anchor_path, format!("{anchor}\n")).unwrap();
        let mut zones = format!(
            "  - domain: {}\n    file: \"{}\"\n    zonefile-sync: -1\n    journal-content: none\n",
            signed.name,
            d.join("signed.zone").display()
        );
        for z in unsigned {
            let path = d.join(format!("{}.zone", z.name));
            std::fs::write(&path, zone_text(z)).unwrap();
            zones.push_str(&format!(
                "  - domain: {}\n    file: \"{}\"\n    zonefile-sync: -1\n    journal-content: none\n",
                z.name,
                path.display()
            ));
        }
        std::fs::create_dir_all(d.join("knot")).unwrap();
        let kport = free_port();
        let authoritative: SocketAddr = ([127, 0, 0, 1], kport).into();
        std::fs::write(
            d.join("knot.conf"),
            format!(
                "server:\n    rundir: \"{k}\"\n    listen: 127.0.0.1@{kport}\ndatabase:\n    storage: \"{k}\"\n\
                 log:\n  - target: stderr\n    any: info\nzone:\n{zones}",
                k = d.join("knot").display()
            ),
        )
        .unwrap();
        let knot_log = d.join("knot.log");
        let mut knot = ChildGuard(
            Command::new(sbin("knotd"))
                .arg("-c")
                .arg(d.join("knot.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&knot_log).unwrap())
                .spawn()
                .expect("start knotd"),
        );
        wait_tcp(authoritative, &mut knot, &knot_log);
        let uport = free_port();
        let resolver: SocketAddr = ([127, 0, 0, 1], uport).into();
        let mut stubs = String::new();
        for name in std::iter::once(signed.name).chain(unsigned.iter().map(|z| z.name)) {
            stubs.push_str(&format!("stub-zone:\n    name: \"{name}\"\n    stub-addr: 127.0.0.1@{kport}\n"));
        }
        std::fs::write(
            d.join("unbound.conf"),
            format!(
                "server:\n    interface: 127.0.0.1\n    port: {uport}\n    do-not-query-localhost: no\n    \
                 username: \"\"\n    chroot: \"\"\n    directory: \"{dir}\"\n    pidfile: \"\"\n    use-syslog: no\n    \
                 logfile: \"\"\n    verbosity: 1\n    val-log-level: 2\n    module-config: \"validator iterator\"\n    \
                 trust-anchor-file: \"{anchor}\"\n    local-zone: \"test.\" nodefault\n{stubs}",
                dir = d.display(),
                anchor = anchor_path.display()
            ),
        )
        .unwrap();
        let unbound_log = d.join("unbound.log");
        let mut unbound = ChildGuard(
            Command::new(sbin("unbound"))
                .arg("-d")
                .arg("-c")
                .arg(d.join("unbound.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&unbound_log).unwrap())
                .spawn()
                .expect("start unbound"),
        );
        wait_tcp(resolver, &mut unbound, &unbound_log);
        Self { _knot: knot, _unbound: unbound, resolver, authoritative, anchor: anchor_path, dir }
    }
}
