"""The Debian package (`scripts/package`), installed for real with dpkg on this machine: the user,
the files and their permissions, `mailfront check` on the shipped configuration, the unit
(`systemd-analyze verify`, its ExecStart run as the package's user with systemd's readiness
socket), a login through it to the lab's Dovecot, an upgrade that keeps the operator's edits,
and a purge that leaves nothing behind."""

from __future__ import annotations

import grp
import gzip
import imaplib
import os
import pwd
import re
import shlex
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import USERS, client_tls, lab, wait_until

ETC = Path("/etc/mailfront")
UNIT_DIRS = (Path("/lib/systemd/system"), Path("/usr/lib/systemd/system"))


def run(*argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=600, **kwargs)
    if check:
        assert done.returncode == 0, f"{shlex.join(argv)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def build_package(suffix: str = "") -> Path:
    argv = [str(lab.ROOT / "scripts" / "package"), "--debug"]
    if suffix:
        argv += ["--version-suffix", suffix]
    return Path(run(*argv).stdout.strip().splitlines()[-1])


def installed_version() -> str | None:
    done = run("dpkg-query", "-W", "-f=${Status} ${Version}", "mailfront", check=False)
    if done.returncode != 0 or "install ok installed" not in done.stdout:
        return None
    return done.stdout.split()[-1]


def purge() -> None:
    run("dpkg", "--purge", "mailfront")


def unit_file() -> Path:
    found = [d / "mailfront.service" for d in UNIT_DIRS if (d / "mailfront.service").exists()]
    assert found, "no mailfront.service installed"
    return found[0]


def as_mailfront(*argv: str) -> list[str]:
    """`argv` run as the package's user and group, exec'd directly (signals reach it)."""
    return ["setpriv", "--reuid=mailfront", "--regid=mailfront", "--init-groups", "--", *argv]


@pytest.fixture
def package():
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    if installed_version() is not None:
        purge()  # a run that stopped half-way
    first, second = build_package(), build_package("upgrade1")
    yield first, second
    if installed_version() is not None:
        purge()


def test_the_package_installs_serves_upgrades_and_purges(package, lab_env):
    first, second = package
    run("dpkg", "-i", str(first))
    if Path("/run/systemd/system").exists():
        run("systemctl", "stop", "mailfront")  # started by postinst; this test runs it by hand
    version = installed_version()
    assert version and "+" not in version

    # The user, the files, who may read the secrets.
    user = pwd.getpwnam("mailfront")
    assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin"
    group = grp.getgrnam("mailfront").gr_gid
    for path in ("/usr/bin/mailfront", ETC / "mailfront.toml", ETC / "users.toml", ETC / "locations.toml",
                 ETC / "tls" / "cert.pem", "/usr/share/man/man1/mailfront.1.gz",
                 "/usr/share/bash-completion/completions/mailfront", "/usr/share/doc/mailfront/operations.md"):
        assert Path(path).exists(), path
    for secret in (ETC / "tls" / "key.pem", ETC / "http" / "keys.toml"):
        info = secret.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, group, 0o640), secret
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "mailfront").stdout
    assert "/etc/mailfront/mailfront.toml" in conffiles and "/etc/mailfront/users.toml" in conffiles
    assert ".TH mailfront" in gzip.decompress(Path("/usr/share/man/man1/mailfront.1.gz").read_bytes()).decode()
    # A page per command too: `man mailfront-admin` documents the admin client's options.
    admin_page = gzip.decompress(Path("/usr/share/man/man1/mailfront-admin.1.gz").read_bytes()).decode()
    assert ".TH mailfront-admin" in admin_page and "certificate" in admin_page
    assert "mailfront" in Path("/usr/share/bash-completion/completions/mailfront").read_text()

    # The shipped configuration passes `check` as the service's user (it can read everything).
    checked = run(*as_mailfront("/usr/bin/mailfront", "check", "--config", str(ETC / "mailfront.toml")))
    assert ": OK (" in checked.stdout
    verify = run("systemd-analyze", "verify", str(unit_file()), check=False)
    assert verify.returncode == 0 and "mailfront.service" not in verify.stderr, verify.stderr

    # The operator's edits: the lab's mbx1 as the mailbox server, alice as a user.
    alice = next(u for u in USERS if u.address == "alice@example.com")
    mbx1 = lab_env.servers["mbx1"]
    config = (ETC / "mailfront.toml").read_text()
    config = config.replace("imap = { port = 143 }", f"imap = {{ port = {mbx1.ports.imap} }}")
    config = config.replace("name = \"cas1\"", "name = \"packaged1\"", 1)
    (ETC / "mailfront.toml").write_text(config)
    lab.write_users(ETC / "users.toml", [alice], lab_env.binary)

    # The unit's ExecStart, as the unit's user, with a readiness socket as systemd gives one.
    exec_start = next(l for l in unit_file().read_text().splitlines() if l.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"mailfront-test-notify-{os.getpid()}"
    notify.bind("\0" + name)
    notify.settimeout(30)
    log = open(lab_env.root / "packaged.log", "w")
    node = subprocess.Popen(as_mailfront(*argv), stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, NOTIFY_SOCKET="@" + name), cwd="/")
    try:
        assert notify.recv(64) == b"READY=1"
        client = imaplib.IMAP4("127.0.0.1", 1143, timeout=15)
        client.starttls(ssl_context=client_tls())
        assert client.login(alice.address, alice.password)[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
        client.logout()
        owner = Path(f"/proc/{node.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{user.pw_uid}\s", owner, re.M), "not running as mailfront"
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=60)
        log.close()
        notify.close()
    assert node.returncode == 0, (lab_env.root / "packaged.log").read_text()
    assert "session proxied" in (lab_env.root / "packaged.log").read_text()

    # An upgrade keeps the operator's configuration and secrets.
    key = (ETC / "tls" / "key.pem").read_bytes()
    run("dpkg", "-i", "--force-confold", str(second))
    assert installed_version() == version.replace("-1", "+upgrade1-1")
    assert "name = \"packaged1\"" in (ETC / "mailfront.toml").read_text()
    assert alice.address in (ETC / "users.toml").read_text()
    assert (ETC / "tls" / "key.pem").read_bytes() == key
    checked = run(*as_mailfront("/usr/bin/mailfront", "check", "--config", str(ETC / "mailfront.toml")))
    assert "1 users" in checked.stdout

    # Purge leaves nothing behind.
    purge()
    assert installed_version() is None
    assert not ETC.exists() and not Path("/usr/bin/mailfront").exists() and not Path("/var/lib/mailfront").exists()
    with pytest.raises(KeyError):
        pwd.getpwnam("mailfront")
    wait_until(lambda: not any(p.exists() for p in (d / "mailfront.service" for d in UNIT_DIRS)), 5, "unit gone")
