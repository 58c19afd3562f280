//! Shared test helpers: servers on loopback ports (in-process or the program), a raw SMTP
//! client, a self-signed certificate, and child processes that are always killed.
#![allow(dead_code)]
// Without `mta` the servers on the mail server's handler and the program are left out.
#![cfg_attr(not(feature = "mta"), allow(unused_imports))]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(feature = "mta")]
use smtp_std::mta::accounts::passwd::PasswdFile;
#[cfg(feature = "mta")]
use smtp_std::mta::accounts::AccountsFile;
#[cfg(feature = "mta")]
use smtp_std::mta::inbound::{InboundHandler, InboundPolicy, Route};
#[cfg(feature = "mta")]
use smtp_std::mta::maildir::Maildir;
use smtp_std::{Options, Running, Server};

/// A port on 127.0.0.1 that nothing listens on (TCP or UDP), for a peer a test starts with the
/// port in its config. See [`free_port_on`].
pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port on `ip` free for TCP and UDP, picked below the kernel's ephemeral range (32768 and
/// up on Linux). A port the kernel hands out for `:0` can be taken by any outgoing connection
/// of the same run between the pick and the peer's bind, and the peer then fails to start;
/// connections never take a port below that range. Each test process starts at its own
/// offset and never hands out the same port twice.
pub fn free_port_on(ip: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        let tcp = std::net::TcpListener::bind((ip, port));
        let udp = std::net::UdpSocket::bind((ip, port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip} in {LOW}..{}", LOW + SPAN);
}

/// A self-signed certificate for `localhost`, written as PEM files in `dir`.
pub struct Cert {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub der: Vec<u8>,
}

pub fn cert(dir: &Path) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = dir.join("cert.pem");
    let key_pem = dir.join("key.pem");
    std::fs::write(&cert_pem, ck.cert.pem()).unwrap();
    std::fs::write(&key_pem, ck.key_pair.serialize_pem()).unwrap();
    Cert { cert_pem, key_pem, der: ck.cert.der().to_vec() }
}

