"""The interop lab for the tests: two real Dovecot mailbox servers and one mailfront node.

One lab per test session (starting Dovecot costs ~0.1 s, mailfront ~0.05 s; configuring them is
the slow part). Tests that change shared state (stop a backend, move a database) put it back.
"""

from __future__ import annotations

import copy
import imaplib
import re
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import lab  # noqa: E402

AUTH_FAILURE_DELAY = 1.0
BACKEND_LOGIN_TIMEOUT = 2.0
PRE_AUTH_IDLE = 3.0
DELIVERY_TIMEOUT = 3.0
# The voice-mail endpoints of the mailbox servers: the Contact of SIP redirects (nothing needs to
# listen there). `{extension}` becomes the user's extension.
SIP_URIS = {"mbx1": "sip:{extension}@mbx1.example.com:5070", "mbx2": "sip:{extension}@mbx2.example.com:5080"}
SIP_MAX_MESSAGE = 4096
SIP_RETRY_AFTER = 7

ACTIVE = {
    "DB01": "mbx1",
    "DB02": "mbx2",
    "DB03": "silent",
    "DB04": "mbx3",
    "DB05": "mbx3s",
    "DB06": "mbx1-login",
    "DB07": "mbx1-passthrough",
    "DB08": "mbx1-passthrough-login",
}

USERS = [
    lab.User("alice@example.com", "DB01", aliases=["alice.smith@example.com"], sip_extension="4001"),
    lab.User("bob@example.com", "DB02"),
    # Lives on a server that accepts connections and never says a word.
    lab.User("carol@example.com", "DB03"),
    # May not use IMAP.
    lab.User("dave@example.com", "DB01", protocols=["pop3"]),
    # On a server that mailfront reaches over TLS: STARTTLS, and implicit TLS.
    lab.User("erin@example.com", "DB04"),
    lab.User("frank@example.com", "DB05"),
    # On mbx1 through the other backend login methods.
    lab.User("grace@example.com", "DB06"),
    lab.User("heidi@example.com", "DB07"),
    lab.User("ivan@example.com", "DB08", password="pässwörd with spaces"),
    # Their mailbox is full: Dovecot's LMTP refuses them at the end of DATA.
    lab.User("full@example.com", "DB01", quota_kb=1),
    # A mailbox of an older version: browser apps redirect it to the legacy URL.
    lab.User("oldtimer@example.com", "DB01", version="14.3"),
]


