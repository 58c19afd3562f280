//! DANE outbound (RFC 7672) against real peers: a zone signed with bind9's tools, served by
//! knotd, behind a validating unbound anchored to it (all on loopback, see
//! `common/dnssec.rs`), and receiving servers on 127.0.0.2 to 127.0.0.7. A matching DANE-EE
//! record → delivered over TLS; a mismatching one → deferred naming host and records; a TLSA
//! answer altered after signing (bogus) → deferred; a DANE-TA record → delivered after a chain
//! and name check; TLSA but no STARTTLS → deferred; only PKIX records → TLS without a
//! certificate check; the implicit MX of a signed domain → its TLSA apply; an unsigned domain →
//! delivered opportunistically; REQUIRETLS and `TLS-Required: No`. With the AD bit of unbound
//! (`trust-ad`) and with hickory's own validation (`validate`), and through `serve`'s queue,
//! where `queue list` names the failure.
#![cfg(feature = "mta")]

mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;
#[path = "common/dnssec.rs"]
mod dnssec;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dnssec::{SignedDns, Zone};
use smtp_std::client::Envelope;
use smtp_std::mta::auth::Dns;
use smtp_std::mta::dane::{Dane, DnssecMode, Tlsa};
use smtp_std::mta::deliver::{self, MxOptions, Spool, Status};
use smtp_std::proto::parse::params::MailParams;
use smtp_std::proto::parse::path::ReversePath;
use smtp_std::{Decision, Handler, Options, Running, Server, Session};

/// What the receivers got: (recipients, over TLS, with REQUIRETLS).
type Got = Arc<Mutex<Vec<(Vec<String>, bool, bool)>>>;

#[derive(Clone)]
struct Collect(Got, bool);

impl Handler for Collect {
    fn mail_from(&mut self, _: &Session, _: &ReversePath<'_>, params: &MailParams<'_>) -> Decision {
        self.1 = params.requiretls;
        Decision::Accept
    }
    fn data_end(&mut self, s: &Session, _: u64) -> Decision {
        self.0.lock().unwrap().push((s.envelope.rcpt_to.clone(), s.tls, self.1));
        Decision::Accept
    }
}

/// A port free on 127.0.0.2 to 127.0.0.7 alike.
fn shared_port() -> u16 {
    loop {
        let p = dnsmasq::free_port();
        if (2..=7).all(|h| TcpListener::bind((Ipv4Addr::new(127, 0, 0, h), p)).is_ok()) {
            return p;
        }
    }
}

struct Peers {
    dns: SignedDns,
    port: u16,
    got: Got,
    _servers: Vec<Running>,
    _dir: tempfile::TempDir,
}

fn skip() -> bool {
    if !SignedDns::available() {
        return true;
    }
    false
}

