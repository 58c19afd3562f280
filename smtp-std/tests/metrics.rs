//! `[listen] metrics`: `serve --config` serving `GET /metrics`, scraped with curl after mail
//! of every kind — a message stored, recipients refused, a message refused, an AUTH failure,
//! a submission relayed through a smarthost (in-process receiver) where one recipient is
//! delivered and one refused for good (a bounce back into alice's mailbox) — with the numbers
//! checked exactly; a second scrape after more traffic (a recipient deferred, a connection
//! over `max_connections_per_client`) shows them grown, the limit hit and the queue's gauges;
//! a renewed certificate and a reload move the expiry gauge. A bad `metrics` address is refused at start with file,
//! line and key.
#![cfg(feature = "mta")]

mod common;
#[path = "common/dnsmasq.rs"]
mod dnsmasq;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use smtp_std::proto::parse::{ForwardPath, RcptParams};
use smtp_std::{Decision, Handler, Options, Server, Session};

/// The smarthost: `550 5.1.1` for nobody@, `451 4.3.0` for later@, the rest accepted.
#[derive(Clone)]
struct Smarthost;

impl Handler for Smarthost {
    fn rcpt_to(&mut self, _: &Session, to: &ForwardPath<'_>, _: &RcptParams<'_>) -> Decision {
        let to = smtp_std::handler::forward_path_string(to);
        match to.split('@').next() {
            Some("nobody") => Decision::reply(550, Some((5, 1, 1)), "user unknown"),
            Some("later") => Decision::reply(451, Some((4, 3, 0)), "try later"),
            _ => Decision::Accept,
        }
    }
}

/// `GET path` with curl: the status code and the body.
fn curl(port: u16, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// The samples of a scrape: `name{labels}` → value.
fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (code, body) = curl(port, "/metrics");
    assert_eq!(code, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

/// Checks each `(sample, value)` of `want` in `got`.
fn check(got: &BTreeMap<String, f64>, want: &[(&str, f64)]) {
    for (k, v) in want {
        assert_eq!(got.get(*k), Some(v), "{k} in {got:#?}");
    }
}

/// Runs a Python smtplib script against the submission port (STARTTLS); prints its `out`.
fn smtplib(port: u16, body: &str) -> String {
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {port}, timeout=20)
s.starttls(context=ctx)
out = []
{body}
print(out)
s.quit()
"#
    );
    let o = run(Command::new("python3").arg("-c").arg(script), b"", Duration::from_secs(30));
    assert_eq!(o.status, Some(0), "smtplib: {}", o.stderr);
    o.stdout.trim().to_owned()
}

/// One message on port 25 to `rcpts`: each RCPT's code, then the end of data's.
fn plain(addr: SocketAddr, rcpts: &[&str]) -> Vec<u16> {
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220 "));
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<someone@elsewhere.test>").starts_with("250"));
    let mut codes: Vec<u16> = rcpts.iter().map(|r| c.cmd(&format!("RCPT TO:<{r}>"))[..3].parse().unwrap()).collect();
    if codes.contains(&250) {
        assert!(c.cmd("DATA").starts_with("354"));
        codes.push(c.cmd("From: someone@elsewhere.test\r\nSubject: hi\r\n\r\nhello\r\n.")[..3].parse().unwrap());
    }
    assert!(c.cmd("QUIT").starts_with("221"));
    codes
}

/// The configuration (submission on a port of the kernel's choosing: the program's log names it).
fn config(dir: &Path, smarthost: u16, metrics: &str) -> String {
    let c = cert(dir);
    std::fs::write(dir.join("passwd"), passwd_text("alice@a.test:wonderland\n")).unwrap();
    let text = format!(
        r#"hostname = "mx.a.test"
data_dir = "data"
accounts = "passwd"
mail_auth = false
trusted_networks = []
[listen]
smtp = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
metrics = [{metrics}]
[tls]
cert = {cert:?}
key = {key:?}
[outbound]
smarthost = "127.0.0.1:{smarthost}"
smarthost_tls = "none"
timeout = "10s"
[limits]
max_connections_per_client = 2
[queue]
retry = ["1s"]
scan_interval = "200ms"
delay_warning = "0s"
[[domain]]
name = "a.test"
[domain.aliases]
postmaster = "alice"
"#,
        cert = c.cert_pem,
        key = c.key_pem,
    );
    text
}

