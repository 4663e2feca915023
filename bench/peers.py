#!/usr/bin/env python3
"""The peers of the side-by-side benchmark (bench/compare.py), all on 127.0.0.1 in front of one
real Dovecot mailbox server, each on its own ports:

  direct          the Dovecot mailbox server itself (the limit)
  mailfront       target/release/mailfront: plain and implicit-TLS IMAP, inbound SMTP, HTTPS
  nginx           Debian's nginx with its mail module; auth_http answered by nginx's own http{}
  dovecot-proxy   a second Dovecot, a proxy passdb (proxy=y), high-performance login processes
  haproxy         HAProxy in TCP mode (no authentication: the floor cost of a user-space relay)

plus a static web server (a second nginx) as the HTTP backend of the HTTPS scenario.

Fairness: every authenticating peer checks a plaintext password from its own table (mailfront's
users file with {PLAIN}, the proxy Dovecot's passwd-file with {PLAIN}, nginx's map), so the
front door is measured, not a password hash; the same users and the same backend for all; every
peer gets two worker processes or threads; logging is reduced to errors where the peer allows.

    bench/peers.py                 start every peer, check each with imaplib, print the ports
    bench/peers.py --hold          … and keep them running until Ctrl-C (for manual runs)

Scratch files go to $MAILFRONT_LAB_DIR/bench-compare (default /tmp/mailfront-<uid>).
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchlab import ROOT, fd_hard_limit, lab, raise_fd_limit

DOMAIN = "example.com"
DATABASE = "DB01"
SERVER = "mbx1"
NGINX = "/usr/sbin/nginx"
HAPROXY = lab.COMMANDS["haproxy"]
ALL_PEERS = ("direct", "mailfront", "nginx", "dovecot-proxy", "haproxy")

# The packages the peers need beyond scripts/lab.py's kinds (dovecot, openssl, haproxy): the
# command or module file that shows each is there. Also in scripts/test's package list.
BENCH_PACKAGES = {
    "nginx": "/usr/sbin/nginx",
    "libnginx-mod-mail": "/usr/lib/nginx/modules/ngx_mail_module.so",
}


def ensure_installed() -> None:
    lab.ensure_installed("dovecot", "openssl", "haproxy")
    missing = [p for p, path in BENCH_PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    if not lab.IS_ROOT:
        raise SystemExit("missing packages: " + " ".join(missing)
                         + "\ninstall them with: sudo apt-get install --no-install-recommends " + " ".join(missing))
    lab.log("installing " + " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                   check=True, env=env, stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------------
# Users


def bench_users(n: int) -> list[lab.User]:
    """The load generator's users. Passwords are plain [a-z0-9-] so that no peer has to escape
    them (nginx URL-encodes Auth-User and Auth-Pass in its auth_http request)."""
    return [lab.User(f"bench{i:05d}@{DOMAIN}", DATABASE, password=f"bench-pw-{i:05d}") for i in range(n)]


# The owner of the throughput scenario's big message, and the SMTP scenario's recipient: kept out
# of the login users so that their mailboxes (one huge message; thousands of deliveries) do not
# change what SELECT costs for everyone else.
FETCH_USER = lab.User(f"fetch@{DOMAIN}", DATABASE, password="fetch-pw")
SINK_USER = lab.User(f"sink@{DOMAIN}", DATABASE, password="sink-pw")


def write_loadgen_users(path: Path, users: list[lab.User]) -> Path:
    path.write_text("".join(f"{u.address} {u.password}\n" for u in users))
    return path


def per_process_session_ceiling() -> int:
    """How many proxied sessions one process can hold: two descriptors each (client and
    backend) under the hard RLIMIT_NOFILE, which an unprivileged process cannot raise."""
    return (fd_hard_limit() - 200) // 2


# ---------------------------------------------------------------------------------------------
# Processes


def wait_tls_greeting(port: int, prefix: bytes = b"* OK", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no attempt"
    context = insecure_context()
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                with context.wrap_socket(raw) as s:
                    s.settimeout(2)
                    data = s.recv(512)
                    if data.startswith(prefix):
                        return
                    last = f"greeting {data[:60]!r}"
        except (OSError, ssl.SSLError) as e:
            last = str(e)
        time.sleep(0.05)
    raise TimeoutError(f"no TLS greeting {prefix!r} on port {port} within {timeout}s ({last})")


def wait_http(url: str, timeout: float = 20.0, context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                if response.status == 200:
                    return
                last = f"status {response.status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s ({last})")


def insecure_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Foreground:
    """A server run in the foreground as our child (nginx with `daemon off`, haproxy -db), its
    output in a log file."""

    def __init__(self, argv: list[str], log_path: Path):
        self.argv = argv
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                            start_new_session=True)

    def check_alive(self, what: str) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"{what} exited: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        lab.stop_child(self.process)
        self.process = None


def command_version(argv: list[str], pick=lambda text: text.splitlines()[0]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return pick((out.stdout + out.stderr).strip())
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "unknown"


# ---------------------------------------------------------------------------------------------
# The mailbox server


class Backend(lab.Dovecot):
    """The one Dovecot mailbox server every peer talks to (scripts/lab.py's, with TLS), tuned for
    load the same way for everyone: high-performance login processes, imap processes that serve
    many sessions each (a process per session would make every login a fork and cap the
    sessions at the process limit), info logging off. Its own sections merge with lab.py's."""

    def __init__(self, root: Path, users: list[lab.User], tls: lab.Tls, imap_client_limit: int = 50):
        ports = lab.Ports(*(lab.free_port() for _ in range(4)), imaps=lab.free_port())
        super().__init__(root, SERVER, ports, users, tls=tls)
        self.imap_client_limit = imap_client_limit

    def write_config(self) -> None:
        super().write_config()
        login_clients = max(100, per_process_session_ceiling() - 100)
        with open(self.dir / "dovecot.conf", "a") as f:
            f.write(f"""
# bench/peers.py: tuned for load, the same for every peer
info_log_path = /dev/null
service imap-login {{
  service_count = 0
  process_min_avail = 2
  # A TLS session stays in its login process (two descriptors); more processes start when full.
  client_limit = {login_clients}
  process_limit = 100
  vsz_limit = 4G
}}
service imap {{
  service_count = 0
  client_limit = {self.imap_client_limit}
  process_limit = 20000
  vsz_limit = 2G
}}
""")

    def version(self) -> str:
        return "Dovecot " + command_version(["/usr/sbin/dovecot", "--version"])


# ---------------------------------------------------------------------------------------------
# Peers


@dataclass
class Http:
    port: int
    path: str
    tls: bool = True


class Peer:
    """One front door: `imap` and `imaps` ports, optionally `smtp` and `https`."""

    name = ""
    imap = 0
    imaps = 0
    smtp: int | None = None
    https: Http | None = None
    description = ""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def root_pid(self) -> int:
        """The process whose tree is this peer (CPU and memory are summed over it)."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError


class ForegroundPeer(Peer):
    """A peer that is one foreground server process (nginx, HAProxy): its configuration is
    checked with `check_flags`, then it must greet on both IMAP ports."""

    server: Foreground
    check_flags: list[str] = []

    def start(self) -> None:
        check = subprocess.run(self.server.argv + self.check_flags, capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(self.check_flags)} failed: {check.stdout}{check.stderr}")
        self.server.start()
        lab.wait_for_greeting(self.imap, b"* OK")
        wait_tls_greeting(self.imaps)
        self.server.check_alive(self.name)

    def stop(self) -> None:
        self.server.stop()

    def root_pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid


class Direct(Peer):
    name = "direct"

    def __init__(self, backend: Backend, web: "WebBackend"):
        self.backend = backend
        self.imap, self.imaps = backend.ports.imap, backend.ports.imaps
        self.https = Http(web.https, "/index.html")
        self.description = ("The mailbox server itself: Dovecot 2.3 with its {PLAIN} passwd-file, "
                            "high-performance imap-login (service_count = 0, process_min_avail = 2), "
                            f"imap processes serving {backend.imap_client_limit} sessions each, imaps "
                            "for TLS. HTTPS: the static web server's own TLS port.")

    def start(self) -> None:
        pass  # started by Peers

    def stop(self) -> None:
        pass

    def root_pid(self) -> int:
        pid = self.backend.pid()
        assert pid is not None
        return pid

    def version(self) -> str:
        return self.backend.version()


class Mailfront(Peer):
    name = "mailfront"

    def __init__(self, root: Path, binary: Path, backend: Backend, web: "WebBackend", users: list[lab.User],
                 cert: Path, key: Path, login_method: str):
        self.dir = root / "mailfront"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.imap, self.imaps, self.smtp, self.admin = (lab.free_port() for _ in range(4))
        self.https = Http(lab.free_port(), "/static/index.html")
        users_file = self.dir / "users.toml"
        users_file.write_text("\n".join(
            f'[[user]]\naddress = "{u.address}"\npassword = "{{PLAIN}}{u.password}"\n'
            f'mailbox_guid = "00000000-0000-4000-8000-{i + 1:012d}"\ndatabase = "{u.database}"\n'
            f'version = "{u.version}"\n' for i, u in enumerate(users)))
        locations = self.dir / "locations.toml"
        lab.write_locations(locations, {DATABASE: SERVER})
        cookie_keys = self.dir / "cookie-keys.toml"
        cookie_keys.write_text(subprocess.run([str(binary), "cookie-key", "--id", "1"], capture_output=True,
                                              text=True, check=True).stdout)
        cookie_keys.chmod(0o600)
        server = lab.ServerEntry(SERVER, backend.ports, method=login_method, http=web.url)
        self.config = self.dir / "mailfront.toml"
        self.config.write_text(lab.mailfront_config(
            node="bench",
            servers=[server],
            users_file=users_file,
            locations_file=locations,
            cert=cert,
            key=key,
            master_password_file=root / "secrets" / "master.pw",
            listeners=[
                {"protocol": "imap", "address": f"127.0.0.1:{self.imap}", "tls": "none",
                 "allow_plaintext_auth": True},
                {"protocol": "imap", "address": f"127.0.0.1:{self.imaps}", "tls": "implicit"},
                {"protocol": "smtp", "address": f"127.0.0.1:{self.smtp}"},
                {"protocol": "https", "address": f"127.0.0.1:{self.https.port}", "tls": "implicit"},
            ],
            throttle_section='[throttle]\ntrusted_networks = ["127.0.0.0/8"]\n',
            extra=f"""[log]
level = "warn"

[limits]
max_connections_per_client = 1000000
max_connections = 1000000

[timeouts]
shutdown_grace = "1s"

[admin]
address = "127.0.0.1:{self.admin}"

[transport]
accepted_domains = ["{DOMAIN}"]

[http]
cookie_keys = "{cookie_keys}"
identity_header = "X-Remote-User"

[[http.service]]
name = "static"
path = "/static/"
backend_path = "/"
auth = ["basic"]
""",
        ))
        self.log_path = self.dir / "mailfront.log"
        self.process: subprocess.Popen | None = None
        self.description = (f"target/release/mailfront: mail sessions on one single-threaded worker per core "
                            f"(2), accepting and HTTPS on tokio's multi-threaded runtime; users file with {{PLAIN}} passwords; backend login `{login_method}`"
                            + (" (the user's own password, like every other proxy here)" if login_method == "passthrough"
                               else " (master user)")
                            + "; listeners: IMAP plain, IMAP implicit TLS, inbound SMTP (LMTP to the mailbox "
                            "server), HTTPS (service /static/, auth basic, to the static web server); "
                            "log.level = warn; limits.max_connections and max_connections_per_client lifted.")

    def start(self) -> None:
        check = subprocess.run([str(self.binary), "check", "--config", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"mailfront check failed:\n{check.stdout}{check.stderr}")
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen([str(self.binary), "serve", "--config", str(self.config)],
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        # log.level = warn hides "mailfront ready": wait for the greeting instead.
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mailfront exited: {self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                lab.wait_for_greeting(self.imap, b"* OK", timeout=0.5)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        wait_tls_greeting(self.imaps)

    def stop(self) -> None:
        lab.stop_child(self.process)
        self.process = None

    def root_pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def version(self) -> str:
        revision = command_version(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
        return command_version([str(self.binary), "--version"]) + f" ({revision})"


class Nginx(ForegroundPeer):
    """nginx's mail proxy. Its auth_http service is a location in its own http{} block on a unix
    socket: a map of "user:password" to the status, no external process, so nginx is not judged
    by a slow helper. nginx's auth_http protocol ignores the status line and reads the Auth-*
    headers (add_header applies to 204)."""

    name = "nginx"
    check_flags = ["-t", "-q"]

    def __init__(self, root: Path, backend: Backend, users: list[lab.User], cert: Path, key: Path):
        self.dir = root / "nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.imap, self.imaps = lab.free_port(), lab.free_port()
        limit = fd_hard_limit()
        credentials = "".join(f'        "{u.address}:{u.password}" OK;\n' for u in users)
        conf = self.dir / "nginx.conf"
        conf.write_text(f"""# written by bench/peers.py
load_module /usr/lib/nginx/modules/ngx_mail_module.so;
daemon off;
worker_processes 2;
worker_rlimit_nofile {limit};
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log error;
events {{
    worker_connections {limit - 100};
}}
http {{
    access_log off;
    client_body_temp_path {self.dir}/tmp;
    proxy_temp_path {self.dir}/tmp;
    fastcgi_temp_path {self.dir}/tmp;
    uwsgi_temp_path {self.dir}/tmp;
    scgi_temp_path {self.dir}/tmp;
    map_hash_max_size 262144;
    map_hash_bucket_size 128;
    map "$http_auth_user:$http_auth_pass" $mail_auth_status {{
        default "Invalid login or password";
{credentials}    }}
    server {{
        listen unix:{self.dir}/auth.sock;
        location = /auth {{
            add_header Auth-Status $mail_auth_status;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port {backend.ports.imap};
            return 204;
        }}
    }}
}}
mail {{
    server_name mail.{DOMAIN};
    auth_http unix:{self.dir}/auth.sock:/auth;
    proxy_pass_error_message on;
    imap_auth plain login;
    imap_capabilities "IMAP4rev1" "LITERAL+" "SASL-IR" "ID" "ENABLE" "IDLE";
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;  # 1.22's default lacks TLSv1.3; every other peer negotiates it
    server {{
        listen 127.0.0.1:{self.imap};
        protocol imap;
    }}
    server {{
        listen 127.0.0.1:{self.imaps} ssl;
        protocol imap;
    }}
}}
""")
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.argv = [NGINX, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(conf)]
        self.server = Foreground(self.argv, self.dir / "stdio.log")
        self.description = ("Debian's nginx with libnginx-mod-mail: `worker_processes 2`, `worker_rlimit_nofile` "
                            "at the hard limit; `mail { server { listen; protocol imap; } }` plus an `ssl` "
                            "server; auth_http on a unix socket served by nginx's own http{} block (a `map` "
                            "of \"$http_auth_user:$http_auth_pass\" to Auth-Status, Auth-Server/Auth-Port "
                            "headers, `return 204`); nginx logs in to the backend with the user's password; "
                            "error_log at `error`, access_log off.")

    def version(self) -> str:
        return command_version([NGINX, "-v"], lambda t: t.split(":", 1)[-1].strip())


class DovecotProxy(lab.Dovecot):
    """A second Dovecot as an IMAP proxy: a passwd-file passdb with {PLAIN} passwords and the
    proxy fields (proxy=y host port); the password the client gave, checked here, is forwarded
    to the backend (no `pass` field). High-performance login mode: two long-lived imap-login
    processes that each hold many sessions; imaps for TLS."""

    def __init__(self, root: Path, backend: Backend, users: list[lab.User], tls: lab.Tls):
        ports = lab.Ports(imap=lab.free_port(), pop3=0, lmtp=0, submission=0, imaps=lab.free_port())
        super().__init__(root, "dovecot-proxy", ports, users, tls=tls)
        self.backend = backend

    def write_config(self) -> None:
        d = self.dir
        for sub in ("run", "state"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        uid, gid, owner = lab.mail_owner()
        b = self.backend.ports
        (d / "users").write_text("".join(
            f"{u.address}:{{PLAIN}}{u.password}::::::proxy=y host=127.0.0.1 port={b.imap}\n" for u in self.users))
        internal = "dovecot" if lab.IS_ROOT else owner
        login_user = "dovenull" if lab.IS_ROOT else owner
        assert self.tls is not None
        (d / "dovecot.conf").write_text(f"""# written by bench/peers.py: Dovecot as an IMAP proxy
instance_name = dovecot-proxy
base_dir = {d}/run
state_dir = {d}/state
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{self.tls.cert}
ssl_key = <{self.tls.key}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
log_path = {d}/dovecot.log
info_log_path = /dev/null
default_internal_user = {internal}
default_login_user = {login_user}
first_valid_uid = 0
default_client_limit = 100000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home/%u
}}
service imap-login {{
  chroot =
  service_count = 0
  process_min_avail = 2
  process_limit = 2
  client_limit = {max(100, per_process_session_ceiling() - 100)}
  vsz_limit = 4G
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.ports.imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.ports.imaps}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service ipc {{
  chroot =
}}
""")


class DovecotProxyPeer(Peer):
    name = "dovecot-proxy"

    def __init__(self, root: Path, backend: Backend, users: list[lab.User], tls: lab.Tls):
        self.proxy = DovecotProxy(root, backend, users, tls)
        self.imap, self.imaps = self.proxy.ports.imap, self.proxy.ports.imaps
        self.description = ("A second Dovecot 2.3: passwd-file passdb with {PLAIN} passwords and "
                            "`proxy=y host=127.0.0.1 port=<backend>` (the client's password, checked "
                            "here, is forwarded); `service imap-login { service_count = 0; "
                            "process_min_avail = 2; process_limit = 2; client_limit = "
                            f"{max(100, per_process_session_ceiling() - 100)} }}`; imaps listener; "
                            "info_log_path = /dev/null.")

    def start(self) -> None:
        self.proxy.start()
        wait_tls_greeting(self.imaps)

    def stop(self) -> None:
        self.proxy.stop()

    def root_pid(self) -> int:
        pid = self.proxy.pid()
        assert pid is not None
        return pid

    def version(self) -> str:
        return "Dovecot " + command_version(["/usr/sbin/dovecot", "--version"])


class Haproxy(ForegroundPeer):
    name = "haproxy"
    check_flags = ["-c", "-q"]

    def __init__(self, root: Path, backend: Backend, web: "WebBackend", cert: Path, key: Path):
        self.dir = root / "haproxy"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.imap, self.imaps = lab.free_port(), lab.free_port()
        self.https = Http(lab.free_port(), "/index.html")
        pem = self.dir / "cert+key.pem"
        pem.write_text(cert.read_text() + key.read_text())
        pem.chmod(0o600)
        maxconn = per_process_session_ceiling()
        conf = self.dir / "haproxy.cfg"
        conf.write_text(f"""# written by bench/peers.py
global
    nbthread 2
    maxconn {maxconn}

defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend imap
    bind 127.0.0.1:{self.imap}
    default_backend mailbox

frontend imaps
    bind 127.0.0.1:{self.imaps} ssl crt {pem}
    default_backend mailbox

frontend https
    bind 127.0.0.1:{self.https.port} ssl crt {pem}
    default_backend web

backend mailbox
    server {SERVER} 127.0.0.1:{backend.ports.imap}

backend web
    server web 127.0.0.1:{web.http}
""")
        self.argv = [HAPROXY, "-db", "-f", str(conf)]
        self.server = Foreground(self.argv, self.dir / "haproxy.log")
        self.description = ("HAProxy in TCP mode straight to the backend's IMAP port (no authentication: "
                            "the floor cost of a user-space relay), `nbthread 2`, `maxconn` at what the "
                            "descriptor limit allows; TLS terminated on `bind … ssl crt` frontends (IMAP "
                            "and HTTPS, the latter to the static web server's plain HTTP port); no logging.")

    def version(self) -> str:
        return command_version([HAPROXY, "-v"], lambda t: t.splitlines()[0].split(" - ")[0])


class WebBackend:
    """The HTTPS scenario's backend: nginx serving one small static file on plain HTTP (what
    mailfront and HAProxy forward to) and on HTTPS (the direct run)."""

    def __init__(self, root: Path, cert: Path, key: Path, body_size: int = 1024):
        self.dir = root / "web"
        (self.dir / "www").mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        (self.dir / "www" / "index.html").write_bytes((b"mailfront bench\n" * (body_size // 16 + 1))[:body_size])
        self.http, self.https = lab.free_port(), lab.free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(f"""# written by bench/peers.py: the static web server behind the HTTPS scenario
