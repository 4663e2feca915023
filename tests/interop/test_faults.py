"""Fault injection with real processes, killed and hung for real: a mailbox server killed under
live IMAP, POP3 and submission sessions; a mailbox server that accepts and never answers; and
mailfront itself SIGKILLed while clients deliver mail through the front-end transport — every
message a client got `250` for is in the mailbox exactly once.

(The directory and the location store killed and restarted are in test_ldap_etcd.py.)"""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import signal
import smtplib
import socket
import threading
import time
import uuid

import pytest

import lab
from conftest import BACKEND_LOGIN_TIMEOUT, DELIVERY_TIMEOUT, start_node, wait_until

PASSWORD = lab.DEMO_PASSWORD


def kill_dovecot(server: lab.Dovecot) -> None:
    """SIGKILL to the whole server, master and every login and mail process, at once."""
    pids = lab.process_tree(server.pid())
    assert len(pids) > 1, "a live session should have its own mail process"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not any(lab.alive(p) for p in pids), what="Dovecot gone")
    # A killed master leaves its pid file; where nobody reaps it (a container's PID 1), its
    # zombie still answers kill(pid, 0) and a new Dovecot would think it is running.
    (server.dir / "run" / "master.pid").unlink(missing_ok=True)


def ended_lines(log: str, user: str) -> list[str]:
    return [l for l in log.splitlines() if "session ended " in l and f"user={user}" in l]


def test_mailbox_server_killed_under_live_sessions(lab_env):
    mbx2 = lab_env.servers["mbx2"]
    imap = imaplib.IMAP4("127.0.0.1", lab_env.plain_port, timeout=10)
    imap.login("bob@example.com", PASSWORD)
    imap.select("INBOX")
    pop = poplib.POP3("127.0.0.1", lab_env.pop3_plain_port, timeout=10)
    pop.user("bob@example.com")
    pop.pass_(PASSWORD)
    submission = smtplib.SMTP("127.0.0.1", lab_env.submission_port, timeout=10)
    submission.ehlo("client.example")
    submission.login("bob@example.com", PASSWORD)
    before = len(ended_lines(lab_env.log(), "bob@example.com"))
    started = time.monotonic()
    kill_dovecot(mbx2)
    try:
        # Each client sees its session end (an error or end of stream), promptly: no hang.
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            for _ in range(100):
                imap.noop()
                time.sleep(0.05)
        with pytest.raises((poplib.error_proto, OSError)):
            for _ in range(100):
                pop.stat()
                time.sleep(0.05)
        with pytest.raises((smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError)):
            for _ in range(100):
                code, _ = submission.noop()
                if code != 250:
                    raise smtplib.SMTPResponseException(code, b"")
                time.sleep(0.05)
        assert time.monotonic() - started < 8
        # mailfront logged every one of them, with how it ended, and did not crash.
        lines = wait_until(lambda: (lambda l: l if len(l) >= before + 3 else None)(
            ended_lines(lab_env.log(), "bob@example.com")), what="three sessions logged as ended")
        for protocol in ("imap", "pop3", "submission"):
            assert any(f"protocol={protocol}" in l and re.search(r"result=backend-(closed|error)", l)
                       for l in lines[before:]), (protocol, lines[before:])
        assert "panicked" not in lab_env.log()
        # While the server is gone: a prompt temporary error, not a hang.
        client = imaplib.IMAP4("127.0.0.1", lab_env.plain_port, timeout=10)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            client.login("bob@example.com", PASSWORD)
        client.logout()
    finally:
        mbx2.start()
    client = imaplib.IMAP4("127.0.0.1", lab_env.plain_port, timeout=10)
    assert client.login("bob@example.com", PASSWORD)[0] == "OK"
    client.logout()


def test_mailbox_server_that_never_answers(lab_env):
    """carol's server accepts connections and says nothing: every protocol gives its own
    temporary error within the configured timeout."""
    started = time.monotonic()
    pop = poplib.POP3("127.0.0.1", lab_env.pop3_plain_port, timeout=15)
    pop.user("carol@example.com")
    with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\]"):
        pop.pass_(PASSWORD)
    elapsed = time.monotonic() - started
    assert BACKEND_LOGIN_TIMEOUT - 0.1 <= elapsed < BACKEND_LOGIN_TIMEOUT + 1.5, elapsed
    pop.close()

    submission = smtplib.SMTP("127.0.0.1", lab_env.submission_port, timeout=15)
    submission.ehlo("client.example")
    started = time.monotonic()
    # One AUTH PLAIN (smtplib's login() would try LOGIN too after a refusal).
    submission.user, submission.password = "carol@example.com", PASSWORD
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        submission.auth("PLAIN", submission.auth_plain)
    elapsed = time.monotonic() - started
    assert refused.value.smtp_code == 454, refused.value
    assert BACKEND_LOGIN_TIMEOUT - 0.1 <= elapsed < BACKEND_LOGIN_TIMEOUT + 1.5, elapsed
    submission.close()

    inbound = smtplib.SMTP("127.0.0.1", lab_env.smtp_port, timeout=15)
    inbound.ehlo("sender.example")
    inbound.mail("someone@sender.example")
    inbound.rcpt("carol@example.com")
    started = time.monotonic()
    # The delivery server is opened at DATA: it never greets, so DATA itself is refused.
    with pytest.raises(smtplib.SMTPDataError) as refused:
        inbound.data(b"Subject: to a silent server\r\n\r\nhello\r\n")
    elapsed = time.monotonic() - started
    assert refused.value.smtp_code == 451, refused.value
    assert elapsed < DELIVERY_TIMEOUT + 2, elapsed
    inbound.close()


