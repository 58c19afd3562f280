#!/usr/bin/env python3
"""Memory per message: many large messages at once, their final dots together.

N sessions (default 40) each send a message of SIZE MiB (default 20) to `smtp-std serve
--config`, all but the final `.` first; then every session sends its dot at the same moment,
so that every message's end-of-data work (SPF/DKIM/DMARC verification, DKIM signing, the
queue, local delivery) runs at once. The server's anonymous memory (RssAnon in
/proc/PID/status: heap and stacks, not the page cache of the files it reads) is sampled every
few milliseconds; the figure is (peak - idle) / N, the growth per concurrent message.

Two cases, `trusted_networks = []` and mail_auth on:
- smtp: port 25, a local recipient, the message carrying a DKIM-Signature (so its body hash
  is computed over the whole body) from a domain that dnsmasq serves (SPF, DMARC records);
- submission: port 587, STARTTLS + AUTH as alice, to a remote recipient: DKIM-signed with
  the domain's key and queued (delivery then fails: the remote domain does not exist).

    python3 benches/memory.py                 # 40 x 20 MiB, both cases
    python3 benches/memory.py --sessions 10 --size 5 --only smtp

Needs: dnsmasq, openssl (apt). Builds the release binary. The disk holds N x SIZE MiB twice.
"""
import argparse
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
PASSWORD = "bench-password-1"


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def rss_anon(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])  # KiB
    return 0


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def run(self):
        while not self.stop:
            try:
                self.peak = max(self.peak, rss_anon(self.pid))
            except OSError:
                return
            time.sleep(0.002)


def reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise IOError("connection closed")
        lines.append(line.decode("latin-1").rstrip())
        if len(line) < 4 or line[3:4] == b" ":
            return lines


def cmd(sock, f, line):
    sock.sendall(line.encode() + b"\r\n")
    return reply(f)