/// The receivers and the signed zone `dane.test` (with its hosts) and unsigned `plain.test`.
fn peers() -> Peers {
    let dir = tempfile::tempdir().unwrap();
    let port = shared_port();
    let got: Got = Default::default();
    // A self-signed certificate (DANE-EE ignores names and dates) on .2 to .4 and .7.
    let c = cert(dir.path());
    let mut servers = Vec::new();
    // It offers REQUIRETLS (under TLS); the DANE-TA host below does not.
    let mut options =
        Options::new("mx.dane.test").tls(smtp_std::tls::server_config_from_files(&c.cert_pem, &c.key_pem).unwrap());
    options.config_mut().capabilities.requiretls = true;
    let mut tls_server = Server::new(options, Collect(got.clone(), false));
    for h in [2, 3, 4] {
        tls_server.listen((Ipv4Addr::new(127, 0, 0, h), port)).unwrap();
    }
    servers.push(tls_server.spawn());
    // No TLS at all on .5 (plain.test) and .7 (notls.dane.test).
    let mut plain = Server::new(Options::new("mx.plain.test"), Collect(got.clone(), false));
    plain.listen(("127.0.0.5", port)).unwrap();
    plain.listen(("127.0.0.7", port)).unwrap();
    servers.push(plain.spawn());
    // A certificate for mxta.dane.test from a CA (DANE-TA) on .6, the chain with the CA.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, "DANE test TA");
    let ca = p.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["mxta.dane.test".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let chain = dir.path().join("ta-chain.pem");
    let key = dir.path().join("ta-key.pem");
    std::fs::write(&chain, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let mut ta_server = Server::new(
        Options::new("mxta.dane.test").tls(smtp_std::tls::server_config_from_files(&chain, &key).unwrap()),
        Collect(got.clone(), false),
    );
    ta_server.listen(("127.0.0.6", port)).unwrap();
    servers.push(ta_server.spawn());

    let ee = Tlsa::of_certificate(3, 1, 1, &c.der).unwrap().data_hex();
    let ta = Tlsa::of_certificate(2, 0, 1, ca.der()).unwrap().data_hex();
    let wrong = "ab".repeat(32);
    let bogus = "11".repeat(32);
    let host = |name: &str, mx: &str, ip: u8, tlsa: Option<&str>| {
        let mut v = vec![format!("{name}. IN MX 10 {mx}."), format!("{mx}. IN A 127.0.0.{ip}")];
        if let Some(t) = tlsa {
            v.push(format!("_{port}._tcp.{mx}. IN TLSA {t}"));
        }
        v
    };
    let mut records = Vec::new();
    records.extend(host("dane.test", "mx.dane.test", 2, Some(&format!("3 1 1 {ee}"))));
    records.extend(host("bad.dane.test", "mxbad.dane.test", 3, Some(&format!("3 1 1 {wrong}"))));
    records.extend(host("bogus.dane.test", "mxbogus.dane.test", 4, Some(&format!("3 1 1 {bogus}"))));
    records.extend(host("ta.dane.test", "mxta.dane.test", 6, Some(&format!("2 0 1 {ta}"))));
    records.extend(host("notls.dane.test", "mxnotls.dane.test", 7, Some(&format!("3 1 1 {ee}"))));
    records.extend(host("nodane.dane.test", "mxnodane.dane.test", 5, None));
    // Only PKIX records (unusable for SMTP): TLS mandatory, any certificate.
    records.extend(host("pkix.dane.test", "mxpkix.dane.test", 3, Some(&format!("1 1 1 {wrong}"))));
    records.extend(host("pkixplain.dane.test", "mxpkixplain.dane.test", 5, Some(&format!("0 0 1 {wrong}"))));
    // No MX: the domain is its own (implicit) MX host, and its TLSA records apply.
    records.push("implicit.dane.test. IN A 127.0.0.3".to_owned());
    records.push(format!("_{port}._tcp.implicit.dane.test. IN TLSA 3 1 1 {wrong}"));
    let signed = Zone { name: "dane.test", records };
    let plain = Zone { name: "plain.test", records: host("plain.test", "mx.plain.test", 5, None) };
    // The bogus TLSA data changed after signing: its signature no longer verifies.
    let dns =
        SignedDns::start(
            &signed,
            |text| {
                text.lines()
                    .map(|l| {
                        if l.contains("IN TLSA") && l.contains("1111") {
                            l.replace("1111", "2222")
                        } else {
                            l.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            },
            &[plain],
        );
    Peers { dns, port, got, _servers: servers, _dir: dir }
}

/// Delivers one message to `to` with `dane`: the recipient's status and error.
fn send(p: &Peers, dane: Option<Arc<Dane>>, to: &str) -> (Status, String) {
    let (s, e, _) = send_with(p, dane, to, false);
    (s, e)
}

/// [`send`] with REQUIRETLS or not; also the enhanced status code of a failure.
fn send_with(
    p: &Peers,
    dane: Option<Arc<Dane>>,
    to: &str,
    requiretls: bool,
) -> (Status, String, Option<(u8, u16, u16)>) {
    let dns = Dns::with_timeout(Some(p.dns.resolver), Duration::from_secs(3), 2).unwrap();
    let mut o = MxOptions::new("client.test");
    o.port = p.port;
    o.dane = dane;
    o.session = o.session.timeout(Duration::from_secs(10));
    let mut env = Envelope::new("me@client.test", [to]);
    env.requiretls = requiretls;
    let mut spool = Spool::from_bytes(b"Subject: dane\r\n\r\nhello\r\n".to_vec());
    let r = deliver::deliver(&dns, &o, &env, &mut spool).pop().unwrap();
    (r.status, r.to_string(), r.enhanced)
}

/// For each message `to` got: whether it came over TLS.
fn got_for(p: &Peers, to: &str) -> Vec<bool> {
    p.got.lock().unwrap().iter().filter(|(r, _, _)| r.iter().any(|x| x == to)).map(|(_, tls, _)| *tls).collect()
}

/// For each message `to` got: whether MAIL carried REQUIRETLS.
fn requiretls_for(p: &Peers, to: &str) -> Vec<bool> {
    p.got.lock().unwrap().iter().filter(|(r, _, _)| r.iter().any(|x| x == to)).map(|(_, _, rt)| *rt).collect()
}

/// The outcomes that the same with either validation.
fn the_matrix(p: &Peers, dane: Arc<Dane>) {
    let (s, e) = send(p, Some(dane.clone()), "a@dane.test");
    assert_eq!(s, Status::Accepted, "{e}");
    assert_eq!(got_for(p, "a@dane.test"), [true], "over TLS");

    let (s, e) = send(p, Some(dane.clone()), "b@bad.dane.test");
    assert_eq!(s, Status::Deferred, "{e}");
    assert!(e.contains("DANE: the certificate of mxbad.dane.test matches none of its TLSA records (3 1 1 abab"), "{e}");
    assert!(got_for(p, "b@bad.dane.test").is_empty());
    // Without DANE the same host takes it (opportunistic TLS accepts any certificate).
    let (s, e) = send(p, None, "b2@bad.dane.test");
    assert_eq!(s, Status::Accepted, "{e}");

    let (s, e) = send(p, Some(dane.clone()), "c@bogus.dane.test");
    assert_eq!(s, Status::Deferred, "{e}");
    assert!(e.contains(&format!("DANE: the TLSA records of _{}._tcp.mxbogus.dane.test", p.port)), "{e}");
    assert!(got_for(p, "c@bogus.dane.test").is_empty());

    let (s, e) = send(p, Some(dane.clone()), "d@ta.dane.test");
    assert_eq!(s, Status::Accepted, "{e}");
    assert_eq!(got_for(p, "d@ta.dane.test"), [true]);

    let (s, e) = send(p, Some(dane.clone()), "e@notls.dane.test");
    assert_eq!(s, Status::Deferred, "{e}");
    assert!(e.contains("DANE: mxnotls.dane.test [127.0.0.7] has TLSA records but does not offer STARTTLS"), "{e}");

    let (s, e) = send(p, Some(dane.clone()), "j@pkix.dane.test");
    assert_eq!(s, Status::Accepted, "{e}");
    assert_eq!(got_for(p, "j@pkix.dane.test"), [true]);
    let (s, e) = send(p, Some(dane.clone()), "k@pkixplain.dane.test");
    assert_eq!(s, Status::Deferred, "{e}");
    assert!(e.contains("has TLSA records but does not offer STARTTLS"), "{e}");

    let (s, e) = send(p, Some(dane.clone()), "i@implicit.dane.test");
    assert_eq!(s, Status::Deferred, "{e}");
    assert!(e.contains("DANE: the certificate of implicit.dane.test matches none"), "{e}");

    // A signed domain whose MX host has no TLSA (a secure denial): opportunistic.
    let (s, e) = send(p, Some(dane.clone()), "f@nodane.dane.test");
    assert_eq!(s, Status::Accepted, "{e}");

    // REQUIRETLS: out only by DANE to a host that offers it, and passed on; else 5.7.30.
    let (s, e, _) = send_with(p, Some(dane.clone()), "r1@dane.test", true);
    assert_eq!(s, Status::Accepted, "{e}");
    assert_eq!(requiretls_for(p, "r1@dane.test"), [true], "the parameter is passed on");
    let (s, e, code) = send_with(p, Some(dane.clone()), "r2@ta.dane.test", true);
    assert_eq!((s, code), (Status::Failed, Some((5, 7, 30))), "{e}");
    assert!(e.contains("REQUIRETLS: mxta.dane.test [127.0.0.6]") && e.contains("does not offer REQUIRETLS"), "{e}");
    let (s, e, code) = send_with(p, Some(dane.clone()), "r3@nodane.dane.test", true);
    assert_eq!((s, code), (Status::Failed, Some((5, 7, 30))), "{e}");
    assert!(e.contains("REQUIRETLS: mxnodane.dane.test has no usable TLSA records"), "{e}");
    let (s, e, code) = send_with(p, None, "r4@dane.test", true);
    assert_eq!((s, code), (Status::Failed, Some((5, 7, 30))), "{e}");
    assert!(e.contains("REQUIRETLS: no validated TLS possible to dane.test (DANE is off here"), "{e}");
    assert!(requiretls_for(p, "r4@dane.test").is_empty());
}

#[test]
fn dane_with_the_resolvers_ad_bit() {
    if skip() {
        return;
    }
    let p = peers();
    let dane =
        Arc::new(Dane::new(DnssecMode::TrustAd, Some(p.dns.resolver), Duration::from_secs(3), None).unwrap().unwrap());
    let (secure, text) = dane.probe("dane.test");
    assert!(secure, "{text}");
    let (secure, text) = dane.probe("plain.test");
    assert!(!secure && text.contains("does not validate"), "{text}");
    // The authoritative server sets no AD bit: nothing is secure through it.
    let direct =
        Dane::new(DnssecMode::TrustAd, Some(p.dns.authoritative), Duration::from_secs(3), None).unwrap().unwrap();
    assert!(!direct.probe("dane.test").0);
    // `check` says whether the resolver validates.
    let check = |dns: SocketAddr, mode: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_smtp-std"))
            .args(["check", "--domain", "dane.test", "--dnssec-probe", "dane.test", "--dnssec", mode, "--dns"])
            .arg(dns.to_string())
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let out = check(p.dns.resolver, "trust-ad");
    assert!(out.contains("ok:      DNSSEC: the answer for dane.test is validated by the resolver's AD bit"), "{out}");
    let out = check(p.dns.authoritative, "trust-ad");
    assert!(out.contains("warning: DNSSEC: the answer for dane.test is not validated"), "{out}");
    assert!(!check(p.dns.resolver, "off").contains("DNSSEC"));
    the_matrix(&p, dane.clone());
    // An unsigned domain: delivered opportunistically (no TLS offered there at all).
    let (s, e) = send(&p, Some(dane.clone()), "g@plain.test");
    assert_eq!(s, Status::Accepted, "{e}");
    assert_eq!(got_for(&p, "g@plain.test"), [false]);
    let (s, e, code) = send_with(&p, Some(dane), "h@plain.test", true);
    assert_eq!((s, code), (Status::Failed, Some((5, 7, 30))), "{e}");
    assert!(
        e.contains("REQUIRETLS: no validated TLS possible to plain.test (its MX records are not DNSSEC-signed"),
        "{e}"
    );
}

#[test]
fn dane_with_hickorys_validation() {
    if skip() {
        return;
    }
    let p = peers();
    let dane = Arc::new(
        Dane::new(DnssecMode::Validate, Some(p.dns.resolver), Duration::from_secs(3), Some(&p.dns.anchor))
            .unwrap()
            .unwrap(),
    );
    let (secure, text) = dane.probe("dane.test");
    assert!(secure, "{text}");
    the_matrix(&p, dane.clone());
    // Here the only trust anchor is dane.test's (no root): hickory cannot prove plain.test
    // unsigned, so its MX answer fails validation and the attempt waits; never treated as
    // insecure, which an attacker could otherwise arrange. (With the root's keys, the default,
    // an unsigned delegation is proven insecure and delivery is opportunistic.)
    let (s, e) = send(&p, Some(dane), "g@plain.test");
    assert_eq!(s, Status::Deferred, "{e}");
    assert!(e.contains("DANE: the MX records of plain.test cannot be validated"), "{e}");
}

#[test]
fn serve_defers_a_mismatch_and_queue_list_says_why() {
    if skip() {
        return;
    }
    let p = peers();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), passwd_text("alice@client.test:secret\n")).unwrap();
    let tls = cert(dir.path());
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
[tls]
cert = {cert:?}
key = {key:?}
[dns]
server = "{resolver}"
timeout = "2s"
dnssec = "trust-ad"
[outbound]
port = {port}
timeout = "10s"
[queue]
retry = ["1h"]
scan_interval = "200ms"
lifetime = "2h"
[[domain]]
name = "client.test"
[domain.aliases]
postmaster = "alice"
"#,
            resolver = p.dns.resolver,
            port = p.port,
            cert = tls.cert_pem,
            key = tls.key_pem,
        ),
    )
    .unwrap();
    drop(TcpListener::bind(smtp).ok());
    let program = Program::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let addr: SocketAddr = smtp;
    wait_until("smtp listening", Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok());
    // The third asks with `TLS-Required: No` (RFC 8689) that DANE not hold it back.
    for (to, field) in [("x@dane.test", ""), ("y@bad.dane.test", ""), ("v@bad.dane.test", "TLS-Required: No\r\n")] {
        let mut c = Client::connect(addr);
        assert_eq!(c.code(), 220);
        assert!(c.cmd("EHLO client.test").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<alice@client.test>").starts_with("250"));
        assert!(c.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let r = c.cmd(&format!("From: alice@client.test\r\n{field}Subject: dane\r\n\r\nhi\r\n."));
        assert!(r.starts_with("250"), "{r}");
    }
    wait_until("x@dane.test delivered", Duration::from_secs(30), || got_for(&p, "x@dane.test") == [true]);
    wait_until("v@bad.dane.test delivered", Duration::from_secs(30), || got_for(&p, "v@bad.dane.test") == [true]);
    let list = || {
        let o = Command::new(env!("CARGO_BIN_EXE_smtp-std"))
            .args(["queue", "list", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    wait_until("the DANE failure in queue list", Duration::from_secs(30), || list().contains("DANE:"));
    let text = list();
    assert!(
        text.contains("y@bad.dane.test pending  last: ")
            && text.contains("DANE: the certificate of mxbad.dane.test matches none of its TLSA records"),
        "{text}"
    );
    assert!(program.log_contains("DANE: the certificate of mxbad.dane.test"), "the log names it too");
    assert!(got_for(&p, "y@bad.dane.test").is_empty());

    // REQUIRETLS: offered only after STARTTLS, refused before it; a message carrying it goes
    // out by DANE with the parameter passed on, or bounces with 5.7.30 (headers only).
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {port})
s.ehlo("client.test")
out = [s.has_extn("requiretls")]
out.append(s.mail("alice@client.test", ["REQUIRETLS"])[0])
s.rset()
s.starttls(context=ctx)
s.ehlo("client.test")
out.append(s.has_extn("requiretls"))
for to in ["z@dane.test", "w@plain.test"]:
    s.sendmail("alice@client.test", [to], "From: alice@client.test\r\nSubject: secret\r\n\r\nbody line\r\n", mail_options=["REQUIRETLS"])
s.quit()
print(out)
"#,
        port = smtp.port()
    );
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "smtplib: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[False, 555, True]");
    wait_until("z@dane.test delivered", Duration::from_secs(30), || !got_for(&p, "z@dane.test").is_empty());
    assert_eq!(requiretls_for(&p, "z@dane.test"), [true]);
    let inbox = dir.path().join("data/mailboxes/client.test/alice/new");
    let bounce = || {
        std::fs::read_dir(&inbox)
            .map(|d| d.flatten().map(|f| std::fs::read_to_string(f.path()).unwrap_or_default()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.contains("w@plain.test"))
    };
    wait_until("the REQUIRETLS bounce", Duration::from_secs(30), || bounce().is_some());
    let b = bounce().unwrap();
    assert!(b.contains("Status: 5.7.30"), "{b}");
    assert!(b.contains("REQUIRETLS: no validated TLS possible to plain.test"), "{b}");
    assert!(b.contains("Subject: secret") && !b.contains("body line"), "headers only: {b}");
    assert!(got_for(&p, "w@plain.test").is_empty());
}
