"""Safe moves of groups on a shared-storage fleet, with real parts: three Dovecot backends over one
mail store, a real etcd, three mailfront nodes in `[placement] mode = "groups"`. A user must never
be served by two backends at once: while the leader moves groups (rebalances, a server given no
groups) and clients log in all the time through all three nodes, every backend's own list of
logged-in users (`doveadm who`) is polled, and the test fails on the first user seen on two
backends at once. A login held by a move that cannot finish (a node frozen with SIGSTOP never
acknowledges until its lease runs out) gets the temporary error after `move_timeout`."""

from __future__ import annotations

import imaplib
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import lab.etcd  # scripts/ is on sys.path through conftest
from conftest import lab, wait_until
from test_active_manager import Node, backend_of
from test_placement import fleet_config, group_of, groups_report

PASSWORD = "moves-pw-1"
SERVERS = ("sm1", "sm2", "sm3")
GROUPS = 48
USERS = [lab.User(f"user{i:02d}@example.com", "shared", password=PASSWORD) for i in range(1, 41)]
# One group crowded with users, for the move of a group holding 1,000 sessions.
CROWD_GROUP, CROWD_SESSIONS = "g5", 1000
# The lease is long enough that a frozen node holds a move past `move_timeout`.
LEASE_TTL, MOVE_TIMEOUT, SPREAD = 5, 2.0, 0.5


