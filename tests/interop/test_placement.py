"""Placement by group on a shared-storage fleet, with real parts: four Dovecot backends over one
mail store (no databases), a real etcd, two mailfront nodes in `[placement] mode = "groups"`
electing one leader. The leader places every group; a server added takes only its share on an
operator's rebalance; a server SIGKILLed gives up only its own groups, and its users log in
again elsewhere."""

from __future__ import annotations

import imaplib
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

import lab.etcd  # scripts/ is on sys.path through conftest
from conftest import lab, wait_until
from test_active_manager import DETECT, FALL, INTERVAL, TTL, Node, backend_of, kill_server

PASSWORD = "shared-pw-1"
SERVERS = ("pmx1", "pmx2", "pmx3", "pmx4")
GROUPS = 64
USERS = [lab.User(f"{name}@example.com", "shared", password=PASSWORD)
         for name in ("alice", "bob", "carol", "dan", "erin", "frank", "grace", "heidi")]


def group_of(address: str, groups: int = GROUPS) -> str:
    """mailfront's group of an address: FNV-1a 64 of the lowercase address, modulo `groups`."""
    value = 0xcbf29ce484222325
    for byte in address.lower().encode():
        value = ((value ^ byte) * 0x100000001b3) % 2**64
    return f"g{value % groups}"


def fleet_config(root: Path, etcd: lab.etcd.Etcd, servers: dict[str, lab.Ports], weights: dict[str, int],
                 node: Node, cert: Path, key: Path, sections: dict) -> dict:
    """A node of a shared-store fleet: `servers` (by name, with their `weights`), the users file
    in `root`, locations in `etcd`, one plaintext IMAP listener and the admin API; `sections`
    (health, the Active Manager, placement …) on top."""
    config = lab.node_config(
        node=node.name,
        servers=[lab.ServerEntry(name, ports) for name, ports in servers.items()],
        users_file=root / "users.toml",
        locations_file=root / "unused-locations.toml",
        cert=cert,
        key=key,
        master_password_file=root / "secrets" / "master.pw",
        location=etcd.location_config(timeout="1s"),
        listeners=[lab.listener(None, "imap", node.imap, "none", allow_plaintext_auth=True)],
        sections={
            "timeouts": {"auth_failure_delay": "100ms", "backend_connect": "3s", "backend_login": "3s"},
            "admin": {"address": f"127.0.0.1:{node.admin}"},
            **sections,
        },
    )
    for server in config["server"]:
        server["weight"] = weights[server["name"]]
    return config


def groups_report(node: Node) -> dict:
    """A node's `/groups` report: placement, shares, moves under way, pins."""
    status, body = node.api("GET", "/groups")
    assert status == 200, body
    return body["groups"]


class Shared:
    def __init__(self, root: Path, binary: Path, etcd: lab.etcd.Etcd):
        self.root, self.binary, self.etcd = root, binary, etcd
        self.servers: dict[str, lab.Dovecot] = {}
        self.nodes: list[Node] = []
        self.weights = {"pmx1": 1, "pmx2": 1, "pmx3": 1, "pmx4": 0}

    def settings(self, node: Node, cert: Path, key: Path) -> dict:
        return fleet_config(self.root, self.etcd, {name: self.servers[name].ports for name in SERVERS},
                            self.weights, node, cert, key, {
                                "health": {"interval": f"{int(INTERVAL * 1000)}ms", "timeout": "250ms",
                                           "fall": FALL, "rise": 2},
                                "active_manager": {"lease_ttl": f"{int(TTL)}s", "hold_down": "60s"},
                                "placement": {"mode": "groups", "groups": GROUPS, "max_parallel_moves": GROUPS},
                            })

    def groups(self, node: Node | None = None) -> dict:
        return groups_report(node or self.nodes[0])

    def serving(self, node: Node | None = None) -> dict[str, int]:
        return {name: s["serving"] for name, s in self.groups(node)["servers"].items()}


@pytest.fixture(scope="module")
def shared(lab_env):
    lab.ensure_installed("etcd")
    root = lab.reset_dir(lab_env.root / "shared")
    etcd = lab.etcd.Etcd(root / "etcd", lab.free_port(), lab.free_port())
    env = Shared(root, lab_env.binary, etcd)
    env.servers = {name: lab.Dovecot(root, name, lab.Ports(*(lab.free_port() for _ in range(5))), USERS)
                   for name in SERVERS}
    cert, key = lab.make_certificate(root / "tls")
    lab.master_password(root)
    lab.write_users(root / "users.toml", USERS, lab_env.binary)
    lab.write_locations(root / "unused-locations.toml", {})
    env.cert, env.key = cert, key
    try:
        etcd.start()
        for server in env.servers.values():
            server.start()
        for i in (1, 2):
            node = Node(f"shared{i}", None, lab.free_port(), 0, 0, lab.free_port(),  # type: ignore[arg-type]
                        root / f"shared{i}.toml")
            lab.write_toml(node.config, env.settings(node, cert, key))
            node.process = lab.Mailfront(lab_env.binary, node.config, root / f"{node.name}.log")
            node.process.start()
            env.nodes.append(node)
        yield env
    finally:
        for node in env.nodes:
            node.process.stop()
        for server in env.servers.values():
            server.signal(signal.SIGCONT)
            server.stop()
        etcd.stop()


