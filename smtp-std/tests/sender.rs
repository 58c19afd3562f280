//! Sender ownership on submission (issue 18 point 2): alice, logged in, may name only herself
//! (her address, a `+tag` of it, an alias that reaches her) in MAIL FROM, in every mailbox of
//! every `From:` field and in `Sender:`, whatever the recipients (ours or another domain's)
//! and however the message came (DATA or BDAT, CRLF or bare LF under a permissive policy).
//! A refused message leaves nothing behind: no mailbox copy, no queue entry, no signature.
//!
//! The mail server's handler runs in process: accounts and aliases of a.test, Maildirs, the
//! queue (no workers: entries stay), a signer that only counts, AUTH PLAIN without TLS.
#![cfg(feature = "mta")]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use common::*;
use smtp_std::mta::accounts::passwd::PasswdFile;
use smtp_std::mta::accounts::{AccountsFile, Directory};
use smtp_std::mta::config::DomainConfig;
use smtp_std::mta::inbound::{InboundHandler, InboundPolicy, Outgoing, Route};
use smtp_std::mta::mailbox::Store;
use smtp_std::mta::queue::Queue;
use smtp_std::proto::data::BarePolicy;
use smtp_std::proto::ehlo::AuthMechanisms;
use smtp_std::{Options, Running, Server};

struct Submission {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    signed: Arc<AtomicUsize>,
    _running: Running,
}

impl Submission {
    /// a.test: alice and bob; `sales` reaches both, `info` only bob; a catch-all to alice
    /// (which makes no address hers).
    fn start(bare: BarePolicy) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let passwd = passwd_text("alice@a.test:wonderland\nbob@a.test:builder\n");
        let accounts = Arc::new(AccountsFile::fixed(PasswdFile::parse(&passwd).unwrap()));
        let mut aliases = BTreeMap::new();
        aliases.insert("sales".to_owned(), vec!["alice@a.test".to_owned(), "bob@a.test".to_owned()]);
        aliases.insert("info".to_owned(), vec!["bob@a.test".to_owned()]);
        let domain =
            DomainConfig { name: "a.test".into(), catch_all: Some(vec!["alice@a.test".into()]), aliases, dkim: None };
        let directory = Arc::new(Directory::new(vec![domain], accounts.clone()));
        let signed = Arc::new(AtomicUsize::new(0));
        let count = signed.clone();
        let outgoing = Outgoing {
            queue: Queue::open(dir.path().join("queue")).unwrap(),
            notify: Box::new(|_| {}),
            first_attempt_after: std::time::Duration::ZERO,
            sign: Box::new(move |_, _| {
                count.fetch_add(1, Ordering::SeqCst);
                None
            }),
            srs_secret: vec![7; 32],
            relay_networks: Vec::new(),
        };
        let route = Route::Accounts { directory, store: Arc::new(Store::Maildirs(dir.path().join("mailboxes"))) };
        let policy =
            InboundPolicy { hostname: "mx.a.test".into(), route, logins: Some(accounts), outgoing: Some(outgoing) };
        let mut options = Options::new("mx.a.test")
            .auth_mechanisms(AuthMechanisms::none().with(AuthMechanisms::PLAIN))
            .allow_insecure_auth(true)
            .auth_optional(false);
        options.config_mut().bare_line_endings = bare;
        let mut server = Server::new(options, InboundHandler::new(policy));
        let addr = server.listen("127.0.0.1:0").unwrap();
        Submission { addr, dir, signed, _running: server.spawn() }
    }

    /// A session logged in as alice.
    fn login(&self) -> Client {
        let mut c = Client::connect(self.addr);
        assert!(c.reply().starts_with("220"));
        assert!(c.cmd("EHLO client.a.test").contains("CHUNKING"));
        let plain = base64::engine::general_purpose::STANDARD.encode("\0alice@a.test\0wonderland");
        let r = c.cmd(&format!("AUTH PLAIN {plain}"));
        assert!(r.starts_with("235"), "{r}");
        c
    }

    fn mailbox(&self, account: &str) -> PathBuf {
        let (local, domain) = account.split_once('@').unwrap();
        self.dir.path().join("mailboxes").join(domain).join(local)
    }

    /// Messages in bob's and alice's mailboxes (`new/`, and leftovers in `tmp/`).
    fn stored(&self) -> (usize, usize) {
        let (a, b) = (self.mailbox("alice@a.test"), self.mailbox("bob@a.test"));
        (files(&a, "new").len() + files(&b, "new").len(), files(&a, "tmp").len() + files(&b, "tmp").len())
    }

    /// Queue entries, and leftovers in the queue's spool.
    fn queued(&self) -> (usize, usize) {
        let q = self.dir.path().join("queue");
        let entries = queue_entries(&q.join("entries"));
        (entries, files(&q.join("spool"), "tmp").len())
    }

    fn signed(&self) -> usize {
        self.signed.load(Ordering::SeqCst)
    }

    /// Nothing stored, queued, signed or left in a spool.
    fn assert_nothing_kept(&self) {
        assert_eq!((self.stored(), self.queued(), self.signed()), ((0, 0), (0, 0), 0));
    }
}

