#!/usr/bin/env python3
"""Soak: many proxied IMAP sessions held for a long time with a steady rate of logins and
commands, through mailfront to real Dovecot servers. Reports mailfront's resident memory over
time (flat within 10 % after warm-up is the goal), errors (zero is the goal) and open file
descriptors (back to the baseline at the end).

    bench/soak.py [--sessions 2000] [--minutes 10] [--logins-per-second 10] [--warmup 60]

Every session logs in, selects its INBOX, then every 5–30 s sends NOOP, a FETCH of every message's
flags or a STATUS; each second `logins-per-second` random sessions log out and new
ones take their place. Writes JSON to bench/results/soak-<time>.json. Not part of scripts/test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

from benchlab import BenchLab, lab, open_fds, rss_kib

USERS = [lab.User(f"soak{i}@example.com", f"DB{i % 4:02d}") for i in range(20)]


class Session:
    """One IMAP session on asyncio streams."""

    def __init__(self, port: int, user: lab.User, stats: dict):
        self.port, self.user, self.stats = port, user, stats
        self.tag = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def command(self, text: str) -> list[bytes]:
        self.tag += 1
        tag = f"t{self.tag}".encode()
        assert self.writer and self.reader
        self.writer.write(tag + b" " + text.encode() + b"\r\n")
        await self.writer.drain()
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 30)
            if not line:
                raise ConnectionError(f"closed during {text.split()[0]}")
            lines.append(line)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text.split()[0]}: {line!r}")
                return lines

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        greeting = await asyncio.wait_for(self.reader.readline(), 30)
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"greeting {greeting!r}")
        await self.command(f'LOGIN "{self.user.address}" "{self.user.password}"')
        await self.command("SELECT INBOX")
        self.stats["logins"] += 1

    async def activity(self) -> None:
        choice = random.random()
        if choice < 0.5:
            await self.command("NOOP")
        elif choice < 0.8:
            await self.command("STATUS INBOX (MESSAGES UNSEEN)")
        else:
            await self.command("UID FETCH 1:* (FLAGS)")
        self.stats["commands"] += 1

    async def close(self) -> None:
        if self.writer is None:
            return
        try:
            await self.command("LOGOUT")
        finally:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None


async def keep_alive(port: int, stats: dict, stop: asyncio.Event, churn: asyncio.Queue) -> None:
    """A slot: a session that is replaced when churned, active every 5–30 s, until `stop`."""
    while not stop.is_set():
        session = Session(port, random.choice(USERS), stats)
        try:
            await session.open()
            while not stop.is_set():
                try:
                    await asyncio.wait_for(churn.get(), random.uniform(5, 30))
                    break  # this slot was picked to log out and in again
                except asyncio.TimeoutError:
                    await session.activity()
            await session.close()
        except (OSError, RuntimeError, ConnectionError, asyncio.TimeoutError) as e:
            stats["errors"] += 1
            stats["last_error"] = f"{type(e).__name__}: {e}"
            await asyncio.sleep(1)


def seed_mailboxes(port: int) -> None:
    """One message in every user's INBOX, so that FETCH has something to return."""
    import imaplib
    for user in USERS:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        client.login(user.address, user.password)
        client.append("INBOX", None, None, b"Subject: soak\r\n\r\nhello\r\n")
        client.logout()


async def soak(bench: BenchLab, args) -> dict:
    stats = {"logins": 0, "commands": 0, "errors": 0, "last_error": None}
    stop = asyncio.Event()
    churn: asyncio.Queue = asyncio.Queue()
    baseline_fds = open_fds(bench.pid)
    baseline_rss = rss_kib(bench.pid)
    slots = []
    started = time.monotonic()
    for i in range(args.sessions):
        slots.append(asyncio.create_task(keep_alive(bench.imap_port, stats, stop, churn)))
        if i % 50 == 49:
            await asyncio.sleep(0.2)  # ramp up: Dovecot forks a process per session
    samples = []
    duration = args.minutes * 60
    next_sample = time.monotonic()
    while time.monotonic() - started < duration:
        for _ in range(args.logins_per_second):
            churn.put_nowait(True)
        if time.monotonic() >= next_sample:
            sample = {"t": round(time.monotonic() - started), "rss_kib": rss_kib(bench.pid),
                      "fds": open_fds(bench.pid), **{k: stats[k] for k in ("logins", "commands", "errors")}}
            samples.append(sample)
            print(json.dumps(sample), flush=True)
            next_sample += 10
        await asyncio.sleep(1)
        # Unconsumed churn tokens would pile up while sessions are still opening.
        while churn.qsize() > args.logins_per_second * 2:
            churn.get_nowait()
    stop.set()
    for _ in range(args.sessions):
        churn.put_nowait(True)
    await asyncio.gather(*slots, return_exceptions=True)
    # File descriptors back to the baseline once every session is gone.
    deadline = time.monotonic() + 30
    while open_fds(bench.pid) > baseline_fds and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    after = [s["rss_kib"] for s in samples if s["t"] >= args.warmup]
    return {
        "sessions": args.sessions,
        "minutes": args.minutes,
        "logins_per_second": args.logins_per_second,
        "profile": bench.profile,
        "baseline": {"rss_kib": baseline_rss, "fds": baseline_fds},
        "after_warmup_rss_kib": {"min": min(after, default=0), "max": max(after, default=0),
                                 "median": statistics.median(after) if after else 0},
        "rss_spread_percent": round(100 * (max(after) - min(after)) / min(after), 1) if after else None,
        "final_fds": open_fds(bench.pid),
        "logins": stats["logins"],
        "commands": stats["commands"],
        "errors": stats["errors"],
        "last_error": stats["last_error"],
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--logins-per-second", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=60, help="seconds left out of the memory comparison")
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()
    with BenchLab("bench-soak", USERS, active={f"DB{i:02d}": ("mbx1", "mbx2")[i % 2] for i in range(4)},
                  profile=args.profile) as bench:
        seed_mailboxes(bench.imap_port)
        result = asyncio.run(soak(bench, args))
        assert "panicked" not in bench.mailfront.log_since_start(), "mailfront panicked"
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    out = Path(__file__).resolve().parent / "results" / time.strftime("soak-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    ok = result["errors"] == 0 and (result["rss_spread_percent"] or 0) <= 10 \
        and result["final_fds"] <= result["baseline"]["fds"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
