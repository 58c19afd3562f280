//! Automatic certificates and MTA-STS against a real ACME CA: pebble (Let's Encrypt's test
//! server) on loopback, its DNS answered by dnsmasq. `smtp-std serve` with `[acme]` gets a
//! certificate for its hostname and `mta-sts.<domain>` by tls-alpn-01 (and, in another
//! test, http-01), presents it on 25 (STARTTLS), 587 (STARTTLS), 465 and the https listener,
//! where it serves the MTA-STS policy; and renews it (pebble's certificates are made to live
//! 24 s here, so renewal comes at 16 s) into every listener without a restart. `records`
//! prints the MTA-STS and TLS-RPT records, `check` finds them and fetches the policy, a reload
//! changes the policy served; an unreachable directory is named in the log and retried.
#![cfg(feature = "mta")]

mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dnsmasq::{free_port, Dnsmasq};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const HOST: &str = "mx.example.test";
const STS: &str = "mta-sts.example.test";

/// pebble on loopback with its own CA for its HTTPS (`ca.pem`), resolving through `dns`.
struct Pebble {
    _child: ChildGuard,
    dir_url: String,
    management: SocketAddr,
    ca: PathBuf,
}

fn pebble(dir: &Path, dns: &Dnsmasq, http_port: u16, tls_port: u16, validity_s: u64) -> Pebble {
    // A CA for pebble's own HTTPS (the Debian package ships none).
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "pebble test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let ca_path = dir.join("pebble-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), leaf_key.serialize_pem()).unwrap();
    let (listen, management) = (free_port(), free_port());
    let config = format!(
        r#"{{"pebble": {{"listenAddress": "127.0.0.1:{listen}", "managementListenAddress": "127.0.0.1:{management}",
  "certificate": "{}", "privateKey": "{}", "httpPort": {http_port}, "tlsPort": {tls_port},
  "ocspResponderURL": "", "externalAccountBindingRequired": false, "certificateValidityPeriod": {validity_s}}}}}"#,
        dir.join("pebble-cert.pem").display(),
        dir.join("pebble-key.pem").display()
    );
    std::fs::write(dir.join("pebble.json"), config).unwrap();
    let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
    let child = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .arg("-dnsserver")
        .arg(dns.addr.to_string())
        .env("PEBBLE_VA_NOSLEEP", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start pebble");
    let child = ChildGuard(child);
    let addr: SocketAddr = ([127, 0, 0, 1], listen).into();
    wait_until("pebble listening", Duration::from_secs(20), || TcpStream::connect(addr).is_ok());
    Pebble {
        _child: child,
        dir_url: format!("https://127.0.0.1:{listen}/dir"),
        management: ([127, 0, 0, 1], management).into(),
        ca: ca_path,
    }
}

impl Pebble {
    /// The root pebble signs with now (it makes a new one at each start).
    fn root(&self) -> Vec<u8> {
        let client = smtp_std::mta::web::client::Client::new(Some(&self.ca)).unwrap();
        let r = client.get(&format!("https://{}/roots/0", self.management)).unwrap();
        assert_eq!(r.status, 200);
        r.body
    }
}

struct Ports {
    smtp: u16,
    submission: u16,
    submissions: u16,
    https: u16,
    http: u16,
}

fn ports() -> Ports {
    Ports {
        smtp: free_port(),
        submission: free_port(),
        submissions: free_port(),
        https: free_port(),
        http: free_port(),
    }
}

