"""Bad input for the HTTPS front door (hyper behind rustls), before and around authentication.

The first table is raw HTTP/1.1 over TLS: every row states the request bytes and the exact
response up to the close (the Date header is normalised; responses that Radicale writes are
matched by status line and body, its other headers vary). Each row's test also checks what
mailfront logged for the connection (`http request` lines: how many, and which backend, `-` when
nothing was proxied) and that Radicale, the backend, never saw what it must not (a smuggled
request, a client's copy of the identity header). The second table is cookies: tampered,
truncated, foreign, expired, replayed for another purpose.
"""

from __future__ import annotations

import http.client
import re
import time
import uuid
from dataclasses import dataclass

import pytest

from advlib import (PASSWORD, Case, b64, check_transcript, lab_alive, lines_for, params, radicale_logs, run_table,
                    wait_for_line, wait_until)
from conftest import client_tls, https_node, lab

MARK = uuid.uuid4().hex[:12]
AUTH = b"Authorization: Basic " + b64(b"alice@example.com:" + PASSWORD.encode()) + b"\r\n"
CLOSE = b"Connection: close\r\n"
PROPFIND = b"PROPFIND /dav/alice@example.com/ HTTP/1.1\r\nHost: mail.example.com\r\n" + AUTH + b"Depth: 0\r\n"


@dataclass(frozen=True)
class HttpCase(Case):
    """A raw HTTP row. `requests`: `http request` lines mailfront logs for the connection (0 when
    hyper refuses the message before mailfront sees it); `backend`: the backend they name;
    `absent`: text Radicale's log must never contain (a smuggled path, an intruder's name)."""

    requests: int = 1
    backend: str = "-"
    absent: str = ""


def hyper_refusal(status: bytes) -> bytes:
    """What hyper itself answers to a message it cannot parse, before mailfront sees it."""
    return b"HTTP/1.1 " + status + b"\r\nconnection: close\r\ncontent-length: 0\r\ndate: DATE\r\n\r\n"


BAD = hyper_refusal(b"400 Bad Request")
TOO_LARGE = hyper_refusal(b"431 Request Header Fields Too Large")


def own(status: bytes, body: bytes, headers: bytes = b"") -> bytes:
    """A response mailfront writes itself (plain text), to a request that asked to close."""
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n" + headers
            + b"connection: close\r\ncontent-length: %d\r\ndate: DATE\r\n\r\n" % len(body) + body)


NOT_FOUND = own(b"404 Not Found", b"Not found\n")
UNAUTHORIZED = own(b"401 Unauthorized", b"Authentication required\n",
                   b'www-authenticate: Basic realm="mailfront", charset="UTF-8"\r\n')


def radicale(status: bytes, body: bytes = rb".*") -> re.Pattern:
    """A response Radicale wrote, relayed by mailfront: its status line and body."""
    return re.compile(rb"HTTP/1\.[01] " + re.escape(status) + rb"\r\n(?:[!-~][^\r\n]*\r\n)*\r\n" + body, re.S)


MULTISTATUS = radicale(b"207 Multi-Status", rb"<\?xml.*<href>/dav/alice%40example\.com/</href>.*</multistatus>\s*")
FORBIDDEN = radicale(b"403 Forbidden", rb"Access to the requested resource forbidden\.")
NOT_ALLOWED = radicale(b"405 Method Not Allowed", rb"The method is not allowed on the requested resource\.")


def smuggled(tag: str) -> bytes:
    """A whole request hidden in another's body; its path must never reach a backend."""
    return (f"GET /dav/smuggled-{tag}-{MARK}/ HTTP/1.1\r\nHost: mail.example.com\r\n".encode() + AUTH + b"\r\n")


TE_CL_INNER = smuggled("te-cl")


def intruder(row: str) -> bytes:
    """A name nobody has, one per row: if it shows up in Radicale's log, that row leaked it."""
    return f"intruder-{row}-{MARK}@example.com".encode()


def identity_row(row: str, header: bytes, reply=None, request: bytes = PROPFIND, **kwargs) -> HttpCase:
    """`header` carries INTRUDER (this row's intruder name) in some disguise."""
    name = intruder(row)
    backend = kwargs.pop("backend_", "mbx1")
    return HttpCase(row, request + header.replace(b"INTRUDER", name) + b"Content-Length: 0\r\n\r\n",
                    reply or MULTISTATUS, backend=backend, absent=name.decode(), **kwargs)


