"""The Active Manager with real parts: three Dovecot mailbox servers holding copies of the same
databases (one shared mail store), a real etcd, three mailfront nodes probing the servers and
electing one leader. Servers and nodes are killed (SIGKILL), stopped (SIGSTOP) and etcd with them;
every test puts the fleet back as it found it."""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import re
import signal
import smtplib
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import lab.etcd  # scripts/ is on sys.path through conftest
from conftest import lab, wait_until

PASSWORD = "fleet-pw-1"
SERVERS = ("amx1", "amx2", "amx3")
# Database → (active server at the start, configured copies in activation preference order).
DATABASES = {
    "DB01": ("amx1", ["amx1", "amx2", "amx3"]),
    "DB02": ("amx2", ["amx2", "amx3", "amx1"]),
    "DB03": ("amx1", ["amx1", "amx3"]),
    # No copies configured: mailfront does not know where else it could go.
    "DB04": ("amx3", None),
}
USERS = [
    lab.User("alice@example.com", "DB01", password=PASSWORD),
    lab.User("bob@example.com", "DB02", password=PASSWORD),
    lab.User("carol@example.com", "DB03", password=PASSWORD),
    lab.User("dan@example.com", "DB04", password=PASSWORD),
]
INTERVAL, FALL, TTL = 0.3, 2, 2.0
# A server killed is seen down within fall × interval (+ a probe's timeout), and moved at once.
DETECT = FALL * INTERVAL + 1.0


@dataclass
class Node:
    name: str
    process: lab.Mailfront
    imap: int
    pop3: int
    submission: int
    admin: int
    config: Path
    log_offset: int = 0

    def log(self) -> str:
        return self.process.log_text()

    def api(self, method: str, path: str) -> tuple[int, dict | str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin}{path}", method=method, data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read().decode()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def is_leader(self) -> bool:
        if not self.process.running():
            return False
        try:
            status, body = self.api("GET", "/status")
        except OSError:
            return False
        return status == 200 and body["active_manager"]["leader"]


@dataclass
class Fleet:
    root: Path
    binary: Path
    servers: dict[str, lab.Dovecot]
    etcd: lab.etcd.Etcd
    nodes: list[Node] = field(default_factory=list)

    def active(self, database: str) -> tuple[str, int]:
        """The database's active server and epoch, as etcd says."""
        raw = self.etcd.get(f"/mailfront/databases/{database}")
        assert raw is not None, f"{database} is not in etcd"
        raw = raw.strip()
        if raw.startswith("{"):
            value = json.loads(raw)
            return value["active"], value.get("epoch", 0)
        return raw, 0

    def moved_lines(self, database: str, after: dict[str, int] | None = None) -> list[str]:
        """Every node's `database moved` lines for `database` (since the offsets in `after`)."""
        lines = []
        for node in self.nodes:
            text = node.log()[(after or {}).get(node.name, 0):]
            lines += [l for l in text.splitlines() if "database moved" in l and f"database={database} " in l]
        return lines

    def offsets(self) -> dict[str, int]:
        return {node.name: len(node.log()) for node in self.nodes}

    def leader(self) -> Node:
        return wait_until(lambda: next((n for n in self.nodes if n.is_leader()), None), 15, "a leader")

    def follower(self) -> Node:
        leader = self.leader()
        return next(n for n in self.nodes if n is not leader and n.process.running())


def kill_server(*servers: lab.Dovecot) -> None:
    """A crash of each server, all at once: SIGKILL to every process, again until none is left."""
    def remaining():
        pids = [pid for server in servers for pid in server.processes()]
        for server in servers:
            server.signal(signal.SIGKILL)
        return not pids
    wait_until(remaining, 10, "the servers dead")


def imap_login(port: int, user: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=15)
    client.login(user, PASSWORD)
    return client


def backend_of(node: Node, user: str, after: int = 0) -> str | None:
    """The backend of `user`'s last `session proxied` line on `node`."""
    lines = [l for l in node.log()[after:].splitlines() if "session proxied" in l and f"user={user}" in l]
    found = re.search(r"backend=(\S+)", lines[-1]) if lines else None
    return found.group(1) if found else None