def body(size_mib, signed):
    head = (
        "From: Alice <alice@a.test>\r\nTo: someone\r\nSubject: big\r\n"
        "Date: Sun, 06 Dec 2026 12:00:00 +0000\r\nMessage-ID: <big@a.test>\r\n"
    )
    if signed:
        head = (
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=a.test; s=s1; "
            "h=from:to:subject; bh=AAAA; b=AAAA\r\n" + head
        )
    line = b"x" * 74 + b"\r\n"
    return head.encode() + b"\r\n" + line * (size_mib * 1024 * 1024 // len(line))


def session(port, submission, message, rcpt, ready, go, results, i, cafile):
    try:
        sock = socket.create_connection((HOST, port), timeout=300)
        f = sock.makefile("rb")
        reply(f)
        cmd(sock, f, "EHLO client.test")
        if submission:
            cmd(sock, f, "STARTTLS")
            ctx = ssl.create_default_context(cafile=cafile)
            ctx.check_hostname = False
            sock = ctx.wrap_socket(sock)
            f = sock.makefile("rb")
            cmd(sock, f, "EHLO client.test")
            import base64
            token = base64.b64encode(b"\0alice@a.test\0" + PASSWORD.encode()).decode()
            r = cmd(sock, f, "AUTH PLAIN " + token)
            assert r[-1].startswith("235"), r
        sender = "alice@a.test"
        for line in (f"MAIL FROM:<{sender}>", f"RCPT TO:<{rcpt}>", "DATA"):
            r = cmd(sock, f, line)
            assert r[-1][:1] in "23", (line, r)
        sock.sendall(message)
        ready.wait()
        go.wait()
        sock.sendall(b".\r\n")
        results[i] = reply(f)[-1]
        cmd(sock, f, "QUIT")
    except Exception as e:  # noqa: BLE001 - reported
        results[i] = f"error: {e}"
        try:
            ready.wait(timeout=0)
        except threading.BrokenBarrierError:
            pass


def run_case(binary, tmp, case, n, size, dns_port):
    work = os.path.join(tmp, case)
    os.makedirs(work)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=mx.b.test", "-keyout", f"{work}/key.pem", "-out", f"{work}/cert.pem"],
                   check=True, capture_output=True)
    subprocess.run([binary, "dkim-keygen", "--domain", "a.test", "--selector", "s1", "--out", f"{work}/dkim.key"],
                   check=True, capture_output=True)
    smtp, sub = free_port(), free_port()
    with open(f"{work}/smtp-std.toml", "w") as c:
        c.write(f'''hostname = "mx.b.test"
data_dir = "data"
accounts = "passwd"
trusted_networks = []
mail_auth = true
[listen]
smtp = ["{HOST}:{smtp}"]
submission = ["{HOST}:{sub}"]
[tls]
cert = "cert.pem"
key = "key.pem"
[dns]
server = "{HOST}:{dns_port}"
timeout = "2s"
[limits]
max_message_size = {(size + 2) << 20}
max_clients = {n + 20}
max_connections_per_client = 0
max_connection_rate = 0
[queue]
retry = ["1h"]
[[domain]]
name = "a.test"
dkim_selector = "s1"
dkim_key = "dkim.key"
[domain.aliases]
postmaster = "alice"
[[domain]]
name = "b.test"
[domain.aliases]
postmaster = "alice@a.test"
''')
    subprocess.run([binary, "user", "add", "alice@a.test", "--config", f"{work}/smtp-std.toml"],
                   input=PASSWORD.encode() + b"\n", check=True, capture_output=True)
    log = open(f"{work}/serve.log", "w")
    server = subprocess.Popen([binary, "serve", "--config", f"{work}/smtp-std.toml"], cwd=work,
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})
    try:
        wait_port(smtp)
        wait_port(sub)
        time.sleep(0.5)
        idle = rss_anon(server.pid)
        submission = case == "submission"
        message = body(size, signed=not submission)
        rcpt = "someone@nowhere.test" if submission else "postmaster@b.test"
        ready, go = threading.Barrier(n + 1), threading.Barrier(n + 1)
        results = [None] * n
        threads = [threading.Thread(target=session, args=(sub if submission else smtp, submission, message, rcpt,
                                                          ready, go, results, i, f"{work}/cert.pem"))
                   for i in range(n)]
        for t in threads:
            t.start()
        ready.wait()
        before = rss_anon(server.pid)
        if os.environ.get("MEMORY_DEBUG"):
            # The largest anonymous mappings (malloc arenas, the heap) and the thread count.
            big = []
            with open(f"/proc/{server.pid}/smaps") as f:
                region = None
                for line in f:
                    if "-" in line.split()[0] and not line.startswith(("Rss", "Anon")):
                        region = line.strip()
                    elif line.startswith("Anonymous:") and int(line.split()[1]) > 4096:
                        big.append((int(line.split()[1]), region))
            for kb, region in sorted(big, reverse=True)[:10]:
                print(f"   {kb / 1024:.1f} MiB anonymous in {region}")
            print("   threads:", len(os.listdir(f"/proc/{server.pid}/task")))
        sampler = Sampler(server.pid)
        sampler.start()
        start = time.time()
        go.wait()
        for t in threads:
            t.join()
        took = time.time() - start
        time.sleep(0.2)
        sampler.stop = True
        sampler.join()
        ok = sum(1 for r in results if r and r.startswith("250"))
        bad = [r for r in results if not (r and r.startswith("250"))]
        peak = sampler.peak
        print(f"{case:10} {n} x {size} MiB: {ok}/{n} got 250 in {took:.1f} s; RssAnon idle {idle / 1024:.1f} MiB, "
              f"before the dots {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB: "
              f"{(peak - idle) / 1024 / n:.2f} MiB per concurrent message")
        for r in bad[:3]:
            print("   ", r)
        return (peak - idle) / 1024 / n, ok == n
    finally:
        server.terminate()
        server.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=40)
    ap.add_argument("--size", type=int, default=20, help="MiB per message")
    ap.add_argument("--only", choices=["smtp", "submission"])
    args = ap.parse_args()
    if not shutil.which("dnsmasq") and not os.path.exists("/usr/sbin/dnsmasq"):
        raise SystemExit("needs dnsmasq (apt install dnsmasq)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "smtp-std"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target/release/smtp-std")
    tmp = tempfile.mkdtemp(prefix="smtp-memory-")
    dns_port = free_port(socket.SOCK_DGRAM)
    dnsmasq = subprocess.Popen(["/usr/sbin/dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                                f"--port={dns_port}", f"--listen-address={HOST}", "--bind-interfaces",
                                "--local=/test/", "--txt-record=a.test,v=spf1 ip4:127.0.0.0/8 -all",
                                "--txt-record=_dmarc.a.test,v=DMARC1; p=none",
                                "--mx-host=b.test,mx.b.test,10", "--address=/mx.b.test/127.0.0.1",
                                "--pid-file=" + os.path.join(tmp, "dnsmasq.pid")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        worst = 0.0
        for case in ["smtp", "submission"]:
            if args.only and case != args.only:
                continue
            per, _ = run_case(binary, tmp, case, args.sessions, args.size, dns_port)
            worst = max(worst, per)
        print(f"worst growth per concurrent message: {worst:.2f} MiB (goal: <= 2 MiB)")
    finally:
        dnsmasq.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
