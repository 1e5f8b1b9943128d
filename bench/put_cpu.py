#!/usr/bin/env python3
"""Where a durable 4 KiB PUT's CPU goes, by server thread, for one or more builds alternated.

    python3 bench/put_cpu.py BINARY[,BINARY...][,nginx] [--reps 3] [--seconds 6] [--get]

With --get the load is bench.py's GET instead: 4 KiB files from a pool of 2,000 (uploaded once
per store, the first time), round-robin at 64 connections.

`nginx` stands for bench.py's nginx peer (WebDAV PUT, no fsync): its processes' threads are
summed by name the same way. Each repetition starts every build in turn on a fresh pool of
targets (a new directory per upload, as bench.py's PUT load), drives it with wrk at 64 connections and reads the CPU time
of each of its threads from /proc/<pid>/task/*/stat before and after. Printed per run: req/s,
p50, the server's CPU µs per upload in all and by thread name (workers, group-commit,
retention, iou-wrk: io_uring's helpers), the whole machine's busy CPU per upload (the client
and the kernel's flusher threads included), how idle the machine was, and the KiB written to
the store's disk per request (/sys/dev/block/*/stat). CPU per upload moves
far less with this machine's mood than req/s does: a change that removes work shows there
even when throughput is inside the noise. Stores are left in /var/tmp/put-cpu-*; removing them
slows the next run's inode allocations unless the caches are dropped first, which this script
does when it starts (bench.forget_deleted_inodes).
"""
import argparse
import collections
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def thread_ticks(pids):
    """utime + stime per thread name (digits and dashes at the end dropped: worker-0 -> worker)
    over every thread of `pids`."""
    out = collections.Counter()
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                stat = open(f"/proc/{pid}/task/{tid}/stat").read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")].rstrip("0123456789-")
            fields = stat[stat.rindex(")") + 2:].split()
            out[name] += int(fields[11]) + int(fields[12])
    return out


def machine():
    return [int(x) for x in open("/proc/stat").readline().split()[1:]]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", help="comma-separated server binaries")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--get", action="store_true", help="GETs of 2,000 small files instead of PUTs")
    a = ap.parse_args()
    bins = a.binaries.split(",")
    what = "GET" if a.get else "upload"
    tag = int(time.time())
    runs = collections.defaultdict(list)
    bench.forget_deleted_inodes()
    for rep in range(a.reps):
        for i, binary in enumerate(bins):
            store, work = f"/var/tmp/put-cpu-{i}", "/var/tmp/put-cpu-work"
            os.makedirs(store, exist_ok=True)
            os.makedirs(work, exist_ok=True)
            if binary == "nginx":
                os.makedirs(os.path.join(work, "nginx"), exist_ok=True)
                peer = bench.Nginx("nginx", 18480 + i, store, os.path.join(work, "nginx"), os.cpu_count())
            else:
                peer = bench.Ours(f"b{i}", 18480 + i, store, work, True, os.cpu_count(), binary=binary)
            peer.start()
            time.sleep(0.5)
            pool = os.path.join(work, "pool.txt")
            if a.get:
                targets = [peer.target(f"get/{k:05x}/g.bin", bench.SMALL) for k in range(2000)]
                marker = os.path.join(store, ".get-pool")  # kept stores already hold them
                if not os.path.exists(marker):
                    bench.upload_all(peer, targets, b"g" * bench.SMALL)
                    open(marker, "w").close()
                with open(pool, "w") as f:
                    f.writelines(t.split("?")[0] + "\n" for t in targets)
            else:
                bench.write_pool(peer, pool, f"c{tag}-{rep}-{i}", 60000 * a.seconds, bench.SMALL)
            os.sync()
            try:
                t0, m0, d0 = thread_ticks(peer.pids()), machine(), bench.disk_stat(store)
                if a.get:
                    r = bench.wrk(peer, "get.lua", pool, 64, a.seconds, 1)
                else:
                    r = bench.wrk(peer, "put.lua", pool, 64, a.seconds, 1, [bench.SMALL])
                t1, m1, d1 = thread_ticks(peer.pids()), machine(), bench.disk_stat(store)
            finally:
                peer.proc.terminate()
                peer.proc.wait()
            if r["errors"]:
                sys.exit(f"{binary}: {r['errors']} failed requests: the figures would not be comparable")
            n = r["requests"]
            per = {k: (t1[k] - t0[k]) / HZ * 1e6 / n for k in t1}
            dm = [y - x for x, y in zip(m0, m1)]
            idle = dm[3] / sum(dm) * 100
            busy = (sum(dm) - dm[3] - dm[4]) / HZ * 1e6 / n  # iowait is idle too
            total = sum(per.values())
            # Sectors written (field 7) per request: what reached the disk, the index included.
            disk = f", disk {(d1[6] - d0[6]) / 2 / n:.1f} KiB/{what}" if d0 and d1 else ""
            runs[binary].append((r["rps"], total, busy))
            threads = " ".join(f"{k}={v:.1f}" for k, v in sorted(per.items(), key=lambda x: -x[1]) if v >= 1)
            print(f"{binary}: {r['rps']:.0f} req/s, p50 {r['p50_us']} µs, p99 {r['p99_us']} µs, server CPU {total:.1f} µs/{what} "
                  f"({threads}), machine busy {busy:.1f} µs/{what}, idle {idle:.0f} %{disk}", flush=True)
    for binary, v in runs.items():
        print(f"{binary}: median {statistics.median(x[0] for x in v):.0f} req/s, "
              f"{statistics.median(x[1] for x in v):.1f} µs of server CPU and "
              f"{statistics.median(x[2] for x in v):.1f} µs of the machine's per {what}")


if __name__ == "__main__":
    main()
