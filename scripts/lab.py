"""The lab: real servers for mailfront's demo and interop tests, started by hand on loopback.

Used by `scripts/demo` and by the interop tests (`tests/interop`). It writes configurations for
Dovecot mailbox servers and for mailfront, starts them as ordinary processes (never through
systemd), waits until each really answers (a greeting, not an open port), and stops them again.
Everything lives under one scratch directory per lab.

Nothing here is needed to run mailfront itself; it is how we get real components for tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IS_ROOT = os.geteuid() == 0

DEMO_PASSWORD = "demo-password-1"
MASTER_USER = "casmaster"

# Packages each kind of component needs (Debian names).
PACKAGES = {
    "dovecot": ["dovecot-core", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd", "dovecot-submissiond"],
    "openssl": ["openssl"],
    "swaks": ["swaks", "libnet-ssleay-perl"],  # swaks needs Net::SSLeay for TLS
    "radicale": ["python3-radicale"],
    "sipp": ["sip-tester"],  # SIPp, a SIP user agent for the SIP interop tests
    "haproxy": ["haproxy"],  # the array tests' load balancer
}
COMMANDS = {
    "dovecot": "/usr/sbin/dovecot",
    "openssl": "/usr/bin/openssl",
    "swaks": "/usr/bin/swaks",
    "radicale": "/usr/lib/python3/dist-packages/radicale/__init__.py",
    "sipp": "/usr/bin/sipp",
    "haproxy": "/usr/sbin/haproxy",
}


def log(message: str) -> None:
    print(f"[lab] {message}", file=sys.stderr, flush=True)


def ensure_installed(*kinds: str) -> None:
    """Installs the Debian packages for the given component kinds if their commands are missing."""
    missing = [p for k in kinds if not Path(COMMANDS[k]).exists() for p in PACKAGES[k]]
    if not missing:
        return
    if not IS_ROOT:
        raise SystemExit(
            "missing packages: " + " ".join(missing) + "\ninstall them with: sudo apt-get install " + " ".join(missing)
        )
    log("installing " + " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


_GIVEN_PORTS: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before by this process (the kernel may offer a just
    released port again, and a lab asks for many before binding any)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def wait_for_greeting(port: int, prefix: bytes, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    """Polls until a server on `port` sends a greeting that starts with `prefix`."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.settimeout(2)
                data = s.recv(512)
                if data.startswith(prefix):
                    return
                last = f"greeting {data[:60]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise TimeoutError(f"nothing on port {port} greeted with {prefix!r} within {timeout}s ({last})")


def mail_owner() -> tuple[int, int, str]:
    """The uid, gid and user name that own mail: `mail` as root (mail must not be owned by
    uid 0), ourselves otherwise."""
    if IS_ROOT:
        import pwd

        entry = pwd.getpwnam("mail")
        return entry.pw_uid, entry.pw_gid, "mail"
    import pwd

    return os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name


@dataclass
class User:
    address: str
    database: str
    password: str = DEMO_PASSWORD
    aliases: list[str] = field(default_factory=list)
    guid: str = ""
    version: str = "15.1"
    protocols: list[str] | None = None
    sip_extension: str | None = None
    quota_kb: int | None = None  # a Dovecot storage quota (to make deliveries fail for real)


@dataclass
class Ports:
    imap: int
    pop3: int
    lmtp: int
    submission: int
    imaps: int = 0


@dataclass
class Tls:
    """A certificate for a server (`cert`, `key`) and the CA that signed it (`ca`)."""

    ca: Path
    cert: Path
    key: Path


