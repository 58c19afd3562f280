#!/usr/bin/env python3
"""The outbound queue end to end: messages per second through submission -> durable queue ->
delivery to a discarding receiver, for `smtp-std serve --config` and for Postfix as a relay,
side by side on this machine, everything on loopback.

    submit-load (20 sessions) --submission--> server --queue (fsync)--> smarthost: smtp-sink

- smtp-std: a [listen] submission port (STARTTLS, AUTH against a passwd-file account), the
  queue under <data_dir>/queue/ (message and envelope fsynced with their directories before
  the 250), [outbound] smarthost = the sink, plain SMTP.
- Postfix: its own instance (config_directory, queue_directory, data_directory in the temp
  dir, `postfix -c DIR start`), smtpd with STARTTLS on the same certificate, relaying for
  127.0.0.0/8 (mynetworks: no AUTH, Postfix would need Dovecot or Cyrus SASL for it), relayhost
  = the sink, plain SMTP. cleanup fsyncs every queue file before smtpd's 250.
- The receiver for both: Postfix `smtp-sink -c` (counts, discards).

Per case and server: the client's submission rate (250s per second seen by submit-load), the
end-to-end rate (from the moment every session is ready — connected, STARTTLS and AUTH done —
until the sink has received the last message), and the server's CPU seconds per 1,000
messages over the same span (utime + stime from /proc: for smtp-std its process; for Postfix
the master, its live children and the children it reaped).

    python3 benches/queue.py            # 1 KiB x 20 sessions x 500, 100 KiB x 20 x 100
    python3 benches/queue.py --quick    # a fifth of that
    python3 benches/queue.py --only smtp-std --workers 20
    python3 benches/queue.py --breakdown  # also CPU by thread / process name, user and system

Needs: openssl, postfix (apt install postfix: smtp-sink, postfix, postconf), root for the
Postfix instance (without root, only smtp-std is measured). Builds the release binaries.
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
PASSWORD = "bench-password-1"
FROM = "alice@a.test"
TO = "sink@sink.test"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"nothing greets on {HOST}:{port}")


def tool(name):
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    raise SystemExit(f"{name} not found: apt install postfix")


def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid):
    """utime + stime of a process (all its threads)."""
    f = stat_fields(pid)
    return (int(f[11]) + int(f[12])) / TICK


def tree_cpu_seconds(pid):
    """utime + stime of `pid`, of its reaped children (cutime + cstime) and of its live
    children: what a Postfix master and its daemons have spent."""
    f = stat_fields(pid)
    total = sum(int(x) for x in f[11:15])
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            c = stat_fields(p)
        except OSError:
            continue
        if c[1] == str(pid):
            total += int(c[11]) + int(c[12])
    return total / TICK


def group(comm):
    """The stage a thread or process works for, from its name."""
    if comm.startswith("smtp-") and comm[5:6].isdigit():
        return "sessions"
    return re.sub(r"-\d+$", "", comm)


class Sampler:
    """CPU by stage: samples the server's threads (smtp-std) or processes (Postfix) every
    20 ms and sums, per name, what each spent while it was seen. Threads that end between two
    samples lose their last 20 ms; the totals above do not depend on this."""

    def __init__(self, server):
        self.server, self.first, self.last, self.names = server, {}, {}, {}
        self.stop = threading.Event()
        self.sample(initial=True)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def sample(self, initial=False):
        for uid, comm, user, system in self.server.units():
            ticks = (user, system)
            self.first.setdefault(uid, ticks if initial else (0, 0))
            self.last[uid] = ticks
            self.names[uid] = group(comm)

    def run(self):
        while not self.stop.wait(0.02):
            self.sample()

    def finish(self):
        self.stop.set()
        self.thread.join()
        alive = {u[0] for u in self.server.units()}
        self.sample()
        by = {}  # name -> [user s, system s]
        for uid, (user, system) in self.last.items():
            b = by.setdefault(self.names[uid], [0.0, 0.0])
            b[0] += (user - self.first[uid][0]) / TICK
            b[1] += (system - self.first[uid][1]) / TICK
        if "reaped" in by:
            # Postfix: what exited children spent in all (the master's cutime and cstime
            # grow by that), less what the samples saw of them.
            reaped = by.pop("reaped")
            for uid in self.last:
                if uid not in alive and uid != "reaped":
                    for i in (0, 1):
                        reaped[i] -= self.last[uid][i] / TICK
            by["exited, unseen"] = reaped
        return by


def disk_stat(path):
    """(sectors written, write requests, cache flushes) of the block device holding `path`, or
    None. The whole machine's I/O on that device, not the server's alone."""
    d = os.stat(path).st_dev
    try:
        with open(f"/sys/dev/block/{os.major(d)}:{os.minor(d)}/stat") as f:
            v = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return None
    return (v[6], v[4], v[15] if len(v) > 15 else 0)


class Sink:
    """`smtp-sink -c`: discards every message; its running counters are read from stdout."""

    def __init__(self, tmp):
        self.port = free_port()
        args = [tool("smtp-sink"), "-c"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        self.proc = subprocess.Popen(args + [f"{HOST}:{self.port}", "1000"], stdout=subprocess.PIPE,
                                     stderr=open(os.path.join(tmp, "sink.err"), "wb"), cwd=tmp)
        self.messages = 0
        self.sessions = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                return
            buf += chunk
            *done, buf = re.split(rb"[\r\n]", buf)
            for line in reversed(done):
                m = re.search(rb"sess=(\d+) quit=\d+ mesg=(\d+)", line)
                if m:
                    self.sessions, self.messages = int(m.group(1)), int(m.group(2))
                    break


def openssl_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=mail.a.test"], check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o644)  # Postfix's smtpd reads it as the postfix user
    return cert, key


class SmtpStd:
    name = "smtp-std"
    tls = "required"
    auth = True

    def __init__(self, tmp, sink, cert, key, workers, log, binary):
        d = os.path.join(tmp, "smtp-std")
        os.makedirs(d)
        accounts = os.path.join(d, "passwd")
        subprocess.run([binary, "user", "add", FROM, "--accounts", accounts], input=PASSWORD + "\n", text=True,
                       check=True, capture_output=True, timeout=60)
        self.port = free_port()
        self.env_dir = os.path.join(d, "data", "queue", "entries")
        self.spool = d
        config = os.path.join(d, "smtp-std.toml")
        with open(config, "w") as f:
            f.write(f"""hostname = "mail.a.test"
