"""Helpers for the bad-input catalogue (tests/interop/adversarial).

Each protocol's module holds a table of `Case` rows: what a hostile client sends and the exact
bytes the server must answer, up to a clean close. `run_table` plays every row of a table at
once (in threads, so that the timeouts some rows wait for overlap), each on its own connection;
each row's test then checks its own outcome: the reply, the close, the time it took, and the log
lines mailfront wrote about that connection (found by the client's address and the session it
opened, so concurrent rows never see each other's lines, even when a later row's connection
reuses an earlier row's port).

There is deliberately no conftest.py in this folder: a second module called `conftest` would
shadow tests/interop/conftest.py for the sibling test files that `from conftest import …` when
the whole interop suite runs in one pytest session.
"""

from __future__ import annotations

import base64
import concurrent.futures
import re
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime

import pytest

# tests/interop/conftest.py: pytest imported it as `conftest` (the only module of that name).
import conftest
from conftest import AUTH_FAILURE_DELAY, PRE_AUTH_IDLE, USERS, client_tls, lab, start_node  # noqa: F401

PASSWORD = lab.DEMO_PASSWORD
# The lab's [limits] (tests/interop/conftest.py).
MAX_LINE = 1024  # limits.max_line_length
MAX_COMMANDS = 20  # limits.max_commands_before_auth
MAX_LITERAL = 16 * 1024  # limits.max_literal_size (the default; the lab does not set it)
PER_CLIENT = 100  # limits.max_connections_per_client (the default)
# Slack for a reply that should come at once (a loaded machine, a debug build).
PROMPT = 2.0
# The users of the lab: the only names a backend may ever be asked to log in.
LAB_USERS = {user.address for user in USERS}


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def plain(authzid: str | bytes, authcid: str | bytes, password: str | bytes) -> bytes:
    """A SASL PLAIN response, base64-encoded."""
    enc = lambda v: v.encode() if isinstance(v, str) else v  # noqa: E731
    return b64(enc(authzid) + b"\0" + enc(authcid) + b"\0" + enc(password))


