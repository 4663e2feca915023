"""SMTP through mailfront: inbound (front-end transport) to real Dovecot LMTP, submission to
real Dovecot submission, and outbound to the relay host. Clients: swaks, smtplib, raw sockets."""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import socket
import subprocess
import time
import uuid

import pytest

from conftest import DELIVERY_TIMEOUT, client_tls, collect, lab, read_until

PASSWORD = lab.DEMO_PASSWORD


def swaks(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", "--hide-informational", *args], capture_output=True, text=True, timeout=timeout)


def mailbox_has(lab_env, user: str, subject: str, timeout: float = 15.0) -> bytes:
    """Polls `user`'s INBOX (through mailfront) until a message with `subject` is there."""
    deadline = time.monotonic() + timeout
    while True:
        client = imaplib.IMAP4("127.0.0.1", lab_env.plain_port, timeout=15)
        client.login(user, PASSWORD)
        client.select("INBOX")
        _, data = client.search(None, "SUBJECT", f'"{subject}"')
        if data[0]:
            _, fetched = client.fetch(data[0].split()[-1], "(RFC822)")
            client.logout()
            return fetched[0][1]
        client.logout()
        assert time.monotonic() < deadline, f"{subject!r} never reached {user}"
        time.sleep(0.1)


def count_in_mailbox(lab_env, user: str, text: str) -> int:
    client = imaplib.IMAP4("127.0.0.1", lab_env.plain_port, timeout=15)
    client.login(user, PASSWORD)
    client.select("INBOX")
    _, data = client.search(None, "TEXT", f'"{text}"')
    client.logout()
    return len(data[0].split())


def message_lines(lab_env) -> list[str]:
    return [l for l in lab_env.log().splitlines() if "message delivered" in l or "message not delivered" in l]


def test_inbound_to_one_recipient(lab_env):
    subject = f"inbound {uuid.uuid4()}"
    done = swaks("--server", "127.0.0.1", "--port", str(lab_env.smtp_port), "--from", "sender@remote.org",
                 "--to", "alice@example.com", "--header", f"Subject: {subject}", "--body", "hello alice")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"<- {2}250 2\.0\.0 Message accepted for delivery to 1 recipient", done.stdout), done.stdout
    body = mailbox_has(lab_env, "alice@example.com", subject)
    assert b"hello alice" in body
    last = message_lines(lab_env)[-1]
    assert "backend=mbx1" in last and "recipients=1" in last


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_inbound_mail_carries_a_received_header_naming_client_node_tls_and_session(lab_env, tls):
    """RFC 5321 §4.4: mailfront adds its trace line, read back over IMAP below the one Dovecot's
    LMTP adds: the client's EHLO name and address, the node, ESMTP(S) with the TLS parameters,
    the session id of mailfront's log, the single recipient, the date."""
    subject = f"traced {uuid.uuid4()}"
    done = swaks("--server", "127.0.0.1", "--port", str(lab_env.smtp_port), "--ehlo", "client.example.org",
                 "--from", "sender@remote.org", "--to", "alice@example.com", "--header", f"Subject: {subject}",
                 *(["--tls"] if tls else []))
    assert done.returncode == 0, done.stdout + done.stderr
    message = mailbox_has(lab_env, "alice@example.com", subject).decode()
    session = re.search(r"session=(\S+)", message_lines(lab_env)[-1]).group(1)
    headers = [re.sub(r"\r\n\s+", " ", h) for h in re.split(r"\r\n(?=\S)", message.split("\r\n\r\n")[0])]
    # Dovecot's own line (from XCLIENT, the same client) comes first; ours is the next.
    unfolded = next((h for h in headers if h.startswith("Received:") and " (mailfront) " in h), None)
    assert unfolded is not None, message
    node = lab_env.settings["node"]["name"]
    assert unfolded.startswith(f"Received: from client.example.org ([127.0.0.1]) by {node} (mailfront)"), unfolded
    assert f" id {session} for <alice@example.com>; " in unfolded, unfolded
    assert (" (using TLSv1.3 with cipher TLS13_" in unfolded and " with ESMTPS " in unfolded) if tls \
        else (" with ESMTP " in unfolded and "using" not in unfolded), unfolded
    assert re.search(r"; \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000$", unfolded), unfolded


