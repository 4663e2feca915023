"""Operating a node: the admin API (health, metrics, status, sessions, kick, drain), the
`mailfront admin` command, login throttling, connection limits, the post-login idle timeout,
the PROXY protocol, hot reload and graceful shutdown. Real Dovecot backends, real clients."""

from __future__ import annotations

import imaplib
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import time

import pytest

import lab
from conftest import (AUTH_FAILURE_DELAY, USERS, admin_call, client_tls, node_config, start_node)

PASSWORDS = {u.address: u.password for u in USERS}


def login(port: int, user: str = "alice@example.com", source: str = "127.0.0.1") -> imaplib.IMAP4:
    client = imap_from(source, port)
    client.login(user, PASSWORDS[user])
    return client


class SourcedIMAP(imaplib.IMAP4):
    """imaplib, connecting from a chosen loopback address (127.0.0.0/8 is all ours)."""

    def __init__(self, source: str, port: int):
        self._source = source
        super().__init__("127.0.0.1", port, timeout=30)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


def imap_from(source: str, port: int) -> imaplib.IMAP4:
    return SourcedIMAP(source, port)


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} never happened within {timeout}s")


def sessions(port: int, query: str = "") -> list[dict]:
    status, body = admin_call(port, "GET", f"/sessions{query}")
    assert status == 200, body
    return json.loads(body)["sessions"]


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"([a-z_]+)(\{[^}]*\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


# --- The admin API ----------------------------------------------------------------------------


def test_health_status_and_metrics(lab_env):
    status, body = admin_call(lab_env.admin_port, "GET", "/health")
    assert (status, body) == (200, "OK test1\n")
    before = admin_call(lab_env.admin_port, "GET", "/metrics")[1]
    client = login(lab_env.plain_port)
    client.select("INBOX")
    client.logout()
    with pytest.raises(imaplib.IMAP4.error):
        imaplib.IMAP4("127.0.0.1", lab_env.plain_port, timeout=15).login("alice@example.com", "wrong")
    status, after = admin_call(lab_env.admin_port, "GET", "/metrics")
    assert status == 200
    assert metric(after, "mailfront_logins_total", protocol="imap", result="ok") == \
        metric(before, "mailfront_logins_total", protocol="imap", result="ok") + 1
    assert metric(after, "mailfront_logins_total", protocol="imap", result="auth_failed") >= \
        metric(before, "mailfront_logins_total", protocol="imap", result="auth_failed") + 1
    assert metric(after, "mailfront_relayed_bytes_total", protocol="imap", direction="backend_to_client") > \
        metric(before, "mailfront_relayed_bytes_total", protocol="imap", direction="backend_to_client")
    assert metric(after, "mailfront_location_loaded") == 1
    assert metric(after, "mailfront_draining") == 0
    assert "mailfront_backend_login_latency_seconds_bucket" in after
    assert "mailfront_directory_latency_seconds_count" in after
    status, body = admin_call(lab_env.admin_port, "GET", "/status")
    state = json.loads(body)
    assert state["node"] == "test1" and state["draining"] is False
    assert state["location"]["loaded"] is True and state["location"]["stale"] is False
    assert state["location"]["databases"] == 8
    assert state["config"]["last_error"] is None


def test_sessions_listed_filtered_and_kicked(lab_env):
    alice = login(lab_env.plain_port)
    bob = login(lab_env.plain_port, "bob@example.com")
    try:
        alice.select("INBOX")
        listed = wait_until(lambda: [s for s in sessions(lab_env.admin_port, "?user=alice@example.com")
                                     if s["protocol"] == "imap"], what="alice's session listed")
        assert {(s["user"], s["database"], s["server"]) for s in listed} == {("alice@example.com", "DB01", "mbx1")}
        assert all(s["client"].startswith("127.0.0.1:") for s in listed)
        assert [s["user"] for s in sessions(lab_env.admin_port, "?server=mbx2&protocol=imap")] == ["bob@example.com"]
        assert sessions(lab_env.admin_port, "?database=DB99") == []
        status, body = admin_call(lab_env.admin_port, "GET", "/sessions?protocol=gopher")
        assert status == 400 and "gopher" in body
        # Kicking needs a filter (or all=yes): a bare kick closes nothing.
        assert admin_call(lab_env.admin_port, "POST", "/sessions/kick")[0] == 400
        status, body = admin_call(lab_env.admin_port, "POST", "/sessions/kick?user=alice@example.com")
        assert status == 200 and json.loads(body)["kicked"] == len(listed)
        # Alice is told goodbye in IMAP; Bob is untouched.
        with pytest.raises(imaplib.IMAP4.abort):
            for _ in range(50):
                alice.noop()
                time.sleep(0.05)
        assert bob.noop()[0] == "OK"
        wait_until(lambda: not sessions(lab_env.admin_port, "?user=alice@example.com&protocol=imap"),
                   what="alice's session gone")
    finally:
        bob.logout()