fn setup(dir: &Path, p: &Ports, pebble: &Pebble, challenge: &str) -> PathBuf {
    std::fs::write(dir.join("passwd"), passwd_text("alice@example.test:wonderland\n")).unwrap();
    let config = format!(
        r#"hostname = "{HOST}"
data_dir = "data"
accounts = "passwd"
mail_auth = false
[listen]
smtp = ["127.0.0.1:{}"]
submission = ["127.0.0.1:{}"]
submissions = ["127.0.0.1:{}"]
https = ["127.0.0.1:{}"]
http = ["127.0.0.1:{}"]
[acme]
directory = "{}"
email = "admin@example.test"
ca = "{}"
challenge = "{challenge}"
[[domain]]
name = "example.test"
mta_sts = "enforce"
[domain.aliases]
postmaster = "alice"
"#,
        p.smtp,
        p.submission,
        p.submissions,
        p.https,
        p.http,
        pebble.dir_url,
        pebble.ca.display()
    );
    let path = dir.join("smtp-std.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn roots(root_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Reads one SMTP reply (all its lines) from a plain socket.
fn smtp_reply(tcp: &mut TcpStream) -> String {
    let mut text = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if tcp.read(&mut byte).unwrap() == 0 {
            break;
        }
        text.push(byte[0]);
        if text.ends_with(b"\r\n") {
            let last = text[..text.len() - 2].rsplit(|&b| b == b'\n').next().unwrap_or(&[]);
            if last.len() >= 4 && last[3] == b' ' {
                break;
            }
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The leaf certificate served on `port` for `name` (after STARTTLS when `starttls`), if it
/// verifies against `config`'s roots.
fn served(config: &Arc<rustls::ClientConfig>, port: u16, name: &str, starttls: bool) -> Result<Vec<u8>, String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if starttls {
        assert!(smtp_reply(&mut tcp).starts_with("220"));
        tcp.write_all(b"EHLO test.example\r\n").unwrap();
        assert!(smtp_reply(&mut tcp).contains("STARTTLS"));
        tcp.write_all(b"STARTTLS\r\n").unwrap();
        assert!(smtp_reply(&mut tcp).starts_with("220"));
    }
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(config.clone(), server_name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(conn.peer_certificates().unwrap()[0].to_vec())
}

fn serial(der: &[u8]) -> String {
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der)
    );
    let out = run(Command::new("openssl").args(["x509", "-noout", "-serial"]), pem.as_bytes(), Duration::from_secs(10));
    out.stdout.trim().to_owned()
}

/// Waits (30 s at most) until `cond`; else fails showing the server's and pebble's logs.
fn wait_logged(server: &Program, dir: &Path, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !cond() {
        if Instant::now() > end {
            let pebble = std::fs::read_to_string(dir.join("pebble.log")).unwrap_or_default();
            panic!("timed out waiting for {what}\nserver: {:#?}\npebble: {pebble}", server.log.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The policy the server's config below serves.
fn our_policy() -> smtp_std::mta::web::mtasts::Policy {
    use smtp_std::mta::web::mtasts::{Mode, Policy, DEFAULT_MAX_AGE};
    Policy { mode: Mode::Enforce, mx: HOST.to_owned(), max_age: DEFAULT_MAX_AGE }
}

fn dns() -> Dnsmasq {
    Dnsmasq::start(&[
        format!("host-record={HOST},127.0.0.1"),
        format!("host-record={STS},127.0.0.1"),
        format!("mx-host=example.test,{HOST},10"),
        dnsmasq::txt("_mta-sts.example.test", &our_policy().txt()),
        dnsmasq::txt("_smtp._tls.example.test", "v=TLSRPTv1; rua=mailto:postmaster@example.test"),
    ])
}

/// The policy served on the https listener for `mta-sts.example.test`, through a client
/// that trusts `root` (and resolves the name to loopback).
fn policy(root: &Path, https: u16) -> Result<String, String> {
    let mut client = smtp_std::mta::web::client::Client::new(Some(root)).unwrap();
    client.port = Some(https);
    client.resolve = Some(Arc::new(|_| Ok(vec![[127, 0, 0, 1].into()])));
    let r = client.get(&format!("https://{STS}/.well-known/mta-sts.txt"))?;
    Ok(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
}

#[test]
fn tls_alpn_01_certificate_on_every_listener_and_renewed_without_restart() {
    if !have("pebble") || !Dnsmasq::available() || !have("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let dns = dns();
    let p = ports();
    let pebble = pebble(dir, &dns, p.http, p.https, 24);
    let config = setup(dir, &p, &pebble, "tls-alpn-01");
    let server = Program::start(dir, &["--config", config.to_str().unwrap()]);
    let root_pem = pebble.root();
    std::fs::write(dir.join("root.pem"), &root_pem).unwrap();
    let trust = roots(&root_pem);
    let t0 = Instant::now();
    wait_logged(&server, dir, "the ACME certificate on 465", || served(&trust, p.submissions, HOST, false).is_ok());
    eprintln!("certificate issued and served {:?} after start", t0.elapsed());
    let first = served(&trust, p.submissions, HOST, false).unwrap();
    // The same certificate on every listener, chaining to pebble's root.
    assert_eq!(served(&trust, p.smtp, HOST, true).unwrap(), first, "port 25 STARTTLS");
    assert_eq!(served(&trust, p.submission, HOST, true).unwrap(), first, "port 587 STARTTLS");
    assert_eq!(served(&trust, p.https, STS, false).unwrap(), first, "the https listener, mta-sts name");
    let text = policy(&dir.join("root.pem"), p.https).unwrap();
    assert!(
        text.starts_with("200 version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 604800"),
        "{text}"
    );
    // Private files.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("data/acme")), 0o700);
    for f in ["account.key", "cert.pem", "key.pem", "names"] {
        assert_eq!(mode(&dir.join("data/acme").join(f)), 0o600, "{f}");
    }
    // Renewal at two thirds of 24 s, into every listener, same process.
    let pid = server.pid();
    let old = serial(&first);
    let mut renewed = Vec::new();
    wait_until("a renewed certificate on 465", Duration::from_secs(40), || {
        renewed = served(&trust, p.submissions, HOST, false).unwrap_or_default();
        !renewed.is_empty() && renewed != first
    });
    assert_ne!(serial(&renewed), old, "a new serial");
    eprintln!("renewed: {old} -> {}", serial(&renewed));
    let now25 = served(&trust, p.smtp, HOST, true).unwrap();
    assert_ne!(now25, first, "port 25 presents the renewed one too");
    assert_eq!(server.pid(), pid);
    assert!(server.log_contains("ACME certificate issued"));
}

#[test]
fn an_unreachable_directory_is_named_and_retried_later() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = ports();
    let nowhere = Pebble {
        _child: ChildGuard(Command::new("true").spawn().unwrap()),
        dir_url: format!("https://127.0.0.1:{}/dir", free_port()),
        management: ([127, 0, 0, 1], 1).into(),
        ca: dir.join("ca.pem"),
    };
    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
    std::fs::write(&nowhere.ca, ca.cert.pem()).unwrap();
    let config = setup(dir, &p, &nowhere, "tls-alpn-01");
    let server = Program::start(dir, &["--config", config.to_str().unwrap()]);
    wait_until("the ACME error in the log", Duration::from_secs(20), || server.log_contains("ACME: no certificate"));
    let log = server.log.lock().unwrap().join("\n");
    let want = format!("ACME: no certificate from {0}: the ACME directory: GET {0}: connecting to", nowhere.dir_url);
    assert!(log.contains(&want) && log.contains("check [acme] directory"), "{log}");
    assert!(log.contains("retry_in_s=60"), "{log}");
    // Meanwhile the mail listeners run, on the stand-in certificate.
    let mut tcp = TcpStream::connect(("127.0.0.1", p.smtp)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(smtp_reply(&mut tcp).starts_with("220"));
}

#[test]
fn http_01_certificate_and_redirect() {
    if !have("pebble") || !Dnsmasq::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let dns = dns();
    let p = ports();
    let pebble = pebble(dir, &dns, p.http, p.https, 3600);
    let config = setup(dir, &p, &pebble, "http-01");
    let server = Program::start(dir, &["--config", config.to_str().unwrap()]);
    let trust = roots(&pebble.root());
    wait_logged(&server, dir, "the ACME certificate on 465", || served(&trust, p.submissions, HOST, false).is_ok());
    assert!(served(&trust, p.https, STS, false).is_ok());
    // Plain http: a redirect to https, and no challenge left behind.
    let mut tcp = TcpStream::connect(("127.0.0.1", p.http)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(format!("GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {STS}\r\n\r\n").as_bytes()).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 301"), "{answer}");
    assert!(answer.contains(&format!("Location: https://{STS}/.well-known/mta-sts.txt")), "{answer}");
    let mut tcp = TcpStream::connect(("127.0.0.1", p.http)).unwrap();
    tcp.write_all(b"GET /.well-known/acme-challenge/nothing HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    // `records` prints the _mta-sts record with the id of the policy served, and TLS-RPT.
    let bin = env!("CARGO_BIN_EXE_smtp-std");
    let records = run(
        Command::new(bin)
            .args(["records", "--domain", "example.test", "--host", HOST, "--ip", "127.0.0.1"])
            .args(["--mta-sts", "enforce"]),
        b"",
        Duration::from_secs(20),
    );
    assert!(
        records.stdout.contains(&format!("_mta-sts.example.test. 3600 IN TXT \"{}\"", our_policy().txt())),
        "{}",
        records.stdout
    );
    assert!(records.stdout.contains("mta-sts.example.test. 3600 IN CNAME mx.example.test."), "{}", records.stdout);
    assert!(
        records
            .stdout
            .contains("_smtp._tls.example.test. 3600 IN TXT \"v=TLSRPTv1; rua=mailto:postmaster@example.test\""),
        "{}",
        records.stdout
    );
    // `check` finds both records and fetches the policy over HTTPS (pebble's root trusted).
    let root = dir.join("root.pem");
    std::fs::write(&root, pebble.root()).unwrap();
    let https_port = p.https.to_string();
    let check = |extra: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.args(["check", "--domain", "example.test", "--dns", &dns.arg(), "--https-port", &https_port]).args(extra);
        run(&mut cmd, b"", Duration::from_secs(30)).stdout
    };
    let out = check(&["--ca", root.to_str().unwrap()]);
    let url = "https://mta-sts.example.test/.well-known/mta-sts.txt";
    let id = our_policy().id();
    assert!(out.contains(&format!("ok:      MTA-STS policy {url}: mode enforce, id {id}")), "{out}");
    assert!(out.contains("ok:      TLS-RPT \"v=TLSRPTv1; rua=mailto:postmaster@example.test\""), "{out}");
    // A reload changes the policy served (and so its id).
    let text = std::fs::read_to_string(&config).unwrap().replace("mta_sts = \"enforce\"", "mta_sts = \"testing\"");
    std::fs::write(&config, text).unwrap();
    let reload =
        run(Command::new(bin).args(["reload", "--config", config.to_str().unwrap()]), b"", Duration::from_secs(20));
    assert_eq!(reload.status, Some(0), "{} {}", reload.stdout, reload.stderr);
    let served = policy(&root, p.https).unwrap();
    assert!(served.contains("mode: testing"), "{served}");
    let out = check(&["--ca", root.to_str().unwrap()]);
    assert!(out.contains("warning: MTA-STS policy") && out.contains("mode testing"), "{out}");
    assert!(out.contains("the policy served now has id"), "the stale id is named: {out}");
    // Without trusting the CA: the certificate is named as the problem.
    let out = check(&[]);
    eprintln!("check without the CA:\n{out}");
    assert!(
        out.contains("error:   MTA-STS policy: GET https://mta-sts.example.test") && out.contains("certificate"),
        "{out}"
    );
    drop(server);
}
