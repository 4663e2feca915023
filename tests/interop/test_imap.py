"""IMAP through mailfront to real Dovecot, driven by Python's own imaplib."""

from __future__ import annotations

import base64
import imaplib
import socket
import ssl
import subprocess
import time
import uuid

import pytest

from conftest import ACTIVE, AUTH_FAILURE_DELAY, BACKEND_LOGIN_TIMEOUT, PRE_AUTH_IDLE, client_tls, collect, lab

PASSWORD = lab.DEMO_PASSWORD


def message(subject: str) -> bytes:
    return (
        f"From: tester@example.org\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4()}@example.org>\r\n\r\nBody of {subject}.\r\n"
    ).encode()


def append_and_fetch(client: imaplib.IMAP4, subject: str, body: bytes | None = None) -> bytes:
    typ, _ = client.append("INBOX", None, None, body or message(subject))
    assert typ == "OK"
    typ, _ = client.select("INBOX")
    assert typ == "OK"
    typ, data = client.search(None, "SUBJECT", f'"{subject}"')
    assert typ == "OK" and data[0], data
    number = data[0].split()[-1]
    typ, fetched = client.fetch(number, "(RFC822)")
    assert typ == "OK"
    return fetched[0][1]


def test_login_append_fetch_select_search(lab_env):
    client = lab_env.imap()
    typ, data = client.login("alice@example.com", PASSWORD)
    assert typ == "OK"
    # The login reply carries the backend's post-login capabilities.
    assert b"[CAPABILITY IMAP4rev1" in data[0] and b"IDLE" in data[0]
    subject = f"walking skeleton {uuid.uuid4()}"
    # What comes back is byte for byte what went in.
    sent = message(subject)
    assert append_and_fetch(client, subject, sent) == sent
    assert client.logout()[0] == "BYE"


def test_authenticate_plain(lab_env):
    client = lab_env.imap()
    typ, _ = client.authenticate("PLAIN", lambda _: f"\0bob@example.com\0{PASSWORD}".encode())
    assert typ == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_login_with_alias(lab_env):
    client = lab_env.imap()
    assert client.login("Alice.Smith@example.com", PASSWORD)[0] == "OK"
    client.logout()
    assert lab_env.session_lines("alice@example.com")


def test_starttls_then_login(lab_env):
    client = lab_env.imap(lab_env.starttls_port)
    assert "LOGINDISABLED" in client.capabilities
    assert "STARTTLS" in client.capabilities
    typ, _ = client.starttls(ssl_context=client_tls())
    assert typ == "OK"
    assert "LOGINDISABLED" not in client.capabilities
    assert "AUTH=PLAIN" in client.capabilities
    assert client.login("alice@example.com", PASSWORD)[0] == "OK"
    subject = f"over starttls {uuid.uuid4()}"
    assert subject.encode() in append_and_fetch(client, subject)
    client.logout()


def test_implicit_tls(lab_env):
    client = lab_env.imaps()
    assert client.login("bob@example.com", PASSWORD)[0] == "OK"
    subject = f"over imaps {uuid.uuid4()}"
    assert subject.encode() in append_and_fetch(client, subject)
    client.logout()


def test_plaintext_auth_refused_without_tls(lab_env):
    client = lab_env.imap(lab_env.starttls_port)
    with pytest.raises(imaplib.IMAP4.error, match=r"PRIVACYREQUIRED"):
        client.login("alice@example.com", PASSWORD)
    with pytest.raises(imaplib.IMAP4.error, match=r"PRIVACYREQUIRED"):
        client.authenticate("PLAIN", lambda _: f"\0alice@example.com\0{PASSWORD}".encode())
    client.logout()


def failed_login(lab_env, user: str, password: str) -> tuple[str, float]:
    client = lab_env.imap()
    start = time.monotonic()
    try:
        client.login(user, password)
    except imaplib.IMAP4.error as e:
        elapsed = time.monotonic() - start
        client.logout()
        return str(e), elapsed
    raise AssertionError(f"{user} logged in with a wrong password")


def test_wrong_password_and_unknown_user_look_the_same(lab_env):
    wrong, t_wrong = failed_login(lab_env, "alice@example.com", "not-the-password")
    unknown, t_unknown = failed_login(lab_env, "nobody@example.com", "not-the-password")
    assert wrong == unknown == "b'[AUTHENTICATIONFAILED] Authentication failed.'"
    for elapsed in (t_wrong, t_unknown):
        assert AUTH_FAILURE_DELAY - 0.05 <= elapsed < AUTH_FAILURE_DELAY + 1.0
    assert abs(t_wrong - t_unknown) < 0.3


