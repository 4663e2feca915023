"""Bad input for the front-end transport (inbound SMTP, no authentication).

Every row: what a hostile client sends after the greeting, and the exact bytes mailfront
answers up to its close (scripts end with QUIT). All rows run at once (see advlib); each row's
test checks its reply, the close, the time, how many messages mailfront handed to a mailbox
server for that connection (its `message delivered` log lines: none for a refused row), and that
mailfront did not panic. The smuggling rows are then checked in the mailboxes themselves, over
IMAP: exactly one message, with the smuggled commands as its content, and nothing for bob.
"""

from __future__ import annotations

import uuid

import pytest

from advlib import (MAX_LINE, TLS, Case, Expect, check_transcript, lab_alive, params, play, run_table, wait_for_line,
                    wait_until)
from conftest import lab

Q = b"QUIT\r\n"
BYE = b"221 2.0.0 Bye\r\n"
EHLO = b"EHLO t\r\n"
GREETS = (b"250-test1 greets t\r\n250-PIPELINING\r\n250-SIZE 200000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
          b"250-CHUNKING\r\n250 STARTTLS\r\n")
GREETS_TLS = (b"250-test1 greets t\r\n250-PIPELINING\r\n250-SIZE 200000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
              b"250 CHUNKING\r\n")
MAIL = b"MAIL FROM:<sender@remote.example>\r\n"
MAIL_OK = b"250 2.1.0 OK\r\n"
RCPT_OK = b"250 2.1.5 OK\r\n"
GO = b"354 Start mail input; end with <CRLF>.<CRLF>\r\n"
ACCEPTED = b"250 2.0.0 Message accepted for delivery to 1 recipient(s)\r\n"
RELAY = b"554 5.7.1 Relaying denied\r\n"
UNKNOWN = b"550 5.1.1 User unknown\r\n"
TOO_BIG = b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
SYNTAX = b"501 5.5.4 Syntax error in parameters or arguments\r\n"
UNSUPPORTED = b"555 5.5.4 Unsupported parameter\r\n"
NEEDS_UTF8 = b"553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
MAX_MESSAGE = 200000  # transport.max_message_size in the lab


def rcpt(address: str) -> bytes:
    return f"RCPT TO:<{address}>\r\n".encode()


def relay(row: str, address: str, reply: bytes = RELAY) -> Case:
    """An unauthenticated RCPT for someone else's domain: refused, whatever its disguise."""
    return Case(f"relay-{row}", EHLO + MAIL + rcpt(address) + Q, GREETS + MAIL_OK + reply + BYE)


# The smuggling family (CVE-2023-51764 and relatives): only CRLF . CRLF ends DATA. Each variant
# hides a second transaction (for bob) behind a lone-dot line written another way.
SEPARATORS = {"lf-dot-lf": b"\n.\n", "cr-dot-cr": b"\r.\r", "lf-dot-crlf": b"\n.\r\n",
              "crlf-dot-lf": b"\r\n.\n", "cr-dot-crlf": b"\r.\r\n"}
MARKERS = {name: uuid.uuid4().hex for name in SEPARATORS}


def smuggle(name: str) -> bytes:
    marker = MARKERS[name].encode()
    return (EHLO + MAIL + rcpt("alice@example.com") + b"DATA\r\n"
            + b"Subject: smuggle " + marker + b"\r\nMessage-ID: <" + marker + b"@adv>\r\n\r\nbefore" + SEPARATORS[name]
            + b"MAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
            + b"Subject: forged " + marker + b"\r\n\r\nforged " + marker + b"\r\n.\r\n" + Q)


