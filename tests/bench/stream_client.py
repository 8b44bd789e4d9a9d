#!/usr/bin/env python3
"""Streaming probe for the Tollgate benchmark (scenario S4), standard library only.

Opens CONCURRENCY keep-alive HTTP/1.1 connections to one target and, on each, sends
streamed chat requests (`"stream": true`) one after another for DURATION seconds. Every
socket read is timestamped as it arrives (asyncio Protocol, no buffering layer between the
kernel and the timestamp), so the figures show what the wire delivered:

- ttft: from the last byte of the request written to the first read holding a data event
  with non-empty `content` (time to first token);
- max gap: per stream, the longest time between two reads that hold data events (a 40 ms
  gap is the signature of Nagle's algorithm meeting delayed ACKs);
- stalled streams: streams whose max gap exceeds the upstream's pace by more than
  --stall-ms.

Prints one JSON object. Traffic goes to the given loopback host only and stops by itself
after DURATION (plus at most --timeout for streams in flight).
"""

import argparse
import asyncio
import json
import re
import sys
import time

CONTENT = re.compile(rb'"content":\s*"[^"]')


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[index]


class StreamConnection(asyncio.Protocol):
    """One keep-alive connection; one streamed response at a time."""

    def __init__(self):
        self.transport = None
        self.closed = asyncio.get_running_loop().create_future()
        self.done = None

    def connection_made(self, transport):
        self.transport = transport

    def start(self, request):
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self.head = b""
        self.in_body = False
        self.status = None
        self.chunked = False
        self.length = None
        self.received = 0
        self.tail = b""
        self.first_token = None
        self.last_event = None
        self.max_gap = 0.0
        self.events = 0
        self.transport.write(request)
        self.sent = time.perf_counter()

    def data_received(self, data):
        now = time.perf_counter()
        if self.done is None or self.done.done():
            return
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end].decode("latin-1"), self.head[end + 4:]
            self.in_body = True
            lines = head.split("\r\n")
            try:
                self.status = int(lines[0].split(" ")[1])
            except (IndexError, ValueError):
                self.status = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "transfer-encoding" and "chunked" in value:
                    self.chunked = True
                elif name == "content-length":
                    self.length = int(value)
        if data:
            if b"data:" in data:
                if self.last_event is not None:
                    self.max_gap = max(self.max_gap, now - self.last_event)
                self.last_event = now
                self.events += 1
            if self.first_token is None and CONTENT.search(data):
                self.first_token = now
        self.received += len(data)
        self.tail = (self.tail + data)[-7:]
        finished = (self.chunked and self.tail.endswith(b"0\r\n\r\n")) or (
            self.length is not None and self.received >= self.length
        )
        if finished:
            self.done.set_result(True)

    def connection_lost(self, exc):
        if self.done is not None and not self.done.done():
            self.done.set_result(False)
        if not self.closed.done():
            self.closed.set_result(True)


async def worker(args, request, deadline, results, errors):
    loop = asyncio.get_running_loop()
    connection = None
    while time.perf_counter() < deadline:
        if connection is None or connection.closed.done():
            try:
                _, connection = await loop.create_connection(StreamConnection, args.host, args.port)
            except OSError:
                errors["connect"] += 1
                await asyncio.sleep(0.05)
                continue
        connection.start(request)
        try:
            ok = await asyncio.wait_for(connection.done, args.timeout)
        except asyncio.TimeoutError:
            errors["timeout"] += 1
            connection.transport.close()
            connection = None
            continue
        if not ok or connection.status != 200 or connection.first_token is None:
            errors["failed"] += 1
            if connection.transport:
                connection.transport.close()
            connection = None
            continue
        results.append((connection.first_token - connection.sent, connection.max_gap, connection.events))
    if connection is not None and connection.transport:
        connection.transport.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/chat/completions")
    parser.add_argument("--auth", default="bench")
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--pace-ms", type=float, default=0.0, help="the upstream's pace between pieces")
    parser.add_argument("--stall-ms", type=float, default=5.0, help="gap beyond the pace that counts as a stall")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("stream_client.py sends to loopback only")
    body = json.dumps({
        "model": args.model,
        "stream": True,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hello, benchmark streaming reply"}],
    }).encode()
    request = (
        f"POST {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        f"Authorization: Bearer {args.auth}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    results, errors = [], {"connect": 0, "timeout": 0, "failed": 0}
    started = time.perf_counter()
    deadline = started + args.duration
    await asyncio.gather(*(worker(args, request, deadline, results, errors) for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    ttft = [r[0] * 1000 for r in results]
    gaps = [r[1] * 1000 for r in results]
    threshold = args.pace_ms + args.stall_ms
    print(json.dumps({
        "concurrency": args.concurrency,
        "streams": len(results),
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "events_per_stream": percentile([r[2] for r in results], 50),
        "ttft_ms": {"p50": percentile(ttft, 50), "p99": percentile(ttft, 99), "max": max(ttft) if ttft else None},
        "max_gap_ms": {"p50": percentile(gaps, 50), "p99": percentile(gaps, 99), "max": max(gaps) if gaps else None},
        "stall_threshold_ms": threshold,
        "stalled_streams": sum(1 for g in gaps if g > threshold),
        "gaps_over_35ms": sum(1 for g in gaps if g > 35.0),
    }))


if __name__ == "__main__":
    asyncio.run(main())
