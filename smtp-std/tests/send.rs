//! The client (`smtp_std::client`) and `smtp-std send` against real peers, each started on a
//! loopback port by the test and killed on drop: Postfix smtp-sink, Python aiosmtpd, our own
//! server (STARTTLS with a test CA, implicit TLS, AUTH, refusals), and raw fake servers
//! (STARTTLS response injection, a silent server); exit statuses and `serve --help`.
// The mail server and the program (feature `mta`).
#![cfg(feature = "mta")]

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiosmtpd::*;
use common::*;
use smtp_std::client::{self, Envelope, SendError, SendOptions, SmtpClient, TlsMode};
use smtp_std::handler::forward_path_string;
use smtp_std::proto::ehlo::AuthMechanisms;
use smtp_std::proto::parse::params::{MailParams, Notify, RcptParams, Ret};
use smtp_std::proto::parse::path::{ForwardPath, ReversePath};
use smtp_std::{AuthRequest, Decision, Handler, Options, Server, Session};

const T: Duration = Duration::from_secs(60);

/// A body with everything that needs care: bare LF, CRLF, a lone `.` line, lines starting
/// with dots, and a last line without a line ending.
const TRICKY: &[u8] = b"Subject: tricky\nDate: Tue, 01 Jul 2025 12:00:00 +0000\nMessage-ID: <tricky@test>\n\n\
.leading dot\n..two dots\n.\nbare LF\nCRLF line\r\n\r\n.\r\nlast line without newline";

/// What a correct client puts on the wire for [`TRICKY`] (before stuffing): CRLF everywhere,
/// a final CRLF.
fn canonical(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn program() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smtp-std"));
    cmd.arg("send").env_remove("SMTP_PASSWORD").env("RUST_LOG", "warn");
    cmd
}

/// `smtp-std send` with `args`, the message on stdin.
fn send(args: &[&str], message: &[u8]) -> Output {
    run(program().args(args), message, T)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// Postfix smtp-sink

/// smtp-sink on a loopback port, dumping every message into its own file in `dir`.
fn smtp_sink(dir: &Path, extra: &[&str]) -> (ChildGuard, u16) {
    let dump = dir.join("dump");
    std::fs::create_dir(&dump).unwrap();
    // smtp-sink drops privileges when run as root.
    let _ = Command::new("chmod").arg("777").arg(&dump).status();
    let port = free_port();
    let mut cmd = Command::new("/usr/sbin/smtp-sink");
    if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n")) {
        cmd.args(["-u", "nobody"]);
    }
    cmd.arg("-d").arg(format!("{}/%M.", dump.display())).args(extra).arg(format!("127.0.0.1:{port}")).arg("10");
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
    let child = ChildGuard(cmd.spawn().expect("start smtp-sink"));
    wait_for_port(port);
    (child, port)
}

fn dumps(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = files(dir, "dump").iter().map(|p| std::fs::read(p).unwrap()).collect();
    v.sort();
    v
}

/// Splits an smtp-sink dump into its generated headers (`X-...:` and the three-line
/// `Received:`) and the message as received (its lines end in LF in the dump, and an empty
/// line follows it).
fn sink_message(dump: &[u8]) -> (String, Vec<u8>) {
    let text = dump;
    let r = text.windows(10).position(|w| w == b"Received: ").expect("Received:");
    let mut i = r;
    for _ in 0..3 {
        i += text[i..].iter().position(|&b| b == b'\n').unwrap() + 1;
    }
    let head = String::from_utf8_lossy(&text[..i]).into_owned();
    let msg = text[i..].strip_suffix(b"\n").expect("the dump's empty line").to_vec();
    (head, msg)
}

fn lf(b: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(b).replace("\r\n", "\n").into_bytes()
}

