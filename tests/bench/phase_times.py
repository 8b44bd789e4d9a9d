#!/usr/bin/env python3
"""Where a chat request's time goes, phase by phase: reads the `PHASE` lines that a build
with tests/bench/phase-timing.patch applied prints to its log (one set per request, in µs
since the request arrived) and prints the median and p90 of each phase over the last N
requests (by default the 2,000 before the log ends: profile.py's concurrency-1 load).

    git apply tests/bench/phase-timing.patch && cargo build --release -p tollgate
    cp target/release/tollgate /tmp/tollgate-phase && git apply -R tests/bench/phase-timing.patch
    TOLLGATE_BIN=/tmp/tollgate-phase python3 tests/bench/profile.py --no-perf --out target/prof-phase
    python3 tests/bench/phase_times.py target/prof-phase/work/tg.log
"""

import argparse
import statistics


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("log")
    parser.add_argument("--last", type=int, default=2000)
    args = parser.parse_args()
    rows = {"chat": [], "settle": [], "policy": []}
    with open(args.log, errors="replace") as f:
        for line in f:
            if line.startswith("PHASE "):
                kind, *values = line.split()[1:]
                rows[kind].append([int(v) for v in values])
    chat, settle, policy = (rows[k][-args.last:] for k in ("chat", "settle", "policy"))
    if not (len(chat) == len(settle) == len(policy)) or not chat:
        raise SystemExit("the log holds no whole sets of PHASE lines (non-streamed chats only)")
    phases = {
        "arrival to route: auth, body, parse, admit": [c[0] for c in chat],
        "route: the policy call and its decision": [c[1] - c[0] for c in chat],
        "  of which the store's creation (begin)": [p[0] for p in policy],
        "  of which instantiate + route": [p[1] - p[0] for p in policy],
        "reserve: the hold and the settlement's opening": [c[2] - c[1] for c in chat],
        "dispatch: upstream request to its headers": [c[3] - c[2] for c in chat],
        "read the upstream body and translate": [s[0] - c[3] for c, s in zip(chat, settle)],
        "settle: ledger batch, durable": [s[1] - s[0] for s in settle],
        "arrival to response built": [c[4] for c in chat],
    }
    print(f"{len(chat)} requests; µs, median / p90")
    for name, values in phases.items():
        ordered = sorted(values)
        print(f"  {name:48} {statistics.median(ordered):7.0f} {ordered[int(0.9 * len(ordered))]:7.0f}")


if __name__ == "__main__":
    main()