def test_protocol_disabled_for_user(lab_env):
    client = lab_env.imap()
    with pytest.raises(imaplib.IMAP4.error, match=r"CONTACTADMIN"):
        client.login("dave@example.com", PASSWORD)
    client.logout()


def test_authzid_for_another_user_is_refused(lab_env):
    client = lab_env.imap()
    with pytest.raises(imaplib.IMAP4.error, match=r"AUTHORIZATIONFAILED"):
        client.authenticate("PLAIN", lambda _: f"bob@example.com\0alice@example.com\0{PASSWORD}".encode())
    # Acting as oneself (by alias) is fine.
    client = lab_env.imap()
    typ, _ = client.authenticate(
        "PLAIN", lambda _: f"alice.smith@example.com\0alice@example.com\0{PASSWORD}".encode()
    )
    assert typ == "OK"
    client.logout()


def test_each_user_reaches_their_own_server(lab_env):
    for user, server in (("alice@example.com", "mbx1"), ("bob@example.com", "mbx2")):
        client = lab_env.imap()
        assert client.login(user, PASSWORD)[0] == "OK"
        client.logout()
        lines = lab_env.session_lines(user)
        assert lines and lines[-1]["backend"] == server, lines
    # The session end line carries bytes and duration.
    match = lab_env.wait_for_log(r"session ended session=\S+ client=\S+ protocol=imap user=bob@example.com "
                                 r"database=DB02 backend=mbx2 bytes_in=(\d+) bytes_out=(\d+) duration_ms=\d+ result=")
    assert int(match.group(1)) > 0 and int(match.group(2)) > 0


def test_backend_stopped_gives_prompt_unavailable(lab_env):
    mbx2 = lab_env.servers["mbx2"]
    mbx2.stop()
    try:
        client = lab_env.imap()
        start = time.monotonic()
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            client.login("bob@example.com", PASSWORD)
        assert time.monotonic() - start < AUTH_FAILURE_DELAY  # prompt: no failure delay either
        client.logout()
    finally:
        mbx2.start()
    client = lab_env.imap()
    assert client.login("bob@example.com", PASSWORD)[0] == "OK"
    client.logout()


def test_backend_that_never_answers_gives_unavailable_in_time(lab_env):
    client = lab_env.imap()
    start = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        client.login("carol@example.com", PASSWORD)
    elapsed = time.monotonic() - start
    assert BACKEND_LOGIN_TIMEOUT - 0.1 <= elapsed < BACKEND_LOGIN_TIMEOUT + 1.5
    client.logout()


def test_switchover_moves_new_logins_with_the_mail(lab_env):
    subject = f"before switchover {uuid.uuid4()}"
    client = lab_env.imap()
    client.login("alice@example.com", PASSWORD)
    append_and_fetch(client, subject)
    client.logout()
    assert lab_env.session_lines("alice@example.com")[-1]["backend"] == "mbx1"

    mbx2_logins = lab_env.servers["mbx2"].log_text().count("Login: user=<alice@example.com>")
    lab_env.set_active("DB01", "mbx2")
    try:
        client = lab_env.imap()
        client.login("alice@example.com", PASSWORD)
        assert lab_env.session_lines("alice@example.com")[-1]["backend"] == "mbx2"
        client.select("INBOX")
        typ, data = client.search(None, "SUBJECT", f'"{subject}"')
        assert typ == "OK" and data[0], "alice's mail is not on mbx2"
        client.logout()
        # mbx2's own log shows the login (mailfront's log could be wrong; Dovecot's is not).
        assert lab_env.servers["mbx2"].log_text().count("Login: user=<alice@example.com>") == mbx2_logins + 1
    finally:
        lab_env.set_active("DB01", "mbx1")


def test_invalid_location_change_is_rejected(lab_env):
    lab.write_locations(lab_env.locations, dict(ACTIVE, DB01="mbx9"))
    try:
        lab_env.wait_for_log(r"location map change rejected.*unknown server `mbx9`")
        client = lab_env.imap()
        client.login("alice@example.com", PASSWORD)
        assert lab_env.session_lines("alice@example.com")[-1]["backend"] == "mbx1"
        client.logout()
    finally:
        lab.write_locations(lab_env.locations, ACTIVE)


