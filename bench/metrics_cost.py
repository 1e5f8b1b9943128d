#!/usr/bin/env python3
"""What counting metrics costs: the 4 KiB PUT load (64 connections) against this server with
MetricsEnabled = false (nothing counted) and = true (every request counted, /metrics scraped
every second meanwhile), interleaved A B A B over several rounds, on one fresh filesystem.
Both run with SyncWrites = false unless --sync: without the fsync wait the request path is
CPU-bound, so whatever counting costs shows instead of drowning in disk latency.

Usage: bench/metrics_cost.sh [--rounds 5] [--seconds 10]   (wraps this script)
Target (issue 6): metrics on costs under 3 % of small-upload throughput.
Writes bench/results/metrics_cost.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def scraper(port, stop):
    n = 0
    while not stop.is_set():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            n += 1
        except OSError:
            pass
        stop.wait(1.0)
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-rps", type=int, default=40000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--sync", action="store_true", help="durable uploads (SyncWrites = true)")
    args = ap.parse_args()

    # Both stores on one fresh loop-mounted ext4, as bench/run.sh --fs loop: small-file creation
    # on a well-used root filesystem swings too much between runs.
    work = tempfile.mkdtemp(prefix="hfs-metrics-", dir="/var/tmp")
    mnt = os.path.join(work, "mnt")
    img = os.path.join(work, "fs.img")
    os.makedirs(mnt)
    subprocess.run(["truncate", "-s", "16G", img], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-i", "4096", "-O", "^has_journal", img], check=True)
    subprocess.run(["mount", "-o", "loop", img, mnt], check=True)
    try:
        run(args, work, mnt)
    finally:
        subprocess.run(["umount", mnt])
        subprocess.run(["rm", "-rf", work])


def run(args, work, mnt):
    metrics_port = 19190
    peers = {
        "metrics-off": bench.Ours("metrics-off", 19180, os.path.join(mnt, "off"), work, args.sync, args.workers),
        "metrics-on": bench.Ours(
            "metrics-on", 19181, os.path.join(mnt, "on"), work, args.sync, args.workers,
            extra=f'MetricsEnabled = true\nMetricsPort = "127.0.0.1:{metrics_port}"\n',
        ),
    }
    bench_args = argparse.Namespace(max_rps=args.max_rps, threads=args.threads)
    suite = bench.Suite(bench_args, mnt, work)
    rps = {name: [] for name in peers}
    for p in peers.values():
        p.start()
    try:
        for r in range(args.rounds):
            order = list(peers) if r % 2 == 0 else list(reversed(peers))
            for name in order:
                stop = threading.Event()
                t = None
                if name == "metrics-on":
                    t = threading.Thread(target=scraper, args=(metrics_port, stop))
                    t.start()
                res = suite.put_load(peers[name], args.conns, args.seconds)
                stop.set()
                if t:
                    t.join()
                rps[name].append(res["rps"])
                bench.log(f"round {r + 1} {name}: {res['rps']:.0f} req/s")
    finally:
        for p in peers.values():
            p.stop()
    med = {k: statistics.median(v) for k, v in rps.items()}
    cost = 1 - med["metrics-on"] / med["metrics-off"]
    # Each round's own ratio, too: neighbours in time share the machine's state.
    paired = statistics.median(1 - on / off for on, off in zip(rps["metrics-on"], rps["metrics-off"]))
    result = {"rps": rps, "median": med, "cost": cost, "paired_cost": paired, "sync": args.sync,
              "rounds": args.rounds, "seconds": args.seconds}
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "metrics_cost.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"metrics off: median {med['metrics-off']:.0f} req/s  {[round(x) for x in rps['metrics-off']]}")
    print(f"metrics on:  median {med['metrics-on']:.0f} req/s  {[round(x) for x in rps['metrics-on']]}")
    print(f"cost of metrics: {cost * 100:.1f} % of the median, {paired * 100:.1f} % median of per-round ratios "
          f"(target: under 3 %; SyncWrites = {'true' if args.sync else 'false'})")


if __name__ == "__main__":
    main()
