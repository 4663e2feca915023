"""The lab's users: one record that Dovecot's passwd-file, mailfront's users file and slapd's
LDIF are all written from."""

from __future__ import annotations

from dataclasses import dataclass, field

DEMO_PASSWORD = "demo-password-1"


@dataclass
class User:
    address: str
    database: str
    password: str = DEMO_PASSWORD
    aliases: list[str] = field(default_factory=list)
    guid: str = ""
    version: str = "15.1"
    protocols: list[str] | None = None
    sip_extension: str | None = None
    quota_kb: int | None = None  # a Dovecot storage quota (to make deliveries fail for real)
    # App passwords as the users file writes them ({"name", "protocols", "created", "hash"},
    # from `lab.new_app_password`), and the protocols the main password may be used for.
    app_passwords: list[dict] = field(default_factory=list)
    password_protocols: list[str] | None = None


def app_password_ldap_value(entry: dict) -> str:
    """The LDAP value of a users-file app password entry: `name;protocols;created;hash`."""
    return f"{entry['name']};{','.join(entry['protocols'])};{entry['created']};{entry['hash']}"
