"""The lab's etcd: one etcd 3.4 server on loopback, as the location store for the interop tests
and the demo.

    etcd = Etcd(Path("/tmp/lab/etcd"), client_port=22379, peer_port=22380)
    etcd.start()                                   # returns once etcd answers a health check
    etcd.put_active("DB01", "mbx2")                # a switchover, as an operator does it
    etcd.put("/mailfront/databases/DB02", '{"active": "mbx2", "copies": ["mbx1", "mbx2"]}')
    print(etcd.location_config())                  # the [location] table for mailfront
    etcd.kill()                                    # an outage (SIGKILL); start() again resumes
    etcd.stop()

It runs the Debian `etcd` binary by hand (never through systemd) with its data and log under
`root`, and talks to it with `etcdctl` (API v3). The key layout is the one `mailfront-location`'s
etcd source reads (crates/location/src/etcd.rs): one key per database, `<prefix><DATABASE>`,
holding a bare server name or `{"active": …, "copies": […]}`.

Self-contained on purpose (scripts/lab.py is the Dovecot and mailfront side); `alive()` is the
same zombie-aware check as there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ["etcd-server", "etcd-client"]
ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
DEFAULT_PREFIX = "/mailfront/databases/"


def log(message: str) -> None:
    print(f"[lab] {message}", file=sys.stderr, flush=True)


def ensure_installed() -> None:
    """Installs etcd-server and etcd-client if etcd or etcdctl is missing (as root; otherwise it
    says what to run)."""
    if Path(ETCD).exists() and Path(ETCDCTL).exists():
        return
    if os.geteuid() != 0:
        raise SystemExit(
            "missing packages: " + " ".join(PACKAGES)
            + "\ninstall them with: sudo apt-get install --no-install-recommends " + " ".join(PACKAGES)
        )
    log("installing " + " ".join(PACKAGES))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a zombie still answers `kill -0`)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Etcd:
    """One etcd member on 127.0.0.1: client URL on `client_port`, peer URL on `peer_port`, data
    in `root/data`, output in `root/etcd.log`. Restarting keeps the data (same ports, same
    data directory), as a real restart does."""

    def __init__(self, root: Path, client_port: int, peer_port: int, name: str = "n1"):
        self.root = Path(root)
        self.client_port = client_port
        self.peer_port = peer_port
        self.name = name
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        """The client URL, as mailfront's `location.endpoints` takes it."""
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.root / "etcd.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None and alive(self.process.pid)

    def start(self, timeout: float = 20.0) -> None:
        """Starts etcd (again) and returns once it answers `etcdctl endpoint health`."""
        ensure_installed()
        if self.running():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        log_file = open(self.log_path, "ab")
        # Output to a file, never a pipe: nobody reads a pipe while etcd runs.
        self.process = subprocess.Popen(
            [
                ETCD,
                "--name", self.name,
                "--data-dir", str(self.root / "data"),
                "--listen-client-urls", self.endpoint,
                "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"{self.name}={peer}",
                "--initial-cluster-state", "new",
                "--logger", "zap",
                "--log-outputs", "stderr",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"etcd exited with {code} before it was ready:\n{self.log_tail()}")
            health = self.etcdctl("endpoint", "health", check=False)
            if health.returncode == 0:
                return
            last = (health.stderr or health.stdout).strip()
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"etcd on {self.endpoint} not healthy within {timeout}s ({last}):\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait until it is gone (reaped, not a zombie), then SIGKILL if needed."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL and wait: an abrupt outage (connections reset, data kept)."""
        self._end(signal.SIGKILL, 10.0)

    def pause(self) -> None:
        """SIGSTOP: a hung server, its connections open; `resume()` undoes it."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def _end(self, sig: int, timeout: float) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                process.send_signal(signal.SIGCONT)  # a paused etcd cannot act on SIGTERM
                process.send_signal(sig)
            except ProcessLookupError:
                pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        deadline = time.monotonic() + timeout
        while alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if alive(process.pid):
            raise RuntimeError(f"etcd (pid {process.pid}) did not go away")

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

    def location_config(self, prefix: str = DEFAULT_PREFIX, timeout: str = "5s") -> str:
        """The `[location]` table that points mailfront at this server."""
        return (
            "[location]\n"
            'backend = "etcd"\n'
            f'endpoints = ["{self.endpoint}"]\n'
            f'prefix = "{prefix}"\n'
            f'timeout = "{timeout}"\n'
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


if __name__ == "__main__":
    # A quick self-check: python3 scripts/lab_etcd.py
    import socket
    import tempfile

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

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
        log("lab_etcd self-check passed")