# --- the conversation language of a row ------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """Read until what the server sent so far ends with `text`: a synchronisation point (e.g.
    the go-ahead of STARTTLS) before the client does the next thing."""

    text: bytes


@dataclass(frozen=True)
class StartTls:
    """Wrap the connection in TLS here (after an `Expect` of the server's go-ahead)."""


@dataclass(frozen=True)
class Dribble:
    """Send `data` one byte at a time, `every` seconds apart (a slow-loris client). The pauses
    are spent reading, and the attack stops when the server closes."""

    data: bytes
    every: float


TLS = StartTls()


@dataclass(frozen=True)
class Case:
    """One row of a catalogue table.

    `send`: what the client does after the greeting (bytes, or a list of bytes, `Expect`, `TLS`
    and `Dribble` steps; or a function of the lab returning that). `reply`: the exact bytes the
    server sends after the greeting, up to its close (bytes; or a compiled pattern that must
    match all of them). Scripts end with a logout when the server would otherwise go on, so
    every row ends with the server's close. `within`: seconds from the first byte sent to the
    close; `at_least`: a lower bound (a timeout must not fire early, a refused login takes the
    failure delay). `port`: which listener. `proxied`: the row is a positive control that does
    reach a backend. `ended`: text the log line ending the session must contain. `bug`: the row
    shows a known mailfront bug (a strict xfail)."""

    id: str
    send: object
    reply: bytes | re.Pattern
    within: float = PROMPT
    at_least: float = 0.0
    port: str = "plain"
    proxied: bool = False
    ended: str = ""
    bug: str = ""


@dataclass
class Outcome:
    """What happened on one row's connection."""

    greeting: bytes = b""
    transcript: bytes = b""
    closed: bool = False  # the server closed (FIN; or RST, after our unread bytes)
    elapsed: float = 0.0  # first byte sent -> close (or give-up)
    client: str = ""  # "127.0.0.1:54321", as mailfront's log writes the client (a `Client`)
    error: str = ""  # a failure of the harness itself (never expected)


class Client(str):
    """A client address as mailfront logs it (`127.0.0.1:54321`), with the wall-clock time just
    before it connected: ports are reused, so the address alone names every connection that ever
    had it — the time picks this one's session."""

    connected_at: float | None = None


class Conversation:
    """One client connection driven step by step, keeping everything the server sent."""

    def __init__(self, port: int, *, source: str = "127.0.0.1", implicit_tls: bool = False,
                 timeout: float = 10.0):
        self.deadline = time.monotonic() + timeout
        connected_at = time.time()
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        host, cport = raw.getsockname()[:2]
        self.client = Client(f"{host}:{cport}")
        self.client.connected_at = connected_at
        self.sock: socket.socket = raw
        self.buffer = b""
        self.closed = False
        if implicit_tls:
            self.start_tls()

    def remaining(self) -> float:
        return max(0.01, self.deadline - time.monotonic())

    def _recv(self, timeout: float) -> bool:
        """One read; False on close or when nothing came within `timeout`."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            self.closed = True
            return False
        except ssl.SSLError as e:
            if "timed out" in str(e):
                return False
            self.closed = True
            return False
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def read_line(self) -> bytes:
        """The first line the server sends (a greeting)."""
        while b"\n" not in self.buffer and not self.closed and time.monotonic() < self.deadline:
            self._recv(self.remaining())
        line, sep, rest = self.buffer.partition(b"\n")
        self.buffer = rest
        return line + sep

    def expect(self, text: bytes) -> None:
        while not self.buffer.endswith(text) and not self.closed and time.monotonic() < self.deadline:
            self._recv(self.remaining())

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.sock.settimeout(self.remaining())
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout, TimeoutError):
            self.closed = True

    def dribble(self, data: bytes, every: float) -> None:
        for i in range(len(data)):
            if self.closed or time.monotonic() >= self.deadline:
                return
            self.send(data[i:i + 1])
            pause_until = min(time.monotonic() + every, self.deadline)
            # The pause between two bytes is spent reading: a close ends the attack.
            while not self.closed and time.monotonic() < pause_until:
                self._recv(max(0.01, pause_until - time.monotonic()))

    def start_tls(self) -> None:
        if self.closed:
            return
        self.sock.settimeout(self.remaining())
        try:
            self.sock = client_tls().wrap_socket(self.sock)
        except (ssl.SSLError, OSError):
            self.closed = True

    def read_to_close(self) -> None:
        while not self.closed and time.monotonic() < self.deadline:
            self._recv(self.remaining())

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def play(port: int, send, *, source: str = "127.0.0.1", implicit_tls: bool = False,
         timeout: float = 10.0, greeting: bool = True) -> Outcome:
    """Plays one script on a new connection and reads until the server closes (or `timeout`
    seconds after connecting: then `closed` stays False)."""
    outcome = Outcome()
    try:
        conv = Conversation(port, source=source, implicit_tls=implicit_tls, timeout=timeout)
    except OSError as e:
        outcome.error = f"connect: {e!r}"
        return outcome
    outcome.client = conv.client
    try:
        if greeting:
            outcome.greeting = conv.read_line()
        started = time.monotonic()
        for step in send if isinstance(send, list) else [send]:
            if isinstance(step, bytes):
                conv.send(step)
            elif isinstance(step, Expect):
                conv.expect(step.text)
            elif isinstance(step, StartTls):
                conv.start_tls()
            elif isinstance(step, Dribble):
                conv.dribble(step.data, step.every)
            else:
                raise TypeError(step)
        conv.read_to_close()
        outcome.elapsed = time.monotonic() - started
        outcome.transcript = conv.buffer
        outcome.closed = conv.closed
    except Exception as e:  # noqa: BLE001 - the row's test reports it
        outcome.error = repr(e)
    finally:
        conv.close()
    return outcome


def run_table(cases: list[Case], ports: dict[str, int], lab_env=None, **kwargs) -> dict[str, Outcome]:
    """Plays every row at once, each on `ports[case.port]`. Returns id -> outcome."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(cases))) as pool:
        futures = {
            case.id: pool.submit(play, ports[case.port], case.send(lab_env) if callable(case.send) else case.send,
                                 timeout=case.within + 5, **kwargs)
            for case in cases
        }
        return {name: future.result() for name, future in futures.items()}


def params(cases: list[Case]) -> list:
    """pytest parameters for a table: one test per row, a known bug as a strict xfail."""
    assert len({c.id for c in cases}) == len(cases), "duplicate row ids"
    return [pytest.param(case, id=case.id,
                         marks=[pytest.mark.xfail(strict=True, reason=f"BUG: {case.bug}")] if case.bug else [])
            for case in cases]


def matches(expected: bytes | re.Pattern, got: bytes) -> bool:
    if isinstance(expected, re.Pattern):
        return expected.fullmatch(got) is not None
    return expected == got


# --- what mailfront logged --------------------------------------------------------------------


SESSION_ID = re.compile(r"session(?:\{id=|=)([0-9a-f]+)")


def lines_for(log: str, client: str) -> list[str]:
    """Log lines about one connection (`client=127.0.0.1:54321`). The kernel reuses a closed
    connection's port at once, so one address may name several connections: for a `Client`
    only lines logged after it connected count, and of the sessions among them the first is its
    own; for a bare address (a request already answered), the latest session."""
    connected_at = getattr(client, "connected_at", None)
    mine = [line for line in log.splitlines() if re.search(rf"client={re.escape(client)}(\s|$|}})", line)]
    if connected_at is not None:
        mine = [line for line in mine if logged_at(line) >= connected_at]
    sessions = list(dict.fromkeys(s for s in map(session_of, mine) if s is not None))
    if not sessions:
        return mine  # HTTP and SIP log requests, not sessions
    session = sessions[0] if connected_at is not None else sessions[-1]
    return [line for line in log.splitlines() if session_of(line) == session]


def session_of(line: str) -> str | None:
    found = SESSION_ID.search(line)
    return found.group(1) if found else None


def logged_at(line: str) -> float:
    """The wall-clock time at the start of a log line (`2026-12-03T19:20:33.657853Z …`)."""
    stamp = line.split(" ", 1)[0]
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("inf")


def wait_for_line(log_fn, client: str, what: str = "session ended", timeout: float = 5.0) -> list[str]:
    """Polls a log until a line containing `what` is there for `client`; returns every line
    about that client."""
    deadline = time.monotonic() + timeout
    while True:
        lines = lines_for(log_fn(), client)
        if any(what in line for line in lines):
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what!r} line for client={client} within {timeout}s; lines: {lines}")
        time.sleep(0.02)


