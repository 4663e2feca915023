"""POP3 through mailfront to real Dovecot, driven by Python's own poplib."""

from __future__ import annotations

import base64
import imaplib
import poplib
import socket
import time
import uuid

import pytest

from conftest import AUTH_FAILURE_DELAY, client_tls, collect, lab

PASSWORD = lab.DEMO_PASSWORD


def put_message(lab_env, user: str, subject: str) -> bytes:
    """Stores a message in `user`'s INBOX over IMAP (through mailfront) and returns it."""
    body = f"From: t@example.org\r\nSubject: {subject}\r\n\r\nPOP me.\r\n".encode()
    client = imaplib.IMAP4("127.0.0.1", lab_env.plain_port, timeout=15)
    client.login(user, PASSWORD)
    assert client.append("INBOX", None, None, body)[0] == "OK"
    client.logout()
    return body


def retr_by_subject(pop: poplib.POP3, subject: str) -> list[bytes]:
    count, _ = pop.stat()
    for n in range(count, 0, -1):
        _, lines, _ = pop.retr(n)
        if f"Subject: {subject}".encode() in lines:
            return lines
    raise AssertionError(f"no message with subject {subject!r} among {count}")


def test_user_pass_stat_retr(lab_env):
    subject = f"pop {uuid.uuid4()}"
    put_message(lab_env, "bob@example.com", subject)
    pop = poplib.POP3("127.0.0.1", lab_env.pop3_plain_port, timeout=15)
    assert pop.getwelcome().startswith(b"+OK")
    assert pop.user("bob@example.com").startswith(b"+OK")
    assert pop.pass_(PASSWORD) == b"+OK Logged in."
    lines = retr_by_subject(pop, subject)
    assert b"POP me." in lines
    assert pop.quit().startswith(b"+OK")
    assert lab_env.session_lines("bob@example.com")[-1]["backend"] == "mbx2"
    assert "protocol=pop3" in lab_env.log()


def test_capa_and_stls(lab_env):
    pop = poplib.POP3("127.0.0.1", lab_env.pop3_starttls_port, timeout=15)
    caps = pop.capa()
    assert "STLS" in caps and "USER" not in caps and "SASL" not in caps
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Plaintext authentication disallowed"):
        pop.user("alice@example.com")
    assert pop.stls(context=client_tls()).startswith(b"+OK")
    caps = pop.capa()
    assert "STLS" not in caps and "USER" in caps and caps["SASL"] == ["PLAIN", "LOGIN"]
    pop.user("alice@example.com")
    assert pop.pass_(PASSWORD) == b"+OK Logged in."
    pop.stat()
    pop.quit()


def test_implicit_tls(lab_env):
    pop = poplib.POP3_SSL("127.0.0.1", lab_env.pop3_implicit_port, context=client_tls(), timeout=15)
    pop.user("alice@example.com")
    assert pop.pass_(PASSWORD) == b"+OK Logged in."
    pop.stat()
    pop.quit()


def pop_failure(lab_env, user: str, password: str) -> tuple[str, float]:
    pop = poplib.POP3("127.0.0.1", lab_env.pop3_plain_port, timeout=15)
    pop.user(user)
    start = time.monotonic()
    with pytest.raises(poplib.error_proto) as failure:
        pop.pass_(password)
    elapsed = time.monotonic() - start
    pop.close()
    return str(failure.value), elapsed


def test_bad_credentials_look_the_same(lab_env):
    wrong, t1 = pop_failure(lab_env, "alice@example.com", "nope")
    unknown, t2 = pop_failure(lab_env, "nobody@example.com", "nope")
    assert wrong == unknown == "b'-ERR [AUTH] Authentication failed.'"
    assert min(t1, t2) >= AUTH_FAILURE_DELAY - 0.05 and abs(t1 - t2) < 0.3


def test_backend_down_is_temporary(lab_env):
    lab_env.servers["mbx2"].stop()
    try:
        message, elapsed = pop_failure(lab_env, "bob@example.com", PASSWORD)
        assert message.startswith("b'-ERR [SYS/TEMP]"), message
        assert elapsed < AUTH_FAILURE_DELAY
    finally:
        lab_env.servers["mbx2"].start()


def test_pop3_only_user_and_imap_refusal(lab_env):
    pop = poplib.POP3("127.0.0.1", lab_env.pop3_plain_port, timeout=15)
    pop.user("dave@example.com")
    assert pop.pass_(PASSWORD) == b"+OK Logged in."
    pop.quit()


def raw_session(port: int, lines: list[bytes], read_for: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.recv(4096)
        sock.sendall(b"".join(lines))
        return collect(sock, read_for)


def test_auth_plain_and_pipelining(lab_env):
    ir = base64.b64encode(f"\0alice@example.com\0{PASSWORD}".encode())
    out = raw_session(lab_env.pop3_plain_port, [b"AUTH PLAIN " + ir + b"\r\n", b"STAT\r\n", b"QUIT\r\n"])
    assert out.startswith(b"+OK Logged in.\r\n+OK "), out
    assert out.rstrip().endswith(b"Logging out.") , out


def test_auth_login_with_continuations(lab_env):
    out = raw_session(
        lab_env.pop3_plain_port,
        [b"AUTH LOGIN\r\n", base64.b64encode(b"alice@example.com") + b"\r\n",
         base64.b64encode(PASSWORD.encode()) + b"\r\n", b"QUIT\r\n"],
    )
    assert out.startswith(b"+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK Logged in.\r\n"), out


def test_pass_through_login(lab_env):
    """heidi's server takes her own credentials (no master user) over POP3 too."""
    pop = poplib.POP3("127.0.0.1", lab_env.pop3_plain_port, timeout=15)
    pop.user("heidi@example.com")
    assert pop.pass_(PASSWORD) == b"+OK Logged in."
    pop.quit()
    assert lab_env.session_lines("heidi@example.com")[-1]["backend"] == "mbx1-passthrough"
