"""Scenario S10, the inbound APIs: one tenant, one OpenAI-kind upstream (the mock), the
same prompt sent as OpenAI Chat Completions, Anthropic Messages, OpenAI Responses (with
`store: false`, so nothing but the chat path's own ledger write touches the disk) and an
embeddings call, each at concurrency 1 (latency) and 16 (throughput), side by side in one
run with the mock reached directly. What the Messages and Responses translations cost is
their difference to Chat Completions. Run through tests/bench/run.sh (`ONLY=S10`).
"""

import json

import harness as h

PROMPT = "Hello, benchmark"
FORMATS = [
    ("chat", "/v1/chat/completions", h.BODY),
    ("messages", "/v1/messages", json.dumps({"model": "mock", "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}]}, separators=(",", ":"))),
    ("responses", "/v1/responses", json.dumps({"model": "mock", "max_output_tokens": 64, "store": False, "input": PROMPT}, separators=(",", ":"))),
    ("embeddings", "/v1/embeddings", json.dumps({"model": "mock", "input": PROMPT}, separators=(",", ":"))),
]
LEVELS = (1, 16)


def s10(ctx):
    secs = ctx["p"]["s1_s"]
    tg, direct = ctx["targets"]["tollgate"], ctx["targets"]["direct"]
    out = {}
    for name, path, body in FORMATS:
        row = {}
        for conc in LEVELS:
            h.log(f"S10 {name}: concurrency {conc} for {secs}s")
            row[f"tollgate_c{conc}"] = ctx["oha"].run(tg["port"], path, tg["auth"], conc, secs, body=body)
            # The mock answers each API's path itself: the upstream's own share.
            row[f"direct_c{conc}"] = ctx["oha"].run(direct["port"], "/v1/embeddings" if name == "embeddings" else "/v1/chat/completions", direct["auth"], conc, secs,
                                                    body=body if name == "embeddings" else h.BODY)
        out[name] = row
    return out


def report(add, r):
    add("## S10 inbound APIs")
    add("")
    add("One tenant on its default policy, an OpenAI-kind upstream (the mock), the same prompt in each API's shape "
        "(Responses with `store: false`). Added = Tollgate minus the mock reached directly in the same run. "
        "Messages and Responses are translated into the chat path and back, so their difference to chat is what "
        "the translation costs.")
    add("")
    add("| API | c=1 p50 (added) | c=1 p99 (added) | c=16 req/s | c=16 vs chat | success |")
    add("| --- | --- | --- | --- | --- | --- |")
    chat_rps = r.get("chat", {}).get("tollgate_c16", {}).get("rps")
    for name, _, _ in FORMATS:
        row = r.get(name)
        if not row:
            continue
        one, many = row["tollgate_c1"], row["tollgate_c16"]
        base = row["direct_c1"]
        added = lambda q: None if one[q] is None or base[q] is None else (one[q] - base[q]) * 1000.0  # noqa: E731
        ratio = f"{many['rps'] / chat_rps:.2f}×" if chat_rps else "—"
        add(f"| {name} | {h.fmt(one['p50_ms'])} ms ({h.fmt(added('p50_ms'))} µs) | {h.fmt(one['p99_ms'])} ms ({h.fmt(added('p99_ms'))} µs) "
            f"| {h.fmt(many['rps'])} | {ratio} | {min(one['success'], many['success']) * 100:.1f}% |")
    add("")