def assert_alive(log_fn, process) -> None:
    """No panic in the log, and the process still runs."""
    log = log_fn()
    at = log.find("panicked")
    assert at < 0, "mailfront panicked:\n" + log[max(0, at - 1500):at + 1500]
    assert process.poll() is None, f"mailfront exited with {process.returncode}"


def lab_alive(lab_env) -> None:
    assert_alive(lab_env.log, lab_env.mailfront.process)


def run_line_table(cases: list[Case], ports: dict[str, int], lab_env, implicit_port: str) -> dict[str, Outcome]:
    """`run_table` for a line protocol's table: the rows on `implicit_port` speak TLS from the
    first byte, played after the others."""
    results = run_table([c for c in cases if c.port != implicit_port], ports, lab_env)
    results.update(run_table([c for c in cases if c.port == implicit_port], ports, lab_env, implicit_tls=True))
    return results


def check_transcript(case: Case, outcome: Outcome, normalise=lambda b: b) -> None:
    """The reply, the close and the time of one row."""
    assert not outcome.error, outcome.error
    got = normalise(outcome.transcript)
    assert matches(case.reply, got), f"\nexpected {case.reply!r}\n     got {got!r}"
    assert outcome.closed, f"no close after {outcome.elapsed:.1f}s (a hang); got {got!r}"
    assert case.at_least <= outcome.elapsed < case.within, (
        f"closed after {outcome.elapsed:.2f}s, expected between {case.at_least}s and {case.within}s")


def check_session(case: Case, outcome: Outcome, log_fn, process) -> list[str]:
    """The log side of a line-protocol row (IMAP, POP3, submission): the session's end is
    logged, and `session proxied` appears exactly when the row is a positive control; no panic."""
    lines = wait_for_line(log_fn, outcome.client, "session ended")
    proxied = [line for line in lines if "session proxied" in line]
    assert bool(proxied) == case.proxied, f"proxied lines: {proxied}\nall: {lines}"
    if not case.proxied:
        assert any("session ended before login" in line for line in lines), lines
    if case.ended:
        assert any(case.ended in line for line in lines if "session ended" in line), lines
    assert_alive(log_fn, process)
    return lines


def dovecot_logs(lab_env) -> str:
    return "".join(server.log_text() for server in lab_env.servers.values())


def radicale_logs(lab_env) -> str:
    return "".join(r.log_text() for r in lab_env.radicales.values())


def dovecot_marks(lab_env) -> dict[str, int]:
    """Where each Dovecot log ends now (to read only what is written after)."""
    return {name: len(server.log_text()) for name, server in lab_env.servers.items()}


def backend_login_names(lab_env, since: dict[str, int]) -> set[str]:
    """Every user name Dovecot was asked to log in or authenticate (its `user=<…>`) since
    `since` (from `dovecot_marks`)."""
    text = "".join(server.log_text()[since.get(name, 0):] for name, server in lab_env.servers.items())
    return set(re.findall(r"user=<([^>]*)>", text)) - {""}


def wait_until(predicate, timeout: float = 5.0, what: str = "condition"):
    """conftest.wait_until with the catalogue's shorter default."""
    return conftest.wait_until(predicate, timeout, what)


def admin_metrics(node, name: str, **labels) -> float:
    """One metric of a node (the lab, or an admin port), from its admin API."""
    from conftest import admin_call

    status, text = admin_call(node if isinstance(node, int) else node.admin_port, "GET", "/metrics")
    assert status == 200, text
    return metric(text, name, **labels)


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text (0 if absent)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"([a-z_]+)(\{[^}]*\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total