#[test]
fn smtp_sink_pipelining_dsn_headers_added_and_byte_exact_message() {
    if !have("/usr/sbin/smtp-sink") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_sink, port) = smtp_sink(dir.path(), &[]);
    let server = format!("127.0.0.1:{port}");
    // A message with Date and Message-ID: sent as it is (canonical, stuffed on the wire).
    let o = send(
        &[
            "--server",
            &server,
            "--tls",
            "off",
            "--ehlo",
            "client.test",
            "--from",
            "a@x.test",
            "--to",
            "b@y.test",
            "--to",
            "c@z.test",
            "--notify",
            "SUCCESS,FAILURE",
            "--ret",
            "hdrs",
            "--envid",
            "E+1",
        ],
        TRICKY,
    );
    assert_eq!(o.status, Some(0), "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stdout, "b@y.test: accepted 250 2.1.5 Ok\nc@z.test: accepted 250 2.1.5 Ok\n");
    // Without: both added on top.
    let f = dir.path().join("m.eml");
    std::fs::write(&f, b"Subject: no date\n\nbody\n").unwrap();
    let o = send(
        &[
            "--server",
            &server,
            "--tls",
            "off",
            "--ehlo",
            "client.test",
            "--from",
            "",
            "--to",
            "b@y.test",
            "--file",
            s(&f),
        ],
        b"",
    );
    assert_eq!(o.status, Some(0), "{}{}", o.stdout, o.stderr);

    wait_until("two dumps", Duration::from_secs(10), || files(dir.path(), "dump").len() == 2);
    let all = dumps(dir.path());
    let first = all.iter().find(|d| d.windows(14).any(|w| w == b"Subject: trick")).unwrap();
    let (head, msg) = sink_message(first);
    assert!(head.contains("X-Helo-Args: client.test\n"), "{head}");
    assert!(head.contains("X-Mail-Args: <a@x.test> RET=HDRS ENVID=E+2B1\n"), "{head}");
    assert!(head.contains("X-Rcpt-Args: <b@y.test> NOTIFY=SUCCESS,FAILURE\nX-Rcpt-Args: <c@z.test> NOTIFY"), "{head}");
    assert_eq!(String::from_utf8_lossy(&msg), String::from_utf8_lossy(&lf(&canonical(TRICKY))));

    let second = all.iter().find(|d| d.windows(16).any(|w| w == b"Subject: no date")).unwrap();
    let (head, msg) = sink_message(second);
    // smtp-sink does not offer SIZE: none declared (see the own-server test for SIZE=).
    assert!(head.contains("X-Mail-Args: <>\n"), "{head}");
    let msg = String::from_utf8(msg).unwrap();
    let rest = msg.strip_prefix("Date: ").expect("Date: first");
    let (date, rest) = rest.split_once('\n').unwrap();
    // The day of the month has one or two digits (RFC 5322 day = 1*2DIGIT).
    assert!(date.ends_with(" +0000") && (30..=31).contains(&date.len()), "{date}");
    let rest = rest.strip_prefix("Message-ID: <").expect("Message-ID: second");
    let (id, rest) = rest.split_once('\n').unwrap();
    assert!(id.ends_with("@client.test>"), "{id}");
    assert_eq!(rest, "Subject: no date\n\nbody\n");
}