def test_drain_turns_health_red_and_keeps_sessions(lab_env):
    live = login(lab_env.plain_port)
    live.select("INBOX")
    try:
        status, body = admin_call(lab_env.admin_port, "POST", "/drain")
        assert status == 200 and json.loads(body)["draining"] is True
        assert admin_call(lab_env.admin_port, "GET", "/health")[0] == 503
        # The HTTPS health page that load balancers may check turns red as well.
        context = client_tls()
        import http.client
        https = http.client.HTTPSConnection("127.0.0.1", lab_env.https_port, context=context, timeout=10)
        https.request("GET", "/calendar/healthcheck.htm")
        assert https.getresponse().status == 503
        https.close()
        metrics = admin_call(lab_env.admin_port, "GET", "/metrics")[1]
        assert metric(metrics, "mailfront_draining") == 1
        # The live session goes on; a client that still arrives is served.
        assert live.noop()[0] == "OK"
        late = login(lab_env.plain_port, "bob@example.com")
        late.logout()
    finally:
        status, body = admin_call(lab_env.admin_port, "POST", "/undrain")
    assert status == 200 and json.loads(body)["draining"] is False
    assert admin_call(lab_env.admin_port, "GET", "/health")[0] == 200
    assert live.noop()[0] == "OK"
    live.logout()


def test_admin_command_line(lab_env):
    def admin(*args):
        return subprocess.run([str(lab_env.binary), "admin", "--config", str(lab_env.config), *args],
                              capture_output=True, text=True, timeout=30)

    client = login(lab_env.plain_port, "bob@example.com")
    try:
        wait_until(lambda: sessions(lab_env.admin_port, "?user=bob@example.com&protocol=imap"), what="listed")
        out = admin("sessions", "--user", "bob@example.com", "--protocol", "imap")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["sessions"][0]["server"] == "mbx2"
        out = admin("status")
        assert out.returncode == 0 and json.loads(out.stdout)["node"] == "test1"
        out = admin("kick")
        assert out.returncode == 1 and "HTTP 400" in out.stderr
        out = admin("kick", "--user", "bob@example.com")
        assert out.returncode == 0 and json.loads(out.stdout)["kicked"] >= 1
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.abort, OSError):
            pass
    out = subprocess.run([str(lab_env.binary), "admin", "--address", f"127.0.0.1:{lab.free_port()}", "status"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "admin API at" in out.stderr


def test_token_protects_everything_but_health(lab_env):
    token_file = lab_env.root / "admin.token"
    token_file.write_text("s3cret-token-for-the-admin-api\n")
    port = lab.free_port()
    listener = {"protocol": "imap", "address": f"127.0.0.1:{lab.free_port()}", "tls": "none"}
    node = start_node(lab_env, "tokened", [listener], {"admin": {"address": f"127.0.0.1:{port}",
                                                        "token_file": str(token_file)}})
    try:
        assert admin_call(port, "GET", "/health")[0] == 200
        for method, path in (("GET", "/status"), ("GET", "/metrics"), ("GET", "/sessions"), ("POST", "/drain")):
            assert admin_call(port, method, path)[0] == 401
            assert admin_call(port, method, path, token="wrong-token-wrong-token")[0] == 401
        assert admin_call(port, "GET", "/status", token="s3cret-token-for-the-admin-api")[0] == 200
        out = subprocess.run([str(lab_env.binary), "admin", "--config", str(node.config), "status"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and json.loads(out.stdout)["node"] == "tokened"
    finally:
        node.stop()
    # Exposed beyond loopback without a token: refused at load, naming the key.
    config = node_config(lab_env, "exposed", [listener], {"admin": {"address": "0.0.0.0:0"}})
    out = subprocess.run([str(lab_env.binary), "check", "--config", str(config)], capture_output=True, text=True)
    assert out.returncode == 1 and "admin.token_file" in out.stderr
