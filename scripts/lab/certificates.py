"""Certificates for the lab, made with openssl: a self-signed one for mailfront's listeners, and a
private CA with a server certificate for mailbox servers that mailfront reaches over TLS."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

# A new EC P-256 key, no passphrase.
NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass
class Tls:
    """A certificate for a server (`cert`, `key`) and the CA that signed it (`ca`)."""

    ca: Path
    cert: Path
    key: Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_certificate(directory: Path, name: str = "mail.example.com") -> tuple[Path, Path]:
    """A self-signed certificate and key for `name` (and localhost, 127.0.0.1)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not cert.exists() or not key.exists():
        openssl("req", "-x509", *NEW_KEY, "-days", "3650", "-subj", f"/CN={name}",
                "-addext", f"subjectAltName=DNS:{name},DNS:localhost,IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert))
    return cert, key


def make_ca_signed(directory: Path, name: str = "localhost") -> Tls:
    """A private CA and a server certificate it signed for `name` (and 127.0.0.1): what a
    mailbox server with TLS towards mailfront would have."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    cert, key, csr = directory / "server.pem", directory / "server-key.pem", directory / "server.csr"
    if not ca.exists():
        openssl("req", "-x509", *NEW_KEY, "-days", "3650", "-subj", "/CN=mailfront lab CA",
                "-keyout", str(ca_key), "-out", str(ca))
    if not cert.exists():
        openssl("req", *NEW_KEY, "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
        ext = directory / "ext.cnf"
        ext.write_text(f"subjectAltName=DNS:{name},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                       "extendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
                "-days", "3650", "-extfile", str(ext), "-out", str(cert))
        key.chmod(0o644)  # Dovecot reads it as root; keep it simple for the lab
    return Tls(ca=ca, cert=cert, key=key)