def node_settings(fleet: Fleet, name: str, imap: int, pop3: int, submission: int, admin: int,
                  cert: Path, key: Path) -> dict:
    ports = {s.name: s.ports for s in fleet.servers.values()}
    return lab.node_config(
        node=name,
        servers=[lab.ServerEntry(s, ports[s]) for s in SERVERS],
        users_file=fleet.root / "users.toml",
        locations_file=fleet.root / "unused-locations.toml",
        cert=cert,
        key=key,
        master_password_file=fleet.root / "secrets" / "master.pw",
        databases={db: copies for db, (_, copies) in DATABASES.items() if copies},
        location=fleet.etcd.location_config(timeout="1s"),
        listeners=[
            lab.listener(None, "imap", imap, "none", allow_plaintext_auth=True),
            lab.listener(None, "pop3", pop3, "none", allow_plaintext_auth=True),
            lab.listener(None, "submission", submission, "none", allow_plaintext_auth=True),
        ],
        sections={
            "timeouts": {"auth_failure_delay": "100ms", "backend_connect": "3s", "backend_login": "3s"},
            "admin": {"address": f"127.0.0.1:{admin}"},
            "health": {"interval": f"{int(INTERVAL * 1000)}ms", "timeout": "250ms", "fall": FALL, "rise": 2},
            "active_manager": {"lease_ttl": f"{int(TTL)}s", "hold_down": "60s"},
        },
    )


def start_node(fleet: Fleet, node: Node) -> None:
    node.process = lab.Mailfront(fleet.binary, node.config, fleet.root / f"{node.name}.log")
    node.process.start()


@pytest.fixture(scope="module")
def fleet(lab_env):
    lab.ensure_installed("etcd")
    root = lab.reset_dir(lab_env.root / "fleet")
    servers = {name: lab.Dovecot(root, name, lab.Ports(*(lab.free_port() for _ in range(5))), USERS)
               for name in SERVERS}
    etcd = lab.etcd.Etcd(root / "etcd", lab.free_port(), lab.free_port())
    env = Fleet(root, lab_env.binary, servers, etcd)
    cert, key = lab.make_certificate(root / "tls")
    lab.master_password(root)
    lab.write_users(root / "users.toml", USERS, lab_env.binary)
    lab.write_locations(root / "unused-locations.toml", {})
    try:
        etcd.start()
        for server in servers.values():
            server.start()
        reset_records(env)
        for i in range(1, 4):
            ports = [lab.free_port() for _ in range(4)]
            settings = node_settings(env, f"fleet{i}", *ports, cert, key)
            config = lab.write_toml(root / f"fleet{i}.toml", settings)
            node = Node(f"fleet{i}", None, *ports, config)  # type: ignore[arg-type]
            start_node(env, node)
            env.nodes.append(node)
        env.leader()
        yield env
    finally:
        for node in env.nodes:
            if node.process:
                node.process.stop()
        for server in servers.values():
            server.signal(signal.SIGCONT)
            server.stop()
        etcd.resume() if etcd.running() else None
        etcd.stop()


def reset_records(fleet: Fleet) -> None:
    """Every database back on its first server with no history; no server in maintenance."""
    fleet.etcd.etcdctl("del", "--prefix", "/mailfront/servers/")
    for database, (server, _) in DATABASES.items():
        fleet.etcd.put_active(database, server)


