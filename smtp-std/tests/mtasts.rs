//! MTA-STS outbound (RFC 8461) against real peers: dnsmasq serves `_mta-sts`, MX and host
//! records on loopback, a Python `http.server` over TLS serves the policies as
//! `mta-sts.<domain>` with a certificate of a test CA, and receiving servers on 127.0.0.2
//! (a certificate valid for the MX names) and 127.0.0.3 (a certificate for another name).
//! The sender trusts the test CA as `[outbound] mta_sts_ca` would. `enforce` + a matching MX
//! with a valid certificate → delivered over TLS; a certificate for another name → deferred
//! naming the policy; an MX the policy does not name → deferred; `testing` + a bad
//! certificate → delivered and the failure counted; a policy cached on disk is still used when
//! the policy server is gone, a new id refetches it, a failed refresh keeps it; REQUIRETLS
//! leaves over an enforce policy. Through `serve`: the reason in `queue list` and the log, and
//! TLS reports (RFC 8460) mailed to the `_smtp._tls` rua after a 2-second `[reports]
//! interval`, read by Python (`email`, `gzip`, `json`) with the right counts and result types.
#![cfg(feature = "mta")]

mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dnsmasq::Dnsmasq;
use smtp_std::client::Envelope;
use smtp_std::mta::auth::Dns;
use smtp_std::mta::deliver::{self, MxOptions, Spool, Status};
use smtp_std::mta::sts::{PolicyRef, Sts, StsOptions, TlsOutcomes};
use smtp_std::{Decision, Handler, Options, Running, Server, Session};

/// What the receivers got: (recipients, over TLS, the message).
type Got = Arc<Mutex<Vec<(Vec<String>, bool, Vec<u8>)>>>;

#[derive(Clone)]
struct Collect(Got, Vec<u8>);

impl Handler for Collect {
    fn data_chunk(&mut self, _: &Session, chunk: &[u8]) -> std::io::Result<()> {
        self.1.extend_from_slice(chunk);
        Ok(())
    }
    fn data_end(&mut self, s: &Session, _: u64) -> Decision {
        let message = std::mem::take(&mut self.1);
        self.0.lock().unwrap().push((s.envelope.rcpt_to.clone(), s.tls, message));
        Decision::Accept
    }
}

/// The outcomes deliver reports: (domain, policy type, host, failure).
#[derive(Debug, Default)]
struct Outcomes(Mutex<Vec<Seen>>);

