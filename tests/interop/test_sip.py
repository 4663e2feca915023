"""SIP through mailfront: a real user agent (SIPp, Debian's `sip-tester`) and raw RFC 3261 requests
over UDP, TCP and TLS. Telephony is redirected (302) to the voice-mail endpoint of the server that
hosts the active copy of the user's database; mailfront keeps no SIP state.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
import uuid
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest

from conftest import SIP_MAX_MESSAGE, SIP_RETRY_AFTER, SIP_URIS, UdpPhone, client_tls, lab

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
MBX1_ALICE = SIP_URIS["mbx1"].replace("{extension}", "4001")
MBX2_ALICE = SIP_URIS["mbx2"].replace("{extension}", "4001")

# A UAC that sends an INVITE with an SDP offer, expects a 302 whose Contact matches `expected`
# (SIPp fails the call otherwise), and sends the ACK for it (RFC 3261 §17.1.1.3: same branch as
# the INVITE, the To of the response).
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="mailfront 302">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[ruri_host] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[ruri_host]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: mailfront interop
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="302">
    <action>
      <ereg regexp=%(expected)s search_in="hdr" header="Contact:" check_it="true" assign_to="contact"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:[service]@[ruri_host] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <!-- SIPp refuses a variable that is assigned and never used. -->
  <Reference variables="contact"/>
</scenario>
"""


@pytest.fixture(scope="module")
def sipp():
    lab.ensure_installed("sipp")
    return lab.COMMANDS["sipp"]


def run_sipp(sipp: str, lab_env, work: Path, transport: str, service: str, ruri_host: str, expected: str) -> str:
    """Runs the scenario once in `work` (a new folder: SIPp writes its traces to the current
    folder); returns SIPp's message trace. Fails unless SIPp says the call passed."""
    work.mkdir()
    scenario = work / "uac302.xml"
    scenario.write_text(SCENARIO % {"expected": quoteattr(re.escape(f"<{expected}>"))})
    local_port = lab.free_port()
    done = subprocess.run(
        [sipp, f"127.0.0.1:{lab_env.sip_port}", "-sf", str(scenario), "-m", "1", "-i", "127.0.0.1",
         "-p", str(local_port), "-t", transport, "-s", service, "-key", "ruri_host", ruri_host,
         "-trace_msg", "-trace_err", "-nostdin", "-timeout", "15s", "-timeout_error", "-recv_timeout", "5s"],
        cwd=work, capture_output=True, text=True, timeout=60,
    )
    trace = "".join(p.read_text(errors="replace") for p in work.glob("*_messages.log"))
    errors = "".join(p.read_text(errors="replace") for p in work.glob("*_errors.log"))
    assert done.returncode == 0, f"sipp exited {done.returncode}\n{done.stdout[-2000:]}{done.stderr}\n{errors}\n{trace}"
    return trace


def last_log_line(lab_env, call_id: str) -> str:
    match = lab_env.wait_for_log(rf"[^\n]*sip request[^\n]*call_id={re.escape(call_id)}[^\n]*")
    return match.group(0)


# --- SIPp: a real user agent ------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_sipp_invite_is_redirected_and_follows_a_switchover(sipp, lab_env, tmp_path, transport):
    trace = run_sipp(sipp, lab_env, tmp_path / "extension", transport, "4001", "cas.example.com", MBX1_ALICE)
    assert "SIP/2.0 302 Moved Temporarily" in trace
    assert f"Contact: <{MBX1_ALICE}>" in trace
    # By address (and by alias): the Request-URI's host is the mail domain.
    run_sipp(sipp, lab_env, tmp_path / "address", transport, "alice", "example.com", MBX1_ALICE)
    try:
        lab_env.set_active("DB01", "mbx2")
        run_sipp(sipp, lab_env, tmp_path / "moved", transport, "4001", "cas.example.com", MBX2_ALICE)
    finally:
        lab_env.set_active("DB01", "mbx1")
    run_sipp(sipp, lab_env, tmp_path / "back", transport, "alice.smith", "example.com", MBX1_ALICE)
    line = lab_env.wait_for_log(r"[^\n]*sip request[^\n]*method=INVITE[^\n]*server=mbx2[^\n]*").group(0)
    assert "user=alice@example.com" in line and "status=302" in line and "decision=redirect" in line, line
    assert "v=0" not in lab_env.log(), "a message body reached the log"


