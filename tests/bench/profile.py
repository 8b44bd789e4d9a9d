#!/usr/bin/env python3
"""Profiles the release tollgate under load: starts the mock upstream and Tollgate with one
tenant through harness.py (the bench's own setup: token, stock policy, sealed key),
perf-records the tollgate process for a few seconds at 16 connections, then measures one
connection. Prints `c16 rps p50_ms p99_ms` and `c1 rps p50_ms p99_ms`, each followed by the ledger
threads' figures from `/metrics` over that load (batches, settlements per batch, mean
commit time of a batch; syncs and the mean time of one).

    python3 tests/bench/profile.py --out target/prof        # perf.data there
    perf script -i target/prof/perf.data | inferno-collapse-perf | inferno-flamegraph > flame.svg

Uses target/release/{tollgate,mock-upstream} (build them first, as run.sh does);
TOLLGATE_BIN=/path/to/tollgate profiles another build (before/after runs)."""

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(h.ROOT, "target", "prof"))
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--no-perf", action="store_true", help="measure only")
    args = parser.parse_args()
    try:
        oha, tg, token = h.one_tenant_gateway(args.out)
        perf = None
        if not args.no_perf:
            perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "--call-graph", "dwarf,16384", "-p", str(tg.service.proc.pid),
                                     "-o", os.path.join(args.out, "perf.data"), "--", "sleep", str(args.seconds)])
        before = ledger_figures(tg.port)
        r = oha.run(tg.port, "/v1/chat/completions", token, args.connections, args.seconds)
        if perf:
            perf.wait()
        after = ledger_figures(tg.port)
        print(f"c{args.connections}", r["rps"], r["p50_ms"], r["p99_ms"])
        print(f"  ledger {describe_ledger(before, after)}")
        r = oha.run(tg.port, "/v1/chat/completions", token, 1, 4)
        print("c1", r["rps"], r["p50_ms"], r["p99_ms"])
        print(f"  ledger {describe_ledger(after, ledger_figures(tg.port))}")
    finally:
        h.stop_all()


LEDGER = ["tollgate_ledger_batches_total", "tollgate_ledger_settlements_total", "tollgate_ledger_commit_seconds_sum",
          "tollgate_ledger_sync_seconds_sum", "tollgate_ledger_sync_seconds_count"]


def ledger_figures(port):
    """The ledger thread's counters from /metrics, by name."""
    _, body = h.http_call(port, "GET", "/metrics", timeout=5)
    values = {}
    for line in body.decode().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].removesuffix("{}") in LEDGER:
            values[parts[0].removesuffix("{}")] = float(parts[1])
    return values


def describe_ledger(before, after):
    batches, settlements, commit, sync, syncs = (after.get(k, 0) - before.get(k, 0) for k in LEDGER)
    if not batches or not syncs:
        return "no batches"
    # One sync can cover several batches: its mean is per sync, not per batch.
    return (f"{batches:.0f} batches, {settlements / batches:.2f} settlements each, commit {commit / batches * 1e6:.0f} us a batch; "
            f"{syncs:.0f} syncs, {sync / syncs * 1e6:.0f} us each (means)")


if __name__ == "__main__":
    main()
