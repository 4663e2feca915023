"""An array of three mailfront nodes behind a real HAProxy (TCP mode, PROXY protocol v2, health
checks on each node's admin `/health` and HTTPS `healthcheck.htm`): no session affinity needed.
Logins spread over every node and carry the real client address to mailfront and to Dovecot; a
killed node costs only its own sessions; a drained node gets no new sessions while its live ones
go on; a forms-login cookie from one node opens every other. Real Dovecot, real Radicale, real
HAProxy, Python's imaplib and http.client."""

from __future__ import annotations

import http.client
import imaplib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest

import lab
import lab.haproxy
from conftest import USERS, SourcedIMAP, admin_call, client_tls, start_node, wait_until

PASSWORDS = {u.address: u.password for u in USERS}
NODES = ("arr1", "arr2", "arr3")
CLIENT = "127.0.0.2"  # the clients' own address, distinct from HAProxy's 127.0.0.1


@dataclass
class Node:
    name: str
    mailfront: lab.Mailfront
    imap: int  # IMAP, PROXY protocol (HAProxy's side)
    https: int  # HTTPS, PROXY protocol (HAProxy's side)
    direct: int  # HTTPS without PROXY protocol (clients straight to the node)
    admin: int


@dataclass
class Array:
    nodes: dict[str, Node]
    haproxy: lab.haproxy.HAProxy
    imap: int  # HAProxy's IMAP frontend
    https: int  # HAProxy's HTTPS frontend (TCP: TLS ends on the nodes)


@pytest.fixture(scope="module")
def array(lab_env):
    nodes: dict[str, Node] = {}
    haproxy = None
    try:
        for name in NODES:
            imap, https, direct, admin = (lab.free_port() for _ in range(4))
            mailfront = start_node(
                lab_env, name,
                [{"name": "imap-lb", "protocol": "imap", "address": f"127.0.0.1:{imap}", "tls": "none",
                  "allow_plaintext_auth": True, "proxy_protocol": True},
                 {"name": "https-lb", "protocol": "https", "address": f"127.0.0.1:{https}", "tls": "implicit",
                  "proxy_protocol": True},
                 {"name": "https", "protocol": "https", "address": f"127.0.0.1:{direct}", "tls": "implicit"}],
                {"proxy_protocol": {"trusted": ["127.0.0.1/32"]}, "admin": {"address": f"127.0.0.1:{admin}"}})
            nodes[name] = Node(name, mailfront, imap, https, direct, admin)
        imap_front, https_front = lab.free_port(), lab.free_port()
        haproxy = lab.haproxy.HAProxy(lab_env.root / "haproxy", [
            # IMAP: checked on the admin listener's /health (plain HTTP, no PROXY header).
            lab.haproxy.Service("imap", imap_front, servers=[
                lab.haproxy.Server(n.name, n.imap, check_port=n.admin) for n in nodes.values()]),
            # HTTPS: checked on the service's own health page, over TLS, with a PROXY v2 header
            # (LOCAL) as the listener requires.
            lab.haproxy.Service("https", https_front, check_path="/calendar/healthcheck.htm", check_ssl=True,
                                servers=[lab.haproxy.Server(n.name, n.https) for n in nodes.values()]),
        ])
        haproxy.start()
        for name in NODES:
            haproxy.wait_for_status("imap", name, "UP")
            haproxy.wait_for_status("https", name, "UP")
        yield Array(nodes, haproxy, imap_front, https_front)
    finally:
        if haproxy is not None:
            haproxy.stop()
        for node in nodes.values():
            node.mailfront.stop()


# --- Helpers ----------------------------------------------------------------------------------


class ArrayIMAP(SourcedIMAP):
    """imaplib from the clients' address, knowing which node greeted it."""

    def __init__(self, port: int, source: str = CLIENT):
        super().__init__(port, source)

    @property
    def node(self) -> str:
        """The node that greeted this connection (`* OK … arr2 ready.`)."""
        match = re.search(rb"\b(arr\d) ready\.", self.welcome)
        assert match, self.welcome
        return match.group(1).decode()

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"


def login(port: int, user: str = "alice@example.com") -> ArrayIMAP:
    client = ArrayIMAP(port)
    client.login(user, PASSWORDS[user])
    assert client.select("INBOX")[0] == "OK"
    return client


def logout(client: imaplib.IMAP4) -> None:
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        pass


def sessions(node: Node, query: str = "?protocol=imap") -> list[dict]:
    status, body = admin_call(node.admin, "GET", f"/sessions{query}")
    assert status == 200, body
    return json.loads(body)["sessions"]


