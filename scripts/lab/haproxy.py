"""The lab's load balancer: one real HAProxy (Debian's `haproxy`, 2.6) in front of mailfront
nodes, in TCP mode, for the array tests.

    haproxy = HAProxy(Path("/tmp/lab/haproxy"), [
        Service("imap", port=21143, servers=[
            Server("n1", port=31143, check_port=39090),     # traffic to 31143, GET /health on 39090
            Server("n2", port=32143, check_port=39091),
        ]),
        Service("https", port=21443, check_path="/calendar/healthcheck.htm", check_ssl=True,
                servers=[Server("n1", port=31443), Server("n2", port=32443)]),
    ])
    haproxy.start()                       # returns once every frontend is OPEN on the stats socket
    haproxy.wait_for_status("imap", "n2", "DOWN")
    print(haproxy.server_status())        # {("imap", "n1"): "UP", ("imap", "n2"): "DOWN", …}
    haproxy.stop()

It runs `haproxy -db -f <root>/haproxy.cfg` by hand (never through systemd) as a child process,
with its log (`log stdout`) in `<root>/haproxy.log` and its stats socket at `<root>/stats.sock`.
Every server gets the PROXY protocol (`send-proxy-v2` by default) and an HTTP health check
(`option httpchk`): `GET check_path` on the server's `check_port` (the node's admin listener,
plain HTTP, no PROXY header) or, without a `check_port`, on the traffic port itself (then the
check sends a PROXY header too — a v2 LOCAL one — and speaks TLS with `check_ssl`).
"""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .base import log
from .packages import COMMANDS, ensure_installed
from .processes import Child, alive, free_port

HAPROXY = COMMANDS["haproxy"]


@dataclass
class Server:
    """One backend server of a service: a mailfront node's listener."""

    name: str
    port: int
    host: str = "127.0.0.1"
    # Where the health check goes (the node's admin listener); None: the traffic port itself.
    check_port: int | None = None


@dataclass
class Service:
    """A TCP frontend on `port` and its backend of `servers`."""

    name: str
    port: int
    servers: list[Server] = field(default_factory=list)
    bind_host: str = "127.0.0.1"
    send_proxy: str | None = "v2"  # "v1", "v2" or None (no PROXY header)
    balance: str = "roundrobin"
    check_path: str | None = "/health"  # None: a plain TCP connect check
    check_ssl: bool = False  # the check speaks TLS (an HTTPS health page on the traffic port)


