//! The embedding API: hooks in order with the owned session, refusal at connect, custom
//! replies, implicit TLS listener requirements, `Options::secure` (implicit TLS on
//! `listen`) and `Options::allow_insecure_auth`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use smtp_std::proto::data::DataError;
use smtp_std::proto::ehlo::AuthMechanisms;
use smtp_std::proto::parse::{ForwardPath, MailParams, RcptParams, ReversePath};
use smtp_std::proto::Reply;
use smtp_std::{AuthRequest, Decision, Handler, Options, Server, Session};

#[derive(Clone, Default)]
struct Record {
    calls: Arc<Mutex<Vec<String>>>,
    refuse_connect: bool,
}

impl Record {
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
}

impl Handler for Record {
    fn connect(&mut self, s: &Session) -> Decision {
        self.log(format!("connect {}", s.peer.ip()));
        if self.refuse_connect {
            Reply::NOT_ACCEPTING.into()
        } else {
            Decision::Accept
        }
    }
    fn helo(&mut self, _: &Session, host: &str) -> Decision {
        self.log(format!("helo {host}"));
        Decision::Accept
    }
    fn mail_from(&mut self, s: &Session, from: &ReversePath<'_>, p: &MailParams<'_>) -> Decision {
        self.log(format!("mail {from:?} size={:?} helo={:?}", p.size, s.helo));
        Decision::Accept
    }
    fn rcpt_to(&mut self, s: &Session, to: &ForwardPath<'_>, _: &RcptParams<'_>) -> Decision {
        self.log(format!("rcpt {} from={:?}", smtp_std::handler::forward_path_string(to), s.envelope.mail_from));
        if let ForwardPath::Mailbox(m) = to {
            if m.local_part == "nobody" {
                return Decision::reply(550, Some((5, 1, 1)), "No such user here");
            }
        }
        Decision::Accept
    }
    fn data_start(&mut self, s: &Session) -> Decision {
        self.log(format!("data {:?}", s.envelope.rcpt_to));
        Decision::Accept
    }
    fn data_chunk(&mut self, _: &Session, chunk: &[u8]) -> std::io::Result<()> {
        self.log(format!("chunk {}", String::from_utf8_lossy(chunk).escape_debug()));
        Ok(())
    }
    fn data_end(&mut self, _: &Session, size: u64) -> Decision {
        self.log(format!("end {size}"));
        Decision::reply(250, Some((2, 0, 0)), "Ok: kept")
    }
    fn data_abort(&mut self, _: &Session, error: Option<DataError>) {
        self.log(format!("abort {error:?}"));
    }
    fn close(&mut self, s: &Session) {
        self.log(format!("close helo={:?}", s.helo));
    }
}