def https_request(port: int, path: str, headers: dict | None = None, method: str = "GET",
                  body: str | None = None, source: str = "127.0.0.1"):
    """One request on a new connection: (response, body, the client's own address)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_tls(), timeout=20,
                                       source_address=(source, 0))
    try:
        conn.connect()
        host, local_port = conn.sock.getsockname()[:2]
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response, response.read(), f"{host}:{local_port}"
    finally:
        conn.close()


def forms_login(port: int, user: str) -> str:
    """Logs in through the login form (as test_http.py does); the session cookie's value."""
    def cookies(response) -> dict[str, str]:
        return {v.split("=", 1)[0]: v.split(";", 1)[0].split("=", 1)[1]
                for v in response.headers.get_all("Set-Cookie") or []}

    page, html, _ = https_request(port, "/login?return=/calendar/")
    assert page.status == 200
    csrf = cookies(page)["mailfront_csrf"]
    assert f'name="csrf" value="{csrf}"' in html.decode()
    response, _, _ = https_request(
        port, "/login", {"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"mailfront_csrf={csrf}"},
        method="POST", body=f"user={user}&password={PASSWORDS[user]}&csrf={csrf}&return=/calendar/")
    assert response.status == 303 and response.getheader("Location") == "/calendar/"
    return cookies(response)["mailfront_session"]


def dovecot_logins(lab_env, server: str, offset: int, user: str) -> list[str]:
    """Dovecot's `Login:` lines for `user` written after `offset`."""
    text = (lab_env.servers[server].dir / "dovecot.log").read_text(errors="replace")[offset:]
    return [line for line in text.splitlines() if "imap-login: Info: Login:" in line and f"user=<{user}>" in line]


def dovecot_log_size(lab_env, server: str) -> int:
    return (lab_env.servers[server].dir / "dovecot.log").stat().st_size


# --- Spreading and the real client --------------------------------------------------------------


def test_logins_spread_over_every_node_with_the_real_client(lab_env, array):
    offsets = {server: dovecot_log_size(lab_env, server) for server in ("mbx1", "mbx2")}
    clients = []
    try:
        for i in range(6):
            user = ("alice@example.com", "bob@example.com")[i % 2]
            clients.append((user, login(array.imap, user)))
        # Each client appears exactly once, on the node that greeted it, under its own address
        # and port: the PROXY v2 header carried them, not HAProxy's 127.0.0.1.
        ours = {c.address: (user, c.node) for user, c in clients}
        assert all(address.startswith(f"{CLIENT}:") for address in ours)

        def listed():
            found: dict[str, list] = {}
            for node in array.nodes.values():
                for s in sessions(node):
                    if s["client"] in ours:
                        found.setdefault(s["client"], []).append((s["user"], node.name))
            return found if len(found) == len(ours) else None

        found = wait_until(listed, what="every session listed by its node")
        assert found == {address: [where] for address, where in ours.items()}
        assert {node for _, node in ours.values()} == set(NODES), f"not spread over every node: {ours}"
        # Dovecot was told too (IMAP ID x-originating-ip from mailfront): every login it saw
        # since, for these users, names the client's address.
        for server, user in (("mbx1", "alice@example.com"), ("mbx2", "bob@example.com")):
            lines = wait_until(lambda: len(dovecot_logins(lab_env, server, offsets[server], user)) >= 3
                               and dovecot_logins(lab_env, server, offsets[server], user),
                               what=f"{server} logging three logins of {user}")
            assert len(lines) == 3 and all(f"rip={CLIENT}," in line for line in lines), lines
    finally:
        for _, client in clients:
            logout(client)


# --- The shared cookie --------------------------------------------------------------------------


def test_forms_cookie_from_one_node_opens_every_other(lab_env, array):
    n1, n2, n3 = (array.nodes[name] for name in NODES)
    session = forms_login(n1.direct, "alice@example.com")
    cookie = {"Cookie": f"mailfront_session={session}"}
    for node in (n2, n3):
        # Without the cookie a stranger is sent to the login page; with it, straight in.
        response, _, _ = https_request(node.direct, "/calendar/.web/")
        assert response.status == 302 and response.getheader("Location").startswith("/login")
        response, body, _ = https_request(node.direct, "/calendar/.web/", cookie)
        assert response.status == 200 and b"Radicale" in body, (node.name, response.status)
    # Through HAProxy from 127.0.0.2: the requests land on every node (round robin), and each
    # node opens the cookie; each node's log names the real client of the request it served.
    radicale_log = lab_env.radicales["mbx1"].dir / "radicale.log"
    radicale_offset = radicale_log.stat().st_size
    served: dict[str, str] = {}
    for _ in range(6):
        response, body, address = https_request(array.https, "/calendar/.web/", cookie, source=CLIENT)
        assert response.status == 200 and b"Radicale" in body, response.status

        def served_by():
            pattern = f"http request client={address} method=GET path=/calendar/.web/ user=alice@example.com"
            return [n.name for n in array.nodes.values()
                    if pattern in n.mailfront.log_since_start()]

        where = wait_until(served_by, what=f"a node logging the request from {address}")
        assert len(where) == 1, where
        served[address] = where[0]
    assert set(served.values()) == set(NODES), served
    # And mailfront told Radicale who the client was (X-Forwarded-For from the PROXY header).
    assert f"(forwarded for '{CLIENT}')" in radicale_log.read_text(errors="replace")[radicale_offset:]


# --- Maintenance --------------------------------------------------------------------------------


def test_drained_node_gets_no_new_sessions_and_keeps_its_live_ones(array):
    haproxy, drained = array.haproxy, array.nodes["arr2"]
    held = []
    live = None
    try:
        # A live session on arr2 (round robin brings one there within three connections).
        for _ in range(3):
            client = login(array.imap)
            held.append(client)
            if client.node == drained.name:
                live = client
                break
        assert live is not None, [c.node for c in held]
        status, body = admin_call(drained.admin, "POST", "/drain")
        assert status == 200 and json.loads(body)["draining"] is True
        # Both health checks see it: the admin /health and the HTTPS health page.
        haproxy.wait_for_status("imap", drained.name, "DOWN")
        haproxy.wait_for_status("https", drained.name, "DOWN")
        assert live.noop()[0] == "OK"
        fresh = [login(array.imap, "bob@example.com") for _ in range(6)]
        held += fresh
        assert drained.name not in {c.node for c in fresh}
        assert {c.node for c in fresh} == set(NODES) - {drained.name}
        assert [s["client"] for s in sessions(drained)] == [live.address]
        for _ in range(4):
            response, body, _ = https_request(array.https, "/calendar/healthcheck.htm", source=CLIENT)
            assert response.status == 200 and body.decode().strip() != drained.name
        # The live session still works after all that.
        assert live.noop()[0] == "OK"
        assert live.select("INBOX")[0] == "OK"
    finally:
        status, body = admin_call(drained.admin, "POST", "/undrain")
    assert status == 200 and json.loads(body)["draining"] is False
    try:
        haproxy.wait_for_status("imap", drained.name, "UP")
        haproxy.wait_for_status("https", drained.name, "UP")
        back = []
        while len(back) < 6 and drained.name not in {c.node for c in back}:
            back.append(login(array.imap))
        held += back
        assert drained.name in {c.node for c in back}, [c.node for c in back]
        assert live.noop()[0] == "OK"
    finally:
        for client in held:
            logout(client)


# --- A node dies --------------------------------------------------------------------------------


@dataclass
class Attempt:
    started: float
    node: str | None
    error: str | None = None


@dataclass
class Holder:
    """A client with a long session: NOOP every 50 ms; on an error, logs in again (through
    HAProxy) until that works, as a mail client does."""

    port: int
    user: str
    client: ArrayIMAP
    nodes: list[str] = field(default_factory=list)  # the node of each session, in order
    noops: list[int] = field(default_factory=list)  # successful NOOPs of each session
    # (when, node, error): a session's error (when it came), or a failed login again (when it
    # began; node "?")
    errors: list[tuple[float, str, str]] = field(default_factory=list)

    def __post_init__(self):
        self.nodes.append(self.client.node)
        self.noops.append(0)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.client.noop()
                self.noops[-1] += 1
            except (imaplib.IMAP4.error, OSError) as e:
                self.errors.append((time.monotonic(), self.nodes[-1], repr(e)))
                try:
                    self.client.shutdown()
                except OSError:
                    pass
                self.log_in_again(stop)
            stop.wait(0.05)  # pacing, not synchronisation
        logout(self.client)

    def log_in_again(self, stop: threading.Event) -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                self.client = login(self.port, self.user)
            except (imaplib.IMAP4.error, OSError) as e:
                self.errors.append((began, "?", "login again: " + repr(e)))
                stop.wait(0.05)
                continue
            self.nodes.append(self.client.node)
            self.noops.append(0)
            return


def loop_logins(port: int, user: str, attempts: list[Attempt], stop: threading.Event) -> None:
    """Logs in, selects, NOOPs and logs out through HAProxy, over and over."""
    while not stop.is_set():
        attempt = Attempt(time.monotonic(), None)
        try:
            client = ArrayIMAP(port)
            attempt.node = client.node
            client.login(user, PASSWORDS[user])
            assert client.select("INBOX")[0] == "OK"
            assert client.noop()[0] == "OK"
            client.logout()
        except (imaplib.IMAP4.error, OSError, AssertionError) as e:
            attempt.error = repr(e)
        attempts.append(attempt)


def test_killed_node_costs_only_its_own_sessions(lab_env, array):
    haproxy = array.haproxy
    users = ("alice@example.com", "bob@example.com")
    holders = [Holder(array.imap, users[i % 2], login(array.imap, users[i % 2])) for i in range(6)]
    # The victim: a node holding long sessions (round robin gives each node two of six).
    victim = max(NODES, key=lambda n: sum(h.nodes[0] == n for h in holders))
    on_victim = [h for h in holders if h.nodes[0] == victim]
    elsewhere = [h for h in holders if h.nodes[0] != victim]
    assert on_victim and elsewhere
    stop = threading.Event()
    attempts = [[] for _ in range(4)]
    threads = [threading.Thread(target=h.run, args=(stop,), daemon=True) for h in holders]
    threads += [threading.Thread(target=loop_logins, args=(array.imap, users[i % 2], attempts[i], stop), daemon=True)
                for i in range(len(attempts))]
    mailfront = array.nodes[victim].mailfront
    try:
        for thread in threads:
            thread.start()
        # Steady state: every looper is logging in (on every node, between them), every holder
        # is NOOPing.
        wait_until(lambda: all(sum(a.error is None for a in list(runs)) >= 3 for runs in attempts)
                   and {a.node for runs in attempts for a in list(runs)} == set(NODES)
                   and all(h.noops[0] >= 3 for h in holders), what="steady traffic on every node")
        assert not any(a.error for runs in attempts for a in runs), attempts
        killed_at = time.monotonic()
        mailfront.process.kill()  # SIGKILL: no goodbye to anyone
        mailfront.process.wait(10)
        gone_at = time.monotonic()
        haproxy.wait_for_status("imap", victim, "DOWN", timeout=5)
        # Every holder of the dead node notices, logs in again through HAProxy and goes on; every
        # looper keeps going.
        wait_until(lambda: all(len(h.nodes) >= 2 and h.noops[-1] >= 3 for h in on_victim),
                   what="the dead node's clients back in")
        wait_until(lambda: all(sum(a.started > gone_at and a.error is None for a in list(runs)) >= 3
                               for runs in attempts), what="logins going on after the kill")
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
    # Clients of the other nodes never saw an error.
    for h in elsewhere:
        assert h.errors == [] and h.nodes == [h.nodes[0]] and h.noops[0] > 0, (h.nodes, h.errors)
    # Each client of the dead node saw its session end after the kill, logged in again once
    # (a login begun while the process was being torn down may have failed first, like the
    # loopers' below) and goes on on a node that lives.
    for h in on_victim:
        assert h.errors, (h.nodes, h.noops)
        (when, node, _), *again = h.errors
        assert when >= killed_at and node == victim, h.errors
        assert all(began < gone_at and node == "?" for began, node, _ in again), h.errors
        assert len(h.nodes) == 2 and h.nodes[1] != victim and h.noops[-1] >= 3, (h.nodes, h.noops)
    # The loopers: only an attempt under way on the dead node while it died may fail (one in
    # flight, and perhaps one that HAProxy connected as the process was being torn down, before
    # any greeting); every attempt begun after it was gone succeeded, elsewhere.
    for runs in attempts:
        failed = [a for a in runs if a.error]
        assert len(failed) <= 2, failed
        assert all(a.started < gone_at and a.node in (victim, None) for a in failed), failed
        after = [a for a in runs if a.started > gone_at]
        assert after and all(a.error is None and a.node != victim for a in after), after
    # Afterwards every new login succeeds, on the nodes left.
    fresh = [login(array.imap, users[i % 2]) for i in range(6)]
    try:
        assert victim not in {c.node for c in fresh}
        assert {c.node for c in fresh} == set(NODES) - {victim}
    finally:
        for client in fresh:
            logout(client)
    # The node restarts with the same configuration and HAProxy takes it back.
    mailfront.start()
    haproxy.wait_for_status("imap", victim, "UP")
    haproxy.wait_for_status("https", victim, "UP")
    back = []
    try:
        while len(back) < 6 and victim not in {c.node for c in back}:
            back.append(login(array.imap))
        assert victim in {c.node for c in back}, [c.node for c in back]
    finally:
        for client in back:
            logout(client)
