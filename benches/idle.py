#!/usr/bin/env python3
"""Idle sessions: server memory (RSS) and CPU per connection that said EHLO and waits.

Starts `target/release/smtp-std serve --discard` on a loopback port, opens N connections
(spread over source addresses 127.0.0.1-127.0.0.250 so per-client limits do not get in the
way), each reading the greeting and sending EHLO, then measures:

- RSS growth per connection (VmRSS of the server before the connections and with all of them
  open and idle, `--settle` seconds after the last EHLO reply: by default 3 s, past the
  server's 1 s park delay, after which an idle session waits in the poller without a thread),
  the issue's figure (<= 16 KiB per idle connection at 5,000);
- CPU the server burns over 10 s while all of them idle (utime + stime from /proc);
- how long shutdown (SIGTERM) takes to reach every session with 421.

Usage: python3 benches/idle.py [--connections 5000] [--binary target/release/smtp-std] [--runs 3]
       [--settle 3] [--extra-args "--some-flag"]

With --runs N the whole measurement is repeated N times (a new server each time) and the
median is printed last. With --smaps the server's memory is broken down by mapping (thread
stacks, malloc arenas, the main heap) at the moment of measurement.
"""
import argparse
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--binary", default="target/release/smtp-std")
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds between the last EHLO reply and the RSS reading")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--smaps", action="store_true")
    ap.add_argument("--extra-args", default="", help="more arguments for `serve`")
    args = ap.parse_args()
    results = [measure(args) for _ in range(args.runs)]
    if args.runs > 1:
        per_conn = sorted(r[0] for r in results)
        cpu = sorted(r[1] for r in results)
        print(f"median of {args.runs}     {per_conn[len(per_conn) // 2]:.1f} KiB per idle connection "
              f"(runs: {', '.join(f'{x:.1f}' for x in per_conn)}); idle CPU {cpu[len(cpu) // 2]:.2f}%")


def smaps(pid, stack_kib):
    """RSS by kind of mapping: thread stacks (anonymous mappings of the stack size), malloc
    arenas and other anonymous memory, the main heap, files."""
    kinds = {}
    kind = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and not parts[0].endswith(":"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                size = (hi - lo) // 1024
                name = parts[5] if len(parts) > 5 else ""
                if name.startswith("/"):
                    kind = "files"
                elif name:
                    kind = name
                elif size == stack_kib:
                    kind = "thread stacks"
                else:
                    kind = "malloc arenas, other anonymous"
            elif parts[0] == "Rss:" and kind:
                kinds[kind] = kinds.get(kind, 0) + int(parts[1])
    return kinds


def measure(args):
    n = args.connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = subprocess.Popen(
        [args.binary, "serve", "--discard", "--listen", f"127.0.0.1:{port}", "--max-clients", str(n + 100)]
        + args.extra_args.split(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, RUST_LOG="warn"),
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (want, want)),
    )
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("server did not start")
                time.sleep(0.05)
        time.sleep(0.5)
        base_rss = rss_kib(server.pid)
        base_threads = threads(server.pid)

        socks = []
        sel = selectors.DefaultSelector()
        for i in range(n):
            s = socket.socket()
            s.bind((f"127.0.0.{1 + i % 250}", 0))
            s.settimeout(30)
            s.connect(("127.0.0.1", port))
            socks.append(s)
        # Greeting, EHLO, its reply: every session is past EHLO and idle.
        for s in socks:
            assert s.recv(512).startswith(b"220"), "no greeting"
            s.sendall(b"EHLO idle.example\r\n")
        for s in socks:
            data = b""
            while not data.endswith(b"\r\n") or b"\r\n250 " not in b"\r\n" + data:
                chunk = s.recv(4096)
                assert chunk, "closed"
                data += chunk
        time.sleep(args.settle)
        rss = rss_kib(server.pid)
        busy_threads = threads(server.pid)
        if args.smaps:
            for kind, kib in sorted(smaps(server.pid, 512).items(), key=lambda kv: -kv[1]):
                print(f"  {kind:<32} {kib:>8} KiB  {kib / n:6.1f} KiB per connection")
        cpu0 = cpu_seconds(server.pid)
        time.sleep(args.idle)
        cpu1 = cpu_seconds(server.pid)
        # Every session still answers.
        for s in socks[:: max(1, n // 50)]:
            s.sendall(b"NOOP\r\n")
            assert s.recv(512).startswith(b"250"), "no answer to NOOP"
        per_conn = (rss - base_rss) / n
        idle_cpu = (cpu1 - cpu0) / args.idle * 100
        print(f"connections        {n}")
        print(f"server threads     {base_threads} -> {busy_threads} ({threads(server.pid)} after the idle time)")
        print(f"RSS                {base_rss} KiB -> {rss} KiB: {per_conn:.1f} KiB per idle connection")
        print(f"idle CPU           {idle_cpu:.2f}% of a core over {args.idle:.0f} s")

        t0 = time.time()
        server.send_signal(signal.SIGTERM)
        for s in socks:
            s.settimeout(5)
        got = 0
        for s in socks:
            try:
                if s.recv(512).startswith(b"421"):
                    got += 1
            except OSError:
                pass
        print(f"shutdown           421 to {got}/{n} sessions in {time.time() - t0:.2f} s")
        server.wait(timeout=30)
        return per_conn, idle_cpu
    finally:
        if server.poll() is None:
            server.kill()
        for s in locals().get("socks", []):
            s.close()


if __name__ == "__main__":
    main()