class Dovecot:
    """A Dovecot 2.3 mailbox server with a master user, serving mail from a shared database
    folder (`<lab>/db/<database>/<user>`), so that two servers model two copies of a database."""

    def __init__(self, lab: Path, name: str, ports: Ports, users: list[User], tls: Tls | None = None,
                 relay_port: int = 0):
        self.name = name
        self.tls = tls
        # Where Dovecot's submission service relays outgoing mail (mailfront's outbound listener).
        self.relay_port = relay_port
        self.dir = lab / name
        self.db_root = lab / "db"
        self.ports = ports
        self.users = users
        self.process_pid: int | None = None

    def write_config(self) -> None:
        d = self.dir
        for sub in ("run", "state", "home"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.db_root.mkdir(parents=True, exist_ok=True)
        uid, gid, owner = mail_owner()
        if IS_ROOT:
            os.chown(self.db_root, uid, gid)
            os.chown(d / "home", uid, gid)
        (d / "masters").write_text(f"{MASTER_USER}:{{PLAIN}}{master_password(self.dir.parent)}\n")
        lines = []
        for u in self.users:
            mail = f"maildir:{self.db_root}/{u.database}/{u.address}"
            extra = f" userdb_quota_rule=*:storage={u.quota_kb}" if u.quota_kb is not None else ""
            lines.append(
                f"{u.address}:{{PLAIN}}{u.password}:{uid}:{gid}::{d}/home/{u.address}::userdb_mail={mail}{extra}"
            )
        (d / "users").write_text("\n".join(lines) + "\n")
        internal = "dovecot" if IS_ROOT else owner
        login_user = "dovenull" if IS_ROOT else owner
        p = self.ports
        ssl = f"yes\nssl_cert = <{self.tls.cert}\nssl_key = <{self.tls.key}" if self.tls else "no"
        (d / "dovecot.conf").write_text(
            f"""# written by scripts/lab.py
instance_name = {self.name}
base_dir = {d}/run
state_dir = {d}/state
protocols = imap pop3 lmtp submission
listen = 127.0.0.1
hostname = {self.name}.lab
submission_relay_host = 127.0.0.1
submission_relay_port = {self.relay_port or 25}
submission_relay_ssl = no
ssl = {ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = *
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
haproxy_trusted_networks = 127.0.0.0/8
log_path = {d}/dovecot.log
default_internal_user = {internal}
default_login_user = {login_user}
first_valid_uid = 0
mail_plugins = quota
plugin {{
  quota = count:User quota
  quota_vsizes = yes
}}
mail_home = {d}/home/%u
# Room for benchmarks and failover measurements with thousands of sessions per user.
mail_max_userip_connections = 100000
default_client_limit = 100000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/masters
  master = yes
  pass = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
service imap {{
  process_limit = 20000
}}
service pop3 {{
  process_limit = 5000
}}
service imap-login {{
  process_limit = 5000
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {p.imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {p.imaps if self.tls else 0}
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {p.pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service submission-login {{
  chroot =
  inet_listener submission {{
    address = 127.0.0.1
    port = {p.submission}
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {p.lmtp}
  }}
}}
service anvil {{
  chroot =
}}
service ipc {{
  chroot =
}}
"""
        )

    def start(self) -> None:
        self.stop()
        self.write_config()
        log_file = open(self.dir / "stdio.log", "ab")
        # Dovecot daemonises; its output goes to a file, never a pipe (it would keep the pipe open).
        subprocess.run(
            ["/usr/sbin/dovecot", "-c", str(self.dir / "dovecot.conf")],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            check=True,
        )
        log_file.close()
        wait_for_greeting(self.ports.imap, b"* OK")
        self.process_pid = self.pid()

    def pid(self) -> int | None:
        try:
            return int((self.dir / "run" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        stop_pid(pid)

    def log_text(self) -> str:
        try:
            return (self.dir / "dovecot.log").read_text(errors="replace")
        except OSError:
            return ""


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie. A daemon reparented to a PID 1 that does
    not reap leaves a zombie behind, which still answers `kill -0`."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait until gone, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_child(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Stops a child process started by the lab: SIGTERM, then SIGKILL after `timeout`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def children_by_parent() -> dict[int, list[int]]:
    """Every live process's children, by parent id (from /proc/<pid>/stat): one scan, for
    walking several process trees at the same moment."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """`root` and every live descendant of it (`children` from `children_by_parent`, scanned
    now if not given)."""
    if children is None:
        children = children_by_parent()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def master_password(lab: Path) -> str:
    """The master user's password for this lab (random, kept in a file mailfront reads)."""
    path = lab / "secrets" / "master.pw"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(os.urandom(12).hex() + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def make_certificate(directory: Path, name: str = "mail.example.com") -> tuple[Path, Path]:
    """A self-signed certificate and key for `name` (and localhost, 127.0.0.1)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not cert.exists() or not key.exists():
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "3650", "-subj", f"/CN={name}",
                "-addext", f"subjectAltName=DNS:{name},DNS:localhost,IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return cert, key


def make_ca_signed(directory: Path, name: str = "localhost") -> Tls:
    """A private CA and a server certificate it signed for `name` (and 127.0.0.1): what a
    mailbox server with TLS towards mailfront would have."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    cert, key, csr = directory / "server.pem", directory / "server-key.pem", directory / "server.csr"
    run = lambda *args: subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: E731
    if not ca.exists():
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "3650", "-subj", "/CN=mailfront lab CA", "-keyout", str(ca_key), "-out", str(ca))
    if not cert.exists():
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
        ext = directory / "ext.cnf"
        ext.write_text(f"subjectAltName=DNS:{name},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                       "extendedKeyUsage=serverAuth\n")
        run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "3650", "-extfile", str(ext), "-out", str(cert))
        key.chmod(0o644)  # Dovecot reads it as root; keep it simple for the lab
    return Tls(ca=ca, cert=cert, key=key)


def hash_for(binary: Path, password: str, scheme: str = "SHA512-CRYPT") -> str:
    out = subprocess.run(
        [str(binary), "hash-password", "--scheme", scheme],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def write_users(path: Path, users: list[User], binary: Path) -> None:
    """The embedded directory file for `users` (passwords hashed with mailfront itself)."""
    blocks = []
    for i, u in enumerate(users):
        lines = [
            "[[user]]",
            f'address = "{u.address}"',
            f'password = "{hash_for(binary, u.password)}"',
            f'mailbox_guid = "{u.guid or f"00000000-0000-4000-8000-{i + 1:012d}"}"',
            f'database = "{u.database}"',
            f'version = "{u.version}"',
        ]
        if u.aliases:
            lines.append("aliases = [" + ", ".join(f'"{a}"' for a in u.aliases) + "]")
        if u.protocols is not None:
            lines.append("protocols = [" + ", ".join(f'"{p}"' for p in u.protocols) + "]")
        if u.sip_extension:
            lines.append(f'sip_extension = "{u.sip_extension}"')
        blocks.append("\n".join(lines))
    atomic_write(path, "\n\n".join(blocks) + "\n")


def write_locations(path: Path, active: dict[str, str]) -> None:
    body = "[active]\n" + "".join(f'{db} = "{server}"\n' for db, server in sorted(active.items()))
    atomic_write(path, body)


def read_locations(path: Path) -> dict[str, str]:
    import tomllib

    return dict(tomllib.loads(path.read_text()).get("active", {}))


def atomic_write(path: Path, text: str) -> None:
    """Writes a file the way an operator's editor should: a new file renamed over the old."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def mailfront_binary(profile: str | None = None) -> Path:
    """The mailfront binary of the given cargo profile (`debug` or `release`)."""
    profile = profile or os.environ.get("MAILFRONT_PROFILE", "debug")
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / profile / "mailfront"


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


class Mailfront:
    """A mailfront node run from a configuration file, its log captured to a file."""

    def __init__(self, binary: Path, config: Path, log_path: Path):
        self.binary = binary
        self.config = config
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> None:
        log_file = open(self.log_path, "ab")
        self._log_offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "mailfront ready" in self.log_since_start():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"mailfront exited with {self.process.returncode}:\n{self.log_since_start()}")
            time.sleep(0.02)
        raise TimeoutError("mailfront did not become ready:\n" + self.log_since_start())

    def log_since_start(self) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(getattr(self, "_log_offset", 0))
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        stop_child(self.process)


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


# Tests and the demo log in from 127.0.0.1 over and over, wrong passwords included; throttling
# is tested from 127.0.0.2 (see test_operations.py).
LAB_THROTTLE = '[throttle]\ntrusted_networks = ["127.0.0.1/32"]\n'


def mailfront_config(
    *,
    node: str,
    servers: list[ServerEntry],
    users_file: Path,
    locations_file: Path,
    cert: Path,
    key: Path,
    master_password_file: Path,
    listeners: list[dict],
    extra: str = "",
    databases: dict[str, list[str]] | None = None,
    backend_ca: Path | None = None,
    directory_section: str | None = None,
    location_section: str | None = None,
    throttle_section: str = LAB_THROTTLE,
) -> str:
    """A mailfront configuration for a lab topology (one site)."""
    out = [
        "# written by scripts/lab.py",
        "[node]",
        f'name = "{node}"',
        'site = "lab"',
        'version = "15.1"',
        "",
    ]
    for entry in servers:
        port = entry.ports.imaps if entry.tls == "implicit" else entry.ports.imap
        host = "localhost" if entry.tls != "none" else "127.0.0.1"  # TLS verifies the name
        out += [
            "[[server]]",
            f'name = "{entry.name}"',
            'site = "lab"',
            'version = "15.1"',
            f'host = "{host}"',
            f'imap = {{ port = {port}, tls = "{entry.tls}" }}',
        ]
        if entry.tls != "implicit":  # the lab's Dovecot has no POP3S or submissions port
            out.append(f'pop3 = {{ port = {entry.ports.pop3}, tls = "{entry.tls}" }}')
            out.append(f'submission = {{ port = {entry.ports.submission}, tls = "{entry.tls}" }}')
            out.append(f'delivery = {{ port = {entry.ports.lmtp}, protocol = "lmtp" }}')
        if entry.http:
            out.append(f'http = "{entry.http}"')
        if entry.sip:
            out.append(f"sip = {toml_value(entry.sip)}")
        out += [
            f'delivery_group = "{entry.delivery_group}"',
            "[server.login]",
            f'method = "{entry.method}"',
            f'mechanism = "{entry.mechanism}"',
        ]
        if entry.method == "master":
            out += [f'master_user = "{MASTER_USER}"', f'master_password_file = "{master_password_file}"']
        out.append("")
    for database, copies in (databases or {}).items():
        out += ["[[database]]", f'name = "{database}"', "copies = [" + ", ".join(f'"{c}"' for c in copies) + "]", ""]
    out += [
        directory_section or f'[directory]\nbackend = "file"\npath = "{users_file}"\n',
        location_section or f'[location]\nbackend = "file"\npath = "{locations_file}"\n',
        "[tls]",
        f'certificate = "{cert}"',
        f'key = "{key}"',
        "",
    ]
    if backend_ca:
        out += ["[backend_tls]", f'ca_file = "{backend_ca}"', ""]
    out += [throttle_section, ""]
    for listener in listeners:
        out.append("[[listener]]")
        for k, v in listener.items():
            out.append(f"{k} = {toml_value(v)}")
        out.append("")
    out.append(extra)
    return "\n".join(out) + "\n"


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def reset_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def lab_root(name: str) -> Path:
    """Scratch space for a lab, outside the checkout: the `mail` user (as root) must be able to
    reach its mail folders, which a checkout in a private home directory may not allow."""
    base = Path(os.environ.get("MAILFRONT_LAB_DIR", f"/tmp/mailfront-{os.getuid()}"))
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    base.chmod(0o755)
    return path


def http_section(cookie_keys: Path, lifetime: str = "8h") -> str:
    """The [http] section of the lab's nodes and the demo: the calendar as a browser app (forms
    login, Radicale's web UI), DAV with Basic or bearer, a free/busy-like service routed by an
    anchor mailbox, autodiscover."""
    return f"""
[http]
cookie_keys = "{cookie_keys}"
session_lifetime = "{lifetime}"
identity_header = "X-Remote-User"

[[http.service]]
name = "calendar"
path = "/calendar/"
auth = ["forms"]
browser_app = true
legacy_url = "https://legacy.example.com/owa/"
prefix_header = "X-Script-Name"

[[http.service]]
name = "dav"
path = "/dav/"
auth = ["basic", "bearer"]
prefix_header = "X-Script-Name"

[[http.service]]
name = "freebusy"
path = "/freebusy/"
auth = ["basic"]
anchor_query = "mailbox"
prefix_header = "X-Script-Name"

[http.autodiscover]
domains = ["example.com"]
display_name = "Example Mail"
imap = {{ host = "mail.example.com", port = 993, socket = "ssl" }}
pop3 = {{ host = "mail.example.com", port = 995, socket = "ssl" }}
smtp = {{ host = "mail.example.com", port = 587, socket = "starttls" }}
"""


class Radicale:
    """Radicale 3 (CalDAV/CardDAV and a web UI) as a mailbox server's HTTP service. It trusts
    `X-Remote-User` from whoever reaches its loopback port — which must only be mailfront, which
    always replaces a client's own copy. `storage` is shared between servers, like the mail
    folders, so a calendar follows its database copy."""

    def __init__(self, root: Path, name: str, port: int, storage: Path):
        self.dir = root / f"radicale-{name}"
        self.port = port
        self.storage = storage
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 20.0) -> None:
        import urllib.request

        self.dir.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(parents=True, exist_ok=True)
        config = self.dir / "config"
        config.write_text(
            f"[server]\nhosts = 127.0.0.1:{self.port}\n[auth]\ntype = http_x_remote_user\n"
            f"[rights]\ntype = owner_only\n[storage]\nfilesystem_folder = {self.storage}\n"
            f"[web]\ntype = internal\n[logging]\nlevel = info\n"
        )
        with open(self.dir / "radicale.log", "ab") as out:
            # Debian's module is for Debian's python3, which may not be the first on PATH.
            self.process = subprocess.Popen(
                ["/usr/bin/python3", "-m", "radicale", "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}.web/", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"radicale exited: {self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"radicale did not answer on {self.url}")
            time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return (self.dir / "radicale.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        stop_child(self.process)
        self.process = None


class SmtpSink:
    """A minimal SMTP server that keeps what it receives: the outbound relay host in tests.

    `data_reply` is what it answers to the end of DATA (a test sets it to a refusal to check
    that mailfront passes the relay's verdict through). Thread-based; one per test session.
    """

    def __init__(self):
        import socketserver
        import threading

        self.messages: list[dict] = []
        self.data_reply = b"250 2.0.0 queued\r\n"
        self.peers: list[str] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                sink.peers.append(self.client_address[0])
                w = self.wfile.write
                w(b"220 sink.lab ESMTP\r\n")
                mail_from, rcpts = None, []
                while True:
                    line = self.rfile.readline(4096)
                    if not line:
                        return
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        w(b"250-sink.lab\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n")
                    elif verb == b"MAIL":
                        # The path only; parameters (SIZE=, BODY=) are not kept.
                        path = line.split(b":", 1)[1].strip().decode()
                        mail_from, rcpts = path.split(">", 1)[0] + ">", []
                        w(b"250 2.1.0 ok\r\n")
                    elif verb == b"RCPT":
                        rcpts.append(line.split(b":", 1)[1].strip().decode())
                        w(b"250 2.1.5 ok\r\n")
                    elif verb == b"DATA":
                        w(b"354 go\r\n")
                        data = b""
                        while True:
                            chunk = self.rfile.readline(1 << 20)
                            if not chunk or chunk == b".\r\n":
                                break
                            data += chunk
                        reply = sink.data_reply
                        if reply.startswith(b"2"):
                            sink.messages.append({"from": mail_from, "to": rcpts, "data": data})
                        w(reply)
                    elif verb == b"QUIT":
                        w(b"221 bye\r\n")
                        return
                    else:
                        w(b"250 ok\r\n")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.messages):
                if predicate(message):
                    return message
            time.sleep(0.05)
        raise AssertionError(f"the relay never received the message; it has {len(self.messages)}")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
