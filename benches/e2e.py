#!/usr/bin/env python3
"""End-to-end: `smtp-std serve --discard` and Postfix `smtp-sink` side by side, both driven by
Postfix `smtp-source` over loopback, with `evloop-sink` (the same core in a single-threaded
readiness loop, benches/src/bin/evloop-sink.rs) as a third. Prints, per case and server,
messages/s, MB/s and the server's own CPU seconds per 1,000 messages (from /proc/<pid>/stat),
with the ratios.

    python3 benches/e2e.py            # all cases
    python3 benches/e2e.py --quick    # fewer messages
    python3 benches/e2e.py --maildir  # also smtp-std delivering into a Maildir (fsync per message)

Needs postfix's smtp-source and smtp-sink (apt install postfix) and a release build of
smtp-std (built by this script).
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host, port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.recv(512)
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on {host}:{port} did not start")


def cpu_seconds(pid):
    """utime + stime of the process and its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def tool(name):
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    raise SystemExit(f"{name} not found: apt install postfix")


def run_case(pid, port, host, size, sessions, per_session, messages):
    args = [tool("smtp-source"), "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-f", "bench@source.test", "-t", "sink@sink.test"]
    if per_session:
        args.append("-d")
    args.append(f"{host}:{port}")
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, timeout=600)
    wall = time.perf_counter() - t0
    time.sleep(0.2)  # let the server finish closing sessions
    cpu = cpu_seconds(pid) - cpu0
    return messages / wall, messages * size / wall / 1e6, cpu * 1000 / messages


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--maildir", action="store_true")
    ap.add_argument("--only", action="append", default=[],
                    help="run only the cases whose label contains this (repeatable), e.g. '1KiB x20'")
    ap.add_argument("--runs", type=int, default=1, help="runs of each case; the medians are printed")
    ap.add_argument("--no-evloop", action="store_true", help="leave evloop-sink out")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=BINARY",
                    help="another smtp-std build to run side by side (e.g. the previous commit's)")
    a = ap.parse_args()

    subprocess.run(["cargo", "build", "-q", "--release", "-p", "smtp-std"], cwd=ROOT, check=True)
    if not a.no_evloop:
        subprocess.run(["cargo", "build", "-q", "--release", "-p", "smtp-benches", "--bin", "evloop-sink"],
                       cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "release", "smtp-std")
    host = "127.0.0.1"
    servers = []
    env = dict(os.environ, RUST_LOG="warn")

    p1 = free_port(host)
    ours = subprocess.Popen([binary, "serve", "--discard", "--listen", f"{host}:{p1}", "--max-clients", "500",
                             "--hostname", "bench.test"], env=env, stderr=subprocess.DEVNULL)
    servers.append(("smtp-std", ours, p1))
    for other in a.also:
        name, path = other.split("=", 1)
        port = free_port(host)
        proc = subprocess.Popen([path, "serve", "--discard", "--listen", f"{host}:{port}", "--max-clients", "500",
                                 "--hostname", "bench.test"], env=env, stderr=subprocess.DEVNULL)
        servers.append((name, proc, port))
    p2 = free_port(host)
    sink_args = [tool("smtp-sink")]
    if os.geteuid() == 0:
        sink_args += ["-u", "nobody"]
    sink = subprocess.Popen(sink_args + [f"{host}:{p2}", "500"], stderr=subprocess.DEVNULL)
    servers.append(("smtp-sink", sink, p2))
    # The same core in a single-threaded readiness loop (benches/src/bin/evloop-sink.rs): what
    # the I/O model is worth, next to smtp-std's thread per connection.
    if not a.no_evloop:
        p4 = free_port(host)
        evloop = subprocess.Popen([os.path.join(target, "release", "evloop-sink"), f"{host}:{p4}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers.append(("evloop-sink", evloop, p4))
    tmp = None
    if a.maildir:
        tmp = tempfile.mkdtemp(prefix="smtp-bench-")
        p3 = free_port(host)
        md = subprocess.Popen([binary, "serve", "--maildir", os.path.join(tmp, "Maildir"), "--listen",
                               f"{host}:{p3}", "--max-clients", "500", "--hostname", "bench.test"],
                              env=env, stderr=subprocess.DEVNULL)
        servers.append(("smtp-std maildir", md, p3))
    try:
        for _, proc, port in servers:
            wait_port(host, port)
        scale = 0.2 if a.quick else 1.0
        # Enough messages that the slowest server runs a few seconds per case: CPU time comes
        # in 10 ms ticks, and smtp-source's wall time in steps of about 50 ms (so the 1 KiB
        # cases with 20 sessions run 4-6 s each, not 1-1.5 s).
        cases = [
            (1024, 20, True, 200000), (1024, 1, True, 10000), (1024, 20, False, 40000),
            (100 * 1024, 20, True, 5000), (100 * 1024, 1, True, 2000),
            (1024 * 1024, 20, True, 1500), (1024 * 1024, 1, True, 500), (1024 * 1024, 20, False, 500),
        ]
        print(f"{'case':<28} {'server':<18} {'msgs/s':>10} {'MB/s':>9} {'CPU s/1k msgs':>14}")
        for size, sessions, d, count in cases:
            count = max(sessions, int(count * scale))
            label = f"{size // 1024}KiB x{sessions}{' -d' if d else ' new conn/msg'}"
            if a.only and not any(o in label for o in a.only):
                continue
            results = {}
            runs = {}
            # Servers take turns within each run, so that a burst of load from elsewhere on the
            # machine hits all of them alike; medians over the runs.
            for _ in range(a.runs):
                for name, proc, port in servers:
                    if name.endswith("maildir") and size > 100 * 1024 and sessions == 1:
                        continue
                    r = run_case(proc.pid, port, host, size, sessions, d, count)
                    runs.setdefault(name, []).append(r)
                    if a.runs > 1:
                        print(f"{label:<28} {name:<18} {r[0]:>10.0f} {r[1]:>9.1f} {r[2]:>14.3f}  (run)")
            for name, rs in runs.items():
                results[name] = tuple(statistics.median(r[i] for r in rs) for i in range(3))
                mps, mbs, cpu = results[name]
                print(f"{label:<28} {name:<18} {mps:>10.0f} {mbs:>9.1f} {cpu:>14.3f}")
            s = results["smtp-sink"]
            others = [(o.split("=", 1)[0], o.split("=", 1)[0]) for o in a.also]
            for name, short in [("smtp-std", "std"), ("evloop-sink", "evloop")] + others:
                if name not in results:
                    continue
                o = results[name]
                print(f"{label:<28} {'ratio ' + short + '/sink':<18} {o[0] / s[0]:>10.2f} {o[1] / s[1]:>9.2f} "
                      f"{o[2] / s[2]:>14.2f}")
    finally:
        for _, proc, _ in servers:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
