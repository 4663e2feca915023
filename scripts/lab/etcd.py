"""The lab's etcd: one etcd 3.4 server on loopback, as the location store for the interop tests
and the demo.

    etcd = Etcd(Path("/tmp/lab/etcd"), client_port=22379, peer_port=22380)
    etcd.start()                                   # returns once etcd answers a health check
    etcd.put_active("DB01", "mbx2")                # a switchover, as an operator does it
    etcd.put("/mailfront/databases/DB02", '{"active": "mbx2", "copies": ["mbx1", "mbx2"]}')
    etcd.location_config()                         # the [location] table for mailfront, a dict
    etcd.kill()                                    # an outage (SIGKILL); start() again resumes
    etcd.stop()

It runs the Debian `etcd` binary by hand (never through systemd) with its data and log under
`root`, and talks to it with `etcdctl` (API v3). The key layout is the one `mailfront-location`'s
etcd source reads (crates/location/src/etcd.rs): one key per database, `<prefix><DATABASE>`,
holding a bare server name or `{"active": …, "copies": […]}`.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from .base import log
from .packages import COMMANDS, ensure_installed
from .processes import Child, alive, free_port

ETCD = COMMANDS["etcd"]
ETCDCTL = "/usr/bin/etcdctl"
DEFAULT_PREFIX = "/mailfront/databases/"


class Etcd(Child):
    """One etcd member on 127.0.0.1: client URL on `client_port`, peer URL on `peer_port`, data
    in `root/data`, output in `root/etcd.log`. Restarting keeps the data (same ports, same
    data directory), as a real restart does."""

    def __init__(self, root: Path, client_port: int, peer_port: int, name: str = "n1"):
        self.root = Path(root)
        super().__init__("etcd", self.root / "etcd.log")
        self.client_port = client_port
        self.peer_port = peer_port
        self.member = name
        # The client URL, as mailfront's `location.endpoints` takes it.
        self.endpoint = f"http://127.0.0.1:{client_port}"

    def start(self, timeout: float = 20.0) -> None:
        """Starts etcd (again) and returns once it answers `etcdctl endpoint health`."""
        ensure_installed("etcd")
        if self.running():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.spawn([
            ETCD,
            "--name", self.member,
            "--data-dir", self.root / "data",
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.member}={peer}",
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ])
        self.wait_ready(self.healthy, timeout, interval=0.05)

    def healthy(self) -> bool | str:
        health = self.etcdctl("endpoint", "health", check=False)
        return health.returncode == 0 or (health.stderr or health.stdout).strip()

    def kill(self) -> None:
        """SIGKILL and wait: an abrupt outage (connections reset, data kept)."""
        self.stop(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: a hung server, its connections open; `resume()` (or `stop()`) undoes it."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def etcdctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs etcdctl (API v3) against this server; a short-lived client, so capturing its
        output is fine."""
        result = subprocess.run(
            [ETCDCTL, "--endpoints", self.endpoint, "--dial-timeout=1s", "--command-timeout=3s", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=dict(os.environ, ETCDCTL_API="3"),
            timeout=30,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def put(self, key: str, value: str) -> None:
        # `--` so that a value starting with "-" is not taken for an option.
        self.etcdctl("put", "--", key, value)

    def get(self, key: str) -> str | None:
        """The value of `key`, or None if it does not exist."""
        out = self.etcdctl("get", "--print-value-only", "--", key).stdout
        return out[:-1] if out.endswith("\n") else (out or None)

    def delete(self, key: str) -> None:
        self.etcdctl("del", "--", key)

    def put_active(self, database: str, server: str, prefix: str = DEFAULT_PREFIX) -> None:
        """A switchover: `server` now hosts the active copy of `database` (a bare value; use
        put() to write the JSON form with copies)."""
        self.put(prefix + database, server)

    def location_config(self, prefix: str = DEFAULT_PREFIX, timeout: str = "5s") -> dict:
        """The `[location]` table that points mailfront at this server."""
        return {"backend": "etcd", "endpoints": [self.endpoint], "prefix": prefix, "timeout": timeout}


if __name__ == "__main__":
    # A quick self-check: ./venv -m lab.etcd in scripts/
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as tmp:
        etcd = Etcd(Path(tmp), free_port(), free_port())
        started = time.monotonic()
        etcd.start()
        log(f"etcd ready on {etcd.endpoint} in {time.monotonic() - started:.2f}s")
        etcd.put_active("DB01", "mbx1")
        assert etcd.get(DEFAULT_PREFIX + "DB01") == "mbx1"
        etcd.kill()
        assert not etcd.running()
        etcd.start()
        assert etcd.get(DEFAULT_PREFIX + "DB01") == "mbx1", "data survives a restart"
        etcd.put(DEFAULT_PREFIX + "DB02", '{"active": "mbx2", "copies": ["mbx1", "mbx2"]}')
        assert etcd.get(DEFAULT_PREFIX + "DB02") == '{"active": "mbx2", "copies": ["mbx1", "mbx2"]}'
        etcd.delete(DEFAULT_PREFIX + "DB02")
        assert etcd.get(DEFAULT_PREFIX + "DB02") is None
        pid = etcd.pid
        etcd.pause()
        etcd.stop()
        assert pid is not None and not alive(pid)
        log("lab.etcd self-check passed")