# --- raw RFC 3261 requests --------------------------------------------------------------------------

def sip_request(method: str, uri: str, via: str, call_id: str, *, to: str | None = None, drop: str = "",
                body: str = "") -> bytes:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via};branch=z9hG4bK-{call_id};rport",
        "Max-Forwards: 70",
        "From: <sip:tester@example.net>;tag=t1",
        f"To: {to or f'<{uri}>'}",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        f"Content-Length: {len(body.encode())}",
    ]
    lines = [line for line in lines if not (drop and line.startswith(drop))]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


class Phone(UdpPhone):
    """A UDP socket that speaks SIP to mailfront, one request and its answer at a time."""

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def receive(self, timeout: float = 5.0) -> str | None:
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(65535)
        except socket.timeout:
            return None
        return data.decode()

    def ask(self, method: str, uri: str, **kwargs) -> tuple[str, str]:
        call_id = f"{uuid.uuid4()}@test"
        self.send(sip_request(method, uri, self.via, call_id, **kwargs))
        response = self.receive()
        assert response is not None, f"no answer to {method} {uri}"
        return response, call_id


@pytest.fixture
def phone(lab_env):
    p = Phone(lab_env.sip_port)
    yield p
    p.close()


def expected(phone: Phone, status: str, uri: str, call_id: str, method: str = "INVITE", extra: str = "") -> str:
    """The exact response mailfront sends to `sip_request(method, uri, phone.via, call_id)`,
    with its To tag as TAG."""
    return (
        f"SIP/2.0 {status}\r\n"
        f"Via: {phone.via};branch=z9hG4bK-{call_id};rport={phone.port};received=127.0.0.1\r\n"
        "From: <sip:tester@example.net>;tag=t1\r\n"
        f"To: <{uri}>;tag=TAG\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )


def tagless(response: str) -> str:
    """The response with its To tag (16 hex digits, stateless) replaced by TAG."""
    replaced, count = re.subn(r"(\r\nTo: [^\r]*;tag=)[0-9a-f]{16}\r\n", r"\1TAG\r\n", response)
    assert count == 1, response
    return replaced


def test_invite_by_extension_and_address(lab_env, phone):
    uri = "sip:4001@cas.example.com"
    response, call_id = phone.ask("INVITE", uri)
    assert tagless(response) == expected(phone, "302 Moved Temporarily", uri, call_id,
                                         extra=f"Contact: <{MBX1_ALICE}>\r\n")
    line = last_log_line(lab_env, call_id)
    for field in ("method=INVITE", "user=alice@example.com", "status=302", "decision=redirect", "server=mbx1",
                  "transport=udp", "listener=sip"):
        assert field in line, line
    response, _ = phone.ask("INVITE", "sip:alice.smith@example.com")
    assert f"\r\nContact: <{MBX1_ALICE}>\r\n" in response
    # tel: URIs from gateways name extensions too.
    response, _ = phone.ask("INVITE", "tel:4001")
    assert f"\r\nContact: <{MBX1_ALICE}>\r\n" in response


def test_a_retransmission_gets_the_same_tag(phone):
    call_id = f"{uuid.uuid4()}@test"
    request = sip_request("INVITE", "sip:4001@cas.example.com", phone.via, call_id)
    phone.send(request)
    first = phone.receive()
    phone.send(request)
    second = phone.receive()
    assert first == second and first is not None


def test_unknown_user_is_404(lab_env, phone):
    uri = "sip:4999@cas.example.com"
    response, call_id = phone.ask("INVITE", uri)
    assert tagless(response) == expected(phone, "404 Not Found", uri, call_id)
    uri = "sip:nobody@example.com"
    response, call_id = phone.ask("INVITE", uri)
    assert tagless(response) == expected(phone, "404 Not Found", uri, call_id)


def test_user_without_sip_is_404_like_an_unknown_one(lab_env, phone):
    # dave may use POP3 only: the same 404 as for nobody, so a caller cannot tell a mailbox exists.
    uri = "sip:dave@example.com"
    response, call_id = phone.ask("INVITE", uri)
    assert tagless(response) == expected(phone, "404 Not Found", uri, call_id)
    line = last_log_line(lab_env, call_id)
    assert "user=dave@example.com" in line and "sip is not enabled" in line, line


def test_no_voice_mail_on_the_active_server_is_503(phone):
    # carol's database is on a server without a SIP endpoint: try later (or elsewhere).
    uri = "sip:carol@example.com"
    response, call_id = phone.ask("INVITE", uri)
    assert tagless(response) == expected(phone, "503 Service Unavailable", uri, call_id,
                                         extra=f"Retry-After: {SIP_RETRY_AFTER}\r\n")


def test_malformed_request_is_400_with_the_reason(phone):
    uri = "sip:4001@cas.example.com"
    response, call_id = phone.ask("INVITE", uri, drop="Call-ID")
    assert response == (
        "SIP/2.0 400 Bad Request (missing Call-ID)\r\n"
        f"Via: {phone.via};branch=z9hG4bK-{call_id};rport={phone.port};received=127.0.0.1\r\n"
        "From: <sip:tester@example.net>;tag=t1\r\n"
        f"To: <{uri}>;tag={tagless_tag(response)}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    response, _ = phone.ask("INVITE", uri, body="v=0\r\n")
    assert response.startswith("SIP/2.0 302 ")  # a body is fine, and ignored
    bad_cseq = sip_request("INVITE", uri, phone.via, "c-1").replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
    phone.send(bad_cseq)
    assert phone.receive().startswith("SIP/2.0 400 Bad Request (CSeq method does not match)\r\n")
    version = sip_request("INVITE", uri, phone.via, "c-2").replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1)
    phone.send(version)
    assert phone.receive().startswith("SIP/2.0 505 Version Not Supported\r\n")


def tagless_tag(response: str) -> str:
    match = re.search(r"\r\nTo: [^\r]*;tag=([0-9a-f]{16})\r\n", response)
    assert match, response
    return match.group(1)


def test_options_is_200_with_allow(phone):
    uri = "sip:cas.example.com"
    response, call_id = phone.ask("OPTIONS", uri)
    assert tagless(response) == expected(phone, "200 OK", uri, call_id, "OPTIONS",
                                         extra=f"Allow: {ALLOW}\r\nAccept: application/sdp\r\n")


def test_register_is_405_with_allow(phone):
    uri = "sip:example.com"
    response, call_id = phone.ask("REGISTER", uri)
    assert tagless(response) == expected(phone, "405 Method Not Allowed", uri, call_id, "REGISTER",
                                         extra=f"Allow: {ALLOW}\r\n")


def test_ack_is_absorbed_and_cancel_finds_no_transaction(phone):
    uri = "sip:4001@cas.example.com"
    phone.send(sip_request("ACK", uri, phone.via, "ack-1", to=f"<{uri}>;tag=abc"))
    response, call_id = phone.ask("CANCEL", uri)
    # The first answer is the CANCEL's: the ACK got none.
    assert tagless(response) == expected(phone, "481 Call/Transaction Does Not Exist", uri, call_id, "CANCEL")


def test_oversized_datagram_is_dropped_and_counted(lab_env, phone):
    body = "a=x\r\n" * (SIP_MAX_MESSAGE // 5 + 10)
    call_id = f"{uuid.uuid4()}@big"
    phone.send(sip_request("INVITE", "sip:4001@cas.example.com", phone.via, call_id, body=body))
    assert phone.receive(timeout=1.0) is None
    line = lab_env.wait_for_log(rf"[^\n]*sip datagram dropped[^\n]*client=127\.0\.0\.1:{phone.port}[^\n]*").group(0)
    assert re.search(r"dropped_total=\d+", line) and f"limit={SIP_MAX_MESSAGE}" in line, line
    # Just under the limit is answered.
    small = "a=x\r\n" * ((SIP_MAX_MESSAGE - 600) // 5)
    response, _ = phone.ask("INVITE", "sip:4001@cas.example.com", body=small)
    assert response.startswith("SIP/2.0 302 ")


def read_responses(sock, count: int, timeout: float = 5.0) -> list[str]:
    sock.settimeout(timeout)
    data = b""
    while data.count(b"\r\n\r\n") < count:
        chunk = sock.recv(65535)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return [r + "\r\n\r\n" for r in data.decode().split("\r\n\r\n") if r]


def test_tcp_pipelined_requests_get_two_responses(lab_env):
    with socket.create_connection(("127.0.0.1", lab_env.sip_port), timeout=5) as sock:
        via = f"SIP/2.0/TCP 127.0.0.1:{sock.getsockname()[1]}"
        both = (sip_request("OPTIONS", "sip:cas.example.com", via, "tcp-1")
                + sip_request("INVITE", "sip:4001@cas.example.com", via, "tcp-2", body="v=0\r\n"))
        sock.sendall(both)
        first, second = read_responses(sock, 2)
        assert first.startswith("SIP/2.0 200 OK\r\n") and "\r\nCall-ID: tcp-1\r\n" in first, first
        assert second.startswith("SIP/2.0 302 Moved Temporarily\r\n"), second
        assert f"\r\nContact: <{MBX1_ALICE}>\r\n" in second and "\r\nCall-ID: tcp-2\r\n" in second
        # Split in the middle of the header fields: still one response.
        request = sip_request("INVITE", "sip:4999@cas.example.com", via, "tcp-3")
        sock.sendall(request[:37])
        time.sleep(0.1)
        sock.sendall(request[37:])
        (third,) = read_responses(sock, 1)
        assert third.startswith("SIP/2.0 404 Not Found\r\n") and "tcp-3" in third


def test_tls_listener(lab_env):
    raw = socket.create_connection(("127.0.0.1", lab_env.sips_port), timeout=5)
    with client_tls().wrap_socket(raw) as sock:
        via = f"SIP/2.0/TLS 127.0.0.1:{sock.getsockname()[1]}"
        sock.sendall(sip_request("INVITE", "sips:alice@example.com", via, "tls-1"))
        (response,) = read_responses(sock, 1)
        assert response.startswith("SIP/2.0 302 Moved Temporarily\r\n"), response
        assert f"\r\nContact: <{MBX1_ALICE}>\r\n" in response
    # No UDP on a TLS listener.
    p = Phone(lab_env.sips_port)
    try:
        p.send(sip_request("OPTIONS", "sip:cas.example.com", p.via, "tls-udp"))
        assert p.receive(timeout=0.5) is None
    finally:
        p.close()


def test_failover_moves_the_redirect(lab_env, phone):
    response, _ = phone.ask("INVITE", "sip:4001@cas.example.com")
    assert f"\r\nContact: <{MBX1_ALICE}>\r\n" in response
    try:
        lab_env.set_active("DB01", "mbx2")
        response, _ = phone.ask("INVITE", "sip:4001@cas.example.com")
        assert f"\r\nContact: <{MBX2_ALICE}>\r\n" in response
    finally:
        lab_env.set_active("DB01", "mbx1")
    response, _ = phone.ask("INVITE", "sip:4001@cas.example.com")
    assert f"\r\nContact: <{MBX1_ALICE}>\r\n" in response