/// A rustls client configuration that trusts only the certificate `der` (from [`cert`]).
pub fn tls_client_config(der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(der.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// The files in `<maildir>/<sub>`.
pub fn files(maildir: &Path, sub: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(maildir.join(sub)) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// The queue entries in the queue's `entries/` directory (and `.tmp` files being written):
/// not the files kept there for recycling (`free.*`, no id).
pub fn queue_entries(entries: &Path) -> usize {
    std::fs::read_dir(entries).map_or(0, |d| {
        d.filter(|e| e.as_ref().is_ok_and(|e| !e.file_name().to_string_lossy().starts_with("free."))).count()
    })
}

/// Waits (bounded) until `cond` holds.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The stored message after the trace fields of final delivery (`Return-Path:` first, then
/// `Delivered-To:` lines), which it must have.
pub fn strip_trace(mut msg: &[u8]) -> &[u8] {
    assert!(msg.starts_with(b"Return-Path: <"), "no Return-Path: header first");
    while msg.starts_with(b"Return-Path: ") || msg.starts_with(b"Delivered-To: ") {
        let lf = msg.iter().position(|&b| b == b'\n').expect("header line end");
        msg = &msg[lf + 1..];
    }
    msg
}

/// Splits a stored message into its first header after the trace fields (our `Received:`)
/// and the rest.
pub fn strip_received(msg: &[u8]) -> (&[u8], &[u8]) {
    let msg = strip_trace(msg);
    assert!(msg.starts_with(b"Received: "), "no Received: header first");
    let mut i = 0;
    loop {
        let lf = i + msg[i..].iter().position(|&b| b == b'\n').expect("header line end");
        i = lf + 1;
        if i >= msg.len() || (msg[i] != b' ' && msg[i] != b'\t') {
            return (&msg[..i], &msg[i..]);
        }
    }
}

/// An in-process server delivering into a Maildir in a temporary directory.
#[cfg(feature = "mta")]
pub struct MaildirServer {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub maildir: PathBuf,
    pub cert: Option<Cert>,
}

#[cfg(feature = "mta")]
/// An accounts file (Dovecot passwd-file, hashed) for `user:password` lines.
#[allow(dead_code)]
pub fn passwd_text(clear: &str) -> String {
    clear
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (user, password) = l.split_once(':').unwrap();
            format!("{user}:{}\n", smtp_std::mta::accounts::hash::hash_password(password))
        })
        .collect()
}

#[cfg(feature = "mta")]
impl MaildirServer {
    pub fn start(tune: impl FnOnce(Options) -> Options) -> Self {
        Self::start_full(tune, false, Vec::new(), None)
    }

    pub fn start_full(
        tune: impl FnOnce(Options) -> Options,
        tls: bool,
        domains: Vec<String>,
        users: Option<&str>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("Maildir");
        let md = Maildir::create(&maildir).unwrap();
        let mut options = Options::new("mx.test");
        let cert = tls.then(|| cert(dir.path()));
        if let Some(c) = &cert {
            let cfg = smtp_std::tls::server_config_from_files(&c.cert_pem, &c.key_pem).unwrap();
            options = options.tls(cfg);
        }
        let users =
            users.map(|u| std::sync::Arc::new(AccountsFile::fixed(PasswdFile::parse(&passwd_text(u)).unwrap())));
        if users.is_some() {
            options = options.auth_mechanisms(
                smtp_std::proto::ehlo::AuthMechanisms::none()
                    .with(smtp_std::proto::ehlo::AuthMechanisms::PLAIN)
                    .with(smtp_std::proto::ehlo::AuthMechanisms::LOGIN),
            );
        }
        let options = tune(options);
        let route = Route::Maildir { maildir: md, domains };
        let handler =
            InboundHandler::new(InboundPolicy { hostname: "mx.test".into(), route, logins: users, outgoing: None });
        let mut server = Server::new(options, handler);
        let addr = server.listen("127.0.0.1:0").unwrap();
        let tls_addr = tls.then(|| server.listen_tls("127.0.0.1:0").unwrap());
        let running = server.spawn();
        Self { running: Some(running), addr, tls_addr, dir, maildir, cert }
    }

    pub fn new_files(&self) -> Vec<PathBuf> {
        files(&self.maildir, "new")
    }

    pub fn tmp_files(&self) -> Vec<PathBuf> {
        files(&self.maildir, "tmp")
    }
}

#[cfg(feature = "mta")]
impl Drop for MaildirServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown();
        }
    }
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The output of a finished child.
pub struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with `stdin`, killed after `timeout`.
pub fn run(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    run_staged(cmd, &[stdin], Duration::ZERO, timeout)
}

/// Runs `cmd`, writing each stage of `stdin` after a `pause` (for peers that would otherwise
/// pipeline past DATA), killed after `timeout`.
pub fn run_staged(cmd: &mut Command, stages: &[&[u8]], pause: Duration, timeout: Duration) -> Output {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut guard = ChildGuard(child);
    let mut input = guard.0.stdin.take().unwrap();
    let stages: Vec<Vec<u8>> = stages.iter().map(|s| s.to_vec()).collect();
    let writer = std::thread::spawn(move || {
        for (i, data) in stages.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            if input.write_all(data).and_then(|()| input.flush()).is_err() {
                return;
            }
        }
        // Keep stdin open a moment for peers that quit at EOF.
        std::thread::sleep(pause);
    });
    let mut out = guard.0.stdout.take().unwrap();
    let mut err = guard.0.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > end {
            let _ = guard.0.kill();
            let _ = guard.0.wait();
            let stderr = String::from_utf8_lossy(&e.join().unwrap_or_default()).into_owned();
            panic!("{cmd:?} timed out after {timeout:?}; stderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: String::from_utf8_lossy(&o.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&e.join().unwrap_or_default()).into_owned(),
    }
}

/// Whether a tool is installed (tests that need it are skipped with a message otherwise,
/// except on CI, where `.ci/run` installs it and a missing tool fails).
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{tool} is missing on CI");
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