@pytest.fixture
def healthy(fleet):
    """The fleet as every test finds it: all servers, nodes and etcd up, databases at home."""
    yield fleet
    if not fleet.etcd.running():
        fleet.etcd.start()
    fleet.etcd.resume()
    for server in fleet.servers.values():
        if server.pid() and lab.alive(server.pid()):
            server.signal(signal.SIGCONT)
        else:
            server.start()
    for node in fleet.nodes:
        if not node.process.running():
            start_node(fleet, node)
    fleet.etcd.etcdctl("del", "--prefix", "/mailfront/servers/")

    def all_up():
        for node in fleet.nodes:
            status, body = node.api("GET", "/servers")
            if status != 200 or any(s["maintenance"] or any(state != "up" for _, state in s["endpoints"])
                                    for s in body["servers"]):
                return False
        return True
    # Only once every node sees every server up may the databases go home: a leader that still
    # saw one down would move its databases away again at once.
    wait_until(all_up, 15, "every node sees every server up")
    reset_records(fleet)

    def at_home():
        for node in fleet.nodes:
            status, body = node.api("GET", "/databases")
            if status != 200 or any(d["active"] != DATABASES[d["database"]][0] or d["epoch"] != 0
                                    for d in body["databases"]):
                return False
        return True
    wait_until(at_home, 15, "every database at home")
    fleet.leader()


def test_a_dead_server_fails_over_by_itself(healthy):
    fleet = healthy
    entry = fleet.nodes[0]
    session = imap_login(entry.imap, "alice@example.com")
    session.select("INBOX")
    before = fleet.offsets()
    killed_at = time.monotonic()
    kill_server(fleet.servers["amx1"])
    # DB01 goes to its best copy (same site, fewest databases, then preference: amx3 hosts DB04,
    # amx2 hosts DB02 — a tie, preference decides), DB03 to its only other copy; DB04 stays.
    wait_until(lambda: fleet.active("DB01")[0] != "amx1" and fleet.active("DB03")[0] != "amx1", DETECT + 5,
               "DB01 and DB03 moved")
    written_after = time.monotonic() - killed_at
    assert fleet.active("DB01") == ("amx2", 1)
    assert fleet.active("DB03") == ("amx3", 1)
    # Exactly one node wrote each move: one log line in the whole array.
    assert len(fleet.moved_lines("DB01", before)) == 1, fleet.moved_lines("DB01", before)
    assert "by=failover" in fleet.moved_lines("DB01", before)[0]
    # The live session on the dead server is closed; alice logs in again and reads her mail.
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        for _ in range(50):
            session.noop()
            time.sleep(0.1)
    offset = len(entry.log())
    client = wait_until(lambda: _try_login(entry.imap, "alice@example.com"), 5, "alice logs in again")
    assert client.select("INBOX")[0] == "OK"
    client.logout()
    assert backend_of(entry, "alice@example.com", offset) == "amx2"
    assert written_after < DETECT + 3, f"moved {written_after:.2f}s after the kill"
    print(f"\nfailover: DB01 written to amx2 {written_after:.2f}s after amx1 was killed "
          f"(probes every {INTERVAL}s, fall {FALL})")
    # Failback is never automatic: amx1 comes back, DB01 stays on amx2.
    fleet.servers["amx1"].start()
    wait_until(lambda: all(_server_up(n, "amx1") for n in fleet.nodes), 10, "amx1 up again")
    time.sleep(INTERVAL * 4)  # several rounds: none may move DB01 back
    assert fleet.active("DB01") == ("amx2", 1)


def _try_login(port: int, user: str):
    try:
        return imap_login(port, user)
    except (imaplib.IMAP4.error, OSError):
        return None


def _server_up(node: Node, server: str) -> bool:
    status, body = node.api("GET", "/servers")
    return status == 200 and any(s["server"] == server and all(st == "up" for _, st in s["endpoints"])
                                 for s in body["servers"])


def set_copies(fleet: Fleet, database: str, copies: list[str] | None) -> None:
    """Rewrites every node's `[[database]]` entry for `database` and reloads it."""
    for node in fleet.nodes:
        settings = tomllib.loads(node.config.read_text())
        entries = [d for d in settings.get("database", []) if d["name"] != database]
        if copies:
            entries.append({"name": database, "copies": copies})
        settings["database"] = entries
        lab.write_toml(node.config, settings)
        status, body = node.api("POST", "/reload")
        assert status == 200, body


