"""The lab's LDAP directory: a real OpenLDAP slapd on loopback, for mailfront's LDAP backend.

Used by the interop tests and `scripts/demo` (like `lab.py`, which it builds on). It writes a
`slapd.conf` and an LDIF of users under one scratch directory, loads the users with `slapadd`,
runs slapd in the foreground (output to a file, never a pipe) and waits until it answers a
search. The schema is `scripts/ldap/mailfront-test.schema`, the same file the Rust test
`crates/directory/tests/ldap_slapd.rs` uses.

    from lab_ldap import Slapd
    ldap = Slapd(lab_root("ldap"), free_port())
    ldap.add_users([{"address": "alice@example.com", "password": "pw", "database": "DB01"}])
    ldap.start()
    print(ldap.directory_toml())     # the [directory] section for mailfront
    ldap.stop()

Users are dicts (or objects with the same attributes, such as `lab.User`) with these keys:
`address` (required), `password` (plain text, hashed here as {SSHA}, or an already hashed
`{SCHEME}...` value, such as `{CRYPT}$6$...`), `aliases` (list), `database`, `version`,
`protocols` (list, or None for all), `enabled` (bool, default True), `guid` (a UUID, stored as the
entry's entryUUID; default: slapd makes one), and optionally `uid` (default: the address's local
part), `display_name`, `sip_extension`.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

from lab import alive, log, stop_pid

SCHEMA = Path(__file__).resolve().parent / "ldap" / "mailfront-test.schema"
SUFFIX = "dc=example,dc=com"
PEOPLE = f"ou=people,{SUFFIX}"
SERVICE_DN = f"cn=mailfront,ou=services,{SUFFIX}"
ROOT_DN = f"cn=admin,{SUFFIX}"

PACKAGES = ["slapd", "ldap-utils"]
COMMANDS = ["/usr/sbin/slapd", "/usr/sbin/slapadd", "/usr/sbin/slappasswd", "/usr/bin/ldapsearch"]


def ensure_slapd() -> None:
    """Installs slapd and ldap-utils if missing, without letting the package configure or start
    a system-wide slapd (the lab runs its own)."""
    if all(Path(c).exists() for c in COMMANDS):
        return
    if os.geteuid() != 0:
        raise SystemExit(
            "missing packages: " + " ".join(PACKAGES)
            + "\ninstall them with: sudo apt-get install --no-install-recommends " + " ".join(PACKAGES)
        )
    log("installing " + " ".join(PACKAGES))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["debconf-set-selections"], input="slapd slapd/no_configuration boolean true\n",
                   text=True, check=True, env=env)
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def _output(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout.strip()


def hash_ssha(password: str) -> str:
    """`{SSHA}...` as slapd stores it."""
    return _output("slappasswd", "-h", "{SSHA}", "-s", password)


def hash_sha512_crypt(password: str) -> str:
    """`{CRYPT}$6$...`: slapd checks it with the system's crypt(3), which knows SHA-512 crypt."""
    return "{CRYPT}" + _output("openssl", "passwd", "-6", password)


def _get(user: Any, key: str, default: Any = None) -> Any:
    if isinstance(user, dict):
        return user.get(key, default)
    return getattr(user, key, default)


def _ldif_value(name: str, value: str) -> str:
    """One LDIF line; values that LDIF cannot carry as they are go base64 (RFC 2849)."""
    safe = value and value.isascii() and value[0] not in " :<" and value[-1] != " " and "\n" not in value \
        and "\r" not in value and "\0" not in value
    if safe:
        return f"{name}: {value}\n"
    import base64

    return f"{name}:: {base64.b64encode(value.encode()).decode()}\n"


