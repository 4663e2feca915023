"""Bad input for the SIP redirect server, over TCP and UDP.

TCP rows: the bytes a hostile client sends, and the exact responses up to the close (the To tag,
a keyed hash, is normalised to TAG). Rows that leave the connection open end with a line that is
not SIP (`END`), on which mailfront closes without a word, so every row ends with a close. Each
row's test also checks mailfront's `sip request` log line for the connection: the decision, and
`user=-` for a refused request (the directory was never asked). UDP rows: one datagram each, then
an OPTIONS probe on the same socket; everything answered before the probe's 200 belongs to the
row (nothing, for a dropped or ignored datagram).
"""

from __future__ import annotations

import re
import socket
import time
import uuid

import pytest

from advlib import (Case, admin_metrics, assert_alive, check_transcript, lab, lab_alive, lines_for, params, run_table,
                    start_node, wait_until)
from conftest import SIP_MAX_MESSAGE, SIP_URIS, UdpPhone

MARK = uuid.uuid4().hex[:10]
URI = "sip:4001@cas.example.com"
CONTACT = "Contact: <" + SIP_URIS["mbx1"].replace("{extension}", "4001") + ">\r\n"
TCP_VIA = "SIP/2.0/TCP 127.0.0.1:5999"
END = b"END\r\n\r\n"  # not SIP: mailfront drops the connection without an answer


def request(call_id: str, *, method: str = "INVITE", uri: str = URI, via: str = TCP_VIA, to: str | None = None,
            extra: bytes = b"", body: bytes = b"", length: bytes | None = None, drop: tuple = (),
            version: str = "SIP/2.0") -> bytes:
    """An RFC 3261 request; `extra` header lines go after the standard ones; `length` overrides
    the Content-Length value; `drop` removes the standard header lines starting so."""
    lines = [f"{method} {uri} {version}", f"Via: {via};branch=z9hG4bK-{call_id}", "Max-Forwards: 70",
             "From: <sip:tester@example.net>;tag=t1", f"To: {to or f'<{uri}>'}", f"Call-ID: {call_id}",
             f"CSeq: 1 {method}"]
    lines = [line.encode() for line in lines if not any(line.startswith(d) for d in drop)]
    lines.append(b"Content-Length: " + (str(len(body)).encode() if length is None else length))
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n" + body


def response(status: str, call_id: str, *, via: str = TCP_VIA, uri: str = URI, method: str = "INVITE",
             extra: str = "", omit: tuple = (), cseq: str | None = None) -> bytes:
    """The exact response mailfront writes (To tag as TAG)."""
    lines = [f"SIP/2.0 {status}", f"Via: {via};branch=z9hG4bK-{call_id}", "From: <sip:tester@example.net>;tag=t1",
             f"To: <{uri}>;tag=TAG", f"Call-ID: {call_id}", f"CSeq: {cseq or f'1 {method}'}"]
    lines = [line for line in lines if not any(line.startswith(o) for o in omit)]
    return ("\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n").encode()


def bad(defect: str, call_id: str, **kwargs) -> bytes:
    return response(f"400 Bad Request ({defect})", call_id, **kwargs)


def normalise(data: bytes) -> bytes:
    return re.sub(rb"(\r\nTo: [^\r]*;tag=)[0-9a-f]{16}\r\n", rb"\1TAG\r\n", data)


def cid(row: str) -> str:
    return f"{row}-{MARK}"


def row(name: str, send: bytes, reply: bytes, decision: str | None, **kwargs) -> Case:
    """A TCP row; `decision`: what mailfront's `sip request` line says (None: no such line)."""
    DECISIONS[name] = decision
    return Case(name, send, reply, **kwargs)


DECISIONS: dict[str, str | None] = {}
HEADERS_130 = b"".join(b"X-H%d: v\r\n" % i for i in range(130))