def test_a_database_without_copies_stays_says_why_once_and_moves_once_copies_are_reloaded(healthy):
    fleet = healthy
    leader = fleet.leader()
    offset = len(leader.log())
    kill_server(fleet.servers["amx3"])
    leader.process.wait_ready(lambda: "DB04 stays on its down server" in leader.log()[offset:], DETECT + 5)
    assert fleet.active("DB04") == ("amx3", 0)
    assert "no copies are configured" in leader.log()[offset:]
    # Its users hear a prompt temporary error: the server is known down, no connect timeout.
    started = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        imap_login(fleet.nodes[1].imap, "dan@example.com")
    assert time.monotonic() - started < 1.0
    # Said once, not every round.
    time.sleep(INTERVAL * 5)
    assert leader.log()[offset:].count("DB04 stays on its down server") == 1
    # The operator configures copies and reloads: no restart, the next round moves it.
    try:
        set_copies(fleet, "DB04", ["amx3", "amx1", "amx2"])
        wait_until(lambda: fleet.active("DB04")[0] != "amx3", DETECT + 5, "DB04 moved after the reload")
        assert fleet.active("DB04") == ("amx2", 1)  # amx2 hosts fewer databases than amx1
        leader.process.wait_ready(lambda: "nothing is held back any more" in leader.log()[offset:], 5)
    finally:
        set_copies(fleet, "DB04", None)


def test_a_killed_leader_is_replaced_within_the_lease_and_the_new_one_fails_over(healthy):
    fleet = healthy
    old = fleet.leader()
    old.process.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    new = wait_until(lambda: next((n for n in fleet.nodes if n is not old and n.is_leader()), None),
                     TTL + 5, "a new leader")
    took = time.monotonic() - killed_at
    assert took < TTL + 2, f"a new leader after {took:.2f}s"
    before = fleet.offsets()
    kill_server(fleet.servers["amx2"])
    wait_until(lambda: fleet.active("DB02")[0] != "amx2", DETECT + 5, "DB02 moved")
    lines = fleet.moved_lines("DB02", before)
    assert len(lines) == 1 and f"node={new.name}" in lines[0], lines


def test_without_etcd_nothing_moves_and_logins_go_on(healthy):
    fleet = healthy
    fleet.etcd.pause()  # SIGSTOP: connections hang, nothing answers
    kill_server(fleet.servers["amx2"])
    # Probes still work; routing follows the last map: alice (amx1) logs in, bob (amx2) is told
    # to come back later at once.
    node = fleet.nodes[0]
    wait_until(lambda: _refused_fast(node, "bob@example.com"), DETECT + 5, "bob refused at once")
    client = imap_login(node.imap, "alice@example.com")
    client.logout()
    time.sleep(TTL + 1)  # a lease's time: every leader has stopped acting
    assert not any(n.is_leader() for n in fleet.nodes)
    fleet.etcd.resume()
    # etcd back: a leader again, and DB02 moves.
    wait_until(lambda: fleet.active("DB02")[0] != "amx2", TTL + DETECT + 10, "DB02 moved once etcd is back")
    assert fleet.active("DB02") == ("amx3", 1)


def _refused_fast(node: Node, user: str) -> bool:
    started = time.monotonic()
    try:
        imap_login(node.imap, user).logout()
        return False
    except imaplib.IMAP4.error as error:
        return "UNAVAILABLE" in str(error) and time.monotonic() - started < 1.0


def test_more_than_half_down_moves_nothing_and_says_why(healthy):
    fleet = healthy
    leader = fleet.leader()
    offset = len(leader.log())
    kill_server(fleet.servers["amx1"], fleet.servers["amx2"])
    leader.process.wait_ready(lambda: "2 of 3 servers look down" in leader.log()[offset:], DETECT + 5)
    time.sleep(INTERVAL * 4)
    assert fleet.active("DB01") == ("amx1", 0)
    assert fleet.active("DB02") == ("amx2", 0)


