"""Operating a node: the admin API (health, metrics, status, sessions, kick, drain), the
`mailfront admin` command, login throttling, connection limits, the post-login idle timeout,
the PROXY protocol, hot reload and graceful shutdown. Real Dovecot backends, real clients."""

from __future__ import annotations

import copy
import imaplib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import time

import pytest

import lab
from conftest import USERS, SourcedIMAP, admin_call, client_tls, node_config, start_node, wait_until

PASSWORDS = {u.address: u.password for u in USERS}


def login(port: int, user: str = "alice@example.com", source: str = "127.0.0.1") -> imaplib.IMAP4:
    client = imap_from(source, port)
    client.login(user, PASSWORDS[user])
    return client


def imap_from(source: str, port: int) -> imaplib.IMAP4:
    return SourcedIMAP(port, source)


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


# --- Throttling -------------------------------------------------------------------------------


def timed_login(port: int, user: str, password: str, source: str) -> tuple[bool, float, str]:
    started = time.monotonic()
    client = imap_from(source, port)
    try:
        client.login(user, password)
        ok, message = True, ""
        client.logout()
    except imaplib.IMAP4.error as e:
        ok, message = False, str(e)
    finally:
        try:
            client.shutdown()
        except OSError:
            pass
    return ok, time.monotonic() - started, message


def test_bad_passwords_are_slowed_then_blocked_while_others_log_in_at_full_speed(lab_env):
    imap, pop3, admin = lab.free_port(), lab.free_port(), lab.free_port()
    node = start_node(
        lab_env, "throttled",
        [{"protocol": "imap", "address": f"127.0.0.1:{imap}", "tls": "none", "allow_plaintext_auth": True},
         {"protocol": "pop3", "address": f"127.0.0.1:{pop3}", "tls": "none", "allow_plaintext_auth": True}],
        {"throttle": {"trusted_networks": [], "max_delay": "1s", "block_after": 4, "block_for": "60s"},
         "timeouts": {"auth_failure_delay": "200ms"},
         "admin": {"address": f"127.0.0.1:{admin}"}})
    try:
        # The attacker at 127.0.0.2: each failure takes longer (0.2, 0.4, 0.8, then the 1 s cap).
        attempts = [timed_login(imap, "alice@example.com", "guess", "127.0.0.2") for _ in range(4)]
        assert not any(ok for ok, _, _ in attempts)
        delays = [t for _, t, _ in attempts]
        assert 0.15 < delays[0] < 0.6, delays
        assert delays[1] > delays[0] + 0.1 and delays[2] > delays[1] + 0.2, delays
        assert 0.9 < delays[3] < 1.6, delays
        # Blocked now: even the right password is refused, with the same reply as a wrong one.
        ok, took, message = timed_login(imap, "alice@example.com", PASSWORDS["alice@example.com"], "127.0.0.2")
        assert not ok and message == attempts[0][2] and 0.9 < took < 1.6
        # The block is per address, across protocols.
        sock = socket.create_connection(("127.0.0.1", pop3), timeout=15, source_address=("127.0.0.2", 0))
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        sock.sendall(b"USER bob@example.com\r\n")
        assert reader.readline().startswith(b"+OK")
        sock.sendall(f"PASS {PASSWORDS['bob@example.com']}\r\n".encode())
        assert reader.readline().startswith(b"-ERR [AUTH]")
        sock.close()
        # Meanwhile the same user from another address logs in at full speed, every time.
        for _ in range(3):
            ok, took, _ = timed_login(imap, "alice@example.com", PASSWORDS["alice@example.com"], "127.0.0.3")
            assert ok and took < 0.5, took
        metrics = admin_call(admin, "GET", "/metrics")[1]
        assert metric(metrics, "mailfront_throttled_logins_total", protocol="imap", result="delayed") >= 3
        assert metric(metrics, "mailfront_throttled_logins_total", protocol="imap", result="blocked") >= 1
        assert metric(metrics, "mailfront_throttled_logins_total", protocol="pop3", result="blocked") >= 1
        assert "blocked by throttling" in node.log_since_start()
    finally:
        node.stop()


