#!/usr/bin/env python3
"""CPU per stream at one connection: the mock (direct), nginx, `floor-proxy` +sync and
Tollgate, each streaming `mock-chunks=20-pace=5` back to back for a few seconds through
`stream_client.py`. Prints, per target, the streams done, the TTFT p50 and the user +
system CPU of its processes per stream (from /proc; stolen time is not in it), and for
the floor and Tollgate the same split by thread name. Loopback only; stops by itself.

    python3 tests/bench/stream_cpu.py [--seconds 4] [--out target/stream-cpu] [--only tollgate]

With `TOLLGATE_BIN=/path/to/other/build` and `--only tollgate`, it compares two builds
(tests/bench/HOTPATH.md, ninth pass).

Needs the release binaries `run.sh` builds (tollgate, mock-upstream, floor-proxy).
"""

import argparse
import collections
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def thread_ticks(pid):
    """utime + stime clock ticks by thread name, for one process."""
    ticks = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        ticks[name] += h.cpu_ticks(f"/proc/{pid}/task/{tid}/stat")
    return ticks


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(h.ROOT, "target", "stream-cpu"))
    parser.add_argument("--only", help="comma-separated targets to run (direct, nginx, floor-proxy+sync, tollgate)")
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)  # nginx reads its config relative to its own prefix
    try:
        _, tg, token = h.one_tenant_gateway(args.out)
        work = os.path.join(args.out, "work")
        mock = next(s for s in h.SERVICES if s.name == "mock-upstream")
        mock_port = int(open(os.path.join(work, "tg.toml")).read().split("base_url = \"http://127.0.0.1:")[1].split("/")[0])
        nginx, nginx_port = h.start_nginx(work, [mock_port])
        floor, floor_port = h.start_floor(work, mock_port, "hyper-proxy+sync")
        targets = [("direct", mock, mock_port, "bench"), ("nginx", nginx, nginx_port, "bench"),
                   ("floor-proxy+sync", floor, floor_port, "bench"), ("tollgate", tg.service, tg.port, token)]
        tick = os.sysconf("SC_CLK_TCK")
        if args.only:
            targets = [t for t in targets if t[0] in args.only.split(",")]
        for name, service, port, auth in targets:
            cpu, threads = service.cpu_s(), thread_ticks(service.proc.pid)
            cmd = [sys.executable, os.path.join(h.HERE, "stream_client.py"), "--port", str(port), "--path", "/v1/chat/completions",
                   "--auth", auth, "--model", h.STREAM_MODEL, "--concurrency", "1", "--duration", str(args.seconds),
                   "--pace-ms", str(h.STREAM_PACE_MS), "--timeout", "30"]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            streams = max(r["streams"], 1)
            cpu = service.cpu_s() - cpu
            print(f"{name}: {r['streams']} streams, TTFT p50 {r['ttft_ms']['p50']:.2f} ms, CPU {cpu * 1e6 / streams:,.0f} µs per stream")
            if name in ("floor-proxy+sync", "tollgate"):
                print(f"  by thread (in {1e6 / tick / streams:,.0f} µs steps: one clock tick over the streams)")
                after = thread_ticks(service.proc.pid)
                for thread in sorted(after, key=lambda t: threads[t] - after[t]):
                    if after[thread] > threads[thread]:
                        print(f"  {thread}: {(after[thread] - threads[thread]) / tick * 1e6 / streams:,.0f} µs per stream")
    finally:
        h.stop_all()


if __name__ == "__main__":
    main()
