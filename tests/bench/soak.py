#!/usr/bin/env python3
"""Soak (issue 6, "load held"): 10,000 tenants under mixed plain and streaming traffic
with policy hot-swaps, then SIGTERM with streams in flight.

    python3 tests/bench/soak.py                  # 10 minutes -> tests/bench/SOAK.md
    python3 tests/bench/soak.py --minutes 1      # a short look -> target/soak/SOAK-short.md

Needs what tests/bench/run.sh installs (wrk) and release builds of `tollgate` and
`mock-upstream` (run.sh builds them; or `cargo build --release -p tollgate --bin tollgate
-p tollgate-tests --bin mock-upstream`). Traffic goes to 127.0.0.1 only.

What it checks, and reports in the results file:
- zero errors: every plain and streamed request answered 2xx (the mock injects nothing);
- hot-swaps: a policy re-assigned mid-load serves the very next request of that tenant
  (its `x-tollgate-policy` header), including freshly uploaded policies compiled live;
- resident memory: sampled every 5 s; the slope after the first minute, in MiB/min;
- drain: streams in flight at SIGTERM all finish with `[DONE]`, and the process exits
  within its drain timeout;
- ledger: after a restart on the same data dir, no reservation was left to recover and
  the ledger holds every acknowledged request (at most the requests cut when the load
  tools stopped besides).
"""

import argparse
import http.client
import json
import os
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

POLICY_CONFIG = {"provider": "mock", "credential": "default", "model": "mock", "max_tokens": 64}


def chat(port, token, model="mock", stream=False, timeout=30):
    """One chat on a fresh connection: (status, policy header, body)."""
    body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "soak"}]}
    if stream:
        body["stream"] = True
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.getheader("x-tollgate-policy", ""), response.read()
    finally:
        conn.close()


class Swapper(threading.Thread):
    """Re-assigns a random tenant's policy every `every` seconds, and every 30 s uploads a
    policy never seen before (compiled while serving) and assigns it to ten tenants. After
    each assignment, that tenant's next request must be served by the new policy."""

    def __init__(self, tg, ids, tokens, hashes, fresh_variants, every):
        super().__init__(daemon=True)
        self.tg, self.ids, self.tokens, self.hashes = tg, ids, tokens, list(hashes)
        self.fresh, self.every = list(fresh_variants), every
        self.stop = threading.Event()
        self.swaps = self.uploads = self.served_by_new = self.acked_chats = 0
        self.failures = []

    def assign(self, i, policy_hash):
        self.tg.admin("PUT", f"/admin/v1/tenants/{self.ids[i]}/policy", {"hash": policy_hash, "config": POLICY_CONFIG})
        self.swaps += 1
        status, header, body = chat(self.tg.port, self.tokens[i])
        if status == 200:
            self.acked_chats += 1
        if status != 200 or not policy_hash.startswith(header) or not header:
            self.failures.append(f"{self.ids[i]}: after assigning {policy_hash[:12]}: HTTP {status}, policy {header!r}: {body[:200]!r}")
        else:
            self.served_by_new += 1

    def run(self):
        rng = random.Random(7)
        last_upload = time.time()
        while not self.stop.wait(self.every):
            try:
                if self.fresh and time.time() - last_upload >= 30:
                    last_upload = time.time()
                    new_hash = self.tg.admin("POST", "/admin/v1/policies", raw=self.fresh.pop(0))["hash"]
                    self.uploads += 1
                    self.hashes.append(new_hash)
                    for i in rng.sample(range(len(self.ids)), 10):
                        self.assign(i, new_hash)
                else:
                    self.assign(rng.randrange(len(self.ids)), rng.choice(self.hashes))
            except Exception as e:  # noqa: BLE001 - recorded, reported as a failure
                self.failures.append(repr(e))