def raw(port: int, data: bytes, tls: ssl.SSLContext | None = None, read_for: float = 1.0) -> bytes:
    """Sends `data` right after the greeting and collects what comes back for `read_for` s."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn = tls.wrap_socket(sock) if tls else sock
        conn.recv(4096)
        conn.sendall(data)
        return collect(conn, read_for)


def test_commands_pipelined_after_starttls_are_discarded(lab_env):
    with socket.create_connection(("127.0.0.1", lab_env.starttls_port), timeout=5) as sock:
        assert sock.recv(4096).startswith(b"* OK")
        # The LOGIN rides in the same packet as STARTTLS, in clear text (CVE-2011-0411).
        sock.sendall(b"a STARTTLS\r\nb CAPABILITY\r\n")
        reply = b""
        while b"\r\n" not in reply:
            reply += sock.recv(4096)
        assert reply == b"a OK Begin TLS negotiation now.\r\n"
        tls = client_tls().wrap_socket(sock)
        tls.sendall(b"c NOOP\r\n")
        tls.settimeout(3)
        answer = tls.recv(4096)
        # Only our NOOP is answered; the pipelined CAPABILITY never ran.
        assert answer == b"c OK NOOP completed.\r\n"
        tls.close()


def test_login_forms_over_the_wire(lab_env):
    user = b"alice@example.com"
    pw = PASSWORD.encode()
    ir = base64.b64encode(b"\0" + user + b"\0" + pw)
    for command in (
        b"a LOGIN " + user + b" " + pw + b"\r\n",
        b'a LOGIN "' + user + b'" "' + pw + b'"\r\n',
        b"a LOGIN {%d+}\r\n" % len(user) + user + b" {%d+}\r\n" % len(pw) + pw + b"\r\n",
        b"a AUTHENTICATE PLAIN " + ir + b"\r\n",
    ):
        out = raw(lab_env.plain_port, command + b"z LOGOUT\r\n", read_for=2)
        assert b"a OK [CAPABILITY IMAP4rev1" in out, (command, out)
        # The pipelined LOGOUT went to the backend: Dovecot's goodbye.
        assert b"z OK Logout completed" in out, out


def test_limits(lab_env):
    # Line length (limits.max_line_length = 1024 in the lab).
    out = raw(lab_env.plain_port, b"a " + b"x" * 2000 + b"\r\n")
    assert out == b"* BYE Line too long.\r\n"
    # Commands before authentication (limits.max_commands_before_auth = 20).
    out = raw(lab_env.plain_port, b"".join(b"n%d NOOP\r\n" % i for i in range(25)))
    assert out.endswith(b"n19 OK NOOP completed.\r\n* BYE Too many commands before authentication.\r\n")
    # Literal size (default limits.max_literal_size = 16 KiB): refused, the session goes on.
    out = raw(lab_env.plain_port, b"a LOGIN {99999}\r\nb NOOP\r\n")
    assert out == b"a BAD Literal too large.\r\nb OK NOOP completed.\r\n"


def test_pre_auth_idle_timeout(lab_env):
    with socket.create_connection(("127.0.0.1", lab_env.plain_port), timeout=PRE_AUTH_IDLE + 5) as sock:
        assert sock.recv(4096).startswith(b"* OK")
        start = time.monotonic()
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data == b"* BYE Disconnected for inactivity.\r\n"
        assert PRE_AUTH_IDLE - 0.2 <= time.monotonic() - start < PRE_AUTH_IDLE + 2


def test_passwords_never_reach_the_log(lab_env):
    client = lab_env.imap()
    client.login("alice@example.com", PASSWORD)
    client.logout()
    failed_login(lab_env, "alice@example.com", "wrong-secret-xyz")
    text = lab_env.log()
    assert PASSWORD not in text
    assert "wrong-secret-xyz" not in text
    assert lab.master_password(lab_env.root) not in text


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)


def test_check_command(lab_env, tmp_path):
    ok = run(str(lab_env.binary), "check", "--config", str(lab_env.config))
    assert ok.returncode == 0, ok.stderr
    # Every [[listener]] of the lab's configuration counts (other tests' suites add their own).
    listeners = len(lab.read_toml(lab_env.config)["listener"])
    assert f"OK (8 servers, 11 users, 8 databases located, {listeners} listeners)" in ok.stdout

    settings = lab.read_toml(lab_env.config)
    settings["server"][0]["version"] = "x"
    broken = lab.write_toml(tmp_path / "broken.toml", settings)
    bad = run(str(lab_env.binary), "check", "--config", str(broken))
    assert bad.returncode != 0
    assert "server[0].version" in bad.stderr

    # {PLAIN} passwords are accepted with a warning.
    users = lab.write_toml(tmp_path / "users.toml", {"user": [
        {"address": "p@example.com", "password": "{PLAIN}x", "mailbox_guid": "g", "database": "DB01", "version": "15"},
    ]})
    settings = lab.read_toml(lab_env.config)
    settings["directory"]["path"] = users
    plain_cfg = lab.write_toml(tmp_path / "plain.toml", settings)
    warned = run(str(lab_env.binary), "check", "--config", str(plain_cfg))
    assert warned.returncode == 0, warned.stderr
    assert "warning: directory: p@example.com has a {PLAIN} password" in warned.stderr


def test_route_command(lab_env):
    out = run(str(lab_env.binary), "route", "--config", str(lab_env.config), "alice.smith@example.com")
    assert out.returncode == 0, out.stderr
    assert "user:     alice@example.com (database DB01, version 15.1.0)" in out.stdout
    assert "decision: proxy to mbx1 (127.0.0.1:" in out.stdout
    assert "reason:   the active copy of DB01 is on mbx1 (site lab): proxied" in out.stdout
    unknown = run(str(lab_env.binary), "route", "--config", str(lab_env.config), "nobody@example.com")
    assert "decision: reject (permanent)" in unknown.stdout


def test_hash_password_is_read_by_dovecot(lab_env):
    for scheme in ("SHA512-CRYPT", "BLF-CRYPT", "SSHA512"):
        hashed = run(str(lab_env.binary), "hash-password", "--scheme", scheme, stdin="s3cret pw\n")
        assert hashed.returncode == 0, hashed.stderr
        assert hashed.stdout.startswith("{" + scheme + "}")
        verified = run("doveadm", "pw", "-t", hashed.stdout.strip(), "-p", "s3cret pw")
        assert verified.returncode == 0 and "verified" in verified.stdout + verified.stderr


@pytest.mark.parametrize("user, server", [("erin@example.com", "mbx3"), ("frank@example.com", "mbx3s")])
def test_tls_to_the_backend(lab_env, user, server):
    """mbx3 has a certificate from a private CA; mailfront trusts that CA (backend_tls.ca_file)
    and reaches it with STARTTLS (mbx3) or implicit TLS (mbx3s, the same Dovecot's IMAPS port)."""
    client = lab_env.imap()
    assert client.login(user, PASSWORD)[0] == "OK"
    subject = f"over backend tls {uuid.uuid4()}"
    assert subject.encode() in append_and_fetch(client, subject)
    client.logout()
    assert lab_env.session_lines(user)[-1]["backend"] == server
    # Dovecot's own log: the session came in over TLS.
    logins = [l for l in lab_env.servers["mbx3"].log_text().splitlines() if f"Login: user=<{user}>" in l]
    assert logins and "TLS" in logins[-1], logins


@pytest.mark.parametrize(
    "user, password, server",
    [
        ("grace@example.com", PASSWORD, "mbx1-login"),
        ("heidi@example.com", PASSWORD, "mbx1-passthrough"),
        ("ivan@example.com", "pässwörd with spaces", "mbx1-passthrough-login"),
    ],
)
def test_backend_login_methods(lab_env, user, password, server):
    """Master user with LOGIN "user*master", and the user's own credentials (PLAIN and LOGIN,
    including a non-ASCII password that must travel as a literal), against real Dovecot."""
    client = lab_env.imap()
    typ, _ = client.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())
    assert typ == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()
    assert lab_env.session_lines(user)[-1]["backend"] == server