def test_a_block_raised_on_one_node_refuses_the_address_on_every_node_within_a_second(lab_env):
    """Login protection across the array: counting stays per node, but when 127.0.0.2 crosses
    the block threshold on node A, A publishes the block through etcd (under a lease of its
    length) and node B — which never saw a failure from it — refuses that address at once, even
    with the right password, with the same reply as a wrong one. A node that starts later reads
    the blocks still in force."""
    import lab.etcd
    root = lab.reset_dir(lab_env.root / "shared-blocks")
    etcd = lab.etcd.Etcd(root / "etcd", lab.free_port(), lab.free_port())
    etcd.start()
    nodes = []
    try:
        for database, server in lab.read_locations(lab_env.locations).items():
            etcd.put_active(database, server)
        ports = {}

        def start(name: str) -> lab.Mailfront:
            from conftest import node_settings
            ports[name] = lab.free_port()
            settings = node_settings(
                lab_env, name,
                [{"protocol": "imap", "address": f"127.0.0.1:{ports[name]}", "tls": "none",
                  "allow_plaintext_auth": True}],
                {"throttle": {"trusted_networks": [], "max_delay": "300ms", "block_after": 3, "block_for": "60s"},
                 "timeouts": {"auth_failure_delay": "100ms"}})
            settings["location"] = etcd.location_config(timeout="2s")
            node = lab.Mailfront(lab_env.binary, lab.write_toml(root / f"{name}.toml", settings), root / f"{name}.log")
            nodes.append(node)
            node.start()
            wait_until(lambda: "login blocks: shared through etcd" in node.log_since_start(), 10,
                       f"{name} watching the blocks")
            return node

        a, b = start("blocks-a"), start("blocks-b")
        right = PASSWORDS["alice@example.com"]
        # B lets the address in before anything happened.
        assert timed_login(ports["blocks-b"], "alice@example.com", right, "127.0.0.2")[0]
        # Three failures on A: the third blocks 127.0.0.2 there.
        refusals = [timed_login(ports["blocks-a"], "alice@example.com", "guess", "127.0.0.2") for _ in range(3)]
        assert not any(ok for ok, _, _ in refusals)
        blocked_at = time.monotonic()
        # B refuses it within a second: the right password, the same reply as a wrong one.
        def refused_on_b():
            ok, _, message = timed_login(ports["blocks-b"], "bob@example.com", PASSWORDS["bob@example.com"],
                                         "127.0.0.2")
            return not ok and message
        message = wait_until(refused_on_b, 1.0, "the block on node B", interval=0.02)
        reached = time.monotonic() - blocked_at
        assert message == refusals[0][2], (message, refusals[0][2])
        assert "login block from another node applied" in b.log_since_start()
        assert "from=blocks-a" in b.log_since_start()
        # From A's write to B's applying it, by the nodes' own log clocks.
        from datetime import datetime
        def stamp(node: lab.Mailfront, text: str) -> datetime:
            line = next(l for l in node.log_since_start().splitlines() if text in l)
            return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
        gap = stamp(b, "login block from another node applied") - stamp(a, "login block shared with the array")
        assert gap.total_seconds() < 1.0, gap
        print(f"block: applied by B {gap.total_seconds() * 1000:.1f} ms after A logged its write (negative: before); "
              f"third failure -> refused on B {reached * 1000:.0f} ms (including B's refusal delay)")
        # Another address is not blocked on B, and B counted no failure of its own.
        assert timed_login(ports["blocks-b"], "alice@example.com", right, "127.0.0.3")[0]
        # A node that starts now reads the block still in force.
        c = start("blocks-c")
        ok, _, message = timed_login(ports["blocks-c"], "alice@example.com", right, "127.0.0.2")
        assert not ok and message == refusals[0][2]
        assert c.log_since_start().count("login block from another node applied") >= 1
    finally:
        for node in nodes:
            node.stop()
        etcd.stop()