CASES = [
    # --- over-long lines, NUL, invalid UTF-8, garbage -------------------------------------------
    # 100 commands that move no message forward are served; the 101st closes the session.
    Case("junk-commands-100-served", EHLO + b"NOOP\r\nVRFY x\r\nRSET\r\nHELP\r\n" * 25 + Q,
         GREETS + b"250 2.0.0 OK\r\n252 2.5.0 Cannot VRFY user\r\n250 2.0.0 OK\r\n214 2.0.0 See RFC 5321\r\n" * 25
         + BYE),
    Case("junk-commands-101st-closes", EHLO + b"NOOP\r\n" * 101 + Q,
         GREETS + b"250 2.0.0 OK\r\n" * 100
         + b"421 4.7.0 Too many commands without a message, closing connection\r\n"),
    Case("line-at-limit-is-served", b"NOOP " + b"n" * (MAX_LINE - 5) + b"\r\n" + Q, b"250 2.0.0 OK\r\n" + BYE),
    Case("line-one-over-limit", b"NOOP " + b"n" * (MAX_LINE - 4) + b"\r\n", b"500 5.5.6 Line too long\r\n"),
    Case("line-3000-without-newline", b"EHLO " + b"x" * 3000, b"500 5.5.6 Line too long\r\n"),
    Case("nul-in-mail-from", EHLO + b"MAIL FROM:<a\x00@remote.example>\r\n" + Q,
         GREETS + b"501 5.1.3 Bad address syntax\r\n" + BYE),
    Case("invalid-utf8-in-rcpt", EHLO + MAIL + b"RCPT TO:<\xff\xfe@example.com>\r\n" + Q,
         GREETS + MAIL_OK + SYNTAX + BYE),
    Case("cr-command-in-rcpt", EHLO + MAIL + b"RCPT TO:<alice@example.com>\rRCPT TO:<x@elsewhere.example>\r\n" + Q,
         GREETS + MAIL_OK + b"555 5.5.4 Unsupported parameter\r\n" + BYE),
    Case("binary-garbage", bytes(range(256)) + b"\r\n" + Q, b"500 5.5.2 Unrecognized command\r\n" * 2 + BYE),
    Case("auth-is-not-offered", EHLO + b"AUTH PLAIN AGFsaWNlAHB3\r\n" + Q,
         GREETS + b"502 5.5.1 Command not implemented\r\n" + BYE),
    # --- open relay attempts -------------------------------------------------------------------
    relay("other-domain", "x@elsewhere.example"),
    relay("source-route", "@example.com:x@elsewhere.example"),
    relay("subdomain", "x@mail.example.com"),
    relay("trailing-dot", "x@example.com."),
    relay("ip-literal", "x@[127.0.0.1]"),
    relay("double-at", "bob@example.com@elsewhere.example"),
    relay("percent-hack", "x%elsewhere.example@example.com", UNKNOWN),
    relay("bang-path", "elsewhere.example!x@example.com", UNKNOWN),
    relay("quoted-at", '"x@elsewhere.example"@example.com', UNKNOWN),
    # Control: the organisation's own domain in capitals is local, not relayed.
    Case("local-domain-in-capitals-is-accepted", EHLO + MAIL + rcpt("alice@EXAMPLE.COM") + Q,
         GREETS + MAIL_OK + RCPT_OK + BYE),
    Case("relay-whole-transaction",
         EHLO + MAIL + rcpt("x@elsewhere.example") + b"DATA\r\nSubject: relayed\r\n\r\nhi\r\n.\r\n" + Q,
         GREETS + MAIL_OK + RELAY + b"554 5.5.1 No valid recipients\r\n"
         + b"500 5.5.2 Unrecognized command\r\n" * 4 + BYE),
    # --- STARTTLS with plaintext after it in the same packet (CVE-2011-0411) --------------------
    Case("starttls-with-injected-mail",
         [EHLO + b"STARTTLS\r\n" + MAIL, Expect(b"start TLS\r\n"), TLS, EHLO + rcpt("bob@example.com") + Q],
         GREETS + b"220 2.0.0 Ready to start TLS\r\n" + GREETS_TLS + b"503 5.5.1 Need MAIL command first\r\n" + BYE),
    # --- bare LF / bare CR ends of data: the smuggling family -------------------------------------
    *[Case(f"smuggling-{name}", smuggle(name), GREETS + MAIL_OK + RCPT_OK + GO + ACCEPTED + BYE)
      for name in SEPARATORS],
    Case("data-without-recipients", EHLO + MAIL + b"DATA\r\n.\r\n" + Q,
         GREETS + MAIL_OK + b"554 5.5.1 No valid recipients\r\n500 5.5.2 Unrecognized command\r\n" + BYE),
    # --- BDAT with wrong sizes -----------------------------------------------------------------
    # The chunk is exactly the announced bytes; what follows is commands again (RFC 3030).
    Case("bdat-shorter-than-its-content",
         EHLO + MAIL + rcpt("bob@example.com") + b"BDAT 5 LAST\r\nSubject: x\r\n\r\nhi\r\n" + Q,
         GREETS + MAIL_OK + RCPT_OK + ACCEPTED + b"500 5.5.2 Unrecognized command\r\n" * 3 + BYE),
    Case("bdat-negative-size", EHLO + MAIL + rcpt("bob@example.com") + b"BDAT -5 LAST\r\n" + Q,
         GREETS + MAIL_OK + RCPT_OK + SYNTAX + BYE),
    Case("bdat-size-not-a-number", EHLO + MAIL + rcpt("bob@example.com") + b"BDAT 0x10 LAST\r\n" + Q,
         GREETS + MAIL_OK + RCPT_OK + SYNTAX + BYE),
    Case("bdat-size-over-64-bits", EHLO + MAIL + rcpt("bob@example.com") + b"BDAT 99999999999999999999999\r\n" + Q,
         GREETS + MAIL_OK + RCPT_OK + SYNTAX + BYE),
    Case("bdat-bad-last-keyword", EHLO + MAIL + rcpt("bob@example.com") + b"BDAT 1 FIRST\r\n" + Q,
         GREETS + MAIL_OK + RCPT_OK + SYNTAX + BYE),
    # A refused chunk is still read: the NOOP inside it is data, not a command.
    Case("bdat-without-mail", EHLO + b"BDAT 6 LAST\r\nNOOP\r\n" + Q,
         GREETS + b"503 5.5.1 Need MAIL command first\r\n" + BYE),
    Case("bdat-without-recipients", EHLO + MAIL + b"BDAT 6 LAST\r\nNOOP\r\n" + Q,
         GREETS + MAIL_OK + b"554 5.5.1 No valid recipients\r\n" + BYE),
    Case("data-after-bdat", EHLO + MAIL + rcpt("bob@example.com") + b"BDAT 3\r\nabcDATA\r\n" + Q,
         GREETS + MAIL_OK + RCPT_OK + b"250 2.0.0 3 octets received\r\n503 5.5.1 DATA after BDAT\r\n" + BYE),
    Case("bdat-chunks-summing-over-size",
         EHLO + MAIL + rcpt("bob@example.com") + b"BDAT 150000\r\n" + b"x" * 150000
         + b"BDAT 150000 LAST\r\n" + b"y" * 150000 + Q,
         GREETS + MAIL_OK + RCPT_OK + b"250 2.0.0 150000 octets received\r\n" + TOO_BIG + BYE),
    Case("bdat-one-chunk-over-size",
         EHLO + MAIL + rcpt("bob@example.com") + b"BDAT %d LAST\r\n" % (MAX_MESSAGE + 1) + b"z" * (MAX_MESSAGE + 1) + Q,
         GREETS + MAIL_OK + RCPT_OK + TOO_BIG + BYE),
    Case("bdat-empty-last-chunk", EHLO + MAIL + rcpt("bob@example.com") + b"BDAT 0 LAST\r\n" + Q,
         GREETS + MAIL_OK + RCPT_OK + ACCEPTED + BYE),
    # DSN and SMTPUTF8: the lab's Dovecot 2.3 announces neither, so neither is offered; a
    # malformed parameter is a syntax error whatever is offered (RFC 3461 §4, RFC 6531 §3.4).
    Case("dsn-not-offered", EHLO + b"MAIL FROM:<sender@remote.example> RET=FULL ENVID=x\r\n" + MAIL
         + b"RCPT TO:<bob@example.com> NOTIFY=SUCCESS\r\n" + Q,
         GREETS + UNSUPPORTED + MAIL_OK + UNSUPPORTED + BYE),
    Case("dsn-malformed", EHLO + b"MAIL FROM:<sender@remote.example> RET=MAYBE\r\n"
         + b"MAIL FROM:<sender@remote.example> ENVID=a=b\r\n" + MAIL
         + b"RCPT TO:<bob@example.com> NOTIFY=NEVER,SUCCESS\r\n" + b"RCPT TO:<bob@example.com> ORCPT=bob\r\n" + Q,
         GREETS + SYNTAX + SYNTAX + MAIL_OK + SYNTAX + SYNTAX + BYE),
    Case("dsn-envid-over-100", EHLO + b"MAIL FROM:<sender@remote.example> ENVID=" + b"e" * 101 + b"\r\n" + Q,
         GREETS + SYNTAX + BYE),
    Case("smtputf8-not-offered", EHLO + b"MAIL FROM:<sender@remote.example> SMTPUTF8\r\n" + Q,
         GREETS + UNSUPPORTED + BYE),
    Case("utf8-address-without-smtputf8", EHLO + "MAIL FROM:<j\u00f6rg@remote.example>\r\n".encode() + MAIL
         + "RCPT TO:<b\u00f6b@example.com>\r\n".encode() + Q,
         GREETS + NEEDS_UTF8 + MAIL_OK + NEEDS_UTF8 + BYE),
]