def test_the_mailbox_server_sees_the_real_client_through_xclient(lab_env):
    """Dovecot's LMTP offers XCLIENT to mailfront (the lab's login_trusted_networks): the line
    Dovecot itself adds names the client's EHLO name and address — 127.0.0.2 here, while
    mailfront connects to Dovecot from 127.0.0.1 with its own LHLO name."""
    subject = f"xclient {uuid.uuid4()}"
    done = swaks("--server", "127.0.0.1", "--port", str(lab_env.smtp_port), "--local-interface", "127.0.0.2",
                 "--ehlo", "far.example.net", "--from", "sender@remote.org", "--to", "alice@example.com",
                 "--header", f"Subject: {subject}")
    assert done.returncode == 0, done.stdout + done.stderr
    message = mailbox_has(lab_env, "alice@example.com", subject).decode()
    headers = [re.sub(r"\r\n\s+", " ", h) for h in re.split(r"\r\n(?=\S)", message.split("\r\n\r\n")[0])]
    dovecots = [h for h in headers if h.startswith("Received:") and " with LMTP " in h]
    assert dovecots, headers
    assert dovecots[0].startswith("Received: from far.example.net ([127.0.0.2])"), dovecots[0]


def test_inbound_alias_and_two_recipients_one_message(lab_env):
    subject = f"both {uuid.uuid4()}"
    before = len(message_lines(lab_env))
    done = swaks("--server", "127.0.0.1", "--port", str(lab_env.smtp_port), "--from", "sender@remote.org",
                 "--to", "alice.smith@example.com,bob@example.com", "--header", f"Subject: {subject}")
    assert done.returncode == 0, done.stdout
    mailbox_has(lab_env, "alice@example.com", subject)
    mailbox_has(lab_env, "bob@example.com", subject)
    # One message to one backend (no bifurcation), for both recipients.
    lines = message_lines(lab_env)[before:]
    assert len(lines) == 1 and "recipients=2" in lines[0], lines


def test_unknown_recipient_and_relaying(lab_env):
    unknown = swaks("--server", "127.0.0.1", "--port", str(lab_env.smtp_port), "--to", "nobody@example.com")
    assert unknown.returncode == 24, unknown.stdout
    assert "<** 550 5.1.1 User unknown" in unknown.stdout
    relay = swaks("--server", "127.0.0.1", "--port", str(lab_env.smtp_port), "--to", "victim@elsewhere.org")
    assert relay.returncode == 24, relay.stdout
    assert "<** 554 5.7.1 Relaying denied" in relay.stdout


def smtp_session(port: int, lines: list[bytes], source: str = "127.0.0.1", read_for: float = 3.0) -> bytes:
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        out = sock.recv(4096)
        for line in lines:
            sock.sendall(line)
        return out + collect(sock, read_for)


def test_oversized_messages(lab_env):
    out = smtp_session(lab_env.smtp_port, [b"EHLO t\r\n", b"MAIL FROM:<a@remote.org> SIZE=999999\r\n", b"QUIT\r\n"])
    assert b"552 5.3.4 Message size exceeds fixed maximum message size\r\n" in out
    subject = f"too big {uuid.uuid4()}"
    big = b"x" * 1000 + b"\r\n"
    lines = [b"EHLO t\r\n", b"MAIL FROM:<a@remote.org>\r\n", b"RCPT TO:<alice@example.com>\r\n", b"DATA\r\n"]
    out = smtp_session(lab_env.smtp_port, lines, read_for=1.0)
    with socket.create_connection(("127.0.0.1", lab_env.smtp_port), timeout=10) as sock:
        sock.recv(4096)
        sock.sendall(b"".join(lines))
        read_until(sock, b"354")
        sock.sendall(f"Subject: {subject}\r\n\r\n".encode() + big * 300 + b".\r\nQUIT\r\n")
        reply = read_until(sock, b"221")
    assert b"552 5.3.4 Message size exceeds fixed maximum message size\r\n" in reply, reply
    assert count_in_mailbox(lab_env, "alice@example.com", subject) == 0


def test_delivery_falls_back_to_another_server(lab_env):
    subject = f"fallback {uuid.uuid4()}"
    mbx1 = lab_env.servers["mbx1"]
    mbx1.stop()
    try:
        done = swaks("--server", "127.0.0.1", "--port", str(lab_env.smtp_port), "--to", "alice@example.com",
                     "--header", f"Subject: {subject}")
        assert done.returncode == 0, done.stdout
        last = message_lines(lab_env)[-1]
        assert "message delivered" in last and "backend=mbx2" in last, last
        assert "delivery server unreachable; trying the next candidate" in lab_env.log()
    finally:
        mbx1.start()
    mailbox_has(lab_env, "alice@example.com", subject)


def test_no_server_left_is_451(lab_env):
    start = time.monotonic()
    done = swaks("--server", "127.0.0.1", "--port", str(lab_env.smtp_port), "--to", "carol@example.com")
    assert "<** 451 4.4.0 No mailbox server available, try again later" in done.stdout, done.stdout
    assert time.monotonic() - start < DELIVERY_TIMEOUT + 5


