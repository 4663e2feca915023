"""`scripts/demo --shared` keeps its contract: three mailbox servers over one mail store, every
group placed and spread over all three, a user on the server of their group, `fail` moving a
server's groups away, `restore` and a rebalance giving it its share back, a clean stop."""

from __future__ import annotations

import imaplib
import json
import os
import re
import signal
import subprocess
import urllib.request

import pytest

from conftest import lab, wait_until
from test_demo import DEMO, DEMO_ENV, port_open, running_demo
from test_placement import group_of

SERVERS = {"sm1", "sm2", "sm3"}
GROUPS = 64  # the demo's [placement] groups
ALICE = "alice@example.com"


@pytest.fixture
def shared_demo():
    with running_demo("--shared") as started:
        yield started


def demo_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(DEMO), *args], capture_output=True, text=True, env=DEMO_ENV, timeout=60)


def groups_report() -> dict:
    """The node's placement report: {"placement": {group: server}, "moving": {...}, ...}."""
    with urllib.request.urlopen("http://127.0.0.1:9090/groups", timeout=10) as response:
        return json.loads(response.read())["groups"]


def settled_placement() -> dict[str, str] | None:
    """The placement once every group has a server and no move is under way."""
    report = groups_report()
    return report["placement"] if len(report["placement"]) == GROUPS and not report["moving"] else None


def imap_session(after: int) -> tuple[str, str] | None:
    """alice logs in over IMAP (port 1143, plaintext allowed on loopback); returns the group and
    backend of her `session proxied` line written after log offset `after`, or None if the login
    failed (a move or failover under way) or the line is not written yet."""
    try:
        client = imaplib.IMAP4("127.0.0.1", 1143, timeout=15)
        client.login(ALICE, lab.DEMO_PASSWORD)
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        return None
    log = (lab.lab_root("demo") / "mailfront.log").read_text()[after:]
    found = re.findall(rf"session proxied .*user={re.escape(ALICE)} database=(\S+) backend=(\S+)", log)
    return found[-1] if found else None


def server_up(name: str) -> bool:
    """Whether the node sees every endpoint of server `name` up (GET /servers)."""
    with urllib.request.urlopen("http://127.0.0.1:9090/servers", timeout=10) as response:
        servers = json.loads(response.read())["servers"]
    endpoints = next(s["endpoints"] for s in servers if s["server"] == name)
    return bool(endpoints) and all(state == "up" for _, state in endpoints)


def log_size() -> int:
    return len((lab.lab_root("demo") / "mailfront.log").read_text())


def test_shared_demo_places_groups_and_fails_over(shared_demo):
    demo, ready_text = shared_demo
    root = lab.lab_root("demo")
    config = root / "mailfront.toml"
    for port in (1143, 1993, 1110, 1995, 1025, 1587, 1465, 9090, 2379):
        assert port_open(port), port
    assert f"mailfront admin --config {config} groups" in ready_text

    # Every group is placed, over all three servers.
    placement = settled_placement()
    assert placement, groups_report()
    assert set(placement.values()) == SERVERS, placement

    # alice lands on the server of her group.
    group = group_of(ALICE, GROUPS)
    server = placement[group]
    assert wait_until(lambda: imap_session(0), 15, "alice's session line") == (group, server)

    # There is no database to switch over; the demo says what to use instead.
    done = demo_command("switchover", "DB01", "sm1")
    assert done.returncode != 0 and "rebalance" in done.stderr, done.stderr

    # A crash: the Active Manager moves every group of the killed server to the other two, and
    # alice logs in again through one of them.
    offset = log_size()
    done = demo_command("fail", server)
    assert done.returncode == 0, done.stderr
    assert f"{server}: killed" in done.stdout, done.stdout
    after = wait_until(lambda: (p := settled_placement()) and server not in p.values() and p, 30,
                       f"{server}'s groups moved away")
    assert set(after.values()) == SERVERS - {server}, after
    moved_to = after[group]
    assert wait_until(lambda: imap_session(offset), 20, "alice's login elsewhere", interval=0.2) == (group, moved_to)

    # Restored, it takes no group by itself; a rebalance (as the ready text says) gives it its share.
    done = demo_command("restore", server)
    assert done.returncode == 0, done.stderr
    assert "rebalance" in done.stdout, done.stdout
    # A rebalance gives groups only to a server whose every endpoint (IMAP, POP3, submission,
    # LMTP) the node sees up.
    wait_until(lambda: server_up(server), 15, f"mailfront seeing {server} up again")
    assert server not in groups_report()["placement"].values()
    rebalance = subprocess.run([str(lab.mailfront_binary()), "admin", "--config", str(config), "rebalance"],
                               capture_output=True, text=True, timeout=30)
    assert rebalance.returncode == 0, rebalance.stderr
    wait_until(lambda: (p := settled_placement()) and set(p.values()) == SERVERS, 30, f"{server} given groups again")

    # A clean stop on SIGTERM: everything it started is gone.
    dovecot_pids = [int((root / name / "run" / "master.pid").read_text()) for name in sorted(SERVERS)]
    os.killpg(demo.pid, signal.SIGTERM)
    assert demo.wait(timeout=30) == 0
    assert not any(port_open(port) for port in (1143, 9090, 2379, 30143, 31143, 32143))
    assert not any(lab.alive(pid) for pid in dovecot_pids)