data_dir = "data"
accounts = "passwd"
mail_auth = false
trusted_networks = ["127.0.0.1/32"]
[listen]
smtp = ["{HOST}:{free_port()}"]
submission = ["{HOST}:{self.port}"]
[tls]
cert = "{cert}"
key = "{key}"
[limits]
max_clients = 500
[outbound]
smarthost = "{HOST}:{sink.port}"
smarthost_tls = "none"
[queue]
workers = {workers}
[[domain]]
name = "a.test"
[domain.aliases]
postmaster = "alice"
""")
        self.log = os.path.join(d, "serve.log")
        env = dict(os.environ, RUST_LOG=log)
        self.proc = subprocess.Popen([binary, "serve", "--config", config], env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "wb"))
        wait_port(self.port)

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def units(self):
        """(tid, name, user ticks, system ticks) of every thread."""
        out = []
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{tid}/comm") as f:
                    comm = f.read().strip()
                f = stat_fields(f"{self.proc.pid}/task/{tid}")
            except OSError:
                continue
            out.append((tid, comm, int(f[11]), int(f[12])))
        return out

    def queued(self):
        return sum(1 for n in os.listdir(self.env_dir) if not n.endswith(".tmp") and not n.startswith("free."))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


MASTER_CF = """\
{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A Postfix instance of its own: config, queue and data directories in the temp dir."""

    name = "postfix"
    tls = "required"
    auth = False

    def __init__(self, tmp, sink, cert, key):
        d = os.path.join(tmp, "postfix")
        self.conf, self.queue, data = (os.path.join(d, x) for x in ("etc", "spool", "data"))
        os.makedirs(self.conf)
        os.makedirs(self.queue)
        self.spool = self.queue
        os.makedirs(data)
        shutil.chown(data, "postfix", "postfix")
        for p in (tmp, d):
            os.chmod(p, 0o755)
        defaults = {}
        out = subprocess.run([tool("postconf"), "-d"], capture_output=True, text=True, check=True, timeout=60)
        for line in out.stdout.splitlines():
            k, _, v = line.partition(" = ")
            defaults[k] = v
        self.port = free_port()
        self.maillog = os.path.join(d, "maillog")
        main = {
            "compatibility_level": "3.6",
            "myhostname": "relay.b.test",
            "mydomain": "b.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": HOST,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "relayhost": f"[{HOST}]:{sink.port}",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": cert,
            "smtpd_tls_key_file": key,
            "smtpd_tls_session_cache_database": "",
            "smtp_tls_session_cache_database": "",
            "queue_directory": self.queue,
            "data_directory": data,
            "daemon_directory": defaults["daemon_directory"],
            "shlib_directory": defaults["shlib_directory"],
            "meta_directory": defaults["meta_directory"],
            "command_directory": defaults["command_directory"],
            "maillog_file": self.maillog,
            "maillog_file_prefixes": d,
            "message_size_limit": "26214400",
            "smtpd_client_connection_count_limit": "0",
            "biff": "no",
        }
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.writelines(f"{k} = {v}\n" for k, v in main.items())
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=f"{HOST}:{self.port}"))
        postfix = tool("postfix")
        # `check` creates the queue's subdirectories with their owners and modes.
        subprocess.run([postfix, "-c", self.conf, "check"], check=True, capture_output=True, timeout=60)
        subprocess.run([postfix, "-c", self.conf, "start"], check=True, capture_output=True, timeout=60)
        self.master = None
        pidfile = os.path.join(self.queue, "pid", "master.pid")
        deadline = time.time() + 30
        while self.master is None and time.time() < deadline:
            try:
                with open(pidfile) as f:
                    self.master = int(f.read().strip())
            except (OSError, ValueError):
                time.sleep(0.05)
        if self.master is None:
            raise SystemExit(f"postfix did not start: see {self.maillog}")
        wait_port(self.port)

    def cpu(self):
        return tree_cpu_seconds(self.master)

    def units(self):
        """(pid, name, user ticks, system ticks) of the master (its own and its reaped
        children's, under "reaped") and of each live child."""
        f = stat_fields(self.master)
        out = [("master", "master", int(f[11]), int(f[12])), ("reaped", "reaped", int(f[13]), int(f[14]))]
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                c = stat_fields(p)
                if c[1] != str(self.master):
                    continue
                with open(f"/proc/{p}/comm") as fc:
                    comm = fc.read().strip()
            except OSError:
                continue
            out.append((p, comm, int(c[11]), int(c[12])))
        return out

    def queued(self):
        n = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(os.path.join(self.queue, sub)):
                n += len(files)
        return n

    def stop(self):
        try:
            subprocess.run([tool("postfix"), "-c", self.conf, "stop"], capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.time() + 15
        while time.time() < deadline and os.path.exists(f"/proc/{self.master}"):
            time.sleep(0.1)
        if os.path.exists(f"/proc/{self.master}"):
            subprocess.run([tool("postfix"), "-c", self.conf, "abort"], capture_output=True, timeout=30)


def run_case(server, sink, size, sessions, per_session, timeout, breakdown):
    """One case: (client msgs/s, end-to-end msgs/s, server CPU s per 1k msgs, all delivered,
    CPU s per 1k msgs by stage or None)."""
    total = sessions * per_session
    base = sink.messages
    args = [os.path.join(ROOT, "target", "release", "submit-load"), "--server", f"{HOST}:{server.port}",
            "--sessions", str(sessions), "--messages", str(per_session), "--size", str(size), "--from", FROM,
            "--to", TO, "--tls", server.tls, "--insecure"]
    if server.auth:
        args += ["--auth-user", FROM, "--password", PASSWORD]
    load = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    try:
        first = load.stdout.readline()
        # Every session is connected, through STARTTLS and AUTH: the clock and the CPU count
        # start (what a session's set-up costs is not per message).
        t0 = time.perf_counter()
        cpu0 = server.cpu()
        sampler = Sampler(server) if breakdown else None
        disk0 = disk_stat(server.spool) if breakdown else None
        if first.strip() != "ready":
            raise SystemExit(f"submit-load: {first!r}")
        summary = load.stdout.readline()
        load.wait(timeout=max(1, deadline - time.time()))
        m = re.search(r"sent=(\d+) failed=(\d+) elapsed=([\d.]+)", summary)
        if not m or int(m.group(2)):
            raise SystemExit(f"{server.name}: submit-load: {summary.strip()!r}")
        client_rate = int(m.group(1)) / float(m.group(3))
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    while sink.messages - base < total and time.time() < deadline:
        time.sleep(0.005)
    t1 = time.perf_counter()
    delivered = sink.messages - base
    # The server's last steps (removing the entries) count too; bounded.
    while server.queued() and time.time() < deadline + 10:
        time.sleep(0.02)
    time.sleep(0.3)
    cpu = server.cpu() - cpu0
    stages = None
    if sampler:
        stages = {k: [x * 1000 / max(delivered, 1) for x in v] for k, v in sampler.finish().items()}
        disk1 = disk_stat(server.spool)
        if disk0 and disk1:
            n = max(delivered, 1)
            stages["disk"] = ((disk1[0] - disk0[0]) * 512 / 1024 / n, (disk1[1] - disk0[1]) / n,
                              (disk1[2] - disk0[2]) / n)
    return client_rate, delivered / (t1 - t0), cpu * 1000 / max(delivered, 1), delivered == total, stages


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a fifth of the messages")
    ap.add_argument("--only", choices=["smtp-std", "postfix"], help="measure one server")
    ap.add_argument("--size", type=int, choices=[1, 100], help="one case: 1 or 100 (KiB)")
    ap.add_argument("--workers", type=int, default=8, help="smtp-std's [queue] workers (default 8)")
    ap.add_argument("--log", default="info", help="smtp-std's RUST_LOG (default info; Postfix logs too)")
    ap.add_argument("--timeout", type=float, default=900, help="bound on each case, seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    ap.add_argument("--smtp-std", default=os.path.join(ROOT, "target", "release", "smtp-std"), metavar="BINARY",
                    help="the smtp-std binary to measure (default: this workspace's release build)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also the server's CPU by thread (smtp-std) or process (Postfix) name")
    a = ap.parse_args()

    subprocess.run(["cargo", "build", "-q", "--release", "-p", "smtp-std", "-p", "smtp-benches"], cwd=ROOT,
                   check=True)
    scale = 0.2 if a.quick else 1.0
    cases = [(1024, 20, 500), (100 * 1024, 20, 100)]
    if a.size:
        cases = [c for c in cases if c[0] == a.size * 1024]
    tmp = tempfile.mkdtemp(prefix="queue-bench-")
    started = []
    try:
        sink = Sink(tmp)
        started.append(sink)
        wait_port(sink.port)
        cert, key = openssl_cert(tmp)
        servers = []
        if a.only in (None, "smtp-std"):
            servers.append(SmtpStd(tmp, sink, cert, key, a.workers, a.log, a.smtp_std))
            started.append(servers[-1])
        if a.only in (None, "postfix"):
            if os.geteuid() != 0:
                print("not root: no Postfix instance", file=sys.stderr)
            else:
                servers.append(Postfix(tmp, sink, cert, key))
                started.append(servers[-1])
        print(f"{'case':<20} {'server':<10} {'submit msgs/s':>14} {'end-to-end msgs/s':>18} {'MB/s':>7} "
              f"{'CPU s/1k msgs':>14}")
        for size, sessions, per_session in cases:
            per_session = max(1, int(per_session * scale))
            label = f"{size // 1024}KiB x{sessions} x{per_session}"
            results = {}
            for s in servers:
                sub, e2e, cpu, complete, stages = run_case(s, sink, size, sessions, per_session, a.timeout,
                                                           a.breakdown)
                results[s.name] = (sub, e2e, cpu)
                note = "" if complete else "  (timed out: not all delivered)"
                print(f"{label:<20} {s.name:<10} {sub:>14.0f} {e2e:>18.0f} {e2e * size / 1e6:>7.1f} {cpu:>14.3f}{note}",
                      flush=True)
                if stages:
                    disk = stages.pop("disk", None)
                    parts = ", ".join(f"{k} {u + s:.3f} ({u:.3f} user)"
                                      for k, (u, s) in sorted(stages.items(), key=lambda kv: -sum(kv[1]))
                                      if abs(u + s) >= 0.0005)
                    print(f"{'':<20} {'':<10} CPU s/1k msgs by name: {parts}", flush=True)
                    if disk:
                        print(f"{'':<20} {'':<10} disk per message (whole device): {disk[0]:.1f} KiB written, "
                              f"{disk[1]:.2f} write requests, {disk[2]:.2f} cache flushes", flush=True)
            if len(results) == 2:
                o, p = results["smtp-std"], results["postfix"]
                print(f"{label:<20} {'std/pfx':<10} {o[0] / p[0]:>14.2f} {o[1] / p[1]:>18.2f} {'':>7} "
                      f"{o[2] / p[2]:>14.2f}", flush=True)
    finally:
        for s in reversed(started):
            try:
                if isinstance(s, Sink):
                    s.proc.terminate()
                    s.proc.wait(timeout=10)
                else:
                    s.stop()
            except Exception as e:  # keep stopping the others
                print(f"stopping {type(s).__name__}: {e}", file=sys.stderr)
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