daemon off;
worker_processes 2;
worker_rlimit_nofile {fd_hard_limit()};
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log error;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {self.dir}/tmp;
    proxy_temp_path {self.dir}/tmp;
    fastcgi_temp_path {self.dir}/tmp;
    uwsgi_temp_path {self.dir}/tmp;
    scgi_temp_path {self.dir}/tmp;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{self.http};
        listen 127.0.0.1:{self.https} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {self.dir}/www;
    }}
}}
""")
        self.argv = [NGINX, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(conf)]
        self.server = Foreground(self.argv, self.dir / "stdio.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}/"

    def start(self) -> None:
        self.server.start()
        wait_http(f"{self.url}index.html")
        self.server.check_alive("the static web server")

    def stop(self) -> None:
        self.server.stop()


# ---------------------------------------------------------------------------------------------
# The whole lab


class Peers:
    """The backend, the static web server and the chosen peers, started together."""

    def __init__(self, root: Path, users: list[lab.User], names=ALL_PEERS, login_method: str = "passthrough",
                 binary: Path | None = None, imap_client_limit: int = 50):
        ensure_installed()
        raise_fd_limit()
        self.root = root
        self.users = users
        cert, key = lab.make_certificate(root / "tls")
        key.chmod(0o644)  # nginx's workers and Dovecot's processes read it too
        tls = lab.Tls(ca=cert, cert=cert, key=key)
        lab.master_password(root)
        everyone = users + [FETCH_USER, SINK_USER]
        self.backend = Backend(root, everyone, tls, imap_client_limit=imap_client_limit)
        self.web = WebBackend(root, cert, key)
        self.peers: dict[str, Peer] = {}
        for name in names:
            if name == "direct":
                self.peers[name] = Direct(self.backend, self.web)
            elif name == "mailfront":
                self.peers[name] = Mailfront(root, binary or lab.mailfront_binary("release"), self.backend,
                                             self.web, everyone, cert, key, login_method)
            elif name == "nginx":
                self.peers[name] = Nginx(root, self.backend, everyone, cert, key)
            elif name == "dovecot-proxy":
                self.peers[name] = DovecotProxyPeer(root, self.backend, everyone, tls)
            elif name == "haproxy":
                self.peers[name] = Haproxy(root, self.backend, self.web, cert, key)
            else:
                raise ValueError(f"unknown peer {name!r} (one of {', '.join(ALL_PEERS)})")

    def __enter__(self) -> "Peers":
        try:
            self.backend.start()
            self.web.start()
            for name, peer in self.peers.items():
                try:
                    peer.start()
                except Exception as e:
                    raise RuntimeError(f"peer {name} did not start: {e}") from e
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_exc) -> None:
        for peer in self.peers.values():
            try:
                peer.stop()
            except Exception as e:  # keep stopping the others
                lab.log(f"stopping {peer.name}: {e}")
        self.web.stop()
        self.backend.stop()

    def endpoints(self) -> dict:
        out = {"backend": {"imap": self.backend.ports.imap, "imaps": self.backend.ports.imaps,
                           "lmtp": self.backend.ports.lmtp},
               "web": {"http": self.web.http, "https": self.web.https}}
        for name, p in self.peers.items():
            out[name] = {"imap": p.imap, "imaps": p.imaps, "pid": p.root_pid()}
            if p.smtp:
                out[name]["smtp"] = p.smtp
            if p.https:
                out[name]["https"] = {"port": p.https.port, "path": p.https.path}
        return out

    # -- preparing the mailboxes --------------------------------------------------------------

    def prime(self) -> None:
        """Every user logs in and selects INBOX once, straight at the backend, so that no peer's
        first run pays for creating mail folders and indexes."""
        for u in self.users + [FETCH_USER, SINK_USER]:
            client = imaplib.IMAP4("127.0.0.1", self.backend.ports.imap, timeout=30)
            client.login(u.address, u.password)
            client.select("INBOX")
            client.logout()

    def seed_fetch_message(self, size: int) -> None:
        """Message 1 of the fetch user's INBOX is `size` bytes (the throughput scenario's)."""
        client = imaplib.IMAP4("127.0.0.1", self.backend.ports.imap, timeout=120)
        client.login(FETCH_USER.address, FETCH_USER.password)
        _, data = client.select("INBOX")
        if int(data[0]) > 0:
            _, sizes = client.fetch("1", "(RFC822.SIZE)")
            if f"RFC822.SIZE {size})" in sizes[0].decode() and int(data[0]) == 1:
                client.logout()
                return
            client.store("1:*", "+FLAGS", "\\Deleted")
            client.expunge()
        header = b"From: fetch@example.com\r\nTo: fetch@example.com\r\nSubject: bench fetch\r\n\r\n"
        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n"
        body = (line * ((size - len(header)) // len(line) + 1))[: max(0, size - len(header))]
        client.append("INBOX", None, None, header + body)
        client.logout()


def check_imap(port: int, tls: bool, user: lab.User) -> dict:
    """One LOGIN, SELECT, NOOP, LOGOUT; returns what TLS was negotiated, if any."""
    if tls:
        client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=insecure_context(), timeout=15)
    else:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=15)
    info = {}
    if tls:
        sock = client.socket()
        info = {"tls_version": sock.version(), "cipher": sock.cipher()[0]}
    client.login(user.address, user.password)
    typ, _ = client.select("INBOX")
    assert typ == "OK", typ
    client.noop()
    client.logout()
    return info


def check_https(port: int, path: str, tls: bool, user: lab.User | None) -> None:
    import base64

    scheme = "https" if tls else "http"
    request = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}")
    if user is not None:
        token = base64.b64encode(f"{user.address}:{user.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=15, context=insecure_context() if tls else None) as response:
        if response.status != 200 or not response.read().startswith(b"mailfront bench"):
            raise RuntimeError(f"{scheme} :{port}{path}: status {response.status}")


def check_smtp(port: int, rcpt: str) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.sendmail("bench@example.net", [rcpt], b"Subject: check\r\n\r\nhello\r\n")


def check_all(peers: Peers) -> dict:
    """Every peer, every front door, once, with Python's own clients; raises on the first
    failure. Returns the negotiated TLS per peer."""
    user = peers.users[0]
    tls = {}
    for name, p in peers.peers.items():
        check_imap(p.imap, False, user)
        tls[name] = check_imap(p.imaps, True, user)
        if p.smtp:
            check_smtp(p.smtp, SINK_USER.address)
        if p.https:
            check_https(p.https.port, p.https.path, p.https.tls, user if name == "mailfront" else None)
    return tls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", default=",".join(ALL_PEERS))
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--login-method", choices=["passthrough", "master"], default="passthrough")
    parser.add_argument("--hold", action="store_true", help="keep everything running until Ctrl-C")
    args = parser.parse_args()
    root = lab.reset_dir(lab.lab_root("bench-compare"))
    users = bench_users(args.users)
    binary = lab.build_mailfront("release")
    with Peers(root, users, args.peers.split(","), args.login_method, binary) as peers:
        peers.prime()
        write_loadgen_users(root / "users.txt", users)
        tls = check_all(peers)
        print(json.dumps({"root": str(root), "endpoints": peers.endpoints(), "tls": tls}, indent=2), flush=True)
        if args.hold:
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