def login(node: Node, user: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", node.imap, timeout=15)
    client.login(user, PASSWORD)
    return client


def test_every_group_is_placed_within_one_of_its_share_and_a_user_lands_on_one_server(shared):
    def placed():
        report = shared.groups()
        return len(report["placement"]) == GROUPS and report
    report = wait_until(placed, 20, "every group placed by the leader")
    counts = Counter(report["placement"].values())
    assert set(counts) == {"pmx1", "pmx2", "pmx3"}, counts  # pmx4 has weight 0
    assert all(abs(n - GROUPS / 3) < 1 for n in counts.values()), counts
    # Both nodes read the same placement from etcd.
    assert wait_until(lambda: shared.groups(shared.nodes[1])["placement"] == report["placement"], 10, "agreement")
    # One user through either node: always the server of the user's group.
    for user in ("alice@example.com", "bob@example.com"):
        expected = report["placement"][group_of(user)]
        for node in shared.nodes:
            after = len(node.log())
            client = login(node, user)
            status, body = node.api("GET", "/groups")
            assert status == 200 and body["sessions"].get(group_of(user), 0) >= 1, body["sessions"]
            client.logout()
            assert wait_until(lambda: backend_of(node, user, after), 5, "the session line") == expected
    # 1,000 users of the same hash spread like their groups (the note's figure).
    spread = Counter(report["placement"][group_of(f"user{i:04d}@example.com")] for i in range(1000))
    print(f"\n1000 users over the servers: {dict(sorted(spread.items()))}")


def test_a_server_added_takes_only_its_share_on_a_rebalance(shared):
    before = wait_until(lambda: len(shared.groups()["placement"]) == GROUPS and shared.groups()["placement"],
                        20, "every group placed")
    shared.weights["pmx4"] = 1
    for node in shared.nodes:
        lab.write_toml(node.config, shared.settings(node, shared.cert, shared.key))
        status, body = node.api("POST", "/reload")
        assert status == 200, body
    # Nothing moves by itself: a new server waits for the operator's rebalance.
    assert shared.groups()["placement"] == before
    status, plan = shared.nodes[1].api("POST", "/groups/rebalance?dry_run=yes")
    assert status == 200 and plan["written"] == 0, plan
    assert len(plan["moves"]) == GROUPS // 4, plan
    assert all(m["to"] == "pmx4" and m["from"] for m in plan["moves"]), plan
    assert shared.groups()["placement"] == before, "a dry run moved something"
    status, done = shared.nodes[1].api("POST", "/groups/rebalance")
    assert status == 200 and done["written"] == GROUPS // 4, done
    after = wait_until(lambda: shared.serving() == {s: GROUPS // 4 for s in SERVERS} and shared.groups()["placement"],
                       10, "the rebalance applied")
    moved = {g for g in after if after[g] != before[g]}
    assert moved == {m["group"] for m in plan["moves"]}


def test_a_server_killed_gives_up_only_its_groups_and_its_users_log_in_elsewhere(shared):
    wait_until(lambda: len(shared.groups()["placement"]) == GROUPS, 20, "every group placed")
    before = shared.groups()["placement"]
    user = "alice@example.com"
    victim = before[group_of(user)]
    kill_server(shared.servers[victim])
    killed = time.monotonic()
    node = shared.nodes[0]

    def moved_away():
        placement = shared.groups()["placement"]
        return victim not in placement.values() and placement

    after = wait_until(moved_away, DETECT + 10, "the killed server's groups moved")
    # Only the killed server's groups moved.
    changed = {g for g in before if after[g] != before[g]}
    assert changed == {g for g, s in before.items() if s == victim}

    def logged_in():
        try:
            client = login(node, user)
        except (imaplib.IMAP4.error, OSError):
            return False
        client.logout()
        return True
    wait_until(logged_in, DETECT + 2, "a login on another server", interval=0.1)
    elapsed = time.monotonic() - killed
    print(f"\nSIGKILL -> login elsewhere: {elapsed:.2f}s")
    # The bound: the Active Manager's detection time + 2 s, counted from the kill.
    assert elapsed <= DETECT + 2, elapsed
    # The server comes back: nothing moves back by itself.
    shared.servers[victim].start()
    wait_until(lambda: all(s["endpoints"] and all(state == "up" for _, state in s["endpoints"])
                           for s in node.api("GET", "/servers")[1]["servers"]), 15, "every server up")
    assert shared.groups()["placement"] == after