CASES = [
    # --- request smuggling ------------------------------------------------------------------------
    # CL.TE: Transfer-Encoding wins (RFC 9112 §6.3); the connection closes after the response,
    # so what follows the chunked body is never read as a request.
    HttpCase("cl-te", b"POST /dav/alice@example.com/ HTTP/1.1\r\nHost: mail.example.com\r\n" + AUTH
             + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled("cl-te"),
             NOT_ALLOWED, backend="mbx1", absent=f"smuggled-cl-te-{MARK}"),
    # TE.CL: the smuggled request sits inside a chunk; Content-Length would have ended the body
    # before it.
    HttpCase("te-cl", b"POST /dav/alice@example.com/ HTTP/1.1\r\nHost: mail.example.com\r\n" + AUTH
             + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
             + b"%x\r\n" % len(TE_CL_INNER) + TE_CL_INNER + b"\r\n0\r\n\r\n",
             NOT_ALLOWED, backend="mbx1", absent=f"smuggled-te-cl-{MARK}"),
    HttpCase("two-different-content-lengths", b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
             b"Content-Length: 40\r\n\r\nabcd" + smuggled("dup-cl"), BAD, requests=0, absent=f"smuggled-dup-cl-{MARK}"),
    HttpCase("content-length-list", b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\nabcd", BAD,
             requests=0),
    HttpCase("content-length-negative", b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", BAD,
             requests=0),
    HttpCase("content-length-plus-sign", b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd", BAD,
             requests=0),
    HttpCase("te-chunked-not-last", b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
             b"0\r\n\r\n", BAD, requests=0),
    HttpCase("te-unknown-coding", b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
             BAD, requests=0),
    HttpCase("te-space-before-colon", b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"
             b"0\r\n\r\n", BAD, requests=0),
    HttpCase("te-in-http-1.0", b"POST /login HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
             BAD, requests=0),
    HttpCase("obsolete-line-folding", b"GET /dav/healthcheck.htm HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
             BAD, requests=0),
    HttpCase("malformed-chunk-size", b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + CLOSE
             + b"\r\nzz\r\nabc\r\n0\r\n\r\n", re.compile(rb"HTTP/1\.1 400 Bad Request\r\n.*", re.S)),
    HttpCase("chunk-size-over-64-bits", b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + CLOSE
             + b"\r\nfffffffffffffffffff\r\nabc", re.compile(rb"HTTP/1\.1 400 Bad Request\r\n.*", re.S)),
    # --- oversized -------------------------------------------------------------------------------
    HttpCase("header-of-100k", b"GET /dav/healthcheck.htm HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000
             + b"\r\n\r\n", TOO_LARGE, requests=0),
    HttpCase("150-header-fields", b"GET /dav/healthcheck.htm HTTP/1.1\r\nHost: x\r\n"
             + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n", TOO_LARGE, requests=0),
    HttpCase("uri-of-70k", b"GET /dav/" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", TOO_LARGE, requests=0),
    HttpCase("own-endpoint-body-over-16k", b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n"
             b"Content-Type: application/x-www-form-urlencoded\r\n" + CLOSE + b"\r\n" + b"a" * 20000,
             own(b"413 Payload Too Large", b"Request body too large\n")),
    # --- header injection ------------------------------------------------------------------------
    HttpCase("bare-cr-in-header-value", b"GET /dav/healthcheck.htm HTTP/1.1\r\nHost: x\r\nX-A: a\rX-B: b\r\n\r\n",
             BAD, requests=0),
    HttpCase("nul-in-header-value", b"GET /dav/healthcheck.htm HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", BAD,
             requests=0),
    HttpCase("nul-in-path", b"GET /dav/\x00 HTTP/1.1\r\nHost: x\r\n\r\n", BAD, requests=0),
    HttpCase("invalid-utf8-in-path", b"GET /dav/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", BAD, requests=0),
    HttpCase("binary-garbage", bytes(range(256)) + b"\r\n\r\n", BAD, requests=0),
    # A client's copy of the identity header (X-Remote-User) never reaches the backend, in any
    # spelling a backend may map to the same name: the collection stays alice's own (207).
    identity_row("identity-header-copy", b"X-Remote-User: INTRUDER\r\n" + CLOSE),
    identity_row("identity-header-copy-lowercase", b"x-remote-user: INTRUDER\r\n" + CLOSE),
    identity_row("identity-header-copy-twice", b"X-Remote-User: INTRUDER\r\nX-Remote-User: INTRUDER\r\n" + CLOSE),
    identity_row("identity-header-after-bare-lf", b"X-A: a\nX-Remote-User: INTRUDER\r\n" + CLOSE),
    identity_row("identity-header-named-in-connection",
                 b"Connection: close, X-Remote-User\r\nX-Remote-User: INTRUDER\r\n"),
    identity_row("identity-header-with-underscores", b"X_Remote_User: INTRUDER\r\n" + CLOSE),
    identity_row("identity-header-without-login", b"X-Remote-User: INTRUDER\r\n" + CLOSE, UNAUTHORIZED,
                 request=b"PROPFIND /dav/bob@example.com/ HTTP/1.1\r\nHost: x\r\nDepth: 0\r\n", backend_="-"),
    identity_row("identity-header-with-underscores-without-login", b"X_Remote_User: INTRUDER\r\n" + CLOSE,
                 UNAUTHORIZED, request=b"PROPFIND /dav/bob@example.com/ HTTP/1.1\r\nHost: x\r\nDepth: 0\r\n",
                 backend_="-"),
    # --- path traversal --------------------------------------------------------------------------
    HttpCase("oab-dot-dot", b"GET /oab/../calendar/ HTTP/1.1\r\nHost: x\r\n" + CLOSE + b"\r\n", NOT_FOUND),
    HttpCase("oab-encoded-dot-dot", b"GET /oab/%2e%2e/ HTTP/1.1\r\nHost: x\r\n" + CLOSE + b"\r\n", NOT_FOUND),
    HttpCase("oab-encoded-slash", b"GET /oab%2f HTTP/1.1\r\nHost: x\r\n" + AUTH + CLOSE + b"\r\n", NOT_FOUND),
    HttpCase("autodiscover-dot-dot-to-oab", b"GET /autodiscover/../oab/ HTTP/1.1\r\nHost: x\r\n" + AUTH + CLOSE
             + b"\r\n", NOT_FOUND),
    HttpCase("autoconfig-dot-dot-to-oab", b"GET /mail/config-v1.1.xml/../../oab/ HTTP/1.1\r\nHost: x\r\n" + AUTH
             + CLOSE + b"\r\n", NOT_FOUND),
    HttpCase("well-known-dot-dot-to-oab", b"GET /.well-known/autoconfig/mail/../../../oab/ HTTP/1.1\r\nHost: x\r\n"
             + AUTH + CLOSE + b"\r\n", NOT_FOUND),
    # Into a DAV service: the backend sees the user mailfront authenticated, and refuses.
    HttpCase("dav-dot-dot-to-another-user", b"PROPFIND /dav/alice@example.com/../bob@example.com/ HTTP/1.1\r\n"
             b"Host: x\r\n" + AUTH + b"Depth: 0\r\n" + CLOSE + b"Content-Length: 0\r\n\r\n", FORBIDDEN,
             backend="mbx1"),
    HttpCase("dav-encoded-dot-dot-to-another-user", b"PROPFIND /dav/%2e%2e/bob@example.com/ HTTP/1.1\r\nHost: x\r\n"
             + AUTH + b"Depth: 0\r\n" + CLOSE + b"Content-Length: 0\r\n\r\n", FORBIDDEN, backend="mbx1"),
    HttpCase("dav-encoded-slash-to-another-user", b"PROPFIND /dav/alice@example.com/..%2fbob@example.com/ HTTP/1.1\r\n"
             b"Host: x\r\n" + AUTH + b"Depth: 0\r\n" + CLOSE + b"Content-Length: 0\r\n\r\n", FORBIDDEN, backend="mbx1"),
    HttpCase("dav-backslashes-to-etc-passwd", b"GET /dav/..%5c..%5cetc/passwd HTTP/1.1\r\nHost: x\r\n" + AUTH + CLOSE
             + b"\r\n", FORBIDDEN, backend="mbx1"),
    # A forms-only service's prefix does not lend its path to the Basic-authenticated one.
    HttpCase("calendar-dot-dot-to-dav", b"PROPFIND /calendar/../dav/bob@example.com/ HTTP/1.1\r\nHost: x\r\n" + AUTH
             + b"Depth: 0\r\n" + CLOSE + b"Content-Length: 0\r\n\r\n",
             own(b"401 Unauthorized", b"Authentication required\n", b'www-authenticate: Bearer realm="mailfront"\r\n')),
    # Control: alice's own collection, the same request shape as the rows above.
    HttpCase("control-own-collection", PROPFIND + CLOSE + b"Content-Length: 0\r\n\r\n", MULTISTATUS, backend="mbx1"),
]


def normalise(response: bytes) -> bytes:
    return re.sub(rb"(?m)^date: [^\r]*\r$", b"date: DATE\r", response)


@pytest.fixture(scope="module")
def outcomes(lab_env):
    results = run_table(CASES, {"plain": lab_env.https_port}, lab_env, implicit_tls=True, greeting=False)
    # A last request, logged after every row's: once it is in the log, so is everything before it.
    status, _, _, _ = https_request(lab_env.https_port, "GET", f"/sentinel-{MARK}")
    assert status == 404
    wait_until(lambda: f"path=/sentinel-{MARK} " in lab_env.log(), what="the sentinel request in the log")
    yield results
    lab_alive(lab_env)


@pytest.mark.parametrize("case", params(CASES))
def test_http(lab_env, outcomes, case):
    outcome = outcomes[case.id]
    check_transcript(case, outcome, normalise)
    requests = [line for line in lines_for(lab_env.log(), outcome.client) if "http request" in line]
    assert len(requests) == case.requests, requests
    assert all(f" backend={case.backend} " in line for line in requests), requests
    if case.absent:
        assert case.absent not in radicale_logs(lab_env), [l for l in radicale_logs(lab_env).splitlines()
                                                           if case.absent in l]
        assert case.absent not in lab_env.log()
    lab_alive(lab_env)


# --- the login form's return path: a local path only, whatever a browser makes of it -----------


def https_request(port: int, method: str, path: str, headers: dict | None = None, body: str | None = None):
    """One request on a new connection: (status, headers, body, client as the log writes it)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_tls(), timeout=20)
    try:
        conn.connect()
        host, cport = conn.sock.getsockname()[:2]
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read(), f"{host}:{cport}"
    finally:
        conn.close()


def csrf_pair(port: int) -> str:
    status, headers, _, _ = https_request(port, "GET", "/login")
    assert status == 200
    cookie = next(v for v in headers.get_all("Set-Cookie") if v.startswith("mailfront_csrf="))
    return cookie.split(";", 1)[0].split("=", 1)[1]


def login(port: int, user: str = "alice@example.com", return_to: str = "/calendar/"):
    """Posts the login form (with a valid CSRF pair); returns (status, headers)."""
    csrf = csrf_pair(port)
    form = f"user={user}&password={PASSWORD}&csrf={csrf}&return={return_to}"
    status, headers, _, _ = https_request(port, "POST", "/login", {
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"mailfront_csrf={csrf}"}, form)
    return status, headers


def session_of(headers) -> str:
    cookie = next(v for v in headers.get_all("Set-Cookie") or [] if v.startswith("mailfront_session="))
    return cookie.split(";", 1)[0].split("=", 1)[1]


RETURNS = [
    # return= (URL-encoded in the form)    the Location after a successful login
    pytest.param("/calendar/", "/calendar/", id="control-local-path"),
    pytest.param("%2F%2Fevil.example", "/", id="scheme-relative"),
    pytest.param("/%5Cevil.example", "/", id="slash-backslash"),
    pytest.param("https:%2F%2Fevil.example", "/", id="absolute-url"),
    pytest.param("/%0d%0aSet-Cookie:%20x=1", "/", id="crlf-header-injection"),
    # Browsers delete tabs and newlines from URLs (WHATWG URL §4.4): "/\t/evil.example" is
    # "//evil.example", another host.
    pytest.param("/%09/evil.example", "/", id="tab-open-redirect"),
    pytest.param("/%0b/x", "/", id="control-character"),
]


@pytest.mark.parametrize("return_to, location", RETURNS)
def test_login_return_path(lab_env, return_to, location):
    status, headers = login(lab_env.https_port, return_to=return_to)
    assert (status, headers.get("Location")) == (303, location)


# --- cookies: tampered, truncated, foreign, expired, replayed for another purpose ---------------


@pytest.fixture(scope="module")
def nodes(lab_env, tmp_path_factory):
    """Two more nodes of the array: one with a 2 s session lifetime (same keys), one with a key
    file of its own (key 2 only)."""
    other_keys = lab.write_cookie_keys(lab_env.binary, tmp_path_factory.mktemp("adv-keys") / "keys.toml", key_id=2)
    short, short_port = https_node(lab_env, "adv-short", lab_env.cookie_keys, lifetime="2s")
    other, other_port = https_node(lab_env, "adv-otherkey", other_keys)
    yield {"short": short_port, "other": other_port}
    for node in (short, other):
        assert "panicked" not in node.log_since_start()
        node.stop()


def calendar(port: int, cookie: str):
    """GET /calendar/.web/ with a session cookie: (status, Location, client)."""
    status, headers, _, client = https_request(port, "GET", "/calendar/.web/", {"Cookie": f"mailfront_session={cookie}"})
    return status, headers.get("Location"), client


def fresh_session(port: int) -> str:
    status, headers = login(port)
    assert status == 303
    return session_of(headers)


def flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]


COOKIES = [
    # id                       cookie (from a fresh session `s`)           refusal logged
    ("tampered-last-byte", lambda s, env: flip(s, len(s) - 2), "error=tampered"),
    ("tampered-first-byte", lambda s, env: flip(s, 0), "session cookie refused"),
    ("truncated", lambda s, env: s[:-10], "session cookie refused"),
    ("not-base64", lambda s, env: "!!!!not-base64!!!!", "session cookie refused"),
    ("empty", lambda s, env: "", ""),
    ("8k-of-garbage", lambda s, env: "A" * 8192, "session cookie refused"),
    ("bearer-token-as-cookie", lambda s, env: bearer(env), "session cookie refused"),
    ("csrf-token-as-cookie", lambda s, env: csrf_pair(env.https_port), "session cookie refused"),
]


def bearer(lab_env) -> str:
    import json
    status, _, body, _ = https_request(lab_env.https_port, "POST", "/auth/token", {
        "Authorization": "Basic " + b64(f"alice@example.com:{PASSWORD}".encode()).decode()})
    assert status == 200
    return json.loads(body)["access_token"]


@pytest.mark.parametrize("row, forge, logged", COOKIES, ids=[c[0] for c in COOKIES])
def test_cookie_refused(lab_env, row, forge, logged):
    session = fresh_session(lab_env.https_port)
    # Control: the genuine cookie opens the calendar, through to Radicale.
    assert calendar(lab_env.https_port, session)[:2] == (200, None)
    status, location, client = calendar(lab_env.https_port, forge(session, lab_env))
    assert (status, location) == (302, "/login?return=/calendar/.web/")
    line = wait_for_line(lab_env.log, client, "http request")
    assert " backend=- " in [l for l in line if "http request" in l][0], line
    if logged:
        assert logged in lab_env.log()
    lab_alive(lab_env)


def test_session_cookie_is_not_a_bearer_token(lab_env):
    session = fresh_session(lab_env.https_port)
    status, headers, _, client = https_request(lab_env.https_port, "PROPFIND", "/dav/alice@example.com/", {
        "Authorization": f"Bearer {session}", "Depth": "0"})
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Basic")
    assert " backend=- " in [l for l in wait_for_line(lab_env.log, client, "http request") if "http request" in l][0]


def test_cookie_of_a_foreign_key_is_refused_both_ways(lab_env, nodes):
    ours, theirs = fresh_session(lab_env.https_port), fresh_session(nodes["other"])
    assert calendar(nodes["other"], theirs)[0] == 200  # control: valid where it was sealed
    assert calendar(nodes["other"], ours)[:2] == (302, "/login?return=/calendar/.web/")
    assert calendar(lab_env.https_port, theirs)[:2] == (302, "/login?return=/calendar/.web/")
    assert "session cookie refused error=unknown or retired key" in lab_env.log()


def test_expired_cookie_is_refused_on_every_node(lab_env, nodes):
    session = fresh_session(nodes["short"])
    assert calendar(lab_env.https_port, session)[0] == 200  # control: valid on another node, for now
    deadline = time.monotonic() + 10
    while calendar(lab_env.https_port, session)[0] != 302:
        assert time.monotonic() < deadline, "the expired cookie is still accepted"
        time.sleep(0.1)
    assert calendar(lab_env.https_port, session)[:2] == (302, "/login?return=/calendar/.web/")
    assert "session cookie refused error=expired" in lab_env.log()
