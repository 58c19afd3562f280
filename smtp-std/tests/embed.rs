//! The embedding API: hooks in order with the owned session, refusal at connect, custom
//! replies, implicit TLS listener requirements.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use smtp_std::proto::data::DataError;
use smtp_std::proto::parse::{ForwardPath, MailParams, RcptParams, ReversePath};
use smtp_std::proto::Reply;
use smtp_std::{Decision, Handler, Options, Server, Session};

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
