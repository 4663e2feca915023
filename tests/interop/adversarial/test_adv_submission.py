"""Bad input for the submission front end (RFC 6409), before AUTH.

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
BYE = b"221 2.0.0 Bye\r\n"
EHLO = b"EHLO client.example.org\r\n"
# mailfront's own EHLO reply before AUTH, on the plain listener (plaintext AUTH allowed there)…
GREETS = (b"250-test1 greets client.example.org\r\n250-PIPELINING\r\n250-SIZE 200000\r\n250-8BITMIME\r\n"
          b"250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN\r\n")
# …and on the STARTTLS listener before TLS (no AUTH offered).
GREETS_STARTTLS = (b"250-test1 greets client.example.org\r\n250-PIPELINING\r\n250-SIZE 200000\r\n250-8BITMIME\r\n"
                   b"250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n")
FAILED = b"535 5.7.8 Authentication credentials invalid\r\n"
AUTHZ = b"535 5.7.8 Not authorized to act as that user\r\n"
DELAYED = AUTH_FAILURE_DELAY + PROMPT
FLOOR = AUTH_FAILURE_DELAY - 0.05
ALICE = b"alice@example.com"
PW = PASSWORD.encode()


def master_login(lab_env) -> bytes:
    master = lab.master_password(lab_env.root)
    return EHLO + b"AUTH PLAIN " + plain("", "alice@example.com*" + lab.MASTER_USER, master) + b"\r\n" + Q


CASES = [
    # --- over-long lines -----------------------------------------------------------------------
    Case("line-at-limit-is-served", b"NOOP " + b"n" * (MAX_LINE - 5) + b"\r\n" + Q, b"250 2.0.0 OK\r\n" + BYE),
    Case("line-one-over-limit", b"NOOP " + b"n" * (MAX_LINE - 4) + b"\r\n", b"500 5.5.6 Line too long\r\n"),
    Case("line-2000-without-newline", b"EHLO " + b"x" * 2000, b"500 5.5.6 Line too long\r\n"),
    Case("sasl-response-over-limit", [EHLO + b"AUTH PLAIN\r\n", Expect(b"334 \r\n"), b"A" * 3000 + b"\r\n"],
         GREETS + b"334 \r\n500 5.5.6 Line too long\r\n"),
    # --- NUL, invalid UTF-8, garbage -----------------------------------------------------------
    Case("nul-in-verb", b"EH\x00LO x\r\n" + Q, b"500 5.5.2 Unrecognized command\r\n" + BYE),
    Case("nul-in-helo-name", b"EHLO client\x00.example.org\r\n" + Q,
         b"501 5.5.4 Syntax error in parameters or arguments\r\n" + BYE),
    Case("invalid-utf8-helo-name", b"EHLO \xff\xfe\r\n" + Q, b"501 5.5.4 Syntax error in parameters or arguments\r\n" + BYE),
    Case("binary-garbage", bytes(range(256)) + b"\r\n" + Q, b"500 5.5.2 Unrecognized command\r\n" * 2 + BYE),
    Case("garbage-without-newline", bytes(range(11, 256)) * 8, b"500 5.5.6 Line too long\r\n"),
    # --- pipelined before authentication -------------------------------------------------------
    Case("25-pipelined-noops", b"NOOP\r\n" * 25,
         b"250 2.0.0 OK\r\n" * MAX_COMMANDS + b"421 4.7.0 Too many commands before authentication\r\n"),
    Case("4-pipelined-bad-auths", EHLO + b"AUTH PLAIN " + plain("", ALICE, "wrong") + b"\r\n" * 1
         + (b"AUTH PLAIN " + plain("", ALICE, "wrong") + b"\r\n") * 3,
         GREETS + FAILED * 3 + b"421 4.7.0 Too many authentication failures\r\n",
         at_least=3 * AUTH_FAILURE_DELAY - 0.1, within=3 * AUTH_FAILURE_DELAY + PROMPT),
    # An open relay through submission: nothing before AUTH.
    Case("mail-rcpt-data-before-auth",
         EHLO + b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<victim@elsewhere.example>\r\nDATA\r\n" + Q,
         GREETS + b"530 5.7.0 Authentication required\r\n" * 3 + BYE),
    # --- STARTTLS with plaintext after it in the same packet (CVE-2011-0411) --------------------
    Case("starttls-with-injected-auth",
         [EHLO + b"STARTTLS\r\nAUTH PLAIN " + plain("", ALICE, PW) + b"\r\n", Expect(b"start TLS\r\n"), TLS,
          b"MAIL FROM:<alice@example.com>\r\n" + Q],
         GREETS_STARTTLS + b"220 2.0.0 Ready to start TLS\r\n530 5.7.0 Authentication required\r\n" + BYE,
         port="starttls"),
    Case("starttls-with-injected-ehlo",
         [EHLO + b"STARTTLS\r\n" + EHLO, Expect(b"start TLS\r\n"), TLS,
          b"AUTH PLAIN " + plain("", ALICE, PW) + b"\r\n" + Q],
         GREETS_STARTTLS + b"220 2.0.0 Ready to start TLS\r\n503 5.5.1 Send EHLO first\r\n" + BYE, port="starttls"),
    Case("starttls-on-implicit-tls", EHLO + b"STARTTLS\r\n" + Q,
         GREETS + b"503 5.5.1 TLS already active\r\n" + BYE, port="submissions"),
    Case("starttls-where-not-offered", b"STARTTLS\r\n" + Q,
         b"502 5.5.1 STARTTLS not available on this port\r\n" + BYE),
    Case("auth-before-starttls", EHLO + b"AUTH PLAIN " + plain("", ALICE, PW) + b"\r\n" + Q,
         GREETS_STARTTLS + b"538 5.7.11 Encryption required for requested authentication mechanism\r\n" + BYE,
         port="starttls"),
    Case("auth-before-ehlo", b"AUTH PLAIN " + plain("", ALICE, PW) + b"\r\n" + Q,
         b"503 5.5.1 Send EHLO first\r\n" + BYE),
    # --- user names aimed at the backend login -------------------------------------------------
    Case("master-separator-in-user", EHLO + b"AUTH PLAIN " + plain("", "alice@example.com*casmaster", PW)
         + b"\r\n" + Q, GREETS + FAILED + BYE, at_least=FLOOR, within=DELAYED),
    Case("master-separator-with-master-password", master_login, GREETS + FAILED + BYE,
         at_least=FLOOR, within=DELAYED),
    Case("quote-in-user", EHLO + b"AUTH PLAIN " + plain("", 'alice@example.com" x', PW) + b"\r\n" + Q,
         GREETS + FAILED + BYE, at_least=FLOOR, within=DELAYED),
    Case("crlf-in-plain-authcid", EHLO + b"AUTH PLAIN " + plain("", "alice@example.com\r\nRSET", PW) + b"\r\n" + Q,
         GREETS + FAILED + BYE),
    Case("crlf-in-login-mechanism-user",
         [EHLO + b"AUTH LOGIN\r\n", Expect(b"334 VXNlcm5hbWU6\r\n"), b64(b"alice@example.com\r\nRSET") + b"\r\n" + Q],
         GREETS + b"334 VXNlcm5hbWU6\r\n" + FAILED + BYE),
    Case("authzid-of-another-user", EHLO + b"AUTH PLAIN " + plain("bob@example.com", ALICE, PW) + b"\r\n" + Q,
         GREETS + AUTHZ + BYE, at_least=FLOOR, within=DELAYED),
    Case("authzid-with-master-separator",
         EHLO + b"AUTH PLAIN " + plain("bob@example.com*casmaster", ALICE, PW) + b"\r\n" + Q,
         GREETS + AUTHZ + BYE, at_least=FLOOR, within=DELAYED),
    Case("authzid-with-crlf", EHLO + b"AUTH PLAIN " + plain("bob@example.com\r\nRSET", ALICE, PW) + b"\r\n" + Q,
         GREETS + FAILED + BYE),
    # The positive control: acting as oneself (by alias) is allowed and reaches Dovecot.
    Case("authzid-own-alias-is-proxied",
         EHLO + b"AUTH PLAIN " + plain("alice.smith@example.com", ALICE, PW) + b"\r\n" + Q,
         re.compile(re.escape(GREETS) + rb"235 2\.7\.0 Authentication successful\r\n221 2\.0\.0 [^\r]*\r\n"),
         proxied=True),
    # --- malformed base64 in AUTH --------------------------------------------------------------
    Case("base64-invalid-initial-response", EHLO + b"AUTH PLAIN !!!\r\n" + Q,
         GREETS + b"501 5.5.2 Invalid base64 data\r\n" + BYE),
    Case("base64-invalid-continuation", [EHLO + b"AUTH PLAIN\r\n", Expect(b"334 \r\n"), b"!!!\r\n" + Q],
         GREETS + b"334 \r\n501 5.5.2 Invalid base64 data\r\n" + BYE),
    Case("base64-unpadded-continuation", [EHLO + b"AUTH PLAIN\r\n", Expect(b"334 \r\n"), b"YQ\r\n" + Q],
         GREETS + b"334 \r\n501 5.5.2 Invalid base64 data\r\n" + BYE),
    Case("sasl-cancelled", [EHLO + b"AUTH PLAIN\r\n", Expect(b"334 \r\n"), b"*\r\n" + Q],
         GREETS + b"334 \r\n501 5.7.0 Authentication aborted\r\n" + BYE),
    Case("plain-without-separators", EHLO + b"AUTH PLAIN " + b64(ALICE) + b"\r\n" + Q, GREETS + FAILED + BYE),
    Case("unknown-sasl-mechanism", EHLO + b"AUTH CRAM-MD5\r\n" + Q,
         GREETS + b"504 5.5.4 Unrecognized authentication type\r\n" + BYE),
    Case("auth-with-extra-argument", EHLO + b"AUTH PLAIN " + plain("", ALICE, PW) + b" extra\r\n" + Q,
         GREETS + b"501 5.5.4 Syntax error in parameters or arguments\r\n" + BYE),
]


@pytest.fixture(scope="module")
def outcomes(lab_env, dovecot_before):
    ports = {"plain": lab_env.submission_port, "starttls": lab_env.submission_starttls_port,
             "submissions": lab_env.submissions_port}
    yield run_line_table(CASES, ports, lab_env, implicit_port="submissions")
    lab_alive(lab_env)


@pytest.mark.parametrize("case", params(CASES))
def test_submission(lab_env, outcomes, case):
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