def users_ldif(users: Iterable[Any]) -> str:
    """The entries for `users` under ou=people (inetOrgPerson + mailfrontUser)."""
    out = []
    seen: set[str] = set()
    for user in users:
        address = _get(user, "address")
        if not address or "@" not in address:
            raise ValueError(f"user without an address: {user!r}")
        uid = _get(user, "uid") or address.rsplit("@", 1)[0]
        if uid in seen:
            raise ValueError(f"two users with uid {uid!r}: give one of them a `uid`")
        seen.add(uid)
        password = _get(user, "password") or ""
        if not password:
            raise ValueError(f"{address}: no password")
        if not password.startswith("{"):
            password = hash_ssha(password)
        lines = [
            f"dn: uid={uid},{PEOPLE}\n",
            "objectClass: inetOrgPerson\n",
            "objectClass: mailfrontUser\n",
            _ldif_value("uid", uid),
            _ldif_value("cn", _get(user, "display_name") or uid),
            _ldif_value("sn", uid),
            _ldif_value("mail", address),
            _ldif_value("userPassword", password),
        ]
        for alias in _get(user, "aliases") or []:
            lines.append(_ldif_value("mailAlternateAddress", alias))
        if _get(user, "database"):
            lines.append(_ldif_value("mailboxDatabase", _get(user, "database")))
        lines.append(_ldif_value("mailboxVersion", str(_get(user, "version") or "15.1")))
        protocols = _get(user, "protocols")
        for protocol in protocols if protocols is not None else []:
            lines.append(_ldif_value("mailProtocol", protocol))
        if _get(user, "enabled", True) is False:
            lines.append("mailEnabled: FALSE\n")
        if _get(user, "guid"):
            # slapadd accepts the operational entryUUID; mailfront reads it as the mailbox GUID.
            lines.append(_ldif_value("entryUUID", _get(user, "guid")))
        if _get(user, "sip_extension"):
            lines.append(_ldif_value("telephoneNumber", _get(user, "sip_extension")))
        out.append("".join(lines))
    return "\n".join(out) + ("\n" if out else "")


