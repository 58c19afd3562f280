#!/usr/bin/env python3
"""Idle sessions: server memory (RSS) and CPU per connection that said EHLO and waits.

Starts `target/release/smtp-std serve --discard` on a loopback port, opens N connections
(spread over source addresses 127.0.0.1-127.0.0.250 so per-client limits do not get in the
way), each reading the greeting and sending EHLO, then measures:

- RSS growth per connection (VmRSS of the server before the connections and with all of them
  open and idle), the issue's figure (<= 16 KiB per idle connection at 5,000);
- CPU the server burns over 10 s while all of them idle (utime + stime from /proc);
- how long shutdown (SIGTERM) takes to reach every session with 421.

Usage: python3 benches/idle.py [--connections 5000] [--binary target/release/smtp-std]
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
    args = ap.parse_args()
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
        [args.binary, "serve", "--discard", "--listen", f"127.0.0.1:{port}", "--max-clients", str(n + 100)],
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
        time.sleep(1.0)
        rss = rss_kib(server.pid)
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
        print(f"server threads     {base_threads} -> {threads(server.pid)}")
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
    finally:
        if server.poll() is None:
            server.kill()
        for s in locals().get("socks", []):
            s.close()


if __name__ == "__main__":
    main()