CASES = [
    row("control-invite", request(cid("control-invite")) + END,
        response("302 Moved Temporarily", cid("control-invite"), extra=CONTACT), "redirect"),
    row("keepalive-ping", b"\r\n\r\n" + END, b"\r\n", None),
    # --- malformed requests: 400 with the reason, the connection stays usable ----------------------
    row("missing-call-id", request(cid("missing-call-id"), drop=("Call-ID",)) + END,
        bad("missing Call-ID", cid("missing-call-id"), omit=("Call-ID",)), "bad-request"),
    row("missing-via", request(cid("missing-via"), drop=("Via",)) + END,
        bad("missing Via", cid("missing-via"), omit=("Via",)), "bad-request"),
    row("two-call-ids", request(cid("two-call-ids"), extra=b"i: other\r\n") + END,
        bad("more than one Call-ID", cid("two-call-ids")), "bad-request"),
    row("nul-in-header", request(cid("nul-in-header"), extra=b"Subject: a\x00b\r\n") + END,
        bad("malformed header line", cid("nul-in-header")), "bad-request"),
    row("nul-in-request-uri", request(cid("nul-in-request-uri"), uri="sip:40\x0001@cas.example.com", to=f"<{URI}>")
        + END, bad("malformed Request-URI", cid("nul-in-request-uri")), "bad-request"),
    row("bare-cr-in-header", request(cid("bare-cr-in-header"), extra=b"Subject: a\rContact: <sip:x@evil>\r\n") + END,
        bad("malformed header line", cid("bare-cr-in-header")), "bad-request"),
    row("invalid-utf8-header", request(cid("invalid-utf8-header"), extra=b"Subject: \xff\xfe\r\n") + END,
        bad("header not UTF-8", cid("invalid-utf8-header")), "bad-request"),
    row("137-header-fields", request(cid("137-header-fields"), extra=HEADERS_130) + END,
        bad("too many header fields", cid("137-header-fields")), "bad-request"),
    row("cseq-method-mismatch", request(cid("cseq-method-mismatch")).replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE") + END,
        bad("CSeq method does not match", cid("cseq-method-mismatch"), cseq="1 BYE"), "bad-request"),
    row("cseq-not-a-number", request(cid("cseq-not-a-number")).replace(b"CSeq: 1 ", b"CSeq: x ") + END,
        bad("malformed CSeq", cid("cseq-not-a-number"), cseq="x INVITE"), "bad-request"),
    row("cseq-over-2-to-the-31", request(cid("cseq-over-2-to-the-31")).replace(b"CSeq: 1 ", b"CSeq: 2147483648 ")
        + END, bad("malformed CSeq", cid("cseq-over-2-to-the-31"), cseq="2147483648 INVITE"), "bad-request"),
    row("sip-version-3", request(cid("sip-version-3"), version="SIP/3.0") + END,
        response("505 Version Not Supported", cid("sip-version-3")), "bad-version"),
    row("http-uri-scheme", request(cid("http-uri-scheme"), uri="http://evil.example/") + END,
        response("416 Unsupported URI Scheme", cid("http-uri-scheme"), uri="http://evil.example/"),
        "unsupported-scheme"),
    # --- Content-Length lies (RFC 3261 §18.3: on a stream it says where the message ends) --------
    # Shorter than the body: the rest is read as the next message, which is not SIP: closed.
    row("content-length-shorter-than-body", request(cid("content-length-shorter-than-body"),
                                                    body=b"v=0\r\nGARBAGE\r\n\r\n", length=b"5"),
        response("302 Moved Temporarily", cid("content-length-shorter-than-body"), extra=CONTACT), "redirect"),
    row("content-length-over-limit", request(cid("content-length-over-limit"), length=b"%d" % (SIP_MAX_MESSAGE + 1)),
        response("513 Message Too Large", cid("content-length-over-limit")), "too-large"),
    row("content-length-negative", request(cid("content-length-negative"), length=b"-1"),
        bad("malformed Content-Length", cid("content-length-negative")), "bad-request"),
    row("content-length-11-digits", request(cid("content-length-11-digits"), length=b"99999999999"),
        bad("malformed Content-Length", cid("content-length-11-digits")), "bad-request"),
    row("two-different-content-lengths", request(cid("two-different-content-lengths"), extra=b"l: 7\r\n"),
        bad("malformed Content-Length", cid("two-different-content-lengths")), "bad-request"),
    # --- not a request at all: closed (or ignored) without an answer ------------------------------
    row("header-block-over-limit", b"INVITE sip:4001@cas.example.com SIP/2.0\r\nX-Pad: " + b"a" * SIP_MAX_MESSAGE,
        b"", None),
    row("http-request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"", None),
    row("binary-garbage", bytes(range(1, 256)) + b"\r\n\r\n", b"", None),
    row("response-instead-of-request", b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 192.0.2.1\r\nContent-Length: 0\r\n\r\n"
        + END, b"", None),
    row("broken-ack-is-never-answered", request(cid("broken-ack"), method="ACK", drop=("Call-ID",)) + END, b"", None),
]


@pytest.fixture(scope="module")
def outcomes(lab_env):
    results = run_table(CASES, {"plain": lab_env.sip_port}, lab_env, greeting=False)
    # A sentinel request logged after every row's: once it is in the log, so is everything before.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.sendto(request(cid("sentinel"), method="OPTIONS", uri="sip:cas.example.com",
                        via=f"SIP/2.0/UDP 127.0.0.1:{sock.getsockname()[1]}"), ("127.0.0.1", lab_env.sip_port))
    sock.close()
    wait_until(lambda: f"call_id={cid('sentinel')} " in lab_env.log(), what="the sentinel in the log")
    yield results
    lab_alive(lab_env)


