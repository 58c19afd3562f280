//! DATA receive path: our strict streaming decoder against memcpy of the same bytes (the
//! physical limit), Stalwart's `smtp-proto` 0.2.5 `DataReceiver`, and a naive byte-at-a-time
//! decoder; plus dot-stuffing on the send side against memcpy. All in one run so the ratios
//! hold on a noisy machine.

use std::time::Instant;

use criterion::{black_box, criterion_group, BenchmarkId, Criterion, Throughput};
use smtp_proto::data::{__copy_floor, __scan_floor, __scan_paths, __unstuff_paths, BarePolicy, DataDecoder, Stuffer};

/// A realistic message body on the wire: `lines` lines of `width` printable bytes, 1% of them
/// starting with a (stuffed) dot, then the terminator.
fn wire_body(size: usize, width: usize) -> Vec<u8> {
    wire_body_stuffed(size, width, true)
}

/// [`wire_body`], with or without the stuffed lines (without: a base64 attachment, whose
/// alphabet has no dot).
fn wire_body_stuffed(size: usize, width: usize, stuffed: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 1024);
    let mut n = 0u32;
    while out.len() < size {
        n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        if stuffed && n.is_multiple_of(100) {
            out.extend_from_slice(b"..");
        }
        for i in 0..width {
            out.push(b"abcdefghijklmnopqrstuvwxyz0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(i + n as usize) % 63]);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Strict decoder copying the content out as it scans (`decode_into`) into a sink allocated
/// once, as memcpy writes into its sink: one pass over the bytes each. Returns the length.
fn ours_copy(wire: &[u8], read: usize, sink: &mut [u8]) -> usize {
    ours_copy_limited(wire, read, sink, None)
}

/// [`ours_copy`] with a line limit (the server's default is 1000 octets).
fn ours_copy_limited(wire: &[u8], read: usize, sink: &mut [u8], max_line: Option<usize>) -> usize {
    let mut d = DataDecoder::new(BarePolicy::Reject, None, max_line);
    let mut n = 0;
    for piece in wire.chunks(read) {
        let mut at = 0;
        while at < piece.len() {
            let r = d.decode_into(&piece[at..], &mut sink[n..]);
            at += r.consumed;
            n += r.written;
            if r.end.is_some() {
                return n;
            }
        }
    }
    n
}

/// Strict decoder, zero-copy chunks then copied out (two passes over the bytes).
fn ours_decode_then_copy(wire: &[u8], read: usize, sink: &mut Vec<u8>) {
    sink.clear();
    let mut d = DataDecoder::new(BarePolicy::Reject, None, None);
    for piece in wire.chunks(read) {
        let mut at = 0;
        while at < piece.len() {
            let r = d.decode(&piece[at..]);
            at += r.consumed;
            sink.extend_from_slice(r.body);
            if r.end.is_some() {
                return;
            }
        }
    }
}

/// Strict decoder, zero-copy: only the scan and the borrowed chunks.
fn ours_scan(wire: &[u8], read: usize) -> usize {
    ours_scan_limited(wire, read, None)
}

/// [`ours_scan`] with a line limit.
fn ours_scan_limited(wire: &[u8], read: usize, max_line: Option<usize>) -> usize {
    let mut d = DataDecoder::new(BarePolicy::Reject, None, max_line);
    let mut total = 0;
    for piece in wire.chunks(read) {
        let mut at = 0;
        while at < piece.len() {
            let r = d.decode(&piece[at..]);
            at += r.consumed;
            total += black_box(r.body).len();
            if r.end.is_some() {
                return total;
            }
        }
    }
    total
}

/// The AVX-512BW scan's floor over the same reads (see `__scan_floor`).
fn floor(wire: &[u8], read: usize) -> u64 {
    wire.chunks(read).map(|p| __scan_floor(p).unwrap_or(0)).fold(0, |a, b| a | b)
}

/// A plain vector copy over the same reads into the same kind of sink as [`ours_copy`]'s
/// (see `__copy_floor`): what a copying decoder cannot beat. `false` without AVX-512BW.
fn copy_floor(wire: &[u8], read: usize, sink: &mut [u8]) -> bool {
    let mut n = 0;
    for piece in wire.chunks(read) {
        if !__copy_floor(piece, &mut sink[n..]) {
            return false;
        }
        n += piece.len();
    }
    true
}

fn memcpy(wire: &[u8], read: usize, sink: &mut Vec<u8>) {
    sink.clear();
    for piece in wire.chunks(read) {
        sink.extend_from_slice(piece);
    }
}

fn stalwart(wire: &[u8], read: usize, sink: &mut Vec<u8>) {
    sink.clear();
    let mut r = stalwart_smtp_proto::request::receiver::DataReceiver::new();
    for piece in wire.chunks(read) {
        if r.ingest(&mut piece.iter(), sink) {
            return;
        }
    }
}

/// One byte at a time, the obvious way.
fn naive(wire: &[u8], read: usize, sink: &mut Vec<u8>) {
    sink.clear();
    // 0: mid-line, 1: after CR, 2: line start, 3: line start + dot, 4: dot + CR
    let mut state = 2u8;
    for piece in wire.chunks(read) {
        for &b in piece {
            state = match (state, b) {
                (4, b'\n') => return,
                (2, b'.') => 3,
                (3, b'\r') => 4,
                (_, b'\r') => {
                    sink.push(b);
                    1
                }
                (1, b'\n') => {
                    sink.push(b);
                    2
                }
                _ => {
                    sink.push(b);
                    0
                }
            };
        }
    }
}

fn stuff(body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut s = Stuffer::new(BarePolicy::Allow);
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0;
    while at < body.len() {
        let (c, w) = s.stuff(&body[at..], &mut buf).unwrap();
        at += c;
        out.extend_from_slice(&buf[..w]);
    }
    let w = s.finish(&mut buf).unwrap();
    out.extend_from_slice(&buf[..w]);
}

/// Stuffing straight into the sink (a client's send buffer, allocated once), as memcpy writes
/// straight into its sink: one pass over the bytes each. Returns the length written.
fn stuff_direct(body: &[u8], out: &mut [u8]) -> usize {
    let mut s = Stuffer::new(BarePolicy::Allow);
    let (mut at, mut n) = (0, 0);
    while at < body.len() {
        let (c, w) = s.stuff(&body[at..], &mut out[n..]).unwrap();
        at += c;
        n += w;
    }
    n + s.finish(&mut out[n..]).unwrap()
}

fn bench_receive(c: &mut Criterion) {
    let cases = [
        ("1MiB_76col", wire_body(1 << 20, 76)),
        ("64KiB_76col", wire_body(64 << 10, 76)),
        ("1MiB_short_lines", wire_body(1 << 20, 2)),
    ];
    let mut sink = Vec::with_capacity(2 << 20);
    let mut direct = vec![0u8; 2 << 20];
    // Sanity: every implementation gets the same content.
    for (_, wire) in &cases {
        let mut a = Vec::new();
        ours_decode_then_copy(wire, 4096, &mut a);
        let n = ours_copy(wire, 4096, &mut direct);
        assert_eq!(a, direct[..n]);
        let mut b = Vec::new();
        stalwart(wire, 4096, &mut b);
        let mut n = Vec::new();
        naive(wire, 4096, &mut n);
        assert_eq!(a, n);
        assert_eq!(a.len(), b.len());
    }
    for (name, wire) in &cases {
        for read in [64 << 10, 4 << 10] {
            let mut g = c.benchmark_group(format!("data_receive/{name}/{}KiB_reads", read >> 10));
            g.throughput(Throughput::Bytes(wire.len() as u64));
            g.bench_function("memcpy", |b| b.iter(|| memcpy(black_box(wire), read, &mut sink)));
            g.bench_function("ours_strict_copy", |b| b.iter(|| ours_copy(black_box(wire), read, &mut direct)));
            g.bench_function("ours_decode_then_copy", |b| {
                b.iter(|| ours_decode_then_copy(black_box(wire), read, &mut sink))
            });
            g.bench_function("ours_zero_copy", |b| b.iter(|| ours_scan(black_box(wire), read)));
            if __scan_floor(wire).is_some() {
                // The floor of the scan: the load and the three compares per 64 bytes, nothing
                // else (what zero-copy `decode` cannot beat).
                g.bench_function("scan_floor", |b| b.iter(|| floor(black_box(wire), read)));
            }
            g.bench_function("stalwart_0.2.5", |b| b.iter(|| stalwart(black_box(wire), read, &mut sink)));
            g.bench_function("naive_bytewise", |b| b.iter(|| naive(black_box(wire), read, &mut sink)));
            g.finish();
        }
    }
}

fn bench_stuff(c: &mut Criterion) {
    let mut body = Vec::new();
    ours_decode_then_copy(&wire_body(1 << 20, 76), 1 << 20, &mut body);
    let mut out = Vec::with_capacity(2 << 20);
    // Room for every line to gain a dot, and the terminator.
    let mut direct = vec![0u8; body.len() + body.len() / 2 + Stuffer::FINISH_LEN];
    {
        let mut a = Vec::new();
        stuff(&body, &mut a);
        let n = stuff_direct(&body, &mut direct);
        assert_eq!(a, direct[..n]);
    }
    let mut g = c.benchmark_group("data_send/1MiB_76col");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("memcpy", |b| b.iter(|| memcpy(black_box(&body), 64 << 10, &mut out)));
    // Through a 64 KiB buffer that is then copied to the sink: two copies to memcpy's one.
    g.bench_function("ours_stuffing", |b| b.iter(|| stuff(black_box(&body), &mut out)));
    g.bench_function("ours_stuffing_direct", |b| b.iter(|| stuff_direct(black_box(&body), &mut direct)));
    g.bench_with_input(BenchmarkId::new("ours_stuffing_chunks", "4KiB"), &body, |b, body| {
        b.iter(|| {
            out.clear();
            let mut s = Stuffer::new(BarePolicy::Allow);
            let mut buf = vec![0u8; 8192];
            for piece in body.chunks(4096) {
                let mut at = 0;
                while at < piece.len() {
                    let (c, w) = s.stuff(&piece[at..], &mut buf).unwrap();
                    at += c;
                    out.extend_from_slice(&buf[..w]);
                }
            }
            let w = s.finish(&mut buf).unwrap();
            out.extend_from_slice(&buf[..w]);
        })
    });
    g.finish();
}

/// The best of `runs` timings of `f`, in seconds.
fn best(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

/// The ratios the README's Performance table shows, all in one run (each the best of many
/// timings, taken in turns so that a noisy neighbour hits all alike): throughput against
/// memcpy of the same bytes in the same reads, > 1 faster.
fn summary() {
    let cases = [
        ("1 MiB, 76-col, 64 KiB reads", wire_body(1 << 20, 76), 64 << 10),
        ("1 MiB, 76-col, 4 KiB reads", wire_body(1 << 20, 76), 4 << 10),
        ("1 MiB, 76-col, none stuffed, 64 KiB reads", wire_body_stuffed(1 << 20, 76, false), 64 << 10),
        ("1 MiB, 76-col, none stuffed, 4 KiB reads", wire_body_stuffed(1 << 20, 76, false), 4 << 10),
        ("64 KiB, 76-col, 64 KiB reads", wire_body(64 << 10, 76), 64 << 10),
        ("64 KiB, 76-col, 4 KiB reads", wire_body(64 << 10, 76), 4 << 10),
        ("1 MiB of 2-octet lines, 64 KiB reads", wire_body(1 << 20, 2), 64 << 10),
        ("1 MiB of 2-octet lines, 4 KiB reads", wire_body(1 << 20, 2), 4 << 10),
    ];
    // The server's decoder has a line limit (1000 octets, RFC 5321's), which the rows above
    // leave off: these rows measure the path it takes.
    let limited = [
        ("1 MiB, 76-col, 64 KiB reads, 1000-octet line limit", wire_body(1 << 20, 76), 64 << 10),
        ("1 MiB, 76-col, 4 KiB reads, 1000-octet line limit", wire_body(1 << 20, 76), 4 << 10),
    ];
    let cases = cases
        .into_iter()
        .map(|(n, w, r)| (n, w, r, None))
        .chain(limited.into_iter().map(|(n, w, r)| (n, w, r, Some(1000))));
    let mut sink = Vec::with_capacity(2 << 20);
    let mut direct = vec![0u8; 2 << 20];
    println!("\nDATA receive, throughput vs memcpy (best of 5 rounds of 40 runs; > 1 faster):");
    println!("| case | zero-copy decode | decode_into | scan floor | copy floor | Stalwart 0.2.5 | decode_into vs Stalwart |");
    println!("|---|---|---|---|---|---|---|");
    for (name, wire, read, max_line) in cases {
        let reps = if wire.len() > 100_000 { 40 } else { 400 };
        let mut t = [f64::MAX; 6];
        for _ in 0..5 {
            let r = [
                best(reps, || memcpy(black_box(&wire), read, &mut sink)),
                best(reps, || {
                    black_box(ours_scan_limited(black_box(&wire), read, max_line));
                }),
                best(reps, || {
                    black_box(ours_copy_limited(black_box(&wire), read, &mut direct, max_line));
                }),
                best(reps, || {
                    black_box(floor(black_box(&wire), read));
                }),
                best(reps, || stalwart(black_box(&wire), read, &mut sink)),
                best(reps, || {
                    black_box(copy_floor(black_box(&wire), read, &mut direct));
                }),
            ];
            for (a, b) in t.iter_mut().zip(r) {
                *a = a.min(b);
            }
        }
        let floor = if __scan_floor(&wire).is_some() { format!("{:.2}×", t[0] / t[3]) } else { "-".into() };
        let copy = if __copy_floor(&[], &mut []) { format!("{:.2}×", t[0] / t[5]) } else { "-".into() };
        println!(
            "| {name} | {:.2}× | {:.2}× | {floor} | {copy} | {:.2}× | {:.2}× |",
            t[0] / t[1],
            t[0] / t[2],
            t[0] / t[4],
            t[4] / t[2]
        );
    }
    // The per-call cost: the same 64 KiB body in 4 KiB reads against one 64 KiB read.
    let wire = wire_body(64 << 10, 76);
    let mut t = [f64::MAX; 4];
    for _ in 0..5 {
        let r = [
            best(400, || {
                black_box(ours_scan(black_box(&wire), 64 << 10));
            }),
            best(400, || {
                black_box(ours_scan(black_box(&wire), 4 << 10));
            }),
            best(400, || {
                black_box(ours_copy(black_box(&wire), 64 << 10, &mut direct));
            }),
            best(400, || {
                black_box(ours_copy(black_box(&wire), 4 << 10, &mut direct));
            }),
        ];
        for (a, b) in t.iter_mut().zip(r) {
            *a = a.min(b);
        }
    }
    println!(
        "\n64 KiB body in 4 KiB reads, time against one 64 KiB read: zero-copy {:.2}×, decode_into {:.2}×",
        t[1] / t[0],
        t[3] / t[2]
    );
    // What bounds that ratio: the same reads of a body without stuffed lines, through the
    // fastest block scan this CPU runs called once per read and nothing around it, and
    // through the zero-copy decoder. The extra calls of the scan alone are a floor for any
    // decoder built on it.
    let plain = wire_body_stuffed(64 << 10, 76, false);
    let build =
        [2u8, 1].into_iter().find(|&b| __scan_paths(b, &plain, 0, usize::MAX, None, None).is_some()).unwrap_or(0);
    let scan_reads = |read: usize| {
        for piece in black_box(&plain).chunks(read) {
            black_box(__scan_paths(build, piece, 0, usize::MAX, None, None));
        }
    };
    let mut t = [f64::MAX; 4];
    for _ in 0..5 {
        let r = [
            best(400, || scan_reads(64 << 10)),
            best(400, || scan_reads(4 << 10)),
            best(400, || {
                black_box(ours_scan(black_box(&plain), 64 << 10));
            }),
            best(400, || {
                black_box(ours_scan(black_box(&plain), 4 << 10));
            }),
        ];
        for (a, b) in t.iter_mut().zip(r) {
            *a = a.min(b);
        }
    }
    println!(
        "the same without stuffed lines: the block scan alone, once a read, {:.2}× ({:.0} vs {:.0} ns, {:.1} ns an extra call); zero-copy decode {:.2}× ({:.1} ns an extra call)",
        t[1] / t[0],
        t[1] * 1e9,
        t[0] * 1e9,
        (t[1] - t[0]) * 1e9 / 15.0,
        t[3] / t[2],
        (t[3] - t[2]) * 1e9 / 15.0
    );
    // What one call costs: the least a stuffed line costs the zero-copy form (its chunk ends
    // there, so the caller calls again), and a read's end either form.
    let line = wire.iter().position(|&b| b == b'\n').unwrap() + 1;
    let piece = &wire[line..line + 66];
    let mut d = DataDecoder::new(BarePolicy::Reject, None, None);
    d.decode(b"x");
    let mut per_call = f64::MAX;
    for _ in 0..5 {
        per_call = per_call.min(
            best(20, || {
                for _ in 0..10_000 {
                    black_box(d.decode(black_box(piece)));
                }
            }) / 10_000.0,
        );
    }
    let mut mem = f64::MAX;
    let big = wire_body(1 << 20, 76);
    for _ in 0..5 {
        mem = mem.min(best(40, || memcpy(black_box(&big), 64 << 10, &mut sink)));
    }
    println!(
        "one zero-copy decode call on 66 bytes inside a line: {:.1} ns; memcpy of 1 MiB in 64 KiB reads: {:.2} µs",
        per_call * 1e9,
        mem * 1e6
    );
    // Each build of the block scan (CPUs without AVX-512 run the AVX2 one), alone: 1 MiB of
    // unstuffed lines in one call, with and without the line limit; and each build's copying
    // form as `decode_into` runs it (the unstuffing scan), on 1 MiB of stuffed lines.
    let plain = wire_body_stuffed(1 << 20, 76, false);
    let stuffed = wire_body(1 << 20, 76);
    let mut copy_out = vec![0u8; stuffed.len()];
    let mut copies = Vec::new();
    let mut scans = Vec::new();
    for (build, name) in [(2u8, "AVX-512BW"), (1, "AVX2"), (0, "portable")] {
        if __scan_paths(build, &plain, 0, 1000, None, None).is_none() {
            continue;
        }
        let mut t = [f64::MAX; 2];
        for _ in 0..5 {
            for (k, limit) in [None, Some(1000)].into_iter().enumerate() {
                t[k] = t[k].min(best(40, || {
                    black_box(__scan_paths(build, black_box(&plain), 0, 1000, limit, None));
                }));
            }
        }
        scans.push(format!("{name} {:.2}× ({:.2}× with the 1000-octet limit)", mem / t[0], mem / t[1]));
        let mut c = f64::MAX;
        for _ in 0..5 {
            c = c.min(best(40, || {
                black_box(__unstuff_paths(build, black_box(&stuffed), 0, 1000, None, &mut copy_out));
            }));
        }
        copies.push(format!("{name} {:.2}×", mem / c));
    }
    println!("the block scan alone, 1 MiB of unstuffed 76-col lines in one call, vs memcpy: {}", scans.join(", "));
    println!(
        "the unstuffing copy alone (decode_into's scan), 1 MiB of 76-col lines, 1% stuffed, in one call, vs memcpy: {}",
        copies.join(", ")
    );
    let mut ratios = Vec::new();
    for width in [76, 2] {
        let mut body = Vec::new();
        ours_decode_then_copy(&wire_body(1 << 20, width), 1 << 20, &mut body);
        let mut out = vec![0u8; body.len() + body.len() / 2 + Stuffer::FINISH_LEN];
        let (mut m, mut st) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            m = m.min(best(40, || memcpy(black_box(&body), 64 << 10, &mut sink)));
            st = st.min(best(40, || {
                black_box(stuff_direct(black_box(&body), &mut out));
            }));
        }
        ratios.push(m / st);
    }
    println!(
        "stuffing for send, 1 MiB straight into the sink, against memcpy: 76-col {:.2}×, 2-octet lines {:.2}×",
        ratios[0], ratios[1]
    );
}

criterion_group!(benches, bench_receive, bench_stuff);

fn main() {
    benches();
    // Not under `cargo test --benches` (a smoke run): the summary takes a few seconds.
    if !std::env::args().any(|a| a == "--test") {
        summary();
    }
    Criterion::default().configure_from_args().final_summary();
}