class SilentServer:
    """Accepts TCP connections and never answers: a hung backend."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)


@dataclass
class Lab:
    root: Path
    binary: Path
    config: Path
    settings: dict  # the configuration `config` was written from (node_settings copies it)
    locations: Path
    servers: dict[str, lab.Dovecot]
    mailfront: lab.Mailfront
    plain_port: int  # no TLS, plaintext auth allowed
    starttls_port: int  # STARTTLS offered, plaintext auth refused
    implicit_port: int  # IMAPS
    pop3_plain_port: int
    pop3_starttls_port: int
    pop3_implicit_port: int
    submission_port: int  # no TLS, plaintext auth allowed
    submission_starttls_port: int
    submissions_port: int
    smtp_port: int  # inbound (front-end transport), STARTTLS offered
    outbound_port: int
    relay: lab.SmtpSink  # the outbound relay host
    https_port: int
    radicales: dict  # server name -> lab.Radicale
    cookie_keys: Path  # the HTTP key file (shared by every node of a test)
    sip_port: int = 0  # SIP over UDP and TCP
    sips_port: int = 0  # SIP over TLS
    admin_port: int = 0  # the admin API (plain HTTP on loopback, no token)

    def log(self) -> str:
        return self.mailfront.log_since_start()

    def session_lines(self, user: str) -> list[dict[str, str]]:
        """Parsed `session proxied` lines for `user`."""
        out = []
        for line in self.log().splitlines():
            if "session proxied" in line and f"user={user}" in line:
                out.append(dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", line.split("session proxied", 1)[1])))
        return out

    def wait_for_log(self, pattern: str, timeout: float = 10.0, after: int = 0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.compile(pattern).search(self.log(), after)
            if match:
                return match
            time.sleep(0.02)
        raise AssertionError(f"log never matched {pattern!r}:\n{self.log()[-3000:]}")

    def imap(self, port: int | None = None) -> imaplib.IMAP4:
        return imaplib.IMAP4("127.0.0.1", port or self.plain_port, timeout=15)

    def imaps(self) -> imaplib.IMAP4_SSL:
        return imaplib.IMAP4_SSL("127.0.0.1", self.implicit_port, ssl_context=client_tls(), timeout=15)

    def set_active(self, database: str, server: str) -> None:
        # Only a log line written after this change counts (an earlier move to the same server
        # would otherwise match at once).
        after = len(self.log())
        active = lab.read_locations(self.locations)
        active[database] = server
        lab.write_locations(self.locations, active)
        self.wait_for_log(rf"active copy moved database={database} from=\S+ to={server}", after=after)


class SourcedIMAP(imaplib.IMAP4):
    """imaplib, connecting from a chosen loopback address (127.0.0.0/8 is all ours): a client
    other than 127.0.0.1, which the lab trusts for throttling and HAProxy uses."""

    def __init__(self, port: int, source: str):
        self._source = source
        super().__init__("127.0.0.1", port, timeout=30)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture(scope="session")
def lab_env(tmp_path_factory) -> Lab:
    lab.ensure_installed("dovecot", "openssl")
    binary = lab.mailfront_binary()
    assert binary.exists(), f"{binary} is missing: build mailfront first (scripts/test does)"
    root = lab.reset_dir(lab.lab_root("interop"))
    pop3_plain, pop3_starttls, pop3_implicit = lab.free_port(), lab.free_port(), lab.free_port()
    outbound = lab.free_port()
    ports = {name: lab.Ports(*(lab.free_port() for _ in range(5))) for name in ("mbx1", "mbx2", "mbx3")}
    backend_tls = lab.make_ca_signed(root / "backend-tls")
    servers = {
        name: lab.Dovecot(root, name, p, USERS, tls=backend_tls if name == "mbx3" else None, relay_port=outbound)
        for name, p in ports.items()
    }
    silent = SilentServer()
    cert, key = lab.make_certificate(root / "tls")
    master_pw = lab.master_password(root)
    assert master_pw
    lab.write_users(root / "users.toml", USERS, binary)
    locations = root / "locations.toml"
    lab.write_locations(locations, ACTIVE)
    plain, starttls, implicit = lab.free_port(), lab.free_port(), lab.free_port()
    submission, submission_starttls, submissions = lab.free_port(), lab.free_port(), lab.free_port()
    smtp = lab.free_port()
    relay = lab.SmtpSink()
    https = lab.free_port()
    sip, sips = lab.free_port(), lab.free_port()
    admin = lab.free_port()
    radicales = {name: lab.Radicale(root, name, lab.free_port(), root / "dav") for name in ("mbx1", "mbx2")}
    cookie_keys = lab.write_cookie_keys(binary, root / "http" / "keys.toml")
    settings = lab.node_config(
        node="test1",
        servers=[
            lab.ServerEntry("mbx1", ports["mbx1"], http=radicales["mbx1"].url, sip=SIP_URIS["mbx1"]),
            lab.ServerEntry("mbx2", ports["mbx2"], http=radicales["mbx2"].url, sip=SIP_URIS["mbx2"]),
            # Its own delivery group: mail for carol has nowhere else to go.
            lab.ServerEntry("silent", lab.Ports(silent.port, silent.port, silent.port, silent.port),
                            delivery_group="quarantine"),
            lab.ServerEntry("mbx3", ports["mbx3"], tls="starttls"),
            lab.ServerEntry("mbx3s", ports["mbx3"], tls="implicit"),
            # mbx1 again, logged in to differently.
            lab.ServerEntry("mbx1-login", ports["mbx1"], mechanism="login"),
            lab.ServerEntry("mbx1-passthrough", ports["mbx1"], method="passthrough"),
            lab.ServerEntry("mbx1-passthrough-login", ports["mbx1"], method="passthrough", mechanism="login"),
        ],
        backend_ca=backend_tls.ca,
        users_file=root / "users.toml",
        locations_file=locations,
        cert=cert,
        key=key,
        master_password_file=root / "secrets" / "master.pw",
        databases={"DB01": ["mbx1", "mbx2"], "DB02": ["mbx1", "mbx2"], "DB03": ["silent"]},
        listeners=[
            lab.listener("plain", "imap", plain, "none", allow_plaintext_auth=True),
            lab.listener("starttls", "imap", starttls, "starttls"),
            lab.listener("imaps", "imap", implicit, "implicit"),
            lab.listener("pop3", "pop3", pop3_plain, "none", allow_plaintext_auth=True),
            lab.listener("pop3-starttls", "pop3", pop3_starttls, "starttls"),
            lab.listener("pop3s", "pop3", pop3_implicit, "implicit"),
            lab.listener("submission", "submission", submission, "none", allow_plaintext_auth=True),
            lab.listener("submission-starttls", "submission", submission_starttls, "starttls"),
            lab.listener("submissions", "submission", submissions, "implicit"),
            lab.listener("smtp", "smtp", smtp, "starttls"),
            lab.listener("outbound", "outbound", outbound, "none"),
            lab.listener("https", "https", https, "implicit"),
            lab.listener("sip", "sip", sip),
            lab.listener("sips", "sip", sips, "implicit"),
        ],
        sections={
            "timeouts": {
                "auth_failure_delay": f"{int(AUTH_FAILURE_DELAY * 1000)}ms",
                "backend_login": f"{int(BACKEND_LOGIN_TIMEOUT * 1000)}ms",
                "delivery": f"{int(DELIVERY_TIMEOUT * 1000)}ms",
                "pre_auth_idle": f"{int(PRE_AUTH_IDLE * 1000)}ms",
                "shutdown_grace": "2s",
            },
            "limits": {"max_line_length": 1024, "max_commands_before_auth": 20},
            "reload": {"interval": "50ms"},
            "transport": {"accepted_domains": ["example.com"], "max_message_size": 200000, "max_recipients": 50},
            "outbound": {"relay": {"host": "127.0.0.1", "port": relay.port}},
            "sip": {"max_message_size": SIP_MAX_MESSAGE, "retry_after": SIP_RETRY_AFTER},
            "http": lab.http_config(cookie_keys),
            "admin": {"address": f"127.0.0.1:{admin}"},
        },
    )
    config = lab.write_toml(root / "mailfront.toml", settings)
    mailfront = lab.Mailfront(binary, config, root / "mailfront.log")
    env = Lab(root, binary, config, settings, locations, servers, mailfront, plain, starttls, implicit,
              pop3_plain, pop3_starttls, pop3_implicit, submission, submission_starttls, submissions,
              smtp, outbound, relay, https, radicales, cookie_keys)
    env.sip_port, env.sips_port = sip, sips
    env.admin_port = admin
    try:
        for server in servers.values():
            server.start()
        for radicale in radicales.values():
            radicale.start()
        mailfront.start()
        yield env
    finally:
        mailfront.stop()
        for server in servers.values():
            server.stop()
        for radicale in radicales.values():
            radicale.stop()
        relay.stop()


def node_settings(lab_env: Lab, name: str, listeners: list[dict], sections: dict | None = None) -> dict:
    """The configuration of another node of the lab's array, as a dict: the lab node's servers,
    directory, locations, certificate and timeouts, with its own `listeners` and the keys of
    `sections` set (`{"timeouts": {"post_auth_idle": "1s"}, "throttle": {...}}`: existing keys
    replaced, new ones added, the section created if missing). No admin listener unless
    `sections` names one."""
    settings = copy.deepcopy(lab_env.settings)
    settings["node"]["name"] = name
    settings["listener"] = listeners
    del settings["admin"]
    for section, values in (sections or {}).items():
        settings.setdefault(section, {}).update(copy.deepcopy(values))
    return settings


def node_config(lab_env: Lab, name: str, listeners: list[dict], sections: dict | None = None) -> Path:
    """`node_settings` written to `<lab>/<name>.toml`; returns the file."""
    return lab.write_toml(lab_env.root / f"{name}.toml", node_settings(lab_env, name, listeners, sections))


def start_node(lab_env: Lab, name: str, listeners: list[dict], sections: dict | None = None) -> lab.Mailfront:
    """Starts a node made by `node_config`; the caller stops it."""
    node = lab.Mailfront(lab_env.binary, node_config(lab_env, name, listeners, sections), lab_env.root / f"{name}.log")
    node.start()
    return node


def https_node(lab_env: Lab, name: str, cookie_keys: Path, lifetime: str = "8h") -> tuple[lab.Mailfront, int]:
    """Another mailfront node of the array: the same servers, directory and locations as the lab's
    node, one HTTPS listener, and its own cookie key file and session lifetime. Returns the
    started node and its port (the caller stops it)."""
    port = lab.free_port()
    node = start_node(lab_env, name, [lab.listener(None, "https", port, "implicit")],
                      {"http": {"cookie_keys": cookie_keys, "session_lifetime": lifetime}})
    return node, port


def wait_until(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.02):
    """Polls `predicate` until it returns something true, and returns that; fails the test if
    `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never happened within {timeout}s")
        time.sleep(interval)


def collect(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends on `sock` within `seconds`, or until it closes."""
    sock.settimeout(0.2)
    out = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        if not chunk:
            break
        out += chunk
    return out


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    """What the server sends on `sock` until `marker` has come (or it closes)."""
    reply = b""
    while marker not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


class UdpPhone:
    """A UDP socket on 127.0.0.1 that speaks SIP to mailfront's `port`; `via` is its Via."""

    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", port)
        self.via = f"SIP/2.0/UDP 127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()


def admin_call(port: int, method: str, path: str, token: str | None = None) -> tuple[int, str]:
    """One request to a node's admin API: (status, body)."""
    import http.client
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()