#[test]
fn hooks_run_in_order_with_the_owned_session() {
    let handler = Record::default();
    let calls = handler.calls.clone();
    let mut server = Server::new(Options::new("embed.test").banner("ESMTP hello"), handler);
    let addr = server.listen("127.0.0.1:0").unwrap();
    let running = server.spawn();
    let mut c = Client::connect(addr);
    assert_eq!(c.reply(), "220 embed.test ESMTP hello\r\n");
    assert!(c.cmd("EHLO client.example").starts_with("250-embed.test"));
    assert!(c.cmd("MAIL FROM:<a@client.example> SIZE=100").starts_with("250 2.1.0"));
    assert_eq!(c.cmd("RCPT TO:<nobody@embed.test>"), "550 5.1.1 No such user here\r\n");
    assert!(c.cmd("RCPT TO:<b@embed.test>").starts_with("250 2.1.5"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert_eq!(c.cmd("Subject: x\r\n\r\n..dot\r\n."), "250 2.0.0 Ok: kept\r\n");
    // A message refused by the core after its end reaches data_abort, not data_end.
    assert!(c.cmd("MAIL FROM:<>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@embed.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd("bare\nLF\r\n.").starts_with("550 5.5.2"));
    assert!(c.cmd("QUIT").starts_with("221"));
    assert!(c.is_closed());
    running.shutdown().unwrap();
    let calls = calls.lock().unwrap().join("\n");
    let chunks: String = calls.lines().filter_map(|l| l.strip_prefix("chunk ")).collect::<Vec<_>>().join("");
    let expected_prefix = "connect 127.0.0.1\nhelo client.example\nmail Mailbox";
    assert!(calls.starts_with(expected_prefix), "{calls}");
    assert!(calls.contains("size=Some(100) helo=Some(\"client.example\")"), "{calls}");
    assert!(calls.contains("rcpt b@embed.test from=Some(\"a@client.example\")"), "{calls}");
    assert!(calls.contains("data [\"b@embed.test\"]"), "{calls}");
    assert!(chunks.starts_with(r"Subject: x\r\n\r\n.dot\r\n"), "{chunks:?}");
    assert!(calls.contains("end 20"), "{calls}");
    assert!(calls.contains("mail Null"), "{calls}");
    assert!(calls.contains("abort Some(BareLineEnding)"), "{calls}");
    assert!(calls.ends_with("close helo=Some(\"client.example\")"), "{calls}");
}

#[test]
fn connect_hook_can_refuse() {
    let handler = Record { refuse_connect: true, ..Default::default() };
    let mut server = Server::new(Options::new("embed.test"), handler);
    let addr = server.listen("127.0.0.1:0").unwrap();
    let _running = server.spawn();
    let mut c = Client::connect(addr);
    let r = c.reply();
    assert!(r.starts_with("554 5.3.2"), "{r}");
    assert!(c.is_closed());
}

#[test]
fn implicit_tls_needs_a_certificate_and_disabled_commands_withdraw_extensions() {
    let mut server = Server::new(Options::new("embed.test"), smtp_std::Sink);
    assert!(server.listen_tls("127.0.0.1:0").is_err());
    let dir = tempfile::tempdir().unwrap();
    let c = cert(dir.path());
    let tls = smtp_std::tls::server_config_from_files(&c.cert_pem, &c.key_pem).unwrap();
    let options = Options::new("embed.test").tls(tls).disabled_commands(&["STARTTLS", "CHUNKING"]);
    let mut server = Server::new(options, smtp_std::Sink);
    let addr = server.listen("127.0.0.1:0").unwrap();
    let _running = server.spawn();
    let mut c = Client::connect(addr);
    c.reply();
    let ehlo = c.cmd("EHLO x.example");
    assert!(!ehlo.contains("STARTTLS") && !ehlo.contains("CHUNKING") && ehlo.contains("PIPELINING"), "{ehlo}");
    assert!(c.cmd("STARTTLS").starts_with("502"));
}

/// A handler that knows one user (`user`/`secret`) and records AUTH attempts and the
/// session's user at MAIL.
#[derive(Clone, Default)]
struct Login {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Handler for Login {
    fn auth(&mut self, s: &Session, a: &AuthRequest<'_>) -> Decision {
        self.calls.lock().unwrap().push(format!("auth {} {} tls={}", a.mechanism, a.identity, s.tls));
        if a.identity == "user" && a.secret == "secret" {
            Decision::Accept
        } else {
            Reply::AUTH_FAILED.into()
        }
    }
    fn mail_from(&mut self, s: &Session, _: &ReversePath<'_>, _: &MailParams<'_>) -> Decision {
        self.calls.lock().unwrap().push(format!("mail user={:?}", s.user));
        Decision::Accept
    }
}

fn plain_and_login() -> AuthMechanisms {
    AuthMechanisms::none().with(AuthMechanisms::PLAIN).with(AuthMechanisms::LOGIN)
}

/// `\0user\0secret` and `\0user\0wrong` in base64 (AUTH PLAIN's initial response).
const GOOD_PLAIN: &str = "AHVzZXIAc2VjcmV0";
const BAD_PLAIN: &str = "AHVzZXIAd3Jvbmc=";

/// The AUTH line of an EHLO reply, if any.
fn auth_line(ehlo: &str) -> Option<&str> {
    ehlo.lines().find(|l| l.get(4..).is_some_and(|k| k.starts_with("AUTH ")))
}

#[test]
fn allow_insecure_auth_offers_and_accepts_auth_in_plain_text() {
    let handler = Login::default();
    let calls = handler.calls.clone();
    let options = Options::new("embed.test").auth_mechanisms(plain_and_login()).allow_insecure_auth(true);
    let mut server = Server::new(options, handler);
    let addr = server.listen("127.0.0.1:0").unwrap();
    let running = server.spawn();

    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220 "));
    let ehlo = c.cmd("EHLO plain.example");
    let line = auth_line(&ehlo).unwrap_or_else(|| panic!("AUTH not offered in plain text: {ehlo}"));
    assert!(line.ends_with("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    // A wrong password is refused by the handler, then the right one is accepted.
    let r = c.cmd(&format!("AUTH PLAIN {BAD_PLAIN}"));
    assert!(r.starts_with("535 5.7.8"), "{r}");
    let r = c.cmd(&format!("AUTH PLAIN {GOOD_PLAIN}"));
    assert!(r.starts_with("235 2.7.0"), "{r}");
    // The session carries the user into the transaction.
    assert!(c.cmd("MAIL FROM:<user@plain.example>").starts_with("250"));
    assert!(c.cmd("QUIT").starts_with("221"));

    // AUTH LOGIN in plain text as well (the server's prompts are base64 "Username:", "Password:").
    let mut c = Client::connect(addr);
    c.reply();
    c.cmd("EHLO plain.example");
    assert_eq!(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd("dXNlcg=="), "334 UGFzc3dvcmQ6\r\n");
    let r = c.cmd("c2VjcmV0");
    assert!(r.starts_with("235 2.7.0"), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));
    running.shutdown().unwrap();

    let calls = calls.lock().unwrap().join("\n");
    assert_eq!(
        calls,
        "auth PLAIN user tls=false\nauth PLAIN user tls=false\nmail user=Some(\"user\")\nauth LOGIN user tls=false"
    );
}

#[test]
fn without_allow_insecure_auth_auth_is_neither_offered_nor_accepted_in_plain_text() {
    let handler = Login::default();
    let calls = handler.calls.clone();
    // The default: allow_insecure_auth(false).
    let options = Options::new("embed.test").auth_mechanisms(plain_and_login());
    let mut server = Server::new(options, handler);
    let addr = server.listen("127.0.0.1:0").unwrap();
    let running = server.spawn();

    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220 "));
    let ehlo = c.cmd("EHLO plain.example");
    assert!(ehlo.starts_with("250-embed.test"), "{ehlo}");
    assert_eq!(auth_line(&ehlo), None, "AUTH offered in plain text: {ehlo}");
    // Even the right credentials are refused before the handler sees them (RFC 4954 §4).
    let r = c.cmd(&format!("AUTH PLAIN {GOOD_PLAIN}"));
    assert!(r.starts_with("538 5.7.11"), "{r}");
    let r = c.cmd("AUTH LOGIN");
    assert!(r.starts_with("538 5.7.11"), "{r}");
    // Not authenticated: MAIL is still allowed (AUTH optional by default), as nobody.
    assert!(c.cmd("MAIL FROM:<a@plain.example>").starts_with("250"));
    assert!(c.cmd("QUIT").starts_with("221"));
    running.shutdown().unwrap();
    assert_eq!(calls.lock().unwrap().join("\n"), "mail user=None");
}

/// A TLS connection to `addr` (20 s read timeout).
fn tls_connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Tls {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

#[test]
fn secure_makes_listen_implicit_tls() {
    // secure(true) without a certificate: listen refuses, like listen_tls.
    let mut server = Server::new(Options::new("embed.test").secure(true), smtp_std::Sink);
    let e = server.listen("127.0.0.1:0").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

    let dir = tempfile::tempdir().unwrap();
    let cert = cert(dir.path());
    let tls = smtp_std::tls::server_config_from_files(&cert.cert_pem, &cert.key_pem).unwrap();
    let handler = Login::default();
    let calls = handler.calls.clone();
    // AUTH without allow_insecure_auth: offered here because the connection is TLS.
    let options = Options::new("embed.test").tls(tls).secure(true).auth_mechanisms(plain_and_login());
    let mut server = Server::new(options, handler);
    let addr = server.listen("127.0.0.1:0").unwrap();
    assert_eq!(server.local_addrs(), vec![(addr, true)]);
    let running = server.spawn();
    let config = tls_client_config(&cert.der);

    // A TLS client: the handshake first, then the greeting over TLS.
    let mut tls = tls_connect(addr, &config);
    assert_eq!(tls_reply(&mut tls), "220 embed.test ESMTP smtp-std\r\n");
    assert!(tls.conn.protocol_version().is_some() && !tls.conn.is_handshaking());
    let ehlo = tls_cmd(&mut tls, "EHLO tls.example");
    assert!(ehlo.starts_with("250-embed.test"), "{ehlo}");
    // Already encrypted: no STARTTLS; AUTH offered (TLS, so no need for allow_insecure_auth).
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(auth_line(&ehlo).is_some_and(|l| l.ends_with("AUTH PLAIN LOGIN")), "{ehlo}");
    let r = tls_cmd(&mut tls, &format!("AUTH PLAIN {GOOD_PLAIN}"));
    assert!(r.starts_with("235 2.7.0"), "{r}");
    assert!(tls_cmd(&mut tls, "MAIL FROM:<user@tls.example>").starts_with("250"));
    assert!(tls_cmd(&mut tls, "QUIT").starts_with("221"));

    // A plaintext client gets no greeting: the server waits for a TLS ClientHello.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut buf = [0u8; 512];
    match plain.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a plaintext client got something before speaking: {other:?} {:?}", &buf[..8]),
    }
    // Speaking SMTP fails the handshake: at most a TLS alert (content type 21), then the
    // connection is closed; never an SMTP reply.
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = plain.write_all(b"EHLO plain.example\r\n");
    let start = Instant::now();
    let mut got = Vec::new();
    loop {
        match plain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the plaintext connection: {e} after {:?}", start.elapsed()),
        }
    }
    assert!(got.is_empty() || got[0] == 21, "not a TLS alert: {:?}", String::from_utf8_lossy(&got));
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("220") && !text.contains("250") && !text.contains("embed.test"), "{text:?}");

    // The listener goes on serving TLS clients.
    let mut tls = tls_connect(addr, &config);
    assert!(tls_reply(&mut tls).starts_with("220 embed.test "));
    assert!(tls_cmd(&mut tls, "QUIT").starts_with("221"));
    running.shutdown().unwrap();
    assert_eq!(calls.lock().unwrap().join("\n"), "auth PLAIN user tls=true\nmail user=Some(\"user\")");
}
