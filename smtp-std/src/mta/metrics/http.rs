//! The scrape endpoint: a small HTTP/1.1 responder on `std::net` for `GET /metrics`, on
//! threads of its own (a scrape never waits for mail, nor mail for a scrape).
//!
//! Bounds: a request head of at most [`MAX_REQUEST`] octets, read within [`TIMEOUT`] (each
//! read and the whole head), the answer written within it too; at most [`MAX_SCRAPES`]
//! requests at once (more are closed unanswered). Other paths get `404`, other methods `405`,
//! a head too large `431`, a malformed one `400`; every answer closes the connection.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Largest request head read (request line and header fields).
pub const MAX_REQUEST: usize = 8192;
/// Bound on reading a request and on writing its answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Most requests served at once.
pub const MAX_SCRAPES: usize = 8;

/// The content type of the OpenMetrics text format (which Prometheus asks for first).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` (bound already) from a thread of its own, for as long
/// as the process runs.
pub fn spawn(listener: TcpListener) -> io::Result<thread::JoinHandle<()>> {
    let busy = Arc::new(AtomicUsize::new(0));
    thread::Builder::new().name("metrics".into()).spawn(move || loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if busy.fetch_add(1, Ordering::SeqCst) >= MAX_SCRAPES {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(%peer, "metrics: {MAX_SCRAPES} requests at once already: closed");
                    continue;
                }
                let busy = busy.clone();
                let spawned = thread::Builder::new().name("metrics-request".into()).spawn(move || {
                    if let Err(e) = answer(stream) {
                        tracing::debug!(%peer, "metrics: {e}");
                    }
                    busy.fetch_sub(1, Ordering::SeqCst);
                });
                if let Err(e) = spawned {
                    tracing::warn!("metrics: cannot start a thread: {e}");
                }
            }
            Err(e) => {
                // E.g. EMFILE: wait a little rather than spin.
                tracing::warn!("metrics: accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    })
}

/// Reads one request from `stream` and answers it.
fn answer(mut stream: TcpStream) -> io::Result<()> {
    stream.set_write_timeout(Some(TIMEOUT))?;
    let (status, body) = match read_head(&mut stream)? {
        Head::Complete(head) => route(&head),
        Head::TooLarge => ("431 Request Header Fields Too Large", String::new()),
        Head::Closed => return Ok(()),
    };
    let content_type = if status.starts_with("200") { CONTENT_TYPE } else { "text/plain; charset=utf-8" };
    let body = if body.is_empty() && !status.starts_with("200") { format!("{status}\n") } else { body };
    let allow = if status.starts_with("405") { "Allow: GET\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// The status line and body for a request head.
fn route(head: &[u8]) -> (&'static str, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(b"");
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", String::new());
    };
    if !version.starts_with("HTTP/1.") {
        return ("400 Bad Request", String::new());
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", super::get().encode()),
        (_, "/metrics") => ("405 Method Not Allowed", String::new()),
        _ => ("404 Not Found", String::new()),
    }
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    Closed,
}

/// Reads up to the blank line that ends a request head, bounded in size and time.
fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let deadline = Instant::now() + TIMEOUT;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request not complete in time"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Head::Complete(head));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").0, "200 OK");
        assert!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").1.ends_with("# EOF\n"));
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n").0, "404 Not Found");
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n").0, "405 Method Not Allowed");
        assert_eq!(route(b"GET /metrics\r\n\r\n").0, "400 Bad Request");
        assert_eq!(route(b"\xff\xfe\r\n\r\n").0, "400 Bad Request");
    }
}
