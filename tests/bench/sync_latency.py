#!/usr/bin/env python3
"""How long one durable 4 KiB write takes on the disk under a directory, four ways: a
buffered write and `fdatasync`, `O_DSYNC`, `O_DIRECT | O_DSYNC`, and `O_DIRECT` and
`fdatasync`, each overwriting blocks of a file written ahead in zeros (as the ledger
journal does). Prints p50 / p90 / p99 in µs. Run it on a quiet machine: it measures the
disk alone, with nothing else writing.

    python3 tests/bench/sync_latency.py target
"""

import mmap
import os
import sys
import time

FILE_BYTES = 8 << 20
BLOCK = 4096


def measure(path, flags, sync, writes=2000):
    fd = os.open(path, os.O_RDWR | flags)
    block = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT wants
    block.write(b"x" * BLOCK)
    times = []
    try:
        for i in range(writes):
            t = time.perf_counter_ns()
            os.pwritev(fd, [block], (i * BLOCK) % FILE_BYTES)
            if sync:
                os.fdatasync(fd)
            times.append((time.perf_counter_ns() - t) / 1000)
    finally:
        os.close(fd)
    times.sort()
    return " / ".join(f"{times[int(len(times) * q)]:.0f}" for q in (0.5, 0.9, 0.99))


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    path = os.path.join(directory, "sync-latency.bin")
    with open(path, "wb") as f:
        f.write(b"\0" * FILE_BYTES)
        os.fsync(f.fileno())
    try:
        print("4 KiB write, durable: p50 / p90 / p99 µs")
        print("  write + fdatasync     ", measure(path, 0, True))
        print("  O_DSYNC               ", measure(path, os.O_DSYNC, False))
        print("  O_DIRECT | O_DSYNC    ", measure(path, os.O_DIRECT | os.O_DSYNC, False))
        print("  O_DIRECT + fdatasync  ", measure(path, os.O_DIRECT, True))
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
