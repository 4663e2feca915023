"""Slow clients and many clients, for every protocol.

The first table is the slow-loris family: silent clients, clients that dribble one byte at a
time, TLS handshakes that never finish, messages whose end never comes. Each row states the
exact bytes the server sends (after its greeting) up to its close, and when that close must come.
The pre-login bounds are the lab's `timeouts.pre_auth_idle` (3 s) and, on a node of its own
(`adv-slow`), `timeouts.login` = 4 s, `timeouts.smtp_idle` = 2 s, `sip.idle_timeout` = 2 s and
`http.handshake_timeout`/`header_timeout`/`body_timeout` = 3/4/4 s, so that the slow rows
finish in seconds. All rows run at once; the table takes as long as its slowest row.

The second test is the per-client connection limit (`limits.max_connections_per_client`, 100):
one address holds 100 connections, and then every listener turns that address away in its own
protocol, a thousand times over, while another address is served.
"""

from __future__ import annotations

import concurrent.futures
import re
import socket
import time

import pytest

from advlib import (PER_CLIENT, PRE_AUTH_IDLE, Case, Dribble, admin_metrics, assert_alive, check_transcript, lab,
                    lab_alive, params, play, start_node, wait_for_line, wait_until)

LOGIN = 4.0  # timeouts.login on adv-slow
SMTP_IDLE = 2.0  # timeouts.smtp_idle on adv-slow
SIP_IDLE = 2.0  # sip.idle_timeout on adv-slow
HTTP_HANDSHAKE = 3.0  # http.handshake_timeout on adv-slow
HTTP_HEADERS = 4.0  # http.header_timeout (and http.body_timeout) on adv-slow
SLACK = 1.5


def bound(seconds: float, **kwargs) -> dict:
    """A close at `seconds` (not before, give or take scheduling)."""
    return dict(at_least=seconds - 0.3, within=seconds + SLACK, **kwargs)


# The first bytes of a TLS ClientHello, never finished.
HELLO = bytes.fromhex("16030100c8010000c40303") + bytes(32)
SMTP_GREETS = (b"250-adv-slow greets t\r\n250-PIPELINING\r\n250-SIZE 200000\r\n250-8BITMIME\r\n"
               b"250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 STARTTLS\r\n")
ENVELOPE = b"EHLO t\r\nMAIL FROM:<sender@remote.example>\r\nRCPT TO:<bob@example.com>\r\n"
SMTP_TIMEOUT = b"421 4.4.2 Timeout, closing connection\r\n"
HTTP_OK = re.compile(rb"HTTP/1\.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 9\r\n"
                     rb"date: [^\r]*\r\n\r\nadv-slow\n")