# --- mailfront killed during delivery ---------------------------------------------------------


class Sender(threading.Thread):
    """Sends numbered messages to alice through one SMTP listener until told to stop; records
    which got `250`."""

    def __init__(self, port: int, run: str, number: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.run_id, self.number, self.stop_event = port, run, number, stop
        self.acknowledged: list[str] = []
        self.attempted: list[str] = []
        self.errors = 0

    def run(self):
        n = 0
        while not self.stop_event.is_set():
            tag = f"{self.run_id}-{self.number}-{n}"
            n += 1
            self.attempted.append(tag)
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
                    smtp.sendmail("sender@remote.example", ["alice@example.com"],
                                  f"Subject: {tag}\r\nMessage-ID: <{tag}@remote.example>\r\n\r\n{tag}\r\n"
                                  .encode())
                self.acknowledged.append(tag)
            except (smtplib.SMTPException, OSError):
                self.errors += 1
                time.sleep(0.05)


def subjects_in_inbox(lab_env, prefix: str) -> list[str]:
    client = imaplib.IMAP4("127.0.0.1", lab_env.plain_port, timeout=30)
    client.login("alice@example.com", PASSWORD)
    client.select("INBOX")
    _, data = client.search(None, "SUBJECT", f'"{prefix}"')
    subjects = []
    if data[0]:
        ids = b",".join(data[0].split())
        _, fetched = client.fetch(ids, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        for item in fetched:
            if isinstance(item, tuple):
                m = re.search(rb"Subject: (\S+)", item[1])
                if m:
                    subjects.append(m.group(1).decode())
    client.logout()
    return subjects


def test_mailfront_killed_while_clients_deliver_loses_and_duplicates_nothing(lab_env):
    smtp = lab.free_port()
    listeners = [{"protocol": "smtp", "address": f"127.0.0.1:{smtp}", "tls": "none"}]
    node = start_node(lab_env, "killed", listeners)
    run = f"kill{uuid.uuid4().hex[:8]}"
    stop = threading.Event()
    senders = [Sender(smtp, run, i, stop) for i in range(4)]
    try:
        for s in senders:
            s.start()
        wait_until(lambda: sum(len(s.acknowledged) for s in senders) >= 20, timeout=30, what="mail flowing")
        # Mid-stream: no warning, no shutdown, no cleanup.
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=10)
        failed_during_outage = wait_until(lambda: sum(s.errors for s in senders), what="clients seeing the outage")
        node.start()
        acknowledged_before = sum(len(s.acknowledged) for s in senders)
        wait_until(lambda: sum(len(s.acknowledged) for s in senders) >= acknowledged_before + 20, timeout=30,
                   what="mail flowing again after the restart")
    finally:
        stop.set()
        for s in senders:
            s.join(timeout=20)
        node.stop()
    acknowledged = [tag for s in senders for tag in s.acknowledged]
    attempted = [tag for s in senders for tag in s.attempted]
    assert failed_during_outage >= 1 and len(acknowledged) >= 40
    # Deliveries finish after the reply: poll until every acknowledged message is there.
    wait_until(lambda: set(acknowledged) <= set(subjects_in_inbox(lab_env, run)), timeout=30,
               what="every acknowledged message in the mailbox")
    counts: dict[str, int] = {}
    for subject in subjects_in_inbox(lab_env, run):
        counts[subject] = counts.get(subject, 0) + 1
    # Every acknowledged message exactly once; a message without its 250 at most once (the
    # client did not retry it here); nothing that was never sent.
    assert all(counts.get(tag) == 1 for tag in acknowledged), {t: counts.get(t) for t in acknowledged
                                                              if counts.get(t) != 1}
    assert all(c == 1 for c in counts.values())
    assert set(counts) <= set(attempted)
