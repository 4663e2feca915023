"""A node in a two-site deployment: mbx2 is in site `east`, which has its own URL for the calendar
(the seeds' ExternalURL). Browser apps for east mailboxes are redirected there — unless the
client already used that URL (one namespace for both sites: proxied). Also: an upgraded
connection (WebSocket-style) passes through to the backend."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from conftest import client_tls, lab, node_settings
from test_http import forms_login, request

EAST_URL = "https://east.example.com/calendar/"


class EchoUpgradeServer:
    """An HTTP backend that switches protocols on request and then echoes bytes back."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        self.requests.append(head)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(data)


@pytest.fixture(scope="module")
def sites_node(lab_env):
    echo, echo2 = EchoUpgradeServer(), EchoUpgradeServer()
    port = lab.free_port()
    settings = node_settings(lab_env, "sites1", [lab.listener(None, "https", port, "implicit")])
    # mbx2 moves to site east; an "echo" server hosts DB07 for this node only.
    [mbx2] = [server for server in settings["server"] if server["name"] == "mbx2"]
    assert mbx2["site"] == "lab"
    mbx2["site"] = "east"
    locations = lab_env.root / "sites-locations.toml"
    active = lab.read_locations(lab_env.locations)
    active["DB07"] = "echo"
    lab.write_locations(locations, active)
    settings["location"]["path"] = locations
    for name, server in (("echo", echo), ("echo2", echo2)):
        settings["server"].append({"name": name, "site": "lab", "version": "15.1", "host": "127.0.0.1",
                                   "http": f"http://127.0.0.1:{server.port}/", "login": {"method": "passthrough"}})
    settings["reload"] = {"interval": "100ms"}
    settings["site"] = [
        {"name": "lab", "external_urls": {"calendar": "https://mail.example.com/calendar/"}},
        {"name": "east", "external_urls": {"calendar": EAST_URL}},
    ]
    config = lab.write_toml(lab_env.root / "sites.toml", settings)
    node = lab.Mailfront(lab_env.binary, config, lab_env.root / "sites.log")
    node.start()
    yield {"node": node, "port": port, "echo": echo, "echo2": echo2, "locations": locations, "active": active}
    node.stop()


def test_mailbox_in_another_site_is_redirected_to_its_url(sites_node):
    _, session = forms_login(sites_node["port"], "bob@example.com")
    response, _ = request(sites_node["port"], "GET", "/calendar/", {"Cookie": f"mailfront_session={session}"})
    assert response.status == 302 and response.getheader("Location") == EAST_URL


def test_single_namespace_is_proxied(sites_node):
    _, session = forms_login(sites_node["port"], "bob@example.com")
    # The client already uses east's URL: no redirect loop, the request is proxied to mbx2.
    response, _ = request(sites_node["port"], "GET", "/calendar/.web/",
                          {"Cookie": f"mailfront_session={session}", "Host": "east.example.com"})
    assert response.status == 200
    assert "backend=mbx2" in [l for l in sites_node["node"].log_since_start().splitlines() if "http request" in l][-1]


def test_same_site_mailbox_is_proxied(sites_node):
    _, session = forms_login(sites_node["port"], "alice@example.com")
    response, _ = request(sites_node["port"], "GET", "/calendar/.web/", {"Cookie": f"mailfront_session={session}"})
    assert response.status == 200


def upgraded(port: int) -> ssl.SSLSocket:
    """heidi's upgraded (WebSocket-style) connection through mailfront, after its 101."""
    import base64

    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    context = client_tls()
    context.set_alpn_protocols(["http/1.1"])
    tls = context.wrap_socket(raw)
    auth = base64.b64encode(f"heidi@example.com:{lab.DEMO_PASSWORD}".encode()).decode()
    tls.sendall(
        f"GET /dav/socket HTTP/1.1\r\nHost: mail.example.com\r\nAuthorization: Basic {auth}\r\n"
        f"Connection: Upgrade\r\nUpgrade: echo\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += tls.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return tls


def test_upgraded_connections_pass_through(sites_node):
    # heidi's database is active on the echo server for this node.
    tls = upgraded(sites_node["port"])
    tls.sendall(b"ping over the upgraded connection")
    echoed = b""
    while len(echoed) < len(b"ping over the upgraded connection"):
        echoed += tls.recv(4096)
    assert echoed == b"ping over the upgraded connection"
    tls.close()
    forwarded = sites_node["echo"].requests[-1].decode()
    assert "upgrade: echo" in forwarded.lower() and "x-remote-user: heidi@example.com" in forwarded.lower()
    assert "authorization" not in forwarded.lower()


def test_route_explains_http_requests_without_a_password(lab_env, sites_node):
    """`mailfront route --protocol http --service …`: the same decision the front door makes,
    for the URL the client would use (default: this site's external URL for the service)."""
    import subprocess

    def route(*args: str) -> str:
        done = subprocess.run([str(lab_env.binary), "route", "--config", str(sites_node["node"].config), *args],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = route("bob@example.com", "--protocol", "http", "--service", "calendar")
    assert "service:  calendar (browser app) at https://mail.example.com/calendar/" in out, out
    assert f"decision: redirect to {EAST_URL}" in out, out
    out = route("bob@example.com", "--protocol", "http", "--service", "calendar", "--url", EAST_URL + "x/")
    assert "decision: proxy to mbx2" in out, out
    assert "decision: proxy to mbx1" in route("alice@example.com", "--protocol", "http", "--service", "calendar")
    refused = subprocess.run([str(lab_env.binary), "route", "--config", str(sites_node["node"].config),
                              "bob@example.com", "--protocol", "http"], capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "--service" in refused.stderr and "calendar" in refused.stderr


def test_an_upgraded_connection_is_closed_when_its_database_moves_and_the_next_goes_to_the_new_server(sites_node):
    """HTTP follows failover: heidi's tunnel to `echo` closes when DB07 moves to `echo2`, and her
    next upgrade is made there."""
    import time
    tls = upgraded(sites_node["port"])
    tls.sendall(b"before")
    assert tls.recv(4096) == b"before"
    before = len(sites_node["echo2"].requests)
    lab.write_locations(sites_node["locations"], sites_node["active"] | {"DB07": "echo2"})
    try:
        tls.settimeout(10)
        deadline = time.monotonic() + 10
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                closed = tls.recv(4096) == b""
            except (ConnectionResetError, ssl.SSLError):
                closed = True
        assert closed, "the tunnel to the previous server stayed open"
        log = sites_node["node"].log_since_start()
        assert "failover: closing an upgraded connection" in log and "database=DB07" in log
        moved = upgraded(sites_node["port"])
        moved.sendall(b"after")
        assert moved.recv(4096) == b"after"
        moved.close()
        assert len(sites_node["echo2"].requests) == before + 1
    finally:
        lab.write_locations(sites_node["locations"], sites_node["active"])
