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