# How many messages each row hands to a mailbox server (every other row: none).
DELIVERED = {**{f"smuggling-{name}": 1 for name in SEPARATORS},
             "bdat-shorter-than-its-content": 1, "bdat-empty-last-chunk": 1}


@pytest.fixture(scope="module")
def outcomes(lab_env):
    yield run_table(CASES, {"plain": lab_env.smtp_port}, lab_env)
    lab_alive(lab_env)


@pytest.mark.parametrize("case", params(CASES))
def test_smtp(lab_env, outcomes, case):
    outcome = outcomes[case.id]
    check_transcript(case, outcome)
    lines = wait_for_line(lab_env.log, outcome.client, "session ended")
    delivered = [line for line in lines if "message delivered" in line]
    assert len(delivered) == DELIVERED.get(case.id, 0), lines
    assert all("recipients=1 " in line for line in delivered), delivered
    lab_alive(lab_env)


def test_nothing_reached_the_relay_host(lab_env, outcomes):
    """The outbound relay (the lab's SMTP sink) never heard of the relay rows' recipients."""
    leaked = [m for m in lab_env.relay.messages if any("elsewhere.example" in to for to in m["to"])]
    assert leaked == []


def search(lab_env, user: str, text: str) -> list[bytes]:
    """The messages in `user`'s INBOX (through mailfront) whose text contains `text`."""
    client = lab_env.imap()
    try:
        client.login(user, lab.DEMO_PASSWORD)
        client.select("INBOX")
        _, data = client.search(None, "TEXT", f'"{text}"')
        found = []
        for number in data[0].split():
            _, fetched = client.fetch(number, "(RFC822)")
            found.append(fetched[0][1])
        return found
    finally:
        client.logout()


