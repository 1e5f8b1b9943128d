#!/usr/bin/env python3
"""Soak test (not CI): mixed load against a release build for a bounded time, reporting the
server's resident memory and open file descriptors at the start and the end.

Usage: bench/soak.sh [SECONDS] (default 600), or directly:
    python3 bench/soak.py --binary target/release/hmac-file-server --seconds 600

The mix, from 8 client threads on loopback: small signed PUTs (a fresh path each), GETs and
Range GETs of uploaded files, HEADs of missing paths, uploads abandoned half-way, chunked
uploads, forged signatures and malformed heads. A retention sweep deletes uploads beyond the
newest 20,000 from StoreDir, as an expiry job would, so the run is bounded on disk too. Every
loop is bounded by the deadline and by --max-requests.
"""

import argparse
import hashlib
import hmac
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

SECRET = "soak-secret"


def sign(path, size):
    return hmac.new(SECRET.encode(), f"{path} {size}".encode(), hashlib.sha256).hexdigest()


def request(addr, data, read=True):
    """Send raw bytes on a fresh connection; the status code, or None."""
    try:
        with socket.create_connection(addr, timeout=10) as s:
            s.sendall(data)
            if not read:
                return None
            s.shutdown(socket.SHUT_WR)
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            parts = head.split(b" ", 2)
            return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    except OSError:
        return None


def fd_kinds(pid, store):
    """Open fds of the server by kind: sockets, temporaries, stored files (download cache), other."""
    kinds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            kind = "socket"
        elif "/.hmac-file-server/tmp/" in target:
            kind = "temporary"
        elif target.startswith(store + "/") and "/.hmac-file-server" not in target:
            kind = "stored file"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def proc_sample(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


class Load:
    def __init__(self, addr, store, deadline, max_requests):
        self.addr = addr
        self.store = store
        self.deadline = deadline
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self.uploaded = []
        self.counts = {}
        self.requests = 0
        self.unexpected = []

    def note(self, kind, status, ok):
        with self.lock:
            self.requests += 1
            self.counts[(kind, status)] = self.counts.get((kind, status), 0) + 1
            if not ok and len(self.unexpected) < 20:
                self.unexpected.append((kind, status))

    def more(self):
        with self.lock:
            return time.monotonic() < self.deadline and self.requests < self.max_requests

    def put(self, rnd):
        name = f"soak/{rnd.getrandbits(64):016x}/f{rnd.randrange(1000)}.bin"
        body = os.urandom(rnd.choice([100, 4096, 65536, 300_000]))
        target = "/upload/" + urllib.parse.quote(name) + "?v=" + sign(name, len(body))
        head = f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        status = request(self.addr, head + body)
        self.note("put", status, status == 201)
        if status == 201:
            with self.lock:
                self.uploaded.append((name, len(body)))

    def get(self, rnd, ranged):
        with self.lock:
            if not self.uploaded:
                return
            name, size = rnd.choice(self.uploaded[-5000:])
        extra = f"Range: bytes=0-{max(0, size // 2)}\r\n" if ranged else ""
        data = f"GET /upload/{urllib.parse.quote(name)} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
        status = request(self.addr, data.encode())
        # 404 is fine: the retention sweep may have removed it.
        self.note("range" if ranged else "get", status, status in (200, 206, 404))

    def abandoned(self, rnd):
        name = f"soak/abandoned/{rnd.getrandbits(64):016x}"
        target = "/upload/" + name + "?v=" + sign(name, 100_000)
        head = f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode()
        request(self.addr, head + os.urandom(30_000), read=False)
        self.note("abandoned", None, True)

    def chunked(self, rnd):
        name = f"soak/chunked/{rnd.getrandbits(64):016x}"
        body = os.urandom(20_000)
        target = "/upload/" + name + "?v=" + sign(name, len(body))
        data = f"PUT {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        data += f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        status = request(self.addr, data)
        self.note("chunked", status, status == 201)

    def hostile(self, rnd):
        shapes = [
            (b"PUT /upload/x?v=00 HTTP/1.1\r\nContent-Length: 4\r\n\r\ndata", 403),
            (b"PUT /upload/../x HTTP/1.1\r\nContent-Length: 4\r\n\r\ndata", 400),
            (b"PUT /upload/x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET /upload/x HTTP/1.1\nHost: x\n\n", 400),
            (b"HEAD /upload/missing HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        ]
        data, want = rnd.choice(shapes)
        status = request(self.addr, data)
        self.note("hostile", status, status == want)

    def worker(self, seed):
        rnd = random.Random(seed)
        ops = [self.put] * 4 + [lambda r: self.get(r, False)] * 4 + [lambda r: self.get(r, True)] * 2
        ops += [self.abandoned, self.chunked, self.hostile, self.hostile]
        while self.more():
            rnd.choice(ops)(rnd)

    def sweep(self):
        while self.more():
            time.sleep(5)
            with self.lock:
                old, self.uploaded = self.uploaded[:-20000], self.uploaded[-20000:]
            for name, _ in old:
                try:
                    os.remove(os.path.join(self.store, name))
                except OSError:
                    pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--seconds", type=int, default=600)
    p.add_argument("--max-requests", type=int, default=5_000_000)
    p.add_argument("--port", type=int, default=18477)
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="hfs-soak-")
    store = os.path.join(work, "store")
    config = os.path.join(work, "config.toml")
    with open(config, "w") as f:
        f.write(
            f'ListenPort = "127.0.0.1:{args.port}"\nSecret = "{SECRET}"\nStoreDir = "{store}"\n'
            f'LogFile = "{work}/server.log"\nLogLevel = "warn"\nBodyTimeout = 5\nHeaderTimeout = 5\n'
        )
    server = subprocess.Popen([args.binary, "--config", config])
    addr = ("127.0.0.1", args.port)
    for _ in range(100):
        if request(addr, b"OPTIONS /upload/x HTTP/1.1\r\nHost: x\r\n\r\n") == 204:
            break
        time.sleep(0.1)
    else:
        server.kill()
        sys.exit("server did not start")

    start = proc_sample(server.pid)
    load = Load(addr, store, time.monotonic() + args.seconds, args.max_requests)
    threads = [threading.Thread(target=load.worker, args=(i,)) for i in range(8)]
    threads.append(threading.Thread(target=load.sweep))
    for t in threads:
        t.start()
    samples = [start]
    while any(t.is_alive() for t in threads):
        time.sleep(10)
        samples.append(proc_sample(server.pid))
        print(f"  t={10 * (len(samples) - 1):4d}s rss={samples[-1][0]} KiB fds={samples[-1][1]} requests={load.requests}")
    for t in threads:
        t.join()
    time.sleep(6)  # let abandoned uploads hit BodyTimeout
    end = proc_sample(server.pid)
    kinds = fd_kinds(server.pid, store)
    server.terminate()
    server.wait(timeout=30)

    print(f"soak: {args.seconds}s, {load.requests} requests")
    for (kind, status), n in sorted(load.counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        print(f"  {kind:10s} {status}: {n}")
    print(f"  RSS start {start[0]} KiB, peak {max(s[0] for s in samples)} KiB, end {end[0]} KiB")
    print(f"  open fds start {start[1]}, end {end[1]}: {kinds}")
    print(f"  server exit code after SIGTERM: {server.returncode}")
    if load.unexpected:
        print(f"  unexpected statuses (first 20): {load.unexpected}")
    leaked = end[1] - start[1]
    ok = not load.unexpected and leaked <= 4 and server.returncode == 0
    print("soak: " + ("OK" if ok else "FAILED"))
    subprocess.run(["rm", "-rf", work])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