def slope_mib_per_min(samples):
    """Least-squares slope of (seconds, KiB) samples, in MiB per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    return (cov / var) * 60 / 1024 if var else 0.0


def drain_on_sigterm(tg, tokens, streams, drain_timeout_s):
    """Starts `streams` long streams, sends SIGTERM once they are under way, and checks
    each finishes with [DONE] and the process exits within the drain timeout."""
    results = [None] * streams

    def one(i):
        try:
            status, _, body = chat(tg.port, tokens[i], model=h.DRAIN_STREAM_MODEL, stream=True, timeout=drain_timeout_s + 10)
            results[i] = status == 200 and body.rstrip().endswith(b"data: [DONE]")
        except Exception:  # noqa: BLE001 - a cut stream is the failure being looked for
            results[i] = False
    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    sent = time.time()
    os.killpg(tg.service.proc.pid, signal.SIGTERM)
    try:
        tg.service.proc.wait(timeout=drain_timeout_s + 5)
        exited_after = time.time() - sent
    except Exception:  # noqa: BLE001 - reported as not exiting
        exited_after = None
    for t in threads:
        t.join(timeout=drain_timeout_s + 15)
    tg.service.stop()
    return {"streams": streams, "completed": sum(1 for r in results if r), "exit_s": exited_after}


def ledger_total(tg, ids):
    def one(tenant):
        usage = tg.admin("GET", f"/admin/v1/tenants/{tenant}/usage?start=2000-01-01&end=2100-12-31")
        return usage["requests"]
    with ThreadPoolExecutor(16) as pool:
        return sum(pool.map(one, ids))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=100)
    parser.add_argument("--plain-connections", type=int, default=8)
    parser.add_argument("--stream-connections", type=int, default=4)
    parser.add_argument("--swap-every", type=float, default=1.0, help="seconds between policy re-assignments")
    parser.add_argument("--drain-streams", type=int, default=16)
    args = parser.parse_args()
    started = time.time()
    full = args.minutes >= 10
    work = os.path.join(h.ROOT, "target", "soak")
    os.makedirs(work, exist_ok=True)
    out_md = os.path.join(h.ROOT, "tests", "bench", "SOAK.md") if full else os.path.join(work, "SOAK-short.md")
    secs = int(args.minutes * 60)
    try:
        mock, mock_port = h.start_mock(work)
        tg = h.Tollgate("tollgate-soak", work, os.path.join(work, "data"), mock_port)
        fresh_count = secs // 30 + 1
        variants, _, _ = h.policy_variants(args.policies + fresh_count)
        h.log(f"soak: setting up {args.tenants:,} tenants over {args.policies} policies")
        tokens, setup = h.setup_tenants(tg, args.tenants, variants[:args.policies])
        ids = [f"t{i:05d}" for i in range(args.tenants)]
        hashes = [tg.upload(v) for v in variants[:args.policies]]
        tokens_file = os.path.join(work, "tokens.txt")
        with open(tokens_file, "w") as f:
            f.write("\n".join(tokens) + "\n")
        rss_setup = tg.service.rss_kib()

        h.log(f"soak: {secs} s of plain ({args.plain_connections} connections) and streamed "
              f"({args.stream_connections}) Zipf traffic, a policy swap every {args.swap_every} s")
        loads = {}

        def load(name, **kw):
            loads[name] = h.wrk_zipf(tg.port, tokens_file, secs=secs, **kw)
        threads = [threading.Thread(target=load, args=("plain",), kwargs={"conc": args.plain_connections}),
                   threading.Thread(target=load, args=("stream",), kwargs={"conc": args.stream_connections, "model": h.STREAM_MODEL, "stream": True})]
        swapper = Swapper(tg, ids, tokens, hashes, variants[args.policies:], args.swap_every)
        rss = []
        for t in threads:
            t.start()
        swapper.start()
        load_started = time.time()
        while any(t.is_alive() for t in threads):
            rss.append((time.time() - load_started, tg.service.rss_kib()))
            time.sleep(5)
        swapper.stop.set()
        swapper.join(timeout=30)
        for t in threads:
            t.join()
        after_warmup = [s for s in rss if s[0] >= 60] or rss

        h.log("soak: SIGTERM with streams in flight")
        drain = drain_on_sigterm(tg, tokens, args.drain_streams, 15)
        tg.restarts += 1
        tg._start()
        with open(tg.service.log_path, "rb") as f:
            recovered_lines = sum(1 for line in f if b"reservations left unsettled" in line)
        ledger = ledger_total(tg, ids)
        tg.stop()
        mock.stop()

        ok = {name: r["requests"] - r["errors"]["status"] for name, r in loads.items()}
        errors = {name: r["errors"] for name, r in loads.items()}
        acked = ok["plain"] + ok["stream"] + swapper.acked_chats + drain["completed"]
        cut_allowance = args.plain_connections + args.stream_connections
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python3 tests/bench/soak.py" + ("" if full else f" --minutes {args.minutes:g}"),
            "tollgate": h.first_line(["git", "-C", h.ROOT, "describe", "--always", "--dirty", "--abbrev=12"]),
            "machine": h.machine_info(),
            "tenants": args.tenants, "policies": args.policies, "setup": setup,
            "load_s": secs, "loads": loads, "errors": errors,
            "swaps": swapper.swaps, "fresh_uploads": swapper.uploads, "served_by_new_policy": swapper.served_by_new,
            "swap_failures": swapper.failures[:20],
            "rss_setup_kib": rss_setup, "rss_samples": rss,
            "rss_first_kib": after_warmup[0][1] if after_warmup else None, "rss_last_kib": rss[-1][1] if rss else None,
            "rss_peak_kib": max(r for _, r in rss) if rss else None,
            "rss_slope_mib_per_min": slope_mib_per_min(after_warmup),
            "drain": drain, "recovered_reservations_log_lines": recovered_lines,
            "acknowledged": acked, "ledger_requests": ledger, "cut_allowance": cut_allowance,
            "elapsed_s": time.time() - started,
        }
        checks = {
            "zero errors": all(sum(e.values()) == 0 for e in errors.values()) and not swapper.failures,
            "hot-swaps served by the new policy at once": swapper.swaps > 0 and swapper.served_by_new == swapper.swaps,
            "drain: every stream finished, exit within 15 s": drain["completed"] == drain["streams"] and drain["exit_s"] is not None and drain["exit_s"] <= 15,
            "no reservation left to recover": recovered_lines == 0,
            "ledger holds every acknowledged request": acked <= ledger <= acked + cut_allowance,
        }
        result["checks"] = checks
        with open(os.path.join(work, "soak.json"), "w") as f:
            json.dump(result, f, indent=1)
        write_report(out_md, result)
        h.log(f"soak: wrote {out_md}; checks: {checks}")
        sys.exit(0 if all(checks.values()) else 1)
    finally:
        h.stop_all()


def write_report(path, r):
    mib = lambda kib: f"{kib / 1024:.0f} MiB" if kib is not None else "—"  # noqa: E731
    lines = [
        "# Tollgate soak results", "",
        f"Measured {r['date']} by `{r['command']}` ({r['elapsed_s'] / 60:.1f} min in all), commit {r['tollgate']}, "
        f"on {r['machine'].get('cpu', 'this machine')}. The mock upstream, the load tools and Tollgate share the machine.", "",
        f"{r['tenants']:,} tenants (each a token, a sealed key, a monthly budget and one of {r['policies']} distinct policies), "
        f"set up in {r['setup']['tenants_s']:.1f} s; then {r['load_s']} s of Zipf-spread traffic: plain requests on "
        f"{r['loads']['plain']['conc']} connections and streamed ones ({h.STREAM_MODEL}) on {r['loads']['stream']['conc']}, "
        f"while a tenant's policy was re-assigned every second and a never-seen policy was uploaded (compiled live) and "
        f"assigned to ten tenants every 30 s. Then SIGTERM with {r['drain']['streams']} three-second streams in flight, a "
        "restart on the same data dir, and the ledger read back for every tenant.", "",
        "| check | result |", "| --- | --- |",
    ]
    for name, passed in r["checks"].items():
        lines.append(f"| {name} | {'passed' if passed else '**failed**'} |")
    p, s = r["loads"]["plain"], r["loads"]["stream"]
    lines += [
        "", "| figure | value |", "| --- | --- |",
        f"| plain requests | {p['requests']:,} ({p['rps']:.0f}/s, p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms), errors {p['errors']} |",
        f"| streamed requests | {s['requests']:,} ({s['rps']:.0f}/s, p99 whole stream {s['p99_ms']:.1f} ms), errors {s['errors']} |",
        f"| policy re-assignments | {r['swaps']:,}, of which served by the new policy on the next request: {r['served_by_new_policy']:,} |",
        f"| policies uploaded and compiled while serving | {r['fresh_uploads']} |",
        f"| resident memory | {mib(r['rss_setup_kib'])} after setup; {mib(r['rss_first_kib'])} at 1 min, {mib(r['rss_last_kib'])} at the end, peak {mib(r['rss_peak_kib'])} |",
        f"| resident memory slope after the first minute | {r['rss_slope_mib_per_min']:+.2f} MiB/min; after two minutes "
        f"{slope_mib_per_min([x for x in r['rss_samples'] if x[0] >= 120]):+.2f} MiB/min, while {r['fresh_uploads']} new policies were "
        f"compiled and kept (about 1.3 MiB each, S6 of tests/bench/RESULTS.md) |",
        f"| drain at SIGTERM | {r['drain']['completed']}/{r['drain']['streams']} streams finished with [DONE]; exited after "
        f"{r['drain']['exit_s']:.2f} s (timeout 15 s) |" if r["drain"]["exit_s"] is not None else
        f"| drain at SIGTERM | {r['drain']['completed']}/{r['drain']['streams']} streams finished; **did not exit** |",
        f"| ledger after restart | {r['ledger_requests']:,} requests; acknowledged {r['acknowledged']:,} "
        f"(the load tools may cut up to {r['cut_allowance']} in flight when they stop, which are billed too) |",
        f"| reservations recovered at restart | {r['recovered_reservations_log_lines']} log lines (0 = none left) |",
    ]
    if r["swap_failures"]:
        lines += ["", "Swap failures (first 20):", ""] + [f"- {f}" for f in r["swap_failures"]]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