#[test]
fn smtp_sink_soft_rejects_give_exit_75_and_hard_ones_69() {
    if !have("/usr/sbin/smtp-sink") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // -r: 4xx to every RCPT; -f: 5xx to MAIL.
    let (_sink, port) = smtp_sink(dir.path(), &["-r", "RCPT"]);
    let server = format!("127.0.0.1:{port}");
    let o =
        send(&["--server", &server, "--tls", "off", "--from", "a@x.test", "--to", "b@y.test"], b"Subject: x\n\nx\n");
    assert_eq!(o.status, Some(75), "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.starts_with("b@y.test: deferred 4"), "{}", o.stdout);
    assert!(o.stderr.contains("no recipient accepted: RCPT TO:<b@y.test> refused: 4"), "{}", o.stderr);

    let dir2 = tempfile::tempdir().unwrap();
    let (_sink2, port2) = smtp_sink(dir2.path(), &["-f", "MAIL"]);
    let server = format!("127.0.0.1:{port2}");
    let o =
        send(&["--server", &server, "--tls", "off", "--from", "a@x.test", "--to", "b@y.test"], b"Subject: x\n\nx\n");
    assert_eq!(o.status, Some(69), "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("MAIL FROM:<a@x.test> refused: 5"), "{}", o.stderr);
    assert!(files(dir.path(), "dump").is_empty() && files(dir2.path(), "dump").is_empty());
}

#[test]
fn smtp_sink_without_starttls_fails_when_tls_is_required() {
    if !have("/usr/sbin/smtp-sink") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_sink, port) = smtp_sink(dir.path(), &[]);
    let server = format!("127.0.0.1:{port}");
    let o = send(&["--server", &server, "--from", "a@x.test", "--to", "b@y.test"], b"Subject: x\n\nx\n");
    assert_eq!(o.status, Some(75), "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("TLS is required and the server does not offer STARTTLS"), "{}", o.stderr);
    // Opportunistic: plain text it is.
    let o = send(&["--server", &server, "--tls", "opportunistic", "--from", "a@x.test", "--to", "b@y.test"], b"x\n");
    assert_eq!(o.status, Some(0), "{}{}", o.stdout, o.stderr);
    wait_until("one dump", Duration::from_secs(10), || files(dir.path(), "dump").len() == 1);
}

#[test]
fn aiosmtpd_plain_byte_exact() {
    if !have_aiosmtpd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_py, port) = aiosmtpd(dir.path(), None);
    let o = send(
        &["--server", &format!("127.0.0.1:{port}"), "--tls", "off", "--from", "a@x.test", "--to", "b@y.test"],
        TRICKY,
    );
    assert_eq!(o.status, Some(0), "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.starts_with("b@y.test: accepted 250"), "{}", o.stdout);
    assert!(o.stderr.contains("250 2.0.0 stored"), "{}", o.stderr);
    let got = std::fs::read(dir.path().join("msg1.eml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&canonical(TRICKY)));
    let env = std::fs::read_to_string(dir.path().join("msg1.env")).unwrap();
    assert_eq!(env, "from=a@x.test\nto=b@y.test\ntls=False\nauth=\n");
}

#[test]
fn aiosmtpd_starttls_required_with_test_ca_and_auth() {
    if !have_aiosmtpd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path());
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let (_py, port) = aiosmtpd(&store, Some(&ca));
    let server = format!("localhost:{port}");
    let base = ["--server", &server, "--tls-ca", s(&ca.ca_pem), "--from", "alice@x.test", "--to", "b@y.test"];

    let o = run(program().args(base).args(["--auth-user", "alice"]).env("SMTP_PASSWORD", "s3cret"), TRICKY, T);
    assert_eq!(o.status, Some(0), "{}{}", o.stdout, o.stderr);
    let got = std::fs::read(store.join("msg1.eml")).unwrap();
    assert_eq!(got, canonical(TRICKY));
    let env = std::fs::read_to_string(store.join("msg1.env")).unwrap();
    assert_eq!(env, "from=alice@x.test\nto=b@y.test\ntls=True\nauth=alice\n");

    // A wrong password: AUTH refused, permanent (`--auth`, the short spelling of --auth-user).
    let o = run(program().args(base).args(["--auth", "alice"]).env("SMTP_PASSWORD", "nope"), b"x\n", T);
    assert_eq!(o.status, Some(69), "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("AUTH PLAIN refused: 535"), "{}", o.stderr);
    // Without the test CA the certificate does not verify (Mozilla's roots): deferred.
    let o = send(&["--server", &server, "--from", "a@x.test", "--to", "b@y.test"], b"x\n");
    assert_eq!(o.status, Some(75), "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("TLS handshake failed") && o.stderr.contains("UnknownIssuer"), "{}", o.stderr);
    // AUTH over plain text is refused by us before anything is sent.
    let o = run(
        program()
            .args(["--server", &server, "--tls", "off", "--from", "a@x.test", "--to", "b@y.test"])
            .args(["--auth-user", "alice"])
            .env("SMTP_PASSWORD", "s3cret"),
        b"x\n",
        T,
    );
    assert_eq!(o.status, Some(69), "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("not encrypted"), "{}", o.stderr);
    assert_eq!(files(dir.path(), "store").len(), 2, "only the first message was stored");
}

// ---------------------------------------------------------------------------------------
// Our own server

#[derive(Debug, Clone, Default)]
struct Stored {
    from: String,
    to: Vec<String>,
    notify: Vec<Option<Notify>>,
    ret: Option<Ret>,
    envid: Option<String>,
    size: Option<u64>,
    tls: bool,
    user: Option<String>,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Collect {
    current: Stored,
    mails: Arc<Mutex<Vec<Stored>>>,
    mail_commands: Arc<Mutex<usize>>,
}

impl Handler for Collect {
    fn auth(&mut self, _: &Session, auth: &AuthRequest<'_>) -> Decision {
        if auth.identity == "alice" && auth.secret == "s3cret" {
            Decision::Accept
        } else {
            Decision::reply(535, Some((5, 7, 8)), "bad credentials")
        }
    }

    fn mail_from(&mut self, _: &Session, from: &ReversePath<'_>, params: &MailParams<'_>) -> Decision {
        *self.mail_commands.lock().unwrap() += 1;
        let from = smtp_std::handler::reverse_path_string(from);
        if from.starts_with("blocked@") {
            return Decision::reply(553, Some((5, 7, 1)), "sender blocked");
        }
        self.current = Stored {
            from,
            ret: params.ret,
            envid: params.envid.map(|x| String::from_utf8(x.decoded().collect()).unwrap()),
            size: params.size,
            ..Stored::default()
        };
        Decision::Accept
    }

    fn rcpt_to(&mut self, _: &Session, to: &ForwardPath<'_>, params: &RcptParams<'_>) -> Decision {
        let to = forward_path_string(to);
        if to.starts_with("unknown@") {
            return Decision::reply(550, Some((5, 1, 1)), "user unknown");
        }
        if to.starts_with("later@") {
            return Decision::reply(451, Some((4, 3, 0)), "try again later");
        }
        self.current.to.push(to);
        self.current.notify.push(params.notify);
        Decision::Accept
    }

    fn data_chunk(&mut self, _: &Session, chunk: &[u8]) -> std::io::Result<()> {
        self.current.body.extend_from_slice(chunk);
        Ok(())
    }

    fn data_end(&mut self, s: &Session, _: u64) -> Decision {
        let mut m = std::mem::take(&mut self.current);
        m.tls = s.tls;
        m.user = s.user.clone();
        self.mails.lock().unwrap().push(m);
        Decision::Accept
    }
}

struct Own {
    running: Option<smtp_std::Running>,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    mails: Arc<Mutex<Vec<Stored>>>,
    mail_commands: Arc<Mutex<usize>>,
}

impl Drop for Own {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown();
        }
    }
}

/// Our server with the collecting handler; with `tls`: STARTTLS and an implicit-TLS
/// listener with that certificate, AUTH PLAIN/LOGIN offered under TLS.
fn own(tls: Option<(&Path, &Path)>, tune: impl FnOnce(Options) -> Options) -> Own {
    let handler = Collect::default();
    let (mails, mail_commands) = (handler.mails.clone(), handler.mail_commands.clone());
    let mut options = Options::new("mx.test")
        .auth_mechanisms(AuthMechanisms::none().with(AuthMechanisms::PLAIN).with(AuthMechanisms::LOGIN))
        .auth_optional(true);
    if let Some((cert, key)) = tls {
        options = options.tls(smtp_std::tls::server_config_from_files(cert, key).unwrap());
    }
    let mut server = Server::new(tune(options), handler);
    let addr = server.listen("127.0.0.1:0").unwrap();
    let tls_addr = tls.map(|_| server.listen_tls("127.0.0.1:0").unwrap());
    Own { running: Some(server.spawn()), addr, tls_addr, mails, mail_commands }
}

impl Own {
    fn mails(&self) -> Vec<Stored> {
        self.mails.lock().unwrap().clone()
    }
}

#[test]
fn own_server_starttls_test_ca_auth_partial_success_exit_69() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path());
    let srv = own(Some((&ca.cert_pem, &ca.key_pem)), |o| o);
    let pw = dir.path().join("password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let server = format!("localhost:{}", srv.addr.port());
    let o = send(
        &[
            "--server",
            &server,
            "--tls",
            "required",
            "--tls-ca",
            s(&ca.ca_pem),
            "--auth-user",
            "alice",
            "--auth-password-file",
            s(&pw),
            "--from",
            "alice@x.test",
            "--to",
            "ok@mx.test",
            "--to",
            "unknown@mx.test",
            "--notify",
            "never",
            "--ret",
            "full",
            "--envid",
            "id 1",
            "--ehlo",
            "client.test",
        ],
        TRICKY,
    );
    assert_eq!(o.status, Some(69), "{}{}", o.stdout, o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", o.stdout);
    assert!(lines[0].starts_with("ok@mx.test: accepted 250 2.1.5"), "{}", o.stdout);
    assert_eq!(lines[1], "unknown@mx.test: refused 550 5.1.1 user unknown");
    let mails = srv.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert!(m.tls && m.user.as_deref() == Some("alice"), "{m:?}");
    assert_eq!((m.from.as_str(), m.to.clone()), ("alice@x.test", vec!["ok@mx.test".to_owned()]));
    assert_eq!(m.notify, vec![Some(Notify::NEVER)]);
    assert_eq!((m.ret, m.envid.as_deref()), (Some(Ret::Full), Some("id 1")));
    assert_eq!(String::from_utf8_lossy(&m.body), String::from_utf8_lossy(&canonical(TRICKY)));
}

#[test]
fn own_server_4xx_gives_exit_75_and_all_refused_names_each_rcpt() {
    let srv = own(None, |o| o);
    let server = srv.addr.to_string();
    let base = ["--server", server.as_str(), "--tls", "off", "--from", "a@x.test"];
    // Partial: one accepted, one deferred. A file: its size (with the added headers) declared.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.eml");
    std::fs::write(&file, b"Subject: sized\n\nx\n").unwrap();
    let o = run(program().args(base).args(["--to", "ok@mx.test", "--to", "later@mx.test", "--file", s(&file)]), b"", T);
    assert_eq!(o.status, Some(75), "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("later@mx.test: deferred 451 4.3.0 try again later"), "{}", o.stdout);
    // Every recipient refused: the error names each RCPT and its reply.
    let o = run(program().args(base).args(["--to", "unknown@mx.test", "--to", "unknown@other.test"]), b"x\n", T);
    assert_eq!(o.status, Some(69), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains(
            "no recipient accepted: RCPT TO:<unknown@mx.test> refused: 550 5.1.1 user unknown; \
             RCPT TO:<unknown@other.test> refused: 550 5.1.1 user unknown"
        ),
        "{}",
        o.stderr
    );
    assert_eq!(o.stdout.lines().count(), 2);
    // A refused sender.
    let o = run(
        program().args(["--server", &server, "--tls", "off", "--from", "blocked@x.test", "--to", "ok@mx.test"]),
        b"x\n",
        T,
    );
    assert_eq!(o.status, Some(69), "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("MAIL FROM:<blocked@x.test> refused: 553 5.7.1 sender blocked"), "{}", o.stderr);
    let mails = srv.mails();
    assert_eq!(mails.len(), 1);
    let declared = mails[0].size.expect("SIZE= declared");
    assert!(declared > 19 && declared.abs_diff(mails[0].body.len() as u64) <= 3, "{declared} {:?}", mails[0]);
}

#[test]
fn library_send_with_typed_errors_implicit_tls_and_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let c = cert(dir.path());
    let srv = own(Some((&c.cert_pem, &c.key_pem)), |o| o.size(Some(2000)));
    let env = Envelope::new("a@x.test", ["ok@mx.test", "unknown@mx.test"]);

    // Implicit TLS, self-signed: refused by default, accepted with the insecure config.
    let mut opts = SendOptions::new(&format!("localhost:{}", srv.tls_addr.unwrap().port()), "client.test");
    opts.tls = TlsMode::Implicit;
    let e = client::send(&opts, &env, &b"x\n"[..]).unwrap_err();
    assert!(matches!(e, SendError::Tls(_)) && e.is_transient(), "{e}");
    opts.tls_config = Some(client::insecure_tls_config());
    opts.auth = Some(client::Auth { user: "alice".into(), password: "s3cret".into() });
    let d = client::send(&opts, &env, &b"Subject: implicit\n\nhi"[..]).unwrap();
    assert!(!d.all_accepted());
    assert_eq!(d.accepted().count(), 1);
    let refused: Vec<_> = d.refused().collect();
    assert_eq!(refused[0].to_string(), "unknown@mx.test: refused 550 5.1.1 user unknown");
    assert_eq!(d.reply.code, 250);

    // A session with two messages; SIZE checked before MAIL.
    let mut opts = SendOptions::new(&srv.addr.to_string(), "client.test");
    opts.tls = TlsMode::Opportunistic;
    opts.tls_config = Some(client::insecure_tls_config());
    let mut session = SmtpClient::connect(&opts).unwrap();
    assert!(session.is_tls() && !session.is_authenticated());
    let before = *srv.mail_commands.lock().unwrap();
    let mut big = Envelope::new("a@x.test", ["ok@mx.test"]);
    big.size = Some(5000);
    let e = session.send(&big, &[b'x'; 5000][..]).unwrap_err();
    assert!(matches!(e, SendError::Request(smtp_std::proto::client::ApiError::SizeExceeded { .. })), "{e}");
    assert!(!e.is_transient());
    assert_eq!(*srv.mail_commands.lock().unwrap(), before, "no MAIL for an oversized message");
    session.send(&Envelope::new("a@x.test", ["ok@mx.test"]), &b"Subject: second\n\n2"[..]).unwrap();
    let e = session.send(&Envelope::new("a@x.test", ["later@mx.test"]), &b"x"[..]).unwrap_err();
    assert!(matches!(e, SendError::NoValidRecipients(_)) && e.is_transient(), "{e}");
    session.quit().unwrap();

    // AUTH requested but not offered (no TLS, so the server does not offer it) / refused
    // by us in clear text.
    let mut opts = SendOptions::new(&srv.addr.to_string(), "client.test");
    opts.tls = TlsMode::Off;
    opts.auth = Some(client::Auth { user: "alice".into(), password: "s3cret".into() });
    let e = SmtpClient::connect(&opts).unwrap_err();
    assert!(matches!(e, SendError::CleartextAuth), "{e}");
    opts.allow_cleartext_auth = true;
    let e = SmtpClient::connect(&opts).unwrap_err();
    assert!(matches!(e, SendError::AuthNotOffered(_)), "{e}");
    assert_eq!(e.to_string(), "AUTH requested but the server does not offer AUTH");

    let mails = srv.mails();
    assert_eq!(mails.len(), 2);
    assert!(mails[0].tls && mails[0].user.as_deref() == Some("alice"));
    assert_eq!(mails[1].body, b"Subject: second\r\n\r\n2\r\n");
    assert!(mails[1].tls && mails[1].user.is_none());
}

#[test]
fn own_server_program_serve_and_send_implicit_tls_with_test_ca() {
    // The program on both ends: `smtp-std serve` with a CA-signed certificate and AUTH.
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path());
    std::fs::write(dir.path().join("users"), passwd_text("alice@x.test:s3cret\n")).unwrap();
    let p = Program::start(
        dir.path(),
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            s(&ca.cert_pem),
            "--tls-key",
            s(&ca.key_pem),
            "--users",
            s(&dir.path().join("users")),
            "--hostname",
            "mx.test",
        ],
    );
    let o = run(
        program()
            .args(["--server", &format!("localhost:{}", p.tls_addr.unwrap().port()), "--tls", "implicit"])
            .args([
                "--tls-ca",
                s(&ca.ca_pem),
                "--auth-user",
                "alice@x.test",
                "--from",
                "alice@x.test",
                "--to",
                "b@y.test",
            ])
            .env("SMTP_PASSWORD", "s3cret"),
        b"Subject: via serve\n\nhello\n",
        T,
    );
    assert_eq!(o.status, Some(0), "{}{}", o.stdout, o.stderr);
    wait_until("the message in new/", Duration::from_secs(10), || files(&dir.path().join("Maildir"), "new").len() == 1);
    let stored = std::fs::read(&files(&dir.path().join("Maildir"), "new")[0]).unwrap();
    let (_, msg) = strip_received(&stored);
    let msg = String::from_utf8_lossy(msg);
    assert!(msg.starts_with("Date: ") && msg.ends_with("\r\nSubject: via serve\r\n\r\nhello\r\n"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// Fake servers

/// A raw server for one connection: `script` talks to it; returns everything the client
/// sent (read until it closes).
fn fake(
    script: impl FnOnce(&mut BufReader<TcpStream>, &mut TcpStream) + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("no client: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        script(&mut reader, &mut conn);
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        rest
    });
    (addr, h)
}

fn expect_line(r: &mut BufReader<TcpStream>, start: &str) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with(start), "expected {start}, got {line:?}");
}

#[test]
fn starttls_response_injection_aborts_before_auth_or_mail() {
    let (addr, h) = fake(|r, w| {
        w.write_all(b"220 fake ESMTP\r\n").unwrap();
        expect_line(r, "EHLO ");
        w.write_all(b"250-fake\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n").unwrap();
        expect_line(r, "STARTTLS");
        // The injected reply rides in the same segment as the 220.
        w.write_all(b"220 2.0.0 go ahead\r\n250-injected\r\n").unwrap();
    });
    let mut opts = SendOptions::new(&addr.to_string(), "client.test");
    opts.auth = Some(client::Auth { user: "alice".into(), password: "s3cret".into() });
    opts.tls_config = Some(client::insecure_tls_config());
    let e = client::send(&opts, &Envelope::new("a@x.test", ["b@y.test"]), &b"x"[..]).unwrap_err();
    assert!(matches!(e, SendError::ResponseInjection), "{e}");
    assert!(e.is_transient());
    let after = h.join().unwrap();
    assert!(after.is_empty(), "the client sent more after STARTTLS: {:?}", String::from_utf8_lossy(&after));
}

#[test]
fn starttls_response_injection_in_a_later_segment_aborts_too() {
    let (addr, h) = fake(|r, w| {
        w.set_nodelay(true).unwrap();
        w.write_all(b"220 fake ESMTP\r\n").unwrap();
        expect_line(r, "EHLO ");
        w.write_all(b"250-fake\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n").unwrap();
        expect_line(r, "STARTTLS");
        // The injected reply comes in a segment of its own, right behind the 220.
        w.write_all(b"220 2.0.0 go ahead\r\n").unwrap();
        w.write_all(b"250-injected\r\n").unwrap();
    });
    let mut opts = SendOptions::new(&addr.to_string(), "client.test");
    opts.auth = Some(client::Auth { user: "alice".into(), password: "s3cret".into() });
    opts.tls_config = Some(client::insecure_tls_config());
    let e = client::send(&opts, &Envelope::new("a@x.test", ["b@y.test"]), &b"x"[..]).unwrap_err();
    // Seen before the handshake, it is named injection; seen by the handshake, the plaintext
    // is no TLS record and the handshake fails. Either way the session ends there.
    assert!(matches!(e, SendError::ResponseInjection | SendError::Tls(_)), "{e}");
    assert!(e.is_transient());
    let after = h.join().unwrap();
    // At most the start of a TLS handshake (a record of type 22), never plaintext SMTP.
    assert!(after.is_empty() || after[0] == 0x16, "the client sent plaintext after STARTTLS: {after:?}");
    let text = String::from_utf8_lossy(&after);
    assert!(!text.contains("AUTH") && !text.contains("MAIL"), "{text:?}");
}

#[test]
fn starttls_refused_or_not_offered_when_required_sends_nothing_else() {
    for (ehlo, starttls_reply) in [
        (&b"250-fake\r\n250 AUTH PLAIN\r\n"[..], None),
        (&b"250-fake\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n"[..], Some(&b"454 4.7.0 TLS not available\r\n"[..])),
    ] {
        let (addr, h) = fake(move |r, w| {
            w.write_all(b"220 fake ESMTP\r\n").unwrap();
            expect_line(r, "EHLO ");
            w.write_all(ehlo).unwrap();
            if let Some(reply) = starttls_reply {
                expect_line(r, "STARTTLS");
                w.write_all(reply).unwrap();
            }
        });
        let o = run(
            program()
                .args(["--server", &addr.to_string(), "--from", "a@x.test", "--to", "b@y.test"])
                .args(["--auth-user", "alice"]),
            b"x",
            T,
        );
        // No password: usage error before connecting. With one: refused after EHLO.
        assert_eq!(o.status, Some(64), "{}", o.stderr);
        let o = run(
            program()
                .args(["--server", &addr.to_string(), "--from", "a@x.test", "--to", "b@y.test", "--auth-user", "alice"])
                .env("SMTP_PASSWORD", "s3cret"),
            b"x",
            T,
        );
        assert_eq!(o.status, Some(75), "{}", o.stderr);
        let want = if starttls_reply.is_some() { "STARTTLS refused: 454 4.7.0" } else { "does not offer STARTTLS" };
        assert!(o.stderr.contains(want), "{}", o.stderr);
        let after = String::from_utf8_lossy(&h.join().unwrap()).into_owned();
        assert!(!after.contains("AUTH") && !after.contains("MAIL"), "{after:?}");
    }
}

#[test]
fn silent_server_times_out_with_exit_75() {
    let (addr, h) = fake(|r, w| {
        w.write_all(b"220 fake ESMTP\r\n").unwrap();
        expect_line(r, "EHLO ");
        std::thread::sleep(Duration::from_secs(3));
    });
    let started = Instant::now();
    let o =
        send(&["--server", &addr.to_string(), "--tls", "off", "--timeout", "1", "--from", "a@x", "--to", "b@y"], b"x");
    assert_eq!(o.status, Some(75), "{}", o.stderr);
    assert!(o.stderr.contains("timeout waiting for the reply to EHLO"), "{}", o.stderr);
    assert!(started.elapsed() < Duration::from_secs(3));
    let _ = h.join();
}

#[test]
fn crlf_in_an_address_is_refused_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let server = listener.local_addr().unwrap().to_string();
    let o = send(&["--server", &server, "--tls", "off", "--from", "a@x.test", "--to", "b@y.test\r\nRSET"], b"x");
    assert_eq!(o.status, Some(65), "{}", o.stderr);
    assert!(o.stderr.contains("forbidden character"), "{}", o.stderr);
    let o = send(&["--server", &server, "--tls", "off", "--from", "a@x.test\nRSET", "--to", "b@y.test"], b"x");
    assert_eq!(o.status, Some(65), "{}", o.stderr);
    let e = client::send(
        &SendOptions::new(&server, "client.test"),
        &Envelope::new("a@x.test", ["b@y\r\n.\r\nMAIL FROM:<evil@x>"]),
        &b"x"[..],
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Invalid(_)), "{e}");
    assert!(listener.accept().is_err(), "nothing may connect");
}

#[test]
fn no_server_is_a_clear_error_and_help_has_examples() {
    // Without --server the message goes to the MX hosts (tests/mx.rs), which take no AUTH.
    let o = send(&["--from", "a@x.test", "--to", "b@y.test", "--auth-user", "me"], b"x");
    assert_eq!(o.status, Some(64), "{}", o.stderr);
    assert!(o.stderr.contains("--auth-user needs --server"), "{}", o.stderr);
    let o = run(program().arg("--help"), b"", T);
    assert_eq!(o.status, Some(0));
    assert!(o.stdout.contains("EXAMPLES:") && o.stdout.contains("EXIT STATUS"), "{}", o.stdout);
}

#[test]
fn unreadable_message_file_is_exit_74_and_nothing_is_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let server = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-message.eml");
    let base = ["--server", &server, "--tls", "off", "--from", "a@x.test", "--to", "b@y.test", "--file"];
    // A file that does not exist: EX_IOERR, naming the file.
    let o = send(&[&base[..], &[s(&missing)]].concat(), b"");
    assert_eq!(o.status, Some(74), "{}", o.stderr);
    assert!(o.stderr.contains(s(&missing)), "{}", o.stderr);
    // A directory opens but cannot be read as a message: EX_IOERR too.
    let o = send(&[&base[..], &[s(dir.path())]].concat(), b"");
    assert_eq!(o.status, Some(74), "{}", o.stderr);
    #[cfg(unix)]
    {
        // A file without read permission (unless we are root, who reads it anyway).
        use std::os::unix::fs::PermissionsExt;
        let locked = dir.path().join("locked.eml");
        std::fs::write(&locked, "Subject: locked\r\n\r\nx\r\n").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read(&locked).is_err() {
            let o = send(&[&base[..], &[s(&locked)]].concat(), b"");
            assert_eq!(o.status, Some(74), "{}", o.stderr);
        }
    }
    assert!(listener.accept().is_err(), "nothing may connect for a message that cannot be read");
}

#[test]
fn serve_help_lists_the_key_flags() {
    let o = run(Command::new(env!("CARGO_BIN_EXE_smtp-std")).args(["serve", "--help"]), b"", T);
    assert_eq!(o.status, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("Usage: smtp-std serve [OPTIONS]"), "{}", o.stdout);
    let mut flags = vec![
        "--listen <ADDR>",
        "--tls-listen <ADDR>",
        "--domain <DOMAIN>",
        "--maildir <DIR>",
        "--tls-cert <FILE>",
        "--tls-key <FILE>",
        "--users <FILE>",
        "--auth-optional",
        "--allow-insecure-auth",
        "--max-message-size <BYTES>",
        "--max-recipients <N>",
        "--max-clients <N>",
        "--timeout <SECS>",
        "--discard",
        "--hostname <NAME>",
    ];
    if cfg!(feature = "mta") {
        flags.extend(["--no-mail-auth", "--dns <ADDR>", "--dns-timeout <SECS>", "--trusted-network <CIDR>"]);
    }
    for flag in flags {
        assert!(o.stdout.contains(flag), "{flag} missing from serve --help:\n{}", o.stdout);
    }
    // Defaults are shown where the user needs them.
    assert!(
        o.stdout.contains("[default: 127.0.0.1:2525]") && o.stdout.contains("[default: ./Maildir]"),
        "{}",
        o.stdout
    );
    // A flag that does not exist is a usage error (clap: 2), not a server started.
    let o = run(Command::new(env!("CARGO_BIN_EXE_smtp-std")).args(["serve", "--no-such-flag"]), b"", T);
    assert_eq!(o.status, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("--no-such-flag"), "{}", o.stderr);
}

/// Dot-stuffs canonical content and appends the terminator: the DATA bytes on the wire.
fn stuffed(canonical: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in canonical.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[test]
fn pipelined_envelope_in_one_group_and_stuffed_body_on_the_wire() {
    let (addr, h) = fake(|r, w| {
        w.write_all(b"220 fake ESMTP\r\n").unwrap();
        expect_line(r, "EHLO client.test");
        w.write_all(b"250-fake\r\n250-PIPELINING\r\n250-DSN\r\n250 SIZE 100000\r\n").unwrap();
        // MAIL, both RCPTs and DATA arrive before any reply (RFC 2920).
        let mut group = Vec::new();
        while group.iter().filter(|&&b| b == b'\n').count() < 4 {
            let buf = r.fill_buf().unwrap();
            assert!(!buf.is_empty(), "client closed");
            let n = buf.len();
            group.extend_from_slice(buf);
            r.consume(n);
        }
        assert_eq!(
            String::from_utf8_lossy(&group),
            "MAIL FROM:<a@x.test> SIZE=42 RET=HDRS ENVID=E+2B1\r\nRCPT TO:<b@y.test> NOTIFY=FAILURE,DELAY\r\n\
             RCPT TO:<c@z.test> NOTIFY=FAILURE,DELAY\r\nDATA\r\n"
        );
        w.write_all(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 user unknown\r\n354 go\r\n").unwrap();
        let mut data = Vec::new();
        while !data.ends_with(b"\r\n.\r\n") {
            let mut line = Vec::new();
            assert!(r.read_until(b'\n', &mut line).unwrap() > 0, "client closed mid-DATA");
            data.extend_from_slice(&line);
        }
        assert_eq!(String::from_utf8_lossy(&data), String::from_utf8_lossy(&stuffed(&canonical(TRICKY))));
        w.write_all(b"250 2.0.0 queued as 1\r\n").unwrap();
        expect_line(r, "QUIT");
        w.write_all(b"221 2.0.0 bye\r\n").unwrap();
    });
    let mut opts = SendOptions::new(&addr.to_string(), "client.test");
    opts.tls = TlsMode::Off;
    let mut env = Envelope::new("a@x.test", ["b@y.test", "c@z.test"]);
    env.size = Some(42);
    env.ret = Some(Ret::Hdrs);
    env.envid = Some("E+1".into());
    for r in &mut env.to {
        r.notify = Some(Notify(Notify::FAILURE | Notify::DELAY));
    }
    // A reader that hands out the message a few bytes at a time (chunk boundaries anywhere).
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let d = client::send(&opts, &env, Trickle(TRICKY)).unwrap();
    assert_eq!(d.reply.to_string(), "250 2.0.0 queued as 1");
    let lines: Vec<String> = d.recipients.iter().map(ToString::to_string).collect();
    assert_eq!(lines, ["b@y.test: accepted 250 2.1.5 ok", "c@z.test: refused 550 5.1.1 user unknown"]);
    assert!(h.join().unwrap().is_empty());
}