#[cfg(feature = "mta")]
/// The address in a log line's `bound=` field.
fn bound_field(line: &str) -> Option<SocketAddr> {
    let i = line.find("bound=")?;
    line[i + 6..].chars().take_while(|c| !c.is_whitespace()).collect::<String>().parse().ok()
}

#[cfg(feature = "mta")]
/// The `smtp-std` program, started with `args` (plus `--listen 127.0.0.1:0` unless given),
/// killed on drop. Its log lines are collected.
pub struct Program {
    pub child: ChildGuard,
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
}

#[cfg(feature = "mta")]
impl Program {
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_env(dir, args, &[])
    }

    /// [`Program::start`] with more environment variables.
    pub fn start_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp-std"));
        cmd.envs(env.iter().copied());
        cmd.current_dir(dir).arg("serve");
        if !args.contains(&"--listen") && !args.contains(&"--config") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args).env("RUST_LOG", "info").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = ChildGuard(cmd.spawn().expect("start smtp-std"));
        let stderr = child.0.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening for SMTP") && line.contains("bound=") {
                    let _ = tx.send((line.contains("implicit TLS"), bound_field(&line)));
                }
                log2.lock().unwrap().push(line);
            }
        });
        let want_tls = args.contains(&"--tls-listen");
        let mut addr = None;
        let mut tls_addr = None;
        while addr.is_none() || (want_tls && tls_addr.is_none()) {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok((true, a)) => tls_addr = a,
                Ok((false, a)) => addr = a,
                Err(_) => panic!("smtp-std did not start: {:?}", log.lock().unwrap()),
            }
        }
        Self { child, addr: addr.unwrap(), tls_addr, log }
    }

    /// The address in the `bound=` field of the first log line that contains `needle` (a
    /// listener's, e.g. "serving metrics"), waiting up to 20 s for it.
    pub fn bound(&self, needle: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).find_map(|l| bound_field(l));
            if let Some(addr) = found {
                return addr;
            }
            assert!(Instant::now() < deadline, "no {needle:?} line with bound=: {:?}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a line of the log contains `needle`, waiting up to 10 s for it: the log comes
    /// through stderr's reader thread, often after the reply that made it.
    pub fn log_contains(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !self.log_lacks(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether no line of the log (as far as it came in) contains `needle`, without waiting.
    pub fn log_lacks(&self, needle: &str) -> bool {
        !self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

/// A raw SMTP client over a plain socket, every read bounded.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).unwrap())
    }

    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Self { stream, reader }
    }

    /// Reads one whole reply (all lines); "" at EOF.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    /// The reply code of the next reply (0 at EOF).
    pub fn code(&mut self) -> u16 {
        self.reply().get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends a command line and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Whether the server closed the connection (EOF within the read timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
            || matches!(self.reader.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

/// A complete plain session that must succeed: the server still serves others.
pub fn send_ok(addr: SocketAddr, body: &str) {
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO ok.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@ok.example>").starts_with("250"), "MAIL");
    assert!(c.cmd("RCPT TO:<b@mx.test>").starts_with("250"), "RCPT");
    assert!(c.cmd("DATA").starts_with("354"));
    let r = c.cmd(&format!("{body}\r\n."));
    assert!(r.starts_with("250 "), "end of data: {r}");
    assert!(c.cmd("QUIT").starts_with("221"));
}

/// A TLS client stream over TCP.
pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Reads one (possibly multi-line) reply over TLS, byte by byte, up to 4 KiB.
pub fn tls_reply(tls: &mut Tls) -> String {
    let mut all = Vec::new();
    let mut b = [0u8; 1];
    while all.len() < 4096 {
        match tls.read(&mut b) {
            Ok(1) => all.push(b[0]),
            _ => break,
        }
        if all.ends_with(b"\r\n") {
            let body = &all[..all.len() - 2];
            let last = body.rsplit(|&x| x == b'\n').next().unwrap_or(body);
            if last.len() < 4 || last[3] == b' ' {
                break;
            }
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// Sends a command line over TLS and returns the reply.
pub fn tls_cmd(tls: &mut Tls, line: &str) -> String {
    tls.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    tls_reply(tls)
}