class HAProxy(Child):
    """One HAProxy in the foreground (`-db`): `services` as TCP frontends and backends, health
    checks every `inter`, a server DOWN after `fall` failed checks and UP after `rise` good
    ones. A connection refused by a server is retried on another one (`option redispatch`)."""

    def __init__(self, root: Path, services: list[Service], inter: str = "200ms", fall: int = 2,
                 rise: int = 2, timeout_client: str = "5m", timeout_server: str = "5m"):
        self.root = Path(root)
        super().__init__("haproxy", self.root / "haproxy.log")
        self.services = services
        self.inter = inter
        self.fall = fall
        self.rise = rise
        self.timeout_client = timeout_client
        self.timeout_server = timeout_server
        self.config_path = self.root / "haproxy.cfg"
        self.socket_path = self.root / "stats.sock"

    def config_text(self) -> str:
        """The configuration HAProxy runs with."""
        out = [
            "# written by scripts/lab/haproxy.py",
            "global",
            "    log stdout format raw local0 info",
            f"    stats socket {self.socket_path} mode 600 level admin",
            "    nbthread 2",
            "",
            "defaults",
            "    mode tcp",
            "    log global",
            "    option tcplog",
            "    option redispatch 1",
            "    retries 2",
            "    timeout connect 2s",
            f"    timeout client {self.timeout_client}",
            f"    timeout server {self.timeout_server}",
            "    timeout check 1s",
            "",
        ]
        for service in self.services:
            out += [
                f"frontend {service.name}",
                f"    bind {service.bind_host}:{service.port}",
                f"    default_backend {service.name}_nodes",
                "",
                f"backend {service.name}_nodes",
                f"    balance {service.balance}",
            ]
            if service.check_path:
                out += [
                    "    option httpchk",
                    f"    http-check send meth GET uri {service.check_path} ver HTTP/1.1 hdr Host localhost",
                    "    http-check expect status 200",
                ]
            for server in service.servers:
                line = f"    server {server.name} {server.host}:{server.port}"
                if service.send_proxy == "v2":
                    line += " send-proxy-v2"
                elif service.send_proxy == "v1":
                    line += " send-proxy"
                line += f" check inter {self.inter} fall {self.fall} rise {self.rise}"
                if server.check_port is not None:
                    line += f" port {server.check_port}"
                else:
                    if service.send_proxy:
                        line += " check-send-proxy"
                    if service.check_ssl:
                        line += " check-ssl verify none"
                out.append(line)
            out.append("")
        return "\n".join(out) + "\n"

    def start(self, timeout: float = 20.0) -> None:
        """Writes the configuration, checks it (`haproxy -c`), starts HAProxy and returns once
        every frontend is OPEN on the stats socket."""
        ensure_installed("haproxy")
        if self.running():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        check = subprocess.run([HAPROXY, "-c", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c refused {self.config_path}:\n{check.stdout}{check.stderr}")
        self.spawn([HAPROXY, "-db", "-f", self.config_path])
        self.wait_ready(self.frontends_open, timeout, interval=0.05)

    def frontends_open(self) -> bool | str:
        try:
            frontends = {row["pxname"]: row["status"] for row in self.stat() if row["svname"] == "FRONTEND"}
        except OSError as e:
            return str(e)
        return all(frontends.get(s.name) == "OPEN" for s in self.services) or f"frontends {frontends}"

    def command(self, line: str, timeout: float = 5.0) -> str:
        """One command on the stats socket (`show stat`, `show servers state`, `disable server
        b/s`…); its whole answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def stat(self) -> list[dict[str, str]]:
        """`show stat` as rows (pxname, svname, status, scur, stot, …)."""
        text = self.command("show stat")
        if not text.startswith("# "):
            raise OSError(f"unexpected answer to show stat: {text[:200]!r}")
        return list(csv.DictReader(io.StringIO(text[2:])))

    def server_status(self) -> dict[tuple[str, str], str]:
        """(service, server) -> the status HAProxy gives it: `UP`, `DOWN`, `UP 1/2` (going
        down), `DOWN 1/2` (coming up), `MAINT`, …"""
        names = {f"{s.name}_nodes": s.name for s in self.services}
        return {
            (names[row["pxname"]], row["svname"]): row["status"]
            for row in self.stat()
            if row["pxname"] in names and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for_status(self, service: str, server: str, status: str, timeout: float = 10.0) -> None:
        """Waits until HAProxy gives `server` of `service` exactly `status` (`UP`, `DOWN`)."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            seen = self.server_status().get((service, server))
            if seen == status:
                return
            time.sleep(0.02)
        raise AssertionError(f"haproxy: {service}/{server} is {seen!r}, not {status!r}, after {timeout}s\n"
                             + self.log_tail())


if __name__ == "__main__":
    # A quick self-check: ./venv -m lab.haproxy (in scripts/) — two tiny HTTP health servers,
    # one answering 200 and one 503, behind one frontend.
    import http.server
    import tempfile
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        code = 200

        def do_GET(self):  # noqa: N802
            self.send_response(type(self).code)
            self.end_headers()

        def log_message(self, *args):
            pass

    class Sick(Health):
        code = 503

    servers = []
    for handler in (Health, Sick):
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
    with tempfile.TemporaryDirectory() as tmp:
        proxy = HAProxy(Path(tmp), [Service("web", free_port(), send_proxy=None, servers=[
            Server("good", servers[0].server_address[1]), Server("sick", servers[1].server_address[1])])])
        started = time.monotonic()
        proxy.start()
        log(f"haproxy ready in {time.monotonic() - started:.2f}s")
        proxy.wait_for_status("web", "good", "UP")
        proxy.wait_for_status("web", "sick", "DOWN")
        pid = proxy.process.pid
        proxy.stop()
        assert not alive(pid)
        log("lab.haproxy self-check passed")