#[test]
fn scrape_after_a_delivery_a_refusal_and_a_bounce() {
    if !have("curl") || !have("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Server::new(Options::new("relay.test"), Smarthost);
    let relay_port = relay.listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap().port();
    let _relay = relay.spawn();
    // Every port the kernel's choice, read from the log (a port picked free beforehand can be
    // taken by another test's connection before the program binds it).
    let text = config(dir.path(), relay_port, "\"127.0.0.1:0\"");
    let path = dir.path().join("smtp-std.toml");
    std::fs::write(&path, text).unwrap();
    let mta = Program::start(dir.path(), &["--config", path.to_str().unwrap()]);
    let metrics = mta.bound("serving metrics").port();
    let submission = mta.bound("listening for submission (STARTTLS").port();

    // Before any mail: everything at zero, the certificate's end as OpenSSL reads it.
    let m = scrape(metrics);
    check(&m, &[("smtp_std_sessions_opened_total{listener=\"smtp\"}", 0.0), ("smtp_std_queue_entries", 0.0)]);
    let not_after = run(
        Command::new("openssl").args(["x509", "-noout", "-enddate", "-in"]).arg(dir.path().join("cert.pem")),
        b"",
        Duration::from_secs(10),
    )
    .stdout;
    let not_after = not_after.trim().trim_start_matches("notAfter=");
    let py = format!("import ssl; print(int(ssl.cert_time_to_seconds({not_after:?})))");
    let expiry: f64 =
        run(Command::new("python3").args(["-c", &py]), b"", Duration::from_secs(10)).stdout.trim().parse().unwrap();
    check(&m, &[("smtp_std_tls_certificate_expiry_timestamp_seconds", expiry)]);
    assert_eq!(curl(metrics, "/").0, 404);
    assert_eq!(curl(metrics, "/metricsx").0, 404);
    // A head past 8 KiB is refused; a client that says nothing holds up no scrape.
    let big = format!("X-Big: {}", "a".repeat(9000));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "-H", &big])
        .arg(format!("http://127.0.0.1:{metrics}/metrics"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "431");
    let _silent = std::net::TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(curl(metrics, "/metrics").0, 200);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Port 25: a message stored for alice; an unknown user and a relay attempt refused.
    assert_eq!(plain(mta.addr, &["alice@a.test", "nobody@a.test", "x@far.test"]), [250, 550, 550, 250]);
    // Submission: a wrong password, then alice's message to two recipients elsewhere (one
    // delivered, one refused by the smarthost: a bounce to alice), then one with a From:
    // that is not hers (refused at the end of data).
    let out = smtplib(
        submission,
        r#"
try:
    s.login("alice@a.test", "wrong")
except smtplib.SMTPAuthenticationError as e:
    out.append(e.smtp_code)
s.login("alice@a.test", "wonderland")
r = s.sendmail("alice@a.test", ["friend@far.test", "nobody@far.test"], b"From: alice@a.test\r\nSubject: x\r\n\r\nhi\r\n")
out.append(len(r))
try:
    s.sendmail("alice@a.test", ["friend@far.test"], b"From: boss@a.test\r\nSubject: x\r\n\r\nhi\r\n")
except smtplib.SMTPDataError as e:
    out.append(e.smtp_code)
"#,
    );
    assert_eq!(out, "[535, 0, 553]");
    // The bounce reaches alice's mailbox through the queue; then the queue is empty.
    let inbox = dir.path().join("data/mailboxes/a.test/alice");
    wait_until("the bounce", Duration::from_secs(20), || files(&inbox, "new").len() == 2);
    wait_until("an empty queue", Duration::from_secs(20), || {
        queue_entries(&dir.path().join("data/queue/entries")) == 0
    });

    let m = scrape(metrics);
    check(
        &m,
        &[
            ("smtp_std_sessions_opened_total{listener=\"smtp\"}", 1.0),
            ("smtp_std_sessions_opened_total{listener=\"submission\"}", 1.0),
            ("smtp_std_sessions_opened_total{listener=\"submissions\"}", 0.0),
            ("smtp_std_messages_received_total{result=\"accepted\",reason=\"\"}", 2.0),
            ("smtp_std_messages_received_total{result=\"refused\",reason=\"policy\"}", 1.0),
            ("smtp_std_messages_received_total{result=\"deferred\",reason=\"storage\"}", 0.0),
            ("smtp_std_messages_submitted_total", 1.0),
            ("smtp_std_recipients_refused_total{reason=\"unknown_user\"}", 1.0),
            ("smtp_std_recipients_refused_total{reason=\"relay_denied\"}", 1.0),
            // smtplib tries PLAIN, then LOGIN: two AUTH commands refused.
            ("smtp_std_auth_failures_total", 2.0),
            // friend@far.test, and the bounce into alice's mailbox; nobody@far.test.
            ("smtp_std_deliveries_total{result=\"delivered\"}", 2.0),
            ("smtp_std_deliveries_total{result=\"bounced\"}", 1.0),
            ("smtp_std_deliveries_total{result=\"deferred\"}", 0.0),
            ("smtp_std_delivery_duration_seconds_count{result=\"delivered\"}", 2.0),
            ("smtp_std_delivery_duration_seconds_count{result=\"bounced\"}", 1.0),
            ("smtp_std_limit_hits_total{limit=\"max_clients\"}", 0.0),
            ("smtp_std_milter_verdicts_total{verdict=\"accept\"}", 0.0),
            ("smtp_std_queue_entries", 0.0),
            ("smtp_std_queue_oldest_age_seconds", 0.0),
        ],
    );

    // More: another message stored, and one whose recipient the smarthost defers.
    assert_eq!(plain(mta.addr, &["alice@a.test"]), [250, 250]);
    let out = smtplib(
        submission,
        r#"
s.login("alice@a.test", "wonderland")
out.append(len(s.sendmail("alice@a.test", ["later@far.test"], b"From: alice@a.test\r\n\r\nhi\r\n")))
"#,
    );
    assert_eq!(out, "[0]");
    wait_until("a deferral", Duration::from_secs(20), || {
        scrape(metrics)["smtp_std_deliveries_total{result=\"deferred\"}"] >= 1.0
    });
    // A third connection at once from this client: refused by max_connections_per_client.
    let mut held = [Client::connect(mta.addr), Client::connect(mta.addr)];
    for c in &mut held {
        assert!(c.reply().starts_with("220 "));
    }
    let mut third = Client::connect(mta.addr);
    assert!(third.reply().starts_with("421 4.7.0"));
    let m = scrape(metrics);
    check(
        &m,
        &[
            ("smtp_std_limit_hits_total{limit=\"connections_per_client\"}", 1.0),
            ("smtp_std_limit_hits_total{limit=\"connection_rate\"}", 0.0),
            ("smtp_std_sessions_opened_total{listener=\"smtp\"}", 4.0),
            ("smtp_std_sessions_opened_total{listener=\"submission\"}", 2.0),
            ("smtp_std_messages_received_total{result=\"accepted\",reason=\"\"}", 4.0),
            ("smtp_std_messages_submitted_total", 2.0),
            ("smtp_std_deliveries_total{result=\"delivered\"}", 2.0),
            ("smtp_std_queue_entries", 1.0),
        ],
    );
    assert!(m["smtp_std_queue_oldest_age_seconds"] >= 0.0 && m["smtp_std_queue_oldest_age_seconds"] < 60.0);

    // A renewed certificate (valid to 2031-03-04) and a reload: the gauge follows.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 3, 4);
    let key = rcgen::KeyPair::generate().unwrap();
    let renewed = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("cert.pem"), renewed.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_smtp-std")).args(["reload", "--config"]).arg(&path),
        b"",
        Duration::from_secs(30),
    );
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    wait_until("the renewed certificate's expiry", Duration::from_secs(10), || {
        scrape(metrics)["smtp_std_tls_certificate_expiry_timestamp_seconds"] == 1_930_348_800.0
    });
}

