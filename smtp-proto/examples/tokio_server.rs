//! The same sans-IO core, driven by tokio instead of blocking sockets: proof that `smtp-proto`
//! is runtime-agnostic. It accepts every message and prints its size.
//!
//! ```text
//! cargo run -p smtp-proto --example tokio_server -- 127.0.0.1:2526
//! swaks --server 127.0.0.1:2526 --to you@example.org
//! ```

use smtp_proto::server::{Config, Event, Progress, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves one connection; returns the messages received, in order.
pub async fn serve_connection(mut stream: TcpStream, config: Config) -> std::io::Result<Vec<Vec<u8>>> {
    // The session holds its output and SASL buffers inline (~13 KiB): box it.
    let mut server = Box::new(Server::new(config));
    server.greet("ESMTP smtp-proto on tokio").expect("fresh session");
    let mut buf = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let mut out = vec![0u8; 4096];
    let mut messages = Vec::new();
    let mut message = Vec::new();
    loop {
        // Feed everything we have until the core needs more input.
        let closed = loop {
            let r = server.handle_input(&buf[start..end]).expect("decisions are always made");
            start += r.consumed;
            match r.progress {
                Progress::Event(Event::Data(chunk)) => message.extend_from_slice(chunk),
                Progress::Event(Event::DataStart { .. }) => {
                    message.clear();
                    server.accept().expect("pending");
                }
                Progress::Event(Event::DataEnd { .. }) => {
                    // A real server stores the message durably here, before accepting.
                    messages.push(std::mem::take(&mut message));
                    server.accept().expect("pending");
                }
                Progress::Event(ev) if ev.needs_decision() => server.accept().expect("pending"),
                Progress::Event(_) => {}
                Progress::Flush => drain(&mut server, &mut stream, &mut out).await?,
                Progress::NeedInput => break false,
                Progress::Closed => break true,
            }
        };
        // The drain rule: send every queued reply before reading again.
        drain(&mut server, &mut stream, &mut out).await?;
        if closed {
            return Ok(messages);
        }
        if start == end {
            (start, end) = (0, 0);
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        let read = stream.read(&mut buf[end..]);
        let n = match server.timeout() {
            Some(t) => match tokio::time::timeout(t, read).await {
                Ok(n) => n?,
                Err(_) => {
                    server.handle_timeout();
                    drain(&mut server, &mut stream, &mut out).await?;
                    return Ok(messages);
                }
            },
            None => read.await?,
        };
        if n == 0 {
            return Ok(messages);
        }
        end += n;
    }
}

async fn drain(server: &mut Server, stream: &mut TcpStream, out: &mut [u8]) -> std::io::Result<()> {
    loop {
        let n = server.poll_transmit(out);
        if n == 0 {
            return stream.flush().await;
        }
        stream.write_all(&out[..n]).await?;
    }
}

#[allow(dead_code)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:2526".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {addr}");
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(async move {
            match serve_connection(stream, Config::new("localhost")).await {
                Ok(messages) => {
                    for m in messages {
                        println!("{peer}: message of {} bytes", m.len());
                    }
                }
                Err(e) => eprintln!("{peer}: {e}"),
            }
        });
    }
}
