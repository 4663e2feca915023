"""The lab the benchmark scripts share: real Dovecot mailbox servers and one mailfront node with a
plain IMAP listener, an admin listener and the per-client connection limit lifted (a benchmark's
sessions all come from 127.0.0.1).

    with BenchLab("bench-soak", users=[lab.User("alice@example.com", "DB01")]) as bench:
        bench.imap_port, bench.admin_port, bench.mailfront.process.pid, bench.servers["mbx1"]
"""

from __future__ import annotations

import os
import resource
import sys
from importlib.util import find_spec
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
if find_spec("tomli_w") is None and not os.environ.get("MAILFRONT_VENV"):
    # Another python3 than the lab's: run the benchmark again with scripts/venv's.
    os.execv(SCRIPTS / "venv", [str(SCRIPTS / "venv"), *sys.argv])
sys.path.insert(0, str(SCRIPTS))
import lab  # noqa: E402

ROOT = lab.ROOT


def raise_fd_limit() -> int:
    """Lifts this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class BenchLab:
    """Dovecot servers `server_names` hosting `users` (databases active as `active` says, default
    everything on the first server) behind one mailfront built with `profile`, its database
    locations in the embedded map unless `location` (a `[location]` table) says otherwise;
    `databases` (copies) and `sections` (more tables, e.g. [health]) go into its configuration."""

    def __init__(self, name: str, users: list[lab.User], server_names=("mbx1", "mbx2"),
                 active: dict[str, str] | None = None, profile: str | None = None,
                 location: dict | None = None, databases: dict[str, list[str]] | None = None,
                 sections: dict | None = None):
        lab.ensure_installed("dovecot", "openssl")
        raise_fd_limit()
        self.profile = profile or os.environ.get("MAILFRONT_PROFILE", "release")
        self.binary = lab.build_mailfront(self.profile)
        self.root = lab.reset_dir(lab.lab_root(name))
        self.users = users
        ports = {n: lab.Ports(*(lab.free_port() for _ in range(5))) for n in server_names}
        self.servers = {n: lab.Dovecot(self.root, n, p, users) for n, p in ports.items()}
        cert, key = lab.make_certificate(self.root / "tls")
        lab.master_password(self.root)
        lab.write_users(self.root / "users.toml", users, self.binary)
        self.locations = self.root / "locations.toml"
        names = sorted({u.database for u in users})
        lab.write_locations(self.locations, active or {d: server_names[0] for d in names})
        self.imap_port, self.admin_port = lab.free_port(), lab.free_port()
        self.config = lab.write_toml(self.root / "mailfront.toml", lab.node_config(
            node="bench",
            servers=[lab.ServerEntry(n, p) for n, p in ports.items()],
            users_file=self.root / "users.toml",
            locations_file=self.locations,
            cert=cert,
            key=key,
            master_password_file=self.root / "secrets" / "master.pw",
            listeners=[lab.listener(None, "imap", self.imap_port, "none", allow_plaintext_auth=True)],
            location=location,
            databases=databases,
            sections={
                "reload": {"interval": "50ms"},
                "limits": {"max_connections_per_client": 1000000, "max_connections": 1000000},
                "admin": {"address": f"127.0.0.1:{self.admin_port}"},
            } | (sections or {}),
        ))
        self.mailfront = lab.Mailfront(self.binary, self.config, self.root / "mailfront.log")

    def __enter__(self) -> "BenchLab":
        try:
            for server in self.servers.values():
                server.start()
            self.mailfront.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_exc) -> None:
        self.mailfront.stop()
        for server in self.servers.values():
            server.stop()

    @property
    def pid(self) -> int:
        assert self.mailfront.process is not None
        return self.mailfront.process.pid


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (its own accounting, not its children's)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# Whole-peer accounting for the side-by-side comparison (bench/compare.py): a peer may be several
# processes (nginx's master and workers, Dovecot's master, login, auth and helper processes).


def pss_kib(pid: int) -> int:
    """Proportional set size of a process, KiB (shared pages divided among their sharers, so
    summing over a multi-process peer does not count its shared libraries over and over)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Pss for {pid}")


def sockstat_tcp_mem_pages() -> int:
    """The kernel's memory for TCP socket buffers, in pages (/proc/net/sockstat `TCP: … mem N`);
    system-wide, so read it around a quiet measurement."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    raise RuntimeError("no TCP line in /proc/net/sockstat")


# The kernel's objects behind every open socket, beyond its buffers (which sockstat's `mem` counts).
SOCKET_SLABS = ("TCP", "sock_inode_cache", "filp", "eventpoll_epi")


def socket_slab_kib() -> int:
    """Memory in the slab caches of SOCKET_SLABS (active objects × object size), KiB; needs root
    (/proc/slabinfo), 0 otherwise. System-wide like sockstat."""
    total = 0
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] in SOCKET_SLABS:
                    total += int(fields[1]) * int(fields[3])
    except OSError:
        return 0
    return total // 1024


def fd_hard_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]
