"""`scripts/demo` keeps its contract (README): ports, users, the ready line, switchover, clean stop."""

from __future__ import annotations

import base64
import contextlib
import http.client
import imaplib
import os
import poplib
import re
import signal
import smtplib
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest

from conftest import lab

DEMO = lab.ROOT / "scripts" / "demo"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def backend_of_last_session(log: str, user: str) -> str | None:
    found = re.findall(rf"session proxied .*user={re.escape(user)} database=\S+ backend=(\S+)", log)
    return found[-1] if found else None


# The demo's build: debug unless the caller says otherwise.
DEMO_ENV = dict(os.environ, MAILFRONT_PROFILE=os.environ.get("MAILFRONT_PROFILE", "debug"))


@contextlib.contextmanager
def running_demo(*args: str):
    """`scripts/demo *args`, once it printed its ready line: yields the process and everything it
    printed; then stops it (and fails if it never got ready). Skips when the contract ports are
    taken."""
    if port_open(1143):
        pytest.skip("port 1143 is taken (a demo already running?); the demo test needs the contract ports")
    process = subprocess.Popen([str(DEMO), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=DEMO_ENV, start_new_session=True)
    output = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.strip() == "mailfront demo ready":
            break
    try:
        assert output and output[-1].strip() == "mailfront demo ready", "".join(output)
        yield process, "".join(output)
    finally:
        if process.poll() is None:
            # SIGTERM first: the demo stops what it started (mailfront, Dovecot and etcd run in
            # sessions of their own, out of reach of a SIGKILL of the demo's group).
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def demo():
    with running_demo() as (process, _):
        yield process


def sip_invite(uri: str) -> str:
    """An RFC 3261 INVITE over UDP to the demo's SIP port; returns the response."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        port = s.getsockname()[1]
        call_id = f"{uuid.uuid4()}@demo-test"
        s.sendto(
            (f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\n"
             f"Max-Forwards: 70\r\nFrom: <sip:test@example.net>;tag=1\r\nTo: <{uri}>\r\n"
             f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", 5060),
        )
        return s.recvfrom(65535)[0].decode()


def login_alice() -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", 1143, timeout=15)
    assert client.login("alice@example.com", lab.DEMO_PASSWORD)[0] == "OK"
    return client


def test_demo_contract(demo):
    log_path = lab.lab_root("demo") / "mailfront.log"
    for port in (1143, 1993, 1110, 1995, 1025, 1587, 1465, 8443, 9090):
        assert port_open(port), port

    # The admin API answers on loopback.
    health = urllib.request.urlopen("http://127.0.0.1:9090/health", timeout=10)
    assert health.status == 200 and health.read().startswith(b"OK ")

    # alice reads and writes her mail on mbx1.
    client = login_alice()
    subject = f"demo {uuid.uuid4()}"
    body = f"Subject: {subject}\r\n\r\nhello\r\n".encode()
    assert client.append("INBOX", None, None, body)[0] == "OK"
    client.select("INBOX")
    typ, data = client.search(None, "SUBJECT", f'"{subject}"')
    assert typ == "OK" and data[0]
    client.logout()
    assert backend_of_last_session(log_path.read_text(), "alice@example.com") == "mbx1"

    # bob's database is on mbx2; IMAPS answers.
    client = imaplib.IMAP4_SSL("127.0.0.1", 1993, ssl_context=__import__("conftest").client_tls(), timeout=15)
    assert client.login("bob@example.com", lab.DEMO_PASSWORD)[0] == "OK"
    client.logout()
    assert backend_of_last_session(log_path.read_text(), "bob@example.com") == "mbx2"

    # SIP: alice's extension is redirected to mbx1's voice mail (UDP; TCP answers too).
    assert port_open(5060)
    response = sip_invite("sip:4001@127.0.0.1")
    assert response.startswith("SIP/2.0 302 Moved Temporarily\r\n"), response
    assert "\r\nContact: <sip:4001@127.0.0.1:5070>\r\n" in response, response

    # Switchover: the command returns once the map is written; new logins follow.
    done = subprocess.run([str(DEMO), "switchover", "DB01", "mbx2"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "DB01: active copy moved from mbx1 to mbx2" in done.stdout
    deadline = time.monotonic() + 10
    while "active copy moved database=DB01 from=mbx1 to=mbx2" not in log_path.read_text():
        assert time.monotonic() < deadline, "mailfront never saw the switchover"
        time.sleep(0.05)
    client = login_alice()
    client.select("INBOX")
    typ, data = client.search(None, "SUBJECT", f'"{subject}"')
    assert typ == "OK" and data[0], "alice's mail did not follow her to mbx2"
    response = sip_invite("sip:4001@127.0.0.1")
    assert "\r\nContact: <sip:4001@127.0.0.1:5080>\r\n" in response, "the SIP redirect did not follow: " + response
    client.logout()
    assert backend_of_last_session(log_path.read_text(), "alice@example.com") == "mbx2"

    # Mail between demo users: submission as bob (through mbx2's submission service and the
    # outbound listener, back in through 1025), then POP3 as alice.
    subject = f"demo mail {uuid.uuid4()}"
    smtp = smtplib.SMTP("127.0.0.1", 1587, timeout=30)
    smtp.login("bob@example.com", lab.DEMO_PASSWORD)
    smtp.sendmail("bob@example.com", ["alice@example.com"], f"Subject: {subject}\r\n\r\nhi alice\r\n")
    smtp.quit()
    deadline = time.monotonic() + 20
    while True:
        pop = poplib.POP3("127.0.0.1", 1110, timeout=15)
        pop.user("alice@example.com")
        pop.pass_(lab.DEMO_PASSWORD)
        count, _ = pop.stat()
        found = any(f"Subject: {subject}".encode() in pop.retr(n)[1] for n in range(1, count + 1))
        pop.quit()
        if found:
            break
        assert time.monotonic() < deadline, "bob's message never reached alice"
        time.sleep(0.2)

    # HTTPS: the calendar's health page, and a CalDAV PROPFIND for alice — now on mbx2's Radicale.
    context = __import__("conftest").client_tls()
    conn = http.client.HTTPSConnection("127.0.0.1", 8443, context=context, timeout=20)
    conn.request("GET", "/calendar/healthcheck.htm")
    assert conn.getresponse().read() == b"cas1\n"
    auth = base64.b64encode(f"alice@example.com:{lab.DEMO_PASSWORD}".encode()).decode()
    conn.request("PROPFIND", "/dav/alice@example.com/", headers={"Authorization": f"Basic {auth}", "Depth": "0"})
    response = conn.getresponse()
    assert response.status == 207, response.read()
    response.read()
    conn.close()
    assert "backend=mbx2" in [l for l in log_path.read_text().splitlines() if "http request" in l][-1]

    bad = subprocess.run([str(DEMO), "switchover", "DB01", "mbx7"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "unknown server" in bad.stderr

    # A crash: mbx2 (both databases are active there now) is killed; the Active Manager sees it
    # down and moves both to mbx1 by itself; alice logs in again and finds her mail.
    offset = len(log_path.read_text())
    done = subprocess.run([str(DEMO), "fail", "mbx2"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 15
    while not all(re.search(rf"database moved .*database={db} from=mbx2 to=mbx1", log_path.read_text()[offset:])
                  for db in ("DB01", "DB02")):
        assert time.monotonic() < deadline, "the Active Manager never moved DB01 and DB02:\n" + log_path.read_text()[offset:]
        time.sleep(0.05)
    client = login_alice()
    client.select("INBOX")
    typ, data = client.search(None, "SUBJECT", f'"{subject}"')
    assert typ == "OK" and data[0], "alice's mail did not follow her to mbx1"
    client.logout()
    assert backend_of_last_session(log_path.read_text(), "alice@example.com") == "mbx1"
    done = subprocess.run([str(DEMO), "restore", "mbx2"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 15
    while not re.search(r"backend up .*server=mbx2 protocol=imap", log_path.read_text()[offset:]):
        assert time.monotonic() < deadline, "mailfront never saw mbx2 up again"
        time.sleep(0.05)
    assert lab.read_locations(lab.lab_root("demo") / "locations.toml") == {"DB01": "mbx1", "DB02": "mbx1"}

    # A clean stop on SIGTERM: everything it started is gone.
    dovecot_pids = [int((lab.lab_root("demo") / n / "run" / "master.pid").read_text()) for n in ("mbx1", "mbx2")]
    os.killpg(demo.pid, signal.SIGTERM)
    assert demo.wait(timeout=30) == 0
    assert not port_open(1143) and not port_open(10143) and not port_open(20143)
    assert not any(lab.alive(pid) for pid in dovecot_pids)


def test_demo_with_oidc_gives_tokens_that_log_in():
    """`scripts/demo --oidc`: a real OpenID provider on 127.0.0.1:9400; `scripts/demo token USER`
    prints a token that logs in to IMAP (XOAUTH2) and submission through mailfront."""
    with running_demo("--oidc"):
        assert port_open(9400)
        done = subprocess.run([str(DEMO), "token", "alice@example.com"], capture_output=True, text=True,
                              env=DEMO_ENV, timeout=120)
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip()
        assert token.count(".") == 2, token
        message = f"user=alice@example.com\x01auth=Bearer {token}\x01\x01"
        client = imaplib.IMAP4("127.0.0.1", 1143, timeout=15)
        assert "AUTH=XOAUTH2" in client.capabilities
        assert client.authenticate("XOAUTH2", lambda _: message.encode())[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
        client.logout()
        with smtplib.SMTP("127.0.0.1", 1587, timeout=15) as submission:
            submission.ehlo("client.example.org")
            assert submission.auth("XOAUTH2", lambda challenge=None: message if challenge is None else "")[0] == 235