def test_authenticate_login_mechanism(lab_env):
    answers = iter([b"alice@example.com", PASSWORD.encode()])
    client = lab_env.imap()
    typ, _ = client.authenticate("LOGIN", lambda challenge: next(answers))
    assert typ == "OK"
    client.logout()


def test_failover_closes_live_sessions(lab_env):
    """A session open on mbx1 when DB01 moves to mbx2 is closed with BYE [UNAVAILABLE]; bob's
    session (DB02) is untouched; alice's next login lands on mbx2."""
    alice = lab_env.imap()
    alice.login("alice@example.com", PASSWORD)
    alice.select("INBOX")
    bob = lab_env.imap()
    bob.login("bob@example.com", PASSWORD)
    bob.select("INBOX")
    lab_env.set_active("DB01", "mbx2")
    try:
        lab_env.wait_for_log(r"failover: closing sessions on the previous server database=DB01 from=mbx1 to=mbx2 sessions=1")
        # The BYE is waiting for imaplib; its next command sees it.
        with pytest.raises(imaplib.IMAP4.abort, match=r"UNAVAILABLE"):
            alice.noop()
        assert bob.noop()[0] == "OK"
        again = lab_env.imap()
        again.login("alice@example.com", PASSWORD)
        assert lab_env.session_lines("alice@example.com")[-1]["backend"] == "mbx2"
        again.logout()
        lab_env.wait_for_log(r"user=alice@example.com database=DB01 backend=mbx1 bytes_in=\d+ bytes_out=\d+ duration_ms=\d+ result=failover")
    finally:
        lab_env.set_active("DB01", "mbx1")
        bob.logout()


