//! Command-line parsing: our `parse_command` (line finding included) against Stalwart's
//! `smtp-proto` 0.2.5 `Request::parse` on the same bytes, one group per input so the ratios
//! come from the same run on a noisy machine.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use smtp_proto::parse::{parse_command, Status};

const EHLO: &[u8] = b"EHLO mail.client.example.org\r\n";
const MAIL: &[u8] = b"MAIL FROM:<alice.smith@a.example.org> SIZE=12345 BODY=8BITMIME ENVID=QQ314159 RET=HDRS\r\n";
const RCPT: &[u8] = b"RCPT TO:<bob@b.example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@b.example.org\r\n";

/// Parses every line of `input` with our parser; returns how many were commands.
#[inline(never)]
fn ours(input: &[u8]) -> usize {
    let mut at = 0;
    let mut ok = 0;
    // Results are used in place (by reference), for both parsers.
    while let Status::Complete((cmd, n)) = &parse_command(&input[at..]) {
        ok += usize::from(black_box(cmd).is_ok());
        at += n;
    }
    ok
}

/// Parses every line of `input` with Stalwart's parser; returns how many were commands.
#[inline(never)]
fn stalwart(input: &[u8]) -> usize {
    let mut it = input.iter();
    let mut ok = 0;
    while !it.as_slice().is_empty() {
        match &stalwart_smtp_proto::Request::parse(&mut it) {
            Ok(r) => {
                black_box(r);
                ok += 1;
            }
            Err(stalwart_smtp_proto::Error::NeedsMoreData { .. }) => break,
            Err(e) => {
                black_box(e);
            }
        }
    }
    ok
}

/// Lines in `input`.
fn lines(input: &[u8]) -> usize {
    input.iter().filter(|&&c| c == b'\n').count()
}

fn bench_parse(c: &mut Criterion) {
    let mut batch = Vec::new();
    for line in [EHLO, MAIL, RCPT, RCPT, RCPT, MAIL, RCPT] {
        batch.extend_from_slice(line);
    }
    let cases: [(&str, &[u8]); 4] = [("ehlo", EHLO), ("mail", MAIL), ("rcpt", RCPT), ("pipelined_batch", &batch)];
    // Both parsers accept every line before anything is timed.
    for (name, input) in &cases {
        assert_eq!(ours(input), lines(input), "ours rejected a line of {name}");
        assert_eq!(stalwart(input), lines(input), "stalwart rejected a line of {name}");
    }
    for (name, input) in &cases {
        let mut g = c.benchmark_group(format!("parse_command/{name}"));
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function("ours", |b| b.iter(|| ours(black_box(input))));
        g.bench_function("stalwart_0.2.5", |b| b.iter(|| stalwart(black_box(input))));
        g.finish();
    }
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