class Fleet:
    def __init__(self, root: Path, etcd: lab.etcd.Etcd):
        self.root, self.etcd = root, etcd
        self.servers: dict[str, lab.Dovecot] = {}
        self.nodes: list[Node] = []
        self.weights = {"sm1": 1, "sm2": 1, "sm3": 0}

    def settings(self, node: Node) -> dict:
        return fleet_config(self.root, self.etcd, {name: self.servers[name].ports for name in SERVERS},
                            self.weights, node, self.cert, self.key, {
            # Every client here is 127.0.0.1, and one test holds 1,000 sessions.
            "limits": {"max_connections_per_client": 2 * CROWD_SESSIONS},
            # Lenient probes: a backend slowed by the load must not look down (these tests
            # move groups on purpose; test_active_manager covers detection).
            "health": {"interval": "1s", "timeout": "1s", "fall": 8, "rise": 2},
            "active_manager": {"lease_ttl": f"{LEASE_TTL}s", "hold_down": "60s"},
            "placement": {"mode": "groups", "groups": GROUPS, "max_parallel_moves": GROUPS,
                          "move_timeout": f"{int(MOVE_TIMEOUT * 1000)}ms",
                          "disconnect_spread": f"{int(SPREAD * 1000)}ms"},
        })

    def groups(self, node: Node | None = None) -> dict:
        return groups_report(node or self.nodes[0])

    def settled(self) -> dict | None:
        """The placement once every group is placed and no move is under way."""
        report = self.groups()
        if len(report["placement"]) == GROUPS and not report["moving"]:
            return report["placement"]
        return None

    def settled_as(self, shares: dict[str, int], timeout: float = 20) -> dict:
        """Waits until the placement is settled with `shares` groups per server (every node's
        report follows etcd's watch, so right after a write it may still show the old one)."""
        def check():
            placement = self.settled()
            return placement if placement and Counter(placement.values()) == shares else None
        return wait_until(check, timeout, f"the placement settled as {shares}")

    def reweigh(self, **weights: int) -> None:
        self.weights.update(weights)
        for node in self.nodes:
            lab.write_toml(node.config, self.settings(node))
            status, body = node.api("POST", "/reload")
            assert status == 200, body

    def who(self, server: str) -> set[str]:
        """The users Dovecot itself counts as logged in on `server`."""
        out = subprocess.run(["doveadm", "-c", str(self.servers[server].dir / "dovecot.conf"), "who", "-1"],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        return {line.split()[0] for line in out.stdout.splitlines()[1:] if line.strip()}


def crowd() -> list[lab.User]:
    """25 users of CROWD_GROUP (Dovecot and the users file know them; the load above does not)."""
    names = (f"crowd{i}@example.com" for i in range(100_000))
    return [lab.User(a, "shared", password=PASSWORD) for a in names if group_of(a, GROUPS) == CROWD_GROUP][:25]


@pytest.fixture(scope="module")
def fleet(lab_env):
    lab.ensure_installed("etcd")
    root = lab.reset_dir(lab_env.root / "safe-moves")
    etcd = lab.etcd.Etcd(root / "etcd", lab.free_port(), lab.free_port())
    env = Fleet(root, etcd)
    env.crowd = crowd()
    everyone = USERS + env.crowd
    env.servers = {name: lab.Dovecot(root, name, lab.Ports(*(lab.free_port() for _ in range(5))), everyone)
                   for name in SERVERS}
    env.cert, env.key = lab.make_certificate(root / "tls")
    lab.master_password(root)
    # {PLAIN}: the logins measure the front door and the moves, not a debug build's Argon2.
    lab.write_users(root / "users.toml", everyone)
    lab.write_locations(root / "unused-locations.toml", {})
    try:
        etcd.start()
        for server in env.servers.values():
            server.start()
        for i in (1, 2, 3):
            node = Node(f"moves{i}", None, lab.free_port(), 0, 0, lab.free_port(),  # type: ignore[arg-type]
                        root / f"moves{i}.toml")
            lab.write_toml(node.config, env.settings(node))
            node.process = lab.Mailfront(lab_env.binary, node.config, root / f"{node.name}.log")
            node.process.start()
            env.nodes.append(node)
        wait_until(env.settled, 30, "every group placed")
        # The first placement may have seen only one server healthy: even it out, as an
        # operator would.
        if Counter(env.settled().values()) != {"sm1": GROUPS // 2, "sm2": GROUPS // 2}:
            status, body = env.nodes[0].api("POST", "/groups/rebalance")
            assert status == 200, body
        env.settled_as({"sm1": GROUPS // 2, "sm2": GROUPS // 2}, 30)
        yield env
    finally:
        for node in env.nodes:
            signal_node(node, signal.SIGCONT)
            node.process.stop()
        for server in env.servers.values():
            server.stop()
        etcd.stop()


class Load:
    """Clients logging in all the time, as random users, through every node."""

    def __init__(self, nodes: list[Node], per_node: int = 6, users: list[str] | None = None):
        self.nodes, self.per_node = nodes, per_node
        self.users = users or [u.address for u in USERS]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results: Counter = Counter()
        self.login_seconds: list[float] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self.client, args=(node, i), daemon=True)
                        for node in nodes for i in range(per_node)]

    def client(self, node: Node, seed: int) -> None:
        rng = random.Random(hash((node.name, seed)))
        while not self.stop.is_set():
            user = rng.choice(self.users)
            started = time.monotonic()
            try:
                client = imaplib.IMAP4("127.0.0.1", node.imap, timeout=15)
                try:
                    client.login(user, PASSWORD)
                except imaplib.IMAP4.error as refused:
                    with self.lock:
                        self.results["temporary" if b"UNAVAILABLE" in str(refused).encode() else "refused"] += 1
                        if b"UNAVAILABLE" not in str(refused).encode():
                            self.errors.append(f"{user}: {refused}")
                    client.shutdown()
                    continue
                with self.lock:
                    self.results["ok"] += 1
                    self.login_seconds.append(time.monotonic() - started)
                client.select("INBOX")
                deadline = time.monotonic() + rng.uniform(0.2, 1.5)
                while time.monotonic() < deadline and not self.stop.is_set():
                    client.noop()
                    time.sleep(0.05)
                client.logout()
            except (imaplib.IMAP4.abort, OSError, EOFError):
                # A session closed by a move: the client logs in again, like a real one.
                with self.lock:
                    self.results["closed-by-move"] += 1

    def more(self, count: int, timeout: float = 30) -> None:
        """Waits until `count` more logins succeeded."""
        target = self.results["ok"] + count
        wait_until(lambda: self.results["ok"] >= target, timeout, f"{count} more logins")

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


class DoubleServiceWatch:
    """Polls every backend's `doveadm who` in turn. A user is served twice at once when seen on
    backend X, then on another backend Y, then on X again: X's two samples bracket Y's in time.
    Stops at the first sighting."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.stop = threading.Event()
        self.samples = 0
        self.sighting: str | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        history: list[tuple[str, set[str]]] = []   # (server, users), in the order sampled
        while not self.stop.is_set() and self.sighting is None:
            for server in SERVERS:
                users = self.fleet.who(server)
                self.samples += 1
                # The previous sample of this server, and every other server's samples since.
                previous = next((i for i in range(len(history) - 1, -1, -1) if history[i][0] == server), None)
                if previous is not None:
                    held = history[previous][1] & users
                    for other, seen in history[previous + 1:]:
                        twice = held & seen
                        if twice:
                            self.sighting = f"{sorted(twice)} on {server} and {other} at once (sample {self.samples})"
                            return
                history.append((server, users))
                history = history[-2 * len(SERVERS):]

    def __enter__(self) -> "DoubleServiceWatch":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def test_no_user_is_ever_served_by_two_backends_while_groups_move(fleet):
    before = fleet.settled_as({"sm1": GROUPS // 2, "sm2": GROUPS // 2})
    moved_groups = 0
    with DoubleServiceWatch(fleet) as watch, Load(fleet.nodes) as load:
        load.more(40)
        quiet = sorted(load.login_seconds)
        # 1. A server added: an operator's rebalance gives it its share.
        fleet.reweigh(sm3=1)
        status, done = fleet.nodes[1].api("POST", "/groups/rebalance")
        assert status == 200 and done["written"] == GROUPS // 3, (Counter(before.values()), done)
        moved_groups += done["written"]
        after = fleet.settled_as({s: GROUPS // 3 for s in SERVERS})
        load.more(40)
        # 2. A server given no groups: the leader moves all of its groups by itself.
        fleet.reweigh(sm1=0)
        drained = fleet.settled_as({"sm2": GROUPS // 2, "sm3": GROUPS // 2})
        # Only sm1's groups moved.
        assert {g for g in after if drained[g] != after[g]} == {g for g in after if after[g] == "sm1"}
        moved_groups += sum(1 for g in after if after[g] == "sm1")
        load.more(40)
        # 3. Back to three: a rebalance moves a third back.
        fleet.reweigh(sm1=1)
        status, done = fleet.nodes[2].api("POST", "/groups/rebalance")
        assert status == 200 and done["written"] == GROUPS // 3, done
        moved_groups += done["written"]
        fleet.settled_as({s: GROUPS // 3 for s in SERVERS})
        load.more(40)
        wait_until(lambda: watch.samples >= 30 or watch.sighting, 10, "samples")
    assert watch.sighting is None, f"double service: {watch.sighting}"
    assert not load.errors, load.errors[:5]
    assert load.results["ok"] > 100 and load.results["closed-by-move"] > 0, load.results
    times = sorted(load.login_seconds)
    p99 = times[int(len(times) * 0.99)]
    print(f"\nsafe moves: {moved_groups} group moves, {dict(load.results)}, "
          f"login median {statistics.median(times) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
          f"(before any move: median {statistics.median(quiet) * 1000:.1f} ms, "
          f"p99 {quiet[int(len(quiet) * 0.99)] * 1000:.1f} ms), doveadm who samples {watch.samples}")
    # How long logins were held by a move under way (each node logs every held login).
    held = sorted(int(ms) for node in fleet.nodes
                  for ms in re.findall(r"login held until the group settled.*held_ms=(\d+)", node.log()))
    if held:
        print(f"logins held by a move: {len(held)}, median {statistics.median(held)} ms, "
              f"p99 {held[int(len(held) * 0.99)]} ms, max {held[-1]} ms")
    # Every node logged the flips it saw acknowledged; the leader logged each flip once.
    flips = sum(node.log().count("every present node acknowledged") for node in fleet.nodes)
    assert flips >= moved_groups, flips


def test_a_group_holding_1000_sessions_moves_once_every_node_closed_them(fleet, lab_env):
    """The note's figure: how long a move of a busy group takes (its sessions close spread over
    `disconnect_spread`, then every node acknowledges, then the leader flips it)."""
    bench = lab_env.binary.parent / "mailfront-bench"
    assert bench.exists(), f"{bench} is missing: cargo build -p mailfront-loadgen"
    placement = wait_until(fleet.settled, 30, "settled")
    source = placement[CROWD_GROUP]
    target = next(s for s in SERVERS if s != source)
    users = fleet.root / "crowd-users.txt"
    users.write_text("".join(f"{u.address} {PASSWORD}\n" for u in fleet.crowd))
    per_node = -(-CROWD_SESSIONS // len(fleet.nodes))
    loads = []
    try:
        for node in fleet.nodes:
            ready = fleet.root / f"crowd-{node.name}.ready"
            ready.unlink(missing_ok=True)
            loads.append((ready, subprocess.Popen(
                [str(bench), "idle", "--target", f"127.0.0.1:{node.imap}", "--users", str(users),
                 "--sessions", str(per_node), "--concurrency", "5", "--hold", "600",
                 "--ready-file", str(ready), "--output", str(fleet.root / f"crowd-{node.name}.json")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        wait_until(lambda: all(r.exists() for r, _ in loads), 180, "1,000 sessions open")
        for ready, _ in loads:
            assert re.fullmatch(rf"READY opened={per_node} errors=0\s*", ready.read_text()), ready.read_text()

        def live() -> int:
            return sum(node.api("GET", "/groups")[1]["sessions"].get(CROWD_GROUP, 0) for node in fleet.nodes)
        assert live() >= CROWD_SESSIONS
        # The servers view counts them on their server too (each node its own).
        on_source = sum(next(s["sessions"] for s in node.api("GET", "/servers")[1]["servers"] if s["server"] == source)
                        for node in fleet.nodes)
        assert on_source >= CROWD_SESSIONS, on_source
        assert len(fleet.who(source) & {u.address for u in fleet.crowd}) == len(fleet.crowd)

        started = time.monotonic()
        status, body = fleet.nodes[0].api("POST", f"/databases/move?database={CROWD_GROUP}&server={target}")
        assert status == 200, body
        wait_until(lambda: (p := fleet.settled()) and p[CROWD_GROUP] == target, 30, "the busy group moved")
        took = time.monotonic() - started
        # Flipped only once no node held a session of the group on the old server.
        assert live() == 0
        # The client side learns the session ended ([UNAVAILABLE] BYE, then the close); Dovecot's
        # processes end with it.
        wait_until(lambda: not (fleet.who(source) & {u.address for u in fleet.crowd}), 10,
                   "the crowd gone from the old server")
        print(f"\na group holding {per_node * len(fleet.nodes)} sessions moved in {took:.2f} s "
              f"(disconnect_spread {SPREAD} s)")
        assert took >= SPREAD * 0.5, "closes were not spread"
    finally:
        for _, process in loads:
            process.terminate()
            process.wait(timeout=30)


def test_a_pin_moves_one_user_safely_and_unpin_gives_the_user_back_to_the_group(fleet):
    placement = wait_until(fleet.settled, 30, "settled")
    user = USERS[1].address
    pin = f"pin:{user}"
    group = group_of(user, GROUPS)
    source = placement[group]
    target = next(s for s in SERVERS if s != source)
    admin = fleet.nodes[0]
    status, body = admin.api("POST", "/users/pin?user=nobody@example.com&server=sm1")
    assert status == 422 and "no user" in str(body), body
    status, body = admin.api("POST", f"/users/unpin?user={user}")
    assert status == 422 and "not pinned" in str(body), body

    def backend_now(node: Node) -> str:
        after = len(node.log())
        client = wait_until(lambda: _try_login(node, user), 15, f"a login through {node.name}", interval=0.1)
        client.logout()
        return wait_until(lambda: backend_of(node, user, after), 5, "the session line")

    def settled_pin(server: str | None) -> bool:
        report = fleet.groups()
        return pin not in report["moving"] and report["pins"].get(user) == server

    with DoubleServiceWatch(fleet) as watch, Load(fleet.nodes, per_node=2, users=[user]) as load:
        load.more(10)
        held = login_of(fleet.nodes[1], user)
        held.select("INBOX")
        status, body = admin.api("POST", f"/users/pin?user={user.upper()}&server={target}")
        assert status == 200 and body == {"user": user, "group": group, "from": source, "to": target}, body
        wait_until(lambda: settled_pin(target), 20, "the pin made")
        # The session that was open on the group's server was closed by the pin.
        wait_until(lambda: _closed(held), 10, "the old session closed")
        assert all(backend_now(node) == target for node in fleet.nodes)
        status, body = admin.api("POST", f"/users/pin?user={user}&server={target}")
        assert status == 422 and "already pinned" in str(body), body
        load.more(10)
        # The group itself stays where it was; only the user moved.
        assert fleet.groups()["placement"][group] == source
        status, body = admin.api("POST", f"/users/unpin?user={user}")
        assert status == 200 and body["to"] == source, body
        wait_until(lambda: settled_pin(None), 20, "the pin removed")
        assert all(backend_now(node) == source for node in fleet.nodes)
        load.more(10)
    assert watch.sighting is None, f"double service: {watch.sighting}"
    assert not load.errors, load.errors[:5]
    assert load.results["closed-by-move"] > 0, load.results
    print(f"\npin and unpin under load of the same user: {dict(load.results)}, "
          f"doveadm who samples {watch.samples}")


def _closed(client: imaplib.IMAP4) -> bool:
    try:
        client.noop()
        return False
    except (imaplib.IMAP4.abort, OSError, EOFError):
        return True


def login_of(node: Node, user: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", node.imap, timeout=15)
    client.login(user, PASSWORD)
    return client


def test_a_login_held_past_move_timeout_gets_the_temporary_error_and_then_goes_to_the_new_server(fleet, lab_env):
    placement = wait_until(fleet.settled, 30, "settled")
    user = USERS[0].address
    group = group_of(user, GROUPS)
    frozen, asking = fleet.nodes[2], fleet.nodes[0]
    # A node that cannot acknowledge (its lease, 5 s, outlasts move_timeout): the move waits.
    signal_node(frozen, signal.SIGSTOP)
    try:
        source = placement[group]
        target = next(s for s in SERVERS if s != source)
        status, body = asking.api("POST", f"/databases/move?database={group}&server={target}")
        assert status == 200, body
        wait_until(lambda: group in fleet.groups(asking)["moving"], 5, "the move under way")
        marked = time.monotonic()
        # `mailfront route` explains the move under way without waiting for it (while the move
        # is surely still under way: it is called off only after move_timeout).
        explained = subprocess.run([str(lab_env.binary), "route", "--config", str(asking.config), user],
                                   capture_output=True, text=True, timeout=30)
        assert explained.returncode == 0, explained.stderr
        if time.monotonic() - marked < MOVE_TIMEOUT:
            assert f"{group} is moving to {target}" in explained.stdout, explained.stdout
        started = time.monotonic()
        with pytest.raises(imaplib.IMAP4.error, match=r"UNAVAILABLE"):
            login_of(asking, user)
        held = time.monotonic() - started
        assert MOVE_TIMEOUT - 0.1 <= held < MOVE_TIMEOUT + 2, held
    finally:
        signal_node(frozen, signal.SIGCONT)
    # The frozen node, running again, acknowledges: the move is done (made again if it was
    # called off meanwhile), and the user goes to the new server through every node.
    wait_until(lambda: move_done(fleet, asking, group, target), 20, "the move done", interval=0.5)
    for node in fleet.nodes:
        client = wait_until(lambda: _try_login(node, user), 15, f"a login through {node.name}", interval=0.2)
        client.logout()
        backend = re.findall(r"session proxied.*user=" + re.escape(user) + r".*backend=(\S+)", node.log())
        assert backend and backend[-1] == target, backend[-3:]


def test_a_node_frozen_past_its_lease_forwards_nothing_to_the_old_server_when_it_wakes(fleet):
    """The fence: a node SIGSTOPped while the leader moves a group without it (its lease ran
    out) must not forward a single command of that group's sessions when it runs again — not
    even before it has heard of the move."""
    placement = wait_until(fleet.settled, 30, "settled")
    user = USERS[2].address
    group = group_of(user, GROUPS)
    source = placement[group]
    target = next(s for s in SERVERS if s != source)
    frozen, asking = fleet.nodes[1], fleet.nodes[0]
    conn = socket.create_connection(("127.0.0.1", frozen.imap), timeout=15)
    reader = conn.makefile("rb")

    def until(tag: bytes) -> bytes:
        lines = b""
        while not lines.split(b"\r\n")[-2:-1] or not lines.split(b"\r\n")[-2].startswith(tag + b" "):
            line = reader.readline()
            assert line, lines
            lines += line
        return lines

    reader.readline()  # greeting
    conn.sendall(f"a LOGIN {user} {PASSWORD}\r\n".encode())
    assert b"a OK" in until(b"a")
    conn.sendall(b"b SELECT INBOX\r\n")
    assert b"b OK" in until(b"b")
    signal_node(frozen, signal.SIGSTOP)
    try:
        # The move waits for the frozen node and is called off after move_timeout; once the
        # node's lease has run out it no longer counts, and the next try flips without it.
        wait_until(lambda: move_done(fleet, asking, group, target), LEASE_TTL + 15,
                   "the move done without the frozen node", interval=0.5)
        # A command the client sends meanwhile waits in the frozen node's socket buffer.
        conn.sendall(b"c NOOP\r\n")
    finally:
        signal_node(frozen, signal.SIGCONT)
    rest = b""
    conn.settimeout(15)
    while chunk := conn.recv(4096):
        rest += chunk
    conn.close()
    assert b"c OK" not in rest and b"c NO" not in rest, f"the old server answered after the move: {rest!r}"
    assert b"* BYE" in rest, rest
    # And the old server has no session of the user left.
    wait_until(lambda: user not in fleet.who(source), 10, "the old session gone")


def move_done(fleet: Fleet, asking: Node, group: str, target: str) -> bool:
    """Whether `group` is settled on `target`; if it is settled elsewhere (a move called off),
    asks for the move again."""
    placement = fleet.settled()
    if placement and placement[group] == target:
        return True
    if placement:
        asking.api("POST", f"/databases/move?database={group}&server={target}")
    return False


def signal_node(node: Node, sig: int) -> None:
    pid = node.process.pid
    if pid is not None:
        os.kill(pid, sig)


def _try_login(node: Node, user: str):
    try:
        return login_of(node, user)
    except (imaplib.IMAP4.error, OSError):
        return None
