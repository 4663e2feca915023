"""Bad input for the IMAP front end, before authentication.

Every row: what a hostile client sends after the greeting, and the exact bytes mailfront
answers up to its close. Rows that would leave the session open end with `z LOGOUT`, so every
row ends with a close. All rows run at once (see advlib); each row's test checks its reply, the
close, the time, that its session was never proxied (or was, for the positive controls), and
that mailfront did not panic. The last test checks Dovecot's own logs: no injected name ever
reached a backend.
"""

from __future__ import annotations

import re

import pytest

from advlib import (AUTH_FAILURE_DELAY, LAB_USERS, MAX_COMMANDS, MAX_LINE, MAX_LITERAL, PASSWORD, PRE_AUTH_IDLE,
                    PROMPT, TLS, Case, Expect, b64, backend_login_names, check_session, check_transcript,
                    dovecot_marks, lab, lab_alive, params, plain, run_line_table)

Z = b"z LOGOUT\r\n"
BYE = b"* BYE Logging out.\r\nz OK Logout completed.\r\n"
FAILED = b"NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
AUTHZ = b"NO [AUTHORIZATIONFAILED] Not authorized to act as that user.\r\n"
BAD = b"BAD Error in IMAP command.\r\n"
DELAYED = AUTH_FAILURE_DELAY + PROMPT  # a refused login takes the failure delay…
FLOOR = AUTH_FAILURE_DELAY - 0.05  # …and not less
IDLE = dict(at_least=PRE_AUTH_IDLE - 0.2, within=PRE_AUTH_IDLE + PROMPT, ended="result=timeout")
ALICE = b"alice@example.com"
PW = PASSWORD.encode()
# Dovecot's reply to a pipelined LOGOUT after a proxied login.
BACKEND_LOGOUT = rb"\* BYE Logging out\r\nz OK Logout completed[^\r]*\r\n"


def literal(data: bytes) -> bytes:
    """A non-synchronising literal (RFC 7888) holding `data`."""
    return b"{%d+}\r\n" % len(data) + data


def master_login(lab_env) -> bytes:
    """LOGIN as `alice*casmaster` with the real master password: what a Dovecot master login looks
    like. mailfront's clients are not Dovecot's: the name is just an unknown user."""
    master = lab.master_password(lab_env.root).encode()
    return b'a LOGIN "alice@example.com*' + lab.MASTER_USER.encode() + b'" "' + master + b'"\r\n' + Z