/// One transaction with DATA (the message as given, then `.`): the reply to the end of data.
fn data(c: &mut Client, rcpts: &[&str], message: &str) -> String {
    envelope(c, rcpts);
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(message.as_bytes());
    c.cmd(".")
}

/// One transaction with BDAT, one chunk per element: the reply to the last one.
fn bdat(c: &mut Client, rcpts: &[&str], chunks: &[&[u8]]) -> String {
    envelope(c, rcpts);
    let mut last = String::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let end = if i + 1 == chunks.len() { " LAST" } else { "" };
        c.send(format!("BDAT {}{end}\r\n", chunk.len()).as_bytes());
        c.send(chunk);
        last = c.reply();
        if i + 1 < chunks.len() {
            assert!(last.starts_with("250"), "chunk {i}: {last}");
        }
    }
    last
}

fn envelope(c: &mut Client, rcpts: &[&str]) {
    let r = c.cmd("MAIL FROM:<alice@a.test>");
    assert!(r.starts_with("250"), "{r}");
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(r.starts_with("250"), "{rcpt}: {r}");
    }
}

const LOCAL: &[&str] = &["bob@a.test"];
const REMOTE: &[&str] = &["carol@b.test"];
const BOTH: &[&str] = &["bob@a.test", "carol@b.test"];

fn message(header: &str) -> String {
    format!("{header}\r\nTo: bob@a.test, carol@b.test\r\nSubject: hi\r\n\r\nFrom: anyone@anywhere.test\r\nhello\r\n")
}

#[test]
fn foreign_senders_get_553_and_nothing_is_kept() {
    let s = Submission::start(BarePolicy::Reject);
    // A session per message: refusals count as errors, and a session has few of them.
    let refused = |rcpts: &[&str], header: &str| data(&mut s.login(), rcpts, &message(header));
    let cases: &[(&str, &[&str], &str)] = &[
        // A local recipient: checked as well as mail for other domains.
        ("From: bob@a.test", LOCAL, "<bob@a.test>"),
        ("From: Bob <bob@a.test>", BOTH, "<bob@a.test>"),
        // The comment trick, two mailboxes in one From:, two From: fields.
        ("From: bob@a.test (<alice@a.test>)", REMOTE, "<bob@a.test>"),
        ("From: bob@a.test (<alice@a.test>)", LOCAL, "<bob@a.test>"),
        ("From: bob@a.test, <alice@a.test>", REMOTE, "<bob@a.test>"),
        ("From: Alice <alice@a.test>, Bob <bob@a.test>", LOCAL, "<bob@a.test>"),
        ("From: Alice <alice@a.test>\r\nFrom: bob@a.test", REMOTE, "<bob@a.test>"),
        ("From: Alice <alice@a.test>\r\nfrom : bob@a.test", BOTH, "<bob@a.test>"),
        // A fold hiding a second mailbox, a display name that looks like hers.
        ("From: alice@a.test\r\n\t, bob@a.test", REMOTE, "<bob@a.test>"),
        ("From: \"alice@a.test\" <boss@b.test>", REMOTE, "<boss@b.test>"),
        // A group with a foreign member; an alias that does not reach her; the catch-all.
        ("From: team: alice@a.test, bob@a.test;", REMOTE, "<bob@a.test>"),
        ("From: info@a.test", LOCAL, "<info@a.test>"),
        ("From: nobody@a.test", LOCAL, "<nobody@a.test>"),
    ];
    for (header, rcpts, who) in cases {
        let r = refused(rcpts, header);
        let want = format!("553 5.7.1 From: {who} rejected: not owned by user alice@a.test");
        assert!(r.starts_with(&want), "{header:?} to {rcpts:?}: {r}");
    }
    // Sender: foreign, From: hers.
    for rcpts in [LOCAL, REMOTE] {
        let r = refused(rcpts, "From: alice@a.test\r\nSender: Bob <bob@a.test>");
        assert!(r.starts_with("553 5.7.1 Sender: <bob@a.test> rejected: not owned by user alice@a.test"), "{r}");
    }
    // Not an address list, no mailbox, no From: at all: 550 5.6.0.
    for (header, want) in [
        ("From: alice@a.test bob@a.test", "550 5.6.0 From: header field not understood (expected ',' between"),
        ("From: alice@a.test (<bob@a.test>", "550 5.6.0 From: header field not understood (comment not closed"),
        ("From: <alice@a.test", "550 5.6.0 From: header field not understood (expected '>'"),
        ("From: alice@a.test\r\nSender: \"bob@a.test", "550 5.6.0 Sender: header field not understood"),
        ("From: undisclosed:;", "550 5.6.0 From: header field names no mailbox"),
        ("Reply-To: alice@a.test", "550 5.6.0 No From: header field"),
    ] {
        let r = refused(BOTH, header);
        assert!(r.starts_with(want), "{header:?}: {r}");
    }
    // The envelope sender is still checked at MAIL.
    let mut c = s.login();
    let r = c.cmd("MAIL FROM:<bob@a.test>");
    assert!(r.starts_with("553 5.7.1 <bob@a.test>: Sender address rejected: not owned by user alice@a.test"), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));
    s.assert_nothing_kept();
}

