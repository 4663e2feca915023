"""TLS at both ends: certificates chosen by SNI and reloaded, the TLS policy (minimum version,
suites, session tickets shared by an array), OCSP stapling from a file; towards backends, a
required name and a client certificate (mutual TLS) against a Dovecot that demands one; the
admin API behind a client certificate. Real Dovecot, real openssl and Python TLS clients."""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import ssl
import subprocess

import pytest

import lab
from conftest import ACTIVE, USERS, client_tls, node_settings, start_node, wait_until

PASSWORD = lab.DEMO_PASSWORD


def test_certificates_are_chosen_by_the_name_the_client_asks_for_and_reloaded(lab_env):
    root = lab.reset_dir(lab_env.root / "sni")
    auto_cert, auto_key = lab.make_certificate(root / "auto", name="autodiscover.example.com")
    port = lab.free_port()
    node = start_node(lab_env, "sni-node", [lab.listener(None, "imap", port, "implicit")], {
        "reload": {"interval": "100ms"},
        "tls": {"sni": [{"names": ["autodiscover.example.com", "*.example.net"],
                          "certificate": str(auto_cert), "key": str(auto_key)}]},
    })
    default_cert = lab_env.settings["tls"]["certificate"]

    def presented(server_name: str | None) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_tls().wrap_socket(raw, server_hostname=server_name) as tls:
                return tls.getpeercert(binary_form=True)

    def der(path) -> bytes:
        return ssl.PEM_cert_to_DER_cert(open(path).read())

    try:
        assert presented("autodiscover.example.com") == der(auto_cert)
        assert presented("imap.example.net") == der(auto_cert)
        assert presented("mail.example.com") == der(default_cert)
        assert presented(None) == der(default_cert)
        # A renewed certificate for the name is taken without a restart.
        renewed_cert, renewed_key = lab.make_certificate(root / "renewed", name="autodiscover.example.com")
        assert der(renewed_cert) != der(auto_cert)
        shutil.copy(renewed_key, auto_key)
        shutil.copy(renewed_cert, auto_cert)
        wait_until(lambda: presented("autodiscover.example.com") == der(renewed_cert), 10, "the renewed certificate")
        assert presented(None) == der(default_cert)
    finally:
        node.stop()


def test_tls_policy_minimum_version_suites_and_tickets_shared_across_nodes(lab_env):
    root = lab.reset_dir(lab_env.root / "tls-policy")
    shared, other = root / "tickets.toml", root / "other-tickets.toml"
    for path in (shared, other):
        path.write_text(subprocess.run([str(lab_env.binary), "cookie-key", "--id", "1"],
                                       capture_output=True, text=True, check=True).stdout)
    policy = {"min_version": "1.3", "cipher_suites": ["TLS13_CHACHA20_POLY1305_SHA256", "TLS13_AES_256_GCM_SHA384"]}
    ports = [lab.free_port() for _ in range(3)]
    nodes = [start_node(lab_env, f"tls-policy-{i}", [lab.listener(None, "imap", port, "implicit")],
                        {"tls": policy | {"ticket_keys": str(keys)}})
             for i, (port, keys) in enumerate(zip(ports, (shared, shared, other)))]
    context = client_tls()

    def connect(port: int, session=None, ctx=context):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        tls = ctx.wrap_socket(raw, session=session)
        assert tls.recv(1024).startswith(b"* OK")  # the greeting; the tickets come with it
        return tls

    try:
        first = connect(ports[0])
        assert first.version() == "TLSv1.3"
        assert first.cipher()[0] == "TLS_CHACHA20_POLY1305_SHA256"
        session = first.session
        first.close()
        # Another node with the same ticket keys resumes the session; one with other keys cannot.
        second = connect(ports[1], session)
        assert second.session_reused, "a node sharing the ticket keys did not resume the session"
        second.close()
        third = connect(ports[2], session)
        assert not third.session_reused
        third.close()
        # A TLS 1.2 client is refused by a node whose minimum is 1.3.
        old = client_tls()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            connect(ports[0], ctx=old)
    finally:
        for node in nodes:
            node.stop()


def stapled(port: int) -> str:
    """What openssl's client says of the OCSP response a server staples (`-status`)."""
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "mail.example.com",
                          "-status"], input="", capture_output=True, text=True, timeout=20).stdout
    return out[out.index("OCSP response:"):out.index("---", out.index("OCSP response:"))]


def test_an_ocsp_response_is_stapled_and_a_refreshed_one_taken_without_a_restart(lab_env):
    root = lab.reset_dir(lab_env.root / "ocsp")
    issued = lab.make_ca_signed(root, name="mail.example.com")
    response = lab.make_ocsp_response(issued, root / "mail.ocsp")
    port = lab.free_port()
    # Control: the lab's node staples nothing.
    assert "no response sent" in stapled(lab_env.implicit_port)
    node = start_node(lab_env, "ocsp-node", [lab.listener(None, "imap", port, "implicit")], {
        "reload": {"interval": "100ms"},
        "tls": {"certificate": str(issued.cert), "key": str(issued.key), "ocsp": str(response)},
    })
    try:
        status = stapled(port)
        assert "OCSP Response Status: successful" in status and "Cert Status: good" in status, status
        # The operator's cron job writes a new response: the next handshakes staple it.
        fresh = lab.make_ocsp_response(issued, root / "fresh.ocsp", revoked=True)
        os.replace(fresh, response)
        wait_until(lambda: "Cert Status: revoked" in stapled(port), 10, "the refreshed OCSP response")
        # A response file that is not DER (here: PEM) is refused at the start, naming the file.
        settings = node_settings(lab_env, "ocsp-bad", [lab.listener(None, "imap", lab.free_port(), "implicit")])
        settings["tls"] |= {"certificate": str(issued.cert), "key": str(issued.key), "ocsp": str(issued.cert)}
        config = lab.write_toml(root / "bad.toml", settings)
        check = subprocess.run([str(lab_env.binary), "check", "--config", str(config)], capture_output=True, text=True)
        assert check.returncode != 0 and "server.pem" in check.stderr and "DER" in check.stderr, check.stderr
    finally:
        node.stop()