def test_smuggling_attempt_is_one_message(lab_env):
    marker = uuid.uuid4().hex
    smuggled = (
        f"Subject: smuggle {marker}\r\n\r\nbefore\n.\nMAIL FROM:<admin@example.com>\nRCPT TO:<bob@example.com>\n"
        f"DATA\nSubject: forged {marker}\n\nforged\n.\r\n"
    ).encode()
    lines = [b"EHLO t\r\n", b"MAIL FROM:<a@remote.org>\r\n", b"RCPT TO:<alice@example.com>\r\n", b"DATA\r\n"]
    with socket.create_connection(("127.0.0.1", lab_env.smtp_port), timeout=10) as sock:
        sock.recv(4096)
        sock.sendall(b"".join(lines))
        read_until(sock, b"354")
        sock.sendall(smuggled + b"\r\n.\r\nQUIT\r\n")
        reply = read_until(sock, b"221")
    assert b"250 2.0.0 Message accepted for delivery to 1 recipient(s)" in reply, reply
    body = mailbox_has(lab_env, "alice@example.com", f"smuggle {marker}")
    assert b"MAIL FROM:<admin@example.com>" in body
    # Nothing reached bob.
    assert count_in_mailbox(lab_env, "bob@example.com", marker) == 0


def test_bdat_chunking(lab_env):
    subject = f"bdat {uuid.uuid4()}"
    content = f"Subject: {subject}\r\n\r\nchunked body\r\n".encode()
    first, second = content[:20], content[20:]
    out = smtp_session(lab_env.smtp_port, [
        b"EHLO t\r\n", b"MAIL FROM:<a@remote.org>\r\n", b"RCPT TO:<bob@example.com>\r\n",
        b"BDAT %d\r\n" % len(first) + first, b"BDAT %d LAST\r\n" % len(second) + second, b"QUIT\r\n",
    ])
    assert b"250 2.0.0 20 octets received\r\n" in out and b"250 2.0.0 Message accepted" in out, out
    assert b"chunked body" in mailbox_has(lab_env, "bob@example.com", subject)


def test_pop3_retrieves_inbound_mail(lab_env):
    subject = f"pop inbound {uuid.uuid4()}"
    assert swaks("--server", "127.0.0.1", "--port", str(lab_env.smtp_port), "--to", "bob@example.com",
                 "--header", f"Subject: {subject}", "--body", "for pop").returncode == 0
    pop = poplib.POP3("127.0.0.1", lab_env.pop3_plain_port, timeout=15)
    pop.user("bob@example.com")
    pop.pass_(PASSWORD)
    count, _ = pop.stat()
    found = [pop.retr(n)[1] for n in range(1, count + 1)]
    pop.quit()
    assert any(f"Subject: {subject}".encode() in lines and b"for pop" in lines for lines in found)


def test_inbound_starttls(lab_env):
    done = swaks("--server", "127.0.0.1", "--port", str(lab_env.smtp_port), "--to", "alice@example.com", "--tls")
    assert done.returncode == 0, done.stdout
    assert "STARTTLS" in done.stdout


# Submission.


def test_submission_with_auth_reaches_the_relay(lab_env):
    subject = f"submitted {uuid.uuid4()}"
    client = smtplib.SMTP("127.0.0.1", lab_env.submission_starttls_port, timeout=20)
    client.ehlo()
    assert client.has_extn("starttls") and not client.has_extn("auth")
    client.starttls(context=client_tls())
    client.ehlo()
    assert client.has_extn("auth")
    client.login("alice@example.com", PASSWORD)
    message = f"From: alice@example.com\r\nTo: someone@elsewhere.org\r\nSubject: {subject}\r\n\r\nout we go\r\n"
    refused = client.sendmail("alice@example.com", ["someone@elsewhere.org"], message)
    assert refused == {}
    client.quit()
    received = lab_env.relay.wait_for(lambda m: subject.encode() in m["data"])
    assert received["from"] == "<alice@example.com>"
    assert received["to"] == ["<someone@elsewhere.org>"]
    assert lab_env.session_lines("alice@example.com")[-1]["backend"] == "mbx1"
    # It left through mailfront's outbound listener, so the relay saw mailfront, not mbx1.
    assert re.search(r"protocol=submission user=alice@example.com database=DB01 backend=mbx1", lab_env.log())


def test_submission_with_swaks_over_implicit_tls(lab_env):
    subject = f"swaks submission {uuid.uuid4()}"
    done = swaks("--server", "127.0.0.1", "--port", str(lab_env.submissions_port), "--tls-on-connect",
                 "--auth", "PLAIN", "--auth-user", "bob@example.com", "--auth-password", PASSWORD,
                 "--from", "bob@example.com", "--to", "friend@elsewhere.org", "--header", f"Subject: {subject}")
    assert done.returncode == 0, done.stdout
    assert "235 2.7.0 Authentication successful" in done.stdout
    lab_env.relay.wait_for(lambda m: subject.encode() in m["data"])


