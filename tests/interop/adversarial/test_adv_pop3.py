"""Bad input for the POP3 front end, before authentication.

Every row: what a hostile client sends after the greeting, and the exact bytes mailfront
answers up to its close (rows that would leave the session open end with QUIT). All rows run at
once (see advlib); each row's test checks its reply, the close, the time, that the session was
never proxied (or was, for the positive control), and that mailfront did not panic.
"""

from __future__ import annotations

import re

import pytest

from advlib import (AUTH_FAILURE_DELAY, LAB_USERS, MAX_COMMANDS, MAX_LINE, PASSWORD, PROMPT, TLS, Case, Expect, b64,
                    backend_login_names, check_session, check_transcript, dovecot_marks, lab, lab_alive, params,
                    plain, run_line_table)

Q = b"QUIT\r\n"
BYE = b"+OK Logging out.\r\n"
FAILED = b"-ERR [AUTH] Authentication failed.\r\n"
AUTHZ = b"-ERR [AUTH] Not authorized to act as that user.\r\n"
DELAYED = AUTH_FAILURE_DELAY + PROMPT
FLOOR = AUTH_FAILURE_DELAY - 0.05
ALICE = b"alice@example.com"
PW = PASSWORD.encode()


def master_login(lab_env) -> bytes:
    master = lab.master_password(lab_env.root).encode()
    return b"USER alice@example.com*" + lab.MASTER_USER.encode() + b"\r\nPASS " + master + b"\r\n" + Q


