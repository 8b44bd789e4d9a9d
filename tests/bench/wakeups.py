#!/usr/bin/env python3
"""Where one connection's time goes off the CPU: direct (the mock upstream), nginx
`proxy_pass` and Tollgate, each under `oha -c 1`, with the kernel's scheduler events
recorded (`perf sched record`, every CPU). For each target it prints, per request, how
often the proxy's threads were switched in (each a wake-up, a thread hand-off or an I/O
wait ending), the time they spent runnable but waiting for a CPU (`sch delay`), and
their run time; the same for the mock and oha, the parts every target shares.

    python3 tests/bench/wakeups.py [--seconds 4] [--out target/wakeups]

Uses target/release/{tollgate,mock-upstream} as run.sh does; TOLLGATE_BIN picks another
build. Needs perf (linux-perf) and nginx."""

import argparse
import collections
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

# `perf sched timehist` lines: time, [cpu], comm[tid/pid] or comm[tid], wait, sch delay, run (ms).
LINE = re.compile(r"^\s*\d+\.\d+\s+\[\d+\]\s+(?P<task>.+?)\s+(?P<wait>\d+\.\d+)\s+(?P<delay>\d+\.\d+)\s+(?P<run>\d+\.\d+)\s*$")
TASK = re.compile(r"\[(?P<tid>\d+)(?:/(?P<pid>\d+))?\]$")


def tids_of(pids):
    """Every thread id of the processes `pids`, now."""
    tids = set()
    for pid in pids:
        try:
            tids.update(int(t) for t in os.listdir(f"/proc/{pid}/task"))
        except FileNotFoundError:
            pass
    return tids


def by_thread_name(pids):
    """The thread ids of the processes `pids`, grouped by thread name (digits dropped, so
    `sled-io-0`..`sled-io-6` are one group)."""
    groups = collections.defaultdict(set)
    for pid in pids:
        for tid in tids_of([pid]):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    groups[re.sub(r"\d+$", "N", f.read().strip())].add(tid)
            except FileNotFoundError:
                pass
    return groups


def per_process(perf_data, groups):
    """Switch-ins, sch delay and run time (ms) summed over the threads of each group."""
    out = subprocess.run(["perf", "sched", "timehist", "-i", perf_data], capture_output=True, text=True, check=True).stdout
    totals = {name: collections.Counter() for name in groups}
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        t = TASK.search(m["task"])
        if not t:
            continue
        tid = int(t["tid"])
        for name, tids in groups.items():
            if tid in tids:
                totals[name]["switch_ins"] += 1
                totals[name]["delay_ms"] += float(m["delay"])
                totals[name]["run_ms"] += float(m["run"])
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(h.ROOT, "target", "wakeups"))
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    try:
        oha, tg, token = h.one_tenant_gateway(args.out)
        work = os.path.join(args.out, "work")
        mock = next(s for s in h.SERVICES if s.name == "mock-upstream")
        mock_port = int(mock.proc.args[mock.proc.args.index("--listen") + 1].rsplit(":", 1)[1])
        nginx, nginx_port = h.start_nginx(work, [mock_port])
        targets = [("direct", mock_port, "none", None), ("nginx", nginx_port, "none", nginx), ("tollgate", tg.port, token, tg.service)]
        print("per request at one connection: switch-ins, sch delay µs, run µs")
        for name, port, auth, service in targets:
            data = os.path.join(args.out, f"sched-{name}.data")
            oha.run(port, "/v1/chat/completions", auth, 1, 1)  # warm
            rec = subprocess.Popen(["perf", "sched", "record", "-a", "-o", data, "--", "sleep", str(args.seconds + 1)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            r = oha.run(port, "/v1/chat/completions", auth, 1, args.seconds)
            rec.wait()
            groups = {"mock": tids_of(mock.pids())}
            if service is not None:
                groups[name] = tids_of(service.pids())
            totals = per_process(data, groups)
            requests = r["rps"] * args.seconds
            describe = lambda c: (f"{c['switch_ins'] / requests:4.1f} switch-ins, {c['delay_ms'] * 1000 / requests:5.1f} delay, "  # noqa: E731
                                  f"{c['run_ms'] * 1000 / requests:6.1f} run")
            row = [f"{name:9} {r['rps']:7.1f} req/s p50 {r['p50_ms'] * 1000:6.0f} µs"]
            row += [f"{group}: {describe(c)}" for group, c in totals.items()]
            print(" | ".join(row))
            if name == "tollgate":
                for thread, c in sorted(per_process(data, by_thread_name(service.pids())).items(), key=lambda kv: -kv[1]["run_ms"]):
                    print(f"    {thread:20} {describe(c)}")
    finally:
        h.stop_all()


if __name__ == "__main__":
    main()
