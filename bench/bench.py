#!/usr/bin/env python3
"""Benchmark hmac-file-server against nginx (WebDAV PUT, sendfile GET) and a Python floor.

Every workload runs each peer in turn, round after round (A B C A B C ...), so drift on this
machine (page cache, inode reuse, a noisy neighbour) hits every peer alike; results are the
median of the rounds with their spread. Only loopback addresses are used, and every load is
bounded in time. Run through bench/run.sh, which builds the release binary first.
"""
import argparse
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "target", "release", "hmac-file-server")
SECRET = "bench-secret"
SMALL = 4096
GIB = 1 << 30


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sign(path, size):
    return hmac.new(SECRET.encode(), f"{path} {size}".encode(), hashlib.sha256).hexdigest()


def wait_port(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def pids_of(root_pid):
    """The process and its children (nginx workers)."""
    out = [root_pid]
    try:
        kids = open(f"/proc/{root_pid}/task/{root_pid}/children").read().split()
        out += [int(k) for k in kids]
    except OSError:
        pass
    return out


def status_kib(pid, field):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Peer:
    signed = False

    def __init__(self, name, port, store):
        self.name, self.port, self.store = name, port, store
        self.proc = None

    def url(self, target):
        return f"http://127.0.0.1:{self.port}{target}"

    def target(self, path, size):
        t = f"/upload/{path}"
        return f"{t}?v={sign(path, size)}" if self.signed else t

    def pids(self):
        return pids_of(self.proc.pid) if self.proc else []

    def reset_peak(self):
        for p in self.pids():
            try:
                with open(f"/proc/{p}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass

    def peak_kib(self):
        return sum(status_kib(p, "VmHWM:") for p in self.pids())

    def rss_kib(self):
        return sum(status_kib(p, "VmRSS:") for p in self.pids())

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class Ours(Peer):
    signed = True

    # The idle workload holds --idle connections beside the load's: above the default
    # MaxConnections (10,000), which would answer the load 503.
    def __init__(self, name, port, store, workdir, sync, workers, extra="MaxConnections = 50000\n", binary=BIN,
                 log_level="info"):
        super().__init__(name, port, store)
        self.binary = binary
        self.cfg = os.path.join(workdir, f"{name}.toml")
        with open(self.cfg, "w") as f:
            f.write(
                f'ListenPort = "127.0.0.1:{port}"\nSecret = "{SECRET}"\nStoreDir = "{store}"\n'
                f'LogFile = "{workdir}/{name}.log"\nLogLevel = "{log_level}"\nUploadMaxSize = "4GB"\n'
                f"SyncWrites = {'true' if sync else 'false'}\nWorkers = {workers}\n{extra}"
            )

    def start(self):
        self.proc = subprocess.Popen([self.binary, "--config", self.cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)


class Nginx(Peer):
    def __init__(self, name, port, store, workdir, workers):
        super().__init__(name, port, store)
        self.workdir = workdir
        self.cfg = os.path.join(workdir, "nginx.conf")
        text = open(os.path.join(HERE, "nginx.conf.in")).read()
        for k, v in {"@DIR@": workdir, "@STORE@": store, "@PORT@": str(port), "@WORKERS@": str(workers)}.items():
            text = text.replace(k, v)
        with open(self.cfg, "w") as f:
            f.write(text)
        os.makedirs(os.path.join(store, ".nginx-tmp"), exist_ok=True)
        os.makedirs(os.path.join(store, "upload"), exist_ok=True)

    def start(self):
        self.proc = subprocess.Popen(["nginx", "-c", self.cfg, "-p", self.workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        time.sleep(0.3)  # let the workers come up


class Floor(Peer):
    def start(self):
        os.makedirs(os.path.join(self.store, "upload"), exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "floor_server.py"), str(self.port), self.store])
        wait_port(self.port)


# ---------------- load generators ----------------

def forget_deleted_inodes():
    """Write everything back and drop the clean caches, so that files deleted before this run
    (an earlier run's stores) do not slow its inode allocations. ext4 without a journal will
    not reuse an inode deleted in the last 60 s, or 360 s while its inode-table block is dirty
    again, as it is once new inodes go into the same block (fs/ext4/ialloc.c,
    recently_deleted), and it looks at each such inode's block in the buffer cache to know;
    a block that is not cached counts as written. Without this, whichever peer's directories
    land in the block groups of the deleted files runs several times slower for minutes
    (docs/benchmarks.md, "A trap when measuring small uploads")."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")
    except OSError as e:
        log(f"cannot drop the page cache ({e}): a deletion of many files in the last 6 minutes would skew this run")


def disk_stat(path):
    """The block-layer counters (/sys/block/*/stat fields) of the device holding `path`;
    None where there is none (tmpfs)."""
    dev = os.stat(path).st_dev
    try:
        with open(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return None


def wrk(peer, script, pool_file, conns, seconds, threads, extra=()):
    threads = min(threads, conns)
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s", os.path.join(HERE, "wrk", script),
           peer.url("/"), "--", pool_file, str(threads), *map(str, extra)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120).stdout
    line = next((l for l in out.splitlines() if l.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out}")
    r = json.loads(line[len("WRKJSON "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = r["err_status"] + r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
    return r


def oha_get(peer, target, conns, seconds):
    if not shutil.which("oha"):
        return None
    out = subprocess.run(["oha", "--no-tui", "--output-format", "json", "-c", str(conns), "-z", f"{seconds}s", peer.url(target)],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    try:
        j = json.loads(out)
    except json.JSONDecodeError:
        return None
    lat = j.get("latencyPercentiles", {})
    return {"rps": j["summary"]["requestsPerSec"], "p50_us": lat.get("p50", 0) * 1e6, "p99_us": lat.get("p99", 0) * 1e6}


def curl_put(peer, path, src, size):
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-H", "Expect:", "-w", "%{http_code} %{time_total}",
                          "-T", src, peer.url(peer.target(path, size))], capture_output=True, text=True, timeout=600).stdout
    code, secs = out.split()
    return int(code), float(secs)


def curl_get(peer, path):
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_download}",
                          peer.url(f"/upload/{path}")], capture_output=True, text=True, timeout=600).stdout
    code, secs, size = out.split()
    return int(code), float(secs), int(size)


def dd_fsync(dst_dir, src, size):
    dst = os.path.join(dst_dir, "dd.bin")
    os.sync()
    t = time.perf_counter()
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=1M", f"count={size >> 20}", "conv=fsync", "status=none"], check=True)
    secs = time.perf_counter() - t
    os.unlink(dst)
    return size / secs / 1e6


def small_fsync_floor(dst_dir, seconds):
    """The physical floor for durable small files: create, write 4 KiB, fsync, one at a time."""
    d = os.path.join(dst_dir, "fsync-floor")
    os.sync()
    os.makedirs(d, exist_ok=True)
    data = b"x" * SMALL
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fd = os.open(os.path.join(d, f"{n}"), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        n += 1
    rate = n / (time.perf_counter() - t0)
    shutil.rmtree(d)
    return rate


def write_pool(peer, path, prefix, n, size, kind="f.bin"):
    """Write n fresh PUT targets to `path`, one per line: a new directory each, as Prosody makes
    one per upload, named `<prefix>-<i>`."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(peer.target(f"{prefix}-{i:07x}/{kind}", size) + "\n")
    return path


def upload_all(peer, targets, body):
    """Setup uploads over one keep-alive connection; every one must succeed."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=30)
    for t in targets:
        c.request("PUT", t, body=body)
        r = c.getresponse()
        r.read()
        if r.status not in (201, 204):
            raise RuntimeError(f"{peer.name}: setup PUT {t} -> {r.status}")
    c.close()


def hold_idle(peer, target, count):
    """Open `count` keep-alive connections that each did one small GET, and keep them."""
    socks = []
    req = f"GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", peer.port))
        s.sendall(req)
        socks.append(s)
    for s in socks:
        s.settimeout(10)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("idle connection closed early")
            got += chunk
    return socks


# ---------------- the suite ----------------

class Suite:
    def __init__(self, args, fsdir, workdir):
        self.a, self.fs, self.work = args, fsdir, workdir
        self.results = {}  # workload -> peer -> [values per round] (dicts)
        self.seq = 0

    def record(self, workload, peer, value):
        self.results.setdefault(workload, {}).setdefault(peer, []).append(value)

    def pool(self, peer, n, size, kind="f.bin"):
        """n fresh targets (new directory each, as Prosody makes one per upload)."""
        self.seq += 1
        path = os.path.join(self.work, f"pool-{peer.name}-{self.seq}.txt")
        return write_pool(peer, path, f"b{self.seq}", n, size, kind)

    def put_load(self, peer, conns, seconds):
        expect = int(self.a.max_rps * seconds)
        pool = self.pool(peer, expect, SMALL)
        os.sync()  # nobody inherits the previous peer's writeback
        peer.reset_peak()
        before = disk_stat(self.fs)
        r = wrk(peer, "put.lua", pool, conns, seconds, self.a.threads, [SMALL])
        after = disk_stat(self.fs)
        r["peak_rss_kib"] = peer.peak_kib()
        if before and after and r["requests"]:
            # What reached the device during the load: a server that does not fsync leaves
            # its uploads dirty in the page cache, to be written after the measurement.
            r["disk_kib_per_upload"] = (after[6] - before[6]) * 512 / 1024 / r["requests"]
            r["disk_busy_pct"] = (after[9] - before[9]) / (r["duration_us"] / 1e3) * 100
        os.unlink(pool)
        return r

    def run(self, peers):
        a = self.a
        src1g = os.path.join(self.work, "src-1g.bin")
        src64m = os.path.join(self.work, "src-64m.bin")
        for src, size in [(src1g, a.big), (src64m, a.par_size)]:
            with open(src, "wb") as f:
                for _ in range(size >> 20):
                    f.write(os.urandom(1 << 20))
        for p in peers:
            p.start()
        # Small files for the GET workload and the idle connections, uploaded once per peer.
        get_pools = {}
        for p in peers:
            targets = [p.target(f"get/{i:05x}/g.bin", SMALL) for i in range(a.get_files)]
            upload_all(p, targets, b"g" * SMALL)
            plain = os.path.join(self.work, f"get-{p.name}.txt")
            with open(plain, "w") as f:
                f.writelines(t.split("?")[0] + "\n" for t in targets)
            get_pools[p.name] = plain
            upload_all(p, [p.target("idle/tiny.txt", 16)], b"t" * 16)

        for rnd in range(a.rounds):
            order = peers[rnd % len(peers):] + peers[:rnd % len(peers)]
            log(f"== round {rnd + 1}/{a.rounds}: {' '.join(p.name for p in order)}")
            if rnd > 0:
                # Fresh processes each round: a peak-RSS reading must not start from the heap a
                # previous workload (the idle connections) left behind.
                for p in peers:
                    p.stop()
                    p.start()
            w = a.workloads
            for p in order if "put" in w else []:
                log(f"  {p.name}: 4 KiB PUT x64")
                self.record("put_4k_c64", p.name, self.put_load(p, 64, a.seconds))
            for p in order if "get" in w else []:
                log(f"  {p.name}: 4 KiB GET x64")
                peer_pool = get_pools[p.name]
                os.sync()
                p.reset_peak()
                r = wrk(p, "get.lua", peer_pool, 64, a.seconds, a.threads)
                r["peak_rss_kib"] = p.peak_kib()
                self.record("get_4k_c64", p.name, r)
                first = open(peer_pool).readline().strip()
                o = oha_get(p, first, 64, max(2, a.seconds // 2))
                if o:
                    self.record("get_4k_c64_oha", p.name, o)
            for conns in a.conns if "scale" in w else []:
                for p in order:
                    log(f"  {p.name}: 4 KiB PUT x{conns}")
                    self.record(f"put_4k_c{conns}", p.name, self.put_load(p, conns, a.scale_seconds))
            # Large transfers: one 1 GiB PUT and GET, then 16 parallel 64 MiB PUTs.
            for p in order if "big" in w else []:
                log(f"  {p.name}: 1 GiB PUT + GET")
                path = f"big{rnd}/1g.bin"
                os.sync()
                p.reset_peak()
                code, secs = curl_put(p, path, src1g, a.big)
                peak = p.peak_kib()
                assert code in (201, 204), f"{p.name} 1 GiB PUT: {code}"
                self.record("put_1g", p.name, {"mbps": a.big / secs / 1e6, "peak_rss_kib": peak})
                p.reset_peak()
                code, secs, size = curl_get(p, path)
                assert code == 200 and size == a.big, f"{p.name} 1 GiB GET: {code} {size}"
                self.record("get_1g", p.name, {"mbps": a.big / secs / 1e6, "peak_rss_kib": p.peak_kib()})
                os.unlink(os.path.join(p.store, "upload" if not isinstance(p, Ours) else "", path))
            if "big" in w:
                self.record("put_1g", "dd conv=fsync", {"mbps": dd_fsync(self.fs, src1g, a.big)})
            for p in order if "par" in w else []:
                log(f"  {p.name}: 16 x 64 MiB PUT in parallel")
                os.sync()
                p.reset_peak()
                t0 = time.perf_counter()
                procs = [subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-H", "Expect:", "-w", "%{http_code}", "-T", src64m,
                                           p.url(p.target(f"par{rnd}/{i}.bin", a.par_size))], stdout=subprocess.PIPE, text=True)
                         for i in range(16)]
                codes = [int(pr.communicate(timeout=600)[0]) for pr in procs]
                secs = time.perf_counter() - t0
                assert all(c in (201, 204) for c in codes), f"{p.name}: {codes}"
                self.record("put_64m_x16", p.name, {"mbps": 16 * a.par_size / secs / 1e6, "peak_rss_kib": p.peak_kib()})
                shutil.rmtree(os.path.join(p.store, "upload" if not isinstance(p, Ours) else "", f"par{rnd}"))
            # Last in the round: holding thousands of connections grows the heap for good.
            if "idle" in w:
                for p in order:
                    if isinstance(p, Floor):
                        continue  # one thread per connection: thousands of idle ones measure nothing useful
                    log(f"  {p.name}: {a.idle} idle keep-alive connections + 4 KiB PUT x64")
                    # A fresh process, warmed by a few requests: the heap the round's loads grew
                    # would otherwise absorb the idle connections and read as nothing.
                    p.stop()
                    p.start()
                    for s in hold_idle(p, "/upload/idle/tiny.txt", 64):
                        s.close()
                    time.sleep(0.5)
                    before = p.rss_kib()
                    socks = hold_idle(p, "/upload/idle/tiny.txt", a.idle)
                    time.sleep(0.5)
                    after = p.rss_kib()
                    r = self.put_load(p, 64, a.seconds)
                    r["idle_bytes_per_conn"] = (after - before) * 1024 / a.idle
                    for s in socks:
                        s.close()
                    self.record("put_4k_c64_idle", p.name, r)
                    time.sleep(0.5)
            if "par" in w:
                self.record("put_64m_x16", "dd conv=fsync", {"mbps": dd_fsync(self.fs, src1g, 16 * a.par_size)})
            if "put" in w:
                self.record("put_4k_c64", "fsync floor (1 thread)", {"rps": small_fsync_floor(self.fs, 2)})
        for p in peers:
            p.stop()


# ---------------- reporting ----------------

def med(vals, key):
    xs = [v[key] for v in vals if key in v]
    if not xs:
        return None, None
    return statistics.median(xs), (min(xs), max(xs))


METRICS = [
    # (workload, metric, label, higher_is_better)
    ("put_4k_c64", "rps", "4 KiB PUT, 64 conns: req/s", True),
    ("put_4k_c64", "p50_us", "4 KiB PUT, 64 conns: p50 µs", False),
    ("put_4k_c64", "p99_us", "4 KiB PUT, 64 conns: p99 µs", False),
    ("put_4k_c64", "peak_rss_kib", "4 KiB PUT, 64 conns: peak RSS KiB", False),
    ("put_4k_c64", "disk_kib_per_upload", "4 KiB PUT, 64 conns: KiB written to the disk per upload", False),
    ("put_4k_c64", "disk_busy_pct", "4 KiB PUT, 64 conns: disk busy %", False),
    ("get_4k_c64", "rps", "4 KiB GET, 64 conns: req/s", True),
    ("get_4k_c64", "p50_us", "4 KiB GET, 64 conns: p50 µs", False),
    ("get_4k_c64", "p99_us", "4 KiB GET, 64 conns: p99 µs", False),
    ("get_4k_c64_oha", "rps", "4 KiB GET (oha): req/s", True),
    ("get_4k_c64_oha", "p99_us", "4 KiB GET (oha): p99 µs", False),
    ("put_1g", "mbps", "1 GiB PUT: MB/s", True),
    ("put_1g", "peak_rss_kib", "1 GiB PUT: peak RSS KiB", False),
    ("get_1g", "mbps", "1 GiB GET: MB/s", True),
    ("put_64m_x16", "mbps", "16 x 64 MiB PUT: MB/s", True),
    ("put_64m_x16", "peak_rss_kib", "16 x 64 MiB PUT: peak RSS KiB", False),
    ("put_4k_c64_idle", "rps", "4 KiB PUT x64 + idle conns: req/s", True),
    ("put_4k_c64_idle", "idle_bytes_per_conn", "bytes per idle connection", False),
]


def report(results, meta, outdir):
    peers = []
    for w in results.values():
        for p in w:
            if p not in peers:
                peers.append(p)
    table = {}
    for w, m, label, _ in METRICS + [(f"put_4k_c{c}", "rps", f"4 KiB PUT, {c} conns: req/s", True) for c in meta["conns"]]:
        if w not in results:
            continue
        row = {}
        for p in peers:
            if p in results[w]:
                v, spread = med(results[w][p], m)
                if v is not None:
                    row[p] = {"median": v, "min": spread[0], "max": spread[1]}
        if row:
            table[label] = row
    # Ratios against nginx for our two configurations.
    lines = ["| metric | " + " | ".join(peers) + " | ours/nginx | ours (no sync)/nginx |", "|---" * (len(peers) + 3) + "|"]
    for label, row in table.items():
        cells = []
        for p in peers:
            c = row.get(p)
            cells.append("" if c is None else f"{c['median']:.0f} ({c['min']:.0f}–{c['max']:.0f})")
        ng = row.get("nginx", {}).get("median")

        def ratio(name):
            v = row.get(name, {}).get("median")
            # The disk's figures are absolute: nginx writes next to nothing while it is measured.
            return f"{v / ng:.2f}x" if v and ng and "disk" not in label else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio('ours')} | {ratio('ours-nosync')} |")
    if "put_1g" in results and "dd conv=fsync" in results["put_1g"]:
        dd = statistics.median(v["mbps"] for v in results["put_1g"]["dd conv=fsync"])
        ours = statistics.median(v["mbps"] for v in results["put_1g"].get("ours", [{"mbps": 0}]))
        lines.append(f"| 1 GiB PUT ours / dd conv=fsync | | | | | {ours / dd:.2f}x | |")
    if "put_4k_c64_idle" in results and "put_4k_c64" in results:
        for p in ("ours", "nginx"):
            if p in results["put_4k_c64_idle"]:
                idle = statistics.median(v["rps"] for v in results["put_4k_c64_idle"][p])
                base = statistics.median(v["rps"] for v in results["put_4k_c64"][p])
                lines.append(f"| {p}: PUT throughput with idle conns / without | | | | | {idle / base:.2f}x | |")
    md = "\n".join(lines)
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump({"meta": meta, "table": table, "raw": results}, f, indent=1)
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(f"Command: `{meta['command']}`  \nDate: {meta['date']}, filesystem: {meta['fs']}, rounds: {meta['rounds']}\n\n{md}\n")
    chart(table, os.path.join(outdir, "chart.png"))
    print(md)


def chart(table, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no chart")
        return
    labels, ours, nosync = [], [], []
    for label, row in table.items():
        ng = row.get("nginx", {}).get("median")
        if not ng or "ours" not in row:
            continue
        higher = any(label == l for _, _, l, h in METRICS if h) or label.endswith("req/s")
        r = row["ours"]["median"] / ng
        labels.append(label)
        ours.append(r if higher else 1 / r)
        nosync.append((row.get("ours-nosync", {}).get("median", 0) / ng) if higher else (ng / row["ours-nosync"]["median"] if row.get("ours-nosync", {}).get("median") else 0))
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(labels) + 1.5))
    y = range(len(labels))
    ax.barh([i + 0.2 for i in y], ours, height=0.4, label="hmac-file-server (fsync before 201)")
    ax.barh([i - 0.2 for i in y], nosync, height=0.4, label="hmac-file-server, SyncWrites = false")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("advantage over nginx (>1 is better: ratio for throughput, inverse ratio for latency/memory)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10, help="duration of the 64-connection loads")
    ap.add_argument("--scale-seconds", type=int, default=5, help="duration of each connection-scaling load")
    ap.add_argument("--conns", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64, 256])
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (the load generator shares the 2 cores)")
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--workloads", type=lambda s: set(s.split(",")), default={"put", "get", "scale", "idle", "big", "par"},
                    help="comma list of: put, get, scale, idle, big, par")
    ap.add_argument("--big", type=lambda s: int(s) << 20, default=1024 << 20, help="MiB for the single large PUT/GET")
    ap.add_argument("--par-size", type=lambda s: int(s) << 20, default=64 << 20, help="MiB per parallel PUT")
    ap.add_argument("--get-files", type=int, default=2000)
    ap.add_argument("--max-rps", type=int, default=60000, help="pool sizing: fresh PUT targets per second of load")
    ap.add_argument("--fs", choices=["root", "tmpfs", "loop"], default="root",
                    help="where every server's data lives: the root filesystem, a fresh tmpfs, or a fresh loop-mounted ext4")
    ap.add_argument("--peers", default="ours,ours-nosync,nginx,floor",
                    help="comma list of: ours, ours-nosync, nginx, floor, baseline, baseline-nosync")
    ap.add_argument("--baseline", help="another build of this server (e.g. main's, copied aside) run as the peers "
                    "'baseline' and 'baseline-nosync', to A/B a change in the same interleaved run")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="hfs-bench-", dir="/var/tmp")
    mnt = None
    if a.fs == "root":
        fsdir = os.path.join(work, "fs")
        os.makedirs(fsdir)
    else:
        mnt = os.path.join(work, "mnt")
        os.makedirs(mnt)
        if a.fs == "tmpfs":
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g", "tmpfs", mnt], check=True)
        else:
            img = os.path.join(work, "fs.img")
            # Sparse; one inode per 4 KiB: a full run creates millions of small files and dirs.
            subprocess.run(["truncate", "-s", "32G", img], check=True)
            subprocess.run(["mkfs.ext4", "-q", "-i", "4096", "-O", "^has_journal", img], check=True)
            subprocess.run(["mount", "-o", "loop", img, mnt], check=True)
        fsdir = mnt
    peers = []
    wanted = a.peers.split(",")
    port = 28000
    for name in wanted:
        port += 1
        store = os.path.join(fsdir, name)
        os.makedirs(store, exist_ok=True)
        if name == "ours":
            peers.append(Ours(name, port, store, work, True, a.workers))
        elif name == "ours-nosync":
            peers.append(Ours(name, port, store, work, False, a.workers))
        elif name in ("baseline", "baseline-nosync") and a.baseline:
            peers.append(Ours(name, port, store, work, name == "baseline", a.workers, binary=a.baseline))
        elif name == "nginx":
            peers.append(Nginx(name, port, store, work, a.workers))
        elif name == "floor":
            peers.append(Floor(name, port, store))
    forget_deleted_inodes()
    suite = Suite(a, fsdir, work)
    meta = {"command": " ".join(["bench/run.sh"] + sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "fs": a.fs, "rounds": a.rounds, "conns": a.conns, "kernel": os.uname().release, "cpus": os.cpu_count(),
            "wrk_threads": a.threads}
    try:
        suite.run(peers)
        report(suite.results, meta, a.out)
    finally:
        for p in peers:
            p.stop()
        if mnt:
            subprocess.run(["umount", mnt])
        log("removing the benchmark's files (hundreds of thousands of small ones: this takes a while)")
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