CASES = [
    # --- over-long lines -----------------------------------------------------------------------
    Case("line-at-limit-is-served", b"USER " + b"u" * (MAX_LINE - 5) + b"\r\n" + Q, b"+OK\r\n" + BYE),
    Case("line-one-over-limit", b"USER " + b"u" * (MAX_LINE - 4) + b"\r\n", b"-ERR Line too long.\r\n"),
    Case("line-2000-without-newline", b"USER " + b"x" * 2000, b"-ERR Line too long.\r\n"),
    Case("sasl-response-over-limit", [b"AUTH PLAIN\r\n", Expect(b"+ \r\n"), b"A" * 3000 + b"\r\n"],
         b"+ \r\n-ERR Line too long.\r\n"),
    # --- NUL, invalid UTF-8, garbage -----------------------------------------------------------
    Case("nul-in-command", b"US\x00ER alice@example.com\r\n" + Q, b"-ERR Unknown command.\r\n" + BYE),
    Case("nul-in-user", b"USER alice@example.com\x00\r\n" + Q, b"-ERR Invalid user name.\r\n" + BYE),
    Case("invalid-utf8-user", b"USER \xff\xfe@example.com\r\n" + Q, b"-ERR Invalid user name.\r\n" + BYE),
    Case("binary-garbage", bytes(range(256)) + b"\r\n" + Q, b"-ERR Unknown command.\r\n" * 2 + BYE),
    Case("garbage-without-newline", bytes(range(11, 256)) * 8, b"-ERR Line too long.\r\n"),
    # --- pipelined before authentication -------------------------------------------------------
    Case("25-pipelined-noops", b"NOOP\r\n" * 25,
         b"-ERR Not logged in.\r\n" * MAX_COMMANDS + b"-ERR Too many commands before authentication.\r\n"),
    Case("4-pipelined-bad-logins", b"USER alice@example.com\r\nPASS wrong\r\n" * 4,
         (b"+OK\r\n" + FAILED) * 3 + b"-ERR Too many authentication failures.\r\n",
         at_least=3 * AUTH_FAILURE_DELAY - 0.1, within=3 * AUTH_FAILURE_DELAY + PROMPT),
    # --- STLS with plaintext after it in the same packet (CVE-2011-0411) ------------------------
    Case("stls-with-injected-user",
         [b"STLS\r\nUSER alice@example.com\r\n", Expect(b"negotiation now.\r\n"), TLS, b"PASS " + PW + b"\r\n" + Q],
         b"+OK Begin TLS negotiation now.\r\n-ERR No user name given (USER first).\r\n" + BYE, port="starttls"),
    Case("stls-with-injected-auth",
         [b"STLS\r\nAUTH PLAIN " + plain("", ALICE, PW) + b"\r\n", Expect(b"negotiation now.\r\n"), TLS,
          b"STAT\r\n" + Q],
         b"+OK Begin TLS negotiation now.\r\n-ERR Not logged in.\r\n" + BYE, port="starttls"),
    Case("stls-on-implicit-tls", b"STLS\r\n" + Q, b"-ERR TLS is already active.\r\n" + BYE, port="pop3s"),
    Case("stls-where-not-offered", b"STLS\r\n" + Q, b"-ERR STLS is not available on this port.\r\n" + BYE),
    Case("user-before-stls", b"USER alice@example.com\r\n" + Q,
         b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections.\r\n" + BYE, port="starttls"),
    # --- user names aimed at the backend login -------------------------------------------------
    Case("master-separator-in-user", b"USER alice@example.com*casmaster\r\nPASS " + PW + b"\r\n" + Q,
         b"+OK\r\n" + FAILED + BYE, at_least=FLOOR, within=DELAYED),
    Case("master-separator-with-master-password", master_login, b"+OK\r\n" + FAILED + BYE,
         at_least=FLOOR, within=DELAYED),
    Case("quote-in-user", b'USER alice@example.com" x\r\nPASS ' + PW + b"\r\n" + Q,
         b"+OK\r\n" + FAILED + BYE, at_least=FLOOR, within=DELAYED),
    Case("cr-command-in-user", b"USER alice@example.com\rPASS " + PW + b"\r\n" + Q,
         b"-ERR Invalid user name.\r\n" + BYE),
    Case("crlf-in-plain-authcid", b"AUTH PLAIN " + plain("", "alice@example.com\r\nSTAT", PW) + b"\r\n" + Q,
         FAILED + BYE),
    Case("crlf-in-login-mechanism-user",
         [b"AUTH LOGIN\r\n", Expect(b"\r\n"), b64(b"alice@example.com\r\nSTAT") + b"\r\n" + Q],
         b"+ VXNlcm5hbWU6\r\n" + FAILED + BYE),
    Case("authzid-of-another-user", b"AUTH PLAIN " + plain("bob@example.com", ALICE, PW) + b"\r\n" + Q,
         AUTHZ + BYE, at_least=FLOOR, within=DELAYED),
    Case("authzid-with-master-separator",
         b"AUTH PLAIN " + plain("bob@example.com*casmaster", ALICE, PW) + b"\r\n" + Q,
         AUTHZ + BYE, at_least=FLOOR, within=DELAYED),
    Case("authzid-with-crlf", b"AUTH PLAIN " + plain("bob@example.com\r\nSTAT", ALICE, PW) + b"\r\n" + Q,
         FAILED + BYE),
    # The positive control: acting as oneself (by alias) is allowed and reaches Dovecot.
    Case("authzid-own-alias-is-proxied",
         b"AUTH PLAIN " + plain("alice.smith@example.com", ALICE, PW) + b"\r\n" + Q,
         re.compile(rb"\+OK Logged in\.\r\n\+OK Logging out\.\r\n"), proxied=True),
    # --- malformed base64 in AUTH --------------------------------------------------------------
    Case("base64-invalid-initial-response", b"AUTH PLAIN !!!\r\n" + Q,
         b"-ERR Invalid base64 data in initial response.\r\n" + BYE),
    Case("base64-invalid-continuation", [b"AUTH PLAIN\r\n", Expect(b"+ \r\n"), b"!!!\r\n" + Q],
         b"+ \r\n-ERR Invalid base64 data.\r\n" + BYE),
    Case("base64-unpadded-continuation", [b"AUTH PLAIN\r\n", Expect(b"+ \r\n"), b"YQ\r\n" + Q],
         b"+ \r\n-ERR Invalid base64 data.\r\n" + BYE),
    Case("base64-invalid-login-user", [b"AUTH LOGIN\r\n", Expect(b"\r\n"), b"=====\r\n" + Q],
         b"+ VXNlcm5hbWU6\r\n-ERR Invalid base64 data.\r\n" + BYE),
    Case("sasl-cancelled", [b"AUTH PLAIN\r\n", Expect(b"+ \r\n"), b"*\r\n" + Q],
         b"+ \r\n-ERR Authentication cancelled.\r\n" + BYE),
    Case("plain-without-separators", b"AUTH PLAIN " + b64(ALICE) + b"\r\n" + Q, FAILED + BYE),
    Case("unknown-sasl-mechanism", b"AUTH CRAM-MD5\r\n" + Q, b"-ERR Unsupported authentication mechanism.\r\n" + BYE),
    Case("apop", b"APOP alice@example.com 0123456789abcdef0123456789abcdef\r\n" + Q,
         b"-ERR APOP is not supported.\r\n" + BYE),
    Case("pass-without-user", b"PASS " + PW + b"\r\n" + Q, b"-ERR No user name given (USER first).\r\n" + BYE),
]


@pytest.fixture(scope="module")
def outcomes(lab_env, dovecot_before):
    ports = {"plain": lab_env.pop3_plain_port, "starttls": lab_env.pop3_starttls_port,
             "pop3s": lab_env.pop3_implicit_port}
    yield run_line_table(CASES, ports, lab_env, implicit_port="pop3s")
    lab_alive(lab_env)


@pytest.mark.parametrize("case", params(CASES))
def test_pop3(lab_env, outcomes, case):
    outcome = outcomes[case.id]
    check_transcript(case, outcome)
    check_session(case, outcome, lab_env.log, lab_env.mailfront.process)


@pytest.fixture(scope="module")
def dovecot_before(lab_env):
    return dovecot_marks(lab_env)


def test_no_injected_name_ever_reached_dovecot(lab_env, outcomes, dovecot_before):
    names = backend_login_names(lab_env, dovecot_before)
    assert names <= LAB_USERS, names - LAB_USERS
    assert "alice@example.com" in names