#[test]
fn a_bad_metrics_address_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), 25, "\"127.0.0.1\"");
    let path = dir.path().join("smtp-std.toml");
    std::fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("metrics =")).unwrap() + 1;
    let serve = || {
        let args = ["serve", "--config", "smtp-std.toml"];
        run(
            Command::new(env!("CARGO_BIN_EXE_smtp-std")).current_dir(dir.path()).args(args),
            b"",
            Duration::from_secs(30),
        )
    };
    let out = serve();
    assert_eq!(out.status, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("smtp-std.toml:{line}: listen.metrics[0]: ")), "{}", out.stderr);

    // A port taken: refused naming the key and the address.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = config(dir.path(), 25, &format!("\"{addr}\""));
    std::fs::write(&path, &text).unwrap();
    let out = serve();
    assert_ne!(out.status, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("listen.metrics: cannot listen on {addr}")), "{}", out.stderr);
}

/// A message on port 25 from the loopback address `source`, from `from` to alice: the reply
/// to the end of data.
fn from_source(source: &str, server: SocketAddr, from: &str) -> String {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.connect_timeout(&server.into(), Duration::from_secs(5)).unwrap();
    let mut c = Client::from_stream(sock.into());
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.sender.test").starts_with("250"));
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@a.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let end = c.cmd(&format!("From: {from}\r\nSubject: hi\r\nMessage-ID: <1@sender.test>\r\n\r\nhello\r\n."));
    let _ = c.cmd("QUIT");
    end
}

