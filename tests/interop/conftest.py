"""The interop lab for the tests: two real Dovecot mailbox servers and one mailfront node.

One lab per test session (starting Dovecot costs ~0.1 s, mailfront ~0.05 s; configuring them is
the slow part). Tests that change shared state (stop a backend, move a database) put it back.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
import subprocess
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
    cookie_keys = root / "http" / "keys.toml"
    cookie_keys.parent.mkdir(parents=True, exist_ok=True)
    cookie_keys.write_text(subprocess.run([str(binary), "cookie-key", "--id", "1"], capture_output=True, text=True,
                                          check=True).stdout)
    config = root / "mailfront.toml"
    text = lab.mailfront_config(
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
            {"name": "plain", "protocol": "imap", "address": f"127.0.0.1:{plain}", "tls": "none",
             "allow_plaintext_auth": True},
            {"name": "starttls", "protocol": "imap", "address": f"127.0.0.1:{starttls}", "tls": "starttls"},
            {"name": "imaps", "protocol": "imap", "address": f"127.0.0.1:{implicit}", "tls": "implicit"},
            {"name": "pop3", "protocol": "pop3", "address": f"127.0.0.1:{pop3_plain}", "tls": "none",
             "allow_plaintext_auth": True},
            {"name": "pop3-starttls", "protocol": "pop3", "address": f"127.0.0.1:{pop3_starttls}",
             "tls": "starttls"},
            {"name": "pop3s", "protocol": "pop3", "address": f"127.0.0.1:{pop3_implicit}", "tls": "implicit"},
            {"name": "submission", "protocol": "submission", "address": f"127.0.0.1:{submission}", "tls": "none",
             "allow_plaintext_auth": True},
            {"name": "submission-starttls", "protocol": "submission", "address": f"127.0.0.1:{submission_starttls}",
             "tls": "starttls"},
            {"name": "submissions", "protocol": "submission", "address": f"127.0.0.1:{submissions}",
             "tls": "implicit"},
            {"name": "smtp", "protocol": "smtp", "address": f"127.0.0.1:{smtp}", "tls": "starttls"},
            {"name": "outbound", "protocol": "outbound", "address": f"127.0.0.1:{outbound}", "tls": "none"},
            {"name": "https", "protocol": "https", "address": f"127.0.0.1:{https}", "tls": "implicit"},
            {"name": "sip", "protocol": "sip", "address": f"127.0.0.1:{sip}"},
            {"name": "sips", "protocol": "sip", "address": f"127.0.0.1:{sips}", "tls": "implicit"},
        ],
        extra=(
            "[timeouts]\n"
            f'auth_failure_delay = "{int(AUTH_FAILURE_DELAY * 1000)}ms"\n'
            f'backend_login = "{int(BACKEND_LOGIN_TIMEOUT * 1000)}ms"\n'
            f'delivery = "{int(DELIVERY_TIMEOUT * 1000)}ms"\n'
            f'pre_auth_idle = "{int(PRE_AUTH_IDLE * 1000)}ms"\n'
            'shutdown_grace = "2s"\n'
            "[limits]\nmax_line_length = 1024\nmax_commands_before_auth = 20\n"
            "[reload]\ninterval = \"50ms\"\n"
            "[transport]\naccepted_domains = [\"example.com\"]\nmax_message_size = 200000\nmax_recipients = 50\n"
            f"[outbound]\nrelay = {{ host = \"127.0.0.1\", port = {relay.port} }}\n"
            f"[sip]\nmax_message_size = {SIP_MAX_MESSAGE}\nretry_after = {SIP_RETRY_AFTER}\n"
            + lab.http_section(cookie_keys)
            + f'[admin]\naddress = "127.0.0.1:{admin}"\n'
        ),
    )
    config.write_text(text)
    mailfront = lab.Mailfront(binary, config, root / "mailfront.log")
    env = Lab(root, binary, config, locations, servers, mailfront, plain, starttls, implicit,
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


def https_node(lab_env: Lab, name: str, cookie_keys: Path, lifetime: str = "8h", extra: str = "") -> tuple[lab.Mailfront, int]:
    """Another mailfront node of the array: the same servers, directory and locations as the lab's
    node, one HTTPS listener, and its own cookie key file and session lifetime. Returns the
    started node and its port (the caller stops it)."""
    text = lab_env.config.read_text()
    port = lab.free_port()
    head = text[: text.index("[[listener]]")]
    rest = text[text.index("[timeouts]"): text.index("\n[http]")]
    config = lab_env.root / f"{name}.toml"
    config.write_text(
        head.replace('name = "test1"', f'name = "{name}"', 1)
        + f'[[listener]]\nprotocol = "https"\naddress = "127.0.0.1:{port}"\ntls = "implicit"\n\n'
        + rest + lab.http_section(cookie_keys, lifetime) + extra
    )
    node = lab.Mailfront(lab_env.binary, config, lab_env.root / f"{name}.log")
    node.start()
    return node, port


def set_keys(text: str, section: str, values: dict) -> str:
    """`text` (a TOML configuration) with `values` set in `[section]`: existing keys replaced,
    new ones added, the section created if missing."""
    header = f"[{section}]\n"
    if header not in text:
        return text + "\n" + header + "".join(f"{k} = {lab.toml_value(v)}\n" for k, v in values.items())
    start = text.index(header) + len(header)
    end = text.find("\n[", start)
    end = len(text) if end < 0 else end + 1
    lines = text[start:end].splitlines(keepends=True)
    for key, value in values.items():
        line = f"{key} = {lab.toml_value(value)}\n"
        for i, existing in enumerate(lines):
            if existing.split("=", 1)[0].strip() == key:
                lines[i] = line
                break
        else:
            lines.insert(0, line)
    return text[:start] + "".join(lines) + text[end:]


def node_config(lab_env: Lab, name: str, listeners: list[dict], sections: dict | None = None,
                extra: str = "") -> Path:
    """The configuration of another node of the lab's array: the lab node's servers, directory,
    locations, certificate and timeouts, with its own `listeners`, keys of `sections` set
    (`{"timeouts": {"post_auth_idle": "1s"}, "throttle": {...}}`) and `extra` appended. No admin
    listener unless `sections` names one. Returns the written file."""
    text = lab_env.config.read_text()
    head = text[: text.index("[[listener]]")].replace('name = "test1"', f'name = "{name}"', 1)
    rest = text[text.index("[timeouts]"): text.index("\n[admin]")]
    out = head + "".join(
        "[[listener]]\n" + "".join(f"{k} = {lab.toml_value(v)}\n" for k, v in listener.items()) + "\n"
        for listener in listeners
    ) + rest + "\n"
    for section, values in (sections or {}).items():
        out = set_keys(out, section, values)
    config = lab_env.root / f"{name}.toml"
    config.write_text(out + extra)
    return config


def start_node(lab_env: Lab, name: str, listeners: list[dict], sections: dict | None = None,
               extra: str = "") -> lab.Mailfront:
    """Starts a node made by `node_config`; the caller stops it."""
    config = node_config(lab_env, name, listeners, sections, extra)
    node = lab.Mailfront(lab_env.binary, config, lab_env.root / f"{name}.log")
    node.start()
    return node


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