@pytest.mark.parametrize("case", params(CASES))
def test_sip_tcp(lab_env, outcomes, case):
    outcome = outcomes[case.id]
    check_transcript(case, outcome, normalise)
    requests = [line for line in lines_for(lab_env.log(), outcome.client) if "sip request" in line]
    decision = DECISIONS[case.id]
    if decision is None:
        assert requests == []
    else:
        assert len(requests) == 1 and f" decision={decision} " in requests[0], requests
        if decision != "redirect":
            assert " user=- " in requests[0], requests  # refused before any directory lookup
    lab_alive(lab_env)


# --- UDP: one datagram per row ------------------------------------------------------------------


class Phone(UdpPhone):
    """A UDP socket. `exchange` sends one datagram, then two probes: an OPTIONS (answered at
    once) and an INVITE for an unknown extension (answered after a directory lookup, like any
    INVITE). Everything else that comes back until both probes are answered (and at least `want`
    answers have come) is the row's."""

    def exchange(self, datagram: bytes, want: int = 0, timeout: float = 5.0) -> list[bytes]:
        self.sock.sendto(datagram, self.target)
        probes = {f"probe-{uuid.uuid4().hex}": ("OPTIONS", "sip:cas.example.com"),
                  f"probe-{uuid.uuid4().hex}": ("INVITE", "sip:4999@cas.example.com")}
        for call_id, (method, uri) in probes.items():
            self.sock.sendto(request(call_id, method=method, uri=uri, via=self.via), self.target)
        pending, answers = set(probes), []
        deadline = time.monotonic() + timeout
        while pending or len(answers) < want:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data, _ = self.sock.recvfrom(65535)  # a timeout fails the row: probes are always answered
            probe = next((p for p in probes if f"\r\nCall-ID: {p}\r\n".encode() in data), None)
            if probe:
                pending.discard(probe)
            else:
                answers.append(normalise(data))
        return answers


def sized(call_id: str, via: str, size: int) -> bytes:
    """An INVITE whose body makes the datagram exactly `size` bytes."""
    base = len(request(call_id, via=via))
    for pad in range(max(0, size - base - 6), size - base + 1):
        datagram = request(call_id, via=via, body=b"a" * pad)
        if len(datagram) == size:
            return datagram
    raise AssertionError(f"no padding makes {size} bytes")


