//! Python aiosmtpd as a real peer (plain, or STARTTLS required with AUTH alice / s3cret),
//! and a test CA with a certificate for `localhost`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::common::{have, wait_until, ChildGuard};

pub use super::common::free_port;

/// Waits (bounded) until something accepts connections on `port`.
pub fn wait_for_port(port: u16) {
    wait_until("the peer to listen", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).is_ok());
}

/// A test CA and a certificate it signed for `localhost`, as PEM files in `dir`.
pub struct TestCa {
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

pub fn test_ca(dir: &Path) -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "smtp-std test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let t = TestCa { ca_pem: dir.join("ca.pem"), cert_pem: dir.join("leaf.pem"), key_pem: dir.join("leaf-key.pem") };
    std::fs::write(&t.ca_pem, ca.pem()).unwrap();
    std::fs::write(&t.cert_pem, leaf.pem()).unwrap();
    std::fs::write(&t.key_pem, leaf_key.serialize_pem()).unwrap();
    t
}

const AIOSMTPD: &str = r#"
import asyncio, os, ssl, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, out, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

class Store:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        Store.n += 1
        base = os.path.join(out, "msg%d" % Store.n)
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        # The .env appears whole (written aside, then renamed) and last: a test that sees it
        # may read both files.
        with open(base + ".env.tmp", "w") as f:
            f.write("from=%s\nto=%s\ntls=%s\nauth=%s\n" % (envelope.mail_from, ",".join(envelope.rcpt_tos),
                    session.ssl is not None, session.auth_data.login.decode() if session.auth_data else ""))
        os.replace(base + ".env.tmp", base + ".env")
        return "250 2.0.0 stored"

def auth(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"alice" and data.password == b"s3cret"
    # handled=False: aiosmtpd itself answers 535 on failure.
    return AuthResult(success=ok, handled=False, auth_data=data)

kw = {}
if cert:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    kw = dict(tls_context=ctx, require_starttls=True, authenticator=auth, auth_require_tls=True)
c = Controller(Store(), hostname="127.0.0.1", port=port, server_hostname="aiosmtpd.test", **kw)
c.start()
print("ready", flush=True)
threading.Event().wait()
"#;

pub fn have_aiosmtpd() -> bool {
    if !have("python3") {
        return false;
    }
    let ok = Command::new("python3").args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "aiosmtpd is missing on CI");
        eprintln!("skipped: aiosmtpd is not installed (pip install aiosmtpd)");
    }
    ok
}

/// aiosmtpd on a loopback port storing messages in `dir`; with a certificate: STARTTLS
/// required and AUTH (alice / s3cret) only under TLS.
pub fn aiosmtpd(dir: &Path, tls: Option<&TestCa>) -> (ChildGuard, u16) {
    let port = free_port();
    let (cert, key) = tls.map_or((String::new(), String::new()), |t| {
        (t.cert_pem.to_str().unwrap().into(), t.key_pem.to_str().unwrap().into())
    });
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(AIOSMTPD).arg(port.to_string()).arg(dir).arg(cert).arg(key);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = ChildGuard(cmd.spawn().expect("start python3"));
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).expect("aiosmtpd did not start");
    assert_eq!(line.trim(), "ready");
    wait_for_port(port);
    (child, port)
}
