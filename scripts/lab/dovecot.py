"""Dovecot 2.3 in the lab: mailbox servers with a master user, run by hand (never through
systemd) from a configuration written here, serving mail from shared database folders."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .base import IS_ROOT, read_text
from .certificates import Tls
from .processes import alive, stop_pid, wait_for_greeting
from .users import User

DOVECOT = "/usr/sbin/dovecot"
MASTER_USER = "casmaster"


def master_password(lab: Path) -> str:
    """The master user's password for this lab (random, kept in a file mailfront reads)."""
    path = lab / "secrets" / "master.pw"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(os.urandom(12).hex() + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def mail_owner() -> tuple[int, int, str]:
    """The uid, gid and user name that own mail: `mail` as root (mail must not be owned by
    uid 0), ourselves otherwise."""
    import pwd

    if IS_ROOT:
        entry = pwd.getpwnam("mail")
        return entry.pw_uid, entry.pw_gid, "mail"
    return os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name


def inet_listener(name: str, port: int, address: str | None = "127.0.0.1", ssl: bool = False) -> str:
    """One `inet_listener` block of a Dovecot service."""
    lines = [f"  inet_listener {name} {{"]
    if address:
        lines.append(f"    address = {address}")
    lines.append(f"    port = {port}")
    if ssl:
        lines.append("    ssl = yes")
    return "\n".join(lines + ["  }"]) + "\n"


def service(name: str, *settings: str, listeners: str = "", chroot: bool = True) -> str:
    """A `service` block: its settings (one line each), then its listeners."""
    lines = (["  chroot ="] if not chroot else []) + [f"  {s}" for s in settings]
    return f"service {name} {{\n" + "".join(line + "\n" for line in lines) + listeners + "}\n"


@dataclass
class Ports:
    imap: int
    pop3: int
    lmtp: int
    submission: int
    imaps: int = 0


class Dovecot:
    """A Dovecot 2.3 mailbox server with a master user, serving mail from a shared database
    folder (`<lab>/db/<database>/<user>`), so that two servers model two copies of a database."""

    def __init__(self, lab: Path, name: str, ports: Ports, users: list[User], tls: Tls | None = None,
                 relay_port: int = 0, client_ca: Path | None = None):
        self.name = name
        self.tls = tls
        # With a CA: every login (the master user's too) needs a client certificate it signed.
        self.client_ca = client_ca
        # Where Dovecot's submission service relays outgoing mail (mailfront's outbound listener).
        self.relay_port = relay_port
        self.dir = lab / name
        self.db_root = lab / "db"
        self.ports = ports
        self.users = users
        self.process_pid: int | None = None

    def common_settings(self, protocols: str, ssl: bool) -> str:
        """The settings every lab Dovecot starts with: its own folders, loopback, its log, the
        processes it runs as."""
        d = self.dir
        _, _, owner = mail_owner()
        ssl_lines = f"yes\nssl_cert = <{self.tls.cert}\nssl_key = <{self.tls.key}" if ssl and self.tls else "no"
        if ssl and self.tls and self.client_ca:
            ssl_lines += (f"\nssl_ca = <{self.client_ca}\nssl_verify_client_cert = yes\nssl_require_crl = no"
                          "\nauth_ssl_require_client_cert = yes")
        return f"""instance_name = {self.name}
base_dir = {d}/run
state_dir = {d}/state
protocols = {protocols}
listen = 127.0.0.1
ssl = {ssl_lines}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
log_path = {d}/dovecot.log
default_internal_user = {"dovecot" if IS_ROOT else owner}
default_login_user = {"dovenull" if IS_ROOT else owner}
first_valid_uid = 0
"""

    def write_config(self) -> None:
        d = self.dir
        for sub in ("run", "state", "home"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.db_root.mkdir(parents=True, exist_ok=True)
        uid, gid, _ = mail_owner()
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
        p = self.ports
        (d / "dovecot.conf").write_text(
            "# written by scripts/lab/dovecot.py\n"
            + self.common_settings("imap pop3 lmtp submission", ssl=True)
            + f"""hostname = {self.name}.lab
submission_relay_host = 127.0.0.1
submission_relay_port = {self.relay_port or 25}
submission_relay_ssl = no
auth_master_user_separator = *
login_trusted_networks = 127.0.0.0/8
haproxy_trusted_networks = 127.0.0.0/8
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
"""
            + service("imap", "process_limit = 20000")
            + service("pop3", "process_limit = 5000")
            + service("imap-login", "process_limit = 5000", chroot=False,
                      listeners=inet_listener("imap", p.imap) + inet_listener("imaps", p.imaps if self.tls else 0))
            + service("pop3-login", chroot=False,
                      listeners=inet_listener("pop3", p.pop3) + inet_listener("pop3s", 0, address=None))
            + service("submission-login", chroot=False, listeners=inet_listener("submission", p.submission))
            + service("lmtp", listeners=inet_listener("lmtp", p.lmtp))
            + service("anvil", chroot=False)
            + service("ipc", chroot=False)
        )

    def start(self) -> None:
        self.stop()
        # A master killed with SIGKILL may linger as a zombie (this machine's PID 1 does not reap
        # daemons at once), and Dovecot refuses to start while its pid file names a process that
        # answers `kill -0`: a pid file of a dead master goes.
        pid = self.pid()
        if pid is not None and not alive(pid):
            (self.dir / "run" / "master.pid").unlink(missing_ok=True)
        self.write_config()
        # Dovecot daemonises; its output goes to a file, never a pipe (it would keep the pipe open).
        with open(self.dir / "stdio.log", "ab") as out:
            subprocess.run([DOVECOT, "-c", str(self.dir / "dovecot.conf")], stdin=subprocess.DEVNULL,
                           stdout=out, stderr=out, check=True)
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

    def processes(self) -> list[int]:
        """Every live process of this instance: its master daemonised into a session of its own,
        so they are the processes of that session (those it forks while being signalled too)."""
        master = self.pid()
        if not master:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # After the command: state, ppid, pgrp, session.
            if len(fields) > 3 and fields[3] == str(master) and fields[0] != "Z":
                found.append(int(entry))
        return found

    def signal(self, sig: int) -> None:
        """Sends `sig` to every process of this instance (SIGSTOP: up, but silent)."""
        for pid in self.processes():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill(self, timeout: float = 10.0) -> None:
        """A crash: SIGKILL to every process (master, login and mail processes), again until none
        is left (a master may fork while it is being killed)."""
        deadline = time.monotonic() + timeout
        while self.processes():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: processes left after SIGKILL: {self.processes()}")
            self.signal(signal.SIGKILL)
            time.sleep(0.02)

    def log_text(self) -> str:
        return read_text(self.dir / "dovecot.log")