class Slapd:
    """An OpenLDAP slapd serving `dc=example,dc=com` on 127.0.0.1:`port`, with its files under
    `root`. `access="open"` lets anyone read entries (userPassword only for binds);
    `access="service"` lets only the service account (`SERVICE_DN`) and each user (their own
    entry) read. With `tls` (a `lab.Tls`), slapd also offers StartTLS on `port` and implicit TLS
    on `ldaps_port`."""

    def __init__(self, root: Path, port: int, access: str = "open", tls: Any = None, ldaps_port: int = 0):
        if access not in ("open", "service"):
            raise ValueError(f"access must be 'open' or 'service', not {access!r}")
        if tls is not None and not ldaps_port:
            raise ValueError("tls needs an ldaps_port")
        self.root = root
        self.port = port
        self.access = access
        self.tls = tls
        self.ldaps_port = ldaps_port
        self.process: subprocess.Popen | None = None
        self.users: list[Any] = []
        self.loaded = False
        self.root_password = "lab-root-" + os.urandom(6).hex()
        self.service_password = "lab-service-" + os.urandom(6).hex()

    # Files

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def conf(self) -> Path:
        return self.root / "slapd.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "slapd.log"

    @property
    def service_password_file(self) -> Path:
        return self.root / "service.pw"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tls = ""
        if self.tls is not None:
            tls = (f"TLSCACertificateFile {self.tls.ca}\nTLSCertificateFile {self.tls.cert}\n"
                   f"TLSCertificateKeyFile {self.tls.key}\n")
        if self.access == "open":
            acl = "access to * by * read\n"
        else:
            acl = f'access to * by dn.exact="{SERVICE_DN}" read by self read by anonymous auth by * none\n'
        self.conf.write_text(
            f"""# written by scripts/lab_ldap.py
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include {SCHEMA}
pidfile {self.root}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
{tls}database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {hash_ssha(self.root_password)}
directory {self.root}/data
index mail,mailAlternateAddress eq
access to attrs=userPassword by self write by anonymous auth by * none
{acl}"""
        )
        self.service_password_file.write_text(self.service_password + "\n")
        self.service_password_file.chmod(0o600)

    def base_ldif(self) -> str:
        return (
            f"dn: {SUFFIX}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n"
            f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n"
            f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n\n"
            f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: mailfront\n"
            f"userPassword: {hash_ssha(self.service_password)}\n\n"
        )

    def load(self) -> None:
        """(Re)creates the database from the base entries and every user, with slapadd."""
        ensure_slapd()
        self.write_config()
        data = self.root / "data"
        if data.exists():
            for f in data.iterdir():
                f.unlink()
        data.mkdir(parents=True, exist_ok=True)
        ldif = self.root / "users.ldif"
        ldif.write_text(self.base_ldif() + users_ldif(self.users))
        subprocess.run(["slapadd", "-q", "-f", str(self.conf), "-l", str(ldif)], check=True,
                       stdin=subprocess.DEVNULL, capture_output=True)
        self.loaded = True

    # Users

    def add_users(self, users: Iterable[Any]) -> None:
        """Adds users (see the module documentation). slapadd loads them, so a running slapd is
        stopped for it and started again."""
        self.users.extend(users)
        running = self.running()
        if running:
            self.stop()
        self.load()
        if running:
            self.start()

    def dn_of(self, address: str) -> str:
        """The DN of a user loaded from the list (uid defaults to the address's local part)."""
        for user in self.users:
            if _get(user, "address") == address:
                return f"uid={_get(user, 'uid') or address.split('@')[0]},{PEOPLE}"
        raise KeyError(address)

    def set_password(self, address: str, password: str) -> None:
        """Changes a user's password in the running slapd (as the root DN, with ldapmodify), as an
        administrator would."""
        ldif = f"dn: {self.dn_of(address)}\nchangetype: modify\nreplace: userPassword\nuserPassword: {hash_ssha(password)}\n"
        subprocess.run(["ldapmodify", "-x", "-H", self.url, "-D", ROOT_DN, "-w", self.root_password],
                       input=ldif, text=True, check=True, capture_output=True)

    # Process

    def pid(self) -> int | None:
        if self.process is not None:
            return self.process.pid
        try:
            return int((self.root / "slapd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        pid = self.pid()
        return pid is not None and alive(pid)

    def start(self, timeout: float = 20.0) -> None:
        """Starts slapd in the foreground (`-d stats`, output appended to slapd.log) and returns
        once it answers a search."""
        if self.running():
            return
        if not self.loaded:
            self.load()
        urls = f"{self.url}/" + (f" {self.ldaps_url}/" if self.tls is not None else "")
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                ["/usr/sbin/slapd", "-h", urls, "-d", "stats", "-f", str(self.conf)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                ["ldapsearch", "-x", "-H", self.url, "-b", "", "-s", "base", "namingContexts"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ).returncode == 0
            if ready:
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"slapd did not answer on {self.url} within {timeout}s:\n{self.log_text()[-3000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM, wait until gone (SIGKILL after a while); reaps our own child."""
        pid = self.pid()
        if pid is not None and alive(pid):
            stop_pid(pid)
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    # mailfront

    def directory_toml(self, service: bool = True, ldaps: bool = False, **extra: Any) -> str:
        """The `[directory]` section that points mailfront at this slapd (service-account
        searches unless `service=False`; implicit TLS with the lab CA if `ldaps`)."""
        lines = ["[directory]", 'backend = "ldap"']
        if ldaps:
            if self.tls is None:
                raise ValueError("this slapd has no TLS")
            lines += [f'url = "{self.ldaps_url}"', f'ca_file = "{self.tls.ca}"']
        else:
            lines.append(f'url = "{self.url}"')
        lines.append(f'base = "{PEOPLE}"')
        if service:
            lines += [f'service_dn = "{SERVICE_DN}"', f'service_password_file = "{self.service_password_file}"']
        for key, value in extra.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, int):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f'{key} = "{value}"')
        return "\n".join(lines) + "\n"


if __name__ == "__main__":
    # A quick look by hand: python3 scripts/lab_ldap.py  (starts, lists the users, stops)
    from lab import free_port, lab_root, reset_dir

    lab = Slapd(reset_dir(lab_root("ldap-selftest")), free_port())
    lab.add_users([
        {"address": "alice@example.com", "password": "pw", "aliases": ["a.smith@example.com"], "database": "DB01",
         "guid": "0b0c7a4e-0000-4000-8000-000000000001"},
        {"address": "bob@example.com", "password": hash_sha512_crypt("pw"), "database": "DB02", "protocols": ["imap"],
         "enabled": False},
    ])
    lab.start()
    try:
        print(_output("ldapsearch", "-x", "-LLL", "-H", lab.url, "-b", PEOPLE, "(objectClass=mailfrontUser)",
                      "mail", "mailAlternateAddress", "mailboxDatabase", "mailProtocol", "mailEnabled", "entryUUID"))
        print(_output("ldapwhoami", "-x", "-H", lab.url, "-D", f"uid=bob,{PEOPLE}", "-w", "pw"))
        print(lab.directory_toml())
    finally:
        lab.stop()