#[test]
fn spf_dkim_dmarc_and_dnsbl_results_counted() {
    if !have("curl") || !dnsmasq::Dnsmasq::available() {
        return;
    }
    // bl.test lists 127.0.0.9 (and its test point 127.0.0.2); sender.test's SPF names 127.0.0.9.
    let dns = dnsmasq::Dnsmasq::start(&[
        "address=/2.0.0.127.bl.test/127.0.0.2".to_owned(),
        "address=/9.0.0.127.bl.test/127.0.0.2".to_owned(),
        dnsmasq::txt("sender.test", "v=spf1 ip4:127.0.0.9 -all"),
        dnsmasq::txt("_dmarc.sender.test", "v=DMARC1; p=none"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), passwd_text("alice@a.test:wonderland\n")).unwrap();
    let text = format!(
        "hostname = \"mx.a.test\"\ndata_dir = \"data\"\naccounts = \"passwd\"\ntrusted_networks = []\n\
         [listen]\nsmtp = [\"127.0.0.1:0\"]\nmetrics = [\"127.0.0.1:0\"]\n\
         [dns]\nserver = \"{}\"\ntimeout = \"2s\"\n[spam]\ndnsbl_threshold = 3\n\
         [[dnsbl]]\nzone = \"bl.test\"\n[[domain]]\nname = \"a.test\"\n[domain.aliases]\npostmaster = \"alice\"\n",
        dns.arg()
    );
    let path = dir.path().join("smtp-std.toml");
    std::fs::write(&path, text).unwrap();
    let mta = Program::start(dir.path(), &["--config", path.to_str().unwrap()]);
    let metrics = mta.bound("serving metrics").port();

    // From the address SPF names (and bl.test lists: below the threshold, into .Junk), then
    // from another (SPF fail; DMARC fails, p=none: delivered).
    assert!(from_source("127.0.0.9", mta.addr, "x@sender.test").starts_with("250"));
    assert!(from_source("127.0.0.10", mta.addr, "x@sender.test").starts_with("250"));
    let m = scrape(metrics);
    check(
        &m,
        &[
            ("smtp_std_dnsbl_hits_total{list=\"block\"}", 1.0),
            ("smtp_std_dnsbl_hits_total{list=\"allow\"}", 0.0),
            ("smtp_std_spf_results_total{result=\"pass\"}", 1.0),
            ("smtp_std_spf_results_total{result=\"fail\"}", 1.0),
            ("smtp_std_dkim_results_total{result=\"none\"}", 2.0),
            ("smtp_std_dmarc_results_total{result=\"pass\"}", 1.0),
            ("smtp_std_dmarc_results_total{result=\"fail\"}", 1.0),
            ("smtp_std_messages_received_total{result=\"accepted\",reason=\"\"}", 2.0),
            ("smtp_std_tls_certificate_expiry_timestamp_seconds", 0.0),
        ],
    );
}
