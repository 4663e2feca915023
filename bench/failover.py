#!/usr/bin/env python3
"""Failover latency: how long after a location change the last affected session is closed.

Opens N logged-in IMAP sessions for alice (database DB01, active on mbx1) through mailfront to a
real Dovecot, then moves DB01 to mbx2 — by a write to a real etcd (`--store etcd`, the default;
scripts/lab/etcd.py) or an edit of the embedded location map (`--store file`) —
and measures, on the client side, the time from just before the write to the moment every
session has seen BYE or end of stream. Repeats R times and prints medians.

    bench/failover.py [--sessions 1000] [--repeat 5] [--store etcd|file]
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import selectors
import socket
import statistics
import sys
import time

from benchlab import BenchLab, lab

import lab.etcd  # noqa: E402  (scripts/ is on sys.path through benchlab)


def open_sessions(port: int, count: int) -> list[socket.socket]:
    """Logged-in, SELECTed sessions on raw sockets (imaplib would hold a thread per session)."""
    sessions = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        f = s.makefile("rwb")
        f.readline()
        f.write(f"a LOGIN alice@example.com {lab.DEMO_PASSWORD}\r\nb SELECT INBOX\r\n".encode())
        f.flush()
        while True:
            line = f.readline()
            if not line:
                raise RuntimeError(f"session {i} closed during login")
            if line.startswith(b"b OK"):
                break
            if line.startswith((b"a NO", b"a BAD", b"b NO", b"b BAD")):
                raise RuntimeError(f"session {i}: {line!r}")
        s.setblocking(False)
        sessions.append(s)
    return sessions


def wait_all_closed(sessions: list[socket.socket], timeout: float) -> float:
    """Returns the monotonic time at which the last session saw BYE or EOF."""
    sel = selectors.DefaultSelector()
    for s in sessions:
        sel.register(s, selectors.EVENT_READ)
    pending = len(sessions)
    last = time.monotonic()
    deadline = last + timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pending} sessions still open")
        for key, _ in sel.select(timeout=1):
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data or b"BYE" in data:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                pending -= 1
                last = time.monotonic()
    return last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--store", choices=["etcd", "file"], default="etcd")
    parser.add_argument("--profile", default=os.environ.get("MAILFRONT_PROFILE", "release"))
    args = parser.parse_args()

    etcd = None
    location = None
    if args.store == "etcd":
        etcd = lab.etcd.Etcd(lab.reset_dir(lab.lab_root("bench-failover-etcd")), lab.free_port(), lab.free_port())
        etcd.start()
        etcd.put_active("DB01", "mbx1")
        location = etcd.location_config()
    results = []
    try:
        with BenchLab("bench-failover", [lab.User("alice@example.com", "DB01")], profile=args.profile,
                      location=location) as bench:
            active = "mbx1"
            for run in range(args.repeat):
                sessions = open_sessions(bench.imap_port, args.sessions)
                target = "mbx2" if active == "mbx1" else "mbx1"
                start = time.monotonic()
                if etcd:
                    etcd.put_active("DB01", target)
                else:
                    lab.write_locations(bench.locations, {"DB01": target})
                last = wait_all_closed(sessions, timeout=120)
                elapsed = last - start
                results.append(elapsed)
                print(f"run {run + 1}: {args.sessions} sessions closed {elapsed * 1000:.1f} ms after the write",
                      flush=True)
                active = target
                # Let Dovecot reap the closed sessions before the next run.
                time.sleep(1)
    finally:
        if etcd:
            etcd.stop()
    summary = {
        "store": args.store,
        "sessions": args.sessions,
        "runs_ms": [round(r * 1000, 1) for r in results],
        "median_ms": round(statistics.median(results) * 1000, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
