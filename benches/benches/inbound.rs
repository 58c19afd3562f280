//! One whole inbound message through the mail server's `InboundHandler` (the handler of
//! `smtp-std serve`), per KiB of body: MAIL, RCPT, then DATA as the session runs it (the strict
//! `DataDecoder` over 64 KiB reads, each chunk into `data_chunk`), and `data_end`: the spool
//! file with the trace prefix and our `Received:`, the Maildir write and the rename into
//! `new/`. No sockets: the handler is driven through its `Handler` methods, as the session
//! does after parsing each command.
//!
//! The Maildir lives on tmpfs (`/dev/shm` when there is one): the handler still calls
//! `fsync` on the file and on `new/` as it always does (there is no switch to turn that off),
//! but on tmpfs an `fsync` returns at once, so the figures are the program's own work, not the
//! disk's. A regression in the spool, the headers, the Maildir code or the decoder shows here.

use std::net::SocketAddr;
use std::path::PathBuf;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use smtp_proto::data::{BarePolicy, DataDecoder};
use smtp_proto::parse::{parse_forward_path, parse_reverse_path, MailParams, RcptParams};
use smtp_std::mta::inbound::{InboundHandler, InboundPolicy, Route};
use smtp_std::mta::maildir::Maildir;
use smtp_std::{Decision, Handler, Session};

/// A message on the wire: a header block, then 76-column lines (1% of them dot-stuffed) up to
/// about `size` octets, then the terminator.
fn wire_message(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 1024);
    out.extend_from_slice(
        b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: a bench message\r\n\
          Message-ID: <bench@example.org>\r\nDate: Mon, 7 Dec 2026 00:00:00 +0000\r\n\r\n",
    );
    let mut n = 0u32;
    while out.len() < size {
        n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        if n.is_multiple_of(100) {
            out.extend_from_slice(b"..");
        }
        for i in 0..76 {
            out.push(b"abcdefghijklmnopqrstuvwxyz0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(i + n as usize) % 63]);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A scratch directory on tmpfs if the machine has one (see the module comment).
fn scratch() -> PathBuf {
    let base =
        ["/dev/shm", "/run/shm"].iter().map(PathBuf::from).find(|p| p.is_dir()).unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("smtp-bench-inbound-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create the bench's scratch directory");
    dir
}

/// One transaction: MAIL, RCPT, DATA (decoded in `read`-sized pieces), end. Returns the reply
/// code of the end of data.
fn one_message(h: &mut InboundHandler, session: &mut Session, wire: &[u8], read: usize) -> u16 {
    let (from, _) = parse_reverse_path(b"<alice@example.org>").unwrap();
    session.envelope.mail_from = Some("alice@example.org".into());
    assert_eq!(h.mail_from(session, &from, &MailParams::default()), Decision::Accept);
    let (to, _) = parse_forward_path(b"<bob@example.net>").unwrap();
    assert_eq!(h.rcpt_to(session, &to, &RcptParams::default()), Decision::Accept);
    session.envelope.rcpt_to = vec!["bob@example.net".into()];
    assert_eq!(h.data_start(session), Decision::Accept);
    let mut dec = DataDecoder::new(BarePolicy::Reject, Some(64 << 20), Some(1000));
    let mut size = 0;
    'reads: for piece in wire.chunks(read) {
        let mut at = 0;
        while at < piece.len() {
            let d = dec.decode(&piece[at..]);
            at += d.consumed;
            if !d.body.is_empty() {
                h.data_chunk(session, d.body).expect("spool write");
            }
            if let Some(end) = d.end {
                size = end.expect("the bench message is valid");
                break 'reads;
            }
        }
    }
    match h.data_end(session, size) {
        Decision::Reply(r) => r.code,
        other => panic!("data_end: {other:?}"),
    }
}

fn bench_inbound(c: &mut Criterion) {
    let dir = scratch();
    let maildir = Maildir::create(dir.join("Maildir")).expect("cannot create the bench Maildir");
    let new = maildir.path().join("new");
    let policy = InboundPolicy {
        hostname: "mx.example.net".into(),
        route: Route::Maildir { maildir, domains: vec!["example.net".into()] },
        logins: None,
        outgoing: None,
    };
    let mut handler = InboundHandler::new(policy);
    let peer: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let local: SocketAddr = "198.51.100.1:25".parse().unwrap();
    let mut session = Session::new(1, peer, local, false);
    session.helo = Some("client.example.org".into());
    session.esmtp = true;
    assert_eq!(handler.connect(&session), Decision::Accept);
    for kib in [1usize, 100, 1024] {
        let wire = wire_message(kib << 10);
        let mut g = c.benchmark_group(format!("inbound_message/{kib}KiB"));
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function("maildir_tmpfs", |b| {
            b.iter(|| {
                let code = one_message(&mut handler, &mut session, black_box(&wire), 64 << 10);
                assert_eq!(code, 250);
                // Keep the Maildir small: a full `new/` would slow the renames down over the run.
                for e in std::fs::read_dir(&new).unwrap().flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            })
        });
        g.finish();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench_inbound);
criterion_main!(benches);