/// (domain, policy type, host, failure).
type Seen = (String, String, String, Option<&'static str>);

impl TlsOutcomes for Outcomes {
    fn record(&self, domain: &str, policy: PolicyRef<'_>, host: &str, failure: Option<&'static str>) {
        let kind = match policy {
            PolicyRef::Sts(p) => format!("sts {}", p.policy.mode.as_str()),
            PolicyRef::Tlsa => "tlsa".into(),
            PolicyRef::NotFound => "no-policy-found".into(),
        };
        self.0.lock().unwrap().push((domain.into(), kind, host.into(), failure));
    }
}

/// A port free on 127.0.0.2 and 127.0.0.3 alike.
fn shared_port() -> u16 {
    loop {
        let p = dnsmasq::free_port();
        if (2..=3).all(|h| TcpListener::bind((Ipv4Addr::new(127, 0, 0, h), p)).is_ok()) {
            return p;
        }
    }
}

/// The policies served, by domain.
const POLICIES: &[(&str, &str)] = &[
    ("good.test", "enforce\nmx: mx.good.test\nmx: *.backup.test"),
    ("badcert.test", "enforce\nmx: mx.badcert.test"),
    ("notlisted.test", "enforce\nmx: mx.elsewhere.test"),
    ("testing.test", "testing\nmx: mx.testing.test"),
];

pub struct Peers {
    pub port: u16,
    pub https_port: u16,
    pub dns: Dnsmasq,
    pub got: Got,
    pub ca: std::path::PathBuf,
    pub https: Option<ChildGuard>,
    _servers: Vec<Running>,
    pub dir: tempfile::TempDir,
}

/// A certificate for `names` signed by the CA: (chain file, key file).
fn leaf(
    dir: &Path,
    tag: &str,
    names: &[&str],
    ca: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, ca, ca_key).unwrap();
    let (c, k) = (dir.join(format!("{tag}.pem")), dir.join(format!("{tag}-key.pem")));
    std::fs::write(&c, format!("{}{}", cert.pem(), ca.pem())).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// The HTTPS policy server: Python's http.server with ssl, answering by the Host field.
fn start_https(dir: &Path, port: u16, chain: &Path, key: &Path) -> ChildGuard {
    let policies: String = POLICIES
        .iter()
        .map(|(d, p)| format!("{d:?}: {:?},", format!("version: STSv1\nmode: {p}\nmax_age: 86400\n")))
        .collect();
    let script = format!(
        r#"
import http.server, ssl
P = {{{policies}}}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = self.headers.get("Host", "").split(":")[0]
        body = P.get(host[len("mta-sts."):]) if host.startswith("mta-sts.") else None
        if self.path != "/.well-known/mta-sts.txt" or body is None:
            self.send_response(404); self.end_headers(); return
        b = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
s = http.server.HTTPServer(("127.0.0.1", {port}), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain({chain:?}, {key:?})
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#,
        chain = chain.to_str().unwrap(),
        key = key.to_str().unwrap(),
    );
    let script_path = dir.join("https.py");
    std::fs::write(&script_path, script).unwrap();
    let child = Command::new("python3")
        .arg(&script_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("https.log")).unwrap())
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    wait_until("the https policy server", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    guard
}

pub fn skip() -> bool {
    !(Dnsmasq::available() && have("python3")) && std::env::var_os("CI").is_none()
}

pub fn peers(extra_dns: &[String]) -> Peers {
    let dir = tempfile::tempdir().unwrap();
    let port = shared_port();
    let https_port = dnsmasq::free_port();
    let got: Got = Default::default();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, "MTA-STS test CA");
    let ca = p.self_signed(&ca_key).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let (good, good_key) =
        leaf(dir.path(), "mx", &["mx.good.test", "mx2.backup.test", "mx.notlisted.test"], &ca, &ca_key);
    let (bad, bad_key) = leaf(dir.path(), "other", &["other.test"], &ca, &ca_key);
    let sts_names: Vec<String> = POLICIES.iter().map(|(d, _)| format!("mta-sts.{d}")).collect();
    let sts_refs: Vec<&str> = sts_names.iter().map(String::as_str).collect();
    let (web, web_key) = leaf(dir.path(), "web", &sts_refs, &ca, &ca_key);
    let mut servers = Vec::new();
    let mut options =
        Options::new("mx.good.test").tls(smtp_std::tls::server_config_from_files(&good, &good_key).unwrap());
    options.config_mut().capabilities.requiretls = true;
    let mut s = Server::new(options, Collect(got.clone(), Vec::new()));
    s.listen(("127.0.0.2", port)).unwrap();
    servers.push(s.spawn());
    let mut s = Server::new(
        Options::new("mx.badcert.test").tls(smtp_std::tls::server_config_from_files(&bad, &bad_key).unwrap()),
        Collect(got.clone(), Vec::new()),
    );
    s.listen(("127.0.0.3", port)).unwrap();
    servers.push(s.spawn());
    let mut lines = Vec::new();
    for (i, (d, _)) in POLICIES.iter().enumerate() {
        lines.push(format!("txt-record=_mta-sts.{d},\"v=STSv1; id={i}a\""));
        lines.push(format!("host-record=mta-sts.{d},127.0.0.1"));
    }
    for (d, mx, ip) in [
        ("good.test", "mx.good.test", 2),
        ("badcert.test", "mx.badcert.test", 3),
        ("notlisted.test", "mx.notlisted.test", 2),
        ("testing.test", "mx.testing.test", 3),
        ("nopolicy.test", "mx.nopolicy.test", 3),
        ("rua.test", "mx.rua.test", 2),
        ("nocert.test", "mx.nocert.test", 3),
    ] {
        lines.push(format!("mx-host={d},{mx},10"));
        lines.push(format!("host-record={mx},127.0.0.{ip}"));
    }
    // A record, but the policy host's certificate does not name it.
    lines.push("txt-record=_mta-sts.nocert.test,\"v=STSv1; id=1\"".to_owned());
    lines.push("host-record=mta-sts.nocert.test,127.0.0.1".to_owned());
    lines.extend(extra_dns.iter().cloned());
    let dns = Dnsmasq::start(&lines);
    let https = Some(start_https(dir.path(), https_port, &web, &web_key));
    Peers { port, https_port, dns, got, ca: ca_file, https, _servers: servers, dir }
}

fn sts(p: &Peers, cache: &Path) -> Arc<Sts> {
    let dns = Dns::with_timeout(Some(p.dns.addr), Duration::from_secs(3), 2).unwrap();
    let options = StsOptions { ca: Some(p.ca.clone()), https_port: Some(p.https_port) };
    Arc::new(Sts::new(dns, cache, &options).unwrap())
}

/// Delivers one message to `to`: the recipient's status and text.
fn send(p: &Peers, sts: &Arc<Sts>, outcomes: &Arc<Outcomes>, to: &str, requiretls: bool) -> (Status, String) {
    let dns = Dns::with_timeout(Some(p.dns.addr), Duration::from_secs(3), 2).unwrap();
    let mut o = MxOptions::new("client.test");
    o.port = p.port;
    o.sts = Some(sts.clone());
    o.tls_outcomes = Some(outcomes.clone());
    o.session = o.session.timeout(Duration::from_secs(10));
    let mut env = Envelope::new("me@client.test", [to]);
    env.requiretls = requiretls;
    let mut spool = Spool::from_bytes(b"Subject: sts\r\n\r\nhello\r\n".to_vec());
    let r = deliver::deliver(&dns, &o, &env, &mut spool).pop().unwrap();
    (r.status, r.to_string())
}

fn got_for(p: &Peers, to: &str) -> Vec<bool> {
    p.got.lock().unwrap().iter().filter(|(r, ..)| r.iter().any(|x| x == to)).map(|(_, tls, _)| *tls).collect()
}

#[test]
fn enforce_testing_and_the_cache() {
    if skip() {
        return;
    }
    let mut p = peers(&[]);
    let cache = p.dir.path().join("mta-sts");
    let s = sts(&p, &cache);
    let outcomes = Arc::new(Outcomes::default());

    let (st, e) = send(&p, &s, &outcomes, "a@good.test", false);
    assert_eq!(st, Status::Accepted, "{e}");
    assert_eq!(got_for(&p, "a@good.test"), [true], "over TLS");

    let (st, e) = send(&p, &s, &outcomes, "b@badcert.test", false);
    assert_eq!(st, Status::Deferred, "{e}");
    assert!(e.contains("MTA-STS enforce policy of badcert.test") && e.contains("mx.badcert.test"), "{e}");
    assert!(got_for(&p, "b@badcert.test").is_empty());

    let (st, e) = send(&p, &s, &outcomes, "c@notlisted.test", false);
    assert_eq!(st, Status::Deferred, "{e}");
    assert!(e.contains("MTA-STS enforce policy of notlisted.test") && e.contains("not one it names"), "{e}");
    assert!(got_for(&p, "c@notlisted.test").is_empty());

    let (st, e) = send(&p, &s, &outcomes, "d@testing.test", false);
    assert_eq!(st, Status::Accepted, "testing delivers anyway: {e}");
    assert_eq!(got_for(&p, "d@testing.test").len(), 1);

    // No policy: opportunistic, a bad certificate does not matter, nothing is counted.
    let (st, e) = send(&p, &s, &outcomes, "e@nopolicy.test", false);
    assert_eq!(st, Status::Accepted, "{e}");

    // REQUIRETLS leaves over an enforce policy's validated TLS, not without a policy.
    let (st, e) = send(&p, &s, &outcomes, "f@good.test", true);
    assert_eq!(st, Status::Accepted, "{e}");
    let (st, e) = send(&p, &s, &outcomes, "g@nopolicy.test", true);
    assert_eq!(st, Status::Failed, "{e}");

    // A policy that cannot be fetched (the policy host's certificate is not valid for it):
    // delivered as without a policy, and counted.
    let (st, e) = send(&p, &s, &outcomes, "j@nocert.test", false);
    assert_eq!(st, Status::Accepted, "{e}");

    let seen = outcomes.0.lock().unwrap().clone();
    let has = |d: &str, kind: &str, f: Option<&str>| seen.iter().any(|(x, k, _, y)| x == d && k == kind && *y == f);
    assert!(has("good.test", "sts enforce", None), "{seen:?}");
    assert!(has("badcert.test", "sts enforce", Some("certificate-host-mismatch")), "{seen:?}");
    assert!(has("testing.test", "sts testing", Some("certificate-host-mismatch")), "{seen:?}");
    assert!(has("notlisted.test", "sts enforce", Some("validation-failure")), "{seen:?}");
    assert!(!seen.iter().any(|(d, ..)| d == "nopolicy.test"), "{seen:?}");
    assert!(has("nocert.test", "no-policy-found", Some("sts-webpki-invalid")), "{seen:?}");

    // The cache is private and durable: with the policy server gone, a new process (a new
    // Sts on the same directory) still enforces the policies it fetched.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(cache.join("notlisted.test")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // A new id in DNS than the cached one: fetched again (here a cached policy altered to
    // `testing` with an old id is replaced by the served `enforce`).
    let good = cache.join("good.test");
    let text = std::fs::read_to_string(&good).unwrap();
    assert!(text.contains("id: 0a\n") && text.contains("mode: enforce"), "{text}");
    std::fs::write(&good, text.replace("id: 0a", "id: old").replace("mode: enforce", "mode: testing")).unwrap();
    send(&p, &sts(&p, &cache), &outcomes, "k@good.test", false);
    let text = std::fs::read_to_string(&good).unwrap();
    assert!(text.contains("id: 0a\n") && text.contains("mode: enforce"), "refetched: {text}");

    // A refresh that fails keeps the cached policy (RFC 8461 §5.1): the policy server gone
    // and the cached id old, notlisted.test is still enforced.
    let nl = cache.join("notlisted.test");
    let text = std::fs::read_to_string(&nl).unwrap();
    assert!(text.contains("id: 2a\n"), "{text}");
    std::fs::write(&nl, text.replace("id: 2a", "id: old")).unwrap();
    drop(p.https.take());
    let s2 = sts(&p, &cache);
    let (st, e) = send(&p, &s2, &outcomes, "h@notlisted.test", false);
    assert_eq!(st, Status::Deferred, "{e}");
    assert!(e.contains("MTA-STS enforce policy of notlisted.test"), "{e}");
    let (st, e) = send(&p, &s2, &outcomes, "i@good.test", false);
    assert_eq!(st, Status::Accepted, "{e}");
}

/// The TLS reports `tls@rua.test` got, as Python reads them: per domain, successes, failures
/// and result types, summed over reports.
fn reports_got(p: &Peers) -> String {
    let dir = p.dir.path().join("got");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (r, _, m)) in p.got.lock().unwrap().iter().enumerate() {
        if r.iter().any(|x| x == "tls@rua.test") {
            std::fs::write(dir.join(format!("{i}.eml")), m).unwrap();
        }
    }
    let script = format!(
        r#"
import email, glob, gzip, json
out = {{}}
for f in sorted(glob.glob("{dir}/*.eml")):
    m = email.message_from_bytes(open(f, "rb").read())
    assert m.get_content_type() == "multipart/report" and m.get_param("report-type") == "tlsrpt", m.get_content_type()
    assert m["TLS-Report-Domain"] and m["TLS-Report-Submitter"] == "mx.client.test"
    assert m["Subject"].startswith("Report Domain: " + m["TLS-Report-Domain"] + " Submitter: mx.client.test Report-ID: <")
    for part in m.walk():
        if part.get_content_type() == "application/tlsrpt+gzip":
            r = json.loads(gzip.decompress(part.get_payload(decode=True)))
            assert r["organization-name"] == "mx.client.test" and r["date-range"]["start-datetime"].endswith("Z")
            for pol in r["policies"]:
                d = pol["policy"]["policy-domain"]
                assert d == m["TLS-Report-Domain"]
                o = out.setdefault(d, [pol["policy"]["policy-type"], 0, 0, []])
                o[1] += pol["summary"]["total-successful-session-count"]
                o[2] += pol["summary"]["total-failure-session-count"]
                for fd in pol.get("failure-details", []):
                    o[3].append(fd["result-type"] + "@" + fd["receiving-mx-hostname"])
for d in sorted(out):
    print(d, out[d][0], out[d][1], out[d][2], ",".join(sorted(set(out[d][3]))))
"#,
        dir = dir.display()
    );
    let o = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn serve_enforces_lists_the_reason_and_sends_tls_reports() {
    if skip() {
        return;
    }
    let txt = |d: &str| format!("txt-record=_smtp._tls.{d},\"v=TLSRPTv1; rua=mailto:tls@rua.test\"");
    let p = peers(&[txt("good.test"), txt("badcert.test"), txt("testing.test")]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), passwd_text("alice@client.test:secret\n")).unwrap();
    let smtp = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = dir.path().join("smtp-std.toml");
    std::fs::write(
        &config,
        format!(
            r#"hostname = "mx.client.test"
data_dir = "data"
accounts = "passwd"
relay_networks = ["127.0.0.1/32"]
mail_auth = false
[listen]
smtp = ["{smtp}"]
[dns]
server = "{resolver}"
timeout = "2s"
[outbound]
port = {port}
timeout = "10s"
mta_sts_ca = {ca:?}
mta_sts_https_port = {https}
[queue]
retry = ["1h"]
scan_interval = "200ms"
lifetime = "2h"
[reports]
interval = "2s"
[[domain]]
name = "client.test"
[domain.aliases]
postmaster = "alice"
"#,
            resolver = p.dns.addr,
            port = p.port,
            ca = p.ca,
            https = p.https_port,
        ),
    )
    .unwrap();
    drop(TcpListener::bind(smtp).ok());
    let program = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let addr: SocketAddr = smtp;
    wait_until("smtp listening", Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok());
    for to in ["a@good.test", "b@badcert.test", "d@testing.test"] {
        let mut c = Client::connect(addr);
        assert_eq!(c.code(), 220);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<alice@client.test>").starts_with("250"));
        assert!(c.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let r = c.cmd("From: alice@client.test\r\nSubject: sts\r\n\r\nhi\r\n.");
        assert!(r.starts_with("250"), "{r}");
    }
    wait_until("a@good.test delivered", Duration::from_secs(30), || got_for(&p, "a@good.test") == [true]);
    wait_until("d@testing.test delivered", Duration::from_secs(30), || got_for(&p, "d@testing.test").len() == 1);
    let list = || {
        let o = Command::new(env!("CARGO_BIN_EXE_smtp-std"))
            .args(["queue", "list", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    wait_until("the MTA-STS failure in queue list", Duration::from_secs(30), || list().contains("MTA-STS"));
    let text = list();
    assert!(
        text.contains("b@badcert.test pending") && text.contains("MTA-STS enforce policy of badcert.test"),
        "{text}"
    );
    assert!(program.log_contains("MTA-STS enforce policy of badcert.test"), "the log names it too");
    assert!(got_for(&p, "b@badcert.test").is_empty());
    let expected = "badcert.test sts 0 1 certificate-host-mismatch@mx.badcert.test\n\
                    good.test sts 1 0 \n\
                    testing.test sts 0 1 certificate-host-mismatch@mx.testing.test\n";
    let mut last = String::new();
    wait_until("the TLS reports", Duration::from_secs(30), || {
        last = reports_got(&p);
        last == expected
    });
    assert_eq!(last, expected);
    assert!(std::fs::metadata(dir.path().join("data/mta-sts/good.test")).is_ok(), "the policy cached");
}