CASES = [
    # --- IMAP ------------------------------------------------------------------------------------
    Case("imap-silent", [], b"* BYE Disconnected for inactivity.\r\n", port="imap",
         **bound(PRE_AUTH_IDLE, ended="result=timeout")),
    Case("imap-dribbling-login", Dribble(b'a LOGIN "alice@example.com" "demo-password-1"\r\n', 0.5),
         b"* BYE Login took too long.\r\n", port="slow-imap", **bound(LOGIN, ended="result=timeout")),
    Case("imap-starttls-without-handshake", b"a STARTTLS\r\n", b"a OK Begin TLS negotiation now.\r\n",
         port="imap-starttls", **bound(PRE_AUTH_IDLE, ended="result=tls-failed")),
    Case("imaps-dribbled-client-hello", Dribble(HELLO, 0.5), b"", port="imaps",
         **bound(PRE_AUTH_IDLE, ended="result=tls-failed")),
    # --- POP3 ------------------------------------------------------------------------------------
    Case("pop3-silent", [], b"-ERR Disconnected for inactivity.\r\n", port="pop3",
         **bound(PRE_AUTH_IDLE, ended="result=timeout")),
    Case("pop3-dribbling-user", Dribble(b"USER alice@example.com\r\n", 0.5), b"-ERR Login took too long.\r\n",
         port="slow-pop3", **bound(LOGIN, ended="result=timeout")),
    # --- submission ------------------------------------------------------------------------------
    Case("submission-silent", [], SMTP_TIMEOUT, port="submission", **bound(PRE_AUTH_IDLE, ended="result=timeout")),
    Case("submission-dribbling-ehlo", Dribble(b"EHLO client.example.org\r\n", 0.5), SMTP_TIMEOUT,
         port="slow-submission", **bound(LOGIN, ended="result=timeout")),
    # --- inbound SMTP ----------------------------------------------------------------------------
    Case("smtp-silent", [], SMTP_TIMEOUT, port="slow-smtp", **bound(SMTP_IDLE, ended="result=timeout")),
    Case("smtp-data-never-ended", ENVELOPE + b"DATA\r\nSubject: stalled\r\n\r\nhalf a message",
         SMTP_GREETS + b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 Start mail input; end with <CRLF>.<CRLF>\r\n"
         + SMTP_TIMEOUT, port="slow-smtp", **bound(SMTP_IDLE, ended="result=timeout")),
    Case("smtp-bdat-chunk-never-completed", ENVELOPE + b"BDAT 100 LAST\r\n0123456789",
         SMTP_GREETS + b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n" + SMTP_TIMEOUT, port="slow-smtp",
         **bound(SMTP_IDLE, ended="result=timeout")),
    Case("smtp-dribbling-ehlo", Dribble(b"EHLO client.example.org\r\n", 0.5), SMTP_TIMEOUT, port="slow-smtp",
         **bound(SMTP_IDLE, ended="result=timeout")),
    # --- HTTPS -----------------------------------------------------------------------------------
    Case("https-dribbled-client-hello", Dribble(HELLO, 0.5), b"", port="slow-https", **bound(HTTP_HANDSHAKE)),
    Case("https-dribbled-headers", Dribble(b"GET /dav/healthcheck.htm HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60, 1.0),
         b"", port="slow-https-tls", **bound(HTTP_HEADERS)),
    Case("https-idle-keep-alive", b"GET /dav/healthcheck.htm HTTP/1.1\r\nHost: x\r\n\r\n", HTTP_OK,
         port="slow-https-tls", **bound(HTTP_HEADERS)),
    # A body announced and never sent: closed like a head that never ends (with or without a 408).
    Case("https-body-never-completed", b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
         b"Content-Type: application/x-www-form-urlencoded\r\n\r\nuser=alice",
         re.compile(rb"(HTTP/1\.1 408 [^\r]*\r\n.*)?", re.S), port="slow-https-tls", **bound(HTTP_HEADERS)),
    # --- SIP over TCP ----------------------------------------------------------------------------
    Case("sip-tcp-silent", [], b"", port="slow-sip", **bound(SIP_IDLE)),
    Case("sip-tcp-content-length-never-reached",
         b"OPTIONS sip:cas.example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-x\r\n"
         b"From: <sip:t@example.net>;tag=1\r\nTo: <sip:cas.example.com>\r\nCall-ID: never\r\nCSeq: 1 OPTIONS\r\n"
         b"Content-Length: 50\r\n\r\nv=0\r\n", b"", port="slow-sip", **bound(SIP_IDLE)),
    Case("sip-tcp-dribbled-request", Dribble(b"OPTIONS sip:cas.example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999"
                                             b";branch=z9hG4bK-x\r\n", 0.5), b"", port="slow-sip", **bound(SIP_IDLE)),
]

SLOW_PORTS = ("imap", "pop3", "submission", "smtp", "https", "sip")
GREETING = {"imaps": False, "slow-https": False, "slow-https-tls": False, "slow-sip": False}
IMPLICIT_TLS = {"slow-https-tls"}


@pytest.fixture(scope="module")
def slow_node(lab_env):
    ports = {name: lab.free_port() for name in SLOW_PORTS}
    plain = {"tls": "none", "allow_plaintext_auth": True}
    node = start_node(lab_env, "adv-slow", [
        {"protocol": "imap", "address": f"127.0.0.1:{ports['imap']}", **plain},
        {"protocol": "pop3", "address": f"127.0.0.1:{ports['pop3']}", **plain},
        {"protocol": "submission", "address": f"127.0.0.1:{ports['submission']}", **plain},
        {"protocol": "smtp", "address": f"127.0.0.1:{ports['smtp']}", "tls": "starttls"},
        {"protocol": "https", "address": f"127.0.0.1:{ports['https']}", "tls": "implicit"},
        {"protocol": "sip", "address": f"127.0.0.1:{ports['sip']}"},
    ], {"timeouts": {"login": f"{int(LOGIN)}s", "smtp_idle": f"{int(SMTP_IDLE)}s"},
        "sip": {"idle_timeout": f"{int(SIP_IDLE)}s"},
        "http": {"handshake_timeout": f"{int(HTTP_HANDSHAKE)}s", "header_timeout": f"{int(HTTP_HEADERS)}s",
                 "body_timeout": f"{int(HTTP_HEADERS)}s"}})
    yield node, ports
    node.stop()


@pytest.fixture(scope="module")
def outcomes(lab_env, slow_node):
    node, slow = slow_node
    ports = {"imap": lab_env.plain_port, "imap-starttls": lab_env.starttls_port, "imaps": lab_env.implicit_port,
             "pop3": lab_env.pop3_plain_port, "submission": lab_env.submission_port,
             **{f"slow-{name}": port for name, port in slow.items()}, "slow-https-tls": slow["https"]}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        futures = {case.id: pool.submit(play, ports[case.port], case.send, timeout=case.within + 2,
                                        greeting=GREETING.get(case.port, True),
                                        implicit_tls=case.port in IMPLICIT_TLS)
                   for case in CASES}
        results = {name: future.result() for name, future in futures.items()}
    yield results
    lab_alive(lab_env)
    assert_alive(node.log_since_start, node.process)


@pytest.mark.parametrize("case", params(CASES))
def test_slow_client(lab_env, slow_node, outcomes, case):
    node, _ = slow_node
    outcome = outcomes[case.id]
    check_transcript(case, outcome)
    on_slow_node = case.port.startswith("slow-")
    log = node.log_since_start if on_slow_node else lab_env.log
    if case.ended:
        lines = wait_for_line(log, outcome.client, "session ended")
        assert any(case.ended in line for line in lines if "session ended" in line), lines
        assert not any("session proxied" in line or "message delivered" in line for line in lines), lines
    assert_alive(log, node.process if on_slow_node else lab_env.mailfront.process)


# --- the per-client connection limit ------------------------------------------------------------

SOURCE = "127.0.0.5"  # not 127.0.0.1, which the lab trusts for throttling
BUSY = {
    "imap": b"* BYE [UNAVAILABLE] Too many connections, try again later.\r\n",
    "pop3": b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n",
    "submission": b"421 4.7.0 Too many connections, try again later\r\n",
    "smtp": b"421 4.7.0 Too many connections, try again later\r\n",
    # Before TLS: a clean close, nothing in clear text (a TLS client could not read it).
    "https": b"",
    "sip-tcp": b"",
    "imaps": b"",
    "pop3s": b"",
    "submissions": b"",
}


def turned_away(port: int, source: str = SOURCE, timeout: float = 5.0) -> tuple[bytes, bool, float]:
    """Connects from `source` and reads everything until the close: (bytes, closed, seconds)."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    data, closed = b"", False
    try:
        while time.monotonic() - started < timeout:
            sock.settimeout(max(0.01, timeout - (time.monotonic() - started)))
            try:
                chunk = sock.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            except (socket.timeout, TimeoutError):
                break
            if not chunk:
                closed = True
                break
            data += chunk
    finally:
        sock.close()
    return data, closed, time.monotonic() - started


def listener_ports(lab_env) -> dict[str, int]:
    return {"imap": lab_env.plain_port, "pop3": lab_env.pop3_plain_port, "submission": lab_env.submission_port,
            "smtp": lab_env.smtp_port, "https": lab_env.https_port, "sip-tcp": lab_env.sip_port,
            "imaps": lab_env.implicit_port, "pop3s": lab_env.pop3_implicit_port,
            "submissions": lab_env.submissions_port}


@pytest.fixture(scope="module")
def crowd(lab_env):
    """127.0.0.5 holds `limits.max_connections_per_client` connections (on the SIP TCP listener,
    whose idle timeout outlasts the test: the limit is per address, node-wide)."""
    before = admin_metrics(lab_env, "mailfront_refused_connections_total", reason="client_limit")
    held = []
    for _ in range(PER_CLIENT):
        held.append(socket.create_connection(("127.0.0.1", lab_env.sip_port), timeout=5, source_address=(SOURCE, 0)))
    # Every one of them was admitted: a ping on each is answered.
    for sock in held:
        sock.sendall(b"\r\n\r\n")
    for sock in held:
        assert sock.recv(16) == b"\r\n"
    yield {"held": held, "before": before}
    for sock in held:
        sock.close()


@pytest.mark.parametrize("listener", list(BUSY))
def test_over_the_limit_each_listener_turns_away(lab_env, crowd, listener):
    data, closed, took = turned_away(listener_ports(lab_env)[listener])
    assert (data, closed) == (BUSY[listener], True)
    assert took < 2.0
    lab_alive(lab_env)


def test_a_thousand_more_are_turned_away_and_others_are_served(lab_env, crowd):
    with concurrent.futures.ThreadPoolExecutor(max_workers=25) as pool:
        results = list(pool.map(lambda _: turned_away(lab_env.plain_port), range(1000)))
    assert all(r[:2] == (BUSY["imap"], True) for r in results), {r[:2] for r in results}
    assert max(r[2] for r in results) < 3.0
    # The limit is per address: another client is served meanwhile, and no refused connection
    # ever reached the protocol (no session, no login).
    with socket.create_connection(("127.0.0.1", lab_env.plain_port), timeout=5, source_address=("127.0.0.6", 0)) as other:
        assert other.makefile("rb").readline().startswith(b"* OK [CAPABILITY ")
    after = admin_metrics(lab_env, "mailfront_refused_connections_total", reason="client_limit")
    assert after - crowd["before"] >= 1000
    refused = [line for line in lab_env.log().splitlines() if f"client={SOURCE}:" in line]
    assert sum("connection refused: too many connections" in line for line in refused) >= 1000
    assert not [line for line in refused if "session" in line or "login" in line]
    lab_alive(lab_env)


def test_the_places_come_back(lab_env, crowd):
    for sock in crowd["held"]:
        sock.close()
    crowd["held"].clear()

    def served():
        data, _, _ = turned_away(lab_env.pop3_plain_port, timeout=1.0)
        return data.startswith(b"+OK")

    wait_until(served, what="127.0.0.5 served again")