# --- Limits -----------------------------------------------------------------------------------


def greeting(source: str, port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock, sock.makefile("rb").readline()


def test_connection_limits_per_client_and_per_listener(lab_env):
    imap, admin = lab.free_port(), lab.free_port()
    node = start_node(
        lab_env, "limited",
        [{"protocol": "imap", "address": f"127.0.0.1:{imap}", "tls": "none", "allow_plaintext_auth": True,
          "max_connections": 3}],
        {"limits": {"max_connections_per_client": 2}, "admin": {"address": f"127.0.0.1:{admin}"}})
    held = []
    try:
        for _ in range(2):
            sock, line = greeting("127.0.0.2", imap)
            assert line.startswith(b"* OK"), line
            held.append(sock)
        sock, line = greeting("127.0.0.2", imap)
        assert line == b"* BYE [UNAVAILABLE] Too many connections, try again later.\r\n"
        sock.close()
        sock, line = greeting("127.0.0.3", imap)
        assert line.startswith(b"* OK"), line
        held.append(sock)
        # The listener is full (3): a fourth client is turned away too.
        sock, line = greeting("127.0.0.4", imap)
        assert line.startswith(b"* BYE [UNAVAILABLE]"), line
        sock.close()
        # A closed connection frees its places.
        held.pop(0).close()
        sock, line = wait_until(lambda: (lambda s, l: (s, l) if l.startswith(b"* OK") else s.close())(
            *greeting("127.0.0.2", imap)), what="a place freed")
        held.append(sock)
        metrics = admin_call(admin, "GET", "/metrics")[1]
        assert metric(metrics, "mailfront_refused_connections_total", reason="client_limit") >= 1
        assert metric(metrics, "mailfront_refused_connections_total", reason="listener_full") >= 1
    finally:
        for sock in held:
            sock.close()
        node.stop()


def test_a_node_at_its_descriptor_limit_turns_clients_away_instead_of_leaving_them_waiting(lab_env, tmp_path):
    """Run with an open-files limit of 288, a node may hold (288 - 128) / 2 = 80 connections:
    the 81st hears the busy reply at once instead of waiting in the listen queue for an
    accept() that fails for lack of descriptors."""
    imap, admin = lab.free_port(), lab.free_port()
    wrapper = tmp_path / "mailfront-288-files"
    wrapper.write_text(f'#!/bin/sh\nexec prlimit --nofile=288:288 -- {lab_env.binary} "$@"\n')
    wrapper.chmod(0o755)
    config = node_config(
        lab_env, "few-files",
        [{"protocol": "imap", "address": f"127.0.0.1:{imap}", "tls": "none", "allow_plaintext_auth": True}],
        {"limits": {"max_connections_per_client": 1000}, "admin": {"address": f"127.0.0.1:{admin}"}})
    node = lab.Mailfront(wrapper, config, lab_env.root / "few-files.log")
    node.start()
    held = []
    try:
        assert re.search(r"at most this many connections at once.*connections=80", node.log_since_start()), \
            node.log_since_start()
        for i in range(80):
            sock, line = greeting(f"127.0.1.{1 + i % 8}", imap)
            assert line.startswith(b"* OK"), (i, line)
            held.append(sock)
        started = time.monotonic()
        sock, line = greeting("127.0.1.9", imap)
        sock.close()
        assert line == b"* BYE [UNAVAILABLE] Too many connections, try again later.\r\n"
        assert time.monotonic() - started < 2.0
        metrics = admin_call(admin, "GET", "/metrics")[1]
        assert metric(metrics, "mailfront_refused_connections_total", reason="node_full") >= 1
        # A closed connection frees its place.
        held.pop().close()
        sock, line = wait_until(lambda: (lambda s, l: (s, l) if l.startswith(b"* OK") else s.close())(
            *greeting("127.0.1.9", imap)), what="a place freed")
        held.append(sock)
    finally:
        for sock in held:
            sock.close()
        node.stop()


def test_idle_proxied_session_is_closed_after_post_auth_idle(lab_env):
    imap = lab.free_port()
    node = start_node(
        lab_env, "idler",
        [{"protocol": "imap", "address": f"127.0.0.1:{imap}", "tls": "none", "allow_plaintext_auth": True}],
        {"timeouts": {"post_auth_idle": "1s"}})
    try:
        client = login(imap)
        client.select("INBOX")
        # Activity keeps it open past the limit…
        for _ in range(4):
            time.sleep(0.4)
            assert client.noop()[0] == "OK"
        # …silence closes it.
        started = time.monotonic()
        client.sock.settimeout(10)
        assert client.sock.recv(1024) == b""
        assert 0.8 < time.monotonic() - started < 3.0
        wait_until(lambda: re.search(r"result=idle-timeout session ended|session ended.*result=idle-timeout",
                                     node.log_since_start()), what="the session logged as idle")
    finally:
        node.stop()


# --- PROXY protocol ---------------------------------------------------------------------------


def proxy_v2(source: str, source_port: int, destination: str, destination_port: int) -> bytes:
    import ipaddress
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family = 0x11 if src.version == 4 else 0x21  # TCP over IPv4 / IPv6
    addresses = src.packed + dst.packed + struct.pack("!HH", source_port, destination_port)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, family]) + struct.pack("!H", len(addresses)) + addresses


