//! The queue under faults: a full disk (blocks or inodes, on a small tmpfs) never stops
//! delivery, and refusals then say `452 4.3.1`; damaged entries and states are kept in
//! `queue/corrupt/`, shown, bounced or deleted, never silently removed.
//!
//! `serve --config` delivers through a smarthost: an in-process receiver on a loopback port,
//! down or up as the test needs. The tmpfs tests need root (`mount -t tmpfs`): elsewhere they
//! say so and pass, except on CI (`CI` set), where they fail.
#![cfg(feature = "mta")]

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use smtp_std::mta::queue::{Entry, Queue, Recipient};
use smtp_std::proto::parse::{ForwardPath, RcptParams};
use smtp_std::{Decision, Handler, Options, Server, Session};

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (`size=2m`, `nr_inodes=200`); `None` (the test is
    /// skipped) where mounting is not allowed, except on CI.
    fn mount(options: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs");
        fs::create_dir(&path).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(&path).output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { path, _dir: dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(std::env::var_os("CI").is_none(), "cannot mount a tmpfs on CI (run as root): {why}");
                eprintln!("skipped: cannot mount a tmpfs (needs root): {why}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Keeps a file system full: a thread that grows a file (or, for inodes, adds empty files)
/// whenever room appears, until dropped.
struct Filler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Filler {
    /// Fills `dir`'s file system (its blocks, or with `inodes` its inodes), and keeps it full.
    fn start(dir: &Path, inodes: bool) -> Filler {
        let dir = dir.join("filler");
        fs::create_dir(&dir).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let full = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, full) = (stop.clone(), full.clone());
            std::thread::spawn(move || {
                let mut big = fs::OpenOptions::new().create(true).append(true).open(dir.join("big")).unwrap();
                let chunk = vec![b'x'; 4096];
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    if inodes {
                        while fs::File::create(dir.join(format!("f{n}"))).is_ok() {
                            n += 1;
                        }
                    } else {
                        while matches!(big.write(&chunk), Ok(k) if k > 0) {}
                    }
                    full.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        wait_until("the disk full", Duration::from_secs(20), || full.load(Ordering::SeqCst));
        Filler { stop, thread: Some(thread) }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the receiver got: each message's content.
type Got = Arc<Mutex<Vec<Vec<u8>>>>;

#[derive(Clone, Default)]
struct Receiver {
    got: Got,
    body: Vec<u8>,
    /// RCPT of this address gets `451 4.7.1`.
    defer: Option<&'static str>,
}

impl Handler for Receiver {
    fn rcpt_to(&mut self, _: &Session, to: &ForwardPath<'_>, _: &RcptParams<'_>) -> Decision {
        if self.defer.is_some_and(|d| smtp_std::handler::forward_path_string(to) == d) {
            return Decision::reply(451, Some((4, 7, 1)), "not now");
        }
        Decision::Accept
    }
    fn data_chunk(&mut self, _: &Session, chunk: &[u8]) -> std::io::Result<()> {
        self.body.extend_from_slice(chunk);
        Ok(())
    }
    fn data_end(&mut self, _: &Session, _: u64) -> Decision {
        self.got.lock().unwrap().push(std::mem::take(&mut self.body));
        Decision::Accept
    }
}

/// The smarthost, listening on `port` from now on; RCPT of `defer` gets `451`.
fn receiver_deferring(port: u16, defer: Option<&'static str>) -> (Got, smtp_std::Running) {
    let r = Receiver { defer, ..Receiver::default() };
    let got = r.got.clone();
    let mut server = Server::new(Options::new("relay.test"), r);
    server.listen(("127.0.0.1", port)).unwrap();
    (got, server.spawn())
}

/// The smarthost, listening on `port` from now on.
fn receiver(port: u16) -> (Got, smtp_std::Running) {
    receiver_deferring(port, None)
}

/// The Message-IDs the receiver got, in order.
fn message_ids(got: &Got) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .filter_map(|body| {
            let text = String::from_utf8_lossy(body);
            let line = text.lines().find(|l| l.starts_with("Message-ID: <"))?;
            Some(line.trim_start_matches("Message-ID: <").trim_end_matches('>').to_owned())
        })
        .collect()
}

/// The mail server of a.test: its config in `dir`, its data in `data`, everything for other
/// domains through the smarthost on `relay_port`; retries every second, a look at the queue
/// every 200 ms.
struct Mta {
    config: PathBuf,
    data: PathBuf,
}

impl Mta {
    fn new(dir: &Path, data: &Path, relay_port: u16, min_free_space: u64) -> Mta {
        fs::write(dir.join("passwd"), passwd_text("alice@a.test:wonderland\n")).unwrap();
        let config = format!(
            r#"hostname = "mx.a.test"
data_dir = {data:?}
accounts = "passwd"
mail_auth = false
[listen]
smtp = ["127.0.0.1:0"]
[outbound]
smarthost = "127.0.0.1:{relay_port}"
smarthost_tls = "none"
timeout = "5s"
[queue]
retry = ["1s"]
scan_interval = "200ms"
lifetime = "1h"
delay_warning = "0s"
[limits]
min_free_space = {min_free_space}
[[domain]]
name = "a.test"
[domain.aliases]
postmaster = "alice"
"#
        );
        let path = dir.join("smtp-std.toml");
        fs::write(&path, config).unwrap();
        Mta { config: path, data: data.to_owned() }
    }

    fn start(&self) -> Program {
        Program::start(self.config.parent().unwrap(), &["--config", self.config.to_str().unwrap()])
    }

    /// `smtp-std queue ARGS`: exit code, stdout, stderr.
    fn queue(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let o = Command::new(env!("CARGO_BIN_EXE_smtp-std"))
            .arg("queue")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn queue_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.queue(args);
        assert_eq!(code, Some(0), "queue {args:?}: {out}{err}");
        out
    }

    fn queue_dir(&self) -> PathBuf {
        self.data.join("queue")
    }

    fn entries(&self) -> usize {
        queue_entries(&self.queue_dir().join("entries"))
    }

    /// Queues `n` messages from alice@a.test to `to` (numbered Message-IDs), due now.
    fn queue_messages(&self, n: usize, to: &str) -> Vec<String> {
        let q = Queue::open(self.queue_dir()).unwrap();
        (0..n)
            .map(|i| {
                let mut e = Entry::new("alice@a.test", vec![Recipient::new(to)], SystemTime::now());
                let m = format!(
                    "From: alice@a.test\r\nTo: {to}\r\nMessage-ID: <{i}@a.test>\r\nSubject: number {i}\r\n\r\nhi\r\n"
                );
                q.submit(&mut e, m.as_bytes()).unwrap()
            })
            .collect()
    }

    /// alice's messages.
    fn alice(&self) -> Vec<String> {
        files(&self.data.join("mailboxes/a.test/alice"), "new")
            .iter()
            .map(|p| String::from_utf8_lossy(&fs::read(p).unwrap()).into_owned())
            .collect()
    }
}

/// Log lines containing `needle`.
fn count(p: &Program, needle: &str) -> usize {
    p.log.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
}

/// About `size` octets of text in lines of 78.
fn body_of(size: usize) -> String {
    format!("{}\r\n", "x".repeat(76)).repeat(size / 78 + 1)
}

/// A plain SMTP transaction to alice@a.test on port 25: the replies to MAIL, and to DATA and
/// the end of data as far as they come.
fn send_to_alice(addr: std::net::SocketAddr, body: &str) -> Vec<String> {
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    let mut replies = vec![c.cmd("MAIL FROM:<someone@b.test>")];
    if replies[0].starts_with("250") {
        assert!(c.cmd("RCPT TO:<alice@a.test>").starts_with("250"));
        let data = c.cmd("DATA");
        let go = data.starts_with("354");
        replies.push(data);
        if go {
            replies.push(c.cmd(&format!("{body}\r\n.")));
        }
    }
    replies
}

/// 36 deferred entries on a full tmpfs (its blocks, or its inodes): attempts go on, each entry
/// about once a second (its next attempt time kept in memory, no burst); once the receiver is
/// up, every entry is delivered once and removed, the disk still full.
fn drain_on_a_full_disk(options: &str, inodes: bool) {
    let Some(tmpfs) = Tmpfs::mount(options) else { return };
    let dir = tempfile::tempdir().unwrap();
    let relay_port = free_port();
    let mta = Mta::new(dir.path(), &tmpfs.path.join("data"), relay_port, 0);
    let ids = mta.queue_messages(36, "bob@far.test");
    let program = mta.start();
    wait_until("a first attempt of each entry", Duration::from_secs(30), || count(&program, "deferred") >= 36);

    let filler = Filler::start(&tmpfs.path, inodes);
    let st = nix::sys::statvfs::statvfs(&tmpfs.path).unwrap();
    if inodes {
        assert_eq!(st.files_available(), 0);
    } else {
        assert!(st.blocks_available() == 0, "{} blocks free", st.blocks_available());
    }
    // Receiving on a full disk: 452 4.3.1 (at DATA when no file can be made, or at the end of
    // data when the content cannot be written).
    let replies = send_to_alice(program.addr, &body_of(400_000));
    assert!(replies.last().unwrap().starts_with("452 4.3.1 Insufficient system storage"), "{replies:?}");

    // The disk full, the receiver down: attempts go on, about once a second per entry.
    let before = count(&program, "deferred");
    let window = Duration::from_secs(3);
    std::thread::sleep(window);
    let attempts = count(&program, "deferred") - before;
    assert!(attempts >= 36, "attempts stopped on the full disk: {attempts} in {window:?}");
    assert!(attempts <= 36 * 5, "a burst: {attempts} attempts of 36 entries in {window:?} (1 s retry)");

    let start = Instant::now();
    let (got, _running) = receiver(relay_port);
    wait_until("the queue drained", Duration::from_secs(60), || mta.entries() == 0);
    let took = start.elapsed();
    let st = nix::sys::statvfs::statvfs(&tmpfs.path).unwrap();
    let still_full = if inodes { st.files_available() <= 1 } else { st.blocks_available() <= 1 };
    assert!(still_full, "the disk was not full any more: {st:?}");
    drop(filler);

    let mut delivered = message_ids(&got);
    delivered.sort();
    let mut want: Vec<String> = (0..36).map(|i| format!("{i}@a.test")).collect();
    want.sort();
    assert_eq!(delivered, want, "each entry delivered once");
    assert!(took < Duration::from_secs(30), "the drain took {took:?}");
    // One warning when the disk filled, not one per entry and look (the probe saw 1,350
    // lines), nor one each time an entry's removal freed room that the filler took again
    // (only when, for a moment, nothing was owed any more: then the disk had room indeed);
    // one line for the refused message.
    let lines: Vec<String> =
        program.log.lock().unwrap().iter().filter(|l| l.contains("No space left on device")).cloned().collect();
    let full_lines = lines.len();
    assert!((1..=3).contains(&count(&program, "the disk is full;")), "{lines:#?}");
    assert!(full_lines <= 5, "{full_lines} lines about the full disk: {lines:#?}");
    assert_eq!(count(&program, "queue attempt failed"), 0, "{:?}", program.log.lock().unwrap());
    eprintln!(
        "full disk ({options}): {} entries drained in {took:?} once the receiver was up; {attempts} attempts \
         in {window:?} while it was down; {full_lines} log lines about the full disk",
        ids.len()
    );
    drop(program);
}

#[test]
fn deferred_entries_drain_on_a_full_disk() {
    drain_on_a_full_disk("size=2m,mode=0700", false);
}

#[test]
fn deferred_entries_drain_with_no_inode_left() {
    drain_on_a_full_disk("size=16m,nr_inodes=400,mode=0700", true);
}

#[test]
fn a_partial_delivery_on_a_full_disk_is_kept_in_memory_and_written_later() {
    let Some(tmpfs) = Tmpfs::mount("size=2m,mode=0700") else { return };
    let dir = tempfile::tempdir().unwrap();
    let relay_port = free_port();
    let (got, _running) = receiver_deferring(relay_port, Some("carol@far.test"));
    let mta = Mta::new(dir.path(), &tmpfs.path.join("data"), relay_port, 0);
    // bob asks for a success report; carol's host defers. First attempt in 3 s: the disk is
    // full by then.
    let q = Queue::open(mta.queue_dir()).unwrap();
    let mut bob = Recipient::new("bob@far.test");
    bob.notify = Some("SUCCESS".into());
    let mut e = Entry::new("alice@a.test", vec![bob, Recipient::new("carol@far.test")], SystemTime::now());
    e.next_attempt += 3;
    let id = q.submit(&mut e, b"From: alice@a.test\r\nMessage-ID: <two@a.test>\r\nSubject: two\r\n\r\nhi\r\n").unwrap();
    let program = mta.start();
    let filler = Filler::start(&tmpfs.path, false);
    assert_eq!(mta.queue_ok(&["show", &id]).matches("state = \"pending\"").count(), 2, "not attempted yet");

    wait_until("bob's copy", Duration::from_secs(20), || message_ids(&got).len() == 1);
    wait_until("three attempts for carol", Duration::from_secs(20), || {
        program.log.lock().unwrap().iter().filter(|l| l.contains("carol@far.test") && l.contains("deferred")).count()
            >= 3
    });
    assert_eq!(message_ids(&got), ["two@a.test"], "bob's outcome is kept in memory: no second copy");
    wait_until("the full disk logged", Duration::from_secs(10), || count(&program, "the disk is full;") > 0);
    assert_eq!(count(&program, "the disk is full;"), 1);
    let show = mta.queue_ok(&["show", &id]);
    assert_eq!(show.matches("state = \"pending\"").count(), 2, "nothing written on the full disk: {show}");
    assert!(mta.alice().is_empty());

    // Room again: the report, then the state are written at the entry's next attempt.
    drop(filler);
    fs::remove_file(tmpfs.path.join("filler/big")).unwrap();
    wait_until("bob's success report", Duration::from_secs(20), || !mta.alice().is_empty());
    let report = &mta.alice()[0];
    assert!(report.contains("Action: delivered") && report.contains("bob@far.test"), "{report}");
    assert!(!report.contains("carol@far.test"), "{report}");
    wait_until("the state written", Duration::from_secs(20), || {
        mta.queue_ok(&["show", &id]).contains("state = \"delivered\"")
    });
    wait_until("the end of the full disk logged", Duration::from_secs(20), || {
        program.log_contains("the disk has room again")
    });
    assert_eq!(message_ids(&got), ["two@a.test"]);
    assert_eq!(mta.alice().len(), 1, "one report");
    drop(program);
}

#[test]
fn mail_below_min_free_space_gets_452() {
    // The config key (a huge value: no disk has that much free), then off.
    let dir = tempfile::tempdir().unwrap();
    let mta = Mta::new(dir.path(), &dir.path().join("data"), free_port(), u64::MAX / 2);
    let program = mta.start();
    let r = send_to_alice(program.addr, "Subject: hi\r\n\r\nhi");
    assert!(r[0].starts_with("452 4.3.1 Insufficient system storage"), "{r:?}");
    let r = send_to_alice(program.addr, "Subject: hi\r\n\r\nhi");
    assert!(r[0].starts_with("452 4.3.1"), "{r:?}");
    wait_until("the refusal logged", Duration::from_secs(10), || count(&program, "MAIL is refused with 452 4.3.1") > 0);
    let r = send_to_alice(program.addr, "Subject: hi\r\n\r\nhi");
    assert!(r[0].starts_with("452 4.3.1"), "{r:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&program, "MAIL is refused with 452 4.3.1"), 1, "logged once");
    drop(program);
    let mta = Mta::new(dir.path(), &dir.path().join("data"), free_port(), 0);
    let program = mta.start();
    let r = send_to_alice(program.addr, "Subject: hi\r\n\r\nhi");
    assert!(r[0].starts_with("250") && r[2].starts_with("250"), "{r:?}");
    drop(program);

    // The flag of `serve --maildir`.
    let maildir = dir.path().join("Maildir");
    let m = maildir.to_str().unwrap();
    let program =
        Program::start(dir.path(), &["--maildir", m, "--no-mail-auth", "--min-free-space", "9000000000000000000"]);
    let r = send_to_alice(program.addr, "Subject: hi\r\n\r\nhi");
    assert!(r[0].starts_with("452 4.3.1 Insufficient system storage"), "{r:?}");
    drop(program);
    let program = Program::start(dir.path(), &["--maildir", m, "--no-mail-auth", "--min-free-space", "0"]);
    let r = send_to_alice(program.addr, "Subject: hi\r\n\r\nhi");
    assert!(r[2].starts_with("250"), "{r:?}");
}

#[test]
fn a_write_failing_for_space_during_data_gets_452() {
    let Some(tmpfs) = Tmpfs::mount("size=512k,mode=0700") else { return };
    let dir = tempfile::tempdir().unwrap();
    let maildir = tmpfs.path.join("Maildir");
    let args = ["--maildir", maildir.to_str().unwrap(), "--no-mail-auth", "--min-free-space", "0"];
    let program = Program::start(dir.path(), &args);
    // 1 MB into 512 KiB: the content cannot be written.
    let r = send_to_alice(program.addr, &format!("Subject: big\r\n\r\n{}", body_of(1 << 20)));
    assert!(r[2].starts_with("452 4.3.1 Insufficient system storage"), "{r:?}");
    assert!(files(&maildir, "tmp").is_empty() && files(&maildir, "new").is_empty());
    // A message that fits still goes in.
    let r = send_to_alice(program.addr, "Subject: small\r\n\r\nhi");
    assert!(r[2].starts_with("250"), "{r:?}");
    assert_eq!(files(&maildir, "new").len(), 1);
    drop(program);
}

/// A queue of one message to bob@far.test whose files `damage` changes, then `serve`: the
/// damaged entry is moved into corrupt/ with one log line naming it.
fn damaged(damage: impl FnOnce(&Queue, &str)) -> (tempfile::TempDir, Mta, Program, String) {
    let dir = tempfile::tempdir().unwrap();
    let mta = Mta::new(dir.path(), &dir.path().join("data"), free_port(), 0);
    let id = mta.queue_messages(1, "bob@far.test").remove(0);
    damage(&Queue::open(mta.queue_dir()).unwrap(), &id);
    let program = mta.start();
    wait_until("the damage logged", Duration::from_secs(20), || count(&program, "damaged, kept in") >= 1);
    // Logged once, not at each look at the queue.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(count(&program, "damaged, kept in"), 1, "{:?}", program.log.lock().unwrap());
    assert!(program.log_contains(&id));
    (dir, mta, program, id)
}

#[test]
fn a_truncated_entry_with_a_state_is_kept_shown_and_bounced() {
    let (_dir, mta, program, id) = damaged(|q, id| {
        // Attempted once (its state says so): acknowledged for sure.
        let mut e = q.load(id).unwrap();
        e.attempts = 1;
        e.next_attempt += 3600;
        e.recipients[0].last_reply = Some("451 4.4.1 try later".into());
        q.save(&e).unwrap();
        let path = q.entry_path(id);
        let len = fs::metadata(&path).unwrap().len();
        fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 5).unwrap();
    });
    assert!(program.log_contains("damaged, kept in"), "{:?}", program.log.lock().unwrap());
    let line = program.log.lock().unwrap().iter().find(|l| l.contains("damaged, kept in")).cloned().unwrap();
    assert!(line.contains(&format!("corrupt/{id}")) && line.contains("cut short"), "{line}");
    let corrupt = mta.queue_dir().join("corrupt");
    assert!(corrupt.join(&id).exists() && corrupt.join(format!("{id}.state")).exists());
    assert_eq!(mta.entries(), 0);

    let list = mta.queue_ok(&["list"]);
    assert!(list.contains(&format!("{id}  corrupt: ")) && list.contains("cut short: 5 of its message's"), "{list}");
    assert!(list.contains("from alice@a.test") && list.contains("bob@far.test pending"), "{list}");
    assert!(list.contains("0 entries, 0 recipients pending, 1 corrupt"), "{list}");
    let show = mta.queue_ok(&["show", &id]);
    assert!(
        show.contains("CORRUPT") && show.contains("attempts = 1") && show.contains("451 4.4.1 try later"),
        "{show}"
    );
    assert!(show.contains("Subject: number 0") && show.contains("bytes of the message are there"), "{show}");
    assert_eq!(mta.queue(&["retry", &id]).0, Some(1), "no retry of a corrupt entry");

    let (code, _, err) = mta.queue(&["bounce", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!corrupt.join(&id).exists() && !corrupt.join(format!("{id}.state")).exists());
    wait_until("alice's bounce", Duration::from_secs(20), || !mta.alice().is_empty());
    let bounce = &mta.alice()[0];
    assert!(bounce.contains("Action: failed") && bounce.contains("bob@far.test"), "{bounce}");
    assert!(bounce.contains("(the queued copy was") && bounce.contains("Subject: number 0"), "{bounce}");
    assert_eq!(mta.queue(&["show", &id]).0, Some(67));
}

#[test]
fn a_garbled_envelope_is_kept_shown_and_deleted() {
    let (_dir, mta, _program, id) = damaged(|q, id| {
        let path = q.entry_path(id);
        let text = fs::read(&path).unwrap();
        let at = text.windows(8).position(|w| w == b"from = \"").unwrap();
        let mut garbled = text.clone();
        garbled[at + 7] = b'[';
        fs::write(&path, garbled).unwrap();
    });
    let list = mta.queue_ok(&["list"]);
    assert!(list.contains(&format!("{id}  corrupt: ")) && list.contains("envelope: "), "{list}");
    assert!(list.contains("no envelope can be read: the sender is unknown"), "{list}");
    let show = mta.queue_ok(&["show", &id]);
    assert!(show.contains("CORRUPT") && show.contains("smtp-std-queue 1 ") && show.contains("from = ["), "{show}");
    assert!(show.contains("Subject: number 0"), "the message's header: {show}");
    let (code, _, err) = mta.queue(&["bounce", &id]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("cannot bounce {id}")) && err.contains("the sender is unknown"), "{err}");
    assert!(mta.queue_dir().join("corrupt").join(&id).exists(), "kept after a bounce that cannot be");
    mta.queue_ok(&["delete", &id]);
    assert!(!mta.queue_dir().join("corrupt").join(&id).exists());
    assert!(mta.queue_ok(&["list"]).contains("0 entries, 0 recipients pending\n"));
    assert_eq!(mta.queue(&["delete", &id]).0, Some(67));
}

#[test]
fn a_bad_first_line_is_kept_shown_and_deleted() {
    let (_dir, mta, _program, id) = damaged(|q, id| {
        let path = q.entry_path(id);
        let text = fs::read(&path).unwrap();
        let nl = text.iter().position(|&b| b == b'\n').unwrap();
        fs::write(&path, [&b"not what you think 1 2"[..], &text[nl..]].concat()).unwrap();
    });
    let list = mta.queue_ok(&["list"]);
    assert!(list.contains("not a queue entry (bad first line)") && list.contains("sender is unknown"), "{list}");
    let show = mta.queue_ok(&["show", &id]);
    assert!(show.contains("CORRUPT") && show.contains("not what you think 1 2"), "{show}");
    assert!(show.contains("where it starts cannot be read"), "{show}");
    assert_eq!(mta.queue(&["bounce", &id]).0, Some(1));
    mta.queue_ok(&["delete", &id]);
    assert!(fs::read_dir(mta.queue_dir().join("corrupt")).unwrap().next().is_none());
}

#[test]
fn a_garbled_state_falls_back_to_the_envelope_and_is_delivered() {
    let relay_port = free_port();
    let (got, _running) = receiver(relay_port);
    let dir = tempfile::tempdir().unwrap();
    let mta = Mta::new(dir.path(), &dir.path().join("data"), relay_port, 0);
    let id = mta.queue_messages(1, "bob@far.test").remove(0);
    let q = Queue::open(mta.queue_dir()).unwrap();
    fs::write(q.state_path(&id), "attempts = \"many\"\nfrom = [").unwrap();
    let program = mta.start();
    wait_until("the message delivered", Duration::from_secs(20), || message_ids(&got) == ["0@a.test"]);
    wait_until("the entry removed", Duration::from_secs(10), || mta.entries() == 0);
    wait_until("the damage logged", Duration::from_secs(10), || count(&program, "queue state damaged, kept in") > 0);
    assert_eq!(count(&program, "queue state damaged, kept in"), 1, "{:?}", program.log.lock().unwrap());
    let kept = mta.queue_dir().join("corrupt").join(format!("{id}.state"));
    assert_eq!(fs::read_to_string(&kept).unwrap(), "attempts = \"many\"\nfrom = [", "kept as it was");

    let list = mta.queue_ok(&["list"]);
    assert!(list.contains(&format!("{id}  corrupt state (the entry goes on from its envelope)")), "{list}");
    let show = mta.queue_ok(&["show", &id]);
    assert!(show.contains("CORRUPT") && show.contains("attempts = \"many\""), "{show}");
    assert!(show.contains("the entry goes on from its envelope at submission"), "{show}");
    mta.queue_ok(&["delete", &id]);
    assert!(!kept.exists());
    assert_eq!(message_ids(&got), ["0@a.test"], "delivered once");
}