CASES = [
    # --- over-long lines -----------------------------------------------------------------------
    Case("line-at-limit-is-served", b"a" * (MAX_LINE - 5) + b" NOOP\r\n" + Z,
         b"a" * (MAX_LINE - 5) + b" OK NOOP completed.\r\n" + BYE),
    Case("line-one-over-limit", b"a" * (MAX_LINE - 4) + b" NOOP\r\n", b"* BYE Line too long.\r\n"),
    Case("line-2000-without-newline", b"a " + b"x" * 2000, b"* BYE Line too long.\r\n"),
    Case("sasl-response-over-limit", [b"a AUTHENTICATE PLAIN\r\n", Expect(b"+ \r\n"), b"A" * 3000 + b"\r\n"],
         b"+ \r\n* BYE Line too long.\r\n"),
    # --- literals ----------------------------------------------------------------------------------
    Case("literal-sync-999999999", b"a LOGIN {999999999}\r\n" + Z, b"a BAD Literal too large.\r\n" + BYE),
    Case("literal-sync-one-over-limit", b"a LOGIN {%d}\r\n" % (MAX_LITERAL + 1) + Z,
         b"a BAD Literal too large.\r\n" + BYE),
    Case("literal-nonsync-999999999", b"a LOGIN {999999999+}\r\n", b"* BYE Literal too large.\r\n"),
    Case("literal-length-over-32-bits", b"a LOGIN {99999999999}\r\n", b"* BYE Command too large.\r\n"),
    Case("literals-summing-over-the-message-limit",
         b"a LOGIN {16000+}\r\n" + b"u" * 16000 + b" {16000+}\r\n" + b"p" * 16000 + b" {16000+}\r\n",
         b"* BYE Literal too large.\r\n"),
    Case("literal-sync-never-sent", b"a LOGIN {10}\r\n", b"+ OK\r\n* BYE Disconnected for inactivity.\r\n", **IDLE),
    Case("literal-nonsync-never-completed", b"a LOGIN {100+}\r\nabc",
         b"* BYE Disconnected for inactivity.\r\n", **IDLE),
    # --- NUL, invalid UTF-8, garbage -----------------------------------------------------------
    Case("nul-in-command", b"a NOOP\x00\r\n" + Z, b"a " + BAD + BYE),
    Case("nul-as-tag", b"\x00 NOOP\r\n" + Z, b"* " + BAD + BYE),
    # A literal is CHAR8 (RFC 3501 §9): no NUL.
    Case("nul-in-literal-user", b"a LOGIN " + literal(b"alice@example.com\x00") + b" pw\r\n" + Z, b"a " + BAD + BYE),
    Case("invalid-utf8-atom", b"a LOGIN \xff\xfe pw\r\n" + Z, b"a " + BAD + BYE),
    Case("invalid-utf8-quoted", b'a LOGIN "\xc3\x28" pw\r\n' + Z, b"a " + BAD + BYE),
    Case("invalid-utf8-literal-user", b"a LOGIN {2+}\r\n\xc3\x28 pw\r\n" + Z, b"a " + FAILED + BYE),
    Case("binary-garbage", bytes(range(256)) + b"\r\n" + Z, b"* " + BAD + b"* " + BAD + BYE),
    Case("garbage-without-newline", bytes(range(11, 256)) * 8, b"* BYE Line too long.\r\n"),
    # --- pipelined before authentication -------------------------------------------------------
    Case("25-pipelined-noops", b"".join(b"n%d NOOP\r\n" % i for i in range(25)),
         b"".join(b"n%d OK NOOP completed.\r\n" % i for i in range(MAX_COMMANDS))
         + b"* BYE Too many commands before authentication.\r\n"),
    Case("5-pipelined-bad-logins", b"".join(b"a%d LOGIN alice@example.com wrong\r\n" % i for i in range(5)),
         b"a0 " + FAILED + b"a1 " + FAILED + b"a2 " + FAILED + b"* BYE Too many authentication failures.\r\n",
         at_least=3 * AUTH_FAILURE_DELAY - 0.1, within=3 * AUTH_FAILURE_DELAY + PROMPT),
    # --- STARTTLS with plaintext after it in the same packet (CVE-2011-0411) -------------------
    Case("starttls-with-injected-login",
         [b"a STARTTLS\r\nb LOGIN alice@example.com " + PW + b"\r\n", Expect(b"negotiation now.\r\n"), TLS,
          b"c NOOP\r\n" + Z],
         b"a OK Begin TLS negotiation now.\r\nc OK NOOP completed.\r\n" + BYE, port="starttls"),
    Case("starttls-with-injected-literal",
         [b"a STARTTLS\r\nb LOGIN {17}\r\n", Expect(b"negotiation now.\r\n"), TLS, b"c CAPABILITY\r\n" + Z],
         b"a OK Begin TLS negotiation now.\r\n* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID LOGIN-REFERRALS AUTH=PLAIN AUTH=LOGIN\r\n"
         b"c OK Capability completed.\r\n" + BYE, port="starttls"),
    Case("starttls-on-implicit-tls", b"a STARTTLS\r\n" + Z, b"a BAD TLS is already active.\r\n" + BYE, port="imaps"),
    Case("starttls-where-not-offered", b"a STARTTLS\r\n" + Z,
         b"a BAD STARTTLS is not available on this port.\r\n" + BYE),
    Case("login-before-starttls", b"a LOGIN alice@example.com " + PW + b"\r\n" + Z,
         b"a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.\r\n" + BYE,
         port="starttls"),
    # --- user names aimed at the backend login -------------------------------------------------
    Case("master-separator-in-user", b'a LOGIN "alice@example.com*casmaster" ' + PW + b"\r\n" + Z,
         b"a " + FAILED + BYE, at_least=FLOOR, within=DELAYED),
    Case("master-separator-with-master-password", master_login, b"a " + FAILED + BYE,
         at_least=FLOOR, within=DELAYED),
    Case("quote-in-user", b'a LOGIN "alice@example.com\\" x" ' + PW + b"\r\n" + Z,
         b"a " + FAILED + BYE, at_least=FLOOR, within=DELAYED),
    Case("crlf-command-in-literal-user",
         b"a LOGIN " + literal(b"alice@example.com\r\nb LOGIN bob@example.com") + b" " + PW + b"\r\n" + Z,
         b"a " + FAILED + BYE),
    Case("crlf-in-plain-authcid", b"a AUTHENTICATE PLAIN " + plain("", "alice@example.com\r\nb NOOP", PW)
         + b"\r\n" + Z, b"a " + FAILED + BYE),
    Case("crlf-in-login-mechanism-user",
         [b"a AUTHENTICATE LOGIN\r\n", Expect(b"\r\n"), b64(b"alice@example.com\r\nb NOOP") + b"\r\n" + Z],
         b"+ VXNlcm5hbWU6\r\na " + FAILED + BYE),
    Case("authzid-of-another-user", b"a AUTHENTICATE PLAIN " + plain("bob@example.com", ALICE, PW) + b"\r\n" + Z,
         b"a " + AUTHZ + BYE, at_least=FLOOR, within=DELAYED),
    Case("authzid-with-master-separator",
         b"a AUTHENTICATE PLAIN " + plain("bob@example.com*casmaster", ALICE, PW) + b"\r\n" + Z,
         b"a " + AUTHZ + BYE, at_least=FLOOR, within=DELAYED),
    Case("authzid-with-crlf", b"a AUTHENTICATE PLAIN " + plain("bob@example.com\r\nb NOOP", ALICE, PW)
         + b"\r\n" + Z, b"a " + FAILED + BYE),
    # The positive control: acting as oneself (by alias) is allowed and reaches Dovecot.
    Case("authzid-own-alias-is-proxied",
         b"a AUTHENTICATE PLAIN " + plain("alice.smith@example.com", ALICE, PW) + b"\r\n" + Z,
         re.compile(rb"a OK \[CAPABILITY IMAP4rev1 [^\r\]]*\] Logged in\r\n" + BACKEND_LOGOUT), proxied=True),
    # OAuth tokens where `[oauth]` is not configured (the lab's node): not offered, not taken,
    # whatever the token looks like (test_oauth.py covers a node that takes them).
    Case("xoauth2-not-offered",
         b"a AUTHENTICATE XOAUTH2 " + b64(b"user=alice@example.com\x01auth=Bearer eyJhbGciOiJub25lIn0.e30.\x01\x01")
         + b"\r\n" + Z, b"a NO Unsupported authentication mechanism.\r\n" + BYE),
    Case("oauthbearer-not-offered",
         b"a AUTHENTICATE OAUTHBEARER " + b64(b"n,a=alice@example.com,\x01auth=Bearer x.y.z\x01\x01")
         + b"\r\n" + Z, b"a NO Unsupported authentication mechanism.\r\n" + BYE),
    # --- malformed base64 in AUTHENTICATE ------------------------------------------------------
    Case("base64-invalid-initial-response", b"a AUTHENTICATE PLAIN !!!\r\n" + Z, b"a " + BAD + BYE),
    Case("base64-invalid-continuation", [b"a AUTHENTICATE PLAIN\r\n", Expect(b"+ \r\n"), b"!!!\r\n" + Z],
         b"+ \r\na BAD Invalid base64 data in continued response.\r\n" + BYE),
    Case("base64-unpadded-continuation", [b"a AUTHENTICATE PLAIN\r\n", Expect(b"+ \r\n"), b"YQ\r\n" + Z],
         b"+ \r\na BAD Invalid base64 data in continued response.\r\n" + BYE),
    Case("base64-with-embedded-space", [b"a AUTHENTICATE PLAIN\r\n", Expect(b"+ \r\n"), b"AGFs aWNl\r\n" + Z],
         b"+ \r\na BAD Invalid base64 data in continued response.\r\n" + BYE),
    Case("sasl-cancelled", [b"a AUTHENTICATE PLAIN\r\n", Expect(b"+ \r\n"), b"*\r\n" + Z],
         b"+ \r\na BAD Authentication aborted by client.\r\n" + BYE),
    Case("plain-without-separators", b"a AUTHENTICATE PLAIN " + b64(ALICE) + b"\r\n" + Z, b"a " + FAILED + BYE),
    Case("plain-empty-response", [b"a AUTHENTICATE PLAIN\r\n", Expect(b"+ \r\n"), b"=\r\n" + Z],
         b"+ \r\na " + FAILED + BYE),
    Case("unknown-sasl-mechanism", b"a AUTHENTICATE CRAM-MD5\r\n" + Z,
         b"a NO Unsupported authentication mechanism.\r\n" + BYE),
]


@pytest.fixture(scope="module")
def outcomes(lab_env, dovecot_before):
    ports = {"plain": lab_env.plain_port, "starttls": lab_env.starttls_port, "imaps": lab_env.implicit_port}
    yield run_line_table(CASES, ports, lab_env, implicit_port="imaps")
    lab_alive(lab_env)  # module teardown: no panic, still running


@pytest.mark.parametrize("case", params(CASES))
def test_imap(lab_env, outcomes, case):
    outcome = outcomes[case.id]
    check_transcript(case, outcome)
    check_session(case, outcome, lab_env.log, lab_env.mailfront.process)


@pytest.fixture(scope="module")
def dovecot_before(lab_env):
    return dovecot_marks(lab_env)


def test_no_injected_name_ever_reached_dovecot(lab_env, outcomes, dovecot_before):
    """Dovecot's own logs: every user it was asked about is a lab user; none of the names the
    rows injected (with `*`, quotes, CR/LF) reached its login or auth processes."""
    names = backend_login_names(lab_env, dovecot_before)
    assert names <= LAB_USERS, names - LAB_USERS
    assert "alice@example.com" in names  # the positive control did log in: the check can see logins