@pytest.fixture(scope="module")
def proxied(lab_env):
    imap, admin = lab.free_port(), lab.free_port()
    node = start_node(
        lab_env, "proxied",
        [{"protocol": "imap", "address": f"127.0.0.1:{imap}", "tls": "none", "allow_plaintext_auth": True,
          "proxy_protocol": True}],
        {"proxy_protocol": {"trusted": ["127.0.0.1/32"], "timeout": "1s"},
         "admin": {"address": f"127.0.0.1:{admin}"}})
    yield {"node": node, "imap": imap, "admin": admin}
    node.stop()


def proxied_login(port: int, header: bytes, user: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(header)
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"* OK")
    sock.sendall(f"a LOGIN {user} {PASSWORDS[user]}\r\n".encode())
    line = reader.readline()
    while line.startswith(b"*"):
        line = reader.readline()
    assert line.startswith(b"a OK"), line
    return sock


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_gives_the_real_client_to_logs_limits_and_dovecot(lab_env, proxied, version):
    if version == "v1":
        header, client, shown = b"PROXY TCP4 192.0.2.55 127.0.0.1 40001 143\r\n", "192.0.2.55", "192.0.2.55:40001"
    else:
        header, client, shown = proxy_v2("2001:db8::7", 50123, "::1", 143), "2001:db8::7", "[2001:db8::7]:50123"
    dovecot_log = lab_env.servers["mbx2"].dir / "dovecot.log"
    log_offset = dovecot_log.stat().st_size
    sock = proxied_login(proxied["imap"], header, "bob@example.com")
    try:
        listed = wait_until(lambda: sessions(proxied["admin"], "?user=bob@example.com"), what="listed")
        assert [s["client"] for s in listed] == [shown]
        assert f"client={shown}" in proxied["node"].log_since_start()
        # Dovecot was told the real address (IMAP ID x-originating-ip, from a trusted network).
        wait_until(lambda: f"rip={client}" in dovecot_log.read_text(errors="replace")[log_offset:],
                   what="Dovecot logging the real client")
    finally:
        sock.close()


