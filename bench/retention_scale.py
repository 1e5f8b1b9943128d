#!/usr/bin/env python3
"""Retention at scale: a StoreDir of N files (default 1,000,000) on a private tmpfs.

Measures, with the release binary:
  1. the first start on a store without an index: time until the server listens (it must not
     walk the tree first) and until the background walk has indexed every file;
  2. memory: VmRSS once indexed, and the peak (VmHWM);
  3. a sweep that finds little to delete: 10 files expiring among N, the CPU time the retention
     thread spends from their upload until they are gone;
  4. a clean restart with N indexed files: time until listening, and VmRSS.

Usage: sudo python3 bench/retention_scale.py [--files N] [--binary target/release/hmac-file-server]
Writes bench/results/retention_scale.json. Needs root (mounts a tmpfs) and about 2 GiB of RAM.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "retention-scale-secret-0123456789"


def proc_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def thread_cpu_seconds(pid, name):
    """User + system CPU seconds of the process's thread called `name`."""
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            return (int(rest[11]) + int(rest[12])) / tick
        except OSError:
            continue
    raise RuntimeError(f"no thread {name}")


def wait_log(log, needle, limit):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with open(log) as f:
                if needle in f.read():
                    return time.time()
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{needle!r} not logged within {limit}s")


def start(binary, config, log):
    if os.path.exists(log):
        os.rename(log, log + ".1")
    t0 = time.time()
    p = subprocess.Popen([binary, "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    listening = wait_log(log, "listening", 120) - t0
    return p, t0, listening


def populate(store, n):
    per_dir = 100
    made = 0
    for d in range((n + per_dir - 1) // per_dir):
        top = os.path.join(store, f"{d:08x}")
        os.mkdir(top)
        for i in range(min(per_dir, n - made)):
            fd = os.open(os.path.join(top, f"file-{i}.jpg"), os.O_CREAT | os.O_WRONLY, 0o640)
            os.close(fd)
            made += 1
    return made


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/hmac-file-server"))
    ap.add_argument("--port", type=int, default=18321)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="hfs-scale-")
    mnt = os.path.join(work, "fs")
    os.mkdir(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3g,nr_inodes=4m", "tmpfs", mnt], check=True)
    try:
        store = os.path.join(mnt, "store")
        os.mkdir(store)
        t = time.time()
        made = populate(store, args.files)
        print(f"created {made} files in {time.time() - t:.1f}s", file=sys.stderr)
        log = os.path.join(work, "server.log")
        config = os.path.join(work, "config.toml")
        with open(config, "w") as f:
            f.write(
                f'ListenPort = "127.0.0.1:{args.port}"\nSecret = "{SECRET}"\nStoreDir = "{store}"\n'
                f'LogFile = "{log}"\nFileTTL = "30d"\nWorkers = 2\n'
            )
        result = {"files": made}

        p, t0, listening = start(args.binary, config, log)
        indexed = wait_log(log, "file index rebuilt", 1800) - t0
        result["first_start_listening_s"] = round(listening, 3)
        result["first_start_indexed_s"] = round(indexed, 1)
        result["rss_indexed_mib"] = round(proc_kib(p.pid, "VmRSS") / 1024, 1)

        # Ten files expiring in two seconds among all the others.
        cpu_before = thread_cpu_seconds(p.pid, "retention")
        names = []
        for i in range(10):
            path = f"sweep/{i}/due.txt"
            out = subprocess.run(
                [args.binary, "--config", config, "sign", "--proto", "bearer", "--path", path,
                 "--size", "3", "--expires-in", "2s"],
                check=True, capture_output=True, text=True).stdout.splitlines()
            req = urllib.request.Request(out[0], data=b"due", method="PUT",
                                         headers={"Authorization": out[1].split(": ", 1)[1]})
            urllib.request.urlopen(req).read()
            names.append(os.path.join(store, path))
        deadline = time.time() + 30
        while any(os.path.exists(n) for n in names):
            if time.time() > deadline:
                raise RuntimeError("the due files were not deleted")
            time.sleep(0.05)
        result["sweep_cpu_ms"] = round((thread_cpu_seconds(p.pid, "retention") - cpu_before) * 1000, 1)
        result["rss_peak_mib"] = round(proc_kib(p.pid, "VmHWM") / 1024, 1)

        p.send_signal(signal.SIGTERM)
        p.wait(60)
        p, t0, listening = start(args.binary, config, log)
        time.sleep(1)
        result["restart_listening_s"] = round(listening, 3)
        result["restart_rss_mib"] = round(proc_kib(p.pid, "VmRSS") / 1024, 1)
        with open(log) as f:
            result["restart_rebuilt"] = "rebuild" in f.read()
        p.send_signal(signal.SIGTERM)
        p.wait(60)
    finally:
        subprocess.run(["umount", "-l", mnt])
    print(json.dumps(result, indent=2))
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results/retention_scale.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
