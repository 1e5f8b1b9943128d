#!/usr/bin/env python3
"""What the group commit does under bench.py's durable 4 KiB PUT load, for one or more builds.

    python3 bench/commit_rounds.py BINARY[,BINARY...] [--reps 2] [--seconds 6]

Each repetition runs every build in turn with `LogLevel = "debug"` at 64 connections (wrk, a fresh
directory per upload, as bench.py's PUT load) on its own store in /var/tmp/commit-rounds-<n>, then
reads the commit thread's `group commit round` lines from the log: rounds per second, callers per
round (an upload is two callers: its data before its name, then its name), the mean `syncfs` and
whole-round times in µs, and how much of the load's time a round was under way. The debug log
costs a little throughput itself, alike for every build.
"""
import argparse
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

ROUND = re.compile(r"(callers|syncfs_us|total_us)[=:]\"?(\d+)")


def run(binary, store, seconds, tag):
    work = "/var/tmp/commit-rounds-work"
    os.makedirs(store, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    peer = bench.Ours("r", 18499, store, work, True, os.cpu_count(), binary=binary, log_level="debug")
    log = os.path.join(work, "r.log")
    if os.path.exists(log):
        os.remove(log)
    peer.start()
    time.sleep(0.5)
    pool = bench.write_pool(peer, os.path.join(work, "pool.txt"), f"r{tag}", 60000 * seconds, bench.SMALL)
    try:
        r = bench.wrk(peer, "put.lua", pool, 64, seconds, 1, [bench.SMALL])
    finally:
        peer.proc.terminate()
        peer.proc.wait()
    rounds = []
    with open(log) as f:
        for line in f:
            if "group commit round" in line:
                fields = {k: int(v) for k, v in ROUND.findall(line)}
                if len(fields) == 3:
                    rounds.append(fields)
    if not rounds:
        sys.exit(f"{binary}: no group commit round in {log}")
    return r, rounds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", help="comma-separated server binaries")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=6)
    a = ap.parse_args()
    bench.forget_deleted_inodes()
    tag = int(time.time())
    for rep in range(a.reps):
        for i, binary in enumerate(a.binaries.split(",")):
            r, rounds = run(binary, f"/var/tmp/commit-rounds-{i}", a.seconds, f"{tag}-{rep}")
            mean = lambda k: statistics.mean(x[k] for x in rounds)  # noqa: E731
            busy = sum(x["total_us"] for x in rounds) / (a.seconds * 1e6) * 100
            print(f"{binary}: {r['rps']:.0f} req/s, p50 {r['p50_us']} µs, p99 {r['p99_us']} µs; "
                  f"{len(rounds) / a.seconds:.0f} rounds/s, {mean('callers'):.1f} callers each, "
                  f"syncfs {mean('syncfs_us'):.0f} µs, round {mean('total_us'):.0f} µs, under way {busy:.0f} %", flush=True)


if __name__ == "__main__":
    main()
