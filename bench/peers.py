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
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchlab import ROOT, fd_hard_limit, lab, raise_fd_limit

import lab.dovecot  # noqa: E402  (scripts/ is on sys.path through benchlab)

DOMAIN = "example.com"
DATABASE = "DB01"
SERVER = "mbx1"
NGINX = lab.COMMANDS["nginx"]
HAPROXY = lab.COMMANDS["haproxy"]
ALL_PEERS = ("direct", "mailfront", "nginx", "dovecot-proxy", "haproxy")



def ensure_installed() -> None:
    """The peers' packages (also in scripts/test's package list)."""
    lab.ensure_installed("dovecot", "openssl", "haproxy", "nginx")


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


def wait_tls_greeting(port: int) -> None:
    lab.wait_for_greeting(port, b"* OK", tls=lab.insecure_tls())


def nginx_temp_paths(directory: Path) -> str:
    """The lines of an nginx `http {}` block that keep its temporary files in `directory`."""
    return "".join(f"    {kind}_temp_path {directory};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def command_version(argv: list[str], pick=lambda text: text.splitlines()[0]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return pick((out.stdout + out.stderr).strip())
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "unknown"


# ---------------------------------------------------------------------------------------------
# The mailbox server


class Backend(lab.Dovecot):
    """The one Dovecot mailbox server every peer talks to (the lab's, with TLS), tuned for
    load the same way for everyone: high-performance login processes, imap processes that serve
    many sessions each (a process per session would make every login a fork and cap the
    sessions at the process limit), info logging off. Its own sections merge with the lab's."""

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

    server: lab.Child
    argv: list[str]
    check_flags: list[str] = []

    def start(self) -> None:
        check = subprocess.run(self.argv + self.check_flags, capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(self.check_flags)} failed: {check.stdout}{check.stderr}")
        self.server.spawn(self.argv)
        lab.wait_for_greeting(self.imap, b"* OK")
        wait_tls_greeting(self.imaps)
        self.server.check_alive()

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


class QuietMailfront(lab.Mailfront):
    """A node with `log.level = warn`, which hides "mailfront ready": ready when it greets on
    its IMAP port."""

    def __init__(self, binary: Path, config: Path, log_path: Path, imap: int):
        super().__init__(binary, config, log_path)
        self.imap = imap

    def ready(self) -> bool | str:
        try:
            lab.wait_for_greeting(self.imap, b"* OK", timeout=0.5)
            return True
        except TimeoutError as e:
            return str(e)


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
        lab.write_users(users_file, users)  # {PLAIN} passwords
        locations = self.dir / "locations.toml"
        lab.write_locations(locations, {DATABASE: SERVER})
        cookie_keys = lab.write_cookie_keys(binary, self.dir / "cookie-keys.toml")
        server = lab.ServerEntry(SERVER, backend.ports, method=login_method, http=web.url)
        self.config = lab.write_toml(self.dir / "mailfront.toml", lab.node_config(
            node="bench",
            servers=[server],
            users_file=users_file,
            locations_file=locations,
            cert=cert,
            key=key,
            master_password_file=root / "secrets" / "master.pw",
            listeners=[
                lab.listener(None, "imap", self.imap, "none", allow_plaintext_auth=True),
                lab.listener(None, "imap", self.imaps, "implicit"),
                lab.listener(None, "smtp", self.smtp),
                lab.listener(None, "https", self.https.port, "implicit"),
            ],
            throttle={"trusted_networks": ["127.0.0.0/8"]},
            sections={
                "log": {"level": "warn"},
                "limits": {"max_connections_per_client": 1000000, "max_connections": 1000000},
                "timeouts": {"shutdown_grace": "1s"},
                "admin": {"address": f"127.0.0.1:{self.admin}"},
                "transport": {"accepted_domains": [DOMAIN]},
                "http": {
                    "cookie_keys": cookie_keys,
                    "identity_header": "X-Remote-User",
                    "service": [{"name": "static", "path": "/static/", "backend_path": "/", "auth": ["basic"]}],
                },
            },
        ))
        self.node = QuietMailfront(binary, self.config, self.dir / "mailfront.log", self.imap)
        self.description = (f"target/release/mailfront: mail sessions on one single-threaded worker per core "
                            f"(2), accepting and HTTPS on tokio's multi-threaded runtime; users file with {{PLAIN}} passwords; backend login `{login_method}`"
                            + (" (the user's own password, like every other proxy here)" if login_method == "passthrough"
                               else " (master user)")
                            + "; listeners: IMAP plain, IMAP implicit TLS, inbound SMTP (LMTP to the mailbox "
                            "server), HTTPS (service /static/, auth basic, to the static web server); "
                            "log.level = warn; limits.max_connections and max_connections_per_client lifted.")

    def start(self) -> None:
        self.node.check()
        self.node.start()
        wait_tls_greeting(self.imaps)

    def stop(self) -> None:
        self.node.stop()

    def root_pid(self) -> int:
        assert self.node.pid is not None
        return self.node.pid

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
{nginx_temp_paths(self.dir / "tmp")}    map_hash_max_size 262144;
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
        self.server = lab.Child(self.name, self.dir / "stdio.log")
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
        uid, gid, _ = lab.mail_owner()
        b = self.backend.ports
        (d / "users").write_text("".join(
            f"{u.address}:{{PLAIN}}{u.password}::::::proxy=y host=127.0.0.1 port={b.imap}\n" for u in self.users))
        assert self.tls is not None
        (d / "dovecot.conf").write_text(
            "# written by bench/peers.py: Dovecot as an IMAP proxy\n"
            + self.common_settings("imap", ssl=True)
            + f"""info_log_path = /dev/null
default_client_limit = 100000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home/%u
}}
"""
            + lab.dovecot.service("imap-login", "service_count = 0", "process_min_avail = 2", "process_limit = 2",
                              f"client_limit = {max(100, per_process_session_ceiling() - 100)}", "vsz_limit = 4G",
                              chroot=False, listeners=lab.dovecot.inet_listener("imap", self.ports.imap)
                              + lab.dovecot.inet_listener("imaps", self.ports.imaps, ssl=True))
            + lab.dovecot.service("anvil", chroot=False)
            + lab.dovecot.service("ipc", chroot=False)
        )


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
        self.server = lab.Child(self.name, self.dir / "haproxy.log")
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
{nginx_temp_paths(self.dir / "tmp")}    keepalive_requests 1000000;
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
        self.server = lab.Child("the static web server", self.dir / "stdio.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}/"

    def start(self) -> None:
        self.server.spawn(self.argv)
        self.server.wait_ready(lambda: lab.http_ok(f"{self.url}index.html"), interval=0.05)

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
        client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=lab.insecure_tls(), timeout=15)
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
    with urllib.request.urlopen(request, timeout=15, context=lab.insecure_tls() if tls else None) as response:
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