def test_an_operator_move_racing_a_failover_never_loses_an_update(healthy):
    fleet = healthy
    follower = fleet.follower()
    before = fleet.offsets()
    outcome: dict[str, tuple[int, object]] = {}

    def operator():
        outcome["move"] = follower.api("POST", "/databases/move?database=DB01&server=amx3")

    racer = threading.Thread(target=operator)
    kill_server(fleet.servers["amx1"])
    # Fire the operator's move as the probes are about to call amx1 down.
    time.sleep(INTERVAL * (FALL - 1))
    racer.start()
    racer.join(20)
    wait_until(lambda: fleet.active("DB01")[0] != "amx1", DETECT + 5, "DB01 moved")
    time.sleep(INTERVAL * 4)
    status, body = outcome["move"]
    failovers = fleet.moved_lines("DB01", before)
    written = [l for l in failovers if "by=failover" in l]
    operator_won = status == 200
    assert status in (200, 409), (status, body)
    if status == 409:
        assert "changed meanwhile" in body["error"]
    # No lost update: the epoch counts every write that said it was made, and the active server
    # is the last writer's.
    active, epoch = fleet.active("DB01")
    assert epoch == len(written) + int(operator_won), (epoch, written, outcome)
    if operator_won and body["epoch"] == epoch:
        assert active == "amx3"


def test_hold_maintenance_and_evacuate_with_live_sessions(healthy):
    fleet = healthy
    node = fleet.nodes[1]
    # Hold: DB02 stays on its dead server until the hold is lifted.
    assert node.api("POST", "/databases/hold?database=DB02&on=yes")[0] == 200
    kill_server(fleet.servers["amx2"])
    wait_until(lambda: _refused_fast(node, "bob@example.com"), DETECT + 5, "bob refused")
    time.sleep(INTERVAL * 4)
    assert fleet.active("DB02")[0] == "amx2"
    assert node.api("POST", "/databases/hold?database=DB02&on=no")[0] == 200
    wait_until(lambda: fleet.active("DB02")[0] == "amx3", DETECT + 5, "DB02 moved once the hold is lifted")
    fleet.servers["amx2"].start()
    wait_until(lambda: all(_server_up(n, "amx2") for n in fleet.nodes), 10, "amx2 up again")

    # Evacuate amx1 under live IMAP, POP3 and submission sessions of its users.
    imap = imap_login(node.imap, "alice@example.com")
    imap.select("INBOX")
    pop = poplib.POP3("127.0.0.1", node.pop3, timeout=15)
    pop.user("carol@example.com")
    pop.pass_(PASSWORD)
    submission = smtplib.SMTP("127.0.0.1", node.submission, timeout=15)
    submission.login("alice@example.com", PASSWORD)
    offset = len(node.log())
    status, report = fleet.nodes[2].api("POST", "/servers/evacuate?server=amx1")
    assert status == 200, report
    assert sorted(m["database"] for m in report["moved"]) == ["DB01", "DB03"], report
    assert report["stayed"] == []
    assert fleet.active("DB01")[0] != "amx1" and fleet.active("DB03")[0] != "amx1"
    # Each session is closed, IMAP with its goodbye.
    bye = wait_until(lambda: _untagged_bye(imap), 10, "IMAP goodbye")
    assert b"UNAVAILABLE" in bye
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        for _ in range(50):
            pop.noop()
            time.sleep(0.1)
    with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
        for _ in range(50):
            submission.noop()
            time.sleep(0.1)
    # The next logins land on the new servers; amx1 is in maintenance and gets nothing.
    imap_login(node.imap, "alice@example.com").logout()
    assert backend_of(node, "alice@example.com", offset) == fleet.active("DB01")[0]
    servers = {s["server"]: s for s in node.api("GET", "/servers")[1]["servers"]}
    assert servers["amx1"]["maintenance"] and servers["amx1"]["databases"] == []
    refused = node.api("POST", "/databases/move?database=DB01&server=amx1")
    assert refused[0] == 422 and "maintenance" in refused[1]["error"], refused
    assert node.api("POST", "/servers/maintenance?server=amx1&on=no")[0] == 200
    databases = {d["database"]: d for d in node.api("GET", "/databases")[1]["databases"]}
    assert databases["DB01"]["last_move"][0] == "evacuation"


def _untagged_bye(client: imaplib.IMAP4) -> bytes | None:
    try:
        client.noop()
    except imaplib.IMAP4.abort as error:
        return str(error).encode()
    for line in client.untagged_responses.get("BYE", []):
        return line
    return None


