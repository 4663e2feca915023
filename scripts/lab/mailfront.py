"""mailfront in the lab: the binary, a node's process, and its files. The configuration, the users
file and the location map are Python dicts written as TOML with tomli-w (`write_toml`), never
text put together by hand, and read back with tomllib (`read_toml`)."""

from __future__ import annotations

import os
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from .base import ROOT, atomic_write
from .dovecot import MASTER_USER, Ports
from .processes import Child
from .users import User, app_password_ldap_value


def _toml_ready(value: Any) -> Any:
    """`value` with every Path a string (tomli-w writes only TOML's own types)."""
    if isinstance(value, dict):
        return {k: _toml_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_toml_ready(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def write_toml(path: Path, data: dict, atomic: bool = False) -> Path:
    """Writes `data` as a TOML file (a new file renamed over the old if `atomic`, as an operator's
    editor should; in place otherwise). The one way the lab writes mailfront's files."""
    text = "# written by scripts/lab\n" + tomli_w.dumps(_toml_ready(data))
    if atomic:
        atomic_write(path, text)
    else:
        path.write_text(text)
    return path


def read_toml(path: Path) -> dict:
    return tomllib.loads(Path(path).read_text())


# --- The binary -------------------------------------------------------------------------------


def mailfront_binary(profile: str | None = None) -> Path:
    """The mailfront binary of the given cargo profile (`debug` or `release`): in
    $CARGO_TARGET_DIR (relative to the checkout, as cargo run there takes it) or target/."""
    profile = profile or os.environ.get("MAILFRONT_PROFILE", "debug")
    return ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / profile / "mailfront"


def build_mailfront(profile: str | None = None) -> Path:
    """Builds mailfront (unless MAILFRONT_NO_BUILD is set) and returns the binary's path."""
    profile = profile or os.environ.get("MAILFRONT_PROFILE", "debug")
    if os.environ.get("MAILFRONT_NO_BUILD"):
        return mailfront_binary(profile)
    args = ["cargo", "build", "--quiet", "-p", "mailfront"]
    if profile == "release":
        args.append("--release")
    subprocess.run(args, cwd=ROOT, check=True)
    return mailfront_binary(profile)


def hash_for(binary: Path, password: str, scheme: str = "SHA512-CRYPT") -> str:
    out = subprocess.run([str(binary), "hash-password", "--scheme", scheme], input=password + "\n",
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@dataclass
class NewAppPassword:
    """What `mailfront app-password` printed: the password, its users-file entry (a dict) and its
    LDAP value."""

    password: str
    entry: dict
    ldap_value: str


def new_app_password(binary: Path, name: str, protocols: list[str], scheme: str = "SSHA512") -> NewAppPassword:
    """A new app password made by `mailfront app-password` (SSHA512 by default: the lab checks
    behaviour, not the hash's cost). Checks that its three lines agree."""
    out = subprocess.run([str(binary), "app-password", "--name", name, "--protocols", ",".join(protocols),
                          "--scheme", scheme], capture_output=True, text=True, check=True)
    password, toml_line, ldap_value = out.stdout.splitlines()
    entry = tomllib.loads(f"entry = {toml_line}")["entry"]
    if app_password_ldap_value(entry) != ldap_value:
        raise AssertionError(f"users-file entry {entry!r} and LDAP value {ldap_value!r} disagree")
    return NewAppPassword(password, entry, ldap_value)


def write_cookie_keys(binary: Path, path: Path, key_id: int = 1) -> Path:
    """A new HTTP cookie key file with one key, as `mailfront cookie-key` writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(subprocess.run([str(binary), "cookie-key", "--id", str(key_id)], capture_output=True,
                                   text=True, check=True).stdout)
    path.chmod(0o600)
    return path


# --- The node's files -------------------------------------------------------------------------


def write_users(path: Path, users: list[User], binary: Path | None = None) -> None:
    """The embedded directory file for `users`: passwords hashed with mailfront itself, or kept
    as {PLAIN} without a `binary` (the benchmark's: the front door measured, not a hash)."""
    entries = []
    for i, u in enumerate(users):
        entry = {
            "address": u.address,
            "password": hash_for(binary, u.password) if binary else "{PLAIN}" + u.password,
            "mailbox_guid": u.guid or f"00000000-0000-4000-8000-{i + 1:012d}",
            "database": u.database,
            "version": u.version,
        }
        if u.aliases:
            entry["aliases"] = u.aliases
        if u.protocols is not None:
            entry["protocols"] = u.protocols
        if u.sip_extension:
            entry["sip_extension"] = u.sip_extension
        if u.app_passwords:
            entry["app_passwords"] = u.app_passwords
        if u.password_protocols is not None:
            entry["password_protocols"] = u.password_protocols
        entries.append(entry)
    write_toml(path, {"user": entries}, atomic=True)


def write_locations(path: Path, active: dict[str, str]) -> None:
    write_toml(path, {"active": dict(sorted(active.items()))}, atomic=True)


def read_locations(path: Path) -> dict[str, str]:
    return dict(read_toml(path).get("active", {}))


@dataclass
class ServerEntry:
    """A mailbox server as mailfront's configuration describes it."""

    name: str
    ports: Ports
    tls: str = "none"  # towards the backend: none | starttls | implicit
    method: str = "master"  # master | passthrough
    mechanism: str = "plain"  # plain | login
    delivery_group: str = "default"
    http: str | None = None  # base URL of the server's HTTP service (Radicale in the lab)
    sip: str | None = None  # the server's voice-mail SIP URI (the Contact of a redirect)

    def config(self, master_password_file: Path) -> dict:
        """Its `[[server]]` table."""
        tls, ports = self.tls, self.ports
        server: dict[str, Any] = {
            "name": self.name,
            "site": "lab",
            "version": "15.1",
            "host": "localhost" if tls != "none" else "127.0.0.1",  # TLS verifies the name
            "imap": {"port": ports.imaps if tls == "implicit" else ports.imap, "tls": tls},
        }
        if tls != "implicit":  # the lab's Dovecot has no POP3S or submissions port
            server["pop3"] = {"port": ports.pop3, "tls": tls}
            server["submission"] = {"port": ports.submission, "tls": tls}
            server["delivery"] = {"port": ports.lmtp, "protocol": "lmtp"}
        if self.http:
            server["http"] = self.http
        if self.sip:
            server["sip"] = self.sip
        server["delivery_group"] = self.delivery_group
        server["login"] = {"method": self.method, "mechanism": self.mechanism}
        if self.method == "master":
            server["login"] |= {"master_user": MASTER_USER, "master_password_file": master_password_file}
        return server


def listener(name: str | None, protocol: str, port: int, tls: str | None = None, **options: Any) -> dict:
    """A `[[listener]]` table on 127.0.0.1:`port` (`name` None: mailfront names it)."""
    entry: dict[str, Any] = {"name": name} if name else {}
    entry |= {"protocol": protocol, "address": f"127.0.0.1:{port}"}
    if tls:
        entry["tls"] = tls
    return entry | options


# Tests and the demo log in from 127.0.0.1 over and over, wrong passwords included; throttling
# is tested from 127.0.0.2 (see test_operations.py).
LAB_THROTTLE = {"trusted_networks": ["127.0.0.1/32"]}


def node_config(
    *,
    node: str,
    servers: list[ServerEntry],
    users_file: Path,
    locations_file: Path,
    cert: Path,
    key: Path,
    master_password_file: Path,
    listeners: list[dict],
    databases: dict[str, list[str]] | None = None,
    backend_ca: Path | None = None,
    directory: dict | None = None,
    location: dict | None = None,
    throttle: dict | None = None,
    sections: dict | None = None,
) -> dict:
    """A mailfront configuration for a lab topology (one site): the file directory and location
    map unless `directory` or `location` say otherwise, `sections` (timeouts, http, admin, …)
    last."""
    config: dict[str, Any] = {
        "node": {"name": node, "site": "lab", "version": "15.1"},
        "server": [entry.config(master_password_file) for entry in servers],
    }
    if databases:
        config["database"] = [{"name": name, "copies": copies} for name, copies in databases.items()]
    config["directory"] = directory or {"backend": "file", "path": users_file}
    config["location"] = location or {"backend": "file", "path": locations_file}
    config["tls"] = {"certificate": cert, "key": key}
    if backend_ca:
        config["backend_tls"] = {"ca_file": backend_ca}
    config["throttle"] = throttle or dict(LAB_THROTTLE)
    config["listener"] = listeners
    config |= sections or {}
    return config


def http_config(cookie_keys: Path, lifetime: str = "8h") -> dict:
    """The [http] section of the lab's nodes and the demo: the calendar as a browser app (forms
    login, Radicale's web UI), DAV with Basic or bearer, a free/busy-like service routed by an
    anchor mailbox, autodiscover."""
    return {
        "cookie_keys": cookie_keys,
        "session_lifetime": lifetime,
        "identity_header": "X-Remote-User",
        "service": [
            {"name": "calendar", "path": "/calendar/", "auth": ["forms"], "browser_app": True,
             "legacy_url": "https://legacy.example.com/owa/", "prefix_header": "X-Script-Name"},
            {"name": "dav", "path": "/dav/", "auth": ["basic", "bearer"], "prefix_header": "X-Script-Name"},
            {"name": "freebusy", "path": "/freebusy/", "auth": ["basic"], "anchor_query": "mailbox",
             "prefix_header": "X-Script-Name"},
        ],
        "autodiscover": {
            "domains": ["example.com"],
            "display_name": "Example Mail",
            "imap": {"host": "mail.example.com", "port": 993, "socket": "ssl"},
            "pop3": {"host": "mail.example.com", "port": 995, "socket": "ssl"},
            "smtp": {"host": "mail.example.com", "port": 587, "socket": "starttls"},
        },
    }


# --- The process ------------------------------------------------------------------------------


class Mailfront(Child):
    """A mailfront node run from a configuration file, its log captured to a file."""

    def __init__(self, binary: Path, config: Path, log_path: Path):
        super().__init__("mailfront", log_path)
        self.binary = binary
        self.config = config
        self._log_offset = 0

    def check(self) -> None:
        """`mailfront check` on the configuration; raises with its output if it fails."""
        out = subprocess.run([str(self.binary), "check", "--config", str(self.config)], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"mailfront check failed:\n{out.stdout}{out.stderr}")

    def ready(self) -> bool:
        return "mailfront ready" in self.log_since_start()

    def start(self, timeout: float = 20.0) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.spawn([self.binary, "serve", "--config", self.config])
        self.wait_ready(self.ready, timeout)

    def log_since_start(self) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")
