#!/usr/bin/env python3
"""Failover latency: how long after a location change the last affected session is closed.

Opens N logged-in IMAP sessions for alice (database DB01, active on mbx1) through mailfront to a
real Dovecot, then moves DB01 to mbx2 — by a write to etcd (`--store etcd`, the default when
scripts/lab_etcd.py is available) or an edit of the embedded location map (`--store file`) —
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import lab  # noqa: E402


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

    lab.ensure_installed("dovecot", "openssl")
    binary = lab.build_mailfront(args.profile)
    root = lab.reset_dir(lab.lab_root("bench-failover"))
    users = [lab.User("alice@example.com", "DB01")]
    ports = {n: lab.Ports(*(lab.free_port() for _ in range(5))) for n in ("mbx1", "mbx2")}
    servers = {n: lab.Dovecot(root, n, p, users) for n, p in ports.items()}
    cert, key = lab.make_certificate(root / "tls")
    lab.master_password(root)
    lab.write_users(root / "users.toml", users, binary)
    imap_port = lab.free_port()
    etcd = None
    if args.store == "etcd":
        import lab_etcd

        etcd = lab_etcd.Etcd(root / "etcd", lab.free_port(), lab.free_port())
        etcd.start()
        etcd.put("/mailfront/databases/DB01", "mbx1")
        location = f'[location]\nbackend = "etcd"\nendpoints = ["{etcd.endpoint}"]\n'
    else:
        lab.write_locations(root / "locations.toml", {"DB01": "mbx1"})
        location = ""
    config = lab.mailfront_config(
        node="bench",
        servers=[lab.ServerEntry(n, p) for n, p in ports.items()],
        users_file=root / "users.toml",
        locations_file=root / "locations.toml",
        cert=cert,
        key=key,
        master_password_file=root / "secrets" / "master.pw",
        listeners=[{"protocol": "imap", "address": f"127.0.0.1:{imap_port}", "tls": "none",
                    "allow_plaintext_auth": True}],
        # Every session comes from 127.0.0.1: lift the per-client connection limit.
        extra='[reload]\ninterval = "50ms"\n[limits]\nmax_connections_per_client = 1000000\n',
    )
    if location:
        # Replace the file location section with etcd's.
        start = config.index("[location]")
        end = config.index("\n\n", start)
        config = config[:start] + location + config[end:]
    (root / "mailfront.toml").write_text(config)
    mailfront = lab.Mailfront(binary, root / "mailfront.toml", root / "mailfront.log")
    results = []
    try:
        for s in servers.values():
            s.start()
        mailfront.start()
        active = "mbx1"
        for run in range(args.repeat):
            sessions = open_sessions(imap_port, args.sessions)
            target = "mbx2" if active == "mbx1" else "mbx1"
            # Reopen on the right server: the sessions above are on `active`.
            start = time.monotonic()
            if etcd:
                etcd.put("/mailfront/databases/DB01", target)
            else:
                lab.write_locations(root / "locations.toml", {"DB01": target})
            last = wait_all_closed(sessions, timeout=120)
            elapsed = last - start
            results.append(elapsed)
            print(f"run {run + 1}: {args.sessions} sessions closed {elapsed * 1000:.1f} ms after the write", flush=True)
            active = target
            # Let Dovecot reap the closed sessions before the next run.
            time.sleep(1)
    finally:
        mailfront.stop()
        for s in servers.values():
            s.stop()
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