def closed_without_a_word(sock: socket.socket) -> bool:
    """Whether the server closed the connection without sending anything (a close with our
    bytes unread is a reset)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    finally:
        sock.close()


def test_proxy_protocol_refuses_untrusted_missing_and_bad_headers(proxied):
    # An untrusted source may not speak to a PROXY listener at all, header or not.
    for payload in (b"PROXY TCP4 192.0.2.1 127.0.0.1 1 143\r\n", b""):
        sock = socket.create_connection(("127.0.0.1", proxied["imap"]), timeout=10, source_address=("127.0.0.2", 0))
        sock.sendall(payload)
        assert closed_without_a_word(sock)
    # A trusted source that sends garbage, or nothing within the timeout, is dropped too.
    sock = socket.create_connection(("127.0.0.1", proxied["imap"]), timeout=10)
    sock.sendall(b"PROXY GARBAGE\r\n")
    assert closed_without_a_word(sock)
    sock = socket.create_connection(("127.0.0.1", proxied["imap"]), timeout=10)
    started = time.monotonic()
    assert closed_without_a_word(sock)
    assert 0.8 < time.monotonic() - started < 3
    metrics = admin_call(proxied["admin"], "GET", "/metrics")[1]
    assert metric(metrics, "mailfront_refused_connections_total", reason="untrusted_proxy") >= 2


# --- Hot reload -------------------------------------------------------------------------------


def peer_certificate(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_tls().wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def new_server(name: str, ports: lab.Ports, master_password_file) -> dict:
    """A `[[server]]` table for a mailbox server the configuration did not name before."""
    server = lab.ServerEntry(name, ports).config(master_password_file)
    return {key: server[key] for key in ("name", "site", "version", "host", "imap", "login")}


@pytest.fixture()
def reloading(lab_env):
    """A node with its own configuration, certificate and location files to change."""
    root = lab.reset_dir(lab_env.root / "reloading")
    cert, key = lab.make_certificate(root / "tls-a")
    locations = root / "locations.toml"
    locations.write_text(lab_env.locations.read_text())
    imap, imaps, admin = lab.free_port(), lab.free_port(), lab.free_port()
    config = node_config(
        lab_env, "reloading",
        [{"protocol": "imap", "address": f"127.0.0.1:{imap}", "tls": "none", "allow_plaintext_auth": True},
         {"protocol": "imap", "address": f"127.0.0.1:{imaps}", "tls": "implicit"}],
        {"tls": {"certificate": str(root / "cert.pem"), "key": str(root / "key.pem")},
         "location": {"path": str(locations)},
         "admin": {"address": f"127.0.0.1:{admin}"}})
    (root / "cert.pem").write_bytes(cert.read_bytes())
    (root / "key.pem").write_bytes(key.read_bytes())
    node = lab.Mailfront(lab_env.binary, config, root / "mailfront.log")
    node.start()
    yield {"node": node, "root": root, "config": config, "locations": locations, "imap": imap, "imaps": imaps,
           "admin": admin}
    node.stop()


def wait_reloaded(node: lab.Mailfront, after: int, what: str = "configuration reloaded") -> str:
    return wait_until(lambda: (lambda log: log if what in log[after:] else None)(node.log_since_start()),
                      what=what)[after:]


def test_reload_of_certificate_topology_and_locations_drops_no_session(lab_env, reloading):
    node = reloading["node"]
    alice = login(reloading["imap"])
    alice.select("INBOX")
    bob = imaplib.IMAP4_SSL("127.0.0.1", reloading["imaps"], ssl_context=client_tls(), timeout=15)
    bob.login("bob@example.com", PASSWORDS["bob@example.com"])
    bob.select("INBOX")
    old_certificate = peer_certificate(reloading["imaps"])

    # A renewed certificate: written in place (certificate, then key), picked up by itself.
    after = len(node.log_since_start())
    cert, key = lab.make_certificate(reloading["root"] / "tls-b")
    (reloading["root"] / "cert.pem").write_bytes(cert.read_bytes())
    (reloading["root"] / "key.pem").write_bytes(key.read_bytes())
    log = wait_reloaded(node, after)
    assert 'trigger="file change" applied=certificate\n' in log
    wait_until(lambda: peer_certificate(reloading["imaps"]) != old_certificate, what="the new certificate served")

    # SIGHUP reloads too (nothing changed: nothing applied).
    after = len(node.log_since_start())
    os.kill(node.process.pid, signal.SIGHUP)
    log = wait_reloaded(node, after)
    assert 'trigger="SIGHUP" applied=nothing' in log
    # A location map naming a server not configured yet is refused…
    after = len(node.log_since_start())
    active = lab.read_locations(reloading["locations"])
    active["DB07"] = "mbx1-new"
    lab.write_locations(reloading["locations"], active)
    wait_reloaded(node, after, "location map change rejected")
    # …and taken as soon as the configuration names the server.
    after = len(node.log_since_start())
    settings = lab.read_toml(reloading["config"])
    settings["server"].append(new_server("mbx1-new", lab_env.servers["mbx1"].ports,
                                         lab_env.root / "secrets" / "master.pw"))
    lab.write_toml(reloading["config"], settings)
    assert "applied=topology" in wait_reloaded(node, after)
    wait_until(lambda: "to=mbx1-new" in node.log_since_start()[after:], what="the map using the new server")
    heidi = login(reloading["imap"], "heidi@example.com")
    listed = sessions(reloading["admin"], "?user=heidi@example.com")
    assert [s["server"] for s in listed] == ["mbx1-new"]
    heidi.logout()

    # None of the live sessions noticed.
    assert alice.noop()[0] == "OK" and alice.select("INBOX")[0] == "OK"
    assert bob.noop()[0] == "OK" and bob.select("INBOX")[0] == "OK"
    ended = [line for line in node.log_since_start().splitlines()
             if "session ended" in line and ("user=alice" in line or "user=bob" in line)]
    assert ended == []
    alice.logout()
    bob.logout()


def test_invalid_configuration_is_rejected_and_the_old_one_kept(lab_env, reloading):
    node, admin = reloading["node"], reloading["admin"]
    live = login(reloading["imap"])
    good = lab.read_toml(reloading["config"])
    # Broken syntax, by file change: the good file with an unclosed array-of-tables header.
    after = len(node.log_since_start())
    reloading["config"].write_text(reloading["config"].read_text() + "\n[[listener]\n")
    log = wait_reloaded(node, after, "configuration reload rejected")
    assert "previous configuration stays in force" in log
    state = json.loads(admin_call(admin, "GET", "/status")[1])
    assert "reloading.toml" in state["config"]["last_error"], state
    # Logins go on under the old configuration.
    login(reloading["imap"], "bob@example.com").logout()
    # Removing a server the location map still makes active is refused (by the admin API).
    renamed = copy.deepcopy(good)
    [mbx3] = [server for server in renamed["server"] if server["name"] == "mbx3"]
    mbx3["name"] = "mbx3-renamed"
    lab.write_toml(reloading["config"], renamed)
    status, body = admin_call(admin, "POST", "/reload")
    assert status == 422 and "active.DB04: unknown server `mbx3`" in body, body
    # A change that needs a restart is reported, the rest applied (by the file poller).
    after = len(node.log_since_start())
    assert good["limits"]["max_line_length"] == 1024
    good["limits"]["max_line_length"] = 2048
    lab.write_toml(reloading["config"], good)
    log = wait_reloaded(node, after, "takes effect after a restart")
    assert "section=limits" in log
    state = json.loads(admin_call(admin, "GET", "/status")[1])["config"]
    assert state["last_error"] is None and state["pending_restart"] == ["limits"]
    # It stays pending (and reported) on every later reload until a restart.
    status, body = admin_call(admin, "POST", "/reload")
    assert status == 200 and json.loads(body) == {"applied": [], "needs_restart": ["limits"]}, body
    metrics = admin_call(admin, "GET", "/metrics")[1]
    assert metric(metrics, "mailfront_config_reloads_total", result="rejected") >= 2
    assert metric(metrics, "mailfront_config_reloads_total", result="ok") >= 1
    assert live.noop()[0] == "OK"
    live.logout()


# --- Graceful shutdown ------------------------------------------------------------------------


def test_shutdown_lets_sessions_finish_then_says_goodbye(lab_env):
    imap = lab.free_port()
    listeners = [{"protocol": "imap", "address": f"127.0.0.1:{imap}", "tls": "none", "allow_plaintext_auth": True}]
    # Sessions that finish within the grace period let the node exit early.
    node = start_node(lab_env, "stopping", listeners, {"timeouts": {"shutdown_grace": "10s"}})
    client = login(imap)
    client.select("INBOX")
    started = time.monotonic()
    node.process.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopped accepting" in node.log_since_start(), what="the node stopping")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", imap), timeout=5)
    assert client.noop()[0] == "OK"
    client.logout()
    node.process.wait(timeout=8)
    assert time.monotonic() - started < 5
    # A session that stays is told goodbye when the grace period is over.
    node = start_node(lab_env, "stopping", listeners, {"timeouts": {"shutdown_grace": "1500ms"}})
    client = login(imap)
    client.select("INBOX")
    started = time.monotonic()
    node.process.send_signal(signal.SIGTERM)
    time_ok = client.noop()[0] == "OK"
    assert time_ok
    client.sock.settimeout(10)
    received = b""
    while b"\r\n" not in received:
        chunk = client.sock.recv(1024)
        if not chunk:
            break
        received += chunk
    assert received.startswith(b"* BYE [UNAVAILABLE] Server shutting down"), received
    assert 1.3 < time.monotonic() - started < 5
    node.process.wait(timeout=8)


def test_a_fresh_node_exports_every_known_series_from_the_first_scrape(lab_env):
    """Before any login, delivery or reload, /metrics already has the series a dashboard or an
    absent() alert needs, at zero, for the node's own protocols, servers, listeners and databases."""
    imap, smtp, admin = lab.free_port(), lab.free_port(), lab.free_port()
    node = start_node(lab_env, "fresh-metrics", [
        lab.listener("fresh-imap", "imap", imap, "none", allow_plaintext_auth=True),
        lab.listener("fresh-mx", "smtp", smtp),
    ], {"admin": {"address": f"127.0.0.1:{admin}"}})
    try:
        status, text = admin_call(admin, "GET", "/metrics")
        assert status == 200, text
        servers = [s["name"] for s in lab_env.settings["server"]]
        expected = [f'mailfront_sessions{{protocol="imap",backend="{s}"}} 0' for s in servers]
        expected += [f'mailfront_logins_total{{protocol="imap",result="{r}"}} 0'
                     for r in ("ok", "auth_failed", "authz_refused", "disabled", "temporary")]
        expected += [f'mailfront_refused_connections_total{{listener="{l}",reason="node_full"}} 0'
                     for l in ("fresh-imap", "fresh-mx")]
        expected += ['mailfront_transport_messages_total{listener="fresh-mx",reason="delivered"} 0',
                     'mailfront_relayed_bytes_total{protocol="imap",direction="backend_to_client"} 0',
                     'mailfront_backend_login_latency_seconds_count{protocol="imap"} 0',
                     'mailfront_throttled_logins_total{protocol="imap",result="blocked"} 0',
                     'mailfront_config_reloads_total{result="ok"} 0',
                     'mailfront_database_moves_total{kind="failover"} 0']
        missing = [line for line in expected if line not in text]
        assert not missing, f"missing from the first scrape: {missing}\n{text}"
        # Only what this node serves: no POP3 or HTTP series.
        assert 'protocol="pop3"' not in text and 'protocol="http"' not in text
    finally:
        node.stop()