def test_submission_rules(lab_env):
    out = smtp_session(lab_env.submission_port, [b"EHLO t\r\n", b"MAIL FROM:<alice@example.com>\r\n", b"QUIT\r\n"])
    assert b"530 5.7.0 Authentication required\r\n" in out
    out = smtp_session(lab_env.submission_starttls_port, [b"EHLO t\r\n", b"AUTH PLAIN AGFAYgBj\r\n", b"QUIT\r\n"])
    assert b"538 5.7.11 Encryption required for requested authentication mechanism\r\n" in out
    client = smtplib.SMTP("127.0.0.1", lab_env.submission_port, timeout=20)
    with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
        client.login("alice@example.com", "wrong")
    assert failure.value.smtp_code == 535
    client.close()
    # EHLO is mailfront's own and honest.
    client = smtplib.SMTP("127.0.0.1", lab_env.submission_port, timeout=20)
    code, text = client.ehlo("t")
    assert code == 250
    assert set(client.esmtp_features) == {"pipelining", "size", "8bitmime", "enhancedstatuscodes", "auth"}
    client.quit()


# Outbound.


def test_outbound_refuses_strangers(lab_env):
    out = smtp_session(lab_env.outbound_port, [b"EHLO t\r\n"], source="127.0.0.2", read_for=1)
    assert out.startswith(b"554 5.7.1 Not a mailbox server of this organisation\r\n"), out


def test_outbound_answers_only_after_the_relay(lab_env):
    subject = f"outbound {uuid.uuid4()}"
    lab_env.relay.data_reply = b"451 4.3.0 relay busy\r\n"
    try:
        busy = swaks("--server", "127.0.0.1", "--port", str(lab_env.outbound_port), "--from", "alice@example.com",
                     "--to", "x@elsewhere.org", "--header", f"Subject: {subject}")
        assert "<** 451 4.3.0 relay busy" in busy.stdout, busy.stdout
    finally:
        lab_env.relay.data_reply = b"250 2.0.0 queued\r\n"
    ok = swaks("--server", "127.0.0.1", "--port", str(lab_env.outbound_port), "--from", "alice@example.com",
               "--to", "x@elsewhere.org", "--header", f"Subject: {subject}")
    assert ok.returncode == 0, ok.stdout
    lab_env.relay.wait_for(lambda m: subject.encode() in m["data"])


def test_mixed_lmtp_results_ask_the_sender_to_retry(lab_env):
    """Dovecot saves the message for alice and refuses full@ (over quota) at the end of DATA:
    the documented policy answers 451, so nothing is lost (alice may get a second copy)."""
    subject = f"mixed {uuid.uuid4()}"
    done = swaks("--server", "127.0.0.1", "--port", str(lab_env.smtp_port), "--to", "alice@example.com,full@example.com",
                 "--header", f"Subject: {subject}", "--body", "x" * 4000)
    assert "<** 451 4.3.0 Delivered to 1 of 2 recipients; try again later for the rest" in done.stdout, done.stdout
    mailbox_has(lab_env, "alice@example.com", subject)
    # The refusal came from Dovecot itself (whichever server of the group took the message).
    assert any("Quota exceeded" in server.log_text() for server in lab_env.servers.values())


def test_client_vanishing_mid_data_delivers_nothing(lab_env):
    subject = f"vanished {uuid.uuid4()}"
    with socket.create_connection(("127.0.0.1", lab_env.smtp_port), timeout=10) as sock:
        sock.recv(4096)
        sock.sendall(b"EHLO t\r\nMAIL FROM:<a@remote.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        reply = b""
        while b"354" not in reply:
            reply += sock.recv(4096)
        sock.sendall(f"Subject: {subject}\r\n\r\nhalf a message\r\n".encode())
    # The session ends (and is logged) before we look, so the check is not racing the abort.
    lab_env.wait_for_log(r"session ended .*protocol=smtp listener=smtp")
    assert count_in_mailbox(lab_env, "bob@example.com", subject) == 0


def test_recipient_limit(lab_env):
    lines = [b"EHLO t\r\n", b"MAIL FROM:<a@remote.org>\r\n"] + [b"RCPT TO:<alice@example.com>\r\n"] * 51 + [b"QUIT\r\n"]
    out = smtp_session(lab_env.smtp_port, lines)
    assert out.count(b"250 2.1.5 OK") == 50 and b"452 4.5.3 Too many recipients\r\n" in out
