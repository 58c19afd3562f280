//! `submit-load`: a submission load generator. `--sessions` threads each open one SMTP session
//! (greeting, EHLO, STARTTLS and AUTH as asked) and send `--messages` messages of `--size`
//! bytes over it, one after the other, with `smtp_std::client::SmtpClient`. The clock starts
//! when every session is ready (connected, TLS and AUTH done) and stops when the last `250`
//! arrived; it prints the messages sent, the seconds and messages per second.
//!
//! ```text
//! submit-load --server 127.0.0.1:587 --sessions 20 --messages 500 --size 1024 \
//!     --from alice@a.test --to sink@sink.test --auth-user alice@a.test --password secret \
//!     --tls required --insecure
//! ```
//!
//! Output, on stdout: `ready` (flushed) when the clock starts — `benches/queue.py` takes its
//! own time from that line — then one line `sent=N failed=F elapsed=S rate=R`. Errors go to
//! stderr; a session that fails stops (its remaining messages are counted as failed) and the
//! exit status is 1 when anything failed.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use smtp_std::client::{insecure_tls_config, Auth, Envelope, SendOptions, SmtpClient, TlsMode};

struct Args {
    server: String,
    sessions: usize,
    messages: usize,
    size: usize,
    from: String,
    to: String,
    auth_user: Option<String>,
    password: Option<String>,
    tls: TlsMode,
    insecure: bool,
}

const USAGE: &str = "usage: submit-load --server HOST:PORT [--sessions N] [--messages M per session] \
[--size BYTES] [--from ADDR] [--to ADDR] [--auth-user USER --password PASS] [--tls required|off] [--insecure]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        server: String::new(),
        sessions: 20,
        messages: 100,
        size: 1024,
        from: "load@a.test".into(),
        to: "sink@sink.test".into(),
        auth_user: None,
        password: None,
        tls: TlsMode::Required,
        insecure: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--insecure" {
            a.insecure = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |v: &str| v.parse::<usize>().map_err(|_| format!("{flag}: {v:?} is not a number"));
        match flag.as_str() {
            "--server" => a.server = value,
            "--sessions" => a.sessions = number(&value)?.max(1),
            "--messages" => a.messages = number(&value)?,
            "--size" => a.size = number(&value)?,
            "--from" => a.from = value,
            "--to" => a.to = value,
            "--auth-user" => a.auth_user = Some(value),
            "--password" => a.password = Some(value),
            "--tls" => a.tls = value.parse()?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if a.server.is_empty() {
        return Err(format!("--server is required\n{USAGE}"));
    }
    if a.auth_user.is_some() != a.password.is_some() {
        return Err("--auth-user and --password go together".into());
    }
    Ok(a)
}

/// A message of exactly `size` bytes (when `size` leaves room for the headers): a From: the
/// submission server accepts for the authenticated user, then 76-character lines of text.
fn message(from: &str, to: &str, size: usize) -> Vec<u8> {
    let mut m = format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: submit-load\r\n\r\n").into_bytes();
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor";
    while m.len() + 2 < size {
        let n = (size - 2 - m.len()).min(76);
        m.extend_from_slice(&line[..n]);
        m.extend_from_slice(b"\r\n");
    }
    m
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut options = SendOptions::new(&a.server, "submit-load.test").timeout(Duration::from_secs(120));
    options.tls = a.tls;
    if a.insecure {
        options.tls_config = Some(insecure_tls_config());
    }
    if let (Some(user), Some(password)) = (&a.auth_user, &a.password) {
        options.auth = Some(Auth { user: user.clone(), password: password.clone() });
    }
    let body = Arc::new(message(&a.from, &a.to, a.size));
    let envelope = Arc::new(Envelope::new(&a.from, [a.to.as_str()]));
    // Every session ready (or failed), plus the main thread, before the clock starts.
    let ready = Arc::new(Barrier::new(a.sessions + 1));
    let threads: Vec<_> = (0..a.sessions)
        .map(|n| {
            let (options, body, envelope, ready) = (options.clone(), body.clone(), envelope.clone(), ready.clone());
            let messages = a.messages;
            std::thread::spawn(move || -> (usize, Option<Instant>) {
                let client = SmtpClient::connect(&options);
                ready.wait();
                let mut client = match client {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("session {n}: connecting: {e}");
                        return (0, None);
                    }
                };
                let mut sent = 0;
                for i in 0..messages {
                    match client.send(&envelope, &body[..]) {
                        Ok(d) if d.all_accepted() => sent += 1,
                        Ok(d) => {
                            eprintln!("session {n}, message {i}: refused: {:?}", d.refused().collect::<Vec<_>>());
                            break;
                        }
                        Err(e) => {
                            eprintln!("session {n}, message {i}: {e}");
                            break;
                        }
                    }
                }
                let done = Instant::now();
                let _ = client.quit();
                (sent, Some(done))
            })
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut sent = 0;
    let mut end = start;
    for t in threads {
        let (n, done) = t.join().unwrap_or((0, None));
        sent += n;
        if let Some(d) = done {
            end = end.max(d);
        }
    }
    let total = a.sessions * a.messages;
    let elapsed = end.duration_since(start).as_secs_f64();
    let rate = if elapsed > 0.0 { sent as f64 / elapsed } else { 0.0 };
    println!("sent={sent} failed={} elapsed={elapsed:.3} rate={rate:.1}", total - sent);
    if sent == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