@pytest.fixture(scope="module")
def internal(lab_env):
    """A mailbox server whose certificate names only `mbx.internal` (not the address mailfront
    dials) and that takes no login without a client certificate from its CA; the database of
    erin@example.com is active there. Yields (the CA, a function making a node's settings with
    a `[backend_tls]` table)."""
    root = lab.reset_dir(lab_env.root / "internal-tls")
    issued = lab.make_ca_signed(root, name="mbx.internal", address=False)
    ports = lab.Ports(*(lab.free_port() for _ in range(5)))
    server = lab.Dovecot(lab_env.root, "mbx-internal", ports, USERS, tls=issued, client_ca=issued.ca)
    server.start()
    locations = root / "locations.toml"
    lab.write_locations(locations, ACTIVE | {"DB04": "mbx-internal"})
    login = dict(lab_env.settings["server"][0]["login"])

    def settings(name: str, port: int, backend_tls: dict) -> dict:
        config = node_settings(lab_env, name, [lab.listener(None, "imap", port, "none", allow_plaintext_auth=True)])
        config["server"].append({"name": "mbx-internal", "site": "lab", "version": "15.1", "host": "127.0.0.1",
                                 "imap": {"port": ports.imaps, "tls": "implicit"}, "login": login})
        config["location"] = {"backend": "file", "path": str(locations)}
        config["backend_tls"] = backend_tls
        return config

    try:
        yield issued, server, settings
    finally:
        server.stop()


@pytest.mark.parametrize("row", ["by-host", "no-client-certificate", "mutual"])
def test_backend_tls_verify_name_and_client_certificate(lab_env, internal, row):
    """By the host it dials, mailfront refuses the server (its certificate does not name it);
    told the name, it gets through TLS, but the server refuses the login without a client
    certificate; with both, erin's session works."""
    issued, server, settings = internal
    client_cert, client_key = lab.make_client_certificate(issued, "mailfront")
    backend_tls = {"ca_file": str(issued.ca)}
    if row != "by-host":
        backend_tls["verify_name"] = "mbx.internal"
    if row == "mutual":
        backend_tls |= {"certificate": str(client_cert), "key": str(client_key)}
    port = lab.free_port()
    name = f"internal-{row}"
    node = lab.Mailfront(lab_env.binary, lab.write_toml(lab_env.root / f"{name}.toml", settings(name, port, backend_tls)),
                         lab_env.root / f"{name}.log")
    node.start()
    try:
        client = imaplib.IMAP4("127.0.0.1", port)
        if row == "mutual":
            assert client.login("erin@example.com", PASSWORD)[0] == "OK"
            assert client.select("INBOX")[0] == "OK"
            client.logout()
            logins = [line for line in server.log_text().splitlines() if "Login: user=<erin@example.com>" in line]
            assert logins and "TLS" in logins[-1], logins
            return
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            client.login("erin@example.com", PASSWORD)
        if row == "by-host":
            assert wait_until(lambda: "not valid for name" in node.log_since_start(), 5, "the name refusal logged")
        else:
            # Dovecot's answer, which mailfront logs as the backend's refusal.
            wait_until(lambda: "Client didn't present valid SSL certificate" in node.log_since_start(), 5,
                       "Dovecot refusing the login without a client certificate")
    finally:
        node.stop()


def test_the_admin_api_over_tls_wants_a_client_certificate_beyond_health(lab_env):
    """`[admin] tls` + `client_ca`: the health page answers anyone (load balancers), everything
    else only a client with a certificate from that CA; a certificate from another CA fails the
    handshake; `mailfront admin` trusts the node's own certificate and shows the operator's."""
    import http.client
    root = lab.reset_dir(lab_env.root / "admin-mtls")
    ours = lab.make_ca_signed(root / "ours", name="admin.internal")
    theirs = lab.make_ca_signed(root / "theirs", name="admin.internal")
    operator = lab.make_client_certificate(ours, "operator")
    stranger = lab.make_client_certificate(theirs, "stranger")
    port = lab.free_port()
    node = start_node(lab_env, "admin-mtls", [lab.listener(None, "imap", lab.free_port(), "implicit")],
                      {"admin": {"address": f"127.0.0.1:{port}", "tls": True, "client_ca": str(ours.ca)}})

    def call(path: str, certificate: tuple | None = None) -> tuple[int, str]:
        context = client_tls()
        if certificate:
            context.load_cert_chain(*map(str, certificate))
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=15, context=context)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def admin(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(lab_env.binary), "admin", "--config", str(node.config), *args],
                              capture_output=True, text=True, timeout=30)

    try:
        assert call("/health")[0] == 200
        status, body = call("/status")
        assert status == 403 and "client certificate" in body, body
        status, body = call("/status", operator)
        assert status == 200 and '"node"' in body, body
        with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)):
            call("/status", stranger)
        # Plain HTTP gets no answer from a TLS listener.
        with pytest.raises((http.client.HTTPException, ConnectionResetError)):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            connection.request("GET", "/health")
            connection.getresponse()
        out = admin("status")
        assert out.returncode == 1 and "--certificate" in out.stderr, out.stderr
        out = admin("--certificate", str(operator[0]), "--key", str(operator[1]), "status")
        assert out.returncode == 0 and '"admin-mtls"' in out.stdout, out.stderr
    finally:
        node.stop()
