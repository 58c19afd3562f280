//! A whole pipelined SMTP session through the server core, in memory: greeting, EHLO, MAIL,
//! three RCPT, DATA, a 10 KiB body, QUIT; every decision accepted. Measured as messages per
//! second (`Elements(1)`) and as client bytes per second; with the session's buffers inline
//! (`Server::new`), and lent (`Server::with_buffers`): a 4 KiB output queue like the inline one,
//! and the smallest the core takes.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use smtp_proto::server::{Buffers, Config, Lent, Progress, Server, MIN_OUTPUT_BUFFER, OUTPUT_BUFFER};

/// The client's side of the session, in the segments a pipelining client sends (RFC 2920: it
/// waits for the replies after EHLO, after DATA, and after the end of the data).
fn wire() -> Vec<Vec<u8>> {
    let mut group = Vec::new();
    group.extend_from_slice(b"MAIL FROM:<alice.smith@a.example.org> SIZE=10240 BODY=8BITMIME\r\n");
    for r in ["bob", "carol", "dave"] {
        group.extend_from_slice(format!("RCPT TO:<{r}@b.example.org> NOTIFY=SUCCESS,FAILURE\r\n").as_bytes());
    }
    group.extend_from_slice(b"DATA\r\n");
    let mut body = Vec::new();
    body.extend_from_slice(b"From: alice.smith@a.example.org\r\nTo: bob@b.example.org\r\nSubject: bench\r\n\r\n");
    let mut n = 0usize;
    while body.len() < 10 * 1024 {
        for i in 0..76 {
            body.push(b"abcdefghijklmnopqrstuvwxyz0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(i + n) % 63]);
        }
        body.extend_from_slice(b"\r\n");
        n += 1;
    }
    body.extend_from_slice(b".\r\n");
    vec![b"EHLO mail.client.example.org\r\n".to_vec(), group, body, b"QUIT\r\n".to_vec()]
}

/// Runs the session; returns the reply bytes sent, the events seen and whether the server
/// closed after the QUIT.
fn session(config: &Config, wire: &[Vec<u8>], out: &mut [u8], log: Option<&mut Vec<u8>>) -> (usize, usize, bool) {
    run(Server::new(*config), wire, out, log)
}

fn run<B: Buffers>(
    mut server: Server<B>,
    wire: &[Vec<u8>],
    out: &mut [u8],
    mut log: Option<&mut Vec<u8>>,
) -> (usize, usize, bool) {
    server.greet("ESMTP").unwrap();
    let (mut sent, mut events) = (0, 0);
    for segment in wire {
        let mut at = 0;
        loop {
            let r = server.handle_input(&segment[at..]).unwrap();
            at += r.consumed;
            match r.progress {
                Progress::Event(ev) => {
                    events += 1;
                    let decide = ev.needs_decision();
                    black_box(&ev);
                    if decide {
                        server.accept().unwrap();
                        while server.is_pending() {
                            server.accept().unwrap();
                        }
                    }
                }
                Progress::Flush => sent += drain(&mut server, out, log.as_deref_mut()),
                Progress::NeedInput | Progress::Closed => {
                    sent += drain(&mut server, out, log.as_deref_mut());
                    if server.is_closed() {
                        return (sent, events, at == segment.len());
                    }
                    if at >= segment.len() {
                        break;
                    }
                }
            }
        }
    }
    (sent, events, false)
}

fn drain<B: Buffers>(server: &mut Server<B>, out: &mut [u8], mut log: Option<&mut Vec<u8>>) -> usize {
    let mut sent = 0;
    loop {
        let n = server.poll_transmit(out);
        if n == 0 {
            return sent;
        }
        if let Some(log) = log.as_deref_mut() {
            log.extend_from_slice(&out[..n]);
        }
        sent += black_box(&out[..n]).len();
    }
}

fn bench_session(c: &mut Criterion) {
    let config = Config::new("mx.example.net");
    let wire = wire();
    let bytes: usize = wire.iter().map(Vec::len).sum();
    let mut out = vec![0u8; 4096];
    // Sanity, once: the message is accepted and the session ends with the QUIT reply.
    let mut log = Vec::new();
    let (_, events, closed) = session(&config, &wire, &mut out, Some(&mut log));
    let text = String::from_utf8_lossy(&log);
    assert!(closed && events >= 7, "{events} events: {text}");
    assert_eq!(text.matches("\r\n250 2.1.5 ").count(), 3, "{text}");
    assert!(text.contains("\r\n354 ") && text.contains("\r\n250 2.0.0 ") && text.contains("\r\n221 "), "{text}");

    let mut g = c.benchmark_group("session/pipelined_10KiB");
    g.throughput(Throughput::Elements(1));
    g.bench_function("messages", |b| b.iter(|| session(&config, black_box(&wire), &mut out, None)));
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("bytes", |b| b.iter(|| session(&config, black_box(&wire), &mut out, None)));
    g.finish();

    let mut g = c.benchmark_group("session/pipelined_10KiB_lent");
    g.throughput(Throughput::Elements(1));
    for len in [OUTPUT_BUFFER, MIN_OUTPUT_BUFFER] {
        let (mut queue, mut sasl) = (vec![0u8; len], vec![0u8; 0]);
        let mut log = Vec::new();
        let lent = Server::with_buffers(config, Lent::new(&mut queue, &mut sasl)).unwrap();
        assert_eq!(run(lent, &wire, &mut out, Some(&mut log)), session(&config, &wire, &mut out, None));
        assert_eq!(String::from_utf8_lossy(&log), text);
        g.bench_function(format!("messages_{len}"), |b| {
            b.iter(|| {
                let server = Server::with_buffers(config, Lent::new(&mut queue, &mut sasl)).unwrap();
                run(server, black_box(&wire), &mut out, None)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_session);
criterion_main!(benches);
