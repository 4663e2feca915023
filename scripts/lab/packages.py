"""The Debian packages behind each kind of lab component, installed with apt-get when missing (as
root; otherwise the lab says what to run). scripts/test installs the same packages up front."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .base import IS_ROOT, log

# Each kind of component: the files that show it is installed (the first is its command), and
# the Debian packages that bring them.
KINDS: dict[str, tuple[list[str], list[str]]] = {
    "dovecot": (["/usr/sbin/dovecot"],
                ["dovecot-core", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd", "dovecot-submissiond"]),
    "openssl": (["/usr/bin/openssl"], ["openssl"]),
    "swaks": (["/usr/bin/swaks"], ["swaks", "libnet-ssleay-perl"]),  # swaks needs Net::SSLeay for TLS
    "radicale": (["/usr/lib/python3/dist-packages/radicale/__init__.py"], ["python3-radicale"]),
    "sipp": (["/usr/bin/sipp"], ["sip-tester"]),  # SIPp, a SIP user agent for the SIP interop tests
    "haproxy": (["/usr/sbin/haproxy"], ["haproxy"]),  # the array tests' load balancer, a benchmark peer
    "slapd": (["/usr/sbin/slapd", "/usr/sbin/slapadd", "/usr/sbin/slappasswd", "/usr/bin/ldapsearch"],
              ["slapd", "ldap-utils"]),
    "etcd": (["/usr/bin/etcd", "/usr/bin/etcdctl"], ["etcd-server", "etcd-client"]),
    "nginx": (["/usr/sbin/nginx", "/usr/lib/nginx/modules/ngx_mail_module.so"], ["nginx", "libnginx-mod-mail"]),
    "postfix": (["/usr/sbin/postfix"], ["postfix"]),  # a mailbox server's own MTA (DSN, SMTPUTF8)
}
COMMANDS = {kind: files[0] for kind, (files, _) in KINDS.items()}

# Answers given to a package before it is installed: the lab runs its own slapd and Postfix, so
# the packages must not configure and start system-wide ones.
PRESEED = {
    "slapd": "slapd slapd/no_configuration boolean true\n",
    "postfix": "postfix postfix/main_mailer_type select No configuration\n",
}


def ensure_installed(*kinds: str) -> None:
    """Installs the Debian packages of the given kinds of component whose files are missing."""
    missing = [p for k in kinds if not all(Path(f).exists() for f in KINDS[k][0]) for p in KINDS[k][1]]
    if not missing:
        return
    if not IS_ROOT:
        raise SystemExit(
            "missing packages: " + " ".join(missing)
            + "\ninstall them with: sudo apt-get install --no-install-recommends " + " ".join(missing)
        )
    log("installing " + " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for package in missing:
        if package in PRESEED:
            subprocess.run(["debconf-set-selections"], input=PRESEED[package], text=True, check=True, env=env)
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                   check=True, env=env, stdout=subprocess.DEVNULL)