def test_a_silent_server_counts_as_down_and_a_flapping_one_is_not_bounced(healthy):
    fleet = healthy
    before = fleet.offsets()
    fleet.servers["amx1"].signal(signal.SIGSTOP)  # up, but its greeting never comes
    wait_until(lambda: fleet.active("DB01")[0] == "amx2", DETECT + 5, "DB01 moved off the silent server")
    fleet.servers["amx1"].signal(signal.SIGCONT)
    wait_until(lambda: all(_server_up(n, "amx1") for n in fleet.nodes), 10, "amx1 answers again")
    # DB01's new server now fails too: within the hold-down, DB01 is not moved again.
    leader = fleet.leader()
    offset = len(leader.log())
    kill_server(fleet.servers["amx2"])
    leader.process.wait_ready(lambda: "DB01 stays on its down server" in leader.log()[offset:], DETECT + 5)
    assert "hold-down" in leader.log()[offset:]
    assert fleet.active("DB01") == ("amx2", 1)
    assert len(fleet.moved_lines("DB01", before)) == 1


def test_health_pages_per_protocol(healthy):
    fleet = healthy
    node = fleet.nodes[0]
    status, body = node.api("GET", "/health/imap")
    assert status == 200 and body["status"] == "ok" and body["servers_down"] == []
    assert node.api("GET", "/health/http")[0] == 404  # no HTTPS listener on this node
    assert node.api("GET", "/health/gopher")[0] == 404
    # A mailbox server down is not the node's fault: still healthy, and said.
    kill_server(fleet.servers["amx3"])
    wait_until(lambda: node.api("GET", "/health/pop3")[1]["servers_down"] == ["amx3"], DETECT + 5,
               "amx3 reported down")
    assert node.api("GET", "/health/pop3")[0] == 200
    assert node.api("POST", "/drain")[0] == 200
    status, body = node.api("GET", "/health/submission")
    assert status == 503 and body["status"] == "draining"
    assert node.api("POST", "/undrain")[0] == 200


def test_metrics_show_the_probes_and_the_leader(healthy):
    fleet = healthy
    leader = fleet.leader()
    _, text = leader.api("GET", "/metrics")
    for server in SERVERS:
        for protocol in ("imap", "pop3", "submission", "smtp"):
            assert f'mailfront_backend_up{{server="{server}",protocol="{protocol}"}} 1' in text, (server, protocol)
    assert "mailfront_active_manager_leader 1" in text
    assert "mailfront_probe_seconds_bucket" in text


def test_admin_command_line(healthy):
    fleet = healthy
    node = fleet.nodes[0]
    run = lambda *args: subprocess.run([str(fleet.binary), "admin", "--config", str(node.config), *args],
                                       capture_output=True, text=True, timeout=30)
    databases = json.loads(run("databases").stdout)
    assert {d["database"] for d in databases["databases"]} == set(DATABASES)
    moved = run("move", "DB02", "amx1")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["to"] == "amx1"
    assert fleet.active("DB02") == ("amx1", 1)
    refused = run("move", "DB03", "amx2")
    assert refused.returncode != 0 and "holds no copy" in refused.stderr, refused.stderr
    # Not even forced: amx2 has none of DB03's mail.
    forced = run("move", "DB03", "amx2", "--force")
    assert forced.returncode != 0 and "holds no copy" in forced.stderr, forced.stderr
    assert fleet.active("DB03") == ("amx1", 0)
    assert run("maintenance", "amx3", "on").returncode == 0
    servers = {s["server"]: s for s in json.loads(run("servers").stdout)["servers"]}
    assert servers["amx3"]["maintenance"]
    refused = run("move", "DB03", "amx3")
    assert refused.returncode != 0 and "maintenance" in refused.stderr, refused.stderr
    forced = run("move", "DB03", "amx3", "--force")
    assert forced.returncode == 0, forced.stderr
    assert fleet.active("DB03") == ("amx3", 1)
    assert run("hold", "DB01", "on").returncode == 0
    assert json.loads(run("databases").stdout)["databases"][0]["hold"]