#[test]
fn bdat_is_checked_like_data() {
    // CRLF chunks that cut header lines (and the second From:) in two.
    let s = Submission::start(BarePolicy::Reject);
    let mut c = s.login();
    let chunks: &[&[u8]] =
        &[b"From: Alice <alice@a.test>\r\nFr", b"om: bob", b"@a.test\r", b"\nSubject: x\r\n\r\nhi\r\n"];
    for rcpts in [LOCAL, REMOTE, BOTH] {
        let r = bdat(&mut c, rcpts, chunks);
        assert!(r.starts_with("553 5.7.1 From: <bob@a.test> rejected"), "{r}");
    }
    // Bare LF header lines: whoever refuses them (the core's default policy may), nothing is
    // kept; if they get through to the check, it reads them as lines.
    let r = bdat(&mut c, BOTH, &[b"From: Alice <alice@a.test>\nFrom: bob@a.test\n\nhi\n"]);
    assert!(r.starts_with('5'), "{r}");
    let r = bdat(&mut c, REMOTE, &[b"From: Alice <alice@a.test>\r\nSubject: ok\r\n\r\nhi\r\n"]);
    assert!(r.starts_with("250"), "{r}");
    assert_eq!((s.queued(), s.signed()), ((1, 0), 1));
    assert_eq!(s.stored(), (0, 0));
}

#[test]
fn bare_lf_headers_under_a_permissive_policy_are_still_read() {
    let s = Submission::start(BarePolicy::Allow);
    let mut c = s.login();
    let cases: &[&[u8]] = &[
        b"From: Alice <alice@a.test>\nFrom: bob@a.test\n\nhi\n",
        b"From: bob@a.test (<alice@a.test>)\nSubject: x\n\nhi\n",
        b"From: alice@a.test\n ,bob@a.test\n\nhi\n",
        b"Subject: x\nSender: bob@a.test\nFrom: alice@a.test\n\nhi\n",
    ];
    for m in cases {
        for rcpts in [LOCAL, REMOTE] {
            let r = bdat(&mut c, rcpts, &[m]);
            assert!(r.starts_with("553 5.7.1 "), "{}: {r}", String::from_utf8_lossy(m));
        }
    }
    // The same with DATA (bare LF lines, CRLF only before the final dot).
    let r = data(&mut c, BOTH, "From: Alice <alice@a.test>\nFrom: bob@a.test\n\nhi\r\n");
    assert!(r.starts_with("553 5.7.1 From: <bob@a.test> rejected"), "{r}");
    // A bare CR in the header section: readers disagree on its lines, so it is refused.
    let r = bdat(&mut c, BOTH, &[b"Subject: x\r\r\nFrom: bob@a.test\r\nFrom: alice@a.test\r\n\r\nhi\r\n"]);
    assert!(r.starts_with("550 5.6.0 Bare CR in the header section"), "{r}");
    s.assert_nothing_kept();
    // Bare LF and all hers: accepted.
    let r = bdat(&mut c, BOTH, &[b"From: Alice\n <alice@a.test>\nSubject: ok\n\nhi\n"]);
    assert!(r.starts_with("250"), "{r}");
    assert_eq!((s.stored().0, s.queued().0), (1, 1));
}

#[test]
fn her_own_addresses_are_accepted() {
    let s = Submission::start(BarePolicy::Reject);
    let mut c = s.login();
    let headers = [
        "From: Alice Liddell <alice@a.test>",
        "From: \"Liddell, Alice\" (home) <Alice@A.TEST>",
        "From: =?utf-8?q?Alice_L?= <alice+lists@a.test>",
        "From: Sales <sales@a.test>",
        "From: alice@a.test\r\nSender: sales@a.test",
        "From: Sales <sales@a.test>\r\nSender: Alice <alice+x@a.test>",
        "From: team: alice@a.test, Sales <sales@a.test>;",
        "From: alice@a.test, alice+x@a.test",
        "From: \"alice\"@a.test",
    ];
    for (i, header) in headers.iter().enumerate() {
        let rcpts = [LOCAL, REMOTE, BOTH][i % 3];
        let r = data(&mut c, rcpts, &message(header));
        assert!(r.starts_with("250 2.0.0"), "{header:?}: {r}");
    }
    assert!(c.cmd("QUIT").starts_with("221"));
    // Three went to bob only, three to carol only, three to both.
    assert_eq!(files(&s.mailbox("bob@a.test"), "new").len(), 6);
    assert_eq!((s.queued(), s.signed()), ((6, 0), 6));
}