def test_a_maximal_rfc2971_id_passes_the_default_line_limit_and_a_longer_line_gets_bye(lab_env):
    """RFC 2971 allows 30 fields of up to 1024-octet values: ~32 KiB on one line, which the
    default `limits.max_line_length` (64 KiB) admits before login; a longer line hears BYE."""
    from conftest import node_settings, read_until
    port = lab.free_port()
    settings = node_settings(lab_env, "id-node", [lab.listener(None, "imap", port, "none", allow_plaintext_auth=True)])
    settings["limits"].pop("max_line_length")  # the default
    node = lab.Mailfront(lab_env.binary, lab.write_toml(lab_env.root / "id-node.toml", settings),
                         lab_env.root / "id-node.log")
    node.start()
    try:
        pairs = " ".join(f'"{f"field{i:02d}".ljust(30, "x")}" "{"v" * 1024}"' for i in range(30))
        line = f"a1 ID ({pairs})\r\n".encode()
        assert len(line) > 31_000
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            assert read_until(sock, b"\r\n").startswith(b"* OK")
            sock.sendall(line)
            assert b"a1 OK" in read_until(sock, b"a1 ")
            sock.sendall(f"a2 LOGIN alice@example.com {PASSWORD}\r\n".encode())
            assert b"a2 OK" in read_until(sock, b"a2 ")
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            read_until(sock, b"\r\n")
            sock.sendall(b"a1 NOOP " + b"x" * (65 * 1024) + b"\r\n")
            assert b"* BYE Line too long." in read_until(sock, b"Line too long.")
    finally:
        node.stop()


def test_a_site_that_refers_imap_logins_gets_an_rfc2221_referral_a_client_can_follow(lab_env):
    """`[[site]] mail_redirect = "referral"`: bob's mailbox (on mbx2, here in site east) is not
    proxied from this site: his login hears `NO [REFERRAL imap://…]`, whose URL names him and
    east's IMAP host; alice (this site) is proxied as ever."""
    import urllib.parse
    from conftest import node_settings
    port = lab.free_port()
    settings = node_settings(lab_env, "referring", [lab.listener(None, "imap", port, "none", allow_plaintext_auth=True)])
    [mbx2] = [server for server in settings["server"] if server["name"] == "mbx2"]
    mbx2["site"] = "east"
    settings["site"] = [{"name": "lab"},
                        {"name": "east", "mail_redirect": "referral", "imap_host": "imap.east.example.com:1993"}]
    node = lab.Mailfront(lab_env.binary, lab.write_toml(lab_env.root / "referring.toml", settings),
                         lab_env.root / "referring.log")
    node.start()
    try:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=15)
        assert "LOGIN-REFERRALS" in client.capabilities
        with pytest.raises(imaplib.IMAP4.error) as refused:
            client.login("bob@example.com", PASSWORD)
        text = str(refused.value)
        url = text[text.index("[REFERRAL ") + len("[REFERRAL "):text.index("]")]
        parts = urllib.parse.urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == ("imap", "imap.east.example.com", 1993), url
        assert urllib.parse.unquote(parts.username) == "bob@example.com;AUTH=*", url
        client.logout()
        client = imaplib.IMAP4("127.0.0.1", port, timeout=15)
        assert client.login("alice@example.com", PASSWORD)[0] == "OK"
        client.logout()
        assert "login referred" in node.log_since_start() and "site east" in node.log_since_start()
    finally:
        node.stop()