@pytest.mark.parametrize("name", list(SEPARATORS))
def test_smuggled_transaction_stays_content(lab_env, outcomes, name):
    """Alice has exactly one message, holding the smuggled commands as text; bob has none."""
    marker = MARKERS[name]
    found = wait_until(lambda: search(lab_env, "alice@example.com", marker), what="the message in alice's INBOX")
    assert len(found) == 1, found
    body = found[0]
    assert b"MAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n" in body, body
    assert f"forged {marker}".encode() in body
    assert search(lab_env, "bob@example.com", marker) == []


def test_oversized_bdat_never_reaches_a_mailbox_server(lab_env, outcomes):
    """`BDAT n LAST` with n over transport.max_message_size is refused from its command line:
    no mailbox server hears of it. Bob's server's log is read between two sentinel deliveries
    (to bob, around the oversized chunk): the only LMTP session in between must be the second
    sentinel's own."""
    def deliver_sentinel() -> str:
        """Delivers a message to bob; returns its line's text once Dovecot logged it."""
        marker = uuid.uuid4().hex
        sent = play(lab_env.smtp_port, EHLO + MAIL + rcpt("bob@example.com") + b"DATA\r\nMessage-ID: <"
                    + marker.encode() + b"@adv>\r\n\r\nsentinel\r\n.\r\n" + Q)
        assert ACCEPTED in sent.transcript, sent.transcript
        logged = f"msgid=<{marker}@adv>"
        wait_until(lambda: any(logged in s.log_text() for s in lab_env.servers.values()),
                   what="the sentinel in Dovecot's log")
        return logged

    first = deliver_sentinel()
    size = MAX_MESSAGE + 1
    oversized = play(lab_env.smtp_port, EHLO + MAIL + rcpt("bob@example.com") + b"BDAT %d LAST\r\n" % size
                     + b"z" * size + Q)
    assert oversized.transcript == GREETS + MAIL_OK + RCPT_OK + TOO_BIG + BYE, oversized.transcript
    wait_for_line(lab_env.log, oversized.client, "session ended")
    second = deliver_sentinel()
    log = next(s.log_text() for s in lab_env.servers.values() if first in s.log_text() and second in s.log_text())
    between = log[log.index(first):log.index(second)]
    sessions = [line for line in between.splitlines() if "lmtp(" in line and "Connect from" in line]
    assert len(sessions) == 1, between
