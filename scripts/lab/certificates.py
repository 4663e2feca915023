"""Certificates for the lab, made with openssl: a self-signed one for mailfront's listeners; a
private CA with a server certificate for mailbox servers that mailfront reaches over TLS, and
client certificates and OCSP responses from that CA."""

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


def make_ca_signed(directory: Path, name: str = "localhost", address: bool = True) -> Tls:
    """A private CA and a server certificate it signed for `name` (and 127.0.0.1 unless not
    `address`): what a mailbox server with TLS towards mailfront would have."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    cert, key = directory / "server.pem", directory / "server-key.pem"
    if not ca.exists():
        openssl("req", "-x509", *NEW_KEY, "-days", "3650", "-subj", "/CN=mailfront lab CA",
                "-keyout", str(ca_key), "-out", str(ca))
    if not cert.exists():
        alt = f"DNS:{name},IP:127.0.0.1" if address else f"DNS:{name}"
        sign(ca, ca_key, name, cert, key, f"subjectAltName={alt}\nextendedKeyUsage=serverAuth\n")
        key.chmod(0o644)  # Dovecot reads it as root; keep it simple for the lab
    return Tls(ca=ca, cert=cert, key=key)


def make_client_certificate(ca: Tls, name: str) -> tuple[Path, Path]:
    """A client certificate for `name` signed by `ca`'s CA (`ca-key.pem` beside `ca.pem`)."""
    directory = ca.ca.parent
    cert, key = directory / f"client-{name}.pem", directory / f"client-{name}-key.pem"
    if not cert.exists():
        sign(ca.ca, directory / "ca-key.pem", name, cert, key, "extendedKeyUsage=clientAuth\n")
    return cert, key


def sign(ca: Path, ca_key: Path, name: str, cert: Path, key: Path, extensions: str) -> None:
    """A new key and a certificate for `name` signed by the CA, with `extensions` (openssl's
    x509v3 syntax, one per line)."""
    csr, ext = cert.with_suffix(".csr"), cert.with_suffix(".ext")
    openssl("req", *NEW_KEY, "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    ext.write_text("basicConstraints=CA:FALSE\n" + extensions)
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "3650", "-extfile", str(ext), "-out", str(cert))


def make_ocsp_response(ca: Tls, out: Path, revoked: bool = False) -> Path:
    """A DER OCSP response, signed by the CA, saying that `ca.cert` is good (or revoked), valid
    for a day: what `openssl ocsp` run by an operator's cron job would write."""
    serial = subprocess.run(["openssl", "x509", "-in", str(ca.cert), "-noout", "-serial"], check=True,
                            capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    index = out.with_suffix(".index")
    status = "R\t301231000000Z\t261201000000Z" if revoked else "V\t301231000000Z\t"
    index.write_text(f"{status}\t{serial}\tunknown\t/CN=lab\n")
    request = out.with_suffix(".request")
    openssl("ocsp", "-issuer", str(ca.ca), "-cert", str(ca.cert), "-no_nonce", "-reqout", str(request))
    openssl("ocsp", "-index", str(index), "-rsigner", str(ca.ca), "-rkey", str(ca.ca.parent / "ca-key.pem"),
            "-CA", str(ca.ca), "-reqin", str(request), "-respout", str(out), "-ndays", "1")
    return out
