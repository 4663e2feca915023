"""The lab's LDAP directory: a real OpenLDAP slapd on loopback, for mailfront's LDAP backend.

Used by the interop tests and `scripts/demo`. It writes a
`slapd.conf` and an LDIF of users under one scratch directory, loads the users with `slapadd`,
runs slapd in the foreground (output to a file, never a pipe) and waits until it answers a
search. The schema is `scripts/ldap/mailfront-test.schema`, the same file the Rust test
`crates/directory/tests/ldap_slapd.rs` uses.

    from lab import ldap
    slapd = ldap.Slapd(lab_root("ldap"), free_port())
    slapd.add_users([{"address": "alice@example.com", "password": "pw", "database": "DB01"}])
    slapd.start()
    slapd.directory_config()          # the [directory] section for mailfront, a dict
    slapd.stop()

Users are dicts (or objects with the same attributes, such as `lab.User`) with these keys:
`address` (required), `password` (plain text, hashed here as {SSHA}, or an already hashed
`{SCHEME}...` value, such as `{CRYPT}$6$...`), `aliases` (list), `database`, `version`,
`protocols` (list, or None for all), `enabled` (bool, default True), `guid` (a UUID, stored as the
entry's entryUUID; default: slapd makes one), and optionally `uid` (default: the address's local
part), `display_name`, `sip_extension`.

`Slapd(..., profile="active-directory")` loads Active Directory-style users instead (with the
AD look-alike schema `scripts/ldap/ad-lab.schema`), for mailfront's `profile =
"active-directory"`. Their keys: `upn` (required: userPrincipalName), `password`, `mail`,
`proxy_addresses` (list: `SMTP:primary`, `smtp:alias`, `X500:…`), `object_guid` and
`mailbox_guid` (UUID text, stored as AD's 16 bytes in Microsoft's byte order, base64 in the LDIF:
`uuid.UUID(text).bytes_le`), `database` (becomes the first RDN of a `homeMDB` DN; or give
`home_mdb`, a whole DN), `uac` (userAccountControl, default 512; 514 is disabled), and
optionally `cn` (default: the UPN's local part), `display_name`, `sip_extension`, `version`.
`sizelimit=N` gives slapd a size limit of N entries per search (soft and hard) that paged
searches (RFC 2696) may exceed, as AD's MaxPageSize works.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterable

from .packages import ensure_installed
from .processes import Child, alive, stop_pid
from .users import app_password_ldap_value

SCHEMA = Path(__file__).resolve().parent.parent / "ldap" / "mailfront-test.schema"
AD_SCHEMA = Path(__file__).resolve().parent.parent / "ldap" / "ad-lab.schema"
PROFILES = ("openldap", "active-directory")
# Where the lab's homeMDB DNs point: an Exchange configuration container, as AD has one.
DATABASES_DN = ("CN=Databases,CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN=Administrative Groups,"
                "CN=Example,CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=example,DC=com")
SUFFIX = "dc=example,dc=com"
PEOPLE = f"ou=people,{SUFFIX}"
SERVICE_DN = f"cn=mailfront,ou=services,{SUFFIX}"
ROOT_DN = f"cn=admin,{SUFFIX}"


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
    return f"{name}:: {base64.b64encode(value.encode()).decode()}\n"


def ad_guid_bytes(text: str) -> bytes:
    """The 16 bytes AD stores for a GUID given as text: Microsoft's layout, the first three
    fields little-endian (`00112233-4455-…` → `33 22 11 00 55 44 …`)."""
    return uuid.UUID(text).bytes_le


def _ldif_binary(name: str, value: bytes) -> str:
    return f"{name}:: {base64.b64encode(value).decode()}\n"


def home_mdb(database: str) -> str:
    """The homeMDB DN of `database` in the lab (`CN=DB01,CN=Databases,…`), escaped as RFC 4514 says."""
    escaped = "".join("\\" + c if c in ',+"\\<>;=' else c for c in database)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    return f"CN={escaped},{DATABASES_DN}"


def ad_dn(user: Any) -> str:
    """The DN of an AD-style user: cn (default: the UPN's local part) under ou=people."""
    cn = _get(user, "cn") or _get(user, "upn").rsplit("@", 1)[0]
    return f"cn={cn},{PEOPLE}"


def ad_users_ldif(users: Iterable[Any]) -> str:
    """The entries for AD-style `users` under ou=people (inetOrgPerson + mailfrontAdUser), with
    binary GUIDs."""
    out = []
    seen: set[str] = set()
    for user in users:
        upn = _get(user, "upn")
        if not upn or "@" not in upn:
            raise ValueError(f"AD user without a userPrincipalName: {user!r}")
        dn = ad_dn(user)
        if dn in seen:
            raise ValueError(f"two users with the DN {dn!r}: give one of them a `cn`")
        seen.add(dn)
        password = _get(user, "password") or ""
        if not password:
            raise ValueError(f"{upn}: no password")
        if not password.startswith("{"):
            password = hash_ssha(password)
        cn = dn.split(",", 1)[0].split("=", 1)[1]
        lines = [
            f"dn: {dn}\n",
            "objectClass: inetOrgPerson\n",
            "objectClass: mailfrontAdUser\n",
            _ldif_value("cn", cn),
            _ldif_value("sn", cn),
            _ldif_value("userPrincipalName", upn),
            _ldif_value("userPassword", password),
            f"userAccountControl: {int(_get(user, 'uac', 512))}\n",
        ]
        if _get(user, "display_name"):
            lines.append(_ldif_value("displayName", _get(user, "display_name")))
        if _get(user, "mail"):
            lines.append(_ldif_value("mail", _get(user, "mail")))
        for proxy in _get(user, "proxy_addresses") or []:
            lines.append(_ldif_value("proxyAddresses", proxy))
        if _get(user, "object_guid"):
            lines.append(_ldif_binary("objectGUID", ad_guid_bytes(_get(user, "object_guid"))))
        if _get(user, "mailbox_guid"):
            lines.append(_ldif_binary("msExchMailboxGuid", ad_guid_bytes(_get(user, "mailbox_guid"))))
        mdb = _get(user, "home_mdb") or (home_mdb(_get(user, "database")) if _get(user, "database") else None)
        if mdb:
            lines.append(_ldif_value("homeMDB", mdb))
        if _get(user, "sip_extension"):
            lines.append(_ldif_value("telephoneNumber", _get(user, "sip_extension")))
        if _get(user, "version"):
            lines[2:2] = ["objectClass: mailfrontUser\n"]
            lines.append(_ldif_value("mailboxVersion", str(_get(user, "version"))))
        out.append("".join(lines))
    return "\n".join(out) + ("\n" if out else "")


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
        for entry in _get(user, "app_passwords") or []:
            lines.append(_ldif_value("mailfrontAppPassword", app_password_ldap_value(entry)))
        for protocol in _get(user, "password_protocols") or []:
            lines.append(_ldif_value("mailfrontPasswordProtocol", protocol))
        if _get(user, "guid"):
            # slapadd accepts the operational entryUUID; mailfront reads it as the mailbox GUID.
            lines.append(_ldif_value("entryUUID", _get(user, "guid")))
        if _get(user, "sip_extension"):
            lines.append(_ldif_value("telephoneNumber", _get(user, "sip_extension")))
        out.append("".join(lines))
    return "\n".join(out) + ("\n" if out else "")


class Slapd(Child):
    """An OpenLDAP slapd serving `dc=example,dc=com` on 127.0.0.1:`port`, with its files under
    `root`. `access="open"` lets anyone read entries (userPassword only for binds, mailfrontAppPassword
    only for the service account);
    `access="service"` lets only the service account (`SERVICE_DN`) and each user (their own
    entry) read. With `tls` (a `lab.Tls`), slapd also offers StartTLS on `port` and implicit TLS
    on `ldaps_port`. `profile="active-directory"` loads AD-style users (see the module
    documentation); `sizelimit` limits every search to that many entries except paged ones."""

    def __init__(self, root: Path, port: int, access: str = "open", tls: Any = None, ldaps_port: int = 0,
                 profile: str = "openldap", sizelimit: int | None = None):
        if access not in ("open", "service"):
            raise ValueError(f"access must be 'open' or 'service', not {access!r}")
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
        self.profile = profile
        self.sizelimit = sizelimit
        if tls is not None and not ldaps_port:
            raise ValueError("tls needs an ldaps_port")
        self.root = root
        super().__init__("slapd", root / "slapd.log")
        self.port = port
        self.access = access
        self.tls = tls
        self.ldaps_port = ldaps_port
        self.users: list[Any] = []
        self.loaded = False
        self.root_password = "lab-root-" + os.urandom(6).hex()
        self.service_password = "lab-service-" + os.urandom(6).hex()
        self.url = f"ldap://127.0.0.1:{port}"
        self.ldaps_url = f"ldaps://127.0.0.1:{ldaps_port}"
        self.conf = root / "slapd.conf"
        self.service_password_file = root / "service.pw"

    # Files

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
        # Paged searches may go past the limit (size.prtotal), as AD's MaxPageSize allows.
        limits = "" if self.sizelimit is None else \
            f"sizelimit size.soft={self.sizelimit} size.hard={self.sizelimit} size.prtotal=unlimited\n"
        self.conf.write_text(
            f"""# written by scripts/lab/ldap.py
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include {SCHEMA}
include {AD_SCHEMA}
{limits}pidfile {self.root}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
{tls}database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {hash_ssha(self.root_password)}
directory {self.root}/data
index mail,mailAlternateAddress,userPrincipalName,proxyAddresses eq
access to attrs=userPassword by self write by anonymous auth by * none
access to attrs=mailfrontAppPassword by dn.exact="{SERVICE_DN}" read by * none
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
        ensure_installed("slapd")
        self.write_config()
        data = self.root / "data"
        if data.exists():
            for f in data.iterdir():
                f.unlink()
        data.mkdir(parents=True, exist_ok=True)
        ldif = self.root / "users.ldif"
        entries = ad_users_ldif(self.users) if self.profile == "active-directory" else users_ldif(self.users)
        ldif.write_text(self.base_ldif() + entries)
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
        """The DN of a user loaded from the list (uid defaults to the address's local part; for
        AD-style users, `address` is the UPN)."""
        for user in self.users:
            if self.profile == "active-directory":
                if _get(user, "upn") == address:
                    return ad_dn(user)
            elif _get(user, "address") == address:
                return f"uid={_get(user, 'uid') or address.split('@')[0]},{PEOPLE}"
        raise KeyError(address)

    def set_password(self, address: str, password: str) -> None:
        """Changes a user's password in the running slapd (as the root DN, with ldapmodify), as an
        administrator would."""
        ldif = f"dn: {self.dn_of(address)}\nchangetype: modify\nreplace: userPassword\nuserPassword: {hash_ssha(password)}\n"
        subprocess.run(["ldapmodify", "-x", "-H", self.url, "-D", ROOT_DN, "-w", self.root_password],
                       input=ldif, text=True, check=True, capture_output=True)

    # Process

    def pid_from_file(self) -> int | None:
        try:
            return int((self.root / "slapd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        pid = self.pid_from_file()  # a slapd left running by an earlier lab
        return pid is not None and alive(pid)

    def start(self, timeout: float = 20.0) -> None:
        """Starts slapd in the foreground (`-d stats`, output appended to slapd.log) and returns
        once it answers a search."""
        if self.running():
            return
        if not self.loaded:
            self.load()
        urls = f"{self.url}/" + (f" {self.ldaps_url}/" if self.tls is not None else "")
        self.spawn(["/usr/sbin/slapd", "-h", urls, "-d", "stats", "-f", self.conf], new_session=False)
        self.wait_ready(self.answers, timeout)

    def answers(self) -> bool:
        return subprocess.run(
            ["ldapsearch", "-x", "-H", self.url, "-b", "", "-s", "base", "namingContexts"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ).returncode == 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Our own slapd as `Child.stop` does it; one left by an earlier lab: SIGTERM, then SIGKILL."""
        if self.process is None:
            pid = self.pid_from_file()
            if pid is not None and alive(pid):
                stop_pid(pid, timeout)
        super().stop(sig, timeout)

    # mailfront

    def directory_config(self, service: bool = True, ldaps: bool = False, **extra: Any) -> dict:
        """The `[directory]` section that points mailfront at this slapd (service-account
        searches unless `service=False`; implicit TLS with the lab CA if `ldaps`), with `extra`
        keys (timeout, cache_ttl, …)."""
        directory: dict[str, Any] = {"backend": "ldap"}
        if self.profile != "openldap":
            directory["profile"] = self.profile
        if ldaps:
            if self.tls is None:
                raise ValueError("this slapd has no TLS")
            directory |= {"url": self.ldaps_url, "ca_file": str(self.tls.ca)}
        else:
            directory["url"] = self.url
        directory["base"] = PEOPLE
        if service:
            directory |= {"service_dn": SERVICE_DN, "service_password_file": str(self.service_password_file)}
        return directory | extra


if __name__ == "__main__":
    # A quick look by hand: ./venv -m lab.ldap in scripts/ (starts, lists the users, stops)
    from .base import lab_root, reset_dir
    from .processes import free_port

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
        print(lab.directory_config())
    finally:
        lab.stop()
