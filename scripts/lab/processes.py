"""Processes and ports: the servers the lab runs as its children (`Child`), stopping processes
for good (zombies included), walking process trees, handing out free ports, and waiting until a
server really answers (a greeting or a 200, not an open port)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable

from .base import read_text


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


def insecure_tls() -> ssl.SSLContext:
    """A TLS client context that accepts any certificate (the lab's are self-signed)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_for_greeting(port: int, prefix: bytes, timeout: float = 20.0, host: str = "127.0.0.1",
                      tls: ssl.SSLContext | None = None) -> None:
    """Polls until a server on `port` sends a greeting that starts with `prefix` (over TLS first
    when `tls` is given: an implicit-TLS port)."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as raw:
                with (tls.wrap_socket(raw) if tls else raw) as s:
                    s.settimeout(2)
                    data = s.recv(512)
                    if data.startswith(prefix):
                        return
                    last = f"greeting {data[:60]!r}"
        except (OSError, ssl.SSLError) as e:
            last = str(e)
        time.sleep(0.05)
    raise TimeoutError(f"nothing on port {port} greeted with {prefix!r} within {timeout}s ({last})")


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool | str:
    """True if `url` answers 200 now; otherwise what it did instead."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return True if response.status == 200 else f"status {response.status}"
    except OSError as e:
        return str(e)


class Child:
    """A server the lab runs as its own child process, in the foreground: its output appended to
    `log_path` (never a pipe: nobody reads a pipe while the server runs)."""

    def __init__(self, name: str, log_path: Path):
        self.name = name
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None and alive(self.process.pid)

    def spawn(self, argv: list, new_session: bool = True) -> None:
        """Starts `argv`; in a session of its own unless `new_session` is false (then a Ctrl-C at
        the terminal reaches it too)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=out, start_new_session=new_session)

    def wait_ready(self, ready: Callable[[], bool | str], timeout: float = 20.0, interval: float = 0.02) -> None:
        """Polls `ready` until it returns True (anything else it returns says why not yet).
        Raises if the child exits first; stops it and raises if `timeout` passes."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        last: object = "no attempt"
        while True:
            last = ready()
            if last is True:
                return
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                raise RuntimeError(f"{self.name} exited with {code} before it was ready:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise TimeoutError(f"{self.name} not ready within {timeout}s ({last}):\n{self.log_tail()}")
            time.sleep(interval)

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Sends `sig` (after a SIGCONT: a paused child cannot act on SIGTERM), waits until the
        child is gone — reaped, not a zombie — and SIGKILLs it if `timeout` passes first."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                process.send_signal(signal.SIGCONT)
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
            raise RuntimeError(f"{self.name} (pid {process.pid}) did not go away")

    def log_text(self) -> str:
        return read_text(self.log_path)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(no log)"