UDP = [
    # id                                build(via) -> datagram                          answers (via -> bytes)
    ("control-invite", lambda via: request(cid("u-control"), via=via),
     lambda via: [response("302 Moved Temporarily", cid("u-control"), via=via, extra=CONTACT)]),
    ("exactly-at-size-limit", lambda via: sized(cid("u-limit"), via, SIP_MAX_MESSAGE),
     lambda via: [response("302 Moved Temporarily", cid("u-limit"), via=via, extra=CONTACT)]),
    ("one-byte-over-size-limit", lambda via: sized(cid("u-over"), via, SIP_MAX_MESSAGE + 1), lambda via: []),
    ("datagram-of-60k", lambda via: request(cid("u-60k"), via=via, body=b"a" * 60000), lambda via: []),
    ("nul-in-header", lambda via: request(cid("u-nul"), via=via, extra=b"Subject: a\x00b\r\n"),
     lambda via: [bad("malformed header line", cid("u-nul"), via=via)]),
    ("body-shorter-than-content-length", lambda via: request(cid("u-short"), via=via, body=b"v=0\r\n", length=b"50"),
     lambda via: [bad("body shorter than Content-Length", cid("u-short"), via=via)]),
    ("137-header-fields", lambda via: request(cid("u-many"), via=via, extra=HEADERS_130),
     lambda via: [bad("too many header fields", cid("u-many"), via=via)]),
    ("missing-from", lambda via: request(cid("u-from"), via=via, drop=("From",)),
     lambda via: [bad("missing From", cid("u-from"), via=via, omit=("From",))]),
    ("garbage", lambda via: bytes(range(256)), lambda via: []),
    ("invalid-utf8-start-line", lambda via: b"INVITE sip:\xff\xfe@x SIP/2.0\r\n\r\n", lambda via: []),
    ("line-endings-only", lambda via: b"\r\n\r\n", lambda via: []),
    ("response-instead-of-request", lambda via: b"SIP/2.0 486 Busy Here\r\nVia: " + via.encode()
     + b"\r\nContent-Length: 0\r\n\r\n", lambda via: []),
    ("broken-ack", lambda via: request(cid("u-ack"), method="ACK", via=via, drop=("Call-ID", "CSeq")),
     lambda via: []),
]
# Datagrams over the size limit go to a node of their own: the lab node logs its drops at counts
# 1, 2, 4, 8, … only, and test_sip.py expects its own first drop to be logged.
DROPPED = {"one-byte-over-size-limit", "datagram-of-60k"}


@pytest.fixture(scope="module")
def sip_node(lab_env):
    sip, admin = lab.free_port(), lab.free_port()
    node = start_node(lab_env, "adv-sip", [{"protocol": "sip", "address": f"127.0.0.1:{sip}"}],
                      {"admin": {"address": f"127.0.0.1:{admin}"}})
    yield {"node": node, "sip": sip, "admin": admin}
    assert_alive(node.log_since_start, node.process)
    node.stop()


@pytest.mark.parametrize("row, build, answers", UDP, ids=[u[0] for u in UDP])
def test_sip_udp(lab_env, sip_node, row, build, answers):
    phone = Phone(sip_node["sip"] if row in DROPPED else lab_env.sip_port)
    try:
        expected = answers(phone.via)
        assert phone.exchange(build(phone.via), want=len(expected)) == expected
    finally:
        phone.close()
    lab_alive(lab_env)


def test_oversized_datagrams_are_counted(sip_node):
    """Dropped datagrams are counted (`mailfront_sip_dropped_datagrams_total`), one per datagram,
    and logged (at counts 1, 2, 4, …)."""
    node = sip_node["node"]
    before = admin_metrics(sip_node["admin"], "mailfront_sip_dropped_datagrams_total")
    phone = Phone(sip_node["sip"])
    try:
        for i in range(3):
            datagram = request(f"drop-{i}-{MARK}", via=phone.via, body=b"a" * (SIP_MAX_MESSAGE + 100))
            assert phone.exchange(datagram) == []
    finally:
        phone.close()
    assert admin_metrics(sip_node["admin"], "mailfront_sip_dropped_datagrams_total") == before + 3
    assert f"client=127.0.0.1:{phone.port} " in "".join(
        line for line in node.log_since_start().splitlines(keepends=True)
        if "sip datagram dropped: larger than sip.max_message_size" in line)
    assert_alive(node.log_since_start, node.process)
