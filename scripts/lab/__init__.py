"""The lab: real servers for mailfront's demo, interop tests and benchmarks, started by hand on
loopback.

Used by `scripts/demo`, the interop tests (`tests/interop`) and the benchmarks (`bench/`). It
writes configurations for Dovecot mailbox servers and for mailfront, starts them as ordinary
processes (never through systemd), waits until each really answers (a greeting, not an open
port), and stops them again. Everything lives under one scratch directory per lab.

One module per job:

    base          the checkout, scratch folders, the log line
    packages      Debian packages, installed with apt-get when missing
    processes     child processes, stopping, process trees, free ports, waiting for greetings
    certificates  self-signed and CA-signed certificates, client certificates, OCSP responses
    users         the lab's users (one record for Dovecot, mailfront and LDAP)
    dovecot       Dovecot mailbox servers
    mailfront     the binary, a node's process, its configuration (dicts written with tomli-w)
    radicale      Radicale, a mailbox server's HTTP service
    smtp_sink     an SMTP server that keeps what it receives (the outbound relay host)
    postfix       Postfix, a mailbox server's own MTA in front of its Dovecot (DSN, SMTPUTF8)
    oidc          an OpenID provider (npm oidc-provider, oidc/provider.mjs) that mints, introspects
                  and revokes JWT access tokens for the OAuth tests
    ldap          OpenLDAP slapd, for the LDAP directory      (`from lab import ldap`)
    etcd          etcd, for the location store                (`from lab import etcd`)
    haproxy       HAProxy, the array's load balancer          (`from lab import haproxy`)

What most callers need is named here (`lab.free_port()`, `lab.Dovecot`, `lab.node_config`, …);
the last three are imported as modules where they are used.

Nothing here is needed to run mailfront itself; it is how we get real components for tests.
It needs tomli-w (tests/interop/requirements.txt): run it with the Python of `scripts/venv`.
"""

# Re-exported for the callers (`lab.free_port()`, …).
from .base import IS_ROOT, ROOT, atomic_write, lab_root, log, reset_dir
from .certificates import Tls, make_ca_signed, make_certificate, make_client_certificate, make_ocsp_response
from .dovecot import MASTER_USER, Dovecot, Ports, mail_owner, master_password
from .mailfront import (LAB_THROTTLE, Mailfront, NewAppPassword, ServerEntry, build_mailfront, hash_for,
                        http_config, listener, mailfront_binary, new_app_password, node_config, read_locations, read_toml, write_cookie_keys,
                        write_locations, write_toml, write_users)
from .packages import COMMANDS, ensure_installed
from .processes import (Child, alive, children_by_parent, free_port, http_ok, insecure_tls, process_tree,
                        stop_pid, wait_for_greeting)
from .oidc import Oidc
from .postfix import Postfix
from .radicale import Radicale
from .smtp_sink import SmtpSink
from .users import DEMO_PASSWORD, User, app_password_ldap_value

