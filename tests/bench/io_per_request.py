#!/usr/bin/env python3
"""What one request costs the disk: starts the mock upstream and Tollgate with one tenant
through harness.py (the bench's own setup, as profile.py does), loads it with oha at each
concurrency and prints, per request, the bytes the tollgate process handed to write
calls (`wchar` of /proc/PID/io), its write calls (`syscw`), and the bytes written to the
machine's disks over the load (/proc/diskstats: page writeback and the file system's
journal included, and whatever else wrote meanwhile). The journal's
`fdatasync` waits for a device flush that covers every write before it, so these figures
bound what one sync can cost.

    python3 tests/bench/io_per_request.py
    python3 tests/bench/io_per_request.py --config '[policy]' --config 'decision_inputs_kept = 0'
    python3 tests/bench/io_per_request.py --strace      # also: write calls and bytes per file at c1

Uses target/release/{tollgate,mock-upstream}; TOLLGATE_BIN=/path/to/tollgate measures
another build. Linux only (/proc/PID/io; strace for --strace)."""

import argparse
import collections
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class ConfiguredTollgate(h.Tollgate):
    """The bench's Tollgate with extra TOML lines appended to its config before it starts."""

    extra = []

    def _start(self):
        if self.extra and not self.restarts:
            with open(self.config, "a") as f:
                f.write("\n" + "\n".join(self.extra) + "\n")
        super()._start()


def io_counters(pid):
    counters = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            key, value = line.split(":")
            counters[key] = int(value)
    return counters


def device_sectors_written():
    """Sectors written to every whole disk (/proc/diskstats), partitions left out."""
    total = 0
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            name = fields[2]
            if os.path.exists(f"/sys/block/{name}") and not name.startswith(("loop", "ram", "zram")):
                total += int(fields[9])
    return total


def strace_writes(pid, run):
    """Runs `run()` under strace attached to `pid`; returns {(call, file): (calls, bytes)}."""
    out = os.path.join(h.ROOT, "target", "io-strace.txt")
    tracer = subprocess.Popen(["strace", "-f", "-y", "-e", "trace=write,pwrite64,pwritev,fdatasync,fsync,sync_file_range", "-o", out, "-p", str(pid)])
    time.sleep(1)
    try:
        requests = run()
    finally:
        tracer.terminate()
        tracer.wait()
    calls, written = collections.Counter(), collections.Counter()
    with open(out) as f:
        for line in f:
            m = re.search(r"(\w+)\(\d+<([^>]*)>.*= (\d+)$", line.strip())
            if not m:
                continue
            call, path, ret = m.groups()
            key = (call, os.path.basename(path) if path.startswith("/") else path)
            calls[key] += 1
            if "write" in call:
                written[key] += int(ret)
    return requests, {k: (calls[k], written[k]) for k in calls}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(h.ROOT, "target", "io-per-request"))
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, action="append", help="repeatable; default 1 and 16")
    parser.add_argument("--config", action="append", default=[], help="a TOML line appended to Tollgate's config (repeatable)")
    parser.add_argument("--strace", action="store_true", help="also break the write calls down by file at c1 (strace slows the process)")
    args = parser.parse_args()
    ConfiguredTollgate.extra = args.config
    try:
        oha, tg, token = h.one_tenant_gateway(args.out, ConfiguredTollgate)
        pid = tg.service.proc.pid
        for c in args.concurrency or [1, 16]:
            before, sectors = io_counters(pid), device_sectors_written()
            r = oha.run(tg.port, "/v1/chat/completions", token, c, args.seconds)
            after, sectors = io_counters(pid), device_sectors_written() - sectors
            n = r["rps"] * args.seconds
            per = {k: (after[k] - before[k]) / n for k in ("wchar", "syscw")}
            print(f"c{c} {r['rps']:.0f} req/s, per request: {per['wchar']:,.0f} bytes in {per['syscw']:.2f} write calls; "
                  f"{sectors * 512 / n:,.0f} bytes written to the machine's disks")
        if args.strace:
            requests, by_file = strace_writes(pid, lambda: oha.run(tg.port, "/v1/chat/completions", token, 1, 3)["rps"] * 3)
            print(f"c1 under strace, per request ({requests:.0f} requests):")
            for (call, path), (calls, written) in sorted(by_file.items(), key=lambda kv: -kv[1][1]):
                print(f"  {call:16} {path:32} {calls / requests:6.2f} calls {written / requests:10,.0f} bytes")
    finally:
        h.stop_all()


if __name__ == "__main__":
    main()
